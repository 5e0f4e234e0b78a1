//! Splits index-build work over the machine's cores with scoped threads, and
//! gives the results back in input order so builds are deterministic.

use std::num::NonZeroUsize;
use std::ops::Range;

/// Calls `work` on consecutive sub-ranges of `0..len` (at least `min_chunk`
/// items each, one per core at most) and returns the results in range order.
/// Runs on the calling thread when one range suffices.
pub fn map_ranges<T: Send>(
    len: usize,
    min_chunk: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    map_ranges_with(cores, len, min_chunk, work)
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
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges[1..]
            .iter()
            .cloned()
            .map(|range| scope.spawn(move || work(range)))
            .collect();
        let mut results = vec![work(ranges[0].clone())];
        for handle in handles {
            match handle.join() {
                Ok(result) => results.push(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
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
