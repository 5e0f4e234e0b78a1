//! Shard groups: g2's writer goes away while several clients stream inserts
//! into two spread collections over three groups, one with the clients' own
//! ids and one whose ids the proxy generates: killed (SIGKILL of its real
//! process, then a new process on the same address and data), cut off (a
//! relay closes the proxy's connections; the process goes on) or stalled
//! (the relay delays what the proxy sends past its backend timeout). Then
//! every failed insert is retried once and the rows are checked one by one:
//! every acknowledged row is there (a killed writer replays its write-ahead
//! log), a failed insert left nothing (or its error
//! said which ids to delete before the retry), the retry duplicated nothing,
//! and each error named g2. Over SQLite and MySQL.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::processes::{node_on, ChildServer};
use common::relay::Relay;
use common::*;
use mishards::config::{Config, GroupConfig};
use mishards::proxy::{self, RunningProxy};
use mishards::shard::owner::owner_of;
use mishards::wire::*;

on_both_databases!(
    writer_killed_mid_stream,
    writer_cut_off_mid_stream,
    writer_stalled_mid_stream
);

/// How g2's writer is taken away mid-stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// SIGKILL of its process; then a new process on the same address and data.
    Kill,
    /// Every connection of the proxy to it cut by a relay (the process goes
    /// on, keeping what it received); then the relay passes again.
    Cut,
    /// What the proxy sends it arrives [`STALL`] later, past the proxy's
    /// backend timeout [`STALLED_TIMEOUT`]: the proxy gives up on parts the
    /// writer then takes (an outcome the proxy cannot know); then the relay
    /// passes again.
    Stall,
}

const STALL: Duration = Duration::from_secs(3);
const STALLED_TIMEOUT: Duration = Duration::from_secs(2);

async fn writer_killed_mid_stream(setup: Setup) {
    writer_lost_mid_stream(setup, Fault::Kill).await
}

async fn writer_cut_off_mid_stream(setup: Setup) {
    writer_lost_mid_stream(setup, Fault::Cut).await
}

async fn writer_stalled_mid_stream(setup: Setup) {
    writer_lost_mid_stream(setup, Fault::Stall).await
}

const GROUPS: usize = 3;
/// The group whose writer is killed: g2.
const KILLED: usize = 1;
const DIM: usize = 8;
const BATCH: usize = 40;
/// Client tasks per collection.
const TASKS: usize = 2;
/// At most this many inserts per task, whatever happens.
const MAX_BATCHES: usize = 300;

/// One group: a writable and a read-only node, each its own `mishards` process.
struct ProcessGroup {
    name: String,
    writer: Option<ChildServer>,
    writer_addr: std::net::SocketAddr,
    reader: ChildServer,
    /// In front of the writer, when the proxy reaches it through one.
    relay: Option<Relay>,
    meta_uri: String,
    // Dropped last: the processes go first.
    dir: tempfile::TempDir,
    _database: Option<MysqlDatabase>,
}

impl ProcessGroup {
    async fn start(setup: &Setup, name: &str, relayed: bool) -> ProcessGroup {
        let dir = tempfile::tempdir().expect("tempdir");
        let (meta_uri, database) = match &setup.meta {
            MetaKind::Sqlite => (
                format!("sqlite://{}/db/meta.sqlite", dir.path().display()),
                None,
            ),
            MetaKind::MySql(server) => {
                let db = MysqlDatabase::create(server).await;
                (db.uri.clone(), Some(db))
            }
        };
        std::fs::create_dir_all(dir.path().join("db")).expect("db folder");
        // The writer first: it creates the schema the reader then finds.
        let writer = writer_process(name, "127.0.0.1:0", dir.path(), &meta_uri);
        let reader = node_on(
            &[],
            "127.0.0.1:0",
            &format!("{name} reader"),
            "ro",
            dir.path(),
            &meta_uri,
        );
        let relay = match relayed {
            true => Some(Relay::start(writer.addr).await),
            false => None,
        };
        ProcessGroup {
            name: name.to_string(),
            relay,
            writer_addr: writer.addr,
            writer: Some(writer),
            reader,
            meta_uri,
            dir,
            _database: database,
        }
    }
}

fn writer_process(group: &str, listen: &str, dir: &Path, meta_uri: &str) -> ChildServer {
    node_on(&[], listen, &format!("{group} writer"), "rw", dir, meta_uri)
}

