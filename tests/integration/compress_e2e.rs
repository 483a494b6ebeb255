//! End-to-end: `hc1img build --compress zst|xz` writes compressed images, bmaptool block maps
//! and `SHA256SUMS`, checked with the real tools: `bmaptool copy` of the `.zst` with its
//! `.bmap` reproduces each image byte for byte, `sha256sum -c` accepts `SHA256SUMS`,
//! `xz -dc` inflates the `.xz` copies, and two builds give the same bytes; a build signed with
//! `--sign-key` and then given its compressed copies is signed and checked by
//! [`crate::release_signing`] (`gpgv`, tampering). The compressors
//! themselves: they run on several threads (counted in `/proc/self/task`), their bytes do not
//! depend on the thread count, and `zstd -dc` / `xz -dc` give the image back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use hc1img::disk::bmap::{compress_xz_with, compress_zstd_with};

use crate::common::*;

/// A worker profile with a 256 MiB root, so slow compressors finish in seconds.
fn small_profile(dir: &Path) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        format!(
            "extends = \"{}\"\nname = \"small\"\n[rootfs]\nsize = \"256MiB\"\n",
            repo().join("profiles/worker.toml").display()
        ),
    )
    .unwrap();
    p
}

fn same_file(a: &Path, b: &Path) {
    run_ok("cmp", &[a.to_str().unwrap(), b.to_str().unwrap()]);
}

/// `sha256sum -c SHA256SUMS` in `dir`, and the list names every other file, sorted.
fn sums_check(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the oracle sha256sum ({e}); install coreutils"));
    assert!(
        out.status.success(),
        "sha256sum -c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let listed: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS" && n != "SHA256SUMS.sig")
        .collect();
    files.sort();
    assert_eq!(
        listed, files,
        "SHA256SUMS must list every other file, sorted"
    );
}

fn manifest_outputs(dir: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    m["outputs"].clone()
}

#[test]
fn zst_flashes_with_bmaptool_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let worker = repo().join("profiles/worker.toml");
    let (out1, out2) = (tmp.path().join("out1"), tmp.path().join("out2"));
    for o in [&out1, &out2] {
        build_with(
            tmp.path(),
            &worker,
            &tarball,
            Some(o),
            &["--compress", "zst"],
        );
    }

    for img in ["sd.img", "ssd.img"] {
        let flashed = tmp.path().join(format!("flashed-{img}"));
        run_ok(
            "bmaptool",
            &[
                "copy",
                "--bmap",
                out1.join(format!("{img}.bmap")).to_str().unwrap(),
                out1.join(format!("{img}.zst")).to_str().unwrap(),
                flashed.to_str().unwrap(),
            ],
        );
        same_file(&flashed, &out1.join(img));
        std::fs::remove_file(&flashed).unwrap();
        for f in [format!("{img}.zst"), format!("{img}.bmap")] {
            same_file(&out1.join(&f), &out2.join(&f));
        }
    }
    sums_check(&out1);
    same_file(&out1.join("SHA256SUMS"), &out2.join("SHA256SUMS"));
    // The SBOM: valid SPDX, the same bytes from both builds, listed in the manifest.
    crate::sbom_spdx::assert_spdx_valid(&out1.join("sbom.spdx.json"));
    same_file(&out1.join("sbom.spdx.json"), &out2.join("sbom.spdx.json"));
    let outputs = manifest_outputs(&out1);
    for f in [
        "ssd.img",
        "sd.img",
        "sbom.spdx.json",
        "ssd.img.zst",
        "sd.img.zst",
        "ssd.img.bmap",
        "sd.img.bmap",
    ] {
        if f.ends_with(".img") {
            assert!(outputs[f]["sha256"].is_string(), "manifest lacks {f}");
        } else {
            let want = sha256_file(&out1.join(f));
            assert_eq!(outputs[f]["sha256"], want.as_str(), "manifest entry of {f}");
        }
    }
}

