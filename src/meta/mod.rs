//! The Milvus 1.1 metadata database (MySQL or SQLite) through sqlx's `Any`
//! driver: connecting from a Milvus `meta_uri`, creating the schema, and the
//! typed queries the node and the proxy's topology need. One code path serves
//! both dialects; only the DDL differs (`schema`).

pub mod schema;
mod uri;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use crate::types::{FileType, TABLE_STATE_NORMAL};

pub use uri::{redacted, MetaLocation, MetaUri};

pub type MetaResult<T> = Result<T, sqlx::Error>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Sqlite,
}

/// See [`MetaStore::fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint([i64; 7]);

/// A row of `Tables`: a collection (`owner_table == ""`) or one of its partitions.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionRow {
    pub id: i64,
    pub table_id: String,
    pub state: i32,
    pub dimension: i64,
    pub created_on: i64,
    pub flag: i64,
    /// Bytes (the API speaks megabytes).
    pub index_file_size: i64,
    pub engine_type: i32,
    pub index_params: String,
    pub metric_type: i32,
    pub owner_table: String,
    pub partition_tag: String,
    pub version: String,
    pub flush_lsn: i64,
}

impl CollectionRow {
    pub fn is_partition(&self) -> bool {
        !self.owner_table.is_empty()
    }
}

/// A row of `TableFiles`: one segment file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRow {
    /// The file id of SearchInFiles, ReloadSegments and the hash ring.
    pub id: i64,
    pub table_id: String,
    pub segment_id: String,
    pub engine_type: i32,
    pub file_id: String,
    pub file_type: i32,
    pub file_size: i64,
    pub row_count: i64,
    pub updated_time: i64,
    pub created_on: i64,
    pub date: i32,
    pub flush_lsn: i64,
}

impl FileRow {
    pub fn kind(&self) -> Option<FileType> {
        FileType::from_i32(self.file_type)
    }
}

const TABLE_COLUMNS: &str = "id, table_id, state, dimension, created_on, flag, index_file_size, \
     engine_type, index_params, metric_type, owner_table, partition_tag, version, flush_lsn";
const FILE_COLUMNS: &str = "id, table_id, segment_id, engine_type, file_id, file_type, file_size, \
     row_count, updated_time, created_on, date, flush_lsn";
/// `file_type IN (RAW, TO_INDEX, INDEX)`.
const SEARCHABLE: &str = "file_type IN (1, 2, 3)";

fn collection_from_row(r: &AnyRow) -> MetaResult<CollectionRow> {
    Ok(CollectionRow {
        id: r.try_get("id")?,
        table_id: r.try_get("table_id")?,
        state: r.try_get("state")?,
        dimension: r.try_get("dimension")?,
        created_on: r.try_get("created_on")?,
        flag: r.try_get("flag")?,
        index_file_size: r.try_get("index_file_size")?,
        engine_type: r.try_get("engine_type")?,
        index_params: r.try_get("index_params")?,
        metric_type: r.try_get("metric_type")?,
        owner_table: r.try_get("owner_table")?,
        partition_tag: r.try_get("partition_tag")?,
        version: r
            .try_get::<Option<String>, _>("version")?
            .unwrap_or_default(),
        flush_lsn: r.try_get("flush_lsn")?,
    })
}

fn file_from_row(r: &AnyRow) -> MetaResult<FileRow> {
    Ok(FileRow {
        id: r.try_get("id")?,
        table_id: r.try_get("table_id")?,
        segment_id: r.try_get("segment_id")?,
        engine_type: r.try_get("engine_type")?,
        file_id: r.try_get("file_id")?,
        file_type: r.try_get("file_type")?,
        file_size: r.try_get("file_size")?,
        row_count: r.try_get("row_count")?,
        updated_time: r.try_get("updated_time")?,
        created_on: r.try_get("created_on")?,
        date: r.try_get("date")?,
        flush_lsn: r.try_get("flush_lsn")?,
    })
}

/// Microseconds since the Unix epoch, the unit of every Milvus timestamp column.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `TableFiles.date`: (year-1900)*10000 + (month-1)*100 + day, in UTC.
pub fn milvus_date(micros: i64) -> i32 {
    let days = micros.div_euclid(86_400_000_000);
    // Civil-from-days (Howard Hinnant's algorithm); hand-written to avoid a
    // calendar dependency for one column.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    ((year - 1900) * 10_000 + (month - 1) * 100 + day) as i32
}

/// A connection pool to the metadata database.
#[derive(Clone, Debug)]
pub struct MetaStore {
    pool: AnyPool,
    dialect: Dialect,
}

impl MetaStore {
    /// Connects (creating a SQLite file if needed) and creates any missing
    /// table: what a Milvus node does at startup.
    pub async fn connect(uri: &MetaUri, max_connections: u32) -> MetaResult<Self> {
        let store = Self::open(uri, max_connections).await?;
        store.ensure_schema().await?;
        Ok(store)
    }

