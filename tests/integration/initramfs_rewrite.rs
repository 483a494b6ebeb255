//! `hc1img::initramfs` swapping a real kernel's modules for another's, on archives made and
//! checked by the real tools: a tree holding Debian armhf kernel A's `usb-storage`, `uas`,
//! `sd_mod` and `scsi_mod` (HC1IMG_TEST_KERNELS, tests/integration/kernel_image.rs), with a
//! hard link, symlinks and `/init`, packed by GNU `cpio -o -H newc` and compressed by `gzip`,
//! `zstd` and `xz --check=crc32` (as mkinitcpio does), one wrapped by `mkimage` as a uInitrd,
//! one behind an uncompressed early archive. Kernel B's modules are swapped in; the result
//! is unpacked by the same tools (`gzip -dc`, `zstd -dc`, `xz -dc`, `cpio -id`), listed by
//! `cpio -tv` and `bsdtar -tvf`, and the uInitrd's header checked by `dumpimage -l`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::noise;
use crate::kernel_image::kernel;
use hc1img::initramfs::{self, NewFile};

/// The module files the SSD root needs, relative to a kernel's module directory.
const MODULES: [&str; 4] = [
    "kernel/drivers/scsi/scsi_mod.ko",
    "kernel/drivers/scsi/sd_mod.ko",
    "kernel/drivers/usb/storage/uas.ko",
    "kernel/drivers/usb/storage/usb-storage.ko",
];
/// Other files of the module directory taken along.
const INDEXES: [&str; 2] = ["modules.builtin", "modules.order"];

fn tool(cwd: &Path, cmd: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run the oracle `{cmd}` ({e}); install it (scripts/test does)")
        });
    let mut sin = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || sin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(b: Vec<u8>) -> Vec<String> {
    String::from_utf8(b)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Kernel A's initramfs tree in `root`, packed by GNU cpio (names as `find .` lists them,
/// sorted; GNU cpio drops the `./`).
fn initramfs_of(root: &Path, kver: &str, kroot: &Path) -> Vec<u8> {
    let m = root.join(format!("usr/lib/modules/{kver}"));
    let from = kroot.join(format!("usr/lib/modules/{kver}"));
    for f in MODULES.iter().chain(&INDEXES) {
        let to = m.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from.join(f), &to).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("init"),
        "#!/usr/bin/ash\nexec switch_root /new_root /sbin/init\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/fstab"), "# fstab\n").unwrap();
    std::fs::write(root.join("usr/bin/busybox"), noise(40_000, 7)).unwrap();
    std::fs::hard_link(root.join("usr/bin/busybox"), root.join("usr/bin/sh")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let list = lines(tool(root, "find", &[".", "-mindepth", "1"], b""));
    let mut names: Vec<&str> = list.iter().map(String::as_str).collect();
    names.sort();
    tool(
        root,
        "cpio",
        &["-o", "-H", "newc", "--quiet"],
        names.join("\n").as_bytes(),
    )
}

/// Kernel B's files, as [`initramfs::Initramfs::replace_modules`] takes them.
fn new_files(kver: &str, kroot: &Path) -> Vec<NewFile> {
    let from = kroot.join(format!("usr/lib/modules/{kver}"));
    MODULES
        .iter()
        .chain(&INDEXES)
        .map(|f| NewFile {
            path: f.to_string(),
            data: std::fs::read(from.join(f)).unwrap(),
            mode: 0o644,
        })
        .collect()
}

struct Kernels {
    a: (String, PathBuf),
    b: (String, PathBuf),
}

/// Swap A's modules for B's in `img`; check what cpio sees in `newc_of(out)` against the
/// original archive `orig`; returns the written image.
fn swap(k: &Kernels, img: &[u8], orig: &[u8], newc_of: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let (va, vb) = (&k.a.0, &k.b.0);
    let mut i = initramfs::read(img).unwrap();
    assert_eq!(i.module_versions(), vec![va.clone()]);
    assert_eq!(i.modules(va), MODULES);
    i.replace_modules(va, vb, new_files(vb, &k.b.1)).unwrap();
    let out = i.write().unwrap();
    let again = initramfs::read(&out).unwrap();
    assert_eq!(again.module_versions(), vec![vb.clone()]);
    assert_eq!(again.modules(vb), MODULES);

    let newc = newc_of(&out);
    let tmp = tempfile::tempdir().unwrap();
    let others = |l: Vec<String>| -> Vec<String> {
        l.into_iter()
            .filter(|l| !l.contains(va.as_str()) && !l.contains(vb.as_str()))
            .collect()
    };
    let (tv0, tv1) = (
        lines(tool(tmp.path(), "cpio", &["-tv", "--quiet"], orig)),
        lines(tool(tmp.path(), "cpio", &["-tv", "--quiet"], &newc)),
    );
    assert_eq!(others(tv0), others(tv1.clone()));
    assert!(
        tv1.iter().any(|l| l.ends_with(" lib -> usr/lib")),
        "{tv1:#?}"
    );

    tool(tmp.path(), "cpio", &["-id", "--quiet"], &newc);
    let root = tmp.path();
    for f in new_files(vb, &k.b.1) {
        let p = root.join(format!("usr/lib/modules/{vb}/{}", f.path));
        assert!(std::fs::read(&p).unwrap() == f.data, "{}", p.display());
    }
    assert!(!root.join(format!("usr/lib/modules/{va}")).exists());
    use std::os::unix::fs::MetadataExt;
    let (sh, bb) = (
        std::fs::metadata(root.join("usr/bin/sh")).unwrap(),
        std::fs::metadata(root.join("usr/bin/busybox")).unwrap(),
    );
    assert_eq!((sh.ino(), sh.nlink(), sh.len()), (bb.ino(), 2, 40_000));
    assert_eq!(std::fs::read(root.join("etc/fstab")).unwrap(), b"# fstab\n");
    out
}

