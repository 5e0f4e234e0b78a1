//! Pure top-k merging: combines partial per-query hit lists (from segment
//! files on a node, or from nodes behind the proxy) into one exact top-k.

use crate::status::{ok_status, MilvusError};
use crate::types::Order;
use crate::wire::{ErrorCode, TopKQueryResult};

mod encoded;

pub use encoded::{merge_encoded, EncodedHits};

/// The id Milvus puts in a slot that holds no hit.
const PADDING_ID: i64 = -1;

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

impl TopKHits {
    /// Milvus' "no result": `row_num` 0 and empty arrays.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Puts row `r` of these hits (the answer for the `r`-th query that was
    /// searched) back at query position `present[r]` of `nq` queries; the
    /// queries that were not searched (ids that were not found, in a search
    /// by id) get rows of padding. A short answer leaves padding rows, never
    /// a panic.
    pub fn spread_rows(&self, present: &[usize], nq: usize, order: Order) -> TopKHits {
        let stride = self.stride;
        let mut out = TopKHits {
            nq,
            stride,
            ids: vec![PADDING_ID; nq * stride],
            distances: vec![order.worst(); nq * stride],
        };
        for (row, &q) in present.iter().enumerate().filter(|(_, &q)| q < nq) {
            let (ids, dist) = self.row(row);
            let n = ids.len().min(stride);
            out.ids[q * stride..][..n].copy_from_slice(&ids[..n]);
            out.distances[q * stride..][..n].copy_from_slice(&dist[..n]);
        }
        out
    }

    /// Reads a `TopKQueryResult` and checks that its arrays form `row_num` rows of one stride.
    ///
    /// Only the layout is checked; the caller looks at `status` first. The
    /// arrays move into the hits (no copy).
    pub fn from_wire(result: TopKQueryResult) -> Result<TopKHits, MilvusError> {
        let (nq, stride) = check_layout(result.row_num, result.ids.len(), result.distances.len())?;
        if nq == 0 {
            return Ok(Self::empty());
        }
        Ok(TopKHits {
            nq,
            stride,
            ids: result.ids,
            distances: result.distances,
        })
    }

    /// The successful reply: status SUCCESS with an empty reason, `row_num` = nq.
    ///
    /// Hits without a single entry (stride 0) are sent as `row_num` 0, like Milvus when the
    /// engine returns nothing: pymilvus divides by the stride and fails on `row_num > 0`
    /// with empty arrays.
    pub fn into_wire(self) -> TopKQueryResult {
        if self.stride == 0 || self.ids.is_empty() {
            return TopKQueryResult {
                status: ok_status(),
                row_num: 0,
                ids: Vec::new(),
                distances: Vec::new(),
            };
        }
        TopKQueryResult {
            status: ok_status(),
            row_num: i64::try_from(self.nq).unwrap_or(i64::MAX),
            ids: self.ids,
            distances: self.distances,
        }
    }

    /// The ids and distances of query `q`, padding included. Empty when `q` is out of range
    /// (or the arrays are shorter than `nq * stride`).
    pub fn row(&self, q: usize) -> (&[i64], &[f32]) {
        let Some(range) = self.row_range(q) else {
            return (&[], &[]);
        };
        match (self.ids.get(range.clone()), self.distances.get(range)) {
            (Some(ids), Some(distances)) => (ids, distances),
            _ => (&[], &[]),
        }
    }

    fn row_range(&self, q: usize) -> Option<std::ops::Range<usize>> {
        if q >= self.nq {
            return None;
        }
        let start = q.checked_mul(self.stride)?;
        Some(start..start.checked_add(self.stride)?)
    }

    /// True when both arrays hold exactly `nq * stride` entries.
    fn is_well_formed(&self) -> bool {
        self.nq.checked_mul(self.stride) == Some(self.ids.len())
            && self.ids.len() == self.distances.len()
    }
}

/// The `(nq, stride)` of a reply with `row_num` and arrays of `ids` and `distances` entries,
/// or the `ILLEGAL_SEARCH_RESULT` a misaligned reply is; `(0, 0)` for Milvus' empty result.
/// Shared by [`TopKHits::from_wire`] and [`EncodedHits::parse`], so both reject alike.
fn check_layout(row_num: i64, ids: usize, distances: usize) -> Result<(usize, usize), MilvusError> {
    let nq = usize::try_from(row_num)
        .map_err(|_| illegal_result(format!("row_num {row_num} is negative")))?;
    if ids != distances {
        return Err(illegal_result(format!(
            "{ids} ids but {distances} distances"
        )));
    }
    if nq == 0 {
        if ids != 0 {
            return Err(illegal_result(format!(
                "row_num is 0 but there are {ids} ids"
            )));
        }
        return Ok((0, 0));
    }
    if !ids.is_multiple_of(nq) {
        return Err(illegal_result(format!(
            "{ids} ids are not aligned to row_num {nq}"
        )));
    }
    Ok((nq, ids / nq))
}

