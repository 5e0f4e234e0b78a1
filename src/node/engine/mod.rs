//! The node's database engine: collections and partitions in the metadata
//! store, the insert buffer and its flushes into segment files, deletes,
//! merges, cleanup, and exact search over segment files. Every public method
//! returns a `MilvusResult` so the gRPC layer only translates.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use super::cache::SegmentCache;
use super::scan::{self, QueriesRef, VectorsRef};
use super::segment::{self, Segment, SegmentVectors};
use crate::merge::{self, TopKHits};
use crate::meta::{self, schema::SCHEMA_VERSION, CollectionRow, FileRow, MetaStore};
use crate::partition;
use crate::status::{MilvusError, MilvusResult};
use crate::types::{EngineType, FileType, MetricType, DEFAULT_PARTITION_TAG, TABLE_STATE_NORMAL};
use crate::validate::{self, VectorData};
use crate::wire::ErrorCode;

/// Role of a node in a Milvus 1.x cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes, flushes, merges and cleans up.
    Writable,
    /// Serves reads only, from the shared directory and metadata.
    ReadOnly,
}

/// Tunables of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub role: Role,
    pub data_dir: PathBuf,
    /// How long TO_DELETE files stay on disk (read-only nodes may still search them).
    pub cleanup_delay: Duration,
    /// Upper bound of the segment cache.
    pub cache_bytes: u64,
}

/// Rows inserted but not yet flushed, per table (collection or partition).
#[derive(Default)]
struct PendingRows {
    float: Vec<f32>,
    binary: Vec<u8>,
    ids: Vec<i64>,
}

/// The node's state shared by every request.
pub struct Engine {
    opts: EngineOptions,
    meta: MetaStore,
    cache: SegmentCache,
    /// Serialises every mutation (insert, flush, delete, merge, drop) so they
    /// never interleave on the same files.
    write_lock: Mutex<HashMap<String, PendingRows>>,
    ids: IdGenerator,
}

fn meta_err(e: sqlx::Error) -> MilvusError {
    MilvusError::meta(e)
}

fn io_err(context: &str, e: std::io::Error) -> MilvusError {
    MilvusError::unexpected(format!("{context}: {e}"))
}

/// A collection row with its decoded schema.
pub struct Collection {
    pub row: CollectionRow,
    pub metric: MetricType,
    pub engine: EngineType,
}

impl Collection {
    fn from_row(row: CollectionRow) -> MilvusResult<Self> {
        let metric = MetricType::from_i32(row.metric_type).ok_or_else(|| {
            MilvusError::unexpected(format!(
                "collection {} has unknown metric_type {} in the metadata",
                row.table_id, row.metric_type
            ))
        })?;
        let engine = EngineType::from_i32(row.engine_type).unwrap_or(EngineType::Flat);
        Ok(Self {
            row,
            metric,
            engine,
        })
    }

    pub fn name(&self) -> &str {
        &self.row.table_id
    }

    pub fn dim(&self) -> i64 {
        self.row.dimension
    }
}

