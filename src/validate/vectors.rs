//! Vector payloads: the per-record shape check against a collection's metric and
//! dimension, the contiguous copy (`VectorData`), and the insert size limit.

use super::collection::dimension;
use super::{fail, MAX_INSERT_BYTES};
use crate::status::MilvusResult;
use crate::types::MetricType;
use crate::wire::{ErrorCode, RowRecord};

/// Validated query or insert vectors, copied into one contiguous buffer,
/// row after row: `dim` floats, or `dim / 8` bytes, per vector. The
/// collection dimension is not stored; [`VectorData::count`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum VectorData {
    Float(Vec<f32>),
    Binary(Vec<u8>),
}

impl VectorData {
    /// Number of vectors for a collection of dimension `dim` (bits for
    /// binary vectors); 0 for a dimension that holds no whole vector.
    pub fn count(&self, dim: i64) -> usize {
        let stride = match self {
            Self::Float(_) => usize::try_from(dim).unwrap_or(0),
            Self::Binary(_) => usize::try_from(dim / 8).unwrap_or(0),
        };
        match stride {
            0 => 0,
            stride => self.elements() / stride,
        }
    }

    /// True when the buffer holds no data at all.
    pub fn is_empty(&self) -> bool {
        self.elements() == 0
    }

    /// Floats or bytes in the buffer.
    pub fn elements(&self) -> usize {
        match self {
            Self::Float(v) => v.len(),
            Self::Binary(v) => v.len(),
        }
    }

    /// Size of the vector payload in bytes, as Milvus counts it for the insert limit.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Self::Float(v) => std::mem::size_of_val(v.as_slice()),
            Self::Binary(v) => v.len(),
        }
    }
}

/// Query or insert vectors against a collection with `metric` and `dim`.
///
/// No records is code 11. Each record is checked on its own (Milvus checks
/// only the totals, so one short and one long vector would pass there):
/// float collections need `float_data` of exactly `dim` values (a
/// `binary_data` next to it is ignored, as Milvus does); binary collections
/// need `binary_data` of exactly `dim / 8` bytes and no `float_data`.
/// Anything else is code 7. An invalid `dim` is code 7 as well.
pub fn vectors(records: &[RowRecord], metric: MetricType, dim: i64) -> MilvusResult<VectorData> {
    vector_shapes(records, metric, dim)?;
    // vector_shapes() bounds dim to 1..=32768 and every record to its size.
    let dim = dim as usize;
    if metric.is_binary() {
        let mut data = Vec::with_capacity(records.len() * (dim / 8));
        for r in records {
            data.extend_from_slice(&r.binary_data);
        }
        Ok(VectorData::Binary(data))
    } else {
        let mut data = Vec::with_capacity(records.len() * dim);
        for r in records {
            data.extend_from_slice(&r.float_data);
        }
        Ok(VectorData::Float(data))
    }
}

