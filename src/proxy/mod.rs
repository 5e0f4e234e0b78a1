//! The sharding proxy: one Milvus 1.x address in front of a writable node and
//! read-only nodes. `start` wires config -> metadata snapshot -> backend pool
//! -> gRPC service, plus the metrics endpoint and background refreshers.
//!
//! A call passes `rpc_metrics` (per-RPC telemetry, one tower layer), then
//! `raw_insert` (Insert, forwarded as bytes) or `service` (one line per RPC).
//! A search is planned in `route`, then fanned out and merged in `search`;
//! writes, admin calls and reads go through `forward` (with
//! `meta_from_snapshot` when the writer is down); `cmd` answers `Cmd`.
//! `cluster` is the state they share.

pub mod access;
pub mod admission;
mod cluster;
mod cmd;
pub mod deadline;
mod forward;
mod hedge;
pub mod meta_from_snapshot;
pub mod raw_insert;
pub mod route;
pub mod rpc_metrics;
mod search;
pub mod service;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tower::Layer;

use self::access::{Access, AccessPolicy};
use self::admission::SearchAdmission;
use self::deadline::{DeadlineLayer, Deadlines, Defaults};
use self::raw_insert::{InsertPassthrough, RawInsert};
use self::rpc_metrics::{RpcMetrics, RpcMetricsLayer};
use self::service::ProxyService;
use crate::backend::Backends;
use crate::config::Config;
use crate::meta::{MetaStore, MetaUri};
use crate::telemetry::{self, Metrics, Readiness};
use crate::topology::{MetadataStatus, Topology};
use crate::wire::milvus_service_server::MilvusServiceServer;

/// How often every backend is probed with `Cmd("status")`.
const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// A proxy serving in the background.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<anyhow::Result<()>>,
    metrics_server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Stops accepting and waits (up to the grace period) for in-flight calls.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for task in &self.background {
            task.abort();
        }
        let result = match tokio::time::timeout(grace, self.server).await {
            Ok(joined) => joined.context("proxy server task")?,
            Err(_) => {
                tracing::warn!(
                    "in-flight requests did not finish within the shutdown grace period"
                );
                Ok(())
            }
        };
        let _ = self.metrics_server.await;
        result
    }
}

/// Connects to the metadata database, takes a first snapshot, and serves.
pub async fn start(config: Config) -> anyhow::Result<RunningProxy> {
    let errors = config.validate();
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::bail!("invalid configuration:\n  {}", text.join("\n  "));
    }
    let metrics = Metrics::new();
    let uri = MetaUri::parse(&config.meta.uri, None).map_err(anyhow::Error::msg)?;
    let meta = MetaStore::connect_read_only(&uri, config.meta.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot open metadata database {}",
                crate::meta::redacted(&config.meta.uri)
            )
        })?;
    let topology = Arc::new(Topology::with_settings(
        meta,
        metrics.clone(),
        config.topology.settings(),
    ));
    let access = AccessPolicy::from_config(&config.access).map_err(anyhow::Error::msg)?;
    if let Err(e) = topology.refresh().await {
        // Serve anyway: searches report the metadata error until it recovers.
        tracing::warn!(error = %e.reason, "first topology snapshot failed");
    }
    let backends = Arc::new(Backends::new(&config, metrics.clone())?);
    let service = ProxyService::new(
        backends.clone(),
        topology.clone(),
        metrics.clone(),
        config.backends.request_deadline(),
        config.backends.search_deadline(),
        cluster::Protection::from_config(&config, metrics.clone()),
    );

    let listen: SocketAddr = resolve(&config.server.listen).await?;
    let (listener, addr) = crate::grpc::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (shutdown, stop_rx) = watch::channel(false);
    let max = config.server.max_message_size.0 as usize;
    let mut grpc_stop = stop_rx.clone();
    let raw_insert = RawInsert::new(
        backends.writable.clone(),
        config.backends.request_deadline(),
    );
    let limits = RouteLimits::from_config(&config);
    let routes = Access::new(
        grpc_routes(service, raw_insert, metrics.clone(), max, limits),
        access,
        metrics.clone(),
    );
    let stopped = async move {
        let _ = grpc_stop.wait_for(|s| *s).await;
    };
    let mut tls_reloader = None;
    let server = match tls::TlsFiles::from_config(&config.tls) {
        None => tokio::spawn(async move {
            crate::grpc::serve_routes(listener, routes, stopped)
                .await
                .context("proxy gRPC server")
        }),
        Some(files) => {
            let tls = tls::ReloadingConfig::load(files).map_err(anyhow::Error::msg)?;
            tls_reloader = Some(tls.spawn_reloader(config.tls.reload_interval));
            let incoming = tls::incoming(listener, tls);
            tokio::spawn(async move {
                crate::grpc::serve_routes_incoming(incoming, routes, stopped)
                    .await
                    .context("proxy gRPC server (TLS)")
            })
        }
    };

    let metrics_listen: SocketAddr = resolve(&config.metrics.listen).await?;
    let ready_backends = backends.clone();
    let ready_topology = topology.clone();
    let mut metrics_stop = stop_rx;
    let (metrics_addr, metrics_server) = telemetry::serve_metrics_with_readiness(
        metrics_listen,
        metrics.clone(),
        move || {
            let backends_ready = ready_backends.writable.is_healthy()
                && (ready_backends.readonly.is_empty()
                    || ready_backends.readonly.iter().any(|b| b.is_healthy()));
            readiness(backends_ready, &ready_topology.status())
        },
        async move {
            let _ = metrics_stop.wait_for(|s| *s).await;
        },
    )
    .await
    .with_context(|| format!("cannot serve metrics on {metrics_listen}"))?;

    let mut background = vec![
        topology.spawn_refresher(config.topology.refresh_interval),
        backends.spawn_health_checks(HEALTH_CHECK_PERIOD),
    ];
    background.extend(tls_reloader);
    tracing::info!(
        %addr,
        %metrics_addr,
        writable = %config.backends.writable,
        readonly = ?config.backends.readonly,
        "proxy listening on {addr}"
    );
    Ok(RunningProxy {
        addr,
        metrics_addr,
        metrics,
        shutdown,
        server,
        metrics_server,
        background,
    })
}

