//! Shard groups: two independent clusters (each its own metadata database,
//! storage, writable and read-only nodes) behind one proxy. A client sees one
//! Milvus holding all the rows: oracle-checked searches, counts, deletes and
//! get-by-id across groups, ids unique across two proxy replicas inserting
//! at once, a failed insert leaves nothing, a failed create is rolled back,
//! pinned collections live in one group. Over SQLite and MySQL.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use mishards::config::{Config, GroupConfig, PlacementDefault};
use mishards::proxy::reload::ReloadOutcome;
use mishards::proxy::{self, RunningProxy, StartOptions};
use mishards::wire::*;
use tonic_health::pb::health_check_response::ServingStatus;

on_both_databases!(
    spread_collection_is_one_milvus,
    failures_leave_nothing,
    operated_like_one_cluster
);

/// Two clusters with one read-only node each (their own proxies unused).
async fn two_clusters(setup: &Setup) -> Vec<Cluster> {
    vec![
        Cluster::with(setup).readers(1).start().await,
        Cluster::with(setup).readers(1).start().await,
    ]
}

/// A proxy over `clusters` as groups g1, g2, ...; `tenant` pinned to the last.
async fn grouped_proxy(clusters: &[Cluster]) -> RunningProxy {
    proxy::start(grouped_config(clusters))
        .await
        .expect("grouped proxy starts")
}

/// The configuration of [`grouped_proxy`].
fn grouped_config(clusters: &[Cluster]) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.metrics.listen = "127.0.0.1:0".into();
    config.backends.connect_timeout = Duration::from_secs(1);
    config.backends.request_timeout = Duration::from_secs(60);
    config.backends.search_timeout = Duration::from_secs(20);
    config.topology.refresh_interval = Duration::from_millis(100);
    for (i, c) in clusters.iter().enumerate() {
        config.groups.push(GroupConfig {
            name: format!("g{}", i + 1),
            meta_uri: c.meta_uri.clone(),
            writable: c.writer.as_ref().unwrap().addr.to_string(),
            readonly: c
                .readers
                .iter()
                .flatten()
                .map(|r| r.addr.to_string())
                .collect(),
        });
    }
    config
        .placement
        .pinned
        .insert("tenant".into(), format!("g{}", clusters.len()));
    let errors = config.validate();
    assert!(errors.is_empty(), "{errors:?}");
    config
}

