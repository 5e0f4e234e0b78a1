//! Access control as one tower layer in front of the proxy's gRPC routes
//! (`[access]`, all off by default so pymilvus works unchanged): an
//! allowlist of client networks, a read-only switch and a deny list of RPCs.
//!
//! A refused RPC is answered like every Milvus error: gRPC OK with
//! `PERMISSION_DENIED` in the reply's status (every Milvus reply carries its
//! `Status` at field 1, or is one), which pymilvus surfaces as a failed
//! status. A client outside the allowed networks gets gRPC
//! `PERMISSION_DENIED` for any call, before its request is read.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use ipnet::IpNet;
use prost::Message;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::transport::server::TcpConnectInfo;

use crate::grpc::RawCodec;
use crate::telemetry::Metrics;
use crate::wire::{ErrorCode, Status};

/// The gRPC path prefix of every Milvus RPC.
const SERVICE_PREFIX: &str = "/milvus.grpc.MilvusService/";

/// Every RPC of `milvus.grpc.MilvusService` (checked against the compiled
/// descriptor in the tests), so a misspelled deny entry is a config error.
pub const RPC_NAMES: &[&str] = &[
    "CreateCollection",
    "HasCollection",
    "DescribeCollection",
    "CountCollection",
    "ShowCollections",
    "ShowCollectionInfo",
    "DropCollection",
    "CreateIndex",
    "DescribeIndex",
    "DropIndex",
    "CreatePartition",
    "HasPartition",
    "ShowPartitions",
    "DropPartition",
    "Insert",
    "GetVectorsByID",
    "GetVectorIDs",
    "Search",
    "SearchByID",
    "SearchInFiles",
    "Cmd",
    "DeleteByID",
    "PreloadCollection",
    "ReleaseCollection",
    "ReloadSegments",
    "Flush",
    "Compact",
    "CreateHybridCollection",
    "HasHybridCollection",
    "DropHybridCollection",
    "DescribeHybridCollection",
    "CountHybridCollection",
    "ShowHybridCollections",
    "ShowHybridCollectionInfo",
    "PreloadHybridCollection",
    "InsertEntity",
    "HybridSearch",
    "HybridSearchInSegments",
    "GetEntityByID",
    "GetEntityIDs",
    "DeleteEntitiesByID",
];

/// The RPCs that change data, schema or indexes: refused by a read-only proxy.
/// (Preload/Release only move data in or out of a node's memory.)
pub const WRITE_RPCS: [&str; 16] = [
    "CreateCollection",
    "DropCollection",
    "CreateIndex",
    "DropIndex",
    "CreatePartition",
    "DropPartition",
    "Insert",
    "DeleteByID",
    "ReloadSegments",
    "Flush",
    "Compact",
    "CreateHybridCollection",
    "DropHybridCollection",
    "InsertEntity",
    "DeleteEntitiesByID",
    "PreloadHybridCollection",
];

/// Whether `name` is an RPC of the Milvus service.
pub fn is_rpc_name(name: &str) -> bool {
    RPC_NAMES.contains(&name)
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The client's address is in no allowed network.
    Network(IpAddr),
    /// A write RPC on a read-only proxy.
    ReadOnly(String),
    /// An RPC on the deny list.
    Denied(String),
}

impl Denial {
    /// The label of `mishards_access_denied_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            Denial::Network(_) => "network",
            Denial::ReadOnly(_) => "read_only",
            Denial::Denied(_) => "denied_rpc",
        }
    }

    /// The reason the client reads.
    pub fn reason(&self) -> String {
        match self {
            Denial::Network(ip) => {
                format!("client address {ip} is not in this proxy's allowed networks (access.allow_networks)")
            }
            Denial::ReadOnly(rpc) => {
                format!("{rpc} is refused: this proxy is read-only (access.read_only)")
            }
            Denial::Denied(rpc) => {
                format!("{rpc} is refused by this proxy's deny list (access.deny)")
            }
        }
    }
}

/// What is allowed, from `[access]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    read_only: bool,
    denied: BTreeSet<String>,
    /// Empty: every client.
    networks: Vec<IpNet>,
}

impl AccessPolicy {
    /// The policy of an `[access]` section (`read_only`, `deny`,
    /// `allow_networks`); the error names the bad entry.
    pub fn new(
        read_only: bool,
        deny: &[String],
        allow_networks: &[String],
    ) -> Result<AccessPolicy, String> {
        let networks = allow_networks
            .iter()
            .map(|text| parse_network(text))
            .collect::<Result<Vec<_>, _>>()?;
        for rpc in deny {
            if !is_rpc_name(rpc) {
                return Err(format!(
                    "access.deny: {rpc:?} is not a Milvus RPC name (e.g. \"DropCollection\")"
                ));
            }
        }
        Ok(AccessPolicy {
            read_only,
            denied: deny.iter().cloned().collect(),
            networks,
        })
    }

