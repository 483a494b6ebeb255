//! Classic MBR partition table for `sd.img` (the microSD must keep sector 0 an MBR: the
//! Exynos bl1 sits at sector 1, where a GPT header would go).
//!
//! Layout (IBM PC MBR): bytes 0-439 boot code (zero), 440-443 disk signature (little-endian),
//! 444-445 zero, 446-509 four 16-byte partition entries (status, CHS first, type, CHS last,
//! LBA first, sector count), 510-511 `55 AA`. CHS fields are computed like `fdisk`/`sfdisk`
//! do for LBA disks: geometry 255 heads x 63 sectors, and `FE FF FF` once the cylinder would
//! exceed 1023. The integration tests compare the sector with what `sfdisk` writes.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, ensure};

/// MBR type of a FAT32 partition addressed by LBA.
pub const FAT32_LBA: u8 = 0x0c;

/// One primary partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbrPartition {
    /// First sector.
    pub start_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
    /// Partition type byte, e.g. [`FAT32_LBA`].
    pub kind: u8,
    /// Status byte 0x80 ("active"/bootable) when set.
    pub bootable: bool,
}

/// CHS triple for `lba` as (head, sector | cylinder high bits, cylinder low) bytes, with
/// geometry 255/63; `FE FF FF` when the cylinder does not fit in 10 bits.
#[allow(clippy::cast_possible_truncation)] // head < 255, sector <= 63
pub fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let cyl = lba / (HEADS * SPT);
    if cyl > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SPT) % HEADS;
    let sector = lba % SPT + 1;
    [
        head as u8,
        (sector as u8) | (((cyl >> 2) & 0xC0) as u8),
        (cyl & 0xFF) as u8,
    ]
}

/// Write sector 0 of `file` as an MBR with `disk_signature` and up to four `parts`.
///
/// Partitions must not be empty, start at sector 0, or overlap each other.
pub fn write_mbr(file: &File, disk_signature: u32, parts: &[MbrPartition]) -> Result<()> {
    ensure!(
        parts.len() <= 4,
        "an MBR holds at most 4 primary partitions, got {}",
        parts.len()
    );
    for (i, p) in parts.iter().enumerate() {
        ensure!(
            p.start_lba > 0 && p.sectors > 0,
            "MBR partition {} must start after sector 0 and not be empty (start {}, {} sectors)",
            i + 1,
            p.start_lba,
            p.sectors
        );
        ensure!(
            u64::from(p.start_lba) + u64::from(p.sectors) <= 1 << 32,
            "MBR partition {} ends beyond 2 TiB, which an MBR cannot address",
            i + 1
        );
        for (j, q) in parts.iter().enumerate().skip(i + 1) {
            let (a0, a1) = (
                u64::from(p.start_lba),
                u64::from(p.start_lba) + u64::from(p.sectors),
            );
            let (b0, b1) = (
                u64::from(q.start_lba),
                u64::from(q.start_lba) + u64::from(q.sectors),
            );
            ensure!(
                a1 <= b0 || b1 <= a0,
                "MBR partitions {} ({a0}..{a1}) and {} ({b0}..{b1}) overlap",
                i + 1,
                j + 1
            );
        }
    }
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&disk_signature.to_le_bytes());
    for (i, p) in parts.iter().enumerate() {
        let e = &mut mbr[446 + 16 * i..462 + 16 * i];
        e[0] = if p.bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(u64::from(p.start_lba)));
        e[4] = p.kind;
        e[5..8].copy_from_slice(&chs(u64::from(p.start_lba) + u64::from(p.sectors) - 1));
        e[8..12].copy_from_slice(&p.start_lba.to_le_bytes());
        e[12..16].copy_from_slice(&p.sectors.to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    file.write_all_at(&mbr, 0)
        .context("cannot write the MBR at sector 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_values() {
        assert_eq!(chs(1), [0, 2, 0]);
        assert_eq!(chs(8192), [130, 3, 0]);
        assert_eq!(chs(22560), [103, 7, 1]);
        assert_eq!(chs(1024 * 255 * 63), [0xFE, 0xFF, 0xFF]);
    }
}