fn illegal_result(reason: impl std::fmt::Display) -> MilvusError {
    MilvusError::new(
        ErrorCode::IllegalSearchResult,
        format!("illegal search result: {reason}"),
    )
}

/// Merge partial results of the same `nq` queries into the exact global top-k.
///
/// * Parts with `nq == 0` are skipped (a node with no files answers `row_num` 0). If every part
///   is empty the result is [`TopKHits::empty`]. All other parts must have the same `nq` and be
///   well formed (`ids` and `distances` of length `nq * stride`), else `ILLEGAL_SEARCH_RESULT`.
/// * The output stride is `min(topk, Σ part strides)`: what one big Milvus returns
///   (`min(topk, rows searched)`). A stride of 0 gives [`TopKHits::empty`].
/// * Each merged row holds the real hits (id != -1) of all parts, best first by `order`, ties by
///   the smaller id, cut at `topk`, then padded with id -1 and distance `order.worst()`.
///   Padding in the inputs is dropped before merging.
/// * NaN distances rank after every other real hit; nothing here panics on bad input.
/// * Ids are **not** deduplicated: segments (and the nodes that own them) are disjoint, so an
///   id appears in at most one part.
///
/// Input rows are expected best first with padding at the end; a row that is not is sorted
/// here (the check is one pass over the row), so the result is right either way.
pub fn merge(parts: Vec<TopKHits>, topk: usize, order: Order) -> Result<TopKHits, MilvusError> {
    let parts: Vec<TopKHits> = parts.into_iter().filter(|p| p.nq != 0).collect();
    let Some(nq) = parts.first().map(|p| p.nq) else {
        return Ok(TopKHits::empty());
    };
    for (index, part) in parts.iter().enumerate() {
        if part.nq != nq {
            return Err(illegal_result(format!(
                "partial results disagree on the number of queries: {nq} and {}",
                part.nq
            )));
        }
        if !part.is_well_formed() {
            return Err(illegal_result(format!(
                "partial result {index} has {} ids and {} distances for {nq} queries of stride {}",
                part.ids.len(),
                part.distances.len(),
                part.stride
            )));
        }
    }
    let strides_total = parts
        .iter()
        .fold(0usize, |total, p| total.saturating_add(p.stride));
    let stride = topk.min(strides_total);
    if stride == 0 {
        return Ok(TopKHits::empty());
    }

    let mut merger = RowMerger::new(order, parts.len());
    let capacity = nq.saturating_mul(stride);
    let mut ids = Vec::with_capacity(capacity);
    let mut distances = Vec::with_capacity(capacity);
    for q in 0..nq {
        merger.merge_row(&parts, q, stride, &mut ids, &mut distances);
    }
    Ok(TopKHits {
        nq,
        stride,
        ids,
        distances,
    })
}

/// The ranking key of a distance as an integer whose order is the ranking:
/// smaller is better whatever the order, NaN after every number, -0.0 equal
/// to 0.0 (as `partial_cmp` has it). Negation is exact, so descending
/// distances keep their exact relative order. Comparing these integers
/// instead of floats with NaN checks is most of the merge's speed (see
/// `benches/fast_path.rs`); the bit trick is the usual sortable-float map.
#[inline(always)]
fn rank_key(order: Order, distance: f32) -> u32 {
    match order {
        Order::Ascending => ascending_key(distance),
        Order::Descending => ascending_key(-distance),
    }
}

/// [`rank_key`] of an ascending distance, written with selects instead of
/// branches: the merge computes one per hit it takes.
#[inline(always)]
fn ascending_key(key: f32) -> u32 {
    let bits = if key == 0.0 { 0 } else { key.to_bits() };
    // Negative: all bits flipped; positive: the sign bit set.
    let flip = (((bits as i32) >> 31) as u32) | 0x8000_0000;
    if key.is_nan() {
        u32::MAX
    } else {
        bits ^ flip
    }
}

