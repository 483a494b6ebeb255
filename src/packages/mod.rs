//! Extra packages from a pinned Arch Linux ARM repository snapshot, installed at build time
//! without running any ARM code (issue 8).
//!
//! - `hc1img lock` ([`lock`]) downloads each repository's sync database
//!   (`<mirror with $repo/$arch>/<repo>.db`), reads the root tarball's local database,
//!   resolves the dependency closure of `[packages] install` as pacman would
//!   ([`resolve`]), downloads every chosen package and checks its detached OpenPGP signature
//!   (`%PGPSIG%` from the database, else `<package URL>.sig`) against the keyring, and pins it
//!   (file name, version, sha256, size, repository, URL, signature, signer) in the lock file
//!   under the profile's name ([`LockedSet`]). The databases are unsigned upstream: they only
//!   say which files to take; the packages' own signatures are the trust anchor.
//! - `hc1img build` fetches each pinned package into the content-addressed cache (verified
//!   against its sha256 and its pinned signature before it enters the cache: a mismatch aborts
//!   the build before any output exists) and, after the
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
pub mod hooks;
pub mod install;
pub mod resolve;
pub mod vendor;
pub mod version;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
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
    /// The OpenPGP key file every package must be signed by (relative to the profile; default:
    /// `[source] keyring`, else the built-in Arch Linux ARM key). Which key vouched, not what
    /// the bytes are: left out of the derivation hash.
    #[serde(default, skip_serializing)]
    pub keyring: Option<PathBuf>,
    /// Also pin and install the repositories' current version of every package the tarball
    /// already has (what `pacman -Syu` right after unpacking would do): no partial upgrades.
    /// `false` keeps the tarball's versions (only what `install` needs is added).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub upgrade: bool,
    /// Packages kept at the tarball's version, like pacman's `IgnorePkg`: `upgrade` passes them
    /// by, and an `install` that needs one of them newer is refused, naming it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold: Vec<String>,
    /// Refuse a build that leaves work for the node's first boot: an alpm hook the packages
    /// trigger that hc1img does not do at build time, or a reviewed `.INSTALL` scriptlet (an
    /// image that needs no ARM code run after flashing). Default false: such work is deferred
    /// to `hc1-pacman-deferred.service`, and the build warns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
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
        if self.install.is_empty() && !self.upgrade {
            return Err((
                "install",
                "list at least one package (or keep upgrade = true: a plain `pacman -Syu`)".into(),
            ));
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
        for h in &self.hold {
            if !word(h) {
                return Err(("hold", format!("{h:?}: expected a package name")));
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
        if let Some(k) = &self.keyring
            && !k.is_file()
        {
            return Err(("keyring", format!("{} is not a readable file", k.display())));
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
        let mut s = format!(
            "install={:?}\nrepositories={:?}\narchitecture={}\n",
            self.install, self.repositories, self.architecture
        );
        if !self.upgrade {
            s.push_str("upgrade=false\n");
        }
        if !self.hold.is_empty() {
            s.push_str(&format!("hold={:?}\n", self.hold));
        }
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
    /// Other installed packages (`NAME-VERSION`) this one replaces (`%REPLACES%`): the
    /// install removes them, as `pacman -Syu` does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removes: Vec<String>,
    /// The installed size (`%SIZE%` in the tarball's local database, bytes) of the packages
    /// this one upgrades or removes, read when it was locked: what `size = "auto"` takes off
    /// (a lock without it makes the build read the tarball's local database once more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frees: Option<u64>,
    /// The package file's detached OpenPGP signature, base64 (as `%PGPSIG%`), checked when the
    /// file enters the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Fingerprint of the primary key that made `signature`, when it was locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
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
                .map(|p| {
                    let mut s = format!("{} {} {} {}", p.name, p.version, p.reason, p.sha256);
                    for r in &p.removes {
                        s.push_str(&format!(" replaces {r}"));
                    }
                    s
                })
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

/// Where packages come from and who must have signed them (for [`lock`] and [`fetch`]).
#[derive(Clone, Copy, Debug)]
pub struct Fetcher<'a> {
    pub cache: &'a crate::source::Cache,
    pub opts: &'a crate::source::FetchOptions,
    /// Tried first for every database and package (`--mirror`, `HC1IMG_MIRROR`).
    pub mirrors: &'a crate::source::Mirrors,
    pub keyring: &'a crate::source::Keyring,
}

impl Fetcher<'_> {
    /// Every URL of `file` in `repo`: the command-line mirrors, then `first`, then the
    /// profile's mirrors.
    fn urls(&self, cfg: &Config, repo: &str, file: &str, first: Option<&str>) -> Vec<String> {
        let mut urls = self.mirrors.repo_file(&cfg.architecture, repo, file);
        let profile: Vec<String> = first
            .map(str::to_owned)
            .into_iter()
            .chain(
                cfg.mirrors
                    .iter()
                    .map(|m| format!("{}/{file}", cfg.mirror_url(m, repo))),
            )
            .collect();
        for u in profile {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        urls
    }

    /// The signature check for a package: the pinned one (base64, as `%PGPSIG%`) or, without
    /// one, `<URL>.sig`.
    fn signature(&self, b64: Option<&str>, what: &str) -> Result<crate::source::SignatureSpec> {
        let inline = match b64 {
            Some(b) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .with_context(|| format!("{what}: its signature is not valid base64"))?,
            ),
            None => None,
        };
        Ok(crate::source::SignatureSpec {
            urls: Vec::new(),
            inline,
            keyring: self.keyring.clone(),
        })
    }
}

/// One pinned package and who signed it, as `hc1img lock` reports it.
#[derive(Clone, Debug)]
pub struct Pinned {
    pub pin: PackagePin,
    pub verified: crate::source::Verified,
}

/// The repositories' packages (sync databases), in `[packages] repositories` order.
pub type Repos = Vec<(String, Vec<db::Package>)>;

/// Download and read every repository's database (unsigned upstream: it only says which files
/// to take, each package's own signature is checked by [`pin`]).
pub fn fetch_repos(
    cfg: &Config,
    f: &Fetcher<'_>,
    rep: &crate::progress::Reporter,
) -> Result<Repos> {
    let mut repos = Vec::new();
    for repo in &cfg.repositories {
        let file = format!("{repo}.db");
        let urls = f.urls(cfg, repo, &file, None);
        rep.step(format!("fetching the {repo} database"));
        let got = crate::source::fetch_unpinned(&urls, f.cache, f.opts)
            .with_context(|| format!("repository {repo}: cannot fetch {repo}.db"))?;
        let mut pkgs = db::read_sync_db(&got.path, repo)?;
        pkgs.retain(|p| p.arch == cfg.architecture || p.arch == "any" || p.arch.is_empty());
        repos.push((repo.clone(), pkgs));
    }
    Ok(repos)
}

/// `hc1img lock`'s package part: resolve `[packages]` against `repos` and the tarball's local
/// database (`installed`, [`db::read_local_from_tarball`]), download and verify every chosen
/// package, return the pins.
pub fn pin(
    cfg: &Config,
    repos: &Repos,
    installed: &[db::Package],
    tarball_sha256: &str,
    f: &Fetcher<'_>,
    rep: &crate::progress::Reporter,
) -> Result<(LockedSet, Vec<Pinned>)> {
    // Upgrades first, so the targets' dependencies see the upgraded versions.
    let sysupgrade = if cfg.upgrade {
        resolve::sysupgrade(repos, installed, &cfg.hold)
    } else {
        resolve::Sysupgrade::default()
    };
    for w in &sysupgrade.held {
        rep.warn(w.clone());
    }
    for i in installed.iter().filter(|i| cfg.hold.contains(&i.name)) {
        let newer = resolve::sysupgrade(repos, std::slice::from_ref(i), &[]).targets;
        if let Some(t) = newer.first() {
            rep.warn(format!(
                "{}: held at {} ([packages] hold); the repositories have {}",
                i.name,
                i.version,
                version::Dep::parse(t).version
            ));
        }
    }
    let targets: Vec<String> = sysupgrade
        .targets
        .iter()
        .chain(&cfg.install)
        .cloned()
        .collect();
    let explicit: Vec<String> = cfg
        .install
        .iter()
        .map(|t| version::Dep::parse(t).name)
        .collect();
    let mut chosen = resolve::resolve(&targets, repos, installed, &cfg.hold, &sysupgrade.replaces)?;
    // An upgrade keeps the installed package's reason, as pacman does; a replacement takes
    // the replaced packages' (explicit when one of them was: `sync.c` `check_replacers`).
    for c in &mut chosen {
        if c.reason == resolve::Reason::Explicit && !explicit.contains(&c.pkg.name) {
            let was_dep = |name: &str| installed.iter().any(|i| i.name == name && i.as_dependency);
            let replaced = sysupgrade.replaces.get(&c.pkg.name);
            let dep = match replaced {
                Some(r) if c.upgrades.is_none() => r.iter().all(|n| was_dep(n)),
                _ => was_dep(&c.pkg.name),
            };
            if dep {
                c.reason = resolve::Reason::Dependency;
            }
        }
    }
    rep.step(format!("fetching and verifying {} packages", chosen.len()));
    let mut out = Vec::new();
    for c in chosen {
        let p = c.pkg;
        let what = format!("package {}-{} ({})", p.name, p.version, p.filename);
        let url = cfg
            .mirrors
            .first()
            .map(|m| format!("{}/{}", cfg.mirror_url(m, &p.repo), p.filename))
            .unwrap_or_default();
        let spec = crate::source::SourceSpec {
            urls: f.urls(cfg, &p.repo, &p.filename, None),
            sha256: p.sha256.clone(),
            size: p.csize,
            signature: Some(f.signature(p.pgpsig.as_deref(), &what)?),
        };
        let got = crate::source::fetch_checked(&spec, f.cache, f.opts)
            .map_err(|e| anyhow::anyhow!("{what} from repository {}: {e:#}", p.repo))?;
        let (sig, verified) = got
            .signature
            .with_context(|| format!("internal error: {what} was not verified"))?;
        // What the packages it upgrades or removes take now (`%SIZE%`), when all say.
        let old = c.upgrades.iter().map(|v| format!("{}-{v}", p.name));
        let dirs: Vec<String> = old.chain(c.removes.iter().cloned()).collect();
        let sizes: Option<Vec<u64>> = dirs
            .iter()
            .map(|d| {
                installed
                    .iter()
                    .find(|i| i.dir_name() == *d)
                    .and_then(|i| i.size)
            })
            .collect();
        let frees = sizes.filter(|s| !s.is_empty()).map(|s| s.iter().sum());
        let pin = PackagePin {
            reason: match c.reason {
                resolve::Reason::Explicit => "explicit",
                resolve::Reason::Dependency => "dependency",
            }
            .to_string(),
            name: p.name,
            version: p.version,
            repo: p.repo,
            filename: p.filename,
            sha256: p.sha256,
            size: p.csize,
            url,
            frees,
            upgrades: c.upgrades,
            removes: c.removes,
            signature: Some(base64::engine::general_purpose::STANDARD.encode(sig)),
            signer: Some(verified.signer.clone()),
        };
        out.push(Pinned { pin, verified });
    }
    Ok((
        LockedSet {
            tarball_sha256: tarball_sha256.to_string(),
            config: cfg.digest(),
            package: out.iter().map(|p| p.pin.clone()).collect(),
        },
        out,
    ))
}

/// A pinned package fetched into the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub pin: PackagePin,
    pub path: PathBuf,
}

/// Fetch every pinned package into the cache, verified against its sha256 and signature (the
/// pinned one, else `<URL>.sig`) before it enters the cache.
pub fn fetch(cfg: &Config, pins: &[PackagePin], f: &Fetcher<'_>) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    for pin in pins {
        let what = format!("package {}-{} ({})", pin.name, pin.version, pin.filename);
        let spec = crate::source::SourceSpec {
            urls: f.urls(cfg, &pin.repo, &pin.filename, Some(&pin.url)),
            sha256: pin.sha256.clone(),
            size: pin.size,
            signature: Some(f.signature(pin.signature.as_deref(), &what)?),
        };
        let path = crate::source::fetch(&spec, f.cache, f.opts)
            .map_err(|e| crate::source::not_served(&what, e))?;
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
