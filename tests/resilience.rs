//! Slow and hung read-only nodes, deadlines and overload, end to end over
//! real gRPC on 127.0.0.1: nodes as child processes of the binary, one of
//! them frozen with SIGSTOP; an in-process cluster (writer, three read-only
//! nodes) and a second proxy whose first read-only node sits behind a TCP
//! relay the test slows down or freezes; nodes on hosts of their own
//! (network namespaces) whose links the test cuts. Every search answer is checked
//! against the brute-force oracle; each scenario is bounded in time and
//! prints its figures (`cargo test --test resilience -- --nocapture`).
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::HostCluster;
use common::processes::{self, ProcessCluster};
use common::relay::{Mode, Relay};
use common::*;
use mishards::config::Config;
use mishards::proxy::{self, RunningProxy};
use mishards::wire::{FlushParam, InsertParam, PartitionParam, Status};

const DIM: usize = 16;

/// The scenarios measure latencies: they run one at a time, not against each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster, a filled collection and its rows.
async fn filled_cluster(name: &str) -> (Cluster, TestCollection, Arc<Rows>) {
    let cluster = Cluster::start(&MetaKind::Sqlite).await;
    let mut source = VectorSource::new(7);
    let mut collection = cluster.collection(name, DIM, L2).await;
    // 12 files, so every read-only node has a share.
    let rows = Arc::new(collection.fill(&mut source, 12, 200).await);
    (cluster, collection, rows)
}

/// A proxy over `meta_uri` in front of `writer` and `readonly`, with the
/// timing every scenario here uses (1 s connect timeout, topology refreshed
/// every 100 ms), then `tweak`.
async fn proxy_with(
    meta_uri: &str,
    writer: &str,
    readonly: Vec<String>,
    tweak: impl FnOnce(&mut Config),
) -> RunningProxy {
    let mut config = proxy_config(meta_uri, writer, readonly);
    config.backends.connect_timeout = Duration::from_secs(1);
    config.topology.refresh_interval = Duration::from_millis(100);
    tweak(&mut config);
    proxy::start(config).await.expect("proxy starts")
}

/// A second proxy over the cluster, whose read-only nodes are `readonly`.
async fn proxy_over(
    cluster: &Cluster,
    readonly: Vec<String>,
    tweak: impl FnOnce(&mut Config),
) -> RunningProxy {
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    proxy_with(&cluster.meta_uri, &writer, readonly, tweak).await
}

fn ok_searches_on(proxy: &RunningProxy, backend: &str) -> f64 {
    metric(
        proxy,
        &format!(
            "mishards_backend_requests_total{{group=\"default\",backend=\"{backend}\",method=\"SearchInFiles\",outcome=\"ok\"}}"
        ),
    )
}

/// Figures of a search load.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    failed: AtomicU64,
    worst_micros: AtomicU64,
}

