//! How a spread collection's calls are split over its groups and how the
//! groups' answers become one answer, as one Milvus holding all the rows
//! would give it: counts and ShowCollectionInfo
//! added up (segment names qualified by group so they stay unique),
//! Describe/Has/Show checked for agreement.

use serde_json::{json, Map, Value};

use crate::status::{MilvusError, MilvusResult};
use crate::wire::ErrorCode;

/// What separates a group's name from a segment name or file id in a
/// qualified name: `g1/1700000000000000`. Group names never hold it.
pub const QUALIFIER: char = '/';

/// `name` qualified by `group`.
pub fn qualified(group: &str, name: &str) -> String {
    format!("{group}{QUALIFIER}{name}")
}

/// `(group, name)` of a qualified name, or None for a bare one.
pub fn unqualified(name: &str) -> Option<(&str, &str)> {
    name.split_once(QUALIFIER)
}

/// The one answer the groups agree on, or an error naming what each group said.
pub fn agreed<T: PartialEq + std::fmt::Debug>(
    what: &str,
    answers: Vec<(&str, T)>,
) -> MilvusResult<T> {
    let mut iter = answers.iter();
    let Some((_, first)) = iter.next() else {
        return Err(MilvusError::unexpected(format!(
            "{what}: no group answered"
        )));
    };
    if iter.all(|(_, a)| a == first) {
        return answers
            .into_iter()
            .next()
            .map(|(_, a)| a)
            .ok_or_else(|| MilvusError::unexpected(format!("{what}: no group answered")));
    }
    let said: Vec<String> = answers.iter().map(|(g, a)| format!("{g}: {a:?}")).collect();
    Err(MilvusError::unexpected(format!(
        "{what}: the shard groups disagree ({}); repeat the schema call that diverged them, or fix the group by hand",
        said.join("; ")
    )))
}

/// The groups' ShowCollectionInfo `json_info` documents as one: row counts
/// added up per partition tag and in all, segments listed under their
/// group-qualified names.
pub fn merge_collection_info(infos: &[(&str, &str)]) -> MilvusResult<String> {
    let mut total = 0i64;
    // Partition tag -> (rows, segments), in the first group's order.
    let mut partitions: Vec<(String, i64, Vec<Value>)> = Vec::new();
    for (group, text) in infos {
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            MilvusError::new(
                ErrorCode::UnexpectedError,
                format!("group {group} sent an unreadable ShowCollectionInfo: {e}"),
            )
        })?;
        total = total.saturating_add(doc["row_count"].as_i64().unwrap_or(0));
        for p in doc["partitions"].as_array().into_iter().flatten() {
            let tag = p["tag"].as_str().unwrap_or_default().to_string();
            let index = match partitions.iter().position(|(t, _, _)| *t == tag) {
                Some(i) => i,
                None => {
                    partitions.push((tag, 0, Vec::new()));
                    partitions.len() - 1
                }
            };
            let entry = &mut partitions[index];
            entry.1 = entry.1.saturating_add(p["row_count"].as_i64().unwrap_or(0));
            for s in p["segments"].as_array().into_iter().flatten() {
                let mut s = s.as_object().cloned().unwrap_or_else(Map::new);
                let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                let name = qualified(group, name);
                s.insert("name".into(), Value::String(name));
                entry.2.push(Value::Object(s));
            }
        }
    }
    let partitions: Vec<Value> = partitions
        .into_iter()
        .map(|(tag, rows, segments)| {
            json!({
                "tag": tag,
                "row_count": rows,
                "segments": if segments.is_empty() { Value::Null } else { Value::Array(segments) },
            })
        })
        .collect();
    Ok(json!({ "row_count": total, "partitions": partitions }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_or_an_error_naming_each_group() {
        assert!(agreed("Has", vec![("g1", true), ("g2", true)]).unwrap());
        let e = agreed("DescribeCollection dimension", vec![("g1", 4), ("g2", 8)]).unwrap_err();
        assert!(e.reason.contains("g1: 4; g2: 8"), "{}", e.reason);
    }

    #[test]
    fn collection_info_adds_up_and_qualifies_segments() {
        let g1 = r#"{"row_count":3,"partitions":[{"tag":"_default","row_count":3,"segments":[{"name":"17","row_count":3,"index_name":"IDMAP","data_size":40}]},{"tag":"p","row_count":0,"segments":null}]}"#;
        let g2 = r#"{"row_count":5,"partitions":[{"tag":"_default","row_count":2,"segments":[{"name":"17","row_count":2,"index_name":"IDMAP","data_size":30}]},{"tag":"p","row_count":3,"segments":[{"name":"18","row_count":3,"index_name":"IVF_FLAT","data_size":50}]}]}"#;
        let merged: Value =
            serde_json::from_str(&merge_collection_info(&[("g1", g1), ("g2", g2)]).unwrap())
                .unwrap();
        assert_eq!(merged["row_count"], 8);
        assert_eq!(merged["partitions"][0]["tag"], "_default");
        assert_eq!(merged["partitions"][0]["row_count"], 5);
        let names: Vec<&str> = merged["partitions"][0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["g1/17", "g2/17"]);
        assert_eq!(merged["partitions"][1]["row_count"], 3);
        assert_eq!(
            merged["partitions"][1]["segments"][0]["index_name"],
            "IVF_FLAT"
        );
        assert!(merge_collection_info(&[("g1", "not json")]).is_err());
    }

    #[test]
    fn qualified_names_round_trip() {
        assert_eq!(unqualified(&qualified("g1", "1700")), Some(("g1", "1700")));
        assert_eq!(unqualified("1700"), None);
    }
}
