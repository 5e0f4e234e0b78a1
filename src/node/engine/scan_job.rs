//! One search's scan on the shared worker pool: a task per segment (and per
//! row range of a large segment when there are fewer segments than threads),
//! each folding its top-k into the running result as it finishes; the last
//! task hands the result to the waiting request. No tokio thread scans.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::indexing::search_index;
use crate::merge::{self, TopKHits};
use crate::node::index::{SearchKnobs, VectorIndex};
use crate::node::pool;
use crate::node::scan::{self, QueriesRef, VectorsRef};
use crate::node::segment::{Segment, SegmentVectors};
use crate::status::{MilvusError, MilvusResult};
use crate::types::MetricType;
use crate::validate::VectorData;

/// A segment is split into row ranges of at least this many rows, and only
/// when the search has fewer segments than the pool has threads.
const MIN_PIECE_ROWS: usize = 16 * 1024;

/// A loaded segment and, for an INDEX file built for the search's metric, its index.
pub(super) type Loaded = (Arc<Segment>, Option<Arc<VectorIndex>>);

/// What one search scans and how.
pub(super) struct ScanJob {
    pub segments: Vec<Loaded>,
    pub queries: VectorData,
    pub metric: MetricType,
    pub dim: usize,
    pub topk: usize,
    pub knobs: SearchKnobs,
}

/// A unit of work: rows `rows` of segment `segment` (all rows for an index search).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    segment: usize,
    rows: Range<usize>,
}

/// The pieces of a search over segments of `rows[i]` rows (`indexed[i]`:
/// searched through its index, never split) on `threads` threads: one per
/// segment, and a segment split into near-equal ranges of at least
/// [`MIN_PIECE_ROWS`] when segments alone cannot keep every thread busy.
fn plan_pieces(rows: &[usize], indexed: &[bool], threads: usize) -> Vec<Piece> {
    let per_segment = threads.div_ceil(rows.len().max(1)).max(1);
    let mut pieces = Vec::with_capacity(rows.len() * per_segment);
    for (segment, (&n, &is_indexed)) in rows.iter().zip(indexed).enumerate() {
        let parts = if is_indexed {
            1
        } else {
            per_segment.min(n / MIN_PIECE_ROWS).max(1)
        };
        for p in 0..parts {
            pieces.push(Piece {
                segment,
                rows: (n * p / parts)..(n * (p + 1) / parts),
            });
        }
    }
    pieces
}

/// The running result, or the first error.
#[derive(Default)]
struct Fold {
    running: Option<TopKHits>,
    error: Option<MilvusError>,
}

impl Fold {
    /// Folds one piece's outcome into the running top-k.
    fn add(&mut self, part: MilvusResult<TopKHits>, topk: usize, metric: MetricType) {
        if self.error.is_some() {
            return;
        }
        let merged = part.and_then(|part| {
            let parts = match self.running.take() {
                Some(running) => vec![running, part],
                None => vec![part],
            };
            merge::merge(parts, topk, metric.order())
        });
        match merged {
            Ok(hits) => self.running = Some(hits),
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(self) -> MilvusResult<TopKHits> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.running.unwrap_or_else(TopKHits::empty)),
        }
    }
}

struct Shared {
    job: ScanJob,
    fold: Mutex<Fold>,
    remaining: AtomicUsize,
    reply: Mutex<Option<oneshot::Sender<MilvusResult<TopKHits>>>>,
}

impl Shared {
    fn lock_fold(&self) -> std::sync::MutexGuard<'_, Fold> {
        // Folding is a single assignment; a poisoned lock holds a consistent value.
        self.fold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller stopped waiting (request cancelled) or a piece failed:
    /// the remaining pieces need not scan.
    fn abandoned(&self) -> bool {
        let gone = self
            .reply
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|tx| tx.is_closed());
        gone || self.lock_fold().error.is_some()
    }

    fn run_piece(&self, piece: &Piece) {
        if !self.abandoned() {
            let outcome = catch_unwind(AssertUnwindSafe(|| scan_piece(&self.job, piece)))
                .unwrap_or_else(|_| Err(MilvusError::unexpected("a search task panicked")));
            self.lock_fold()
                .add(outcome, self.job.topk, self.job.metric);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let result = std::mem::take(&mut *self.lock_fold()).finish();
            let tx = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(tx) = tx {
                // The receiver may be gone (request cancelled): nothing to do then.
                let _ = tx.send(result);
            }
        }
    }
}

