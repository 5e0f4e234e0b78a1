//! When a slow node's part of a search is hedged (`[slow_nodes]`): the
//! delay bounds and the budget of extra calls. Kept apart from `hedge`, which
//! runs the race, so `cluster` can hold the policy without importing the
//! search path that uses it.

use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use crate::config::SlowNodesConfig;

/// How long the hedge budget remembers calls.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Hedges allowed per second whatever the traffic, so a quiet proxy can hedge.
const BUDGET_FLOOR_PER_SECOND: u32 = 1;

/// When and how often to hedge (`[slow_nodes]`).
pub struct HedgePolicy {
    pub(super) fixed: Option<Duration>,
    pub(super) min: Duration,
    pub(super) max: Duration,
    /// `None`: hedging disabled.
    budget: Option<TpsBudget>,
}

impl HedgePolicy {
    pub fn new(config: &SlowNodesConfig) -> Self {
        let budget = (config.hedge_budget_percent > 0).then(|| {
            TpsBudget::new(
                BUDGET_WINDOW,
                BUDGET_FLOOR_PER_SECOND,
                config.hedge_budget_percent as f32 / 100.0,
            )
        });
        Self {
            fixed: (!config.hedge_delay.is_zero()).then_some(config.hedge_delay),
            min: config.hedge_min_delay,
            max: config.hedge_max_delay,
            budget,
        }
    }

    pub(super) fn primary_call(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    pub(super) fn may_hedge(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| b.withdraw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_about_the_configured_share() {
        let policy = HedgePolicy::new(&SlowNodesConfig::default());
        for _ in 0..1000 {
            policy.primary_call();
        }
        let granted = (0..1000).filter(|_| policy.may_hedge()).count();
        // 10% of 1000 calls, plus the floor's reserve (1/s over 10 s).
        assert!((100..=115).contains(&granted), "granted {granted}");
        let off = HedgePolicy::new(&SlowNodesConfig {
            hedge_budget_percent: 0,
            ..SlowNodesConfig::default()
        });
        off.primary_call();
        assert!(!off.may_hedge());
    }
}
