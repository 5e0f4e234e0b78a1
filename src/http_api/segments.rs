//! The segment routes of the Milvus 1.1 HTTP API (reference §4.6):
//!
//! * `GET /collections/{c}/segments?offset=&page_size=&all_required=&partition_tag=`:
//!   ShowCollectionInfo, flattened to one row per segment with its
//!   partition's tag;
//! * `GET /collections/{c}/segments/{s}/ids?offset=&page_size=`: GetVectorIDs,
//!   paged here;
//! * `GET /collections/{c}/segments/{s}/vectors?offset=&page_size=`: the page
//!   of GetVectorIDs read with GetVectorsByID;
//! * any other `GET /collections/{c}/segments/{s}/{info}`: 200, body `null`.
//!
//! **Segment names over shard groups** carry their group, `g1/1700000000000000`
//! (a slash). The client percent-encodes it in the path
//! (`/segments/g1%2F1700000000000000/ids`), which the router keeps in one
//! path segment and decodes; the unencoded form (`/segments/g1/17.../ids`)
//! is accepted too, through a route with one more path segment whose first
//! two are joined by `/`.
//!
//! Paging (`offset`, `page_size`: digits only, empty = absent, defaults 0 and
//! 10, else 37 naming the parameter — Milvus always names 'offset');
//! `all_required` as partitions' rule (§4.5: only `True`/`true` enable it,
//! `1`/`yes`/`on`/`TRUE`/`false`/... are valid and mean false, anything else
//! → 37) and only on the segment list, where it disables paging.
//! A segment GetVectorIDs does not know (the gRPC code 1 of Milvus'
//! DB_NOT_FOUND) is 404 code 4, as over HTTP in 1.1.

use std::ops::Range;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tonic::Request;

use super::errors::code::{ILLEGAL_QUERY_PARAM, UNEXPECTED_ERROR};
use super::errors::{reply, ApiError, ApiResult};
use super::vectors::{
    id_strings, query_pairs, query_value, status_error, status_ok, vectors_entries, web_status,
    WebError, WebResult, SERVER_INVALID_ARGUMENT,
};
use super::ApiState;
use crate::validate::MAX_GET_BY_ID;
use crate::wire::{CollectionName, GetVectorIDsParam, VectorsData, VectorsIdentity};

/// Routes of this file, as (method, OpenAPI path).
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/collections/{collection_name}/segments"),
    (
        "GET",
        "/collections/{collection_name}/segments/{segment_name}/{info}",
    ),
    (
        "GET",
        "/collections/{collection_name}/segments/{group}/{segment_name}/{info}",
    ),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/collections/{collection_name}/segments",
            get(show_segments),
        )
        .route(
            "/collections/{collection_name}/segments/{segment_name}/{info}",
            get(segment_info),
        )
        .route(
            "/collections/{collection_name}/segments/{group}/{segment_name}/{info}",
            get(grouped_segment_info),
        )
}

/// Default `page_size` of the paged routes.
const DEFAULT_PAGE_SIZE: i64 = 10;

// ---- pure functions: query ----

/// An `offset`/`page_size` value: absent or empty → `default`; digits only
/// (no sign), within i64, else 37.
pub(super) fn page_param(value: Option<&str>, name: &str, default: i64) -> WebResult<i64> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => {
            if v.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(n) = v.parse::<i64>() {
                    return Ok(n);
                }
            }
            Err(WebError::new(
                ILLEGAL_QUERY_PARAM,
                format!(
                    "Query param '{name}' is illegal, only non-negative integer supported: got {v:?}"
                ),
            ))
        }
    }
}

/// `all_required` (§4.5): absent or empty → false; one of Milvus' bool
/// spellings (`true`, `false`, `on`, `off`, `yes`, `no`, `1`, `0`, any
/// case) is valid, but only exact `True`/`true` mean true; else 37.
pub(super) fn bool_param(value: Option<&str>, name: &str) -> WebResult<bool> {
    match value {
        None | Some("") => Ok(false),
        Some(v) => {
            let lower = v.to_ascii_lowercase();
            if ["true", "false", "on", "off", "yes", "no", "1", "0"].contains(&lower.as_str()) {
                Ok(v == "true" || v == "True")
            } else {
                Err(WebError::new(
                    ILLEGAL_QUERY_PARAM,
                    format!("Query param '{name}' must be a bool: got {v:?}"),
                ))
            }
        }
    }
}

