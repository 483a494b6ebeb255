//! The JBD2 journal superblock for an empty internal journal (inode 8).
//!
//! A v2 superblock (big-endian) with `s_start = 0` (nothing to replay), sequence 1, one user
//! (this filesystem), and with `metadata_csum` the `csum_v3` feature and its crc32c checksum.
//! The remaining journal blocks are left as holes (zeros), as mke2fs' lazy journal init does.
//!
//! Spec: Documentation/filesystems/ext4/journal.rst ("Super Block"); e2fsprogs
//! lib/ext2fs/mkjournal.c, lib/ext2fs/kernel-jbd.h.

use super::csum::crc32c_raw;
use super::format::*;

const JBD2_MAGIC: u32 = 0xC03B_3998;
const SUPERBLOCK_V2: u32 = 4;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const CRC32C_CHKSUM: u8 = 4;

#[allow(clippy::cast_possible_truncation)] // BLOCK_SIZE is 4096
pub fn superblock(blocks: u32, uuid: &[u8; 16], csum: bool) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE];
    put_be32(&mut b, 0x0, JBD2_MAGIC);
    put_be32(&mut b, 0x4, SUPERBLOCK_V2);
    put_be32(&mut b, 0xC, BLOCK_SIZE as u32);
    put_be32(&mut b, 0x10, blocks);
    put_be32(&mut b, 0x14, 1); // s_first
    put_be32(&mut b, 0x18, 1); // s_sequence
    put_be32(&mut b, 0x1C, 0); // s_start: clean
    b[0x30..0x40].copy_from_slice(uuid);
    put_be32(&mut b, 0x40, 1); // s_nr_users
    if csum {
        put_be32(&mut b, 0x28, INCOMPAT_CSUM_V3);
        b[0x50] = CRC32C_CHKSUM;
        let c = crc32c_raw(!0, &b[..1024]);
        put_be32(&mut b, 0xFC, c);
    }
    b
}
