//! ssd.img partition table against sgdisk, sfdisk and blkid.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::disk_common::{assert_same_bytes, read_range, run, run_status, stdout};
use hc1img::disk::gpt::{ARM32_ROOT, GptPartition, layout, write_gpt};
use hc1img::sparse::create_sparse;
use uuid::{Uuid, uuid};

const DISK_GUID: Uuid = uuid!("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
const PART_GUID: Uuid = uuid!("d1a5e0c2-7b3f-4e8a-9c61-2f0b8d4e6a17");

fn build(path: &Path, fs_bytes: u64, name: &str) -> (GptPartition, u64) {
    let (first, last, size) = layout(fs_bytes);
    let part = GptPartition {
        first_lba: first,
        last_lba: last,
        type_guid: ARM32_ROOT,
        part_guid: PART_GUID,
        name: name.to_string(),
    };
    let f = create_sparse(path, 0).unwrap();
    write_gpt(&f, size, DISK_GUID, &part).unwrap();
    (part, size)
}

#[test]
fn sgdisk_verifies_and_sfdisk_shows_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ssd.img");
    let fs_bytes = 24 * 1024 * 1024 + 4096;
    let (part, size) = build(&img, fs_bytes, "hc1-root");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
    assert_eq!(size, (2048 + fs_bytes / 512 + 33) * 512);

    let v = stdout(&run("sgdisk", &["-v", img.to_str().unwrap()]));
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");

    let j: serde_json::Value =
        serde_json::from_str(&stdout(&run("sfdisk", &["--json", img.to_str().unwrap()]))).unwrap();
    let t = &j["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["id"], DISK_GUID.to_string().to_uppercase());
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{j}");
    let p = &parts[0];
    assert_eq!(p["start"], part.first_lba);
    assert_eq!(p["size"], fs_bytes / 512);
    assert_eq!(p["type"], ARM32_ROOT.to_string().to_uppercase());
    assert_eq!(p["uuid"], PART_GUID.to_string().to_uppercase());
    assert_eq!(p["name"], "hc1-root");
}

#[test]
fn table_bytes_match_sgdisk() {
    // A small disk, and one past 1023 cylinders (CHS saturates) and 2 TiB (size saturates).
    for fs_bytes in [10 * 1024 * 1024, 9 << 30, 3 << 40] {
        table_bytes_match_sgdisk_for(fs_bytes);
    }
}

fn table_bytes_match_sgdisk_for(fs_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.img");
    let theirs = dir.path().join("theirs.img");
    let (part, size) = build(&ours, fs_bytes, "root");
    let f = File::create(&theirs).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run(
        "sgdisk",
        &[
            "-U",
            &DISK_GUID.to_string(),
            "-n",
            &format!("1:{}:{}", part.first_lba, part.last_lba),
            "-t",
            &format!("1:{ARM32_ROOT}"),
            "-u",
            &format!("1:{PART_GUID}"),
            "-c",
            "1:root",
            theirs.to_str().unwrap(),
        ],
    );
    let n = 34 * 512;
    assert_same_bytes(
        &read_range(&ours, 0, n),
        &read_range(&theirs, 0, n),
        &format!("primary table vs sgdisk, {fs_bytes}-byte fs"),
    );
    let tail = size - 33 * 512;
    assert_same_bytes(
        &read_range(&ours, tail, 33 * 512),
        &read_range(&theirs, tail, 33 * 512),
        &format!("backup table vs sgdisk, {fs_bytes}-byte fs"),
    );
}

#[test]
fn deterministic_and_refuses_long_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let (part, size) = build(&a, 3 * 1024 * 1024, "root");
    build(&b, 3 * 1024 * 1024, "root");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let f = File::options().write(true).open(&a).unwrap();
    f.set_len(size + 512).unwrap();
    let err = write_gpt(&f, size, DISK_GUID, &part)
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than the GPT disk size"), "{err}");

    let long = GptPartition {
        name: "x".repeat(37),
        ..part
    };
    let err = write_gpt(&f, size + 512, DISK_GUID, &long)
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than 36"), "{err}");
}

#[test]
fn blkid_finds_ext4_inside() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs.ext4");
    let fs_bytes: u64 = 8 * 1024 * 1024;
    File::create(&fs).unwrap().set_len(fs_bytes).unwrap();
    let out = run_status(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "hc1root",
            "-U",
            "5b2c1d3e-0000-4000-8000-000000000001",
            fs.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let img = dir.path().join("ssd.img");
    let (part, _) = build(&img, fs_bytes, "root");
    let data = std::fs::read(&fs).unwrap();
    let f = File::options().write(true).open(&img).unwrap();
    f.write_all_at(&data, part.first_lba * 512).unwrap();
    drop(f);

    let offset = (part.first_lba * 512).to_string();
    let out = stdout(&run("blkid", &["-p", "-O", &offset, img.to_str().unwrap()]));
    assert!(out.contains("TYPE=\"ext4\""), "{out}");
    assert!(out.contains("LABEL=\"hc1root\""), "{out}");
    assert!(
        out.contains("UUID=\"5b2c1d3e-0000-4000-8000-000000000001\""),
        "{out}"
    );

    // inspect reads the same back.
    let report = hc1img::disk::inspect::inspect(&img, &[]).unwrap();
    let text = report.to_string();
    assert!(
        text.contains(&format!("partition table: GPT, disk GUID {DISK_GUID}")),
        "{text}"
    );
    assert!(
        text.contains("type 69dad710-2ce4-4e3c-b16c-21a1d49abed3 (Linux root (ARM 32-bit))"),
        "{text}"
    );
    assert!(
        text.contains(&format!("PARTUUID {PART_GUID}, name \"root\"")),
        "{text}"
    );
    assert!(
        text.contains(
            "filesystem: ext4, label \"hc1root\", UUID 5b2c1d3e-0000-4000-8000-000000000001"
        ),
        "{text}"
    );
    assert!(report.warnings.is_empty(), "{text}");
    assert!(report.blobs.is_empty(), "{text}");

    // And the whole disk is seen as a GPT by blkid.
    let out = stdout(&run(
        "blkid",
        &["-p", "-o", "export", img.to_str().unwrap()],
    ));
    assert!(out.contains("PTTYPE=gpt"), "{out}");
    assert!(out.contains(&format!("PTUUID={DISK_GUID}")), "{out}");
}

#[test]
fn inspect_flags_a_corrupted_array() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ssd.img");
    build(&img, 4 * 1024 * 1024, "root");
    let f = File::options().write(true).open(&img).unwrap();
    f.write_all_at(b"X", 2 * 512 + 60).unwrap(); // inside entry 1's name
    drop(f);
    let report = hc1img::disk::inspect::inspect(&img, &[]).unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w == "GPT partition array CRC mismatch"),
        "{report}"
    );
    let v = stdout(&run_status("sgdisk", &["-v", img.to_str().unwrap()]));
    assert!(
        !v.contains("No problems found"),
        "sgdisk agrees it is damaged:\n{v}"
    );
}