/// 8 clients searching through `proxy` until `until`, every answer checked
/// against the oracle (a wrong or incomplete answer fails the test).
async fn search_load(
    proxy: &RunningProxy,
    collection: &TestCollection,
    rows: &Arc<Rows>,
    until: Instant,
) -> Arc<Load> {
    let load = Arc::new(Load::default());
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let mut collection = collection.through(client_of(proxy.addr));
        let rows = rows.clone();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut source = VectorSource::new(100 + worker);
            let mut i = 0;
            while Instant::now() < until {
                let queries = source.floats(2, DIM);
                let started = Instant::now();
                let param = search_param(&collection.name, &[], &queries, 10, "{}");
                let reply = collection.client.search(param).await;
                let micros = started.elapsed().as_micros() as u64;
                load.sent.fetch_add(1, Ordering::Relaxed);
                load.worst_micros.fetch_max(micros, Ordering::Relaxed);
                match reply {
                    Ok(r) if code_of(&r.get_ref().status) == 0 => {
                        let what = format!("worker {worker} search {i}");
                        collection.check(&what, r.get_ref(), &rows, &queries, 10, Some(10));
                    }
                    Ok(r) => {
                        eprintln!("worker {worker}: status {:?}", r.get_ref().status);
                        load.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("worker {worker}: {e}");
                        load.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("search worker");
    }
    load
}

/// Searches through `proxy` until `backend` has answered a part again
/// (bounded by `limit`); the time it took.
async fn until_back(
    proxy: &RunningProxy,
    collection: &TestCollection,
    rows: &Rows,
    backend: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let before = ok_searches_on(proxy, backend);
    let mut collection = collection.through(client_of(proxy.addr));
    let mut source = VectorSource::new(99);
    while started.elapsed() < limit {
        let queries = source.floats(1, DIM);
        collection
            .expect_search("after recovery", rows, &queries, 10)
            .await;
        if ok_searches_on(proxy, backend) > before {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{backend} received no search part within {limit:?} of its recovery");
}

/// Whether `backend` is out of the proxy's rotation: ejected or marked down.
fn is_out(proxy: &RunningProxy, backend: &str) -> bool {
    metric(
        proxy,
        &format!("mishards_backend_ejected{{group=\"default\",backend=\"{backend}\"}}"),
    ) == 1.0
        || metric(
            proxy,
            &format!("mishards_backend_up{{group=\"default\",backend=\"{backend}\"}}"),
        ) == 0.0
}

/// What one misbehaving-reader run observed.
struct Misbehaviour {
    load: Arc<Load>,
    /// From the start of the misbehaviour to the node being taken out.
    routed_around: Option<Duration>,
    /// From its end to the node answering a part again, during the load.
    back_during_load: Option<Duration>,
    /// The same, measured after the load when it was not back during it.
    after_load: Duration,
    hedged: f64,
}

impl std::fmt::Display for Misbehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, failed {}, hedged {}, worst latency {:?}; ejected or marked down {:?} after \
             it turned bad; answering parts again {:?} after it recovered (None: not before the \
             load ended; then {:?} after the load)",
            self.load.sent.load(Ordering::Relaxed),
            self.load.failed.load(Ordering::Relaxed),
            self.hedged,
            Duration::from_micros(self.load.worst_micros.load(Ordering::Relaxed)),
            self.routed_around,
            self.back_during_load,
            self.after_load,
        )
    }
}

/// 20 s of an 8-client search load through `proxy` (every answer checked
/// against the oracle); 2 s in, `turn_bad` makes the read-only node
/// `backend` misbehave for 10 s, then `turn_good` ends it.
async fn misbehaving_reader_run(
    proxy: &RunningProxy,
    collection: &TestCollection,
    rows: &Arc<Rows>,
    backend: &str,
    turn_bad: impl FnOnce(),
    turn_good: impl FnOnce(),
) -> Misbehaviour {
    // Warm up: every node answers and the latency windows fill.
    until_back(proxy, collection, rows, backend, Duration::from_secs(10)).await;
    let load_end = Instant::now() + Duration::from_secs(20);
    let misbehave = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        turn_bad();
        let bad_since = Instant::now();
        while !is_out(proxy, backend) && bad_since.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let routed_around = is_out(proxy, backend).then(|| bad_since.elapsed());
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(bad_since.elapsed())).await;
        let before = ok_searches_on(proxy, backend);
        turn_good();
        let resumed = Instant::now();
        // Polled while the load goes on, bounded by the load's end.
        while ok_searches_on(proxy, backend) <= before && Instant::now() < load_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let back = (ok_searches_on(proxy, backend) > before).then(|| resumed.elapsed());
        (routed_around, back)
    };
    let (load, (routed_around, back_during_load)) =
        tokio::join!(search_load(proxy, collection, rows, load_end), misbehave);
    let after_load = until_back(proxy, collection, rows, backend, Duration::from_secs(30)).await;
    Misbehaviour {
        load,
        routed_around,
        back_during_load,
        after_load,
        hedged: metric(proxy, "mishards_hedged_requests_total"),
    }
}

/// The checks every misbehaving-reader run must pass.
fn assert_searches_rode_it_out(name: &str, run: &Misbehaviour) {
    let sent = run.load.sent.load(Ordering::Relaxed);
    assert_eq!(
        run.load.failed.load(Ordering::Relaxed),
        0,
        "{name}: failed searches"
    );
    assert!(
        run.routed_around.is_some(),
        "{name}: the node was never taken out"
    );
    assert!(sent > 50, "{name}: only {sent} searches in 20 s");
    // The issue's bound: hedge delay (at most hedge_max_delay, 1 s) + 1 s.
    // Measured alone on the shared 2-core machine: about 0.5 s.
    let worst = Duration::from_micros(run.load.worst_micros.load(Ordering::Relaxed));
    assert!(
        worst < Duration::from_secs(2),
        "{name}: a search took {worst:?}"
    );
}

