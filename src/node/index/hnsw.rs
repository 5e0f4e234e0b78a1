//! HNSW (Malkov & Yashunin, "Efficient and robust approximate nearest
//! neighbor search using Hierarchical Navigable Small World graphs"), built
//! and searched as hnswlib does, which Milvus 1.1 wraps.
//!
//! Written here rather than taken from a crate: the ones that fit otherwise
//! either dump to a pair of files in a directory rather than to bytes and
//! insert in parallel in a non-deterministic order (`hnsw_rs`), or fix `ef` at
//! build time and cannot skip deleted rows (`instant-distance`); none has a
//! versioned format we control.
//!
//! * Levels are drawn with `mL = 1 / ln(M)` from a seeded generator; rows are
//!   inserted one by one in row order, so a build is deterministic (and uses
//!   one core).
//! * Layer 0 keeps up to `2·M` neighbours, upper layers `M`. A new node links
//!   to `M` neighbours picked by the heuristic of the paper (algorithm 4
//!   without extension or kept pruned links, as hnswlib's
//!   `getNeighborsByHeuristic2`): a candidate is taken unless it is nearer to
//!   an already taken neighbour than to the new node. A neighbour whose list
//!   overflows is re-pruned by the same heuristic.
//! * Keys are "smaller is better" (squared L2, or negated inner product, see
//!   `kernels.rs`); IP graphs use the same rules as hnswlib's IP space.
//! * A search walks with `max(ef, topk)` candidates; deleted rows are walked
//!   through but never returned (hnswlib's filtered search). Reported
//!   distances come from the exact scan over the candidates found, so they
//!   equal a FLAT search's.
//!
//! Body after the header: `M: u32`, `efConstruction: u32`, the entry node
//! (`u32`, `u32::MAX` when empty), each row's level (`rows` bytes), the
//! vectors (`rows × dim` f32), then for every node and each of its levels
//! from 0 up, a neighbour count (`u16`) and the neighbours (`u32` each).

use super::codec::{corrupt, Header, Reader, Writer};
use super::hnsw_graph::{Graph, Query, Scored, Space, Visited};
use super::kernels::{Metric, SplitMix64};
use super::{Hit, IndexError};
use crate::node::scan::{search_segment, QueriesRef, VectorsRef};
use crate::types::{EngineType, MetricType};

/// Accepted `M` (Milvus 1.1's range).
pub const M_RANGE: std::ops::RangeInclusive<usize> = 4..=64;
/// Accepted `efConstruction` (Milvus 1.1's range).
pub const EF_CONSTRUCTION_RANGE: std::ops::RangeInclusive<usize> = 8..=512;
/// Highest level a node may get; reached with probability `M^-31`.
const MAX_LEVEL: u8 = 31;
/// Seed of the level generator (hnswlib's default `random_seed`).
const LEVEL_SEED: u64 = 100;
const NO_ENTRY: u32 = u32::MAX;

/// A navigable small-world graph over the rows of one segment.
#[derive(Clone, Debug, PartialEq)]
pub struct HnswIndex {
    metric: Metric,
    dim: usize,
    ef_construction: usize,
    vectors: Vec<f32>,
    graph: Graph,
}

impl HnswIndex {
    /// Inserts every row of `data` (row-major, `dim` per row) in row order.
    /// `m` and `ef_construction` are checked by the caller.
    pub fn build(
        metric: Metric,
        dim: usize,
        data: &[f32],
        m: usize,
        ef_construction: usize,
    ) -> Self {
        let rows = data.len() / dim;
        let mut rng = SplitMix64::new(LEVEL_SEED);
        let level_scale = 1.0 / (m as f64).ln();
        let levels = (0..rows)
            .map(|_| (-rng.next_unit().ln() * level_scale).min(f64::from(MAX_LEVEL)) as u8)
            .collect();
        let mut graph = Graph::empty(m, levels);
        let space = Space {
            metric,
            dim,
            vectors: data,
        };
        let mut visited = Visited::new(rows);
        let ef = ef_construction.max(m);
        for node in 0..rows as u32 {
            graph.insert(space, node, ef, &mut visited);
        }
        HnswIndex {
            metric,
            dim,
            ef_construction,
            vectors: data.to_vec(),
            graph,
        }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.graph.levels.len()
    }

    pub fn kind(&self) -> EngineType {
        EngineType::Hnsw
    }

