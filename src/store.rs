//! The content-addressed output store: `out/<name>-<first 12 hex of the derivation>/`, with
//! `out/<name>` a symlink to the newest build of that profile (like Nix's `result`).
//!
//! A build writes into a temporary sibling directory (`.tmp-…`) and renames it into place only
//! when every output is complete, so an interrupted or failed build leaves no output directory
//! behind; a directory that exists and holds a `manifest.json` is complete by construction.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Files every complete output directory holds.
pub const OUTPUTS: [&str; 3] = ["ssd.img", "sd.img", "manifest.json"];

/// Where a profile's build goes.
#[derive(Clone, Debug)]
pub struct OutDir {
    /// Final directory.
    pub dir: PathBuf,
    /// The `out/<name>` symlink to update, when the directory is the default store path.
    pub link: Option<PathBuf>,
}

impl OutDir {
    /// The default store location under `root` (normally `out/`).
    pub fn in_store(root: &Path, name: &str, derivation: &str) -> OutDir {
        let short = &derivation[..derivation.len().min(12)];
        OutDir {
            dir: root.join(format!("{name}-{short}")),
            link: Some(root.join(name)),
        }
    }

    /// An explicit `--out DIR`.
    pub fn explicit(dir: PathBuf) -> OutDir {
        OutDir { dir, link: None }
    }

    /// Whether a complete build is already there.
    pub fn is_complete(&self) -> bool {
        OUTPUTS.iter().all(|f| self.dir.join(f).is_file())
    }

    /// Create a fresh temporary directory next to the final one.
    pub fn start(&self) -> Result<Staging> {
        let parent = match self.dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).with_context(|| {
            format!(
                "{}: cannot create the output directory's parent",
                parent.display()
            )
        })?;
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{name}-"))
            .tempdir_in(&parent)
            .with_context(|| {
                format!(
                    "{}: cannot create a temporary build directory",
                    parent.display()
                )
            })?;
        Ok(Staging {
            tmp: Some(tmp),
            out: self.clone(),
        })
    }
}

/// A build in progress; dropped without [`Staging::commit`], it removes itself.
pub struct Staging {
    tmp: Option<tempfile::TempDir>,
    out: OutDir,
}

impl Staging {
    pub fn path(&self) -> &Path {
        match &self.tmp {
            Some(t) => t.path(),
            None => &self.out.dir,
        }
    }

    /// Move the finished outputs into place (replacing an older incomplete or `--rebuild`
    /// directory) and point the store symlink at them.
    pub fn commit(mut self) -> Result<PathBuf> {
        for f in OUTPUTS {
            if !self.path().join(f).is_file() {
                bail!("internal error: build finished without {f}");
            }
        }
        let Some(tmp) = self.tmp.take() else {
            bail!("internal error: staging committed twice");
        };
        let tmp = tmp.keep();
        let dir = &self.out.dir;
        if dir.exists() {
            // Keep the old one until the new one is in place.
            let old = dir.with_extension(format!("old-{}", std::process::id()));
            fs::rename(dir, &old)
                .with_context(|| format!("{}: cannot move the old output aside", dir.display()))?;
            fs::rename(&tmp, dir)
                .with_context(|| format!("{}: cannot move the build into place", dir.display()))?;
            fs::remove_dir_all(&old)
                .with_context(|| format!("{}: cannot remove the old output", old.display()))?;
        } else {
            fs::rename(&tmp, dir)
                .with_context(|| format!("{}: cannot move the build into place", dir.display()))?;
        }
        if let Some(link) = &self.out.link {
            update_link(link, dir)?;
        }
        Ok(dir.clone())
    }
}

/// Point `link` at `dir` (relative, atomically via a temporary link and rename).
fn update_link(link: &Path, dir: &Path) -> Result<()> {
    let target = dir
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.to_path_buf());
    if link.exists() && !link.is_symlink() {
        bail!(
            "{}: exists and is not a symlink; remove it so hc1img can point it at the newest build",
            link.display()
        );
    }
    let tmp = link.with_extension(format!("link-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .with_context(|| format!("{}: cannot create symlink", tmp.display()))?;
    fs::rename(&tmp, link).with_context(|| format!("{}: cannot update symlink", link.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_commits_atomically_and_links() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::in_store(root.path(), "worker", "0123456789abcdef");
        assert_eq!(out.dir, root.path().join("worker-0123456789ab"));
        assert!(!out.is_complete());
        let s = out.start().unwrap();
        for f in OUTPUTS {
            fs::write(s.path().join(f), f).unwrap();
        }
        let dir = s.commit().unwrap();
        assert!(out.is_complete());
        assert_eq!(
            fs::read_link(root.path().join("worker")).unwrap(),
            PathBuf::from("worker-0123456789ab")
        );
        assert_eq!(fs::read(dir.join("sd.img")).unwrap(), b"sd.img");
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::in_store(root.path(), "w", "ff");
        {
            let s = out.start().unwrap();
            fs::write(s.path().join("ssd.img"), b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_refuses_incomplete_output() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::explicit(root.path().join("x"));
        let s = out.start().unwrap();
        fs::write(s.path().join("ssd.img"), b"").unwrap();
        assert!(s.commit().is_err());
        assert!(!root.path().join("x").exists());
    }
}