/// One of three read-only nodes hangs (frozen relay, like SIGSTOP) or turns
/// slow (relay adding 2 s) for 10 s of a 20 s load of 8 clients: no search fails
/// or is incomplete, none is slower than the largest hedge delay (1 s) plus
/// a margin for this shared machine; back to normal, the node gets files again.
async fn slow_reader_scenario(mode: Mode, name: &str) {
    let (cluster, collection, rows) = filled_cluster(name).await;
    let readers = cluster.reader_addrs();
    let relay = Relay::start(readers[0]).await;
    let relayed = relay.addr.to_string();
    let readonly = vec![
        relayed.clone(),
        readers[1].to_string(),
        readers[2].to_string(),
    ];
    let proxy = proxy_over(&cluster, readonly, |_| {}).await;
    let run = misbehaving_reader_run(
        &proxy,
        &collection,
        &rows,
        &relayed,
        || relay.set(mode),
        || relay.set(Mode::Pass),
    )
    .await;
    eprintln!(
        "FIGURES {name} ({mode:?} for 10 s of a 20 s load, 8 clients): {run}; ejected now {}",
        metric(&proxy, "mishards_backend_ejected{"),
    );
    assert_searches_rode_it_out(name, &run);
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    drop(relay);
    cluster.stop().await;
}

/// `kill -STOP` on one of three read-only nodes, each its own process of
/// the real binary (over MySQL), for 10 s of a 20 s load of 8 clients: no
/// search fails or is incomplete, none is slower than the largest hedge
/// delay (1 s) plus 1 s; after `kill -CONT` the node gets files again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_reader_is_hedged_ejected_and_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "sigstopped_reader_is_hedged_ejected_and_back";
    let Some(nodes) = ProcessCluster::start(test, 3).await else {
        return;
    };
    init_logging();
    let writer = nodes.writer.addr.to_string();
    let proxy = proxy_with(&nodes.meta_uri, &writer, nodes.reader_addrs(), |_| {}).await;
    let mut client = client_of(proxy.addr);
    create_collection(&mut client, "sigstop", DIM as i64, L2).await;
    let mut collection = TestCollection::new(client, "mysql", "sigstop", DIM, L2);
    // 12 files, so every read-only node has a share.
    let rows = Arc::new(collection.fill(&mut VectorSource::new(7), 12, 200).await);
    let frozen = &nodes.readers[0];
    let frozen_addr = frozen.addr.to_string();
    let run = misbehaving_reader_run(
        &proxy,
        &collection,
        &rows,
        &frozen_addr,
        || frozen.freeze(),
        || frozen.thaw(),
    )
    .await;
    eprintln!(
        "FIGURES sigstop (kill -STOP pid {} for 10 s of a 20 s load, 8 clients, nodes as \
         processes; bad = SIGSTOP, recovered = SIGCONT): {run}",
        frozen.pid(),
    );
    assert_searches_rode_it_out("sigstop", &run);
    proxy.stop(Duration::from_secs(2)).await.unwrap();
}

/// The proxy (in this process, over the cluster's MySQL database) in front
/// of every node of `nodes` (see [`proxy_with`]).
async fn proxy_over_hosts(nodes: &HostCluster, tweak: impl FnOnce(&mut Config)) -> RunningProxy {
    init_logging();
    let writer = nodes.writer.addr.to_string();
    proxy_with(&nodes.meta_uri, &writer, nodes.reader_addrs(), tweak).await
}

