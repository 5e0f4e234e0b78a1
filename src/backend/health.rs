//! What the proxy has learnt about one read-only node from its own calls:
//! passive ejection (N consecutive failed, timed-out or out-hedged calls take
//! the node out for a back-off period that doubles on each ejection in a
//! row; after it, a successful probe brings the node back) and a sliding
//! window of its recent search latencies, whose p95 sets the hedge delay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Search latencies remembered per node.
pub const LATENCY_WINDOW: usize = 128;

/// The ejection rules (`[slow_nodes]`).
#[derive(Clone, Copy, Debug)]
pub struct EjectionPolicy {
    /// 0 disables ejection.
    pub after_failures: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// A node's recent failures and ejection state.
#[derive(Debug, Default)]
pub struct Ejection {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    ejections_in_row: u32,
    last_slow_call: Option<Instant>,
}

/// Calls still unanswered past their hedge delay count at most once per this
/// period: one hiccup delays every call in flight to a node at once, and that
/// is one piece of evidence of slowness, not several.
pub const SLOW_EVIDENCE_GAP: Duration = Duration::from_millis(300);

/// What a call outcome did to the ejection state.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Ejected(Duration),
    Restored,
}

impl Ejection {
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// A failed, timed-out or out-hedged call.
    pub fn failure(&mut self, policy: &EjectionPolicy, now: Instant) -> Change {
        if policy.after_failures == 0 || self.is_ejected() {
            return Change::None;
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures < policy.after_failures {
            return Change::None;
        }
        let factor = 1u32 << self.ejections_in_row.min(16);
        let period = policy
            .backoff
            .saturating_mul(factor)
            .min(policy.max_backoff);
        self.ejections_in_row = self.ejections_in_row.saturating_add(1);
        self.consecutive_failures = 0;
        self.ejected_until = Some(now + period);
        Change::Ejected(period)
    }

    /// A call still unanswered past its hedge delay: a failure, unless
    /// another one was counted less than [`SLOW_EVIDENCE_GAP`] ago.
    pub fn slow_call(&mut self, policy: &EjectionPolicy, now: Instant) -> Change {
        if self
            .last_slow_call
            .is_some_and(|last| now.saturating_duration_since(last) < SLOW_EVIDENCE_GAP)
        {
            return Change::None;
        }
        self.last_slow_call = Some(now);
        self.failure(policy, now)
    }

    /// A call that answered in time (and, when hedged, first).
    pub fn success(&mut self) {
        self.consecutive_failures = 0;
        if !self.is_ejected() {
            self.ejections_in_row = 0;
        }
    }

    /// A probe answered: an ejected node whose back-off is over comes back.
    pub fn probe_ok(&mut self, now: Instant) -> Change {
        match self.ejected_until {
            Some(until) if until <= now => {
                self.ejected_until = None;
                self.consecutive_failures = 0;
                Change::Restored
            }
            _ => Change::None,
        }
    }
}

/// Samples recorded between two computations of the window's p95.
const P95_REFRESH_EVERY: u32 = 16;

/// The last [`LATENCY_WINDOW`] search latencies of a node, and their p95.
///
/// Every search part asks for its node's p95 (the hedge delay) and records
/// one sample, so the p95 is kept and recomputed every
/// [`P95_REFRESH_EVERY`] samples rather than per call: a sort of the 128
/// samples per part showed in the proxy's profile (1.7% of its CPU), and a
/// hedge delay 16 samples stale is as good a guess of "slow".
#[derive(Debug, Default)]
pub struct LatencyWindow {
    samples: VecDeque<Duration>,
    p95: Option<Duration>,
    since_p95: u32,
}

impl LatencyWindow {
    pub fn record(&mut self, latency: Duration) {
        if self.samples.len() == LATENCY_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(latency);
        self.since_p95 += 1;
        if self.p95.is_none() || self.since_p95 >= P95_REFRESH_EVERY {
            self.p95 = p95_of(&self.samples);
            self.since_p95 = 0;
        }
    }

    /// The 95th percentile as of at most [`P95_REFRESH_EVERY`] samples ago,
    /// `None` before any sample.
    pub fn p95(&self) -> Option<Duration> {
        self.p95
    }
}

/// The 95th percentile (nearest rank) of `samples`.
fn p95_of(samples: &VecDeque<Duration>) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut values: Vec<Duration> = samples.iter().copied().collect();
    let rank = (values.len() * 95).div_ceil(100).saturating_sub(1);
    let (_, p95, _) = values.select_nth_unstable(rank);
    Some(*p95)
}

