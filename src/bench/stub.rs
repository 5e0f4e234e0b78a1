//! A stub read-only node, in the bench's own process: it answers
//! `SearchInFiles` at once with a canned valid result (nq rows of topk ids
//! and distances, sorted for the metric) and `Cmd` (the proxy's health
//! probe) with an empty success; every other RPC is UNIMPLEMENTED. With it
//! the proxy's own cost is measured without any node's scan.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response};

use crate::types::MetricType;
use crate::wire::milvus_service_server::MilvusService;
use crate::wire::*;

type RpcResult<T> = Result<Response<T>, tonic::Status>;

/// Distinct stubs answer distinct ids, as distinct nodes holding distinct files do.
const IDS_PER_STUB: i64 = 1 << 32;

/// A running stub; stops when dropped.
pub struct StubNode {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for StubNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Starts stub number `index` on an ephemeral loopback port; its results are
/// sorted as a `metric` collection's must be.
pub async fn start(index: i64, metric: MetricType) -> anyhow::Result<StubNode> {
    let (listener, addr) = crate::grpc::bind("127.0.0.1:0".parse()?).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let service = StubService { index, metric };
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = crate::grpc::serve(
            listener,
            service,
            crate::grpc::DEFAULT_MAX_MESSAGE_SIZE,
            shutdown,
        )
        .await
        {
            tracing::warn!("stub node {addr} stopped: {e}");
        }
    });
    Ok(StubNode {
        addr,
        stop: Some(stop),
        task,
    })
}

/// The canned reply of stub `index` for `nq` queries of `topk`: ids unique
/// to the stub, distances ascending for L2-like metrics and descending for
/// inner product, as a real node's are.
pub fn canned_result(index: i64, metric: MetricType, nq: usize, topk: usize) -> TopKQueryResult {
    let base = index * IDS_PER_STUB;
    let mut ids = Vec::with_capacity(nq * topk);
    let mut distances = Vec::with_capacity(nq * topk);
    for _ in 0..nq {
        for j in 0..topk {
            ids.push(base + j as i64);
            // Stubs interleave (index as a fraction) so the merge has work to do.
            let step = j as f32 + index as f32 / 16.0;
            distances.push(match metric {
                MetricType::Ip => 1000.0 - step,
                _ => step,
            });
        }
    }
    TopKQueryResult {
        status: Some(Status::default()),
        row_num: nq as i64,
        ids,
        distances,
    }
}

struct StubService {
    index: i64,
    metric: MetricType,
}

/// Writes, in `async_trait`'s expanded form, trait methods answering
/// UNIMPLEMENTED: a stub serves only what the proxy's search path calls.
macro_rules! unimplemented_rpcs {
    ($($method:ident($req:ident) -> $resp:ident,)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: tonic::Request<$req>,
            ) -> ::std::pin::Pin<Box<
                dyn ::std::future::Future<Output = RpcResult<$resp>> + Send + 'async_trait,
            >>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    Err(tonic::Status::unimplemented(concat!(
                        "the bench's stub node does not serve ",
                        stringify!($method)
                    )))
                })
            }
        )*
    };
}

#[tonic::async_trait]
impl MilvusService for StubService {
    async fn search_in_files(
        &self,
        req: Request<SearchInFilesParam>,
    ) -> RpcResult<TopKQueryResult> {
        let param = req.into_inner();
        let search = param.search_param.unwrap_or_default();
        let nq = search.query_record_array.len();
        let topk = usize::try_from(search.topk).unwrap_or(0);
        Ok(Response::new(canned_result(
            self.index,
            self.metric,
            nq,
            topk,
        )))
    }

    async fn cmd(&self, _req: Request<Command>) -> RpcResult<StringReply> {
        Ok(Response::new(StringReply {
            status: Some(Status::default()),
            string_reply: String::new(),
        }))
    }

    unimplemented_rpcs!(
        create_collection(CollectionSchema) -> Status,
        has_collection(CollectionName) -> BoolReply,
        describe_collection(CollectionName) -> CollectionSchema,
        count_collection(CollectionName) -> CollectionRowCount,
        show_collections(Command) -> CollectionNameList,
        show_collection_info(CollectionName) -> CollectionInfo,
        drop_collection(CollectionName) -> Status,
        create_index(IndexParam) -> Status,
        describe_index(CollectionName) -> IndexParam,
        drop_index(CollectionName) -> Status,
        create_partition(PartitionParam) -> Status,
        has_partition(PartitionParam) -> BoolReply,
        show_partitions(CollectionName) -> PartitionList,
        drop_partition(PartitionParam) -> Status,
        insert(InsertParam) -> VectorIds,
        get_vectors_by_id(VectorsIdentity) -> VectorsData,
        get_vector_i_ds(GetVectorIDsParam) -> VectorIds,
        search(SearchParam) -> TopKQueryResult,
        search_by_id(SearchByIdParam) -> TopKQueryResult,
        delete_by_id(DeleteByIdParam) -> Status,
        preload_collection(PreloadCollectionParam) -> Status,
        release_collection(PreloadCollectionParam) -> Status,
        reload_segments(ReLoadSegmentsParam) -> Status,
        flush(FlushParam) -> Status,
        compact(CollectionName) -> Status,
    );

    crate::hybrid_rpcs_unimplemented!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_rows(r: &TopKQueryResult, topk: usize, ascending: bool) -> bool {
        r.distances.chunks(topk).all(|row| {
            row.windows(2).all(|w| {
                if ascending {
                    w[0] <= w[1]
                } else {
                    w[0] >= w[1]
                }
            })
        })
    }

    #[test]
    fn canned_rows_are_complete_and_sorted_for_the_metric() {
        let l2 = canned_result(1, MetricType::L2, 3, 5);
        assert_eq!(l2.row_num, 3);
        assert_eq!(l2.ids.len(), 15);
        assert_eq!(l2.distances.len(), 15);
        assert!(sorted_rows(&l2, 5, true));
        let ip = canned_result(1, MetricType::Ip, 2, 4);
        assert!(sorted_rows(&ip, 4, false));
    }

    #[test]
    fn stubs_answer_distinct_ids() {
        let a = canned_result(0, MetricType::L2, 1, 10);
        let b = canned_result(1, MetricType::L2, 1, 10);
        assert!(a.ids.iter().all(|id| !b.ids.contains(id)));
    }

    #[tokio::test]
    async fn answers_search_in_files_and_the_health_probe_only() {
        let stub = start(0, MetricType::L2).await.unwrap();
        let mut client = crate::grpc::client(
            &stub.addr.to_string(),
            std::time::Duration::from_secs(3),
            crate::grpc::DEFAULT_MAX_MESSAGE_SIZE,
        )
        .unwrap();
        let reply = client
            .search_in_files(SearchInFilesParam {
                file_id_array: vec!["1".into()],
                search_param: Some(SearchParam {
                    collection_name: "c".into(),
                    query_record_array: vec![RowRecord::default(); 2],
                    topk: 7,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.row_num, 2);
        assert_eq!(reply.ids.len(), 14);
        let probe = client
            .cmd(Command {
                cmd: "status".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(probe.status.map(|s| s.error_code), Some(0));
        let other = client
            .has_collection(CollectionName {
                collection_name: "c".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::Unimplemented);
    }
}
