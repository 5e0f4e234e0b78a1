//! Query coalescing (`[coalesce]`, off by default): while a `SearchInFiles`
//! to a node is in flight, other searches bound for the same node with the
//! same files, collection, tags, topk and params wait in that node's lane;
//! when the call returns, the waiting searches go together as ONE call with
//! their queries stacked (up to `max_batch_nq`), and each gets back exactly
//! its own rows. A lone search never waits: its call goes at once.
//!
//! Real Milvus 1.x read-only nodes query MySQL on every `SearchInFiles` and
//! scan each file once per call for all its queries, so fifty concurrent
//! nq=1 searches cost them one call instead of fifty. Every query's top-k is
//! computed on its own by the node, so a stacked answer's rows are the rows
//! each search would have got alone (the property test below checks the
//! splitting; `tests/coalesce.rs` checks it against real nodes).
//!
//! Hand-written rather than a batching crate: the lane is keyed by the exact
//! encoded pieces of the request, the first call goes without any timer, and
//! a cancelled caller hands its lane on (see [`Lane`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::search::{stacked_request, EncodedSearch, NodeFailure};
use crate::merge::EncodedHits;
use crate::status::MilvusError;
use crate::telemetry::Metrics;
use crate::wire::ErrorCode;

/// What calls a node: the encoded request and its number of queries in,
/// the node's checked answer out.
pub(super) trait NodeCall: Clone + Send + Sync + 'static {
    fn call(&self, body: Bytes, nq: usize) -> impl Future<Output = NodeAnswer> + Send + 'static;
}

pub(super) type NodeAnswer = Result<EncodedHits, NodeFailure>;

/// The searches that may share one call. The file ids are compared by
/// identity: a collection's encoded ids per node are kept with its placement
/// for a whole snapshot, so concurrent searches share the very same buffer,
/// and the lane holds a clone of it, so no other live buffer can have its
/// address. (Comparing 45 KB of ids per search at 10 000 files would cost
/// more than the call it saves.)
#[derive(Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    node: String,
    file_ids: (usize, usize),
    head: Bytes,
    tail: Bytes,
}

/// A node's lane: it exists while a call of its key is in flight. The
/// searches queued meanwhile go in the next call, made by whoever finishes
/// the current one: its caller when it returns, or, if that caller was
/// cancelled (a hedge won, the client left), the caller's drop, which hands
/// the queue to a task so no waiter is stranded.
struct Lane {
    file_ids: Bytes,
    queue: Vec<Waiter>,
    queued_nq: usize,
}

struct Waiter {
    queries: Bytes,
    nq: usize,
    /// The waiting search's deadline (the stacked call runs until the last one).
    deadline: Option<Instant>,
    answer: oneshot::Sender<NodeAnswer>,
}

/// What a search does on arriving at its lane.
enum Turn {
    /// No call of its kind in flight: it makes one at once and holds the lane.
    Leading,
    /// Waits for the next stacked call.
    Queued(oneshot::Receiver<NodeAnswer>),
    /// Goes alone: too many queries to stack, or the next call is full.
    Alone,
}

/// The lanes of every node.
pub(super) struct Coalescer {
    max_batch_nq: usize,
    metrics: Arc<Metrics>,
    lanes: Mutex<HashMap<LaneKey, Lane>>,
}

