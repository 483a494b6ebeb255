//! `hc1img::diff::diff` on real builds: the `hc1img` binary builds the shipped worker profile
//! (extended by a test profile with a small overlay) from an Arch-Linux-ARM shaped tarball,
//! and a variant with one extra overlay file, one overlay file changed, one overlay file's mode
//! changed and another journald value. The diff must list exactly those paths (plus the
//! `/etc/fstab` line that names the boot volume, whose ID follows the derivation); two builds of
//! the same inputs must give an empty diff.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_mode(path: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Build `variant` ("a" or "b") into `root/out-<name>`; returns the output directory.
fn build(root: &Path, tarball: &Path, variant: &str, name: &str) -> PathBuf {
    let dir = root.join(format!("in-{name}"));
    let overlay = dir.join("overlay");
    write_mode(&overlay.join("etc/repro/a.conf"), "alpha = 1\n", 0o644);
    if variant == "b" {
        write_mode(&overlay.join("etc/repro/b.conf"), "beta = 22\n", 0o644);
        write_mode(&overlay.join("etc/repro/c.conf"), "gamma = 3\n", 0o755);
        write_mode(&overlay.join("etc/repro/extra.conf"), "new\n", 0o644);
    } else {
        write_mode(&overlay.join("etc/repro/b.conf"), "beta = 2\n", 0o644);
        write_mode(&overlay.join("etc/repro/c.conf"), "gamma = 3\n", 0o644);
    }
    let journal = if variant == "b" { "64M" } else { "50M" };
    let profile = dir.join("diff.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = {:?}\nname = \"worker\"\n\n[overlays]\ndirs = [\"overlay\"]\n\n[journald]\nruntime_max_use = {journal:?}\n\n[rootfs]\nsize = \"512MiB\"\n",
            repo().join("profiles/worker.toml").display().to_string(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hc1img"));
    cmd.current_dir(root)
        .env("HC1IMG_CACHE", root.join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("build")
        .arg(&profile)
        .arg("--source-url")
        .arg(tarball)
        .arg("--source-sha256")
        .arg(sha256_hex(&std::fs::read(tarball).unwrap()))
        .arg("--no-packages");
    for (secret, value) in [
        (
            "admin_password_hash",
            "$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij./",
        ),
        ("mail_password", "MAILSECRET-42"),
        ("swarm_worker_token", "SWMTKN-1-TOKENSECRET"),
    ] {
        let p = dir.join(format!("secret-{secret}"));
        write_mode(&p, &format!("{value}\n"), 0o600);
        cmd.arg("--secret").arg(format!("{secret}={}", p.display()));
    }
    let out = root.join(format!("out-{name}"));
    let o = cmd.arg("--out").arg(&out).output().unwrap();
    assert!(
        o.status.success(),
        "hc1img build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn diff_names_exactly_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let a = build(tmp.path(), &tarball, "a", "a");
    let a2 = build(tmp.path(), &tarball, "a", "a2");
    let b = build(tmp.path(), &tarball, "b", "b");

    let same = hc1img::diff::diff(&a, &a2).unwrap();
    assert!(same.is_empty(), "identical builds differ:\n{same}");
    assert_eq!(same.to_string(), "");

    let d = hc1img::diff::diff(&a, &b).unwrap().to_string();
    assert_eq!(
        d,
        "M /etc/fstab (content)\n\
         M /etc/repro/b.conf (content)\n\
         m /etc/repro/c.conf (mode 0644->0755)\n\
         + /etc/repro/extra.conf\n\
         M /etc/systemd/journald.conf.d/hc1img.conf (content)\n",
        "diff a b:\n{d}"
    );
    // The other way round, the added file is removed and the modes swap.
    let r = hc1img::diff::diff(&b, &a).unwrap().to_string();
    assert!(r.contains("- /etc/repro/extra.conf\n"), "{r}");
    assert!(r.contains("m /etc/repro/c.conf (mode 0755->0644)\n"), "{r}");
}

/// Boot files: a changed kernel in the tarball shows as a changed boot file, a new /boot file
/// as an added one, and the bootloader area when a blob changes.
#[test]
fn diff_sees_boot_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ta = tmp.path().join("ta");
    let tb = tmp.path().join("tb");
    std::fs::create_dir_all(&ta).unwrap();
    std::fs::create_dir_all(&tb).unwrap();
    let tarball_a = alarm_tarball(&ta, &Alarm::default());
    let tarball_b = alarm_tarball(
        &tb,
        &Alarm {
            uboot_len: 601 * 1024,
            ..Alarm::default()
        },
    );
    let a = build(tmp.path(), &tarball_a, "a", "a");
    let b = build(tmp.path(), &tarball_b, "a", "b");
    let d = hc1img::diff::diff(&a, &b).unwrap().to_string();
    assert!(
        d.contains("M boot:(bootloader sectors before the partition) (content)\n"),
        "{d}"
    );
    assert!(d.contains("M boot:/u-boot.bin (content)\n"), "{d}");
    assert!(!d.contains("boot:/zImage"), "{d}");
}

#[test]
fn diff_refuses_a_directory_without_a_build() {
    let tmp = tempfile::tempdir().unwrap();
    let e = hc1img::diff::diff(tmp.path(), tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no ssd.img"), "{e}");
}

/// Build the alarm tarball plus a file `/far` dated `far` and one dated 1966 into `out`.
fn build_dated(dir: &Path, far: &str, out: &Path) {
    let t = alarm_tar_with(dir, &format!("dated-{far}.tar"), &Alarm::default(), |b| {
        for (name, when) in [("far", far), ("before-1970", "-100000000")] {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(1);
            b.append_pax_extensions([("mtime", when.as_bytes())])
                .unwrap();
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
    });
    let o = build_command(dir, &repo().join("profiles/worker.toml"), &t, Some(out))
        .env("SOURCE_DATE_EPOCH", MTIME.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn hc1img_diff(a: &Path, b: &Path) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("diff")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Times after 2038 and before 1970 read back exactly; the exit status is diff(1)'s; an error
/// is one line.
#[test]
fn diff_reads_times_past_2038_and_exits_like_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, a2, b) = (
        tmp.path().join("a"),
        tmp.path().join("a2"),
        tmp.path().join("b"),
    );
    build_dated(tmp.path(), "4102444800", &a); // 2100-01-01
    build_dated(tmp.path(), "4102444800", &a2);
    build_dated(tmp.path(), "4102444801.5", &b);

    let (code, out, err) = hc1img_diff(&a, &a2);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "no differences\n");

    let (code, out, err) = hc1img_diff(&a, &b);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("m /far (mtime 4102444800->4102444801.500000000)\n"),
        "{out}"
    );
    assert!(!out.contains("before-1970"), "{out}");

    let (code, out, err) = hc1img_diff(&a, &tmp.path().join("missing"));
    assert_eq!(code, Some(2), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("missing: no ssd.img"),
        "{err}"
    );
}
