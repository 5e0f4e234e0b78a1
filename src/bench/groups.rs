//! `--scenario groups`: one proxy over 1, 2 and 3 shard groups, side by
//! side in one run. Each group is its own cluster (a writable and a
//! read-only node of ours, child processes, with their own SQLite file or
//! MySQL database and their own data directory); each group count has its
//! own proxy process, so the proxy's CPU time is its own. Rounds interleave
//! the group counts (round r runs 1, 2, 3 groups in turn) so machine noise
//! hits them alike. A round inserts batches without ids from concurrent
//! clients (the proxy generates the ids and splits each batch by owner
//! group), flushes, waits until the proxy counts every row, then times
//! nq=1/topk=10 searches (merged over every group).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::cluster::{node_args, ChildProcess, MetaDb, TempDir};
use super::load::{self, check, connect, random_rows, Client, Limits, SearchPath, Shape};
use super::report::{num, ScenarioReport};
use super::scenarios::wait_for_rows;
use super::{procstat, progress, BenchArgs};
use crate::types::MetricType;
use crate::wire::{CollectionSchema, FlushParam, InsertParam, RowRecord};

/// The group counts measured, side by side.
const GROUP_COUNTS: [usize; 3] = [1, 2, 3];
/// Distinct insert batches the clients cycle through (generated once).
const BATCH_POOL: usize = 4;
/// The sizes of this scenario, from the shared flags.
#[derive(Clone, Debug)]
struct GroupSizes {
    rounds: usize,
    batches: usize,
    batch_rows: usize,
    clients: usize,
    dim: usize,
    search_time: Duration,
    max_searches: usize,
}

impl GroupSizes {
    fn from_args(args: &BenchArgs) -> GroupSizes {
        let quick = args.quick;
        GroupSizes {
            rounds: if quick { 2 } else { 3 },
            batches: args.batches.unwrap_or(if quick { 4 } else { 50 }).max(1),
            batch_rows: args
                .batch_rows
                .unwrap_or(if quick { 500 } else { 2000 })
                .max(1),
            clients: args.clients.max(1),
            dim: args.dim.max(1),
            search_time: args.duration.unwrap_or(if quick {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(3)
            }),
            max_searches: if quick { 200 } else { 5000 },
        }
    }

    fn batch_bytes(&self) -> f64 {
        (self.batch_rows * self.dim * 4) as f64
    }
}

/// One shard group: its nodes, then (dropped after them) its metadata and directory.
struct Group {
    readonly: ChildProcess,
    writable: ChildProcess,
    _meta: MetaDb,
    _dir: TempDir,
}

impl Group {
    async fn start(meta_spec: &str, label: &str) -> anyhow::Result<Group> {
        let dir = TempDir::new(&format!("mishards-bench-{label}"))?;
        let meta = MetaDb::create(meta_spec, &dir.path).await?;
        let writable = ChildProcess::spawn(
            &format!("{label} rw node"),
            node_args("rw", &dir.path, meta.uri()),
        )
        .await?;
        let readonly = ChildProcess::spawn(
            &format!("{label} ro node"),
            node_args("ro", &dir.path, meta.uri()),
        )
        .await?;
        Ok(Group {
            readonly,
            writable,
            _meta: meta,
            _dir: dir,
        })
    }
}

/// One group count: its proxy (dropped first), its groups, and what its rounds measured.
struct Setup {
    proxy: ChildProcess,
    groups: Vec<Group>,
    _dir: TempDir,
    collection: String,
    /// Rows inserted so far (all rounds).
    rows: usize,
    insert_wall: Duration,
    insert_cpu: Option<Duration>,
    nodes_cpu: Option<Duration>,
    /// MB/s of each round.
    round_mb_s: Vec<f64>,
    searches: load::Latencies,
    search_cpu: Option<Duration>,
}

impl Setup {
    async fn start(meta_spec: &str, count: usize, suffix: &str) -> anyhow::Result<Setup> {
        let dir = TempDir::new(&format!("mishards-bench-{count}groups"))?;
        let mut groups = Vec::new();
        for g in 1..=count {
            groups.push(Group::start(meta_spec, &format!("{count}groups-g{g}")).await?);
        }
        let mut toml = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nlevel = \"warn\"\n\
             [reload]\nwatch_interval = \"0s\"\n",
        );
        for (i, g) in groups.iter().enumerate() {
            toml.push_str(&format!(
                "[[groups]]\nname = \"g{}\"\nmeta_uri = \"{}\"\nwritable = \"{}\"\nreadonly = [\"{}\"]\n",
                i + 1,
                g._meta.uri(),
                g.writable.addr,
                g.readonly.addr
            ));
        }
        let path = dir.path.join("proxy.toml");
        std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
        let proxy = ChildProcess::spawn(
            &format!("proxy over {count} groups"),
            vec![
                "serve".into(),
                "--config".into(),
                path.display().to_string(),
            ],
        )
        .await?;
        Ok(Setup {
            proxy,
            groups,
            _dir: dir,
            collection: format!("bench_groups{count}_{suffix}"),
            rows: 0,
            insert_wall: Duration::ZERO,
            insert_cpu: Some(Duration::ZERO),
            nodes_cpu: Some(Duration::ZERO),
            round_mb_s: Vec::new(),
            searches: load::Latencies::default(),
            search_cpu: Some(Duration::ZERO),
        })
    }

    fn addr(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// CPU time of every node of every group.
    fn nodes_cpu_now(&self) -> Option<Duration> {
        self.groups
            .iter()
            .flat_map(|g| [g.writable.pid(), g.readonly.pid()])
            .map(procstat::cpu_time)
            .sum()
    }
}

