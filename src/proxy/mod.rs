//! The sharding proxy: one Milvus 1.x address in front of a writable node and
//! read-only nodes. `start` wires config -> metadata snapshot -> backend pool
//! -> gRPC service, plus the metrics endpoint and background refreshers.
//!
//! A call passes `rpc_metrics` (per-RPC telemetry, one tower layer), then
//! `raw_insert` (Insert, forwarded as bytes) or `service` (one line per RPC).
//! A search is planned in `route`, then fanned out and merged in `search`;
//! writes, admin calls and reads go through `forward` (with
//! `meta_from_snapshot` when the writer is down); `cmd` answers `Cmd`.
//! `cluster` is the state they share. `health` says what can be served
//! (gRPC health, `/readyz`), `reload` applies configuration changes live,
//! `admin` answers `conn_stats` and the `/admin/...` endpoints.

pub mod admin;
pub mod admission;
mod cluster;
mod cmd;
mod coalesce;
mod forward;
pub mod groups;
pub mod health;
mod hedge;
mod hedge_policy;
pub mod meta_from_snapshot;
mod methods;
mod placements;
pub mod raw_insert;
mod raw_search;
pub mod reload;
pub mod route;
pub mod rpc_metrics;
mod search;
pub mod service;
pub mod warmup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tower::Layer;

use self::admission::SearchAdmission;
use self::health::Health;
use self::raw_insert::{InsertPassthrough, RawInsert};
use self::raw_search::RawSearch;
use self::reload::{LogLevelSetter, Reconfigurer};
use self::rpc_metrics::{RpcMetrics, RpcMetricsLayer};
use self::service::ProxyService;
use self::warmup::Warmup;
use crate::access::{Access, AccessPolicy};
use crate::backend::live::LiveBackends;
use crate::backend::Backends;
use crate::config::Config;
use crate::deadline::{DeadlineLayer, Deadlines, Defaults};
use crate::meta::{MetaStore, MetaUri};
use crate::telemetry::{self, Metrics};
use crate::tls;
use crate::topology::Topology;
use crate::wire::milvus_service_server::MilvusServiceServer;

/// How often every backend is probed with `Cmd("status")`.
const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// How often the availability is published to the gRPC health service and gauges.
const HEALTH_PUBLISH_PERIOD: Duration = Duration::from_millis(500);

/// What `start_with` needs beyond the configuration, for live reconfiguration.
#[derive(Default)]
pub struct StartOptions {
    /// The file to re-read on SIGHUP and when it changes.
    pub config_path: Option<PathBuf>,
    /// Changes the log filter when `log.level` is reloaded.
    pub log_level: Option<LogLevelSetter>,
}

/// A proxy serving in the background.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Where Milvus' HTTP API is served (`[http_api]`), unless disabled.
    pub http_api_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub reconfigurer: Arc<Reconfigurer>,
    drain_delay: Duration,
    shutdown: watch::Sender<bool>,
    server: ServerTask,
    metrics_server: JoinHandle<()>,
    http_api_server: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Drains: health NOT_SERVING at once, calls still accepted for
    /// `server.drain_delay`; then stops accepting and waits (up to the grace
    /// period) for in-flight calls.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        self.health.start_drain().await;
        if !self.drain_delay.is_zero() {
            tracing::info!(delay = ?self.drain_delay, "health NOT_SERVING; draining before the listener closes");
            tokio::time::sleep(self.drain_delay).await;
        }
        for task in &self.background {
            task.abort();
        }
        self.health.end_watches().await;
        let _ = self.shutdown.send(true);
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
        if let Some(http) = self.http_api_server {
            // Idle keep-alive connections close at once; a slow request
            // gets the grace period, as gRPC calls do.
            let _ = tokio::time::timeout(grace, http).await;
        }
        result
    }
}

/// Connects to the metadata database, takes a first snapshot, and serves.
pub async fn start(config: Config) -> anyhow::Result<RunningProxy> {
    start_with(config, StartOptions::default()).await
}

