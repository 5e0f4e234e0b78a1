//! Index builds (Milvus' BuildIndex): which index a collection asks for,
//! building it over every raw file of at least [`BUILD_INDEX_THRESHOLD`]
//! rows, publishing it (a NEW_INDEX row becomes INDEX and the raw file
//! BACKUP in one metadata transaction), dropping index files (BACKUP files
//! become RAW again), and loading built indexes for searches.
//!
//! Built: IVF_FLAT, IVF_SQ8 and HNSW over float vectors. Every other index
//! type Milvus accepts is recorded and its files stay RAW (exact scan).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{io_err, meta_err, Collection, Engine};
use crate::merge::TopKHits;
use crate::meta::{self, FileRow};
use crate::node::index::{self, IndexSpec, SearchKnobs, VectorIndex};
use crate::node::segment::{self, Segment, SegmentVectors};
use crate::status::{MilvusError, MilvusResult};
use crate::types::{EngineType, FileType, MetricType};
use crate::wire::ErrorCode;

/// Files with fewer rows stay raw (Milvus' `BUILD_INDEX_THRESHOLD`).
pub const BUILD_INDEX_THRESHOLD: i64 = 4096;

/// nprobe / ef used when a search request does not name them (the request
/// validation requires them for the collection's index type, so these only
/// apply to files whose index differs from the collection's).
const DEFAULT_NPROBE: usize = 16;
const DEFAULT_EF: usize = 64;

/// The index a collection's engine type and params ask us to build, or
/// `None` when its files stay raw (FLAT, binary metrics, types we do not build).
pub fn index_spec(engine: EngineType, metric: MetricType, params: &str) -> Option<IndexSpec> {
    if metric.is_binary() {
        return None;
    }
    let params: serde_json::Value = serde_json::from_str(params).ok()?;
    let get = |key: &str| -> Option<usize> { params.get(key)?.as_u64()?.try_into().ok() };
    let spec = match engine {
        EngineType::IvfFlat => IndexSpec::IvfFlat {
            nlist: get("nlist")?,
        },
        EngineType::IvfSq8 => IndexSpec::IvfSq8 {
            nlist: get("nlist")?,
        },
        EngineType::Hnsw => IndexSpec::Hnsw {
            m: get("M")?,
            ef_construction: get("efConstruction")?,
        },
        _ => return None,
    };
    spec.validate().ok().map(|_| spec)
}

/// The search knobs of a request's params (`nprobe`, `ef`), defaults for
/// the ones it does not name; `ef` is at least `topk`.
pub fn search_knobs(params: &serde_json::Value, topk: usize) -> SearchKnobs {
    let get = |key: &str| -> Option<usize> { params.get(key)?.as_u64()?.try_into().ok() };
    SearchKnobs {
        nprobe: get("nprobe").unwrap_or(DEFAULT_NPROBE).max(1),
        ef: get("ef").unwrap_or(DEFAULT_EF).max(topk),
    }
}

/// Built indexes by INDEX file id, plus the lock that keeps one build at a
/// time. Index files never change once written, so entries are never stale;
/// they are dropped with their file (cleanup, DropIndex, release).
#[derive(Default)]
pub(super) struct IndexState {
    loaded: Mutex<HashMap<i64, Arc<VectorIndex>>>,
    build: tokio::sync::Mutex<()>,
}

impl IndexState {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<VectorIndex>>> {
        // Every mutation is a single insert/remove: a poisoned map is consistent.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn evict(&self, file_id: i64) {
        self.lock().remove(&file_id);
    }
}

/// A segment searched through its index: the best `topk` per query, shaped
/// like the exact scan's answer; deleted rows are never returned.
pub(super) fn search_index(
    index: &VectorIndex,
    seg: &Segment,
    queries: &[f32],
    topk: usize,
    knobs: &SearchKnobs,
) -> MilvusResult<TopKHits> {
    let hits = index
        .search(queries, topk, knobs, |row| {
            seg.deleted.is_deleted(row as usize)
        })
        .map_err(|e| MilvusError::unexpected(format!("cannot search index: {e}")))?;
    Ok(index::hits_to_topk(
        &hits,
        &seg.ids,
        topk,
        index.metric().order(),
    ))
}