fn add(total: &mut Option<Duration>, part: Option<Duration>) {
    *total = match (*total, part) {
        (Some(t), Some(p)) => Some(t + p),
        _ => None,
    };
}

fn elapsed_cpu(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// Runs the scenario and returns its table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<ScenarioReport> {
    if args.target.is_some() {
        bail!("the groups scenario starts its own clusters; drop --target");
    }
    let sizes = GroupSizes::from_args(args);
    let suffix = format!("{:08x}", rand::rng().random::<u32>());
    let mut setups = Vec::new();
    for count in GROUP_COUNTS {
        progress(format!(
            "starting {count} group(s) (1 rw + 1 ro node each, {}) and a proxy over them",
            args.meta_uri
        ));
        let setup = Setup::start(&args.meta_uri, count, &suffix).await?;
        create_collection(&setup.addr(), &setup.collection, sizes.dim).await?;
        setups.push(setup);
    }
    let mut rng = StdRng::seed_from_u64(13);
    let pool: Arc<Vec<Vec<RowRecord>>> = Arc::new(
        (0..BATCH_POOL.min(sizes.batches))
            .map(|_| random_rows(&mut rng, sizes.batch_rows, sizes.dim))
            .collect(),
    );
    for round in 0..sizes.rounds {
        for setup in &mut setups {
            progress(format!(
                "groups round {}/{}: {} group(s), {} x {} rows from {} clients",
                round + 1,
                sizes.rounds,
                setup.groups.len(),
                sizes.batches,
                sizes.batch_rows,
                sizes.clients
            ));
            insert_round(setup, &sizes, &pool).await?;
            search_round(setup, &sizes, round).await?;
        }
    }
    Ok(table(&sizes, &mut setups))
}

async fn create_collection(addr: &str, name: &str, dim: usize) -> anyhow::Result<()> {
    let mut client = connect(addr)?;
    let status = client
        .create_collection(CollectionSchema {
            status: None,
            collection_name: name.to_string(),
            dimension: dim as i64,
            index_file_size: 1024,
            metric_type: MetricType::L2 as i32,
            extra_params: Vec::new(),
        })
        .await
        .with_context(|| format!("CreateCollection {name} on {addr}"))?
        .into_inner();
    check(Some(&status), "CreateCollection")
}

