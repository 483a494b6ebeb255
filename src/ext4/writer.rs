//! The filesystem writer proper: streams file data into blocks, then serialises the tree into
//! inodes, directories, extent trees, xattrs and the journal, and finally hands the inode
//! table to [`super::group`] (tables, bitmaps, descriptors) and [`super::superblock`]
//! (primary + `sparse_super` backups).
//!
//! Inode numbers follow [`Tree::walk`] order from 11 (12 when this writer adds
//! `lost+found` as inode 11); inodes 1-10 are reserved as mke2fs leaves them (8 = journal).
//! Every block is written once at its final place with positional writes; blocks nobody uses
//! are never written, so they stay holes in a sparse image file.
//!
//! Spec: Documentation/filesystems/ext4/ (super.rst, group_descr.rst, bitmaps.rst,
//! inodes.rst, directory.rst); e2fsprogs misc/mke2fs.c for the defaults.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail, ensure};

use super::alloc::{Allocator, Bitmap, push_run};
use super::csum::crc32c_raw;
use super::dir::{self, DirEntry};
use super::extent;
use super::format::*;
use super::group;
use super::htree;
use super::inode::{Inode, encode_device, inode_seed};
use super::journal;
use super::layout::Geometry;
use super::numbering::{self, Numbering};
use super::superblock;
use super::xattr;
use super::{Ext4Options, Ext4Stats};
use crate::tree::{BlockRun, DataRef, FileData, NodeId, NodeKind, Timestamp, Tree, display};

/// Bytes per streaming write.
const CHUNK_BLOCKS: u64 = 256;
/// The largest file [`Ext4Writer::read_data`] reads back (kernel modules and their lists are
/// a few MiB at most).
pub const MAX_READ_BACK: u64 = 256 << 20;
const LPF_BLOCKS: usize = 4;

pub struct Writer {
    file: File,
    offset: u64,
    opts: Ext4Options,
    geo: Geometry,
    alloc: Allocator,
    buf: Vec<u8>,
    /// Whether [`Writer::write_data`] reads on past a file that does not fit (counting it in
    /// `overflow`) instead of failing.
    read_on_when_full: bool,
    /// Blocks of file data that did not fit ([`Writer::write_data`] read past them), 0 while
    /// everything fits.
    overflow: u64,
    /// What the first file that did not fit needed, for the message.
    overflow_first: Option<String>,
}

fn full_error(what: &str, need_blocks: u64, free: u64, total: u64) -> anyhow::Error {
    let missing = need_blocks - free.min(need_blocks);
    anyhow::Error::new(super::TooSmall {
        message: format!(
            "ext4: filesystem full: {what} needs {need_blocks} blocks of 4 KiB but only {free} of {total} are free; increase the rootfs size by at least {} MiB",
            (missing * 4).div_ceil(1024).max(1)
        ),
        blocks: missing.max(1),
        inodes: 0,
    })
}

impl Writer {
    pub fn create(file: File, offset: u64, opts: &Ext4Options) -> Result<Self> {
        if opts.label.len() > 16 {
            bail!(
                "ext4: volume label {:?} is longer than 16 bytes",
                opts.label
            );
        }
        if !(0..=i64::from(u32::MAX)).contains(&opts.timestamp) {
            bail!(
                "ext4: timestamp {} is outside 1970..2106, which the superblock time fields hold",
                opts.timestamp
            );
        }
        let geo = Geometry::new(opts)?;
        let alloc = Allocator::new(geo.meta.clone());
        Ok(Writer {
            file,
            offset,
            opts: opts.clone(),
            geo,
            alloc,
            buf: Vec::new(),
            read_on_when_full: false,
            overflow: 0,
            overflow_first: None,
        })
    }

    pub fn free_bytes(&self) -> u64 {
        self.alloc.free() * BLOCK_SIZE_U64
    }

    fn write_at(&self, blk: u64, data: &[u8]) -> Result<()> {
        let pos = self.offset + blk * BLOCK_SIZE_U64;
        self.file
            .write_all_at(data, pos)
            .with_context(|| format!("ext4: writing {} bytes at image offset {pos}", data.len()))
    }

