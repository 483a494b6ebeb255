//! Hardware lints of a build: things that make a node fail to boot although every image is
//! well-formed. They are warnings with the fix, never errors; the build calls [`lint_boot`]
//! once the tarball's `/boot` is known.
//! A top-level module above both `disk` and `profile`: it reads the profile's [`Board`].
//!
//! - The initramfs must be able to find a root on the HC1's SSD, which sits behind a
//!   USB-SATA bridge: `usb-storage`, `uas` and `sd_mod` in the initramfs (mkinitcpio's `block`
//!   hook adds them) or built into the kernel. The initramfs is read as the kernel does
//!   (Documentation/driver-api/early-userspace/buffer-format.rst): concatenated `newc`
//!   (`070701`/`070702`) cpio archives, each plain or compressed (gzip RFC 1952, zstd
//!   RFC 8878, xz), told apart by their magic numbers, optionally inside a legacy U-Boot
//!   ramdisk image (64-byte header, magic `0x27051956`).
//! - The bootloader blobs must end before U-Boot's saved environment; overlaps are refused
//!   by [`crate::disk::blobs::check_layout`], this only flags blobs placed past it.
//! - The tarball's own `boot.txt` is replaced by ours on the card; say so, and note load
//!   paths with a `/boot/` prefix, which only work when `/boot` is a directory of the root.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result, bail};

use crate::profile::Board;
use crate::sector::SECTOR;

/// The kernel modules the SSD root needs, by module name.
pub const SSD_MODULES: [&str; 3] = ["usb-storage", "uas", "sd_mod"];

/// Largest decompressed initramfs read (a bomb stops here; real ones are tens of MiB).
const MAX_UNPACKED: u64 = 1 << 30;
/// Largest `modules.builtin` kept.
const MAX_BUILTIN: u64 = 1 << 20;

/// What an initramfs holds, as far as the lints care.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Initramfs {
    /// Every path in the archive(s), without a leading `./` or `/`.
    pub names: Vec<String>,
    /// Contents of the `modules.builtin` files found (modules compiled into the kernel).
    pub builtin: String,
}

impl Initramfs {
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

/// Compression of one archive segment, by magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpio,
    Gzip,
    Zstd,
    Xz,
}

fn kind(data: &[u8]) -> Option<Kind> {
    if data.starts_with(b"070701") || data.starts_with(b"070702") {
        Some(Kind::Cpio)
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Some(Kind::Gzip)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Kind::Zstd)
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Kind::Xz)
    } else {
        None
    }
}

/// Read an initramfs image: one or more concatenated cpio archives, plain or compressed.
/// Fails on a format it cannot read (the lint then says it cannot tell).
pub fn read_initramfs(data: &[u8]) -> Result<Initramfs> {
    let mut out = Initramfs::default();
    // A legacy U-Boot image (`mkimage -T ramdisk`, uInitrd) wraps the archive in a 64-byte
    // header starting with the magic 0x27051956.
    let mut pos = if data.starts_with(&[0x27, 0x05, 0x19, 0x56]) && data.len() > 64 {
        64
    } else {
        0
    };
    let mut segments = 0;
    loop {
        // Archives are padded with zeros between each other.
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if pos >= data.len() {
            break;
        }
        let rest = &data[pos..];
        let Some(k) = kind(rest) else {
            if segments == 0 {
                bail!(
                    "not a newc cpio archive, nor gzip, zstd or xz (magic {})",
                    hex::encode(&rest[..rest.len().min(6)])
                );
            }
            bail!("unknown data at byte {pos} after {segments} archive(s)");
        };
        segments += 1;
        match k {
            Kind::Cpio => {
                let mut r = Counting { inner: rest, n: 0 };
                read_cpio(&mut r, &mut out)?;
                pos += r.n as usize;
            }
            // A compressed archive runs to the end of the image (the kernel's decompressors
            // do not report their length either); what follows it is not inspected.
            Kind::Gzip => {
                let d = flate2::read::MultiGzDecoder::new(rest);
                read_cpio_stream(d, &mut out).context("gzip initramfs")?;
                break;
            }
            Kind::Zstd => {
                let d = zstd::stream::read::Decoder::new(rest).context("zstd initramfs")?;
                read_cpio_stream(d, &mut out).context("zstd initramfs")?;
                break;
            }
            Kind::Xz => {
                let d = xz2::read::XzDecoder::new_multi_decoder(rest);
                read_cpio_stream(d, &mut out).context("xz initramfs")?;
                break;
            }
        }
    }
    Ok(out)
}

/// Read consecutive cpio archives from a decompressed stream until it ends.
fn read_cpio_stream(r: impl Read, out: &mut Initramfs) -> Result<()> {
    let mut r = Counting {
        inner: r.take(MAX_UNPACKED),
        n: 0,
    };
    let mut archives = 0;
    loop {
        // Skip zero padding; stop at the end of the stream. Once an archive was read, data
        // the decompressor cannot make sense of (padding after the last member) ends it, as
        // the kernel's unpacker ignores it too.
        let mut b = [0u8; 1];
        let first = loop {
            match r.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) if b[0] == 0 => continue,
                Ok(_) => break b[0],
                Err(_) if archives > 0 => return Ok(()),
                Err(e) => return Err(e).context("cannot decompress"),
            }
        };
        archives += 1;
        let mut chained = Chain {
            first: Some(first),
            inner: &mut r,
        };
        read_cpio(&mut chained, out)?;
    }
}

