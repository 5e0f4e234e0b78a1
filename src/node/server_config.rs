//! The node's run-time configuration as Milvus 1.1 exposes it through
//! `Cmd("get_config parent.child")` / `Cmd("set_config parent.child value")`
//! (`CmdRequest` -> `Config::ProcessConfigCli`): the keys and defaults of the
//! 1.1 `server_config.yaml`, each with the check Milvus' `Config::Check*`
//! makes before storing a value. Pure: parsing the command, the table, the
//! checks. What a change does to the running node (the auto-flush period,
//! the cache capacity) is up to the caller.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use regex::Regex;

use crate::status::{MilvusError, MilvusResult};
use crate::wire::ErrorCode;

/// A config command of `Cmd`.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigCommand {
    /// `get_config *`: every key as JSON.
    GetAll,
    /// `get_config parent.child`.
    Get { parent: String, child: String },
    /// `set_config parent.child value`.
    Set {
        parent: String,
        child: String,
        value: String,
    },
}

/// How a value is checked before `set_config` stores it.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// `ValidateStringIsBool`: true/false/on/off/yes/no/1/0 (any case) or empty.
    Bool,
    /// `ValidateStringIsNumber`: digits only, fits an i64.
    Natural,
    /// `parse_bytes`: a number with an optional b/k/m/g(b) suffix, `> 0`
    /// (or `>= 0` when `allow_zero`), within `[min, max]`.
    Bytes {
        allow_zero: bool,
        min: i64,
        max: i64,
    },
    /// A natural number in `[min, max]`.
    NaturalIn {
        min: i64,
        max: i64,
    },
    /// A port strictly between 1024 and 65535.
    Port,
    Ipv4,
    /// `UTC+8`, `UTC-05:30`...
    Timezone,
    MetaUri,
    OneOf(&'static [&'static str]),
    NonEmpty,
    /// Empty, `*`, or distinct comma-separated collection names.
    CollectionList,
    /// A key Milvus lists but whose `set_config` it refuses ("Config node invalid").
    ReadOnly,
}

/// One key of `server_config.yaml` (Milvus 1.1 `core/conf/demo`), its default and its rule.
struct Key {
    parent: &'static str,
    child: &'static str,
    default: &'static str,
    rule: Rule,
}

const fn key(parent: &'static str, child: &'static str, default: &'static str, rule: Rule) -> Key {
    Key {
        parent,
        child,
        default,
        rule,
    }
}

const GIB: i64 = 1 << 30;

/// The keys of Milvus 1.1's demo `server_config.yaml` (the GPU/FPGA sections of
/// a GPU build are left out: this is a CPU node). `version` is not a
/// `parent.child` key and so is not reachable through `get_config` there either.
const KEYS: &[Key] = &[
    key("cluster", "enable", "false", Rule::Bool),
    key("cluster", "role", "rw", Rule::OneOf(&["rw", "ro"])),
    key("general", "timezone", "UTC+8", Rule::Timezone),
    key("general", "meta_uri", "sqlite://:@:/", Rule::MetaUri),
    key("network", "bind.address", "0.0.0.0", Rule::Ipv4),
    key("network", "bind.port", "19530", Rule::Port),
    key("network", "http.enable", "true", Rule::ReadOnly),
    key("network", "http.port", "19121", Rule::Port),
    key("storage", "path", "/var/lib/milvus", Rule::NonEmpty),
    key("storage", "auto_flush_interval", "1", Rule::Natural),
    key("wal", "enable", "true", Rule::Bool),
    key("wal", "recovery_error_ignore", "false", Rule::Bool),
    key(
        "wal",
        "buffer_size",
        "256MB",
        Rule::Bytes {
            allow_zero: true,
            min: 0,
            max: i64::MAX,
        },
    ),
    key("wal", "path", "/var/lib/milvus/wal", Rule::NonEmpty),
    key(
        "cache",
        "cache_size",
        "4GB",
        Rule::Bytes {
            allow_zero: false,
            min: 1,
            max: i64::MAX,
        },
    ),
    key(
        "cache",
        "insert_buffer_size",
        "1GB",
        Rule::Bytes {
            allow_zero: false,
            min: 1,
            max: i64::MAX,
        },
    ),
    key("cache", "preload_collection", "", Rule::CollectionList),
    key(
        "logs",
        "level",
        "debug",
        Rule::OneOf(&["debug", "info", "warning", "error", "fatal"]),
    ),
    key("logs", "trace.enable", "true", Rule::Bool),
    key("logs", "path", "/var/lib/milvus/logs", Rule::NonEmpty),
    key(
        "logs",
        "max_log_file_size",
        "1024MB",
        Rule::Bytes {
            allow_zero: true,
            min: 512 << 20,
            max: 4 * GIB,
        },
    ),
    key(
        "logs",
        "log_rotate_num",
        "0",
        Rule::NaturalIn { min: 0, max: 1024 },
    ),
    key("logs", "log_to_stdout", "false", Rule::Bool),
    key("logs", "log_to_file", "true", Rule::Bool),
    key("metric", "enable", "false", Rule::Bool),
    key("metric", "address", "127.0.0.1", Rule::Ipv4),
    key("metric", "port", "9091", Rule::Port),
];