/// [`start`], with the file to reload and the log filter handle.
pub async fn start_with(config: Config, options: StartOptions) -> anyhow::Result<RunningProxy> {
    let errors = config.validate();
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::bail!("invalid configuration:\n  {}", text.join("\n  "));
    }
    if !config.groups.is_empty() {
        return start_grouped(config, options).await;
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
        (&config.topology).into(),
    ));
    let access = AccessPolicy::new(
        config.access.read_only,
        &config.access.deny,
        &config.access.allow_networks,
    )
    .map_err(anyhow::Error::msg)?;
    if let Err(e) = topology.refresh().await {
        // Serve anyway: searches report the metadata error until it recovers.
        tracing::warn!(error = %e.reason, "first topology snapshot failed");
    }
    let live = LiveBackends::new(Backends::new(&config, metrics.clone())?, metrics.clone());
    let reconfigurer = Reconfigurer::new(
        options.config_path,
        config.clone(),
        live.clone(),
        metrics.clone(),
        options.log_level,
    );
    let protection = cluster::Protection::from_config(&config, metrics.clone());
    let (warmup, warmup_task) = Warmup::spawn(
        topology.clone(),
        live.clone(),
        metrics.clone(),
        config.topology.warm_new_files,
        config.topology.warm_wait,
    );
    let new_service = || {
        ProxyService::with_live(
            live.clone(),
            topology.clone(),
            metrics.clone(),
            config.backends.request_deadline(),
            config.backends.search_deadline(),
            protection.clone(),
        )
        .with_warmup(warmup.clone())
    };
    let service = new_service();
    let (reporter, health_server) = tonic_health::server::health_reporter();
    let health = Health::new(live.clone(), topology.clone(), metrics.clone(), reporter);
    health.publish().await;

    let admin = admin::router(Arc::new(admin::AdminState {
        service: Arc::new(new_service()),
        reconfigurer: reconfigurer.clone(),
    }));
    let mut background = vec![
        spawn_refresher(
            topology.clone(),
            metrics.clone(),
            reconfigurer.refresh_interval(),
        ),
        live.spawn_health_checks(HEALTH_CHECK_PERIOD),
        health.spawn_publisher(HEALTH_PUBLISH_PERIOD),
        warmup_task,
    ];
    background.extend(reconfigurer.spawn_watch(config.reload.watch_interval));
    background.extend(crate::discovery::spawn(
        &config.discovery,
        reconfigurer.clone(),
    )?);
    let front = Front {
        raw_insert: RawInsert::live(live.clone(), config.backends.request_deadline())
            .with_search(RawSearch::new(new_service())),
        service,
        access,
        health,
        health_server,
        admin,
        reconfigurer,
        background,
    };
    let running = serve_front(&config, metrics, front).await?;
    tracing::info!(
        addr = %running.addr,
        metrics_addr = %running.metrics_addr,
        writable = %config.backends.writable,
        readonly = ?config.backends.readonly,
        "proxy listening on {}",
        running.addr
    );
    Ok(running)
}

