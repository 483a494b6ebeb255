//! Smallest useful filesystem: root, lost+found, one file, the journal; checked by e2fsck.

use std::io::Cursor;

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Writer, FeatureLevel};
use hc1img::tree::{FileData, Node, NodeKind};

#[test]
fn minimal_filesystem_is_e2fsck_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (img, f) = image(dir.path(), "min.img", 64 << 20);
    let o = opts(64 << 20, FeatureLevel::Full);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let data = b"hello ext4\n".to_vec();
    let r = w
        .write_data(&mut Cursor::new(data.clone()), data.len() as u64)
        .unwrap();
    let mut t = empty_tree();
    t.insert(
        b"hello.txt",
        Node {
            meta: meta(0o644),
            kind: NodeKind::File(FileData::Stored(r)),
        },
        &meta(0o755),
    )
    .unwrap();
    let stats = w.finish(&t).unwrap();
    assert_eq!(stats.block_size, 4096);
    e2fsck_clean(&img);
    let out = debugfs_dump(&img, "/hello.txt", &dir.path().join("out"));
    assert_eq!(out, data);
}

#[test]
fn blocks_of_replaced_files_are_left_free() {
    let dir = tempfile::tempdir().unwrap();
    let (img, f) = image(dir.path(), "repl.img", 64 << 20);
    let o = opts(64 << 20, FeatureLevel::Full);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let old = vec![1u8; 1 << 20];
    let _dropped = w.write_data(&mut Cursor::new(old), 1 << 20).unwrap();
    let new = b"second version".to_vec();
    let r = w
        .write_data(&mut Cursor::new(new.clone()), new.len() as u64)
        .unwrap();
    let mut t = empty_tree();
    t.insert(
        b"etc/conf",
        Node {
            meta: meta(0o644),
            kind: NodeKind::File(FileData::Stored(r)),
        },
        &meta(0o755),
    )
    .unwrap();
    let stats = w.finish(&t).unwrap();
    e2fsck_clean(&img);
    assert_eq!(
        debugfs_dump(&img, "/etc/conf", &dir.path().join("out")),
        new
    );
    // The 256 blocks of the dropped version count as free.
    let (_, f2) = image(dir.path(), "plain.img", 64 << 20);
    let mut w2 = Ext4Writer::create(f2, 0, &o).unwrap();
    let r2 = w2
        .write_data(&mut Cursor::new(new.clone()), new.len() as u64)
        .unwrap();
    let mut t2 = empty_tree();
    t2.insert(
        b"etc/conf",
        Node {
            meta: meta(0o644),
            kind: NodeKind::File(FileData::Stored(r2)),
        },
        &meta(0o755),
    )
    .unwrap();
    assert_eq!(w2.finish(&t2).unwrap().blocks_free, stats.blocks_free);
}
