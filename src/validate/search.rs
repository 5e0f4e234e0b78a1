//! Search requests: topk, the result-size limit, the request-level check the node and
//! the proxy share, and the search parameters of each engine type.

use serde_json::Value;

use super::names::{collection_name, partition_tag};
use super::params::{int_param, required_in_range};
use super::{fail, MAX_HNSW_EF, MAX_NPROBE, MAX_RESULT_BYTES, MAX_TOPK};
use crate::status::MilvusResult;
use crate::types::{EngineType, MetricType};
use crate::wire::ErrorCode;

/// Bytes of a search result entry: an i64 id and an f32 distance.
const RESULT_ENTRY_BYTES: u128 = 12;

/// topk: 1..=1048576. Code 10.
pub fn topk(topk: i64) -> MilvusResult<()> {
    if !(1..=MAX_TOPK).contains(&topk) {
        return Err(fail(
            ErrorCode::IllegalTopk,
            format!("Invalid topk: {topk}. The topk must be within the range of 1 ~ {MAX_TOPK}."),
        ));
    }
    Ok(())
}

/// The result of `nq` queries with `topk` must fit in a gRPC message:
/// `nq × topk × 12 < 2 GiB − 1 MiB`. Code 10.
pub fn result_size(nq: usize, topk: i64) -> MilvusResult<()> {
    let topk_entries = u128::try_from(topk).unwrap_or(0);
    let bytes = (nq as u128)
        .saturating_mul(topk_entries)
        .saturating_mul(RESULT_ENTRY_BYTES);
    if bytes >= u128::from(MAX_RESULT_BYTES) {
        return Err(fail(
            ErrorCode::IllegalTopk,
            format!(
                "Invalid nq {nq} topk {topk}. The search result size ({bytes} bytes = nq x topk x 12) may exceed the RPC transmission limit of {MAX_RESULT_BYTES} bytes; send fewer queries per request or a smaller topk."
            ),
        ));
    }
    Ok(())
}

/// The request-level checks of a vector search, in Milvus' order: the
/// collection name (9), topk (10), the result size (10), then each tag (1).
pub fn search_request(name: &str, tags: &[String], nq: usize, topk: i64) -> MilvusResult<()> {
    collection_name(name)?;
    self::topk(topk)?;
    result_size(nq, topk)?;
    for tag in tags {
        partition_tag(tag)?;
    }
    Ok(())
}

/// Search parameters against the collection's current engine type (code 5):
/// the IVF family and IVF_PQ need nprobe 1..=65536; HNSW ef in topk..=32768;
/// RNSG search_length 10..=300; ANNOY needs search_k (any integer). FLAT
/// (and anything else) needs nothing.
pub fn search_params(engine: EngineType, params: &Value, topk: i64) -> MilvusResult<()> {
    match engine {
        EngineType::IvfFlat
        | EngineType::IvfSq8
        | EngineType::IvfSq8h
        | EngineType::BinIvfFlat
        | EngineType::IvfPq => {
            required_in_range(params, "nprobe", 1, MAX_NPROBE)?;
        }
        EngineType::Rnsg => {
            required_in_range(params, "search_length", 10, 300)?;
        }
        EngineType::Hnsw => {
            required_in_range(params, "ef", topk, MAX_HNSW_EF)?;
        }
        EngineType::Annoy => {
            required_in_range(params, "search_k", i64::MIN, i64::MAX)?;
        }
        EngineType::Flat | EngineType::BinFlat | EngineType::SptagKdt | EngineType::SptagBkt => {}
    }
    Ok(())
}

