//! Test support: an in-process cluster (one writable node, three read-only
//! nodes and the proxy on 127.0.0.1 ephemeral ports, sharing one directory
//! and one metadata database: SQLite or a throw-away MySQL database), and a
//! brute-force search oracle to check results against.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use mishards::config::Config;
use mishards::node::{self, NodeOptions, Role, RunningNode};
use mishards::proxy::{self, RunningProxy};
use mishards::wire::milvus_service_client::MilvusServiceClient;
use mishards::wire::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use tonic::transport::Channel;

pub type Client = MilvusServiceClient<Channel>;

/// Environment variable with the MySQL server URL, e.g. `mysql://root@127.0.0.1:3306`.
pub const MYSQL_ENV: &str = "MISHARDS_TEST_MYSQL";

pub const L2: i32 = 1;
pub const IP: i32 = 2;
pub const HAMMING: i32 = 3;

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
}

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

/// One writable node, three read-only nodes and the proxy in front of them.
pub struct Cluster {
    pub proxy: Option<RunningProxy>,
    pub writer: Option<RunningNode>,
    pub readers: Vec<Option<RunningNode>>,
    /// A client of the proxy.
    pub client: Client,
    /// The metadata database every server of the cluster uses.
    pub meta_uri: String,
    // Dropped last: the directory and the database outlive the servers.
    _data_dir: tempfile::TempDir,
    _database: Option<MysqlDatabase>,
}

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

impl Cluster {
    pub async fn start(kind: &MetaKind, timing: WriterTiming) -> Cluster {
        init_logging();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let (meta_uri, database) = match kind {
            MetaKind::Sqlite => (
                format!("sqlite://{}/db/meta.sqlite", data_dir.path().display()),
                None,
            ),
            MetaKind::MySql(server) => {
                let db = MysqlDatabase::create(server).await;
                (db.uri.clone(), Some(db))
            }
        };
        let node_options = |role: Role| {
            let mut o = NodeOptions::new(
                role,
                loopback(),
                data_dir.path().to_path_buf(),
                meta_uri.clone(),
            );
            o.flush_interval = Duration::from_secs(1);
            o.merge_interval = timing.merge_interval;
            o.cleanup_delay = timing.cleanup_delay;
            o.cache_bytes = 256 << 20;
            o
        };
        // The writer first: it creates the schema the others then find.
        let writer = node::start(node_options(Role::Writable))
            .await
            .expect("writable node starts");
        let mut readers = Vec::new();
        for _ in 0..READERS {
            readers.push(Some(
                node::start(node_options(Role::ReadOnly))
                    .await
                    .expect("read-only node starts"),
            ));
        }
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".to_string();
        config.metrics.listen = "127.0.0.1:0".to_string();
        config.meta.uri = meta_uri.clone();
        config.backends.writable = writer.addr.to_string();
        // Filled with the read-only nodes below; `proxy_config` leaves it empty.
        config.backends.readonly = readers
            .iter()
            .flatten()
            .map(|r| r.addr.to_string())
            .collect();
        config.backends.connect_timeout = Duration::from_secs(1);
        config.backends.request_timeout = Duration::from_secs(20);
        config.backends.search_timeout = Duration::from_secs(20);
        config.topology.refresh_interval = Duration::from_millis(100);
        let proxy = proxy::start(config).await.expect("proxy starts");
        let client = client_of(proxy.addr);
        Cluster {
            proxy: Some(proxy),
            writer: Some(writer),
            readers,
            client,
            meta_uri,
            _data_dir: data_dir,
            _database: database,
        }
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

// ---- calls ------------------------------------------------------------------

/// The reply of a call that must not fail at the gRPC level.
pub fn grpc_ok<T>(what: &str, result: Result<tonic::Response<T>, tonic::Status>) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(s) => panic!(
            "{what}: gRPC error {:?} ({}) instead of a Milvus status",
            s.code(),
            s.message()
        ),
    }
}

pub fn code_of(status: &Option<Status>) -> i32 {
    status.as_ref().map_or(0, |s| s.error_code)
}

pub fn assert_ok(what: &str, status: &Option<Status>) {
    if let Some(s) = status.as_ref().filter(|s| s.error_code != 0) {
        panic!("{what}: code {} ({})", s.error_code, s.reason);
    }
}

pub fn assert_status_ok(what: &str, status: &Status) {
    assert_eq!(status.error_code, 0, "{what}: {}", status.reason);
}

pub async fn create_collection(c: &mut Client, name: &str, dim: i64, metric: i32) {
    let status = grpc_ok(
        "CreateCollection",
        c.create_collection(CollectionSchema {
            status: None,
            collection_name: name.to_string(),
            dimension: dim,
            index_file_size: 1024,
            metric_type: metric,
            extra_params: vec![],
        })
        .await,
    );
    assert_status_ok(&format!("CreateCollection {name}"), &status);
}

