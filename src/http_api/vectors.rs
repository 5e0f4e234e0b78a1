//! The vector routes of the Milvus 1.1 HTTP API (reference §4.7):
//!
//! * `POST /collections/{c}/vectors`: Insert (201 `{"ids":[..]}`);
//! * `GET /collections/{c}/vectors?ids=1,2[&partition_tag=t]`: GetVectorsByID;
//! * `PUT /collections/{c}/vectors` with `{"search":{..}}`: Search, SearchByID
//!   (`ids`) or SearchInFiles (`file_ids`); with `{"delete":{..}}`: DeleteByID.
//!
//! Each handler is a thin shell: the body and query are turned into the
//! route's gRPC request by the pure functions below (no I/O, unit-tested),
//! the request goes through the in-process gRPC client (so it takes exactly
//! the path of its gRPC twin: access control, validation, routing), and the
//! reply is turned back into the 1.1 JSON.
//!
//! Encodings (§2.2): ids are JSON strings both ways (read with [`stol`]),
//! binary vectors are arrays of `dim / 8` byte values chosen by the
//! collection's metric, search distances are `%f` strings.
//!
//! Where Milvus 1.1 answers **500** (an exception escaping the handler) this
//! module answers a clear **400** with the closest web code instead:
//!
//! * Insert with a body that is not JSON → 36 (BODY_PARSE_FAIL);
//! * Insert with a non-numeric vector element → 36; a vector that is not an
//!   array → 11 (ILLEGAL_ROWRECORD);
//! * Insert with a `partition_tag` that is not a string → 36 (`null` is taken
//!   as absent).
//!
//! Web-layer codes, in the order they are checked (later ones come from
//! the gRPC twin: 4 → 404, 7, 10, 11, 12, 5, 1 → 400):
//!
//! | route | checks |
//! |---|---|
//! | Insert | empty body 34 · DescribeCollection (404) · not JSON 36 · no `vectors` 34 · bad element 11/36 · `ids` not an array 35 · id not a string or not `stol`-able 30001 · `partition_tag` 36 |
//! | GetVectorsByID | no `ids` 33 · a piece not `stol`-able 30001 · gRPC (`ids=` → 5, > 1000 → 5, no flushed data → 404 code 4) |
//! | PUT | not JSON 36 · neither `delete` nor `search` 35 |
//! | Search | no `topk` 34 · `topk` not a number 36 · `partition_tags` / `file_ids` not arrays of strings 36 · no `params` 34 · `ids` not an array of strings 36 · an id not `stol`-able 30001 · (no `ids`:) DescribeCollection (404) · no `vectors` 34 · `vectors` not an array of arrays 35 · a non-numeric element 36 |
//! | Delete | no `ids` / not an array 34 · a non-string id 36 · not all digits 35 · beyond i64 30001 · `partition_tag` not a string 36 |
//!
//! An unknown `partition_tag` on GET is code 1 (HTTP 400), as in v1.1.1
//! (tags match as regexes there; the 1.1 tip answers 404 code 4).
//!
//! Choices where 1.1 versions differ or the reference leaves room:
//!
//! * search hits with an id < 0 (padding of a short result) are dropped, as
//!   at the 1.1 tip; a query left with no hit is **`[]`**, not the tip's
//!   `null` (1.1.0/1.1.1 never produced an empty row, and `[]` is what a
//!   client iterating the rows can take);
//! * `"ids": null` in a search is taken as absent (plain Search), since
//!   SearchByID with no id can only fail.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tonic::Request;

use super::errors::code::{
    BODY_FIELD_LOSS, BODY_PARSE_FAIL, COLLECTION_NOT_EXISTS, ILLEGAL_BODY, QUERY_PARAM_LOSS,
};
use super::errors::{reply, ApiError, ApiResult};
use super::ApiState;
use crate::types::MetricType;
use crate::wire::{
    CollectionName, DeleteByIdParam, InsertParam, KeyValuePair, RowRecord, SearchByIdParam,
    SearchInFilesParam, SearchParam, Status, TopKQueryResult, VectorsData, VectorsIdentity,
};

/// Routes of this file, as (method, OpenAPI path).
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/collections/{collection_name}/vectors"),
    ("GET", "/collections/{collection_name}/vectors"),
    ("PUT", "/collections/{collection_name}/vectors"),
];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(
        "/collections/{collection_name}/vectors",
        get(get_vectors).post(insert).put(vectors_op),
    )
}

// ---- web codes (reference §5) beyond `errors::code` ----

pub(super) const ILLEGAL_ROWRECORD: i64 = 11;
/// Raw server code SERVER_UNEXPECTED_ERROR, which 1.1 leaks on id conversion.
pub(super) const SERVER_UNEXPECTED_ERROR: i64 = 30001;
/// Raw server code SERVER_INVALID_ARGUMENT (segment `vectors` replies).
pub(super) const SERVER_INVALID_ARGUMENT: i64 = 30004;

/// A refusal by the web layer: its web code and message (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WebError {
    pub code: i64,
    pub message: String,
}

impl WebError {
    pub(super) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> Self {
        ApiError::web(e.code, e.message)
    }
}

pub(super) type WebResult<T> = Result<T, WebError>;

// ---- pure functions: ids ----

/// `std::stol` (base 10): leading C whitespace is skipped, then an optional
/// sign and at least one digit; whatever follows the digits is ignored
/// (`"12ab"` → 12). No digit, or a value outside i64, fails (libstdc++
/// throws with the text `stol` in both cases).
pub(super) fn stol(s: &str) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'-') => ("-", &t[1..]),
        Some(b'+') => ("", &t[1..]),
        _ => ("", t),
    };
    let digits_end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits_end == 0 {
        return None;
    }
    format!("{sign}{}", &rest[..digits_end]).parse().ok()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Insert `ids`: absent or `[]` = auto ids; not an array → 35; an element
/// that is not a string or that [`stol`] refuses → raw 30001, as 1.1.
pub(super) fn insert_ids(v: Option<&Value>) -> WebResult<Vec<i64>> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return Err(WebError::new(
            ILLEGAL_BODY,
            format!(
                "Field \"ids\" must be an array of id strings, got {}",
                json_kind(v)
            ),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let id = match item {
                Value::String(s) => {
                    stol(s).ok_or_else(|| format!("stol: ids[{i}] = {s:?} is not an integer"))
                }
                other => Err(format!(
                    "ids[{i}] must be a string such as \"42\", got {}",
                    json_kind(other)
                )),
            };
            id.map_err(|d| {
                WebError::new(
                    SERVER_UNEXPECTED_ERROR,
                    format!("Cannot convert vectors id. details: {d}"),
                )
            })
        })
        .collect()
}

