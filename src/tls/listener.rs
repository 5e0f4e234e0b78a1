//! TLS on the client listener (`[tls]`, off by default): rustls (ring) with
//! the certificate chain and key from PEM files, client-certificate
//! verification (mTLS) against `client_ca_file` when it is set, and the
//! files re-read when their modification time changes (checked every
//! `reload_interval`; a broken new file is logged and the old
//! configuration kept). Handshakes run per connection, off the accept loop
//! and bounded in time, so one slow client cannot stall the others.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{certificates, private_key, provider, roots, set, CertificateFiles, Reloading};

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `[tls]` (`cert_file`, `key_file`, `client_ca_file`),
    /// or None when TLS is off (no `cert_file`).
    pub fn from_paths(cert_file: &str, key_file: &str, client_ca_file: &str) -> Option<TlsFiles> {
        set(cert_file).map(|cert| TlsFiles {
            cert,
            key: PathBuf::from(key_file),
            client_ca: set(client_ca_file),
        })
    }
}

impl CertificateFiles for TlsFiles {
    type Config = ServerConfig;

    fn paths(&self) -> Vec<&PathBuf> {
        let mut paths = vec![&self.cert, &self.key];
        paths.extend(self.client_ca.as_ref());
        paths
    }

    fn build(&self) -> Result<ServerConfig, String> {
        server_config(self)
    }

    fn purpose(&self) -> &'static str {
        "client listener"
    }
}

/// The rustls server configuration of `files` (gRPC: ALPN "h2").
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let chain = certificates(&files.cert, "certificate file")?;
    let key = private_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = roots(ca, "client CA file")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {} do not make a TLS identity: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The listener's server configuration, rebuilt when the files change.
pub type ReloadingConfig = Reloading<TlsFiles>;

fn acceptor(tls: &ReloadingConfig) -> TlsAcceptor {
    TlsAcceptor::from(tls.current())
}

/// One accepted, handshaken TLS connection, with the addresses the access
/// layer reads (as tonic's own `TcpConnectInfo`).
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    local: Option<SocketAddr>,
    peer: SocketAddr,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The handshaken connections of `listener`, for tonic's
/// `serve_with_incoming`. The accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingConfig>,
) -> impl Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<TlsConnection, io::Error>>(64);
    tokio::spawn(async move {
        let local = listener.local_addr().ok();
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor(&tls);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx
                            .send(Ok(TlsConnection {
                                stream,
                                local,
                                peer,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
