//! The proxy's `milvus.grpc.MilvusService`: writes and admin calls go to the
//! writable node unchanged; searches are planned over the topology snapshot,
//! fanned out as `SearchInFiles` to read-only nodes in parallel, and merged.
//! Every failure is a Milvus status; `rpc_metrics` times and counts every call.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tonic::{Request, Response};

use super::meta_from_snapshot;
use super::route::{self, RoutePlan};
use super::rpc_metrics::reply;
use crate::backend::{Backend, Backends};
use crate::merge::{self, TopKHits};
use crate::status::{MilvusError, MilvusResult, Reply};
use crate::telemetry::Metrics;
use crate::topology::{CollectionView, Snapshot, Topology};
use crate::types::MetricType;
use crate::validate;
use crate::wire::milvus_service_server::MilvusService;
use crate::wire::*;

type RpcResult<T> = Result<Response<T>, tonic::Status>;

/// State shared by every request of the proxy.
pub struct ProxyService {
    backends: Arc<Backends>,
    topology: Arc<Topology>,
    metrics: Arc<Metrics>,
    request_timeout: Option<Duration>,
    search_timeout: Option<Duration>,
}

impl ProxyService {
    pub fn new(
        backends: Arc<Backends>,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        request_timeout: Option<Duration>,
        search_timeout: Option<Duration>,
    ) -> Self {
        Self {
            backends,
            topology,
            metrics,
            request_timeout,
            search_timeout,
        }
    }