/// What a proxy over `[[groups]]` serves with (see `groups`): one
/// single-cluster service per group, each with its own metadata snapshot,
/// nodes, health checks and warm-up; one health, one reconfigurer and one
/// `/admin` over them all.
async fn start_grouped(config: Config, options: StartOptions) -> anyhow::Result<RunningProxy> {
    use self::reload::{LiveGroup, LivePlacement};
    let metrics = Metrics::new();
    let mut groups = Vec::new();
    let mut healths = Vec::new();
    let mut background = Vec::new();
    let mut live_groups = Vec::new();
    let mut topologies = Vec::new();
    let (reporter, health_server) = tonic_health::server::health_reporter();
    for group in &config.groups {
        let narrowed = config.for_group(group);
        let uri = MetaUri::parse(&narrowed.meta.uri, None).map_err(anyhow::Error::msg)?;
        let meta = MetaStore::connect_read_only(&uri, narrowed.meta.max_connections)
            .await
            .with_context(|| {
                format!(
                    "shard group {}: cannot open metadata database {}",
                    group.name,
                    crate::meta::redacted(&narrowed.meta.uri)
                )
            })?;
        let topology = Arc::new(Topology::with_settings(
            meta.clone(),
            metrics.clone(),
            (&narrowed.topology).into(),
        ));
        if let Err(e) = topology.refresh().await {
            tracing::warn!(group = %group.name, error = %e.reason, "first topology snapshot failed");
        }
        for node in std::iter::once(&group.writable).chain(&group.readonly) {
            metrics.backend_groups.assign(node, &group.name);
        }
        let live = LiveBackends::new(Backends::new(&narrowed, metrics.clone())?, metrics.clone());
        let protection = cluster::Protection::from_config(&narrowed, metrics.clone());
        let (warmup, warmup_task) = Warmup::spawn(
            topology.clone(),
            live.clone(),
            metrics.clone(),
            narrowed.topology.warm_new_files,
            narrowed.topology.warm_wait,
        );
        let service = ProxyService::with_live(
            live.clone(),
            topology.clone(),
            metrics.clone(),
            narrowed.backends.request_deadline(),
            narrowed.backends.search_deadline(),
            protection,
        )
        .with_warmup(warmup);
        background.extend([live.spawn_health_checks(HEALTH_CHECK_PERIOD), warmup_task]);
        healths.push((group.name.clone(), live.clone(), topology.clone()));
        live_groups.push(LiveGroup {
            name: group.name.clone(),
            live: live.clone(),
        });
        topologies.push((group.name.clone(), topology.clone()));
        groups.push(groups::Group {
            name: group.name.clone(),
            service,
            live: live.clone(),
            meta,
        });
    }
    let names = config.groups.iter().map(|g| g.name.clone()).collect();
    let placement = Arc::new(arc_swap::ArcSwap::from_pointee(groups::placement_of(
        &config.placement,
        names,
    )));
    let known = topologies.clone();
    let existing = Box::new(move || {
        let mut names = Vec::new();
        for (group, topology) in &known {
            let snapshot = topology.current();
            if !snapshot.is_loaded() {
                return Err(format!("shard group {group} has no metadata snapshot yet"));
            }
            names.extend(snapshot.collection_names().map(str::to_string));
        }
        names.sort();
        names.dedup();
        Ok(names)
    });
    let reconfigurer = Reconfigurer::over_groups(
        options.config_path,
        config.clone(),
        live_groups,
        LivePlacement {
            current: placement.clone(),
            existing,
        },
        metrics.clone(),
        options.log_level,
    )?;
    for (_, topology) in &topologies {
        background.push(spawn_refresher(
            topology.clone(),
            metrics.clone(),
            reconfigurer.refresh_interval(),
        ));
    }
    background.extend(reconfigurer.spawn_watch(config.reload.watch_interval));
    let grouped = groups::GroupedService::new(groups, placement)
        .with_request_timeout(config.backends.request_deadline());
    let admin = admin::router(Arc::new(admin::AdminState {
        service: Arc::new(grouped.clone()),
        reconfigurer: reconfigurer.clone(),
    }));
    let health = Health::over_groups(healths, metrics.clone(), reporter);
    health.publish().await;
    background.push(health.spawn_publisher(HEALTH_PUBLISH_PERIOD));
    let access = AccessPolicy::new(
        config.access.read_only,
        &config.access.deny,
        &config.access.allow_networks,
    )
    .map_err(anyhow::Error::msg)?;
    let front = Front {
        raw_insert: RawInsert::grouped(grouped.clone(), config.backends.request_deadline()),
        service: grouped,
        access,
        health,
        health_server,
        admin,
        reconfigurer,
        background,
    };
    let running = serve_front(&config, metrics, front).await?;
    tracing::info!(
        addr = %running.addr,
        metrics_addr = %running.metrics_addr,
        groups = config.groups.len(),
        "proxy listening on {} over shard groups",
        running.addr
    );
    Ok(running)
}

/// What a start hands to [`serve_front`]: the service over one cluster or
/// over shard groups, and what serves beside it.
struct Front<S, H> {
    service: S,
    raw_insert: RawInsert,
    access: AccessPolicy,
    health: Arc<Health>,
    health_server: tonic_health::pb::health_server::HealthServer<H>,
    admin: axum::Router,
    reconfigurer: Arc<Reconfigurer>,
    background: Vec<JoinHandle<()>>,
}

