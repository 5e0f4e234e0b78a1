//! Writes: the insert buffer (logged ahead in `wal`), its flush into new
//! segment files, and deletes (from the buffer, and from flushed segments
//! through their deleted docs).

use std::collections::{HashMap, HashSet};

use super::wal::{Record, Wal};
use super::{io_err, meta_err, Collection, Engine, Role, SEARCHABLE};
use crate::meta::{self, FileRow};
use crate::node::segment::{self, SegmentVectors};
use crate::status::{MilvusError, MilvusResult};
use crate::types::{EngineType, FileType, MetricType};
use crate::validate::{self, VectorData};
use crate::wire::ErrorCode;

/// Rows inserted but not yet flushed, per table (collection or partition).
#[derive(Default)]
pub(super) struct PendingRows {
    float: Vec<f32>,
    binary: Vec<u8>,
    ids: Vec<i64>,
    /// The LSN of the last logged write that changed these rows.
    last_lsn: i64,
}

impl Engine {
    pub async fn insert(
        &self,
        name: &str,
        records: &[crate::wire::RowRecord],
        user_ids: &[i64],
        partition_tag: &str,
    ) -> MilvusResult<Vec<i64>> {
        self.require_writable("Insert")?;
        validate::collection_name(name)?;
        if records.is_empty() {
            return Err(MilvusError::new(
                ErrorCode::IllegalRowrecord,
                "The vector array is empty. Make sure you have entered vector records.",
            ));
        }
        validate::user_ids(user_ids, records.len())?;
        let c = self.collection(name).await?;
        let table = if partition_tag.is_empty() {
            c.row.clone()
        } else {
            let tag = validate::partition_tag(partition_tag)?;
            if tag == crate::types::DEFAULT_PARTITION_TAG {
                c.row.clone()
            } else {
                self.partition_row(name, &tag).await?
            }
        };
        let data = validate::vectors(records, c.metric, c.dim())?;
        validate::insert_payload(&data)?;
        let mut pending = self.write_lock.lock().await;
        // Re-read the flag under the lock: two racing first inserts must agree.
        let flag = self
            .meta
            .table(name)
            .await
            .map_err(meta_err)?
            .map(|r| r.flag)
            .unwrap_or(c.row.flag);
        let new_flag = validate::id_mode(flag, !user_ids.is_empty())?;
        if new_flag != flag {
            self.meta.set_flag(name, new_flag).await.map_err(meta_err)?;
        }
        let ids: Vec<i64> = if user_ids.is_empty() {
            (0..records.len()).map(|_| self.ids.next()).collect()
        } else {
            user_ids.to_vec()
        };
        let (float, binary) = match data {
            VectorData::Float(v) => (v, Vec::new()),
            VectorData::Binary(v) => (Vec::new(), v),
        };
        let record = Record::Insert {
            lsn: self.ids.next(),
            table_id: table.table_id,
            table_row: table.id,
            table_created: table.created_on,
            ids,
            float,
            binary,
        };
        // Logged before it is acknowledged: a failed append buffers nothing.
        self.log(&record)?;
        Ok(apply_record(&mut pending, record))
    }

    /// Flushes the buffers of the named collections (all when empty).
    pub async fn flush(&self, names: &[String]) -> MilvusResult<()> {
        self.require_writable("Flush")?;
        let mut roots = Vec::new();
        for n in names {
            roots.push(self.collection(n).await?);
        }
        let mut pending = self.write_lock.lock().await;
        let mut tables: Vec<String> = Vec::new();
        if names.is_empty() {
            tables.extend(pending.keys().cloned());
        } else {
            for c in &roots {
                tables.extend(self.table_ids(c).await?);
            }
        }
        for table_id in tables {
            if let Some(rows) = pending.remove(&table_id) {
                if let Err(e) = self.write_new_segment(&table_id, rows).await {
                    tracing::error!(table_id, error = %e, "flush failed");
                    return Err(e);
                }
            }
        }
        if pending.is_empty() {
            // Everything the log holds is flushed (or was dropped).
            if let Some(wal) = super::lock(&self.wal).as_mut() {
                wal.reset()
                    .map_err(|e| io_err("cannot empty the write-ahead log", e))?;
            }
        }
        Ok(())
    }

