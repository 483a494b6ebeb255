//! Signed releases: a detached OpenPGP signature (RFC 9580 §5.2 signature packet, §10.4
//! detached signatures; a version 4 binary-document signature, as RFC 4880 defines it and
//! `gpgv` checks it) of a directory's `SHA256SUMS` ([`crate::sums`]), written beside it as
//! `SHA256SUMS.sig` (binary, like Arch Linux's `.sig` files), and the check of a directory
//! against it: signature, sums and manifests together.
//!
//! The key is an OpenPGP transferable secret key (RFC 9580 §10.2), armored or binary, as
//! `gpg --export-secret-keys [--armor]` writes it. The newest subkey whose binding signature
//! gives it the signing flag signs; without one, the primary key (when its self-signature
//! allows signing or sets no key flags). A key protected by a passphrase is unlocked with
//! `HC1IMG_SIGN_PASSPHRASE`. Version 6 keys are refused (gpgv as Debian 12 ships it cannot
//! check their signatures). No message shows the key's bytes: a key that cannot be read is
//! named by its file, never quoted, and no `pgp` parsing error (which may quote input) is passed
//! on.
//!
//! The signature's creation time is the signing time, not `SOURCE_DATE_EPOCH`: `gpgv` refuses a
//! signature older than its key, and a release key is usually newer than the commit a
//! reproducible build dates its files by. The signature is outside `SHA256SUMS` and outside the
//! derivation, so it does not touch the reproducibility of what it signs; two signatures of
//! the same sums may differ.
//!
//! The check ([`verify`]) uses [`crate::source::verify_signature`] (the keyring loading and
//! policy that check the tarball and the packages), then re-hashes every file `SHA256SUMS`
//! lists, then cross-checks each listed `manifest.json` (an output directory's, or a release's
//! `<profile>-manifest.json`) with the sums: each of its outputs present in the directory must
//! be listed with the manifest's sha256.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pgp::composed::{DetachedSignature, PublicOrSecret, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails, KeyVersion, Password, Tag, Timestamp};

use crate::manifest::{Manifest, OutputFile};
use crate::source::{Keyring, verify_signature};
use crate::store::write_via_temp;
use crate::sums::{SHA256SUMS, SIGNATURE};

/// The environment variable holding the passphrase of a protected signing key.
pub const PASSPHRASE_VAR: &str = "HC1IMG_SIGN_PASSPHRASE";

/// Which key of a transferable secret key signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Primary,
    Subkey(usize),
}

/// A secret key ready to sign, read from a file.
pub struct SigningKey {
    key: SignedSecretKey,
    which: Which,
    password: Password,
    /// The file it was read from (for messages and the self-check).
    path: PathBuf,
    /// The primary key's fingerprint, upper-case hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey({}, {})",
            self.path.display(),
            self.fingerprint
        )
    }
}

