//! Identifiers derived from the derivation hash: filesystem UUIDs, the GPT disk and partition
//! GUIDs, the FAT volume ID, the MBR disk signature and the ext4 directory hash seed.
//!
//! Each is a name-based (version 5, RFC 9562) UUID in hc1img's own namespace, named by the
//! derivation hash and the identifier's purpose, so every build of the same inputs gets the
//! same identifiers, different inputs get different ones, and none comes from the host.

use uuid::Uuid;

/// hc1img's UUID namespace (itself `uuid5(NAMESPACE_URL, "https://hc1img/ids")`).
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://hc1img/ids")
}

/// The identifier for `purpose` (e.g. `"ssd.root.fs-uuid"`) in the build `derivation`.
pub fn uuid(derivation: &str, purpose: &str) -> Uuid {
    Uuid::new_v5(&namespace(), format!("{derivation}/{purpose}").as_bytes())
}

/// A 32-bit identifier (FAT volume ID, MBR disk signature), never zero.
pub fn u32_id(derivation: &str, purpose: &str) -> u32 {
    let b = uuid(derivation, purpose).into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = uuid("abc", "fs");
        assert_eq!(a, uuid("abc", "fs"));
        assert_ne!(a, uuid("abd", "fs"));
        assert_ne!(a, uuid("abc", "journal"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(u32_id("abc", "vol"), u32_id("abc", "sig"));
    }
}
