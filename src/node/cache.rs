//! Cache of loaded segments keyed by `TableFiles.id`, and the one place a
//! segment is read from disk.
//!
//! A segment's vectors and ids never change once published (a new segment
//! gets a new directory), and each version of its deletes is a file of its
//! own (see `segment::deleted_docs`). So a lookup needs no file I/O at all
//! when the cached deletes are the version the metadata row asks for: the
//! row's `row_count` says how many rows are live, hence how many deleted.
//! Otherwise only that version of the deletes is read (the whole segment
//! on a miss).
//!
//! The writable node publishes a file before the metadata names it, so a
//! reader never finds the disk older than the metadata, but a shared file
//! system might (an object store catching up, a write-back cache on the
//! writer): such a read (a missing file, a count that does not add up) is
//! retried a few times, then fails, so the node answers an error rather than
//! a search over stale rows. Bounded in bytes; the least recently used
//! entries go first. Lookups do file I/O: call them from blocking threads.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::segment::{self, Segment};

/// Pauses between the reads of a segment whose disk does not (yet) match
/// its metadata row; after the last one the read fails.
const REREAD_BACKOFF: [Duration; 4] = [
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
];

/// Which file's segment to load, as its metadata row names it.
#[derive(Clone, Debug)]
pub struct SegmentKey {
    /// `TableFiles.id`.
    pub file_id: i64,
    pub segment_id: String,
    /// `TableFiles.row_count`: the rows not deleted.
    pub live_rows: usize,
}

struct Entry {
    /// The segment id the entry was read for (ids of a SQLite table can be
    /// reused after their row is gone).
    segment_id: String,
    segment: Arc<Segment>,
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<i64, Entry>,
    bytes: u64,
    clock: u64,
}

pub struct SegmentCache {
    inner: Mutex<Inner>,
    /// Bytes the cache may hold; `cache.cache_size` changes it at run time.
    capacity: AtomicU64,
}

