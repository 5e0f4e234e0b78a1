//! On-disk segment files: raw vectors, ids and deleted docs, written atomically.
//!
//! Layout (reference §3.8): `<data_dir>/db/tables/<table_id>/<segment_id>/` holds
//! `<segment_id>.rv` (raw vectors), `<segment_id>.uid` (entity ids) and
//! `deleted_docs` (sorted row offsets of deleted entities). Only our node reads
//! these files, so the names follow Milvus but the bytes do not.
//!
//! Every file starts with a 24-byte little-endian header:
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..4   | magic `MSHS`                                                 |
//! | 4..6   | format version (`1`)                                         |
//! | 6..8   | element kind: 1 = f32, 2 = packed bits, 3 = i64, 4 = u32     |
//! | 8..12  | dim: floats per row, bits per row, or 1 for ids and offsets  |
//! | 12..16 | reserved, written as 0                                       |
//! | 16..24 | count: rows (vectors, ids) or offsets (deleted docs)         |
//!
//! followed by exactly `count` rows of little-endian values. A truncated,
//! padded or foreign file is an `InvalidData` error, never garbage.
//!
//! Atomicity: `write_segment` builds all three files in a hidden staging
//! directory `.<segment dir name>.tmp` next to the segment directory, syncs
//! them, renames the staging directory into place and syncs the parent, so a
//! crash leaves either no segment directory or a complete one.
//! `write_deleted_docs` replaces its single file through `deleted_docs.tmp`.
//! Writers of one segment must be serialized by the caller.

use std::ffi::OsString;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// Name of the deleted-offsets file inside a segment directory.
pub const DELETED_DOCS_FILE: &str = "deleted_docs";
/// Suffix of temporary files and staging directories; never read as data.
pub const TEMP_SUFFIX: &str = ".tmp";

const MAGIC: [u8; 4] = *b"MSHS";
const FORMAT_VERSION: u16 = 1;
/// Size of the header in front of every segment file.
pub const HEADER_LEN: usize = 24;
/// Bytes moved per read/write call when streaming payloads.
const IO_CHUNK_BYTES: usize = 4 << 20;

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

/// The raw vectors of a segment, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentVectors {
    /// `dim` floats per row.
    Float { dim: usize, data: Vec<f32> },
    /// `dim_bits / 8` packed bytes per row; `dim_bits` is a multiple of 8.
    Binary { dim_bits: usize, data: Vec<u8> },
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

/// A loaded segment. `read_segment` guarantees `ids.len() == row_count()` and
/// that every deleted offset is a valid row.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub vectors: SegmentVectors,
    pub ids: Vec<i64>,
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

/// Element type recorded in a file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    F32 = 1,
    Bits = 2,
    I64 = 3,
    U32 = 4,
}