    /// Whether the policy lets everything through (the default).
    pub fn is_open(&self) -> bool {
        !self.read_only && self.denied.is_empty() && self.networks.is_empty()
    }

    /// Checks the client's address (when known) and then the RPC.
    pub fn check(&self, rpc: &str, peer: Option<IpAddr>) -> Result<(), Denial> {
        if !self.networks.is_empty() {
            // An unknown peer (no TCP info) is refused when networks are set.
            let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let ip = canonical(ip);
            if !self.networks.iter().any(|n| n.contains(&ip)) {
                return Err(Denial::Network(ip));
            }
        }
        if self.denied.contains(rpc) {
            return Err(Denial::Denied(rpc.to_string()));
        }
        if self.read_only && WRITE_RPCS.contains(&rpc) {
            return Err(Denial::ReadOnly(rpc.to_string()));
        }
        Ok(())
    }
}

/// `10.0.0.0/8`, or a single address (`10.0.0.7`, `::1`) meaning just it.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("access.allow_networks: {text:?} is not a network (e.g. \"10.0.0.0/8\", \"127.0.0.1\", \"::1/128\")")
        })
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4
/// client) compared as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The bytes of a reply to `rpc` that carries only `status`: a bare `Status`
/// for the RPCs that return one, else a message with it at field 1.
pub fn status_only_reply(status: Status) -> Bytes {
    #[derive(Clone, PartialEq, Message)]
    struct StatusOnly {
        #[prost(message, optional, tag = "1")]
        status: Option<Status>,
    }
    // Replies that are a bare Status have error_code at 1 and reason at 2;
    // the rest wrap it at 1. The caller picks via `returns_bare_status`.
    Bytes::from(
        StatusOnly {
            status: Some(status),
        }
        .encode_to_vec(),
    )
}

/// RPCs whose reply is `Status` itself.
fn returns_bare_status(rpc: &str) -> bool {
    const BARE: [&str; 16] = [
        "CreateCollection",
        "DropCollection",
        "CreateIndex",
        "DropIndex",
        "CreatePartition",
        "DropPartition",
        "DeleteByID",
        "PreloadCollection",
        "ReleaseCollection",
        "ReloadSegments",
        "Flush",
        "Compact",
        "CreateHybridCollection",
        "DropHybridCollection",
        "PreloadHybridCollection",
        "DeleteEntitiesByID",
    ];
    BARE.contains(&rpc)
}

/// The encoded PERMISSION_DENIED reply to `rpc`.
pub fn denied_reply(rpc: &str, denial: &Denial) -> Bytes {
    let status = Status {
        error_code: ErrorCode::PermissionDenied as i32,
        reason: denial.reason(),
    };
    if returns_bare_status(rpc) {
        Bytes::from(status.encode_to_vec())
    } else {
        status_only_reply(status)
    }
}

/// The access-control service around the proxy's routes.
#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
    metrics: Arc<Metrics>,
}

impl<S> Access<S> {
    pub fn new(inner: S, policy: AccessPolicy, metrics: Arc<Metrics>) -> Self {
        Access {
            inner,
            policy: Arc::new(policy),
            metrics,
        }
    }
}

/// The client's IP from the connection info tonic attaches.
fn peer_ip<B>(req: &http::Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .map(|a: SocketAddr| a.ip())
}

struct DeniedCall(Bytes);

impl tonic::server::UnaryService<Bytes> for DeniedCall {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, tonic::Status>;

    fn call(&mut self, _request: tonic::Request<Bytes>) -> Self::Future {
        let reply = self.0.clone();
        Box::pin(async move { Ok(tonic::Response::new(reply)) })
    }
}

impl<S, B> Service<http::Request<B>> for Access<S>
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
        if self.policy.is_open() {
            return Box::pin(self.inner.call(req));
        }
        let rpc = req
            .uri()
            .path()
            .strip_prefix(SERVICE_PREFIX)
            .unwrap_or("")
            .to_string();
        let denial = match self.policy.check(&rpc, peer_ip(&req)) {
            Ok(()) => return Box::pin(self.inner.call(req)),
            Err(denial) => denial,
        };
        self.metrics.count_access_denied(denial.label());
        // Debug: a client looping on refused calls must not flood the log
        // (mishards_access_denied_total counts them).
        tracing::debug!(rpc = %rpc, reason = %denial.reason(), "request refused by access control");
        if let Denial::Network(_) = denial {
            let status = tonic::Status::permission_denied(denial.reason());
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let reply = denied_reply(&rpc, &denial);
        Box::pin(async move {
            // The request body is read (and dropped) by tonic; the reply is
            // a plain gRPC OK carrying the Milvus status.
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            Ok(grpc.unary(DeniedCall(reply), req).await)
        })
    }
}

