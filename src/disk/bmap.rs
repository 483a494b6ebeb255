//! Block map (`.bmap`) and zstd/xz compression of finished images, for flashing with
//! `bmaptool copy --bmap img.bmap img.zst /dev/sdX`: only the mapped blocks are written.
//! Compression follows the zstd frame format (RFC 8878) and the .xz file format 1.x
//! (tukaani.org/xz/xz-file-format.txt), through libzstd and liblzma.
//!
//! The map follows bmap-tools' XML format 2.0 (bmaptool `BmapCreate`/`BmapCopy`):
//! `ImageSize`, `BlockSize` (4096), `BlocksCount`, `MappedBlocksCount`, `ChecksumType`
//! (`sha256`), `BmapFileChecksum` (the SHA-256 of the whole file computed with this field's
//! value as 64 ASCII `0`), and a `BlockMap` of `Range` elements (`first-last` or a single
//! block, inclusive) each with the SHA-256 of its bytes (`chksum`). The mapped ranges are
//! the file's data extents as `lseek(SEEK_DATA / SEEK_HOLE)` reports them, which is why the
//! writers keep images sparse (see [`crate::sparse`]).
//!
//! [`BlockMap::read`] reads a map back (ours or `bmaptool create`'s) for `hc1img flash`,
//! with the checks `BmapCopy` makes before it writes a byte.

use crate::sparse::{data_ranges, for_each_chunk};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

/// Block size of the map.
pub const BLOCK: u64 = 4096;

/// Inclusive block ranges covering the data extents, merged where they touch.
fn block_ranges(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in extents {
        let (first, last) = (s / BLOCK, (e - 1) / BLOCK);
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Write the bmap of `image` to `out`.
/// `progress` gets the number of mapped bytes hashed so far.
pub fn write_bmap(image: &Path, out: &Path, progress: &dyn Fn(u64)) -> Result<()> {
    let file = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot stat {}", image.display()))?
        .len();
    let ranges = block_ranges(&data_ranges(&file, size)?);
    let blocks = size.div_ceil(BLOCK);
    let mapped: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();

    let mut map = String::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut hashed = 0u64;
    for &(first, last) in &ranges {
        let mut h = Sha256::new();
        let (mut pos, end) = (first * BLOCK, ((last + 1) * BLOCK).min(size));
        while pos < end {
            let n = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("cannot read {} at {pos}", image.display()))?;
            h.update(&buf[..n]);
            pos += n as u64;
            hashed += n as u64;
            progress(hashed);
        }
        let sum = hex::encode(h.finalize());
        let range = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        let _ = writeln!(map, "        <Range chksum=\"{sum}\"> {range} </Range>");
    }

    let zeros = "0".repeat(64);
    let render = |checksum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Block map of an hc1img image: the blocks that hold data. Flash it with\n     \
             bmaptool copy and this file as the bmap. -->\n\
             <bmap version=\"2.0\">\n    \
             <!-- Image size in bytes -->\n    \
             <ImageSize> {size} </ImageSize>\n    \
             <!-- Size of a block in bytes -->\n    \
             <BlockSize> {BLOCK} </BlockSize>\n    \
             <!-- Count of blocks in the image file -->\n    \
             <BlocksCount> {blocks} </BlocksCount>\n    \
             <!-- Count of mapped blocks -->\n    \
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <!-- SHA-256 of this file with this value replaced by 64 zeros -->\n    \
             <BmapFileChecksum> {checksum} </BmapFileChecksum>\n    \
             <BlockMap>\n{map}    </BlockMap>\n\
             </bmap>\n"
        )
    };
    let checksum = hex::encode(Sha256::digest(render(&zeros).as_bytes()));
    std::fs::write(out, render(&checksum))
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// A block map read back: what `hc1img flash` writes and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    /// `ImageSize`: the image's length in bytes.
    pub image_size: u64,
    /// `BlockSize`: bytes per block.
    pub block_size: u64,
    /// `BlocksCount`: `ImageSize` in blocks, rounded up.
    pub blocks_count: u64,
    /// `MappedBlocksCount`: the blocks the ranges cover.
    pub mapped_blocks_count: u64,
    /// The `BlockMap`'s `Range` elements, ascending and disjoint.
    pub ranges: Vec<MappedRange>,
}

/// One `Range`: blocks `first..=last`, and the SHA-256 of their bytes when the map has
/// checksums (`chksum`; the image's last block counts up to `ImageSize` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRange {
    pub first: u64,
    pub last: u64,
    pub sha256: Option<[u8; 32]>,
}