fn unexpected(reason: String) -> MilvusError {
    MilvusError::new(ErrorCode::UnexpectedError, reason)
}

fn invalid(reason: String) -> MilvusError {
    MilvusError::new(ErrorCode::IllegalArgument, reason)
}

/// Reads a `Cmd` text as a config command: `None` when it is not one (Milvus
/// looks at the first 10 characters), else the command or Milvus' error
/// (code 1, "Invalid command: ..."). Tokens are split on single spaces and
/// `parent.child.more` keeps `child.more` whole (`network.bind.address`).
pub fn parse_command(cmd: &str) -> Option<MilvusResult<ConfigCommand>> {
    if !(cmd.starts_with("get_config") || cmd.starts_with("set_config")) {
        return None;
    }
    let bad = || unexpected(format!("Invalid command: {cmd}"));
    let tokens: Vec<&str> = cmd.split(' ').collect();
    let split_key = |text: &str| -> MilvusResult<(String, String)> {
        match text.split_once('.') {
            Some((parent, child)) => Ok((parent.to_string(), child.to_string())),
            None => Err(bad()),
        }
    };
    Some(match tokens.as_slice() {
        ["get_config", "*"] => Ok(ConfigCommand::GetAll),
        ["get_config", key] => {
            split_key(key).map(|(parent, child)| ConfigCommand::Get { parent, child })
        }
        ["set_config", key, value] => split_key(key).map(|(parent, child)| ConfigCommand::Set {
            parent,
            child,
            value: value.to_string(),
        }),
        _ => Err(bad()),
    })
}

/// The stored values, keyed `parent` -> `child`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    values: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for ServerConfig {
    /// Milvus 1.1's demo `server_config.yaml`.
    fn default() -> Self {
        let mut values: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for k in KEYS {
            values
                .entry(k.parent.to_string())
                .or_default()
                .insert(k.child.to_string(), k.default.to_string());
        }
        Self { values }
    }
}

impl ServerConfig {
    fn rule(parent: &str, child: &str) -> Option<Rule> {
        KEYS.iter()
            .find(|k| k.parent == parent && k.child == child)
            .map(|k| k.rule)
    }

    fn node_invalid(parent: &str, child: &str) -> MilvusError {
        unexpected(format!("Config node invalid: {parent}.{child}"))
    }

    /// `get_config parent.child`: the stored text.
    pub fn get(&self, parent: &str, child: &str) -> MilvusResult<String> {
        self.values
            .get(parent)
            .and_then(|m| m.get(child))
            .cloned()
            .ok_or_else(|| Self::node_invalid(parent, child))
    }

