//! IVF_FLAT and IVF_SQ8: rows are grouped in inverted lists by their nearest
//! centroid (see `kmeans.rs`), and a search scans only the `nprobe` lists
//! whose centroids are nearest to the query.
//!
//! IVF_FLAT keeps each list's raw vectors; IVF_SQ8 keeps one byte per
//! dimension (see `sq8.rs`) and scans the decoded vectors. Lists are scanned
//! with the exact scan (`search_segment`), so IVF_FLAT reports the very
//! distances a FLAT search reports, and the queries probing one list are
//! scanned together (one decode per list for SQ8).
//!
//! Body after the header (little-endian, see `codec.rs`):
//! `nlist: u32`, centroids (`nlist × dim` f32); for SQ8 the codec's `vmin`
//! and `vdiff` (`dim` f32 each); then per list `len: u32`, its row offsets
//! (`len` u32) and its vectors (`len × dim` f32) or codes (`len × dim` u8).
//! Every row of the index is in exactly one list.

use super::codec::{corrupt, Header, Reader, Writer};
use super::kernels::Metric;
use super::sq8::ScalarQuantizer;
use super::{kmeans, Hit, IndexError};
use crate::node::scan::{search_segment, QueriesRef, VectorsRef};
use crate::types::{EngineType, MetricType};

/// Seed of the quantizer's k-means (Faiss' default clustering seed).
const KMEANS_SEED: u64 = 1234;
/// Largest `nlist` Milvus 1.1 accepts.
pub const MAX_NLIST: usize = 65536;

/// An inverted-file index over the rows of one segment.
#[derive(Clone, Debug, PartialEq)]
pub struct IvfIndex {
    metric: Metric,
    dim: usize,
    rows: usize,
    /// `nlist × dim`, row-major.
    centroids: Vec<f32>,
    /// Row offsets of each list; `i64` because that is the scan's id type.
    list_rows: Vec<Vec<i64>>,
    payload: Payload,
}

/// How the lists store their vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListEncoding {
    /// Raw f32 vectors (IVF_FLAT).
    Flat,
    /// One byte per dimension (IVF_SQ8).
    Sq8,
}

#[derive(Clone, Debug, PartialEq)]
enum Payload {
    /// Each list's vectors, `len × dim`.
    Flat(Vec<Vec<f32>>),
    /// Each list's residual codes, `len × dim`.
    Sq8 {
        quantizer: ScalarQuantizer,
        codes: Vec<Vec<u8>>,
    },
}

impl IvfIndex {
    /// Trains the quantizer on `data` (row-major, `dim` per row) and fills the
    /// lists. `nlist` is lowered to the row count when there are fewer rows.
    pub fn build(
        encoding: ListEncoding,
        metric: Metric,
        dim: usize,
        data: &[f32],
        nlist: usize,
    ) -> Result<Self, IndexError> {
        let rows = data.len() / dim;
        let nlist = nlist.min(rows);
        let (centroids, assignment) = if nlist == 0 {
            (Vec::new(), Vec::new())
        } else {
            let centroids = kmeans::train(metric, dim, data, nlist, KMEANS_SEED)?;
            let assignment = kmeans::assign(metric, dim, &centroids, data)?;
            (centroids, assignment)
        };
        let mut list_rows: Vec<Vec<i64>> = vec![Vec::new(); nlist];
        for (row, &list) in assignment.iter().enumerate() {
            list_rows[list as usize].push(row as i64);
        }
        let vector = |row: i64| &data[row as usize * dim..][..dim];
        let payload = if encoding == ListEncoding::Sq8 {
            let quantizer = ScalarQuantizer::train_residuals(dim, data, &centroids, &assignment);
            let codes = list_rows
                .iter()
                .zip(centroids.chunks_exact(dim))
                .map(|(members, centroid)| {
                    let mut codes = vec![0u8; members.len() * dim];
                    for (&row, out) in members.iter().zip(codes.chunks_exact_mut(dim)) {
                        quantizer.encode_residual(vector(row), centroid, out);
                    }
                    codes
                })
                .collect();
            Payload::Sq8 { quantizer, codes }
        } else {
            let lists = list_rows
                .iter()
                .map(|members| {
                    members
                        .iter()
                        .flat_map(|&row| vector(row))
                        .copied()
                        .collect()
                })
                .collect();
            Payload::Flat(lists)
        };
        Ok(IvfIndex {
            metric,
            dim,
            rows,
            centroids,
            list_rows,
            payload,
        })
    }

