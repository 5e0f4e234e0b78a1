//! Serving and dialling `milvus.grpc.MilvusService` with Milvus' transport
//! settings: large message limits (tonic's 4 MiB default would break a
//! 100k x 128 insert), gzip accepted, graceful shutdown; TLS to a backend
//! through the connector of `tls::backend`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::wire::milvus_service_client::MilvusServiceClient;
use crate::wire::milvus_service_server::{MilvusService, MilvusServiceServer};

/// HTTP/2 flow-control windows. The 64 KiB protocol default makes a 50 MB
/// insert wait on hundreds of window updates; Milvus messages are large.
/// (Shared with the proxy's own backend channel, `backend::channel`.)
pub(crate) const STREAM_WINDOW: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 16 << 20;

/// Client keepalive pings, also while idle.
pub(crate) const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Default message size limit: Milvus itself has none, clients send up to
/// 256 MB of vectors plus framing.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Binds `addr` (port 0 picks a free port) and returns the listener and the bound address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The generated server for `service`, with Milvus' limits and gzip accepted.
pub fn milvus_server<S: MilvusService>(
    service: S,
    max_message_size: usize,
) -> MilvusServiceServer<S> {
    MilvusServiceServer::new(service)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size)
        .accept_compressed(CompressionEncoding::Gzip)
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// in-flight calls finish. Every call runs in a span continuing the caller's trace.
pub async fn serve<S: MilvusService>(
    listener: TcpListener,
    service: S,
    max_message_size: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let server = crate::trace::ServerSpan::new(milvus_server(service, max_message_size));
    serve_routes(listener, server, shutdown).await
}

/// A service the gRPC server routes calls to: the generated server, or a
/// tower stack in front of it.
pub trait Routes:
    tonic::codegen::Service<
        tonic::codegen::http::Request<tonic::body::Body>,
        Response = tonic::codegen::http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + tonic::server::NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Routes for T where
    T: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves any `milvus.grpc.MilvusService` implementation at the HTTP level
/// (the generated server, or a router in front of it).
pub async fn serve_routes(
    listener: TcpListener,
    svc: impl Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // No health service: any `Health` type stands for "none".
    let no_health: Option<HealthServer<tonic_health::server::HealthService>> = None;
    serve_incoming(tcp_incoming(listener), svc, no_health, shutdown).await
}

/// [`serve_routes`] plus the gRPC health service (`grpc.health.v1.Health`) on the same port.
pub async fn serve_routes_with_health(
    listener: TcpListener,
    svc: impl Routes,
    health: HealthServer<impl Health>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(tcp_incoming(listener), svc, Some(health), shutdown).await
}

/// `tcp_nodelay` on the builder applies only to listeners tonic binds
/// itself; accepted streams need it set here, or Nagle's algorithm holds
/// small replies for the peer's delayed ACK (~40 ms).
fn tcp_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `svc` (and `health`, if any) over any stream of accepted
/// connections (plain TCP, or TLS ones) until `shutdown` resolves.
pub async fn serve_incoming<H: Health, I, IO, IE>(
    incoming: I,
    svc: impl Routes,
    health: Option<HealthServer<H>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .add_service(svc)
        .add_optional_service(health)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// An endpoint for `uri` with Milvus' transport settings.
fn endpoint(uri: String, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(CLIENT_KEEPALIVE_INTERVAL)
        .keep_alive_while_idle(true))
}

/// A lazily connecting channel to `addr` ("host:port").
pub fn channel(addr: &str, connect_timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(format!("http://{addr}"), connect_timeout)?.connect_lazy())
}

/// A lazily connecting channel to `addr` over TLS (`[backend_tls]`); the
/// connect timeout bounds the TCP connect and the handshake together.
pub fn tls_channel(
    addr: &str,
    connect_timeout: Duration,
    connector: crate::tls::backend::Connector,
) -> Result<Channel, tonic::transport::Error> {
    Ok(
        endpoint(format!("https://{addr}"), connect_timeout)?
            .connect_with_connector_lazy(connector),
    )
}

/// A client on `channel` with Milvus' message limits.
pub fn client_on(channel: Channel, max_message_size: usize) -> MilvusServiceClient<Channel> {
    MilvusServiceClient::new(channel)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size)
}

/// A lazily connecting client for `addr` ("host:port"), with the same limits.
pub fn client(
    addr: &str,
    connect_timeout: Duration,
    max_message_size: usize,
) -> Result<MilvusServiceClient<Channel>, tonic::transport::Error> {
    Ok(client_on(channel(addr, connect_timeout)?, max_message_size))
}

/// A gRPC codec that passes message bytes through untouched, so a proxy can
/// forward a request without decoding and re-encoding it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
