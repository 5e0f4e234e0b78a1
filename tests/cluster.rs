//! End-to-end cluster scenarios over real gRPC on 127.0.0.1: one writable
//! node, three read-only nodes and the proxy, sharing one directory and one
//! metadata database. Every scenario runs over SQLite and over MySQL
//! (`MISHARDS_TEST_MYSQL`, skipped with a note when unset), the data paths
//! also on JuiceFS (`MISHARDS_JUICEFS`), and every search
//! is checked against a brute-force oracle. The set-up, the calls and the
//! oracle live in `tests/common/`.
#![allow(clippy::unwrap_used)] // tests and benches unwrap their own fixtures

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mishards::wire::*;

// The data paths also run on a JuiceFS volume with a mount per node (see
// `common::juicefs`), where another node's writes reach a reader's mount
// through its client's caches.
on_every_storage!(
    many_segment_files,
    partitions,
    deletes,
    drop_and_recreate,
    read_your_writes,
    merges_during_search,
    index_build_and_drop_during_search,
    flush_warms_new_files,
);

on_both_databases!(
    error_paths,
    reader_down,
    every_reader_down,
    writer_only_proxy,
    external_writes,
    concurrent_searches,
    writer_down,
    metric_type_override,
    set_config_reaches_every_node,
);

/// Searches with nq 1 and 5 and topk 1, 10 and more than the rows, each
/// checked against the oracle (stride `min(topk, rows)`).
async fn check_nq_topk_grid(collection: &mut TestCollection, rows: &Rows, queries: &[Vector]) {
    for nq in [1, 5] {
        for topk in [1usize, 10, 2500] {
            let what = format!("nq {nq}");
            collection
                .expect_search(&what, rows, &queries[..nq], topk)
                .await;
        }
    }
}

/// Ten flushes leave ten files, spread over the read-only nodes, and every
/// metric's answers over them equal the oracle's.
async fn many_segment_files(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(11);
    let setups = [
        ("segments_l2", 16, L2),
        ("segments_ip", 16, IP),
        ("segments_hamming", 64, HAMMING),
    ];
    let readers: HashSet<String> = cluster
        .reader_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    for (name, dim, metric) in setups {
        let mut collection = cluster.collection(name, dim, metric).await;
        let rows = collection.fill(&mut source, 10, 200).await;
        let queries = collection.vectors(&mut source, 5);
        check_nq_topk_grid(&mut collection, &rows, &queries).await;

        let Route { nodes, files } = collection.route().await;
        assert_eq!(files, 10, "{name}: one file per flush, no merges");
        assert!(
            nodes.len() >= 2,
            "{name}: 10 files should spread over >= 2 read-only nodes: {nodes:?}"
        );
        let mut seen = HashSet::new();
        for (node, ids) in &nodes {
            assert!(
                readers.contains(node),
                "{name}: {node} is not a read-only node"
            );
            for id in ids {
                assert!(
                    seen.insert(*id),
                    "{name}: file {id} routed twice: {nodes:?}"
                );
            }
        }
        assert_eq!(
            seen.len(),
            files,
            "{name}: every file routed once: {nodes:?}"
        );
    }
    cluster.stop().await;
}

/// Partition selection as Milvus does it: `_default`, exact or full-regex tag
/// match, surrounding blanks ignored; only a list where no tag matches at all
/// is an error.
async fn partitions(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(22);
    let mut collection = cluster.collection("tagged", 8, L2).await;
    for tag in ["p_alpha", "p_beta", "q_gamma"] {
        collection.create_partition(tag).await;
    }
    let mut by_tag: BTreeMap<&str, Rows> = BTreeMap::new();
    for tag in ["", "p_alpha", "p_beta", "q_gamma"] {
        for _ in 0..2 {
            let vectors = source.floats(60, 8);
            let ids = collection.insert(tag, &vectors).await;
            by_tag.entry(tag).or_default().add(&ids, &vectors);
        }
        collection.flush().await;
    }
    let all = Rows::merged(&by_tag.values().collect::<Vec<_>>());
    let rows_of =
        |tags: &[&str]| Rows::merged(&tags.iter().map(|t| &by_tag[t]).collect::<Vec<_>>());
    let cases: Vec<(Vec<&str>, Rows)> = vec![
        (vec![], all.clone()),
        (vec!["_default"], rows_of(&[""])),
        (vec!["p_alpha"], rows_of(&["p_alpha"])),
        (vec![" p_beta "], rows_of(&["p_beta"])),
        (vec!["p_.*"], rows_of(&["p_alpha", "p_beta"])),
        (vec!["p_alpha", "q_gamma"], rows_of(&["p_alpha", "q_gamma"])),
        (vec!["_default", ".*_gamma"], rows_of(&["", "q_gamma"])),
        // As Milvus: only a list where no tag matches at all is an error.
        (vec!["p_alpha", "nope"], rows_of(&["p_alpha"])),
    ];
    let queries = source.floats(3, 8);
    for (tags, rows) in &cases {
        for topk in [10usize, 1000] {
            collection
                .expect_search_in("partitions", tags, rows, &queries, topk)
                .await;
        }
    }
    for unknown in [vec!["nope"], vec!["zz.*", "p_alph"]] {
        let what = format!("Search with unknown tags {unknown:?}");
        let code = collection
            .search_code(&what, &unknown, &queries, 10, "{}")
            .await;
        assert_eq!(
            code,
            ErrorCode::UnexpectedError as i32,
            "unknown tag {unknown:?}"
        );
    }
    cluster.stop().await;
}

