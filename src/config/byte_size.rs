//! Sizes in bytes as the configuration writes them ("512MiB", "4MB", a bare
//! number): parsing, printing and (de)serialising [`ByteSize`].

use std::fmt;
use std::str::FromStr;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;

/// A size in bytes, written as "512MiB", "1GiB", "4000000", "4 MB" or a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Parses a size: a whole number followed by an optional unit (`B`, `KB`,
/// `MB`, `GB`, `TB` in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of
/// 1024; case-insensitive; spaces allowed before the unit).
pub fn parse_byte_size(text: &str) -> Result<ByteSize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let hint =
        || format!("expected a size like \"512MiB\", \"1GiB\" or a number of bytes, got {text:?}");
    if digits.is_empty() {
        return Err(hint());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => 1024 * GIB,
        _ => return Err(hint()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(multiplier))
        .map(ByteSize)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_byte_size(text)
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, e.g. "1GiB", "1500B".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1024 * GIB, "TiB"),
            (GIB, "GiB"),
            (MIB, "MiB"),
            (KIB, "KiB"),
        ];
        for (size, name) in units {
            if self.0 != 0 && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"512MiB\" or a number of bytes")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, got {bytes}")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_byte_size(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::Config;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("512MiB"), Ok(ByteSize(512 * MIB)));
        assert_eq!(parse_byte_size("1 gib"), Ok(ByteSize(GIB)));
        assert_eq!(parse_byte_size("4MB"), Ok(ByteSize(4_000_000)));
        assert_eq!(parse_byte_size("123"), Ok(ByteSize(123)));
        assert_eq!(parse_byte_size("7B"), Ok(ByteSize(7)));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1",
            "12 parsecs",
            "99999999999999999999",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_byte_size("17000000TiB").is_err(), "overflow");
        assert_eq!(ByteSize(GIB).to_string(), "1GiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
        let text = format!("{MINIMAL}[server]\nmax_message_size = 8388608\n");
        let config = Config::load_from_str(&text, no_env).expect("integer bytes");
        assert_eq!(config.server.max_message_size, ByteSize(8 * MIB));
    }
}