/// An in-process proxy over `groups`, every collection spread.
async fn grouped_proxy(groups: &[ProcessGroup], request_timeout: Duration) -> RunningProxy {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.metrics.listen = "127.0.0.1:0".into();
    config.backends.connect_timeout = Duration::from_secs(1);
    config.backends.request_timeout = request_timeout;
    config.backends.search_timeout = Duration::from_secs(20);
    config.topology.refresh_interval = Duration::from_millis(100);
    for g in groups {
        config.groups.push(GroupConfig {
            name: g.name.clone(),
            meta_uri: g.meta_uri.clone(),
            writable: g
                .relay
                .as_ref()
                .map_or(g.writer_addr, |r| r.addr)
                .to_string(),
            readonly: vec![g.reader.addr.to_string()],
        });
    }
    let errors = config.validate();
    assert!(errors.is_empty(), "{errors:?}");
    proxy::start(config).await.expect("grouped proxy starts")
}

/// One insert a client task sent, and what became of it.
struct Sent {
    /// Into the collection with the clients' own ids.
    own_ids: bool,
    vectors: Vec<Vector>,
    /// The client's ids, or those the proxy answered (none when it failed).
    ids: Vec<i64>,
    started: Instant,
    done: Instant,
    /// The error's reason when it failed.
    failed: Option<String>,
}

async fn insert(
    client: &mut Client,
    collection: &str,
    vectors: &[Vector],
    ids: &[i64],
) -> Result<Vec<i64>, String> {
    let param = InsertParam {
        collection_name: collection.into(),
        row_record_array: vectors.iter().map(Vector::record).collect(),
        row_id_array: ids.to_vec(),
        partition_tag: String::new(),
        extra_params: vec![],
    };
    match client.insert(param).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            match reply.status {
                Some(s) if s.error_code != 0 => Err(format!("code {}: {}", s.error_code, s.reason)),
                _ => Ok(reply.vector_id_array),
            }
        }
        Err(status) => Err(format!("gRPC {:?}: {}", status.code(), status.message())),
    }
}

/// A client task: inserts batches until told to stop (or MAX_BATCHES).
async fn stream(
    mut client: Client,
    task: usize,
    own_ids: bool,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> Vec<Sent> {
    let mut source = VectorSource::new(100 + task as u64);
    let collection = if own_ids { "own_ids" } else { "proxy_ids" };
    let mut sent = Vec::new();
    for batch in 0..MAX_BATCHES {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let vectors = source.floats(BATCH, DIM);
        let ids: Vec<i64> = if own_ids {
            let base = (task * 1_000_000 + batch * BATCH) as i64 + 1;
            (base..base + BATCH as i64).collect()
        } else {
            vec![]
        };
        let started = Instant::now();
        let result = insert(&mut client, collection, &vectors, &ids).await;
        let done = Instant::now();
        let (ids, failed_reason) = match result {
            Ok(answered) => {
                acked.fetch_add(1, Ordering::Relaxed);
                assert_eq!(answered.len(), BATCH, "an acknowledged insert's ids");
                if own_ids {
                    assert_eq!(answered, ids, "the proxy answers the client's ids");
                }
                (answered, None)
            }
            Err(reason) => {
                failed.fetch_add(1, Ordering::Relaxed);
                // A failure comes back at once: no need to hammer.
                tokio::time::sleep(Duration::from_millis(20)).await;
                (ids, Some(reason))
            }
        };
        sent.push(Sent {
            own_ids,
            vectors,
            ids,
            started,
            done,
            failed: failed_reason,
        });
    }
    sent
}

/// The stored vector of each id (None: not found), through the proxy.
async fn get_by_id(client: &mut Client, name: &str, ids: &[i64]) -> HashMap<i64, Vec<f32>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let reply = grpc_ok(
            "GetVectorsByID",
            client
                .get_vectors_by_id(VectorsIdentity {
                    collection_name: name.into(),
                    id_array: chunk.to_vec(),
                    partition_tag: String::new(),
                })
                .await,
        );
        assert_ok("GetVectorsByID", &reply.status);
        assert_eq!(reply.vectors_data.len(), chunk.len());
        for (id, record) in chunk.iter().zip(reply.vectors_data) {
            if !record.float_data.is_empty() {
                found.insert(*id, record.float_data);
            }
        }
    }
    found
}

