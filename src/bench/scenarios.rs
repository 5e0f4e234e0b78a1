//! The six measurements of `mishards bench`, each producing one table. They
//! share the clusters (started on first need) and the search collection;
//! every collection a run makes has a unique name and, in target mode, is
//! dropped at the end.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::cluster::{RealCluster, StubCluster};
use super::juicefs::JuiceFs;
use super::load::{self, check, connect, random_rows, Client, Limits, SearchPath, Shape};
use super::report::{num, Report, ScenarioReport};
use super::{procstat, progress, storages, BenchArgs, Scenario, Sizes, Storage};
use crate::meta::{milvus_date, now_micros, FileRow};
use crate::types::MetricType;
use crate::wire::{CollectionName, CollectionSchema, Command, FlushParam, InsertParam, RowRecord};

const ONE_BY_TEN: Shape = Shape { nq: 1, topk: 10 };
/// Read-only node counts of the throughput scenario.
const THROUGHPUT_RO: [usize; 3] = [1, 2, 3];
/// Each throughput configuration runs in this many slices, in rotating order.
const THROUGHPUT_SLICES: usize = 3;
/// Stub read-only nodes behind the proxy-only proxy.
const STUBS: usize = 2;
/// How long to wait for the proxy's metadata snapshot to show new files.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
const L2: i32 = MetricType::L2 as i32;

/// Where the run sends its requests.
enum Mode {
    Embedded {
        /// Real nodes with their data in a local directory.
        real: Option<Box<RealCluster>>,
        /// Real nodes with their data on JuiceFS (first-query only).
        on_juicefs: Option<Box<RealCluster>>,
        stub: Option<Box<StubCluster>>,
    },
    Target {
        addr: String,
        direct: Option<String>,
    },
}

struct Bench<'a> {
    args: &'a BenchArgs,
    sizes: &'a Sizes,
    mode: Mode,
    /// Makes this run's collection names unique.
    suffix: String,
    rng: StdRng,
    /// Collections made through the target (dropped at the end).
    made: Vec<(String, String)>,
    /// The search collection, once loaded.
    search_collection: Option<String>,
    /// The checked JuiceFS client and database, when `--storage juicefs`.
    juicefs: Option<JuiceFs>,
}

/// One storage's side of the first-query scenario.
struct FirstQueryRun {
    label: &'static str,
    client: Client,
    name: String,
    penalties: load::Latencies,
    /// first_ms and steady_ms of every batch.
    firsts: load::Latencies,
    steadies: load::Latencies,
}

/// Runs `scenarios` and gathers their tables.
pub async fn run_all(
    args: &BenchArgs,
    sizes: &Sizes,
    scenarios: &[Scenario],
    skipped: &[Scenario],
    command: String,
) -> anyhow::Result<Report> {
    let mode = match &args.target {
        Some(addr) => Mode::Target {
            addr: addr.clone(),
            direct: args.direct.clone(),
        },
        None => Mode::Embedded {
            real: None,
            on_juicefs: None,
            stub: None,
        },
    };
    let storages = storages(args);
    let on_juicefs = storages.contains(&Storage::Juicefs);
    if on_juicefs && args.target.is_some() {
        bail!("--storage juicefs needs the embedded cluster (the bench starts the nodes on it); drop --target");
    }
    // Checked before any scenario runs, so a missing piece fails at once.
    let juicefs = if on_juicefs && scenarios.contains(&Scenario::FirstQuery) {
        let checked = JuiceFs::check(args.juicefs.as_deref(), args.juicefs_meta.as_deref())?;
        progress(format!(
            "JuiceFS: {} with metadata in {} (empty)",
            checked.binary.display(),
            checked.meta.url()
        ));
        Some(checked)
    } else {
        None
    };
    let mut bench = Bench {
        args,
        sizes,
        mode,
        suffix: format!("{:08x}", rand::rng().random::<u32>()),
        rng: StdRng::seed_from_u64(7),
        made: Vec::new(),
        search_collection: None,
        juicefs,
    };
    let mut report = Report {
        command,
        setup: bench.setup_line(scenarios),
        ..Default::default()
    };
    for s in skipped {
        report.skipped.push((
            s.name().to_string(),
            "needs the embedded cluster (it starts nodes or stub nodes, or reads the proxy's CPU time)"
                .to_string(),
        ));
    }
    let outcome = bench.run_scenarios(scenarios, &mut report).await;
    let cleaned = bench.drop_made().await;
    outcome?;
    cleaned?;
    Ok(report)
}

