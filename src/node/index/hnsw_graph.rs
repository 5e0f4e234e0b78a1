//! The HNSW graph itself: layered adjacency lists, the best-first layer
//! search, insertion with the paper's heuristic neighbour selection, and the
//! visited set. `hnsw.rs` owns the vectors, parameters and file format.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::kernels::Metric;

/// The vectors and how to compare them.
#[derive(Clone, Copy)]
pub struct Space<'a> {
    pub metric: Metric,
    pub dim: usize,
    pub vectors: &'a [f32],
}

impl<'a> Space<'a> {
    pub fn vector(&self, node: u32) -> &'a [f32] {
        &self.vectors[node as usize * self.dim..][..self.dim]
    }

    pub fn key(&self, query: &[f32], node: u32) -> f32 {
        self.metric.key(query, self.vector(node))
    }
}

/// A point searched for: its vector and the space it is compared in.
#[derive(Clone, Copy)]
pub struct Query<'a> {
    pub space: Space<'a>,
    pub vector: &'a [f32],
}

impl Query<'_> {
    fn key(&self, node: u32) -> f32 {
        self.space.key(self.vector, node)
    }
}

/// A `(key, node)` pair ordered by key, then node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored(pub f32, pub u32);

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Adjacency lists of every layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub m: usize,
    pub levels: Vec<u8>,
    /// Layer 0: `1 + 2m` slots per node, a count then the neighbours.
    base: Vec<u32>,
    /// Layers 1..=level of each node: `1 + m` slots per layer, same layout.
    upper: Vec<Vec<u32>>,
    pub entry: Option<u32>,
}

impl Graph {
    pub fn empty(m: usize, levels: Vec<u8>) -> Self {
        let rows = levels.len();
        let upper = levels
            .iter()
            .map(|&l| vec![0; usize::from(l) * (1 + m)])
            .collect();
        Graph {
            m,
            base: vec![0; rows * (1 + 2 * m)],
            upper,
            levels,
            entry: None,
        }
    }

    pub fn capacity(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    fn slots(&self, node: u32, level: usize) -> &[u32] {
        let node = node as usize;
        if level == 0 {
            let width = 1 + 2 * self.m;
            &self.base[node * width..][..width]
        } else {
            let width = 1 + self.m;
            &self.upper[node][(level - 1) * width..][..width]
        }
    }

    pub fn links(&self, node: u32, level: usize) -> &[u32] {
        let slots = self.slots(node, level);
        &slots[1..][..slots[0] as usize]
    }

    pub fn set_links(
        &mut self,
        node: u32,
        level: usize,
        neighbours: impl ExactSizeIterator<Item = u32>,
    ) {
        let node = node as usize;
        let slots = if level == 0 {
            let width = 1 + 2 * self.m;
            &mut self.base[node * width..][..width]
        } else {
            let width = 1 + self.m;
            &mut self.upper[node][(level - 1) * width..][..width]
        };
        slots[0] = neighbours.len() as u32;
        // Unused slots are kept at 0 so equal graphs compare equal.
        let mut neighbours = neighbours;
        for slot in &mut slots[1..] {
            *slot = neighbours.next().unwrap_or(0);
        }
    }

    pub fn top_level(&self) -> usize {
        self.entry
            .map_or(0, |e| usize::from(self.levels[e as usize]))
    }

    /// Greedy descent (one candidate) from `from` down to `to + 1`.
    pub fn descend(&self, query: Query<'_>, mut cur: Scored, from: usize, to: usize) -> Scored {
        for level in (to + 1..=from).rev() {
            let mut moved = true;
            while moved {
                moved = false;
                for &n in self.links(cur.1, level) {
                    let key = query.key(n);
                    if key < cur.0 {
                        cur = Scored(key, n);
                        moved = true;
                    }
                }
            }
        }
        cur
    }

    /// Best-first search of one layer with `ef` results, nearest first. Nodes
    /// that `accept` rejects are walked through but not returned.
    pub fn search_layer(
        &self,
        query: Query<'_>,
        start: Scored,
        ef: usize,
        level: usize,
        visited: &mut Visited,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        visited.clear();
        visited.insert(start.1);
        let mut candidates = BinaryHeap::from([Reverse(start)]);
        let mut results = BinaryHeap::new();
        if accept(start.1) {
            results.push(start);
        }
        let mut bound = results.peek().map_or(f32::INFINITY, |s: &Scored| s.0);
        while let Some(Reverse(current)) = candidates.pop() {
            if current.0 > bound && results.len() >= ef {
                break;
            }
            for &n in self.links(current.1, level) {
                if !visited.insert(n) {
                    continue;
                }
                let key = query.key(n);
                if results.len() < ef || key < bound {
                    candidates.push(Reverse(Scored(key, n)));
                    if accept(n) {
                        results.push(Scored(key, n));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                    bound = results.peek().map_or(f32::INFINITY, |s| s.0);
                }
            }
        }
        results.into_sorted_vec()
    }

    pub fn insert(
        &mut self,
        space: Space<'_>,
        node: u32,
        ef_construction: usize,
        visited: &mut Visited,
    ) {
        let query = Query {
            space,
            vector: space.vector(node),
        };
        let level = usize::from(self.levels[node as usize]);
        let Some(entry) = self.entry else {
            self.entry = Some(node);
            return;
        };
        let top = self.top_level();
        let mut cur = self.descend(query, Scored(query.key(entry), entry), top, level);
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(query, cur, ef_construction, layer, visited, &|_| true);
            let chosen = select_neighbours(space, &found, self.m);
            self.set_links(node, layer, chosen.iter().map(|s| s.1));
            for neighbour in &chosen {
                self.link_back(space, neighbour.1, node, layer);
            }
            if let Some(&nearest) = found.first() {
                cur = nearest;
            }
        }
        if level > top {
            self.entry = Some(node);
        }
    }

    /// Adds `node` to `neighbour`'s list, re-pruning it when full.
    fn link_back(&mut self, space: Space<'_>, neighbour: u32, node: u32, level: usize) {
        let links = self.links(neighbour, level);
        if links.len() < self.capacity(level) {
            let extended: Vec<u32> = links.iter().copied().chain([node]).collect();
            self.set_links(neighbour, level, extended.into_iter());
            return;
        }
        let base = space.vector(neighbour);
        let mut candidates: Vec<Scored> = links
            .iter()
            .chain([&node])
            .map(|&n| Scored(space.key(base, n), n))
            .collect();
        candidates.sort_unstable();
        let kept = select_neighbours(space, &candidates, self.capacity(level));
        self.set_links(neighbour, level, kept.iter().map(|s| s.1));
    }
}

/// The heuristic neighbour selection over `candidates` sorted nearest first:
/// all of them when they fit, else each in turn unless it is nearer to one
/// already chosen than to the base point.
fn select_neighbours(space: Space<'_>, candidates: &[Scored], max: usize) -> Vec<Scored> {
    if candidates.len() <= max {
        return candidates.to_vec();
    }
    let mut chosen: Vec<Scored> = Vec::with_capacity(max);
    for &candidate in candidates {
        if chosen.len() == max {
            break;
        }
        let vector = space.vector(candidate.1);
        if chosen.iter().all(|c| space.key(vector, c.1) >= candidate.0) {
            chosen.push(candidate);
        }
    }
    chosen
}

/// Nodes seen by the current walk, cleared in O(1) by bumping a generation.
pub struct Visited {
    marks: Vec<u32>,
    generation: u32,
}

impl Visited {
    pub fn new(rows: usize) -> Self {
        Visited {
            marks: vec![0; rows],
            generation: 0,
        }
    }

