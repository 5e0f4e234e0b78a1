//! The search path: check the request, plan it over the topology snapshot
//! (`route`), fan it out as one `SearchInFiles` per read-only node in
//! parallel (each part hedged or moved to the next node on the ring when its
//! node is slow or unreachable: `hedge`), and merge the partial top-k
//! results. Without read-only nodes, searches go to the writable node
//! unchanged; with `backends.search_writer_fallback`, so do searches that
//! find no healthy read-only node.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use prost::Message;
use tracing::field::Empty;

use super::cluster::Cluster;
use super::coalesce::{NodeAnswer, NodeCall};
use super::forward::client_call;
use super::methods::SEARCH_IN_FILES_PATH;
use super::placements::{to_parts, PlannedParts};
use super::route;
use crate::backend::Backend;
use crate::merge::{self, EncodedHits, TopKHits};
use crate::status::{code_of_encoded_reply, MilvusError, MilvusResult};
use crate::types::MetricType;
use crate::validate;
use crate::wire::{
    ErrorCode, RowRecord, SearchByIdParam, SearchInFilesParam, SearchParam, TopKQueryResult,
    VectorsIdentity,
};

impl Cluster {
    /// Search: plan, fan out, merge (see [`Self::search_merged`]).
    pub async fn search(&self, p: SearchParam) -> MilvusResult<TopKQueryResult> {
        match self.search_merged(p).await? {
            Merged::Encoded(bytes) => TopKQueryResult::decode(bytes).map_err(|e| {
                MilvusError::unexpected(format!("the merged search result did not decode: {e}"))
            }),
            Merged::Reply(reply) => Ok(reply),
        }
    }

    /// Search with the reply as its encoded bytes, for the gRPC path that
    /// sends them as they are (`raw_search`).
    pub async fn search_encoded(&self, p: SearchParam) -> MilvusResult<Bytes> {
        match self.search_merged(p).await? {
            Merged::Encoded(bytes) => Ok(bytes),
            Merged::Reply(mut reply) => {
                reply.status.get_or_insert_with(Default::default);
                Ok(reply.encode_to_vec().into())
            }
        }
    }

    /// Plan, fan out, merge. Retries once on a fresh snapshot when a node
    /// reports a file that no longer exists (a merge retired it).
    async fn search_merged(&self, p: SearchParam) -> MilvusResult<Merged> {
        let request_span = tracing::Span::current();
        request_span.record("collection", p.collection_name.as_str());
        request_span.record("nq", p.query_record_array.len());
        request_span.record("topk", p.topk);
        validate::search_request(
            &p.collection_name,
            &p.partition_tag_array,
            p.query_record_array.len(),
            p.topk,
        )?;
        let params = validate::extra_params(&p.extra_params)?;
        if self.backends.readonly.is_empty() {
            return self
                .to_writer("Search", p, client_call!(search))
                .await
                .map(Merged::Reply);
        }
        // The plan applies the tags; SearchInFiles ignores them, so the
        // request fanned out carries none.
        let mut p = p;
        let tags = std::mem::take(&mut p.partition_tag_array);
        let mut attempt = 0;
        loop {
            let view = self.view(&p.collection_name).await?;
            validate::search_params(view.engine, &params, p.topk)?;
            let metric = validate::search_metric(view.metric, &params)?;
            validate::vector_shapes(&p.query_record_array, view.metric, view.root.dimension)?;
            let ring = &self.backends.ring;
            let healthy: Vec<bool> = ring
                .nodes()
                .iter()
                .map(|n| self.backends.is_healthy(n))
                .collect();
            let plan = match traced_plan(&request_span, || {
                self.placements.plan(&view, &tags, ring, &healthy)
            }) {
                Ok(plan) => plan,
                Err(e) if self.falls_back_to_writer(&e) => {
                    return self.search_on_writer(p, tags).await.map(Merged::Reply);
                }
                Err(e) => return Err(self.explain_unplaced(e)),
            };
            if plan.files == 0 {
                return Ok(Merged::Reply(TopKHits::empty().into_wire()));
            }
            match self.fan_out(&plan, &p, metric).await {
                Err(e) if attempt == 0 && is_stale_file_error(&e) => {
                    tracing::info!(reason = %e.reason, "search hit a retired file; retrying on a fresh snapshot");
                    self.topology.reload().await?;
                    attempt += 1;
                }
                // Every node the parts could move to failed during the search.
                Err(e) if self.falls_back_to_writer(&e) => {
                    return self.search_on_writer(p, tags).await.map(Merged::Reply);
                }
                other => return other.map(Merged::Encoded),
            }
        }
    }

