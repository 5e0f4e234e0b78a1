//! Errors and replies of the HTTP API, in Milvus 1.1's shapes: an error is
//! the StatusDto `{"message":"...","code":N}` with a web code of §5 of the
//! reference (0–24 are gRPC's `ErrorCode` numbers, 31–37 the web layer's).
//!
//! Deliberate deviation: every JSON reply carries `Content-Type:
//! application/json` (Milvus 1.1 sends none on replies built from a JSON
//! string); the bodies are the same bytes (compact, keys sorted as
//! nlohmann's `dump()`; StatusDto bodies in oatpp's declaration order).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Web codes of the HTTP layer (reference §5).
pub mod code {
    pub const SUCCESS: i64 = 0;
    pub const UNEXPECTED_ERROR: i64 = 1;
    pub const CONNECT_FAILED: i64 = 2;
    pub const PERMISSION_DENIED: i64 = 3;
    pub const COLLECTION_NOT_EXISTS: i64 = 4;
    pub const ILLEGAL_ARGUMENT: i64 = 5;
    pub const ILLEGAL_METRIC_TYPE: i64 = 23;
    pub const ILLEGAL_INDEX_TYPE: i64 = 8;
    pub const PATH_PARAM_LOSS: i64 = 31;
    pub const UNKNOWN_PATH: i64 = 32;
    pub const QUERY_PARAM_LOSS: i64 = 33;
    pub const BODY_FIELD_LOSS: i64 = 34;
    pub const ILLEGAL_BODY: i64 = 35;
    pub const BODY_PARSE_FAIL: i64 = 36;
    pub const ILLEGAL_QUERY_PARAM: i64 = 37;
}

/// A refused or failed HTTP call: the HTTP status and the StatusDto body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub http: StatusCode,
    pub code: i64,
    pub message: String,
}

/// What every route handler returns.
pub type ApiResult = Result<Response, ApiError>;

/// Milvus' StatusDto, fields in oatpp's declaration order.
#[derive(Serialize)]
struct StatusDto<'a> {
    message: &'a str,
    code: i64,
}

impl ApiError {
    pub fn new(http: StatusCode, code: i64, message: impl Into<String>) -> Self {
        ApiError {
            http,
            code,
            message: message.into(),
        }
    }

    /// A web-layer error (HTTP 400), e.g. `web(34, "Field 'dimension' is missing")`.
    pub fn web(code: i64, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The answer to a Milvus reply status that is not SUCCESS. Web codes
    /// equal gRPC's `ErrorCode` numbers (0–24); code 4 is HTTP 404 only on
    /// routes under `/collections/{collection_name}` (`under_collection`),
    /// 400 elsewhere, as in Milvus 1.1. Code 3 (PERMISSION_DENIED, which
    /// Milvus never sends: it is the proxy's `[access]` refusal) is 403.
    pub fn from_status(status: &crate::wire::Status, under_collection: bool) -> Self {
        let code = i64::from(status.error_code);
        let code = if (0..=24).contains(&code) {
            code
        } else {
            code::UNEXPECTED_ERROR
        };
        let http = match code {
            code::COLLECTION_NOT_EXISTS if under_collection => StatusCode::NOT_FOUND,
            code::PERMISSION_DENIED => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(http, code, status.reason.clone())
    }

    /// `Err` of [`ApiError::from_status`] unless `status` is SUCCESS.
    pub fn check(status: Option<&crate::wire::Status>, under_collection: bool) -> Result<(), Self> {
        match status {
            Some(s) if s.error_code != 0 => Err(ApiError::from_status(s, under_collection)),
            _ => Ok(()),
        }
    }
}

/// A gRPC-level failure of the in-process call (not a Milvus status):
///
/// * `PERMISSION_DENIED` (the client is outside `access.allow_networks`) → 403, code 3;
/// * `RESOURCE_EXHAUSTED` (search admission or load shedding) → 429, code 1;
/// * `DEADLINE_EXCEEDED` (the `[deadlines]` default passed) → 504, code 1;
/// * `UNAVAILABLE` / `CANCELLED` (no backend could take it) → 503, code 1;
/// * `INVALID_ARGUMENT` (e.g. a message the codec refused) → 400, code 5;
/// * anything else → 500, code 1.
///
/// The message is the gRPC status message.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let (http, web) = match status.code() {
            Code::PermissionDenied => (StatusCode::FORBIDDEN, code::PERMISSION_DENIED),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, code::UNEXPECTED_ERROR),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, code::UNEXPECTED_ERROR),
            Code::Unavailable | Code::Cancelled => {
                (StatusCode::SERVICE_UNAVAILABLE, code::UNEXPECTED_ERROR)
            }
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, code::ILLEGAL_ARGUMENT),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, code::UNEXPECTED_ERROR),
        };
        let message = if status.message().is_empty() {
            format!("gRPC {:?}", status.code())
        } else {
            status.message().to_string()
        };
        ApiError::new(http, web, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        status_reply(self.http, self.code, &self.message)
    }
}

/// A StatusDto reply `{"message":..,"code":..}` (oatpp's field order).
pub fn status_reply(http: StatusCode, code: i64, message: &str) -> Response {
    let body = serde_json::to_vec(&StatusDto { message, code })
        .unwrap_or_else(|_| br#"{"message":"","code":1}"#.to_vec());
    json_bytes(http, body)
}

/// The success StatusDto, `{"message":"OK","code":0}`.
pub fn ok_status(http: StatusCode) -> Response {
    status_reply(http, code::SUCCESS, "OK")
}

/// A JSON reply: compact, object keys sorted (serde_json's map is ordered
/// by key, as nlohmann's `dump()`), `Content-Type: application/json`.
pub fn reply(http: StatusCode, body: serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"null".to_vec());
    json_bytes(http, bytes)
}

fn json_bytes(http: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (http, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A request body as JSON: empty → `None`; invalid → 400 code 36
/// (BODY_PARSE_FAIL; Milvus 1.1 answers 500 on some routes, a deliberate
/// deviation).
pub fn parse_body(body: &[u8]) -> Result<Option<serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::web(code::BODY_PARSE_FAIL, format!("json error: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    #[test]
    fn statuses_map_to_http() {
        let s = |c: i32| Status {
            error_code: c,
            reason: "r".into(),
        };
        assert_eq!(
            ApiError::from_status(&s(4), true).http,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from_status(&s(4), false).http,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from_status(&s(9), true).http,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from_status(&s(3), false).http,
            StatusCode::FORBIDDEN
        );
        assert_eq!(ApiError::from_status(&s(99), false).code, 1);
        let e: ApiError = tonic::Status::deadline_exceeded("late").into();
        assert_eq!((e.http, e.code), (StatusCode::GATEWAY_TIMEOUT, 1));
        let e: ApiError = tonic::Status::resource_exhausted("busy").into();
        assert_eq!(e.http, StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn bodies_are_milvus_shaped() {
        let r = reply(StatusCode::OK, serde_json::json!({"b": 1, "a": [1]}));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let dto = serde_json::to_string(&StatusDto {
            message: "OK",
            code: 0,
        })
        .unwrap();
        assert_eq!(dto, r#"{"message":"OK","code":0}"#);
        assert_eq!(
            serde_json::to_string(&serde_json::json!({"b": 1, "a": 2})).unwrap(),
            r#"{"a":2,"b":1}"#
        );
    }
}
