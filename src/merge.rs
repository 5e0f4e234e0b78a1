//! Pure top-k merging: combines partial per-query hit lists (from segment
//! files on a node, or from nodes behind the proxy) into one exact top-k.

use crate::types::Order;

/// Hits for `nq` queries, flattened row-major with one uniform `stride`:
/// query `i` owns `ids[i*stride..(i+1)*stride]` (and the same of `distances`).
/// An id of -1 marks padding; it always sorts after every real hit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopKHits {
    pub nq: usize,
    pub stride: usize,
    pub ids: Vec<i64>,
    pub distances: Vec<f32>,
}
