//! Test data and the brute-force oracle: deterministic random vectors, the
//! rows a collection should hold, and [`check_against_oracle`], which checks a
//! search reply against the exact top-k of those rows.

use std::collections::{HashMap, HashSet};

use mishards::wire::{RowRecord, TopKQueryResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const L2: i32 = 1;
pub const IP: i32 = 2;
pub const HAMMING: i32 = 3;

/// One vector: floats, or packed bits for the binary metrics.
#[derive(Clone, Debug)]
pub enum Vector {
    Float(Vec<f32>),
    Binary(Vec<u8>),
}

impl Vector {
    pub fn record(&self) -> RowRecord {
        match self {
            Vector::Float(v) => RowRecord {
                float_data: v.clone(),
                binary_data: Default::default(),
            },
            Vector::Binary(b) => RowRecord {
                float_data: vec![],
                binary_data: bytes::Bytes::copy_from_slice(b),
            },
        }
    }
}

/// Deterministic random vectors: floats in [-1, 1), or `dim` bits.
pub struct VectorSource {
    rng: StdRng,
}

impl VectorSource {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn floats(&mut self, n: usize, dim: usize) -> Vec<Vector> {
        (0..n)
            .map(|_| {
                Vector::Float(
                    (0..dim)
                        .map(|_| self.rng.random_range(-1.0f32..1.0))
                        .collect(),
                )
            })
            .collect()
    }

    pub fn bits(&mut self, n: usize, dim_bits: usize) -> Vec<Vector> {
        (0..n)
            .map(|_| Vector::Binary((0..dim_bits / 8).map(|_| self.rng.random()).collect()))
            .collect()
    }
}

/// Every row the oracle knows, with its id.
#[derive(Default, Clone)]
pub struct Rows {
    pub rows: Vec<(i64, Vector)>,
}

impl Rows {
    pub fn add(&mut self, ids: &[i64], vectors: &[Vector]) {
        self.rows
            .extend(ids.iter().copied().zip(vectors.iter().cloned()));
    }

    pub fn extend(&mut self, other: Rows) {
        self.rows.extend(other.rows);
    }

    pub fn remove(&mut self, ids: &HashSet<i64>) {
        self.rows.retain(|(id, _)| !ids.contains(id));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn merged(parts: &[&Rows]) -> Rows {
        Rows {
            rows: parts.iter().flat_map(|p| p.rows.iter().cloned()).collect(),
        }
    }
}

pub fn distance(metric: i32, a: &Vector, b: &Vector) -> f64 {
    match (a, b) {
        (Vector::Float(a), Vector::Float(b)) => match metric {
            L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from(x - y) * f64::from(x - y))
                .sum(),
            IP => a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum(),
            m => panic!("float metric {m} not in the oracle"),
        },
        (Vector::Binary(a), Vector::Binary(b)) => match metric {
            HAMMING => a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from((x ^ y).count_ones()))
                .sum(),
            m => panic!("binary metric {m} not in the oracle"),
        },
        _ => panic!("mixed float and binary vectors"),
    }
}

fn better_first(metric: i32) -> impl Fn(&(f64, i64), &(f64, i64)) -> std::cmp::Ordering {
    move |a, b| {
        let by_distance = if metric == IP {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        by_distance.then(a.1.cmp(&b.1))
    }
}

/// The exact top-k of one query over `rows`: (distance, id), best first.
pub fn oracle(metric: i32, rows: &Rows, query: &Vector, topk: usize) -> Vec<(f64, i64)> {
    let mut all: Vec<(f64, i64)> = rows
        .rows
        .iter()
        .map(|(id, v)| (distance(metric, query, v), *id))
        .collect();
    all.sort_by(better_first(metric));
    all.truncate(topk);
    all
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0)
}

/// Checks a search reply against the oracle over `rows` and panics on the
/// first difference; see [`oracle_mismatch`].
pub fn check_against_oracle(
    what: &str,
    reply: &TopKQueryResult,
    metric: i32,
    rows: &Rows,
    queries: &[Vector],
    topk: usize,
    expected_stride: Option<usize>,
) {
    if let Err(mismatch) =
        oracle_mismatch(what, reply, metric, rows, queries, topk, expected_stride)
    {
        panic!("{mismatch}");
    }
}