/// A read-only node on its own host (network namespace, veth link, its own
/// JuiceFS mount, MySQL and Redis reached over that link) loses its link for
/// 10 s of a 20 s load of 8 clients: packets vanish both ways, no reset, no
/// ICMP. No search fails or is incomplete, none is slower than the largest
/// hedge delay (1 s) plus 1 s; with the link back, the node gets files again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_link_cut_for_10s_is_hedged_and_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "reader_link_cut_for_10s_is_hedged_and_back";
    let Some(nodes) = HostCluster::start(test, 3).await else {
        return;
    };
    let proxy = proxy_over_hosts(&nodes, |_| {}).await;
    let mut client = client_of(proxy.addr);
    create_collection(&mut client, "linkcut", DIM as i64, L2).await;
    let mut collection = TestCollection::new(client, "hosts", "linkcut", DIM, L2);
    // 12 files, so every read-only node has a share.
    let rows = Arc::new(collection.fill(&mut VectorSource::new(7), 12, 200).await);
    let host = nodes.reader_host(0);
    let cut_addr = nodes.readers[0].addr.to_string();
    let run = misbehaving_reader_run(
        &proxy,
        &collection,
        &rows,
        &cut_addr,
        || host.cut(),
        || host.restore(),
    )
    .await;
    eprintln!(
        "FIGURES reader link cut (host {} at {cut_addr}: blackhole both ways for 10 s of a 20 s \
         load, 8 clients; nodes on their own hosts and JuiceFS mounts): {run}",
        host.name
    );
    assert_searches_rode_it_out("reader link cut", &run);
    proxy.stop(Duration::from_secs(2)).await.unwrap();
}

/// The outcome of one write sent while the writer's link was cut.
struct CutWrite {
    what: &'static str,
    took: Duration,
    answer: String,
}

