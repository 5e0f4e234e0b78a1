//! An in-process cluster for the scenarios: one writable node, N read-only
//! nodes and (unless asked otherwise) the proxy, on 127.0.0.1 ephemeral ports,
//! sharing one metadata database (SQLite or a throw-away MySQL database) and
//! one storage: a local directory, or a JuiceFS volume mounted once per node.

use std::net::SocketAddr;
use std::time::Duration;

use mishards::config::Config;
use mishards::node::{self, NodeOptions, Role, RunningNode};
use mishards::proxy::{self, RunningProxy};
use rand::Rng;
use sqlx::Connection;

use super::calls::{create_collection, Client};
use super::collection::TestCollection;

/// Environment variable with the MySQL server URL, e.g. `mysql://root@127.0.0.1:3306`.
pub const MYSQL_ENV: &str = "MISHARDS_TEST_MYSQL";

/// Which metadata database the cluster shares.
#[derive(Clone, Debug)]
pub enum MetaKind {
    Sqlite,
    /// The server URL without a database.
    MySql(String),
}

impl MetaKind {
    /// The MySQL variant, or `None` (with a printed note) when the env var is unset.
    pub fn mysql_or_skip(test: &str) -> Option<MetaKind> {
        match std::env::var(MYSQL_ENV) {
            Ok(url) if !url.trim().is_empty() => Some(MetaKind::MySql(url.trim().to_string())),
            _ => {
                eprintln!("SKIPPED {test}: set {MYSQL_ENV}=mysql://user@host:port to run it");
                None
            }
        }
    }

    /// "sqlite" or "mysql", to say in assertion messages which run failed.
    pub fn label(&self) -> &'static str {
        match self {
            MetaKind::Sqlite => "sqlite",
            MetaKind::MySql(_) => "mysql",
        }
    }
}

/// Where the nodes of a cluster keep their segment files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// One local directory every node shares: a file one node renames is
    /// visible to all the others at once.
    Local,
    /// One JuiceFS volume mounted once per node (see `juicefs`): each node
    /// sees the others' files through its own client's caches.
    JuiceFs,
}

/// The metadata database and the storage a scenario runs on.
#[derive(Clone, Debug)]
pub struct Setup {
    pub meta: MetaKind,
    pub storage: Storage,
}

impl Setup {
    /// "sqlite", "mysql", "juicefs+sqlite" or "juicefs+mysql", to say in
    /// assertion messages which run failed.
    pub fn label(&self) -> &'static str {
        match (self.storage, &self.meta) {
            (Storage::Local, meta) => meta.label(),
            (Storage::JuiceFs, MetaKind::Sqlite) => "juicefs+sqlite",
            (Storage::JuiceFs, MetaKind::MySql(_)) => "juicefs+mysql",
        }
    }
}

impl From<&MetaKind> for Setup {
    fn from(meta: &MetaKind) -> Setup {
        Setup {
            meta: meta.clone(),
            storage: Storage::Local,
        }
    }
}

impl From<&Setup> for Setup {
    fn from(setup: &Setup) -> Setup {
        setup.clone()
    }
}

/// Runs each scenario `async fn name(setup: Setup)` as two tests on a local
/// directory, `name::sqlite` and `name::mysql` (the latter skipped with a
/// note when `MISHARDS_TEST_MYSQL` is unset).
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario((&$crate::common::MetaKind::Sqlite).into()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                let test = concat!(stringify!($scenario), "::mysql");
                if let Some(kind) = $crate::common::MetaKind::mysql_or_skip(test) {
                    super::$scenario((&kind).into()).await;
                }
            }
        }
    )*};
}
pub(crate) use on_both_databases;