/// GET `?ids=`: split on commas, each piece through [`stol`] (an empty piece
/// as in `1,,2` fails with 30001 `stol`); the empty value is no id at all
/// (the gRPC call then answers 5 "No vector id specified").
pub(super) fn query_ids(s: &str) -> WebResult<Vec<i64>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|piece| {
            stol(piece).ok_or_else(|| {
                WebError::new(
                    SERVER_UNEXPECTED_ERROR,
                    format!("stol: id {piece:?} is not an integer"),
                )
            })
        })
        .collect()
}

/// Delete `ids`: absent or not an array → 34, a non-string element → 36, a
/// string that is not all digits (negatives included) → 35, digits beyond
/// i64 → raw 30001 (`std::stol` throws there in 1.1).
pub(super) fn delete_ids(v: Option<&Value>) -> WebResult<Vec<i64>> {
    let Some(v) = v else {
        return Err(WebError::new(
            BODY_FIELD_LOSS,
            "Field \"delete\" must contains \"ids\"",
        ));
    };
    let Value::Array(items) = v else {
        return Err(WebError::new(
            BODY_FIELD_LOSS,
            format!("\"ids\" must be an array, got {}", json_kind(v)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::String(s) = item else {
                return Err(WebError::new(
                    BODY_PARSE_FAIL,
                    format!(
                        "json error: ids[{i}] must be a string such as \"42\", got {}",
                        json_kind(item)
                    ),
                ));
            };
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WebError::new(
                    ILLEGAL_BODY,
                    format!("Members in \"ids\" must be integer string: ids[{i}] = {s:?}"),
                ));
            }
            s.parse().map_err(|_| {
                WebError::new(
                    SERVER_UNEXPECTED_ERROR,
                    format!("stol: ids[{i}] = {s:?} is out of the int64 range"),
                )
            })
        })
        .collect()
}

/// Ids of a reply, as JSON strings.
pub(super) fn id_strings(ids: &[i64]) -> Value {
    Value::Array(ids.iter().map(|id| Value::String(id.to_string())).collect())
}

// ---- pure functions: vectors ----

/// Why [`json_records`] refused the `vectors` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RecordsError {
    /// `vectors` is not an array.
    NotArray,
    /// `vectors[i]` is not an array.
    RowNotArray(usize),
    /// `vectors[i][j]` is not a number.
    NotNumber(usize, usize),
}

/// One byte of a binary vector as 1.1 reads it (`get<uint8_t>()`): no range
/// check, integers wrap modulo 256 and floats are truncated (1.7 → 1).
pub(super) fn json_byte(n: &serde_json::Number) -> u8 {
    if let Some(i) = n.as_i64() {
        i as u8
    } else if let Some(u) = n.as_u64() {
        u as u8
    } else {
        // Saturating float → int, then wrapping to a byte.
        n.as_f64().map_or(0, |f| f as i64 as u8)
    }
}

/// `vectors` as records: float vectors are arrays of numbers (integers
/// accepted), binary ones (`binary`, from the collection metric) arrays of
/// byte values (see [`json_byte`]). Shapes (dimension, emptiness) are left
/// to the gRPC validation.
pub(super) fn json_records(v: &Value, binary: bool) -> Result<Vec<RowRecord>, RecordsError> {
    let Value::Array(rows) = v else {
        return Err(RecordsError::NotArray);
    };
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let Value::Array(elems) = row else {
                return Err(RecordsError::RowNotArray(i));
            };
            let mut bytes = Vec::new();
            let mut floats = Vec::new();
            if binary {
                bytes.reserve(elems.len());
            } else {
                floats.reserve(elems.len());
            }
            for (j, e) in elems.iter().enumerate() {
                let Value::Number(n) = e else {
                    return Err(RecordsError::NotNumber(i, j));
                };
                if binary {
                    bytes.push(json_byte(n));
                } else {
                    floats.push(n.as_f64().unwrap_or(0.0) as f32);
                }
            }
            Ok(RowRecord {
                float_data: floats,
                binary_data: bytes.into(),
            })
        })
        .collect()
}

fn not_number(i: usize, j: usize) -> WebError {
    WebError::new(
        BODY_PARSE_FAIL,
        format!("json error: vectors[{i}][{j}] must be a number"),
    )
}

/// An f32 as a JSON number printed at float precision (`0.1`, not
/// `0.10000000149011612`), as GET `/vectors` does; NaN and infinities
/// (which JSON cannot carry) become `null`.
pub(super) fn f32_json(x: f32) -> Value {
    // The shortest f32 text read back as f64 prints as that same text.
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// An f32 widened to f64 (`0.10000000149011612`), as segment `vectors` does.
pub(super) fn f32_wide_json(x: f32) -> Value {
    serde_json::Number::from_f64(f64::from(x)).map_or(Value::Null, Value::Number)
}

/// A returned vector: bytes for a binary record, floats otherwise (`wide`
/// picks the f64 rendering of segment replies); a not-found id's empty
/// record is `[]`.
pub(super) fn record_json(r: &RowRecord, wide: bool) -> Value {
    if !r.binary_data.is_empty() {
        Value::Array(r.binary_data.iter().map(|b| json!(b)).collect())
    } else if wide {
        Value::Array(r.float_data.iter().map(|x| f32_wide_json(*x)).collect())
    } else {
        Value::Array(r.float_data.iter().map(|x| f32_json(*x)).collect())
    }
}

/// `[{"id":"1","vector":[..]},..]`: one entry per requested id, in order;
/// an id the reply has no record for gets `"vector":[]`.
pub(super) fn vectors_entries(ids: &[i64], data: &[RowRecord], wide: bool) -> Value {
    Value::Array(
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let vector = data
                    .get(i)
                    .map_or_else(|| Value::Array(Vec::new()), |r| record_json(r, wide));
                json!({"id": id.to_string(), "vector": vector})
            })
            .collect(),
    )
}

// ---- pure functions: insert ----

