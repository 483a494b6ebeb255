//! A full microSD image (MBR + Exynos blobs + FAT32 /boot) checked with sfdisk, fsck.fat,
//! mtools and blkid, and read back by `disk::inspect`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::common::sha256_file;
use crate::disk_common::{
    assert_same_bytes, pseudo_random, read_range, run, run_env, sha256_hex, stdout,
};
use hc1img::disk::blobs::{BlobSlot, check_layout, write_blobs};
use hc1img::disk::inspect::{Table, inspect};
use hc1img::disk::mbr::{FAT32_LBA, MbrPartition, write_mbr};
use hc1img::disk::sd::{SdImage, write_sd_image};
use hc1img::fat::{FatOptions, write_fat32};
use hc1img::sparse::{create_sparse, write_nonzero_at};

const PART_START: u64 = 8192;
const FAT_BYTES: u64 = 256 * 1024 * 1024;
const ENV: (u64, u64) = (6272, 32);
const SIGNATURE: u32 = 0x4843_3101;

fn slots() -> Vec<BlobSlot> {
    [
        ("bl1.bin", 1),
        ("bl2.bin", 31),
        ("u-boot.bin", 63),
        ("tzsw.bin", 2111),
    ]
    .iter()
    .map(|(f, s)| BlobSlot {
        file: f.to_string(),
        sector: *s,
        max_sectors: None,
    })
    .collect()
}

/// Blobs with the real files' sizes (signed bl1 15 KiB, bl2 14 KiB, tzsw 256 KiB) and a
/// u-boot.bin just under its 1 MiB slot, odd-sized.
fn blobs() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("bl1.bin".to_string(), pseudo_random(15 * 1024, 11));
    m.insert("bl2.bin".to_string(), pseudo_random(14 * 1024, 12));
    m.insert(
        "u-boot.bin".to_string(),
        pseudo_random(1024 * 1024 - 1234, 13),
    );
    m.insert("tzsw.bin".to_string(), pseudo_random(256 * 1024, 14));
    m
}

fn boot_files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("zImage".to_string(), pseudo_random(5 * 1024 * 1024 + 3, 21));
    m.insert(
        "initramfs-linux.img".to_string(),
        pseudo_random(7 * 1024 * 1024 + 77, 22),
    );
    m.insert(
        "dtbs/exynos5422-odroidhc1.dtb".to_string(),
        pseudo_random(62_000, 23),
    );
    m.insert(
        "boot.scr".to_string(),
        hc1img::uboot::script_image(b"echo boot\n", "U-Boot boot script", 1_700_000_000),
    );
    m
}

fn fat_opts() -> FatOptions {
    FatOptions {
        label: "BOOT".to_string(),
        volume_id: 0xC0FF_EE42,
        timestamp: 1_700_000_000,
    }
}

fn build(path: &Path) {
    let size = PART_START * 512 + FAT_BYTES;
    let f = create_sparse(path, size).unwrap();
    let blobs = blobs();
    let sizes = blobs
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    check_layout(&slots(), &sizes, PART_START, Some(ENV)).unwrap();
    write_mbr(
        &f,
        SIGNATURE,
        &[MbrPartition {
            start_lba: PART_START as u32,
            sectors: (FAT_BYTES / 512) as u32,
            kind: FAT32_LBA,
            bootable: true,
        }],
    )
    .unwrap();
    write_blobs(&f, &slots(), &blobs).unwrap();
    write_fat32(&f, PART_START * 512, FAT_BYTES, &fat_opts(), &boot_files()).unwrap();
}

