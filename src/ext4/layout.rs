//! Filesystem geometry: block groups, inode tables, `flex_bg` packing, superblock backups and
//! the journal's place.
//!
//! Groups hold 32768 blocks of 4 KiB. With `flex_bg` (16 groups per flex group) the block
//! bitmaps, inode bitmaps and inode tables of a flex group are packed at the start of its
//! first group the way mke2fs (lib/ext2fs/alloc_tables.c) lays them out: the block bitmaps
//! first, the inode bitmaps `flexbg_size` blocks later, the inode tables after another
//! `flexbg_size` (for the last, partial flex group the spacing is its group count, as in
//! mke2fs' `table_offset`). Superblock + GDT copies live in groups 0, 1 and powers of 3, 5, 7
//! (`sparse_super`); no blocks are reserved for online resize. A last group too small to
//! carry its own overhead is dropped, as mke2fs does.
//!
//! Spec: Documentation/filesystems/ext4/overview.rst ("Layout", "Flexible Block Groups").

use anyhow::{Context, Result, bail};

use super::alloc::{Bitmap, push_run};
use super::format::*;
use super::{Ext4Options, FeatureLevel};
use crate::tree::BlockRun;

/// The most blocks a filesystem may have: 16 TiB (the profile's size limit, `profile::size::MAX_FS_SIZE`, refers here).
pub const MAX_BLOCKS: u64 = 1 << 32;

/// Where one group's metadata lives.
#[derive(Clone, Copy, Debug)]
pub struct GroupLoc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
}

#[derive(Clone, Debug)]
pub struct Geometry {
    pub blocks: u64,
    pub groups: u32,
    pub inodes_per_group: u32,
    pub itable_blocks: u32,
    pub desc_size: usize,
    pub gdt_blocks: u32,
    pub metadata_csum: bool,
    pub bit64: bool,
    pub locs: Vec<GroupLoc>,
    /// Journal blocks in file order (empty when the filesystem is too small for one).
    pub journal: Vec<BlockRun>,
    pub journal_blocks: u32,
    /// Blocks that belong to static metadata (superblocks, GDTs, bitmaps, inode tables,
    /// journal).
    pub meta: Bitmap,
}

/// e2fsprogs' `ext2fs_default_journal_size` (in 4 KiB blocks); 0 = no journal.
pub fn default_journal_blocks(blocks: u64) -> u32 {
    match blocks {
        0..2048 => 0,
        2048..32768 => 1024,
        32768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16384,
        4_194_304..8_388_608 => 32768,
        8_388_608..16_777_216 => 65536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    }
}

impl Geometry {
    pub fn group_start(&self, g: u32) -> u64 {
        u64::from(g) * BLOCKS_PER_GROUP
    }

    pub fn group_end(&self, g: u32) -> u64 {
        (self.group_start(g) + BLOCKS_PER_GROUP).min(self.blocks)
    }

    pub fn inodes_count(&self) -> u32 {
        self.groups * self.inodes_per_group
    }

    /// Blocks used by the superblock and GDT copy of group `g` (0 when it has none).
    pub fn super_blocks(&self, g: u32) -> u64 {
        if group_has_super(g) {
            1 + u64::from(self.gdt_blocks)
        } else {
            0
        }
    }

