//! Extent trees: up to 4 extents live in the inode's `i_block`; more go into leaf blocks
//! (340 entries each) under index levels, built as shallow and as narrow as possible so
//! e2fsck has nothing to optimise. Blocks carry the `metadata_csum` extent tail. A sparse
//! file's holes ([`BlockRun::hole`]) are gaps in the logical blocks the extents map.
//!
//! Spec: Documentation/filesystems/ext4/ifork.rst ("Extent Tree").

use anyhow::{Context, Result, bail};

use super::csum::crc32c_raw;
use super::format::*;
use crate::tree::BlockRun;

const MAGIC: u16 = 0xF30A;
const IN_INODE: usize = 4;
const PER_BLOCK: usize = (BLOCK_SIZE - 12) / 12;

/// One entry of any level: logical start, and either (physical start, length) for a leaf or
/// (child block) for an index.
#[derive(Clone, Copy, Debug)]
struct Entry {
    lblk: u32,
    phys: u64,
    len: u16,
}

/// Split runs (file order) into extents of at most 32768 blocks.
fn extents(runs: &[BlockRun]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut lblk: u64 = 0;
    for r in runs {
        if r.is_hole() {
            // No extent: the blocks read as zeros.
            lblk += u64::from(r.len);
            continue;
        }
        let mut left = r.len;
        let mut phys = r.start;
        while left > 0 {
            let n = left.min(MAX_EXTENT_LEN);
            if lblk + u64::from(n) > u64::from(u32::MAX) {
                bail!("ext4: file too large for 32-bit logical block numbers");
            }
            out.push(Entry {
                lblk: u32::try_from(lblk)
                    .context("ext4: file too large for 32-bit logical block numbers")?,
                phys,
                len: n as u16, // 32768 is stored as 0x8000, the kernel's max initialized length
            });
            lblk += u64::from(n);
            phys += u64::from(n);
            left -= n;
        }
    }
    Ok(out)
}

#[allow(clippy::cast_possible_truncation)] // entries <= max <= 340 (a 4096-byte block of 12-byte entries)
fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, MAGIC);
    put_u16(buf, 2, entries as u16);
    put_u16(buf, 4, max as u16);
    put_u16(buf, 6, depth);
    put_u32(buf, 8, 0);
}

#[allow(clippy::cast_possible_truncation)] // a 48-bit block number stored as its low 32 and high 16 bits
fn put_entry(buf: &mut [u8], i: usize, e: &Entry, leaf: bool) {
    let o = 12 + i * 12;
    put_u32(buf, o, e.lblk);
    if leaf {
        // 32768 blocks: ee_len 32768 means an initialized extent of 32768 blocks.
        put_u16(buf, o + 4, e.len);
        put_u16(buf, o + 6, (e.phys >> 32) as u16);
        put_u32(buf, o + 8, e.phys as u32);
    } else {
        put_u32(buf, o + 4, e.phys as u32);
        put_u16(buf, o + 8, (e.phys >> 32) as u16);
        put_u16(buf, o + 10, 0);
    }
}

/// The result of mapping a file: the 60 bytes for `i_block` and the tree blocks to write.
pub struct Mapped {
    pub i_block: [u8; 60],
    pub tree_blocks: Vec<(u64, Vec<u8>)>,
}

/// How many tree blocks a file with these runs needs (so callers can allocate up front).
pub fn tree_blocks_needed(runs: &[BlockRun]) -> Result<u64> {
    let mut n = extents(runs)?.len();
    let mut total = 0u64;
    while n > IN_INODE {
        let blocks = n.div_ceil(PER_BLOCK);
        total += blocks as u64;
        n = blocks;
    }
    Ok(total)
}

/// Build the extent tree for `runs`, placing tree blocks at `tree_at` (exactly
/// `tree_blocks_needed` block numbers). `seed` is the inode checksum seed, `None` without
/// metadata_csum.
pub fn map(runs: &[BlockRun], tree_at: &[u64], seed: Option<u32>) -> Result<Mapped> {
    let mut level = extents(runs)?;
    let mut depth: u16 = 0;
    let mut tree_blocks = Vec::new();
    let mut next = tree_at.iter();
    while level.len() > IN_INODE {
        let mut up = Vec::new();
        for chunk in level.chunks(PER_BLOCK) {
            let Some(&blk) = next.next() else {
                bail!("ext4: internal error: extent tree block count mismatch");
            };
            let mut buf = vec![0u8; BLOCK_SIZE];
            header(&mut buf, chunk.len(), PER_BLOCK, depth);
            for (i, e) in chunk.iter().enumerate() {
                put_entry(&mut buf, i, e, depth == 0);
            }
            if let Some(s) = seed {
                let tail = 12 + PER_BLOCK * 12;
                let c = crc32c_raw(s, &buf[..tail]);
                put_u32(&mut buf, tail, c);
            }
            tree_blocks.push((blk, buf));
            up.push(Entry {
                lblk: chunk[0].lblk,
                phys: blk,
                len: 0,
            });
        }
        level = up;
        depth += 1;
    }
    let mut i_block = [0u8; 60];
    header(&mut i_block, level.len(), IN_INODE, depth);
    for (i, e) in level.iter().enumerate() {
        put_entry(&mut i_block, i, e, depth == 0);
    }
    Ok(Mapped {
        i_block,
        tree_blocks,
    })
}
