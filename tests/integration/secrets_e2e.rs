//! Images are secret-free unless the profile opts in per secret (`bake = true`): every shipped
//! profile builds with no secret file at all, and with every declared secret handed to the
//! build no value reaches `ssd.img` or `sd.img` — neither their raw bytes nor any file read
//! back from the ext4 (`debugfs rdump`) or the FAT (`mcopy`). A baked secret is found only
//! where it belongs. Values never reach `plan` output, build logs, `manifest.json` or errors.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

const ADMIN_HASH: &str =
    "$6$leaksalt$QWERTYUIOPasdfghjklzxcvbnm0123456789QWERTYUIOPasdfghjklzxcvbnm0123456789abcdef./";
const MAIL_PW: &str = "MAIL-PASSWORD-must-not-leak";
const WORKER_TOKEN: &str = "SWMTKN-1-worker-token-must-not-leak";
const MANAGER_TOKEN: &str = "SWMTKN-1-manager-token-must-not-leak";

/// Every secret a shipped profile declares, with its test value.
const SECRETS: &[(&str, &str)] = &[
    ("admin_password_hash", ADMIN_HASH),
    ("mail_password", MAIL_PW),
    ("swarm_worker_token", WORKER_TOKEN),
    ("swarm_manager_token", MANAGER_TOKEN),
];

/// The shipped profiles and the secrets each declares (following `extends`).
const PROFILES: &[(&str, &[&str])] = &[
    (
        "worker",
        &["admin_password_hash", "mail_password", "swarm_worker_token"],
    ),
    (
        "manager",
        &[
            "admin_password_hash",
            "mail_password",
            "swarm_manager_token",
        ],
    ),
    ("leader", &["admin_password_hash", "mail_password"]),
];

fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("secret-{name}"));
    std::fs::write(&p, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `hc1img ARGS PROFILE --source-url … --no-packages [--secret NAME=FILE for each of secrets]`.
fn hc1img(dir: &Path, args: &[&str], profile: &Path, secrets: &[(&str, &str)]) -> Output {
    let tarball = dir.join("alarm.tar.gz");
    let sha = sha256_hex(&std::fs::read(&tarball).unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hc1img"));
    cmd.current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .args(args)
        .arg(profile)
        .arg("--source-url")
        .arg(&tarball)
        .args(["--source-sha256", &sha])
        .arg("--no-packages");
    for (name, value) in secrets {
        let f = secret_file(dir, name, value);
        cmd.arg("--secret").arg(format!("{name}={}", f.display()));
    }
    cmd.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn values() -> Vec<&'static str> {
    let mut v: Vec<&str> = SECRETS.iter().map(|s| s.1).collect();
    v.push("leaksalt");
    v
}

/// The secret values found in `bytes`.
fn hits_in(bytes: &[u8]) -> Vec<&'static str> {
    values()
        .into_iter()
        .filter(|v| bytes.windows(v.len()).any(|w| w == v.as_bytes()))
        .collect()
}

/// The secret values in the raw bytes of `image`, read through its data extents
/// (SEEK_DATA/SEEK_HOLE: holes read as zeros), with an overlap so none is split.
fn raw_hits(image: &Path) -> Vec<&'static str> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).unwrap();
    let len = f.metadata().unwrap().len();
    let fd = f.as_raw_fd();
    let mut found = Vec::new();
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 4 << 20];
    const OVERLAP: usize = 256;
    while pos < len {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) } as u64;
        let mut at = data as u64;
        while at < hole {
            let n = ((hole - at) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], at).unwrap();
            for h in hits_in(&buf[..n]) {
                if !found.contains(&h) {
                    found.push(h);
                }
            }
            if at + n as u64 >= hole {
                break;
            }
            at += (n - OVERLAP) as u64;
        }
        pos = hole.max(data as u64 + 1);
    }
    found
}