/// True when the rank keys of `distances` strictly increase: the hits are
/// then sorted by their whole rank whatever their ids.
///
/// The floats are compared as floats, pair by pair, the answers and-ed
/// without an early exit, so the loop vectorises (rows are nearly always
/// sorted). It can only say false too often, never true wrongly: a strict
/// float `<` (or `>`) implies strictly increasing keys, and is false for
/// every pair with a NaN or of -0.0 and 0.0, rows that the caller then
/// checks hit by hit.
fn strictly_ranked(order: Order, distances: &[f32]) -> bool {
    let next = distances.get(1..).unwrap_or_default();
    let pairs = distances.iter().zip(next);
    match order {
        Order::Ascending => pairs.fold(true, |ok, (a, b)| ok & (a < b)),
        Order::Descending => pairs.fold(true, |ok, (a, b)| ok & (a > b)),
    }
}

/// [`strictly_ranked`] over distances encoded as little-endian `f32`s (a
/// reply's packed field, at any offset), copied into `scratch` first: one
/// copy, where reading them in place does not vectorise.
fn strictly_ranked_le(order: Order, distances: &[u8], scratch: &mut Vec<f32>) -> bool {
    let n = distances.len() / 4;
    scratch.clear();
    scratch.resize(n, 0.0);
    bytemuck::cast_slice_mut::<f32, u8>(scratch).copy_from_slice(&distances[..4 * n]);
    // A no-op on little-endian machines.
    for d in scratch.iter_mut() {
        *d = f32::from_bits(u32::from_le(d.to_bits()));
    }
    strictly_ranked(order, scratch)
}

/// A hit's whole rank as one integer: the rank key, then the id (signed
/// order), so comparing two hits is one integer comparison. Bits 96.. stay
/// zero, so [`EXHAUSTED`] ranks after every hit.
#[inline(always)]
fn packed_rank(key: u32, id: i64) -> u128 {
    (u128::from(key) << 64) | u128::from((id as u64) ^ (1 << 63))
}

/// The head of a run with no hits left.
const EXHAUSTED: u128 = u128::MAX;

/// Where one part's row is read from in a merge.
#[derive(Clone, Copy)]
enum RunSource {
    /// The part's own arrays from `start`: the row was already clean.
    Part { start: usize },
    /// `RowMerger::sorted_*[start..]`: the row had to be sorted.
    Sorted { start: usize },
}

/// Buffers reused across the rows of one merge.
struct RowMerger {
    order: Order,
    /// Where each part's row of real hits is, and how many it holds.
    sources: Vec<(RunSource, usize)>,
    /// `packed_rank` of each run's next hit, or `EXHAUSTED`.
    heads: Vec<u128>,
    /// How far each run has been read.
    next: Vec<usize>,
    /// Sorted copies of the rows that were not clean.
    sorted_ids: Vec<i64>,
    sorted_distances: Vec<f32>,
    sort_buffer: Vec<(i64, f32)>,
}

impl RowMerger {
    fn new(order: Order, parts: usize) -> Self {
        Self {
            order,
            sources: Vec::with_capacity(parts),
            heads: Vec::with_capacity(parts),
            next: Vec::with_capacity(parts),
            sorted_ids: Vec::new(),
            sorted_distances: Vec::new(),
            sort_buffer: Vec::new(),
        }
    }

    /// Appends the merged row `q` (exactly `stride` entries) to `ids` and `distances`.
    fn merge_row(
        &mut self,
        parts: &[TopKHits],
        q: usize,
        stride: usize,
        ids: &mut Vec<i64>,
        distances: &mut Vec<f32>,
    ) {
        self.sources.clear();
        self.sorted_ids.clear();
        self.sorted_distances.clear();
        for part in parts {
            let start = q * part.stride;
            let (row_ids, row_distances) = part.row(q);
            let source = match clean_prefix(self.order, row_ids, row_distances) {
                Some(len) => (RunSource::Part { start }, len),
                None => {
                    let start = self.sorted_ids.len();
                    self.sort_buffer.clear();
                    sort_real_hits(self.order, row_ids, row_distances, &mut self.sort_buffer);
                    self.sorted_ids
                        .extend(self.sort_buffer.iter().map(|&(id, _)| id));
                    self.sorted_distances
                        .extend(self.sort_buffer.iter().map(|&(_, d)| d));
                    (RunSource::Sorted { start }, self.sort_buffer.len())
                }
            };
            self.sources.push(source);
        }
        let runs = self
            .sources
            .iter()
            .zip(parts)
            .map(|(&(source, len), part)| {
                let (ids, distances, start) = match source {
                    RunSource::Part { start } => (&part.ids, &part.distances, start),
                    RunSource::Sorted { start } => {
                        (&self.sorted_ids, &self.sorted_distances, start)
                    }
                };
                let end = start + len;
                (
                    ids.get(start..end).unwrap_or_default(),
                    distances.get(start..end).unwrap_or_default(),
                )
            });
        let runs: RunList<'_> = runs.collect();
        let taken = merge_runs(
            self.order,
            &runs,
            stride,
            &mut self.heads,
            &mut self.next,
            ids,
            distances,
        );
        ids.extend(std::iter::repeat_n(PADDING_ID, stride - taken));
        distances.extend(std::iter::repeat_n(self.order.worst(), stride - taken));
    }
}