    /// Sends a call to the writable node, unchanged; never retried.
    async fn to_writer<T, F, Fut>(&self, method: &'static str, f: F) -> MilvusResult<T>
    where
        T: Reply,
        F: FnOnce(crate::backend::Client) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, tonic::Status>>,
    {
        self.backends
            .writable
            .call(method, self.request_timeout, f)
            .await
            .map_err(|e| e.to_milvus())
    }

    /// A metadata read: from the writer, or, when the writer cannot be
    /// reached, answered from the topology snapshot (degraded read-only mode).
    async fn read_meta<T, F, Fut>(
        &self,
        method: &'static str,
        f: F,
        from_snapshot: impl FnOnce(&Snapshot) -> MilvusResult<T>,
    ) -> MilvusResult<T>
    where
        T: Reply,
        F: FnOnce(crate::backend::Client) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, tonic::Status>>,
    {
        match self.to_writer(method, f).await {
            Err(e) if e.code == ErrorCode::ConnectFailed => {
                let snap = self.topology.current();
                if !snap.is_loaded() {
                    return Err(e);
                }
                tracing::warn!(method, reason = %e.reason, "writable node unreachable; answering from the metadata snapshot");
                from_snapshot(&snap)
            }
            other => other,
        }
    }

    /// A data read any node can answer from the shared storage: the writer
    /// first; if it cannot be reached, each healthy read-only node in turn.
    async fn read_any<T, F, Fut>(&self, method: &'static str, f: F) -> MilvusResult<T>
    where
        T: Reply,
        F: Fn(crate::backend::Client) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, tonic::Status>>,
    {
        let mut last = match self.to_writer(method, &f).await {
            Err(e) if e.code == ErrorCode::ConnectFailed => e,
            other => return other,
        };
        for node in self.backends.readonly.iter().filter(|b| b.is_healthy()) {
            match node.call(method, self.request_timeout, &f).await {
                Ok(reply) => {
                    tracing::warn!(method, backend = %node.addr, "writable node unreachable; read served by a read-only node");
                    return Ok(reply);
                }
                Err(e) => last = e.to_milvus(),
            }
        }
        Err(last)
    }

    /// The collection from a snapshot that reflects this proxy's own writes;
    /// re-read once from the database when missing (it may have been created
    /// through another proxy replica).
    async fn view(&self, name: &str) -> MilvusResult<Arc<CollectionView>> {
        let snap = self.topology.fresh().await?;
        if let Some(v) = snap.collection(name) {
            return Ok(v.clone());
        }
        let snap = self.topology.reload().await?;
        snap.collection(name)
            .cloned()
            .ok_or_else(|| MilvusError::collection_not_exists(name))
    }

    fn healthy(&self) -> impl Fn(&str) -> bool + '_ {
        |addr| self.backends.is_healthy(addr)
    }

    // ---- search -----------------------------------------------------------

    /// Search: plan, fan out, merge. Retries once on a fresh snapshot when a
    /// node reports a file that no longer exists (a merge retired it).
    async fn search_request(&self, p: SearchParam) -> MilvusResult<TopKQueryResult> {
        validate::search_request(
            &p.collection_name,
            &p.partition_tag_array,
            p.query_record_array.len(),
            p.topk,
        )?;
        let params = validate::extra_params(&p.extra_params)?;
        if self.backends.readonly.is_empty() {
            return self.search_on_writer(p).await;
        }
        // The plan applies the tags; SearchInFiles ignores them, so the
        // request fanned out carries none.
        let mut p = p;
        let tags = std::mem::take(&mut p.partition_tag_array);
        let mut attempt = 0;
        loop {
            let view = self.view(&p.collection_name).await?;
            validate::search_params(view.engine, &params, p.topk)?;
            validate::vector_shapes(&p.query_record_array, view.metric, view.root.dimension)?;
            let files = route::select_files(&view, &tags)?;
            if files.is_empty() {
                return Ok(TopKHits::empty().into_wire());
            }
            let plan = route::plan(&self.backends.ring, &files, self.healthy())?;
            match self.fan_out(&plan, &p, view.metric).await {
                Err(e) if attempt == 0 && is_stale_file_error(&e) => {
                    tracing::info!(reason = %e.reason, "search hit a retired file; retrying on a fresh snapshot");
                    self.topology.reload().await?;
                    attempt += 1;
                }
                other => return other.map(TopKHits::into_wire),
            }
        }
    }

    async fn search_on_writer(&self, p: SearchParam) -> MilvusResult<TopKQueryResult> {
        self.to_writer("Search", |mut c| async move { c.search(p).await })
            .await
    }

    /// One `SearchInFiles` per node, in parallel; a node that cannot be
    /// reached has its files moved to the next healthy node on the ring.
    /// `search` goes out as it is (callers have removed partition tags).
    async fn fan_out(
        &self,
        plan: &RoutePlan,
        search: &SearchParam,
        metric: MetricType,
    ) -> MilvusResult<TopKHits> {
        self.metrics
            .observe_fanout(plan.assignments.len(), plan.files);
        let mut pending: Vec<(String, Vec<i64>)> = plan.assignments.clone();
        let mut failed: HashSet<String> = HashSet::new();
        let mut parts: Vec<TopKHits> = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let calls = pending
                .iter()
                .map(|(node, ids)| self.search_node(node, ids, search));
            let results = join_all(calls).await;
            let mut retry: Vec<i64> = Vec::new();
            for ((node, ids), result) in pending.iter().zip(results) {
                match result {
                    Ok(hits) => parts.push(hits),
                    Err(NodeFailure::Milvus(e)) => return Err(e),
                    Err(NodeFailure::Unreachable(e)) => {
                        tracing::warn!(backend = %node, error = %e.reason, "read-only node failed; moving its files");
                        failed.insert(node.clone());
                        retry.extend(ids);
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            let rows: Vec<(i64, i64)> = retry.iter().map(|id| (*id, 0)).collect();
            let healthy = |addr: &str| !failed.contains(addr) && self.backends.is_healthy(addr);
            pending = route::plan(&self.backends.ring, &rows, healthy)
                .map_err(|e| {
                    MilvusError::new(
                        ErrorCode::ConnectFailed,
                        format!(
                            "search failed: {} (unreachable: {})",
                            e.reason,
                            sorted(&failed)
                        ),
                    )
                })?
                .assignments;
        }
        let started = Instant::now();
        let merged = merge::merge(parts, search.topk as usize, metric.order());
        self.metrics.observe_merge(started.elapsed().as_secs_f64());
        merged
    }

    async fn search_node(
        &self,
        node: &str,
        ids: &[i64],
        search: &SearchParam,
    ) -> Result<TopKHits, NodeFailure> {
        let backend: &Arc<Backend> = self.backends.get(node).ok_or_else(|| {
            NodeFailure::Milvus(MilvusError::unexpected(format!("unknown backend {node}")))
        })?;
        let request = SearchInFilesParam {
            file_id_array: ids.iter().map(i64::to_string).collect(),
            search_param: Some(search.clone()),
        };
        let reply = backend
            .call("SearchInFiles", self.search_timeout, |mut c| async move {
                c.search_in_files(request).await
            })
            .await
            .map_err(|e| NodeFailure::Unreachable(e.to_milvus()))?;
        if let Some(s) = reply.status.as_ref().filter(|s| s.error_code != 0) {
            let code = ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnexpectedError);
            return Err(NodeFailure::Milvus(MilvusError::new(
                code,
                format!("{} (from read-only node {node})", s.reason),
            )));
        }
        let hits = TopKHits::from_wire(&reply).map_err(NodeFailure::Milvus)?;
        let nq = search.query_record_array.len();
        if hits.nq != 0 && hits.nq != nq {
            return Err(NodeFailure::Milvus(MilvusError::new(
                ErrorCode::IllegalSearchResult,
                format!(
                    "read-only node {node} answered {} result rows for {nq} queries",
                    hits.nq
                ),
            )));
        }
        Ok(hits)
    }

    async fn search_in_files_request(
        &self,
        p: SearchInFilesParam,
    ) -> MilvusResult<TopKQueryResult> {
        let mut s = p
            .search_param
            .ok_or_else(|| MilvusError::illegal_argument("SearchInFiles needs a search_param"))?;
        // Tags are not checked here: SearchInFiles ignores them.
        validate::search_request(&s.collection_name, &[], s.query_record_array.len(), s.topk)?;
        let params = validate::extra_params(&s.extra_params)?;
        let ids = validate::file_ids(&p.file_id_array)?;
        if self.backends.readonly.is_empty() {
            let request = SearchInFilesParam {
                file_id_array: p.file_id_array,
                search_param: Some(s),
            };
            return self
                .to_writer("SearchInFiles", |mut c| async move {
                    c.search_in_files(request).await
                })
                .await;
        }
        let view = self.view(&s.collection_name).await?;
        validate::search_params(view.engine, &params, s.topk)?;
        validate::vector_shapes(&s.query_record_array, view.metric, view.root.dimension)?;
        let wanted: HashSet<i64> = ids.into_iter().collect();
        let files: Vec<(i64, i64)> = view
            .files
            .iter()
            .filter(|f| wanted.contains(&f.id))
            .map(|f| (f.id, f.row_count))
            .collect();
        if files.is_empty() {
            return Err(MilvusError::unexpected(format!(
                "Invalid file id: none of {:?} is a searchable file of collection {}",
                p.file_id_array, s.collection_name
            )));
        }
        let plan = route::plan(&self.backends.ring, &files, self.healthy())?;
        s.partition_tag_array.clear();
        self.fan_out(&plan, &s, view.metric)
            .await
            .map(TopKHits::into_wire)
    }

    /// SearchByID: the vectors come from the writable node, the search is fanned out.
    async fn search_by_id_request(&self, p: SearchByIdParam) -> MilvusResult<TopKQueryResult> {
        validate::collection_name(&p.collection_name)?;
        if p.id_array.is_empty() {
            return Err(MilvusError::illegal_argument("No vector id specified"));
        }
        validate::topk(p.topk)?;
        validate::result_size(p.id_array.len(), p.topk)?;
        let view = self.view(&p.collection_name).await?;
        let mut records: Vec<Option<RowRecord>> = Vec::with_capacity(p.id_array.len());
        for chunk in p.id_array.chunks(validate::MAX_GET_BY_ID) {
            let request = VectorsIdentity {
                collection_name: p.collection_name.clone(),
                id_array: chunk.to_vec(),
                partition_tag: String::new(),
            };
            let reply = self
                .read_any("GetVectorsByID", |mut c| {
                    let request = request.clone();
                    async move { c.get_vectors_by_id(request).await }
                })
                .await?;
            if let Some(s) = reply.status.as_ref().filter(|s| s.error_code != 0) {
                let code = ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnexpectedError);
                return Err(MilvusError::new(code, s.reason.clone()));
            }
            for r in reply.vectors_data {
                let present = !r.float_data.is_empty() || !r.binary_data.is_empty();
                records.push(present.then_some(r));
            }
        }
        let present: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].is_some())
            .collect();
        if present.is_empty() {
            return Ok(TopKHits::empty().into_wire());
        }
        let search = SearchParam {
            collection_name: p.collection_name.clone(),
            partition_tag_array: p.partition_tag_array.clone(),
            query_record_array: present.iter().filter_map(|i| records[*i].take()).collect(),
            topk: p.topk,
            extra_params: p.extra_params.clone(),
        };
        let reply = self.search_request(search).await?;
        if reply.status.as_ref().is_some_and(|s| s.error_code != 0) || reply.row_num == 0 {
            return Ok(reply);
        }
        let hits = TopKHits::from_wire(&reply)?;
        Ok(hits
            .spread_rows(&present, p.id_array.len(), view.metric.order())
            .into_wire())
    }

    /// Sends `f` to every read-only node and the writer; the first failure wins.
    async fn broadcast<F, Fut>(&self, method: &'static str, f: F) -> MilvusResult<Status>
    where
        F: Fn(crate::backend::Client) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<Response<Status>, tonic::Status>>,
    {
        let mut targets: Vec<&Arc<Backend>> = vec![&self.backends.writable];
        for b in &self.backends.readonly {
            if !targets.iter().any(|t| t.addr == b.addr) {
                targets.push(b);
            }
        }
        let calls = targets
            .iter()
            .map(|b| b.call(method, self.request_timeout, f.clone()));
        for result in join_all(calls).await {
            let status = result.map_err(|e| e.to_milvus())?;
            if status.error_code != 0 {
                return Ok(status);
            }
        }
        Ok(Status::default())
    }

    async fn reload_segments_request(&self, p: ReLoadSegmentsParam) -> MilvusResult<Status> {
        validate::collection_name(&p.collection_name)?;
        let ids = validate::file_ids(&p.segment_id_array)?;
        if self.backends.readonly.is_empty() {
            return self
                .to_writer("ReloadSegments", |mut c| async move {
                    c.reload_segments(p).await
                })
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
                    c.reload_segments(request).await
                })
                .await
                .map_err(|e| e.to_milvus())?;
            if status.error_code != 0 {
                return Ok(status);
            }
        }
        Ok(Status::default())
    }

    async fn cmd_request(&self, cmd: String) -> MilvusResult<StringReply> {
        let text = cmd.trim();
        if text == "status" {
            return Ok(StringReply {
                status: None,
                string_reply: "OK".into(),
            });
        }
        if let Some(name) = text.strip_prefix("route") {
            let name = name.trim();
            if name.is_empty() {
                return Err(MilvusError::illegal_argument("usage: route <collection>"));
            }
            return Ok(StringReply {
                status: None,
                string_reply: self.explain_route(name).await?,
            });
        }
        if text == "version" {
            // The writer's version; if it is down, any read node's, so
            // clients can still connect and search.
            let mut last_err = None;
            for b in std::iter::once(&self.backends.writable).chain(&self.backends.readonly) {
                let request = Command { cmd: cmd.clone() };
                match b
                    .call("Cmd", self.request_timeout, |mut c| async move {
                        c.cmd(request).await
                    })
                    .await
                {
                    Ok(reply) => return Ok(reply),
                    Err(e) => last_err = Some(e.to_milvus()),
                }
            }
            return Err(
                last_err.unwrap_or_else(|| MilvusError::unexpected("no backend configured"))
            );
        }
        self.to_writer("Cmd", |mut c| async move { c.cmd(Command { cmd }).await })
            .await
    }

    /// `Cmd("route <collection>")`: which files a full search reads and which node gets each.
    async fn explain_route(&self, name: &str) -> MilvusResult<String> {
        validate::collection_name(name)?;
        let view = self.view(name).await?;
        let files = route::select_files(&view, &[])?;
        let snapshot_age_ms = self.topology.age().map(|a| a.as_millis() as u64);
        let (target, plan) = if self.backends.readonly.is_empty() {
            ("writable", RoutePlan::default())
        } else {
            (
                "readonly",
                route::plan(&self.backends.ring, &files, self.healthy())?,
            )
        };
        let nodes: serde_json::Map<String, serde_json::Value> = plan
            .assignments
            .iter()
            .map(|(n, ids)| (n.clone(), serde_json::json!(ids)))
            .collect();
        Ok(serde_json::json!({
            "collection": name,
            "metric": view.metric.name(),
            "dimension": view.root.dimension,
            "partitions": view.partitions.iter().map(|p| &p.partition_tag).collect::<Vec<_>>(),
            "files": files.len(),
            "rows": files.iter().map(|(_, r)| r).sum::<i64>(),
            "search_target": target,
            "nodes": nodes,
            "unhealthy": self.backends.readonly.iter().filter(|b| !b.is_healthy()).map(|b| &b.addr).collect::<Vec<_>>(),
            "snapshot_age_ms": snapshot_age_ms,
        })
        .to_string())
    }
}

