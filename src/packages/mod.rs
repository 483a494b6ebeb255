//! Extra packages from a pinned Arch Linux ARM repository snapshot, installed at build time
//! without running any ARM code (issue 8).
//!
//! - `hc1img lock` ([`lock`]) downloads each repository's sync database
//!   (`<mirror with $repo/$arch>/<repo>.db`), reads the root tarball's local database,
//!   resolves the dependency closure of `[packages] install` as pacman would
//!   ([`resolve`]) and pins every package (file name, version, sha256, size, repository, URL)
//!   in the lock file under the profile's name ([`LockedSet`]).
//! - `hc1img build` fetches each pinned package into the content-addressed cache (verified
//!   against its sha256: a mismatch aborts the build before any output exists) and, after the
//!   tarball import and before the edits, streams every package into the tree and the ext4
//!   data area with the tarball's own importer ([`install`]), writing
//!   `/var/lib/pacman/local/NAME-VERSION/{desc,files,mtree,install}` like pacman 6.
//! - What pacman would do afterwards on the target (hooks, `.INSTALL` scriptlets) is done
//!   natively where it is declarative (`sysusers.d`) and otherwise deferred to a first-boot
//!   unit ([`firstboot`]).
//!
//! The formats followed are pacman's: `PKGBUILD(5)`/makepkg's `.PKGINFO`, `repo-add(8)` sync
//! databases, libalpm's `be_local.c` (local database), `add.c` (extraction, `backup`),
//! `deps.c` (resolution) and `version.c` (`vercmp`).

pub mod db;
pub mod firstboot;
pub mod install;
pub mod resolve;
pub mod version;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `[packages]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Packages (or `name>=version` constraints) to install, like `pacman -S` targets.
    pub install: Vec<String>,
    /// Repositories in pacman's order (`pacman.conf`): the first one holding a package wins.
    #[serde(default = "default_repositories")]
    pub repositories: Vec<String>,
    /// Mirrors in pacman's mirrorlist syntax (`http://host/$arch/$repo`, `file:///srv/$repo`),
    /// tried in order. Where the bytes come from, not what they are: left out of the
    /// derivation hash (the pins' sha256 are in it).
    #[serde(default, skip_serializing)]
    pub mirrors: Vec<String>,
    /// Arch Linux ARM architecture (`$arch` in mirrors; packages must be this or `any`).
    #[serde(default = "default_architecture")]
    pub architecture: String,
}

fn default_repositories() -> Vec<String> {
    ["core", "extra", "alarm"].map(String::from).to_vec()
}

fn default_architecture() -> String {
    "armv7h".to_string()
}

