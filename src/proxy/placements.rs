//! Each collection's file placement, computed once per topology snapshot
//! and node list (`ring::Placement`) and reused by every search until one of
//! them changes, so a search costs the proxy about the same whether the
//! collection has ten files or ten thousand. The encoded `file_id_array` of
//! each node's `SearchInFiles` is kept with it for the same reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::route::{self, RoutePlan};
use crate::ring::{Placement, Ring};
use crate::status::MilvusResult;
use crate::topology::CollectionView;

/// Placements kept at most (one per collection and partition-tag list);
/// past it the cache starts over, which only costs a recomputation.
const MAX_ENTRIES: usize = 1024;

/// One node's share of a search: its files, and their ids as the encoded
/// `file_id_array` field of a `SearchInFilesParam`.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub node: String,
    pub ids: Arc<[i64]>,
    pub encoded_ids: Bytes,
}

impl Part {
    pub fn new(node: String, ids: &[i64]) -> Part {
        Part {
            encoded_ids: encode_file_ids(ids),
            ids: ids.into(),
            node,
        }
    }
}

/// A search's plan as parts ready to send, and its size.
#[derive(Clone, Debug)]
pub struct PlannedParts {
    pub parts: Arc<[Part]>,
    /// Distinct files searched.
    pub files: usize,
    /// Rows in those files (what one big Milvus would search).
    pub rows: i64,
}

struct Entry {
    view: Arc<CollectionView>,
    placement: Arc<Placement>,
    rows: i64,
    /// The parts when every node is healthy (the usual case), encoded once.
    all_healthy: Option<Arc<[Part]>>,
}

/// See the module documentation.
#[derive(Default)]
pub struct Placements {
    entries: Mutex<HashMap<(String, Vec<String>), Entry>>,
}

impl Placements {
    /// The parts of a search of `view` restricted by partition `tags`, on the
    /// nodes of `ring` where `healthy[i]` tells whether `ring.nodes()[i]` may
    /// take files. Same answer and errors as `route::select_files` followed
    /// by `route::plan`.
    pub fn plan(
        &self,
        view: &Arc<CollectionView>,
        tags: &[String],
        ring: &Ring,
        healthy: &[bool],
    ) -> MilvusResult<PlannedParts> {
        let key = (view.name().to_string(), tags.to_vec());
        let cached = self.lookup(&key, view, ring, healthy);
        let (placement, rows, all_healthy) = match cached {
            Some(hit) => hit,
            None => {
                let files = route::select_files(view, tags)?;
                let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
                let placement = Arc::new(Placement::new(ring, &ids));
                let rows = route::total_rows(&files);
                self.store(key, view, placement.clone(), rows);
                (placement, rows, None)
            }
        };
        if let Some(parts) = all_healthy {
            return Ok(PlannedParts {
                parts,
                files: placement.files(),
                rows,
            });
        }
        let assignments = placement.assign(ring, healthy).unwrap_or_else(|| {
            // Not placeable by index (a ring too wide for it): hash each file.
            let names = ring.nodes();
            crate::ring::place(ring, placement.ids(), |name| {
                names
                    .iter()
                    .position(|n| n == name)
                    .is_some_and(|i| healthy.get(i).copied().unwrap_or(false))
            })
        });
        let plan = route::checked(ring, assignments, placement.files(), rows)?;
        let parts: Arc<[Part]> = to_parts(&plan);
        if healthy.iter().all(|h| *h) && healthy.len() == ring.nodes().len() {
            self.remember_all_healthy(view, tags, &placement, parts.clone());
        }
        Ok(PlannedParts {
            parts,
            files: plan.files,
            rows,
        })
    }

    #[allow(clippy::type_complexity)]
    fn lookup(
        &self,
        key: &(String, Vec<String>),
        view: &Arc<CollectionView>,
        ring: &Ring,
        healthy: &[bool],
    ) -> Option<(Arc<Placement>, i64, Option<Arc<[Part]>>)> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        if !Arc::ptr_eq(&entry.view, view) || !entry.placement.fits(ring) {
            return None;
        }
        let all_up = healthy.len() == ring.nodes().len() && healthy.iter().all(|h| *h);
        let parts = entry.all_healthy.clone().filter(|_| all_up);
        Some((entry.placement.clone(), entry.rows, parts))
    }

    fn store(
        &self,
        key: (String, Vec<String>),
        view: &Arc<CollectionView>,
        placement: Arc<Placement>,
        rows: i64,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                view: view.clone(),
                placement,
                rows,
                all_healthy: None,
            },
        );
    }

    fn remember_all_healthy(
        &self,
        view: &Arc<CollectionView>,
        tags: &[String],
        placement: &Arc<Placement>,
        parts: Arc<[Part]>,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let key = (view.name().to_string(), tags.to_vec());
        if let Some(entry) = entries.get_mut(&key) {
            if Arc::ptr_eq(&entry.placement, placement) {
                entry.all_healthy = Some(parts);
            }
        }
    }
}

