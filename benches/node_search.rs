//! A read-only node's `SearchInFiles` under load, for two `mishards`
//! binaries side by side in one run (e.g. before and after a change):
//! 8 clients of nq=1 topk=10 over 8 files of 100k x 128 rows (QPS, p50, p99),
//! and the first search of a freshly flushed 100k x 128 file minus the next
//! one (the load cost). Both binaries' nodes serve the same data directory
//! and MySQL metadata, written once by a writable node; runs alternate
//! between the binaries so drift on a noisy machine hits both alike.
//!
//! `MISHARDS_BEFORE=/path/to/old/mishards cargo bench --bench node_search`
//! (`MISHARDS_AFTER` defaults to target/release/mishards, which `cargo bench`
//! does not build: run `cargo build --release` first). MySQL at
//! `MISHARDS_BENCH_MYSQL` (default mysql://root@127.0.0.1:3306).
//! `PERF_DIR=/tmp` also records `perf record -g` of each node during its
//! first load run, as `PERF_DIR/node-<label>.data`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench unwraps its own fixtures

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mishards::wire::milvus_service_client::MilvusServiceClient;
use mishards::wire::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, Executor, Row};
use tonic::transport::Channel;

type Client = MilvusServiceClient<Channel>;

const DIM: usize = 128;
const FILES: usize = 8;
const ROWS: usize = 100_000;
const CLIENTS: usize = 8;
const TOPK: i64 = 10;
const LOAD_RUN: Duration = Duration::from_secs(5);
const LOAD_REPS: usize = 3;
const COLD_REPS: usize = 5;

