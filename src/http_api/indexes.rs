//! `/collections/{collection_name}/indexes` (reference §4.4): CreateIndex
//! (synchronous, as gRPC), DescribeIndex, DropIndex.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::errors::{code, ok_status, parse_body, reply, ApiError, ApiResult};
use super::ApiState;
use crate::wire::{CollectionName, IndexParam, KeyValuePair};

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/collections/{collection_name}/indexes"),
    ("GET", "/collections/{collection_name}/indexes"),
    ("DELETE", "/collections/{collection_name}/indexes"),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(
        "/collections/{collection_name}/indexes",
        get(describe).post(create).delete(drop),
    )
}

/// Web index names by EngineType (`web_impl/Constants.cpp`).
const NAMES: [(&str, i32); 8] = [
    ("FLAT", 1),
    ("IVFFLAT", 2),
    ("IVFSQ8", 3),
    ("RNSG", 4),
    ("IVFSQ8H", 5),
    ("IVFPQ", 6),
    ("HNSW", 11),
    ("ANNOY", 12),
];

/// The web name of an EngineType; the binary ones (9, 10) as FLAT and
/// IVFFLAT, as Milvus; one without a web name (SPTAG) is "UNKNOWN" (Milvus: 500).
pub(super) fn web_name(engine: i32) -> &'static str {
    let engine = match engine {
        9 => 1,
        10 => 2,
        e => e,
    };
    NAMES
        .iter()
        .find(|(_, n)| *n == engine)
        .map_or("UNKNOWN", |(name, _)| name)
}

/// The `params` of an index reply as JSON (`{}` when none).
pub(super) fn params_of(extra: &[KeyValuePair]) -> Value {
    extra
        .iter()
        .find(|kv| kv.key == "params")
        .and_then(|kv| serde_json::from_str::<Value>(&kv.value).ok())
        .unwrap_or_else(|| json!({}))
}

/// `POST .../indexes` `{"index_type":"IVFFLAT","params":{"nlist":1024}}` → 201.
async fn create(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    let missing =
        |f: &str| ApiError::web(code::BODY_FIELD_LOSS, format!("Field '{f}' is required"));
    let index_type = match body.get("index_type") {
        None | Some(Value::Null) => return Err(missing("index_type")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::web(
                code::BODY_PARSE_FAIL,
                "Field 'index_type' must be a string",
            ))
        }
    };
    let params = match body.get("params") {
        None | Some(Value::Null) => return Err(missing("params")),
        Some(p @ Value::Object(_)) => p.to_string(),
        Some(_) => {
            return Err(ApiError::web(
                code::BODY_PARSE_FAIL,
                "Field 'params' must be an object",
            ))
        }
    };
    let Some(&(_, engine)) = NAMES.iter().find(|(n, _)| *n == index_type) else {
        return Err(ApiError::web(
            code::ILLEGAL_INDEX_TYPE,
            "The index type is invalid.",
        ));
    };
    let status = state
        .client()
        .create_index(IndexParam {
            status: None,
            collection_name: name,
            index_type: engine,
            extra_params: vec![KeyValuePair {
                key: "params".into(),
                value: params,
            }],
        })
        .await?
        .into_inner();
    ApiError::check(Some(&status), true)?;
    Ok(ok_status(StatusCode::CREATED))
}

/// `GET .../indexes` → `{"index_type":"<web name>","params":{...}}`.
async fn describe(State(state): State<Arc<ApiState>>, Path(name): Path<String>) -> ApiResult {
    let index = state
        .client()
        .describe_index(CollectionName {
            collection_name: name,
        })
        .await?
        .into_inner();
    ApiError::check(index.status.as_ref(), true)?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "index_type": web_name(index.index_type),
            "params": params_of(&index.extra_params),
        }),
    ))
}

/// `DELETE .../indexes` → 204.
async fn drop(State(state): State<Arc<ApiState>>, Path(name): Path<String>) -> ApiResult {
    let status = state
        .client()
        .drop_index(CollectionName {
            collection_name: name,
        })
        .await?
        .into_inner();
    ApiError::check(Some(&status), true)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