/// The segment list's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SegmentsQuery {
    pub offset: i64,
    pub page_size: i64,
    pub all_required: bool,
    /// `None` (absent or empty): every partition.
    pub partition_tag: Option<String>,
}

pub(super) fn segments_query(raw: Option<&str>) -> WebResult<SegmentsQuery> {
    let pairs = query_pairs(raw);
    let offset = page_param(query_value(&pairs, "offset"), "offset", 0)?;
    let page_size = page_param(
        query_value(&pairs, "page_size"),
        "page_size",
        DEFAULT_PAGE_SIZE,
    )?;
    let all_required = bool_param(query_value(&pairs, "all_required"), "all_required")?;
    let partition_tag = query_value(&pairs, "partition_tag")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(SegmentsQuery {
        offset,
        page_size,
        all_required,
        partition_tag,
    })
}

/// `offset` and `page_size` of the per-segment routes.
pub(super) fn page_query(raw: Option<&str>) -> WebResult<(i64, i64)> {
    let pairs = query_pairs(raw);
    Ok((
        page_param(query_value(&pairs, "offset"), "offset", 0)?,
        page_param(
            query_value(&pairs, "page_size"),
            "page_size",
            DEFAULT_PAGE_SIZE,
        )?,
    ))
}

/// The page `[offset, offset + page_size)` of `n` items (clamped), or all.
pub(super) fn page_range(n: usize, offset: i64, page_size: i64, all: bool) -> Range<usize> {
    if all {
        return 0..n;
    }
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(n);
    let end = start
        .saturating_add(usize::try_from(page_size).unwrap_or(usize::MAX))
        .min(n);
    start..end
}

// ---- pure functions: replies ----

/// ShowCollectionInfo's `json_info` flattened: one
/// `{"data_size","index_name","name","partition_tag","row_count"}` per
/// segment of each partition (`segments: null` = none), in the order of the
/// info (`_default` first), filtered by `tag`. An empty info is no segment;
/// text that is not JSON is code 1.
pub(super) fn flatten_segments(json_info: &str, tag: Option<&str>) -> WebResult<Vec<Value>> {
    if json_info.trim().is_empty() {
        return Ok(Vec::new());
    }
    let info: Value = serde_json::from_str(json_info).map_err(|e| {
        WebError::new(
            UNEXPECTED_ERROR,
            format!("ShowCollectionInfo returned invalid JSON: {e}"),
        )
    })?;
    let mut out = Vec::new();
    let partitions = info
        .get("partitions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for p in partitions {
        let p_tag = p.get("tag").and_then(Value::as_str).unwrap_or_default();
        if tag.is_some_and(|t| t != p_tag) {
            continue;
        }
        let segments = p
            .get("segments")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for s in segments {
            let field = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
            out.push(json!({
                "data_size": field("data_size"),
                "index_name": field("index_name"),
                "name": field("name"),
                "partition_tag": p_tag,
                "row_count": field("row_count"),
            }));
        }
    }
    Ok(out)
}

/// `{"code":0,"count":<after filter>,"message":"OK","segments":[page]}`.
pub(super) fn segments_reply(segments: Vec<Value>, q: &SegmentsQuery) -> Value {
    let count = segments.len();
    let range = page_range(count, q.offset, q.page_size, q.all_required);
    let page: Vec<Value> = segments
        .into_iter()
        .skip(range.start)
        .take(range.len())
        .collect();
    json!({"code": 0, "count": count, "message": "OK", "segments": page})
}

/// `{"count":<live ids in the segment>,"ids":["..",..]}` (the page).
pub(super) fn ids_reply(ids: &[i64], offset: i64, page_size: i64) -> Value {
    let range = page_range(ids.len(), offset, page_size, false);
    json!({"count": ids.len(), "ids": id_strings(&ids[range])})
}

