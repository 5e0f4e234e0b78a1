//! Zero-decode forwarding of Insert: the largest messages a client sends
//! (a 100k x 128 insert is ~51 MB) go to the writable node as the bytes that
//! arrived, instead of being decoded into vectors and encoded again. A small
//! router sits in front of the generated server and takes only that path.
//!
//! Over shard groups the grouped service takes the bytes: a pinned
//! collection's insert goes as they are to its group's writer, a spread
//! one is split by row owner without decoding the vectors
//! (`shard::encoded_insert`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};

use super::groups::GroupedService;
use super::methods::INSERT_PATH;
use super::raw_search::{RawSearch, SEARCH_PATH};
use super::rpc_metrics::ReplyCode;
use crate::backend::live::LiveBackends;
use crate::backend::Backend;
use crate::grpc::RawCodec;
use crate::status::{code_name, Reply};
use crate::wire::VectorIds;

/// Forwards encoded `InsertParam` messages to the writable node.
pub struct RawInsert {
    writer: Writer,
    timeout: Option<Duration>,
    /// Search answered as bytes too (single cluster: `raw_search`).
    search: Option<RawSearch>,
}

/// The writable node: fixed, whichever the live configuration names, or
/// over shard groups the writer of the collection's group.
enum Writer {
    Fixed(Arc<Backend>),
    Live(Arc<LiveBackends>),
    Grouped(GroupedService),
}

impl RawInsert {
    pub fn new(writer: Arc<Backend>, timeout: Option<Duration>) -> Self {
        Self {
            writer: Writer::Fixed(writer),
            timeout,
            search: None,
        }
    }

    /// Forwards to the writable node in effect when each insert arrives.
    pub fn live(live: Arc<LiveBackends>, timeout: Option<Duration>) -> Self {
        Self {
            writer: Writer::Live(live),
            timeout,
            search: None,
        }
    }

    /// Over shard groups: `service` routes each encoded insert.
    pub fn grouped(service: GroupedService, timeout: Option<Duration>) -> Self {
        Self {
            writer: Writer::Grouped(service),
            timeout,
            search: None,
        }
    }

    /// Also answers Search with its encoded reply (`raw_search`).
    pub fn with_search(mut self, search: RawSearch) -> Self {
        self.search = Some(search);
        self
    }

    /// The node that takes `body` as it is, or the grouped service that routes it.
    fn writer(&self) -> Result<Arc<Backend>, &GroupedService> {
        match &self.writer {
            Writer::Fixed(b) => Ok(b.clone()),
            Writer::Live(live) => Ok(live.load().writable.clone()),
            Writer::Grouped(service) => Err(service),
        }
    }

    /// Forwards one insert; the reply is the writer's `VectorIds`, or a
    /// `VectorIds` carrying the error when the writer cannot be reached,
    /// tagged with its Milvus status code for the per-RPC metrics.
    /// Never retried: an insert is not idempotent.
    async fn forward(&self, body: Bytes) -> tonic::Response<Bytes> {
        let reply = match self.writer() {
            Ok(writer) => {
                let result = writer
                    .call_raw("Insert", INSERT_PATH, body, self.timeout, status_code)
                    .await;
                match result {
                    Ok(bytes) => bytes,
                    Err(e) => Bytes::from(VectorIds::from_error(&e.to_milvus()).encode_to_vec()),
                }
            }
            Err(service) => service.insert_encoded(body).await,
        };
        let code = code_name(status_code(&reply));
        let mut response = tonic::Response::new(reply);
        response.extensions_mut().insert(ReplyCode(code));
        response
    }
}

/// The Milvus status code in an encoded `VectorIds` (its ids are skipped).
fn status_code(reply: &Bytes) -> i32 {
    crate::status::code_of_encoded_reply(reply)
}

struct InsertCall(Arc<RawInsert>);

struct SearchCall(Arc<RawInsert>);

impl tonic::server::UnaryService<Bytes> for SearchCall {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let raw = self.0.clone();
        Box::pin(async move {
            match &raw.search {
                Some(search) => search.answer(request.into_inner()).await,
                None => Err(tonic::Status::internal("no raw search path")),
            }
        })
    }
}

impl tonic::server::UnaryService<Bytes> for InsertCall {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let insert = self.0.clone();
        Box::pin(async move { Ok(insert.forward(request.into_inner()).await) })
    }
}

/// Routes Insert (and, when the [`RawInsert`] has a [`RawSearch`], Search)
/// to the raw paths and every other call to `inner` (the generated
/// `MilvusServiceServer`).
#[derive(Clone)]
pub struct InsertPassthrough<S> {
    inner: S,
    insert: Arc<RawInsert>,
    max_message_size: usize,
}

impl<S> InsertPassthrough<S> {
    pub fn new(inner: S, insert: RawInsert, max_message_size: usize) -> Self {
        Self {
            inner,
            insert: Arc::new(insert),
            max_message_size,
        }
    }
}

impl<S, B> Service<http::Request<B>> for InsertPassthrough<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let search = path == SEARCH_PATH && self.insert.search.is_some();
        if path != INSERT_PATH && !search {
            return Box::pin(self.inner.call(req));
        }
        let raw = self.insert.clone();
        let max = self.max_message_size;
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(if search {
                grpc.unary(SearchCall(raw), req).await
            } else {
                grpc.unary(InsertCall(raw), req).await
            })
        })
    }
}

impl<S> tonic::server::NamedService for InsertPassthrough<S> {
    const NAME: &'static str = "milvus.grpc.MilvusService";
}
