//! The Milvus nodes behind the proxy: one gRPC client per configured node,
//! every call timed and counted per backend, and a health view fed by call
//! outcomes and a periodic `Cmd("status")` probe. Failed reads can move to
//! another node; writes are never retried. Each node takes at most
//! `admission.max_inflight_per_backend` calls at once (more wait for a slot
//! within their deadline); `health` keeps its passive-ejection state and
//! recent search latencies; `live` makes the set of nodes replaceable at run
//! time; `stats` keeps the per-node admin counters. With `[backend_tls]`
//! every connection to a node is TLS (`crate::tls::backend`).

pub mod channel;
pub mod health;
pub mod live;
pub mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument;

use self::channel::{Dialer, DirectChannel};
use self::health::{Change, Ejection, EjectionPolicy, LatencyWindow};
use crate::deadline;

use crate::config::Config;
use crate::ring::Ring;
use crate::status::{code_name, MilvusError, Reply};
use crate::telemetry::Metrics;
use crate::tls::BackendTls;
use crate::trace::InjectTraceContext;
use crate::wire::milvus_service_client::MilvusServiceClient;
use crate::wire::{Command, ErrorCode};

/// A channel whose requests carry the caller's trace context (`traceparent`):
/// the direct one of `channel`, not tonic's buffered `transport::Channel`.
pub type TracedChannel = InterceptedService<DirectChannel, InjectTraceContext>;

pub type Client = MilvusServiceClient<TracedChannel>;

/// A failed call to a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The node could not be reached or the call broke at the gRPC level.
    #[error("{addr} unreachable for {method}: {status}")]
    Transport {
        addr: String,
        method: &'static str,
        status: tonic::Status,
    },
    /// Every call slot of the node stayed taken until the deadline.
    #[error("{addr} busy for {method}: {limit} calls in flight")]
    Busy {
        addr: String,
        method: &'static str,
        limit: usize,
    },
}

impl BackendError {
    pub fn to_milvus(&self) -> MilvusError {
        match self {
            BackendError::Transport {
                addr,
                method,
                status,
            } => MilvusError::new(
                ErrorCode::ConnectFailed,
                format!(
                    "backend {addr} failed {method}: {} ({:?})",
                    crate::error_text::status_line(status),
                    status.code()
                ),
            ),
            BackendError::Busy {
                addr,
                method,
                limit,
            } => MilvusError::new(
                ErrorCode::ConnectFailed,
                format!(
                    "backend {addr} busy for {method}: {limit} calls in flight \
                     (admission.max_inflight_per_backend) until the deadline"
                ),
            ),
        }
    }
}

/// One Milvus node.
pub struct Backend {
    pub addr: String,
    client: Client,
    /// The same connection, for calls that forward raw message bytes.
    raw: tonic::client::Grpc<TracedChannel>,
    healthy: AtomicBool,
    /// Why the last call or probe found the node unreachable, while it is down.
    down_reason: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    /// Call slots: `admission.max_inflight_per_backend`.
    slots: Arc<Semaphore>,
    slot_count: usize,
    inflight: Gauge,
    policy: EjectionPolicy,
    ejection: Mutex<Ejection>,
    latency: Mutex<LatencyWindow>,
    /// In-flight, calls, errors and recent latencies, for `conn_stats`.
    pub stats: stats::CallStats,
}

/// A wait for a call slot; dropped unfinished at or past the request's
/// deadline, it counts a `backend_limit` shed.
struct SlotWait<'a> {
    metrics: &'a Metrics,
    until: Option<tokio::time::Instant>,
    done: bool,
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        let expired = self
            .until
            .is_some_and(|d| tokio::time::Instant::now() + Duration::from_millis(1) >= d);
        if !self.done && expired {
            self.metrics.resilience.shed("backend_limit");
        }
    }
}

/// Decrements the node's in-flight gauge when the call ends or is dropped.
struct InflightCall(Gauge);

