//! Read-only inspection of a disk image (`hc1img inspect`): the partition table (MBR or GPT,
//! with CRC checks), each partition's filesystem (ext2/3/4 superblock magic `0xEF53` at byte
//! 1080 of the partition; FAT boot sector `55 AA` with its BPB), label and UUID, and on an MBR
//! disk the bootloader blob slots before the first partition with the SHA-256 of their bytes.
//!
//! Formats: UEFI 2.10 section 5 (GPT), the IBM PC MBR, the ext4 superblock
//! (kernel Documentation/filesystems/ext4/super.rst), fatgen103 (FAT BPB).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::SECTOR;
use super::blobs::BlobSlot;
use crate::sparse::read_up_to;

/// The partition table found in sector 0 (and 1 for GPT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Table {
    /// No `55 AA` signature in sector 0.
    None,
    /// A classic MBR.
    Mbr {
        /// Disk signature (bytes 440-443).
        signature: u32,
    },
    /// A GPT behind a protective MBR.
    Gpt {
        /// Disk GUID.
        disk_guid: Uuid,
    },
}

/// A filesystem recognised at the start of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FsInfo {
    /// `ext4`, `ext3`, `ext2`, `vfat` (FAT32/FAT16/FAT12 in `version`), or `None`.
    pub fs_type: Option<String>,
    /// FAT variant (`FAT32`, ...).
    pub version: Option<String>,
    /// Volume label.
    pub label: Option<String>,
    /// ext UUID, or FAT volume ID as `XXXX-XXXX`.
    pub uuid: Option<String>,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// 1-based partition number.
    pub number: u32,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// MBR type (`0x0c`) or GPT type GUID.
    pub kind: String,
    /// MBR active flag.
    pub bootable: bool,
    /// GPT unique partition GUID.
    pub part_uuid: Option<Uuid>,
    /// GPT partition name.
    pub name: Option<String>,
    /// What the partition holds.
    pub fs: FsInfo,
}

/// One bootloader slot of an MBR disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Blob file name from the board slot.
    pub file: String,
    /// First sector.
    pub sector: u64,
    /// Sectors up to the next slot, the first partition or the slot's maximum.
    pub region_sectors: u64,
    /// Bytes up to the last non-zero byte of the region (0: slot empty).
    pub used_bytes: u64,
    /// SHA-256 of those bytes (equals the blob's own SHA-256 unless it ends in zero bytes;
    /// see [`blob_sha256`] to hash an exact length).
    pub sha256: String,
}

/// Everything [`inspect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The image inspected.
    pub path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
    /// Partition table type.
    pub table: Table,
    /// Partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// Blob slots (MBR disks only).
    pub blobs: Vec<BlobInfo>,
    /// Problems noticed (bad CRCs, partitions past the end...).
    pub warnings: Vec<String>,
}

/// Read up to `len` bytes at `offset`; fewer (or none) past the end of the file.
fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>> {
    let size = file.metadata().context("cannot stat the image")?.len();
    if offset >= size {
        return Ok(Vec::new());
    }
    let len = len.min(usize::try_from(size - offset).unwrap_or(usize::MAX));
    let mut buf = vec![0u8; len];
    let n = read_up_to(file, offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}
fn guid_le(b: &[u8]) -> Uuid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Uuid::from_bytes_le(a)
}

fn text(bytes: &[u8]) -> Option<String> {
    let s: String = String::from_utf8_lossy(bytes)
        .trim_end_matches(['\0', ' '])
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Recognise the filesystem starting at byte `offset`.
pub fn probe_fs(file: &File, offset: u64) -> Result<FsInfo> {
    let sb = read_at(file, offset + 1024, 1024)?;
    if sb.len() >= 136 && le16(&sb, 56) == 0xEF53 {
        let compat = le32(&sb, 92);
        let incompat = le32(&sb, 96);
        // extents, 64bit, flex_bg: ext4; has_journal: ext3.
        let t = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let mut u = [0u8; 16];
        u.copy_from_slice(&sb[104..120]);
        return Ok(FsInfo {
            fs_type: Some(t.to_string()),
            version: None,
            label: text(&sb[120..136]),
            uuid: Some(Uuid::from_bytes(u).to_string()),
        });
    }
    let bs = read_at(file, offset, 512)?;
    if bs.len() == 512 && bs[510] == 0x55 && bs[511] == 0xAA && le16(&bs, 11) >= 512 && bs[13] != 0
    {
        let fat32 = le16(&bs, 22) == 0 && &bs[82..87] == b"FAT32";
        let (sig, id, lab, ty) = if fat32 {
            (66, 67, 71, 82)
        } else {
            (38, 39, 43, 54)
        };
        if bs[sig] == 0x29 {
            let vol = le32(&bs, id);
            let version = if fat32 {
                "FAT32".to_string()
            } else {
                text(&bs[ty..ty + 8]).unwrap_or_else(|| "FAT".to_string())
            };
            let label = text(&bs[lab..lab + 11]).filter(|l| l != "NO NAME");
            return Ok(FsInfo {
                fs_type: Some("vfat".to_string()),
                version: Some(version),
                label,
                uuid: Some(format!("{:04X}-{:04X}", vol >> 16, vol & 0xFFFF)),
            });
        }
    }
    Ok(FsInfo::default())
}

/// SHA-256 (hex) of `len` bytes at `sector` of the image: compare a blob written there with
/// its source file when the exact length is known.
pub fn blob_sha256(path: &Path, sector: u64, len: u64) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = usize::try_from(len).context("blob length too large")?;
    let data = read_at(&file, sector * SECTOR, len)?;
    anyhow::ensure!(
        data.len() == len,
        "{} ends before sector {sector} + {len} bytes",
        path.display()
    );
    Ok(hex::encode(Sha256::digest(&data)))
}