async fn spread_collection_is_one_milvus(setup: Setup) {
    let clusters = two_clusters(&setup).await;
    let proxy = grouped_proxy(&clusters).await;
    let replica = grouped_proxy(&clusters).await;
    let mut source = VectorSource::new(14);
    let name = "spread";
    let mut client = client_of(proxy.addr);
    create_collection(&mut client, name, 8, L2).await;
    let mut collection = TestCollection::new(client.clone(), setup.label(), name, 8, L2);
    let mut other = collection.through(client_of(replica.addr));

    // Two replicas insert without ids at once: every id is unique.
    let mut rows = Rows::default();
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let a = collection.vectors(&mut source, 300);
        let b = collection.vectors(&mut source, 300);
        let (ia, ib) = tokio::join!(collection.insert("", &a), other.insert("", &b));
        for id in ia.iter().chain(&ib) {
            assert!(ids.insert(*id), "{}: id {id} given twice", setup.label());
        }
        rows.add(&ia, &a);
        rows.add(&ib, &b);
    }
    collection.flush().await;
    assert_eq!(count(&mut client, name).await, 1800);
    // Both groups hold some of the rows.
    for c in &clusters {
        let mut direct = c.writer_client();
        let n = count(&mut direct, name).await;
        assert!(
            n > 300 && n < 1500,
            "{}: one group holds {n} of 1800",
            setup.label()
        );
    }
    let queries = collection.vectors(&mut source, 5);
    collection
        .expect_search("over two groups", &rows, &queries, 10)
        .await;
    // A flush through the replica reads every group's files afresh (else it
    // sees the other's flush at its next snapshot refresh).
    other.flush().await;
    other
        .expect_search("through the replica", &rows, &queries, 10)
        .await;

    // Milvus' id rule holds across the groups: this collection's ids are generated.
    let with_ids = grpc_ok(
        "Insert",
        client
            .insert(InsertParam {
                collection_name: name.into(),
                row_record_array: queries.iter().map(Vector::record).collect(),
                row_id_array: (1..=5).collect(),
                partition_tag: String::new(),
                extra_params: vec![],
            })
            .await,
    );
    assert_eq!(code_of(&with_ids.status), ErrorCode::IllegalVectorId as i32);

    // Get by id and delete across groups.
    let some: Vec<i64> = ids.iter().copied().take(40).collect();
    let got = grpc_ok(
        "GetVectorsByID",
        client
            .get_vectors_by_id(VectorsIdentity {
                collection_name: name.into(),
                id_array: some.clone(),
                partition_tag: String::new(),
            })
            .await,
    );
    assert_ok("GetVectorsByID", &got.status);
    assert_eq!(got.vectors_data.len(), 40);
    assert!(got.vectors_data.iter().all(|v| v.float_data.len() == 8));
    let gone: HashSet<i64> = some.into_iter().collect();
    collection.delete(&gone).await;
    collection.flush().await;
    rows.remove(&gone);
    assert_eq!(count(&mut client, name).await, 1760);
    collection
        .expect_search("after deletes", &rows, &queries, 10)
        .await;

    // ShowCollectionInfo adds up, with segment names qualified by group.
    let info = grpc_ok(
        "ShowCollectionInfo",
        client
            .show_collection_info(CollectionName {
                collection_name: name.into(),
            })
            .await,
    );
    let doc: serde_json::Value = serde_json::from_str(&info.json_info).unwrap();
    assert_eq!(doc["row_count"], 1760);
    let segments = doc["partitions"][0]["segments"].as_array().unwrap();
    assert!(segments
        .iter()
        .any(|s| s["name"].as_str().unwrap().starts_with("g1/")));
    assert!(segments
        .iter()
        .any(|s| s["name"].as_str().unwrap().starts_with("g2/")));
    let segment = segments[0]["name"].as_str().unwrap().to_string();
    let listed = grpc_ok(
        "GetVectorIDs",
        client
            .get_vector_i_ds(GetVectorIDsParam {
                collection_name: name.into(),
                segment_name: segment.clone(),
            })
            .await,
    );
    assert_ok("GetVectorIDs qualified", &listed.status);
    assert!(!listed.vector_id_array.is_empty());
    let bare = segment.split_once('/').unwrap().1.to_string();
    let refused = grpc_ok(
        "GetVectorIDs",
        client
            .get_vector_i_ds(GetVectorIDsParam {
                collection_name: name.into(),
                segment_name: bare,
            })
            .await,
    );
    assert_ne!(
        code_of(&refused.status),
        0,
        "a bare segment name of a spread collection"
    );

    // route and conn_stats answer per group.
    let routed = cmd(&mut client, "route spread").await;
    let doc: serde_json::Value = serde_json::from_str(&routed).unwrap();
    assert!(
        doc["groups"]["g1"].is_object() && doc["groups"]["g2"].is_object(),
        "{routed}"
    );
    let stats = cmd(&mut client, "conn_stats").await;
    let doc: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(doc["groups"]["g2"].is_object(), "{stats}");

    // A pinned collection lives in one group only.
    create_collection(&mut client, "tenant", 8, L2).await;
    let mut tenant = TestCollection::new(client.clone(), setup.label(), "tenant", 8, L2);
    let tenant_rows = tenant.fill(&mut source, 1, 50).await;
    tenant
        .expect_search("pinned", &tenant_rows, &queries, 5)
        .await;
    let has = |c: &Cluster| {
        let mut direct = c.writer_client();
        async move {
            grpc_ok(
                "HasCollection",
                direct
                    .has_collection(CollectionName {
                        collection_name: "tenant".into(),
                    })
                    .await,
            )
            .bool_reply
        }
    };
    assert!(!has(&clusters[0]).await && has(&clusters[1]).await);
    let listed = grpc_ok(
        "ShowCollections",
        client.show_collections(Command::default()).await,
    );
    assert_eq!(
        listed.collection_names,
        vec!["spread".to_string(), "tenant".to_string()]
    );

    collection.drop_collection().await;
    replica.stop(Duration::from_secs(1)).await.unwrap();
    proxy.stop(Duration::from_secs(1)).await.unwrap();
    for c in clusters {
        c.stop().await;
    }
}

