//! `mishards bench`: measures what a search or an insert costs through a
//! proxy against straight to a node, side by side in one run, either on an
//! embedded cluster of child processes or on any Milvus 1.x address.
//!
//! `mod.rs` holds the options, the sizes of a run and the scenario list;
//! `cluster` starts the embedded clusters, `juicefs` the JuiceFS volume their
//! nodes can keep their data on, `stub` the canned read-only nodes,
//! `load` drives the requests and records latencies, `procstat` reads a
//! child's CPU time and peak memory, `scenarios` runs each measurement and
//! `report` prints the tables.

mod cluster;
mod floor;
mod groups;
mod http;
mod juicefs;
mod load;
mod procstat;
mod report;
mod scenarios;
mod stub;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use load::Shape;

pub use floor::run as run_floor;
pub use report::{Report, ScenarioReport};

/// Options of `mishards bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Measure a running Milvus 1.x address (ours, a real Milvus or Mishards)
    /// instead of an embedded cluster. The bench makes its own collections
    /// (unique names) and drops them at the end.
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: one node behind it, for the "direct" columns.
    #[arg(long, requires = "target")]
    pub direct: Option<String>,
    /// Metadata of the embedded cluster: "sqlite" (a file in a temporary
    /// directory) or mysql://user[:password]@host[:port][/prefix], where a
    /// uniquely named database (prefix_<random>) is created and dropped.
    #[arg(long, default_value = "sqlite")]
    pub meta_uri: String,
    /// Scenario to run (repeatable); default all that the mode supports.
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Shrink every size and duration: a smoke run of well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Length of each measured step (default 5s, 500ms with --quick).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Print the result as JSON instead of markdown tables.
    #[arg(long)]
    pub json: bool,
    /// Read-only nodes behind the proxy in the embedded cluster (latency,
    /// insert and first-query scenarios; throughput always runs 1, 2 and 3).
    #[arg(long, default_value_t = 2)]
    pub ro_nodes: usize,
    /// Rows of the latency/throughput collection (default 20000, 2000 with --quick).
    #[arg(long)]
    pub rows: Option<usize>,
    /// Segment files those rows are flushed into (default 8, 4 with --quick).
    #[arg(long)]
    pub files: Option<usize>,
    /// Rows per insert batch, in the insert and first-query scenarios
    /// (default 100000, 2000 with --quick).
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// Insert + flush rounds of the first-query scenario (default 10, 3 with --quick).
    #[arg(long)]
    pub batches: Option<usize>,
    /// Concurrent clients of the throughput and CPU-per-search steps.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Vector dimension of every collection the bench makes.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Where the embedded nodes keep their data in the first-query scenario
    /// (repeatable: it then runs once per storage, batches interleaved, and
    /// reports them side by side). "local": one temporary directory;
    /// "juicefs": one JuiceFS volume, each node on its own mount (needs
    /// --juicefs-meta). The other scenarios always use a local directory.
    #[arg(long = "storage", value_enum)]
    pub storages: Vec<Storage>,
    /// The juicefs client binary (default: `juicefs` on PATH, then `.venv/bin/juicefs`).
    #[arg(long)]
    pub juicefs: Option<PathBuf>,
    /// Metadata of the bench's JuiceFS volume: redis://HOST:PORT/N, an EMPTY
    /// Redis database (the bench refuses one with keys). The bench formats its
    /// own volume there and FLUSHDBs that database at the end.
    #[arg(long)]
    pub juicefs_meta: Option<String>,
    /// Start the proxies (`mishards serve`) from this binary instead of this
    /// one: another build (an older commit, say) measured against the same
    /// nodes, stubs and floor as this bench drives, for a before/after in one
    /// run. Nodes, stubs and the floor still come from this binary.
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
}

/// Where the nodes of an embedded cluster keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Storage {
    /// A local temporary directory shared by every node.
    Local,
    /// One JuiceFS volume, mounted once per node.
    Juicefs,
}

impl Storage {
    /// The name of `--storage` and of the JSON `storage` field.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Local => "local",
            Storage::Juicefs => "juicefs",
        }
    }
}

/// The storages of the first-query scenario, in a fixed order (local first);
/// local when none is given.
pub fn storages(args: &BenchArgs) -> Vec<Storage> {
    let mut all = args.storages.clone();
    if all.is_empty() {
        all.push(Storage::Local);
    }
    all.sort();
    all.dedup();
    all
}

