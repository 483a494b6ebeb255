//! The kernel step of a build (src/kernel.rs) on real Debian armhf armmp kernels
//! (`HC1IMG_TEST_KERNELS`, `scripts/fixtures/debian-armhf-kernels.sh`): the synthetic Arch
//! tarball with kernel A's `zImage`, part of its module tree (no `modules.dep`: depmod never
//! ran, as in Arch Linux ARM's kernel package) and an initramfs without any module, as one
//! made with `autodetect` on another machine can be.
//!
//! - The build indexes the root's modules (checked with Debian's `modprobe` reading them), gives
//!   the card's initramfs the HC1 board's root modules of kernel A and what they depend on,
//!   with indexes of its own (listed by the real `cpio`, resolved by `modprobe -d`), and
//!   `hc1img inspect` names the kernel on the card and the modules' release.
//! - A card kernel whose modules the root does not have (zImage B, modules of A) stops the
//!   build with one line naming both, and leaves no output.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Module directories of kernel A put into the tarball: enough for the HC1's root modules
/// (`scsi_mod`, `sd_mod`, `usb-storage`, `uas`) and what they depend on, and more.
const MODULE_DIRS: [&str; 5] = [
    "kernel/drivers/usb",
    "kernel/drivers/scsi",
    "kernel/drivers/block",
    "kernel/lib",
    "kernel/crypto",
];

/// A gzip'd newc archive holding only `/init` (via the real `cpio`).
fn bare_initramfs(dir: &Path) -> Vec<u8> {
    let root = dir.join("ird");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("init"), "#!/bin/sh\nexec /bin/sh\n").unwrap();
    let out = dir.join("ird.cpio.gz");
    run_ok(
        "sh",
        &[
            "-euc",
            &format!(
                "cd {} && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -n >{}",
                root.display(),
                out.display()
            ),
        ],
    );
    std::fs::read(out).unwrap()
}

/// The synthetic tarball with kernel `zimage_slot`'s zImage, kernel A's modules of
/// [`MODULE_DIRS`] (and its lists), and [`bare_initramfs`].
fn kernel_tarball(dir: &Path, zimage_slot: &str) -> PathBuf {
    let (kdir, a, _) = test_kernels();
    let zver = std::fs::read_to_string(kdir.join(format!("{zimage_slot}.version"))).unwrap();
    let zimage = std::fs::read(
        kdir.join(zimage_slot)
            .join(format!("boot/vmlinuz-{}", zver.trim())),
    )
    .unwrap();
    let initramfs = bare_initramfs(dir);
    let mods = kdir.join("A/usr/lib/modules").join(&a);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        files.push((f.to_string(), std::fs::read(mods.join(f)).unwrap()));
    }
    for d in MODULE_DIRS {
        let list = run_ok("find", &[mods.join(d).to_str().unwrap(), "-type", "f"]);
        for p in list.lines() {
            let rel = Path::new(p).strip_prefix(&mods).unwrap();
            files.push((rel.display().to_string(), std::fs::read(p).unwrap()));
        }
    }
    files.sort();
    alarm_tar_with(dir, "kernel.tar", &Alarm::default(), |b| {
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("boot/zImage", &zimage);
        add("boot/initramfs-linux.img", &initramfs);
        for (rel, data) in &files {
            add(&format!("usr/lib/modules/{a}/{rel}"), data);
        }
    })
}

fn build(dir: &Path, tarball: &Path, out: &Path) -> std::process::Output {
    build_command(
        dir,
        &repo().join("profiles/worker.toml"),
        tarball,
        Some(out),
    )
    .output()
    .unwrap()
}

