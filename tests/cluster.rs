//! End-to-end cluster scenarios over real gRPC on 127.0.0.1: one writable
//! node, three read-only nodes and the proxy, sharing one directory and one
//! metadata database. Every scenario runs over SQLite and over MySQL
//! (`MISHARDS_TEST_MYSQL`, skipped with a note when unset), and every search
//! is checked against a brute-force oracle.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use mishards::wire::*;

/// Runs `scenario` as two tests, `<scenario>::sqlite` and `<scenario>::mysql`.
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::MetaKind::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                let test = concat!(stringify!($scenario), "::mysql");
                if let Some(kind) = super::MetaKind::mysql_or_skip(test) {
                    super::$scenario(kind).await;
                }
            }
        }
    )*};
}

on_both_databases!(
    many_segment_files,
    partitions,
    deletes,
    drop_and_recreate,
    read_your_writes,
    merges_during_search,
    error_paths,
    reader_down,
    writer_only_proxy,
    external_writes,
    concurrent_searches,
    writer_down,
);

/// With the writable node down, the proxy keeps serving reads: searches from
/// the read-only nodes, metadata reads from its snapshot, `version` from a
/// read-only node; writes fail with CONNECT_FAILED.
async fn writer_down(kind: MetaKind) {
    let mut cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(31);
    let name = "degraded";
    create_collection(&mut client, name, 8, L2).await;
    create_partition(&mut client, name, "p1").await;
    let rows = fill_floats(&mut client, name, &mut source, 3, 50, 8).await;
    cluster
        .writer
        .take()
        .expect("writer runs")
        .stop()
        .await
        .expect("writer stops");

    let queries = source.floats(2, 8);
    let reply = search(&mut client, name, &[], &queries, 10).await;
    check_against_oracle(
        &format!("{kind:?} writer down"),
        &reply,
        L2,
        &rows,
        &queries,
        10,
        Some(10),
    );

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
    let version = cmd(&mut client, "version").await;
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

/// Many clients searching at once through the proxy (bounded: 8 clients x 25
/// searches) all get the oracle's answer.
async fn concurrent_searches(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(123);
    let name = "concurrent";
    create_collection(&mut client, name, 16, IP).await;
    let rows = std::sync::Arc::new(fill_floats(&mut client, name, &mut source, 6, 150, 16).await);
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let mut client = cluster.client.clone();
        let rows = rows.clone();
        let kind = format!("{kind:?}");
        tasks.push(tokio::spawn(async move {
            let mut source = VectorSource::new(1000 + worker);
            for i in 0..25 {
                let queries = source.floats(3, 16);
                let reply = search(&mut client, name, &[], &queries, 20).await;
                check_against_oracle(
                    &format!("{kind} worker {worker} search {i}"),
                    &reply,
                    IP,
                    &rows,
                    &queries,
                    20,
                    Some(20),
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("search worker");
    }
    cluster.stop().await;
}

/// Writes that do not pass through the proxy (straight to the writer, as
/// through another proxy replica) are seen after the periodic refresh.
async fn external_writes(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut proxy = cluster.client.clone();
    let mut writer = client_of(cluster.writer.as_ref().expect("writer runs").addr);
    let mut source = VectorSource::new(91);
    let name = "external";
    create_collection(&mut writer, name, 8, L2).await;
    let queries = source.floats(2, 8);
    let mut rows = Rows::default();
    for round in 0..3 {
        let vectors = source.floats(30, 8);
        let ids = insert(&mut writer, name, "", &vectors).await;
        flush(&mut writer, name).await;
        rows.add(&ids, &vectors);
        // Bounded wait: the proxy refreshes every 100 ms.
        let started = Instant::now();
        let reply = loop {
            let reply = search(&mut proxy, name, &[], &queries, 1000).await;
            let seen = reply.ids.len() / queries.len();
            if seen == rows.len() || started.elapsed() > Duration::from_secs(5) {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        check_against_oracle(
            &format!("{kind:?} external writes, round {round}"),
            &reply,
            L2,
            &rows,
            &queries,
            1000,
            Some(rows.len()),
        );
    }
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
    let mut config = mishards::config::Config::default();
    config.server.listen = "127.0.0.1:0".to_string();
    config.metrics.listen = "127.0.0.1:0".to_string();
    config.meta.uri = format!("sqlite://{}/meta.sqlite", dir.path().display());
    config.backends.writable = closed.to_string();
    config.backends.readonly = vec![closed.to_string()];
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
    let uri = format!("sqlite://{}/meta.sqlite", dir.path().display());
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

/// A proxy configured without read-only nodes sends searches to the writer,
/// and its answers equal the oracle all the same.
async fn writer_only_proxy(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let writer = cluster.writer.as_ref().expect("writer runs").addr;
    let mut config = mishards::config::Config::default();
    config.server.listen = "127.0.0.1:0".to_string();
    config.metrics.listen = "127.0.0.1:0".to_string();
    config.meta.uri = cluster.meta_uri.clone();
    config.backends.writable = writer.to_string();
    let lone = mishards::proxy::start(config).await.expect("proxy starts");
    let mut client = client_of(lone.addr);
    let mut source = VectorSource::new(77);
    let name = "writer_only";
    create_collection(&mut client, name, 8, L2).await;
    let mut rows = Rows::default();
    for _ in 0..3 {
        let vectors = source.floats(50, 8);
        let ids = insert(&mut client, name, "", &vectors).await;
        flush(&mut client, name).await;
        rows.add(&ids, &vectors);
    }
    let queries = source.floats(3, 8);
    let reply = search(&mut client, name, &[], &queries, 10).await;
    check_against_oracle(
        &format!("{kind:?} writer-only proxy"),
        &reply,
        L2,
        &rows,
        &queries,
        10,
        Some(10),
    );
    let plan = cmd(&mut client, &format!("route {name}")).await;
    assert!(plan.contains("\"search_target\":\"writable\""), "{plan}");
    lone.stop(Duration::from_secs(5))
        .await
        .expect("proxy stops");
    cluster.stop().await;
}

/// `Cmd("route <name>")` through the proxy: node address -> file ids, and the file count.
async fn route(client: &mut Client, name: &str) -> (BTreeMap<String, Vec<i64>>, usize) {
    let text = cmd(client, &format!("route {name}")).await;
    let json: serde_json::Value = serde_json::from_str(&text).expect("route answers JSON");
    let nodes = json["nodes"]
        .as_object()
        .unwrap_or_else(|| panic!("route has no nodes map: {text}"))
        .iter()
        .map(|(node, ids)| {
            let ids = ids
                .as_array()
                .unwrap_or_else(|| panic!("route: file ids of {node} are not a list: {text}"))
                .iter()
                .map(|id| id.as_i64().expect("file id is an integer"))
                .collect();
            (node.clone(), ids)
        })
        .collect();
    let files = json["files"].as_u64().expect("route has a file count") as usize;
    (nodes, files)
}

/// Inserts `batches` x `rows` (each batch flushed on its own, so its own file).
async fn fill_floats(
    client: &mut Client,
    name: &str,
    source: &mut VectorSource,
    batches: usize,
    rows: usize,
    dim: usize,
) -> Rows {
    let mut known = Rows::default();
    for _ in 0..batches {
        let vectors = source.floats(rows, dim);
        let ids = insert(client, name, "", &vectors).await;
        flush(client, name).await;
        known.add(&ids, &vectors);
    }
    known
}

/// Searches with nq 1 and 5 and topk 1, 10 and more than the rows, each
/// checked against the oracle (stride `min(topk, rows)`).
async fn check_nq_topk_grid(
    kind: &MetaKind,
    client: &mut Client,
    name: &str,
    metric: i32,
    rows: &Rows,
    queries: &[Vector],
) {
    for nq in [1, 5] {
        for topk in [1usize, 10, 2500] {
            let reply = search(client, name, &[], &queries[..nq], topk as i64).await;
            check_against_oracle(
                &format!("{kind:?} {name} nq {nq} topk {topk}"),
                &reply,
                metric,
                rows,
                &queries[..nq],
                topk,
                Some(topk.min(rows.len())),
            );
        }
    }
}

async fn many_segment_files(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(11);
    for (name, metric) in [("segments_l2", L2), ("segments_ip", IP)] {
        create_collection(&mut client, name, 16, metric).await;
        let rows = fill_floats(&mut client, name, &mut source, 10, 200, 16).await;
        let queries = source.floats(5, 16);
        check_nq_topk_grid(&kind, &mut client, name, metric, &rows, &queries).await;
    }

    let name = "segments_hamming";
    create_collection(&mut client, name, 64, HAMMING).await;
    let mut rows = Rows::default();
    for _ in 0..10 {
        let vectors = source.bits(200, 64);
        let ids = insert(&mut client, name, "", &vectors).await;
        flush(&mut client, name).await;
        rows.add(&ids, &vectors);
    }
    let queries = source.bits(5, 64);
    check_nq_topk_grid(&kind, &mut client, name, HAMMING, &rows, &queries).await;

    let readers: HashSet<String> = cluster
        .reader_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    for name in ["segments_l2", "segments_ip", "segments_hamming"] {
        let (nodes, files) = route(&mut client, name).await;
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

async fn partitions(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(22);
    let name = "tagged";
    create_collection(&mut client, name, 8, L2).await;
    let mut by_tag: BTreeMap<&str, Rows> = BTreeMap::new();
    for tag in ["p_alpha", "p_beta", "q_gamma"] {
        create_partition(&mut client, name, tag).await;
    }
    for tag in ["", "p_alpha", "p_beta", "q_gamma"] {
        for _ in 0..2 {
            let vectors = source.floats(60, 8);
            let ids = insert(&mut client, name, tag, &vectors).await;
            by_tag.entry(tag).or_default().add(&ids, &vectors);
        }
        flush(&mut client, name).await;
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
            let reply = search(&mut client, name, tags, &queries, topk as i64).await;
            check_against_oracle(
                &format!("{kind:?} tags {tags:?} topk {topk}"),
                &reply,
                L2,
                rows,
                &queries,
                topk,
                Some(topk.min(rows.len())),
            );
        }
    }
    for unknown in [vec!["nope"], vec!["zz.*", "p_alph"]] {
        let reply = grpc_ok(
            "Search with an unknown tag",
            client
                .search(search_param(name, &unknown, &queries, 10, "{}"))
                .await,
        );
        assert_eq!(
            code_of(&reply.status),
            ErrorCode::UnexpectedError as i32,
            "unknown tag {unknown:?}: {:?}",
            reply.status
        );
        assert_eq!(reply.row_num, 0);
    }
    cluster.stop().await;
}

async fn delete_ids(client: &mut Client, name: &str, ids: &HashSet<i64>) {
    let status = grpc_ok(
        "DeleteByID",
        client
            .delete_by_id(DeleteByIdParam {
                collection_name: name.to_string(),
                id_array: ids.iter().copied().collect(),
                partition_tag: String::new(),
            })
            .await,
    );
    assert_status_ok("DeleteByID", &status);
    flush(client, name).await;
}

async fn deletes(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(33);
    let name = "deleting";
    create_collection(&mut client, name, 16, L2).await;
    let mut rows = fill_floats(&mut client, name, &mut source, 3, 200, 16).await;
    let queries = source.floats(3, 16);
    for round in 0..2 {
        // Searching first puts the segments in the read-only nodes' caches.
        let reply = search(&mut client, name, &[], &queries, 10).await;
        check_against_oracle(
            &format!("{kind:?} before deletes, round {round}"),
            &reply,
            L2,
            &rows,
            &queries,
            10,
            Some(10),
        );
        // The current best hits of every query, plus some others.
        let mut doomed: HashSet<i64> = queries
            .iter()
            .flat_map(|q| oracle(L2, &rows, q, 5))
            .map(|(_, id)| id)
            .collect();
        doomed.extend(rows.rows.iter().step_by(13).map(|(id, _)| *id));
        delete_ids(&mut client, name, &doomed).await;
        rows.remove(&doomed);
        for topk in [10usize, 1000] {
            let reply = search(&mut client, name, &[], &queries, topk as i64).await;
            check_against_oracle(
                &format!(
                    "{kind:?} after deleting {} ids, round {round}, topk {topk}",
                    doomed.len()
                ),
                &reply,
                L2,
                &rows,
                &queries,
                topk,
                None,
            );
            assert!(
                reply.ids.iter().all(|id| !doomed.contains(id)),
                "round {round}: a deleted id came back"
            );
        }
    }
    cluster.stop().await;
}

async fn drop_and_recreate(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(44);
    let name = "reborn";
    create_collection(&mut client, name, 16, L2).await;
    let old_rows = fill_floats(&mut client, name, &mut source, 2, 150, 16).await;
    let old_queries = source.floats(2, 16);
    let reply = search(&mut client, name, &[], &old_queries, 10).await;
    check_against_oracle(
        "first life (L2)",
        &reply,
        L2,
        &old_rows,
        &old_queries,
        10,
        Some(10),
    );

    let status = grpc_ok(
        "DropCollection",
        client
            .drop_collection(CollectionName {
                collection_name: name.to_string(),
            })
            .await,
    );
    assert_status_ok("DropCollection", &status);
    create_collection(&mut client, name, 8, IP).await;
    // The new collection is empty: no stale files of the old one.
    let queries = source.floats(2, 8);
    let reply = search(&mut client, name, &[], &queries, 10).await;
    assert_eq!(
        reply.row_num, 0,
        "the re-created collection has no rows yet: {reply:?}"
    );

    let rows = fill_floats(&mut client, name, &mut source, 2, 150, 8).await;
    for topk in [1usize, 10, 500] {
        let reply = search(&mut client, name, &[], &queries, topk as i64).await;
        check_against_oracle(
            &format!("{kind:?} second life (IP, dim 8) topk {topk}"),
            &reply,
            IP,
            &rows,
            &queries,
            topk,
            Some(topk.min(rows.len())),
        );
    }
    cluster.stop().await;
}

async fn read_your_writes(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(55);
    let name = "fresh";
    create_collection(&mut client, name, 8, L2).await;
    let queries = source.floats(2, 8);
    // Created a moment ago through the proxy: known, empty, not code 4.
    let reply = search(&mut client, name, &[], &queries, 10).await;
    assert_eq!(reply.row_num, 0, "{reply:?}");
    let mut rows = Rows::default();
    for round in 0..6 {
        let vectors = source.floats(40, 8);
        let ids = insert(&mut client, name, "", &vectors).await;
        flush(&mut client, name).await;
        rows.add(&ids, &vectors);
        let topk = 1000;
        let reply = search(&mut client, name, &[], &queries, topk as i64).await;
        check_against_oracle(
            &format!("{kind:?} right after flush {round}"),
            &reply,
            L2,
            &rows,
            &queries,
            topk,
            Some(rows.len()),
        );
    }
    cluster.stop().await;
}

async fn merges_during_search(kind: MetaKind) {
    let timing = WriterTiming {
        merge_interval: Duration::from_millis(200),
        cleanup_delay: Duration::from_millis(500),
    };
    let cluster = Cluster::start(&kind, timing).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(66);
    let name = "merging";
    create_collection(&mut client, name, 8, L2).await;
    let queries = source.floats(2, 8);
    let mut rows = Rows::default();
    let started = Instant::now();
    let mut flushes = 0;
    while flushes < 40 && started.elapsed() < Duration::from_secs(20) {
        let vectors = source.floats(25, 8);
        let ids = insert(&mut client, name, "", &vectors).await;
        flush(&mut client, name).await;
        flushes += 1;
        rows.add(&ids, &vectors);
        for topk in [10usize, 2000] {
            let reply = search(&mut client, name, &[], &queries, topk as i64).await;
            check_against_oracle(
                &format!("{kind:?} after flush {flushes} (merges running), topk {topk}"),
                &reply,
                L2,
                &rows,
                &queries,
                topk,
                Some(topk.min(rows.len())),
            );
        }
    }
    let (_, files) = route(&mut client, name).await;
    assert!(
        files < flushes,
        "{flushes} flushes left {files} files: no merge happened, the scenario tested nothing"
    );
    cluster.stop().await;
}

/// The Milvus status code of a reply that must not be a gRPC error.
fn search_code(what: &str, result: Result<tonic::Response<TopKQueryResult>, tonic::Status>) -> i32 {
    let reply = grpc_ok(what, result);
    let code = code_of(&reply.status);
    if code != 0 {
        assert_eq!(reply.row_num, 0, "{what}: an error carries no rows");
    }
    code
}

async fn error_paths(kind: MetaKind) {
    let cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(77);
    let name = "errs";
    create_collection(&mut client, name, 8, L2).await;
    let rows = fill_floats(&mut client, name, &mut source, 1, 50, 8).await;
    let queries = source.floats(1, 8);

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
    let got = search_code(
        "IVF search without nprobe",
        client
            .search(search_param(name, &[], &queries, 10, "{}"))
            .await,
    );
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

async fn reader_down(kind: MetaKind) {
    let mut cluster = Cluster::start(&kind, WriterTiming::NO_MERGES).await;
    let mut client = cluster.client.clone();
    let mut source = VectorSource::new(88);
    let name = "survivor";
    create_collection(&mut client, name, 16, L2).await;
    let rows = fill_floats(&mut client, name, &mut source, 10, 100, 16).await;
    let queries = source.floats(5, 16);
    let check = |what: &str, reply: &TopKQueryResult, topk: usize| {
        check_against_oracle(
            &format!("{kind:?} {what} topk {topk}"),
            reply,
            L2,
            &rows,
            &queries,
            topk,
            Some(topk.min(rows.len())),
        );
    };
    let reply = search(&mut client, name, &[], &queries, 10).await;
    check("all readers up", &reply, 10);

    // Stop the reader that serves the most files.
    let (nodes, _) = route(&mut client, name).await;
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
        let reply = search(&mut client, name, &[], &queries, topk as i64).await;
        check(&format!("reader {stopped} down"), &reply, topk);
    }
    cluster.stop().await;
}

/// The oracle check itself must reject wrong answers, or every scenario above
/// would pass vacuously.
mod oracle_check {
    use super::*;

    fn fixture() -> (Rows, Vec<Vector>, TopKQueryResult) {
        let mut rows = Rows::default();
        let vectors: Vec<Vector> = [0.0f32, 1.0, 3.0, 6.0]
            .iter()
            .map(|x| Vector::Float(vec![*x, 0.0]))
            .collect();
        rows.add(&[10, 11, 12, 13], &vectors);
        let queries = vec![Vector::Float(vec![0.9, 0.0])];
        let reply = TopKQueryResult {
            status: None,
            row_num: 1,
            ids: vec![11, 10, 12],
            distances: vec![0.01, 0.81, 4.41],
        };
        (rows, queries, reply)
    }

    #[test]
    fn a_right_answer_passes() {
        let (rows, queries, reply) = fixture();
        check_against_oracle("right", &reply, L2, &rows, &queries, 3, Some(3));
    }

    #[test]
    #[should_panic(expected = "oracle has id")]
    fn a_wrong_order_fails() {
        let (rows, queries, mut reply) = fixture();
        reply.ids.swap(0, 1);
        reply.distances.swap(0, 1);
        check_against_oracle("order", &reply, L2, &rows, &queries, 3, Some(3));
    }

    #[test]
    #[should_panic(expected = "not a live row")]
    fn a_deleted_id_fails() {
        let (mut rows, queries, reply) = fixture();
        rows.remove(&HashSet::from([12]));
        check_against_oracle("deleted", &reply, L2, &rows, &queries, 3, None);
    }

    #[test]
    #[should_panic(expected = "true distance")]
    fn a_wrong_distance_fails() {
        let (rows, queries, mut reply) = fixture();
        reply.distances[2] = 4.5;
        check_against_oracle("distance", &reply, L2, &rows, &queries, 3, Some(3));
    }

    #[test]
    #[should_panic(expected = "stride")]
    fn a_wrong_stride_fails() {
        let (rows, queries, mut reply) = fixture();
        reply.ids.push(-1);
        reply.distances.push(f32::MAX);
        check_against_oracle("stride", &reply, L2, &rows, &queries, 10, Some(4));
    }

    #[test]
    fn ties_may_come_in_any_order() {
        let mut rows = Rows::default();
        rows.add(
            &[1, 2, 3],
            &[
                Vector::Binary(vec![0b0000_0001]),
                Vector::Binary(vec![0b0000_0010]),
                Vector::Binary(vec![0b0000_0111]),
            ],
        );
        let queries = vec![Vector::Binary(vec![0])];
        let reply = TopKQueryResult {
            status: None,
            row_num: 1,
            ids: vec![2, 1],
            distances: vec![1.0, 1.0],
        };
        check_against_oracle("ties", &reply, HAMMING, &rows, &queries, 2, Some(2));
    }
}
