//! The lookup of the first MBR partition (`sd.img`'s FAT), from the classic MBR layout:
//! entries at offset 446, start LBA at +8 and sector count at +12 (little-endian), signature
//! 0x55AA at 510.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::SECTOR;

/// Start LBA and length in sectors of the first MBR partition of `image` (open as `f`).
pub fn first_mbr_partition(f: &File, image: &Path) -> Result<(u64, u64)> {
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0)
        .with_context(|| format!("{}: cannot read the MBR", image.display()))?;
    if mbr[510..512] != [0x55, 0xaa] {
        bail!(
            "{}: no MBR boot signature; is this an hc1img sd.img?",
            image.display()
        );
    }
    let e = &mbr[446..462];
    let lba = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
    let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
    if lba == 0 || sectors == 0 {
        bail!(
            "{}: the first MBR partition is empty; is this an hc1img sd.img?",
            image.display()
        );
    }
    let size = f
        .metadata()
        .with_context(|| format!("{}: cannot stat", image.display()))?
        .len();
    if (lba + sectors) * SECTOR > size {
        bail!(
            "{}: the first MBR partition ends past the end of the file ({} bytes); \
             is the image truncated?",
            image.display(),
            size
        );
    }
    Ok((lba, sectors))
}