/// Why one node's part of a search failed.
enum NodeFailure {
    /// The node answered with a Milvus error: the search fails with it.
    Milvus(MilvusError),
    /// The node could not be reached: its files may move elsewhere.
    Unreachable(MilvusError),
}

fn sorted(set: &HashSet<String>) -> String {
    let mut v: Vec<&String> = set.iter().collect();
    v.sort();
    v.into_iter().cloned().collect::<Vec<_>>().join(", ")
}

/// A node could not find a file the snapshot named: merged and cleaned up meanwhile.
fn is_stale_file_error(e: &MilvusError) -> bool {
    e.code == ErrorCode::FileNotFound || e.reason.contains("Invalid file id")
}

/// Forwards one RPC to the writable node, optionally invalidating the topology after.
macro_rules! forward {
    ($self:ident, $req:ident, $method:literal, $call:ident) => {{
        let request = $req.into_inner();
        let result = $self
            .to_writer($method, |mut c| async move { c.$call(request).await })
            .await;
        reply(result)
    }};
    ($self:ident, $req:ident, $method:literal, $call:ident, invalidate) => {{
        let reply = forward!($self, $req, $method, $call);
        // The write may have changed collections or files: the next search
        // through this proxy must see it (the reply is not sent yet).
        $self.topology.invalidate();
        reply
    }};
}

