//! SHA-256 (FIPS 180-4) of files, as 64 lowercase hex digits: the one helper the crate uses to
//! hash a file.
//!
//! Sparse files (our images are mostly holes) are hashed without reading their holes: the
//! data ranges come from `SEEK_DATA`/`SEEK_HOLE` and the holes are fed to the hash as zeros
//! from memory, which spares the kernel from materialising gigabytes of zero pages.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::sparse::for_each_chunk;

/// The SHA-256 of the file at `path`, as 64 lowercase hex digits. Streams; any size works.
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sha256_file_with(path, &|_| {})?.1)
}

/// The file's size and SHA-256; `progress` is called with the number of bytes hashed so far
/// (holes included), for progress bars.
pub fn sha256_file_with(path: &Path, progress: &dyn Fn(u64)) -> Result<(u64, String)> {
    let file =
        File::open(path).with_context(|| format!("cannot open {} to hash it", path.display()))?;
    sha256_open_file(&file, path, progress)
}

/// [`sha256_file_with`] of a file already open (`path` names it in errors): the build hashes
/// each image through its own handle right after writing it.
pub fn sha256_open_file(file: &File, path: &Path, progress: &dyn Fn(u64)) -> Result<(u64, String)> {
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {} to hash it", path.display()))?
        .len();
    let mut hasher = Sha256::new();
    let mut pos = 0u64;
    for_each_chunk(file, len, &mut |data| {
        hasher.update(data);
        pos += data.len() as u64;
        progress(pos);
        Ok(())
    })
    .with_context(|| format!("cannot read {} to hash it", path.display()))?;
    Ok((len, hex_digest(hasher)))
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

    #[test]
    fn sparse_files_hash_like_their_bytes() -> Result<()> {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("sparse");
        let f = File::create(&p)?;
        f.set_len(10 << 20)?;
        f.write_all_at(b"data in the middle", 5 << 20)?;
        f.write_all_at(b"tail", (10 << 20) - 4)?;
        drop(f);
        let bytes = std::fs::read(&p)?;
        assert_eq!(sha256_file(&p)?, hex::encode(Sha256::digest(&bytes)));
        let seen = std::cell::Cell::new(0);
        let (len, _) = sha256_file_with(&p, &|n| seen.set(n))?;
        assert_eq!((len, seen.get()), (10 << 20, 10 << 20));
        Ok(())
    }
}
