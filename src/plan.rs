//! The derivation hash: one sha256 over every input that can change a byte of the images, so
//! that `out/<name>-<hash>/` names its content the way a Nix store path does.
//!
//! Inputs, each reduced to a digest (see [`InputKind`]):
//! - `format`: [`FORMAT_VERSION`] and the digest of the embedded `assets/` scripts
//!   ([`crate::sections::embedded_assets`]); the version is bumped whenever hc1img writes different bytes for the same
//!   inputs;
//! - `source`: the pinned sha256 of the root tarball (URLs, mirrors and signatures only say
//!   where the same bytes come from, so they stay out);
//! - `profile`: the resolved profile (after `extends`, defaults and overrides; every section,
//!   including all node sections under `node`) serialised as canonical JSON: keys sorted, sizes
//!   as byte counts, no paths (`node.overlays.dirs` becomes the list of per-overlay digests,
//!   the input files are dropped), no comments, so formatting, key order and the directory
//!   the profile sits in do not matter but every value does;
//! - `board`: the resolved board file, the same way;
//! - `overlay`: one per file, directory or symlink of every overlay tree
//!   (`node.overlays.dirs`), walked in sorted
//!   order: its path inside the overlay, type, permission bits, and content sha256 or link target;
//! - `package`: one per pinned package of `[packages]` (from the lock file), named
//!   `NAME-VERSION`, digest the package file's pinned sha256 (the `[packages]` section itself,
//!   without its mirrors, is part of `profile`);
//! - `secret`: the sha256 of each baked secret's value (`bake = true`; never the value); a
//!   secret taken from the card is not read, and the resolved profile names it as `card`;
//! - `env`: `SOURCE_DATE_EPOCH` when set (timestamps in the images come from it);
//! - `preload`: the sha256 of each `[docker] preload` archive, named by its file name (in the
//!   resolved profile `node.docker.preload` becomes the list of those names).
//!
//! The hash is the sha256 of the canonical JSON of `{"format": N, "inputs": [...]}`.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::profile::Profile;

/// Version of hc1img's output format; part of every derivation hash.
pub const FORMAT_VERSION: u32 = 2;

/// What an [`Input`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Format,
    Source,
    Profile,
    Board,
    Overlay,
    Package,
    Secret,
    Env,
    Preload,
}

/// One input of a derivation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    pub kind: InputKind,
    /// Stable name: the secret's or variable's name, `overlay[N]/path/in/overlay`, …
    pub name: String,
    /// sha256 hex of the input's canonical form (for `format` and `env`: the value itself).
    pub digest: String,
}

/// The derivation of a profile: its hash, the inputs it covers, and the resolved profile
/// (canonical JSON, without paths or secret values) for `--explain` and manifests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derivation {
    /// 64 lowercase hex digits.
    pub hash: String,
    pub inputs: Vec<Input>,
    pub resolved: Value,
}

impl Derivation {
    /// The first 12 hex digits, for directory names.
    pub fn short(&self) -> &str {
        self.hash.get(..12).unwrap_or(&self.hash)
    }
}

/// Compute the derivation of a loaded profile, with `SOURCE_DATE_EPOCH` from the environment.
/// Reads secret values and overlay files; fails when the source is not pinned.
pub fn derivation(profile: &Profile) -> anyhow::Result<Derivation> {
    derivation_with(profile, std::env::var_os("SOURCE_DATE_EPOCH").as_deref())
}

/// [`derivation`] with an explicit `SOURCE_DATE_EPOCH` (`None` = unset).
pub fn derivation_with(
    profile: &Profile,
    source_date_epoch: Option<&std::ffi::OsStr>,
) -> anyhow::Result<Derivation> {
    derive(profile, source_date_epoch, false)
}

/// What `hc1img plan` shows for a profile whose inputs are not all pinned yet (a fresh
/// clone): the derivation with each unpinned input's digest written as [`UNPINNED`]. Its hash
/// names no build; the first build locks the inputs and hashes them.
pub fn preview(profile: &Profile) -> anyhow::Result<Derivation> {
    derive(
        profile,
        std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
        true,
    )
}

/// The digest [`preview`] gives an input that is not pinned.
pub const UNPINNED: &str = "(not pinned: the first build locks it)";