    fn space(&self) -> Space<'_> {
        Space {
            metric: self.metric,
            dim: self.dim,
            vectors: &self.vectors,
        }
    }

    /// The best `topk` rows of each query found with `max(ef, topk)`
    /// candidates, best first (ties by the smaller row), leaving out rows for
    /// which `is_deleted` is true. A query may get fewer than `topk` hits.
    pub fn search(
        &self,
        queries: &[f32],
        topk: usize,
        ef: usize,
        is_deleted: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let dim = self.dim;
        let space = self.space();
        let metric = MetricType::from(self.metric);
        let mut visited = Visited::new(self.rows());
        let mut found_rows: Vec<i64> = Vec::new();
        let mut found_vectors: Vec<f32> = Vec::new();
        let mut out = Vec::with_capacity(queries.len() / dim);
        for query in queries.chunks_exact(dim) {
            let Some(entry) = self.graph.entry.filter(|_| topk > 0) else {
                out.push(Vec::new());
                continue;
            };
            let walk = Query {
                space,
                vector: query,
            };
            let start = Scored(space.key(query, entry), entry);
            let start = self.graph.descend(walk, start, self.graph.top_level(), 0);
            let accept = |node: u32| !is_deleted(node);
            let ef = ef.max(topk);
            let found = self
                .graph
                .search_layer(walk, start, ef, 0, &mut visited, &accept);
            // Score what was found with the exact scan, so distances (and ties)
            // are exactly a FLAT search's.
            found_rows.clear();
            found_vectors.clear();
            for s in &found {
                found_rows.push(i64::from(s.1));
                found_vectors.extend_from_slice(space.vector(s.1));
            }
            let hits = search_segment(
                metric,
                VectorsRef::Float {
                    dim,
                    data: &found_vectors,
                },
                &found_rows,
                |_| false,
                QueriesRef::Float { dim, data: query },
                topk,
            )?;
            let hits = hits.ids.iter().zip(&hits.distances);
            out.push(
                hits.filter(|(id, _)| **id >= 0)
                    .map(|(&id, &distance)| Hit {
                        row: id as u32,
                        distance,
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Appends the body (everything after the header).
    pub fn write_body(&self, w: &mut Writer) {
        w.u32(self.graph.m as u32);
        w.u32(self.ef_construction as u32);
        w.u32(self.graph.entry.unwrap_or(NO_ENTRY));
        w.raw(&self.graph.levels);
        w.f32s(&self.vectors);
        for node in 0..self.rows() as u32 {
            for level in 0..=usize::from(self.graph.levels[node as usize]) {
                let links = self.graph.links(node, level);
                w.u16(links.len() as u16);
                w.u32s(links.iter().copied());
            }
        }
    }

    /// Reads the body for `header`, checking every level, count and
    /// neighbour against the graph's bounds.
    pub fn read_body(header: Header, r: &mut Reader<'_>) -> Result<Self, IndexError> {
        let Header { dim, rows, .. } = header;
        let m = r.u32("M")? as usize;
        if !M_RANGE.contains(&m) {
            return Err(corrupt(format!("HNSW M {m} out of range")));
        }
        let ef_construction = r.u32("efConstruction")? as usize;
        if !EF_CONSTRUCTION_RANGE.contains(&ef_construction) {
            return Err(corrupt(format!(
                "HNSW efConstruction {ef_construction} out of range"
            )));
        }
        let entry = match r.u32("entry")? {
            NO_ENTRY => None,
            node => Some(node),
        };
        // A row takes at least its level byte, its vector and one count: check
        // the row count against the bytes left before sizing anything by it.
        let min_row_bytes = 1 + 4 * dim + 2;
        if rows
            .checked_mul(min_row_bytes)
            .is_none_or(|n| n > r.remaining())
        {
            return Err(corrupt(format!("{rows} rows cannot fit in the file")));
        }
        let levels = r.bytes(rows, "levels")?.to_vec();
        if let Some(&level) = levels.iter().find(|&&l| l > MAX_LEVEL) {
            return Err(corrupt(format!("HNSW level {level} out of range")));
        }
        let top = levels.iter().max().copied();
        match entry {
            None if rows == 0 => {}
            Some(e) if (e as usize) < rows && Some(levels[e as usize]) == top => {}
            _ => return Err(corrupt("HNSW entry point does not match the levels")),
        }
        let vectors = r.f32s(rows * dim, "vectors")?;
        // Every level of every node has at least its count: check before the
        // upper layers are sized by the levels.
        let lists: usize = levels.iter().map(|&l| usize::from(l) + 1).sum();
        if lists.saturating_mul(2) > r.remaining() {
            return Err(corrupt(format!(
                "{lists} neighbour lists cannot fit in the file"
            )));
        }
        let mut graph = Graph::empty(m, levels);
        graph.entry = entry;
        for node in 0..rows as u32 {
            for level in 0..=usize::from(graph.levels[node as usize]) {
                let count = usize::from(r.u16("neighbour count")?);
                if count > graph.capacity(level) {
                    return Err(corrupt(format!("node {node} has {count} neighbours")));
                }
                let links = r.u32s(count, "neighbours")?;
                if links.iter().any(|&n| n as usize >= rows) {
                    return Err(corrupt(format!("node {node} links to a missing node")));
                }
                graph.set_links(node, level, links.into_iter());
            }
        }
        Ok(HnswIndex {
            metric: header.metric,
            dim,
            ef_construction,
            vectors,
            graph,
        })
    }
}
