//! Route planning, pure: which segment files a search reads (Milvus partition
//! semantics over a topology snapshot) and which read-only node searches each
//! file (the consistent-hash ring, skipping unhealthy nodes).

use std::collections::HashSet;

use serde::Serialize;

use crate::partition;
use crate::ring::{self, Ring};
use crate::status::{MilvusError, MilvusResult};
use crate::topology::CollectionView;

/// The files of one search and where each goes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoutePlan {
    /// `(node address, TableFiles ids)`, nodes in ring order, ids ascending.
    pub assignments: Vec<(String, Vec<i64>)>,
    /// Searchable files selected, before placement.
    pub files: usize,
    /// Rows in those files (what one big Milvus would search).
    pub rows: i64,
}

impl RoutePlan {
    pub fn is_empty(&self) -> bool {
        self.assignments.is_empty()
    }
}

/// The searchable file ids of `view` selected by partition `tags`.
pub fn select_files(view: &CollectionView, tags: &[String]) -> MilvusResult<Vec<(i64, i64)>> {
    let tables: HashSet<String> =
        partition::select_tables(&view.root.table_id, &view.partition_pairs(), tags)?
            .into_iter()
            .collect();
    Ok(view
        .files
        .iter()
        .filter(|f| tables.contains(&f.table_id))
        .map(|f| (f.id, f.row_count))
        .collect())
}

/// How a plan that found no node for some files begins its error reason.
pub const NO_HEALTHY_NODE: &str = "no healthy read-only node";

/// Whether `error` says some files had no healthy node to go to: at
/// planning (`checked`), or after every node they could move to failed
/// (the fan-out's fail-over quotes the plan's reason).
pub fn found_no_healthy_node(error: &MilvusError) -> bool {
    error.reason.contains(NO_HEALTHY_NODE)
}

/// Places `files` (id, rows) on healthy nodes of `ring`. Fails when some
/// file has no healthy node to go to.
pub fn plan(
    ring: &Ring,
    files: &[(i64, i64)],
    healthy: impl Fn(&str) -> bool,
) -> MilvusResult<RoutePlan> {
    let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
    let assignments = ring::place(ring, &ids, healthy);
    let distinct: HashSet<i64> = ids.iter().copied().collect();
    checked(ring, assignments, distinct.len(), total_rows(files))
}

/// The plan of `assignments` (from [`ring::place`] or a `ring::Placement`)
/// of `files` distinct files holding `rows` rows; fails when some file has
/// no healthy node to go to.
pub fn checked(
    ring: &Ring,
    assignments: Vec<(String, Vec<i64>)>,
    files: usize,
    rows: i64,
) -> MilvusResult<RoutePlan> {
    let placed: usize = assignments.iter().map(|(_, f)| f.len()).sum();
    if placed < files {
        return Err(MilvusError::unexpected(format!(
            "{NO_HEALTHY_NODE} for {} of {} segment files (nodes: {})",
            files - placed,
            files,
            ring.nodes().join(", ")
        )));
    }
    Ok(RoutePlan {
        assignments,
        files,
        rows,
    })
}

/// The rows of `files` (id, rows). Saturating: row counts come from the
/// database, and a corrupt one must not overflow (a panic in debug builds).
pub fn total_rows(files: &[(i64, i64)]) -> i64 {
    files
        .iter()
        .fold(0i64, |total, (_, r)| total.saturating_add(*r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::{file, table};
    use crate::types::{EngineType, MetricType};

    fn view() -> CollectionView {
        CollectionView {
            root: table(0, "c", "", ""),
            metric: MetricType::L2,
            engine: EngineType::Flat,
            partitions: vec![
                table(0, "101", "c", "2020-01"),
                table(0, "102", "c", "2021-01"),
            ],
            files: vec![
                file(1, "c", 10),
                file(2, "101", 20),
                file(3, "102", 30),
                file(4, "102", 5),
            ],
        }
    }

    #[test]
    fn no_healthy_node_is_recognised_at_planning_and_after_fail_over() {
        let ring = Ring::new(&["a".to_string(), "b".to_string()], 10);
        let Err(e) = plan(&ring, &[(1, 10), (2, 10)], |_| false) else {
            panic!("nothing is healthy")
        };
        assert!(found_no_healthy_node(&e), "{}", e.reason);
        let moved_on =
            MilvusError::unexpected(format!("search failed: {} (unreachable: a, b)", e.reason));
        assert!(found_no_healthy_node(&moved_on));
        assert!(!found_no_healthy_node(&MilvusError::unexpected(
            "Invalid file id: 7"
        )));
    }

    #[test]
    fn selects_files_with_milvus_partition_semantics() {
        let v = view();
        let all = select_files(&v, &[]).unwrap();
        assert_eq!(all.len(), 4);
        let default = select_files(&v, &["_default".into()]).unwrap();
        assert_eq!(default, vec![(1, 10)]);
        let regex = select_files(&v, &["2021.*".into()]).unwrap();
        assert_eq!(regex, vec![(3, 30), (4, 5)]);
        // "2020" is a prefix of "2020-01" but not a full match: no partition.
        assert!(select_files(&v, &["2020".into()]).is_err());
    }

    #[test]
    fn plan_covers_every_file_once() {
        let nodes: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{i}")).collect();
        let ring = Ring::new(&nodes, 160);
        let files: Vec<(i64, i64)> = (1..=50).map(|i| (i, 1)).collect();
        let p = plan(&ring, &files, |_| true).unwrap();
        let mut seen: Vec<i64> = p.assignments.iter().flat_map(|(_, f)| f.clone()).collect();
        seen.sort();
        assert_eq!(seen, (1..=50).collect::<Vec<_>>());
        assert_eq!(p.rows, 50);
        // With one node down, nothing goes to it and nothing is lost.
        let down = &nodes[0];
        let p = plan(&ring, &files, |n| n != down).unwrap();
        assert!(p.assignments.iter().all(|(n, _)| n != down));
        assert_eq!(
            p.assignments.iter().map(|(_, f)| f.len()).sum::<usize>(),
            50
        );
        assert!(plan(&ring, &files, |_| false).is_err());
    }
}
