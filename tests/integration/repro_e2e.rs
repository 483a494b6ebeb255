//! Reproducibility end to end: the `hc1img` binary builds the shipped worker profile (extended
//! by a test profile that adds a small overlay) from an Arch-Linux-ARM shaped tarball, once as a
//! reference and once per varied host condition, and the outputs must be byte-identical:
//! working directory, `--out` path, cache directory, umask, `TZ`, `LANG`/`LC_ALL`, wall-clock
//! time (`faketime`), CPU count (`taskset`) and the creation order of the overlay files; one
//! test per condition and one that varies all of them at once.
//!
//! Builds run one at a time under a lock, each in the same fixed directory layout below
//! `CARGO_TARGET_TMPDIR`, so that two builds differ in exactly the varied condition. Images are
//! compared by content (a sparse-aware digest of every non-zero 4 KiB block with its position,
//! which equals byte equality for equal sizes) and by the sha256s `manifest.json` records;
//! `manifest.json` itself must be byte-identical too.
//!
//! `cargo test --test repro_e2e -- --nocapture --test-threads 1` prints each build's sha256s
//! (the table in docs/reproducibility.md).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::common::*;

/// The host conditions one build runs under; `Vary::default()` is the reference.
#[derive(Clone, Debug, Default)]
struct Vary {
    /// Working directory below the build root (default `work`).
    cwd: Option<&'static str>,
    /// `--out` directory below the build root (default `out/worker`).
    out: Option<&'static str>,
    /// `HC1IMG_CACHE` below the build root (default `cache`).
    cache: Option<&'static str>,
    /// umask of the hc1img process (default 022).
    umask: Option<&'static str>,
    /// `TZ` (default `UTC`).
    tz: Option<&'static str>,
    /// `LANG` and `LC_ALL` (default `LANG=C.UTF-8`, no `LC_ALL`).
    lang: Option<(&'static str, &'static str)>,
    /// `faketime` date the build believes it is.
    faketime: Option<&'static str>,
    /// Run pinned to one CPU with thread-count variables set.
    one_cpu: bool,
    /// Create the overlay files and directories in the reverse order.
    reverse_overlay: bool,
    /// Give the overlay the modes a checkout under umask 077 has (files 0600, executables
    /// 0700, directories 0700) instead of umask 022's (0644, 0755, 0755).
    checkout_umask_077: bool,
}

impl Vary {
    fn all() -> Vary {
        Vary {
            cwd: Some("elsewhere/deeper/cwd"),
            out: Some("another-out/x/y"),
            cache: Some("other-cache"),
            umask: Some("077"),
            tz: Some("Pacific/Kiritimati"),
            lang: Some(("de_DE.UTF-8", "tr_TR.UTF-8")),
            faketime: Some("2031-01-01 00:00:00"),
            one_cpu: true,
            reverse_overlay: true,
            // Not the overlay's checkout modes: `checkout_umask` fails on its own until the
            // derivation hash stops reading group/other permission bits (see its doc).
            checkout_umask_077: false,
        }
    }
}

/// What a build produced, reduced to digests.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outputs {
    /// Content digests (sparse-aware, see [`content_digest`]) of ssd.img and sd.img.
    ssd_content: String,
    sd_content: String,
    /// The sha256s manifest.json records for ssd.img and sd.img.
    ssd_sha256: String,
    sd_sha256: String,
    /// sha256 of manifest.json itself.
    manifest: String,
}

/// The shared synthetic tarball, at a fixed path so every build names the same source.
fn tarball() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-e2e-source");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let made = alarm_tarball(tmp.path(), &Alarm::default());
        let path = dir.join("alarm.tar.gz");
        std::fs::rename(made, &path).unwrap();
        path
    })
}

/// Builds run one at a time: they share the fixed build root.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

fn build_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-e2e-build")
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The test overlay: nested directories, plain and executable files, a symlink.
const OVERLAY_DIRS: [&str; 5] = ["etc", "etc/repro", "usr", "usr/local", "usr/local/bin"];
const OVERLAY_FILES: [(&str, &str, u32); 4] = [
    ("etc/repro/a.conf", "alpha = 1\n", 0o644),
    ("etc/repro/b.conf", "beta = 2\n", 0o644),
    ("etc/repro/c.conf", "gamma = 3\n", 0o644),
    ("usr/local/bin/repro-tool", "#!/bin/sh\necho repro\n", 0o755),
];

