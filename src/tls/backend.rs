//! TLS from the proxy to its backends (`[backend_tls]`, off while `ca_file`
//! is empty). Milvus 1.x nodes speak plain gRPC only, so an operator who
//! wants the proxy-to-node hop encrypted puts a TLS-terminating sidecar in
//! front of each node; the proxy verifies the sidecar's certificate against
//! `ca_file` under `server_name` (default: the host of the backend address,
//! a DNS name or an IP address), and presents `cert_file`/`key_file` when
//! the sidecar asks for a client certificate (mTLS).
//!
//! A hand-written connector rather than tonic's `tls-ring` feature: tonic
//! fixes its `ClientTlsConfig` when the channel is built, while this one
//! takes the configuration in effect at each new connection, so replaced
//! certificate files (checked by modification time when a connection is
//! made) are used without a restart, and a failed handshake is reported
//! with the backend and the rustls reason.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;

use super::{certificates, private_key, provider, roots, set, CertificateFiles, Reloading};

/// The PEM files the proxy uses towards its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTlsFiles {
    /// CA certificates the backends' (sidecars') certificates must chain to.
    pub ca: PathBuf,
    /// The proxy's client certificate chain and key, for backends that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl BackendTlsFiles {
    /// The files of `[backend_tls]` (`ca_file`, `cert_file`, `key_file`), or
    /// None when TLS to the backends is off (no `ca_file`). A client
    /// certificate needs both of its files (the configuration checks say so).
    pub fn from_paths(ca_file: &str, cert_file: &str, key_file: &str) -> Option<BackendTlsFiles> {
        set(ca_file).map(|ca| BackendTlsFiles {
            ca,
            identity: set(cert_file).zip(set(key_file)),
        })
    }
}

impl CertificateFiles for BackendTlsFiles {
    type Config = ClientConfig;

    fn paths(&self) -> Vec<&PathBuf> {
        let mut paths = vec![&self.ca];
        if let Some((cert, key)) = &self.identity {
            paths.extend([cert, key]);
        }
        paths
    }

    fn build(&self) -> Result<ClientConfig, String> {
        client_config(self)
    }

    fn purpose(&self) -> &'static str {
        "backends"
    }
}

/// The rustls client configuration of `files` (gRPC: ALPN "h2").
pub fn client_config(files: &BackendTlsFiles) -> Result<ClientConfig, String> {
    let roots = roots(&files.ca, "backend CA file")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &files.identity {
        Some((cert, key)) => {
            let chain = certificates(cert, "client certificate file")?;
            let key_der = private_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "client certificate {} and key {} do not make a TLS identity: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The name a backend's certificate is verified against: `server_name`
/// when set, else the host of `addr` ("host:port", "[v6]:port").
pub fn server_name(addr: &str, server_name: &str) -> Result<ServerName<'static>, String> {
    let name = match set(server_name) {
        Some(_) => server_name.trim(),
        None => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
            host.trim_start_matches('[').trim_end_matches(']')
        }
    };
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name:?} is not a DNS name or an IP address: {e}"))
}

/// TLS towards the backends: the configuration (re-read when its files
/// change) and the optional server name that overrides the address's host.
pub struct BackendTls {
    config: Arc<Reloading<BackendTlsFiles>>,
    server_name: String,
}

impl BackendTls {
    /// Reads the files once; an error here stops the start.
    pub fn load(files: BackendTlsFiles, server_name: &str) -> Result<Arc<BackendTls>, String> {
        // Checked here too, so a bad name fails the start rather than each connection.
        if set(server_name).is_some() {
            self::server_name("", server_name)?;
        }
        Ok(Arc::new(BackendTls {
            config: Reloading::load(files)?,
            server_name: server_name.to_string(),
        }))
    }

    /// The connector of the backend at `addr` ("host:port").
    pub fn connector(self: &Arc<Self>, addr: &str) -> Result<Connector, String> {
        Ok(Connector {
            tls: self.clone(),
            addr: addr.to_string(),
            name: server_name(addr, &self.server_name)?,
        })
    }
}

/// Opens TLS connections to one backend, for tonic's
/// `Endpoint::connect_with_connector_lazy` (which bounds it by the
/// endpoint's connect timeout).
#[derive(Clone)]
pub struct Connector {
    tls: Arc<BackendTls>,
    addr: String,
    name: ServerName<'static>,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, io::Error>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Connecting {
        let tls = self.tls.clone();
        let addr = self.addr.clone();
        let name = self.name.clone();
        Box::pin(async move {
            // A few stat calls per new connection: connections are long-lived.
            tls.config.reload_if_changed();
            let connector = TlsConnector::from(tls.config.current());
            let tcp = TcpStream::connect(&addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot connect to backend {addr}: {e}"))
            })?;
            let _ = tcp.set_nodelay(true);
            let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "TLS handshake with backend {addr} (verified as {}) failed: {e}",
                        name.to_str()
                    ),
                )
            })?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_unless_overridden() {
        let name = |addr: &str, over: &str| server_name(addr, over).map(|n| n.to_str().to_string());
        assert_eq!(name("milvus-ro-1:19530", ""), Ok("milvus-ro-1".to_string()));
        assert_eq!(name("10.0.0.2:19530", ""), Ok("10.0.0.2".to_string()));
        assert_eq!(name("[::1]:19530", ""), Ok("::1".to_string()));
        assert_eq!(
            name("10.0.0.2:19530", " milvus.internal "),
            Ok("milvus.internal".to_string())
        );
        assert!(name("10.0.0.2:19530", "not a name").is_err());
    }

    #[test]
    fn off_without_a_ca_and_a_client_certificate_needs_both_files() {
        assert_eq!(BackendTlsFiles::from_paths(" ", "c.pem", "k.pem"), None);
        let files = BackendTlsFiles::from_paths("ca.pem", "c.pem", "").expect("on");
        assert_eq!(files.identity, None);
        let files = BackendTlsFiles::from_paths("ca.pem", "c.pem", "k.pem").expect("on");
        assert_eq!(files.paths().len(), 3);
    }

    #[test]
    fn unreadable_files_name_the_file() {
        let files = BackendTlsFiles::from_paths("/nonexistent/ca.pem", "", "").expect("on");
        let error = client_config(&files).expect_err("no such file");
        assert!(
            error.contains("backend CA file /nonexistent/ca.pem"),
            "{error}"
        );
    }
}
