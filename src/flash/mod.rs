//! `hc1img flash IMAGE DEVICE`: write an image (plain, `.zst` or `.xz`) to a card, a disk or
//! an image file in one safe step, then read back what was written and compare it.
//!
//! It follows `bmaptool copy` and bmap-tools' block map format 2.0 ([`crate::disk::bmap`]):
//! the map is the one named with `--bmap`, or found beside the image as bmaptool finds it
//! (`IMAGE.bmap`, then the same with each extension taken off: for `sd.img.zst`,
//! `sd.img.zst.bmap`, `sd.img.bmap`, `sd.bmap`); only its ranges are written, each hashed as
//! it is written and compared with the map's SHA-256 (a damaged image or another image's
//! map fails there). Without a map (`--no-bmap`, or none found) every byte of the image is
//! written, holes as zeros. Then the writes are flushed (`fsync(2)`), the target's cached
//! pages dropped (`posix_fadvise(2)` `POSIX_FADV_DONTNEED`) so that the reads reach the
//! medium, and every written range is read back and hashed: a range whose SHA-256 differs
//! from the map's (or, without a map, from the image's bytes, hashed per 64 MiB) fails the
//! flash with one line naming the bytes.
//!
//! Which devices may be written, and which are refused before anything is opened for
//! writing, is [`target`]'s (sysfs and procfs, as Linux documents them).
//!
//! Memory is bounded: one [`CHUNK`] buffer and one hash per range; the image is streamed
//! once (a compressed image without a map is decompressed once more before, to learn its
//! size, so that one too large for the device is refused before it is written).

pub mod target;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use indicatif::{BinaryBytes, ProgressBar};
use sha2::{Digest, Sha256};

use crate::disk::bmap::BlockMap;
use crate::progress::Reporter;
pub use target::Target;

/// Bytes read and written at once.
pub const CHUNK: usize = 4 << 20;

/// Without a map, the image is hashed in pieces of this size, so a mismatch names its bytes.
pub const PIECE: u64 = 64 << 20;

/// Which block map to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapChoice {
    /// The one beside the image, found as bmaptool finds it; none is fine.
    Beside,
    /// This file (`--bmap`).
    File(PathBuf),
    /// None: write every byte (`--no-bmap`).
    Whole,
}

/// How an image file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    /// Zstandard (RFC 8878), `.zst`.
    Zstd,
    /// The .xz file format, `.xz`.
    Xz,
}

/// The first bytes of a zstd frame (RFC 8878 §3.1.1, 0xFD2FB528 little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The first bytes of an .xz stream (xz-file-format §2.1.1.1).
const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];

/// An image to flash, with its block map.
#[derive(Debug)]
pub struct Image {
    pub path: PathBuf,
    format: Format,
    /// The file's own length (compressed, for `.zst`/`.xz`).
    file_len: u64,
    /// The block map and where it was read from.
    pub map: Option<(PathBuf, BlockMap)>,
}

/// The block map beside `image`, found as `bmaptool copy` finds it.
pub fn find_map(image: &Path) -> Option<PathBuf> {
    let mut stem = image.to_path_buf();
    loop {
        let mut candidate = stem.clone().into_os_string();
        candidate.push(".bmap");
        let candidate = PathBuf::from(candidate);
        if candidate.is_file() {
            return Some(candidate);
        }
        stem.extension()?;
        stem.set_extension("");
    }
}

