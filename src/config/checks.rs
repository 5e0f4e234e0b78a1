//! The checks of a parsed [`Config`]: addresses, the metadata URI, limits and
//! the log level, every problem reported as a [`ConfigError`].

use std::collections::BTreeMap;

use super::address::{check_address, PortZero};
use super::byte_size::{ByteSize, MIB};
use super::{Config, ConfigError};

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
}
