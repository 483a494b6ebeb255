//! Block bitmaps and the sequential block allocator.
//!
//! The whole filesystem is one bitmap in memory (one bit per 4 KiB block: 32 KiB per GiB).
//! Data blocks are handed out strictly in ascending order from a cursor, skipping blocks that
//! are already taken (metadata, backups, the journal), so the layout depends only on the
//! sequence of requests.

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
}

/// Hands out blocks in ascending order, never the same block twice.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// Blocks that may not be handed out (metadata, plus everything handed out so far).
    pub taken: Bitmap,
    cursor: u64,
    free: u64,
}

impl Allocator {
    pub fn new(taken: Bitmap) -> Self {
        let free = taken.len - taken.count_range(0, taken.len);
        Allocator {
            taken,
            cursor: 0,
            free,
        }
    }

    /// Blocks still available.
    pub fn free(&self) -> u64 {
        self.free
    }

    /// Next contiguous run of at most `max` blocks, or `None` when the filesystem is full.
    #[allow(clippy::cast_possible_truncation)] // a run lies inside one bitmap of at most 2^32 blocks
    pub fn alloc_run(&mut self, max: u64) -> Option<BlockRun> {
        let start = self.taken.next_clear(self.cursor)?;
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
}
