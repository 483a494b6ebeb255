//! What kmod's `depmod` writes for a kernel's modules, computed in Rust from the module files
//! themselves: Arch Linux ARM's kernel package ships `usr/lib/modules/<kver>/` without any
//! `modules.dep*` (pacman's kmod hook runs depmod on the target), and an image built without
//! running target code must carry them.
//!
//! The reference is kmod 30 as Debian bookworm ships it (`depmod -b ROOT VERSION`, no
//! configuration file): the integration test `kmod_depmod` compares every file with what that
//! depmod writes for two real Debian armhf kernels. The parts:
//!
//! - [`elf`]: the module's ELF tables depmod reads (System V gABI, kmod's `libkmod-elf.c`);
//! - [`compress`]: `.ko.xz`, `.ko.zst`, `.ko.gz` (kmod's `libkmod-file.c`), size-capped;
//! - [`module`]: [`ModuleInfo`] of one file ([`read_module`]), module names and paths;
//! - [`depmod`]: [`Depmod`]: module order, symbol owners, dependencies (kmod's `tools/depmod.c`);
//! - [`hash_order`]: the iteration order of kmod's hash table, which some outputs follow;
//! - [`index`]: the `.bin` index format (kmod's `libkmod-index.c`), written and read;
//! - [`files`]: the ten files depmod writes, byte for byte.
//!
//! The caller reads one module file at a time and keeps only its [`ModuleInfo`].

#![warn(clippy::cast_possible_truncation)]

pub mod compress;
pub mod depmod;
pub mod elf;
pub mod files;
pub mod hash_order;
pub mod index;
pub mod module;

pub use depmod::{Depmod, KernelLists};
pub use elf::Undefined;
pub use module::{Devname, ModuleInfo, is_module_path, module_name, read_module};
