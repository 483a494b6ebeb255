//! Hardware lints of a build: things that make a node fail to boot although every image is
//! well-formed. They are warnings with the fix, never errors; the build calls [`lint_boot`]
//! once the tarball's `/boot` is known.
//! A top-level module above both `disk` and `profile`: it reads the profile's [`Board`].
//!
//! - The initramfs must be able to find a root on the HC1's SSD, which sits behind a
//!   USB-SATA bridge: `usb-storage`, `uas` and `sd_mod` in the initramfs (mkinitcpio's `block`
//!   hook adds them) or built into the kernel. The initramfs is read by
//!   [`crate::initramfs::read`], as the kernel reads it.
//! - The bootloader blobs must end before U-Boot's saved environment; overlaps are refused
//!   by [`crate::disk::blobs::check_layout`], this only flags blobs placed past it.
//! - The tarball's own `boot.txt` is replaced by ours on the card; say so, and note load
//!   paths with a `/boot/` prefix, which only work when `/boot` is a directory of the root.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::profile::Board;
use crate::sector::SECTOR;

/// The kernel modules the SSD root needs, by module name.
pub const SSD_MODULES: [&str; 3] = ["usb-storage", "uas", "sd_mod"];

/// Largest `modules.builtin` kept.
const MAX_BUILTIN: usize = 1 << 20;

/// What an initramfs holds, as far as the lints care.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InitramfsSummary {
    /// Every path in the archive(s), without a leading `./` or `/`.
    pub names: Vec<String>,
    /// Contents of the `modules.builtin` files found (modules compiled into the kernel).
    pub builtin: String,
}

impl InitramfsSummary {
    /// Whether the archive has a kernel module tree (`usr/lib/modules/` or `lib/modules/`).
    pub fn has_modules(&self) -> bool {
        self.names
            .iter()
            .any(|n| n.starts_with("usr/lib/modules/") || n.starts_with("lib/modules/"))
    }

    /// Whether module `m` is in the archive (`m.ko`, `m.ko.zst`, …) or listed as built in.
    /// Module names treat `-` and `_` alike, as modprobe does.
    pub fn has_module(&self, m: &str) -> bool {
        let norm = |s: &str| s.replace('-', "_");
        let want = norm(m);
        let is_it = |path: &str| {
            let base = path.rsplit('/').next().unwrap_or(path);
            let base = norm(base);
            base == format!("{want}.ko") || base.starts_with(&format!("{want}.ko."))
        };
        self.names.iter().any(|n| is_it(n)) || self.builtin.lines().any(|l| is_it(l.trim()))
    }
}

/// Read an initramfs image ([`crate::initramfs::read`]) down to what the lints need.
/// Fails on a format it cannot read (the lint then says it cannot tell).
pub fn read_initramfs(data: &[u8]) -> Result<InitramfsSummary> {
    let archive = crate::initramfs::read(data)?;
    let mut out = InitramfsSummary::default();
    for e in archive.entries() {
        let path = e.path();
        let is_builtin = e.is_file()
            && path.rsplit('/').next() == Some("modules.builtin")
            && e.data.len() <= MAX_BUILTIN;
        if is_builtin {
            out.builtin.push_str(&String::from_utf8_lossy(&e.data));
            out.builtin.push('\n');
        }
        if !path.is_empty() {
            out.names.push(path);
        }
    }
    Ok(out)
}

/// Whether the root device `root` (after `boot.root` defaults) is the USB-attached SSD:
/// a `/dev/sd*` path, or any root on the HC1 other than the microSD (`/dev/mmcblk*`), whose
/// only other disk is the SSD behind its USB-SATA bridge.
pub fn root_on_usb(board_name: &str, root: &str) -> bool {
    root.starts_with("/dev/sd") || (board_name == "odroid-hc1" && !root.starts_with("/dev/mmcblk"))
}

/// Lint (a): the initramfs `data` (`None`: the tarball has none) against a root on the SSD.
pub fn lint_initramfs(name: &str, data: Option<&[u8]>) -> Option<String> {
    let data = data?;
    let fix = "regenerate it with mkinitcpio's block hook (HOOKS=(... block ...) in \
               /etc/mkinitcpio.conf, then mkinitcpio -P)";
    let info = match read_initramfs(data) {
        Ok(i) => i,
        Err(e) => {
            return Some(format!(
                "/boot/{name}: cannot read it ({e:#}); cannot tell whether it has \
                 usb-storage/uas/sd_mod for the root on the SSD; if they are not built into \
                 the kernel, {fix}"
            ));
        }
    };
    if !info.has_modules() {
        return Some(format!(
            "/boot/{name} has no kernel modules and the kernel config is unknown: cannot tell \
             whether usb-storage/uas/sd_mod are built in; if they are not, root on the SSD \
             will not be found; {fix}"
        ));
    }
    let missing: Vec<&str> = SSD_MODULES
        .iter()
        .copied()
        .filter(|m| !info.has_module(m))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "initramfs lacks usb-storage/uas/sd_mod (/boot/{name} has no {}): root on the SSD \
         will not be found; {fix}",
        missing.join(", ")
    ))
}