impl Bench<'_> {
    fn setup_line(&self, scenarios: &[Scenario]) -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let meta = if self.args.meta_uri == "sqlite" {
            "SQLite"
        } else {
            "MySQL"
        };
        let storages = storages(self.args);
        let storage =
            if storages == [Storage::Local] {
                String::new()
            } else if scenarios == [Scenario::FirstQuery] {
                format!(
                    " Node data on: {} (one cluster each).",
                    storages
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!(
                " first-query runs on each storage ({}, one cluster each); the other scenarios \
                 keep their data in a local directory.",
                storages.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
            )
            };
        let clusters = if scenarios == [Scenario::Groups] {
            "1, 2 and 3 shard groups, each 1 writable + 1 read-only node of ours".to_string()
        } else {
            format!(
                "1 writable + {} read-only nodes of ours",
                self.real_ro_nodes(scenarios)
            )
        };
        match &self.mode {
            Mode::Embedded { .. } => format!(
                "Embedded cluster on loopback, every node and proxy its own child process: \
                 {clusters} (background merge off), {meta} metadata; \
                 {cores} CPU cores shared by the load generator, the nodes and the proxy. \
                 Vectors {}-d float, L2. Scenarios: {}.{storage}",
                self.sizes.dim,
                scenarios.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
            ),
            Mode::Target { addr, direct } => format!(
                "Target {addr}{}; the load generator has {cores} CPU cores. Vectors {}-d float, L2.",
                direct
                    .as_ref()
                    .map(|d| format!(", direct node {d}"))
                    .unwrap_or_default(),
                self.sizes.dim
            ),
        }
    }

    fn real_ro_nodes(&self, scenarios: &[Scenario]) -> usize {
        let needed = if scenarios.contains(&Scenario::Throughput) {
            THROUGHPUT_RO.iter().copied().max().unwrap_or(1)
        } else {
            1
        };
        self.sizes.ro_nodes.max(needed)
    }

    async fn run_scenarios(
        &mut self,
        scenarios: &[Scenario],
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let ro = self.real_ro_nodes(scenarios);
        for &s in scenarios {
            progress(format!("scenario {}", s.name()));
            let table = match s {
                Scenario::Latency => self.latency(ro).await,
                Scenario::Throughput => self.throughput(ro).await,
                Scenario::Insert => self.insert(ro).await,
                Scenario::FirstQuery => self.first_query(ro).await,
                Scenario::ProxyOnly => self.proxy_only().await,
                Scenario::CostGrowth => self.cost_growth().await,
                Scenario::Groups => super::groups::run(self.args).await,
                Scenario::Http => super::http::run(self.args).await,
            }
            .with_context(|| format!("scenario {}", s.name()))?;
            report.scenarios.push(table);
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        Limits {
            duration: self.sizes.duration,
            max_requests: self.sizes.max_requests,
        }
    }

    /// The embedded cluster of real nodes on local storage, started on first use.
    async fn real(&mut self, ro: usize) -> anyhow::Result<&mut RealCluster> {
        self.real_on(Storage::Local, ro).await
    }

    /// The embedded cluster of real nodes on `storage`, started on first use.
    async fn real_on(&mut self, storage: Storage, ro: usize) -> anyhow::Result<&mut RealCluster> {
        let Mode::Embedded {
            real, on_juicefs, ..
        } = &mut self.mode
        else {
            bail!("this scenario needs the embedded cluster");
        };
        let (slot, juicefs) = match storage {
            Storage::Local => (real, None),
            Storage::Juicefs => (
                on_juicefs,
                Some(
                    self.juicefs
                        .as_ref()
                        .context("JuiceFS was not checked for this run")?,
                ),
            ),
        };
        if slot.is_none() {
            progress(format!(
                "starting 1 writable + {ro} read-only nodes ({}, data on {})",
                self.args.meta_uri,
                match juicefs {
                    None => "a local directory".to_string(),
                    Some(j) => format!("JuiceFS, one mount each, metadata {}", j.meta.url()),
                }
            ));
            let cluster = RealCluster::start(&self.args.meta_uri, ro, juicefs).await?;
            *slot = Some(Box::new(cluster));
        }
        slot.as_deref_mut()
            .context("cluster just started is missing")
    }

    /// Where searches and writes go (the proxy, or the target), where the
    /// "direct" path goes if anywhere, and the pid whose CPU is the proxy's.
    async fn endpoints(
        &mut self,
        ro: usize,
        proxy_ro: usize,
    ) -> anyhow::Result<(String, Option<String>, Option<u32>)> {
        self.endpoints_on(Storage::Local, ro, proxy_ro).await
    }

    /// [`Self::endpoints`] of the embedded cluster on `storage`.
    async fn endpoints_on(
        &mut self,
        storage: Storage,
        ro: usize,
        proxy_ro: usize,
    ) -> anyhow::Result<(String, Option<String>, Option<u32>)> {
        if let Mode::Target { addr, direct } = &self.mode {
            return Ok((addr.clone(), direct.clone(), None));
        }
        let cluster = self.real_on(storage, ro).await?;
        let direct = cluster.writable.addr.to_string();
        let proxy = cluster.proxy(proxy_ro).await?;
        Ok((proxy.addr.to_string(), Some(direct), Some(proxy.pid())))
    }

    /// Creates a collection through `addr` and remembers to drop it.
    async fn create_collection(&mut self, addr: &str, name: &str) -> anyhow::Result<Client> {
        let mut client = connect(addr)?;
        let status = client
            .create_collection(CollectionSchema {
                status: None,
                collection_name: name.to_string(),
                dimension: self.sizes.dim as i64,
                index_file_size: 1024,
                metric_type: L2,
                extra_params: Vec::new(),
            })
            .await
            .with_context(|| format!("CreateCollection {name} on {addr}"))?
            .into_inner();
        check(Some(&status), "CreateCollection")?;
        self.made.push((addr.to_string(), name.to_string()));
        Ok(client)
    }

    async fn drop_made(&mut self) -> anyhow::Result<()> {
        if !matches!(self.mode, Mode::Target { .. }) {
            return Ok(()); // the cluster and its data go away whole
        }
        for (addr, name) in std::mem::take(&mut self.made) {
            progress(format!("dropping collection {name}"));
            let mut client = connect(&addr)?;
            let status = client
                .drop_collection(CollectionName {
                    collection_name: name.clone(),
                })
                .await
                .with_context(|| format!("DropCollection {name}"))?
                .into_inner();
            check(Some(&status), "DropCollection")?;
        }
        Ok(())
    }

    /// The search collection (rows in files, through `addr`), made once.
    async fn search_data(&mut self, addr: &str) -> anyhow::Result<String> {
        if let Some(name) = &self.search_collection {
            return Ok(name.clone());
        }
        let name = format!("bench_search_{}", self.suffix);
        let (rows, files, dim) = (self.sizes.rows, self.sizes.files, self.sizes.dim);
        progress(format!(
            "loading {rows} x {dim} rows into {files} files of {name}"
        ));
        let mut client = self.create_collection(addr, &name).await?;
        let per_file = rows.div_ceil(files).max(1);
        let mut loaded = 0;
        while loaded < rows {
            let n = per_file.min(rows - loaded);
            insert(&mut client, &name, random_rows(&mut self.rng, n, dim)).await?;
            flush(&mut client, &name).await?;
            loaded += n;
        }
        wait_for_rows(&mut client, &name, loaded as i64).await?;
        self.search_collection = Some(name.clone());
        Ok(name)
    }

    async fn latency(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let (proxy, direct, proxy_pid) = self.endpoints(ro, self.sizes.ro_nodes).await?;
        let name = self.search_data(&proxy).await?;
        let mut table = ScenarioReport::new(
            "latency",
            "Search latency through the proxy vs straight to one node",
            &[
                "nq",
                "topk",
                "clients",
                "samples_per_path",
                "direct_p50_ms",
                "proxy_p50_ms",
                "added_p50_ms",
                "direct_p99_ms",
                "proxy_p99_ms",
                "direct_p99.9_ms",
                "proxy_p99.9_ms",
                "proxy_qps",
                "proxy_cpu_us_per_search",
                "errors",
            ],
        );
        table.setup = format!(
            "{} rows in {} files. `direct` = `Search` sent straight to {}; `proxy` = the same \
             `Search` through the proxy ({} read-only nodes). Each client alternates the two paths \
             (order rotating), so both see the same machine noise; {} per step. p99.9 only with \
             at least {} samples.",
            self.sizes.rows,
            self.sizes.files,
            if matches!(self.mode, Mode::Embedded { .. }) {
                "the writable node (which scans every file itself)"
            } else {
                "the --direct node"
            },
            self.sizes.ro_nodes,
            humantime::format_duration(self.sizes.duration),
            load::MIN_SAMPLES_P999,
        );
        for shape in self.sizes.latency_shapes.clone() {
            for clients in self.sizes.latency_clients.clone() {
                progress(format!(
                    "latency nq={} topk={} clients={clients}",
                    shape.nq, shape.topk
                ));
                let mut paths = vec![SearchPath::search(
                    "proxy",
                    &proxy,
                    &name,
                    shape,
                    self.sizes.dim,
                    11,
                )];
                if let Some(direct) = &direct {
                    paths.push(SearchPath::search(
                        "direct",
                        direct,
                        &name,
                        shape,
                        self.sizes.dim,
                        11,
                    ));
                }
                let mut step = load::run_step(&paths, clients, self.limits(), proxy_pid).await?;
                let what = format!("nq={} topk={} clients={clients}", shape.nq, shape.topk);
                let errors = note_errors(&mut table, &what, &step.latencies);
                let cpu = step.cpu_us_per_request(&[0]);
                let qps = step.qps(0);
                let samples = step.latencies[0].count();
                let (p, d) = match step.latencies.as_mut_slice() {
                    [p, d] => (p, Some(d)),
                    [p] => (p, None),
                    _ => bail!("no latencies"),
                };
                let (pp50, pp99, pp999) = (p.median_ms(), p.percentile_ms(0.99), p.p999_ms());
                let (dp50, dp99, dp999) = match d {
                    Some(d) => (d.median_ms(), d.percentile_ms(0.99), d.p999_ms()),
                    None => (None, None, None),
                };
                table.row(vec![
                    json!(shape.nq),
                    json!(shape.topk),
                    json!(clients),
                    json!(samples),
                    num(dp50),
                    num(pp50),
                    num(diff(pp50, dp50)),
                    num(dp99),
                    num(pp99),
                    num(dp999),
                    num(pp999),
                    num(Some(qps)),
                    num(cpu),
                    json!(errors),
                ]);
            }
        }
        if direct.is_none() {
            table
                .notes
                .push("No --direct node given: only the target's columns.".into());
        }
        Ok(table)
    }

    async fn throughput(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let clients = self.sizes.clients;
        let mut table = ScenarioReport::new(
            "throughput",
            "Search throughput through the proxy by read-only node count",
            &[
                "ro_nodes",
                "clients",
                "searches",
                "qps",
                "p50_ms",
                "p99_ms",
                "proxy_cpu_us_per_search",
                "errors",
            ],
        );
        table.setup = format!(
            "nq=1, topk=10 over the latency scenario's {} rows in {} files; {clients} clients, \
             each with its own connection, through a proxy in front of the first 1, 2 or 3 \
             read-only nodes. Each configuration runs {} slices of {}, in rotating order.",
            self.sizes.rows,
            self.sizes.files,
            THROUGHPUT_SLICES,
            humantime::format_duration(slice_of(self.sizes.duration)),
        );
        let mut proxies = Vec::new();
        for n in THROUGHPUT_RO {
            let cluster = self.real(ro).await?;
            let proxy = cluster.proxy(n).await?;
            proxies.push((n, proxy.addr.to_string(), proxy.pid()));
        }
        let name = self.search_data(&proxies[0].1).await?;
        let limits = Limits {
            duration: slice_of(self.sizes.duration),
            max_requests: self.sizes.max_requests,
        };
        let mut totals: Vec<Totals> = proxies.iter().map(|_| Totals::default()).collect();
        for slice in 0..THROUGHPUT_SLICES {
            for k in 0..proxies.len() {
                let i = (slice + k) % proxies.len();
                let (n, addr, pid) = &proxies[i];
                progress(format!(
                    "throughput {n} ro node(s), slice {}/{THROUGHPUT_SLICES}",
                    slice + 1
                ));
                let path = SearchPath::search("proxy", addr, &name, ONE_BY_TEN, self.sizes.dim, 13);
                let step = load::run_step(&[path], clients, limits, Some(*pid)).await?;
                totals[i].add(step);
            }
        }
        for ((n, _, _), mut t) in proxies.into_iter().zip(totals) {
            let what = format!("{n} read-only node(s)");
            let errors = note_errors(&mut table, &what, std::slice::from_ref(&t.latencies));
            table.row(vec![
                json!(n),
                json!(clients),
                json!(t.latencies.count()),
                num(t.qps()),
                num(t.latencies.median_ms()),
                num(t.latencies.percentile_ms(0.99)),
                num(t.cpu_us_per_search()),
                json!(errors),
            ]);
        }
        Ok(table)
    }

    async fn insert(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let (rows, dim) = (self.sizes.batch_rows, self.sizes.dim);
        // Its own proxy process, so its peak memory is the inserts' alone.
        let (proxy, direct, _own_proxy) = match &self.mode {
            Mode::Target { addr, direct } => (addr.clone(), direct.clone(), None),
            Mode::Embedded { .. } => {
                let cluster = self.real(ro).await?;
                let own = cluster.fresh_proxy(1, "proxy-insert").await?;
                (
                    own.addr.to_string(),
                    Some(cluster.writable.addr.to_string()),
                    Some(own),
                )
            }
        };
        let pid = _own_proxy.as_ref().map(|p| p.pid());
        let name = format!("bench_insert_{}", self.suffix);
        let mut via_proxy = self.create_collection(&proxy, &name).await?;
        let mut via_direct = match &direct {
            Some(d) => Some(connect(d)?),
            None => None,
        };
        let batch = InsertParam {
            collection_name: name.clone(),
            row_record_array: random_rows(&mut self.rng, rows, dim),
            row_id_array: Vec::new(),
            partition_tag: String::new(),
            extra_params: Vec::new(),
        };
        let batch_bytes = (rows * dim * 4) as f64;
        let rss_before = pid.and_then(procstat::peak_rss);
        let mut proxy_times = load::Latencies::default();
        let mut direct_times = load::Latencies::default();
        let (mut proxy_total, mut direct_total) = (Duration::ZERO, Duration::ZERO);
        let started = Instant::now();
        for round in 0..self.sizes.insert_rounds {
            if round > 0 && started.elapsed() > self.sizes.duration * 4 {
                break;
            }
            progress(format!(
                "insert round {}/{}: {rows} x {dim}",
                round + 1,
                self.sizes.insert_rounds
            ));
            for k in 0..2 {
                let to_proxy = (round + k) % 2 == 0;
                let client = match (to_proxy, via_direct.as_mut()) {
                    (true, _) => &mut via_proxy,
                    (false, Some(d)) => d,
                    (false, None) => continue,
                };
                let t0 = Instant::now();
                let reply = client
                    .insert(batch.clone())
                    .await
                    .context("Insert")?
                    .into_inner();
                let took = t0.elapsed();
                check(reply.status.as_ref(), "Insert")?;
                if reply.vector_id_array.len() != rows {
                    bail!(
                        "Insert returned {} ids for {rows} rows",
                        reply.vector_id_array.len()
                    );
                }
                if to_proxy {
                    proxy_times.record(took);
                    proxy_total += took;
                } else {
                    direct_times.record(took);
                    direct_total += took;
                }
            }
        }
        let rss_after = pid.and_then(procstat::peak_rss);
        let mb_s = |total: Duration, n: usize| {
            (n > 0 && total > Duration::ZERO)
                .then(|| batch_bytes * n as f64 / 1e6 / total.as_secs_f64())
        };
        let proxy_mb_s = mb_s(proxy_total, proxy_times.count());
        let direct_mb_s = mb_s(direct_total, direct_times.count());
        let mut table = ScenarioReport::new(
            "insert",
            "Insert through the proxy vs straight to the writable node",
            &[
                "rows_per_batch",
                "batch_mb",
                "batches_per_path",
                "direct_median_ms",
                "proxy_median_ms",
                "direct_mb_per_s",
                "proxy_mb_per_s",
                "proxy_over_direct",
                "proxy_rss_at_start_mb",
                "proxy_peak_rss_mb",
                "peak_rss_over_batch",
            ],
        );
        table.setup = format!(
            "{rows} x {dim} floats per `Insert` ({:.1} MB of vectors), alternating between the \
             two paths; MB/s = vector bytes / time of the calls. The proxy is a fresh process, so \
             its peak RSS (VmHWM) covers only its start and these inserts.",
            batch_bytes / 1e6
        );
        let mb = |b: Option<u64>| b.map(|b| b as f64 / 1e6);
        table.row(vec![
            json!(rows),
            num(Some(batch_bytes / 1e6)),
            json!(proxy_times.count()),
            num(direct_times.median_ms()),
            num(proxy_times.median_ms()),
            num(direct_mb_s),
            num(proxy_mb_s),
            num(ratio(proxy_mb_s, direct_mb_s)),
            num(mb(rss_before)),
            num(mb(rss_after)),
            num(rss_after.map(|r| r as f64 / batch_bytes)),
        ]);
        Ok(table)
    }

    async fn first_query(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let (rows, dim, batches) = (self.sizes.batch_rows, self.sizes.dim, self.sizes.batches);
        let sides: Vec<(&'static str, Storage)> = match self.mode {
            Mode::Target { .. } => vec![("target", Storage::Local)],
            Mode::Embedded { .. } => storages(self.args)
                .into_iter()
                .map(|s| (s.name(), s))
                .collect(),
        };
        let mut runs = Vec::new();
        for (label, storage) in sides {
            let (proxy, _, _) = self.endpoints_on(storage, ro, self.sizes.ro_nodes).await?;
            let name = format!("bench_firstq_{label}_{}", self.suffix);
            let client = self.create_collection(&proxy, &name).await?;
            runs.push(FirstQueryRun {
                label,
                client,
                name,
                penalties: load::Latencies::default(),
                firsts: load::Latencies::default(),
                steadies: load::Latencies::default(),
            });
        }
        let mut table = ScenarioReport::new(
            "first-query",
            "First search after a flush vs the steady state",
            &[
                "batch",
                "storage",
                "total_rows",
                "first_ms",
                "steady_ms",
                "penalty_ms",
                "first_saw_new_rows",
            ],
        );
        table.setup = format!(
            "Each batch: `Insert` {rows} x {dim} rows and `Flush` through the proxy, then time \
             the first nq=1, topk=10 search (its query is a vector of the new batch, so it must \
             find it: `first_saw_new_rows`), then the median of the next {} (`steady_ms`). \
             penalty = first - steady.{}",
            self.sizes.steady_searches,
            self.first_query_storages(&runs)
        );
        for b in 1..=batches {
            let vectors = random_rows(&mut self.rng, rows, dim);
            let mut measured = vec![None; runs.len()];
            // Same vectors on every storage; the order rotates batch by batch.
            for k in 0..runs.len() {
                let i = (b - 1 + k) % runs.len();
                let run = &mut runs[i];
                progress(format!(
                    "first-query batch {b}/{batches} on {}: {rows} x {dim}",
                    run.label
                ));
                measured[i] = Some(
                    first_query_batch(run, &vectors, self.sizes.steady_searches)
                        .await
                        .with_context(|| format!("batch {b} on {}", run.label))?,
                );
            }
            for (run, m) in runs.iter_mut().zip(measured) {
                let Some((first_ms, steady_ms, saw)) = m else {
                    continue;
                };
                let penalty = steady_ms.map(|s| first_ms - s);
                run.firsts.record(Duration::from_secs_f64(first_ms / 1e3));
                if let Some(s) = steady_ms {
                    run.steadies.record(Duration::from_secs_f64(s / 1e3));
                }
                if let Some(p) = penalty {
                    run.penalties
                        .record(Duration::from_secs_f64(p.max(0.0) / 1e3));
                }
                table.row(vec![
                    json!(b),
                    json!(run.label),
                    json!(b * rows),
                    num(Some(first_ms)),
                    num(steady_ms),
                    num(penalty),
                    json!(if saw { "yes" } else { "no" }),
                ]);
            }
        }
        let mut medians: Vec<(&str, Option<f64>)> = Vec::new();
        for r in &mut runs {
            let median = r.penalties.median_ms();
            medians.push((r.label, median));
            if let Some(median) = median {
                table.notes.push(format!(
                    "Median penalty over the {batches} batches, {}: {median:.2} ms (negative \
                     ones counted as 0); median first_ms {}, median steady_ms {}.",
                    r.label,
                    r.firsts
                        .median_ms()
                        .map_or("n/a".into(), |m| format!("{m:.2}")),
                    r.steadies
                        .median_ms()
                        .map_or("n/a".into(), |m| format!("{m:.2}")),
                ));
            }
        }
        let median_of = |name: &str| medians.iter().find(|(l, _)| *l == name).and_then(|m| m.1);
        if let (Some(local), Some(juicefs)) = (median_of("local"), median_of("juicefs")) {
            table.notes.push(match ratio(Some(juicefs), Some(local)) {
                Some(r) => format!(
                    "Median penalty juicefs / local: {r:.2} ({juicefs:.2} ms / {local:.2} ms)."
                ),
                None => format!(
                    "Median penalty juicefs / local: n/a (local is 0 ms; juicefs {juicefs:.2} ms)."
                ),
            });
        }
        Ok(table)
    }

    /// The sentence on where each first-query run keeps its data.
    fn first_query_storages(&self, runs: &[FirstQueryRun]) -> String {
        if matches!(self.mode, Mode::Target { .. }) {
            return String::new();
        }
        let mut out = String::new();
        if runs.len() > 1 {
            out.push_str(&format!(
                " One cluster per storage ({}), started together; every batch inserts the same \
                 vectors into each, one after the other, the order alternating batch by batch.",
                runs.iter().map(|r| r.label).collect::<Vec<_>>().join(", ")
            ));
        }
        for r in runs {
            match r.label {
                "local" => out.push_str(
                    " local: every node's data directory is one local temporary directory.",
                ),
                "juicefs" => out.push_str(&format!(
                    " juicefs: one JuiceFS volume (metadata in Redis {}, data in a `file` bucket \
                     on the local disk), each node on its own mount: its own client and cache \
                     directory, cache options at their defaults.",
                    self.juicefs
                        .as_ref()
                        .map_or_else(|| "?".to_string(), |j| j.meta.url())
                )),
                _ => {}
            }
        }
        if runs.iter().any(|r| r.label == "juicefs") {
            out.push_str(&format!(
                " The clusters' metadata is {} either way.",
                if self.args.meta_uri == "sqlite" {
                    "a SQLite file in a local temporary directory"
                } else {
                    "a MySQL database"
                }
            ));
        }
        out
    }

    /// The stub cluster, started on first use.
    async fn stubs(&mut self) -> anyhow::Result<&mut StubCluster> {
        let Mode::Embedded { stub, .. } = &mut self.mode else {
            bail!("this scenario needs the embedded cluster");
        };
        if stub.is_none() {
            progress(format!(
                "starting a writable node, {STUBS} stub read-only nodes and a proxy ({})",
                self.args.meta_uri
            ));
            *stub = Some(Box::new(
                StubCluster::start(&self.args.meta_uri, STUBS, MetricType::L2).await?,
            ));
        }
        stub.as_deref_mut()
            .context("stub cluster just started is missing")
    }

    /// Creates `name` through the stub cluster's writable node.
    async fn stub_collection(&mut self, name: &str) -> anyhow::Result<(String, u32, String)> {
        let dim = self.sizes.dim as i64;
        let cluster = self.stubs().await?;
        let writable = cluster.writable.addr.to_string();
        let mut client = connect(&writable)?;
        let status = client
            .create_collection(CollectionSchema {
                status: None,
                collection_name: name.to_string(),
                dimension: dim,
                index_file_size: 1024,
                metric_type: L2,
                extra_params: Vec::new(),
            })
            .await
            .context("CreateCollection on the stub cluster's writable node")?
            .into_inner();
        check(Some(&status), "CreateCollection")?;
        let stub_addr = cluster
            .stubs
            .first()
            .map(|s| s.addr.to_string())
            .context("no stub node")?;
        Ok((
            cluster.proxy.addr.to_string(),
            cluster.proxy.pid(),
            stub_addr,
        ))
    }

    /// Adds file rows to `name` until it has `target` files, and waits for
    /// the proxy to see them; returns the file ids.
    async fn grow_files(&mut self, name: &str, have: usize, target: usize) -> anyhow::Result<()> {
        let (dim, rows) = (self.sizes.dim as i64, self.sizes.rows_per_stub_file);
        let cluster = self.stubs().await?;
        let now = now_micros();
        let files: Vec<FileRow> = (have..target)
            .map(|i| FileRow {
                id: 0,
                table_id: name.to_string(),
                segment_id: format!("bench_{i}"),
                engine_type: 1,
                file_id: format!("bench_{i}"),
                file_type: 1, // RAW
                file_size: rows * dim * 4,
                row_count: rows,
                updated_time: now,
                created_on: now,
                date: milvus_date(now),
                flush_lsn: 0,
            })
            .collect();
        cluster
            .store
            .insert_files(&files)
            .await
            .context("adding file rows")?;
        let mut proxy = connect(&cluster.proxy.addr.to_string())?;
        wait_for_route(&mut proxy, name, target).await
    }

    /// File ids of `name` as the proxy routes them.
    async fn routed_ids(&mut self, name: &str) -> anyhow::Result<Vec<String>> {
        let cluster = self.stubs().await?;
        let mut proxy = connect(&cluster.proxy.addr.to_string())?;
        let route = route(&mut proxy, name).await?;
        Ok(route_ids(&route))
    }

    async fn proxy_only(&mut self) -> anyhow::Result<ScenarioReport> {
        let name = format!("bench_stub_{}", self.suffix);
        let (proxy, pid, stub) = self.stub_collection(&name).await?;
        self.grow_files(&name, 0, self.sizes.files).await?;
        let file_ids = self.routed_ids(&name).await?;
        let clients = self.sizes.clients;
        let mut table = ScenarioReport::new(
            "proxy-only",
            "The proxy alone, in front of stub read-only nodes",
            &[
                "nq",
                "topk",
                "stub_p50_ms",
                "proxy_p50_ms",
                "added_p50_ms",
                "stub_p99_ms",
                "proxy_p99_ms",
                "added_p99_ms",
                "qps",
                "proxy_cpu_us_per_search",
                "qps_per_proxy_core",
                "errors",
            ],
        );
        table.setup = format!(
            "{} files over {STUBS} stub nodes that answer `SearchInFiles` at once with a canned \
             result. Latency at 1 client: `stub` = `SearchInFiles` over every file sent straight to \
             one stub, `proxy` = `Search` through the proxy, alternating. Then {clients} clients \
             on the proxy alone: QPS, and the proxy's CPU time (utime+stime) per search; QPS per \
             proxy core = 1 s / CPU per search. {} per step.",
            self.sizes.files,
            humantime::format_duration(self.sizes.duration),
        );
        for shape in self.sizes.latency_shapes.clone() {
            progress(format!(
                "proxy-only nq={} topk={}: latency at 1 client",
                shape.nq, shape.topk
            ));
            let dim = self.sizes.dim;
            let paths = [
                SearchPath::search("proxy", &proxy, &name, shape, dim, 17),
                SearchPath::in_files("stub", &stub, &name, &file_ids, shape, dim, 17),
            ];
            let mut one = load::run_step(&paths, 1, self.limits(), None).await?;
            let (pp50, pp99) = (
                one.latencies[0].median_ms(),
                one.latencies[0].percentile_ms(0.99),
            );
            let (sp50, sp99) = (
                one.latencies[1].median_ms(),
                one.latencies[1].percentile_ms(0.99),
            );
            progress(format!(
                "proxy-only nq={} topk={}: {clients} clients",
                shape.nq, shape.topk
            ));
            let load = load::run_step(&paths[..1], clients, self.limits(), Some(pid)).await?;
            let cpu = load.cpu_us_per_request(&[0]);
            let what = format!("nq={} topk={}", shape.nq, shape.topk);
            let errors = note_errors(&mut table, &format!("{what}, 1 client"), &one.latencies)
                + note_errors(
                    &mut table,
                    &format!("{what}, {clients} clients"),
                    &load.latencies,
                );
            table.row(vec![
                json!(shape.nq),
                json!(shape.topk),
                num(sp50),
                num(pp50),
                num(diff(pp50, sp50)),
                num(sp99),
                num(pp99),
                num(diff(pp99, sp99)),
                num(Some(load.qps(0))),
                num(cpu),
                num(cpu.filter(|c| *c > 0.0).map(|c| 1e6 / c)),
                json!(errors),
            ]);
        }
        Ok(table)
    }

    async fn cost_growth(&mut self) -> anyhow::Result<ScenarioReport> {
        let name = format!("bench_growth_{}", self.suffix);
        let (proxy, pid, _) = self.stub_collection(&name).await?;
        let clients = self.sizes.clients;
        let mut table = ScenarioReport::new(
            "cost-growth",
            "Proxy CPU per search as files, nq and topk grow (stub nodes)",
            &[
                "files",
                "nq",
                "topk",
                "searches",
                "qps",
                "p50_ms",
                "proxy_cpu_us_per_search",
                "errors",
            ],
        );
        table.setup = format!(
            "The proxy in front of {STUBS} stub nodes, {clients} clients, {} per step. First nq x \
             topk over the smallest collection, then nq=1, topk=10 as file rows are added to the \
             metadata (the proxy's periodic metadata refresh is part of its CPU time).",
            humantime::format_duration(self.sizes.duration),
        );
        let counts = self.sizes.file_counts.clone();
        let mut have = 0;
        for (i, &files) in counts.iter().enumerate() {
            progress(format!("cost-growth: {files} files"));
            self.grow_files(&name, have, files).await?;
            have = files;
            let shapes: Vec<Shape> = if i == 0 {
                let topks = self.sizes.growth_topk.clone();
                self.sizes
                    .growth_nq
                    .iter()
                    .flat_map(|&nq| topks.iter().map(move |&topk| Shape { nq, topk }))
                    .collect()
            } else {
                vec![ONE_BY_TEN]
            };
            for shape in shapes {
                progress(format!(
                    "cost-growth: {files} files, nq={} topk={}",
                    shape.nq, shape.topk
                ));
                let path = SearchPath::search("proxy", &proxy, &name, shape, self.sizes.dim, 19);
                let mut step = load::run_step(&[path], clients, self.limits(), Some(pid)).await?;
                let cpu = step.cpu_us_per_request(&[0]);
                let what = format!("{files} files, nq={} topk={}", shape.nq, shape.topk);
                let errors = note_errors(&mut table, &what, &step.latencies);
                table.row(vec![
                    json!(files),
                    json!(shape.nq),
                    json!(shape.topk),
                    json!(step.latencies[0].count()),
                    num(Some(step.qps(0))),
                    num(step.latencies[0].median_ms()),
                    num(cpu),
                    json!(errors),
                ]);
            }
        }
        Ok(table)
    }
}

