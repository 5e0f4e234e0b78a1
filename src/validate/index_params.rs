//! CreateIndex: which index types a collection may take, the engine type stored for
//! each, and the build parameters each needs.

use serde_json::Value;

use super::params::{integer_param, optional_in_range, required_in_range};
use super::{fail, MAX_NLIST};
use crate::status::MilvusResult;
use crate::types::{EngineType, MetricType};
use crate::wire::ErrorCode;

/// The index type of a CreateIndex on a collection with `metric` and `dim`,
/// with its build parameters checked; returns the engine type to store.
///
/// * 0, unknown values, IVFSQ8H (GPU only), SPTAG (7, 8: not built into
///   1.1) and the internal binary types (9, 10) are code 8. Milvus accepts
///   7..=10 from a client and fails later; refusing them early is deliberate.
/// * Binary collections take only FLAT (→ BIN_IDMAP 9) and IVF_FLAT
///   (→ BIN_IVFFLAT 10), code 8. This is checked before the parameters
///   (Milvus checks parameters first), so the reason names the real problem.
/// * Parameters (code 5): nlist 1..=65536 for the IVF family; IVF_PQ also
///   needs `m` dividing the dimension (else code 7) and an optional nbits
///   1..=16; RNSG search_length 10..=300, out_degree 5..=300,
///   candidate_pool_size 50..=1000, knng 5..=300; HNSW M 4..=64,
///   efConstruction 8..=512; ANNOY n_trees 1..=1024.
pub fn index_params(
    index_type: i32,
    params: &Value,
    metric: MetricType,
    dim: i64,
) -> MilvusResult<EngineType> {
    let code = ErrorCode::IllegalIndexType;
    let Some(engine) = EngineType::from_i32(index_type) else {
        return Err(fail(
            code,
            format!(
                "Invalid index type: {index_type}. Make sure the index type is in IndexType list: 1 FLAT, 2 IVF_FLAT, 3 IVF_SQ8, 4 RNSG, 6 IVF_PQ, 11 HNSW, 12 ANNOY."
            ),
        ));
    };
    match engine {
        EngineType::IvfSq8h => {
            return Err(fail(
                code,
                "Unsupported index type: 5 (IVF_SQ8H). It needs a GPU build of Milvus; use IVF_SQ8 (3) instead.",
            ))
        }
        EngineType::SptagKdt | EngineType::SptagBkt => {
            return Err(fail(
                code,
                format!("Unsupported index type: {index_type} (SPTAG). It is not built into Milvus 1.1."),
            ))
        }
        EngineType::BinFlat | EngineType::BinIvfFlat => {
            return Err(fail(
                code,
                format!(
                    "Invalid index type: {index_type}. Binary engine types are internal; ask for FLAT (1) or IVF_FLAT (2) on a binary collection."
                ),
            ))
        }
        _ => {}
    }
    let stored = if metric.is_binary() {
        match engine {
            EngineType::Flat => EngineType::BinFlat,
            EngineType::IvfFlat => EngineType::BinIvfFlat,
            _ => {
                return Err(fail(
                    code,
                    format!(
                        "Invalid index type for collection metric type: {} ({index_type}) on a {metric} collection. Binary collections support only FLAT (1) and IVF_FLAT (2).",
                        engine.index_name()
                    ),
                ))
            }
        }
    } else {
        engine
    };
    match engine {
        EngineType::IvfFlat | EngineType::IvfSq8 => {
            required_in_range(params, "nlist", 1, MAX_NLIST)?;
        }
        EngineType::IvfPq => {
            required_in_range(params, "nlist", 1, MAX_NLIST)?;
            optional_in_range(params, "nbits", 1, 16)?;
            pq_m(params, dim)?;
        }
        EngineType::Rnsg => {
            required_in_range(params, "search_length", 10, 300)?;
            required_in_range(params, "out_degree", 5, 300)?;
            required_in_range(params, "candidate_pool_size", 50, 1000)?;
            required_in_range(params, "knng", 5, 300)?;
        }
        EngineType::Hnsw => {
            required_in_range(params, "M", 4, 64)?;
            required_in_range(params, "efConstruction", 8, 512)?;
        }
        EngineType::Annoy => {
            required_in_range(params, "n_trees", 1, 1024)?;
        }
        _ => {}
    }
    Ok(stored)
}