impl Drop for InflightCall {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `[slow_nodes]` ejection for a read-only node; the writer is never
/// ejected: writes have nowhere else to go.
fn ejection_policy(config: &Config, writable: bool) -> EjectionPolicy {
    let slow = &config.slow_nodes;
    EjectionPolicy {
        after_failures: if writable {
            0
        } else {
            slow.eject_after_failures
        },
        backoff: slow.eject_backoff,
        max_backoff: slow.eject_max_backoff,
    }
}

impl Backend {
    fn new(
        addr: &str,
        config: &Config,
        tls: Option<&Arc<BackendTls>>,
        metrics: Arc<Metrics>,
        policy: EjectionPolicy,
    ) -> anyhow::Result<Self> {
        let max = config.server.max_message_size.0 as usize;
        let timeout = config.backends.connect_timeout;
        let dialer = match tls {
            None => Dialer::Tcp,
            Some(tls) => Dialer::Tls(
                tls.connector(addr)
                    .map_err(|e| anyhow::anyhow!("backend {addr}: {e}"))?,
            ),
        };
        let channel = DirectChannel::new(addr, timeout, dialer)
            .map_err(|e| anyhow::anyhow!("backend address {addr:?}: {e}"))?;
        // `new` on the intercepted channel rather than `with_interceptor`,
        // which wants a `Default` response body (hyper's `Incoming` is not).
        let traced = InterceptedService::new(channel, InjectTraceContext);
        let client = MilvusServiceClient::new(traced.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let raw = tonic::client::Grpc::new(traced)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        metrics.set_backend_up(addr, true);
        metrics.resilience.set_ejected(addr, false);
        let slot_count = config.admission.max_inflight_per_backend.max(1) as usize;
        Ok(Self {
            addr: addr.to_string(),
            client,
            raw,
            healthy: AtomicBool::new(true),
            down_reason: Mutex::new(None),
            inflight: metrics.resilience.backend_inflight(addr),
            metrics,
            slots: Arc::new(Semaphore::new(slot_count)),
            slot_count,
            policy,
            ejection: Mutex::new(Ejection::default()),
            latency: Mutex::new(LatencyWindow::default()),
            stats: stats::CallStats::default(),
        })
    }

    /// Answered its last probe and is not ejected.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected()
    }

    pub fn is_ejected(&self) -> bool {
        self.ejection.lock().is_ok_and(|e| e.is_ejected())
    }

    /// Why the node takes no calls now (`None` when it is healthy): the
    /// error that took it down, or its ejection.
    pub fn down_reason(&self) -> Option<String> {
        if !self.healthy.load(Ordering::Relaxed) {
            let reason = self.down_reason.lock().ok().and_then(|r| r.clone());
            return Some(reason.unwrap_or_else(|| "no answer to its health probe".into()));
        }
        self.is_ejected()
            .then(|| "ejected after consecutive failures or slow calls".into())
    }

    /// p95 of the node's recent `SearchInFiles` latencies.
    pub fn search_p95(&self) -> Option<Duration> {
        self.latency.lock().ok().and_then(|w| w.p95())
    }

    /// A call that failed or timed out: counts towards ejection.
    pub fn record_failure(&self) {
        self.ejection_change(|e, policy, now| e.failure(policy, now));
    }

    /// A call still unanswered past its hedge delay: slowness evidence
    /// towards ejection.
    pub fn record_slow(&self) {
        self.ejection_change(|e, policy, now| e.slow_call(policy, now));
    }

    fn ejection_change(
        &self,
        apply: impl FnOnce(&mut Ejection, &EjectionPolicy, Instant) -> Change,
    ) {
        let change = match self.ejection.lock() {
            Ok(mut e) => apply(&mut e, &self.policy, Instant::now()),
            Err(_) => Change::None,
        };
        if let Change::Ejected(period) = change {
            tracing::warn!(backend = %self.addr, backoff = %humantime::format_duration(period), "backend ejected after consecutive failures");
            self.metrics.resilience.set_ejected(&self.addr, true);
        }
    }

    fn record_success(&self) {
        if let Ok(mut e) = self.ejection.lock() {
            e.success();
        }
    }

    fn probe_answered(&self) {
        let change = match self.ejection.lock() {
            Ok(mut e) => e.probe_ok(Instant::now()),
            Err(_) => Change::None,
        };
        if change == Change::Restored {
            tracing::info!(backend = %self.addr, "ejected backend answered its probe; back in");
            self.metrics.resilience.set_ejected(&self.addr, false);
        }
    }

    /// Every answered call says `up`: only a change of state does more than
    /// one atomic swap (the down reason is cleared on the way back up).
    fn set_healthy(&self, up: bool) {
        if self.healthy.swap(up, Ordering::Relaxed) != up {
            if up {
                if let Ok(mut reason) = self.down_reason.lock() {
                    reason.take();
                }
            }
            tracing::info!(backend = %self.addr, up, "backend health changed");
            self.metrics.set_backend_up(&self.addr, up);
        }
    }

    /// Calls `method` on this node within `timeout` (a cap, further bounded
    /// by the request's deadline) once a call slot is free; records the
    /// outcome (Milvus status code name, or `transport_error`) and latency.
    pub async fn call<T, F, Fut>(
        &self,
        method: &'static str,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, BackendError>
    where
        T: Reply,
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = deadline::backend_timeout(timeout);
        let started = Instant::now();
        let _slot = self.slot(method, timeout).await?;
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let fut = f(self.client.clone());
        let reply = self
            .observe(method, left, fut, |r: &T| {
                r.status().map_or(0, |s| s.error_code)
            })
            .await?;
        Ok(reply)
    }

