//! Warm-up of new segment files, off the search path. When a topology
//! snapshot shows files the previous one did not (a flush, a merge, an index
//! build), the read-only node that owns each is sent one small
//! `SearchInFiles` over just that file (one probe vector, top-1), so it loads
//! the file before a user search needs it: the first search of a file
//! otherwise pays for loading it. `SearchInFiles` is Milvus 1.x's own RPC,
//! so this works on real nodes too. Best effort: bounded in concurrency and
//! per snapshot, never retried; a failure only costs the later search the
//! load it would have paid anyway. A Flush through the proxy may wait (a
//! bounded time) for the files it made to be warm (`Warmup::settled`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::backend::live::LiveBackends;
use crate::telemetry::Metrics;
use crate::topology::{CollectionView, Snapshot, Topology};
use crate::types::{EngineType, MetricType};
use crate::wire::{KeyValuePair, RowRecord, SearchInFilesParam, SearchParam};

/// Warm-up searches in flight at once (each makes a node load one file).
const CONCURRENCY: usize = 2;
/// New files warmed per snapshot at most; beyond, the first searches load them.
const MAX_PER_SNAPSHOT: usize = 256;
/// Longest one warm-up search may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One file to warm, with its collection (for the probe's shape).
#[derive(Clone, Debug)]
pub struct WarmTarget {
    pub view: Arc<CollectionView>,
    pub file_id: i64,
}

/// The files of `snap` whose ids are not in `known`, ascending by id, at
/// most `limit`; and every file id of `snap` (the next `known`).
pub fn new_files(
    snap: &Snapshot,
    known: &HashSet<i64>,
    limit: usize,
) -> (Vec<WarmTarget>, HashSet<i64>) {
    let mut targets = Vec::new();
    let mut all = HashSet::with_capacity(known.len());
    for view in snap.collections.values() {
        for f in &view.files {
            all.insert(f.id);
            if !known.contains(&f.id) {
                targets.push(WarmTarget {
                    view: view.clone(),
                    file_id: f.id,
                });
            }
        }
    }
    targets.sort_by_key(|t| t.file_id);
    targets.truncate(limit);
    (targets, all)
}

/// The warm-up search of one file: one all-zero probe of the collection's
/// shape, top-1, with the smallest search parameters its index type accepts.
pub fn probe(target: &WarmTarget) -> SearchInFilesParam {
    let view = &target.view;
    let dim = usize::try_from(view.root.dimension).unwrap_or(0);
    let record = if view.metric.is_binary() {
        RowRecord {
            float_data: Vec::new(),
            binary_data: vec![0u8; dim.div_ceil(8)].into(),
        }
    } else {
        RowRecord {
            float_data: vec![0.0; dim],
            binary_data: Default::default(),
        }
    };
    SearchInFilesParam {
        file_id_array: vec![target.file_id.to_string()],
        search_param: Some(SearchParam {
            collection_name: view.name().to_string(),
            partition_tag_array: Vec::new(),
            query_record_array: vec![record],
            topk: 1,
            extra_params: vec![KeyValuePair {
                key: "params".into(),
                value: probe_params(view.engine, view.metric).into(),
            }],
        }),
    }
}

/// The search parameters `validate::search_params` requires of `engine`,
/// at their cheapest.
fn probe_params(engine: EngineType, _metric: MetricType) -> &'static str {
    match engine {
        EngineType::IvfFlat
        | EngineType::IvfSq8
        | EngineType::IvfSq8h
        | EngineType::BinIvfFlat
        | EngineType::IvfPq => r#"{"nprobe": 1}"#,
        EngineType::Rnsg => r#"{"search_length": 10}"#,
        EngineType::Hnsw => r#"{"ef": 16}"#,
        EngineType::Annoy => r#"{"search_k": -1}"#,
        EngineType::Flat | EngineType::BinFlat | EngineType::SptagKdt | EngineType::SptagBkt => {
            "{}"
        }
    }
}

/// The warm-up task's progress, for a Flush that waits on it.
pub struct Warmup {
    /// Sequence of the last snapshot whose new files were warmed.
    settled: watch::Receiver<u64>,
    wait: Duration,
}

impl Warmup {
    /// Watches `topology` and warms the new files of each snapshot on the
    /// read-only nodes `live` names (when `enabled`); the handle ends with
    /// the topology.
    pub fn spawn(
        topology: Arc<Topology>,
        live: Arc<LiveBackends>,
        metrics: Arc<Metrics>,
        enabled: bool,
        wait: Duration,
    ) -> (Arc<Warmup>, tokio::task::JoinHandle<()>) {
        let mut loads = topology.subscribe();
        let current = topology.current();
        let (settled_tx, settled) = watch::channel(current.sequence());
        let task = tokio::spawn(async move {
            let (_, mut known) = new_files(&current, &HashSet::new(), 0);
            let mut loaded_before = current.is_loaded();
            while loads.changed().await.is_ok() {
                let snap = loads.borrow_and_update().clone();
                let (targets, all) = new_files(&snap, &known, MAX_PER_SNAPSHOT);
                known = all;
                // The first snapshot's files are not new: the nodes served
                // them before this proxy started.
                if enabled && loaded_before && !targets.is_empty() {
                    warm(&targets, &live, &metrics).await;
                }
                loaded_before |= snap.is_loaded();
                settled_tx.send_replace(snap.sequence());
            }
        });
        let warmup = Arc::new(Warmup {
            settled,
            wait: if enabled { wait } else { Duration::ZERO },
        });
        (warmup, task)
    }

