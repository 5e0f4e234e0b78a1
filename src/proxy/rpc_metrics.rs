//! Per-RPC telemetry as one tower layer around the proxy's gRPC server: every
//! call, whatever path serves it, counts in `mishards_inflight_requests`, is
//! timed in `mishards_request_duration_seconds` and counted in
//! `mishards_requests_total{method,status}`; it runs in the request's root
//! span (`rpc`: method, status, duration_ms; the search path fills in
//! collection, nq, topk, files and nodes), which continues a client's W3C
//! `traceparent`.
//!
//! The method is the last segment of the gRPC path. The status is the Milvus
//! status code the handler put in the response extensions ([`reply`] does it
//! for every handler), or, for a call that failed at the gRPC level (hybrid
//! RPCs, undecodable requests), the gRPC code name.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::{http, BoxFuture, Service};
use tower::Layer;
use tracing::Instrument;

use crate::status::{code_name, respond, MilvusResult, Reply};
use crate::telemetry::Metrics;

/// The gRPC path prefix of every Milvus RPC.
const SERVICE_PREFIX: &str = "/milvus.grpc.MilvusService/";

/// The method label of a call no handler serves (an unknown path): one label
/// for all of them, so a client cannot grow the series without bound.
const UNKNOWN_METHOD: &str = "unknown";

/// The Milvus status code name of a reply ("SUCCESS", "ILLEGAL_TOPK"...),
/// carried in the response extensions from the handler to [`RpcMetrics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyCode(pub &'static str);

/// Turns a handler's result into the gRPC answer (always gRPC OK, the
/// outcome in the embedded Milvus status, see [`respond`]) tagged with its
/// [`ReplyCode`]; failures are logged at debug level.
pub fn reply<T: Reply>(result: MilvusResult<T>) -> Result<tonic::Response<T>, tonic::Status> {
    let code = match &result {
        Ok(r) => r.status().map_or(0, |s| s.error_code),
        Err(e) => e.code as i32,
    };
    if let Err(e) = &result {
        tracing::debug!(code = code_name(code), reason = %e.reason, "request failed");
    }
    let mut response = respond(result)?;
    response.extensions_mut().insert(ReplyCode(code_name(code)));
    Ok(response)
}

/// Wraps a service in [`RpcMetrics`].
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts, times and labels every call `inner` serves (see the module docs).
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_name(request.uri().path()).to_string();
        let span = request_span(&method);
        crate::trace::continue_remote(&span, request.headers());
        let metrics = self.metrics.clone();
        let inflight = metrics.inflight();
        let started = Instant::now();
        let call = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = call.await;
                let seconds = started.elapsed().as_secs_f64();
                if let Ok(response) = &result {
                    let (method, status) = match handler_status(response) {
                        Some(status) => (method.as_str(), status),
                        None => (UNKNOWN_METHOD, header_status(response)),
                    };
                    metrics.observe_request(method, status, seconds);
                    let span = tracing::Span::current();
                    span.record("status", status);
                    if status != "SUCCESS" {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                tracing::Span::current().record("duration_ms", seconds * 1e3);
                drop(inflight);
                result
            }
            .instrument(span),
        )
    }
}

/// The root span of one request. The search path records `collection`,
/// `nq`, `topk`, `files` and `nodes` into it (see `proxy::search`).
fn request_span(method: &str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "rpc",
        otel.name = %format!("{}{method}", &SERVICE_PREFIX[1..]),
        otel.kind = "server",
        otel.status_code = Empty,
        method = %method,
        collection = Empty,
        nq = Empty,
        topk = Empty,
        files = Empty,
        nodes = Empty,
        status = Empty,
        duration_ms = Empty,
    )
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for RpcMetrics<S> {
    const NAME: &'static str = S::NAME;
}

/// The RPC name in a gRPC path: "/milvus.grpc.MilvusService/Search" ->
/// "Search"; any other path is [`UNKNOWN_METHOD`].
fn method_name(path: &str) -> &str {
    path.strip_prefix(SERVICE_PREFIX)
        .filter(|m| !m.is_empty() && !m.contains('/'))
        .unwrap_or(UNKNOWN_METHOD)
}

/// The status label of a response a handler produced: its [`ReplyCode`], or
/// the gRPC code of the error tonic answered with (a handler's error or a
/// request it could not decode). `None` when no handler ran: an unknown path.
fn handler_status<R>(response: &http::Response<R>) -> Option<&'static str> {
    let extensions = response.extensions();
    if let Some(ReplyCode(name)) = extensions.get::<ReplyCode>() {
        return Some(name);
    }
    extensions
        .get::<tonic::Status>()
        .map(|status| grpc_code_name(status.code()))
}

/// The gRPC code in the `grpc-status` header of a trailers-only response.
fn header_status<R>(response: &http::Response<R>) -> &'static str {
    let code = response
        .headers()
        .get(tonic::Status::GRPC_STATUS)
        .map_or(tonic::Code::Unknown, |v| {
            tonic::Code::from_bytes(v.as_bytes())
        });
    grpc_code_name(code)
}

