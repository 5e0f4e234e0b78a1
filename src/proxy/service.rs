//! The proxy's `milvus.grpc.MilvusService`, one line per RPC saying how the
//! proxy serves it: forwarded to the writable node (`forward`: as a write,
//! a metadata read, a data read, or to every node), planned, fanned out and
//! merged (`search`), or answered by the proxy (`cmd`). Every outcome is a
//! Milvus status in the reply (`reply`), which `rpc_metrics` counts.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response};

use super::cluster::{Cluster, Protection};
use super::forward::client_call;
use super::meta_from_snapshot;
use super::rpc_metrics::reply;
use super::warmup::Warmup;
use crate::backend::live::LiveBackends;
use crate::backend::Backends;
use crate::telemetry::Metrics;
use crate::topology::Topology;
use crate::wire::milvus_service_server::MilvusService;
use crate::wire::*;

type RpcResult<T> = Result<Response<T>, tonic::Status>;

/// `via!(self.how("Method", req, rpc))`: the RPC served by `Cluster::how`,
/// whose backend call is `client.rpc(request)`, answered with `reply`. A
/// `read_meta` falls back to the answer of the same name in `meta_from_snapshot`.
macro_rules! via {
    ($self:ident.read_meta($method:literal, $req:ident, $rpc:ident)) => {
        reply(
            $self
                .cluster()
                .read_meta(
                    $method,
                    $req.into_inner(),
                    client_call!($rpc),
                    meta_from_snapshot::$rpc,
                )
                .await,
        )
    };
    ($self:ident.$how:ident($method:literal, $req:ident, $rpc:ident)) => {
        reply(
            $self
                .cluster()
                .$how($method, $req.into_inner(), client_call!($rpc))
                .await,
        )
    };
}

/// The proxy's request handlers.
pub struct ProxyService {
    cluster: Cluster,
    /// The backends in effect, replaced by live reconfiguration.
    live: Arc<LiveBackends>,
}

impl ProxyService {
    /// Handlers over a fixed set of backends.
    pub fn new(
        backends: Arc<Backends>,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        request_timeout: Option<Duration>,
        search_timeout: Option<Duration>,
        protection: Protection,
    ) -> Self {
        let live = LiveBackends::from_shared(backends, metrics.clone());
        Self::with_live(
            live,
            topology,
            metrics,
            request_timeout,
            search_timeout,
            protection,
        )
    }

    /// Handlers over backends that live reconfiguration may replace.
    pub fn with_live(
        live: Arc<LiveBackends>,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        request_timeout: Option<Duration>,
        search_timeout: Option<Duration>,
        protection: Protection,
    ) -> Self {
        let cluster = Cluster::new(
            live.load(),
            topology,
            metrics,
            request_timeout,
            search_timeout,
            protection,
        );
        Self { cluster, live }
    }

    /// Flushes wait (a bounded time) for `warmup` to warm the files they made.
    pub fn with_warmup(mut self, warmup: Arc<Warmup>) -> Self {
        self.cluster.warmup = warmup;
        self
    }

    /// The cluster one request works on: the backends in effect now, kept
    /// until the request ends (so a reload never pulls a node from under it).
    pub(super) fn cluster(&self) -> Cluster {
        let mut cluster = self.cluster.clone();
        cluster.backends = self.live.load();
        cluster
    }
}

#[tonic::async_trait]
impl MilvusService for ProxyService {
    async fn create_collection(&self, req: Request<CollectionSchema>) -> RpcResult<Status> {
        via!(self.write("CreateCollection", req, create_collection))
    }

    async fn has_collection(&self, req: Request<CollectionName>) -> RpcResult<BoolReply> {
        via!(self.read_meta("HasCollection", req, has_collection))
    }

    async fn describe_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionSchema> {
        via!(self.read_meta("DescribeCollection", req, describe_collection))
    }

    async fn count_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionRowCount> {
        via!(self.read_meta("CountCollection", req, count_collection))
    }

    async fn show_collections(&self, req: Request<Command>) -> RpcResult<CollectionNameList> {
        via!(self.read_meta("ShowCollections", req, show_collections))
    }

