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
    tarball_with_local_db_and(dir, |_| {})
}

/// [`tarball_with_local_db`] with more entries, which `extra` appends at its end.
fn tarball_with_local_db_and(
    dir: &Path,
    extra: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>),
) -> PathBuf {
    // Without msmtp: the worker profile's [packages] bring it (offline_mirror).
    let base = alarm_tarball(
        dir,
        &Alarm {
            section_programs: false,
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
    extra(&mut b);
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
    let hello =
        build_pkg(
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
                    b"g hello - -\nu hellod - \"Hello daemon\" /var/lib/hello\nm hellod hello\nu! hellolock - \"Locked\"\n"
                        .to_vec(),
                ),
                Entry::file(
                    "usr/lib/systemd/system/hello.service",
                    0o644,
                    b"[Unit]\nDescription=Hello\n[Service]\nExecStart=/usr/bin/hello\n".to_vec(),
                ),
                // Its own alpm hook (alpm-hooks(5)), triggered by its own files: deferred to
                // the first boot with the matched paths on stdin.
                Entry::file("usr/share/libalpm/hooks/50-hello-index.hook", 0o644, HELLO_HOOK),
                Entry::file("usr/share/hello/greetings/en.txt", 0o644, b"hello\n".to_vec()),
                Entry::file("usr/share/hello/greetings/fr.txt", 0o644, b"salut\n".to_vec()),
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

/// hello's alpm hook: a Path trigger on its greetings (one target negated), `NeedsTargets`.
const HELLO_HOOK: &str = "[Trigger]\nType = Path\nOperation = Install\nOperation = Upgrade\n\
    Target = usr/share/hello/greetings/*\nTarget = !usr/share/hello/greetings/fr.txt\n\n\
    [Action]\nDescription = Indexing greetings...\nWhen = PostTransaction\n\
    Exec = /usr/bin/hello --index\nNeedsTargets\n";

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

/// The fast forms in the test's cache (`cache/fast/*.tar.zst`), sorted.
fn fast_forms(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("cache/fast"))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every regular file under `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
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

/// The build's `sbom.spdx.json`: valid SPDX (`pyspdxtools`), listing exactly the packages
/// Debian's `pacman -Q` finds in the image's local database (read back with debugfs into
/// `root`), with their versions; the pinned ones with the lock's sha256 and the test key as
/// signer; `hello`'s dependencies resolved (libfoo by name, `sh` by dash's provision); and
/// `hc1img inspect --sbom` prints them.
fn sbom_agrees_with_the_image(dir: &Path, sbom: &Path, root: &Path, gpg: &Gpg, lock: &str) {
    crate::sbom_spdx::assert_spdx_valid(sbom);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sbom).unwrap()).unwrap();
    let packages: Vec<&serde_json::Value> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|l| l.starts_with("pkg:alpm/"))
        })
        .collect();
    let mut listed: Vec<String> = packages
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    let mut q: Vec<String> = pacman_ok(root, &["-Q"])
        .lines()
        .map(str::to_owned)
        .collect();
    q.sort();
    assert_eq!(
        listed, q,
        "the SBOM's packages differ from pacman -Q on the image"
    );
    assert!(q.contains(&"libfoo 1.1-1".to_string()), "{q:?}");
    let fpr = gpg
        .gen_key_fpr("Packages Test <pk@example.invalid>")
        .unwrap();
    let hello = packages.iter().find(|p| p["name"] == "hello").unwrap();
    let sha = hello["checksums"][0]["checksumValue"].as_str().unwrap();
    assert!(
        lock.contains(&format!("sha256 = \"{sha}\"")),
        "{sha} not pinned:\n{lock}"
    );
    assert!(
        hello["annotations"][0]["comment"]
            .as_str()
            .unwrap()
            .contains(&fpr),
        "{hello}"
    );
    assert_eq!(hello["licenseDeclared"], "MIT");
    assert_eq!(hello["homepage"], "https://example.org/hello");
    let rels = doc["relationships"].as_array().unwrap();
    let depends: Vec<&str> = rels
        .iter()
        .filter(|r| {
            r["spdxElementId"] == "SPDXRef-Package-hello" && r["relationshipType"] == "DEPENDS_ON"
        })
        .map(|r| r["relatedSpdxElement"].as_str().unwrap())
        .collect();
    assert_eq!(depends, ["SPDXRef-Package-dash", "SPDXRef-Package-libfoo"]);
    let (ok, table) = hc1img(dir, &["inspect", "--sbom", "out/pk"]);
    assert!(ok, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hello ") && l.contains("2:1.0-3") && l.contains(&fpr)),
        "{table}"
    );
    assert!(
        table.contains(&format!("{} installed packages", q.len())),
        "{table}"
    );
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

    // Before a build, plan cannot know what the first boot will run (the hooks are in the
    // tarball and the packages) and says so; after it, plan lists it from the store's build.
    assert!(plan(dir)["first_boot"].is_null());
    let (ok, text) = hc1img(dir, &["build", ps]);
    assert!(ok, "build failed:\n{text}");
    assert_eq!(
        plan(dir)["first_boot"],
        serde_json::json!([
            "alpm hook 50-hello-index.hook: runs \"/usr/bin/hello --index\" with 2 targets on stdin"
        ])
    );
    let (ok, shown) = hc1img(dir, &["plan", ps]);
    assert!(
        ok && shown.contains("deferred to the node's first boot (hc1-pacman-deferred.service):\n  alpm hook 50-hello-index.hook: runs"),
        "{shown}"
    );
    assert!(
        text.contains("hello-2:1.0-3: its .INSTALL scriptlet is not on the reviewed list"),
        "{text}"
    );
    assert!(
        text.contains("alpm hook 50-hello-index.hook: deferred to the first boot")
            && text.contains("with 2 targets on stdin"),
        "{text}"
    );
    // An upgrade replacing its old version's files warns about nothing ordinary.
    assert!(!text.contains("duplicate entry"), "{text}");
    // The first build wrote the fast forms of the tarball and the 3 packages.
    let fast = fast_forms(dir);
    assert_eq!(fast.len(), 4, "{fast:?}\n{text}");
    // Same inputs, same bytes, packages included: the second build reads the fast forms.
    let (ok, text) = hc1img(dir, &["-v", "build", ps, "--out", "again"]);
    assert!(ok, "second build failed:\n{text}");
    assert!(
        text.contains("reading the fast form")
            && text.contains("packages: 3 of 3 read through their fast forms"),
        "{text}"
    );
    assert!(!text.contains("does not verify"), "{text}");
    let same_images = |other: &str| {
        for img in ["ssd.img", "sd.img"] {
            let sum = |d: &str| {
                let p = dir.join(d).join(img);
                run_ok("sha256sum", &[p.to_str().unwrap()])
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string()
            };
            assert_eq!(
                sum("out/pk"),
                sum(other),
                "{img} differs between the builds into out/pk and {other}"
            );
        }
    };
    same_images("again");
    // A flipped byte in every fast form (the tarball's and the packages'), then one truncated
    // by a byte: each is found out before it is used, the build reads the originals, says so,
    // writes the fast forms again and gives the same images.
    for (i, damage) in ["flip", "truncate"].into_iter().enumerate() {
        for f in fast_forms(dir) {
            let mut bytes = std::fs::read(&f).unwrap();
            match damage {
                "flip" => {
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0x40;
                }
                _ => {
                    bytes.pop();
                }
            }
            std::fs::remove_file(&f).unwrap();
            std::fs::write(&f, &bytes).unwrap();
        }
        let out = format!("damaged{i}");
        let (ok, text) = hc1img(dir, &["-v", "build", ps, "--out", &out]);
        assert!(ok, "build with {damage}ped fast forms failed:\n{text}");
        let warned = text
            .lines()
            .filter(|l| {
                l.starts_with("warning: ")
                    && l.contains("fast form")
                    && l.contains("does not verify")
            })
            .count();
        assert_eq!(warned, 4, "{damage}: {text}");
        assert!(
            text.contains("packages: 0 of 3 read through their fast forms"),
            "{text}"
        );
        same_images(&out);
        assert_eq!(fast_forms(dir).len(), 4, "{damage}: not written again");
        std::fs::remove_dir_all(dir.join(&out)).unwrap();
    }
    // The rewritten fast forms verify: the next build reads them without a warning.
    let (ok, text) = hc1img(dir, &["-v", "build", ps, "--out", "fast-again"]);
    assert!(
        ok && !text.contains("does not verify") && text.contains("reading the fast form"),
        "{text}"
    );
    same_images("fast-again");
    std::fs::remove_dir_all(dir.join("fast-again")).unwrap();
    // Fast forms off: the originals, the same images.
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .env("HC1IMG_KEYRING", dir.join("keyring.asc"))
        .env("SOURCE_DATE_EPOCH", "1700000500")
        .env("HC1IMG_FAST_FORMS", "0")
        .args(["-v", "build", ps, "--out", "slow"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(
        !text.contains("reading the fast form")
            && !text.contains("writing the fast form")
            && text.contains("packages: 0 of 3"),
        "{text}"
    );
    same_images("slow");
    std::fs::remove_dir_all(dir.join("slow")).unwrap();
    // `vendor` copies the originals only: no fast form, nothing zstd made of a tarball.
    let (ok, text) = hc1img(dir, &["vendor", "vendored", ps]);
    assert!(ok, "vendor failed:\n{text}");
    let fast_bytes: Vec<Vec<u8>> = fast_forms(dir)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let mut vendored = 0;
    for e in walkdir(&dir.join("vendored")) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tar.zst") || name.ends_with(".pkg.tar.zst"),
            "{name}"
        );
        let bytes = std::fs::read(&e).unwrap();
        assert!(!fast_bytes.contains(&bytes), "{name} is a fast form");
        vendored += 1;
    }
    assert!(vendored >= 3, "{text}");
    std::fs::remove_dir_all(dir.join("vendored")).unwrap();
    let sbom_path = dir.join("out/pk/sbom.spdx.json");
    let sbom = std::fs::read(&sbom_path).unwrap();
    assert_eq!(
        sbom,
        std::fs::read(dir.join("again/sbom.spdx.json")).unwrap(),
        "sbom.spdx.json differs between two builds"
    );
    std::fs::remove_dir_all(dir.join("again")).unwrap();
    let root = dir.join("root");
    rdump(dir, &dir.join("out/pk"), &root);
    sbom_agrees_with_the_image(dir, &sbom_path, &root, &gpg, &lock);

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
        o.status.success() && k.contains("hello: 21 total files, 0 altered files"),
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
    // `u!`: locked and expired (shadow's expiry field is day 1); `u`: locked only.
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let entry = |name: &str| -> Vec<String> {
        shadow
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in /etc/shadow:\n{shadow}"))
            .split(':')
            .map(str::to_string)
            .collect()
    };
    assert_eq!(entry("hellolock")[1], "!*");
    assert_eq!(entry("hellolock")[7], "1");
    assert_eq!(entry("hellod")[7], "");
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
    // The deferred script runs the hook with its matched targets on stdin (the directory
    // too: `*` matches the empty name, as in fnmatch(3); fr.txt is negated); run here with a
    // stand-in for the hook's program, it gets exactly those lines.
    let script = std::fs::read_to_string(root.join("usr/lib/hc1img/pacman-deferred")).unwrap();
    let hook = script
        .split("echo 'hc1-pacman-deferred: running hook 50-hello-index.hook' >&2\n")
        .nth(1)
        .unwrap_or_else(|| panic!("the hook is not in the deferred script:\n{script}"));
    assert!(
        hook.starts_with(
            "step sh -c '/usr/bin/hello --index' <<'HC1IMG_HOOK_TARGETS_END'\nusr/share/hello/greetings/\nusr/share/hello/greetings/en.txt\nHC1IMG_HOOK_TARGETS_END\n"
        ),
        "{script}"
    );
    let stand_in = hook.replacen("/usr/bin/hello --index", "cat", 1);
    let ran = Command::new("sh")
        .arg("-c")
        .arg(format!("step() {{ \"$@\"; }}\n{stand_in}"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "usr/share/hello/greetings/\nusr/share/hello/greetings/en.txt\n"
    );

    // `[packages] strict = true` refuses what the first boot would have to run, naming it.
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(
        &profile,
        text.replace("[packages]\n", "[packages]\nstrict = true\n"),
    )
    .unwrap();
    let (ok, text) = hc1img(dir, &["build", ps, "--out", "strict"]);
    assert!(
        !ok,
        "a strict build with a deferred hook succeeded:\n{text}"
    );
    assert!(
        text.contains("[packages] strict = true: the node's first boot would have to run alpm hook 50-hello-index.hook (/usr/bin/hello --index)"),
        "{text}"
    );
    assert!(!dir.join("strict").exists());
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

/// Packages of the upgrade fixture, files per package and bytes per file: 480 MiB in all, more
/// than the 30% + 256 MiB headroom of `size = "auto"`, so an upgrade of every one of them
/// that kept the old versions' blocks would not fit.
const BIG_PACKAGES: usize = 12;
const BIG_FILES: usize = 10;
const BIG_FILE_BYTES: u64 = 4 << 20;

/// The contents of file `i` of package `big{k}` at `version` (1 or 2): a 4 KiB block of noise
/// repeated (quick to compress), different for every file and version.
fn big_file(k: usize, i: usize, version: u64) -> impl Read {
    let seed = 1 + (k * BIG_FILES + i) as u64 * 2 + version * 1000;
    Cycle::new(noise(4096, seed)).take(BIG_FILE_BYTES)
}

fn big_path(k: usize, i: usize) -> String {
    format!("usr/share/big{k}/f{i:02}")
}

/// The image's root: extracted from `out/ssd.img` into `dir/NAME.ext4`, checked with
/// `e2fsck -fn`; returns the path and `dumpe2fs -h`'s block count and free blocks.
fn checked_root(dir: &Path, out: &Path, name: &str) -> (PathBuf, u64, u64) {
    let ssd = out.join("ssd.img");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let part = &j["partitiontable"]["partitions"][0];
    let fs = dir.join(format!("{name}.ext4"));
    extract(
        &ssd,
        part["start"].as_u64().unwrap() * 512,
        part["size"].as_u64().unwrap() * 512,
        &fs,
    );
    let fsck = run("e2fsck", &["-fn", fs.to_str().unwrap()]);
    assert!(
        fsck.status.success(),
        "{name}: e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let h = run_ok("dumpe2fs", &["-h", fs.to_str().unwrap()]);
    let field = |key: &str| -> u64 {
        h.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} not in dumpe2fs -h:\n{h}"))
            .trim()
            .parse()
            .unwrap()
    };
    (fs, field("Block count:"), field("Free blocks:"))
}

/// The first physical block of `path` in the filesystem image `fs` (debugfs `bmap`).
fn first_block(fs: &Path, path: &str) -> u64 {
    let out = debugfs(fs, &format!("bmap /{path} 0"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs bmap /{path}: {out:?}"))
}

/// Issue 26 item 3: a tarball whose packages (480 MiB of files) are all upgraded, each file
/// rewritten, builds with `size = "auto"`: the transaction's sizes are counted (what it
/// installs minus what it replaces), the replaced files' blocks are reused (new files lie in
/// blocks old versions had), the result is
/// `e2fsck`-clean, every file is the new version's (`pacman -Qkk`), the image is no larger
/// than a build that installs the same packages on a tarball without them, and two builds are
/// byte-identical.
#[test]
fn an_upgrade_of_every_package_fits_size_auto_and_reuses_the_freed_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let names: Vec<String> = (0..BIG_PACKAGES).map(|k| format!("big{k}")).collect();

    // The repository: version 2-1 of every package, signed.
    let gpg = signer(dir);
    let work = dir.join("pkgwork");
    let core = dir.join("mirror/core");
    std::fs::create_dir_all(&core).unwrap();
    let mut files = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let paths: Vec<String> = (0..BIG_FILES).map(|i| big_path(k, i)).collect();
        let contents: Vec<Vec<u8>> = (0..BIG_FILES)
            .map(|i| {
                let mut v = Vec::new();
                big_file(k, i, 2).read_to_end(&mut v).unwrap();
                v
            })
            .collect();
        let f = build_pkg(
            &work,
            &core,
            &Pkg {
                files: paths
                    .iter()
                    .zip(contents)
                    .map(|(p, d)| Entry::file(p, 0o644, d))
                    .collect(),
                ..Pkg::new(name, "2-1")
            },
        );
        std::fs::remove_dir_all(work.join(format!("{name}-2-1"))).unwrap();
        files.push(f);
    }
    sign_all(&gpg, &files.iter().collect::<Vec<_>>());
    repo_add(&core, "core", &files);
    let mirror = format!("file://{}/mirror/$repo", dir.display());

    // Two tarballs: with version 1-1 of every package installed (files and local database),
    // and without them.
    let up = dir.join("upgrade");
    let scratch = dir.join("scratch");
    for d in [&up, &scratch] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(dir.join("keyring.asc"), d.join("keyring.asc")).unwrap();
    }
    // Both with a file of zeros, so gzip's trailer gives `size = "auto"` its size hint (the
    // base tarball's noise alone compresses to more than it holds).
    let filler = || E::File("usr/share/filler", 0o644, vec![0; 1 << 20]);
    let old = tarball_with_local_db_and(&up, |b| {
        append(b, vec![filler()]);
        for k in 0..BIG_PACKAGES {
            let name = format!("big{k}-1-1");
            let size = BIG_FILES as u64 * BIG_FILE_BYTES;
            let mut list = format!("%FILES%\nusr/\nusr/share/\nusr/share/big{k}/\n");
            for i in 0..BIG_FILES {
                list.push_str(&format!("{}\n", big_path(k, i)));
            }
            list.push('\n');
            let desc = format!(
                "%NAME%\nbig{k}\n\n%VERSION%\n1-1\n\n%ARCH%\narmv7h\n\n%INSTALLDATE%\n1690000000\n\n%SIZE%\n{size}\n\n%VALIDATION%\npgp\n\n"
            );
            let db = format!("var/lib/pacman/local/{name}");
            append(
                b,
                vec![
                    E::Dir(&db, 0o755),
                    E::File(&format!("{db}/desc"), 0o644, desc.into_bytes()),
                    E::File(&format!("{db}/files"), 0o644, list.into_bytes()),
                    E::Dir(&format!("usr/share/big{k}"), 0o755),
                ],
            );
            for i in 0..BIG_FILES {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(MTIME);
                h.set_size(BIG_FILE_BYTES);
                b.append_data(&mut h, big_path(k, i), big_file(k, i, 1))
                    .unwrap();
            }
        }
    });
    let new = tarball_with_local_db_and(&scratch, |b| append(b, vec![filler()]));
    let targets: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let build = |d: &Path, tarball: &Path, outs: &[&str]| {
        let p = d.join("big.toml");
        std::fs::write(
            &p,
            format!(
                "extends = {:?}\nname = \"big\"\n\n[source]\nurl = {:?}\n\n[packages]\ninstall = [{}]\nrepositories = [\"core\"]\nmirrors = [{mirror:?}]\narchitecture = \"armv7h\"\n",
                repo().join("tests/profiles/debian-fixture.toml").display().to_string(),
                tarball.display().to_string(),
                targets.join(", "),
            ),
        )
        .unwrap();
        let ps = p.to_str().unwrap();
        let (ok, text) = hc1img(d, &["lock", ps]);
        assert!(ok, "lock failed:\n{text}");
        let mut logs = Vec::new();
        for out in outs {
            let t = std::time::Instant::now();
            let (ok, text) = hc1img(d, &["-v", "build", ps, "--out", out]);
            assert!(ok, "build failed:\n{text}");
            eprintln!("{}: built in {:.1?}", d.join(out).display(), t.elapsed());
            logs.push(text);
        }
        logs
    };
    let logs = build(&up, &old, &["out", "again"]);
    let lock = std::fs::read_to_string(up.join("hc1img.lock")).unwrap();
    assert_eq!(
        lock.matches("upgrades = \"1-1\"").count(),
        BIG_PACKAGES,
        "{lock}"
    );
    // The estimate counted the transaction and held: no second build.
    assert!(logs[0].contains("rootfs size auto: "), "{}", logs[0]);
    assert!(!logs[0].contains("building again"), "{}", logs[0]);
    build(&scratch, &new, &["out"]);

    // Same inputs, same bytes, reused blocks included.
    let (a, b) = (up.join("out/ssd.img"), up.join("again/ssd.img"));
    assert_eq!(sha256_file(&a), sha256_file(&b), "two builds differ");

    let (fs, blocks, free) = checked_root(dir, &up.join("out"), "upgrade");
    let (sfs, sblocks, sfree) = checked_root(dir, &scratch.join("out"), "scratch");
    let (len, slen) = (
        std::fs::metadata(&a).unwrap().len(),
        std::fs::metadata(scratch.join("out/ssd.img"))
            .unwrap()
            .len(),
    );
    eprintln!(
        "upgrade: ssd.img {} MiB, root {blocks} blocks, {} used; from scratch: ssd.img {} MiB, root {sblocks} blocks, {} used",
        len >> 20,
        blocks - free,
        slen >> 20,
        sblocks - sfree
    );
    // Not larger than installing the same packages from scratch (whose size has the same
    // headroom: the same geometry here), and the same content within a few directory blocks.
    assert!(len <= slen, "upgrade {len} > scratch {slen}");
    assert_eq!(blocks, sblocks);
    let (used, sused) = (blocks - free, sblocks - sfree);
    assert!(used.abs_diff(sused) <= 64, "used {used} vs {sused}");
    // The blocks were reused: more was written than the filesystem holds, and a new file
    // lies below the end of the old versions' data (without reuse, every new file would lie
    // after all of it: the old files alone take `old_data` blocks from past the metadata).
    let old_data = (BIG_PACKAGES * BIG_FILES) as u64 * BIG_FILE_BYTES / 4096;
    assert!(
        2 * old_data > blocks,
        "{} blocks written, {blocks} in all",
        2 * old_data
    );
    let firsts: Vec<u64> = (0..BIG_PACKAGES)
        .map(|k| first_block(&fs, &big_path(k, 0)))
        .collect();
    assert!(
        firsts.iter().any(|&b| b < old_data),
        "no new file below block {old_data}: {firsts:?}"
    );
    std::fs::remove_file(sfs).unwrap();

    // Every file is the new version's (pacman checks each against the package's .MTREE).
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    debugfs(&fs, &format!("rdump / {}", root.display()));
    std::fs::remove_file(&fs).unwrap();
    let mut args = vec!["-Qkk"];
    args.extend(names.iter().map(String::as_str));
    let k = pacman_ok(&root, &args);
    assert!(!k.contains("warning"), "{k}");
    for n in &names {
        assert!(
            k.contains(&format!(
                "{n}: {} total files, 0 altered files",
                BIG_FILES + 3
            )),
            "{k}"
        );
    }
}
