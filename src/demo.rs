//! `mishards demo`: a whole cluster in one process on loopback — SQLite
//! metadata under `--dir`, segment files under `--data-dir` (default: the
//! same directory; a JuiceFS/NFS mount works, the SQLite file stays local),
//! one writable node, two read-only nodes, and the proxy on the Milvus port
//! with metrics. With `--groups N` (N > 1), N such clusters, each in its own
//! `gI/` folders with its own metadata, as the proxy's shard groups `gI`.
//! Data is kept between runs. Ctrl-C or SIGTERM stops it cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::node::{self, NodeOptions, Role};
use crate::proxy;

/// Where and how the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The SQLite metadata (`<dir>/db/meta.sqlite`): keep it on a local disk.
    pub dir: PathBuf,
    /// Where the nodes' segment files go (`<data_dir>/db/tables/...`);
    /// `None`: `dir`.
    pub data_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// The proxy's Milvus HTTP API (port 0 picks a free port).
    pub http_listen: SocketAddr,
    /// Shard groups: 1 is one plain cluster.
    pub groups: usize,
}

/// One local cluster of the demo: its metadata and its nodes.
struct LocalCluster {
    name: String,
    meta_uri: String,
    nodes: Vec<node::RunningNode>,
}

/// Starts the demo cluster, prints what runs where, and serves until Ctrl-C.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let dir = writable_dir(&opts.dir, "--dir (the metadata directory)")?;
    writable_dir(&dir.join("db"), "--dir (the metadata directory)")?;
    let data_dir = match &opts.data_dir {
        Some(d) => writable_dir(d, "--data-dir (the segment files' directory)")?,
        None => dir.clone(),
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let groups = opts.groups.max(1);
    let mut clusters = Vec::new();
    for i in 1..=groups {
        // One cluster keeps the layout of earlier runs; groups get folders.
        let (meta_dir, group_data) = if groups == 1 {
            (dir.clone(), data_dir.clone())
        } else {
            let name = format!("g{i}");
            let meta_dir = writable_dir(&dir.join(&name).join("db"), "--dir")?;
            let meta_dir = meta_dir.parent().map(Path::to_path_buf).unwrap_or(meta_dir);
            (meta_dir, writable_dir(&data_dir.join(&name), "--data-dir")?)
        };
        let meta_uri = format!(
            "sqlite://{}",
            meta_dir.join("db").join("meta.sqlite").display()
        );
        let mut nodes = Vec::new();
        for role in [Role::Writable, Role::ReadOnly, Role::ReadOnly] {
            let opts = NodeOptions::new(role, loopback, group_data.clone(), meta_uri.clone());
            nodes.push(node::start(opts).await?);
        }
        clusters.push(LocalCluster {
            name: format!("g{i}"),
            meta_uri,
            nodes,
        });
    }
    let mut config = Config::default();
    config.server.listen = opts.listen.to_string();
    config.metrics.listen = opts.metrics_listen.to_string();
    config.http_api.listen = opts.http_listen.to_string();
    if let [one] = clusters.as_slice() {
        config.meta.uri = one.meta_uri.clone();
        config.backends.writable = one.nodes[0].addr.to_string();
        config.backends.readonly = one.nodes[1..].iter().map(|n| n.addr.to_string()).collect();
    } else {
        for c in &clusters {
            config.groups.push(crate::config::GroupConfig {
                name: c.name.clone(),
                meta_uri: c.meta_uri.clone(),
                writable: c.nodes[0].addr.to_string(),
                readonly: c.nodes[1..].iter().map(|n| n.addr.to_string()).collect(),
            });
        }
    }
    let proxy = proxy::start(config)
        .await
        .with_context(|| format!("cannot start the proxy on {}", opts.listen))?;

    if data_dir == dir {
        println!("mishards demo cluster is up (data in {})", dir.display());
    } else {
        println!(
            "mishards demo cluster is up (metadata in {}, segment files in {})",
            dir.display(),
            data_dir.display()
        );
    }
    for c in &clusters {
        if clusters.len() > 1 {
            println!("  shard group     {}", c.name);
        }
        println!("  metadata        {}", c.meta_uri);
        println!("  writable node   {}", c.nodes[0].addr);
        for n in &c.nodes[1..] {
            println!("  read-only node  {}", n.addr);
        }
    }
    println!(
        "  data dir        {} (segment files under {}db/tables/)",
        data_dir.display(),
        if clusters.len() > 1 { "gI/" } else { "" }
    );
    println!("  proxy (Milvus)  {}", proxy.addr);
    if let Some(http) = proxy.http_api_addr {
        println!("  HTTP API        http://{http}/ (Milvus 1.1 REST; /openapi.json)");
    }
    println!("  metrics         http://{}/metrics", proxy.metrics_addr);
    println!();
    println!("Try it with pymilvus 1.1.2:");
    println!(
        r#"
    import random
    from milvus import Milvus, MetricType
    client = Milvus(host="{host}", port="{port}")
    client.create_collection({{"collection_name": "demo", "dimension": 8,
                              "index_file_size": 1024, "metric_type": MetricType.L2}})
    vectors = [[random.random() for _ in range(8)] for _ in range(1000)]
    status, ids = client.insert("demo", vectors)
    client.flush(["demo"])
    status, results = client.search("demo", 5, vectors[:2], params={{}})
    print(results)
    print(client._cmd("route demo"))   # which segment file is searched on which node
"#,
        host = proxy.addr.ip(),
        port = proxy.addr.port()
    );
    println!("Press Ctrl-C to stop.");

    stop_requested().await?;
    println!("stopping…");
    proxy.stop(Duration::from_secs(5)).await?;
    for c in clusters {
        for n in c.nodes {
            n.stop().await?;
        }
    }
    if data_dir == dir {
        println!("stopped; data kept in {}", dir.display());
    } else {
        println!(
            "stopped; metadata kept in {}, segment files in {}",
            dir.display(),
            data_dir.display()
        );
    }
    Ok(())
}

/// Creates `dir` (and its parents), proves it writable with a probe file,
/// and returns its canonical path; `what` names the option in the errors.
fn writable_dir(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{what}: cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{what}: cannot resolve {}", dir.display()))?;
    if !dir.is_dir() {
        anyhow::bail!("{what}: {} is not a directory", dir.display());
    }
    let probe = dir.join(format!(".mishards-demo-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")
        .with_context(|| format!("{what}: cannot write in {}", dir.display()))?;
    std::fs::remove_file(&probe)
        .with_context(|| format!("{what}: cannot remove {}", probe.display()))?;
    Ok(dir)
}

/// Ctrl-C, or SIGTERM (what `docker stop` and test harnesses send).
async fn stop_requested() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
