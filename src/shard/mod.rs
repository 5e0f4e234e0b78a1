//! Shard groups, pure: several independent Milvus 1.x clusters ("groups")
//! behind one proxy address. Nothing here does I/O; the proxy wires it to
//! the groups' nodes and metadata.
//!
//! - `placement`: which groups a collection lives in (spread over all, or
//!   pinned to one);
//! - `owner`: which group of a spread collection owns an entity id;
//! - `ids`: the ids the proxy generates for inserts that carry none, unique
//!   across groups, proxy replicas and restarts without coordination;
//! - `id_mode`: Milvus' always-or-never id rule, decided from the groups'
//!   `Tables.flag` bits;
//! - `replies`: how calls split over the groups and answers combine.

pub mod encoded_insert;
pub mod id_mode;
pub mod ids;
pub mod owner;
pub mod placement;
pub mod replies;

/// A 64-bit mix of `x` (SplitMix64's finaliser): every input bit flips
/// about half the output bits, so consecutive ids and similar names spread
/// evenly. Written by hand: eight lines, and the placement must never change
/// with a dependency's version.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of a name (FNV-1a, then `mix64`): the same on every
/// proxy replica, build and platform.
pub(crate) fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// The index of the name in `names` with the highest weight for `key`
/// (rendezvous hashing): stable when names are reordered, and when a name is
/// added or removed only the keys it wins or held move; a tie of weights
/// (never seen in practice) goes to the greater name, so it is stable too.
/// None when `names` is empty.
pub(crate) fn rendezvous<S: AsRef<str>>(key: u64, names: &[S]) -> Option<usize> {
    names
        .iter()
        .map(AsRef::as_ref)
        .enumerate()
        .max_by_key(|&(_, n)| (mix64(name_hash(n) ^ key), n))
        .map(|(i, _)| i)
}
