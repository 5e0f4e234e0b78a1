//! `mishards bench --quick --json` end to end on an embedded SQLite cluster:
//! every scenario reports its rows with sane values. Structure only, never
//! timing: the numbers must exist, be positive where a count or a rate, and
//! order (p50 <= p99), whatever the machine.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

mod common;

const SCENARIOS: [&str; 6] = [
    "latency",
    "throughput",
    "insert",
    "first-query",
    "proxy-only",
    "cost-growth",
];

fn number(row: &Value, key: &str) -> f64 {
    row.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} is not a number in {row}"))
}

fn positive(row: &Value, key: &str) {
    let v = number(row, key);
    assert!(v > 0.0, "{key} = {v} in {row}");
}

fn ordered(row: &Value, low: &str, high: &str) {
    let (a, b) = (number(row, low), number(row, high));
    assert!(a <= b, "{low} {a} > {high} {b} in {row}");
}

fn rows<'a>(report: &'a Value, scenario: &str) -> &'a Vec<Value> {
    let table = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no {scenario} table in {report}"));
    let rows = table["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{scenario} has no rows");
    rows
}

#[test]
fn quick_bench_reports_every_scenario_with_sane_values() {
    let output = Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args(["bench", "--quick", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    // Progress went to stderr, one line per step.
    assert!(stderr.contains("] scenario latency"), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["skipped"].as_array().unwrap().is_empty());
    let names: Vec<&str> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(names, SCENARIOS);

    let latency = rows(&report, "latency");
    assert_eq!(latency.len(), 4, "2 shapes x 2 client counts");
    for r in latency {
        positive(r, "proxy_qps");
        positive(r, "samples_per_path");
        ordered(r, "proxy_p50_ms", "proxy_p99_ms");
        ordered(r, "direct_p50_ms", "direct_p99_ms");
        number(r, "proxy_cpu_us_per_search");
    }

    let throughput = rows(&report, "throughput");
    let ro: Vec<f64> = throughput.iter().map(|r| number(r, "ro_nodes")).collect();
    assert_eq!(ro, vec![1.0, 2.0, 3.0]);
    for r in throughput {
        positive(r, "qps");
        positive(r, "searches");
        ordered(r, "p50_ms", "p99_ms");
        number(r, "proxy_cpu_us_per_search");
    }

    let insert = rows(&report, "insert");
    for r in insert {
        positive(r, "proxy_mb_per_s");
        positive(r, "direct_mb_per_s");
        positive(r, "proxy_over_direct");
        positive(r, "proxy_rss_at_start_mb");
        ordered(r, "proxy_rss_at_start_mb", "proxy_peak_rss_mb");
    }

    let first = rows(&report, "first-query");
    assert_eq!(first.len(), 3, "3 batches with --quick");
    for r in first {
        positive(r, "first_ms");
        positive(r, "steady_ms");
        assert_eq!(r["first_saw_new_rows"], "yes", "{r}");
    }

    let proxy_only = rows(&report, "proxy-only");
    assert_eq!(proxy_only.len(), 2);
    for r in proxy_only {
        positive(r, "qps");
        ordered(r, "stub_p50_ms", "stub_p99_ms");
        ordered(r, "proxy_p50_ms", "proxy_p99_ms");
        number(r, "proxy_cpu_us_per_search");
        // The floor forwarder ran side by side in front of the same stubs.
        positive(r, "floor_qps");
        number(r, "floor_cpu_us_per_search");
    }

    let growth = rows(&report, "cost-growth");
    let files: Vec<f64> = growth.iter().map(|r| number(r, "files")).collect();
    assert_eq!(
        files.len(),
        4 + 2,
        "the 2 x 2 nq x topk grid, then 100 and 1000 files"
    );
    assert_eq!(files.last(), Some(&1000.0));
    for r in growth {
        positive(r, "qps");
        number(r, "proxy_cpu_us_per_search");
        number(r, "floor_cpu_us_per_search");
    }
}

/// Target mode on an in-process cluster: markdown tables for what it can
/// run, a line for what it cannot, and no collection left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_mode_prints_markdown_and_drops_its_collections() {
    let cluster = common::Cluster::start(&common::MetaKind::Sqlite).await;
    let proxy = cluster.proxy.as_ref().unwrap().addr.to_string();
    let direct = cluster.writer.as_ref().unwrap().addr.to_string();
    // The cluster serves from this runtime while the bench runs in a blocking thread.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mishards"))
            .args([
                "bench",
                "--quick",
                "--duration",
                "200ms",
                "--target",
                &proxy,
            ])
            .args(["--direct", &direct])
            .args(["--scenario", "latency", "--scenario", "first-query"])
            .args(["--scenario", "proxy-only"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("(`latency`)"), "{stdout}");
    assert!(stdout.contains("| nq | topk | clients |"), "{stdout}");
    assert!(stdout.contains("(`first-query`)"), "{stdout}");
    assert!(stdout.contains("- `proxy-only` not run"), "{stdout}");
    assert_eq!(stdout.matches("| yes |").count(), 3, "{stdout}");

    let mut client = cluster.client.clone();
    let left = client
        .show_collections(mishards::wire::Command { cmd: String::new() })
        .await
        .unwrap()
        .into_inner()
        .collection_names;
    assert!(left.is_empty(), "the bench left {left:?}");
    cluster.stop().await;
}

/// Claims a Redis database number for a JuiceFS volume with the test
/// harness's lock protocol (an exclusive lock on
/// `/tmp/mishards-juicefs/db<N>.lock`, N in 1..=15; see tests/common/juicefs.rs),
/// so no other test formats or flushes it meanwhile.
fn claim_juicefs_database() -> (u32, std::fs::File) {
    let root = std::path::Path::new("/tmp/mishards-juicefs");
    std::fs::create_dir_all(root).unwrap();
    let started = std::time::Instant::now();
    loop {
        for n in 1..=15 {
            let file = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(root.join(format!("db{n}.lock")))
                .unwrap();
            if file.try_lock().is_ok() {
                return (n, file);
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "every JuiceFS test database (1..=15) stayed taken for 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `SELECT database` + `command` (one-line replies) on the tests' Redis;
/// returns the reply to `command`.
fn redis(server: &str, database: u32, command: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(server).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(format!("SELECT {database}\r\n{command}\r\n").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while reply.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "Redis closed the connection");
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply).to_string();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("+OK"), "SELECT {database}: {text:?}");
    lines.next().unwrap().to_string()
}

fn bench_on_juicefs(meta: &str) -> std::process::Output {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_mishards"));
    bench
        .args(["bench", "--quick", "--json", "--scenario", "first-query"])
        .args(["--storage", "local", "--storage", "juicefs"])
        .args(["--juicefs-meta", meta]);
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/juicefs");
    if let Ok(path) = std::env::var(common::juicefs::JUICEFS_ENV) {
        bench.args(["--juicefs", &path]);
    } else if venv.is_file() {
        bench.arg("--juicefs").arg(&venv);
    }
    bench.output().unwrap()
}

/// first-query on a local directory and on JuiceFS (one mount per node) in
/// one run: both storages report every batch, every first search finds the
/// new rows, the notes compare the medians; the bench refuses a database
/// that is not empty and empties the one it formatted.
#[test]
fn quick_first_query_on_local_and_juicefs_storage() {
    let test = "quick_first_query_on_local_and_juicefs_storage";
    if !common::juicefs::available_or_skip(test) {
        return;
    }
    let server =
        std::env::var(common::juicefs::REDIS_ENV).unwrap_or_else(|_| "127.0.0.1:6379".into());
    let (database, _claim) = claim_juicefs_database();
    // The lock holder owns the database: empty it of whatever a killed run left.
    assert_eq!(redis(&server, database, "FLUSHDB"), "+OK");
    let meta = format!("redis://{server}/{database}");

    // A database with keys is someone's volume: refused, and left alone.
    assert_eq!(redis(&server, database, "SET someone-else 1"), "+OK");
    let refused = bench_on_juicefs(&meta);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "bench ran on a used database");
    assert!(stderr.contains("holds 1 keys"), "{stderr}");
    assert_eq!(redis(&server, database, "DBSIZE"), ":1");
    assert_eq!(redis(&server, database, "FLUSHDB"), "+OK");

    let output = bench_on_juicefs(&meta);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let first = rows(&report, "first-query");
    assert_eq!(first.len(), 2 * 3, "3 batches with --quick on each storage");
    for storage in ["local", "juicefs"] {
        let of: Vec<&Value> = first.iter().filter(|r| r["storage"] == storage).collect();
        assert_eq!(of.len(), 3, "{storage} rows in {first:?}");
        for r in of {
            positive(r, "first_ms");
            positive(r, "steady_ms");
            assert_eq!(r["first_saw_new_rows"], "yes", "{r}");
        }
    }
    let table = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == "first-query")
        .unwrap();
    let notes = table["notes"].to_string();
    assert!(
        notes.contains("local:") && notes.contains("juicefs:"),
        "{notes}"
    );
    assert!(notes.contains("juicefs / local"), "{notes}");
    // Everything of the volume is gone with the run.
    assert_eq!(redis(&server, database, "DBSIZE"), ":0");
}
