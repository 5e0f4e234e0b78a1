//! Splits index-build work over the node's worker pool (`node::pool`, one
//! thread per core, shared with searches), and gives the results back in
//! input order so builds are deterministic.

use std::ops::Range;

use rayon::prelude::*;

/// Calls `work` on consecutive sub-ranges of `0..len` (at least `min_chunk`
/// items each, one per core at most) and returns the results in range order.
/// Runs on the calling thread when one range suffices.
pub fn map_ranges<T: Send>(
    len: usize,
    min_chunk: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    map_ranges_with(crate::node::pool::width(), len, min_chunk, work)
}

fn map_ranges_with<T: Send>(
    threads: usize,
    len: usize,
    min_chunk: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    let parts = threads.min(len / min_chunk.max(1)).max(1);
    if parts == 1 {
        return vec![work(0..len)];
    }
    let ranges: Vec<Range<usize>> = (0..parts)
        .map(|p| (len * p / parts)..(len * (p + 1) / parts))
        .collect();
    // `install` runs the parts on the pool and waits; a panic in one part is
    // resumed here, as with scoped threads.
    crate::node::pool::workers().install(|| ranges.into_par_iter().map(&work).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_input_in_order() {
        for threads in [1, 2, 3, 8] {
            for len in [0, 1, 5, 100, 1001] {
                let got = map_ranges_with(threads, len, 10, |r| r);
                let flat: Vec<usize> = got.into_iter().flatten().collect();
                assert_eq!(flat, (0..len).collect::<Vec<_>>(), "{threads} {len}");
            }
        }
        assert_eq!(map_ranges_with(4, 100, 10, |r| r.len()), vec![25; 4]);
        assert_eq!(map_ranges_with(4, 15, 10, |r| r.len()), vec![15]);
    }
}
