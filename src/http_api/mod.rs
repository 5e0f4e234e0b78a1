//! Milvus 1.1's HTTP (REST) API (port 19121), served by the proxy and by
//! the bundled node from this one adapter. Authority for routes, bodies and
//! codes: Milvus 1.1's `web_impl` (see the reference in the docs).
//!
//! Every route calls its gRPC twin through [`channel::InProcess`]: the same
//! route stack the server's gRPC listener serves, so access control,
//! deadlines, search admission and metrics apply to REST as to gRPC, and a
//! route answers what its gRPC twin answers, in Milvus 1.1's JSON shapes.
//!
//! Around every route (one middleware):
//! * CORS (reference §2.5): any path answers `OPTIONS` with 204, an empty
//!   body and the CORS headers, and every reply carries them;
//! * one trailing `/` is tolerated (`/collections/` is `/collections`);
//! * a body over `server.max_message_size` is refused with **413** and a
//!   StatusDto `{"message":"...","code":5}` (Milvus 1.1 has no limit);
//! * an unknown path or method is 404 with a StatusDto, code 32
//!   (UNKNOWN_PATH), instead of oatpp's plain text.
//!
//! Deviations from Milvus 1.1 kept on purpose: JSON replies always carry
//! `Content-Type: application/json`; malformed or mistyped JSON bodies are
//! 400 code 36 (never 500); DELETE successes are 204 **without** a body
//! (a 204 with a body breaks keep-alive in strict clients, reference §2.3).

mod channel;
mod collections;
mod config;
pub mod errors;
mod indexes;
mod openapi;
mod partitions;
mod segments;
mod system;
mod vectors;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

pub use channel::{InProcess, MilvusClient};
use errors::{code, status_reply, ApiError};

/// What the routes share: the in-process gRPC transport and the limits.
pub struct ApiState {
    channel: InProcess,
    max_message_size: usize,
}

impl ApiState {
    /// Routes over `channel`, messages (and request bodies) up to `max_message_size`.
    pub fn new(channel: InProcess, max_message_size: usize) -> Self {
        ApiState {
            channel,
            max_message_size,
        }
    }

    /// A gRPC client over the in-process routes (a cheap clone), with the
    /// server's message limits.
    pub fn client(&self) -> MilvusClient {
        MilvusClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size)
    }

    /// The largest request body accepted (`server.max_message_size`).
    pub fn max_body_size(&self) -> usize {
        self.max_message_size
    }
}

/// The CORS headers of every reply (reference §2.5).
const CORS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, POST, OPTIONS, PUT, DELETE",
    ),
    (
        "access-control-allow-headers",
        "DNT, User-Agent, X-Requested-With, If-Modified-Since, Cache-Control, Content-Type, Range, Authorization",
    ),
    ("access-control-max-age", "1728000"),
];

/// The extra routes of this module (not in a route module).
pub(crate) const ROUTES: &[(&str, &str)] =
    &[("GET", "/"), ("GET", "/state"), ("GET", "/openapi.json")];

/// Every route: (method, OpenAPI path).
pub(crate) fn all_routes() -> Vec<(&'static str, &'static str)> {
    [
        ROUTES,
        collections::ROUTES,
        partitions::ROUTES,
        indexes::ROUTES,
        vectors::ROUTES,
        segments::ROUTES,
        system::ROUTES,
        config::ROUTES,
    ]
    .concat()
}

/// The whole HTTP API over `state`.
pub fn router(state: Arc<ApiState>) -> Router {
    let max = state.max_message_size;
    let routes = Router::new()
        .route("/", get(root))
        .route("/state", get(server_state))
        .route("/openapi.json", get(openapi::serve))
        .merge(collections::routes())
        .merge(partitions::routes())
        .merge(indexes::routes())
        .merge(vectors::routes())
        .merge(segments::routes())
        .merge(system::routes())
        .merge(config::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .layer(DefaultBodyLimit::max(max))
        .with_state(state.clone());
    // The middleware wraps the whole router (its only route is the
    // fallback), so it runs before routing and may rewrite the path.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(state, around))
}

/// Serves [`router`] on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new(ApiState {
        channel: state.channel.clone().with_local_addr(bound),
        max_message_size: state.max_message_size,
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "HTTP API stopped");
        }
    });
    Ok((bound, task))
}