/// Inspect the image at `path`; `slots` are the board's blob slots, reported for MBR disks.
pub fn inspect(path: &Path, slots: &[BlobSlot]) -> Result<Report> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let mut report = Report {
        path: path.to_path_buf(),
        size,
        table: Table::None,
        partitions: Vec::new(),
        blobs: Vec::new(),
        warnings: Vec::new(),
    };
    let mbr = read_at(&file, 0, 512)?;
    if mbr.len() < 512 || mbr[510] != 0x55 || mbr[511] != 0xAA {
        report
            .warnings
            .push("no partition table (sector 0 lacks the 55 AA signature)".to_string());
        return Ok(report);
    }
    let is_gpt = (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xEE);
    if is_gpt {
        read_gpt(&file, &mut report)?;
    } else {
        report.table = Table::Mbr {
            signature: le32(&mbr, 440),
        };
        for i in 0..4 {
            let e = &mbr[446 + 16 * i..462 + 16 * i];
            let (start, sectors) = (u64::from(le32(e, 8)), u64::from(le32(e, 12)));
            if e[4] == 0 || sectors == 0 {
                continue;
            }
            report.partitions.push(PartitionInfo {
                number: u32::try_from(i + 1).context("partition number")?,
                start,
                sectors,
                kind: format!("{:#04x}", e[4]),
                bootable: e[0] == 0x80,
                part_uuid: None,
                name: None,
                fs: FsInfo::default(),
            });
        }
        let first_part = report
            .partitions
            .iter()
            .map(|p| p.start)
            .min()
            .unwrap_or(size / SECTOR);
        let mut sorted: Vec<&BlobSlot> = slots.iter().collect();
        sorted.sort_by_key(|s| s.sector);
        for (i, s) in sorted.iter().enumerate() {
            let mut end = first_part.min(size / SECTOR);
            if let Some(next) = sorted[i + 1..].iter().find(|n| n.sector > s.sector) {
                end = end.min(next.sector);
            }
            if let Some(max) = s.max_sectors {
                end = end.min(s.sector.saturating_add(max));
            }
            let region = end.saturating_sub(s.sector);
            let region = region.min(64 * 1024); // at most 32 MiB per slot
            let data = read_at(
                &file,
                s.sector.saturating_mul(SECTOR),
                usize::try_from(region * SECTOR).context("blob region")?,
            )?;
            let used = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            report.blobs.push(BlobInfo {
                file: s.file.clone(),
                sector: s.sector,
                region_sectors: region,
                used_bytes: used as u64,
                sha256: hex::encode(Sha256::digest(&data[..used])),
            });
        }
    }
    for p in &mut report.partitions {
        let end = p.start.saturating_add(p.sectors);
        if end.saturating_mul(SECTOR) > size {
            report.warnings.push(format!(
                "partition {} (sectors {}..{}) extends past the end of the image",
                p.number, p.start, end
            ));
            continue;
        }
        p.fs = probe_fs(&file, p.start * SECTOR)?;
    }
    Ok(report)
}

fn read_gpt(file: &File, report: &mut Report) -> Result<()> {
    let h = read_at(file, SECTOR, 512)?;
    if h.len() < 92 || &h[0..8] != b"EFI PART" {
        report
            .warnings
            .push("protective MBR but no GPT header at LBA 1".to_string());
        return Ok(());
    }
    let hsize = (le32(&h, 12) as usize).clamp(92, h.len());
    let mut hc = h[..hsize].to_vec();
    hc[16..20].fill(0);
    if crc32fast::hash(&hc) != le32(&h, 16) {
        report
            .warnings
            .push("primary GPT header CRC mismatch".to_string());
    }
    report.table = Table::Gpt {
        disk_guid: guid_le(&h[56..72]),
    };
    let backup_lba = le64(&h, 32);
    if backup_lba != report.size / SECTOR - 1 {
        report.warnings.push(format!(
            "backup GPT header is at LBA {backup_lba}, not the last sector {}",
            report.size / SECTOR - 1
        ));
    }
    let array_lba = le64(&h, 72);
    let count = le32(&h, 80).min(1024) as usize;
    let esize = (le32(&h, 84) as usize).clamp(128, 4096);
    let array = read_at(file, array_lba.saturating_mul(SECTOR), count * esize)?;
    if crc32fast::hash(&array) != le32(&h, 88) {
        report
            .warnings
            .push("GPT partition array CRC mismatch".to_string());
    }
    for i in 0..count {
        let Some(e) = array.get(i * esize..(i + 1) * esize) else {
            break;
        };
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        let units: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|&u| u != 0)
            .collect();
        report.partitions.push(PartitionInfo {
            number: u32::try_from(i + 1).context("partition number")?,
            start: first,
            sectors: last.saturating_sub(first).saturating_add(1),
            kind: guid_le(&e[..16]).to_string(),
            bootable: false,
            part_uuid: Some(guid_le(&e[16..32])),
            name: (!units.is_empty()).then(|| String::from_utf16_lossy(&units)),
            fs: FsInfo::default(),
        });
    }
    Ok(())
}

