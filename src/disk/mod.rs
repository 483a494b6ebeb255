//! Disk images: partition tables (GPT for `ssd.img`, MBR for `sd.img`), the Exynos bootloader
//! blobs written at raw sectors of the microSD, and image inspection. Sparse file I/O is the
//! leaf [`crate::sparse`]; the build's hardware lints (above this module, they need the board) are `lint`.
//!
//! - [`gpt`]: protective MBR + primary and backup GPT (UEFI spec 2.10, chapter 5).
//! - [`mbr`]: a classic MBR partition table as `fdisk`/`sfdisk` write it.
//! - [`blobs`]: the `sd_fusing.sh` layout (bl1, bl2, u-boot, tzsw) and its overlap checks.
//! - [`sd`]: the whole `sd.img` (MBR + blobs + FAT32) in one call.
//! - [`inspect`]: a read-only report of what an image holds.
//! - [`bmap`]: bmaptool's block map (XML format 2.0), written and read, and zstd/xz
//!   compression of images.
//! - [`window`]: the MBR's first entry (where `sd.img`'s FAT partition is).
//! - [`xml`]: the XML subset block maps are written in, read back for `hc1img flash`.

#![warn(clippy::cast_possible_truncation)]

pub mod blobs;
pub mod bmap;
pub mod gpt;
pub mod inspect;
pub mod mbr;
pub mod sd;
pub mod window;
pub mod xml;

/// Logical sector size of every image this crate writes (defined in [`crate::sector`]).
pub use crate::sector::SECTOR;
