//! The load generator: closed-loop clients (one connection each) sending
//! searches on one or more paths, interleaved so every path sees the same
//! machine noise, for a bounded time and count; latencies recorded per path.
//! Also the request builders and the latency summary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Barrier;
use tonic::transport::Channel;

use super::procstat;
use crate::wire::milvus_service_client::MilvusServiceClient;
use crate::wire::{ErrorCode, RowRecord, SearchInFilesParam, SearchParam, Status, TopKQueryResult};

pub type Client = MilvusServiceClient<Channel>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Untimed requests per client and path before a step, so connections are
/// open and nodes have loaded their files.
const WARMUP_PER_PATH: usize = 2;
/// Distinct query sets a path cycles through.
const QUERY_POOL: usize = 16;
/// Fewest samples for which a p99.9 is reported.
pub const MIN_SAMPLES_P999: usize = 1000;

/// A lazily connecting client with Milvus' message limits.
pub fn connect(addr: &str) -> anyhow::Result<Client> {
    crate::grpc::client(addr, CONNECT_TIMEOUT, crate::grpc::DEFAULT_MAX_MESSAGE_SIZE)
        .with_context(|| format!("cannot create a client for {addr}"))
}

/// Fails on a non-success Milvus status.
pub fn check(status: Option<&Status>, what: &str) -> anyhow::Result<()> {
    match status {
        Some(s) if s.error_code != ErrorCode::Success as i32 => {
            bail!("{what} failed: code {} {}", s.error_code, s.reason)
        }
        _ => Ok(()),
    }
}

/// `count` random float vectors of `dim`, in -1..1.
pub fn random_rows(rng: &mut StdRng, count: usize, dim: usize) -> Vec<RowRecord> {
    (0..count)
        .map(|_| RowRecord {
            float_data: (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
            binary_data: Default::default(),
        })
        .collect()
}

/// One search request shape: what is sent and where.
#[derive(Clone, Debug)]
pub enum Call {
    /// `Search` of a collection.
    Search(SearchParam),
    /// `SearchInFiles` over given files (straight to a read-only node).
    InFiles(SearchInFilesParam),
}

/// A way to reach the data: an address and the requests sent to it.
#[derive(Clone, Debug)]
pub struct SearchPath {
    pub label: String,
    pub addr: String,
    /// Cycled through, one per request.
    pub calls: Arc<Vec<Call>>,
}

impl SearchPath {
    /// `Search` requests for `collection`, nq x topk, random queries.
    pub fn search(
        label: &str,
        addr: &str,
        collection: &str,
        shape: Shape,
        dim: usize,
        seed: u64,
    ) -> SearchPath {
        let calls = search_params(collection, shape, dim, seed)
            .into_iter()
            .map(Call::Search)
            .collect();
        SearchPath {
            label: label.to_string(),
            addr: addr.to_string(),
            calls: Arc::new(calls),
        }
    }

    /// `SearchInFiles` requests over `file_ids`, with the same queries as [`SearchPath::search`].
    pub fn in_files(
        label: &str,
        addr: &str,
        collection: &str,
        file_ids: &[String],
        shape: Shape,
        dim: usize,
        seed: u64,
    ) -> SearchPath {
        let calls = search_params(collection, shape, dim, seed)
            .into_iter()
            .map(|p| {
                Call::InFiles(SearchInFilesParam {
                    file_id_array: file_ids.to_vec(),
                    search_param: Some(p),
                })
            })
            .collect();
        SearchPath {
            label: label.to_string(),
            addr: addr.to_string(),
            calls: Arc::new(calls),
        }
    }
}

/// nq and topk of a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub nq: usize,
    pub topk: usize,
}

fn search_params(collection: &str, shape: Shape, dim: usize, seed: u64) -> Vec<SearchParam> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..QUERY_POOL)
        .map(|_| SearchParam {
            collection_name: collection.to_string(),
            partition_tag_array: Vec::new(),
            query_record_array: random_rows(&mut rng, shape.nq, dim),
            topk: shape.topk as i64,
            extra_params: Vec::new(),
        })
        .collect()
}

