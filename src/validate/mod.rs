//! Pure validation of Milvus 1.1 requests: names, limits, index and search
//! parameters, vector shapes, and id rules (partition-tag matching is in `partition`). Every check
//! fails with the `MilvusError` (wire code and an actionable reason) that
//! Milvus 1.1.1+ gives (`core/src/utils/ValidationUtil.cpp` and the request
//! classes). Shared by the node and the proxy; no I/O.

use std::collections::HashSet;

use serde_json::Value;

use crate::status::{MilvusError, MilvusResult};
use crate::types::{EngineType, MetricType, DEFAULT_PARTITION_TAG, FLAG_AUTO_IDS, FLAG_USER_IDS};
use crate::wire::{ErrorCode, KeyValuePair, RowRecord};

/// Largest topk (`QUERY_MAX_TOPK`, Milvus 1.1.1+; 1.1.0 allowed 16384).
pub const MAX_TOPK: i64 = 1_048_576;
/// Largest collection dimension.
pub const MAX_DIMENSION: i64 = 32768;
/// Largest `index_file_size`, in MB (1.1.1+ CPU builds).
pub const MAX_INDEX_FILE_SIZE_MB: i64 = 131072;
/// Largest vector payload of one Insert (float bytes or binary bytes).
pub const MAX_INSERT_BYTES: usize = 256 * 1024 * 1024;
/// Most ids one GetVectorsByID may ask for.
pub const MAX_GET_BY_ID: usize = 1000;
/// Most partitions per collection (`engine_config.max_partition_num` default).
pub const MAX_PARTITIONS: usize = 4096;
/// Longest collection name or partition tag, in bytes.
pub const MAX_NAME_LENGTH: usize = 255;
/// `nq × topk × 12` bytes must stay strictly below this (2 GiB − 1 MiB).
pub const MAX_RESULT_BYTES: u64 = 2 * 1024 * 1024 * 1024 - 1024 * 1024;
/// Most files one SearchInFiles may name (`TASK_TABLE_MAX_COUNT`).
pub const MAX_SEARCH_FILES: usize = 65536;
/// Range of `nlist` (IVF build) and `nprobe` (IVF search).
pub const MAX_NLIST: i64 = 65536;
pub const MAX_NPROBE: i64 = 65536;
/// Upper bound of HNSW `ef` at search time.
pub const MAX_HNSW_EF: i64 = 32768;

/// The only `extra_params` key the server reads.
const EXTRA_PARAMS_KEY: &str = "params";
/// Bytes of a search result entry: an i64 id and an f32 distance.
const RESULT_ENTRY_BYTES: u128 = 12;
/// How much of a user-supplied string a reason echoes.
const PREVIEW_CHARS: usize = 64;

fn fail(code: ErrorCode, reason: impl Into<String>) -> MilvusError {
    MilvusError::new(code, reason)
}

