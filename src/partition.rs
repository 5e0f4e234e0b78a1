//! Milvus 1.1 partition semantics: which tables (the collection's own and its
//! partitions') a search with partition tags reads, and what HasPartition
//! answers. Pure; shared by the node and the proxy, so both agree.

use std::collections::HashSet;

use regex::Regex;

use crate::status::{MilvusError, MilvusResult};
use crate::types::DEFAULT_PARTITION_TAG;
use crate::validate::{partition_tag, trim_blanks};
use crate::wire::ErrorCode;

/// Milvus `IsRegexMatch`: equal, or the pattern matches the whole tag. A
/// pattern that does not compile as a regex matches by equality only.
/// Rust regex syntax stands in for std::regex ECMAScript; they agree on the
/// common constructs (`.`, `*`, `+`, `?`, classes, groups, `|`, `{n,m}`).
struct TagPattern {
    text: String,
    regex: Option<Regex>,
}

impl TagPattern {
    fn new(text: String) -> Self {
        // Compiling the bare pattern first guarantees it is self-contained
        // (balanced groups), so the anchoring group cannot be broken open.
        let regex = Regex::new(&text)
            .ok()
            .and_then(|_| Regex::new(&format!("^(?:{text})$")).ok());
        Self { text, regex }
    }

    fn matches(&self, tag: &str) -> bool {
        tag == self.text || self.regex.as_ref().is_some_and(|r| r.is_match(tag))
    }
}

/// The tables a Search with partition tags reads, following Milvus 1.1
/// `DBImpl::GetPartitionsByTags`.
///
/// `partitions` are the collection's partitions as (tag, table_id). No tags
/// selects the root and every partition. Otherwise each tag is validated and
/// trimmed ([`partition_tag`]); `_default` selects the root; any other tag
/// selects every partition whose tag equals it or fully matches it as a
/// regex. The result is the root first (if selected), then partitions in the
/// given order, without duplicates.
///
/// A tag that matches nothing is **not** an error when another tag selected
/// something: Milvus errors only when the whole selection is empty (code 1,
/// "The specified partition does not exist").
pub fn select_tables(
    root_table_id: &str,
    partitions: &[(String, String)],
    tags: &[String],
) -> MilvusResult<Vec<String>> {
    if tags.is_empty() {
        let mut all = Vec::with_capacity(partitions.len() + 1);
        all.push(root_table_id.to_string());
        all.extend(partitions.iter().map(|(_, table_id)| table_id.clone()));
        return Ok(all);
    }
    let mut want_root = false;
    let mut patterns = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = partition_tag(tag)?;
        if tag == DEFAULT_PARTITION_TAG {
            want_root = true;
        } else {
            patterns.push(TagPattern::new(tag));
        }
    }
    let mut selected = Vec::new();
    if want_root {
        selected.push(root_table_id.to_string());
    }
    let mut seen = HashSet::new();
    for (tag, table_id) in partitions {
        if patterns.iter().any(|p| p.matches(tag)) && seen.insert(table_id.as_str()) {
            selected.push(table_id.clone());
        }
    }
    if selected.is_empty() {
        let asked: Vec<&str> = tags.iter().map(|t| trim_blanks(t)).collect();
        return Err(MilvusError::new(
            ErrorCode::UnexpectedError,
            format!(
                "The specified partition does not exist: no partition tag matches {asked:?} (tags match exactly or as a full regex; use \"_default\" for the collection's own data)."
            ),
        ));
    }
    Ok(selected)
}