/// The hedge delay for a node: the fixed one when configured, else its p95
/// latency (the floor before any sample), clamped to `[min, max]`.
pub fn hedge_delay(
    fixed: Option<Duration>,
    p95: Option<Duration>,
    min: Duration,
    max: Duration,
) -> Duration {
    fixed.unwrap_or_else(|| p95.unwrap_or(min).clamp(min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EjectionPolicy {
        EjectionPolicy {
            after_failures: 3,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(12),
        }
    }

    #[test]
    fn consecutive_failures_eject_with_a_doubling_backoff() {
        let (p, t0) = (policy(), Instant::now());
        let mut e = Ejection::default();
        assert_eq!(e.failure(&p, t0), Change::None);
        e.success();
        assert_eq!(e.failure(&p, t0), Change::None);
        assert_eq!(e.failure(&p, t0), Change::None);
        assert_eq!(e.failure(&p, t0), Change::Ejected(Duration::from_secs(5)));
        assert!(e.is_ejected());
        assert_eq!(e.probe_ok(t0 + Duration::from_secs(4)), Change::None);
        assert_eq!(e.probe_ok(t0 + Duration::from_secs(5)), Change::Restored);
        for _ in 0..2 {
            e.failure(&p, t0);
        }
        assert_eq!(e.failure(&p, t0), Change::Ejected(Duration::from_secs(10)));
        e.probe_ok(t0 + Duration::from_secs(10));
        for _ in 0..2 {
            e.failure(&p, t0);
        }
        assert_eq!(
            e.failure(&p, t0),
            Change::Ejected(Duration::from_secs(12)),
            "capped"
        );
        e.probe_ok(t0 + Duration::from_secs(12));
        e.success();
        for _ in 0..2 {
            e.failure(&p, t0);
        }
        assert_eq!(
            e.failure(&p, t0),
            Change::Ejected(Duration::from_secs(5)),
            "a success after the return resets the back-off"
        );
    }

    #[test]
    fn slow_calls_count_once_per_gap() {
        let (p, t0) = (policy(), Instant::now());
        let mut e = Ejection::default();
        for _ in 0..10 {
            assert_eq!(e.slow_call(&p, t0), Change::None, "one hiccup");
        }
        assert_eq!(e.slow_call(&p, t0 + SLOW_EVIDENCE_GAP), Change::None);
        assert_eq!(
            e.slow_call(&p, t0 + SLOW_EVIDENCE_GAP * 2),
            Change::Ejected(Duration::from_secs(5)),
            "slow for two seconds on end"
        );
    }

    #[test]
    fn zero_failures_disables_ejection() {
        let p = EjectionPolicy {
            after_failures: 0,
            ..policy()
        };
        let mut e = Ejection::default();
        for _ in 0..10 {
            assert_eq!(e.failure(&p, Instant::now()), Change::None);
        }
    }

    #[test]
    fn p95_of_the_window() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.p95(), None);
        for ms in 1..=100 {
            w.record(Duration::from_millis(ms));
        }
        // Computed at the 1st sample, then every 16th: last at the 97th (93 ms).
        assert_eq!(w.p95(), Some(Duration::from_millis(93)));
        assert_eq!(p95_of(&w.samples), Some(Duration::from_millis(95)));
        for _ in 0..LATENCY_WINDOW {
            w.record(Duration::from_millis(7));
        }
        assert_eq!(w.p95(), Some(Duration::from_millis(7)));
    }

    #[test]
    fn the_first_sample_gives_a_p95_at_once() {
        let mut w = LatencyWindow::default();
        w.record(Duration::from_millis(3));
        assert_eq!(w.p95(), Some(Duration::from_millis(3)));
    }

    #[test]
    fn hedge_delay_is_fixed_or_clamped_p95() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let ms = Duration::from_millis;
        assert_eq!(hedge_delay(Some(ms(30)), Some(ms(500)), min, max), ms(30));
        assert_eq!(hedge_delay(None, None, min, max), min);
        assert_eq!(hedge_delay(None, Some(ms(5)), min, max), min);
        assert_eq!(hedge_delay(None, Some(ms(400)), min, max), ms(400));
        assert_eq!(hedge_delay(None, Some(ms(9000)), min, max), max);
    }
}
