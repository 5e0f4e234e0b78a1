//! What the proxy costs on a search, measured side by side in one process.
//!
//! Run it with:
//!
//! ```text
//! cargo bench --bench proxy_overhead
//! ```
//!
//! It starts, on loopback, one writable and two read-only nodes over SQLite
//! metadata in a temporary directory (background merge off, so the segment
//! files stay separate) and the proxy in front of them. It creates a
//! 128-dimensional L2 collection, inserts 20 000 rows in 8 batches with a
//! Flush after each (8 segment files), and then, for nq=1/top-10 and
//! nq=16/top-50, times interleaved requests (one of each path per round, the
//! order rotating every round so no path always goes first):
//!
//! * `direct`: `Search` sent straight to the writable node, which scans every
//!   file itself;
//! * `proxy`: the same `Search` through the proxy, which fans out
//!   `SearchInFiles` to the two read-only nodes and merges;
//! * `one-ro`: `SearchInFiles` over every file sent straight to one
//!   read-only node (what a single node alone costs).
//!
//! It prints a table of median / p99 / mean wall latency per path, the
//! proxy/direct ratios, and which node the proxy gives each file to.
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a small smoke
//! version instead, which still checks that all paths return the same hits.
#![allow(clippy::unwrap_used)] // tests and benches unwrap their own fixtures

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mishards::config::Config;
use mishards::node::{self, NodeOptions, Role, RunningNode};
use mishards::proxy::{self, RunningProxy};
use mishards::wire::milvus_service_client::MilvusServiceClient;
use mishards::wire::{
    CollectionSchema, Command, ErrorCode, FlushParam, InsertParam, RowRecord, SearchInFilesParam,
    SearchParam, Status, TopKQueryResult,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

type Client = MilvusServiceClient<Channel>;

const COLLECTION: &str = "proxy_overhead";
const DIM: usize = 128;
const METRIC_L2: i32 = 1;
/// Distinct query sets cycled through, so no path gets one repeated query.
const QUERY_POOL: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Fixed sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Scale {
    rows: usize,
    batches: usize,
    warmup: usize,
    rounds: usize,
    /// Rows of each insert in the insert comparison, and how many of each path.
    insert_rows: usize,
    insert_rounds: usize,
}

const FULL: Scale = Scale {
    rows: 20_000,
    batches: 8,
    warmup: 20,
    rounds: 300,
    insert_rows: 100_000,
    insert_rounds: 4,
};

const SMOKE: Scale = Scale {
    rows: 2_000,
    batches: 4,
    warmup: 2,
    rounds: 5,
    insert_rows: 2_000,
    insert_rounds: 1,
};

/// One search shape.
#[derive(Clone, Copy, Debug)]
struct Workload {
    nq: usize,
    topk: i64,
}

const WORKLOADS: [Workload; 2] = [Workload { nq: 1, topk: 10 }, Workload { nq: 16, topk: 50 }];

/// The ways a search can reach the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SearchPath {
    Direct,
    Proxy,
    OneReadOnly,
}

const PATHS: [SearchPath; 3] = [
    SearchPath::Direct,
    SearchPath::Proxy,
    SearchPath::OneReadOnly,
];

impl SearchPath {
    fn label(self) -> &'static str {
        match self {
            SearchPath::Direct => "direct (rw Search)",
            SearchPath::Proxy => "proxy (2 ro fan-out)",
            SearchPath::OneReadOnly => "one-ro (SearchInFiles)",
        }
    }
}

/// Latency summary of one path, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Summary {
    median: f64,
    p99: f64,
    mean: f64,
    max: f64,
}

/// Nearest-rank percentile (`q` in 0..=1) of sorted samples; 0 when empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let mean = if ms.is_empty() {
        0.0
    } else {
        ms.iter().sum::<f64>() / ms.len() as f64
    };
    Summary {
        max: ms.last().copied().unwrap_or(0.0),
        median: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        mean,
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let scale = if full { FULL } else { SMOKE };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("proxy_overhead: cannot build the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(scale)) {
        eprintln!("proxy_overhead failed: {e:#}");
        std::process::exit(1);
    }
}

/// The in-process cluster.
struct Cluster {
    writable: RunningNode,
    readonly: Vec<RunningNode>,
    proxy: RunningProxy,
}

