//! Shard groups (`[[groups]]`) and collection placement (`[placement]`):
//! several independent Milvus clusters behind one proxy, each with its own
//! metadata database, storage, writable node and read-only nodes.
//!
//! The single-cluster form (`[meta] uri` + `[backends] writable/readonly`)
//! stays valid and means one implicit group named [`IMPLICIT_GROUP`]. The two
//! forms cannot be mixed; the other `[meta]` and `[backends]` keys (pool size,
//! timeouts, `virtual_nodes`...) apply to every group.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::address::{check_address, PortZero};
use super::Config;
use crate::meta::{MetaLocation, MetaUri};

/// The name of the one group of a single-cluster configuration.
pub const IMPLICIT_GROUP: &str = "default";

/// The longest group name.
pub const MAX_GROUP_NAME_LENGTH: usize = 64;

/// One `[[groups]]` entry: a Milvus cluster with its own metadata and storage.
/// Its `Debug` hides the password of `meta_uri`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique among the groups.
    pub name: String,
    /// The group's metadata database, in the form of `meta.uri`.
    pub meta_uri: String,
    /// `host:port` of the group's writable node.
    pub writable: String,
    /// `host:port` of each of the group's read-only nodes.
    pub readonly: Vec<String>,
}

impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig")
            .field("name", &self.name)
            .field("meta_uri", &crate::meta::redacted(&self.meta_uri))
            .field("writable", &self.writable)
            .field("readonly", &self.readonly)
            .finish()
    }
}

/// Where a new collection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementDefault {
    /// Spread over every group.
    #[default]
    Spread,
    /// In one group, chosen by a hash of the collection name.
    Pinned,
}

/// `[placement]`: how collections are placed on the groups.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Placement of the collections not named in `pinned`.
    pub default: PlacementDefault,
    /// Collection name -> the name of the one group it lives in.
    pub pinned: BTreeMap<String, String>,
}

impl Config {
    /// The shard groups: the `[[groups]]` list, or when it is empty the one
    /// implicit group [`IMPLICIT_GROUP`] made of `meta.uri`,
    /// `backends.writable` and `backends.readonly`.
    pub fn shard_groups(&self) -> Vec<GroupConfig> {
        if !self.groups.is_empty() {
            return self.groups.clone();
        }
        vec![GroupConfig {
            name: IMPLICIT_GROUP.to_string(),
            meta_uri: self.meta.uri.clone(),
            writable: self.backends.writable.clone(),
            readonly: self.backends.readonly.clone(),
        }]
    }

    /// This configuration narrowed to one group: a single-cluster
    /// configuration with `meta.uri`, `backends.writable` and
    /// `backends.readonly` from `group`, no `[[groups]]` and the default
    /// `[placement]` (so it validates as a single cluster), every other key
    /// unchanged. Existing single-cluster code can then run once per group.
    pub fn for_group(&self, group: &GroupConfig) -> Config {
        let mut narrowed = self.clone();
        narrowed.meta.uri = group.meta_uri.clone();
        narrowed.backends.writable = group.writable.clone();
        narrowed.backends.readonly = group.readonly.clone();
        narrowed.groups = Vec::new();
        narrowed.placement = PlacementConfig::default();
        narrowed
    }
}

/// With `[[groups]]`: the single-cluster keys must be unset.
pub(super) fn check_not_mixed(config: &Config, report: &mut impl FnMut(&str, String)) {
    let both = |key: &str| {
        format!(
            "{key} is set and so is [[groups]]: use either [[groups]] (each with its own \
             meta_uri, writable, readonly) or [meta] uri + [backends] writable/readonly, not both"
        )
    };
    if !config.meta.uri.trim().is_empty() {
        report("meta.uri", both("meta.uri"));
    }
    if !config.backends.writable.trim().is_empty() {
        report("backends.writable", both("backends.writable"));
    }
    if !config.backends.readonly.is_empty() {
        report("backends.readonly", both("backends.readonly"));
    }
    if config.discovery.mode != super::DiscoveryMode::Static {
        report(
            "discovery.mode",
            "discovery fills the single-cluster read-only list and is not served over \
             [[groups]]: list each group's readonly nodes (reloads apply them live)"
                .to_string(),
        );
    }
}

fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("required: a name matching ^[A-Za-z0-9_-]{1,64}$".to_string());
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_chars || name.len() > MAX_GROUP_NAME_LENGTH {
        return Err(format!(
            "must match ^[A-Za-z0-9_-]{{1,{MAX_GROUP_NAME_LENGTH}}}$, got {name:?}"
        ));
    }
    Ok(())
}

/// What makes two metadata URIs the same database.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Database {
    MySql {
        host: String,
        port: u16,
        database: String,
    },
    Sqlite {
        path: String,
    },
}

fn database_of(location: MetaLocation) -> Option<Database> {
    match location {
        MetaLocation::MySql {
            host,
            port,
            database,
            ..
        } => Some(Database::MySql {
            host: host.to_ascii_lowercase(),
            port,
            database,
        }),
        MetaLocation::Sqlite { path } => Some(Database::Sqlite { path }),
        // Every in-memory database is its own.
        MetaLocation::SqliteInMemory => None,
    }
}

/// `[[groups]]`: names, metadata URIs and nodes of each group, and that no
/// node or metadata database belongs to two groups.
pub(super) fn check_groups(groups: &[GroupConfig], report: &mut impl FnMut(&str, String)) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut databases: BTreeMap<Database, usize> = BTreeMap::new();
    let mut nodes: BTreeMap<(String, u16), usize> = BTreeMap::new();
    let label = |index: usize| {
        let name = &groups[index].name;
        format!("\"{name}\" (groups[{index}])")
    };
    for (index, group) in groups.iter().enumerate() {
        let key = |field: &str| format!("groups[{index}].{field}");

        match check_group_name(&group.name) {
            Err(message) => report(&key("name"), message),
            Ok(()) => {
                if let Some(&first) = names.get(group.name.as_str()) {
                    report(
                        &key("name"),
                        format!(
                            "group name {:?} is used twice (also groups[{first}].name)",
                            group.name
                        ),
                    );
                } else {
                    names.insert(&group.name, index);
                }
            }
        }

        if group.meta_uri.trim().is_empty() {
            report(
                &key("meta_uri"),
                "required: the group's metadata database, e.g. \
                 \"mysql://root:pass@127.0.0.1:3306/milvus_g1\""
                    .to_string(),
            );
        } else {
            match MetaUri::parse(&group.meta_uri, None) {
                Err(message) => report(&key("meta_uri"), message),
                Ok(uri) => {
                    if let Some(database) = database_of(uri.location) {
                        if let Some(&first) = databases.get(&database) {
                            report(
                                &key("meta_uri"),
                                format!(
                                    "groups {} and {} use the same metadata database; \
                                     each group needs its own metadata and storage",
                                    label(first),
                                    label(index)
                                ),
                            );
                        } else {
                            databases.insert(database, index);
                        }
                    }
                }
            }
        }

        // The group's own nodes, each once: the writable may also be read-only.
        let mut own: BTreeSet<(String, u16)> = BTreeSet::new();
        let mut addresses: Vec<(String, &str)> = Vec::new();
        if group.writable.trim().is_empty() {
            report(
                &key("writable"),
                "required: host:port of the group's writable Milvus node".to_string(),
            );
        } else {
            addresses.push((key("writable"), &group.writable));
        }
        for (position, address) in group.readonly.iter().enumerate() {
            addresses.push((format!("groups[{index}].readonly[{position}]"), address));
        }
        let mut readonly_seen: BTreeMap<(String, u16), String> = BTreeMap::new();
        for (address_key, address) in addresses {
            let identity = match check_address(address, PortZero::Rejected) {
                Err(message) => {
                    report(&address_key, message);
                    continue;
                }
                Ok((host, port)) => (host.to_ascii_lowercase(), port),
            };
            if address_key.contains(".readonly[") {
                if let Some(first) = readonly_seen.get(&identity) {
                    report(
                        &address_key,
                        format!("{address:?} is listed twice (also {first})"),
                    );
                    continue;
                }
                readonly_seen.insert(identity.clone(), address_key.clone());
            }
            if !own.insert(identity.clone()) {
                continue;
            }
            match nodes.get(&identity) {
                Some(&other) if other != index => report(
                    &address_key,
                    format!(
                        "node {address:?} is in groups {} and {}; a node belongs to one group",
                        label(other),
                        label(index)
                    ),
                ),
                Some(_) => {}
                None => {
                    nodes.insert(identity, index);
                }
            }
        }
    }
}

