//! Determinism, placement at an offset, sparseness and clean errors.

use std::io::{Cursor, Read};
use std::os::unix::fs::MetadataExt;

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Options, Ext4Writer, FeatureLevel};
use hc1img::tree::{FileData, Node, NodeKind};

/// Build a small but varied filesystem into `name`; returns its path.
fn build(dir: &std::path::Path, name: &str, o: &Ext4Options, offset: u64) -> std::path::PathBuf {
    let (img, f) = image(dir, name, o.size + offset);
    let mut w = Ext4Writer::create(f, offset, o).unwrap();
    let mut t = empty_tree();
    let pm = meta(0o755);
    for i in 0..50u32 {
        let len = u64::from(i) * 1000 + 1;
        let data: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
        let r = w.write_data(&mut Cursor::new(data), len).unwrap();
        let mut m = meta(0o644);
        m.xattrs.insert(
            format!("user.n{i}").into_bytes(),
            vec![i as u8; i as usize * 10],
        );
        t.insert(
            format!("d{}/f{i}", i % 4).as_bytes(),
            Node {
                meta: m,
                kind: NodeKind::File(FileData::Stored(r)),
            },
            &pm,
        )
        .unwrap();
    }
    for i in 0..300 {
        t.insert(
            format!("many/entry{i}").as_bytes(),
            Node {
                meta: meta(0o644),
                kind: NodeKind::Symlink(format!("target/{i}").into_bytes()),
            },
            &pm,
        )
        .unwrap();
    }
    w.finish(&t).unwrap();
    img
}

#[test]
fn same_inputs_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for level in [FeatureLevel::Full, FeatureLevel::Conservative] {
        let o = opts(96 << 20, level);
        let a = build(dir.path(), "a.img", &o, 0);
        let b = build(dir.path(), "b.img", &o, 0);
        e2fsck_clean(&a);
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(x == y, "two builds from the same inputs differ");
        // And the options matter: another UUID gives other bytes.
        let mut o2 = o.clone();
        o2.uuid[0] ^= 1;
        let c = build(dir.path(), "c.img", &o2, 0);
        assert!(std::fs::read(&c).unwrap() != x);
    }
}

#[test]
fn filesystem_at_an_offset_leaves_the_rest_alone() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(64 << 20, FeatureLevel::Full);
    let offset = 1 << 20;
    let img = build(dir.path(), "off.img", &o, offset);
    let all = std::fs::read(&img).unwrap();
    assert!(
        all[..offset as usize].iter().all(|&b| b == 0),
        "bytes before the offset were written"
    );
    let part = dir.path().join("part.img");
    std::fs::write(&part, &all[offset as usize..]).unwrap();
    e2fsck_clean(&part);
}

#[test]
fn unused_space_stays_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(2 << 30, FeatureLevel::Full);
    let img = build(dir.path(), "sparse.img", &o, 0);
    e2fsck_clean(&img);
    let allocated = std::fs::metadata(&img).unwrap().blocks() * 512;
    // ~1.3 MiB of file data plus a little metadata; the 2 GiB of inode tables and the
    // 32 MiB journal are never written.
    assert!(
        allocated < 4 << 20,
        "{allocated} bytes allocated for a 2 GiB image"
    );
}

