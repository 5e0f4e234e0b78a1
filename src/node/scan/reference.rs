//! The scalar definitions of every metric, and the brute-force top-k the
//! kernel tests compare against: plain and slow on purpose.

use super::binary_kernels::{jaccard_from_counts, tanimoto_from_jaccard};
#[cfg(test)]
use super::{QueriesRef, VectorsRef};
#[cfg(test)]
use crate::merge::TopKHits;
use crate::types::MetricType;
#[cfg(test)]
use crate::types::Order;

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

#[cfg(test)]
/// Brute force: every live row scored with the scalar helpers, sorted by the
/// metric order then id, cut to `min(topk, rows)` and padded.
pub(super) fn brute_force_top_k(
    metric: MetricType,
    vectors: VectorsRef<'_>,
    ids: &[i64],
    deleted: &[bool],
    queries: QueriesRef<'_>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
