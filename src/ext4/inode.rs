//! The 256-byte inode record: field layout, timestamps with nanoseconds, 32-bit ids, the
//! `metadata_csum` inode checksum.
//!
//! Spec: Documentation/filesystems/ext4/inodes.rst; checksum as e2fsprogs
//! `ext2fs_inode_csum` (crc32c over inode number, generation and the whole record with both
//! checksum halves zeroed).

use super::csum::crc32c_raw;
use super::format::*;
use crate::tree::Timestamp;

pub const I_BLOCK: usize = 0x28;
pub const XATTR_IBODY: usize = 128 + EXTRA_ISIZE as usize;

/// An inode being filled in.
#[derive(Clone)]
pub struct Inode {
    pub raw: [u8; INODE_SIZE],
}

impl Inode {
    pub fn new() -> Self {
        let mut raw = [0u8; INODE_SIZE];
        put_u16(&mut raw, 0x80, EXTRA_ISIZE);
        Inode { raw }
    }

    pub fn set_mode(&mut self, mode: u16) {
        put_u16(&mut self.raw, 0x0, mode);
    }

    #[allow(clippy::cast_possible_truncation)] // the low 16 bits here, the high 16 bits in the osd2 fields, by design
    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        put_u16(&mut self.raw, 0x2, uid as u16);
        put_u16(&mut self.raw, 0x78, (uid >> 16) as u16);
        put_u16(&mut self.raw, 0x18, gid as u16);
        put_u16(&mut self.raw, 0x7A, (gid >> 16) as u16);
    }

    #[allow(clippy::cast_possible_truncation)] // i_size_lo: the low 32 bits, by design (i_size_high holds the rest)
    pub fn set_size(&mut self, size: u64) {
        put_u32(&mut self.raw, 0x4, size as u32);
        put_u32(&mut self.raw, 0x6C, (size >> 32) as u32);
    }

    /// atime, ctime, mtime, crtime.
    pub fn set_times(
        &mut self,
        atime: Timestamp,
        ctime: Timestamp,
        mtime: Timestamp,
        crtime: Timestamp,
    ) {
        for (t, base, extra) in [
            (atime, 0x8, 0x8C),
            (ctime, 0xC, 0x84),
            (mtime, 0x10, 0x88),
            (crtime, 0x90, 0x94),
        ] {
            let (lo, ex) = encode_time(t.sec, t.nsec);
            put_u32(&mut self.raw, base, lo);
            put_u32(&mut self.raw, extra, ex);
        }
    }

    pub fn set_links(&mut self, n: u16) {
        put_u16(&mut self.raw, 0x1A, n);
    }

    /// Number of 4 KiB blocks charged to the inode (stored in 512-byte units).
    #[allow(clippy::cast_possible_truncation)] // i_blocks_lo and the high 16 bits, by design
    pub fn set_blocks(&mut self, fs_blocks: u64) {
        let sectors = fs_blocks * (BLOCK_SIZE_U64 / 512);
        put_u32(&mut self.raw, 0x1C, sectors as u32);
        put_u16(&mut self.raw, 0x74, (sectors >> 32) as u16);
    }

    pub fn set_flags(&mut self, flags: u32) {
        put_u32(&mut self.raw, 0x20, flags);
    }

    pub fn set_i_block(&mut self, data: &[u8]) {
        self.raw[I_BLOCK..I_BLOCK + data.len()].copy_from_slice(data);
    }

    #[allow(clippy::cast_possible_truncation)] // i_file_acl_lo and the high 16 bits, by design
    pub fn set_file_acl(&mut self, block: u64) {
        put_u32(&mut self.raw, 0x68, block as u32);
        put_u16(&mut self.raw, 0x76, (block >> 32) as u16);
    }

    /// Fill in the checksum (metadata_csum only).
    #[allow(clippy::cast_possible_truncation)] // the crc32c's low 16 bits go to l_i_checksum_lo, by design
    pub fn finish_csum(&mut self, csum_seed: u32, ino: u32) {
        put_u16(&mut self.raw, 0x7C, 0);
        put_u16(&mut self.raw, 0x82, 0);
        let crc = crc32c_raw(inode_seed(csum_seed, ino), &self.raw);
        put_u16(&mut self.raw, 0x7C, crc as u16);
        put_u16(&mut self.raw, 0x82, (crc >> 16) as u16);
    }
}

/// Per-inode checksum seed (inode number and generation 0), used by the inode itself and by
/// its extent blocks, directory blocks and htree nodes.
pub fn inode_seed(csum_seed: u32, ino: u32) -> u32 {
    let c = crc32c_raw(csum_seed, &ino.to_le_bytes());
    crc32c_raw(c, &0u32.to_le_bytes())
}

/// The kernel's device number encoding in `i_block`: the old 16-bit form when both numbers
/// are below 256, otherwise the new 32-bit form in the second word.
pub fn encode_device(major: u32, minor: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    if major < 256 && minor < 256 {
        put_u32(&mut b, 0, (major << 8) | minor);
    } else {
        let v = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
        put_u32(&mut b, 4, v);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_fields_use_their_high_halves() {
        let mut i = Inode::new();
        i.set_size(0x1_2345_6789);
        i.set_owner(0x0001_0002, 0x0003_0004);
        i.set_blocks(0x2_0000_0000 / 8 + 1); // sectors = 0x2_0000_0008
        i.set_file_acl(0x1_0000_0005);
        let r = &i.raw;
        let u16_at = |o: usize| u16::from_le_bytes([r[o], r[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
        assert_eq!((u32_at(0x4), u32_at(0x6C)), (0x2345_6789, 1));
        assert_eq!((u16_at(0x2), u16_at(0x78)), (2, 1));
        assert_eq!((u16_at(0x18), u16_at(0x7A)), (4, 3));
        assert_eq!((u32_at(0x1C), u16_at(0x74)), (8, 2));
        assert_eq!((u32_at(0x68), u16_at(0x76)), (5, 1));
        assert_eq!(u16_at(0x80), 32);
    }

    #[test]
    fn device_numbers_use_old_or_new_encoding() {
        assert_eq!(&encode_device(8, 1)[..4], &0x0801u32.to_le_bytes());
        let b = encode_device(300, 70000);
        assert_eq!(&b[..4], &[0; 4]);
        // new_encode_dev: minor low 8 bits, major << 8, minor high bits << 12.
        let want = (70000 & 0xff) | (300 << 8) | ((70000 & !0xff) << 12);
        assert_eq!(&b[4..8], &(want as u32).to_le_bytes());
    }
}
