//! The Milvus nodes behind the proxy: one gRPC client per configured node,
//! every call timed and counted per backend, and a health view fed by call
//! outcomes and a periodic `Cmd("status")` probe. Failed reads can move to
//! another node; writes are never retried. `live` makes the set of nodes
//! replaceable at run time; `stats` keeps the per-node admin counters.

pub mod live;
pub mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::config::Config;
use crate::ring::Ring;
use crate::status::{code_name, MilvusError, Reply};
use crate::telemetry::Metrics;
use crate::wire::milvus_service_client::MilvusServiceClient;
use crate::wire::{Command, ErrorCode};

pub type Client = MilvusServiceClient<Channel>;

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
                    status.message(),
                    status.code()
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
    raw: tonic::client::Grpc<Channel>,
    healthy: AtomicBool,
    metrics: Arc<Metrics>,
    /// In-flight, calls, errors and recent latencies, for `conn_stats`.
    pub stats: stats::CallStats,
}

impl Backend {
    fn new(addr: &str, config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let max = config.server.max_message_size.0 as usize;
        let channel = crate::grpc::channel(addr, config.backends.connect_timeout)?;
        let client = crate::grpc::client_on(channel.clone(), max);
        let raw = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        metrics.set_backend_up(addr, true);
        Ok(Self {
            addr: addr.to_string(),
            client,
            raw,
            healthy: AtomicBool::new(true),
            metrics,
            stats: stats::CallStats::default(),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, up: bool) {
        if self.healthy.swap(up, Ordering::Relaxed) != up {
            tracing::info!(backend = %self.addr, up, "backend health changed");
            self.metrics.set_backend_up(&self.addr, up);
        }
    }

    /// Calls `method` on this node with an optional deadline; records the
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
        let fut = f(self.client.clone());
        let reply = self
            .observe(method, timeout, fut, |r: &T| {
                r.status().map_or(0, |s| s.error_code)
            })
            .await?;
        Ok(reply)
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
        let mut grpc = self.raw.clone();
        let fut = async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
            grpc.unary(
                tonic::Request::new(body),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                crate::grpc::RawCodec,
            )
            .await
        };
        self.observe(method, timeout, fut, code_of).await
    }

    /// Runs one call with an optional deadline; records its outcome (Milvus
    /// status code name, or `transport_error`), its latency and the node's health.
    async fn observe<T>(
        &self,
        method: &'static str,
        timeout: Option<Duration>,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
        code_of: impl Fn(&T) -> i32,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
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
        let seconds = started.elapsed().as_secs_f64();
        self.stats.finish(result.is_ok(), seconds);
        match result {
            Ok(resp) => {
                let reply = resp.into_inner();
                self.metrics.observe_backend(
                    &self.addr,
                    method,
                    outcome_name(code_of(&reply)),
                    seconds,
                );
                self.set_healthy(true);
                Ok(reply)
            }
            Err(status) => {
                self.metrics
                    .observe_backend(&self.addr, method, "transport_error", seconds);
                if is_connectivity(&status) {
                    self.set_healthy(false);
                }
                Err(BackendError::Transport {
                    addr: self.addr.clone(),
                    method,
                    status,
                })
            }
        }
    }

    /// Health probe: `Cmd("status")` must answer.
    pub async fn probe(&self, timeout: Duration) -> bool {
        let r = self
            .call("Cmd", Some(timeout), |mut c| async move {
                c.cmd(Command {
                    cmd: "status".into(),
                })
                .await
            })
            .await;
        r.is_ok()
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
}

impl Backends {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let writable = Arc::new(Backend::new(
            &config.backends.writable,
            config,
            metrics.clone(),
        )?);
        let mut by_addr = HashMap::new();
        by_addr.insert(writable.addr.clone(), writable.clone());
        let mut readonly = Vec::new();
        for addr in &config.backends.readonly {
            let backend = match by_addr.get(addr) {
                Some(b) => b.clone(), // the writer may also serve reads
                None => Arc::new(Backend::new(addr, config, metrics.clone())?),
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
        })
    }

    pub fn get(&self, addr: &str) -> Option<&Arc<Backend>> {
        self.by_addr.get(addr)
    }

    pub fn is_healthy(&self, addr: &str) -> bool {
        self.get(addr).is_some_and(|b| b.is_healthy())
    }

    /// Probes every node every `period` until aborted.
    pub fn spawn_health_checks(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let probes = me.by_addr.values().map(|b| async move {
                    let up = b.probe(period.max(Duration::from_secs(1))).await;
                    b.set_healthy(up);
                });
                futures::future::join_all(probes).await;
            }
        })
    }
}