    pub fn set_timestamp(&mut self, timestamp: i64) {
        self.opts.timestamp = timestamp;
    }

    /// After this, a file that does not fit is not an error of [`Self::write_data`] (module
    /// doc of [`super`]).
    pub fn read_on_when_full(&mut self) {
        self.read_on_when_full = true;
    }

    /// Copy `len` bytes from `src` into newly allocated blocks. A file that does not fit is
    /// an error ([`super::TooSmall`]); after [`Self::read_on_when_full`], it is read and
    /// dropped instead: the writer counts its blocks and goes on, so that
    /// [`Self::check_room`] can tell how much room the whole stream lacked (the build then
    /// grows the filesystem by that much once, instead of guessing); its `DataRef` names no
    /// block and must not reach [`Self::finish`].
    #[allow(clippy::cast_possible_truncation)] // a chunk is CHUNK_BLOCKS blocks of 4096 bytes; span and bytes <= one chunk
    pub fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef> {
        let nblocks = len.div_ceil(BLOCK_SIZE_U64);
        if nblocks > self.alloc.free() && !self.read_on_when_full {
            return Err(full_error(
                &format!("a {len}-byte file"),
                nblocks,
                self.alloc.free(),
                self.geo.blocks,
            ));
        }
        if self.overflow > 0 || nblocks > self.alloc.free() {
            let n = std::io::copy(&mut src.take(len), &mut std::io::sink())
                .context("ext4: reading file data")?;
            if n != len {
                bail!("ext4: data source ended early: expected {len} bytes, got {n}");
            }
            if self.overflow_first.is_none() {
                self.overflow_first = Some(format!(
                    "a {len}-byte file needs {nblocks} blocks of 4 KiB but only {} of {} are free",
                    self.alloc.free(),
                    self.geo.blocks
                ));
            }
            self.overflow += nblocks;
            return Ok(DataRef {
                size: len,
                runs: Vec::new(),
            });
        }
        if self.buf.len() < (CHUNK_BLOCKS * BLOCK_SIZE_U64) as usize {
            self.buf = vec![0u8; (CHUNK_BLOCKS * BLOCK_SIZE_U64) as usize];
        }
        let mut runs = Vec::new();
        let mut left = len;
        let mut done: u64 = 0;
        while left > 0 {
            let want = left.div_ceil(BLOCK_SIZE_U64).min(CHUNK_BLOCKS);
            let Some(run) = self.alloc.alloc_run(want) else {
                return Err(full_error("file data", nblocks, 0, self.geo.blocks));
            };
            let span = u64::from(run.len) * BLOCK_SIZE_U64;
            let bytes = left.min(span) as usize;
            let buf = &mut self.buf[..span as usize];
            if let Err(e) = src.read_exact(&mut buf[..bytes]) {
                if e.kind() == ErrorKind::UnexpectedEof {
                    bail!(
                        "ext4: data source ended early: expected {len} bytes, got fewer than {}",
                        done + bytes as u64
                    );
                }
                return Err(e).context("ext4: reading file data");
            }
            buf[bytes..].fill(0);
            let pos = self.offset + run.start * BLOCK_SIZE_U64;
            self.file
                .write_all_at(buf, pos)
                .with_context(|| format!("ext4: writing file data at image offset {pos}"))?;
            push_run(&mut runs, run);
            left -= bytes as u64;
            done += bytes as u64;
        }
        Ok(DataRef { size: len, runs })
    }