/// HasPartition's answer (Milvus `DBImpl::HasPartition`): the tag trimmed of
/// blanks is `_default` or equals an existing partition's tag. The tag itself
/// is never validated, so a blank or over-long tag is simply absent.
pub fn has_tag<'a>(existing: impl IntoIterator<Item = &'a str>, tag: &str) -> bool {
    let tag = trim_blanks(tag);
    tag == DEFAULT_PARTITION_TAG || existing.into_iter().any(|t| t == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of<T: std::fmt::Debug>(r: MilvusResult<T>) -> ErrorCode {
        r.expect_err("expected an error").code
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parts() -> Vec<(String, String)> {
        [
            ("2020-01", "t1"),
            ("2020-02", "t2"),
            ("2021-01", "t3"),
            ("abc", "t4"),
            ("a.c", "t5"),
        ]
        .iter()
        .map(|(tag, id)| (tag.to_string(), id.to_string()))
        .collect()
    }

    #[test]
    fn no_tags_select_root_and_every_partition() {
        assert_eq!(
            select_tables("root", &parts(), &[]),
            Ok(strings(&["root", "t1", "t2", "t3", "t4", "t5"]))
        );
        assert_eq!(select_tables("root", &[], &[]), Ok(strings(&["root"])));
    }

    #[test]
    fn default_tag_selects_the_root() {
        assert_eq!(
            select_tables("root", &parts(), &strings(&["_default"])),
            Ok(strings(&["root"]))
        );
        assert_eq!(
            select_tables("root", &[], &strings(&[" _default "])),
            Ok(strings(&["root"]))
        );
        // `_default` does not stop later tags (the 1.1 fix).
        assert_eq!(
            select_tables("root", &parts(), &strings(&["_default", "abc"])),
            Ok(strings(&["root", "t4"]))
        );
    }

    #[test]
    fn tags_match_exactly_or_as_a_full_regex() {
        assert_eq!(
            select_tables("root", &parts(), &strings(&["2020.*"])),
            Ok(strings(&["t1", "t2"]))
        );
        assert_eq!(
            select_tables("root", &parts(), &strings(&[" abc "])),
            Ok(strings(&["t4"]))
        );
        // Full match, not prefix: "a" does not select "abc".
        assert_eq!(
            code_of(select_tables("root", &parts(), &strings(&["a"]))),
            ErrorCode::UnexpectedError
        );
        assert_eq!(
            select_tables("root", &parts(), &strings(&["a.c"])),
            Ok(strings(&["t4", "t5"]))
        );
        assert_eq!(
            select_tables("root", &parts(), &strings(&["20(20|21)-01"])),
            Ok(strings(&["t1", "t3"]))
        );
        // Overlapping tags select each partition once, in partition order.
        assert_eq!(
            select_tables("root", &parts(), &strings(&["2021-01", "20.*"])),
            Ok(strings(&["t1", "t2", "t3"]))
        );
    }

    #[test]
    fn invalid_regex_matches_by_equality_only() {
        let parts = vec![
            ("a(b".to_string(), "t1".to_string()),
            ("ab".to_string(), "t2".to_string()),
        ];
        assert_eq!(
            select_tables("root", &parts, &strings(&["a(b"])),
            Ok(strings(&["t1"]))
        );
        // A pattern that would break out of the anchoring group is not a regex.
        let parts = vec![
            ("axxx".to_string(), "t1".to_string()),
            ("a)|(b".to_string(), "t2".to_string()),
        ];
        assert_eq!(
            select_tables("root", &parts, &strings(&["a)|(b"])),
            Ok(strings(&["t2"]))
        );
        // A top-level alternation is anchored as a whole.
        let parts = vec![
            ("ab".to_string(), "t1".to_string()),
            ("xb".to_string(), "t2".to_string()),
        ];
        assert_eq!(
            code_of(select_tables("root", &parts, &strings(&["a|x"]))),
            ErrorCode::UnexpectedError
        );
    }

    #[test]
    fn unknown_tag_is_an_error_only_when_nothing_is_selected() {
        assert_eq!(
            select_tables("root", &parts(), &strings(&["abc", "nope"])),
            Ok(strings(&["t4"]))
        );
        let err = select_tables("root", &parts(), &strings(&["nope", "zzz.*"])).expect_err("empty");
        assert_eq!(err.code, ErrorCode::UnexpectedError);
        assert!(
            err.reason
                .starts_with("The specified partition does not exist"),
            "{}",
            err.reason
        );
        assert!(err.reason.contains("nope"));
        assert_eq!(
            code_of(select_tables("root", &[], &strings(&["abc"]))),
            ErrorCode::UnexpectedError
        );
    }

    #[test]
    fn blank_or_long_tags_are_rejected_before_matching() {
        assert_eq!(
            code_of(select_tables("root", &parts(), &strings(&["abc", "  "]))),
            ErrorCode::UnexpectedError
        );
        let long = "x".repeat(256);
        assert_eq!(
            code_of(select_tables("root", &parts(), &[long])),
            ErrorCode::UnexpectedError
        );
    }

    #[test]
    fn has_tag_trims_and_never_fails() {
        let tags = ["p1", "a b"];
        assert!(has_tag(tags, "p1"));
        assert!(has_tag(tags, " p1\n"));
        assert!(has_tag(tags, "\ta b "));
        assert!(has_tag(tags, "_default"));
        assert!(has_tag([], " _default "));
        assert!(!has_tag(tags, "p2"));
        assert!(!has_tag(tags, ""));
        assert!(!has_tag(tags, "   "));
        assert!(!has_tag(tags, &"x".repeat(300)));
        // Not a regex match: HasPartition compares for equality.
        assert!(!has_tag(tags, "p.*"));
    }
}