/// The checks 1.1's GetVectorsByID makes on a segment page, with the raw
/// server code the `vectors` reply embeds (30004): an empty page, or more
/// than 1000 ids.
pub(super) fn page_ids_check(page: &[i64]) -> Result<(), (i64, String)> {
    if page.is_empty() {
        return Err((
            SERVER_INVALID_ARGUMENT,
            "No vector id specified".to_string(),
        ));
    }
    if page.len() > MAX_GET_BY_ID {
        return Err((
            SERVER_INVALID_ARGUMENT,
            format!("Input id array size cannot exceed: {MAX_GET_BY_ID}"),
        ));
    }
    Ok(())
}

/// `{"code","count","message","vectors":[{"id","vector"}]}`: HTTP 200 even
/// when the inner GetVectorsByID failed (`outcome`'s code and message are
/// then embedded and `vectors` is `[]`). Floats are widened to double.
pub(super) fn segment_vectors_reply(
    count: usize,
    page: &[i64],
    outcome: Result<&VectorsData, (i64, String)>,
) -> Value {
    match outcome {
        Ok(data) => json!({
            "code": 0,
            "count": count,
            "message": "OK",
            "vectors": vectors_entries(page, &data.vectors_data, true),
        }),
        Err((code, message)) => json!({
            "code": code,
            "count": count,
            "message": message,
            "vectors": [],
        }),
    }
}

/// What a segment `{info}` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SegmentInfo {
    Ids,
    Vectors,
    Other,
}

pub(super) fn segment_info_kind(info: &str) -> SegmentInfo {
    match info {
        "ids" => SegmentInfo::Ids,
        "vectors" => SegmentInfo::Vectors,
        _ => SegmentInfo::Other,
    }
}

// ---- handlers ----

async fn show_segments(
    State(state): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q = segments_query(query.as_deref())?;
    let info = state
        .client()
        .show_collection_info(Request::new(CollectionName {
            collection_name: collection,
        }))
        .await?
        .into_inner();
    status_ok(info.status.as_ref()).map_err(|s| status_error(&s))?;
    let segments = flatten_segments(&info.json_info, q.partition_tag.as_deref())?;
    Ok(reply(StatusCode::OK, segments_reply(segments, &q)))
}