fn derive(
    profile: &Profile,
    source_date_epoch: Option<&std::ffi::OsStr>,
    allow_unpinned: bool,
) -> anyhow::Result<Derivation> {
    let mut inputs = vec![Input {
        kind: InputKind::Format,
        name: "hc1img".to_string(),
        digest: FORMAT_VERSION.to_string(),
    }];

    // The scripts and templates the edits embed into the image (assets/).
    let mut assets = Sha256::new();
    for (name, text) in crate::sections::embedded_assets() {
        assets.update(format!("{name}\0{}\0", text.len()));
        assets.update(text.as_bytes());
    }
    inputs.push(Input {
        kind: InputKind::Format,
        name: "assets".to_string(),
        digest: hex::encode(assets.finalize()),
    });

    let sha = match &profile.source {
        Some(src) if allow_unpinned && src.sha256.is_none() => Some(UNPINNED.to_string()),
        Some(src) => Some(src.require_sha256()?.to_string()),
        None => None,
    };
    if let Some(sha) = &sha {
        inputs.push(Input {
            kind: InputKind::Source,
            name: "rootfs".to_string(),
            digest: sha.clone(),
        });
    }

    let board = serde_json::to_value(&profile.board).context("serialising the board")?;
    inputs.push(Input {
        kind: InputKind::Board,
        name: profile.board.name.clone(),
        digest: sha256_hex(canonical_json(&board).as_bytes()),
    });

    let mut overlay_digests = Vec::new();
    for (i, dir) in profile.node.overlays.dirs.iter().enumerate() {
        let before = inputs.len();
        walk_overlay(dir, &format!("overlay[{i}]"), Path::new(""), &mut inputs)?;
        let mut h = Sha256::new();
        for inp in &inputs[before..] {
            h.update(inp.name.as_bytes());
            h.update([0]);
            h.update(inp.digest.as_bytes());
            h.update([0]);
        }
        overlay_digests.push(Value::String(hex::encode(h.finalize())));
    }

    let mut preload_names = Vec::new();
    for f in &profile.node.docker.preload {
        let name = crate::sections::docker::preload_name(f)
            .with_context(|| format!("docker.preload: {}: not a usable file name", f.display()))?;
        let digest = crate::source::sha256_file(f)
            .with_context(|| format!("docker.preload: {}", f.display()))?;
        inputs.push(Input {
            kind: InputKind::Preload,
            name: name.clone(),
            digest,
        });
        preload_names.push(Value::String(name));
    }

    if let Some(pins) = profile.packages.as_ref().and_then(|p| p.pins.as_ref()) {
        inputs.extend(pin_list(pins));
    } else if allow_unpinned && profile.packages.is_some() {
        inputs.push(Input {
            kind: InputKind::Package,
            name: "[packages]".to_string(),
            digest: UNPINNED.to_string(),
        });
    }

    // Only baked secrets reach the image; the others are not read at all.
    for (name, _) in profile
        .secrets
        .iter()
        .filter(|(_, src)| **src != crate::profile::SecretSource::Card)
    {
        let s = profile.secret(name)?;
        inputs.push(Input {
            kind: InputKind::Secret,
            name: name.clone(),
            digest: s.digest(),
        });
    }

    if let Some(v) = source_date_epoch {
        let s = v.to_str().unwrap_or("");
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.parse::<u64>().is_err() {
            anyhow::bail!(
                "SOURCE_DATE_EPOCH={:?}: expected a number of seconds since 1970-01-01 UTC",
                v
            );
        }
        inputs.push(Input {
            kind: InputKind::Env,
            name: "SOURCE_DATE_EPOCH".to_string(),
            digest: s.to_string(),
        });
    }

    // The resolved profile, without paths and without where things come from.
    let mut resolved = serde_json::to_value(profile).context("serialising the profile")?;
    if let Value::Object(m) = &mut resolved {
        m.remove("files");
        m.remove("board");
        m.insert(
            "source".to_string(),
            match &sha {
                Some(s) => serde_json::json!({ "sha256": s }),
                None => Value::Null,
            },
        );
        // Each declared secret: baked into the image, or taken from the node's card.
        let secrets: serde_json::Map<String, Value> = profile
            .secrets
            .iter()
            .map(|(k, src)| {
                let how = if *src == crate::profile::SecretSource::Card {
                    "card"
                } else {
                    "baked"
                };
                (k.clone(), Value::String(how.to_string()))
            })
            .collect();
        m.insert("secrets".to_string(), Value::Object(secrets));
        // `[swarm]` at the top, where it was before it joined the sections' registry (so the
        // hash of a profile did not change with that refactor).
        let swarm = match m.get_mut("node") {
            Some(Value::Object(n)) => n.remove("swarm"),
            _ => None,
        };
        m.insert("swarm".to_string(), swarm.unwrap_or(Value::Null));
        // The preloaded archives by name (their digests are inputs), not by path.
        if !preload_names.is_empty() {
            match m.get_mut("node").and_then(|n| n.get_mut("docker")) {
                Some(Value::Object(d)) => {
                    d.insert("preload".to_string(), Value::Array(preload_names));
                }
                _ => anyhow::bail!("internal: the serialised profile has no node.docker table"),
            }
        }
        // The overlay directories by content digest, not by path.
        match m.get_mut("node").and_then(|n| n.get_mut("overlays")) {
            Some(Value::Object(o)) => {
                o.insert("dirs".to_string(), Value::Array(overlay_digests));
            }
            _ => anyhow::bail!("internal: the serialised profile has no node.overlays table"),
        }
    }
    inputs.push(Input {
        kind: InputKind::Profile,
        name: profile.name.clone(),
        digest: sha256_hex(canonical_json(&resolved).as_bytes()),
    });
    if let Value::Object(m) = &mut resolved {
        m.insert("board".to_string(), board);
    }

    inputs.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let top = serde_json::json!({
        "format": FORMAT_VERSION,
        "inputs": serde_json::to_value(&inputs).context("serialising the inputs")?,
    });
    let hash = sha256_hex(canonical_json(&top).as_bytes());
    Ok(Derivation {
        hash,
        inputs,
        resolved,
    })
}

