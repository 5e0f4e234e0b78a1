//! The OpenAPI 3 document of the HTTP API, served at `GET /openapi.json`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

/// `GET /openapi.json`.
pub(super) async fn serve() -> Response {
    super::errors::reply(StatusCode::OK, document())
}

/// The document: one operation per (method, path) of every route module.
pub(super) fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path) in super::all_routes() {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        if let Some(ops) = entry.as_object_mut() {
            ops.insert(method.to_ascii_lowercase(), operation(method, path));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Milvus 1.1 HTTP API (mishards)",
            "version": "1.1",
            "description": "Milvus 1.1's REST API; each route calls its gRPC twin."
        },
        "paths": Value::Object(paths),
        "components": {
            "schemas": {
                "Status": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "code": {"type": "integer"}
                    }
                }
            }
        }
    })
}

/// One operation: its summary, path and query parameters, request body and
/// the error reply.
fn operation(method: &str, path: &str) -> Value {
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_schema(name)}))
        .collect();
    parameters.extend(query_parameters(method, path));
    let mut op = json!({
        "summary": summary(method, path),
        "responses": {
            "default": {
                "description": "a Milvus error: {\"message\", \"code\"}",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
            }
        }
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(schema) = request_body(method, path) {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}}
        });
    }
    op
}

/// A path parameter's schema (`{info}` of the segment routes: `ids` or `vectors`).
fn path_schema(name: &str) -> Value {
    match name {
        "collection_name" => collection_name(),
        "info" => json!({"type": "string", "example": "ids"}),
        _ => json!({"type": "string"}),
    }
}

/// Milvus' collection-name rule (`validate::names::collection_name`, code 9).
fn collection_name() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 255})
}

/// A partition tag: not blank, at most 255 bytes once trimmed (`validate::names`).
fn partition_tag() -> Value {
    json!({"type": "string", "pattern": "[^ \t\r\n]", "maxLength": 255})
}

fn collection_names() -> Value {
    json!({"type": "array", "items": collection_name()})
}

fn partition_tags() -> Value {
    json!({"type": "array", "items": partition_tag()})
}

fn query(name: &str, required: bool, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": schema})
}

/// `offset` / `page_size` / `all_required` of the listing routes (reference §4.3, §4.5, §4.6).
fn paging() -> Vec<Value> {
    vec![
        query("offset", false, json!({"type": "integer", "minimum": 0})),
        query("page_size", false, json!({"type": "integer", "minimum": 0})),
        query("all_required", false, json!({"type": "boolean"})),
    ]
}