    /// `get_config *`: `{"parent": {"child": "value"}}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.values).unwrap_or_default()
    }

    /// `set_config parent.child value`: checks the value as Milvus does and stores it.
    pub fn set(&mut self, parent: &str, child: &str, value: &str) -> MilvusResult<()> {
        let rule = Self::rule(parent, child).ok_or_else(|| Self::node_invalid(parent, child))?;
        check(rule, parent, child, value)?;
        self.seed(parent, child, value);
        Ok(())
    }

    /// Stores a value the node was started with, unchecked (e.g. its real
    /// listen address, data directory or flush period).
    pub fn seed(&mut self, parent: &str, child: &str, value: &str) {
        self.values
            .entry(parent.to_string())
            .or_default()
            .insert(child.to_string(), value.to_string());
    }
}

/// Milvus `parse_bytes`: digits, or digits with a b/k/m/g suffix (optionally
/// followed by b/B). `Err` with Milvus' reason when the unit is unknown.
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let no_unit = || {
        format!(
            "The specified value for memory ({text}) should specify the units.The postfix should be one of the `b` `k` `m` `g` characters"
        )
    };
    if text.is_empty() {
        return Ok(0);
    }
    let mut s = text;
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= 2
        && chars[chars.len() - 2].is_ascii_alphabetic()
        && matches!(chars[chars.len() - 1], 'b' | 'B')
    {
        s = &s[..s.len() - 1];
    }
    let Some(last) = s.chars().last() else {
        return Err(no_unit());
    };
    let (digits, unit) = if last.is_ascii_digit() {
        (s, 1i64)
    } else {
        let unit = match last.to_ascii_lowercase() {
            'b' => 1,
            'k' => 1 << 10,
            'm' => 1 << 20,
            'g' => 1 << 30,
            _ => return Err(no_unit()),
        };
        (&s[..s.len() - last.len_utf8()], unit)
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| "Unknown error happened on parse bytes.".to_string())
}

fn is_natural(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.parse::<i64>().is_ok()
}

fn is_bool(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "on" | "yes" | "1" | "false" | "off" | "no" | "0" | ""
    )
}

fn timezone_offset() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^[+-](([0-9]|0[0-9]|1[0-9]|2[0-3])|(([0-9]|0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]))$",
        )
        .unwrap_or_else(|_| unreachable!("the timezone pattern is a valid regex"))
    })
}