/// The largest block map read (a 2 TiB image mapped as 4 KiB islands would not reach it).
pub const MAX_BMAP_BYTES: u64 = 64 << 20;

impl BlockMap {
    /// Read and check the block map at `path` (format 2.0, or 1.4, its earlier name).
    pub fn read(path: &Path) -> Result<BlockMap> {
        use std::io::Read as _;
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut text = String::new();
        file.take(MAX_BMAP_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| {
                format!("{}: cannot read (a block map is XML text)", path.display())
            })?;
        ensure!(
            text.len() as u64 <= MAX_BMAP_BYTES,
            "{}: larger than {} MiB: not a block map",
            path.display(),
            MAX_BMAP_BYTES >> 20
        );
        Self::parse(&text).with_context(|| format!("{}: not a usable block map", path.display()))
    }

    /// Parse a block map's text, checking it as bmaptool's `BmapCopy` does: the version, the
    /// file's own checksum (`BmapFileChecksum`), `BlocksCount` against `ImageSize`, and the
    /// ranges (inside the image, ascending, adding up to `MappedBlocksCount`).
    pub fn parse(text: &str) -> Result<BlockMap> {
        let root = super::xml::parse(text).map_err(anyhow::Error::msg)?;
        ensure!(
            root.name == "bmap",
            "the root element is <{}>, not <bmap>",
            root.name
        );
        let version = root.attr("version").unwrap_or("");
        ensure!(
            matches!(version.split('.').next(), Some("2")) || version == "1.4",
            "format version {version:?}: only 2.x (bmaptool 3.x, hc1img) is read"
        );
        let number = |tag: &str| -> Result<u64> {
            let el = root
                .child(tag)
                .with_context(|| format!("<{tag}> is missing"))?;
            el.text.trim().parse::<u64>().with_context(|| {
                format!(
                    "line {}: <{tag}> {:?} is not a number",
                    el.line,
                    el.text.trim()
                )
            })
        };
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        let blocks_count = number("BlocksCount")?;
        let mapped_blocks_count = number("MappedBlocksCount")?;
        ensure!(block_size > 0, "<BlockSize> is 0");
        ensure!(
            image_size.div_ceil(block_size) == blocks_count,
            "<BlocksCount> {blocks_count} is not <ImageSize> {image_size} in blocks of {block_size}"
        );
        let checksummed = match root.child("ChecksumType").map(|e| e.text.trim()) {
            None => false,
            Some("sha256") => true,
            Some(other) => bail!("<ChecksumType> {other}: only sha256 is read"),
        };
        if let Some(el) = root.child("BmapFileChecksum") {
            let want = el.text.trim();
            ensure!(
                checksummed && want.len() == 64,
                "line {}: <BmapFileChecksum> is not a SHA-256",
                el.line
            );
            // bmaptool's rule: the SHA-256 of the file with this value replaced by zeros.
            let got = hex::encode(Sha256::digest(
                text.replace(want, &"0".repeat(64)).as_bytes(),
            ));
            ensure!(
                got == want.to_ascii_lowercase(),
                "its checksum (<BmapFileChecksum>) does not match its contents: it was changed \
                 or cut short"
            );
        }
        let map = root.child("BlockMap").context("<BlockMap> is missing")?;
        let mut ranges: Vec<MappedRange> = Vec::new();
        let mut mapped = 0u64;
        for el in map.children.iter().filter(|c| c.name == "Range") {
            let at = el.line;
            let text = el.text.trim();
            let parse = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .with_context(|| format!("line {at}: <Range> {text:?} is not FIRST-LAST"))
            };
            let (first, last) = match text.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => (parse(text)?, parse(text)?),
            };
            ensure!(
                first <= last && last < blocks_count,
                "line {at}: <Range> {text} is outside the image's {blocks_count} blocks"
            );
            if let Some(prev) = ranges.last() {
                ensure!(
                    first > prev.last,
                    "line {at}: <Range> {text} overlaps or precedes the one before it"
                );
            }
            let sha256 = match el.attr("chksum") {
                Some(sum) => {
                    let mut b = [0u8; 32];
                    hex::decode_to_slice(sum, &mut b).map_err(|_| {
                        anyhow::anyhow!("line {at}: chksum {sum:?} is not a SHA-256")
                    })?;
                    Some(b)
                }
                None => None,
            };
            mapped += last - first + 1;
            ranges.push(MappedRange {
                first,
                last,
                sha256,
            });
        }
        ensure!(
            mapped == mapped_blocks_count,
            "the ranges cover {mapped} blocks, <MappedBlocksCount> says {mapped_blocks_count}"
        );
        Ok(BlockMap {
            image_size,
            block_size,
            blocks_count,
            mapped_blocks_count,
            ranges,
        })
    }

    /// The bytes `[start, end)` of the image that `r` covers.
    pub fn bytes(&self, r: &MappedRange) -> (u64, u64) {
        // Checked by `parse`: last < blocks_count, so (last + 1) * block_size ≤ image_size
        // rounded up to a block, which did not overflow as `image_size.div_ceil` matched.
        let start = r.first.saturating_mul(self.block_size);
        let end = (r.last.saturating_add(1))
            .saturating_mul(self.block_size)
            .min(self.image_size);
        (start, end)
    }

    /// The bytes the map covers.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (s, e) = self.bytes(r);
                e - s
            })
            .sum()
    }
}