impl SigningKey {
    /// Read and unlock the secret key in `path`; every error is one line naming the file.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let shown = path.display();
        let bytes = std::fs::read(path).with_context(|| {
            format!("signing key {shown}: cannot read it (give an OpenPGP secret key file, as `gpg --export-secret-keys` writes it)")
        })?;
        let unreadable = || {
            anyhow::anyhow!(
                "signing key {shown}: not an OpenPGP key file (armored or binary, as `gpg \
                 --export-secret-keys` writes it)"
            )
        };
        let (items, _) = PublicOrSecret::from_reader_many(std::io::Cursor::new(bytes))
            .map_err(|_| unreadable())?;
        let mut secret = Vec::new();
        let mut public = 0usize;
        for item in items {
            match item.map_err(|_| unreadable())? {
                PublicOrSecret::Secret(k) => secret.push(k),
                PublicOrSecret::Public(_) => public += 1,
            }
        }
        let key = match (secret.len(), public) {
            (1, _) => secret.remove(0),
            (0, 0) => return Err(unreadable()),
            (0, _) => bail!(
                "signing key {shown}: holds only a public key; give the secret key (`gpg \
                 --export-secret-keys --armor KEYID > FILE`)"
            ),
            (n, _) => bail!("signing key {shown}: holds {n} secret keys; give a file with one"),
        };
        let fingerprint = hex::encode_upper(key.primary_key.fingerprint().as_bytes());
        if key.primary_key.version() != KeyVersion::V4 {
            bail!(
                "signing key {shown} ({fingerprint}): a version {} key; hc1img signs with \
                 version 4 keys (gpg's), which every gpgv can check",
                u8::from(key.primary_key.version())
            );
        }
        let now = now();
        if key
            .details
            .revocation_signatures
            .iter()
            .any(|r| r.verify_key(key.primary_key.public_key()).is_ok())
        {
            bail!("signing key {shown} ({fingerprint}): revoked; sign with a current key");
        }
        let which = pick(&key, now).with_context(|| {
            format!(
                "signing key {shown} ({fingerprint}): no key in it may sign (no subkey with the \
                 signing flag, and the primary key's self-signature does not allow signing), or it \
                 has expired"
            )
        })?;
        let encrypted = match which {
            Which::Primary => key.primary_key.secret_params().is_encrypted(),
            Which::Subkey(i) => key.secret_subkeys[i].key.secret_params().is_encrypted(),
        };
        let password = if encrypted {
            let Some(p) = std::env::var_os(PASSPHRASE_VAR) else {
                bail!(
                    "signing key {shown} ({fingerprint}): protected by a passphrase; set \
                     {PASSPHRASE_VAR}, or export the key without one"
                );
            };
            Password::from(p.as_encoded_bytes())
        } else {
            Password::empty()
        };
        let unlocked = match which {
            Which::Primary => key.primary_key.unlock(&password, |_, _| Ok(())),
            Which::Subkey(i) => key.secret_subkeys[i].key.unlock(&password, |_, _| Ok(())),
        };
        if !matches!(unlocked, Ok(Ok(()))) {
            bail!(
                "signing key {shown} ({fingerprint}): {PASSPHRASE_VAR} does not unlock it (or \
                 its secret part is unusable, e.g. a gpg stub of an offline key)"
            );
        }
        Ok(SigningKey {
            key,
            which,
            password,
            path: path.to_path_buf(),
            fingerprint,
        })
    }

    /// Write a detached signature of `data` to `sig` (through a temporary name), checked
    /// against the key's public part before it is moved into place.
    pub fn sign_file(&self, data: &Path, sig: &Path) -> Result<()> {
        let bytes = self.signature_of(data)?;
        write_via_temp(sig, |tmp| {
            std::fs::write(tmp, &bytes)
                .with_context(|| format!("{}: cannot write", tmp.display()))?;
            verify_signature(data, tmp, &Keyring::File(self.path.clone()))
                .map(drop)
                .with_context(|| {
                    format!(
                        "internal error: the signature just made of {} does not verify",
                        data.display()
                    )
                })
        })
    }

    /// The binary detached signature of `data`.
    fn signature_of(&self, data: &Path) -> Result<Vec<u8>> {
        let created = Timestamp::try_from(std::time::SystemTime::now())
            .map_err(|e| anyhow::anyhow!("the clock is out of OpenPGP's range: {e}"))?;
        let sig = match self.which {
            Which::Primary => self.sign_with(&self.key.primary_key, created, data)?,
            Which::Subkey(i) => self.sign_with(&self.key.secret_subkeys[i].key, created, data)?,
        };
        DetachedSignature::new(sig)
            .to_bytes()
            .map_err(|_| anyhow::anyhow!("cannot serialise the signature of {}", data.display()))
    }

    fn sign_with<K>(&self, k: &K, created: Timestamp, data: &Path) -> Result<Signature>
    where
        K: pgp::types::SigningKey + KeyDetails,
    {
        let hash = match k.hash_alg() {
            h @ (HashAlgorithm::Sha384 | HashAlgorithm::Sha512) => h,
            _ => HashAlgorithm::Sha256,
        };
        let mut config = SignatureConfig::v4(SignatureType::Binary, k.algorithm(), hash);
        let packets = || -> pgp::errors::Result<(Vec<Subpacket>, Vec<Subpacket>)> {
            Ok((
                vec![
                    Subpacket::regular(SubpacketData::SignatureCreationTime(created))?,
                    Subpacket::regular(SubpacketData::IssuerFingerprint(k.fingerprint()))?,
                ],
                vec![Subpacket::regular(SubpacketData::IssuerKeyId(
                    k.legacy_key_id(),
                ))?],
            ))
        };
        (config.hashed_subpackets, config.unhashed_subpackets) =
            packets().map_err(|_| anyhow::anyhow!("cannot make the signature's subpackets"))?;
        let file = std::fs::File::open(data)
            .with_context(|| format!("{}: cannot open to sign it", data.display()))?;
        config
            .sign(k, &self.password, std::io::BufReader::new(file))
            .map_err(|_| {
                anyhow::anyhow!(
                    "signing key {} ({}): signing {} failed (is the key's algorithm one hc1img \
                     supports: RSA, EdDSA, ECDSA?)",
                    self.path.display(),
                    self.fingerprint,
                    data.display()
                )
            })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the signature's hashed area carries key flags at all.
fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Whether a key created at `created` with the self-signature `sig` is expired at `now`.
fn expired(created: Timestamp, sig: &Signature, now: u64) -> bool {
    sig.key_expiration_time().is_some_and(|d| {
        d.as_secs() != 0 && u64::from(created.as_secs()) + u64::from(d.as_secs()) <= now
    })
}

/// The newest of `sigs` by creation time.
fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()))
}

