//! The node's `milvus.grpc.MilvusService`: decodes requests, calls the
//! engine, encodes replies. No logic of its own beyond the Milvus wire rules.

use std::sync::Arc;

use tonic::{Request, Response};

use super::engine::Engine;
use super::runtime_config::RuntimeConfig;
use super::server_config;
use crate::status::{respond, MilvusError, MilvusResult};
use crate::validate;
use crate::wire::milvus_service_server::MilvusService;
use crate::wire::*;

/// The version a node reports; pymilvus 1.1.x requires "1.1.".
pub const MILVUS_VERSION: &str = "1.1.1";

type RpcResult<T> = Result<Response<T>, tonic::Status>;

pub struct NodeService {
    engine: Arc<Engine>,
    config: Arc<RuntimeConfig>,
}

impl NodeService {
    pub fn new(engine: Arc<Engine>, config: Arc<RuntimeConfig>) -> Self {
        Self { engine, config }
    }
}

fn done(r: MilvusResult<()>) -> RpcResult<Status> {
    respond(r.map(|_| Status::default()))
}

fn hits_reply(r: MilvusResult<crate::merge::TopKHits>) -> RpcResult<TopKQueryResult> {
    respond(r.map(|h| h.into_wire()))
}

#[tonic::async_trait]
impl MilvusService for NodeService {
    async fn create_collection(&self, req: Request<CollectionSchema>) -> RpcResult<Status> {
        let s = req.into_inner();
        done(
            self.engine
                .create_collection(
                    &s.collection_name,
                    s.dimension,
                    s.index_file_size,
                    s.metric_type,
                )
                .await,
        )
    }

    async fn has_collection(&self, req: Request<CollectionName>) -> RpcResult<BoolReply> {
        let name = req.into_inner().collection_name;
        respond(self.engine.has_collection(&name).await.map(|b| BoolReply {
            status: None,
            bool_reply: b,
        }))
    }

    async fn describe_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionSchema> {
        let name = req.into_inner().collection_name;
        respond(
            self.engine
                .collection(&name)
                .await
                .map(|c| CollectionSchema {
                    status: None,
                    collection_name: c.row.table_id.clone(),
                    dimension: c.row.dimension,
                    index_file_size: c.row.index_file_size >> 20,
                    metric_type: c.row.metric_type,
                    extra_params: Vec::new(),
                }),
        )
    }

    async fn count_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionRowCount> {
        let name = req.into_inner().collection_name;
        respond(self.engine.count(&name).await.map(|n| CollectionRowCount {
            status: None,
            collection_row_count: n,
        }))
    }

    async fn show_collections(&self, _req: Request<Command>) -> RpcResult<CollectionNameList> {
        respond(
            self.engine
                .show_collections()
                .await
                .map(|names| CollectionNameList {
                    status: None,
                    collection_names: names,
                }),
        )
    }

    async fn show_collection_info(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionInfo> {
        let name = req.into_inner().collection_name;
        respond(
            self.engine
                .collection_info(&name)
                .await
                .map(|json| CollectionInfo {
                    status: None,
                    json_info: json,
                }),
        )
    }

    async fn drop_collection(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        done(
            self.engine
                .drop_collection(&req.into_inner().collection_name)
                .await,
        )
    }

    async fn create_index(&self, req: Request<IndexParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        let result = async {
            let params = validate::extra_params(&p.extra_params)?;
            self.engine
                .create_index(&p.collection_name, p.index_type, params)
                .await
        };
        done(result.await)
    }

    async fn describe_index(&self, req: Request<CollectionName>) -> RpcResult<IndexParam> {
        let name = req.into_inner().collection_name;
        respond(
            self.engine
                .describe_index(&name)
                .await
                .map(|(index_type, params)| IndexParam {
                    status: None,
                    collection_name: name.clone(),
                    index_type,
                    extra_params: vec![KeyValuePair {
                        key: "params".into(),
                        value: params,
                    }],
                }),
        )
    }

    async fn drop_index(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        done(
            self.engine
                .drop_index(&req.into_inner().collection_name)
                .await,
        )
    }

    async fn create_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        done(
            self.engine
                .create_partition(&p.collection_name, &p.tag)
                .await,
        )
    }

    async fn has_partition(&self, req: Request<PartitionParam>) -> RpcResult<BoolReply> {
        let p = req.into_inner();
        respond(
            self.engine
                .has_partition(&p.collection_name, &p.tag)
                .await
                .map(|b| BoolReply {
                    status: None,
                    bool_reply: b,
                }),
        )
    }

    async fn show_partitions(&self, req: Request<CollectionName>) -> RpcResult<PartitionList> {
        let name = req.into_inner().collection_name;
        respond(
            self.engine
                .show_partitions(&name)
                .await
                .map(|tags| PartitionList {
                    status: None,
                    partition_tag_array: tags,
                }),
        )
    }

