//! Approximate vector indexes of the bundled node (IVF_FLAT, IVF_SQ8, HNSW):
//! build one over the float rows of a segment, search it with the scan's
//! distance conventions, and store it as bytes.
//!
//! Rows are identified by their offset in the segment (`u32`); hits are
//! `(row, distance)` best first, with distances as the exact scan reports
//! them (squared L2 ascending, inner product descending) so partial results
//! merge with FLAT ones; [`hits_to_topk`] turns them into the scan's
//! [`TopKHits`] shape. Binary metrics are not indexed (Milvus'
//! BIN_IVF_FLAT is left out): binary segments keep the exact scan.
//!
//! ```text
//! mod.rs      facade: specs, knobs, errors, dispatch, result shaping
//! ivf.rs      IVF_FLAT / IVF_SQ8 lists, search and body format
//! kmeans.rs   coarse quantizer training and nearest-centroid lookups
//! sq8.rs      8-bit per-dimension scalar quantizer
//! hnsw.rs     HNSW parameters, search and body format
//! hnsw_graph.rs  the layered graph: insertion and layer search
//! kernels.rs  pairwise distance keys, seeded generator
//! codec.rs    file header and bounds-checked byte reader
//! parallel.rs scoped-thread fan-out for builds
//! ```

mod codec;
mod hnsw;
mod hnsw_graph;
mod ivf;
mod kernels;
mod kmeans;
mod parallel;
mod sq8;

#[cfg(test)]
mod recall_tests;

use std::cmp::Ordering;

pub use hnsw::{HnswIndex, EF_CONSTRUCTION_RANGE, M_RANGE};
pub use ivf::{IvfIndex, ListEncoding, MAX_NLIST};

use crate::merge::TopKHits;
use crate::node::scan::ScanError;
use crate::types::{EngineType, MetricType, Order};
use codec::{Header, Reader, Writer};
use kernels::Metric;

/// Which index to build, with its build parameters (Milvus' `extra_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSpec {
    IvfFlat { nlist: usize },
    IvfSq8 { nlist: usize },
    Hnsw { m: usize, ef_construction: usize },
}

impl IndexSpec {
    /// The Milvus engine type this index is stored as.
    pub fn engine_type(&self) -> EngineType {
        match self {
            IndexSpec::IvfFlat { .. } => EngineType::IvfFlat,
            IndexSpec::IvfSq8 { .. } => EngineType::IvfSq8,
            IndexSpec::Hnsw { .. } => EngineType::Hnsw,
        }
    }

    /// Checks the parameters against Milvus 1.1's ranges.
    pub fn validate(&self) -> Result<(), IndexError> {
        let check = |name: &'static str, value: usize, range: std::ops::RangeInclusive<usize>| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(IndexError::BadParam {
                    name,
                    value,
                    min: *range.start(),
                    max: *range.end(),
                })
            }
        };
        match *self {
            IndexSpec::IvfFlat { nlist } | IndexSpec::IvfSq8 { nlist } => {
                check("nlist", nlist, 1..=MAX_NLIST)
            }
            IndexSpec::Hnsw { m, ef_construction } => {
                check("M", m, M_RANGE)?;
                check("efConstruction", ef_construction, EF_CONSTRUCTION_RANGE)
            }
        }
    }
}

/// Search-time parameters; each index reads the one it knows (`nprobe` for
/// IVF, `ef` for HNSW). Milvus checks their ranges on the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchKnobs {
    pub nprobe: usize,
    pub ef: usize,
}

/// One result: the row offset in the segment and its distance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub row: u32,
    pub distance: f32,
}

/// Why an index could not be built, searched or read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("metric {0} cannot be indexed (only L2 and IP float vectors are)")]
    UnsupportedMetric(MetricType),
    #[error("invalid dimension {0}")]
    BadDimension(usize),
    #[error("{what} holds {len} floats, not a whole number of {dim}-float rows")]
    RaggedData {
        what: &'static str,
        len: usize,
        dim: usize,
    },
    #[error("{rows} rows are more than an index holds ({max})")]
    TooManyRows { rows: usize, max: usize },
    #[error("{name} {value} is out of range [{min}, {max}]")]
    BadParam {
        name: &'static str,
        value: usize,
        min: usize,
        max: usize,
    },
    #[error("corrupt index file: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// A built index of one segment.
#[derive(Clone, Debug, PartialEq)]
pub enum VectorIndex {
    Ivf(IvfIndex),
    Hnsw(HnswIndex),
}

/// Builds `spec` over `rows` (row-major, `dim` floats each; row offset =
/// position). Uses every core for IVF training; the result does not depend
/// on the number of cores.
pub fn build(
    spec: IndexSpec,
    metric: MetricType,
    dim: usize,
    rows: &[f32],
) -> Result<VectorIndex, IndexError> {
    spec.validate()?;
    let metric = float_metric(metric)?;
    check_rows("rows", dim, rows)?;
    let count = rows.len() / dim;
    if count >= u32::MAX as usize {
        return Err(IndexError::TooManyRows {
            rows: count,
            max: u32::MAX as usize - 1,
        });
    }
    Ok(match spec {
        IndexSpec::IvfFlat { nlist } => VectorIndex::Ivf(IvfIndex::build(
            ListEncoding::Flat,
            metric,
            dim,
            rows,
            nlist,
        )?),
        IndexSpec::IvfSq8 { nlist } => VectorIndex::Ivf(IvfIndex::build(
            ListEncoding::Sq8,
            metric,
            dim,
            rows,
            nlist,
        )?),
        IndexSpec::Hnsw { m, ef_construction } => {
            VectorIndex::Hnsw(HnswIndex::build(metric, dim, rows, m, ef_construction))
        }
    })
}

