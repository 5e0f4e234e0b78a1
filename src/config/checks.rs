//! The checks of a parsed [`Config`]: addresses, the metadata URI, limits and
//! the log level, every problem reported as a [`ConfigError`]. The checks of
//! `[[groups]]` and `[placement]` are in `groups`.

use std::collections::BTreeMap;

use super::address::{check_address, PortZero};
use super::byte_size::{ByteSize, MIB};
use super::{Config, ConfigError};
use crate::meta::MetaUri;

/// The smallest accepted `server.max_message_size`.
pub const MIN_MESSAGE_SIZE: ByteSize = ByteSize(4 * MIB);
/// The largest accepted `server.max_message_size` (a gRPC frame length is a u32).
pub const MAX_MESSAGE_SIZE: ByteSize = ByteSize(u32::MAX as u64);

impl Config {
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
        if self.http_api.enabled {
            if let Err(message) = check_address(&self.http_api.listen, PortZero::Allowed) {
                report("http_api.listen", message);
            }
        }

        if self.groups.is_empty() {
            if self.meta.uri.trim().is_empty() {
                report(
                    "meta.uri",
                    "required: the metadata database, e.g. \"mysql://root:pass@127.0.0.1:3306/milvus\" \
                     (or set MISHARDS__META__URI / SQLALCHEMY_DATABASE_URI)"
                        .to_string(),
                );
            } else if let Err(message) = MetaUri::parse(&self.meta.uri, None) {
                report("meta.uri", message);
            }
        } else {
            super::groups::check_not_mixed(self, &mut report);
            super::groups::check_groups(&self.groups, &mut report);
        }
        if self.meta.max_connections == 0 {
            report("meta.max_connections", "must be at least 1".to_string());
        }
        if self.groups.is_empty() {
            if self.backends.writable.trim().is_empty() {
                report(
                    "backends.writable",
                    "required: host:port of the writable Milvus node \
                     (or set MISHARDS__BACKENDS__WRITABLE / WOSERVER)"
                        .to_string(),
                );
            } else if let Err(message) = check_address(&self.backends.writable, PortZero::Rejected)
            {
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
        }
        super::groups::check_placement(self, &mut report);
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

        for (key, duration) in [
            ("topology.read_timeout", self.topology.read_timeout),
            (
                "topology.max_retry_interval",
                self.topology.max_retry_interval,
            ),
            ("topology.stale_after", self.topology.stale_after),
        ] {
            if duration.is_zero() {
                report(key, "must be greater than 0".to_string());
            }
        }
        if let Err(message) = crate::access::AccessPolicy::new(
            self.access.read_only,
            &self.access.deny,
            &self.access.allow_networks,
        ) {
            let key = if message.starts_with("access.deny") {
                "access.deny"
            } else {
                "access.allow_networks"
            };
            let message = message
                .split_once(": ")
                .map_or(message.clone(), |(_, m)| m.to_string());
            report(key, message);
        }

        self.check_tls(&mut report);
        self.check_backend_tls(&mut report);

        if let Err(message) = check_log_level(&self.log.level) {
            report("log.level", message);
        }
        for (key, message) in
            super::resilience::check(&self.deadlines, &self.slow_nodes, &self.admission)
        {
            report(key, message);
        }
        for (key, message) in super::coalesce::check(&self.coalesce) {
            report(key, message);
        }
        for (key, message) in super::operations::check_discovery(&self.discovery)
            .into_iter()
            .map(|e| (e.key.clone(), e.message.clone()))
        {
            report(&key, message);
        }
        errors
    }
}

impl Config {
    /// `[tls]`: both files or neither, a CA only with them, and files that
    /// really make a TLS identity (read here, so `check-config` catches them).
    fn check_tls(&self, report: &mut impl FnMut(&str, String)) {
        let tls = &self.tls;
        let set = |s: &str| !s.trim().is_empty();
        if set(&tls.cert_file) != set(&tls.key_file) {
            let missing = if set(&tls.cert_file) {
                "tls.key_file"
            } else {
                "tls.cert_file"
            };
            report(
                missing,
                "tls.cert_file and tls.key_file go together".to_string(),
            );
            return;
        }
        if !set(&tls.cert_file) {
            if set(&tls.client_ca_file) {
                report(
                    "tls.client_ca_file",
                    "client certificates need TLS: set tls.cert_file and tls.key_file".to_string(),
                );
            }
            return;
        }
        if tls.reload_interval.is_zero() {
            report("tls.reload_interval", "must be greater than 0".to_string());
        }
        if let Some(files) =
            crate::tls::TlsFiles::from_paths(&tls.cert_file, &tls.key_file, &tls.client_ca_file)
        {
            if let Err(message) = crate::tls::server_config(&files) {
                report("tls.cert_file", message);
            }
        }
    }
}