/// An Insert body as the gRPC request, after the collection lookup gave
/// `binary`. Checks in 1.1's order: not JSON → 36 (1.1: 500), no `vectors`
/// → 34, the vectors copied (not an array → no vectors, which the gRPC
/// validation answers with 11 as 1.1 does; a bad element → 11/36, 1.1:
/// 500), `ids` (35 / 30001), `partition_tag` (not a string → 36, 1.1: 500).
pub(super) fn insert_param(collection: &str, body: &[u8], binary: bool) -> WebResult<InsertParam> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| WebError::new(BODY_PARSE_FAIL, format!("json error: {e}")))?;
    let Some(vectors) = json.get("vectors") else {
        return Err(WebError::new(
            BODY_FIELD_LOSS,
            "Field 'vectors' is required.",
        ));
    };
    let records = match json_records(vectors, binary) {
        Ok(r) => r,
        Err(RecordsError::NotArray) => Vec::new(),
        Err(RecordsError::RowNotArray(i)) => {
            return Err(WebError::new(
                ILLEGAL_ROWRECORD,
                format!("vectors[{i}] must be an array of numbers"),
            ))
        }
        Err(RecordsError::NotNumber(i, j)) => return Err(not_number(i, j)),
    };
    let ids = insert_ids(json.get("ids"))?;
    let partition_tag = match json.get("partition_tag") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(WebError::new(
                BODY_PARSE_FAIL,
                format!(
                    "json error: Field \"partition_tag\" must be a string, got {}",
                    json_kind(other)
                ),
            ))
        }
    };
    Ok(InsertParam {
        collection_name: collection.to_string(),
        row_record_array: records,
        row_id_array: ids,
        partition_tag,
        extra_params: Vec::new(),
    })
}

// ---- pure functions: query string ----

/// The decoded `key=value` pairs of a query string (first occurrence wins
/// when looked up with [`query_value`]).
pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

pub(super) fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// GET `/vectors` query: `ids` (absent → 33; see [`query_ids`]) and the
/// optional `partition_tag`.
pub(super) fn get_vectors_query(raw: Option<&str>) -> WebResult<(Vec<i64>, String)> {
    let pairs = query_pairs(raw);
    let Some(ids) = query_value(&pairs, "ids") else {
        return Err(WebError::new(
            QUERY_PARAM_LOSS,
            "Query param ids is required.",
        ));
    };
    let ids = query_ids(ids)?;
    let tag = query_value(&pairs, "partition_tag")
        .unwrap_or("")
        .to_string();
    Ok((ids, tag))
}

// ---- pure functions: PUT body ----

/// A parsed `{"search":{..}}` body, before the collection lookup.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SearchBody {
    pub topk: i64,
    pub partition_tags: Vec<String>,
    pub file_ids: Vec<String>,
    /// `params` as the JSON text of the gRPC `extra_params` "params" pair.
    pub params: String,
    /// `Some` → SearchByID (then `vectors` and `file_ids` are not used).
    pub ids: Option<Vec<i64>>,
    /// The raw `vectors` value, read after the lookup (its form depends on
    /// the metric).
    pub vectors: Option<Value>,
}

/// A parsed `{"delete":{..}}` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeleteBody {
    pub ids: Vec<i64>,
    pub partition_tag: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum VectorsOp {
    Search(SearchBody),
    Delete(DeleteBody),
}

/// The PUT body: not JSON → 36; `delete` wins over `search`; neither (or not
/// an object) → 35 "Unknown body".
pub(super) fn parse_vectors_op(body: &[u8]) -> WebResult<VectorsOp> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| WebError::new(BODY_PARSE_FAIL, format!("json error: {e}")))?;
    if let Some(d) = json.get("delete") {
        return parse_delete(d).map(VectorsOp::Delete);
    }
    if let Some(s) = json.get("search") {
        return parse_search(s).map(VectorsOp::Search);
    }
    Err(WebError::new(ILLEGAL_BODY, "Unknown body"))
}

/// An array of strings or `null` (= none); not an array → 36, a non-string
/// element → 36.
fn string_list(v: Option<&Value>, field: &str) -> WebResult<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(WebError::new(
                    BODY_PARSE_FAIL,
                    format!(
                        "json error: {field}[{i}] must be a string, got {}",
                        json_kind(other)
                    ),
                )),
            })
            .collect(),
        Some(other) => Err(WebError::new(
            BODY_PARSE_FAIL,
            format!(
                "Field \"{field}\" must be a array, got {}",
                json_kind(other)
            ),
        )),
    }
}

/// `topk` as 1.1 reads it (int64): a float is truncated; anything but a
/// number → 36.
fn json_topk(v: &Value) -> WebResult<i64> {
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    };
    n.ok_or_else(|| {
        WebError::new(
            BODY_PARSE_FAIL,
            format!(
                "json error: Field 'topk' must be an integer, got {}",
                json_kind(v)
            ),
        )
    })
}

/// The `search` object, in 1.1's order: `topk` (34, 36), `partition_tags`
/// (36), `file_ids` (36), `params` (34), then `ids` (SearchByID: not an
/// array or a non-string element → 36, an unparsable one → 30001).
/// `vectors` is checked after the collection lookup ([`search_records`]).
pub(super) fn parse_search(s: &Value) -> WebResult<SearchBody> {
    let Some(topk) = s.get("topk") else {
        return Err(WebError::new(BODY_FIELD_LOSS, "Field 'topk' is required"));
    };
    let topk = json_topk(topk)?;
    let partition_tags = string_list(s.get("partition_tags"), "partition_tags")?;
    let file_ids = string_list(s.get("file_ids"), "file_ids")?;
    let Some(params) = s.get("params") else {
        return Err(WebError::new(BODY_FIELD_LOSS, "Field 'params' is required"));
    };
    let ids = match s.get("ids") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let strings = string_list(Some(v), "ids")?;
            let ids = strings
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    stol(id).ok_or_else(|| {
                        WebError::new(
                            SERVER_UNEXPECTED_ERROR,
                            format!("stol: ids[{i}] = {id:?} is not an integer"),
                        )
                    })
                })
                .collect::<WebResult<Vec<i64>>>()?;
            Some(ids)
        }
    };
    Ok(SearchBody {
        topk,
        partition_tags,
        file_ids,
        params: params.to_string(),
        ids,
        vectors: s.get("vectors").cloned(),
    })
}

/// The query vectors of a plain search: absent → 34, not an array (or a
/// row not an array) → 35, a non-numeric element → 36.
pub(super) fn search_records(vectors: Option<&Value>, binary: bool) -> WebResult<Vec<RowRecord>> {
    let Some(v) = vectors else {
        return Err(WebError::new(
            BODY_FIELD_LOSS,
            "Field \"vectors\" is required",
        ));
    };
    json_records(v, binary).map_err(|e| match e {
        RecordsError::NotArray => WebError::new(ILLEGAL_BODY, "field \"vectors\" must be an array"),
        RecordsError::RowNotArray(i) => WebError::new(
            ILLEGAL_BODY,
            format!("field \"vectors\" must be an array of arrays: vectors[{i}] is not"),
        ),
        RecordsError::NotNumber(i, j) => not_number(i, j),
    })
}

