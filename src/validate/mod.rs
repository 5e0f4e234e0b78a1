//! Pure validation of Milvus 1.1 requests: names, limits, index and search
//! parameters, vector shapes, and id rules (partition-tag matching is in `partition`). Every check
//! fails with the `MilvusError` (wire code and an actionable reason) that
//! Milvus 1.1.1+ gives (`core/src/utils/ValidationUtil.cpp` and the request
//! classes). Shared by the node and the proxy; no I/O. This file holds the
//! Milvus limits and the failure helpers; each subject has its own file,
//! re-exported here.

use crate::status::MilvusError;
use crate::wire::ErrorCode;

mod collection;
mod ids;
mod index_params;
mod names;
mod params;
mod search;
#[cfg(test)]
mod test_support;
mod vectors;

pub use collection::{dimension, index_file_size, metric_type};
pub use ids::{file_ids, get_by_id_count, id_mode, search_by_id_count, user_ids};
pub use index_params::index_params;
pub use names::{
    collection_name, new_partition_tag, partition_capacity, partition_tag, trim_blanks,
};
pub use params::{extra_params, int_param};
pub use search::{result_size, search_metric, search_params, search_request, topk};
pub use vectors::{insert_payload, vector_shapes, vectors, VectorData};

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
/// Range of `nlist` (IVF build): 1..=this.
pub const MAX_NLIST: i64 = 65536;
/// Range of `nprobe` (IVF search): 1..=this.
pub const MAX_NPROBE: i64 = 65536;
/// Upper bound of HNSW `ef` at search time.
pub const MAX_HNSW_EF: i64 = 32768;

/// How much of a user-supplied string a reason echoes.
const PREVIEW_CHARS: usize = 64;

/// A failed check: its wire code and the reason the client reads.
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