    /// An error ([`super::TooSmall`], saying how many blocks and inodes were missing) when
    /// file data did not fit since the writer was created ([`Self::write_data`]), or `tree`
    /// has more inodes than the filesystem: both shortfalls at once, so one larger build
    /// fixes both.
    pub fn check_room(&self, tree: &Tree) -> Result<()> {
        let have = self.geo.inodes_count();
        let inodes = match numbering::number(tree, u32::MAX) {
            Ok(n) if n.last_ino > have => u64::from(n.last_ino),
            _ => 0,
        };
        if self.overflow == 0 && inodes == 0 {
            return Ok(());
        }
        // The blocks still free would have taken part of what did not fit.
        let blocks = if self.overflow > 0 {
            self.overflow.saturating_sub(self.alloc.free()).max(1)
        } else {
            0
        };
        let mut message = Vec::new();
        if blocks > 0 {
            message.push(format!(
                "ext4: filesystem full: {}; increase the rootfs size by at least {} MiB (the file data that did not fit needs {blocks} more blocks of 4 KiB)",
                self.overflow_first.as_deref().unwrap_or("file data"),
                (blocks * 4).div_ceil(1024)
            ));
        }
        if inodes > 0 {
            message.push(format!(
                "ext4: the tree needs {inodes} inodes but the filesystem has {have}"
            ));
        }
        Err(anyhow::Error::new(super::TooSmall {
            message: message.join("; "),
            blocks,
            inodes,
        }))
    }

    /// Give back the data blocks no reachable node of `tree` refers to any more (files the
    /// package install or the edits replaced or removed, file data of entries that were
    /// refused): later writes reuse them ([`super::alloc`]). Reachability decides, so a run
    /// that a hard link or a copy of a node still names stays. The caller must hold every
    /// `DataRef` it still means to put in the tree *in* the tree when it calls this (a node
    /// set aside outside it would lose its blocks). Returns the number of blocks freed.
    pub fn reclaim(&mut self, tree: &Tree) -> Result<u64> {
        let mut live = Bitmap::new(self.geo.blocks);
        let mut bad: Option<String> = None;
        tree.walk(|path, _, id| {
            if bad.is_some() {
                return;
            }
            if let NodeKind::File(FileData::Stored(r)) = &tree.node(id).kind {
                // A sparse file's holes hold no blocks.
                for x in r.runs.iter().filter(|x| !x.is_hole()) {
                    let end = x.start.saturating_add(u64::from(x.len));
                    if end > self.geo.blocks
                        || self.alloc.taken.count_range(x.start, end) != u64::from(x.len)
                    {
                        bad = Some(format!(
                            "ext4: /{}: data blocks {}..{end} are not handed out: was its DataRef made by this writer, and not freed already?",
                            display(path),
                            x.start
                        ));
                        return;
                    }
                    live.set_range(x.start, u64::from(x.len));
                }
            }
        });
        if let Some(e) = bad {
            bail!(e);
        }
        let mut freed = 0;
        for r in self.alloc.taken.runs_not_in(self.alloc.fixed(), &live) {
            self.alloc.free_run(r)?;
            freed += u64::from(r.len);
        }
        Ok(freed)
    }

    /// The contents of a regular file: held in memory, or read back from the blocks
    /// [`Self::write_data`] put it in. At most [`MAX_READ_BACK`] bytes.
    pub fn read_data(&self, data: &FileData) -> Result<Vec<u8>> {
        let r = match data {
            FileData::Bytes(b) => return Ok(b.clone()),
            FileData::Stored(r) => r,
        };
        ensure!(
            r.size <= MAX_READ_BACK,
            "ext4: a {}-byte file is more than the {MAX_READ_BACK} bytes read back at once",
            r.size
        );
        let mut out = vec![0u8; usize::try_from(r.size).context("ext4: file too large")?];
        let mut done = 0usize;
        for run in &r.runs {
            if done == out.len() {
                break;
            }
            let span = usize::try_from(u64::from(run.len) * BLOCK_SIZE_U64)
                .context("ext4: extent too large")?;
            let n = span.min(out.len() - done);
            if run.is_hole() {
                done += n; // `out` is zeros already
                continue;
            }
            let pos = self.offset + run.start * BLOCK_SIZE_U64;
            self.file
                .read_exact_at(&mut out[done..done + n], pos)
                .with_context(|| format!("ext4: reading file data back at image offset {pos}"))?;
            done += n;
        }
        ensure!(
            done == out.len(),
            "ext4: a file's extents hold fewer bytes than its size"
        );
        Ok(out)
    }

    fn alloc_blocks(&mut self, n: u64, used: &mut Bitmap, what: &str) -> Result<Vec<BlockRun>> {
        let free = self.alloc.free();
        let runs = self
            .alloc
            .alloc(n)
            .ok_or_else(|| full_error(what, n, free, self.geo.blocks))?;
        for r in &runs {
            used.set_range(r.start, u64::from(r.len));
        }
        Ok(runs)
    }

