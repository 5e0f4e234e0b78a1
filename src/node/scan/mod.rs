//! Exact distance kernels and the per-segment top-k scan: the brute-force
//! search that faiss `IndexFlat` / `IndexBinaryFlat` perform in Milvus 1.1.
//!
//! Metric definitions follow the faiss copy vendored by Milvus 1.1
//! (`core/src/index/thirdparty/faiss`):
//! * L2: squared euclidean distance, ascending. Computed directly as
//!   `Σ (q-x)²` (faiss does the same for fewer than 20 queries).
//! * IP: inner product, descending.
//! * HAMMING: `popcount(q ^ x)` as f32 (knowhere converts faiss' int32 to float).
//! * JACCARD: `(|q|x| - |q&x|) / |q|x|`, and **1.0** when the union is empty
//!   (`fvec_jaccard` / `JaccardComputer*` in `utils/BinaryDistance.cpp`,
//!   `utils/jaccard-inl.h`).
//! * TANIMOTO: faiss ranks by the Jaccard distance and then rewrites each hit as
//!   `-log2(1 - jaccard)` (`IndexBinaryFlat::search`); an empty union or
//!   disjoint vectors therefore give `+inf`.
//! * SUBSTRUCTURE / SUPERSTRUCTURE: filters, not distances
//!   (`utils/substructure-inl.h`, `utils/superstructure-inl.h`): a row matches a
//!   SUBSTRUCTURE query `q` when `q & x == q` (the query is contained in the row)
//!   and a SUPERSTRUCTURE query when `q & x == x` (the row is contained in the
//!   query). Matches get distance 0, other rows are left out. faiss keeps the
//!   first `k` matches in row order; here ties are broken by the smaller id, which
//!   is the same when ids grow with the row number.
//!
//! A NaN distance (only possible with NaN in the float data) never enters a
//! faiss heap, so such rows are left out here too.
//!
//! Speed: rows are scanned in blocks, each block once for all queries. Float
//! scores are computed in tiles (4 queries × 2 rows, or 1 query × 4 rows) with
//! 8-lane accumulators. On x86-64 CPUs with AVX2+FMA+POPCNT, detected at run
//! time, float tiles use `std::arch` intrinsics and binary kernels are compiled
//! with those features; this dispatch and the unaligned vector loads are the
//! only `unsafe` here. Elsewhere a portable version runs. Each query keeps its
//! best hits in a buffer that is cut back to `k` by quickselect whenever it
//! holds about `2k`, so memory and time stay linear even for `topk` of a
//! million.

use std::cmp::Ordering;

use crate::merge::TopKHits;
use crate::types::MetricType;

/// Vectors of one segment, borrowed, row-major.
#[derive(Clone, Copy, Debug)]
pub enum VectorsRef<'a> {
    /// `data.len() / dim` rows of `dim` floats.
    Float { dim: usize, data: &'a [f32] },
    /// `data.len() / (dim_bits / 8)` rows of `dim_bits / 8` bytes.
    Binary { dim_bits: usize, data: &'a [u8] },
}

/// Query vectors, same layout as [`VectorsRef`] (nq rows).
#[derive(Clone, Copy, Debug)]
pub enum QueriesRef<'a> {
    Float { dim: usize, data: &'a [f32] },
    Binary { dim_bits: usize, data: &'a [u8] },
}

/// Inputs that do not describe a searchable segment and query batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("metric {metric} cannot be used with {kind} vectors")]
    MetricMismatch {
        metric: MetricType,
        kind: &'static str,
    },
    #[error("segment vectors are {segment} but the queries are {queries}")]
    KindMismatch {
        segment: &'static str,
        queries: &'static str,
    },
    #[error(
        "invalid dimension {dim}: it must be positive (and a multiple of 8 for binary vectors)"
    )]
    BadDimension { dim: usize },
    #[error("segment dimension {segment} differs from query dimension {queries}")]
    DimensionMismatch { segment: usize, queries: usize },
    #[error("{what} holds {len} values, which is not a whole number of {row_len}-value rows")]
    RaggedData {
        what: &'static str,
        len: usize,
        row_len: usize,
    },
    #[error("segment has {rows} rows but {ids} ids")]
    IdCount { rows: usize, ids: usize },
}

// ---------------------------------------------------------------------------
// Scalar reference helpers (also the test oracle).

/// Squared euclidean distance over the common length of `a` and `b`.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Inner product over the common length of `a` and `b`.
pub fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Distance of a binary query `q` to a binary row `x` (same byte length) under
/// a binary metric. `None` when the row does not match a SUBSTRUCTURE /
/// SUPERSTRUCTURE query, or when `metric` is not a binary metric.
pub fn binary_distance(metric: MetricType, q: &[u8], x: &[u8]) -> Option<f32> {
    let count =
        |f: fn(u8, u8) -> u8| -> u32 { q.iter().zip(x).map(|(a, b)| f(*a, *b).count_ones()).sum() };
    match metric {
        MetricType::Hamming => Some(count(|a, b| a ^ b) as f32),
        MetricType::Jaccard => Some(jaccard_from_counts(
            count(|a, b| a & b),
            count(|a, b| a | b),
        )),
        MetricType::Tanimoto => Some(tanimoto_from_jaccard(jaccard_from_counts(
            count(|a, b| a & b),
            count(|a, b| a | b),
        ))),
        MetricType::Substructure => q.iter().zip(x).all(|(a, b)| a & b == *a).then_some(0.0),
        MetricType::Superstructure => q.iter().zip(x).all(|(a, b)| a & b == *b).then_some(0.0),
        MetricType::L2 | MetricType::Ip => None,
    }
}

