//! The proxy configuration file (TOML), environment overrides and validation.
//!
//! `mishards serve --config FILE` reads one TOML file (see `config/mishards.toml`
//! for every key, its default and its environment variable). Loading happens in
//! four steps, and every problem found on the way is collected, so one run of
//! `mishards check-config FILE` lists all of them:
//!
//! 1. the file is parsed into TOML values, remembering the line of every key;
//! 2. environment overrides are merged in, first the Mishards (Python) names
//!    (`WOSERVER`, `SQLALCHEMY_DATABASE_URI`, `DISCOVERY_STATIC_HOSTS` +
//!    `DISCOVERY_STATIC_PORT`, `SERVER_PORT`), then `MISHARDS__<SECTION>__<KEY>`,
//!    which wins over both the file and the Python names;
//! 3. every key is deserialised on its own, so one bad value or unknown key
//!    does not hide the next one;
//! 4. [`Config::validate`] checks the values (addresses, URIs, limits).
//!
//! Durations are humantime strings ("300ms", "5s", "1m"). Sizes are written
//! as a whole number with an optional unit: `B`, `KB`/`MB`/`GB`/`TB` (powers
//! of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), case-insensitive,
//! e.g. "512MiB"; a bare TOML integer is a number of bytes (see [`ByteSize`]).
//!
//! `backends.writable` may also appear in `backends.readonly`: the Mishards demo
//! clusters do exactly that (the writable node also serves searches). A
//! duplicate inside `backends.readonly` is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::{Spanned, Value};

/// The port Milvus and Mishards listen on by default.
pub const DEFAULT_MILVUS_PORT: u16 = 19530;
/// The smallest accepted `server.max_message_size`.
pub const MIN_MESSAGE_SIZE: ByteSize = ByteSize(4 * MIB);
/// The largest accepted `server.max_message_size` (a gRPC frame length is a u32).
pub const MAX_MESSAGE_SIZE: ByteSize = ByteSize(u32::MAX as u64);
/// The prefix of the environment overrides: `MISHARDS__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "MISHARDS__";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The whole configuration of `mishards serve`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub meta: MetaConfig,
    pub backends: BackendsConfig,
    pub topology: TopologyConfig,
    pub log: LogConfig,
}

/// `[server]`: the gRPC endpoint clients connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to bind; port 0 picks a free port.
    pub listen: String,
    /// Largest gRPC message accepted or sent.
    pub max_message_size: ByteSize,
    /// How long in-flight requests may finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: format!("0.0.0.0:{DEFAULT_MILVUS_PORT}"),
            max_message_size: ByteSize(GIB),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint (`/metrics`, `/livez`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to bind; port 0 picks a free port.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "0.0.0.0:9090".to_string(),
        }
    }
}

/// `[meta]`: the Milvus metadata database shared by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    /// `mysql://user[:pass]@host[:port]/db`, `sqlite://PATH` or `sqlite::memory:`.
    /// Required; the empty default fails validation.
    pub uri: String,
    /// Size of the connection pool.
    pub max_connections: u32,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            uri: String::new(),
            max_connections: 8,
        }
    }
}

/// `[backends]`: the Milvus nodes behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsConfig {
    /// `host:port` of the writable node. Required; the empty default fails validation.
    pub writable: String,
    /// `host:port` of each read-only node.
    pub readonly: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of a non-search call to a backend; zero means none.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Deadline of a search call to a backend; zero means none (as in pymilvus).
    #[serde(with = "humantime_serde")]
    pub search_timeout: Duration,
    /// Points per node on the consistent-hash ring.
    pub virtual_nodes: u32,
}

impl BackendsConfig {
    /// `request_timeout`, with zero meaning no deadline.
    pub fn request_deadline(&self) -> Option<Duration> {
        non_zero(self.request_timeout)
    }

    /// `search_timeout`, with zero meaning no deadline.
    pub fn search_deadline(&self) -> Option<Duration> {
        non_zero(self.search_timeout)
    }
}

fn non_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

impl Default for BackendsConfig {
    fn default() -> Self {
        BackendsConfig {
            writable: String::new(),
            readonly: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::ZERO,
            search_timeout: Duration::ZERO,
            virtual_nodes: crate::ring::DEFAULT_VIRTUAL_NODES as u32,
        }
    }
}

/// `[topology]`: how often the proxy re-reads the backend list and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            refresh_interval: Duration::from_millis(300),
        }
    }
}

/// `[log]`: logging to stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or a
    /// `tracing` filter such as `info,mishards::proxy=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A size in bytes, written as "512MiB", "1GiB", "4000000", "4 MB" or a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Parses a size: a whole number followed by an optional unit (`B`, `KB`,
/// `MB`, `GB`, `TB` in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of
/// 1024; case-insensitive; spaces allowed before the unit).
pub fn parse_byte_size(text: &str) -> Result<ByteSize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let hint =
        || format!("expected a size like \"512MiB\", \"1GiB\" or a number of bytes, got {text:?}");
    if digits.is_empty() {
        return Err(hint());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => 1024 * GIB,
        _ => return Err(hint()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(multiplier))
        .map(ByteSize)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_byte_size(text)
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, e.g. "1GiB", "1500B".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1024 * GIB, "TiB"),
            (GIB, "GiB"),
            (MIB, "MiB"),
            (KIB, "KiB"),
        ];
        for (size, name) in units {
            if self.0 != 0 && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"512MiB\" or a number of bytes")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, got {bytes}")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_byte_size(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// One problem in the configuration: the dotted key (`backends.readonly[1]`),
