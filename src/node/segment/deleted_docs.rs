//! Which rows of a segment are deleted: the in-memory set (sorted offsets
//! plus a bitset) and its files, one per version.
//!
//! Every version of a segment's deletes is a new file, `deleted_docs.<n>`,
//! named by how many rows it deletes, and never rewritten. Deletes only
//! accumulate, so no name is ever used for two contents, and a reader finds
//! the version it needs from the metadata alone: the segment's row count on
//! disk minus its `TableFiles.row_count`. On a shared file system whose
//! clients cache names (JuiceFS, NFS), a name replaced by a rename on
//! another machine can resolve to the old file for a while; a name never
//! used before cannot. A segment with no deletes has no file. The
//! unversioned `deleted_docs` of earlier versions of this node is still
//! read when it holds exactly the count the metadata asks for.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use super::{atomic_io, format, invalid_data};

/// Prefix of the deleted-offsets files inside a segment directory (and the
/// whole name of the legacy unversioned one).
pub const DELETED_DOCS_FILE: &str = "deleted_docs";

/// `<dir>/deleted_docs.<deleted>`: the version that deletes `deleted` rows.
pub fn deleted_docs_path(dir: &Path, deleted: usize) -> PathBuf {
    dir.join(format!("{DELETED_DOCS_FILE}.{deleted}"))
}

/// Row offsets of deleted entities: sorted, deduplicated, all below the
/// segment's row count, plus a bitset for O(1) lookup (bit `row % 64` of word
/// `row / 64`; `bitset().len() == rows.div_ceil(64)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedDocs {
    rows: usize,
    offsets: Vec<u32>,
    bitset: Vec<u64>,
}

impl DeletedDocs {
    /// No rows deleted in a segment of `rows` rows.
    pub fn none(rows: usize) -> Self {
        Self {
            rows,
            offsets: Vec::new(),
            bitset: vec![0; rows.div_ceil(64)],
        }
    }

    /// Builds the set from offsets in any order, with duplicates. Fails with
    /// `InvalidInput` if an offset is not below `rows`.
    pub fn from_offsets(rows: usize, offsets: &[u32]) -> io::Result<Self> {
        let offsets = sorted_unique(offsets);
        Self::from_sorted_unique(rows, offsets)
            .map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))
    }

    fn from_sorted_unique(rows: usize, offsets: Vec<u32>) -> Result<Self, String> {
        let mut deleted = Self::none(rows);
        for &offset in &offsets {
            let row = offset as usize;
            if row >= rows {
                return Err(format!(
                    "deleted offset {offset} is out of range for {rows} rows"
                ));
            }
            deleted.bitset[row / 64] |= 1 << (row % 64);
        }
        deleted.offsets = offsets;
        Ok(deleted)
    }

    /// True if `row` is deleted; rows past the end are not.
    pub fn is_deleted(&self, row: usize) -> bool {
        self.bitset
            .get(row / 64)
            .is_some_and(|word| word & (1 << (row % 64)) != 0)
    }

    /// Number of deleted rows.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Row count of the segment this set belongs to.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Deleted row offsets, ascending, without duplicates.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// One bit per row, set when the row is deleted.
    pub fn bitset(&self) -> &[u64] {
        &self.bitset
    }
}

