//! Block bitmaps and the data block allocator.
//!
//! The whole filesystem is one bitmap in memory (one bit per 4 KiB block: 32 KiB per GiB).
//! Blocks are handed out next-fit: in ascending order from a cursor, skipping blocks that are
//! taken (metadata, backups, the journal, data handed out before), and wrapping around to the
//! start of the filesystem when the cursor reaches its end. So the layout depends only on the
//! sequence of requests and frees, and a build that never frees anything (or never needs the
//! blocks it freed) lays its files out exactly as a strictly ascending allocator does.
//!
//! Freeing ([`Allocator::free_run`]) gives a run of data blocks back: the package install and
//! the edits replace and remove files whose data went to the data area while the tarball
//! streamed, and an upgrade of every package would otherwise need the rootfs twice over. The
//! writer finds those runs by reachability ([`super::writer`]'s `reclaim`), never by the
//! caller's word, so hard links and copied nodes that still name a run keep it.
//!
//! Freed blocks keep their old bytes; they are not zeroed. The bitmaps mark them free, which
//! is all ext4 (the kernel's Documentation/filesystems/ext4, "Block and inode Bitmaps") asks
//! of a free block; the block maps and compressed outputs (`--compress`) cover used blocks
//! only, so stale bytes never reach a device or a download; what they hold is a function of
//! the inputs like every other byte, so the image stays reproducible; and zeroing would cost
//! a write per block for nothing. A block handed out again is written whole (the tail of a
//! file's last block is zero-filled), so no stale byte shows through a file.
//!
//! Freeing a block that is not handed out (a double free, or a metadata block) is an error,
//! not a debug assertion: it means the tree and the allocator disagree about who owns a block,
//! and a release build that went on would give that block to two files (silent corruption);
//! the check costs a look at bits the free touches anyway.

use anyhow::{Result, bail};

use crate::tree::BlockRun;

/// One bit per block.
#[derive(Clone, Debug)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
}