    /// Waits (within `timeout`) for a free call slot of this node.
    async fn slot(
        &self,
        method: &'static str,
        timeout: Option<Duration>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, BackendError> {
        // Fast path: a free slot, no bookkeeping.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // The request's deadline usually ends the wait first (the proxy then
        // answers DEADLINE_EXCEEDED and drops this future): the guard counts
        // that as shed for "backend_limit" too.
        let mut waiting = SlotWait {
            metrics: &self.metrics,
            until: deadline::expires_at(),
            done: false,
        };
        let acquire = self.slots.clone().acquire_owned();
        let permit = match timeout {
            Some(t) => tokio::time::timeout(t, acquire).await.ok(),
            None => Some(acquire.await),
        };
        waiting.done = true;
        match permit {
            Some(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics.resilience.shed("backend_limit");
                Err(BackendError::Busy {
                    addr: self.addr.clone(),
                    method,
                    limit: self.slot_count,
                })
            }
        }
    }

    /// Sends an already encoded request to `path` and returns the encoded
    /// reply, without decoding either: used to forward large writes without
    /// copying their vectors through prost twice. `code_of` reads the Milvus
    /// status code from the reply bytes for the metrics.
    pub async fn call_raw(
        &self,
        method: &'static str,
        path: &'static str,
        body: bytes::Bytes,
        timeout: Option<Duration>,
        code_of: impl Fn(&bytes::Bytes) -> i32,
    ) -> Result<bytes::Bytes, BackendError> {
        let timeout = deadline::backend_timeout(timeout);
        let started = Instant::now();
        let _slot = self.slot(method, timeout).await?;
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let mut grpc = self.raw.clone();
        let fut = async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
            grpc.unary(
                deadline::outgoing(body),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                crate::grpc::RawCodec,
            )
            .await
        };
        self.observe(method, left, fut, code_of).await
    }

    /// Runs one call with an optional deadline in a `backend_call` span (the
    /// trace context the backend receives); records its outcome (Milvus
    /// status code name, or `transport_error`), its latency and the node's health.
    async fn observe<T>(
        &self,
        method: &'static str,
        timeout: Option<Duration>,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
        code_of: impl Fn(&T) -> i32,
    ) -> Result<T, BackendError> {
        let span = tracing::info_span!(
            "backend_call",
            otel.name = %format!("backend/{method}"),
            otel.kind = "client",
            backend = %self.addr,
            method,
            outcome = tracing::field::Empty,
        );
        self.observe_in_span(method, timeout, fut, code_of)
            .instrument(span)
            .await
    }

    async fn observe_in_span<T>(
        &self,
        method: &'static str,
        timeout: Option<Duration>,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
        code_of: impl Fn(&T) -> i32,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let _awaiting = crate::deadline::awaiting(&self.addr);
        self.inflight.inc();
        let _inflight = InflightCall(self.inflight.clone());
        let _inflight = self.stats.begin();
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {}",
                    humantime::format_duration(t)
                ))),
            },
            None => fut.await,
        };
        let elapsed = started.elapsed();
        let seconds = elapsed.as_secs_f64();
        self.stats.finish(result.is_ok(), seconds);
        match result {
            Ok(resp) => {
                if method == "SearchInFiles" {
                    if let Ok(mut w) = self.latency.lock() {
                        w.record(elapsed);
                    }
                }
                self.record_success();
                let reply = resp.into_inner();
                let outcome = outcome_name(code_of(&reply));
                tracing::Span::current().record("outcome", outcome);
                self.metrics
                    .observe_backend(&self.addr, method, outcome, seconds);
                self.set_healthy(true);
                Ok(reply)
            }
            Err(status) => {
                tracing::Span::current().record("outcome", "transport_error");
                self.metrics
                    .observe_backend(&self.addr, method, "transport_error", seconds);
                if is_connectivity(&status) {
                    self.record_failure();
                    // A timeout alone may be one slow call: ejection counts
                    // those; a refused connection means the node is down.
                    if status.code() != tonic::Code::DeadlineExceeded {
                        if let Ok(mut reason) = self.down_reason.lock() {
                            *reason = Some(crate::error_text::status_line(&status));
                        }
                        self.set_healthy(false);
                    }
                }
                Err(BackendError::Transport {
                    addr: self.addr.clone(),
                    method,
                    status,
                })
            }
        }
    }

    /// Health probe: `Cmd("status")` must answer. It needs no call slot,
    /// so a busy node is not taken for a dead one.
    pub async fn probe(&self, timeout: Duration) -> bool {
        let mut client = self.client.clone();
        let fut = async move {
            client
                .cmd(Command {
                    cmd: "status".into(),
                })
                .await
        };
        let ok = self
            .observe("Cmd", Some(timeout), fut, |r: &crate::wire::StringReply| {
                r.status().map_or(0, |s| s.error_code)
            })
            .await
            .is_ok();
        if ok {
            self.probe_answered();
        }
        ok
    }
}

