//! Consistent-hash placement of segment files on read-only nodes.
//!
//! A file is keyed by the decimal string of its `TableFiles.id` and goes to the node that owns
//! that key on a ring of virtual nodes ([`consistent_hash`], SipHash 1-3). Adding or removing a
//! node only moves the files of the ring arcs that change hands. The placement is deterministic
//! for a given node list, so every proxy replica routes the same file to the same node; it is not
//! the md5 ring of the Python Mishards, so a switch from it reshuffles files once.

use std::fmt;

use consistent_hash::{DefaultHash, Node, StaticHashRing};

/// Virtual nodes per real node. A node's share of the ring deviates from fair by about
/// 1/sqrt(n) = 4.5%: nodes `10.0.0.{1,2,3}:19530` get 352/333/315 of file ids 1..=1000
/// (max/mean 1.06). 1500 ring points cost nothing to build and a lookup is one binary search.
pub const DEFAULT_VIRTUAL_NODES: usize = 500;

/// The ring of one configured node list, built once and reused for every search.
pub struct Ring {
    /// Node addresses in configured order, duplicates removed.
    nodes: Vec<String>,
    virtual_nodes_per_node: usize,
    /// Each ring node's value is its index in `nodes`.
    hash_ring: StaticHashRing<'static, String, usize, DefaultHash>,
}