/// The check of one key (Milvus `Config::Check*`, same codes and reasons).
fn check(rule: Rule, parent: &str, child: &str, value: &str) -> MilvusResult<()> {
    let key = format!("{parent}.{child}");
    match rule {
        Rule::ReadOnly => Err(ServerConfig::node_invalid(parent, child)),
        Rule::Bool if is_bool(value) => Ok(()),
        Rule::Bool => Err(invalid(format!(
            "Invalid {key}: {value}. Possible reason: {key} is not a boolean."
        ))),
        Rule::Natural if is_natural(value) => Ok(()),
        Rule::Natural => Err(invalid(format!(
            "Invalid {key}: {value}. Possible reason: {key} is not a natural number."
        ))),
        Rule::NaturalIn { min, max } => match value.parse::<i64>() {
            Ok(n) if is_natural(value) && (min..=max).contains(&n) => Ok(()),
            _ => Err(invalid(format!(
                "Invalid {key}: {value}. Possible reason: {key} is not in range [{min}, {max}]."
            ))),
        },
        Rule::Bytes {
            allow_zero,
            min,
            max,
        } => {
            let n = parse_bytes(value).map_err(invalid)?;
            if n < 0 || (n == 0 && !allow_zero) {
                return Err(invalid(format!(
                    "Invalid {key}: {value}. Possible reason: {key} is not a positive integer."
                )));
            }
            if !(min..=max).contains(&n) {
                return Err(invalid(format!(
                    "Invalid {key}: {value}. Possible reason: {key} is not in range [{min}, {max}]."
                )));
            }
            Ok(())
        }
        Rule::Port => match value.parse::<i32>() {
            Ok(p) if is_natural(value) && p > 1024 && p < 65535 => Ok(()),
            _ => Err(invalid(format!(
                "Invalid {key}: {value}. Possible reason: {key} is not in range (1024, 65535)."
            ))),
        },
        Rule::Ipv4 if value.parse::<Ipv4Addr>().is_ok() => Ok(()),
        Rule::Ipv4 => Err(invalid(format!(
            "Invalid IP address: {value}. Possible reason: {key} is invalid."
        ))),
        Rule::Timezone => {
            let Some(offset) = value.strip_prefix("UTC").filter(|o| !o.is_empty()) else {
                return Err(invalid(format!("Invalid {key}: {value}")));
            };
            if timezone_offset().is_match(offset) {
                Ok(())
            } else {
                // Milvus answers this one case with SERVER_UNEXPECTED_ERROR.
                Err(unexpected(format!("Invalid {key}: {value}")))
            }
        }
        Rule::MetaUri => {
            if value.starts_with("sqlite://") || value.starts_with("mysql://") {
                Ok(())
            } else {
                Err(invalid(format!(
                    "Invalid meta uri: {value}. Possible reason: {key} is invalid. The correct format should be like sqlite://:@:/ or mysql://root:123456@127.0.0.1:3306/milvus."
                )))
            }
        }
        Rule::OneOf(allowed) if allowed.contains(&value) => Ok(()),
        Rule::OneOf(allowed) => Err(invalid(format!(
            "Invalid {key}: {value}. {key} is not one of {}.",
            allowed.join(", ")
        ))),
        Rule::NonEmpty if !value.is_empty() => Ok(()),
        Rule::NonEmpty => Err(invalid(format!("{key} is empty."))),
        Rule::CollectionList => {
            if value.is_empty() || value == "*" {
                return Ok(());
            }
            let names: Vec<&str> = value.split(',').collect();
            for name in &names {
                crate::validate::collection_name(name)
                    .map_err(|_| invalid(format!("Invalid collection name: {name}")))?;
            }
            let distinct: std::collections::HashSet<&&str> = names.iter().collect();
            if distinct.len() != names.len() {
                return Err(invalid(format!(
                    "Invalid preload tables. Possible reason: {key} contains duplicate collection."
                )));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: MilvusResult<()>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn parses_config_commands_like_milvus() {
        assert_eq!(parse_command("version"), None);
        assert_eq!(parse_command(" get_config a.b"), None);
        assert_eq!(
            parse_command("get_config storage.auto_flush_interval"),
            Some(Ok(ConfigCommand::Get {
                parent: "storage".into(),
                child: "auto_flush_interval".into()
            }))
        );
        assert_eq!(
            parse_command("get_config network.bind.address"),
            Some(Ok(ConfigCommand::Get {
                parent: "network".into(),
                child: "bind.address".into()
            }))
        );
        assert_eq!(
            parse_command("get_config *"),
            Some(Ok(ConfigCommand::GetAll))
        );
        assert_eq!(
            parse_command("set_config cache.cache_size 2GB"),
            Some(Ok(ConfigCommand::Set {
                parent: "cache".into(),
                child: "cache_size".into(),
                value: "2GB".into()
            }))
        );
        for bad in [
            "get_config",
            "get_config storage",
            "get_config a.b c",
            "get_config  a.b",
            "set_config a.b",
            "set_config a 1",
            "set_config a.b 1 2",
            "get_configs a.b",
        ] {
            let err = parse_command(bad).unwrap().unwrap_err();
            assert_eq!(err.code, ErrorCode::UnexpectedError, "{bad}");
            assert_eq!(err.reason, format!("Invalid command: {bad}"));
        }
    }

    #[test]
    fn defaults_are_milvus_1_1_server_config() {
        let c = ServerConfig::default();
        assert_eq!(c.get("storage", "auto_flush_interval").unwrap(), "1");
        assert_eq!(c.get("cache", "cache_size").unwrap(), "4GB");
        assert_eq!(c.get("network", "bind.port").unwrap(), "19530");
        assert_eq!(c.get("cluster", "role").unwrap(), "rw");
        let err = c.get("storage", "nope").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnexpectedError);
        assert_eq!(err.reason, "Config node invalid: storage.nope");
        let all: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(all["cache"]["insert_buffer_size"], "1GB");
    }

    #[test]
    fn set_checks_each_key_as_milvus() {
        let mut c = ServerConfig::default();
        c.set("storage", "auto_flush_interval", "5").unwrap();
        assert_eq!(c.get("storage", "auto_flush_interval").unwrap(), "5");
        c.set("storage", "auto_flush_interval", "0").unwrap();
        for bad in ["-1", "1.5", "x", ""] {
            assert_eq!(
                code(c.set("storage", "auto_flush_interval", bad)),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
        assert_eq!(c.get("storage", "auto_flush_interval").unwrap(), "0");
        for ok in ["2GB", "2g", "1024", "512MB", "1k"] {
            c.set("cache", "cache_size", ok).unwrap();
        }
        for bad in ["0", "2TB", "abc", "-5"] {
            assert_eq!(
                code(c.set("cache", "cache_size", bad)),
                ErrorCode::IllegalArgument,
                "{bad}"
            );
        }
        assert_eq!(c.get("cache", "cache_size").unwrap(), "1k");
        c.set("cluster", "role", "ro").unwrap();
        assert_eq!(
            code(c.set("cluster", "role", "rx")),
            ErrorCode::IllegalArgument
        );
        c.set("logs", "level", "info").unwrap();
        assert_eq!(
            code(c.set("logs", "level", "trace")),
            ErrorCode::IllegalArgument
        );
        c.set("network", "bind.port", "19531").unwrap();
        for bad in ["1024", "65535", "80", "port"] {
            assert_eq!(
                code(c.set("network", "bind.port", bad)),
                ErrorCode::IllegalArgument
            );
        }
        c.set("general", "timezone", "UTC-05:30").unwrap();
        assert_eq!(
            code(c.set("general", "timezone", "UTC")),
            ErrorCode::IllegalArgument
        );
        assert_eq!(
            code(c.set("general", "timezone", "UTC+25")),
            ErrorCode::UnexpectedError
        );
        c.set("metric", "address", "10.0.0.1").unwrap();
        assert_eq!(
            code(c.set("metric", "address", "10.0.0")),
            ErrorCode::IllegalArgument
        );
        c.set("logs", "max_log_file_size", "1GB").unwrap();
        assert_eq!(
            code(c.set("logs", "max_log_file_size", "1MB")),
            ErrorCode::IllegalArgument
        );
        c.set("cache", "preload_collection", "a,b").unwrap();
        assert_eq!(
            code(c.set("cache", "preload_collection", "a,a")),
            ErrorCode::IllegalArgument
        );
        assert_eq!(
            code(c.set("cache", "preload_collection", "1a")),
            ErrorCode::IllegalArgument
        );
        // Listed but not settable, and unknown keys: "Config node invalid", code 1.
        let err = c.set("network", "http.enable", "false").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnexpectedError);
        assert_eq!(err.reason, "Config node invalid: network.http.enable");
        assert_eq!(
            code(c.set("engine_config", "x", "1")),
            ErrorCode::UnexpectedError
        );
    }

    #[test]
    fn parse_bytes_follows_milvus() {
        assert_eq!(parse_bytes("4GB"), Ok(4 << 30));
        assert_eq!(parse_bytes("4gb"), Ok(4 << 30));
        assert_eq!(parse_bytes("4g"), Ok(4 << 30));
        assert_eq!(parse_bytes("256MB"), Ok(256 << 20));
        assert_eq!(parse_bytes("3k"), Ok(3 << 10));
        assert_eq!(parse_bytes("12"), Ok(12));
        assert_eq!(parse_bytes("12b"), Ok(12));
        assert_eq!(parse_bytes(""), Ok(0));
        assert!(parse_bytes("4TB")
            .unwrap_err()
            .contains("should specify the units"));
        assert!(parse_bytes("GB").is_err());
        assert!(parse_bytes("99999999999g").is_err());
    }
}
