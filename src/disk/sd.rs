//! The whole microSD image in one call: a sparse file holding the MBR (one bootable FAT32 LBA
//! partition), the bootloader blobs at their sectors, and the FAT32 `/boot` volume.
//!
//! Order of checks before anything is written: blob layout ([`super::blobs::check_layout`],
//! including the U-Boot environment area), partition fits an MBR, then MBR, blobs, FAT.
//!
//! The file stays sparse, except that every byte a card full of old data must get even when
//! it is zero is written out, so the block map ([`super::bmap`]) maps it: the FAT metadata
//! ([`crate::fat::metadata_ranges`]) and the U-Boot environment area, deliberately zeroed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use super::SECTOR;
use super::blobs::{BlobSlot, check_layout, write_blobs};
use super::mbr::{FAT32_LBA, MbrPartition, write_mbr};
use crate::fat::{FatOptions, write_fat32};
use crate::sparse::{create_sparse, materialize};

/// Everything that decides the bytes of `sd.img`. `D` holds file contents: owned (`Vec<u8>`)
/// or shared with the import (`Arc<[u8]>`, as a build passes them, without copying).
#[derive(Clone, Debug)]
pub struct SdImage<'a, D: AsRef<[u8]> = Vec<u8>> {
    /// MBR disk signature.
    pub disk_signature: u32,
    /// First sector of the FAT partition (8192 on the HC1: past U-Boot's environment).
    pub first_partition_sector: u64,
    /// Size of the FAT partition in bytes (multiple of 512).
    pub fat_bytes: u64,
    /// U-Boot environment area `(first sector, sectors)`, kept free.
    pub env_area: Option<(u64, u64)>,
    /// Where the blobs go.
    pub slots: &'a [BlobSlot],
    /// Blob contents by file name.
    pub blobs: &'a BTreeMap<String, D>,
    /// FAT volume label, ID and timestamp.
    pub fat: &'a FatOptions,
    /// Files of the FAT volume by path.
    pub files: &'a BTreeMap<String, D>,
}

impl<D: AsRef<[u8]>> SdImage<'_, D> {
    /// Length of the image file in bytes.
    pub fn len(&self) -> u64 {
        self.first_partition_sector * SECTOR + self.fat_bytes
    }

    /// Whether the image would have no bytes (never for a valid layout).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Write `sd.img` at `path` (created or truncated). Same inputs, same bytes.
pub fn write_sd_image<D: AsRef<[u8]>>(path: &Path, sd: &SdImage<'_, D>) -> Result<()> {
    let sizes: BTreeMap<String, u64> = sd
        .blobs
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().len() as u64))
        .collect();
    check_layout(sd.slots, &sizes, sd.first_partition_sector, sd.env_area)?;
    ensure!(
        sd.fat_bytes.is_multiple_of(SECTOR),
        "boot partition size {} is not a multiple of 512 bytes",
        sd.fat_bytes
    );
    let start = u32::try_from(sd.first_partition_sector).with_context(|| {
        format!(
            "first partition sector {} is beyond what an MBR can address",
            sd.first_partition_sector
        )
    })?;
    let sectors = u32::try_from(sd.fat_bytes / SECTOR).with_context(|| {
        format!(
            "boot partition of {} bytes is larger than an MBR can address",
            sd.fat_bytes
        )
    })?;
    let file = create_sparse(path, sd.len())?;
    write_mbr(
        &file,
        sd.disk_signature,
        &[MbrPartition {
            start_lba: start,
            sectors,
            kind: FAT32_LBA,
            bootable: true,
        }],
    )?;
    write_blobs(&file, sd.slots, sd.blobs)?;
    write_fat32(
        &file,
        sd.first_partition_sector * SECTOR,
        sd.fat_bytes,
        sd.fat,
        sd.files,
    )
    .with_context(|| format!("cannot write the boot partition of {}", path.display()))?;
    // What must read as written on a card full of old data, zeros included, is data in the
    // file, so the block map maps it: the FAT metadata and the U-Boot environment (zeroed on
    // purpose: U-Boot finds no valid environment there and uses its built-in one).
    map_boot_partition(&file, sd.first_partition_sector * SECTOR, sd.fat_bytes)
        .with_context(|| format!("cannot map the boot partition of {}", path.display()))?;
    if let Some((first, sectors)) = sd.env_area {
        materialize(&file, first * SECTOR, sectors * SECTOR)?;
    }
    file.sync_all()
        .with_context(|| format!("cannot flush {}", path.display()))?;
    Ok(())
}

/// Make every byte of the FAT32 volume at `base` (`len` bytes) that must read as written on a
/// card full of old data ([`crate::fat::metadata_ranges`]: reserved sectors, both FATs in full,
/// directory clusters) data in the sparse `file`, so its block map maps it. The one place that
/// decides what a card's map covers in its boot partition: `sd.img` ([`write_sd_image`]) and a
/// seeded copy (`hc1img seed`) both call it after writing the volume.
pub fn map_boot_partition(file: &File, base: u64, len: u64) -> Result<()> {
    for (s, e) in crate::fat::metadata_ranges(file, base, len)? {
        materialize(file, base + s, e - s)?;
    }
    Ok(())
}
