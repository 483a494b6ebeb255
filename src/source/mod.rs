//! Fetching the pinned inputs (the root tarball, bootloader blobs) into a content-addressed cache.
//!
//! A [`SourceSpec`] names a file by its SHA-256 (FIPS 180-4) and lists where to get it: `http://`
//! and `https://` URLs (fetched with reqwest over rustls), `file://` URLs (RFC 8089) and plain
//! local paths, tried in order. The first source whose bytes hash to the pin wins; the file is then
//! renamed into the cache as `<root>/sha256/<hex>`, so a name under `sha256/` always holds
//! verified bytes and a later [`fetch`] of the same pin returns at once without touching the
//! network.
//!
//! Downloads stream into `<root>/tmp/<hex>.part` while being hashed. A dropped connection or a
//! truncated body is resumed with an HTTP `Range` request (RFC 9110 §14); a server that answers
//! `200` instead of `206` makes the download restart from byte 0. Failed attempts are retried
//! with exponential backoff, then the next URL is tried; the final error lists every URL's
//! failure. An exclusive lock on `<root>/tmp/<hex>.lock` (flock) keeps concurrent builds from
//! downloading the same file twice or corrupting each other's part files.
//!
//! When a [`SignatureSpec`] is given, the detached OpenPGP signature (RFC 9580 §10.4) is taken
//! from the spec (pinned in the lock file) or fetched (`<the URL that served the file>.sig` first,
//! then the spec's URLs), and the part file is checked against the keyring with
//! [`verify_detached`] before it is renamed into the cache: a file that fails is deleted, so no
//! unverified byte is ever in the cache under its final name. On a cache hit the signature is not
//! checked again: the bytes are already bound to the pinned SHA-256 and were checked on entry.

mod cache;
mod download;
pub mod fast;
mod hash;
pub mod mirror;
mod signature;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Url;

pub use cache::Cache;
pub use hash::{sha256_file, sha256_file_with, sha256_open_file};
pub use mirror::Mirrors;
pub use signature::{
    ALARM_FINGERPRINT, ALARM_KEY, Keyring, Verified, verify_detached, verify_signature, ymd,
};

/// One pinned input: where to get it and what its bytes must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    /// The primary URL first, then mirrors, tried in order. `http://`, `https://`, `file://`
    /// or a plain local path.
    pub urls: Vec<String>,
    /// Expected SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
    /// Expected size in bytes, when known (checked as well as the hash).
    pub size: Option<u64>,
    /// A detached OpenPGP signature to check before the file is accepted.
    pub signature: Option<SignatureSpec>,
}

/// A detached OpenPGP signature over a [`SourceSpec`]'s file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureSpec {
    /// Where the detached `.sig` (binary or ASCII-armored) may be fetched, tried in order after
    /// `<the URL that served the file>.sig`. Unused when `inline` is given.
    pub urls: Vec<String>,
    /// The signature itself, when it is known already (pinned in the lock file or taken from a
    /// repository database's `%PGPSIG%`).
    pub inline: Option<Vec<u8>>,
    /// The key(s) allowed to sign.
    pub keyring: Keyring,
}

/// Largest detached signature accepted (a signature is a few hundred bytes).
const MAX_SIGNATURE: u64 = 64 * 1024;

/// How downloads behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Show a progress bar (bytes, rate, ETA) on stderr, when stderr is a terminal.
    pub progress: bool,
    /// Give up connecting to a server after this long.
    pub connect_timeout: Duration,
    /// A server that sends nothing for this long (headers or body) is treated as failed.
    pub read_timeout: Duration,
    /// How many times a failing URL is tried again before the next URL is tried. An attempt
    /// that made progress (received bytes) does not use up a retry.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            progress: true,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_secs(1),
        }
    }
}

/// A file fetched without a pin (see [`fetch_unpinned`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Where the file now is in the cache.
    pub path: PathBuf,
    /// Its SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Returns the cached, verified file for `spec`, downloading it first if it is not cached.
