//! Query coalescing (`[coalesce]`) against real nodes over loopback: many
//! concurrent searches through a coalescing proxy (mixed nq, topk, partition
//! selections) get exactly the answers the same searches get one by one
//! through a proxy without it, while its read-only nodes see fewer calls
//! than the searches would have made alone.
#![allow(clippy::unwrap_used)] // tests and benches unwrap their own fixtures

mod common;

use common::*;
use futures::future::join_all;
use mishards::wire::*;

on_both_databases!(coalesced_searches_match_uncoalesced);

/// The proxy's `SearchInFiles` calls to its nodes so far.
fn node_search_calls(proxy: &mishards::proxy::RunningProxy) -> f64 {
    let text = proxy.metrics.encode();
    text.lines()
        .filter(|l| l.starts_with("mishards_backend_requests_total{"))
        .filter(|l| l.contains("method=\"SearchInFiles\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn coalesced_searches_match_uncoalesced(setup: Setup) {
    let cluster = Cluster::with(&setup).readers(2).start().await;
    let label = setup.label();
    let mut collection = cluster.collection("coalesced", 16, L2).await;
    let mut source = VectorSource::new(20261204);
    collection.fill(&mut source, 4, 300).await;
    collection.create_partition("p1").await;
    let tagged = collection.vectors(&mut source, 200);
    collection.insert("p1", &tagged).await;
    collection.flush().await;

    let readers = cluster
        .reader_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let mut config = proxy_config(&cluster.meta_uri, &writer, readers);
    config.coalesce.enabled = true;
    config.coalesce.max_batch_nq = 16;
    let coalescing = mishards::proxy::start(config)
        .await
        .expect("coalescing proxy starts");

    // 48 searches: nq 1..=4, topk 5 or 20, every partition or only p1.
    let searches: Vec<SearchParam> = (0..48)
        .map(|i| {
            let queries = collection.vectors(&mut source, 1 + i % 4);
            let tags: &[&str] = if i % 3 == 0 { &["p1"] } else { &[] };
            let topk = if i % 2 == 0 { 5 } else { 20 };
            search_param("coalesced", tags, &queries, topk, "{}")
        })
        .collect();

    // Warm both proxies (snapshot, placement, node caches) first.
    let mut plain = cluster.client.clone();
    let mut through = client_of(coalescing.addr);
    for s in &searches[..4] {
        grpc_ok("warm plain", plain.search(s.clone()).await);
        grpc_ok("warm coalescing", through.search(s.clone()).await);
    }

    let calls_before = node_search_calls(&coalescing);
    let concurrent = join_all(searches.iter().map(|s| {
        let mut client = client_of(coalescing.addr);
        let s = s.clone();
        async move { client.search(s).await }
    }))
    .await;
    let calls = node_search_calls(&coalescing) - calls_before;

    for (i, (search, reply)) in searches.iter().zip(concurrent).enumerate() {
        let reply = grpc_ok("coalesced search", reply);
        assert_ok(&format!("{label}: coalesced search {i}"), &reply.status);
        let alone = grpc_ok("plain search", plain.search(search.clone()).await);
        assert_ok(&format!("{label}: plain search {i}"), &alone.status);
        assert_eq!(
            (reply.row_num, &reply.ids, &reply.distances),
            (alone.row_num, &alone.ids, &alone.distances),
            "{label}: search {i} (nq {}, topk {}, tags {:?}) differs when coalesced",
            search.query_record_array.len(),
            search.topk,
            search.partition_tag_array
        );
        assert_eq!(reply.row_num, search.query_record_array.len() as i64);
    }
    // Uncoalesced, each search would make one call per read-only node.
    let alone_calls = (searches.len() * 2) as f64;
    eprintln!(
        "{label}: {calls} node calls for {} concurrent searches (alone: {alone_calls})",
        searches.len()
    );
    assert!(
        calls < alone_calls,
        "{label}: {calls} node calls for {} searches: nothing was coalesced",
        searches.len()
    );
    assert!(
        metric(&coalescing, "mishards_coalesced_call_searches_count") >= 1.0,
        "{label}: no stacked call was counted"
    );
    coalescing
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("coalescing proxy stops");
    cluster.stop().await;
}
