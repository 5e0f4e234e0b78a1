//! The writable node's write-ahead log: every insert, and every delete that
//! removes unflushed rows, is appended to `DIR/wal/wal.log` before it is
//! acknowledged, so a node killed between two flushes replays what it
//! acknowledged (Milvus 1.x keeps a WAL for the same reason, on by default).
//!
//! Each record carries an LSN. A flush registers a table's new segment and
//! the table's last flushed LSN (`Tables.flush_lsn`) in one transaction, so
//! replay skips exactly what flushes made durable; the log is emptied when
//! a flush leaves nothing buffered. Records are written, not fsynced one by
//! one: the log survives a killed process (the kernel holds written pages),
//! not a power cut before the kernel writes them back.
//!
//! The frame is `[len u32][crc32 u32][payload]`, little-endian; a torn or
//! corrupt tail (a crash mid-append) ends the replay and is cut off. Written
//! by hand: the records are three vectors and a name, and a serde format
//! crate would add a dependency for forty lines.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// One logged write.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Rows buffered for `table_id`. `table_row` and `table_created` (the
    /// table's metadata row id and creation time) tell the table apart from
    /// one dropped and created again under its name, which never gets the
    /// old rows (SQLite may reuse a row id).
    Insert {
        lsn: i64,
        table_id: String,
        table_row: i64,
        table_created: i64,
        ids: Vec<i64>,
        float: Vec<f32>,
        binary: Vec<u8>,
    },
    /// Ids deleted from the buffers of `tables`.
    Delete {
        lsn: i64,
        tables: Vec<String>,
        ids: Vec<i64>,
    },
}

#[cfg(test)]
impl Record {
    pub fn lsn(&self) -> i64 {
        match self {
            Record::Insert { lsn, .. } | Record::Delete { lsn, .. } => *lsn,
        }
    }
}

/// The open log.
pub struct Wal {
    file: File,
}

const FRAME_HEAD: usize = 8;
const INSERT: u8 = 1;
const DELETE: u8 = 2;

impl Wal {
    /// Opens (creating) `dir/wal.log` and reads the records it holds; a torn
    /// tail is cut off so new records follow the last whole one.
    pub fn open(dir: &Path) -> std::io::Result<(Wal, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("wal.log");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, whole) = decode_all(&bytes);
        if whole < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - whole,
                "write-ahead log ends in a torn record (a crash mid-write); it is cut off"
            );
            file.set_len(whole as u64)?;
        }
        file.seek(SeekFrom::Start(whole as u64))?;
        Ok((Wal { file }, records))
    }

    /// Appends `record` (written before the write it logs is acknowledged).
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        self.file.write_all(&frame(record))
    }

    /// Empties the log: nothing it holds is still unflushed.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        Ok(())
    }
}

fn frame(record: &Record) -> Vec<u8> {
    // The head's 8 bytes first, filled in once the payload is known.
    let mut payload = vec![0u8; FRAME_HEAD];
    match record {
        Record::Insert {
            lsn,
            table_id,
            table_row,
            table_created,
            ids,
            float,
            binary,
        } => {
            payload.push(INSERT);
            payload.extend_from_slice(&lsn.to_le_bytes());
            put_bytes(&mut payload, table_id.as_bytes());
            payload.extend_from_slice(&table_row.to_le_bytes());
            payload.extend_from_slice(&table_created.to_le_bytes());
            put_len(&mut payload, ids.len());
            ids.iter()
                .for_each(|id| payload.extend_from_slice(&id.to_le_bytes()));
            put_len(&mut payload, float.len());
            float
                .iter()
                .for_each(|x| payload.extend_from_slice(&x.to_le_bytes()));
            put_bytes(&mut payload, binary);
        }
        Record::Delete { lsn, tables, ids } => {
            payload.push(DELETE);
            payload.extend_from_slice(&lsn.to_le_bytes());
            put_len(&mut payload, tables.len());
            tables
                .iter()
                .for_each(|t| put_bytes(&mut payload, t.as_bytes()));
            put_len(&mut payload, ids.len());
            ids.iter()
                .for_each(|id| payload.extend_from_slice(&id.to_le_bytes()));
        }
    }
    let len = (payload.len() - FRAME_HEAD) as u32;
    let crc = crc32fast::hash(&payload[FRAME_HEAD..]);
    payload[0..4].copy_from_slice(&len.to_le_bytes());
    payload[4..8].copy_from_slice(&crc.to_le_bytes());
    payload
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The whole records at the start of `bytes`, and how many bytes they take.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, used)) = decode_frame(&bytes[at..]) {
        records.push(record);
        at += used;
    }
    (records, at)
}