    pub fn kind(&self) -> EngineType {
        match self.payload {
            Payload::Flat(_) => EngineType::IvfFlat,
            Payload::Sq8 { .. } => EngineType::IvfSq8,
        }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn nlist(&self) -> usize {
        self.list_rows.len()
    }

    /// The best `topk` rows of each query among the `nprobe` nearest lists,
    /// best first (ties by the smaller row), leaving out rows for which
    /// `is_deleted` is true. A query may get fewer than `topk` hits.
    pub fn search(
        &self,
        queries: &[f32],
        topk: usize,
        nprobe: usize,
        is_deleted: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let dim = self.dim;
        let nq = queries.len() / dim;
        let mut found: Vec<Vec<Hit>> = vec![Vec::new(); nq];
        if topk == 0 || self.nlist() == 0 || nprobe == 0 {
            return Ok(found);
        }
        let probes = kmeans::nearest(self.metric, dim, &self.centroids, queries, nprobe)?;
        let stride = nprobe.min(self.nlist());
        let mut probing: Vec<Vec<usize>> = vec![Vec::new(); self.nlist()];
        for (q, lists) in probes.chunks_exact(stride).enumerate() {
            for &list in lists.iter().filter(|&&l| l >= 0) {
                probing[list as usize].push(q);
            }
        }
        let metric = MetricType::from(self.metric);
        let order = metric.order();
        let mut query_batch = Vec::new();
        let mut decoded = Vec::new();
        for (list, askers) in probing.iter().enumerate() {
            let members = &self.list_rows[list];
            if askers.is_empty() || members.is_empty() {
                continue;
            }
            query_batch.clear();
            for &q in askers {
                query_batch.extend_from_slice(&queries[q * dim..(q + 1) * dim]);
            }
            let vectors = match &self.payload {
                Payload::Flat(lists) => &lists[list][..],
                Payload::Sq8 { quantizer, codes } => {
                    let centroid = &self.centroids[list * dim..(list + 1) * dim];
                    quantizer.decode_rows(&codes[list], centroid, &mut decoded);
                    &decoded[..]
                }
            };
            let hits = search_segment(
                metric,
                VectorsRef::Float { dim, data: vectors },
                members,
                |i| is_deleted(members[i] as u32),
                QueriesRef::Float {
                    dim,
                    data: &query_batch,
                },
                topk,
            )?;
            let per_query = hits.ids.chunks(hits.stride.max(1));
            let distances = hits.distances.chunks(hits.stride.max(1));
            for ((&q, ids), distances) in askers.iter().zip(per_query).zip(distances) {
                let hits = ids.iter().zip(distances).filter(|(id, _)| **id >= 0);
                found[q].extend(hits.map(|(&id, &distance)| Hit {
                    row: id as u32,
                    distance,
                }));
                if found[q].len() >= topk.saturating_mul(2).max(64) {
                    super::keep_best(&mut found[q], topk, order);
                }
            }
        }
        for hits in &mut found {
            super::keep_best(hits, topk, order);
        }
        Ok(found)
    }

    /// Appends the body (everything after the header).
    pub fn write_body(&self, w: &mut Writer) {
        w.u32(self.nlist() as u32);
        w.f32s(&self.centroids);
        if let Payload::Sq8 { quantizer, .. } = &self.payload {
            w.f32s(&quantizer.vmin);
            w.f32s(&quantizer.vdiff);
        }
        for (list, members) in self.list_rows.iter().enumerate() {
            w.u32(members.len() as u32);
            w.u32s(members.iter().map(|&row| row as u32));
            match &self.payload {
                Payload::Flat(lists) => w.f32s(&lists[list]),
                Payload::Sq8 { codes, .. } => w.raw(&codes[list]),
            }
        }
    }

    /// Reads the body for `header`, checking that the lists hold every row
    /// exactly once.
    pub fn read_body(header: Header, r: &mut Reader<'_>) -> Result<Self, IndexError> {
        let Header { dim, rows, .. } = header;
        let sq8 = header.kind == EngineType::IvfSq8;
        let nlist = r.u32("nlist")? as usize;
        if nlist > MAX_NLIST || nlist > rows || (nlist == 0) != (rows == 0) {
            return Err(corrupt(format!("nlist {nlist} does not fit {rows} rows")));
        }
        // Each row takes a u32 offset and its vector or codes; check the row
        // count against the bytes left before sizing anything by it.
        let row_bytes = 4 + if sq8 { dim } else { 4 * dim };
        if rows
            .checked_mul(row_bytes)
            .is_none_or(|n| n > r.remaining())
        {
            return Err(corrupt(format!("{rows} rows cannot fit in the file")));
        }
        let centroids = r.f32s(nlist * dim, "centroids")?;
        let quantizer = if sq8 {
            let vmin = r.f32s(dim, "sq8 vmin")?;
            let vdiff = r.f32s(dim, "sq8 vdiff")?;
            Some(ScalarQuantizer { vmin, vdiff })
        } else {
            None
        };
        let mut seen = vec![false; rows];
        let mut list_rows = Vec::with_capacity(nlist);
        let mut flat = Vec::new();
        let mut codes = Vec::new();
        for _ in 0..nlist {
            let len = r.u32("list length")? as usize;
            let values = len
                .checked_mul(dim)
                .ok_or_else(|| corrupt("list length overflows"))?;
            let members = r.u32s(len, "list rows")?;
            for &row in &members {
                match seen.get_mut(row as usize) {
                    Some(slot @ false) => *slot = true,
                    _ => {
                        return Err(corrupt(format!(
                            "row {row} is out of range or listed twice"
                        )))
                    }
                }
            }
            list_rows.push(members.into_iter().map(i64::from).collect());
            if sq8 {
                codes.push(r.bytes(values, "list codes")?.to_vec());
            } else {
                flat.push(r.f32s(values, "list vectors")?);
            }
        }
        if seen.iter().any(|s| !s) {
            return Err(corrupt("some rows are in no list"));
        }
        let payload = match quantizer {
            Some(quantizer) => Payload::Sq8 { quantizer, codes },
            None => Payload::Flat(flat),
        };
        Ok(IvfIndex {
            metric: header.metric,
            dim,
            rows,
            centroids,
            list_rows,
            payload,
        })
    }
}
