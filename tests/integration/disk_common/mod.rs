//! Helpers shared by the disk/fat/uboot integration tests: running the real oracle tools.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Run `tool args...`; panic with a clear message if the tool is missing (tests must fail,
/// never skip, when an oracle is absent) or if it exits non-zero.
pub fn run(tool: &str, args: &[&str]) -> Output {
    let out = run_status(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Like [`run`] but returns whatever the exit status was.
pub fn run_status(tool: &str, args: &[&str]) -> Output {
    run_env(tool, args, &[])
}

/// Run with extra environment variables.
pub fn run_env(tool: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Debian puts some oracles in /usr/sbin, which may not be on a user's PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "oracle tool `{tool}` could not be run ({e}); install it: \
             apt-get install -y gdisk fdisk dosfstools mtools u-boot-tools util-linux bmap-tools e2fsprogs"
        ),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn read_range(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Deterministic pseudo-random bytes (xorshift), never all zero at the ends.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    if let Some(first) = v.first_mut() {
        *first |= 1;
    }
    if let Some(last) = v.last_mut() {
        *last |= 0x80;
    }
    v
}

/// Assert two byte strings are equal; on failure report the first differing offset and a
/// short window of each side instead of dumping everything.
pub fn assert_same_bytes(ours: &[u8], theirs: &[u8], what: &str) {
    if ours == theirs {
        return;
    }
    let first = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let lo = first.saturating_sub(8);
    let win = |v: &[u8]| hex::encode(&v[lo.min(v.len())..(first + 24).min(v.len())]);
    panic!(
        "{what}: bytes differ (lengths {} vs {}), first difference at offset {first} ({first:#x});\n\
         ours   [{lo:#x}..]: {}\n theirs [{lo:#x}..]: {}",
        ours.len(),
        theirs.len(),
        win(ours),
        win(theirs)
    );
}