impl Bitmap {
    #[allow(clippy::cast_possible_truncation)] // len is a group's or filesystem's block count (<= 2^32): its words fit usize
    pub fn new(len: u64) -> Self {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    pub fn get(&self, i: u64) -> bool {
        self.words[(i / 64) as usize] >> (i % 64) & 1 != 0
    }

    pub fn set(&mut self, i: u64) {
        self.words[(i / 64) as usize] |= 1 << (i % 64);
    }

    pub fn clear(&mut self, i: u64) {
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
    }

    pub fn set_range(&mut self, start: u64, len: u64) {
        for i in start..start + len {
            self.set(i);
        }
    }

    pub fn count_range(&self, start: u64, end: u64) -> u64 {
        (start..end).filter(|&i| self.get(i)).count() as u64
    }

    /// First clear bit at or after `from`, if any.
    pub fn next_clear(&self, from: u64) -> Option<u64> {
        let mut i = from;
        while i < self.len {
            let w = self.words[(i / 64) as usize] >> (i % 64);
            if w == u64::MAX >> (i % 64) {
                // all remaining bits of this word set
                i = (i / 64 + 1) * 64;
                continue;
            }
            if w & 1 == 0 {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// Length of the clear run starting at `from`, at most `max`.
    pub fn clear_run(&self, from: u64, max: u64) -> u64 {
        let mut n = 0;
        while n < max && from + n < self.len && !self.get(from + n) {
            n += 1;
        }
        n
    }

    /// The runs of bits set in `self` and clear in both `a` and `b` (all three the same
    /// length), in ascending order: what `self` holds that neither of the others accounts for.
    pub fn runs_not_in(&self, a: &Bitmap, b: &Bitmap) -> Vec<BlockRun> {
        let mut out: Vec<BlockRun> = Vec::new();
        for (w, ((&s, &x), &y)) in self.words.iter().zip(&a.words).zip(&b.words).enumerate() {
            let mut bits = s & !x & !y;
            while bits != 0 {
                let i = w as u64 * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                if i >= self.len {
                    break;
                }
                push_run(&mut out, BlockRun { start: i, len: 1 });
            }
        }
        out
    }
}

/// Hands out blocks next-fit (module doc), never a block that is taken, and takes freed data
/// blocks back.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// Blocks that may not be handed out (metadata, plus everything handed out and not freed).
    pub taken: Bitmap,
    /// The blocks taken from the start (metadata): never handed out, never freed.
    fixed: Bitmap,
    cursor: u64,
    free: u64,
}

impl Allocator {
    pub fn new(taken: Bitmap) -> Self {
        let free = taken.len - taken.count_range(0, taken.len);
        Allocator {
            fixed: taken.clone(),
            taken,
            cursor: 0,
            free,
        }
    }

    /// Blocks still available.
    pub fn free(&self) -> u64 {
        self.free
    }

    /// The blocks that were taken from the start (metadata, journal, backups).
    pub fn fixed(&self) -> &Bitmap {
        &self.fixed
    }

    /// Next contiguous run of at most `max` blocks at or after the cursor, wrapping to the
    /// start once, or `None` when the filesystem is full.
    #[allow(clippy::cast_possible_truncation)] // a run lies inside one bitmap of at most 2^32 blocks
    pub fn alloc_run(&mut self, max: u64) -> Option<BlockRun> {
        let start = self
            .taken
            .next_clear(self.cursor)
            .or_else(|| self.taken.next_clear(0))?;
        let len = self.taken.clear_run(start, max.min(u64::from(u32::MAX)));
        self.taken.set_range(start, len);
        self.cursor = start + len;
        self.free -= len;
        Some(BlockRun {
            start,
            len: len as u32,
        })
    }

    /// `n` blocks as a list of runs (merged where contiguous), or `None` when there are not
    /// enough free blocks (nothing is allocated then).
    pub fn alloc(&mut self, n: u64) -> Option<Vec<BlockRun>> {
        if n > self.free {
            return None;
        }
        let mut runs: Vec<BlockRun> = Vec::new();
        let mut left = n;
        while left > 0 {
            let r = self.alloc_run(left)?;
            left -= u64::from(r.len);
            push_run(&mut runs, r);
        }
        Some(runs)
    }

    /// Give the run `r` back: its blocks may be handed out again. Every block of it must be
    /// handed out now and not metadata (module doc: a double free is an error); nothing is
    /// freed when one is not.
    pub fn free_run(&mut self, r: BlockRun) -> Result<()> {
        let end = r.start.saturating_add(u64::from(r.len));
        if end > self.taken.len {
            bail!(
                "ext4: freeing blocks {}..{end}, past the filesystem's {} blocks",
                r.start,
                self.taken.len
            );
        }
        for i in r.start..end {
            if !self.taken.get(i) || self.fixed.get(i) {
                bail!(
                    "ext4: freeing blocks {}..{end}: block {i} is {} (a double free)",
                    r.start,
                    if self.fixed.get(i) {
                        "metadata"
                    } else {
                        "already free"
                    }
                );
            }
        }
        for i in r.start..end {
            self.taken.clear(i);
        }
        self.free += u64::from(r.len);
        Ok(())
    }
}

/// Append `r` to `runs`, merging with the last run when contiguous.
pub fn push_run(runs: &mut Vec<BlockRun>, r: BlockRun) {
    if let Some(last) = runs.last_mut()
        && last.start + u64::from(last.len) == r.start
        && u64::from(last.len) + u64::from(r.len) <= u64::from(u32::MAX)
    {
        last.len += r.len;
        return;
    }
    runs.push(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_skips_taken_blocks_and_counts() {
        let mut t = Bitmap::new(200);
        t.set_range(0, 10);
        t.set_range(70, 5);
        let mut a = Allocator::new(t);
        assert_eq!(a.free(), 185);
        let runs = a.alloc(100).unwrap();
        assert_eq!(
            runs,
            [
                BlockRun { start: 10, len: 60 },
                BlockRun { start: 75, len: 40 }
            ]
        );
        assert_eq!(a.free(), 85);
        assert!(a.alloc(86).is_none());
        assert_eq!(
            a.alloc(85).unwrap(),
            [BlockRun {
                start: 115,
                len: 85
            }]
        );
        assert!(a.alloc_run(1).is_none());
    }

    fn run(start: u64, len: u32) -> BlockRun {
        BlockRun { start, len }
    }

    #[test]
    fn freed_runs_coalesce_and_are_reused_after_the_fresh_blocks() {
        let mut meta = Bitmap::new(100);
        meta.set_range(0, 10);
        let mut a = Allocator::new(meta);
        assert_eq!(a.alloc(20).unwrap(), [run(10, 20)]);
        assert_eq!(a.alloc(20).unwrap(), [run(30, 20)]);
        // Two adjacent frees, in either order, make one free run of 15.
        a.free_run(run(25, 5)).unwrap();
        a.free_run(run(15, 10)).unwrap();
        assert_eq!(a.free(), 50 + 15);
        // Next-fit: the untouched blocks after the cursor first, so nothing moves while the
        // filesystem has room ...
        assert_eq!(a.alloc(40).unwrap(), [run(50, 40)]);
        assert_eq!(a.alloc(10).unwrap(), [run(90, 10)]);
        // ... then the cursor wraps and the freed blocks come back, coalesced: one run.
        assert_eq!(a.alloc(15).unwrap(), [run(15, 15)]);
        assert_eq!(a.free(), 0);
        assert!(a.alloc_run(1).is_none());
        // A request larger than any one hole takes several runs, in ascending order from
        // the cursor (at 30, after the last run handed out), wrapping around.
        a.free_run(run(12, 2)).unwrap();
        a.free_run(run(40, 3)).unwrap();
        a.free_run(run(95, 1)).unwrap();
        assert_eq!(a.alloc(6).unwrap(), [run(40, 3), run(95, 1), run(12, 2)]);
    }

    #[test]
    fn a_double_free_or_a_metadata_free_is_refused_and_frees_nothing() {
        let mut meta = Bitmap::new(64);
        meta.set_range(0, 4);
        let mut a = Allocator::new(meta);
        assert_eq!(a.alloc(10).unwrap(), [run(4, 10)]);
        a.free_run(run(6, 2)).unwrap();
        let free = a.free();
        let e = a.free_run(run(5, 4)).unwrap_err().to_string();
        assert!(e.contains("block 6 is already free"), "{e}");
        assert_eq!(a.free(), free);
        assert!(
            a.taken.get(5),
            "a refused free leaves the run's blocks taken"
        );
        let e = a.free_run(run(2, 4)).unwrap_err().to_string();
        assert!(e.contains("block 2 is metadata"), "{e}");
        assert!(a.free_run(run(60, 10)).is_err());
        assert_eq!(a.free(), free);
    }

    #[test]
    fn runs_not_in_finds_the_unaccounted_blocks_as_runs() {
        let mut taken = Bitmap::new(130);
        taken.set_range(0, 130);
        let mut meta = Bitmap::new(130);
        meta.set_range(0, 3);
        let mut live = Bitmap::new(130);
        live.set_range(10, 50);
        live.set_range(100, 1);
        assert_eq!(
            taken.runs_not_in(&meta, &live),
            [run(3, 7), run(60, 40), run(101, 29)]
        );
    }
}
