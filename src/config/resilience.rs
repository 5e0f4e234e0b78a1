//! The settings that keep the proxy answering through slow nodes and
//! overload: `[deadlines]` (every request has one), `[slow_nodes]` (hedging
//! and passive ejection of read-only nodes) and `[admission]` (bounded
//! in-flight searches, queued work and per-backend calls), with their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[deadlines]`: the deadline of a request whose client sent no `grpc-timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlinesConfig {
    /// Search, SearchByID, SearchInFiles (greater than 0).
    #[serde(with = "humantime_serde")]
    pub search: Duration,
    /// Every other RPC, writes included (greater than 0). Long, because
    /// Milvus' CreateIndex, Flush and Compact block until done; a write past
    /// it is answered DEADLINE_EXCEEDED (outcome unknown), never acknowledged.
    #[serde(with = "humantime_serde")]
    pub other: Duration,
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        Self {
            search: Duration::from_secs(30),
            other: Duration::from_secs(600),
        }
    }
}

/// `[slow_nodes]`: hedged search parts and passive ejection of read-only nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowNodesConfig {
    /// Fixed hedge delay; "0s" derives it from each node's recent latency
    /// (p95 of its last searches), clamped to `hedge_min_delay..=hedge_max_delay`.
    #[serde(with = "humantime_serde")]
    pub hedge_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub hedge_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub hedge_max_delay: Duration,
    /// Hedge calls allowed, in percent of search calls over the last 10 s
    /// (plus a floor of 1 per second); 0 disables hedging.
    pub hedge_budget_percent: u32,
    /// Consecutive failed or timed-out calls (calls still unanswered past
    /// their hedge delay count at most once per 300 ms) that eject a
    /// read-only node; 0 disables passive ejection.
    pub eject_after_failures: u32,
    /// How long an ejected node stays out before probes may bring it back;
    /// doubles on each ejection in a row up to `eject_max_backoff`.
    #[serde(with = "humantime_serde")]
    pub eject_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub eject_max_backoff: Duration,
}

impl Default for SlowNodesConfig {
    fn default() -> Self {
        Self {
            hedge_delay: Duration::ZERO,
            hedge_min_delay: Duration::from_millis(100),
            hedge_max_delay: Duration::from_secs(1),
            hedge_budget_percent: 10,
            eject_after_failures: 3,
            eject_backoff: Duration::from_secs(5),
            eject_max_backoff: Duration::from_secs(60),
        }
    }
}

/// `[admission]`: how much search work the proxy takes on before it answers
/// RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Searches being served at once (at least 1).
    pub max_inflight_searches: u32,
    /// Sum of nq x topk over the searches being served (at least 1).
    pub max_queued_work: u64,
    /// Calls in flight to one backend node (at least 1); more wait for a
    /// slot within their deadline.
    pub max_inflight_per_backend: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_inflight_searches: 64,
            max_queued_work: 4_000_000,
            max_inflight_per_backend: 32,
        }
    }
}

/// Problems in the three sections, as `(key, message)`.
pub(super) fn check(
    deadlines: &DeadlinesConfig,
    slow: &SlowNodesConfig,
    admission: &AdmissionConfig,
) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    let positive = "must be greater than 0".to_string();
    if deadlines.search.is_zero() {
        errors.push(("deadlines.search", positive.clone()));
    }
    if deadlines.other.is_zero() {
        errors.push(("deadlines.other", positive.clone()));
    }
    if slow.hedge_min_delay > slow.hedge_max_delay {
        errors.push((
            "slow_nodes.hedge_min_delay",
            "must not exceed slow_nodes.hedge_max_delay".to_string(),
        ));
    }
    if slow.hedge_budget_percent > 100 {
        errors.push((
            "slow_nodes.hedge_budget_percent",
            "must be within 0..=100".to_string(),
        ));
    }
    if slow.eject_after_failures > 0 && slow.eject_backoff.is_zero() {
        errors.push(("slow_nodes.eject_backoff", positive.clone()));
    }
    if slow.eject_backoff > slow.eject_max_backoff {
        errors.push((
            "slow_nodes.eject_backoff",
            "must not exceed slow_nodes.eject_max_backoff".to_string(),
        ));
    }
    let at_least_one = "must be at least 1".to_string();
    if admission.max_inflight_searches == 0 {
        errors.push(("admission.max_inflight_searches", at_least_one.clone()));
    }
    if admission.max_queued_work == 0 {
        errors.push(("admission.max_queued_work", at_least_one.clone()));
    }
    if admission.max_inflight_per_backend == 0 {
        errors.push(("admission.max_inflight_per_backend", at_least_one));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_named() {
        let (d, s, a) = (
            DeadlinesConfig::default(),
            SlowNodesConfig::default(),
            AdmissionConfig::default(),
        );
        assert!(check(&d, &s, &a).is_empty());
        let d = DeadlinesConfig {
            search: Duration::ZERO,
            ..d
        };
        let s = SlowNodesConfig {
            hedge_min_delay: Duration::from_secs(5),
            hedge_budget_percent: 101,
            ..s
        };
        let a = AdmissionConfig {
            max_queued_work: 0,
            ..a
        };
        let keys: Vec<&str> = check(&d, &s, &a).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "deadlines.search",
                "slow_nodes.hedge_min_delay",
                "slow_nodes.hedge_budget_percent",
                "admission.max_queued_work"
            ]
        );
    }
}
