//! TLS and mutual TLS on the proxy's client listener, with certificates
//! generated here (rcgen): a TLS client is served, a plain one is not; with
//! a client CA, a client without a certificate is refused and one with a
//! certificate that CA signed is served; replaced certificate files are
//! picked up without a restart.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mishards::proxy;
use mishards::wire::milvus_service_client::MilvusServiceClient;
use mishards::wire::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM and DER.
struct Identity {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Identity {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// A gRPC client over TLS to `addr` trusting `ca`, with a client certificate or not.
async fn tls_client(
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    identity: Option<&Identity>,
) -> Result<MilvusServiceClient<Channel>, tonic::transport::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert_der.clone()], id.key_der.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(MilvusServiceClient::new(channel))
}

/// HasCollection through `client`: Ok(answer) or the gRPC error.
async fn has(
    client: Result<MilvusServiceClient<Channel>, tonic::transport::Error>,
) -> Result<bool, String> {
    let mut client = client.map_err(|e| format!("connect: {e}"))?;
    client
        .has_collection(CollectionName {
            collection_name: "tls".to_string(),
        })
        .await
        .map(|r| r.into_inner().bool_reply)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(1).start().await;
    cluster.collection("tls", 8, L2).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mishards test CA");
    let server = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client_ca = Ca::new("mishards client CA");
    let client = client_ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = Ca::new("someone else").issue(&["x"], ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = write(dir.path(), "server.pem", &server.cert_pem);
    let key_file = write(dir.path(), "server.key", &server.key_pem);
    let client_ca_file = write(dir.path(), "clients.pem", &client_ca.issuer.pem());

    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let readers = cluster
        .reader_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut config = proxy_config(&cluster.meta_uri, &writer, readers);
    config.tls.cert_file = cert_file.clone();
    config.tls.key_file = key_file.clone();
    config.tls.reload_interval = Duration::from_millis(200);

    // TLS: a TLS client is served; a plain-text client is not.
    let tls_proxy = proxy::start(config.clone()).await.unwrap();
    assert_eq!(
        has(tls_client(tls_proxy.addr, ca.der(), None).await).await,
        Ok(true)
    );
    let plain = client_of(tls_proxy.addr)
        .has_collection(CollectionName {
            collection_name: "tls".to_string(),
        })
        .await;
    assert!(plain.is_err(), "plain text on a TLS port must fail");

    // Replaced files are picked up without a restart (bounded wait).
    let ca2 = Ca::new("second CA");
    let server2 = ca2.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    write(dir.path(), "server.pem", &server2.cert_pem);
    write(dir.path(), "server.key", &server2.key_pem);
    let replaced = Instant::now();
    let reload_took = loop {
        if has(tls_client(tls_proxy.addr, ca2.der(), None).await).await == Ok(true) {
            break replaced.elapsed();
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(10),
            "new certificate not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        has(tls_client(tls_proxy.addr, ca.der(), None).await)
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    eprintln!(
        "replaced certificate served after {} ms",
        reload_took.as_millis()
    );
    tls_proxy.stop(Duration::from_secs(2)).await.unwrap();

    // mTLS: no certificate and a stranger's certificate are refused.
    config.tls.client_ca_file = client_ca_file;
    let mtls_proxy = proxy::start(config).await.unwrap();
    let addr = mtls_proxy.addr;
    let without = has(tls_client(addr, ca2.der(), None).await).await;
    assert!(
        without.is_err(),
        "a client without a certificate: {without:?}"
    );
    let wrong = has(tls_client(addr, ca2.der(), Some(&stranger)).await).await;
    assert!(wrong.is_err(), "a certificate of another CA: {wrong:?}");
    assert_eq!(
        has(tls_client(addr, ca2.der(), Some(&client)).await).await,
        Ok(true)
    );
    eprintln!("mTLS: no certificate -> {without:?}; wrong CA -> {wrong:?}");
    mtls_proxy.stop(Duration::from_secs(2)).await.unwrap();
    cluster.stop().await;
}
