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
//! Speed: rows are scanned in blocks of `BLOCK_ROWS`, each block once for
//! all queries, by the kernels in `float_kernels` and `binary_kernels`
//! (portable, or AVX2 chosen at run time; the only `unsafe` code of the scan
//! lives there). Each query keeps its best hits in a `topk::TopK`, so memory
//! and time stay linear even for `topk` of a million. `reference` holds the
//! plain scalar definitions the tests compare against.

mod binary_kernels;
mod float_kernels;
mod reference;
mod topk;

use crate::merge::TopKHits;
use crate::types::MetricType;

use binary_kernels::{binary_block_keys, query_words, tanimoto_from_jaccard};
use float_kernels::float_block_keys;
pub use reference::{binary_distance, inner_product, l2_distance};
use topk::{compare_candidates, TopK};

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
    vectors: VectorsRef<'_>,
    ids: &[i64],
    is_deleted: impl Fn(usize) -> bool,
    queries: QueriesRef<'_>,
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
    vectors: VectorsRef<'_>,
    ids: &[i64],
    is_deleted: impl Fn(usize) -> bool,
    queries: QueriesRef<'_>,
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
    vectors: &VectorsRef<'_>,
    ids: &[i64],
    queries: &QueriesRef<'_>,
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

#[cfg(test)]
mod tests {
    use super::reference::brute_force_top_k;
    use super::*;
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
        vectors: VectorsRef<'_>,
        ids: &[i64],
        deleted: &[bool],
        queries: QueriesRef<'_>,
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
                            let expected =
                                brute_force_top_k(metric, vectors, &ids, &deleted, queries, topk);
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
            let expected = brute_force_top_k(metric, vectors, &ids, &deleted, queries, topk);
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
                            let expected =
                                brute_force_top_k(metric, vectors, &ids, &deleted, queries, topk);
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
            let expected =
                brute_force_top_k(MetricType::L2, vectors, &ids, &deleted, queries, topk);
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