/// The limits the gRPC stack applies before a handler runs.
#[derive(Clone, Copy, Debug)]
pub struct RouteLimits {
    pub deadlines: Defaults,
    pub max_inflight_searches: usize,
}

impl RouteLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            deadlines: Defaults {
                search: config.deadlines.search,
                other: config.deadlines.other,
            },
            max_inflight_searches: config.admission.max_inflight_searches.max(1) as usize,
        }
    }
}

/// The proxy's routes as `grpc_routes` stacks them.
pub type Routes =
    RpcMetrics<Deadlines<SearchAdmission<InsertPassthrough<MilvusServiceServer<ProxyService>>>>>;

/// The proxy's gRPC stack, outermost first: per-RPC metrics around every
/// call, the request deadline, search admission (in-flight limit), the
/// zero-decode Insert path, the generated server over `service`.
pub fn grpc_routes(
    service: ProxyService,
    raw_insert: RawInsert,
    metrics: Arc<Metrics>,
    max_message_size: usize,
    limits: RouteLimits,
) -> Routes {
    let server = crate::grpc::milvus_server(service, max_message_size);
    let inner = InsertPassthrough::new(server, raw_insert, max_message_size);
    let admitted = SearchAdmission::new(inner, limits.max_inflight_searches, metrics.clone());
    let timed = DeadlineLayer::new(limits.deadlines, metrics.clone()).layer(admitted);
    RpcMetricsLayer::new(metrics).layer(timed)
}

/// The `/readyz` answer: ready (200) when the backends are and a snapshot
/// was loaded. A snapshot that could not be verified lately (database
/// unreachable, or older than `topology.stale_after`) keeps the proxy ready,
/// since searches are still served from it, and the body says "stale".
pub fn readiness(backends_ready: bool, meta: &MetadataStatus) -> Readiness {
    let ready = backends_ready && meta.loaded;
    let mut detail = String::from(if ready { "ready" } else { "not ready" });
    if !backends_ready {
        detail.push_str("; backends not ready");
    }
    if !meta.loaded {
        detail.push_str("; no metadata snapshot loaded yet");
    } else if meta.stale {
        let age = meta.age.map_or("never".to_string(), |a| {
            format!("{:.1}s ago", a.as_secs_f64())
        });
        let db = if meta.up {
            ""
        } else {
            ", metadata database unreachable"
        };
        detail.push_str(&format!("; metadata stale: last verified {age}{db}"));
    }
    Readiness { ready, detail }
}

/// Resolves "host:port" (a name or an IP) to one socket address.
async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}
