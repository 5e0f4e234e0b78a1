//! The environment names of the Python Mishards (`WOSERVER`,
//! `SQLALCHEMY_DATABASE_URI`, `DISCOVERY_STATIC_HOSTS`/`_PORT`, `SERVER_PORT`)
//! as aliases of configuration keys, with their value conversions.

use std::net::Ipv6Addr;

use toml::Value;

use super::address::parse_host_port;
use super::settings::{ServerConfig, DEFAULT_MILVUS_PORT};
use super::source::Sections;
use super::source::{current_string, set_from_env, split_list};
use super::ConfigError;

/// The environment names of the Python Mishards (`mishards/settings.py`).
pub(super) fn apply_mishards_python_aliases(
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
    use crate::config::test_support::*;
    use crate::config::Config;

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
}