fn jaccard_from_counts(intersection: u32, union: u32) -> f32 {
    if union == 0 {
        1.0
    } else {
        (union - intersection) as f32 / union as f32
    }
}

fn tanimoto_from_jaccard(jaccard: f32) -> f32 {
    (-(1.0 - f64::from(jaccard)).log2()) as f32
}

// ---------------------------------------------------------------------------
// Public entry point.

/// Exact top-k of every query over one segment.
///
/// `ids[i]` is the id of row `i`; rows for which `is_deleted(row)` is true are
/// skipped (it is called once per row, whatever `nq`). The result has `nq` rows
/// with stride `min(topk, rows)`, counting deleted rows, exactly like a Milvus
/// file contributes `min(row_count, topk)` hits per query; queries left short by
/// deleted (or non-matching) rows are padded with id -1 and distance
/// `metric.order().worst()`. Hits are sorted best-first by `metric.order()`,
/// ties broken by the smaller id.
pub fn search_segment(
    metric: MetricType,
    vectors: VectorsRef,
    ids: &[i64],
    is_deleted: impl Fn(usize) -> bool,
    queries: QueriesRef,
    topk: usize,
) -> Result<TopKHits, ScanError> {
    search_segment_with(
        Kernel::detect(),
        metric,
        vectors,
        ids,
        is_deleted,
        queries,
        topk,
    )
}

/// Which compiled variant of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Baseline target features; works everywhere.
    Portable,
    /// x86-64 with AVX2, FMA and POPCNT, checked at run time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// Rows scored per pass; the score buffer holds `nq × BLOCK_ROWS` floats.
const BLOCK_ROWS: usize = 256;

fn search_segment_with(
    kernel: Kernel,
    metric: MetricType,
    vectors: VectorsRef,
    ids: &[i64],
    is_deleted: impl Fn(usize) -> bool,
    queries: QueriesRef,
    topk: usize,
) -> Result<TopKHits, ScanError> {
    let layout = check_layout(metric, &vectors, ids, &queries)?;
    let stride = topk.min(layout.rows);
    let worst = metric.order().worst();
    let mut hits = TopKHits {
        nq: layout.nq,
        stride,
        ids: vec![-1; layout.nq * stride],
        distances: vec![worst; layout.nq * stride],
    };
    if stride == 0 || layout.nq == 0 {
        return Ok(hits);
    }

    let mut collectors: Vec<TopK> = (0..layout.nq).map(|_| TopK::new(stride)).collect();
    let binary_query_words = match queries {
        QueriesRef::Binary { data, .. } => query_words(layout.row_len, data),
        QueriesRef::Float { .. } => Vec::new(),
    };
    let mut keys = vec![0f32; layout.nq * BLOCK_ROWS];
    let mut deleted = [false; BLOCK_ROWS];
    let mut start = 0;
    while start < layout.rows {
        let block_rows = BLOCK_ROWS.min(layout.rows - start);
        for (offset, flag) in deleted[..block_rows].iter_mut().enumerate() {
            *flag = is_deleted(start + offset);
        }
        let block_keys = &mut keys[..layout.nq * block_rows];
        match (vectors, queries) {
            (
                VectorsRef::Float { dim, data },
                QueriesRef::Float {
                    data: query_data, ..
                },
            ) => {
                let block = &data[start * dim..(start + block_rows) * dim];
                float_block_keys(kernel, metric, dim, query_data, block, block_keys);
            }
            (
                VectorsRef::Binary { data, .. },
                QueriesRef::Binary {
                    data: query_data, ..
                },
            ) => {
                let row_bytes = layout.row_len;
                let block = &data[start * row_bytes..(start + block_rows) * row_bytes];
                binary_block_keys(
                    kernel,
                    metric,
                    row_bytes,
                    &binary_query_words,
                    query_data,
                    block,
                    block_keys,
                );
            }
            // check_layout rejected mixed kinds.
            _ => return Ok(hits),
        }
        let block_ids = &ids[start..start + block_rows];
        for (collector, query_keys) in collectors
            .iter_mut()
            .zip(block_keys.chunks_exact(block_rows))
        {
            collector.offer_block(query_keys, block_ids, &deleted[..block_rows]);
        }
        start += block_rows;
    }

    let descending = metric.order() == crate::types::Order::Descending;
    for (q, collector) in collectors.into_iter().enumerate() {
        let mut best = collector.into_sorted();
        if metric == MetricType::Tanimoto {
            for hit in &mut best {
                hit.key = tanimoto_from_jaccard(hit.key);
            }
            // The transform is monotone; re-sorting only settles ids of keys that
            // became equal after rounding.
            best.sort_by(compare_candidates);
        }
        let row_ids = &mut hits.ids[q * stride..(q + 1) * stride];
        let row_distances = &mut hits.distances[q * stride..(q + 1) * stride];
        for ((hit, id), distance) in best.iter().zip(row_ids).zip(row_distances) {
            *id = hit.id;
            // Keys are "smaller is better"; IP keys are negated scores. `0.0 - key`
            // avoids reporting a score of -0.
            *distance = if descending { 0.0 - hit.key } else { hit.key };
        }
    }
    Ok(hits)
}

struct Layout {
    rows: usize,
    nq: usize,
    /// Floats (float vectors) or bytes (binary vectors) per row.
    row_len: usize,
}