/// A data read: the writer, or a read-only node when the writer is
/// unreachable (`ProxyService::read_any`).
macro_rules! read_any {
    ($self:ident, $req:ident, $method:literal, $call:ident) => {{
        let request = $req.into_inner();
        let result = $self
            .read_any($method, |mut c| {
                let request = request.clone();
                async move { c.$call(request).await }
            })
            .await;
        reply(result)
    }};
}

/// A metadata read: forwarded to the writer, answered from the snapshot
/// when the writer is unreachable (`ProxyService::read_meta`).
macro_rules! read_meta {
    ($self:ident, $req:ident, $method:literal, $call:ident, $from_snapshot:expr) => {{
        let request = $req.into_inner();
        let forwarded = request.clone();
        let result = $self
            .read_meta(
                $method,
                |mut c| async move { c.$call(forwarded).await },
                |snap: &Snapshot| ($from_snapshot)(snap, &request),
            )
            .await;
        reply(result)
    }};
}

#[tonic::async_trait]
impl MilvusService for ProxyService {
    async fn create_collection(&self, req: Request<CollectionSchema>) -> RpcResult<Status> {
        forward!(self, req, "CreateCollection", create_collection, invalidate)
    }

    async fn has_collection(&self, req: Request<CollectionName>) -> RpcResult<BoolReply> {
        read_meta!(
            self,
            req,
            "HasCollection",
            has_collection,
            |s, r: &CollectionName| { meta_from_snapshot::has_collection(s, &r.collection_name) }
        )
    }