impl ElementKind {
    fn from_u16(value: u16) -> Option<Self> {
        Some(match value {
            1 => Self::F32,
            2 => Self::Bits,
            3 => Self::I64,
            4 => Self::U32,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::F32 => "float vectors",
            Self::Bits => "binary vectors",
            Self::I64 => "ids",
            Self::U32 => "offsets",
        }
    }

    /// Payload bytes of one row with dimension `dim`.
    fn row_bytes(self, dim: u32) -> u64 {
        let dim = u64::from(dim);
        match self {
            Self::F32 => dim * 4,
            Self::Bits => dim / 8,
            Self::I64 => dim * 8,
            Self::U32 => dim * 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileHeader {
    kind: ElementKind,
    dim: u32,
    count: u64,
}

impl FileHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        bytes[8..12].copy_from_slice(&self.dim.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.count.to_le_bytes());
        bytes
    }

    /// Parses and checks magic, version, kind and dim (non-zero; whole bytes
    /// for binary; 1 for ids and offsets).
    fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, String> {
        if bytes[0..4] != MAGIC {
            return Err(format!(
                "not a mishards segment file (magic {:02x?})",
                &bytes[0..4]
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported segment format version {version} (expected {FORMAT_VERSION})"
            ));
        }
        let kind_code = u16::from_le_bytes([bytes[6], bytes[7]]);
        let kind = ElementKind::from_u16(kind_code)
            .ok_or_else(|| format!("unknown element kind {kind_code}"))?;
        let dim = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let count = u64::from_le_bytes([
            bytes[16], bytes[17], bytes[18], bytes[19], bytes[20], bytes[21], bytes[22], bytes[23],
        ]);
        let dim_ok = match kind {
            ElementKind::F32 => dim > 0,
            ElementKind::Bits => dim > 0 && dim.is_multiple_of(8),
            ElementKind::I64 | ElementKind::U32 => dim == 1,
        };
        if !dim_ok {
            return Err(format!("invalid dimension {dim} for {}", kind.name()));
        }
        Ok(Self { kind, dim, count })
    }

    /// Payload length this header announces, `None` on overflow.
    fn payload_len(&self) -> Option<u64> {
        self.count.checked_mul(self.kind.row_bytes(self.dim))
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

/// Segment directories under `<data_dir>/db/tables/`, as `(table_id,
/// segment_id, path)`, plus the hidden staging (`.tmp`) and removal (`.del`)
/// leftovers a crash can leave, as `leftovers`.
pub struct SegmentDirs {
    pub segments: Vec<(String, String, PathBuf)>,
    pub leftovers: Vec<PathBuf>,
}

/// Lists what is on disk under `<data_dir>/db/tables/` (missing = empty).
pub fn list_segment_dirs(data_dir: &Path) -> io::Result<SegmentDirs> {
    let mut out = SegmentDirs {
        segments: Vec::new(),
        leftovers: Vec::new(),
    };
    let tables = data_dir.join("db").join("tables");
    let table_entries = match fs::read_dir(&tables) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for table in table_entries {
        let table = table?;
        if !table.file_type()?.is_dir() {
            continue;
        }
        let table_id = table.file_name().to_string_lossy().into_owned();
        for entry in fs::read_dir(table.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && (name.ends_with(TEMP_SUFFIX) || name.ends_with(".del")) {
                out.leftovers.push(entry.path());
            } else if entry.file_type()?.is_dir() {
                out.segments.push((table_id.clone(), name, entry.path()));
            }
        }
    }
    Ok(out)
}

/// Splits a segment directory into its parent and a sibling path named
/// `.<name><suffix>`, used for staging and for removal.
fn hidden_sibling(dir: &Path, suffix: &str) -> io::Result<(PathBuf, PathBuf)> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(invalid_input(format!(
            "segment directory {} has no parent or name",
            dir.display()
        )));
    };
    let mut hidden = OsString::from(".");
    hidden.push(name);
    hidden.push(suffix);
    Ok((parent.to_path_buf(), parent.join(hidden)))
}

/// Flushes a directory's entries (new, renamed or removed files) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(context("syncing directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `create_dir_all` that also syncs the parent of every directory it creates.
fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path);
        current = path.parent();
    }
    for path in missing.into_iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(err) => return Err(context("creating directory", path)(err)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != ErrorKind::NotFound => {
            Err(context("removing directory", dir)(err))
        }
        _ => Ok(()),
    }
}

/// Writes `values` as little-endian bytes in large chunks.
fn write_le_values<T: Copy, const N: usize>(
    out: &mut impl Write,
    values: &[T],
    encode: fn(T) -> [u8; N],
) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(IO_CHUNK_BYTES.min(values.len() * N));
    for chunk in values.chunks(IO_CHUNK_BYTES / N) {
        buffer.clear();
        for &value in chunk {
            buffer.extend_from_slice(&encode(value));
        }
        out.write_all(&buffer)?;
    }
    Ok(())
}

