//! Linear directory blocks: `ext4_dir_entry_2` records (inode, rec_len, name_len, file type,
//! name padded to 4 bytes), the last record of a block stretching to its end, and with
//! `metadata_csum` the 12-byte `ext4_dir_entry_tail` carrying the block's checksum.
//!
//! Spec: Documentation/filesystems/ext4/directory.rst ("Linear (Classic) Directories",
//! "Checksums").

use super::csum::crc32c_raw;
use super::format::*;

#[derive(Clone, Copy, Debug)]
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub ftype: u8,
}

pub fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

const TAIL: usize = 12;

fn usable(csum: bool) -> usize {
    if csum { BLOCK_SIZE - TAIL } else { BLOCK_SIZE }
}

/// Packs entries into blocks one after another.
struct Packer {
    csum: Option<u32>,
    blocks: Vec<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    last: Option<usize>,
}

impl Packer {
    fn new(csum: Option<u32>) -> Self {
        Packer {
            csum,
            blocks: Vec::new(),
            cur: vec![0u8; BLOCK_SIZE],
            pos: 0,
            last: None,
        }
    }

    fn fits(&self, e: &DirEntry<'_>) -> bool {
        self.pos + rec_len(e.name.len()) <= usable(self.csum.is_some())
    }

    #[allow(clippy::cast_possible_truncation)] // rec_len <= the block size (4096); names are <= 255 bytes (checked by the writer)
    fn add(&mut self, e: &DirEntry<'_>) {
        let r = rec_len(e.name.len());
        let p = self.pos;
        put_u32(&mut self.cur, p, e.ino);
        put_u16(&mut self.cur, p + 4, r as u16);
        put_u8(&mut self.cur, p + 6, e.name.len() as u8);
        put_u8(&mut self.cur, p + 7, e.ftype);
        self.cur[p + 8..p + 8 + e.name.len()].copy_from_slice(e.name);
        self.last = Some(p);
        self.pos += r;
    }

    /// Close the current block (an empty block gets one unused entry spanning it).
    #[allow(clippy::cast_possible_truncation)] // offsets inside one 4096-byte block
    fn flush(&mut self) {
        let end = usable(self.csum.is_some());
        let mut b = std::mem::replace(&mut self.cur, vec![0u8; BLOCK_SIZE]);
        match self.last {
            Some(p) => put_u16(&mut b, p + 4, (end - p) as u16),
            None => {
                put_u32(&mut b, 0, 0);
                put_u16(&mut b, 4, end as u16);
            }
        }
        if let Some(seed) = self.csum {
            put_u32(&mut b, end, 0);
            put_u16(&mut b, end + 4, TAIL as u16);
            put_u8(&mut b, end + 6, 0);
            put_u8(&mut b, end + 7, 0xDE);
            let c = crc32c_raw(seed, &b[..end]);
            put_u32(&mut b, end + 8, c);
        }
        self.blocks.push(b);
        self.pos = 0;
        self.last = None;
    }
}

/// Blocks of a linear directory: `.`, `..`, then `entries`, plus `extra_empty` empty blocks
/// (mke2fs gives lost+found room this way). `seed`: inode checksum seed with metadata_csum.
pub fn linear_blocks(
    self_ino: u32,
    parent_ino: u32,
    entries: &[DirEntry<'_>],
    extra_empty: usize,
    seed: Option<u32>,
) -> Vec<Vec<u8>> {
    let mut p = Packer::new(seed);
    let dot = [
        DirEntry {
            name: b".",
            ino: self_ino,
            ftype: FT_DIR,
        },
        DirEntry {
            name: b"..",
            ino: parent_ino,
            ftype: FT_DIR,
        },
    ];
    for e in dot.iter().chain(entries.iter()) {
        if !p.fits(e) {
            p.flush();
        }
        p.add(e);
    }
    p.flush();
    for _ in 0..extra_empty {
        p.flush();
    }
    p.blocks
}

/// Do `.`, `..` and `entries` fit one block?
pub fn fits_one_block(entries: &[DirEntry<'_>], csum: bool) -> bool {
    let total: usize = 12 + 12 + entries.iter().map(|e| rec_len(e.name.len())).sum::<usize>();
    total <= usable(csum)
}

/// Leaf blocks of an htree from entries already sorted by hash; returns each leaf's index
/// hash (its first entry's hash, with the collision bit when the previous leaf ended on the
/// same hash) and its bytes.
pub fn leaf_blocks_sorted(
    sorted: &[(u32, DirEntry<'_>)],
    seed: Option<u32>,
) -> Vec<(u32, Vec<u8>)> {
    let mut p = Packer::new(seed);
    let mut firsts: Vec<u32> = Vec::new();
    let mut prev_hash: Option<u32> = None;
    for (h, e) in sorted {
        if p.last.is_some() && !p.fits(e) {
            p.flush();
        }
        if p.last.is_none() {
            let collide = prev_hash == Some(*h);
            firsts.push(if collide { *h | 1 } else { *h });
        }
        p.add(e);
        prev_hash = Some(*h);
    }
    if p.last.is_some() {
        p.flush();
    }
    firsts.into_iter().zip(p.blocks).collect()
}
