//! Helpers shared by the validation unit tests: the code or reason of a failure, and
//! request pieces (key-value pairs, float and binary records, string lists).

use crate::status::MilvusResult;
use crate::wire::{ErrorCode, KeyValuePair, RowRecord};

pub(super) fn code_of<T: std::fmt::Debug>(r: MilvusResult<T>) -> ErrorCode {
    r.expect_err("expected an error").code
}

pub(super) fn reason_of<T: std::fmt::Debug>(r: MilvusResult<T>) -> String {
    r.expect_err("expected an error").reason
}

pub(super) fn kv(key: &str, value: &str) -> KeyValuePair {
    KeyValuePair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

pub(super) fn float_record(values: &[f32]) -> RowRecord {
    RowRecord {
        float_data: values.to_vec(),
        binary_data: Default::default(),
    }
}

pub(super) fn binary_record(bytes: &[u8]) -> RowRecord {
    RowRecord {
        float_data: Vec::new(),
        binary_data: bytes.to_vec().into(),
    }
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
