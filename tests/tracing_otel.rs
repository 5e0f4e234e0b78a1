//! The request spans as OpenTelemetry sees them (feature `otel`): a search
//! through an in-process cluster (1 writable + 2 read-only nodes + the proxy)
//! exported to opentelemetry_sdk's in-memory exporter. Checks the span tree
//! (client's remote parent -> `rpc` root -> plan, one backend call per node,
//! merge), the root's attributes, and that every read-only node continued
//! the trace from the `traceparent` the proxy sent it.
//!
//! Run: `cargo test --features otel --test tracing_otel`.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::collections::HashSet;

use common::*;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The client's own trace: the proxy must continue it.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_produces_the_expected_spans() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(mishards::trace::otel::layer(&provider))
        .init();

    let cluster = Cluster::with(&MetaKind::Sqlite).readers(2).start().await;
    let mut client = cluster.client.clone();
    create_collection(&mut client, "traced", 8, L2).await;
    let mut source = VectorSource::new(7);
    // Four flushes, four segment files: spread by the ring over the two nodes.
    for _ in 0..4 {
        insert(&mut client, "traced", "", &source.floats(50, 8)).await;
        flush(&mut client, "traced").await;
    }
    exporter.reset();

    let queries = source.floats(2, 8);
    let mut request = tonic::Request::new(search_param("traced", &[], &queries, 5, "{}"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let reply = client.search(request).await.unwrap().into_inner();
    assert_ok("traced search", &reply.status);
    assert_eq!(reply.row_num, 2);
    let readers: HashSet<String> = cluster
        .reader_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    cluster.stop().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();

    // The root: the client's trace continued, every attribute filled in.
    let roots = named(&spans, "milvus.grpc.MilvusService/Search");
    assert_eq!(roots.len(), 1, "one request span in {names:?}");
    let root = roots[0];
    let trace_id = TraceId::from_hex(CLIENT_TRACE).unwrap();
    assert_eq!(root.span_context.trace_id(), trace_id);
    assert_eq!(root.parent_span_id, SpanId::from_hex(CLIENT_SPAN).unwrap());
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(attr(root, "method").as_deref(), Some("Search"));
    assert_eq!(attr(root, "collection").as_deref(), Some("traced"));
    assert_eq!(attr(root, "nq").as_deref(), Some("2"));
    assert_eq!(attr(root, "topk").as_deref(), Some("5"));
    assert_eq!(attr(root, "files").as_deref(), Some("4"));
    assert_eq!(attr(root, "status").as_deref(), Some("SUCCESS"));
    let nodes: usize = attr(root, "nodes").unwrap().parse().unwrap();
    assert!((1..=2).contains(&nodes), "nodes = {nodes}");
    let duration: f64 = attr(root, "duration_ms").unwrap().parse().unwrap();
    assert!(duration > 0.0);
    let root_id = root.span_context.span_id();

    // Its children: the plan, one call per node, the merge.
    let children = |name: &str| -> Vec<&SpanData> {
        named(&spans, name)
            .into_iter()
            .filter(|s| s.parent_span_id == root_id)
            .collect()
    };
    let plan = children("plan");
    assert_eq!(plan.len(), 1, "{names:?}");
    assert_eq!(attr(plan[0], "files").as_deref(), Some("4"));
    assert_eq!(children("merge").len(), 1, "{names:?}");
    let calls = children("backend/SearchInFiles");
    assert_eq!(calls.len(), nodes, "one backend call per node: {names:?}");
    for call in &calls {
        assert_eq!(call.span_kind, SpanKind::Client);
        assert_eq!(call.span_context.trace_id(), trace_id);
        assert!(readers.contains(&attr(call, "backend").unwrap()));
        assert_eq!(attr(call, "outcome").as_deref(), Some("ok"));
    }

    // Each node continued the trace from the traceparent it received.
    let call_ids: HashSet<SpanId> = calls.iter().map(|c| c.span_context.span_id()).collect();
    let served = named(&spans, "node/SearchInFiles");
    assert_eq!(served.len(), nodes, "{names:?}");
    for s in served {
        assert_eq!(s.span_context.trace_id(), trace_id);
        assert!(
            call_ids.contains(&s.parent_span_id),
            "a node span's parent is a proxy backend call"
        );
    }
}
