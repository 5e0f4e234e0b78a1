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

/// One operation: its summary, path parameters and the error reply.
fn operation(method: &str, path: &str) -> Value {
    let parameters: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
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
    op
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
    }
}
