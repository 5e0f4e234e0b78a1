//! Which rows of a segment are deleted: the in-memory set (sorted offsets
//! plus a bitset) and its `deleted_docs` file, replaced whole on every delete.

use std::io::{self, ErrorKind};
use std::path::Path;

use super::{atomic_io, format, invalid_data};

/// Which `deleted_docs` file a segment's deletes were read from. The file
/// is only ever replaced by renaming a new file over it, so a replacement
/// shows as another inode, and deletes only accumulate, so it also grows;
/// inode, length and modification time together tell versions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocsStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl DocsStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// The stamp of the `deleted_docs` file in `dir` now (`None`: the segment
/// has no deletes file). The file is opened, not stat'ed by path, so that a
/// network file system revalidates it (close-to-open consistency).
/// `NotFound` when the segment directory itself is gone.
pub fn deleted_docs_stamp(dir: &Path) -> io::Result<Option<DocsStamp>> {
    let path = dir.join(DELETED_DOCS_FILE);
    match std::fs::File::open(&path).and_then(|f| f.metadata()) {
        Ok(meta) => Ok(Some(DocsStamp::of(&meta))),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            // No deletes file: fine if the segment is there, else it is gone.
            std::fs::metadata(dir)
                .map(|_| None)
                .map_err(super::context("opening segment directory", dir))
        }
        Err(err) => Err(super::context("opening", &path)(err)),
    }
}

/// Name of the deleted-offsets file inside a segment directory.
pub const DELETED_DOCS_FILE: &str = "deleted_docs";

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

/// Atomically replaces `dir/deleted_docs` with `offsets` (sorted and
/// deduplicated here) through `deleted_docs.tmp`. `dir` must exist. Offsets
/// are checked against the row count when read back.
pub fn write_deleted_docs(dir: &Path, offsets: &[u32]) -> io::Result<()> {
    let offsets = sorted_unique(offsets);
    atomic_io::replace_file(dir, DELETED_DOCS_FILE, |temp_path| {
        format::write_offsets_file(temp_path, &offsets)
    })?;
    Ok(())
}

/// Reads `dir/deleted_docs` for a segment of `rows` rows. A missing file means
/// nothing is deleted; unsorted, duplicate or out-of-range offsets are
/// `InvalidData`.
pub fn read_deleted_docs(dir: &Path, rows: usize) -> io::Result<DeletedDocs> {
    let path = dir.join(DELETED_DOCS_FILE);
    let offsets = match format::read_offsets_file(&path) {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(DeletedDocs::none(rows)),
        other => other?,
    };
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

    #[test]
    fn stamp_changes_with_every_replacement_and_says_when_the_segment_is_gone() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(
            &dir,
            "1",
            &float_vectors(10, 2),
            &(0..10).collect::<Vec<_>>(),
        )
        .unwrap();
        let first = deleted_docs_stamp(&dir).unwrap();
        assert!(first.is_some());
        assert_eq!(deleted_docs_stamp(&dir).unwrap(), first, "stable");
        write_deleted_docs(&dir, &[3]).unwrap();
        let second = deleted_docs_stamp(&dir).unwrap();
        assert_ne!(second, first, "one delete");
        write_deleted_docs(&dir, &[3, 4]).unwrap();
        assert_ne!(deleted_docs_stamp(&dir).unwrap(), second, "another delete");
        fs::remove_file(dir.join(DELETED_DOCS_FILE)).unwrap();
        assert_eq!(deleted_docs_stamp(&dir).unwrap(), None);
        super::super::remove_segment_dir(&dir).unwrap();
        let err = deleted_docs_stamp(&dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn deleted_docs_round_trip_sorted_and_deduped() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(
            &dir,
            "1",
            &float_vectors(130, 2),
            &(0..130).collect::<Vec<_>>(),
        )
        .unwrap();
        write_deleted_docs(&dir, &[129, 3, 64, 3, 0, 63]).unwrap();

        let deleted = read_deleted_docs(&dir, 130).unwrap();
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

        let segment = read_segment(&dir, "1").unwrap();
        assert_eq!(segment.deleted, deleted);
        assert_eq!(segment.live_rows(), 125);
        assert_eq!(segment.position_of(3), None);
        assert_eq!(segment.position_of(4), Some(4));

        write_deleted_docs(&dir, &[]).unwrap();
        assert!(read_deleted_docs(&dir, 130).unwrap().is_empty());
    }

    #[test]
    fn missing_deleted_docs_means_none_deleted() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(3, 2), &[1, 2, 3]).unwrap();
        fs::remove_file(dir.join(DELETED_DOCS_FILE)).unwrap();
        let segment = read_segment(&dir, "1").unwrap();
        assert!(segment.deleted.is_empty());
        assert_eq!(segment.deleted.bitset(), &[0]);
    }

    #[test]
    fn out_of_range_or_unsorted_deleted_offsets_are_invalid_data() {
        let root = TempDir::new().unwrap();
        let dir = root.path();
        write_deleted_docs(dir, &[5]).unwrap();
        let err = read_deleted_docs(dir, 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(read_deleted_docs(dir, 6).unwrap().is_deleted(5));

        let mut bytes = fs::read(dir.join(DELETED_DOCS_FILE)).unwrap();
        bytes[16] = 2; // two offsets ...
        bytes.extend_from_slice(&1u32.to_le_bytes()); // ... 5 then 1: unsorted
        fs::write(dir.join(DELETED_DOCS_FILE), bytes).unwrap();
        let err = read_deleted_docs(dir, 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
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