/// what is wrong, and the line of the file when the value came from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
            line: None,
        }
    }

    fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }
}

impl fmt::Display for ConfigError {
    /// `<key>: <message>`, followed by ` (line N)` when the line is known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, overrides from the process environment, parses and validates a
/// configuration file: what `mishards check-config FILE` runs. Besides the
/// errors of [`Config::load_from_str`] it reports unknown `MISHARDS__*`
/// variables (most likely typos) and an unreadable file.
pub fn check_config_file(path: impl AsRef<Path>) -> Result<Config, Vec<ConfigError>> {
    Config::load(path)
}

impl Config {
    /// [`check_config_file`]: the file at `path` with the process environment on top.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, Vec<ConfigError>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| {
            vec![ConfigError::new(
                path.display().to_string(),
                format!("cannot read the configuration file: {err}"),
            )]
        })?;
        let env_names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        let unknown = unknown_env_overrides(env_names.iter().map(String::as_str));
        match Config::load_from_str(&text, |name| std::env::var(name).ok()) {
            Ok(config) if unknown.is_empty() => Ok(config),
            Ok(_) => Err(unknown),
            Err(mut errors) => {
                errors.extend(unknown);
                Err(errors)
            }
        }
    }

    /// Parses `text`, applies the environment overrides found through `env`
    /// (a lookup such as `|name| std::env::var(name).ok()`), and validates.
    /// Returns every problem at once, sorted by line (errors without a line last).
    pub fn load_from_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut sections = match parse_sections(text) {
            Ok(sections) => sections,
            Err(error) => return Err(vec![error]),
        };
        apply_env_overrides(&mut sections, &env, &mut errors);

        let mut rejected = BTreeSet::new();
        for (name, section) in &sections {
            if !SECTION_NAMES.contains(&name.as_str()) {
                errors.push(
                    ConfigError::new(
                        name.clone(),
                        format!(
                            "unknown section; expected one of {}",
                            SECTION_NAMES.join(", ")
                        ),
                    )
                    .at_line(section.line),
                );
            }
        }
        let mut parts = SectionParser {
            sections: &sections,
            errors: &mut errors,
            rejected: &mut rejected,
        };
        let config = Config {
            server: parts.parse("server"),
            metrics: parts.parse("metrics"),
            meta: parts.parse("meta"),
            backends: parts.parse("backends"),
            topology: parts.parse("topology"),
            log: parts.parse("log"),
        };

        for error in config.validate() {
            let root = error.key.split('[').next().unwrap_or_default().to_string();
            // A value that failed to parse was replaced by its default; do not
            // report the default as a second problem.
            if rejected.contains(&root) {
                continue;
            }
            let origin = root
                .split_once('.')
                .and_then(|(section, key)| sections.get(section)?.entries.get(key))
                .map(|entry| &entry.origin);
            errors.push(attach_origin(error, origin));
        }

        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
            Err(errors)
        }
    }

    /// Checks every value and returns every problem found (empty when valid).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut report = |key: &str, message: String| errors.push(ConfigError::new(key, message));

        if let Err(message) = check_address(&self.server.listen, PortZero::Allowed) {
            report("server.listen", message);
        }
        if self.server.max_message_size < MIN_MESSAGE_SIZE {
            report(
                "server.max_message_size",
                format!(
                    "must be at least {MIN_MESSAGE_SIZE}, got {}",
                    self.server.max_message_size
                ),
            );
        } else if self.server.max_message_size > MAX_MESSAGE_SIZE {
            report(
                "server.max_message_size",
                format!(
                    "must be at most {} bytes (4GiB - 1, the gRPC frame limit), got {}",
                    MAX_MESSAGE_SIZE.bytes(),
                    self.server.max_message_size
                ),
            );
        }

        if let Err(message) = check_address(&self.metrics.listen, PortZero::Allowed) {
            report("metrics.listen", message);
        }

        if self.meta.uri.trim().is_empty() {
            report(
                "meta.uri",
                "required: the metadata database, e.g. \"mysql://root:pass@127.0.0.1:3306/milvus\" \
                 (or set MISHARDS__META__URI / SQLALCHEMY_DATABASE_URI)"
                    .to_string(),
            );
        } else if let Err(message) = parse_meta_uri(&self.meta.uri) {
            report("meta.uri", message);
        }
        if self.meta.max_connections == 0 {
            report("meta.max_connections", "must be at least 1".to_string());
        }

        if self.backends.writable.trim().is_empty() {
            report(
                "backends.writable",
                "required: host:port of the writable Milvus node \
                 (or set MISHARDS__BACKENDS__WRITABLE / WOSERVER)"
                    .to_string(),
            );
        } else if let Err(message) = check_address(&self.backends.writable, PortZero::Rejected) {
            report("backends.writable", message);
        }
        let mut first_seen: BTreeMap<(String, u16), usize> = BTreeMap::new();
        for (index, address) in self.backends.readonly.iter().enumerate() {
            let key = format!("backends.readonly[{index}]");
            match check_address(address, PortZero::Rejected) {
                Err(message) => report(&key, message),
                Ok((host, port)) => {
                    let identity = (host.to_ascii_lowercase(), port);
                    if let Some(first) = first_seen.get(&identity) {
                        report(
                            &key,
                            format!(
                                "{address:?} is listed twice (also backends.readonly[{first}])"
                            ),
                        );
                    } else {
                        first_seen.insert(identity, index);
                    }
                }
            }
        }
        if self.backends.connect_timeout.is_zero() {
            report(
                "backends.connect_timeout",
                "must be greater than 0".to_string(),
            );
        }
        if self.backends.virtual_nodes == 0 {
            report("backends.virtual_nodes", "must be at least 1".to_string());
        }

        if self.topology.refresh_interval.is_zero() {
            report(
                "topology.refresh_interval",
                "must be greater than 0".to_string(),
            );
        }

        if let Err(message) = check_log_level(&self.log.level) {
            report("log.level", message);
        }
        errors
    }
}

