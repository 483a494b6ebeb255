//! Checksums used by ext4 metadata.
//!
//! ext4 (kernel `ext4_chksum`, e2fsprogs `ext2fs_crc32c_le`) uses the raw CRC32C register:
//! the caller supplies the initial value (`~0` for the superblock and the journal, the
//! filesystem's checksum seed elsewhere) and no final inversion is applied. The `crc32c`
//! crate works on finished CRCs (it inverts on entry and exit), so [`crc32c_raw`] undoes both.
//! The group-descriptor checksum of filesystems without `metadata_csum` (`uninit_bg`) is the
//! CRC16 (polynomial 0x8005, reflected) of e2fsprogs' `ext2fs_crc16`.
//!
//! Spec: Documentation/filesystems/ext4/checksums.rst; e2fsprogs lib/ext2fs/csum.c.

/// CRC32C continuing from the raw register value `seed`, without final inversion.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// CRC16 (ANSI, reflected polynomial 0xA001) continuing from `crc`.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc_matches_standard_crc_with_inversions() {
        // Standard CRC32C("123456789") = 0xE3069283; ext4's raw form starts at ~0 and skips
        // the final inversion.
        assert_eq!(crc32c_raw(!0, b"123456789"), !0xE306_9283);
        // Chaining works like one call.
        let a = crc32c_raw(!0, b"1234");
        assert_eq!(crc32c_raw(a, b"56789"), !0xE306_9283);
    }

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC check value with initial 0: 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
