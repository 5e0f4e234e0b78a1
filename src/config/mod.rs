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
//!
//! `[[groups]]` (several shard groups, each with its own `meta_uri`, `writable`
//! and `readonly`) replaces `[meta] uri` + `[backends] writable/readonly`;
//! without it the single cluster is one implicit group named "default"
//! ([`Config::shard_groups`], [`Config::for_group`]). `[placement]` says
//! which group new collections go to.
//!
//! Layout: `settings` (the typed sections and defaults), `groups` (shard
//! groups and placement, with their checks), `source` (step 1),
//! `mishards_python` and `env` (step 2), `checks` (step 4), with `byte_size`
//! and `address` for the value types; this file ties the steps together.

mod address;
mod byte_size;
mod checks;
mod coalesce;
mod env;
mod groups;
mod mishards_python;
mod operations;
mod resilience;
mod settings;
mod source;
#[cfg(test)]
mod test_support;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

pub use address::parse_host_port;
pub use byte_size::{parse_byte_size, ByteSize};
pub use checks::{MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE};
pub use coalesce::CoalesceConfig;
pub use env::{env_variable_name, group_env_variable_name, unknown_env_overrides, ENV_PREFIX};
pub use groups::{
    GroupConfig, PlacementConfig, PlacementDefault, IMPLICIT_GROUP, MAX_GROUP_NAME_LENGTH,
};
pub use mishards_python::{sqlalchemy_to_meta_uri, woserver_to_address};
pub use operations::{DiscoveryConfig, DiscoveryMode, ReloadConfig};
pub use resilience::{AdmissionConfig, DeadlinesConfig, SlowNodesConfig};
pub use settings::{
    AccessConfig, BackendTlsConfig, BackendsConfig, Config, HttpApiConfig, LogConfig, LogFormat,
    MetaConfig, MetricsConfig, ServerConfig, TlsConfig, TopologyConfig, DEFAULT_HTTP_API_PORT,
    DEFAULT_MILVUS_PORT,
};

use env::apply_env_overrides;
use source::{
    attach_origin, group_count, group_section, is_group_section, origin_key, parse_sections,
    SectionParser, SECTION_NAMES,
};

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
            if !SECTION_NAMES.contains(&name.as_str()) && !is_group_section(name) {
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
            http_api: parts.parse("http_api"),
            meta: parts.parse("meta"),
            backends: parts.parse("backends"),
            topology: parts.parse("topology"),
            log: parts.parse("log"),
            access: parts.parse("access"),
            tls: parts.parse("tls"),
            backend_tls: parts.parse("backend_tls"),
            deadlines: parts.parse("deadlines"),
            slow_nodes: parts.parse("slow_nodes"),
            admission: parts.parse("admission"),
            coalesce: parts.parse("coalesce"),
            reload: parts.parse("reload"),
            discovery: parts.parse("discovery"),
            groups: (0..group_count(&sections))
                .map(|index| parts.parse(&group_section(index)))
                .collect(),
            placement: parts.parse("placement"),
        };

        for error in config.validate() {
            // A value that failed to parse was replaced by its default; do not
            // report the default as a second problem.
            let origin = match origin_key(&error.key) {
                Some((section, key)) => {
                    if rejected.contains(&format!("{section}.{key}")) {
                        continue;
                    }
                    sections
                        .get(section)
                        .and_then(|section| section.entries.get(key))
                        .map(|entry| &entry.origin)
                }
                None => None,
            };
            errors.push(attach_origin(error, origin));
        }

        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
            Err(errors)
        }
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::byte_size::MIB;
    use crate::config::test_support::*;
    use crate::meta::{MetaLocation, MetaUri};

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
            MetaUri::parse(&config.meta.uri, None).map(|uri| uri.location),
            Ok(MetaLocation::Sqlite {
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
    fn display_is_key_then_message() {
        let error = ConfigError::new("meta.uri", "required");
        assert_eq!(error.to_string(), "meta.uri: required");
        assert_eq!(
            error.at_line(Some(7)).to_string(),
            "meta.uri: required (line 7)"
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