impl<S> tonic::server::NamedService for Access<S> {
    const NAME: &'static str = "milvus.grpc.MilvusService";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BoolReply, TopKQueryResult};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn policy(read_only: bool, deny: &[&str], nets: &[&str]) -> AccessPolicy {
        AccessPolicy::new(read_only, &strings(deny), &strings(nets)).unwrap()
    }

    #[test]
    fn rpc_names_match_the_compiled_service() {
        use prost_types::FileDescriptorSet;
        let set = FileDescriptorSet::decode(crate::wire::FILE_DESCRIPTOR_SET).unwrap();
        let methods: BTreeSet<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == "MilvusService")
            .flat_map(|s| &s.method)
            .map(|m| m.name().to_string())
            .collect();
        let ours: BTreeSet<String> = RPC_NAMES.iter().map(|s| s.to_string()).collect();
        assert_eq!(ours, methods);
        for rpc in WRITE_RPCS {
            assert!(is_rpc_name(rpc), "{rpc}");
        }
        // Bare-Status replies are exactly the RPCs returning Status.
        let bare: BTreeSet<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .filter(|m| m.output_type().ends_with(".Status"))
            .map(|m| m.name().to_string())
            .collect();
        for rpc in &methods {
            assert_eq!(returns_bare_status(rpc), bare.contains(rpc), "{rpc}");
        }
    }

    #[test]
    fn open_by_default() {
        let p = AccessPolicy::new(false, &[], &[]).unwrap();
        assert!(p.is_open());
        assert_eq!(p.check("DropCollection", None), Ok(()));
    }

    #[test]
    fn read_only_and_deny_list() {
        let p = policy(true, &["Search"], &[]);
        assert_eq!(
            p.check("Insert", None),
            Err(Denial::ReadOnly("Insert".into()))
        );
        assert_eq!(p.check("HasCollection", None), Ok(()));
        assert_eq!(
            p.check("Search", None),
            Err(Denial::Denied("Search".into()))
        );
        let p = policy(false, &["DropCollection", "DeleteByID"], &[]);
        assert!(p.check("DropCollection", None).is_err());
        assert_eq!(p.check("Insert", None), Ok(()));
    }

    #[test]
    fn networks() {
        let p = policy(false, &[], &["10.0.0.0/8", "::1", "127.0.0.1"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(p.check("Search", ip("10.2.3.4")), Ok(()));
        assert_eq!(p.check("Search", ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check("Search", ip("::ffff:10.0.0.1")), Ok(()));
        assert_eq!(p.check("Search", ip("::1")), Ok(()));
        assert!(p.check("Search", ip("127.0.0.2")).is_err());
        assert!(p.check("Search", ip("192.168.1.1")).is_err());
        assert!(p.check("Search", None).is_err());
    }

    #[test]
    fn bad_entries_are_config_errors() {
        let bad = |deny: &[&str], nets: &[&str]| {
            AccessPolicy::new(false, &strings(deny), &strings(nets)).unwrap_err()
        };
        assert!(bad(&["dropcollection"], &[]).contains("not a Milvus RPC"));
        assert!(bad(&[], &["10.0.0.0/33"]).contains("not a network"));
        assert!(bad(&[], &["example.com"]).contains("not a network"));
    }

    #[test]
    fn denied_replies_decode_as_each_reply_type() {
        let denial = Denial::Denied("DropCollection".into());
        let status = Status::decode(denied_reply("DropCollection", &denial)).unwrap();
        assert_eq!(status.error_code, ErrorCode::PermissionDenied as i32);
        assert!(status.reason.contains("deny list"));
        let denial = Denial::Denied("Search".into());
        let reply = TopKQueryResult::decode(denied_reply("Search", &denial)).unwrap();
        assert_eq!(
            reply.status.unwrap().error_code,
            ErrorCode::PermissionDenied as i32
        );
        let reply = BoolReply::decode(denied_reply("HasCollection", &denial)).unwrap();
        assert_eq!(
            reply.status.unwrap().error_code,
            ErrorCode::PermissionDenied as i32
        );
    }
}
