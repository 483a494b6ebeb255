//! The lock file (`hc1img.lock`, next to the profile file that declares `[source]`): the
//! sha256/size pins of source tarballs and the `[packages]` pins, read with located errors and
//! written atomically (a temporary file renamed over it).

use std::path::Path;

use anyhow::Context as _;

use super::check::Validator;
use super::node::{self, Sources};
use super::schema::LockFile;
use super::secrets;

/// Name of the lock file kept next to the profile file that declares `[source]`.
pub const LOCK_FILE_NAME: &str = "hc1img.lock";

/// True for 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Read and check a lock file.
pub fn read_lock(path: &Path) -> anyhow::Result<LockFile> {
    let mut sources = Sources::default();
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read lock file: {}",
            path.display(),
            secrets::io_reason(&e)
        )
    })?;
    let idx = sources.add(path, text);
    let doc = node::parse(&sources, idx)?;
    let lock: LockFile = node::from_node(&doc, &sources).map_err(anyhow::Error::msg)?;
    let v = Validator {
        sources: &sources,
        root: &doc,
    };
    for (name, set) in &lock.packages {
        for (i, p) in set.package.iter().enumerate() {
            if !is_sha256_hex(&p.sha256) || p.filename.contains('/') || p.filename.is_empty() {
                return Err(v.err(
                    &["packages", name],
                    format!("package[{i}] ({}): needs a plain filename and a 64-hex sha256; re-pin with `hc1img lock`", p.name),
                ));
            }
        }
    }
    for (url, pin) in &lock.pins {
        v.url(&["pins", url], url)?;
        if !is_sha256_hex(&pin.sha256) {
            return Err(v.err(
                &["pins", url, "sha256"],
                format!(
                    "expected 64 lowercase hex digits, found {:?}; re-pin with `hc1img lock`",
                    pin.sha256
                ),
            ));
        }
    }
    Ok(lock)
}

/// Write a lock file (sorted by URL, with a header comment).
pub fn write_lock(path: &Path, lock: &LockFile) -> anyhow::Result<()> {
    let body = toml::to_string(lock).context("serialising the lock file")?;
    let text = format!(
        "# Pins of the source tarballs and packages, written by `hc1img lock`: re-pin on purpose.\n\n{body}"
    );
    let dir = super::load::parent_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
    }
}
