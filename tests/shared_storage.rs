//! Read-your-writes on a caching shared file system. Once the proxy has
//! acknowledged a write (insert + flush, delete + flush, an index build,
//! a compaction, an index drop), no search through it returns a deleted
//! row, misses a flushed row or sees a row twice, and no read-only node does
//! either when asked directly, while searches run all along. Runs on a local
//! directory and on JuiceFS with one mount per node and default cache
//! options, where a name replaced by a rename on the writer's mount still
//! resolves to the old file on the readers' mounts for about a second.
//!
//! Every search is checked: one that overlapped no write must equal the
//! oracle over the rows of that moment exactly; one that overlapped a write
//! may only return rows that were live at some point during it, each once.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mishards::wire::*;

on_every_storage!(acknowledged_writes_are_seen_by_every_search);

const DIM: usize = 16;
const FILE_ROWS: usize = 5000; // above the node's index build threshold (4096)
const NLIST: usize = 16;
/// nprobe = nlist: an IVF_FLAT search scans every list, so it is exact.
const PARAMS: &str = r#"{"nprobe": 16}"#;
const TOPK: usize = 20;
/// How long searches run between two writes.
const QUIET: Duration = Duration::from_millis(300);
/// How long, at most, a deleted id is probed for after its delete was acknowledged.
const PROBE_FOR: Duration = Duration::from_secs(5);

/// The rows after every acknowledged write, and whether one is in flight.
#[derive(Default)]
struct History {
    /// `states[v]`: the rows once the v-th write was acknowledged.
    states: Vec<Arc<Rows>>,
    /// Whether a write is in flight (its rows are `states[len]` once it is
    /// acknowledged; an insert's ids are known only then).
    pending: bool,
}

impl History {
    fn moment(&self) -> (usize, bool) {
        (self.states.len() - 1, self.pending)
    }
}

/// One search, judged once every write is done (see [`judge`]).
struct Observed {
    what: String,
    reply: TopKQueryResult,
    queries: Vec<Vector>,
    before: (usize, bool),
    after: (usize, bool),
}

/// How the deletes' probes went.
#[derive(Default)]
struct Staleness {
    deletes: usize,
    probes: usize,
    /// Probes (through the proxy or to one read-only node) that returned a deleted id.
    stale_probes: usize,
    /// Per delete: how long after its acknowledgement a deleted id was last returned.
    longest: Duration,
}

