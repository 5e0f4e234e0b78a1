//! Milvus 1.1's HTTP API (`src/http_api/`) over loopback with a real HTTP
//! client: the same operation through REST and through gRPC gives the same
//! answer, Milvus' error codes, CORS, access control and unknown routes; on
//! the proxy and on the bundled node.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

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
