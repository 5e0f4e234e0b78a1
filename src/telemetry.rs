//! Prometheus metrics and the /metrics HTTP endpoint.
//!
//! [`Metrics`] owns one `prometheus-client` registry with every series the
//! proxy exports; [`serve_metrics`] exposes it (plus `/livez` and `/readyz`)
//! over a tiny axum HTTP/1 server. All durations are in seconds.
//!
//! The exposition is OpenMetrics text (what `prometheus-client` encodes,
//! ending in `# EOF`), served with the OpenMetrics content type, which
//! Prometheus scrapes natively.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels<const N: usize> = [(&'static str, String); N];
type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Request latencies: 0.5ms to ~33s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Which shard group each backend node belongs to: the `group` label every
/// backend series carries. A node is in one group (`check-config` refuses a
/// node in two); a single-cluster proxy's nodes, and nodes never assigned,
/// are in the implicit group "default".
#[derive(Clone, Default)]
pub struct BackendGroups(Arc<RwLock<HashMap<String, String>>>);

impl BackendGroups {
    /// Files `backend` under `group` (a reload may add nodes to a group).
    pub fn assign(&self, backend: &str, group: &str) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(backend.to_string(), group.to_string());
    }

    /// The group of `backend`.
    pub fn of(&self, backend: &str) -> String {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(backend)
            .cloned()
            .unwrap_or_else(|| crate::config::IMPLICIT_GROUP.to_string())
    }

    /// The `group` and `backend` labels of `backend`'s series.
    fn labels(&self, backend: &str) -> Labels<2> {
        [
            ("group", self.of(backend)),
            ("backend", backend.to_string()),
        ]
    }
}

/// Every series the proxy exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// The `group` label of the backend series.
    pub backend_groups: BackendGroups,
    requests: Family<Labels<2>, Counter>,
    request_duration: HistogramFamily<1>,
    backend_requests: Family<Labels<4>, Counter>,
    backend_request_duration: HistogramFamily<3>,
    search_fanout_nodes: Histogram,
    search_files: Histogram,
    coalesced_call_searches: Histogram,
    merge_duration: Histogram,
    topology_refresh_duration: Histogram,
    topology_refresh_failures: Counter,
    topology_age: Gauge<f64, AtomicU64>,
    backend_up: Family<Labels<2>, Gauge>,
    inflight_requests: Gauge,
    warmup_searches: Family<Labels<1>, Counter>,
    guard: GuardMetrics,
    /// Deadlines, hedging, ejection and admission control.
    pub resilience: ResilienceMetrics,
    /// Availability and reload series (health, live reconfiguration).
    pub ops: OpsMetrics,
}

/// The metadata-outage and access-control series (issue 7), registered
/// together so they stay one block.
struct GuardMetrics {
    metadata_up: Gauge,
    metadata_reads: Family<Labels<2>, Counter>,
    access_denied: Family<Labels<1>, Counter>,
}

