//! Fast forms of verified inputs: the cache may keep, beside a compressed input it holds
//! (`<root>/sha256/<hex>`, a `.tar.gz` root tarball or a `.pkg.tar.xz`/`.pkg.tar.zst`
//! package), the same decompressed tar re-compressed with zstd (RFC 8878) at level
//! [`LEVEL`], which decodes several times faster than xz or gzip (docs/benchmarks.md, "Fast
//! forms"). A build reads it instead of the original when it verifies, and falls back to the
//! original when it is absent or does not verify, writing it (again) as it reads the original.
//!
//! Layout, under the cache root (the original's sha256 names both files):
//!
//! - `fast/<hex>.tar.zst`: one zstd frame with its content checksum (XXH64 of the tar), made
//!   read-only;
//! - `fast/<hex>.sha256`: what the fast form was made from and what it must hash to, lines of
//!   `key value`: `hc1img-fast-form 1`, `original <hex>` (the pin), `original-size <bytes>`,
//!   `size <bytes>` and `sha256 <hex>` of the `.tar.zst` file itself.
//!
//! Trust argument. A fast form is written only from a stream whose compressed bytes hashed to
//! the pin (the hash is compared when the stream ends; until then the fast form is a temporary
//! file under `tmp/`, which is deleted unless the hash matched and the whole stream decoded),
//! then fsynced and renamed into place, `.tar.zst` first and the record last, under the
//! cache's lock for `fast-<hex>`. On every read its size and sha256 are compared with the
//! record — before anything of it is used, so a mismatch falls back to the original instead of
//! failing a half-done build — and hashed again as it streams (the stream's sha256 is what
//! stands in for the original's: `Inflated::finish` in `rootfs::input` returns the pin
//! only when the fast form's digest matches the record), and zstd checks the frame checksum
//! of the decoded tar. So a fast form that was corrupted (a flipped byte, a truncation, a
//! half-written file, one recorded for another original) is detected and never reaches an
//! image. What it cannot detect is a substitution by someone who can write the cache
//! directory and rewrites the record with it: a fast form is trusted as much as the cache
//! directory (the originals are not: they are checked against the lock file's pins on every
//! read). `HC1IMG_FAST_FORMS=0` turns fast forms off (neither read nor written), for a build
//! that should trust nothing but the lock file. `hc1img vendor` and the lock file deal in the
//! originals only.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::Cache;

/// The zstd level of fast forms: level 1 decodes as fast as level 3 and costs about half the
/// CPU to write (docs/benchmarks.md, "Fast forms").
pub const LEVEL: i32 = 1;

/// The first line of a record.
const MAGIC: &str = "hc1img-fast-form 1";

/// The most a record may hold (it is a few lines).
const MAX_RECORD: u64 = 4096;

/// Whether fast forms are used: unless `HC1IMG_FAST_FORMS` is `0`, `off` or `no`.
pub fn enabled() -> bool {
    !matches!(
        std::env::var("HC1IMG_FAST_FORMS").as_deref(),
        Ok("0" | "off" | "no")
    )
}

/// The cache that holds `path` as its verified file `sha256` (`<root>/sha256/<sha256>`), when
/// it does and fast forms are [`enabled`]: inputs given as a local path outside the cache
/// have none.
pub fn cache_of(path: &Path, sha256: &str) -> Option<Cache> {
    if !enabled() || super::check_sha256(sha256).is_err() {
        return None;
    }
    let dir = path.parent()?;
    if path.file_name()? != sha256 || dir.file_name()? != "sha256" {
        return None;
    }
    Some(Cache::new(dir.parent()?.to_path_buf()))
}

/// A fast form's record (`fast/<hex>.sha256`), parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastForm {
    /// The `.tar.zst` file.
    pub path: PathBuf,
    /// The original's sha256 (the pin) and size.
    pub original: String,
    pub original_size: u64,
    /// The `.tar.zst` file's size and sha256.
    pub size: u64,
    pub sha256: String,
}

impl Cache {
    /// Where the fast form of the cached file `sha256` lives (or would live).
    pub fn fast_path(&self, sha256: &str) -> PathBuf {
        self.root().join("fast").join(format!("{sha256}.tar.zst"))
    }

