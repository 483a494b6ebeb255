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
//! When a [`SignatureSpec`] is given, the detached OpenPGP signature (RFC 9580 §10.4) is fetched
//! too, stored in the cache by its own hash, and checked against the keyring with
//! [`verify_signature`] before the file is accepted. On a cache hit the signature is not checked
//! again: the bytes are already bound to the pinned SHA-256.

mod cache;
mod download;
mod hash;
mod signature;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use cache::Cache;
pub use hash::{sha256_file, sha256_file_with};
pub use signature::verify_signature;

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
    /// Where the detached `.sig` (binary or ASCII-armored) is.
    pub url: String,
    /// An armored or binary public key file holding the key(s) allowed to sign.
    pub keyring: PathBuf,
}

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
    let sha = spec.sha256.as_str();
    check_sha256(sha)?;
    if spec.urls.is_empty() {
        bail!("source with sha256 {sha} has no URL to fetch it from; add one to `urls`");
    }
    if let Some(hit) = cached(cache, sha, spec.size)? {
        return Ok(hit);
    }
    cache.ensure_dirs()?;
    let _lock = cache.lock(sha)?;
    // Another build may have fetched it while we waited for the lock.
    if let Some(hit) = cached(cache, sha, spec.size)? {
        return Ok(hit);
    }
    let part = cache.part_path(sha);
    let expect = download::Expect {
        sha256: Some(sha),
        size: spec.size,
    };
    let mut failures = Vec::new();
    for url in &spec.urls {
        match download::download(url, &part, &expect, opts) {
            Ok(got) => {
                if let Some(sig) = &spec.signature
                    && let Err(e) = check_signature(sig, &part, cache, opts)
                {
                    remove_part(&part);
                    return Err(e.context(format!(
                        "signature check failed for {url} (sha256 {sha}); the file was not put \
                         into the cache"
                    )));
                }
                debug_assert_eq!(got.sha256, sha);
                return cache.install(&part, sha);
            }
            Err(e) => {
                remove_part(&part);
                failures.push(format!("{url}: {e:#}"));
            }
        }
    }
    bail!("{}", all_failed(sha, &failures))
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
    let mut failures = Vec::new();
    for url in urls {
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
                failures.push(format!("{url}: {e:#}"));
            }
        }
    }
    bail!("{}", all_failed("(unpinned)", &failures))
}

/// Fetches the signature named by `sig` into the cache and checks `data` against it.
fn check_signature(
    sig: &SignatureSpec,
    data: &std::path::Path,
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<()> {
    let fetched = fetch_unpinned(std::slice::from_ref(&sig.url), cache, opts)
        .with_context(|| format!("cannot fetch signature {}", sig.url))?;
    verify_signature(data, &fetched.path, &sig.keyring)
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
