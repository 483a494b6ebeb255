//! Byte sizes in profiles: `"4GiB"`, `"256MiB"`, `"512KiB"`, `"1TiB"`, `"123B"`, a plain
//! integer number of bytes (`4294967296` or `"4294967296"`), and for filesystem sizes `"auto"`.
//!
//! Only binary (IEC 80000-13) suffixes are accepted: `KiB`, `MiB`, `GiB`, `TiB`. Decimal or
//! ambiguous suffixes (`KB`, `M`, `G`) are rejected instead of guessed. Sizes serialise as a
//! plain byte count, so `"4GiB"` and `4294967296` are the same value for the derivation hash.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest filesystem size a profile may ask for: 16 TiB, 2^32 blocks of 4 KiB (the most
/// ext4 addresses without the 64bit feature, and the largest file — the image — an ext4 host
/// holds). The writer keeps one bit per block in memory (512 MiB at this size), so the bound
/// is checked when the profile is read, before anything is allocated.
pub const MAX_FS_SIZE: u64 = 16 << 40;

/// Parse a size string into bytes. The error is a sentence without location.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let bad = || {
        format!(
            "invalid size `{s}`: expected a number of bytes or a number with KiB, MiB, GiB or TiB (e.g. \"4GiB\")"
        )
    };
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match suffix.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` does not fit in 64 bits"))
}

/// Render bytes with the largest exact binary suffix (for messages and docs).
pub fn human(bytes: u64) -> String {
    for (suffix, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

/// A byte count written as a size string or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

struct BytesVisitor {
    allow_auto: bool,
}

/// What a [`BytesVisitor`] read.
enum Read {
    Auto,
    Bytes(u64),
}

impl Visitor<'_> for BytesVisitor {
    type Value = Read;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_auto {
            f.write_str("a size like \"4GiB\", a number of bytes, or \"auto\"")
        } else {
            f.write_str("a size like \"256MiB\" or a number of bytes")
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Read, E> {
        u64::try_from(v)
            .map(Read::Bytes)
            .map_err(|_| E::custom(format!("invalid size {v}: sizes cannot be negative")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Read, E> {
        Ok(Read::Bytes(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Read, E> {
        if self.allow_auto && v == "auto" {
            return Ok(Read::Auto);
        }
        parse_bytes(v).map(Read::Bytes).map_err(|m| {
            if self.allow_auto {
                E::custom(format!("{m}, or \"auto\""))
            } else {
                E::custom(m)
            }
        })
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(BytesVisitor { allow_auto: false })? {
            Read::Bytes(b) => Ok(Bytes(b)),
            Read::Auto => Err(de::Error::custom("\"auto\" is not allowed here")),
        }
    }
}

/// A filesystem size: a fixed byte count, or `auto` (the builder picks the smallest size that
/// fits the content plus headroom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Size {
    #[default]
    Auto,
    Bytes(u64),
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Auto => s.serialize_str("auto"),
            Size::Bytes(b) => s.serialize_u64(*b),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match d.deserialize_any(BytesVisitor { allow_auto: true })? {
                Read::Auto => Size::Auto,
                Read::Bytes(b) if b > MAX_FS_SIZE => {
                    return Err(de::Error::custom(format!(
                        "size {} is larger than {}, the largest filesystem hc1img writes",
                        human(b),
                        human(MAX_FS_SIZE)
                    )));
                }
                Read::Bytes(b) => Size::Bytes(b),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parses_binary_suffixes() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert_eq!(parse_bytes("123B"), Ok(123));
    }

    #[test]
    fn rejects_ambiguous_or_bad() {
        for s in [
            "4GB",
            "4G",
            "",
            "GiB",
            "-1",
            "1.5GiB",
            "4 gib",
            "99999999999TiB",
        ] {
            assert!(parse_bytes(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn filesystem_sizes_are_bounded() {
        let size = |v: &str| toml::from_str::<BTreeMap<String, Size>>(&format!("s = {v}"));
        assert_eq!(size("\"16TiB\"").unwrap()["s"], Size::Bytes(16 << 40));
        let e = size("\"1024TiB\"").unwrap_err().to_string();
        assert!(e.contains("size 1024TiB is larger than 16TiB"), "{e}");
        assert!(size("18446744073709551615").is_err());
    }

    #[test]
    fn human_is_exact() {
        assert_eq!(human(4 << 30), "4GiB");
        assert_eq!(human(1536 << 10), "1536KiB");
        assert_eq!(human(1000), "1000");
    }
}
