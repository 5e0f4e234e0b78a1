//! Binary kernels: the Hamming, Jaccard (and so Tanimoto) keys, or the
//! structure filters, of every (query, row) pair of a block, compiled for the
//! baseline target or with AVX2+POPCNT enabled.
//!
//! One portable body serves both: the AVX2 variant is the same code inlined
//! into a `#[target_feature]` function, chosen at run time. Calling it is the
//! only `unsafe` here.

use super::Kernel;
use crate::types::MetricType;

const HAMMING: u8 = 0;
const JACCARD: u8 = 1;
const SUBSTRUCTURE: u8 = 2;
const SUPERSTRUCTURE: u8 = 3;

/// Writes the keys of every (query, row) pair of a block into
/// `keys[q * block_rows + r]`: Hamming count, Jaccard distance (also for
/// TANIMOTO, converted at the end), or 0 / NaN (left out) for the structure
/// filters.
#[allow(
    unsafe_code,
    reason = "calls the AVX2 build of the kernel, which is sound only on CPUs `Kernel::detect` checked"
)]
pub(super) fn binary_block_keys(
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
pub(super) fn query_words(row_bytes: usize, queries: &[u8]) -> Vec<u64> {
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

pub(super) fn jaccard_from_counts(intersection: u32, union: u32) -> f32 {
    if union == 0 {
        1.0
    } else {
        (union - intersection) as f32 / union as f32
    }
}

pub(super) fn tanimoto_from_jaccard(jaccard: f32) -> f32 {
    (-(1.0 - f64::from(jaccard)).log2()) as f32
}
