//! An independent reader: the `ext4-view` crate (which verifies metadata checksums, follows
//! extent trees and htree lookups) must see exactly the tree that was written.

use std::collections::HashMap;
use std::io::Cursor;

use crate::ext4_util::*;
use ext4_view::Ext4;
use hc1img::ext4::{Ext4Writer, FeatureLevel};
use hc1img::tree::{BlockRun, DataRef, FileData, Meta, Node, NodeId, NodeKind, Timestamp, Tree};

fn m(perm: u16, uid: u32, gid: u32, nsec: u32) -> Meta {
    Meta::new(
        perm,
        uid,
        gid,
        Timestamp {
            sec: TS - 3600,
            nsec,
        },
    )
}

fn check_level(level: FeatureLevel) {
    let dir = tempfile::tempdir().unwrap();
    let size = 128u64 << 20;
    let (img, f) = image(dir.path(), "view.img", size);
    let mut w = Ext4Writer::create(f, 0, &opts(size, level)).unwrap();
    let mut t = Tree::new(m(0o755, 0, 0, 0));
    let pm = m(0o755, 0, 0, 0);
    let mut data: HashMap<NodeId, Vec<u8>> = HashMap::new();

    // Streamed files, one fragmented across interleaved writes.
    let mut frag_runs: Vec<BlockRun> = Vec::new();
    let mut frag = Vec::new();
    for i in 0..12u32 {
        let chunk = vec![i as u8; 4096];
        frag_runs.extend(
            w.write_data(&mut Cursor::new(chunk.clone()), 4096)
                .unwrap()
                .runs,
        );
        frag.extend(chunk);
        let n = 1 + i as usize * 777;
        let body: Vec<u8> = (0..n).map(|k| (k * 13 + i as usize) as u8).collect();
        let r = w
            .write_data(&mut Cursor::new(body.clone()), n as u64)
            .unwrap();
        let id = t
            .insert(
                format!("usr/lib/f{i}").as_bytes(),
                Node {
                    meta: m(0o644, i, i * 2, i),
                    kind: NodeKind::File(FileData::Stored(r)),
                },
                &pm,
            )
            .unwrap();
        data.insert(id, body);
    }
    let id = t
        .insert(
            b"usr/lib/frag",
            Node {
                meta: m(0o644, 0, 0, 0),
                kind: NodeKind::File(FileData::Stored(DataRef {
                    size: frag.len() as u64,
                    runs: frag_runs,
                })),
            },
            &pm,
        )
        .unwrap();
    data.insert(id, frag);
    let id = t
        .insert(
            b"etc/hostname",
            Node {
                meta: m(0o644, 0, 0, 0),
                kind: NodeKind::File(FileData::Bytes(b"hc1\n".to_vec())),
            },
            &pm,
        )
        .unwrap();
    data.insert(id, b"hc1\n".to_vec());
    t.link(b"etc/hostname.bak", b"etc/hostname", &pm).unwrap();
    // A big directory (htree) of empty files and subdirectories.
    for i in 0..3000 {
        let kind = if i % 500 == 0 {
            NodeKind::Dir(Default::default())
        } else {
            NodeKind::File(FileData::Bytes(Vec::new()))
        };
        t.insert(
            format!("var/cache/entry-{i}").as_bytes(),
            Node {
                meta: m(0o640, 100_000 + i, 7, 0),
                kind,
            },
            &pm,
        )
        .unwrap();
    }
    t.insert(
        b"bin",
        Node {
            meta: m(0o777, 0, 0, 0),
            kind: NodeKind::Symlink(b"usr/bin".to_vec()),
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"usr/bin/long",
        Node {
            meta: m(0o777, 0, 0, 0),
            kind: NodeKind::Symlink(format!("/{0}/{0}", "z".repeat(149)).into_bytes()),
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"dev/console",
        Node {
            meta: m(0o600, 0, 5, 0),
            kind: NodeKind::CharDev { major: 5, minor: 1 },
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"dev/loop0",
        Node {
            meta: m(0o660, 0, 6, 0),
            kind: NodeKind::BlockDev { major: 7, minor: 0 },
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"run/fifo",
        Node {
            meta: m(0o600, 0, 0, 0),
            kind: NodeKind::Fifo,
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"run/sock",
        Node {
            meta: m(0o777, 0, 0, 0),
            kind: NodeKind::Socket,
        },
        &pm,
    )
    .unwrap();
    let mut xm = m(0o4755, 0, 0, 0);
    xm.xattrs.insert(b"user.big".to_vec(), vec![7u8; 3000]);
    xm.xattrs.insert(
        b"security.selinux".to_vec(),
        b"system_u:object_r:bin_t:s0\0".to_vec(),
    );
    let id = t
        .insert(
            b"usr/bin/sudo",
            Node {
                meta: xm,
                kind: NodeKind::File(FileData::Bytes(vec![0x7f, b'E', b'L', b'F'])),
            },
            &pm,
        )
        .unwrap();
    data.insert(id, vec![0x7f, b'E', b'L', b'F']);

    w.finish(&t).unwrap();
    e2fsck_clean(&img);

    let checked = compare_with_ext4_view(&img, &t, &data);
    let fs = Ext4::load(Box::new(std::fs::File::open(&img).unwrap())).unwrap();
    assert!(checked > 3000);
    // Lookups by name through the htree.
    assert!(fs.exists("/var/cache/entry-2999").unwrap());
    assert!(!fs.exists("/var/cache/entry-3000").unwrap());
}

#[test]
fn ext4_view_reads_back_the_tree() {
    check_level(FeatureLevel::Full);
}

#[test]
fn ext4_view_reads_back_the_tree_conservative() {
    check_level(FeatureLevel::Conservative);
}
