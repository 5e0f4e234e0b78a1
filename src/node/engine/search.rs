//! Search: the request checks, the files a search selects, the exact scan
//! of their segments (or their built index, for INDEX files) on the shared
//! worker pool (`scan_job`), and keeping those segments in the cache
//! (preload, release, reload).

use std::sync::Arc;

use super::indexing;
use super::scan_job::{self, ScanJob};
use super::{meta_err, Collection, Engine, Role, SEARCHABLE};
use crate::merge::TopKHits;
use crate::meta::FileRow;
use crate::node::index::SearchKnobs;
use crate::partition;
use crate::status::{MilvusError, MilvusResult};
use crate::types::{FileType, MetricType};
use crate::validate::{self, VectorData};
use crate::wire::ErrorCode;

impl Engine {
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

    /// The checks every vector search makes, in Milvus' order, and the
    /// collection, query vectors and ranking metric (the collection's or the
    /// params' `metric_type` override) they yield.
    async fn search_target(
        &self,
        name: &str,
        tags: &[String],
        records: &[crate::wire::RowRecord],
        topk: i64,
        params: &serde_json::Value,
    ) -> MilvusResult<(Collection, VectorData, MetricType)> {
        validate::search_request(name, tags, records.len(), topk)?;
        let c = self.collection(name).await?;
        validate::search_params(c.engine, params, topk)?;
        let metric = validate::search_metric(c.metric, params)?;
        let queries = validate::vectors(records, c.metric, c.dim())?;
        Ok((c, queries, metric))
    }

    pub async fn search(
        &self,
        name: &str,
        tags: &[String],
        records: &[crate::wire::RowRecord],
        topk: i64,
        params: &serde_json::Value,
    ) -> MilvusResult<TopKHits> {
        let (c, queries, metric) = self
            .search_target(name, tags, records, topk, params)
            .await?;
        let files = self.selected_files(&c, tags).await?;
        let knobs = indexing::search_knobs(params, topk as usize);
        self.search_files(&c, &files, &queries, topk as usize, metric, knobs)
            .await
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
        let (c, queries, metric) = self
            .search_target(name, tags, records, topk, params)
            .await?;
        // Read on every call, as Milvus does: the rows' counts say which
        // version of each segment's deletes to search (see `cache`).
        let found = self.meta.files_by_ids(&ids).await.map_err(meta_err)?;
        if found.is_empty() {
            return Err(MilvusError::unexpected(format!(
                "Invalid file id: none of {file_ids:?} exists in the metadata"
            )));
        }
        // A named file whose row is gone was cleaned up after the caller
        // planned: answering without it would be a silently partial result.
        // FILE_NOT_FOUND makes the proxy plan again from fresh metadata.
        let gone = missing_ids(&ids, &found);
        if !gone.is_empty() {
            return Err(MilvusError::new(
                ErrorCode::FileNotFound,
                format!("file ids {gone:?} are not in the metadata (cleaned up after a merge, compaction or drop?)"),
            ));
        }
        // Like Milvus, search what the ids name except files still being
        // written; unlike Milvus, only files of this collection.
        let tables = self.member_tables(&c, &found).await?;
        let files: Vec<FileRow> = found
            .into_iter()
            .filter(|f| searchable_by_id(f) && tables.contains(&f.table_id))
            .collect();
        let knobs = indexing::search_knobs(params, topk as usize);
        self.search_files(&c, &files, &queries, topk as usize, metric, knobs)
            .await
    }

    /// The table ids of collection `c` and its partitions, from the cache
    /// while every file of `files` belongs to one of them; read again when a
    /// file names another table (a partition created since) or the
    /// collection was dropped and created again (another row id).
    async fn member_tables(
        &self,
        c: &Collection,
        files: &[FileRow],
    ) -> MilvusResult<Arc<Vec<String>>> {
        let cached = self
            .member_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(c.name())
            .filter(|(row_id, _)| *row_id == c.row.id)
            .map(|(_, tables)| tables.clone());
        if let Some(tables) = cached {
            if files.iter().all(|f| tables.contains(&f.table_id)) {
                return Ok(tables);
            }
        }
        let tables = Arc::new(self.table_ids(c).await?);
        self.member_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.name().to_string(), (c.row.id, tables.clone()));
        Ok(tables)
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
        let metric = validate::search_metric(c.metric, params)?;
        let found = self
            .vectors_by_id(&c, ids, None)
            .await?
            .unwrap_or_else(|| vec![None; ids.len()]);
        let files = self.selected_files(&c, tags).await?;
        // Search the ids that exist; rows of missing ids are -1 padding.
        let present: Vec<usize> = (0..ids.len()).filter(|i| found[*i].is_some()).collect();
        let queries = collect_queries(&present, &found, c.metric);
        let hits = if present.is_empty() {
            TopKHits::empty()
        } else {
            let knobs = indexing::search_knobs(params, topk as usize);
            self.search_files(&c, &files, &queries, topk as usize, metric, knobs)
                .await?
        };
        if hits.nq == 0 {
            return Ok(hits);
        }
        Ok(hits.spread_rows(&present, ids.len(), metric.order()))
    }

    /// Search of `queries` over `files` ranked by `metric` (the collection's,
    /// or the search's override), merged into one top-k: INDEX files through
    /// their index with `knobs` when it was built for that metric, the others
    /// (and every file under an override the index was not built for) by
    /// exact scan.
    async fn search_files(
        &self,
        c: &Collection,
        files: &[FileRow],
        queries: &VectorData,
        topk: usize,
        metric: MetricType,
        knobs: SearchKnobs,
    ) -> MilvusResult<TopKHits> {
        if files.is_empty() {
            return Ok(TopKHits::empty());
        }
        let loaded = self.load_many(files).await?;
        let mut segments = Vec::with_capacity(files.len());
        for (f, segment) in files.iter().zip(loaded) {
            let index = self
                .load_index(f)
                .await?
                .filter(|index| index.metric() == metric);
            segments.push((segment, index));
        }
        scan_job::run(ScanJob {
            segments,
            queries: queries.clone(),
            metric,
            dim: c.dim() as usize,
            topk,
            knobs,
        })
        .await
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
            self.indexing.evict(f.id);
        }
        Ok(())
    }

    /// ReloadSegments: deletes are noticed on every search (each file's
    /// metadata row_count names its deletes version, see `cache`), so this
    /// only validates and drops the named files from the cache.
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
}

/// The ids of `wanted` that no row of `found` has, each once, in order.
fn missing_ids(wanted: &[i64], found: &[FileRow]) -> Vec<i64> {
    let mut seen: std::collections::HashSet<i64> = found.iter().map(|f| f.id).collect();
    wanted
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Whether `SearchInFiles` searches a file it names: Milvus 1.1 searches a
/// named file in every state but the NEW ones (still being written), also
/// BACKUP and TO_DELETE while it is on disk.
fn searchable_by_id(f: &FileRow) -> bool {
    matches!(
        f.kind(),
        Some(
            FileType::Raw
                | FileType::ToIndex
                | FileType::Index
                | FileType::Backup
                | FileType::ToDelete
        )
    )
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
