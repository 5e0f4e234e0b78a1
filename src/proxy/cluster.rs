//! The Milvus cluster as the proxy's request handlers see it: the backend
//! nodes, the topology snapshot, the metrics and the per-call deadlines.
//! `forward`, `search` and `cmd` each add their kind of call to it.

use std::sync::Arc;
use std::time::Duration;

use super::admission::WorkBudget;
use super::coalesce::Coalescer;
use super::hedge_policy::HedgePolicy;
use super::placements::Placements;
use super::warmup::Warmup;
use crate::backend::Backends;
use crate::status::{MilvusError, MilvusResult};
use crate::telemetry::Metrics;
use crate::topology::{CollectionView, Topology};

/// State shared by every request of the proxy. A request works on its own
/// clone, which holds the backends in effect when it started.
#[derive(Clone)]
pub struct Cluster {
    pub(super) backends: Arc<Backends>,
    pub(super) topology: Arc<Topology>,
    pub(super) metrics: Arc<Metrics>,
    /// Deadline of one forwarded call (none: wait as long as the client does).
    pub(super) request_timeout: Option<Duration>,
    /// Deadline of one node's part of a search.
    pub(super) search_timeout: Option<Duration>,
    /// When to hedge a slow node's part of a search.
    pub(super) hedging: Arc<HedgePolicy>,
    /// The nq x topk budget of searches being served.
    pub(super) work: Arc<WorkBudget>,
    /// Each collection's file placement, kept across searches.
    pub(super) placements: Arc<Placements>,
    /// Warm-up of new files, which a Flush waits on.
    pub(super) warmup: Arc<Warmup>,
    /// `[coalesce]`: concurrent searches' node calls stacked (None: off).
    pub(super) coalescer: Option<Arc<Coalescer>>,
}

/// The search protections configured in `[slow_nodes]` and `[admission]`.
#[derive(Clone)]
pub struct Protection {
    pub hedging: Arc<HedgePolicy>,
    pub work: Arc<WorkBudget>,
    /// `[coalesce]`, shared by every group's cluster (its lanes are per node).
    pub(super) coalescer: Option<Arc<Coalescer>>,
}

impl Protection {
    pub fn from_config(config: &crate::config::Config, metrics: Arc<Metrics>) -> Self {
        Self {
            hedging: Arc::new(HedgePolicy::new(&config.slow_nodes)),
            work: Arc::new(WorkBudget::new(
                config.admission.max_queued_work,
                config.server.max_message_size.0,
                metrics.clone(),
            )),
            coalescer: config
                .coalesce
                .enabled
                .then(|| Coalescer::new(config.coalesce.max_batch_nq, metrics)),
        }
    }
}

impl Cluster {
    pub fn new(
        backends: Arc<Backends>,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        request_timeout: Option<Duration>,
        search_timeout: Option<Duration>,
        protection: Protection,
    ) -> Self {
        Self {
            backends,
            topology,
            metrics,
            request_timeout,
            search_timeout,
            hedging: protection.hedging,
            work: protection.work,
            placements: Arc::default(),
            warmup: Warmup::disabled(),
            coalescer: protection.coalescer,
        }
    }

    /// Admits a search of `nq` queries and `topk` under the work budget.
    pub fn admit_search(
        &self,
        nq: usize,
        topk: i64,
    ) -> Result<super::admission::WorkPermit, tonic::Status> {
        self.work.admit(nq, topk)
    }

    /// The collection from a snapshot that reflects this proxy's own writes;
    /// looked up again after a miss (it may have been created through another
    /// proxy replica), at a bounded metadata cost (see `Topology::after_miss`).
    pub(super) async fn view(&self, name: &str) -> MilvusResult<Arc<CollectionView>> {
        let snap = self.topology.fresh().await?;
        if let Some(v) = snap.collection(name) {
            return Ok(v.clone());
        }
        let snap = self.topology.after_miss(name).await?;
        snap.collection(name)
            .cloned()
            .ok_or_else(|| MilvusError::collection_not_exists(name))
    }

    /// `error` of a route plan, with why each read-only node is down when
    /// the plan found no node for some files: the operator sees the cause
    /// (a refused connection, a TLS handshake) in the client's error.
    pub(super) fn explain_unplaced(&self, mut error: MilvusError) -> MilvusError {
        if super::route::found_no_healthy_node(&error) {
            let down = self.backends.readonly_down();
            if !down.is_empty() {
                error.reason = format!("{}; down: {}", error.reason, down.join("; "));
            }
        }
        error
    }

    /// Whether the node at an address is healthy, for route planning.
    pub(super) fn healthy(&self) -> impl Fn(&str) -> bool + '_ {
        |addr| self.backends.is_healthy(addr)
    }
}