fn decode_frame(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(FRAME_HEAD..FRAME_HEAD.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = Reader(payload);
    let record = match r.u8()? {
        INSERT => Record::Insert {
            lsn: r.i64()?,
            table_id: r.string()?,
            table_row: r.i64()?,
            table_created: r.i64()?,
            ids: r.many(8, |b| i64::from_le_bytes(b.try_into().unwrap_or_default()))?,
            float: r.many(4, |b| f32::from_le_bytes(b.try_into().unwrap_or_default()))?,
            binary: r.bytes()?.to_vec(),
        },
        DELETE => {
            let lsn = r.i64()?;
            let count = r.len()?;
            let mut tables = Vec::new();
            for _ in 0..count {
                tables.push(r.string()?);
            }
            Record::Delete {
                lsn,
                tables,
                ids: r.many(8, |b| i64::from_le_bytes(b.try_into().unwrap_or_default()))?,
            }
        }
        _ => return None,
    };
    Some((record, FRAME_HEAD + len))
}

/// Reads a payload front to back; `None` when it ends early.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(u64::from_le_bytes(self.take(8)?.try_into().ok()?)).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn many<T>(&mut self, width: usize, read: impl Fn(&[u8]) -> T) -> Option<Vec<T>> {
        let n = self.len()?;
        let bytes = self.take(n.checked_mul(width)?)?;
        Some(bytes.chunks_exact(width).map(read).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn insert(lsn: i64) -> Record {
        Record::Insert {
            lsn,
            table_id: "c".into(),
            table_row: 7,
            table_created: 1_700_000_000_000_000,
            ids: vec![1, 2],
            float: vec![0.5, 1.5, 2.5, 3.5],
            binary: vec![],
        }
    }

    #[test]
    fn records_come_back_in_order_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let delete = Record::Delete {
            lsn: 3,
            tables: vec!["c".into(), "c_p".into()],
            ids: vec![2],
        };
        {
            let (mut wal, found) = Wal::open(dir.path()).unwrap();
            assert!(found.is_empty());
            wal.append(&insert(1)).unwrap();
            wal.append(&delete).unwrap();
        }
        let (mut wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![insert(1), delete.clone()]);
        wal.append(&insert(4)).unwrap();
        drop(wal);
        let (mut wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.iter().map(Record::lsn).collect::<Vec<_>>(), [1, 3, 4]);
        wal.reset().unwrap();
        wal.append(&insert(5)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(dir.path()).unwrap().1, vec![insert(5)]);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&insert(1)).unwrap();
            wal.append(&insert(2)).unwrap();
        }
        let path = dir.path().join("wal.log");
        let whole = std::fs::read(&path).unwrap();
        let one = whole.len() / 2;
        for cut in [one + 1, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (mut wal, found) = Wal::open(dir.path()).unwrap();
            assert_eq!(found, vec![insert(1)], "cut at {cut}");
            wal.append(&insert(3)).unwrap();
            drop(wal);
            let lsns: Vec<i64> = Wal::open(dir.path())
                .unwrap()
                .1
                .iter()
                .map(Record::lsn)
                .collect();
            assert_eq!(lsns, [1, 3]);
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(Wal::open(dir.path()).unwrap().1, vec![insert(1)]);
        // Garbage never panics.
        std::fs::write(&path, [0xffu8; 40]).unwrap();
        assert!(Wal::open(dir.path()).unwrap().1.is_empty());
    }
}
