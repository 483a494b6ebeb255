//! Random trees: whatever mix of names, kinds, sizes, links and xattrs, the filesystem is
//! e2fsck-clean and the independent ext4-view reader sees exactly the tree.

use std::collections::HashMap;
use std::io::Cursor;

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Writer, FeatureLevel};
use hc1img::tree::{FileData, Meta, Node, NodeId, NodeKind, Timestamp};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    Streamed(usize),
    InMemory(usize),
    Symlink(usize),
    Dev(u32, u32),
    Fifo,
    Link(usize),
}

#[derive(Clone, Debug)]
struct Entry {
    path: Vec<String>,
    kind: Kind,
    perm: u16,
    uid: u32,
    nsec: u32,
    xattrs: Vec<(u8, usize)>,
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[a-zA-Z0-9._-]{1,40}",
        Just("ü日本".to_string()),
        (200usize..=255).prop_map(|n| "L".repeat(n)),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Dir),
        (0usize..20_000).prop_map(Kind::Streamed),
        (0usize..9_000).prop_map(Kind::InMemory),
        (1usize..300).prop_map(Kind::Symlink),
        (0u32..4096, 0u32..0x10_0000).prop_map(|(a, b)| Kind::Dev(a, b)),
        Just(Kind::Fifo),
        (0usize..100).prop_map(Kind::Link),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop::collection::vec(name(), 1..4),
        kind(),
        0u16..0o7777,
        prop_oneof![Just(0u32), 1u32..70_000, Just(u32::MAX - 1)],
        0u32..1_000_000_000,
        prop::collection::vec((0u8..4, 0usize..1500), 0..3),
    )
        .prop_map(|(path, kind, perm, uid, nsec, xattrs)| Entry {
            path,
            kind,
            perm,
            uid,
            nsec,
            xattrs,
        })
}

fn body(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + salt) as u8).collect()
}

fn run(entries: &[Entry], level: FeatureLevel) {
    let dir = tempfile::tempdir().unwrap();
    let size = 64u64 << 20;
    let (img, f) = image(dir.path(), "prop.img", size);
    let mut w = Ext4Writer::create(f, 0, &opts(size, level)).unwrap();
    let mut t = empty_tree();
    let pm = meta(0o755);
    let mut data: HashMap<NodeId, Vec<u8>> = HashMap::new();
    let mut files: Vec<String> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let path = e.path.join("/");
        let mut m = Meta::new(
            e.perm,
            e.uid,
            e.uid / 3,
            Timestamp {
                sec: TS - i as i64,
                nsec: e.nsec,
            },
        );
        for (k, (ns, len)) in e.xattrs.iter().enumerate() {
            let ns = ["user.", "trusted.", "security.", "user.long-name-"][*ns as usize];
            // Keep the total within one inode + one block.
            m.xattrs
                .insert(format!("{ns}a{k}").into_bytes(), body(*len, k));
        }
        let kind = match &e.kind {
            Kind::Dir => NodeKind::Dir(Default::default()),
            Kind::Streamed(n) => {
                let b = body(*n, i);
                let r = w.write_data(&mut Cursor::new(b), *n as u64).unwrap();
                NodeKind::File(FileData::Stored(r))
            }
            Kind::InMemory(n) => NodeKind::File(FileData::Bytes(body(*n, i))),
            Kind::Symlink(n) => {
                // Components stay short: ext4-view refuses components over 255 bytes.
                let mut target = "ab/".repeat(n / 3 + 1);
                target.truncate(*n);
                NodeKind::Symlink(target.into_bytes())
            }
            Kind::Dev(a, b) => NodeKind::CharDev {
                major: *a,
                minor: *b,
            },
            Kind::Fifo => NodeKind::Fifo,
            Kind::Link(k) => {
                if !files.is_empty() {
                    let target = files[k % files.len()].clone();
                    let _ = t.link(path.as_bytes(), target.as_bytes(), &pm);
                }
                continue;
            }
        };
        let expect = match &kind {
            NodeKind::File(FileData::Stored(_)) => {
                let Kind::Streamed(n) = e.kind else {
                    unreachable!()
                };
                Some(body(n, i))
            }
            NodeKind::File(FileData::Bytes(b)) => Some(b.clone()),
            _ => None,
        };
        if let Ok(id) = t.insert(path.as_bytes(), Node { meta: m, kind }, &pm)
            && let Some(b) = expect
        {
            data.insert(id, b);
            files.push(path);
        }
    }
    w.finish(&t).unwrap();
    e2fsck_clean(&img);
    let n = compare_with_ext4_view(&img, &t, &data);
    assert!(
        n > data.len(),
        "root plus every file must have been checked"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_are_clean_and_read_back(entries in prop::collection::vec(entry(), 1..60), csum in any::<bool>()) {
        let level = if csum { FeatureLevel::Full } else { FeatureLevel::Conservative };
        run(&entries, level);
    }
}