fn check_layout(
    metric: MetricType,
    vectors: &VectorsRef,
    ids: &[i64],
    queries: &QueriesRef,
) -> Result<Layout, ScanError> {
    let (segment_kind, segment_dim, segment_len, row_len) = match *vectors {
        VectorsRef::Float { dim, data } => ("float", dim, data.len(), dim),
        VectorsRef::Binary { dim_bits, data } => ("binary", dim_bits, data.len(), dim_bits / 8),
    };
    let (query_kind, query_dim, query_len) = match *queries {
        QueriesRef::Float { dim, data } => ("float", dim, data.len()),
        QueriesRef::Binary { dim_bits, data } => ("binary", dim_bits, data.len()),
    };
    if segment_kind != query_kind {
        return Err(ScanError::KindMismatch {
            segment: segment_kind,
            queries: query_kind,
        });
    }
    if metric.is_binary() != (segment_kind == "binary") {
        return Err(ScanError::MetricMismatch {
            metric,
            kind: segment_kind,
        });
    }
    if segment_dim == 0 || (segment_kind == "binary" && !segment_dim.is_multiple_of(8)) {
        return Err(ScanError::BadDimension { dim: segment_dim });
    }
    if segment_dim != query_dim {
        return Err(ScanError::DimensionMismatch {
            segment: segment_dim,
            queries: query_dim,
        });
    }
    for (what, len) in [("segment data", segment_len), ("query data", query_len)] {
        if !len.is_multiple_of(row_len) {
            return Err(ScanError::RaggedData { what, len, row_len });
        }
    }
    let rows = segment_len / row_len;
    if ids.len() != rows {
        return Err(ScanError::IdCount {
            rows,
            ids: ids.len(),
        });
    }
    Ok(Layout {
        rows,
        nq: query_len / row_len,
        row_len,
    })
}

// ---------------------------------------------------------------------------
// Per-query top-k selection.

/// One hit in "smaller key is better" form.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    key: f32,
    id: i64,
}

/// Total order on non-NaN keys, ties by id. `partial_cmp` (not `total_cmp`)
/// so that -0.0 and 0.0 tie and fall back to the id.
fn compare_candidates(a: &Candidate, b: &Candidate) -> Ordering {
    a.key
        .partial_cmp(&b.key)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// Best `k` candidates of one query: an unsorted buffer cut back to `k` by
/// quickselect when it reaches `cut_at`; afterwards only candidates that beat
/// the k-th best (`threshold`) are let in.
struct TopK {
    k: usize,
    cut_at: usize,
    buffer: Vec<Candidate>,
    /// The k-th best so far; meaningful once `full`.
    threshold: Candidate,
    full: bool,
}

impl TopK {
    fn new(k: usize) -> Self {
        let cut_at = k.saturating_mul(2).max(k.saturating_add(64));
        TopK {
            k,
            cut_at,
            // Grows on demand: `k` may be far larger than what is ever found.
            buffer: Vec::with_capacity(cut_at.min(1024)),
            threshold: Candidate {
                key: f32::INFINITY,
                id: i64::MAX,
            },
            full: false,
        }
    }

    #[inline]
    fn offer_block(&mut self, keys: &[f32], ids: &[i64], deleted: &[bool]) {
        for ((&key, &id), &is_deleted) in keys.iter().zip(ids).zip(deleted) {
            // False for NaN keys too, which are never kept.
            let may_enter = !is_deleted && key <= self.threshold.key;
            if !may_enter {
                continue;
            }
            if self.full && key == self.threshold.key && id >= self.threshold.id {
                continue;
            }
            self.buffer.push(Candidate { key, id });
            if self.buffer.len() >= self.cut_at {
                self.cut();
            }
        }
    }

    fn cut(&mut self) {
        if self.buffer.len() < self.k {
            return;
        }
        let (_, kth, _) = self
            .buffer
            .select_nth_unstable_by(self.k - 1, compare_candidates);
        self.threshold = *kth;
        self.buffer.truncate(self.k);
        self.full = true;
    }

    fn into_sorted(mut self) -> Vec<Candidate> {
        if self.buffer.len() > self.k {
            self.cut();
        }
        self.buffer.sort_unstable_by(compare_candidates);
        self.buffer
    }
}

// ---------------------------------------------------------------------------
// Float kernels.

/// Lanes of one accumulator; 8 f32 fill one AVX register.
const LANES: usize = 8;

/// Writes the keys of every (query, row) pair of a block into
/// `keys[q * block_rows + r]`: L2 distance, or the negated inner product.
fn float_block_keys(
    kernel: Kernel,
    metric: MetricType,
    dim: usize,
    queries: &[f32],
    block: &[f32],
    keys: &mut [f32],
) {
    let l2 = metric == MetricType::L2;
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: `Kernel::Avx2` is only chosen after `is_x86_feature_detected!`
            // confirmed avx2, fma and popcnt on this CPU.
            unsafe {
                if l2 {
                    avx2::float_block::<true>(dim, queries, block, keys)
                } else {
                    avx2::float_block::<false>(dim, queries, block, keys)
                }
            }
        }
        Kernel::Portable => {
            if l2 {
                float_block::<true>(dim, queries, block, keys)
            } else {
                float_block::<false>(dim, queries, block, keys)
            }
        }
    }
}

/// Tiling: rows in groups of 4; queries in groups of 4 are scored against
/// those rows as two 4×2 tiles, remaining queries as 1×4 tiles. Leftover rows
/// use 1×1 tiles.
#[inline(always)]
fn float_block<const L2: bool>(dim: usize, queries: &[f32], block: &[f32], keys: &mut [f32]) {
    let block_rows = block.len() / dim;
    let nq = queries.len() / dim;
    let query = |q: usize| &queries[q * dim..(q + 1) * dim];
    let row = |r: usize| &block[r * dim..(r + 1) * dim];
    let mut r = 0;
    while r + 4 <= block_rows {
        let mut q = 0;
        while q + 4 <= nq {
            let qs = [query(q), query(q + 1), query(q + 2), query(q + 3)];
            for pair in [r, r + 2] {
                let scores = float_tile::<4, 2, L2>(qs, [row(pair), row(pair + 1)]);
                for (i, row_scores) in scores.iter().enumerate() {
                    keys[(q + i) * block_rows + pair..][..2].copy_from_slice(row_scores);
                }
            }
            q += 4;
        }
        while q < nq {
            let [scores] =
                float_tile::<1, 4, L2>([query(q)], [row(r), row(r + 1), row(r + 2), row(r + 3)]);
            keys[q * block_rows + r..][..4].copy_from_slice(&scores);
            q += 1;
        }
        r += 4;
    }
    while r < block_rows {
        for q in 0..nq {
            let [[score]] = float_tile::<1, 1, L2>([query(q)], [row(r)]);
            keys[q * block_rows + r] = score;
        }
        r += 1;
    }
}

