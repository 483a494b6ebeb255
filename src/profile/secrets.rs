//! Secrets: values the profile names but never contains (swarm tokens, password hashes, relay
//! passwords). A profile declares where each one comes from, a file (mode 0600, checked at
//! load) or an environment variable; the value is read only when asked for, and never printed:
//! `Debug`/`Display` show `<secret NAME sha256:0123abcd>` so logs can tell two values apart
//! without revealing either.
//!
//! Images are secret-free by default: a secret is read and written into the image only when
//! its declaration says `bake = true`. Any other declared secret is [`SecretSource::Card`]:
//! never read at build time; the edits leave its value out and tell the node's first boot
//! where to put it when `hc1img seed` brings it on the card (like cloud-init's NoCloud seed).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// An absolute path (resolved against the declaring profile, or given by `--secret`).
    File(PathBuf),
    /// An environment variable name.
    Env(String),
    /// Not baked into the image: the node takes the value from its card at boot
    /// (`hc1img seed --secret NAME=FILE`). Never read at build time.
    Card,
}

/// A secret's value. Never printed; compare with [`Secret::digest`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    name: String,
    value: Vec<u8>,
}

impl Secret {
    pub fn new(name: &str, value: Vec<u8>) -> Self {
        Secret {
            name: name.to_string(),
            value,
        }
    }

    /// The secret's name in the profile.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw bytes (as read from the file or variable).
    pub fn bytes(&self) -> &[u8] {
        &self.value
    }

    /// The value as UTF-8 text without trailing line breaks (what `echo x > file` leaves).
    pub fn text(&self) -> anyhow::Result<&str> {
        let s = std::str::from_utf8(&self.value)
            .map_err(|_| anyhow::anyhow!("secret `{}` is not UTF-8 text", self.name))?;
        Ok(s.trim_end_matches(['\n', '\r']))
    }

    /// sha256 of the raw value, lowercase hex: what enters the derivation hash.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(&self.value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digest();
        write!(f, "<secret {} sha256:{}>", self.name, &d[..8])
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Check that a secret file exists, is a regular file and is not readable by others.
/// `what` names the declaration for the message (e.g. `FILE:LINE: secrets.token.file`).
pub(crate) fn check_file(what: &str, path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        anyhow::anyhow!(
            "{what}: secret file {} cannot be read: {}; create it (mode 600) or pass --secret NAME=FILE",
            path.display(),
            io_reason(&e)
        )
    })?;
    if !meta.is_file() {
        anyhow::bail!(
            "{what}: secret file {} is not a regular file",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            anyhow::bail!(
                "{what}: secret file {} is world-readable (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
    Ok(())
}

/// Read a secret's value now.
pub(crate) fn read(name: &str, source: &SecretSource) -> anyhow::Result<Secret> {
    match source {
        SecretSource::File(p) => {
            check_file(&format!("secret `{name}`"), p)?;
            let v = std::fs::read(p)
                .with_context(|| format!("reading secret `{name}` from {}", p.display()))?;
            Ok(Secret::new(name, v))
        }
        SecretSource::Env(var) => match std::env::var_os(var) {
            Some(v) => Ok(Secret::new(name, v.into_encoded_bytes())),
            None => anyhow::bail!(
                "secret `{name}`: environment variable {var} is not set; export it or pass --secret {name}=FILE"
            ),
        },
        SecretSource::Card => anyhow::bail!(
            "secret `{name}` is not baked into the image (no `bake = true` in [secrets]); \
             put it on the node's card with `hc1img seed --secret {name}=FILE`"
        ),
    }
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("token", b"SWMTKN-1-verysecret\n".to_vec());
        let shown = format!("{s:?} {s}");
        assert!(!shown.contains("verysecret"), "{shown}");
        assert!(shown.contains("<secret token sha256:"), "{shown}");
        assert_eq!(s.text().ok(), Some("SWMTKN-1-verysecret"));
        let other = Secret::new("token", b"other".to_vec());
        assert_ne!(format!("{other}"), format!("{s}"));
    }
}
