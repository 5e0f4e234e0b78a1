//! Issue 7, points 4-6 with real servers on 127.0.0.1: a metadata outage
//! (a TCP relay in front of MySQL is cut for 10 s during a search load),
//! the cost of searches for unknown names, access control (read-only, deny
//! list, client networks), and failing starts that must never print the
//! metadata password. Each scenario is bounded in time and count and prints
//! its figures (`cargo test --test guard -- --nocapture`).
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::relay::Relay;
use common::*;
use mishards::config::Config;
use mishards::proxy::{self, RunningProxy};
use mishards::wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PERMISSION_DENIED: i32 = ErrorCode::PermissionDenied as i32;
const COLLECTION_NOT_EXISTS: i32 = ErrorCode::CollectionNotExists as i32;

on_both_databases!(unknown_names);

/// The sum of a counter's samples whose labels contain `label`.
fn counter(proxy: &RunningProxy, name: &str, label: &str) -> u64 {
    proxy
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// (status, body) of an HTTP/1.0 GET on the metrics endpoint.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// A second proxy over the cluster's nodes with its own settings.
async fn second_proxy(
    cluster: &Cluster,
    meta_uri: &str,
    edit: impl FnOnce(&mut Config),
) -> RunningProxy {
    let readers = cluster
        .reader_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let mut config = proxy_config(meta_uri, &writer, readers);
    config.backends.connect_timeout = Duration::from_secs(1);
    config.backends.request_timeout = Duration::from_secs(20);
    config.backends.search_timeout = Duration::from_secs(20);
    edit(&mut config);
    proxy::start(config).await.expect("second proxy starts")
}

/// 1000 searches on a missing collection cost a bounded number of metadata
/// reads, and a collection created behind the proxy's back (straight on the
/// writer, as through another proxy) is still found within one refresh interval.
async fn unknown_names(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    // A slow refresh (3 s) so that misses, not the refresher, decide the reads.
    let refresh = Duration::from_secs(3);
    let ttl = Duration::from_secs(1);
    let proxy = second_proxy(&cluster, &cluster.meta_uri, |c| {
        c.topology.refresh_interval = refresh;
        c.topology.negative_cache_ttl = ttl;
    })
    .await;
    let mut client = client_of(proxy.addr);
    let queries = VectorSource::new(5).floats(1, 8);
    let reads = |p: &RunningProxy| counter(p, "mishards_metadata_reads_total", "cause=\"miss\"");
    let before = reads(&proxy);
    let started = Instant::now();
    for i in 0..1000 {
        let param = search_param("no_such_collection", &[], &queries, 1, "{}");
        let code = search_code("missing", client.search(param).await);
        assert_eq!(code, COLLECTION_NOT_EXISTS, "search {i}");
    }
    let elapsed = started.elapsed();
    let miss_reads = reads(&proxy) - before;
    let bound = 2 * (elapsed.as_secs_f64() / ttl.as_secs_f64()).ceil() as u64 + 2;
    eprintln!(
        "{}: 1000 searches on a missing collection in {:.2}s caused {miss_reads} metadata reads \
         (bound {bound}; without the negative cache: 1000 full reloads)",
        setup.label(),
        elapsed.as_secs_f64()
    );
    assert!(miss_reads <= bound, "{miss_reads} reads > {bound}");

    // 300 different missing names: bounded by the global rate (10 per TTL).
    let before = reads(&proxy);
    let started = Instant::now();
    for i in 0..300 {
        let param = search_param(&format!("missing_{i}"), &[], &queries, 1, "{}");
        let code = search_code("missing", client.search(param).await);
        assert_eq!(code, COLLECTION_NOT_EXISTS, "search {i}");
    }
    let elapsed = started.elapsed();
    let random_reads = reads(&proxy) - before;
    let random_bound = 2 * (elapsed.as_secs_f64() / (ttl.as_secs_f64() / 10.0)).ceil() as u64 + 2;
    eprintln!(
        "{}: 300 searches on 300 different missing names in {:.2}s caused {random_reads} metadata reads (bound {random_bound})",
        setup.label(),
        elapsed.as_secs_f64()
    );
    assert!(
        random_reads <= random_bound,
        "{random_reads} reads > {random_bound}"
    );

    // Created straight on the writer: this proxy was not told.
    let mut writer = cluster.writer_client();
    create_collection(&mut writer, "born_elsewhere", 8, L2).await;
    let created = Instant::now();
    let found_after = loop {
        let param = search_param("born_elsewhere", &[], &queries, 1, "{}");
        let code = search_code("born elsewhere", client.search(param).await);
        if code == 0 {
            break created.elapsed();
        }
        assert_eq!(code, COLLECTION_NOT_EXISTS);
        assert!(
            created.elapsed() < refresh + Duration::from_secs(3),
            "not found within one refresh interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "{}: a collection created through another proxy was found after {} ms (refresh interval {} ms)",
        setup.label(),
        found_after.as_millis(),
        refresh.as_millis()
    );
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    cluster.stop().await;
}

/// A relay in front of MySQL is cut for 10 s during a search load through a
/// proxy that reads its metadata through the relay: no search fails,
/// `/readyz` stays 200 and says "stale", and the proxy catches up after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_outage() {
    let Some(kind) = MetaKind::mysql_or_skip("metadata_outage") else {
        return;
    };
    let cluster = Cluster::with(&kind).readers(2).start().await;
    let mut source = VectorSource::new(77);
    let mut collection: TestCollection = cluster.collection("outage", 8, L2).await;
    let rows = collection.fill(&mut source, 3, 50).await;
    let mut url = url::Url::parse(&cluster.meta_uri).unwrap();
    let upstream = (
        url.host_str().unwrap().to_string(),
        url.port().unwrap_or(3306),
    );
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(relay.addr.port())).unwrap();
    let proxy = second_proxy(&cluster, url.as_str(), |c| {
        c.topology.refresh_interval = Duration::from_millis(100);
    })
    .await;
    let up = |p: &RunningProxy| counter(p, "mishards_metadata_up", "");

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let queries = collection.vectors(&mut source, 2);
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = client_of(proxy.addr);
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let queries = queries.clone();
        load.push(tokio::spawn(async move {
            // Bounded: at most 60 s and 20000 searches per client.
            let started = Instant::now();
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let param = search_param("outage", &[], &queries, 10, "{}");
                sent.fetch_add(1, Ordering::SeqCst);
                let ok = match client.search(param).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        code_of(&r.status) == 0 && r.ids.len() == queries.len() * 10
                    }
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = http_get(proxy.metrics_addr, "/readyz").await;
    assert_eq!(
        (code, body.contains("stale")),
        (200, false),
        "before the cut: {body}"
    );

    relay.cut();
    let cut_at = Instant::now();
    let mut stale_body = None;
    while cut_at.elapsed() < Duration::from_secs(10) {
        let (code, body) = http_get(proxy.metrics_addr, "/readyz").await;
        assert_eq!(code, 200, "reads still work during the outage: {body}");
        if body.contains("stale") && stale_body.is_none() {
            stale_body = Some((cut_at.elapsed(), body));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (stale_after, stale_body) = stale_body.expect("/readyz reported stale during the cut");
    assert_eq!(up(&proxy), 0, "mishards_metadata_up during the cut");
    let sent_during_cut = sent.load(Ordering::SeqCst);

    relay.restore();
    let restored = Instant::now();
    let recovered_after = loop {
        let (_, body) = http_get(proxy.metrics_addr, "/readyz").await;
        if !body.contains("stale") && up(&proxy) == 1 {
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(20),
            "no recovery: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Caught up: a collection created after the outage is found through it.
    create_collection(&mut cluster.writer_client(), "after_outage", 8, L2).await;
    let mut client = client_of(proxy.addr);
    let seen = Instant::now();
    loop {
        let param = search_param("after_outage", &[], &queries, 1, "{}");
        if search_code("after outage", client.search(param).await) == 0 {
            break;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(10),
            "snapshot did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!(
        "metadata outage: {sent} searches sent ({sent_during_cut} by the end of the 10 s cut), \
         {failed} failed; /readyz said stale {} ms after the cut ({stale_body:?}); \
         recovered {} ms after the relay was restored; {} rows",
        stale_after.as_millis(),
        recovered_after.as_millis(),
        rows.len()
    );
    assert_eq!(failed, 0, "searches failed during the outage");
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    drop(relay);
    cluster.stop().await;
}

/// Read-only, deny list and client networks, each on its own proxy over one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(1).start().await;
    let mut source = VectorSource::new(3);
    let mut collection = cluster.collection("guarded", 8, L2).await;
    let rows = collection.fill(&mut source, 1, 20).await;
    let queries = collection.vectors(&mut source, 1);
    let name = || CollectionName {
        collection_name: "guarded".to_string(),
    };

    let read_only = second_proxy(&cluster, &cluster.meta_uri, |c| c.access.read_only = true).await;
    let mut client = client_of(read_only.addr);
    let status = grpc_ok("DropCollection", client.drop_collection(name()).await);
    assert_eq!(status.error_code, PERMISSION_DENIED, "{}", status.reason);
    assert!(status.reason.contains("read-only"), "{}", status.reason);
    let reply = grpc_ok(
        "Insert",
        client
            .insert(InsertParam {
                collection_name: "guarded".to_string(),
                row_record_array: queries.iter().map(Vector::record).collect(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code_of(&reply.status), PERMISSION_DENIED);
    let status = grpc_ok(
        "CreateCollection",
        client
            .create_collection(CollectionSchema {
                collection_name: "nope".to_string(),
                dimension: 8,
                index_file_size: 1024,
                metric_type: L2,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(status.error_code, PERMISSION_DENIED);
    let found = search(&mut client, "guarded", &[], &queries, 5).await;
    assert_eq!(found.ids.len(), 5.min(rows.len()), "reads still served");
    let has = grpc_ok("HasCollection", client.has_collection(name()).await);
    assert!(has.bool_reply);
    assert!(counter(&read_only, "mishards_access_denied_total", "read_only") >= 3);
    read_only.stop(Duration::from_secs(2)).await.unwrap();

    let deny = second_proxy(&cluster, &cluster.meta_uri, |c| {
        c.access.deny = vec!["DropCollection".into(), "DeleteByID".into()]
    })
    .await;
    let mut client = client_of(deny.addr);
    let status = grpc_ok("DropCollection", client.drop_collection(name()).await);
    assert_eq!(status.error_code, PERMISSION_DENIED, "{}", status.reason);
    let status = grpc_ok(
        "DeleteByID",
        client
            .delete_by_id(DeleteByIdParam {
                collection_name: "guarded".to_string(),
                id_array: vec![1],
                partition_tag: String::new(),
            })
            .await,
    );
    assert_eq!(status.error_code, PERMISSION_DENIED);
    let has = grpc_ok("HasCollection", client.has_collection(name()).await);
    assert!(has.bool_reply, "the denied drop did not happen");
    deny.stop(Duration::from_secs(2)).await.unwrap();

    let outside = second_proxy(&cluster, &cluster.meta_uri, |c| {
        c.access.allow_networks = vec!["10.0.0.0/8".into()]
    })
    .await;
    let refused = client_of(outside.addr).has_collection(name()).await;
    let refused = refused.expect_err("a client outside the allowed networks is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("127.0.0.1"),
        "{}",
        refused.message()
    );
    outside.stop(Duration::from_secs(2)).await.unwrap();

    let inside = second_proxy(&cluster, &cluster.meta_uri, |c| {
        c.access.allow_networks = vec!["10.0.0.0/8".into(), "127.0.0.0/8".into()]
    })
    .await;
    let has = grpc_ok(
        "HasCollection",
        client_of(inside.addr).has_collection(name()).await,
    );
    assert!(has.bool_reply);
    inside.stop(Duration::from_secs(2)).await.unwrap();
    cluster.stop().await;
}

const PASSWORD: &str = "Sup3rS3cretPw";
/// Whether a case's file passes `check-config` (only `serve` fails then).
const VALID: bool = true;

/// Runs `mishards ARGS` (at most 40 s) with debug logs and returns whether
/// it succeeded and its stdout + stderr (small: a failing start).
fn run_mishards(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_mishards"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Failing starts (a database that refuses, one that does not answer, a
/// broken file, invalid values) print what is wrong, once, never the password.
#[test]
fn failing_starts_never_print_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let serve_file = |uri: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [meta]\nuri = \"{uri}\"\n[backends]\nwritable = \"127.0.0.1:1\"\n"
        )
    };
    let mut cases = vec![
        (
            "no database",
            config(
                "closed.toml",
                serve_file(&format!(
                    "mysql://root:{PASSWORD}@127.0.0.1:{closed_port}/milvus"
                )),
            ),
            VALID,
        ),
        (
            "broken TOML",
            config(
                "broken.toml",
                format!("[meta]\nuri = \"mysql://root:{PASSWORD}@127.0.0.1/m\nx = \n"),
            ),
            !VALID,
        ),
        (
            "invalid values",
            config(
                "invalid.toml",
                format!(
                    "[meta]\nuri = \"mysql://root:{PASSWORD}@127.0.0.1\"\nnope = 1\n\
                     [backends]\nwritable = \"not an address\"\n"
                ),
            ),
            !VALID,
        ),
    ];
    if let Some(MetaKind::MySql(server)) = MetaKind::mysql_or_skip("wrong password case") {
        let mut url = url::Url::parse(&server).unwrap();
        url.set_password(Some(PASSWORD)).unwrap();
        url.set_path("/milvus");
        cases.push((
            "wrong password",
            config("denied.toml", serve_file(url.as_str())),
            VALID,
        ));
    }
    for (what, path, file_is_valid) in &cases {
        for args in [
            vec!["serve", "-c", path.as_str()],
            vec!["check-config", path.as_str()],
        ] {
            let (ok, output) = run_mishards(&args, &[]);
            let should_pass = args[0] == "check-config" && *file_is_valid;
            assert_eq!(ok, should_pass, "{what} {args:?}:\n{output}");
            eprintln!("--- {what} {args:?}:\n{output}");
            assert!(
                !output.contains(PASSWORD),
                "{what} {args:?} printed the password:\n{output}"
            );
            assert!(!output.trim().is_empty(), "{what}: says what is wrong");
            assert!(
                !output.contains("[:***@"),
                "help text left intact:\n{output}"
            );
            for line in output.lines() {
                let halves: Vec<&str> = line.split(": ").collect();
                let mut seen = std::collections::HashSet::new();
                let repeated: Vec<_> = halves
                    .iter()
                    .filter(|h| h.len() > 12 && !seen.insert(*h))
                    .collect();
                assert!(
                    repeated.is_empty(),
                    "{what}: {repeated:?} repeated in {line:?}"
                );
            }
        }
    }
    // The password in an environment override, with another bad override.
    let (_, output) = run_mishards(
        &["serve", "-c", &cases[0].1],
        &[
            (
                "MISHARDS__META__URI",
                &format!("mysql://root:{PASSWORD}@127.0.0.1:{closed_port}/x"),
            ),
            ("MISHARDS__META__NOPE", "1"),
        ],
    );
    assert!(
        !output.contains(PASSWORD),
        "env override printed the password:\n{output}"
    );
}