/// The canonical name of a gRPC status code ("UNIMPLEMENTED"...).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::backend::Backends;
    use crate::config::Config;
    use crate::grpc::DEFAULT_MAX_MESSAGE_SIZE;
    use crate::meta::{MetaStore, MetaUri};
    use crate::proxy::raw_insert::RawInsert;
    use crate::proxy::service::ProxyService;
    use crate::topology::Topology;
    use crate::wire::{CollectionName, ErrorCode};

    #[test]
    fn the_method_is_the_last_segment_of_a_milvus_path() {
        assert_eq!(method_name("/milvus.grpc.MilvusService/Search"), "Search");
        assert_eq!(
            method_name("/milvus.grpc.MilvusService/HasCollection"),
            "HasCollection"
        );
        for other in [
            "/milvus.grpc.MilvusService/",
            "/milvus.grpc.MilvusService/a/b",
            "/grpc.health.v1.Health/Check",
            "/",
        ] {
            assert_eq!(method_name(other), UNKNOWN_METHOD, "{other}");
        }
    }

    #[tokio::test]
    async fn labels_by_reply_code_then_grpc_error_then_unknown_path() {
        let metrics = Metrics::new();
        let inner = service_fn(|request: http::Request<()>| async move {
            let mut response = http::Response::new(());
            match request.uri().path() {
                "/milvus.grpc.MilvusService/HasCollection" => {
                    response.extensions_mut().insert(ReplyCode("SUCCESS"));
                }
                "/milvus.grpc.MilvusService/HybridSearch" => {
                    // What tonic answers for a handler's (or the decoder's) error.
                    response = tonic::Status::unimplemented("hybrid").into_http();
                }
                _ => {
                    // The generated server's answer to a path it does not serve.
                    response.headers_mut().insert(
                        tonic::Status::GRPC_STATUS,
                        (tonic::Code::Unimplemented as i32).into(),
                    );
                }
            }
            Ok::<_, Infallible>(response)
        });
        let layered = RpcMetricsLayer::new(metrics.clone()).layer(inner);
        for path in [
            "/milvus.grpc.MilvusService/HasCollection",
            "/milvus.grpc.MilvusService/HybridSearch",
            "/milvus.grpc.MilvusService/NoSuchRpc",
        ] {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            layered.clone().oneshot(request).await.unwrap();
        }
        let text = metrics.encode();
        for expected in [
            r#"mishards_requests_total{method="HasCollection",status="SUCCESS"} 1"#,
            r#"mishards_requests_total{method="HybridSearch",status="UNIMPLEMENTED"} 1"#,
            r#"mishards_requests_total{method="unknown",status="UNIMPLEMENTED"} 1"#,
            r#"mishards_request_duration_seconds_count{method="HasCollection"} 1"#,
            "mishards_inflight_requests 0",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("NoSuchRpc"), "{text}");
    }

    /// The served stack, end to end over TCP: a HasCollection (not a search)
    /// is in flight while the writer is silent (for the 500 ms deadline, so it
    /// lands above the 0.256 s bucket), then counted with the Milvus
    /// code its reply carries and timed; a hybrid RPC is counted by its gRPC code.
    #[tokio::test]
    async fn every_rpc_goes_through_the_layer() {
        // A writer that accepts connections and never answers.
        let silent_writer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::default();
        config.backends.writable = silent_writer.local_addr().unwrap().to_string();
        config.backends.request_timeout = Duration::from_millis(500);
        let deadline = config.backends.request_deadline();
        let metrics = Metrics::new();
        let backends = Arc::new(Backends::new(&config, metrics.clone()).unwrap());
        let uri = MetaUri::parse("sqlite::memory:", None).unwrap();
        let meta = MetaStore::connect_read_only(&uri, 1).await.unwrap();
        let topology = Arc::new(Topology::new(meta, metrics.clone()));
        let service = ProxyService::new(
            backends.clone(),
            topology,
            metrics.clone(),
            deadline,
            deadline,
            super::super::cluster::Protection::from_config(&config, metrics.clone()),
        );
        let raw_insert = RawInsert::new(backends.writable.clone(), deadline);
        let routes = super::super::grpc_routes(
            service,
            raw_insert,
            metrics.clone(),
            DEFAULT_MAX_MESSAGE_SIZE,
            super::super::RouteLimits::from_config(&config),
        );
        let (listener, addr) = crate::grpc::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::grpc::serve_routes(listener, routes, async {
            let _ = stopped.await;
        }));
        let client = crate::grpc::client(
            &addr.to_string(),
            Duration::from_secs(5),
            DEFAULT_MAX_MESSAGE_SIZE,
        )
        .unwrap();
        let name = CollectionName {
            collection_name: "c".into(),
        };

        let call = tokio::spawn({
            let mut client = client.clone();
            let name = name.clone();
            async move { client.has_collection(name).await }
        });
        let mut waited = Duration::ZERO;
        while !metrics.encode().contains("mishards_inflight_requests 1") {
            assert!(waited < Duration::from_secs(5), "{}", metrics.encode());
            tokio::time::sleep(Duration::from_millis(5)).await;
            waited += Duration::from_millis(5);
        }
        let reply = call.await.unwrap().unwrap().into_inner();
        assert_eq!(
            reply.status.unwrap().error_code,
            ErrorCode::ConnectFailed as i32
        );
        let status = client
            .clone()
            .has_hybrid_collection(name)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);

        let text = metrics.encode();
        for expected in [
            r#"mishards_requests_total{method="HasCollection",status="CONNECT_FAILED"} 1"#,
            r#"mishards_request_duration_seconds_count{method="HasCollection"} 1"#,
            r#"mishards_request_duration_seconds_bucket{le="0.256",method="HasCollection"} 0"#,
            r#"mishards_requests_total{method="HasHybridCollection",status="UNIMPLEMENTED"} 1"#,
            "mishards_inflight_requests 0",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