/// Lint (b): blobs that end past the start of U-Boot's environment area. Layouts that
/// [`crate::disk::blobs::check_layout`] refuses (overlaps) are left to it.
pub fn lint_blobs(board: &Board, sizes: &BTreeMap<String, u64>) -> Option<String> {
    let env = board.sd.env_area.as_ref()?;
    board.check_blob_layout(sizes).ok()?;
    let (file, end) = board
        .sd
        .blobs
        .iter()
        .filter_map(|s| {
            sizes
                .get(&s.file)
                .map(|&n| (s.file.clone(), s.sector + n.div_ceil(SECTOR)))
        })
        .max_by_key(|(_, e)| *e)?;
    (end > env.sector).then(|| {
        format!(
            "board {}: the bootloader blobs end at sector {end} ({file}), past the start of the \
             U-Boot environment area at sector {}: U-Boot reads its environment from inside \
             the blob area; move env_area (or the blobs) in the board file so the blobs end \
             first",
            board.name, env.sector
        )
    })
}

/// Lint (c): the tarball's own `boot.txt`, which the card does not use.
pub fn lint_boot_txt(data: Option<&[u8]>) -> Option<String> {
    let text = String::from_utf8_lossy(data?);
    let prefixed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains("load") && l.contains(" /boot/"))
        .collect();
    let mut msg = "the tarball's /boot/boot.txt was replaced on the card by the one hc1img \
                   generates from the board file (boot.scr is compiled from ours); put boot \
                   changes in the board file's boot_txt or the profile's [boot]"
        .to_string();
    if !prefixed.is_empty() {
        msg.push_str(&format!(
            "; its load paths carry a /boot/ prefix ({} line(s), e.g. `{}`), which does not \
             exist on the card's FAT partition where the boot files sit at the root",
            prefixed.len(),
            prefixed[0]
        ));
    }
    Some(msg)
}

/// Every lint of a build: `boot` maps the tarball's `/boot` files (relative names) to their
/// bytes; `root` is the kernel's root device as the profile resolves it.
pub fn lint_boot(board: &Board, root: &str, boot: &BTreeMap<String, &[u8]>) -> Vec<String> {
    let mut out = Vec::new();
    if root_on_usb(&board.name, root) {
        let name = "initramfs-linux.img";
        out.extend(lint_initramfs(name, boot.get(name).copied()));
    }
    let sizes: BTreeMap<String, u64> = boot
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    out.extend(lint_blobs(board, &sizes));
    out.extend(lint_boot_txt(boot.get("boot.txt").copied()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive of `(name, mode, data)` entries, written by hand.
    fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        crate::initramfs::cpio::hand_made(entries)
    }

    const KO: &str = "usr/lib/modules/6.6.0-ARCH/kernel/drivers";

    fn with_modules(mods: &[&str]) -> Vec<u8> {
        let names: Vec<String> = mods
            .iter()
            .map(|m| format!("{KO}/{m}.ko.zst"))
            .chain(std::iter::once("usr/bin/busybox".to_string()))
            .collect();
        let entries: Vec<(&str, u32, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), 0o100644, &b"\x28\xb5\x2f\xfdELF"[..]))
            .collect();
        newc(&entries)
    }

    #[test]
    fn warns_only_when_modules_are_missing() {
        let full = with_modules(&["usb-storage", "uas", "sd_mod"]);
        assert_eq!(lint_initramfs("i.img", Some(&full)), None);
        let part = with_modules(&["uas"]);
        let w = lint_initramfs("i.img", Some(&part)).unwrap();
        assert!(
            w.starts_with("initramfs lacks usb-storage/uas/sd_mod"),
            "{w}"
        );
        assert!(
            w.contains("usb-storage, sd_mod") && w.contains("block hook"),
            "{w}"
        );
        // Built-in modules are fine.
        let builtin = b"kernel/drivers/usb/storage/usb-storage.ko\nkernel/drivers/scsi/sd_mod.ko\n";
        let mut names: Vec<(&str, u32, &[u8])> = vec![(
            "usr/lib/modules/6.6.0-ARCH/modules.builtin",
            0o100644,
            &builtin[..],
        )];
        let uas = format!("{KO}/usb/storage/uas.ko.xz");
        names.push((&uas, 0o100644, b"x"));
        assert_eq!(lint_initramfs("i.img", Some(&newc(&names))), None);
        // No modules at all: cannot tell.
        let none = newc(&[("init", 0o100755, b"#!/bin/sh\n")]);
        let w = lint_initramfs("i.img", Some(&none)).unwrap();
        assert!(w.contains("cannot tell"), "{w}");
        let w = lint_initramfs("i.img", Some(b"garbage")).unwrap();
        assert!(w.contains("cannot tell"), "{w}");
        assert_eq!(lint_initramfs("i.img", None), None);
    }

    #[test]
    fn root_devices() {
        assert!(root_on_usb("odroid-hc1", "partuuid"));
        assert!(root_on_usb("odroid-hc1", "PARTUUID=abc"));
        assert!(root_on_usb("other", "/dev/sda1"));
        assert!(!root_on_usb("odroid-hc1", "/dev/mmcblk0p2"));
        assert!(!root_on_usb("qemu-virt", "/dev/vda1"));
    }

    #[test]
    fn boot_txt_prefixes() {
        let w = lint_boot_txt(Some(b"load mmc 0:1 ${kernel_addr_r} /boot/zImage\n")).unwrap();
        assert!(w.contains("replaced") && w.contains("/boot/ prefix"), "{w}");
        let w = lint_boot_txt(Some(b"load mmc 0:1 ${kernel_addr_r} zImage\n")).unwrap();
        assert!(w.contains("replaced") && !w.contains("prefix"), "{w}");
        assert_eq!(lint_boot_txt(None), None);
    }
}