/// The first way a search reply differs from the oracle over `rows`: layout
/// (`row_num` = nq, uniform stride = min(topk, rows searched) when
/// `expected_stride` is given), the real hits (id != -1) are exactly
/// min(topk, rows) long, every id is a live row reported with its true
/// distance, and position by position the distance equals the oracle's (ids
/// may differ only between ties).
pub fn oracle_mismatch(
    what: &str,
    reply: &TopKQueryResult,
    metric: i32,
    rows: &Rows,
    queries: &[Vector],
    topk: usize,
    expected_stride: Option<usize>,
) -> Result<(), String> {
    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                return Err(format!($($msg)+));
            }
        };
    }
    let nq = queries.len();
    let want_hits = topk.min(rows.len());
    if want_hits == 0 {
        ensure!(
            reply.row_num == 0,
            "{what}: no rows, expected an empty result"
        );
        ensure!(reply.ids.is_empty(), "{what}: no rows, expected no ids");
        return Ok(());
    }
    ensure!(
        reply.row_num as usize == nq,
        "{what}: row_num {} for {nq} queries",
        reply.row_num
    );
    ensure!(
        reply.ids.len() == reply.distances.len(),
        "{what}: ids and distances differ in length"
    );
    ensure!(reply.ids.len().is_multiple_of(nq), "{what}: ragged result");
    let stride = reply.ids.len() / nq;
    if let Some(s) = expected_stride {
        ensure!(
            stride == s,
            "{what}: stride {stride}, expected {s} (topk {topk}, {} rows)",
            rows.len()
        );
    }
    let by_id: HashMap<i64, &Vector> = rows.rows.iter().map(|(id, v)| (*id, v)).collect();
    for (q, query) in queries.iter().enumerate() {
        let ids = &reply.ids[q * stride..(q + 1) * stride];
        let distances = &reply.distances[q * stride..(q + 1) * stride];
        let real: Vec<(i64, f32)> = ids
            .iter()
            .zip(distances)
            .filter(|(id, _)| **id != -1)
            .map(|(id, d)| (*id, *d))
            .collect();
        ensure!(
            ids[..real.len()].iter().all(|id| *id != -1),
            "{what}: query {q}: padding (-1) before a real hit: {ids:?}"
        );
        let expected = oracle(metric, rows, query, topk);
        ensure!(
            real.len() == want_hits,
            "{what}: query {q}: {} hits, expected {want_hits}\n got {real:?}\n want {expected:?}",
            real.len()
        );
        let mut seen = HashSet::new();
        for (pos, ((id, got), (want_distance, want_id))) in real.iter().zip(&expected).enumerate() {
            ensure!(
                seen.insert(*id),
                "{what}: query {q}: id {id} returned twice"
            );
            let Some(vector) = by_id.get(id) else {
                return Err(format!(
                    "{what}: query {q} pos {pos}: id {id} is not a live row (deleted or unknown); expected {want_id}"
                ));
            };
            let true_distance = distance(metric, query, vector);
            ensure!(
                close(f64::from(*got), true_distance),
                "{what}: query {q} pos {pos}: id {id} reported at distance {got}, true distance {true_distance}"
            );
            ensure!(
                close(f64::from(*got), *want_distance),
                "{what}: query {q} pos {pos}: got id {id} at {got}, oracle has id {want_id} at {want_distance}\n got {real:?}\n want {expected:?}"
            );
        }
    }
    Ok(())
}

/// The oracle check itself must reject wrong answers, or every scenario would
/// pass vacuously.
#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (Rows, Vec<Vector>, TopKQueryResult) {
        let mut rows = Rows::default();
        let vectors: Vec<Vector> = [0.0f32, 1.0, 3.0, 6.0]
            .iter()
            .map(|x| Vector::Float(vec![*x, 0.0]))
            .collect();
        rows.add(&[10, 11, 12, 13], &vectors);
        let queries = vec![Vector::Float(vec![0.9, 0.0])];
        let reply = TopKQueryResult {
            status: None,
            row_num: 1,
            ids: vec![11, 10, 12],
            distances: vec![0.01, 0.81, 4.41],
        };
        (rows, queries, reply)
    }

    #[test]
    fn a_right_answer_passes() {
        let (rows, queries, reply) = fixture();
        check_against_oracle("right", &reply, L2, &rows, &queries, 3, Some(3));
    }

    #[test]
    #[should_panic(expected = "oracle has id")]
    fn a_wrong_order_fails() {
        let (rows, queries, mut reply) = fixture();
        reply.ids.swap(0, 1);
        reply.distances.swap(0, 1);
        check_against_oracle("order", &reply, L2, &rows, &queries, 3, Some(3));
    }

    #[test]
    #[should_panic(expected = "not a live row")]
    fn a_deleted_id_fails() {
        let (mut rows, queries, reply) = fixture();
        rows.remove(&HashSet::from([12]));
        check_against_oracle("deleted", &reply, L2, &rows, &queries, 3, None);
    }

    #[test]
    #[should_panic(expected = "true distance")]
    fn a_wrong_distance_fails() {
        let (rows, queries, mut reply) = fixture();
        reply.distances[2] = 4.5;
        check_against_oracle("distance", &reply, L2, &rows, &queries, 3, Some(3));
    }

    #[test]
    #[should_panic(expected = "stride")]
    fn a_wrong_stride_fails() {
        let (rows, queries, mut reply) = fixture();
        reply.ids.push(-1);
        reply.distances.push(f32::MAX);
        check_against_oracle("stride", &reply, L2, &rows, &queries, 10, Some(4));
    }

    #[test]
    fn ties_may_come_in_any_order() {
        let mut rows = Rows::default();
        rows.add(
            &[1, 2, 3],
            &[
                Vector::Binary(vec![0b0000_0001]),
                Vector::Binary(vec![0b0000_0010]),
                Vector::Binary(vec![0b0000_0111]),
            ],
        );
        let queries = vec![Vector::Binary(vec![0])];
        let reply = TopKQueryResult {
            status: None,
            row_num: 1,
            ids: vec![2, 1],
            distances: vec![1.0, 1.0],
        };
        check_against_oracle("ties", &reply, HAMMING, &rows, &queries, 2, Some(2));
    }
}
