//! The floor of `mishards bench`: a minimal forwarder that makes the same
//! HTTP/2 exchanges per search as the proxy (one `Search` in, one
//! `SearchInFiles` out per node, the reply back) and nothing else: the file
//! ids per node are fixed when it starts (no routing, no metadata), the
//! first node's reply is the answer (no merge), no validation, metrics,
//! tracing, deadlines or retries. The proxy-only and cost-growth scenarios
//! run it as a child process in front of the same stub nodes as the proxy,
//! so the proxy's CPU per search is read against what the transport alone
//! costs (`mishards bench-floor`, hidden from the help).
//!
//! Written on hyper by hand, without tonic: a floor must not carry the
//! layers it is the baseline for. It keeps the proxy's HTTP/2 settings
//! (windows, TCP_NODELAY) so only the work on top differs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use futures::stream;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, TE};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::grpc::{CONNECTION_WINDOW, STREAM_WINDOW};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ReplyBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// The gRPC message header: a compression flag and a big-endian length.
const GRPC_HEADER: usize = 5;
const IN_FILES_PATH: &str = "/milvus.grpc.MilvusService/SearchInFiles";

/// One node of the plan: its connection and the file-id fields every call repeats.
struct Node {
    uri: Uri,
    sender: SendRequest<Full<Bytes>>,
    /// Field 1 (`file_id_array`) of `SearchInFilesParam`, encoded once.
    file_ids: Bytes,
}

/// The plan of a `route <collection>` answer of the proxy (`nodes`: address
/// -> file ids), as (address, ids) pairs in a stable order.
pub fn plan_from_route(route: &Value) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let nodes = route
        .get("nodes")
        .and_then(Value::as_object)
        .context("the plan has no \"nodes\" object (address -> file ids)")?;
    let mut plan = Vec::new();
    for (addr, ids) in nodes {
        let ids = ids
            .as_array()
            .with_context(|| format!("node {addr}: file ids are not an array"))?
            .iter()
            .map(|id| match id {
                Value::Number(n) => Ok(n.to_string()),
                Value::String(s) => Ok(s.clone()),
                other => bail!("node {addr}: file id {other} is neither a number nor a string"),
            })
            .collect::<anyhow::Result<Vec<String>>>()?;
        plan.push((addr.clone(), ids));
    }
    if plan.is_empty() {
        bail!("the plan names no node");
    }
    plan.sort();
    Ok(plan)
}

/// `file_id_array` (field 1, repeated string) of `SearchInFilesParam`.
pub fn encode_file_ids(ids: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    for id in ids {
        out.put_u8(0x0a);
        prost::encoding::encode_varint(id.len() as u64, &mut out);
        out.put_slice(id.as_bytes());
    }
    out.freeze()
}

/// The gRPC-framed `SearchInFilesParam` of `file_ids` (already encoded) and
/// the client's encoded `SearchParam` (field 2).
pub fn in_files_message(file_ids: &[u8], search_param: &[u8]) -> Bytes {
    let payload_len = file_ids.len()
        + 1
        + prost::encoding::encoded_len_varint(search_param.len() as u64)
        + search_param.len();
    let mut out = BytesMut::with_capacity(GRPC_HEADER + payload_len);
    out.put_u8(0);
    out.put_u32(payload_len as u32);
    out.put_slice(file_ids);
    out.put_u8(0x12);
    prost::encoding::encode_varint(search_param.len() as u64, &mut out);
    out.put_slice(search_param);
    out.freeze()
}

/// The message of a body holding exactly one uncompressed gRPC message.
pub fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let header = body.get(..GRPC_HEADER)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (header[0] == 0 && body.len() == GRPC_HEADER + len).then(|| &body[GRPC_HEADER..])
}

