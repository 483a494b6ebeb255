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

use crate::sparse::{data_ranges, for_each_chunk};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, ensure};
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
    fn ranges_merge_and_round() {
        assert_eq!(
            block_ranges(&[(0, 4096), (4096, 8192), (12288, 12289)]),
            vec![(0, 1), (3, 3)]
        );
        assert_eq!(block_ranges(&[(100, 200), (300, 5000)]), vec![(0, 1)]);
    }
}
