//! `hc1img flash` on small images made here (no build): what it writes is what the block map
//! says (`bmaptool create`'s map, `xz`'s and `zstd`'s compression: tools nobody here wrote),
//! every byte without a map, onto loop devices and image files full of random bytes; a
//! damaged image, a changed map or another image's map is a one-line error; and the devices
//! it must refuse — a mounted loop device, a loop device with a mounted partition, the device
//! holding `/`, a device smaller than the image, a directory, a missing path — are refused,
//! naming the reason, without a byte written (the device's SHA-256 before and after) and
//! without the device ever being opened (`strace` of every `open`).
//!
//! The images built from a profile (plain, `.zst` + bmap, a seeded card) are flashed and
//! checked by fsck.fat/e2fsck/sgdisk in `flash_bmap.rs`, which reuses its one build.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const HC1IMG: &str = env!("CARGO_BIN_EXE_hc1img");

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Mounted {
    /// Mount `dev` read-only (nothing then writes to it by itself) on a new directory `at`.
    fn new(dev: &str, at: &Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        run_ok("mount", &["-o", "ro", dev, at.to_str().unwrap()]);
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `hc1img ARGS…` under `strace`: whether it succeeded, its stderr, and every `open` call
/// that names `watched`.
fn traced(dir: &Path, args: &[&str], watched: &str) -> (bool, String, Vec<String>) {
    let log = dir.join("strace.log");
    let mut full = vec![
        "-f",
        "-qq",
        "-e",
        "trace=open,openat,openat2,creat",
        "-o",
        log.to_str().unwrap(),
        HC1IMG,
    ];
    full.extend_from_slice(args);
    let o = run("strace", &full);
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(
        trace.contains("openat("),
        "strace saw no open at all:\n{trace}"
    );
    let quoted = format!("\"{watched}\"");
    let opens = trace
        .lines()
        .filter(|l| l.contains(&quoted))
        .map(str::to_string)
        .collect();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        opens,
    )
}

/// `hc1img flash IMAGE TARGET` must fail with one line containing `why`, without opening
/// `TARGET` or changing its bytes (when it can be read).
fn refused(dir: &Path, image: &Path, target: &str, why: &str) {
    // Hashed when this test can read it (a sandbox may deny even root the host's disk).
    let before = std::fs::File::open(target)
        .ok()
        .filter(|_| !Path::new(target).is_dir())
        .map(|_| sha256_file(Path::new(target)));
    let (ok, err, opens) = traced(dir, &["flash", image.to_str().unwrap(), target], target);
    assert!(!ok, "hc1img flash {target} succeeded: {err}");
    let line = err.trim_end();
    assert!(
        line.starts_with("error: ") && !line.contains('\n') && line.contains(why),
        "{target}: want one line with {why:?}, got:\n{err}"
    );
    assert!(
        opens.is_empty(),
        "{target} was opened though refused:\n{}",
        opens.join("\n")
    );
    if let Some(before) = before {
        assert_eq!(sha256_file(Path::new(target)), before, "{target} changed");
    }
}

/// The device the running system's `/` is on, and the disk it is a partition of (if it is
/// one), with the reason `hc1img flash` must give; fails when no block device holds `/`.
fn devices_holding_root() -> Vec<(String, &'static str)> {
    use std::os::unix::fs::FileTypeExt as _;
    let is_block = |p: &str| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device());
    // btrfs writes the subvolume after the device: /dev/sda2[/@].
    let source = run_ok("findmnt", &["-no", "SOURCE", "/"]);
    let source = source.trim().split('[').next().unwrap_or("").to_string();
    if is_block(&source) {
        let mut out = vec![(source.clone(), "holds the running system's root filesystem")];
        let parent = run_ok("lsblk", &["-no", "PKNAME", &source]);
        let parent = parent.trim();
        if !parent.is_empty() && is_block(&format!("/dev/{parent}")) {
            out.push((
                format!("/dev/{parent}"),
                "holds the running system's root filesystem",
            ));
        }
        return out;
    }
    // An overlay (a container): a block device the host mounted into this root tree (its
    // /etc/hosts, a volume) holds part of /.
    let all = run_ok("findmnt", &["-rno", "SOURCE,TARGET"]);
    let held = all
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(|s| s.split('[').next().unwrap_or("").to_string())
        .find(|s| is_block(s));
    match held {
        Some(dev) => vec![(dev, "is mounted at")],
        None => panic!(
            "no block device holds / here (findmnt says {source:?}, no mount has a block device \
             source); the root refusal is unit-tested on a fake sysfs (src/flash/target.rs) \
             but this test needs a real one"
        ),
    }
}

