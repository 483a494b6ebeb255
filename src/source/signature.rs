//! Checking a detached OpenPGP signature (RFC 9580 §10.4) over a file against a keyring, with
//! the pure-Rust `pgp` crate (rPGP).
//!
//! The keyring is a file of transferable public keys (RFC 9580 §10.1), ASCII-armored or binary
//! (as `gpg --export [--armor]` writes it; secret keys are accepted and used for their public
//! part), or the Arch Linux ARM build key embedded in hc1img ([`Keyring::Embedded`], the file
//! `keys/archlinuxarm.asc`, provenance in `keys/README.md`). The signature may be armored or
//! binary and may hold several signatures.
//!
//! Policy (what pacman's `alpm_check_pgp_signature` accepts with `SigLevel = Required`): at
//! least one signature must be a valid binary/text document signature made by a key in the
//! keyring, and no signature made by a keyring key may be bad. A signature by a subkey counts
//! only if the subkey's binding signature from its primary key verifies. Refused: a signing key
//! (primary) with a revocation signature that verifies; a signing key (or subkey) past its key
//! expiration time (RFC 9580 §5.2.3.13, from its newest valid self-signature or binding); a
//! signature past its own expiration time (§5.2.3.18). Not checked: key flags. The same check
//! verifies a release's `SHA256SUMS.sig` (`hc1img verify --keyring`, `src/signing.rs`).

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use pgp::composed::{Deserializable, DetachedSignature, PublicOrSecret, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, VerifyingKey};

/// The Arch Linux ARM build key ("Arch Linux ARM Build System <builder@archlinuxarm.org>"),
/// as published in archlinuxarm/PKGBUILDs `core/archlinuxarm-keyring/archlinuxarm.gpg`.
pub const ALARM_KEY: &[u8] = include_bytes!("../../keys/archlinuxarm.asc");

/// The primary fingerprint of [`ALARM_KEY`].
pub const ALARM_FINGERPRINT: &str = "68B3537F39A313B3E574D06777193F152BDBE6A6";

/// The public keys a signature must come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keyring {
    /// The Arch Linux ARM build key built into hc1img ([`ALARM_KEY`]).
    Embedded,
    /// An armored or binary key file.
    File(PathBuf),
}

impl std::fmt::Display for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keyring::Embedded => write!(
                f,
                "the built-in Arch Linux ARM key {ALARM_FINGERPRINT} (keys/archlinuxarm.asc)"
            ),
            Keyring::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Who made a good signature and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Primary key fingerprint of the signer, 40 (or 64) upper-case hex digits.
    pub signer: String,
    /// The signature's creation time, Unix seconds.
    pub created: Option<u64>,
}

