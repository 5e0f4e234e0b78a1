//! Coarse quantizer of the IVF indexes: Lloyd's k-means trained the way Faiss'
//! `Clustering` trains an IVF quantizer, and nearest-centroid lookups.
//!
//! Choices, after Faiss (`Clustering.cpp`, `IndexIVF.cpp` `Level1Quantizer`):
//! * at most [`MAX_POINTS_PER_CENTROID`] (256) training points per centroid,
//!   drawn at random when the file is larger: more buys little accuracy and
//!   training costs `points × nlist × dim` per iteration;
//! * initial centroids are distinct random training points (Faiss' init);
//! * [`ITERATIONS`] (10) Lloyd iterations, as `Level1Quantizer` sets `niter`,
//!   stopping early once no point changes cluster (a fixed point);
//! * an empty cluster takes over half of the largest one: both centroids are
//!   the old one nudged by `±1/1024` per dimension in opposite directions
//!   (Faiss' `split_clusters`, which picks the donor at random by size);
//! * points go to the centroid with the smallest L2 distance, or the largest
//!   inner product for IP (Faiss' `IndexFlatIP` quantizer); centroids are the
//!   means of their points, scaled to unit length for IP ("spherical"
//!   k-means, which `IndexIVF` turns on for `METRIC_INNER_PRODUCT`: without it
//!   the centroids with the longest means would draw most points).
//!
//! Nearest centroids are found with the exact scan (`search_segment`), so the
//! quantizer ranks with the same kernels and tie rules as a FLAT search.

use super::kernels::{Metric, SplitMix64};
use super::parallel::map_ranges;
use super::IndexError;
use crate::node::scan::{search_segment, QueriesRef, VectorsRef};

/// Training points per centroid at most.
pub const MAX_POINTS_PER_CENTROID: usize = 256;
/// Lloyd iterations at most.
pub const ITERATIONS: usize = 10;
/// Relative nudge that separates the two halves of a split cluster.
const SPLIT_EPS: f32 = 1.0 / 1024.0;
/// Queries scored per `search_segment` call, bounding its score buffer.
const QUERY_BATCH: usize = 1024;

/// Trains `k` centroids (`1 <= k <= rows`) on row-major `data`; returns them
/// row-major.
pub fn train(
    metric: Metric,
    dim: usize,
    data: &[f32],
    k: usize,
    seed: u64,
) -> Result<Vec<f32>, IndexError> {
    let rows = data.len() / dim;
    let mut rng = SplitMix64::new(seed);
    let sampled;
    let points = if rows > MAX_POINTS_PER_CENTROID * k {
        let mut picks = rng.sample_distinct(rows, MAX_POINTS_PER_CENTROID * k);
        picks.sort_unstable();
        sampled = gather(dim, data, &picks);
        &sampled[..]
    } else {
        data
    };
    let npoints = points.len() / dim;
    let mut centroids = gather(dim, points, &rng.sample_distinct(npoints, k));
    let mut previous: Vec<u32> = Vec::new();
    for _ in 0..ITERATIONS {
        let assignment = assign(metric, dim, &centroids, points)?;
        if assignment == previous {
            break;
        }
        let mut counts = update_centroids(dim, points, &assignment, &mut centroids);
        split_empty_clusters(dim, &mut centroids, &mut counts);
        if metric == Metric::Ip {
            normalize_rows(dim, &mut centroids);
        }
        previous = assignment;
    }
    Ok(centroids)
}

/// Index of the nearest centroid of every point (0 for a point with no
/// finite distance, e.g. one holding NaN).
pub fn assign(
    metric: Metric,
    dim: usize,
    centroids: &[f32],
    points: &[f32],
) -> Result<Vec<u32>, IndexError> {
    let ids = nearest(metric, dim, centroids, points, 1)?;
    Ok(ids
        .into_iter()
        .map(|id| u32::try_from(id).unwrap_or(0))
        .collect())
}