impl Engine {
    /// Builds the index of every raw file of at least [`BUILD_INDEX_THRESHOLD`]
    /// rows in collection `only` (with its partitions), or in every
    /// collection; returns how many files were indexed. One build at a time.
    pub async fn build_indexes(&self, only: Option<&str>) -> MilvusResult<usize> {
        self.require_writable("BuildIndex")?;
        let _one_build = self.indexing.build.lock().await;
        let tables = self.meta.all_tables().await.map_err(meta_err)?;
        let mut built = 0;
        for t in tables {
            let root = if t.is_partition() {
                &t.owner_table
            } else {
                &t.table_id
            };
            if only.is_some_and(|name| name != root) {
                continue;
            }
            let c = Collection::from_row(t)?;
            let Some(spec) = index_spec(c.engine, c.metric, &c.row.index_params) else {
                continue;
            };
            let files = self
                .meta
                .files_of(
                    std::slice::from_ref(&c.row.table_id),
                    &[FileType::Raw, FileType::ToIndex],
                )
                .await
                .map_err(meta_err)?;
            for f in files
                .iter()
                .filter(|f| f.row_count >= BUILD_INDEX_THRESHOLD)
            {
                if self.build_file(&c, spec, f).await? {
                    built += 1;
                }
            }
        }
        Ok(built)
    }

    /// Builds one file's index: registers a NEW_INDEX row, writes the index
    /// file durably, then publishes it unless the file or the collection's
    /// index changed meanwhile (then the build is discarded). Returns whether
    /// it was published.
    async fn build_file(
        &self,
        c: &Collection,
        spec: IndexSpec,
        raw: &FileRow,
    ) -> MilvusResult<bool> {
        let now = meta::now_micros();
        let file_id = self.ids.next().to_string();
        let pending = FileRow {
            id: 0,
            engine_type: spec.engine_type() as i32,
            file_id: file_id.clone(),
            file_type: FileType::NewIndex as i32,
            file_size: 0,
            updated_time: now,
            created_on: now,
            date: meta::milvus_date(now),
            ..raw.clone()
        };
        let index_id = self.meta.insert_file(&pending).await.map_err(meta_err)?;
        let written = self.write_index(c.metric, spec, raw, &file_id).await;
        let (size, built) = match written {
            Ok(done) => done,
            Err(e) => {
                self.discard_build(index_id).await;
                return Err(e);
            }
        };
        let _guard = self.write_lock.lock().await;
        let current = self.meta.table(&c.row.table_id).await.map_err(meta_err)?;
        let same_index = current.is_some_and(|t| {
            t.engine_type == c.row.engine_type && t.index_params == c.row.index_params
        });
        if !same_index
            || !self
                .meta
                .swap_in_index(index_id, raw.id, size as i64)
                .await
                .map_err(meta_err)?
        {
            self.discard_build(index_id).await;
            return Ok(false);
        }
        self.indexing.lock().insert(index_id, built);
        self.cache.evict(raw.id);
        tracing::debug!(table_id = %raw.table_id, raw = raw.id, index = index_id, "index built");
        Ok(true)
    }

    /// Builds the index over the raw file's rows (deleted ones included: they
    /// are filtered at search time) and writes its file; blocking work runs
    /// off the async threads.
    async fn write_index(
        &self,
        metric: MetricType,
        spec: IndexSpec,
        raw: &FileRow,
        file_id: &str,
    ) -> MilvusResult<(u64, Arc<VectorIndex>)> {
        let seg = self.load(raw).await?;
        let dir = self.segment_dir(raw);
        let file_id = file_id.to_string();
        tokio::task::spawn_blocking(move || -> MilvusResult<(u64, Arc<VectorIndex>)> {
            let SegmentVectors::Float { dim, data } = &seg.vectors else {
                return Err(MilvusError::unexpected("binary vectors cannot be indexed"));
            };
            let built = index::build(spec, metric, *dim, data)
                .map_err(|e| MilvusError::unexpected(format!("cannot build index: {e}")))?;
            let size = segment::write_index_file(&dir, &file_id, &built.to_bytes())
                .map_err(|e| io_err("cannot write index file", e))?;
            Ok((size, Arc::new(built)))
        })
        .await
        .map_err(|e| MilvusError::unexpected(format!("index build panicked: {e}")))?
    }

    /// A build that will not be published: its row becomes TO_DELETE and the
    /// cleanup removes its file after the delay, like any other file.
    async fn discard_build(&self, index_id: i64) {
        if let Err(e) = self.meta.drop_files(&[index_id]).await {
            tracing::warn!(index_id, error = %e, "cannot retire an abandoned index build");
        }
    }