fn sorted_unique(offsets: &[u32]) -> Vec<u32> {
    let mut offsets = offsets.to_vec();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// Publishes the version of a segment's deletes holding `offsets` (sorted
/// and deduplicated here) as `deleted_docs.<count>`, written whole through a
/// temporary file, synced and renamed; returns the count. `dir` must exist.
/// A leftover of the same name (written, then a crash came before the
/// metadata named it, so no reader ever opened it) is replaced.
pub fn write_deleted_docs(dir: &Path, offsets: &[u32]) -> io::Result<usize> {
    let offsets = sorted_unique(offsets);
    let name = format!("{DELETED_DOCS_FILE}.{}", offsets.len());
    atomic_io::replace_file(dir, &name, |temp_path| {
        format::write_offsets_file(temp_path, &offsets)
    })?;
    Ok(offsets.len())
}

/// Reads the version of the deletes of a segment of `rows` rows that
/// deletes exactly `deleted` rows (none: no file is read). `NotFound` when
/// that version is not on disk; `InvalidData` when a file holds another
/// count, or unsorted, duplicate or out-of-range offsets.
pub fn read_deleted_docs(dir: &Path, rows: usize, deleted: usize) -> io::Result<DeletedDocs> {
    if deleted == 0 {
        return Ok(DeletedDocs::none(rows));
    }
    let path = deleted_docs_path(dir, deleted);
    let (path, offsets) = match format::read_offsets_file(&path) {
        Ok(offsets) => (path, offsets),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let legacy = dir.join(DELETED_DOCS_FILE);
            match format::read_offsets_file(&legacy) {
                Ok(offsets) if offsets.len() == deleted => (legacy, offsets),
                // Not this version either: report the name that was wanted.
                _ => return Err(err),
            }
        }
        Err(err) => return Err(err),
    };
    if offsets.len() != deleted {
        return Err(invalid_data(
            &path,
            format!("holds {} offsets, expected {deleted}", offsets.len()),
        ));
    }
    if offsets.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(invalid_data(&path, "offsets are not strictly ascending"));
    }
    DeletedDocs::from_sorted_unique(rows, offsets).map_err(|msg| invalid_data(&path, msg))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{float_vectors, test_dir};
    use super::super::{read_segment, write_segment};
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    fn segment_of(root: &TempDir, rows: usize) -> PathBuf {
        let dir = test_dir(root);
        let ids: Vec<i64> = (0..rows as i64).collect();
        write_segment(&dir, "1", &float_vectors(rows, 2), &ids).unwrap();
        dir
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_version_gets_a_name_of_its_own_and_none_is_rewritten() {
        let root = TempDir::new().unwrap();
        let dir = segment_of(&root, 10);
        assert_eq!(names_in(&dir), ["1.rv", "1.uid"], "no deletes, no file");
        assert_eq!(write_deleted_docs(&dir, &[3]).unwrap(), 1);
        let first = fs::read(deleted_docs_path(&dir, 1)).unwrap();
        assert_eq!(write_deleted_docs(&dir, &[3, 4, 4]).unwrap(), 2);
        assert_eq!(
            names_in(&dir),
            ["1.rv", "1.uid", "deleted_docs.1", "deleted_docs.2"]
        );
        assert_eq!(fs::read(deleted_docs_path(&dir, 1)).unwrap(), first);
        assert_eq!(read_deleted_docs(&dir, 10, 1).unwrap().offsets(), &[3]);
        assert_eq!(read_deleted_docs(&dir, 10, 2).unwrap().offsets(), &[3, 4]);
        assert!(read_deleted_docs(&dir, 10, 0).unwrap().is_empty());
    }

    #[test]
    fn a_version_not_on_disk_is_not_found() {
        let root = TempDir::new().unwrap();
        let dir = segment_of(&root, 10);
        write_deleted_docs(&dir, &[3]).unwrap();
        let err = read_deleted_docs(&dir, 10, 2).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn the_legacy_file_is_read_only_when_it_holds_the_wanted_count() {
        let root = TempDir::new().unwrap();
        let dir = segment_of(&root, 10);
        write_deleted_docs(&dir, &[2, 5]).unwrap();
        fs::rename(deleted_docs_path(&dir, 2), dir.join(DELETED_DOCS_FILE)).unwrap();
        assert_eq!(read_deleted_docs(&dir, 10, 2).unwrap().offsets(), &[2, 5]);
        let err = read_deleted_docs(&dir, 10, 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn deleted_docs_round_trip_sorted_and_deduped() {
        let root = TempDir::new().unwrap();
        let dir = segment_of(&root, 130);
        assert_eq!(
            write_deleted_docs(&dir, &[129, 3, 64, 3, 0, 63]).unwrap(),
            5
        );
        let deleted = read_deleted_docs(&dir, 130, 5).unwrap();
        assert_eq!(deleted.offsets(), &[0, 3, 63, 64, 129]);
        assert_eq!(deleted.len(), 5);
        assert_eq!(deleted.rows(), 130);
        assert_eq!(
            deleted.bitset(),
            &[(1 << 0) | (1 << 3) | (1 << 63), 1, 1 << 1]
        );
        for row in 0..140 {
            assert_eq!(
                deleted.is_deleted(row),
                [0, 3, 63, 64, 129].contains(&row),
                "row {row}"
            );
        }
        let segment = read_segment(&dir, "1", 125).unwrap();
        assert_eq!(segment.deleted, deleted);
        assert_eq!(segment.live_rows(), 125);
        assert_eq!(segment.position_of(3), None);
        assert_eq!(segment.position_of(4), Some(4));
    }

    #[test]
    fn wrong_counts_and_bad_offsets_are_invalid_data() {
        let root = TempDir::new().unwrap();
        let dir = root.path();
        write_deleted_docs(dir, &[5]).unwrap();
        let err = read_deleted_docs(dir, 5, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "out of range: {err}");
        assert!(read_deleted_docs(dir, 6, 1).unwrap().is_deleted(5));

        // A file that holds another count than its name says.
        fs::copy(deleted_docs_path(dir, 1), deleted_docs_path(dir, 2)).unwrap();
        let err = read_deleted_docs(dir, 10, 2).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "count: {err}");

        let mut bytes = fs::read(deleted_docs_path(dir, 1)).unwrap();
        bytes[16] = 2; // two offsets ...
        bytes.extend_from_slice(&1u32.to_le_bytes()); // ... 5 then 1: unsorted
        fs::write(deleted_docs_path(dir, 2), bytes).unwrap();
        let err = read_deleted_docs(dir, 10, 2).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "unsorted: {err}");
    }

    #[test]
    fn deleted_docs_from_offsets_checks_range() {
        let deleted = DeletedDocs::from_offsets(10, &[9, 1, 1]).unwrap();
        assert_eq!(deleted.offsets(), &[1, 9]);
        let err = DeletedDocs::from_offsets(10, &[10]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!DeletedDocs::none(0).is_deleted(0));
    }

    #[test]
    fn write_deleted_docs_needs_the_segment_dir() {
        let root = TempDir::new().unwrap();
        let err = write_deleted_docs(&root.path().join("missing"), &[1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}