/// Worker threads of `--compress`: every core the process may use, at most
/// [`MAX_COMPRESS_THREADS`] (each zstd worker holds about 4× the window, each xz thread about
/// 3× the block plus its encoder, ~100 MiB at preset 6). The output does not depend on it.
pub fn compress_threads() -> u32 {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(n).map_or(MAX_COMPRESS_THREADS, |n| n.min(MAX_COMPRESS_THREADS))
}

/// The most threads [`compress_threads`] uses.
pub const MAX_COMPRESS_THREADS: u32 = 4;

/// Uncompressed size of each .xz block (3× preset 6's 8 MiB dictionary, liblzma's own
/// default), fixed so that the block boundaries, and so the bytes, never depend on the
/// thread count or on the liblzma version's default.
pub const XZ_BLOCK_SIZE: u64 = 24 << 20;

/// Compress `image` to `out` with zstd at `level` (1..=22) on [`compress_threads`] workers.
/// `progress` gets the number of image bytes consumed so far.
///
/// Deterministic: libzstd's streaming multi-threaded mode (`NbWorkers` ≥ 1) cuts the input
/// into jobs whose size follows from the level alone, so the bytes are the same for any
/// number of workers (they differ from `NbWorkers = 0`, which is never used); no long-distance
/// matching, no dictionary, a content checksum and nothing that depends on the time or the
/// machine; the same zstd library version gives the same bytes.
pub fn compress_zstd(image: &Path, out: &Path, level: i32, progress: &dyn Fn(u64)) -> Result<()> {
    compress_zstd_with(image, out, level, compress_threads(), progress)
}

/// [`compress_zstd`] with `workers` (≥ 1) threads.
pub fn compress_zstd_with(
    image: &Path,
    out: &Path,
    level: i32,
    workers: u32,
    progress: &dyn Fn(u64),
) -> Result<()> {
    ensure!(
        (1..=22).contains(&level),
        "zstd level {level} is out of range 1..=22"
    );
    let dst = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut enc = zstd::stream::Encoder::new(BufWriter::new(dst), level)
        .context("cannot start the zstd encoder")?;
    enc.include_checksum(true)
        .context("cannot enable zstd checksums")?;
    enc.multithread(workers.max(1))
        .context("cannot start the zstd worker threads")?;
    feed(image, out, &mut enc, progress)?;
    enc.finish()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("cannot finish {}", out.display()))?;
    Ok(())
}

/// Compress `image` to `out` as `.xz` with liblzma's `preset` (0..=9) on
/// [`compress_threads`] threads, CRC64 check.
/// `progress` gets the number of image bytes consumed so far.
///
/// Deterministic: liblzma's multi-threaded encoder compresses [`XZ_BLOCK_SIZE`] blocks
/// independently, so the bytes are the same for any number of threads and runs; the same
/// liblzma version gives the same bytes.
pub fn compress_xz(image: &Path, out: &Path, preset: u32, progress: &dyn Fn(u64)) -> Result<()> {
    compress_xz_with(
        image,
        out,
        preset,
        compress_threads(),
        XZ_BLOCK_SIZE,
        progress,
    )
}

/// [`compress_xz`] with `threads` (≥ 1) threads and blocks of `block_size` bytes.
pub fn compress_xz_with(
    image: &Path,
    out: &Path,
    preset: u32,
    threads: u32,
    block_size: u64,
    progress: &dyn Fn(u64),
) -> Result<()> {
    ensure!(preset <= 9, "xz preset {preset} is out of range 0..=9");
    let dst = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let stream = xz2::stream::MtStreamBuilder::new()
        .threads(threads.max(1))
        .block_size(block_size)
        .preset(preset)
        .check(xz2::stream::Check::Crc64)
        .encoder()
        .context("cannot start the xz encoder")?;
    let mut enc = xz2::write::XzEncoder::new_stream(BufWriter::new(dst), stream);
    feed(image, out, &mut enc, progress)?;
    enc.finish()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("cannot finish {}", out.display()))?;
    Ok(())
}