    /// Appends `record` to the write-ahead log, when it is open.
    fn log(&self, record: &Record) -> MilvusResult<()> {
        match super::lock(&self.wal).as_mut() {
            Some(wal) => wal
                .append(record)
                .map_err(|e| io_err("cannot append to the write-ahead log", e)),
            None => Ok(()),
        }
    }

    /// Opens the write-ahead log (`DIR/wal/`) and buffers again what it
    /// holds beyond each table's last flush: the rows a killed node had
    /// acknowledged but not flushed. Writable role only; returns the rows
    /// buffered again. Called once at start, before serving.
    pub async fn replay_wal(&self) -> MilvusResult<usize> {
        if self.opts.role != Role::Writable {
            return Ok(0);
        }
        let dir = self.opts.data_dir.join("wal");
        let (wal, records) = tokio::task::spawn_blocking(move || Wal::open(&dir))
            .await
            .map_err(|e| MilvusError::unexpected(format!("log reader panicked: {e}")))?
            .map_err(|e| io_err("cannot open the write-ahead log", e))?;
        let mut pending = self.write_lock.lock().await;
        // Each table's metadata row, read once: its row id, flushed LSN and width.
        let mut tables: HashMap<String, Option<crate::meta::CollectionRow>> = HashMap::new();
        for record in &records {
            let names: Vec<String> = match record {
                Record::Insert { table_id, .. } => vec![table_id.clone()],
                Record::Delete { tables, .. } => tables.clone(),
            };
            for name in names {
                if let std::collections::hash_map::Entry::Vacant(slot) = tables.entry(name) {
                    let row = self.meta.table(slot.key()).await.map_err(meta_err)?;
                    slot.insert(row);
                }
            }
        }
        let mut replayed = 0;
        for record in records {
            match &record {
                Record::Insert {
                    lsn,
                    table_id,
                    table_row,
                    table_created,
                    ids,
                    ..
                } => {
                    let live = tables.get(table_id).and_then(Option::as_ref);
                    // Gone, dropped and made again, or flushed already: skip.
                    let same = |t: &crate::meta::CollectionRow| {
                        t.id == *table_row && t.created_on == *table_created
                    };
                    if live.is_some_and(|t| same(t) && *lsn > t.flush_lsn) {
                        replayed += ids.len();
                        apply_record(&mut pending, record);
                    }
                }
                Record::Delete { .. } => delete_pending(&mut pending, &record, |t| {
                    let row = tables.get(t).and_then(Option::as_ref)?;
                    let c = Collection::from_row(row.clone()).ok()?;
                    Some((c.metric, c.dim() as usize))
                }),
            }
        }
        *super::lock(&self.wal) = Some(wal);
        Ok(replayed)
    }

    /// Periodic flush of everything buffered (the `auto_flush_interval`).
    pub async fn auto_flush(&self) {
        if self.opts.role == Role::Writable {
            if let Err(e) = self.flush(&[]).await {
                tracing::warn!(error = %e.reason, "auto flush failed");
            }
        }
    }

    /// Writes buffered rows as one segment, durable on disk before its
    /// metadata row exists. Called with the write lock held.
    async fn write_new_segment(&self, table_id: &str, rows: PendingRows) -> MilvusResult<()> {
        if rows.ids.is_empty() {
            return Ok(());
        }
        let Some(table) = self.meta.table(table_id).await.map_err(meta_err)? else {
            return Ok(()); // dropped meanwhile: nothing to keep
        };
        let c = Collection::from_row(table)?;
        let dim = c.dim() as usize;
        let vectors = if c.metric.is_binary() {
            SegmentVectors::Binary {
                dim_bits: dim,
                data: rows.binary.into(),
            }
        } else {
            SegmentVectors::Float {
                dim,
                data: rows.float.into(),
            }
        };
        let row_count = rows.ids.len() as i64;
        let file_type = if c.engine == EngineType::Flat
            || c.engine == EngineType::BinFlat
            || (vectors_bytes(&vectors) as i64) < c.row.index_file_size
        {
            FileType::Raw
        } else {
            FileType::ToIndex
        };
        let file = self
            .store_segment(&c, table_id, vectors, rows.ids, file_type)
            .await?;
        let id = self
            .meta
            .insert_flushed_file(&file, rows.last_lsn)
            .await
            .map_err(meta_err)?;
        tracing::debug!(table_id, file_id = id, row_count, "flushed segment");
        Ok(())
    }

