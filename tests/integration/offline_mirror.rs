//! The offline proof of the README's main command (`hc1img build profiles/worker.toml`): a test
//! HTTP server on 127.0.0.1 serves a tree laid out like an Arch Linux ARM mirror
//! (`os/ArchLinuxARM-odroid-xu3-latest.tar.gz` + `.sig`, `armv7h/{core,extra,alarm}/` with
//! packages, their `.sig` and `<repo>.db`). The tarball is signed with a throwaway GnuPG key; the
//! packages are real ones made by Debian's `makepkg` (`.pkg.tar.xz` and `.pkg.tar.zst`), signed,
//! and listed by Debian's `repo-add` (which writes each `.sig` into the database as
//! `%PGPSIG%`). The command runs on a copy of the repository's `profiles/` with an empty cache and
//! the shipped, empty lock, through `HC1IMG_MIRROR` and `HC1IMG_KEYRING`: the lock is written on
//! first use with every signature checked, the images are built, and Debian's `pacman` reads the
//! installed packages. A tampered tarball, a tampered package, a swapped signature and an
//! unknown key each stop it with a clear error and leave nothing in the cache.
//!
//! The copy of `profiles/` has no secret file at all, as on a fresh clone: the images are
//! secret-free, so the README's command needs none.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::common::pkgs;
use crate::common::*;
use crate::gpg_keys::Gpg;
use crate::packages_e2e::tarball_with_local_db;

const TARBALL: &str = "ArchLinuxARM-odroid-xu3-latest.tar.gz";

/// A static file server for one directory on 127.0.0.1, stopped on drop; logs request paths.
struct Mirror {
    base: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Mirror {
    fn serve(root: &Path) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, root) = (Arc::clone(&stop), Arc::clone(&log), root.to_path_buf());
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    let _ = answer(s, &root, &log2);
                }
            }
        });
        Mirror {
            base,
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn requested(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if let Ok(mut l) = log.lock() {
        l.push(path.clone());
    }
    let mut out = stream;
    let rel = path.trim_start_matches('/');
    let file = root.join(rel);
    let body = if rel.split('/').any(|c| c == ".." || c.is_empty()) {
        None
    } else {
        std::fs::read(&file).ok()
    };
    match body {
        Some(b) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            )?;
            out.write_all(&b)?;
        }
        None => write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}

/// One package of the test repositories, made by `makepkg` from a split PKGBUILD.
struct Pkg {
    name: &'static str,
    ver: &'static str,
    repo: &'static str,
    depends: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
}

/// Every package the shipped profiles install (docker, cronie, lsof, wget, logrotate, sudo,
/// msmtp-mta, nfs-utils; the managers' docker-buildx), docker's dependency containerd,
/// msmtp-mta's msmtp, and libfoo 1.1 (newer than the tarball's 1.0-1).
fn packages(ext: &str) -> Vec<Pkg> {
    let xz = [
        Pkg {
            name: "docker",
            ver: "1:27.3.1-1",
            repo: "extra",
            depends: &["containerd>=1.7", "libfoo"],
            files: &[("usr/bin/dockerd", "#!/bin/sh\necho dockerd\n")],
        },
        Pkg {
            name: "sudo",
            ver: "1.9.16-1",
            repo: "core",
            depends: &[],
            files: &[("usr/bin/sudo", "#!/bin/sh\nexec \"$@\"\n")],
        },
        Pkg {
            name: "lsof",
            ver: "4.99.4-1",
            repo: "extra",
            depends: &[],
            files: &[("usr/bin/lsof", "#!/bin/sh\n")],
        },
        Pkg {
            name: "libfoo",
            ver: "1.1-1",
            repo: "core",
            depends: &[],
            files: &[
                ("usr/lib/libfoo.so.1", "libfoo 1.1"),
                ("usr/share/libfoo/new.txt", "new"),
            ],
        },
    ];
    let zst = [
        Pkg {
            name: "containerd",
            ver: "1.7.24-1",
            repo: "extra",
            depends: &[],
            files: &[("usr/bin/containerd", "#!/bin/sh\n")],
        },
        Pkg {
            name: "cronie",
            ver: "1.7.2-1",
            repo: "core",
            depends: &[],
            files: &[("usr/bin/crond", "#!/bin/sh\n")],
        },
        Pkg {
            name: "wget",
            ver: "1.25.0-1",
            repo: "extra",
            depends: &[],
            files: &[("usr/bin/wget", "#!/bin/sh\n")],
        },
        Pkg {
            name: "msmtp",
            ver: "1.8.28-1",
            repo: "extra",
            depends: &[],
            files: &[("usr/bin/msmtp", "#!/bin/sh\n")],
        },
        Pkg {
            name: "msmtp-mta",
            ver: "1.8.28-1",
            repo: "extra",
            depends: &["msmtp"],
            files: &[("usr/bin/sendmail", "#!/bin/sh\nexec msmtp \"$@\"\n")],
        },
        Pkg {
            name: "logrotate",
            ver: "3.22.0-1",
            repo: "alarm",
            depends: &[],
            files: &[("usr/bin/logrotate", "#!/bin/sh\n")],
        },
        Pkg {
            name: "nfs-utils",
            ver: "2.8.2-1",
            repo: "core",
            depends: &[],
            files: &[("usr/bin/mount.nfs", "#!/bin/sh\n")],
        },
        Pkg {
            name: "docker-buildx",
            ver: "0.19.3-1",
            repo: "extra",
            depends: &["docker"],
            files: &[("usr/lib/docker/cli-plugins/docker-buildx", "#!/bin/sh\n")],
        },
    ];
    match ext {
        "xz" => xz.into_iter().collect(),
        _ => zst.into_iter().collect(),
    }
}

