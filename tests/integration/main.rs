//! The integration tests: one binary (one link step), one module per area. Every test checks
//! hc1img's output with a tool nobody here wrote (README.md, "Tests"); the shared helpers are
//! `common` (synthetic tarballs, running hc1img), `disk_common` and `ext4_util`.

mod common;
mod disk_common;
mod ext4_util;
mod gpg_keys;

mod boot_qemu;
mod build_e2e;
mod build_many_e2e;
mod compress_e2e;
mod diff_e2e;
mod disk_bmap;
mod disk_gpt;
mod disk_sdcard;
mod docs_reference;
mod edits_import;
mod edits_profile;
mod ext4_extents;
mod ext4_htree;
mod ext4_layout;
mod ext4_minimal;
mod ext4_misc;
mod ext4_prop;
mod ext4_tree;
mod ext4_view;
mod fat_oracles;
mod fixtures_rootfs;
mod flake;
mod flash_bmap;
mod hostile_tar;
mod initramfs_rewrite;
mod kernel_image;
mod kernel_initramfs;
mod kmod_depmod;
mod lint_initramfs;
mod module_graph;
mod offline_mirror;
mod ops_scripts;
mod overlays_e2e;
mod packages_e2e;
mod plan_env;
mod plan_hash;
mod profile_errors;
mod profile_fuzz;
mod profile_layers;
mod profile_shipped;
mod repro_e2e;
mod rootfs_e2e;
mod secrets_e2e;
mod seed_e2e;
mod source_fetch;
mod source_signature;
mod store_e2e;
mod uboot_mkimage;
mod workflows;