    async fn describe_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionSchema> {
        read_meta!(
            self,
            req,
            "DescribeCollection",
            describe_collection,
            |s, r: &CollectionName| {
                meta_from_snapshot::describe_collection(s, &r.collection_name)
            }
        )
    }

    async fn count_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionRowCount> {
        read_meta!(
            self,
            req,
            "CountCollection",
            count_collection,
            |s, r: &CollectionName| { meta_from_snapshot::count_collection(s, &r.collection_name) }
        )
    }

    async fn show_collections(&self, req: Request<Command>) -> RpcResult<CollectionNameList> {
        read_meta!(
            self,
            req,
            "ShowCollections",
            show_collections,
            |s, _r: &Command| { Ok(meta_from_snapshot::show_collections(s)) }
        )
    }

    async fn show_collection_info(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionInfo> {
        read_any!(self, req, "ShowCollectionInfo", show_collection_info)
    }

    async fn drop_collection(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        forward!(self, req, "DropCollection", drop_collection, invalidate)
    }

    async fn create_index(&self, req: Request<IndexParam>) -> RpcResult<Status> {
        forward!(self, req, "CreateIndex", create_index, invalidate)
    }

    async fn describe_index(&self, req: Request<CollectionName>) -> RpcResult<IndexParam> {
        read_meta!(
            self,
            req,
            "DescribeIndex",
            describe_index,
            |s, r: &CollectionName| { meta_from_snapshot::describe_index(s, &r.collection_name) }
        )
    }

    async fn drop_index(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        forward!(self, req, "DropIndex", drop_index, invalidate)
    }

    async fn create_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        forward!(self, req, "CreatePartition", create_partition, invalidate)
    }