/// The writable node's link is cut for the length of three writes while 8
/// clients search another collection: the searches go on (0 failed, each
/// checked against the oracle); each write fails within its deadline (3 s
/// here) with a status naming the writer; every write acknowledged before
/// the cut is there afterwards, and writes work again once the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_link_cut_fails_writes_in_time_and_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "writer_link_cut_fails_writes_in_time_and_loses_nothing";
    let Some(nodes) = HostCluster::start(test, 2).await else {
        return;
    };
    const DEADLINE: Duration = Duration::from_secs(3);
    let proxy = proxy_over_hosts(&nodes, |c| c.deadlines.other = DEADLINE).await;
    let writer = nodes.writer.addr.to_string();
    let mut client = client_of(proxy.addr);
    create_collection(&mut client, "searched", DIM as i64, L2).await;
    create_collection(&mut client, "written", DIM as i64, L2).await;
    let mut searched = TestCollection::new(client.clone(), "hosts", "searched", DIM, L2);
    let mut written = TestCollection::new(client.clone(), "hosts", "written", DIM, L2);
    let mut source = VectorSource::new(17);
    let rows = Arc::new(searched.fill(&mut source, 8, 200).await);
    // Acknowledged before the cut: these must all be there afterwards.
    let acknowledged = written.fill(&mut source, 3, 100).await;

    let load_end = Instant::now() + Duration::from_secs(16);
    let host = nodes.writer_host();
    let cut = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        host.cut();
        let cut_at = Instant::now();
        let mut outcomes = Vec::new();
        let vectors = written.vectors(&mut source, 50);
        let mut c = client.clone();
        let t = Instant::now();
        let r = c.insert(insert_param("written", &vectors)).await;
        outcomes.push(CutWrite {
            what: "Insert",
            took: t.elapsed(),
            answer: answer(&r.map(|r| r.into_inner().status)),
        });
        let t = Instant::now();
        let r = c.flush(flush_param("written")).await;
        outcomes.push(CutWrite {
            what: "Flush",
            took: t.elapsed(),
            answer: answer(&r.map(|r| Some(r.into_inner()))),
        });
        let t = Instant::now();
        let r = c
            .create_partition(partition_param("written", "during_cut"))
            .await;
        outcomes.push(CutWrite {
            what: "CreatePartition",
            took: t.elapsed(),
            answer: answer(&r.map(|r| Some(r.into_inner()))),
        });
        let cut_for = cut_at.elapsed();
        host.restore();
        let restored = Instant::now();
        // Writes work again: the first insert the writer acknowledges.
        let vectors = written.vectors(&mut source, 50);
        let mut attempts = 0;
        let ids = loop {
            attempts += 1;
            match c.insert(insert_param("written", &vectors)).await {
                Ok(r) if code_of(&r.get_ref().status) == 0 => break r.into_inner().vector_id_array,
                other => {
                    assert!(
                        restored.elapsed() < Duration::from_secs(60),
                        "writes did not work again within 60 s of the link's return: {:?}",
                        other.map(|r| r.into_inner().status)
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let back_after = restored.elapsed();
        (outcomes, cut_for, back_after, attempts, vectors, ids)
    };
    let (load, (outcomes, cut_for, back_after, attempts, vectors, ids)) =
        tokio::join!(search_load(&proxy, &searched, &rows, load_end), cut);
    written.flush().await;

    let sent = load.sent.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    let worst = Duration::from_micros(load.worst_micros.load(Ordering::Relaxed));
    let writes: Vec<String> = outcomes
        .iter()
        .map(|w| format!("{} failed after {:?}: {}", w.what, w.took, w.answer))
        .collect();
    eprintln!(
        "FIGURES writer link cut (host {} at {writer}, cut {cut_for:?}): searches sent {sent}, \
         failed {failed}, worst latency {worst:?}; {}; writes acknowledged again {back_after:?} \
         after the link's return ({attempts} attempts)",
        host.name,
        writes.join("; ")
    );
    assert_eq!(
        failed, 0,
        "searches failed while only the writer was cut off"
    );
    assert!(sent > 50, "only {sent} searches in 16 s");
    for w in &outcomes {
        assert!(
            w.took < DEADLINE + Duration::from_secs(1),
            "{} took {:?}, past its {DEADLINE:?} deadline: {}",
            w.what,
            w.took,
            w.answer
        );
        assert!(
            w.answer.contains("error") && w.answer.contains(&writer),
            "{} did not fail naming the writable node {writer}: {}",
            w.what,
            w.answer
        );
    }
    // Nothing acknowledged is lost: each acknowledged row is its own best hit.
    let mut after = acknowledged.clone();
    after.add(&ids, &vectors);
    for (id, vector) in after.rows.iter().step_by(7) {
        let reply = written.search(&[], std::slice::from_ref(vector), 1).await;
        assert_eq!(
            reply.ids.first(),
            Some(id),
            "acknowledged row {id} is missing after the cut"
        );
    }
    proxy.stop(Duration::from_secs(2)).await.unwrap();
}

/// A write's answer as text: `ok`, or `error <code>: <reason>` for a Milvus
/// status or a gRPC error.
fn answer(result: &Result<Option<Status>, tonic::Status>) -> String {
    match result {
        Ok(status) if code_of(status) == 0 => "ok".to_string(),
        Ok(Some(s)) => format!("error {}: {}", s.error_code, s.reason),
        Ok(None) => "ok".to_string(),
        Err(e) => format!("error gRPC {:?}: {}", e.code(), e.message()),
    }
}

fn insert_param(name: &str, vectors: &[Vector]) -> InsertParam {
    InsertParam {
        collection_name: name.to_string(),
        row_record_array: vectors.iter().map(Vector::record).collect(),
        ..Default::default()
    }
}

fn flush_param(name: &str) -> FlushParam {
    FlushParam {
        collection_name_array: vec![name.to_string()],
    }
}

fn partition_param(name: &str, tag: &str) -> PartitionParam {
    PartitionParam {
        collection_name: name.to_string(),
        tag: tag.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_slowed_by_two_seconds_is_hedged() {
    let _serial = ONE_AT_A_TIME.lock().await;
    slow_reader_scenario(Mode::Delay(Duration::from_secs(2)), "slow_reader").await;
}

/// Every request has a deadline: the client's, or the configured default;
/// past it the answer is DEADLINE_EXCEEDED at once, whatever the nodes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_bound_searches_on_hung_nodes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cluster, collection, _rows) = filled_cluster("deadlines").await;
    let mut relays = Vec::new();
    for addr in cluster.reader_addrs() {
        relays.push(Relay::start(addr).await);
    }
    let readonly = relays.iter().map(|r| r.addr.to_string()).collect();
    let proxy = proxy_over(&cluster, readonly, |c| {
        c.deadlines.search = Duration::from_millis(800);
    })
    .await;
    let mut client = client_of(proxy.addr);
    let mut source = VectorSource::new(5);
    let param = search_param(&collection.name, &[], &source.floats(1, DIM), 10, "{}");
    // Healthy first, then every read-only node hangs.
    let reply = client.search(param.clone()).await.unwrap();
    assert_eq!(code_of(&reply.get_ref().status), 0);
    for r in &relays {
        r.set(Mode::Freeze);
    }
    // Both cases within 2 s of the freeze: the health probe (2 s timeout)
    // has not yet marked the nodes down, so the searches wait on them.
    let series = "mishards_deadline_exceeded_total{method=\"Search\"}";
    let started = Instant::now();
    let e = client.search(param.clone()).await.unwrap_err();
    let default_case = started.elapsed();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("deadline"), "{}", e.message());
    assert_eq!(metric(&proxy, series), 1.0);

    let mut with_client_deadline = tonic::Request::new(param);
    with_client_deadline.set_timeout(Duration::from_millis(400));
    let started = Instant::now();
    let e = client.search(with_client_deadline).await.unwrap_err();
    let client_case = started.elapsed();
    // tonic's client keeps the deadline it sends as well and usually gives
    // up first (CANCELLED "Timeout expired"), so which side ends the call is
    // a race; the proxy's handling of grpc-timeout is unit-tested in
    // `proxy::deadline`. Either way nobody waits past the deadline.
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e}"
    );
    eprintln!(
        "FIGURES deadlines: client grpc-timeout 400 ms answered in {client_case:?}; \
         default 800 ms answered in {default_case:?}"
    );
    assert!(client_case < Duration::from_millis(900), "{client_case:?}");
    assert!(
        default_case >= Duration::from_millis(800) && default_case < Duration::from_millis(1300),
        "{default_case:?}"
    );
    for r in &relays {
        r.set(Mode::Pass);
    }
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    cluster.stop().await;
}