impl Config {
    /// `[backend_tls]`: a client certificate needs its key and a CA, the
    /// server name must be a name, and the files must really make a TLS
    /// client configuration (read here, so `check-config` catches them).
    fn check_backend_tls(&self, report: &mut impl FnMut(&str, String)) {
        let tls = &self.backend_tls;
        let set = |s: &str| !s.trim().is_empty();
        if set(&tls.cert_file) != set(&tls.key_file) {
            let missing = if set(&tls.cert_file) {
                "backend_tls.key_file"
            } else {
                "backend_tls.cert_file"
            };
            report(
                missing,
                "backend_tls.cert_file and backend_tls.key_file go together".to_string(),
            );
            return;
        }
        if !set(&tls.ca_file) {
            for (key, value) in [
                ("backend_tls.cert_file", &tls.cert_file),
                ("backend_tls.server_name", &tls.server_name),
            ] {
                if set(value) {
                    report(
                        key,
                        "TLS to the backends needs backend_tls.ca_file (the CA that signs \
                         their certificates)"
                            .to_string(),
                    );
                }
            }
            return;
        }
        if set(&tls.server_name) {
            if let Err(message) = crate::tls::backend::server_name("", &tls.server_name) {
                report("backend_tls.server_name", message);
            }
        }
        if let Some(files) =
            crate::tls::BackendTlsFiles::from_paths(&tls.ca_file, &tls.cert_file, &tls.key_file)
        {
            if let Err(message) = crate::tls::backend::client_config(&files) {
                let key = if message.contains("backend CA file") {
                    "backend_tls.ca_file"
                } else {
                    "backend_tls.cert_file"
                };
                report(key, message);
            }
        }
    }
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
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::byte_size::GIB;
    use crate::config::test_support::*;

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
    fn writable_may_also_be_readonly() {
        let text = format!("{MINIMAL}readonly = [\"10.0.0.1:19530\"]\n");
        let config = Config::load_from_str(&text, no_env).expect("allowed");
        assert_eq!(
            config.backends.readonly,
            vec![config.backends.writable.clone()]
        );
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
    fn backend_tls_keys_go_together_and_files_are_read() {
        let mut config = Config::load_from_str(MINIMAL, no_env).expect("valid");
        config.backend_tls.cert_file = "proxy.pem".to_string();
        assert_eq!(keys(&config.validate()), vec!["backend_tls.key_file"]);
        config.backend_tls.key_file = "proxy.key".to_string();
        config.backend_tls.server_name = "milvus.internal".to_string();
        assert_eq!(
            keys(&config.validate()),
            vec!["backend_tls.cert_file", "backend_tls.server_name"],
            "a client certificate and a server name need a CA"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let generated =
            rcgen::generate_simple_self_signed(vec!["proxy".to_string()]).expect("certificate");
        let path = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        config.backend_tls.ca_file = path("ca.pem", &generated.cert.pem());
        config.backend_tls.cert_file = path("proxy.pem", &generated.cert.pem());
        config.backend_tls.key_file = path("proxy.key", &generated.signing_key.serialize_pem());
        assert_eq!(keys(&config.validate()), Vec::<String>::new());

        config.backend_tls.server_name = "not a name".to_string();
        config.backend_tls.ca_file = path("empty.pem", "");
        let errors = config.validate();
        assert_eq!(
            keys(&errors),
            vec!["backend_tls.server_name", "backend_tls.ca_file"]
        );
        assert!(
            errors[1].message.contains("holds no PEM certificate"),
            "{}",
            errors[1]
        );
        config.backend_tls.server_name = String::new();
        config.backend_tls.ca_file = path("ca.pem", &generated.cert.pem());
        config.backend_tls.key_file = path("wrong.key", &generated.cert.pem());
        assert_eq!(keys(&config.validate()), vec!["backend_tls.cert_file"]);
    }
}
