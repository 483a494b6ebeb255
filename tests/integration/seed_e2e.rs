//! `hc1img seed`: seeded cards for several nodes in one call, each a valid FAT (`fsck.fat -n`)
//! holding the node's seed and every secret the profile leaves to the card (read back with
//! mtools), everything else of the card unchanged, holes kept, mode 0600, and a block map of
//! its own when the input had one (`bmaptool copy` writes it back byte for byte).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

const ADMIN_HASH: &str =
    "$6$seedsalt$QWERTYUIOPasdfghjklzxcvbnm0123456789QWERTYUIOPasdfghjklzxcvbnm0123456789abcdef./";
const MAIL_PW: &str = "seeded-mail-password";
const TOKEN: &str = "SWMTKN-1-seeded-worker-token";
/// The FAT partition's first byte (the HC1 board's first_sector 8192).
const FAT_AT: u64 = 8192 * 512;

fn secret(dir: &Path, name: &str, value: &str, mode: u32) -> String {
    let p = dir.join(format!("s-{name}"));
    std::fs::write(&p, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    format!("{name}={}", p.display())
}

fn seed(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .arg("seed")
        .args(args)
        .output()
        .unwrap()
}

/// A worker build with compressed copies and block maps (`--compress zst`).
fn build_worker(dir: &Path) -> PathBuf {
    let tarball = alarm_tarball(dir, &Alarm::default());
    let out = dir.join("out");
    let o = build_command(
        dir,
        &repo().join("profiles/worker.toml"),
        &tarball,
        Some(&out),
    )
    .args(["--compress", "zst"])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("sd.img.bmap").is_file());
    out
}

fn mtype(img: &Path, path: &str) -> String {
    run_ok(
        "mtype",
        &["-i", &format!("{}@@{FAT_AT}", img.display()), path],
    )
}

