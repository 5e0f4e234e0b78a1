//! The in-process "channel" the HTTP routes call gRPC through: the very
//! route stack the server's gRPC listener serves (for the proxy
//! `Access<Routes<..>>`: access control, deadlines per kind, search
//! admission, per-RPC metrics, the raw insert path; for the node its traced
//! `MilvusServiceServer`), called as a tower service without a socket.
//!
//! Each call carries a [`TcpConnectInfo`] naming the HTTP client as the
//! peer, so `access.allow_networks` judges the REST client exactly as it
//! judges a gRPC one, and the HTTP request's W3C trace context
//! (`traceparent`, `tracestate`), so the call's spans continue the REST
//! client's trace as a gRPC client's would. Both come from a task-local the
//! HTTP layer sets around each request ([`with_caller`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::TcpConnectInfo;
use tower::util::BoxCloneSyncService;
use tower::Service;

/// What the in-process calls of one HTTP request say about its caller.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub peer: Option<SocketAddr>,
    /// The trace-context headers it sent.
    pub trace: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Caller {
    /// The caller of an HTTP request from `peer` with `headers`.
    pub fn of(peer: Option<SocketAddr>, headers: &http::HeaderMap) -> Caller {
        let trace = TRACE_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.clone();
                Some((http::HeaderName::from_static(name), value))
            })
            .collect();
        Caller { peer, trace }
    }
}

/// W3C trace context, as `trace::continue_remote` reads it.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

tokio::task_local! {
    /// The HTTP client while its request is handled.
    static CALLER: Caller;
}

/// Runs `f` (an HTTP request's handling) with `caller` as what every
/// in-process gRPC call made from it reports.
pub async fn with_caller<F: Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

type Inner = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// A gRPC route stack as a client transport (see the module doc).
#[derive(Clone)]
pub struct InProcess {
    inner: Inner,
    local_addr: Option<SocketAddr>,
}

impl InProcess {
    /// Calls `routes`; `local_addr` is the HTTP listener's address, reported
    /// as the connection's local end.
    pub fn new<S>(routes: S, local_addr: Option<SocketAddr>) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        InProcess {
            inner: BoxCloneSyncService::new(routes),
            local_addr,
        }
    }

    /// The same routes, reporting `local_addr` as the local end.
    pub fn with_local_addr(mut self, local_addr: SocketAddr) -> Self {
        self.local_addr = Some(local_addr);
        self
    }
}

impl Service<http::Request<Body>> for InProcess {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = <Inner as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let caller = CALLER.try_with(Caller::clone).unwrap_or_default();
        for (name, value) in caller.trace {
            req.headers_mut().insert(name, value);
        }
        req.extensions_mut().insert(TcpConnectInfo {
            local_addr: self.local_addr,
            remote_addr: caller.peer,
        });
        self.inner.call(req)
    }
}

/// The generated Milvus client over the in-process routes.
pub type MilvusClient = crate::wire::milvus_service_client::MilvusServiceClient<InProcess>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The peer and the trace context of the HTTP request reach the gRPC
    /// request the routes see.
    #[tokio::test]
    async fn calls_carry_the_http_caller() {
        let (seen, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let routes = tower::service_fn(move |req: http::Request<Body>| {
            let peer = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr);
            let trace = req.headers().get("traceparent").cloned();
            let _ = seen.send((peer, trace));
            async { Ok::<_, Infallible>(http::Response::new(Body::empty())) }
        });
        let mut channel = InProcess::new(routes, None);
        let mut headers = http::HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", http::HeaderValue::from_static(parent));
        let peer: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let caller = Caller::of(Some(peer), &headers);
        // Inside the scope, as a route's client calls it.
        with_caller(caller, async {
            channel.call(http::Request::new(Body::empty())).await
        })
        .await
        .unwrap();
        let (got_peer, got_trace) = rx.recv().await.unwrap();
        assert_eq!(got_peer, Some(peer));
        assert_eq!(got_trace.unwrap(), parent);
        // Outside an HTTP request: no peer, no trace.
        channel
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), (None, None));
    }
}