/// `sizes.batches` inserts without ids from `sizes.clients` clients, then a
/// flush; records the wall time of the inserts and the CPU around them.
async fn insert_round(
    setup: &mut Setup,
    sizes: &GroupSizes,
    pool: &Arc<Vec<Vec<RowRecord>>>,
) -> anyhow::Result<()> {
    let addr = setup.addr();
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<Client> = (0..sizes.clients)
        .map(|_| connect(&addr))
        .collect::<anyhow::Result<_>>()?;
    let proxy_before = procstat::cpu_time(setup.proxy.pid());
    let nodes_before = setup.nodes_cpu_now();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let (next, pool, name) = (next.clone(), pool.clone(), setup.collection.clone());
        let batches = sizes.batches;
        tasks.push(tokio::spawn(async move {
            let mut rows = 0usize;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= batches {
                    return anyhow::Ok(rows);
                }
                let batch = &pool[k % pool.len()];
                let reply = client
                    .insert(InsertParam {
                        collection_name: name.clone(),
                        row_record_array: batch.clone(),
                        row_id_array: Vec::new(),
                        partition_tag: String::new(),
                        extra_params: Vec::new(),
                    })
                    .await
                    .context("Insert")?
                    .into_inner();
                check(reply.status.as_ref(), "Insert")?;
                if reply.vector_id_array.len() != batch.len() {
                    bail!(
                        "Insert returned {} ids for {} rows",
                        reply.vector_id_array.len(),
                        batch.len()
                    );
                }
                rows += batch.len();
            }
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.context("an insert client failed")??;
    }
    let wall = t0.elapsed();
    add(
        &mut setup.insert_cpu,
        elapsed_cpu(proxy_before, procstat::cpu_time(setup.proxy.pid())),
    );
    let nodes_after = setup.nodes_cpu_now();
    add(&mut setup.nodes_cpu, elapsed_cpu(nodes_before, nodes_after));
    setup.rows += rows;
    setup.insert_wall += wall;
    if wall > Duration::ZERO {
        setup
            .round_mb_s
            .push((rows * sizes.dim * 4) as f64 / 1e6 / wall.as_secs_f64());
    }
    let mut client = connect(&addr)?;
    let status = client
        .flush(FlushParam {
            collection_name_array: vec![setup.collection.clone()],
        })
        .await
        .context("Flush")?
        .into_inner();
    check(Some(&status), "Flush")?;
    wait_for_rows(&mut client, &setup.collection, setup.rows as i64).await
}

/// Timed nq=1/topk=10 searches from one client, the proxy's CPU around them.
async fn search_round(setup: &mut Setup, sizes: &GroupSizes, round: usize) -> anyhow::Result<()> {
    let path = SearchPath::search(
        "proxy",
        &setup.addr(),
        &setup.collection,
        Shape { nq: 1, topk: 10 },
        sizes.dim,
        17 + round as u64,
    );
    let limits = Limits {
        duration: sizes.search_time,
        max_requests: sizes.max_searches,
    };
    let mut step = load::run_step(&[path], 1, limits, Some(setup.proxy.pid())).await?;
    add(&mut setup.search_cpu, step.cpu);
    if let Some(l) = step.latencies.pop() {
        setup.searches.extend(l);
    }
    Ok(())
}

fn table(sizes: &GroupSizes, setups: &mut [Setup]) -> ScenarioReport {
    let mut table = ScenarioReport::new(
        "groups",
        "Insert throughput and search latency through one proxy over 1, 2 and 3 shard groups",
        &[
            "groups",
            "nodes",
            "rows_inserted",
            "insert_mb_per_s",
            "insert_rows_per_s",
            "mb_per_s_over_1_group",
            "round_mb_per_s_min",
            "round_mb_per_s_max",
            "proxy_cpu_ms_per_mb",
            "nodes_cpu_ms_per_mb",
            "searches",
            "search_p50_ms",
            "search_p99_ms",
            "proxy_cpu_us_per_search",
            "search_errors",
        ],
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    table.setup = format!(
        "Each group: 1 writable + 1 read-only node of ours (child processes, background merge \
         off) with its own metadata and data directory; one proxy process per group count. \
         {} interleaved rounds; a round = {} `Insert`s of {} x {} floats ({:.2} MB of vectors \
         each) without ids from {} concurrent clients (the proxy makes the ids and splits each \
         batch by owner group), a flush, then nq=1/topk=10 searches from 1 client for up to {} \
         (the data grows round by round, alike for every group count). MB/s = vector bytes / \
         wall time of a round's inserts. CPU = utime+stime of the proxy (or all nodes) during \
         the inserts or searches (10 ms ticks). {cores} CPU cores shared by everything.",
        sizes.rounds,
        sizes.batches,
        sizes.batch_rows,
        sizes.dim,
        sizes.batch_bytes() / 1e6,
        sizes.clients,
        humantime::format_duration(sizes.search_time),
    );
    let mb_s = |s: &Setup| {
        (s.insert_wall > Duration::ZERO)
            .then(|| (s.rows * sizes.dim * 4) as f64 / 1e6 / s.insert_wall.as_secs_f64())
    };
    let base = setups.first().and_then(mb_s);
    for s in setups.iter_mut() {
        let mb = (s.rows * sizes.dim * 4) as f64 / 1e6;
        let this = mb_s(s);
        let per_mb =
            |cpu: Option<Duration>| cpu.filter(|_| mb > 0.0).map(|c| c.as_secs_f64() * 1e3 / mb);
        let n = s.searches.count();
        let search_cpu = s
            .search_cpu
            .filter(|_| n > 0)
            .map(|c| c.as_secs_f64() * 1e6 / n as f64);
        let min = s.round_mb_s.iter().copied().reduce(f64::min);
        let max = s.round_mb_s.iter().copied().reduce(f64::max);
        table.row(vec![
            json!(s.groups.len()),
            json!(s.groups.len() * 2),
            json!(s.rows),
            num(this),
            num(this.map(|m| m * 1e6 / (sizes.dim * 4) as f64)),
            num(match (this, base) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            }),
            num(min),
            num(max),
            num(per_mb(s.insert_cpu)),
            num(per_mb(s.nodes_cpu)),
            json!(n),
            num(s.searches.median_ms()),
            num(s.searches.percentile_ms(0.99)),
            num(search_cpu),
            json!(s.searches.errors),
        ]);
        if let Some(e) = &s.searches.first_error {
            table.notes.push(format!(
                "{} group(s): first search error: {e}",
                s.groups.len()
            ));
        }
    }
    table
}
