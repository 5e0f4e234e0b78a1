//! Shard groups: several Milvus 1.x clusters behind one address. Each group
//! is a whole single-cluster [`ProxyService`] (its own metadata snapshot,
//! nodes, ring and warm-up); [`GroupedService`] routes each call to the
//! groups its collection lives in (`shard::placement`) and combines their
//! answers (`shard::replies`):
//! - a pinned collection's calls go to its one group, unchanged;
//! - a spread collection's schema calls go to every group (a failed create
//!   is rolled back where it succeeded), its reads are checked for
//!   agreement or added up, each inserted row goes to the group owning its
//!   id (ids the proxy generates when the client sends none), deletes and
//!   gets go to the owners of their ids, and searches fan out over every
//!   group and merge into the exact global top-k.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::future::join_all;
use prost::Message;
use tonic::{Request, Response};

use super::methods::INSERT_PATH;
use super::rpc_metrics::reply;
use super::search::{found_records, search_of_found};
use super::service::ProxyService;
use crate::backend::live::LiveBackends;
use crate::merge::{self, TopKHits};
use crate::meta::MetaStore;
use crate::shard::encoded_insert::EncodedInsert;
use crate::shard::id_mode::{id_source, IdSource, FLAG_PROXY_IDS};
use crate::shard::ids::IdGenerator;
use crate::shard::owner::split_by_owner;
use crate::shard::placement::{Home, Placement};
use crate::shard::replies::{agreed, merge_collection_info, unqualified};
use crate::status::{MilvusError, MilvusResult, Reply};
use crate::validate;
use crate::wire::milvus_service_server::MilvusService;
use crate::wire::*;

type RpcResult<T> = Result<Response<T>, tonic::Status>;

/// The placement rules of `[placement]` over `groups` (the served groups'
/// names, in the order of their services).
pub fn placement_of(config: &crate::config::PlacementConfig, groups: Vec<String>) -> Placement {
    use crate::config::PlacementDefault;
    use crate::shard::placement::DefaultHome;
    Placement {
        groups,
        default: match config.default {
            PlacementDefault::Spread => DefaultHome::Spread,
            PlacementDefault::Pinned => DefaultHome::PinnedByName,
        },
        pinned: config.pinned.clone(),
    }
}

/// One shard group: its name, its single-cluster service, its nodes (the
/// writer takes a pinned collection's inserts as bytes) and its metadata
/// (for the id-mode flag, read fresh on every insert of a spread collection).
pub struct Group {
    pub name: String,
    pub service: ProxyService,
    pub live: Arc<LiveBackends>,
    pub meta: MetaStore,
}

/// The proxy's request handlers over several shard groups. Clones share
/// everything (groups, placement, id generator).
#[derive(Clone)]
pub struct GroupedService {
    groups: Arc<[Group]>,
    /// Swapped whole by a reload that moves no collection (`reload`).
    placement: Arc<ArcSwap<Placement>>,
    ids: Arc<IdGenerator>,
    /// Deadline of one insert part (`backends.request_timeout`).
    request_timeout: Option<std::time::Duration>,
}