/// Like [`on_both_databases`], plus the same two on JuiceFS:
/// `name::juicefs_sqlite` and `name::juicefs_mysql` (skipped with a note
/// where JuiceFS cannot run, see `juicefs::available_or_skip`).
macro_rules! on_every_storage {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use $crate::common::{MetaKind, Setup, Storage};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario((&MetaKind::Sqlite).into()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                let test = concat!(stringify!($scenario), "::mysql");
                if let Some(kind) = MetaKind::mysql_or_skip(test) {
                    super::$scenario((&kind).into()).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn juicefs_sqlite() {
                let test = concat!(stringify!($scenario), "::juicefs_sqlite");
                if $crate::common::juicefs::available_or_skip(test) {
                    let meta = MetaKind::Sqlite;
                    super::$scenario(Setup { meta, storage: Storage::JuiceFs }).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn juicefs_mysql() {
                let test = concat!(stringify!($scenario), "::juicefs_mysql");
                let Some(meta) = MetaKind::mysql_or_skip(test) else { return };
                if $crate::common::juicefs::available_or_skip(test) {
                    super::$scenario(Setup { meta, storage: Storage::JuiceFs }).await;
                }
            }
        }
    )*};
}
pub(crate) use on_every_storage;

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A uniquely named MySQL database, dropped when this guard is dropped
/// (also when the test panics).
pub struct MysqlDatabase {
    admin_url: String,
    pub name: String,
    /// The `mysql://.../<name>` URI for the nodes and the proxy.
    pub uri: String,
}

impl MysqlDatabase {
    pub async fn create(server_url: &str) -> MysqlDatabase {
        let mut url = url::Url::parse(server_url).expect("MISHARDS_TEST_MYSQL is a URL");
        url.set_path("");
        url.set_query(None);
        let admin_url = url.to_string().trim_end_matches('/').to_string();
        let name = format!("mishards_t_{:016x}", rand::rng().random::<u64>());
        let mut conn = sqlx::mysql::MySqlConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        let uri = format!("{admin_url}/{name}");
        MysqlDatabase {
            admin_url,
            name,
            uri,
        }
    }
}

impl Drop for MysqlDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Own thread and runtime: Drop may run inside (or outside) a tokio runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::mysql::MySqlConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

/// How the writable node of a cluster merges.
#[derive(Clone, Copy, Debug)]
pub struct WriterTiming {
    pub merge_interval: Duration,
    pub cleanup_delay: Duration,
}

impl WriterTiming {
    /// No background merges: every flush stays its own segment file.
    pub const NO_MERGES: WriterTiming = WriterTiming {
        merge_interval: Duration::ZERO,
        cleanup_delay: Duration::from_secs(10),
    };
}

/// The read-only nodes a cluster has unless told otherwise.
pub const READERS: usize = 3;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn client_of(addr: SocketAddr) -> Client {
    mishards::grpc::client(
        &addr.to_string(),
        Duration::from_secs(3),
        mishards::grpc::DEFAULT_MAX_MESSAGE_SIZE,
    )
    .expect("a client for a loopback address")
}

/// A proxy config on ephemeral loopback ports (server and metrics) over
/// `meta_uri`, with `writable` and `readonly` as its backends; every other
/// setting is the default.
pub fn proxy_config(meta_uri: &str, writable: &str, readonly: Vec<String>) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".to_string();
    config.metrics.listen = "127.0.0.1:0".to_string();
    config.http_api.listen = "127.0.0.1:0".to_string();
    config.meta.uri = meta_uri.to_string();
    config.backends.writable = writable.to_string();
    config.backends.readonly = readonly;
    config
}

/// What [`Cluster`] to start: `Cluster::with(&setup).readers(0).merging(t).start()`.
pub struct ClusterBuilder {
    setup: Setup,
    readers: usize,
    timing: WriterTiming,
}

impl ClusterBuilder {
    /// How many read-only nodes (the proxy is configured with exactly these;
    /// with none it sends searches to the writer).
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// How the writer merges (default: [`WriterTiming::NO_MERGES`]).
    pub fn merging(mut self, timing: WriterTiming) -> Self {
        self.timing = timing;
        self
    }