impl Engine {
    pub fn new(opts: EngineOptions, meta: MetaStore) -> Self {
        let cache = SegmentCache::new(opts.cache_bytes);
        Self {
            opts,
            meta,
            cache,
            write_lock: Mutex::new(HashMap::new()),
            ids: IdGenerator::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.opts.role
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Writes are refused on a read-only node: real Milvus silently accepts
    /// and loses them; we say so instead.
    pub fn require_writable(&self, what: &str) -> MilvusResult<()> {
        match self.opts.role {
            Role::Writable => Ok(()),
            Role::ReadOnly => Err(MilvusError::new(
                ErrorCode::PermissionDenied,
                format!("{what} refused: this node is read-only (role ro); send writes to the writable node"),
            )),
        }
    }

    // ---- collections ------------------------------------------------------

    /// The live root collection `name` (error 4 if missing, 9 if it is a partition).
    pub async fn collection(&self, name: &str) -> MilvusResult<Collection> {
        validate::collection_name(name)?;
        match self.meta.table(name).await.map_err(meta_err)? {
            None => Err(MilvusError::collection_not_exists(name)),
            Some(row) if row.is_partition() => Err(MilvusError::new(
                ErrorCode::IllegalCollectionName,
                format!("{name} is the internal name of a partition, not a collection"),
            )),
            Some(row) => Collection::from_row(row),
        }
    }

    pub async fn create_collection(
        &self,
        name: &str,
        dimension: i64,
        index_file_size_mb: i64,
        metric_type: i32,
    ) -> MilvusResult<()> {
        self.require_writable("CreateCollection")?;
        validate::collection_name(name)?;
        let metric = validate::metric_type(metric_type)?;
        validate::dimension(dimension, metric)?;
        validate::index_file_size(index_file_size_mb)?;
        let _guard = self.write_lock.lock().await;
        if self
            .meta
            .table_any_state(name)
            .await
            .map_err(meta_err)?
            .is_some()
        {
            return Err(MilvusError::new(
                ErrorCode::IllegalCollectionName,
                format!("Collection already exists: {name}"),
            ));
        }
        let engine = if metric.is_binary() {
            EngineType::BinFlat
        } else {
            EngineType::Flat
        };
        let row = CollectionRow {
            id: 0,
            table_id: name.to_string(),
            state: TABLE_STATE_NORMAL,
            dimension,
            created_on: meta::now_micros(),
            flag: 0,
            index_file_size: index_file_size_mb << 20,
            engine_type: engine as i32,
            index_params: "{}".into(),
            metric_type: metric as i32,
            owner_table: String::new(),
            partition_tag: String::new(),
            version: SCHEMA_VERSION.into(),
            flush_lsn: 0,
        };
        self.meta.insert_table(&row).await.map_err(meta_err)?;
        Ok(())
    }

    pub async fn has_collection(&self, name: &str) -> MilvusResult<bool> {
        validate::collection_name(name)?;
        let row = self.meta.table(name).await.map_err(meta_err)?;
        Ok(row.is_some_and(|r| !r.is_partition()))
    }

    pub async fn show_collections(&self) -> MilvusResult<Vec<String>> {
        let rows = self.meta.all_tables().await.map_err(meta_err)?;
        Ok(rows
            .into_iter()
            .filter(|r| !r.is_partition())
            .map(|r| r.table_id)
            .collect())
    }

    pub async fn drop_collection(&self, name: &str) -> MilvusResult<()> {
        self.require_writable("DropCollection")?;
        let c = self.collection(name).await?;
        let mut pending = self.write_lock.lock().await;
        let tables = self.table_ids(&c).await?;
        for t in &tables {
            pending.remove(t);
        }
        self.meta.drop_tables(&tables).await.map_err(meta_err)
    }

    /// The root's table id followed by every partition's.
    async fn table_ids(&self, c: &Collection) -> MilvusResult<Vec<String>> {
        let mut ids = vec![c.row.table_id.clone()];
        let parts = self.meta.partitions(c.name()).await.map_err(meta_err)?;
        ids.extend(parts.into_iter().map(|p| p.table_id));
        Ok(ids)
    }

    pub async fn count(&self, name: &str) -> MilvusResult<i64> {
        let c = self.collection(name).await?;
        let tables = self.table_ids(&c).await?;
        let files = self
            .meta
            .files_of(&tables, &SEARCHABLE)
            .await
            .map_err(meta_err)?;
        Ok(files.iter().map(|f| f.row_count).sum())
    }

    /// Per-partition files for ShowCollectionInfo, `_default` first.
    pub async fn collection_info(&self, name: &str) -> MilvusResult<String> {
        let c = self.collection(name).await?;
        let mut parts = vec![(DEFAULT_PARTITION_TAG.to_string(), c.row.table_id.clone())];
        for p in self.meta.partitions(c.name()).await.map_err(meta_err)? {
            parts.push((p.partition_tag, p.table_id));
        }
        let mut total = 0i64;
        let mut partitions = Vec::new();
        for (tag, table_id) in parts {
            let files = self
                .meta
                .files_of(std::slice::from_ref(&table_id), &SEARCHABLE)
                .await
                .map_err(meta_err)?;
            let rows: i64 = files.iter().map(|f| f.row_count).sum();
            total += rows;
            let segments: Vec<_> = files
                .iter()
                .map(|f| {
                    let index = EngineType::from_i32(f.engine_type)
                        .filter(|_| f.kind() == Some(FileType::Index))
                        .unwrap_or(EngineType::Flat);
                    json!({
                        "name": f.segment_id,
                        "row_count": f.row_count,
                        "index_name": index.index_name(),
                        "data_size": f.file_size,
                    })
                })
                .collect();
            partitions.push(json!({
                "tag": tag,
                "row_count": rows,
                "segments": if segments.is_empty() { serde_json::Value::Null } else { json!(segments) },
            }));
        }
        Ok(json!({ "row_count": total, "partitions": partitions }).to_string())
    }

    // ---- partitions -------------------------------------------------------

    pub async fn create_partition(&self, name: &str, tag: &str) -> MilvusResult<()> {
        self.require_writable("CreatePartition")?;
        let c = self.collection(name).await?;
        let tag = validate::new_partition_tag(tag)?;
        let _guard = self.write_lock.lock().await;
        let parts = self.meta.partitions(name).await.map_err(meta_err)?;
        if parts.iter().any(|p| p.partition_tag == tag) {
            return Err(MilvusError::unexpected(format!(
                "Duplicate partition is not allowed: tag {tag} already exists in collection {name}"
            )));
        }
        validate::partition_capacity(parts.len())?;
        let mut row = c.row.clone();
        row.id = 0;
        row.table_id = self.ids.next().to_string();
        row.owner_table = name.to_string();
        row.partition_tag = tag;
        row.created_on = meta::now_micros();
        self.meta.insert_table(&row).await.map_err(meta_err)?;
        Ok(())
    }

    pub async fn has_partition(&self, name: &str, tag: &str) -> MilvusResult<bool> {
        self.collection(name).await?;
        let tag = validate::partition_tag(tag)?;
        if tag == DEFAULT_PARTITION_TAG {
            return Ok(true);
        }
        let parts = self.meta.partitions(name).await.map_err(meta_err)?;
        Ok(parts.iter().any(|p| p.partition_tag == tag))
    }

    pub async fn show_partitions(&self, name: &str) -> MilvusResult<Vec<String>> {
        self.collection(name).await?;
        let mut tags = vec![DEFAULT_PARTITION_TAG.to_string()];
        let parts = self.meta.partitions(name).await.map_err(meta_err)?;
        tags.extend(parts.into_iter().map(|p| p.partition_tag));
        Ok(tags)
    }

    pub async fn drop_partition(&self, name: &str, tag: &str) -> MilvusResult<()> {
        self.require_writable("DropPartition")?;
        self.collection(name).await?;
        let tag = validate::partition_tag(tag)?;
        if tag == DEFAULT_PARTITION_TAG {
            return Err(MilvusError::unexpected(
                "The default partition _default cannot be dropped",
            ));
        }
        let mut pending = self.write_lock.lock().await;
        let table_id = self.partition_table(name, &tag).await?;
        pending.remove(&table_id);
        self.meta.drop_tables(&[table_id]).await.map_err(meta_err)
    }

    /// The table id that stores partition `tag` of `name` (`_default` = the root).
    async fn partition_table(&self, name: &str, tag: &str) -> MilvusResult<String> {
        if tag == DEFAULT_PARTITION_TAG {
            return Ok(name.to_string());
        }
        let parts = self.meta.partitions(name).await.map_err(meta_err)?;
        parts
            .into_iter()
            .find(|p| p.partition_tag == tag)
            .map(|p| p.table_id)
            .ok_or_else(|| {
                MilvusError::unexpected(format!(
                    "Partition {tag} does not exist in collection {name}"
                ))
            })
    }

    /// Searchable files of the partitions `tags` select.
    async fn selected_files(&self, c: &Collection, tags: &[String]) -> MilvusResult<Vec<FileRow>> {
        let tables = self.search_tables(c, tags).await?;
        self.meta
            .files_of(&tables, &SEARCHABLE)
            .await
            .map_err(meta_err)
    }

    /// Table ids selected by search partition tags (Milvus semantics).
    async fn search_tables(&self, c: &Collection, tags: &[String]) -> MilvusResult<Vec<String>> {
        let parts = self.meta.partitions(c.name()).await.map_err(meta_err)?;
        let pairs: Vec<(String, String)> = parts
            .into_iter()
            .map(|p| (p.partition_tag, p.table_id))
            .collect();
        partition::select_tables(&c.row.table_id, &pairs, tags)
    }

    // ---- indexes ----------------------------------------------------------

    pub async fn create_index(
        &self,
        name: &str,
        index_type: i32,
        params: serde_json::Value,
    ) -> MilvusResult<()> {
        self.require_writable("CreateIndex")?;
        let c = self.collection(name).await?;
        let engine = validate::index_params(index_type, &params, c.metric, c.dim())?;
        // Milvus flushes before building; our search stays exact, so the
        // index is recorded (and reported) but files stay raw.
        self.flush(&[name.to_string()]).await?;
        let _guard = self.write_lock.lock().await;
        self.meta
            .set_index(name, engine as i32, &params.to_string())
            .await
            .map_err(meta_err)
    }

    pub async fn describe_index(&self, name: &str) -> MilvusResult<(i32, String)> {
        let c = self.collection(name).await?;
        Ok((c.engine.reported() as i32, c.row.index_params.clone()))
    }

    pub async fn drop_index(&self, name: &str) -> MilvusResult<()> {
        self.require_writable("DropIndex")?;
        let c = self.collection(name).await?;
        let flat = if c.metric.is_binary() {
            EngineType::BinFlat
        } else {
            EngineType::Flat
        };
        let _guard = self.write_lock.lock().await;
        self.meta
            .set_index(name, flat as i32, "{}")
            .await
            .map_err(meta_err)
    }

    // ---- writes -----------------------------------------------------------

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
        let table_id = if partition_tag.is_empty() {
            name.to_string()
        } else {
            let tag = validate::partition_tag(partition_tag)?;
            self.partition_table(name, &tag).await?
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
        let buf = pending.entry(table_id).or_default();
        match data {
            VectorData::Float(v) => buf.float.extend_from_slice(&v),
            VectorData::Binary(v) => buf.binary.extend_from_slice(&v),
        }
        buf.ids.extend_from_slice(&ids);
        Ok(ids)
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
        Ok(())
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
                data: rows.binary,
            }
        } else {
            SegmentVectors::Float {
                dim,
                data: rows.float,
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
        let id = self.meta.insert_file(&file).await.map_err(meta_err)?;
        tracing::debug!(table_id, file_id = id, row_count, "flushed segment");
        Ok(())
    }

    /// Writes a segment to disk (blocking I/O off the async threads) and
    /// returns the metadata row to register.
    async fn store_segment(
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
        // Unflushed rows: drop them from the buffer.
        for t in &tables {
            if let Some(buf) = pending.get_mut(t) {
                remove_pending(buf, &doomed, c.metric, c.dim() as usize);
            }
        }
        // Flushed rows: extend each segment's deleted docs, then bump the
        // file's row_count and updated_time so read-only nodes reload.
        let files = self
            .meta
            .files_of(&tables, &SEARCHABLE)
            .await
            .map_err(meta_err)?;
        for file in files {
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
            tokio::task::spawn_blocking(move || segment::write_deleted_docs(&dir, &offsets))
                .await
                .map_err(|e| MilvusError::unexpected(format!("delete writer panicked: {e}")))?
                .map_err(|e| io_err("cannot write deleted docs", e))?;
            self.meta
                .update_file_rows(file.id, live as i64)
                .await
                .map_err(meta_err)?;
        }
        Ok(())
    }

    /// Rewrites files whose deleted fraction exceeds 10 % without the deleted rows.
    pub async fn compact(&self, name: &str) -> MilvusResult<()> {
        self.require_writable("Compact")?;
        let c = self.collection(name).await?;
        let _guard = self.write_lock.lock().await;
        let tables = self.table_ids(&c).await?;
        let files = self
            .meta
            .files_of(&tables, &[FileType::Raw, FileType::ToIndex])
            .await
            .map_err(meta_err)?;
        for file in files {
            let seg = self.load(&file).await?;
            let deleted = seg.deleted.len();
            if deleted == 0 || (deleted as f64) / (seg.row_count() as f64) < 0.1 {
                continue;
            }
            self.rewrite(&c, &file.table_id, &[(file.clone(), seg)])
                .await?;
        }
        Ok(())
    }

    /// Merges small RAW files of each table into files up to `index_file_size`
    /// (Milvus' background merge). The sources become TO_DELETE.
    pub async fn merge_small_files(&self) -> MilvusResult<usize> {
        if self.opts.role != Role::Writable {
            return Ok(0);
        }
        let _guard = self.write_lock.lock().await;
        let tables = self.meta.all_tables().await.map_err(meta_err)?;
        let mut merged = 0;
        for t in tables {
            let c = Collection::from_row(t)?;
            let files = self
                .meta
                .files_of(std::slice::from_ref(&c.row.table_id), &[FileType::Raw])
                .await
                .map_err(meta_err)?;
            let limit = c.row.index_file_size;
            let mut group: Vec<FileRow> = Vec::new();
            let mut size = 0i64;
            for f in files.into_iter().filter(|f| f.file_size < limit) {
                if size + f.file_size > limit && group.len() >= 2 {
                    break;
                }
                size += f.file_size;
                group.push(f);
            }
            if group.len() < 2 {
                continue;
            }
            let mut sources = Vec::new();
            for f in group {
                let seg = self.load(&f).await?;
                sources.push((f, seg));
            }
            let table_id = c.row.table_id.clone();
            self.rewrite(&c, &table_id, &sources).await?;
            merged += 1;
        }
        Ok(merged)
    }

    /// Writes the live rows of `sources` as one new RAW file and retires the
    /// sources, in one metadata transaction. Called with the write lock held.
    async fn rewrite(
        &self,
        c: &Collection,
        table_id: &str,
        sources: &[(FileRow, Arc<Segment>)],
    ) -> MilvusResult<()> {
        let mut float = Vec::new();
        let mut binary = Vec::new();
        let mut ids = Vec::new();
        for (_, seg) in sources {
            for row in 0..seg.row_count() {
                if seg.deleted.is_deleted(row) {
                    continue;
                }
                ids.push(seg.ids[row]);
                match &seg.vectors {
                    SegmentVectors::Float { dim, data } => {
                        float.extend_from_slice(&data[row * dim..(row + 1) * dim])
                    }
                    SegmentVectors::Binary { dim_bits, data } => {
                        let w = dim_bits / 8;
                        binary.extend_from_slice(&data[row * w..(row + 1) * w])
                    }
                }
            }
        }
        let source_ids: Vec<i64> = sources.iter().map(|(f, _)| f.id).collect();
        let dim = c.dim() as usize;
        let vectors = if c.metric.is_binary() {
            SegmentVectors::Binary {
                dim_bits: dim,
                data: binary,
            }
        } else {
            SegmentVectors::Float { dim, data: float }
        };
        if ids.is_empty() {
            // Everything was deleted: retire the sources, write nothing.
            self.meta.drop_files(&source_ids).await.map_err(meta_err)?;
            return Ok(());
        }
        let file = self
            .store_segment(c, table_id, vectors, ids, FileType::Raw)
            .await?;
        let id = self
            .meta
            .replace_files(&file, &source_ids)
            .await
            .map_err(meta_err)?;
        tracing::debug!(table_id, merged_into = id, sources = ?source_ids, "merged segment files");
        Ok(())
    }

    /// Startup recovery of the writable node (the only writer of the shared
    /// directory): removes staging and removal leftovers of a crash, and
    /// segment directories that no metadata row names (written, then the
    /// crash came before the row was committed). Returns how many it removed.
    pub async fn recover_disk(&self) -> MilvusResult<usize> {
        if self.opts.role != Role::Writable {
            return Ok(0);
        }
        let known: HashSet<(String, String)> = self
            .meta
            .all_segment_keys()
            .await
            .map_err(meta_err)?
            .into_iter()
            .collect();
        let data_dir = self.opts.data_dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            let found = segment::list_segment_dirs(&data_dir)?;
            let mut removed = 0;
            for path in found.leftovers {
                std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path))?;
                removed += 1;
            }
            for (table_id, segment_id, path) in found.segments {
                if !known.contains(&(table_id, segment_id)) {
                    tracing::info!(path = %path.display(), "removing segment directory without a metadata row");
                    segment::remove_segment_dir(&path)?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| MilvusError::unexpected(format!("recovery panicked: {e}")))?
        .map_err(|e| io_err("cannot clean the data directory", e))
    }

    /// Removes TO_DELETE files older than the cleanup delay from disk and metadata.
    pub async fn cleanup(&self) -> MilvusResult<usize> {
        if self.opts.role != Role::Writable {
            return Ok(0);
        }
        let cutoff = meta::now_micros() - self.opts.cleanup_delay.as_micros() as i64;
        let files = self.meta.expired_files(cutoff).await.map_err(meta_err)?;
        let n = files.len();
        for f in files {
            let dir = self.segment_dir(&f);
            let removed = tokio::task::spawn_blocking(move || segment::remove_segment_dir(&dir))
                .await
                .map_err(|e| MilvusError::unexpected(format!("cleanup panicked: {e}")))?;
            if let Err(e) = removed {
                tracing::warn!(file_id = f.id, error = %e, "cannot remove segment directory");
                continue;
            }
            self.cache.evict(f.id);
            self.meta.delete_file_row(f.id).await.map_err(meta_err)?;
        }
        Ok(n)
    }

    // ---- reads ------------------------------------------------------------

    fn segment_dir(&self, f: &FileRow) -> PathBuf {
        segment::segment_dir(&self.opts.data_dir, &f.table_id, &f.segment_id)
    }

    /// A file's segment from the cache, reloaded when its `updated_time` moved.
    async fn load(&self, f: &FileRow) -> MilvusResult<Arc<Segment>> {
        let dir = self.segment_dir(f);
        self.cache
            .get_or_load(f.id, f.updated_time, dir, f.segment_id.clone())
            .await
            .map_err(|e| {
                MilvusError::new(
                    ErrorCode::FileNotFound,
                    format!(
                        "cannot load segment {} (file id {}): {e}",
                        f.segment_id, f.id
                    ),
                )
            })
    }

    /// The checks every vector search makes, in Milvus' order, and the
    /// collection and query vectors they yield.
    async fn search_target(
        &self,
        name: &str,
        tags: &[String],
        records: &[crate::wire::RowRecord],
        topk: i64,
        params: &serde_json::Value,
    ) -> MilvusResult<(Collection, VectorData)> {
        validate::search_request(name, tags, records.len(), topk)?;
        let c = self.collection(name).await?;
        validate::search_params(c.engine, params, topk)?;
        let queries = validate::vectors(records, c.metric, c.dim())?;
        Ok((c, queries))
    }

    pub async fn search(
        &self,
        name: &str,
        tags: &[String],
        records: &[crate::wire::RowRecord],
        topk: i64,
        params: &serde_json::Value,
    ) -> MilvusResult<TopKHits> {
        let (c, queries) = self
            .search_target(name, tags, records, topk, params)
            .await?;
        let files = self.selected_files(&c, tags).await?;
        self.search_files(&c, &files, &queries, topk as usize).await
    }

    pub async fn search_in_files(
        &self,
        file_ids: &[String],
        name: &str,
        tags: &[String],
        records: &[crate::wire::RowRecord],
        topk: i64,
        params: &serde_json::Value,
    ) -> MilvusResult<TopKHits> {
        let ids = validate::file_ids(file_ids)?;
        let (c, queries) = self
            .search_target(name, tags, records, topk, params)
            .await?;
        let found = self.meta.files_by_ids(&ids).await.map_err(meta_err)?;
        if found.is_empty() {
            return Err(MilvusError::unexpected(format!(
                "Invalid file id: none of {file_ids:?} exists in the metadata"
            )));
        }
        // Like Milvus, search what the ids name except files still being
        // written; unlike Milvus, only files of this collection.
        let tables: HashSet<String> = self.table_ids(&c).await?.into_iter().collect();
        let files: Vec<FileRow> = found
            .into_iter()
            .filter(|f| {
                !matches!(
                    f.kind(),
                    Some(FileType::New | FileType::NewMerge | FileType::NewIndex) | None
                ) && tables.contains(&f.table_id)
            })
            .collect();
        self.search_files(&c, &files, &queries, topk as usize).await
    }

    pub async fn search_by_id(
        &self,
        name: &str,
        tags: &[String],
        ids: &[i64],
        topk: i64,
        params: &serde_json::Value,
    ) -> MilvusResult<TopKHits> {
        validate::collection_name(name)?;
        if ids.is_empty() {
            return Err(MilvusError::illegal_argument("No vector id specified"));
        }
        validate::topk(topk)?;
        validate::result_size(ids.len(), topk)?;
        let c = self.collection(name).await?;
        validate::search_params(c.engine, params, topk)?;
        let found = self.vectors_by_id(&c, ids, None).await?;
        let files = self.selected_files(&c, tags).await?;
        // Search the ids that exist; rows of missing ids are -1 padding.
        let present: Vec<usize> = (0..ids.len()).filter(|i| found[*i].is_some()).collect();
        let queries = collect_queries(&present, &found, c.metric);
        let hits = if present.is_empty() {
            TopKHits::empty()
        } else {
            self.search_files(&c, &files, &queries, topk as usize)
                .await?
        };
        if hits.nq == 0 {
            return Ok(hits);
        }
        Ok(hits.spread_rows(&present, ids.len(), c.metric.order()))
    }

    /// Exact search of `queries` over `files`, merged into one top-k.
    async fn search_files(
        &self,
        c: &Collection,
        files: &[FileRow],
        queries: &VectorData,
        topk: usize,
    ) -> MilvusResult<TopKHits> {
        if files.is_empty() {
            return Ok(TopKHits::empty());
        }
        let mut segments = Vec::with_capacity(files.len());
        for f in files {
            segments.push(self.load(f).await?);
        }
        let metric = c.metric;
        let dim = c.dim() as usize;
        let queries = queries.clone();
        tokio::task::spawn_blocking(move || {
            let parts = scan_segments(&segments, &queries, metric, dim, topk)?;
            merge::merge(parts, topk, metric.order())
        })
        .await
        .map_err(|e| MilvusError::unexpected(format!("search task panicked: {e}")))?
    }

    /// Stored vectors of `ids` (None where an id is not found), searching the
    /// given partition or the whole collection.
    async fn vectors_by_id(
        &self,
        c: &Collection,
        ids: &[i64],
        partition_tag: Option<&str>,
    ) -> MilvusResult<Vec<Option<crate::wire::RowRecord>>> {
        let tables = match partition_tag {
            Some(tag) => vec![self.partition_table(c.name(), tag).await?],
            None => self.table_ids(c).await?,
        };
        let files = self
            .meta
            .files_of(&tables, &SEARCHABLE)
            .await
            .map_err(meta_err)?;
        let mut out: Vec<Option<crate::wire::RowRecord>> = vec![None; ids.len()];
        let wanted: HashMap<i64, Vec<usize>> =
            ids.iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, id)| {
                    m.entry(*id).or_default().push(i);
                    m
                });
        for f in files {
            let seg = self.load(&f).await?;
            for (row, id) in seg.ids.iter().enumerate() {
                let Some(slots) = wanted.get(id) else {
                    continue;
                };
                if seg.deleted.is_deleted(row) {
                    continue;
                }
                let record = match &seg.vectors {
                    SegmentVectors::Float { dim, data } => crate::wire::RowRecord {
                        float_data: data[row * dim..(row + 1) * dim].to_vec(),
                        binary_data: Default::default(),
                    },
                    SegmentVectors::Binary { dim_bits, data } => {
                        let w = dim_bits / 8;
                        crate::wire::RowRecord {
                            float_data: Vec::new(),
                            binary_data: bytes::Bytes::copy_from_slice(
                                &data[row * w..(row + 1) * w],
                            ),
                        }
                    }
                };
                for slot in slots {
                    out[*slot] = Some(record.clone());
                }
            }
        }
        Ok(out)
    }

    pub async fn get_vectors_by_id(
        &self,
        name: &str,
        ids: &[i64],
        partition_tag: &str,
    ) -> MilvusResult<Vec<crate::wire::RowRecord>> {
        let c = self.collection(name).await?;
        validate::get_by_id_count(ids.len())?;
        let tag = if partition_tag.is_empty() {
            None
        } else {
            Some(validate::partition_tag(partition_tag)?)
        };
        let found = self.vectors_by_id(&c, ids, tag.as_deref()).await?;
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    pub async fn get_vector_ids(&self, name: &str, segment_name: &str) -> MilvusResult<Vec<i64>> {
        let c = self.collection(name).await?;
        let tables = self.table_ids(&c).await?;
        let files = self
            .meta
            .files_of_segment(&tables, segment_name)
            .await
            .map_err(meta_err)?;
        let Some(f) = files.first() else {
            return Err(MilvusError::unexpected(format!(
                "Segment {segment_name} does not exist in collection {name}"
            )));
        };
        let seg = self.load(f).await?;
        Ok(seg
            .ids
            .iter()
            .enumerate()
            .filter(|(row, _)| !seg.deleted.is_deleted(*row))
            .map(|(_, id)| *id)
            .collect())
    }

    /// Loads every searchable file of the collection (or the given partitions) into the cache.
    pub async fn preload(&self, name: &str, tags: &[String]) -> MilvusResult<()> {
        let c = self.collection(name).await?;
        for f in self.selected_files(&c, tags).await? {
            self.load(&f).await?;
        }
        Ok(())
    }

    pub async fn release(&self, name: &str, tags: &[String]) -> MilvusResult<()> {
        let c = self.collection(name).await?;
        for f in self.selected_files(&c, tags).await? {
            self.cache.evict(f.id);
        }
        Ok(())
    }

    /// ReloadSegments: deletes are noticed through `updated_time` (as Milvus
    /// 1.1.1+), so this only validates and drops the named files from the cache.
    pub async fn reload_segments(&self, name: &str, file_ids: &[String]) -> MilvusResult<()> {
        if self.opts.role == Role::Writable {
            return Ok(());
        }
        self.collection(name).await?;
        for id in validate::file_ids(file_ids)? {
            self.cache.evict(id);
        }
        Ok(())
    }

    /// Flushes what is buffered (graceful shutdown).
    pub async fn shutdown(&self) {
        self.auto_flush().await;
    }
}