pub async fn create_partition(c: &mut Client, name: &str, tag: &str) {
    let status = grpc_ok(
        "CreatePartition",
        c.create_partition(PartitionParam {
            collection_name: name.to_string(),
            tag: tag.to_string(),
        })
        .await,
    );
    assert_status_ok(&format!("CreatePartition {name}/{tag}"), &status);
}

/// Inserts the rows (auto ids) and returns their ids.
pub async fn insert(c: &mut Client, name: &str, tag: &str, rows: &[Vector]) -> Vec<i64> {
    let reply = grpc_ok(
        "Insert",
        c.insert(InsertParam {
            collection_name: name.to_string(),
            row_record_array: rows.iter().map(Vector::record).collect(),
            row_id_array: vec![],
            partition_tag: tag.to_string(),
            extra_params: vec![],
        })
        .await,
    );
    assert_ok(&format!("Insert into {name}"), &reply.status);
    assert_eq!(reply.vector_id_array.len(), rows.len(), "one id per row");
    reply.vector_id_array
}

pub async fn flush(c: &mut Client, name: &str) {
    let status = grpc_ok(
        "Flush",
        c.flush(FlushParam {
            collection_name_array: vec![name.to_string()],
        })
        .await,
    );
    assert_status_ok(&format!("Flush {name}"), &status);
}

pub fn search_param(
    name: &str,
    tags: &[&str],
    queries: &[Vector],
    topk: i64,
    params: &str,
) -> SearchParam {
    SearchParam {
        collection_name: name.to_string(),
        partition_tag_array: tags.iter().map(|t| t.to_string()).collect(),
        query_record_array: queries.iter().map(Vector::record).collect(),
        topk,
        extra_params: vec![KeyValuePair {
            key: "params".to_string(),
            value: params.to_string(),
        }],
    }
}

/// A search that must succeed.
pub async fn search(
    c: &mut Client,
    name: &str,
    tags: &[&str],
    queries: &[Vector],
    topk: i64,
) -> TopKQueryResult {
    let reply = grpc_ok(
        "Search",
        c.search(search_param(name, tags, queries, topk, "{}"))
            .await,
    );
    assert_ok(
        &format!("Search {name} tags {tags:?} topk {topk}"),
        &reply.status,
    );
    reply
}

pub async fn cmd(c: &mut Client, text: &str) -> String {
    let reply = grpc_ok(
        "Cmd",
        c.cmd(Command {
            cmd: text.to_string(),
        })
        .await,
    );
    assert_ok(&format!("Cmd({text})"), &reply.status);
    reply.string_reply
}

// ---- data and oracle --------------------------------------------------------

/// One vector: floats, or packed bits for the binary metrics.
#[derive(Clone, Debug)]
pub enum Vector {
    Float(Vec<f32>),
    Binary(Vec<u8>),
}

impl Vector {
    pub fn record(&self) -> RowRecord {
        match self {
            Vector::Float(v) => RowRecord {
                float_data: v.clone(),
                binary_data: Default::default(),
            },
            Vector::Binary(b) => RowRecord {
                float_data: vec![],
                binary_data: bytes::Bytes::copy_from_slice(b),
            },
        }
    }
}

/// Deterministic random vectors: floats in [-1, 1), or `dim` bits.
pub struct VectorSource {
    rng: StdRng,
}

impl VectorSource {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn floats(&mut self, n: usize, dim: usize) -> Vec<Vector> {
        (0..n)
            .map(|_| {
                Vector::Float(
                    (0..dim)
                        .map(|_| self.rng.random_range(-1.0f32..1.0))
                        .collect(),
                )
            })
            .collect()
    }

    pub fn bits(&mut self, n: usize, dim_bits: usize) -> Vec<Vector> {
        (0..n)
            .map(|_| Vector::Binary((0..dim_bits / 8).map(|_| self.rng.random()).collect()))
            .collect()
    }
}

/// Every row the oracle knows, with its id.
#[derive(Default, Clone)]
pub struct Rows {
    pub rows: Vec<(i64, Vector)>,
}

impl Rows {
    pub fn add(&mut self, ids: &[i64], vectors: &[Vector]) {
        self.rows
            .extend(ids.iter().copied().zip(vectors.iter().cloned()));
    }