    /// Whether a search that failed with `error` goes whole to the writable
    /// node instead: `backends.search_writer_fallback` is on, no read-only
    /// node could take some of the files (at planning, or after failing over
    /// during the search), and the writer answers its probe.
    fn falls_back_to_writer(&self, error: &MilvusError) -> bool {
        self.backends.search_writer_fallback
            && route::found_no_healthy_node(error)
            && self.backends.writable.is_healthy()
    }

    /// `p` with its partition `tags` back, sent as it is to the writable
    /// node, which reads the same shared storage and applies the tags itself.
    async fn search_on_writer(
        &self,
        mut p: SearchParam,
        tags: Vec<String>,
    ) -> MilvusResult<TopKQueryResult> {
        tracing::debug!(collection = %p.collection_name, "no healthy read-only node: searching on the writable node");
        self.metrics.resilience.writer_fallback();
        p.partition_tag_array = tags;
        self.to_writer("Search", p, client_call!(search)).await
    }

    /// One `SearchInFiles` per node, in parallel, each part hedged or moved
    /// on when its node is slow or unreachable (`hedge`); the nodes' encoded
    /// answers merged straight into the encoded reply. A large merge runs on
    /// a blocking thread, so small searches and refusals never wait behind it.
    /// `search` goes out as it is (callers have removed partition tags).
    async fn fan_out(
        &self,
        plan: &PlannedParts,
        search: &SearchParam,
        metric: MetricType,
    ) -> MilvusResult<Bytes> {
        self.metrics.observe_fanout(plan.parts.len(), plan.files);
        let encoded = EncodedSearch::new(search);
        let calls = plan
            .parts
            .iter()
            .map(|part| self.search_part(part, &encoded));
        let mut parts: Vec<EncodedHits> = Vec::with_capacity(plan.parts.len());
        for result in join_all(calls).await {
            parts.extend(result?);
        }
        let (topk, order) = (search.topk as usize, metric.order());
        let started = Instant::now();
        let merge_span = tracing::info_span!("merge", parts = parts.len(), topk = search.topk);
        let merged = if merge_is_large(parts.len(), encoded.nq, topk) {
            tokio::task::spawn_blocking(move || {
                merge_span.in_scope(|| merge::merge_encoded(&parts, topk, order))
            })
            .await
            .map_err(|e| MilvusError::unexpected(format!("the merge task failed: {e}")))?
        } else {
            merge_span.in_scope(|| merge::merge_encoded(&parts, topk, order))
        };
        self.metrics.observe_merge(started.elapsed().as_secs_f64());
        merged
    }

    /// One `SearchInFiles` of the files whose encoded ids are `file_ids` on
    /// `node`; with `[coalesce]` on, possibly stacked with other searches'.
    pub(super) async fn search_node(
        &self,
        node: &str,
        file_ids: &Bytes,
        search: &EncodedSearch,
    ) -> Result<EncodedHits, NodeFailure> {
        match &self.coalescer {
            Some(coalescer) => {
                let call = CallNode {
                    cluster: self.clone(),
                    node: node.into(),
                };
                coalescer.search(node, file_ids, search, call).await
            }
            None => {
                self.call_node(node, search.request(file_ids), search.nq)
                    .await
            }
        }
    }