/// Deleted rows, among them the best hits, never come back, also from the
/// segments the read-only nodes already cached.
async fn deletes(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(33);
    let mut collection = cluster.collection("deleting", 16, L2).await;
    let mut rows = collection.fill(&mut source, 3, 200).await;
    let queries = source.floats(3, 16);
    for round in 0..2 {
        // Searching first puts the segments in the read-only nodes' caches.
        let what = format!("before deletes, round {round}");
        collection.expect_search(&what, &rows, &queries, 10).await;
        // The current best hits of every query, plus some others.
        let mut doomed: HashSet<i64> = queries
            .iter()
            .flat_map(|q| oracle(L2, &rows, q, 5))
            .map(|(_, id)| id)
            .collect();
        doomed.extend(rows.rows.iter().step_by(13).map(|(id, _)| *id));
        collection.delete(&doomed).await;
        rows.remove(&doomed);
        for topk in [10usize, 1000] {
            let reply = collection.search(&[], &queries, topk).await;
            let what = format!(
                "after deleting {} ids, round {round}, topk {topk}",
                doomed.len()
            );
            collection.check(&what, &reply, &rows, &queries, topk, None);
            assert!(
                reply.ids.iter().all(|id| !doomed.contains(id)),
                "round {round}: a deleted id came back"
            );
        }
    }
    cluster.stop().await;
}

/// A collection dropped and created again under the same name, with another
/// metric and dimension, has none of the old files and sorts by the new metric.
async fn drop_and_recreate(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(44);
    let name = "reborn";
    let mut first = cluster.collection(name, 16, L2).await;
    let old_rows = first.fill(&mut source, 2, 150).await;
    let old_queries = source.floats(2, 16);
    first
        .expect_search("first life (L2)", &old_rows, &old_queries, 10)
        .await;

    first.drop_collection().await;
    let mut second = cluster.collection(name, 8, IP).await;
    // The new collection is empty: no stale files of the old one.
    let queries = source.floats(2, 8);
    let reply = second.search(&[], &queries, 10).await;
    assert_eq!(
        reply.row_num, 0,
        "the re-created collection has no rows yet: {reply:?}"
    );

    let rows = second.fill(&mut source, 2, 150).await;
    for topk in [1usize, 10, 500] {
        second
            .expect_search("second life (IP, dim 8)", &rows, &queries, topk)
            .await;
    }
    cluster.stop().await;
}

/// A search right after a flush through the proxy sees every flushed row.
async fn read_your_writes(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(55);
    let mut collection = cluster.collection("fresh", 8, L2).await;
    let queries = source.floats(2, 8);
    // Created a moment ago through the proxy: known, empty, not code 4.
    let reply = collection.search(&[], &queries, 10).await;
    assert_eq!(reply.row_num, 0, "{reply:?}");
    let mut rows = Rows::default();
    for round in 0..6 {
        rows.extend(collection.add_file(&mut source, 40).await);
        let what = format!("right after flush {round}");
        collection.expect_search(&what, &rows, &queries, 1000).await;
    }
    cluster.stop().await;
}