/// A group's answer as a result: its status, when not OK, is the error.
fn outcome<T: Reply>(result: RpcResult<T>) -> MilvusResult<T> {
    let reply = result
        .map_err(|s| MilvusError::unexpected(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    match reply.status().filter(|s| s.error_code != 0) {
        Some(s) => Err(MilvusError::new(
            ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnexpectedError),
            s.reason.clone(),
        )),
        None => Ok(reply),
    }
}

impl GroupedService {
    /// `placement` is shared with the reloader, which may swap it.
    pub fn new(groups: Vec<Group>, placement: Arc<ArcSwap<Placement>>) -> Self {
        Self {
            groups: groups.into(),
            placement,
            ids: Arc::new(IdGenerator::new()),
            request_timeout: None,
        }
    }

    /// Each insert part waits at most `timeout` for its group's writer.
    pub fn with_request_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The indices of the groups `collection` lives in.
    fn home(&self, collection: &str) -> Vec<usize> {
        match self.placement.load().home_of(collection) {
            Home::Spread => (0..self.groups.len()).collect(),
            Home::Pinned(i) => vec![i.min(self.groups.len().saturating_sub(1))],
        }
    }

    /// `call` on each group of `targets`, in parallel, as results.
    async fn each<'a, T, F, Fut>(
        &'a self,
        targets: &[usize],
        call: F,
    ) -> Vec<(usize, MilvusResult<T>)>
    where
        T: Reply,
        F: Fn(&'a Group) -> Fut,
        Fut: Future<Output = RpcResult<T>>,
    {
        let calls = targets.iter().map(|&g| {
            let fut = call(&self.groups[g]);
            async move { (g, outcome(fut.await)) }
        });
        join_all(calls).await
    }

    /// Every group's outcome in one line, for errors that name them.
    fn outcomes<T>(&self, results: &[(usize, MilvusResult<T>)]) -> String {
        results
            .iter()
            .map(|(g, r)| match r {
                Ok(_) => format!("{}: ok", self.groups[*g].name),
                Err(e) => format!("{}: {}", self.groups[*g].name, e.reason),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A call every group of `targets` must make: the first answer when all
    /// succeeded, else an error with the first failure's code naming each
    /// group's outcome (repeating the call completes it).
    async fn on_all<'a, T, F, Fut>(
        &'a self,
        method: &str,
        targets: &[usize],
        call: F,
    ) -> MilvusResult<T>
    where
        T: Reply,
        F: Fn(&'a Group) -> Fut,
        Fut: Future<Output = RpcResult<T>>,
    {
        let results = self.each(targets, call).await;
        let code = results
            .iter()
            .find_map(|(_, r)| r.as_ref().err().map(|e| e.code));
        match code {
            None => results
                .into_iter()
                .find_map(|(_, r)| r.ok())
                .ok_or_else(|| MilvusError::unexpected(format!("{method}: no shard group"))),
            Some(code) => Err(MilvusError::new(
                code,
                format!(
                    "{method} did not complete in every shard group ({}); repeat it to complete it",
                    self.outcomes(&results)
                ),
            )),
        }
    }

    /// The answer of a single group, or, over several, the one they agree on.
    async fn agreeing<'a, T, F, Fut>(
        &'a self,
        method: &str,
        targets: &[usize],
        call: F,
    ) -> MilvusResult<T>
    where
        T: Reply + PartialEq + std::fmt::Debug,
        F: Fn(&'a Group) -> Fut,
        Fut: Future<Output = RpcResult<T>>,
    {
        let results = self.each(targets, call).await;
        let mut answers = Vec::with_capacity(results.len());
        for (g, r) in results {
            let name = self.groups[g].name.as_str();
            answers.push((name, r.map_err(|e| in_group(name, e))?));
        }
        agreed(method, answers)
    }

    async fn create_spread(&self, p: CollectionSchema, targets: &[usize]) -> MilvusResult<Status> {
        let results = self
            .each(targets, |g| {
                g.service.create_collection(Request::new(p.clone()))
            })
            .await;
        let failed: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(g, _)| *g)
            .collect();
        if failed.is_empty() {
            return Ok(Status::default());
        }
        // A repeated create after a partial one: the groups that already
        // hold the same schema complete it, the others created it now.
        if results.iter().any(|(_, r)| r.is_ok()) {
            let mut completes = true;
            for &g in &failed {
                completes &= self.holds_schema(g, &p).await;
            }
            if completes {
                return Ok(Status::default());
            }
        }
        let code = results
            .iter()
            .find_map(|(_, r)| r.as_ref().err().map(|e| e.code))
            .unwrap_or(ErrorCode::UnexpectedError);
        let mut rolled_back = Vec::new();
        for (g, r) in &results {
            if r.is_ok() {
                let group = &self.groups[*g];
                let drop = CollectionName {
                    collection_name: p.collection_name.clone(),
                };
                let undone = outcome(group.service.drop_collection(Request::new(drop)).await);
                rolled_back.push(match undone {
                    Ok(_) => format!("rolled back in {}", group.name),
                    Err(e) => format!(
                        "NOT rolled back in {} ({}): repeat the create to complete it",
                        group.name, e.reason
                    ),
                });
            }
        }
        let mut reason = format!(
            "CreateCollection failed in a shard group ({})",
            self.outcomes(&results)
        );
        if !rolled_back.is_empty() {
            reason = format!("{reason}; {}", rolled_back.join("; "));
        }
        Err(MilvusError::new(code, reason))
    }

    /// Whether group `g` already holds `schema`'s collection with the same
    /// dimension, metric and index file size.
    async fn holds_schema(&self, g: usize, schema: &CollectionSchema) -> bool {
        let request = CollectionName {
            collection_name: schema.collection_name.clone(),
        };
        match outcome(
            self.groups[g]
                .service
                .describe_collection(Request::new(request))
                .await,
        ) {
            Ok(held) => {
                held.dimension == schema.dimension
                    && held.metric_type == schema.metric_type
                    && held.index_file_size == schema.index_file_size
            }
            Err(_) => false,
        }
    }

    /// An encoded insert, as it arrived (`raw_insert` hands every Insert
    /// here): a pinned collection's goes as its bytes to its group's writer,
    /// a spread one is split by row owner ([`Self::insert_spread`]).
    pub async fn insert_encoded(&self, body: Bytes) -> Bytes {
        let insert = match EncodedInsert::parse(body.clone()) {
            Ok(insert) => insert,
            Err(e) => {
                let error = MilvusError::new(
                    ErrorCode::IllegalArgument,
                    format!("the insert is not a valid InsertParam message: {e}"),
                );
                return Bytes::from(VectorIds::from_error(&error).encode_to_vec());
            }
        };
        match self.placement.load().home_of(&insert.collection_name) {
            Home::Pinned(i) => match self.groups.get(i) {
                Some(group) => match self.send_insert(group, body).await {
                    Ok(reply) => reply,
                    Err(e) => Bytes::from(VectorIds::from_error(&e).encode_to_vec()),
                },
                None => Bytes::from(
                    VectorIds::from_error(&MilvusError::unexpected("no shard group"))
                        .encode_to_vec(),
                ),
            },
            Home::Spread => {
                let targets: Vec<usize> = (0..self.groups.len()).collect();
                let reply = self
                    .insert_spread(insert, &targets)
                    .await
                    .unwrap_or_else(|e| VectorIds::from_error(&e));
                Bytes::from(reply.encode_to_vec())
            }
        }
    }

    /// One encoded insert to `group`'s writable node: its encoded reply, or
    /// the error (`ConnectFailed` when the outcome is unknown). Never retried.
    async fn send_insert(&self, group: &Group, body: Bytes) -> MilvusResult<Bytes> {
        let writer = group.live.load().writable.clone();
        writer
            .call_raw(
                "Insert",
                INSERT_PATH,
                body,
                self.request_timeout,
                |reply: &Bytes| crate::status::code_of_encoded_reply(reply),
            )
            .await
            .map_err(|e| e.to_milvus())
    }

    /// [`Self::send_insert`], its reply decoded and its status an error when not OK.
    async fn send_insert_part(&self, group: &Group, body: Bytes) -> MilvusResult<VectorIds> {
        let reply = self.send_insert(group, body).await?;
        let reply = VectorIds::decode(reply).map_err(|e| {
            MilvusError::unexpected(format!("undecodable Insert reply from {}: {e}", group.name))
        })?;
        match reply.status.as_ref().filter(|s| s.error_code != 0) {
            Some(s) => Err(MilvusError::new(
                ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnexpectedError),
                s.reason.clone(),
            )),
            None => Ok(reply),
        }
    }

    /// A spread collection's insert: validated, its ids (the client's or
    /// the proxy's, by the groups' flags), each row's bytes copied into the
    /// part of the group owning its id, all or nothing.
    async fn insert_spread(
        &self,
        insert: EncodedInsert,
        targets: &[usize],
    ) -> MilvusResult<VectorIds> {
        validate::collection_name(&insert.collection_name)?;
        if insert.row_count() == 0 {
            return Err(MilvusError::new(
                ErrorCode::IllegalRowrecord,
                "Row record array is empty",
            ));
        }
        validate::user_ids(&insert.ids, insert.row_count())?;
        // Ids the proxy generates are never sent again: deleting them later is safe.
        let generated = insert.ids.is_empty();
        // Every group's flag, read now and in parallel (one query each).
        let reads = targets.iter().map(|&g| {
            let group = &self.groups[g];
            let name = &insert.collection_name;
            async move {
                group
                    .meta
                    .root_flag(name)
                    .await
                    .map_err(|e| in_group(&group.name, MilvusError::meta(e)))?
                    .ok_or_else(|| in_group(&group.name, MilvusError::collection_not_exists(name)))
            }
        });
        let flags = join_all(reads)
            .await
            .into_iter()
            .collect::<MilvusResult<Vec<i64>>>()?;
        let mut ids = insert.ids.clone();
        if let IdSource::Proxy { mark } = id_source(&flags, !generated)? {
            if mark {
                for (i, &g) in targets.iter().enumerate() {
                    if flags[i] & FLAG_PROXY_IDS == 0 {
                        let group = &self.groups[g];
                        group
                            .meta
                            .mark_root_flag(&insert.collection_name, FLAG_PROXY_IDS)
                            .await
                            .map_err(|e| in_group(&group.name, MilvusError::meta(e)))?;
                    }
                }
            }
            ids = self.ids.next_ids(insert.row_count());
        }
        let names: Vec<&str> = targets
            .iter()
            .map(|g| self.groups[*g].name.as_str())
            .collect();
        let collection = insert.collection_name.clone();
        let tag = insert.partition_tag.clone();
        // Each part is its rows' bytes, copied once; the vectors are never decoded.
        let parts = split_by_owner(&ids, &names);
        let calls = parts
            .iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(i, rows)| {
                let g = targets[i];
                let group = &self.groups[g];
                let part_ids: Vec<i64> = rows.iter().map(|&r| ids[r]).collect();
                let body = insert.part(rows, &part_ids);
                async move {
                    let result = self.send_insert_part(group, body).await;
                    (g, group, part_ids, result)
                }
            });
        let results = join_all(calls).await;
        if results.iter().all(|(_, _, _, r)| r.is_ok()) {
            return Ok(VectorIds {
                status: crate::status::ok_status(),
                vector_id_array: ids,
            });
        }
        // All or nothing: delete what the other groups took, then answer.
        let mut said = Vec::new();
        let mut code = ErrorCode::UnexpectedError;
        for (g, group, part_ids, r) in results {
            let rows = part_ids.len();
            // A group that answered an error took nothing; one that did not
            // answer (transport error or timeout: ConnectFailed) may have
            // taken its part, which is then deleted there too.
            let head = match r {
                Ok(_) => format!("{}: its {rows} rows", group.name),
                Err(e) if e.code == ErrorCode::ConnectFailed => {
                    code = e.code;
                    format!(
                        "{}: {}; its {rows} rows, if it took them,",
                        group.name, e.reason
                    )
                }
                Err(e) => {
                    code = e.code;
                    said.push(format!("{}: {}", group.name, e.reason));
                    continue;
                }
            };
            let undo = DeleteByIdParam {
                collection_name: collection.clone(),
                partition_tag: tag.clone(),
                id_array: part_ids,
            };
            let undone = outcome(group.service.delete_by_id(Request::new(undo.clone())).await);
            said.push(match undone {
                Ok(_) => format!("{head} deleted again"),
                // Ids nobody else inserts: deleted once the group answers.
                Err(e) if generated && e.code == ErrorCode::ConnectFailed => {
                    self.delete_later(g, undo);
                    format!(
                        "{head} will be deleted again once it answers ({})",
                        e.reason
                    )
                }
                Err(e) => format!(
                    "{head} could NOT be deleted again ({}): delete those ids before the retry",
                    e.reason
                ),
            });
        }
        Err(MilvusError::new(
            code,
            format!(
                "Insert failed in a shard group, nothing of it is acknowledged ({}); retry it",
                said.join("; ")
            ),
        ))
    }

    /// Deletes the part of a failed insert a group may have taken with ids
    /// the proxy generated, once it answers: every second, for 10 minutes.
    fn delete_later(&self, g: usize, undo: DeleteByIdParam) {
        let groups = self.groups.clone();
        tokio::spawn(async move {
            let group = &groups[g];
            let mut last = String::new();
            for _ in 0..600 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let request = Request::new(undo.clone());
                match outcome(group.service.delete_by_id(request).await) {
                    Ok(_) => return,
                    Err(e) if e.code == ErrorCode::ConnectFailed => last = e.reason,
                    Err(e) => {
                        last = e.reason;
                        break;
                    }
                }
            }
            tracing::error!(
                group = %group.name,
                collection = %undo.collection_name,
                rows = undo.id_array.len(),
                error = %last,
                "rows of a failed insert could not be deleted again"
            );
        });
    }

    async fn delete_spread(&self, p: DeleteByIdParam, targets: &[usize]) -> MilvusResult<Status> {
        validate::collection_name(&p.collection_name)?;
        let names: Vec<&str> = targets
            .iter()
            .map(|g| self.groups[*g].name.as_str())
            .collect();
        let owners = split_by_owner(&p.id_array, &names);
        // Only the groups owning some of the ids get a delete (they check the collection and
        // tag): Milvus refuses an empty one ("No vector id specified"). With no ids at all the
        // first group answers, as one Milvus would.
        let mut sends: Vec<(usize, usize)> = targets
            .iter()
            .enumerate()
            .filter(|(i, _)| !owners[*i].is_empty())
            .map(|(i, &g)| (i, g))
            .collect();
        if sends.is_empty() {
            sends.push((0, targets[0]));
        }
        let results = join_all(sends.into_iter().map(|(i, g)| {
            let request = DeleteByIdParam {
                collection_name: p.collection_name.clone(),
                partition_tag: p.partition_tag.clone(),
                id_array: owners[i].iter().map(|r| p.id_array[*r]).collect(),
            };
            let group = &self.groups[g];
            async move {
                (
                    g,
                    outcome(group.service.delete_by_id(Request::new(request)).await),
                )
            }
        }))
        .await;
        self.all_ok("DeleteByID", results)
    }

    fn all_ok(
        &self,
        method: &str,
        results: Vec<(usize, MilvusResult<Status>)>,
    ) -> MilvusResult<Status> {
        match results
            .iter()
            .find_map(|(_, r)| r.as_ref().err().map(|e| e.code))
        {
            None => Ok(Status::default()),
            Some(code) => Err(MilvusError::new(
                code,
                format!(
                    "{method} did not complete in every shard group ({}); repeat it to complete it",
                    self.outcomes(&results)
                ),
            )),
        }
    }

    async fn get_vectors_spread(
        &self,
        p: VectorsIdentity,
        targets: &[usize],
    ) -> MilvusResult<VectorsData> {
        validate::collection_name(&p.collection_name)?;
        validate::get_by_id_count(p.id_array.len())?;
        let names: Vec<&str> = targets
            .iter()
            .map(|g| self.groups[*g].name.as_str())
            .collect();
        let owners = split_by_owner(&p.id_array, &names);
        let results = join_all(targets.iter().enumerate().map(|(i, &g)| {
            let request = VectorsIdentity {
                collection_name: p.collection_name.clone(),
                partition_tag: p.partition_tag.clone(),
                id_array: owners[i].iter().map(|r| p.id_array[*r]).collect(),
            };
            let group = &self.groups[g];
            let empty = request.id_array.is_empty();
            async move {
                if empty {
                    return (i, Ok(VectorsData::default()));
                }
                (
                    i,
                    outcome(group.service.get_vectors_by_id(Request::new(request)).await),
                )
            }
        }))
        .await;
        let mut records: Vec<RowRecord> = vec![RowRecord::default(); p.id_array.len()];
        let mut any_found = false;
        let mut not_found = None;
        for (i, r) in results {
            let name = &self.groups[targets[i]].name;
            match r {
                Ok(data) => {
                    for (slot, record) in owners[i].iter().zip(data.vectors_data) {
                        any_found = true;
                        records[*slot] = record;
                    }
                }
                // A group holding no rows yet says "Collection or partition
                // is empty" (Milvus' DB_NOT_FOUND); another group may have them.
                Err(e) if e.reason.contains("is empty") => {
                    not_found = Some(in_group(name, e));
                }
                Err(e) => return Err(in_group(name, e)),
            }
        }
        match not_found {
            Some(e) if !any_found => Err(e),
            _ => Ok(VectorsData {
                status: crate::status::ok_status(),
                vectors_data: records,
            }),
        }
    }

    async fn search_spread(
        &self,
        p: SearchParam,
        targets: &[usize],
    ) -> MilvusResult<TopKQueryResult> {
        validate::search_request(
            &p.collection_name,
            &p.partition_tag_array,
            p.query_record_array.len(),
            p.topk,
        )?;
        let params = validate::extra_params(&p.extra_params)?;
        let view = self.groups[targets[0]]
            .service
            .cluster()
            .view(&p.collection_name)
            .await?;
        let order = validate::search_metric(view.metric, &params)?.order();
        let results = self
            .each(targets, |g| g.service.search(Request::new(p.clone())))
            .await;
        let mut parts = Vec::with_capacity(results.len());
        for (g, r) in results {
            let name = &self.groups[g].name;
            let reply = r.map_err(|e| in_group(name, e))?;
            parts.push(TopKHits::from_wire(reply).map_err(|e| in_group(name, e))?);
        }
        Ok(merge::merge(parts, p.topk as usize, order)?.into_wire())
    }

    async fn search_by_id_spread(
        &self,
        p: SearchByIdParam,
        targets: &[usize],
    ) -> MilvusResult<TopKQueryResult> {
        validate::collection_name(&p.collection_name)?;
        if p.id_array.is_empty() {
            return Err(MilvusError::illegal_argument("No vector id specified"));
        }
        validate::topk(p.topk)?;
        validate::result_size(p.id_array.len(), p.topk)?;
        let params = validate::extra_params(&p.extra_params)?;
        let view = self.groups[targets[0]]
            .service
            .cluster()
            .view(&p.collection_name)
            .await?;
        let order = validate::search_metric(view.metric, &params)?.order();
        let mut records: Vec<Option<RowRecord>> = Vec::with_capacity(p.id_array.len());
        for chunk in p.id_array.chunks(validate::MAX_GET_BY_ID) {
            let request = VectorsIdentity {
                collection_name: p.collection_name.clone(),
                id_array: chunk.to_vec(),
                partition_tag: String::new(),
            };
            let data = self.get_vectors_spread(request, targets).await?;
            records.extend(found_records(data.vectors_data));
        }
        let Some((present, search)) = search_of_found(&p, records) else {
            return Ok(TopKHits::empty().into_wire());
        };
        let reply = self.search_spread(search, targets).await?;
        if reply.row_num == 0 {
            return Ok(reply);
        }
        let hits = TopKHits::from_wire(reply)?;
        Ok(hits
            .spread_rows(&present, p.id_array.len(), order)
            .into_wire())
    }

    /// The group named by a qualified name (`g1/...`) of a spread
    /// collection, with the bare rest; a bare name is refused there.
    fn qualified_group<'n>(
        &self,
        collection: &str,
        name: &'n str,
        what: &str,
    ) -> MilvusResult<(usize, &'n str)> {
        let targets = self.home(collection);
        if targets.len() == 1 {
            return Ok((targets[0], unqualified(name).map_or(name, |(_, rest)| rest)));
        }
        let Some((group, rest)) = unqualified(name) else {
            return Err(MilvusError::illegal_argument(format!(
                "{what} {name:?} of spread collection {collection} is not qualified by its shard group: write it as ShowCollectionInfo and route print it, e.g. {}/{name}",
                self.groups[0].name
            )));
        };
        let index = self
            .groups
            .iter()
            .position(|g| g.name == group)
            .ok_or_else(|| {
                MilvusError::illegal_argument(format!(
                    "{what} {name:?}: no shard group is named {group:?}"
                ))
            })?;
        Ok((index, rest))
    }

    async fn search_in_files_spread(&self, p: SearchInFilesParam) -> MilvusResult<TopKQueryResult> {
        let s = p
            .search_param
            .ok_or_else(|| MilvusError::illegal_argument("SearchInFiles needs a search_param"))?;
        let mut by_group: Vec<Vec<String>> = vec![Vec::new(); self.groups.len()];
        for id in &p.file_id_array {
            let (g, bare) = self.qualified_group(&s.collection_name, id, "file id")?;
            by_group[g].push(bare.to_string());
        }
        let targets: Vec<usize> = (0..self.groups.len())
            .filter(|g| !by_group[*g].is_empty())
            .collect();
        if targets.is_empty() {
            return Err(MilvusError::illegal_argument(
                "SearchInFiles: no file id given",
            ));
        }
        let params = validate::extra_params(&s.extra_params)?;
        let view = self.groups[targets[0]]
            .service
            .cluster()
            .view(&s.collection_name)
            .await?;
        let order = validate::search_metric(view.metric, &params)?.order();
        let results = join_all(targets.iter().map(|&g| {
            let request = SearchInFilesParam {
                file_id_array: by_group[g].clone(),
                search_param: Some(s.clone()),
            };
            let group = &self.groups[g];
            async move {
                (
                    g,
                    outcome(group.service.search_in_files(Request::new(request)).await),
                )
            }
        }))
        .await;
        let mut parts = Vec::new();
        for (g, r) in results {
            let name = &self.groups[g].name;
            parts.push(TopKHits::from_wire(r.map_err(|e| in_group(name, e))?)?);
        }
        Ok(merge::merge(parts, s.topk as usize, order)?.into_wire())
    }
}

