//! Every request has a deadline: the client's `grpc-timeout` when it sent
//! one, else the configured default for its kind (search or other). A tower
//! layer starts the clock, makes the deadline visible to the backend calls
//! made on the request's behalf (a task-local read by [`remaining`]), and
//! answers gRPC `DEADLINE_EXCEEDED` the moment it passes, dropping the work.
//!
//! Why `DEADLINE_EXCEEDED` rather than a Milvus status: it is what the
//! client's own gRPC stub reports for the same event, pymilvus raises it
//! whatever the RPC's reply type, and it says "outcome unknown", which is
//! the truth for a write the writer may still apply (never an acknowledgement).
//! Backend calls get the time left plus [`BACKEND_SLACK`], so this layer's
//! answer always comes first and the client sees one code for one cause.
//! Hand-written: tonic's server `timeout` has a single default for every
//! method and neither counts expiries nor exposes the deadline to handlers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::telemetry::Metrics;

tokio::task_local! {
    static DEADLINE: Instant;
    static AWAITED: Awaited;
}

/// The backend nodes the current request is still waiting on, so that the
/// deadline answer can name them ("still waiting on 10.0.1.1:19530"): the
/// operator's first question when a write times out is which node hung.
#[derive(Clone, Default)]
struct Awaited(Arc<std::sync::Mutex<Vec<String>>>);

impl Awaited {
    fn names(&self) -> Vec<String> {
        let mut names = self.0.lock().map(|n| n.clone()).unwrap_or_default();
        names.sort();
        names.dedup();
        names
    }
}

/// Marks a call to `node` as unanswered until the guard drops (no effect,
/// and no allocation, outside a request or in a task spawned off it).
pub fn awaiting(node: &str) -> AwaitingGuard<'_> {
    let awaited = AWAITED.try_with(|a| a.clone()).ok();
    if let Some(a) = &awaited {
        if let Ok(mut names) = a.0.lock() {
            names.push(node.to_string());
        }
    }
    AwaitingGuard { awaited, node }
}

/// See [`awaiting`].
pub struct AwaitingGuard<'a> {
    awaited: Option<Awaited>,
    node: &'a str,
}

impl Drop for AwaitingGuard<'_> {
    fn drop(&mut self) {
        if let Some(a) = &self.awaited {
            if let Ok(mut names) = a.0.lock() {
                if let Some(i) = names.iter().position(|n| n == self.node) {
                    names.swap_remove(i);
                }
            }
        }
    }
}

/// The deadline answer's text: what timed out, and on which nodes.
fn expired_message(method: &str, budget: Duration, waiting_on: &[String]) -> String {
    let mut text = format!(
        "{method}: no complete answer within the request deadline of {}",
        humantime::format_duration(budget)
    );
    if !waiting_on.is_empty() {
        text.push_str("; still waiting on ");
        text.push_str(&waiting_on.join(", "));
    }
    text
}

/// How much later than the request's deadline a backend call gives up.
pub const BACKEND_SLACK: Duration = Duration::from_millis(50);

/// The RPCs whose default deadline is the search one.
pub fn is_search(method: &str) -> bool {
    matches!(method, "Search" | "SearchByID" | "SearchInFiles")
}

/// The method name of a gRPC path (`/milvus.grpc.MilvusService/Search`).
pub fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit
/// (H, M, S, m, u, n). `None` when malformed (the default then applies).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Time left before the current request's deadline; `None` outside a request.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

/// When the current request's deadline passes; `None` outside a request.
pub fn expires_at() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `fut` with `deadline` as its request deadline (as the layer does).
pub async fn within<F: Future>(deadline: Instant, fut: F) -> F::Output {
    DEADLINE.scope(deadline, fut).await
}

/// The timeout of one backend call: the configured cap, bounded by the
/// request's deadline (plus [`BACKEND_SLACK`]).
pub fn backend_timeout(cap: Option<Duration>) -> Option<Duration> {
    let left = remaining().map(|r| r + BACKEND_SLACK);
    match (cap, left) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    }
}