/// A Flush through the proxy answers once the file it made was searched on
/// its read-only node (the warm-up), so the first user search after it pays
/// no load; the searches that follow see every row.
async fn flush_warms_new_files(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let proxy = cluster.proxy.as_ref().expect("proxy");
    let warmed = || metric(proxy, "mishards_warmup_searches_total{outcome=\"ok\"}");
    assert_eq!(warmed(), 0.0, "nothing to warm before the first flush");
    let mut source = VectorSource::new(77);
    let mut collection = cluster.collection("warm", 8, L2).await;
    let queries = source.floats(2, 8);
    let mut rows = Rows::default();
    for round in 1..=3 {
        // Insert and Flush through the proxy: at least one new file each time.
        rows.extend(collection.add_file(&mut source, 50).await);
        assert!(
            warmed() >= f64::from(round),
            "the flush of round {round} answered before its file was warmed: {} warm-ups",
            warmed()
        );
        collection
            .expect_search(&format!("after warm flush {round}"), &rows, &queries, 100)
            .await;
    }
    let refused = metric(proxy, "mishards_warmup_searches_total{outcome=\"refused\"}");
    assert_eq!(refused, 0.0, "a warm-up probe was refused by a node");
    cluster.stop().await;
}

/// Searches between flushes while the writer merges files in the background
/// (and deletes the merged ones soon after) always see every row once.
async fn merges_during_search(setup: Setup) {
    let timing = WriterTiming {
        merge_interval: Duration::from_millis(200),
        cleanup_delay: Duration::from_millis(500),
    };
    let cluster = Cluster::with(&setup).merging(timing).start().await;
    let mut source = VectorSource::new(66);
    let mut collection = cluster.collection("merging", 8, L2).await;
    let queries = source.floats(2, 8);
    let mut rows = Rows::default();
    let started = Instant::now();
    let mut flushes = 0;
    while flushes < 40 && started.elapsed() < Duration::from_secs(20) {
        rows.extend(collection.add_file(&mut source, 25).await);
        flushes += 1;
        for topk in [10usize, 2000] {
            let what = format!("after flush {flushes} (merges running)");
            collection.expect_search(&what, &rows, &queries, topk).await;
        }
    }
    let Route { files, .. } = collection.route().await;
    assert!(
        files < flushes,
        "{flushes} flushes left {files} files: no merge happened, the scenario tested nothing"
    );
    cluster.stop().await;
}

/// Bad requests through the proxy are Milvus statuses, never gRPC errors.
async fn error_paths(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(77);
    let name = "errs";
    let mut collection = cluster.collection(name, 8, L2).await;
    let rows = collection.fill(&mut source, 1, 50).await;
    let queries = source.floats(1, 8);
    let mut client = collection.client.clone();

    let cases: Vec<(&str, SearchParam, ErrorCode)> = vec![
        (
            "unknown collection",
            search_param("no_such_collection", &[], &queries, 10, "{}"),
            ErrorCode::CollectionNotExists,
        ),
        (
            "bad collection name",
            search_param("1bad-name", &[], &queries, 10, "{}"),
            ErrorCode::IllegalCollectionName,
        ),
        (
            "topk 0",
            search_param(name, &[], &queries, 0, "{}"),
            ErrorCode::IllegalTopk,
        ),
        (
            "wrong dimension",
            search_param(name, &[], &source.floats(1, 4), 10, "{}"),
            ErrorCode::IllegalDimension,
        ),
        (
            "malformed params JSON",
            search_param(name, &[], &queries, 10, "{nprobe: 16"),
            ErrorCode::IllegalArgument,
        ),
    ];
    for (what, param, code) in cases {
        let got = search_code(what, client.search(param).await);
        assert_eq!(got, code as i32, "{what}: expected {code:?}");
    }

    let got = search_code(
        "SearchInFiles with a non-numeric file id",
        client
            .search_in_files(SearchInFilesParam {
                file_id_array: vec!["abc".to_string()],
                search_param: Some(search_param(name, &[], &queries, 10, "{}")),
            })
            .await,
    );
    assert_eq!(
        got,
        ErrorCode::UnexpectedError as i32,
        "non-numeric file id"
    );

    // A write sent straight to a read-only node is refused with a status.
    let mut reader = client_of(cluster.reader_addrs()[0]);
    let reply = grpc_ok(
        "Insert on a read-only node",
        reader
            .insert(InsertParam {
                collection_name: name.to_string(),
                row_record_array: source.floats(1, 8).iter().map(Vector::record).collect(),
                row_id_array: vec![],
                partition_tag: String::new(),
                extra_params: vec![],
            })
            .await,
    );
    assert_ne!(
        code_of(&reply.status),
        0,
        "a read-only node accepted an insert"
    );

    let hybrid = client
        .has_hybrid_collection(CollectionName {
            collection_name: name.to_string(),
        })
        .await;
    match hybrid {
        Err(s) => assert_eq!(s.code(), tonic::Code::Unimplemented, "{s:?}"),
        Ok(r) => panic!("a hybrid RPC answered {:?}", r.into_inner()),
    }

    // IVF: nprobe becomes required.
    let status = grpc_ok(
        "CreateIndex",
        client
            .create_index(IndexParam {
                status: None,
                collection_name: name.to_string(),
                index_type: 2,
                extra_params: vec![KeyValuePair {
                    key: "params".to_string(),
                    value: r#"{"nlist": 16}"#.to_string(),
                }],
            })
            .await,
    );
    assert_status_ok("CreateIndex IVF_FLAT", &status);
    let got = collection
        .search_code("IVF search without nprobe", &[], &queries, 10, "{}")
        .await;
    assert_eq!(got, ErrorCode::IllegalArgument as i32, "IVF without nprobe");
    let reply = grpc_ok(
        "IVF search with nprobe",
        client
            .search(search_param(name, &[], &queries, 10, r#"{"nprobe": 16}"#))
            .await,
    );
    assert_ok("IVF search with nprobe", &reply.status);
    assert_eq!(reply.row_num, 1);
    assert!(rows.len() >= 10);
    cluster.stop().await;
}

/// With the read-only node that serves the most files stopped, its files move
/// to the others and the answers stay exact.
async fn reader_down(setup: Setup) {
    let mut cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(88);
    let mut collection = cluster.collection("survivor", 16, L2).await;
    let rows = collection.fill(&mut source, 10, 100).await;
    let queries = source.floats(5, 16);
    collection
        .expect_search("all readers up", &rows, &queries, 10)
        .await;

    // Stop the reader that serves the most files.
    let Route { nodes, .. } = collection.route().await;
    let (busiest, _) = nodes
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .expect("some reader serves files");
    let index = cluster
        .readers
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| r.addr.to_string() == *busiest))
        .expect("the busiest node is a reader");
    let stopped = cluster.stop_reader(index).await;
    for topk in [10usize, 2000] {
        let what = format!("reader {stopped} down");
        collection.expect_search(&what, &rows, &queries, topk).await;
    }
    cluster.stop().await;
}

