//! `hc1img build A.toml B.toml …`: several profiles in one run. Those that share a source are
//! built from one pass over its tarball, and every output file (images, manifest.json, the
//! compressed copies and block maps) is byte-identical to the same profile built alone;
//! profiles of different sources make one pass per source; `--out` with several profiles is
//! refused. The number of passes is counted from the `inflate:` line the decoder prints once
//! per pass under `HC1IMG_TIMINGS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// `hc1img build` of `profiles` in `cwd` (its own cache, the default out/ store), with
/// `extra` arguments; returns (success, stderr).
fn hc1img_build(cwd: &Path, profiles: &[PathBuf], extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(cwd)
        .env("HC1IMG_CACHE", cwd.join("cache"))
        .env("HC1IMG_TIMINGS", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .args(profiles)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The `--source-url`/`--source-sha256` arguments for `tarball` (and no packages: the shipped
/// profiles' are pinned against the real tarball).
fn source_args(tarball: &Path) -> Vec<String> {
    vec![
        "--source-url".into(),
        tarball.display().to_string(),
        "--source-sha256".into(),
        sha256_hex(&std::fs::read(tarball).unwrap()),
        "--no-packages".into(),
    ]
}

/// How many passes over a tarball a run made: the decoder's `timing: … inflate:` lines.
fn passes(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with("timing: ") && l.contains(" inflate: "))
        .count()
}

/// name → sha256 of every file in the build directory `out/<name>` points at.
fn outputs(cwd: &Path, name: &str) -> BTreeMap<String, String> {
    let dir = cwd.join("out").join(name);
    assert!(dir.is_symlink(), "{} is not a build link", dir.display());
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            sha256_file(&e.path()),
        );
    }
    assert!(
        m.contains_key("ssd.img") && m.contains_key("manifest.json"),
        "{m:?}"
    );
    m
}

#[test]
fn three_roles_from_one_pass_equal_three_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let src = source_args(&tarball);
    let src: Vec<&str> = src.iter().map(String::as_str).collect();
    let roles = ["worker", "manager", "leader"];
    let profiles: Vec<PathBuf> = roles
        .iter()
        .map(|r| repo().join(format!("profiles/{r}.toml")))
        .collect();
    let (alone, together) = (tmp.path().join("alone"), tmp.path().join("together"));
    let mut args = src.clone();
    args.extend(["--compress", "zst"]);
    for (role, p) in roles.iter().zip(&profiles) {
        std::fs::create_dir_all(&alone).unwrap();
        let (ok, err) = hc1img_build(&alone, std::slice::from_ref(p), &args);
        assert!(ok, "{role} alone: {err}");
        assert_eq!(passes(&err), 1, "{err}");
    }
    std::fs::create_dir_all(&together).unwrap();
    let (ok, err) = hc1img_build(&together, &profiles, &args);
    assert!(ok, "three at once: {err}");
    assert_eq!(passes(&err), 1, "three roles should share one pass:\n{err}");
    for role in roles {
        assert!(err.contains(&format!("[{role}] built ")), "{err}");
        let (a, b) = (outputs(&alone, role), outputs(&together, role));
        assert_eq!(a, b, "{role}: the outputs differ from its build alone");
        assert!(
            a.contains_key("ssd.img.zst") && a.contains_key("SHA256SUMS"),
            "{a:?}"
        );
    }
    // All up to date now: nothing is read again.
    let (ok, err) = hc1img_build(&together, &profiles, &src);
    assert!(ok, "{err}");
    assert_eq!(passes(&err), 0, "{err}");
    let up_to_date = err
        .lines()
        .filter(|l| l.starts_with('[') && l.contains(" is up to date "))
        .count();
    assert_eq!(up_to_date, 3, "{err}");
}

#[test]
fn profiles_of_different_sources_make_one_pass_each() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("ta"), tmp.path().join("tb"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let ta = alarm_tarball(&da, &Alarm::default());
    let tb = alarm_tarball(
        &db,
        &Alarm {
            uboot_len: 700 * 1024,
            ..Alarm::default()
        },
    );
    assert_ne!(std::fs::read(&ta).unwrap(), std::fs::read(&tb).unwrap());
    // Two profiles that pin different tarballs (locked on first use, no signature), and a
    // third that shares the first one's.
    let pdir = tmp.path().join("profiles");
    std::fs::create_dir_all(&pdir).unwrap();
    let fixture = repo().join("tests/profiles/debian-fixture.toml");
    let profile = |name: &str, tarball: &Path| {
        let p = pdir.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "extends = {:?}\nname = {name:?}\n\n[source]\nurl = {:?}\n",
                fixture.display().to_string(),
                tarball.display().to_string()
            ),
        )
        .unwrap();
        p
    };
    let (pa, pb, pc) = (profile("a", &ta), profile("b", &tb), profile("c", &ta));
    let (alone, together) = (tmp.path().join("alone"), tmp.path().join("together"));
    for p in [&pa, &pb, &pc] {
        std::fs::create_dir_all(&alone).unwrap();
        let (ok, err) = hc1img_build(&alone, std::slice::from_ref(p), &[]);
        assert!(ok, "{}: {err}", p.display());
    }
    std::fs::create_dir_all(&together).unwrap();
    let (ok, err) = hc1img_build(&together, &[pa, pb, pc], &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("the profiles name 2 different sources: one pass over each"),
        "{err}"
    );
    assert_eq!(passes(&err), 2, "{err}");
    assert!(err.contains("once for a, c"), "{err}");
    for name in ["a", "b", "c"] {
        assert_eq!(
            outputs(&alone, name),
            outputs(&together, name),
            "{name}: the outputs differ from its build alone"
        );
    }
}

#[test]
fn out_with_several_profiles_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let src = source_args(&tarball);
    let mut args: Vec<&str> = src.iter().map(String::as_str).collect();
    args.extend(["--out", "somewhere"]);
    let (ok, err) = hc1img_build(
        tmp.path(),
        &[
            repo().join("profiles/worker.toml"),
            repo().join("profiles/manager.toml"),
        ],
        &args,
    );
    assert!(!ok);
    assert!(
        err.contains("--out names one output directory, but 2 profiles were given"),
        "{err}"
    );
    assert!(!tmp.path().join("somewhere").exists());
    assert_eq!(passes(&err), 0, "{err}");
}
