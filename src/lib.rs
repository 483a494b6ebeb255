//! hc1img: build ready-to-boot disk images for Odroid HC1 nodes running Arch Linux ARM.
//!
//! One pinned root tarball plus one declarative profile become two images: `ssd.img` (GPT +
//! ext4 root) and `sd.img` (MBR + Exynos bootloader blobs + FAT `/boot`). Every byte is written
//! by this crate, in one streaming pass over the tarball; see `README.md` and `docs/`.
//!
//! `unsafe` is denied crate-wide; the system calls std does not wrap (`lseek`
//! SEEK_DATA/SEEK_HOLE, signal masks and `sigwait`) are allowed where they are made,
//! each with its SAFETY note. The on-disk writers (`ext4`, `fat`, `disk`, `uboot`, `sparse`)
//! warn on casts that may truncate (`clippy::cast_possible_truncation`, as ext4-view-rs does):
//! a value that can be out of range is converted with `try_from` and a located error, and
//! each remaining cast carries an `#[allow]` with the reason it is in range.

#![deny(unsafe_code)]

pub mod build;
pub mod commands;
pub mod diff;
pub mod disk;
pub mod edit;
pub mod ext4;
pub mod fat;
pub mod flash;
pub mod ids;
pub mod initramfs;
pub mod kernel;
pub mod kernel_image;
pub mod kmod;
pub mod lint;
pub mod manifest;
pub mod packages;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod rootfs;
pub mod sbom;
pub mod sections;
pub mod sector;
pub mod seed;
pub mod signing;
pub mod source;
pub mod sparse;
pub mod store;
pub mod sums;
pub mod template;
pub mod tree;
pub mod uboot;
pub mod values;