    pub async fn start(self) -> Cluster {
        init_logging();
        let data_dir = tempfile::tempdir().expect("tempdir");
        // On JuiceFS each node has its own mount; SQLite stays on local disk
        // (its locking and WAL do not work across JuiceFS clients).
        let mut volume = (self.setup.storage == Storage::JuiceFs)
            .then(|| super::juicefs::Volume::format(self.setup.label()));
        let mut node_dir = |label: &str| match volume.as_mut() {
            Some(v) => v.mount(label),
            None => data_dir.path().to_path_buf(),
        };
        let writer_dir = node_dir("writer");
        let reader_dirs: Vec<_> = (0..self.readers)
            .map(|i| node_dir(&format!("reader{i}")))
            .collect();
        let (meta_uri, database) = match &self.setup.meta {
            MetaKind::Sqlite => (
                format!("sqlite://{}/db/meta.sqlite", data_dir.path().display()),
                None,
            ),
            MetaKind::MySql(server) => {
                let db = MysqlDatabase::create(server).await;
                (db.uri.clone(), Some(db))
            }
        };
        std::fs::create_dir_all(data_dir.path().join("db")).expect("local db folder");
        let node_options = |role: Role, dir: &std::path::Path| {
            let mut o = NodeOptions::new(role, loopback(), dir.to_path_buf(), meta_uri.clone());
            o.flush_interval = Duration::from_secs(1);
            o.merge_interval = self.timing.merge_interval;
            o.cleanup_delay = self.timing.cleanup_delay;
            o.cache_bytes = 256 << 20;
            o
        };
        // The writer first: it creates the schema the others then find.
        let writer = node::start(node_options(Role::Writable, &writer_dir))
            .await
            .expect("writable node starts");
        let mut readers = Vec::new();
        for dir in &reader_dirs {
            readers.push(Some(
                node::start(node_options(Role::ReadOnly, dir))
                    .await
                    .expect("read-only node starts"),
            ));
        }
        let reader_addrs = readers
            .iter()
            .flatten()
            .map(|r| r.addr.to_string())
            .collect();
        let mut config = proxy_config(&meta_uri, &writer.addr.to_string(), reader_addrs);
        config.backends.connect_timeout = Duration::from_secs(1);
        // CreateIndex answers once its indexes are built (as in Milvus):
        // slow in debug builds on a loaded machine.
        config.backends.request_timeout = Duration::from_secs(120);
        config.backends.search_timeout = Duration::from_secs(20);
        config.topology.refresh_interval = Duration::from_millis(100);
        let proxy = proxy::start(config).await.expect("proxy starts");
        let client = client_of(proxy.addr);
        Cluster {
            kind: self.setup.meta.clone(),
            setup: self.setup,
            meta_uri,
            proxy: Some(proxy),
            writer: Some(writer),
            readers,
            client,
            _volume: volume,
            _data_dir: data_dir,
            _database: database,
        }
    }
}

/// The value of one series in the proxy's metrics text (summed over the
/// lines that start with `series`; 0 when absent).
pub fn metric(proxy: &mishards::proxy::RunningProxy, series: &str) -> f64 {
    let text = proxy.metrics.encode();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// One writable node, read-only nodes and the proxy in front of them.
pub struct Cluster {
    /// The metadata database the cluster shares.
    pub kind: MetaKind,
    /// That database and the storage.
    pub setup: Setup,
    /// Its URI, for another proxy over the same cluster (and tests/guard.rs).
    pub meta_uri: String,
    pub proxy: Option<RunningProxy>,
    pub writer: Option<RunningNode>,
    pub readers: Vec<Option<RunningNode>>,
    /// A client of the proxy.
    pub client: Client,
    // Dropped last: the storage and the database outlive the servers.
    _volume: Option<super::juicefs::Volume>,
    _data_dir: tempfile::TempDir,
    _database: Option<MysqlDatabase>,
}

impl Cluster {
    /// A cluster of [`READERS`] read-only nodes whose writer never merges.
    pub async fn start(setup: impl Into<Setup>) -> Cluster {
        Cluster::with(setup).start().await
    }

    /// A cluster to configure before it starts.
    pub fn with(setup: impl Into<Setup>) -> ClusterBuilder {
        ClusterBuilder {
            setup: setup.into(),
            readers: READERS,
            timing: WriterTiming::NO_MERGES,
        }
    }

    /// Creates a collection through the proxy, and a handle on it.
    pub async fn collection(&self, name: &str, dim: usize, metric: i32) -> TestCollection {
        let mut client = self.client.clone();
        create_collection(&mut client, name, dim as i64, metric).await;
        TestCollection::new(client, self.setup.label(), name, dim, metric)
    }

    /// A client of the writable node itself, bypassing the proxy.
    pub fn writer_client(&self) -> Client {
        client_of(self.writer.as_ref().expect("writer runs").addr)
    }

    pub fn reader_addrs(&self) -> Vec<SocketAddr> {
        self.readers.iter().flatten().map(|r| r.addr).collect()
    }

    /// Stops read-only node `i` (its files must move to the next ring node).
    pub async fn stop_reader(&mut self, i: usize) -> SocketAddr {
        let node = self.readers[i].take().expect("reader is running");
        let addr = node.addr;
        node.stop().await.expect("read-only node stops cleanly");
        addr
    }

    /// Stops the writable node; the proxy and the read-only nodes go on.
    pub async fn stop_writer(&mut self) {
        let writer = self.writer.take().expect("writer runs");
        writer.stop().await.expect("writer stops");
    }

    /// Stops the proxy, then every node; the database and directory go last.
    pub async fn stop(mut self) {
        if let Some(p) = self.proxy.take() {
            p.stop(Duration::from_secs(2)).await.expect("proxy stops");
        }
        for r in self.readers.iter_mut() {
            if let Some(r) = r.take() {
                r.stop().await.expect("read-only node stops");
            }
        }
        if let Some(w) = self.writer.take() {
            w.stop().await.expect("writable node stops");
        }
    }
}
