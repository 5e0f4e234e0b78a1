//! mishards: a sharding proxy for Milvus 1.x clusters, plus a small
//! Milvus-1.x-compatible node so a whole cluster runs on one machine.
//!
//! Data flows one way through the proxy:
//! request -> route plan (`topology` + `ring`) -> fan-out (`backend`) -> `merge` -> reply.
//! The `node` module is an independent server; it shares only the wire types,
//! the metadata schema (`meta`), validation and the merge with the proxy.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
pub mod backend;
pub mod bench;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod discovery;
pub mod error_text;
pub mod grpc;
pub mod http_api;
pub mod hybrid;
pub mod merge;
pub mod meta;
pub mod node;
pub mod partition;
pub mod proxy;
pub mod ring;
pub mod shard;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod trace;
pub mod types;
pub mod validate;

/// Generated Milvus 1.1 wire types and the `MilvusService` client and server.
pub mod wire {
    tonic::include_proto!("milvus.grpc");

    /// The compiled descriptor set of `proto/*.proto`, for the wire-schema test.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/milvus_descriptor.bin"));
}
