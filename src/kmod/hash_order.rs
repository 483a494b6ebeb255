//! The order in which kmod's hash table (`shared/hash.c`, kmod 30) iterates its keys. depmod
//! writes `modules.symbols` in that order, and lists the modules that `modules.order` does not
//! name in that order too, so reproducing its bytes means reproducing the order.
//!
//! A table of `n` buckets (a power of two: 2048 for depmod's symbols, 512 for its modules by
//! name) puts a key in bucket `hash_superfast(key) & (n - 1)` (Paul Hsieh's SuperFastHash, as
//! kmod spells it: 16-bit reads in host order, little-endian on x86 and ARM, and `char` signed
//! as on x86: on ARM, where `char` is unsigned, keys with bytes >= 0x80 would hash otherwise,
//! but module and symbol names are ASCII); each bucket keeps its keys sorted by `strcmp`. `hash_iter_next` walks the buckets in order and each bucket's keys in
//! order, so the iteration order is that of the pair (bucket, key), whatever the insertion
//! order.

/// Buckets of depmod's symbol table (`hash_new(2048, ...)`).
pub const SYMBOL_BUCKETS: u32 = 2048;
/// Buckets of depmod's module-by-name table (`hash_new(512, ...)`).
pub const MODULE_BUCKETS: u32 = 512;

fn u16_le(b: &[u8]) -> u32 {
    match b {
        [lo, hi, ..] => u32::from(*lo) | (u32::from(*hi) << 8),
        _ => 0,
    }
}

/// A `char` of the key as kmod on x86 sees it: signed, sign-extended.
fn signed(b: u8) -> u32 {
    // Two's complement reinterpretation, then sign extension: the intent of the cast.
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    let v = i32::from(b as i8) as u32;
    v
}

/// kmod's `hash_superfast(key, strlen(key))`.
pub fn hash_superfast(key: &[u8]) -> u32 {
    // `unsigned int len = strlen(key)`: the length modulo 2^32.
    #[allow(clippy::cast_possible_truncation)]
    let len = key.len() as u32;
    let mut hash = len;
    let chunks = key.chunks_exact(4);
    let rem = chunks.remainder();
    for c in chunks {
        hash = hash.wrapping_add(u16_le(c));
        let tmp = (u16_le(c.get(2..).unwrap_or_default()) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match rem {
        [_, _, c2] => {
            hash = hash.wrapping_add(u16_le(rem));
            hash ^= hash << 16;
            hash ^= signed(*c2) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [_, _] => {
            hash = hash.wrapping_add(u16_le(rem));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [c0] => {
            hash = hash.wrapping_add(signed(*c0));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// The sort key giving kmod's iteration order in a table of `buckets` buckets.
pub fn order_key(key: &str, buckets: u32) -> (u32, &[u8]) {
    (
        hash_superfast(key.as_bytes()) & (buckets.wrapping_sub(1)),
        key.as_bytes(),
    )
}

/// Sorts `items` into kmod's iteration order of their keys.
pub fn sort_by_hash_order<T>(items: &mut [T], buckets: u32, key: impl Fn(&T) -> String) {
    items.sort_by_cached_key(|t| {
        let k = key(t);
        (order_key(&k, buckets).0, k)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed by compiling kmod's `hash_superfast` on x86-64 (every remainder case,
    /// and a byte >= 0x80 in the sign-extended positions).
    #[test]
    fn known_values() {
        let cases: [(&[u8], u32); 7] = [
            (b"", 0),
            (b"a", 0x115E_A782),
            (b"ab", 0x516B_8B44),
            (b"abc", 0xD2BE_198A),
            (b"abcd", 0xDAD8_B8DB),
            (b"usb_storage", 0x9F9B_2FAB),
            (b"\xe9\xe9\xe9", 0x8C84_9F21),
        ];
        for (k, want) in cases {
            assert_eq!(
                hash_superfast(k),
                want,
                "{:?}: {:#010x}",
                String::from_utf8_lossy(k),
                hash_superfast(k)
            );
        }
    }

    #[test]
    fn order_is_bucket_then_bytes() {
        let mut names = vec!["zeta", "alpha", "mid", "a", "b"];
        sort_by_hash_order(&mut names, 1, |s| s.to_string());
        assert_eq!(names, ["a", "alpha", "b", "mid", "zeta"]);
        let mut names: Vec<String> = (0..200).map(|i| format!("mod{i}")).collect();
        sort_by_hash_order(&mut names, 512, String::clone);
        for w in names.windows(2) {
            assert!(order_key(&w[0], 512) < order_key(&w[1], 512));
        }
    }
}
