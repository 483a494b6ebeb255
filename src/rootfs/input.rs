//! Reading the root tarball: compression detection, and a pipeline that verifies the
//! tarball's sha256 and inflates it on other threads while the caller parses tar headers and
//! writes file data.
//!
//! Three stages run at once: the reader thread reads the compressed file in 1 MiB chunks and
//! hands each chunk to the hasher thread (sha256 of the compressed bytes, compared with the
//! pin at the end) and to the decompressor; the decompressor's output reaches the caller
//! through a bounded channel of 1 MiB buffers ([`Inflated`] implements [`Read`]). Bounded
//! channels keep memory flat whatever the tarball's size.
//!
//! Formats are recognised by magic bytes: gzip (RFC 1952, multi-member), xz, zstd, or a plain
//! POSIX tar (`ustar` at offset 257). [`decoder`] is the one choice of decompressor per format,
//! for the tarball and the packages alike. gzip's DEFLATE (RFC 1951) is inflated by the
//! pure-Rust `sirocco` ([`MultiGz`]): on the fixture tarballs it costs 0.55–0.6× the CPU of
//! zlib-rs (flate2's backend, used before), with the same output and the same verdict on
//! damaged input (docs/benchmarks.md, "sirocco"; the test
//! `sirocco_agrees_with_flate2_on_random_and_damaged_gzip`).
//!
//! A pinned input in the cache is read through its fast form when there is one that verifies
//! ([`Inflated::open_pinned`], [`crate::source::fast`]): the same pipeline reads and hashes the
//! `.tar.zst` instead, and [`Inflated::finish`] returns the original's sha256 only when the
//! fast form hashed to its record. Without one, the decoded stream is also passed to a zstd
//! encoder on its own thread, which writes the fast form, put in place only when the
//! original's sha256 matched the pin.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::source::fast::{FastForm, Writer};

const CHUNK: usize = 1 << 20;

/// Compression of a tarball, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    None,
}

impl Compression {
    /// Recognise the format from the file's first 512+ bytes.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// An upper bound on the unpacked tar stream's size, when the container tells it cheaply:
/// the gzip trailer's ISIZE (modulo 4 GiB, so only trusted when it is at least the compressed
/// size), or the file's own size for a plain tar. `None` when unknown.
pub fn unpacked_size_hint(path: &Path) -> Result<Option<u64>> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; 512];
    let n = read_full(&mut f, &mut head)?;
    match Compression::sniff(&head[..n]) {
        Some(Compression::None) => Ok(Some(len)),
        Some(Compression::Gzip) if len >= 18 => {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::End(-4))?;
            let mut t = [0u8; 4];
            f.read_exact(&mut t)?;
            let isize = u32::from_le_bytes(t) as u64;
            // Below 4 GiB the field is exact; a wrapped value shows as smaller than plausible.
            Ok((isize >= len).then_some(isize))
        }
        _ => Ok(None),
    }
}

pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The decompressor for `kind` reading the compressed bytes from `raw`: the project's one
/// choice per format (gzip: every member, as `gzip -d` reads them, RFC 1952 2.2, inflated by
/// sirocco, [`MultiGz`]; xz: every stream; zstd: every frame).
pub fn decoder<'a>(kind: Compression, raw: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Compression::Gzip => Box::new(MultiGz::new(BufReader::with_capacity(CHUNK, raw))),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(
            BufReader::with_capacity(CHUNK, raw),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
        Compression::None => Box::new(raw),
    })
}

/// A gzip file read as `gzip -d` reads it: its members one after another (RFC 1952, 2.2: "a
/// gzip file consists of a series of members"), each inflated (RFC 1951) and checked (CRC-32,
/// ISIZE) by one `sirocco::inflate::Reader`, which reads exactly one member; after a member,
/// any further input must be another member (as flate2's `MultiGzDecoder` has it: trailing
/// bytes that are not one are an error, not ignored). After an error every read fails.
#[derive(Debug)]
pub struct MultiGz<R: io::BufRead> {
    state: GzState<R>,
}