impl Coalescer {
    pub fn new(max_batch_nq: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            max_batch_nq: max_batch_nq.max(1),
            metrics,
            lanes: Mutex::new(HashMap::new()),
        })
    }

    /// `search` over `file_ids` on `node`: at once when no call of its kind
    /// is in flight there, else in the next stacked call.
    pub async fn search<C: NodeCall>(
        self: &Arc<Self>,
        node: &str,
        file_ids: &Bytes,
        search: &EncodedSearch,
        call: C,
    ) -> NodeAnswer {
        if search.nq >= self.max_batch_nq {
            return call.call(search.request(file_ids), search.nq).await;
        }
        let key = LaneKey {
            node: node.to_string(),
            file_ids: (file_ids.as_ptr() as usize, file_ids.len()),
            head: search.head.clone(),
            tail: search.tail.clone(),
        };
        let turn = match self.lanes.lock() {
            Ok(mut lanes) => match lanes.get_mut(&key) {
                Some(lane) if lane.queued_nq + search.nq <= self.max_batch_nq => {
                    let (answer, receiver) = oneshot::channel();
                    lane.queue.push(Waiter {
                        queries: search.queries.clone(),
                        nq: search.nq,
                        deadline: crate::deadline::expires_at(),
                        answer,
                    });
                    lane.queued_nq += search.nq;
                    Turn::Queued(receiver)
                }
                // The next call is full: this one goes alone, beside it.
                Some(_) => Turn::Alone,
                None => {
                    lanes.insert(
                        key.clone(),
                        Lane {
                            file_ids: file_ids.clone(),
                            queue: Vec::new(),
                            queued_nq: 0,
                        },
                    );
                    Turn::Leading
                }
            },
            Err(_) => Turn::Alone,
        };
        match turn {
            Turn::Queued(receiver) => receiver.await.unwrap_or_else(|_| {
                Err(NodeFailure::Unreachable(MilvusError::new(
                    ErrorCode::UnexpectedError,
                    format!("the coalesced search call to {node} ended without an answer"),
                )))
            }),
            Turn::Alone => call.call(search.request(file_ids), search.nq).await,
            Turn::Leading => {
                let mut lead = Leading {
                    coalescer: self,
                    key: Some(key),
                    call: call.clone(),
                };
                let answer = call.call(search.request(file_ids), search.nq).await;
                lead.hand_on();
                answer
            }
        }
    }

    /// The next stacked call's searches of lane `key` (still waiting, up to
    /// `max_batch_nq` queries), with its file ids; `None` (and the lane
    /// closed) when nobody waits.
    fn next_batch(&self, key: &LaneKey) -> Option<(Bytes, Vec<Waiter>)> {
        let mut lanes = self.lanes.lock().ok()?;
        let lane = lanes.get_mut(key)?;
        lane.queue.retain(|w| !w.answer.is_closed());
        if lane.queue.is_empty() {
            lanes.remove(key);
            return None;
        }
        let mut taken_nq = 0;
        let count = lane
            .queue
            .iter()
            .take_while(|w| {
                taken_nq += w.nq;
                taken_nq <= self.max_batch_nq
            })
            .count()
            .max(1);
        let batch: Vec<Waiter> = lane.queue.drain(..count).collect();
        lane.queued_nq = lane.queue.iter().map(|w| w.nq).sum();
        Some((lane.file_ids.clone(), batch))
    }

    /// Sends the lane's stacked calls one after another until nobody waits.
    async fn drain_lane<C: NodeCall>(self: Arc<Self>, key: LaneKey, call: C) {
        while let Some((file_ids, batch)) = self.next_batch(&key) {
            let nq: usize = batch.iter().map(|w| w.nq).sum();
            self.metrics.observe_coalesced_call(batch.len());
            let queries: Vec<&Bytes> = batch.iter().map(|w| &w.queries).collect();
            let body = stacked_request(&file_ids, &key.head, &queries, &key.tail);
            // The call lasts as long as its last waiter may wait (no deadline
            // if one of them has none).
            let deadline = batch
                .iter()
                .map(|w| w.deadline)
                .try_fold(None::<Instant>, |latest, d| {
                    d.map(|d| Some(latest.map_or(d, |l| l.max(d))))
                })
                .flatten();
            let span = tracing::debug_span!("coalesced_call", backend = %key.node, searches = batch.len(), nq);
            let sent = call.call(body, nq).instrument(span);
            let answer = match deadline {
                Some(deadline) => crate::deadline::within(deadline, sent).await,
                None => sent.await,
            };
            let nqs: Vec<usize> = batch.iter().map(|w| w.nq).collect();
            for (waiter, rows) in batch.into_iter().zip(split_rows(answer, &nqs)) {
                // A waiter that left meanwhile is simply not answered.
                let _ = waiter.answer.send(rows);
            }
        }
    }
}

