//! The `mishards` command line: `serve` (the proxy), `node` (a
//! Milvus-1.x-compatible node), `demo` (a whole cluster in one process),
//! `bench` (side-by-side measurements) and `check-config`. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mishards::config::{check_config_file, Config, LogFormat};
use mishards::node::{self, NodeOptions, Role};
use mishards::proxy::reload::LogLevelSetter;
use mishards::{bench, demo, proxy};

#[derive(Parser)]
#[command(
    name = "mishards",
    version,
    about = "Sharding proxy for Milvus 1.x clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The TOML configuration file (see config/mishards.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a Milvus-1.x-compatible node.
    Node {
        #[arg(long, value_enum)]
        role: NodeRole,
        #[arg(long, default_value = "0.0.0.0:19530")]
        listen: SocketAddr,
        /// The shared storage directory (Milvus storage.path).
        #[arg(long)]
        data_dir: PathBuf,
        /// mysql://user:pass@host:port/db or sqlite://PATH (default: DATA_DIR/db/meta.sqlite).
        #[arg(long, default_value = "sqlite://:@:/")]
        meta_uri: String,
        /// Auto-flush period of inserted rows.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        flush_interval: Duration,
        /// Period of the background merge of small files (0s disables it).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        merge_interval: Duration,
        /// How long retired (TO_DELETE) files stay on disk.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        cleanup_delay: Duration,
        /// Log level or filter.
        #[arg(long, default_value = "info")]
        log_level: String,
        /// Port of Milvus' HTTP API, on the --listen host (0 = a free port).
        /// Default 19121, or a free port when --listen has port 0.
        #[arg(long)]
        http_port: Option<u16>,
        /// Do not serve the HTTP API.
        #[arg(long, conflicts_with = "http_port")]
        no_http: bool,
    },
    /// Run a demo cluster (1 writable + 2 read-only nodes + the proxy) in one process.
    Demo {
        /// Data directory (kept between runs): the SQLite metadata
        /// (DIR/db/meta.sqlite) and, without --data-dir, the segment files.
        #[arg(long, default_value = "./mishards-demo")]
        dir: PathBuf,
        /// Where the nodes' segment files go (DATA_DIR/db/tables/; default:
        /// --dir), e.g. a JuiceFS or NFS mount, while the SQLite metadata stays
        /// in --dir: keep --dir on a local disk, as SQLite's file locking over
        /// FUSE/NFS is unreliable (a corrupt or locked database). Use the same
        /// DATA_DIR on every run of one --dir: the metadata names files under it.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:19530")]
        listen: SocketAddr,
        /// Shard groups: N independent local clusters (each a writable and
        /// two read-only nodes, with its own metadata under DIR/gI/) behind
        /// the one proxy; collections spread over them.
        #[arg(long, default_value_t = 1)]
        groups: usize,
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics_listen: SocketAddr,
        /// The proxy's Milvus HTTP API. Default 127.0.0.1:19121, or a free
        /// port when --listen has port 0.
        #[arg(long)]
        http_listen: Option<SocketAddr>,
    },
    /// Validate a configuration file and print every error.
    CheckConfig { file: PathBuf },
    /// Measure search and insert costs through the proxy vs straight to a
    /// node, on an embedded cluster or any Milvus 1.x address (see BENCHMARKS.md).
    Bench(#[command(flatten)] bench::BenchArgs),
    /// The bench's floor forwarder (started by `mishards bench`; see src/bench/floor.rs).
    #[command(hide = true)]
    BenchFloor {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The file ids per node: a proxy's `route <collection>` answer, as JSON.
        #[arg(long)]
        plan: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum NodeRole {
    Rw,
    Ro,
}

/// What must outlive the program's work for its telemetry: with the `otel`
/// feature, the tracer provider, shut down (flushing its spans) on drop.
struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("mishards: flushing the OpenTelemetry spans failed: {e}");
            }
        }
    }
}

