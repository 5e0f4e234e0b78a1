//! Per-query top-k selection: the best `k` (key, id) candidates of one query,
//! smaller key first, ties broken by the smaller id, NaN keys never kept.

use std::cmp::Ordering;

/// One hit in "smaller key is better" form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Candidate {
    pub(super) key: f32,
    pub(super) id: i64,
}

/// Total order on non-NaN keys, ties by id. `partial_cmp` (not `total_cmp`)
/// so that -0.0 and 0.0 tie and fall back to the id.
pub(super) fn compare_candidates(a: &Candidate, b: &Candidate) -> Ordering {
    a.key
        .partial_cmp(&b.key)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// Best `k` candidates of one query: an unsorted buffer cut back to `k` by
/// quickselect when it reaches `cut_at`; afterwards only candidates that beat
/// the k-th best (`threshold`) are let in.
pub(super) struct TopK {
    k: usize,
    cut_at: usize,
    buffer: Vec<Candidate>,
    /// The k-th best so far; meaningful once `full`.
    threshold: Candidate,
    full: bool,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        let cut_at = k.saturating_mul(2).max(k.saturating_add(64));
        TopK {
            k,
            cut_at,
            // Grows on demand: `k` may be far larger than what is ever found.
            buffer: Vec::with_capacity(cut_at.min(1024)),
            threshold: Candidate {
                key: f32::INFINITY,
                id: i64::MAX,
            },
            full: false,
        }
    }

    #[inline]
    pub(super) fn offer_block(&mut self, keys: &[f32], ids: &[i64], deleted: &[bool]) {
        for ((&key, &id), &is_deleted) in keys.iter().zip(ids).zip(deleted) {
            // False for NaN keys too, which are never kept.
            let may_enter = !is_deleted && key <= self.threshold.key;
            if !may_enter {
                continue;
            }
            if self.full && key == self.threshold.key && id >= self.threshold.id {
                continue;
            }
            self.buffer.push(Candidate { key, id });
            if self.buffer.len() >= self.cut_at {
                self.cut();
            }
        }
    }

    fn cut(&mut self) {
        if self.buffer.len() < self.k {
            return;
        }
        let (_, kth, _) = self
            .buffer
            .select_nth_unstable_by(self.k - 1, compare_candidates);
        self.threshold = *kth;
        self.buffer.truncate(self.k);
        self.full = true;
    }

    pub(super) fn into_sorted(mut self) -> Vec<Candidate> {
        if self.buffer.len() > self.k {
            self.cut();
        }
        self.buffer.sort_unstable_by(compare_candidates);
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids_of(top: TopK) -> Vec<i64> {
        top.into_sorted().iter().map(|c| c.id).collect()
    }

    #[test]
    fn keeps_the_best_k_and_skips_deleted_and_nan() {
        let mut top = TopK::new(2);
        top.offer_block(
            &[3.0, 1.0, f32::NAN, 1.0, 0.5],
            &[1, 2, 3, 4, 5],
            &[false, false, false, false, true],
        );
        assert_eq!(ids_of(top), vec![2, 4]);
    }

    #[test]
    fn cuts_back_to_k_and_breaks_ties_by_id() {
        // 1000 offers cross the cut threshold many times.
        let mut top = TopK::new(3);
        let keys: Vec<f32> = (0..1000).map(|i| (1000 - i) as f32).collect();
        let ids: Vec<i64> = (0..1000).collect();
        top.offer_block(&keys, &ids, &[false; 1000]);
        let best = top.into_sorted();
        assert_eq!(
            best.iter().map(|c| c.key).collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0]
        );

        // Equal keys: the smallest ids win, whatever the order they come in.
        let mut top = TopK::new(2);
        let ids: Vec<i64> = (0..200).map(|i| (i * 7919) % 200).collect();
        top.offer_block(&[0.0; 200], &ids, &[false; 200]);
        assert_eq!(ids_of(top), vec![0, 1]);
    }
}