/// The answer of a stacked call cut into each waiter's rows, in order; a
/// failure is every waiter's failure.
fn split_rows(answer: NodeAnswer, nqs: &[usize]) -> Vec<NodeAnswer> {
    let hits = match answer {
        Ok(hits) => hits,
        Err(failure) => return nqs.iter().map(|_| Err(failure.clone())).collect(),
    };
    // Milvus' "no result" (no rows at all) is every search's answer.
    if hits.nq() == 0 {
        return nqs.iter().map(|_| Ok(hits.clone())).collect();
    }
    let mut first = 0;
    nqs.iter()
        .map(|&nq| {
            let rows = hits.rows(first, nq);
            first += nq;
            if rows.nq() == nq {
                Ok(rows)
            } else {
                Err(NodeFailure::Milvus(MilvusError::new(
                    ErrorCode::IllegalSearchResult,
                    "a coalesced search call answered fewer rows than it had queries",
                )))
            }
        })
        .collect()
}

/// The caller whose call holds a lane open; when it finishes or is dropped,
/// the lane's waiting searches are sent on by a task of their own.
struct Leading<'a, C: NodeCall> {
    coalescer: &'a Arc<Coalescer>,
    key: Option<LaneKey>,
    call: C,
}

impl<C: NodeCall> Leading<'_, C> {
    fn hand_on(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let waiting = self
            .coalescer
            .lanes
            .lock()
            .map(|mut lanes| match lanes.get(&key) {
                Some(lane) if !lane.queue.is_empty() => true,
                _ => {
                    lanes.remove(&key);
                    false
                }
            })
            .unwrap_or(false);
        if waiting {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(self.coalescer.clone().drain_lane(key, self.call.clone()));
                }
                Err(_) => {
                    // No runtime (shutting down): the waiters' senders drop
                    // with the lane, and each waiter gets an error at once.
                    if let Ok(mut lanes) = self.coalescer.lanes.lock() {
                        lanes.remove(&key);
                    }
                }
            }
        }
    }
}

