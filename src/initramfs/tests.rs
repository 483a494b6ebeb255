//! Tests of the initramfs model on archives written by hand here (not by [`super::cpio`]),
//! checked where it helps with the real tools: GNU `cpio -tv` / `cpio -id` and `bsdtar -tvf`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;
use cpio::S_IFCHR;

const OLD: &str = "6.6.63-1-ARCH";
const NEW: &str = "6.6.70-2-ARCH";
const DIR_MTIME: u32 = 1_700_000_000;

/// An entry to write by hand. `ino` 0: a fresh number.
#[derive(Clone)]
struct T {
    name: String,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

fn t(name: &str, mode: u32, data: &[u8]) -> T {
    T {
        name: name.to_string(),
        ino: 0,
        mode,
        nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
        mtime: 1_600_000_000,
        rdev: (0, 0),
        data: data.to_vec(),
    }
}

fn dir(name: &str) -> T {
    t(name, S_IFDIR | 0o755, b"")
}

fn file(name: &str, data: &[u8]) -> T {
    t(name, S_IFREG | 0o644, data)
}

fn link(name: &str, target: &str) -> T {
    t(name, S_IFLNK | 0o777, target.as_bytes())
}

fn dev(name: &str, kind: u32, major: u32, minor: u32) -> T {
    T {
        rdev: (major, minor),
        ..t(name, kind | 0o600, b"")
    }
}

/// Deterministic noise (compresses poorly, like module files).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// A newc archive as GNU cpio writes one: lowercase hex, fresh inode numbers from 1000,
/// the trailer, zeros up to a multiple of 512 bytes. `crc`: the 070702 form.
fn newc(entries: &[T], crc: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let trailer = T {
        nlink: 1,
        mtime: 0,
        ..t("TRAILER!!!", 0, b"")
    };
    for (i, e) in entries.iter().chain(std::iter::once(&trailer)).enumerate() {
        let ino = if e.name == "TRAILER!!!" {
            0
        } else if e.ino == 0 {
            1000 + u32::try_from(i).unwrap()
        } else {
            e.ino
        };
        let check = if crc {
            e.data.iter().map(|&b| u32::from(b)).sum()
        } else {
            0
        };
        let fields = [
            ino,
            e.mode,
            0,
            0,
            e.nlink,
            e.mtime,
            u32::try_from(e.data.len()).unwrap(),
            8,
            1,
            e.rdev.0,
            e.rdev.1,
            u32::try_from(e.name.len() + 1).unwrap(),
            check,
        ];
        out.extend_from_slice(if crc { b"070702" } else { b"070701" });
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(&e.data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
    out
}

/// An mkinitcpio-like tree with the modules of `kver` under `usr/lib/modules`; names start
/// with `prefix` (`""` or `"./"`, as `find .` gives GNU cpio).
fn sample(kver: &str, prefix: &str) -> Vec<T> {
    let m = format!("usr/lib/modules/{kver}");
    let mut v = vec![
        dir("."),
        link("bin", "usr/bin"),
        dir("dev"),
        dev("dev/console", S_IFCHR, 5, 1),
        dev("dev/loop0", cpio::S_IFBLK, 7, 0),
        dir("etc"),
        file("etc/fstab", b"# static file system information\n"),
        file("etc/initrd-release", b"NAME=mkinitcpio\n"),
        t("init", S_IFREG | 0o755, b"#!/usr/bin/ash\nexec switch_root /new_root /sbin/init\n"),
        link("lib", "usr/lib"),
        dir("run"),
        dir("usr"),
        dir("usr/bin"),
        // Hard links: the same ino, the data on the last.
        T {
            ino: 500,
            nlink: 2,
            ..t("usr/bin/ash", S_IFREG | 0o755, b"")
        },
        T {
            ino: 500,
            nlink: 2,
            ..t("usr/bin/busybox", S_IFREG | 0o755, &noise(5000, 1))
        },
        dir("usr/lib"),
        dir("usr/lib/modules"),
        T {
            mtime: DIR_MTIME,
            ..dir(&m)
        },
        dir(&format!("{m}/kernel")),
        dir(&format!("{m}/kernel/drivers")),
        dir(&format!("{m}/kernel/drivers/scsi")),
        file(&format!("{m}/kernel/drivers/scsi/sd_mod.ko.zst"), &noise(700, 2)),
        dir(&format!("{m}/kernel/drivers/usb")),
        dir(&format!("{m}/kernel/drivers/usb/storage")),
        file(&format!("{m}/kernel/drivers/usb/storage/uas.ko.zst"), &noise(600, 3)),
        file(
            &format!("{m}/kernel/drivers/usb/storage/usb-storage.ko.zst"),
            &noise(900, 4),
        ),
        file(
            &format!("{m}/modules.builtin"),
            b"kernel/drivers/usb/host/ehci-hcd.ko\n",
        ),
        file(&format!("{m}/modules.dep"), b"kernel/drivers/usb/storage/uas.ko.zst: kernel/drivers/usb/storage/usb-storage.ko.zst\n"),
        dir("usr/share"),
        file("usr/share/readme", b"after the modules\n"),
    ];
    for e in &mut v {
        if e.name != "." {
            e.name = format!("{prefix}{}", e.name);
        }
    }
    v
}

fn new_files() -> Vec<NewFile> {
    let f = |path: &str, data: Vec<u8>| NewFile {
        path: path.to_string(),
        data,
        mode: 0o644,
    };
    vec![
        f(
            "kernel/drivers/usb/storage/usb-storage.ko.xz",
            noise(950, 14),
        ),
        f("kernel/drivers/usb/storage/uas.ko.xz", noise(650, 13)),
        f("kernel/drivers/scsi/sd_mod.ko.xz", noise(750, 12)),
        f(
            "modules.dep",
            b"kernel/drivers/usb/storage/uas.ko.xz: kernel/drivers/usb/storage/usb-storage.ko.xz\n"
                .to_vec(),
        ),
        f("modules.dep.bin", noise(300, 15)),
    ]
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // Level 6: a rewrite (level 9) differs, so "unchanged" is told by the bytes.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

fn xz(data: &[u8], check: xz2::stream::Check) -> Vec<u8> {
    let s = xz2::stream::Stream::new_easy_encoder(1, check).unwrap();
    let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), s);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A legacy U-Boot ramdisk image of `body`, as `mkimage -A arm -O linux -T ramdisk -C none`.
fn uinitrd(body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 64];
    h[0..4].copy_from_slice(&0x2705_1956u32.to_be_bytes());
    h[8..12].copy_from_slice(&1_700_000_000u32.to_be_bytes());
    h[12..16].copy_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    h[24..28].copy_from_slice(&crc32fast::hash(body).to_be_bytes());
    h[28..32].copy_from_slice(&[5, 2, 3, 0]);
    h[32..41].copy_from_slice(b"initramfs");
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());
    [&h[..], body].concat()
}

/// Run an oracle tool; its stdout.
fn tool(cwd: &Path, cmd: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run the oracle `{cmd}` ({e}); install cpio and libarchive-tools")
        });
    let mut sin = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || sin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `cpio -tv` of a newc archive, one line per entry.