impl Image {
    /// Open `path` and its map, checking that they belong together as far as can be told
    /// before writing: the compression its name says, and a plain image's length against
    /// the map's `ImageSize`.
    pub fn open(path: &Path, map: &MapChoice) -> Result<Image> {
        let shown = path.display();
        let meta = std::fs::metadata(path).with_context(|| format!("{shown}: cannot open"))?;
        ensure!(meta.is_file(), "{shown}: not an image file");
        let mut head = [0u8; 6];
        let mut f = File::open(path).with_context(|| format!("{shown}: cannot open"))?;
        let got = read_up_to(&mut f, &mut head).with_context(|| format!("{shown}: cannot read"))?;
        let head = &head[..got];
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("zst") => {
                ensure!(
                    head.starts_with(&ZSTD_MAGIC),
                    "{shown}: named .zst but is not zstd data"
                );
                Format::Zstd
            }
            Some("xz") => {
                ensure!(
                    head.starts_with(&XZ_MAGIC),
                    "{shown}: named .xz but is not xz data"
                );
                Format::Xz
            }
            _ if head.starts_with(&ZSTD_MAGIC) => {
                bail!("{shown}: is zstd data; name it .zst so it is decompressed")
            }
            _ if head.starts_with(&XZ_MAGIC) => {
                bail!("{shown}: is xz data; name it .xz so it is decompressed")
            }
            _ => Format::Plain,
        };
        let map_path = match map {
            MapChoice::Beside => find_map(path),
            MapChoice::File(p) => Some(p.clone()),
            MapChoice::Whole => None,
        };
        let map = match map_path {
            Some(p) => {
                let m = BlockMap::read(&p)?;
                if format == Format::Plain {
                    ensure!(
                        meta.len() == m.image_size,
                        "{shown} is {} bytes, {} maps an image of {}: not its map (give \
                         --bmap FILE, or --no-bmap to write every byte)",
                        meta.len(),
                        p.display(),
                        m.image_size
                    );
                }
                Some((p, m))
            }
            None => None,
        };
        Ok(Image {
            path: path.to_path_buf(),
            format,
            file_len: meta.len(),
            map,
        })
    }

    /// The image's bytes as a stream, decompressed.
    fn stream(&self, bar: Option<ProgressBar>) -> Result<Stream> {
        let f = File::open(&self.path)
            .with_context(|| format!("{}: cannot open", self.path.display()))?;
        let f = Tick { inner: f, bar };
        let what = || format!("{}: cannot start decompressing", self.path.display());
        Ok(match self.format {
            Format::Plain => Stream::Plain(f),
            Format::Zstd => Stream::Packed(Box::new(
                zstd::stream::read::Decoder::new(f).with_context(what)?,
            )),
            Format::Xz => Stream::Packed(Box::new(xz2::read::XzDecoder::new_multi_decoder(
                io::BufReader::new(f),
            ))),
        })
    }

    /// The image's length: the map's `ImageSize`, the plain file's length, or, for a
    /// compressed image without a map, what decompressing it gives.
    fn size(&self, rep: &Reporter) -> Result<u64> {
        if let Some((_, m)) = &self.map {
            return Ok(m.image_size);
        }
        if self.format == Format::Plain {
            return Ok(self.file_len);
        }
        rep.step(format!(
            "measuring {} (no block map says its size)",
            self.path.display()
        ));
        let bar = rep.bytes_bar(self.file_len, "measuring");
        let mut s = self.stream(Some(bar.clone()))?;
        let n = match &mut s {
            Stream::Packed(r) => io::copy(r, &mut io::sink()),
            Stream::Plain(f) => io::copy(f, &mut io::sink()),
        }
        .with_context(|| format!("{}: cannot decompress", self.path.display()))?;
        bar.finish_and_clear();
        Ok(n)
    }
}

/// Read into `buf` until it is full or the file ends; the count read.
fn read_up_to(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A reader that moves a progress bar by the bytes it reads.
struct Tick<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for Tick<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

/// The image's bytes, read in order.
enum Stream {
    Plain(Tick<File>),
    Packed(Box<dyn Read>),
}

impl Stream {
    /// Move `n` bytes on; the count moved (less at the end of the image).
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        match self {
            Stream::Plain(f) => {
                let here = f.inner.stream_position()?;
                let len = f.inner.metadata()?.len();
                let to = here.saturating_add(n).min(len.max(here));
                f.inner.seek(SeekFrom::Start(to))?;
                Ok(to - here)
            }
            Stream::Packed(r) => io::copy(&mut r.take(n), &mut io::sink()),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r: &mut dyn Read = match self {
            Stream::Plain(f) => &mut f.inner,
            Stream::Packed(r) => r,
        };
        read_up_to(r, buf)
    }
}

/// A stretch of the image that is written and checked as one: a map's range, or a
/// [`PIECE`] of an image without a map.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u64,
    end: u64,
    /// The SHA-256 its bytes must have: the map's, or the image's as it was written.
    want: Option<[u8; 32]>,
}