impl Ring {
    /// Builds the ring of `nodes` ("host:port" addresses; a repeated address counts once),
    /// each with `virtual_nodes_per_node` points on the ring (at least 1).
    pub fn new(nodes: &[String], virtual_nodes_per_node: usize) -> Ring {
        let mut distinct: Vec<String> = Vec::with_capacity(nodes.len());
        for node in nodes {
            if !distinct.contains(node) {
                distinct.push(node.clone());
            }
        }
        let virtual_nodes_per_node = virtual_nodes_per_node.max(1);
        let ring_nodes = distinct.iter().enumerate().map(|(index, name)| {
            Node::new(name.clone())
                .value(index)
                .quantity(virtual_nodes_per_node)
        });
        Ring {
            hash_ring: StaticHashRing::new(DefaultHash, ring_nodes),
            nodes: distinct,
            virtual_nodes_per_node,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The distinct nodes, in configured order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The node that owns `file_id` (the `TableFiles.id`); `None` only for an empty ring.
    pub fn owner(&self, file_id: i64) -> Option<&str> {
        self.candidates(file_id).next()
    }

    /// Every node once, in preference order for `file_id`: the owner first, then the nodes to
    /// fail over to.
    pub fn candidates(&self, file_id: i64) -> impl Iterator<Item = &str> {
        self.hash_ring
            .calc_candidates(&file_id.to_string())
            .filter_map(|node| self.nodes.get(node.value).map(String::as_str))
    }

    /// The first candidate of `file_id` for which `healthy(node)` is true.
    pub fn owner_where(&self, file_id: i64, healthy: impl Fn(&str) -> bool) -> Option<&str> {
        self.candidates(file_id).find(|node| healthy(node))
    }
}

impl Clone for Ring {
    fn clone(&self) -> Self {
        Ring::new(&self.nodes, self.virtual_nodes_per_node)
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes)
            .field("virtual_nodes_per_node", &self.virtual_nodes_per_node)
            .finish()
    }
}

/// Groups `file_ids` by their first healthy candidate node.
///
/// Returns `(node, file ids ascending and distinct)` for every node that got at least one
/// file, nodes in the order of [`Ring::nodes`]. Files that no healthy node can take (or all
/// files, on an empty ring) are left out: a caller that must search everything compares the
/// total with the number of distinct ids it asked for.
pub fn place(
    ring: &Ring,
    file_ids: &[i64],
    healthy: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<i64>)> {
    let mut by_node: Vec<Vec<i64>> = vec![Vec::new(); ring.nodes.len()];
    for &file_id in file_ids {
        let owner = ring
            .hash_ring
            .calc_candidates(&file_id.to_string())
            .find(|node| ring.nodes.get(node.value).is_some_and(|name| healthy(name)));
        if let Some(slot) = owner.and_then(|node| by_node.get_mut(node.value)) {
            slot.push(file_id);
        }
    }
    ring.nodes
        .iter()
        .zip(by_node)
        .filter(|(_, files)| !files.is_empty())
        .map(|(node, mut files)| {
            files.sort_unstable();
            files.dedup();
            (node.clone(), files)
        })
        .collect()
}

/// The placement of one set of files on one ring, computed once (per topology snapshot) and
/// reused by every search until the files or the node list change: each file's nodes in
/// preference order, and the grouping when every node is healthy.
///
/// Gives the same answer as [`place`] for any health mask (a test checks it), at a few array
/// reads per file instead of a hash and a ring walk.
#[derive(Debug)]
pub struct Placement {
    /// The node list and ring density this was computed for.
    nodes: Vec<String>,
    virtual_nodes_per_node: usize,
    /// Distinct file ids, ascending.
    ids: Vec<i64>,
    /// `preference[i * nodes.len()..][..nodes.len()]`: node indices for `ids[i]`, best first.
    preference: Vec<u16>,
    /// File ids grouped by owner (index in `nodes`), ascending: the plan when all are healthy.
    by_owner: Vec<Vec<i64>>,
}

/// Rings wider than this are placed file by file with [`place`] (u16 node indices).
const MAX_PLACED_NODES: usize = u16::MAX as usize;

impl Placement {
    /// Places `file_ids` (repeats count once) on `ring`.
    pub fn new(ring: &Ring, file_ids: &[i64]) -> Placement {
        let mut ids = file_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let width = if ring.nodes.len() <= MAX_PLACED_NODES {
            ring.nodes.len()
        } else {
            0
        };
        let mut preference = Vec::with_capacity(ids.len() * width);
        let mut by_owner: Vec<Vec<i64>> = vec![Vec::new(); width];
        for &id in &ids {
            let start = preference.len();
            // `calc_candidates` yields every node once; indices fit u16 (width checked).
            preference.extend(
                ring.hash_ring
                    .calc_candidates(&id.to_string())
                    .map(|node| node.value as u16)
                    .take(width),
            );
            if let Some(owner) = preference
                .get(start)
                .and_then(|&o| by_owner.get_mut(o as usize))
            {
                owner.push(id);
            }
        }
        Placement {
            nodes: if width == 0 {
                Vec::new()
            } else {
                ring.nodes.clone()
            },
            virtual_nodes_per_node: ring.virtual_nodes_per_node,
            ids,
            preference,
            by_owner,
        }
    }

    /// Whether this was computed for `ring`'s node list and density.
    pub fn fits(&self, ring: &Ring) -> bool {
        self.nodes == ring.nodes && self.virtual_nodes_per_node == ring.virtual_nodes_per_node
    }

    /// Distinct files placed.
    pub fn files(&self) -> usize {
        self.ids.len()
    }

