//! The embedded clusters of `mishards bench`: nodes and proxies run as child
//! processes of this same binary (so the proxy's CPU time and peak memory
//! are its own), on loopback ephemeral ports, over SQLite in a temporary
//! directory or a throw-away MySQL database. Every child is killed, and the
//! directory and database removed, when the cluster is dropped (also on an
//! error or Ctrl-C). A [`RealCluster`] keeps its nodes' data in that
//! temporary directory or, with JuiceFS, each node on its own mount of one
//! bench volume ([`super::juicefs`]), unmounted before the directory goes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;

use super::juicefs::{JuiceFs, Volume};
use super::stub::{self, StubNode};
use crate::meta::{MetaStore, MetaUri};
use crate::types::MetricType;

/// How long a child may take to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// stderr lines of a child kept to explain its failure.
const TAIL_LINES: usize = 20;

/// A directory removed (with everything in it) on drop. Written by hand:
/// `tempfile` is only a dev-dependency, and this is the one call it would serve.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Where a cluster's metadata lives, and its removal.
pub enum MetaDb {
    /// A SQLite file (in the cluster's temporary directory).
    Sqlite { uri: String },
    /// A uniquely named MySQL database, dropped on drop.
    MySql {
        admin_url: String,
        name: String,
        uri: String,
    },
}

impl MetaDb {
    /// `spec` is "sqlite" or mysql://user[:password]@host[:port][/prefix].
    pub async fn create(spec: &str, dir: &Path) -> anyhow::Result<MetaDb> {
        if spec == "sqlite" {
            let db = dir.join("db");
            std::fs::create_dir_all(&db)
                .with_context(|| format!("cannot create {}", db.display()))?;
            let path = db.join("meta.sqlite");
            return Ok(MetaDb::Sqlite {
                uri: format!("sqlite://{}", path.display()),
            });
        }
        let mut url = url::Url::parse(spec)
            .with_context(|| format!("--meta-uri {}: not a URL", crate::meta::redacted(spec)))?;
        if url.scheme() != "mysql" {
            bail!("--meta-uri must be \"sqlite\" or mysql://user@host:port[/prefix]");
        }
        let prefix = match url.path().trim_matches('/') {
            "" => "mishards_bench".to_string(),
            p => p.to_string(),
        };
        url.set_path("");
        url.set_query(None);
        let admin_url = url.to_string().trim_end_matches('/').to_string();
        let name = format!("{prefix}_{:016x}", rand::rng().random::<u64>());
        let mut conn = mysql_connect(&admin_url).await?;
        use sqlx::Connection;
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = conn.close().await;
        let uri = format!("{admin_url}/{name}");
        Ok(MetaDb::MySql {
            admin_url,
            name,
            uri,
        })
    }

    pub fn uri(&self) -> &str {
        match self {
            MetaDb::Sqlite { uri } | MetaDb::MySql { uri, .. } => uri,
        }
    }
}

async fn mysql_connect(admin_url: &str) -> anyhow::Result<sqlx::mysql::MySqlConnection> {
    use sqlx::Connection;
    sqlx::mysql::MySqlConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to {}", crate::meta::redacted(admin_url)))
}

impl Drop for MetaDb {
    fn drop(&mut self) {
        let MetaDb::MySql {
            admin_url, name, ..
        } = self
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Its own thread and runtime: drop may run inside the bench's runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = mysql_connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .execute(&mut conn)
                    .await?;
                let _ = conn.close().await;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("bench: could not drop the MySQL database of the run; drop it by hand");
        }
    }
}

/// A child process of this binary that printed "... listening on ADDR";
/// killed on drop.
pub struct ChildProcess {
    pub addr: SocketAddr,
    /// Where a proxy serves its metrics, if it printed "metrics on http://ADDR"
    /// before its listening line.
    pub metrics: Option<SocketAddr>,
    child: Child,
}