/// The key that signs: the newest subkey bound with the signing flag and not expired, else the
/// primary key if its newest self-signature allows signing (or sets no flags) and it has not
/// expired.
fn pick(key: &SignedSecretKey, now: u64) -> Option<Which> {
    let primary = key.primary_key.public_key();
    let self_sig = newest(
        key.details
            .users
            .iter()
            .flat_map(|u| {
                u.signatures
                    .iter()
                    .filter(|s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
            })
            .chain(
                key.details
                    .direct_signatures
                    .iter()
                    .filter(|s| s.verify_key(primary).is_ok()),
            ),
    );
    if self_sig.is_some_and(|s| expired(primary.created_at(), s, now)) {
        return None;
    }
    let sub = key
        .secret_subkeys
        .iter()
        .enumerate()
        .filter_map(|(i, sk)| {
            let binding = newest(sk.signatures.iter().filter(|b| {
                b.verify_subkey_binding(primary, sk.key.public_key())
                    .is_ok()
            }))?;
            (binding.key_flags().sign()
                && binding.typ() == Some(SignatureType::SubkeyBinding)
                && !expired(sk.key.created_at(), binding, now))
            .then_some((sk.key.created_at(), i))
        })
        .max();
    if let Some((_, i)) = sub {
        return Some(Which::Subkey(i));
    }
    match self_sig {
        Some(s) if has_key_flags(s) && !s.key_flags().sign() => None,
        _ => Some(Which::Primary),
    }
}

/// `hc1img verify DIR --keyring FILE`: the signature of `DIR/SHA256SUMS` by a key in `keyring`,
/// every file the sums list (hashed with `hash`), and each listed manifest against the sums.
/// Returns one line per check; the first failure is a one-line error naming the file.
pub fn verify(
    dir: &Path,
    keyring: &Path,
    hash: &dyn Fn(&[PathBuf]) -> Result<Vec<OutputFile>>,
) -> Result<Vec<String>> {
    let sums = dir.join(SHA256SUMS);
    let sig = dir.join(SIGNATURE);
    if !sig.is_file() {
        bail!(
            "{}: missing: {} is not signed (`hc1img sign {} --key FILE` signs it)",
            sig.display(),
            dir.display(),
            dir.display()
        );
    }
    if !sums.is_file() {
        bail!(
            "{}: missing, but {SIGNATURE} is there: the directory is incomplete",
            sums.display()
        );
    }
    if !keyring.is_file() {
        bail!(
            "--keyring {}: not a readable file; give the armored or binary OpenPGP public key \
             the release was signed with",
            keyring.display()
        );
    }
    let v = verify_signature(&sums, &sig, &Keyring::File(keyring.to_path_buf()))?;
    let mut lines = vec![format!(
        "{SIGNATURE}: good signature of {SHA256SUMS} by {} (made {})",
        v.signer,
        v.date()
    )];
    let listed = crate::sums::check(dir, hash)?;
    for (name, sha) in &listed {
        lines.push(format!("{name}: ok ({})", &sha[..16]));
    }
    for name in crate::sums::listed_files(dir)? {
        if !listed.contains_key(&name) {
            lines.push(format!(
                "{name}: not in {SHA256SUMS}, so not covered by the signature"
            ));
        }
    }
    if dir.join("manifest.json").is_file() && !listed.contains_key("manifest.json") {
        bail!(
            "{}: not in the signed {SHA256SUMS}: the build's manifest is not covered by the \
             signature",
            dir.join("manifest.json").display()
        );
    }
    for name in listed.keys().filter(|n| n.ends_with("manifest.json")) {
        let prefix = &name[..name.len() - "manifest.json".len()];
        let m = Manifest::read_file(&dir.join(name))?;
        for (out, want) in &m.outputs {
            let file = format!("{prefix}{out}");
            let path = dir.join(&file);
            match listed.get(&file) {
                Some(sha) if *sha == want.sha256 => {}
                Some(_) => bail!(
                    "{}: {SHA256SUMS} and {name} disagree on its sha256: do not use this \
                     directory",
                    path.display()
                ),
                None if path.exists() => bail!(
                    "{}: listed in {name} but not in the signed {SHA256SUMS}: not covered by \
                     the signature",
                    path.display()
                ),
                // A build directory holds every output; a release only some (the compressed
                // images, not the plain ones).
                None if prefix.is_empty() => {
                    bail!("{}: missing (listed in {name})", path.display())
                }
                None => {}
            }
        }
        lines.push(format!(
            "{name}: its {} outputs agree with {SHA256SUMS}",
            m.outputs.len()
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_foreign_key_file_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.asc");
        let e = format!("{:#}", SigningKey::load(&missing).unwrap_err());
        assert!(
            e.contains("nope.asc: cannot read it") && !e.contains('\n'),
            "{e}"
        );
        let junk = dir.path().join("junk.asc");
        std::fs::write(
            &junk,
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nc2VjcmV0\n",
        )
        .unwrap();
        let e = format!("{:#}", SigningKey::load(&junk).unwrap_err());
        assert!(e.contains("junk.asc: not an OpenPGP key file"), "{e}");
        assert!(
            !e.contains("c2VjcmV0"),
            "the key file's text is in the error: {e}"
        );
        // The Arch Linux ARM public key: no secret in it.
        let public = dir.path().join("alarm.asc");
        std::fs::write(&public, crate::source::ALARM_KEY).unwrap();
        let e = format!("{:#}", SigningKey::load(&public).unwrap_err());
        assert!(e.contains("holds only a public key"), "{e}");
    }
}
