//! SHA-256 (FIPS 180-4) of files, as 64 lowercase hex digits: the one helper the crate uses to
//! hash a file.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The SHA-256 of the file at `path`, as 64 lowercase hex digits. Streams; any size works.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).with_context(|| format!("cannot open {} to hash it", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read {} to hash it", path.display()));
            }
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex_digest(hasher))
}

/// Finishes `hasher` as 64 lowercase hex digits.
pub(crate) fn hex_digest(hasher: Sha256) -> String {
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        std::fs::write(&p, b"")?;
        assert_eq!(
            sha256_file(&p)?,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        std::fs::write(&p, b"abc")?;
        assert_eq!(
            sha256_file(&p)?,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_file(&dir.path().join("missing")).is_err());
        Ok(())
    }
}
