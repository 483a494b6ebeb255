//! Hostile tarballs and profiles (src/rootfs/import.rs, src/ext4/, src/profile/size.rs), each
//! generated here: sizes declared by a header or a profile never size an allocation, owners
//! and times are range-checked, names are escaped on the terminal, and the quieter tarball
//! oddities (entries naming the root, non-UTF-8 `/boot` names, unlisted parent directories,
//! many empty files with `size = "auto"`) are handled the way bsdtar and the kernel handle
//! them; a broken sparse map or ACL record is one error naming the member
//! (tests/integration/tar_fidelity.rs has the rest of sparse members and ACLs). Checked through the `hc1img` binary, with `debugfs` and `e2fsck` on the image.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::common::*;

fn worker() -> PathBuf {
    repo().join("profiles/worker.toml")
}

/// A profile extending the worker with `[rootfs]` lines.
fn profile(dir: &Path, rootfs: &str) -> PathBuf {
    let p = dir.join("hostile.toml");
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nname = \"hostile\"\n[rootfs]\n{rootfs}\n",
            worker().display().to_string()
        ),
    )
    .unwrap();
    p
}

struct Built {
    ok: bool,
    code: Option<i32>,
    stderr: String,
    out: PathBuf,
}

fn build(dir: &Path, profile: &Path, tarball: &Path) -> Built {
    let out = dir.join("out");
    let o = build_command(dir, profile, tarball, Some(&out))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    Built {
        ok: o.status.success(),
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        out,
    }
}

/// A clear failure: exit status 1 (not a signal: no abort), one `error:` line naming `what`.
fn assert_clear_error(b: &Built, what: &str) {
    assert!(!b.ok);
    assert_eq!(
        b.code,
        Some(1),
        "killed or crashed instead of an error:\n{}",
        b.stderr
    );
    let errors: Vec<&str> = b
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", b.stderr);
    assert!(errors[0].contains(what), "{}", b.stderr);
    assert!(!b.stderr.contains("caused by"), "{}", b.stderr);
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// A header declaring `size` bytes at `path`, and then the end of the stream.
fn declared_only(b: &mut tar::Builder<std::fs::File>, path: &str, size: u64) {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    h.set_path(path).unwrap();
    h.set_cksum();
    b.get_mut().write_all(h.as_bytes()).unwrap();
}

/// (mtime seconds as debugfs shows them in hex, the date line) of `path`.
fn mtime(root: &Path, path: &str) -> String {
    let s = debugfs(root, &format!("stat {path}"));
    s.lines()
        .find(|l| l.trim_start().starts_with("mtime:"))
        .unwrap_or_else(|| panic!("no mtime in {s}"))
        .to_string()
}

#[test]
fn a_huge_declared_boot_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        declared_only(b, "boot/huge.img", 100 << 30)
    });
    let b = build(tmp.path(), &worker(), &t);
    assert_clear_error(&b, "boot/huge.img");
    assert!(b.stderr.contains("held in memory"), "{}", b.stderr);
    assert!(!b.out.exists());
}

#[test]
fn a_huge_declared_file_the_edits_read_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        declared_only(b, "etc/passwd", 100 << 30)
    });
    let b = build(tmp.path(), &worker(), &t);
    assert_clear_error(&b, "etc/passwd");
}

#[test]
fn a_huge_root_size_is_a_clear_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(tmp.path(), "size = \"1024TiB\"");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .args(["plan", p.to_str().unwrap()])
        .args(worker_secrets(tmp.path()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hostile.toml") && err.contains("size"),
        "{err}"
    );
    assert!(err.contains("larger than 16TiB"), "{err}");
}

#[test]
fn owners_above_32_bits_are_refused_not_wrapped() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_pax_extensions([("uid", &b"4294967296"[..])])
            .unwrap();
        b.append_data(&mut h, "usr/bin/suid-root", &b"x"[..])
            .unwrap();
    });
    let b = build(tmp.path(), &worker(), &t);
    assert_clear_error(&b, "usr/bin/suid-root: uid 4294967296 is above 4294967295");
}

#[test]
fn times_outside_ext4s_range_are_clamped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        for (name, when) in [("old-1800", "-5364662400"), ("far-3000", "32503680000")] {
            let mut h = header(tar::EntryType::Regular, 0o644, 1);
            b.append_pax_extensions([("mtime", when.as_bytes())])
                .unwrap();
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
    });
    // SOURCE_DATE_EPOCH keeps the far-future file from becoming the build's timestamp.
    let out = tmp.path().join("out");
    let o = build_command(tmp.path(), &worker(), &t, Some(&out))
        .env("SOURCE_DATE_EPOCH", MTIME.to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("old-1800: mtime -5364662400 is outside what ext4 stores"),
        "{err}"
    );
    assert!(err.contains("far-3000: mtime 32503680000"), "{err}");
    let root = root_fs(tmp.path(), &out);
    let old = mtime(&root, "/old-1800");
    assert!(old.contains("0x80000000") && old.contains("1901"), "{old}");
    let far = mtime(&root, "/far-3000");
    assert!(far.contains("2446"), "{far}");
}

