//! The ids the proxy gives rows inserted without ids into a spread
//! collection. Milvus' own auto ids (`tick * 1000 + k`, with `tick` in
//! microseconds) are unique within one server process only: two groups'
//! writers draw the same ids whenever they insert in the same microsecond.
//! So the proxy generates them itself and sends them as user ids.
//!
//! Layout of an id (a positive int64), most significant bit first:
//!
//! | bits | width | value |
//! |---|---|---|
//! | 63 | 1 | 0 (ids are positive; never 0 or -1) |
//! | 62..23 | 40 | milliseconds since 2025-01-01T00:00:00Z (the logical clock; lasts until 2059-11) |
//! | 22..10 | 13 | the process tag, drawn at random when the proxy process starts |
//! | 9..0 | 10 | sequence within the millisecond (1024 ids per ms, 1.02 M ids/s) |
//!
//! Uniqueness, without coordination:
//! - **within a process**: the (ms, sequence) pair strictly increases. The
//!   logical clock is max(wall clock, last ms); a burst over 1024 ids in one
//!   ms borrows the next ms (the clock runs ahead, then the wall clock
//!   catches up), and a wall clock stepping back never repeats an id.
//! - **across groups**: one generator names every row of an insert before
//!   the rows are split over the groups.
//! - **across proxy replicas and restarts**: two processes can produce the
//!   same id only when they drew the same 13-bit tag *and* generate in the
//!   same millisecond. The bound: 1/8192 per pair of proxy processes that
//!   insert ids-less rows into one collection during overlapping
//!   milliseconds (two replicas: 1.2e-4; four: 7.3e-4). A restarted process
//!   draws a new tag and starts at the wall clock, past every id its
//!   predecessor made unless that one had run ahead of the clock.
//!   Milvus itself tolerates a duplicate id (it stores both rows; DeleteByID
//!   removes both), so a collision is a duplicate, never a lost row.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// 2025-01-01T00:00:00Z in milliseconds since the Unix epoch.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
pub const TIME_BITS: u32 = 40;
pub const TAG_BITS: u32 = 13;
pub const SEQUENCE_BITS: u32 = 10;
const SEQUENCE_LIMIT: u64 = 1 << SEQUENCE_BITS;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// An id taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdParts {
    /// Milliseconds since [`EPOCH_MS`].
    pub millis: u64,
    pub tag: u16,
    pub sequence: u16,
}

/// `id` taken apart along the layout.
pub fn decode(id: i64) -> IdParts {
    let id = id as u64;
    IdParts {
        millis: (id >> (TAG_BITS + SEQUENCE_BITS)) & TIME_MASK,
        tag: ((id >> SEQUENCE_BITS) & TAG_MASK) as u16,
        sequence: (id & (SEQUENCE_LIMIT - 1)) as u16,
    }
}

/// The id of `parts`.
pub fn encode(parts: IdParts) -> i64 {
    (((parts.millis & TIME_MASK) << (TAG_BITS + SEQUENCE_BITS))
        | ((u64::from(parts.tag) & TAG_MASK) << SEQUENCE_BITS)
        | (u64::from(parts.sequence) & (SEQUENCE_LIMIT - 1))) as i64
}

/// Milliseconds since [`EPOCH_MS`] by the wall clock (0 before it).
fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as u64).saturating_sub(EPOCH_MS))
        .unwrap_or(0)
}

/// One process's id generator (the proxy holds one for all collections).
pub struct IdGenerator {
    tag: u16,
    clock: fn() -> u64,
    /// (logical ms, next sequence in it).
    state: Mutex<(u64, u64)>,
}

impl IdGenerator {
    /// A generator with a random tag, on the wall clock.
    pub fn new() -> Self {
        Self::with(rand::random::<u16>() & TAG_MASK as u16, wall_millis)
    }

    /// A generator with a given tag and clock (milliseconds since [`EPOCH_MS`]).
    pub fn with(tag: u16, clock: fn() -> u64) -> Self {
        Self {
            tag: tag & TAG_MASK as u16,
            clock,
            state: Mutex::new((0, 0)),
        }
    }

    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// `n` new ids, increasing.
    pub fn next_ids(&self, n: usize) -> Vec<i64> {
        let now = (self.clock)() & TIME_MASK;
        // A poisoned lock only means another insert panicked mid-way; the
        // state it left is a valid (ms, sequence) pair.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut millis, mut sequence) = *state;
        if now > millis {
            millis = now;
            sequence = 0;
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            if sequence == SEQUENCE_LIMIT {
                millis += 1;
                sequence = 0;
            }
            ids.push(encode(IdParts {
                millis,
                tag: self.tag,
                sequence: sequence as u16,
            }));
            sequence += 1;
        }
        *state = (millis, sequence);
        ids
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn frozen() -> u64 {
        1_000
    }

    #[test]
    fn parts_round_trip_and_ids_are_positive() {
        let parts = IdParts {
            millis: TIME_MASK,
            tag: TAG_MASK as u16,
            sequence: 1023,
        };
        assert_eq!(decode(encode(parts)), parts);
        assert!(encode(parts) > 0);
        let generator = IdGenerator::new();
        let id = generator.next_ids(1)[0];
        assert!(id > 0);
        let parts = decode(id);
        assert_eq!(parts.tag, generator.tag());
        // Generated now: within a day of the wall clock.
        assert!(parts.millis.abs_diff(wall_millis()) < 86_400_000);
    }

    #[test]
    fn a_burst_borrows_the_next_millisecond_and_never_repeats() {
        let generator = IdGenerator::with(7, frozen);
        let mut all = Vec::new();
        for n in [1000, 1, 3000, 24] {
            all.extend(generator.next_ids(n));
        }
        assert!(all.windows(2).all(|w| w[0] < w[1]), "ids increase");
        assert_eq!(all.len(), 4025);
        let last = decode(*all.last().unwrap());
        assert_eq!(last.millis, 1_003, "4025 ids on a frozen clock span 4 ms");
        assert!(all.iter().all(|id| decode(*id).tag == 7));
    }

    #[test]
    fn a_clock_that_steps_back_repeats_nothing() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NOW: AtomicU64 = AtomicU64::new(5_000);
        fn clock() -> u64 {
            NOW.load(Ordering::SeqCst)
        }
        let generator = IdGenerator::with(1, clock);
        let before = generator.next_ids(10);
        NOW.store(4_000, Ordering::SeqCst);
        let after = generator.next_ids(10);
        assert!(after[0] > *before.last().unwrap());
    }

    #[test]
    fn processes_with_different_tags_never_collide() {
        let a = IdGenerator::with(1, frozen);
        let b = IdGenerator::with(2, frozen);
        let mut seen = HashSet::new();
        for _ in 0..5 {
            for id in a.next_ids(700).into_iter().chain(b.next_ids(700)) {
                assert!(seen.insert(id), "duplicate {id}");
            }
        }
    }

    #[test]
    fn concurrent_callers_of_one_generator_get_distinct_ids() {
        let generator = std::sync::Arc::new(IdGenerator::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = generator.clone();
                std::thread::spawn(move || {
                    (0..50).flat_map(|_| g.next_ids(100)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(seen.insert(id));
            }
        }
        assert_eq!(seen.len(), 20_000);
    }
}