async fn failures_leave_nothing(setup: Setup) {
    let mut clusters = two_clusters(&setup).await;
    let proxy = grouped_proxy(&clusters).await;
    let mut client = client_of(proxy.addr);
    let mut source = VectorSource::new(15);

    // A create that fails in one group is rolled back in the other.
    let mut g2 = clusters[1].writer_client();
    create_collection(&mut g2, "clash", 16, L2).await;
    let status = grpc_ok(
        "CreateCollection",
        client
            .create_collection(CollectionSchema {
                status: None,
                collection_name: "clash".into(),
                dimension: 8,
                index_file_size: 1024,
                metric_type: L2,
                extra_params: vec![],
            })
            .await,
    );
    assert_ne!(status.error_code, 0);
    assert!(
        status.reason.contains("rolled back in g1"),
        "{}",
        status.reason
    );
    let mut g1 = clusters[0].writer_client();
    let has = grpc_ok(
        "HasCollection",
        g1.has_collection(CollectionName {
            collection_name: "clash".into(),
        })
        .await,
    );
    assert!(!has.bool_reply, "the create was not rolled back in g1");

    // A group's writer down: the insert fails naming it, and leaves nothing.
    let name = "writes";
    create_collection(&mut client, name, 8, L2).await;
    let mut collection = TestCollection::new(client.clone(), setup.label(), name, 8, L2);
    let rows = collection.fill(&mut source, 1, 200).await;
    let mut g1 = clusters[0].writer_client();
    let g1_before = count(&mut g1, name).await;
    clusters[1].stop_writer().await;
    let batch = collection.vectors(&mut source, 100);
    let started = std::time::Instant::now();
    let failed = grpc_ok(
        "Insert",
        client
            .insert(InsertParam {
                collection_name: name.into(),
                row_record_array: batch.iter().map(Vector::record).collect(),
                row_id_array: vec![],
                partition_tag: String::new(),
                extra_params: vec![],
            })
            .await,
    );
    let reason = failed
        .status
        .as_ref()
        .map(|s| s.reason.clone())
        .unwrap_or_default();
    assert_ne!(code_of(&failed.status), 0);
    eprintln!(
        "{}: insert of 100 rows with g2's writer down failed after {:?}: {reason}",
        setup.label(),
        started.elapsed()
    );
    assert!(
        reason.contains("g2") && reason.contains("deleted again"),
        "{reason}"
    );
    // Searches go on from the groups' read-only nodes.
    let queries = collection.vectors(&mut source, 3);
    collection
        .expect_search("writer of g2 down", &rows, &queries, 10)
        .await;
    // Nothing of the failed insert remains in g1 once flushed there.
    flush(&mut g1, name).await;
    collection
        .expect_search("after the failed insert", &rows, &queries, 10)
        .await;
    assert_eq!(
        count(&mut g1, name).await,
        g1_before,
        "{}: rows of the failed insert remain in g1",
        setup.label()
    );

    proxy.stop(Duration::from_secs(1)).await.unwrap();
    for c in clusters {
        c.stop().await;
    }
}

/// The rejection reason of a reload that must be refused.
fn refused(outcome: ReloadOutcome) -> String {
    match outcome {
        ReloadOutcome::Rejected(reason) => reason,
        applied => panic!("the reload was applied: {applied:?}"),
    }
}

/// Whether `collection` exists on the writable node of `cluster`.
async fn held_by(cluster: &Cluster, collection: &str) -> bool {
    let mut writer = cluster.writer_client();
    let has = grpc_ok(
        "HasCollection",
        writer
            .has_collection(CollectionName {
                collection_name: collection.into(),
            })
            .await,
    );
    assert_ok("HasCollection", &has.status);
    has.bool_reply
}