/// Stream the bytes of `image` into `w` (holes as zeros, without reading them).
fn feed(image: &Path, out: &Path, w: &mut dyn Write, progress: &dyn Fn(u64)) -> Result<()> {
    let src = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let size = src
        .metadata()
        .with_context(|| format!("cannot stat {}", image.display()))?
        .len();
    let mut pos = 0u64;
    for_each_chunk(&src, size, &mut |data| {
        w.write_all(data)
            .with_context(|| format!("cannot write {}", out.display()))?;
        pos += data.len() as u64;
        progress(pos);
        Ok(())
    })
    .with_context(|| format!("cannot read {}", image.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_map_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        let f = crate::sparse::create_sparse(&img, 10 * BLOCK + 100).unwrap();
        f.write_all_at(&[7u8; 5000], BLOCK).unwrap();
        f.write_all_at(&[9u8; 50], 10 * BLOCK + 10).unwrap();
        drop(f);
        let map = dir.path().join("x.img.bmap");
        write_bmap(&img, &map, &|_| {}).unwrap();
        let m = BlockMap::read(&map).unwrap();
        assert_eq!(
            (
                m.image_size,
                m.block_size,
                m.blocks_count,
                m.mapped_blocks_count
            ),
            (10 * BLOCK + 100, BLOCK, 11, 3)
        );
        assert_eq!(m.ranges.len(), 2);
        assert_eq!((m.ranges[0].first, m.ranges[0].last), (1, 2));
        assert_eq!(m.bytes(&m.ranges[1]), (10 * BLOCK, 10 * BLOCK + 100));
        let mut want = vec![7u8; 5000];
        want.resize(usize::try_from(2 * BLOCK).unwrap(), 0);
        assert_eq!(m.ranges[0].sha256, Some(Sha256::digest(&want).into()));
        assert_eq!(m.mapped_bytes(), 2 * BLOCK + 100);
    }

    #[test]
    fn a_changed_or_inconsistent_map_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        let f = crate::sparse::create_sparse(&img, 4 * BLOCK).unwrap();
        f.write_all_at(&[7u8; 100], 0).unwrap();
        drop(f);
        let map = dir.path().join("x.img.bmap");
        write_bmap(&img, &map, &|_| {}).unwrap();
        let good = std::fs::read_to_string(&map).unwrap();
        let sum = |t: &str| {
            let i = t.find("<BmapFileChecksum> ").unwrap() + 19;
            t[i..i + 64].to_string()
        };
        // Re-sign an edited map as bmaptool would check it.
        let resign = |t: String| {
            let old = sum(&t);
            let zeroed = t.replace(&old, &"0".repeat(64));
            let new = hex::encode(Sha256::digest(zeroed.as_bytes()));
            zeroed.replace(&"0".repeat(64), &new)
        };
        for (text, want) in [
            (
                good.replace("</Range>", "</Range>\n"),
                "does not match its contents",
            ),
            (
                resign(good.replace("<BlocksCount> 4", "<BlocksCount> 5")),
                "<BlocksCount> 5 is not",
            ),
            (
                resign(good.replace("> 0 </Range>", "> 7 </Range>")),
                "outside the image's 4 blocks",
            ),
            (
                resign(good.replace("<MappedBlocksCount> 1", "<MappedBlocksCount> 2")),
                "cover 1 blocks",
            ),
            (
                resign(good.replace("sha256 </Ch", "md5 </Ch")),
                "<ChecksumType> md5",
            ),
            (
                resign(good.replace("version=\"2.0\"", "version=\"1.3\"")),
                "only 2.x",
            ),
            (
                good.replace("<BlockMap>", "<BlockMap"),
                "line 16: unterminated start-tag",
            ),
        ] {
            let e = format!("{:#}", BlockMap::parse(&text).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(BlockMap::parse(&good).is_ok());
    }

    #[test]
    fn ranges_merge_and_round() {
        assert_eq!(
            block_ranges(&[(0, 4096), (4096, 8192), (12288, 12289)]),
            vec![(0, 1), (3, 3)]
        );
        assert_eq!(block_ranges(&[(100, 200), (300, 5000)]), vec![(0, 1)]);
    }
}