impl Verified {
    /// The creation date as `YYYY-MM-DD` (UTC), or `?`.
    pub fn date(&self) -> String {
        self.created.map_or_else(|| "?".to_owned(), ymd)
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub fn ymd(unix: u64) -> String {
    // Howard Hinnant's civil_from_days (proleptic Gregorian calendar).
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Checks that `signature` (a file) is a good detached OpenPGP signature over `data` by a key in
/// `keyring`; errors name the files, the key and what to do.
pub fn verify_signature(data: &Path, signature: &Path, keyring: &Keyring) -> Result<Verified> {
    let bytes = std::fs::read(signature)
        .with_context(|| format!("cannot open signature {}", signature.display()))?;
    let shown = data.display().to_string();
    verify_detached(
        data,
        &shown,
        &signature.display().to_string(),
        &bytes,
        keyring,
    )
}

/// Like [`verify_signature`] with the signature's bytes in memory; `data_name` and `sig_name`
/// name the file and the signature in errors (URLs, paths).
pub fn verify_detached(
    data: &Path,
    data_name: &str,
    sig_name: &str,
    signature: &[u8],
    keyring: &Keyring,
) -> Result<Verified> {
    verify_at(data, data_name, sig_name, signature, keyring, now())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn verify_at(
    data: &Path,
    shown: &str,
    sig_name: &str,
    signature: &[u8],
    keyring: &Keyring,
    now: u64,
) -> Result<Verified> {
    File::open(data)
        .with_context(|| format!("cannot open {} to check its signature", data.display()))?;
    let keys = read_keyring(keyring)?;
    let sigs = read_signatures(sig_name, signature)?;
    let mut good = None;
    let mut unknown = Vec::new();
    for sig in &sigs {
        let (signers, revoked): (Vec<_>, Vec<_>) = signers_for(sig, &keys)
            .into_iter()
            .partition(|s| !is_revoked(s.primary()));
        if signers.is_empty() {
            if let Some(r) = revoked.first() {
                bail!(
                    "signature {sig_name} over {shown} was made by key {}, which is revoked in \
                 keyring {keyring}: do not use this file; get one signed by a current key",
                    fingerprint(r.primary())
                );
            }
            unknown.push(issuer_names(sig));
            continue;
        }
        let typ = sig.typ();
        if !matches!(typ, Some(SignatureType::Binary | SignatureType::Text)) {
            bail!("signature {sig_name} is not a document signature (type {typ:?})");
        }
        let created = sig.created().map(|t| u64::from(t.as_secs()));
        if let (Some(c), Some(d)) = (created, sig.signature_expiration_time())
            && d.as_secs() != 0
            && c + u64::from(d.as_secs()) <= now
        {
            bail!(
                "signature {sig_name} over {shown} by key {} expired on {}: get a current \
                 signature (re-lock against the current file)",
                fingerprint(signers[0].primary()),
                ymd(c + u64::from(d.as_secs()))
            );
        }
        let mut last_err = None;
        let mut ok = None;
        for signer in &signers {
            match check_one(sig, signer, data) {
                Ok(()) => {
                    ok = Some(signer);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some(signer) = ok else {
            let why = last_err.map_or_else(String::new, |e| format!("{e:#}"));
            bail!(
                "BAD signature: {sig_name} does not verify {shown} with key {} from {keyring}: \
                 {why}; the file was altered or the signature is not its own: do not use it",
                fingerprint(signers[0].primary())
            );
        };
        if let Some(exp) = signer.expires()
            && exp <= now
        {
            bail!(
                "signature {sig_name} over {shown}: key {} expired on {}: refresh the keyring \
                 (--keyring FILE) with the key's renewed self-signature",
                signer.fingerprint(),
                ymd(exp)
            );
        }
        good.get_or_insert(Verified {
            signer: fingerprint(signer.primary()),
            created,
        });
    }
    match good {
        Some(v) => Ok(v),
        None => bail!(
            "no key in keyring {keyring} made signature {sig_name} over {shown} (signed by {}); \
                 if you trust that key, pass its public key with --keyring FILE",
            unknown.join(", ")
        ),
    }
}

/// A key that may have made a signature: a primary key, or a subkey with its primary.
enum Signer<'a> {
    Primary(&'a SignedPublicKey),
    Subkey(&'a SignedPublicKey, &'a pgp::composed::SignedPublicSubKey),
}

impl Signer<'_> {
    fn primary(&self) -> &SignedPublicKey {
        match self {
            Signer::Primary(k) | Signer::Subkey(k, _) => k,
        }
    }

    fn fingerprint(&self) -> String {
        match self {
            Signer::Primary(k) => fingerprint(k),
            Signer::Subkey(_, s) => hex::encode_upper(s.fingerprint().as_bytes()),
        }
    }

    /// When the signing key stops being valid (Unix seconds), if ever: the primary key's
    /// expiry, and for a subkey also its binding's.
    fn expires(&self) -> Option<u64> {
        let k = self.primary();
        let created = u64::from(k.primary_key.created_at().as_secs());
        let self_sigs = k
            .details
            .users
            .iter()
            .flat_map(|u| {
                u.signatures.iter().filter(|s| {
                    s.verify_certification(&k.primary_key, Tag::UserId, &u.id)
                        .is_ok()
                })
            })
            .chain(
                k.details
                    .direct_signatures
                    .iter()
                    .filter(|s| s.verify_key(&k.primary_key).is_ok()),
            );
        let primary = expiry(created, newest(self_sigs));
        let sub = match self {
            Signer::Primary(_) => None,
            Signer::Subkey(k, s) => {
                let c = u64::from(s.key.created_at().as_secs());
                expiry(
                    c,
                    newest(
                        s.signatures
                            .iter()
                            .filter(|b| b.verify_subkey_binding(&k.primary_key, &s.key).is_ok()),
                    ),
                )
            }
        };
        match (primary, sub) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The most recently created of `sigs`.
fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()))
}

/// `created` plus the key expiration time of `sig`, when it sets a non-zero one.
fn expiry(created: u64, sig: Option<&Signature>) -> Option<u64> {
    let d = sig?.key_expiration_time()?.as_secs();
    (d != 0).then(|| created + u64::from(d))
}

/// Whether the key carries a key revocation signature that verifies.
fn is_revoked(key: &SignedPublicKey) -> bool {
    key.details
        .revocation_signatures
        .iter()
        .any(|rev| rev.verify_key(&key.primary_key).is_ok())
}

fn fingerprint(key: &SignedPublicKey) -> String {
    hex::encode_upper(key.fingerprint().as_bytes())
}

/// A pgp error as one line; the digest-prefix check gets a plain explanation.
fn pgp_err(e: pgp::errors::Error) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("invalid signed hash value") {
        return anyhow!("the file's digest does not match the one signed");
    }
    anyhow!("{}", text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn check_one(sig: &Signature, signer: &Signer<'_>, data: &Path) -> Result<()> {
    let open = || {
        File::open(data)
            .map(BufReader::new)
            .with_context(|| format!("cannot open {} to check its signature", data.display()))
    };
    match signer {
        Signer::Primary(k) => sig.verify(&k.primary_key, open()?).map_err(pgp_err),
        Signer::Subkey(k, sub) => {
            let bound = sub
                .signatures
                .iter()
                .any(|b| b.verify_subkey_binding(&k.primary_key, &sub.key).is_ok());
            if !bound {
                bail!(
                    "subkey {} has no valid binding signature from its primary key",
                    hex::encode_upper(sub.fingerprint().as_bytes())
                );
            }
            sig.verify(*sub, open()?).map_err(pgp_err)
        }
    }
}

/// The keyring keys (primary or subkey) that the signature names as its issuer.
fn signers_for<'a>(sig: &Signature, keys: &'a [SignedPublicKey]) -> Vec<Signer<'a>> {
    let ids = sig.issuer_key_id();
    let fps = sig.issuer_fingerprint();
    let matches = |k: &dyn VerifyingKey| {
        fps.iter().any(|f| **f == k.fingerprint()) || ids.iter().any(|i| **i == k.legacy_key_id())
    };
    let mut out = Vec::new();
    for key in keys {
        if matches(&key.primary_key) {
            out.push(Signer::Primary(key));
        }
        for sub in &key.public_subkeys {
            if matches(sub) {
                out.push(Signer::Subkey(key, sub));
            }
        }
    }
    out
}

fn issuer_names(sig: &Signature) -> String {
    let fps = sig.issuer_fingerprint();
    if let Some(f) = fps.first() {
        return format!("key {}", hex::encode_upper(f.as_bytes()));
    }
    match sig.issuer_key_id().first() {
        Some(id) => format!("key id {}", hex::encode_upper(id.as_ref())),
        None => "an unnamed key".to_owned(),
    }
}

fn read_keyring(keyring: &Keyring) -> Result<Vec<SignedPublicKey>> {
    let bytes = match keyring {
        Keyring::Embedded => ALARM_KEY.to_vec(),
        Keyring::File(p) => {
            std::fs::read(p).with_context(|| format!("cannot open keyring {}", p.display()))?
        }
    };
    let (iter, _) = PublicOrSecret::from_reader_many(Cursor::new(bytes))
        .map_err(|e| anyhow!("cannot parse keyring {keyring}: {e}"))?;
    let mut keys = Vec::new();
    for item in iter {
        let key = item.map_err(|e| anyhow!("cannot parse keyring {keyring}: {e}"))?;
        keys.push(match key {
            PublicOrSecret::Public(k) => k,
            PublicOrSecret::Secret(k) => k.to_public_key(),
        });
    }
    if keys.is_empty() {
        bail!("keyring {keyring} holds no OpenPGP key");
    }
    Ok(keys)
}

fn read_signatures(name: &str, bytes: &[u8]) -> Result<Vec<Signature>> {
    let bad = |e| anyhow!("cannot parse {name} as an OpenPGP signature: {e}");
    let (iter, _) = DetachedSignature::from_reader_many(Cursor::new(bytes)).map_err(bad)?;
    let mut sigs = Vec::new();
    for item in iter {
        sigs.push(item.map_err(bad)?.signature);
    }
    if sigs.is_empty() {
        bail!("{name} holds no OpenPGP signature");
    }
    Ok(sigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_key_is_the_alarm_build_key() -> Result<()> {
        let keys = read_keyring(&Keyring::Embedded)?;
        assert_eq!(keys.len(), 1);
        assert_eq!(fingerprint(&keys[0]), ALARM_FINGERPRINT);
        assert_eq!(Signer::Primary(&keys[0]).expires(), None);
        Ok(())
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(ymd(0), "1970-01-01");
        assert_eq!(ymd(1_390_085_363), "2014-01-18");
    }
}