impl GuardMetrics {
    fn register(registry: &mut Registry) -> GuardMetrics {
        let metrics = GuardMetrics {
            metadata_up: Gauge::default(),
            metadata_reads: Family::default(),
            access_denied: Family::default(),
        };
        registry.register(
            "mishards_metadata_up",
            "1 if the last read of the metadata database succeeded, else 0",
            metrics.metadata_up.clone(),
        );
        registry.register(
            "mishards_metadata_reads",
            "Reads of the metadata database by the topology, by cause (refresh, miss, invalidation) and kind (fingerprint, snapshot)",
            metrics.metadata_reads.clone(),
        );
        registry.register(
            "mishards_access_denied",
            "Requests refused by access control, by reason (read_only, denied_rpc, network)",
            metrics.access_denied.clone(),
        );
        metrics
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<Labels<2>, Counter>::default();
        let request_duration: HistogramFamily<1> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let backend_requests = Family::<Labels<4>, Counter>::default();
        let backend_request_duration: HistogramFamily<3> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        // 1 to 256 nodes, and 1 to 32768 segment files per search.
        let search_fanout_nodes = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        let search_files = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        // 1 to 4096 searches in one stacked call.
        let coalesced_call_searches = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        // 10us to ~1.3s.
        let merge_duration = Histogram::new(exponential_buckets(0.00001, 2.0, 18));
        let topology_refresh_duration = latency_histogram();
        let topology_refresh_failures = Counter::default();
        let topology_age = Gauge::<f64, AtomicU64>::default();
        let backend_up = Family::<Labels<2>, Gauge>::default();
        let inflight_requests = Gauge::default();
        let warmup_searches = Family::<Labels<1>, Counter>::default();
        let guard = GuardMetrics::register(&mut registry);

        registry.register(
            "mishards_requests",
            "RPCs handled by the proxy, by method and Milvus status code or gRPC code",
            requests.clone(),
        );
        registry.register(
            "mishards_request_duration_seconds",
            "Time to handle one RPC at the proxy",
            request_duration.clone(),
        );
        registry.register(
            "mishards_backend_requests",
            "Calls from the proxy to a backend node, by outcome",
            backend_requests.clone(),
        );
        registry.register(
            "mishards_backend_request_duration_seconds",
            "Time of one call from the proxy to a backend node",
            backend_request_duration.clone(),
        );
        registry.register(
            "mishards_search_fanout_nodes",
            "Backend nodes one search was sent to",
            search_fanout_nodes.clone(),
        );
        registry.register(
            "mishards_search_files",
            "Segment files one search covered",
            search_files.clone(),
        );
        registry.register(
            "mishards_coalesced_call_searches",
            "Searches one stacked SearchInFiles carried to a node ([coalesce]); a search that went in its own call is not counted",
            coalesced_call_searches.clone(),
        );
        registry.register(
            "mishards_merge_duration_seconds",
            "Time to merge the partial top-k results of one search",
            merge_duration.clone(),
        );
        registry.register(
            "mishards_topology_refresh_duration_seconds",
            "Time of one refresh of the backend topology",
            topology_refresh_duration.clone(),
        );
        registry.register(
            "mishards_topology_refresh_failures",
            "Topology refreshes that failed",
            topology_refresh_failures.clone(),
        );
        registry.register(
            "mishards_topology_age_seconds",
            "Seconds since the topology in use was last refreshed successfully",
            topology_age.clone(),
        );
        registry.register(
            "mishards_backend_up",
            "1 if the backend node answered its last health check, else 0",
            backend_up.clone(),
        );
        registry.register(
            "mishards_inflight_requests",
            "RPCs being handled by the proxy right now",
            inflight_requests.clone(),
        );
        registry.register(
            "mishards_warmup_searches",
            "Warm-up searches of new segment files sent to their read-only node, by outcome (ok, refused, failed, no_node)",
            warmup_searches.clone(),
        );
        registry.register(
            "mishards_build",
            "Version of this mishards binary",
            Info::new([("version", env!("CARGO_PKG_VERSION").to_string())]),
        );

        let backend_groups = BackendGroups::default();
        let resilience = ResilienceMetrics::register(&mut registry, backend_groups.clone());
        let ops = OpsMetrics::register(&mut registry);
        Arc::new(Metrics {
            resilience,
            ops,
            registry,
            backend_groups,
            requests,
            request_duration,
            backend_requests,
            backend_request_duration,
            search_fanout_nodes,
            search_files,
            coalesced_call_searches,
            merge_duration,
            topology_refresh_duration,
            topology_refresh_failures,
            topology_age,
            backend_up,
            inflight_requests,
            warmup_searches,
            guard,
        })
    }

    /// One warm-up search of a new file, by outcome.
    pub fn warmup(&self, outcome: &str) {
        self.warmup_searches
            .get_or_create(&[("outcome", outcome.to_string())])
            .inc();
    }

    /// Whether the last metadata read succeeded.
    pub fn set_metadata_up(&self, up: bool) {
        self.guard.metadata_up.set(i64::from(up));
    }

    /// One metadata read by the topology: why, and which kind.
    pub fn count_metadata_read(&self, cause: &str, kind: &str) {
        self.guard
            .metadata_reads
            .get_or_create(&[("cause", cause.to_string()), ("kind", kind.to_string())])
            .inc();
    }

