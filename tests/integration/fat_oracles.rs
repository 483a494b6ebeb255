//! FAT32 volumes against fsck.fat (dosfstools), mtools and blkid.

use std::collections::BTreeMap;
use std::path::Path;

use crate::disk_common::{pseudo_random, run, run_env, sha256_hex, stdout};
use hc1img::fat::{FatOptions, write_fat32};
use hc1img::sparse::create_sparse;

const MIB: u64 = 1024 * 1024;

fn sample_files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("zImage".to_string(), pseudo_random(3 * 1024 * 1024 + 17, 1));
    m.insert(
        "initramfs-linux.img".to_string(),
        pseudo_random(1_500_001, 2),
    );
    m.insert("boot.scr".to_string(), b"not really a script".to_vec());
    m.insert(
        "dtbs/exynos5422-odroidhc1.dtb".to_string(),
        pseudo_random(60_000, 3),
    );
    m.insert(
        "dtbs/overlays/a-long-overlay-name.dtbo".to_string(),
        pseudo_random(999, 4),
    );
    m.insert("empty".to_string(), Vec::new());
    m.insert(
        "initramfs-linux-fallback.img".to_string(),
        pseudo_random(700_000, 5),
    );
    m.insert("BOOT.INI".to_string(), b"exact 8.3 name".to_vec());
    // A directory spanning several clusters, names with several long-name entries.
    for i in 0..40 {
        m.insert(
            format!("many/a-rather-long-file-name-number-{i:02}.txt"),
            format!("file {i}\n").into_bytes(),
        );
    }
    m
}

fn opts() -> FatOptions {
    FatOptions {
        label: "HC1BOOT".to_string(),
        volume_id: 0x1234_abcd,
        timestamp: 1_700_000_000,
    }
}

fn build(path: &Path, offset: u64, size: u64, files: &BTreeMap<String, Vec<u8>>) {
    let f = create_sparse(path, offset + size).unwrap();
    write_fat32(&f, offset, size, &opts(), files).unwrap();
}

fn mtools(tool: &str, args: &[&str]) -> std::process::Output {
    let out = run_env(tool, args, &[("MTOOLS_SKIP_CHECK", "0")]);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn fsck_clean_and_mtools_reads_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat.img");
    let files = sample_files();
    build(&img, 0, 64 * MIB, &files);

    let out = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("2 FATs, 32 bit entries"), "{text}");
    assert!(!text.contains("Free cluster summary"), "{text}");

    let img_s = img.to_str().unwrap();
    for (path, data) in &files {
        let dst = dir.path().join("out");
        let _ = std::fs::remove_file(&dst);
        mtools(
            "mcopy",
            &[
                "-n",
                "-i",
                img_s,
                &format!("::/{path}"),
                dst.to_str().unwrap(),
            ],
        );
        let got = std::fs::read(&dst).unwrap();
        assert_eq!(got.len(), data.len(), "{path}");
        assert_eq!(sha256_hex(&got), sha256_hex(data), "{path}");
    }
    // Listing shows the names with the fixed timestamp.
    let listing = stdout(&mtools("mdir", &["-i", img_s, "::/"]));
    assert!(listing.contains("zImage"), "{listing}");
    assert!(listing.contains("initramfs-linux.img"), "{listing}");
    assert!(listing.contains("2023-11-14"), "{listing}");
    assert!(listing.contains("22:13"), "{listing}");
    assert!(listing.contains("HC1BOOT"), "{listing}");
    let listing = stdout(&mtools("mdir", &["-i", img_s, "::/dtbs/overlays"]));
    assert!(listing.contains("a-long-overlay-name.dtbo"), "{listing}");
    let listing = stdout(&mtools("mdir", &["-i", img_s, "::/many"]));
    for i in 0..40 {
        let name = format!("a-rather-long-file-name-number-{i:02}.txt");
        assert!(listing.contains(&name), "{name} missing:\n{listing}");
    }
}