/// The measurements `mishards bench` can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// p50/p99/p99.9 through the proxy vs straight to one node, nq=1/topk=10
    /// and nq=100/topk=100, at 1 and 16 clients (--quick: nq=10, 4 clients).
    Latency,
    /// Search QPS through the proxy with 1, 2 and 3 read-only nodes.
    Throughput,
    /// Insert MB/s through the proxy vs straight to the writer; proxy peak RSS.
    Insert,
    /// Extra time of the first search after a flush, batch after batch.
    FirstQuery,
    /// The proxy alone, in front of stub nodes: CPU per search, QPS per core, added latency.
    ProxyOnly,
    /// Proxy CPU per search as files, nq and topk grow (stub nodes).
    CostGrowth,
    /// Insert MB/s, search latency and proxy CPU over 1, 2 and 3 shard
    /// groups (only when asked for: not in the default run).
    Groups,
    /// nq=1/topk=10 search latency and proxy CPU through the HTTP API
    /// (REST) vs gRPC, same proxy and cluster (only when asked for).
    Http,
    /// nq=1 searches through proxies with `[coalesce]` off and on: node
    /// calls per search, QPS at 32 clients, added p50 (only when asked for).
    Coalesce,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Latency,
        Scenario::Throughput,
        Scenario::Insert,
        Scenario::FirstQuery,
        Scenario::ProxyOnly,
        Scenario::CostGrowth,
    ];

    /// The name of `--scenario` and of the JSON `scenario` field.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::Throughput => "throughput",
            Scenario::Insert => "insert",
            Scenario::FirstQuery => "first-query",
            Scenario::ProxyOnly => "proxy-only",
            Scenario::CostGrowth => "cost-growth",
            Scenario::Groups => "groups",
            Scenario::Http => "http",
            Scenario::Coalesce => "coalesce",
        }
    }

    /// Whether the scenario needs the embedded cluster (it starts nodes or
    /// reads the proxy's process statistics).
    pub fn embedded_only(self) -> bool {
        matches!(
            self,
            Scenario::Throughput
                | Scenario::ProxyOnly
                | Scenario::CostGrowth
                | Scenario::Groups
                | Scenario::Http
                | Scenario::Coalesce
        )
    }
}

/// The sizes of one run, from the options and `--quick`.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub duration: Duration,
    /// Cap on requests of one step, so a very fast path still ends.
    pub max_requests: usize,
    pub dim: usize,
    pub rows: usize,
    pub files: usize,
    pub batch_rows: usize,
    /// Interleaved insert rounds (one batch on each path per round).
    pub insert_rounds: usize,
    pub batches: usize,
    /// Searches after the first one of a first-query round (the steady state).
    pub steady_searches: usize,
    pub clients: usize,
    pub ro_nodes: usize,
    /// Collection sizes (files) of the cost-growth scenario.
    pub file_counts: Vec<usize>,
    /// Rows each stub file claims to hold (the proxy only sums them).
    pub rows_per_stub_file: i64,
    /// Search shapes and client counts of the latency and proxy-only scenarios.
    pub latency_shapes: Vec<Shape>,
    pub latency_clients: Vec<usize>,
    /// The nq x topk grid of the cost-growth scenario.
    pub growth_nq: Vec<usize>,
    pub growth_topk: Vec<usize>,
}

impl Sizes {
    pub fn from_args(args: &BenchArgs) -> Sizes {
        let quick = args.quick;
        let pick = |value: Option<usize>, full: usize, small: usize| {
            value.unwrap_or(if quick { small } else { full })
        };
        Sizes {
            duration: args.duration.unwrap_or(if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            }),
            max_requests: if quick { 20_000 } else { 2_000_000 },
            dim: args.dim.max(1),
            rows: pick(args.rows, 20_000, 2_000),
            files: pick(args.files, 8, 4).max(1),
            batch_rows: pick(args.batch_rows, 100_000, 2_000).max(1),
            insert_rounds: if quick { 2 } else { 5 },
            batches: pick(args.batches, 10, 3).max(1),
            steady_searches: if quick { 5 } else { 20 },
            clients: args.clients.max(1),
            ro_nodes: args.ro_nodes.max(1),
            file_counts: if quick {
                vec![10, 100, 1000]
            } else {
                vec![10, 100, 1000, 10_000]
            },
            rows_per_stub_file: 1000,
            // --quick must also run on a debug build, whose scans are ~50x slower.
            latency_shapes: if quick {
                vec![Shape { nq: 1, topk: 10 }, Shape { nq: 10, topk: 100 }]
            } else {
                vec![Shape { nq: 1, topk: 10 }, Shape { nq: 100, topk: 100 }]
            },
            latency_clients: if quick { vec![1, 4] } else { vec![1, 16] },
            growth_nq: if quick { vec![1, 10] } else { vec![1, 10, 100] },
            growth_topk: if quick {
                vec![10, 100]
            } else {
                vec![10, 100, 1000]
            },
        }
    }
}