/// Reads the plan (a `route` answer as JSON) from `plan`, connects to its
/// nodes and serves `Search` on `listen` until killed.
pub async fn run(listen: SocketAddr, plan: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(plan)
        .with_context(|| format!("cannot read the plan {}", plan.display()))?;
    let route: Value = serde_json::from_str(&text)
        .with_context(|| format!("the plan {} is not JSON", plan.display()))?;
    let mut nodes = Vec::new();
    for (addr, ids) in plan_from_route(&route)? {
        nodes.push(Node {
            uri: format!("http://{addr}{IN_FILES_PATH}")
                .parse()
                .with_context(|| format!("node address {addr}"))?,
            sender: connect(&addr).await?,
            file_ids: encode_file_ids(&ids),
        });
    }
    let nodes: Arc<[Node]> = nodes.into();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "mishards bench floor listening on {}",
        listener.local_addr()?
    );
    let mut server = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    server
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    loop {
        let (tcp, _) = listener.accept().await.context("accept")?;
        let _ = tcp.set_nodelay(true);
        let (nodes, server) = (nodes.clone(), server.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| forward(nodes.clone(), request));
            let _ = server.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to node {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(TokioIo::new(tcp))
        .await
        .with_context(|| format!("HTTP/2 handshake with node {addr}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One `Search`: its `SearchParam` sent to every node with that node's
/// files, all at once; the first node's reply message goes back.
async fn forward(
    nodes: Arc<[Node]>,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    let outcome = async {
        let body = request.into_body().collect().await?.to_bytes();
        let param = grpc_message(&body).ok_or("the request is not one uncompressed message")?;
        let calls = nodes.iter().map(|node| node.call(param));
        let replies = futures::future::try_join_all(calls).await?;
        replies.into_iter().next().ok_or(BoxError::from("no node"))
    }
    .await;
    Ok(match outcome {
        Ok(reply) => reply_with(vec![Frame::data(reply)], "0", None),
        Err(e) => reply_with(Vec::new(), "13", Some(&e.to_string())),
    })
}

impl Node {
    /// `SearchInFiles` of this node's files; the reply's framed message.
    async fn call(&self, search_param: &[u8]) -> Result<Bytes, BoxError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/grpc")
            .header(TE, "trailers")
            .body(Full::new(in_files_message(&self.file_ids, search_param)))?;
        let response = self.sender.clone().send_request(request).await?;
        let collected = response.into_body().collect().await?;
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|s| s.to_str().ok())
            .map(str::to_string);
        match status.as_deref() {
            Some("0") => Ok(collected.to_bytes()),
            other => Err(format!("node answered grpc-status {other:?}").into()),
        }
    }
}

/// A gRPC response of `frames` ending with `grpc-status` trailers.
fn reply_with(
    mut frames: Vec<Frame<Bytes>>,
    status: &'static str,
    message: Option<&str>,
) -> Response<ReplyBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    if let Some(m) = message.and_then(|m| HeaderValue::from_str(m).ok()) {
        trailers.insert("grpc-message", m);
    }
    frames.push(Frame::trailers(trailers));
    let body = StreamBody::new(stream::iter(frames.into_iter().map(Ok).collect::<Vec<_>>()));
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message;
    use serde_json::json;

    use super::*;
    use crate::wire::{KeyValuePair, SearchInFilesParam, SearchParam};

    #[test]
    fn the_forwarded_message_is_what_prost_encodes() {
        let ids = vec!["7".to_string(), "12345".to_string()];
        let param = SearchParam {
            collection_name: "c".into(),
            topk: 10,
            extra_params: vec![KeyValuePair {
                key: "params".into(),
                value: "{\"nprobe\": 8}".into(),
            }],
            ..Default::default()
        };
        let framed = in_files_message(&encode_file_ids(&ids), &param.encode_to_vec());
        let message = grpc_message(&framed).unwrap();
        let expected = SearchInFilesParam {
            file_id_array: ids,
            search_param: Some(param),
        };
        assert_eq!(message, expected.encode_to_vec().as_slice());
        assert_eq!(
            SearchInFilesParam::decode(message).unwrap(),
            expected,
            "decodes back"
        );
    }

    #[test]
    fn only_one_whole_uncompressed_message_is_accepted() {
        assert_eq!(grpc_message(&[0, 0, 0, 0, 2, 8, 1]), Some(&[8, 1][..]));
        assert_eq!(grpc_message(&[0, 0, 0, 0, 0]), Some(&[][..]));
        assert_eq!(grpc_message(&[1, 0, 0, 0, 1, 8]), None, "compressed");
        assert_eq!(grpc_message(&[0, 0, 0, 0, 3, 8, 1]), None, "short");
        assert_eq!(grpc_message(&[0, 0, 0, 0, 1, 8, 1]), None, "trailing bytes");
        assert_eq!(grpc_message(&[0, 0]), None);
    }

    #[test]
    fn the_plan_is_read_from_a_route_answer() {
        let route = json!({"nodes": {"b:2": [3], "a:1": [1, "2"]}, "files": 3});
        assert_eq!(
            plan_from_route(&route).unwrap(),
            vec![
                ("a:1".to_string(), vec!["1".to_string(), "2".to_string()]),
                ("b:2".to_string(), vec!["3".to_string()]),
            ]
        );
        assert!(plan_from_route(&json!({"nodes": {}})).is_err());
        assert!(plan_from_route(&json!({"nodes": {"a:1": 5}})).is_err());
        assert!(plan_from_route(&json!({})).is_err());
    }
}
