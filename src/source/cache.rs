//! The content-addressed cache directory: `<root>/sha256/<hex>` holds verified files only,
//! `<root>/tmp/` holds part files and lock files.
//!
//! Files enter `sha256/` only by `rename(2)` from `tmp/` (same file system, atomic) after their
//! hash was checked, so a name under `sha256/` never holds unverified or partial bytes, even if a
//! build is killed mid-download. Installed files are made read-only.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::check_sha256;

/// A content-addressed store of verified files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// Holds an exclusive lock on one hash's lock file until dropped.
pub(crate) struct LockGuard {
    _file: File,
}

impl Cache {
    /// A cache rooted at `root` (created on first use).
    pub fn new(root: PathBuf) -> Cache {
        Cache { root }
    }

    /// The cache named by `$HC1IMG_CACHE`, else `$XDG_CACHE_HOME/hc1img`, else
    /// `~/.cache/hc1img`.
    pub fn from_env() -> Result<Cache> {
        root_from_vars(|k| std::env::var_os(k)).map(Cache::new)
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file with this SHA-256 lives (or would live) in the cache.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// The cached file with this SHA-256, if the cache holds it. Files are renamed into the
    /// cache only after verification, so a hit needs no re-hashing.
    pub fn lookup(&self, sha256: &str) -> Option<PathBuf> {
        if check_sha256(sha256).is_err() {
            return None;
        }
        let path = self.path_for(sha256);
        path.is_file().then_some(path)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Creates `sha256/` and `tmp/` under the root.
    pub(crate) fn ensure_dirs(&self) -> Result<()> {
        for dir in [self.root.join("sha256"), self.tmp_dir()] {
            fs::create_dir_all(&dir).with_context(|| {
                format!(
                    "cannot create cache directory {}; set HC1IMG_CACHE to a writable directory",
                    dir.display()
                )
            })?;
        }
        Ok(())
    }

    /// Takes the exclusive lock for `sha256`, waiting for another build that holds it.
    pub(crate) fn lock(&self, sha256: &str) -> Result<LockGuard> {
        let path = self.tmp_dir().join(format!("{sha256}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(LockGuard { _file: file })
    }

    /// The part file for a pinned download (only used while holding [`Cache::lock`]).
    pub(crate) fn part_path(&self, sha256: &str) -> PathBuf {
        self.tmp_dir().join(format!("{sha256}.part"))
    }

    /// A fresh, unique part file name for a download whose hash is not known yet.
    pub(crate) fn unique_part_path(&self) -> Result<PathBuf> {
        let file = tempfile::Builder::new()
            .prefix("unpinned-")
            .suffix(".part")
            .tempfile_in(self.tmp_dir())
            .with_context(|| {
                format!("cannot create a part file in {}", self.tmp_dir().display())
            })?;
        let (_, path) = file
            .keep()
            .with_context(|| format!("cannot keep part file in {}", self.tmp_dir().display()))?;
        Ok(path)
    }

    /// Moves a verified part file to its final name (caller holds the lock for `sha256`).
    pub(crate) fn install(&self, part: &Path, sha256: &str) -> Result<PathBuf> {
        let dest = self.path_for(sha256);
        make_read_only(part)?;
        fs::rename(part, &dest).with_context(|| {
            format!(
                "cannot move {} to {} in the cache",
                part.display(),
                dest.display()
            )
        })?;
        Ok(dest)
    }

    /// Installs a part file whose hash was just computed, taking the lock; if the cache already
    /// holds that hash the part file is dropped (same bytes).
    pub(crate) fn install_unlocked_dedup(&self, part: &Path, sha256: &str) -> Result<PathBuf> {
        let _lock = self.lock(sha256)?;
        if let Some(existing) = self.lookup(sha256) {
            let _ = fs::remove_file(part);
            return Ok(existing);
        }
        self.install(part, sha256)
    }
}

fn make_read_only(path: &Path) -> Result<()> {
    let mut perms = fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms)
        .with_context(|| format!("cannot make {} read-only", path.display()))
}

/// The cache root from environment variables (`var` looks one up), see [`Cache::from_env`].
fn root_from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(dir) = set("HC1IMG_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    // XDG Base Directory spec: relative values are invalid and must be ignored.
    if let Some(dir) = set("XDG_CACHE_HOME").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Ok(dir.join("hc1img"));
    }
    if let Some(home) = set("HOME") {
        return Ok(PathBuf::from(home).join(".cache").join("hc1img"));
    }
    bail!(
        "cannot find a cache directory: none of HC1IMG_CACHE, XDG_CACHE_HOME, HOME is set; set HC1IMG_CACHE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn root_prefers_hc1img_cache_then_xdg_then_home() -> Result<()> {
        let all = [
            ("HC1IMG_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(root_from_vars(vars(&all))?, PathBuf::from("/c"));
        assert_eq!(root_from_vars(vars(&all[1..]))?, PathBuf::from("/x/hc1img"));
        assert_eq!(
            root_from_vars(vars(&all[2..]))?,
            PathBuf::from("/h/.cache/hc1img")
        );
        // Empty and relative values are ignored.
        let odd = [
            ("HC1IMG_CACHE", ""),
            ("XDG_CACHE_HOME", "rel"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            root_from_vars(vars(&odd))?,
            PathBuf::from("/h/.cache/hc1img")
        );
        assert!(root_from_vars(vars(&[])).is_err());
        Ok(())
    }

    #[test]
    fn lookup_rejects_malformed_hashes_and_missing_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = Cache::new(dir.path().to_path_buf());
        let sha = "0".repeat(64);
        assert_eq!(cache.lookup(&sha), None);
        cache.ensure_dirs()?;
        fs::write(cache.path_for(&sha), b"x")?;
        assert_eq!(cache.lookup(&sha), Some(cache.path_for(&sha)));
        assert_eq!(cache.lookup("../sha256/x"), None);
        Ok(())
    }
}
