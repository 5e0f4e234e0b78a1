//! Per-backend call statistics for the admin view (`conn_stats`): calls in
//! flight, calls and errors since start, and latency quantiles over a small
//! sliding window of the most recent calls. Prometheus histograms hold the
//! long-term picture; this is the "what is this node doing now" snapshot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How many recent call latencies the quantiles are computed over.
pub const LATENCY_WINDOW: usize = 256;

/// Counters of one backend's calls.
#[derive(Debug, Default)]
pub struct CallStats {
    inflight: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    recent_seconds: Mutex<VecDeque<f64>>,
}

/// A point-in-time copy of [`CallStats`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallStatsView {
    pub inflight: u64,
    pub calls: u64,
    pub errors: u64,
    /// Median latency over the window, in milliseconds (none before the first call).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Counts a call as in flight until dropped.
#[must_use = "the call counts as in flight only while the guard lives"]
pub struct InflightCall<'a>(&'a CallStats);

impl Drop for InflightCall<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CallStats {
    /// Marks a call as started; it stays in flight until the guard drops.
    pub fn begin(&self) -> InflightCall<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightCall(self)
    }

    /// Records a finished call.
    pub fn finish(&self, ok: bool, seconds: f64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut recent) = self.recent_seconds.lock() {
            if recent.len() == LATENCY_WINDOW {
                recent.pop_front();
            }
            recent.push_back(seconds);
        }
    }

    pub fn view(&self) -> CallStatsView {
        let mut recent: Vec<f64> = self
            .recent_seconds
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        recent.sort_by(f64::total_cmp);
        CallStatsView {
            inflight: self.inflight.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p50_ms: quantile(&recent, 0.50).map(|s| s * 1e3),
            p99_ms: quantile(&recent, 0.99).map(|s| s * 1e3),
        }
    }
}

/// The nearest-rank `q` quantile of ascending `sorted` values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_calls_errors_and_inflight() {
        let stats = CallStats::default();
        let a = stats.begin();
        let b = stats.begin();
        assert_eq!(stats.view().inflight, 2);
        drop(a);
        stats.finish(true, 0.010);
        drop(b);
        stats.finish(false, 0.030);
        let view = stats.view();
        assert_eq!((view.inflight, view.calls, view.errors), (0, 2, 1));
        assert_eq!(view.p50_ms, Some(10.0));
        assert_eq!(view.p99_ms, Some(30.0));
    }

    #[test]
    fn quantiles_cover_only_the_recent_window() {
        let stats = CallStats::default();
        for _ in 0..LATENCY_WINDOW {
            stats.finish(true, 5.0);
        }
        for i in 1..=100 {
            stats.finish(true, i as f64 / 1000.0);
        }
        let view = stats.view();
        assert_eq!(view.calls, LATENCY_WINDOW as u64 + 100);
        // 156 of the 256 window samples are still 5 s: the median is 5 s.
        assert_eq!(view.p50_ms, Some(5000.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
