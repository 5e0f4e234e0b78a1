//! Milvus application errors: an `ErrorCode` plus a human-readable reason,
//! carried inside an OK gRPC reply exactly as Milvus 1.1 does.

use crate::wire::{ErrorCode, Status};

/// An error that becomes a Milvus `Status` in the reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (error code {code:?})")]
pub struct MilvusError {
    pub code: ErrorCode,
    pub reason: String,
}

pub type MilvusResult<T> = Result<T, MilvusError>;

impl MilvusError {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    pub fn unexpected(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnexpectedError, reason)
    }

    pub fn illegal_argument(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::IllegalArgument, reason)
    }

    pub fn collection_not_exists(name: &str) -> Self {
        Self::new(
            ErrorCode::CollectionNotExists,
            format!(
                "Collection {name} does not exist. Use milvus.has_collection to verify whether the collection exists. You also can check whether the collection name exists."
            ),
        )
    }

    pub fn meta(err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::MetaFailed, format!("metadata error: {err}"))
    }

    /// The wire form.
    pub fn to_status(&self) -> Status {
        Status {
            error_code: self.code as i32,
            reason: self.reason.clone(),
        }
    }
}

/// The status of a successful reply: code 0 and an empty reason, like Milvus.
pub fn ok_status() -> Option<Status> {
    Some(Status {
        error_code: ErrorCode::Success as i32,
        reason: String::new(),
    })
}

/// Reply messages that carry a Milvus `Status`: lets handlers build a reply
/// from a `MilvusResult` in one place.
pub trait Reply: Default + Send + 'static {
    fn set_status(&mut self, status: Status);
    fn status(&self) -> Option<&Status>;

    /// A reply holding only this error.
    fn from_error(err: &MilvusError) -> Self {
        let mut r = Self::default();
        r.set_status(err.to_status());
        r
    }
}

impl Reply for Status {
    fn set_status(&mut self, status: Status) {
        *self = status;
    }
    fn status(&self) -> Option<&Status> {
        Some(self)
    }
}

macro_rules! impl_reply {
    ($($t:ident),* $(,)?) => {
        $(impl Reply for crate::wire::$t {
            fn set_status(&mut self, status: Status) {
                self.status = Some(status);
            }
            fn status(&self) -> Option<&Status> {
                self.status.as_ref()
            }
        })*
    };
}

impl_reply!(
    BoolReply,
    CollectionSchema,
    CollectionRowCount,
    CollectionNameList,
    CollectionInfo,
    IndexParam,
    PartitionList,
    VectorIds,
    VectorsData,
    TopKQueryResult,
    StringReply,
);

/// Turns a handler result into the gRPC answer: always gRPC OK, the outcome
/// in the embedded status (success gets code 0 and an empty reason).
pub fn respond<T: Reply>(result: MilvusResult<T>) -> Result<tonic::Response<T>, tonic::Status> {
    let reply = match result {
        Ok(mut r) => {
            if r.status().is_none() {
                r.set_status(Status::default());
            }
            r
        }
        Err(e) => T::from_error(&e),
    };
    Ok(tonic::Response::new(reply))
}

/// The name of a wire error code, for logs and metric labels.
pub fn code_name(code: i32) -> &'static str {
    ErrorCode::try_from(code)
        .map(|c| c.as_str_name())
        .unwrap_or("UNKNOWN_ERROR_CODE")
}

/// Just the `status` (field 1) of an encoded reply; prost skips the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusOnly {
    #[prost(message, optional, tag = "1")]
    status: Option<Status>,
}

/// The Milvus status code of an encoded reply whose `status` is field 1
/// (`TopKQueryResult`, `VectorIds` and most MilvusService replies), read
/// without decoding the rest; an undecodable reply counts as UNEXPECTED_ERROR.
pub fn code_of_encoded_reply(reply: &[u8]) -> i32 {
    use prost::Message;
    StatusOnly::decode(reply)
        .map(|r| r.status.map_or(0, |s| s.error_code))
        .unwrap_or(ErrorCode::UnexpectedError as i32)
}

#[cfg(test)]
mod encoded_reply_tests {
    use super::*;
    use crate::wire::{TopKQueryResult, VectorIds};
    use prost::Message;

    #[test]
    fn reads_the_status_code_of_encoded_replies() {
        let ok = TopKQueryResult {
            status: ok_status(),
            row_num: 1,
            ids: vec![1, 2],
            distances: vec![0.5, 0.7],
        };
        assert_eq!(code_of_encoded_reply(&ok.encode_to_vec()), 0);
        let failed = VectorIds::from_error(&MilvusError::new(ErrorCode::IllegalDimension, "x"));
        assert_eq!(
            code_of_encoded_reply(&failed.encode_to_vec()),
            ErrorCode::IllegalDimension as i32
        );
        assert_eq!(
            code_of_encoded_reply(&[]),
            0,
            "no status: success, as Milvus"
        );
        assert_eq!(
            code_of_encoded_reply(&[0x0a, 0xff]),
            ErrorCode::UnexpectedError as i32
        );
    }
}
