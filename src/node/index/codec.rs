//! Little-endian byte encoding of index files: the common header, and a
//! reader that checks every length against the bytes that are left before it
//! allocates, so a truncated or corrupt file is an error, never a panic or a
//! huge allocation.
//!
//! Header, 24 bytes:
//!
//! | bytes  | field                                                  |
//! |--------|--------------------------------------------------------|
//! | 0..4   | magic `MSHX`                                           |
//! | 4..6   | format version (`1`)                                   |
//! | 6      | index kind: the Milvus `EngineType` (2, 3 or 11)       |
//! | 7      | metric: the Milvus `MetricType` (1 = L2, 2 = IP)       |
//! | 8..12  | dim                                                    |
//! | 12..16 | reserved, written as 0                                 |
//! | 16..24 | rows                                                   |
//!
//! The kind-specific body follows (see `ivf.rs` and `hnsw.rs`), and nothing
//! after it.

use super::kernels::Metric;
use super::IndexError;
use crate::types::EngineType;

const MAGIC: [u8; 4] = *b"MSHX";
const FORMAT_VERSION: u16 = 1;
/// Largest dimension Milvus 1.1 accepts.
pub const MAX_DIM: usize = 32768;

/// What every index file starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: EngineType,
    pub metric: Metric,
    pub dim: usize,
    pub rows: usize,
}

/// Appends little-endian values to a buffer.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn header(header: Header) -> Self {
        let mut w = Writer::default();
        w.bytes.extend_from_slice(&MAGIC);
        w.u16(FORMAT_VERSION);
        w.u8(header.kind as u8);
        w.u8(crate::types::MetricType::from(header.metric) as u8);
        w.u32(header.dim as u32);
        w.u32(0);
        w.u64(header.rows as u64);
        w
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32s(&mut self, values: &[f32]) {
        self.bytes.reserve(values.len() * 4);
        for v in values {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    pub fn u32s(&mut self, values: impl IntoIterator<Item = u32>) {
        for v in values {
            self.u32(v);
        }
    }
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
}

/// Reads little-endian values, failing on anything short or inconsistent.
pub struct Reader<'a> {
    rest: &'a [u8],
}

/// A corrupt-file error with a reason.
pub fn corrupt(reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt(reason.into())
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Parses the header and checks magic, version, kind, metric and dim.
    pub fn header(&mut self) -> Result<Header, IndexError> {
        let magic = self.take(4, "magic")?;
        if magic != MAGIC {
            return Err(corrupt(format!(
                "not a mishards index file (magic {magic:02x?})"
            )));
        }
        let version = self.u16("version")?;
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "unsupported index format version {version}"
            )));
        }
        let kind_code = self.u8("kind")?;
        let kind = match EngineType::from_i32(i32::from(kind_code)) {
            Some(kind @ (EngineType::IvfFlat | EngineType::IvfSq8 | EngineType::Hnsw)) => kind,
            _ => return Err(corrupt(format!("unknown index kind {kind_code}"))),
        };
        let metric = match self.u8("metric")? {
            1 => Metric::L2,
            2 => Metric::Ip,
            other => return Err(corrupt(format!("unknown index metric {other}"))),
        };
        let dim = self.u32("dim")? as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(format!("dimension {dim} out of range")));
        }
        if self.u32("reserved")? != 0 {
            return Err(corrupt("reserved header field is not 0"));
        }
        let rows = self.u64("rows")?;
        let rows = usize::try_from(rows)
            .ok()
            .filter(|&r| r <= u32::MAX as usize)
            .ok_or_else(|| corrupt(format!("row count {rows} out of range")))?;
        Ok(Header {
            kind,
            metric,
            dim,
            rows,
        })
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], IndexError> {
        if len > self.rest.len() {
            return Err(corrupt(format!(
                "truncated index file: {what} needs {len} bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], IndexError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, IndexError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, IndexError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, IndexError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, IndexError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// `count` values of `width` bytes, checked against what is left.
    fn elements(&mut self, count: usize, width: usize, what: &str) -> Result<&'a [u8], IndexError> {
        let len = count
            .checked_mul(width)
            .ok_or_else(|| corrupt(format!("{what}: length overflows")))?;
        self.take(len, what)
    }

    pub fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>, IndexError> {
        let bytes = self.elements(count, 4, what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn u32s(&mut self, count: usize, what: &str) -> Result<Vec<u32>, IndexError> {
        let bytes = self.elements(count, 4, what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn bytes(&mut self, count: usize, what: &str) -> Result<&'a [u8], IndexError> {
        self.take(count, what)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), IndexError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(corrupt(format!(
                "{} unexpected bytes after the index",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_bad_fields() {
        let header = Header {
            kind: EngineType::Hnsw,
            metric: Metric::Ip,
            dim: 128,
            rows: 7,
        };
        let bytes = Writer::header(header).bytes;
        assert_eq!(bytes.len(), 24);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.header().unwrap(), header);
        r.finish().unwrap();

        let patch = |at: usize, value: u8| {
            let mut b = bytes.clone();
            b[at] = value;
            Reader::new(&b).header().unwrap_err().to_string()
        };
        assert!(patch(0, b'X').contains("magic"));
        assert!(patch(4, 9).contains("version"));
        assert!(patch(6, 1).contains("kind"));
        assert!(patch(7, 3).contains("metric"));
        assert!(patch(10, 1).contains("dimension"));
        assert!(patch(12, 1).contains("reserved"));
        assert!(patch(20, 1).contains("row count"));
        for len in 0..bytes.len() {
            assert!(Reader::new(&bytes[..len]).header().is_err());
        }
    }

    #[test]
    fn reads_never_run_past_the_buffer() {
        let mut w = Writer::default();
        w.f32s(&[1.5, -2.0]);
        w.u32s([7, 8]);
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.f32s(2, "x").unwrap(), vec![1.5, -2.0]);
        assert!(r.u32s(3, "y").is_err());
        assert!(r.f32s(usize::MAX, "z").is_err());
        assert_eq!(r.remaining(), 8);
        assert_eq!(r.u32s(2, "y").unwrap(), vec![7, 8]);
        r.finish().unwrap();
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert!(r.finish().is_err());
    }
}
