//! On-disk segments: a segment's vectors, ids and deleted rows, written once
//! into their own directory and read back whole.
//!
//! Layout (reference §3.8): `<data_dir>/db/tables/<table_id>/<segment_id>/` holds
//! `<segment_id>.rv` (raw vectors), `<segment_id>.uid` (entity ids) and, once
//! rows are deleted, `deleted_docs.<n>` (sorted row offsets of the `n` deleted
//! entities, one file per version). Only our node reads these files, so the
//! names follow Milvus but the bytes do not.
//!
//! No file is ever rewritten under its name: a segment is a new directory,
//! an index a new file, each version of the deletes a new name. That is what
//! makes a shared file system whose clients cache names and attributes for a
//! while (JuiceFS, NFS) safe to read from several machines: a reader only
//! opens names the metadata led it to, and those are never stale.
//!
//! The byte format of each file is in `format`, how a directory or file is
//! changed without a crash leaving a half-written one in `atomic_io`, and
//! the deleted-rows set in `deleted_docs`. Writers of one segment must be
//! serialized by the caller.

mod atomic_io;
mod deleted_docs;
mod format;
mod index_file;
mod values;

use std::fmt::Display;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

pub use atomic_io::{list_segment_dirs, remove_segment_dir, SegmentDirs, TEMP_SUFFIX};
pub use deleted_docs::{
    deleted_docs_path, read_deleted_docs, write_deleted_docs, DeletedDocs, DELETED_DOCS_FILE,
};
pub use format::HEADER_LEN;
pub use index_file::{read_index_file, remove_index_file, write_index_file};
pub use values::Values;

/// `<data_dir>/db/tables/<table_id>/<segment_id>`. The ids are used as path
/// components as given; callers pass validated collection names and our own
/// generated segment ids.
pub fn segment_dir(data_dir: &Path, table_id: &str, segment_id: &str) -> PathBuf {
    data_dir
        .join("db")
        .join("tables")
        .join(table_id)
        .join(segment_id)
}

/// The raw vectors of a segment, row-major; memory-mapped when read from
/// disk (see `values`), owned when built in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentVectors {
    /// `dim` floats per row.
    Float { dim: usize, data: Values<f32> },
    /// `dim_bits / 8` packed bytes per row; `dim_bits` is a multiple of 8.
    Binary { dim_bits: usize, data: Values<u8> },
}

/// A borrowed view of one stored vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VectorRef<'a> {
    Float(&'a [f32]),
    Binary(&'a [u8]),
}

impl SegmentVectors {
    /// The collection dimension: floats per row, or bits per row for binary.
    pub fn dim(&self) -> usize {
        match self {
            Self::Float { dim, .. } => *dim,
            Self::Binary { dim_bits, .. } => *dim_bits,
        }
    }

    /// Number of values (`f32` or `u8`) that make up one row.
    pub fn values_per_row(&self) -> usize {
        match self {
            Self::Float { dim, .. } => *dim,
            Self::Binary { dim_bits, .. } => dim_bits / 8,
        }
    }

    /// Number of rows; a trailing partial row is not counted.
    pub fn row_count(&self) -> usize {
        let per_row = self.values_per_row();
        if per_row == 0 {
            return 0;
        }
        match self {
            Self::Float { data, .. } => data.len() / per_row,
            Self::Binary { data, .. } => data.len() / per_row,
        }
    }

    /// Size of the vector payload in a `.rv` file, header excluded.
    pub fn payload_bytes(&self) -> u64 {
        match self {
            Self::Float { data, .. } => data.len() as u64 * 4,
            Self::Binary { data, .. } => data.len() as u64,
        }
    }

    /// The vector stored at `row`, or `None` past the end.
    pub fn row(&self, row: usize) -> Option<VectorRef<'_>> {
        let per_row = self.values_per_row();
        let start = row.checked_mul(per_row)?;
        let end = start.checked_add(per_row)?;
        match self {
            Self::Float { data, .. } => data.get(start..end).map(VectorRef::Float),
            Self::Binary { data, .. } => data.get(start..end).map(VectorRef::Binary),
        }
    }

    /// Checks the shape (non-zero dim, whole bytes for binary, whole rows)
    /// and returns the row count.
    pub fn checked_row_count(&self) -> Result<usize, String> {
        let (dim, len) = match self {
            Self::Float { dim, data } => (*dim, data.len()),
            Self::Binary { dim_bits, data } => {
                if !dim_bits.is_multiple_of(8) {
                    return Err(format!(
                        "binary dimension {dim_bits} is not a multiple of 8"
                    ));
                }
                (*dim_bits, data.len())
            }
        };
        if dim == 0 || u32::try_from(dim).is_err() {
            return Err(format!("dimension {dim} out of range"));
        }
        let per_row = self.values_per_row();
        if !len.is_multiple_of(per_row) {
            return Err(format!(
                "vector data holds {len} values, not a whole number of rows of {per_row}"
            ));
        }
        Ok(len / per_row)
    }
}