///
/// On a cache hit this returns at once without any network access.
pub fn fetch(spec: &SourceSpec, cache: &Cache, opts: &FetchOptions) -> Result<PathBuf> {
    fetch_inner(spec, cache, opts, false).map(|(p, _)| p)
}

/// A pinned file and the signature that vouched for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub path: PathBuf,
    /// The signature's bytes and who made it, when `spec` has a [`SignatureSpec`].
    pub signature: Option<(Vec<u8>, Verified)>,
}

/// Like [`fetch`], but when `spec` has a signature it is checked even on a cache hit, and
/// returned with its signer (what `hc1img lock` records).
pub fn fetch_checked(spec: &SourceSpec, cache: &Cache, opts: &FetchOptions) -> Result<Checked> {
    fetch_inner(spec, cache, opts, true).map(|(path, signature)| Checked { path, signature })
}

type WithSignature = (PathBuf, Option<(Vec<u8>, Verified)>);

fn fetch_inner(
    spec: &SourceSpec,
    cache: &Cache,
    opts: &FetchOptions,
    check_hits: bool,
) -> Result<WithSignature> {
    let sha = spec.sha256.as_str();
    check_sha256(sha)?;
    if spec.urls.is_empty() {
        bail!("source with sha256 {sha} has no URL to fetch it from; add one to `urls`");
    }
    let hit = |path: PathBuf| -> Result<WithSignature> {
        match (&spec.signature, check_hits) {
            (Some(sig), true) => {
                let url = &spec.urls[0];
                let v = check_signature(sig, url, &path, cache, opts)
                    .with_context(|| format!("cached copy of {url} (sha256 {sha})"))?;
                Ok((path, Some(v)))
            }
            _ => Ok((path, None)),
        }
    };
    if let Some(p) = cached(cache, sha, spec.size)? {
        return hit(p);
    }
    cache.ensure_dirs()?;
    let _lock = cache.lock(sha)?;
    // Another build may have fetched it while we waited for the lock.
    if let Some(p) = cached(cache, sha, spec.size)? {
        return hit(p);
    }
    let part = cache.part_path(sha);
    let expect = download::Expect {
        sha256: Some(sha),
        size: spec.size,
    };
    let mut failures = Failures::default();
    for url in &spec.urls {
        if failures.skip(url) {
            continue;
        }
        match download::download(url, &part, &expect, opts) {
            Ok(got) => {
                let mut signed = None;
                if let Some(sig) = &spec.signature {
                    match check_signature(sig, url, &part, cache, opts) {
                        Ok(v) => signed = Some(v),
                        Err(e) => {
                            remove_part(&part);
                            return Err(anyhow!(
                                "signature check failed for {url} (sha256 {sha}): {e:#}; the file \
                                 was not put into the cache"
                            ));
                        }
                    }
                }
                debug_assert_eq!(got.sha256, sha);
                return Ok((cache.install(&part, sha)?, signed));
            }
            Err(e) => {
                remove_part(&part);
                failures.push(url, e);
            }
        }
    }
    Err(failures.error(sha))
}

/// Downloads whatever the first working URL serves now, hashes it and stores it in the cache.
///
/// This is what `hc1img lock` uses to learn a pin. Nothing is verified except that the
/// transfer was complete.
pub fn fetch_unpinned(urls: &[String], cache: &Cache, opts: &FetchOptions) -> Result<Fetched> {
    if urls.is_empty() {
        bail!("no URL given to fetch");
    }
    cache.ensure_dirs()?;
    let mut failures = Failures::default();
    for url in urls {
        if failures.skip(url) {
            continue;
        }
        let part = cache.unique_part_path()?;
        match download::download(url, &part, &download::Expect::default(), opts) {
            Ok(got) => {
                let path = cache.install_unlocked_dedup(&part, &got.sha256)?;
                return Ok(Fetched {
                    path,
                    sha256: got.sha256,
                    size: got.size,
                });
            }
            Err(e) => {
                remove_part(&part);
                failures.push(url, e);
            }
        }
    }
    Err(failures.error("(unpinned)"))
}

