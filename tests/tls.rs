//! TLS and mutual TLS with certificates generated here (rcgen). On the
//! proxy's client listener: a TLS client is served, a plain one is not; with
//! a client CA, a client without a certificate is refused and one with a
//! certificate that CA signed is served; replaced certificate files are
//! picked up without a restart. From the proxy to its backends
//! (`[backend_tls]`): TLS-terminating sidecars (as an operator puts in
//! front of Milvus 1.x, which has no TLS) in front of the writer and the
//! read-only nodes; inserts and searches work through them, a wrong CA is
//! a prompt, clear error and a corrected CA file is used without a restart,
//! and a sidecar that requires a client certificate gets the proxy's.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
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

/// A TLS-terminating sidecar in front of a node's plain gRPC port: it
/// accepts TLS with `identity` (and, given a client CA, only clients with a
/// certificate it signed) and forwards the bytes to `target`.
struct TlsSidecar {
    addr: SocketAddr,
    /// Connections whose handshake failed (wrong CA on the proxy's side, no
    /// client certificate).
    refused: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl TlsSidecar {
    async fn start(target: SocketAddr, identity: &Identity, client_ca: Option<&Ca>) -> TlsSidecar {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(
                vec![identity.cert_der.clone()],
                identity.key_der.clone_key(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicU64::new(0));
        let counter = refused.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let refused = counter.clone();
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                    else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let Ok(mut node) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = node.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut node).await;
                });
            }
        });
        TlsSidecar {
            addr,
            refused,
            accept,
        }
    }
}

