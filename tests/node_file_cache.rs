//! A read-only node answers `SearchInFiles` from its segment cache (each
//! file's metadata row read on every call): files deleted from, merged, cleaned up and indexed by the
//! writable node (so the reader learns of it only through the shared
//! database and directory) never make it answer with deleted rows or with a
//! file that is gone. A searcher hammers the reader by file id while the
//! changes happen; after each change the answer over the current files must
//! equal the brute-force oracle, and retired files must be searched as
//! Milvus does (while on disk) or refused once cleaned up.
#![allow(clippy::unwrap_used)] // tests and benches unwrap their own fixtures

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mishards::meta::{MetaStore, MetaUri};
use mishards::types::FileType;
use mishards::wire::*;

on_both_databases!(file_changes_under_search_in_files);

const DIM: usize = 8;
const TOPK: usize = 10;
/// How long the writer keeps retired files (its cleanup runs every second).
const CLEANUP_DELAY: Duration = Duration::from_secs(3);
/// IVF_FLAT with every list probed is exact, so the oracle still applies.
const NLIST: usize = 16;

/// What the searcher must never see: ids whose delete finished before its request left.
#[derive(Default)]
struct Truth {
    /// Every row ever inserted, to check each hit's distance.
    all: Rows,
    /// Ids deleted (and flushed) so far.
    deleted: HashSet<i64>,
    /// The searchable file ids of the collection now.
    files: Vec<i64>,
}

async fn searchable_files(meta: &MetaStore, name: &str) -> Vec<(i64, FileType)> {
    let mut files: Vec<(i64, FileType)> = meta
        .all_searchable_files()
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.table_id == name)
        .map(|f| (f.id, f.kind().unwrap()))
        .collect();
    files.sort_unstable_by_key(|f| f.0);
    files
}

fn search_in_files_param(name: &str, files: &[i64], queries: &[Vector]) -> SearchInFilesParam {
    let params = format!(r#"{{"nprobe": {NLIST}}}"#);
    SearchInFilesParam {
        file_id_array: files.iter().map(i64::to_string).collect(),
        search_param: Some(search_param(name, &[], queries, TOPK as i64, &params)),
    }
}

/// A SearchInFiles on `reader` that must succeed, checked against the oracle over `live`.
async fn expect_files(
    reader: &mut Client,
    what: &str,
    name: &str,
    files: &[i64],
    live: &Rows,
    queries: &[Vector],
) {
    let reply = grpc_ok(
        "SearchInFiles",
        reader
            .search_in_files(search_in_files_param(name, files, queries))
            .await,
    );
    assert_ok(&format!("{what}: files {files:?}"), &reply.status);
    check_against_oracle(
        &format!("{what}: files {files:?}"),
        &reply,
        L2,
        live,
        queries,
        TOPK,
        Some(TOPK),
    );
}

/// The status code of a SearchInFiles on `reader` (OK or an error).
async fn files_code(reader: &mut Client, name: &str, files: &[i64], queries: &[Vector]) -> i32 {
    let reply = grpc_ok(
        "SearchInFiles",
        reader
            .search_in_files(search_in_files_param(name, files, queries))
            .await,
    );
    code_of(&reply.status)
}

/// Loops SearchInFiles over the current files until `stop`: a hit must be a
/// row not deleted before the request left, at its true distance; an error
/// is allowed only for a retired file (FileNotFound, or Milvus' "Invalid
/// file id" once its row is gone).
fn spawn_searcher(
    reader: Client,
    name: String,
    truth: Arc<Mutex<Truth>>,
    stop: Arc<AtomicBool>,
    searches: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = reader;
        let mut source = VectorSource::new(4242);
        let started = Instant::now();
        let mut done = 0;
        while !stop.load(Ordering::Relaxed)
            && done < 20_000
            && started.elapsed() < Duration::from_secs(240)
        {
            let queries = source.floats(1, DIM);
            let (files, deleted_before) = {
                let t = truth.lock().unwrap();
                (t.files.clone(), t.deleted.clone())
            };
            let reply = grpc_ok(
                "SearchInFiles",
                reader
                    .search_in_files(search_in_files_param(&name, &files, &queries))
                    .await,
            );
            let status = reply.status.clone().unwrap_or_default();
            if status.error_code != ErrorCode::Success as i32 {
                let retired = status.error_code == ErrorCode::FileNotFound as i32
                    || status.reason.contains("Invalid file id");
                assert!(retired, "search {done} over {files:?}: {status:?}");
            } else {
                let t = truth.lock().unwrap();
                for (id, d) in reply.ids.iter().zip(&reply.distances) {
                    if *id == -1 {
                        continue;
                    }
                    assert!(
                        !deleted_before.contains(id),
                        "search {done} over {files:?} returned id {id}, deleted before it was sent"
                    );
                    let (_, v) = t.all.rows.iter().find(|(i, _)| i == id).unwrap();
                    let want = distance(L2, &queries[0], v);
                    assert!(
                        (f64::from(*d) - want).abs() <= 1e-3 * want.max(1.0),
                        "id {id}: distance {d}, true {want}"
                    );
                }
            }
            done += 1;
            searches.fetch_add(1, Ordering::Relaxed);
        }
    })
}