    /// Write `blocks` (each one block) at freshly allocated places; returns their runs.
    fn store_blocks(
        &mut self,
        blocks: &[Vec<u8>],
        used: &mut Bitmap,
        what: &str,
    ) -> Result<Vec<BlockRun>> {
        let runs = self.alloc_blocks(blocks.len() as u64, used, what)?;
        let mut i = 0;
        for r in &runs {
            for k in 0..u64::from(r.len) {
                self.write_at(r.start + k, &blocks[i])?;
                i += 1;
            }
        }
        Ok(runs)
    }

    /// Map `runs` with an extent tree (allocating tree blocks); returns (i_block, tree blocks).
    fn map_extents(
        &mut self,
        runs: &[BlockRun],
        ino: u32,
        used: &mut Bitmap,
        what: &str,
    ) -> Result<([u8; 60], u64)> {
        let need = extent::tree_blocks_needed(runs)?;
        let mut at = Vec::new();
        if need > 0 {
            for r in self.alloc_blocks(need, used, what)? {
                at.extend(r.start..r.start + u64::from(r.len));
            }
        }
        let seed = self
            .geo
            .metadata_csum
            .then(|| inode_seed(self.csum_seed(), ino));
        let m = extent::map(runs, &at, seed)?;
        for (blk, data) in &m.tree_blocks {
            self.write_at(*blk, data)?;
        }
        Ok((m.i_block, need))
    }

    fn csum_seed(&self) -> u32 {
        crc32c_raw(!0, &self.opts.uuid)
    }

    fn base_inode(&self, mode: u16, uid: u32, gid: u32, t: Timestamp) -> Inode {
        let mut i = Inode::new();
        i.set_mode(mode);
        i.set_owner(uid, gid);
        i.set_times(t, t, t, t);
        i
    }