/// Steps of one configuration added up.
#[derive(Default)]
struct Totals {
    latencies: load::Latencies,
    wall: Duration,
    cpu: Option<Duration>,
}

impl Totals {
    fn add(&mut self, step: load::StepResult) {
        self.wall += step.wall;
        self.cpu = match (self.cpu, step.cpu) {
            (None, c) => c,
            (Some(a), Some(b)) => Some(a + b),
            (Some(a), None) => Some(a),
        };
        for l in step.latencies {
            self.latencies.extend(l);
        }
    }

    fn qps(&self) -> Option<f64> {
        let secs = self.wall.as_secs_f64();
        (secs > 0.0).then(|| self.latencies.count() as f64 / secs)
    }

    fn cpu_us_per_search(&self) -> Option<f64> {
        let n = self.latencies.count();
        (n > 0).then_some(())?;
        self.cpu.map(|c| c.as_secs_f64() * 1e6 / n as f64)
    }
}

/// One throughput slice of a step, in whole milliseconds.
fn slice_of(step: Duration) -> Duration {
    Duration::from_millis((step.as_millis() / THROUGHPUT_SLICES as u128).max(1) as u64)
}

/// Failed requests of a step, with a note quoting the first failure of each path.
fn note_errors(table: &mut ScenarioReport, what: &str, paths: &[load::Latencies]) -> usize {
    let mut total = 0;
    for l in paths {
        total += l.errors;
        if let Some(first) = &l.first_error {
            table.notes.push(format!(
                "{what}: {} failed request(s); the first: {first}",
                l.errors
            ));
        }
    }
    total
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let b = b.filter(|b| *b > 0.0)?;
    Some(a? / b)
}

