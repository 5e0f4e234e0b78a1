//! The group that owns an entity id of a spread collection: rendezvous
//! hashing of the id over the group names. An insert sends each row to its
//! owner, and DeleteByID / GetVectorsByID ask only the owners of their ids.

use super::rendezvous;

/// The index in `groups` of the group that owns `id`. `groups` is the
/// collection's group set (names); its order does not matter.
///
/// # Panics
/// Never: an empty group set owns nothing, and is answered with index 0
/// only to keep the signature total; callers never build an empty set.
pub fn owner_of<S: AsRef<str>>(id: i64, groups: &[S]) -> usize {
    rendezvous(id as u64, groups).unwrap_or(0)
}

/// The positions of `ids` split by owner: `result[g]` holds, in order, the
/// positions of the ids that `groups[g]` owns.
pub fn split_by_owner<S: AsRef<str>>(ids: &[i64], groups: &[S]) -> Vec<Vec<usize>> {
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); groups.len().max(1)];
    if groups.len() <= 1 {
        parts[0] = (0..ids.len()).collect();
        return parts;
    }
    for (position, id) in ids.iter().enumerate() {
        parts[owner_of(*id, groups)].push(position);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_has_one_owner_whatever_the_order_of_the_groups() {
        let forward = ["g1", "g2", "g3"];
        let backward = ["g3", "g2", "g1"];
        for id in (-500..500).chain([i64::MIN, i64::MAX, 1_700_000_000_000_000_000]) {
            let a = forward[owner_of(id, &forward)];
            let b = backward[owner_of(id, &backward)];
            assert_eq!(a, b, "id {id}");
        }
    }

    #[test]
    fn ids_spread_evenly_over_the_groups() {
        let groups = ["g1", "g2", "g3"];
        let ids: Vec<i64> = (0..30_000).collect();
        let parts = split_by_owner(&ids, &groups);
        for part in &parts {
            // 10,000 expected each; 5 sigma is about 400.
            assert!(
                (9_500..10_500).contains(&part.len()),
                "{:?}",
                parts.iter().map(Vec::len).collect::<Vec<_>>()
            );
        }
        let mut all: Vec<usize> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..30_000).collect::<Vec<_>>());
    }

    #[test]
    fn adding_a_group_moves_only_ids_to_the_new_group() {
        let two = ["g1", "g2"];
        let three = ["g1", "g2", "g3"];
        let mut moved = 0;
        for id in 0..10_000i64 {
            let before = two[owner_of(id, &two)];
            let after = three[owner_of(id, &three)];
            if before != after {
                assert_eq!(after, "g3", "id {id} moved between old groups");
                moved += 1;
            }
        }
        assert!((2_900..3_800).contains(&moved), "{moved}");
    }

    #[test]
    fn one_group_owns_everything_in_request_order() {
        let parts = split_by_owner(&[5, 3, 9], &["only"]);
        assert_eq!(parts, vec![vec![0, 1, 2]]);
        let parts = split_by_owner(&[5, 3, 9], &[] as &[&str]);
        assert_eq!(parts, vec![vec![0, 1, 2]]);
    }
}
