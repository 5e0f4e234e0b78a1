//! One read-only node's share of a search, kept from stalling on a slow or
//! hung node. The part goes to its node; if no answer comes within the
//! node's hedge delay (p95 of its recent searches, clamped, or a fixed
//! value), the same files are also sent to the next healthy nodes the ring
//! names for them (a hedge, paid from a budget of about 10% extra calls:
//! tower's `TpsBudget`), or moved there without spending budget once the node
//! is known to be down or ejected. The first complete answer wins and the
//! other call is dropped (cancelled). Every read-only node reads every file
//! (shared storage), so the answer is the same whichever node gives it. A
//! node still silent past its hedge delay counts a failure towards its
//! ejection (at most one per 300 ms: see `backend::health::SLOW_EVIDENCE_GAP`).

use std::collections::BTreeMap;

use futures::future::join_all;

use super::cluster::Cluster;
use super::placements::{to_parts, Part};
use super::route;
use super::search::{EncodedSearch, NodeFailure};
use crate::backend::health::hedge_delay;
use crate::merge::EncodedHits;
use crate::status::{MilvusError, MilvusResult};
use crate::wire::ErrorCode;

/// Why the race with the primary call started.
enum Second {
    Hedge,
    NodeDown,
}

impl Cluster {
    /// One node's share of a search (`part`): every file answered once, by
    /// that node or by the nodes its files move or are hedged to.
    pub(super) async fn search_part(
        &self,
        part: &Part,
        search: &EncodedSearch,
    ) -> MilvusResult<Vec<EncodedHits>> {
        let (node, ids) = (part.node.as_str(), &part.ids[..]);
        self.hedging.primary_call();
        let primary = self.search_node(node, &part.encoded_ids, search);
        tokio::pin!(primary);
        let backend = self.backends.get(node);
        let slow_after = hedge_delay(
            self.hedging.fixed,
            backend.and_then(|b| b.search_p95()),
            self.hedging.min,
            self.hedging.max,
        );
        let mut wait = slow_after;
        let second = loop {
            tokio::select! {
                result = &mut primary => {
                    return self.after_primary(node, ids, search, result).await;
                }
                () = tokio::time::sleep(wait) => {}
            }
            // Still no answer past the delay: slowness evidence (counted at
            // most once per SLOW_EVIDENCE_GAP), which may eject the node.
            if let Some(b) = backend {
                b.record_slow();
            }
            if !backend.is_some_and(|b| b.is_healthy()) {
                break Second::NodeDown;
            }
            if self.hedging.may_hedge() {
                break Second::Hedge;
            }
            // Out of budget: keep waiting, and look again soon.
            wait = self.hedging.min;
        };
        if matches!(second, Second::Hedge) {
            self.metrics.resilience.hedged(node);
            tracing::debug!(backend = %node, delay = ?slow_after, "hedging a slow search part");
        }
        let why = match second {
            Second::Hedge => format!("no answer within {slow_after:?}, hedged"),
            Second::NodeDown => format!("no answer within {slow_after:?} and marked down"),
        };
        let others = self.fail_over(ids, search, BTreeMap::from([(node.to_string(), why)]));
        tokio::pin!(others);
        tokio::select! {
            result = &mut primary => match result {
                Ok(hits) => Ok(vec![hits]),
                Err(NodeFailure::Milvus(e)) => Err(e),
                Err(NodeFailure::Unreachable(_)) => others.await,
            },
            result = &mut others => match result {
                Ok(hits) => Ok(hits),
                Err(e) => match primary.await {
                    Ok(hits) => Ok(vec![hits]),
                    Err(NodeFailure::Milvus(e)) => Err(e),
                    Err(NodeFailure::Unreachable(_)) => Err(e),
                },
            },
        }
    }

    async fn after_primary(
        &self,
        node: &str,
        ids: &[i64],
        search: &EncodedSearch,
        result: Result<EncodedHits, NodeFailure>,
    ) -> MilvusResult<Vec<EncodedHits>> {
        match result {
            Ok(hits) => Ok(vec![hits]),
            Err(NodeFailure::Milvus(e)) => Err(e),
            Err(NodeFailure::Unreachable(e)) => {
                tracing::warn!(backend = %node, error = %e.reason, "read-only node failed; moving its files");
                self.fail_over(ids, search, BTreeMap::from([(node.to_string(), e.reason)]))
                    .await
            }
        }
    }

    /// Searches `ids` on the healthy nodes the ring names for them, leaving
    /// out `excluded` (node -> why); a node that cannot be reached is left
    /// out in turn and its files move on. Bounded by the request's deadline.
    /// When no node is left, the error says why each one was left out.
    async fn fail_over(
        &self,
        ids: &[i64],
        search: &EncodedSearch,
        mut excluded: BTreeMap<String, String>,
    ) -> MilvusResult<Vec<EncodedHits>> {
        let mut parts = Vec::new();
        let mut rows: Vec<(i64, i64)> = ids.iter().map(|id| (*id, 0)).collect();
        while !rows.is_empty() {
            if crate::deadline::passed() {
                // The failure was the deadline itself: no node is to blame.
                return crate::deadline::yield_to_layer().await;
            }
            let healthy =
                |addr: &str| !excluded.contains_key(addr) && self.backends.is_healthy(addr);
            let plan = route::plan(&self.backends.ring, &rows, healthy).map_err(|e| {
                MilvusError::new(
                    ErrorCode::ConnectFailed,
                    format!(
                        "search failed: {} (unreachable: {})",
                        e.reason,
                        listed(&excluded)
                    ),
                )
            })?;
            let sends = to_parts(&plan);
            let calls = sends
                .iter()
                .map(|part| self.search_node(&part.node, &part.encoded_ids, search));
            let results = join_all(calls).await;
            rows.clear();
            for ((node, ids), result) in plan.assignments.iter().zip(results) {
                match result {
                    Ok(hits) => parts.push(hits),
                    Err(NodeFailure::Milvus(e)) => return Err(e),
                    Err(NodeFailure::Unreachable(e)) => {
                        tracing::warn!(backend = %node, error = %e.reason, "read-only node failed; moving its files");
                        excluded.insert(node.clone(), e.reason);
                        rows.extend(ids.iter().map(|id| (*id, 0)));
                    }
                }
            }
        }
        Ok(parts)
    }
}

/// "a:1 [why]; b:2 [why]", in address order.
fn listed(excluded: &BTreeMap<String, String>) -> String {
    excluded
        .iter()
        .map(|(node, why)| format!("{node} [{why}]"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_nodes_are_listed_in_order_with_why() {
        let set = BTreeMap::from([
            ("b:2".to_string(), "refused".to_string()),
            ("a:1".to_string(), "TLS handshake failed".to_string()),
        ]);
        assert_eq!(listed(&set), "a:1 [TLS handshake failed]; b:2 [refused]");
    }
}