/// A file fetched without a pin whose signature verified (see [`fetch_unpinned_signed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedFetch {
    pub file: Fetched,
    /// The URL that served it.
    pub url: String,
    /// The detached signature's bytes (to pin beside the file's sha256).
    pub signature: Vec<u8>,
    pub verified: Verified,
}

/// Like [`fetch_unpinned`], but the download is checked against `sig` before it enters the
/// cache; a file that fails the check is deleted and the next URL is not tried (a bad signature
/// is an attack or a broken mirror, not a transfer error).
pub fn fetch_unpinned_signed(
    urls: &[String],
    sig: &SignatureSpec,
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<SignedFetch> {
    if urls.is_empty() {
        bail!("no URL given to fetch");
    }
    cache.ensure_dirs()?;
    let mut failures = Failures::default();
    for url in urls {
        if failures.skip(url) {
            continue;
        }
        let part = cache.unique_part_path()?;
        match download::download(url, &part, &download::Expect::default(), opts) {
            Ok(got) => {
                let (signature, verified) = match check_signature(sig, url, &part, cache, opts) {
                    Ok(x) => x,
                    Err(e) => {
                        remove_part(&part);
                        return Err(anyhow!(
                            "signature check failed for {url}: {e:#}; the file was not put into \
                             the cache"
                        ));
                    }
                };
                let path = cache.install_unlocked_dedup(&part, &got.sha256)?;
                return Ok(SignedFetch {
                    file: Fetched {
                        path,
                        sha256: got.sha256,
                        size: got.size,
                    },
                    url: url.clone(),
                    signature,
                    verified,
                });
            }
            Err(e) => {
                remove_part(&part);
                failures.push(url, e);
            }
        }
    }
    Err(failures.error("(unpinned)"))
}

/// The one-line error for a pinned file that could not be fetched (`what` names it): when no
/// URL served it, what to do (a tree made by `hc1img vendor`, `--mirror`).
pub fn not_served(what: &str, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("URL(s) failed") {
        anyhow!(
            "{what}: {text}; if upstream no longer serves this pinned file, fetch it from a tree \
             made by `hc1img vendor DIR` with --mirror file://DIR (or HC1IMG_MIRROR)"
        )
    } else {
        anyhow!("{what}: {text}")
    }
}

/// How a signature is named in errors.
fn sig_name(sig: &SignatureSpec, data_url: &str) -> String {
    match &sig.inline {
        Some(_) => format!("the recorded signature of {data_url}"),
        None => format!("{data_url}.sig"),
    }
}

/// The signature's bytes: inline, or fetched from `<data_url>.sig` then `sig.urls`.
fn signature_bytes(
    sig: &SignatureSpec,
    data_url: &str,
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<Vec<u8>> {
    if let Some(b) = &sig.inline {
        return Ok(b.clone());
    }
    let mut urls = vec![format!("{data_url}.sig")];
    for u in &sig.urls {
        if !urls.contains(u) {
            urls.push(u.clone());
        }
    }
    let expect = download::Expect::default();
    let mut failures = Vec::new();
    for u in &urls {
        let part = cache.unique_part_path()?;
        let got = download::download(u, &part, &expect, opts);
        let read = got.and_then(|g| {
            if g.size > MAX_SIGNATURE {
                bail!("{} bytes is too large for a signature", g.size);
            }
            std::fs::read(&part).with_context(|| format!("cannot read {}", part.display()))
        });
        remove_part(&part);
        match read {
            Ok(b) => return Ok(b),
            Err(e) => failures.push(format!("{u}: {e:#}")),
        }
    }
    bail!(
        "no signature found for {data_url} (tried {}); the file is refused unsigned",
        failures.join("; ")
    )
}

/// Gets the signature `sig` names and checks the part file `data` (downloaded from `data_url`)
/// against it; returns the signature's bytes and signer.
fn check_signature(
    sig: &SignatureSpec,
    data_url: &str,
    data: &std::path::Path,
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<(Vec<u8>, Verified)> {
    let bytes = signature_bytes(sig, data_url, cache, opts)?;
    let v = verify_detached(
        data,
        data_url,
        &sig_name(sig, data_url),
        &bytes,
        &sig.keyring,
    )?;
    Ok((bytes, v))
}

/// The cached file for `sha`, if present and (when `size` is given) of the right size.
fn cached(cache: &Cache, sha: &str, size: Option<u64>) -> Result<Option<PathBuf>> {
    let Some(path) = cache.lookup(sha) else {
        return Ok(None);
    };
    if let Some(want) = size {
        let have = std::fs::metadata(&path)
            .with_context(|| format!("cannot stat cached file {}", path.display()))?
            .len();
        if have != want {
            bail!(
                "cached file {} has {have} bytes but the source says size = {want}; its sha256 \
                 matches, so the `size` in the source is wrong",
                path.display()
            );
        }
    }
    Ok(Some(path))
}

/// The URLs that failed to serve a file, for the one error that says so.
#[derive(Default)]
struct Failures {
    /// `URL: error`, one per URL tried.
    lines: Vec<String>,
    /// Host names that did not resolve (their other URLs are not tried).
    unresolved: Vec<String>,
    /// How many failures were something else (a reply, a timeout, a refused connection).
    other: usize,
}

impl Failures {
    /// Whether `url` is on a host that did not resolve: not worth trying.
    fn skip(&self, url: &str) -> bool {
        Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .is_some_and(|h| self.unresolved.contains(&h))
    }

    fn push(&mut self, url: &str, e: anyhow::Error) {
        match e.downcast_ref::<download::Unresolvable>() {
            Some(u) if !self.unresolved.contains(&u.host) => self.unresolved.push(u.host.clone()),
            Some(_) => {}
            None => self.other += 1,
        }
        self.lines.push(format!("{url}: {e:#}"));
    }

    /// The error once every URL failed: when no host resolved, one short line saying the
    /// machine looks offline and naming the offline ways; else every URL's failure.
    fn error(&self, what: &str) -> anyhow::Error {
        if self.other == 0 && !self.unresolved.is_empty() {
            let hosts = match self.unresolved.len() {
                1 => format!("{} does not resolve", self.unresolved[0]),
                n => format!(
                    "{} and {} other hosts do not resolve",
                    self.unresolved[0],
                    n - 1
                ),
            };
            anyhow!(
                "offline? {hosts}: build offline from `hc1img vendor DIR` (--mirror file://DIR) \
                 or a local tarball (--source-url PATH)"
            )
        } else {
            anyhow!("{}", all_failed(what, &self.lines))
        }
    }
}

fn all_failed(what: &str, failures: &[String]) -> String {
    let n = failures.len();
    let list: Vec<String> = failures
        .iter()
        .enumerate()
        .map(|(i, f)| format!("[{}] {f}", i + 1))
        .collect();
    format!(
        "could not fetch {what}: all {n} URL(s) failed: {}",
        list.join("; ")
    )
}

fn remove_part(part: &std::path::Path) {
    // Best effort: a part file that cannot be removed is overwritten by the next attempt.
    let _ = std::fs::remove_file(part);
}

/// Checks that `sha` is 64 lowercase hex digits.
pub(crate) fn check_sha256(sha: &str) -> Result<()> {
    if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        bail!("sha256 {sha:?} is not 64 lowercase hex digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_format_is_checked() {
        assert!(check_sha256(&"a".repeat(64)).is_ok());
        assert!(check_sha256(&"A".repeat(64)).is_err());
        assert!(check_sha256(&"a".repeat(63)).is_err());
        assert!(check_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn failure_list_is_one_line() {
        let msg = all_failed("x", &["u1: 404".into(), "u2: bad".into()]);
        assert_eq!(
            msg,
            "could not fetch x: all 2 URL(s) failed: [1] u1: 404; [2] u2: bad"
        );
    }
}