/// `message` as a request to a backend, carrying the time left before the
/// current request's deadline (plus [`BACKEND_SLACK`]) as its own
/// `grpc-timeout`. The slack matters: tonic's client enforces the header it
/// sends, so without it the backend call would fail at the very instant the
/// layer answers, and the two would race for the reply.
pub fn outgoing<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(left) = remaining() {
        request.set_timeout(left + BACKEND_SLACK);
    }
    request
}

/// Whether the current request's deadline has passed (never outside a request).
pub fn passed() -> bool {
    expires_at().is_some_and(|d| Instant::now() >= d)
}

/// Waits for the layer to answer `DEADLINE_EXCEEDED`: work that finds the
/// deadline passed (a backend call that gave up with it) parks here rather
/// than answer something else (trying other nodes with no time left, then
/// "no node reachable"), so one cause gives the client one code. Only
/// called when [`passed`] is true, i.e. inside the layer's scope, whose
/// timer drops this future at once.
pub async fn yield_to_layer<T>() -> T {
    std::future::pending().await
}

/// The default deadlines, per kind of RPC.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub search: Duration,
    pub other: Duration,
}

/// Wraps the gRPC routes in [`Deadlines`].
#[derive(Clone)]
pub struct DeadlineLayer {
    defaults: Defaults,
    metrics: Arc<Metrics>,
}

