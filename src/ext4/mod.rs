//! ext4 filesystem writer: formats a filesystem image straight from a [`crate::tree::Tree`],
//! without `mkfs`, root or loop devices.
//!
//! Contract (used by `rootfs` import and `build`):
//!
//! 1. [`Ext4Writer::create`] fixes the geometry (size, groups, inode tables) and reserves the
//!    metadata areas, writing into `file` at byte `offset` (the partition start in ssd.img).
//! 2. While the tarball streams, [`Ext4Writer::write_data`] copies each regular file's bytes
//!    straight from the decompressor into freshly allocated data blocks and returns the
//!    [`crate::tree::DataRef`] that the tree stores. Memory holds no file data.
//! 3. [`Ext4Writer::finish`] assigns inode numbers in [`crate::tree::Tree::walk`] order,
//!    writes in-memory files, directories (htree for multi-block ones), symlinks, xattrs,
//!    extent trees, `lost+found`, the journal, inode tables, bitmaps, group descriptors and
//!    superblocks (with backups), all with metadata_csum checksums (`Full`) or the
//!    `uninit_bg` crc16 group checksums (`Conservative`).
//!
//! Blocks written by `write_data` but no longer referenced by the tree (a file replaced by a
//! later tar entry, by a package or by an edit) go back to the allocator at
//! [`Ext4Writer::reclaim`] (the build calls it after the tarball and after each package) and at
//! `finish`, and later writes reuse them ([`alloc`]).
//!
//! What the writer decides itself (all deterministic, nothing random):
//!
//! - Geometry as mke2fs would choose it for `-b 4096 -I 256 -i bytes_per_inode` without
//!   `resize_inode` (same block count, inodes per group and flex_bg placement of bitmaps and
//!   inode tables; checked against mke2fs/dumpe2fs in the tests). 5 % reserved blocks,
//!   `s_max_mnt_count` -1, no check interval, default mount options `user_xattr,acl`,
//!   `s_flags` = signed directory hash (as mke2fs writes on x86), half-MD4 htree hash with the given seed.
//! - The journal (e2fsprogs' default size unless given) sits right after group 0's
//!   metadata, before the file data; its blocks other than the JBD2 superblock stay holes
//!   (reported in [`Ext4Stats::must_be_zero`]: they must read as zeros on the device).
//! - File data is allocated next-fit: in ascending block order from where the last file
//!   ended, skipping metadata, wrapping to the start for freed blocks only when the end is
//!   reached; at `finish` directories, in-memory files, long symlinks, extent-tree and xattr
//!   blocks follow.
//! - Inode atime, ctime and crtime are set to the tree's mtime; inodes the writer creates
//!   (`lost+found`, the journal) use `Ext4Options::timestamp`. Generation numbers are 0.
//! - Unused inode tables and bitmaps of uninitialised groups are never written
//!   (`INODE_UNINIT` / `BLOCK_UNINIT`, `itable_unused`); like mke2fs' lazy_itable_init the
//!   kernel zeroes the rest of the inode tables after the first mount.
//!
//! Limits: at most 2^32 inodes and 32768 per group; one xattr block per inode (no
//! `ea_inode`), so a file's xattrs must fit in 92 bytes in-inode plus ~4 KiB; directories
//! up to a two-level htree (~250k blocks); symlink targets up to 4095 bytes.
//!
//! Spec: the kernel's Documentation/filesystems/ext4/ and e2fsprogs (mke2fs, lib/ext2fs).

#![warn(clippy::cast_possible_truncation)]

use std::fs::File;
use std::io::Read;

use anyhow::Result;

use crate::tree::{DataRef, Tree};

mod alloc;
mod csum;
mod dir;
mod extent;
mod format;
mod group;
mod htree;
mod inode;
mod journal;
mod layout;
mod numbering;
mod superblock;
mod writer;
mod xattr;

pub use format::{TIME_MAX, TIME_MIN};

/// The filesystem is too small for what is put in it (blocks or inodes): `size = "auto"`
/// builds again, that much larger, when it sees this in an error's chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TooSmall {
    pub message: String,
    /// Blocks of 4 KiB that were missing (at least this many; 0 when blocks were not short).
    pub blocks: u64,
    /// Inodes the tree needs in all (0 when inodes were not short).
    pub inodes: u64,
}

/// `t` clamped into the range a 256-byte ext4 inode stores ([`TIME_MIN`]..=[`TIME_MAX`]),
/// nanoseconds dropped at either end, as the kernel's `timestamp_truncate` does.
pub fn clamp_time(t: crate::tree::Timestamp) -> crate::tree::Timestamp {
    if t.sec <= TIME_MIN || t.sec >= TIME_MAX {
        crate::tree::Timestamp::from_secs(t.sec.clamp(TIME_MIN, TIME_MAX))
    } else {
        t
    }
}