/// RSS of this test process (the proxy, the nodes and the clients), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// A flood of searches over the limits: the ones shed are answered
/// RESOURCE_EXHAUSTED promptly, the ones accepted complete correctly, and
/// memory stays bounded. The read-only nodes sit behind relays adding 2 s,
/// so accepted searches hold their slots for a while without the scans of
/// this in-process cluster taking the 2 cores from the proxy (in production
/// the nodes run elsewhere; here they would share the proxy's CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_heavy_searches_is_shed_promptly() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cluster, collection, rows) = filled_cluster("flood").await;
    let mut relays = Vec::new();
    for addr in cluster.reader_addrs() {
        let relay = Relay::start(addr).await;
        relay.set(Mode::Delay(Duration::from_secs(2)));
        relays.push(relay);
    }
    let readonly = relays.iter().map(|r| r.addr.to_string()).collect();
    let proxy = proxy_over(&cluster, readonly, |c| {
        c.admission.max_inflight_searches = 8;
        // Four heavy searches (nq 50 x topk 1000) at once.
        c.admission.max_queued_work = 200_000;
        // The relays' 2 s are the nodes' normal latency here: no hedging.
        c.slow_nodes.hedge_delay = Duration::from_secs(10);
    })
    .await;
    let rss_before = rss_mib();
    let peak_rss = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_mib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let clients = 64u64;
    let start = Arc::new(tokio::sync::Barrier::new(clients as usize + 1));
    let replies_in = Arc::new(tokio::sync::Barrier::new(clients as usize));
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut collection = collection.through(client_of(proxy.addr));
        let rows = rows.clone();
        let start = start.clone();
        let replies_in = replies_in.clone();
        // Even workers heavy (nq 50 x topk 1000), odd ones light (nq 1 x topk 10).
        let (nq, topk) = if worker % 2 == 0 { (50, 1000) } else { (1, 10) };
        tasks.push(tokio::spawn(async move {
            // Connected before the flood, so only the searches are timed.
            cmd(&mut collection.client, "version").await;
            let queries = VectorSource::new(500 + worker).floats(nq, DIM);
            let param = search_param(&collection.name, &[], &queries, topk as i64, "{}");
            start.wait().await;
            let started = Instant::now();
            let reply = collection.client.search(param).await;
            let took = started.elapsed();
            // Checked once every reply is in: the oracle's brute force would
            // take this runtime's threads from the clients still timing.
            replies_in.wait().await;
            match reply {
                Ok(r) => {
                    assert_eq!(code_of(&r.get_ref().status), 0, "{:?}", r.get_ref().status);
                    collection.check("accepted", r.get_ref(), &rows, &queries, topk, None);
                    (true, took)
                }
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
                    assert!(
                        e.message().contains("admission.max_inflight_searches")
                            || e.message().contains("admission.max_queued_work"),
                        "{}",
                        e.message()
                    );
                    (false, took)
                }
            }
        }));
    }
    // While the accepted searches hold the limits (the nodes take 2 s), one
    // search at a time: how long a client waits for its refusal.
    let mut probe = collection.through(client_of(proxy.addr));
    cmd(&mut probe.client, "version").await;
    start.wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lone_sheds = Vec::new();
    for i in 0..20 {
        let queries = VectorSource::new(900 + i).floats(1, DIM);
        let param = search_param(&probe.name, &[], &queries, 10, "{}");
        let started = Instant::now();
        let e = probe.client.search(param).await.unwrap_err();
        lone_sheds.push(started.elapsed());
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    }
    lone_sheds.sort();
    let mut accepted = Vec::new();
    let mut shed = Vec::new();
    for t in tasks {
        let (ok, took) = t.await.expect("flood worker");
        if ok {
            accepted.push(took);
        } else {
            shed.push(took);
        }
    }
    sampler.abort();
    // A reply too large for one message (6000 x 16384 x 12 bytes > 1 GiB) is
    // refused up front, though Milvus' own nq and topk limits allow it.
    let mut client = client_of(proxy.addr);
    let mut huge = search_param(
        &collection.name,
        &[],
        &VectorSource::new(1).floats(1, DIM),
        16384,
        "{}",
    );
    huge.query_record_array = vec![huge.query_record_array[0].clone(); 6000];
    let started = Instant::now();
    let e = client.search(huge).await.unwrap_err();
    let huge_took = started.elapsed();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(
        e.message().contains("server.max_message_size"),
        "{}",
        e.message()
    );

    shed.sort();
    accepted.sort();
    let worst_shed = shed.last().copied().unwrap_or_default();
    let median_shed = shed.get(shed.len() / 2).copied().unwrap_or_default();
    let worst_accepted = accepted.last().copied().unwrap_or_default();
    let peak = peak_rss.load(Ordering::Relaxed);
    eprintln!(
        "FIGURES flood ({clients} clients at once, half nq 50 x topk 1000, half nq 1 x topk 10; \
         limits 8 in flight / 200000 work; nodes +2 s): accepted {}, shed {} (inflight {}, \
         queued_work {}), shed answered in median {median_shed:?} worst {worst_shed:?}; slowest \
         accepted {worst_accepted:?}; oversized reply refused in {huge_took:?}; test process \
         (proxy + 4 nodes + clients) RSS {rss_before} MiB before, peak {peak} MiB; then 20 \
         searches one at a time while full: refused in median {:?}, worst {:?}",
        accepted.len(),
        shed.len(),
        metric(&proxy, "mishards_shed_requests_total{reason=\"inflight\"}"),
        metric(
            &proxy,
            "mishards_shed_requests_total{reason=\"queued_work\"}"
        ),
        lone_sheds[lone_sheds.len() / 2],
        lone_sheds[lone_sheds.len() - 1],
    );
    assert!(accepted.len() <= 8, "at most 8 in flight");
    assert!(!accepted.is_empty() && shed.len() >= 56);
    // How promptly refusals come is reported above, not asserted (timing on a
    // shared 2-core machine); `shed_latency_with_node_processes` measures it
    // with the nodes, and the proxy, out of this process.
    assert!(
        peak < rss_before + 512,
        "RSS grew from {rss_before} to {peak} MiB"
    );
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    drop(relays);
    cluster.stop().await;
}

