//! Upkeep of the writable node's files: merging small files, compacting
//! files with many deleted rows, removing TO_DELETE files after the cleanup
//! delay, and clearing crash leftovers at startup.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{io_err, meta_err, Collection, Engine, Role};
use crate::meta::{self, FileRow};
use crate::node::segment::{self, Segment, SegmentVectors};
use crate::status::{MilvusError, MilvusResult};
use crate::types::FileType;

/// Superseded `deleted_docs.<n>` versions waiting out the cleanup delay, so
/// a reader that loaded the previous row_count can still open the version it
/// names. Kept in memory: after a crash of the writable node, superseded
/// versions stay on disk until their segment directory goes (they are small:
/// 4 bytes per deleted row).
#[derive(Default)]
pub(super) struct Retired {
    due: Mutex<Vec<(Instant, PathBuf)>>,
}

impl Retired {
    /// Schedules `path` for removal after `delay`.
    pub(super) fn retire(&self, path: PathBuf, delay: Duration) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        due.push((Instant::now() + delay, path));
    }

    /// Takes the paths whose delay has passed.
    fn take_due(&self, now: Instant) -> Vec<PathBuf> {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let (ready, waiting): (Vec<_>, Vec<_>) = due.drain(..).partition(|(at, _)| *at <= now);
        *due = waiting;
        ready.into_iter().map(|(_, path)| path).collect()
    }
}

impl Engine {
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
                data: binary.into(),
            }
        } else {
            SegmentVectors::Float {
                dim,
                data: float.into(),
            }
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
        let versions = self.retired.take_due(Instant::now());
        if !versions.is_empty() {
            tokio::task::spawn_blocking(move || {
                for path in versions {
                    // Gone already when its segment was removed first.
                    if let Err(e) = std::fs::remove_file(&path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove a superseded deletes version");
                        }
                    }
                }
            })
            .await
            .map_err(|e| MilvusError::unexpected(format!("cleanup panicked: {e}")))?;
        }
        let cutoff = meta::now_micros() - self.opts.cleanup_delay.as_micros() as i64;
        let files = self.meta.expired_files(cutoff).await.map_err(meta_err)?;
        let n = files.len();
        for f in files {
            let dir = self.segment_dir(&f);
            // An index row shares its segment's directory: only its own
            // index file goes (its file_id is not the segment id).
            let index_file = (f.file_id != f.segment_id).then(|| f.file_id.clone());
            let removed = tokio::task::spawn_blocking(move || match index_file {
                Some(file_id) => segment::remove_index_file(&dir, &file_id),
                None => segment::remove_segment_dir(&dir),
            })
            .await
            .map_err(|e| MilvusError::unexpected(format!("cleanup panicked: {e}")))?;
            if let Err(e) = removed {
                tracing::warn!(file_id = f.id, error = %e, "cannot remove segment directory");
                continue;
            }
            self.cache.evict(f.id);
            self.indexing.evict(f.id);
            self.meta.delete_file_row(f.id).await.map_err(meta_err)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::EngineOptions;
    use super::*;
    use crate::meta::MetaStore;
    use std::time::Duration;

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
}
