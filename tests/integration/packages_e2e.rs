//! End-to-end: real pacman packages (assembled as makepkg does: `.PKGINFO`, gzip'd `.MTREE`
//! from bsdtar's mtree writer, `.INSTALL`, zstd/xz compressed tar) in a repository made by
//! Debian's real `repo-add`, each signed by a throwaway GnuPG key (so the database carries
//! `%PGPSIG%`), served through a `file://` mirror; `hc1img lock` verifies and pins them,
//! `hc1img build` installs them, and Debian's real `pacman` checks the extracted image
//! (`-Q`, `-Qi`, `-Qkk`, `-Dk`). Also: a package whose bytes differ from the pin aborts the
//! build and leaves nothing behind; the first-boot unit passes `systemd-analyze verify`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::pkgs::{self, Entry, Pkg, build_pkg, repo_add, sign_all, signer, strings};
use crate::common::*;
use crate::gpg_keys::Gpg;

const LONG: &str = "usr/share/hello/a-file-name-that-does-not-fit-the-100-byte-ustar-name-field-so-bsdtar-writes-a-pax-path-record.txt";

/// The synthetic Arch tarball plus a local pacman database with `libfoo 1.0-1` installed
/// and an `/etc/hello.conf` the admin changed.
pub(crate) fn tarball_with_local_db(dir: &Path) -> PathBuf {
    // Without msmtp: the worker profile's [packages] bring it (offline_mirror).
    let base = alarm_tarball(
        dir,
        &Alarm {
            msmtp: false,
            ..Alarm::default()
        },
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&base).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let path = dir.join("alarm-pacman.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    let mut ar = tar::Archive::new(&raw[..]);
    for e in ar.entries().unwrap().raw(true) {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        b.append(&h, &data[..]).unwrap();
    }
    let local = "var/lib/pacman/local";
    let desc = "%NAME%\nlibfoo\n\n%VERSION%\n1.0-1\n\n%ARCH%\narmv7h\n\n%INSTALLDATE%\n1690000000\n\n%SIZE%\n10\n\n%VALIDATION%\npgp\n\n";
    let files = "%FILES%\nusr/\nusr/lib/\nusr/lib/libfoo.so.1\nusr/share/\nusr/share/libfoo/\nusr/share/libfoo/old.txt\n\n";
    append(
        &mut b,
        vec![
            E::Dir("var/lib", 0o755),
            E::Dir("var/lib/pacman", 0o755),
            E::Dir(local, 0o755),
            E::File(
                "var/lib/pacman/local/ALPM_DB_VERSION",
                0o644,
                b"9\n".to_vec(),
            ),
            E::Dir("var/lib/pacman/local/libfoo-1.0-1", 0o755),
            E::File("var/lib/pacman/local/libfoo-1.0-1/desc", 0o644, desc.into()),
            E::File(
                "var/lib/pacman/local/libfoo-1.0-1/files",
                0o644,
                files.into(),
            ),
            E::File("usr/lib/libfoo.so.1", 0o755, b"libfoo 1.0".to_vec()),
            E::Dir("usr/share/libfoo", 0o755),
            E::File("usr/share/libfoo/old.txt", 0o644, b"old".to_vec()),
            E::File(
                "etc/hello.conf",
                0o644,
                b"greeting = bonjour # the admin's\n".to_vec(),
            ),
        ],
    );
    b.into_inner().unwrap().finish().unwrap();
    path
}

/// The test repositories: `core` (libfoo 1.1, dash providing sh) and `extra` (hello, mksh
/// also providing sh), signed by `gpg`. Returns the mirror URL.
fn make_repos(dir: &Path, gpg: &Gpg, hello_body: &[u8]) -> String {
    let work = dir.join("pkgwork");
    let core = dir.join("mirror/core");
    let extra = dir.join("mirror/extra");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::create_dir_all(&extra).unwrap();
    let libfoo = build_pkg(
        &work,
        &core,
        &Pkg {
            provides: strings(&["libfoo.so=1-32"]),
            files: vec![
                Entry::file("usr/lib/libfoo.so.1", 0o755, b"libfoo 1.1".to_vec()),
                Entry::file("usr/share/libfoo/new.txt", 0o644, b"new".to_vec()),
            ],
            ..Pkg::new("libfoo", "1.1-1")
        },
    );
    let dash = build_pkg(
        &work,
        &core,
        &Pkg {
            provides: strings(&["sh"]),
            files: vec![Entry::file("usr/bin/dash", 0o755, noise(20_000, 11))],
            ext: "xz",
            ..Pkg::new("dash", "0.5.12-1")
        },
    );
    sign_all(gpg, &[&libfoo, &dash]);
    repo_add(&core, "core", &[libfoo, dash]);
    let hello = build_pkg(
        &work,
        &extra,
        &Pkg {
            deps: strings(&["libfoo>=1.1", "sh", "libfoo.so"]),
            backup: strings(&["etc/hello.conf"]),
            files: vec![
                Entry::file("usr/bin/hello", 0o755, hello_body.to_vec()),
                // Longer than ustar's 100-byte name: bsdtar writes a pax `path` record.
                Entry::file(LONG, 0o644, b"a long name\n".to_vec()),
                Entry::file("etc/hello.conf", 0o644, b"greeting = hello\n".to_vec()),
                Entry::file(
                    "usr/lib/sysusers.d/hello.conf",
                    0o644,
                    b"g hello - -\nu hellod - \"Hello daemon\" /var/lib/hello\nm hellod hello\n"
                        .to_vec(),
                ),
                Entry::file(
                    "usr/lib/systemd/system/hello.service",
                    0o644,
                    b"[Unit]\nDescription=Hello\n[Service]\nExecStart=/usr/bin/hello\n".to_vec(),
                ),
            ],
            install: Some("post_install() {\n  echo hello installed\n}\n".to_string()),
            ..Pkg::new("hello", "2:1.0-3")
        },
    );
    let mksh = build_pkg(
        &work,
        &extra,
        &Pkg {
            provides: strings(&["sh"]),
            files: vec![Entry::file("usr/bin/mksh", 0o755, b"mksh".to_vec())],
            ..Pkg::new("mksh", "59-1")
        },
    );
    sign_all(gpg, &[&hello, &mksh]);
    repo_add(&extra, "extra", &[hello, mksh]);
    format!("file://{}/mirror/$repo", dir.display())
}

fn write_profile(dir: &Path, tarball: &Path, mirror: &str) -> PathBuf {
    let p = dir.join("pk.toml");
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nname = \"pk\"\n\n[source]\nurl = {:?}\n\n[rootfs]\nsize = \"256MiB\"\n\n[packages]\ninstall = [\"hello\"]\nrepositories = [\"core\", \"extra\"]\nmirrors = [{mirror:?}]\narchitecture = \"armv7h\"\n",
            repo().join("tests/profiles/debian-fixture.toml").display().to_string(),
            tarball.display().to_string(),
        ),
    )
    .unwrap();
    p
}