fn cpio_tv(newc: &[u8]) -> Vec<String> {
    let out = tool(Path::new("/"), "cpio", &["-tv", "--quiet"], newc);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn cpio_t(newc: &[u8]) -> Vec<String> {
    let out = tool(Path::new("/"), "cpio", &["-t", "--quiet"], newc);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn untouched_archives_are_written_back_byte_for_byte() {
    let plain = newc(&sample(OLD, ""), false);
    let dotted = newc(&sample(OLD, "./"), true);
    let early = newc(
        &[
            dir("kernel"),
            dir("kernel/x86"),
            dir("kernel/x86/microcode"),
            file("kernel/x86/microcode/GenuineIntel.bin", b"ucode"),
        ],
        false,
    );
    let images = [
        ("plain", plain.clone()),
        ("070702", dotted.clone()),
        ("gzip", gzip(&plain)),
        ("gzip + NULs", [gzip(&plain), vec![0; 300]].concat()),
        ("zstd", zstd::encode_all(&plain[..], 3).unwrap()),
        ("xz", xz(&plain, xz2::stream::Check::Crc32)),
        ("early + gzip", [early.clone(), gzip(&dotted)].concat()),
        (
            "early + zstd + gzip",
            [
                early,
                zstd::encode_all(&plain[..], 1).unwrap(),
                gzip(&plain),
            ]
            .concat(),
        ),
        ("uInitrd", uinitrd(&gzip(&plain))),
        (
            "xz + NULs + plain",
            [
                xz(&plain, xz2::stream::Check::Crc64),
                vec![0; 4],
                plain.clone(),
            ]
            .concat(),
        ),
        ("gzip + gzip", [gzip(&plain), gzip(&dotted)].concat()),
    ];
    for (name, img) in images {
        let i = read(&img).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(i.write().unwrap(), img, "{name}");
        for s in &i.segments {
            assert!(!s.is_changed().unwrap(), "{name}");
        }
        assert_eq!(i.module_versions(), vec![OLD.to_string()], "{name}");
    }
}

#[test]
fn the_model_keeps_every_field() {
    let i = read(&gzip(&newc(&sample(OLD, ""), true))).unwrap();
    assert_eq!(i.segments.len(), 1);
    assert_eq!(i.segments[0].compression, Compression::Gzip);
    let es = &i.segments[0].entries;
    let get = |n: &str| es.iter().find(|e| e.name == n.as_bytes()).unwrap();
    let c = get("dev/console");
    assert_eq!(
        (c.mode, c.rdev_major, c.rdev_minor),
        (S_IFCHR | 0o600, 5, 1)
    );
    assert_eq!((c.dev_major, c.dev_minor), (8, 1));
    assert!(c.crc);
    assert_eq!(get("lib").data, b"usr/lib");
    let (ash, bb) = (get("usr/bin/ash"), get("usr/bin/busybox"));
    assert_eq!((ash.ino, ash.nlink, ash.data.len()), (500, 2, 0));
    assert_eq!((bb.ino, bb.nlink, bb.data.len()), (500, 2, 5000));
    assert_eq!(get(&format!("usr/lib/modules/{OLD}")).mtime, DIR_MTIME);
    assert!(es.last().unwrap().is_trailer());
    assert_eq!(
        i.modules(OLD),
        [
            "kernel/drivers/scsi/sd_mod.ko.zst",
            "kernel/drivers/usb/storage/uas.ko.zst",
            "kernel/drivers/usb/storage/usb-storage.ko.zst",
        ]
    );
    assert!(i.modules(NEW).is_empty());
}

/// Swap the modules in `img` (holding `sample(OLD, prefix)` in its last segment) and check
/// the result with GNU cpio and bsdtar against the original; returns the written image.
fn swap_and_check(img: &[u8], prefix: &str, unpack: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let before = read(img).unwrap();
    let mut i = before.clone();
    i.replace_modules(OLD, NEW, new_files()).unwrap();
    let out = i.write().unwrap();
    assert_eq!(out, i.write().unwrap(), "write is deterministic");

    // Our reader: the new version only, with the given files.
    let again = read(&out).unwrap();
    assert_eq!(again.module_versions(), vec![NEW.to_string()]);
    assert_eq!(
        again.modules(NEW),
        [
            "kernel/drivers/scsi/sd_mod.ko.xz",
            "kernel/drivers/usb/storage/uas.ko.xz",
            "kernel/drivers/usb/storage/usb-storage.ko.xz",
        ]
    );
    assert_eq!(
        again.write().unwrap(),
        out,
        "a rewritten image reads back unchanged"
    );

    // GNU cpio: everything else listed the same (modes, link counts, owners, sizes, dates,
    // device numbers, symlink targets).
    let last = |b: &[u8]| -> Vec<u8> {
        let r = read(b).unwrap();
        let s = r.segments.last().unwrap();
        let o = &s.original;
        match s.compression {
            Compression::None => o.bytes.clone(),
            _ => unpack(&o.bytes),
        }
    };
    let (old_newc, new_newc) = (last(img), last(&out));
    let others = |l: &[String]| -> Vec<String> {
        l.iter()
            .filter(|l| !l.contains(OLD) && !l.contains(NEW))
            .cloned()
            .collect()
    };
    let (tv0, tv1) = (cpio_tv(&old_newc), cpio_tv(&new_newc));
    assert_eq!(others(&tv0), others(&tv1));
    assert!(
        tv0.iter()
            .any(|l| l.starts_with("crw-------") && l.contains("5,"))
    );
    assert!(tv1.iter().any(|l| l.contains("lib -> usr/lib")));
    assert!(!tv1.iter().any(|l| l.contains(OLD)), "{tv1:#?}");

    // The new directory: exactly these names, directories before their contents, at the
    // place of the old one (between usr/lib/modules and usr/share).
    let names = cpio_t(&new_newc);
    let m = format!("{prefix}usr/lib/modules/{NEW}");
    let want: Vec<String> = [
        "",
        "/kernel",
        "/kernel/drivers",
        "/kernel/drivers/usb",
        "/kernel/drivers/usb/storage",
        "/kernel/drivers/usb/storage/usb-storage.ko.xz",
        "/kernel/drivers/usb/storage/uas.ko.xz",
        "/kernel/drivers/scsi",
        "/kernel/drivers/scsi/sd_mod.ko.xz",
        "/modules.dep",
        "/modules.dep.bin",
    ]
    .iter()
    .map(|s| format!("{m}{s}"))
    .collect();
    let got: Vec<String> = names.iter().filter(|n| n.contains(NEW)).cloned().collect();
    assert_eq!(got, want);
    let at = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(at(&format!("{prefix}usr/lib/modules")) < at(&m));
    assert!(at(&want[10]) < at(&format!("{prefix}usr/share")));
    let new_lines: Vec<&String> = tv1.iter().filter(|l| l.contains(NEW)).collect();
    assert!(
        new_lines[0].starts_with("drwxr-xr-x   3 root     root"),
        "{new_lines:#?}"
    );
    assert!(
        new_lines[1].starts_with("drwxr-xr-x   3 root"),
        "{new_lines:#?}"
    );
    assert!(
        new_lines[5].starts_with("-rw-r--r--   1 root"),
        "{new_lines:#?}"
    );
    let e = again
        .entries()
        .find(|e| e.path() == format!("usr/lib/modules/{NEW}"))
        .unwrap();
    assert_eq!(
        (e.mtime, e.mode, e.uid, e.gid),
        (DIR_MTIME, S_IFDIR | 0o755, 0, 0)
    );

    // Unpacked by GNU cpio (device nodes aside): contents, the hard link, the symlink.
    let tmp = tempfile::tempdir().unwrap();
    tool(
        tmp.path(),
        "cpio",
        &["-id", "--quiet", "--no-absolute-filenames", "-f", "*dev/*"],
        &new_newc,
    );
    let root = tmp.path();
    for f in new_files() {
        let p = root.join(format!("usr/lib/modules/{NEW}/{}", f.path));
        assert_eq!(std::fs::read(&p).unwrap(), f.data, "{}", p.display());
    }
    assert!(!root.join(format!("usr/lib/modules/{OLD}")).exists());
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(root.join("usr/bin/ash")).unwrap(),
        std::fs::metadata(root.join("usr/bin/busybox")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink(), a.len()), (b.ino(), 2, 5000));
    assert_eq!(
        std::fs::read_link(root.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    assert_eq!(
        std::fs::read(root.join("etc/fstab")).unwrap(),
        b"# static file system information\n"
    );

    // bsdtar reads the rewritten segment as written (decompressing it by itself; it reads
    // one archive, so not an image of several segments).
    let seg = again.segments.last().unwrap();
    let l = String::from_utf8(tool(root, "bsdtar", &["-tvf", "-"], &seg.original.bytes)).unwrap();
    assert!(
        l.contains(&format!("{NEW}/kernel/drivers/scsi/sd_mod.ko.xz")),
        "{l}"
    );
    assert!(l.contains("usr/bin/busybox"), "{l}");
    out
}

#[test]
fn version_swap_in_a_gzip_archive() {
    let img = gzip(&newc(&sample(OLD, ""), false));
    let out = swap_and_check(&img, "", gunzip);
    assert!(out.starts_with(&[0x1f, 0x8b, 0x08]));
    // Written with no name and mtime 0 (RFC 1952 FLG and MTIME), at level 9 (XFL 2).
    assert_eq!(&out[3..10], &[0, 0, 0, 0, 0, 2, 255]);
}

#[test]
fn version_swap_in_a_plain_dotted_070702_archive() {
    let img = newc(&sample(OLD, "./"), true);
    let out = swap_and_check(&img, "./", |_| unreachable!());
    assert!(out.starts_with(b"070702"));
    // The checksum of a new file is the sum of its bytes.
    let i = read(&out).unwrap();
    let e = i
        .entries()
        .find(|e| e.path().ends_with("modules.dep.bin"))
        .unwrap();
    assert!(e.crc);
}

#[test]
fn version_swap_in_zstd_and_xz_archives_keeps_the_compression() {
    let plain = newc(&sample(OLD, ""), false);
    let unzstd = |b: &[u8]| zstd::decode_all(b).unwrap();
    let out = swap_and_check(&zstd::encode_all(&plain[..], 3).unwrap(), "", unzstd);
    assert!(out.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    // With a content checksum (RFC 8878 3.1.1.1.1: bit 2 of the frame header descriptor).
    assert_eq!(out[4] & 0x04, 0x04);

    let unxz = |b: &[u8]| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut xz2::read::XzDecoder::new(b), &mut out).unwrap();
        out
    };
    for (check, id) in [
        (xz2::stream::Check::Crc32, 1),
        (xz2::stream::Check::None, 0),
        (xz2::stream::Check::Crc64, 4),
    ] {
        let out = swap_and_check(&xz(&plain, check), "", unxz);
        assert!(out.starts_with(b"\xfd7zXZ\0"));
        assert_eq!(out[7], id, "the stream keeps its integrity check");
        let c = read(&out).unwrap().segments[0].compression;
        assert!(matches!(c, Compression::Xz(_)), "{c:?}");
    }
}

#[test]
fn an_early_uncompressed_segment_stays_byte_identical() {
    let early = newc(
        &[
            dir("kernel"),
            dir("kernel/x86"),
            dir("kernel/x86/microcode"),
            file("kernel/x86/microcode/AuthenticAMD.bin", &noise(999, 9)),
        ],
        false,
    );
    let img = [early.clone(), gzip(&newc(&sample(OLD, ""), false))].concat();
    let out = swap_and_check(&img, "", gunzip);
    assert_eq!(&out[..early.len()], &early[..]);
    let i = read(&out).unwrap();
    assert_eq!(i.segments.len(), 2);
    assert_eq!(i.segments[0].compression, Compression::None);
    assert_eq!(i.segments[1].compression, Compression::Gzip);
    assert!(!i.segments[0].is_changed().unwrap());
}

#[test]
fn a_plain_segment_after_a_changed_one_stays_aligned() {
    // gzip main archive, then a plain one: the rewritten gzip member has another length,
    // and the plain archive must still start at a multiple of 4.
    let extra = newc(&[file("etc/extra", b"late")], false);
    for pad in 0..4 {
        let mut first = gzip(&newc(&sample(OLD, ""), false));
        first.resize(first.len() + pad, 0);
        while !first.len().is_multiple_of(4) {
            first.push(0);
        }
        let img = [first, extra.clone()].concat();
        let mut i = read(&img).unwrap();
        i.replace_modules(OLD, NEW, new_files()).unwrap();
        let out = i.write().unwrap();
        let again = read(&out).unwrap();
        assert_eq!(again.segments.len(), 2);
        assert!(out.ends_with(&extra));
        assert_eq!((out.len() - extra.len()) % 4, 0);
    }
}

#[test]
fn a_uboot_wrapped_initramfs_gets_a_new_header() {
    let img = uinitrd(&gzip(&newc(&sample(OLD, ""), false)));
    let out = swap_and_check(&img, "", gunzip);
    // Read back: the header and data CRCs are checked.
    let i = read(&out).unwrap();
    assert_eq!(i.module_versions(), vec![NEW.to_string()]);
    assert_eq!(&out[32..41], b"initramfs");
    assert_eq!(
        u32::from_be_bytes(out[12..16].try_into().unwrap()) as usize,
        out.len() - 64
    );
    let mut bad = out.clone();
    bad[100] ^= 1;
    let e = format!("{:#}", read(&bad).unwrap_err());
    assert!(e.contains("bad data CRC"), "{e}");
}

#[test]
fn modules_reached_through_a_lib_symlink() {
    // The module files are named lib/modules/…, and lib is a symlink to usr/lib.
    let k = format!("lib/modules/{OLD}");
    let entries = vec![
        dir("usr"),
        dir("usr/lib"),
        link("lib", "usr/lib"),
        dir(&k),
        dir(&format!("{k}/kernel")),
        file(&format!("{k}/kernel/uas.ko"), b"uas"),
        file(&format!("{k}/modules.dep"), b"kernel/uas.ko:\n"),
        file("init", b"#!/bin/sh\n"),
    ];
    let img = newc(&entries, false);
    let mut i = read(&img).unwrap();
    assert_eq!(i.module_versions(), vec![OLD.to_string()]);
    assert_eq!(i.modules(OLD), ["kernel/uas.ko"]);
    i.replace_modules(OLD, NEW, new_files()).unwrap();
    let names: Vec<String> = i.entries().map(Entry::path).collect();
    assert!(
        names.contains(&format!("lib/modules/{NEW}/modules.dep.bin")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains(OLD)), "{names:?}");
    let out = i.write().unwrap();
    assert_eq!(read(&out).unwrap().module_versions(), vec![NEW.to_string()]);

    // An absolute symlink target, a `usr/lib -> ../lib` the other way round, and a loop.
    let entries = vec![
        dir("lib"),
        dir("usr"),
        link("usr/lib", "/lib"),
        dir(&format!("usr/lib/modules/{OLD}")),
        file(&format!("usr/lib/modules/{OLD}/kernel/sd_mod.ko.gz"), b"sd"),
        link("a", "b"),
        link("b", "a"),
        file("a/x", b"in a loop"),
    ];
    let i = read(&newc(&entries, false)).unwrap();
    assert_eq!(i.module_versions(), vec![OLD.to_string()]);
    assert_eq!(i.modules(OLD), ["kernel/sd_mod.ko.gz"]);
}

#[test]
fn hard_links_stay_whole_when_a_link_goes() {
    let k = format!("usr/lib/modules/{OLD}");
    // The data is on the module (the last link), which goes: the link outside gets it.
    let entries = vec![
        dir("usr"),
        dir("usr/share"),
        T {
            ino: 77,
            nlink: 2,
            ..file("usr/share/uas-copy.ko", b"")
        },
        dir("usr/lib"),
        dir("usr/lib/modules"),
        dir(&k),
        T {
            ino: 77,
            nlink: 2,
            ..file(&format!("{k}/uas.ko"), b"UAS MODULE")
        },
    ];
    let mut i = read(&newc(&entries, false)).unwrap();
    i.replace_modules(OLD, NEW, new_files()).unwrap();
    let out = i.write().unwrap();
    let copy = i
        .entries()
        .find(|e| e.path() == "usr/share/uas-copy.ko")
        .unwrap();
    assert_eq!((copy.nlink, copy.data.as_slice()), (1, &b"UAS MODULE"[..]));
    let tmp = tempfile::tempdir().unwrap();
    tool(tmp.path(), "cpio", &["-id", "--quiet"], &out);
    assert_eq!(
        std::fs::read(tmp.path().join("usr/share/uas-copy.ko")).unwrap(),
        b"UAS MODULE"
    );

    // Three links, one of them in the module directory: the others keep theirs.
    let entries = vec![
        T {
            ino: 9,
            nlink: 3,
            ..file("a", b"")
        },
        T {
            ino: 9,
            nlink: 3,
            ..file(&format!("{k}/b.ko"), b"")
        },
        T {
            ino: 9,
            nlink: 3,
            ..file("c", b"shared")
        },
    ];
    let mut i = read(&newc(&entries, false)).unwrap();
    i.replace_modules(OLD, NEW, vec![]).unwrap();
    let out = i.write().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    tool(tmp.path(), "cpio", &["-id", "--quiet"], &out);
    use std::os::unix::fs::MetadataExt;
    let (a, c) = (
        std::fs::metadata(tmp.path().join("a")).unwrap(),
        std::fs::metadata(tmp.path().join("c")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink(), a.len()), (c.ino(), 2, 6));
    // Renumbered: 1, 2, … in order, the links sharing one number.
    let again = read(&out).unwrap();
    let inos: Vec<(String, u32, u32)> = again
        .entries()
        .map(|e| (e.path(), e.ino, e.nlink))
        .collect();
    assert_eq!(
        inos,
        [
            ("a".to_string(), 1, 2),
            (format!("usr/lib/modules/{NEW}"), 2, 2),
            ("c".to_string(), 1, 2)
        ]
    );
}

#[test]
fn replace_modules_refuses_what_it_cannot_do() {
    let img = newc(&sample(OLD, ""), false);
    let mut i = read(&img).unwrap();
    let e = i
        .replace_modules("6.1.0-99-armmp", NEW, new_files())
        .unwrap_err()
        .to_string();
    assert!(e.contains("6.1.0-99-armmp") && e.contains(OLD), "{e}");

    let bad = |path: &str, mode: u32, data: &[u8]| {
        let mut i = read(&img).unwrap();
        let f = NewFile {
            path: path.to_string(),
            data: data.to_vec(),
            mode,
        };
        format!("{:#}", i.replace_modules(OLD, NEW, vec![f]).unwrap_err())
    };
    for p in ["", "/abs.ko", "a//b.ko", "../up.ko", "./x.ko", "a/./b"] {
        assert!(bad(p, 0o644, b"x").contains("not a relative path"), "{p:?}");
    }
    assert!(bad("dev", S_IFCHR | 0o600, b"").contains("not supported"));
    assert!(bad("d", S_IFDIR | 0o755, b"data").contains("directory no data"));
    let mut i = read(&img).unwrap();
    let twice = vec![
        NewFile {
            path: "a.ko".into(),
            data: vec![],
            mode: 0o644,
        };
        2
    ];
    assert!(format!("{:#}", i.replace_modules(OLD, NEW, twice).unwrap_err()).contains("twice"));
    let nested = vec![
        NewFile {
            path: "kernel".into(),
            data: vec![1],
            mode: 0o644,
        },
        NewFile {
            path: "kernel/a.ko".into(),
            data: vec![],
            mode: 0o644,
        },
    ];
    let e = format!("{:#}", i.replace_modules(OLD, NEW, nested).unwrap_err());
    assert!(e.contains("is not a directory"), "{e}");
    for v in ["", "a/b", "..", "."] {
        assert!(i.replace_modules(OLD, v, vec![]).is_err(), "{v:?}");
    }
    // Nothing was changed by the refusals.
    assert_eq!(i.write().unwrap(), img);

    // Two versions: one cannot become the other.
    let two: Vec<T> = sample(OLD, "")
        .into_iter()
        .chain([dir(&format!("usr/lib/modules/{NEW}"))])
        .collect();
    let mut i = read(&newc(&two, false)).unwrap();
    assert_eq!(i.module_versions(), vec![OLD.to_string(), NEW.to_string()]);
    let e = i.replace_modules(OLD, NEW, vec![]).unwrap_err().to_string();
    assert!(e.contains("already has"), "{e}");
    // The same version, new files: fine.
    i.replace_modules(OLD, OLD, new_files()).unwrap();
    assert_eq!(i.modules(OLD).len(), 3);
}

#[test]
fn explicit_directories_and_symlinks_in_new_files() {
    let mut i = read(&newc(&sample(OLD, ""), false)).unwrap();
    let files = vec![
        NewFile {
            path: "kernel/a.ko".into(),
            data: b"a".to_vec(),
            mode: 0o600,
        },
        NewFile {
            path: "kernel".into(),
            data: vec![],
            mode: S_IFDIR | 0o700,
        },
        NewFile {
            path: "build".into(),
            data: b"/usr/src/linux".to_vec(),
            mode: S_IFLNK | 0o777,
        },
    ];
    i.replace_modules(OLD, NEW, files).unwrap();
    let got: Vec<(String, u32)> = i
        .entries()
        .filter(|e| e.path().contains(NEW))
        .map(|e| (e.path(), e.mode))
        .collect();
    let m = format!("usr/lib/modules/{NEW}");
    assert_eq!(
        got,
        [
            (m.clone(), S_IFDIR | 0o755),
            (format!("{m}/kernel"), S_IFDIR | 0o700),
            (format!("{m}/kernel/a.ko"), S_IFREG | 0o600),
            (format!("{m}/build"), S_IFLNK | 0o777),
        ]
    );
}

#[test]
fn truncated_input_is_an_error_not_a_panic() {
    let plain = newc(&sample(OLD, ""), false);
    // The archive proper ends at its trailer (then the zeros up to 512).
    let end = plain.windows(10).position(|w| w == b"TRAILER!!!").unwrap() + 14;
    for cut in 1..end {
        assert!(read(&plain[..cut]).is_err(), "plain cut at {cut}");
    }
    assert!(read(&plain[..end]).is_ok());
    for img in [
        gzip(&plain),
        zstd::encode_all(&plain[..], 3).unwrap(),
        xz(&plain, xz2::stream::Check::Crc32),
    ] {
        for cut in 1..img.len() {
            assert!(read(&img[..cut]).is_err(), "cut at {cut} of {}", img.len());
        }
    }
    let e = format!("{:#}", read(&plain[..300]).unwrap_err());
    assert!(
        e.contains("truncated") && e.contains("segment 1 (at byte 0)"),
        "{e}"
    );
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    let plain = newc(&sample(OLD, ""), false);
    for img in [
        plain.clone(),
        gzip(&plain),
        zstd::encode_all(&plain[..], 3).unwrap(),
    ] {
        for at in (0..img.len()).step_by(7) {
            for x in [0x01, 0x55, 0xff] {
                let mut bad = img.clone();
                bad[at] ^= x;
                // Either outcome, but an outcome.
                let _ = read(&bad).map(|i| i.write());
            }
        }
    }
    let e = |b: &[u8]| format!("{:#}", read(b).unwrap_err());
    assert!(e(b"garbage").contains("neither a newc cpio archive"));
    assert!(e(&[0u8; 1000]).contains("no cpio archive"));
    assert!(e(b"").contains("no cpio archive"));
    assert!(e(b"\x02\x21\x4c\x18lz4 data").contains("lz4-compressed"));
    assert!(e(b"BZh91AY&SY").contains("bzip2-compressed"));
    // A plain archive must start at a multiple of 4.
    assert!(e(&[&[0u8, 0][..], &plain].concat()).contains("multiple of 4"));
    // Junk after the archive.
    assert!(e(&[plain.clone(), b"junk".to_vec()].concat()).contains("segment 2"));
    // Bad header fields.
    let mut h = plain.clone();
    h[6 + 8 * 6] = b'g';
    assert!(e(&h).contains("bad cpio header field"));
    let mut h = plain.clone();
    h[6 + 8 * 11..6 + 8 * 12].copy_from_slice(b"00000000");
    assert!(e(&h).contains("bad cpio name size 0"));
    let mut h = plain.clone();
    h[6 + 8 * 11..6 + 8 * 12].copy_from_slice(b"00100000");
    assert!(e(&h).contains("bad cpio name size"));
    // A file claiming 4 GiB with a few bytes after it: truncated, nothing huge allocated.
    let mut h = newc(&[file("big", b"0123456789")], false);
    h[6 + 8 * 6..6 + 8 * 7].copy_from_slice(b"ffffffff");
    h.truncate(200);
    let msg = e(&h);
    assert!(msg.contains("truncated in the data of \"big\""), "{msg}");
    // A gzip member whose data was damaged: its CRC says so.
    let mut g = gzip(&plain);
    let n = g.len();
    g[n - 8] ^= 1;
    assert!(read(&g).is_err());
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    let big = newc(&[file("zeros", &vec![0u8; 3 << 20])], false);
    let g = gzip(&big);
    assert!(g.len() < 10_000);
    let e = format!("{:#}", read_capped(&g, 1 << 20).unwrap_err());
    assert!(e.contains("unpacks to more than 1 MiB"), "{e}");
    let z = zstd::encode_all(&big[..], 3).unwrap();
    assert!(read_capped(&z, 1 << 20).is_err());
    // The cap is on everything unpacked, all segments together.
    let two = [g.clone(), g.clone()].concat();
    assert!(read_capped(&two, 5 << 20).is_err());
    assert!(read_capped(&two, 7 << 20).is_ok());
    // A plain archive counts too.
    assert!(read_capped(&big, 1 << 20).is_err());
}
