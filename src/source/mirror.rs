//! Mirrors given on the command line (`--mirror URL`, repeatable) or in `HC1IMG_MIRROR`
//! (space-separated), tried before a profile's own URLs for every file hc1img fetches.
//!
//! A mirror is the base of a tree laid out like an Arch Linux ARM mirror (what `hc1img vendor`
//! writes, and what `os.archlinuxarm.org` / `mirror.archlinuxarm.org` serve):
//!
//! - `<base>/os/<tarball>` and `<base>/os/<tarball>.sig`: root tarballs and their signatures;
//! - `<base>/<arch>/<repo>/<file>`: a repository's packages, their `.sig` files and its
//!   `<repo>.db` (the `$arch/$repo` of pacman's mirrorlist, `pacman.conf(5)`).
//!
//! Bases are `http://`, `https://` or `file://` URLs (RFC 8089) or plain directories.

use anyhow::{Result, bail};

/// The environment variable holding space-separated mirror bases.
pub const MIRROR_ENV: &str = "HC1IMG_MIRROR";

/// Mirror bases in the order they are tried (no trailing `/`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirrors(Vec<String>);

impl Mirrors {
    /// The `--mirror` values first, then those of `HC1IMG_MIRROR` (`env`), checked.
    pub fn new(args: &[String], env: Option<&str>) -> Result<Mirrors> {
        let mut v: Vec<String> = Vec::new();
        let from_env = env
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned);
        for m in args.iter().cloned().chain(from_env) {
            let ok = m.starts_with("http://")
                || m.starts_with("https://")
                || m.starts_with("file:///")
                || !m.contains("://");
            if m.is_empty() || !ok || m.chars().any(char::is_whitespace) {
                bail!(
                    "mirror {m:?} (--mirror or {MIRROR_ENV}): expected http(s)://HOST/PATH, \
                     file:///PATH or a directory laid out like `hc1img vendor` writes it"
                );
            }
            let m = m.trim_end_matches('/').to_owned();
            if !v.contains(&m) {
                v.push(m);
            }
        }
        Ok(Mirrors(v))
    }

    /// From `--mirror` values and the process environment.
    pub fn from_env(args: &[String]) -> Result<Mirrors> {
        Mirrors::new(args, std::env::var(MIRROR_ENV).ok().as_deref())
    }

    /// Whether no mirror is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `<base>/os/<file>` for each base: where a root tarball (or its `.sig`) named `file` is.
    pub fn tarball(&self, file: &str) -> Vec<String> {
        self.0.iter().map(|b| format!("{b}/os/{file}")).collect()
    }

    /// `<base>/<arch>/<repo>/<file>` for each base.
    pub fn repo_file(&self, arch: &str, repo: &str, file: &str) -> Vec<String> {
        self.0
            .iter()
            .map(|b| format!("{b}/{arch}/{repo}/{file}"))
            .collect()
    }
}

/// The last path segment of a URL (its file name), without query or fragment.
pub fn file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// `first` then those of `rest` not already in it.
pub fn prepend(first: Vec<String>, rest: &[String]) -> Vec<String> {
    let mut v = first;
    for u in rest {
        if !v.contains(u) {
            v.push(u.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_come_before_the_environment_and_layout_is_alarms() -> Result<()> {
        let m = Mirrors::new(
            &["file:///srv/v/".into()],
            Some(" http://127.0.0.1:8/m  file:///srv/v "),
        )?;
        assert_eq!(
            m.tarball("A.tar.gz"),
            [
                "file:///srv/v/os/A.tar.gz",
                "http://127.0.0.1:8/m/os/A.tar.gz"
            ]
        );
        assert_eq!(
            m.repo_file("armv7h", "core", "core.db")[1],
            "http://127.0.0.1:8/m/armv7h/core/core.db"
        );
        assert!(Mirrors::new(&["ftp://x".into()], None).is_err());
        assert!(Mirrors::new(&[], None)?.is_empty());
        assert_eq!(file_name("http://h/os/A.tar.gz?x=1"), "A.tar.gz");
        Ok(())
    }
}
