//! The Milvus 1.1 metadata database (MySQL or SQLite) through sqlx's `Any`
//! driver: connecting from a Milvus `meta_uri`, creating the schema, and the
//! typed queries the node and the proxy's topology need. One code path serves
//! both dialects; only the DDL differs (`schema`).
//!
//! This file connects and holds the row types and their decoding; `uri`
//! parses the URI, `snapshot_reads` holds what the proxy reads and
//! `node_store` what a node reads and writes, `id_mark` the proxy's one write
//! (the shard-groups id-mode mark).

mod id_mark;
mod node_store;
pub mod schema;
mod snapshot_reads;
mod uri;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::types::FileType;

pub use snapshot_reads::Fingerprint;
pub use uri::{redact_uris_in, redacted, MetaLocation, MetaUri};

pub type MetaResult<T> = Result<T, sqlx::Error>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Sqlite,
}

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

    async fn ensure_schema(&self) -> MetaResult<()> {
        for stmt in schema::create_statements(self.dialect) {
            self.pool.execute(stmt.as_str()).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Row builders for unit tests of modules that read metadata rows.
#[cfg(test)]
pub(crate) mod fixtures {
    #![allow(clippy::unwrap_used)] // test fixtures
    use std::future::Future;

    use super::{CollectionRow, FileRow, MetaStore, MetaUri};

    /// Runs `test` on a store over a fresh SQLite file.
    pub async fn on_sqlite<F: Future<Output = ()>>(test: impl FnOnce(MetaStore) -> F) {
        let dir = tempfile::tempdir().unwrap();
        let uri =
            MetaUri::parse(&format!("sqlite://{}/m.sqlite", dir.path().display()), None).unwrap();
        test(MetaStore::connect(&uri, 2).await.unwrap()).await;
    }

    /// Runs `test` on a store over a scratch MySQL database `<prefix>_<pid>`
    /// of `MISHARDS_TEST_MYSQL`, dropped afterwards (also when `test`
    /// fails); skipped, saying so, when the variable is unset.
    pub async fn on_scratch_mysql<F>(
        test_name: &str,
        prefix: &str,
        test: impl FnOnce(MetaStore) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(server) = std::env::var("MISHARDS_TEST_MYSQL") else {
            eprintln!("SKIPPED {test_name}: set MISHARDS_TEST_MYSQL=mysql://root@127.0.0.1:3306");
            return;
        };
        sqlx::any::install_default_drivers();
        let db = format!("{prefix}_{}", std::process::id());
        let admin = sqlx::AnyPool::connect(&format!("{server}/mysql"))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        let uri = MetaUri::parse(&format!("{server}/{db}"), None).unwrap();
        let store = MetaStore::connect(&uri, 2).await.unwrap();
        let outcome = tokio::spawn(test(store.clone())).await;
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        outcome.unwrap();
    }

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
}