impl Config {
    /// Check the section; on error, the key path (below `packages`) and the message.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@._+-".contains(&b))
        };
        if self.install.is_empty() {
            return Err(("install", "list at least one package".into()));
        }
        for t in &self.install {
            let d = version::Dep::parse(t);
            if !word(&d.name) || (d.op != version::Op::Any && d.version.is_empty()) {
                return Err((
                    "install",
                    format!(
                        "{t:?}: expected a package name, optionally with a version constraint like \"docker>=1:26\""
                    ),
                ));
            }
        }
        if self.repositories.is_empty() {
            return Err(("repositories", "list at least one repository".into()));
        }
        for r in &self.repositories {
            if !word(r) {
                return Err(("repositories", format!("{r:?}: not a repository name")));
            }
        }
        if !word(&self.architecture) {
            return Err((
                "architecture",
                format!("{:?}: not an architecture", self.architecture),
            ));
        }
        if self.mirrors.is_empty() {
            return Err((
                "mirrors",
                "give at least one mirror, like \"http://mirror.archlinuxarm.org/$arch/$repo\""
                    .into(),
            ));
        }
        for m in &self.mirrors {
            let ok = (m.starts_with("http://") || m.starts_with("https://"))
                && m.split('/').nth(2).is_some_and(|h| !h.is_empty())
                || m.starts_with("file:///");
            if !ok || !m.contains("$repo") || m.chars().any(|c| c.is_whitespace()) {
                return Err((
                    "mirrors",
                    format!(
                        "{m:?}: expected http(s)://HOST/PATH or file:///PATH containing $repo (and usually $arch)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A mirror with `$repo` and `$arch` filled in (no trailing `/`).
    pub fn mirror_url(&self, mirror: &str, repo: &str) -> String {
        mirror
            .replace("$repo", repo)
            .replace("$arch", &self.architecture)
            .trim_end_matches('/')
            .to_string()
    }

    /// Digest of what resolution depends on (targets, repositories, architecture): a lock
    /// set resolved for another digest is stale.
    pub fn digest(&self) -> String {
        let s = format!(
            "install={:?}\nrepositories={:?}\narchitecture={}\n",
            self.install, self.repositories, self.architecture
        );
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}

/// One pinned package in the lock file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PackagePin {
    pub name: String,
    /// `[epoch:]pkgver-pkgrel`.
    pub version: String,
    /// `explicit` (listed in `install`) or `dependency`.
    pub reason: String,
    /// The repository it was resolved from.
    pub repo: String,
    /// `%FILENAME%` in that repository.
    pub filename: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// Where it was found when locked (tried first; the profile's mirrors after it).
    pub url: String,
    /// The tarball's installed version this package replaces, if any.
    #[serde(default)]
    pub upgrades: Option<String>,
}

/// The pins of one profile's `[packages]` (`[packages.NAME]` in the lock file), in install
/// order (dependencies first).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedSet {
    /// The root tarball whose local database the resolution kept (its sha256).
    pub tarball_sha256: String,
    /// [`Config::digest`] of the section this was resolved for.
    pub config: String,
    #[serde(default)]
    pub package: Vec<PackagePin>,
}

/// A profile's `[packages]` with its pins from the lock file (what the profile holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packages {
    pub config: Config,
    pub pins: Option<LockedSet>,
}

impl Serialize for Packages {
    /// The config (without mirrors) and each pin as `name version sha256`: every byte that
    /// ends up in the image, none of where it came from.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            config: &'a Config,
            pins: Vec<String>,
        }
        View {
            config: &self.config,
            pins: self
                .pins
                .iter()
                .flat_map(|l| &l.package)
                .map(|p| format!("{} {} {} {}", p.name, p.version, p.reason, p.sha256))
                .collect(),
        }
        .serialize(s)
    }
}

impl Packages {
    /// The pins, checked to be current for this config and tarball; else an error telling to
    /// run `hc1img lock`.
    pub fn require_pins(&self, profile: &str, tarball_sha256: &str) -> Result<&[PackagePin]> {
        let Some(l) = &self.pins else {
            bail!(
                "profile {profile} has [packages] but the lock file has no pins for it: run `hc1img lock` on the profile"
            );
        };
        if l.config != self.config.digest() {
            bail!(
                "profile {profile}: [packages] changed since its packages were pinned: run `hc1img lock` on the profile"
            );
        }
        if l.tarball_sha256 != tarball_sha256 {
            bail!(
                "profile {profile}: the packages were pinned against root tarball {}, this build uses {tarball_sha256}: run `hc1img lock` on the profile (or build with --no-packages)",
                l.tarball_sha256
            );
        }
        Ok(&l.package)
    }
}