    /// One request refused by access control.
    pub fn count_access_denied(&self, reason: &str) {
        self.guard
            .access_denied
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    /// One handled RPC at the proxy: method name (e.g. "Search"), Milvus status
    /// code name ("SUCCESS", "ILLEGAL_TOPK"...) or gRPC code ("UNIMPLEMENTED").
    /// The proxy's `rpc_metrics` layer calls it once per RPC.
    pub fn observe_request(&self, method: &str, status: &str, seconds: f64) {
        self.requests
            .get_or_create(&[
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.request_duration
            .get_or_create(&[("method", method.to_string())])
            .observe(seconds);
    }

    /// One call to a backend node: its group and address, method, outcome
    /// ("ok" / error code name / "transport_error").
    pub fn observe_backend(&self, backend: &str, method: &str, outcome: &str, seconds: f64) {
        let [group, backend] = self.backend_groups.labels(backend);
        let method = ("method", method.to_string());
        self.backend_request_duration
            .get_or_create(&[group.clone(), backend.clone(), method.clone()])
            .observe(seconds);
        self.backend_requests
            .get_or_create(&[group, backend, method, ("outcome", outcome.to_string())])
            .inc();
    }

    /// How many nodes and segment files one search fanned out to.
    pub fn observe_fanout(&self, nodes: usize, files: usize) {
        self.search_fanout_nodes.observe(nodes as f64);
        self.search_files.observe(files as f64);
    }

    /// One stacked call of `searches` searches (`[coalesce]`).
    pub fn observe_coalesced_call(&self, searches: usize) {
        self.coalesced_call_searches.observe(searches as f64);
    }

    /// Time to merge the partial results of one search.
    pub fn observe_merge(&self, seconds: f64) {
        self.merge_duration.observe(seconds);
    }

    /// One topology refresh; a failed one also counts a failure.
    pub fn observe_topology_refresh(&self, seconds: f64, ok: bool) {
        self.topology_refresh_duration.observe(seconds);
        if !ok {
            self.topology_refresh_failures.inc();
        }
    }

    /// Seconds since the last successful topology refresh.
    pub fn set_topology_age(&self, seconds: f64) {
        self.topology_age.set(seconds);
    }

    /// Health of one backend node.
    pub fn set_backend_up(&self, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&self.backend_groups.labels(backend))
            .set(i64::from(up));
    }

    /// Drops the series of a backend removed by a reload (it is not down, it is gone).
    pub fn forget_backend(&self, backend: &str) {
        self.backend_up.remove(&self.backend_groups.labels(backend));
    }

    /// Counts one in-flight RPC until the guard is dropped.
    pub fn inflight(&self) -> InflightGuard {
        self.inflight_requests.inc();
        InflightGuard {
            gauge: self.inflight_requests.clone(),
        }
    }

    /// The OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = encode(&mut text, &self.registry) {
            // Writing into a String cannot fail; a label value the encoder
            // rejects would land here.
            tracing::warn!(error = %err, "encoding metrics failed");
        }
        text
    }
}

/// The series of deadlines, hedging, passive ejection and admission control.
#[derive(Clone, Default)]
pub struct ResilienceMetrics {
    backend_groups: BackendGroups,
    shed: Family<Labels<1>, Counter>,
    hedged: Family<Labels<2>, Counter>,
    ejected: Family<Labels<2>, Gauge>,
    deadline_exceeded: Family<Labels<1>, Counter>,
    backend_inflight: Family<Labels<2>, Gauge>,
    writer_fallbacks: Counter,
}