fn hc1img(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .env("HC1IMG_KEYRING", dir.join("keyring.asc"))
        .env("SOURCE_DATE_EPOCH", "1700000500")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Extract the root filesystem of `out/ssd.img` into the directory `root`.
fn rdump(dir: &Path, out: &Path, root: &Path) {
    let ssd = out.join("ssd.img");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let len = j["partitiontable"]["partitions"][0]["size"]
        .as_u64()
        .unwrap()
        * 512;
    let fs = dir.join("root.ext4");
    extract(&ssd, 1 << 20, len, &fs);
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

/// pacman on the extracted image, without a configuration file.
fn pacman(root: &Path, args: &[&str]) -> std::process::Output {
    pkgs::pacman(root, &["--config", "/dev/null"], args)
}

fn pacman_ok(root: &Path, args: &[&str]) -> String {
    pkgs::pacman_ok(root, &["--config", "/dev/null"], args)
}

#[test]
fn lock_build_and_pacman_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tarball = tarball_with_local_db(dir);
    let gpg = signer(dir);
    let mirror = make_repos(dir, &gpg, b"#!/bin/sh\necho hello\n");
    let profile = write_profile(dir, &tarball, &mirror);
    let ps = profile.to_str().unwrap();

    // Without pins and --locked: a clear error, nothing written.
    let (ok, err) = hc1img(dir, &["build", ps, "--out", "out", "--locked"]);
    assert!(
        !ok && err.contains("hc1img lock") && err.contains("--locked"),
        "{err}"
    );
    assert!(!dir.join("hc1img.lock").exists());

    let plan = |dir: &Path| {
        let (ok, text) = hc1img(dir, &["plan", ps, "--json"]);
        assert!(ok, "plan failed:\n{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let derivation = |dir: &Path| plan(dir)["derivation"].as_str().unwrap().to_string();

    let (ok, text) = hc1img(dir, &["lock", ps]);
    assert!(ok, "lock failed:\n{text}");
    let lock = std::fs::read_to_string(dir.join("hc1img.lock")).unwrap();
    assert!(lock.contains("[packages.pk]"), "{lock}");
    // The pins are part of the derivation: one input per package, and another sha256 for
    // one package changes the hash.
    let inputs = plan(dir)["inputs"].clone();
    let pkgs: Vec<&str> = inputs
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "package")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(pkgs, ["dash-0.5.12-1", "hello-2:1.0-3", "libfoo-1.1-1"]);
    let pinned = derivation(dir);
    let at = lock.find("[[packages.pk.package]]").unwrap();
    let sha_at = at + lock[at..].find("sha256 = \"").unwrap() + "sha256 = \"".len();
    let mut edited = lock.clone();
    edited.replace_range(sha_at..sha_at + 64, &"f".repeat(64));
    std::fs::write(dir.join("hc1img.lock"), &edited).unwrap();
    assert_ne!(derivation(dir), pinned);
    std::fs::write(dir.join("hc1img.lock"), &lock).unwrap();
    assert_eq!(derivation(dir), pinned);
    // The virtual `sh` has two providers: dash (core, first repository) wins; libfoo is
    // upgraded because hello needs >= 1.1.
    for want in [
        "name = \"dash\"",
        "name = \"libfoo\"",
        "upgrades = \"1.0-1\"",
        "version = \"2:1.0-3\"",
        // Each package's signature and signer are pinned.
        "signature = \"",
        "signer = \"",
    ] {
        assert!(lock.contains(want), "{want} not in:\n{lock}");
    }
    assert!(!lock.contains("mksh"), "{lock}");

    let (ok, text) = hc1img(dir, &["build", ps, "--out", "out"]);
    assert!(ok, "build failed:\n{text}");
    assert!(
        text.contains("hello-2:1.0-3: its .INSTALL scriptlet is not on the reviewed list"),
        "{text}"
    );
    // Same inputs, same bytes, packages included.
    let (ok, text) = hc1img(dir, &["-q", "build", ps, "--out", "again"]);
    assert!(ok, "second build failed:\n{text}");
    for img in ["ssd.img", "sd.img"] {
        let sum = |d: &str| {
            let p = dir.join(d).join(img);
            run_ok("sha256sum", &[p.to_str().unwrap()])
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(sum("out"), sum("again"), "{img} differs between two builds");
    }
    std::fs::remove_dir_all(dir.join("again")).unwrap();
    let root = dir.join("root");
    rdump(dir, &dir.join("out"), &root);

    let q = pacman_ok(&root, &["-Q"]);
    for want in ["hello 2:1.0-3", "dash 0.5.12-1", "libfoo 1.1-1"] {
        assert!(q.contains(want), "{want} not in pacman -Q:\n{q}");
    }
    let qi = pacman_ok(&root, &["-Qi", "hello"]);
    assert!(
        qi.contains("Install Reason  : Explicitly installed"),
        "{qi}"
    );
    // hc1img checked the package's signature, and records it as pacman does.
    assert!(qi.contains("Validated By    : Signature"), "{qi}");
    assert!(qi.contains("Install Date    : "), "{qi}");
    let qi = pacman_ok(&root, &["-Qi", "dash"]);
    assert!(qi.contains("Installed as a dependency"), "{qi}");
    // Every file there and unmodified (mtree: type, mode, owner, size, mtime, digests).
    let k = pacman_ok(&root, &["-Qkk", "dash", "libfoo"]);
    assert!(!k.contains("warning") && !k.contains(" 1 altered"), "{k}");
    // hello: only the backup file the admin changed is reported (pacman's rule kept it; -Qkk
    // does not count backup files as altered); nothing else differs, not even the
    // scriptlet's time in the local database.
    let o = pacman(&root, &["-Qkk", "hello"]);
    let k = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && k.contains("hello: 15 total files, 0 altered files"),
        "{k}"
    );
    for line in k.lines().filter(|l| l.contains("/root/")) {
        assert!(
            line.starts_with("backup file: hello: ") && line.contains("/etc/hello.conf ("),
            "{k}"
        );
    }
    pacman_ok(&root, &["-Qk"]);
    pacman_ok(&root, &["-Dk"]);
    assert_eq!(std::fs::read(root.join(LONG)).unwrap(), b"a long name\n");
    // The upgrade removed the old version's file and database entry.
    assert!(!root.join("usr/share/libfoo/old.txt").exists());
    assert_eq!(
        std::fs::read(root.join("usr/lib/libfoo.so.1")).unwrap(),
        b"libfoo 1.1"
    );
    assert!(!root.join("var/lib/pacman/local/libfoo-1.0-1").exists());
    // backup: the admin's file stays, the package's goes to .pacnew.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hello.conf")).unwrap(),
        "greeting = bonjour # the admin's\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hello.conf.pacnew")).unwrap(),
        "greeting = hello\n"
    );
    // sysusers applied at build time.
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("hello:x:999:")),
        "{group}"
    );
    assert!(
        passwd.lines().any(|l| l.starts_with("hellod:x:")
            && l.ends_with(":Hello daemon:/var/lib/hello:/usr/bin/nologin")),
        "{passwd}"
    );
    // The scriptlet is kept in the local database; the deferred unit is enabled and valid.
    assert!(
        root.join("var/lib/pacman/local/hello-2:1.0-3/install")
            .is_file()
    );
    assert!(
        root.join("var/lib/hc1img/pacman-deferred.pending")
            .is_file()
    );
    let link = std::fs::read_link(
        root.join("etc/systemd/system/sysinit.target.wants/hc1-pacman-deferred.service"),
    )
    .unwrap();
    assert_eq!(
        link,
        Path::new("/etc/systemd/system/hc1-pacman-deferred.service")
    );
    let v = run(
        "systemd-analyze",
        &[
            "verify",
            &format!("--root={}", root.display()),
            "/etc/systemd/system/hc1-pacman-deferred.service",
        ],
    );
    let vtext = String::from_utf8_lossy(&v.stderr).into_owned();
    assert!(v.status.success(), "systemd-analyze verify:\n{vtext}");
}