    /// A warm-up that never runs (for handlers built without a topology task).
    pub fn disabled() -> Arc<Warmup> {
        let (_, settled) = watch::channel(0);
        Arc::new(Warmup {
            settled,
            wait: Duration::ZERO,
        })
    }

    /// Waits until the new files of snapshot `sequence` (or a later one)
    /// are warm, at most the configured wait (and the request's deadline:
    /// the caller's future is dropped then).
    pub async fn settled(&self, sequence: u64) {
        if self.wait.is_zero() {
            return;
        }
        let mut settled = self.settled.clone();
        let _ = tokio::time::timeout(self.wait, settled.wait_for(|s| *s >= sequence)).await;
    }
}

/// One warm-up search per target on its file's owner (the first healthy
/// node the ring names), `CONCURRENCY` at a time.
async fn warm(targets: &[WarmTarget], live: &LiveBackends, metrics: &Metrics) {
    let backends = live.load();
    futures::stream::iter(targets)
        .for_each_concurrent(CONCURRENCY, |target| {
            let backends = backends.clone();
            async move {
                let owner = backends
                    .ring
                    .owner_where(target.file_id, |n| backends.is_healthy(n));
                let Some(node) = owner.and_then(|n| backends.get(n)) else {
                    metrics.warmup("no_node");
                    return;
                };
                let request = probe(target);
                let result = node
                    .call("SearchInFiles", Some(CALL_TIMEOUT), |mut c| async move {
                        c.search_in_files(request).await
                    })
                    .await;
                let outcome = match result {
                    Ok(reply) if reply.status.as_ref().is_none_or(|s| s.error_code == 0) => "ok",
                    Ok(reply) => {
                        tracing::debug!(file = target.file_id, backend = %node.addr,
                            reason = reply.status.map(|s| s.reason).unwrap_or_default(),
                            "warm-up search refused");
                        "refused"
                    }
                    Err(e) => {
                        tracing::debug!(file = target.file_id, backend = %node.addr, error = %e, "warm-up search failed");
                        "failed"
                    }
                };
                metrics.warmup(outcome);
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::{file, table};

    fn snapshot(files: &[(i64, &str)]) -> Snapshot {
        let mut binary = table(1, "bin", "", "");
        binary.metric_type = 3; // HAMMING
        binary.dimension = 16;
        let mut ivf = table(2, "ivf", "", "");
        ivf.engine_type = EngineType::IvfSq8 as i32;
        let rows = files.iter().map(|(id, t)| file(*id, t, 10)).collect();
        Snapshot::build(vec![table(0, "c", "", ""), binary, ivf], rows)
    }

    #[test]
    fn only_files_not_seen_before_are_new() {
        let first = snapshot(&[(1, "c"), (2, "c")]);
        let (targets, known) = new_files(&first, &HashSet::new(), 10);
        assert_eq!(targets.len(), 2);
        // A flush adds 3, a merge replaced 1 and 2 by 4.
        let next = snapshot(&[(3, "c"), (4, "c")]);
        let (targets, known) = new_files(&next, &known, 10);
        let ids: Vec<i64> = targets.iter().map(|t| t.file_id).collect();
        assert_eq!(ids, vec![3, 4]);
        let (targets, _) = new_files(&next, &known, 10);
        assert!(targets.is_empty(), "nothing new the second time");
        let (targets, _) = new_files(&snapshot(&[(5, "c"), (6, "c")]), &known, 1);
        assert_eq!(targets.len(), 1, "bounded per snapshot");
    }

    #[test]
    fn probes_match_the_collection_shape_and_index() {
        let snap = snapshot(&[(1, "c"), (2, "bin"), (3, "ivf")]);
        let (targets, _) = new_files(&snap, &HashSet::new(), 10);
        let probes: Vec<SearchInFilesParam> = targets.iter().map(probe).collect();
        let search = |i: usize| probes[i].search_param.clone().unwrap();
        assert_eq!(probes[0].file_id_array, vec!["1".to_string()]);
        assert_eq!(search(0).query_record_array[0].float_data.len(), 4);
        assert_eq!(search(1).query_record_array[0].binary_data.len(), 2);
        assert!(search(1).query_record_array[0].float_data.is_empty());
        assert_eq!(search(2).extra_params[0].value, r#"{"nprobe": 1}"#);
        // Every probe passes the proxy's own checks of a search.
        for (i, t) in targets.iter().enumerate() {
            let s = search(i);
            let params = crate::validate::extra_params(&s.extra_params).unwrap();
            crate::validate::search_params(t.view.engine, &params, s.topk).unwrap();
            crate::validate::vector_shapes(
                &s.query_record_array,
                t.view.metric,
                t.view.root.dimension,
            )
            .unwrap();
        }
    }
}