    pub fn remove(&mut self, ids: &HashSet<i64>) {
        self.rows.retain(|(id, _)| !ids.contains(id));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn merged(parts: &[&Rows]) -> Rows {
        Rows {
            rows: parts.iter().flat_map(|p| p.rows.iter().cloned()).collect(),
        }
    }
}

pub fn distance(metric: i32, a: &Vector, b: &Vector) -> f64 {
    match (a, b) {
        (Vector::Float(a), Vector::Float(b)) => match metric {
            L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from(x - y) * f64::from(x - y))
                .sum(),
            IP => a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum(),
            m => panic!("float metric {m} not in the oracle"),
        },
        (Vector::Binary(a), Vector::Binary(b)) => match metric {
            HAMMING => a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from((x ^ y).count_ones()))
                .sum(),
            m => panic!("binary metric {m} not in the oracle"),
        },
        _ => panic!("mixed float and binary vectors"),
    }
}

fn better_first(metric: i32) -> impl Fn(&(f64, i64), &(f64, i64)) -> std::cmp::Ordering {
    move |a, b| {
        let by_distance = if metric == IP {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        by_distance.then(a.1.cmp(&b.1))
    }
}

/// The exact top-k of one query over `rows`: (distance, id), best first.
pub fn oracle(metric: i32, rows: &Rows, query: &Vector, topk: usize) -> Vec<(f64, i64)> {
    let mut all: Vec<(f64, i64)> = rows
        .rows
        .iter()
        .map(|(id, v)| (distance(metric, query, v), *id))
        .collect();
    all.sort_by(better_first(metric));
    all.truncate(topk);
    all
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0)
}

/// Checks a search reply against the oracle over `rows`: layout (`row_num` = nq,
/// uniform stride = min(topk, rows searched) when `expected_stride` is given),
/// the real hits (id != -1) are exactly min(topk, rows) long, every id is a live
/// row reported with its true distance, and position by position the distance
/// equals the oracle's (ids may differ only between ties).
pub fn check_against_oracle(
    what: &str,
    reply: &TopKQueryResult,
    metric: i32,
    rows: &Rows,
    queries: &[Vector],
    topk: usize,
    expected_stride: Option<usize>,
) {
    let nq = queries.len();
    let want_hits = topk.min(rows.len());
    if want_hits == 0 {
        assert_eq!(
            reply.row_num, 0,
            "{what}: no rows, expected an empty result"
        );
        assert!(reply.ids.is_empty(), "{what}: no rows, expected no ids");
        return;
    }
    assert_eq!(reply.row_num as usize, nq, "{what}: row_num");
    assert_eq!(
        reply.ids.len(),
        reply.distances.len(),
        "{what}: ids and distances differ in length"
    );
    assert_eq!(reply.ids.len() % nq, 0, "{what}: ragged result");
    let stride = reply.ids.len() / nq;
    if let Some(s) = expected_stride {
        assert_eq!(
            stride,
            s,
            "{what}: stride (topk {topk}, {} rows)",
            rows.len()
        );
    }
    let by_id: std::collections::HashMap<i64, &Vector> =
        rows.rows.iter().map(|(id, v)| (*id, v)).collect();
    for (q, query) in queries.iter().enumerate() {
        let ids = &reply.ids[q * stride..(q + 1) * stride];
        let distances = &reply.distances[q * stride..(q + 1) * stride];
        let real: Vec<(i64, f32)> = ids
            .iter()
            .zip(distances)
            .filter(|(id, _)| **id != -1)
            .map(|(id, d)| (*id, *d))
            .collect();
        assert!(
            ids[..real.len()].iter().all(|id| *id != -1),
            "{what}: query {q}: padding (-1) before a real hit: {ids:?}"
        );
        let expected = oracle(metric, rows, query, topk);
        assert_eq!(
            real.len(),
            want_hits,
            "{what}: query {q}: {} hits, expected {want_hits}\n got {real:?}\n want {expected:?}",
            real.len()
        );
        let mut seen = HashSet::new();
        for (pos, ((id, got), (want_distance, want_id))) in real.iter().zip(&expected).enumerate() {
            assert!(
                seen.insert(*id),
                "{what}: query {q}: id {id} returned twice"
            );
            let Some(vector) = by_id.get(id) else {
                panic!("{what}: query {q} pos {pos}: id {id} is not a live row (deleted or unknown); expected {want_id}");
            };
            let true_distance = distance(metric, query, vector);
            assert!(
                close(f64::from(*got), true_distance),
                "{what}: query {q} pos {pos}: id {id} reported at distance {got}, true distance {true_distance}"
            );
            assert!(
                close(f64::from(*got), *want_distance),
                "{what}: query {q} pos {pos}: got id {id} at {got}, oracle has id {want_id} at {want_distance}\n got {real:?}\n want {expected:?}"
            );
        }
    }
}