/// Scans every segment for the queries, spreading the segments over the
/// machine's cores (scoped threads: the work is CPU-bound and short-lived, so
/// a thread pool crate would add a dependency for no gain).
fn scan_segments(
    segments: &[Arc<Segment>],
    queries: &VectorData,
    metric: MetricType,
    dim: usize,
    topk: usize,
) -> MilvusResult<Vec<TopKHits>> {
    let scan_one = |seg: &Segment| -> MilvusResult<TopKHits> {
        let q = match queries {
            VectorData::Float(v) => QueriesRef::Float { dim, data: v },
            VectorData::Binary(v) => QueriesRef::Binary {
                dim_bits: dim,
                data: v,
            },
        };
        let vectors = match &seg.vectors {
            SegmentVectors::Float { dim, data } => VectorsRef::Float { dim: *dim, data },
            SegmentVectors::Binary { dim_bits, data } => VectorsRef::Binary {
                dim_bits: *dim_bits,
                data,
            },
        };
        scan::search_segment(
            metric,
            vectors,
            &seg.ids,
            |row| seg.deleted.is_deleted(row),
            q,
            topk,
        )
        .map_err(|e| MilvusError::unexpected(format!("cannot search segment: {e}")))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(segments.len());
    if threads <= 1 {
        return segments.iter().map(|s| scan_one(s)).collect();
    }
    let per_thread = segments.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = segments
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|s| scan_one(s))
                        .collect::<MilvusResult<Vec<_>>>()
                })
            })
            .collect();
        let mut parts = Vec::with_capacity(segments.len());
        for w in workers {
            let hits = w
                .join()
                .map_err(|_| MilvusError::unexpected("a search thread panicked"))??;
            parts.extend(hits);
        }
        Ok(parts)
    })
}

