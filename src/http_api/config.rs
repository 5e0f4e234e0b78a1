//! `/config/advanced` and `/devices` (reference §4.1, §4.2), over
//! `Cmd("get_config *")` and `Cmd("set_config ...")`.
//!
//! Deviations: `cpu_cache_capacity` is `cache.cache_size` in GiB (read as
//! a byte size, written as `<n>GB`, where Milvus copies the raw number);
//! keys the backend's configuration lacks (the bundled node has no
//! `cache.cache_insert_data` or `engine_config.use_blas_threshold`) read as
//! Milvus' defaults and are not written. `/devices` reports the serving
//! machine's memory, no GPUs (`/config/gpu_resources` is GPU builds only,
//! not served).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::errors::{code, ok_status, parse_body, reply, ApiError, ApiResult};
use super::system::{cmd, whole_config};
use super::util::only_fields;
use super::ApiState;

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/config/advanced"),
    ("PUT", "/config/advanced"),
    ("GET", "/devices"),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/config/advanced", get(get_advanced).put(set_advanced))
        .route("/devices", get(devices))
}

fn leaf<'a>(config: &'a Value, section: &str, key: &str) -> Option<&'a str> {
    config.get(section)?.get(key)?.as_str()
}

/// A byte size ("4GB", "268435456") in GiB, Milvus' `cpu_cache_capacity` unit.
fn gib(text: &str) -> i64 {
    crate::node::server_config::parse_bytes(text)
        .map(|bytes| bytes >> 30)
        .or_else(|_| {
            let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<i64>()
        })
        .unwrap_or(0)
}

/// `GET /config/advanced` → `{"cache_insert_data","cpu_cache_capacity","use_blas_threshold"}`.
async fn get_advanced(State(state): State<Arc<ApiState>>) -> ApiResult {
    let config = whole_config(&mut state.client()).await?;
    let capacity = leaf(&config, "cache", "cache_size").map_or(4, gib);
    let insert_data = leaf(&config, "cache", "cache_insert_data")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let blas = leaf(&config, "engine_config", "use_blas_threshold")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(1100);
    Ok(reply(
        StatusCode::OK,
        json!({
            "cache_insert_data": insert_data,
            "cpu_cache_capacity": capacity,
            "use_blas_threshold": blas,
        }),
    ))
}

/// `PUT /config/advanced`: absent fields take Milvus' DTO defaults (4,
/// false, 1100) and are written; an explicit `null` is 34.
async fn set_advanced(State(state): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?.unwrap_or_else(|| json!({}));
    only_fields(
        &body,
        &[
            "cpu_cache_capacity",
            "cache_insert_data",
            "use_blas_threshold",
            "gpu_search_threshold",
        ],
    )?;
    let field = |name: &str| -> Result<Option<&Value>, ApiError> {
        match body.get(name) {
            Some(Value::Null) => Err(ApiError::web(
                code::BODY_FIELD_LOSS,
                format!("Field '{name}' miss."),
            )),
            other => Ok(other),
        }
    };
    let int = |name: &str, default: i64| -> Result<i64, ApiError> {
        match field(name)? {
            None => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| {
                ApiError::web(
                    code::BODY_PARSE_FAIL,
                    format!("Field '{name}' must be an integer"),
                )
            }),
        }
    };
    let capacity = int("cpu_cache_capacity", 4)?;
    let blas = int("use_blas_threshold", 1100)?;
    let _gpu = int("gpu_search_threshold", 1000)?;
    let insert_data = match field("cache_insert_data")? {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::web(
                code::BODY_PARSE_FAIL,
                "Field 'cache_insert_data' must be a bool",
            ))
        }
    };
    let mut client = state.client();
    let config = whole_config(&mut client).await?;
    let writes = [
        ("cache", "cache_size", format!("{capacity}GB")),
        ("cache", "cache_insert_data", insert_data.to_string()),
        ("engine_config", "use_blas_threshold", blas.to_string()),
    ];
    for (section, key, value) in writes {
        if leaf(&config, section, key).is_some() {
            cmd(&mut client, format!("set_config {section}.{key} {value}")).await?;
        }
    }
    Ok(ok_status(StatusCode::OK))
}

/// The machine's memory in GiB (`/proc/meminfo`; 0 when unknown).
fn memory_gib() -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<i64>()
                .ok()
        })
        .map_or(0, |kib| kib >> 20)
}

/// `GET /devices` → `{"cpu":{"memory":GiB},"gpus":{}}`.
async fn devices() -> ApiResult {
    Ok(reply(
        StatusCode::OK,
        json!({"cpu": {"memory": memory_gib()}, "gpus": {}}),
    ))
}
