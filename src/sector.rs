//! The logical sector size of every image hc1img writes, in one place: the unit of the GPT's
//! LBAs (UEFI 2.10 §5.3), of the MBR's start/count fields, of the FAT boot sector's
//! `BPB_BytsPerSec` (Microsoft FAT specification, §3.1) and of the `seek=` offsets in the
//! Exynos fusing script. A leaf module, so the partition, FAT, board and build code can all
//! use it without importing each other.

/// Bytes per logical sector (512) of `ssd.img` and `sd.img`.
pub const SECTOR: u64 = 512;
