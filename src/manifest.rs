//! `manifest.json`: what a build was made from and what it made.
//!
//! Inputs (source URL, sha256 and size, the digests of the profile chain, board file and
//! overlay files, the tool's version and output-format version), the derivation hash, and for
//! each output image its size and sha256. Secret values never appear here; only the derivation
//! hash depends on their digests. Keys are sorted (serde_json's `BTreeMap`s) so the same build
//! gives the same bytes. `hc1img verify` re-hashes the outputs against it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::source::{sha256_file, sha256_file_with};

/// One output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub size: u64,
    pub sha256: String,
}

/// The root tarball a build used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub url: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub tool_version: String,
    pub format_version: u32,
    pub profile: String,
    pub derivation: String,
    pub source: SourceRecord,
    /// Every input of the derivation: kind/name → digest (never a secret's value).
    pub inputs: BTreeMap<String, String>,
    /// Output files by name.
    pub outputs: BTreeMap<String, OutputFile>,
    /// What the node's first boot runs for the packages (`hc1-pacman-deferred.service`): each
    /// deferred alpm hook and reviewed scriptlet, one line each; absent when nothing is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_boot: Vec<String>,
}

impl Manifest {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join("manifest.json");
        let mut text =
            serde_json::to_string_pretty(self).context("cannot serialise manifest.json")?;
        text.push('\n');
        std::fs::write(&p, text).with_context(|| format!("{}: cannot write", p.display()))
    }

    pub fn read(dir: &Path) -> Result<Manifest> {
        Manifest::read_file(&dir.join("manifest.json"))
    }

    /// Read a manifest from the file `p` (a release names them `<profile>-manifest.json`).
    pub fn read_file(p: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(p).with_context(|| {
            format!(
                "{}: cannot read (is this an hc1img output directory?)",
                p.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid hc1img manifest", p.display()))
    }
}

/// Size and SHA-256 of each of `paths`, one thread per file (the images are hashed at the
/// same time); `progress` gets the total bytes hashed so far.
pub fn hash_files(
    paths: &[std::path::PathBuf],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<OutputFile>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| {
                let done = &done;
                s.spawn(move || {
                    let last = AtomicU64::new(0);
                    sha256_file_with(p, &|n| {
                        let d = n - last.swap(n, Ordering::Relaxed);
                        progress(done.fetch_add(d, Ordering::Relaxed) + d);
                    })
                    .map(|(size, sha256)| OutputFile { size, sha256 })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a hashing thread crashed")))
            })
            .collect()
    })
}

/// Re-hash the outputs of the build in `dir` against its manifest. Returns one line per file
/// (`ok`/`DIFFERS`/`missing`) and fails when any differs.
pub fn verify(dir: &Path) -> Result<Vec<String>> {
    let m = Manifest::read(dir)?;
    let mut lines = Vec::new();
    let mut bad = 0;
    for (name, want) in &m.outputs {
        let p = dir.join(name);
        if !p.exists() {
            lines.push(format!("{name}: missing"));
            bad += 1;
            continue;
        }
        let got = sha256_file(&p)?;
        let size = std::fs::metadata(&p)?.len();
        if got == want.sha256 && size == want.size {
            lines.push(format!("{name}: ok ({})", &got[..16]));
        } else {
            lines.push(format!(
                "{name}: DIFFERS (manifest {}, file {})",
                &want.sha256[..16],
                &got[..16]
            ));
            bad += 1;
        }
    }
    if bad > 0 {
        bail!(
            "{}: {bad} output(s) differ from manifest.json:\n{}",
            dir.display(),
            lines.join("\n")
        );
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_detects_a_changed_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.img"), b"aaaa").unwrap();
        let mut m = Manifest {
            tool: "hc1img".into(),
            tool_version: "0".into(),
            format_version: 1,
            profile: "p".into(),
            derivation: "00".repeat(32),
            source: SourceRecord {
                url: "file:///x".into(),
                sha256: "11".repeat(32),
            },
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            first_boot: Vec::new(),
        };
        let o = hash_files(&[dir.path().join("a.img")], &|_| {}).unwrap();
        m.outputs.insert("a.img".into(), o[0].clone());
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        assert!(verify(dir.path()).unwrap()[0].contains("ok"));
        std::fs::write(dir.path().join("a.img"), b"aaab").unwrap();
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a.img: DIFFERS"), "{e}");
    }
}
