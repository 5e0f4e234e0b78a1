//! The typed settings of `mishards serve`: one struct per TOML section
//! (`server`, `metrics`, `meta`, `backends`, `topology`, `log`, `access`,
//! `tls`, `backend_tls`), with their defaults; `[[groups]]` and `[placement]`
//! are in `groups`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::byte_size::{ByteSize, GIB};

/// The port Milvus and Mishards listen on by default.
pub const DEFAULT_MILVUS_PORT: u16 = 19530;

/// The whole configuration of `mishards serve`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub http_api: HttpApiConfig,
    pub meta: MetaConfig,
    pub backends: BackendsConfig,
    pub topology: TopologyConfig,
    pub log: LogConfig,
    pub access: AccessConfig,
    pub tls: TlsConfig,
    pub backend_tls: BackendTlsConfig,
    pub deadlines: super::resilience::DeadlinesConfig,
    pub slow_nodes: super::resilience::SlowNodesConfig,
    pub admission: super::resilience::AdmissionConfig,
    pub coalesce: super::coalesce::CoalesceConfig,
    pub reload: super::operations::ReloadConfig,
    pub discovery: super::operations::DiscoveryConfig,
    /// `[[groups]]`: several shard groups; empty = the single cluster of
    /// `[meta]` + `[backends]` (see [`Config::shard_groups`]).
    pub groups: Vec<super::groups::GroupConfig>,
    pub placement: super::groups::PlacementConfig,
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
    /// After a shutdown signal, how long the health service says NOT_SERVING
    /// while still accepting calls, so balancers stop sending new ones.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: format!("0.0.0.0:{DEFAULT_MILVUS_PORT}"),
            max_message_size: ByteSize(GIB),
            shutdown_grace: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
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

/// The port of Milvus 1.1's HTTP API (`network.http.port`).
pub const DEFAULT_HTTP_API_PORT: u16 = 19121;

/// `[http_api]`: Milvus 1.1's HTTP (REST) API, served in-process over the
/// same gRPC routes (see `crate::http_api`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpApiConfig {
    /// Whether the HTTP API is served at all.
    pub enabled: bool,
    /// `host:port` to bind; port 0 picks a free port. Left at its default
    /// while `server.listen` has port 0, it picks a free port too (tests and
    /// embedded runs never collide on 19121).
    pub listen: String,
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        HttpApiConfig {
            enabled: true,
            listen: format!("0.0.0.0:{DEFAULT_HTTP_API_PORT}"),
        }
    }
}

impl HttpApiConfig {
    /// The address to bind, given the gRPC `server.listen`: `listen`, or,
    /// when `listen` is the default and the gRPC port is 0, the same host
    /// with port 0. `None` when disabled.
    pub fn effective_listen(&self, grpc_listen: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let grpc_port_zero = grpc_listen
            .rsplit_once(':')
            .is_some_and(|(_, port)| port == "0");
        if self.listen == HttpApiConfig::default().listen && grpc_port_zero {
            let host = grpc_listen.rsplit_once(':').map_or("0.0.0.0", |(h, _)| h);
            return Some(format!("{host}:0"));
        }
        Some(self.listen.clone())
    }
}

/// `[meta]`: the Milvus metadata database shared by the cluster. Its
/// `Debug` hides the password of `uri`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    /// `mysql://user[:pass]@host[:port]/db`, `sqlite://PATH` or `sqlite::memory:`.
    /// Required; the empty default fails validation.
    pub uri: String,
    /// Size of the connection pool.
    pub max_connections: u32,
}

impl std::fmt::Debug for MetaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaConfig")
            .field("uri", &crate::meta::redacted(&self.uri))
            .field("max_connections", &self.max_connections)
            .finish()
    }
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
    /// When no read-only node is healthy, send searches whole to the
    /// writable node (it reads the same shared storage) instead of failing.
    pub search_writer_fallback: bool,
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
            search_writer_fallback: false,
        }
    }
}

