//! `--scenario http`: one nq=1/topk=10 search through Milvus' HTTP API
//! (`PUT /collections/{c}/vectors`, port 19121) against the same search over
//! gRPC, on the same proxy process and cluster (a writable node and
//! `--ro-nodes` read-only nodes of ours, child processes), side by side in
//! one run. Each REST route
//! calls its gRPC twin in-process (`src/http_api/channel.rs`), so the
//! difference is the HTTP/JSON adapter: parsing the JSON body, the extra
//! DescribeCollection the REST search makes (Milvus 1.1 looks the collection
//! up first), and writing the JSON reply.
//!
//! Rounds interleave the two paths (round r runs gRPC then REST, or REST then
//! gRPC, alternately) so machine noise hits both alike; each path's step is
//! one closed-loop client on one keep-alive connection (tonic's HTTP/2
//! channel; a raw HTTP/1.1 keep-alive client here: `reqwest` is only a
//! dev-dependency). Proxy CPU is its utime+stime around each step.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cluster::{node_args, ChildProcess, MetaDb, TempDir};
use super::load::{self, check, connect, random_rows, Call, Latencies, SearchPath, Shape};
use super::report::{num, ScenarioReport};
use super::scenarios::wait_for_rows;
use super::{procstat, progress, BenchArgs};
use crate::types::MetricType;
use crate::wire::{CollectionSchema, FlushParam, InsertParam, SearchParam};

const SHAPE: Shape = Shape { nq: 1, topk: 10 };
/// Untimed searches per path before the rounds (connections open, files cached).
const WARMUP: usize = 20;
/// Largest HTTP reply head or body the client accepts.
const MAX_REPLY: usize = 16 << 20;

#[derive(Clone, Debug)]
struct HttpSizes {
    rounds: usize,
    rows: usize,
    files: usize,
    dim: usize,
    step_time: Duration,
    max_per_step: usize,
}

impl HttpSizes {
    fn from_args(args: &BenchArgs) -> HttpSizes {
        let quick = args.quick;
        HttpSizes {
            rounds: if quick { 2 } else { 6 },
            rows: args
                .rows
                .unwrap_or(if quick { 2_000 } else { 20_000 })
                .max(10),
            files: args.files.unwrap_or(if quick { 2 } else { 4 }).max(1),
            dim: args.dim.max(1),
            step_time: args.duration.unwrap_or(if quick {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(2)
            }),
            max_per_step: if quick { 500 } else { 50_000 },
        }
    }
}

/// The cluster and its proxy; the proxy drops first.
struct Setup {
    proxy: ChildProcess,
    http: SocketAddr,
    readonly: Vec<ChildProcess>,
    _writable: ChildProcess,
    _meta: MetaDb,
    _dir: TempDir,
}

/// A free loopback port for the proxy's HTTP API (`mishards serve` does not
/// print the HTTP address; the port is picked here and written in its config).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Setup {
    async fn start(meta_spec: &str, ro_nodes: usize) -> anyhow::Result<Setup> {
        let dir = TempDir::new("mishards-bench-http")?;
        let meta = MetaDb::create(meta_spec, &dir.path).await?;
        let writable =
            ChildProcess::spawn("rw node", node_args("rw", &dir.path, meta.uri())).await?;
        let mut readonly = Vec::new();
        for i in 0..ro_nodes.max(1) {
            let name = format!("ro node {}", i + 1);
            readonly
                .push(ChildProcess::spawn(&name, node_args("ro", &dir.path, meta.uri())).await?);
        }
        let ro_list: Vec<String> = readonly.iter().map(|n| format!("\"{}\"", n.addr)).collect();
        let port = free_port()?;
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [http_api]\nlisten = \"127.0.0.1:{port}\"\n\
             [meta]\nuri = \"{}\"\n\
             [backends]\nwritable = \"{}\"\nreadonly = [{}]\n\
             [slow_nodes]\neject_after_failures = 0\nhedge_budget_percent = 0\n\
             [log]\nlevel = \"warn\"\n\
             [reload]\nwatch_interval = \"0s\"\n",
            meta.uri(),
            writable.addr,
            ro_list.join(", ")
        );
        let path = dir.path.join("proxy.toml");
        std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
        let proxy = ChildProcess::spawn(
            "proxy",
            vec![
                "serve".into(),
                "--config".into(),
                path.display().to_string(),
            ],
        )
        .await?;
        Ok(Setup {
            proxy,
            http: SocketAddr::from(([127, 0, 0, 1], port)),
            readonly,
            _writable: writable,
            _meta: meta,
            _dir: dir,
        })
    }
}

