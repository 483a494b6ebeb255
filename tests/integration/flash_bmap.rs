//! Flashing through the block maps onto used media: `bmaptool copy` of `sd.img`/`ssd.img`
//! (and their `.zst`, and a card seeded by `hc1img seed`, through its own map) onto a loop
//! device whose backing file is full of random bytes, as an old microSD card or SSD is.
//! `bmaptool` writes only the mapped blocks, so whatever the image needs there — FAT tables,
//! directories, the zeroed U-Boot environment, both GPTs, ext4 metadata — must be mapped.
//! Checked with `fsck.fat -n`, `e2fsck -fn` and `sgdisk -v`.
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A worker profile with a 256 MiB root, so the targets stay small.
fn small_profile(dir: &Path) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        format!(
            "extends = \"{}\"\nname = \"small\"\n[rootfs]\nsize = \"256MiB\"\n",
            repo().join("profiles/worker.toml").display()
        ),
    )
    .unwrap();
    p
}

/// Detaches the loop device on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

/// A file of `len` random bytes (from /dev/urandom): a used card or disk.
fn used_media(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom").unwrap().take(len);
    let mut dst = std::fs::File::create(path).unwrap();
    assert_eq!(std::io::copy(&mut src, &mut dst).unwrap(), len);
}

/// `bmaptool copy` `image` (with `bmap`) onto a loop device over `target`.
fn flash(image: &Path, bmap: &Path, target: &Path) {
    let dev = run_ok("losetup", &["-f", "--show", target.to_str().unwrap()])
        .trim()
        .to_string();
    let lo = Loop(dev);
    run_ok(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            image.to_str().unwrap(),
            &lo.0,
        ],
    );
    drop(lo);
}

fn assert_ok(tool: &str, args: &[&str]) -> String {
    let o = run(tool, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "{tool} {args:?} found problems:\n{text}"
    );
    text
}

#[test]
fn flashing_through_the_bmaps_onto_used_media_gives_valid_disks() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let out = tmp.path().join("out");
    let o = build_command(tmp.path(), &small_profile(tmp.path()), &tarball, Some(&out))
        .args(["--compress", "zst"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sd = out.join("sd.img");
    let ssd = out.join("ssd.img");
    let sd_len = std::fs::metadata(&sd).unwrap().len();
    let ssd_len = std::fs::metadata(&ssd).unwrap().len();
    let board: toml::Value = toml::from_str(
        &std::fs::read_to_string(repo().join("profiles/boards/odroid-hc1.toml")).unwrap(),
    )
    .unwrap();
    let env = &board["sd"]["env_area"];
    let (env_at, env_len) = (
        env["sector"].as_integer().unwrap() as u64 * 512,
        env["sectors"].as_integer().unwrap() as u64 * 512,
    );
    let boot_at = 8192 * 512;

    // A seeded card, flashed through its own map: the card's map plus the seed's changes.
    let seeded = tmp.path().join("sd-node.img");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .args(["seed", sd.to_str().unwrap(), "--hostname", "hc1-node", "-o"])
        .arg(&seeded)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let seeded_bmap = tmp.path().join("sd-node.img.bmap");

    for (source, bmap) in [
        (out.join("sd.img"), out.join("sd.img.bmap")),
        (out.join("sd.img.zst"), out.join("sd.img.bmap")),
        (seeded.clone(), seeded_bmap),
    ] {
        let image = source;
        let source = image.file_name().unwrap().to_str().unwrap().to_string();
        let card = tmp.path().join("card");
        used_media(&card, sd_len);
        flash(&image, &bmap, &card);
        let got = std::fs::read(&card).unwrap();
        assert!(
            got[env_at as usize..(env_at + env_len) as usize]
                .iter()
                .all(|&b| b == 0),
            "{source}: the old card's U-Boot environment survived"
        );
        let fat = tmp.path().join("fat");
        extract(&card, boot_at, sd_len - boot_at, &fat);
        assert_ok("fsck.fat", &["-n", fat.to_str().unwrap()]);
        // The files read back as the image has them.
        let listing = run_ok("mdir", &["-i", fat.to_str().unwrap(), "-/", "::"]);
        assert!(
            listing.contains("zImage") && listing.contains("boot"),
            "{listing}"
        );
        if image == seeded {
            let conf = run_ok(
                "mtype",
                &["-i", fat.to_str().unwrap(), "::hc1img-seed/seed.conf"],
            );
            assert!(conf.contains("hostname=hc1-node"), "{conf}");
        }
        let zimage = tmp.path().join("zImage");
        run_ok(
            "mcopy",
            &[
                "-n",
                "-i",
                fat.to_str().unwrap(),
                "::zImage",
                zimage.to_str().unwrap(),
            ],
        );
        let sd_fat = tmp.path().join("sd.fat");
        extract(&sd, boot_at, sd_len - boot_at, &sd_fat);
        let want = tmp.path().join("want-zImage");
        run_ok(
            "mcopy",
            &[
                "-n",
                "-i",
                sd_fat.to_str().unwrap(),
                "::zImage",
                want.to_str().unwrap(),
            ],
        );
        run_ok("cmp", &[zimage.to_str().unwrap(), want.to_str().unwrap()]);
    }

    for source in ["ssd.img", "ssd.img.zst"] {
        let disk = tmp.path().join("disk");
        used_media(&disk, ssd_len);
        flash(&out.join(source), &out.join("ssd.img.bmap"), &disk);
        let v = assert_ok("sgdisk", &["-v", disk.to_str().unwrap()]);
        assert!(v.contains("No problems found"), "{source}: {v}");
        let root = tmp.path().join("root.ext4");
        extract(&disk, 1 << 20, 256 << 20, &root);
        assert_ok("e2fsck", &["-fn", root.to_str().unwrap()]);
        let passwd = debugfs(&root, "cat /etc/passwd");
        assert!(passwd.contains("admin:x:1000:"), "{passwd}");
    }
}