/// Sends one call and checks the reply is a success with a row per query.
pub async fn send(client: &mut Client, call: &Call) -> anyhow::Result<TopKQueryResult> {
    let (reply, nq) = match call {
        Call::Search(p) => (client.search(p.clone()).await, p.query_record_array.len()),
        Call::InFiles(p) => (
            client.search_in_files(p.clone()).await,
            p.search_param
                .as_ref()
                .map_or(0, |s| s.query_record_array.len()),
        ),
    };
    let reply = reply.context("search")?.into_inner();
    check(reply.status.as_ref(), "search")?;
    if reply.row_num != nq as i64 {
        bail!("{} result rows for {nq} queries", reply.row_num);
    }
    Ok(reply)
}

/// How long and how much one step may run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub duration: Duration,
    pub max_requests: usize,
}

/// What one step measured.
#[derive(Debug)]
pub struct StepResult {
    /// Per path, in the order given.
    pub latencies: Vec<Latencies>,
    pub wall: Duration,
    /// CPU time the watched process used during the timed part, if any.
    pub cpu: Option<Duration>,
}

impl StepResult {
    /// Requests per second on path `i` (all paths share the wall time).
    pub fn qps(&self, i: usize) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.latencies
            .get(i)
            .map_or(0.0, |l| l.count() as f64 / secs)
    }

    /// CPU time of the watched process per request on paths `counted`, in µs.
    pub fn cpu_us_per_request(&self, counted: &[usize]) -> Option<f64> {
        let n: usize = counted
            .iter()
            .filter_map(|&i| self.latencies.get(i))
            .map(Latencies::count)
            .sum();
        let cpu = self.cpu?;
        (n > 0).then(|| cpu.as_secs_f64() * 1e6 / n as f64)
    }
}

/// Runs `clients` closed-loop clients over `paths`: each client sends one
/// request per path per round, the order rotating by round and client, until
/// the time or the request cap is reached. `watch_pid`'s CPU time is read
/// around the timed part.
pub async fn run_step(
    paths: &[SearchPath],
    clients: usize,
    limits: Limits,
    watch_pid: Option<u32>,
) -> anyhow::Result<StepResult> {
    let clients = clients.max(1);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(clients);
    for worker in 0..clients {
        let paths = paths.to_vec();
        let barrier = barrier.clone();
        let sent = sent.clone();
        workers.push(tokio::spawn(async move {
            let conns: anyhow::Result<Vec<Client>> =
                paths.iter().map(|p| connect(&p.addr)).collect();
            let outcome = match conns {
                Ok(mut conns) => {
                    client_loop(worker, &paths, &mut conns, limits, &barrier, &sent).await
                }
                Err(e) => {
                    barrier.wait().await;
                    Err(e)
                }
            };
            if outcome.is_err() {
                // Another client may still wait at the barrier: stop them all.
                sent.store(usize::MAX / 2, Ordering::Relaxed);
            }
            outcome
        }));
    }
    barrier.wait().await;
    let cpu_before = watch_pid.and_then(procstat::cpu_time);
    let t0 = Instant::now();
    let mut latencies: Vec<Latencies> = paths.iter().map(|_| Latencies::default()).collect();
    let mut first_error = None;
    for w in workers {
        match w.await {
            Ok(Ok(per_path)) => {
                for (all, mine) in latencies.iter_mut().zip(per_path) {
                    all.extend(mine);
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("a client task failed: {e}"));
            }
        }
    }
    let wall = t0.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    // A path that never answered is a broken setup, not a measurement.
    for (p, l) in paths.iter().zip(&latencies) {
        if l.count() == 0 {
            bail!(
                "every request on {} failed: {}",
                p.label,
                l.first_error.as_deref().unwrap_or("no request was sent")
            );
        }
    }
    let cpu_after = watch_pid.and_then(procstat::cpu_time);
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(StepResult {
        latencies,
        wall,
        cpu,
    })
}