#[test]
fn the_card_gets_an_initramfs_with_the_root_modules_and_the_root_gets_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, a, _) = test_kernels();
    let tarball = kernel_tarball(dir, "A");
    let out = dir.join("out");
    let o = build(dir, &tarball, &out);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains(&format!("added the root device's modules of kernel {a}")),
        "{log}"
    );

    // The root: depmod's files, readable by Debian's modprobe.
    let sd = out.join("sd.img");
    let ssd = out.join("ssd.img");
    let root_fs = dir.join("root.ext4");
    let (start, len) = gpt_partition1(&ssd);
    extract(&ssd, start, len, &root_fs);
    let root = dir.join("root");
    let mdir = root.join("lib/modules").join(&a);
    std::fs::create_dir_all(&mdir).unwrap();
    for f in [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.symbols.bin",
        "modules.builtin.bin",
        "modules.softdep",
    ] {
        let got = debugfs(&root_fs, &format!("cat /usr/lib/modules/{a}/{f}"));
        assert!(
            !got.is_empty(),
            "/usr/lib/modules/{a}/{f} is empty or missing"
        );
    }
    let dep = debugfs(&root_fs, &format!("cat /usr/lib/modules/{a}/modules.dep"));
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/drivers/usb/storage/uas.ko:")
                && l.contains("kernel/drivers/usb/storage/usb-storage.ko")),
        "modules.dep:\n{}",
        &dep[..dep.len().min(2000)]
    );

    // The card: its initramfs, listed and resolved by the real cpio and modprobe.
    let fat = dir.join("boot.fat");
    extract(
        &sd,
        8192 * 512,
        std::fs::metadata(&sd).unwrap().len() - 8192 * 512,
        &fat,
    );
    let ird = dir.join("initramfs.img");
    run_ok(
        "mcopy",
        &[
            "-n",
            "-i",
            fat.to_str().unwrap(),
            "::initramfs-linux.img",
            ird.to_str().unwrap(),
        ],
    );
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        "sh",
        &[
            "-euc",
            &format!(
                "cd {} && gzip -dc {} | cpio -idm --quiet",
                unpacked.display(),
                ird.display()
            ),
        ],
    );
    assert!(unpacked.join("init").is_file(), "the initramfs lost /init");
    let kmods = unpacked.join("usr/lib/modules").join(&a);
    for m in [
        "kernel/drivers/usb/storage/usb-storage.ko",
        "kernel/drivers/usb/storage/uas.ko",
        "kernel/drivers/scsi/sd_mod.ko",
        "kernel/drivers/scsi/scsi_mod.ko",
        "modules.dep",
        "modules.dep.bin",
        "modules.alias.bin",
    ] {
        assert!(kmods.join(m).is_file(), "the initramfs lacks {m}");
    }
    // modprobe finds the chain in the initramfs's own indexes (it reads DIR/lib/modules).
    std::fs::create_dir_all(unpacked.join("lib")).ok();
    let lib_modules = unpacked.join("lib/modules");
    if !lib_modules.exists() {
        std::os::unix::fs::symlink("../usr/lib/modules", &lib_modules).unwrap();
    }
    let chain = run_ok(
        "modprobe",
        &[
            "-d",
            unpacked.to_str().unwrap(),
            "-S",
            &a,
            "--show-depends",
            "uas",
        ],
    );
    for m in ["usb-storage.ko", "uas.ko", "usbcore.ko", "scsi_mod.ko"] {
        assert!(chain.contains(m), "modprobe --show-depends uas:\n{chain}");
    }

    // inspect names both releases.
    let shown = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("inspect")
        .arg(&sd)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains(&format!("kernel on the card: {a}")), "{text}");
    assert!(
        text.contains(&format!("initramfs: modules of {a}")),
        "{text}"
    );
}

#[test]
fn a_card_kernel_whose_modules_the_root_lacks_fails_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, a, b) = test_kernels();
    let tarball = kernel_tarball(dir, "B");
    let out = dir.join("out");
    let o = build(dir, &tarball, &out);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains(&format!("kernel {b}")))
        .unwrap_or_else(|| panic!("no line names kernel {b}:\n{log}"));
    assert!(line.contains(&a), "{line}");
    assert!(!out.exists(), "a failed build left {}", out.display());
}

/// Start and length in bytes of partition 1 of a GPT image (`sgdisk -i 1`).
fn gpt_partition1(img: &Path) -> (u64, u64) {
    let info = run_ok("sgdisk", &["-i", "1", img.to_str().unwrap()]);
    let field = |k: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("sgdisk -i 1:\n{info}"))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = field("First sector: ");
    let last = field("Last sector: ");
    (first * 512, (last - first + 1) * 512)
}