    /// The inode of one tree node, writing whatever blocks it needs (directory blocks,
    /// in-memory data, long symlink target, extent tree, xattr block).
    fn node_inode(
        &mut self,
        tree: &Tree,
        id: NodeId,
        num: &Numbering,
        used: &mut Bitmap,
    ) -> Result<Inode> {
        let csum = self.geo.metadata_csum;
        let csum_seed = self.csum_seed();
        let unsigned_hash = false;
        let node = tree.node(id);
        let ino = num.ino_of[&id];
        let path = num.path_of[&id].clone();
        let m = &node.meta;
        let mode = node.kind.type_bits() | (m.perm & 0o7777);
        let mut inode = self.base_inode(mode, m.uid, m.gid, m.mtime);
        let mut fs_blocks: u64 = 0;
        let mut flags = 0u32;
        match &node.kind {
            NodeKind::Dir(_) => {
                let mut entries = Vec::new();
                let mut subdirs = 0u32;
                if id == Tree::ROOT
                    && let Some(l) = num.lpf_ino
                {
                    entries.push(DirEntry {
                        name: b"lost+found",
                        ino: l,
                        ftype: FT_DIR,
                    });
                    subdirs += 1;
                }
                for (name, child) in tree.children(id) {
                    if name.is_empty()
                        || name.len() > 255
                        || name.contains(&b'/')
                        || name.contains(&0)
                    {
                        bail!(
                            "ext4: {path}: entry name {:?} is empty, longer than 255 bytes or contains '/' or NUL",
                            display(name)
                        );
                    }
                    let ck = &tree.node(child).kind;
                    if ck.is_dir() {
                        subdirs += 1;
                    }
                    entries.push(DirEntry {
                        name,
                        ino: num.ino_of[&child],
                        ftype: ftype(ck),
                    });
                }
                entries.sort_by(|a, b| a.name.cmp(b.name));
                let parent = num.ino_of[&num.parent_of[&id]];
                let seed = csum.then(|| inode_seed(csum_seed, ino));
                let blocks = if dir::fits_one_block(&entries, csum) {
                    dir::linear_blocks(ino, parent, &entries, 0, seed)
                } else {
                    flags |= INODE_INDEX_FL;
                    htree::build(
                        ino,
                        parent,
                        &entries,
                        &self.opts.hash_seed,
                        unsigned_hash,
                        seed,
                    )
                    .with_context(|| format!("ext4: {path}"))?
                };
                let runs = self.store_blocks(&blocks, used, &format!("directory {path}"))?;
                let (ib, tb) = self.map_extents(&runs, ino, used, &path)?;
                inode.set_i_block(&ib);
                flags |= INODE_EXTENTS_FL;
                fs_blocks += blocks.len() as u64 + tb;
                inode.set_size(blocks.len() as u64 * BLOCK_SIZE_U64);
                let links = 2 + subdirs;
                #[allow(clippy::cast_possible_truncation)] // links <= 65000 in this branch
                inode.set_links(if links > 65000 { 1 } else { links as u16 });
            }
            NodeKind::File(data) => {
                let (runs, size) = match data {
                    FileData::Stored(r) => (r.runs.clone(), r.size),
                    FileData::Bytes(b) => {
                        let n = (b.len() as u64).div_ceil(BLOCK_SIZE_U64);
                        let runs = self.alloc_blocks(n, used, &format!("file {path}"))?;
                        let mut off = 0usize;
                        for r in &runs {
                            let span = r.len as usize * BLOCK_SIZE;
                            let mut chunk = vec![0u8; span];
                            let end = (off + span).min(b.len());
                            chunk[..end - off].copy_from_slice(&b[off..end]);
                            self.write_at(r.start, &chunk)?;
                            off += span;
                        }
                        (runs, b.len() as u64)
                    }
                };
                let (ib, tb) = self.map_extents(&runs, ino, used, &path)?;
                inode.set_i_block(&ib);
                flags |= INODE_EXTENTS_FL;
                let data_blocks: u64 = runs
                    .iter()
                    .filter(|r| !r.is_hole())
                    .map(|r| u64::from(r.len))
                    .sum();
                fs_blocks += data_blocks + tb;
                inode.set_size(size);
                inode.set_links(link_count(num.nlinks[&id], &path)?);
            }
            NodeKind::Symlink(target) => {
                if target.is_empty() || target.len() > 4095 || target.contains(&0) {
                    bail!(
                        "ext4: {path}: symlink target is {} bytes or contains NUL; it must be 1..4095 bytes without NUL",
                        target.len()
                    );
                }
                if target.len() < 60 {
                    inode.set_i_block(target);
                } else {
                    let mut blk = vec![0u8; BLOCK_SIZE];
                    blk[..target.len()].copy_from_slice(target);
                    let runs = self.store_blocks(&[blk], used, &format!("symlink {path}"))?;
                    let (ib, tb) = self.map_extents(&runs, ino, used, &path)?;
                    inode.set_i_block(&ib);
                    flags |= INODE_EXTENTS_FL;
                    fs_blocks += 1 + tb;
                }
                inode.set_size(target.len() as u64);
                inode.set_links(link_count(num.nlinks[&id], &path)?);
            }
            NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
                if *major > 0xfff || *minor > 0xf_ffff {
                    bail!(
                        "ext4: {path}: device {major}:{minor} does not fit the kernel's 12-bit major / 20-bit minor encoding"
                    );
                }
                inode.set_i_block(&encode_device(*major, *minor));
                inode.set_links(link_count(num.nlinks[&id], &path)?);
            }
            NodeKind::Fifo | NodeKind::Socket => {
                inode.set_links(link_count(num.nlinks[&id], &path)?);
            }
        }
        if !m.xattrs.is_empty() {
            let attrs = xattr::prepare(&m.xattrs, &path)?;
            let (ibody, block) = xattr::split(attrs, &path)?;
            xattr::write_ibody(&mut inode.raw, &ibody);
            if !block.is_empty() {
                let runs = self.alloc_blocks(1, used, &format!("xattrs of {path}"))?;
                let blk = runs[0].start;
                let data = xattr::block(&block, blk, csum.then_some(csum_seed));
                self.write_at(blk, &data)?;
                inode.set_file_acl(blk);
                fs_blocks += 1;
            }
        }
        inode.set_flags(flags);
        inode.set_blocks(fs_blocks);
        inode.set_flags(flags);
        inode.set_blocks(fs_blocks);
        Ok(inode)
    }

    /// Write the inodes, directories, bitmaps, group descriptors and superblocks. The image
    /// is not flushed: the caller does, once everything around the filesystem is written.
    pub fn finish(mut self, tree: &Tree) -> Result<Ext4Stats> {
        self.check_room(tree)?;
        // What the edits replaced or removed is free for the directories and in-memory files.
        self.reclaim(tree)?;
        let csum = self.geo.metadata_csum;
        let csum_seed = self.csum_seed();
        let ts = Timestamp::from_secs(self.opts.timestamp);
        let num = numbering::number(tree, self.geo.inodes_count())?;
        let last_ino = num.last_ino;

        // Final block usage: metadata plus every referenced data run.
        let mut used = self.geo.meta.clone();
        for &id in &num.order {
            if let NodeKind::File(FileData::Stored(r)) = &tree.node(id).kind {
                self.claim_stored(r, &num.path_of[&id], &mut used)?;
            }
        }

        let mut inodes: Vec<Inode> = vec![Inode::new(); last_ino as usize];
        let ipg = self.geo.inodes_per_group;
        let mut dirs_in_group = vec![0u32; self.geo.groups as usize];
        let mut note_dir = |ino: u32| dirs_in_group[((ino - 1) / ipg) as usize] += 1;
        for &id in &num.order {
            let ino = num.ino_of[&id];
            if tree.node(id).kind.is_dir() {
                note_dir(ino);
            }
            inodes[(ino - 1) as usize] = self.node_inode(tree, id, &num, &mut used)?;
        }
        let lpf_ino = num.lpf_ino;

        // lost+found, when the tree has none.
        if let Some(l) = lpf_ino {
            note_dir(l);
            let mut inode = self.base_inode(S_IFDIR | 0o700, 0, 0, ts);
            let seed = csum.then(|| inode_seed(csum_seed, l));
            let blocks = dir::linear_blocks(l, ROOT_INO, &[], LPF_BLOCKS - 1, seed);
            let runs = self.store_blocks(&blocks, &mut used, "lost+found")?;
            let (ib, tb) = self.map_extents(&runs, l, &mut used, "lost+found")?;
            inode.set_i_block(&ib);
            inode.set_flags(INODE_EXTENTS_FL);
            inode.set_size(blocks.len() as u64 * BLOCK_SIZE_U64);
            inode.set_blocks(blocks.len() as u64 + tb);
            inode.set_links(2);
            inodes[(l - 1) as usize] = inode;
        }

        // The journal.
        let mut jnl_backup = [0u8; 68];
        if self.geo.journal_blocks > 0 {
            let jruns = self.geo.journal.clone();
            let jb = self.geo.journal_blocks;
            let mut inode = self.base_inode(S_IFREG | 0o600, 0, 0, ts);
            let (ib, tb) = self.map_extents(&jruns, JOURNAL_INO, &mut used, "the journal")?;
            inode.set_i_block(&ib);
            inode.set_flags(INODE_EXTENTS_FL);
            let size = u64::from(jb) * BLOCK_SIZE_U64;
            inode.set_size(size);
            inode.set_blocks(u64::from(jb) + tb);
            inode.set_links(1);
            inodes[(JOURNAL_INO - 1) as usize] = inode;
            let sb = journal::superblock(jb, &self.opts.uuid, csum);
            self.write_at(jruns[0].start, &sb)?;
            jnl_backup[..60].copy_from_slice(&ib);
            put_u32(&mut jnl_backup, 60, (size >> 32) as u32);
            #[allow(clippy::cast_possible_truncation)]
            // the low 32 bits, by design (the high ones at 60)
            put_u32(&mut jnl_backup, 64, size as u32);
        }

        // Reserved inodes 3-7, 9, 10 (and 8 without a journal) stay all-zero, as mke2fs
        // leaves them; the bad-blocks inode only carries the creation times.
        let mut bad = Inode::new();
        bad.set_times(ts, ts, ts, Timestamp::default());
        inodes[(BAD_INO - 1) as usize] = bad;
        for (i, inode) in inodes.iter_mut().enumerate() {
            let ino = u32::try_from(i + 1).context("ext4: inode numbers exceed 2^32")?;
            let reserved_unused = ino < FIRST_INO
                && ino != BAD_INO
                && ino != ROOT_INO
                && !(ino == JOURNAL_INO && self.geo.journal_blocks > 0);
            if reserved_unused {
                inode.raw = [0u8; INODE_SIZE];
            } else if csum {
                inode.finish_csum(csum_seed, ino);
            }
        }

        let (file, offset) = (&self.file, self.offset);
        let mut write = |blk: u64, data: &[u8]| -> Result<()> {
            let pos = offset + blk * BLOCK_SIZE_U64;
            file.write_all_at(data, pos).with_context(|| {
                format!("ext4: writing {} bytes at image offset {pos}", data.len())
            })
        };
        let (gdt, free_blocks) = group::write_groups(
            &self.geo,
            &used,
            &inodes,
            &dirs_in_group,
            csum_seed,
            &self.opts.uuid,
            &mut write,
        )?;
        let free_inodes = self.geo.inodes_count() - last_ino;
        let sb = superblock::build(&self.geo, &self.opts, free_blocks, free_inodes, &jnl_backup);
        superblock::write_all(&self.geo, sb, &gdt, &mut write)?;
        Ok(Ext4Stats {
            #[allow(clippy::cast_possible_truncation)] // 4096
            block_size: BLOCK_SIZE as u32,
            blocks_total: self.geo.blocks,
            blocks_free: free_blocks,
            inodes_total: u64::from(self.geo.inodes_count()),
            inodes_free: u64::from(free_inodes),
            journal_blocks: self.geo.journal_blocks,
            must_be_zero: self.journal_body(),
        })
    }

    /// Byte ranges of the journal after its superblock (never written).
    fn journal_body(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (i, r) in self.geo.journal.iter().enumerate() {
            let skip = u64::from(i == 0);
            let len = u64::from(r.len) - skip;
            if len > 0 {
                out.push(((r.start + skip) * BLOCK_SIZE_U64, len * BLOCK_SIZE_U64));
            }
        }
        out
    }

    /// Mark a streamed file's blocks used, refusing references that do not fit.
    fn claim_stored(&self, r: &DataRef, path: &str, used: &mut Bitmap) -> Result<()> {
        let want = r.size.div_ceil(BLOCK_SIZE_U64);
        let have: u64 = r.runs.iter().map(|x| u64::from(x.len)).sum();
        if want != have {
            bail!(
                "ext4: {path}: data reference has {have} blocks for {} bytes",
                r.size
            );
        }
        for x in r.runs.iter().filter(|x| !x.is_hole()) {
            let end = x.start.saturating_add(u64::from(x.len));
            // Every block must have been handed out by write_data (so `taken`) and not be
            // claimed by another node or the metadata (so not yet `used`).
            if end > self.geo.blocks
                || used.count_range(x.start, end) != 0
                || self.alloc.taken.count_range(x.start, end) != u64::from(x.len)
            {
                bail!(
                    "ext4: {path}: data blocks {}..{end} are outside the data area or used twice; was its DataRef made by this writer?",
                    x.start
                );
            }
            used.set_range(x.start, u64::from(x.len));
        }
        Ok(())
    }
}

fn ftype(k: &NodeKind) -> u8 {
    match k {
        NodeKind::Dir(_) => FT_DIR,
        NodeKind::File(_) => FT_REG,
        NodeKind::Symlink(_) => FT_SYMLINK,
        NodeKind::CharDev { .. } => FT_CHR,
        NodeKind::BlockDev { .. } => FT_BLK,
        NodeKind::Fifo => FT_FIFO,
        NodeKind::Socket => FT_SOCK,
    }
}

fn link_count(n: u32, path: &str) -> Result<u16> {
    u16::try_from(n)
        .ok()
        .filter(|&v| v <= 65000)
        .with_context(|| format!("ext4: {path}: {n} hard links exceed ext4's limit of 65000"))
}
