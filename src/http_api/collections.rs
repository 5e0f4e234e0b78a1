//! `/collections` and `/collections/{collection_name}` (reference §4.3):
//! CreateCollection, ShowCollections, Describe + Count + DescribeIndex (or
//! ShowCollectionInfo with `?info=stat`), DropCollection.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::errors::{code, ok_status, parse_body, reply, ApiError, ApiResult};
use super::util::{only_fields, opt_i64, opt_str, page_param, page_range, query_map};
use super::{ApiState, MilvusClient};
use crate::wire::{CollectionName, CollectionSchema, Command};

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/collections"),
    ("GET", "/collections"),
    ("GET", "/collections/{collection_name}"),
    ("DELETE", "/collections/{collection_name}"),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/collections", get(show).post(create))
        .route("/collections/{collection_name}", get(describe).delete(drop))
}

/// Milvus' metric names by `MetricType` number.
const METRICS: [(&str, i32); 7] = [
    ("L2", 1),
    ("IP", 2),
    ("HAMMING", 3),
    ("JACCARD", 4),
    ("TANIMOTO", 5),
    ("SUBSTRUCTURE", 6),
    ("SUPERSTRUCTURE", 7),
];

pub(super) fn metric_name(metric: i32) -> &'static str {
    METRICS
        .iter()
        .find(|(_, n)| *n == metric)
        .map_or("UNKNOWN", |(name, _)| name)
}

/// `POST /collections` `{"collection_name","dimension","index_file_size"=1024,"metric_type"="L2"}` → 201.
async fn create(State(state): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    if !body.is_object() {
        return Err(ApiError::web(
            code::ILLEGAL_BODY,
            "Request body must be a JSON object",
        ));
    }
    only_fields(
        &body,
        &[
            "collection_name",
            "dimension",
            "index_file_size",
            "metric_type",
        ],
    )?;
    let missing = |f: &str| ApiError::web(code::BODY_FIELD_LOSS, format!("Field '{f}' is missing"));
    let name = opt_str(&body, "collection_name")?.ok_or_else(|| missing("collection_name"))?;
    let dimension = opt_i64(&body, "dimension")?.ok_or_else(|| missing("dimension"))?;
    let index_file_size = opt_i64(&body, "index_file_size")?.unwrap_or(1024);
    let metric = opt_str(&body, "metric_type")?.unwrap_or("L2");
    let Some(&(_, metric_type)) = METRICS.iter().find(|(n, _)| *n == metric) else {
        return Err(ApiError::web(
            code::ILLEGAL_METRIC_TYPE,
            "metric_type is illegal",
        ));
    };
    let status = state
        .client()
        .create_collection(CollectionSchema {
            status: None,
            collection_name: name.to_string(),
            dimension,
            index_file_size,
            metric_type,
            extra_params: vec![],
        })
        .await?
        .into_inner();
    ApiError::check(Some(&status), false)?;
    Ok(ok_status(StatusCode::CREATED))
}

/// The collection object of `GET /collections[/{c}]`.
async fn collection_object(
    client: &mut MilvusClient,
    name: &str,
    under_collection: bool,
) -> Result<Value, ApiError> {
    let id = || CollectionName {
        collection_name: name.to_string(),
    };
    let schema = client.describe_collection(id()).await?.into_inner();
    ApiError::check(schema.status.as_ref(), under_collection)?;
    let count = client.count_collection(id()).await?.into_inner();
    ApiError::check(count.status.as_ref(), under_collection)?;
    let index = client.describe_index(id()).await?.into_inner();
    ApiError::check(index.status.as_ref(), under_collection)?;
    let params = super::indexes::params_of(&index.extra_params);
    Ok(json!({
        "collection_name": name,
        "count": count.collection_row_count,
        "dimension": schema.dimension,
        "index": super::indexes::web_name(index.index_type),
        "index_file_size": schema.index_file_size,
        "index_params": params.to_string(),
        "metric_type": metric_name(schema.metric_type),
    }))
}

/// `GET /collections?offset=0&page_size=10&all_required=`.
async fn show(State(state): State<Arc<ApiState>>, RawQuery(query): RawQuery) -> ApiResult {
    let query = query_map(query.as_deref());
    let offset = page_param(query.get("offset"), 0)?;
    let page_size = page_param(query.get("page_size"), 10)?;
    // Milvus ignores an invalid all_required here.
    let all = matches!(
        query.get("all_required").map(String::as_str),
        Some("true" | "True")
    );
    let mut client = state.client();
    let names = client
        .show_collections(Command { cmd: String::new() })
        .await?
        .into_inner();
    ApiError::check(names.status.as_ref(), false)?;
    let total = names.collection_names.len();
    let mut rows = Vec::new();
    for name in &names.collection_names[page_range(total, offset, page_size, all)] {
        rows.push(collection_object(&mut client, name, false).await?);
    }
    Ok(reply(
        StatusCode::OK,
        json!({"collections": rows, "count": total}),
    ))
}

/// `GET /collections/{c}[?info=stat]`.
async fn describe(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let query = query_map(query.as_deref());
    let mut client = state.client();
    if query.get("info").map(String::as_str) == Some("stat") {
        let info = client
            .show_collection_info(CollectionName {
                collection_name: name,
            })
            .await?
            .into_inner();
        ApiError::check(info.status.as_ref(), true)?;
        return Ok(match serde_json::from_str::<Value>(&info.json_info) {
            Ok(value) => reply(StatusCode::OK, value),
            Err(_) => (StatusCode::OK, info.json_info).into_response(),
        });
    }
    let object = collection_object(&mut client, &name, true).await?;
    Ok(reply(StatusCode::OK, object))
}

/// `DELETE /collections/{c}` → 204.
async fn drop(State(state): State<Arc<ApiState>>, Path(name): Path<String>) -> ApiResult {
    let status = state
        .client()
        .drop_collection(CollectionName {
            collection_name: name,
        })
        .await?
        .into_inner();
    ApiError::check(Some(&status), true)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