/// Keys of `Q` queries against `R` rows (all slices of the same length):
/// `Σ (q-x)²` when `L2`, else `-Σ q·x`.
#[inline(always)]
fn float_tile<const Q: usize, const R: usize, const L2: bool>(
    queries: [&[f32]; Q],
    rows: [&[f32]; R],
) -> [[f32; R]; Q] {
    let dim = queries[0].len();
    let chunks = dim / LANES;
    let query_chunks: [&[[f32; LANES]]; Q] = queries.map(|v| &v.as_chunks::<LANES>().0[..chunks]);
    let row_chunks: [&[[f32; LANES]]; R] = rows.map(|v| &v.as_chunks::<LANES>().0[..chunks]);
    let mut acc = [[[0f32; LANES]; R]; Q];
    for c in 0..chunks {
        let xs: [[f32; LANES]; R] = std::array::from_fn(|j| row_chunks[j][c]);
        for i in 0..Q {
            let qc = query_chunks[i][c];
            for j in 0..R {
                for l in 0..LANES {
                    let term = if L2 { qc[l] - xs[j][l] } else { qc[l] };
                    let other = if L2 { term } else { xs[j][l] };
                    acc[i][j][l] += term * other;
                }
            }
        }
    }
    let tail = chunks * LANES;
    let mut out = [[0f32; R]; Q];
    for i in 0..Q {
        for j in 0..R {
            let a = acc[i][j];
            // Pairwise reduction of the lanes.
            // Same order as `avx2::horizontal_sum`.
            let mut sum = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
            for (x, y) in queries[i][tail..].iter().zip(&rows[j][tail..]) {
                sum += if L2 { (x - y) * (x - y) } else { x * y };
            }
            out[i][j] = if L2 { sum } else { -sum };
        }
    }
    out
}