// ---------------------------------------------------------------------------
// Addresses and URIs

/// Splits `host:port` (host name, IPv4, or `[IPv6]`) and checks both parts.
/// Port 0 is returned as is; callers decide whether it is allowed.
pub fn parse_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("expected [IPv6]:port, got {address:?}"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        (host, port)
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("expected host:port, got {address:?}"))?;
        if host.contains(':') {
            return Err(format!(
                "write an IPv6 address in brackets, e.g. \"[::1]:19530\", got {address:?}"
            ));
        }
        if !is_host_name_or_ipv4(host) {
            return Err(format!(
                "{host:?} is not a host name or IPv4 address (in {address:?})"
            ));
        }
        (host, port)
    };
    let port = port.parse::<u16>().map_err(|_| {
        format!("port must be a number from 1 to 65535, got {port:?} (in {address:?})")
    })?;
    Ok((host.to_string(), port))
}

fn is_host_name_or_ipv4(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // All-numeric dotted text that is not a valid IPv4 address ("10.0.0.300").
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return false;
    }
    // Underscores are not valid in DNS names but appear in Docker service names.
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PortZero {
    Allowed,
    Rejected,
}

fn check_address(address: &str, port_zero: PortZero) -> Result<(String, u16), String> {
    let (host, port) = parse_host_port(address)?;
    if port == 0 && port_zero == PortZero::Rejected {
        return Err(format!(
            "port must be from 1 to 65535, got 0 (in {address:?})"
        ));
    }
    Ok((host, port))
}

/// A parsed `meta.uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaUri {
    /// `mysql://user[:password]@host[:port]/database[?options]`; user and
    /// password as written (percent-encoded); port defaults to 3306.
    MySql {
        user: String,
        password: Option<String>,
        host: String,
        port: u16,
        database: String,
    },
    /// `sqlite://PATH[?options]` in the sqlx convention: `sqlite://meta.sqlite`
    /// is relative to the working directory, `sqlite:///var/milvus/meta.sqlite` absolute.
    Sqlite { path: String },
    /// `sqlite::memory:` (tests).
    SqliteInMemory,
}

/// Parses and checks a metadata URI (see [`MetaUri`]).
pub fn parse_meta_uri(uri: &str) -> Result<MetaUri, String> {
    let uri = uri.trim();
    if uri == "sqlite::memory:" {
        return Ok(MetaUri::SqliteInMemory);
    }
    if let Some(rest) = uri.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":@:/" {
            return Err(format!(
                "a SQLite URI needs a file path, e.g. \"sqlite:///var/lib/milvus/db/meta.sqlite\", got {uri:?}"
            ));
        }
        return Ok(MetaUri::Sqlite {
            path: path.to_string(),
        });
    }
    let expected =
        "expected mysql://user[:password]@host[:port]/database, sqlite://PATH or sqlite::memory:";
    let scheme = uri.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("mysql") => {}
        Some(scheme) if scheme.contains('+') => {
            return Err(format!(
                "{expected}; drop the SQLAlchemy driver suffix from {scheme:?}, got {uri:?}"
            ))
        }
        _ => return Err(format!("{expected}, got {uri:?}")),
    }
    let url = url::Url::parse(uri).map_err(|err| format!("{expected}; {err} in {uri:?}"))?;
    if url.username().is_empty() {
        return Err(format!("{expected}; the user is missing in {uri:?}"));
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{expected}; the host is missing in {uri:?}"));
    }
    let database = url.path().trim_start_matches('/');
    if database.is_empty() || database.contains('/') {
        return Err(format!(
            "{expected}; the database name is missing or invalid in {uri:?}"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{expected}; unexpected '#' in {uri:?}"));
    }
    Ok(MetaUri::MySql {
        user: url.username().to_string(),
        password: url.password().map(str::to_string),
        host: host.to_string(),
        port: url.port().unwrap_or(3306),
        database: database.to_string(),
    })
}

fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = level.trim();
    let expected =
        "expected trace, debug, info, warn, error, off, or a filter like \"info,mishards=debug\"";
    if level.contains('=') || level.contains(',') {
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map(|_| ())
            .map_err(|err| format!("{expected}; {err}"))
    } else if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(format!("{expected}, got {level:?}"))
    }
}

// ---------------------------------------------------------------------------
// Parsing the file with per-key origins

const SECTION_NAMES: [&str; 6] = ["server", "metrics", "meta", "backends", "topology", "log"];

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File { line: usize },
    Env { variable: String },
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    origin: Origin,
}

#[derive(Debug, Default)]
struct Section {
    /// Line of the section header, when it came from the file.
    line: Option<usize>,
    entries: BTreeMap<String, Entry>,
}

type Sections = BTreeMap<String, Section>;

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn attach_origin(error: ConfigError, origin: Option<&Origin>) -> ConfigError {
    match origin {
        Some(Origin::File { line }) => error.at_line(Some(*line)),
        Some(Origin::Env { variable }) => ConfigError {
            message: format!("{} (set by environment variable {variable})", error.message),
            ..error
        },
        None => error,
    }
}