async fn segment_info(
    State(state): State<Arc<ApiState>>,
    Path((collection, segment, info)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    segment_route(&state, collection, segment, &info, query.as_deref()).await
}

/// `/segments/{group}/{segment}/{info}`: the unencoded form of a grouped
/// segment name `group/segment`.
async fn grouped_segment_info(
    State(state): State<Arc<ApiState>>,
    Path((collection, group, segment, info)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let name = format!("{group}/{segment}");
    segment_route(&state, collection, name, &info, query.as_deref()).await
}

/// The live ids of a segment (GetVectorIDs; DB_NOT_FOUND → 404 code 4).
async fn segment_ids(
    state: &ApiState,
    collection: &str,
    segment: String,
) -> Result<Vec<i64>, ApiError> {
    let ids = state
        .client()
        .get_vector_i_ds(Request::new(GetVectorIDsParam {
            collection_name: collection.to_string(),
            segment_name: segment,
        }))
        .await?
        .into_inner();
    status_ok(ids.status.as_ref()).map_err(|s| status_error(&web_status(s)))?;
    Ok(ids.vector_id_array)
}

async fn segment_route(
    state: &ApiState,
    collection: String,
    segment: String,
    info: &str,
    query: Option<&str>,
) -> ApiResult {
    let (offset, page_size) = page_query(query)?;
    match segment_info_kind(info) {
        SegmentInfo::Other => Ok(reply(StatusCode::OK, Value::Null)),
        SegmentInfo::Ids => {
            let ids = segment_ids(state, &collection, segment).await?;
            Ok(reply(StatusCode::OK, ids_reply(&ids, offset, page_size)))
        }
        SegmentInfo::Vectors => {
            let ids = segment_ids(state, &collection, segment).await?;
            let page = &ids[page_range(ids.len(), offset, page_size, false)];
            let body = match page_ids_check(page) {
                Err(e) => segment_vectors_reply(ids.len(), page, Err(e)),
                Ok(()) => {
                    let data = state
                        .client()
                        .get_vectors_by_id(Request::new(VectorsIdentity {
                            collection_name: collection,
                            partition_tag: String::new(),
                            id_array: page.to_vec(),
                        }))
                        .await?
                        .into_inner();
                    let outcome = status_ok(data.status.as_ref())
                        .map(|()| &data)
                        .map_err(|s| (i64::from(s.error_code), s.reason));
                    segment_vectors_reply(ids.len(), page, outcome)
                }
            };
            Ok(reply(StatusCode::OK, body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RowRecord;

    #[test]
    fn page_params() {
        assert_eq!(page_param(None, "offset", 0), Ok(0));
        assert_eq!(page_param(Some(""), "offset", 10), Ok(10));
        assert_eq!(page_param(Some("25"), "offset", 0), Ok(25));
        for bad in ["-1", "+1", "1.5", "a", " 1", "99999999999999999999"] {
            let e = page_param(Some(bad), "page_size", 0).unwrap_err();
            assert_eq!(e.code, 37, "{bad}");
            assert!(e.message.contains("'page_size'"));
        }
    }

    #[test]
    fn bool_params() {
        assert_eq!(bool_param(None, "all_required"), Ok(false));
        assert_eq!(bool_param(Some(""), "all_required"), Ok(false));
        assert_eq!(bool_param(Some("true"), "all_required"), Ok(true));
        assert_eq!(bool_param(Some("True"), "all_required"), Ok(true));
        for valid_false in ["TRUE", "1", "yes", "on", "false", "False", "0", "no", "OFF"] {
            assert_eq!(bool_param(Some(valid_false), "all_required"), Ok(false));
        }
        assert_eq!(
            bool_param(Some("maybe"), "all_required").unwrap_err().code,
            37
        );
    }

    #[test]
    fn segments_query_fields() {
        assert_eq!(
            segments_query(None).unwrap(),
            SegmentsQuery {
                offset: 0,
                page_size: 10,
                all_required: false,
                partition_tag: None
            }
        );
        let q = segments_query(Some(
            "offset=2&page_size=3&all_required=true&partition_tag=t",
        ))
        .unwrap();
        assert_eq!((q.offset, q.page_size, q.all_required), (2, 3, true));
        assert_eq!(q.partition_tag.as_deref(), Some("t"));
        assert_eq!(
            segments_query(Some("partition_tag="))
                .unwrap()
                .partition_tag,
            None
        );
        assert_eq!(segments_query(Some("offset=x")).unwrap_err().code, 37);
        assert_eq!(segments_query(Some("page_size=-2")).unwrap_err().code, 37);
        assert_eq!(segments_query(Some("all_required=2")).unwrap_err().code, 37);
        assert_eq!(page_query(Some("offset=1&page_size=2")).unwrap(), (1, 2));
        assert_eq!(page_query(Some("page_size=z")).unwrap_err().code, 37);
    }

    #[test]
    fn paging_clamps() {
        assert_eq!(page_range(5, 0, 10, false), 0..5);
        assert_eq!(page_range(25, 10, 10, false), 10..20);
        assert_eq!(page_range(5, 7, 10, false), 5..5);
        assert_eq!(page_range(5, 1, 0, false), 1..1);
        assert_eq!(page_range(5, 3, i64::MAX, false), 3..5);
        assert_eq!(page_range(5, 3, 1, true), 0..5);
    }

    const INFO: &str = r#"{"partitions":[
        {"row_count":3,"segments":[{"data_size":100,"index_name":"IDMAP","name":"1001","row_count":3}],"tag":"_default"},
        {"row_count":0,"segments":null,"tag":"empty"},
        {"row_count":5,"segments":[
            {"data_size":200,"index_name":"IVFFLAT","name":"g1/1002","row_count":2},
            {"data_size":300,"index_name":"IDMAP","name":"g1/1003","row_count":3}],"tag":"t"}
    ],"row_count":8}"#;

    #[test]
    fn segments_flatten_and_filter() {
        let all = flatten_segments(INFO, None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0].to_string(),
            r#"{"data_size":100,"index_name":"IDMAP","name":"1001","partition_tag":"_default","row_count":3}"#
        );
        assert_eq!(all[2]["name"], "g1/1003");
        assert_eq!(all[2]["partition_tag"], "t");
        let t = flatten_segments(INFO, Some("t")).unwrap();
        assert_eq!(t.len(), 2);
        assert!(flatten_segments(INFO, Some("empty")).unwrap().is_empty());
        assert!(flatten_segments(INFO, Some("nope")).unwrap().is_empty());
        assert!(flatten_segments("", None).unwrap().is_empty());
        assert!(flatten_segments("{}", None).unwrap().is_empty());
        assert_eq!(flatten_segments("{", None).unwrap_err().code, 1);
    }

    #[test]
    fn segments_reply_pages_after_filter() {
        let all = flatten_segments(INFO, None).unwrap();
        let mut q = segments_query(Some("offset=1&page_size=1")).unwrap();
        let r = segments_reply(all.clone(), &q);
        assert_eq!(r["count"], 3);
        assert_eq!(r["code"], 0);
        assert_eq!(r["message"], "OK");
        assert_eq!(r["segments"].as_array().unwrap().len(), 1);
        assert_eq!(r["segments"][0]["name"], "g1/1002");
        q.all_required = true;
        assert_eq!(
            segments_reply(all, &q)["segments"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let r = segments_reply(Vec::new(), &q);
        assert_eq!(
            r.to_string(),
            r#"{"code":0,"count":0,"message":"OK","segments":[]}"#
        );
    }

    #[test]
    fn ids_reply_pages() {
        let ids: Vec<i64> = (1..=25).collect();
        let r = ids_reply(&ids, 20, 10);
        assert_eq!(
            r.to_string(),
            r#"{"count":25,"ids":["21","22","23","24","25"]}"#
        );
        assert_eq!(ids_reply(&ids, 30, 10)["ids"], json!([]));
        assert_eq!(ids_reply(&[], 0, 10).to_string(), r#"{"count":0,"ids":[]}"#);
    }

    #[test]
    fn vectors_page_checks() {
        assert_eq!(page_ids_check(&[]).unwrap_err().0, 30004);
        let many: Vec<i64> = (0..1001).collect();
        let e = page_ids_check(&many).unwrap_err();
        assert_eq!(
            e,
            (30004, "Input id array size cannot exceed: 1000".to_string())
        );
        assert!(page_ids_check(&many[..1000]).is_ok());
    }

    #[test]
    fn segment_vectors_replies() {
        let data = VectorsData {
            status: None,
            vectors_data: vec![RowRecord {
                float_data: vec![0.1],
                binary_data: Default::default(),
            }],
        };
        assert_eq!(
            segment_vectors_reply(7, &[3], Ok(&data)).to_string(),
            r#"{"code":0,"count":7,"message":"OK","vectors":[{"id":"3","vector":[0.10000000149011612]}]}"#
        );
        assert_eq!(
            segment_vectors_reply(0, &[], Err((30004, "No vector id specified".into())))
                .to_string(),
            r#"{"code":30004,"count":0,"message":"No vector id specified","vectors":[]}"#
        );
    }

    #[test]
    fn info_kinds() {
        assert_eq!(segment_info_kind("ids"), SegmentInfo::Ids);
        assert_eq!(segment_info_kind("vectors"), SegmentInfo::Vectors);
        assert_eq!(segment_info_kind("stats"), SegmentInfo::Other);
        assert_eq!(segment_info_kind("IDS"), SegmentInfo::Other);
    }

    #[test]
    fn routes_listed() {
        assert_eq!(ROUTES.len(), 3);
        assert!(ROUTES.iter().all(|(m, _)| *m == "GET"));
    }
}

#[cfg(test)]
mod node_tests {
    use serde_json::json;

    use crate::http_api::vectors::node_tests::{create, flush, http, node};

    #[tokio::test]
    async fn segment_routes_end_to_end() {
        let (node, mut grpc, _dir) = node().await;
        let api = node.http_api_addr.unwrap();
        create(&mut grpc, "c", 2, 1).await;
        let ids: Vec<String> = (1..=15).map(|i| format!("\"{i}\"")).collect();
        let vectors: Vec<String> = (1..=15).map(|i| format!("[{i},0.1]")).collect();
        let body = format!(
            r#"{{"vectors":[{}],"ids":[{}]}}"#,
            vectors.join(","),
            ids.join(",")
        );
        let (st, _) = http(api, "POST", "/collections/c/vectors", Some(&body)).await;
        assert_eq!(st, 201);
        flush(&mut grpc, &["c"]).await;

        let (st, list) = http(api, "GET", "/collections/c/segments", None).await;
        assert_eq!(st, 200, "{list}");
        assert_eq!(list["code"], 0);
        assert_eq!(list["message"], "OK");
        assert_eq!(list["count"], 1, "{list}");
        let seg = &list["segments"][0];
        assert_eq!(seg["partition_tag"], "_default");
        assert_eq!(seg["row_count"], 15);
        let name = seg["name"].as_str().unwrap().to_string();

        let (st, r) = http(api, "GET", "/collections/c/segments?partition_tag=x", None).await;
        assert_eq!((st, r["count"].clone()), (200, json!(0)));
        let (st, r) = http(api, "GET", "/collections/c/segments?offset=-1", None).await;
        assert_eq!((st, r["code"].clone()), (400, json!(37)));
        let (st, r) = http(
            api,
            "GET",
            "/collections/c/segments?all_required=maybe",
            None,
        )
        .await;
        assert_eq!((st, r["code"].clone()), (400, json!(37)));
        let (st, r) = http(api, "GET", "/collections/none/segments", None).await;
        assert_eq!((st, r["code"].clone()), (404, json!(4)));

        let (st, r) = http(
            api,
            "GET",
            &format!("/collections/c/segments/{name}/ids"),
            None,
        )
        .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["count"], 15);
        assert_eq!(r["ids"].as_array().unwrap().len(), 10);
        assert_eq!(r["ids"][0], "1");
        let path = format!("/collections/c/segments/{name}/ids?offset=10&page_size=10");
        let (_, r) = http(api, "GET", &path, None).await;
        assert_eq!(r["ids"], json!(["11", "12", "13", "14", "15"]));

        let path = format!("/collections/c/segments/{name}/vectors?offset=1&page_size=1");
        let (st, r) = http(api, "GET", &path, None).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(
            r,
            json!({"code": 0, "count": 15, "message": "OK",
                   "vectors": [{"id": "2", "vector": [2.0, 0.10000000149011612]}]})
        );
        let path = format!("/collections/c/segments/{name}/vectors?offset=20");
        let (st, r) = http(api, "GET", &path, None).await;
        assert_eq!((st, r["code"].clone()), (200, json!(30004)));

        let (st, r) = http(
            api,
            "GET",
            &format!("/collections/c/segments/{name}/stats"),
            None,
        )
        .await;
        assert_eq!((st, r), (200, serde_json::Value::Null));
        let (st, r) = http(api, "GET", "/collections/c/segments/404404/ids", None).await;
        assert_eq!((st, r["code"].clone()), (404, json!(4)), "{r}");
        // A grouped name, encoded or not, reaches GetVectorIDs as g1/<id>
        // (a single cluster knows no such segment).
        let (st, r) = http(api, "GET", "/collections/c/segments/g1%2F404/ids", None).await;
        assert_eq!((st, r["code"].clone()), (404, json!(4)), "{r}");
        let (st, r) = http(api, "GET", "/collections/c/segments/g1/404/ids", None).await;
        assert_eq!((st, r["code"].clone()), (404, json!(4)), "{r}");
        assert!(r["message"].as_str().unwrap().contains("g1/404"), "{r}");

        node.stop().await.unwrap();
    }
}