    async fn show_collection_info(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionInfo> {
        via!(self.read_any("ShowCollectionInfo", req, show_collection_info))
    }

    async fn drop_collection(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        via!(self.write("DropCollection", req, drop_collection))
    }

    async fn create_index(&self, req: Request<IndexParam>) -> RpcResult<Status> {
        via!(self.write("CreateIndex", req, create_index))
    }

    async fn describe_index(&self, req: Request<CollectionName>) -> RpcResult<IndexParam> {
        via!(self.read_meta("DescribeIndex", req, describe_index))
    }

    async fn drop_index(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        via!(self.write("DropIndex", req, drop_index))
    }

    async fn create_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        via!(self.write("CreatePartition", req, create_partition))
    }

    async fn has_partition(&self, req: Request<PartitionParam>) -> RpcResult<BoolReply> {
        via!(self.read_meta("HasPartition", req, has_partition))
    }

    async fn show_partitions(&self, req: Request<CollectionName>) -> RpcResult<PartitionList> {
        via!(self.read_meta("ShowPartitions", req, show_partitions))
    }

    async fn drop_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        via!(self.write("DropPartition", req, drop_partition))
    }

    /// The served path for Insert is `raw_insert::RawInsert`, which forwards
    /// the bytes without decoding them; this decoded form serves direct users
    /// of `ProxyService`. Like the raw path, it leaves the snapshot alone.
    async fn insert(&self, req: Request<InsertParam>) -> RpcResult<VectorIds> {
        via!(self.to_writer("Insert", req, insert))
    }

    async fn get_vectors_by_id(&self, req: Request<VectorsIdentity>) -> RpcResult<VectorsData> {
        via!(self.read_any("GetVectorsByID", req, get_vectors_by_id))
    }

    async fn get_vector_i_ds(&self, req: Request<GetVectorIDsParam>) -> RpcResult<VectorIds> {
        via!(self.read_any("GetVectorIDs", req, get_vector_i_ds))
    }

    async fn search(&self, req: Request<SearchParam>) -> RpcResult<TopKQueryResult> {
        let p = req.into_inner();
        let cluster = self.cluster();
        let _work = cluster.admit_search(p.query_record_array.len(), p.topk)?;
        reply(cluster.search(p).await)
    }

    async fn search_by_id(&self, req: Request<SearchByIdParam>) -> RpcResult<TopKQueryResult> {
        let p = req.into_inner();
        let cluster = self.cluster();
        let _work = cluster.admit_search(p.id_array.len(), p.topk)?;
        reply(cluster.search_by_id(p).await)
    }

    async fn search_in_files(
        &self,
        req: Request<SearchInFilesParam>,
    ) -> RpcResult<TopKQueryResult> {
        let p = req.into_inner();
        let (nq, topk) = p
            .search_param
            .as_ref()
            .map_or((0, 0), |s| (s.query_record_array.len(), s.topk));
        let cluster = self.cluster();
        let _work = cluster.admit_search(nq, topk)?;
        reply(cluster.search_in_files(p).await)
    }

    async fn cmd(&self, req: Request<Command>) -> RpcResult<StringReply> {
        reply(self.cluster().cmd(req.into_inner().cmd).await)
    }

    async fn delete_by_id(&self, req: Request<DeleteByIdParam>) -> RpcResult<Status> {
        via!(self.write("DeleteByID", req, delete_by_id))
    }

    async fn preload_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        via!(self.broadcast("PreloadCollection", req, preload_collection))
    }

    async fn release_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        via!(self.broadcast("ReleaseCollection", req, release_collection))
    }

    async fn reload_segments(&self, req: Request<ReLoadSegmentsParam>) -> RpcResult<Status> {
        reply(self.cluster().reload_segments(req.into_inner()).await)
    }

    async fn flush(&self, req: Request<FlushParam>) -> RpcResult<Status> {
        reply(self.cluster().flush(req.into_inner()).await)
    }

    async fn compact(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        via!(self.write("Compact", req, compact))
    }

    crate::hybrid_rpcs_unimplemented!();
}