    /// The distinct file ids, ascending.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Like [`place`] for the files of this placement, with `healthy[i]` the health of
    /// `ring.nodes()[i]` (a missing entry counts as unhealthy). The ring must be the one it
    /// was built for ([`Placement::fits`]); `None` otherwise.
    pub fn assign(&self, ring: &Ring, healthy: &[bool]) -> Option<Vec<(String, Vec<i64>)>> {
        if !self.fits(ring) || (self.nodes.is_empty() && !self.ids.is_empty()) {
            return None;
        }
        let is_healthy = |n: usize| healthy.get(n).copied().unwrap_or(false);
        let width = self.nodes.len();
        let groups: Vec<Vec<i64>> = if (0..width).all(is_healthy) {
            self.by_owner.clone()
        } else {
            let mut groups = vec![Vec::new(); width];
            for (i, &id) in self.ids.iter().enumerate() {
                let order = &self.preference[i * width..][..width];
                if let Some(&n) = order.iter().find(|&&n| is_healthy(n as usize)) {
                    groups[n as usize].push(id); // ids ascending, so each group is too
                }
            }
            groups
        };
        Some(
            self.nodes
                .iter()
                .zip(groups)
                .filter(|(_, files)| !files.is_empty())
                .map(|(node, files)| (node.clone(), files))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn three_nodes() -> Vec<String> {
        names(&["10.0.0.1:19530", "10.0.0.2:19530", "10.0.0.3:19530"])
    }

    fn owners(ring: &Ring, file_ids: impl Iterator<Item = i64>) -> HashMap<i64, String> {
        file_ids
            .map(|id| (id, ring.owner(id).unwrap().to_string()))
            .collect()
    }

    #[test]
    fn ring_is_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ring>();
    }

    #[test]
    fn empty_ring_owns_nothing() {
        let ring = Ring::new(&[], DEFAULT_VIRTUAL_NODES);
        assert!(ring.is_empty());
        assert_eq!(ring.owner(1), None);
        assert_eq!(ring.candidates(1).count(), 0);
        assert_eq!(ring.owner_where(1, |_| true), None);
        assert!(place(&ring, &[1, 2, 3], |_| true).is_empty());
    }

    #[test]
    fn duplicates_are_removed_and_order_is_kept() {
        let ring = Ring::new(&names(&["b:1", "a:1", "b:1", "c:1", "a:1"]), 10);
        assert_eq!(ring.nodes(), &names(&["b:1", "a:1", "c:1"])[..]);
        assert!(!ring.is_empty());
    }

    #[test]
    fn zero_virtual_nodes_still_places_files() {
        let ring = Ring::new(&three_nodes(), 0);
        assert!(ring.owner(42).is_some());
    }

    #[test]
    fn default_virtual_nodes_spread_files_evenly() {
        let nodes = three_nodes();
        let ring = Ring::new(&nodes, DEFAULT_VIRTUAL_NODES);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, owner) in owners(&ring, 1..=1000) {
            *counts.entry(owner).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        for count in counts.values() {
            assert!(
                *count >= 200,
                "a node got under 20% of the files: {counts:?}"
            );
            assert!(
                *count <= 450,
                "a node got over 45% of the files: {counts:?}"
            );
        }
    }

    #[test]
    fn placement_is_pinned() {
        // Guards against a hash or crate change silently reshuffling every file.
        let ring = Ring::new(&three_nodes(), DEFAULT_VIRTUAL_NODES);
        let pinned = [
            (1, "10.0.0.1:19530"),
            (2, "10.0.0.2:19530"),
            (3, "10.0.0.1:19530"),
            (4, "10.0.0.2:19530"),
            (42, "10.0.0.3:19530"),
            (1001, "10.0.0.1:19530"),
            (123456789, "10.0.0.1:19530"),
        ];
        for (file_id, node) in pinned {
            assert_eq!(ring.owner(file_id), Some(node), "file {file_id}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_files() {
        let nodes = names(&["n1:1", "n2:1", "n3:1", "n4:1"]);
        let before = owners(&Ring::new(&nodes, DEFAULT_VIRTUAL_NODES), 1..=2000);
        let remaining: Vec<String> = nodes.iter().filter(|n| *n != "n2:1").cloned().collect();
        let after = owners(&Ring::new(&remaining, DEFAULT_VIRTUAL_NODES), 1..=2000);
        let mut moved = 0;
        for (file_id, old_owner) in &before {
            let new_owner = &after[file_id];
            if old_owner == "n2:1" {
                moved += 1;
                assert_ne!(new_owner, "n2:1");
            } else {
                assert_eq!(
                    new_owner, old_owner,
                    "file {file_id} moved off a surviving node"
                );
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn adding_a_node_moves_files_only_to_it() {
        let nodes = three_nodes();
        let before = owners(&Ring::new(&nodes, DEFAULT_VIRTUAL_NODES), 1..=2000);
        let mut grown = nodes.clone();
        grown.push("10.0.0.4:19530".to_string());
        let after = owners(&Ring::new(&grown, DEFAULT_VIRTUAL_NODES), 1..=2000);
        for (file_id, new_owner) in &after {
            if new_owner != "10.0.0.4:19530" {
                assert_eq!(new_owner, &before[file_id], "file {file_id}");
            }
        }
    }

    #[test]
    fn candidates_are_distinct_owner_first_and_match_removal() {
        let nodes = three_nodes();
        let ring = Ring::new(&nodes, DEFAULT_VIRTUAL_NODES);
        for file_id in 1..=300 {
            let candidates: Vec<&str> = ring.candidates(file_id).collect();
            assert_eq!(candidates.len(), 3);
            assert_eq!(candidates.iter().collect::<BTreeSet<_>>().len(), 3);
            assert_eq!(Some(candidates[0]), ring.owner(file_id));
        }
        // The second candidate is where the file goes when its owner leaves the ring.
        for file_id in 1..=300 {
            let owner = ring.owner(file_id).unwrap();
            let second = ring.candidates(file_id).nth(1).unwrap();
            let remaining: Vec<String> = nodes.iter().filter(|n| *n != owner).cloned().collect();
            let shrunk = Ring::new(&remaining, DEFAULT_VIRTUAL_NODES);
            assert_eq!(shrunk.owner(file_id), Some(second), "file {file_id}");
        }
    }

    #[test]
    fn owner_where_skips_unhealthy_nodes() {
        let ring = Ring::new(&three_nodes(), DEFAULT_VIRTUAL_NODES);
        for file_id in 1..=100 {
            let owner = ring.owner(file_id).unwrap();
            assert_eq!(ring.owner_where(file_id, |_| true), Some(owner));
            let fallback = ring.owner_where(file_id, |node| node != owner).unwrap();
            assert_ne!(fallback, owner);
            assert_eq!(Some(fallback), ring.candidates(file_id).nth(1));
            assert_eq!(ring.owner_where(file_id, |_| false), None);
        }
    }

    #[test]
    fn place_groups_by_owner_in_node_order_with_sorted_ids() {
        let nodes = three_nodes();
        let ring = Ring::new(&nodes, DEFAULT_VIRTUAL_NODES);
        let file_ids: Vec<i64> = (1..=60).rev().chain([5, 5, 17]).collect();
        let placed = place(&ring, &file_ids, |_| true);
        let placed_nodes: Vec<&String> = placed.iter().map(|(node, _)| node).collect();
        let expected_order: Vec<&String> =
            nodes.iter().filter(|n| placed_nodes.contains(n)).collect();
        assert_eq!(placed_nodes, expected_order);
        let mut total = 0;
        for (node, files) in &placed {
            assert!(files.windows(2).all(|w| w[0] < w[1]), "{files:?}");
            for file_id in files {
                assert_eq!(ring.owner(*file_id), Some(node.as_str()));
            }
            total += files.len();
        }
        assert_eq!(total, 60);
    }

    #[test]
    fn place_fails_over_and_drops_what_nobody_can_take() {
        let ring = Ring::new(&three_nodes(), DEFAULT_VIRTUAL_NODES);
        let file_ids: Vec<i64> = (1..=50).collect();
        let down = "10.0.0.2:19530";
        let placed = place(&ring, &file_ids, |node| node != down);
        assert!(placed.iter().all(|(node, _)| node != down));
        assert_eq!(placed.iter().map(|(_, f)| f.len()).sum::<usize>(), 50);
        for (node, files) in &placed {
            for file_id in files {
                assert_eq!(
                    ring.owner_where(*file_id, |n| n != down),
                    Some(node.as_str())
                );
            }
        }
        assert!(place(&ring, &file_ids, |_| false).is_empty());
    }

    /// The fraction of `file_ids` whose owner differs between two rings.
    fn moved_fraction(before: &Ring, after: &Ring, file_ids: &[i64]) -> f64 {
        let moved = file_ids
            .iter()
            .filter(|id| before.owner(**id) != after.owner(**id))
            .count();
        moved as f64 / file_ids.len() as f64
    }

    /// Consistent hashing: when one of N nodes joins or leaves, about 1/N of
    /// 10k files move (and on a join, only to the new node). Run with
    /// `--nocapture` to see the measured fractions.
    #[test]
    fn about_one_nth_of_the_files_move_when_a_node_joins_or_leaves() {
        let file_ids: Vec<i64> = (1..=10_000).collect();
        for n in [3usize, 5, 10] {
            let nodes: Vec<String> = (1..=n).map(|i| format!("10.0.1.{i}:19530")).collect();
            let before = Ring::new(&nodes[..n - 1], DEFAULT_VIRTUAL_NODES);
            let after = Ring::new(&nodes, DEFAULT_VIRTUAL_NODES);
            let joined = moved_fraction(&before, &after, &file_ids);
            for id in &file_ids {
                if before.owner(*id) != after.owner(*id) {
                    assert_eq!(after.owner(*id), Some(nodes[n - 1].as_str()));
                }
            }
            // Leaving: the first node goes away (N -> N-1).
            let without_first = Ring::new(&nodes[1..], DEFAULT_VIRTUAL_NODES);
            let left = moved_fraction(&after, &without_first, &file_ids);
            let ideal = 1.0 / n as f64;
            println!(
                "N={n}: join moved {:.2}% of 10k files, leave moved {:.2}% (ideal 1/N = {:.2}%)",
                joined * 100.0,
                left * 100.0,
                ideal * 100.0
            );
            // 500 virtual nodes keep each share within ~10% of fair (see DEFAULT_VIRTUAL_NODES).
            for fraction in [joined, left] {
                assert!(
                    (fraction - ideal).abs() <= ideal * 0.25,
                    "N={n}: moved {fraction}, ideal {ideal}"
                );
            }
        }
    }

    proptest::proptest! {
        /// The placement computed once gives what `place` gives, for any files and health.
        #[test]
        fn placement_matches_place(
            node_count in 1usize..7,
            ids in proptest::collection::vec(-5i64..400, 0..120),
            mask in proptest::collection::vec(proptest::bool::ANY, 7),
        ) {
            let nodes: Vec<String> = (0..node_count).map(|i| format!("10.0.0.{i}:19530")).collect();
            let ring = Ring::new(&nodes, 40);
            let placement = Placement::new(&ring, &ids);
            let healthy_by_name = |name: &str| {
                nodes.iter().position(|n| n == name).is_some_and(|i| mask[i])
            };
            let expected = place(&ring, &ids, healthy_by_name);
            proptest::prop_assert_eq!(placement.assign(&ring, &mask[..node_count]), Some(expected));
            let all_up = vec![true; node_count];
            proptest::prop_assert_eq!(
                placement.assign(&ring, &all_up),
                Some(place(&ring, &ids, |_| true))
            );
        }
    }

    #[test]
    fn placement_refuses_another_ring() {
        let ring = Ring::new(&three_nodes(), 50);
        let placement = Placement::new(&ring, &[1, 2, 3, 3]);
        assert_eq!(placement.files(), 3);
        let other = Ring::new(&three_nodes()[..2], 50);
        assert!(!placement.fits(&other));
        assert_eq!(placement.assign(&other, &[true, true]), None);
        let denser = Ring::new(&three_nodes(), 60);
        assert_eq!(placement.assign(&denser, &[true; 3]), None);
        let empty = Ring::new(&[], 50);
        assert_eq!(Placement::new(&empty, &[1]).assign(&empty, &[]), None);
        assert_eq!(
            Placement::new(&empty, &[]).assign(&empty, &[]),
            Some(vec![])
        );
    }
}