fn outcome_name(code: i32) -> &'static str {
    if code == 0 {
        "ok"
    } else {
        code_name(code)
    }
}

/// Errors that say the node itself is unreachable (as opposed to a bad request).
fn is_connectivity(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// Every configured node, and the ring that places files on read-only ones.
pub struct Backends {
    pub writable: Arc<Backend>,
    pub readonly: Vec<Arc<Backend>>,
    by_addr: HashMap<String, Arc<Backend>>,
    pub ring: Ring,
    /// `backends.search_writer_fallback`: searches go to the writable node
    /// when no read-only node is healthy.
    pub search_writer_fallback: bool,
    /// `[backend_tls]`, when on: every node's connections use it.
    tls: Option<Arc<BackendTls>>,
}

/// The TLS of `[backend_tls]`, or None when it is off.
fn backend_tls(config: &Config) -> anyhow::Result<Option<Arc<BackendTls>>> {
    let section = &config.backend_tls;
    crate::tls::BackendTlsFiles::from_paths(&section.ca_file, &section.cert_file, &section.key_file)
        .map(|files| BackendTls::load(files, &section.server_name))
        .transpose()
        .map_err(|e| anyhow::anyhow!("backend_tls: {e}"))
}

impl Backends {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let tls = backend_tls(config)?;
        let readonly_policy = ejection_policy(config, false);
        let writer_policy = ejection_policy(config, true);
        let writable = Arc::new(Backend::new(
            &config.backends.writable,
            config,
            tls.as_ref(),
            metrics.clone(),
            writer_policy,
        )?);
        let mut by_addr = HashMap::new();
        by_addr.insert(writable.addr.clone(), writable.clone());
        let mut readonly = Vec::new();
        for addr in &config.backends.readonly {
            let backend = match by_addr.get(addr) {
                Some(b) => b.clone(), // the writer may also serve reads
                None => Arc::new(Backend::new(
                    addr,
                    config,
                    tls.as_ref(),
                    metrics.clone(),
                    readonly_policy,
                )?),
            };
            by_addr.insert(addr.clone(), backend.clone());
            readonly.push(backend);
        }
        let ring = Ring::new(
            &config.backends.readonly,
            config.backends.virtual_nodes as usize,
        );
        Ok(Self {
            writable,
            readonly,
            by_addr,
            ring,
            search_writer_fallback: config.backends.search_writer_fallback,
            tls,
        })
    }

    pub fn get(&self, addr: &str) -> Option<&Arc<Backend>> {
        self.by_addr.get(addr)
    }

    pub fn is_healthy(&self, addr: &str) -> bool {
        self.get(addr).is_some_and(|b| b.is_healthy())
    }

    /// "addr: why" for each read-only node that takes no calls now.
    pub fn readonly_down(&self) -> Vec<String> {
        self.readonly
            .iter()
            .filter_map(|b| b.down_reason().map(|why| format!("{}: {why}", b.addr)))
            .collect()
    }

    /// Probes every node once (each within `timeout`) and records who answered.
    pub async fn probe_all(&self, timeout: Duration) {
        let probes = self.by_addr.values().map(|b| async move {
            let up = b.probe(timeout).await;
            b.set_healthy(up);
        });
        futures::future::join_all(probes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_node_is_waited_for_until_the_deadline_then_shed() {
        let mut config = Config::default();
        // Lazily connected: no call is made in this test.
        config.backends.writable = "127.0.0.1:9".to_string();
        config.admission.max_inflight_per_backend = 1;
        let metrics = Metrics::new();
        let backends = Backends::new(&config, metrics.clone()).expect("backends");
        let node = backends.writable.clone();
        let held = node.slot("Search", None).await.expect("a free slot");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        let waited = crate::deadline::within(deadline, async {
            let timeout = crate::deadline::backend_timeout(None);
            node.slot("Search", timeout).await
        })
        .await;
        let took = started.elapsed();
        assert!(matches!(waited, Err(BackendError::Busy { limit: 1, .. })));
        assert!(took >= Duration::from_millis(100), "{took:?}");
        let shed = "mishards_shed_requests_total{reason=\"backend_limit\"} 1";
        assert!(metrics.encode().contains(shed));

        // Cut off by the request's deadline instead (the proxy's layer), it counts too.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let cut = tokio::time::timeout_at(
            deadline,
            crate::deadline::within(deadline, node.slot("Search", None)),
        )
        .await;
        assert!(cut.is_err());
        let shed = "mishards_shed_requests_total{reason=\"backend_limit\"} 2";
        assert!(metrics.encode().contains(shed));
        drop(held);
        assert!(node.slot("Search", None).await.is_ok());
    }
}