/// `error` with the group it came from.
fn in_group(group: &str, mut error: MilvusError) -> MilvusError {
    error.reason = format!("shard group {group}: {}", error.reason);
    error
}

/// `$self.pinned_or(name, req, rpc, spread)`: a collection in one group is
/// served by that group's service unchanged; otherwise by `spread`.
macro_rules! routed {
    ($self:ident, $name:expr, $req:ident, $rpc:ident, |$targets:ident, $p:ident| $spread:expr) => {{
        let $targets = $self.home($name);
        if $targets.len() == 1 {
            return $self.groups[$targets[0]].service.$rpc($req).await;
        }
        let $p = $req.into_inner();
        reply($spread)
    }};
}

#[tonic::async_trait]
impl MilvusService for GroupedService {
    async fn create_collection(&self, req: Request<CollectionSchema>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, create_collection, |t, p| self
            .create_spread(p, &t)
            .await)
    }

    async fn has_collection(&self, req: Request<CollectionName>) -> RpcResult<BoolReply> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, has_collection, |t, p| self
            .agreeing("HasCollection", &t, |g| g
                .service
                .has_collection(Request::new(p.clone())))
            .await)
    }

    async fn describe_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionSchema> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, describe_collection, |t, p| self
            .agreeing("DescribeCollection", &t, |g| g
                .service
                .describe_collection(Request::new(p.clone())))
            .await)
    }

    async fn count_collection(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionRowCount> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, count_collection, |t, p| {
            let mut total = 0i64;
            let mut failure = None;
            for (g, r) in self
                .each(&t, |g| g.service.count_collection(Request::new(p.clone())))
                .await
            {
                match r {
                    Ok(c) => total = total.saturating_add(c.collection_row_count),
                    Err(e) => failure = failure.or(Some(in_group(&self.groups[g].name, e))),
                }
            }
            match failure {
                Some(e) => Err(e),
                None => Ok(CollectionRowCount {
                    status: crate::status::ok_status(),
                    collection_row_count: total,
                }),
            }
        })
    }

    async fn show_collections(&self, req: Request<Command>) -> RpcResult<CollectionNameList> {
        let p = req.into_inner();
        let all: Vec<usize> = (0..self.groups.len()).collect();
        let mut names = std::collections::BTreeSet::new();
        for (g, r) in self
            .each(&all, |g| {
                g.service.show_collections(Request::new(p.clone()))
            })
            .await
        {
            match r {
                Ok(list) => names.extend(list.collection_names),
                Err(e) => return reply(Err(in_group(&self.groups[g].name, e))),
            }
        }
        reply(Ok(CollectionNameList {
            status: crate::status::ok_status(),
            collection_names: names.into_iter().collect(),
        }))
    }

    async fn show_collection_info(
        &self,
        req: Request<CollectionName>,
    ) -> RpcResult<CollectionInfo> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, show_collection_info, |t, p| {
            let mut infos = Vec::new();
            let mut failure = None;
            for (g, r) in self
                .each(&t, |g| {
                    g.service.show_collection_info(Request::new(p.clone()))
                })
                .await
            {
                match r {
                    Ok(info) => infos.push((self.groups[g].name.as_str(), info.json_info)),
                    Err(e) => failure = failure.or(Some(in_group(&self.groups[g].name, e))),
                }
            }
            match failure {
                Some(e) => Err(e),
                None => {
                    let docs: Vec<(&str, &str)> =
                        infos.iter().map(|(g, j)| (*g, j.as_str())).collect();
                    merge_collection_info(&docs).map(|json_info| CollectionInfo {
                        status: crate::status::ok_status(),
                        json_info,
                    })
                }
            }
        })
    }

    async fn drop_collection(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, drop_collection, |t, p| self
            .on_all("DropCollection", &t, |g| g
                .service
                .drop_collection(Request::new(p.clone())))
            .await)
    }

    async fn create_index(&self, req: Request<IndexParam>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, create_index, |t, p| self
            .on_all("CreateIndex", &t, |g| g
                .service
                .create_index(Request::new(p.clone())))
            .await)
    }

    async fn describe_index(&self, req: Request<CollectionName>) -> RpcResult<IndexParam> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, describe_index, |t, p| self
            .agreeing("DescribeIndex", &t, |g| g
                .service
                .describe_index(Request::new(p.clone())))
            .await)
    }

    async fn drop_index(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, drop_index, |t, p| self
            .on_all("DropIndex", &t, |g| g
                .service
                .drop_index(Request::new(p.clone())))
            .await)
    }

    async fn create_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, create_partition, |t, p| self
            .on_all("CreatePartition", &t, |g| g
                .service
                .create_partition(Request::new(p.clone())))
            .await)
    }

    async fn has_partition(&self, req: Request<PartitionParam>) -> RpcResult<BoolReply> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, has_partition, |t, p| self
            .agreeing("HasPartition", &t, |g| g
                .service
                .has_partition(Request::new(p.clone())))
            .await)
    }

    async fn show_partitions(&self, req: Request<CollectionName>) -> RpcResult<PartitionList> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, show_partitions, |t, p| self
            .agreeing("ShowPartitions", &t, |g| g
                .service
                .show_partitions(Request::new(p.clone())))
            .await)
    }

    async fn drop_partition(&self, req: Request<PartitionParam>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, drop_partition, |t, p| self
            .on_all("DropPartition", &t, |g| g
                .service
                .drop_partition(Request::new(p.clone())))
            .await)
    }

    /// Inserts come encoded through `raw_insert`; a decoded one (a caller
    /// of this service directly) is encoded and takes the same path.
    async fn insert(&self, req: Request<InsertParam>) -> RpcResult<VectorIds> {
        let body = Bytes::from(req.into_inner().encode_to_vec());
        let encoded = self.insert_encoded(body).await;
        reply(
            VectorIds::decode(encoded)
                .map_err(|e| MilvusError::unexpected(format!("undecodable Insert reply: {e}"))),
        )
    }

    async fn get_vectors_by_id(&self, req: Request<VectorsIdentity>) -> RpcResult<VectorsData> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, get_vectors_by_id, |t, p| self
            .get_vectors_spread(p, &t)
            .await)
    }

    async fn get_vector_i_ds(&self, req: Request<GetVectorIDsParam>) -> RpcResult<VectorIds> {
        let p = req.into_inner();
        let (g, segment) =
            match self.qualified_group(&p.collection_name, &p.segment_name, "segment name") {
                Ok(found) => found,
                Err(e) => return reply(Err(e)),
            };
        let request = GetVectorIDsParam {
            collection_name: p.collection_name.clone(),
            segment_name: segment.to_string(),
        };
        self.groups[g]
            .service
            .get_vector_i_ds(Request::new(request))
            .await
    }

    async fn search(&self, req: Request<SearchParam>) -> RpcResult<TopKQueryResult> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, search, |t, p| self
            .search_spread(p, &t)
            .await)
    }

    async fn search_by_id(&self, req: Request<SearchByIdParam>) -> RpcResult<TopKQueryResult> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, search_by_id, |t, p| self
            .search_by_id_spread(p, &t)
            .await)
    }

    async fn search_in_files(
        &self,
        req: Request<SearchInFilesParam>,
    ) -> RpcResult<TopKQueryResult> {
        reply(self.search_in_files_spread(req.into_inner()).await)
    }

    /// `route <collection>` and `conn_stats` answer for every group
    /// concerned, as `{"groups": {"g1": <its answer>, ...}}` (a pinned
    /// collection's route: its group's answer alone); `set_config` goes to
    /// every group; the rest (`status`, `version`, `get_config`...) to the first.
    async fn cmd(&self, req: Request<Command>) -> RpcResult<StringReply> {
        let text = req.get_ref().cmd.trim().to_string();
        let targets: Vec<usize> = if let Some(name) = text.strip_prefix("route ") {
            self.home(name.trim())
        } else if text == "conn_stats" || text.starts_with("set_config") {
            (0..self.groups.len()).collect()
        } else {
            vec![0]
        };
        if targets.len() == 1 {
            return self.groups[targets[0]].service.cmd(req).await;
        }
        let p = req.into_inner();
        let results = self
            .each(&targets, |g| g.service.cmd(Request::new(p.clone())))
            .await;
        if text.starts_with("set_config") {
            let statuses = results
                .into_iter()
                .map(|(g, r)| (g, r.map(|_| Status::default())))
                .collect();
            return reply(self.all_ok("set_config", statuses).map(|_| StringReply {
                status: crate::status::ok_status(),
                string_reply: String::new(),
            }));
        }
        let mut answers = serde_json::Map::new();
        for (g, r) in results {
            let name = &self.groups[g].name;
            match r {
                Ok(answer) => {
                    let doc = serde_json::from_str(&answer.string_reply)
                        .unwrap_or(serde_json::Value::String(answer.string_reply));
                    answers.insert(name.clone(), doc);
                }
                Err(e) => return reply(Err(in_group(name, e))),
            }
        }
        reply(Ok(StringReply {
            status: crate::status::ok_status(),
            string_reply: serde_json::json!({ "groups": answers }).to_string(),
        }))
    }

    async fn delete_by_id(&self, req: Request<DeleteByIdParam>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, delete_by_id, |t, p| self
            .delete_spread(p, &t)
            .await)
    }

    async fn preload_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, preload_collection, |t, p| self
            .on_all("PreloadCollection", &t, |g| g
                .service
                .preload_collection(Request::new(p.clone())))
            .await)
    }

    async fn release_collection(&self, req: Request<PreloadCollectionParam>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, release_collection, |t, p| self
            .on_all("ReleaseCollection", &t, |g| g
                .service
                .release_collection(Request::new(p.clone())))
            .await)
    }

    async fn reload_segments(&self, req: Request<ReLoadSegmentsParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        let mut by_group: Vec<Vec<String>> = vec![Vec::new(); self.groups.len()];
        for s in &p.segment_id_array {
            match self.qualified_group(&p.collection_name, s, "segment id") {
                Ok((g, bare)) => by_group[g].push(bare.to_string()),
                Err(e) => return reply(Err(e)),
            }
        }
        let targets: Vec<usize> = (0..self.groups.len())
            .filter(|g| !by_group[*g].is_empty())
            .collect();
        let results = join_all(targets.iter().map(|&g| {
            let request = ReLoadSegmentsParam {
                collection_name: p.collection_name.clone(),
                segment_id_array: by_group[g].clone(),
            };
            let group = &self.groups[g];
            async move {
                (
                    g,
                    outcome(group.service.reload_segments(Request::new(request)).await),
                )
            }
        }))
        .await;
        reply(self.all_ok("ReloadSegments", results))
    }

    async fn flush(&self, req: Request<FlushParam>) -> RpcResult<Status> {
        let p = req.into_inner();
        // Each group flushes the named collections that live in it (all, when none is named).
        let results = join_all((0..self.groups.len()).filter_map(|g| {
            let names: Vec<String> = p
                .collection_name_array
                .iter()
                .filter(|n| self.home(n).contains(&g))
                .cloned()
                .collect();
            if names.is_empty() && !p.collection_name_array.is_empty() {
                return None;
            }
            let group = &self.groups[g];
            let request = FlushParam {
                collection_name_array: names,
            };
            Some(async move { (g, outcome(group.service.flush(Request::new(request)).await)) })
        }))
        .await;
        reply(self.all_ok("Flush", results))
    }

    async fn compact(&self, req: Request<CollectionName>) -> RpcResult<Status> {
        let name = req.get_ref().collection_name.clone();
        routed!(self, &name, req, compact, |t, p| self
            .on_all("Compact", &t, |g| g
                .service
                .compact(Request::new(p.clone())))
            .await)
    }

    crate::hybrid_rpcs_unimplemented!();
}
