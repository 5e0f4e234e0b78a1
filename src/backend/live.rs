//! The set of backends as an immutable value swapped atomically, so the
//! node list can change while the proxy serves ([`arc_swap`]: lock-free
//! loads on every request, no reader ever blocks a reload).
//!
//! A request takes one [`Backends`] snapshot and uses it to the end: a node
//! removed by a reload keeps serving the calls already sent to it (the old
//! snapshot holds its `Arc<Backend>` and connection until they finish), and
//! new requests see the new ring. Nodes present before and after keep their
//! connection, health and statistics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{Backend, Backends};
use crate::config::Config;
use crate::ring::Ring;
use crate::telemetry::Metrics;

/// How the node list changed in one [`LiveBackends::apply`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackendsChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The new writable address, when it changed.
    pub writable: Option<String>,
}

impl BackendsChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.writable.is_none()
    }

    /// Adds another group's change to this one (over shard groups, several
    /// writable nodes may change in one reload: their addresses are joined).
    pub fn absorb(&mut self, other: BackendsChange) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.writable = match (self.writable.take(), other.writable) {
            (Some(a), Some(b)) => Some(format!("{a}, {b}")),
            (a, b) => a.or(b),
        };
    }
}

/// The current [`Backends`], replaceable at run time.
pub struct LiveBackends {
    current: ArcSwap<Backends>,
    metrics: Arc<Metrics>,
}

impl LiveBackends {
    pub fn new(backends: Backends, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(backends),
            metrics,
        })
    }

    /// A live set starting from backends already shared.
    pub fn from_shared(backends: Arc<Backends>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(backends),
            metrics,
        })
    }

    /// The backends a request should use from start to end.
    pub fn load(&self) -> Arc<Backends> {
        self.current.load_full()
    }

    /// Replaces the backends with those of `config` (its writable node and
    /// `readonly`, which may come from discovery rather than the file).
    /// Nodes already known keep their `Backend`; removed ones drain.
    pub fn apply(&self, config: &Config, readonly: &[String]) -> anyhow::Result<BackendsChange> {
        let old = self.load();
        let next = rebuild(&old, config, readonly, &self.metrics)?;
        let change = diff(&old, &next);
        self.current.store(Arc::new(next));
        for addr in &change.removed {
            self.metrics.forget_backend(addr);
            if let Some(backend) = old.by_addr.get(addr) {
                spawn_drain_log(backend.clone());
            }
        }
        Ok(change)
    }

    /// Probes every current node every `period` until aborted; nodes added
    /// by a reload are probed from the next round on.
    pub fn spawn_health_checks(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.load()
                    .probe_all(period.max(Duration::from_secs(1)))
                    .await;
            }
        })
    }
}

/// The backends of `config` with `readonly` nodes, reusing the `Backend` of
/// every address `old` already has.
fn rebuild(
    old: &Backends,
    config: &Config,
    readonly: &[String],
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Backends> {
    let mut by_addr: HashMap<String, Arc<Backend>> = HashMap::new();
    let mut node = |addr: &str| -> anyhow::Result<Arc<Backend>> {
        if let Some(b) = by_addr.get(addr) {
            return Ok(b.clone());
        }
        let b = match old.by_addr.get(addr) {
            Some(b) => b.clone(),
            None => Arc::new(Backend::new(
                addr,
                config,
                old.tls.as_ref(),
                metrics.clone(),
                super::ejection_policy(config, addr == config.backends.writable),
            )?),
        };
        by_addr.insert(addr.to_string(), b.clone());
        Ok(b)
    };
    let writable = node(&config.backends.writable)?;
    let readonly_backends = readonly
        .iter()
        .map(|a| node(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ring = Ring::new(readonly, config.backends.virtual_nodes as usize);
    Ok(Backends {
        writable,
        readonly: readonly_backends,
        by_addr,
        ring,
        search_writer_fallback: config.backends.search_writer_fallback,
        tls: old.tls.clone(),
    })
}

fn diff(old: &Backends, new: &Backends) -> BackendsChange {
    let mut added: Vec<String> = new
        .by_addr
        .keys()
        .filter(|a| !old.by_addr.contains_key(*a))
        .cloned()
        .collect();
    let mut removed: Vec<String> = old
        .by_addr
        .keys()
        .filter(|a| !new.by_addr.contains_key(*a))
        .cloned()
        .collect();
    added.sort();
    removed.sort();
    let writable = (old.writable.addr != new.writable.addr).then(|| new.writable.addr.clone());
    BackendsChange {
        added,
        removed,
        writable,
    }
}

/// Logs when a removed node's last in-flight call has finished (or that
/// some were still running after a minute).
fn spawn_drain_log(backend: Arc<Backend>) {
    tokio::spawn(async move {
        for _ in 0..600 {
            if backend.stats.view().inflight == 0 {
                tracing::info!(backend = %backend.addr, "removed backend drained");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(backend = %backend.addr, "removed backend still has calls in flight after 60s");
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(writable: &str, readonly: &[&str]) -> Config {
        let mut c = Config::default();
        c.backends.writable = writable.into();
        c.backends.readonly = readonly.iter().map(|s| s.to_string()).collect();
        c
    }

    #[tokio::test]
    async fn apply_keeps_known_nodes_and_reports_the_change() {
        let metrics = Metrics::new();
        let first = config("127.0.0.1:1", &["127.0.0.1:2", "127.0.0.1:3"]);
        let live = LiveBackends::new(Backends::new(&first, metrics.clone()).unwrap(), metrics);
        let before = live.load();
        let kept = before.get("127.0.0.1:3").unwrap().clone();

        let second = config("127.0.0.1:9", &["127.0.0.1:3", "127.0.0.1:4"]);
        let change = live.apply(&second, &second.backends.readonly).unwrap();
        assert_eq!(change.added, vec!["127.0.0.1:4", "127.0.0.1:9"]);
        assert_eq!(change.removed, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(change.writable.as_deref(), Some("127.0.0.1:9"));

        let after = live.load();
        assert!(Arc::ptr_eq(after.get("127.0.0.1:3").unwrap(), &kept));
        assert_eq!(after.ring.nodes(), ["127.0.0.1:3", "127.0.0.1:4"]);
        assert_eq!(after.writable.addr, "127.0.0.1:9");
        // The snapshot taken before the reload still has the old nodes.
        assert!(before.get("127.0.0.1:2").is_some());
        assert!(live
            .apply(&second, &second.backends.readonly)
            .unwrap()
            .is_empty());
    }
}