/// Logs to stderr (text or JSON, both carrying the request spans) and, with
/// the `otel` feature and the `OTEL_*` variables set, exports the spans over
/// OTLP. The returned setter changes the level later (a reloaded `log.level`);
/// `RUST_LOG`, when set, wins at start.
fn init_logging(level: &str, format: LogFormat) -> (TelemetryGuard, LogLevelSetter) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let set_level: LogLevelSetter = Box::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    {
        let provider = match mishards::trace::otel::provider_from_env() {
            Ok(provider) => provider,
            Err(e) => {
                eprintln!("mishards: OpenTelemetry export disabled: {e:#}");
                None
            }
        };
        let layer = provider.as_ref().map(mishards::trace::otel::layer);
        registry.with(layer).init();
        (TelemetryGuard { provider }, set_level)
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        (TelemetryGuard {}, set_level)
    }
}

/// Reloads the configuration file on every SIGHUP (on Unix; elsewhere the
/// file watch alone reloads).
async fn reload_on_hangups(reconfigurer: std::sync::Arc<proxy::reload::Reconfigurer>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = reconfigurer.reload_file();
        }
    }
    #[cfg(not(unix))]
    let _ = reconfigurer;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => match check_config_file(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                return ExitCode::SUCCESS;
            }
            Err(errors) => {
                for e in &errors {
                    let text = mishards::meta::redact_uris_in(&e.to_string());
                    eprintln!("{}: {text}", file.display());
                }
                eprintln!("{} error(s)", errors.len());
                return ExitCode::FAILURE;
            }
        },
        Command::Serve { config } => serve(config).await,
        Command::Node {
            role,
            listen,
            data_dir,
            meta_uri,
            flush_interval,
            merge_interval,
            cleanup_delay,
            log_level,
            http_port,
            no_http,
        } => {
            let (_telemetry, _) = init_logging(&log_level, LogFormat::Text);
            let role = match role {
                NodeRole::Rw => Role::Writable,
                NodeRole::Ro => Role::ReadOnly,
            };
            let mut opts = NodeOptions::new(role, listen, data_dir, meta_uri);
            opts.flush_interval = flush_interval;
            opts.merge_interval = merge_interval;
            opts.cleanup_delay = cleanup_delay;
            if !no_http {
                let port = http_port.unwrap_or(if listen.port() == 0 {
                    0
                } else {
                    mishards::config::DEFAULT_HTTP_API_PORT
                });
                opts.http_listen = Some(SocketAddr::new(listen.ip(), port));
            }
            run_node(opts).await
        }
        Command::Bench(args) => {
            let (_telemetry, _) = init_logging("warn", LogFormat::Text);
            bench::run(args).await
        }
        Command::BenchFloor { listen, plan } => bench::run_floor(listen, &plan).await,
        Command::Demo {
            dir,
            data_dir,
            listen,
            groups,
            metrics_listen,
            http_listen,
        } => {
            let (_telemetry, _) = init_logging("warn", LogFormat::Text);
            demo::run(demo::DemoOptions {
                dir,
                data_dir,
                listen,
                metrics_listen,
                groups,
                http_listen: http_listen.unwrap_or_else(|| {
                    let port = if listen.port() == 0 {
                        0
                    } else {
                        mishards::config::DEFAULT_HTTP_API_PORT
                    };
                    SocketAddr::new(listen.ip(), port)
                }),
            })
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mishards: {}", mishards::error_text::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config: Config = Config::load(&path).map_err(|errors| {
        let text: Vec<String> = errors
            .iter()
            .map(|e| mishards::meta::redact_uris_in(&e.to_string()))
            .collect();
        anyhow::anyhow!("{}:\n  {}", path.display(), text.join("\n  "))
    })?;
    let (_telemetry, log_level) = init_logging(&config.log.level, config.log.format);
    let grace = config.server.shutdown_grace;
    let options = proxy::StartOptions {
        config_path: Some(path.clone()),
        log_level: Some(log_level),
    };
    let running = proxy::start_with(config, options).await?;
    // The metrics line first: `mishards bench` reads both and stops at the listening line.
    eprintln!("mishards proxy metrics on http://{}", running.metrics_addr);
    eprintln!("mishards proxy listening on {}", running.addr);
    let reload_on_hangup = tokio::spawn(reload_on_hangups(running.reconfigurer.clone()));
    shutdown_signal().await;
    tracing::info!("shutting down");
    reload_on_hangup.abort();
    running.stop(grace).await
}

async fn run_node(opts: NodeOptions) -> anyhow::Result<()> {
    let running = node::start(opts).await?;
    eprintln!("mishards node listening on {}", running.addr);
    if let Some(http) = running.http_api_addr {
        eprintln!("mishards node HTTP API on http://{http}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await
}
