//! Where a collection lives: spread over every group (its rows hashed by id
//! over them, see `owner`), or pinned wholly to one group (every call goes
//! there, with no cross-group work). `[placement]` decides it by name, so
//! every proxy replica agrees without asking anyone.

use std::collections::BTreeMap;

use super::{name_hash, rendezvous};

/// Where collections not named in `pinned` live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultHome {
    /// Over every group.
    Spread,
    /// In one group, chosen by rendezvous hashing of the collection name.
    PinnedByName,
}

/// A collection's group set, as indices into the configured groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// Every group; with one group configured, that group.
    Spread,
    /// The one group at this index.
    Pinned(usize),
}

/// The placement rules of `[placement]` over the configured group names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub groups: Vec<String>,
    pub default: DefaultHome,
    /// Collection name -> group name.
    pub pinned: BTreeMap<String, String>,
}

impl Placement {
    /// Where `collection` lives. With one group, everything lives there
    /// (`Pinned(0)`): the single-cluster path, unchanged.
    pub fn home_of(&self, collection: &str) -> Home {
        if self.groups.len() <= 1 {
            return Home::Pinned(0);
        }
        if let Some(group) = self.pinned.get(collection) {
            if let Some(i) = self.groups.iter().position(|g| g == group) {
                return Home::Pinned(i);
            }
        }
        match self.default {
            DefaultHome::Spread => Home::Spread,
            DefaultHome::PinnedByName => {
                Home::Pinned(rendezvous(name_hash(collection), &self.groups).unwrap_or(0))
            }
        }
    }

    /// The names of the groups `collection` lives in, in configuration order.
    pub fn group_names_of(&self, collection: &str) -> Vec<&str> {
        match self.home_of(collection) {
            Home::Spread => self.groups.iter().map(String::as_str).collect(),
            Home::Pinned(i) => self.groups.get(i).map(String::as_str).into_iter().collect(),
        }
    }
}

/// A collection whose group set a new placement would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub collection: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// The existing collections whose group set differs between `old` and
/// `new`: a reload that changes them would leave their rows where the new
/// rules no longer look (or hash ids over different groups), so it is refused.
pub fn moved_collections<'a>(
    existing: impl IntoIterator<Item = &'a str>,
    old: &Placement,
    new: &Placement,
) -> Vec<Moved> {
    let sorted = |mut v: Vec<&str>| {
        v.sort_unstable();
        v.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    existing
        .into_iter()
        .filter_map(|name| {
            let from = sorted(old.group_names_of(name));
            let to = sorted(new.group_names_of(name));
            (from != to).then(|| Moved {
                collection: name.to_string(),
                from,
                to,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(groups: &[&str], default: DefaultHome, pinned: &[(&str, &str)]) -> Placement {
        Placement {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            default,
            pinned: pinned
                .iter()
                .map(|(c, g)| (c.to_string(), g.to_string()))
                .collect(),
        }
    }

    #[test]
    fn one_group_holds_everything() {
        let p = placement(&["default"], DefaultHome::Spread, &[]);
        assert_eq!(p.home_of("anything"), Home::Pinned(0));
        assert_eq!(p.group_names_of("anything"), vec!["default"]);
    }

    #[test]
    fn spread_by_default_and_pinned_by_name() {
        let p = placement(&["g1", "g2"], DefaultHome::Spread, &[("tenant_a", "g2")]);
        assert_eq!(p.home_of("big"), Home::Spread);
        assert_eq!(p.group_names_of("big"), vec!["g1", "g2"]);
        assert_eq!(p.home_of("tenant_a"), Home::Pinned(1));
        assert_eq!(p.group_names_of("tenant_a"), vec!["g2"]);
    }

    #[test]
    fn pinned_by_name_hash_uses_every_group_and_ignores_their_order() {
        let p = placement(&["g1", "g2", "g3"], DefaultHome::PinnedByName, &[]);
        let q = placement(&["g3", "g1", "g2"], DefaultHome::PinnedByName, &[]);
        let mut used = std::collections::BTreeSet::new();
        for i in 0..300 {
            let name = format!("tenant_{i}");
            assert_eq!(p.group_names_of(&name), q.group_names_of(&name));
            used.insert(p.group_names_of(&name)[0].to_string());
        }
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn a_new_group_moves_every_spread_collection_and_some_hashed_ones() {
        let old = placement(&["g1", "g2"], DefaultHome::Spread, &[("t", "g1")]);
        let new = placement(&["g1", "g2", "g3"], DefaultHome::Spread, &[("t", "g1")]);
        let moved = moved_collections(["big", "t"], &old, &new);
        assert_eq!(
            moved,
            vec![Moved {
                collection: "big".into(),
                from: vec!["g1".into(), "g2".into()],
                to: vec!["g1".into(), "g2".into(), "g3".into()],
            }]
        );
        // Re-pinning an existing collection moves it too.
        let repinned = placement(&["g1", "g2"], DefaultHome::Spread, &[("t", "g2")]);
        assert_eq!(moved_collections(["t"], &old, &repinned).len(), 1);
        // Reordering the groups moves nothing.
        let reordered = placement(&["g2", "g1"], DefaultHome::Spread, &[("t", "g1")]);
        assert!(moved_collections(["big", "t"], &old, &reordered).is_empty());
    }
}
