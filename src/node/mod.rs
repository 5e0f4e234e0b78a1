//! A small Milvus-1.x-compatible server (writable or read-only role): exact
//! search over segment files in a shared directory, metadata in the Milvus 1.1
//! schema. It never imports the proxy.

pub mod cache;
pub mod engine;
pub mod index;
pub mod pool;
pub mod runtime_config;
pub mod scan;
pub mod segment;
pub mod server_config;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use engine::{Engine, EngineOptions, Role};

use crate::meta::{MetaStore, MetaUri};

/// Everything `mishards node` is started with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub role: Role,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Milvus `meta_uri`; `sqlite://:@:/` means `<data_dir>/db/meta.sqlite`.
    pub meta_uri: String,
    /// Auto-flush period of the insert buffer (Milvus `auto_flush_interval`;
    /// zero disables it; `set_config storage.auto_flush_interval` changes it).
    pub flush_interval: Duration,
    /// Period of the background merge of small files; zero disables it.
    pub merge_interval: Duration,
    /// How long TO_DELETE files stay on disk (Milvus `file_cleanup_timeout`).
    pub cleanup_delay: Duration,
    pub cache_bytes: u64,
    pub max_message_size: usize,
    /// Where Milvus' HTTP API is served (port 0 picks a free port); `None`
    /// (the default here; `mishards node` serves it on 19121) disables it.
    pub http_listen: Option<SocketAddr>,
}

impl NodeOptions {
    pub fn new(role: Role, listen: SocketAddr, data_dir: PathBuf, meta_uri: String) -> Self {
        Self {
            role,
            listen,
            data_dir,
            meta_uri,
            flush_interval: Duration::from_secs(1),
            merge_interval: Duration::from_secs(1),
            cleanup_delay: Duration::from_secs(10),
            cache_bytes: 4 << 30,
            max_message_size: crate::grpc::DEFAULT_MAX_MESSAGE_SIZE,
            http_listen: None,
        }
    }
}

/// A node serving in the background.
pub struct RunningNode {
    pub addr: SocketAddr,
    /// Where Milvus' HTTP API is served, when [`NodeOptions::http_listen`] is set.
    pub http_api_addr: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<anyhow::Result<()>>,
    http_api_server: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Stops accepting, flushes what is buffered, and waits for the server.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.background {
            task.abort();
        }
        let result = self.server.await.context("node server task")?;
        if let Some(http) = self.http_api_server {
            let _ = http.await;
        }
        self.engine.shutdown().await;
        self.engine.meta().close().await;
        result
    }
}

/// Opens the metadata database and the data directory, binds, and serves.
pub async fn start(opts: NodeOptions) -> anyhow::Result<RunningNode> {
    let db_dir = opts.data_dir.join("db");
    std::fs::create_dir_all(&db_dir)
        .with_context(|| format!("cannot create data directory {}", db_dir.display()))?;
    let uri = MetaUri::parse(&opts.meta_uri, Some(&db_dir.join("meta.sqlite")))
        .map_err(anyhow::Error::msg)?;
    let meta = MetaStore::connect(&uri, 8).await.with_context(|| {
        format!(
            "cannot open metadata database {}",
            crate::meta::redacted(&opts.meta_uri)
        )
    })?;
    let engine = Arc::new(Engine::new(
        EngineOptions {
            role: opts.role,
            data_dir: opts.data_dir.clone(),
            cleanup_delay: opts.cleanup_delay,
            cache_bytes: opts.cache_bytes,
        },
        meta,
    ));
    match engine.recover_disk().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed crash leftovers from the data directory"
        ),
        Err(e) => anyhow::bail!("cannot recover the data directory: {}", e.reason),
    }
    if opts.role == Role::Writable {
        match engine.retire_interrupted_builds().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(retired = n, "retired index builds a crash interrupted"),
            Err(e) => anyhow::bail!("cannot retire interrupted index builds: {}", e.reason),
        }
        match engine.replay_wal().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                "buffered again the acknowledged rows the write-ahead log held past the last flush"
            ),
            Err(e) => anyhow::bail!("cannot replay the write-ahead log: {}", e.reason),
        }
    }
    let (listener, addr) = crate::grpc::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let (shutdown, mut stop_rx) = watch::channel(false);
    let config = Arc::new(runtime_config::RuntimeConfig::new(
        &opts,
        addr,
        engine.clone(),
    ));
    let service = service::NodeService::new(engine.clone(), config.clone());
    let max = opts.max_message_size;
    // What `grpc::serve` serves, built here to be shared with the HTTP API.
    let routes = crate::trace::ServerSpan::new(crate::grpc::milvus_server(service, max));
    let (http_api_addr, http_api_server) = match opts.http_listen {
        Some(listen) => {
            let state = Arc::new(crate::http_api::ApiState::new(
                crate::http_api::InProcess::new(routes.clone(), None),
                max,
            ));
            let mut http_stop = stop_rx.clone();
            let (addr, task) = crate::http_api::serve(listen, state, async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .await
            .with_context(|| format!("cannot serve the HTTP API on {listen}"))?;
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    let server = tokio::spawn(async move {
        crate::grpc::serve_routes(listener, routes, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await
        .context("node gRPC server")
    });
    let mut background = Vec::new();
    if opts.role == Role::Writable {
        background.push(runtime_config::auto_flush_task(
            engine.clone(),
            config.flush_period(),
        ));
        if !opts.merge_interval.is_zero() {
            background.push(every(opts.merge_interval, engine.clone(), |e| async move {
                if let Err(err) = e.merge_small_files().await {
                    tracing::warn!(error = %err.reason, "background merge failed");
                }
            }));
        }
        background.push(every(
            Duration::from_secs(1),
            engine.clone(),
            |e| async move {
                if let Err(err) = e.build_indexes(None).await {
                    tracing::warn!(error = %err.reason, "background index build failed");
                }
            },
        ));
        background.push(every(
            Duration::from_secs(1),
            engine.clone(),
            |e| async move {
                if let Err(err) = e.cleanup().await {
                    tracing::warn!(error = %err.reason, "file cleanup failed");
                }
            },
        ));
    }
    tracing::info!(role = ?opts.role, %addr, http_api = ?http_api_addr, data_dir = %opts.data_dir.display(), "node listening on {addr}");
    Ok(RunningNode {
        addr,
        http_api_addr,
        http_api_server,
        engine,
        shutdown,
        server,
        background,
    })
}

fn every<F, Fut>(period: Duration, engine: Arc<Engine>, job: F) -> JoinHandle<()>
where
    F: Fn(Arc<Engine>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            job(engine.clone()).await;
        }
    })
}
