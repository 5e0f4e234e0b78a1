//! Milvus 1.1's HTTP API (`src/http_api/`) over loopback with a real HTTP
//! client: the same operation through REST and through gRPC gives the same
//! answer, Milvus' error codes, CORS, access control and unknown routes; on
//! the proxy and on the bundled node.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::relay::{Mode, Relay};
use common::*;
use mishards::wire::{CollectionName, Command, PartitionParam};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const L2: i32 = 1;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        // A 204 reply from Milvus may carry a body (ours does not); never reuse.
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `method path` with an optional JSON body: the status and the body
/// (JSON, or `Value::String` of a non-JSON body, `Null` when empty).
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http().request(method, format!("http://{addr}{path}"));
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

fn http_addr(cluster: &Cluster) -> SocketAddr {
    cluster
        .proxy
        .as_ref()
        .unwrap()
        .http_api_addr
        .expect("the proxy serves the HTTP API")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_give_the_same_answers() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(1).start().await;
    let addr = http_addr(&cluster);
    let mut grpc = cluster.client.clone();

    let (status, body) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": "rest_a", "dimension": 8})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"message": "OK", "code": 0}));
    let schema = grpc
        .describe_collection(CollectionName {
            collection_name: "rest_a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (schema.dimension, schema.metric_type, schema.index_file_size),
        (8, L2, 1024)
    );

    let (status, object) = call(addr, Method::GET, "/collections/rest_a", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        object,
        json!({"collection_name": "rest_a", "count": 0, "dimension": 8, "index": "FLAT",
               "index_file_size": 1024, "index_params": "{}", "metric_type": "L2"})
    );
    // A trailing slash is tolerated.
    assert_eq!(
        call(addr, Method::GET, "/collections/rest_a/", None)
            .await
            .1,
        object
    );

    let names = grpc
        .show_collections(Command { cmd: String::new() })
        .await
        .unwrap()
        .into_inner()
        .collection_names;
    let (status, list) = call(addr, Method::GET, "/collections?all_required=true", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], json!(names.len()));
    let listed: Vec<&str> = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["collection_name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());

    // Partitions.
    let (status, _) = call(
        addr,
        Method::POST,
        "/collections/rest_a/partitions",
        Some(json!({"partition_tag": "p1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let tags = grpc
        .show_partitions(CollectionName {
            collection_name: "rest_a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .partition_tag_array;
    assert!(tags.contains(&"p1".to_string()), "{tags:?}");
    let (_, partitions) = call(addr, Method::GET, "/collections/rest_a/partitions", None).await;
    let rest_tags: Vec<&str> = partitions["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partition_tag"].as_str().unwrap())
        .collect();
    assert_eq!(
        rest_tags,
        tags.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(partitions["count"], json!(tags.len()));

    // Indexes.
    let (status, body) = call(
        addr,
        Method::POST,
        "/collections/rest_a/indexes",
        Some(json!({"index_type": "IVFFLAT", "params": {"nlist": 16}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let index = grpc
        .describe_index(CollectionName {
            collection_name: "rest_a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.index_type, 2);
    let (_, rest_index) = call(addr, Method::GET, "/collections/rest_a/indexes", None).await;
    assert_eq!(
        rest_index,
        json!({"index_type": "IVFFLAT", "params": {"nlist": 16}})
    );
    let (_, object) = call(addr, Method::GET, "/collections/rest_a", None).await;
    assert_eq!(object["index"], json!("IVFFLAT"));
    assert_eq!(object["index_params"], json!("{\"nlist\":16}"));
    let (status, _) = call(addr, Method::DELETE, "/collections/rest_a/indexes", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, rest_index) = call(addr, Method::GET, "/collections/rest_a/indexes", None).await;
    assert_eq!(rest_index["index_type"], json!("FLAT"));

    // ShowCollectionInfo, Cmd, Flush.
    let info = grpc
        .show_collection_info(CollectionName {
            collection_name: "rest_a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (status, stat) = call(addr, Method::GET, "/collections/rest_a?info=stat", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stat,
        serde_json::from_str::<Value>(&info.json_info).unwrap()
    );
    let version = grpc
        .cmd(Command {
            cmd: "version".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .string_reply;
    let (status, body) = call(addr, Method::GET, "/system/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"code": 0, "message": "OK", "reply": version}));
    let (status, body) = call(
        addr,
        Method::PUT,
        "/system/task",
        Some(json!({"flush": {"collection_names": ["rest_a"]}})),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"code": 0, "message": "OK"}))
    );

    // Drops.
    let (status, _) = call(
        addr,
        Method::DELETE,
        "/collections/rest_a/partitions",
        Some(json!({"partition_tag": "p1"})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let has = grpc
        .has_partition(PartitionParam {
            collection_name: "rest_a".into(),
            tag: "p1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!has.bool_reply);
    let (status, body) = call(
        addr,
        Method::DELETE,
        "/collections/rest_a/partitions",
        Some(json!({"partition_tag": "p1"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(4))
    );
    let (status, _) = call(addr, Method::DELETE, "/collections/rest_a", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let has = grpc
        .has_collection(CollectionName {
            collection_name: "rest_a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!has.bool_reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milvus_error_codes_cors_and_unknown_routes() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(0).start().await;
    let addr = http_addr(&cluster);

    let (status, body) = call(addr, Method::GET, "/collections/no_such", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], json!(4));
    // Code 4 outside /collections/{c} is 400.
    let (status, body) = call(
        addr,
        Method::PUT,
        "/system/task",
        Some(json!({"compact": {"collection_name": "no_such"}})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(4))
    );
    let (status, body) = call(addr, Method::GET, "/collections/1bad", None).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(9)),
        "{body}"
    );
    let (status, body) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": "no_dim"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"message": "Field 'dimension' is missing", "code": 34})
    );
    let (status, body) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": "bad_metric", "dimension": 4, "metric_type": "COS"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(23))
    );

    // Unknown route and method.
    let (status, body) = call(addr, Method::GET, "/no/such/route", None).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(32))
    );
    let (status, _) = call(addr, Method::PATCH, "/collections", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // CORS: OPTIONS anywhere, headers on every reply (errors included).
    let response = http()
        .request(
            Method::OPTIONS,
            format!("http://{addr}/collections/x/vectors"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers().clone();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(
        headers["access-control-allow-methods"],
        "GET, POST, OPTIONS, PUT, DELETE"
    );
    assert_eq!(headers["access-control-max-age"], "1728000");
    assert!(response.text().await.unwrap().is_empty());
    let response = http()
        .get(format!("http://{addr}/collections/no_such"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(response.headers()["content-type"], "application/json");

    // The fixed routes.
    let (status, body) = call(addr, Method::GET, "/", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!("Welcome to milvus")));
    let (_, body) = call(addr, Method::GET, "/state", None).await;
    assert_eq!(body, json!({"message": "Success", "code": 0}));
    let (_, doc) = call(addr, Method::GET, "/openapi.json", None).await;
    assert!(
        doc["paths"]["/collections/{collection_name}"]["get"].is_object(),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_refuses_rest_as_grpc() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(0).start().await;
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let mut config = proxy_config(&cluster.meta_uri, &writer, vec![]);
    config.access.read_only = true;
    let proxy = mishards::proxy::start(config).await.unwrap();
    let addr = proxy.http_api_addr.unwrap();
    let mut grpc = client_of(proxy.addr);
    let refused = grpc
        .create_collection(mishards::wire::CollectionSchema {
            status: None,
            collection_name: "ro".into(),
            dimension: 4,
            index_file_size: 1024,
            metric_type: L2,
            extra_params: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let (status, body) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": "ro", "dimension": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"message": refused.reason, "code": refused.error_code})
    );
    // Reads still work.
    let (status, _) = call(addr, Method::GET, "/collections", None).await;
    assert_eq!(status, StatusCode::OK);
    proxy.stop(std::time::Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = mishards::node::NodeOptions::new(
        mishards::node::Role::Writable,
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
        "sqlite://:@:/".into(),
    );
    options.http_listen = Some("127.0.0.1:0".parse().unwrap());
    options.max_message_size = 4 << 20;
    let node = mishards::node::start(options).await.unwrap();
    let addr = node.http_api_addr.unwrap();
    let (status, _) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": "on_node", "dimension": 16, "metric_type": "IP"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut grpc = client_of(node.addr);
    let schema = grpc
        .describe_collection(CollectionName {
            collection_name: "on_node".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((schema.dimension, schema.metric_type), (16, 2));
    let (_, object) = call(addr, Method::GET, "/collections/on_node", None).await;
    assert_eq!(object["metric_type"], json!("IP"));
    let (status, config) = call(addr, Method::GET, "/config/advanced", None).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert!(config["cpu_cache_capacity"].is_i64(), "{config}");

    // A body declared over max_message_size: 413 with a Milvus-style body,
    // answered before the body is read (raw HTTP: the client sends none, so
    // no write races the early reply).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /collections/on_node/vectors HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        5 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("}") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"code\":5}"), "{reply}");
    node.stop().await.unwrap();
}

/// The grouped start (`[[groups]]`) serves the same API over its grouped
/// service: a collection created over REST is visible through gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_proxy_serves_it_too() {
    let clusters = [
        Cluster::with(&MetaKind::Sqlite).readers(0).start().await,
        Cluster::with(&MetaKind::Sqlite).readers(0).start().await,
    ];
    let mut config = mishards::config::Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.metrics.listen = "127.0.0.1:0".into();
    config.topology.refresh_interval = std::time::Duration::from_millis(100);
    for (i, c) in clusters.iter().enumerate() {
        config.groups.push(mishards::config::GroupConfig {
            name: format!("g{}", i + 1),
            meta_uri: c.meta_uri.clone(),
            writable: c.writer.as_ref().unwrap().addr.to_string(),
            readonly: vec![],
        });
    }
    let proxy = mishards::proxy::start(config).await.unwrap();
    let addr = proxy
        .http_api_addr
        .expect("a free port, as server.listen has port 0");
    let (status, body) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": "grouped", "dimension": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut grpc = client_of(proxy.addr);
    let has = grpc
        .has_collection(CollectionName {
            collection_name: "grouped".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(has.bool_reply);
    let (status, object) = call(addr, Method::GET, "/collections/grouped", None).await;
    assert_eq!(status, StatusCode::OK, "{object}");
    assert_eq!(object["dimension"], json!(4));
    let (status, _) = call(addr, Method::DELETE, "/collections/grouped", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    proxy.stop(std::time::Duration::from_secs(5)).await.unwrap();
}

// ---- What applies to REST because it calls the gRPC stack: shedding,
// deadlines, per-RPC metrics, access control; and a grouped proxy. ----

const DIM: usize = 16;

/// The JSON rows of `queries` (float vectors).
fn json_vectors(queries: &[Vector]) -> Value {
    Value::Array(
        queries
            .iter()
            .map(|q| match q {
                Vector::Float(v) => json!(v),
                Vector::Binary(_) => panic!("float vectors only"),
            })
            .collect(),
    )
}

/// `PUT /collections/{name}/vectors` `{"search":..}` with `params` `{}`.
async fn rest_search(
    addr: SocketAddr,
    name: &str,
    queries: &[Vector],
    topk: usize,
) -> (StatusCode, Value) {
    call(
        addr,
        Method::PUT,
        &format!("/collections/{name}/vectors"),
        Some(json!({"search": {"topk": topk, "vectors": json_vectors(queries), "params": {}}})),
    )
    .await
}

/// A REST search reply as the gRPC reply it stands for (ids and distances
/// parsed from their strings; rows padded to one stride with id -1, as
/// gRPC pads them).
fn as_topk(body: &Value) -> mishards::wire::TopKQueryResult {
    let rows = body["result"].as_array().expect("result rows");
    let stride = rows
        .iter()
        .map(|r| r.as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut reply = mishards::wire::TopKQueryResult {
        status: None,
        row_num: body["num"].as_i64().expect("num"),
        ids: vec![],
        distances: vec![],
    };
    for row in rows {
        let hits = row.as_array().map(Vec::as_slice).unwrap_or(&[]);
        for k in 0..stride {
            match hits.get(k) {
                Some(hit) => {
                    reply.ids.push(hit["id"].as_str().unwrap().parse().unwrap());
                    reply
                        .distances
                        .push(hit["distance"].as_str().unwrap().parse().unwrap());
                }
                None => {
                    reply.ids.push(-1);
                    reply.distances.push(f32::MAX);
                }
            }
        }
    }
    reply
}

/// A cluster with one read-only node and a filled collection; a second
/// proxy over it whose only read-only node is that node behind a relay (no
/// hedging, no ejection, then `tweak`), already searching correctly through
/// the relay. The relay is left passing.
async fn behind_relay(
    name: &str,
    tweak: impl FnOnce(&mut mishards::config::Config),
) -> (
    Cluster,
    Relay,
    mishards::proxy::RunningProxy,
    TestCollection,
    Rows,
) {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(1).start().await;
    let mut collection = cluster.collection(name, DIM, L2).await;
    let rows = collection.fill(&mut VectorSource::new(5), 2, 100).await;
    let relay = Relay::start(cluster.reader_addrs()[0]).await;
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let mut config = proxy_config(&cluster.meta_uri, &writer, vec![relay.addr.to_string()]);
    config.backends.connect_timeout = Duration::from_secs(1);
    config.topology.refresh_interval = Duration::from_millis(100);
    config.slow_nodes.hedge_budget_percent = 0;
    config.slow_nodes.eject_after_failures = 0;
    tweak(&mut config);
    let proxy = mishards::proxy::start(config).await.expect("proxy starts");
    let mut through = collection.through(client_of(proxy.addr));
    let queries = VectorSource::new(6).floats(1, DIM);
    let ready = Instant::now() + Duration::from_secs(20);
    loop {
        let param = search_param(name, &[], &queries, 10, "{}");
        if let Ok(r) = through.client.search(param).await {
            let r = r.into_inner();
            if code_of(&r.status) == 0
                && oracle_mismatch("warm-up", &r, L2, &rows, &queries, 10, Some(10)).is_ok()
            {
                break;
            }
        }
        assert!(
            Instant::now() < ready,
            "the proxy behind the relay never answered correctly"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, relay, proxy, through, rows)
}

/// (a) `max_inflight_searches = 1` and a hung read-only node: while one REST
/// search holds the only slot, a second REST search is refused at once with
/// 429 `{"code":1}` naming the limit, and a gRPC search with
/// RESOURCE_EXHAUSTED and the same message; both are counted as shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_searches_are_shed_as_grpc_ones() {
    let (cluster, relay, proxy, mut grpc, _rows) = behind_relay("rest_shed", |c| {
        c.admission.max_inflight_searches = 1;
        c.deadlines.search = Duration::from_secs(4);
    })
    .await;
    let addr = proxy.http_api_addr.unwrap();
    let queries = VectorSource::new(8).floats(1, DIM);
    let shed_before = metric(&proxy, "mishards_shed_requests_total{reason=\"inflight\"}");
    relay.set(Mode::Freeze);
    let holder = {
        let queries = queries.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = rest_search(addr, "rest_shed", &queries, 10).await;
            (reply, started.elapsed())
        })
    };
    // The holder is in (its DescribeCollection is answered by the writer).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!holder.is_finished(), "the hung search must hold its slot");

    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(2),
        rest_search(addr, "rest_shed", &queries, 10),
    )
    .await
    .expect("a shed REST search is answered at once");
    let rest_took = started.elapsed();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], json!(1), "{body}");
    let message = body["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("admission.max_inflight_searches"),
        "{message}"
    );

    let started = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        grpc.client
            .search(search_param("rest_shed", &[], &queries, 10, "{}")),
    )
    .await
    .expect("a shed gRPC search is answered at once")
    .unwrap_err();
    let grpc_took = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert_eq!(refused.message(), message);
    assert_eq!(
        metric(&proxy, "mishards_shed_requests_total{reason=\"inflight\"}") - shed_before,
        2.0
    );
    assert!(!holder.is_finished(), "the slot was held throughout");
    eprintln!(
        "FIGURES rest shed: REST refused in {rest_took:?} (429), gRPC in {grpc_took:?} \
         (RESOURCE_EXHAUSTED): {message}"
    );
    // The holder ends at its deadline; then the slot is free again.
    let ((status, body), took) = tokio::time::timeout(Duration::from_secs(10), holder)
        .await
        .expect("the hung search ends by its deadline")
        .unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    relay.set(Mode::Pass);
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    drop(relay);
    cluster.stop().await;
}

/// (b) A REST search against a hung read-only node ends at the `[deadlines]`
/// search default with 504 `{"code":1}` naming the node, as its gRPC twin
/// ends with DEADLINE_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_searches_end_at_the_search_deadline() {
    let deadline = Duration::from_secs(2);
    let (cluster, relay, proxy, grpc, _rows) = behind_relay("rest_deadline", |c| {
        c.deadlines.search = deadline;
    })
    .await;
    let addr = proxy.http_api_addr.unwrap();
    let queries = VectorSource::new(9).floats(1, DIM);
    relay.set(Mode::Freeze);
    let rest = {
        let queries = queries.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                rest_search(addr, "rest_deadline", &queries, 10),
            )
            .await
            .expect("the REST search ends by its deadline");
            (reply, started.elapsed())
        })
    };
    let mut client = grpc.client.clone();
    let started = Instant::now();
    let grpc_reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.search(search_param("rest_deadline", &[], &queries, 10, "{}")),
    )
    .await
    .expect("the gRPC search ends by its deadline");
    let grpc_took = started.elapsed();
    let ((status, body), rest_took) = rest.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["code"], json!(1), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&relay.addr.to_string()),
        "names the hung node: {message}"
    );
    let e = grpc_reply.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    // At the deadline: not before it, and well before the test's bound.
    for took in [rest_took, grpc_took] {
        assert!(took >= deadline - Duration::from_millis(100), "{took:?}");
        assert!(took < deadline + Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(
        metric(
            &proxy,
            "mishards_requests_total{method=\"Search\",status=\"DEADLINE_EXCEEDED\"}"
        ),
        2.0
    );
    eprintln!(
        "FIGURES rest deadline ({deadline:?}): REST 504 after {rest_took:?}, gRPC \
         DEADLINE_EXCEEDED after {grpc_took:?}: {message}"
    );
    relay.set(Mode::Pass);
    proxy.stop(Duration::from_secs(2)).await.unwrap();
    drop(relay);
    cluster.stop().await;
}

/// (c) Per-RPC metrics count a REST search under the gRPC method name: one
/// `Search` per REST search (plus the `DescribeCollection` it makes first),
/// as a gRPC search counts one; the REST answers equal the oracle's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_are_counted_under_the_grpc_method() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(1).start().await;
    let mut collection = cluster.collection("rest_metrics", DIM, L2).await;
    let rows = collection.fill(&mut VectorSource::new(3), 2, 100).await;
    let proxy = cluster.proxy.as_ref().unwrap();
    let addr = http_addr(&cluster);
    let searches = "mishards_requests_total{method=\"Search\",status=\"SUCCESS\"}";
    let describes = "mishards_requests_total{method=\"DescribeCollection\",status=\"SUCCESS\"}";
    let mut source = VectorSource::new(4);
    // Until the read-only node has the files (an answer equal to the oracle's).
    let queries = source.floats(2, DIM);
    wait_until(
        "the read-only node serves the files",
        Duration::from_secs(20),
        || {
            let queries = queries.clone();
            let rows = &rows;
            async move {
                let (status, body) = rest_search(addr, "rest_metrics", &queries, 10).await;
                status == StatusCode::OK
                    && oracle_mismatch("rest", &as_topk(&body), L2, rows, &queries, 10, Some(10))
                        .is_ok()
            }
        },
    )
    .await;
    for i in 0..5 {
        let (s0, d0) = (metric(proxy, searches), metric(proxy, describes));
        let queries = source.floats(2, DIM);
        let (status, body) = rest_search(addr, "rest_metrics", &queries, 10).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check_against_oracle(
            &format!("REST search {i}"),
            &as_topk(&body),
            L2,
            &rows,
            &queries,
            10,
            Some(10),
        );
        assert_eq!(metric(proxy, searches) - s0, 1.0, "REST search {i}");
        assert_eq!(metric(proxy, describes) - d0, 1.0, "REST search {i}");
        // The same search over gRPC counts the same Search, and answers the same.
        let s1 = metric(proxy, searches);
        let reply = collection.search(&[], &queries, 10).await;
        assert_eq!(metric(proxy, searches) - s1, 1.0, "gRPC search {i}");
        assert_eq!(as_topk(&body).ids, reply.ids);
    }
    // A refused REST search is counted with its gRPC status.
    let failed = "mishards_requests_total{method=\"Search\",status=\"ILLEGAL_TOPK\"}";
    let before = metric(proxy, failed);
    let (status, body) = rest_search(addr, "rest_metrics", &source.floats(1, DIM), 0).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(metric(proxy, failed) - before, 1.0, "{body}");
    cluster.stop().await;
}

/// (d) `access.allow_networks` without 127.0.0.1: REST calls from
/// 127.0.0.1 are 403 `{"code":3}` with the message gRPC's PERMISSION_DENIED
/// carries. The routes that call no gRPC method (`/`, `/state`,
/// `/openapi.json`) still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_networks_refuses_rest_as_grpc() {
    let cluster = Cluster::with(&MetaKind::Sqlite).readers(0).start().await;
    let mut open = cluster.client.clone();
    create_collection(&mut open, "fenced", DIM as i64, L2).await;
    let writer = cluster.writer.as_ref().unwrap().addr.to_string();
    let mut config = proxy_config(&cluster.meta_uri, &writer, vec![]);
    config.access.allow_networks = vec!["10.0.0.0/8".into()];
    let proxy = mishards::proxy::start(config).await.unwrap();
    let addr = proxy.http_api_addr.unwrap();
    let mut grpc = client_of(proxy.addr);
    let denied = grpc
        .has_collection(CollectionName {
            collection_name: "fenced".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    let queries = VectorSource::new(1).floats(1, DIM);
    let search = json!({"search": {"topk": 1, "vectors": json_vectors(&queries), "params": {}}});
    for (method, path, body) in [
        (Method::GET, "/collections", None),
        (Method::GET, "/collections/fenced", None),
        (
            Method::POST,
            "/collections",
            Some(json!({"collection_name": "x", "dimension": 4})),
        ),
        (Method::PUT, "/collections/fenced/vectors", Some(search)),
        (
            Method::POST,
            "/collections/fenced/vectors",
            Some(json!({"vectors": json_vectors(&queries)})),
        ),
        (Method::GET, "/system/version", None),
        (Method::DELETE, "/collections/fenced", None),
    ] {
        let what = format!("{method} {path}");
        let (status, body) = call(addr, method, path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(
            body,
            json!({"message": denied.message(), "code": 3}),
            "{what}"
        );
    }
    for path in ["/", "/state", "/openapi.json"] {
        assert_eq!(call(addr, Method::GET, path, None).await.0, StatusCode::OK);
    }
    // Nothing got through: the collection is still there.
    let has = open
        .has_collection(CollectionName {
            collection_name: "fenced".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(has.bool_reply);
    proxy.stop(Duration::from_secs(5)).await.unwrap();
    cluster.stop().await;
}

/// (e) Over a 2-group proxy (each group a writer and a read-only node), a
/// REST insert + flush + search equals the oracle and the same search over
/// gRPC; the rows are spread over both groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_insert_flush_search_over_two_groups() {
    let clusters = [
        Cluster::with(&MetaKind::Sqlite).readers(1).start().await,
        Cluster::with(&MetaKind::Sqlite).readers(1).start().await,
    ];
    let mut config = mishards::config::Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.metrics.listen = "127.0.0.1:0".into();
    config.backends.connect_timeout = Duration::from_secs(1);
    config.backends.request_timeout = Duration::from_secs(60);
    config.backends.search_timeout = Duration::from_secs(20);
    config.topology.refresh_interval = Duration::from_millis(100);
    for (i, c) in clusters.iter().enumerate() {
        config.groups.push(mishards::config::GroupConfig {
            name: format!("g{}", i + 1),
            meta_uri: c.meta_uri.clone(),
            writable: c.writer.as_ref().unwrap().addr.to_string(),
            readonly: c.reader_addrs().iter().map(|a| a.to_string()).collect(),
        });
    }
    let errors = config.validate();
    assert!(errors.is_empty(), "{errors:?}");
    let proxy = mishards::proxy::start(config).await.unwrap();
    let addr = proxy.http_api_addr.unwrap();
    let mut grpc = client_of(proxy.addr);
    let name = "rest_groups";
    let (status, body) = call(
        addr,
        Method::POST,
        "/collections",
        Some(json!({"collection_name": name, "dimension": DIM})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut source = VectorSource::new(21);
    let mut rows = Rows::default();
    for batch in 0..3 {
        let vectors = source.floats(200, DIM);
        let (status, body) = call(
            addr,
            Method::POST,
            &format!("/collections/{name}/vectors"),
            Some(json!({"vectors": json_vectors(&vectors)})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "batch {batch}: {body}");
        let ids: Vec<i64> = body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids.len(), vectors.len());
        rows.add(&ids, &vectors);
        let (status, body) = call(
            addr,
            Method::PUT,
            "/system/task",
            Some(json!({"flush": {"collection_names": [name]}})),
        )
        .await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"code": 0, "message": "OK"}))
        );
    }
    let (_, object) = call(addr, Method::GET, &format!("/collections/{name}"), None).await;
    assert_eq!(object["count"], json!(600), "{object}");
    // Both groups hold a share.
    for (i, c) in clusters.iter().enumerate() {
        let mut direct = c.writer_client();
        let count = direct
            .count_collection(CollectionName {
                collection_name: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .collection_row_count;
        assert!(count > 0 && count < 600, "group {} holds {count}", i + 1);
    }

    let queries = source.floats(4, DIM);
    // Until every group's read-only node serves its files.
    wait_until(
        "both groups serve the files",
        Duration::from_secs(20),
        || {
            let queries = queries.clone();
            let rows = &rows;
            async move {
                let (status, body) = rest_search(addr, name, &queries, 10).await;
                status == StatusCode::OK
                    && oracle_mismatch("rest", &as_topk(&body), L2, rows, &queries, 10, Some(10))
                        .is_ok()
            }
        },
    )
    .await;
    for topk in [1usize, 10, 50] {
        let queries = source.floats(3, DIM);
        let (status, body) = rest_search(addr, name, &queries, topk).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rest = as_topk(&body);
        check_against_oracle(
            &format!("REST topk {topk}"),
            &rest,
            L2,
            &rows,
            &queries,
            topk,
            Some(topk),
        );
        let reply = search(&mut grpc, name, &[], &queries, topk as i64).await;
        check_against_oracle(
            &format!("gRPC topk {topk}"),
            &reply,
            L2,
            &rows,
            &queries,
            topk,
            Some(topk),
        );
        assert_eq!(rest.ids, reply.ids, "topk {topk}");
        let grpc_distances: Vec<String> = reply
            .distances
            .iter()
            .map(|d| format!("{:.6}", f64::from(*d)))
            .collect();
        let rest_distances: Vec<String> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter())
            .map(|h| h["distance"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(rest_distances, grpc_distances, "topk {topk}");
    }
    proxy.stop(Duration::from_secs(5)).await.unwrap();
    for c in clusters {
        c.stop().await;
    }
}

/// `/openapi.json` is true: every (method, path) it documents is served
/// (not the 404 code 32 "no mapping" of an unknown route), and every other
/// method on a documented path is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_what_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = mishards::node::NodeOptions::new(
        mishards::node::Role::Writable,
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
        "sqlite://:@:/".into(),
    );
    options.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let node = mishards::node::start(options).await.unwrap();
    let addr = node.http_api_addr.unwrap();
    let (status, doc) = call(addr, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths").clone();
    assert!(paths.len() >= 15, "{} paths", paths.len());
    let unmapped = |status: StatusCode, body: &Value| {
        status == StatusCode::NOT_FOUND && body["code"] == json!(32)
    };
    let mut checked = 0;
    for (path, operations) in &paths {
        // Path parameters become names no collection has: routes still match.
        let concrete: String = path
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    "none_such"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "delete"] {
            let documented = operations.get(method).is_some();
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == "post" || method == "put").then(|| json!({}));
            let (status, reply) = call(addr, m, &concrete, body).await;
            assert_eq!(
                !unmapped(status, &reply),
                documented,
                "{method} {path}: documented {documented}, answered {status} {reply}"
            );
            checked += 1;
        }
    }
    println!("{checked} (method, path) pairs checked against /openapi.json");
    node.stop().await.unwrap();
}
