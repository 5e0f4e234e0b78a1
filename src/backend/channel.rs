//! The HTTP/2 channel the proxy calls its backends on: one connection per
//! node, dialled lazily (plain TCP, or TLS through `tls::backend`), bounded
//! by the connect timeout, redialled on the next call once it has closed.
//!
//! Hand-written rather than tonic's `transport::Channel`: that channel is a
//! `tower::buffer::Buffer`, so every request is handed to a buffer worker
//! task, which hands it to hyper's connection task: one extra task hop (and
//! its wake-ups) per backend call, on the proxy's hottest path. Here the
//! caller's task hands the request straight to hyper's `SendRequest`.
//!
//! Kept as tonic's channel behaves: the HTTP/2 settings of `grpc::endpoint`
//! (windows, keepalive every 30 s also while idle, adaptive window off); a
//! failed connect is a `tonic::ConnectError`, which tonic's
//! `Status::from_error` turns into UNAVAILABLE with the connector's message;
//! the request's `grpc-timeout` is enforced on the call once the connection
//! is there (`tonic::TimeoutExpired`, CANCELLED "Timeout expired"), as
//! tonic's `GrpcTimeout` layer does. One dial at a time: callers arriving
//! while a connect is under way wait for that same attempt.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{FutureExt, Shared};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::http::header::{HeaderValue, USER_AGENT};
use tonic::codegen::http::uri::{Authority, InvalidUri, Parts, Scheme, Uri};
use tonic::codegen::http::{Request, Response};

use crate::grpc::{CLIENT_KEEPALIVE_INTERVAL, CONNECTION_WINDOW, STREAM_WINDOW};

const AGENT: &str = concat!("mishards/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a connection to the node is opened.
#[derive(Clone)]
pub enum Dialer {
    /// Plain TCP (TCP_NODELAY on).
    Tcp,
    /// TLS through the `[backend_tls]` connector of this node.
    Tls(crate::tls::backend::Connector),
}

/// A connect attempt, awaited by every caller that needs the connection
/// meanwhile. The error is shared, so each caller gets its own copy.
type Attempt = Shared<Pin<Box<dyn Future<Output = Result<Sender, Arc<io::Error>>> + Send>>>;

type Sender = SendRequest<Body>;

enum State {
    /// Never connected, or the last attempt failed: the next call dials.
    Idle,
    Connecting(Attempt),
    /// Connected; dials again once `is_closed`.
    Connected(Sender),
}

struct Inner {
    addr: String,
    scheme: Scheme,
    authority: Authority,
    dialer: Dialer,
    connect_timeout: Duration,
    settings: Builder<TokioExecutor>,
    /// Held only to read or swap the state, never across an await.
    state: Mutex<State>,
}

/// A lazily connecting, self-reconnecting HTTP/2 channel to one backend.
#[derive(Clone)]
pub struct DirectChannel {
    inner: Arc<Inner>,
}

impl DirectChannel {
    /// A channel to `addr` ("host:port"); nothing is dialled before the first call.
    pub fn new(addr: &str, connect_timeout: Duration, dialer: Dialer) -> Result<Self, InvalidUri> {
        let authority = Authority::try_from(addr)?;
        let scheme = match dialer {
            Dialer::Tcp => Scheme::HTTP,
            Dialer::Tls(_) => Scheme::HTTPS,
        };
        let mut settings = Builder::new(TokioExecutor::new());
        settings
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(CLIENT_KEEPALIVE_INTERVAL)
            .keep_alive_while_idle(true)
            .adaptive_window(false)
            .timer(TokioTimer::new());
        Ok(Self {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                scheme,
                authority,
                dialer,
                connect_timeout,
                settings,
                state: Mutex::new(State::Idle),
            }),
        })
    }
}

impl Inner {
    /// The open connection, or the attempt to wait for (started here when
    /// there is none).
    fn connection(self: &Arc<Self>) -> Result<Sender, Attempt> {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*state {
            State::Connected(sender) if !sender.is_closed() => return Ok(sender.clone()),
            State::Connecting(attempt) => return Err(attempt.clone()),
            State::Connected(_) | State::Idle => {}
        }
        let attempt = self.start_attempt();
        *state = State::Connecting(attempt.clone());
        Err(attempt)
    }