#[test]
fn full_filesystem_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(16 << 20, FeatureLevel::Full);
    let (_img, f) = image(dir.path(), "full.img", o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let len = 20u64 << 20;
    let err = w
        .write_data(&mut std::io::repeat(1).take(len), len)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("filesystem full") && err.contains("increase the rootfs size"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    // The writer is still usable after the refusal.
    let before = w.free_bytes();
    assert!(before > 0 && before < len);
    let r = w.write_data(&mut Cursor::new(vec![1u8; 10]), 10).unwrap();
    assert_eq!(r.size, 10);
    assert_eq!(w.free_bytes(), before - 4096);

    // Metadata that no longer fits at finish time is an error too, not a panic.
    let (_img2, f2) = image(dir.path(), "full2.img", o.size);
    let mut w = Ext4Writer::create(f2, 0, &o).unwrap();
    let mut left = 0u64;
    let mut stored = Vec::new();
    loop {
        let n = 1u64 << 20;
        match w.write_data(&mut std::io::repeat(2).take(n), n) {
            Ok(r) => {
                left += n;
                stored.push(r);
            }
            Err(_) => break,
        }
    }
    while let Ok(r) = w.write_data(&mut std::io::repeat(3).take(4096), 4096) {
        stored.push(r);
    }
    assert!(left > 0);
    let mut t = empty_tree();
    // The data is the tree's (data no node refers to would be free again at finish).
    for (i, r) in stored.into_iter().enumerate() {
        t.insert(
            format!("f{i}").as_bytes(),
            Node {
                meta: meta(0o644),
                kind: NodeKind::File(FileData::Stored(r)),
            },
            &meta(0o755),
        )
        .unwrap();
    }
    for i in 0..200 {
        t.insert(
            format!("d{i}/x").as_bytes(),
            Node {
                meta: meta(0o644),
                kind: NodeKind::Fifo,
            },
            &meta(0o755),
        )
        .unwrap();
    }
    let err = w.finish(&t).unwrap_err().to_string();
    assert!(
        err.contains("filesystem full") && err.contains("increase the rootfs size"),
        "{err}"
    );
}

#[test]
fn short_source_and_bad_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(16 << 20, FeatureLevel::Full);
    let (_img, f) = image(dir.path(), "short.img", o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let err = w
        .write_data(&mut Cursor::new(vec![0u8; 100]), 5000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ended early") && err.contains("5000"), "{err}");

    let mut bad = opts(16 << 20, FeatureLevel::Full);
    bad.label = "x".repeat(17);
    let (_i, f) = image(dir.path(), "bad.img", bad.size);
    assert!(Ext4Writer::create(f, 0, &bad).is_err());
    let mut bad = opts(16 << 20, FeatureLevel::Full);
    bad.journal_blocks = Some(10);
    let (_i, f) = image(dir.path(), "bad2.img", bad.size);
    let err = Ext4Writer::create(f, 0, &bad).err().unwrap().to_string();
    assert!(err.contains("journal"), "{err}");

    // Too many inodes for the tree.
    let mut few = opts(16 << 20, FeatureLevel::Full);
    few.bytes_per_inode = 1 << 20;
    let (_i, f) = image(dir.path(), "few.img", few.size);
    let w = Ext4Writer::create(f, 0, &few).unwrap();
    let mut t = empty_tree();
    for i in 0..100 {
        t.insert(
            format!("f{i}").as_bytes(),
            Node {
                meta: meta(0o644),
                kind: NodeKind::Socket,
            },
            &meta(0o755),
        )
        .unwrap();
    }
    let err = w.finish(&t).unwrap_err().to_string();
    assert!(err.contains("inodes"), "{err}");
}

#[test]
fn tiny_filesystem_without_journal() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(4 << 20, FeatureLevel::Full);
    let img = build(
        dir.path(),
        "tiny.img",
        &Ext4Options { size: 6 << 20, ..o },
        0,
    );
    e2fsck_clean(&img);
    let s = debugfs(&img, "stats");
    assert!(!s.contains("has_journal"), "{s}");
}

#[test]
fn lost_and_found_from_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(32 << 20, FeatureLevel::Full);
    // A tree that brings its own lost+found keeps it (and gets no second one).
    let (img, f) = image(dir.path(), "lpf.img", o.size);
    let w = Ext4Writer::create(f, 0, &o).unwrap();
    let mut t = empty_tree();
    t.insert(b"lost+found", dir_node(0o700), &meta(0o755))
        .unwrap();
    t.insert(
        b"a",
        Node {
            meta: meta(0o644),
            kind: NodeKind::Fifo,
        },
        &meta(0o755),
    )
    .unwrap();
    w.finish(&t).unwrap();
    e2fsck_clean(&img);
    let s = debugfs(&img, "ls -l /");
    assert_eq!(s.matches("lost+found").count(), 1, "{s}");
    let s = debugfs(&img, "stat /a");
    assert!(s.contains("Inode: 11 "), "walk order numbers from 11: {s}");

    // A lost+found that is not a directory is refused.
    let (_img, f) = image(dir.path(), "lpf2.img", o.size);
    let w = Ext4Writer::create(f, 0, &o).unwrap();
    let mut t = empty_tree();
    t.insert(
        b"lost+found",
        Node {
            meta: meta(0o644),
            kind: NodeKind::Fifo,
        },
        &meta(0o755),
    )
    .unwrap();
    let err = w.finish(&t).unwrap_err().to_string();
    assert!(err.contains("lost+found"), "{err}");
}