    /// One `SearchInFiles` (`body`, of `nq` queries) sent to `node`, its
    /// answer decoded and checked.
    async fn call_node(
        &self,
        node: &str,
        body: Bytes,
        nq: usize,
    ) -> Result<EncodedHits, NodeFailure> {
        let backend: &Arc<Backend> = self.backends.get(node).ok_or_else(|| {
            NodeFailure::Milvus(MilvusError::unexpected(format!("unknown backend {node}")))
        })?;
        let reply = backend
            .call_raw(
                "SearchInFiles",
                SEARCH_IN_FILES_PATH,
                body,
                self.search_timeout,
                |r| code_of_encoded_reply(r),
            )
            .await
            .map_err(|e| NodeFailure::Unreachable(e.to_milvus()))?;
        let hits = EncodedHits::parse(reply).map_err(|e| {
            NodeFailure::Milvus(MilvusError::new(
                ErrorCode::IllegalSearchResult,
                format!(
                    "read-only node {node} sent an undecodable SearchInFiles reply: {}",
                    e.reason
                ),
            ))
        })?;
        if let Some(mut e) = hits.error() {
            e.reason = format!("{} (from read-only node {node})", e.reason);
            return Err(NodeFailure::Milvus(e));
        }
        if hits.nq() != 0 && hits.nq() != nq {
            return Err(NodeFailure::Milvus(MilvusError::new(
                ErrorCode::IllegalSearchResult,
                format!(
                    "read-only node {node} answered {} result rows for {nq} queries",
                    hits.nq()
                ),
            )));
        }
        Ok(hits)
    }

    /// SearchInFiles: the named searchable files of the collection, fanned
    /// out like a search (no stale-file retry: the client chose the files).
    pub async fn search_in_files(&self, p: SearchInFilesParam) -> MilvusResult<TopKQueryResult> {
        let mut s = p
            .search_param
            .ok_or_else(|| MilvusError::illegal_argument("SearchInFiles needs a search_param"))?;
        let request_span = tracing::Span::current();
        request_span.record("collection", s.collection_name.as_str());
        request_span.record("nq", s.query_record_array.len());
        request_span.record("topk", s.topk);
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
                .to_writer("SearchInFiles", request, client_call!(search_in_files))
                .await;
        }
        let view = self.view(&s.collection_name).await?;
        validate::search_params(view.engine, &params, s.topk)?;
        let metric = validate::search_metric(view.metric, &params)?;
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
        let plan = traced_plan(&request_span, || {
            route::plan(&self.backends.ring, &files, self.healthy()).map(|plan| PlannedParts {
                parts: to_parts(&plan),
                files: plan.files,
                rows: plan.rows,
            })
        })
        .map_err(|e| self.explain_unplaced(e))?;
        s.partition_tag_array.clear();
        let merged = self.fan_out(&plan, &s, metric).await?;
        TopKQueryResult::decode(merged).map_err(|e| {
            MilvusError::unexpected(format!("the merged search result did not decode: {e}"))
        })
    }

    /// SearchByID: the vectors come from the writable node, the search is fanned out.
    pub async fn search_by_id(&self, p: SearchByIdParam) -> MilvusResult<TopKQueryResult> {
        validate::collection_name(&p.collection_name)?;
        if p.id_array.is_empty() {
            return Err(MilvusError::illegal_argument("No vector id specified"));
        }
        validate::topk(p.topk)?;
        validate::result_size(p.id_array.len(), p.topk)?;
        let view = self.view(&p.collection_name).await?;
        let params = validate::extra_params(&p.extra_params)?;
        let metric = validate::search_metric(view.metric, &params)?;
        let mut records: Vec<Option<RowRecord>> = Vec::with_capacity(p.id_array.len());
        for chunk in p.id_array.chunks(validate::MAX_GET_BY_ID) {
            let request = VectorsIdentity {
                collection_name: p.collection_name.clone(),
                id_array: chunk.to_vec(),
                partition_tag: String::new(),
            };
            let reply = self
                .read_any("GetVectorsByID", request, client_call!(get_vectors_by_id))
                .await?;
            if let Some(s) = reply.status.as_ref().filter(|s| s.error_code != 0) {
                let code = ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnexpectedError);
                return Err(MilvusError::new(code, s.reason.clone()));
            }
            records.extend(found_records(reply.vectors_data));
        }
        let Some((present, search)) = search_of_found(&p, records) else {
            return Ok(TopKHits::empty().into_wire());
        };
        let reply = self.search(search).await?;
        if reply.status.as_ref().is_some_and(|s| s.error_code != 0) || reply.row_num == 0 {
            return Ok(reply);
        }
        let hits = TopKHits::from_wire(reply)?;
        Ok(hits
            .spread_rows(&present, p.id_array.len(), metric.order())
            .into_wire())
    }
}

