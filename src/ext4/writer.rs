//! The filesystem writer proper: streams file data into blocks, then serialises the tree into
//! inodes, directories, extent trees, xattrs and the journal, and finally writes inode
//! tables, bitmaps, group descriptors and superblocks (primary + `sparse_super` backups).
//!
//! Inode numbers follow [`Tree::walk`] order from 11 (12 when this writer adds
//! `lost+found` as inode 11); inodes 1-10 are reserved as mke2fs leaves them (8 = journal).
//! Every block is written once at its final place with positional writes; blocks nobody uses
//! are never written, so they stay holes in a sparse image file.
//!
//! Spec: Documentation/filesystems/ext4/ (super.rst, group_descr.rst, bitmaps.rst,
//! inodes.rst, directory.rst); e2fsprogs misc/mke2fs.c for the defaults.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};

use super::alloc::{Allocator, Bitmap, push_run};
use super::csum::{crc16, crc32c_raw};
use super::dir::{self, DirEntry};
use super::extent;
use super::format::*;
use super::htree;
use super::inode::{Inode, encode_device, inode_seed};
use super::journal;
use super::layout::Geometry;
use super::xattr;
use super::{Ext4Options, Ext4Stats};
use crate::tree::{BlockRun, DataRef, FileData, NodeId, NodeKind, Timestamp, Tree, display};

/// Bytes per streaming write.
const CHUNK_BLOCKS: u64 = 256;
const LPF_BLOCKS: usize = 4;

pub struct Writer {
    file: File,
    offset: u64,
    opts: Ext4Options,
    geo: Geometry,
    alloc: Allocator,
    buf: Vec<u8>,
}

fn full_error(what: &str, need_blocks: u64, free: u64, total: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "ext4: filesystem full: {what} needs {need_blocks} blocks of 4 KiB but only {free} of {total} are free; increase the rootfs size by at least {} MiB",
        ((need_blocks - free.min(need_blocks)) * 4)
            .div_ceil(1024)
            .max(1)
    )
}

impl Writer {
    pub fn create(file: File, offset: u64, opts: &Ext4Options) -> Result<Self> {
        if opts.label.len() > 16 {
            bail!(
                "ext4: volume label {:?} is longer than 16 bytes",
                opts.label
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
        })
    }

    fn write_at(&self, blk: u64, data: &[u8]) -> Result<()> {
        let pos = self.offset + blk * BLOCK_SIZE_U64;
        self.file
            .write_all_at(data, pos)
            .with_context(|| format!("ext4: writing {} bytes at image offset {pos}", data.len()))
    }

