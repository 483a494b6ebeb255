//! `[source]` and `[packages]` with their pins: the tarball's URLs, mirrors, signature and
//! keyring (and the command line's `--source-url`/`--source-sha256`), the lock file beside the
//! profile that declares `[source]`, and the `[packages]` pins read from it.

use std::path::{Path, PathBuf};

use super::check::Validator;
use super::load::{parent_dir, resolve_url};
use super::lock::{LOCK_FILE_NAME, is_sha256_hex, read_lock};
use super::schema::RawProfile;
use super::{Overrides, Source};

impl Validator<'_> {
    #[allow(clippy::type_complexity)]
    pub(super) fn source(
        &self,
        raw: &RawProfile,
        ov: &Overrides,
    ) -> anyhow::Result<(Option<Source>, Option<PathBuf>, bool, Option<PathBuf>)> {
        if let Some(u) = &ov.source_url {
            let bad = u.is_empty() || u.chars().any(char::is_whitespace);
            if bad {
                anyhow::bail!("--source-url {u:?}: expected an http(s)/file URL or a path");
            }
        }
        if let Some(h) = &ov.source_sha256
            && !is_sha256_hex(h)
        {
            anyhow::bail!("--source-sha256 {h:?}: expected 64 lowercase hex digits");
        }
        let mut source = match &raw.source {
            Some(s) => {
                self.url(&["source", "url"], &s.url)?;
                for m in &s.mirrors {
                    self.url(&["source", "mirrors"], m)?;
                }
                if let Some(sig) = &s.signature {
                    // Without `keyring` the built-in Arch Linux ARM key must have made it.
                    self.url(&["source", "signature"], sig)?;
                }
                if let Some(k) = &s.keyring
                    && !k.is_file()
                {
                    return Err(self.err(
                        &["source", "keyring"],
                        format!("{} is not a readable file", k.display()),
                    ));
                }
                let dir_of = |path: &[&str]| {
                    let f = self.root.loc_of(path).file;
                    self.sources
                        .files
                        .get(f)
                        .map(|f| parent_dir(&f.path))
                        .unwrap_or_else(|| PathBuf::from("."))
                };
                let mut fetch = vec![resolve_url(&s.url, &dir_of(&["source", "url"]))];
                let mdir = dir_of(&["source", "mirrors"]);
                fetch.extend(s.mirrors.iter().map(|m| resolve_url(m, &mdir)));
                Some(Source {
                    url: s.url.clone(),
                    fetch_urls: fetch,
                    mirrors: s.mirrors.clone(),
                    signature: s.signature.clone(),
                    keyring: s.keyring.clone(),
                    sha256: None,
                    size: None,
                })
            }
            None => None,
        };
        if let Some(u) = &ov.source_url {
            source = Some(Source {
                url: u.clone(),
                fetch_urls: vec![u.clone()],
                mirrors: Vec::new(),
                signature: None,
                keyring: None,
                sha256: None,
                size: None,
            });
        }
        let Some(mut src) = source else {
            if ov.source_sha256.is_some() {
                anyhow::bail!(
                    "--source-sha256 given but the profile has no [source] and no --source-url"
                );
            }
            return Ok((None, None, false, None));
        };
        // The lock lives next to the file that wrote `source.url` (or the profile given).
        let decl_file = match self.root.entry(&["source", "url"]) {
            Some(e) => e.value.loc.file,
            None => 0,
        };
        let lock_path = self
            .sources
            .files
            .get(decl_file)
            .map(|f| parent_dir(&f.path).join(LOCK_FILE_NAME))
            .ok_or_else(|| anyhow::anyhow!("internal: no declaring file for [source]"))?;
        let lock_exists = lock_path.is_file();
        if lock_exists {
            let lock = read_lock(&lock_path)?;
            if let Some(pin) = lock.pins.get(&src.url) {
                src.sha256 = Some(pin.sha256.clone());
                src.size = pin.size;
            }
        }
        if let Some(h) = &ov.source_sha256 {
            if src.sha256.as_deref() != Some(h.as_str()) {
                src.size = None;
            }
            src.sha256 = Some(h.clone());
        }
        let keyring = src.keyring.clone();
        Ok((Some(src), Some(lock_path), lock_exists, keyring))
    }

    /// `[packages]`, checked, with this profile's pins from the lock file.
    pub(super) fn packages(
        &self,
        raw: &RawProfile,
        ov: &Overrides,
        lock_path: Option<&Path>,
        lock_exists: bool,
    ) -> anyhow::Result<Option<crate::packages::Packages>> {
        let Some(cfg) = &raw.packages else {
            return Ok(None);
        };
        if let Err((key, msg)) = cfg.check() {
            return Err(self.err(&["packages", key], msg));
        }
        if ov.no_packages {
            return Ok(None);
        }
        if lock_path.is_none() {
            return Err(self.err(
                &["packages"],
                "needs a [source]: packages are resolved against the root tarball's installed ones",
            ));
        }
        let pins = match lock_path {
            Some(l) if lock_exists => read_lock(l)?.packages.remove(&raw.name),
            _ => None,
        };
        Ok(Some(crate::packages::Packages {
            config: cfg.clone(),
            pins,
        }))
    }
}