impl Cluster {
    async fn start(dir: &Path) -> anyhow::Result<Cluster> {
        let meta_uri = format!("sqlite://{}", dir.join("db").join("meta.sqlite").display());
        let loopback: SocketAddr = "127.0.0.1:0".parse()?;
        let node_options = |role| {
            let mut opts = NodeOptions::new(role, loopback, dir.to_path_buf(), meta_uri.clone());
            opts.merge_interval = Duration::ZERO;
            opts
        };
        let writable = node::start(node_options(Role::Writable)).await?;
        let mut readonly = Vec::new();
        for _ in 0..2 {
            readonly.push(node::start(node_options(Role::ReadOnly)).await?);
        }
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".to_string();
        config.metrics.listen = "127.0.0.1:0".to_string();
        config.meta.uri = meta_uri.clone();
        config.backends.writable = writable.addr.to_string();
        config.backends.readonly = readonly.iter().map(|n| n.addr.to_string()).collect();
        let proxy = proxy::start(config).await?;
        Ok(Cluster {
            writable,
            readonly,
            proxy,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.proxy.stop(Duration::from_secs(5)).await?;
        for n in self.readonly {
            n.stop().await?;
        }
        self.writable.stop().await
    }
}

fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
    mishards::grpc::client(
        &addr.to_string(),
        CONNECT_TIMEOUT,
        mishards::grpc::DEFAULT_MAX_MESSAGE_SIZE,
    )
    .with_context(|| format!("cannot create a client for {addr}"))
}

fn check(status: Option<&Status>, what: &str) -> anyhow::Result<()> {
    match status {
        Some(s) if s.error_code != ErrorCode::Success as i32 => {
            bail!("{what} failed: code {} {}", s.error_code, s.reason)
        }
        _ => Ok(()),
    }
}

async fn run(scale: Scale) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let data_dir = dir.path().canonicalize()?;
    let cluster = Cluster::start(&data_dir).await?;
    let outcome = measure(&cluster, scale).await;
    let stopped = cluster.stop().await;
    drop(dir); // removes the segment files and the metadata
    outcome.and(stopped)
}

async fn measure(cluster: &Cluster, scale: Scale) -> anyhow::Result<()> {
    let mut proxy = connect(cluster.proxy.addr)?;
    let mut direct = connect(cluster.writable.addr)?;
    let mut one_ro = connect(cluster.readonly[0].addr)?;
    let mut rng = StdRng::seed_from_u64(7);

    load_data(&mut proxy, &mut rng, scale).await?;
    let route = wait_for_route(&mut proxy, scale.batches).await?;
    let file_ids: Vec<String> = route
        .iter()
        .flat_map(|(_, ids)| ids.iter().map(i64::to_string))
        .collect();

    println!(
        "proxy_overhead: {} rows x dim {DIM} (L2) in {} files, 1 rw + 2 ro nodes + proxy on loopback, \
         {} warm-up + {} interleaved rounds per workload",
        scale.rows,
        file_ids.len(),
        scale.warmup,
        scale.rounds
    );
    println!("files per node (proxy `route {COLLECTION}`):");
    for (i, node) in cluster.readonly.iter().enumerate() {
        let addr = node.addr.to_string();
        let ids: &[i64] = route
            .iter()
            .find(|(routed, _)| *routed == addr)
            .map_or(&[], |(_, ids)| ids.as_slice());
        let role = if i == 0 { "ro-1 (one-ro path)" } else { "ro-2" };
        println!("  {role:<18} {addr:<21} {} files {ids:?}", ids.len());
    }
    println!();
    println!(
        "{:<12} {:<24} {:>10} {:>10} {:>10}",
        "workload", "path", "median ms", "p99 ms", "mean ms"
    );

    let mut ratios = Vec::new();
    for workload in WORKLOADS {
        let queries: Vec<Vec<RowRecord>> = (0..QUERY_POOL)
            .map(|_| random_rows(&mut rng, workload.nq))
            .collect();
        let mut clients = Clients {
            direct: &mut direct,
            proxy: &mut proxy,
            one_ro: &mut one_ro,
            file_ids: &file_ids,
        };
        for i in 0..scale.warmup {
            for path in PATHS {
                clients
                    .search(path, &queries[i % QUERY_POOL], workload.topk)
                    .await?;
            }
        }
        let mut samples: [Vec<Duration>; 3] = Default::default();
        let mut disagreements = 0;
        for round in 0..scale.rounds {
            let rows = &queries[round % QUERY_POOL];
            let mut replies: [Option<TopKQueryResult>; 3] = Default::default();
            for k in 0..PATHS.len() {
                let slot = (round + k) % PATHS.len();
                let started = Instant::now();
                let reply = clients.search(PATHS[slot], rows, workload.topk).await?;
                samples[slot].push(started.elapsed());
                replies[slot] = Some(reply);
            }
            if !same_ids(&replies) {
                disagreements += 1;
            }
        }
        let name = format!("nq{}/top{}", workload.nq, workload.topk);
        let summaries: Vec<Summary> = samples.iter().map(|s| summarize(s)).collect();
        for (path, s) in PATHS.iter().zip(&summaries) {
            println!(
                "{name:<12} {:<24} {:>10.3} {:>10.3} {:>10.3}",
                path.label(),
                s.median,
                s.p99,
                s.mean
            );
        }
        if disagreements > 0 {
            println!(
                "{name:<12} WARNING: {disagreements} rounds where the paths returned different ids"
            );
        }
        ratios.push((name, summaries[1], summaries[0], summaries[2]));
    }

    println!();
    println!(
        "{:<12} {:>16} {:>16} {:>16} {:>16}",
        "workload", "proxy/direct p50", "proxy/direct p99", "proxy/one-ro p50", "one-ro/direct p50"
    );
    for (name, via_proxy, direct, one) in &ratios {
        println!(
            "{name:<12} {:>16.2} {:>16.2} {:>16.2} {:>16.2}",
            via_proxy.median / direct.median,
            via_proxy.p99 / direct.p99,
            via_proxy.median / one.median,
            one.median / direct.median
        );
    }
    measure_inserts(&mut direct, &mut proxy, &mut rng, scale).await
}