/// One burst of `clients` searches at once through `addr` (even workers
/// heavy: nq 50 x topk 1000, odd ones light: nq 1 x topk 10), each client
/// connected beforehand; the latencies of the accepted and of the shed ones.
/// Accepted answers are checked against the oracle; a refusal must be
/// RESOURCE_EXHAUSTED.
async fn burst(
    addr: std::net::SocketAddr,
    collection: &TestCollection,
    rows: &Arc<Rows>,
    clients: u64,
    seed: u64,
) -> (Vec<Duration>, Vec<Duration>) {
    let start = Arc::new(tokio::sync::Barrier::new(clients as usize));
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut collection = collection.through(client_of(addr));
        let rows = rows.clone();
        let start = start.clone();
        let (nq, topk) = if worker % 2 == 0 { (50, 1000) } else { (1, 10) };
        tasks.push(tokio::spawn(async move {
            cmd(&mut collection.client, "version").await;
            let queries = VectorSource::new(seed + worker).floats(nq, DIM);
            let param = search_param(&collection.name, &[], &queries, topk as i64, "{}");
            start.wait().await;
            let started = Instant::now();
            let reply = collection.client.search(param).await;
            let took = started.elapsed();
            // Checked once every reply is in: the oracle's brute force would
            // take this runtime's threads from the clients still timing.
            start.wait().await;
            match reply {
                Ok(r) => {
                    assert_eq!(code_of(&r.get_ref().status), 0, "{:?}", r.get_ref().status);
                    collection.check("accepted", r.get_ref(), &rows, &queries, topk, None);
                    (true, took)
                }
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
                    (false, took)
                }
            }
        }));
    }
    let (mut accepted, mut shed) = (Vec::new(), Vec::new());
    for t in tasks {
        let (ok, took) = t.await.expect("burst worker");
        if ok {
            accepted.push(took);
        } else {
            shed.push(took);
        }
    }
    (accepted, shed)
}

