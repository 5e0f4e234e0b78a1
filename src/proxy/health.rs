//! What the proxy can serve right now, and where it says so: the gRPC
//! health service (`grpc.health.v1.Health` on the Milvus port, entries "",
//! `mishards.read` and `mishards.write`, plus `mishards.read.<group>` and
//! `mishards.write.<group>` over shard groups), `/readyz` and the
//! `mishards_{read,write}_available` gauges, all from one rule
//! ([`availability`]): the proxy is ready while it can serve searches; a
//! writable node that is down makes it degraded (read-only), not unready.
//! At the start of a shutdown drain every entry turns NOT_SERVING; when the
//! listener closes, Watch streams end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::backend::live::LiveBackends;
use crate::telemetry::{Metrics, Readiness};
use crate::topology::Topology;

/// The health entry of searches and other reads.
pub const READ_SERVICE: &str = "mishards.read";
/// The health entry of writes and admin calls (the writable node).
pub const WRITE_SERVICE: &str = "mishards.write";

/// The serving state of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Availability {
    /// Searches can be served: a topology snapshot exists and a read path is up.
    pub read: bool,
    /// Writes can be served: the writable node answers.
    pub write: bool,
    /// A shutdown drain has started.
    pub draining: bool,
}

/// The rule: reads need a snapshot and a read path (a healthy read-only
/// node, or the writable node when no read-only node is configured);
/// writes need the writable node; nothing is served once draining.
pub fn availability(
    snapshot_loaded: bool,
    writer_up: bool,
    readonly_up: &[bool],
    draining: bool,
) -> Availability {
    let read_path = if readonly_up.is_empty() {
        writer_up
    } else {
        readonly_up.iter().any(|up| *up)
    };
    Availability {
        read: !draining && snapshot_loaded && read_path,
        write: !draining && writer_up,
        draining,
    }
}

impl Availability {
    /// The overall entry and `/readyz`: ready while reads can be served.
    pub fn ready(&self) -> bool {
        self.read
    }

    /// "ok", "degraded" (read-only), "draining" or "unavailable".
    pub fn state(&self) -> &'static str {
        match (self.draining, self.read, self.write) {
            (true, _, _) => "draining",
            (false, true, true) => "ok",
            (false, true, false) => "degraded",
            (false, false, _) => "unavailable",
        }
    }

    /// The `/readyz` body: `{"state":"degraded","read":"SERVING","write":"NOT_SERVING"}`.
    pub fn body(&self) -> String {
        self.body_json().to_string()
    }

    fn body_json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state(),
            "read": status_name(self.read),
            "write": status_name(self.write),
        })
    }
}

/// The metadata part of `/readyz`: "fresh", or "stale: ..." when the snapshot
/// could not be verified lately (database unreachable, or older than
/// `topology.stale_after`). Searches are still served from a stale snapshot,
/// so staleness alone never makes the proxy unready.
pub fn metadata_state(meta: &crate::topology::MetadataStatus) -> String {
    if !meta.loaded {
        return "no snapshot loaded yet".to_string();
    }
    if !meta.stale {
        return "fresh".to_string();
    }
    let age = meta.age.map_or("never".to_string(), |a| {
        format!("{:.1}s ago", a.as_secs_f64())
    });
    let db = if meta.up {
        ""
    } else {
        ", metadata database unreachable"
    };
    format!("stale: last verified {age}{db}")
}

fn status_name(up: bool) -> &'static str {
    if up {
        "SERVING"
    } else {
        "NOT_SERVING"
    }
}