/// Large inserts straight to the writer vs through the proxy (which forwards
/// the message bytes without decoding them), interleaved.
async fn measure_inserts(
    direct: &mut Client,
    proxy: &mut Client,
    rng: &mut StdRng,
    scale: Scale,
) -> anyhow::Result<()> {
    let name = "insert_overhead";
    let schema = CollectionSchema {
        collection_name: name.into(),
        dimension: DIM as i64,
        index_file_size: 1024,
        metric_type: METRIC_L2,
        ..Default::default()
    };
    check(
        Some(&proxy.create_collection(schema).await?.into_inner()),
        "create",
    )?;
    let rows = random_rows(rng, scale.insert_rows);
    let request = InsertParam {
        collection_name: name.into(),
        row_record_array: rows,
        ..Default::default()
    };
    let mut samples: [Vec<Duration>; 2] = Default::default();
    for round in 0..scale.insert_rounds {
        for k in 0..2 {
            let slot = (round + k) % 2;
            let client = if slot == 0 { &mut *direct } else { &mut *proxy };
            let started = Instant::now();
            let reply = client.insert(request.clone()).await?.into_inner();
            samples[slot].push(started.elapsed());
            check(reply.status.as_ref(), "insert")?;
            anyhow::ensure!(
                reply.vector_id_array.len() == scale.insert_rows,
                "insert returned too few ids"
            );
        }
    }
    println!();
    println!(
        "insert {} x {DIM} floats ({:.1} MB), {} of each, interleaved:",
        scale.insert_rows,
        (scale.insert_rows * DIM * 4) as f64 / 1e6,
        scale.insert_rounds
    );
    let summaries: Vec<Summary> = samples.iter().map(|s| summarize(s)).collect();
    for (label, s) in ["direct (rw Insert)", "proxy (raw bytes)"]
        .iter()
        .zip(&summaries)
    {
        println!(
            "  {label:<24} median {:>9.3} ms   max {:>9.3} ms",
            s.median, s.max
        );
    }
    println!(
        "  proxy/direct median       {:.2}",
        summaries[1].median / summaries[0].median
    );
    Ok(())
}

/// One client per path, and the file ids for `SearchInFiles`.
struct Clients<'a> {
    direct: &'a mut Client,
    proxy: &'a mut Client,
    one_ro: &'a mut Client,
    file_ids: &'a [String],
}