/// `[topology]`: how often the proxy re-reads the backend list and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// A collection name that missed this recently is answered "not found"
    /// without another metadata read; all misses read at most 10 times per it.
    #[serde(with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// Longest one metadata read may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Cap of the back-off between refreshes while the database fails.
    #[serde(with = "humantime_serde")]
    pub max_retry_interval: Duration,
    /// `/readyz` says "stale" when the snapshot was last verified longer ago
    /// (or the last read failed).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Send each new segment file's read-only node one small search over
    /// just that file as soon as a snapshot shows it, so the node loads it
    /// before a user search needs it.
    pub warm_new_files: bool,
    /// How long a Flush through the proxy waits (after the writer answered)
    /// for the files it made to be warm; "0s" answers at once.
    #[serde(with = "humantime_serde")]
    pub warm_wait: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        // The same defaults as `topology::TopologySettings::default()`.
        TopologyConfig {
            refresh_interval: Duration::from_millis(300),
            negative_cache_ttl: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            max_retry_interval: Duration::from_secs(2),
            stale_after: Duration::from_secs(5),
            warm_new_files: true,
            warm_wait: Duration::from_secs(2),
        }
    }
}

/// `[access]`: who may call what (all off by default).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Refuse every RPC that changes data, schema or indexes.
    pub read_only: bool,
    /// RPC names refused with PERMISSION_DENIED, e.g. `["DropCollection"]`.
    pub deny: Vec<String>,
    /// Client networks (CIDR or single addresses) allowed to call; empty = all.
    pub allow_networks: Vec<String>,
}

/// `[tls]`: TLS on the client listener (off while `cert_file` is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the listener; empty = plain TCP.
    pub cert_file: String,
    /// PEM private key of that certificate.
    pub key_file: String,
    /// PEM CA certificates; set = clients must present a certificate they signed (mTLS).
    pub client_ca_file: String,
    /// How often the files' modification times are checked for a reload.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// `[backend_tls]`: TLS from the proxy to its backends (off while
/// `ca_file` is empty). Milvus 1.x speaks plain gRPC: this is for a
/// TLS-terminating sidecar in front of each node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// PEM CA certificates the backends' certificates must chain to; empty = plain gRPC.
    pub ca_file: String,
    /// PEM client certificate chain the proxy presents when a backend asks (mTLS).
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// The name every backend certificate is verified against; empty = the
    /// host of each backend address (a DNS name or an IP address).
    pub server_name: String,
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
#[cfg(test)]
mod tests {
    #[test]
    fn debug_hides_the_metadata_password() {
        let mut config = Config::default();
        config.meta.uri = "mysql://root:s3cretPW@db:3306/milvus".to_string();
        let text = format!("{config:?} {config:#?}");
        assert!(
            !text.contains("s3cretPW") && text.contains("root:***@db"),
            "{text}"
        );
    }

    use super::*;
    use crate::config::test_support::*;
    use crate::config::Config;

    #[test]
    fn the_http_api_is_on_19121_and_follows_a_port_zero_server() {
        let config = Config::load_from_str(MINIMAL, no_env).expect("valid");
        assert!(config.http_api.enabled);
        assert_eq!(
            config.http_api.effective_listen(&config.server.listen),
            Some("0.0.0.0:19121".to_string())
        );
        let http = HttpApiConfig::default();
        assert_eq!(
            http.effective_listen("127.0.0.1:0"),
            Some("127.0.0.1:0".to_string())
        );
        let env = env_of(&[
            ("MISHARDS__HTTP_API__LISTEN", "127.0.0.1:8080"),
            ("MISHARDS__HTTP_API__ENABLED", "false"),
        ]);
        let config = Config::load_from_str(MINIMAL, env).expect("valid");
        assert_eq!(config.http_api.listen, "127.0.0.1:8080");
        assert_eq!(config.http_api.effective_listen("127.0.0.1:0"), None);
        let set = HttpApiConfig {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
        };
        assert_eq!(
            set.effective_listen("127.0.0.1:0"),
            Some("127.0.0.1:8080".to_string())
        );
        let bad = "[http_api]\nlisten = \"nowhere\"\n";
        let errors = Config::load_from_str(&format!("{MINIMAL}{bad}"), no_env).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("http_api.listen")),
            "{errors:?}"
        );
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
}