/// True for 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `hc1img lock`'s package part: fetch the databases, resolve against the tarball's local
/// database, return the pins.
pub fn lock(
    cfg: &Config,
    tarball: &Path,
    tarball_sha256: &str,
    cache: &crate::source::Cache,
    opts: &crate::source::FetchOptions,
    rep: &crate::progress::Reporter,
) -> Result<LockedSet> {
    let mut repos = Vec::new();
    for repo in &cfg.repositories {
        let urls: Vec<String> = cfg
            .mirrors
            .iter()
            .map(|m| format!("{}/{repo}.db", cfg.mirror_url(m, repo)))
            .collect();
        rep.step(format!("fetching the {repo} database"));
        let got = crate::source::fetch_unpinned(&urls, cache, opts)
            .with_context(|| format!("repository {repo}: cannot fetch {repo}.db"))?;
        let mut pkgs = db::read_sync_db(&got.path, repo)?;
        pkgs.retain(|p| p.arch == cfg.architecture || p.arch == "any" || p.arch.is_empty());
        repos.push((repo.clone(), pkgs));
    }
    rep.step("reading the tarball's installed packages");
    let installed = db::read_local_from_tarball(tarball)?;
    let chosen = resolve::resolve(&cfg.install, &repos, &installed)?;
    let package = chosen
        .into_iter()
        .map(|c| {
            let url = cfg
                .mirrors
                .first()
                .map(|m| format!("{}/{}", cfg.mirror_url(m, &c.pkg.repo), c.pkg.filename))
                .unwrap_or_default();
            PackagePin {
                reason: match c.reason {
                    resolve::Reason::Explicit => "explicit",
                    resolve::Reason::Dependency => "dependency",
                }
                .to_string(),
                name: c.pkg.name,
                version: c.pkg.version,
                repo: c.pkg.repo,
                filename: c.pkg.filename,
                sha256: c.pkg.sha256,
                size: c.pkg.csize,
                url,
                upgrades: c.upgrades,
            }
        })
        .collect();
    Ok(LockedSet {
        tarball_sha256: tarball_sha256.to_string(),
        config: cfg.digest(),
        package,
    })
}

/// A pinned package fetched into the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub pin: PackagePin,
    pub path: PathBuf,
}

/// Fetch every pinned package into the cache, verified against its sha256.
pub fn fetch(
    cfg: &Config,
    pins: &[PackagePin],
    cache: &crate::source::Cache,
    opts: &crate::source::FetchOptions,
) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    for pin in pins {
        let mut urls = vec![pin.url.clone()];
        for m in &cfg.mirrors {
            let u = format!("{}/{}", cfg.mirror_url(m, &pin.repo), pin.filename);
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        let spec = crate::source::SourceSpec {
            urls,
            sha256: pin.sha256.clone(),
            size: pin.size,
            signature: None,
        };
        let path = crate::source::fetch(&spec, cache, opts).with_context(|| {
            format!(
                "package {}-{} ({}): not fetched; the build stops",
                pin.name, pin.version, pin.filename
            )
        })?;
        out.push(Fetched {
            pin: pin.clone(),
            path,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        toml::from_str(
            "install = [\"docker\"]\nmirrors = [\"http://mirror.archlinuxarm.org/$arch/$repo\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn config_defaults_mirrors_and_checks() {
        let c = cfg();
        assert_eq!(c.repositories, ["core", "extra", "alarm"]);
        assert_eq!(
            c.mirror_url(&c.mirrors[0], "core"),
            "http://mirror.archlinuxarm.org/armv7h/core"
        );
        assert!(c.check().is_ok());
        let mut bad = c.clone();
        bad.mirrors = vec!["ftp://x/$repo".into()];
        assert_eq!(bad.check().unwrap_err().0, "mirrors");
        let mut bad = c.clone();
        bad.install = vec!["docker>=".into()];
        assert_eq!(bad.check().unwrap_err().0, "install");
        assert!(toml::from_str::<Config>("install = []\nmirror = []\n").is_err());
        // Mirrors stay out of the digest and of the serialised (hashed) form.
        let mut other = c.clone();
        other.mirrors = vec!["file:///srv/$repo".into()];
        assert_eq!(c.digest(), other.digest());
        assert!(!serde_json::to_string(&c).unwrap().contains("mirror"));
    }

    #[test]
    fn stale_or_missing_pins_say_run_lock() {
        let c = cfg();
        let p = Packages {
            config: c.clone(),
            pins: None,
        };
        let e = p.require_pins("worker", "a").unwrap_err().to_string();
        assert!(e.contains("hc1img lock"), "{e}");
        let p = Packages {
            config: c.clone(),
            pins: Some(LockedSet {
                tarball_sha256: "a".into(),
                config: c.digest(),
                package: vec![],
            }),
        };
        assert!(p.require_pins("worker", "a").is_ok());
        assert!(p.require_pins("worker", "b").is_err());
    }
}
