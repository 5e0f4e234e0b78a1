//! Operating the proxy: health transitions (gRPC health and `/readyz`),
//! live reconfiguration under a search load, rejected reloads, `conn_stats`
//! and the admin endpoints, and a real `mishards serve` process draining on
//! SIGTERM. Everything on 127.0.0.1 ephemeral ports, every wait bounded.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mishards::proxy::reload::ReloadOutcome;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const L2: i32 = 1;

/// The value of the series `name` (with labels, as printed) in `/metrics`.
async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_down_is_degraded_read_serving_write_not_serving() {
    let mut cluster = Cluster::with(&MetaKind::Sqlite).readers(2).start().await;
    let mut source = VectorSource::new(5);
    let mut collection = cluster.collection("health", 8, L2).await;
    let rows = collection.fill(&mut source, 4, 20).await;
    let proxy = cluster.proxy.as_ref().unwrap();
    let (addr, http) = (proxy.addr, proxy.metrics_addr);

    for service in ["", "mishards.read", "mishards.write"] {
        assert_eq!(
            health_of(addr, service).await,
            Some(ServingStatus::Serving),
            "{service:?} with every node up"
        );
    }
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            r#"{"metadata":"fresh","read":"SERVING","state":"ok","write":"SERVING"}"#
        )
    );

    // conn_stats: every node, its role, and the files the ring gives the readers.
    let stats: serde_json::Value =
        serde_json::from_str(&cmd(&mut collection.client, "conn_stats").await).unwrap();
    let backends = stats["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3, "{stats}");
    assert_eq!(backends[0]["role"], "writable", "{stats}");
    assert!(backends[0]["calls"].as_u64().unwrap() > 0, "{stats}");
    let owned: u64 = backends
        .iter()
        .map(|b| b["files_owned"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, collection.route().await.files as u64, "{stats}");
    for b in backends {
        assert_eq!(b["up"], true, "{stats}");
        assert_eq!(b["inflight"], 0, "{stats}");
        assert!(b["latency_p50_ms"].is_number(), "{stats}");
    }
    let (code, body) = http_get(http, "/admin/conn_stats").await;
    assert_eq!(code, 200);
    let over_http: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_http["backends"].as_array().unwrap().len(), 3);
    let (code, body) = http_get(http, "/admin/route/health").await;
    assert_eq!(code, 200, "{body}");
    let route: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(route["collection"], "health");
    let (code, body) = http_get(http, "/admin/route/no_such").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("CollectionNotExists"), "{body}");
    let (code, body) = http_get(http, "/admin/config").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("[backends]") && body.contains("drain_delay"),
        "{body}"
    );

    cluster.stop_writer().await;
    wait_until("write NOT_SERVING", Duration::from_secs(20), || async {
        health_of(addr, "mishards.write").await == Some(ServingStatus::NotServing)
    })
    .await;
    assert_eq!(
        health_of(addr, "mishards.read").await,
        Some(ServingStatus::Serving)
    );
    assert_eq!(health_of(addr, "").await, Some(ServingStatus::Serving));
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 200, "writer down is degraded, not unready");
    assert_eq!(
        body,
        r#"{"metadata":"fresh","read":"SERVING","state":"degraded","write":"NOT_SERVING"}"#
    );
    assert_eq!(metric(http, "mishards_write_available").await, Some(0.0));
    assert_eq!(metric(http, "mishards_read_available").await, Some(1.0));
    let queries = source.floats(2, 8);
    collection
        .expect_search("searches go on with the writer down", &rows, &queries, 5)
        .await;
    let stats: serde_json::Value =
        serde_json::from_str(&cmd(&mut collection.client, "conn_stats").await).unwrap();
    assert_eq!(stats["backends"][0]["up"], false, "{stats}");

    // Every read-only node down too: nothing can be searched, the proxy is unready.
    cluster.stop_reader(0).await;
    cluster.stop_reader(1).await;
    wait_until("read NOT_SERVING", Duration::from_secs(20), || async {
        health_of(addr, "mishards.read").await == Some(ServingStatus::NotServing)
    })
    .await;
    assert_eq!(health_of(addr, "").await, Some(ServingStatus::NotServing));
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(
        (code, body.contains(r#""state":"unavailable""#)),
        (503, true),
        "{body}"
    );
    cluster.stop().await;
}

/// Writes `config` to `path` at once (a temporary file renamed over it).
fn write_config(path: &Path, config: &mishards::config::Config) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, toml::to_string(config).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A second proxy over the cluster's nodes, started from a config file with
/// only the first two read-only nodes; a search load runs while the file
/// gains the third node (which then receives files), loses the first, and
/// finally turns invalid (rejected, the config in effect stays). Not one
/// search may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_under_search_load_fail_no_request() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(3).start().await;
    let mut source = VectorSource::new(9);
    let mut collection = cluster.collection("reload", 8, L2).await;
    let rows = Arc::new(collection.fill(&mut source, 24, 10).await);
    // Inserts of the writer check go here, away from the searched collection.
    let _ = cluster.collection("reload_writes", 8, L2).await;
    let readers: Vec<String> = cluster
        .reader_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mishards.toml");
    let mut config = cluster.proxy.as_ref().unwrap().reconfigurer.effective();
    config.backends.readonly = readers[..2].to_vec();
    config.reload.watch_interval = Duration::from_millis(100);
    write_config(&path, &config);
    let proxy = mishards::proxy::start_with(
        config.clone(),
        mishards::proxy::StartOptions {
            config_path: Some(path.clone()),
            log_level: None,
        },
    )
    .await
    .unwrap();
    let http = proxy.metrics_addr;

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let queries = Arc::new(source.floats(2, 8));
    let mut load = Vec::new();
    for _ in 0..3 {
        let mut searcher = collection.through(client_of(proxy.addr));
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let (rows, queries) = (rows.clone(), queries.clone());
        load.push(tokio::spawn(async move {
            // Bounded: at most 20k searches even if the test stalls.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let request = search_param("reload", &[], &queries, 5, "{}");
                match searcher.client.search(request).await {
                    Ok(reply) if code_of(&reply.get_ref().status) == 0 => {
                        let reply = reply.into_inner();
                        searcher.check("under reload", &reply, &rows, &queries, 5, Some(5));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("search failed during reload: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let searches_before = |n: u64| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::Relaxed) + n;
            wait_until("searches progress", Duration::from_secs(60), || {
                let done = done.clone();
                async move { done.load(Ordering::Relaxed) >= target }
            })
            .await;
        }
    };
    searches_before(20).await;

    // Join: the third node enters the ring and serves its files.
    config.backends.readonly = readers.clone();
    write_config(&path, &config);
    let third = readers[2].clone();
    wait_until("the third node owns files", Duration::from_secs(30), || {
        let third = third.clone();
        async move {
            let (_, body) = http_get(http, "/admin/conn_stats").await;
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
            stats["backends"].as_array().unwrap().iter().any(|b| {
                b["address"] == third.as_str() && b["files_owned"].as_u64().unwrap_or(0) > 0
            })
        }
    })
    .await;
    // Searches (not only health probes) reach it.
    let searched = format!(
        r#"mishards_backend_requests_total{{group="default",backend="{third}",method="SearchInFiles",outcome="ok"}}"#
    );
    wait_until(
        "the third node receives searches",
        Duration::from_secs(30),
        || {
            let searched = searched.clone();
            async move { metric(http, &searched).await.unwrap_or(0.0) > 0.0 }
        },
    )
    .await;
    searches_before(20).await;

    // Leave: the first node drains out of the ring.
    config.backends.readonly = readers[1..].to_vec();
    write_config(&path, &config);
    let first = readers[0].clone();
    wait_until("the first node leaves", Duration::from_secs(30), || {
        let first = first.clone();
        async move {
            let (_, body) = http_get(http, "/admin/conn_stats").await;
            !body.contains(&first)
        }
    })
    .await;
    searches_before(20).await;

    // A new writable address takes effect for new writes: pointed at a
    // read-only node, an insert through the proxy is refused by that node;
    // pointed back, accepted.
    let writer = config.backends.writable.clone();
    config.backends.writable = readers[1].clone();
    write_config(&path, &config);
    wait_until(
        "the new writable address applies",
        Duration::from_secs(30),
        || async { proxy.reconfigurer.effective().backends.writable == readers[1] },
    )
    .await;
    let mut writes = client_of(proxy.addr);
    let insert = |vectors: &[Vector]| mishards::wire::InsertParam {
        collection_name: "reload_writes".into(),
        row_record_array: vectors.iter().map(Vector::record).collect(),
        ..Default::default()
    };
    let refused = writes
        .insert(insert(&source.floats(1, 8)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code_of(&refused.status),
        mishards::wire::ErrorCode::PermissionDenied as i32,
        "{refused:?}"
    );
    config.backends.writable = writer;
    write_config(&path, &config);
    wait_until("the writer is back", Duration::from_secs(30), || async {
        proxy.reconfigurer.effective().backends.writable == config.backends.writable
    })
    .await;
    let accepted = writes
        .insert(insert(&source.floats(1, 8)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code_of(&accepted.status), 0, "{accepted:?}");
    searches_before(20).await;

    // An invalid file is rejected; the config in effect stays.
    std::fs::write(&path, "[backends]\nreadonly = [\"no port here\"]\n").unwrap();
    wait_until(
        "the invalid file is rejected",
        Duration::from_secs(30),
        || async {
            metric(http, r#"mishards_config_reloads_total{result="rejected"}"#).await == Some(1.0)
        },
    )
    .await;
    match proxy.reconfigurer.reload_file() {
        ReloadOutcome::Rejected(reason) => assert!(reason.contains("backends"), "{reason}"),
        other => panic!("an invalid file was applied: {other:?}"),
    }
    assert_eq!(
        proxy.reconfigurer.effective().backends.readonly,
        readers[1..].to_vec()
    );
    searches_before(20).await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let applied = metric(http, r#"mishards_config_reloads_total{result="applied"}"#).await;
    println!(
        "reload under load: {} searches ok, {} failed, reloads applied {applied:?}",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "searches failed during reloads"
    );
    assert_eq!(applied, Some(4.0));
    proxy.stop(Duration::from_secs(5)).await.unwrap();
    cluster.stop().await;
}

/// A real `mishards serve`: SIGHUP with an invalid file is rejected and
/// logged; SIGHUP with log.level raised from error to info applies it;
/// SIGTERM turns the health NOT_SERVING while calls are still
/// accepted (drain_delay), then the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_process_rejects_a_bad_reload_and_drains_on_sigterm() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(1).start().await;
    let _ = cluster.collection("drain", 8, L2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mishards.toml");
    let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut config = cluster.proxy.as_ref().unwrap().reconfigurer.effective();
    config.server.listen = grpc_port.to_string();
    config.server.drain_delay = Duration::from_secs(3);
    config.server.shutdown_grace = Duration::from_secs(20);
    config.reload.watch_interval = Duration::ZERO; // SIGHUP only
    config.log.level = "error".into(); // info lines appear only once a reload sets "info"
    write_config(&path, &config);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let log_writer = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            log_writer.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let addr = grpc_port;
    wait_until("the process serves", Duration::from_secs(30), || async {
        health_of(addr, "").await == Some(ServingStatus::Serving)
    })
    .await;

    std::fs::write(&path, "[backends]\nwritable = \"nowhere\"\n").unwrap();
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("-HUP");
    wait_until(
        "the rejected reload is logged",
        Duration::from_secs(20),
        || {
            let log = log.clone();
            async move {
                log.lock()
                    .unwrap()
                    .contains("configuration reload rejected")
            }
        },
    )
    .await;
    assert_eq!(
        health_of(addr, "mishards.write").await,
        Some(ServingStatus::Serving)
    );
    assert!(
        !log.lock().unwrap().contains("SIGHUP: reloading"),
        "an info line at level error"
    );

    // A valid file setting log.level = "info": the level changes live.
    config.log.level = "info".into();
    write_config(&path, &config);
    kill("-HUP");
    wait_until("the new log level applies", Duration::from_secs(20), || {
        let log = log.clone();
        async move { log.lock().unwrap().contains("configuration reloaded") }
    })
    .await;

    // A Watch stream opened before SIGTERM hears NOT_SERVING, then ends.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let watched = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(reply)) = watch.message().await {
            seen.push(ServingStatus::try_from(reply.status).unwrap());
        }
        seen
    });

    kill("-TERM");
    let sigterm_at = Instant::now();
    wait_until(
        "NOT_SERVING during the drain",
        Duration::from_secs(3),
        || async { health_of(addr, "").await == Some(ServingStatus::NotServing) },
    )
    .await;
    assert_eq!(
        health_of(addr, "mishards.read").await,
        Some(ServingStatus::NotServing)
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the process did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", log.lock().unwrap());
    // The open Watch stream did not hold the exit for the 20s shutdown grace.
    assert!(
        sigterm_at.elapsed() < Duration::from_secs(15),
        "exit took {:?}",
        sigterm_at.elapsed()
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), watched)
        .await
        .expect("the Watch stream ended")
        .unwrap();
    assert_eq!(
        seen.first().copied(),
        Some(ServingStatus::Serving),
        "{seen:?}"
    );
    assert!(seen.contains(&ServingStatus::NotServing), "{seen:?}");
    cluster.stop().await;
}
