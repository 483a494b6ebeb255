//! Every kind of entry, read back with debugfs after an e2fsck -fn clean bill of health.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Writer, FeatureLevel};
use hc1img::tree::{FileData, Meta, Node, NodeKind, Timestamp, Tree};

/// Deterministic pseudo-random bytes, generated on the fly (never held in memory).
struct Gen {
    pos: u64,
    len: u64,
    state: u64,
}

impl Gen {
    fn new(len: u64, seed: u64) -> Self {
        Gen {
            pos: 0,
            len,
            state: seed,
        }
    }
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.len - self.pos) as usize);
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn file_meta(perm: u16, uid: u32, gid: u32, sec: i64, nsec: u32) -> Meta {
    Meta::new(perm, uid, gid, Timestamp { sec, nsec })
}

struct Expect {
    path: String,
    kind: &'static str,
    mode: u16,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    mtime: Timestamp,
    links: u32,
}

fn bytes(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect()
}

fn stat_field<'a>(stat: &'a str, key: &str) -> &'a str {
    let i = stat
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in stat output:\n{stat}"));
    stat[i + key.len()..].split_whitespace().next().unwrap()
}

fn check_stat(img: &Path, e: &Expect) {
    let s = debugfs(img, &format!("stat \"{}\"", e.path));
    assert!(
        s.contains(&format!("Type: {}", e.kind)),
        "{}: type {}\n{s}",
        e.path,
        e.kind
    );
    assert_eq!(
        u16::from_str_radix(stat_field(&s, "Mode:"), 8).unwrap(),
        e.mode,
        "{}: mode",
        e.path
    );
    assert_eq!(
        stat_field(&s, "User:"),
        e.uid.to_string(),
        "{}: uid",
        e.path
    );
    assert_eq!(
        stat_field(&s, "Group:"),
        e.gid.to_string(),
        "{}: gid",
        e.path
    );
    assert_eq!(
        stat_field(&s, "Links:"),
        e.links.to_string(),
        "{}: links",
        e.path
    );
    if let Some(sz) = e.size {
        assert_eq!(stat_field(&s, "Size:"), sz.to_string(), "{}: size", e.path);
    }
    let want = format!("{:08x}:{:08x}", e.mtime.sec as u32, e.mtime.nsec << 2);
    assert_eq!(stat_field(&s, " mtime: 0x"), want, "{}: mtime", e.path);
}

#[test]
fn every_entry_type_reads_back() {
    every_entry_type(FeatureLevel::Full);
}

#[test]
fn every_entry_type_reads_back_conservative() {
    every_entry_type(FeatureLevel::Conservative);
}