/// GetVectorsByID's rows, `None` for an id it did not find (an empty row).
pub(super) fn found_records(rows: Vec<RowRecord>) -> impl Iterator<Item = Option<RowRecord>> {
    rows.into_iter().map(|r| {
        let present = !r.float_data.is_empty() || !r.binary_data.is_empty();
        present.then_some(r)
    })
}

/// The search a SearchByID makes of the vectors found for its ids: the
/// positions of the ids found (to spread the result rows back) and the
/// search of their vectors; `None` when none was found.
pub(super) fn search_of_found(
    p: &SearchByIdParam,
    mut records: Vec<Option<RowRecord>>,
) -> Option<(Vec<usize>, SearchParam)> {
    let present: Vec<usize> = (0..records.len())
        .filter(|i| records[*i].is_some())
        .collect();
    if present.is_empty() {
        return None;
    }
    let search = SearchParam {
        collection_name: p.collection_name.clone(),
        partition_tag_array: p.partition_tag_array.clone(),
        query_record_array: present.iter().filter_map(|i| records[*i].take()).collect(),
        topk: p.topk,
        extra_params: p.extra_params.clone(),
    };
    Some((present, search))
}

/// `plan` in a `plan` span; the plan's size (`files`, `nodes`) is recorded
/// there and in the request span, its `rows` in the plan span.
fn traced_plan(
    request_span: &tracing::Span,
    plan: impl FnOnce() -> MilvusResult<PlannedParts>,
) -> MilvusResult<PlannedParts> {
    let span = tracing::info_span!("plan", files = Empty, nodes = Empty, rows = Empty);
    let plan = span.in_scope(plan)?;
    span.record("rows", plan.rows);
    for span in [&span, request_span] {
        span.record("files", plan.files);
        span.record("nodes", plan.parts.len());
    }
    Ok(plan)
}

/// A search's `SearchParam`, encoded once and sent to every node as field 2
/// of `SearchInFilesParam`, after that node's own encoded file ids (field 1):
/// one encode per search, where cloning the query vectors into one message
/// per node and encoding each cost a copy and an encode per node.
///
/// It is kept in three pieces, in prost's field order: `head` (collection,
/// tags), the queries (field 3, one entry each) and `tail` (topk, params).
/// Head and tail are what a coalesced call shares (`coalesce`); its queries
/// are several searches' query pieces in a row, which is exactly how prost
/// encodes the stacked message.
pub(super) struct EncodedSearch {
    pub head: Bytes,
    pub queries: Bytes,
    pub tail: Bytes,
    /// Queries in the search, to check each node's answer.
    pub nq: usize,
}

impl EncodedSearch {
    pub fn new(search: &SearchParam) -> Self {
        let head = SearchParam {
            collection_name: search.collection_name.clone(),
            partition_tag_array: search.partition_tag_array.clone(),
            ..SearchParam::default()
        };
        let tail = SearchParam {
            topk: search.topk,
            extra_params: search.extra_params.clone(),
            ..SearchParam::default()
        };
        let mut queries = BytesMut::with_capacity(
            search
                .query_record_array
                .iter()
                .map(|q| q.encoded_len() + 8)
                .sum(),
        );
        for query in &search.query_record_array {
            prost::encoding::message::encode(3, query, &mut queries);
        }
        Self {
            head: head.encode_to_vec().into(),
            queries: queries.freeze(),
            tail: tail.encode_to_vec().into(),
            nq: search.query_record_array.len(),
        }
    }

    /// The encoded `SearchInFilesParam` of this search over `file_ids`
    /// (field 1 as `placements::encode_file_ids` makes it).
    pub fn request(&self, file_ids: &Bytes) -> Bytes {
        stacked_request(file_ids, &self.head, &[&self.queries], &self.tail)
    }
}

/// How the coalescer calls a node: through this cluster's backend.
#[derive(Clone)]
struct CallNode {
    cluster: Cluster,
    node: Arc<str>,
}

impl NodeCall for CallNode {
    fn call(&self, body: Bytes, nq: usize) -> impl Future<Output = NodeAnswer> + Send + 'static {
        let this = self.clone();
        async move { this.cluster.call_node(&this.node, body, nq).await }
    }
}

