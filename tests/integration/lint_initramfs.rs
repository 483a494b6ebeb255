//! The hardware lints against archives made by the real tools: initramfs images written by
//! GNU `cpio -o -H newc` and compressed by `gzip`, `zstd` and `xz`, read by
//! `hc1img::lint`; then through `hc1img build`'s stderr with an initramfs that has the
//! SSD modules and one that lacks them; and the blob/environment lint on the HC1 board file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;
use hc1img::lint;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const KVER: &str = "6.6.63-1-ARCH";

/// An initramfs tree in `root` with the given modules (as `.ko.zst` files) under
/// usr/lib/modules, packed by GNU cpio (newc) and compressed by `compressor` (`None`: plain).
fn initramfs(root: &Path, modules: &[&str], compressor: Option<&str>) -> Vec<u8> {
    let _ = std::fs::remove_dir_all(root);
    let kdir = root.join(format!("usr/lib/modules/{KVER}/kernel/drivers/usb/storage"));
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("init"), "#!/usr/bin/ash\n").unwrap();
    std::fs::write(root.join("usr/bin/busybox"), noise(5000, 9)).unwrap();
    std::fs::write(
        root.join(format!("usr/lib/modules/{KVER}/modules.builtin")),
        "kernel/drivers/usb/host/ehci-hcd.ko\n",
    )
    .unwrap();
    for m in modules {
        std::fs::write(kdir.join(format!("{m}.ko.zst")), noise(3000, 3)).unwrap();
    }
    let list = run_ok_in(root, "find", &[".", "-mindepth", "1"], None);
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    let cpio = run_bytes_in(
        root,
        "cpio",
        &["-o", "-H", "newc", "--quiet"],
        Some(names.join("\n").as_bytes()),
    );
    assert!(cpio.starts_with(b"070701"), "GNU cpio did not write newc");
    match compressor {
        None => cpio,
        Some(c) => run_bytes_in(root, c, &["-c"], Some(&cpio)),
    }
}

fn run_bytes_in(cwd: &Path, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run the oracle `{tool}` ({e}); install it (apt-get install cpio zstd xz-utils gzip)")
        });
    let mut sin = child.stdin.take().unwrap();
    let data = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        sin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn run_ok_in(cwd: &Path, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    String::from_utf8(run_bytes_in(cwd, tool, args, stdin)).unwrap()
}

#[test]
fn real_cpio_archives_in_every_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    for c in [None, Some("gzip"), Some("zstd"), Some("xz")] {
        let full = initramfs(&root, &["usb-storage", "uas", "sd_mod"], c);
        let info = lint::read_initramfs(&full).unwrap();
        assert!(
            info.names.contains(&format!(
                "usr/lib/modules/{KVER}/kernel/drivers/usb/storage/uas.ko.zst"
            )),
            "{c:?}: {:?}",
            info.names
        );
        assert!(info.builtin.contains("ehci-hcd.ko"), "{c:?}");
        assert_eq!(
            lint::lint_initramfs("initramfs-linux.img", Some(&full)),
            None,
            "{c:?}"
        );

        let lacking = initramfs(&root, &["uas"], c);
        let w = lint::lint_initramfs("initramfs-linux.img", Some(&lacking))
            .unwrap_or_else(|| panic!("{c:?}: no warning for missing modules"));
        assert!(
            w.starts_with("initramfs lacks usb-storage/uas/sd_mod")
                && w.contains("root on the SSD will not be found")
                && w.contains("mkinitcpio's block hook")
                && w.contains("usb-storage, sd_mod"),
            "{c:?}: {w}"
        );
    }
}

/// The alarm tarball with `initramfs` as /boot/initramfs-linux.img, re-packed.
fn tarball_with_initramfs(dir: &Path, name: &str, initramfs: &[u8]) -> PathBuf {
    let sub = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&sub).unwrap();
    let base = alarm_tarball(
        &sub,
        &Alarm {
            omit: Some("initramfs-linux.img"),
            ..Alarm::default()
        },
    );
    let path = dir.join(format!("{name}.tar.gz"));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&base).unwrap(),
    ));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        if let Some(ext) = e.pax_extensions().unwrap() {
            let pairs: Vec<(String, Vec<u8>)> = ext
                .map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                })
                .collect();
            b.append_pax_extensions(pairs.iter().map(|(k, v)| (k.as_str(), &v[..])))
                .unwrap();
        }
        let p = e.path().unwrap().into_owned();
        if h.entry_type() == tar::EntryType::Symlink {
            let t = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &p, &t).unwrap();
        } else {
            b.append_data(&mut h, &p, &mut e).unwrap();
        }
    }
    append(
        &mut b,
        vec![E::File(
            "boot/initramfs-linux.img",
            0o644,
            initramfs.to_vec(),
        )],
    );
    b.into_inner().unwrap().finish().unwrap();
    path
}