/// Operating a grouped proxy: reload refuses what would move rows and
/// applies the rest live (nodes and placement), `/admin` answers per group,
/// every backend series carries its group, and health says which group can
/// serve what.
async fn operated_like_one_cluster(setup: Setup) {
    let mut clusters = vec![
        Cluster::with(&setup).readers(1).start().await,
        Cluster::with(&setup).readers(2).start().await,
    ];
    let config = grouped_config(&clusters);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mishards.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let options = StartOptions {
        config_path: Some(path.clone()),
        ..StartOptions::default()
    };
    let proxy = proxy::start_with(config.clone(), options).await.unwrap();
    let mut client = client_of(proxy.addr);
    create_collection(&mut client, "spread", 8, L2).await;
    create_collection(&mut client, "tenant", 8, L2).await;
    assert!(held_by(&clusters[1], "tenant").await && !held_by(&clusters[0], "tenant").await);
    let queries = VectorSource::new(31).floats(40, 8);
    insert(&mut client, "spread", "", &queries).await;
    flush(&mut client, "spread").await;
    // The reload check reads the groups' metadata snapshots (refreshed every 100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Changes that would move rows are refused, naming the collections.
    let mut repinned = config.clone();
    repinned
        .placement
        .pinned
        .insert("tenant".into(), "g1".into());
    let reason = refused(proxy.reconfigurer.apply(repinned));
    assert!(reason.contains("tenant (g2 -> g1)"), "{reason}");
    let mut by_name = config.clone();
    by_name.placement.default = PlacementDefault::Pinned;
    let reason = refused(proxy.reconfigurer.apply(by_name));
    assert!(reason.contains("spread (g1,g2 -> g"), "{reason}");
    let mut grown = config.clone();
    grown.groups.push(GroupConfig {
        name: "g3".into(),
        meta_uri: format!("sqlite://{}", dir.path().join("g3.sqlite").display()),
        writable: "127.0.0.1:1".into(),
        readonly: vec![],
    });
    let reason = refused(proxy.reconfigurer.apply(grown));
    assert!(reason.contains("spread (g1,g2 -> g1,g2,g3)"), "{reason}");
    assert!(!reason.contains("tenant"), "{reason}");

    // A pin for a new collection and one reader fewer in g2 apply live, from the file.
    let mut next = config.clone();
    next.placement.pinned.insert("fresh".into(), "g1".into());
    let dropped = next.groups[1].readonly.pop().unwrap();
    let kept = next.groups[1].readonly[0].clone();
    std::fs::write(&path, toml::to_string(&next).unwrap()).unwrap();
    match proxy.reconfigurer.reload_file() {
        ReloadOutcome::Applied {
            change,
            needs_restart,
        } => {
            assert_eq!(change.removed, vec![dropped.clone()]);
            assert!(needs_restart.is_empty(), "{needs_restart:?}");
        }
        rejected => panic!("{rejected:?}"),
    }
    create_collection(&mut client, "fresh", 8, L2).await;
    assert!(held_by(&clusters[0], "fresh").await && !held_by(&clusters[1], "fresh").await);

    // /admin over groups: route per group, the config in effect.
    let (code, route) = http_get(proxy.metrics_addr, "/admin/route/spread").await;
    assert_eq!(code, 200, "{route}");
    let route: serde_json::Value = serde_json::from_str(&route).unwrap();
    assert!(
        route["groups"]["g1"].is_object() && route["groups"]["g2"].is_object(),
        "{route}"
    );
    let (code, effective) = http_get(proxy.metrics_addr, "/admin/config").await;
    assert_eq!(code, 200);
    assert!(effective.contains("fresh = \"g1\""), "{effective}");
    assert!(!effective.contains(&dropped), "{effective}");

    // Every backend series names its group; the dropped node has none left.
    let g1_reader = config.groups[0].readonly[0].clone();
    wait_until("backend series per group", Duration::from_secs(10), || {
        let text = proxy.metrics.encode();
        let kept = kept.clone();
        let g1_reader = g1_reader.clone();
        async move {
            text.contains(&format!(
                r#"mishards_backend_up{{group="g2",backend="{kept}"}} 1"#
            )) && text.contains(&format!(
                r#"mishards_backend_up{{group="g1",backend="{g1_reader}"}} 1"#
            ))
        }
    })
    .await;
    let text = proxy.metrics.encode();
    assert!(
        !text.contains(&format!(
            r#"mishards_backend_up{{group="g2",backend="{dropped}"}}"#
        )),
        "{text}"
    );

    // Health per group: g2's writer down makes writes partial, reads go on.
    for entry in [
        "",
        "mishards.read",
        "mishards.write",
        "mishards.read.g2",
        "mishards.write.g2",
    ] {
        assert_eq!(
            health_of(proxy.addr, entry).await,
            Some(ServingStatus::Serving),
            "{entry}"
        );
    }
    clusters[1].stop_writer().await;
    let addr = proxy.addr;
    wait_until("g2's writes NOT_SERVING", Duration::from_secs(15), || async move {
        health_of(addr, "mishards.write.g2").await == Some(ServingStatus::NotServing)
    })
    .await;
    assert_eq!(
        health_of(addr, "mishards.write").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        health_of(addr, "mishards.write.g1").await,
        Some(ServingStatus::Serving)
    );
    assert_eq!(
        health_of(addr, "mishards.read.g2").await,
        Some(ServingStatus::Serving)
    );
    assert_eq!(health_of(addr, "").await, Some(ServingStatus::Serving));
    let (code, ready) = http_get(proxy.metrics_addr, "/readyz").await;
    assert_eq!(code, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["state"], "degraded", "{ready}");
    assert_eq!(ready["groups"]["g2"]["write"], "NOT_SERVING", "{ready}");
    assert_eq!(ready["groups"]["g1"]["state"], "ok", "{ready}");

    // g2 without a search path: spread searches fail naming it (never a
    // partial answer); the proxy stays ready for what g1 can serve.
    clusters[1].stop_reader(0).await;
    wait_until("g2's reads NOT_SERVING", Duration::from_secs(15), || async move {
        health_of(addr, "mishards.read.g2").await == Some(ServingStatus::NotServing)
    })
    .await;
    let reply = grpc_ok(
        "Search",
        client
            .search(search_param("spread", &[], &queries[..1], 5, "{}"))
            .await,
    );
    assert_ne!(code_of(&reply.status), 0, "a partial search was answered");
    let reason = reply.status.map(|s| s.reason).unwrap_or_default();
    assert!(reason.contains("g2"), "{reason}");
    assert_eq!(
        health_of(addr, "mishards.read").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(health_of(addr, "").await, Some(ServingStatus::Serving));

    proxy.stop(Duration::from_secs(1)).await.unwrap();
    for c in clusters {
        c.stop().await;
    }
}