/// File types a search, a count and collection info read.
pub const SEARCHABLE: [FileType; 3] = [FileType::Raw, FileType::ToIndex, FileType::Index];

fn vectors_bytes(v: &SegmentVectors) -> usize {
    match v {
        SegmentVectors::Float { data, .. } => data.len() * 4,
        SegmentVectors::Binary { data, .. } => data.len(),
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

fn collect_queries(
    present: &[usize],
    found: &[Option<crate::wire::RowRecord>],
    metric: MetricType,
) -> VectorData {
    let rows = present.iter().filter_map(|i| found[*i].as_ref());
    if metric.is_binary() {
        VectorData::Binary(rows.flat_map(|r| r.binary_data.iter().copied()).collect())
    } else {
        VectorData::Float(rows.flat_map(|r| r.float_data.iter().copied()).collect())
    }
}

/// Milvus-style ids: microseconds x 1000 + a sequence, strictly increasing
/// within the process and across restarts (time moves on).
#[derive(Default)]
struct IdGenerator {
    last: AtomicI64,
}

impl IdGenerator {
    fn next(&self) -> i64 {
        let candidate = meta::now_micros().saturating_mul(1000);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recovery_removes_crash_leftovers_and_orphans_only() {
        let dir = tempfile::tempdir().unwrap();
        let uri = crate::meta::MetaUri::parse(
            &format!("sqlite://{}", dir.path().join("meta.sqlite").display()),
            None,
        )
        .unwrap();
        let meta = MetaStore::connect(&uri, 2).await.unwrap();
        let engine = Engine::new(
            EngineOptions {
                role: Role::Writable,
                data_dir: dir.path().to_path_buf(),
                cleanup_delay: Duration::from_secs(10),
                cache_bytes: 1 << 20,
            },
            meta,
        );
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        let record = |x: f32| crate::wire::RowRecord {
            float_data: vec![x, x],
            binary_data: Default::default(),
        };
        engine
            .insert("c", &[record(1.0), record(2.0)], &[], "")
            .await
            .unwrap();
        engine.flush(&["c".to_string()]).await.unwrap();
        let tables = dir.path().join("db").join("tables").join("c");
        std::fs::create_dir_all(tables.join(".123.tmp")).unwrap();
        std::fs::create_dir_all(tables.join("999")).unwrap(); // no row names it
        assert_eq!(engine.recover_disk().await.unwrap(), 2);
        assert!(!tables.join(".123.tmp").exists());
        assert!(!tables.join("999").exists());
        // The flushed segment survives and is still searchable.
        assert_eq!(engine.count("c").await.unwrap(), 2);
        let hits = engine
            .search("c", &[], &[record(1.0)], 1, &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(hits.distances, vec![0.0]);
    }

    #[test]
    fn ids_strictly_increase() {
        let g = IdGenerator::default();
        let mut prev = g.next();
        for _ in 0..10_000 {
            let n = g.next();
            assert!(n > prev);
            prev = n;
        }
    }

    #[test]
    fn remove_pending_keeps_survivors_in_order() {
        let mut buf = PendingRows {
            float: vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
            binary: vec![],
            ids: vec![10, 20, 30],
        };
        remove_pending(&mut buf, &HashSet::from([20]), MetricType::L2, 2);
        assert_eq!(buf.ids, vec![10, 30]);
        assert_eq!(buf.float, vec![1.0, 1.0, 3.0, 3.0]);
    }
}