fn fat_files(img: &Path, to: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(to).unwrap();
    run_ok(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{}@@{FAT_AT}", img.display()),
            "::/",
            to.to_str().unwrap(),
        ],
    );
    let mut out = Vec::new();
    let mut stack = vec![to.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(to).unwrap().display().to_string();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn fsck_fat(img: &Path, scratch: &Path) {
    let len = std::fs::metadata(img).unwrap().len() - FAT_AT;
    let part = scratch.join("fat.part");
    extract(img, FAT_AT, len, &part);
    let o = Command::new("fsck.fat")
        .args(["-n", part.to_str().unwrap()])
        .output()
        .expect("fsck.fat (dosfstools) must be installed");
    assert!(
        o.status.success(),
        "fsck.fat -n {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(part).unwrap();
}

#[test]
fn seeds_several_nodes_with_every_card_secret_as_valid_sparse_cards_with_bmaps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = build_worker(dir);
    let sd = out.join("sd.img");
    let cards = dir.join("cards");
    std::fs::create_dir(&cards).unwrap();
    let o = seed(
        dir,
        &[
            sd.to_str().unwrap(),
            "--hostname",
            "hc1-w1",
            "--hostname",
            "hc1-w2",
            "--address",
            "10.0.0.11/24",
            "--address",
            "10.0.0.12/24",
            "--gateway",
            "10.0.0.1",
            "--secret",
            &secret(dir, "swarm_worker_token", TOKEN, 0o600),
            "--secret",
            &secret(dir, "admin_password_hash", ADMIN_HASH, 0o600),
            "--secret",
            &secret(dir, "mail_password", MAIL_PW, 0o640),
            "-o",
            cards.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for v in [ADMIN_HASH, MAIL_PW, TOKEN] {
        assert!(!log.contains(v), "seed printed a secret: {log}");
    }
    let original = fat_files(&sd, &dir.join("orig"));
    let sd_meta = std::fs::metadata(&sd).unwrap();
    let head = |p: &Path| std::fs::read(p).unwrap()[..FAT_AT as usize].to_vec();
    for (host, addr) in [("hc1-w1", "10.0.0.11/24"), ("hc1-w2", "10.0.0.12/24")] {
        let card = cards.join(format!("sd-{host}.img"));
        let meta = std::fs::metadata(&card).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o600,
            "{host}: a seeded card holds secrets"
        );
        assert_eq!(meta.len(), sd_meta.len());
        // Holes kept: about as many blocks as the built card, far fewer than its size.
        assert!(
            meta.blocks() * 512 <= sd_meta.blocks() * 512 + (1 << 20),
            "{host}: {} bytes allocated, the built card {}",
            meta.blocks() * 512,
            sd_meta.blocks() * 512
        );
        fsck_fat(&card, dir);
        assert_eq!(
            head(&card),
            head(&sd),
            "{host}: MBR, blobs or environment changed"
        );
        assert_eq!(
            mtype(&card, "::/hc1img-seed/seed.conf"),
            format!(
                "# Written by `hc1img seed`; read once by the node's first boot.\n\
                 hostname={host}\naddress={addr}\ngateway=10.0.0.1\n"
            )
        );
        for (name, v) in [
            ("swarm_worker_token", TOKEN),
            ("admin_password_hash", ADMIN_HASH),
            ("mail_password", MAIL_PW),
        ] {
            assert_eq!(
                mtype(&card, &format!("::/hc1img-seed/secrets/{name}")),
                format!("{v}\n")
            );
        }
        // Every file of the built card is there, unchanged.
        let seeded: Vec<_> = fat_files(&card, &dir.join(format!("f-{host}")))
            .into_iter()
            .filter(|(p, _)| !p.starts_with("hc1img-seed/"))
            .collect();
        assert_eq!(seeded, original, "{host}: the card's other files changed");
        // Its own block map, which bmaptool accepts and which reproduces the card.
        let bmap = cards.join(format!("sd-{host}.img.bmap"));
        assert!(bmap.is_file(), "{host}: no .bmap");
        let target = dir.join("flashed.img");
        let _ = std::fs::remove_file(&target);
        run_ok(
            "bmaptool",
            &[
                "copy",
                "--bmap",
                bmap.to_str().unwrap(),
                card.to_str().unwrap(),
                target.to_str().unwrap(),
            ],
        );
        assert!(
            std::fs::read(&target).unwrap() == std::fs::read(&card).unwrap(),
            "{host}: bmaptool copy through the bmap gives other bytes"
        );
    }
    // No temporary files left.
    let left: Vec<_> = std::fs::read_dir(&cards)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Without an input .bmap, no output .bmap; one node, -o is the file.
    let plain = dir.join("plain-sd.img");
    std::fs::copy(&sd, &plain).unwrap();
    let one = dir.join("one.img");
    let o = seed(
        dir,
        &[
            plain.to_str().unwrap(),
            "--hostname",
            "hc1-x",
            "-o",
            one.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(one.is_file() && !dir.join("one.img.bmap").exists());
    fsck_fat(&one, dir);
}

#[test]
fn seed_refuses_bad_requests_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = build_worker(dir);
    let sd = out.join("sd.img");
    let sd = sd.to_str().unwrap();
    let good = secret(dir, "swarm_worker_token", TOKEN, 0o600);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--secret".into(),
                secret(dir, "swarm_token", TOKEN, 0o600),
            ],
            "takes only admin_password_hash, mail_password, swarm_worker_token",
        ),
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--secret".into(),
                secret(dir, "mail_password", MAIL_PW, 0o644),
            ],
            "world-readable",
        ),
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--hostname".into(),
                "b".into(),
                "--hostname".into(),
                "c".into(),
                "--address".into(),
                "10.0.0.1/24".into(),
                "--address".into(),
                "10.0.0.2/24".into(),
            ],
            "one --address per --hostname",
        ),
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--hostname".into(),
                "a".into(),
            ],
            "given twice",
        ),
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--hostname".into(),
                "b".into(),
                "-o".into(),
                dir.join("nodir").display().to_string(),
            ],
            "must be an existing directory",
        ),
        // --flash writes one card, and checks the device before seeding anything.
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--hostname".into(),
                "b".into(),
                "--flash".into(),
                dir.join("card").display().to_string(),
            ],
            "--flash writes one card: give one --hostname, not 2",
        ),
        (
            vec![
                "--hostname".into(),
                "a".into(),
                "--secret".into(),
                good.clone(),
                "--flash".into(),
                dir.display().to_string(),
            ],
            "is a directory, not a block device or an image file",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec![sd.to_string()];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = seed(dir, &refs);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains(TOKEN) && !err.contains(MAIL_PW), "{err}");
        for n in ["sd-a.img", "sd-b.img", "sd-c.img"] {
            assert!(!dir.join(n).exists(), "{args:?} wrote {n}");
        }
    }
    // A seeded card cannot be seeded again; an existing output is never overwritten.
    let o = seed(dir, &[sd, "--hostname", "a", "--secret", &good]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = seed(dir, &["sd-a.img", "--hostname", "b"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already holds a seed"),
        "{err}"
    );
    let before = std::fs::read(dir.join("sd-a.img")).unwrap();
    let o = seed(dir, &[sd, "--hostname", "a"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("sd-a.img")).unwrap(), before);
}
