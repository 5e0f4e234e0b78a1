//! The parameters of a new collection: dimension, metric type and index file size.

use super::{fail, MAX_DIMENSION, MAX_INDEX_FILE_SIZE_MB};
use crate::status::MilvusResult;
use crate::types::MetricType;
use crate::wire::ErrorCode;

/// Collection dimension: 1..=32768, a multiple of 8 for binary metrics. Code 7.
pub fn dimension(dim: i64, metric: MetricType) -> MilvusResult<()> {
    let code = ErrorCode::IllegalDimension;
    if !(1..=MAX_DIMENSION).contains(&dim) {
        return Err(fail(
            code,
            format!(
                "Invalid collection dimension: {dim}. The collection dimension must be within the range of 1 ~ {MAX_DIMENSION}."
            ),
        ));
    }
    if metric.is_binary() && dim % 8 != 0 {
        return Err(fail(
            code,
            format!(
                "Invalid collection dimension: {dim}. With the binary metric {metric} the dimension (in bits) must be a multiple of 8."
            ),
        ));
    }
    Ok(())
}

/// `metric_type`: 1 (L2) ..= 7 (SUPERSTRUCTURE). Code 23.
pub fn metric_type(v: i32) -> MilvusResult<MetricType> {
    MetricType::from_i32(v).ok_or_else(|| {
        fail(
            ErrorCode::IllegalMetricType,
            format!(
                "Invalid index metric type: {v}. Make sure the metric type is in MetricType list: 1 L2, 2 IP, 3 HAMMING, 4 JACCARD, 5 TANIMOTO, 6 SUBSTRUCTURE, 7 SUPERSTRUCTURE."
            ),
        )
    })
}

/// `index_file_size` in MB: 1..=131072. Code 5.
pub fn index_file_size(mb: i64) -> MilvusResult<()> {
    if !(1..=MAX_INDEX_FILE_SIZE_MB).contains(&mb) {
        return Err(fail(
            ErrorCode::IllegalArgument,
            format!(
                "Invalid index file size: {mb}. The index file size must be within the range of 1 ~ {MAX_INDEX_FILE_SIZE_MB} (MB)."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{code_of, reason_of};

    #[test]
    fn dimension_bounds_and_binary_multiple_of_8() {
        assert_eq!(dimension(1, MetricType::L2), Ok(()));
        assert_eq!(dimension(MAX_DIMENSION, MetricType::Ip), Ok(()));
        assert_eq!(dimension(8, MetricType::Hamming), Ok(()));
        assert_eq!(dimension(MAX_DIMENSION, MetricType::Jaccard), Ok(()));
        for (dim, metric) in [
            (0, MetricType::L2),
            (-1, MetricType::L2),
            (MAX_DIMENSION + 1, MetricType::L2),
            (1, MetricType::Tanimoto),
            (12, MetricType::Hamming),
            (0, MetricType::Hamming),
        ] {
            assert_eq!(
                code_of(dimension(dim, metric)),
                ErrorCode::IllegalDimension,
                "{dim} {metric}"
            );
        }
        assert!(reason_of(dimension(12, MetricType::Hamming)).contains("multiple of 8"));
        assert!(reason_of(dimension(0, MetricType::L2)).contains("1 ~ 32768"));
    }

    #[test]
    fn metric_type_range() {
        assert_eq!(metric_type(1), Ok(MetricType::L2));
        assert_eq!(metric_type(7), Ok(MetricType::Superstructure));
        for bad in [0, 8, -1] {
            assert_eq!(code_of(metric_type(bad)), ErrorCode::IllegalMetricType);
        }
    }

    #[test]
    fn index_file_size_range() {
        assert_eq!(index_file_size(1), Ok(()));
        assert_eq!(index_file_size(MAX_INDEX_FILE_SIZE_MB), Ok(()));
        for bad in [0, -5, MAX_INDEX_FILE_SIZE_MB + 1] {
            assert_eq!(code_of(index_file_size(bad)), ErrorCode::IllegalArgument);
        }
    }
}