/// The checks of [`vectors`] without the copy: what the proxy runs on query
/// vectors before any fan-out, so a bad query costs no backend work.
pub fn vector_shapes(records: &[RowRecord], metric: MetricType, dim: i64) -> MilvusResult<()> {
    dimension(dim, metric)?;
    if records.is_empty() {
        return Err(fail(
            ErrorCode::IllegalRowrecord,
            "The vector array is empty. Make sure you have entered vector records.",
        ));
    }
    // dimension() bounds dim to 1..=32768.
    let dim = dim as usize;
    let code = ErrorCode::IllegalDimension;
    if metric.is_binary() {
        let bytes = dim / 8;
        for (i, r) in records.iter().enumerate() {
            if !r.float_data.is_empty() {
                return Err(fail(
                    code,
                    format!(
                        "Vector {i} carries float_data, but the collection metric {metric} is binary: send binary_data of {bytes} bytes ({dim} bits) per vector."
                    ),
                ));
            }
            if r.binary_data.len() != bytes {
                return Err(fail(
                    code,
                    format!(
                        "The vector dimension must be equal to the collection dimension: vector {i} has {} bytes ({} bits), the collection dimension is {dim} bits ({bytes} bytes).",
                        r.binary_data.len(),
                        r.binary_data.len() * 8
                    ),
                ));
            }
        }
    } else {
        for (i, r) in records.iter().enumerate() {
            if r.float_data.is_empty() && !r.binary_data.is_empty() {
                return Err(fail(
                    code,
                    format!(
                        "Vector {i} carries binary_data, but the collection metric {metric} needs float_data of {dim} values per vector."
                    ),
                ));
            }
            if r.float_data.len() != dim {
                return Err(fail(
                    code,
                    format!(
                        "The vector dimension must be equal to the collection dimension: vector {i} has {} values, the collection dimension is {dim}.",
                        r.float_data.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// An Insert carries at most 256 MB of vector data. Code 11.
pub fn insert_payload(data: &VectorData) -> MilvusResult<()> {
    let bytes = data.payload_bytes();
    if bytes > MAX_INSERT_BYTES {
        return Err(fail(
            ErrorCode::IllegalRowrecord,
            format!(
                "The amount of data inserted each time cannot exceed {} MB; this request carries {bytes} bytes. Split it into smaller batches.",
                MAX_INSERT_BYTES / (1024 * 1024)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{binary_record, code_of, float_record, reason_of};

    #[test]
    fn float_vectors_are_checked_per_record_and_concatenated() {
        let data = vectors(
            &[float_record(&[1.0, 2.0]), float_record(&[3.0, 4.0])],
            MetricType::L2,
            2,
        )
        .expect("valid");
        assert_eq!(data, VectorData::Float(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(
            (data.count(2), data.elements(), data.payload_bytes()),
            (2, 4, 16)
        );
        assert_eq!((data.count(1), data.count(0), data.count(-2)), (4, 0, 0));
        assert!(!data.is_empty());
        assert!(VectorData::Float(Vec::new()).is_empty());
        // One short and one long vector: the totals would divide, each record is wrong.
        let uneven = [float_record(&[1.0]), float_record(&[2.0, 3.0, 4.0])];
        assert_eq!(
            code_of(vectors(&uneven, MetricType::L2, 2)),
            ErrorCode::IllegalDimension
        );
        let reason = reason_of(vectors(
            &[float_record(&[1.0, 2.0, 3.0])],
            MetricType::Ip,
            2,
        ));
        assert!(
            reason.contains("vector 0 has 3 values") && reason.contains("dimension is 2"),
            "{reason}"
        );
        // A binary vector sent to a float collection.
        let reason = reason_of(vectors(&[binary_record(&[1])], MetricType::L2, 8));
        assert!(reason.contains("binary_data"), "{reason}");
        // Extra binary_data next to correct floats is ignored, like Milvus.
        let both = RowRecord {
            float_data: vec![1.0],
            binary_data: vec![9u8].into(),
        };
        assert!(vectors(&[both], MetricType::L2, 1).is_ok());
    }

    #[test]
    fn binary_vectors_need_dim_over_8_bytes() {
        let data = vectors(
            &[binary_record(&[1, 2]), binary_record(&[3, 4])],
            MetricType::Hamming,
            16,
        )
        .expect("valid");
        assert_eq!(data, VectorData::Binary(vec![1, 2, 3, 4]));
        assert_eq!(
            (
                data.count(16),
                data.count(8),
                data.count(7),
                data.payload_bytes()
            ),
            (2, 4, 0, 4)
        );
        assert_eq!(
            code_of(vectors(&[binary_record(&[1])], MetricType::Jaccard, 16)),
            ErrorCode::IllegalDimension
        );
        assert_eq!(
            code_of(vectors(
                &[float_record(&[1.0; 16])],
                MetricType::Hamming,
                16
            )),
            ErrorCode::IllegalDimension
        );
        let mixed = RowRecord {
            float_data: vec![1.0],
            binary_data: vec![1u8, 2].into(),
        };
        assert_eq!(
            code_of(vectors(&[mixed], MetricType::Hamming, 16)),
            ErrorCode::IllegalDimension
        );
    }

    #[test]
    fn vectors_empty_and_bad_dimension() {
        assert_eq!(
            code_of(vectors(&[], MetricType::L2, 4)),
            ErrorCode::IllegalRowrecord
        );
        assert_eq!(
            code_of(vectors(&[float_record(&[])], MetricType::L2, 4)),
            ErrorCode::IllegalDimension
        );
        assert_eq!(
            code_of(vectors(&[float_record(&[])], MetricType::L2, 0)),
            ErrorCode::IllegalDimension
        );
        assert_eq!(
            code_of(vectors(&[binary_record(&[1])], MetricType::Hamming, 7)),
            ErrorCode::IllegalDimension
        );
    }

    #[test]
    fn insert_payload_limit() {
        let at_limit = VectorData::Binary(vec![0; MAX_INSERT_BYTES]);
        assert_eq!(insert_payload(&at_limit), Ok(()));
        let over = VectorData::Binary(vec![0; MAX_INSERT_BYTES + 1]);
        assert_eq!(code_of(insert_payload(&over)), ErrorCode::IllegalRowrecord);
        let floats_over = VectorData::Float(vec![0.0; MAX_INSERT_BYTES / 4 + 1]);
        let reason = reason_of(insert_payload(&floats_over));
        assert!(
            reason.contains("256 MB") && reason.contains(&(MAX_INSERT_BYTES + 4).to_string()),
            "{reason}"
        );
        let floats_at = VectorData::Float(vec![0.0; MAX_INSERT_BYTES / 4]);
        assert_eq!(insert_payload(&floats_at), Ok(()));
    }

    #[test]
    fn vector_shapes_checks_without_copying() {
        let e = vector_shapes(&[float_record(&[1.0; 3])], MetricType::L2, 4).unwrap_err();
        assert_eq!(e.code, ErrorCode::IllegalDimension);
        assert!(vector_shapes(&[binary_record(&[0u8; 2])], MetricType::Hamming, 16).is_ok());
        assert_eq!(
            code_of(vector_shapes(&[], MetricType::L2, 4)),
            ErrorCode::IllegalRowrecord
        );
    }
}