/// IVF_PQ `m`: required, positive (Milvus divides by it unchecked when 0)
/// and a divisor of the dimension (code 7).
fn pq_m(params: &Value, dim: i64) -> MilvusResult<()> {
    let m = match integer_param(params, "m")? {
        None => {
            return Err(fail(
                ErrorCode::IllegalArgument,
                format!(
                    "Parameter list must contain: m (a positive divisor of the dimension {dim})"
                ),
            ))
        }
        Some(m) if m <= 0 || m > i128::from(i64::MAX) => {
            return Err(fail(
                ErrorCode::IllegalArgument,
                format!(
                    "Invalid m value: {m}. m must be a positive divisor of the dimension {dim}."
                ),
            ))
        }
        Some(m) => m as i64,
    };
    if dim % m != 0 {
        return Err(fail(
            ErrorCode::IllegalDimension,
            format!("Invalid collection dimension, dimension can not be divided by m: dimension {dim}, m {m}."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::validate::test_support::{code_of, reason_of};

    #[test]
    fn index_type_codes() {
        let p = json!({"nlist": 16});
        for bad in [0, -1, 13, 5, 7, 8, 9, 10] {
            assert_eq!(
                code_of(index_params(bad, &p, MetricType::L2, 128)),
                ErrorCode::IllegalIndexType,
                "{bad}"
            );
        }
        assert!(reason_of(index_params(5, &p, MetricType::L2, 128)).contains("GPU"));
        assert_eq!(
            index_params(1, &json!({}), MetricType::L2, 128),
            Ok(EngineType::Flat)
        );
        assert_eq!(
            index_params(2, &p, MetricType::Ip, 128),
            Ok(EngineType::IvfFlat)
        );
        assert_eq!(
            index_params(3, &p, MetricType::L2, 128),
            Ok(EngineType::IvfSq8)
        );
    }

    #[test]
    fn binary_collections_take_only_flat_and_ivf_flat() {
        let p = json!({"nlist": 16});
        assert_eq!(
            index_params(1, &json!({}), MetricType::Hamming, 128),
            Ok(EngineType::BinFlat)
        );
        assert_eq!(
            index_params(2, &p, MetricType::Jaccard, 128),
            Ok(EngineType::BinIvfFlat)
        );
        for other in [3, 4, 6, 11, 12] {
            assert_eq!(
                code_of(index_params(other, &json!({}), MetricType::Tanimoto, 128)),
                ErrorCode::IllegalIndexType,
                "{other}"
            );
        }
        // BIN_IVFFLAT still needs nlist.
        assert_eq!(
            code_of(index_params(2, &json!({}), MetricType::Hamming, 128)),
            ErrorCode::IllegalArgument
        );
    }

    #[test]
    fn ivf_nlist_bounds() {
        for nlist in [1, MAX_NLIST] {
            assert!(index_params(2, &json!({"nlist": nlist}), MetricType::L2, 8).is_ok());
        }
        for nlist in [0, MAX_NLIST + 1] {
            let r = index_params(3, &json!({"nlist": nlist}), MetricType::L2, 8);
            assert_eq!(
                r.clone().map_err(|e| e.code),
                Err(ErrorCode::IllegalArgument)
            );
            assert!(reason_of(r).contains("Valid range is [1, 65536]"));
        }
        let missing = reason_of(index_params(2, &json!({}), MetricType::L2, 8));
        assert!(
            missing.starts_with("Parameter list must contain: nlist"),
            "{missing}"
        );
    }

    #[test]
    fn ivf_pq_m_and_nbits() {
        let ok = |p: Value| index_params(6, &p, MetricType::L2, 128);
        assert_eq!(ok(json!({"nlist": 16, "m": 16})), Ok(EngineType::IvfPq));
        assert_eq!(
            ok(json!({"nlist": 16, "m": 128, "nbits": 1})),
            Ok(EngineType::IvfPq)
        );
        assert_eq!(
            ok(json!({"nlist": 16, "m": 1, "nbits": 16})),
            Ok(EngineType::IvfPq)
        );
        assert_eq!(
            code_of(ok(json!({"nlist": 16, "m": 12}))),
            ErrorCode::IllegalDimension
        );
        for bad in [
            json!({"nlist": 16}),
            json!({"nlist": 16, "m": 0}),
            json!({"nlist": 16, "m": -4}),
            json!({"nlist": 16, "m": 16, "nbits": 0}),
            json!({"nlist": 16, "m": 16, "nbits": 17}),
            json!({"m": 16}),
        ] {
            assert_eq!(
                code_of(ok(bad.clone())),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn rnsg_build_ranges() {
        let good =
            json!({"search_length": 10, "out_degree": 5, "candidate_pool_size": 50, "knng": 5});
        assert_eq!(
            index_params(4, &good, MetricType::L2, 8),
            Ok(EngineType::Rnsg)
        );
        let high = json!({"search_length": 300, "out_degree": 300, "candidate_pool_size": 1000, "knng": 300});
        assert_eq!(
            index_params(4, &high, MetricType::L2, 8),
            Ok(EngineType::Rnsg)
        );
        for (key, bad) in [
            ("search_length", 9),
            ("search_length", 301),
            ("out_degree", 4),
            ("out_degree", 301),
            ("candidate_pool_size", 49),
            ("candidate_pool_size", 1001),
            ("knng", 4),
            ("knng", 301),
        ] {
            let mut p = good.clone();
            p[key] = json!(bad);
            assert_eq!(
                code_of(index_params(4, &p, MetricType::L2, 8)),
                ErrorCode::IllegalArgument,
                "{key}={bad}"
            );
            let mut p = good.clone();
            p.as_object_mut().map(|o| o.remove(key));
            assert_eq!(
                code_of(index_params(4, &p, MetricType::L2, 8)),
                ErrorCode::IllegalArgument,
                "no {key}"
            );
        }
    }

    #[test]
    fn hnsw_and_annoy_build_ranges() {
        for (m, ef) in [(4, 8), (64, 512)] {
            let p = json!({"M": m, "efConstruction": ef});
            assert_eq!(
                index_params(11, &p, MetricType::L2, 8),
                Ok(EngineType::Hnsw)
            );
        }
        for bad in [
            json!({"M": 3, "efConstruction": 8}),
            json!({"M": 65, "efConstruction": 8}),
            json!({"M": 4, "efConstruction": 7}),
            json!({"M": 4, "efConstruction": 513}),
            json!({"efConstruction": 8}),
            json!({"m": 16, "efConstruction": 8}),
        ] {
            assert_eq!(
                code_of(index_params(11, &bad, MetricType::L2, 8)),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
        for n in [1, 1024] {
            assert_eq!(
                index_params(12, &json!({"n_trees": n}), MetricType::Ip, 8),
                Ok(EngineType::Annoy)
            );
        }
        for bad in [json!({"n_trees": 0}), json!({"n_trees": 1025}), json!({})] {
            assert_eq!(
                code_of(index_params(12, &bad, MetricType::L2, 8)),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
    }
}
