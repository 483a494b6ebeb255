//! Large directories become hash-indexed (htree) and must satisfy e2fsck and debugfs.

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Options, Ext4Writer, FeatureLevel};
use hc1img::tree::{FileData, Node, NodeKind};

fn build(
    o: &Ext4Options,
    entries: usize,
    pad: usize,
    name: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (img, f) = image(dir.path(), name, o.size);
    let w = Ext4Writer::create(f, 0, o).unwrap();
    let mut t = empty_tree();
    let pm = meta(0o755);
    for i in 0..entries {
        let name = format!("big/entrée-日本-{i:06}-{}", "x".repeat(i % 40 + pad));
        let kind = if i % 1000 == 0 {
            NodeKind::Dir(Default::default())
        } else {
            NodeKind::File(FileData::Bytes(Vec::new()))
        };
        t.insert(
            name.as_bytes(),
            Node {
                meta: meta(0o644),
                kind,
            },
            &pm,
        )
        .unwrap();
    }
    w.finish(&t).unwrap();
    (dir, img)
}

fn htree_dump(img: &std::path::Path) -> String {
    // debugfs' htree dump tries to verify checksums even without metadata_csum and says so
    // on stderr (it does the same for directories e2fsck -D built); that line is harmless.
    debugfs_allowing(img, "htree /big", "does not have space for checksum")
}

fn check(img: &std::path::Path, entries: usize, pad: usize) {
    e2fsck_clean(img);
    let s = htree_dump(img);
    assert!(s.contains("Root node dump:"), "{}", &s[..s.len().min(2000)]);
    assert!(
        s.contains("Number of entries (count):"),
        "{}",
        &s[..s.len().min(2000)]
    );
    for l in s.lines() {
        assert!(
            !l.contains("Bad ") && !l.contains(" bad ") && !l.contains("invalid"),
            "{l}"
        );
    }
    let st = debugfs(img, "stat /big");
    assert!(
        st.contains("Flags: 0x81000"),
        "indexed+extents flags expected:\n{st}"
    );
    // Every name is found through the index (debugfs lookup uses the htree).
    for i in [0usize, 1, 999, 1000, 7777, entries - 1] {
        let name = format!("/big/entrée-日本-{i:06}-{}", "x".repeat(i % 40 + pad));
        let s = debugfs(img, &format!("stat {name}"));
        assert!(s.contains("Inode:"), "{name}: {s}");
    }
    let ls = debugfs(img, "ls /big");
    assert_eq!(ls.matches("entr").count(), entries);
}

#[test]
fn twenty_thousand_entry_directory_is_indexed() {
    let mut o = opts(256 << 20, FeatureLevel::Full);
    o.min_inodes = 25_000;
    let (_d, img) = build(&o, 20_000, 0, "htree.img");
    check(&img, 20_000, 0);
    let s = htree_dump(&img);
    assert!(
        s.contains("Indirect levels: 0"),
        "{}",
        &s[..s.len().min(2000)]
    );
}

#[test]
fn two_level_htree_without_metadata_csum() {
    two_level(FeatureLevel::Conservative);
}

#[test]
fn two_level_htree_with_metadata_csum() {
    two_level(FeatureLevel::Full);
}

fn two_level(level: FeatureLevel) {
    // Long names, so that one root block cannot address every leaf.
    let mut o = opts(256 << 20, level);
    o.min_inodes = 14_000;
    let (_d, img) = build(&o, 12_000, 190, "htree2.img");
    check(&img, 12_000, 190);
    let s = htree_dump(&img);
    assert!(
        s.contains("Indirect levels: 1"),
        "{}",
        &s[..s.len().min(2000)]
    );
}

#[test]
fn more_than_65000_subdirectories_use_dir_nlink() {
    let mut o = opts(512 << 20, FeatureLevel::Full);
    o.min_inodes = 70_000;
    let dir = tempfile::tempdir().unwrap();
    let (img, f) = image(dir.path(), "nlink.img", o.size);
    let w = Ext4Writer::create(f, 0, &o).unwrap();
    let mut t = empty_tree();
    for i in 0..65_010 {
        t.insert(
            format!("many/{i}").as_bytes(),
            dir_node(0o755),
            &meta(0o755),
        )
        .unwrap();
    }
    w.finish(&t).unwrap();
    e2fsck_clean(&img);
    let s = debugfs(&img, "stat /many");
    // dir_nlink: a link count of 1 means "too many to count".
    assert!(s.contains("Links: 1 "), "{s}");
}