#[test]
fn xz_decompresses_to_the_images() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let profile = small_profile(tmp.path());
    let out = tmp.path().join("out");
    let err = build_with(
        tmp.path(),
        &profile,
        &tarball,
        Some(&out),
        &["--compress", "xz"],
    );
    assert!(err.contains("compressing ssd.img"), "{err}");
    for img in ["sd.img", "ssd.img"] {
        let back = tmp.path().join(format!("back-{img}"));
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "xz -dc '{}' > '{}'",
                out.join(format!("{img}.xz")).display(),
                back.display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "xz -dc failed: {o:?}");
        same_file(&back, &out.join(img));
    }
    sums_check(&out);
    let outputs = manifest_outputs(&out);
    assert!(outputs["sd.img.xz"]["sha256"].is_string(), "{outputs}");
    assert!(outputs["ssd.img.bmap"]["sha256"].is_string(), "{outputs}");
}

/// Run `hc1img build` with `flags`; returns stderr, failing the test when the build fails.
fn build_with(
    cwd: &Path,
    profile: &Path,
    tarball: &Path,
    out: Option<&Path>,
    flags: &[&str],
) -> String {
    let mut cmd = build_command(cwd, profile, tarball, out);
    cmd.env("SOURCE_DATE_EPOCH", "1700000000").args(flags);
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "hc1img build {flags:?} failed:\n{err}");
    err
}

#[test]
fn store_build_gains_compressed_copies_without_rebuilding() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let profile = small_profile(tmp.path());
    // Signed as it is built: SHA256SUMS without --compress, and its signature.
    let key = crate::release_signing::ReleaseKey::new(tmp.path());
    let sign = ["--sign-key", key.secret.to_str().unwrap()];
    let mut log = build_with(tmp.path(), &profile, &tarball, None, &sign);
    let dir = std::fs::canonicalize(tmp.path().join("out/small")).unwrap();
    assert!(!dir.join("sd.img.zst").exists());
    sums_check(&dir);
    crate::release_signing::gpgv_accepts(&key, &dir);
    crate::sbom_spdx::assert_spdx_valid(&dir.join("sbom.spdx.json"));
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let sd_ino = ino(&dir.join("sd.img"));

    // -q: nothing but warnings on stderr.
    let err = build_with(
        tmp.path(),
        &profile,
        &tarball,
        None,
        &["-q", "--compress", "zst"],
    );
    assert!(
        err.lines().all(|l| l.starts_with("warning:")),
        "-q printed more than warnings:\n{err}"
    );
    assert_eq!(
        std::fs::canonicalize(tmp.path().join("out/small")).unwrap(),
        dir,
        "the compressed copies belong to the same output directory"
    );
    // The key is no input: the same derivation, the same images.
    assert_eq!(ino(&dir.join("sd.img")), sd_ino, "the images were rebuilt");
    sums_check(&dir);
    assert!(
        !dir.join("SHA256SUMS.sig").exists(),
        "a signature of the sums before the compressed copies is left"
    );
    let outputs = manifest_outputs(&dir);
    for f in ["ssd.img.zst", "sd.img.zst", "ssd.img.bmap", "sd.img.bmap"] {
        assert!(
            outputs[f]["sha256"].is_string(),
            "manifest lacks {f}: {outputs}"
        );
    }
    // `hc1img verify` re-hashes every listed output, the compressed ones included.
    let v = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("verify")
        .arg(&dir)
        .output()
        .unwrap();
    let vout = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && vout.contains("sd.img.zst: ok"),
        "{vout}"
    );
    // Now complete: a third run builds nothing, and signs the complete sums.
    let err = build_with(
        tmp.path(),
        &profile,
        &tarball,
        None,
        &["--compress", "zst", sign[0], sign[1]],
    );
    assert!(err.contains("is up to date"), "{err}");
    assert!(!err.contains("compressing"), "{err}");
    crate::release_signing::gpgv_accepts(&key, &dir);
    log.push_str(&err);
    crate::release_signing::sign_and_verify(tmp.path(), &dir, &key, &mut log);
    run_ok(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            dir.join("sd.img.bmap").to_str().unwrap(),
            dir.join("sd.img.zst").to_str().unwrap(),
            tmp.path().join("f.img").to_str().unwrap(),
        ],
    );
    same_file(&tmp.path().join("f.img"), &dir.join("sd.img"));
}

