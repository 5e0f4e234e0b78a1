//! `[coalesce]`: query coalescing, off by default. While a `SearchInFiles`
//! to a node is in flight, other searches of the same collection, files,
//! topk, params and partitions to that node wait and then go together as one
//! call with their queries stacked (up to `max_batch_nq` queries), so a real
//! Milvus 1.x read-only node reads its metadata and scans each file once for
//! all of them.

use serde::{Deserialize, Serialize};

/// Most queries one stacked call may carry (Milvus' own nq limit per search).
const MAX_BATCH_NQ_LIMIT: usize = 16_384;

/// `[coalesce]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoalesceConfig {
    /// Stack concurrent searches into shared node calls.
    pub enabled: bool,
    /// Queries of one stacked call (1..=16384); a search with more goes alone.
    pub max_batch_nq: usize,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_batch_nq: 256,
        }
    }
}

/// Problems in `[coalesce]`, as `(key, message)`.
pub(super) fn check(config: &CoalesceConfig) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    if !(1..=MAX_BATCH_NQ_LIMIT).contains(&config.max_batch_nq) {
        errors.push((
            "coalesce.max_batch_nq",
            format!("must be between 1 and {MAX_BATCH_NQ_LIMIT}"),
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_the_batch_bounds_are_checked() {
        let config = CoalesceConfig::default();
        assert!(!config.enabled);
        assert!(check(&config).is_empty());
        for bad in [0, MAX_BATCH_NQ_LIMIT + 1] {
            let errors = check(&CoalesceConfig {
                max_batch_nq: bad,
                ..config.clone()
            });
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].0, "coalesce.max_batch_nq");
        }
    }
}
