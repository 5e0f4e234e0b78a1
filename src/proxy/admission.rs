//! Admission control of searches: at most `max_inflight_searches` served at
//! once (tower's `ConcurrencyLimit` under `LoadShed`, so the one over the
//! limit is refused at once instead of queued), at most `max_queued_work`
//! (nq x topk summed over the searches being served), and no search whose
//! reply could not fit in one gRPC message. A refusal is gRPC
//! `RESOURCE_EXHAUSTED` naming the limit, counted in `mishards_shed_requests_total`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::{Service, ServiceExt};

use crate::deadline::{is_search, method_of};
use crate::telemetry::Metrics;

/// Bytes of one (id, distance) pair in a search reply.
const RESULT_ENTRY_BYTES: u128 = 12;
/// Room left in the message for the reply's status and framing.
const REPLY_OVERHEAD_BYTES: u128 = 64 * 1024;

/// Routes searches through a shared concurrency limit that sheds when full;
/// every other RPC goes straight to `inner`.
#[derive(Clone)]
pub struct SearchAdmission<S> {
    inner: S,
    limited: LoadShed<ConcurrencyLimit<S>>,
    max_inflight: usize,
    metrics: Arc<Metrics>,
}

impl<S: Clone> SearchAdmission<S> {
    pub fn new(inner: S, max_inflight: usize, metrics: Arc<Metrics>) -> Self {
        let limited = LoadShed::new(ConcurrencyLimit::new(inner.clone(), max_inflight));
        Self {
            inner,
            limited,
            max_inflight,
            metrics,
        }
    }
}

impl<S> tonic::server::NamedService for SearchAdmission<S>
where
    S: tonic::server::NamedService,
{
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for SearchAdmission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !is_search(method_of(req.uri().path())) {
            return Box::pin(self.inner.call(req));
        }
        let mut limited = self.limited.clone();
        let max = self.max_inflight;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            // LoadShed is always ready: it records whether the limit had room.
            let answer = match limited.ready().await {
                Ok(svc) => svc.call(req).await,
                Err(e) => Err(e),
            };
            Ok(answer.unwrap_or_else(|_overloaded| {
                metrics.resilience.shed("inflight");
                tonic::Status::resource_exhausted(format!(
                    "proxy busy: {max} searches in flight (admission.max_inflight_searches); retry later"
                ))
                .into_http()
            }))
        })
    }
}

/// The nq x topk budget over the searches being served. Hand-written: tower's
/// limits count requests, and the cost is only known once the request is
/// decoded, inside the handler.
pub struct WorkBudget {
    in_use: Arc<AtomicU64>,
    max_work: u64,
    max_message_size: u64,
    metrics: Arc<Metrics>,
}

/// Holds a search's share of the work budget until dropped.
#[must_use = "the work counts only while the permit lives"]
pub struct WorkPermit {
    in_use: Arc<AtomicU64>,
    cost: u64,
}

impl Drop for WorkPermit {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.cost, Ordering::AcqRel);
    }
}

impl WorkBudget {
    pub fn new(max_work: u64, max_message_size: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            in_use: Arc::new(AtomicU64::new(0)),
            max_work,
            max_message_size,
            metrics,
        }
    }

    /// Admits a search of `nq` queries and `topk`, or refuses it with
    /// RESOURCE_EXHAUSTED: its reply could not fit in a message (the code
    /// gRPC itself uses for an oversized message), or the queued work is full.
    pub fn admit(&self, nq: usize, topk: i64) -> Result<WorkPermit, tonic::Status> {
        let topk = u64::try_from(topk).unwrap_or(0);
        let nq = nq as u64;
        if let Err(message) = reply_fits(nq, topk, self.max_message_size) {
            self.metrics.resilience.shed("result_size");
            return Err(tonic::Status::resource_exhausted(message));
        }
        let cost = nq.saturating_mul(topk).max(1);
        match try_take(&self.in_use, cost, self.max_work) {
            Some(()) => Ok(WorkPermit {
                in_use: self.in_use.clone(),
                cost,
            }),
            None => {
                self.metrics.resilience.shed("queued_work");
                Err(tonic::Status::resource_exhausted(format!(
                    "proxy busy: this search (nq x topk = {cost}) does not fit in the queued work \
                     limit of {} (admission.max_queued_work); retry later or send a smaller search",
                    self.max_work
                )))
            }
        }
    }
}

/// Adds `cost` to `in_use` when the sum stays within `max`; a single search
/// larger than `max` is admitted when nothing else runs, so it can be served.
fn try_take(in_use: &AtomicU64, cost: u64, max: u64) -> Option<()> {
    in_use
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let total = used.saturating_add(cost);
            (used == 0 || total <= max).then_some(total)
        })
        .ok()
        .map(|_| ())
}

/// Whether a reply of `nq` x `topk` hits fits in `max_message_size` bytes.
fn reply_fits(nq: u64, topk: u64, max_message_size: u64) -> Result<(), String> {
    let bytes = u128::from(nq) * u128::from(topk) * RESULT_ENTRY_BYTES + REPLY_OVERHEAD_BYTES;
    if bytes > u128::from(max_message_size) {
        return Err(format!(
            "search result too large: nq {nq} x topk {topk} x 12 bytes needs about {bytes} bytes, \
             over the {max_message_size}-byte message limit (server.max_message_size); \
             send fewer queries per request or a smaller topk"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_taken_within_the_limit_and_a_lone_big_search_passes() {
        let used = AtomicU64::new(0);
        assert_eq!(try_take(&used, 500, 100), Some(()), "alone, it may run");
        assert_eq!(try_take(&used, 1, 100), None);
        used.store(60, Ordering::Relaxed);
        assert_eq!(try_take(&used, 40, 100), Some(()));
        assert_eq!(used.load(Ordering::Relaxed), 100);
        assert_eq!(try_take(&used, 1, 100), None);
    }

    #[test]
    fn permits_give_back_their_work() {
        let budget = WorkBudget::new(1000, 1 << 30, Metrics::new());
        let a = budget.admit(10, 50).expect("fits");
        let Err(refused) = budget.admit(10, 60) else {
            panic!("over the budget")
        };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("admission.max_queued_work"));
        drop(a);
        assert!(budget.admit(10, 60).is_ok());
    }

    #[test]
    fn replies_larger_than_a_message_are_refused() {
        assert!(reply_fits(1, 16384, 4 << 20).is_ok());
        let message = reply_fits(1000, 16384, 64 << 20).expect_err("too big");
        assert!(message.contains("server.max_message_size"), "{message}");
        let budget = WorkBudget::new(u64::MAX, 64 << 20, Metrics::new());
        let Err(refused) = budget.admit(1000, 16384) else {
            panic!("too big")
        };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }
}