    pub fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef> {
        let nblocks = len.div_ceil(BLOCK_SIZE_U64);
        if nblocks > self.alloc.free() {
            return Err(full_error(
                &format!("a {len}-byte file"),
                nblocks,
                self.alloc.free(),
                self.geo.blocks,
            ));
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

    pub fn finish(mut self, tree: &Tree) -> Result<Ext4Stats> {
        let csum = self.geo.metadata_csum;
        let unsigned_hash = true;
        let ts = Timestamp::from_secs(self.opts.timestamp);

        if !tree.node(Tree::ROOT).kind.is_dir() {
            bail!("ext4: the tree's root is not a directory");
        }
        // 1. Inode numbers in walk order.
        let mut order: Vec<NodeId> = Vec::new();
        let mut ino_of: HashMap<NodeId, u32> = HashMap::new();
        let mut nlinks: HashMap<NodeId, u32> = HashMap::new();
        let mut parent_of: HashMap<NodeId, NodeId> = HashMap::new();
        let mut path_of: HashMap<NodeId, String> = HashMap::new();
        let lpf_node = tree
            .children(Tree::ROOT)
            .find(|(n, _)| *n == b"lost+found")
            .map(|(_, id)| id);
        if let Some(id) = lpf_node
            && !tree.node(id).kind.is_dir()
        {
            bail!("ext4: /lost+found in the tree is not a directory; e2fsck needs it to be one");
        }
        let has_lpf = lpf_node.is_some();
        let lpf_ino = if has_lpf { None } else { Some(FIRST_INO) };
        let mut next = if has_lpf { FIRST_INO } else { FIRST_INO + 1 };
        let mut overflow = false;
        tree.walk(|path, parent, id| {
            *nlinks.entry(id).or_insert(0) += 1;
            if ino_of.contains_key(&id) {
                return;
            }
            let ino = if id == Tree::ROOT {
                ROOT_INO
            } else {
                let n = next;
                match next.checked_add(1) {
                    Some(v) => next = v,
                    None => overflow = true,
                }
                n
            };
            ino_of.insert(id, ino);
            parent_of.insert(id, parent);
            path_of.insert(id, format!("/{}", display(path)));
            order.push(id);
        });
        let last_ino = next - 1;
        if overflow || last_ino > self.geo.inodes_count() {
            bail!(
                "ext4: the tree needs {} inodes but the filesystem has {}; raise min_inodes or lower bytes_per_inode",
                last_ino,
                self.geo.inodes_count()
            );
        }
        let mut inodes: Vec<Inode> = vec![Inode::new(); last_ino as usize];
        // Reserved inodes stay zero except the bad-blocks inode's times (as mke2fs).
        let mut bad = Inode::new();
        bad.set_times(ts, ts, ts, Timestamp::default());
        put_u32(&mut bad.raw, 0x90, 0);
        inodes[(BAD_INO - 1) as usize] = bad;

        // 2. Final block usage: metadata plus every referenced data run.
        let mut used = self.geo.meta.clone();
        for &id in &order {
            if let NodeKind::File(FileData::Stored(r)) = &tree.node(id).kind {
                let path = &path_of[&id];
                let want = r.size.div_ceil(BLOCK_SIZE_U64);
                let have: u64 = r.runs.iter().map(|x| u64::from(x.len)).sum();
                if want != have {
                    bail!(
                        "ext4: {path}: data reference has {have} blocks for {} bytes",
                        r.size
                    );
                }
                for x in &r.runs {
                    let end = x.start.saturating_add(u64::from(x.len));
                    if end > self.geo.blocks || used.count_range(x.start, end) != 0 {
                        bail!(
                            "ext4: {path}: data blocks {}..{end} are outside the data area or used twice; was its DataRef made by this writer?",
                            x.start
                        );
                    }
                    used.set_range(x.start, u64::from(x.len));
                }
            }
        }

        let mut dirs_in_group = vec![0u32; self.geo.groups as usize];
        let ipg = self.geo.inodes_per_group;
        let mut note_dir = |ino: u32| dirs_in_group[((ino - 1) / ipg) as usize] += 1;

        // 3. Inodes.
        let csum_seed = self.csum_seed();
        for &id in &order {
            let node = tree.node(id);
            let ino = ino_of[&id];
            let path = path_of[&id].clone();
            let m = &node.meta;
            let mode = node.kind.type_bits() | (m.perm & 0o7777);
            let mut inode = self.base_inode(mode, m.uid, m.gid, m.mtime);
            let mut fs_blocks: u64 = 0;
            let mut flags = 0u32;
            match &node.kind {
                NodeKind::Dir(_) => {
                    note_dir(ino);
                    let mut entries = Vec::new();
                    let mut subdirs = 0u32;
                    if id == Tree::ROOT
                        && let Some(l) = lpf_ino
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
                            ino: ino_of[&child],
                            ftype: ftype(ck),
                        });
                    }
                    entries.sort_by(|a, b| a.name.cmp(b.name));
                    let parent = ino_of[&parent_of[&id]];
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
                    let runs =
                        self.store_blocks(&blocks, &mut used, &format!("directory {path}"))?;
                    let (ib, tb) = self.map_extents(&runs, ino, &mut used, &path)?;
                    inode.set_i_block(&ib);
                    flags |= INODE_EXTENTS_FL;
                    fs_blocks += blocks.len() as u64 + tb;
                    inode.set_size(blocks.len() as u64 * BLOCK_SIZE_U64);
                    let links = 2 + subdirs;
                    inode.set_links(if links > 65000 { 1 } else { links as u16 });
                }
                NodeKind::File(data) => {
                    let (runs, size) = match data {
                        FileData::Stored(r) => (r.runs.clone(), r.size),
                        FileData::Bytes(b) => {
                            let n = (b.len() as u64).div_ceil(BLOCK_SIZE_U64);
                            let runs = self.alloc_blocks(n, &mut used, &format!("file {path}"))?;
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
                    let (ib, tb) = self.map_extents(&runs, ino, &mut used, &path)?;
                    inode.set_i_block(&ib);
                    flags |= INODE_EXTENTS_FL;
                    fs_blocks += size.div_ceil(BLOCK_SIZE_U64) + tb;
                    inode.set_size(size);
                    inode.set_links(link_count(nlinks[&id], &path)?);
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
                        let runs =
                            self.store_blocks(&[blk], &mut used, &format!("symlink {path}"))?;
                        let (ib, tb) = self.map_extents(&runs, ino, &mut used, &path)?;
                        inode.set_i_block(&ib);
                        flags |= INODE_EXTENTS_FL;
                        fs_blocks += 1 + tb;
                    }
                    inode.set_size(target.len() as u64);
                    inode.set_links(link_count(nlinks[&id], &path)?);
                }
                NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
                    if *major > 0xfff || *minor > 0xf_ffff {
                        bail!(
                            "ext4: {path}: device {major}:{minor} does not fit the kernel's 12-bit major / 20-bit minor encoding"
                        );
                    }
                    inode.set_i_block(&encode_device(*major, *minor));
                    inode.set_links(link_count(nlinks[&id], &path)?);
                }
                NodeKind::Fifo | NodeKind::Socket => {
                    inode.set_links(link_count(nlinks[&id], &path)?);
                }
            }
            if !m.xattrs.is_empty() {
                let attrs = xattr::prepare(&m.xattrs, &path)?;
                let (ibody, block) = xattr::split(attrs, &path)?;
                xattr::write_ibody(&mut inode.raw, &ibody);
                if !block.is_empty() {
                    let runs = self.alloc_blocks(1, &mut used, &format!("xattrs of {path}"))?;
                    let blk = runs[0].start;
                    let data = xattr::block(&block, blk, csum.then_some(csum_seed));
                    self.write_at(blk, &data)?;
                    inode.set_file_acl(blk);
                    fs_blocks += 1;
                }
            }
            inode.set_flags(flags);
            inode.set_blocks(fs_blocks);
            inodes[(ino - 1) as usize] = inode;
        }