/// The `n` nearest centroids of every point, best first: `points × min(n, k)`
/// centroid indices, row-major, with -1 where fewer than that have a finite
/// distance.
pub fn nearest(
    metric: Metric,
    dim: usize,
    centroids: &[f32],
    points: &[f32],
    n: usize,
) -> Result<Vec<i64>, IndexError> {
    let centroid_ids: Vec<i64> = (0..(centroids.len() / dim) as i64).collect();
    let metric_type = metric.into();
    let vectors = VectorsRef::Float {
        dim,
        data: centroids,
    };
    let npoints = points.len() / dim;
    let parts = map_ranges(npoints, QUERY_BATCH / 4, |range| {
        let mut ids = Vec::with_capacity(range.len() * n.min(centroid_ids.len()));
        let mut start = range.start;
        while start < range.end {
            let end = range.end.min(start + QUERY_BATCH);
            let queries = QueriesRef::Float {
                dim,
                data: &points[start * dim..end * dim],
            };
            let hits = search_segment(metric_type, vectors, &centroid_ids, |_| false, queries, n)?;
            ids.extend_from_slice(&hits.ids);
            start = end;
        }
        Ok::<_, IndexError>(ids)
    });
    let mut all = Vec::with_capacity(npoints * n.min(centroid_ids.len()));
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// Rows `picks` of `data`, row-major.
fn gather(dim: usize, data: &[f32], picks: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(picks.len() * dim);
    for &row in picks {
        let row = row as usize;
        out.extend_from_slice(&data[row * dim..(row + 1) * dim]);
    }
    out
}

/// Replaces every centroid that has points by their mean (summed in f64, in
/// point order); returns the cluster sizes.
fn update_centroids(
    dim: usize,
    points: &[f32],
    assignment: &[u32],
    centroids: &mut [f32],
) -> Vec<usize> {
    let k = centroids.len() / dim;
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (point, &cluster) in points.chunks_exact(dim).zip(assignment) {
        let cluster = cluster as usize;
        counts[cluster] += 1;
        for (sum, &x) in sums[cluster * dim..(cluster + 1) * dim]
            .iter_mut()
            .zip(point)
        {
            *sum += f64::from(x);
        }
    }
    for (cluster, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let sum = &sums[cluster * dim..(cluster + 1) * dim];
        for (c, s) in centroids[cluster * dim..(cluster + 1) * dim]
            .iter_mut()
            .zip(sum)
        {
            *c = (s / count as f64) as f32;
        }
    }
    counts
}

/// Scales every non-zero row to unit L2 norm.
fn normalize_rows(dim: usize, rows: &mut [f32]) {
    for row in rows.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// Gives every empty cluster half of the currently largest one.
fn split_empty_clusters(dim: usize, centroids: &mut [f32], counts: &mut [usize]) {
    for empty in 0..counts.len() {
        if counts[empty] != 0 {
            continue;
        }
        let Some((donor, &size)) = counts.iter().enumerate().max_by_key(|(i, c)| (**c, !*i)) else {
            return;
        };
        if size < 2 {
            return;
        }
        for d in 0..dim {
            let value = centroids[donor * dim + d];
            let (up, down) = (value * (1.0 + SPLIT_EPS), value * (1.0 - SPLIT_EPS));
            let (mine, theirs) = if d % 2 == 0 { (up, down) } else { (down, up) };
            centroids[empty * dim + d] = mine;
            centroids[donor * dim + d] = theirs;
        }
        counts[empty] = size / 2;
        counts[donor] = size - size / 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tight blobs far apart, points alternating between them.
    fn blobs() -> Vec<f32> {
        let mut rng = SplitMix64::new(9);
        let centers = [[0.0f32, 0.0], [100.0, 0.0]];
        (0..300)
            .flat_map(|i| {
                let c = centers[i % 2];
                [c[0] + rng.next_unit() as f32, c[1] + rng.next_unit() as f32]
            })
            .collect()
    }

    #[test]
    fn finds_well_separated_clusters() {
        // Random init can put both seeds in one blob; Lloyd's iterations still
        // separate two blobs, whatever the seed.
        let data = blobs();
        for seed in 0..20 {
            let centroids = train(Metric::L2, 2, &data, 2, seed).unwrap();
            let assignment = assign(Metric::L2, 2, &centroids, &data).unwrap();
            assert_ne!(assignment[0], assignment[1], "seed {seed}");
            for (i, &a) in assignment.iter().enumerate() {
                assert_eq!(a, assignment[i % 2], "seed {seed}");
            }
            // The centroids sit at the blob means (offset by about half a unit).
            for c in centroids.chunks_exact(2) {
                let near = [[0.5f32, 0.5], [100.5, 0.5]]
                    .iter()
                    .any(|m| (m[0] - c[0]).abs() < 0.2 && (m[1] - c[1]).abs() < 0.2);
                assert!(near, "seed {seed}: {c:?}");
            }
        }
    }

    #[test]
    fn training_is_deterministic_and_never_leaves_nan_centroids() {
        // Duplicated points force empty clusters that must be split.
        let data: Vec<f32> = (0..200).flat_map(|i| [(i % 4) as f32, 1.0]).collect();
        let a = train(Metric::L2, 2, &data, 16, 7).unwrap();
        let b = train(Metric::L2, 2, &data, 16, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn inner_product_centroids_are_unit_length() {
        let data: Vec<f32> = (0..400).map(|i| (i % 7) as f32 + 0.5).collect();
        let centroids = train(Metric::Ip, 4, &data, 5, 3).unwrap();
        for c in centroids.chunks_exact(4) {
            let norm: f32 = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{c:?}");
        }
    }

    #[test]
    fn inner_product_assigns_by_largest_product() {
        let centroids = [1.0f32, 0.0, 0.0, 1.0, 10.0, 0.0];
        let points = [1.0f32, 0.1, 0.0, 1.0, f32::NAN, 0.0];
        assert_eq!(
            assign(Metric::Ip, 2, &centroids, &points).unwrap(),
            vec![2, 1, 0]
        );
        assert_eq!(
            assign(Metric::L2, 2, &centroids, &points).unwrap(),
            vec![0, 1, 0]
        );
        let top2 = nearest(Metric::L2, 2, &centroids, &points[..2], 5).unwrap();
        assert_eq!(top2, vec![0, 1, 2]);
    }

    #[test]
    fn split_takes_half_of_the_largest_cluster() {
        let mut centroids = vec![1.0f32, 2.0, 0.0, 0.0, 5.0, 5.0];
        let mut counts = vec![10, 0, 3];
        split_empty_clusters(2, &mut centroids, &mut counts);
        assert_eq!(counts, vec![5, 5, 3]);
        assert_eq!(centroids[2..4], [1.0 + SPLIT_EPS, 2.0 * (1.0 - SPLIT_EPS)]);
        assert_eq!(centroids[0..2], [1.0 - SPLIT_EPS, 2.0 * (1.0 + SPLIT_EPS)]);
    }
}