#[derive(Debug)]
enum GzState<R: io::BufRead> {
    Member(sirocco::inflate::Reader<R>),
    Done,
    Failed(io::ErrorKind, String),
}

impl<R: io::BufRead> MultiGz<R> {
    pub fn new(inner: R) -> MultiGz<R> {
        MultiGz {
            state: GzState::Member(sirocco::inflate::Reader::new(sirocco::Format::Gzip, inner)),
        }
    }
}

impl<R: io::BufRead> Read for MultiGz<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let r = match &mut self.state {
                GzState::Member(r) => r,
                GzState::Done => return Ok(0),
                GzState::Failed(kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
            };
            match r.read(buf) {
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) => {
                    self.state = GzState::Failed(e.kind(), e.to_string());
                    return Err(e);
                }
            }
            // The member ended (its CRC-32 and ISIZE matched): another one, or the end.
            let GzState::Member(r) = std::mem::replace(&mut self.state, GzState::Done) else {
                return Ok(0);
            };
            let mut inner = r.into_inner();
            let more = match inner.fill_buf() {
                Ok(rest) => !rest.is_empty(),
                Err(e) => {
                    self.state = GzState::Failed(e.kind(), e.to_string());
                    return Err(e);
                }
            };
            if !more {
                return Ok(0);
            }
            self.state =
                GzState::Member(sirocco::inflate::Reader::new(sirocco::Format::Gzip, inner));
        }
    }
}

/// Bytes decoded so far from each file (by the path it was opened as), by every decoder this
/// module hands out: what shows that a build decodes each input once
/// (the package installer's tests).
static DECODED: Mutex<BTreeMap<PathBuf, u64>> = Mutex::new(BTreeMap::new());

/// Count `n` more bytes decoded from `path`.
pub fn note_decoded(path: &Path, n: u64) {
    let mut m = DECODED.lock().unwrap_or_else(|e| e.into_inner());
    match m.get_mut(path) {
        Some(v) => *v += n,
        None => {
            m.insert(path.to_path_buf(), n);
        }
    }
}

/// How many bytes have been decoded from `path` in this process so far.
pub fn decoded_bytes(path: &Path) -> u64 {
    let m = DECODED.lock().unwrap_or_else(|e| e.into_inner());
    m.get(path).copied().unwrap_or(0)
}

/// Reads the chunks another thread sends, counting the time spent waiting for them.
struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    waited: Duration,
}

impl ChunkReader {
    fn new(rx: Receiver<io::Result<Vec<u8>>>) -> ChunkReader {
        ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            waited: Duration::ZERO,
        }
    }
}