/// The `delete` object: `ids` as [`delete_ids`]; `partition_tag` optional
/// (not a string → 36).
pub(super) fn parse_delete(d: &Value) -> WebResult<DeleteBody> {
    let ids = delete_ids(d.get("ids"))?;
    let partition_tag = match d.get("partition_tag") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(WebError::new(
                BODY_PARSE_FAIL,
                format!(
                    "json error: Field \"partition_tag\" must be a string, got {}",
                    json_kind(other)
                ),
            ))
        }
    };
    Ok(DeleteBody { ids, partition_tag })
}

fn params_kv(params: &str) -> Vec<KeyValuePair> {
    vec![KeyValuePair {
        key: "params".to_string(),
        value: params.to_string(),
    }]
}

/// The gRPC request of a search body once the vectors are known.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SearchCall {
    Search(SearchParam),
    ById(SearchByIdParam),
    InFiles(SearchInFilesParam),
}

/// SearchByID when `ids` is present; else SearchInFiles when `file_ids` is
/// non-empty (partition tags are then not used); else Search. `records` is
/// only read for the last two.
pub(super) fn search_call(
    collection: &str,
    body: &SearchBody,
    records: Vec<RowRecord>,
) -> SearchCall {
    if let Some(ids) = &body.ids {
        return SearchCall::ById(SearchByIdParam {
            collection_name: collection.to_string(),
            partition_tag_array: body.partition_tags.clone(),
            id_array: ids.clone(),
            topk: body.topk,
            extra_params: params_kv(&body.params),
        });
    }
    let mut param = SearchParam {
        collection_name: collection.to_string(),
        partition_tag_array: body.partition_tags.clone(),
        query_record_array: records,
        topk: body.topk,
        extra_params: params_kv(&body.params),
    };
    if body.file_ids.is_empty() {
        SearchCall::Search(param)
    } else {
        param.partition_tag_array.clear();
        SearchCall::InFiles(SearchInFilesParam {
            file_id_array: body.file_ids.clone(),
            search_param: Some(param),
        })
    }
}

// ---- pure functions: search reply ----

/// A distance as `std::to_string(float)`: `%f` of the value widened to
/// double, 6 decimals (`0.1234567` → `"0.123457"`, `< 5e-7` →
/// `"0.000000"`); NaN and infinities as glibc prints them.
pub(super) fn distance_string(d: f32) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    format!("{:.6}", f64::from(d))
}

/// `{"num":nq,"result":[[{"distance","id"},..],..]}`: rows of the uniform
/// stride `ids / row_num`, hits with id < 0 skipped (a row may end up `[]`);
/// `row_num` 0 → `{"num":0,"result":[]}`.
pub(super) fn search_reply(r: &TopKQueryResult) -> Value {
    let nq = usize::try_from(r.row_num).unwrap_or(0);
    if nq == 0 {
        return json!({"num": r.row_num.max(0), "result": []});
    }
    let step = r.ids.len() / nq;
    let rows: Vec<Value> = (0..nq)
        .map(|q| {
            let hits: Vec<Value> = (q * step..(q + 1) * step)
                .filter_map(|k| {
                    let id = *r.ids.get(k)?;
                    if id < 0 {
                        return None;
                    }
                    let d = *r.distances.get(k)?;
                    Some(json!({"distance": distance_string(d), "id": id.to_string()}))
                })
                .collect();
            Value::Array(hits)
        })
        .collect();
    json!({"num": r.row_num, "result": rows})
}

// ---- status helpers ----

/// A reply's status, absent = success.
pub(super) fn status_ok(s: Option<&Status>) -> Result<(), Status> {
    match s {
        Some(s) if s.error_code != 0 => Err(s.clone()),
        _ => Ok(()),
    }
}

/// Reasons of Milvus' DB_NOT_FOUND (and of this server's equivalents):
/// gRPC gives code 1 with them, HTTP 404 with code 4 (reference §5).
pub(super) fn is_db_not_found(s: &Status) -> bool {
    const TEXTS: &[&str] = &[
        "Collection or partition is empty",
        "Segment does not exist",
        "does not belong to this collection",
    ];
    s.error_code == 1
        && (TEXTS.iter().any(|t| s.reason.contains(t))
            || (s.reason.starts_with("Segment ") && s.reason.contains(" does not exist")))
}

/// The status with DB_NOT_FOUND turned into code 4 (see [`is_db_not_found`]).
pub(super) fn web_status(s: Status) -> Status {
    if is_db_not_found(&s) {
        Status {
            error_code: COLLECTION_NOT_EXISTS as i32,
            reason: s.reason,
        }
    } else {
        s
    }
}

/// The error of a failed status on a `/collections/{c}/...` route.
pub(super) fn status_error(s: &Status) -> ApiError {
    ApiError::from_status(s, true)
}

// ---- handlers ----

/// The collection's metric is binary (DescribeCollection; its failure, e.g.
/// 4 → 404, is the route's answer).
async fn is_binary(state: &ApiState, collection: &str) -> Result<bool, ApiError> {
    let schema = state
        .client()
        .describe_collection(Request::new(CollectionName {
            collection_name: collection.to_string(),
        }))
        .await?
        .into_inner();
    status_ok(schema.status.as_ref()).map_err(|s| status_error(&s))?;
    Ok(MetricType::from_i32(schema.metric_type).is_some_and(MetricType::is_binary))
}

async fn insert(
    State(state): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    body: Bytes,
) -> ApiResult {
    if body.is_empty() {
        return Err(WebError::new(BODY_FIELD_LOSS, "Request payload is required.").into());
    }
    let binary = is_binary(&state, &collection).await?;
    let param = insert_param(&collection, &body, binary)?;
    let ids = state
        .client()
        .insert(Request::new(param))
        .await?
        .into_inner();
    status_ok(ids.status.as_ref()).map_err(|s| status_error(&s))?;
    Ok(reply(
        StatusCode::CREATED,
        json!({"ids": id_strings(&ids.vector_id_array)}),
    ))
}

/// GetVectorsByID's reply as the 1.1 JSON (DB_NOT_FOUND → 404 code 4).
pub(super) fn get_vectors_reply(ids: &[i64], data: &VectorsData) -> Result<Value, Status> {
    status_ok(data.status.as_ref()).map_err(web_status)?;
    Ok(json!({
        "code": 0,
        "message": "OK",
        "vectors": vectors_entries(ids, &data.vectors_data, false),
    }))
}