/// Every regular file of a tree on the host, by path relative to `root`.
fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Where each secret value is in a build: `(where, path, value)` for the raw images, every
/// file of the ext4 (debugfs rdump) and every file of the FAT (mcopy).
fn secrets_in_build(out: &Path, scratch: &Path) -> Vec<(String, String, &'static str)> {
    std::fs::create_dir_all(scratch).unwrap();
    let mut found = Vec::new();
    for img in ["ssd.img", "sd.img"] {
        for v in raw_hits(&out.join(img)) {
            found.push((img.to_string(), "(raw bytes)".to_string(), v));
        }
    }
    // ext4: partition 1 of ssd.img at 1 MiB.
    let ssd = out.join("ssd.img");
    let part = run_ok("sfdisk", &["--json", ssd.to_str().unwrap()]);
    let table: serde_json::Value = serde_json::from_str(&part).unwrap();
    let p = &table["partitiontable"]["partitions"][0];
    let (start, size) = (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    );
    let fs = scratch.join("root.ext4");
    extract(&ssd, start, size, &fs);
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).unwrap();
    debugfs(&fs, &format!("rdump / {}", root.display()));
    let files = files_under(&root);
    assert!(
        files.iter().any(|(p, _)| p == "etc/fstab"),
        "debugfs rdump read nothing back"
    );
    for (path, data) in files {
        for v in hits_in(&data) {
            found.push(("ssd.img".to_string(), path.clone(), v));
        }
    }
    // FAT: partition 1 of sd.img.
    let sd = out.join("sd.img");
    let part = run_ok("sfdisk", &["--json", sd.to_str().unwrap()]);
    let table: serde_json::Value = serde_json::from_str(&part).unwrap();
    let start = table["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512;
    let boot = scratch.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    run_ok(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{}@@{start}", sd.display()),
            "::/",
            boot.to_str().unwrap(),
        ],
    );
    let files = files_under(&boot);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("boot.scr")),
        "mcopy read nothing back"
    );
    for (path, data) in files {
        for v in hits_in(&data) {
            found.push(("sd.img".to_string(), path.clone(), v));
        }
    }
    std::fs::remove_dir_all(scratch).unwrap();
    found.sort();
    found
}

fn assert_no_secret(what: &str, text: &str) {
    for s in values() {
        assert!(!text.contains(s), "{what} contains a secret ({s})");
    }
}

#[test]
fn shipped_profiles_build_without_secrets_and_carry_none() {
    let tmp = tempfile::tempdir().unwrap();
    alarm_tarball(tmp.path(), &Alarm::default());
    for (name, declared) in PROFILES {
        let profile = repo().join(format!("profiles/{name}.toml"));
        let given: Vec<(&str, &str)> = SECRETS
            .iter()
            .copied()
            .filter(|(n, _)| declared.contains(n))
            .collect();
        // No secret file at all, then every declared secret handed to the build.
        for (round, secrets) in [("none", &[][..]), ("all", &given[..])] {
            let plan = ok(&hc1img(tmp.path(), &["plan"], &profile, secrets));
            assert_no_secret("plan", &plan);
            for n in *declared {
                assert!(
                    plan.lines()
                        .any(|l| l.contains(n) && l.contains("not in the image")),
                    "{name}: plan does not say {n} stays out of the image:\n{plan}"
                );
            }
            let json = ok(&hc1img(tmp.path(), &["plan", "--json"], &profile, secrets));
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            for n in *declared {
                assert_eq!(v["profile"]["secrets"][n], "card", "{name}: {json}");
            }
            let out = tmp.path().join(format!("out-{name}-{round}"));
            let log = ok(&hc1img(
                tmp.path(),
                &["-v", "build", "--out", out.to_str().unwrap()],
                &profile,
                secrets,
            ));
            assert_no_secret("build log", &log);
            if round == "all" {
                for n in *declared {
                    assert!(
                        log.contains(&format!("--secret {n}: not put into the image")),
                        "{name}: no warning for --secret {n}:\n{log}"
                    );
                }
            }
            assert_no_secret(
                "manifest.json",
                &std::fs::read_to_string(out.join("manifest.json")).unwrap(),
            );
            assert_no_secret(
                "sbom.spdx.json",
                &std::fs::read_to_string(out.join("sbom.spdx.json")).unwrap(),
            );
            let found = secrets_in_build(&out, &tmp.path().join("scratch"));
            assert_eq!(
                found,
                vec![],
                "{name} ({round} secrets given): secrets in the images"
            );
            // The card says which secrets a seed may bring.
            let list = run_ok(
                "mtype",
                &[
                    "-i",
                    &format!("{}@@{}", out.join("sd.img").display(), 8192 * 512),
                    "::/hc1img-secrets.txt",
                ],
            );
            let names: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
            let mut want = declared.to_vec();
            want.sort_unstable();
            assert_eq!(names, want, "{name}: hc1img-secrets.txt");
        }
        // Both rounds built the same images: a secret that is not baked is not an input.
        assert_eq!(
            std::fs::read(tmp.path().join(format!("out-{name}-none/manifest.json"))).unwrap(),
            std::fs::read(tmp.path().join(format!("out-{name}-all/manifest.json"))).unwrap(),
            "{name}: handing over unbaked secrets changed the build"
        );
    }
}

