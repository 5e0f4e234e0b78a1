//! The measurements of `mishards bench`, each producing one table, one file
//! per scenario; this file holds what they share: the run ([`run_all`]), the
//! clusters (started on first need), the search collection, the stub
//! collections and the insert/flush/wait helpers. Every collection a run
//! makes has a unique name and, in target mode, is dropped at the end.

mod coalesce;
mod cost_growth;
mod first_query;
mod insert;
mod latency;
mod proxy_only;
mod throughput;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::cluster::{ChildProcess, RealCluster, StubCluster};
use super::juicefs::JuiceFs;
use super::load::{self, check, connect, random_rows, Client, Limits, Shape};
use super::report::{Report, ScenarioReport};
use super::{progress, storages, BenchArgs, Scenario, Sizes, Storage};
use crate::meta::{milvus_date, now_micros, FileRow};
use crate::types::MetricType;
use crate::wire::{CollectionName, CollectionSchema, Command, FlushParam, InsertParam};

const ONE_BY_TEN: Shape = Shape { nq: 1, topk: 10 };
/// Read-only node counts of the throughput scenario.
const THROUGHPUT_RO: [usize; 3] = [1, 2, 3];
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
                Scenario::Coalesce => self.coalesce(ro).await,
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

    /// The floor forwarder ([`super::floor`]) in front of the stubs, sending
    /// each the files of `name` the proxy routes to it.
    async fn floor(&mut self, name: &str) -> anyhow::Result<ChildProcess> {
        let cluster = self.stubs().await?;
        let mut proxy = connect(&cluster.proxy.addr.to_string())?;
        let route = route(&mut proxy, name).await?;
        cluster.floor(&format!("floor-{name}"), &route).await
    }

    /// File ids of `name` as the proxy routes them.
    async fn routed_ids(&mut self, name: &str) -> anyhow::Result<Vec<String>> {
        let cluster = self.stubs().await?;
        let mut proxy = connect(&cluster.proxy.addr.to_string())?;
        let route = route(&mut proxy, name).await?;
        Ok(route_ids(&route))
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
    use serde_json::json;

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