async fn insert(
    client: &mut Client,
    name: &str,
    rows: Vec<crate::wire::RowRecord>,
) -> anyhow::Result<Vec<i64>> {
    let n = rows.len();
    let reply = client
        .insert(InsertParam {
            collection_name: name.to_string(),
            row_record_array: rows,
            row_id_array: Vec::new(),
            partition_tag: String::new(),
            extra_params: Vec::new(),
        })
        .await
        .context("Insert")?
        .into_inner();
    check(reply.status.as_ref(), "Insert")?;
    if reply.vector_id_array.len() != n {
        bail!(
            "Insert returned {} ids for {n} rows",
            reply.vector_id_array.len()
        );
    }
    Ok(reply.vector_id_array)
}

async fn flush(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let status = client
        .flush(FlushParam {
            collection_name_array: vec![name.to_string()],
        })
        .await
        .context("Flush")?
        .into_inner();
    check(Some(&status), "Flush")
}

/// One first-query batch on one storage: insert and flush `vectors`, then
/// the first search (ms, and whether it found the new row) and the median
/// of the next `steady` (ms).
async fn first_query_batch(
    run: &mut FirstQueryRun,
    vectors: &[RowRecord],
    steady: usize,
) -> anyhow::Result<(f64, Option<f64>, bool)> {
    let ids = insert(&mut run.client, &run.name, vectors.to_vec()).await?;
    flush(&mut run.client, &run.name).await?;
    let search = |k: usize| {
        let query = vectors[k % vectors.len()].clone();
        let expected = ids.get(k % ids.len()).copied();
        let param = crate::wire::SearchParam {
            collection_name: run.name.clone(),
            partition_tag_array: Vec::new(),
            query_record_array: vec![query],
            topk: 10,
            extra_params: Vec::new(),
        };
        let mut client = run.client.clone();
        async move {
            let t0 = Instant::now();
            let reply = load::send(&mut client, &load::Call::Search(param)).await?;
            anyhow::Ok((t0.elapsed(), reply.ids.first().copied() == expected))
        }
    };
    let (first, saw) = search(0).await?;
    let mut times = load::Latencies::default();
    for k in 1..=steady {
        times.record(search(k * 7919).await?.0);
    }
    Ok((first.as_secs_f64() * 1e3, times.median_ms(), saw))
}