impl ResilienceMetrics {
    fn register(registry: &mut Registry, backend_groups: BackendGroups) -> Self {
        let me = Self {
            backend_groups,
            ..Self::default()
        };
        registry.register(
            "mishards_shed_requests",
            "Requests refused by admission control, by limit (inflight, queued_work, result_size, backend_limit)",
            me.shed.clone(),
        );
        registry.register(
            "mishards_hedged_requests",
            "Hedge calls sent to a read-only node for a slower node's files",
            me.hedged.clone(),
        );
        registry.register(
            "mishards_backend_ejected",
            "1 while the read-only node is ejected after consecutive failures, else 0",
            me.ejected.clone(),
        );
        registry.register(
            "mishards_deadline_exceeded",
            "Requests answered DEADLINE_EXCEEDED, by method",
            me.deadline_exceeded.clone(),
        );
        registry.register(
            "mishards_backend_inflight",
            "Calls in flight from the proxy to a backend node",
            me.backend_inflight.clone(),
        );
        registry.register(
            "mishards_search_writer_fallbacks",
            "Searches sent whole to the writable node because no read-only node was healthy (backends.search_writer_fallback)",
            me.writer_fallbacks.clone(),
        );
        me
    }

    pub fn writer_fallback(&self) {
        self.writer_fallbacks.inc();
    }

    pub fn shed(&self, reason: &str) {
        self.shed
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    pub fn hedged(&self, backend: &str) {
        self.hedged
            .get_or_create(&self.backend_groups.labels(backend))
            .inc();
    }

    pub fn set_ejected(&self, backend: &str, ejected: bool) {
        self.ejected
            .get_or_create(&self.backend_groups.labels(backend))
            .set(i64::from(ejected));
    }

    pub fn deadline_exceeded(&self, method: &str) {
        self.deadline_exceeded
            .get_or_create(&[("method", method.to_string())])
            .inc();
    }

    /// The gauge of calls in flight to `backend`.
    pub fn backend_inflight(&self, backend: &str) -> Gauge {
        self.backend_inflight
            .get_or_create(&self.backend_groups.labels(backend))
            .clone()
    }
}

/// Decrements `mishards_inflight_requests` when dropped.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InflightGuard {
    gauge: Gauge,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The series of the operating features: what the proxy can serve right
/// now, and how configuration reloads went.
#[derive(Clone, Default)]
pub struct OpsMetrics {
    write_available: Gauge,
    read_available: Gauge,
    config_reloads: Family<Labels<1>, Counter>,
}

impl OpsMetrics {
    fn register(registry: &mut Registry) -> OpsMetrics {
        let ops = OpsMetrics::default();
        registry.register(
            "mishards_write_available",
            "1 if the writable node answers, else 0",
            ops.write_available.clone(),
        );
        registry.register(
            "mishards_read_available",
            "1 if searches can be served (a snapshot and a read node are up), else 0",
            ops.read_available.clone(),
        );
        registry.register(
            "mishards_config_reloads",
            "Configuration reloads by result (applied, rejected)",
            ops.config_reloads.clone(),
        );
        ops
    }

    pub fn set_available(&self, read: bool, write: bool) {
        self.read_available.set(i64::from(read));
        self.write_available.set(i64::from(write));
    }

    /// One reload attempt: `result` is "applied" or "rejected".
    pub fn count_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&[("result", result.to_string())])
            .inc();
    }
}

struct EndpointState {
    metrics: Arc<Metrics>,
    ready: Box<dyn Fn() -> Readiness + Send + Sync>,
}

/// The answer of `/readyz`: the status (200 or 503) and a body saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// A JSON document (or short text) describing the state.
    pub body: String,
}

async fn metrics_handler(State(state): State<Arc<EndpointState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn livez_handler() -> &'static str {
    "ok"
}

async fn readyz_handler(State(state): State<Arc<EndpointState>>) -> (StatusCode, String) {
    let readiness = (state.ready)();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, readiness.body)
}

/// Serves GET /metrics (OpenMetrics text), GET /livez (200 "ok") and GET
/// /readyz (200 when `ready()` else 503) until `shutdown` resolves.
/// Binds `addr` (port 0 allowed) and returns the bound address and the
/// server task.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: impl Fn() -> bool + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let readiness = move || {
        let ready = ready();
        let body = if ready { "ready" } else { "not ready" };
        Readiness {
            ready,
            body: body.to_string(),
        }
    };
    serve_http(addr, metrics, readiness, Router::new(), shutdown).await
}

