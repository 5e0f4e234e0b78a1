//! Collections, partitions and index records: creating, listing, describing
//! and dropping them in the metadata store (index builds are in `indexing`).

use serde_json::json;

use super::{meta_err, Engine, SEARCHABLE};
use crate::meta::{self, schema::SCHEMA_VERSION, CollectionRow};
use crate::partition;
use crate::status::{MilvusError, MilvusResult};
use crate::types::{EngineType, FileType, DEFAULT_PARTITION_TAG, TABLE_STATE_NORMAL};
use crate::validate;
use crate::wire::ErrorCode;

impl Engine {
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

    /// Milvus validates only the collection name: any tag is looked up
    /// trimmed, so a blank, over-long or unknown one is simply absent.
    pub async fn has_partition(&self, name: &str, tag: &str) -> MilvusResult<bool> {
        self.collection(name).await?;
        let parts = self.meta.partitions(name).await.map_err(meta_err)?;
        Ok(partition::has_tag(
            parts.iter().map(|p| p.partition_tag.as_str()),
            tag,
        ))
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

    pub async fn create_index(
        &self,
        name: &str,
        index_type: i32,
        params: serde_json::Value,
    ) -> MilvusResult<()> {
        self.require_writable("CreateIndex")?;
        let c = self.collection(name).await?;
        let engine = validate::index_params(index_type, &params, c.metric, c.dim())?;
        // As Milvus: flush, record the index (dropping the files of a
        // different one), then build every big-enough file before answering.
        self.flush(&[name.to_string()]).await?;
        let params = params.to_string();
        {
            let _guard = self.write_lock.lock().await;
            let c = self.collection(name).await?;
            if c.row.engine_type != engine as i32 || c.row.index_params != params {
                let tables = self.table_ids(&c).await?;
                self.drop_index_files(&tables).await?;
            }
            self.meta
                .set_index(name, engine as i32, &params)
                .await
                .map_err(meta_err)?;
        }
        self.build_indexes(Some(name)).await?;
        Ok(())
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
        let tables = self.table_ids(&c).await?;
        self.drop_index_files(&tables).await?;
        self.meta
            .set_index(name, flat as i32, "{}")
            .await
            .map_err(meta_err)
    }
}