impl<C: NodeCall> Drop for Leading<'_, C> {
    fn drop(&mut self) {
        self.hand_on();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::future::join_all;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::merge::TopKHits;
    use crate::proxy::placements::encode_file_ids;
    use crate::wire::{KeyValuePair, RowRecord, SearchInFilesParam, SearchParam};

    const STRIDE: usize = 3;

    /// A node that answers every query on its own (as Milvus does): row `j`
    /// of a query is an id and distance derived from its vector. Each call
    /// takes 10 ms (paused time), so searches arriving meanwhile queue.
    #[derive(Clone, Default)]
    struct FakeNode {
        calls: Arc<AtomicUsize>,
        /// Every call's request, decoded.
        seen: Arc<Mutex<Vec<SearchInFilesParam>>>,
        fail: bool,
    }

    fn row_of(query: &RowRecord) -> (Vec<i64>, Vec<f32>) {
        let seed = query
            .float_data
            .iter()
            .fold(0i64, |h, x| h * 31 + (*x as i64));
        let ids = (0..STRIDE as i64).map(|j| seed * 10 + j).collect();
        let distances = (0..STRIDE)
            .map(|j| j as f32 + query.float_data[0])
            .collect();
        (ids, distances)
    }

    impl NodeCall for FakeNode {
        fn call(
            &self,
            body: Bytes,
            nq: usize,
        ) -> impl Future<Output = NodeAnswer> + Send + 'static {
            let this = self.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                let request = SearchInFilesParam::decode(body)
                    .map_err(|e| NodeFailure::Milvus(MilvusError::unexpected(e.to_string())))?;
                if let Ok(mut seen) = this.seen.lock() {
                    seen.push(request.clone());
                }
                if this.fail {
                    return Err(NodeFailure::Unreachable(MilvusError::unexpected(
                        "node down",
                    )));
                }
                let queries = request.search_param.unwrap_or_default().query_record_array;
                assert_eq!(queries.len(), nq);
                Ok(encoded(&hits_of(&queries)))
            }
        }
    }

    fn search_of(nq: usize, first: f32) -> SearchParam {
        SearchParam {
            collection_name: "c".into(),
            partition_tag_array: vec![],
            query_record_array: (0..nq)
                .map(|i| RowRecord {
                    float_data: vec![first + i as f32, 2.0],
                    binary_data: Default::default(),
                })
                .collect(),
            topk: STRIDE as i64,
            extra_params: vec![KeyValuePair {
                key: "params".into(),
                value: "{\"nprobe\": 8}".into(),
            }],
        }
    }

    /// `queries` answered by the fake node.
    fn hits_of(queries: &[RowRecord]) -> TopKHits {
        let mut hits = TopKHits {
            nq: queries.len(),
            stride: STRIDE,
            ..TopKHits::default()
        };
        for q in queries {
            let (ids, distances) = row_of(q);
            hits.ids.extend(ids);
            hits.distances.extend(distances);
        }
        hits
    }

    fn encoded(hits: &TopKHits) -> EncodedHits {
        let reply = hits.clone().into_wire().encode_to_vec();
        EncodedHits::parse(reply.into()).expect("a well-formed reply")
    }

    /// The rows one search should get: each of its queries answered alone.
    fn alone(search: &SearchParam) -> TopKHits {
        hits_of(&search.query_record_array)
    }

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a test runtime")
    }

    /// All `searches` at once through one coalescer over the same files.
    async fn concurrently(
        coalescer: &Arc<Coalescer>,
        node: &FakeNode,
        searches: &[SearchParam],
    ) -> Vec<NodeAnswer> {
        let file_ids = encode_file_ids(&[7, 8]);
        let encoded: Vec<EncodedSearch> = searches.iter().map(EncodedSearch::new).collect();
        join_all(
            encoded
                .iter()
                .map(|e| coalescer.search("n1:19530", &file_ids, e, node.clone())),
        )
        .await
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the mix of nq and batch size, every search gets exactly
        /// the rows it would get alone, and concurrent searches share calls.
        #[test]
        fn each_search_gets_exactly_its_own_rows(
            nqs in proptest::collection::vec(1usize..6, 1..24),
            max_batch_nq in 1usize..16,
        ) {
            let searches: Vec<SearchParam> = nqs
                .iter()
                .enumerate()
                .map(|(i, nq)| search_of(*nq, (i * 100) as f32))
                .collect();
            let node = FakeNode::default();
            let coalescer = Coalescer::new(max_batch_nq, Metrics::new());
            let answers = paused_runtime().block_on(concurrently(&coalescer, &node, &searches));
            for (search, answer) in searches.iter().zip(answers) {
                let hits = answer.map_err(|_| TestCaseError::fail("a search failed"))?;
                prop_assert_eq!(hits.to_hits(), alone(search));
            }
            let calls = node.calls.load(Ordering::SeqCst);
            prop_assert!(calls <= searches.len());
            let stackable = nqs.iter().filter(|nq| **nq < max_batch_nq).count();
            if stackable >= 3 && nqs[0] < max_batch_nq && max_batch_nq >= 12 {
                prop_assert!(calls < searches.len(), "{} calls for {} searches", calls, searches.len());
            }
            // Every call carried the shared files, collection, topk and params.
            let seen = node.seen.lock().map(|s| s.clone()).unwrap_or_default();
            for request in seen {
                prop_assert_eq!(request.file_id_array, vec!["7".to_string(), "8".to_string()]);
                let p = request.search_param.unwrap_or_default();
                prop_assert!(p.query_record_array.len() <= max_batch_nq.max(*nqs.iter().max().unwrap_or(&1)));
                prop_assert_eq!((p.collection_name.as_str(), p.topk), ("c", STRIDE as i64));
                prop_assert_eq!(p.extra_params, searches[0].extra_params.clone());
            }
            prop_assert!(coalescer.lanes.lock().map(|l| l.is_empty()).unwrap_or(false));
        }
    }

    #[test]
    fn one_search_goes_at_once_and_many_share_two_calls() {
        let node = FakeNode::default();
        let coalescer = Coalescer::new(256, Metrics::new());
        let runtime = paused_runtime();
        let one = runtime.block_on(concurrently(&coalescer, &node, &[search_of(1, 0.0)]));
        assert!(one[0].is_ok());
        assert_eq!(node.calls.load(Ordering::SeqCst), 1);
        let many: Vec<SearchParam> = (0..50).map(|i| search_of(1, i as f32)).collect();
        let answers = runtime.block_on(concurrently(&coalescer, &node, &many));
        assert!(answers.iter().all(Result::is_ok));
        // The first goes alone; the 49 that arrived meanwhile share one call.
        assert_eq!(node.calls.load(Ordering::SeqCst), 1 + 2);
    }

    #[test]
    fn a_failed_stacked_call_fails_every_search_in_it() {
        let node = FakeNode {
            fail: true,
            ..FakeNode::default()
        };
        let coalescer = Coalescer::new(256, Metrics::new());
        let searches: Vec<SearchParam> = (0..5).map(|i| search_of(2, i as f32)).collect();
        let answers = paused_runtime().block_on(concurrently(&coalescer, &node, &searches));
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(NodeFailure::Unreachable(_)))));
        assert_eq!(node.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_cancelled_leader_hands_its_waiters_on() {
        let node = FakeNode::default();
        let coalescer = Coalescer::new(256, Metrics::new());
        let file_ids = encode_file_ids(&[7, 8]);
        let searches: Vec<EncodedSearch> = (0..4)
            .map(|i| EncodedSearch::new(&search_of(1, i as f32)))
            .collect();
        let answers = paused_runtime().block_on(async {
            let leader = coalescer.search("n1:19530", &file_ids, &searches[0], node.clone());
            // The leader gives up after 5 ms, before its 10 ms call answers.
            let leader = tokio::time::timeout(Duration::from_millis(5), leader);
            let others = join_all(
                searches[1..]
                    .iter()
                    .map(|e| coalescer.search("n1:19530", &file_ids, e, node.clone())),
            );
            let (gave_up, others) = tokio::join!(leader, others);
            assert!(gave_up.is_err());
            others
        });
        for (i, answer) in answers.into_iter().enumerate() {
            let expected = alone(&search_of(1, (i + 1) as f32));
            assert_eq!(answer.ok().map(|h| h.to_hits()), Some(expected));
        }
    }

    #[test]
    fn a_search_as_large_as_a_batch_goes_alone() {
        let node = FakeNode::default();
        let coalescer = Coalescer::new(4, Metrics::new());
        let searches = [search_of(4, 0.0), search_of(4, 10.0), search_of(1, 20.0)];
        let answers = paused_runtime().block_on(concurrently(&coalescer, &node, &searches));
        for (search, answer) in searches.iter().zip(answers) {
            assert_eq!(answer.ok().map(|h| h.to_hits()), Some(alone(search)));
        }
        // Both nq=4 searches go alone; the nq=1 one leads its own lane.
        assert_eq!(node.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn stacked_requests_encode_as_prost_encodes_the_stacked_message() {
        let (a, b) = (search_of(2, 0.0), search_of(3, 50.0));
        let (ea, eb) = (EncodedSearch::new(&a), EncodedSearch::new(&b));
        let file_ids = encode_file_ids(&[1, 2, 3]);
        let body = stacked_request(&file_ids, &ea.head, &[&ea.queries, &eb.queries], &ea.tail);
        let mut stacked = a.clone();
        stacked.query_record_array.extend(b.query_record_array);
        let expected = SearchInFilesParam {
            file_id_array: vec!["1".into(), "2".into(), "3".into()],
            search_param: Some(stacked),
        };
        assert_eq!(body.as_ref(), expected.encode_to_vec().as_slice());
    }

    #[test]
    fn rows_are_split_in_order_and_a_short_answer_is_an_error() {
        let hits = TopKHits {
            nq: 3,
            stride: 2,
            ids: vec![1, 2, 3, 4, 5, 6],
            distances: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        };
        let ids = |p: &NodeAnswer| p.as_ref().ok().map(|h| h.to_hits().ids);
        let parts = split_rows(Ok(encoded(&hits)), &[1, 2]);
        assert_eq!(ids(&parts[0]), Some(vec![1, 2]));
        assert_eq!(ids(&parts[1]), Some(vec![3, 4, 5, 6]));
        let short = TopKHits {
            nq: 1,
            stride: 2,
            ids: vec![1, 2],
            distances: vec![0.1, 0.2],
        };
        let parts = split_rows(Ok(encoded(&short)), &[1, 1]);
        assert!(parts[0].is_ok());
        assert!(matches!(parts[1], Err(NodeFailure::Milvus(_))));
        let empty = split_rows(Ok(encoded(&TopKHits::empty())), &[2, 1]);
        assert!(empty.iter().all(|p| p.as_ref().is_ok_and(|h| h.nq() == 0)));
    }
}