/// The runs of one row: each the (ids, distances) of real hits, best first.
/// Inline up to 16 parts (one per read-only node), so a row allocates nothing.
type RunList<'a> = smallvec::SmallVec<[(&'a [i64], &'a [f32]); 16]>;

/// Appends the best `stride` hits of `runs` (each sorted best first) to `ids`
/// and `distances`, best first, the lower run winning a full tie; returns
/// how many it took (fewer when the runs hold fewer). `heads` and `next` are
/// scratch.
///
/// The best head is picked by a scan of every run's head: the runs are one
/// per read-only node (a handful to a few dozen), where k independent
/// integer comparisons beat a heap, and a loser tree too: one measured on 8
/// runs ran fewer instructions but 1.1-1.2x slower, each level of its
/// replay waiting on the one before (`benches/fast_path.rs`, merge).
fn merge_runs(
    order: Order,
    runs: &[(&[i64], &[f32])],
    stride: usize,
    heads: &mut Vec<u128>,
    next: &mut Vec<usize>,
    ids: &mut Vec<i64>,
    distances: &mut Vec<f32>,
) -> usize {
    let head = |run: &(&[i64], &[f32]), at: usize| match (run.0.get(at), run.1.get(at)) {
        (Some(&id), Some(&distance)) => packed_rank(rank_key(order, distance), id),
        _ => EXHAUSTED,
    };
    if let [(run_ids, run_distances)] = runs {
        let n = stride.min(run_ids.len()).min(run_distances.len());
        ids.extend_from_slice(&run_ids[..n]);
        distances.extend_from_slice(&run_distances[..n]);
        return n;
    }
    heads.clear();
    heads.extend(runs.iter().map(|run| head(run, 0)));
    next.clear();
    next.resize(runs.len(), 0);
    let mut taken = 0;
    while taken < stride {
        let Some(best) = best_head(heads) else {
            break;
        };
        let (Some(run), Some(at)) = (runs.get(best), next.get_mut(best)) else {
            break;
        };
        if let (Some(&id), Some(&distance)) = (run.0.get(*at), run.1.get(*at)) {
            ids.push(id);
            distances.push(distance);
        }
        *at += 1;
        heads[best] = head(run, *at);
        taken += 1;
    }
    taken
}

/// The index of the best of `heads` (the first of equal ranks), `None` when
/// every head is `EXHAUSTED`.
#[inline(always)]
fn best_head(heads: &[u128]) -> Option<usize> {
    let mut best = 0;
    let mut rank = EXHAUSTED;
    // Strictly smaller only: the lower run wins a full tie.
    for (i, &h) in heads.iter().enumerate() {
        if h < rank {
            rank = h;
            best = i;
        }
    }
    (rank != EXHAUSTED).then_some(best)
}

/// The number of real hits when the row is clean (sorted best first, padding only at the end).
///
/// Nearly every row is: its real hits are counted, and their distances
/// checked by [`strictly_ranked`], in passes without early exits; only a row
/// with equal distances, a NaN or out of order is checked hit by hit, ids
/// included.
fn clean_prefix(order: Order, ids: &[i64], distances: &[f32]) -> Option<usize> {
    let real = ids.iter().filter(|&&id| id != PADDING_ID).count();
    // `real` non-padding ids and padding from `real` on: the padding is all at the end.
    if ids[real..].iter().any(|&id| id != PADDING_ID) {
        return None;
    }
    let distances = distances.get(..real)?;
    if strictly_ranked(order, distances) {
        return Some(real);
    }
    let mut previous = 0u128;
    for (&id, &distance) in ids[..real].iter().zip(distances) {
        let rank = packed_rank(rank_key(order, distance), id);
        if rank < previous {
            return None;
        }
        previous = rank;
    }
    Some(real)
}