#[test]
fn data_refs_not_made_by_this_writer_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(32 << 20, FeatureLevel::Full);
    let (_img, f) = image(dir.path(), "forged.img", o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let real = w.write_data(&mut Cursor::new(vec![5u8; 100]), 100).unwrap();
    let mut t = empty_tree();
    let forged = hc1img::tree::DataRef {
        size: 4096,
        runs: vec![hc1img::tree::BlockRun {
            start: real.runs[0].start + 100,
            len: 1,
        }],
    };
    t.insert(
        b"a",
        Node {
            meta: meta(0o644),
            kind: NodeKind::File(FileData::Stored(real.clone())),
        },
        &meta(0o755),
    )
    .unwrap();
    t.insert(
        b"b",
        Node {
            meta: meta(0o644),
            kind: NodeKind::File(FileData::Stored(forged)),
        },
        &meta(0o755),
    )
    .unwrap();
    let err = w.finish(&t).unwrap_err().to_string();
    assert!(err.contains("/b") && err.contains("DataRef"), "{err}");

    // The same blocks claimed by two different nodes.
    let (_img, f) = image(dir.path(), "twice.img", o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let real = w.write_data(&mut Cursor::new(vec![5u8; 100]), 100).unwrap();
    let mut t = empty_tree();
    for n in ["a", "b"] {
        t.insert(
            n.as_bytes(),
            Node {
                meta: meta(0o644),
                kind: NodeKind::File(FileData::Stored(real.clone())),
            },
            &meta(0o755),
        )
        .unwrap();
    }
    let err = w.finish(&t).unwrap_err().to_string();
    assert!(err.contains("used twice"), "{err}");
}

/// Freed blocks (issue 26 item 3): a file replaced in the tree gives its blocks back at
/// `reclaim`, unless a hard link or a copy of its node still names them; later writes reuse
/// them once the untouched blocks are used up; `e2fsck` is clean and every file reads back
/// (debugfs) as written, the ones in reused blocks included.
#[test]
fn replaced_files_give_their_blocks_back_but_not_while_a_link_or_copy_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(16 << 20, FeatureLevel::Full);
    let (img, f) = image(dir.path(), "reuse.img", o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let mut t = empty_tree();
    let pm = meta(0o755);
    let mb = 1u64 << 20;
    let fill = |b: u8| vec![b; mb as usize];
    let put = |w: &mut Ext4Writer, t: &mut hc1img::tree::Tree, path: &str, b: u8| {
        let r = w.write_data(&mut Cursor::new(fill(b)), mb).unwrap();
        t.insert(
            path.as_bytes(),
            Node {
                meta: meta(0o644),
                kind: NodeKind::File(FileData::Stored(r)),
            },
            &pm,
        )
        .unwrap();
    };
    put(&mut w, &mut t, "a", 1);
    put(&mut w, &mut t, "b", 2);
    put(&mut w, &mut t, "c", 3);
    t.link(b"a-link", b"a", &pm).unwrap();
    let b_node = t.node(t.lookup(b"b").unwrap()).clone();
    t.insert(b"b-copy", b_node, &pm).unwrap();
    // Replace all three: only c's megabyte is free (a is still linked, b copied).
    put(&mut w, &mut t, "a", 4);
    put(&mut w, &mut t, "b", 5);
    put(&mut w, &mut t, "c", 6);
    assert_eq!(w.reclaim(&t).unwrap(), 256);
    // Now drop the link and the copy: a's and b's first versions are free too.
    t.remove(b"a-link");
    t.remove(b"b-copy");
    assert_eq!(w.reclaim(&t).unwrap(), 512);
    assert_eq!(w.reclaim(&t).unwrap(), 0, "nothing is freed twice");
    // Nearly fill the filesystem (a megabyte stays for the directories): more than the
    // untouched blocks, so the freed ones are reused.
    let free = w.free_bytes() / mb - 1;
    assert!(free > 3);
    for i in 0..free {
        put(&mut w, &mut t, &format!("fill/{i}"), 7 + i as u8);
    }
    w.finish(&t).unwrap();
    e2fsck_clean(&img);
    for (path, b) in [("a", 4), ("b", 5), ("c", 6)] {
        assert_eq!(debugfs_dump(&img, path, &dir.path().join("out")), fill(b));
    }
    for i in 0..free {
        let got = debugfs_dump(&img, &format!("fill/{i}"), &dir.path().join("out"));
        assert!(got == fill(7 + i as u8), "fill/{i} does not read back");
    }
    // The last file went where the first versions were: before the second version of a.
    let block = |path: &str| -> u64 {
        let out = debugfs(&img, &format!("bmap /{path} 0"));
        out.trim().parse().unwrap()
    };
    let (last, a) = (block(&format!("fill/{}", free - 1)), block("a"));
    assert!(last < a, "fill/{} at block {last}, a at {a}", free - 1);
}