/// Serves `front.service` to clients, whichever start made it: the gRPC
/// stack (`grpc_routes` behind access control, plain or TLS) with the
/// health service, the HTTP API over the same stack, and the metrics
/// endpoint with `/readyz` and `/admin`.
async fn serve_front<S, H>(
    config: &Config,
    metrics: Arc<Metrics>,
    front: Front<S, H>,
) -> anyhow::Result<RunningProxy>
where
    S: crate::wire::milvus_service_server::MilvusService,
    H: tonic_health::pb::health_server::Health,
{
    let tasks: Vec<_> = front
        .background
        .iter()
        .map(JoinHandle::abort_handle)
        .collect();
    let served = serve_front_inner(config, metrics, front).await;
    if served.is_err() {
        // A start that fails leaves nothing running behind it.
        tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
    served
}

async fn serve_front_inner<S, H>(
    config: &Config,
    metrics: Arc<Metrics>,
    front: Front<S, H>,
) -> anyhow::Result<RunningProxy>
where
    S: crate::wire::milvus_service_server::MilvusService,
    H: tonic_health::pb::health_server::Health,
{
    let Front {
        service,
        raw_insert,
        access,
        health,
        health_server,
        admin,
        reconfigurer,
        mut background,
    } = front;
    let listen: SocketAddr = resolve(&config.server.listen).await?;
    let (listener, addr) = crate::grpc::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (shutdown, stop_rx) = watch::channel(false);
    let max = config.server.max_message_size.0 as usize;
    let limits = RouteLimits::from_config(config);
    let routes = Access::new(
        grpc_routes(service, raw_insert, metrics.clone(), max, limits),
        access,
        metrics.clone(),
    );
    let http_api = start_http_api(config, routes.clone(), stop_rx.clone()).await?;
    let (server, tls_reloader) =
        spawn_grpc(config, listener, routes, health_server, stop_rx.clone())?;
    background.extend(tls_reloader);
    let metrics_listen: SocketAddr = resolve(&config.metrics.listen).await?;
    let ready_health = health.clone();
    let mut metrics_stop = stop_rx;
    let (metrics_addr, metrics_server) = telemetry::serve_http(
        metrics_listen,
        metrics.clone(),
        move || ready_health.readiness(),
        admin,
        async move {
            let _ = metrics_stop.wait_for(|s| *s).await;
        },
    )
    .await
    .with_context(|| format!("cannot serve metrics on {metrics_listen}"))?;
    Ok(RunningProxy {
        addr,
        metrics_addr,
        http_api_addr: http_api.as_ref().map(|(addr, _)| *addr),
        metrics,
        health,
        reconfigurer,
        drain_delay: config.server.drain_delay,
        shutdown,
        server,
        metrics_server,
        http_api_server: http_api.map(|(_, task)| task),
        background,
    })
}

/// Serves Milvus' HTTP API (`[http_api]`, unless disabled) over `routes`,
/// the stack the gRPC listener serves, until `stop` turns true.
async fn start_http_api(
    config: &Config,
    routes: impl crate::grpc::Routes,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let Some(listen) = config.http_api.effective_listen(&config.server.listen) else {
        return Ok(None);
    };
    let listen = resolve(&listen).await?;
    let max = config.server.max_message_size.0 as usize;
    let state = Arc::new(crate::http_api::ApiState::new(
        crate::http_api::InProcess::new(routes, None),
        max,
    ));
    let (addr, task) = crate::http_api::serve(listen, state, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
    .with_context(|| format!("cannot serve the HTTP API on {listen} (http_api.listen)"))?;
    tracing::info!(%addr, "Milvus HTTP API on {addr}");
    Ok(Some((addr, task)))
}

/// The task serving gRPC; it ends with the server's outcome.
type ServerTask = JoinHandle<anyhow::Result<()>>;

/// Serves `routes` (and the gRPC health service) on `listener` until
/// `stop` turns true, over TLS when `[tls]` names a certificate; also
/// returns the task that re-reads the certificate files.
fn spawn_grpc(
    config: &Config,
    listener: tokio::net::TcpListener,
    routes: impl crate::grpc::Routes,
    health_server: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(ServerTask, Option<JoinHandle<()>>)> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let files = tls::TlsFiles::from_paths(
        &config.tls.cert_file,
        &config.tls.key_file,
        &config.tls.client_ca_file,
    );
    let Some(files) = files else {
        let server = tokio::spawn(async move {
            crate::grpc::serve_routes_with_health(listener, routes, health_server, stopped)
                .await
                .context("proxy gRPC server")
        });
        return Ok((server, None));
    };
    let tls = tls::ReloadingConfig::load(files).map_err(anyhow::Error::msg)?;
    let reloader = tls.spawn_reloader(config.tls.reload_interval);
    let incoming = tls::incoming(listener, tls);
    let server = tokio::spawn(async move {
        crate::grpc::serve_incoming(incoming, routes, Some(health_server), stopped)
            .await
            .context("proxy gRPC server (TLS)")
    });
    Ok((server, Some(reloader)))
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

/// The proxy's routes as `grpc_routes` stacks them, over one cluster's
/// service or the one over shard groups.
pub type Routes<S = ProxyService> =
    RpcMetrics<Deadlines<SearchAdmission<InsertPassthrough<MilvusServiceServer<S>>>>>;

/// The proxy's gRPC stack, outermost first: per-RPC metrics around every
/// call, the request deadline, search admission (in-flight limit), the
/// zero-decode Insert path, the generated server over `service`.
pub fn grpc_routes<S: crate::wire::milvus_service_server::MilvusService>(
    service: S,
    raw_insert: RawInsert,
    metrics: Arc<Metrics>,
    max_message_size: usize,
    limits: RouteLimits,
) -> Routes<S> {
    let server = crate::grpc::milvus_server(service, max_message_size);
    let inner = InsertPassthrough::new(server, raw_insert, max_message_size);
    let admitted = SearchAdmission::new(inner, limits.max_inflight_searches, metrics.clone());
    let timed = DeadlineLayer::new(limits.deadlines, metrics.clone()).layer(admitted);
    RpcMetricsLayer::new(metrics).layer(timed)
}

/// Refreshes the topology snapshot every `period`, following reloads of
/// `topology.refresh_interval`.
fn spawn_refresher(
    topology: Arc<Topology>,
    metrics: Arc<Metrics>,
    mut period: watch::Receiver<Duration>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Consecutive failed refreshes: the wait doubles with each (metadata outage back-off).
        let mut failures = 0u32;
        loop {
            let every = (*period.borrow_and_update()).max(Duration::from_millis(10));
            let wait = crate::topology::retry_delay(every, topology.max_retry_interval(), failures);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = period.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
            match topology.refresh().await {
                Ok(_) => failures = 0,
                Err(_) => failures = failures.saturating_add(1),
            }
            if let Some(age) = topology.age() {
                metrics.set_topology_age(age.as_secs_f64());
            }
        }
    })
}

/// Resolves "host:port" (a name or an IP) to one socket address.
async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A reloaded `topology.refresh_interval` takes effect without a restart.
    #[tokio::test]
    async fn the_refresher_follows_a_new_interval() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite://{}/m.sqlite", dir.path().display());
        let meta = MetaStore::connect(&MetaUri::parse(&uri, None).unwrap(), 2)
            .await
            .unwrap();
        let metrics = Metrics::new();
        let topology = Arc::new(Topology::new(meta, metrics.clone()));
        topology.refresh().await.unwrap();
        let (period, rx) = watch::channel(Duration::from_secs(3600));
        let task = spawn_refresher(topology.clone(), metrics, rx);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(topology.age().unwrap() >= Duration::from_millis(300));

        period.send_replace(Duration::from_millis(20));
        let started = std::time::Instant::now();
        while topology.age().unwrap() >= Duration::from_millis(200) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no refresh after the interval changed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }
}