/// Appends the real hits of a row to `out`, sorted best first (the same sort for every
/// caller, so rows that tie on the whole rank come out in one order everywhere).
fn sort_real_hits(order: Order, ids: &[i64], distances: &[f32], out: &mut Vec<(i64, f32)>) {
    let start = out.len();
    out.extend(
        ids.iter()
            .zip(distances)
            .filter(|(&id, _)| id != PADDING_ID)
            .map(|(&id, &distance)| (id, distance)),
    );
    out[start..].sort_unstable_by_key(|&(id, distance)| packed_rank(rank_key(order, distance), id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn hits(nq: usize, stride: usize, ids: &[i64], distances: &[f32]) -> TopKHits {
        TopKHits {
            nq,
            stride,
            ids: ids.to_vec(),
            distances: distances.to_vec(),
        }
    }

    pub(super) fn any_distance() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => proptest::num::f32::ANY,
            1 => Just(f32::NAN),
            1 => Just(-0.0f32),
            1 => Just(0.0f32),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            2 => (-3i8..3).prop_map(f32::from),
        ]
    }

    proptest! {
        /// The integer key orders distances as the float comparison does:
        /// NaN last, -0.0 equal to 0.0, descending order reversed exactly.
        #[test]
        fn rank_key_orders_like_the_floats(a in any_distance(), b in any_distance()) {
            let float_order = |x: f32, y: f32| {
                x.is_nan().cmp(&y.is_nan()).then_with(|| x.partial_cmp(&y).unwrap_or(Ordering::Equal))
            };
            prop_assert_eq!(
                rank_key(Order::Ascending, a).cmp(&rank_key(Order::Ascending, b)),
                float_order(a, b)
            );
            prop_assert_eq!(
                rank_key(Order::Descending, a).cmp(&rank_key(Order::Descending, b)),
                float_order(-a, -b)
            );
        }
    }

    proptest! {
        /// One packed comparison ranks hits exactly as (key, id) does, negative ids included.
        #[test]
        fn packed_rank_orders_like_key_then_id(
            a in (any::<u32>(), any::<i64>()),
            b in (any::<u32>(), any::<i64>()),
        ) {
            prop_assert_eq!(packed_rank(a.0, a.1).cmp(&packed_rank(b.0, b.1)), a.cmp(&b));
            prop_assert!(packed_rank(a.0, a.1) < EXHAUSTED);
        }
    }

    #[test]
    fn spread_rows_pads_queries_that_were_not_searched() {
        let found = hits(2, 2, &[1, 2, 3, 4], &[0.1, 0.2, 0.3, 0.4]);
        let out = found.spread_rows(&[0, 2], 3, Order::Ascending);
        assert_eq!(out.ids, vec![1, 2, -1, -1, 3, 4]);
        assert_eq!(out.distances[2], f32::MAX);
    }

    #[test]
    fn spread_rows_survives_a_short_answer() {
        let found = hits(1, 2, &[1, 2], &[0.1, 0.2]);
        let out = found.spread_rows(&[0, 1], 2, Order::Descending);
        assert_eq!(out.ids, vec![1, 2, -1, -1]);
        assert_eq!(out.distances[3], -f32::MAX);
        // A position past `nq` is ignored, never a panic.
        let out = found.spread_rows(&[5], 2, Order::Ascending);
        assert_eq!(out.ids, vec![-1; 4]);
    }

    fn wire(row_num: i64, ids: &[i64], distances: &[f32]) -> TopKQueryResult {
        TopKQueryResult {
            status: ok_status(),
            row_num,
            ids: ids.to_vec(),
            distances: distances.to_vec(),
        }
    }

    /// The expected row: every real hit sorted, cut at topk, padded to `stride`.
    pub(super) fn reference_row(
        mut all: Vec<(i64, f32)>,
        topk: usize,
        stride: usize,
        order: Order,
    ) -> Vec<(i64, f32)> {
        // Written independently of `packed_rank`, so the two check each other.
        all.sort_by(|a, b| match (a.1.is_nan(), b.1.is_nan()) {
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (true, true) => a.0.cmp(&b.0),
            (false, false) => match order {
                Order::Ascending => a.1.total_cmp(&b.1),
                Order::Descending => b.1.total_cmp(&a.1),
            }
            .then(a.0.cmp(&b.0)),
        });
        all.truncate(topk);
        all.resize(stride, (PADDING_ID, order.worst()));
        all
    }

    /// Bit-exact row contents, so NaN compares equal to itself.
    fn row_bits(result: &TopKHits, q: usize) -> Vec<(i64, u32)> {
        let (ids, distances) = result.row(q);
        ids.iter()
            .zip(distances)
            .map(|(&id, d)| (id, d.to_bits()))
            .collect()
    }

    fn bits(row: &[(i64, f32)]) -> Vec<(i64, u32)> {
        row.iter().map(|&(id, d)| (id, d.to_bits())).collect()
    }

    #[test]
    fn merges_two_l2_parts_best_first_and_caps_at_topk() {
        let a = hits(1, 3, &[10, 11, 12], &[0.1, 0.5, 0.9]);
        let b = hits(1, 2, &[20, 21], &[0.2, 0.6]);
        let merged = merge(vec![a, b], 4, Order::Ascending).unwrap();
        assert_eq!(merged.nq, 1);
        assert_eq!(merged.stride, 4);
        assert_eq!(merged.ids, vec![10, 20, 11, 21]);
        assert_eq!(merged.distances, vec![0.1, 0.2, 0.5, 0.6]);
    }

    #[test]
    fn ip_merges_descending() {
        let a = hits(2, 2, &[1, 2, 3, 4], &[0.9, 0.1, 0.8, 0.7]);
        let b = hits(2, 2, &[5, 6, 7, -1], &[0.95, 0.5, 0.75, -f32::MAX]);
        let merged = merge(vec![a, b], 3, Order::Descending).unwrap();
        assert_eq!(merged.stride, 3);
        assert_eq!(merged.row(0), (&[5, 1, 6][..], &[0.95, 0.9, 0.5][..]));
        assert_eq!(merged.row(1), (&[3, 7, 4][..], &[0.8, 0.75, 0.7][..]));
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let a = hits(1, 2, &[9, 30], &[1.0, 2.0]);
        let b = hits(1, 2, &[4, 7], &[1.0, 1.0]);
        let merged = merge(vec![a, b], 4, Order::Ascending).unwrap();
        assert_eq!(merged.ids, vec![4, 7, 9, 30]);
    }

    #[test]
    fn topk_larger_than_total_gives_the_sum_of_strides_padded() {
        // 2 + 3 rows searched, topk 10: Milvus answers with stride 5, not 10.
        let a = hits(1, 2, &[1, -1], &[0.3, f32::MAX]);
        let b = hits(1, 3, &[2, 3, -1], &[0.1, 0.2, f32::MAX]);
        let merged = merge(vec![a, b], 10, Order::Ascending).unwrap();
        assert_eq!(merged.stride, 5);
        assert_eq!(merged.ids, vec![2, 3, 1, -1, -1]);
        assert_eq!(merged.distances, vec![0.1, 0.2, 0.3, f32::MAX, f32::MAX]);
    }

    #[test]
    fn padding_of_descending_merge_uses_lowest_float() {
        let a = hits(1, 2, &[1, -1], &[0.3, -f32::MAX]);
        let merged = merge(vec![a], 5, Order::Descending).unwrap();
        assert_eq!(merged.ids, vec![1, -1]);
        assert_eq!(merged.distances, vec![0.3, -f32::MAX]);
    }

    #[test]
    fn all_parts_empty_gives_empty() {
        assert_eq!(
            merge(vec![], 10, Order::Ascending).unwrap(),
            TopKHits::empty()
        );
        let parts = vec![TopKHits::empty(), TopKHits::empty()];
        assert_eq!(
            merge(parts, 10, Order::Descending).unwrap(),
            TopKHits::empty()
        );
    }

    #[test]
    fn empty_parts_are_skipped() {
        let a = hits(1, 1, &[1], &[0.5]);
        let merged = merge(vec![TopKHits::empty(), a.clone()], 5, Order::Ascending).unwrap();
        assert_eq!(merged, a);
    }

    #[test]
    fn zero_stride_or_zero_topk_gives_empty() {
        let no_entries = hits(2, 0, &[], &[]);
        assert_eq!(
            merge(vec![no_entries], 10, Order::Ascending).unwrap(),
            TopKHits::empty()
        );
        let a = hits(1, 1, &[1], &[0.5]);
        assert_eq!(
            merge(vec![a], 0, Order::Ascending).unwrap(),
            TopKHits::empty()
        );
    }

    #[test]
    fn mismatched_nq_is_an_illegal_search_result() {
        let a = hits(1, 1, &[1], &[0.5]);
        let b = hits(2, 1, &[2, 3], &[0.5, 0.6]);
        let err = merge(vec![a, b], 5, Order::Ascending).unwrap_err();
        assert_eq!(err.code, ErrorCode::IllegalSearchResult);
        assert!(err.reason.contains("number of queries"), "{}", err.reason);
    }

    #[test]
    fn malformed_part_is_an_error_not_a_panic() {
        let short = hits(2, 3, &[1, 2], &[0.1, 0.2]);
        let err = merge(vec![short], 5, Order::Ascending).unwrap_err();
        assert_eq!(err.code, ErrorCode::IllegalSearchResult);
        let lopsided = hits(1, 2, &[1, 2], &[0.1]);
        assert!(merge(vec![lopsided], 5, Order::Ascending).is_err());
    }

    #[test]
    fn unsorted_rows_and_padding_in_the_middle_are_handled() {
        let a = hits(1, 4, &[-1, 3, 1, 2], &[f32::MAX, 0.3, 0.1, 0.2]);
        let b = hits(1, 2, &[5, 4], &[0.25, 0.05]);
        let merged = merge(vec![a, b], 10, Order::Ascending).unwrap();
        assert_eq!(merged.ids, vec![4, 1, 2, 5, 3, -1]);
        assert_eq!(merged.distances, vec![0.05, 0.1, 0.2, 0.25, 0.3, f32::MAX]);
    }

    #[test]
    fn nan_distances_rank_last_in_both_orders() {
        for order in [Order::Ascending, Order::Descending] {
            let a = hits(1, 2, &[1, 2], &[f32::NAN, 0.5]);
            let b = hits(1, 1, &[3], &[0.7]);
            let merged = merge(vec![a, b], 3, order).unwrap();
            assert_eq!(merged.ids[2], 1, "{order:?}");
            assert!(merged.distances[2].is_nan());
        }
    }

    #[test]
    fn duplicate_ids_are_kept() {
        let a = hits(1, 1, &[7], &[0.1]);
        let b = hits(1, 1, &[7], &[0.2]);
        let merged = merge(vec![a, b], 2, Order::Ascending).unwrap();
        assert_eq!(merged.ids, vec![7, 7]);
    }

    #[test]
    fn from_wire_reads_rows() {
        let result = TopKHits::from_wire(wire(2, &[5, 6, 7, -1], &[0.1, 0.2, 0.3, 9.0])).unwrap();
        assert_eq!(result.nq, 2);
        assert_eq!(result.stride, 2);
        assert_eq!(result.row(1), (&[7, -1][..], &[0.3, 9.0][..]));
        assert_eq!(result.row(2), (&[][..], &[][..]));
        assert_eq!(
            TopKHits::from_wire(wire(0, &[], &[])).unwrap(),
            TopKHits::empty()
        );
    }

    #[test]
    fn from_wire_rejects_misaligned_results() {
        let cases = [
            wire(-1, &[], &[]),
            wire(0, &[1], &[0.1]),
            wire(2, &[1, 2, 3], &[0.1, 0.2, 0.3]),
            wire(1, &[1, 2], &[0.1]),
        ];
        for case in cases {
            let err = TopKHits::from_wire(case.clone()).unwrap_err();
            assert_eq!(err.code, ErrorCode::IllegalSearchResult, "{case:?}");
            assert!(err.reason.starts_with("illegal search result: "));
        }
    }

    #[test]
    fn into_wire_round_trips() {
        let result = hits(2, 1, &[3, 4], &[0.5, 0.6]);
        let reply = result.clone().into_wire();
        assert_eq!(reply.status, ok_status());
        assert_eq!(reply.row_num, 2);
        assert_eq!(TopKHits::from_wire(reply).unwrap(), result);
    }

    #[test]
    fn into_wire_sends_no_entries_as_row_num_zero() {
        let reply = hits(3, 0, &[], &[]).into_wire();
        assert_eq!(reply.row_num, 0);
        assert!(reply.ids.is_empty() && reply.distances.is_empty());
        assert_eq!(TopKHits::empty().into_wire().row_num, 0);
    }

    /// One query's hits: ids with repeats possible, distances with many ties and some NaN.
    pub(super) fn hit_set() -> impl Strategy<Value = Vec<(i64, f32)>> {
        let distance = prop_oneof![
            20 => (0u8..20).prop_map(f32::from),
            1 => Just(f32::NAN),
        ];
        prop::collection::vec((0i64..500, distance), 0..40)
    }

    pub(super) fn order() -> impl Strategy<Value = Order> {
        prop_oneof![Just(Order::Ascending), Just(Order::Descending)]
    }

    /// Splits each query's hits over `assignment`'s parts, sorts each part's rows best first,
    /// pads every part to a uniform stride of at least its largest row, and optionally
    /// scrambles rows (reversed: padding first, worst hit first).
    pub(super) fn split(
        queries: &[Vec<(i64, f32)>],
        assignment: &[usize],
        part_count: usize,
        extra_padding: &[usize],
        scramble: &[bool],
        order: Order,
    ) -> Vec<TopKHits> {
        let nq = queries.len();
        let mut rows = vec![vec![Vec::new(); nq]; part_count];
        let mut next = 0;
        for (q, query) in queries.iter().enumerate() {
            for &hit in query {
                let part = assignment[next % assignment.len()] % part_count;
                next += 1;
                rows[part][q].push(hit);
            }
        }
        rows.into_iter()
            .enumerate()
            .map(|(p, part_rows)| {
                let longest = part_rows.iter().map(Vec::len).max().unwrap_or(0);
                let stride = longest + extra_padding[p % extra_padding.len()];
                let mut out = TopKHits {
                    nq,
                    stride,
                    ..TopKHits::default()
                };
                for row in part_rows {
                    let mut row = reference_row(row, usize::MAX, stride, order);
                    if scramble[p % scramble.len()] {
                        row.reverse();
                    }
                    out.ids.extend(row.iter().map(|h| h.0));
                    out.distances.extend(row.iter().map(|h| h.1));
                }
                out
            })
            .collect()
    }

    proptest! {
        #[test]
        fn any_split_merges_back_to_the_sorted_whole(
            queries in prop::collection::vec(hit_set(), 1..4),
            assignment in prop::collection::vec(0usize..24, 1..50),
            part_count in 1usize..24,
            extra_padding in prop::collection::vec(0usize..4, 1..8),
            scramble in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
            topk in 1usize..60,
            order in order(),
        ) {
            let parts = split(&queries, &assignment, part_count, &extra_padding, &scramble, order);
            let strides_total: usize = parts.iter().map(|p| p.stride).sum();
            let merged = merge(parts, topk, order).unwrap();
            let stride = topk.min(strides_total);
            if stride == 0 {
                prop_assert_eq!(merged, TopKHits::empty());
                return Ok(());
            }
            prop_assert_eq!(merged.nq, queries.len());
            prop_assert_eq!(merged.stride, stride);
            for (q, query) in queries.iter().enumerate() {
                let expected = reference_row(query.clone(), topk, stride, order);
                prop_assert_eq!(row_bits(&merged, q), bits(&expected));
            }
        }

        #[test]
        fn each_part_cut_at_topk_still_gives_the_global_topk(
            queries in prop::collection::vec(hit_set(), 1..3),
            assignment in prop::collection::vec(0usize..5, 1..30),
            topk in 1usize..20,
            order in order(),
        ) {
            let parts = split(&queries, &assignment, 5, &[0], &[false], order);
            // What each node would send: its own top-k only.
            let cut: Vec<TopKHits> = parts
                .into_iter()
                .map(|p| {
                    let stride = p.stride.min(topk);
                    let mut out = TopKHits { nq: p.nq, stride, ..TopKHits::default() };
                    for q in 0..p.nq {
                        let (ids, distances) = p.row(q);
                        out.ids.extend_from_slice(&ids[..stride]);
                        out.distances.extend_from_slice(&distances[..stride]);
                    }
                    out
                })
                .collect();
            let merged = merge(cut, topk, order).unwrap();
            for (q, query) in queries.iter().enumerate() {
                let real: Vec<(i64, u32)> = row_bits(&merged, q)
                    .into_iter()
                    .filter(|h| h.0 != PADDING_ID)
                    .collect();
                let expected = reference_row(query.clone(), topk, query.len().min(topk), order);
                prop_assert_eq!(real, bits(&expected));
            }
        }
    }
}