async fn acknowledged_writes_are_seen_by_every_search(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let run = setup.label();
    let mut source = VectorSource::new(1313);
    let mut collection = cluster.collection("ryw", DIM, L2).await;
    let mut rows = Rows::default();
    let mut batches: Vec<Vec<i64>> = Vec::new();
    for _ in 0..2 {
        let added = collection.add_file(&mut source, FILE_ROWS).await;
        batches.push(added.rows.iter().map(|(id, _)| *id).collect());
        rows.extend(added);
    }
    let history = Arc::new(Mutex::new(History {
        states: vec![Arc::new(rows.clone())],
        pending: false,
    }));
    let readers: Vec<Client> = cluster.reader_addrs().into_iter().map(client_of).collect();
    // Every read-only node loads (and caches) every file before the first delete.
    probe_every_node(
        &mut collection,
        &readers,
        &source.floats(1, DIM),
        &HashSet::new(),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let observed: Arc<Mutex<Vec<Observed>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..3u64 {
        let mut client = collection.client.clone();
        let (history, stop, observed) = (history.clone(), stop.clone(), observed.clone());
        workers.push(tokio::spawn(async move {
            let mut source = VectorSource::new(7000 + worker);
            let started = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300) {
                let queries = source.floats(2, DIM);
                let before = history.lock().unwrap().moment();
                let param = search_param("ryw", &[], &queries, TOPK as i64, PARAMS);
                let reply = grpc_ok("Search", client.search(param).await);
                let after = history.lock().unwrap().moment();
                observed.lock().unwrap().push(Observed {
                    what: format!("{run} search {n} (worker {worker})"),
                    reply,
                    queries,
                    before,
                    after,
                });
                n += 1;
            }
        }));
    }

    let mut staleness = Staleness::default();
    let probe_queries = source.floats(3, DIM);
    for round in 0..3usize {
        // Insert + flush: a new file, searchable at once.
        let vectors = collection.vectors(&mut source, FILE_ROWS);
        let mut next = rows.clone();
        let ids = write(&history, async {
            let ids = collection.insert("", &vectors).await;
            collection.flush().await;
            ids
        })
        .await;
        next.add(&ids, &vectors);
        rows = commit(&history, next).await;
        batches.push(ids);

        if round == 1 {
            // IVF_FLAT over every file of 5000 rows; later ones are built in the
            // background while searches go on.
            write(&history, create_index(&mut collection)).await;
            rows = commit(&history, rows).await;
        }

        // The best hits of some queries (on INDEX files from round 1 on).
        let doomed: HashSet<i64> = probe_queries
            .iter()
            .flat_map(|q| oracle(L2, &rows, q, 3))
            .map(|(_, id)| id)
            .collect();
        rows = delete_and_probe(
            &mut collection,
            &readers,
            &history,
            rows,
            doomed,
            &mut staleness,
        )
        .await;

        // Over 10 % of one file, then a compaction rewrites it without them.
        let doomed: HashSet<i64> = batches[round].iter().step_by(8).copied().collect();
        rows = delete_and_probe(
            &mut collection,
            &readers,
            &history,
            rows,
            doomed,
            &mut staleness,
        )
        .await;
        write(&history, compact(&mut collection)).await;
        rows = commit(&history, rows).await;

        if round == 2 {
            write(&history, drop_index(&mut collection)).await;
            rows = commit(&history, rows).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("search worker");
    }

    // The oracle's brute force runs off the runtime the servers share.
    let observed = std::mem::take(&mut *observed.lock().unwrap());
    let searches = observed.len();
    let states = history.lock().unwrap().states.clone();
    let (exact, wrong) = tokio::task::spawn_blocking(move || {
        let mut exact = 0;
        let mut wrong = Vec::new();
        for o in &observed {
            match judge(o, &states) {
                Ok(true) => exact += 1,
                Ok(false) => {}
                Err(e) => wrong.push(e),
            }
        }
        (exact, wrong)
    })
    .await
    .unwrap();
    eprintln!(
        "{run}: {searches} searches during {} writes, {exact} of them checked exactly against the oracle; \
         {} deletes acknowledged, {} probes after them (proxy and every read-only node), \
         {} returned a deleted id, longest a deleted id stayed visible: {} ms",
        states_len(&history),
        staleness.deletes,
        staleness.probes,
        staleness.stale_probes,
        staleness.longest.as_millis()
    );
    assert!(
        wrong.is_empty(),
        "{run}: {} of {searches} searches were wrong; the first:\n{}",
        wrong.len(),
        wrong.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        staleness.stale_probes,
        0,
        "{run}: deleted ids were returned after their delete + flush was acknowledged \
         (for up to {} ms)",
        staleness.longest.as_millis()
    );
    assert!(
        exact >= 10,
        "{run}: only {exact} searches overlapped no write"
    );
    cluster.stop().await;
}

/// The number of writes acknowledged.
fn states_len(history: &Mutex<History>) -> usize {
    history.lock().unwrap().states.len() - 1
}

/// Marks a write as in flight while `call` runs.
async fn write<T>(history: &Mutex<History>, call: impl std::future::Future<Output = T>) -> T {
    history.lock().unwrap().pending = true;
    call.await
}

/// Records the acknowledged write's rows, then lets searches run a while.
async fn commit(history: &Mutex<History>, rows: Rows) -> Rows {
    {
        let mut h = history.lock().unwrap();
        h.states.push(Arc::new(rows.clone()));
        h.pending = false;
    }
    tokio::time::sleep(QUIET).await;
    rows
}

/// Whether a reply is right for the moments around it: exact when no write
/// overlapped it (`Ok(true)`), else only rows live at some point of the
/// overlap (up to the rows the write in flight at its end left), each once
/// (`Ok(false)`).
fn judge(o: &Observed, states: &[Arc<Rows>]) -> Result<bool, String> {
    let what = &o.what;
    if let Some(s) = o.reply.status.as_ref().filter(|s| s.error_code != 0) {
        return Err(format!("{what}: code {} ({})", s.error_code, s.reason));
    }
    if o.before == o.after && !o.before.1 {
        let rows = &states[o.before.0];
        oracle_mismatch(what, &o.reply, L2, rows, &o.queries, TOPK, Some(TOPK))?;
        return Ok(true);
    }
    let last = o.after.0 + usize::from(o.after.1);
    let mut live: HashSet<i64> = HashSet::new();
    for state in &states[o.before.0..=last.min(states.len() - 1)] {
        live.extend(state.rows.iter().map(|(id, _)| *id));
    }
    for (q, row) in o.reply.ids.chunks(TOPK).enumerate() {
        let mut seen = HashSet::new();
        for id in row.iter().filter(|id| **id != -1) {
            if !live.contains(id) {
                return Err(format!(
                    "{what} (during a write): query {q}: id {id} was not live at any moment of the search"
                ));
            }
            if !seen.insert(*id) {
                return Err(format!("{what} (during a write): query {q}: id {id} twice"));
            }
        }
    }
    Ok(false)
}

/// Deletes `doomed` and flushes; then, until one round is clean (at most
/// [`PROBE_FOR`]), searches for the deleted rows' own vectors through the
/// proxy and on every read-only node, counting the rounds that return one.
async fn delete_and_probe(
    collection: &mut TestCollection,
    readers: &[Client],
    history: &Mutex<History>,
    rows: Rows,
    doomed: HashSet<i64>,
    staleness: &mut Staleness,
) -> Rows {
    let queries: Vec<Vector> = rows
        .rows
        .iter()
        .filter(|(id, _)| doomed.contains(id))
        .take(20)
        .map(|(_, v)| v.clone())
        .collect();
    let mut next = rows.clone();
    next.remove(&doomed);
    write(history, collection.delete(&doomed)).await;
    let acknowledged = Instant::now();
    staleness.deletes += 1;
    loop {
        let (probes, stale) = probe_every_node(collection, readers, &queries, &doomed).await;
        staleness.probes += probes;
        staleness.stale_probes += stale;
        if stale == 0 {
            break;
        }
        staleness.longest = staleness.longest.max(acknowledged.elapsed());
        if acknowledged.elapsed() > PROBE_FOR {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    commit(history, next).await
}

/// One search of `queries` through the proxy and one `SearchInFiles` over
/// every searchable file on each read-only node; returns how many were made
/// and how many returned an id of `doomed`.
async fn probe_every_node(
    collection: &mut TestCollection,
    readers: &[Client],
    queries: &[Vector],
    doomed: &HashSet<i64>,
) -> (usize, usize) {
    let returns_doomed = |reply: &TopKQueryResult| reply.ids.iter().any(|id| doomed.contains(id));
    let param = search_param(&collection.name, &[], queries, 3, PARAMS);
    let reply = grpc_ok(
        "probe Search",
        collection.client.search(param.clone()).await,
    );
    assert_ok("probe Search", &reply.status);
    let mut stale = usize::from(returns_doomed(&reply));
    let route = collection.route().await;
    let files: Vec<String> = route
        .nodes
        .values()
        .flatten()
        .map(|id| id.to_string())
        .collect();
    for reader in readers {
        let mut reader = reader.clone();
        let reply = grpc_ok(
            "probe SearchInFiles",
            reader
                .search_in_files(SearchInFilesParam {
                    file_id_array: files.clone(),
                    search_param: Some(param.clone()),
                })
                .await,
        );
        assert_ok("probe SearchInFiles on a read-only node", &reply.status);
        stale += usize::from(returns_doomed(&reply));
    }
    (1 + readers.len(), stale)
}

async fn create_index(collection: &mut TestCollection) {
    let status = grpc_ok(
        "CreateIndex",
        collection
            .client
            .create_index(IndexParam {
                status: None,
                collection_name: collection.name.clone(),
                index_type: 2, // IVF_FLAT
                extra_params: vec![KeyValuePair {
                    key: "params".to_string(),
                    value: format!(r#"{{"nlist": {NLIST}}}"#),
                }],
            })
            .await,
    );
    assert_status_ok("CreateIndex IVF_FLAT", &status);
}

async fn compact(collection: &mut TestCollection) {
    let status = grpc_ok(
        "Compact",
        collection
            .client
            .compact(CollectionName {
                collection_name: collection.name.clone(),
            })
            .await,
    );
    assert_status_ok("Compact", &status);
}

async fn drop_index(collection: &mut TestCollection) {
    let status = grpc_ok(
        "DropIndex",
        collection
            .client
            .drop_index(CollectionName {
                collection_name: collection.name.clone(),
            })
            .await,
    );
    assert_status_ok("DropIndex", &status);
}