    /// Dials in a task of its own, so an attempt runs to its end (and
    /// records its outcome) even when the callers waiting for it give up.
    fn start_attempt(self: &Arc<Self>) -> Attempt {
        let inner = self.clone();
        let task = tokio::spawn(async move {
            let result = inner.dial().await.map_err(Arc::new);
            if let Ok(mut state) = inner.state.lock() {
                *state = match &result {
                    Ok(sender) => State::Connected(sender.clone()),
                    Err(_) => State::Idle,
                };
            }
            result
        });
        let joined: Pin<Box<dyn Future<Output = Result<Sender, Arc<io::Error>>> + Send>> =
            Box::pin(async move {
                task.await.unwrap_or_else(|e| {
                    Err(Arc::new(io::Error::other(format!(
                        "connect task failed: {e}"
                    ))))
                })
            });
        joined.shared()
    }

    /// TCP or TLS connect and the HTTP/2 handshake, within the connect timeout.
    async fn dial(&self) -> io::Result<Sender> {
        let addr = &self.addr;
        let connect = async {
            match &self.dialer {
                Dialer::Tcp => {
                    let tcp = TcpStream::connect(addr).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot connect to backend {addr}: {e}"))
                    })?;
                    let _ = tcp.set_nodelay(true);
                    self.handshake(TokioIo::new(tcp)).await
                }
                Dialer::Tls(connector) => {
                    let uri = self.origin();
                    let io = tower::ServiceExt::oneshot(connector.clone(), uri).await?;
                    self.handshake(io).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "cannot connect to backend {addr}: no connection within {}",
                    humantime::format_duration(self.connect_timeout)
                ),
            )),
        }
    }

    async fn handshake<T>(&self, io: T) -> io::Result<Sender>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let addr = &self.addr;
        let (sender, connection) = self.settings.handshake(io).await.map_err(|e| {
            io::Error::other(format!("HTTP/2 handshake with backend {addr} failed: {e}"))
        })?;
        let addr = addr.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(backend = %addr, "backend connection ended: {e}");
            }
        });
        Ok(sender)
    }

    fn origin(&self) -> Uri {
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(tonic::codegen::http::uri::PathAndQuery::from_static("/"));
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// `request` addressed to this node (h2 needs scheme and authority;
    /// tonic's client sets only the path).
    fn address(&self, request: &mut Request<Body>) -> Result<(), BoxError> {
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = request.uri().path_and_query().cloned();
        *request.uri_mut() = Uri::from_parts(parts)?;
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(AGENT));
        Ok(())
    }

    async fn sender(self: &Arc<Self>) -> Result<Sender, BoxError> {
        match self.connection() {
            Ok(sender) => Ok(sender),
            Err(attempt) => attempt.await.map_err(|e| connect_error(&e)),
        }
    }

    async fn send(
        self: Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, BoxError> {
        self.address(&mut request)?;
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::deadline::parse_grpc_timeout);
        let mut sender = self.sender().await?;
        let exchange = async {
            match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed after it was looked
                    // up (`connection` now finds it closed and redials).
                    // Once more, on the new one.
                    Some(request) => {
                        let mut sender = self.sender().await?;
                        Ok(sender.send_request(request).await?)
                    }
                    None => Err(BoxError::from(e.into_error())),
                },
            }
        };
        match timeout {
            Some(t) => match tokio::time::timeout(t, exchange).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(tonic::TimeoutExpired(()))),
            },
            None => exchange.await,
        }
    }
}

