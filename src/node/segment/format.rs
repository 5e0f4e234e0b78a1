//! The bytes of a segment file: a 24-byte header, then the rows as
//! little-endian values; written in one go and synced, read back only after
//! the header and the file length have been checked.
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

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use super::values::{map_file, Values};
use super::{context, invalid_data, invalid_input, SegmentVectors};

const MAGIC: [u8; 4] = *b"MSHS";
const FORMAT_VERSION: u16 = 1;
/// Size of the header in front of every segment file.
pub const HEADER_LEN: usize = 24;
/// Bytes moved per read/write call when streaming payloads.
const IO_CHUNK_BYTES: usize = 4 << 20;

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

/// Writes a `.rv` file holding the `rows` rows of `vectors` (whose shape the
/// caller checked); returns its bytes.
pub(super) fn write_vectors_file(
    path: &Path,
    vectors: &SegmentVectors,
    rows: usize,
) -> io::Result<u64> {
    // Dimensions were checked to fit in u32 by `checked_row_count`.
    let dim = u32::try_from(vectors.dim()).map_err(invalid_input)?;
    let (kind, payload) = match vectors {
        SegmentVectors::Float { data, .. } => (ElementKind::F32, Payload::F32(data)),
        SegmentVectors::Binary { data, .. } => (ElementKind::Bits, Payload::Bytes(data)),
    };
    let count = rows as u64;
    write_file_synced(path, FileHeader { kind, dim, count }, payload)
}

/// Writes a `.uid` file; returns its bytes.
pub(super) fn write_ids_file(path: &Path, ids: &[i64]) -> io::Result<u64> {
    let header = FileHeader {
        kind: ElementKind::I64,
        dim: 1,
        count: ids.len() as u64,
    };
    write_file_synced(path, header, Payload::I64(ids))
}

/// Writes a file of row offsets (a `deleted_docs` file), already sorted;
/// returns its bytes.
pub(super) fn write_offsets_file(path: &Path, sorted_offsets: &[u32]) -> io::Result<u64> {
    let header = FileHeader {
        kind: ElementKind::U32,
        dim: 1,
        count: sorted_offsets.len() as u64,
    };
    write_file_synced(path, header, Payload::U32(sorted_offsets))
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

/// Maps a checked file and views its `values` payload values (see `values`).
fn map_payload<T: super::values::LeValue>(
    path: &Path,
    file: &File,
    values: usize,
) -> io::Result<Values<T>> {
    let map = map_file(file).map_err(context("mapping", path))?;
    Values::from_map(&map, HEADER_LEN, values)
        .ok_or_else(|| invalid_data(path, "payload is shorter than its header announced"))
}

pub(super) fn read_vectors_file(path: &Path) -> io::Result<SegmentVectors> {
    let CheckedFile {
        file,
        header,
        count,
    } = open_checked(path, &[ElementKind::F32, ElementKind::Bits])?;
    // The length check above bounds these products by the file size.
    let dim = header.dim as usize;
    match header.kind {
        ElementKind::Bits => Ok(SegmentVectors::Binary {
            dim_bits: dim,
            data: map_payload(path, &file, count * (dim / 8))?,
        }),
        _ => Ok(SegmentVectors::Float {
            dim,
            data: map_payload(path, &file, count * dim)?,
        }),
    }
}

pub(super) fn read_ids_file(path: &Path) -> io::Result<Values<i64>> {
    let checked = open_checked(path, &[ElementKind::I64])?;
    map_payload(path, &checked.file, checked.count)
}

/// Reads a file of row offsets as stored; their order is the caller's to check.
pub(super) fn read_offsets_file(path: &Path) -> io::Result<Vec<u32>> {
    let mut checked = open_checked(path, &[ElementKind::U32])?;
    read_le_values(&mut checked.file, checked.count, u32::from_le_bytes)
        .map_err(context("reading", path))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{float_vectors, test_dir};
    use super::super::{deleted_docs_path, read_segment, write_segment};
    use super::*;
    use std::fs;
    use std::io::ErrorKind;
    use tempfile::TempDir;

    #[test]
    fn float_bits_survive_exactly() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let data = vec![f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE / 2.0];
        let vectors = SegmentVectors::Float {
            dim: 2,
            data: data.clone().into(),
        };
        write_segment(&dir, "7", &vectors, &[1, 2]).unwrap();
        let SegmentVectors::Float { data: read, .. } = read_segment(&dir, "7", 2).unwrap().vectors
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
            data: vec![1.0, 2.0].into(),
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
    fn large_float_segment_crosses_io_chunks() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        // 3 MiB of floats + 1 partial chunk of ids: exercises the chunk loop.
        let rows = 3 * 1024 + 7;
        let vectors = float_vectors(rows, 257);
        let ids: Vec<i64> = (0..rows as i64).map(|i| i * 1_000_003).collect();
        write_segment(&dir, "big", &vectors, &ids).unwrap();
        let segment = read_segment(&dir, "big", rows).unwrap();
        assert_eq!(segment.vectors, vectors);
        assert_eq!(segment.ids, ids);
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
            let err = read_segment(&dir, "1", 4).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "rv cut at {cut}: {err}");
            assert!(err.to_string().contains("1.rv"), "{err}");
        }
        fs::write(dir.join("1.rv"), &original_rv).unwrap();

        fs::write(dir.join("1.uid"), &original_uid[..original_uid.len() - 8]).unwrap();
        let err = read_segment(&dir, "1", 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");

        let mut padded = original_uid.clone();
        padded.push(0);
        fs::write(dir.join("1.uid"), padded).unwrap();
        let err = read_segment(&dir, "1", 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        fs::write(dir.join("1.uid"), &original_uid).unwrap();

        fs::write(deleted_docs_path(&dir, 1), [0u8; 10]).unwrap();
        let err = read_segment(&dir, "1", 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
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
            read_segment(&dir, "1", 2).unwrap_err()
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
        let err = read_segment(&dir, "1", 2).unwrap_err();
        assert!(err.to_string().contains("holds ids"), "{err}");

        // Something entirely foreign.
        fs::write(
            dir.join("1.rv"),
            b"\x89PNG\r\n\x1a\n plus enough bytes to pass the header",
        )
        .unwrap();
        let err = read_segment(&dir, "1", 2).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }
}
