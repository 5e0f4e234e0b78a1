//! Milvus RPCs as the scenarios make them: each one unwraps the gRPC layer and
//! asserts the Milvus status it must have, so a scenario reads as its steps.

use std::collections::{BTreeMap, HashSet};

use mishards::wire::milvus_service_client::MilvusServiceClient;
use mishards::wire::*;
use tonic::transport::Channel;

use super::oracle::Vector;

pub type Client = MilvusServiceClient<Channel>;

/// The reply of a call that must not fail at the gRPC level.
pub fn grpc_ok<T>(what: &str, result: Result<tonic::Response<T>, tonic::Status>) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(s) => panic!(
            "{what}: gRPC error {:?} ({}) instead of a Milvus status",
            s.code(),
            s.message()
        ),
    }
}

pub fn code_of(status: &Option<Status>) -> i32 {
    status.as_ref().map_or(0, |s| s.error_code)
}

pub fn assert_ok(what: &str, status: &Option<Status>) {
    if let Some(s) = status.as_ref().filter(|s| s.error_code != 0) {
        panic!("{what}: code {} ({})", s.error_code, s.reason);
    }
}

pub fn assert_status_ok(what: &str, status: &Status) {
    assert_eq!(status.error_code, 0, "{what}: {}", status.reason);
}

pub async fn create_collection(c: &mut Client, name: &str, dim: i64, metric: i32) {
    let status = grpc_ok(
        "CreateCollection",
        c.create_collection(CollectionSchema {
            status: None,
            collection_name: name.to_string(),
            dimension: dim,
            index_file_size: 1024,
            metric_type: metric,
            extra_params: vec![],
        })
        .await,
    );
    assert_status_ok(&format!("CreateCollection {name}"), &status);
}

pub async fn create_partition(c: &mut Client, name: &str, tag: &str) {
    let status = grpc_ok(
        "CreatePartition",
        c.create_partition(PartitionParam {
            collection_name: name.to_string(),
            tag: tag.to_string(),
        })
        .await,
    );
    assert_status_ok(&format!("CreatePartition {name}/{tag}"), &status);
}

/// Inserts the rows (auto ids) and returns their ids.
pub async fn insert(c: &mut Client, name: &str, tag: &str, rows: &[Vector]) -> Vec<i64> {
    let reply = grpc_ok(
        "Insert",
        c.insert(InsertParam {
            collection_name: name.to_string(),
            row_record_array: rows.iter().map(Vector::record).collect(),
            row_id_array: vec![],
            partition_tag: tag.to_string(),
            extra_params: vec![],
        })
        .await,
    );
    assert_ok(&format!("Insert into {name}"), &reply.status);
    assert_eq!(reply.vector_id_array.len(), rows.len(), "one id per row");
    reply.vector_id_array
}

/// CountCollection, which must succeed.
pub async fn count(c: &mut Client, name: &str) -> i64 {
    let reply = grpc_ok(
        "CountCollection",
        c.count_collection(CollectionName {
            collection_name: name.to_string(),
        })
        .await,
    );
    assert_ok("CountCollection", &reply.status);
    reply.collection_row_count
}

pub async fn flush(c: &mut Client, name: &str) {
    let status = grpc_ok(
        "Flush",
        c.flush(FlushParam {
            collection_name_array: vec![name.to_string()],
        })
        .await,
    );
    assert_status_ok(&format!("Flush {name}"), &status);
}

pub fn search_param(
    name: &str,
    tags: &[&str],
    queries: &[Vector],
    topk: i64,
    params: &str,
) -> SearchParam {
    SearchParam {
        collection_name: name.to_string(),
        partition_tag_array: tags.iter().map(|t| t.to_string()).collect(),
        query_record_array: queries.iter().map(Vector::record).collect(),
        topk,
        extra_params: vec![KeyValuePair {
            key: "params".to_string(),
            value: params.to_string(),
        }],
    }
}

/// A search that must succeed.
pub async fn search(
    c: &mut Client,
    name: &str,
    tags: &[&str],
    queries: &[Vector],
    topk: i64,
) -> TopKQueryResult {
    let reply = grpc_ok(
        "Search",
        c.search(search_param(name, tags, queries, topk, "{}"))
            .await,
    );
    assert_ok(
        &format!("Search {name} tags {tags:?} topk {topk}"),
        &reply.status,
    );
    reply
}

pub async fn cmd(c: &mut Client, text: &str) -> String {
    let reply = grpc_ok(
        "Cmd",
        c.cmd(Command {
            cmd: text.to_string(),
        })
        .await,
    );
    assert_ok(&format!("Cmd({text})"), &reply.status);
    reply.string_reply
}

/// Deletes `ids` and flushes, so the deletes reach the searchable files.
pub async fn delete_ids(client: &mut Client, name: &str, ids: &HashSet<i64>) {
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

/// The Milvus status code of a search reply that must not be a gRPC error;
/// an error carries no rows.
pub fn search_code(
    what: &str,
    result: Result<tonic::Response<TopKQueryResult>, tonic::Status>,
) -> i32 {
    let reply = grpc_ok(what, result);
    let code = code_of(&reply.status);
    if code != 0 {
        assert_eq!(reply.row_num, 0, "{what}: an error carries no rows");
    }
    code
}

/// Where the proxy's `Cmd("route <name>")` places a collection's files.
pub struct Route {
    /// Node address -> the file ids it searches.
    pub nodes: BTreeMap<String, Vec<i64>>,
    /// How many searchable files the collection has.
    pub files: usize,
}

/// `Cmd("route <name>")` through the proxy, parsed.
pub async fn route(client: &mut Client, name: &str) -> Route {
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
    Route { nodes, files }
}