impl ChunkReader {
    /// The rest of the stream's current chunk, or the next chunk, whole (no copy when nothing
    /// of it was read); `None` at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.pos < self.cur.len() {
            let c = std::mem::take(&mut self.cur);
            let pos = std::mem::replace(&mut self.pos, 0);
            return Ok(Some(if pos == 0 { c } else { c[pos..].to_vec() }));
        }
        loop {
            let t = Instant::now();
            let got = self.rx.recv();
            self.waited += t.elapsed();
            match got {
                Ok(Ok(c)) if c.is_empty() => {}
                Ok(Ok(c)) => {
                    self.cur = Vec::new();
                    self.pos = 0;
                    return Ok(Some(c));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(None),
            }
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            let t = Instant::now();
            let got = self.rx.recv();
            self.waited += t.elapsed();
            match got {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the decompressor's thread returns: the time it spent decoding, and the fast-form
/// writer it fed when the stream was decoded to its end.
type InflaterResult = io::Result<(Duration, Option<Writer>)>;

/// The decompressor's thread and the hasher's.
type Workers = (JoinHandle<InflaterResult>, JoinHandle<(String, u64)>);

/// What a stream does with the input's fast form ([`crate::source::fast`]).
enum Fast {
    /// Nothing: reads the original, writes no fast form.
    Off,
    /// Reads the fast form (found verified) instead of the original.
    Read(FastForm),
    /// Reads the original and writes the fast form from the decoded stream.
    Write(Writer),
}

/// The inflated tar stream, produced on other threads. Call [`Inflated::finish`] after the
/// tar stream has been consumed to learn the compressed file's sha256 and size.
pub struct Inflated {
    chunks: ChunkReader,
    threads: Option<Workers>,
    path: PathBuf,
    /// The fast form read instead of the original, if one is.
    reading: Option<FastForm>,
    input_len: u64,
}

impl Read for Inflated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.chunks.read(buf)
    }
}

/// Counts bytes read, for progress reporting.
pub type ProgressFn = Box<dyn Fn(u64) + Send>;

impl Inflated {
    /// The next piece of the tar stream as the decoder produced it (up to 1 MiB), handed over
    /// without a copy, after what [`Read::read`] returned; `None` at the end. For
    /// [`crate::rootfs::fanout`], which passes the pieces on to several builds.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.chunks.next_chunk()
    }

    /// Start reading, hashing and inflating `path`. `progress` is called with the number of
    /// compressed bytes read so far.
    pub fn open(path: &Path, progress: Option<ProgressFn>) -> Result<Inflated> {
        Inflated::start(path, path, progress, Fast::Off)
    }

    /// [`Inflated::open`] of a pinned input `sha256` at `path`, through its fast form
    /// ([`crate::source::fast`]) when it is in the cache and verifies, else the original,
    /// writing the fast form as the original streams when `path` is in the cache. The second
    /// value is a warning when a fast form was there and did not verify (it was removed, and
    /// is written again). [`Inflated::finish`] returns the original's sha256 either way (for
    /// the fast form: the pin, once the fast form hashed to its record).
    pub fn open_pinned(
        path: &Path,
        sha256: &str,
        progress: Option<ProgressFn>,
    ) -> Result<(Inflated, Option<String>)> {
        let Some(cache) = crate::source::fast::cache_of(path, sha256) else {
            return Ok((Inflated::open(path, progress)?, None));
        };
        let mut warning = None;
        match crate::source::fast::find_verified(&cache, sha256) {
            Ok(Some(ff)) => {
                let fp = ff.path.clone();
                return Ok((Inflated::start(path, &fp, progress, Fast::Read(ff))?, None));
            }
            Ok(None) => {}
            Err(e) => {
                crate::source::fast::remove(&cache, sha256);
                warning = Some(format!(
                    "fast form of {} does not verify ({e:#}); reading the original and writing the fast form again",
                    path.display()
                ));
            }
        }
        let fast = match crate::source::fast::Writer::start(&cache, sha256) {
            Ok(w) => Fast::Write(w),
            Err(_) => Fast::Off,
        };
        Ok((Inflated::start(path, path, progress, fast)?, warning))
    }

    /// [`Inflated::open`] of the original `path` through its fast form `ff`, found verified
    /// already ([`crate::source::fast::find_verified`]); [`Inflated::finish`] checks it hashed
    /// to its record again and returns the original's sha256.
    pub fn open_fast(path: &Path, ff: FastForm) -> Result<Inflated> {
        let fp = ff.path.clone();
        Inflated::start(path, &fp, None, Fast::Read(ff))
    }

    /// The fast form this stream reads instead of the original, if it reads one.
    pub fn fast_form(&self) -> Option<&Path> {
        self.reading.as_ref().map(|f| f.path.as_path())
    }

    /// The number of compressed bytes this stream reads (the fast form's, when it reads one).
    pub fn input_len(&self) -> u64 {
        self.input_len
    }

    /// Start reading `file` (the original `path`, or its fast form).
    fn start(
        path: &Path,
        file: &Path,
        progress: Option<ProgressFn>,
        fast: Fast,
    ) -> Result<Inflated> {
        let mut f = File::open(file)
            .with_context(|| format!("{}: cannot open the root tarball", file.display()))?;
        let input_len = f
            .metadata()
            .with_context(|| format!("{}: cannot stat", file.display()))?
            .len();
        let mut head = vec![0u8; 512];
        let n = read_full(&mut f, &mut head)
            .with_context(|| format!("{}: cannot read", file.display()))?;
        head.truncate(n);
        let Some(kind) = Compression::sniff(&head) else {
            bail!(
                "{}: not a tarball hc1img can read (expected .tar, .tar.gz, .tar.xz or .tar.zst)",
                file.display()
            );
        };

        let (raw_tx, raw_rx) = sync_channel::<io::Result<Vec<u8>>>(4);
        let (hash_tx, hash_rx) = sync_channel::<Vec<u8>>(4);
        let (out_tx, out_rx) = sync_channel::<io::Result<Vec<u8>>>(8);

        // Reader: file -> (hasher, decompressor).
        let reader = std::thread::spawn(move || {
            let send = |c: Vec<u8>| -> bool {
                hash_tx.send(c.clone()).is_ok() && raw_tx.send(Ok(c)).is_ok()
            };
            if !send(head) {
                return;
            }
            let mut total = n as u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut f, &mut buf) {
                    Ok(0) => return,
                    Ok(k) => {
                        buf.truncate(k);
                        total += k as u64;
                        if let Some(p) = &progress {
                            p(total);
                        }
                        if !send(buf) {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = raw_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let hasher = std::thread::spawn(move || {
            let mut h = Sha256::new();
            let mut size = 0u64;
            for c in hash_rx {
                size += c.len() as u64;
                h.update(&c);
            }
            (hex::encode(h.finalize()), size)
        });
        let counted = path.to_path_buf();
        let (mut tee, reading) = match fast {
            Fast::Write(w) => (Some(w), None),
            Fast::Read(ff) => (None, Some(ff)),
            Fast::Off => (None, None),
        };
        let inflater = std::thread::spawn(move || -> InflaterResult {
            let mut dec = decoder(kind, ChunkReader::new(raw_rx))?;
            let mut busy = Duration::ZERO;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let t = Instant::now();
                let got = read_full(&mut dec, &mut buf);
                busy += t.elapsed();
                match got {
                    Ok(0) => return Ok((busy, tee)),
                    Ok(k) => {
                        note_decoded(&counted, k as u64);
                        buf.truncate(k);
                        if let Some(w) = &mut tee {
                            w.feed(&buf);
                        }
                        if out_tx.send(Ok(buf)).is_err() {
                            // The reader stopped: the stream was not read whole.
                            return Ok((busy, None));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = out_tx.send(Err(io::Error::new(e.kind(), msg)));
                        return Err(e);
                    }
                }
            }
        });
        // The reader thread ends on its own when the file is read or a channel closes.
        drop(reader);
        Ok(Inflated {
            chunks: ChunkReader::new(out_rx),
            threads: Some((inflater, hasher)),
            path: path.to_path_buf(),
            reading,
            input_len,
        })
    }

    /// Drain whatever the tar parser left (trailing zero blocks), wait for the threads and
    /// return the compressed file's sha256 (hex) and size.
    pub fn finish(mut self) -> Result<(String, u64)> {
        io::copy(&mut self.chunks, &mut io::sink())
            .with_context(|| format!("{}: corrupt compressed data", self.path.display()))?;
        let Some((inflater, hasher)) = self.threads.take() else {
            bail!("internal error: Inflated::finish called twice");
        };
        // Drop our end so a still-sending inflater cannot block.
        let waited = self.chunks.waited;
        drop(self.chunks);
        let shown = match &self.reading {
            Some(ff) => format!(
                "{} (its fast form {})",
                self.path.display(),
                ff.path.display()
            ),
            None => self.path.display().to_string(),
        };
        let tee = match inflater.join() {
            Ok(Ok((busy, tee))) => {
                crate::progress::timing(&format!(
                    "inflate: {:.3} s decoding (input wait included), the tar reader waited {:.3} s for it",
                    busy.as_secs_f64(),
                    waited.as_secs_f64()
                ));
                tee
            }
            Ok(Err(e)) => bail!("{shown}: corrupt compressed data: {e}"),
            Err(_) => bail!("{shown}: the decompressor thread crashed"),
        };
        let (sha, size) = hasher
            .join()
            .map_err(|_| anyhow::anyhow!("{shown}: the hashing thread crashed"))?;
        if let Some(w) = tee
            && let Err(e) = w.commit(&sha, size)
        {
            crate::progress::timing(&format!("fast form of {}: {e:#}", self.path.display()));
        }
        match self.reading {
            // The fast form stands in for the original once it hashed to its record.
            Some(ff) if sha == ff.sha256 && size == ff.size => Ok((ff.original, ff.original_size)),
            Some(ff) => {
                if let Some(cache) = crate::source::fast::cache_of(&self.path, &ff.original) {
                    crate::source::fast::remove(&cache, &ff.original);
                }
                bail!(
                    "{shown}: the fast form's sha256 is {sha} ({size} bytes), its record says {} ({} bytes): it changed during the build; the build stops (run it again: it falls back to the original)",
                    ff.sha256,
                    ff.size
                )
            }
            None => Ok((sha, size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "a", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn every_compression_inflates_and_hashes_the_compressed_file() {
        let tar = tar_bytes();
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let variants = [
            ("t.tar", tar.clone()),
            ("t.tar.gz", gz.finish().unwrap()),
            ("t.tar.zst", zstd::encode_all(&tar[..], 3).unwrap()),
            ("t.tar.xz", {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(&tar).unwrap();
                e.finish().unwrap()
            }),
        ];
        for (name, bytes) in variants {
            let p = dir.path().join(name);
            std::fs::write(&p, &bytes).unwrap();
            let mut inf = Inflated::open(&p, None).unwrap();
            let mut out = Vec::new();
            inf.read_to_end(&mut out).unwrap();
            assert_eq!(out, tar, "{name}");
            let (sha, size) = inf.finish().unwrap();
            assert_eq!(sha, hex::encode(Sha256::digest(&bytes)), "{name}");
            assert_eq!(size, bytes.len() as u64);
        }
    }

    #[test]
    fn garbage_and_corrupt_gzip_give_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"hello world").unwrap();
        let e = Inflated::open(&p, None).err().unwrap().to_string();
        assert!(e.contains("not a tarball"), "{e}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar_bytes()).unwrap();
        let mut bytes = gz.finish().unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        bytes[n / 2 + 1] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let mut inf = Inflated::open(&p, None).unwrap();
        let mut out = Vec::new();
        let read = inf.read_to_end(&mut out);
        assert!(read.is_err() || inf.finish().is_err());
    }

    #[test]
    fn truncated_gzip_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        for cut in [11, bytes.len() / 2, bytes.len() - 4, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let mut inf = Inflated::open(&p, None).unwrap();
            let mut out = Vec::new();
            let e = match inf.read_to_end(&mut out) {
                Err(e) => e.to_string(),
                Ok(_) => format!("{:#}", inf.finish().unwrap_err()),
            };
            assert!(e.contains("ended early"), "cut at {cut}: {e}");
        }
    }

    /// Seeded xorshift64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Bytes of a mixed kind: noise, runs, words, copies of what came before.
    fn content(rng: &mut Rng) -> Vec<u8> {
        let len = match rng.below(4) {
            0 => rng.below(64),
            1 => rng.below(4096),
            _ => rng.below(120_000),
        };
        let words: [&[u8]; 6] = [b"usr/", b"lib/", b"arm", b" = ", b"\n", b"hc1"];
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            match rng.below(4) {
                0 => (0..rng.below(300)).for_each(|_| v.push(rng.next() as u8)),
                1 => {
                    let b = rng.next() as u8;
                    v.extend(std::iter::repeat_n(b, rng.below(2000)));
                }
                2 => (0..rng.below(200)).for_each(|_| {
                    v.extend_from_slice(words[rng.below(words.len())]);
                }),
                _ if !v.is_empty() => {
                    let from = rng.below(v.len());
                    let n = rng.below(v.len() - from).min(5000);
                    v.extend_from_within(from..from + n);
                }
                _ => {}
            }
        }
        v.truncate(len);
        v
    }

    /// One gzip member of `data`, by flate2 (levels 0-9, sometimes with a name, comment and
    /// extra field) or by sirocco's encoder.
    fn member(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
        let level = rng.below(10) as u32;
        match rng.below(3) {
            0 => sirocco::compress(
                sirocco::Format::Gzip,
                sirocco::deflate::Level::new(level as u8),
                data,
            ),
            1 => {
                let mut e = flate2::GzBuilder::new()
                    .filename(&b"name.tar"[..])
                    .comment(&b"a comment"[..])
                    .extra(vec![1u8, 2, 3, 4])
                    .write(Vec::new(), flate2::Compression::new(level));
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    /// Damage `gz` one way or another.
    fn mutate(rng: &mut Rng, gz: &mut Vec<u8>) {
        let n = gz.len();
        match rng.below(7) {
            0 => (0..1 + rng.below(3)).for_each(|_| {
                let i = rng.below(n);
                gz[i] ^= 1 << rng.below(8);
            }),
            1 => {
                let i = rng.below(n);
                gz[i] = rng.next() as u8;
            }
            2 => gz.truncate(rng.below(n)),
            3 => (0..1 + rng.below(16)).for_each(|_| gz.push(rng.next() as u8)),
            4 => gz.extend(std::iter::repeat_n(0, 1 + rng.below(600))),
            5 => {
                let i = rng.below(n);
                let k = rng.below(n - i).min(1 + rng.below(40));
                gz.drain(i..i + k);
            }
            _ => {
                // The header's bytes (flags, method, the CRC and size at the end).
                let i = [2, 3, 8, 9, n.saturating_sub(1), n.saturating_sub(5)][rng.below(6)];
                if let Some(b) = gz.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
    }

    /// Read `gz` with `dec` through a `BufReader` of `cap` bytes: the output, or that it failed.
    fn drain(gz: &[u8], cap: usize, sirocco: bool) -> Option<Vec<u8>> {
        let raw = BufReader::with_capacity(cap, gz);
        let mut out = Vec::new();
        let ok = if sirocco {
            MultiGz::new(raw).read_to_end(&mut out)
        } else {
            flate2::bufread::MultiGzDecoder::new(raw).read_to_end(&mut out)
        };
        ok.ok().map(|_| out)
    }

    #[test]
    fn sirocco_agrees_with_flate2_on_random_and_damaged_gzip() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut good, mut bad) = (0, 0);
        for case in 0..400 {
            let members = 1 + rng.below(3);
            let mut plain = Vec::new();
            let mut gz = Vec::new();
            for _ in 0..members {
                let data = content(&mut rng);
                gz.extend(member(&mut rng, &data));
                plain.extend(data);
            }
            let damaged = case % 3 != 0;
            if damaged {
                mutate(&mut rng, &mut gz);
            }
            if case % 50 == 49 {
                // Noise behind a gzip magic.
                gz = [0x1f, 0x8b, 8, 0].to_vec();
                gz.extend((0..rng.below(3000)).map(|_| rng.next() as u8));
            }
            let cap = [1, 7, 512, 1 << 20][rng.below(4)];
            let z = drain(&gz, 1 << 16, false);
            let s = drain(&gz, cap, true);
            assert_eq!(
                z.as_ref().map(Vec::len),
                s.as_ref().map(Vec::len),
                "case {case}: zlib-rs and sirocco disagree (buffer {cap}, {} bytes of gzip)",
                gz.len()
            );
            assert!(z == s, "case {case}: different output");
            if !damaged && case % 50 != 49 {
                assert!(
                    z.as_deref() == Some(&plain[..]),
                    "case {case}: not the input"
                );
            }
            if z.is_some() {
                good += 1;
            } else {
                bad += 1;
            }
        }
        // Both kinds were exercised.
        assert!(good > 100 && bad > 100, "{good} decoded, {bad} refused");
    }

    #[test]
    fn gzip_size_hint_is_isize() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tar.gz");
        let tar = tar_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        assert_eq!(unpacked_size_hint(&p).unwrap(), Some(tar.len() as u64));
    }
}
