//! Collection names and partition tags: the collection-name rule, blank trimming and
//! length of tags, the reserved `_default` tag, and the per-collection partition limit.

use super::{fail, preview, MAX_NAME_LENGTH, MAX_PARTITIONS};
use crate::status::MilvusResult;
use crate::types::DEFAULT_PARTITION_TAG;
use crate::wire::ErrorCode;

/// Milvus `TrimStringBlank`: strips spaces, tabs, CR and LF at both ends.
pub fn trim_blanks(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Collection name: non-empty, at most 255 bytes, first character `_` or an
/// ASCII letter, the rest ASCII letters, digits or `_`. Code 9.
pub fn collection_name(name: &str) -> MilvusResult<()> {
    let code = ErrorCode::IllegalCollectionName;
    if name.is_empty() {
        return Err(fail(code, "Collection name should not be empty."));
    }
    let invalid = |why: String| {
        fail(
            code,
            format!("Invalid collection name: {}. {why}", preview(name)),
        )
    };
    if name.len() > MAX_NAME_LENGTH {
        return Err(invalid(format!(
            "The length of a collection name must not exceed {MAX_NAME_LENGTH} bytes; it is {}.",
            name.len()
        )));
    }
    let mut chars = name.chars();
    if let Some(first) = chars.next() {
        if first != '_' && !first.is_ascii_alphabetic() {
            return Err(invalid(format!(
                "The first character of a collection name must be an underscore or a letter, not {first:?}."
            )));
        }
    }
    if let Some((pos, bad)) = name
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c != '_' && !c.is_ascii_alphanumeric())
    {
        return Err(invalid(format!(
            "Collection name can only contain numbers, letters, and underscores; found {bad:?} at byte {pos}."
        )));
    }
    Ok(())
}

/// A partition tag as given by a client: trimmed of blanks, then non-empty
/// and at most 255 bytes; any other character is allowed. Returns the trimmed
/// tag (the form stored in `Tables.partition_tag`). Code 1, because Milvus
/// does not map SERVER_INVALID_PARTITION_TAG to a wire code.
pub fn partition_tag(tag: &str) -> MilvusResult<String> {
    let code = ErrorCode::UnexpectedError;
    let trimmed = trim_blanks(tag);
    if trimmed.is_empty() {
        return Err(fail(
            code,
            format!(
                "Invalid partition tag: {}. Partition tag should not be empty (blanks at both ends are ignored).",
                preview(tag)
            ),
        ));
    }
    if trimmed.len() > MAX_NAME_LENGTH {
        return Err(fail(
            code,
            format!(
                "Invalid partition tag: {}. Partition tag exceeds max length ({MAX_NAME_LENGTH} bytes); it is {}.",
                preview(trimmed),
                trimmed.len()
            ),
        ));
    }
    Ok(trimmed.to_string())
}

/// The tag of a partition about to be created: a valid tag that is not the
/// reserved `_default`. Milvus compares the untrimmed tag with `_default`;
/// this also refuses `" _default "`, which Milvus would store as `_default`.
pub fn new_partition_tag(tag: &str) -> MilvusResult<String> {
    let trimmed = partition_tag(tag)?;
    if trimmed == DEFAULT_PARTITION_TAG {
        return Err(fail(
            ErrorCode::UnexpectedError,
            "'_default' is the built-in partition tag of every collection; choose another tag.",
        ));
    }
    Ok(trimmed)
}

/// Room for one more partition when the collection already has `existing`
/// (not counting `_default`). Code 1 (SERVER_UNSUPPORTED_ERROR).
pub fn partition_capacity(existing: usize) -> MilvusResult<()> {
    if existing >= MAX_PARTITIONS {
        return Err(fail(
            ErrorCode::UnexpectedError,
            format!(
                "The number of partitions exceeds the upper limit ({MAX_PARTITIONS}); the collection already has {existing}. Drop a partition first."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{code_of, reason_of};

    #[test]
    fn collection_name_accepts_valid_names() {
        for name in ["a", "_", "_abc", "Abc_123", "x".repeat(255).as_str()] {
            assert_eq!(collection_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn collection_name_rejects_with_code_9() {
        let too_long = "x".repeat(256);
        for name in [
            "",
            too_long.as_str(),
            "1abc",
            "-abc",
            "ab-c",
            "ab c",
            "abç",
            "é",
        ] {
            assert_eq!(
                code_of(collection_name(name)),
                ErrorCode::IllegalCollectionName,
                "{name}"
            );
        }
        assert!(reason_of(collection_name("ab-c")).contains("'-'"));
        assert!(reason_of(collection_name(&too_long)).contains("256"));
    }

    #[test]
    fn partition_tag_trims_and_bounds_length() {
        assert_eq!(partition_tag(" abc ").as_deref(), Ok("abc"));
        assert_eq!(partition_tag("\t a b \r\n").as_deref(), Ok("a b"));
        assert_eq!(partition_tag("2020-01/*?").as_deref(), Ok("2020-01/*?"));
        assert_eq!(partition_tag("a").as_deref(), Ok("a"));
        let max = "t".repeat(255);
        assert_eq!(partition_tag(&format!("  {max}  ")), Ok(max.clone()));
        for bad in ["", "   ", "\t\n", &"t".repeat(256)] {
            assert_eq!(
                code_of(partition_tag(bad)),
                ErrorCode::UnexpectedError,
                "{bad:?}"
            );
        }
        // The reason shows a long tag only in part.
        assert!(reason_of(partition_tag(&"t".repeat(1000))).len() < 300);
    }

    #[test]
    fn new_partition_tag_rejects_default() {
        assert_eq!(new_partition_tag(" p1 ").as_deref(), Ok("p1"));
        assert_eq!(new_partition_tag("_default_x").as_deref(), Ok("_default_x"));
        for bad in ["_default", " _default ", ""] {
            assert_eq!(
                code_of(new_partition_tag(bad)),
                ErrorCode::UnexpectedError,
                "{bad:?}"
            );
        }
        assert!(reason_of(new_partition_tag("_default")).contains("built-in"));
    }

    #[test]
    fn partition_capacity_limit() {
        assert_eq!(partition_capacity(0), Ok(()));
        assert_eq!(partition_capacity(MAX_PARTITIONS - 1), Ok(()));
        assert_eq!(
            code_of(partition_capacity(MAX_PARTITIONS)),
            ErrorCode::UnexpectedError
        );
    }
}
