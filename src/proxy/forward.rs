//! Calls the proxy passes on without planning a search: writes and admin
//! calls go to the writable node unchanged and are never retried (a write
//! then invalidates the topology snapshot); metadata reads fall back to the
//! snapshot and data reads to the read-only nodes when the writer cannot be
//! reached; cache calls go to every node, ReloadSegments to each segment's node.

use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;
use tonic::Response;

use super::cluster::Cluster;
use crate::backend::{Backend, Client};
use crate::status::{MilvusResult, Reply};
use crate::topology::Snapshot;
use crate::validate;
use crate::wire::{ErrorCode, FlushParam, ReLoadSegmentsParam, Status};

/// `|client, request| client.$rpc(request)`: the backend call of one RPC,
/// as the forwarding methods below take it, carrying the time left.
macro_rules! client_call {
    ($rpc:ident) => {
        |mut client: $crate::backend::Client, request| async move {
            client.$rpc($crate::deadline::outgoing(request)).await
        }
    };
}
pub(super) use client_call;

impl Cluster {
    /// Sends one call to the writable node, unchanged; never retried.
    pub async fn to_writer<Req, T, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> MilvusResult<T>
    where
        T: Reply,
        F: FnOnce(Client, Req) -> Fut,
        Fut: Future<Output = Result<Response<T>, tonic::Status>>,
    {
        self.backends
            .writable
            .call(method, self.request_timeout, |client| call(client, request))
            .await
            .map_err(|e| e.to_milvus())
    }

    /// A write: sent to the writable node like [`Cluster::to_writer`]; then,
    /// whatever the outcome, the topology snapshot is invalidated.
    pub async fn write<Req, T, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> MilvusResult<T>
    where
        T: Reply,
        F: FnOnce(Client, Req) -> Fut,
        Fut: Future<Output = Result<Response<T>, tonic::Status>>,
    {
        let result = self.to_writer(method, request, call).await;
        // The write may have changed collections or files: the next search
        // through this proxy must see it (the reply is not sent yet).
        self.topology.invalidate();
        result
    }

    /// Flush, a write; once the writer has flushed, the files it made are
    /// warmed on their read-only nodes before the answer (`warmup`, at most
    /// `topology.warm_wait`), so the first search after it pays no load.
    pub async fn flush(&self, request: FlushParam) -> MilvusResult<Status> {
        let result = self.write("Flush", request, client_call!(flush)).await;
        let flushed = result.as_ref().is_ok_and(|s| s.error_code == 0);
        if flushed && !self.backends.readonly.is_empty() {
            if let Ok(snap) = self.topology.fresh().await {
                self.warmup.settled(snap.sequence()).await;
            }
        }
        result
    }

    /// A metadata read: from the writer, or, when the writer cannot be
    /// reached, answered from the topology snapshot (degraded read-only mode).
    pub async fn read_meta<Req, T, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
        from_snapshot: impl FnOnce(&Snapshot, &Req) -> MilvusResult<T>,
    ) -> MilvusResult<T>
    where
        Req: Clone,
        T: Reply,
        F: FnOnce(Client, Req) -> Fut,
        Fut: Future<Output = Result<Response<T>, tonic::Status>>,
    {
        match self.to_writer(method, request.clone(), call).await {
            Err(e) if e.code == ErrorCode::ConnectFailed => {
                let snap = self.topology.current();
                if !snap.is_loaded() {
                    return Err(e);
                }
                tracing::warn!(method, reason = %e.reason, "writable node unreachable; answering from the metadata snapshot");
                from_snapshot(&snap, &request)
            }
            other => other,
        }
    }

    /// A data read any node can answer from the shared storage: the writer
    /// first; if it cannot be reached, each healthy read-only node in turn.
    pub async fn read_any<Req, T, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> MilvusResult<T>
    where
        Req: Clone,
        T: Reply,
        F: Fn(Client, Req) -> Fut,
        Fut: Future<Output = Result<Response<T>, tonic::Status>>,
    {
        let mut last = match self.to_writer(method, request.clone(), &call).await {
            Err(e) if e.code == ErrorCode::ConnectFailed => e,
            other => return other,
        };
        for node in self.backends.readonly.iter().filter(|b| b.is_healthy()) {
            let attempt = |client| call(client, request.clone());
            match node.call(method, self.request_timeout, attempt).await {
                Ok(reply) => {
                    tracing::warn!(method, backend = %node.addr, "writable node unreachable; read served by a read-only node");
                    return Ok(reply);
                }
                Err(e) => last = e.to_milvus(),
            }
        }
        Err(last)
    }

    /// Sends the call to every read-only node and the writer, in parallel;
    /// the first failure wins.
    pub async fn broadcast<Req, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> MilvusResult<Status>
    where
        Req: Clone,
        F: Fn(Client, Req) -> Fut,
        Fut: Future<Output = Result<Response<Status>, tonic::Status>>,
    {
        let mut targets: Vec<&Arc<Backend>> = vec![&self.backends.writable];
        for b in &self.backends.readonly {
            if !targets.iter().any(|t| t.addr == b.addr) {
                targets.push(b);
            }
        }
        let calls = targets.iter().map(|b| {
            b.call(method, self.request_timeout, |client| {
                call(client, request.clone())
            })
        });
        for result in join_all(calls).await {
            let status = result.map_err(|e| e.to_milvus())?;
            if status.error_code != 0 {
                return Ok(status);
            }
        }
        Ok(Status::default())
    }

    /// ReloadSegments: each segment to the read-only node that searches it
    /// (the whole call to the writer when there are none); the first failure wins.
    pub async fn reload_segments(&self, p: ReLoadSegmentsParam) -> MilvusResult<Status> {
        validate::collection_name(&p.collection_name)?;
        let ids = validate::file_ids(&p.segment_id_array)?;
        if self.backends.readonly.is_empty() {
            return self
                .to_writer("ReloadSegments", p, client_call!(reload_segments))
                .await;
        }
        let placement = crate::ring::place(&self.backends.ring, &ids, |_| true);
        for (node, ids) in placement {
            let Some(backend) = self.backends.get(&node) else {
                continue;
            };
            let request = ReLoadSegmentsParam {
                collection_name: p.collection_name.clone(),
                segment_id_array: ids.iter().map(i64::to_string).collect(),
            };
            let status = backend
                .call("ReloadSegments", self.request_timeout, |mut c| async move {
                    c.reload_segments(crate::deadline::outgoing(request)).await
                })
                .await
                .map_err(|e| e.to_milvus())?;
            if status.error_code != 0 {
                return Ok(status);
            }
        }
        Ok(Status::default())
    }
}
