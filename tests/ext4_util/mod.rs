//! Shared helpers for the ext4 integration tests: building images with the public API and
//! running the real e2fsprogs oracles (`e2fsck`, `debugfs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use hc1img::ext4::{Ext4Options, FeatureLevel};
use hc1img::tree::{Meta, Node, NodeKind, Timestamp, Tree};

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