/// A keep-alive HTTP/1.1 client on one connection (replies with a
/// `Content-Length`, as every reply of the HTTP API has).
pub(crate) struct KeepAlive {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<KeepAlive> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            addr,
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Sends `method path` with a JSON `body`; the reply's status and body.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut message = Vec::with_capacity(head.len() + body.len());
        message.extend_from_slice(head.as_bytes());
        message.extend_from_slice(body);
        self.stream
            .write_all(&message)
            .await
            .context("HTTP write")?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("HTTP reply head")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .with_context(|| format!("no Content-Length in {head:?}"))?;
        if length > MAX_REPLY {
            bail!("HTTP reply of {length} bytes");
        }
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok((status, body))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.buf.len() > MAX_REPLY {
            bail!("HTTP reply head over {MAX_REPLY} bytes");
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.context("HTTP read")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The REST body of a gRPC `SearchParam` (same queries, same topk).
fn rest_body(p: &SearchParam) -> Vec<u8> {
    let vectors: Vec<&[f32]> = p
        .query_record_array
        .iter()
        .map(|r| r.float_data.as_slice())
        .collect();
    json!({"search": {"topk": p.topk, "vectors": vectors, "params": {}}})
        .to_string()
        .into_bytes()
}

/// Checks a REST search reply: 200, one row per query, `topk` hits each.
fn check_rest(status: u16, body: &[u8], nq: usize, topk: usize) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(body);
    if status != 200 {
        bail!("REST search: HTTP {status} {text}");
    }
    let value: Value = serde_json::from_slice(body).context("REST search reply")?;
    let rows = value["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if value["num"].as_u64() != Some(nq as u64)
        || rows.len() != nq
        || rows
            .iter()
            .any(|r| r.as_array().map(Vec::len) != Some(topk))
    {
        bail!("REST search: {nq} x {topk} hits expected, got {text}");
    }
    Ok(())
}

/// What one path measured over every round.
struct PathTotals {
    latencies: Latencies,
    /// `None` once a step's CPU time could not be read.
    cpu: Option<Duration>,
    wall: Duration,
}

impl Default for PathTotals {
    fn default() -> Self {
        PathTotals {
            latencies: Latencies::default(),
            cpu: Some(Duration::ZERO),
            wall: Duration::ZERO,
        }
    }
}

impl PathTotals {
    fn add_cpu(&mut self, cpu: Option<Duration>) {
        self.cpu = match (self.cpu, cpu) {
            (Some(t), Some(c)) => Some(t + c),
            _ => None,
        };
    }

    fn cpu_us_per_search(&self) -> Option<f64> {
        let n = self.latencies.count();
        self.cpu
            .filter(|_| n > 0)
            .map(|c| c.as_secs_f64() * 1e6 / n as f64)
    }

    fn qps(&self) -> Option<f64> {
        let secs = self.wall.as_secs_f64();
        (secs > 0.0).then(|| self.latencies.count() as f64 / secs)
    }
}

/// Runs the scenario and returns its table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<ScenarioReport> {
    if args.target.is_some() {
        bail!("the http scenario starts its own cluster and proxy; drop --target");
    }
    let sizes = HttpSizes::from_args(args);
    progress(format!(
        "http: starting 1 rw + {} ro node(s) ({}) and a proxy serving gRPC and the HTTP API",
        args.ro_nodes.max(1),
        args.meta_uri
    ));
    let setup = Setup::start(&args.meta_uri, args.ro_nodes).await?;
    let grpc_addr = setup.proxy.addr.to_string();
    let name = format!("bench_http_{:08x}", rand::rng().random::<u32>());
    fill(&grpc_addr, &name, &sizes).await?;

    let path = SearchPath::search("grpc", &grpc_addr, &name, SHAPE, sizes.dim, 23);
    let params: Vec<SearchParam> = path
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Search(p) => Some(p.clone()),
            Call::InFiles(_) => None,
        })
        .collect();
    let bodies: Vec<Vec<u8>> = params.iter().map(rest_body).collect();
    let rest_path = format!("/collections/{name}/vectors");
    let mut grpc = connect(&grpc_addr)?;
    let mut rest = KeepAlive::connect(setup.http).await?;
    // Warm-up: both connections open, the read-only node has the files.
    for i in 0..WARMUP {
        load::send(&mut grpc, &path.calls[i % path.calls.len()]).await?;
        let (status, body) = rest
            .request("PUT", &rest_path, &bodies[i % bodies.len()])
            .await?;
        check_rest(status, &body, SHAPE.nq, SHAPE.topk)?;
    }
    let pid = setup.proxy.pid();
    let mut totals = [PathTotals::default(), PathTotals::default()];
    for round in 0..sizes.rounds {
        progress(format!(
            "http round {}/{}: gRPC and REST, {} each",
            round + 1,
            sizes.rounds,
            humantime::format_duration(sizes.step_time)
        ));
        for k in 0..2 {
            let which = (round + k) % 2;
            let cpu_before = procstat::cpu_time(pid);
            let t0 = Instant::now();
            let mut i = round * 7;
            let mut sent = 0;
            while t0.elapsed() < sizes.step_time && sent < sizes.max_per_step {
                let started = Instant::now();
                let outcome = if which == 0 {
                    load::send(&mut grpc, &path.calls[i % path.calls.len()])
                        .await
                        .map(|_| ())
                } else {
                    match rest
                        .request("PUT", &rest_path, &bodies[i % bodies.len()])
                        .await
                    {
                        Ok((status, body)) => {
                            let took = started.elapsed();
                            check_rest(status, &body, SHAPE.nq, SHAPE.topk)
                                .map(|()| totals[1].latencies.record(took))
                        }
                        Err(e) => {
                            // The connection may be unusable: a new one.
                            rest = KeepAlive::connect(setup.http).await?;
                            Err(e)
                        }
                    }
                };
                match outcome {
                    Ok(()) if which == 0 => totals[0].latencies.record(started.elapsed()),
                    Ok(()) => {}
                    Err(e) => totals[which]
                        .latencies
                        .record_error(format!("{}: {e:#}", ["grpc", "rest"][which])),
                }
                i += 1;
                sent += 1;
            }
            totals[which].wall += t0.elapsed();
            let cpu_after = procstat::cpu_time(pid);
            totals[which].add_cpu(match (cpu_before, cpu_after) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            });
        }
    }
    Ok(table(&sizes, setup.readonly.len(), &mut totals))
}