/// The float kernels written with AVX2/FMA intrinsics: the compiler's own
/// vectoriser picks the wrong axis for most tile shapes, so the tiles are
/// spelled out. Same tiling and summation order as the portable code.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use std::arch::x86_64::{
        __m256, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_sub_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps,
        _mm_shuffle_ps,
    };

    /// Same contract as `super::float_block`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn float_block<const L2: bool>(
        dim: usize,
        queries: &[f32],
        block: &[f32],
        keys: &mut [f32],
    ) {
        let block_rows = block.len() / dim;
        let nq = queries.len() / dim;
        let query = |q: usize| &queries[q * dim..(q + 1) * dim];
        let row = |r: usize| &block[r * dim..(r + 1) * dim];
        let mut r = 0;
        while r + 4 <= block_rows {
            let mut q = 0;
            while q + 4 <= nq {
                let qs = [query(q), query(q + 1), query(q + 2), query(q + 3)];
                for pair in [r, r + 2] {
                    let scores = tile::<4, 2, L2>(qs, [row(pair), row(pair + 1)]);
                    for (i, row_scores) in scores.iter().enumerate() {
                        keys[(q + i) * block_rows + pair..][..2].copy_from_slice(row_scores);
                    }
                }
                q += 4;
            }
            while q < nq {
                let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                let [scores] = tile::<1, 4, L2>([query(q)], rows);
                keys[q * block_rows + r..][..4].copy_from_slice(&scores);
                q += 1;
            }
            r += 4;
        }
        while r < block_rows {
            for q in 0..nq {
                let [[score]] = tile::<1, 1, L2>([query(q)], [row(r)]);
                keys[q * block_rows + r] = score;
            }
            r += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn load(chunk: &[f32; LANES]) -> __m256 {
        // SAFETY: `chunk` is 8 readable f32; `loadu` has no alignment needs.
        unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
    }

    /// `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`.
    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps::<1>(pairs, pairs)))
    }

    /// Same contract as `super::float_tile`.
    #[target_feature(enable = "avx2,fma")]
    fn tile<const Q: usize, const R: usize, const L2: bool>(
        queries: [&[f32]; Q],
        rows: [&[f32]; R],
    ) -> [[f32; R]; Q] {
        let dim = queries[0].len();
        let chunks = dim / LANES;
        // Plain loops rather than `array::map`: closures are not inlined into
        // this `target_feature` function.
        let mut query_chunks: [&[[f32; LANES]]; Q] = [&[]; Q];
        for (slot, v) in query_chunks.iter_mut().zip(queries) {
            *slot = &v.as_chunks::<LANES>().0[..chunks];
        }
        let mut row_chunks: [&[[f32; LANES]]; R] = [&[]; R];
        for (slot, v) in row_chunks.iter_mut().zip(rows) {
            *slot = &v.as_chunks::<LANES>().0[..chunks];
        }
        let mut acc = [[_mm256_setzero_ps(); R]; Q];
        for c in 0..chunks {
            let mut xs = [_mm256_setzero_ps(); R];
            for j in 0..R {
                xs[j] = load(&row_chunks[j][c]);
            }
            for i in 0..Q {
                let qv = load(&query_chunks[i][c]);
                for j in 0..R {
                    acc[i][j] = if L2 {
                        let d = _mm256_sub_ps(qv, xs[j]);
                        _mm256_fmadd_ps(d, d, acc[i][j])
                    } else {
                        _mm256_fmadd_ps(qv, xs[j], acc[i][j])
                    };
                }
            }
        }
        let tail = chunks * LANES;
        let mut out = [[0f32; R]; Q];
        for i in 0..Q {
            for j in 0..R {
                let mut sum = horizontal_sum(acc[i][j]);
                for (x, y) in queries[i][tail..].iter().zip(&rows[j][tail..]) {
                    sum += if L2 { (x - y) * (x - y) } else { x * y };
                }
                out[i][j] = if L2 { sum } else { -sum };
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Binary kernels.

const HAMMING: u8 = 0;
const JACCARD: u8 = 1;
const SUBSTRUCTURE: u8 = 2;
const SUPERSTRUCTURE: u8 = 3;

/// Writes the keys of every (query, row) pair of a block into
/// `keys[q * block_rows + r]`: Hamming count, Jaccard distance (also for
/// TANIMOTO, converted at the end), or 0 / NaN (left out) for the structure
/// filters.
fn binary_block_keys(
    kernel: Kernel,
    metric: MetricType,
    row_bytes: usize,
    query_words: &[u64],
    queries: &[u8],
    block: &[u8],
    keys: &mut [f32],
) {
    let kind = match metric {
        MetricType::Jaccard | MetricType::Tanimoto => JACCARD,
        MetricType::Substructure => SUBSTRUCTURE,
        MetricType::Superstructure => SUPERSTRUCTURE,
        _ => HAMMING,
    };
    macro_rules! run {
        ($f:ident) => {
            match kind {
                JACCARD => $f::<JACCARD>(row_bytes, query_words, queries, block, keys),
                SUBSTRUCTURE => $f::<SUBSTRUCTURE>(row_bytes, query_words, queries, block, keys),
                SUPERSTRUCTURE => {
                    $f::<SUPERSTRUCTURE>(row_bytes, query_words, queries, block, keys)
                }
                _ => $f::<HAMMING>(row_bytes, query_words, queries, block, keys),
            }
        };
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` is only chosen after `is_x86_feature_detected!`
        // confirmed avx2, fma and popcnt on this CPU.
        Kernel::Avx2 => unsafe { run!(binary_block_avx2) },
        Kernel::Portable => run!(binary_block),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,popcnt")]
fn binary_block_avx2<const KIND: u8>(
    row_bytes: usize,
    query_words: &[u64],
    queries: &[u8],
    block: &[u8],
    keys: &mut [f32],
) {
    binary_block::<KIND>(row_bytes, query_words, queries, block, keys)
}

/// Every query as little-endian u64 words (without its byte tail), row-major.
fn query_words(row_bytes: usize, queries: &[u8]) -> Vec<u64> {
    queries
        .chunks_exact(row_bytes)
        .flat_map(|q| q.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)))
        .collect()
}

#[inline(always)]
fn binary_block<const KIND: u8>(
    row_bytes: usize,
    query_words: &[u64],
    queries: &[u8],
    block: &[u8],
    keys: &mut [f32],
) {
    let block_rows = block.len() / row_bytes;
    let nq = queries.len() / row_bytes;
    let words_per_row = row_bytes / 8;
    for (r, x) in block.chunks_exact(row_bytes).enumerate() {
        let (x_words, x_tail) = x.as_chunks::<8>();
        for q in 0..nq {
            let qw = &query_words[q * words_per_row..(q + 1) * words_per_row];
            let q_tail = &queries[q * row_bytes + words_per_row * 8..(q + 1) * row_bytes];
            keys[q * block_rows + r] = binary_pair_key::<KIND>(qw, q_tail, x_words, x_tail);
        }
    }
}

#[inline(always)]
fn binary_pair_key<const KIND: u8>(q: &[u64], q_tail: &[u8], x: &[[u8; 8]], x_tail: &[u8]) -> f32 {
    let pairs = q.iter().zip(x).map(|(a, b)| (*a, u64::from_le_bytes(*b)));
    let tail_pairs = q_tail
        .iter()
        .zip(x_tail)
        .map(|(a, b)| (u64::from(*a), u64::from(*b)));
    match KIND {
        HAMMING => {
            let mut count = 0u32;
            for (a, b) in pairs {
                count += (a ^ b).count_ones();
            }
            for (a, b) in tail_pairs {
                count += (a ^ b).count_ones();
            }
            count as f32
        }
        JACCARD => {
            let (mut inter, mut union) = (0u32, 0u32);
            for (a, b) in pairs.chain(tail_pairs) {
                inter += (a & b).count_ones();
                union += (a | b).count_ones();
            }
            jaccard_from_counts(inter, union)
        }
        _ => {
            // Bits that break containment: of the query (SUBSTRUCTURE) or of the row.
            let mut missing = 0u64;
            for (a, b) in pairs.chain(tail_pairs) {
                missing |= if KIND == SUBSTRUCTURE {
                    (a & b) ^ a
                } else {
                    (a & b) ^ b
                };
            }
            if missing == 0 {
                0.0
            } else {
                f32::NAN
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Order;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    const ALL_KERNELS: &[Kernel] = &[
        Kernel::Portable,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2,
    ];

    /// Kernels that can run on this machine.
    fn kernels() -> Vec<Kernel> {
        ALL_KERNELS
            .iter()
            .copied()
            .filter(|k| *k == Kernel::Portable || Kernel::detect() == *k)
            .collect()
    }

    /// Brute force: every live row scored with the scalar helpers, sorted by the
    /// metric order then id, cut to `min(topk, rows)` and padded.
    fn oracle(
        metric: MetricType,
        vectors: VectorsRef,
        ids: &[i64],
        deleted: &[bool],
        queries: QueriesRef,
        topk: usize,
    ) -> TopKHits {
        let rows = ids.len();
        let stride = topk.min(rows);
        let scored: Vec<Vec<(f32, i64)>> = match (vectors, queries) {
            (VectorsRef::Float { dim, data }, QueriesRef::Float { data: qd, .. }) => qd
                .chunks_exact(dim)
                .map(|q| {
                    (0..rows)
                        .filter(|r| !deleted[*r])
                        .map(|r| {
                            let x = &data[r * dim..(r + 1) * dim];
                            let d = match metric {
                                MetricType::L2 => l2_distance(q, x),
                                _ => inner_product(q, x),
                            };
                            (d, ids[r])
                        })
                        .collect()
                })
                .collect(),
            (VectorsRef::Binary { dim_bits, data }, QueriesRef::Binary { data: qd, .. }) => {
                let n = dim_bits / 8;
                qd.chunks_exact(n)
                    .map(|q| {
                        (0..rows)
                            .filter(|r| !deleted[*r])
                            .filter_map(|r| {
                                binary_distance(metric, q, &data[r * n..(r + 1) * n])
                                    .map(|d| (d, ids[r]))
                            })
                            .collect()
                    })
                    .collect()
            }
            _ => panic!("mixed kinds"),
        };
        let order = metric.order();
        let nq = scored.len();
        let mut hits = TopKHits {
            nq,
            stride,
            ids: vec![-1; nq * stride],
            distances: vec![order.worst(); nq * stride],
        };
        for (q, mut list) in scored.into_iter().enumerate() {
            list.sort_by(|a, b| {
                let by_distance = match order {
                    Order::Ascending => a.0.partial_cmp(&b.0),
                    Order::Descending => b.0.partial_cmp(&a.0),
                };
                by_distance.unwrap().then(a.1.cmp(&b.1))
            });
            for (i, (d, id)) in list.into_iter().take(stride).enumerate() {
                hits.ids[q * stride + i] = id;
                hits.distances[q * stride + i] = d;
            }
        }
        hits
    }

    /// Ids in shuffled order, so row order and id order disagree.
    fn shuffled_ids(rng: &mut StdRng, rows: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = (0..rows as i64).map(|i| i * 3 + 100).collect();
        ids.shuffle(rng);
        ids
    }

    fn deletions(rng: &mut StdRng, rows: usize, fraction: f64) -> Vec<bool> {
        (0..rows).map(|_| rng.random_bool(fraction)).collect()
    }

    fn run(
        kernel: Kernel,
        metric: MetricType,
        vectors: VectorsRef,
        ids: &[i64],
        deleted: &[bool],
        queries: QueriesRef,
        topk: usize,
    ) -> TopKHits {
        search_segment_with(kernel, metric, vectors, ids, |r| deleted[r], queries, topk)
            .expect("valid layout")
    }

    #[test]
    fn float_metrics_match_brute_force() {
        let mut rng = StdRng::seed_from_u64(7);
        // Small integer coordinates keep every sum exact (so FMA and plain
        // arithmetic agree bit for bit) and create many distance ties.
        for &dim in &[1usize, 3, 8, 13, 16, 35, 128] {
            for &rows in &[1usize, 5, 257, 600] {
                let data: Vec<f32> = (0..rows * dim)
                    .map(|_| rng.random_range(-3..=3) as f32)
                    .collect();
                let ids = shuffled_ids(&mut rng, rows);
                let deleted = deletions(&mut rng, rows, 0.2);
                for &nq in &[1usize, 3, 4, 9] {
                    let qdata: Vec<f32> = (0..nq * dim)
                        .map(|_| rng.random_range(-3..=3) as f32)
                        .collect();
                    for metric in [MetricType::L2, MetricType::Ip] {
                        for &topk in &[1usize, 10, rows, rows + 7, 1 << 20] {
                            let vectors = VectorsRef::Float { dim, data: &data };
                            let queries = QueriesRef::Float { dim, data: &qdata };
                            let expected = oracle(metric, vectors, &ids, &deleted, queries, topk);
                            for kernel in kernels() {
                                let got =
                                    run(kernel, metric, vectors, &ids, &deleted, queries, topk);
                                assert_eq!(
                                    got, expected,
                                    "{metric} {kernel:?} dim={dim} rows={rows} nq={nq} topk={topk}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn float_metrics_on_real_valued_data_agree_within_rounding() {
        let mut rng = StdRng::seed_from_u64(11);
        let (dim, rows, nq, topk) = (100, 1000, 5, 20);
        let data: Vec<f32> = (0..rows * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let qdata: Vec<f32> = (0..nq * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let ids: Vec<i64> = (0..rows as i64).collect();
        let deleted = vec![false; rows];
        for metric in [MetricType::L2, MetricType::Ip] {
            let vectors = VectorsRef::Float { dim, data: &data };
            let queries = QueriesRef::Float { dim, data: &qdata };
            let expected = oracle(metric, vectors, &ids, &deleted, queries, topk);
            for kernel in kernels() {
                let got = run(kernel, metric, vectors, &ids, &deleted, queries, topk);
                assert_eq!(got.stride, topk);
                for (g, e) in got.distances.iter().zip(&expected.distances) {
                    assert!(
                        (g - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "{metric} {kernel:?}: {g} vs {e}"
                    );
                }
                // The exact recomputation of each returned id gives its distance.
                for (q, chunk) in got.ids.chunks(topk).enumerate() {
                    for (i, id) in chunk.iter().enumerate() {
                        let x = &data[*id as usize * dim..(*id as usize + 1) * dim];
                        let query = &qdata[q * dim..(q + 1) * dim];
                        let exact = if metric == MetricType::L2 {
                            l2_distance(query, x)
                        } else {
                            inner_product(query, x)
                        };
                        assert!(
                            (exact - got.distances[q * topk + i]).abs()
                                <= 1e-4 * exact.abs().max(1.0)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn binary_metrics_match_brute_force() {
        let mut rng = StdRng::seed_from_u64(13);
        let metrics = [
            MetricType::Hamming,
            MetricType::Jaccard,
            MetricType::Tanimoto,
            MetricType::Substructure,
            MetricType::Superstructure,
        ];
        // Byte lengths 1, 2, 8, 9, 17 and 64: word-only, tail-only and mixed rows.
        for &dim_bits in &[8usize, 16, 64, 72, 136, 512] {
            let n = dim_bits / 8;
            for &rows in &[1usize, 6, 300] {
                // Sparse rows so that structure filters match now and then, and an
                // all-zero row for the empty-union cases.
                let mut data: Vec<u8> = (0..rows * n)
                    .map(|_| rng.random::<u8>() & rng.random::<u8>())
                    .collect();
                data[..n].fill(0);
                let ids = shuffled_ids(&mut rng, rows);
                let deleted = deletions(&mut rng, rows, 0.25);
                for &nq in &[1usize, 4] {
                    let mut qdata: Vec<u8> = (0..nq * n)
                        .map(|_| rng.random::<u8>() & rng.random::<u8>())
                        .collect();
                    if nq > 1 {
                        // A query with all bits set (every row is a substructure of it)
                        // and an empty one (a substructure of every row).
                        qdata[..n].fill(0xff);
                        qdata[n..2 * n].fill(0);
                    }
                    for metric in metrics {
                        for &topk in &[1usize, 5, rows, rows + 3] {
                            let vectors = VectorsRef::Binary {
                                dim_bits,
                                data: &data,
                            };
                            let queries = QueriesRef::Binary {
                                dim_bits,
                                data: &qdata,
                            };
                            let expected = oracle(metric, vectors, &ids, &deleted, queries, topk);
                            for kernel in kernels() {
                                let got =
                                    run(kernel, metric, vectors, &ids, &deleted, queries, topk);
                                assert_eq!(
                                    got, expected,
                                    "{metric} {kernel:?} bits={dim_bits} rows={rows} nq={nq} topk={topk}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn binary_distances_follow_faiss() {
        let a = [0b1100u8];
        let b = [0b1010u8];
        assert_eq!(binary_distance(MetricType::Hamming, &a, &b), Some(2.0));
        // |a&b| = 1, |a|b| = 3.
        assert_eq!(
            binary_distance(MetricType::Jaccard, &a, &b),
            Some(2.0 / 3.0)
        );
        let tanimoto = binary_distance(MetricType::Tanimoto, &a, &b).unwrap();
        assert!((tanimoto - 3f32.log2()).abs() < 1e-6, "{tanimoto}");
        // An empty union is distance 1 (Jaccard) and infinity (Tanimoto).
        assert_eq!(binary_distance(MetricType::Jaccard, &[0], &[0]), Some(1.0));
        assert_eq!(
            binary_distance(MetricType::Tanimoto, &[0], &[0]),
            Some(f32::INFINITY)
        );
        // 0b0100 is contained in 0b1100.
        assert_eq!(
            binary_distance(MetricType::Substructure, &[0b0100], &[0b1100]),
            Some(0.0)
        );
        assert_eq!(
            binary_distance(MetricType::Substructure, &[0b1100], &[0b0100]),
            None
        );
        assert_eq!(
            binary_distance(MetricType::Superstructure, &[0b1100], &[0b0100]),
            Some(0.0)
        );
        assert_eq!(
            binary_distance(MetricType::Superstructure, &[0b0100], &[0b1100]),
            None
        );
        assert_eq!(binary_distance(MetricType::L2, &a, &b), None);
    }

    #[test]
    fn known_float_results_with_ties_and_padding() {
        // Rows: id 30 at distance 1, ids 20 and 10 tied at distance 4, id 40 deleted.
        let data = [1.0f32, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0];
        let ids = [30, 20, 10, 40];
        let queries = [0.0f32, 0.0];
        let hits = search_segment(
            MetricType::L2,
            VectorsRef::Float {
                dim: 2,
                data: &data,
            },
            &ids,
            |r| r == 3,
            QueriesRef::Float {
                dim: 2,
                data: &queries,
            },
            10,
        )
        .unwrap();
        assert_eq!(hits.nq, 1);
        assert_eq!(hits.stride, 4, "stride counts deleted rows");
        assert_eq!(hits.ids, vec![30, 10, 20, -1]);
        assert_eq!(hits.distances, vec![1.0, 4.0, 4.0, f32::MAX]);

        let hits = search_segment(
            MetricType::Ip,
            VectorsRef::Float {
                dim: 2,
                data: &data,
            },
            &ids,
            |_| false,
            QueriesRef::Float {
                dim: 2,
                data: &[1.0, 1.0],
            },
            3,
        )
        .unwrap();
        assert_eq!(hits.ids, vec![10, 20, 30]);
        assert_eq!(hits.distances, vec![2.0, 2.0, 1.0]);
    }

    #[test]
    fn all_rows_deleted_gives_only_padding() {
        let data = [0u8, 1, 2, 3];
        for metric in [MetricType::Hamming, MetricType::Substructure] {
            let hits = search_segment(
                metric,
                VectorsRef::Binary {
                    dim_bits: 8,
                    data: &data,
                },
                &[1, 2, 3, 4],
                |_| true,
                QueriesRef::Binary {
                    dim_bits: 8,
                    data: &[0, 0],
                },
                3,
            )
            .unwrap();
            assert_eq!((hits.nq, hits.stride), (2, 3));
            assert_eq!(hits.ids, vec![-1; 6]);
            assert_eq!(hits.distances, vec![metric.order().worst(); 6]);
        }
        let hits = search_segment(
            MetricType::Ip,
            VectorsRef::Float {
                dim: 1,
                data: &[1.0],
            },
            &[5],
            |_| true,
            QueriesRef::Float {
                dim: 1,
                data: &[1.0],
            },
            2,
        )
        .unwrap();
        assert_eq!((hits.ids, hits.distances), (vec![-1], vec![-f32::MAX]));
    }

    #[test]
    fn empty_segment_topk_zero_and_no_queries() {
        let empty = search_segment(
            MetricType::L2,
            VectorsRef::Float { dim: 4, data: &[] },
            &[],
            |_| false,
            QueriesRef::Float {
                dim: 4,
                data: &[0.0; 8],
            },
            10,
        )
        .unwrap();
        assert_eq!((empty.nq, empty.stride, empty.ids.len()), (2, 0, 0));
        let zero_k = search_segment(
            MetricType::L2,
            VectorsRef::Float {
                dim: 1,
                data: &[1.0],
            },
            &[1],
            |_| false,
            QueriesRef::Float {
                dim: 1,
                data: &[0.0],
            },
            0,
        )
        .unwrap();
        assert_eq!((zero_k.nq, zero_k.stride, zero_k.ids.len()), (1, 0, 0));
    }

    #[test]
    fn nan_rows_are_left_out() {
        let data = [f32::NAN, 1.0, 2.0];
        let hits = search_segment(
            MetricType::L2,
            VectorsRef::Float {
                dim: 1,
                data: &data,
            },
            &[1, 2, 3],
            |_| false,
            QueriesRef::Float {
                dim: 1,
                data: &[0.0],
            },
            3,
        )
        .unwrap();
        assert_eq!(hits.ids, vec![2, 3, -1]);
    }

    #[test]
    fn large_topk_keeps_everything_sorted() {
        let mut rng = StdRng::seed_from_u64(17);
        let rows = 5000;
        let data: Vec<f32> = (0..rows).map(|_| rng.random_range(0..100) as f32).collect();
        let ids = shuffled_ids(&mut rng, rows);
        let deleted = deletions(&mut rng, rows, 0.1);
        let vectors = VectorsRef::Float {
            dim: 1,
            data: &data,
        };
        let queries = QueriesRef::Float {
            dim: 1,
            data: &[50.0],
        };
        for topk in [100, 2500, 1 << 20] {
            let expected = oracle(MetricType::L2, vectors, &ids, &deleted, queries, topk);
            let got = search_segment(MetricType::L2, vectors, &ids, |r| deleted[r], queries, topk)
                .unwrap();
            assert_eq!(got, expected, "topk={topk}");
        }
    }

    #[test]
    fn bad_layouts_are_errors() {
        let floats = [0.0f32; 6];
        let bytes = [0u8; 6];
        let float3 = VectorsRef::Float {
            dim: 3,
            data: &floats,
        };
        let query3 = QueriesRef::Float {
            dim: 3,
            data: &floats[..3],
        };
        let check = |metric, vectors, ids: &[i64], queries| {
            search_segment(metric, vectors, ids, |_| false, queries, 1)
        };

        assert!(check(MetricType::L2, float3, &[1, 2], query3).is_ok());
        assert_eq!(
            check(MetricType::Hamming, float3, &[1, 2], query3),
            Err(ScanError::MetricMismatch {
                metric: MetricType::Hamming,
                kind: "float"
            })
        );
        assert_eq!(
            check(
                MetricType::L2,
                float3,
                &[1, 2],
                QueriesRef::Binary {
                    dim_bits: 24,
                    data: &bytes[..3]
                }
            ),
            Err(ScanError::KindMismatch {
                segment: "float",
                queries: "binary"
            })
        );
        assert_eq!(
            check(
                MetricType::L2,
                VectorsRef::Float { dim: 0, data: &[] },
                &[],
                QueriesRef::Float { dim: 0, data: &[] }
            ),
            Err(ScanError::BadDimension { dim: 0 })
        );
        assert_eq!(
            check(
                MetricType::Hamming,
                VectorsRef::Binary {
                    dim_bits: 12,
                    data: &bytes
                },
                &[1, 2, 3],
                QueriesRef::Binary {
                    dim_bits: 12,
                    data: &bytes[..2]
                }
            ),
            Err(ScanError::BadDimension { dim: 12 })
        );
        assert_eq!(
            check(
                MetricType::L2,
                float3,
                &[1, 2],
                QueriesRef::Float {
                    dim: 2,
                    data: &floats[..2]
                }
            ),
            Err(ScanError::DimensionMismatch {
                segment: 3,
                queries: 2
            })
        );
        assert_eq!(
            check(
                MetricType::L2,
                VectorsRef::Float {
                    dim: 4,
                    data: &floats
                },
                &[1],
                QueriesRef::Float {
                    dim: 4,
                    data: &floats[..4]
                }
            ),
            Err(ScanError::RaggedData {
                what: "segment data",
                len: 6,
                row_len: 4
            })
        );
        assert_eq!(
            check(
                MetricType::L2,
                float3,
                &[1, 2],
                QueriesRef::Float {
                    dim: 3,
                    data: &floats[..4]
                }
            ),
            Err(ScanError::RaggedData {
                what: "query data",
                len: 4,
                row_len: 3
            })
        );
        assert_eq!(
            check(MetricType::L2, float3, &[1], query3),
            Err(ScanError::IdCount { rows: 2, ids: 1 })
        );
    }
}