/// The metric a search ranks raw (IDMAP / BIN_IDMAP) files with: the
/// collection's, unless the params JSON carries a per-search `metric_type`
/// override (Milvus `XSearchTask::Execute`). The override is the metric's
/// number, as Milvus reads it (`get<int64_t>`; pymilvus `MetricType.IP` is 2):
/// a float collection accepts L2 (1) or IP (2), a binary one HAMMING (3),
/// JACCARD (4), TANIMOTO (5), SUBSTRUCTURE (6) or SUPERSTRUCTURE (7).
/// Anything else is code 5 (Milvus: SERVER_INVALID_ARGUMENT "Illegal metric
/// type"). Milvus checks only when a raw file is searched and throws on a
/// non-number; we check every search the same way. Shared by the node (scan
/// order) and the proxy (merge order).
pub fn search_metric(collection: MetricType, params: &Value) -> MilvusResult<MetricType> {
    const KEY: &str = "metric_type";
    let illegal = |shown: String| {
        let accepted = if collection.is_binary() {
            "HAMMING (3), JACCARD (4), TANIMOTO (5), SUBSTRUCTURE (6) or SUPERSTRUCTURE (7)"
        } else {
            "L2 (1) or IP (2)"
        };
        fail(
            ErrorCode::IllegalArgument,
            format!(
                "Illegal metric type: {shown}. A search of this {} collection accepts metric_type {accepted}, given as the number.",
                collection.name()
            ),
        )
    };
    let Some(raw) = params.get(KEY) else {
        return Ok(collection);
    };
    let value = int_param(params, KEY).map_err(|_| illegal(raw.to_string()))?;
    let Some(value) = value else {
        return Ok(collection);
    };
    match i32::try_from(value).ok().and_then(MetricType::from_i32) {
        Some(m) if m.is_binary() == collection.is_binary() => Ok(m),
        _ => Err(illegal(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::validate::test_support::{code_of, reason_of};

    #[test]
    fn search_request_checks_in_milvus_order() {
        let tags = vec![" ".to_string()];
        let code = |r: MilvusResult<()>| r.unwrap_err().code;
        assert_eq!(
            code(search_request("1x", &tags, 1, 0)),
            ErrorCode::IllegalCollectionName
        );
        assert_eq!(
            code(search_request("c", &tags, 1, 0)),
            ErrorCode::IllegalTopk
        );
        assert_eq!(
            code(search_request("c", &tags, 1, 1)),
            ErrorCode::UnexpectedError
        );
        assert!(search_request("c", &[], 1, 1).is_ok());
    }

    #[test]
    fn topk_range() {
        assert_eq!(topk(1), Ok(()));
        assert_eq!(topk(MAX_TOPK), Ok(()));
        for bad in [0, -1, MAX_TOPK + 1] {
            assert_eq!(code_of(topk(bad)), ErrorCode::IllegalTopk);
        }
        assert!(reason_of(topk(0)).contains("1 ~ 1048576"));
    }

    #[test]
    fn result_size_limit() {
        assert_eq!(result_size(0, MAX_TOPK), Ok(()));
        assert_eq!(result_size(1, MAX_TOPK), Ok(()));
        // 170 × 1048576 × 12 = 2 139 095 040 < 2 146 435 072; 171 is over.
        assert_eq!(result_size(170, MAX_TOPK), Ok(()));
        assert_eq!(code_of(result_size(171, MAX_TOPK)), ErrorCode::IllegalTopk);
        // Exactly at the limit is refused (strictly below is required).
        let limit_entries = MAX_RESULT_BYTES / 12;
        assert_eq!(MAX_RESULT_BYTES % 12, 4);
        assert_eq!(result_size(limit_entries as usize, 1), Ok(()));
        assert_eq!(
            code_of(result_size(limit_entries as usize + 1, 1)),
            ErrorCode::IllegalTopk
        );
        assert_eq!(
            code_of(result_size(usize::MAX, i64::MAX)),
            ErrorCode::IllegalTopk
        );
        assert_eq!(result_size(usize::MAX, -1), Ok(()));
    }

    #[test]
    fn search_params_nprobe_for_ivf_family() {
        for engine in [
            EngineType::IvfFlat,
            EngineType::IvfSq8,
            EngineType::IvfSq8h,
            EngineType::BinIvfFlat,
            EngineType::IvfPq,
        ] {
            assert_eq!(search_params(engine, &json!({"nprobe": 1}), 10), Ok(()));
            assert_eq!(
                search_params(engine, &json!({"nprobe": MAX_NPROBE}), 10),
                Ok(())
            );
            for bad in [
                json!({"nprobe": 0}),
                json!({"nprobe": MAX_NPROBE + 1}),
                json!({"nprobe": "8"}),
            ] {
                assert_eq!(
                    code_of(search_params(engine, &bad, 10)),
                    ErrorCode::IllegalArgument
                );
            }
            let missing = reason_of(search_params(engine, &json!({}), 10));
            assert!(
                missing.starts_with("Parameter list must contain: nprobe"),
                "{missing}"
            );
        }
        assert_eq!(
            reason_of(search_params(
                EngineType::IvfFlat,
                &json!({"nprobe": 0}),
                10
            )),
            "Invalid nprobe value: 0. Valid range is [1, 65536]"
        );
    }

    #[test]
    fn search_params_other_engines() {
        assert_eq!(search_params(EngineType::Flat, &json!({}), 10), Ok(()));
        assert_eq!(
            search_params(EngineType::BinFlat, &json!({"anything": "x"}), 10),
            Ok(())
        );
        // HNSW ef in [topk, 32768].
        assert_eq!(
            search_params(EngineType::Hnsw, &json!({"ef": 10}), 10),
            Ok(())
        );
        assert_eq!(
            search_params(EngineType::Hnsw, &json!({"ef": MAX_HNSW_EF}), 10),
            Ok(())
        );
        assert_eq!(
            code_of(search_params(EngineType::Hnsw, &json!({"ef": 9}), 10)),
            ErrorCode::IllegalArgument
        );
        assert_eq!(
            code_of(search_params(
                EngineType::Hnsw,
                &json!({"ef": MAX_HNSW_EF + 1}),
                10
            )),
            ErrorCode::IllegalArgument
        );
        assert_eq!(
            code_of(search_params(EngineType::Hnsw, &json!({}), 10)),
            ErrorCode::IllegalArgument
        );
        // RNSG search_length in [10, 300].
        for ok in [10, 300] {
            assert_eq!(
                search_params(EngineType::Rnsg, &json!({"search_length": ok}), 10),
                Ok(())
            );
        }
        for bad in [9, 301] {
            assert_eq!(
                code_of(search_params(
                    EngineType::Rnsg,
                    &json!({"search_length": bad}),
                    10
                )),
                ErrorCode::IllegalArgument
            );
        }
        // ANNOY search_k: required, any i64.
        for ok in [i64::MIN, -1, 0, i64::MAX] {
            assert_eq!(
                search_params(EngineType::Annoy, &json!({"search_k": ok}), 10),
                Ok(())
            );
        }
        assert_eq!(
            reason_of(search_params(EngineType::Annoy, &json!({}), 10)),
            "Parameter list must contain: search_k (an integer)"
        );
        assert_eq!(
            code_of(search_params(
                EngineType::Annoy,
                &json!({"search_k": u64::MAX}),
                10
            )),
            ErrorCode::IllegalArgument
        );
    }
    #[test]
    fn search_metric_override() {
        use MetricType::*;
        assert_eq!(search_metric(L2, &json!({})), Ok(L2));
        assert_eq!(search_metric(L2, &json!({"nprobe": 8})), Ok(L2));
        assert_eq!(search_metric(L2, &json!({"metric_type": 2})), Ok(Ip));
        assert_eq!(search_metric(Ip, &json!({"metric_type": 1})), Ok(L2));
        assert_eq!(search_metric(Ip, &json!({"metric_type": 2})), Ok(Ip));
        for binary in [3, 4, 5, 6, 7] {
            let m = MetricType::from_i32(binary).unwrap();
            assert_eq!(
                search_metric(Jaccard, &json!({"metric_type": binary})),
                Ok(m)
            );
            assert_eq!(
                code_of(search_metric(L2, &json!({"metric_type": binary}))),
                ErrorCode::IllegalArgument
            );
        }
        for float in [1, 2] {
            assert_eq!(
                code_of(search_metric(Hamming, &json!({"metric_type": float}))),
                ErrorCode::IllegalArgument
            );
        }
        for bad in [
            json!({"metric_type": 0}),
            json!({"metric_type": 8}),
            json!({"metric_type": -1}),
            json!({"metric_type": "IP"}),
            json!({"metric_type": 2.5}),
            json!({"metric_type": null}),
            json!({"metric_type": [2]}),
            json!({"metric_type": u64::MAX}),
        ] {
            assert_eq!(
                code_of(search_metric(L2, &bad)),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
        let reason = reason_of(search_metric(L2, &json!({"metric_type": "IP"})));
        assert!(reason.contains("Illegal metric type: \"IP\""), "{reason}");
        assert!(reason.contains("IP (2)"), "{reason}");
    }
}
