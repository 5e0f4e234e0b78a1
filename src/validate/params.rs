//! Reading `extra_params`: the `"params"` JSON object and its integer parameters, with
//! the range checks that index and search parameters share.

use serde_json::Value;

use super::{fail, preview};
use crate::status::{MilvusError, MilvusResult};
use crate::wire::{ErrorCode, KeyValuePair};

/// The only `extra_params` key the server reads.
const EXTRA_PARAMS_KEY: &str = "params";

/// The `"params"` JSON of `extra_params`. Only that key is read and the last
/// one wins; none gives `{}`. Malformed JSON is code 5 with the parser's
/// message. Milvus would accept any JSON value here (and, by its own source,
/// may crash on malformed text); anything but an object is refused as well,
/// since no index or search takes a non-object.
pub fn extra_params(kv: &[KeyValuePair]) -> MilvusResult<Value> {
    let Some(pair) = kv.iter().rev().find(|p| p.key == EXTRA_PARAMS_KEY) else {
        return Ok(Value::Object(serde_json::Map::new()));
    };
    let value: Value = serde_json::from_str(&pair.value).map_err(|e| {
        fail(
            ErrorCode::IllegalArgument,
            format!(
                "Invalid extra_params \"params\" value {}: not valid JSON ({e}). Expected an object such as {{\"nprobe\": 16}}.",
                preview(&pair.value)
            ),
        )
    })?;
    if !value.is_object() {
        return Err(fail(
            ErrorCode::IllegalArgument,
            format!(
                "Invalid extra_params \"params\" value {}: expected a JSON object such as {{\"nprobe\": 16}}.",
                preview(&pair.value)
            ),
        ));
    }
    Ok(value)
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An integer parameter as a wide integer, so values beyond i64 can be
/// reported as out of range. Whole floats (`16.0`) are accepted; Milvus
/// would also truncate `16.5` and take `true` as 1, which are refused here.
pub(super) fn integer_param(params: &Value, name: &str) -> MilvusResult<Option<i128>> {
    let Some(v) = params.get(name) else {
        return Ok(None);
    };
    let not_integer = || {
        fail(
            ErrorCode::IllegalArgument,
            format!(
                "Invalid {name}: expected an integer, got {} {v}.",
                json_type_name(v)
            ),
        )
    };
    let Value::Number(n) = v else {
        return Err(not_integer());
    };
    if let Some(i) = n.as_i64() {
        Ok(Some(i128::from(i)))
    } else if let Some(u) = n.as_u64() {
        Ok(Some(i128::from(u)))
    } else {
        match n.as_f64() {
            // `as` saturates, and the saturated value is reported as out of range.
            Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i128)),
            _ => Err(not_integer()),
        }
    }
}

/// Read an optional integer parameter (for code that uses the value after
/// validation): absent is `None`, a non-integer or a value beyond i64 is code 5.
pub fn int_param(params: &Value, name: &str) -> MilvusResult<Option<i64>> {
    match integer_param(params, name)? {
        None => Ok(None),
        Some(v) => i64::try_from(v).map(Some).map_err(|_| {
            fail(
                ErrorCode::IllegalArgument,
                format!("Invalid {name} value: {v}. It does not fit in a 64-bit integer."),
            )
        }),
    }
}

fn out_of_range(name: &str, value: i128, min: i64, max: i64) -> MilvusError {
    fail(
        ErrorCode::IllegalArgument,
        format!("Invalid {name} value: {value}. Valid range is [{min}, {max}]"),
    )
}

fn expected_integer(min: i64, max: i64) -> String {
    if (min, max) == (i64::MIN, i64::MAX) {
        "an integer".to_string()
    } else {
        format!("an integer in [{min}, {max}]")
    }
}

/// A required integer parameter in `min..=max` (Milvus `CheckParameterRange`). Code 5.
pub(super) fn required_in_range(
    params: &Value,
    name: &str,
    min: i64,
    max: i64,
) -> MilvusResult<i64> {
    match optional_in_range(params, name, min, max)? {
        Some(v) => Ok(v),
        None => Err(fail(
            ErrorCode::IllegalArgument,
            format!(
                "Parameter list must contain: {name} ({})",
                expected_integer(min, max)
            ),
        )),
    }
}

/// An optional integer parameter that must be in `min..=max` when present. Code 5.
pub(super) fn optional_in_range(
    params: &Value,
    name: &str,
    min: i64,
    max: i64,
) -> MilvusResult<Option<i64>> {
    match integer_param(params, name)? {
        None => Ok(None),
        Some(v) if v < i128::from(min) || v > i128::from(max) => {
            Err(out_of_range(name, v, min, max))
        }
        // In range, hence within i64.
        Some(v) => Ok(Some(v as i64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::validate::test_support::{code_of, kv, reason_of};

    #[test]
    fn extra_params_picks_last_params_key() {
        assert_eq!(extra_params(&[]), Ok(json!({})));
        assert_eq!(extra_params(&[kv("other", "not json")]), Ok(json!({})));
        assert_eq!(
            extra_params(&[
                kv("params", "{\"nprobe\":1}"),
                kv("x", "y"),
                kv("params", "{\"nprobe\":2}")
            ]),
            Ok(json!({"nprobe": 2}))
        );
    }

    #[test]
    fn extra_params_rejects_malformed_and_non_objects() {
        let err = extra_params(&[kv("params", "{\"nprobe\":")]).expect_err("malformed");
        assert_eq!(err.code, ErrorCode::IllegalArgument);
        assert!(err.reason.contains("EOF"), "{}", err.reason);
        for bad in ["", "[1]", "16", "null"] {
            assert_eq!(
                code_of(extra_params(&[kv("params", bad)])),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
        // The last key wins even when an earlier one was fine.
        assert!(extra_params(&[kv("params", "{}"), kv("params", "{")]).is_err());
    }

    #[test]
    fn int_param_reads_integers() {
        let p = json!({"a": 16, "b": 16.0, "c": 16.5, "d": "16", "e": true, "f": u64::MAX});
        assert_eq!(int_param(&p, "a"), Ok(Some(16)));
        assert_eq!(int_param(&p, "b"), Ok(Some(16)));
        assert_eq!(int_param(&p, "missing"), Ok(None));
        for name in ["c", "d", "e", "f"] {
            assert_eq!(
                code_of(int_param(&p, name)),
                ErrorCode::IllegalArgument,
                "{name}"
            );
        }
        assert!(reason_of(int_param(&p, "d")).contains("a string"));
    }
}
