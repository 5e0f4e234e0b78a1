//! Ids: user ids against the vectors, a collection's id mode, the id-list sizes of
//! GetVectorsByID and SearchByID, and the file ids of SearchInFiles.

use std::collections::HashSet;

use super::names::trim_blanks;
use super::{fail, preview, MAX_GET_BY_ID, MAX_SEARCH_FILES};
use crate::status::MilvusResult;
use crate::types::{FLAG_AUTO_IDS, FLAG_USER_IDS};
use crate::wire::ErrorCode;

/// `row_id_array` is empty or has one id per vector. Code 12.
pub fn user_ids(ids: &[i64], n_vectors: usize) -> MilvusResult<()> {
    if !ids.is_empty() && ids.len() != n_vectors {
        return Err(fail(
            ErrorCode::IllegalVectorId,
            format!(
                "The size of vector ID array must be equal to the size of the vector: got {} ids for {n_vectors} vectors.",
                ids.len()
            ),
        ));
    }
    Ok(())
}

/// The id-mode rule of a collection's `flag`: once an insert used user ids
/// every insert must, once one used auto ids none may. Returns the flag to
/// store after this insert. Code 12.
pub fn id_mode(flag: i64, has_user_ids: bool) -> MilvusResult<i64> {
    if flag & FLAG_USER_IDS != 0 && !has_user_ids {
        return Err(fail(
            ErrorCode::IllegalVectorId,
            "Entities IDs are user-defined. Please provide IDs for all entities of the collection.",
        ));
    }
    if flag & FLAG_AUTO_IDS != 0 && has_user_ids {
        return Err(fail(
            ErrorCode::IllegalVectorId,
            "Entities IDs are auto-generated. All vectors of this collection must use auto-generated IDs; send no ids.",
        ));
    }
    Ok(flag
        | if has_user_ids {
            FLAG_USER_IDS
        } else {
            FLAG_AUTO_IDS
        })
}

/// GetVectorsByID: 1..=1000 ids. Code 5.
pub fn get_by_id_count(n: usize) -> MilvusResult<()> {
    if n == 0 {
        return Err(fail(
            ErrorCode::IllegalArgument,
            "No vector id specified: id_array is empty.",
        ));
    }
    if n > MAX_GET_BY_ID {
        return Err(fail(
            ErrorCode::IllegalArgument,
            format!("Input id array size cannot exceed {MAX_GET_BY_ID}; got {n} ids."),
        ));
    }
    Ok(())
}

/// SearchByID: the id list must not be empty. Code 5.
pub fn search_by_id_count(n: usize) -> MilvusResult<()> {
    if n == 0 {
        return Err(fail(
            ErrorCode::IllegalArgument,
            "No vector id specified: id_array is empty.",
        ));
    }
    Ok(())
}

/// SearchInFiles file ids: decimal `TableFiles.id` strings (surrounding
/// blanks ignored), returned parsed and without duplicates, in order.
/// Milvus parses them with `stoul`, ignoring trailing garbage and wrapping
/// negatives; here anything but digits is refused (code 1, the
/// code Milvus gives for unparsable ids). An empty list is code 5 (Milvus
/// would silently search the whole collection instead); more than 65536
/// ids is code 1.
pub fn file_ids(ids: &[String]) -> MilvusResult<Vec<i64>> {
    if ids.is_empty() {
        return Err(fail(
            ErrorCode::IllegalArgument,
            "file_id_array is empty: SearchInFiles needs at least one file id (a TableFiles.id).",
        ));
    }
    if ids.len() > MAX_SEARCH_FILES {
        return Err(fail(
            ErrorCode::UnexpectedError,
            format!("Too many file ids: {}; one SearchInFiles may search at most {MAX_SEARCH_FILES} files.", ids.len()),
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        let text = trim_blanks(id);
        let value = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<i64>().ok()
        } else {
            None
        };
        let Some(value) = value else {
            return Err(fail(
                ErrorCode::UnexpectedError,
                format!(
                    "Invalid file id {}: file ids are TableFiles.id values, non-negative decimal integers.",
                    preview(id)
                ),
            ));
        };
        if seen.insert(value) {
            parsed.push(value);
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{code_of, reason_of, strings};

    #[test]
    fn user_ids_length() {
        assert_eq!(user_ids(&[], 3), Ok(()));
        assert_eq!(user_ids(&[1, 2, 3], 3), Ok(()));
        assert_eq!(user_ids(&[], 0), Ok(()));
        let reason = reason_of(user_ids(&[1, 2], 3));
        assert!(reason.contains("2 ids for 3 vectors"), "{reason}");
        assert_eq!(
            code_of(user_ids(&[1, 2, 3, 4], 3)),
            ErrorCode::IllegalVectorId
        );
    }

    #[test]
    fn id_mode_locks_the_collection() {
        assert_eq!(id_mode(0, false), Ok(FLAG_AUTO_IDS));
        assert_eq!(id_mode(0, true), Ok(FLAG_USER_IDS));
        assert_eq!(id_mode(FLAG_AUTO_IDS, false), Ok(FLAG_AUTO_IDS));
        assert_eq!(id_mode(FLAG_USER_IDS, true), Ok(FLAG_USER_IDS));
        assert_eq!(
            code_of(id_mode(FLAG_AUTO_IDS, true)),
            ErrorCode::IllegalVectorId
        );
        assert_eq!(
            code_of(id_mode(FLAG_USER_IDS, false)),
            ErrorCode::IllegalVectorId
        );
        // Other bits are kept.
        assert_eq!(id_mode(0x10, true), Ok(0x10 | FLAG_USER_IDS));
    }

    #[test]
    fn id_counts() {
        assert_eq!(get_by_id_count(1), Ok(()));
        assert_eq!(get_by_id_count(MAX_GET_BY_ID), Ok(()));
        assert_eq!(code_of(get_by_id_count(0)), ErrorCode::IllegalArgument);
        assert_eq!(
            code_of(get_by_id_count(MAX_GET_BY_ID + 1)),
            ErrorCode::IllegalArgument
        );
        assert_eq!(search_by_id_count(1), Ok(()));
        assert_eq!(code_of(search_by_id_count(0)), ErrorCode::IllegalArgument);
    }

    #[test]
    fn file_ids_parse_and_dedupe() {
        assert_eq!(
            file_ids(&strings(&["1", " 42 ", "0", "42", "9223372036854775807"])),
            Ok(vec![1, 42, 0, i64::MAX])
        );
        assert_eq!(code_of(file_ids(&[])), ErrorCode::IllegalArgument);
        for bad in ["abc", "12abc", "-1", "+1", "", "1.5", "9223372036854775808"] {
            let err = file_ids(&strings(&["1", bad])).expect_err(bad);
            assert_eq!(err.code, ErrorCode::UnexpectedError, "{bad}");
            assert!(err.reason.contains(&format!("{bad:?}")), "{}", err.reason);
        }
        let max: Vec<String> = (0..MAX_SEARCH_FILES).map(|i| i.to_string()).collect();
        assert_eq!(file_ids(&max).map(|v| v.len()), Ok(MAX_SEARCH_FILES));
        let over: Vec<String> = (0..=MAX_SEARCH_FILES).map(|i| i.to_string()).collect();
        assert_eq!(code_of(file_ids(&over)), ErrorCode::UnexpectedError);
    }
}
