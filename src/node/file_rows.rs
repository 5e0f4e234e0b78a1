//! The `TableFiles` rows `SearchInFiles` needs, cached by file id so a
//! search does not read them from the metadata database every time.
//!
//! What is safe to cache: a file id's table, segment, file name and engine
//! never change. Its `file_type` does, but once a file has left the
//! NEW / NEW_MERGE / NEW_INDEX states it never returns to them, and Milvus
//! 1.1 searches a file named by id in every other state (RAW, TO_INDEX,
//! INDEX, and also BACKUP and TO_DELETE while it is still on disk), so a
//! settled row answers a search the same way whatever state it moved to
//! since. Rows still in a NEW* state are not cached (the search skips them
//! and must ask again). What does change under a settled row is checked at
//! the source on every search instead: its deletes (the segment cache
//! compares the `deleted_docs` file on disk) and whether it still exists (a
//! retired file's directory is removed before its row: a missing directory
//! drops the row here, the search answers FileNotFound as before, and the
//! next search asks the database, which says "Invalid file id" once the row
//! is gone). Ids the database does not know are never cached.
//!
//! Bounded by row count; when full, the least recently used half goes.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::meta::FileRow;
use crate::types::FileType;

/// Rows kept at most (Milvus accepts at most 65536 files per search).
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// Whether a row read from the database may answer later searches from the cache.
pub fn settled(row: &FileRow) -> bool {
    matches!(
        row.kind(),
        Some(
            FileType::Raw
                | FileType::ToIndex
                | FileType::Index
                | FileType::Backup
                | FileType::ToDelete
        )
    )
}

struct Entry {
    row: FileRow,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    rows: HashMap<i64, Entry>,
    clock: u64,
}

/// The cache itself; see the module doc for what it holds.
pub struct FileRows {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl FileRows {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(2),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation is one insert or remove: a poisoned map is consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached rows of `ids` (in the order of `ids`, duplicates once) and
    /// the ids that must be read from the database.
    pub fn lookup(&self, ids: &[i64]) -> (Vec<FileRow>, Vec<i64>) {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            match inner.rows.get_mut(&id) {
                Some(e) => {
                    e.last_used = now;
                    found.push(e.row.clone());
                }
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    /// Remembers the settled rows among `rows`, just read from the database.
    pub fn remember(&self, rows: &[FileRow]) {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        for row in rows.iter().filter(|r| settled(r)) {
            inner.rows.insert(
                row.id,
                Entry {
                    row: row.clone(),
                    last_used: now,
                },
            );
        }
        if inner.rows.len() > self.capacity {
            // Written by hand: a full LRU list would cost a crate and a
            // pointer per row for a cache that is rarely full; dropping the
            // older half at once is amortised O(1) per insert.
            let mut ages: Vec<u64> = inner.rows.values().map(|e| e.last_used).collect();
            let keep = self.capacity / 2;
            let cut = ages.len() - keep;
            let (_, &mut threshold, _) = ages.select_nth_unstable(cut);
            inner.rows.retain(|_, e| e.last_used >= threshold);
        }
    }

    /// Drops the rows of `ids` (their files are gone or unreadable).
    pub fn forget(&self, ids: &[i64]) {
        let mut inner = self.lock();
        for id in ids {
            inner.rows.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures;

    fn row(id: i64, kind: FileType) -> FileRow {
        let mut r = fixtures::file(id, "t", 10);
        r.file_type = kind as i32;
        r
    }

    #[test]
    fn only_settled_states_are_cached() {
        for kind in [
            FileType::Raw,
            FileType::ToIndex,
            FileType::Index,
            FileType::Backup,
            FileType::ToDelete,
        ] {
            assert!(settled(&row(1, kind)), "{kind:?}");
        }
        for kind in [FileType::New, FileType::NewMerge, FileType::NewIndex] {
            assert!(!settled(&row(1, kind)), "{kind:?}");
        }
        let mut unknown = row(1, FileType::Raw);
        unknown.file_type = 42;
        assert!(!settled(&unknown));
    }

    #[test]
    fn new_files_are_asked_again_until_settled() {
        let rows = FileRows::new(16);
        rows.remember(&[row(1, FileType::Raw), row(2, FileType::NewIndex)]);
        let (found, missing) = rows.lookup(&[1, 2, 3, 1]);
        assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(missing, vec![2, 3]);
        rows.remember(&[row(2, FileType::Index)]);
        let (found, missing) = rows.lookup(&[2]);
        assert_eq!(found[0].kind(), Some(FileType::Index));
        assert!(missing.is_empty());
    }

    #[test]
    fn forgotten_rows_are_read_again() {
        let rows = FileRows::new(16);
        rows.remember(&[row(1, FileType::Raw), row(2, FileType::Raw)]);
        rows.forget(&[1]);
        assert_eq!(rows.lookup(&[1, 2]).1, vec![1]);
    }

    #[test]
    fn bounded_and_keeps_the_recently_used() {
        let rows = FileRows::new(8);
        for id in 0..8 {
            rows.remember(&[row(id, FileType::Raw)]);
        }
        rows.lookup(&[0, 1]);
        rows.remember(&[row(100, FileType::Raw)]);
        assert!(rows.len() <= 8, "{}", rows.len());
        let (found, _) = rows.lookup(&[0, 1, 100]);
        assert_eq!(found.len(), 3, "recently used rows survive");
    }
}