fn build_stderr(cwd: &Path, tarball: &Path, out: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let profile = cwd.join("small.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"{}\"\nname = \"small\"\n[rootfs]\nsize = \"256MiB\"\n",
            repo().join("profiles/worker.toml").display()
        ),
    )
    .unwrap();
    let mut secrets = Vec::new();
    for (name, value) in [
        (
            "admin_password_hash",
            "$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij./",
        ),
        ("mail_password", "MAILSECRET-42"),
        ("swarm_worker_token", "SWMTKN-1-TOKENSECRET"),
    ] {
        let p = cwd.join(format!("secret-{name}"));
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        secrets.push("--secret".to_string());
        secrets.push(format!("{name}={}", p.display()));
    }
    let sha = sha256_hex(&std::fs::read(tarball).unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(cwd)
        .env("HC1IMG_CACHE", cwd.join("cache"))
        .arg("-q")
        .arg("build")
        .arg(&profile)
        .args(["--source-url", tarball.to_str().unwrap()])
        .args(["--source-sha256", &sha])
        .arg("--no-packages")
        .args(&secrets)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "the lints must never fail the build:\n{err}"
    );
    err
}

#[test]
fn build_warns_about_an_initramfs_without_the_ssd_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let good = initramfs(&root, &["usb-storage", "uas", "sd_mod"], Some("gzip"));
    let bad = initramfs(&root, &["uas"], Some("gzip"));

    let t = tarball_with_initramfs(tmp.path(), "good", &good);
    let err = build_stderr(tmp.path(), &t, &tmp.path().join("out-good"));
    assert!(
        !err.contains("initramfs"),
        "unexpected initramfs warning:\n{err}"
    );
    // The tarball's own boot.txt is replaced on the card: said so.
    assert!(
        err.contains("warning: the tarball's /boot/boot.txt was replaced"),
        "{err}"
    );

    let t = tarball_with_initramfs(tmp.path(), "bad", &bad);
    let err = build_stderr(tmp.path(), &t, &tmp.path().join("out-bad"));
    assert!(
        err.contains("warning: initramfs lacks usb-storage/uas/sd_mod"),
        "no warning for a missing usb-storage/sd_mod:\n{err}"
    );
    assert!(tmp.path().join("out-bad/sd.img").is_file());
}

#[test]
fn blobs_past_the_environment_area_warn_and_overlaps_are_left_to_the_layout_check() {
    let text = std::fs::read_to_string(repo().join("profiles/boards/odroid-hc1.toml")).unwrap();
    let board: hc1img::profile::Board = toml::from_str(&text).unwrap();
    let sizes: BTreeMap<String, u64> = [
        ("bl1.bin", 15 * 512),
        ("bl2.bin", 14 * 1024),
        ("u-boot.bin", 600 * 1024),
        ("tzsw.bin", 256 * 1024),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        lint::lint_blobs(&board, &sizes),
        None,
        "the shipped layout is fine"
    );

    // Environment between u-boot (ends at sector 1263) and tzsw (2111..2623).
    let moved = text.replace("sector = 6272", "sector = 1500");
    assert_ne!(moved, text);
    let b2: hc1img::profile::Board = toml::from_str(&moved).unwrap();
    let w = lint::lint_blobs(&b2, &sizes).expect("no warning for blobs past env_area");
    assert!(
        w.contains("sector 2623") && w.contains("tzsw.bin") && w.contains("1500"),
        "{w}"
    );

    // Overlap: check_layout refuses it (the build fails there); the lint stays quiet.
    let overlap = text.replace("sector = 6272", "sector = 2200");
    let b3: hc1img::profile::Board = toml::from_str(&overlap).unwrap();
    assert!(b3.check_blob_layout(&sizes).is_err());
    assert_eq!(lint::lint_blobs(&b3, &sizes), None);
}