async fn get_vectors(
    State(state): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let (ids, partition_tag) = get_vectors_query(query.as_deref())?;
    let data = state
        .client()
        .get_vectors_by_id(Request::new(VectorsIdentity {
            collection_name: collection,
            partition_tag,
            id_array: ids.clone(),
        }))
        .await?
        .into_inner();
    let body = get_vectors_reply(&ids, &data).map_err(|s| status_error(&s))?;
    Ok(reply(StatusCode::OK, body))
}

async fn vectors_op(
    State(state): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    body: Bytes,
) -> ApiResult {
    match parse_vectors_op(&body)? {
        VectorsOp::Delete(d) => {
            let status = state
                .client()
                .delete_by_id(Request::new(DeleteByIdParam {
                    collection_name: collection,
                    partition_tag: d.partition_tag,
                    id_array: d.ids,
                }))
                .await?
                .into_inner();
            status_ok(Some(&status)).map_err(|s| status_error(&s))?;
            Ok(reply(StatusCode::OK, json!({"code": 0, "message": "OK"})))
        }
        VectorsOp::Search(s) => {
            let records = if s.ids.is_some() {
                Vec::new()
            } else {
                let binary = is_binary(&state, &collection).await?;
                search_records(s.vectors.as_ref(), binary)?
            };
            let mut client = state.client();
            let result = match search_call(&collection, &s, records) {
                SearchCall::Search(p) => client.search(Request::new(p)).await?,
                SearchCall::ById(p) => client.search_by_id(Request::new(p)).await?,
                SearchCall::InFiles(p) => client.search_in_files(Request::new(p)).await?,
            }
            .into_inner();
            status_ok(result.status.as_ref()).map_err(|s| status_error(&s))?;
            Ok(reply(StatusCode::OK, search_reply(&result)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T: std::fmt::Debug>(r: WebResult<T>) -> i64 {
        r.unwrap_err().code
    }

    #[test]
    fn stol_follows_std_stol() {
        assert_eq!(stol("42"), Some(42));
        assert_eq!(stol("  -7"), Some(-7));
        assert_eq!(stol("+5"), Some(5));
        assert_eq!(stol("\t\n12ab"), Some(12));
        assert_eq!(stol("007"), Some(7));
        assert_eq!(stol("9223372036854775807"), Some(i64::MAX));
        assert_eq!(stol("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(stol("9223372036854775808"), None);
        assert_eq!(stol(""), None);
        assert_eq!(stol("-"), None);
        assert_eq!(stol("ab12"), None);
        assert_eq!(stol("- 1"), None);
        assert_eq!(stol("0x1f"), Some(0));
        assert_eq!(stol("1.9"), Some(1));
    }

    #[test]
    fn insert_ids_codes() {
        assert_eq!(insert_ids(None).unwrap(), Vec::<i64>::new());
        assert_eq!(insert_ids(Some(&json!([]))).unwrap(), Vec::<i64>::new());
        assert_eq!(
            insert_ids(Some(&json!(["1", " -2", "3x"]))).unwrap(),
            vec![1, -2, 3]
        );
        assert_eq!(code(insert_ids(Some(&json!("1")))), 35);
        assert_eq!(code(insert_ids(Some(&json!(null)))), 35);
        assert_eq!(code(insert_ids(Some(&json!([1])))), 30001);
        let e = insert_ids(Some(&json!(["x"]))).unwrap_err();
        assert_eq!(e.code, 30001);
        assert!(e.message.starts_with("Cannot convert vectors id. details:"));
    }

    #[test]
    fn query_ids_split_and_stol() {
        assert_eq!(query_ids("").unwrap(), Vec::<i64>::new());
        assert_eq!(query_ids("1,2,-3").unwrap(), vec![1, 2, -3]);
        assert_eq!(code(query_ids("1,,2")), 30001);
        assert_eq!(code(query_ids("1,a")), 30001);
    }

    #[test]
    fn get_vectors_query_codes() {
        assert_eq!(code(get_vectors_query(None)), 33);
        assert_eq!(code(get_vectors_query(Some("partition_tag=t"))), 33);
        assert_eq!(
            get_vectors_query(Some("ids=")).unwrap(),
            (vec![], String::new())
        );
        assert_eq!(
            get_vectors_query(Some("ids=1,2&partition_tag=t")).unwrap(),
            (vec![1, 2], "t".to_string())
        );
        // A percent-encoded comma is accepted as well.
        assert_eq!(get_vectors_query(Some("ids=1%2C2")).unwrap().0, vec![1, 2]);
        assert_eq!(code(get_vectors_query(Some("ids=1,,2"))), 30001);
    }

    #[test]
    fn delete_ids_codes() {
        assert_eq!(delete_ids(Some(&json!(["1", "22"]))).unwrap(), vec![1, 22]);
        assert_eq!(code(delete_ids(None)), 34);
        assert_eq!(code(delete_ids(Some(&json!("1")))), 34);
        assert_eq!(code(delete_ids(Some(&json!([1])))), 36);
        assert_eq!(code(delete_ids(Some(&json!(["-1"])))), 35);
        assert_eq!(code(delete_ids(Some(&json!(["1a"])))), 35);
        assert_eq!(code(delete_ids(Some(&json!([""])))), 35);
        assert_eq!(
            code(delete_ids(Some(&json!(["99999999999999999999"])))),
            30001
        );
    }

    #[test]
    fn binary_bytes_wrap_and_truncate() {
        let recs = json_records(&json!([[0, 255, 256, -1, 1.7, 300.9]]), true).unwrap();
        assert_eq!(recs[0].binary_data, vec![0, 255, 0, 255, 1, 44]);
        assert!(recs[0].float_data.is_empty());
    }

    #[test]
    fn float_records_accept_integers() {
        let recs = json_records(&json!([[1, 0.5], [-2.25, 3]]), false).unwrap();
        assert_eq!(recs[0].float_data, vec![1.0, 0.5]);
        assert_eq!(recs[1].float_data, vec![-2.25, 3.0]);
        assert!(recs[0].binary_data.is_empty());
        assert_eq!(json_records(&json!([]), false).unwrap(), vec![]);
    }

    #[test]
    fn records_errors() {
        assert_eq!(json_records(&json!({}), false), Err(RecordsError::NotArray));
        assert_eq!(
            json_records(&json!([[1], 2]), false),
            Err(RecordsError::RowNotArray(1))
        );
        assert_eq!(
            json_records(&json!([[1, "x"]]), true),
            Err(RecordsError::NotNumber(0, 1))
        );
    }

    #[test]
    fn insert_param_order_and_codes() {
        let p = insert_param(
            "c",
            br#"{"vectors":[[1,2]],"ids":["7"],"partition_tag":"t"}"#,
            false,
        )
        .unwrap();
        assert_eq!(p.collection_name, "c");
        assert_eq!(p.row_record_array[0].float_data, vec![1.0, 2.0]);
        assert_eq!(p.row_id_array, vec![7]);
        assert_eq!(p.partition_tag, "t");

        let p = insert_param("c", br#"{"vectors":[[1,2]]}"#, true).unwrap();
        assert_eq!(p.row_record_array[0].binary_data, vec![1, 2]);
        assert!(p.row_id_array.is_empty());

        assert_eq!(code(insert_param("c", b"{", false)), 36);
        assert_eq!(code(insert_param("c", b"[]", false)), 34);
        assert_eq!(code(insert_param("c", br#"{"ids":["1"]}"#, false)), 34);
        // Not an array: no vectors, left to the gRPC check (11).
        let p = insert_param("c", br#"{"vectors":3}"#, false).unwrap();
        assert!(p.row_record_array.is_empty());
        // ...but the ids are read first, as in 1.1.
        assert_eq!(
            code(insert_param("c", br#"{"vectors":3,"ids":[1]}"#, false)),
            30001
        );
        assert_eq!(code(insert_param("c", br#"{"vectors":[1]}"#, false)), 11);
        assert_eq!(
            code(insert_param("c", br#"{"vectors":[["a"]]}"#, false)),
            36
        );
        assert_eq!(
            code(insert_param("c", br#"{"vectors":[[1]],"ids":"1"}"#, false)),
            35
        );
        assert_eq!(
            code(insert_param(
                "c",
                br#"{"vectors":[[1]],"partition_tag":1}"#,
                false
            )),
            36
        );
        let p = insert_param("c", br#"{"vectors":[[1]],"partition_tag":null}"#, false).unwrap();
        assert_eq!(p.partition_tag, "");
    }

    #[test]
    fn distance_strings() {
        assert_eq!(distance_string(0.123_456_7), "0.123457");
        assert_eq!(distance_string(0.0), "0.000000");
        assert_eq!(distance_string(4e-7), "0.000000");
        assert_eq!(distance_string(6e-7), "0.000001");
        assert_eq!(distance_string(1.5), "1.500000");
        assert_eq!(distance_string(-2.0), "-2.000000");
        assert_eq!(distance_string(12345.678), "12345.677734");
        // A tie at the 7th decimal rounds half to even, as glibc's printf.
        assert_eq!(distance_string(0.007_812_5), "0.007812");
        assert_eq!(distance_string(f32::INFINITY), "inf");
        assert_eq!(distance_string(f32::NEG_INFINITY), "-inf");
        assert_eq!(distance_string(f32::NAN), "nan");
    }

    #[test]
    fn floats_print_at_their_precision() {
        assert_eq!(f32_json(0.1).to_string(), "0.1");
        assert_eq!(f32_json(1.0).to_string(), "1.0");
        assert_eq!(f32_json(f32::NAN), Value::Null);
        assert_eq!(f32_wide_json(0.1).to_string(), "0.10000000149011612");
    }

    #[test]
    fn vectors_entries_pad_missing() {
        let data = vec![
            RowRecord {
                float_data: vec![0.1, 2.0],
                binary_data: Default::default(),
            },
            RowRecord::default(),
        ];
        let v = vectors_entries(&[1, 2, 3], &data, false);
        assert_eq!(
            v.to_string(),
            r#"[{"id":"1","vector":[0.1,2.0]},{"id":"2","vector":[]},{"id":"3","vector":[]}]"#
        );
        let bin = vec![RowRecord {
            float_data: vec![],
            binary_data: vec![3u8, 255].into(),
        }];
        assert_eq!(
            vectors_entries(&[9], &bin, true).to_string(),
            r#"[{"id":"9","vector":[3,255]}]"#
        );
    }

    #[test]
    fn get_vectors_reply_maps_db_not_found() {
        let data = VectorsData {
            status: Some(Status {
                error_code: 1,
                reason: "Collection or partition is empty".into(),
            }),
            vectors_data: vec![],
        };
        assert_eq!(get_vectors_reply(&[1], &data).unwrap_err().error_code, 4);
        let data = VectorsData {
            status: Some(Status {
                error_code: 5,
                reason: "No vector id specified".into(),
            }),
            vectors_data: vec![],
        };
        assert_eq!(get_vectors_reply(&[], &data).unwrap_err().error_code, 5);
        let data = VectorsData {
            status: None,
            vectors_data: vec![RowRecord::default()],
        };
        assert_eq!(
            get_vectors_reply(&[5], &data).unwrap().to_string(),
            r#"{"code":0,"message":"OK","vectors":[{"id":"5","vector":[]}]}"#
        );
    }

    #[test]
    fn db_not_found_texts() {
        let s = |code: i32, r: &str| Status {
            error_code: code,
            reason: r.to_string(),
        };
        assert!(is_db_not_found(&s(1, "Segment does not exist")));
        assert!(is_db_not_found(&s(
            1,
            "Segment 17 does not exist in collection c"
        )));
        assert!(is_db_not_found(&s(
            1,
            "Segment does not belong to this collection"
        )));
        assert!(!is_db_not_found(&s(5, "Collection or partition is empty")));
        assert!(!is_db_not_found(&s(1, "something else")));
        assert_eq!(web_status(s(1, "Segment does not exist")).error_code, 4);
        assert_eq!(web_status(s(1, "other")).error_code, 1);
    }

    fn search(v: Value) -> WebResult<SearchBody> {
        parse_search(&v)
    }

    #[test]
    fn search_body_fields() {
        let b = search(json!({
            "topk": 10, "params": {"nprobe": 16}, "vectors": [[1.0]],
            "partition_tags": ["a"], "file_ids": null
        }))
        .unwrap();
        assert_eq!(b.topk, 10);
        assert_eq!(b.params, r#"{"nprobe":16}"#);
        assert_eq!(b.partition_tags, vec!["a"]);
        assert!(b.file_ids.is_empty());
        assert_eq!(b.ids, None);
        assert_eq!(b.vectors, Some(json!([[1.0]])));

        let b = search(json!({"topk": 2.9, "params": {}, "ids": ["3", "-4"]})).unwrap();
        assert_eq!(b.topk, 2);
        assert_eq!(b.ids, Some(vec![3, -4]));
        let b = search(json!({"topk": 2, "params": {}, "ids": null})).unwrap();
        assert_eq!(b.ids, None);
    }

    #[test]
    fn search_body_codes_in_order() {
        assert_eq!(code(search(json!({"params": {}}))), 34);
        assert_eq!(code(search(json!({"topk": "1", "params": {}}))), 36);
        assert_eq!(code(search(json!({"topk": null, "params": {}}))), 36);
        // topk before params
        assert_eq!(code(search(json!({}))), 34);
        assert_eq!(code(search(json!({"topk": 1, "partition_tags": "a"}))), 36);
        assert_eq!(code(search(json!({"topk": 1, "partition_tags": [1]}))), 36);
        assert_eq!(code(search(json!({"topk": 1, "file_ids": {}}))), 36);
        assert_eq!(code(search(json!({"topk": 1, "file_ids": [1]}))), 36);
        // tags and file ids are read before params is required
        assert_eq!(code(search(json!({"topk": 1}))), 34);
        assert_eq!(
            code(search(json!({"topk": 1, "params": {}, "ids": [1]}))),
            36
        );
        assert_eq!(
            code(search(json!({"topk": 1, "params": {}, "ids": "1"}))),
            36
        );
        assert_eq!(
            code(search(json!({"topk": 1, "params": {}, "ids": ["x"]}))),
            30001
        );
        // No vectors is found only after the collection lookup.
        assert!(search(json!({"topk": 1, "params": {}})).is_ok());
    }

    #[test]
    fn search_records_codes() {
        assert_eq!(code(search_records(None, false)), 34);
        assert_eq!(code(search_records(Some(&json!("x")), false)), 35);
        assert_eq!(code(search_records(Some(&json!([1])), false)), 35);
        assert_eq!(code(search_records(Some(&json!([[true]])), false)), 36);
        assert_eq!(
            search_records(Some(&json!([[5, 6]])), true).unwrap()[0].binary_data,
            vec![5, 6]
        );
    }

    #[test]
    fn vectors_op_dispatch() {
        assert_eq!(code(parse_vectors_op(b"")), 36);
        assert_eq!(code(parse_vectors_op(b"{nope")), 36);
        assert_eq!(code(parse_vectors_op(b"{}")), 35);
        assert_eq!(code(parse_vectors_op(b"[1]")), 35);
        assert_eq!(code(parse_vectors_op(br#"{"delete":3}"#)), 34);
        // delete wins over search
        let op = parse_vectors_op(br#"{"search":{},"delete":{"ids":["1"],"partition_tag":"p"}}"#)
            .unwrap();
        assert_eq!(
            op,
            VectorsOp::Delete(DeleteBody {
                ids: vec![1],
                partition_tag: "p".into()
            })
        );
        assert_eq!(
            code(parse_vectors_op(
                br#"{"delete":{"ids":[],"partition_tag":2}}"#
            )),
            36
        );
        assert!(matches!(
            parse_vectors_op(br#"{"search":{"topk":1,"params":{},"vectors":[[1]]}}"#),
            Ok(VectorsOp::Search(_))
        ));
    }

    #[test]
    fn search_call_kinds() {
        let rec = vec![RowRecord {
            float_data: vec![1.0],
            binary_data: Default::default(),
        }];
        let mut b =
            search(json!({"topk": 3, "params": {"nprobe": 1}, "partition_tags": ["t"]})).unwrap();
        match search_call("c", &b, rec.clone()) {
            SearchCall::Search(p) => {
                assert_eq!(p.collection_name, "c");
                assert_eq!(p.topk, 3);
                assert_eq!(p.partition_tag_array, vec!["t"]);
                assert_eq!(p.query_record_array, rec);
                assert_eq!(p.extra_params[0].key, "params");
                assert_eq!(p.extra_params[0].value, r#"{"nprobe":1}"#);
            }
            other => panic!("{other:?}"),
        }
        b.file_ids = vec!["12".into()];
        match search_call("c", &b, rec.clone()) {
            SearchCall::InFiles(p) => {
                assert_eq!(p.file_id_array, vec!["12"]);
                let sp = p.search_param.unwrap();
                assert!(sp.partition_tag_array.is_empty());
                assert_eq!(sp.query_record_array, rec);
            }
            other => panic!("{other:?}"),
        }
        b.ids = Some(vec![4]);
        match search_call("c", &b, vec![]) {
            SearchCall::ById(p) => {
                assert_eq!(p.id_array, vec![4]);
                assert_eq!(p.partition_tag_array, vec!["t"]);
                assert_eq!(p.topk, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn search_reply_rows() {
        let r = TopKQueryResult {
            status: None,
            row_num: 2,
            ids: vec![42, 7, -1, -1],
            distances: vec![0.123_456_7, 1.0, f32::MAX, f32::MAX],
        };
        assert_eq!(
            search_reply(&r).to_string(),
            r#"{"num":2,"result":[[{"distance":"0.123457","id":"42"},{"distance":"1.000000","id":"7"}],[]]}"#
        );
        let empty = TopKQueryResult::default();
        assert_eq!(search_reply(&empty).to_string(), r#"{"num":0,"result":[]}"#);
        // Short distances never panic.
        let odd = TopKQueryResult {
            status: None,
            row_num: 1,
            ids: vec![1, 2],
            distances: vec![0.5],
        };
        assert_eq!(
            search_reply(&odd).to_string(),
            r#"{"num":1,"result":[[{"distance":"0.500000","id":"1"}]]}"#
        );
    }

    #[test]
    fn routes_listed() {
        assert_eq!(ROUTES.len(), 3);
        assert!(ROUTES
            .iter()
            .all(|(_, p)| *p == "/collections/{collection_name}/vectors"));
    }
}

/// Handler tests against a real node (its HTTP API over loopback), shared
/// with the segment routes' tests.
#[cfg(test)]
pub(super) mod node_tests {
    use std::net::SocketAddr;

    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::node::{NodeOptions, Role, RunningNode};
    use crate::wire::milvus_service_client::MilvusServiceClient;
    use crate::wire::{CollectionSchema, FlushParam};

    pub(crate) type Client = MilvusServiceClient<tonic::transport::Channel>;

    /// A writable node with its HTTP API, a gRPC client to it, its data dir.
    pub(crate) async fn node() -> (RunningNode, Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = NodeOptions::new(
            Role::Writable,
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
            "sqlite://:@:/".to_string(),
        );
        opts.http_listen = Some("127.0.0.1:0".parse().unwrap());
        let node = crate::node::start(opts).await.unwrap();
        let client = MilvusServiceClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap();
        (node, client, dir)
    }

    pub(crate) async fn create(client: &mut Client, name: &str, dim: i64, metric: i32) {
        let s = client
            .create_collection(CollectionSchema {
                status: None,
                collection_name: name.to_string(),
                dimension: dim,
                index_file_size: 1024,
                metric_type: metric,
                extra_params: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.error_code, 0, "{}", s.reason);
    }

    pub(crate) async fn flush(client: &mut Client, names: &[&str]) {
        let s = client
            .flush(FlushParam {
                collection_name_array: names.iter().map(|n| n.to_string()).collect(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.error_code, 0, "{}", s.reason);
    }

    /// One HTTP/1.1 request (connection closed after it): status and body.
    pub(crate) async fn http(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let value = if body.is_empty() {
            Value::String(String::new())
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
        };
        (status, value)
    }

    #[tokio::test]
    async fn vector_routes_end_to_end() {
        let (node, mut grpc, _dir) = node().await;
        let api = node.http_api_addr.unwrap();
        create(&mut grpc, "c", 4, 1).await;
        create(&mut grpc, "b", 16, 3).await;

        // Insert.
        let (st, body) = http(
            api,
            "POST",
            "/collections/c/vectors",
            Some(r#"{"vectors":[[0,0,0,0],[1,1,1,1],[2,2,2,2.5]],"ids":["1","2","3"]}"#),
        )
        .await;
        assert_eq!((st, body), (201, json!({"ids": ["1", "2", "3"]})));
        let (st, body) = http(api, "POST", "/collections/c/vectors", None).await;
        assert_eq!((st, body["code"].clone()), (400, json!(34)));
        let (st, body) = http(
            api,
            "POST",
            "/collections/none/vectors",
            Some(r#"{"vectors":[[1]]}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (404, json!(4)));
        let (st, body) = http(
            api,
            "POST",
            "/collections/c/vectors",
            Some(r#"{"vectors":[[1,2,3]],"ids":["4"]}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (400, json!(7)), "{body}");
        let (st, body) = http(
            api,
            "POST",
            "/collections/c/vectors",
            Some(r#"{"vectors":5,"ids":[]}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (400, json!(11)), "{body}");
        let (st, body) = http(
            api,
            "POST",
            "/collections/c/vectors",
            Some(r#"{"vectors":[[1,2,3,4]],"ids":[4]}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (400, json!(30001)), "{body}");
        let (st, body) = http(
            api,
            "POST",
            "/collections/b/vectors",
            Some(r#"{"vectors":[[1,256]],"ids":["10"]}"#),
        )
        .await;
        assert_eq!((st, body), (201, json!({"ids": ["10"]})));
        flush(&mut grpc, &["c", "b"]).await;

        // GetVectorsByID.
        let (st, body) = http(api, "GET", "/collections/c/vectors?ids=3,99", None).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            body,
            json!({"code": 0, "message": "OK", "vectors": [
                {"id": "3", "vector": [2.0, 2.0, 2.0, 2.5]},
                {"id": "99", "vector": []}
            ]})
        );
        let (st, body) = http(api, "GET", "/collections/b/vectors?ids=10", None).await;
        assert_eq!(
            (st, body["vectors"][0]["vector"].clone()),
            (200, json!([1, 0]))
        );
        let (st, body) = http(api, "GET", "/collections/c/vectors", None).await;
        assert_eq!((st, body["code"].clone()), (400, json!(33)));
        let (st, body) = http(api, "GET", "/collections/c/vectors?ids=", None).await;
        assert_eq!((st, body["code"].clone()), (400, json!(5)));
        let (st, body) = http(api, "GET", "/collections/c/vectors?ids=1,,2", None).await;
        assert_eq!((st, body["code"].clone()), (400, json!(30001)));
        let (st, body) = http(api, "GET", "/collections/none/vectors?ids=1", None).await;
        assert_eq!((st, body["code"].clone()), (404, json!(4)));

        // Search, SearchByID, SearchInFiles refusal.
        let search = r#"{"search":{"topk":2,"params":{},"vectors":[[1,1,1,1.1]]}}"#;
        let (st, body) = http(api, "PUT", "/collections/c/vectors", Some(search)).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["num"], 1);
        assert_eq!(body["result"][0][0]["id"], "2");
        assert_eq!(body["result"][0][0]["distance"], "0.010000");
        assert_eq!(body["result"][0].as_array().unwrap().len(), 2);
        let by_id = r#"{"search":{"topk":1,"params":{},"ids":["3"]}}"#;
        let (st, body) = http(api, "PUT", "/collections/c/vectors", Some(by_id)).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["result"][0][0]["id"], "3");
        let (st, body) = http(
            api,
            "PUT",
            "/collections/none/vectors",
            Some(r#"{"search":{"topk":1,"params":{}}}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (404, json!(4)));
        let (st, body) = http(
            api,
            "PUT",
            "/collections/c/vectors",
            Some(r#"{"search":{"topk":1,"params":{}}}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (400, json!(34)));
        let (st, body) = http(
            api,
            "PUT",
            "/collections/c/vectors",
            Some(r#"{"search":{"topk":0,"params":{},"vectors":[[1,1,1,1]]}}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (400, json!(10)), "{body}");
        let bin = r#"{"search":{"topk":1,"params":{},"vectors":[[1,0]]}}"#;
        let (st, body) = http(api, "PUT", "/collections/b/vectors", Some(bin)).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            body["result"][0][0],
            json!({"distance": "0.000000", "id": "10"})
        );
        let (st, body) = http(api, "PUT", "/collections/c/vectors", Some("{}")).await;
        assert_eq!((st, body["code"].clone()), (400, json!(35)));

        // Delete.
        let (st, body) = http(
            api,
            "PUT",
            "/collections/c/vectors",
            Some(r#"{"delete":{"ids":["1"]}}"#),
        )
        .await;
        assert_eq!((st, body), (200, json!({"code": 0, "message": "OK"})));
        let (st, body) = http(
            api,
            "PUT",
            "/collections/c/vectors",
            Some(r#"{"delete":{"ids":["-1"]}}"#),
        )
        .await;
        assert_eq!((st, body["code"].clone()), (400, json!(35)));

        node.stop().await.unwrap();
    }
}