/// The `package` inputs of a lock set.
fn pin_list(set: &crate::packages::LockedSet) -> Vec<Input> {
    set.package
        .iter()
        .map(|p| Input {
            kind: InputKind::Package,
            name: format!("{}-{}", p.name, p.version),
            digest: p.sha256.clone(),
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// JSON with object keys sorted (by UTF-8 bytes) and no whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Add one input per entry under `root/rel`, in sorted name order (depth first).
fn walk_overlay(
    root: &Path,
    label: &str,
    rel: &Path,
    inputs: &mut Vec<Input>,
) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let rd = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "overlay {}: reading directory {}",
            root.display(),
            dir.display()
        )
    })?;
    let mut entries = Vec::new();
    for e in rd {
        let e = e.with_context(|| {
            format!(
                "overlay {}: reading directory {}",
                root.display(),
                dir.display()
            )
        })?;
        entries.push(e.file_name());
    }
    entries.sort();
    for name in entries {
        let Some(name_str) = name.to_str() else {
            anyhow::bail!(
                "overlay {}: file name {:?} in {} is not UTF-8; rename it",
                root.display(),
                name,
                dir.display()
            );
        };
        let rel_child = rel.join(name_str);
        let path = root.join(&rel_child);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("overlay {}: reading {}", root.display(), path.display()))?;
        // Only what the image uses: the execute bit (overlay files become 0644 or 0755 unless
        // the profile sets a mode). The rest of the host's mode depends on the checkout's
        // umask and must not change the derivation.
        let exec = if mode_bits(&meta) & 0o111 != 0 {
            "x"
        } else {
            "-"
        };
        let ft = meta.file_type();
        let rel_name = rel_child
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let digest_src = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).with_context(|| {
                format!(
                    "overlay {}: reading link {}",
                    root.display(),
                    path.display()
                )
            })?;
            let t = target.to_str().ok_or_else(|| {
                anyhow::anyhow!(
                    "overlay {}: link target of {} is not UTF-8",
                    root.display(),
                    path.display()
                )
            })?;
            format!("symlink {t}")
        } else if ft.is_file() {
            let mut f = std::fs::File::open(&path).with_context(|| {
                format!("overlay {}: opening {}", root.display(), path.display())
            })?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).with_context(|| {
                    format!("overlay {}: reading {}", root.display(), path.display())
                })?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            format!("file {exec} {}", hex::encode(h.finalize()))
        } else {
            anyhow::bail!(
                "overlay {}: {} is not a regular file, directory or symlink",
                root.display(),
                path.display()
            );
        };
        inputs.push(Input {
            kind: InputKind::Overlay,
            name: format!("{label}/{rel_name}"),
            digest: sha256_hex(digest_src.as_bytes()),
        });
        if ft.is_dir() {
            walk_overlay(root, label, &rel_child, inputs)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn mode_bits(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_bits(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}
