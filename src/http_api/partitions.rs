//! `/collections/{collection_name}/partitions` (reference §4.5):
//! CreatePartition, ShowPartitions (paged by the web layer), DropPartition.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::errors::{code, ok_status, parse_body, reply, ApiError, ApiResult};
use super::util::{only_fields, opt_str, page_param, page_range, query_map};
use super::ApiState;
use crate::wire::{CollectionName, PartitionParam};

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/collections/{collection_name}/partitions"),
    ("GET", "/collections/{collection_name}/partitions"),
    ("DELETE", "/collections/{collection_name}/partitions"),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(
        "/collections/{collection_name}/partitions",
        get(show).post(create).delete(drop),
    )
}

/// `all_required`: validated as a bool, but only `true`/`True` mean true (as Milvus).
pub(super) fn all_required(value: Option<&String>) -> Result<bool, ApiError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(false),
        Some("true" | "True") => Ok(true),
        Some(v)
            if ["false", "1", "0", "yes", "no", "on", "off"]
                .contains(&v.to_ascii_lowercase().as_str())
                || v.eq_ignore_ascii_case("true") =>
        {
            Ok(false)
        }
        Some(_) => Err(ApiError::web(
            code::ILLEGAL_QUERY_PARAM,
            "Query param 'all_required' must be a bool",
        )),
    }
}

/// `POST .../partitions` `{"partition_tag":"t"}` → 201.
async fn create(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    if !body.is_object() {
        return Err(ApiError::web(
            code::ILLEGAL_BODY,
            "Request body must be a JSON object",
        ));
    }
    only_fields(&body, &["partition_tag"])?;
    let tag = opt_str(&body, "partition_tag")?
        .ok_or_else(|| ApiError::web(code::BODY_FIELD_LOSS, "Field 'partition_tag' is missing"))?;
    let status = state
        .client()
        .create_partition(PartitionParam {
            collection_name: name,
            tag: tag.to_string(),
        })
        .await?
        .into_inner();
    ApiError::check(Some(&status), true)?;
    Ok(ok_status(StatusCode::CREATED))
}

/// `GET .../partitions?offset=0&page_size=10&all_required=`.
async fn show(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let query = query_map(query.as_deref());
    let offset = page_param(query.get("offset"), 0)?;
    let page_size = page_param(query.get("page_size"), 10)?;
    let all = all_required(query.get("all_required"))?;
    let list = state
        .client()
        .show_partitions(CollectionName {
            collection_name: name,
        })
        .await?
        .into_inner();
    ApiError::check(list.status.as_ref(), true)?;
    let tags = &list.partition_tag_array;
    let rows: Vec<Value> = tags[page_range(tags.len(), offset, page_size, all)]
        .iter()
        .map(|t| json!({"partition_tag": t}))
        .collect();
    Ok(reply(
        StatusCode::OK,
        json!({"count": tags.len(), "partitions": rows}),
    ))
}

/// `DELETE .../partitions` `{"partition_tag":"t"}` → 204; an unknown tag
/// is 404 code 4 (Milvus' web map; gRPC says code 1).
async fn drop(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    let Some(Value::String(tag)) = body.get("partition_tag") else {
        return Err(ApiError::web(
            code::BODY_PARSE_FAIL,
            "Field 'partition_tag' must be a string",
        ));
    };
    if tag == "_default" {
        return Err(ApiError::web(9, "Default partition cannot be dropped."));
    }
    let mut client = state.client();
    let param = PartitionParam {
        collection_name: name.clone(),
        tag: tag.clone(),
    };
    let has = client.has_partition(param.clone()).await?.into_inner();
    ApiError::check(has.status.as_ref(), true)?;
    if !has.bool_reply {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code::COLLECTION_NOT_EXISTS,
            format!("Partition {tag} of collection {name} not found"),
        ));
    }
    let status = client.drop_partition(param).await?.into_inner();
    ApiError::check(Some(&status), true)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