/// Runs `job` on the worker pool and waits (asynchronously) for its merged top-k.
pub(super) async fn run(job: ScanJob) -> MilvusResult<TopKHits> {
    if job.segments.is_empty() {
        return Ok(TopKHits::empty());
    }
    let rows: Vec<usize> = job.segments.iter().map(|(s, _)| s.row_count()).collect();
    let indexed: Vec<bool> = job
        .segments
        .iter()
        .map(|(_, index)| index.is_some() && matches!(job.queries, VectorData::Float(_)))
        .collect();
    let pieces = plan_pieces(&rows, &indexed, pool::width());
    let (tx, rx) = oneshot::channel();
    let shared = Arc::new(Shared {
        job,
        fold: Mutex::new(Fold::default()),
        remaining: AtomicUsize::new(pieces.len()),
        reply: Mutex::new(Some(tx)),
    });
    let workers = pool::workers();
    for piece in pieces {
        let shared = shared.clone();
        workers.spawn(move || shared.run_piece(&piece));
    }
    rx.await
        .map_err(|_| MilvusError::unexpected("search tasks ended without a result"))?
}

/// Scans one piece: through the index for an indexed float search, else exactly.
fn scan_piece(job: &ScanJob, piece: &Piece) -> MilvusResult<TopKHits> {
    let (seg, index) = &job.segments[piece.segment];
    if let (Some(index), VectorData::Float(v)) = (index, &job.queries) {
        return search_index(index, seg, v, job.topk, &job.knobs);
    }
    let dim = job.dim;
    let q = match &job.queries {
        VectorData::Float(v) => QueriesRef::Float { dim, data: v },
        VectorData::Binary(v) => QueriesRef::Binary {
            dim_bits: dim,
            data: v,
        },
    };
    let rows = piece.rows.clone();
    let start = rows.start;
    let per_row = seg.vectors.values_per_row();
    let values = (rows.start * per_row)..(rows.end * per_row);
    let vectors = match &seg.vectors {
        SegmentVectors::Float { dim, data } => VectorsRef::Float {
            dim: *dim,
            data: data.get(values).unwrap_or_default(),
        },
        SegmentVectors::Binary { dim_bits, data } => VectorsRef::Binary {
            dim_bits: *dim_bits,
            data: data.get(values).unwrap_or_default(),
        },
    };
    let ids = seg.ids.get(rows).unwrap_or_default();
    scan::search_segment(
        job.metric,
        vectors,
        ids,
        |row| seg.deleted.is_deleted(start + row),
        q,
        job.topk,
    )
    .map_err(|e| MilvusError::unexpected(format!("cannot search segment: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(pieces: &[Piece], segment: usize) -> Vec<usize> {
        pieces
            .iter()
            .filter(|p| p.segment == segment)
            .flat_map(|p| p.rows.clone())
            .collect()
    }

    #[test]
    fn pieces_cover_every_row_once_in_order() {
        for threads in [1, 2, 3, 8] {
            let rows = [0, 5, 100_000, 40_000];
            let pieces = plan_pieces(&rows, &[false; 4], threads);
            for (s, &n) in rows.iter().enumerate() {
                assert_eq!(covered(&pieces, s), (0..n).collect::<Vec<_>>(), "{threads}");
            }
        }
    }

    #[test]
    fn large_segments_split_only_when_threads_would_idle() {
        let one = plan_pieces(&[100_000], &[false], 4);
        assert_eq!(one.len(), 4);
        assert!(one.iter().all(|p| p.rows.len() >= MIN_PIECE_ROWS));
        // Enough segments for the threads: one piece each.
        assert_eq!(plan_pieces(&[100_000; 8], &[false; 8], 2).len(), 8);
        // Small segments and index searches are never split.
        assert_eq!(plan_pieces(&[MIN_PIECE_ROWS], &[false], 8).len(), 1);
        assert_eq!(plan_pieces(&[1_000_000], &[true], 8).len(), 1);
        assert!(plan_pieces(&[], &[], 4).is_empty());
    }

    #[test]
    fn fold_keeps_the_best_and_the_first_error() {
        let hits = |ids: Vec<i64>, d: Vec<f32>| TopKHits {
            nq: 1,
            stride: ids.len(),
            ids,
            distances: d,
        };
        let mut fold = Fold::default();
        fold.add(Ok(hits(vec![1, 2], vec![0.1, 0.5])), 2, MetricType::L2);
        fold.add(Ok(hits(vec![3, 4], vec![0.2, 0.9])), 2, MetricType::L2);
        let best = fold.finish().unwrap();
        assert_eq!(best.ids, vec![1, 3]);
        assert_eq!(best.distances, vec![0.1, 0.2]);

        let mut fold = Fold::default();
        fold.add(Ok(hits(vec![1], vec![0.1])), 2, MetricType::L2);
        fold.add(Err(MilvusError::unexpected("disk")), 2, MetricType::L2);
        fold.add(Ok(hits(vec![3], vec![0.0])), 2, MetricType::L2);
        assert!(fold.finish().unwrap_err().reason.contains("disk"));
        assert_eq!(Fold::default().finish().unwrap().nq, 0);
    }
}
