//! Float kernels: the L2 and inner-product keys of every (query, row) pair of
//! a block, portable or with AVX2/FMA intrinsics.
//!
//! Scores are computed in tiles (4 queries × 2 rows, or 1 query × 4 rows)
//! with 8-lane accumulators. On x86-64 CPUs with AVX2+FMA+POPCNT, detected at
//! run time, the tiles use `std::arch` intrinsics; elsewhere the portable code
//! runs. The dispatch into the AVX2 code and its unaligned vector loads are
//! the only `unsafe` here.
//!
//! The tiling driver exists twice (`float_block` and `avx2::float_block`) on
//! purpose: the AVX2 copy has to be compiled inside a
//! `#[target_feature(enable = "avx2,fma")]` function for its tile calls to
//! inline with those features, and a shared driver generic over the tile
//! would have to call the target-feature tile from code compiled without
//! them.

use super::Kernel;
use crate::types::MetricType;

/// Lanes of one accumulator; 8 f32 fill one AVX register.
const LANES: usize = 8;

/// Writes the keys of every (query, row) pair of a block into
/// `keys[q * block_rows + r]`: L2 distance, or the negated inner product.
#[allow(
    unsafe_code,
    reason = "calls the AVX2 kernel, which is sound only on CPUs `Kernel::detect` checked"
)]
pub(super) fn float_block_keys(
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
#[allow(
    unsafe_code,
    reason = "`std::arch` intrinsics: an AVX2/FMA entry point and unaligned vector loads"
)]
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
