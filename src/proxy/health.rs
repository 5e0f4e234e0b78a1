//! What the proxy can serve right now, and where it says so: the gRPC
//! health service (`grpc.health.v1.Health` on the Milvus port, entries "",
//! `mishards.read` and `mishards.write`), `/readyz` and the
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

/// Computes the availability and publishes it to the gRPC health service and the gauges.
pub struct Health {
    live: Arc<LiveBackends>,
    topology: Arc<Topology>,
    metrics: Arc<Metrics>,
    reporter: HealthReporter,
    draining: AtomicBool,
    /// What was last published: health watchers hear of changes only.
    published: tokio::sync::Mutex<Option<Availability>>,
}

impl Health {
    pub fn new(
        live: Arc<LiveBackends>,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        reporter: HealthReporter,
    ) -> Arc<Self> {
        Arc::new(Self {
            live,
            topology,
            metrics,
            reporter,
            draining: AtomicBool::new(false),
            published: tokio::sync::Mutex::new(None),
        })
    }

    pub fn current(&self) -> Availability {
        let backends = self.live.load();
        let readonly_up: Vec<bool> = backends.readonly.iter().map(|b| b.is_healthy()).collect();
        availability(
            self.topology.current().is_loaded(),
            backends.writable.is_healthy(),
            &readonly_up,
            self.draining.load(Ordering::Relaxed),
        )
    }

    pub fn readiness(&self) -> Readiness {
        let now = self.current();
        let mut body = now.body_json();
        body["metadata"] = metadata_state(&self.topology.status()).into();
        Readiness {
            ready: now.ready(),
            body: body.to_string(),
        }
    }

    /// Sets the three health entries and the gauges to the current state
    /// (the entries only when it changed: each set wakes every Watch stream).
    pub async fn publish(&self) {
        let mut published = self.published.lock().await;
        let now = self.current();
        self.metrics.ops.set_available(now.read, now.write);
        if *published == Some(now) {
            return;
        }
        if published.is_some() {
            tracing::info!(
                state = now.state(),
                read = now.read,
                write = now.write,
                "serving state changed"
            );
        }
        *published = Some(now);
        self.reporter
            .set_service_status("", serving(now.ready()))
            .await;
        self.reporter
            .set_service_status(READ_SERVICE, serving(now.read))
            .await;
        self.reporter
            .set_service_status(WRITE_SERVICE, serving(now.write))
            .await;
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
        for service in ["", READ_SERVICE, WRITE_SERVICE] {
            reporter.clear_service_status(service).await;
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
    fn draining_serves_nothing() {
        let a = availability(true, true, &[true], true);
        assert!(!a.read && !a.write && !a.ready());
        assert_eq!(a.state(), "draining");
    }
}
