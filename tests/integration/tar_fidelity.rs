//! Tar fidelity where the root tarball and the packages meet the importer
//! (src/rootfs/import.rs, the one `import_with` both go through): POSIX ACLs from bsdtar's
//! `SCHILY.acl.*` records (src/rootfs/acl.rs), GNU tar's sparse members in all four formats
//! (src/rootfs/sparse.rs), and pre-1970 times in GNU base-256 headers. Every archive is made
//! by the real tool (bsdtar, GNU tar, with `setfacl`, `truncate`, `touch`), imported into an
//! image by the library (one through a whole `hc1img build`), and checked with e2fsprogs: `e2fsck -fn`, `debugfs` (`ea_get` both
//! raw and decoded, `dump`, `stat`), against `getfacl` on the source and against the image
//! `mkfs.ext4 -d` makes of the same directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Writer, FeatureLevel};
use hc1img::rootfs::import::{ImportReport, Route, import};
use hc1img::tree::Tree;

/// Run `tool` with `args` in `cwd`; its stdout. A missing tool fails the test.
fn run_in(cwd: &Path, tool: &str, args: &[&str]) -> String {
    let o = Command::new(tool)
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("required oracle tool `{tool}` cannot run: {e}"));
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Import the tar file `tar` into a fresh 64 MiB image at `dir/name` (`e2fsck -fn` clean).
fn image_of(dir: &Path, name: &str, tar: &Path) -> (PathBuf, ImportReport) {
    let o = opts(64 << 20, FeatureLevel::Full);
    let (img, f) = image(dir, name, o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let m = meta(0o755);
    let mut t = Tree::new(m.clone());
    let bytes = std::fs::read(tar).unwrap();
    let rep = import(&mut &bytes[..], &mut t, &mut w, &|_: &[u8]| Route::Keep, &m).unwrap();
    w.finish(&t).unwrap();
    e2fsck_clean(&img);
    (img, rep)
}

/// A ustar header of a regular file of `size` bytes, owned by root.
fn ustar(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(TS as u64);
    h
}

/// Import `tar` expecting an error; its message.
fn import_error(tar: &[u8]) -> String {
    let o = opts(16 << 20, FeatureLevel::Full);
    let dir = tempfile::tempdir().unwrap();
    let (_, f) = image(dir.path(), "x.img", o.size);
    let mut w = Ext4Writer::create(f, 0, &o).unwrap();
    let m = meta(0o755);
    let mut t = Tree::new(m.clone());
    match import(&mut &tar[..], &mut t, &mut w, &|_: &[u8]| Route::Keep, &m) {
        Ok(_) => panic!("imported a hostile archive"),
        Err(e) => format!("{e:#}"),
    }
}

/// The hex bytes `debugfs ea_get` prints for `attr` of `path` (`raw`: ext4's on-disk form).
fn ea_get(img: &Path, path: &str, attr: &str, raw: bool) -> Vec<u8> {
    let r = if raw { "-r " } else { "" };
    let out = debugfs(img, &format!("ea_get {r}-x {path} {attr}"));
    let hex = out
        .split(" = ")
        .nth(1)
        .unwrap_or_else(|| panic!("{path}: {out}"));
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// A VFS-form ACL value (version 2) as `getfacl -n` lines (without `default:`).
fn acl_text(v: &[u8]) -> Vec<String> {
    assert_eq!(&v[..4], &[2, 0, 0, 0], "{v:?}");
    v[4..]
        .chunks(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let p = format!(
                "{}{}{}",
                if perm & 4 != 0 { 'r' } else { '-' },
                if perm & 2 != 0 { 'w' } else { '-' },
                if perm & 1 != 0 { 'x' } else { '-' }
            );
            match tag {
                1 => format!("user::{p}"),
                2 => format!("user:{id}:{p}"),
                4 => format!("group::{p}"),
                8 => format!("group:{id}:{p}"),
                0x10 => format!("mask::{p}"),
                0x20 => format!("other::{p}"),
                t => panic!("tag {t:#x}"),
            }
        })
        .collect()
}

/// `getfacl -n` of `path`: (access lines, default lines), remarks dropped.
fn getfacl(path: &Path) -> (Vec<String>, Vec<String>) {
    let out = run_in(
        Path::new("/"),
        "getfacl",
        &["-n", "-p", path.to_str().unwrap()],
    );
    let (mut acc, mut def) = (Vec::new(), Vec::new());
    for l in out.lines() {
        let l = l.split('#').next().unwrap().trim();
        if l.is_empty() {
            continue;
        }
        match l.strip_prefix("default:") {
            Some(d) => def.push(d.to_string()),
            None => acc.push(l.to_string()),
        }
    }
    (acc, def)
}

#[test]
fn bsdtar_acls_become_the_xattrs_e2fsprogs_and_getfacl_agree_on() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let journal = src.join("var/log/journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::create_dir_all(src.join("plain")).unwrap();
    std::fs::write(src.join("shared"), b"x").unwrap();
    std::fs::write(src.join("minimal"), b"y").unwrap();
    let s = src.to_str().unwrap();
    run_in(&src, "chmod", &["2755", "var/log/journal"]);
    // systemd's tmpfiles line for the journal, and named users and groups by number.
    for args in [
        &["-m", "g:adm:r-x,g:998:r-x,u:1234:rw-", "var/log/journal"][..],
        &[
            "-d",
            "-m",
            "g:adm:r-x,g:998:r-x,u:1234:r-x,m::r-x",
            "var/log/journal",
        ],
        &["-m", "u:65534:r--,g:777:rw-,m::r--", "shared"],
        &["-d", "-m", "u::rwx,g::---,o::---", "plain"],
    ] {
        run_in(&src, "setfacl", args);
    }
    let tar = tmp.path().join("acl.tar");
    run_in(
        &src,
        "bsdtar",
        &[
            "--acls",
            "--numeric-owner",
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let (img, rep) = image_of(tmp.path(), "ours.img", &tar);
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
    // e2fsprogs' own image of the same directory: its on-disk ACLs are the reference.
    let reference = tmp.path().join("ref.img");
    run_in(
        tmp.path(),
        "mkfs.ext4",
        &["-q", "-d", s, reference.to_str().unwrap(), "16M"],
    );

    for (path, access, default) in [
        ("/var/log/journal", true, true),
        ("/shared", true, false),
        ("/plain", false, true),
    ] {
        let (want_acc, want_def) = getfacl(&src.join(&path[1..]));
        for (attr, want, present) in [
            ("system.posix_acl_access", want_acc, access),
            ("system.posix_acl_default", want_def, default),
        ] {
            if !present {
                let list = debugfs(&img, &format!("ea_list {path}"));
                assert!(!list.contains(attr), "{path}: {list}");
                continue;
            }
            assert_eq!(
                acl_text(&ea_get(&img, path, attr, false)),
                want,
                "{path} {attr}: decoded by debugfs vs getfacl"
            );
            assert_eq!(
                ea_get(&img, path, attr, true),
                ea_get(&reference, path, attr, true),
                "{path} {attr}: on-disk bytes vs mkfs.ext4 -d"
            );
        }
        assert_eq!(
            stat(&img, path).0,
            stat(&reference, path).0,
            "{path}: mode vs mkfs.ext4 -d"
        );
    }
    let list = debugfs(&img, "ea_list /minimal");
    assert!(!list.contains("posix_acl"), "{list}");
}

/// `(mode bits,)` of `path` as debugfs shows them.
fn stat(img: &Path, path: &str) -> (u32,) {
    let s = debugfs(img, &format!("stat {path}"));
    let m = s
        .split("Mode:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    (u32::from_str_radix(m, 8).unwrap(),)
}

#[test]
fn the_journals_acls_survive_a_build() {
    use crate::common::{Alarm, alarm_tar_with, build_command, repo, root_fs};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("var/log/journal")).unwrap();
    // What systemd-tmpfiles gives Arch's /var/log/journal (wheel and adm by number).
    run_in(&src, "chmod", &["2755", "var/log/journal"]);
    run_in(
        &src,
        "setfacl",
        &["-m", "g:998:r-x,g:4:r-x", "var/log/journal"],
    );
    run_in(
        &src,
        "setfacl",
        &["-d", "-m", "g:998:r-x,g:4:r-x", "var/log/journal"],
    );
    let acl_tar = tmp.path().join("journal.tar");
    run_in(
        &src,
        "bsdtar",
        &[
            "--acls",
            "-cf",
            acl_tar.to_str().unwrap(),
            "var/log/journal",
        ],
    );
    let mut raw = std::fs::read(&acl_tar).unwrap();
    while raw.len() >= 512 && raw[raw.len() - 512..].iter().all(|&b| b == 0) {
        raw.truncate(raw.len() - 512);
    }
    let t = alarm_tar_with(tmp.path(), "t.tar", &Alarm::default(), |b| {
        b.get_mut().write_all(&raw).unwrap();
    });
    let out = tmp.path().join("out");
    let o = build_command(
        tmp.path(),
        &repo().join("profiles/worker.toml"),
        &t,
        Some(&out),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = root_fs(tmp.path(), &out);
    let (acc, def) = getfacl(&src.join("var/log/journal"));
    for (attr, want) in [
        ("system.posix_acl_access", acc),
        ("system.posix_acl_default", def),
    ] {
        assert_eq!(
            acl_text(&ea_get(&root, "/var/log/journal", attr, false)),
            want
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(src.join("var/log/journal"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(stat(&root, "/var/log/journal").0, mode & 0o7777);
}

#[test]
fn gnu_tar_acls_by_name_and_nfs4_acls_are_left_out_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    run_in(&src, "setfacl", &["-m", "g:adm:r--", "f"]);
    let tar = tmp.path().join("gnu.tar");
    run_in(
        &src,
        "tar",
        &[
            "--acls",
            "--format=posix",
            "-cf",
            tar.to_str().unwrap(),
            "f",
        ],
    );
    let (img, rep) = image_of(tmp.path(), "gnu.img", &tar);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.starts_with("f: its ACL names group \"adm\" without a numeric id")),
        "{:?}",
        rep.warnings
    );
    assert!(!debugfs(&img, "ea_list /f").contains("posix_acl"));

    // NFSv4 ACLs (FreeBSD, ZFS): one warning naming the first path, a count of the rest.
    let mut b = tar::Builder::new(Vec::new());
    for name in ["a", "b", "c"] {
        b.append_pax_extensions([("SCHILY.acl.ace", &b"owner@:rw-p--aARWcCos::allow"[..])])
            .unwrap();
        let mut h = ustar(0);
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    let p = tmp.path().join("nfs4.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    let (_, rep) = image_of(tmp.path(), "nfs4.img", &p);
    assert_eq!(
        rep.warnings,
        [
            "a: NFSv4 ACL (pax SCHILY.acl.ace) left out: ext4 stores POSIX ACLs only",
            "2 more entries' NFSv4 ACLs left out"
        ]
    );
    // A default ACL on a file: the kernel refuses one, so does the import (with a warning).
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([(
        "SCHILY.acl.default",
        &b"user::rwx,group::r-x,other::r-x"[..],
    )])
    .unwrap();
    let mut h = ustar(0);
    b.append_data(&mut h, "file-with-default", &[][..]).unwrap();
    let p = tmp.path().join("default.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    let (img, rep) = image_of(tmp.path(), "default.img", &p);
    assert_eq!(
        rep.warnings,
        ["file-with-default: default ACL left out: only a directory has one"]
    );
    assert!(!debugfs(&img, "ea_list /file-with-default").contains("posix_acl"));
    // A malformed ACL is an error naming the member.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.acl.access", &b"user::rwx,group::r-x"[..])])
        .unwrap();
    let mut h = ustar(0);
    b.append_data(&mut h, "etc/broken", &[][..]).unwrap();
    let e = import_error(&b.into_inner().unwrap());
    assert_eq!(
        e,
        "etc/broken: pax SCHILY.acl record: ACL has 0 other:: entries, not one"
    );
}

/// A 10 MiB file, mostly holes, with data at odd offsets, a chunk across a block boundary
/// and nine chunks (so the old GNU header needs an extension block).
fn sparse_source(dir: &Path) -> Vec<u8> {
    let f = dir.join("sparse");
    run_in(dir, "truncate", &["-s", "10M", "sparse"]);
    let mut file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"hello", 5000).unwrap();
    for i in 1..=6u64 {
        file.write_all_at(format!("chunk {i}").as_bytes(), i * 1_000_000 + 123)
            .unwrap();
    }
    file.write_all_at(&noise(9000, 7), 8_000_000).unwrap();
    file.write_all_at(b"end", 10 * 1024 * 1024 - 3).unwrap();
    file.flush().unwrap();
    std::fs::read(&f).unwrap()
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn gnu_tar_sparse_members_in_every_format_read_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let want = sparse_source(&src);
    std::fs::write(src.join("after"), "after the sparse file\n").unwrap();
    let mut made = Vec::new();
    for (name, args) in [
        ("gnu", &["--format=gnu"][..]),
        ("pax00", &["--format=posix", "--sparse-version=0.0"]),
        ("pax01", &["--format=posix", "--sparse-version=0.1"]),
        ("pax10", &["--format=posix", "--sparse-version=1.0"]),
    ] {
        let tar = tmp.path().join(format!("{name}.tar"));
        let mut a = vec!["--sparse", "-cf", tar.to_str().unwrap()];
        a.extend_from_slice(args);
        // A member after the sparse one: the stream stays in step past its map.
        a.extend(["sparse", "after"]);
        run_in(&src, "tar", &a);
        // Really sparse: the archive holds far less than the file.
        assert!(std::fs::metadata(&tar).unwrap().len() < 200_000, "{name}");
        made.push((name, tar));
    }
    // bsdtar writes the pax 1.0 form too.
    let tar = tmp.path().join("bsdtar.tar");
    run_in(
        &src,
        "bsdtar",
        &["-cf", tar.to_str().unwrap(), "sparse", "after"],
    );
    made.push(("bsdtar", tar));
    // The holes stay holes: only the 4 KiB blocks with data take space, and the one extent
    // leaf block their nine extents need (more than the inode's four).
    let blocks = want
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count()
        + 1;
    for (name, tar) in made {
        let (img, rep) = image_of(tmp.path(), &format!("{name}.img"), &tar);
        assert!(rep.warnings.is_empty(), "{name}: {:?}", rep.warnings);
        let got = debugfs_dump(&img, "/sparse", &tmp.path().join(format!("{name}.out")));
        assert!(got == want, "{name}: contents differ from the original");
        // The name is the real one, not GNU tar's ./GNUSparseFile.PID/ stand-in.
        let ls = debugfs(&img, "ls /");
        assert!(!ls.contains("GNUSparseFile"), "{name}: {ls}");
        assert_eq!(
            debugfs(&img, "cat /after"),
            "after the sparse file\n",
            "{name}"
        );
        assert_eq!(rep.file_bytes, want.len() as u64 + 22, "{name}");
        let s = debugfs(&img, "stat /sparse");
        assert!(
            s.contains(&format!("Blockcount: {}\n", blocks * 8)),
            "{name}: {blocks} blocks:\n{s}"
        );
    }
}

/// An old GNU sparse header (`S`) for `name` with `chunks` (offset, size), the real size
/// `real`, and `data` bytes of data.
fn old_gnu_sparse(name: &str, chunks: &[(u64, u64)], real: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path(name).unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(TS as u64);
    h.set_size(data.len() as u64);
    let g = h.as_gnu_mut().unwrap();
    for (s, &(o, l)) in g.sparse.iter_mut().zip(chunks) {
        s.set_offset(o);
        s.set_length(l);
    }
    // Octal while it fits, else base-256 (first byte 0x80), as GNU tar writes it.
    let mut r = [0u8; 12];
    if real < 1 << 33 {
        r.copy_from_slice(format!("{real:011o}\0").as_bytes());
    } else {
        r[0] = 0x80;
        r[4..].copy_from_slice(&real.to_be_bytes());
    }
    g.realsize = r;
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0; 1024]);
    out
}

fn pax_sparse(records: &[(&str, &str)], ustar_name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions(records.iter().map(|(k, v)| (*k, v.as_bytes())))
        .unwrap();
    let mut h = ustar(data.len() as u64);
    b.append_data(&mut h, ustar_name, data).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn bad_sparse_maps_are_one_line_errors_naming_the_member() {
    let d = [7u8; 1024];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            old_gnu_sparse("var/past-end", &[(0, 512), (4096, 512)], 2048, &d),
            "var/past-end: sparse map chunk of 512 bytes at offset 4096 ends past the file's size 2048",
        ),
        (
            old_gnu_sparse("var/overlap", &[(1024, 512), (512, 512)], 4096, &d),
            "var/overlap: sparse map chunk at offset 512 overlaps the one before it or is out of order",
        ),
        (
            old_gnu_sparse("var/short", &[(0, 512)], 4096, &d),
            "var/short: sparse map lists 512 bytes of data but the member holds 1024",
        ),
        (
            pax_sparse(
                &[
                    ("GNU.sparse.size", "18446744073709551615"),
                    ("GNU.sparse.numblocks", "1"),
                    ("GNU.sparse.map", "18446744073709551615,1024"),
                ],
                "var/wrap",
                &d,
            ),
            "var/wrap: sparse map chunk of 1024 bytes at offset 18446744073709551615 ends past",
        ),
        (
            pax_sparse(
                &[
                    ("GNU.sparse.major", "1"),
                    ("GNU.sparse.minor", "0"),
                    ("GNU.sparse.name", "var/huge-count"),
                    ("GNU.sparse.realsize", "4096"),
                ],
                "./GNUSparseFile.1/huge-count",
                b"99999999999\n0\n512\n",
            ),
            "var/huge-count: sparse map ends before its chunk offset",
        ),
        (
            pax_sparse(
                &[
                    ("GNU.sparse.size", "4096"),
                    ("GNU.sparse.numblocks", "99999999999"),
                    ("GNU.sparse.map", "0,1024"),
                ],
                "var/count",
                &d,
            ),
            "var/count: pax GNU.sparse.numblocks says 99999999999 chunks but the map lists 1",
        ),
    ];
    for (tar, want) in cases {
        let e = import_error(&tar);
        assert!(e.starts_with(want), "got {e:?}, want {want:?}");
        assert!(!e.contains('\n'), "{e}");
    }
    // A real size past what an ext4 file holds is refused before any write.
    let tar = old_gnu_sparse("var/huge", &[(1 << 50, 512)], (1 << 50) + 512, &d[..512]);
    let e = import_error(&tar);
    assert_eq!(
        e,
        "var/huge: cannot store file data: a 1125899906843136-byte file is larger than an ext4 file of 4 KiB blocks may be (16 TiB)"
    );
}

/// Logical block `lblk` of `path` as `debugfs bd -f` prints it (octal offsets, 16 bytes a
/// line, `*` for lines repeating the one before).
fn block_dump(img: &Path, path: &str, lblk: u64) -> Vec<u8> {
    let out = debugfs(img, &format!("bd -f {path} {lblk}"));
    let mut block = vec![0u8; 4096];
    let mut last: Option<(usize, Vec<u8>)> = None;
    let mut repeat = false;
    let fill = |block: &mut Vec<u8>, last: &Option<(usize, Vec<u8>)>, to: usize| {
        if let Some((at, row)) = last {
            for o in (at + 16..to).step_by(16) {
                block[o..o + 16].copy_from_slice(row);
            }
        }
    };
    for line in out.lines() {
        if line.trim() == "*" {
            repeat = true;
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(off) = words.next().and_then(|o| usize::from_str_radix(o, 8).ok()) else {
            continue;
        };
        if std::mem::take(&mut repeat) {
            fill(&mut block, &last, off);
        }
        let row: Vec<u8> = words
            .take(8)
            .flat_map(|w| [&w[..2], &w[2..]])
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        block[off..off + 16].copy_from_slice(&row);
        last = Some((off, row));
    }
    if repeat {
        fill(&mut block, &last, 4096);
    }
    block
}

#[test]
fn a_terabyte_of_holes_takes_one_block() {
    let tmp = tempfile::tempdir().unwrap();
    let tib = 1u64 << 40;
    let data = noise(1000, 3);
    let tar = tmp.path().join("tib.tar");
    std::fs::write(
        &tar,
        old_gnu_sparse("disk.img", &[(tib - 1000, 1000)], tib, &data),
    )
    .unwrap();
    let (img, _) = image_of(tmp.path(), "tib.img", &tar);
    let s = debugfs(&img, "stat /disk.img");
    assert!(s.contains(&format!("Size: {tib}")), "{s}");
    assert!(s.contains("Blockcount: 8\n"), "{s}");
    // debugfs reads the last block back: zeros, then the data.
    let mut want = vec![0u8; 4096 - 1000];
    want.extend_from_slice(&data);
    assert!(block_dump(&img, "/disk.img", tib / 4096 - 1) == want);
    // One extent, one block long, at the file's last logical block: the rest is hole.
    let ext = debugfs(&img, "dump_extents /disk.img");
    let last = tib / 4096 - 1;
    assert!(
        ext.contains(&format!(" {last} - {last} ")) && ext.lines().count() == 2,
        "{ext}"
    );
}

#[test]
fn pre_1970_times_read_back_from_gnu_and_pax_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old"), b"x").unwrap();
    run_in(&src, "touch", &["-d", "1938-01-01T00:00:00Z", "old"]);
    for format in ["gnu", "posix"] {
        let tar = tmp.path().join(format!("{format}.tar"));
        run_in(
            &src,
            "tar",
            &[
                &format!("--format={format}"),
                "-cf",
                tar.to_str().unwrap(),
                "old",
            ],
        );
        if format == "gnu" {
            // Base-256, negative: the first byte of the mtime field is 0xff.
            assert_eq!(std::fs::read(&tar).unwrap()[136], 0xff);
        }
        let (img, rep) = image_of(tmp.path(), &format!("{format}.img"), &tar);
        assert!(rep.warnings.is_empty(), "{format}: {:?}", rep.warnings);
        let s = debugfs(&img, "stat /old");
        let m = s
            .lines()
            .find(|l| l.trim_start().starts_with("mtime:"))
            .unwrap();
        // -1009843200 is 0xc3cf0400 as a 32-bit field, epoch bits 0.
        assert!(
            m.contains("0xc3cf0400:00000000") && m.contains("1938"),
            "{format}: {m}"
        );
    }
}