/// The query parameters of an operation.
fn query_parameters(method: &str, path: &str) -> Vec<Value> {
    let string = json!({"type": "string"});
    match (method, path) {
        ("GET", "/collections") | ("GET", "/collections/{collection_name}/partitions") => paging(),
        ("GET", "/collections/{collection_name}") => {
            vec![query(
                "info",
                false,
                json!({"type": "string", "enum": ["stat"]}),
            )]
        }
        ("GET", "/collections/{collection_name}/segments") => {
            let mut params = paging();
            params.push(query("partition_tag", false, string));
            params
        }
        ("GET", p) if p.starts_with("/collections/{collection_name}/segments/") => vec![
            query("offset", false, json!({"type": "integer", "minimum": 0})),
            query("page_size", false, json!({"type": "integer", "minimum": 0})),
        ],
        ("GET", "/collections/{collection_name}/vectors") => vec![
            // Comma-separated ids, sent without percent-encoding ("1,2,3").
            query(
                "ids",
                true,
                json!({"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}),
            ),
            query("partition_tag", false, string),
        ],
        _ => Vec::new(),
    }
}

/// An id: int64 as a JSON string (reference §2.2).
fn id_schema() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{1,18}$"})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

/// Float vectors; binary collections take arrays of byte values the same way.
fn vectors_schema() -> Value {
    json!({"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "number"}}})
}

/// The JSON body of an operation, if it takes one (reference §4).
fn request_body(method: &str, path: &str) -> Option<Value> {
    let body = match (method, path) {
        ("POST", "/collections") => json!({
            "type": "object",
            "required": ["collection_name", "dimension"],
            "properties": {
                "collection_name": collection_name(),
                "dimension": {"type": "integer", "minimum": 1, "maximum": 32768},
                "index_file_size": {"type": "integer", "minimum": 1},
                "metric_type": {"type": "string", "enum": ["L2", "IP", "HAMMING", "JACCARD", "TANIMOTO", "SUBSTRUCTURE", "SUPERSTRUCTURE"]}
            },
            "additionalProperties": false
        }),
        ("POST", "/collections/{collection_name}/indexes") => json!({
            "type": "object",
            "required": ["index_type", "params"],
            "properties": {
                "index_type": {"type": "string", "enum": ["FLAT", "IVFFLAT", "IVFSQ8", "RNSG", "IVFSQ8H", "IVFPQ", "HNSW", "ANNOY"]},
                "params": {"type": "object"}
            }
        }),
        ("POST", "/collections/{collection_name}/partitions")
        | ("DELETE", "/collections/{collection_name}/partitions") => json!({
            "type": "object",
            "required": ["partition_tag"],
            "properties": {"partition_tag": partition_tag()},
            "additionalProperties": false
        }),
        ("POST", "/collections/{collection_name}/vectors") => json!({
            "type": "object",
            "required": ["vectors"],
            "properties": {
                "vectors": vectors_schema(),
                "ids": {"type": "array", "items": id_schema()},
                "partition_tag": partition_tag()
            }
        }),
        ("PUT", "/collections/{collection_name}/vectors") => json!({
            "oneOf": [
                {
                    "type": "object",
                    "required": ["search"],
                    "properties": {"search": {
                        "type": "object",
                        "required": ["topk", "params"],
                        "properties": {
                            "topk": {"type": "integer", "minimum": 1, "maximum": 16384},
                            "params": {"type": "object"},
                            "vectors": vectors_schema(),
                            "partition_tags": partition_tags(),
                            "file_ids": strings(),
                            "ids": {"type": "array", "items": id_schema()}
                        }
                    }},
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "required": ["delete"],
                    "properties": {"delete": {
                        "type": "object",
                        "required": ["ids"],
                        "properties": {
                            "ids": {"type": "array", "minItems": 1, "items": id_schema()},
                            "partition_tag": partition_tag()
                        }
                    }},
                    "additionalProperties": false
                }
            ]
        }),
        ("PUT", "/system/task") => {
            let name_and_tags = json!({
                "type": "object",
                "required": ["collection_name"],
                "properties": {"collection_name": collection_name(), "partition_tags": partition_tags()}
            });
            let one = |key: &str, schema: Value| json!({"type": "object", "required": [key], "properties": {key: schema}, "additionalProperties": false});
            json!({"oneOf": [
                one("load", name_and_tags.clone()),
                one("flush", json!({
                    "type": "object",
                    "required": ["collection_names"],
                    "properties": {"collection_names": collection_names()}
                })),
                one("compact", json!({
                    "type": "object",
                    "required": ["collection_name"],
                    "properties": {"collection_name": collection_name()}
                })),
                one("release", name_and_tags),
            ]})
        }
        ("PUT", "/system/config") => json!({
            "type": "object",
            "description": "{\"<section>\": {\"<key>\": <scalar>}}: one set_config per leaf",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
            }
        }),
        ("PUT", "/config/advanced") => json!({
            "type": "object",
            "properties": {
                "cpu_cache_capacity": {"type": "integer", "minimum": 0},
                "cache_insert_data": {"type": "boolean"},
                "use_blas_threshold": {"type": "integer", "minimum": 0},
                "gpu_search_threshold": {"type": "integer", "minimum": 0}
            },
            "additionalProperties": false
        }),
        _ => return None,
    };
    Some(body)
}

fn summary(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_lists_every_route() {
        let doc = document();
        let mut listed = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                listed.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let routes: BTreeSet<(String, String)> = super::super::all_routes()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(listed, routes);
        for (m, p) in [("GET", "/"), ("GET", "/state"), ("GET", "/openapi.json")] {
            assert!(routes.contains(&(m.to_string(), p.to_string())));
        }
        // Every POST and PUT documents its JSON body.
        for (method, path) in super::super::all_routes() {
            let op = &doc["paths"][path][method.to_ascii_lowercase()];
            if method == "POST" || method == "PUT" {
                assert!(
                    op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                    "{method} {path} has no request body schema"
                );
            }
        }
    }
}