#[test]
fn a_baked_secret_is_only_where_it_belongs() {
    let tmp = tempfile::tempdir().unwrap();
    alarm_tarball(tmp.path(), &Alarm::default());
    let tok = secret_file(tmp.path(), "tok", WORKER_TOKEN);
    let profile = tmp.path().join("private-worker.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"{}\"\nname = \"private-worker\"\n[secrets]\n\
             swarm_worker_token = {{ file = \"{}\", bake = true }}\n",
            repo().join("profiles/worker.toml").display(),
            tok.display()
        ),
    )
    .unwrap();
    let others = [
        ("admin_password_hash", ADMIN_HASH),
        ("mail_password", MAIL_PW),
    ];
    let plan = ok(&hc1img(tmp.path(), &["plan"], &profile, &others));
    assert!(
        plan.lines()
            .any(|l| l.contains("swarm_worker_token") && l.contains("BAKED into the image")),
        "{plan}"
    );
    assert_no_secret("plan", &plan);
    let out = tmp.path().join("out");
    let log = ok(&hc1img(
        tmp.path(),
        &["-v", "build", "--out", out.to_str().unwrap()],
        &profile,
        &others,
    ));
    assert_no_secret("build log", &log);
    assert_no_secret(
        "manifest.json",
        &std::fs::read_to_string(out.join("manifest.json")).unwrap(),
    );
    assert_no_secret(
        "sbom.spdx.json",
        &std::fs::read_to_string(out.join("sbom.spdx.json")).unwrap(),
    );
    let found = secrets_in_build(&out, &tmp.path().join("scratch"));
    assert_eq!(
        found,
        vec![
            (
                "ssd.img".to_string(),
                "(raw bytes)".to_string(),
                WORKER_TOKEN
            ),
            (
                "ssd.img".to_string(),
                "var/lib/hc1img/secrets/swarm-token".to_string(),
                WORKER_TOKEN
            ),
        ],
        "the baked token is in the root filesystem only, and nothing else is"
    );
    let fs = ext4list::open(&out.join("ssd.img"), 1 << 20);
    let list = ext4list::list(&fs);
    let e = &list["var/lib/hc1img/secrets/swarm-token"];
    assert_eq!(
        (e["mode"].as_u64(), e["uid"].as_u64()),
        (Some(0o600), Some(0))
    );
    let d = &list["var/lib/hc1img/secrets"];
    assert_eq!(d["mode"].as_u64(), Some(0o700));

    // A bad baked secret is named in the error, its value is not.
    let bad = "not-a-join-token; rm -rf /";
    std::fs::write(&tok, format!("{bad}\n")).unwrap();
    let o = hc1img(
        tmp.path(),
        &["build", "--out", tmp.path().join("out2").to_str().unwrap()],
        &profile,
        &others,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("swarm_worker_token"), "{err}");
    assert!(!err.contains(bad), "the error quotes the secret: {err}");
    assert!(!tmp.path().join("out2").exists());
}
