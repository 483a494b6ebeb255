//! `--out` and the output store against a user's files, signals, killed and concurrent
//! builds, and a mount point (src/store.rs): hc1img never deletes or moves what it did not
//! make, and an interrupted build leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn worker() -> PathBuf {
    repo().join("profiles/worker.toml")
}

/// Run a build to its end: (success, stderr).
fn build(cwd: &Path, tarball: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = build_command(cwd, &worker(), tarball, Some(out))
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn spawn(cwd: &Path, tarball: &Path, out: &Path) -> Child {
    build_command(cwd, &worker(), tarball, Some(out))
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> (std::process::ExitStatus, String) {
    let o = c.wait_with_output().unwrap();
    (o.status, String::from_utf8_lossy(&o.stderr).into())
}

/// The alarm tarball as a plain tar with a 1 GiB file added: a build that runs for seconds.
fn slow_tarball(dir: &Path) -> PathBuf {
    alarm_tar_with(dir, "slow.tar", &Alarm::default(), |b| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(1 << 30);
        let data = std::io::Read::take(Cycle::new(noise(1 << 20, 99)), 1 << 30);
        b.append_data(&mut h, "var/big", data).unwrap();
    })
}

/// Entries of `dir` that are staging directories.
fn staging_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    n.starts_with(".hc1img-staging-") || n.starts_with(".tmp-")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (up to two minutes) until a build has a staging directory with ssd.img in `dir`
/// (other than those in `except`).
fn wait_for_staging(dir: &Path, child: &mut Child, except: &[&Path]) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(s) = staging_in(dir)
            .into_iter()
            .find(|s| s.join("ssd.img").exists() && !except.contains(&s.as_path()))
        {
            return s;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the build ended ({st}) before its staging directory was seen");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no staging directory in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn an_out_file_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"my notes").unwrap();
    let (ok, err) = build(tmp.path(), &tarball, &file, &[]);
    assert!(!ok);
    assert!(
        err.contains("notes.txt: exists and is not a directory"),
        "{err}"
    );
    assert!(!err.contains("importing"), "refused only after work: {err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"my notes");
    let mut left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert!(
        !left.iter().any(|n| n.starts_with('.')),
        "nothing beside it: {left:?}"
    );
}

#[test]
fn a_directory_that_is_not_a_build_is_refused_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let dir = tmp.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cat.jpg"), b"meow").unwrap();
    std::fs::write(dir.join("ssd.img"), b"my own image").unwrap();
    let (ok, err) = build(tmp.path(), &tarball, &dir, &[]);
    assert!(!ok);
    assert!(
        err.contains("photos: is not empty and holds no hc1img manifest.json"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("cat.jpg")).unwrap(), b"meow");
    assert_eq!(std::fs::read(dir.join("ssd.img")).unwrap(), b"my own image");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    assert!(staging_in(tmp.path()).is_empty());
}

#[test]
fn an_older_build_of_other_inputs_is_rebuilt_keeping_the_users_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let ta = alarm_tarball(&a, &Alarm::default());
    let tb = alarm_tarball(
        &b,
        &Alarm {
            uboot_len: 500 * 1024,
            ..Alarm::default()
        },
    );
    let out = tmp.path().join("out");
    let (ok, err) = build(tmp.path(), &ta, &out, &[]);
    assert!(ok, "{err}");
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    std::fs::write(out.join("README.local"), b"mine").unwrap();
    let (ok, err) = build(tmp.path(), &tb, &out, &[]);
    assert!(ok, "{err}");
    assert!(!err.contains("up to date"), "{err}");
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_ne!(first["derivation"], second["derivation"]);
    assert_eq!(
        second["outputs"]["ssd.img"]["sha256"].as_str().unwrap(),
        sha256_file(&out.join("ssd.img"))
    );
    assert_eq!(std::fs::read(out.join("README.local")).unwrap(), b"mine");
    // The same inputs again: up to date.
    let (ok, err) = build(tmp.path(), &tb, &out, &[]);
    assert!(ok && err.contains("is up to date"), "{err}");
    assert!(staging_in(&out).is_empty() && staging_in(tmp.path()).is_empty());
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_mount_point_as_out_works() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=8g",
            "hc1img-test",
            mnt.to_str().unwrap(),
        ],
    );
    let _m = Mount(mnt.clone());
    let (ok, err) = build(tmp.path(), &tarball, &mnt, &[]);
    assert!(ok, "{err}");
    let v = run_ok(
        env!("CARGO_BIN_EXE_hc1img"),
        &["verify", mnt.to_str().unwrap()],
    );
    assert!(!v.is_empty());
    assert!(staging_in(&mnt).is_empty(), "{:?}", staging_in(&mnt));
    assert!(staging_in(tmp.path()).is_empty());
    // Rebuilding in place on the mount point works too.
    let (ok, err) = build(tmp.path(), &tarball, &mnt, &["--rebuild"]);
    assert!(ok, "{err}");
    assert!(staging_in(&mnt).is_empty());
}

#[test]
fn sigint_and_sigterm_remove_the_staging_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = slow_tarball(tmp.path());
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let out = tmp.path().join("out");
        let mut c = spawn(tmp.path(), &tarball, &out);
        let s = wait_for_staging(tmp.path(), &mut c, &[]);
        signal(&c, sig);
        let (st, err) = finish(c);
        assert_eq!(st.code(), Some(code), "{err}");
        assert!(!s.exists(), "{} left behind", s.display());
        assert!(staging_in(tmp.path()).is_empty());
        assert!(!out.exists());
    }
}

#[test]
fn a_killed_builds_staging_is_removed_later_but_a_running_ones_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = slow_tarball(tmp.path());
    let small = alarm_tarball(tmp.path(), &Alarm::default());
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // A build killed with SIGKILL: nothing can clean up after it at once.
    let mut killed = spawn(tmp.path(), &slow, &store.join("killed"));
    let stale = wait_for_staging(&store, &mut killed, &[]);
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(stale.exists());
    // A build that keeps running while another one starts beside it.
    let mut running = spawn(tmp.path(), &slow, &store.join("running"));
    let live = wait_for_staging(&store, &mut running, &[&stale]);
    let (ok, err) = build(tmp.path(), &small, &store.join("other"), &[]);
    assert!(ok, "{err}");
    assert!(!stale.exists(), "the killed build's staging is still there");
    assert!(
        live.exists() || store.join("running/manifest.json").exists(),
        "the running build's staging was removed"
    );
    let (st, err) = finish(running);
    assert!(st.success(), "the running build failed: {err}");
    assert!(staging_in(&store).is_empty(), "{:?}", staging_in(&store));
    let mut names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["other", "running"]);
}

#[test]
fn two_concurrent_builds_of_the_same_inputs_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let out = tmp.path().join("out");
    let a = spawn(tmp.path(), &tarball, &out);
    let b = spawn(tmp.path(), &tarball, &out);
    let (sa, ea) = finish(a);
    let (sb, eb) = finish(b);
    assert!(sa.success() && sb.success(), "{ea}\n{eb}");
    run_ok(
        env!("CARGO_BIN_EXE_hc1img"),
        &["verify", out.to_str().unwrap()],
    );
    assert!(staging_in(tmp.path()).is_empty() && staging_in(&out).is_empty());
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["manifest.json", "sbom.spdx.json", "sd.img", "ssd.img"]
    );
}