/// The scenarios to run, in their fixed order, and the ones the mode cannot run.
pub fn selected(args: &BenchArgs) -> (Vec<Scenario>, Vec<Scenario>) {
    let mut wanted: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    wanted.sort();
    wanted.dedup();
    if args.target.is_some() {
        wanted.into_iter().partition(|s| !s.embedded_only())
    } else {
        (wanted, Vec::new())
    }
}

/// Runs `mishards bench`: progress on stderr, the report on stdout.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.proxy_bin {
        cluster::use_proxy_binary(path)?;
    }
    let (scenarios, skipped) = selected(&args);
    let sizes = Sizes::from_args(&args);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let work = scenarios::run_all(&args, &sizes, &scenarios, &skipped, command);
    let report = tokio::select! {
        report = work => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the embedded cluster was stopped"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}

/// One line of progress on stderr, with the seconds since the first one.
pub(crate) fn progress(text: impl AsRef<str>) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let since = START.get_or_init(std::time::Instant::now).elapsed();
    eprintln!("bench: [{:6.1}s] {}", since.as_secs_f64(), text.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> BenchArgs {
        let mut all = vec!["bench"];
        all.extend_from_slice(argv);
        Cli::parse_from(all).args
    }

    #[test]
    fn every_scenario_by_default_in_a_fixed_order() {
        let (run, skipped) = selected(&parse(&["--scenario", "insert", "--scenario", "latency"]));
        assert_eq!(run, vec![Scenario::Latency, Scenario::Insert]);
        assert!(skipped.is_empty());
        let (run, _) = selected(&parse(&[]));
        assert_eq!(run, Scenario::ALL.to_vec());
    }

    #[test]
    fn target_mode_skips_what_needs_the_embedded_cluster() {
        let (run, skipped) = selected(&parse(&["--target", "10.0.0.1:19530"]));
        assert_eq!(
            run,
            vec![Scenario::Latency, Scenario::Insert, Scenario::FirstQuery]
        );
        assert_eq!(
            skipped,
            vec![
                Scenario::Throughput,
                Scenario::ProxyOnly,
                Scenario::CostGrowth
            ]
        );
    }

    #[test]
    fn quick_shrinks_sizes_and_explicit_values_win() {
        let quick = Sizes::from_args(&parse(&["--quick", "--rows", "500"]));
        assert_eq!(quick.rows, 500);
        assert_eq!(quick.batch_rows, 2_000);
        assert!(quick.duration < Duration::from_secs(1));
        let full = Sizes::from_args(&parse(&[]));
        assert_eq!(full.batch_rows, 100_000);
        assert_eq!(full.file_counts.last(), Some(&10_000));
    }

    #[test]
    fn storages_default_to_local_and_come_in_a_fixed_order() {
        assert_eq!(storages(&parse(&[])), vec![Storage::Local]);
        let both = parse(&[
            "--storage",
            "juicefs",
            "--storage",
            "local",
            "--storage",
            "juicefs",
            "--juicefs-meta",
            "redis://127.0.0.1:6379/4",
        ]);
        assert_eq!(storages(&both), vec![Storage::Local, Storage::Juicefs]);
        assert_eq!(
            both.juicefs_meta.as_deref(),
            Some("redis://127.0.0.1:6379/4")
        );
        for s in [Storage::Local, Storage::Juicefs] {
            let value = s.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(value.as_deref(), Some(s.name()));
        }
    }

    #[test]
    fn scenario_names_match_the_command_line() {
        for s in Scenario::ALL {
            let value = s.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(value.as_deref(), Some(s.name()));
        }
    }
}