/// A reader that counts the bytes it passed on.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// One byte already read, then the rest.
struct Chain<'a, R> {
    first: Option<u8>,
    inner: &'a mut R,
}

impl<R: Read> Read for Chain<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.first.take() {
            buf[0] = b;
            return Ok(1);
        }
        self.inner.read(buf)
    }
}

/// Skip `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink()).context("cannot read")?;
    if got != n {
        bail!("archive truncated");
    }
    Ok(())
}

/// Read one newc archive up to and including its `TRAILER!!!` entry (and its padding).
///
/// Header: magic `070701`/`070702` then 13 fields of 8 hex digits (ino, mode, uid, gid,
/// nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check); the
/// name (with its NUL) is padded so header + name is a multiple of 4, and so is the data.
fn read_cpio(r: &mut impl Read, out: &mut Initramfs) -> Result<()> {
    loop {
        let mut h = [0u8; 110];
        r.read_exact(&mut h)
            .context("cpio archive truncated in a header")?;
        if !(h.starts_with(b"070701") || h.starts_with(b"070702")) {
            bail!(
                "bad cpio header magic {:?} (only newc archives are read)",
                String::from_utf8_lossy(&h[..6])
            );
        }
        let field = |i: usize| -> Result<u64> {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap_or("?");
            u64::from_str_radix(s, 16).with_context(|| format!("bad cpio header field {s:?}"))
        };
        let mode = field(1)?;
        let filesize = field(6)?;
        let namesize = field(11)?;
        if namesize == 0 || namesize > 4096 {
            bail!("bad cpio name size {namesize}");
        }
        let mut name = vec![0u8; namesize as usize];
        r.read_exact(&mut name)
            .context("cpio archive truncated in a name")?;
        skip(r, (4 - (110 + namesize) % 4) % 4)?;
        let name = String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
        if name == "TRAILER!!!" {
            return Ok(());
        }
        let clean = name.trim_start_matches("./").trim_start_matches('/');
        let is_builtin = mode & 0o170000 == 0o100000
            && clean.rsplit('/').next() == Some("modules.builtin")
            && filesize <= MAX_BUILTIN;
        if is_builtin {
            let mut data = vec![0u8; filesize as usize];
            r.read_exact(&mut data)
                .context("cpio archive truncated in modules.builtin")?;
            out.builtin.push_str(&String::from_utf8_lossy(&data));
            out.builtin.push('\n');
        } else {
            skip(r, filesize)?;
        }
        skip(r, (4 - filesize % 4) % 4)?;
        if !clean.is_empty() {
            out.names.push(clean.to_string());
        }
    }
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
        let mut out = Vec::new();
        let all = entries
            .iter()
            .copied()
            .chain(std::iter::once(("TRAILER!!!", 0, &b""[..])));
        for (i, (name, mode, data)) in all.enumerate() {
            let fields = [
                i as u32 + 1,
                mode,
                0,
                0,
                1,
                0,
                data.len() as u32,
                0,
                0,
                0,
                0,
                name.len() as u32 + 1,
                0,
            ];
            out.extend_from_slice(b"070701");
            for f in fields {
                out.extend_from_slice(format!("{f:08X}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
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
    fn reads_plain_and_compressed_archives() {
        let a = with_modules(&["usb-storage", "uas", "sd_mod"]);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &a).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&a[..], 3).unwrap();
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            std::io::Write::write_all(&mut e, &a).unwrap();
            e.finish().unwrap()
        };
        for img in [&a, &gz, &zs, &xz] {
            let i = read_initramfs(img).unwrap();
            assert!(i.has_modules());
            assert!(SSD_MODULES.iter().all(|m| i.has_module(m)), "{i:?}");
            assert!(i.names.contains(&"usr/bin/busybox".to_string()));
        }
        // An early (uncompressed) archive followed by the compressed main one.
        let early = newc(&[("kernel/x86/microcode/a.bin", 0o100644, b"ucode")]);
        let both = [early, gz.clone()].concat();
        let i = read_initramfs(&both).unwrap();
        assert!(i.names.iter().any(|n| n.contains("microcode")));
        assert!(i.has_module("uas"));
        // Zero padding after a compressed archive, and a uInitrd header in front.
        let padded = [gz.clone(), vec![0u8; 512]].concat();
        assert!(read_initramfs(&padded).unwrap().has_module("sd_mod"));
        let wrapped = [vec![0x27, 0x05, 0x19, 0x56], vec![0u8; 60], zs].concat();
        assert!(read_initramfs(&wrapped).unwrap().has_module("usb_storage"));
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
    fn truncated_archive_is_an_error_not_a_panic() {
        let a = with_modules(&["uas"]);
        for cut in [7, 110, 150, a.len() - 3] {
            assert!(read_initramfs(&a[..cut]).is_err(), "cut at {cut}");
        }
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