    /// Connects without touching the schema: the proxy only reads the
    /// metadata of a cluster whose nodes own it. Until the nodes have created
    /// the tables, reads fail (and the proxy reports it).
    pub async fn connect_read_only(uri: &MetaUri, max_connections: u32) -> MetaResult<Self> {
        Self::open(uri, max_connections).await
    }

    async fn open(uri: &MetaUri, max_connections: u32) -> MetaResult<Self> {
        sqlx::any::install_default_drivers();
        let dialect = uri.dialect();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // Several nodes (and the proxy) share the file: wait on locks instead of failing.
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&uri.sqlx_url)
            .await?;
        Ok(Self { pool, dialect })
    }

    fn returning_id(&self) -> &'static str {
        returning_id(self.dialect)
    }

    async fn ensure_schema(&self) -> MetaResult<()> {
        for stmt in schema::create_statements(self.dialect) {
            self.pool.execute(stmt.as_str()).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
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

    /// Every live table row: collections and partitions.
    pub async fn all_tables(&self) -> MetaResult<Vec<CollectionRow>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM Tables WHERE state = ? ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(TABLE_STATE_NORMAL)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(collection_from_row).collect()
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

    /// Registers a merged file and retires its sources in one transaction.
    pub async fn replace_files(&self, merged: &FileRow, sources: &[i64]) -> MetaResult<i64> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let id = insert_file_row(&mut tx, self.dialect, merged).await?;
        mark_to_delete(&mut tx, sources, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records deletes in a file: its live row count and a new `updated_time`
    /// (which is how read-only nodes notice they must reload deleted docs).
    pub async fn update_file_rows(&self, id: i64, row_count: i64) -> MetaResult<()> {
        sqlx::query("UPDATE TableFiles SET row_count = ?, updated_time = ? WHERE id = ?")
            .bind(row_count)
            .bind(now_micros())
            .bind(id)
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

/// Row builders for unit tests of modules that read metadata rows.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{CollectionRow, FileRow};

    /// A live L2 collection row (dimension 4, FLAT); `owner`/`tag` make it a partition.
    pub fn table(id: i64, table_id: &str, owner: &str, tag: &str) -> CollectionRow {
        CollectionRow {
            id,
            table_id: table_id.into(),
            state: 0,
            dimension: 4,
            created_on: 0,
            flag: 0,
            index_file_size: 1 << 30,
            engine_type: 1,
            index_params: "{}".into(),
            metric_type: 1,
            owner_table: owner.into(),
            partition_tag: tag.into(),
            version: String::new(),
            flush_lsn: 0,
        }
    }

    /// A RAW file of `table` holding `rows` entities.
    pub fn file(id: i64, table: &str, rows: i64) -> FileRow {
        FileRow {
            id,
            table_id: table.into(),
            segment_id: id.to_string(),
            engine_type: 1,
            file_id: id.to_string(),
            file_type: 1,
            file_size: 10,
            row_count: rows,
            updated_time: 0,
            created_on: 0,
            date: 0,
            flush_lsn: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milvus_date_matches_reference_example() {
        // 2021-06-16 -> 1210516 (reference §3.2).
        let micros = 1_623_844_800_000_000; // 2021-06-16T12:00:00Z
        assert_eq!(milvus_date(micros), 1_210_516);
        assert_eq!(milvus_date(0), 700_001);
    }

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
        let id = store.insert_file(&file).await.unwrap();
        let with_file = store.fingerprint().await.unwrap();
        assert_ne!(with_file, indexed, "new file");
        tokio::time::sleep(Duration::from_millis(2)).await;
        store.update_file_rows(id, 1).await.unwrap();
        let deleted = store.fingerprint().await.unwrap();
        assert_ne!(deleted, with_file, "rows deleted in a file");
        store.drop_tables(&["fp".into()]).await.unwrap();
        assert_ne!(store.fingerprint().await.unwrap(), deleted, "dropped");
        row.table_id = "fp2".into();
        store.insert_table(&row).await.unwrap();
    }

    #[tokio::test]
    async fn fingerprint_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let uri =
            MetaUri::parse(&format!("sqlite://{}/m.sqlite", dir.path().display()), None).unwrap();
        let store = MetaStore::connect(&uri, 2).await.unwrap();
        fingerprint_tracks_changes(&store).await;
    }

    #[tokio::test]
    async fn fingerprint_on_mysql() {
        let Ok(server) = std::env::var("MISHARDS_TEST_MYSQL") else {
            eprintln!(
                "SKIPPED fingerprint_on_mysql: set MISHARDS_TEST_MYSQL=mysql://root@127.0.0.1:3306"
            );
            return;
        };
        sqlx::any::install_default_drivers();
        let db = format!("mishards_meta_{}", std::process::id());
        let admin = sqlx::AnyPool::connect(&format!("{server}/mysql"))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        let uri = MetaUri::parse(&format!("{server}/{db}"), None).unwrap();
        let store = MetaStore::connect(&uri, 2).await.unwrap();
        let outcome = tokio::spawn({
            let store = store.clone();
            async move { fingerprint_tracks_changes(&store).await }
        })
        .await;
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        outcome.unwrap();
    }

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
