//! What a node reads and writes in the metadata database: single tables and
//! partitions, creating and dropping them, their index settings, and the
//! lifecycle of segment files (register, merge, delete rows, expire).

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::{
    collection_from_row, file_from_row, now_micros, CollectionRow, Dialect, FileRow, MetaResult,
    MetaStore, FILE_COLUMNS, SEARCHABLE, TABLE_COLUMNS,
};
use crate::types::{FileType, TABLE_STATE_NORMAL};

impl MetaStore {
    fn returning_id(&self) -> &'static str {
        returning_id(self.dialect)
    }

    // ---- Tables -------------------------------------------------------------

    /// The live (`state = NORMAL`) row named `table_id`, collection or partition.
    pub async fn table(&self, table_id: &str) -> MetaResult<Option<CollectionRow>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM Tables WHERE table_id = ? AND state = ?");
        let row = sqlx::query(&sql)
            .bind(table_id)
            .bind(TABLE_STATE_NORMAL)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(collection_from_row).transpose()
    }

    /// Any row named `table_id`, whatever its state.
    pub async fn table_any_state(&self, table_id: &str) -> MetaResult<Option<CollectionRow>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM Tables WHERE table_id = ?");
        let row = sqlx::query(&sql)
            .bind(table_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(collection_from_row).transpose()
    }

    /// Live partitions of `root`, oldest first.
    pub async fn partitions(&self, root: &str) -> MetaResult<Vec<CollectionRow>> {
        let sql = format!(
            "SELECT {TABLE_COLUMNS} FROM Tables WHERE owner_table = ? AND state = ? ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(root)
            .bind(TABLE_STATE_NORMAL)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(collection_from_row).collect()
    }

    /// Inserts a new table row (collection or partition). Fails on a duplicate `table_id`.
    pub async fn insert_table(&self, t: &CollectionRow) -> MetaResult<i64> {
        let sql = format!(
            "INSERT INTO Tables ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){}",
            &TABLE_COLUMNS["id, ".len()..],
            self.returning_id()
        );
        let q = sqlx::query(&sql)
            .bind(&t.table_id)
            .bind(t.state)
            .bind(t.dimension)
            .bind(t.created_on)
            .bind(t.flag)
            .bind(t.index_file_size)
            .bind(t.engine_type)
            .bind(&t.index_params)
            .bind(t.metric_type)
            .bind(&t.owner_table)
            .bind(&t.partition_tag)
            .bind(&t.version)
            .bind(t.flush_lsn);
        let mut conn = self.pool.acquire().await?;
        insert_returning_id(&mut conn, self.dialect, q).await
    }

    /// Sets the id-mode flag of a collection.
    pub async fn set_flag(&self, table_id: &str, flag: i64) -> MetaResult<()> {
        sqlx::query("UPDATE Tables SET flag = ? WHERE table_id = ?")
            .bind(flag)
            .bind(table_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the index of a collection and all its partitions.
    pub async fn set_index(&self, root: &str, engine_type: i32, params: &str) -> MetaResult<()> {
        sqlx::query(
            "UPDATE Tables SET engine_type = ?, index_params = ? WHERE table_id = ? OR owner_table = ?",
        )
        .bind(engine_type)
        .bind(params)
        .bind(root)
        .bind(root)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Drops table rows (a collection with its partitions, or one partition):
    /// their files become TO_DELETE (removed from disk later by the cleanup) and
    /// the rows are deleted at once, so the name can be reused immediately.
    pub async fn drop_tables(&self, table_ids: &[String]) -> MetaResult<()> {
        if table_ids.is_empty() {
            return Ok(());
        }
        let marks = placeholders(table_ids.len());
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE TableFiles SET file_type = ?, updated_time = ? WHERE table_id IN ({marks})"
        );
        let mut q = sqlx::query(&sql).bind(FileType::ToDelete as i32).bind(now);
        for t in table_ids {
            q = q.bind(t);
        }
        q.execute(&mut *tx).await?;
        let sql = format!("DELETE FROM Tables WHERE table_id IN ({marks})");
        let mut q = sqlx::query(&sql);
        for t in table_ids {
            q = q.bind(t);
        }
        q.execute(&mut *tx).await?;
        tx.commit().await
    }

    // ---- TableFiles ---------------------------------------------------------

    /// Files of the given tables whose type is one of `types`.
    pub async fn files_of(
        &self,
        table_ids: &[String],
        types: &[FileType],
    ) -> MetaResult<Vec<FileRow>> {
        if table_ids.is_empty() || types.is_empty() {
            return Ok(Vec::new());
        }
        let type_list = types
            .iter()
            .map(|t| (*t as i32).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE file_type IN ({type_list}) AND table_id IN ({}) ORDER BY id",
            placeholders(table_ids.len())
        );
        let mut q = sqlx::query(&sql);
        for t in table_ids {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(file_from_row).collect()
    }

    /// `(table_id, segment_id)` of every file row, whatever its type.
    pub async fn all_segment_keys(&self) -> MetaResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT table_id, segment_id FROM TableFiles")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("table_id")?, r.try_get("segment_id")?)))
            .collect()
    }

    /// Files by `TableFiles.id`, whatever their type (as Milvus' FilesByID).
    pub async fn files_by_ids(&self, ids: &[i64]) -> MetaResult<Vec<FileRow>> {
        let mut out = Vec::with_capacity(ids.len());
        // Chunked to stay far below any bind-parameter limit.
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM TableFiles WHERE id IN ({}) ORDER BY id",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(file_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Files of one table whose segment is `segment_id`.
    pub async fn files_of_segment(
        &self,
        table_ids: &[String],
        segment_id: &str,
    ) -> MetaResult<Vec<FileRow>> {
        if table_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE segment_id = ? AND {SEARCHABLE} AND table_id IN ({})",
            placeholders(table_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(segment_id);
        for t in table_ids {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(file_from_row).collect()
    }

    /// Registers a finished segment file as `file_type`. Called only after the
    /// file is durable on disk, so no row ever points at a half-written file.
    pub async fn insert_file(&self, f: &FileRow) -> MetaResult<i64> {
        let mut conn = self.pool.acquire().await?;
        insert_file_row(&mut conn, self.dialect, f).await
    }

    /// Registers a flushed segment and its table's last flushed LSN (the
    /// write-ahead log's replay starts after it) in one transaction.
    pub async fn insert_flushed_file(&self, f: &FileRow, flush_lsn: i64) -> MetaResult<i64> {
        let mut tx = self.pool.begin().await?;
        let id = insert_file_row(&mut tx, self.dialect, f).await?;
        sqlx::query("UPDATE Tables SET flush_lsn = ? WHERE table_id = ?")
            .bind(flush_lsn)
            .bind(&f.table_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Registers many files in one transaction (the bench's stub clusters
    /// describe thousands of files without writing them).
    pub async fn insert_files(&self, files: &[FileRow]) -> MetaResult<()> {
        let mut tx = self.pool.begin().await?;
        for f in files {
            insert_file_row(&mut tx, self.dialect, f).await?;
        }
        tx.commit().await
    }

    /// Registers a merged file and retires its sources in one transaction.
    pub async fn replace_files(&self, merged: &FileRow, sources: &[i64]) -> MetaResult<i64> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let id = insert_file_row(&mut tx, self.dialect, merged).await?;
        mark_to_delete(&mut tx, sources, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records deletes in a segment: the live row count and a new
    /// `updated_time` on every row of it that is not retired (the searchable
    /// one, and while it is indexed also its BACKUP raw file and a NEW_INDEX
    /// build), so that whichever row names the segment, its count points to
    /// the same version of the deletes (and read-only nodes notice it).
    pub async fn record_deletes(
        &self,
        table_id: &str,
        segment_id: &str,
        row_count: i64,
    ) -> MetaResult<()> {
        sqlx::query(
            "UPDATE TableFiles SET row_count = ?, updated_time = ? \
             WHERE table_id = ? AND segment_id = ? AND file_type <> ?",
        )
        .bind(row_count)
        .bind(now_micros())
        .bind(table_id)
        .bind(segment_id)
        .bind(FileType::ToDelete as i32)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks files TO_DELETE (their rows are all deleted, or they were replaced).
    pub async fn drop_files(&self, ids: &[i64]) -> MetaResult<()> {
        let mut conn = self.pool.acquire().await?;
        mark_to_delete(&mut conn, ids, now_micros()).await
    }

    /// TO_DELETE files marked before `older_than` (microseconds).
    pub async fn expired_files(&self, older_than: i64) -> MetaResult<Vec<FileRow>> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE file_type = ? AND updated_time < ?"
        );
        let rows = sqlx::query(&sql)
            .bind(FileType::ToDelete as i32)
            .bind(older_than)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(file_from_row).collect()
    }

    pub async fn delete_file_row(&self, id: i64) -> MetaResult<()> {
        sqlx::query("DELETE FROM TableFiles WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- Index files (Milvus' NEW_INDEX -> INDEX, RAW <-> BACKUP) -----------

    /// Publishes a finished index build in one transaction: the NEW_INDEX row
    /// `index_id` becomes INDEX (with `file_size` and the raw file's current
    /// live row count) and the raw file `raw_id` becomes BACKUP, so a search
    /// sees exactly one of them. Returns false, changing nothing, when the raw
    /// file is no longer RAW/TO_INDEX (merged, compacted or dropped meanwhile)
    /// or the index row is no longer NEW_INDEX (the index was dropped).
    pub async fn swap_in_index(
        &self,
        index_id: i64,
        raw_id: i64,
        file_size: i64,
    ) -> MetaResult<bool> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let raw = sqlx::query("SELECT file_type, row_count FROM TableFiles WHERE id = ?")
            .bind(raw_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(raw) = raw else {
            return Ok(false);
        };
        let raw_type: i32 = raw.try_get("file_type")?;
        let row_count: i64 = raw.try_get("row_count")?;
        if raw_type != FileType::Raw as i32 && raw_type != FileType::ToIndex as i32 {
            return Ok(false);
        }
        let published = sqlx::query(
            "UPDATE TableFiles SET file_type = ?, file_size = ?, row_count = ?, updated_time = ? \
             WHERE id = ? AND file_type = ?",
        )
        .bind(FileType::Index as i32)
        .bind(file_size)
        .bind(row_count)
        .bind(now)
        .bind(index_id)
        .bind(FileType::NewIndex as i32)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if published != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE TableFiles SET file_type = ?, updated_time = ? WHERE id = ?")
            .bind(FileType::Backup as i32)
            .bind(now)
            .bind(raw_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Drops the index files of `table_ids` in one transaction (Milvus'
    /// DropCollectionIndex): INDEX and NEW_INDEX rows become TO_DELETE and
    /// each INDEX row's BACKUP raw file becomes RAW again, with the index
    /// row's live row count (deletes were recorded on the index row).
    /// Returns the rows dropped.
    pub async fn drop_index_files(&self, table_ids: &[String]) -> MetaResult<Vec<FileRow>> {
        if table_ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE file_type IN (?, ?) AND table_id IN ({}) ORDER BY id",
            placeholders(table_ids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(FileType::Index as i32)
            .bind(FileType::NewIndex as i32);
        for t in table_ids {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let dropped = rows
            .iter()
            .map(file_from_row)
            .collect::<MetaResult<Vec<_>>>()?;
        for f in dropped.iter().filter(|f| f.kind() == Some(FileType::Index)) {
            sqlx::query(
                "UPDATE TableFiles SET file_type = ?, row_count = ?, updated_time = ? \
                 WHERE table_id = ? AND segment_id = ? AND file_type = ?",
            )
            .bind(FileType::Raw as i32)
            .bind(f.row_count)
            .bind(now)
            .bind(&f.table_id)
            .bind(&f.segment_id)
            .bind(FileType::Backup as i32)
            .execute(&mut *tx)
            .await?;
        }
        let ids: Vec<i64> = dropped.iter().map(|f| f.id).collect();
        mark_to_delete(&mut tx, &ids, now).await?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// Rows of the given type in every table (startup: abandoned NEW_INDEX builds).
    pub async fn files_of_type(&self, file_type: FileType) -> MetaResult<Vec<FileRow>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM TableFiles WHERE file_type = ?");
        let rows = sqlx::query(&sql)
            .bind(file_type as i32)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(file_from_row).collect()
    }
}

async fn insert_file_row(
    conn: &mut AnyConnection,
    dialect: Dialect,
    f: &FileRow,
) -> MetaResult<i64> {
    let sql = format!(
        "INSERT INTO TableFiles ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){}",
        &FILE_COLUMNS["id, ".len()..],
        returning_id(dialect)
    );
    let q = sqlx::query(&sql)
        .bind(&f.table_id)
        .bind(&f.segment_id)
        .bind(f.engine_type)
        .bind(&f.file_id)
        .bind(f.file_type)
        .bind(f.file_size)
        .bind(f.row_count)
        .bind(f.updated_time)
        .bind(f.created_on)
        .bind(f.date)
        .bind(f.flush_lsn);
    insert_returning_id(conn, dialect, q).await
}

/// sqlx's `Any` driver reports `last_insert_id` for MySQL but not for SQLite,
/// so SQLite inserts use `RETURNING id` (SQLite 3.35+). MySQL 5.7/8 lack
/// `RETURNING`, hence the two paths.
fn returning_id(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => " RETURNING id",
        Dialect::MySql => "",
    }
}

async fn insert_returning_id<'q>(
    conn: &mut AnyConnection,
    dialect: Dialect,
    q: Query<'q, Any, AnyArguments<'q>>,
) -> MetaResult<i64> {
    match dialect {
        Dialect::Sqlite => q.fetch_one(&mut *conn).await?.try_get(0),
        Dialect::MySql => Ok(q
            .execute(&mut *conn)
            .await?
            .last_insert_id()
            .unwrap_or_default()),
    }
}

/// Sets `file_type = TO_DELETE` (and the time it happened) on files by id.
async fn mark_to_delete(conn: &mut AnyConnection, ids: &[i64], now: i64) -> MetaResult<()> {
    // Chunked to stay far below any bind-parameter limit.
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE TableFiles SET file_type = ?, updated_time = ? WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(FileType::ToDelete as i32).bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{fixtures, MetaUri};

    #[tokio::test]
    async fn sqlite_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let uri = MetaUri::parse(&format!("sqlite://{}", path.display()), None).unwrap();
        let store = MetaStore::connect(&uri, 2).await.unwrap();
        let row = fixtures::table(0, "c1", "", "");
        store.insert_table(&row).await.unwrap();
        assert!(
            store.insert_table(&row).await.is_err(),
            "duplicate table_id"
        );
        let got = store.table("c1").await.unwrap().unwrap();
        assert_eq!(got.dimension, 4);
        let file = fixtures::file(0, "c1", 2);
        let id = store.insert_file(&file).await.unwrap();
        assert!(id > 0);
        let files = store
            .files_of(&["c1".into()], &[FileType::Raw])
            .await
            .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].id, id);
        store.drop_tables(&["c1".into()]).await.unwrap();
        assert!(store.table("c1").await.unwrap().is_none());
        assert!(store.all_searchable_files().await.unwrap().is_empty());
        assert_eq!(
            store.expired_files(now_micros() + 1).await.unwrap().len(),
            1
        );
    }
}