/// [`serve_metrics`] with a `/readyz` body from `ready` and the routes of
/// `extra` (the admin endpoints) merged in.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: impl Fn() -> Readiness + Send + Sync + 'static,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new(EndpointState {
        metrics,
        ready: Box::new(ready),
    });
    let router = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(livez_handler))
        .route("/readyz", get(readyz_handler))
        .with_state(state)
        .merge(extra);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn encode_contains_the_observed_series() {
        let metrics = Metrics::new();
        metrics.observe_request("Search", "SUCCESS", 0.002);
        metrics.observe_request("Search", "ILLEGAL_TOPK", 0.001);
        metrics.observe_backend("10.0.0.2:19530", "Search", "transport_error", 0.5);
        metrics.observe_fanout(3, 40);
        metrics.observe_merge(0.0001);
        metrics.observe_topology_refresh(0.01, true);
        metrics.observe_topology_refresh(0.02, false);
        metrics.set_topology_age(1.5);
        metrics.set_backend_up("10.0.0.2:19530", true);
        metrics.backend_groups.assign("10.0.0.3:19530", "g2");
        metrics.set_backend_up("10.0.0.3:19530", false);
        metrics.resilience.hedged("10.0.0.3:19530");
        let text = metrics.encode();
        for expected in [
            "# TYPE mishards_requests counter",
            r#"mishards_requests_total{method="Search",status="SUCCESS"} 1"#,
            r#"mishards_requests_total{method="Search",status="ILLEGAL_TOPK"} 1"#,
            r#"mishards_request_duration_seconds_count{method="Search"} 2"#,
            r#"mishards_request_duration_seconds_bucket{le="0.0005",method="Search"} 0"#,
            r#"mishards_request_duration_seconds_bucket{le="0.001",method="Search"} 1"#,
            r#"mishards_backend_requests_total{group="default",backend="10.0.0.2:19530",method="Search",outcome="transport_error"} 1"#,
            r#"mishards_backend_request_duration_seconds_count{group="default",backend="10.0.0.2:19530",method="Search"} 1"#,
            "mishards_search_fanout_nodes_sum 3.0",
            "mishards_search_files_sum 40.0",
            "mishards_merge_duration_seconds_count 1",
            "mishards_topology_refresh_duration_seconds_count 2",
            "mishards_topology_refresh_failures_total 1",
            "mishards_topology_age_seconds 1.5",
            r#"mishards_backend_up{group="default",backend="10.0.0.2:19530"} 1"#,
            r#"mishards_backend_up{group="g2",backend="10.0.0.3:19530"} 0"#,
            r#"mishards_hedged_requests_total{group="g2",backend="10.0.0.3:19530"} 1"#,
            "mishards_inflight_requests 0",
            &format!(
                r#"mishards_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            ),
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn inflight_guard_counts_while_alive() {
        let metrics = Metrics::new();
        let first = metrics.inflight();
        let second = metrics.inflight();
        assert!(metrics.encode().contains("mishards_inflight_requests 2"));
        drop(first);
        assert!(metrics.encode().contains("mishards_inflight_requests 1"));
        drop(second);
        assert!(metrics.encode().contains("mishards_inflight_requests 0"));
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn endpoints_answer_over_http() {
        let metrics = Metrics::new();
        metrics.observe_request("Insert", "SUCCESS", 0.01);
        let ready = Arc::new(AtomicBool::new(false));
        let ready_flag = ready.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve_metrics(
            "127.0.0.1:0".parse().expect("addr"),
            metrics,
            move || ready_flag.load(Ordering::SeqCst),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .expect("bind");
        assert_ne!(addr.port(), 0);

        let response = http_get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{response}"
        );
        assert!(response.contains(r#"mishards_requests_total{method="Insert",status="SUCCESS"} 1"#));

        let response = http_get(addr, "/livez").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok"), "{response}");

        let response = http_get(addr, "/readyz").await;
        assert!(
            response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{response}"
        );
        ready.store(true, Ordering::SeqCst);
        let response = http_get(addr, "/readyz").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");

        let response = http_get(addr, "/nope").await;
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{response}"
        );

        stop.send(()).expect("server still running");
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("server stops after shutdown")
            .expect("server task did not panic");
    }
}
