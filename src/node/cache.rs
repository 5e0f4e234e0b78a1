//! Cache of loaded segments keyed by `TableFiles.id`. A segment's vectors and
//! ids never change once published (a new segment gets a new directory), so
//! only its deletes can go stale: every lookup checks the `deleted_docs` file
//! on disk (one open + fstat) and re-reads just the deletes when that file was
//! replaced. The writable node replaces that file before it records the
//! delete in the metadata, so what a lookup sees is never older than the
//! database. A segment whose directory is gone is dropped and reported
//! `NotFound`. Bounded in bytes; the least recently used entries go first.
//! Lookups do file I/O: call them from blocking threads.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::segment::{self, DocsStamp, Segment};

struct Entry {
    /// The `deleted_docs` file `segment.deleted` was read from.
    stamp: Option<DocsStamp>,
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

    /// The segment of file `file_id` in `dir` with its current deletes:
    /// from the cache when its deletes file is unchanged, else (re)read.
    /// Blocking: does file I/O.
    pub fn get_fresh(
        &self,
        file_id: i64,
        dir: &Path,
        segment_id: &str,
    ) -> io::Result<Arc<Segment>> {
        // Stamp before reading: the deletes read are at least this new.
        let on_disk = match segment::deleted_docs_stamp(dir) {
            Ok(stamp) => stamp,
            Err(e) => {
                if e.kind() == io::ErrorKind::NotFound {
                    self.evict(file_id);
                }
                return Err(e);
            }
        };
        let cached = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            inner.entries.get_mut(&file_id).map(|e| {
                e.last_used = now;
                (e.stamp, e.segment.clone())
            })
        };
        let segment = match cached {
            Some((stamp, segment)) if stamp == on_disk => return Ok(segment),
            // The deletes file was replaced: re-read only the deletes.
            Some((_, old)) => Segment {
                vectors: old.vectors.clone(),
                ids: old.ids.clone(),
                deleted: segment::read_deleted_docs(dir, old.row_count())?,
            },
            None => segment::read_segment(dir, segment_id)?,
        };
        Ok(self.insert(file_id, on_disk, segment))
    }

    fn insert(&self, file_id: i64, stamp: Option<DocsStamp>, segment: Segment) -> Arc<Segment> {
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
                stamp,
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

    #[test]
    fn deletes_are_reread_and_vectors_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = dir_with_segment(&root, "1", 4);
        let cache = SegmentCache::new(1 << 30);
        let first = cache.get_fresh(7, &dir, "1").unwrap();
        assert!(first.deleted.is_empty());
        assert!(Arc::ptr_eq(&first, &cache.get_fresh(7, &dir, "1").unwrap()));

        write_deleted_docs(&dir, &[2]).unwrap();
        let second = cache.get_fresh(7, &dir, "1").unwrap();
        assert_eq!(second.deleted.offsets(), &[2]);
        assert_eq!(second.ids, first.ids);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_removed_segment_is_dropped_and_not_found() {
        let root = tempfile::tempdir().unwrap();
        let dir = dir_with_segment(&root, "1", 4);
        let cache = SegmentCache::new(1 << 30);
        cache.get_fresh(7, &dir, "1").unwrap();
        segment::remove_segment_dir(&dir).unwrap();
        let err = cache.get_fresh(7, &dir, "1").unwrap_err();
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
            .get_fresh(1, &dirs[0], "1")
            .unwrap()
            .byte_size();
        let cache = SegmentCache::new(2 * one);
        cache.get_fresh(1, &dirs[0], "1").unwrap();
        cache.get_fresh(2, &dirs[1], "2").unwrap();
        cache.get_fresh(1, &dirs[0], "1").unwrap();
        cache.get_fresh(3, &dirs[2], "3").unwrap();
        let inner = cache.lock();
        let mut kept: Vec<i64> = inner.entries.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 3]);
    }
}
