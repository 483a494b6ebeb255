//! GUID Partition Table for `ssd.img`: protective MBR, primary header + 128-entry partition
//! array at LBA 1-33, backup array + header in the last 33 sectors (UEFI Specification 2.10,
//! section 5.3 "GUID Partition Table (GPT) Disk Layout").
//!
//! Written here rather than with the `gpt` crate: that crate derives the backup location from
//! the device and sizes the header from the partitions it holds; writing the few fixed
//! structures directly keeps every byte explicit and deterministic (no random GUIDs). The
//! bytes match what `sgdisk` writes for the same table (the integration tests compare them).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail, ensure};
use uuid::Uuid;

use super::SECTOR;
use super::mbr::chs;

/// Type GUID of a 32-bit ARM root partition (Discoverable Partitions Specification).
pub const ARM32_ROOT: Uuid = uuid::uuid!("69dad710-2ce4-4e3c-b16c-21a1d49abed3");
/// Entries in the partition array.
pub const ENTRIES: u64 = 128;
/// Bytes per partition entry.
pub const ENTRY_SIZE: u64 = 128;
/// Sectors of the partition array (128 * 128 / 512).
pub const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// Partition alignment: 1 MiB in sectors.
pub const ALIGN_SECTORS: u64 = 2048;
/// Maximum UTF-16 code units of a partition name.
pub const NAME_UNITS: usize = 36;

/// The single partition of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// First sector of the partition.
    pub first_lba: u64,
    /// Last sector of the partition (inclusive).
    pub last_lba: u64,
    /// Partition type GUID, e.g. [`ARM32_ROOT`].
    pub type_guid: Uuid,
    /// Unique partition GUID (what `root=PARTUUID=` names).
    pub part_guid: Uuid,
    /// Partition name, at most 36 UTF-16 code units.
    pub name: String,
}

/// Layout for a filesystem of `fs_bytes`: the partition starts at 1 MiB, covers
/// `ceil(fs_bytes / 512)` sectors, and the disk ends right after the backup GPT
/// (33 sectors). Returns `(first_lba, last_lba, disk_size_in_bytes)`.
///
/// `fs_bytes` is at least one sector (a zero size is treated as one sector).
pub fn layout(fs_bytes: u64) -> (u64, u64, u64) {
    let sectors = fs_bytes.div_ceil(SECTOR).max(1);
    let first = ALIGN_SECTORS;
    let last = first + sectors - 1;
    let disk_sectors = last + 1 + ARRAY_SECTORS + 1;
    (first, last, disk_sectors * SECTOR)
}

/// Write the protective MBR, primary and backup GPT with exactly one partition.
///
/// `disk_size` must be a multiple of 512; the file is extended to it if shorter and must not
/// be longer (the backup header has to be the last sector). The partition must lie within
/// the usable area (LBA 34 .. disk sectors - 34).
pub fn write_gpt(file: &File, disk_size: u64, disk_guid: Uuid, part: &GptPartition) -> Result<()> {
    ensure!(
        disk_size.is_multiple_of(SECTOR),
        "GPT disk size {disk_size} is not a multiple of {SECTOR} bytes"
    );
    let sectors = disk_size / SECTOR;
    let first_usable = 2 + ARRAY_SECTORS;
    ensure!(
        sectors > 2 * first_usable,
        "GPT disk of {sectors} sectors is too small for the two tables"
    );
    let last_usable = sectors - 2 - ARRAY_SECTORS;
    if part.first_lba < first_usable
        || part.last_lba > last_usable
        || part.first_lba > part.last_lba
    {
        bail!(
            "GPT partition {}..={} does not fit the usable sectors {first_usable}..={last_usable} \
             of a {disk_size}-byte disk; compute the layout with disk::gpt::layout",
            part.first_lba,
            part.last_lba
        );
    }
    let units: Vec<u16> = part.name.encode_utf16().collect();
    ensure!(
        units.len() <= NAME_UNITS,
        "GPT partition name {:?} is longer than {NAME_UNITS} UTF-16 units",
        part.name
    );
    let len = file
        .metadata()
        .context("cannot stat the GPT image file")?
        .len();
    ensure!(
        len <= disk_size,
        "image file is {len} bytes, longer than the GPT disk size {disk_size}: the backup GPT \
         must be in the last sector"
    );
    if len < disk_size {
        file.set_len(disk_size)
            .with_context(|| format!("cannot extend the image file to {disk_size} bytes"))?;
    }

    // Partition entry array (same bytes for primary and backup).
    #[allow(clippy::cast_possible_truncation)] // 128 entries of 128 bytes
    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    array[0..16].copy_from_slice(&part.type_guid.to_bytes_le());
    array[16..32].copy_from_slice(&part.part_guid.to_bytes_le());
    array[32..40].copy_from_slice(&part.first_lba.to_le_bytes());
    array[40..48].copy_from_slice(&part.last_lba.to_le_bytes());
    // [48..56] attributes: none.
    for (i, u) in units.iter().enumerate() {
        array[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    let array_crc = crc32fast::hash(&array);

    #[allow(clippy::cast_possible_truncation)] // SECTOR (512), ENTRIES and ENTRY_SIZE (128)
    let header = |my_lba: u64, alt_lba: u64, array_lba: u64| -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        // [16..20] header CRC, [20..24] reserved.
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let last = sectors - 1;
    let primary = header(1, last, 2);
    let backup = header(last, 1, last - ARRAY_SECTORS);

    // Protective MBR, as sgdisk writes it: one 0xEE entry from LBA 1 over the whole disk.
    #[allow(clippy::cast_possible_truncation)] // 512
    let mut mbr = [0u8; SECTOR as usize];
    let pe = &mut mbr[446..462];
    pe[1..4].copy_from_slice(&chs(1));
    pe[4] = 0xEE;
    // sgdisk saturates the protective entry's end CHS to FF FF FF (not FE FF FF).
    let end = chs(last);
    pe[5..8].copy_from_slice(if end == [0xFE, 0xFF, 0xFF] {
        &[0xFF; 3]
    } else {
        &end
    });
    pe[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(last).unwrap_or(u32::MAX);
    pe[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;

    let w = |data: &[u8], lba: u64, what: &str| -> Result<()> {
        file.write_all_at(data, lba * SECTOR)
            .with_context(|| format!("cannot write the {what} at LBA {lba}"))
    };
    w(&mbr, 0, "protective MBR")?;
    w(&primary, 1, "primary GPT header")?;
    w(&array, 2, "primary GPT partition array")?;
    w(&array, last - ARRAY_SECTORS, "backup GPT partition array")?;
    w(&backup, last, "backup GPT header")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_and_sizes() {
        let (first, last, size) = layout(10 * 1024 * 1024);
        assert_eq!(first, 2048);
        assert_eq!(last, 2048 + 20480 - 1);
        assert_eq!(size, (2048 + 20480 + 33) * 512);
        let (_, last, _) = layout(513);
        assert_eq!(last, 2048 + 1);
    }

    #[test]
    fn refuses_partition_outside_usable() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("x")).unwrap();
        let p = GptPartition {
            first_lba: 2048,
            last_lba: 5000,
            type_guid: ARM32_ROOT,
            part_guid: Uuid::nil(),
            name: "root".into(),
        };
        let err = write_gpt(&f, 4096 * 512, Uuid::nil(), &p).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