impl ChildProcess {
    /// Runs `mishards <args>` and waits for its listening address. A proxy
    /// (`serve`) runs from the `--proxy-bin` binary when one was given.
    pub async fn spawn(name: &str, args: Vec<String>) -> anyhow::Result<ChildProcess> {
        let exe = match PROXY_BINARY.get() {
            Some(path) if args.first().map(String::as_str) == Some("serve") => path.clone(),
            _ => std::env::current_exe().context("cannot find the mishards binary")?,
        };
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} {}", exe.display(), args.join(" ")))?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            bail!("{name}: no stderr pipe");
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (found, address) = std::sync::mpsc::channel();
        let lines = tail.clone();
        std::thread::spawn(move || {
            // Reads to the end so the child never blocks on a full pipe.
            let mut metrics = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = metrics_address(&line) {
                    metrics = Some(addr);
                } else if let Some(addr) = listening_address(&line) {
                    let _ = found.send((addr, metrics));
                }
                if let Ok(mut lines) = lines.lock() {
                    if lines.len() == TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
        });
        let waited =
            tokio::task::spawn_blocking(move || address.recv_timeout(START_TIMEOUT)).await?;
        match waited {
            Ok((addr, metrics)) => Ok(ChildProcess {
                addr,
                metrics,
                child,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let said: Vec<String> = tail
                    .lock()
                    .map(|l| l.iter().cloned().collect())
                    .unwrap_or_default();
                bail!(
                    "{name} did not start within {START_TIMEOUT:?}; its last output:\n  {}",
                    said.join("\n  ")
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--proxy-bin`: the binary every proxy of this run starts from.
static PROXY_BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every proxy of this run start from `path` (set once, before any starts).
pub(super) fn use_proxy_binary(path: &Path) -> anyhow::Result<()> {
    let path = path
        .canonicalize()
        .with_context(|| format!("--proxy-bin {}: no such binary", path.display()))?;
    PROXY_BINARY
        .set(path)
        .map_err(|_| anyhow::anyhow!("--proxy-bin was set twice"))
}

/// The address in a "mishards node listening on 127.0.0.1:1234" line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.rsplit_once("listening on ")?;
    rest.trim().parse().ok()
}

/// The address in a "mishards proxy metrics on http://127.0.0.1:9090" line.
fn metrics_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.rsplit_once("metrics on http://")?;
    rest.trim().parse().ok()
}

pub(super) fn node_args(role: &str, dir: &Path, meta_uri: &str) -> Vec<String> {
    [
        "node",
        "--role",
        role,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.display().to_string(),
        "--meta-uri",
        meta_uri,
        // Files stay as the scenario makes them.
        "--merge-interval",
        "0s",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Writes a proxy configuration and starts `mishards serve` with it.
async fn start_proxy(
    name: &str,
    dir: &Path,
    meta_uri: &str,
    writable: SocketAddr,
    readonly: &[SocketAddr],
    extra_toml: &str,
) -> anyhow::Result<ChildProcess> {
    let readonly: Vec<String> = readonly.iter().map(|a| format!("\"{a}\"")).collect();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [meta]\nuri = \"{meta_uri}\"\n\
         [backends]\nwritable = \"{writable}\"\nreadonly = [{}]\n\
         [log]\nlevel = \"warn\"\n\
         [reload]\nwatch_interval = \"0s\"\n{extra_toml}",
        readonly.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
    ChildProcess::spawn(
        name,
        vec![
            "serve".into(),
            "--config".into(),
            path.display().to_string(),
        ],
    )
    .await
}

/// The stub cluster's proxy neither hedges nor ejects: a stub is never
/// slow, but a saturated bench process (the stubs share it with the load
/// generator) can delay its answers past a hedge delay, and a hedge would
/// double the work measured.
const STUB_PROXY_TOML: &str = "[slow_nodes]\neject_after_failures = 0\nhedge_budget_percent = 0\n";

/// One writable node, read-only nodes, and proxies in front of the first
/// 1, 2, ... of them, started on demand. Fields drop in order: children
/// first, then the JuiceFS mounts (if any), the database and the directory.
pub struct RealCluster {
    proxies: Vec<(usize, ChildProcess)>,
    pub readonly: Vec<ChildProcess>,
    pub writable: ChildProcess,
    // Kept for its drop: unmounts, then empties its Redis database.
    _volume: Option<Volume>,
    meta: MetaDb,
    dir: TempDir,
}

impl RealCluster {
    /// Starts the nodes with their data in the temporary directory, or with
    /// `juicefs` each on its own mount of a fresh volume (the metadata stays
    /// where `meta_spec` puts it either way).
    pub async fn start(
        meta_spec: &str,
        ro_nodes: usize,
        juicefs: Option<&JuiceFs>,
    ) -> anyhow::Result<RealCluster> {
        // Declared in the fields' reverse drop order, so a failed start
        // cleans up as a dropped cluster does.
        let dir = TempDir::new("mishards-bench")?;
        let meta = MetaDb::create(meta_spec, &dir.path).await?;
        let mut volume = None;
        let (rw_dir, ro_dirs) = match juicefs {
            None => (dir.path.clone(), vec![dir.path.clone(); ro_nodes]),
            Some(juicefs) => {
                let work = dir.path.join("juicefs");
                let juicefs = juicefs.clone();
                let labels: Vec<String> = std::iter::once("rw".to_string())
                    .chain((1..=ro_nodes).map(|i| format!("ro{i}")))
                    .collect();
                // Formatting and mounting run the juicefs client and wait for it.
                let (made, points) = tokio::task::spawn_blocking(move || {
                    let mut made = match Volume::format(&juicefs, &work) {
                        Ok(v) => v,
                        Err(e) => return (None, Err(e)),
                    };
                    let points: anyhow::Result<Vec<PathBuf>> =
                        labels.iter().map(|l| made.mount(l)).collect();
                    (Some(made), points)
                })
                .await?;
                volume = made;
                let mut points = points?.into_iter();
                let rw = points.next().context("no mount for the writable node")?;
                (rw, points.collect())
            }
        };
        let writable = ChildProcess::spawn("rw node", node_args("rw", &rw_dir, meta.uri())).await?;
        let mut readonly = Vec::new();
        for (i, ro_dir) in ro_dirs.iter().enumerate() {
            readonly.push(
                ChildProcess::spawn(
                    &format!("ro node {}", i + 1),
                    node_args("ro", ro_dir, meta.uri()),
                )
                .await?,
            );
        }
        Ok(RealCluster {
            proxies: Vec::new(),
            readonly,
            writable,
            _volume: volume,
            meta,
            dir,
        })
    }

    /// The proxy in front of the first `ro` read-only nodes (started on first use).
    pub async fn proxy(&mut self, ro: usize) -> anyhow::Result<&ChildProcess> {
        let ro = ro.clamp(1, self.readonly.len().max(1));
        if !self.proxies.iter().any(|(n, _)| *n == ro) {
            let proxy = self.fresh_proxy(ro, &format!("proxy-{ro}ro")).await?;
            self.proxies.push((ro, proxy));
        }
        self.proxies
            .iter()
            .find(|(n, _)| *n == ro)
            .map(|(_, p)| p)
            .context("proxy just started is missing")
    }

    /// A new proxy process the caller owns (for a peak-memory reading of its own).
    pub async fn fresh_proxy(&self, ro: usize, name: &str) -> anyhow::Result<ChildProcess> {
        self.fresh_proxy_with(ro, name, "").await
    }

    /// [`Self::fresh_proxy`] with `extra_toml` appended to its configuration.
    pub async fn fresh_proxy_with(
        &self,
        ro: usize,
        name: &str,
        extra_toml: &str,
    ) -> anyhow::Result<ChildProcess> {
        let ro = ro.clamp(1, self.readonly.len().max(1));
        let addrs: Vec<SocketAddr> = self.readonly[..ro].iter().map(|n| n.addr).collect();
        start_proxy(
            name,
            &self.dir.path,
            self.meta.uri(),
            self.writable.addr,
            &addrs,
            extra_toml,
        )
        .await
    }
}

/// A real writable node (it owns the schema and creates the collection),
/// stub read-only nodes in this process, and a proxy in front of the stubs.
/// The bench adds file rows to the metadata directly.
pub struct StubCluster {
    pub proxy: ChildProcess,
    pub stubs: Vec<StubNode>,
    pub writable: ChildProcess,
    pub store: MetaStore,
    // Kept for their drop (database, then directory), after the children;
    // the directory also holds the floor's plans.
    _meta: MetaDb,
    dir: TempDir,
}

impl StubCluster {
    pub async fn start(
        meta_spec: &str,
        stubs: usize,
        metric: MetricType,
    ) -> anyhow::Result<StubCluster> {
        let dir = TempDir::new("mishards-bench-stub")?;
        let meta = MetaDb::create(meta_spec, &dir.path).await?;
        let writable = ChildProcess::spawn(
            "rw node (stub cluster)",
            node_args("rw", &dir.path, meta.uri()),
        )
        .await?;
        let mut stub_nodes = Vec::new();
        for i in 0..stubs.max(1) {
            stub_nodes.push(stub::start(i as i64, metric).await?);
        }
        let addrs: Vec<SocketAddr> = stub_nodes.iter().map(|s| s.addr).collect();
        let proxy = start_proxy(
            "proxy-stubs",
            &dir.path,
            meta.uri(),
            writable.addr,
            &addrs,
            STUB_PROXY_TOML,
        )
        .await?;
        let uri = MetaUri::parse(meta.uri(), None).map_err(anyhow::Error::msg)?;
        let store = MetaStore::connect_read_only(&uri, 2)
            .await
            .context("cannot open the stub cluster's metadata")?;
        Ok(StubCluster {
            proxy,
            stubs: stub_nodes,
            writable,
            store,
            _meta: meta,
            dir,
        })
    }

    /// Starts the floor forwarder ([`super::floor`]) in front of the stubs,
    /// sending each the files of the proxy's `route` answer `route`.
    pub async fn floor(
        &self,
        name: &str,
        route: &serde_json::Value,
    ) -> anyhow::Result<ChildProcess> {
        let path = self.dir.path.join(format!("{name}.json"));
        std::fs::write(&path, route.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        ChildProcess::spawn(
            name,
            vec![
                "bench-floor".into(),
                "--plan".into(),
                path.display().to_string(),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_address_is_found_in_the_start_line() {
        assert_eq!(
            listening_address("mishards node listening on 127.0.0.1:4321"),
            "127.0.0.1:4321".parse().ok()
        );
        assert_eq!(
            listening_address("mishards proxy listening on [::1]:80  "),
            "[::1]:80".parse().ok()
        );
        assert_eq!(listening_address("some log line"), None);
        assert_eq!(
            metrics_address("mishards proxy metrics on http://127.0.0.1:9090"),
            "127.0.0.1:9090".parse().ok()
        );
        assert_eq!(
            metrics_address("mishards proxy listening on 127.0.0.1:1"),
            None
        );
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::new("mishards-bench-test").unwrap();
        let path = dir.path.clone();
        std::fs::write(path.join("f"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