/// Flushes both collections through the proxy until every group answers
/// (at most `within`); how long it took.
async fn flush_until_ok(client: &mut Client, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = client
            .flush(FlushParam {
                collection_name_array: vec!["own_ids".into(), "proxy_ids".into()],
            })
            .await
            .map(|r| r.into_inner());
        match status {
            Ok(s) if s.error_code == 0 => return started.elapsed(),
            other => assert!(
                started.elapsed() < within,
                "Flush still fails after {within:?}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn floats(v: &Vector) -> &[f32] {
    match v {
        Vector::Float(f) => f,
        Vector::Binary(_) => unreachable!("float collections"),
    }
}

async fn writer_lost_mid_stream(setup: Setup, fault: Fault) {
    let test_started = Instant::now();
    let label = setup.label();
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let name = format!("g{}", g + 1);
        let relayed = fault != Fault::Kill && g == KILLED;
        groups.push(ProcessGroup::start(&setup, &name, relayed).await);
    }
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let killed_name = names[KILLED].clone();
    let request_timeout = match fault {
        Fault::Stall => STALLED_TIMEOUT,
        _ => Duration::from_secs(30),
    };
    let proxy = grouped_proxy(&groups, request_timeout).await;
    let mut client = client_of(proxy.addr);
    create_collection(&mut client, "own_ids", DIM as i64, L2).await;
    create_collection(&mut client, "proxy_ids", DIM as i64, L2).await;

    // The stream: TASKS clients per collection, inserting batches at once.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..2 * TASKS {
        tasks.push(tokio::spawn(stream(
            client_of(proxy.addr),
            task,
            task % 2 == 0,
            stop.clone(),
            acked.clone(),
            failed.clone(),
        )));
    }
    // Mid-stream: after at least 1.5 s and 8 acknowledged inserts per task.
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_millis(1500)
        || acked.load(Ordering::Relaxed) < 8 * 2 * TASKS
    {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "{label}: the stream acknowledged only {} inserts in 60 s",
            acked.load(Ordering::Relaxed)
        );
        assert_eq!(
            failed.load(Ordering::Relaxed),
            0,
            "{label}: a failure before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked_before_kill = acked.load(Ordering::Relaxed);
    let writer_pid = groups[KILLED].writer.as_ref().unwrap().pid();
    let killed_at = match fault {
        Fault::Kill => {
            let writer = groups[KILLED].writer.take().unwrap();
            writer.signal("KILL");
            let at = Instant::now();
            drop(writer); // reaps it
            at
        }
        Fault::Cut => {
            groups[KILLED].relay.as_ref().unwrap().cut();
            Instant::now()
        }
        Fault::Stall => {
            let relay = groups[KILLED].relay.as_ref().unwrap();
            relay.set(common::relay::Mode::Delay(STALL));
            Instant::now()
        }
    };
    let what = match fault {
        Fault::Kill => "SIGKILLed",
        Fault::Cut => "cut off from the proxy",
        Fault::Stall => "stalled past the proxy's timeout",
    };
    // The stream goes on against the dead writer for a while.
    while killed_at.elapsed() < Duration::from_millis(1500)
        || failed.load(Ordering::Relaxed) < 2 * TASKS
    {
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "{label}: only {} inserts failed in the 60 s after the kill",
            failed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent: Vec<Sent> = Vec::new();
    for t in tasks {
        sent.extend(t.await.expect("a client task"));
    }

    // What the stream saw.
    let ok: Vec<&Sent> = sent.iter().filter(|s| s.failed.is_none()).collect();
    let bad: Vec<&Sent> = sent.iter().filter(|s| s.failed.is_some()).collect();
    let first_failure = bad
        .iter()
        .map(|s| s.done.saturating_duration_since(killed_at))
        .min()
        .unwrap();
    let fail_latency: Vec<Duration> = bad.iter().map(|s| s.done - s.started).collect();
    let max_fail_latency = fail_latency.iter().max().copied().unwrap();
    println!(
        "{label}: {} inserts of {BATCH} rows by {} clients over {GROUPS} groups: {} acked \
         ({acked_before_kill} before g{} (pid {writer_pid}) was {what}), {} failed; first \
         failure {first_failure:?} after the kill, failed inserts answered within {max_fail_latency:?}",
        sent.len(),
        2 * TASKS,
        ok.len(),
        KILLED + 1,
        bad.len()
    );
    for s in &bad {
        let reason = s.failed.as_deref().unwrap();
        assert!(
            s.done >= killed_at,
            "{label}: an insert failed before the kill: {reason}"
        );
        assert!(
            reason.contains(&format!("{killed_name}:")),
            "{label}: a failed insert does not name {killed_name}: {reason}"
        );
    }
    for s in &ok {
        assert!(
            s.started < killed_at + Duration::from_secs(1)
                || s.ids.iter().all(|id| owner_of(*id, &names) != KILLED),
            "{label}: an insert touching {killed_name} was acknowledged well after its writer died"
        );
    }
    let sample = bad[0].failed.as_deref().unwrap();
    println!("{label}: a failed insert said: {sample}");

    // g2's writer again: a new process on the same address and data, or
    // the relay passing again.
    let restarted = Instant::now();
    match fault {
        Fault::Kill => {
            groups[KILLED].writer = Some(writer_process(
                &killed_name,
                &groups[KILLED].writer_addr.to_string(),
                groups[KILLED].dir.path(),
                &groups[KILLED].meta_uri,
            ))
        }
        Fault::Cut | Fault::Stall => groups[KILLED].relay.as_ref().unwrap().restore(),
    }
    let back = restarted.elapsed();
    let reachable = flush_until_ok(&mut client, Duration::from_secs(30)).await;
    println!(
        "{label}: {killed_name}'s writer back in {back:?}; the proxy flushed every group \
         {reachable:?} after"
    );

    // Every acknowledged row is there: the killed writer buffered again what
    // its write-ahead log held past its last flush.
    let mut present_acked = [0usize; 2];
    for own in [true, false] {
        let name = if own { "own_ids" } else { "proxy_ids" };
        let mine: Vec<&&Sent> = ok.iter().filter(|s| s.own_ids == own).collect();
        let ids: Vec<i64> = mine.iter().flat_map(|s| s.ids.iter().copied()).collect();
        let found = get_by_id(&mut client, name, &ids).await;
        for s in &mine {
            for (id, v) in s.ids.iter().zip(&s.vectors) {
                match found.get(id) {
                    Some(stored) => {
                        assert_eq!(stored.as_slice(), floats(v), "{label}: {name} row {id}");
                        present_acked[own as usize] += 1;
                    }
                    None => panic!(
                        "{label}: {name}: acknowledged row {id} (owner {}) is gone",
                        names[owner_of(*id, &names)]
                    ),
                }
            }
        }
        assert_eq!(
            found.len(),
            present_acked[own as usize],
            "{label}: {name}: an id answered twice"
        );
    }
    println!(
        "{label}: acknowledged rows present, all of them: {} with own ids, {} with proxy ids",
        present_acked[1], present_acked[0]
    );

    // Nothing of a failed insert remains (before the retry), but where its
    // error said otherwise: a part the killed group may have taken (no
    // answer) and that could not be deleted there at once. With the
    // client's ids, the error says to delete those ids before the retry;
    // with the proxy's ids, the proxy deletes them once the group answers.
    const DELETE_BEFORE_RETRY: &str = "delete those ids before the retry";
    const DELETED_LATER: &str = "will be deleted again once it answers";
    let said = |s: &Sent, what: &str| s.failed.as_deref().is_some_and(|r| r.contains(what));
    for s in &bad {
        let reason = s.failed.as_deref().unwrap();
        let (advice, other) = match s.own_ids {
            true => (DELETE_BEFORE_RETRY, DELETED_LATER),
            false => (DELETED_LATER, DELETE_BEFORE_RETRY),
        };
        assert!(!reason.contains(other), "{label}: {reason}");
        // Only the killed group is ever in doubt.
        for g in names.iter().filter(|g| **g != killed_name) {
            assert!(
                !reason.contains(&format!("{g}: backend")),
                "{label}: {g} failed too: {reason}"
            );
        }
        if reason.contains(advice) {
            assert!(
                reason.contains(&format!("{killed_name}: backend")),
                "{label}: {reason}"
            );
        }
    }
    let unsure = [true, false].map(|own| {
        let advice = if own {
            DELETE_BEFORE_RETRY
        } else {
            DELETED_LATER
        };
        bad.iter()
            .filter(|s| s.own_ids == own && said(s, advice))
            .count()
    });
    let failed_own: Vec<i64> = bad
        .iter()
        .filter(|s| s.own_ids)
        .flat_map(|s| s.ids.iter().copied())
        .collect();
    let left = get_by_id(&mut client, "own_ids", &failed_own).await;
    let mut left_by_group = vec![0usize; GROUPS];
    for id in left.keys() {
        left_by_group[owner_of(*id, &names)] += 1;
    }
    let may_be_left: std::collections::HashSet<i64> = bad
        .iter()
        .filter(|s| s.own_ids && said(s, DELETE_BEFORE_RETRY))
        .flat_map(|s| s.ids.iter().copied())
        .filter(|id| owner_of(*id, &names) == KILLED)
        .collect();
    for id in left.keys() {
        assert!(
            may_be_left.contains(id),
            "{label}: row {id} of a failed insert remains, its error did not say it might \
             (by group {left_by_group:?})"
        );
    }
    // The proxy's own deletes of the parts in doubt: within a bounded wait.
    let waited = Instant::now();
    let mut proxy_count = count(&mut client, "proxy_ids").await;
    while proxy_count != present_acked[0] as i64 && waited.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        proxy_count = count(&mut client, "proxy_ids").await;
    }
    let proxy_leftovers = proxy_count - present_acked[0] as i64;
    println!(
        "{label}: failed inserts whose part in {killed_name} was in doubt and not deleted at \
         once: {} with own ids (\"{DELETE_BEFORE_RETRY}\"), {} with proxy ids (\"{DELETED_LATER}\"); \
         rows of failed inserts left before the retry: own ids {left_by_group:?} (by group, of \
         {}), proxy ids {proxy_leftovers} after waiting {:?} (count {proxy_count} vs {} \
         acknowledged and present)",
        unsure[0],
        unsure[1],
        failed_own.len(),
        waited.elapsed(),
        present_acked[0]
    );
    assert_eq!(
        proxy_leftovers, 0,
        "{label}: proxy_ids rows nobody acknowledged remain"
    );
    // As the errors say: delete those ids, then retry.
    let doubtful: std::collections::HashSet<i64> = bad
        .iter()
        .filter(|s| s.own_ids && said(s, DELETE_BEFORE_RETRY))
        .flat_map(|s| s.ids.iter().copied())
        .collect();
    if !doubtful.is_empty() {
        delete_ids(&mut client, "own_ids", &doubtful).await;
        flush_until_ok(&mut client, Duration::from_secs(30)).await;
        assert!(
            get_by_id(&mut client, "own_ids", &failed_own)
                .await
                .is_empty(),
            "{label}: rows of failed inserts remain after deleting their ids"
        );
    }
    assert_eq!(
        count(&mut client, "own_ids").await,
        present_acked[1] as i64,
        "{label}: own_ids count before the retry"
    );

    // Every failed insert retried once: all succeed now.
    let mut retried = [0usize; 2];
    let mut retried_ids: [Vec<(i64, &Vector)>; 2] = [Vec::new(), Vec::new()];
    let retry_started = Instant::now();
    for s in &bad {
        let name = if s.own_ids { "own_ids" } else { "proxy_ids" };
        let ids = insert(&mut client, name, &s.vectors, &s.ids)
            .await
            .unwrap_or_else(|e| panic!("{label}: the retry of a failed insert failed: {e}"));
        retried[s.own_ids as usize] += ids.len();
        retried_ids[s.own_ids as usize].extend(ids.into_iter().zip(&s.vectors));
    }
    let retry_took = retry_started.elapsed();
    flush_until_ok(&mut client, Duration::from_secs(30)).await;
    for own in [true, false] {
        let name = if own { "own_ids" } else { "proxy_ids" };
        let rows = &retried_ids[own as usize];
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let found = get_by_id(&mut client, name, &ids).await;
        for (id, v) in rows {
            let stored = found
                .get(id)
                .unwrap_or_else(|| panic!("{label}: {name}: retried row {id} is missing"));
            assert_eq!(
                stored.as_slice(),
                floats(v),
                "{label}: {name} retried row {id}"
            );
        }
        let expected = (present_acked[own as usize] + retried[own as usize]) as i64;
        assert_eq!(
            count(&mut client, name).await,
            expected,
            "{label}: {name}: count after the retry (acknowledged and present + retried)"
        );
    }
    // The acknowledged rows are still there after the retry, once each.
    let ids: Vec<i64> = ok
        .iter()
        .filter(|s| s.own_ids)
        .flat_map(|s| s.ids.iter().copied())
        .collect();
    assert_eq!(
        get_by_id(&mut client, "own_ids", &ids).await.len(),
        present_acked[1],
        "{label}: own_ids acknowledged rows after the retry"
    );
    println!(
        "{label}: retried {} failed inserts once in {retry_took:?} ({} + {} rows), all \
         acknowledged; counts exact (own ids {}, proxy ids {}); test took {:?}",
        bad.len(),
        retried[1],
        retried[0],
        present_acked[1] + retried[1],
        present_acked[0] + retried[0],
        test_started.elapsed()
    );

    proxy.stop(Duration::from_secs(1)).await.unwrap();
    drop(groups);
}
