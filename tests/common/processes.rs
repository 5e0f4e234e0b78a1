//! Servers as child processes of the real `mishards` binary, so a test can
//! freeze one with SIGSTOP (as an operator's `kill -STOP`) and so their CPU
//! work is not scheduled on the test's own runtime threads: a writable node
//! and read-only nodes over one shared data directory and one MySQL
//! database, and a proxy from a configuration file. Each is killed (SIGKILL,
//! which also ends a stopped process) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::cluster::{MetaKind, MysqlDatabase};

/// The binary under test.
pub const MISHARDS: &str = env!("CARGO_BIN_EXE_mishards");

/// One running `mishards` process and the gRPC address it listens on.
pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    pub what: String,
}

impl ChildServer {
    /// Runs `mishards args...` and waits (up to 60 s) for the stderr line
    /// `<banner> ADDR`; the rest of its stderr is passed on to the test's.
    pub fn spawn(what: &str, args: &[&str], banner: &'static str) -> ChildServer {
        Self::spawn_with(&[], what, args, banner)
    }

    /// [`ChildServer::spawn`] with `prefix` in front of the binary (e.g.
    /// `nsenter --net=... --`, which execs it: the pid stays the server's).
    pub fn spawn_with(
        prefix: &[String],
        what: &str,
        args: &[&str],
        banner: &'static str,
    ) -> ChildServer {
        let mut argv: Vec<String> = prefix.to_vec();
        argv.push(MISHARDS.to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {MISHARDS} for {what}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let label = what.to_string();
        // Reads to the end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix(banner) {
                    if let (Some(tx), Ok(addr)) = (tx.take(), addr.trim().parse::<SocketAddr>()) {
                        let _ = tx.send(addr);
                        continue;
                    }
                }
                if line.contains("WARN") || line.contains("ERROR") || line.starts_with("mishards") {
                    eprintln!("[{label}] {line}");
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("{what} did not report its address within 60 s ({status:?})");
            }
        };
        ChildServer {
            child,
            addr,
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` ("STOP", "CONT", ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", self.what);
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Wakes a frozen process (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writable node and read-only nodes, each its own process, over one data
/// directory and one throw-away MySQL database.
pub struct ProcessCluster {
    pub writer: ChildServer,
    pub readers: Vec<ChildServer>,
    pub meta_uri: String,
    // Dropped last: the processes go first.
    pub data_dir: tempfile::TempDir,
    _database: MysqlDatabase,
}

impl ProcessCluster {
    /// Starts the cluster on MySQL (`MISHARDS_TEST_MYSQL`), or returns None
    /// with a printed note when that is not set.
    pub async fn start(test: &str, readers: usize) -> Option<ProcessCluster> {
        let MetaKind::MySql(server) = MetaKind::mysql_or_skip(test)? else {
            return None;
        };
        let database = MysqlDatabase::create(&server).await;
        let data_dir = tempfile::tempdir().expect("tempdir");
        let meta_uri = database.uri.clone();
        // The writer first: it creates the schema the others then find.
        let writer = node("writer", "rw", data_dir.path(), &meta_uri);
        let readers = (0..readers)
            .map(|i| node(&format!("reader {i}"), "ro", data_dir.path(), &meta_uri))
            .collect();
        Some(ProcessCluster {
            writer,
            readers,
            meta_uri,
            data_dir,
            _database: database,
        })
    }

    pub fn reader_addrs(&self) -> Vec<String> {
        self.readers.iter().map(|r| r.addr.to_string()).collect()
    }
}

/// `mishards node --role <role>` on an ephemeral loopback port; no merges,
/// so every flush stays its own segment file.
fn node(what: &str, role: &str, data_dir: &Path, meta_uri: &str) -> ChildServer {
    node_on(&[], "127.0.0.1:0", what, role, data_dir, meta_uri)
}

/// [`node`] listening on `listen`, run with `prefix` (see [`ChildServer::spawn_with`]).
pub fn node_on(
    prefix: &[String],
    listen: &str,
    what: &str,
    role: &str,
    data_dir: &Path,
    meta_uri: &str,
) -> ChildServer {
    let data_dir = data_dir.display().to_string();
    ChildServer::spawn_with(
        prefix,
        what,
        &[
            "node",
            "--role",
            role,
            "--listen",
            listen,
            "--data-dir",
            &data_dir,
            "--meta-uri",
            meta_uri,
            "--flush-interval",
            "1s",
            "--merge-interval",
            "0s",
            "--log-level",
            "warn",
            // A fixed --listen port would put the HTTP API on 19121 for every node.
            "--no-http",
        ],
        "mishards node listening on ",
    )
}

/// `mishards serve --config <file>` with `toml` as the file (kept in `dir`).
pub fn proxy_process(dir: &Path, toml: &str) -> ChildServer {
    let path = dir.join("mishards.toml");
    std::fs::write(&path, toml).expect("write the proxy config");
    let path = path.display().to_string();
    ChildServer::spawn(
        "proxy",
        &["serve", "--config", &path],
        "mishards proxy listening on ",
    )
}
