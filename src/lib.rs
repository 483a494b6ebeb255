//! hc1img: build ready-to-boot disk images for Odroid HC1 nodes running Arch Linux ARM.
//!
//! One pinned root tarball plus one declarative profile become two images: `ssd.img` (GPT +
//! ext4 root) and `sd.img` (MBR + Exynos bootloader blobs + FAT `/boot`). Every byte is written
//! by this crate, in one streaming pass over the tarball; see `README.md` and `docs/`.
//!
//! `unsafe` is denied crate-wide; the system calls std does not wrap (`lseek`
//! SEEK_DATA/SEEK_HOLE, signal masks and `sigwait`) are allowed where they are made,
//! each with its SAFETY note.

#![deny(unsafe_code)]

pub mod build;
pub mod commands;
pub mod diff;
pub mod disk;
pub mod ext4;
pub mod fat;
pub mod ids;
pub mod manifest;
pub mod packages;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod rootfs;
pub mod seed;
pub mod source;
pub mod store;
pub mod template;
pub mod tree;
pub mod uboot;
pub mod values;