/// Write the overlay in creation order or reversed (directories created by a detour through a
/// rename in the reversed case, so their inodes and directory slots differ too).
fn write_overlay(dir: &Path, reverse: bool) {
    std::fs::create_dir_all(dir).unwrap();
    if reverse {
        let scratch = dir.join("zz-scratch");
        for d in OVERLAY_DIRS.iter().rev() {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::create_dir(&scratch).unwrap();
        for (p, data, mode) in OVERLAY_FILES.iter().rev() {
            let tmp = scratch.join("f");
            write_mode(&tmp, data.as_bytes(), *mode);
            std::fs::rename(&tmp, dir.join(p)).unwrap();
        }
        std::fs::remove_dir(&scratch).unwrap();
        std::os::unix::fs::symlink("repro-tool", dir.join("usr/local/bin/repro-link")).unwrap();
    } else {
        std::os::unix::fs::symlink("repro-tool", {
            std::fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
            dir.join("usr/local/bin/repro-link")
        })
        .unwrap();
        for d in OVERLAY_DIRS {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for (p, data, mode) in OVERLAY_FILES {
            write_mode(&dir.join(p), data.as_bytes(), mode);
        }
    }
    for d in OVERLAY_DIRS {
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Take away group and other permissions, as a checkout under umask 077 would have them.
fn umask_077(dir: &Path) {
    for (p, _, mode) in OVERLAY_FILES {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(mode & 0o700))
            .unwrap();
    }
    for d in OVERLAY_DIRS {
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// Secret files the worker profile declares, mode 600; returns the `--secret` arguments.
fn secrets(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut args = Vec::new();
    for (name, value) in [
        (
            "admin_password_hash",
            "$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij./",
        ),
        ("mail_password", "MAILSECRET-42"),
        ("swarm_worker_token", "SWMTKN-1-TOKENSECRET"),
    ] {
        let p = dir.join(name);
        write_mode(&p, format!("{value}\n").as_bytes(), 0o600);
        args.push("--secret".to_string());
        args.push(format!("{name}={}", p.display()));
    }
    args
}

/// sha256 over (block number, bytes) of every 4 KiB block of `path` that is not all zeros,
/// plus the size, reading only the data extents (SEEK_DATA/SEEK_HOLE): two files have the
/// same digest exactly when they have the same size and bytes, however their holes lie.
fn content_digest(path: &Path) -> String {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let size = f.metadata().unwrap().len();
    let fd = f.as_raw_fd();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while pos < size {
        // SAFETY: lseek on an open descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole is left
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        assert!(hole >= data, "{}: SEEK_HOLE failed", path.display());
        // Whole blocks: extents of a sparse file start and end on block boundaries, except
        // the end of file.
        let mut at = (data as u64) / 4096 * 4096;
        let end = hole as u64;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf[..n], at).unwrap();
            for (i, block) in buf[..n].chunks(4096).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    h.update((at / 4096 + i as u64).to_le_bytes());
                    h.update(block);
                }
            }
            at += n as u64;
        }
        pos = end;
    }
    hex::encode(h.finalize())
}

/// Run one build under `v` and reduce it to digests; panics with hc1img's stderr on failure.
fn build(label: &str, v: &Vary) -> Outputs {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = build_root();
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    let cwd = root.join(v.cwd.unwrap_or("work"));
    let out = root.join(v.out.unwrap_or("out/worker"));
    let cache = root.join(v.cache.unwrap_or("cache"));
    std::fs::create_dir_all(&cwd).unwrap();
    write_overlay(&root.join("overlay"), v.reverse_overlay);
    if v.checkout_umask_077 {
        umask_077(&root.join("overlay"));
    }
    let profile_dir = root.join("profile");
    std::fs::create_dir_all(&profile_dir).unwrap();
    let profile = profile_dir.join("repro.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = {:?}\nname = \"worker\"\n\n[overlays]\ndirs = [\"../overlay\"]\n",
            repo().join("profiles/worker.toml").display().to_string(),
        ),
    )
    .unwrap();
    let tarball = tarball();
    let sha = sha256_hex(&std::fs::read(tarball).unwrap());

    // [taskset -c 0] [faketime DATE] sh -c 'umask U; exec "$0" "$@"' hc1img build ...
    let mut argv: Vec<String> = Vec::new();
    if v.one_cpu {
        argv.extend(["taskset".into(), "-c".into(), "0".into()]);
    }
    if let Some(t) = v.faketime {
        argv.extend(["faketime".into(), t.into()]);
    }
    argv.extend([
        "sh".into(),
        "-c".into(),
        format!("umask {}; exec \"$0\" \"$@\"", v.umask.unwrap_or("022")),
        env!("CARGO_BIN_EXE_hc1img").into(),
        "build".into(),
        profile.display().to_string(),
        "--source-url".into(),
        tarball.display().to_string(),
        "--source-sha256".into(),
        sha,
        "--out".into(),
        out.display().to_string(),
        "--no-packages".into(),
    ]);
    argv.extend(secrets(&root.join("secrets")));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&cwd)
        .env("HC1IMG_CACHE", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("TZ", v.tz.unwrap_or("UTC"));
    match v.lang {
        Some((lang, lc_all)) => cmd.env("LANG", lang).env("LC_ALL", lc_all),
        None => cmd.env("LANG", "C.UTF-8").env_remove("LC_ALL"),
    };
    if v.one_cpu {
        for var in [
            "RAYON_NUM_THREADS",
            "TOKIO_WORKER_THREADS",
            "OMP_NUM_THREADS",
        ] {
            cmd.env(var, "1");
        }
    } else {
        for var in [
            "RAYON_NUM_THREADS",
            "TOKIO_WORKER_THREADS",
            "OMP_NUM_THREADS",
        ] {
            cmd.env_remove(var);
        }
    }
    let o = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); install it (scripts/test does: util-linux, faketime)",
            argv[0]
        )
    });
    assert!(
        o.status.success(),
        "{label}: hc1img build failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let manifest_bytes = std::fs::read(out.join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let outputs = Outputs {
        ssd_content: content_digest(&out.join("ssd.img")),
        sd_content: content_digest(&out.join("sd.img")),
        ssd_sha256: m["outputs"]["ssd.img"]["sha256"]
            .as_str()
            .unwrap()
            .to_string(),
        sd_sha256: m["outputs"]["sd.img"]["sha256"]
            .as_str()
            .unwrap()
            .to_string(),
        manifest: sha256_hex(&manifest_bytes),
    };
    eprintln!(
        "repro {label:<16} ssd.img {}  sd.img {}  manifest.json {}",
        outputs.ssd_sha256, outputs.sd_sha256, outputs.manifest
    );
    std::fs::remove_dir_all(&root).unwrap();
    outputs
}