/// With every read-only node stopped, a search fails with a reason that
/// names each down node and why; a proxy with
/// `backends.search_writer_fallback` sends it whole to the writer instead
/// (partition tags included), with exact answers.
async fn every_reader_down(setup: Setup) {
    let mut cluster = Cluster::with(&setup).readers(2).start().await;
    let mut source = VectorSource::new(93);
    let mut collection = cluster.collection("readers_gone", 8, L2).await;
    collection.create_partition("p1").await;
    let mut rows = collection.fill(&mut source, 2, 50).await;
    let vectors = source.floats(40, 8);
    let mut in_p1 = Rows::default();
    in_p1.add(&collection.insert("p1", &vectors).await, &vectors);
    collection.flush().await;
    rows = Rows::merged(&[&rows, &in_p1]);
    let queries = source.floats(2, 8);
    let readers: Vec<String> = cluster
        .reader_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let mut config = proxy_config(&cluster.meta_uri, &writer, readers.clone());
    config.backends.search_writer_fallback = true;
    let fallback = mishards::proxy::start(config).await.expect("proxy starts");
    let mut through_fallback = collection.through(client_of(fallback.addr));
    through_fallback
        .expect_search("fallback proxy, readers up", &rows, &queries, 10)
        .await;
    for reader in 0..2 {
        cluster.stop_reader(reader).await;
    }

    // Without the fallback: once the probe (every 2 s) has both down, the
    // reason names each node and the refused connection.
    let started = Instant::now();
    let reason = loop {
        let param = search_param(&collection.name, &[], &queries, 10, "{}");
        let reply = grpc_ok("search", collection.client.search(param).await);
        let status = reply.status.unwrap_or_default();
        assert_ne!(
            status.error_code, 0,
            "a search with every reader down succeeded"
        );
        // (A search that first meets a node the probe has not yet taken out
        // fails over and reports the refused calls instead.)
        if status.reason.starts_with("no healthy read-only node") {
            break status.reason;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reported as no healthy node: {}",
            status.reason
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for reader in &readers {
        assert!(reason.contains(&format!("{reader}: ")), "{reason}");
    }

    // With it: exact answers from the writer, tags applied there.
    let fallbacks = "mishards_search_writer_fallbacks_total";
    let started = Instant::now();
    while metric(&fallback, fallbacks) < 1.0 {
        let param = search_param(&collection.name, &[], &queries, 10, "{}");
        let reply = grpc_ok("search", through_fallback.client.search(param).await);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no search fell back to the writer: {:?}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for topk in [10usize, 500] {
        through_fallback
            .expect_search("every reader down, via the writer", &rows, &queries, topk)
            .await;
    }
    through_fallback
        .expect_search_in("p1 via the writer", &["p1"], &in_p1, &queries, 10)
        .await;
    let fell_back = metric(&fallback, fallbacks);
    assert!(fell_back >= 4.0, "{fell_back} searches fell back");
    fallback.stop(Duration::from_secs(2)).await.unwrap();
    cluster.stop().await;
}

/// A proxy configured without read-only nodes sends searches to the writer,
/// and its answers equal the oracle all the same.
async fn writer_only_proxy(setup: Setup) {
    let cluster = Cluster::with(&setup).readers(0).start().await;
    let mut source = VectorSource::new(77);
    let mut collection = cluster.collection("writer_only", 8, L2).await;
    let rows = collection.fill(&mut source, 3, 50).await;
    let queries = source.floats(3, 8);
    collection
        .expect_search("writer-only proxy", &rows, &queries, 10)
        .await;
    let plan = cmd(&mut collection.client, "route writer_only").await;
    assert!(plan.contains("\"search_target\":\"writable\""), "{plan}");
    cluster.stop().await;
}

/// Writes that do not pass through the proxy (straight to the writer, as
/// through another proxy replica) are seen after the periodic refresh.
async fn external_writes(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(91);
    let name = "external";
    let mut writer = cluster.writer_client();
    create_collection(&mut writer, name, 8, L2).await;
    let mut direct = TestCollection::new(writer, setup.label(), name, 8, L2);
    let mut proxied = direct.through(cluster.client.clone());
    let queries = source.floats(2, 8);
    let mut rows = Rows::default();
    for round in 0..3 {
        rows.extend(direct.add_file(&mut source, 30).await);
        // Bounded wait: the proxy refreshes every 100 ms.
        let started = Instant::now();
        let reply = loop {
            let reply = proxied.search(&[], &queries, 1000).await;
            let seen = reply.ids.len() / queries.len();
            if seen == rows.len() || started.elapsed() > Duration::from_secs(5) {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let what = format!("external writes, round {round}");
        proxied.check(&what, &reply, &rows, &queries, 1000, Some(rows.len()));
    }
    cluster.stop().await;
}

/// Many clients searching at once through the proxy (bounded: 8 clients x 25
/// searches) all get the oracle's answer.
async fn concurrent_searches(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(123);
    let mut collection = cluster.collection("concurrent", 16, IP).await;
    let rows = Arc::new(collection.fill(&mut source, 6, 150).await);
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let mut collection = collection.clone();
        let rows = rows.clone();
        tasks.push(tokio::spawn(async move {
            let mut source = VectorSource::new(1000 + worker);
            for i in 0..25 {
                let queries = source.floats(3, 16);
                let what = format!("worker {worker} search {i}");
                collection.expect_search(&what, &rows, &queries, 20).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("search worker");
    }
    cluster.stop().await;
}

/// With the writable node down, the proxy keeps serving reads: searches from
/// the read-only nodes, metadata reads from its snapshot, `version` from a
/// read-only node; writes fail with CONNECT_FAILED.
async fn writer_down(setup: Setup) {
    let mut cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(31);
    let name = "degraded";
    let mut collection = cluster.collection(name, 8, L2).await;
    collection.create_partition("p1").await;
    let rows = collection.fill(&mut source, 3, 50).await;
    cluster.stop_writer().await;

    let queries = source.floats(2, 8);
    collection
        .expect_search("writer down", &rows, &queries, 10)
        .await;

    let client = &mut collection.client;
    let req = || CollectionName {
        collection_name: name.into(),
    };
    let has = grpc_ok("has", client.has_collection(req()).await);
    assert_ok("has", &has.status);
    assert!(has.bool_reply);
    let schema = grpc_ok("describe", client.describe_collection(req()).await);
    assert_ok("describe", &schema.status);
    assert_eq!((schema.dimension, schema.metric_type), (8, L2));
    let count = grpc_ok("count", client.count_collection(req()).await);
    assert_ok("count", &count.status);
    assert_eq!(count.collection_row_count, 150);
    let shown = grpc_ok("show", client.show_collections(Command::default()).await);
    assert_eq!(shown.collection_names, vec![name.to_string()]);
    let parts = grpc_ok("partitions", client.show_partitions(req()).await);
    assert_eq!(parts.partition_tag_array, vec!["_default", "p1"]);
    // HasPartition from the snapshot: tags trimmed, only the name validated.
    let long_tag = "t".repeat(300);
    for (tag, expected) in [
        (" p1 ", true),
        ("_default", true),
        ("p2", false),
        ("", false),
        ("  ", false),
        (long_tag.as_str(), false),
    ] {
        let has = grpc_ok(
            "has partition",
            client
                .has_partition(PartitionParam {
                    collection_name: name.into(),
                    tag: tag.into(),
                })
                .await,
        );
        assert_ok(&format!("has partition {tag:?}"), &has.status);
        assert_eq!(has.bool_reply, expected, "has partition {tag:?}");
    }
    let index = grpc_ok("describe index", client.describe_index(req()).await);
    assert_ok("describe index", &index.status);
    assert_eq!(index.index_type, 1);
    let missing = grpc_ok(
        "describe missing",
        client
            .describe_collection(CollectionName {
                collection_name: "nope".into(),
            })
            .await,
    );
    assert_eq!(
        code_of(&missing.status),
        ErrorCode::CollectionNotExists as i32
    );
    let version = cmd(client, "version").await;
    assert!(version.starts_with("1.1."), "{version}");

    // Data reads move to a read-only node: stats, ids of a segment, vectors, search by id.
    let info = grpc_ok("stats", client.show_collection_info(req()).await);
    assert_ok("stats", &info.status);
    let stats: serde_json::Value = serde_json::from_str(&info.json_info).expect("stats JSON");
    assert_eq!(stats["row_count"], 150, "{stats}");
    let segment = stats["partitions"][0]["segments"][0]["name"]
        .as_str()
        .expect("a segment name")
        .to_string();
    let ids = grpc_ok(
        "segment ids",
        client
            .get_vector_i_ds(GetVectorIDsParam {
                collection_name: name.into(),
                segment_name: segment,
            })
            .await,
    );
    assert_ok("segment ids", &ids.status);
    assert_eq!(ids.vector_id_array.len(), 50);
    let wanted = ids.vector_id_array[..3].to_vec();
    let vectors = grpc_ok(
        "vectors by id",
        client
            .get_vectors_by_id(VectorsIdentity {
                collection_name: name.into(),
                id_array: wanted.clone(),
                partition_tag: String::new(),
            })
            .await,
    );
    assert_ok("vectors by id", &vectors.status);
    assert!(vectors.vectors_data.iter().all(|v| v.float_data.len() == 8));
    let by_id = grpc_ok(
        "search by id",
        client
            .search_by_id(SearchByIdParam {
                collection_name: name.into(),
                id_array: wanted.clone(),
                topk: 1,
                extra_params: vec![KeyValuePair {
                    key: "params".into(),
                    value: "{}".into(),
                }],
                ..Default::default()
            })
            .await,
    );
    assert_ok("search by id", &by_id.status);
    assert_eq!(by_id.ids, wanted, "each vector finds itself first");

    let insert = grpc_ok(
        "insert",
        client
            .insert(InsertParam {
                collection_name: name.into(),
                row_record_array: source.floats(1, 8).iter().map(Vector::record).collect(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        code_of(&insert.status),
        ErrorCode::ConnectFailed as i32,
        "{insert:?}"
    );
    cluster.stop().await;
}

/// With the writable node unreachable and no metadata yet, calls through the
/// proxy answer Milvus statuses (CONNECT_FAILED, META_FAILED), never gRPC
/// errors, and nothing hangs.
#[tokio::test]
async fn unreachable_writer_is_a_status_not_a_grpc_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let uri = format!("sqlite://{}/meta.sqlite", dir.path().display());
    let mut config = proxy_config(&uri, &closed.to_string(), vec![closed.to_string()]);
    config.backends.connect_timeout = Duration::from_millis(500);
    let proxy = mishards::proxy::start(config).await.expect("proxy starts");
    let mut client = client_of(proxy.addr);
    let insert = InsertParam {
        collection_name: "c".into(),
        row_record_array: vec![RowRecord {
            float_data: vec![1.0; 4],
            binary_data: Default::default(),
        }],
        ..Default::default()
    };
    let reply = grpc_ok("insert", client.insert(insert).await);
    assert_eq!(
        code_of(&reply.status),
        ErrorCode::ConnectFailed as i32,
        "{reply:?}"
    );
    assert!(reply.vector_id_array.is_empty());
    let reply = grpc_ok(
        "create",
        client
            .create_collection(CollectionSchema {
                collection_name: "c".into(),
                dimension: 4,
                index_file_size: 1024,
                metric_type: 1,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        reply.error_code,
        ErrorCode::ConnectFailed as i32,
        "{reply:?}"
    );
    // The proxy only reads the metadata: it created no table, and a search
    // says the metadata cannot be read instead of failing at the gRPC level.
    let queries = VectorSource::new(3).floats(1, 4);
    let reply = grpc_ok(
        "search",
        client
            .search(search_param("c", &[], &queries, 1, "{}"))
            .await,
    );
    assert_eq!(
        code_of(&reply.status),
        ErrorCode::MetaFailed as i32,
        "{reply:?}"
    );
    let pool = sqlx::SqlitePool::connect(&uri)
        .await
        .expect("open the meta file");
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .expect("list tables");
    assert!(tables.is_empty(), "the proxy created {tables:?}");
    pool.close().await;
    proxy
        .stop(Duration::from_secs(5))
        .await
        .expect("proxy stops");
}

/// A search of an L2 collection with `{"metric_type": 2}` (IP) ranks by inner
/// product on the read-only nodes and in the proxy's merge: the same ids and
/// order as the writable node searching alone, and the brute-force IP oracle,
/// over files spread across several read-only nodes; SearchByID follows it too.
async fn metric_type_override(setup: Setup) {
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(1010);
    let mut collection = cluster.collection("metric_override", 16, L2).await;
    let rows = collection.fill(&mut source, 8, 150).await;
    let Route { nodes, files } = collection.route().await;
    assert_eq!(files, 8);
    assert!(
        nodes.len() >= 2,
        "files spread over read-only nodes: {nodes:?}"
    );
    let queries = collection.vectors(&mut source, 4);
    let mut proxy = cluster.client.clone();
    let mut writer = cluster.writer_client();
    let override_ip = r#"{"metric_type": 2}"#;
    for topk in [1i64, 10, 50] {
        let param = search_param("metric_override", &[], &queries, topk, override_ip);
        let merged = grpc_ok("proxy search", proxy.search(param.clone()).await);
        assert_ok("proxy search", &merged.status);
        check_against_oracle(
            &format!("{} IP override topk {topk}", setup.label()),
            &merged,
            IP,
            &rows,
            &queries,
            topk as usize,
            Some(topk as usize),
        );
        let alone = grpc_ok("writer search", writer.search(param).await);
        assert_ok("writer search", &alone.status);
        assert_eq!(merged.ids, alone.ids, "topk {topk}: proxy and node agree");
        for (a, b) in merged.distances.iter().zip(&alone.distances) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
    // SearchByID: the stored vectors of three ids, ranked by IP.
    let wanted: Vec<i64> = rows.rows.iter().take(3).map(|(id, _)| *id).collect();
    let by_id_queries: Vec<Vector> = rows.rows.iter().take(3).map(|(_, v)| v.clone()).collect();
    let by_id = grpc_ok(
        "search by id",
        proxy
            .search_by_id(SearchByIdParam {
                collection_name: "metric_override".into(),
                id_array: wanted,
                topk: 10,
                extra_params: vec![KeyValuePair {
                    key: "params".into(),
                    value: override_ip.into(),
                }],
                ..Default::default()
            })
            .await,
    );
    assert_ok("search by id", &by_id.status);
    check_against_oracle(
        "search by id, IP override",
        &by_id,
        IP,
        &rows,
        &by_id_queries,
        10,
        Some(10),
    );
    // A binary metric on a float collection: code 5 from the proxy itself.
    let code = collection
        .search_code("HAMMING on L2", &[], &queries, 10, r#"{"metric_type": 3}"#)
        .await;
    assert_eq!(code, ErrorCode::IllegalArgument as i32);
    cluster.stop().await;
}

/// `set_config` through the proxy reaches the writable node and every
/// read-only node; `get_config` answers the writer's value; when a node
/// cannot take it, the error names that node.
async fn set_config_reaches_every_node(setup: Setup) {
    let mut cluster = Cluster::start(&setup).await;
    let mut proxy = cluster.client.clone();
    assert_eq!(cmd(&mut proxy, "set_config cache.cache_size 1GB").await, "");
    let mut addrs = vec![cluster.writer.as_ref().expect("writer").addr];
    addrs.extend(cluster.reader_addrs());
    for addr in &addrs {
        let mut node = client_of(*addr);
        assert_eq!(
            cmd(&mut node, "get_config cache.cache_size").await,
            "1GB",
            "node {addr}"
        );
    }
    assert_eq!(cmd(&mut proxy, "get_config cache.cache_size").await, "1GB");
    let refused = grpc_ok(
        "bad set_config",
        proxy
            .cmd(Command {
                cmd: "set_config cache.cache_size lots".into(),
            })
            .await,
    );
    assert_eq!(code_of(&refused.status), ErrorCode::IllegalArgument as i32);
    let down = cluster.stop_reader(0).await;
    let partial = grpc_ok(
        "set_config with a node down",
        proxy
            .cmd(Command {
                cmd: "set_config cache.cache_size 2GB".into(),
            })
            .await,
    );
    let reason = partial
        .status
        .as_ref()
        .map(|s| s.reason.clone())
        .unwrap_or_default();
    assert_ne!(code_of(&partial.status), 0, "{partial:?}");
    assert!(
        reason.contains(&down.to_string()),
        "names the node: {reason}"
    );
    cluster.stop().await;
}

/// An IVF_FLAT index is built and then dropped while 8 clients search
/// through the proxy: the RAW -> INDEX swaps (and back) never fail a search
/// nor show a row twice (a raw file and its index are never both searched),
/// ShowCollectionInfo names the index per segment, and after the drop the
/// answers are exact again.
async fn index_build_and_drop_during_search(setup: Setup) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let cluster = Cluster::start(&setup).await;
    let mut source = VectorSource::new(4096);
    let mut collection = cluster.collection("indexing", 16, L2).await;
    let rows = collection.fill(&mut source, 2, 5000).await;
    let searches = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let mut client = collection.client.clone();
        let name = collection.name.clone();
        let (searches, stop) = (searches.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut source = VectorSource::new(500 + worker);
            let started = Instant::now();
            let mut done = 0;
            while !stop.load(Ordering::Relaxed)
                && done < 2000
                && started.elapsed() < Duration::from_secs(240)
            {
                let queries = source.floats(2, 16);
                let param = search_param(&name, &[], &queries, 20, r#"{"nprobe": 16}"#);
                let reply = grpc_ok("Search", client.search(param).await);
                assert_ok(&format!("worker {worker} search {done}"), &reply.status);
                let ids = &reply.ids;
                assert_eq!(ids.len(), 2 * 20, "worker {worker}: full rows");
                for row in ids.chunks(20) {
                    let unique: HashSet<_> = row.iter().collect();
                    assert_eq!(unique.len(), 20, "worker {worker}: duplicated ids {row:?}");
                    assert!(row.iter().all(|id| *id >= 0));
                }
                done += 1;
                searches.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Each phase waits (bounded) for a few more searches to land in it.
    let wait_for_searches = |more: usize| {
        let searches = searches.clone();
        async move {
            let target = searches.load(Ordering::Relaxed) + more;
            let started = Instant::now();
            while searches.load(Ordering::Relaxed) < target
                && started.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let index_names = |mut client: Client| async move {
        let info = grpc_ok(
            "ShowCollectionInfo",
            client
                .show_collection_info(CollectionName {
                    collection_name: "indexing".to_string(),
                })
                .await,
        );
        assert_ok("ShowCollectionInfo", &info.status);
        let json: serde_json::Value = serde_json::from_str(&info.json_info).unwrap();
        json["partitions"][0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["index_name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    wait_for_searches(16).await;
    let mut client = collection.client.clone();
    let status = grpc_ok(
        "CreateIndex",
        client
            .create_index(IndexParam {
                status: None,
                collection_name: "indexing".to_string(),
                index_type: 2,
                extra_params: vec![KeyValuePair {
                    key: "params".to_string(),
                    value: r#"{"nlist": 16}"#.to_string(),
                }],
            })
            .await,
    );
    assert_status_ok("CreateIndex IVF_FLAT", &status);
    // Synchronous: both 5000-row files are indexed when it answers.
    assert_eq!(index_names(client.clone()).await, vec!["IVFFLAT"; 2]);
    wait_for_searches(40).await;
    let status = grpc_ok(
        "DropIndex",
        client
            .drop_index(CollectionName {
                collection_name: "indexing".to_string(),
            })
            .await,
    );
    assert_status_ok("DropIndex", &status);
    assert_eq!(index_names(client.clone()).await, vec!["IDMAP"; 2]);
    wait_for_searches(40).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("search worker");
    }
    assert!(searches.load(Ordering::Relaxed) >= 96, "the load ran");
    // Raw files again: exact answers once the proxy sees them.
    let queries = source.floats(3, 16);
    collection
        .expect_search("after DropIndex", &rows, &queries, 10)
        .await;
    cluster.stop().await;
}
