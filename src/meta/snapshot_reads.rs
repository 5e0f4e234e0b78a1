//! What the proxy reads from the metadata database for a topology snapshot:
//! every live collection and partition, every searchable file, and the cheap
//! fingerprint that tells whether anything of that changed.

use sqlx::Row;

use super::{
    collection_from_row, file_from_row, CollectionRow, FileRow, MetaResult, MetaStore,
    FILE_COLUMNS, SEARCHABLE, TABLE_COLUMNS,
};
use crate::types::TABLE_STATE_NORMAL;

/// See [`MetaStore::fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint([i64; 7]);

impl MetaStore {
    /// Every live table row: collections and partitions.
    pub async fn all_tables(&self) -> MetaResult<Vec<CollectionRow>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM Tables WHERE state = ? ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(TABLE_STATE_NORMAL)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(collection_from_row).collect()
    }

    /// Every searchable file (RAW, TO_INDEX, INDEX) of every table.
    pub async fn all_searchable_files(&self) -> MetaResult<Vec<FileRow>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM TableFiles WHERE {SEARCHABLE} ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(file_from_row).collect()
    }

    /// A cheap digest of everything a topology snapshot holds: it changes
    /// whenever a live table appears, disappears or changes schema or index
    /// type, and whenever a searchable file appears, disappears or is updated
    /// (every file update stamps a newer `updated_time`; ids only grow).
    pub async fn fingerprint(&self) -> MetaResult<Fingerprint> {
        // CAST(.. AS SIGNED): MySQL sums BIGINT as DECIMAL, which `Any` cannot
        // decode; SQLite reads SIGNED as a numeric cast, so one query fits both.
        let tables = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(id), 0) AS SIGNED) AS ids,              CAST(COALESCE(SUM(engine_type * 64 + metric_type), 0) AS SIGNED) AS kinds,              CAST(COALESCE(SUM(dimension), 0) AS SIGNED) AS dims              FROM Tables WHERE state = ?",
        )
        .bind(TABLE_STATE_NORMAL)
        .fetch_one(&self.pool)
        .await?;
        let files = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(id), 0) AS SIGNED) AS ids,              COALESCE(MAX(updated_time), 0) AS latest FROM TableFiles WHERE {SEARCHABLE}"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(Fingerprint([
            tables.try_get("n")?,
            tables.try_get("ids")?,
            tables.try_get("kinds")?,
            tables.try_get("dims")?,
            files.try_get("n")?,
            files.try_get("ids")?,
            files.try_get("latest")?,
        ]))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::meta::fixtures::{self, on_scratch_mysql, on_sqlite};

    /// The fingerprint moves with every change a snapshot cares about, and
    /// only then. Run against SQLite, and MySQL when MISHARDS_TEST_MYSQL is set.
    async fn fingerprint_tracks_changes(store: &MetaStore) {
        let empty = store.fingerprint().await.unwrap();
        assert_eq!(
            empty,
            store.fingerprint().await.unwrap(),
            "stable without changes"
        );
        let mut row = fixtures::table(0, "fp", "", "");
        store.insert_table(&row).await.unwrap();
        let created = store.fingerprint().await.unwrap();
        assert_ne!(created, empty);
        store.set_index("fp", 2, "{\"nlist\":4}").await.unwrap();
        let indexed = store.fingerprint().await.unwrap();
        assert_ne!(indexed, created, "index type change");
        let file = fixtures::file(0, "fp", 2);
        store.insert_file(&file).await.unwrap();
        let with_file = store.fingerprint().await.unwrap();
        assert_ne!(with_file, indexed, "new file");
        tokio::time::sleep(Duration::from_millis(2)).await;
        store
            .record_deletes("fp", &file.segment_id, 1)
            .await
            .unwrap();
        let deleted = store.fingerprint().await.unwrap();
        assert_ne!(deleted, with_file, "rows deleted in a file");
        store.drop_tables(&["fp".into()]).await.unwrap();
        assert_ne!(store.fingerprint().await.unwrap(), deleted, "dropped");
        row.table_id = "fp2".into();
        store.insert_table(&row).await.unwrap();
    }

    #[tokio::test]
    async fn fingerprint_on_sqlite() {
        on_sqlite(|store| async move { fingerprint_tracks_changes(&store).await }).await;
    }

    #[tokio::test]
    async fn fingerprint_on_mysql() {
        on_scratch_mysql(
            "fingerprint_on_mysql",
            "mishards_meta",
            |store| async move { fingerprint_tracks_changes(&store).await },
        )
        .await;
    }
}