        // 4. lost+found, when the tree has none.
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

        // 5. Journal.
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
            put_u32(&mut jnl_backup, 64, size as u32);
        }

        if csum {
            for (i, inode) in inodes.iter_mut().enumerate() {
                let ino = i as u32 + 1;
                if ino == BAD_INO
                    || !inode
                        .raw
                        .iter()
                        .enumerate()
                        .all(|(k, &b)| b == 0 || k == 0x80)
                {
                    inode.finish_csum(csum_seed, ino);
                }
            }
        }
        // Reserved inodes that were never filled in stay all-zero (e2fsck accepts that).
        for (i, inode) in inodes.iter_mut().enumerate() {
            let ino = i as u32 + 1;
            if ino < FIRST_INO
                && ino != BAD_INO
                && ino != ROOT_INO
                && !(ino == JOURNAL_INO && self.geo.journal_blocks > 0)
            {
                inode.raw = [0u8; INODE_SIZE];
            }
        }

        // 6. Groups: inode tables, bitmaps, descriptors.
        let groups = self.geo.groups;
        let ds = self.geo.desc_size;
        let mut gdt = vec![0u8; self.geo.gdt_blocks as usize * BLOCK_SIZE];
        let mut free_blocks_total = 0u64;
        let gdt_csum_seed = crc16(!0, &self.opts.uuid);
        for g in 0..groups {
            let loc = self.geo.locs[g as usize];
            let s = self.geo.group_start(g);
            let e = self.geo.group_end(g);
            let used_blocks = used.count_range(s, e);
            let free_blocks = (e - s) - used_blocks;
            free_blocks_total += free_blocks;
            let first = g * ipg; // inode index (0-based) of the group's first inode
            let used_inodes = last_ino.saturating_sub(first).min(ipg);
            let mut bg_flags = 0u16;
            if used_inodes == 0 {
                bg_flags |= BG_INODE_UNINIT;
            }
            if g != groups - 1 && used_blocks == self.geo.super_blocks(g) {
                bg_flags |= BG_BLOCK_UNINIT;
            }
            // Inode table: only the blocks holding used inodes.
            if used_inodes > 0 {
                let nblk = used_inodes.div_ceil(INODES_PER_BLOCK);
                let mut buf = vec![0u8; nblk as usize * BLOCK_SIZE];
                for k in 0..used_inodes {
                    let src = &inodes[(first + k) as usize].raw;
                    buf[k as usize * INODE_SIZE..(k as usize + 1) * INODE_SIZE]
                        .copy_from_slice(src);
                }
                self.write_at(loc.inode_table, &buf)?;
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
                self.write_at(loc.block_bitmap, &bm)?;
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
                self.write_at(loc.inode_bitmap, &bm)?;
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

        // 7. Superblock and backups.
        let free_inodes_total = u64::from(self.geo.inodes_count()) - u64::from(last_ino);
        let mut sb = self.superblock(free_blocks_total, free_inodes_total as u32, &jnl_backup);
        for g in 0..groups {
            if !group_has_super(g) {
                continue;
            }
            put_u16(&mut sb, 0x5A, g as u16);
            if csum {
                let c = crc32c_raw(!0, &sb[..0x3FC]);
                put_u32(&mut sb, 0x3FC, c);
            }
            let start = self.geo.group_start(g);
            if g == 0 {
                let mut blk0 = vec![0u8; BLOCK_SIZE];
                blk0[1024..2048].copy_from_slice(&sb);
                self.write_at(0, &blk0)?;
            } else {
                let mut blk = vec![0u8; BLOCK_SIZE];
                blk[..1024].copy_from_slice(&sb);
                self.write_at(start, &blk)?;
            }
            self.write_at(start + 1, &gdt)?;
        }
        self.file
            .sync_all()
            .context("ext4: flushing the image file")?;
        Ok(Ext4Stats {
            block_size: BLOCK_SIZE as u32,
            blocks_total: self.geo.blocks,
            blocks_free: free_blocks_total,
            inodes_total: u64::from(self.geo.inodes_count()),
            inodes_free: free_inodes_total,
            journal_blocks: self.geo.journal_blocks,
        })
    }

    fn superblock(&self, free_blocks: u64, free_inodes: u32, jnl_backup: &[u8; 68]) -> Vec<u8> {
        let geo = &self.geo;
        let o = &self.opts;
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
        put_u32(&mut sb, 0x160, FLAGS_UNSIGNED_HASH);
        put_u8(&mut sb, 0x174, LOG_GROUPS_PER_FLEX);
        if geo.metadata_csum {
            put_u8(&mut sb, 0x175, 1); // crc32c
        }
        put_u64(&mut sb, 0x178, (geo.blocks - free_blocks) * 4);
        sb
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