impl Clients<'_> {
    async fn search(
        &mut self,
        path: SearchPath,
        rows: &[RowRecord],
        topk: i64,
    ) -> anyhow::Result<TopKQueryResult> {
        let param = SearchParam {
            collection_name: COLLECTION.to_string(),
            partition_tag_array: Vec::new(),
            query_record_array: rows.to_vec(),
            topk,
            extra_params: Vec::new(),
        };
        let reply = match path {
            SearchPath::Direct => self.direct.search(param).await,
            SearchPath::Proxy => self.proxy.search(param).await,
            SearchPath::OneReadOnly => {
                self.one_ro
                    .search_in_files(SearchInFilesParam {
                        file_id_array: self.file_ids.to_vec(),
                        search_param: Some(param),
                    })
                    .await
            }
        }
        .with_context(|| format!("{} search", path.label()))?
        .into_inner();
        check(reply.status.as_ref(), path.label())?;
        if reply.row_num != rows.len() as i64 {
            bail!(
                "{}: {} result rows for {} queries",
                path.label(),
                reply.row_num,
                rows.len()
            );
        }
        Ok(reply)
    }
}

/// Whether every reply holds the same ids (replies are exact searches, so
/// they agree unless two rows are at exactly the same distance).
fn same_ids(replies: &[Option<TopKQueryResult>]) -> bool {
    let mut ids = replies.iter().map(|r| r.as_ref().map(|r| &r.ids));
    match ids.next() {
        Some(first) => ids.all(|other| other == first),
        None => true,
    }
}

fn random_rows(rng: &mut StdRng, count: usize) -> Vec<RowRecord> {
    (0..count)
        .map(|_| RowRecord {
            float_data: (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect(),
            binary_data: Default::default(),
        })
        .collect()
}

/// Creates the collection and inserts `scale.rows` rows in `scale.batches`
/// batches, flushing after each so every batch becomes its own file.
async fn load_data(proxy: &mut Client, rng: &mut StdRng, scale: Scale) -> anyhow::Result<()> {
    let status = proxy
        .create_collection(CollectionSchema {
            status: None,
            collection_name: COLLECTION.to_string(),
            dimension: DIM as i64,
            index_file_size: 1024,
            metric_type: METRIC_L2,
            extra_params: Vec::new(),
        })
        .await
        .context("CreateCollection")?
        .into_inner();
    check(Some(&status), "CreateCollection")?;
    let per_batch = scale.rows / scale.batches;
    for _ in 0..scale.batches {
        let reply = proxy
            .insert(InsertParam {
                collection_name: COLLECTION.to_string(),
                row_record_array: random_rows(rng, per_batch),
                row_id_array: Vec::new(),
                partition_tag: String::new(),
                extra_params: Vec::new(),
            })
            .await
            .context("Insert")?
            .into_inner();
        check(reply.status.as_ref(), "Insert")?;
        if reply.vector_id_array.len() != per_batch {
            bail!(
                "Insert returned {} ids for {per_batch} rows",
                reply.vector_id_array.len()
            );
        }
        let status = proxy
            .flush(FlushParam {
                collection_name_array: vec![COLLECTION.to_string()],
            })
            .await
            .context("Flush")?
            .into_inner();
        check(Some(&status), "Flush")?;
    }
    Ok(())
}

/// Polls `Cmd("route <collection>")` until the proxy's metadata snapshot
/// shows `files` files, and returns its node -> file ids map.
async fn wait_for_route(
    proxy: &mut Client,
    files: usize,
) -> anyhow::Result<Vec<(String, Vec<i64>)>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = proxy
            .cmd(Command {
                cmd: format!("route {COLLECTION}"),
            })
            .await
            .context("Cmd(route)")?
            .into_inner();
        check(reply.status.as_ref(), "Cmd(route)")?;
        let route: serde_json::Value =
            serde_json::from_str(&reply.string_reply).context("route reply is not JSON")?;
        let nodes: Vec<(String, Vec<i64>)> = route
            .get("nodes")
            .and_then(serde_json::Value::as_object)
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|(addr, ids)| {
                        let ids = ids
                            .as_array()
                            .map(|ids| ids.iter().filter_map(serde_json::Value::as_i64).collect())
                            .unwrap_or_default();
                        (addr.clone(), ids)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let seen: usize = nodes.iter().map(|(_, ids)| ids.len()).sum();
        if seen >= files {
            return Ok(nodes);
        }
        if Instant::now() > deadline {
            bail!(
                "the proxy routes {seen} files, expected {files}: {}",
                reply.string_reply
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