/// `[placement]`: pinned collections have valid names and name a configured group.
pub(super) fn check_placement(config: &Config, report: &mut impl FnMut(&str, String)) {
    let names: BTreeSet<String> = config
        .shard_groups()
        .into_iter()
        .map(|group| group.name)
        .collect();
    for (collection, group) in &config.placement.pinned {
        let key = format!("placement.pinned.{collection}");
        if let Err(error) = crate::validate::collection_name(collection) {
            report(&key, error.reason);
        }
        if !names.contains(group) {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let message = if config.groups.is_empty() {
                format!(
                    "pinned to unknown group {group:?}: without [[groups]] the only group is \
                     \"{IMPLICIT_GROUP}\""
                )
            } else {
                format!(
                    "pinned to unknown group {group:?}; the groups are {}",
                    known.join(", ")
                )
            };
            report(&key, message);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::test_support::*;

    const TWO_GROUPS: &str = r#"
[[groups]]
name = "g1"
meta_uri = "mysql://root@10.0.0.5:3306/milvus_g1"   # each group: its own metadata and storage
writable = "10.0.1.1:19530"
readonly = ["10.0.1.2:19530", "10.0.1.3:19530"]

[[groups]]
name = "g2"
meta_uri = "mysql://root@10.0.0.5:3306/milvus_g2"
writable = "10.0.2.1:19530"
readonly = ["10.0.2.2:19530"]

[placement]
default = "spread"            # new collections: "spread" over every group, or "pinned" to one group by name hash
pinned = { tenant_a = "g2" }  # optional: collections that live in one named group
"#;

    fn with_groups(edit: impl FnOnce(&mut Config)) -> Vec<ConfigError> {
        let mut config = Config::load_from_str(TWO_GROUPS, no_env).unwrap();
        edit(&mut config);
        config.validate()
    }

    use crate::config::ConfigError;

    #[test]
    fn the_contract_example_parses_into_two_groups_and_placement() {
        let config =
            Config::load_from_str(TWO_GROUPS, no_env).unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(config.groups.len(), 2);
        assert_eq!(config.shard_groups(), config.groups);
        let g1 = &config.groups[0];
        assert_eq!(g1.name, "g1");
        assert_eq!(g1.meta_uri, "mysql://root@10.0.0.5:3306/milvus_g1");
        assert_eq!(g1.writable, "10.0.1.1:19530");
        assert_eq!(g1.readonly, vec!["10.0.1.2:19530", "10.0.1.3:19530"]);
        assert_eq!(config.groups[1].name, "g2");
        assert_eq!(config.groups[1].readonly, vec!["10.0.2.2:19530"]);
        assert_eq!(config.placement.default, PlacementDefault::Spread);
        assert_eq!(
            config.placement.pinned,
            BTreeMap::from([("tenant_a".to_string(), "g2".to_string())])
        );

        let text = TWO_GROUPS.replace("default = \"spread\"", "default = \"pinned\"");
        let config = Config::load_from_str(&text, no_env).unwrap();
        assert_eq!(config.placement.default, PlacementDefault::Pinned);
    }

    #[test]
    fn the_single_cluster_form_is_one_default_group() {
        let text = format!("{MINIMAL}readonly = [\"10.0.0.2:19530\"]\n");
        let config = Config::load_from_str(&text, no_env).unwrap();
        assert!(config.groups.is_empty());
        assert_eq!(
            config.shard_groups(),
            vec![GroupConfig {
                name: "default".to_string(),
                meta_uri: "mysql://root:pass@127.0.0.1:3306/milvus".to_string(),
                writable: "10.0.0.1:19530".to_string(),
                readonly: vec!["10.0.0.2:19530".to_string()],
            }]
        );
        let text = format!("{MINIMAL}[placement]\npinned = {{ t = \"default\" }}\n");
        assert!(Config::load_from_str(&text, no_env).is_ok());
        let text = format!("{MINIMAL}[placement]\npinned = {{ t = \"g1\" }}\n");
        let errors = Config::load_from_str(&text, no_env).unwrap_err();
        assert_eq!(keys(&errors), vec!["placement.pinned.t"]);
        assert!(errors[0].message.contains("\"default\""), "{}", errors[0]);
        assert_eq!(errors[0].line, Some(7), "{errors:?}");
    }

    #[test]
    fn for_group_narrows_to_one_single_cluster_config() {
        let mut config = Config::load_from_str(TWO_GROUPS, no_env).unwrap();
        config.backends.virtual_nodes = 7;
        let narrowed = config.for_group(&config.groups[1]);
        assert_eq!(narrowed.meta.uri, "mysql://root@10.0.0.5:3306/milvus_g2");
        assert_eq!(narrowed.backends.writable, "10.0.2.1:19530");
        assert_eq!(narrowed.backends.readonly, vec!["10.0.2.2:19530"]);
        assert_eq!(narrowed.backends.virtual_nodes, 7);
        assert!(narrowed.groups.is_empty());
        assert_eq!(narrowed.validate(), Vec::new());
        assert_eq!(narrowed.shard_groups()[0].name, "default");
        assert_eq!(narrowed.shard_groups()[0].writable, "10.0.2.1:19530");
    }

    #[test]
    fn debug_hides_the_group_metadata_password() {
        let group = GroupConfig {
            meta_uri: "mysql://root:s3cretPW@db:3306/milvus".to_string(),
            ..GroupConfig::default()
        };
        let text = format!("{group:?}");
        assert!(
            !text.contains("s3cretPW") && text.contains("root:***@db"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_and_bad_names() {
        let errors = with_groups(|config| config.groups[0].name = "g2".to_string());
        assert_eq!(keys(&errors), vec!["groups[1].name"]);
        assert!(
            errors[0].message.contains("groups[0].name"),
            "{}",
            errors[0]
        );

        let errors = with_groups(|config| {
            config.groups[0].name = "bad name".to_string();
            config.groups[1].name = "x".repeat(65);
        });
        assert_eq!(
            keys(&errors),
            vec![
                "groups[0].name",
                "groups[1].name",
                "placement.pinned.tenant_a"
            ],
            "g2, which tenant_a is pinned to, is gone"
        );
        let errors = with_groups(|config| config.groups[0].name.clear());
        assert_eq!(keys(&errors), vec!["groups[0].name"]);
        assert!(with_groups(|config| config.groups[0].name = "A-z_9".to_string()).is_empty());
    }

    #[test]
    fn a_node_in_two_groups_names_both() {
        let errors = with_groups(|config| {
            config.groups[1].readonly.push("10.0.1.3:19530".to_string());
        });
        assert_eq!(keys(&errors), vec!["groups[1].readonly[1]"]);
        assert!(
            errors[0].message.contains("\"g1\"") && errors[0].message.contains("\"g2\""),
            "{}",
            errors[0]
        );
        let errors = with_groups(|config| config.groups[1].writable = "10.0.1.1:19530".into());
        assert_eq!(keys(&errors), vec!["groups[1].writable"]);
        // Inside one group: the writable may be read-only too, a read-only node once.
        let errors = with_groups(|config| {
            let group = &mut config.groups[0];
            group.readonly.push(group.writable.clone());
            group.readonly.push("10.0.1.2:19530".to_string());
        });
        assert_eq!(keys(&errors), vec!["groups[0].readonly[3]"]);
        assert!(errors[0].message.contains("listed twice"), "{}", errors[0]);
    }

    #[test]
    fn a_shared_metadata_database_names_both_groups() {
        let errors = with_groups(|config| {
            config.groups[1].meta_uri = "mysql://other:pw@10.0.0.5/milvus_g1".to_string();
        });
        assert_eq!(keys(&errors), vec!["groups[1].meta_uri"]);
        assert!(
            errors[0].message.contains("\"g1\"") && errors[0].message.contains("\"g2\""),
            "{}",
            errors[0]
        );
        let errors = with_groups(|config| {
            config.groups[0].meta_uri = "sqlite:///data/meta.sqlite".to_string();
            config.groups[1].meta_uri = "sqlite:///data/meta.sqlite".to_string();
        });
        assert_eq!(keys(&errors), vec!["groups[1].meta_uri"]);
        let errors = with_groups(|config| config.groups[0].meta_uri = "postgres://x".into());
        assert_eq!(keys(&errors), vec!["groups[0].meta_uri"]);
    }

    #[test]
    fn pinned_to_an_unknown_group() {
        let errors = with_groups(|config| {
            config
                .placement
                .pinned
                .insert("tenant_b".to_string(), "g3".to_string());
            config
                .placement
                .pinned
                .insert("9bad".to_string(), "g1".to_string());
        });
        assert_eq!(
            keys(&errors),
            vec!["placement.pinned.9bad", "placement.pinned.tenant_b"]
        );
        assert!(errors[1].message.contains("g1, g2"), "{}", errors[1]);
    }

    #[test]
    fn both_forms_at_once_are_rejected_with_their_lines() {
        let text = format!("{MINIMAL}readonly = [\"10.0.0.2:19530\"]\n{TWO_GROUPS}");
        let errors = Config::load_from_str(&text, no_env).unwrap_err();
        assert_eq!(
            keys(&errors),
            vec!["meta.uri", "backends.writable", "backends.readonly"]
        );
        assert!(errors[0].message.contains("not both"), "{}", errors[0]);
        let lines: Vec<Option<usize>> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, vec![Some(3), Some(5), Some(6)]);

        // The other [meta] and [backends] keys apply to every group.
        let text =
            format!("[meta]\nmax_connections = 2\n[backends]\nvirtual_nodes = 9\n{TWO_GROUPS}");
        let config = Config::load_from_str(&text, no_env).unwrap();
        assert_eq!(config.for_group(&config.groups[0]).meta.max_connections, 2);
    }

    #[test]
    fn discovery_is_not_served_over_groups() {
        let text = format!("[discovery]\nmode = \"kubernetes\"\n{TWO_GROUPS}");
        let errors = Config::load_from_str(&text, no_env).unwrap_err();
        // Also its own complaints (no kube feature, no label selector); ours says why.
        let ours = errors
            .iter()
            .find(|e| e.message.contains("each group's readonly"));
        assert!(
            ours.is_some_and(|e| e.key == "discovery.mode"),
            "{errors:?}"
        );
    }

    #[test]
    fn group_parse_errors_carry_the_indexed_key_and_line() {
        let text = r#"
[[groups]]
name = "g1"
meta_uri = "mysql://root@db/g1"
writable = "10.0.1.1:19530"

[[groups]]
name = "g2"
meta_uri = "mysql://root@db/g2"
writable = 19530
readonly = ["10.0.2.2:19530", "nohost"]
wirtable = "x"
"#;
        let errors = Config::load_from_str(text, no_env).unwrap_err();
        assert_eq!(
            keys(&errors),
            vec![
                "groups[1].writable",
                "groups[1].readonly[1]",
                "groups[1].wirtable"
            ],
            "{errors:?}"
        );
        let lines: Vec<Option<usize>> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, vec![Some(10), Some(11), Some(12)]);
        assert!(errors[2].message.contains("unknown field"), "{}", errors[2]);

        let text = format!("{TWO_GROUPS}spred = true\n");
        let errors = Config::load_from_str(&text, no_env).unwrap_err();
        assert_eq!(keys(&errors), vec!["placement.spred"]);
        let text = TWO_GROUPS.replace("\"spread\"", "\"everywhere\"");
        let errors = Config::load_from_str(&text, no_env).unwrap_err();
        assert_eq!(keys(&errors), vec!["placement.default"]);
        let errors = Config::load_from_str("[groups]\nname = \"g\"\n", no_env).unwrap_err();
        assert_eq!(keys(&errors), vec!["groups"], "{errors:?}");
    }

    #[test]
    fn env_overrides_a_group_and_adds_one() {
        let env = env_of(&[
            ("MISHARDS__GROUPS__0__WRITABLE", "10.0.1.9:19530"),
            ("MISHARDS__GROUPS__2__NAME", "g3"),
            (
                "MISHARDS__GROUPS__2__META_URI",
                "mysql://root@10.0.0.5/milvus_g3",
            ),
            ("MISHARDS__GROUPS__2__WRITABLE", "10.0.3.1:19530"),
            (
                "MISHARDS__GROUPS__2__READONLY",
                "10.0.3.2:19530, 10.0.3.3:19530,",
            ),
            ("MISHARDS__PLACEMENT__DEFAULT", "pinned"),
            ("MISHARDS__PLACEMENT__PINNED", "tenant_a=g3, tenant_b = g1"),
        ]);
        let config = Config::load_from_str(TWO_GROUPS, env).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(config.groups.len(), 3);
        assert_eq!(config.groups[0].writable, "10.0.1.9:19530");
        assert_eq!(config.groups[0].readonly.len(), 2, "the rest stays");
        assert_eq!(config.groups[2].name, "g3");
        assert_eq!(
            config.groups[2].readonly,
            vec!["10.0.3.2:19530", "10.0.3.3:19530"]
        );
        assert_eq!(config.placement.default, PlacementDefault::Pinned);
        assert_eq!(config.placement.pinned["tenant_a"], "g3");
        assert_eq!(config.placement.pinned["tenant_b"], "g1");

        // Groups from the environment alone, on an empty file.
        let env = env_of(&[
            ("MISHARDS__GROUPS__0__NAME", "only"),
            ("MISHARDS__GROUPS__0__META_URI", "sqlite:///m.sqlite"),
            ("MISHARDS__GROUPS__0__WRITABLE", "w:19530"),
        ]);
        let config = Config::load_from_str("", env).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(config.shard_groups()[0].name, "only");
    }

    #[test]
    fn env_errors_for_groups_name_the_variable() {
        let env = env_of(&[
            ("MISHARDS__GROUPS__3__NAME", "gap"),
            ("MISHARDS__GROUPS__1__WRITABLE", "nohost"),
        ]);
        let errors = Config::load_from_str(TWO_GROUPS, env).unwrap_err();
        assert_eq!(
            keys(&errors),
            vec!["MISHARDS__GROUPS__3__NAME", "groups[1].writable"],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("gap"), "{}", errors[0]);
        assert!(
            errors[1].message.contains("MISHARDS__GROUPS__1__WRITABLE"),
            "{}",
            errors[1]
        );
        let errors = Config::load_from_str(
            TWO_GROUPS,
            env_of(&[("MISHARDS__PLACEMENT__PINNED", "tenant_a")]),
        )
        .unwrap_err();
        assert_eq!(keys(&errors), vec!["placement.pinned"]);

        let unknown = crate::config::unknown_env_overrides([
            "MISHARDS__GROUPS__0__NAME",
            "MISHARDS__GROUPS__12__READONLY",
            "MISHARDS__PLACEMENT__DEFAULT",
            "MISHARDS__PLACEMENT__PINNED",
            "MISHARDS__GROUPS__01__NAME",
            "MISHARDS__GROUPS__0__WRITEABLE",
            "MISHARDS__GROUPS__X__NAME",
            "MISHARDS__GROUPS__0__name",
        ]);
        assert_eq!(
            keys(&unknown),
            vec![
                "MISHARDS__GROUPS__01__NAME",
                "MISHARDS__GROUPS__0__WRITEABLE",
                "MISHARDS__GROUPS__X__NAME",
                "MISHARDS__GROUPS__0__name",
            ]
        );
    }
}