/// Debian's `makepkg` over a PKGBUILD for `p` ([`pkgs::makepkg`]), compressed as `ext`;
/// each file is a 0755 script (with the newline a here-document ends it with).
fn makepkg(work: &Path, p: &Pkg, ext: &str) -> PathBuf {
    let ext = if ext == "xz" { "xz" } else { "zst" };
    pkgs::makepkg(
        work,
        &pkgs::Pkg {
            deps: pkgs::strings(p.depends),
            files: p
                .files
                .iter()
                .map(|(path, body)| pkgs::Entry::file(path, 0o755, format!("{body}\n")))
                .collect(),
            ext,
            ..pkgs::Pkg::new(p.name, p.ver)
        },
    )
}

/// The signed mirror tree in `dir/mirror`; returns (its root, the signer's fingerprint, the
/// armored public key file, the package files by repository).
struct Made {
    root: PathBuf,
    fpr: String,
    keyring: PathBuf,
    gpg: Gpg,
}

fn sign(gpg: &Gpg, file: &Path) {
    pkgs::sign_all(gpg, &[&file.to_path_buf()]);
}

/// [`pkgs::repo_add`] over every package of `root/armv7h/repo` (a new database).
fn repo_add(root: &Path, repo: &str) {
    let dir = root.join("armv7h").join(repo);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let p = p.to_string_lossy();
            p.ends_with(".pkg.tar.xz") || p.ends_with(".pkg.tar.zst")
        })
        .collect();
    files.sort();
    let _ = std::fs::remove_file(dir.join(format!("{repo}.db.tar.gz")));
    pkgs::repo_add(&dir, repo, &files);
    // repo-add makes `<repo>.db` a symlink; a mirror serves it as a file.
    let link = dir.join(format!("{repo}.db"));
    std::fs::remove_file(&link).unwrap();
    std::fs::copy(dir.join(format!("{repo}.db.tar.gz")), &link).unwrap();
}