/// The pieces to write, in order: the map's ranges, or [`PIECE`]s of the whole image (made
/// as they are needed, so their number never follows from a length alone).
fn pieces(image: &Image, size: u64) -> Box<dyn Iterator<Item = Piece> + '_> {
    match &image.map {
        Some((_, m)) => Box::new(m.ranges.iter().map(move |r| {
            let (start, end) = m.bytes(r);
            Piece {
                start,
                end,
                want: r.sha256,
            }
        })),
        None => Box::new((0..size.div_ceil(PIECE)).map(move |i| Piece {
            start: i * PIECE,
            end: (i + 1).saturating_mul(PIECE).min(size),
            want: None,
        })),
    }
}

/// Check `device` and write `image` to it: [`Target::open`], then [`write`].
pub fn flash(
    image: &Path,
    device: &Path,
    map: &MapChoice,
    force: bool,
    rep: &Reporter,
) -> Result<()> {
    let image = Image::open(image, map)?;
    let mut not_these = vec![image.path.as_path()];
    if let Some((p, _)) = &image.map {
        not_these.push(p);
    }
    let target = Target::open(device, force, &not_these)?;
    write(&image, &target, rep)
}

/// Write `image` to `target` (only the mapped ranges, or every byte without a map), flush,
/// and read every written range back to compare its SHA-256.
pub fn write(image: &Image, target: &Target, rep: &Reporter) -> Result<()> {
    let t0 = Instant::now();
    let dev = target.path.display();
    let img = image.path.display();
    let size = image.size(rep)?;
    target.make_room(size, &image.path)?;
    let total: u64 = pieces(image, size).map(|p| p.end - p.start).sum();
    let onto = match &target.block {
        Some(b) => format!("{dev} ({}, {})", b.name, BinaryBytes(b.size)),
        None => dev.to_string(),
    };
    match &image.map {
        Some((p, _)) => rep.step(format!(
            "writing {img} to {onto}: {} of {} mapped by {}",
            BinaryBytes(total),
            BinaryBytes(size),
            p.display()
        )),
        None => rep.step(format!(
            "writing {img} to {onto}: every byte ({}), no block map",
            BinaryBytes(size)
        )),
    }

    // Write, hashing each piece as it goes out.
    let bar = rep.bytes_bar(total, "writing");
    let mut stream = image.stream(None)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut written: Vec<Piece> = Vec::new();
    for mut p in pieces(image, size) {
        let skipped = stream
            .skip(p.start - pos)
            .with_context(|| format!("{img}: cannot read (decompress) up to byte {}", p.start))?;
        ensure!(
            skipped == p.start - pos,
            "{img} ends at byte {}, before the data its map places at {}",
            pos + skipped,
            p.start
        );
        let mut h = Sha256::new();
        let mut at = p.start;
        while at < p.end {
            let n = usize::try_from(p.end - at).map_or(CHUNK, |n| n.min(CHUNK));
            let got = stream
                .read(&mut buf[..n])
                .with_context(|| format!("{img}: cannot read (decompress) at byte {at}"))?;
            ensure!(
                got == n,
                "{img} ends at byte {}, before its end at {} ({})",
                at + got as u64,
                p.end,
                if image.map.is_some() {
                    "cut short, or not the image its map describes"
                } else {
                    "cut short"
                }
            );
            h.update(&buf[..n]);
            target
                .file
                .write_all_at(&buf[..n], at)
                .with_context(|| format!("{dev}: cannot write at byte {at}"))?;
            at += n as u64;
            bar.inc(n as u64);
        }
        let got: [u8; 32] = h.finalize().into();
        match p.want {
            Some(want) if want != got => {
                bar.abandon();
                let map = image
                    .map
                    .as_ref()
                    .map(|(m, _)| m.display().to_string())
                    .unwrap_or_default();
                bail!(
                    "{img}: bytes {}..{} do not have the SHA-256 {map} gives them: the image is \
                     damaged or that is another image's map; {dev} is only partly written",
                    p.start,
                    p.end
                );
            }
            Some(_) => {}
            None => p.want = Some(got),
        }
        pos = p.end;
        written.push(p);
    }
    bar.finish_and_clear();

    // Flush, and forget the cached pages so the reads below come from the medium.
    rep.step(format!("flushing {dev}"));
    target
        .file
        .sync_all()
        .with_context(|| format!("{dev}: cannot flush the writes (fsync)"))?;
    if let Err(e) = drop_cached(&target.file) {
        rep.warn(format!(
            "{dev}: cannot drop its cached pages ({e}); the check below may read the cache"
        ));
    }

    // Read back.
    let bar = rep.bytes_bar(total, "verifying");
    for p in &written {
        let mut h = Sha256::new();
        let mut at = p.start;
        while at < p.end {
            let n = usize::try_from(p.end - at).map_or(CHUNK, |n| n.min(CHUNK));
            target
                .file
                .read_exact_at(&mut buf[..n], at)
                .with_context(|| format!("{dev}: cannot read back at byte {at}"))?;
            h.update(&buf[..n]);
            at += n as u64;
            bar.inc(n as u64);
        }
        let got: [u8; 32] = h.finalize().into();
        if p.want != Some(got) {
            bar.abandon();
            bail!(
                "{dev}: bytes {}..{} read back differ from what was written (SHA-256 {}, not \
                 {}): the card or its reader is failing, or is smaller than it claims; try \
                 another",
                p.start,
                p.end,
                hex::encode(got),
                p.want.map(hex::encode).unwrap_or_default()
            );
        }
    }
    bar.finish_and_clear();
    rep.step(format!(
        "{dev}: wrote and read back {} of {img} in {:.1} s; it matches",
        BinaryBytes(total),
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Drop `file`'s clean cached pages (`POSIX_FADV_DONTNEED` over the whole file).
#[allow(unsafe_code)] // posix_fadvise: not in std
fn drop_cached(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the descriptor stays open for the call; offset 0 and length 0 name the whole
    // file; the call reads and writes no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_found_as_bmaptool_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let zst = dir.path().join("sd.img.zst");
        assert_eq!(find_map(&zst), None);
        for (name, want) in [
            ("sd.bmap", "sd.bmap"),
            ("sd.img.bmap", "sd.img.bmap"),
            ("sd.img.zst.bmap", "sd.img.zst.bmap"),
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
            assert_eq!(find_map(&zst), Some(dir.path().join(want)));
        }
    }

    #[test]
    fn a_name_that_lies_about_compression_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("sd.img.zst");
        std::fs::write(&plain, b"not zstd").unwrap();
        let e = Image::open(&plain, &MapChoice::Whole).unwrap_err();
        assert!(
            format!("{e:#}").contains("named .zst but is not zstd data"),
            "{e:#}"
        );
        let xz = dir.path().join("sd.img");
        std::fs::write(&xz, XZ_MAGIC).unwrap();
        let e = Image::open(&xz, &MapChoice::Whole).unwrap_err();
        assert!(
            format!("{e:#}").contains("is xz data; name it .xz"),
            "{e:#}"
        );
        let e = Image::open(dir.path(), &MapChoice::Whole).unwrap_err();
        assert!(format!("{e:#}").contains("not an image file"), "{e:#}");
    }
}
