//! Search answered with its encoded reply: the read-only nodes' encoded
//! answers are merged straight into the reply's bytes (`merge::merge_encoded`)
//! and sent as they are, instead of being decoded into vectors, merged, and
//! encoded again by the generated server. The request is decoded as the
//! generated server would (the proxy must read it to plan the search); the
//! admission, metrics and deadline layers around it are the same.
//!
//! Over shard groups the generated server keeps serving Search: the groups'
//! merged answers are merged again, on decoded vectors.

use bytes::Bytes;
use prost::Message;

use super::rpc_metrics::ReplyCode;
use super::service::ProxyService;
use crate::status::{code_name, code_of_encoded_reply, Reply};
use crate::wire::{SearchParam, TopKQueryResult};

pub const SEARCH_PATH: &str = "/milvus.grpc.MilvusService/Search";

/// The single-cluster service's searches, answered as bytes.
pub struct RawSearch {
    service: ProxyService,
}

impl RawSearch {
    pub fn new(service: ProxyService) -> Self {
        Self { service }
    }

    /// One encoded `SearchParam` in, the encoded `TopKQueryResult` out,
    /// tagged with its Milvus status code for the per-RPC metrics.
    pub async fn answer(&self, body: Bytes) -> Result<tonic::Response<Bytes>, tonic::Status> {
        // The generated server's answer to bytes that do not decode.
        let p = SearchParam::decode(body).map_err(|e| {
            tonic::Status::internal(format!("failed to decode Protobuf message: {e}"))
        })?;
        let cluster = self.service.cluster();
        let _work = cluster.admit_search(p.query_record_array.len(), p.topk)?;
        let (reply, code) = match cluster.search_encoded(p).await {
            Ok(bytes) => {
                let code = code_of_encoded_reply(&bytes);
                (bytes, code)
            }
            Err(e) => {
                tracing::debug!(code = code_name(e.code as i32), reason = %e.reason, "request failed");
                let reply = TopKQueryResult::from_error(&e).encode_to_vec();
                (Bytes::from(reply), e.code as i32)
            }
        };
        let mut response = tonic::Response::new(reply);
        response.extensions_mut().insert(ReplyCode(code_name(code)));
        Ok(response)
    }
}