fn parse_sections(text: &str) -> Result<Sections, ConfigError> {
    type RawSections = BTreeMap<String, Spanned<BTreeMap<String, Spanned<Value>>>>;
    let raw: RawSections = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| line_of(text, span.start));
        ConfigError::new(
            line.map(|line| key_near_line(text, line))
                .unwrap_or_else(|| "(file)".to_string()),
            format!("invalid TOML: {}", err.message().trim()),
        )
        .at_line(line)
    })?;
    Ok(raw
        .into_iter()
        .map(|(name, table)| {
            let line = Some(line_of(text, table.span().start));
            let entries = table
                .into_inner()
                .into_iter()
                .map(|(key, value)| {
                    let origin = Origin::File {
                        line: line_of(text, value.span().start),
                    };
                    let value = value.into_inner();
                    (key, Entry { value, origin })
                })
                .collect();
            (name, Section { line, entries })
        })
        .collect())
}

/// Best guess of the dotted key a syntax error is about: the last `[section]`
/// header before `line` and the `key =` on that line.
fn key_near_line(text: &str, line: usize) -> String {
    let mut section = None;
    let mut key = None;
    for (number, content) in text.lines().enumerate().take(line) {
        let content = content.trim();
        if content.starts_with('[') {
            let name = content.trim_matches(|c| c == '[' || c == ']').trim();
            section = Some(name.to_string());
            key = None;
        } else if number + 1 == line {
            key = content
                .split_once('=')
                .map(|(name, _)| name.trim().to_string())
                .filter(|name| !name.is_empty());
        }
    }
    match (section, key) {
        (Some(section), Some(key)) => format!("{section}.{key}"),
        (Some(section), None) => section,
        (None, Some(key)) => key,
        (None, None) => "(file)".to_string(),
    }
}

/// Deserialises sections key by key, so every bad key is reported.
struct SectionParser<'a> {
    sections: &'a Sections,
    errors: &'a mut Vec<ConfigError>,
    /// Dotted keys whose value failed to parse (their default is used instead).
    rejected: &'a mut BTreeSet<String>,
}

impl SectionParser<'_> {
    fn parse<T: DeserializeOwned + Default>(&mut self, name: &str) -> T {
        let Some(section) = self.sections.get(name) else {
            return T::default();
        };
        let mut accepted = toml::Table::new();
        for (key, entry) in &section.entries {
            let mut single = toml::Table::new();
            single.insert(key.clone(), entry.value.clone());
            match Value::Table(single).try_into::<T>() {
                Ok(_) => {
                    accepted.insert(key.clone(), entry.value.clone());
                }
                Err(err) => {
                    let dotted = format!("{name}.{key}");
                    let error = ConfigError::new(dotted.clone(), explain(err.message()));
                    self.errors.push(attach_origin(error, Some(&entry.origin)));
                    self.rejected.insert(dotted);
                }
            }
        }
        match Value::Table(accepted).try_into::<T>() {
            Ok(value) => value,
            Err(err) => {
                // Each key parsed alone; only a cross-key problem gets here.
                self.errors
                    .push(ConfigError::new(name, err.message().trim()).at_line(section.line));
                T::default()
            }
        }
    }
}

/// A serde message, with an example added where serde only names the type.
fn explain(message: &str) -> String {
    let message = message.trim();
    if message.ends_with("expected a duration") {
        format!("{message} like \"300ms\", \"5s\" or \"1m\"")
    } else {
        message.to_string()
    }
}

// ---------------------------------------------------------------------------
// Environment overrides

/// Every known `(section, key)` with its default value, which gives the type
/// an environment string is converted to.
fn known_keys() -> Vec<(String, String, Value)> {
    let Ok(Value::Table(sections)) = Value::try_from(Config::default()) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (section, table) in sections {
        if let Value::Table(table) = table {
            for (key, default) in table {
                keys.push((section.clone(), key, default));
            }
        }
    }
    keys
}

/// `MISHARDS__<SECTION>__<KEY>` for a section and key.
pub fn env_variable_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// Errors for `MISHARDS__*` names in `names` that match no configuration key.
pub fn unknown_env_overrides<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<ConfigError> {
    let known: BTreeSet<String> = known_keys()
        .into_iter()
        .map(|(section, key, _)| env_variable_name(&section, &key))
        .collect();
    names
        .into_iter()
        .filter(|name| name.starts_with(ENV_PREFIX) && !known.contains(*name))
        .map(|name| {
            ConfigError::new(
                name,
                "unknown environment override; expected MISHARDS__<SECTION>__<KEY> \
                 naming a key of config/mishards.toml",
            )
        })
        .collect()
}

fn set_from_env(sections: &mut Sections, section: &str, key: &str, value: Value, variable: &str) {
    sections
        .entry(section.to_string())
        .or_default()
        .entries
        .insert(
            key.to_string(),
            Entry {
                value,
                origin: Origin::Env {
                    variable: variable.to_string(),
                },
            },
        );
}

fn current_string(sections: &Sections, section: &str, key: &str) -> Option<String> {
    match &sections.get(section)?.entries.get(key)?.value {
        Value::String(text) => Some(text.clone()),
        _ => None,
    }
}

fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn apply_env_overrides(
    sections: &mut Sections,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    apply_mishards_python_aliases(sections, env, errors);
    for (section, key, default) in known_keys() {
        let variable = env_variable_name(&section, &key);
        let Some(raw) = env(&variable) else {
            continue;
        };
        let raw = raw.trim();
        let value = match default {
            Value::Integer(_) => match raw.parse::<i64>() {
                Ok(number) => Value::Integer(number),
                Err(_) => {
                    errors.push(ConfigError::new(
                        format!("{section}.{key}"),
                        format!("{variable}: expected an integer, got {raw:?}"),
                    ));
                    continue;
                }
            },
            Value::Boolean(_) => match raw.parse::<bool>() {
                Ok(flag) => Value::Boolean(flag),
                Err(_) => {
                    errors.push(ConfigError::new(
                        format!("{section}.{key}"),
                        format!("{variable}: expected true or false, got {raw:?}"),
                    ));
                    continue;
                }
            },
            Value::Array(_) => Value::Array(
                split_list(raw)
                    .map(|item| Value::String(item.to_string()))
                    .collect(),
            ),
            _ => Value::String(raw.to_string()),
        };
        set_from_env(sections, &section, &key, value, &variable);
    }
}

/// The environment names of the Python Mishards (`mishards/settings.py`).
fn apply_mishards_python_aliases(
    sections: &mut Sections,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(raw) = env("WOSERVER") {
        let address = woserver_to_address(&raw);
        set_from_env(
            sections,
            "backends",
            "writable",
            Value::String(address),
            "WOSERVER",
        );
    }
    if let Some(raw) = env("SQLALCHEMY_DATABASE_URI") {
        let uri = sqlalchemy_to_meta_uri(&raw);
        set_from_env(
            sections,
            "meta",
            "uri",
            Value::String(uri),
            "SQLALCHEMY_DATABASE_URI",
        );
    }
    if let Some(hosts) = env("DISCOVERY_STATIC_HOSTS") {
        let port = match env("DISCOVERY_STATIC_PORT") {
            None => Some(DEFAULT_MILVUS_PORT),
            Some(raw) => {
                match raw.trim().parse::<u16>() {
                    Ok(port) if port > 0 => Some(port),
                    _ => {
                        errors.push(ConfigError::new(
                        "backends.readonly",
                        format!("DISCOVERY_STATIC_PORT: expected a port from 1 to 65535, got {raw:?}"),
                    ));
                        None
                    }
                }
            }
        };
        if let Some(port) = port {
            let readonly = split_list(&hosts)
                .map(|host| Value::String(with_default_port(host, port)))
                .collect();
            set_from_env(
                sections,
                "backends",
                "readonly",
                Value::Array(readonly),
                "DISCOVERY_STATIC_HOSTS",
            );
        }
    }
    if let Some(raw) = env("SERVER_PORT") {
        match raw.trim().parse::<u16>() {
            Ok(port) => {
                let listen = current_string(sections, "server", "listen")
                    .unwrap_or_else(|| ServerConfig::default().listen);
                let host = parse_host_port(&listen)
                    .map(|(host, _)| host)
                    .unwrap_or_else(|_| "0.0.0.0".to_string());
                let listen = with_default_port(&host, port);
                set_from_env(
                    sections,
                    "server",
                    "listen",
                    Value::String(listen),
                    "SERVER_PORT",
                );
            }
            Err(_) => errors.push(ConfigError::new(
                "server.listen",
                format!("SERVER_PORT: expected a port from 0 to 65535, got {raw:?}"),
            )),
        }
    }
}

/// `tcp://host:port` or `host:port` (Mishards `WOSERVER`) to `host:port`;
/// a missing port becomes 19530.
pub fn woserver_to_address(raw: &str) -> String {
    let raw = raw.trim();
    let without_scheme = raw
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(raw)
        .trim_end_matches('/');
    with_default_port(without_scheme, DEFAULT_MILVUS_PORT)
}

/// `host` or `host:port` to `host:port`, bracketing a bare IPv6 address.
fn with_default_port(host: &str, port: u16) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        return format!("[{host}]:{port}");
    }
    let has_port = if host.starts_with('[') {
        host.contains("]:")
    } else {
        host.contains(':')
    };
    if has_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// A SQLAlchemy URL (Mishards `SQLALCHEMY_DATABASE_URI`) to a `meta.uri`:
