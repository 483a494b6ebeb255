//! The root filesystem written from a tarball equals the tarball: a synthetic torture tarball
//! and the realistic Debian armhf fixture go through `hc1img build`, and the ext4 in
//! `ssd.img` is checked with `e2fsck -fn`, listed with the independent `ext4-view` reader and
//! compared path by path with Python's `tarfile` listing of the same tarball (type, mode,
//! owner, mtime, size, content hash, link target), with `debugfs` for extended attributes,
//! device numbers and hash-indexed directories.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// tests/profiles/debian-fixture.toml (node modules that need Arch's packages off) with the
/// given board and size.
fn test_profile(dir: &Path, board: &str, size: &str) -> PathBuf {
    let p = dir.join("profile.toml");
    let base = repo().join("tests/profiles/debian-fixture.toml");
    let board = repo().join("profiles/boards").join(board);
    std::fs::write(
        &p,
        format!("extends = {base:?}\nname = \"fixture\"\nboard = {board:?}\n\n[rootfs]\nsize = \"{size}\"\n"),
    )
    .unwrap();
    p
}

fn build(dir: &Path, profile: &Path, tarball: &Path) -> PathBuf {
    let out = dir.join("out");
    let sha = run_ok("sha256sum", &[tarball.to_str().unwrap()]);
    let sha = sha.split_whitespace().next().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .args(["-q", "build"])
        .arg(profile)
        .arg("--source-url")
        .arg(tarball)
        .args(["--source-sha256", sha, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "hc1img build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The cache holds a copy of the tarball: drop it, the tests keep disk use low.
    let _ = std::fs::remove_dir_all(dir.join("cache"));
    out
}

fn tar_listing(tarball: &Path) -> BTreeMap<String, Value> {
    let o = Command::new("python3")
        .arg(repo().join("tests/tools/tarlist.py"))
        .arg(tarball)
        .output()
        .expect("python3 must be installed (scripts/test installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The first-boot units and scripts `[firstboot]` adds (and the directories holding them).
fn added_by_firstboot(p: &str) -> bool {
    p == "usr/lib"
        || p == "usr/lib/systemd"
        || p == "usr/lib/systemd/system"
        || p.starts_with("usr/lib/hc1img")
        || p.starts_with("usr/lib/systemd/system/hc1-")
        // hc1-health, which every node gets (issue 16), and its parents.
        || p == "usr/local"
        || p == "usr/local/sbin"
        || p == "usr/local/sbin/hc1-health"
}

/// What the build's kernel step writes into a module tree that has no indexes (the fixture's
/// kernel package never ran depmod): depmod's files, and so the tree's directory mtime.
fn added_by_kernel_step(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("usr/lib/modules/") else {
        return false;
    };
    match rest.split_once('/') {
        None => true,
        Some((_, name)) => [
            "modules.dep",
            "modules.dep.bin",
            "modules.alias",
            "modules.alias.bin",
            "modules.softdep",
            "modules.symbols",
            "modules.symbols.bin",
            "modules.builtin.bin",
            "modules.builtin.alias.bin",
            "modules.devname",
        ]
        .contains(&name),
    }
}

/// Compare the image with the tarball. `edited(path)` names the paths the profile's edits
/// may change, add or remove. Returns the tar listing for further checks.
fn compare(tarball: &Path, fs: &Path, edited: &dyn Fn(&str) -> bool) -> BTreeMap<String, Value> {
    let tar = tar_listing(tarball);
    let image = ext4list::list(&ext4list::open(fs, 0));
    let mut problems = Vec::new();
    // Parents that the tar implies without an entry of their own.
    let mut implied = BTreeSet::new();
    for p in tar.keys() {
        let mut q = p.as_str();
        while let Some((parent, _)) = q.rsplit_once('/') {
            implied.insert(parent.to_string());
            q = parent;
        }
    }
    for (path, want) in &tar {
        if path == "boot" || path.starts_with("boot/") || edited(path) {
            continue;
        }
        let mut want = want.clone();
        let w = want.as_object_mut().unwrap();
        w.remove("xattrs");
        w.remove("major");
        w.remove("minor");
        match image.get(path) {
            None => problems.push(format!("{path}: in the tarball, missing from the image")),
            Some(got) if got != &want => {
                problems.push(format!("{path}: tar {want} != image {got}"))
            }
            Some(_) => {}
        }
    }
    for (path, got) in &image {
        if tar.contains_key(path) || edited(path) || path == "boot" {
            continue;
        }
        if implied.contains(path) {
            if got["type"] != "dir" || got["mode"] != 0o755 || got["uid"] != 0 {
                problems.push(format!("{path}: implied parent directory is {got}"));
            }
            continue;
        }
        problems.push(format!("{path}: in the image, not in the tarball: {got}"));
    }
    assert!(
        problems.is_empty(),
        "{} differences, first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    tar
}

/// Every xattr of every tarball entry is listed by debugfs with its name and length.
fn check_xattrs(tar: &BTreeMap<String, Value>, fs: &Path, edited: &dyn Fn(&str) -> bool) -> usize {
    let mut n = 0;
    for (path, e) in tar {
        let xattrs = e["xattrs"].as_object().unwrap();
        if xattrs.is_empty() || path.starts_with("boot/") || edited(path) {
            continue;
        }
        let listed = debugfs(fs, &format!("ea_list \"/{path}\""));
        for (name, hexval) in xattrs {
            let len = hexval.as_str().unwrap().len() / 2;
            // ACLs are stored in ext4's own compact encoding: only the name must match.
            let needle = if name.starts_with("system.posix_acl") {
                name.clone()
            } else {
                format!("{name} ({len})")
            };
            assert!(
                listed.contains(&needle),
                "/{path}: {needle} not in debugfs ea_list:\n{listed}"
            );
            n += 1;
        }
    }
    n
}

#[test]
fn torture_tarball_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = torture_tarball(tmp.path(), 20_000, 300);
    let out = build(
        tmp.path(),
        &test_profile(tmp.path(), "qemu-virt.toml", "1GiB"),
        &tarball,
    );
    let fs = root_fs(tmp.path(), &out);
    let edited = |p: &str| {
        p == "etc" || p.starts_with("etc/") || p.starts_with("home/") || added_by_firstboot(p)
    };
    let tar = compare(&tarball, &fs, &edited);
    assert_eq!(check_xattrs(&tar, &fs, &edited), 4);

    // Device numbers, including ones that need the new (large) encoding.
    for (path, major, minor) in [
        ("dev-null", 1, 3),
        ("dev-sda1", 8, 1),
        ("dev-big", 300, 70000),
    ] {
        let s = debugfs(&fs, &format!("stat /{path}"));
        assert!(
            s.contains(&format!("Device major/minor number: {major:02}:{minor:02}"))
                || s.contains(&format!("{major}:{minor}")),
            "/{path}: {s}"
        );
    }
    // The 20,000-entry directory is hash-indexed and its index walks cleanly.
    let o = run("debugfs", &["-R", "htree /wide", fs.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("Root node dump"),
        "htree /wide:\n{}",
        &text[..text.len().min(2000)]
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Sub-second mtimes survive: debugfs prints seconds:extra, extra = nsec << 2.
    let s = debugfs(&fs, "stat /files/xattr-small");
    assert!(
        s.contains(&format!(
            "mtime: {:#010x}:{:08x}",
            1_700_000_000u32,
            123_456_789u32 << 2
        )),
        "{s}"
    );
}

/// The realistic fixture: Debian armhf packages shaped like Arch Linux ARM's tarball, built by
/// scripts/fixtures/debian-armhf-rootfs.sh (scripts/test exports its path).
fn fixture() -> PathBuf {
    let p = std::env::var_os("HC1IMG_TEST_ROOTFS").unwrap_or_else(|| {
        panic!("HC1IMG_TEST_ROOTFS is not set: run the suite with scripts/test, which builds the Debian armhf fixture")
    });
    PathBuf::from(p)
}

#[test]
fn debian_armhf_fixture_round_trips() {
    let tarball = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = build(
        tmp.path(),
        &test_profile(tmp.path(), "odroid-hc1.toml", "2GiB"),
        &tarball,
    );
    let fs = root_fs(tmp.path(), &out);
    let edited = |p: &str| {
        p == "etc"
            || p.starts_with("etc/")
            || p == "home"
            || p.starts_with("home/")
            || p.starts_with("var/spool/mail")
            || added_by_firstboot(p)
            || added_by_kernel_step(p)
            // The fixture has no /usr/local (base-files makes it in its postinst, which the
            // base fixture does not run): adding /usr/local/sbin/hc1-health creates it, so
            // /usr's mtime is the build's.
            || p == "usr"
    };
    let tar = compare(&tarball, &fs, &edited);
    check_xattrs(&tar, &fs, &edited);
    // ping keeps the capability iputils' install script gives it.
    let ea = debugfs(&fs, "ea_list /usr/bin/ping");
    assert!(ea.contains("security.capability (20)"), "{ea}");
    // And the build is deterministic on real data too.
    let again = tempfile::tempdir().unwrap();
    let out2 = build(
        again.path(),
        &test_profile(again.path(), "odroid-hc1.toml", "2GiB"),
        &tarball,
    );
    for f in ["ssd.img", "sd.img"] {
        assert_eq!(
            run_ok("sha256sum", &[out.join(f).to_str().unwrap()])
                .split_whitespace()
                .next(),
            run_ok("sha256sum", &[out2.join(f).to_str().unwrap()])
                .split_whitespace()
                .next(),
            "{f}"
        );
    }
}
