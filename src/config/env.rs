//! Environment overrides `MISHARDS__<SECTION>__<KEY>` and
//! `MISHARDS__GROUPS__<INDEX>__<KEY>`, applied on top of the file after the
//! Mishards (Python) aliases, and the check for unknown ones.

use std::collections::BTreeSet;

use toml::Value;

use super::mishards_python::apply_mishards_python_aliases;
use super::source::{group_count, group_section, set_from_env, split_list, Sections};
use super::{Config, ConfigError};

/// The prefix of the environment overrides: `MISHARDS__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "MISHARDS__";

/// The keys of a `[[groups]]` entry that `MISHARDS__GROUPS__<INDEX>__<KEY>` sets.
pub(super) const GROUP_KEYS: [&str; 4] = ["name", "meta_uri", "writable", "readonly"];

/// `MISHARDS__GROUPS__<INDEX>__<KEY>` is read for the indexes below this.
pub(super) const MAX_ENV_GROUPS: usize = 256;

/// `MISHARDS__GROUPS__<INDEX>__<KEY>` for the `[[groups]]` entry at `index`
/// (0-based) and one of its keys.
pub fn group_env_variable_name(index: usize, key: &str) -> String {
    format!("{ENV_PREFIX}GROUPS__{index}__{}", key.to_ascii_uppercase())
}

/// Whether `name` is `MISHARDS__GROUPS__<INDEX>__<KEY>` with a known key and
/// an index written without leading zeros, below [`MAX_ENV_GROUPS`].
fn is_group_variable(name: &str) -> bool {
    let Some((index, key)) = name
        .strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.strip_prefix("GROUPS__"))
        .and_then(|rest| rest.split_once("__"))
    else {
        return false;
    };
    let canonical = index == "0" || (!index.starts_with('0') && !index.is_empty());
    canonical
        && index.chars().all(|c| c.is_ascii_digit())
        && index
            .parse::<usize>()
            .is_ok_and(|index| index < MAX_ENV_GROUPS)
        && key == key.to_ascii_uppercase()
        && GROUP_KEYS.contains(&key.to_ascii_lowercase().as_str())
}

/// Every known `(section, key)` with its default value, which gives the type
/// an environment string is converted to.
pub(super) fn known_keys() -> Vec<(String, String, Value)> {
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
        .filter(|name| {
            name.starts_with(ENV_PREFIX) && !known.contains(*name) && !is_group_variable(name)
        })
        .map(|name| {
            ConfigError::new(
                name,
                format!(
                    "unknown environment override; expected MISHARDS__<SECTION>__<KEY> \
                     naming a key of config/mishards.toml, or MISHARDS__GROUPS__<INDEX>__<KEY> \
                     with INDEX 0..{MAX_ENV_GROUPS} and KEY one of {}",
                    GROUP_KEYS.map(str::to_ascii_uppercase).join(", ")
                ),
            )
        })
        .collect()
}

pub(super) fn apply_env_overrides(
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
            // A map of strings (`placement.pinned`): `key=value,key=value`.
            Value::Table(_) => match parse_pairs(raw) {
                Ok(table) => Value::Table(table),
                Err(item) => {
                    errors.push(ConfigError::new(
                        format!("{section}.{key}"),
                        format!("{variable}: expected key=value,key=value..., got {item:?}"),
                    ));
                    continue;
                }
            },
            _ => Value::String(raw.to_string()),
        };
        set_from_env(sections, &section, &key, value, &variable);
    }
    apply_group_overrides(sections, env, errors);
}

/// `k=v,k=v` as a table of strings, or the first item without a `=`.
fn parse_pairs(raw: &str) -> Result<toml::Table, String> {
    split_list(raw)
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((
                key.trim().to_string(),
                Value::String(value.trim().to_string()),
            )),
            _ => Err(item.to_string()),
        })
        .collect()
}

/// `MISHARDS__GROUPS__<INDEX>__<KEY>`: sets a key of the file's entry at
/// INDEX, or adds the entry right after the last one; an index past that
/// would leave a gap and is an error naming the variable.
fn apply_group_overrides(
    sections: &mut Sections,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    let mut count = group_count(sections);
    for index in 0..MAX_ENV_GROUPS {
        let set: Vec<(&str, String, String)> = GROUP_KEYS
            .iter()
            .filter_map(|&key| {
                let variable = group_env_variable_name(index, key);
                env(&variable).map(|raw| (key, variable, raw))
            })
            .collect();
        if set.is_empty() {
            continue;
        }
        if index > count {
            for (_, variable, _) in set {
                errors.push(ConfigError::new(
                    variable,
                    format!(
                        "index {index} would leave a gap in [[groups]]: indexes are 0-based \
                         and there are {count} groups, so a new group is index {count}"
                    ),
                ));
            }
            continue;
        }
        let section = group_section(index);
        for (key, variable, raw) in set {
            let raw = raw.trim();
            let value = if key == "readonly" {
                Value::Array(
                    split_list(raw)
                        .map(|item| Value::String(item.to_string()))
                        .collect(),
                )
            } else {
                Value::String(raw.to_string())
            };
            set_from_env(sections, &section, key, value, &variable);
        }
        if index == count {
            count += 1;
        }
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::byte_size::MIB;
    use crate::config::source::SECTION_NAMES;
    use crate::config::test_support::*;
    use crate::config::{ByteSize, LogFormat};

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
}