/// The parts of a plan, ids encoded.
pub fn to_parts(plan: &RoutePlan) -> Arc<[Part]> {
    plan.assignments
        .iter()
        .map(|(node, ids)| Part::new(node.clone(), ids))
        .collect()
}

/// `ids` as field 1 (`repeated string file_id_array`) of `SearchInFilesParam`.
pub fn encode_file_ids(ids: &[i64]) -> Bytes {
    use prost::Message;
    let param = crate::wire::SearchInFilesParam {
        file_id_array: ids.iter().map(i64::to_string).collect(),
        search_param: None,
    };
    Bytes::from(param.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::{file, table};
    use crate::types::{EngineType, MetricType};

    fn view(files: i64) -> Arc<CollectionView> {
        Arc::new(CollectionView {
            root: table(0, "c", "", ""),
            metric: MetricType::L2,
            engine: EngineType::Flat,
            partitions: vec![table(0, "p1", "c", "2021")],
            files: (1..=files)
                .map(|id| file(id, if id % 2 == 0 { "p1" } else { "c" }, 10))
                .collect(),
        })
    }

    fn nodes() -> Vec<String> {
        (1..=3).map(|i| format!("10.0.0.{i}:19530")).collect()
    }

    /// What the uncached path gives.
    fn reference(v: &CollectionView, tags: &[String], ring: &Ring, healthy: &[bool]) -> RoutePlan {
        let files = route::select_files(v, tags).unwrap();
        let names = ring.nodes().to_vec();
        route::plan(ring, &files, |n| {
            names
                .iter()
                .position(|m| m == n)
                .is_some_and(|i| healthy[i])
        })
        .unwrap()
    }

    fn as_plan(p: &PlannedParts) -> Vec<(String, Vec<i64>)> {
        p.parts
            .iter()
            .map(|part| (part.node.clone(), part.ids.to_vec()))
            .collect()
    }

    #[test]
    fn cached_plans_match_the_uncached_path_and_follow_changes() {
        let cache = Placements::default();
        let ring = Ring::new(&nodes(), 100);
        let v = view(40);
        let up = [true, true, true];
        let one_down = [true, false, true];
        for tags in [vec![], vec!["2021".to_string()]] {
            for health in [&up, &one_down, &up] {
                let planned = cache.plan(&v, &tags, &ring, health).unwrap();
                let expected = reference(&v, &tags, &ring, health);
                assert_eq!(as_plan(&planned), expected.assignments);
                assert_eq!(planned.files, expected.files);
                assert_eq!(planned.rows, expected.rows);
                for part in planned.parts.iter() {
                    assert_eq!(part.encoded_ids, encode_file_ids(&part.ids));
                }
            }
        }
        // A new snapshot (another view) and a new node list are seen at once.
        let bigger = view(60);
        let planned = cache.plan(&bigger, &[], &ring, &up).unwrap();
        assert_eq!(planned.files, 60);
        let two = Ring::new(&nodes()[..2], 100);
        let planned = cache.plan(&bigger, &[], &two, &[true, true]).unwrap();
        assert_eq!(
            as_plan(&planned),
            reference(&bigger, &[], &two, &[true, true]).assignments
        );
    }

    #[test]
    fn errors_are_the_uncached_paths() {
        let cache = Placements::default();
        let ring = Ring::new(&nodes(), 100);
        let v = view(5);
        let e = cache
            .plan(&v, &["nope".to_string()], &ring, &[true; 3])
            .unwrap_err();
        assert_eq!(
            e.reason,
            route::select_files(&v, &["nope".to_string()])
                .unwrap_err()
                .reason
        );
        let e = cache.plan(&v, &[], &ring, &[false; 3]).unwrap_err();
        assert!(
            e.reason.contains("no healthy read-only node for 5 of 5"),
            "{}",
            e.reason
        );
    }
}