/// The reference build, made once per test binary.
fn reference() -> &'static Outputs {
    static R: OnceLock<Outputs> = OnceLock::new();
    R.get_or_init(|| build("reference", &Vary::default()))
}

fn assert_same(label: &str, v: Vary) {
    let want = reference().clone();
    let got = build(label, &v);
    assert_eq!(
        got.ssd_content, want.ssd_content,
        "{label}: ssd.img content differs from the reference build ({v:?})"
    );
    assert_eq!(
        got.sd_content, want.sd_content,
        "{label}: sd.img content differs from the reference build ({v:?})"
    );
    assert_eq!(
        (&got.ssd_sha256, &got.sd_sha256),
        (&want.ssd_sha256, &want.sd_sha256),
        "{label}: manifest.json records other output digests ({v:?})"
    );
    assert_eq!(
        got.manifest, want.manifest,
        "{label}: manifest.json differs ({v:?})"
    );
}

#[test]
fn working_directory() {
    assert_same(
        "cwd",
        Vary {
            cwd: Some("elsewhere/deeper/cwd"),
            ..Vary::default()
        },
    );
}

#[test]
fn out_path() {
    assert_same(
        "out",
        Vary {
            out: Some("another-out/x/y"),
            ..Vary::default()
        },
    );
}

#[test]
fn cache_dir() {
    assert_same(
        "cache",
        Vary {
            cache: Some("other-cache"),
            ..Vary::default()
        },
    );
}

#[test]
fn umask() {
    assert_same(
        "umask",
        Vary {
            umask: Some("077"),
            ..Vary::default()
        },
    );
}

/// The overlay as a checkout made under umask 077: git records only the execute bit, so the
/// image (0644/0755 files, 0755 directories) and its identifiers must not change. Known to
/// fail: src/plan.rs `walk_overlay` hashes the host's full permission bits (`dir {mode:o}`,
/// `file {mode:o} …`) into the derivation, whose hash seeds every UUID and volume ID.
#[test]
fn checkout_umask() {
    assert_same(
        "checkout-umask",
        Vary {
            checkout_umask_077: true,
            ..Vary::default()
        },
    );
}

#[test]
fn time_zone() {
    assert_same(
        "tz",
        Vary {
            tz: Some("Pacific/Kiritimati"),
            ..Vary::default()
        },
    );
}

#[test]
fn locale() {
    assert_same(
        "lang",
        Vary {
            lang: Some(("de_DE.UTF-8", "tr_TR.UTF-8")),
            ..Vary::default()
        },
    );
}

#[test]
fn wall_clock() {
    assert_same(
        "faketime",
        Vary {
            faketime: Some("2031-01-01 00:00:00"),
            ..Vary::default()
        },
    );
}

#[test]
fn thread_count() {
    assert_same(
        "one-cpu",
        Vary {
            one_cpu: true,
            ..Vary::default()
        },
    );
}

#[test]
fn overlay_file_order() {
    assert_same(
        "overlay-order",
        Vary {
            reverse_overlay: true,
            ..Vary::default()
        },
    );
}

#[test]
fn everything_at_once() {
    assert_same("all", Vary::all());
}

/// The image comparison must be able to fail, and must not depend on where holes lie: a
/// file with a hole digests like the same bytes written out, and unlike it with one byte off.
#[test]
fn content_digest_is_byte_equality() {
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("sparse");
    let dense = dir.path().join("dense");
    let f = File::create(&sparse).unwrap();
    f.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data", 512 * 1024).unwrap();
    let mut bytes = vec![0u8; 1 << 20];
    bytes[512 * 1024..512 * 1024 + 4].copy_from_slice(b"data");
    std::fs::write(&dense, &bytes).unwrap();
    assert_eq!(content_digest(&sparse), content_digest(&dense));
    bytes[1000] = 1;
    std::fs::write(&dense, &bytes).unwrap();
    assert_ne!(content_digest(&sparse), content_digest(&dense));
    bytes[1000] = 0;
    bytes.push(0);
    std::fs::write(&dense, &bytes).unwrap();
    assert_ne!(
        content_digest(&sparse),
        content_digest(&dense),
        "size counts"
    );
}
