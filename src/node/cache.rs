//! Cache of loaded segments keyed by `TableFiles.id`. An entry is valid only
//! for the `updated_time` it was loaded at: when the metadata shows a newer
//! time (deletes applied by the writable node), the segment is read again.
//! Bounded in bytes; the least recently used entries go first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::segment::{self, Segment};

struct Entry {
    updated_time: i64,
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

    /// The segment of file `file_id` as of `updated_time`, loading it from
    /// `dir` when absent or stale. Loading runs on the blocking pool.
    pub async fn get_or_load(
        &self,
        file_id: i64,
        updated_time: i64,
        dir: PathBuf,
        segment_id: String,
    ) -> std::io::Result<Arc<Segment>> {
        {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            if let Some(e) = inner.entries.get_mut(&file_id) {
                if e.updated_time == updated_time {
                    e.last_used = now;
                    return Ok(e.segment.clone());
                }
            }
        }
        let segment = tokio::task::spawn_blocking(move || segment::read_segment(&dir, &segment_id))
            .await
            .map_err(std::io::Error::other)??;
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
                updated_time,
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
        Ok(segment)
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
