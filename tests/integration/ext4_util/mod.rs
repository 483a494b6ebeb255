//! Shared helpers for the ext4 integration tests: building images with the public API and
//! running the real e2fsprogs oracles (`e2fsck`, `debugfs`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_view::{Ext4, Path as VPath};
use hc1img::ext4::{Ext4Options, FeatureLevel};
use hc1img::tree::{Meta, Node, NodeId, NodeKind, Timestamp, Tree};

pub const TS: i64 = 1_700_000_000;

pub fn opts(size: u64, features: FeatureLevel) -> Ext4Options {
    Ext4Options {
        size,
        bytes_per_inode: 16384,
        min_inodes: 0,
        features,
        uuid: *b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef",
        hash_seed: *b"\x11\x11\x11\x11\x22\x22\x33\x33\x44\x44\x55\x55\x55\x55\x55\x55",
        label: "hc1root".into(),
        timestamp: TS,
        journal_blocks: None,
    }
}

pub fn meta(perm: u16) -> Meta {
    Meta::new(
        perm,
        0,
        0,
        Timestamp {
            sec: TS - 100,
            nsec: 123_456_789,
        },
    )
}

pub fn empty_tree() -> Tree {
    Tree::new(meta(0o755))
}

pub fn dir_node(perm: u16) -> Node {
    Node {
        meta: meta(perm),
        kind: NodeKind::Dir(BTreeMap::new()),
    }
}

/// A fresh sparse image file of `size` bytes in `dir`.
pub fn image(dir: &Path, name: &str, size: u64) -> (PathBuf, File) {
    let p = dir.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(size).unwrap();
    (p, f)
}

fn tool(name: &str) -> Command {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return Command::new(p);
        }
    }
    panic!("required oracle tool `{name}` (e2fsprogs) is not installed; install e2fsprogs");
}

/// `e2fsck -fn`: must exit 0 and report nothing wrong.
pub fn e2fsck_clean(img: &Path) -> String {
    let out = tool("e2fsck").arg("-fn").arg(img).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn failed ({}):\n{text}",
        out.status
    );
    for bad in [
        "IGNORED", "Fix?", "fix?", "Clear?", "error", "Error", "invalid", "Invalid",
    ] {
        assert!(!text.contains(bad), "e2fsck -fn reported `{bad}`:\n{text}");
    }
    text
}

/// Run one debugfs request; returns stdout. Fails the test when debugfs reports errors.
pub fn debugfs(img: &Path, req: &str) -> String {
    let out = tool("debugfs")
        .arg("-R")
        .arg(req)
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs -R {req:?} failed: {:?}", out);
    let err = String::from_utf8_lossy(&out.stderr);
    let err_lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("debugfs ")).collect();
    assert!(err_lines.is_empty(), "debugfs -R {req:?} reported: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run debugfs with a dump request writing into `out`, return the bytes.
pub fn debugfs_dump(img: &Path, path: &str, out: &Path) -> Vec<u8> {
    debugfs(img, &format!("dump -p {path} {}", out.display()));
    std::fs::read(out).unwrap()
}

/// Like [`debugfs`], but tolerates stderr lines containing `allowed` (a known debugfs quirk,
/// e.g. its htree dump computing checksums on filesystems without metadata_csum).
pub fn debugfs_allowing(img: &Path, req: &str, allowed: &str) -> String {
    let out = tool("debugfs")
        .arg("-R")
        .arg(req)
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs -R {req:?} failed: {:?}", out);
    let err = String::from_utf8_lossy(&out.stderr);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty() && !l.contains(allowed))
        .collect();
    assert!(bad.is_empty(), "debugfs -R {req:?} reported: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Walk `t` and check every path with the independent `ext4-view` reader: type, mode, uid,
/// gid, mtime (with nanoseconds), directory entries, file size and content (`data` holds the
/// expected bytes of each regular file node; missing = empty) and symlink targets.
/// Returns the number of paths checked.
pub fn compare_with_ext4_view(img: &Path, t: &Tree, data: &HashMap<NodeId, Vec<u8>>) -> usize {
    let fs = Ext4::load(Box::new(std::fs::File::open(img).unwrap())).unwrap();
    let mut checked = 0;
    t.walk(|path, _parent, id| {
        let p = [b"/".as_slice(), path].concat();
        let vp = VPath::new(&p);
        let node = t.node(id);
        let md = fs
            .symlink_metadata(vp)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&p)));
        let shown = String::from_utf8_lossy(&p).into_owned();
        assert_eq!(md.mode(), node.meta.perm, "{shown}: mode");
        assert_eq!(md.uid(), node.meta.uid, "{shown}: uid");
        assert_eq!(md.gid(), node.meta.gid, "{shown}: gid");
        assert_eq!(
            md.modified().seconds(),
            node.meta.mtime.sec,
            "{shown}: mtime"
        );
        assert_eq!(
            md.modified().nanoseconds(),
            node.meta.mtime.nsec,
            "{shown}: mtime nsec"
        );
        let ft = md.file_type();
        match &node.kind {
            NodeKind::Dir(children) => {
                assert!(ft.is_dir(), "{shown}");
                let got: BTreeSet<Vec<u8>> = fs
                    .read_dir(vp)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().as_ref().to_vec())
                    .filter(|n| n != b"." && n != b"..")
                    .collect();
                let mut want: BTreeSet<Vec<u8>> = children.keys().cloned().collect();
                if id == Tree::ROOT {
                    want.insert(b"lost+found".to_vec());
                }
                assert_eq!(got, want, "{shown}: entries");
            }
            NodeKind::File(fd) => {
                assert!(ft.is_regular_file(), "{shown}");
                assert_eq!(md.len(), fd.size(), "{shown}: size");
                let want = data.get(&id).cloned().unwrap_or_default();
                assert!(fs.read(vp).unwrap() == want, "{shown}: content");
            }
            NodeKind::Symlink(target) => {
                assert!(ft.is_symlink(), "{shown}");
                assert_eq!(
                    fs.read_link(vp).unwrap().as_ref(),
                    target.as_slice(),
                    "{shown}: target"
                );
            }
            NodeKind::CharDev { .. } => assert!(ft.is_char_dev(), "{shown}"),
            NodeKind::BlockDev { .. } => assert!(ft.is_block_dev(), "{shown}"),
            NodeKind::Fifo => assert!(ft.is_fifo(), "{shown}"),
            NodeKind::Socket => assert!(ft.is_socket(), "{shown}"),
        }
        checked += 1;
    });
    checked
}