impl DeadlineLayer {
    pub fn new(defaults: Defaults, metrics: Arc<Metrics>) -> Self {
        Self { defaults, metrics }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadlines<S>;
    fn layer(&self, inner: S) -> Deadlines<S> {
        Deadlines {
            inner,
            defaults: self.defaults,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Deadlines<S> {
    inner: S,
    defaults: Defaults,
    metrics: Arc<Metrics>,
}

impl<S> tonic::server::NamedService for Deadlines<S>
where
    S: tonic::server::NamedService,
{
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Deadlines<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = method_of(req.uri().path()).to_string();
        let default = if is_search(&method) {
            self.defaults.search
        } else {
            self.defaults.other
        };
        let budget = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(default);
        let deadline = Instant::now() + budget;
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        let awaited = Awaited::default();
        let names = awaited.clone();
        let scoped = AWAITED.scope(awaited, DEADLINE.scope(deadline, fut));
        Box::pin(async move {
            let mut scoped = std::pin::pin!(scoped);
            // Not `timeout_at`: it drops the work before the nodes it was
            // still waiting on can be read.
            tokio::select! {
                response = &mut scoped => return response,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let waiting_on = names.names();
            metrics.resilience.deadline_exceeded(&method);
            tracing::warn!(%method, ?waiting_on, "request deadline passed; answered DEADLINE_EXCEEDED");
            Ok(
                tonic::Status::deadline_exceeded(expired_message(&method, budget, &waiting_on))
                    .into_http(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_and_garbage() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn the_expired_answer_names_the_nodes_still_awaited() {
        let awaited = Awaited::default();
        let names = awaited.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(AWAITED.scope(awaited, async {
            let _writer = awaiting("10.0.1.1:19530");
            {
                let _done = awaiting("10.0.1.2:19530");
            }
            let _again = awaiting("10.0.1.1:19530");
            assert_eq!(names.names(), vec!["10.0.1.1:19530".to_string()]);
        }));
        assert!(names.names().is_empty(), "guards remove their node");
        let text = expired_message("Insert", Duration::from_secs(3), &["10.0.1.1:19530".into()]);
        assert_eq!(
            text,
            "Insert: no complete answer within the request deadline of 3s; still waiting on 10.0.1.1:19530"
        );
        assert!(!expired_message("Flush", Duration::from_secs(1), &[]).contains("waiting"));
        // Outside a request: nothing recorded, nothing panics.
        drop(awaiting("10.0.1.3:19530"));
    }

    #[test]
    fn methods_and_kinds() {
        assert_eq!(method_of("/milvus.grpc.MilvusService/Search"), "Search");
        assert!(is_search("SearchByID"));
        assert!(!is_search("Insert"));
    }

    /// A handler that never answers, and reports the time it was given.
    fn hung(
        seen: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static,
    > + Clone {
        tower::service_fn(move |_req: http::Request<Body>| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = remaining();
                futures::future::pending::<()>().await;
                Ok::<_, Infallible>(http::Response::new(Body::default()))
            }
        })
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response.headers().get("grpc-status")?.to_str().ok()
    }

    #[tokio::test]
    async fn the_clients_grpc_timeout_or_the_default_ends_a_hung_request() {
        let metrics = Metrics::new();
        let defaults = Defaults {
            search: Duration::from_millis(300),
            other: Duration::from_secs(60),
        };
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mut svc = DeadlineLayer::new(defaults, metrics.clone()).layer(hung(seen.clone()));
        let request = |timeout: Option<&str>| {
            let mut r = http::Request::builder().uri("/milvus.grpc.MilvusService/Search");
            if let Some(t) = timeout {
                r = r.header("grpc-timeout", t);
            }
            r.body(Body::default()).unwrap()
        };

        let started = Instant::now();
        let response = svc.call(request(Some("100m"))).await.unwrap();
        let took = started.elapsed();
        assert_eq!(grpc_status(&response), Some("4"), "DEADLINE_EXCEEDED");
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(250),
            "{took:?}"
        );
        let given = seen
            .lock()
            .unwrap()
            .take()
            .expect("the handler saw a deadline");
        assert!(given <= Duration::from_millis(100), "{given:?}");

        let started = Instant::now();
        let response = svc.call(request(None)).await.unwrap();
        let took = started.elapsed();
        assert_eq!(grpc_status(&response), Some("4"));
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(450),
            "{took:?}"
        );
        assert!(metrics
            .encode()
            .contains("mishards_deadline_exceeded_total{method=\"Search\"} 2"));
    }

    #[tokio::test]
    async fn backend_timeout_is_bounded_by_the_deadline() {
        assert_eq!(backend_timeout(None), None);
        assert_eq!(
            backend_timeout(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        DEADLINE
            .scope(deadline, async {
                let t = backend_timeout(None).expect("bounded");
                assert!(t <= Duration::from_secs(2) + BACKEND_SLACK);
                assert!(t > Duration::from_secs(1));
                let capped = backend_timeout(Some(Duration::from_millis(10)));
                assert_eq!(capped, Some(Duration::from_millis(10)));
                let sent = outgoing(()).metadata().get("grpc-timeout").cloned();
                let sent = sent.and_then(|v| parse_grpc_timeout(v.to_str().ok()?));
                let sent = sent.expect("a grpc-timeout goes to the backend");
                assert!(sent > Duration::from_secs(2), "slack included: {sent:?}");
                assert!(sent <= Duration::from_secs(2) + BACKEND_SLACK, "{sent:?}");
            })
            .await;
    }

    /// A handler that sees the deadline pass (as a backend call ending with
    /// it would) and would answer "no node reachable" if it did not yield:
    /// the client gets DEADLINE_EXCEEDED, whichever timer fires first.
    #[tokio::test]
    async fn work_past_the_deadline_yields_to_the_layer() {
        assert!(!passed(), "no deadline outside a request");
        let metrics = Metrics::new();
        let defaults = Defaults {
            search: Duration::from_millis(50),
            other: Duration::from_secs(60),
        };
        let handler = tower::service_fn(|_req: http::Request<Body>| async {
            // Busy past the deadline without yielding, so the layer's timer
            // cannot have fired yet when the handler looks.
            std::thread::sleep(Duration::from_millis(80));
            if passed() {
                return yield_to_layer().await;
            }
            Ok::<_, Infallible>(tonic::Status::unavailable("no node reachable").into_http())
        });
        let mut svc = DeadlineLayer::new(defaults, metrics).layer(handler);
        let request = http::Request::builder()
            .uri("/milvus.grpc.MilvusService/Search")
            .body(Body::default())
            .unwrap();
        let response = svc.call(request).await.unwrap();
        assert_eq!(grpc_status(&response), Some("4"), "DEADLINE_EXCEEDED");
    }
}