/// The encoded `SearchInFilesParam` over `file_ids` of one `SearchParam`
/// made of `head`, every piece of `queries` in order, and `tail`.
pub(super) fn stacked_request(
    file_ids: &Bytes,
    head: &Bytes,
    queries: &[&Bytes],
    tail: &Bytes,
) -> Bytes {
    let param_len = head.len() + queries.iter().map(|q| q.len()).sum::<usize>() + tail.len();
    let mut body = BytesMut::with_capacity(file_ids.len() + param_len + 11);
    body.extend_from_slice(file_ids);
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut body);
    prost::encoding::encode_varint(param_len as u64, &mut body);
    body.extend_from_slice(head);
    for q in queries {
        body.extend_from_slice(q);
    }
    body.extend_from_slice(tail);
    body.freeze()
}

/// Whether a merge of `parts` answers of `nq` rows of `topk` is worth a
/// blocking thread (about 200 us of merging and up: nq=100/topk=100 over a
/// few nodes stays on the async worker).
fn merge_is_large(parts: usize, nq: usize, topk: usize) -> bool {
    parts.saturating_mul(nq).saturating_mul(topk) >= 100_000
}

/// A search's merged answer: encoded from the read-only nodes' answers, or
/// the writable node's reply when the search went there whole.
enum Merged {
    Encoded(Bytes),
    Reply(TopKQueryResult),
}

/// Why one node's part of a search failed.
#[derive(Clone, Debug)]
pub(super) enum NodeFailure {
    /// The node answered with a Milvus error: the search fails with it.
    Milvus(MilvusError),
    /// The node could not be reached: its files may move elsewhere.
    Unreachable(MilvusError),
}

/// A node could not find a file the snapshot named: merged and cleaned up meanwhile.
fn is_stale_file_error(e: &MilvusError) -> bool {
    e.code == ErrorCode::FileNotFound || e.reason.contains("Invalid file id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_by_id_searches_the_vectors_found_and_knows_their_places() {
        let row = |x: f32| RowRecord {
            float_data: vec![x],
            binary_data: Default::default(),
        };
        let found: Vec<_> = found_records(vec![row(1.0), RowRecord::default(), row(3.0)]).collect();
        assert_eq!(found, vec![Some(row(1.0)), None, Some(row(3.0))]);
        let p = SearchByIdParam {
            collection_name: "c".into(),
            topk: 4,
            ..SearchByIdParam::default()
        };
        let (present, search) = search_of_found(&p, found).unwrap();
        assert_eq!(present, vec![0, 2]);
        assert_eq!(search.query_record_array, vec![row(1.0), row(3.0)]);
        assert_eq!((search.collection_name.as_str(), search.topk), ("c", 4));
        assert!(search_of_found(&p, vec![None, None]).is_none());
    }

    #[test]
    fn the_encoded_request_is_the_message_encoded_whole() {
        let search = SearchParam {
            collection_name: "c".into(),
            partition_tag_array: vec![],
            query_record_array: vec![RowRecord {
                float_data: vec![0.5, -1.0, 2.0],
                binary_data: Default::default(),
            }],
            topk: 7,
            extra_params: vec![],
        };
        let encoded = EncodedSearch::new(&search);
        assert_eq!(encoded.nq, 1);
        for ids in [vec![], vec![3_i64, 10, 12_345_678_901]] {
            let body = encoded.request(&super::super::placements::encode_file_ids(&ids));
            let expected = SearchInFilesParam {
                file_id_array: ids.iter().map(i64::to_string).collect(),
                search_param: Some(search.clone()),
            };
            assert_eq!(body.as_ref(), expected.encode_to_vec().as_slice());
            assert_eq!(SearchInFilesParam::decode(body).unwrap(), expected);
        }
    }

    #[test]
    fn a_retired_file_is_recognised_by_code_or_by_milvus_reason() {
        assert!(is_stale_file_error(&MilvusError::new(
            ErrorCode::FileNotFound,
            "gone"
        )));
        assert!(is_stale_file_error(&MilvusError::unexpected(
            "Invalid file id: 12"
        )));
        assert!(!is_stale_file_error(&MilvusError::unexpected("disk full")));
    }
}