fn type_name(kind: &str) -> Option<&'static str> {
    match kind {
        "0x0c" => Some("FAT32 LBA"),
        "0x0b" => Some("FAT32"),
        "0x83" => Some("Linux"),
        "69dad710-2ce4-4e3c-b16c-21a1d49abed3" => Some("Linux root (ARM 32-bit)"),
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => Some("Linux filesystem"),
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => Some("EFI System"),
        _ => None,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "image: {} ({} bytes)", self.path.display(), self.size)?;
        match &self.table {
            Table::None => writeln!(f, "partition table: none")?,
            Table::Mbr { signature } => {
                writeln!(f, "partition table: MBR, disk signature {signature:#010x}")?
            }
            Table::Gpt { disk_guid } => writeln!(f, "partition table: GPT, disk GUID {disk_guid}")?,
        }
        for p in &self.partitions {
            write!(
                f,
                "  partition {}: sectors {}..{} ({} sectors, {} MiB), type {}",
                p.number,
                p.start,
                p.start.saturating_add(p.sectors),
                p.sectors,
                p.sectors.saturating_mul(SECTOR) / (1024 * 1024),
                p.kind
            )?;
            if let Some(n) = type_name(&p.kind) {
                write!(f, " ({n})")?;
            }
            if p.bootable {
                write!(f, ", bootable")?;
            }
            if let Some(u) = &p.part_uuid {
                write!(f, ", PARTUUID {u}")?;
            }
            if let Some(n) = &p.name {
                write!(f, ", name {n:?}")?;
            }
            writeln!(f)?;
            match &p.fs.fs_type {
                None => writeln!(f, "    filesystem: unknown")?,
                Some(t) => {
                    write!(f, "    filesystem: {t}")?;
                    if let Some(v) = &p.fs.version {
                        write!(f, " ({v})")?;
                    }
                    if let Some(l) = &p.fs.label {
                        write!(f, ", label {l:?}")?;
                    }
                    if let Some(u) = &p.fs.uuid {
                        write!(f, ", UUID {u}")?;
                    }
                    writeln!(f)?;
                }
            }
        }
        if !self.blobs.is_empty() {
            writeln!(f, "bootloader blobs:")?;
            for b in &self.blobs {
                if b.used_bytes == 0 {
                    writeln!(
                        f,
                        "  {} at sector {}: empty ({} sectors of zeros)",
                        b.file, b.sector, b.region_sectors
                    )?;
                } else {
                    writeln!(
                        f,
                        "  {} at sector {}: {} bytes used of {} sectors, sha256 {}",
                        b.file, b.sector, b.used_bytes, b.region_sectors, b.sha256
                    )?;
                }
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(file: &str, sector: u64) -> BlobSlot {
        BlobSlot {
            file: file.to_string(),
            sector,
            max_sectors: Some(u64::MAX),
        }
    }

    /// Garbage and hostile tables are reported, never a panic.
    #[test]
    fn hostile_images_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.img");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for case in 0..64 {
            let mut data = vec![0u8; 4096 + case * 37];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            data[510] = 0x55;
            data[511] = 0xAA;
            if case % 2 == 0 {
                data[446 + 4] = 0xEE;
                data[512..520].copy_from_slice(b"EFI PART");
                data[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
            } else {
                data[446 + 8..446 + 16].fill(0xFF);
            }
            std::fs::write(&p, &data).unwrap();
            let r = inspect(&p, &[slot("a", 1), slot("b", u64::MAX / 2)]).unwrap();
            let _ = r.to_string();
        }
        // A GPT header cut short by the end of the file.
        let mut t = vec![0u8; 512 + 100];
        t[446 + 4] = 0xEE;
        t[510] = 0x55;
        t[511] = 0xAA;
        t[512..520].copy_from_slice(b"EFI PART");
        t[512 + 12..512 + 16].copy_from_slice(&400u32.to_le_bytes());
        std::fs::write(&p, &t).unwrap();
        let r = inspect(&p, &[]).unwrap();
        assert!(r.warnings.iter().any(|w| w.contains("CRC")), "{r}");

        std::fs::write(&p, b"short").unwrap();
        let r = inspect(&p, &[]).unwrap();
        assert_eq!(r.table, Table::None);
        assert!(!r.warnings.is_empty());
    }
}