/// A failed connect, for tonic: `ConnectError` maps to UNAVAILABLE.
fn connect_error(e: &io::Error) -> BoxError {
    Box::new(tonic::ConnectError(Box::new(io::Error::new(
        e.kind(),
        e.to_string(),
    ))))
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<hyper::body::Incoming>, BoxError>> + Send>>;

impl tower::Service<Request<Body>> for DirectChannel {
    type Response = Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: connecting, and waiting for a connection, happen in the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        Box::pin(self.inner.clone().send(request))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::net::TcpListener;
    use tonic::transport::server::TcpIncoming;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    /// A gRPC health server on `listener`, until the task is aborted.
    fn serve(listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (_reporter, health) = tonic_health::server::health_reporter();
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        })
    }

    async fn check(channel: &DirectChannel) -> Result<(), tonic::Status> {
        let mut client = HealthClient::new(channel.clone());
        client
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
    }

    fn channel(addr: SocketAddr, dialer: Dialer) -> DirectChannel {
        DirectChannel::new(&addr.to_string(), Duration::from_millis(300), dialer).unwrap()
    }

    #[tokio::test]
    async fn calls_a_node_on_one_connection_with_the_trace_interceptor() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener);
        let channel = channel(addr, Dialer::Tcp);
        let traced = tonic::service::interceptor::InterceptedService::new(
            channel.clone(),
            crate::trace::InjectTraceContext,
        );
        let mut client = HealthClient::new(traced);
        for _ in 0..3 {
            client.check(HealthCheckRequest::default()).await.unwrap();
            let sender = match &*channel.inner.state.lock().unwrap() {
                State::Connected(sender) => sender.clone(),
                _ => panic!("not connected after a call"),
            };
            assert!(!sender.is_closed());
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_closed_port_is_unavailable_at_once_and_a_restarted_node_is_redialled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let channel = channel(addr, Dialer::Tcp);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (_reporter, health) = tonic_health::server::health_reporter();
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        check(&channel).await.unwrap();
        check(&channel).await.unwrap();

        // The node goes away: its connections close, the port refuses.
        // (Graceful: tonic's connection tasks outlive an aborted accept loop.)
        let _ = stop.send(());
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let status = check(&channel).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status
                .message()
                .contains(&format!("cannot connect to backend {addr}")),
            "{status:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(200));

        // Back on the same port: the next call dials again.
        let listener = TcpListener::bind(addr).await.unwrap();
        let server = serve(listener);
        check(&channel).await.unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn concurrent_first_callers_all_wait_for_the_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let channel = channel(addr, Dialer::Tcp);
        let server = serve(listener);
        let calls = (0..16).map(|_| check(&channel));
        for result in futures::future::join_all(calls).await {
            result.unwrap();
        }
        let dialled = matches!(&*channel.inner.state.lock().unwrap(), State::Connected(_));
        assert!(dialled);
        server.abort();
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs,
    /// so a TCP connect to it hangs (queue of 1, filled by `_held`).
    async fn silent_port() -> (tokio::net::TcpListener, SocketAddr, Vec<TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        // Fill the queue until a connect no longer completes at once.
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => held.push(stream),
                _ => break,
            }
        }
        (listener, addr, held)
    }

    #[tokio::test]
    async fn a_connect_that_gets_no_answer_ends_at_the_connect_timeout() {
        let (_listener, addr, _held) = silent_port().await;
        let channel = channel(addr, Dialer::Tcp);
        let started = Instant::now();
        let status = check(&channel).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("no connection within 300ms"),
            "{status:?}"
        );
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_gets_no_answer_ends_at_the_connect_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let files =
            crate::tls::BackendTlsFiles::from_paths(ca_file.to_str().unwrap(), "", "").unwrap();
        let tls = crate::tls::BackendTls::load(files, "").unwrap();
        // Accepts the TCP connection, never answers the TLS ClientHello.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let connector = tls.connector(&addr.to_string()).unwrap();
        let channel = channel(addr, Dialer::Tls(connector));
        let started = Instant::now();
        let status = check(&channel).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("no connection within 300ms"),
            "{status:?}"
        );
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
        silent.abort();
    }

    #[tokio::test]
    async fn the_requests_grpc_timeout_ends_an_unanswered_call() {
        // A node that accepts the HTTP/2 connection but never answers a call:
        // the h2 server side is driven, the request handler never replies.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let svc = tower::service_fn(|_req: Request<Body>| async {
                futures::future::pending::<Result<Response<Body>, std::convert::Infallible>>().await
            });
            let _ = tonic::transport::Server::builder()
                .add_service(Pending(svc))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        let channel = channel(addr, Dialer::Tcp);
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request.set_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let status = HealthClient::new(channel).check(request).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
        assert!(status.message().contains("Timeout expired"), "{status:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
        server.abort();
    }

    /// A service named as the health service, for `Server::add_service`.
    #[derive(Clone)]
    struct Pending<S>(S);

    impl<S> tonic::server::NamedService for Pending<S> {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    impl<S> tower::Service<Request<Body>> for Pending<S>
    where
        S: tower::Service<Request<Body>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: Request<Body>) -> S::Future {
            self.0.call(request)
        }
    }
}
