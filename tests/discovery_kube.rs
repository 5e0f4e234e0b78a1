//! Kubernetes discovery against a stub API server (axum on loopback serving
//! EndpointSlice lists): ready endpoints join the ring, a not-ready or
//! removed one leaves it, a failing list keeps the nodes in effect.
//! Runs with `cargo test --features kube --test discovery_kube`.

#![cfg(feature = "kube")]
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use mishards::backend::live::LiveBackends;
use mishards::backend::Backends;
use mishards::config::{Config, DiscoveryMode};
use mishards::proxy::reload::Reconfigurer;
use mishards::telemetry::Metrics;

/// What the stub answers: the slices' endpoints as (address, ready), or an error.
#[derive(Default)]
struct Stub {
    endpoints: Vec<(&'static str, bool)>,
    failing: bool,
    /// The (namespace, labelSelector) of every list received.
    asked: Vec<(String, String)>,
}

async fn list_slices(
    State(stub): State<Arc<Mutex<Stub>>>,
    Path(namespace): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<String, StatusCode> {
    let mut stub = stub.lock().unwrap();
    let selector = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    stub.asked.push((namespace, selector));
    if stub.failing {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let endpoints: Vec<serde_json::Value> = stub
        .endpoints
        .iter()
        .map(|(address, ready)| {
            serde_json::json!({"addresses": [address], "conditions": {"ready": ready}})
        })
        .collect();
    Ok(serde_json::json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "items": [{
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 19530, "protocol": "TCP"}],
            "endpoints": endpoints,
        }]
    })
    .to_string())
}

async fn wait_for_ring(live: &LiveBackends, expected: &[&str]) {
    let started = Instant::now();
    loop {
        let nodes = live.load().ring.nodes().to_vec();
        if nodes == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "ring {nodes:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_add_and_remove_read_only_nodes() {
    let stub = Arc::new(Mutex::new(Stub {
        endpoints: vec![("10.1.0.1", true), ("10.1.0.2", true), ("10.1.0.3", false)],
        ..Stub::default()
    }));
    let app = Router::new()
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            get(list_slices),
        )
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = Config::default();
    config.backends.writable = "127.0.0.1:1".into();
    config.backends.readonly = vec!["10.9.9.9:19530".into()]; // ignored once discovery answers
    config.discovery.mode = DiscoveryMode::Kubernetes;
    config.discovery.namespace = "milvus".into();
    config.discovery.label_selector = "kubernetes.io/service-name=milvus-ro".into();
    config.discovery.port = "grpc".into();
    config.discovery.poll_interval = Duration::from_millis(50);
    config.discovery.api_server = format!("http://{api}");
    let metrics = Metrics::new();
    let live = LiveBackends::new(
        Backends::new(&config, metrics.clone()).unwrap(),
        metrics.clone(),
    );
    let reconfigurer = Reconfigurer::new(None, config.clone(), live.clone(), metrics, None);
    let poller = mishards::discovery::spawn(&config.discovery, reconfigurer.clone())
        .unwrap()
        .expect("kubernetes discovery runs");

    // Only the ready endpoints, with the named port.
    wait_for_ring(&live, &["10.1.0.1:19530", "10.1.0.2:19530"]).await;
    let kept = live.load().get("10.1.0.2:19530").unwrap().clone();
    assert_eq!(
        stub.lock().unwrap().asked[0],
        (
            "milvus".to_string(),
            "kubernetes.io/service-name=milvus-ro".to_string()
        )
    );

    // A node turns ready, another goes away.
    stub.lock().unwrap().endpoints = vec![("10.1.0.2", true), ("10.1.0.3", true)];
    wait_for_ring(&live, &["10.1.0.2:19530", "10.1.0.3:19530"]).await;
    assert!(
        Arc::ptr_eq(live.load().get("10.1.0.2:19530").unwrap(), &kept),
        "a node still listed keeps its connection"
    );
    assert_eq!(
        reconfigurer.effective().backends.readonly,
        ["10.1.0.2:19530", "10.1.0.3:19530"]
    );

    // The API server failing keeps the nodes in effect.
    let asked = stub.lock().unwrap().asked.len();
    stub.lock().unwrap().failing = true;
    let started = Instant::now();
    while stub.lock().unwrap().asked.len() < asked + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the poller stopped listing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        live.load().ring.nodes(),
        ["10.1.0.2:19530", "10.1.0.3:19530"]
    );

    // Back, with every node gone: searches go to the writable node again.
    {
        let mut s = stub.lock().unwrap();
        s.failing = false;
        s.endpoints.clear();
    }
    wait_for_ring(&live, &[]).await;
    poller.abort();
    server.abort();
}