    /// Writes a segment to disk (blocking I/O off the async threads) and
    /// returns the metadata row to register.
    pub(super) async fn store_segment(
        &self,
        c: &Collection,
        table_id: &str,
        vectors: SegmentVectors,
        ids: Vec<i64>,
        file_type: FileType,
    ) -> MilvusResult<FileRow> {
        let segment_id = self.ids.next().to_string();
        let dir = segment::segment_dir(&self.opts.data_dir, table_id, &segment_id);
        let row_count = ids.len() as i64;
        let seg_id = segment_id.clone();
        let size = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            std::fs::create_dir_all(&dir)?;
            segment::write_segment(&dir, &seg_id, &vectors, &ids)
        })
        .await
        .map_err(|e| MilvusError::unexpected(format!("segment writer panicked: {e}")))?
        .map_err(|e| io_err("cannot write segment file", e))?;
        let now = meta::now_micros();
        Ok(FileRow {
            id: 0,
            table_id: table_id.to_string(),
            segment_id: segment_id.clone(),
            engine_type: c.row.engine_type,
            file_id: segment_id,
            file_type: file_type as i32,
            file_size: size as i64,
            row_count,
            updated_time: now,
            created_on: now,
            date: meta::milvus_date(now),
            flush_lsn: 0,
        })
    }

    pub async fn delete_by_id(
        &self,
        name: &str,
        ids: &[i64],
        partition_tag: &str,
    ) -> MilvusResult<()> {
        self.require_writable("DeleteByID")?;
        let c = self.collection(name).await?;
        if ids.is_empty() {
            return Err(MilvusError::illegal_argument("No vector id specified"));
        }
        let tables = if partition_tag.is_empty() {
            self.table_ids(&c).await?
        } else {
            let tag = validate::partition_tag(partition_tag)?;
            vec![self.partition_table(name, &tag).await?]
        };
        let doomed: HashSet<i64> = ids.iter().copied().collect();
        let mut pending = self.write_lock.lock().await;
        // Unflushed rows: drop them from the buffer, logged first so a
        // replay does not bring them back.
        let buffered: Vec<String> = tables
            .iter()
            .filter(|t| pending.get(*t).is_some_and(|b| !b.ids.is_empty()))
            .cloned()
            .collect();
        if !buffered.is_empty() {
            let record = Record::Delete {
                lsn: self.ids.next(),
                tables: buffered,
                ids: ids.to_vec(),
            };
            self.log(&record)?;
            let widths = [(c.metric, c.dim() as usize)];
            delete_pending(&mut pending, &record, |_| Some(widths[0]));
        }
        // Flushed rows: publish each touched segment's deletes as a new
        // version (a name never used before, see `segment::deleted_docs`),
        // then set the segment's rows' row_count to the rows left, which is
        // how every reader finds that version. The old version is retired
        // after the cleanup delay: a reader still holding the old row_count
        // can finish with it.
        let files = self
            .meta
            .files_of(&tables, &SEARCHABLE)
            .await
            .map_err(meta_err)?;
        let mut done: HashSet<(String, String)> = HashSet::new();
        for file in files {
            // A segment's raw and index rows share its deletes: once is enough.
            if !done.insert((file.table_id.clone(), file.segment_id.clone())) {
                continue;
            }
            let seg = self.load(&file).await?;
            let mut offsets: Vec<u32> = seg.deleted.offsets().to_vec();
            let before = offsets.len();
            for (row, id) in seg.ids.iter().enumerate() {
                if doomed.contains(id) && !seg.deleted.is_deleted(row) {
                    offsets.push(row as u32);
                }
            }
            if offsets.len() == before {
                continue;
            }
            let live = seg.row_count() - offsets.len();
            let dir = self.segment_dir(&file);
            let write_dir = dir.clone();
            tokio::task::spawn_blocking(move || segment::write_deleted_docs(&write_dir, &offsets))
                .await
                .map_err(|e| MilvusError::unexpected(format!("delete writer panicked: {e}")))?
                .map_err(|e| io_err("cannot write deleted docs", e))?;
            self.meta
                .record_deletes(&file.table_id, &file.segment_id, live as i64)
                .await
                .map_err(meta_err)?;
            if before > 0 {
                self.retired.retire(
                    segment::deleted_docs_path(&dir, before),
                    self.opts.cleanup_delay,
                );
            }
        }
        Ok(())
    }

    /// Flushes what is buffered (graceful shutdown).
    pub async fn shutdown(&self) {
        self.auto_flush().await;
    }
}

