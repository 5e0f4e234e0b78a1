//! `/system/...` (reference §4.8): `GET /system/{info}` (Cmd; `info` is
//! `get_system_info`, `config` the whole `get_config *`), `PUT /system/task`
//! (Preload / Flush / Compact / ReleaseCollection) and `PUT /system/config`
//! (one `set_config section.key value` per leaf).
//!
//! Deviations: another `PUT /system/{op}` is 404 code 32 (Milvus: 400
//! code 32); a failed `get_config *` is its error (Milvus: 200, empty body).
//! Code 4 is HTTP 400 here, as in Milvus (`/system` has no 404 case).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};

use super::errors::{code, parse_body, reply, ApiError, ApiResult};
use super::{ApiState, MilvusClient};
use crate::wire::{CollectionName, Command, FlushParam, PreloadCollectionParam};

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/system/{info}"),
    ("GET", "/system/config"),
    ("PUT", "/system/task"),
    ("PUT", "/system/config"),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/system/{info}", get(info))
        .route("/system/config", get(get_config).put(set_config))
        .route("/system/task", put(task))
}

/// `Cmd(cmd)`'s reply text, or its error (HTTP 400: no 404 under /system).
pub(super) async fn cmd(client: &mut MilvusClient, cmd: String) -> Result<String, ApiError> {
    let reply = client.cmd(Command { cmd }).await?.into_inner();
    ApiError::check(reply.status.as_ref(), false)?;
    Ok(reply.string_reply)
}

/// The backend's whole configuration (`get_config *`) as JSON sections.
pub(super) async fn whole_config(client: &mut MilvusClient) -> Result<Value, ApiError> {
    let text = cmd(client, "get_config *".into()).await?;
    serde_json::from_str(&text).map_err(|e| {
        ApiError::web(
            code::UNEXPECTED_ERROR,
            format!("get_config * did not answer JSON: {e}"),
        )
    })
}

/// `GET /system/{info}` → `{"code":0,"message":"OK","reply":"..."}`.
async fn info(State(state): State<Arc<ApiState>>, Path(info): Path<String>) -> ApiResult {
    let command = if info == "info" {
        "get_system_info".to_string()
    } else {
        info
    };
    let text = cmd(&mut state.client(), command).await?;
    Ok(reply(
        StatusCode::OK,
        json!({"code": 0, "message": "OK", "reply": text}),
    ))
}

/// `GET /system/config` → the sections, plus `"restart_required"`.
async fn get_config(State(state): State<Arc<ApiState>>) -> ApiResult {
    let mut config = whole_config(&mut state.client()).await?;
    if let Some(object) = config.as_object_mut() {
        object
            .entry("restart_required")
            .or_insert(Value::Bool(false));
    }
    Ok(reply(StatusCode::OK, config))
}

/// A JSON scalar as a `set_config` value.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `PUT /system/config` `{"<section>":{"<key>":value}}`.
async fn set_config(State(state): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    let illegal = |m: &str| ApiError::web(code::ILLEGAL_BODY, m.to_string());
    let Some(sections) = body.as_object() else {
        return Err(illegal("Request body must be a JSON object"));
    };
    let mut leaves = Vec::new();
    for (section, keys) in sections {
        let Some(keys) = keys.as_object() else {
            return Err(illegal("Config section must be a JSON object"));
        };
        for (key, value) in keys {
            let value = scalar(value).ok_or_else(|| illegal("Config value must be a scalar"))?;
            leaves.push(format!("{section}.{key} {value}"));
        }
    }
    let mut client = state.client();
    let mut message = String::new();
    for leaf in leaves {
        if leaf.split(' ').count() != 2 {
            return Err(ApiError::web(code::UNEXPECTED_ERROR, "Invalid command"));
        }
        cmd(&mut client, format!("set_config {leaf}")).await?;
        message.push_str(&format!("set_config {leaf} successfully;"));
    }
    Ok(reply(
        StatusCode::OK,
        json!({"code": 0, "message": message, "restart_required": false}),
    ))
}

/// A task's collection name (34 when missing) and partition tags (36 when not strings).
fn name_and_tags(op: &str, task: &Value) -> Result<(String, Vec<String>), ApiError> {
    let name = match task.get("collection_name") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::web(
                code::BODY_FIELD_LOSS,
                format!("Field '{op}' must contain 'collection_name'"),
            ))
        }
    };
    let tags = match task.get("partition_tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::web(
                    code::BODY_PARSE_FAIL,
                    "Field 'partition_tags' must be an array of strings",
                )
            })?,
        Some(_) => {
            return Err(ApiError::web(
                code::BODY_PARSE_FAIL,
                "Field 'partition_tags' must be an array of strings",
            ))
        }
    };
    Ok((name, tags))
}

/// `PUT /system/task`: the first of `load`, `flush`, `compact`, `release`.
async fn task(State(state): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let Some(body) = parse_body(&body)? else {
        return Err(ApiError::web(code::BODY_FIELD_LOSS, "Payload is empty."));
    };
    let mut client = state.client();
    let status = if let Some(load) = body.get("load") {
        let (collection_name, partition_tag_array) = name_and_tags("load", load)?;
        client
            .preload_collection(PreloadCollectionParam {
                collection_name,
                partition_tag_array,
            })
            .await?
            .into_inner()
    } else if let Some(flush) = body.get("flush") {
        let Some(Value::Array(names)) = flush.get("collection_names") else {
            return Err(ApiError::web(
                code::BODY_FIELD_LOSS,
                "Field 'flush' must contain 'collection_names' (an array)",
            ));
        };
        let collection_name_array = names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::web(
                    code::BODY_PARSE_FAIL,
                    "Field 'collection_names' must be an array of strings",
                )
            })?;
        client
            .flush(FlushParam {
                collection_name_array,
            })
            .await?
            .into_inner()
    } else if let Some(compact) = body.get("compact") {
        let Some(Value::String(name)) = compact.get("collection_name") else {
            return Err(ApiError::web(
                code::BODY_FIELD_LOSS,
                "Field 'compact' must contain 'collection_name' (a string)",
            ));
        };
        client
            .compact(CollectionName {
                collection_name: name.clone(),
            })
            .await?
            .into_inner()
    } else if let Some(release) = body.get("release") {
        // Milvus' messages say "load" here too.
        let (collection_name, partition_tag_array) = name_and_tags("load", release)?;
        client
            .release_collection(PreloadCollectionParam {
                collection_name,
                partition_tag_array,
            })
            .await?
            .into_inner()
    } else {
        // As Milvus: none of the keys is 200 with an empty body.
        return Ok(StatusCode::OK.into_response());
    };
    ApiError::check(Some(&status), false)?;
    Ok(reply(StatusCode::OK, json!({"code": 0, "message": "OK"})))
}