fn every_entry_type(level: FeatureLevel) {
    let dir = tempfile::tempdir().unwrap();
    let size = 256 << 20;
    let (img, f) = image(dir.path(), "tree.img", size);
    let o = opts(size, level);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let pm = meta(0o755);
    let mut t = Tree::new(file_meta(0o755, 0, 0, TS - 5, 1));
    let mut expect: Vec<Expect> = Vec::new();
    let mut contents: Vec<(String, Vec<u8>)> = Vec::new();

    // Regular files of interesting sizes, streamed.
    for (name, n) in [("one", 1usize), ("page", 4096), ("page1", 4097)] {
        let data = bytes(n, n as u8);
        let r = w
            .write_data(&mut Cursor::new(data.clone()), n as u64)
            .unwrap();
        let m = file_meta(0o644, 1000, 1000, TS - 1000, 999_999_999);
        t.insert(
            format!("files/{name}").as_bytes(),
            Node {
                meta: m,
                kind: NodeKind::File(FileData::Stored(r)),
            },
            &pm,
        )
        .unwrap();
        expect.push(Expect {
            path: format!("/files/{name}"),
            kind: "regular",
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size: Some(n as u64),
            mtime: Timestamp {
                sec: TS - 1000,
                nsec: 999_999_999,
            },
            links: 1,
        });
        contents.push((format!("/files/{name}"), data));
    }
    // A 40 MiB file from a generator.
    let big_len = 40 << 20;
    let big = w.write_data(&mut Gen::new(big_len, 7), big_len).unwrap();
    t.insert(
        b"files/big",
        Node {
            meta: file_meta(0o600, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Stored(big)),
        },
        &pm,
    )
    .unwrap();
    // In-memory files: empty and small.
    t.insert(
        b"files/empty",
        Node {
            meta: file_meta(0o644, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Bytes(Vec::new())),
        },
        &pm,
    )
    .unwrap();
    expect.push(Expect {
        path: "/files/empty".into(),
        kind: "regular",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: Some(0),
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });
    let passwd = b"root:x:0:0::/root:/bin/bash\n".to_vec();
    t.insert(
        b"etc/passwd",
        Node {
            meta: file_meta(0o644, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Bytes(passwd.clone())),
        },
        &pm,
    )
    .unwrap();
    contents.push(("/etc/passwd".into(), passwd));
    let mem_big = bytes(3 * 4096 + 5, 3);
    t.insert(
        b"etc/membig",
        Node {
            meta: file_meta(0o644, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Bytes(mem_big.clone())),
        },
        &pm,
    )
    .unwrap();
    contents.push(("/etc/membig".into(), mem_big));

    // Names: 255 bytes, UTF-8, deep paths.
    let long = "n".repeat(255);
    t.insert(
        format!("names/{long}").as_bytes(),
        Node {
            meta: file_meta(0o640, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Bytes(b"long".to_vec())),
        },
        &pm,
    )
    .unwrap();
    contents.push((format!("/names/{long}"), b"long".to_vec()));
    t.insert(
        "names/grüße-日本語.txt".as_bytes(),
        Node {
            meta: file_meta(0o644, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Bytes(b"utf8".to_vec())),
        },
        &pm,
    )
    .unwrap();
    contents.push(("/names/grüße-日本語.txt".into(), b"utf8".to_vec()));
    let deep = (0..40)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    t.insert(
        format!("{deep}/leaf").as_bytes(),
        Node {
            meta: file_meta(0o644, 0, 0, TS, 0),
            kind: NodeKind::File(FileData::Bytes(b"deep".to_vec())),
        },
        &pm,
    )
    .unwrap();
    contents.push((format!("/{deep}/leaf"), b"deep".to_vec()));

    // Hard links: three names, one inode.
    let hl = bytes(5000, 9);
    t.insert(
        b"hl/one",
        Node {
            meta: file_meta(0o644, 5, 6, TS, 0),
            kind: NodeKind::File(FileData::Bytes(hl.clone())),
        },
        &pm,
    )
    .unwrap();
    t.link(b"hl/two", b"hl/one", &pm).unwrap();
    t.link(b"other/three", b"hl/one", &pm).unwrap();
    for p in ["/hl/one", "/hl/two", "/other/three"] {
        expect.push(Expect {
            path: p.into(),
            kind: "regular",
            mode: 0o644,
            uid: 5,
            gid: 6,
            size: Some(5000),
            mtime: Timestamp { sec: TS, nsec: 0 },
            links: 3,
        });
        contents.push((p.into(), hl.clone()));
    }

    // Symlinks.
    let long_target = format!("/{}", "t".repeat(200));
    t.insert(
        b"links/short",
        Node {
            meta: file_meta(0o777, 0, 0, TS, 5),
            kind: NodeKind::Symlink(b"../files/one".to_vec()),
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"links/long",
        Node {
            meta: file_meta(0o777, 0, 0, TS, 5),
            kind: NodeKind::Symlink(long_target.clone().into_bytes()),
        },
        &pm,
    )
    .unwrap();
    expect.push(Expect {
        path: "/links/short".into(),
        kind: "symlink",
        mode: 0o777,
        uid: 0,
        gid: 0,
        size: Some(12),
        mtime: Timestamp { sec: TS, nsec: 5 },
        links: 1,
    });
    expect.push(Expect {
        path: "/links/long".into(),
        kind: "symlink",
        mode: 0o777,
        uid: 0,
        gid: 0,
        size: Some(201),
        mtime: Timestamp { sec: TS, nsec: 5 },
        links: 1,
    });

    // Devices, fifo, socket.
    t.insert(
        b"dev/null",
        Node {
            meta: file_meta(0o666, 0, 0, TS, 0),
            kind: NodeKind::CharDev { major: 1, minor: 3 },
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"dev/sda1",
        Node {
            meta: file_meta(0o660, 0, 6, TS, 0),
            kind: NodeKind::BlockDev { major: 8, minor: 1 },
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"dev/bignum",
        Node {
            meta: file_meta(0o600, 0, 0, TS, 0),
            kind: NodeKind::CharDev {
                major: 300,
                minor: 70000,
            },
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"dev/fifo",
        Node {
            meta: file_meta(0o644, 0, 0, TS, 0),
            kind: NodeKind::Fifo,
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"dev/sock",
        Node {
            meta: file_meta(0o755, 0, 0, TS, 0),
            kind: NodeKind::Socket,
        },
        &pm,
    )
    .unwrap();
    expect.push(Expect {
        path: "/dev/null".into(),
        kind: "character special",
        mode: 0o666,
        uid: 0,
        gid: 0,
        size: None,
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });
    expect.push(Expect {
        path: "/dev/sda1".into(),
        kind: "block special",
        mode: 0o660,
        uid: 0,
        gid: 6,
        size: None,
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });
    expect.push(Expect {
        path: "/dev/fifo".into(),
        kind: "FIFO",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: Some(0),
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });
    expect.push(Expect {
        path: "/dev/sock".into(),
        kind: "socket",
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: Some(0),
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });

    // Ownership beyond 16 bits, setuid/setgid/sticky.
    t.insert(
        b"perm/suid",
        Node {
            meta: file_meta(0o4755, 100_000, 200_000, TS, 0),
            kind: NodeKind::File(FileData::Bytes(b"#!/bin/sh\n".to_vec())),
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"perm/sgid",
        Node {
            meta: file_meta(0o2755, 65536, 70_000, TS, 0),
            kind: NodeKind::File(FileData::Bytes(Vec::new())),
        },
        &pm,
    )
    .unwrap();
    t.insert(
        b"perm/tmp",
        Node {
            meta: file_meta(0o1777, 0, 0, TS, 0),
            kind: NodeKind::Dir(BTreeMap::new()),
        },
        &pm,
    )
    .unwrap();
    expect.push(Expect {
        path: "/perm/suid".into(),
        kind: "regular",
        mode: 0o4755,
        uid: 100_000,
        gid: 200_000,
        size: Some(10),
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });
    expect.push(Expect {
        path: "/perm/sgid".into(),
        kind: "regular",
        mode: 0o2755,
        uid: 65536,
        gid: 70_000,
        size: Some(0),
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 1,
    });
    expect.push(Expect {
        path: "/perm/tmp".into(),
        kind: "directory",
        mode: 0o1777,
        uid: 0,
        gid: 0,
        size: Some(4096),
        mtime: Timestamp { sec: TS, nsec: 0 },
        links: 2,
    });

    // Extended attributes: small (in the inode), big (xattr block), capability, ACL.
    let mut xm = file_meta(0o755, 0, 0, TS, 0);
    xm.xattrs.insert(b"user.small".to_vec(), b"v".to_vec());
    xm.xattrs.insert(b"user.empty".to_vec(), Vec::new());
    xm.xattrs.insert(b"trusted.t".to_vec(), b"tv".to_vec());
    xm.xattrs.insert(b"user.big".to_vec(), vec![b'x'; 3000]);
    // VFS cap v2: magic_etc, permitted lo/hi, inheritable lo/hi (cap_net_raw).
    let mut cap = Vec::new();
    for v in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        cap.extend_from_slice(&v.to_le_bytes());
    }
    xm.xattrs.insert(b"security.capability".to_vec(), cap);
    t.insert(
        b"xattr/ping",
        Node {
            meta: xm,
            kind: NodeKind::File(FileData::Bytes(b"ELF".to_vec())),
        },
        &pm,
    )
    .unwrap();
    let mut am = file_meta(0o750, 0, 0, TS, 0);
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 5, 1000),
        (4, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    am.xattrs.insert(b"system.posix_acl_access".to_vec(), acl);
    am.xattrs
        .insert(b"user.only".to_vec(), b"in-inode".to_vec());
    t.insert(
        b"xattr/acl",
        Node {
            meta: am,
            kind: NodeKind::Dir(BTreeMap::new()),
        },
        &pm,
    )
    .unwrap();

    let stats = w.finish(&t).unwrap();
    e2fsck_clean(&img);
    assert_eq!(stats.blocks_total, size / 4096);
    assert_eq!(stats.journal_blocks, 4096);
    let sb = debugfs(&img, "stats");
    for (k, v) in [
        ("Free blocks:", stats.blocks_free),
        ("Free inodes:", stats.inodes_free),
        ("Inode count:", stats.inodes_total),
    ] {
        assert_eq!(stat_field(&sb, k), v.to_string(), "{k}\n{sb}");
    }

    for e in &expect {
        check_stat(&img, e);
    }
    // Contents.
    let out = dir.path().join("dump");
    for (p, data) in &contents {
        assert_eq!(
            &debugfs_dump(&img, &format!("\"{p}\""), &out),
            data,
            "{p}: content"
        );
    }
    let got = debugfs_dump(&img, "/files/big", &out);
    let mut want = Vec::new();
    Gen::new(big_len, 7).read_to_end(&mut want).unwrap();
    assert!(got == want, "/files/big: content differs");

    // Symlink targets.
    let s = debugfs(&img, "stat /links/short");
    assert!(s.contains("Fast link dest: \"../files/one\""), "{s}");
    let target = debugfs_dump(&img, "/links/long", &out);
    assert_eq!(target, long_target.as_bytes());

    // Device numbers.
    let s = debugfs(&img, "stat /dev/null");
    assert!(s.contains("Device major/minor number: 01:03"), "{s}");
    let s = debugfs(&img, "stat /dev/sda1");
    assert!(s.contains("Device major/minor number: 08:01"), "{s}");
    let s = debugfs(&img, "stat /dev/bignum");
    assert!(s.contains("Device major/minor number: 300:70000"), "{s}");

    // Xattrs.
    let s = debugfs(&img, "ea_list /xattr/ping");
    assert!(s.contains("user.small (1) = \"v\""), "{s}");
    assert!(s.contains("user.big (3000)"), "{s}");
    assert!(s.contains("security.capability (20)"), "{s}");
    let s = debugfs(&img, "stat /xattr/ping");
    assert_ne!(
        stat_field(&s, "File ACL:"),
        "0",
        "big xattr should live in a block:\n{s}"
    );
    // One data block plus the xattr block, in 512-byte units.
    assert_eq!(stat_field(&s, "Blockcount:"), "16", "{s}");
    let s = debugfs(&img, "ea_list /xattr/ping");
    assert!(s.contains("user.empty (0)"), "{s}");
    assert!(s.contains("trusted.t (2) = \"tv\""), "{s}");
    let s = debugfs(&img, "ea_get /xattr/ping user.big");
    assert!(s.contains(&"x".repeat(100)), "{s}");
    let s = debugfs(&img, "ea_list /xattr/acl");
    assert!(s.contains("user.only (8) = \"in-inode\""), "{s}");
    // Stored in ext4's compact ACL form (version 1; ids only for named users/groups).
    assert!(
        s.contains("system.posix_acl_access (28) = 01 00 00 00 01 00 07 00 02 00 05 00 e8 03 00 00 04 00 05 00 10 00 05 00 20 00 00 00"),
        "{s}"
    );

    // Directory listing and lost+found.
    let s = debugfs(&img, "ls -l /");
    for n in [
        "lost+found",
        "files",
        "etc",
        "names",
        "hl",
        "links",
        "dev",
        "perm",
        "xattr",
    ] {
        assert!(s.contains(n), "{n} missing from /:\n{s}");
    }
    let s = debugfs(&img, "stat /lost+found");
    assert!(s.contains("Inode: 11 "), "{s}");
    let s = debugfs(&img, "ls -l /names");
    assert!(s.contains(&long), "{s}");
}