async fn client_loop(
    worker: usize,
    paths: &[SearchPath],
    conns: &mut [Client],
    limits: Limits,
    barrier: &Barrier,
    sent: &AtomicUsize,
) -> anyhow::Result<Vec<Latencies>> {
    warm_up(worker, paths, conns).await;
    barrier.wait().await;
    let deadline = Instant::now() + limits.duration;
    let mut latencies: Vec<Latencies> = paths.iter().map(|_| Latencies::default()).collect();
    let mut round = 0usize;
    while Instant::now() < deadline
        && sent.fetch_add(paths.len(), Ordering::Relaxed) < limits.max_requests
    {
        for k in 0..paths.len() {
            let i = (round + worker + k) % paths.len();
            let path = &paths[i];
            let call = &path.calls[(round + worker) % path.calls.len().max(1)];
            let started = Instant::now();
            match send(&mut conns[i], call).await {
                Ok(_) => latencies[i].record(started.elapsed()),
                Err(e) => latencies[i].record_error(format!("{}: {e:#}", path.label)),
            }
        }
        round += 1;
    }
    Ok(latencies)
}

/// Untimed requests; their failures show in the timed part if they persist.
async fn warm_up(worker: usize, paths: &[SearchPath], conns: &mut [Client]) {
    for i in 0..WARMUP_PER_PATH {
        for (p, conn) in paths.iter().zip(conns.iter_mut()) {
            let call = &p.calls[(worker + i) % p.calls.len().max(1)];
            let _ = send(conn, call).await;
        }
    }
}

/// Recorded latencies of one path. A sorted bounded Vec rather than an HDR
/// histogram: a step holds at most `max_requests` samples, and exact
/// percentiles of that many are cheap to sort.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
    sorted: bool,
    /// Requests that failed (not in the samples), and what the first said.
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.samples.push(d);
        self.sorted = false;
    }

    pub fn record_error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
        self.sorted = false;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn count(&self) -> usize {
        self.samples.len()
    }

    /// Nearest-rank percentile (`q` in 0..=1) in milliseconds; `None` when empty.
    pub fn percentile_ms(&mut self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let rank = (q * self.samples.len() as f64).ceil() as usize;
        let d = self.samples[rank.clamp(1, self.samples.len()) - 1];
        Some(d.as_secs_f64() * 1e3)
    }

    /// p99.9 only with enough samples for it to mean something.
    pub fn p999_ms(&mut self) -> Option<f64> {
        if self.count() < MIN_SAMPLES_P999 {
            return None;
        }
        self.percentile_ms(0.999)
    }

    pub fn median_ms(&mut self) -> Option<f64> {
        self.percentile_ms(0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_ms(values: &[u64]) -> Latencies {
        let mut l = Latencies::default();
        for v in values {
            l.record(Duration::from_millis(*v));
        }
        l
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = of_ms(&[5, 1, 4, 2, 3]);
        assert_eq!(l.percentile_ms(0.5), Some(3.0));
        assert_eq!(l.percentile_ms(0.99), Some(5.0));
        assert_eq!(l.percentile_ms(0.0), Some(1.0));
        assert_eq!(Latencies::default().percentile_ms(0.5), None);
    }

    #[test]
    fn errors_are_counted_apart_from_samples() {
        let mut a = of_ms(&[1, 2]);
        a.record_error("first".into());
        let mut b = Latencies::default();
        b.record_error("second".into());
        a.extend(b);
        assert_eq!((a.count(), a.errors), (2, 2));
        assert_eq!(a.first_error.as_deref(), Some("first"));
    }

    #[test]
    fn p999_needs_enough_samples() {
        let mut few = of_ms(&[1; 999]);
        assert_eq!(few.p999_ms(), None);
        let mut many = of_ms(&(1..=1000).collect::<Vec<_>>());
        assert_eq!(many.p999_ms(), Some(999.0));
    }

    #[test]
    fn qps_and_cpu_per_request() {
        let step = StepResult {
            latencies: vec![of_ms(&[1; 100]), of_ms(&[1; 300])],
            wall: Duration::from_secs(2),
            cpu: Some(Duration::from_millis(40)),
        };
        assert_eq!(step.qps(0), 50.0);
        assert_eq!(step.qps(1), 150.0);
        assert_eq!(step.cpu_us_per_request(&[1]), Some(40_000.0 / 300.0));
        assert_eq!(step.cpu_us_per_request(&[]), None);
    }

    #[test]
    fn random_rows_have_the_dimension() {
        let mut rng = StdRng::seed_from_u64(1);
        let rows = random_rows(&mut rng, 3, 8);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.float_data.len() == 8));
    }
}