#[test]
fn real_modules_swapped_in_archives_made_by_the_real_tools() {
    let k = Kernels {
        a: kernel("A"),
        b: kernel("B"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let cpio = initramfs_of(&root, &k.a.0, &k.a.1);
    assert!(cpio.starts_with(b"070701"), "GNU cpio did not write newc");
    let t = tmp.path();

    // Plain.
    let out = swap(&k, &cpio, &cpio, |o| o.to_vec());
    assert!(out.starts_with(b"070701"));

    // Each compressor, unpacked again by its own tool.
    for (c, args) in [
        ("gzip", &["-c", "-n"][..]),
        ("zstd", &["-c", "-q", "-19"][..]),
        ("xz", &["-c", "--check=crc32"][..]),
    ] {
        let img = tool(t, c, args, &cpio);
        let out = swap(&k, &img, &cpio, |o| tool(t, c, &["-dc"], o));
        let compression = |b: &[u8]| initramfs::read(b).unwrap().segments[0].compression;
        assert_eq!(compression(&out), compression(&img), "{c}");
        let l = String::from_utf8(tool(t, "bsdtar", &["-tvf", "-"], &out)).unwrap();
        assert!(
            l.contains(&format!("{}/kernel/drivers/scsi/sd_mod.ko", k.b.0)),
            "{c}: {l}"
        );
        if c == "xz" {
            // `xz --list` reads files only.
            let f = t.join("initramfs.xz");
            std::fs::write(&f, &out).unwrap();
            let list = tool(
                t,
                "xz",
                &["--robot", "--list", "-vv", f.to_str().unwrap()],
                b"",
            );
            let list = String::from_utf8(list).unwrap();
            assert!(list.contains("CRC32") && !list.contains("CRC64"), "{list}");
        }
    }

    // An early uncompressed archive before the gzip one: kept byte for byte.
    let early_root = tmp.path().join("early");
    std::fs::create_dir_all(early_root.join("kernel/x86/microcode")).unwrap();
    std::fs::write(
        early_root.join("kernel/x86/microcode/AuthenticAMD.bin"),
        noise(3000, 5),
    )
    .unwrap();
    let early = tool(
        &early_root,
        "cpio",
        &["-o", "-H", "newc", "--quiet"],
        b"kernel\nkernel/x86\nkernel/x86/microcode\nkernel/x86/microcode/AuthenticAMD.bin\n",
    );
    let gz = tool(t, "gzip", &["-c", "-n"], &cpio);
    let img = [early.clone(), gz].concat();
    let n = early.len();
    let out = swap(&k, &img, &cpio, |o| tool(t, "gzip", &["-dc"], &o[n..]));
    assert_eq!(&out[..n], &early[..]);

    // A uInitrd made by mkimage: the header is rewritten for the new data.
    let gz_path = t.join("initramfs.gz");
    std::fs::write(&gz_path, tool(t, "gzip", &["-c", "-n"], &cpio)).unwrap();
    let u = t.join("uInitrd");
    let (gz_arg, u_arg) = (gz_path.to_str().unwrap(), u.to_str().unwrap());
    let args = [
        "-A",
        "arm",
        "-O",
        "linux",
        "-T",
        "ramdisk",
        "-C",
        "none",
        "-n",
        "initramfs",
        "-d",
        gz_arg,
        u_arg,
    ];
    tool(t, "mkimage", &args, b"");
    let img = std::fs::read(&u).unwrap();
    let out = swap(&k, &img, &cpio, |o| tool(t, "gzip", &["-dc"], &o[64..]));
    let u2 = t.join("uInitrd.new");
    std::fs::write(&u2, &out).unwrap();
    let l = String::from_utf8(tool(t, "dumpimage", &["-l", u2.to_str().unwrap()], b"")).unwrap();
    assert!(
        l.contains("ARM Linux RAMDisk Image (uncompressed)")
            && l.contains(&format!("Data Size:    {} Bytes", out.len() - 64))
            && l.contains("Image Name:   initramfs"),
        "{l}"
    );
}