impl Drop for TlsSidecar {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Sidecars in front of the writer and every read-only node of `cluster`.
async fn sidecars(
    cluster: &Cluster,
    identity: &Identity,
    client_ca: Option<&Ca>,
) -> Vec<TlsSidecar> {
    let mut targets = vec![cluster.writer.as_ref().unwrap().addr];
    targets.extend(cluster.reader_addrs());
    let mut all = Vec::new();
    for target in targets {
        all.push(TlsSidecar::start(target, identity, client_ca).await);
    }
    all
}

/// A proxy over the cluster whose backends are `sidecars` (the writer's first).
async fn proxy_through(
    cluster: &Cluster,
    sidecars: &[TlsSidecar],
    tls: mishards::config::BackendTlsConfig,
) -> proxy::RunningProxy {
    let addrs: Vec<String> = sidecars.iter().map(|s| s.addr.to_string()).collect();
    let mut config = proxy_config(&cluster.meta_uri, &addrs[0], addrs[1..].to_vec());
    config.backends.connect_timeout = Duration::from_secs(2);
    config.topology.refresh_interval = Duration::from_millis(100);
    config.backend_tls = tls;
    // The wrong-CA phase fails calls in a row, and each ejection in a row
    // doubles the time out (5 s, 10 s, 20 s by default): short here, so the
    // nodes' return after the CA fix is bounded by the probe, not by luck.
    config.slow_nodes.eject_backoff = Duration::from_millis(200);
    config.slow_nodes.eject_max_backoff = Duration::from_secs(1);
    proxy::start(config).await.unwrap()
}

/// Search parts each sidecar (read-only node) answered through `proxy`.
fn parts_answered(proxy: &proxy::RunningProxy, sidecars: &[TlsSidecar]) -> Vec<f64> {
    let text = proxy.metrics.encode();
    sidecars[1..]
        .iter()
        .map(|s| {
            let series = format!(
                "mishards_backend_requests_total{{group=\"default\",backend=\"{}\",method=\"SearchInFiles\",outcome=\"ok\"}} ",
                s.addr
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .collect()
}

/// The error of a search through `client` that must fail (gRPC or Milvus status), within 10 s.
async fn failed_search(client: &mut common::Client, param: SearchParam) -> (String, Duration) {
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), client.search(param))
        .await
        .expect("a failing backend connection is answered, not left hanging");
    let took = started.elapsed();
    let text = match reply {
        Ok(r) => {
            let status = r.into_inner().status.unwrap_or_default();
            assert_ne!(status.error_code, 0, "the search succeeded");
            status.reason
        }
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    (text, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_to_the_backends() {
    const DIM: usize = 8;
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(2).start().await;
    let dir = tempfile::tempdir().unwrap();
    let backend_ca = Ca::new("backend sidecars CA");
    // The proxy names each backend by the host of its address: 127.0.0.1.
    let sidecar_id = backend_ca.issue(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let wrong_ca = Ca::new("not the sidecars' CA");
    let ca_file = write(dir.path(), "backends-ca.pem", &wrong_ca.issuer.pem());
    // One file written directly, so the wrong-CA search has parts to send.
    let mut collection = cluster.collection("tls_backends", DIM, L2).await;
    let mut source = VectorSource::new(11);
    let mut rows = collection.add_file(&mut source, 100).await;
    let queries = source.floats(2, DIM);
    let tls_only = sidecars(&cluster, &sidecar_id, None).await;
    let proxy = proxy_through(
        &cluster,
        &tls_only,
        mishards::config::BackendTlsConfig {
            ca_file: ca_file.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut client = client_of(proxy.addr);

    // A CA that did not sign the sidecars' certificates: a prompt error naming the cause.
    let (wrong_ca_error, wrong_ca_took) = failed_search(
        &mut client,
        search_param("tls_backends", &[], &queries, 5, "{}"),
    )
    .await;
    assert!(
        wrong_ca_error.contains("TLS handshake with backend")
            && wrong_ca_error.contains("UnknownIssuer"),
        "{wrong_ca_error}"
    );
    // Once the health probe (every 2 s) has taken both read-only nodes down,
    // the search is refused without a call: the error still names the cause.
    let probed = Instant::now();
    let down_error = loop {
        let (error, _) = failed_search(
            &mut client,
            search_param("tls_backends", &[], &queries, 5, "{}"),
        )
        .await;
        if error.contains("no healthy read-only node") {
            break error;
        }
        assert!(
            probed.elapsed() < Duration::from_secs(10),
            "the probe never took the nodes down: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for sidecar in &tls_only[1..] {
        assert!(
            down_error.contains(&format!("{}: TLS handshake with backend", sidecar.addr))
                && down_error.contains("UnknownIssuer"),
            "{down_error}"
        );
    }

    // The right CA written to the same file: used at the next connection, no restart.
    let fixed = Instant::now();
    write(dir.path(), "backends-ca.pem", &backend_ca.issuer.pem());
    loop {
        let answer = client
            .search(search_param("tls_backends", &[], &queries, 5, "{}"))
            .await;
        if matches!(&answer, Ok(r) if code_of(&r.get_ref().status) == 0) {
            break;
        }
        assert!(
            fixed.elapsed() < Duration::from_secs(15),
            "the corrected CA file was not used: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca_reload_took = fixed.elapsed();
    // Inserts through TLS to the writer; more files so both read-only nodes get some.
    let mut collection = collection.through(client.clone());
    // 10 files: all on one node of two is a 1-in-512 chance.
    rows.extend(collection.fill(&mut source, 10, 100).await);
    // Searches through TLS to the read-only nodes; the health probe may
    // still have one down after the wrong-CA phase: bounded wait.
    let searching = Instant::now();
    loop {
        collection
            .expect_search("through TLS sidecars", &rows, &queries, 10)
            .await;
        if parts_answered(&proxy, &tls_only).iter().all(|n| *n > 0.0) {
            break;
        }
        assert!(
            searching.elapsed() < Duration::from_secs(15),
            "a read-only node answered no part: {:?}; backend state:\n{}",
            parts_answered(&proxy, &tls_only),
            proxy
                .metrics
                .encode()
                .lines()
                .filter(|l| l.starts_with("mishards_backend_up")
                    || l.starts_with("mishards_backend_ejected")
                    || l.starts_with("mishards_topology_files"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tls_parts = parts_answered(&proxy, &tls_only);
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    drop(tls_only);

    // mTLS: sidecars that require a client certificate signed by the client CA.
    let client_ca = Ca::new("proxy client CA");
    let proxy_id = client_ca.issue(&["mishards-proxy"], ExtendedKeyUsagePurpose::ClientAuth);
    let mutual = sidecars(&cluster, &sidecar_id, Some(&client_ca)).await;
    let without_cert = proxy_through(
        &cluster,
        &mutual,
        mishards::config::BackendTlsConfig {
            ca_file: ca_file.clone(),
            ..Default::default()
        },
    )
    .await;
    let (no_cert_error, no_cert_took) = failed_search(
        &mut client_of(without_cert.addr),
        search_param("tls_backends", &[], &queries, 5, "{}"),
    )
    .await;
    without_cert.stop(Duration::from_secs(2)).await.unwrap();
    let refused_without_cert: u64 = mutual
        .iter()
        .map(|s| s.refused.load(Ordering::Relaxed))
        .sum();
    assert!(
        refused_without_cert > 0,
        "no sidecar refused a proxy without a certificate"
    );

    let with_cert = proxy_through(
        &cluster,
        &mutual,
        mishards::config::BackendTlsConfig {
            ca_file,
            cert_file: write(dir.path(), "proxy.pem", &proxy_id.cert_pem),
            key_file: write(dir.path(), "proxy.key", &proxy_id.key_pem),
            server_name: String::new(),
        },
    )
    .await;
    let mut collection = collection.through(client_of(with_cert.addr));
    rows.extend(collection.add_file(&mut source, 100).await);
    let searching = Instant::now();
    loop {
        collection
            .expect_search("through mTLS sidecars", &rows, &queries, 10)
            .await;
        if parts_answered(&with_cert, &mutual).iter().all(|n| *n > 0.0) {
            break;
        }
        assert!(
            searching.elapsed() < Duration::from_secs(15),
            "a read-only node answered no part over mTLS: {:?}",
            parts_answered(&with_cert, &mutual)
        );
    }
    eprintln!(
        "FIGURES backend TLS: wrong CA answered in {wrong_ca_took:?}: {wrong_ca_error}; corrected \
         CA file used after {ca_reload_took:?}; parts answered per read-only sidecar over TLS \
         {tls_parts:?}; mTLS without a client certificate answered in {no_cert_took:?}: \
         {no_cert_error}; with one: parts {:?}",
        parts_answered(&with_cert, &mutual)
    );
    with_cert.stop(Duration::from_secs(2)).await.unwrap();
    drop(mutual);
    cluster.stop().await;
}