/// Reads `count` little-endian values in large chunks.
fn read_le_values<T, const N: usize>(
    input: &mut impl Read,
    count: usize,
    decode: fn([u8; N]) -> T,
) -> io::Result<Vec<T>> {
    let mut values = Vec::with_capacity(count);
    let mut buffer = vec![0u8; IO_CHUNK_BYTES.min(count.saturating_mul(N))];
    let mut remaining = count;
    while remaining > 0 {
        let take = remaining.min(IO_CHUNK_BYTES / N);
        let bytes = &mut buffer[..take * N];
        input.read_exact(bytes)?;
        values.extend(bytes.chunks_exact(N).map(|chunk| {
            let mut array = [0u8; N];
            array.copy_from_slice(chunk);
            decode(array)
        }));
        remaining -= take;
    }
    Ok(values)
}

/// Payload of one file to write.
enum Payload<'a> {
    F32(&'a [f32]),
    Bytes(&'a [u8]),
    I64(&'a [i64]),
    U32(&'a [u32]),
}

/// Creates (or truncates) `path`, writes header and payload, syncs the file.
/// Returns the bytes written.
fn write_file_synced(path: &Path, header: FileHeader, payload: Payload<'_>) -> io::Result<u64> {
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all(&header.encode())?;
        match payload {
            Payload::F32(values) => write_le_values(&mut file, values, f32::to_le_bytes)?,
            Payload::Bytes(bytes) => file.write_all(bytes)?,
            Payload::I64(values) => write_le_values(&mut file, values, i64::to_le_bytes)?,
            Payload::U32(values) => write_le_values(&mut file, values, u32::to_le_bytes)?,
        }
        file.sync_all()
    };
    write().map_err(context("writing", path))?;
    let payload_len = header
        .payload_len()
        .ok_or_else(|| invalid_input("payload size overflows"))?;
    Ok(HEADER_LEN as u64 + payload_len)
}

/// An open segment file whose header and total length have been checked.
struct CheckedFile {
    file: File,
    header: FileHeader,
    /// Number of rows as `usize`; the payload is `count * row_bytes` bytes.
    count: usize,
}

/// Opens `path`, validates the header against `expected` kinds and the file
/// length against the header, before any large allocation.
fn open_checked(path: &Path, expected: &[ElementKind]) -> io::Result<CheckedFile> {
    let mut file = File::open(path).map_err(context("opening", path))?;
    let file_len = file
        .metadata()
        .map_err(context("reading metadata of", path))?
        .len();
    if file_len < HEADER_LEN as u64 {
        return Err(invalid_data(
            path,
            format!("truncated: {file_len} bytes, shorter than the {HEADER_LEN}-byte header"),
        ));
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    file.read_exact(&mut header_bytes)
        .map_err(context("reading header of", path))?;
    let header = FileHeader::decode(&header_bytes).map_err(|msg| invalid_data(path, msg))?;
    if !expected.contains(&header.kind) {
        return Err(invalid_data(
            path,
            format!(
                "holds {}, expected {}",
                header.kind.name(),
                expected
                    .iter()
                    .map(|kind| kind.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    let payload_len = header
        .payload_len()
        .ok_or_else(|| invalid_data(path, "header row count overflows"))?;
    let actual_payload = file_len - HEADER_LEN as u64;
    if actual_payload != payload_len {
        let problem = if actual_payload < payload_len {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(invalid_data(
            path,
            format!(
                "{problem}: header announces {} rows ({payload_len} payload bytes), file has {actual_payload}",
                header.count
            ),
        ));
    }
    let count = usize::try_from(header.count)
        .map_err(|_| invalid_data(path, "row count does not fit in memory"))?;
    Ok(CheckedFile {
        file,
        header,
        count,
    })
}

fn read_vectors_file(path: &Path) -> io::Result<SegmentVectors> {
    let CheckedFile {
        mut file,
        header,
        count,
    } = open_checked(path, &[ElementKind::F32, ElementKind::Bits])?;
    // The length check above bounds these products by the file size.
    let dim = header.dim as usize;
    match header.kind {
        ElementKind::Bits => {
            let mut data = vec![0u8; count * (dim / 8)];
            file.read_exact(&mut data)
                .map_err(context("reading", path))?;
            Ok(SegmentVectors::Binary {
                dim_bits: dim,
                data,
            })
        }
        _ => {
            let data = read_le_values(&mut file, count * dim, f32::from_le_bytes)
                .map_err(context("reading", path))?;
            Ok(SegmentVectors::Float { dim, data })
        }
    }
}

fn read_ids_file(path: &Path) -> io::Result<Vec<i64>> {
    let mut checked = open_checked(path, &[ElementKind::I64])?;
    read_le_values(&mut checked.file, checked.count, i64::from_le_bytes)
        .map_err(context("reading", path))
}

/// Writes the segment's `.rv`, `.uid` and an empty `deleted_docs` into `dir`
/// atomically (see the module docs); returns the total bytes of the three
/// files. `dir` must not already hold a segment (only leftover `*.tmp` files
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
    let (parent, staging) = hidden_sibling(dir, TEMP_SUFFIX)?;
    create_dir_all_durable(&parent)?;
    clear_leftovers_in(dir)?;
    remove_dir_if_present(&staging)?;
    fs::create_dir(&staging).map_err(context("creating directory", &staging))?;

    let result = fill_staging(&staging, segment_id, vectors, ids, rows).and_then(|total| {
        fs::rename(&staging, dir).map_err(context("renaming staging directory to", dir))?;
        sync_dir(&parent)?;
        Ok(total)
    });
    if result.is_err() {
        // Best effort: a leftover staging dir is also removed by the next write.
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Refuses to overwrite an existing segment; removes a directory holding
/// only `*.tmp` leftovers so the staging directory can take its place.
fn clear_leftovers_in(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(context("listing", dir)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(context("listing", dir))?;
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(TEMP_SUFFIX) {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "segment directory {} already holds {}",
                    dir.display(),
                    name.to_string_lossy()
                ),
            ));
        }
    }
    remove_dir_if_present(dir)
}

fn fill_staging(
    staging: &Path,
    segment_id: &str,
    vectors: &SegmentVectors,
    ids: &[i64],
    rows: usize,
) -> io::Result<u64> {
    let count = rows as u64;
    // Dimensions were checked to fit in u32 by `checked_row_count`.
    let dim = u32::try_from(vectors.dim()).map_err(invalid_input)?;
    let (kind, payload) = match vectors {
        SegmentVectors::Float { data, .. } => (ElementKind::F32, Payload::F32(data)),
        SegmentVectors::Binary { data, .. } => (ElementKind::Bits, Payload::Bytes(data)),
    };
    let rv_header = FileHeader { kind, dim, count };
    let mut total = write_file_synced(&staging.join(rv_file_name(segment_id)), rv_header, payload)?;
    let uid_header = FileHeader {
        kind: ElementKind::I64,
        dim: 1,
        count,
    };
    total += write_file_synced(
        &staging.join(uid_file_name(segment_id)),
        uid_header,
        Payload::I64(ids),
    )?;
    total += write_offsets_file(&staging.join(DELETED_DOCS_FILE), &[])?;
    sync_dir(staging)?;
    Ok(total)
}

fn write_offsets_file(path: &Path, sorted_offsets: &[u32]) -> io::Result<u64> {
    let header = FileHeader {
        kind: ElementKind::U32,
        dim: 1,
        count: sorted_offsets.len() as u64,
    };
    write_file_synced(path, header, Payload::U32(sorted_offsets))
}

/// Atomically replaces `dir/deleted_docs` with `offsets` (sorted and
/// deduplicated here) through `deleted_docs.tmp`. `dir` must exist. Offsets
/// are checked against the row count when read back.
pub fn write_deleted_docs(dir: &Path, offsets: &[u32]) -> io::Result<()> {
    let offsets = sorted_unique(offsets);
    let final_path = dir.join(DELETED_DOCS_FILE);
    let temp_path = dir.join(format!("{DELETED_DOCS_FILE}{TEMP_SUFFIX}"));
    write_offsets_file(&temp_path, &offsets)?;
    fs::rename(&temp_path, &final_path).map_err(context("renaming to", &final_path))?;
    sync_dir(dir)
}

/// Reads `dir/deleted_docs` for a segment of `rows` rows. A missing file means
/// nothing is deleted; unsorted, duplicate or out-of-range offsets are
/// `InvalidData`.
pub fn read_deleted_docs(dir: &Path, rows: usize) -> io::Result<DeletedDocs> {
    let path = dir.join(DELETED_DOCS_FILE);
    let mut checked = match open_checked(&path, &[ElementKind::U32]) {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(DeletedDocs::none(rows)),
        other => other?,
    };
    let offsets = read_le_values(&mut checked.file, checked.count, u32::from_le_bytes)
        .map_err(context("reading", &path))?;
    if offsets.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(invalid_data(&path, "offsets are not strictly ascending"));
    }
    DeletedDocs::from_sorted_unique(rows, offsets).map_err(|msg| invalid_data(&path, msg))
}

/// Loads the segment in `dir`: validates headers, that there is one id per
/// vector row, and the deleted offsets. Temporary files are never read.
pub fn read_segment(dir: &Path, segment_id: &str) -> io::Result<Segment> {
    check_segment_id(segment_id)?;
    let vectors = read_vectors_file(&dir.join(rv_file_name(segment_id)))?;
    let uid_path = dir.join(uid_file_name(segment_id));
    let ids = read_ids_file(&uid_path)?;
    let rows = vectors.row_count();
    if ids.len() != rows {
        return Err(invalid_data(
            &uid_path,
            format!("{} ids for {rows} vector rows", ids.len()),
        ));
    }
    let deleted = read_deleted_docs(dir, rows)?;
    Ok(Segment {
        vectors,
        ids,
        deleted,
    })
}

/// Removes a segment directory (and any staging leftover of it). The
/// directory is first renamed to a hidden `.<name>.del` sibling so it
/// disappears atomically. A missing directory is not an error.
pub fn remove_segment_dir(dir: &Path) -> io::Result<()> {
    let (parent, trash) = hidden_sibling(dir, ".del")?;
    let (_, staging) = hidden_sibling(dir, TEMP_SUFFIX)?;
    remove_dir_if_present(&trash)?;
    match fs::rename(dir, &trash) {
        Ok(()) => {
            sync_dir(&parent)?;
            remove_dir_if_present(&trash)?;
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(context("removing segment directory", dir)(err)),
    }
    remove_dir_if_present(&staging)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn float_vectors(rows: usize, dim: usize) -> SegmentVectors {
        let data = (0..rows * dim).map(|i| i as f32 * 0.5 - 3.25).collect();
        SegmentVectors::Float { dim, data }
    }

    fn binary_vectors(rows: usize, dim_bits: usize) -> SegmentVectors {
        let data = (0..rows * dim_bits / 8)
            .map(|i| (i * 37 % 256) as u8)
            .collect();
        SegmentVectors::Binary { dim_bits, data }
    }

    fn test_dir(root: &TempDir) -> PathBuf {
        segment_dir(root.path(), "coll_a", "1620000000000001")
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    fn kind_of(err: &io::Error) -> ErrorKind {
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
        let deleted = dir.join(DELETED_DOCS_FILE);
        assert_eq!(file_len(&rv), 24 + 5 * 3 * 4);
        assert_eq!(file_len(&uid), 24 + 5 * 8);
        assert_eq!(file_len(&deleted), 24);
        assert_eq!(written, file_len(&rv) + file_len(&uid) + file_len(&deleted));

        let segment = read_segment(&dir, "1620000000000001").unwrap();
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
    fn float_bits_survive_exactly() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let data = vec![f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE / 2.0];
        let vectors = SegmentVectors::Float {
            dim: 2,
            data: data.clone(),
        };
        write_segment(&dir, "7", &vectors, &[1, 2]).unwrap();
        let SegmentVectors::Float { data: read, .. } = read_segment(&dir, "7").unwrap().vectors
        else {
            panic!("expected float vectors");
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&read), bits(&data));
    }

    #[test]
    fn header_is_little_endian() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let vectors = SegmentVectors::Float {
            dim: 2,
            data: vec![1.0, 2.0],
        };
        write_segment(&dir, "7", &vectors, &[0x0102]).unwrap();
        let bytes = fs::read(dir.join("7.rv")).unwrap();
        assert_eq!(&bytes[0..4], b"MSHS");
        assert_eq!(&bytes[4..8], &[1, 0, 1, 0]);
        assert_eq!(&bytes[8..12], &[2, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[24..28], &1.0f32.to_le_bytes());
        let uid = fs::read(dir.join("7.uid")).unwrap();
        assert_eq!(&uid[24..], &[2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn binary_segment_round_trips() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let vectors = binary_vectors(4, 16);
        let ids = vec![4, 3, 2, 1];
        let written = write_segment(&dir, "9", &vectors, &ids).unwrap();
        assert_eq!(written, 24 + 8 + 24 + 32 + 24);

        let segment = read_segment(&dir, "9").unwrap();
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
            data: vec![],
        };
        write_segment(&dir, "5", &vectors, &[]).unwrap();
        let segment = read_segment(&dir, "5").unwrap();
        assert_eq!(segment.row_count(), 0);
        assert!(segment.ids.is_empty());
        assert_eq!(segment.vectors.dim(), 8);
    }

    #[test]
    fn large_float_segment_crosses_io_chunks() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        // 3 MiB of floats + 1 partial chunk of ids: exercises the chunk loop.
        let rows = 3 * 1024 + 7;
        let vectors = float_vectors(rows, 257);
        let ids: Vec<i64> = (0..rows as i64).map(|i| i * 1_000_003).collect();
        write_segment(&dir, "big", &vectors, &ids).unwrap();
        let segment = read_segment(&dir, "big").unwrap();
        assert_eq!(segment.vectors, vectors);
        assert_eq!(segment.ids, ids);
    }

    #[test]
    fn bad_shapes_are_rejected_before_writing() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let cases = [
            (
                SegmentVectors::Float {
                    dim: 0,
                    data: vec![],
                },
                vec![],
            ),
            (
                SegmentVectors::Float {
                    dim: 3,
                    data: vec![1.0; 4],
                },
                vec![1],
            ),
            (
                SegmentVectors::Binary {
                    dim_bits: 12,
                    data: vec![0; 3],
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
    fn live_rows_with_ids_finds_duplicates_and_skips_deleted() {
        let segment = Segment {
            vectors: float_vectors(5, 1),
            ids: vec![7, 8, 7, 9, 7],
            deleted: DeletedDocs::from_offsets(5, &[2]).unwrap(),
        };
        assert_eq!(segment.live_rows_with_ids(&[7, 9, 100]), vec![0, 3, 4]);
        assert_eq!(segment.position_of(7), Some(0));
        assert!(segment.live_rows_with_ids(&[]).is_empty());
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(4, 3), &[1, 2, 3, 4]).unwrap();
        let original_rv = fs::read(dir.join("1.rv")).unwrap();
        let original_uid = fs::read(dir.join("1.uid")).unwrap();

        for cut in [0, 3, 23, 24, 25, original_rv.len() - 1] {
            fs::write(dir.join("1.rv"), &original_rv[..cut]).unwrap();
            let err = read_segment(&dir, "1").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "rv cut at {cut}: {err}");
            assert!(err.to_string().contains("1.rv"), "{err}");
        }
        fs::write(dir.join("1.rv"), &original_rv).unwrap();

        fs::write(dir.join("1.uid"), &original_uid[..original_uid.len() - 8]).unwrap();
        let err = read_segment(&dir, "1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");

        let mut padded = original_uid.clone();
        padded.push(0);
        fs::write(dir.join("1.uid"), padded).unwrap();
        let err = read_segment(&dir, "1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        fs::write(dir.join("1.uid"), &original_uid).unwrap();

        fs::write(dir.join(DELETED_DOCS_FILE), [0u8; 10]).unwrap();
        let err = read_segment(&dir, "1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
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
        let err = read_segment(&dir, "1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("3 ids for 4 vector rows"), "{err}");
    }

    #[test]
    fn foreign_or_mismatched_headers_are_errors() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        let rv = fs::read(dir.join("1.rv")).unwrap();

        let corrupt = |offset: usize, value: u8| {
            let mut bytes = rv.clone();
            bytes[offset] = value;
            fs::write(dir.join("1.rv"), bytes).unwrap();
            read_segment(&dir, "1").unwrap_err()
        };
        let err = corrupt(0, b'X');
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("magic"), "{err}");
        let err = corrupt(4, 2);
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = corrupt(6, 9);
        assert!(err.to_string().contains("element kind 9"), "{err}");
        let err = corrupt(8, 0);
        assert!(err.to_string().contains("dimension 0"), "{err}");
        let err = corrupt(23, 0xff); // absurd row count: no huge allocation
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");

        // An ids file where vectors are expected.
        fs::copy(dir.join("1.uid"), dir.join("1.rv")).unwrap();
        let err = read_segment(&dir, "1").unwrap_err();
        assert!(err.to_string().contains("holds ids"), "{err}");

        // Something entirely foreign.
        fs::write(
            dir.join("1.rv"),
            b"\x89PNG\r\n\x1a\n plus enough bytes to pass the header",
        )
        .unwrap();
        let err = read_segment(&dir, "1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn missing_segment_is_not_found() {
        let root = TempDir::new().unwrap();
        let err = read_segment(&test_dir(&root), "1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("1.rv"), "{err}");
    }

    #[test]
    fn crashed_staging_dir_is_ignored_and_replaced() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let (_, staging) = hidden_sibling(&dir, TEMP_SUFFIX).unwrap();
        // A crash mid-write: staging holds a partial .rv, no segment dir.
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("1.rv"), b"MSHS partial").unwrap();
        assert_eq!(
            read_segment(&dir, "1").unwrap_err().kind(),
            ErrorKind::NotFound
        );

        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        assert!(!staging.exists());
        assert_eq!(read_segment(&dir, "1").unwrap().ids, vec![1, 2]);
    }

    #[test]
    fn temp_files_in_segment_dir_are_ignored_and_overwritten() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        // Leftover temp file only, no final files: the next write takes over.
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1.rv.tmp"), b"garbage").unwrap();
        assert_eq!(
            read_segment(&dir, "1").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        assert!(!dir.join("1.rv.tmp").exists());

        // A crashed deleted_docs rewrite: the tmp is ignored, then replaced.
        let temp = dir.join("deleted_docs.tmp");
        fs::write(&temp, b"garbage").unwrap();
        assert!(read_segment(&dir, "1").unwrap().deleted.is_empty());
        write_deleted_docs(&dir, &[1]).unwrap();
        assert!(!temp.exists());
        assert_eq!(read_segment(&dir, "1").unwrap().deleted.offsets(), &[1]);
    }

    #[test]
    fn existing_segment_is_not_overwritten() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        let err = write_segment(&dir, "1", &float_vectors(1, 2), &[3]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        assert_eq!(read_segment(&dir, "1").unwrap().ids, vec![1, 2]);
    }

    #[test]
    fn write_deleted_docs_needs_the_segment_dir() {
        let root = TempDir::new().unwrap();
        let err = write_deleted_docs(&root.path().join("missing"), &[1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn remove_segment_dir_removes_and_tolerates_missing() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        remove_segment_dir(&dir).unwrap();
        assert!(!dir.exists());
        let table_dir = dir.parent().unwrap();
        assert_eq!(fs::read_dir(table_dir).unwrap().count(), 0, "no trash left");
        remove_segment_dir(&dir).unwrap();
        remove_segment_dir(&root.path().join("never/existed")).unwrap();
    }
}