fn float_metric(metric: MetricType) -> Result<Metric, IndexError> {
    match metric {
        MetricType::L2 => Ok(Metric::L2),
        MetricType::Ip => Ok(Metric::Ip),
        other => Err(IndexError::UnsupportedMetric(other)),
    }
}

fn check_rows(what: &'static str, dim: usize, data: &[f32]) -> Result<(), IndexError> {
    if dim == 0 || dim > codec::MAX_DIM {
        return Err(IndexError::BadDimension(dim));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(IndexError::RaggedData {
            what,
            len: data.len(),
            dim,
        });
    }
    Ok(())
}

impl VectorIndex {
    pub fn engine_type(&self) -> EngineType {
        match self {
            VectorIndex::Ivf(index) => index.kind(),
            VectorIndex::Hnsw(index) => index.kind(),
        }
    }

    pub fn metric(&self) -> MetricType {
        self.kernel_metric().into()
    }

    fn kernel_metric(&self) -> Metric {
        match self {
            VectorIndex::Ivf(index) => index.metric(),
            VectorIndex::Hnsw(index) => index.metric(),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            VectorIndex::Ivf(index) => index.dim(),
            VectorIndex::Hnsw(index) => index.dim(),
        }
    }

    /// Rows indexed (deleted ones included).
    pub fn rows(&self) -> usize {
        match self {
            VectorIndex::Ivf(index) => index.rows(),
            VectorIndex::Hnsw(index) => index.rows(),
        }
    }

    /// The best `topk` rows of every query (row-major, `dim` floats each),
    /// best first by the metric's order, ties by the smaller row; rows for
    /// which `is_deleted(row)` is true are never returned. A query may get
    /// fewer than `topk` hits (few rows probed, or many deleted).
    pub fn search(
        &self,
        queries: &[f32],
        topk: usize,
        knobs: &SearchKnobs,
        is_deleted: impl Fn(u32) -> bool,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        check_rows("query data", self.dim(), queries)?;
        match self {
            VectorIndex::Ivf(index) => index.search(queries, topk, knobs.nprobe, &is_deleted),
            VectorIndex::Hnsw(index) => index.search(queries, topk, knobs.ef, &is_deleted),
        }
    }

    /// The index file: header, then the kind's body (see `codec.rs`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            kind: self.engine_type(),
            metric: self.kernel_metric(),
            dim: self.dim(),
            rows: self.rows(),
        };
        let mut w = Writer::header(header);
        match self {
            VectorIndex::Ivf(index) => index.write_body(&mut w),
            VectorIndex::Hnsw(index) => index.write_body(&mut w),
        }
        w.bytes
    }

    /// Reads an index file; anything truncated, padded or inconsistent is
    /// [`IndexError::Corrupt`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IndexError> {
        let mut r = Reader::new(bytes);
        let header = r.header()?;
        let index = match header.kind {
            EngineType::Hnsw => VectorIndex::Hnsw(HnswIndex::read_body(header, &mut r)?),
            _ => VectorIndex::Ivf(IvfIndex::read_body(header, &mut r)?),
        };
        r.finish()?;
        Ok(index)
    }
}

/// Distance `a` before `b` in `order`; like the scan, `partial_cmp` so -0.0
/// and 0.0 tie (distances are never NaN: the scan leaves such rows out).
fn rank(order: Order, a: f32, b: f32) -> Ordering {
    let ascending = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
    match order {
        Order::Ascending => ascending,
        Order::Descending => ascending.reverse(),
    }
}

/// Hits ranked best first by `order`, ties by the smaller row.
fn compare_hits(order: Order) -> impl Fn(&Hit, &Hit) -> Ordering {
    move |a, b| rank(order, a.distance, b.distance).then(a.row.cmp(&b.row))
}

/// Cuts `hits` to the best `k`, sorted best first.
fn keep_best(hits: &mut Vec<Hit>, k: usize, order: Order) {
    let compare = compare_hits(order);
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, &compare);
    }
    hits.truncate(k);
    hits.sort_unstable_by(compare);
}

/// Shapes per-query hits like the exact scan's answer for one segment of
/// `ids.len()` rows (`ids[row]` is the row's id): stride `min(topk, rows)`,
/// hits best first with ties by the smaller id, short rows padded with id -1
/// and `order.worst()`. Hits past `topk` or naming a row without an id are
/// dropped.
pub fn hits_to_topk(per_query: &[Vec<Hit>], ids: &[i64], topk: usize, order: Order) -> TopKHits {
    let nq = per_query.len();
    let stride = topk.min(ids.len());
    let mut out = TopKHits {
        nq,
        stride,
        ids: vec![-1; nq * stride],
        distances: vec![order.worst(); nq * stride],
    };
    if stride == 0 {
        return out;
    }
    let mut row: Vec<(f32, i64)> = Vec::new();
    for (q, hits) in per_query.iter().enumerate() {
        row.clear();
        row.extend(
            hits.iter()
                .filter_map(|h| ids.get(h.row as usize).map(|&id| (h.distance, id))),
        );
        row.sort_by(|a, b| rank(order, a.0, b.0).then(a.1.cmp(&b.1)));
        for (i, &(distance, id)) in row.iter().take(stride).enumerate() {
            out.ids[q * stride + i] = id;
            out.distances[q * stride + i] = distance;
        }
    }
    out
}