    /// Where the record of that fast form lives.
    pub fn fast_record_path(&self, sha256: &str) -> PathBuf {
        self.root().join("fast").join(format!("{sha256}.sha256"))
    }
}

/// The fast form of the original `sha256`, if the cache has one whose record is well formed,
/// names that original and gives the file's size. `Ok(None)` when there is none; `Err` (the
/// reason, naming the file) when what is there does not fit. Its sha256 is not checked here
/// ([`verify`], or the stream that reads it).
pub fn find(cache: &Cache, sha256: &str) -> Result<Option<FastForm>> {
    let path = cache.fast_path(sha256);
    let rec_path = cache.fast_record_path(sha256);
    let rec = match File::open(&rec_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if path.exists() {
                Err(anyhow!(
                    "{}: no record {}",
                    path.display(),
                    rec_path.display()
                ))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot open", rec_path.display())),
    };
    let mut text = String::new();
    rec.take(MAX_RECORD)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: cannot read as text", rec_path.display()))?;
    let ff = parse_record(&text, path)
        .with_context(|| format!("{}: not a fast-form record", rec_path.display()))?;
    if ff.original != sha256 {
        bail!(
            "{}: records the fast form of {}, not of {sha256}",
            rec_path.display(),
            ff.original
        );
    }
    let len = fs::metadata(&ff.path)
        .with_context(|| format!("{}: cannot stat", ff.path.display()))?
        .len();
    if len != ff.size {
        bail!(
            "{}: {len} bytes, its record says {} (truncated or replaced)",
            ff.path.display(),
            ff.size
        );
    }
    Ok(Some(ff))
}

/// Hash the whole fast form and compare with its record.
pub fn verify(ff: &FastForm) -> Result<()> {
    let (size, sha) = super::sha256_file_with(&ff.path, &|_| {})?;
    if size != ff.size || sha != ff.sha256 {
        bail!(
            "{}: sha256 is {sha} ({size} bytes), its record says {} ({} bytes)",
            ff.path.display(),
            ff.sha256,
            ff.size
        );
    }
    Ok(())
}

/// The fast form of the original `sha256` that [`find`] finds and [`verify`] accepts.
/// `Ok(None)` when there is none; `Err` (the reason) when one is there and does not verify.
pub fn find_verified(cache: &Cache, sha256: &str) -> Result<Option<FastForm>> {
    let Some(ff) = find(cache, sha256)? else {
        return Ok(None);
    };
    verify(&ff)?;
    Ok(Some(ff))
}

/// Remove a fast form and its record (when a build found it bad; it is written again).
pub fn remove(cache: &Cache, sha256: &str) {
    let _ = fs::remove_file(cache.fast_record_path(sha256));
    let _ = fs::remove_file(cache.fast_path(sha256));
}

fn parse_record(text: &str, path: PathBuf) -> Result<FastForm> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        bail!("its first line is not {MAGIC:?}");
    }
    let (mut original, mut original_size, mut size, mut sha256) = (None, None, None, None);
    for line in lines {
        let Some((k, v)) = line.split_once(' ') else {
            bail!("line {line:?} is not `key value`");
        };
        let num = || {
            v.parse::<u64>()
                .map_err(|_| anyhow!("{k} {v:?} is not a number"))
        };
        match k {
            "original" => original = Some(v.to_string()),
            "original-size" => original_size = Some(num()?),
            "size" => size = Some(num()?),
            "sha256" => sha256 = Some(v.to_string()),
            _ => bail!("unknown key {k:?}"),
        }
    }
    let missing = |k: &str| anyhow!("no {k} line");
    let ff = FastForm {
        path,
        original: original.ok_or_else(|| missing("original"))?,
        original_size: original_size.ok_or_else(|| missing("original-size"))?,
        size: size.ok_or_else(|| missing("size"))?,
        sha256: sha256.ok_or_else(|| missing("sha256"))?,
    };
    super::check_sha256(&ff.original)?;
    super::check_sha256(&ff.sha256)?;
    Ok(ff)
}

fn record_text(ff: &FastForm) -> String {
    format!(
        "{MAGIC}\noriginal {}\noriginal-size {}\nsize {}\nsha256 {}\n",
        ff.original, ff.original_size, ff.size, ff.sha256
    )
}

