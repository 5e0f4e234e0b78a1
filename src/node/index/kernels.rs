//! One-pair distance keys for graph walks and quantizer training, computed in
//! the exact scan's summation order, plus the small seeded random generator
//! every index build uses.
//!
//! A key is "smaller is better": the squared L2 distance, or the negated inner
//! product. Sums use eight lane accumulators reduced as
//! `((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7))` and then the tail, like the portable
//! kernel in `scan.rs`, so a key equals the scan's value whenever the scan
//! runs its portable kernel (its AVX2 kernel fuses multiply-adds and may
//! differ in the last bit; reported distances are therefore always taken from
//! the scan itself, see `ivf.rs` and `hnsw.rs`).

use crate::types::MetricType;

/// Float metrics an index can be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    L2,
    Ip,
}

impl Metric {
    /// The key of a pair: squared L2 distance, or `-Σ a·b`.
    #[inline]
    pub fn key(self, a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            if avx2_available() {
                // SAFETY: `avx2_available` confirmed AVX2 on this CPU. The body
                // is the portable code (no FMA contraction), so the value is
                // the same; only the register width changes.
                #[allow(unsafe_code, reason = "AVX2 kernel call, guarded by runtime detection")]
                return unsafe { avx2::key(self, a, b) };
            }
        }
        key_portable(self, a, b)
    }
}

impl From<Metric> for MetricType {
    fn from(metric: Metric) -> Self {
        match metric {
            Metric::L2 => MetricType::L2,
            Metric::Ip => MetricType::Ip,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

const LANES: usize = 8;

#[inline(always)]
fn key_portable(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => lane_sum::<true>(a, b),
        Metric::Ip => -lane_sum::<false>(a, b),
    }
}

/// `Σ (a-b)²` when `L2`, else `Σ a·b`, over the common length.
#[inline(always)]
fn lane_sum<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a_chunks, a_tail) = a[..len].as_chunks::<LANES>();
    let (b_chunks, b_tail) = b[..len].as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            let term = if L2 { x[l] - y[l] } else { x[l] };
            let other = if L2 { term } else { y[l] };
            acc[l] += term * other;
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += if L2 { (x - y) * (x - y) } else { x * y };
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Metric;

    /// `super::key_portable` compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[allow(unsafe_code, reason = "target_feature functions are unsafe to call")]
    pub(super) unsafe fn key(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
        super::key_portable(metric, a, b)
    }
}

/// SplitMix64: a tiny, fully specified generator, so an index built from the
/// same rows and parameters is the same on every platform and crate version.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]`, never 0 (so its logarithm is finite).
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// `k` distinct values of `0..n` (`k <= n`) in random order: a partial
    /// Fisher–Yates shuffle.
    pub fn sample_distinct(&mut self, n: usize, k: usize) -> Vec<u32> {
        let mut pool: Vec<u32> = (0..n as u32).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            pool.swap(i, j);
        }
        pool.truncate(k.min(n));
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::scan::{inner_product, l2_distance};

    #[test]
    fn keys_match_the_scalar_definitions() {
        let mut rng = SplitMix64::new(3);
        for dim in [1, 7, 8, 9, 31, 128] {
            let a: Vec<f32> = (0..dim).map(|_| rng.next_unit() as f32).collect();
            let b: Vec<f32> = (0..dim).map(|_| rng.next_unit() as f32).collect();
            let l2 = Metric::L2.key(&a, &b);
            let ip = Metric::Ip.key(&a, &b);
            assert!((l2 - l2_distance(&a, &b)).abs() < 1e-4, "dim {dim}");
            assert!((ip + inner_product(&a, &b)).abs() < 1e-4, "dim {dim}");
            assert_eq!(l2, key_portable(Metric::L2, &a, &b));
            assert_eq!(ip, key_portable(Metric::Ip, &a, &b));
        }
    }

    #[test]
    fn generator_is_reproducible_and_in_range() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        for _ in 0..1000 {
            let u = a.next_unit();
            assert!(u > 0.0 && u <= 1.0);
            assert!(a.below(7) < 7);
        }
        let sample = a.sample_distinct(10, 10);
        let mut sorted = sample.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<u32>>());
        assert_eq!(a.sample_distinct(5, 9).len(), 5);
    }
}