#[test]
fn names_are_escaped_in_warnings_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = b"etc/\x1b[31mred\x1b[0m\nerror: fake line\x9b2J";
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        // Twice: the duplicate is warned about, naming it.
        for body in [&b"1"[..], &b"2"[..]] {
            let mut h = header(tar::EntryType::Regular, 0o644, 1);
            h.set_path(std::ffi::OsStr::from_bytes(evil)).unwrap();
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
    });
    let b = build(tmp.path(), &worker(), &t);
    assert!(b.ok, "{}", b.stderr);
    assert!(b.stderr.contains("duplicate entry"), "{}", b.stderr);
    assert!(!b.stderr.contains('\x1b'), "{:?}", b.stderr);
    assert!(!b.stderr.contains('\u{9b}'), "{:?}", b.stderr);
    assert!(!b.stderr.contains("\nerror: fake"), "{}", b.stderr);
    assert!(b.stderr.contains("\\u{1b}[31mred"), "{}", b.stderr);

    // A header field holding an escape sequence: the tar crate's error quotes it raw.
    let t = alarm_tar_with(tmp.path(), "bad.tar", &Alarm::default(), |b| {
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        h.set_path("etc/bad-uid").unwrap();
        h.as_old_mut().uid.copy_from_slice(b"\x1b[2J\n00\0");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    });
    let b = build(tmp.path(), &worker(), &t);
    assert_clear_error(&b, "etc/bad-uid: bad uid in tar header");
    assert!(!b.stderr.contains('\x1b'), "{:?}", b.stderr);
}

#[test]
fn entries_naming_the_root_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        let mut h = header(tar::EntryType::Regular, 0o644, 3);
        h.set_path("./.").unwrap();
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
    });
    let b = build(tmp.path(), &worker(), &t);
    assert!(b.ok, "{}", b.stderr);
    assert!(
        b.stderr
            .contains(": names the root directory but is not a directory, skipped"),
        "{}",
        b.stderr
    );
}

#[test]
fn boot_names_that_are_not_utf8_are_refused_not_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        for (name, body) in [
            (&b"boot/dtb-\xff"[..], &b"one"[..]),
            (b"boot/dtb-\xfe", b"two"),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, 3);
            h.set_path(std::ffi::OsStr::from_bytes(name)).unwrap();
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
    });
    let b = build(tmp.path(), &worker(), &t);
    assert_clear_error(&b, "boot/dtb-\\xff: a /boot name that is not UTF-8");
}

#[test]
fn unlisted_parent_directories_get_the_builds_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        let mut h = header(tar::EntryType::Regular, 0o644, 4);
        b.append_data(&mut h, "opt/vendor/lib/data", &b"data"[..])
            .unwrap();
    });
    let b = build(tmp.path(), &worker(), &t);
    assert!(b.ok, "{}", b.stderr);
    let root = root_fs(tmp.path(), &b.out);
    // No SOURCE_DATE_EPOCH: the build's timestamp is the newest mtime, MTIME.
    let want = format!("{MTIME:#x}");
    for dir in ["/opt", "/opt/vendor", "/opt/vendor/lib"] {
        let m = mtime(&root, dir);
        assert!(m.contains(&want), "{dir}: {m}, want {want}");
    }
}

#[test]
fn size_auto_fits_a_tarball_of_many_empty_files() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 150_000;
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, "many", &[][..]).unwrap();
        for i in 0..n {
            let mut h = header(tar::EntryType::Regular, 0o644, 0);
            b.append_data(&mut h, format!("many/{}/{i}", i % 100), &[][..])
                .unwrap();
        }
    });
    let b = build(tmp.path(), &profile(tmp.path(), "size = \"auto\""), &t);
    assert!(b.ok, "{}", b.stderr);
    let root = root_fs(tmp.path(), &b.out);
    let ls = debugfs(&root, "ls -l /many/7");
    assert_eq!(
        ls.lines().filter(|l| !l.trim().is_empty()).count(),
        n / 100 + 2,
        "{ls}"
    );
}

#[test]
fn a_bad_sparse_map_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        b.append_pax_extensions([
            ("GNU.sparse.size", &b"4096"[..]),
            ("GNU.sparse.map", b"2048,512,1024,512"),
        ])
        .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1024);
        b.append_data(&mut h, "var/lib/overlapping", &[7u8; 1024][..])
            .unwrap();
    });
    let b = build(tmp.path(), &worker(), &t);
    assert_clear_error(
        &b,
        "var/lib/overlapping: sparse map chunk at offset 1024 overlaps the one before it",
    );
    assert!(!b.out.exists());
}
