//! Hosts on a real network for the tests: a host is a network namespace
//! the test creates, joined to this one by a veth pair with two addresses
//! of its own private /30 (`10.213.<slot>.1` on our side, `.2` on the
//! host's). A node runs on a host as a child process (`nsenter --net`, so it
//! shares our file system but only that link), and reaches the services on
//! our 127.0.0.1 (MySQL, Redis) through TCP forwarders bound to our side of
//! the link, so cutting the link cuts its metadata and storage too, as for a
//! machine whose cable is pulled. [`Host::cut`] makes every packet on the
//! link vanish both ways (a `blackhole` qdisc: no reset, no ICMP; TCP only
//! retransmits), [`Host::restore`] lets them pass again.
//!
//! A host claims a slot (0..=250) with an exclusive lock on
//! `/tmp/mishards-netns/slot<N>.lock`, so tests running at once never share
//! addresses or names; a namespace left by a killed run is removed by the
//! next claim of its slot. Dropping a host (also when the test panics)
//! deletes the namespace, which removes the veth pair.
//!
//! Without `CAP_NET_ADMIN` (or without `ip`, `tc`, `nsenter`) the tests print
//! why and skip, unless `MISHARDS_REQUIRE_NETNS=1` (scripts/test sets it where
//! namespaces work), which makes that a failure.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cluster::{MetaKind, MysqlDatabase};
use super::juicefs::{self, Volume};
use super::processes::{node_on, ChildServer};

/// `1`: a missing prerequisite fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "MISHARDS_REQUIRE_NETNS";

const WORK_ROOT: &str = "/tmp/mishards-netns";
const SLOTS: std::ops::RangeInclusive<u8> = 0..=250;