fn make_mirror(dir: &Path) -> Made {
    let gpg = Gpg::new().unwrap();
    let fpr = gpg
        .gen_key(
            "Mirror Test Signer <mirror@example.invalid>",
            "ed25519",
            "sign",
        )
        .unwrap();
    let keyring = dir.join("keyring.asc");
    gpg.export(&keyring, true).unwrap();
    let root = dir.join("mirror");
    std::fs::create_dir_all(root.join("os")).unwrap();
    let tarball = tarball_with_local_db(dir);
    let served = root.join("os").join(TARBALL);
    std::fs::copy(&tarball, &served).unwrap();
    sign(&gpg, &served);
    for ext in ["xz", "zst"] {
        let pkgs = packages(ext);
        // One makepkg per package (a split PKGBUILD shares one version), run side by side.
        let files: Vec<PathBuf> = thread::scope(|sc| {
            let runs: Vec<_> = pkgs
                .iter()
                .map(|p| {
                    let work = dir.join(format!("work-{}", p.name));
                    sc.spawn(move || makepkg(&work, p, ext))
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (p, f) in pkgs.iter().zip(&files) {
            let to_dir = root.join("armv7h").join(p.repo);
            std::fs::create_dir_all(&to_dir).unwrap();
            let to = to_dir.join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            sign(&gpg, &to);
        }
    }
    for repo in ["core", "extra", "alarm"] {
        repo_add(&root, repo);
    }
    Made {
        root,
        fpr,
        keyring,
        gpg,
    }
}

/// A copy of the repository's `profiles/` (and the `overlays/` they name) in `dir`, with the
/// shipped lock and without any secret file (as on a fresh clone: the images are secret-free,
/// so none is needed).
fn copy_profiles(dir: &Path) {
    for sub in ["profiles", "overlays"] {
        run_ok(
            "cp",
            &[
                "-r",
                repo().join(sub).to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
    }
    let secrets = dir.join("profiles/secrets");
    if secrets.exists() {
        std::fs::remove_dir_all(&secrets).unwrap();
    }
}

/// `hc1img ARGS` in `dir` with `dir/cache`, the keyring and (when given) the mirror.
fn hc1img(dir: &Path, mirror: Option<&str>, keyring: &Path, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hc1img"));
    c.current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .env("HC1IMG_KEYRING", keyring)
        .env_remove("HC1IMG_MIRROR")
        .args(args);
    if let Some(m) = mirror {
        c.env("HC1IMG_MIRROR", m);
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The `[[packages.NAME.package]]` entries of a lock file as (name, version, sha256).
fn locked_packages(lock: &str, profile: &str) -> Vec<(String, String, String)> {
    let v: toml::Value = toml::from_str(lock).unwrap();
    v["packages"][profile]["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("name"), s("version"), s("sha256"))
        })
        .collect()
}

/// The README's main command in `dir` (the built binary, same arguments), through the mirror
/// and the keyring, with `dir/cache` as the download cache.
fn readme_command(dir: &Path, mirror: &str, keyring: &Path) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .env("HC1IMG_MIRROR", mirror)
        .env("HC1IMG_KEYRING", keyring)
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "profiles/worker.toml"])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The names under the cache's `sha256/`.
fn cached(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir.join("cache/sha256")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn sha_of(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

/// Extract the root filesystem of `ssd.img` into `root` (checked by e2fsck first).
fn rdump(dir: &Path, ssd: &Path, root: &Path) {
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let len = j["partitiontable"]["partitions"][0]["size"]
        .as_u64()
        .unwrap()
        * 512;
    let fs = dir.join("root.ext4");
    extract(ssd, 1 << 20, len, &fs);
    let fsck = run("e2fsck", &["-fn", fs.to_str().unwrap()]);
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    std::fs::create_dir_all(root).unwrap();
    debugfs(&fs, &format!("rdump / {}", root.display()));
    std::fs::remove_file(&fs).unwrap();
}

#[test]
fn the_readme_command_builds_from_a_signed_mirror_on_a_fresh_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let made = make_mirror(tmp.path());
    let work = tmp.path().join("clone");
    std::fs::create_dir_all(&work).unwrap();
    copy_profiles(&work);
    let server = Mirror::serve(&made.root);

    let (ok, out, err) = readme_command(&work, &server.base, &made.keyring);
    assert!(ok, "build failed:\n{out}{err}");

    // The lock was written on first use: the tarball and every package pinned with its
    // signature and signer.
    let lock = std::fs::read_to_string(work.join("profiles/hc1img.lock")).unwrap();
    let tarball_sha = sha_of(&made.root.join("os").join(TARBALL));
    assert!(lock.contains(&tarball_sha), "{lock}");
    assert!(lock.contains("[packages.worker]"), "{lock}");
    for name in [
        "docker",
        "containerd",
        "cronie",
        "lsof",
        "wget",
        "logrotate",
        "sudo",
        "msmtp",
        "msmtp-mta",
    ] {
        assert!(
            lock.contains(&format!("name = \"{name}\"")),
            "{name} not in {lock}"
        );
    }
    let signers = lock.matches(&format!("signer = \"{}\"", made.fpr)).count();
    assert_eq!(
        signers,
        1 + lock.matches("[[packages.worker.package]]").count(),
        "{lock}"
    );
    // One line per pin: file, sha256, size, signer, date.
    let size = std::fs::metadata(made.root.join("os").join(TARBALL))
        .unwrap()
        .len();
    let line = out
        .lines()
        .find(|l| l.contains(TARBALL))
        .unwrap_or_else(|| panic!("no pin line for the tarball in:\n{out}"));
    assert!(
        line.contains(&tarball_sha)
            && line.contains(&format!("{size} bytes"))
            && line.contains(&format!("signed by {}", made.fpr)),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("docker-1:27.3.1-1-armv7h.pkg.tar.xz")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("containerd-1.7.24-1-armv7h.pkg.tar.zst")),
        "{out}"
    );
    // Everything came from the test mirror, ALARM's layout.
    let asked = server.requested();
    for want in [
        format!("/os/{TARBALL}"),
        format!("/os/{TARBALL}.sig"),
        "/armv7h/core/core.db".to_string(),
        "/armv7h/alarm/alarm.db".to_string(),
        "/armv7h/extra/docker-1:27.3.1-1-armv7h.pkg.tar.xz".to_string(),
    ] {
        assert!(asked.contains(&want), "{want} not requested: {asked:?}");
    }

    // The image holds the packages, and Debian's pacman reads them.
    let outs: Vec<PathBuf> = std::fs::read_dir(work.join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("ssd.img").is_file() && !p.is_symlink())
        .collect();
    assert_eq!(outs.len(), 1, "{outs:?}");
    let root = tmp.path().join("root");
    rdump(tmp.path(), &outs[0].join("ssd.img"), &root);
    let r = root.display().to_string();
    let db = format!("{r}/var/lib/pacman");
    let q = run_ok(
        "pacman",
        &["--root", &r, "--dbpath", &db, "--config", "/dev/null", "-Q"],
    );
    for want in [
        "docker 1:27.3.1-1",
        "containerd 1.7.24-1",
        "cronie 1.7.2-1",
        "lsof 4.99.4-1",
        "wget 1.25.0-1",
        "logrotate 3.22.0-1",
        "sudo 1.9.16-1",
        // No partial upgrades: the tarball's libfoo 1.0-1 is upgraded to the repository's.
        "libfoo 1.1-1",
    ] {
        assert!(
            q.lines().any(|l| l == want),
            "{want} not in pacman -Q:\n{q}"
        );
    }
    run_ok(
        "pacman",
        &[
            "--root",
            &r,
            "--dbpath",
            &db,
            "--config",
            "/dev/null",
            "-Qk",
            "docker",
        ],
    );

    // Again with --locked: the lock is complete, so nothing changes and the build is reused.
    let before = std::fs::read_to_string(work.join("profiles/hc1img.lock")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(&work)
        .env("HC1IMG_CACHE", work.join("cache"))
        .env("HC1IMG_KEYRING", &made.keyring)
        .args(["build", "profiles/worker.toml", "--locked"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(work.join("profiles/hc1img.lock")).unwrap(),
        before
    );

    // --locked on an unpinned profile refuses and writes nothing.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    copy_profiles(&fresh);
    let shipped = std::fs::read_to_string(fresh.join("profiles/hc1img.lock")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(&fresh)
        .env("HC1IMG_CACHE", fresh.join("cache"))
        .env("HC1IMG_MIRROR", &server.base)
        .env("HC1IMG_KEYRING", &made.keyring)
        .args(["build", "profiles/worker.toml", "--locked"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--locked"), "{err}");
    assert!(err.contains("hc1img lock"), "{err}");
    assert_eq!(
        std::fs::read_to_string(fresh.join("profiles/hc1img.lock")).unwrap(),
        shipped
    );
    assert!(cached(&fresh).is_empty());
    drop(made.gpg);
}

/// A mirror tree copied from `made` into `dir/name`, changed by `edit`, served; the README
/// command run against it on an empty cache and the shipped lock must fail with an error
/// containing every one of `want`, leave the lock as shipped and leave none of `never` (sha256s)
/// in the cache.
fn refused(
    tmp: &Path,
    made: &Made,
    name: &str,
    keyring: &Path,
    edit: impl FnOnce(&Path) -> Vec<String>,
    want: &[&str],
) {
    let root = tmp.join(format!("mirror-{name}"));
    run_ok(
        "cp",
        &["-r", made.root.to_str().unwrap(), root.to_str().unwrap()],
    );
    let never = edit(&root);
    let work = tmp.join(format!("clone-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    copy_profiles(&work);
    let shipped = std::fs::read_to_string(work.join("profiles/hc1img.lock")).unwrap();
    let server = Mirror::serve(&root);
    let (ok, out, err) = readme_command(&work, &server.base, keyring);
    assert!(!ok, "{name}: build succeeded:\n{out}{err}");
    eprintln!("{name}: {err}");
    // One line: `error: ...`, naming the file, the key and what to do.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{name}: {err}");
    assert!(!err.contains("caused by"), "{name}: not one line:\n{err}");
    for w in want {
        assert!(lines[0].contains(w), "{name}: {w:?} not in:\n{err}");
    }
    assert_eq!(
        std::fs::read_to_string(work.join("profiles/hc1img.lock")).unwrap(),
        shipped,
        "{name}: the lock changed"
    );
    let in_cache = cached(&work);
    for sha in &never {
        assert!(!in_cache.contains(sha), "{name}: {sha} was cached");
    }
    assert!(!work.join("out").exists(), "{name}: an output was written");
}

#[test]
fn tampered_or_wrongly_signed_inputs_stop_the_first_build_and_nothing_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let made = make_mirror(tmp.path());
    let tmp = tmp.path();
    let docker = "armv7h/extra/docker-1:27.3.1-1-armv7h.pkg.tar.xz";

    // The tarball changed after it was signed.
    refused(
        tmp,
        &made,
        "tarball",
        &made.keyring,
        |root| {
            let t = root.join("os").join(TARBALL);
            let mut b = std::fs::read(&t).unwrap();
            let n = b.len();
            b[n / 2] ^= 1;
            std::fs::write(&t, &b).unwrap();
            vec![sha_of(&t)]
        },
        &[
            "BAD signature",
            TARBALL,
            &made.fpr,
            "not put into the cache",
        ],
    );

    // A package changed after it was signed (the database lists its new sha256 and the old
    // signature, as a mirror serving altered files would).
    refused(
        tmp,
        &made,
        "package",
        &made.keyring,
        |root| {
            // Rebuilt with other contents under the same name and version; the signature of
            // the original stays beside it.
            let evil = Pkg {
                files: &[("usr/bin/dockerd", "#!/bin/sh\necho evil\n")],
                ..packages("xz").into_iter().next().unwrap()
            };
            let rebuilt = makepkg(&tmp.join("work-evil"), &evil, "xz");
            let p = root.join(docker);
            std::fs::copy(&rebuilt, &p).unwrap();
            repo_add(root, "extra");
            vec![sha_of(&p)]
        },
        &["BAD signature", "docker-1:27.3.1-1", &made.fpr],
    );

    // Docker's signature swapped for containerd's.
    refused(
        tmp,
        &made,
        "swapped",
        &made.keyring,
        |root| {
            let extra = root.join("armv7h/extra");
            std::fs::copy(
                extra.join("containerd-1.7.24-1-armv7h.pkg.tar.zst.sig"),
                root.join(format!("{docker}.sig")),
            )
            .unwrap();
            repo_add(root, "extra");
            vec![sha_of(&root.join(docker))]
        },
        &["BAD signature", "docker-1:27.3.1-1"],
    );

    // Everything signed by a key the keyring does not hold.
    let other = Gpg::new().unwrap();
    let other_fpr = other
        .gen_key("Someone Else <else@example.invalid>", "ed25519", "sign")
        .unwrap();
    let other_kr = tmp.join("other.asc");
    other.export(&other_kr, true).unwrap();
    refused(
        tmp,
        &made,
        "unknown-key",
        &other_kr,
        |root| vec![sha_of(&root.join("os").join(TARBALL))],
        &[
            "no key in keyring",
            &made.fpr,
            "--keyring",
            &other_kr.display().to_string(),
        ],
    );
    assert!(!other_fpr.is_empty());
}

#[test]
fn one_lock_for_the_cluster_and_a_vendored_tree_outlives_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let made = make_mirror(tmp.path());
    let work = tmp.path().join("clone");
    std::fs::create_dir_all(&work).unwrap();
    copy_profiles(&work);
    // The worker keeps the tarball's versions; the others take the upgrades.
    let worker = work.join("profiles/worker.toml");
    let mut text = std::fs::read_to_string(&worker).unwrap();
    text.push_str("\n[packages]\nupgrade = false\n");
    std::fs::write(&worker, text).unwrap();
    let server = Mirror::serve(&made.root);
    let kr = &made.keyring;

    // `hc1img lock` with no profile: every profile of profiles/, one resolution.
    let (ok, out) = hc1img(&work, Some(&server.base), kr, &["lock"]);
    assert!(ok, "lock failed:\n{out}");
    let lock_path = work.join("profiles/hc1img.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    let v: toml::Value = toml::from_str(&lock).unwrap();
    assert_eq!(v["pins"].as_table().unwrap().len(), 1, "{lock}");
    let sets: Vec<&String> = v["packages"].as_table().unwrap().keys().collect();
    assert_eq!(
        sets,
        ["base", "leader", "manager", "qemu-worker", "worker"],
        "{lock}"
    );
    let docker = |p: &str| {
        locked_packages(&lock, p)
            .into_iter()
            .find(|x| x.0 == "docker")
            .unwrap()
    };
    for p in ["leader", "manager", "worker", "qemu-worker"] {
        assert_eq!(docker(p), docker("base"), "{p} pins another docker");
    }
    let asked = server.requested();
    for db in ["core", "extra", "alarm"] {
        let path = format!("/armv7h/{db}/{db}.db");
        assert_eq!(
            asked.iter().filter(|r| **r == path).count(),
            1,
            "{path}: {asked:?}"
        );
    }
    // No partial upgrades where asked for: libfoo 1.0-1 -> 1.1-1 for the manager, not the
    // worker (`upgrade = false`); plan lists it.
    let has_libfoo = |p: &str| locked_packages(&lock, p).iter().any(|x| x.0 == "libfoo");
    assert!(has_libfoo("manager") && !has_libfoo("worker"), "{lock}");
    let (ok, plan) = hc1img(&work, None, kr, &["plan", "profiles/manager.toml"]);
    assert!(ok, "{plan}");
    assert!(plan.contains("libfoo 1.0-1 -> 1.1-1"), "{plan}");
    let (ok, plan) = hc1img(&work, None, kr, &["plan", "profiles/worker.toml", "--json"]);
    assert!(ok, "{plan}");
    let j: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(j["upgrades"], serde_json::json!([]), "{plan}");

    // Re-locking one profile re-locks its siblings: a stale worker set is made current.
    let stale = lock.replacen(
        &format!(
            "[packages.worker]\ntarball_sha256 = \"{}",
            sha_of(&made.root.join("os").join(TARBALL))
        ),
        &format!("[packages.worker]\ntarball_sha256 = \"{}", "0".repeat(64)),
        1,
    );
    assert_ne!(stale, lock);
    std::fs::write(&lock_path, &stale).unwrap();
    let (ok, out) = hc1img(
        &work,
        Some(&server.base),
        kr,
        &["lock", "profiles/manager.toml"],
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock);

    // vendor: an ALARM-shaped tree of every pinned input, and a database pacman reads.
    let (ok, out) = hc1img(&work, None, kr, &["vendor", "vendored"]);
    assert!(ok, "vendor failed:\n{out}");
    let vd = work.join("vendored");
    for f in [
        format!("os/{TARBALL}"),
        format!("os/{TARBALL}.sig"),
        "armv7h/extra/docker-1:27.3.1-1-armv7h.pkg.tar.xz".into(),
        "armv7h/extra/docker-1:27.3.1-1-armv7h.pkg.tar.xz.sig".into(),
        "armv7h/extra/containerd-1.7.24-1-armv7h.pkg.tar.zst".into(),
        "armv7h/core/core.db".into(),
        "armv7h/alarm/alarm.db".into(),
    ] {
        assert!(vd.join(&f).is_file(), "{f} not vendored:\n{out}");
    }
    assert_eq!(
        std::fs::read(vd.join("armv7h/extra/docker-1:27.3.1-1-armv7h.pkg.tar.xz")).unwrap(),
        std::fs::read(
            made.root
                .join("armv7h/extra/docker-1:27.3.1-1-armv7h.pkg.tar.xz")
        )
        .unwrap()
    );
    let dbpath = tmp.path().join("pacman-db");
    std::fs::create_dir_all(dbpath.join("sync")).unwrap();
    for r in ["core", "extra", "alarm"] {
        std::fs::copy(
            vd.join(format!("armv7h/{r}/{r}.db")),
            dbpath.join(format!("sync/{r}.db")),
        )
        .unwrap();
    }
    let conf = tmp.path().join("pacman.conf");
    std::fs::write(
        &conf,
        "[options]\nArchitecture = armv7h\nSigLevel = Never\n[core]\nServer = file:///nowhere\n[extra]\nServer = file:///nowhere\n[alarm]\nServer = file:///nowhere\n",
    )
    .unwrap();
    let (db, c) = (dbpath.display().to_string(), conf.display().to_string());
    let sl = run_ok("pacman", &["--dbpath", &db, "--config", &c, "-Sl"]);
    for want in [
        "extra docker 1:27.3.1-1",
        "extra containerd 1.7.24-1",
        "core libfoo 1.1-1",
    ] {
        assert!(sl.contains(want), "{want} not in pacman -Sl:\n{sl}");
    }
    let si = run_ok(
        "pacman",
        &["--dbpath", &db, "--config", &c, "-Si", "docker"],
    );
    assert!(si.contains("containerd>=1.7"), "{si}");

    // With the mirror gone, the vendored tree builds the README's command on a fresh cache.
    drop(server);
    std::fs::remove_dir_all(work.join("cache")).unwrap();
    let file_mirror = format!("file://{}", vd.display());
    let (ok, out, err) = readme_command(&work, &file_mirror, kr);
    assert!(ok, "build from the vendored tree failed:\n{out}{err}");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock);

    // A pinned file nobody serves any more: the error says how to get it back.
    let gone = tmp.path().join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    let url = format!("file://{}/upstream/{TARBALL}", gone.display());
    std::fs::write(
        gone.join("gone.toml"),
        format!(
            "extends = {:?}\nname = \"gone\"\n\n[source]\nurl = {url:?}\n",
            repo()
                .join("tests/profiles/debian-fixture.toml")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        gone.join("hc1img.lock"),
        format!(
            "[pins.{url:?}]\nsha256 = \"{}\"\nsize = 10\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let (ok, out) = hc1img(
        &gone,
        Some(&format!("file://{}", gone.join("empty-vendor").display())),
        kr,
        &["fetch", "gone.toml", "--locked"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("hc1img vendor") && out.contains("--mirror"),
        "{out}"
    );
    assert!(
        out.contains("empty-vendor/os/"),
        "the mirror was not tried: {out}"
    );
}

/// The first contact with no network, as a new user meets it: the shipped worker on a fresh
/// clone (empty lock) whose every URL is on a host that cannot resolve (`.invalid`, RFC
/// 6761). `hc1img plan` shows the plan with the inputs the first build will lock; `hc1img
/// build` fails within seconds (no retries: a name that does not resolve is not transient)
/// with one short line naming the host and the offline ways, and writes nothing.
#[test]
fn first_contact_offline_fails_fast_with_one_short_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_profiles(dir);
    std::fs::write(dir.join("profiles/hc1img.lock"), "").unwrap();
    let t = "ArchLinuxARM-odroid-xu3-latest.tar.gz";
    std::fs::write(
        dir.join("profiles/offline.toml"),
        format!(
            "extends = \"worker.toml\"\nname = \"offline\"\n\n[source]\n\
             url = \"http://os.alarm.invalid/os/{t}\"\n\
             mirrors = [\"!*\", \"http://de3.mirror.alarm.invalid/os/{t}\", \"http://fl.us.mirror.alarm.invalid/os/{t}\"]\n\
             signature = \"http://os.alarm.invalid/os/{t}.sig\"\n\n[packages]\n\
             mirrors = [\"!*\", \"http://mirror.alarm.invalid/$arch/$repo\"]\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hc1img"))
            .current_dir(dir)
            .env("HC1IMG_CACHE", dir.join("cache"))
            .env_remove("HC1IMG_MIRROR")
            .args(args)
            .output()
            .unwrap()
    };

    let o = run(&["plan", "profiles/offline.toml", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["derivation"].is_null(), "{v:#}");
    assert_eq!(
        v["to_lock"],
        serde_json::json!(["source/rootfs", "package/[packages]"])
    );
    let o = run(&["plan", "profiles/offline.toml"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && text.contains(
                "derivation  not yet known: source/rootfs, package/[packages] not pinned"
            ),
        "{text}"
    );

    let started = std::time::Instant::now();
    let o = run(&["build", "profiles/offline.toml"]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?}:\n{err}"
    );
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: offline? os.alarm.invalid and 2 other hosts do not resolve: ")
            && last.contains("hc1img vendor DIR")
            && last.contains("--source-url PATH")
            && last.chars().count() < 200,
        "{} chars: {last}\n{err}",
        last.chars().count()
    );
    assert!(!dir.join("out").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("profiles/hc1img.lock")).unwrap(),
        ""
    );
}
