//! The operator's view of the proxy: `conn_stats` (per-backend state,
//! counters, recent latency and how many segment files the current ring
//! gives each node) and the HTTP admin endpoints on the metrics port:
//! `/admin/conn_stats`, `/admin/route/<collection>` (the `Cmd` answers of
//! the same names) and `/admin/config` (the configuration in effect, with
//! the metadata password redacted).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::reload::Reconfigurer;
use crate::backend::Backends;
use crate::topology::Snapshot;
use crate::wire::milvus_service_server::MilvusService;
use crate::wire::Command;

/// Per-backend JSON: address, role, up, in-flight, calls, errors, p50/p99
/// latency of recent calls, and the files the ring gives it.
pub fn conn_stats(backends: &Backends, snapshot: &Snapshot) -> serde_json::Value {
    let mut files_owned: BTreeMap<&str, u64> = BTreeMap::new();
    for view in snapshot.collections.values() {
        for file in &view.files {
            if let Some(owner) = backends.ring.owner(file.id) {
                *files_owned.entry(owner).or_default() += 1;
            }
        }
    }
    let mut nodes: Vec<(&str, &Arc<crate::backend::Backend>)> = Vec::new();
    nodes.push((backends.writable.addr.as_str(), &backends.writable));
    for b in &backends.readonly {
        if b.addr != backends.writable.addr {
            nodes.push((b.addr.as_str(), b));
        }
    }
    let readonly: Vec<&str> = backends.readonly.iter().map(|b| b.addr.as_str()).collect();
    let rows: Vec<serde_json::Value> = nodes
        .into_iter()
        .map(|(addr, b)| {
            let role = match (addr == backends.writable.addr, readonly.contains(&addr)) {
                (true, true) => "writable+readonly",
                (true, false) => "writable",
                _ => "readonly",
            };
            let stats = b.stats.view();
            serde_json::json!({
                "address": addr,
                "role": role,
                "up": b.is_healthy(),
                "inflight": stats.inflight,
                "calls": stats.calls,
                "errors": stats.errors,
                "latency_p50_ms": stats.p50_ms,
                "latency_p99_ms": stats.p99_ms,
                "files_owned": files_owned.get(addr).copied().unwrap_or(0),
            })
        })
        .collect();
    serde_json::json!({ "backends": rows })
}

/// What the admin endpoints read: the service answering `Cmd` (one
/// cluster's, or the one over shard groups) and the configuration in effect.
pub struct AdminState {
    pub service: Arc<dyn MilvusService>,
    pub reconfigurer: Arc<Reconfigurer>,
}

/// The `/admin/...` routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/admin/conn_stats", get(conn_stats_handler))
        .route("/admin/route/{collection}", get(route_handler))
        .route("/admin/config", get(config_handler))
        .with_state(state)
}

fn json(code: StatusCode, body: String) -> axum::response::Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Answers like `Cmd(text)`: the reply text, or the Milvus error as JSON with 400.
async fn cmd(state: &AdminState, text: String) -> axum::response::Response {
    let error = |code: String, reason: String| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error_code": code, "reason": reason }).to_string(),
        )
    };
    match state
        .service
        .cmd(tonic::Request::new(Command { cmd: text }))
        .await
    {
        Ok(reply) => {
            let reply = reply.into_inner();
            match reply.status.filter(|s| s.error_code != 0) {
                None => json(StatusCode::OK, reply.string_reply),
                Some(s) => {
                    let code = crate::wire::ErrorCode::try_from(s.error_code)
                        .unwrap_or(crate::wire::ErrorCode::UnexpectedError);
                    error(format!("{code:?}"), s.reason)
                }
            }
        }
        Err(status) => error(format!("{:?}", status.code()), status.message().to_string()),
    }
}

async fn conn_stats_handler(State(state): State<Arc<AdminState>>) -> axum::response::Response {
    cmd(&state, "conn_stats".to_string()).await
}

async fn route_handler(
    State(state): State<Arc<AdminState>>,
    Path(collection): Path<String>,
) -> axum::response::Response {
    cmd(&state, format!("route {collection}")).await
}

/// The configuration as TOML with the metadata password redacted.
pub fn effective_config_text(
    mut config: crate::config::Config,
) -> Result<String, toml::ser::Error> {
    config.meta.uri = crate::meta::redacted(&config.meta.uri);
    for group in &mut config.groups {
        group.meta_uri = crate::meta::redacted(&group.meta_uri);
    }
    toml::to_string(&config)
}

async fn config_handler(State(state): State<Arc<AdminState>>) -> axum::response::Response {
    match effective_config_text(state.reconfigurer.effective()) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_effective_config_hides_the_metadata_password() {
        let mut config = crate::config::Config::default();
        config.meta.uri = "mysql://root:s3cret@db:3306/milvus".into();
        config.groups.push(crate::config::GroupConfig {
            name: "g1".into(),
            meta_uri: "mysql://root:s3cret2@db:3306/milvus_g1".into(),
            writable: "10.0.0.1:19530".into(),
            readonly: Vec::new(),
        });
        let text = effective_config_text(config).unwrap();
        assert!(!text.contains("s3cret2"), "{text}");
        assert!(text.contains("db:3306/milvus_g1"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("db:3306/milvus"), "{text}");
        assert!(text.contains("[discovery]"), "{text}");
    }
}