/// A loaded segment. `read_segment` guarantees `ids.len() == row_count()` and
/// that every deleted offset is a valid row.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub vectors: SegmentVectors,
    pub ids: Values<i64>,
    pub deleted: DeletedDocs,
}

impl Segment {
    /// Rows including deleted ones.
    pub fn row_count(&self) -> usize {
        self.vectors.row_count()
    }

    /// Rows not deleted.
    pub fn live_rows(&self) -> usize {
        self.row_count().saturating_sub(self.deleted.len())
    }

    /// On-disk size of the `.rv` and `.uid` files, headers included.
    pub fn byte_size(&self) -> u64 {
        2 * HEADER_LEN as u64 + self.vectors.payload_bytes() + self.ids.len() as u64 * 8
    }

    /// The first live row whose entity id is `id`.
    pub fn position_of(&self, id: i64) -> Option<usize> {
        self.ids
            .iter()
            .enumerate()
            .find(|&(row, &row_id)| row_id == id && !self.deleted.is_deleted(row))
            .map(|(row, _)| row)
    }

    /// All live rows whose id is in `ids` (ids may repeat in a segment),
    /// ascending; one pass over the segment. For delete-by-id.
    pub fn live_rows_with_ids(&self, ids: &[i64]) -> Vec<usize> {
        let wanted: std::collections::HashSet<i64> = ids.iter().copied().collect();
        self.ids
            .iter()
            .enumerate()
            .filter(|&(row, row_id)| wanted.contains(row_id) && !self.deleted.is_deleted(row))
            .map(|(row, _)| row)
            .collect()
    }

    /// The vector stored at `row` (deleted or not), or `None` past the end.
    pub fn vector(&self, row: usize) -> Option<VectorRef<'_>> {
        self.vectors.row(row)
    }
}

fn invalid_data(path: &Path, msg: impl Display) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("{}: {msg}", path.display()))
}

fn invalid_input(msg: impl Display) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg.to_string())
}

/// Wraps an error with what we were doing and to which path, keeping its kind.
fn context<'a>(action: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |err| io::Error::new(err.kind(), format!("{action} {}: {err}", path.display()))
}

fn rv_file_name(segment_id: &str) -> String {
    format!("{segment_id}.rv")
}

fn uid_file_name(segment_id: &str) -> String {
    format!("{segment_id}.uid")
}

/// A segment id becomes a file name: it must be one plain path component.
fn check_segment_id(segment_id: &str) -> io::Result<()> {
    let plain = !segment_id.is_empty()
        && !segment_id.starts_with('.')
        && !segment_id.contains(['/', '\\', '\0']);
    if plain {
        Ok(())
    } else {
        Err(invalid_input(format!("invalid segment id {segment_id:?}")))
    }
}

/// Writes the segment's `.rv` and `.uid` into `dir` atomically (see
/// `atomic_io`); returns the total bytes of the two files. `dir` must not already hold a segment (only leftover `*.tmp` files
/// from a crashed write are replaced); its parents are created as needed.
pub fn write_segment(
    dir: &Path,
    segment_id: &str,
    vectors: &SegmentVectors,
    ids: &[i64],
) -> io::Result<u64> {
    check_segment_id(segment_id)?;
    let rows = vectors.checked_row_count().map_err(invalid_input)?;
    if ids.len() != rows {
        return Err(invalid_input(format!(
            "segment {segment_id}: {} ids for {rows} vectors",
            ids.len()
        )));
    }
    if u32::try_from(rows).is_err() {
        return Err(invalid_input(format!(
            "segment {segment_id}: {rows} rows exceed the u32 deleted-offset range"
        )));
    }
    atomic_io::write_dir_atomically(dir, |staging| {
        fill_staging(staging, segment_id, vectors, ids, rows)
    })
}