#[test]
fn a_package_that_differs_from_its_pin_aborts_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tarball = tarball_with_local_db(dir);
    let gpg = signer(dir);
    let mirror = make_repos(dir, &gpg, b"#!/bin/sh\necho hello\n");
    let profile = write_profile(dir, &tarball, &mirror);
    let ps = profile.to_str().unwrap();
    let (ok, text) = hc1img(dir, &["lock", ps]);
    assert!(ok, "lock failed:\n{text}");
    // The mirror now serves other bytes under the pinned file name.
    std::fs::remove_dir_all(dir.join("mirror")).unwrap();
    std::fs::remove_dir_all(dir.join("pkgwork")).unwrap();
    make_repos(dir, &gpg, b"#!/bin/sh\necho tampered\n");
    // `lock` verified and cached the packages; a build on another machine fetches them again.
    std::fs::remove_dir_all(dir.join("cache")).unwrap();
    let (ok, text) = hc1img(dir, &["build", ps]);
    assert!(!ok, "a tampered package was accepted:\n{text}");
    assert!(text.contains("hello-2:1.0-3-armv7h.pkg.tar.zst"), "{text}");
    assert!(text.contains("sha256"), "{text}");
    // Nothing left behind: no output directory, no staging directory.
    let out = dir.join("out");
    let left: Vec<String> = std::fs::read_dir(&out)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in out/: {left:?}");
}
