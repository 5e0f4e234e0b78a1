//! The node's database engine: the `Engine` every request goes through, how
//! it is built, and the lookups all its jobs share (a collection, its tables,
//! a file's segment). The jobs live in the submodules: `collections`
//! (collections, partitions, index records), `indexing` (index builds and
//! drops, loading built indexes), `writes` (insert buffer, flush,
//! delete), `maintenance` (merge, compact, cleanup, crash recovery), `search`
//! and `ids` (reads by entity or segment id). Every public method returns a
//! `MilvusResult` so the gRPC layer only translates.

mod collections;
mod ids;
mod indexing;
#[cfg(test)]
mod indexing_tests;
mod maintenance;
mod scan_job;
mod search;
mod wal;
mod writes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::cache::{SegmentCache, SegmentKey};
use super::segment::{self, Segment};
use crate::meta::{self, CollectionRow, FileRow, MetaStore};
use crate::status::{MilvusError, MilvusResult};
use crate::types::{EngineType, FileType, MetricType, DEFAULT_PARTITION_TAG};
use crate::validate;
use crate::wire::ErrorCode;
pub use indexing::BUILD_INDEX_THRESHOLD;
use writes::PendingRows;

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

/// The node's state shared by every request.
pub struct Engine {
    opts: EngineOptions,
    meta: MetaStore,
    cache: Arc<SegmentCache>,
    /// Superseded versions of segments' deletes, removed after the cleanup
    /// delay (see `maintenance`).
    retired: maintenance::Retired,
    /// Per collection: its row id and the table ids of it and its
    /// partitions, as last read (see `search::member_tables`).
    member_tables: std::sync::Mutex<HashMap<String, MemberTables>>,
    /// Serialises every mutation (insert, flush, delete, merge, drop) so they
    /// never interleave on the same files.
    write_lock: Mutex<HashMap<String, PendingRows>>,
    /// The write-ahead log of the buffered rows (writable role, once
    /// [`Engine::replay_wal`] opened it); used with `write_lock` held.
    wal: std::sync::Mutex<Option<wal::Wal>>,
    ids: IdGenerator,
    /// Loaded indexes of INDEX files and the one-build-at-a-time lock.
    indexing: indexing::IndexState,
}

fn meta_err(e: sqlx::Error) -> MilvusError {
    MilvusError::meta(e)
}

/// Locks a std mutex, recovering it if a panicking thread poisoned it.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn io_err(context: &str, e: std::io::Error) -> MilvusError {
    MilvusError::unexpected(format!("{context}: {e}"))
}

/// A collection's row id and the table ids of it and its partitions.
type MemberTables = (i64, Arc<Vec<String>>);

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
        let cache = Arc::new(SegmentCache::new(opts.cache_bytes));
        Self {
            opts,
            meta,
            cache,
            retired: maintenance::Retired::default(),
            member_tables: std::sync::Mutex::new(HashMap::new()),
            write_lock: Mutex::new(HashMap::new()),
            wal: std::sync::Mutex::new(None),
            ids: IdGenerator::default(),
            indexing: indexing::IndexState::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.opts.role
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// `set_config cache.cache_size`: the segment cache's new bound.
    pub fn set_cache_capacity(&self, bytes: u64) {
        self.cache.set_capacity(bytes);
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

    /// The root's table id followed by every partition's.
    async fn table_ids(&self, c: &Collection) -> MilvusResult<Vec<String>> {
        let mut ids = vec![c.row.table_id.clone()];
        let parts = self.meta.partitions(c.name()).await.map_err(meta_err)?;
        ids.extend(parts.into_iter().map(|p| p.table_id));
        Ok(ids)
    }

    /// The table id that stores partition `tag` of `name` (`_default` = the root).
    async fn partition_table(&self, name: &str, tag: &str) -> MilvusResult<String> {
        if tag == DEFAULT_PARTITION_TAG {
            return Ok(name.to_string());
        }
        Ok(self.partition_row(name, tag).await?.table_id)
    }

    /// The metadata row of partition `tag` of `name`.
    async fn partition_row(&self, name: &str, tag: &str) -> MilvusResult<CollectionRow> {
        let parts = self.meta.partitions(name).await.map_err(meta_err)?;
        parts
            .into_iter()
            .find(|p| p.partition_tag == tag)
            .ok_or_else(|| {
                MilvusError::unexpected(format!(
                    "Partition {tag} does not exist in collection {name}"
                ))
            })
    }

    fn segment_dir(&self, f: &FileRow) -> PathBuf {
        segment::segment_dir(&self.opts.data_dir, &f.table_id, &f.segment_id)
    }

    /// A file's segment with the deletes its metadata row counts, from the
    /// cache or the disk (see `cache`).
    async fn load(&self, f: &FileRow) -> MilvusResult<Arc<Segment>> {
        let mut loaded = self.load_many(std::slice::from_ref(f)).await?;
        loaded
            .pop()
            .ok_or_else(|| MilvusError::unexpected("segment load returned nothing"))
    }

    /// The segments of `files`, in order, checked and loaded in one trip to
    /// a blocking thread.
    async fn load_many(&self, files: &[FileRow]) -> MilvusResult<Vec<Arc<Segment>>> {
        let jobs = files
            .iter()
            .map(|f| {
                let live_rows = usize::try_from(f.row_count).map_err(|_| {
                    MilvusError::unexpected(format!(
                        "file id {} has row_count {} in the metadata",
                        f.id, f.row_count
                    ))
                })?;
                let key = SegmentKey {
                    file_id: f.id,
                    segment_id: f.segment_id.clone(),
                    live_rows,
                };
                Ok((key, self.segment_dir(f)))
            })
            .collect::<MilvusResult<Vec<(SegmentKey, PathBuf)>>>()?;
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            jobs.iter()
                .map(|(key, dir)| {
                    cache.get_fresh(key, dir).map_err(|e| {
                        MilvusError::new(
                            ErrorCode::FileNotFound,
                            format!(
                                "cannot load segment {} (file id {}): {e}",
                                key.segment_id, key.file_id
                            ),
                        )
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| MilvusError::unexpected(format!("segment loader panicked: {e}")))?
    }
}

/// File types a search, a count and collection info read.
pub const SEARCHABLE: [FileType; 3] = [FileType::Raw, FileType::ToIndex, FileType::Index];

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
}