async fn file_changes_under_search_in_files(setup: Setup) {
    let timing = WriterTiming {
        merge_interval: Duration::ZERO,
        cleanup_delay: CLEANUP_DELAY,
    };
    let cluster = Cluster::with(&setup)
        .readers(1)
        .merging(timing)
        .start()
        .await;
    let writer = cluster.writer.as_ref().unwrap().engine.clone();
    let uri = MetaUri::parse(&cluster.meta_uri, None).unwrap();
    let meta = MetaStore::connect_read_only(&uri, 2).await.unwrap();
    let name = "cached_rows";
    let mut source = VectorSource::new(31);
    let mut collection = cluster.collection(name, DIM, L2).await;
    let mut reader = client_of(cluster.reader_addrs()[0]);
    let queries = source.floats(3, DIM);

    // Four files of 1100 rows: merged they reach the index-build threshold.
    let mut live = collection.fill(&mut source, 4, 1100).await;
    let truth = Arc::new(Mutex::new(Truth {
        all: live.clone(),
        ..Truth::default()
    }));
    let refresh = |truth: &Arc<Mutex<Truth>>, files: &[(i64, FileType)]| {
        truth.lock().unwrap().files = files.iter().map(|f| f.0).collect();
    };
    let first = searchable_files(&meta, name).await;
    assert_eq!(first.len(), 4, "four flushes, four files: {first:?}");
    let first_ids: Vec<i64> = first.iter().map(|f| f.0).collect();
    refresh(&truth, &first);

    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicUsize::new(0));
    let searcher = spawn_searcher(
        client_of(cluster.reader_addrs()[0]),
        name.to_string(),
        truth.clone(),
        stop.clone(),
        searches.clone(),
    );
    // The reader has cached the rows and segments of the current files.
    expect_files(&mut reader, "warm", name, &first_ids, &live, &queries).await;

    let mut round = 0;
    let mut delete_some = |live: &mut Rows, n: usize| {
        round += 1;
        let doomed: HashSet<i64> = live
            .rows
            .iter()
            .skip(round * 7)
            .take(n)
            .map(|r| r.0)
            .collect();
        live.remove(&doomed);
        doomed
    };
    // Up to `n` of the vectors whose ids are in `ids`: queries that land on them.
    let vectors_of = |truth: &Arc<Mutex<Truth>>, ids: &HashSet<i64>, n: usize| -> Vec<Vector> {
        let truth = truth.lock().unwrap();
        let rows = truth.all.rows.iter().filter(|r| ids.contains(&r.0));
        rows.take(n).map(|r| r.1.clone()).collect()
    };
    let deletes = |doomed: HashSet<i64>| {
        let truth = truth.clone();
        let mut collection = collection.clone();
        async move {
            collection.delete(&doomed).await;
            truth.lock().unwrap().deleted.extend(doomed);
        }
    };

    // 1. Deletes in cached files: the reader must not return them.
    let doomed = delete_some(&mut live, 40);
    // Nearest neighbours of the doomed rows: a stale reader would return them.
    let near_doomed = vectors_of(&truth, &doomed, 3);
    deletes(doomed).await;
    expect_files(
        &mut reader,
        "after deletes",
        name,
        &first_ids,
        &live,
        &queries,
    )
    .await;
    expect_files(
        &mut reader,
        "deleted neighbours",
        name,
        &first_ids,
        &live,
        &near_doomed,
    )
    .await;

    // 2. Merge: the new file answers; the retired ones, still on disk, are
    // searched as Milvus does (same rows); once cleaned up they are refused.
    assert_eq!(writer.merge_small_files().await.unwrap(), 1, "one merge");
    let merged = searchable_files(&meta, name).await;
    assert_eq!(merged.len(), 1, "{merged:?}");
    refresh(&truth, &merged);
    let merged_id = merged[0].0;
    expect_files(&mut reader, "merged", name, &[merged_id], &live, &queries).await;
    // Searched until the cleanup (within CLEANUP_DELAY + 1 s) removes them.
    let retired_at = Instant::now();
    loop {
        let reply = grpc_ok(
            "SearchInFiles",
            reader
                .search_in_files(search_in_files_param(name, &first_ids, &near_doomed))
                .await,
        );
        if code_of(&reply.status) != ErrorCode::Success as i32 {
            break;
        }
        let what = "retired, on disk";
        check_against_oracle(what, &reply, L2, &live, &near_doomed, TOPK, Some(TOPK));
        assert!(
            retired_at.elapsed() < Duration::from_secs(60),
            "retired files still answer a minute after the merge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Gone for good: the next searches (the rows are read again) refuse too.
    let code = files_code(&mut reader, name, &first_ids, &queries).await;
    assert_ne!(code, ErrorCode::Success as i32, "cleaned-up files answered");
    let code = files_code(&mut reader, name, &first_ids[..1], &queries).await;
    assert_ne!(
        code,
        ErrorCode::Success as i32,
        "a cleaned-up file answered"
    );
    expect_files(
        &mut reader,
        "merged, after cleanup",
        name,
        &[merged_id],
        &live,
        &queries,
    )
    .await;

    // 3. Deletes in the merged file, cached by the reader.
    let doomed = delete_some(&mut live, 25);
    let near_doomed = vectors_of(&truth, &doomed, 3);
    deletes(doomed).await;
    expect_files(
        &mut reader,
        "merged, deletes",
        name,
        &[merged_id],
        &live,
        &near_doomed,
    )
    .await;

    // 4. Re-index: the INDEX file answers (every list probed: exact), and so
    // does the raw file it replaced, now BACKUP, when named by id.
    let status = grpc_ok(
        "CreateIndex",
        cluster
            .writer_client()
            .create_index(IndexParam {
                collection_name: name.to_string(),
                index_type: 2, // IVF_FLAT
                extra_params: vec![KeyValuePair {
                    key: "params".to_string(),
                    value: format!(r#"{{"nlist": {NLIST}}}"#),
                }],
                ..Default::default()
            })
            .await,
    );
    assert_status_ok("CreateIndex", &status);
    let indexed = searchable_files(&meta, name).await;
    assert_eq!(indexed.len(), 1, "{indexed:?}");
    assert_eq!(indexed[0].1, FileType::Index, "{indexed:?}");
    refresh(&truth, &indexed);
    let index_id = indexed[0].0;
    expect_files(&mut reader, "indexed", name, &[index_id], &live, &queries).await;
    expect_files(
        &mut reader,
        "backup raw",
        name,
        &[merged_id],
        &live,
        &queries,
    )
    .await;

    // 5. Deletes after the index: both the index and the raw file drop them.
    let doomed = delete_some(&mut live, 25);
    let near_doomed = vectors_of(&truth, &doomed, 3);
    deletes(doomed).await;
    expect_files(
        &mut reader,
        "indexed, deletes",
        name,
        &[index_id],
        &live,
        &near_doomed,
    )
    .await;
    expect_files(
        &mut reader,
        "backup, deletes",
        name,
        &[merged_id],
        &live,
        &near_doomed,
    )
    .await;

    // The searcher ran through all of it.
    let target = searches.load(Ordering::Relaxed) + 20;
    let waited = Instant::now();
    while searches.load(Ordering::Relaxed) < target && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    searcher.await.unwrap();
    assert!(
        searches.load(Ordering::Relaxed) >= 20,
        "the searcher hardly ran: {} searches",
        searches.load(Ordering::Relaxed)
    );
    meta.close().await;
    cluster.stop().await;
}