/// Writes the two files of a new segment into `staging`; returns their
/// total bytes.
fn fill_staging(
    staging: &Path,
    segment_id: &str,
    vectors: &SegmentVectors,
    ids: &[i64],
    rows: usize,
) -> io::Result<u64> {
    let rv_path = staging.join(rv_file_name(segment_id));
    let mut total = format::write_vectors_file(&rv_path, vectors, rows)?;
    total += format::write_ids_file(&staging.join(uid_file_name(segment_id)), ids)?;
    Ok(total)
}

/// Loads the segment in `dir` as its metadata row describes it, with
/// `live_rows` (`TableFiles.row_count`) rows not deleted: validates headers,
/// that there is one id per vector row, and reads the version of the deletes
/// that leaves exactly `live_rows` (see `deleted_docs`). `InvalidData` when
/// the disk holds fewer rows than that; `NotFound` when a file is missing.
/// Temporary files are never read.
pub fn read_segment(dir: &Path, segment_id: &str, live_rows: usize) -> io::Result<Segment> {
    check_segment_id(segment_id)?;
    let vectors = format::read_vectors_file(&dir.join(rv_file_name(segment_id)))?;
    let uid_path = dir.join(uid_file_name(segment_id));
    let ids = format::read_ids_file(&uid_path)?;
    let rows = vectors.row_count();
    if ids.len() != rows {
        return Err(invalid_data(
            &uid_path,
            format!("{} ids for {rows} vector rows", ids.len()),
        ));
    }
    let deleted = read_deleted_docs(dir, rows, deleted_count(dir, rows, live_rows)?)?;
    Ok(Segment {
        vectors,
        ids,
        deleted,
    })
}