/// drops the `+driver` suffix and the query string; SQLite paths move from the
/// SQLAlchemy convention (`sqlite:///relative`, `sqlite:////absolute`, `sqlite://`
/// = in memory) to the sqlx one (`sqlite://relative`, `sqlite:///absolute`).
pub fn sqlalchemy_to_meta_uri(raw: &str) -> String {
    let raw = raw.trim();
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let dialect = scheme.split('+').next().unwrap_or(scheme);
    let rest = rest.split('?').next().unwrap_or_default();
    if dialect == "sqlite" {
        return match rest {
            "" => "sqlite::memory:".to_string(),
            path => format!("sqlite://{}", path.strip_prefix('/').unwrap_or(path)),
        };
    }
    format!("{dialect}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/mishards.toml");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    const MINIMAL: &str = r#"
[meta]
uri = "mysql://root:pass@127.0.0.1:3306/milvus"
[backends]
writable = "10.0.0.1:19530"
"#;

    fn keys(errors: &[ConfigError]) -> Vec<&str> {
        errors.iter().map(|error| error.key.as_str()).collect()
    }

    #[test]
    fn defaults_fill_every_optional_key() {
        let config = Config::load_from_str(MINIMAL, no_env).expect("minimal config is valid");
        assert_eq!(config.server.listen, "0.0.0.0:19530");
        assert_eq!(config.server.max_message_size, ByteSize(GIB));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.metrics.listen, "0.0.0.0:9090");
        assert_eq!(config.meta.max_connections, 8);
        assert!(config.backends.readonly.is_empty());
        assert_eq!(config.backends.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.backends.request_deadline(), None);
        assert_eq!(config.backends.search_deadline(), None);
        assert_eq!(
            config.backends.virtual_nodes as usize,
            crate::ring::DEFAULT_VIRTUAL_NODES
        );
        assert_eq!(config.topology.refresh_interval, Duration::from_millis(300));
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn default_config_misses_only_the_required_keys() {
        assert_eq!(
            keys(&Config::default().validate()),
            vec!["meta.uri", "backends.writable"]
        );
        let errors = Config::load_from_str("", no_env).expect_err("required keys missing");
        assert_eq!(keys(&errors), vec!["meta.uri", "backends.writable"]);
    }

    #[test]
    fn full_file_sets_every_key() {
        let text = r#"
[server]
listen = "127.0.0.1:19531"
max_message_size = "512MiB"
shutdown_grace = "2s"
[metrics]
listen = "127.0.0.1:9191"
[meta]
uri = "sqlite:///var/lib/milvus/db/meta.sqlite"
max_connections = 4
[backends]
writable = "milvus-wo:19530"
readonly = ["10.0.0.2:19530", "milvus-ro-1:19530", "[::1]:19530"]
connect_timeout = "1s 500ms"
request_timeout = "30s"
search_timeout = "2m"
virtual_nodes = 64
[topology]
refresh_interval = "1s"
[log]
level = "info,mishards::proxy=debug"
format = "json"
"#;
        let config = Config::load_from_str(text, no_env).expect("full config is valid");
        assert_eq!(config.server.listen, "127.0.0.1:19531");
        assert_eq!(config.server.max_message_size, ByteSize(512 * MIB));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(2));
        assert_eq!(config.metrics.listen, "127.0.0.1:9191");
        assert_eq!(
            parse_meta_uri(&config.meta.uri),
            Ok(MetaUri::Sqlite {
                path: "/var/lib/milvus/db/meta.sqlite".to_string()
            })
        );
        assert_eq!(config.meta.max_connections, 4);
        assert_eq!(config.backends.writable, "milvus-wo:19530");
        assert_eq!(config.backends.readonly.len(), 3);
        assert_eq!(config.backends.connect_timeout, Duration::from_millis(1500));
        assert_eq!(
            config.backends.request_deadline(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            config.backends.search_deadline(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(config.backends.virtual_nodes, 64);
        assert_eq!(config.topology.refresh_interval, Duration::from_secs(1));
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn example_file_parses_and_validates() {
        let config = Config::load_from_str(EXAMPLE, no_env)
            .unwrap_or_else(|errors| panic!("config/mishards.toml is invalid: {errors:?}"));
        assert_eq!(config.backends.writable, "10.0.0.1:19530");
    }

    #[test]
    fn example_file_documents_every_key_and_env_variable() {
        for (section, key, _) in known_keys() {
            let line = format!("{key} =");
            assert!(
                EXAMPLE.contains(&line),
                "config/mishards.toml lacks {section}.{key}"
            );
            let variable = env_variable_name(&section, &key);
            assert!(
                EXAMPLE.contains(&variable),
                "config/mishards.toml lacks {variable}"
            );
        }
    }

    #[test]
    fn known_keys_cover_every_section() {
        let sections: BTreeSet<String> = known_keys().into_iter().map(|(s, _, _)| s).collect();
        let expected: BTreeSet<String> = SECTION_NAMES.iter().map(|s| s.to_string()).collect();
        assert_eq!(sections, expected);
    }

    #[test]
    fn env_overrides_use_the_double_underscore_scheme() {
        let env = env_of(&[
            ("MISHARDS__BACKENDS__WRITABLE", "10.0.0.9:19530"),
            (
                "MISHARDS__BACKENDS__READONLY",
                "10.0.0.2:19530, 10.0.0.3:19530,",
            ),
            ("MISHARDS__TOPOLOGY__REFRESH_INTERVAL", "1s"),
            ("MISHARDS__BACKENDS__VIRTUAL_NODES", "32"),
            ("MISHARDS__SERVER__MAX_MESSAGE_SIZE", "64MiB"),
            ("MISHARDS__LOG__FORMAT", "json"),
        ]);
        let config = Config::load_from_str(MINIMAL, env).expect("valid");
        assert_eq!(config.backends.writable, "10.0.0.9:19530");
        assert_eq!(
            config.backends.readonly,
            vec!["10.0.0.2:19530", "10.0.0.3:19530"]
        );
        assert_eq!(config.topology.refresh_interval, Duration::from_secs(1));
        assert_eq!(config.backends.virtual_nodes, 32);
        assert_eq!(config.server.max_message_size, ByteSize(64 * MIB));
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = env_of(&[
            ("MISHARDS__BACKENDS__VIRTUAL_NODES", "many"),
            ("MISHARDS__TOPOLOGY__REFRESH_INTERVAL", "soon"),
            ("MISHARDS__BACKENDS__WRITABLE", "nohost"),
        ]);
        let errors = Config::load_from_str(MINIMAL, env).expect_err("bad env values");
        assert_eq!(errors.len(), 3, "{errors:?}");
        let by_key = |key: &str| {
            errors
                .iter()
                .find(|error| error.key == key)
                .unwrap_or_else(|| panic!("no error for {key}: {errors:?}"))
                .to_string()
        };
        assert!(by_key("backends.virtual_nodes").contains("MISHARDS__BACKENDS__VIRTUAL_NODES"));
        assert!(
            by_key("topology.refresh_interval").contains("MISHARDS__TOPOLOGY__REFRESH_INTERVAL")
        );
        assert!(by_key("backends.writable").contains("MISHARDS__BACKENDS__WRITABLE"));
    }

    #[test]
    fn mishards_python_env_names_are_aliases() {
        let env = env_of(&[
            ("WOSERVER", "tcp://milvus-wo:19531"),
            (
                "SQLALCHEMY_DATABASE_URI",
                "mysql+pymysql://root:root@127.0.0.1:3306/milvus?charset=utf8mb4",
            ),
            ("DISCOVERY_STATIC_HOSTS", "10.0.0.2, ro-2:19540"),
            ("DISCOVERY_STATIC_PORT", "19533"),
            ("SERVER_PORT", "19600"),
        ]);
        let config = Config::load_from_str("", env).expect("aliases fill the required keys");
        assert_eq!(config.backends.writable, "milvus-wo:19531");
        assert_eq!(config.meta.uri, "mysql://root:root@127.0.0.1:3306/milvus");
        assert_eq!(
            config.backends.readonly,
            vec!["10.0.0.2:19533", "ro-2:19540"]
        );
        assert_eq!(config.server.listen, "0.0.0.0:19600");
    }

    #[test]
    fn new_env_scheme_wins_over_python_aliases_and_the_file() {
        let env = env_of(&[
            ("WOSERVER", "tcp://from-alias:19530"),
            ("MISHARDS__BACKENDS__WRITABLE", "from-new-scheme:19530"),
            ("SERVER_PORT", "19600"),
        ]);
        let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\n");
        let config = Config::load_from_str(&text, env).expect("valid");
        assert_eq!(config.backends.writable, "from-new-scheme:19530");
        assert_eq!(
            config.server.listen, "127.0.0.1:19600",
            "SERVER_PORT keeps the file's host"
        );
    }

    #[test]
    fn alias_conversions() {
        assert_eq!(
            woserver_to_address("tcp://127.0.0.1:19530"),
            "127.0.0.1:19530"
        );
        assert_eq!(woserver_to_address("wo-host"), "wo-host:19530");
        assert_eq!(woserver_to_address("tcp://[::1]:19531/"), "[::1]:19531");
        assert_eq!(
            sqlalchemy_to_meta_uri("sqlite:////tmp/milvus/db/meta.sqlite?check_same_thread=False"),
            "sqlite:///tmp/milvus/db/meta.sqlite"
        );
        assert_eq!(
            sqlalchemy_to_meta_uri("sqlite:///meta.sqlite"),
            "sqlite://meta.sqlite"
        );
        assert_eq!(sqlalchemy_to_meta_uri("sqlite://"), "sqlite::memory:");
        assert_eq!(
            sqlalchemy_to_meta_uri("mysql://u:p@h/db"),
            "mysql://u:p@h/db",
            "a URL without a driver is unchanged"
        );
        let bad_port = env_of(&[
            ("DISCOVERY_STATIC_HOSTS", "a"),
            ("DISCOVERY_STATIC_PORT", "x"),
        ]);
        let errors = Config::load_from_str(MINIMAL, bad_port).expect_err("bad port");
        assert_eq!(keys(&errors), vec!["backends.readonly"]);
    }

    #[test]
    fn all_errors_are_reported_at_once_with_keys_and_lines() {
        let text = r#"[server]
listen = "0.0.0.0:19530"
max_message_size = "1MiB"
[meta]
uri = "postgres://root@db/milvus"
[backends]
writable = "10.0.0.1:19530"
connect_timeout = "3 parsecs"
"#;
        let errors = Config::load_from_str(text, no_env).expect_err("three mistakes");
        assert_eq!(
            keys(&errors),
            vec![
                "server.max_message_size",
                "meta.uri",
                "backends.connect_timeout"
            ],
            "{errors:?}"
        );
        let lines: Vec<Option<usize>> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, vec![Some(3), Some(5), Some(8)]);
        assert!(errors[2].message.contains("\"5s\""), "{}", errors[2]);
    }

    #[test]
    fn every_bad_key_in_one_section_is_reported() {
        let text = r#"
[meta]
uri = "mysql://root:pass@127.0.0.1:3306/milvus"
[backends]
writable = 19530
readonly = ["10.0.0.2:19530", "10.0.0.2:19530", "10.0.0.3:0", "bad host:1"]
virtual_nodes = -1
request_timout = "1s"
"#;
        let errors = Config::load_from_str(text, no_env).expect_err("many mistakes");
        assert_eq!(
            keys(&errors),
            vec![
                "backends.writable",
                "backends.readonly[1]",
                "backends.readonly[2]",
                "backends.readonly[3]",
                "backends.virtual_nodes",
                "backends.request_timout",
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_rejected() {
        let text =
            format!("{MINIMAL}\n[server]\nlistn = \"0.0.0.0:1\"\n[srever]\nlisten = \"x\"\n");
        let errors = Config::load_from_str(&text, no_env).expect_err("typos");
        assert_eq!(keys(&errors), vec!["server.listn", "srever"], "{errors:?}");
        assert!(errors[0].message.contains("unknown field"), "{}", errors[0]);
        assert!(
            errors[1].message.contains("unknown section"),
            "{}",
            errors[1]
        );
        assert_eq!(
            unknown_env_overrides([
                "MISHARDS__BACKENDS__WRITEABLE",
                "MISHARDS__LOG__LEVEL",
                "PATH"
            ])
            .len(),
            1
        );
    }

    #[test]
    fn toml_syntax_errors_carry_key_and_line() {
        let text = "[meta]\nuri = \"mysql://a@b/c\"\n[backends]\nwritable = \"10.0.0.1:19530\n";
        let errors = Config::load_from_str(text, no_env).expect_err("unterminated string");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "backends.writable");
        assert_eq!(errors[0].line, Some(4));
        assert!(errors[0]
            .to_string()
            .starts_with("backends.writable: invalid TOML"));

        let errors = Config::load_from_str("server = 5\n", no_env).expect_err("not a table");
        assert_eq!(errors[0].line, Some(1), "{errors:?}");
    }

    #[test]
    fn display_is_key_then_message() {
        let error = ConfigError::new("meta.uri", "required");
        assert_eq!(error.to_string(), "meta.uri: required");
        assert_eq!(
            error.at_line(Some(7)).to_string(),
            "meta.uri: required (line 7)"
        );
    }

    #[test]
    fn writable_may_also_be_readonly() {
        let text = format!("{MINIMAL}readonly = [\"10.0.0.1:19530\"]\n");
        let config = Config::load_from_str(&text, no_env).expect("allowed");
        assert_eq!(
            config.backends.readonly,
            vec![config.backends.writable.clone()]
        );
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            parse_host_port("10.0.0.1:19530"),
            Ok(("10.0.0.1".to_string(), 19530))
        );
        assert_eq!(
            parse_host_port("milvus_ro-1.svc:1"),
            Ok(("milvus_ro-1.svc".to_string(), 1))
        );
        assert_eq!(
            parse_host_port("[::1]:19530"),
            Ok(("::1".to_string(), 19530))
        );
        for bad in [
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:65536",
            "10.0.0.300:1",
            ":19530",
            "::1:19530",
            "[zz]:1",
            "-host:1",
            "a b:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad} should be rejected");
        }
        assert!(check_address("h:0", PortZero::Rejected).is_err());
        assert!(check_address("h:0", PortZero::Allowed).is_ok());
    }

    #[test]
    fn meta_uri_forms() {
        assert_eq!(
            parse_meta_uri("mysql://root:pass@127.0.0.1:3306/milvus"),
            Ok(MetaUri::MySql {
                user: "root".to_string(),
                password: Some("pass".to_string()),
                host: "127.0.0.1".to_string(),
                port: 3306,
                database: "milvus".to_string(),
            })
        );
        assert!(matches!(
            parse_meta_uri("mysql://root@db/milvus"),
            Ok(MetaUri::MySql {
                port: 3306,
                password: None,
                ..
            })
        ));
        assert_eq!(
            parse_meta_uri("sqlite::memory:"),
            Ok(MetaUri::SqliteInMemory)
        );
        assert_eq!(
            parse_meta_uri("sqlite://meta.sqlite?mode=rwc"),
            Ok(MetaUri::Sqlite {
                path: "meta.sqlite".to_string()
            })
        );
        for bad in [
            "mysql://127.0.0.1:3306/milvus",
            "mysql://root@127.0.0.1:3306/",
            "mysql://root@127.0.0.1:99999/milvus",
            "mysql+pymysql://root@h/db",
            "sqlite://",
            "sqlite://:@:/",
            "postgres://u@h/db",
            "milvus",
        ] {
            assert!(parse_meta_uri(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_meta_uri("mysql+pymysql://root@h/db")
            .unwrap_err()
            .contains("driver suffix"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("512MiB"), Ok(ByteSize(512 * MIB)));
        assert_eq!(parse_byte_size("1 gib"), Ok(ByteSize(GIB)));
        assert_eq!(parse_byte_size("4MB"), Ok(ByteSize(4_000_000)));
        assert_eq!(parse_byte_size("123"), Ok(ByteSize(123)));
        assert_eq!(parse_byte_size("7B"), Ok(ByteSize(7)));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1",
            "12 parsecs",
            "99999999999999999999",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_byte_size("17000000TiB").is_err(), "overflow");
        assert_eq!(ByteSize(GIB).to_string(), "1GiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
        let text = format!("{MINIMAL}[server]\nmax_message_size = 8388608\n");
        let config = Config::load_from_str(&text, no_env).expect("integer bytes");
        assert_eq!(config.server.max_message_size, ByteSize(8 * MIB));
    }

    #[test]
    fn limits_and_zero_durations() {
        let mut config = Config::load_from_str(MINIMAL, no_env).expect("valid");
        config.server.max_message_size = ByteSize(5 * GIB);
        config.backends.connect_timeout = Duration::ZERO;
        config.topology.refresh_interval = Duration::ZERO;
        config.meta.max_connections = 0;
        config.backends.virtual_nodes = 0;
        config.log.level = "infoo".to_string();
        config.server.shutdown_grace = Duration::ZERO; // allowed: stop at once
        assert_eq!(
            keys(&config.validate()),
            vec![
                "server.max_message_size",
                "meta.max_connections",
                "backends.connect_timeout",
                "backends.virtual_nodes",
                "topology.refresh_interval",
                "log.level",
            ]
        );
    }

    #[test]
    fn check_config_file_reads_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mishards.toml");
        std::fs::write(&path, MINIMAL).expect("write");
        // Only fails if the test runner itself sets MISHARDS__* variables.
        let config = check_config_file(&path).expect("valid file");
        assert_eq!(config.meta.max_connections, 8);
        let errors = check_config_file(dir.path().join("missing.toml")).expect_err("missing");
        assert!(errors[0].message.contains("cannot read"));
    }
}