    async fn drop_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        done(self.engine.drop_partition(&p.collection_name, &p.tag).await)
    }

    async fn insert(&self, req: Request<InsertParam>) -> RpcResult<VectorIds> {
        let p = req.into_inner();
        let result = self
            .engine
            .insert(
                &p.collection_name,
                &p.row_record_array,
                &p.row_id_array,
                &p.partition_tag,
            )
            .await;
        respond(result.map(|ids| VectorIds {
            status: None,
            vector_id_array: ids,
        }))
    }

    async fn get_vectors_by_id(&self, req: Request<VectorsIdentity>) -> RpcResult<VectorsData> {
        let p = req.into_inner();
        let result = self
            .engine
            .get_vectors_by_id(&p.collection_name, &p.id_array, &p.partition_tag)
            .await;
        respond(result.map(|v| VectorsData {
            status: None,
            vectors_data: v,
        }))
    }

    async fn get_vector_i_ds(&self, req: Request<GetVectorIDsParam>) -> RpcResult<VectorIds> {
        let p = req.into_inner();
        let result = self
            .engine
            .get_vector_ids(&p.collection_name, &p.segment_name)
            .await;
        respond(result.map(|ids| VectorIds {
            status: None,
            vector_id_array: ids,
        }))
    }

    async fn search(&self, req: Request<SearchParam>) -> RpcResult<TopKQueryResult> {
        let p = req.into_inner();
        let result = async {
            let params = validate::extra_params(&p.extra_params)?;
            self.engine
                .search(
                    &p.collection_name,
                    &p.partition_tag_array,
                    &p.query_record_array,
                    p.topk,
                    &params,
                )
                .await
        };
        hits_reply(result.await)
    }

    async fn search_by_id(&self, req: Request<SearchByIdParam>) -> RpcResult<TopKQueryResult> {
        let p = req.into_inner();
        let result = async {
            let params = validate::extra_params(&p.extra_params)?;
            self.engine
                .search_by_id(
                    &p.collection_name,
                    &p.partition_tag_array,
                    &p.id_array,
                    p.topk,
                    &params,
                )
                .await
        };
        hits_reply(result.await)
    }

    async fn search_in_files(
        &self,
        req: Request<SearchInFilesParam>,
    ) -> RpcResult<TopKQueryResult> {
        let p = req.into_inner();
        let result = async {
            let s = p.search_param.ok_or_else(|| {
                MilvusError::illegal_argument("SearchInFiles without search_param")
            })?;
            let params = validate::extra_params(&s.extra_params)?;
            self.engine
                .search_in_files(
                    &p.file_id_array,
                    &s.collection_name,
                    &s.partition_tag_array,
                    &s.query_record_array,
                    s.topk,
                    &params,
                )
                .await
        };
        hits_reply(result.await)
    }

    async fn cmd(&self, req: Request<Command>) -> RpcResult<StringReply> {
        let cmd = req.into_inner().cmd;
        if let Some(command) = server_config::parse_command(cmd.trim()) {
            return respond(
                command
                    .and_then(|c| self.config.run(c))
                    .map(|text| StringReply {
                        status: None,
                        string_reply: text,
                    }),
            );
        }
        let reply = match cmd.trim() {
            "version" => MILVUS_VERSION.to_string(),
            "status" => "OK".to_string(),
            "mode" => "CPU".to_string(),
            "role" => match self.engine.role() {
                super::Role::Writable => "rw".to_string(),
                super::Role::ReadOnly => "ro".to_string(),
            },
            "build_commit_id" => env!("CARGO_PKG_VERSION").to_string(),
            _ => "Unknown command".to_string(),
        };
        respond(Ok(StringReply {
            status: None,
            string_reply: reply,
        }))
    }

    async fn delete_by_id(&self, req: Request<DeleteByIdParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        done(
            self.engine
                .delete_by_id(&p.collection_name, &p.id_array, &p.partition_tag)
                .await,
        )
    }

    async fn preload_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        done(
            self.engine
                .preload(&p.collection_name, &p.partition_tag_array)
                .await,
        )
    }

    async fn release_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        done(
            self.engine
                .release(&p.collection_name, &p.partition_tag_array)
                .await,
        )
    }

    async fn reload_segments(&self, req: Request<ReLoadSegmentsParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        done(
            self.engine
                .reload_segments(&p.collection_name, &p.segment_id_array)
                .await,
        )
    }

    async fn flush(&self, req: Request<FlushParam>) -> RpcResult<Status> {
        done(
            self.engine
                .flush(&req.into_inner().collection_name_array)
                .await,
        )
    }

    async fn compact(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        done(self.engine.compact(&req.into_inner().collection_name).await)
    }

    crate::hybrid_rpcs_unimplemented!();
}