fn files_equal(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

#[test]
fn sd_image_checks_out_with_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sd.img");
    build(&img);
    let img_s = img.to_str().unwrap();

    // Partition table as sfdisk sees it.
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&run("sfdisk", &["--json", img_s]))).unwrap();
    let t = &j["partitiontable"];
    assert_eq!(t["label"], "dos", "{j}");
    assert_eq!(t["id"], format!("{SIGNATURE:#010x}"), "{j}");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{j}");
    assert_eq!(parts[0]["start"], PART_START);
    assert_eq!(parts[0]["size"], FAT_BYTES / 512);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);

    // Every blob byte-equal at its sector; everything else before the partition zero.
    let head = read_range(&img, 0, (PART_START * 512) as usize);
    let mut expected_head = vec![0u8; head.len()];
    expected_head[..512].copy_from_slice(&head[..512]);
    for s in slots() {
        let b = &blobs()[&s.file];
        let at = (s.sector * 512) as usize;
        assert_same_bytes(
            &head[at..at + b.len()],
            b,
            &format!("{} at sector {}", s.file, s.sector),
        );
        expected_head[at..at + b.len()].copy_from_slice(b);
    }
    assert_same_bytes(
        &head,
        &expected_head,
        "bytes between MBR, blobs and partition",
    );

    // blkid on the partition.
    let off = (PART_START * 512).to_string();
    let out = stdout(&run("blkid", &["-p", "-o", "export", "-O", &off, img_s]));
    assert!(out.contains("TYPE=vfat"), "{out}");
    assert!(out.contains("LABEL=BOOT"), "{out}");
    assert!(out.contains("UUID=C0FF-EE42"), "{out}");
    let out = stdout(&run("blkid", &["-p", "-o", "export", img_s]));
    assert!(out.contains("PTTYPE=dos"), "{out}");

    // fsck.fat on the partition extracted (sparse) into its own file.
    let part = dir.path().join("part.img");
    {
        let src = File::open(&img).unwrap();
        let dst = create_sparse(&part, FAT_BYTES).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < FAT_BYTES {
            src.read_exact_at(&mut buf, PART_START * 512 + pos).unwrap();
            write_nonzero_at(&dst, pos, &buf).unwrap();
            pos += buf.len() as u64;
        }
    }
    let out = run_env("fsck.fat", &["-n", part.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "fsck.fat -n found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // mtools reads every file back through the partition offset.
    let spec = format!("{img_s}@@{}", PART_START * 512);
    for (path, data) in boot_files() {
        let dst = dir.path().join("out");
        let _ = std::fs::remove_file(&dst);
        run(
            "mcopy",
            &[
                "-n",
                "-i",
                &spec,
                &format!("::/{path}"),
                dst.to_str().unwrap(),
            ],
        );
        assert_eq!(sha256_file(&dst), sha256_hex(&data), "{path}");
    }

    // inspect names the table, the partition, its filesystem and each blob with its hash.
    let report = inspect(&img, &slots()).unwrap();
    assert_eq!(
        report.table,
        Table::Mbr {
            signature: SIGNATURE
        }
    );
    let text = report.to_string();
    assert!(
        text.contains("partition table: MBR, disk signature 0x48433101"),
        "{text}"
    );
    assert!(text.contains("partition 1: sectors 8192..532480"), "{text}");
    assert!(text.contains("type 0x0c (FAT32 LBA), bootable"), "{text}");
    assert!(
        text.contains("filesystem: vfat (FAT32), label \"BOOT\", UUID C0FF-EE42"),
        "{text}"
    );
    for s in slots() {
        let b = &blobs()[&s.file];
        let line = format!(
            "{} at sector {}: {} bytes used of",
            s.file,
            s.sector,
            b.len()
        );
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
        assert!(
            text.contains(&sha256_hex(b)),
            "missing hash of {} in\n{text}",
            s.file
        );
    }
    assert!(report.warnings.is_empty(), "{text}");
}

#[test]
fn two_builds_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    build(&a);
    build(&b);
    assert!(files_equal(&a, &b), "two sd.img builds differ");

    // The one-call helper writes the same bytes as the steps above.
    let c = dir.path().join("c.img");
    let (blobs, files, fat) = (blobs(), boot_files(), fat_opts());
    let slots = slots();
    let sd = SdImage {
        disk_signature: SIGNATURE,
        first_partition_sector: PART_START,
        fat_bytes: FAT_BYTES,
        env_area: Some(ENV),
        slots: &slots,
        blobs: &blobs,
        fat: &fat,
        files: &files,
    };
    write_sd_image(&c, &sd).unwrap();
    assert!(
        files_equal(&a, &c),
        "write_sd_image differs from the step-by-step build"
    );

    // And refuses a partition inside U-Boot's environment.
    let bad = SdImage {
        first_partition_sector: 4096,
        ..sd
    };
    let e = write_sd_image(&dir.path().join("d.img"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("environment area"), "{e}");
}

#[test]
fn mbr_sector_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    for (start, sectors) in [(8192u32, 524_288u32), (2048, 100), (8192, 40_000_000)] {
        let ours = dir.path().join("ours.img");
        let theirs = dir.path().join("theirs.img");
        let size = (u64::from(start) + u64::from(sectors)) * 512;
        let f = create_sparse(&ours, size).unwrap();
        let part = MbrPartition {
            start_lba: start,
            sectors,
            kind: FAT32_LBA,
            bootable: true,
        };
        write_mbr(&f, SIGNATURE, &[part]).unwrap();
        create_sparse(&theirs, size).unwrap();
        let script = format!(
            "label: dos\nlabel-id: {SIGNATURE:#010x}\nunit: sectors\n\nstart={start}, size={sectors}, type=c, bootable\n"
        );
        let script_path = dir.path().join("script");
        std::fs::write(&script_path, script).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PATH=$PATH:/usr/sbin:/sbin sfdisk --no-reread --no-tell-kernel -q {} < {}",
                theirs.display(),
                script_path.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sfdisk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_bytes(
            &read_range(&ours, 0, 512),
            &read_range(&theirs, 0, 512),
            &format!("MBR vs sfdisk for start {start}, {sectors} sectors"),
        );
    }
}

#[test]
fn layout_errors_are_clear() {
    let mut sizes: BTreeMap<String, u64> = blobs()
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    sizes.insert("u-boot.bin".into(), 1024 * 1024 + 1);
    let e = check_layout(&slots(), &sizes, PART_START, Some(ENV))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "blobs u-boot.bin (sectors 63..2112) and tzsw.bin (sectors 2111..2623) overlap"
    );
    let ok: BTreeMap<String, u64> = blobs()
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    let e = check_layout(&slots(), &ok, 4096, Some(ENV))
        .unwrap_err()
        .to_string();
    assert!(e.contains("environment area (sectors 6272..6304)"), "{e}");
    assert!(e.contains("first partition at sector 4096"), "{e}");
}
