//! Geometry against the reference: for the same size and inode ratio, mke2fs must choose the
//! same block count, inodes per group and the same places for every group's block bitmap,
//! inode bitmap and inode table (flex_bg packing), as dumpe2fs reports them.

use std::path::Path;
use std::process::Command;

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Writer, FeatureLevel};

fn dumpe2fs(img: &Path) -> String {
    let out = Command::new("/usr/sbin/dumpe2fs")
        .arg(img)
        .output()
        .unwrap_or_else(|e| panic!("dumpe2fs (e2fsprogs) is required: {e}"));
    assert!(out.status.success(), "dumpe2fs failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The geometry lines of a dumpe2fs listing.
fn geometry(dump: &str) -> Vec<String> {
    dump.lines()
        .filter(|l| {
            l.starts_with("Block count:")
                || l.starts_with("Inode count:")
                || l.starts_with("Inodes per group:")
                || l.starts_with("Group descriptor size:")
                || l.contains("Block bitmap at")
                || l.contains("Inode bitmap at")
                || l.contains("Inode table at")
                || l.contains("superblock at")
        })
        .map(|l| {
            // Drop checksums, which differ with the contents.
            l.split(", csum").next().unwrap().trim().to_string()
        })
        .collect()
}

/// dumpe2fs header lines that must read the same for our filesystem and mke2fs'.
const HEADER_KEYS: [&str; 30] = [
    "Filesystem features:",
    "Default mount options:",
    "Filesystem state:",
    "Errors behavior:",
    "Filesystem OS type:",
    "Inode count:",
    "Block count:",
    "Reserved block count:",
    "First block:",
    "Block size:",
    "Fragment size:",
    "Group descriptor size:",
    "Blocks per group:",
    "Fragments per group:",
    "Inodes per group:",
    "Inode blocks per group:",
    "Flex block group size:",
    "Mount count:",
    "Maximum mount count:",
    "Check interval:",
    "Reserved blocks uid:",
    "Reserved blocks gid:",
    "First inode:",
    "Inode size:",
    "Required extra isize:",
    "Desired extra isize:",
    "Journal inode:",
    "Default directory hash:",
    "Journal backup:",
    "Total journal blocks:",
];

#[test]
fn group_layout_matches_mke2fs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(u64, FeatureLevel); 6] = [
        (64 << 20, FeatureLevel::Full),
        (300 << 20, FeatureLevel::Full),
        ((4 * 32768 + 100) * 4096, FeatureLevel::Full),
        (2100 << 20, FeatureLevel::Full),
        (5200 << 20, FeatureLevel::Full),
        (5200 << 20, FeatureLevel::Conservative),
    ];
    for (size, level) in cases {
        let ours = dir.path().join("ours.img");
        let theirs = dir.path().join("theirs.img");
        let (_, f) = image(dir.path(), "ours.img", size);
        let o = opts(size, level);
        Ext4Writer::create(f, 0, &o)
            .unwrap()
            .finish(&empty_tree())
            .unwrap();
        e2fsck_clean(&ours);
        let (_, f) = image(dir.path(), "theirs.img", size);
        drop(f);
        let features = match level {
            FeatureLevel::Full => "^resize_inode,^orphan_file,^metadata_csum_seed",
            FeatureLevel::Conservative => {
                "^resize_inode,^orphan_file,^metadata_csum_seed,^metadata_csum,^64bit,uninit_bg"
            }
        };
        let st = Command::new("/usr/sbin/mke2fs")
            .args([
                "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-i", "16384", "-O", features,
            ])
            .arg(&theirs)
            .status()
            .unwrap_or_else(|e| panic!("mke2fs (e2fsprogs) is required: {e}"));
        assert!(st.success());
        let (da, db) = (dumpe2fs(&ours), dumpe2fs(&theirs));
        // Superblock defaults: the same as mke2fs chooses.
        for key in HEADER_KEYS {
            let pick = |d: &str| d.lines().find(|l| l.starts_with(key)).map(str::to_string);
            assert!(
                pick(&da).is_some() || key.starts_with("Group descriptor"),
                "{key}"
            );
            assert_eq!(pick(&da), pick(&db), "size {size} {level:?}");
        }
        let (a, b) = (geometry(&da), geometry(&db));
        assert!(a.len() > 4);
        if a != b {
            for (x, y) in a.iter().zip(&b) {
                if x != y {
                    panic!("size {size} {level:?}: ours `{x}` vs mke2fs `{y}`");
                }
            }
            panic!("size {size} {level:?}: {} lines vs {}", a.len(), b.len());
        }
    }
}