fn serving(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// One shard group's view: the nodes and the snapshot its availability comes from.
struct Part {
    /// The group's name; `None` for the single-cluster form.
    group: Option<String>,
    live: Arc<LiveBackends>,
    topology: Arc<Topology>,
}

impl Part {
    fn availability(&self, draining: bool) -> Availability {
        let backends = self.live.load();
        let readonly_up: Vec<bool> = backends.readonly.iter().map(|b| b.is_healthy()).collect();
        availability(
            self.topology.current().is_loaded(),
            backends.writable.is_healthy(),
            &readonly_up,
            draining,
        )
    }
}

/// The availability of a proxy over shard groups, from each group's:
/// reads and writes are whole only when every group serves them, and the
/// proxy stays ready while any group can serve reads (every replica sees
/// the same groups, so taking replicas out of a load balancer would turn
/// one group's outage into a total one).
pub fn over_groups(groups: &[Availability]) -> (Availability, bool) {
    let draining = groups.iter().any(|a| a.draining);
    let whole = Availability {
        read: !groups.is_empty() && groups.iter().all(|a| a.read),
        write: !groups.is_empty() && groups.iter().all(|a| a.write),
        draining,
    };
    (whole, !draining && groups.iter().any(|a| a.read))
}

/// The health entries of one group: `mishards.read.<group>`, `mishards.write.<group>`.
pub fn group_entries(group: &str) -> [String; 2] {
    [
        format!("{READ_SERVICE}.{group}"),
        format!("{WRITE_SERVICE}.{group}"),
    ]
}

/// What was last published, so health watchers hear of changes only.
#[derive(Clone, PartialEq)]
struct Published {
    whole: Availability,
    ready: bool,
    groups: Vec<Availability>,
}

/// Computes the availability and publishes it to the gRPC health service and the gauges.
/// Over shard groups it also publishes each group's read and write entries
/// ([`group_entries`]) and `/readyz` carries each group's document.
pub struct Health {
    parts: Vec<Part>,
    metrics: Arc<Metrics>,
    reporter: HealthReporter,
    draining: AtomicBool,
    published: tokio::sync::Mutex<Option<Published>>,
}

impl Health {
    pub fn new(
        live: Arc<LiveBackends>,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        reporter: HealthReporter,
    ) -> Arc<Self> {
        let part = Part {
            group: None,
            live,
            topology,
        };
        Self::with_parts(vec![part], metrics, reporter)
    }

    /// The health of a proxy over shard groups: (name, nodes, snapshot) per group.
    pub fn over_groups(
        groups: Vec<(String, Arc<LiveBackends>, Arc<Topology>)>,
        metrics: Arc<Metrics>,
        reporter: HealthReporter,
    ) -> Arc<Self> {
        let parts = groups
            .into_iter()
            .map(|(name, live, topology)| Part {
                group: Some(name),
                live,
                topology,
            })
            .collect();
        Self::with_parts(parts, metrics, reporter)
    }

    fn with_parts(parts: Vec<Part>, metrics: Arc<Metrics>, reporter: HealthReporter) -> Arc<Self> {
        Arc::new(Self {
            parts,
            metrics,
            reporter,
            draining: AtomicBool::new(false),
            published: tokio::sync::Mutex::new(None),
        })
    }

    fn grouped(&self) -> bool {
        self.parts.iter().any(|p| p.group.is_some())
    }

    fn snapshot(&self) -> Published {
        let draining = self.draining.load(Ordering::Relaxed);
        let groups: Vec<Availability> = self
            .parts
            .iter()
            .map(|p| p.availability(draining))
            .collect();
        let (whole, ready) = if self.grouped() {
            over_groups(&groups)
        } else {
            let whole = groups.first().copied().unwrap_or(Availability {
                read: false,
                write: false,
                draining,
            });
            (whole, whole.ready())
        };
        Published {
            whole,
            ready,
            groups,
        }
    }

    /// The proxy's availability as a whole (over groups: every group's).
    pub fn current(&self) -> Availability {
        self.snapshot().whole
    }

    pub fn readiness(&self) -> Readiness {
        let now = self.snapshot();
        let mut body = now.whole.body_json();
        if self.grouped() {
            if now.ready && !now.whole.read {
                body["state"] = "degraded".into();
            }
            let mut groups = serde_json::Map::new();
            for (part, a) in self.parts.iter().zip(&now.groups) {
                let mut doc = a.body_json();
                doc["metadata"] = metadata_state(&part.topology.status()).into();
                groups.insert(part.group.clone().unwrap_or_default(), doc);
            }
            body["groups"] = groups.into();
        } else if let Some(part) = self.parts.first() {
            body["metadata"] = metadata_state(&part.topology.status()).into();
        }
        Readiness {
            ready: now.ready,
            body: body.to_string(),
        }
    }

    /// Sets the health entries and the gauges to the current state (the
    /// entries only when it changed: each set wakes every Watch stream).
    pub async fn publish(&self) {
        let mut published = self.published.lock().await;
        let now = self.snapshot();
        self.metrics
            .ops
            .set_available(now.whole.read, now.whole.write);
        if published.as_ref() == Some(&now) {
            return;
        }
        if published.is_some() {
            tracing::info!(
                state = now.whole.state(),
                read = now.whole.read,
                write = now.whole.write,
                ready = now.ready,
                "serving state changed"
            );
        }
        let reporter = self.reporter.clone();
        reporter.set_service_status("", serving(now.ready)).await;
        reporter
            .set_service_status(READ_SERVICE, serving(now.whole.read))
            .await;
        reporter
            .set_service_status(WRITE_SERVICE, serving(now.whole.write))
            .await;
        for (part, a) in self.parts.iter().zip(&now.groups) {
            if let Some(group) = &part.group {
                let [read, write] = group_entries(group);
                reporter.set_service_status(&read, serving(a.read)).await;
                reporter.set_service_status(&write, serving(a.write)).await;
            }
        }
        *published = Some(now);
    }

    /// Starts the shutdown drain: every entry NOT_SERVING from now on.
    pub async fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.publish().await;
    }

    /// Ends every health Watch stream (after telling it NOT_SERVING), so
    /// they do not hold the graceful shutdown open for the whole grace period.
    pub async fn end_watches(&self) {
        let mut reporter = self.reporter.clone();
        let mut entries: Vec<String> = ["", READ_SERVICE, WRITE_SERVICE].map(String::from).to_vec();
        for group in self.parts.iter().filter_map(|p| p.group.as_deref()) {
            entries.extend(group_entries(group));
        }
        for service in entries {
            reporter.clear_service_status(&service).await;
        }
    }

    /// Publishes the state every `period` until aborted.
    pub fn spawn_publisher(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.publish().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_down_is_degraded_not_unready() {
        let a = availability(true, false, &[true, false], false);
        assert!(a.ready() && a.read && !a.write);
        assert_eq!(a.state(), "degraded");
        assert_eq!(
            a.body(),
            r#"{"read":"SERVING","state":"degraded","write":"NOT_SERVING"}"#
        );
    }

    #[test]
    fn reads_need_a_snapshot_and_a_read_path() {
        assert_eq!(availability(true, true, &[true], false).state(), "ok");
        // No snapshot yet: nothing to plan searches with.
        assert!(!availability(false, true, &[true], false).ready());
        // Every read-only node down: searches cannot be served even with the writer up.
        let all_ro_down = availability(true, true, &[false, false], false);
        assert!(!all_ro_down.ready() && all_ro_down.write);
        assert_eq!(all_ro_down.state(), "unavailable");
        // Without read-only nodes the writer serves reads.
        assert!(availability(true, true, &[], false).ready());
        assert!(!availability(true, false, &[], false).ready());
    }

    #[test]
    fn groups_are_whole_only_together_and_ready_while_any_reads() {
        let ok = availability(true, true, &[true], false);
        let no_writer = availability(true, false, &[true], false);
        let no_reads = availability(true, true, &[false], false);
        let (whole, ready) = over_groups(&[ok, ok]);
        assert!(whole.read && whole.write && ready);
        let (whole, ready) = over_groups(&[ok, no_writer]);
        assert!(whole.read && !whole.write && ready);
        assert_eq!(whole.state(), "degraded");
        // One group cannot serve searches: spread searches fail, pinned ones elsewhere do not.
        let (whole, ready) = over_groups(&[no_reads, ok]);
        assert!(!whole.read && ready);
        let (_, ready) = over_groups(&[no_reads, no_reads]);
        assert!(!ready);
        let draining = availability(true, true, &[true], true);
        assert!(!over_groups(&[ok, draining]).1);
        assert!(!over_groups(&[]).1);
        assert_eq!(
            group_entries("g2"),
            ["mishards.read.g2", "mishards.write.g2"]
        );
    }

    #[test]
    fn draining_serves_nothing() {
        let a = availability(true, true, &[true], true);
        assert!(!a.read && !a.write && !a.ready());
        assert_eq!(a.state(), "draining");
    }
}