#[test]
fn flash_refuses_without_writing_a_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let image = dir.join("small.img");
    used_media(&image, 1 << 20);

    // A mounted loop device.
    let fs = dir.join("fs.img");
    used_media(&fs, 16 << 20);
    run_ok("mkfs.ext4", &["-q", "-F", fs.to_str().unwrap()]);
    let lo = Loop::attach(&fs, false);
    let mnt = dir.join("mnt");
    let m = Mounted::new(&lo.0, &mnt);
    refused(
        dir,
        &image,
        &lo.0,
        &format!("{} is mounted at {}", lo.0, mnt.display()),
    );
    // Its backing file too: writing it would change the mounted filesystem.
    refused(
        dir,
        &image,
        fs.to_str().unwrap(),
        &format!("backs {}, which is in use", lo.0),
    );
    drop(m);
    drop(lo);

    // A loop device whose partition is mounted.
    let disk = dir.join("disk.img");
    used_media(&disk, 16 << 20);
    let script = dir.join("table");
    std::fs::write(&script, "label: dos\nstart=2048, type=83\n").unwrap();
    let o = Command::new("sfdisk")
        .args(["-q", disk.to_str().unwrap()])
        .stdin(std::fs::File::open(&script).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lo = Loop::attach(&disk, true);
    let part = format!("{}p1", lo.0);
    // The kernel's own scan (losetup -P) may miss the table (seen on 6.18); partx adds it.
    for _ in 0..10 {
        if Path::new(&part).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !Path::new(&part).exists() {
        run_ok("partx", &["-a", &lo.0]);
    }
    run_ok("mkfs.ext4", &["-q", &part]);
    let m = Mounted::new(&part, &dir.join("mnt-part"));
    let name = part.trim_start_matches("/dev/");
    refused(
        dir,
        &image,
        &lo.0,
        &format!("{}: {name} is mounted at", lo.0),
    );
    drop(m);

    // A device smaller than the image (the unmounted loop device above: 16 MiB).
    let big = dir.join("big.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .write_all_at(b"data", 0)
        .unwrap();
    let before = sha256_file(Path::new(&lo.0));
    let o = Command::new(HC1IMG)
        .args(["flash", big.to_str().unwrap(), &lo.0])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("needs 33554432 bytes"), "{err}");
    assert_eq!(sha256_file(Path::new(&lo.0)), before);
    drop(lo);

    // The device holding the running system.
    for (dev, why) in devices_holding_root() {
        refused(dir, &image, &dev, why);
    }

    // Not a device: a directory, a missing path (and nothing is created there).
    let d = dir.join("a-directory");
    std::fs::create_dir(&d).unwrap();
    refused(
        dir,
        &image,
        d.to_str().unwrap(),
        "is a directory, not a block device or an image file",
    );
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    let missing = dir.join("sdz");
    refused(
        dir,
        &image,
        missing.to_str().unwrap(),
        "no such device or file",
    );
    assert!(!missing.exists());
}

/// The image's bytes `[at, at + len)`.
fn bytes(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    b
}

/// The one `error: ` line of a failed run's stderr (its last line).
fn error_line(err: &str) -> &str {
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(
        errors.len() == 1 && err.trim_end().ends_with(errors[0]),
        "want one error line, last:\n{err}"
    );
    errors[0]
}

fn hc1img(args: &[&str]) -> (bool, String) {
    let o = Command::new(HC1IMG).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn flash_writes_what_the_map_says_and_checks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A sparse image: data at the start, in the middle and in a last partial 4 KiB block.
    let img = dir.join("small.img");
    let size: u64 = (24 << 20) + 512;
    {
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&noise(8192, 1), 0).unwrap();
        f.write_all_at(&noise(2 << 20, 2), 5 << 20).unwrap();
        f.write_all_at(&noise(512, 3), 24 << 20).unwrap();
    }
    let bmap = dir.join("small.img.bmap");
    run_ok(
        "bmaptool",
        &[
            "create",
            "-o",
            bmap.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    run_ok("xz", &["-k", "-0", "-T1", img.to_str().unwrap()]);
    run_ok("zstd", &["-q", "-k", img.to_str().unwrap()]);
    let (xz, zst) = (dir.join("small.img.xz"), dir.join("small.img.zst"));

    // .xz through the map found beside it (small.img.bmap for small.img.xz) onto a loop
    // device over old data: the mapped bytes are the image's, the rest is left as it was.
    let card = dir.join("card");
    used_media(&card, 32 << 20);
    let old = bytes(&card, 1 << 20, 4096);
    let lo = Loop::attach(&card, false);
    let (ok, err) = hc1img(&["flash", xz.to_str().unwrap(), &lo.0]);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("mapped by {}", bmap.display())) && err.contains("it matches"),
        "{err}"
    );
    drop(lo);
    for (at, len) in [(0u64, 8192usize), (5 << 20, 2 << 20), (24 << 20, 512)] {
        assert!(
            bytes(&card, at, len) == bytes(&img, at, len),
            "bytes at {at} differ"
        );
    }
    assert_eq!(
        bytes(&card, 1 << 20, 4096),
        old,
        "an unmapped block was written"
    );

    // .zst without a map onto an image file: every byte, the holes as zeros.
    let file = dir.join("target.img");
    used_media(&file, 32 << 20);
    let (ok, err) = hc1img(&[
        "flash",
        "--no-bmap",
        zst.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("every byte"), "{err}");
    run_ok(
        "cmp",
        &[
            "-n",
            &size.to_string(),
            img.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    // A shorter file is extended to the image's length.
    let short = dir.join("short.img");
    std::fs::write(&short, b"x").unwrap();
    let (ok, err) = hc1img(&["flash", img.to_str().unwrap(), short.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::metadata(&short).unwrap().len(), size);
    for (at, len) in [(0u64, 8192usize), (5 << 20, 2 << 20), (24 << 20, 512)] {
        assert!(bytes(&short, at, len) == bytes(&img, at, len));
    }

    // A damaged image (one byte of a mapped range changed): its map's checksum catches it.
    let bad = dir.join("bad.img");
    std::fs::copy(&img, &bad).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&bad)
        .unwrap()
        .write_all_at(b"!", (5 << 20) + 100)
        .unwrap();
    let (ok, err) = hc1img(&[
        "flash",
        "--bmap",
        bmap.to_str().unwrap(),
        bad.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        error_line(&err).contains("do not have the SHA-256"),
        "{err}"
    );

    // A map changed after it was written, or another image's map: refused before writing.
    let before = sha256_file(&file);
    let changed = dir.join("changed.bmap");
    let text = std::fs::read_to_string(&bmap).unwrap();
    std::fs::write(&changed, text.replacen("<Range", "<Range ", 1)).unwrap();
    let other = dir.join("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(size - 512)
        .unwrap();
    for (args, want) in [
        (
            vec!["--bmap", changed.to_str().unwrap(), img.to_str().unwrap()],
            "does not match its contents",
        ),
        (
            vec!["--bmap", bmap.to_str().unwrap(), other.to_str().unwrap()],
            "not its map",
        ),
    ] {
        let mut full = vec!["flash"];
        full.extend(args);
        full.push(file.to_str().unwrap());
        let (ok, err) = hc1img(&full);
        assert!(!ok);
        assert!(error_line(&err).contains(want), "{want}: {err}");
        assert_eq!(sha256_file(&file), before);
    }
}