/// Which on-disk feature set to write.
/// It is also the profile's `[rootfs] features` (`"full"`, `"conservative"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureLevel {
    /// `has_journal ext_attr dir_index filetype extent 64bit flex_bg sparse_super large_file
    /// huge_file dir_nlink extra_isize metadata_csum`. The default.
    #[default]
    Full,
    /// The same without `64bit` and `metadata_csum`, for old kernels and tools.
    Conservative,
}

/// Everything that decides the bytes of the filesystem besides the tree.
#[derive(Clone, Debug)]
pub struct Ext4Options {
    /// Filesystem size in bytes (rounded down to whole 4 KiB blocks).
    pub size: u64,
    /// One inode per this many bytes of filesystem (mke2fs' `inode_ratio`, default 16384).
    pub bytes_per_inode: u64,
    /// At least this many inodes in total, whatever the ratio gives.
    pub min_inodes: u64,
    pub features: FeatureLevel,
    /// Filesystem UUID (derived from the derivation hash by the caller).
    pub uuid: [u8; 16],
    /// Directory hash seed (`s_hash_seed`).
    pub hash_seed: [u8; 16],
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Seconds since the epoch for every time the writer sets itself (superblock times,
    /// `lost+found`, directories it creates).
    pub timestamp: i64,
    /// Journal size in blocks; `None` picks e2fsprogs' default for the filesystem size.
    pub journal_blocks: Option<u32>,
}

/// Counts reported after a successful `finish`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ext4Stats {
    pub block_size: u32,
    pub blocks_total: u64,
    pub blocks_free: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
    /// Size of the journal (inode 8) in blocks; 0 when the filesystem is too small for one.
    pub journal_blocks: u32,
    /// Byte ranges `(offset, length)`, relative to the filesystem start, that the writer left
    /// as holes but that must read as zeros on the target device: the journal body (like
    /// `mke2fs -E lazy_journal_init`). Stale data there could be replayed as old journal
    /// transactions after a crash, so a block map (bmaptool) must list these ranges as
    /// mapped. Everything else left unwritten is safe to skip.
    pub must_be_zero: Vec<(u64, u64)>,
}

/// A filesystem being written; see the module docs for the three steps.
pub struct Ext4Writer {
    inner: writer::Writer,
}

impl Ext4Writer {
    /// Fix the geometry and start a filesystem at byte `offset` of `file`.
    pub fn create(file: File, offset: u64, opts: &Ext4Options) -> Result<Self> {
        Ok(Ext4Writer {
            inner: writer::Writer::create(file, offset, opts)?,
        })
    }

    /// From now on, a file [`Self::write_data`] has no room for is read past and counted, not
    /// an error: [`Self::check_room`] then says how much room the whole stream lacked.
    pub fn read_on_when_full(&mut self) {
        self.inner.read_on_when_full();
    }

    /// Copy exactly `len` bytes from `src` into newly allocated data blocks.
    pub fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef> {
        self.inner.write_data(src, len)
    }

    /// A regular file's contents: in memory, or read back from where [`Self::write_data`]
    /// stored them (at most [`writer::MAX_READ_BACK`] bytes).
    pub fn read_data(&self, data: &crate::tree::FileData) -> Result<Vec<u8>> {
        self.inner.read_data(data)
    }

    /// Give back the blocks of files no reachable node refers to any more; every `DataRef`
    /// still meant for the tree must be in it. Returns the blocks freed.
    pub fn reclaim(&mut self, tree: &Tree) -> Result<u64> {
        self.inner.reclaim(tree)
    }

    /// An error saying how much room file data lacked, when some did not fit
    /// ([`Self::write_data`] reads on past such files so the whole shortfall is known), and
    /// how many inodes `tree` needs when the filesystem has fewer.
    pub fn check_room(&self, tree: &Tree) -> Result<()> {
        self.inner.check_room(tree)
    }

    /// Bytes still free for file data (whole 4 KiB blocks); `finish` needs a little of it
    /// for directories, in-memory files and metadata blocks.
    pub fn free_bytes(&self) -> u64 {
        self.inner.free_bytes()
    }

    /// Set the time used for everything the writer stamps itself (superblock, lost+found),
    /// once it is known (after the tarball has streamed past).
    pub fn set_timestamp(&mut self, timestamp: i64) {
        self.inner.set_timestamp(timestamp);
    }

    /// Write all metadata for `tree` and close the filesystem.
    pub fn finish(self, tree: &Tree) -> Result<Ext4Stats> {
        self.inner.finish(tree)
    }
}
