//! Serving and dialling `milvus.grpc.MilvusService` with Milvus' transport
//! settings: large message limits (tonic's 4 MiB default would break a
//! 100k x 128 insert), gzip accepted, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint, Server};

use crate::wire::milvus_service_client::MilvusServiceClient;
use crate::wire::milvus_service_server::{MilvusService, MilvusServiceServer};

/// Default message size limit: Milvus itself has none, clients send up to
/// 256 MB of vectors plus framing.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Binds `addr` (port 0 picks a free port) and returns the listener and the bound address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// in-flight calls finish.
pub async fn serve<S: MilvusService>(
    listener: TcpListener,
    service: S,
    max_message_size: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let svc = MilvusServiceServer::new(service)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size)
        .accept_compressed(CompressionEncoding::Gzip);
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// A lazily connecting client for `addr` ("host:port"), with the same limits.
pub fn client(
    addr: &str,
    connect_timeout: Duration,
    max_message_size: usize,
) -> Result<MilvusServiceClient<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(MilvusServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size))
}