fn vectors_bytes(v: &SegmentVectors) -> usize {
    match v {
        SegmentVectors::Float { data, .. } => data.len() * 4,
        SegmentVectors::Binary { data, .. } => data.len(),
    }
}

/// Buffers an insert record's rows; returns their ids.
fn apply_record(pending: &mut HashMap<String, PendingRows>, record: Record) -> Vec<i64> {
    let Record::Insert {
        lsn,
        table_id,
        ids,
        float,
        binary,
        ..
    } = record
    else {
        return Vec::new();
    };
    let buf = pending.entry(table_id).or_default();
    buf.float.extend_from_slice(&float);
    buf.binary.extend_from_slice(&binary);
    buf.ids.extend_from_slice(&ids);
    buf.last_lsn = lsn;
    ids
}

/// Drops a delete record's ids from the buffers it names; `width` gives a
/// table's metric and dimension (`None`: the table is gone, skip it).
fn delete_pending(
    pending: &mut HashMap<String, PendingRows>,
    record: &Record,
    width: impl Fn(&str) -> Option<(MetricType, usize)>,
) {
    let Record::Delete { lsn, tables, ids } = record else {
        return;
    };
    let doomed: HashSet<i64> = ids.iter().copied().collect();
    for t in tables {
        if let (Some(buf), Some((metric, dim))) = (pending.get_mut(t), width(t)) {
            remove_pending(buf, &doomed, metric, dim);
            buf.last_lsn = *lsn;
        }
    }
}

fn remove_pending(buf: &mut PendingRows, doomed: &HashSet<i64>, metric: MetricType, dim: usize) {
    let width = if metric.is_binary() { dim / 8 } else { dim };
    let mut keep = 0;
    for row in 0..buf.ids.len() {
        if doomed.contains(&buf.ids[row]) {
            continue;
        }
        buf.ids[keep] = buf.ids[row];
        if metric.is_binary() {
            buf.binary
                .copy_within(row * width..(row + 1) * width, keep * width);
        } else {
            buf.float
                .copy_within(row * width..(row + 1) * width, keep * width);
        }
        keep += 1;
    }
    buf.ids.truncate(keep);
    buf.float
        .truncate(if metric.is_binary() { 0 } else { keep * width });
    buf.binary
        .truncate(if metric.is_binary() { keep * width } else { 0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_pending_keeps_survivors_in_order() {
        let mut buf = PendingRows {
            float: vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
            binary: vec![],
            ids: vec![10, 20, 30],
            last_lsn: 0,
        };
        remove_pending(&mut buf, &HashSet::from([20]), MetricType::L2, 2);
        assert_eq!(buf.ids, vec![10, 30]);
        assert_eq!(buf.float, vec![1.0, 1.0, 3.0, 3.0]);
    }
}