/// Creates `name` and inserts `rows` rows in `files` flushed batches.
async fn fill(addr: &str, name: &str, sizes: &HttpSizes) -> anyhow::Result<()> {
    let mut client = connect(addr)?;
    let status = client
        .create_collection(CollectionSchema {
            status: None,
            collection_name: name.to_string(),
            dimension: sizes.dim as i64,
            index_file_size: 1024,
            metric_type: MetricType::L2 as i32,
            extra_params: Vec::new(),
        })
        .await
        .context("CreateCollection")?
        .into_inner();
    check(Some(&status), "CreateCollection")?;
    let mut rng = StdRng::seed_from_u64(11);
    let per_file = sizes.rows.div_ceil(sizes.files);
    let mut inserted = 0;
    while inserted < sizes.rows {
        let n = per_file.min(sizes.rows - inserted);
        progress(format!("http: inserting {n} rows of dim {}", sizes.dim));
        let reply = client
            .insert(InsertParam {
                collection_name: name.to_string(),
                row_record_array: random_rows(&mut rng, n, sizes.dim),
                row_id_array: Vec::new(),
                partition_tag: String::new(),
                extra_params: Vec::new(),
            })
            .await
            .context("Insert")?
            .into_inner();
        check(reply.status.as_ref(), "Insert")?;
        let status = client
            .flush(FlushParam {
                collection_name_array: vec![name.to_string()],
            })
            .await
            .context("Flush")?
            .into_inner();
        check(Some(&status), "Flush")?;
        inserted += n;
    }
    wait_for_rows(&mut client, name, sizes.rows as i64).await
}