/// True when hosts can be made here; otherwise prints `SKIPPED <test>: <why>`
/// and returns false, or panics with the reason when [`REQUIRE_ENV`] is set.
pub fn available_or_skip(test: &str) -> bool {
    match prerequisites() {
        Ok(()) => true,
        Err(why) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => {
            panic!("{test}: {why} ({REQUIRE_ENV}=1: network-namespace tests must run here)")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn prerequisites() -> Result<(), String> {
    for tool in ["ip", "tc", "nsenter"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        if !found.status.success() {
            return Err(format!("`{tool}` is not on PATH (iproute2, util-linux)"));
        }
    }
    // The one real test: can this process make a namespace?
    let probe = format!("mshd-probe-{}", std::process::id());
    let out = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot create a network namespace (needs CAP_NET_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", &probe])
        .status();
    Ok(())
}

/// One host: its namespace, its link, and the forwarders it reaches our
/// services through.
pub struct Host {
    pub name: String,
    /// The host's own address (its end of the link).
    pub addr: Ipv4Addr,
    /// Our end of the link: where the host reaches us.
    pub gateway: Ipv4Addr,
    outside: String,
    inside: String,
    forwarders: Vec<Forwarder>,
    /// Held for the host's life: the claim on its slot.
    _claim: File,
}

impl Host {
    /// Claims a free slot and creates the namespace and its link. Panics
    /// when something fails (call [`available_or_skip`] first).
    pub fn create(test: &str) -> Host {
        let (slot, claim) = claim_slot(test);
        let name = format!("mshd-s{slot}");
        let outside = format!("mshd-h{slot}");
        let inside = format!("mshd-n{slot}");
        remove_leftovers(&name, &outside);
        let gateway = Ipv4Addr::new(10, 213, slot, 1);
        let addr = Ipv4Addr::new(10, 213, slot, 2);
        let host = Host {
            name,
            addr,
            gateway,
            outside,
            inside,
            forwarders: Vec::new(),
            _claim: claim,
        };
        let (ns, out, ins) = (&host.name, &host.outside, &host.inside);
        ip(test, &["netns", "add", ns]);
        ip(
            test,
            &[
                "link", "add", out, "type", "veth", "peer", "name", ins, "netns", ns,
            ],
        );
        ip(test, &["addr", "add", &format!("{gateway}/30"), "dev", out]);
        ip(test, &["link", "set", out, "up"]);
        ip(
            test,
            &["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", ins],
        );
        ip(test, &["-n", ns, "link", "set", ins, "up"]);
        ip(test, &["-n", ns, "link", "set", "lo", "up"]);
        host
    }

    /// The `nsenter` words that run a command on this host.
    pub fn enter(&self) -> Vec<String> {
        vec![
            "nsenter".to_string(),
            format!("--net=/var/run/netns/{}", self.name),
            "--".to_string(),
        ]
    }

    /// Makes `target` (a service on our 127.0.0.1) reachable from the host
    /// at the returned address on our end of the link.
    pub fn forward(&mut self, target: SocketAddr) -> SocketAddr {
        let forwarder = Forwarder::start(SocketAddr::from((self.gateway, 0)), target)
            .unwrap_or_else(|e| panic!("forwarder to {target} on {}: {e}", self.gateway));
        let addr = forwarder.addr;
        self.forwarders.push(forwarder);
        addr
    }

    /// Every packet on the link vanishes, both ways, until [`Host::restore`].
    pub fn cut(&self) {
        tc(&["qdisc", "add", "dev", &self.outside, "root", "blackhole"]);
        tc(&[
            "-n",
            &self.name,
            "qdisc",
            "add",
            "dev",
            &self.inside,
            "root",
            "blackhole",
        ]);
    }

    /// Packets pass again (TCP's retransmissions then get through).
    pub fn restore(&self) {
        tc(&["qdisc", "del", "dev", &self.outside, "root"]);
        tc(&[
            "-n",
            &self.name,
            "qdisc",
            "del",
            "dev",
            &self.inside,
            "root",
        ]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for f in &mut self.forwarders {
            f.stop();
        }
        remove_leftovers(&self.name, &self.outside);
    }
}

fn ip(test: &str, args: &[&str]) {
    run_tool(test, "ip", args);
}

fn tc(args: &[&str]) {
    run_tool("link", "tc", args);
}

/// Runs `tool args...`, panicking with its stderr when it fails.
fn run_tool(test: &str, tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{test}: cannot run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{test}: {tool} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Deletes the namespace (and so the veth pair) and a stray outside end.
fn remove_leftovers(name: &str, outside: &str) {
    if Path::new("/var/run/netns").join(name).exists() {
        let _ = Command::new("ip").args(["netns", "delete", name]).status();
    }
    let _ = Command::new("ip")
        .args(["link", "delete", outside])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Takes the first free slot, waiting while all are taken.
fn claim_slot(test: &str) -> (u8, File) {
    fs::create_dir_all(WORK_ROOT).expect("create the netns work root");
    let started = std::time::Instant::now();
    loop {
        for slot in SLOTS {
            let path = Path::new(WORK_ROOT).join(format!("slot{slot}.lock"));
            let file = File::create(&path).expect("create a slot lock file");
            if file.try_lock().is_ok() {
                return (slot, file);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{test}: every network slot stayed taken for 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain TCP forwarder on threads: the hosts' nodes keep a handful of
/// connections (metadata pool, JuiceFS client), and threads keep those
/// bytes off the runtime the test measures latencies on. Hand-written
/// because it is twenty lines and the test relay is async and loopback-only.
struct Forwarder {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(bind: SocketAddr, target: SocketAddr) -> io::Result<Forwarder> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pump(client, server2));
                std::thread::spawn(move || pump(server, client2));
            }
        });
        Ok(Forwarder { addr, stopping })
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// A writable node and read-only nodes, each on its own host with its own
/// JuiceFS mount of one volume, over one throw-away MySQL database: the
/// seed's deployment, with links the test can cut. Fields drop in order:
/// the nodes first, then the mounts, the hosts and the database.
pub struct HostCluster {
    pub writer: ChildServer,
    pub readers: Vec<ChildServer>,
    /// The metadata URI for servers on our side (the proxy).
    pub meta_uri: String,
    pub volume: Volume,
    /// `hosts[0]` is the writer's, `hosts[1 + i]` reader i's.
    pub hosts: Vec<Host>,
    _database: MysqlDatabase,
}

impl HostCluster {
    /// Starts the cluster, or returns None with a printed note when MySQL,
    /// JuiceFS or network namespaces are not available here.
    pub async fn start(test: &str, readers: usize) -> Option<HostCluster> {
        if !available_or_skip(test) || !juicefs::available_or_skip(test) {
            return None;
        }
        let MetaKind::MySql(server) = MetaKind::mysql_or_skip(test)? else {
            return None;
        };
        let database = MysqlDatabase::create(&server).await;
        let mut volume = Volume::format(test);
        let mysql = authority(&database.uri)
            .unwrap_or_else(|| panic!("{test}: no host:port in {}", database.uri));
        let redis: SocketAddr = volume
            .redis
            .parse()
            .unwrap_or_else(|e| panic!("{test}: Redis address {}: {e}", volume.redis));
        let mut hosts = Vec::new();
        let mut servers = Vec::new();
        for i in 0..=readers {
            let (what, role) = if i == 0 {
                ("writer".to_string(), "rw")
            } else {
                (format!("reader {}", i - 1), "ro")
            };
            let mut host = Host::create(test);
            let mysql_here = host.forward(mysql);
            let redis_here = host.forward(redis);
            let meta_url = format!("redis://{redis_here}/{}", volume.database);
            let label = format!("host{i}");
            let data_dir = volume.mount_with(&label, &meta_url, Some(&host.name));
            let meta_uri = database
                .uri
                .replacen(&mysql.to_string(), &mysql_here.to_string(), 1);
            // The writer first: it creates the schema the others then find.
            servers.push(node_on(
                &host.enter(),
                &format!("{}:0", host.addr),
                &format!("{what} on {}", host.addr),
                role,
                &data_dir,
                &meta_uri,
            ));
            hosts.push(host);
        }
        let writer = servers.remove(0);
        Some(HostCluster {
            writer,
            readers: servers,
            meta_uri: database.uri.clone(),
            volume,
            hosts,
            _database: database,
        })
    }

    pub fn reader_addrs(&self) -> Vec<String> {
        self.readers.iter().map(|r| r.addr.to_string()).collect()
    }

    /// The host read-only node `i` runs on.
    pub fn reader_host(&self, i: usize) -> &Host {
        &self.hosts[1 + i]
    }

    pub fn writer_host(&self) -> &Host {
        &self.hosts[0]
    }
}

/// `HOST:PORT` of a `scheme://user@HOST:PORT/...` URI.
fn authority(uri: &str) -> Option<SocketAddr> {
    let rest = uri.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next()?.parse().ok()
}