/// A user string for a reason: Debug-quoted (shows blanks and control
/// characters) and cut after `PREVIEW_CHARS` characters.
fn preview(s: &str) -> String {
    match s.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

/// Milvus `TrimStringBlank`: strips spaces, tabs, CR and LF at both ends.
pub fn trim_blanks(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Collection name: non-empty, at most 255 bytes, first character `_` or an
/// ASCII letter, the rest ASCII letters, digits or `_`. Code 9.
pub fn collection_name(name: &str) -> MilvusResult<()> {
    let code = ErrorCode::IllegalCollectionName;
    if name.is_empty() {
        return Err(fail(code, "Collection name should not be empty."));
    }
    let invalid = |why: String| {
        fail(
            code,
            format!("Invalid collection name: {}. {why}", preview(name)),
        )
    };
    if name.len() > MAX_NAME_LENGTH {
        return Err(invalid(format!(
            "The length of a collection name must not exceed {MAX_NAME_LENGTH} bytes; it is {}.",
            name.len()
        )));
    }
    let mut chars = name.chars();
    if let Some(first) = chars.next() {
        if first != '_' && !first.is_ascii_alphabetic() {
            return Err(invalid(format!(
                "The first character of a collection name must be an underscore or a letter, not {first:?}."
            )));
        }
    }
    if let Some((pos, bad)) = name
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c != '_' && !c.is_ascii_alphanumeric())
    {
        return Err(invalid(format!(
            "Collection name can only contain numbers, letters, and underscores; found {bad:?} at byte {pos}."
        )));
    }
    Ok(())
}

/// A partition tag as given by a client: trimmed of blanks, then non-empty
/// and at most 255 bytes; any other character is allowed. Returns the trimmed
/// tag (the form stored in `Tables.partition_tag`). Code 1, because Milvus
/// does not map SERVER_INVALID_PARTITION_TAG to a wire code.
pub fn partition_tag(tag: &str) -> MilvusResult<String> {
    let code = ErrorCode::UnexpectedError;
    let trimmed = trim_blanks(tag);
    if trimmed.is_empty() {
        return Err(fail(
            code,
            format!(
                "Invalid partition tag: {}. Partition tag should not be empty (blanks at both ends are ignored).",
                preview(tag)
            ),
        ));
    }
    if trimmed.len() > MAX_NAME_LENGTH {
        return Err(fail(
            code,
            format!(
                "Invalid partition tag: {}. Partition tag exceeds max length ({MAX_NAME_LENGTH} bytes); it is {}.",
                preview(trimmed),
                trimmed.len()
            ),
        ));
    }
    Ok(trimmed.to_string())
}

/// The tag of a partition about to be created: a valid tag that is not the
/// reserved `_default`. Milvus compares the untrimmed tag with `_default`;
/// this also refuses `" _default "`, which Milvus would store as `_default`.
pub fn new_partition_tag(tag: &str) -> MilvusResult<String> {
    let trimmed = partition_tag(tag)?;
    if trimmed == DEFAULT_PARTITION_TAG {
        return Err(fail(
            ErrorCode::UnexpectedError,
            "'_default' is the built-in partition tag of every collection; choose another tag.",
        ));
    }
    Ok(trimmed)
}

/// Room for one more partition when the collection already has `existing`
/// (not counting `_default`). Code 1 (SERVER_UNSUPPORTED_ERROR).
pub fn partition_capacity(existing: usize) -> MilvusResult<()> {
    if existing >= MAX_PARTITIONS {
        return Err(fail(
            ErrorCode::UnexpectedError,
            format!(
                "The number of partitions exceeds the upper limit ({MAX_PARTITIONS}); the collection already has {existing}. Drop a partition first."
            ),
        ));
    }
    Ok(())
}

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
fn integer_param(params: &Value, name: &str) -> MilvusResult<Option<i128>> {
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
fn required_in_range(params: &Value, name: &str, min: i64, max: i64) -> MilvusResult<i64> {
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
fn optional_in_range(params: &Value, name: &str, min: i64, max: i64) -> MilvusResult<Option<i64>> {
    match integer_param(params, name)? {
        None => Ok(None),
        Some(v) if v < i128::from(min) || v > i128::from(max) => {
            Err(out_of_range(name, v, min, max))
        }
        // In range, hence within i64.
        Some(v) => Ok(Some(v as i64)),
    }
}

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

/// `row_id_array` is empty or has one id per vector. Code 12.
pub fn user_ids(ids: &[i64], n_vectors: usize) -> MilvusResult<()> {
    if !ids.is_empty() && ids.len() != n_vectors {
        return Err(fail(
            ErrorCode::IllegalVectorId,
            format!(
                "The size of vector ID array must be equal to the size of the vector: got {} ids for {n_vectors} vectors.",
                ids.len()
            ),
        ));
    }
    Ok(())
}

/// The id-mode rule of a collection's `flag`: once an insert used user ids
/// every insert must, once one used auto ids none may. Returns the flag to
/// store after this insert. Code 12.
pub fn id_mode(flag: i64, has_user_ids: bool) -> MilvusResult<i64> {
    if flag & FLAG_USER_IDS != 0 && !has_user_ids {
        return Err(fail(
            ErrorCode::IllegalVectorId,
            "Entities IDs are user-defined. Please provide IDs for all entities of the collection.",
        ));
    }
    if flag & FLAG_AUTO_IDS != 0 && has_user_ids {
        return Err(fail(
            ErrorCode::IllegalVectorId,
            "Entities IDs are auto-generated. All vectors of this collection must use auto-generated IDs; send no ids.",
        ));
    }
    Ok(flag
        | if has_user_ids {
            FLAG_USER_IDS
        } else {
            FLAG_AUTO_IDS
        })
}

/// GetVectorsByID: 1..=1000 ids. Code 5.
pub fn get_by_id_count(n: usize) -> MilvusResult<()> {
    if n == 0 {
        return Err(fail(
            ErrorCode::IllegalArgument,
            "No vector id specified: id_array is empty.",
        ));
    }
    if n > MAX_GET_BY_ID {
        return Err(fail(
            ErrorCode::IllegalArgument,
            format!("Input id array size cannot exceed {MAX_GET_BY_ID}; got {n} ids."),
        ));
    }
    Ok(())
}

/// SearchByID: the id list must not be empty. Code 5.
pub fn search_by_id_count(n: usize) -> MilvusResult<()> {
    if n == 0 {
        return Err(fail(
            ErrorCode::IllegalArgument,
            "No vector id specified: id_array is empty.",
        ));
    }
    Ok(())
}

/// SearchInFiles file ids: decimal `TableFiles.id` strings (surrounding
/// blanks ignored), returned parsed and without duplicates, in order.
/// Milvus parses them with `stoul`, ignoring trailing garbage and wrapping
/// negatives; here anything but digits is refused (code 1, the
/// code Milvus gives for unparsable ids). An empty list is code 5 (Milvus
/// would silently search the whole collection instead); more than 65536
/// ids is code 1.
pub fn file_ids(ids: &[String]) -> MilvusResult<Vec<i64>> {
    if ids.is_empty() {
        return Err(fail(
            ErrorCode::IllegalArgument,
            "file_id_array is empty: SearchInFiles needs at least one file id (a TableFiles.id).",
        ));
    }
    if ids.len() > MAX_SEARCH_FILES {
        return Err(fail(
            ErrorCode::UnexpectedError,
            format!("Too many file ids: {}; one SearchInFiles may search at most {MAX_SEARCH_FILES} files.", ids.len()),
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        let text = trim_blanks(id);
        let value = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<i64>().ok()
        } else {
            None
        };
        let Some(value) = value else {
            return Err(fail(
                ErrorCode::UnexpectedError,
                format!(
                    "Invalid file id {}: file ids are TableFiles.id values, non-negative decimal integers.",
                    preview(id)
                ),
            ));
        };
        if seen.insert(value) {
            parsed.push(value);
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    use serde_json::json;

    fn code_of<T: std::fmt::Debug>(r: MilvusResult<T>) -> ErrorCode {
        r.expect_err("expected an error").code
    }

    fn reason_of<T: std::fmt::Debug>(r: MilvusResult<T>) -> String {
        r.expect_err("expected an error").reason
    }

    fn kv(key: &str, value: &str) -> KeyValuePair {
        KeyValuePair {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    fn float_record(values: &[f32]) -> RowRecord {
        RowRecord {
            float_data: values.to_vec(),
            binary_data: Default::default(),
        }
    }

    fn binary_record(bytes: &[u8]) -> RowRecord {
        RowRecord {
            float_data: Vec::new(),
            binary_data: bytes.to_vec().into(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn collection_name_accepts_valid_names() {
        for name in ["a", "_", "_abc", "Abc_123", "x".repeat(255).as_str()] {
            assert_eq!(collection_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn collection_name_rejects_with_code_9() {
        let too_long = "x".repeat(256);
        for name in [
            "",
            too_long.as_str(),
            "1abc",
            "-abc",
            "ab-c",
            "ab c",
            "abç",
            "é",
        ] {
            assert_eq!(
                code_of(collection_name(name)),
                ErrorCode::IllegalCollectionName,
                "{name}"
            );
        }
        assert!(reason_of(collection_name("ab-c")).contains("'-'"));
        assert!(reason_of(collection_name(&too_long)).contains("256"));
    }

    #[test]
    fn partition_tag_trims_and_bounds_length() {
        assert_eq!(partition_tag(" abc ").as_deref(), Ok("abc"));
        assert_eq!(partition_tag("\t a b \r\n").as_deref(), Ok("a b"));
        assert_eq!(partition_tag("2020-01/*?").as_deref(), Ok("2020-01/*?"));
        assert_eq!(partition_tag("a").as_deref(), Ok("a"));
        let max = "t".repeat(255);
        assert_eq!(partition_tag(&format!("  {max}  ")), Ok(max.clone()));
        for bad in ["", "   ", "\t\n", &"t".repeat(256)] {
            assert_eq!(
                code_of(partition_tag(bad)),
                ErrorCode::UnexpectedError,
                "{bad:?}"
            );
        }
        // The reason shows a long tag only in part.
        assert!(reason_of(partition_tag(&"t".repeat(1000))).len() < 300);
    }

    #[test]
    fn new_partition_tag_rejects_default() {
        assert_eq!(new_partition_tag(" p1 ").as_deref(), Ok("p1"));
        assert_eq!(new_partition_tag("_default_x").as_deref(), Ok("_default_x"));
        for bad in ["_default", " _default ", ""] {
            assert_eq!(
                code_of(new_partition_tag(bad)),
                ErrorCode::UnexpectedError,
                "{bad:?}"
            );
        }
        assert!(reason_of(new_partition_tag("_default")).contains("built-in"));
    }

    #[test]
    fn partition_capacity_limit() {
        assert_eq!(partition_capacity(0), Ok(()));
        assert_eq!(partition_capacity(MAX_PARTITIONS - 1), Ok(()));
        assert_eq!(
            code_of(partition_capacity(MAX_PARTITIONS)),
            ErrorCode::UnexpectedError
        );
    }

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
    fn user_ids_length() {
        assert_eq!(user_ids(&[], 3), Ok(()));
        assert_eq!(user_ids(&[1, 2, 3], 3), Ok(()));
        assert_eq!(user_ids(&[], 0), Ok(()));
        let reason = reason_of(user_ids(&[1, 2], 3));
        assert!(reason.contains("2 ids for 3 vectors"), "{reason}");
        assert_eq!(
            code_of(user_ids(&[1, 2, 3, 4], 3)),
            ErrorCode::IllegalVectorId
        );
    }

    #[test]
    fn id_mode_locks_the_collection() {
        assert_eq!(id_mode(0, false), Ok(FLAG_AUTO_IDS));
        assert_eq!(id_mode(0, true), Ok(FLAG_USER_IDS));
        assert_eq!(id_mode(FLAG_AUTO_IDS, false), Ok(FLAG_AUTO_IDS));
        assert_eq!(id_mode(FLAG_USER_IDS, true), Ok(FLAG_USER_IDS));
        assert_eq!(
            code_of(id_mode(FLAG_AUTO_IDS, true)),
            ErrorCode::IllegalVectorId
        );
        assert_eq!(
            code_of(id_mode(FLAG_USER_IDS, false)),
            ErrorCode::IllegalVectorId
        );
        // Other bits are kept.
        assert_eq!(id_mode(0x10, true), Ok(0x10 | FLAG_USER_IDS));
    }

    #[test]
    fn id_counts() {
        assert_eq!(get_by_id_count(1), Ok(()));
        assert_eq!(get_by_id_count(MAX_GET_BY_ID), Ok(()));
        assert_eq!(code_of(get_by_id_count(0)), ErrorCode::IllegalArgument);
        assert_eq!(
            code_of(get_by_id_count(MAX_GET_BY_ID + 1)),
            ErrorCode::IllegalArgument
        );
        assert_eq!(search_by_id_count(1), Ok(()));
        assert_eq!(code_of(search_by_id_count(0)), ErrorCode::IllegalArgument);
    }

    #[test]
    fn file_ids_parse_and_dedupe() {
        assert_eq!(
            file_ids(&strings(&["1", " 42 ", "0", "42", "9223372036854775807"])),
            Ok(vec![1, 42, 0, i64::MAX])
        );
        assert_eq!(code_of(file_ids(&[])), ErrorCode::IllegalArgument);
        for bad in ["abc", "12abc", "-1", "+1", "", "1.5", "9223372036854775808"] {
            let err = file_ids(&strings(&["1", bad])).expect_err(bad);
            assert_eq!(err.code, ErrorCode::UnexpectedError, "{bad}");
            assert!(err.reason.contains(&format!("{bad:?}")), "{}", err.reason);
        }
        let max: Vec<String> = (0..MAX_SEARCH_FILES).map(|i| i.to_string()).collect();
        assert_eq!(file_ids(&max).map(|v| v.len()), Ok(MAX_SEARCH_FILES));
        let over: Vec<String> = (0..=MAX_SEARCH_FILES).map(|i| i.to_string()).collect();
        assert_eq!(code_of(file_ids(&over)), ErrorCode::UnexpectedError);
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
