//! Per-group metadata: the used part of each inode table, block and inode bitmaps (with
//! padding bits and `metadata_csum` checksums), and the group descriptors with their
//! `uninit_bg` flags and checksums (crc32c with metadata_csum, crc16 otherwise).
//!
//! Groups whose inodes are all free get `INODE_UNINIT` and groups holding nothing but their
//! superblock backup get `BLOCK_UNINIT` (never the last group, as mke2fs); their bitmaps are
//! not written, exactly as mke2fs leaves them (checksum 0).
//!
//! Spec: Documentation/filesystems/ext4/group_descr.rst, bitmaps.rst; e2fsprogs
//! lib/ext2fs/csum.c (`ext2fs_group_desc_csum`, bitmap checksums).

use anyhow::Result;

use super::alloc::Bitmap;
use super::csum::{crc16, crc32c_raw};
use super::format::*;
use super::inode::Inode;
use super::layout::Geometry;

/// Write inode tables and bitmaps through `write(block, bytes)`; returns the descriptor
/// table (GDT, padded to whole blocks) and the total of free blocks.
#[allow(clippy::cast_possible_truncation)] // descriptor fields are lo/hi halves by design; counts are per group (<= 32768 blocks, <= 2^32 inodes checked by the layout)
pub fn write_groups(
    geo: &Geometry,
    used: &Bitmap,
    inodes: &[Inode],
    dirs_in_group: &[u32],
    csum_seed: u32,
    uuid: &[u8; 16],
    write: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<(Vec<u8>, u64)> {
    let csum = geo.metadata_csum;
    let ipg = geo.inodes_per_group;
    let last_ino = inodes.len() as u32;
    let groups = geo.groups;
    let ds = geo.desc_size;
    let mut gdt = vec![0u8; geo.gdt_blocks as usize * BLOCK_SIZE];
    let mut free_blocks_total = 0u64;
    let gdt_csum_seed = crc16(!0, uuid);
    for g in 0..groups {
        let loc = geo.locs[g as usize];
        let s = geo.group_start(g);
        let e = geo.group_end(g);
        let used_blocks = used.count_range(s, e);
        let free_blocks = (e - s) - used_blocks;
        free_blocks_total += free_blocks;
        let first = g * ipg; // inode index (0-based) of the group's first inode
        let used_inodes = last_ino.saturating_sub(first).min(ipg);
        let mut bg_flags = 0u16;
        if used_inodes == 0 {
            bg_flags |= BG_INODE_UNINIT;
        }
        if g != groups - 1 && used_blocks == geo.super_blocks(g) {
            bg_flags |= BG_BLOCK_UNINIT;
        }
        // Inode table: only the blocks holding used inodes.
        if used_inodes > 0 {
            let nblk = used_inodes.div_ceil(INODES_PER_BLOCK);
            let mut buf = vec![0u8; nblk as usize * BLOCK_SIZE];
            for k in 0..used_inodes {
                let src = &inodes[(first + k) as usize].raw;
                buf[k as usize * INODE_SIZE..(k as usize + 1) * INODE_SIZE].copy_from_slice(src);
            }
            write(loc.inode_table, &buf)?;
        }
        let mut bb_csum = 0u32;
        if bg_flags & BG_BLOCK_UNINIT == 0 {
            let mut bm = vec![0u8; BLOCK_SIZE];
            for b in s..e {
                if used.get(b) {
                    let i = (b - s) as usize;
                    bm[i / 8] |= 1 << (i % 8);
                }
            }
            for i in (e - s) as usize..BLOCKS_PER_GROUP as usize {
                bm[i / 8] |= 1 << (i % 8);
            }
            if csum {
                bb_csum = crc32c_raw(csum_seed, &bm);
            }
            write(loc.block_bitmap, &bm)?;
        }
        let mut ib_csum = 0u32;
        if bg_flags & BG_INODE_UNINIT == 0 {
            let mut bm = vec![0u8; BLOCK_SIZE];
            for i in 0..used_inodes as usize {
                bm[i / 8] |= 1 << (i % 8);
            }
            for i in ipg as usize..BLOCK_SIZE * 8 {
                bm[i / 8] |= 1 << (i % 8);
            }
            if csum {
                ib_csum = crc32c_raw(csum_seed, &bm[..ipg as usize / 8]);
            }
            write(loc.inode_bitmap, &bm)?;
        }
        let free_inodes = ipg - used_inodes;
        let dirs = dirs_in_group[g as usize];
        let d = &mut gdt[g as usize * ds..(g as usize + 1) * ds];
        put_u32(d, 0x0, loc.block_bitmap as u32);
        put_u32(d, 0x4, loc.inode_bitmap as u32);
        put_u32(d, 0x8, loc.inode_table as u32);
        put_u16(d, 0xC, free_blocks as u16);
        put_u16(d, 0xE, free_inodes as u16);
        put_u16(d, 0x10, dirs as u16);
        put_u16(d, 0x12, bg_flags);
        put_u16(d, 0x18, bb_csum as u16);
        put_u16(d, 0x1A, ib_csum as u16);
        put_u16(d, 0x1C, (ipg - used_inodes) as u16);
        if ds >= 64 {
            put_u32(d, 0x20, (loc.block_bitmap >> 32) as u32);
            put_u32(d, 0x24, (loc.inode_bitmap >> 32) as u32);
            put_u32(d, 0x28, (loc.inode_table >> 32) as u32);
            put_u16(d, 0x2C, (free_blocks >> 16) as u16);
            put_u16(d, 0x2E, (free_inodes >> 16) as u16);
            put_u16(d, 0x30, (dirs >> 16) as u16);
            put_u16(d, 0x32, ((ipg - used_inodes) >> 16) as u16);
            put_u16(d, 0x38, (bb_csum >> 16) as u16);
            put_u16(d, 0x3A, (ib_csum >> 16) as u16);
        }
        let c = if csum {
            let c = crc32c_raw(csum_seed, &g.to_le_bytes());
            (crc32c_raw(c, d) & 0xFFFF) as u16
        } else {
            let c = crc16(gdt_csum_seed, &g.to_le_bytes());
            crc16(c, &d[..0x1E])
        };
        put_u16(d, 0x1E, c);
    }
    Ok((gdt, free_blocks_total))
}