/// How many of a segment's `rows` rows its metadata says are deleted.
pub fn deleted_count(dir: &Path, rows: usize, live_rows: usize) -> io::Result<usize> {
    rows.checked_sub(live_rows).ok_or_else(|| {
        invalid_data(
            dir,
            format!("the metadata counts {live_rows} live rows, the segment on disk holds {rows}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    pub(super) fn float_vectors(rows: usize, dim: usize) -> SegmentVectors {
        let data: Vec<f32> = (0..rows * dim).map(|i| i as f32 * 0.5 - 3.25).collect();
        SegmentVectors::Float {
            dim,
            data: data.into(),
        }
    }

    pub(super) fn binary_vectors(rows: usize, dim_bits: usize) -> SegmentVectors {
        let data: Vec<u8> = (0..rows * dim_bits / 8)
            .map(|i| (i * 37 % 256) as u8)
            .collect();
        SegmentVectors::Binary {
            dim_bits,
            data: data.into(),
        }
    }

    pub(super) fn test_dir(root: &TempDir) -> PathBuf {
        segment_dir(root.path(), "coll_a", "1620000000000001")
    }

    pub(super) fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    pub(super) fn kind_of(err: &io::Error) -> ErrorKind {
        err.kind()
    }

    #[test]
    fn segment_dir_follows_milvus_layout() {
        let dir = segment_dir(Path::new("/data"), "coll", "123");
        assert_eq!(dir, PathBuf::from("/data/db/tables/coll/123"));
    }

    #[test]
    fn float_segment_round_trips() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let vectors = float_vectors(5, 3);
        let ids = vec![10, -20, 30, i64::MAX, i64::MIN];
        let written = write_segment(&dir, "1620000000000001", &vectors, &ids).unwrap();

        let rv = dir.join("1620000000000001.rv");
        let uid = dir.join("1620000000000001.uid");
        assert_eq!(file_len(&rv), 24 + 5 * 3 * 4);
        assert_eq!(file_len(&uid), 24 + 5 * 8);
        assert!(!dir.join(DELETED_DOCS_FILE).exists(), "no deletes, no file");
        assert_eq!(written, file_len(&rv) + file_len(&uid));

        let segment = read_segment(&dir, "1620000000000001", 5).unwrap();
        assert_eq!(segment.vectors, vectors);
        assert_eq!(segment.ids, ids);
        assert!(segment.deleted.is_empty());
        assert_eq!(segment.row_count(), 5);
        assert_eq!(segment.live_rows(), 5);
        assert_eq!(segment.byte_size(), file_len(&rv) + file_len(&uid));
        assert_eq!(
            segment.vector(1),
            Some(VectorRef::Float(&[-1.75, -1.25, -0.75]))
        );
        assert_eq!(segment.vector(5), None);
        assert_eq!(segment.position_of(i64::MAX), Some(3));
        assert_eq!(segment.position_of(11), None);
    }

    #[test]
    fn binary_segment_round_trips() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let vectors = binary_vectors(4, 16);
        let ids = vec![4, 3, 2, 1];
        let written = write_segment(&dir, "9", &vectors, &ids).unwrap();
        assert_eq!(written, 24 + 8 + 24 + 32);

        let segment = read_segment(&dir, "9", 4).unwrap();
        assert_eq!(segment.vectors, vectors);
        assert_eq!(segment.vectors.dim(), 16);
        assert_eq!(segment.ids, ids);
        assert_eq!(segment.row_count(), 4);
        assert_eq!(segment.byte_size(), 24 + 8 + 24 + 32);
        let SegmentVectors::Binary { data, .. } = &vectors else {
            unreachable!()
        };
        assert_eq!(segment.vector(2), Some(VectorRef::Binary(&data[4..6])));
    }

    #[test]
    fn empty_segment_round_trips() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let vectors = SegmentVectors::Float {
            dim: 8,
            data: vec![].into(),
        };
        write_segment(&dir, "5", &vectors, &[]).unwrap();
        let segment = read_segment(&dir, "5", 0).unwrap();
        assert_eq!(segment.row_count(), 0);
        assert!(segment.ids.is_empty());
        assert_eq!(segment.vectors.dim(), 8);
    }

    #[test]
    fn bad_shapes_are_rejected_before_writing() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let cases = [
            (
                SegmentVectors::Float {
                    dim: 0,
                    data: vec![].into(),
                },
                vec![],
            ),
            (
                SegmentVectors::Float {
                    dim: 3,
                    data: vec![1.0; 4].into(),
                },
                vec![1],
            ),
            (
                SegmentVectors::Binary {
                    dim_bits: 12,
                    data: vec![0; 3].into(),
                },
                vec![1, 2],
            ),
            (float_vectors(2, 3), vec![1]),
        ];
        for (vectors, ids) in cases {
            let err = write_segment(&dir, "1", &vectors, &ids).unwrap_err();
            assert_eq!(kind_of(&err), ErrorKind::InvalidInput, "{vectors:?}: {err}");
        }
        for bad_id in ["", "../x", "a/b", ".hidden"] {
            let err = write_segment(&dir, bad_id, &float_vectors(1, 1), &[1]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad_id:?}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn live_rows_with_ids_finds_duplicates_and_skips_deleted() {
        let segment = Segment {
            vectors: float_vectors(5, 1),
            ids: vec![7, 8, 7, 9, 7].into(),
            deleted: DeletedDocs::from_offsets(5, &[2]).unwrap(),
        };
        assert_eq!(segment.live_rows_with_ids(&[7, 9, 100]), vec![0, 3, 4]);
        assert_eq!(segment.position_of(7), Some(0));
        assert!(segment.live_rows_with_ids(&[]).is_empty());
    }

    #[test]
    fn id_count_must_match_rows() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(4, 3), &[1, 2, 3, 4]).unwrap();
        write_segment(
            &root.path().join("other"),
            "1",
            &float_vectors(3, 4),
            &[1, 2, 3],
        )
        .unwrap();
        fs::copy(root.path().join("other/1.uid"), dir.join("1.uid")).unwrap();
        let err = read_segment(&dir, "1", 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("3 ids for 4 vector rows"), "{err}");
    }

    #[test]
    fn the_metadata_row_count_picks_the_deletes_version() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(4, 3), &[1, 2, 3, 4]).unwrap();
        write_deleted_docs(&dir, &[1]).unwrap();
        write_deleted_docs(&dir, &[1, 2]).unwrap();
        assert!(read_segment(&dir, "1", 4).unwrap().deleted.is_empty());
        assert_eq!(read_segment(&dir, "1", 3).unwrap().deleted.offsets(), &[1]);
        assert_eq!(read_segment(&dir, "1", 2).unwrap().live_rows(), 2);
        // Metadata ahead of the disk: a version that is not there yet.
        let err = read_segment(&dir, "1", 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        // More live rows than the disk holds.
        let err = read_segment(&dir, "1", 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("holds 4"), "{err}");
    }

    #[test]
    fn missing_segment_is_not_found() {
        let root = TempDir::new().unwrap();
        let err = read_segment(&test_dir(&root), "1", 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("1.rv"), "{err}");
    }
}
