//! bmap files and zstd images against bmaptool (bmap-tools) and zstd.

use std::collections::BTreeMap;
use std::path::Path;

use crate::disk_common::{pseudo_random, run, run_status};
use hc1img::disk::bmap::{compress_zstd, write_bmap};
use hc1img::sparse::{create_sparse, write_nonzero_at};

/// The machine-readable values of a bmap file.
fn values(path: &Path) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let raw = std::fs::read_to_string(path).unwrap();
    // Drop XML comments (bmaptool's mention the tag names).
    let mut text = String::new();
    let mut rest = raw.as_str();
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        rest = &rest[i..][rest[i..].find("-->").unwrap() + 3..];
    }
    text.push_str(rest);
    let mut fields = BTreeMap::new();
    for tag in [
        "ImageSize",
        "BlockSize",
        "BlocksCount",
        "MappedBlocksCount",
        "ChecksumType",
    ] {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let s = text
            .find(&open)
            .unwrap_or_else(|| panic!("{tag} missing in {text}"))
            + open.len();
        let e = text[s..].find(&close).unwrap() + s;
        fields.insert(tag.to_string(), text[s..e].trim().to_string());
    }
    let mut ranges = Vec::new();
    for part in text.split("<Range chksum=\"").skip(1) {
        let (sum, rest) = part.split_once("\">").unwrap();
        let (range, _) = rest.split_once("</Range>").unwrap();
        ranges.push((sum.to_string(), range.trim().to_string()));
    }
    (fields, ranges)
}

fn sample_image(path: &Path) {
    let f = create_sparse(path, 64 * 1024 * 1024 + 1000).unwrap();
    write_nonzero_at(&f, 0, &pseudo_random(512, 1)).unwrap();
    write_nonzero_at(&f, 4096 * 7 + 100, &pseudo_random(20_000, 2)).unwrap();
    write_nonzero_at(&f, 32 * 1024 * 1024, &pseudo_random(1 << 20, 3)).unwrap();
    write_nonzero_at(&f, 64 * 1024 * 1024, &pseudo_random(1000, 4)).unwrap(); // partial last block
}

#[test]
fn bmap_matches_bmaptool_create_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sd.img");
    sample_image(&img);
    let ours = dir.path().join("ours.bmap");
    write_bmap(&img, &ours, &|_| {}).unwrap();
    let theirs = dir.path().join("theirs.bmap");
    run(
        "bmaptool",
        &[
            "create",
            "-o",
            theirs.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    let (of, or) = values(&ours);
    let (tf, tr) = values(&theirs);
    assert_eq!(of, tf, "header values differ from bmaptool create");
    assert_eq!(or, tr, "block ranges differ from bmaptool create");
    assert!(or.len() >= 3, "{or:?}");

    // bmaptool copy verifies the bmap file checksum and every range checksum.
    let out = dir.path().join("copy.img");
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            ours.to_str().unwrap(),
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap(),
        "copied image differs"
    );

    // A tampered bmap is refused by bmaptool.
    let text = std::fs::read_to_string(&ours)
        .unwrap()
        .replace("<ImageSize> ", "<ImageSize>  ");
    let bad = dir.path().join("bad.bmap");
    std::fs::write(&bad, text).unwrap();
    let out2 = dir.path().join("copy2.img");
    let r = run_status(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bad.to_str().unwrap(),
            img.to_str().unwrap(),
            out2.to_str().unwrap(),
        ],
    );
    assert!(
        !r.status.success(),
        "bmaptool accepted a bmap with a wrong checksum"
    );
}

#[test]
fn zstd_image_round_trips_and_flashes_with_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sd.img");
    sample_image(&img);
    let zst = dir.path().join("sd.img.zst");
    compress_zstd(&img, &zst, 3, &|_| {}).unwrap();
    let zst2 = dir.path().join("again.img.zst");
    compress_zstd(&img, &zst2, 3, &|_| {}).unwrap();
    assert!(
        std::fs::read(&zst).unwrap() == std::fs::read(&zst2).unwrap(),
        "zstd output not deterministic"
    );
    let back = dir.path().join("back.img");
    run(
        "zstd",
        &[
            "-q",
            "-d",
            "-c",
            zst.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&img).unwrap());

    let bmap = dir.path().join("sd.img.bmap");
    write_bmap(&img, &bmap, &|_| {}).unwrap();
    let out = dir.path().join("flashed.img");
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            zst.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
}
