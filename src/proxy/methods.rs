//! gRPC paths of the methods the proxy sends as encoded bytes (inserts
//! forwarded untouched, the search fan-out's pre-encoded `SearchInFiles`),
//! shared by the single-cluster and the shard-group paths.

pub const INSERT_PATH: &str = "/milvus.grpc.MilvusService/Insert";
pub const SEARCH_IN_FILES_PATH: &str = "/milvus.grpc.MilvusService/SearchInFiles";