/// Counts and hashes the bytes written through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The encoder thread's result: the temporary file and its size and sha256.
type Encoded = io::Result<(tempfile::NamedTempFile, u64, String)>;

/// Writes a fast form from the decoded tar stream as it passes (a tee on its own thread,
/// bounded: at most 4 chunks queued), into a temporary file that [`Writer::commit`] puts in
/// place once the caller knows the original matched its pin; dropped otherwise, the
/// temporary file goes.
pub struct Writer {
    cache: Cache,
    original: String,
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<Encoded>>,
    /// Decoded bytes fed so far.
    fed: u64,
}

impl Writer {
    /// Start writing the fast form of the cached original `sha256`.
    pub fn start(cache: &Cache, sha256: &str) -> Result<Writer> {
        cache.ensure_dirs()?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("fast-{sha256}-"))
            .suffix(".tar.zst.part")
            .tempfile_in(cache.root().join("tmp"))
            .with_context(|| {
                format!(
                    "cannot create a temporary file in {}",
                    cache.root().display()
                )
            })?;
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let thread = std::thread::spawn(move || -> Encoded {
            let file = tmp.as_file().try_clone()?;
            let out = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hash: Sha256::new(),
                len: 0,
            };
            let mut enc = zstd::stream::write::Encoder::new(out, LEVEL)?;
            enc.include_checksum(true)?;
            for chunk in rx {
                enc.write_all(&chunk)?;
            }
            let mut out = enc.finish()?;
            out.flush()?;
            let HashingWriter { inner, hash, len } = out;
            let file = inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok((tmp, len, hex::encode(hash.finalize())))
        });
        Ok(Writer {
            cache: cache.clone(),
            original: sha256.to_string(),
            tx: Some(tx),
            thread: Some(thread),
            fed: 0,
        })
    }

    /// Pass on the next piece of the decoded tar stream (blocks while the encoder is 4 chunks
    /// behind). After an encoder error it does nothing; [`Writer::commit`] reports it.
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(tx) = &self.tx {
            if tx.send(chunk.to_vec()).is_err() {
                self.tx = None;
            }
            self.fed += chunk.len() as u64;
        }
    }

    /// The stream has ended and the original's compressed bytes hashed to `sha256` (its size
    /// `original_size`): when that is the pin this writer was started for, finish the fast
    /// form and put it and its record in place (each fsynced, then renamed). Otherwise the
    /// temporary file is deleted and nothing is written.
    pub fn commit(mut self, sha256: &str, original_size: u64) -> Result<()> {
        let fed = self.fed;
        drop(self.tx.take());
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("internal error: fast-form writer committed twice"))?;
        let (tmp, size, fast_sha) = thread
            .join()
            .map_err(|_| anyhow!("the fast-form encoder thread crashed"))?
            .context("cannot write the fast form")?;
        if sha256 != self.original {
            bail!(
                "not written: the original hashed to {sha256}, not its pin {}",
                self.original
            );
        }
        let ff = FastForm {
            path: self.cache.fast_path(&self.original),
            original: self.original.clone(),
            original_size,
            size,
            sha256: fast_sha,
        };
        let dir = self.cache.root().join("fast");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut rec = tempfile::Builder::new()
            .prefix(&format!("fast-{}-", self.original))
            .suffix(".sha256.part")
            .tempfile_in(self.cache.root().join("tmp"))
            .context("cannot create the fast form's record")?;
        rec.write_all(record_text(&ff).as_bytes())?;
        rec.as_file().sync_all()?;
        for f in [tmp.path(), rec.path()] {
            let mut perms = fs::metadata(f)?.permissions();
            perms.set_readonly(true);
            fs::set_permissions(f, perms)?;
        }
        let _lock = self.cache.lock(&format!("fast-{}", self.original))?;
        tmp.persist(&ff.path)
            .with_context(|| format!("cannot move the fast form to {}", ff.path.display()))?;
        let rec_path = self.cache.fast_record_path(&self.original);
        rec.persist(&rec_path)
            .with_context(|| format!("cannot move the record to {}", rec_path.display()))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        crate::progress::timing(&format!(
            "fast form: wrote {} ({fed} bytes of tar in {size} bytes)",
            ff.path.display()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Result<(tempfile::TempDir, Cache)> {
        let dir = tempfile::tempdir()?;
        let cache = Cache::new(dir.path().to_path_buf());
        cache.ensure_dirs()?;
        Ok((dir, cache))
    }

    fn write(cache: &Cache, sha: &str, data: &[u8]) -> Result<()> {
        let mut w = Writer::start(cache, sha)?;
        for c in data.chunks(1000) {
            w.feed(c);
        }
        w.commit(sha, 42)
    }

    #[test]
    fn a_written_fast_form_verifies_and_decodes_to_the_stream() -> Result<()> {
        let (_d, cache) = cache()?;
        let sha = "a".repeat(64);
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        write(&cache, &sha, &data)?;
        let ff = find_verified(&cache, &sha)?.ok_or_else(|| anyhow!("not found"))?;
        assert_eq!(ff.original_size, 42);
        // The oracle: the zstd command line tool, which checks the frame checksum.
        let out = std::process::Command::new("zstd")
            .args(["-dc", "--check"])
            .arg(&ff.path)
            .output()
            .context("the zstd tool is needed")?;
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
        // Read-only, like the originals.
        assert!(fs::metadata(&ff.path)?.permissions().readonly());
        Ok(())
    }

    #[test]
    fn a_fast_form_of_another_hash_is_not_written() -> Result<()> {
        let (_d, cache) = cache()?;
        let sha = "b".repeat(64);
        let mut w = Writer::start(&cache, &sha)?;
        w.feed(b"data");
        let e = w
            .commit(&"c".repeat(64), 4)
            .err()
            .ok_or_else(|| anyhow!("no error"))?;
        assert!(format!("{e:#}").contains("not its pin"));
        assert_eq!(find(&cache, &sha)?, None);
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(cache.root().join("tmp"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    }

    #[test]
    fn corrupt_truncated_and_mismatched_fast_forms_are_refused() -> Result<()> {
        let (_d, cache) = cache()?;
        let sha = "d".repeat(64);
        write(&cache, &sha, &[7u8; 50_000])?;
        let path = cache.fast_path(&sha);
        let good = fs::read(&path)?;
        let put = |bytes: &[u8]| -> Result<()> {
            let _ = fs::remove_file(&path);
            fs::write(&path, bytes)?;
            Ok(())
        };
        // A flipped byte: same size, other sha256.
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        put(&bad)?;
        let e = find_verified(&cache, &sha)
            .err()
            .ok_or_else(|| anyhow!("accepted"))?;
        assert!(format!("{e:#}").contains("its record says"), "{e:#}");
        // Truncated: found out from the size alone.
        put(&good[..good.len() - 1])?;
        let e = find(&cache, &sha)
            .err()
            .ok_or_else(|| anyhow!("accepted"))?;
        assert!(format!("{e:#}").contains("truncated"), "{e:#}");
        // A record for another original, a garbled record, a fast form without a record.
        put(&good)?;
        assert!(find_verified(&cache, &sha)?.is_some());
        let rec = cache.fast_record_path(&sha);
        let text = fs::read_to_string(&rec)?;
        let _ = fs::remove_file(&rec);
        fs::write(&rec, text.replace(&sha, &"e".repeat(64)))?;
        assert!(
            format!(
                "{:#}",
                find(&cache, &sha).err().ok_or_else(|| anyhow!("x"))?
            )
            .contains("not of")
        );
        fs::remove_file(&rec)?;
        fs::write(&rec, "garbage")?;
        assert!(find(&cache, &sha).is_err());
        fs::remove_file(&rec)?;
        assert!(find(&cache, &sha).is_err());
        remove(&cache, &sha);
        assert_eq!(find(&cache, &sha)?, None);
        Ok(())
    }

    #[test]
    fn only_cached_originals_have_a_cache() {
        let sha = "f".repeat(64);
        let p = PathBuf::from("/c/sha256").join(&sha);
        if enabled() {
            assert_eq!(cache_of(&p, &sha), Some(Cache::new(PathBuf::from("/c"))));
        }
        assert_eq!(cache_of(&p, &"0".repeat(64)), None);
        assert_eq!(cache_of(Path::new("/tmp/x.tar.gz"), &sha), None);
    }
}