fn table(sizes: &HttpSizes, ro_nodes: usize, totals: &mut [PathTotals; 2]) -> ScenarioReport {
    let mut table = ScenarioReport::new(
        "http",
        "One nq=1/topk=10 search through the HTTP API (REST) vs gRPC, same proxy and cluster",
        &[
            "path",
            "searches",
            "qps",
            "p50_ms",
            "p99_ms",
            "p50_over_grpc_ms",
            "proxy_cpu_us_per_search",
            "cpu_over_grpc_us",
            "errors",
        ],
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    table.setup = format!(
        "1 writable + {ro_nodes} read-only node(s) of ours and one proxy (child processes; \
         hedging and ejection off), {} rows of dim {} in {} flushed files (FLAT, L2). {} interleaved \
         rounds; in each, one client on one keep-alive connection sends nq=1/topk=10 searches \
         back to back for up to {} on gRPC (`Search`, tonic HTTP/2) and on REST (`PUT \
         /collections/{{c}}/vectors`, HTTP/1.1, JSON; one REST search = DescribeCollection + \
         Search in-process), the order alternating by round. Latency = request written to \
         reply read (REST: the reply's JSON is checked after the clock stops). CPU = \
         utime+stime of the proxy process during each path's steps (10 ms ticks). {cores} \
         CPU cores shared by everything.",
        sizes.rows,
        sizes.dim,
        sizes.files,
        sizes.rounds,
        humantime::format_duration(sizes.step_time),
    );
    let grpc_p50 = totals[0].latencies.median_ms();
    let grpc_cpu = totals[0].cpu_us_per_search();
    for (label, t) in ["grpc", "rest"].iter().zip(totals.iter_mut()) {
        let p50 = t.latencies.median_ms();
        let cpu = t.cpu_us_per_search();
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        table.row(vec![
            json!(label),
            json!(t.latencies.count()),
            num(t.qps()),
            num(p50),
            num(t.latencies.percentile_ms(0.99)),
            num(diff(p50, grpc_p50)),
            num(cpu),
            num(diff(cpu, grpc_cpu)),
            json!(t.latencies.errors),
        ]);
        if let Some(e) = &t.latencies.first_error {
            table.notes.push(format!("{label}: first error: {e}"));
        }
    }
    table
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rest_replies_are_checked() {
        let ok =
            br#"{"num":1,"result":[[{"distance":"0.1","id":"1"},{"distance":"0.2","id":"2"}]]}"#;
        assert!(check_rest(200, ok, 1, 2).is_ok());
        assert!(check_rest(200, ok, 1, 3).is_err());
        assert!(check_rest(429, br#"{"message":"busy","code":1}"#, 1, 2).is_err());
        assert!(check_rest(200, b"not json", 1, 2).is_err());
    }

    #[test]
    fn rest_bodies_carry_the_grpc_queries() {
        let p = SearchParam {
            collection_name: "c".into(),
            partition_tag_array: vec![],
            query_record_array: vec![crate::wire::RowRecord {
                float_data: vec![0.5, -1.0],
                binary_data: Default::default(),
            }],
            topk: 10,
            extra_params: vec![],
        };
        let v: Value = serde_json::from_slice(&rest_body(&p)).unwrap();
        assert_eq!(
            v,
            json!({"search": {"topk": 10, "vectors": [[0.5, -1.0]], "params": {}}})
        );
    }

    #[tokio::test]
    async fn the_keep_alive_client_reads_replies_in_turn() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            for heads in 1..=2 {
                while seen.windows(4).filter(|w| w == b"\r\n\r\n").count() < heads {
                    let n = s.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                if heads == 1 {
                    // Both replies at once: the second waits in the client's buffer.
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nabHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nxyz")
                        .await
                        .unwrap();
                }
            }
        });
        let mut c = KeepAlive::connect(addr).await.unwrap();
        let a = c.request("GET", "/a", b"").await.unwrap();
        assert_eq!(a, (200, b"ab".to_vec()));
        let b = c.request("GET", "/b", b"").await.unwrap();
        assert_eq!(b, (404, b"xyz".to_vec()));
        server.await.unwrap();
    }
}