    /// DropIndex's file work, with the write lock held: index files of
    /// `tables` become TO_DELETE, their BACKUP raw files RAW again.
    pub(super) async fn drop_index_files(&self, tables: &[String]) -> MilvusResult<()> {
        let dropped = self.meta.drop_index_files(tables).await.map_err(meta_err)?;
        for f in dropped {
            self.indexing.evict(f.id);
            self.cache.evict(f.id);
        }
        Ok(())
    }

    /// Writable-node startup: builds a crash interrupted (NEW_INDEX rows)
    /// are retired; the background builder starts them again.
    pub async fn retire_interrupted_builds(&self) -> MilvusResult<usize> {
        self.require_writable("BuildIndex")?;
        let rows = self
            .meta
            .files_of_type(FileType::NewIndex)
            .await
            .map_err(meta_err)?;
        let ids: Vec<i64> = rows.iter().map(|f| f.id).collect();
        self.meta.drop_files(&ids).await.map_err(meta_err)?;
        Ok(ids.len())
    }

    /// The built index of an INDEX file (loaded from its file once), or
    /// `None` for files searched by the exact scan.
    pub(super) async fn load_index(&self, f: &FileRow) -> MilvusResult<Option<Arc<VectorIndex>>> {
        let built_here = matches!(
            EngineType::from_i32(f.engine_type),
            Some(EngineType::IvfFlat | EngineType::IvfSq8 | EngineType::Hnsw)
        );
        if f.kind() != Some(FileType::Index) || !built_here {
            return Ok(None);
        }
        if let Some(found) = self.indexing.lock().get(&f.id) {
            return Ok(Some(found.clone()));
        }
        let dir = self.segment_dir(f);
        let file_id = f.file_id.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let bytes = segment::read_index_file(&dir, &file_id).map_err(|e| e.to_string())?;
            VectorIndex::from_bytes(&bytes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| MilvusError::unexpected(format!("index loader panicked: {e}")))?
        .map_err(|e| {
            MilvusError::new(
                ErrorCode::FileNotFound,
                format!(
                    "cannot load index file {} (file id {}): {e}",
                    f.file_id, f.id
                ),
            )
        })?;
        let loaded = Arc::new(loaded);
        self.indexing.lock().insert(f.id, loaded.clone());
        Ok(Some(loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_follow_the_collection_index() {
        let l2 = MetricType::L2;
        assert_eq!(
            index_spec(EngineType::IvfFlat, l2, r#"{"nlist":128}"#),
            Some(IndexSpec::IvfFlat { nlist: 128 })
        );
        assert_eq!(
            index_spec(EngineType::IvfSq8, MetricType::Ip, r#"{"nlist":7}"#),
            Some(IndexSpec::IvfSq8 { nlist: 7 })
        );
        assert_eq!(
            index_spec(EngineType::Hnsw, l2, r#"{"M":16,"efConstruction":200}"#),
            Some(IndexSpec::Hnsw {
                m: 16,
                ef_construction: 200
            })
        );
        // Not built here: stays raw.
        assert_eq!(index_spec(EngineType::Flat, l2, "{}"), None);
        assert_eq!(
            index_spec(EngineType::IvfPq, l2, r#"{"nlist":8,"m":4}"#),
            None
        );
        assert_eq!(index_spec(EngineType::Annoy, l2, r#"{"n_trees":8}"#), None);
        assert_eq!(
            index_spec(EngineType::IvfFlat, MetricType::Hamming, r#"{"nlist":8}"#),
            None
        );
        // Missing or out-of-range params never build.
        assert_eq!(index_spec(EngineType::IvfFlat, l2, "{}"), None);
        assert_eq!(
            index_spec(EngineType::Hnsw, l2, r#"{"M":1,"efConstruction":8}"#),
            None
        );
        assert_eq!(index_spec(EngineType::IvfFlat, l2, "not json"), None);
    }

    #[test]
    fn knobs_come_from_the_request() {
        assert_eq!(
            search_knobs(&json!({"nprobe": 32}), 10),
            SearchKnobs { nprobe: 32, ef: 64 }
        );
        assert_eq!(
            search_knobs(&json!({"ef": 20}), 100),
            SearchKnobs {
                nprobe: 16,
                ef: 100
            }
        );
    }
}
