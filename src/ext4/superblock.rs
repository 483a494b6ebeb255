//! The superblock (1024 bytes at byte 1024 of the filesystem) and its `sparse_super`
//! backups (at the start of groups 1, 3^n, 5^n, 7^n, each with its `s_block_group_nr`),
//! each followed by a copy of the group descriptor table.
//!
//! Spec: Documentation/filesystems/ext4/super.rst; defaults as e2fsprogs misc/mke2fs.c.

use anyhow::Result;

use super::Ext4Options;
use super::csum::crc32c_raw;
use super::format::*;
use super::layout::Geometry;

#[allow(clippy::cast_possible_truncation)] // fields are lo halves by design (s_*_hi hold the rest); the layout keeps blocks <= 2^32 and the constants are small
pub fn build(
    geo: &Geometry,
    o: &Ext4Options,
    free_blocks: u64,
    free_inodes: u32,
    jnl_backup: &[u8; 68],
) -> Vec<u8> {
    let mut sb = vec![0u8; 1024];
    let ts = o.timestamp as u32;
    let r_blocks = geo.blocks * 5 / 100;
    put_u32(&mut sb, 0x0, geo.inodes_count());
    put_u32(&mut sb, 0x4, geo.blocks as u32);
    put_u32(&mut sb, 0x8, r_blocks as u32);
    put_u32(&mut sb, 0xC, free_blocks as u32);
    put_u32(&mut sb, 0x10, free_inodes);
    put_u32(&mut sb, 0x14, 0);
    put_u32(&mut sb, 0x18, LOG_BLOCK_SIZE);
    put_u32(&mut sb, 0x1C, LOG_BLOCK_SIZE);
    put_u32(&mut sb, 0x20, BLOCKS_PER_GROUP as u32);
    put_u32(&mut sb, 0x24, BLOCKS_PER_GROUP as u32);
    put_u32(&mut sb, 0x28, geo.inodes_per_group);
    put_u32(&mut sb, 0x2C, 0); // s_mtime: never mounted
    put_u32(&mut sb, 0x30, ts);
    put_u16(&mut sb, 0x34, 0);
    put_u16(&mut sb, 0x36, 0xFFFF); // s_max_mnt_count = -1
    put_u16(&mut sb, 0x38, 0xEF53);
    put_u16(&mut sb, 0x3A, 1); // clean
    put_u16(&mut sb, 0x3C, 1); // errors=continue
    put_u32(&mut sb, 0x40, ts); // s_lastcheck
    put_u32(&mut sb, 0x44, 0);
    put_u32(&mut sb, 0x48, 0); // Linux
    put_u32(&mut sb, 0x4C, 1); // dynamic rev
    put_u32(&mut sb, 0x54, FIRST_INO);
    put_u16(&mut sb, 0x58, INODE_SIZE as u16);
    let has_journal = geo.journal_blocks > 0;
    let mut compat = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
    if has_journal {
        compat |= COMPAT_HAS_JOURNAL;
    }
    let mut incompat = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG;
    let mut ro = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE;
    if geo.bit64 {
        incompat |= INCOMPAT_64BIT;
    }
    if geo.metadata_csum {
        ro |= RO_COMPAT_METADATA_CSUM;
    } else {
        ro |= RO_COMPAT_GDT_CSUM;
    }
    put_u32(&mut sb, 0x5C, compat);
    put_u32(&mut sb, 0x60, incompat);
    put_u32(&mut sb, 0x64, ro);
    sb[0x68..0x78].copy_from_slice(&o.uuid);
    sb[0x78..0x78 + o.label.len()].copy_from_slice(o.label.as_bytes());
    if has_journal {
        put_u32(&mut sb, 0xE0, JOURNAL_INO);
    }
    sb[0xEC..0xFC].copy_from_slice(&o.hash_seed);
    put_u8(&mut sb, 0xFC, HASH_HALF_MD4);
    if has_journal {
        put_u8(&mut sb, 0xFD, 1); // EXT3_JNL_BACKUP_BLOCKS
        sb[0x10C..0x150].copy_from_slice(jnl_backup);
    }
    put_u16(
        &mut sb,
        0xFE,
        if geo.bit64 { geo.desc_size as u16 } else { 0 },
    );
    put_u32(&mut sb, 0x100, DEFM_XATTR_USER | DEFM_ACL);
    put_u32(&mut sb, 0x108, ts); // s_mkfs_time
    put_u32(&mut sb, 0x150, (geo.blocks >> 32) as u32);
    put_u32(&mut sb, 0x154, (r_blocks >> 32) as u32);
    put_u32(&mut sb, 0x158, (free_blocks >> 32) as u32);
    put_u16(&mut sb, 0x15C, EXTRA_ISIZE);
    put_u16(&mut sb, 0x15E, EXTRA_ISIZE);
    put_u32(&mut sb, 0x160, FLAGS_SIGNED_HASH);
    put_u8(&mut sb, 0x174, LOG_GROUPS_PER_FLEX);
    if geo.metadata_csum {
        put_u8(&mut sb, 0x175, 1); // crc32c
    }
    put_u64(&mut sb, 0x178, (geo.blocks - free_blocks) * 4);
    sb
}

/// Write the primary superblock and every backup, each followed by the GDT.
#[allow(clippy::cast_possible_truncation)] // group numbers < 2^32 / 32768 fit s_block_group_nr's 16 bits
pub fn write_all(
    geo: &Geometry,
    mut sb: Vec<u8>,
    gdt: &[u8],
    write: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    for g in 0..geo.groups {
        if !group_has_super(g) {
            continue;
        }
        put_u16(&mut sb, 0x5A, g as u16);
        if geo.metadata_csum {
            let c = crc32c_raw(!0, &sb[..0x3FC]);
            put_u32(&mut sb, 0x3FC, c);
        }
        let start = geo.group_start(g);
        let mut blk = vec![0u8; BLOCK_SIZE];
        // The primary sits 1024 bytes into block 0 (after the boot sector area); backups
        // start their group's first block.
        let at = if g == 0 { 1024 } else { 0 };
        blk[at..at + 1024].copy_from_slice(&sb);
        write(start, &blk)?;
        write(start + 1, gdt)?;
    }
    Ok(())
}
