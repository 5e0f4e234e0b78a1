//! The in-process "channel" the HTTP routes call gRPC through: the very
//! route stack the server's gRPC listener serves (for the proxy
//! `Access<Routes<..>>`: access control, deadlines per kind, search
//! admission, per-RPC metrics, the raw insert path; for the node its traced
//! `MilvusServiceServer`), called as a tower service without a socket.
//!
//! Each call carries a [`TcpConnectInfo`] naming the HTTP client as the
//! peer, so `access.allow_networks` judges the REST client exactly as it
//! judges a gRPC one. The peer comes from a task-local the HTTP layer sets
//! around each request ([`with_peer`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::TcpConnectInfo;
use tower::util::BoxCloneSyncService;
use tower::Service;

tokio::task_local! {
    /// The HTTP client's address while its request is handled.
    static PEER: SocketAddr;
}

/// Runs `f` (an HTTP request's handling) with `peer` as the client address
/// every in-process gRPC call made from it reports.
pub async fn with_peer<F: Future>(peer: Option<SocketAddr>, f: F) -> F::Output {
    match peer {
        Some(peer) => PEER.scope(peer, f).await,
        None => f.await,
    }
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
        let remote_addr = PEER.try_with(|peer| *peer).ok();
        req.extensions_mut().insert(TcpConnectInfo {
            local_addr: self.local_addr,
            remote_addr,
        });
        self.inner.call(req)
    }
}

/// The generated Milvus client over the in-process routes.
pub type MilvusClient = crate::wire::milvus_service_client::MilvusServiceClient<InProcess>;