    pub fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// True when `node` was not seen yet in this walk.
    pub fn insert(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        let fresh = *mark != self.generation;
        *mark = self.generation;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(vectors: &[f32]) -> Space<'_> {
        Space {
            metric: Metric::L2,
            dim: 1,
            vectors,
        }
    }

    #[test]
    fn heuristic_skips_candidates_shadowed_by_a_chosen_one() {
        // Base point at 0; rows at 1.0, 1.1 and -1.2 (keys are squared L2).
        let vectors = [1.0f32, 1.1, -1.2];
        let s = space(&vectors);
        let candidates = [Scored(1.0, 0), Scored(1.21, 1), Scored(1.44, 2)];
        // 1.1 is nearer to 1.0 than to the base: it is left out for -1.2.
        let chosen = select_neighbours(s, &candidates, 2);
        assert_eq!(chosen, vec![Scored(1.0, 0), Scored(1.44, 2)]);
        // When everything fits, nothing is pruned.
        assert_eq!(select_neighbours(s, &candidates, 3), candidates.to_vec());
    }

    #[test]
    fn full_lists_are_re_pruned_and_unused_slots_cleared() {
        let vectors: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let s = space(&vectors);
        let mut graph = Graph::empty(2, vec![1; 10]);
        graph.set_links(0, 1, [1, 2].into_iter());
        graph.link_back(s, 0, 3, 1);
        // Upper layers hold M = 2: seen from 0, row 1 shadows 2 and 3.
        assert_eq!(graph.links(0, 1), &[1]);
        assert_eq!(graph.slots(0, 1), &[1, 1, 0]);
        // Layer 0 holds 2·M = 4, so a fourth link is simply added.
        graph.set_links(0, 0, [1, 2, 3].into_iter());
        graph.link_back(s, 0, 4, 0);
        assert_eq!(graph.links(0, 0), &[1, 2, 3, 4]);
    }

    #[test]
    fn layer_search_finds_the_nearest_and_skips_rejected_nodes() {
        // A path 0 - 1 - ... - 9 on the line.
        let vectors: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let s = space(&vectors);
        let mut graph = Graph::empty(2, vec![0; 10]);
        for n in 0..10u32 {
            let neighbours: Vec<u32> = [n.wrapping_sub(1), n + 1]
                .into_iter()
                .filter(|&x| x < 10)
                .collect();
            graph.set_links(n, 0, neighbours.into_iter());
        }
        let query = Query {
            space: s,
            vector: &[7.2],
        };
        let mut visited = Visited::new(10);
        let start = Scored(query.key(0), 0);
        let found = graph.search_layer(query, start, 2, 0, &mut visited, &|_| true);
        assert_eq!(found.iter().map(|s| s.1).collect::<Vec<_>>(), vec![7, 8]);
        let odd_only = |n: u32| n % 2 == 1;
        let found = graph.search_layer(query, start, 2, 0, &mut visited, &odd_only);
        assert_eq!(found.iter().map(|s| s.1).collect::<Vec<_>>(), vec![7, 9]);
    }

    #[test]
    fn visited_set_clears_by_generation_and_survives_wrapping() {
        let mut visited = Visited::new(3);
        visited.clear();
        assert!(visited.insert(1));
        assert!(!visited.insert(1));
        visited.clear();
        assert!(visited.insert(1));
        visited.generation = u32::MAX;
        visited.marks[2] = 1;
        visited.clear();
        assert_eq!(visited.generation, 1);
        assert!(visited.insert(2));
    }
}