/// CORS, OPTIONS, the trailing `/`, the body limit, and the client's
/// address for the in-process gRPC calls.
async fn around(State(state): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let mut response = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else if declared_length(&req).is_some_and(|n| n > state.max_message_size as u64) {
        too_large(state.max_message_size)
    } else {
        strip_trailing_slash(&mut req);
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let caller = channel::Caller::of(peer, req.headers());
        let response = channel::with_caller(caller, next.run(req)).await;
        if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&response) {
            // A chunked body over the limit: axum's plain-text rejection.
            too_large(state.max_message_size)
        } else {
            response
        }
    };
    let headers = response.headers_mut();
    for (name, value) in CORS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn too_large(max: usize) -> Response {
    status_reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::ILLEGAL_ARGUMENT,
        &format!("request body larger than server.max_message_size ({max} bytes)"),
    )
}

/// `/collections/` → `/collections` (one trailing `/`, as oatpp; not `/`).
fn strip_trailing_slash(req: &mut Request) {
    let path = req.uri().path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let stripped = &path[..path.len() - 1];
    let rebuilt = match req.uri().query() {
        Some(q) => format!("{stripped}?{q}"),
        None => stripped.to_string(),
    };
    if let Ok(uri) = rebuilt.parse() {
        *req.uri_mut() = uri;
    }
}

async fn root() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], "Welcome to milvus").into_response()
}

/// `GET /state`: `{"message":"Success","code":0}`, without touching a backend.
async fn server_state() -> Response {
    status_reply(StatusCode::OK, code::SUCCESS, "Success")
}

async fn unknown_route(req: Request<Body>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        code::UNKNOWN_PATH,
        format!(
            "Current url has no mapping: {} {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// The web-layer route helpers the route modules share.
pub(crate) mod util {
    use std::collections::HashMap;

    use super::errors::{code, ApiError};

    /// The query string's parameters, **not percent-decoded** (as oatpp:
    /// `?ids=1,2,3` is sent with literal commas); the first of a repeated
    /// name wins; `name` alone is an empty value.
    pub fn query_map(query: Option<&str>) -> HashMap<String, String> {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(name.to_string())
                .or_insert_with(|| value.to_string());
        }
        map
    }

    /// A JSON object body's string field; absent or null → `None`.
    pub fn opt_str<'a>(
        body: &'a serde_json::Value,
        field: &str,
    ) -> Result<Option<&'a str>, ApiError> {
        match body.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::web(
                code::BODY_PARSE_FAIL,
                format!("Field '{field}' must be a string"),
            )),
        }
    }

    /// A JSON object body's integer field; absent or null → `None`.
    pub fn opt_i64(body: &serde_json::Value, field: &str) -> Result<Option<i64>, ApiError> {
        match body.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                ApiError::web(
                    code::BODY_PARSE_FAIL,
                    format!("Field '{field}' must be an integer"),
                )
            }),
        }
    }

    /// Refuses fields outside `known` (Milvus' DTOs: `allowUnknownFields = false`).
    pub fn only_fields(body: &serde_json::Value, known: &[&str]) -> Result<(), ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::web(
                code::ILLEGAL_BODY,
                "Request body must be a JSON object",
            ));
        };
        match object.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::web(
                code::BODY_PARSE_FAIL,
                format!("Unknown field '{k}'"),
            )),
            None => Ok(()),
        }
    }

    /// `offset`/`page_size`: digits only (else 37, naming 'offset' as
    /// Milvus does); an empty value is absent.
    pub fn page_param(value: Option<&String>, default: i64) -> Result<i64, ApiError> {
        match value.map(String::as_str) {
            None | Some("") => Ok(default),
            Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => v.parse().map_err(|_| {
                ApiError::web(
                    code::ILLEGAL_QUERY_PARAM,
                    "Query param 'offset' is illegal, only non-negative integer supported",
                )
            }),
            Some(_) => Err(ApiError::web(
                code::ILLEGAL_QUERY_PARAM,
                "Query param 'offset' is illegal, only non-negative integer supported",
            )),
        }
    }

    /// The page `[offset, offset + page_size)` of `n` items, or all of them.
    pub fn page_range(n: usize, offset: i64, page_size: i64, all: bool) -> std::ops::Range<usize> {
        if all {
            return 0..n;
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(n);
        let end = start
            .saturating_add(usize::try_from(page_size).unwrap_or(usize::MAX))
            .min(n);
        start..end
    }
}