/// A sparse image of `mib` MiB: compressible text-like data with a hole in the middle, so the
/// compressors see several jobs/blocks of real work and of zeros.
fn text_image(dir: &Path, mib: usize) -> PathBuf {
    let words = [
        "root", "ext4", "boot", "node", "swarm", "docker", "x", "0x1f8b", "sda1", "\n",
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = Vec::with_capacity(mib << 20);
    while data.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(words[(x % 10) as usize].as_bytes());
        data.push((x >> 32) as u8);
    }
    data.truncate(mib << 20);
    let p = dir.join("text.img");
    let f = std::fs::File::create(&p).unwrap();
    let half = (mib / 2) << 20;
    std::os::unix::fs::FileExt::write_all_at(&f, &data[..half], 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &data[half..], (mib as u64) << 20).unwrap();
    p
}

/// Run `compress` on a thread of its own with a unique name and return the largest number of
/// the process's threads that bore that name while it ran (threads inherit their creator's
/// name on Linux, so the compressor's workers count too; others' threads do not).
fn threads_during(name: &str, compress: impl FnOnce(&dyn Fn(u64)) + Send) -> usize {
    let most = AtomicUsize::new(0);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(s, || {
                compress(&|_| {
                    let n = std::fs::read_dir("/proc/self/task")
                        .unwrap()
                        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                        .filter(|c| c.trim_end() == name)
                        .count();
                    most.fetch_max(n, Ordering::Relaxed);
                })
            })
            .unwrap()
            .join()
            .unwrap();
    });
    most.into_inner()
}

/// `tool -dc packed` must give back `image` byte for byte.
fn decompresses_to(tool: &str, packed: &Path, image: &Path) {
    let back = packed.with_extension("back");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{tool} -dc '{}' > '{}'",
            packed.display(),
            back.display()
        ))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the oracle {tool} ({e})"));
    assert!(o.status.success(), "{tool} -dc failed: {o:?}");
    same_file(&back, image);
}

#[test]
fn zstd_uses_every_worker_and_its_bytes_do_not_depend_on_their_number() {
    let tmp = tempfile::tempdir().unwrap();
    let img = text_image(tmp.path(), 48);
    let level = hc1img::commands::ZSTD_LEVEL;
    let mut outs = Vec::new();
    for workers in [1u32, 2, 3] {
        let out = tmp.path().join(format!("w{workers}.zst"));
        let seen = threads_during(&format!("zstd-probe-{workers}"), |on| {
            compress_zstd_with(&img, &out, level, workers, on).unwrap()
        });
        assert!(
            seen > workers as usize,
            "{workers} zstd workers asked for, {seen} threads seen (caller included)"
        );
        outs.push(out);
    }
    same_file(&outs[0], &outs[1]);
    same_file(&outs[0], &outs[2]);
    decompresses_to("zstd", &outs[0], &img);
}

#[test]
fn xz_uses_every_thread_and_its_bytes_do_not_depend_on_their_number() {
    let tmp = tempfile::tempdir().unwrap();
    // 6 MiB of text and a 3 MiB hole in 1 MiB blocks: nine blocks for up to three threads.
    let img = text_image(tmp.path(), 6);
    let preset = hc1img::commands::XZ_PRESET;
    let mut outs = Vec::new();
    for threads in [1u32, 2, 3] {
        let out = tmp.path().join(format!("t{threads}.xz"));
        let seen = threads_during(&format!("xz-probe-{threads}"), |on| {
            compress_xz_with(&img, &out, preset, threads, 1 << 20, on).unwrap()
        });
        assert!(
            seen > threads as usize,
            "{threads} xz threads asked for, {seen} threads seen (caller included)"
        );
        outs.push(out);
    }
    same_file(&outs[0], &outs[1]);
    same_file(&outs[0], &outs[2]);
    decompresses_to("xz", &outs[0], &img);
}