    async fn has_partition(&self, req: Request<PartitionParam>) -> RpcResult<BoolReply> {
        read_meta!(
            self,
            req,
            "HasPartition",
            has_partition,
            |s, r: &PartitionParam| {
                meta_from_snapshot::has_partition(s, &r.collection_name, &r.tag)
            }
        )
    }

    async fn show_partitions(&self, req: Request<CollectionName>) -> RpcResult<PartitionList> {
        read_meta!(
            self,
            req,
            "ShowPartitions",
            show_partitions,
            |s, r: &CollectionName| { meta_from_snapshot::show_partitions(s, &r.collection_name) }
        )
    }

    async fn drop_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        forward!(self, req, "DropPartition", drop_partition, invalidate)
    }

    /// The served path for Insert is `raw_insert::RawInsert`, which forwards
    /// the bytes without decoding them; this decoded form serves direct users
    /// of `ProxyService`.
    async fn insert(&self, req: Request<InsertParam>) -> RpcResult<VectorIds> {
        forward!(self, req, "Insert", insert)
    }

    async fn get_vectors_by_id(&self, req: Request<VectorsIdentity>) -> RpcResult<VectorsData> {
        read_any!(self, req, "GetVectorsByID", get_vectors_by_id)
    }

    async fn get_vector_i_ds(&self, req: Request<GetVectorIDsParam>) -> RpcResult<VectorIds> {
        read_any!(self, req, "GetVectorIDs", get_vector_i_ds)
    }

    async fn search(&self, req: Request<SearchParam>) -> RpcResult<TopKQueryResult> {
        let result = self.search_request(req.into_inner()).await;
        reply(result)
    }

    async fn search_by_id(&self, req: Request<SearchByIdParam>) -> RpcResult<TopKQueryResult> {
        let result = self.search_by_id_request(req.into_inner()).await;
        reply(result)
    }

    async fn search_in_files(
        &self,
        req: Request<SearchInFilesParam>,
    ) -> RpcResult<TopKQueryResult> {
        let result = self.search_in_files_request(req.into_inner()).await;
        reply(result)
    }

    async fn cmd(&self, req: Request<Command>) -> RpcResult<StringReply> {
        let result = self.cmd_request(req.into_inner().cmd).await;
        reply(result)
    }

    async fn delete_by_id(&self, req: Request<DeleteByIdParam>) -> RpcResult<Status> {
        forward!(self, req, "DeleteByID", delete_by_id, invalidate)
    }

    async fn preload_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        let result = self
            .broadcast("PreloadCollection", move |mut c| {
                let p = p.clone();
                async move { c.preload_collection(p).await }
            })
            .await;
        reply(result)
    }

    async fn release_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        let result = self
            .broadcast("ReleaseCollection", move |mut c| {
                let p = p.clone();
                async move { c.release_collection(p).await }
            })
            .await;
        reply(result)
    }

    async fn reload_segments(&self, req: Request<ReLoadSegmentsParam>) -> RpcResult<Status> {
        let result = self.reload_segments_request(req.into_inner()).await;
        reply(result)
    }

    async fn flush(&self, req: Request<FlushParam>) -> RpcResult<Status> {
        forward!(self, req, "Flush", flush, invalidate)
    }

    async fn compact(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        forward!(self, req, "Compact", compact, invalidate)
    }

    crate::hybrid_rpcs_unimplemented!();
}