struct Node {
    label: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn start_node(bin: &Path, label: &str, role: &str, dir: &Path, meta: &str) -> (Node, Client) {
    let addr = free_port();
    let child = Command::new(bin)
        .args(["node", "--role", role, "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--meta-uri",
            meta,
            "--merge-interval",
            "0s",
            "--log-level",
            "warn",
        ])
        .args(["--flush-interval", "0s", "--cleanup-delay", "1h"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let node = Node {
        label: label.to_string(),
        child,
    };
    let started = Instant::now();
    loop {
        let client =
            mishards::grpc::client(&addr.to_string(), Duration::from_secs(60), 1 << 30).unwrap();
        let mut probe = client.clone();
        if probe
            .cmd(Command_ {
                cmd: "version".into(),
            })
            .await
            .is_ok()
        {
            return (node, client);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{label} did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(non_camel_case_types)]
type Command_ = mishards::wire::Command;

fn floats(rng: &mut StdRng, n: usize) -> Vec<RowRecord> {
    (0..n)
        .map(|_| RowRecord {
            float_data: (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect(),
            binary_data: Default::default(),
        })
        .collect()
}

fn ok(what: &str, status: Option<Status>) {
    let s = status.unwrap_or_default();
    assert_eq!(s.error_code, 0, "{what}: {}", s.reason);
}

/// Inserts one file of `ROWS` rows into `name` and flushes it.
async fn add_file(writer: &mut Client, rng: &mut StdRng, name: &str) {
    for _ in 0..ROWS / 25_000 {
        let reply = writer
            .insert(InsertParam {
                collection_name: name.into(),
                row_record_array: floats(rng, 25_000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ok("insert", reply.status);
    }
    let status = writer
        .flush(FlushParam {
            collection_name_array: vec![name.into()],
        })
        .await
        .unwrap()
        .into_inner();
    ok("flush", Some(status));
}

async fn raw_file_ids(db: &str, name: &str) -> Vec<i64> {
    let mut conn = sqlx::AnyConnection::connect(db).await.unwrap();
    let rows =
        sqlx::query("SELECT id FROM TableFiles WHERE table_id = ? AND file_type = 1 ORDER BY id")
            .bind(name)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    rows.iter().map(|r| r.get::<i64, _>("id")).collect()
}

fn search_param(name: &str, files: &[i64], q: Vec<RowRecord>) -> SearchInFilesParam {
    SearchInFilesParam {
        file_id_array: files.iter().map(i64::to_string).collect(),
        search_param: Some(SearchParam {
            collection_name: name.into(),
            query_record_array: q,
            topk: TOPK,
            ..Default::default()
        }),
    }
}

/// One timed SearchInFiles.
async fn timed_search(c: &mut Client, name: &str, files: &[i64], q: Vec<RowRecord>) -> Duration {
    let t = Instant::now();
    let reply = c
        .search_in_files(search_param(name, files, q))
        .await
        .unwrap()
        .into_inner();
    let took = t.elapsed();
    ok("SearchInFiles", reply.status);
    assert_eq!(reply.row_num, 1);
    took
}

/// `CLIENTS` clients searching for `LOAD_RUN`: every latency.
async fn load_run(
    node: &Node,
    client: &Client,
    name: &str,
    files: &[i64],
    perf: Option<&Path>,
) -> (Vec<Duration>, Duration) {
    let recorder = perf.map(|dir| {
        Command::new("perf")
            .args([
                "record",
                "-g",
                "-q",
                "-p",
                &node.child.id().to_string(),
                "-o",
            ])
            .arg(dir.join(format!("node-{}.data", node.label)))
            .args(["--", "sleep", &LOAD_RUN.as_secs().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf starts")
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (mut c, stop, name, files) = (
            client.clone(),
            stop.clone(),
            name.to_string(),
            files.to_vec(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) && lat.len() < 1_000_000 {
                lat.push(timed_search(&mut c, &name, &files, floats(&mut rng, 1)).await);
            }
            lat
        }));
    }
    tokio::time::sleep(LOAD_RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    if let Some(mut r) = recorder {
        let _ = r.wait();
    }
    (all, elapsed)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let after = std::env::var_os("MISHARDS_AFTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/mishards")
        });
    let mut bins = Vec::new();
    if let Some(before) = std::env::var_os("MISHARDS_BEFORE") {
        bins.push(("before".to_string(), PathBuf::from(before)));
    }
    bins.push(("after".to_string(), after.clone()));
    let perf_dir = std::env::var_os("PERF_DIR").map(PathBuf::from);

    let server = std::env::var("MISHARDS_BENCH_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    sqlx::any::install_default_drivers();
    let db_name = format!("mishards_bench_{}", std::process::id());
    let mut admin = sqlx::AnyConnection::connect(&server)
        .await
        .expect("MySQL reachable");
    admin
        .execute(format!("CREATE DATABASE {db_name}").as_str())
        .await
        .unwrap();
    let meta = format!("{server}/{db_name}");
    let dir = tempfile::tempdir().unwrap();

    let (_writer, mut writer) = start_node(&after, "writer", "rw", dir.path(), &meta).await;
    let mut rng = StdRng::seed_from_u64(7);
    for name in ["bench_load", "bench_cold"] {
        let status = writer
            .create_collection(CollectionSchema {
                collection_name: name.into(),
                dimension: DIM as i64,
                index_file_size: 4096,
                metric_type: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ok("create", Some(status));
    }
    eprintln!("writing {FILES} files of {ROWS} x {DIM} ...");
    for _ in 0..FILES {
        add_file(&mut writer, &mut rng, "bench_load").await;
    }
    let files = raw_file_ids(&meta, "bench_load").await;
    assert_eq!(files.len(), FILES, "{files:?}");

    let mut nodes = Vec::new();
    for (label, bin) in &bins {
        let (node, client) = start_node(bin, label, "ro", dir.path(), &meta).await;
        // Warm: every file loaded once.
        timed_search(
            &mut client.clone(),
            "bench_load",
            &files,
            floats(&mut rng, 1),
        )
        .await;
        nodes.push((node, client));
    }

    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    let mut count = vec![0usize; nodes.len()];
    let mut secs = vec![0f64; nodes.len()];
    for rep in 0..LOAD_REPS {
        for (i, (node, client)) in nodes.iter().enumerate() {
            eprintln!("load run {rep} on {}", node.label);
            let perf = if rep == 0 { perf_dir.as_deref() } else { None };
            let (l, took) = load_run(node, client, "bench_load", &files, perf).await;
            count[i] += l.len();
            secs[i] += took.as_secs_f64();
            lat[i].extend(l);
        }
    }

    // Cold: a new file, then its first and second search on each node
    // (alternating which node goes first).
    let mut first_minus_next: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    let mut firsts: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    for rep in 0..COLD_REPS {
        add_file(&mut writer, &mut rng, "bench_cold").await;
        let cold = *raw_file_ids(&meta, "bench_cold").await.last().unwrap();
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let mut c = nodes[i].1.clone();
            let first = timed_search(&mut c, "bench_cold", &[cold], floats(&mut rng, 1)).await;
            let mut next = Vec::new();
            for _ in 0..5 {
                next.push(timed_search(&mut c, "bench_cold", &[cold], floats(&mut rng, 1)).await);
            }
            next.sort();
            firsts[i].push(first);
            first_minus_next[i].push(first.saturating_sub(next[2]));
        }
    }

    println!("\n8 clients, nq=1 topk=10 SearchInFiles over {FILES} files of {ROWS} x {DIM} (one read-only node, MySQL metadata), {LOAD_REPS} x {}s runs each, alternating:\n", LOAD_RUN.as_secs());
    println!("| binary | searches | QPS | p50 ms | p99 ms | first search of a new 100k x 128 file, ms (median of {COLD_REPS}) | first minus steady, ms |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (node, _)) in nodes.iter().enumerate() {
        lat[i].sort();
        firsts[i].sort();
        first_minus_next[i].sort();
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            node.label,
            count[i],
            count[i] as f64 / secs[i],
            ms(pct(&lat[i], 0.5)),
            ms(pct(&lat[i], 0.99)),
            ms(firsts[i][COLD_REPS / 2]),
            ms(first_minus_next[i][COLD_REPS / 2]),
        );
    }
    if nodes.len() == 2 {
        let qps = |i: usize| count[i] as f64 / secs[i];
        println!(
            "\nafter / before: QPS x{:.2}, p50 x{:.2}, first-search penalty x{:.2}",
            qps(1) / qps(0),
            pct(&lat[1], 0.5).as_secs_f64() / pct(&lat[0], 0.5).as_secs_f64(),
            first_minus_next[1][COLD_REPS / 2].as_secs_f64()
                / first_minus_next[0][COLD_REPS / 2].as_secs_f64().max(1e-9),
        );
    }
    drop(nodes);
    drop(_writer);
    let _ = admin
        .execute(format!("DROP DATABASE {db_name}").as_str())
        .await;
}