/// "median / p99 / max" of `latencies` (sorted here), in ms.
fn spread(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!(
        "{:.1} / {:.1} / {:.1} ms (n {})",
        at(0.5),
        at(0.99),
        at(1.0),
        latencies.len()
    )
}

/// How fast a flood is shed, measured without the in-process cluster's
/// shared runtime: the nodes are child processes (their scans of the
/// accepted heavy searches hold the limits), and the same bursts of 64
/// searches go to a proxy in this process and to a proxy run as its own
/// process (`mishards serve`, same build profile as the test). Reports
/// median / p99 / max of the shed answers' latency; asserts no timing.
/// `cargo test [--release] --test resilience shed_latency -- --ignored --nocapture`
/// (needs `MISHARDS_TEST_MYSQL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name"]
async fn shed_latency_with_node_processes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nodes) = ProcessCluster::start("shed_latency_with_node_processes", 3).await else {
        return;
    };
    let readonly = nodes.reader_addrs();
    let writer = nodes.writer.addr.to_string();
    let mut config = proxy_config(&nodes.meta_uri, &writer, readonly.clone());
    config.backends.connect_timeout = Duration::from_secs(1);
    config.topology.refresh_interval = Duration::from_millis(100);
    config.admission.max_inflight_searches = 8;
    config.admission.max_queued_work = 200_000;
    config.slow_nodes.hedge_delay = Duration::from_secs(10);
    let in_process = proxy::start(config).await.expect("proxy starts");
    let mut client = client_of(in_process.addr);
    create_collection(&mut client, "shed", DIM as i64, L2).await;
    let mut collection = TestCollection::new(client, "mysql", "shed", DIM, L2);
    let rows = Arc::new(collection.fill(&mut VectorSource::new(7), 12, 200).await);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[meta]
uri = "{}"
[backends]
writable = "{writer}"
readonly = [{}]
connect_timeout = "1s"
[topology]
refresh_interval = "100ms"
[admission]
max_inflight_searches = 8
max_queued_work = 200000
[slow_nodes]
hedge_delay = "10s"
[log]
level = "warn"
"#,
        nodes.meta_uri,
        readonly
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let own_process = processes::proxy_process(nodes.data_dir.path(), &toml);
    // Both proxies connected to every node before the bursts.
    for addr in [in_process.addr, own_process.addr] {
        let mut through = collection.through(client_of(addr));
        let queries = VectorSource::new(3).floats(1, DIM);
        for _ in 0..6 {
            through.expect_search("warm-up", &rows, &queries, 10).await;
        }
    }
    let rounds = 3;
    let mut figures = Vec::new();
    for (label, addr) in [
        ("proxy in the test process", in_process.addr),
        ("proxy as its own process", own_process.addr),
    ] {
        let (mut accepted, mut shed) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let (a, s) = burst(addr, &collection, &rows, 64, 1000 * round).await;
            accepted.extend(a);
            shed.extend(s);
        }
        figures.push(format!(
            "{label}: {rounds} bursts of 64, accepted {}, shed {}; shed answered in median / p99 / \
             max {}; accepted in {}",
            accepted.len(),
            shed.len(),
            spread(&mut shed),
            spread(&mut accepted)
        ));
    }
    eprintln!(
        "FIGURES shed latency ({} build; nodes as processes; limits 8 in \
         flight / 200000 work):\n  {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        figures.join("\n  ")
    );
    in_process.stop(Duration::from_secs(2)).await.unwrap();
    drop(own_process);
}