    pub fn new(opts: &Ext4Options) -> Result<Geometry> {
        let (metadata_csum, bit64) = match opts.features {
            FeatureLevel::Full => (true, true),
            FeatureLevel::Conservative => (false, false),
        };
        let desc_size = if bit64 { 64 } else { 32 };
        let mut blocks = opts.size / BLOCK_SIZE_U64;
        if blocks < 64 {
            bail!(
                "ext4: filesystem size {} bytes is too small (need at least 256 KiB)",
                opts.size
            );
        }
        if !bit64 && blocks > u64::from(u32::MAX) {
            bail!(
                "ext4: {} blocks need the 64bit feature; use the full feature level or a smaller size",
                blocks
            );
        }
        // Bounded before the in-memory bitmap (one bit per block) is sized by it.
        if blocks > MAX_BLOCKS {
            bail!(
                "ext4: filesystem size {} bytes is larger than the {} bytes hc1img writes",
                opts.size,
                MAX_BLOCKS * BLOCK_SIZE_U64
            );
        }
        if opts.bytes_per_inode < 1024 {
            bail!(
                "ext4: bytes_per_inode {} is below 1024",
                opts.bytes_per_inode
            );
        }

        // The inode count comes from the requested size (as in mke2fs, even when the last
        // group is dropped below).
        let want = (blocks * BLOCK_SIZE_U64 / opts.bytes_per_inode).max(opts.min_inodes);
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            let groups32 = u32::try_from(groups)
                .map_err(|_| anyhow::anyhow!("ext4: too many block groups"))?;
            let mut ipg = want.div_ceil(groups).max(u64::from(INODES_PER_BLOCK));
            ipg = ipg.div_ceil(u64::from(INODES_PER_BLOCK)) * u64::from(INODES_PER_BLOCK);
            if ipg > BLOCKS_PER_GROUP {
                bail!(
                    "ext4: {} inodes do not fit in {} groups of at most 32768 inodes; raise the filesystem size or bytes_per_inode",
                    want,
                    groups
                );
            }
            if ipg * groups > u64::from(u32::MAX) {
                bail!("ext4: {} inodes exceed the 2^32 limit", ipg * groups);
            }
            let itable_blocks = u32::try_from(ipg / u64::from(INODES_PER_BLOCK))
                .context("ext4: inode table blocks per group exceed 2^32")?;
            let gdt_blocks = u32::try_from((groups * desc_size as u64).div_ceil(BLOCK_SIZE_U64))
                .context("ext4: group descriptor blocks exceed 2^32")?;
            // mke2fs drops a last group that cannot hold its overhead plus 50 blocks.
            let last = groups32 - 1;
            let rem = blocks - u64::from(last) * BLOCKS_PER_GROUP;
            let mut overhead = 3 + u64::from(itable_blocks);
            if group_has_super(last) {
                overhead += 1 + u64::from(gdt_blocks);
            }
            if groups > 1 && rem < overhead + 50 {
                blocks -= rem;
                continue;
            }
            let mut geo = Geometry {
                blocks,
                groups: groups32,
                inodes_per_group: u32::try_from(ipg)
                    .context("ext4: inodes per group exceed 2^32")?,
                itable_blocks,
                desc_size,
                gdt_blocks,
                metadata_csum,
                bit64,
                locs: Vec::new(),
                journal: Vec::new(),
                journal_blocks: 0,
                meta: Bitmap::new(blocks),
            };
            geo.place_metadata()?;
            geo.place_journal(opts)?;
            return Ok(geo);
        }
    }

    /// Mark superblock/GDT copies, then pack bitmaps and inode tables per flex group.
    fn place_metadata(&mut self) -> Result<()> {
        for g in 0..self.groups {
            let n = self.super_blocks(g);
            self.meta.set_range(self.group_start(g), n);
        }
        let mut locs = Vec::with_capacity(self.groups as usize);
        let mut fg = 0;
        while fg < self.groups {
            let n = FLEX_BG_SIZE.min(self.groups - fg);
            // mke2fs keeps the last (partial) flex group's tables contiguous: the inode
            // bitmaps start `n` blocks after the block bitmaps, except that a lone group
            // keeps the full 16-block spacing.
            let flex = if n == 1 { FLEX_BG_SIZE } else { n };
            let base = self.group_start(fg) + self.super_blocks(fg);
            let bb = self.find_free(base, u64::from(n))?;
            self.meta.set_range(bb, u64::from(n));
            let ib = self.find_free(bb + u64::from(flex), u64::from(n))?;
            self.meta.set_range(ib, u64::from(n));
            let mut it_next = ib + u64::from(flex);
            for i in 0..n {
                let it = self.find_free(it_next, u64::from(self.itable_blocks))?;
                self.meta.set_range(it, u64::from(self.itable_blocks));
                it_next = it + u64::from(self.itable_blocks);
                locs.push(GroupLoc {
                    block_bitmap: bb + u64::from(i),
                    inode_bitmap: ib + u64::from(i),
                    inode_table: it,
                });
            }
            fg += n;
        }
        self.locs = locs;
        Ok(())
    }

    /// First run of `n` free blocks at or after `from`.
    fn find_free(&self, from: u64, n: u64) -> Result<u64> {
        let mut at = from;
        loop {
            let Some(s) = self.meta.next_clear(at) else {
                bail!("ext4: no room for group metadata; increase the filesystem size");
            };
            let run = self.meta.clear_run(s, n);
            if run == n {
                return Ok(s);
            }
            at = s + run;
        }
    }

    /// The journal goes right after group 0's metadata, as few runs as possible.
    fn place_journal(&mut self, opts: &Ext4Options) -> Result<()> {
        let jb = match opts.journal_blocks {
            Some(n) if n < 1024 => bail!(
                "ext4: journal_blocks {} is below the JBD2 minimum of 1024",
                n
            ),
            Some(n) => n,
            None => default_journal_blocks(self.blocks),
        };
        if jb == 0 {
            return Ok(());
        }
        let free = self.blocks - self.meta.count_range(0, self.blocks);
        if u64::from(jb) * 2 > free {
            bail!(
                "ext4: a {}-block journal does not fit a {}-block filesystem; increase the size or lower journal_blocks",
                jb,
                self.blocks
            );
        }
        let mut left = u64::from(jb);
        let mut at = 0;
        let mut runs = Vec::new();
        while left > 0 {
            let Some(s) = self.meta.next_clear(at) else {
                bail!("ext4: no room for the journal; increase the filesystem size");
            };
            let len = self.meta.clear_run(s, left);
            self.meta.set_range(s, len);
            push_run(
                &mut runs,
                BlockRun {
                    start: s,
                    len: u32::try_from(len).context("ext4: journal run longer than 2^32 blocks")?,
                },
            );
            left -= len;
            at = s + len;
        }
        self.journal = runs;
        self.journal_blocks = jb;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(size: u64) -> Ext4Options {
        Ext4Options {
            size,
            bytes_per_inode: 16384,
            min_inodes: 0,
            features: FeatureLevel::Full,
            uuid: [1; 16],
            hash_seed: [2; 16],
            label: String::new(),
            timestamp: 0,
            journal_blocks: None,
        }
    }

    #[test]
    fn four_gib_like_mke2fs() {
        let g = Geometry::new(&opts(4 << 30)).unwrap();
        assert_eq!(g.groups, 32);
        assert_eq!(g.inodes_per_group, 8192);
        assert_eq!(g.gdt_blocks, 1);
        assert_eq!(g.locs[0].block_bitmap, 2);
        assert_eq!(g.locs[0].inode_bitmap, 18);
        assert_eq!(g.locs[0].inode_table, 34);
        assert_eq!(g.locs[1].inode_table, 546);
        assert_eq!(g.locs[16].block_bitmap, 524288);
        assert_eq!(g.locs[31].inode_table, 532000);
        assert_eq!(g.journal_blocks, 16384);
    }

    #[test]
    fn a_huge_size_is_refused_before_allocating() {
        let e = Geometry::new(&opts(1 << 50)).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn tiny_last_group_is_dropped() {
        let g = Geometry::new(&opts((32768 + 100) * 4096)).unwrap();
        assert_eq!(g.groups, 1);
        assert_eq!(g.blocks, 32768);
    }
}