#[test]
fn blkid_label_uuid_and_offset_volume() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let offset = 8192 * 512;
    build(&img, offset, 40 * MIB, &sample_files());
    let out = stdout(&run(
        "blkid",
        &[
            "-p",
            "-o",
            "export",
            "-O",
            &offset.to_string(),
            img.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("TYPE=vfat"), "{out}");
    assert!(out.contains("VERSION=FAT32"), "{out}");
    assert!(out.contains("LABEL=HC1BOOT"), "{out}");
    assert!(out.contains("UUID=1234-ABCD"), "{out}");
    // mtools through the @@offset syntax.
    let spec = format!("{}@@{offset}", img.to_str().unwrap());
    let listing = stdout(&mtools("mdir", &["-i", &spec, "::/"]));
    assert!(listing.contains("zImage"), "{listing}");
    // Hidden sectors = partition start.
    let bs = crate::disk_common::read_range(&img, offset, 512);
    assert_eq!(u32::from_le_bytes(bs[28..32].try_into().unwrap()), 8192);
}

#[test]
fn deterministic_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    build(&a, 0, 64 * MIB, &sample_files());
    build(&b, 0, 64 * MIB, &sample_files());
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    // Mostly holes: a 64 MiB volume with ~5 MiB of files allocates far less than 64 MiB.
    use std::os::unix::fs::MetadataExt;
    let used = std::fs::metadata(&a).unwrap().blocks() * 512;
    assert!(used < 16 * MIB, "image uses {used} bytes on disk");
}

#[test]
fn errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let f = create_sparse(&dir.path().join("x.img"), 0).unwrap();
    let mut files = BTreeMap::new();
    files.insert("big".to_string(), vec![1u8; 40 * MIB as usize]);
    let err = format!(
        "{:#}",
        write_fat32(&f, 0, 36 * MIB, &opts(), &files).unwrap_err()
    );
    assert!(err.contains("too small for 1 files"), "{err}");
    assert!(err.contains("enlarge the boot partition"), "{err}");
    let err = format!(
        "{:#}",
        write_fat32(&f, 0, 8 * MIB, &opts(), &BTreeMap::<String, Vec<u8>>::new()).unwrap_err()
    );
    assert!(err.contains("enlarge the boot partition"), "{err}");
    let bad = FatOptions {
        label: "lower".into(),
        ..opts()
    };
    let err = format!(
        "{:#}",
        write_fat32(&f, 0, 64 * MIB, &bad, &BTreeMap::<String, Vec<u8>>::new()).unwrap_err()
    );
    assert!(err.contains("upper-case"), "{err}");
    let mut clash = BTreeMap::new();
    clash.insert("a".to_string(), vec![]);
    clash.insert("a/b".to_string(), vec![]);
    let err = format!(
        "{:#}",
        write_fat32(&f, 0, 64 * MIB, &opts(), &clash).unwrap_err()
    );
    assert!(err.contains("both as a file and as a directory"), "{err}");
}

#[test]
fn other_sizes_and_empty_volume_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    // 34 MiB: just above the FAT32 minimum with 512-byte clusters; 300 MiB: 4 KiB clusters.
    for (size, files, label) in [
        (34 * MIB, BTreeMap::new(), ""),
        (300 * MIB, sample_files(), "HC1BOOT"),
        (300 * MIB, BTreeMap::new(), "EMPTY"),
    ] {
        let img = dir.path().join("v.img");
        let f = create_sparse(&img, size).unwrap();
        let o = FatOptions {
            label: label.to_string(),
            ..opts()
        };
        write_fat32(&f, 0, size, &o, &files).unwrap();
        drop(f);
        let out = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
        let text = stdout(&out);
        let cluster = if size > 260 * MIB { 4096 } else { 512 };
        assert!(
            text.contains(&format!("{cluster} bytes per cluster")),
            "{text}"
        );
        let b = stdout(&run(
            "blkid",
            &["-p", "-o", "export", img.to_str().unwrap()],
        ));
        assert!(b.contains("TYPE=vfat"), "{b}");
        if label.is_empty() {
            assert!(!b.contains("LABEL="), "{b}");
        } else {
            assert!(b.contains(&format!("LABEL={label}")), "{b}");
        }
        for (path, data) in &files {
            let dst = dir.path().join("out");
            let _ = std::fs::remove_file(&dst);
            mtools(
                "mcopy",
                &[
                    "-n",
                    "-i",
                    img.to_str().unwrap(),
                    &format!("::/{path}"),
                    dst.to_str().unwrap(),
                ],
            );
            assert_eq!(std::fs::read(&dst).unwrap(), *data, "{path}");
        }
    }
}
