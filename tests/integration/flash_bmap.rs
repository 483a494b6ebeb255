//! Flashing through the block maps onto used media: `sd.img`/`ssd.img` (and their `.zst`,
//! and a card seeded by `hc1img seed`, through its own map) written onto a loop device whose
//! backing file is full of random bytes, as an old microSD card or SSD is, by `bmaptool copy`
//! and by `hc1img flash` (plain without a map, `.zst` through the map found beside it, the
//! seeded card, and `hc1img seed --flash` in one step). Only the mapped blocks are written,
//! so whatever the image needs there — FAT tables, directories, the zeroed U-Boot
//! environment, both GPTs, ext4 metadata — must be mapped. Checked with `fsck.fat -n`,
//! `e2fsck -fn` and `sgdisk -v` on the written device, at the offsets `sfdisk --json` reads
//! from it. One build serves every case.
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

/// How a test writes an image onto a loop device over used media.
enum Writer<'a> {
    /// `bmaptool copy --bmap BMAP IMAGE DEVICE`.
    Bmaptool(&'a Path),
    /// `hc1img flash ARGS… IMAGE DEVICE`; its report must contain the text given.
    Hc1img(&'a [&'a str], &'a str),
    /// `hc1img seed IMAGE --hostname hc1-flashed --flash DEVICE`.
    SeedFlash,
}

/// Write `image` onto a loop device over `target` with `how`.
fn flash(how: &Writer, image: &Path, target: &Path) {
    let lo = Loop::attach(target, false);
    match how {
        Writer::Bmaptool(bmap) => {
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
        }
        Writer::Hc1img(args, says) => {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_hc1img"))
                .arg("flash")
                .args(*args)
                .arg(image)
                .arg(&lo.0)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "hc1img flash {args:?}: {err}");
            assert!(err.contains(says), "{says:?} not in:\n{err}");
            assert!(err.contains("it matches"), "{err}");
        }
        Writer::SeedFlash => {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_hc1img"))
                .arg("seed")
                .arg(image)
                .args(["--hostname", "hc1-flashed", "--flash", &lo.0])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "hc1img seed --flash: {err}");
            assert!(
                err.contains("mapped by") && err.contains("it matches"),
                "{err}"
            );
        }
    }
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

    // A seeded card, flashed through its own map: the card's map plus the seed's changes.
    let seeded = tmp.path().join("sd-node.img");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .args(["seed", sd.to_str().unwrap(), "--hostname", "hc1-node", "-o"])
        .arg(&seeded)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let seeded_bmap = tmp.path().join("sd-node.img.bmap");
    let (sd_bmap, sd_zst) = (out.join("sd.img.bmap"), out.join("sd.img.zst"));
    let sd_fat = tmp.path().join("sd.fat");
    let (sd_boot, sd_boot_len) = partitions(&sd)[0];
    extract(&sd, sd_boot, sd_boot_len, &sd_fat);
    let want_zimage = tmp.path().join("want-zImage");
    run_ok(
        "mcopy",
        &[
            "-n",
            "-i",
            sd_fat.to_str().unwrap(),
            "::zImage",
            want_zimage.to_str().unwrap(),
        ],
    );

    // Each card: the image, how it is written, the host name its seed must carry.
    let by_sd_map = format!("mapped by {}", sd_bmap.display());
    let by_seeded_map = format!("mapped by {}", seeded_bmap.display());
    let cards: [(&Path, Writer, Option<&str>); 7] = [
        (&sd, Writer::Bmaptool(&sd_bmap), None),
        (&sd_zst, Writer::Bmaptool(&sd_bmap), None),
        (&seeded, Writer::Bmaptool(&seeded_bmap), Some("hc1-node")),
        // hc1img flash: a plain image, every byte; the .zst through sd.img.bmap, found
        // beside it as bmaptool finds it; the seeded card through its own map.
        (&sd, Writer::Hc1img(&["--no-bmap"], "every byte"), None),
        (&sd_zst, Writer::Hc1img(&[], &by_sd_map), None),
        (
            &seeded,
            Writer::Hc1img(&[], &by_seeded_map),
            Some("hc1-node"),
        ),
        // Seeded and written in one step.
        (&sd, Writer::SeedFlash, Some("hc1-flashed")),
    ];
    for (image, how, hostname) in &cards {
        let what = format!(
            "{} by {}",
            image.file_name().unwrap().to_str().unwrap(),
            match how {
                Writer::Bmaptool(_) => "bmaptool",
                Writer::Hc1img(..) => "hc1img flash",
                Writer::SeedFlash => "hc1img seed --flash",
            }
        );
        let card = tmp.path().join("card");
        used_media(&card, sd_len);
        flash(how, image, &card);
        let env_bytes = crate::disk_common::read_range(&card, env_at, env_len as usize);
        assert!(
            env_bytes.iter().all(|&b| b == 0),
            "{what}: the old card's U-Boot environment survived"
        );
        let (boot, boot_len) = partitions(&card)[0];
        assert_eq!((boot, boot_len), (sd_boot, sd_boot_len), "{what}");
        let fat = tmp.path().join("fat");
        extract(&card, boot, boot_len, &fat);
        assert_ok("fsck.fat", &["-n", fat.to_str().unwrap()]);
        // The files read back as the image has them.
        let listing = run_ok("mdir", &["-i", fat.to_str().unwrap(), "-/", "::"]);
        assert!(
            listing.contains("zImage") && listing.contains("boot"),
            "{what}: {listing}"
        );
        if let Some(h) = hostname {
            let conf = run_ok(
                "mtype",
                &["-i", fat.to_str().unwrap(), "::hc1img-seed/seed.conf"],
            );
            assert!(conf.contains(&format!("hostname={h}\n")), "{what}: {conf}");
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
        run_ok(
            "cmp",
            &[zimage.to_str().unwrap(), want_zimage.to_str().unwrap()],
        );
    }

    let ssd_bmap = out.join("ssd.img.bmap");
    let by_ssd_map = format!("mapped by {}", ssd_bmap.display());
    let (ssd_zst, ssd_bmap_ref) = (out.join("ssd.img.zst"), &ssd_bmap);
    let disks: [(&Path, Writer); 4] = [
        (&ssd, Writer::Bmaptool(ssd_bmap_ref)),
        (&ssd_zst, Writer::Bmaptool(ssd_bmap_ref)),
        (&ssd, Writer::Hc1img(&[], &by_ssd_map)),
        (
            &ssd_zst,
            Writer::Hc1img(&["--bmap", ssd_bmap.to_str().unwrap()], &by_ssd_map),
        ),
    ];
    for (image, how) in &disks {
        let what = image.display();
        let disk = tmp.path().join("disk");
        used_media(&disk, ssd_len);
        flash(how, image, &disk);
        let v = assert_ok("sgdisk", &["-v", disk.to_str().unwrap()]);
        assert!(v.contains("No problems found"), "{what}: {v}");
        let (root_at, root_len) = partitions(&disk)[0];
        let root = tmp.path().join("root.ext4");
        extract(&disk, root_at, root_len, &root);
        assert_ok("e2fsck", &["-fn", root.to_str().unwrap()]);
        let passwd = debugfs(&root, "cat /etc/passwd");
        assert!(passwd.contains("admin:x:1000:"), "{what}: {passwd}");
    }
}