impl SegmentCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: AtomicU64::new(capacity),
        }
    }

    /// A new capacity, applied from the next load on.
    pub fn set_capacity(&self, bytes: u64) {
        self.capacity.store(bytes, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent (every
        // mutation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The segment of `key` in `dir` with exactly the deletes its metadata
    /// row counts: from the cache when it has that version, else read (and
    /// re-read a few times while the disk does not match the row). Blocking:
    /// may do file I/O and sleep.
    pub fn get_fresh(&self, key: &SegmentKey, dir: &Path) -> io::Result<Arc<Segment>> {
        let cached = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            inner
                .entries
                .get_mut(&key.file_id)
                .filter(|e| e.segment_id == key.segment_id)
                .map(|e| {
                    e.last_used = now;
                    e.segment.clone()
                })
        };
        if let Some(segment) = &cached {
            if segment.live_rows() == key.live_rows {
                return Ok(segment.clone());
            }
        }
        let started = Instant::now();
        let mut backoff = REREAD_BACKOFF.iter();
        loop {
            match read_matching(key, dir, cached.as_deref()) {
                Ok(segment) => return Ok(self.insert(key, segment)),
                Err(e) if disk_may_catch_up(&e) => match backoff.next() {
                    Some(pause) => std::thread::sleep(*pause),
                    None => {
                        self.evict(key.file_id);
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "{e} (the metadata counts {} live rows; read {} times in {} ms)",
                                key.live_rows,
                                REREAD_BACKOFF.len() + 1,
                                started.elapsed().as_millis()
                            ),
                        ));
                    }
                },
                Err(e) => return Err(e),
            }
        }
    }

    fn insert(&self, key: &SegmentKey, segment: Segment) -> Arc<Segment> {
        let file_id = key.file_id;
        let segment = Arc::new(segment);
        let bytes = segment.byte_size();
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.remove(&file_id) {
            inner.bytes -= old.bytes;
        }
        inner.entries.insert(
            file_id,
            Entry {
                segment_id: key.segment_id.clone(),
                segment: segment.clone(),
                bytes,
                last_used: now,
            },
        );
        inner.bytes += bytes;
        while inner.bytes > self.capacity.load(Ordering::Relaxed) && inner.entries.len() > 1 {
            let Some(victim) = inner
                .entries
                .iter()
                .filter(|(id, _)| **id != file_id)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&victim) {
                inner.bytes -= e.bytes;
            }
        }
        segment
    }

    pub fn evict(&self, file_id: i64) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.remove(&file_id) {
            inner.bytes -= e.bytes;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The segment as `key`'s row describes it, reusing the vectors and ids of
/// `cached` (the same segment with another version of its deletes).
fn read_matching(key: &SegmentKey, dir: &Path, cached: Option<&Segment>) -> io::Result<Segment> {
    let Some(old) = cached else {
        return segment::read_segment(dir, &key.segment_id, key.live_rows);
    };
    let rows = old.row_count();
    let deleted = segment::deleted_count(dir, rows, key.live_rows)?;
    Ok(Segment {
        vectors: old.vectors.clone(),
        ids: old.ids.clone(),
        deleted: segment::read_deleted_docs(dir, rows, deleted)?,
    })
}

/// A file missing or not adding up to the metadata row: what a shared file
/// system that has not caught up with the writer looks like.
fn disk_may_catch_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::InvalidData
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::segment::{write_deleted_docs, write_segment, SegmentVectors};

    fn dir_with_segment(root: &tempfile::TempDir, name: &str, rows: usize) -> std::path::PathBuf {
        let dir = segment::segment_dir(root.path(), "t", name);
        let vectors = SegmentVectors::Float {
            dim: 2,
            data: vec![0.5; rows * 2].into(),
        };
        write_segment(&dir, name, &vectors, &(0..rows as i64).collect::<Vec<_>>()).unwrap();
        dir
    }

    fn key(file_id: i64, segment_id: &str, live_rows: usize) -> SegmentKey {
        SegmentKey {
            file_id,
            segment_id: segment_id.to_string(),
            live_rows,
        }
    }

    #[test]
    fn the_version_the_metadata_counts_is_read_and_vectors_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = dir_with_segment(&root, "1", 4);
        let cache = SegmentCache::new(1 << 30);
        let first = cache.get_fresh(&key(7, "1", 4), &dir).unwrap();
        assert!(first.deleted.is_empty());
        assert!(Arc::ptr_eq(
            &first,
            &cache.get_fresh(&key(7, "1", 4), &dir).unwrap()
        ));

        write_deleted_docs(&dir, &[2]).unwrap();
        // Until the metadata row counts the delete, the cached version answers.
        assert!(Arc::ptr_eq(
            &first,
            &cache.get_fresh(&key(7, "1", 4), &dir).unwrap()
        ));
        let second = cache.get_fresh(&key(7, "1", 3), &dir).unwrap();
        assert_eq!(second.deleted.offsets(), &[2]);
        assert_eq!(second.ids, first.ids);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_disk_behind_the_metadata_is_read_again_then_an_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = dir_with_segment(&root, "1", 4);
        let cache = SegmentCache::new(1 << 30);
        cache.get_fresh(&key(7, "1", 4), &dir).unwrap();
        // The metadata counts a delete whose file another thread publishes
        // while the reads are retried.
        let publisher = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(15));
                write_deleted_docs(&dir, &[1]).unwrap();
            })
        };
        let caught_up = cache.get_fresh(&key(7, "1", 3), &dir).unwrap();
        publisher.join().unwrap();
        assert_eq!(caught_up.deleted.offsets(), &[1]);
        // A version that never arrives: an error naming the counts, no rows.
        let err = cache.get_fresh(&key(7, "1", 2), &dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("2 live rows"), "{err}");
        assert!(cache.is_empty(), "the entry is dropped");
        // More live rows than the disk holds is no better.
        let err = cache.get_fresh(&key(7, "1", 5), &dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn another_segment_under_a_reused_file_id_is_read_afresh() {
        let root = tempfile::tempdir().unwrap();
        let one = dir_with_segment(&root, "1", 4);
        let two = dir_with_segment(&root, "2", 6);
        let cache = SegmentCache::new(1 << 30);
        cache.get_fresh(&key(7, "1", 4), &one).unwrap();
        let other = cache.get_fresh(&key(7, "2", 6), &two).unwrap();
        assert_eq!(other.row_count(), 6);
    }

    #[test]
    fn a_missing_segment_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let dir = dir_with_segment(&root, "1", 4);
        segment::remove_segment_dir(&dir).unwrap();
        let cache = SegmentCache::new(1 << 30);
        let err = cache.get_fresh(&key(7, "1", 4), &dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(cache.is_empty());
    }

    #[test]
    fn least_recently_used_goes_first() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<_> = (1..=3)
            .map(|i| dir_with_segment(&root, &i.to_string(), 100))
            .collect();
        let one = SegmentCache::new(0)
            .get_fresh(&key(1, "1", 100), &dirs[0])
            .unwrap()
            .byte_size();
        let cache = SegmentCache::new(2 * one);
        cache.get_fresh(&key(1, "1", 100), &dirs[0]).unwrap();
        cache.get_fresh(&key(2, "2", 100), &dirs[1]).unwrap();
        cache.get_fresh(&key(1, "1", 100), &dirs[0]).unwrap();
        cache.get_fresh(&key(3, "3", 100), &dirs[2]).unwrap();
        let inner = cache.lock();
        let mut kept: Vec<i64> = inner.entries.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 3]);
    }
}