/// Waits until `CountCollection` reports `rows` (flushed data is visible).
pub(super) async fn wait_for_rows(
    client: &mut Client,
    name: &str,
    rows: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    loop {
        let reply = client
            .count_collection(CollectionName {
                collection_name: name.to_string(),
            })
            .await
            .context("CountCollection")?
            .into_inner();
        check(reply.status.as_ref(), "CountCollection")?;
        if reply.collection_row_count >= rows {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} holds {} rows after {SNAPSHOT_WAIT:?}, expected {rows}",
                reply.collection_row_count
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The proxy's `Cmd("route <name>")` answer, parsed.
async fn route(proxy: &mut Client, name: &str) -> anyhow::Result<Value> {
    let reply = proxy
        .cmd(Command {
            cmd: format!("route {name}"),
        })
        .await
        .context("Cmd(route)")?
        .into_inner();
    check(reply.status.as_ref(), "Cmd(route)")?;
    serde_json::from_str(&reply.string_reply).context("the route reply is not JSON")
}

/// Every file id of a route answer (`nodes`: address -> ids).
fn route_ids(route: &Value) -> Vec<String> {
    route
        .get("nodes")
        .and_then(Value::as_object)
        .map(|nodes| {
            nodes
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_i64)
                .map(|id| id.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the proxy's snapshot routes `files` files of `name`.
async fn wait_for_route(proxy: &mut Client, name: &str, files: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    loop {
        let seen = match route(proxy, name).await {
            Ok(r) => route_ids(&r).len(),
            Err(_) => 0, // the collection is not in the snapshot yet
        };
        if seen >= files {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the proxy routes {seen} files of {name} after {SNAPSHOT_WAIT:?}, expected {files}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_ids_collects_every_node() {
        let route = json!({"nodes": {"a:1": [1, 2], "b:2": [3]}, "files": 3});
        let mut ids = route_ids(&route);
        ids.sort();
        assert_eq!(ids, vec!["1", "2", "3"]);
        assert!(route_ids(&json!({})).is_empty());
    }

    #[test]
    fn differences_and_ratios_need_both_sides() {
        assert_eq!(diff(Some(3.0), Some(1.0)), Some(2.0));
        assert_eq!(diff(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), Some(2.0)), Some(0.5));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn totals_add_steps() {
        let mut t = Totals::default();
        let mut l = load::Latencies::default();
        for _ in 0..10 {
            l.record(Duration::from_millis(1));
        }
        t.add(load::StepResult {
            latencies: vec![l],
            wall: Duration::from_secs(1),
            cpu: Some(Duration::from_millis(5)),
        });
        assert_eq!(t.qps(), Some(10.0));
        assert_eq!(t.cpu_us_per_search(), Some(500.0));
    }
}
