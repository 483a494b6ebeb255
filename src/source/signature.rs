//! Checking a detached OpenPGP signature (RFC 9580 §10.4) over a file against a keyring, with
//! the pure-Rust `pgp` crate (rPGP).
//!
//! The keyring is a file of transferable public keys (RFC 9580 §10.1), ASCII-armored or binary
//! (as `gpg --export [--armor]` writes it; secret keys are accepted and used for their public
//! part). The signature file may be armored or binary and may hold several signatures.
//!
//! Policy: at least one signature must be a valid binary/text document signature made by a key
//! in the keyring, and no signature made by a keyring key may be bad. A signature by a subkey
//! counts only if the subkey's binding signature from its primary key verifies. A signing key
//! (primary) with a revocation signature that verifies is refused. Not checked: key and
//! signature expiry times, and key flags of the primary key.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use pgp::composed::{Deserializable, DetachedSignature, PublicOrSecret, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, VerifyingKey};

/// Checks that `signature` is a good detached OpenPGP signature over `data` by a key in
/// `keyring`; errors name the files and why (bad signature, unknown key, unreadable file).
pub fn verify_signature(data: &Path, signature: &Path, keyring: &Path) -> Result<()> {
    File::open(data)
        .with_context(|| format!("cannot open {} to check its signature", data.display()))?;
    let keys = read_keyring(keyring)?;
    let sigs = read_signatures(signature)?;
    let mut good = 0usize;
    let mut unknown = Vec::new();
    for sig in &sigs {
        let (signers, revoked): (Vec<_>, Vec<_>) = signers_for(sig, &keys)
            .into_iter()
            .partition(|s| !is_revoked(s.primary()));
        if signers.is_empty() {
            if let Some(r) = revoked.first() {
                bail!(
                    "signature {} was made by key {}, which is revoked in keyring {}",
                    signature.display(),
                    fingerprint(r.primary()),
                    keyring.display()
                );
            }
            unknown.push(issuer_names(sig));
            continue;
        }
        let typ = sig.typ();
        if !matches!(typ, Some(SignatureType::Binary | SignatureType::Text)) {
            bail!(
                "signature {} is not a document signature (type {typ:?})",
                signature.display()
            );
        }
        let mut last_err = None;
        let mut ok = false;
        for signer in signers {
            match check_one(sig, &signer, data) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if !ok {
            let why = last_err.map_or_else(String::new, |e| format!("{e:#}"));
            bail!(
                "BAD signature: {} does not verify {} with the key from {}: {why}",
                signature.display(),
                data.display(),
                keyring.display()
            );
        }
        good += 1;
    }
    if good == 0 {
        bail!(
            "no key in keyring {} made signature {} (signed by {}); add the signer's public key \
             to the keyring",
            keyring.display(),
            signature.display(),
            unknown.join(", ")
        );
    }
    Ok(())
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

fn read_keyring(path: &Path) -> Result<Vec<SignedPublicKey>> {
    let file =
        File::open(path).with_context(|| format!("cannot open keyring {}", path.display()))?;
    let (iter, _) = PublicOrSecret::from_reader_many(file)
        .map_err(|e| anyhow!("cannot parse keyring {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for item in iter {
        let key = item.map_err(|e| anyhow!("cannot parse keyring {}: {e}", path.display()))?;
        keys.push(match key {
            PublicOrSecret::Public(k) => k,
            PublicOrSecret::Secret(k) => k.to_public_key(),
        });
    }
    if keys.is_empty() {
        bail!("keyring {} holds no OpenPGP key", path.display());
    }
    Ok(keys)
}

fn read_signatures(path: &Path) -> Result<Vec<Signature>> {
    let file =
        File::open(path).with_context(|| format!("cannot open signature {}", path.display()))?;
    let (iter, _) = DetachedSignature::from_reader_many(file).map_err(|e| {
        anyhow!(
            "cannot parse {} as an OpenPGP signature: {e}",
            path.display()
        )
    })?;
    let mut sigs = Vec::new();
    for item in iter {
        let sig = item.map_err(|e| {
            anyhow!(
                "cannot parse {} as an OpenPGP signature: {e}",
                path.display()
            )
        })?;
        sigs.push(sig.signature);
    }
    if sigs.is_empty() {
        bail!("{} holds no OpenPGP signature", path.display());
    }
    Ok(sigs)
}
