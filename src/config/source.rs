//! The TOML file as sections of keys that remember where each value came
//! from (a line of the file or an environment variable), the helpers that
//! read and set them (used by `env` and `mishards_python`, which so depend
//! on this file and not on each other), and their key-by-key
//! deserialisation so that every bad key is reported.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::{Spanned, Value};

use super::ConfigError;

/// The top-level array of tables `[[groups]]`; its entries are kept as the
/// sections `groups[0]`, `groups[1]`..., so errors read `groups[1].writable`.
pub(super) const GROUPS: &str = "groups";

pub(super) const SECTION_NAMES: [&str; 17] = [
    "server",
    "metrics",
    "http_api",
    "meta",
    "backends",
    "topology",
    "log",
    "access",
    "tls",
    "backend_tls",
    "deadlines",
    "slow_nodes",
    "admission",
    "coalesce",
    "reload",
    "discovery",
    "placement",
];

/// The section holding the `[[groups]]` entry at `index`: `groups[index]`.
pub(super) fn group_section(index: usize) -> String {
    format!("{GROUPS}[{index}]")
}

/// Whether `name` is a section made from a `[[groups]]` entry.
pub(super) fn is_group_section(name: &str) -> bool {
    name.strip_prefix(GROUPS)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|index| index.parse::<usize>().is_ok())
}

/// How many `[[groups]]` entries there are (`groups[0]`.. without a gap).
pub(super) fn group_count(sections: &Sections) -> usize {
    (0..)
        .take_while(|&index| sections.contains_key(&group_section(index)))
        .count()
}

/// The section and key an error key is about: `backends.readonly[1]` ->
/// (`backends`, `readonly`), `groups[1].readonly[0]` -> (`groups[1]`,
/// `readonly`), `placement.pinned.t` -> (`placement`, `pinned`); `None`
/// for a key without a section.
pub(super) fn origin_key(error_key: &str) -> Option<(&str, &str)> {
    let (section, rest) = if error_key.starts_with(&format!("{GROUPS}[")) {
        let end = error_key.find("].")?;
        (&error_key[..=end], &error_key[end + 2..])
    } else {
        error_key.split_once('.')?
    };
    let key = rest.split(['[', '.']).next().unwrap_or(rest);
    Some((section, key))
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    File { line: usize },
    Env { variable: String },
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) origin: Origin,
}

#[derive(Debug, Default)]
pub(super) struct Section {
    /// Line of the section header, when it came from the file.
    pub(super) line: Option<usize>,
    pub(super) entries: BTreeMap<String, Entry>,
}

pub(super) type Sections = BTreeMap<String, Section>;

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(super) fn attach_origin(error: ConfigError, origin: Option<&Origin>) -> ConfigError {
    match origin {
        Some(Origin::File { line }) => error.at_line(Some(*line)),
        Some(Origin::Env { variable }) => ConfigError {
            message: format!("{} (set by environment variable {variable})", error.message),
            ..error
        },
        None => error,
    }
}

type RawTable = BTreeMap<String, Spanned<Value>>;

/// The file's top level: `[section]` tables, and the `[[groups]]` array.
struct RawFile(Vec<(String, Spanned<RawTable>)>);

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopLevel;
        impl<'de> Visitor<'de> for TopLevel {
            type Value = RawFile;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[section] tables and [[groups]] entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFile, A::Error> {
                let mut sections = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if name == GROUPS {
                        let groups: Vec<Spanned<RawTable>> = map.next_value()?;
                        sections.extend(
                            groups
                                .into_iter()
                                .enumerate()
                                .map(|(index, table)| (group_section(index), table)),
                        );
                    } else {
                        sections.push((name, map.next_value()?));
                    }
                }
                Ok(RawFile(sections))
            }
        }
        deserializer.deserialize_map(TopLevel)
    }
}

pub(super) fn parse_sections(text: &str) -> Result<Sections, ConfigError> {
    let RawFile(raw) = toml::from_str(text).map_err(|err| {
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
/// (or `[[groups]]`, as `groups[N]`) header before `line` and the `key =` on that line.
fn key_near_line(text: &str, line: usize) -> String {
    let mut section = None;
    let mut key = None;
    let mut groups = 0;
    for (number, content) in text.lines().enumerate().take(line) {
        let content = content.trim();
        if content.starts_with('[') {
            let name = content.trim_matches(|c| c == '[' || c == ']').trim();
            if content.starts_with("[[") && name == GROUPS {
                section = Some(group_section(groups));
                groups += 1;
            } else {
                section = Some(name.to_string());
            }
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
pub(super) struct SectionParser<'a> {
    pub(super) sections: &'a Sections,
    pub(super) errors: &'a mut Vec<ConfigError>,
    /// Dotted keys whose value failed to parse (their default is used instead).
    pub(super) rejected: &'a mut BTreeSet<String>,
}

impl SectionParser<'_> {
    pub(super) fn parse<T: DeserializeOwned + Default>(&mut self, name: &str) -> T {
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

/// Sets `section.key` to `value`, as the environment variable `variable` said.
pub(super) fn set_from_env(
    sections: &mut Sections,
    section: &str,
    key: &str,
    value: Value,
    variable: &str,
) {
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

/// The string value of `section.key`, if it is set and a string.
pub(super) fn current_string(sections: &Sections, section: &str, key: &str) -> Option<String> {
    match &sections.get(section)?.entries.get(key)?.value {
        Value::String(text) => Some(text.clone()),
        _ => None,
    }
}

/// The non-empty, trimmed items of a comma list.
pub(super) fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{unknown_env_overrides, Config};

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
}
