//! The kernel release of an ARM zImage, read from the image itself: what `uname -r` prints
//! once it runs, and so the name of its module directory (`/usr/lib/modules/<release>/`).
//!
//! A zImage (`arch/arm/boot/compressed/head.S`) is a small self-decompressing program: at
//! offset 0x24 the magic 0x016F2818, then its start and end addresses; after the decompressor
//! code sits the kernel proper (`piggy_data`), compressed with gzip, xz, lzma, lzo, lz4 or zstd
//! (`CONFIG_KERNEL_*`), followed by its uncompressed size. Nothing in the header says where
//! the payload starts or how it is compressed, so [`zimage_version`] scans for the
//! compressors' magic numbers ([`crate::initramfs::compress::SIGNATURES`]) and tries each hit
//! in order of offset, decompressing as a stream under a size cap, until the decompressed
//! kernel shows its banner (`linux_banner` in `init/version-timestamp.c`):
//! `Linux version <release> (<builder>) …`.
//!
//! Payloads read: gzip, xz, lzma, zstd. LZO, LZ4 (and bzip2, which ARM does not offer) are
//! recognised and named in the error.

use std::io::Read;

use anyhow::{Result, bail};

use crate::initramfs::compress::{Format, SIGNATURES, SliceDecoder};

/// `0x016F2818` at this offset marks an ARM zImage (little-endian).
const MAGIC_OFFSET: usize = 0x24;
const ZIMAGE_MAGIC: u32 = 0x016F_2818;

/// Most bytes decompressed in all, over every candidate payload tried (a kernel is 10–30 MiB
/// unpacked; the banner comes before the end).
const MAX_UNPACKED: u64 = 256 << 20;

/// Candidate payloads tried at most (false hits of a magic number inside the decompressor
/// code or the payload itself fail fast; this bounds a crafted image).
const MAX_TRIES: usize = 64;

const BANNER: &[u8] = b"Linux version ";
/// Longest release (`__NEW_UTS_LEN`).
const MAX_RELEASE: usize = 64;

/// The kernel release of the ARM zImage `data` (`6.1.0-50-armmp`, `6.6.63-1-ARCH`).
pub fn zimage_version(data: &[u8]) -> Result<String> {
    let magic = data
        .get(MAGIC_OFFSET..MAGIC_OFFSET + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes);
    if magic != Some(ZIMAGE_MAGIC) {
        bail!("not an ARM zImage (no magic 0x016F2818 at offset 0x24)");
    }
    let mut left = MAX_UNPACKED;
    let mut tried = Vec::new();
    let mut unread: Option<(Format, usize)> = None;
    for (at, format) in candidates(data) {
        match format {
            Format::Gzip | Format::Xz | Format::Lzma | Format::Zstd => {}
            _ => {
                unread.get_or_insert((format, at));
                continue;
            }
        }
        if tried.len() >= MAX_TRIES || left == 0 {
            break;
        }
        tried.push(format!("{} at byte {at}", format.name()));
        let Some(rest) = data.get(at..) else {
            continue;
        };
        let Ok(dec) = SliceDecoder::new(format, rest) else {
            continue;
        };
        if let Some(v) = find_banner(dec, &mut left) {
            return Ok(v);
        }
    }
    if let Some((f, at)) = unread {
        bail!(
            "no kernel banner in the zImage's gzip/xz/lzma/zstd payloads ({}); its payload \
             looks {}-compressed (magic at byte {at}), which hc1img does not read",
            if tried.is_empty() {
                "none found".to_string()
            } else {
                format!("tried {}", tried.join(", "))
            },
            f.name()
        );
    }
    bail!(
        "no `Linux version` banner found in the zImage ({}); hc1img reads zImages whose \
         payload is gzip, xz, lzma or zstd",
        if tried.is_empty() {
            "no compressed payload found".to_string()
        } else {
            format!("tried {}", tried.join(", "))
        }
    )
}

/// Offsets where a compressor's magic number starts, in order.
fn candidates(data: &[u8]) -> Vec<(usize, Format)> {
    let mut out = Vec::new();
    for at in 0..data.len() {
        let rest = data.get(at..).unwrap_or_default();
        for (f, magic) in SIGNATURES {
            if rest.starts_with(magic) {
                out.push((at, f));
            }
        }
    }
    out
}

/// What a banner candidate at the start of `b` (just after `Linux version `) is.
enum Release {
    Found(String),
    NeedMore,
    No,
}

fn release(b: &[u8]) -> Release {
    let Some(sp) = b.iter().take(MAX_RELEASE + 1).position(|&c| c == b' ') else {
        return if b.len() <= MAX_RELEASE {
            Release::NeedMore
        } else {
            Release::No
        };
    };
    let rel = b.get(..sp).unwrap_or_default();
    // Printable, no `%` (a format string such as "Linux version %s" is not the banner).
    if rel.is_empty() || !rel.iter().all(|&c| c.is_ascii_graphic() && c != b'%') {
        return Release::No;
    }
    match b.get(sp + 1) {
        None => Release::NeedMore,
        Some(b'(') => Release::Found(String::from_utf8_lossy(rel).into_owned()),
        Some(_) => Release::No,
    }
}

/// Decompress `r` until the kernel banner shows (its release) or the stream ends or fails
/// (`None`), drawing the bytes produced from `left`.
fn find_banner(mut r: impl Read, left: &mut u64) -> Option<String> {
    let mut window: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let want = usize::try_from(*left).map_or(chunk.len(), |l| l.min(chunk.len()));
        let n = match chunk.get_mut(..want).map(|c| r.read(c)) {
            Some(Ok(n)) => n,
            _ => 0,
        };
        let end = n == 0;
        *left = left.saturating_sub(n as u64);
        window.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut from = 0;
        let mut keep = window.len().saturating_sub(BANNER.len() - 1);
        while let Some(p) = find(window.get(from..).unwrap_or_default(), BANNER) {
            let at = from + p;
            match release(window.get(at + BANNER.len()..).unwrap_or_default()) {
                Release::Found(v) => return Some(v),
                Release::NeedMore if !end => {
                    keep = at;
                    break;
                }
                _ => from = at + 1,
            }
        }
        if end {
            return None;
        }
        window.drain(..keep.min(window.len()));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A fake zImage: a header with the magic, some "decompressor code", the payload.
    fn zimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 0x30];
        img[0x24..0x28].copy_from_slice(&ZIMAGE_MAGIC.to_le_bytes());
        img.extend_from_slice(b"decompressor code \x1f\x8b\x08 not gzip, \x5d\x00\x00 not lzma");
        img.extend_from_slice(payload);
        img.extend_from_slice(&[0x10, 0x20, 0x30, 0x00]);
        img
    }

    /// A "kernel": noise, a format string that is not the banner, the banner at the
    /// 64 KiB chunk boundary, more noise.
    fn kernel(release: &str) -> Vec<u8> {
        let mut k: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        k.extend_from_slice(b"Linux version %s (%s)\0Linux version  (x)\0");
        k.resize((4 << 16) - 20, b'k');
        k.extend_from_slice(
            format!("Linux version {release} (builder@host) (gcc 12) #1 SMP\n").as_bytes(),
        );
        k.extend((0..300_000u32).map(|i| (i * 13 % 253) as u8));
        k
    }

    #[test]
    fn every_read_payload_compression() {
        let k = kernel("6.6.63-1-ARCH");
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&k).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&k).unwrap();
            e.finish().unwrap()
        };
        let lzma = {
            let opts = xz2::stream::LzmaOptions::new_preset(6).unwrap();
            let s = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
            let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), s);
            e.write_all(&k).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&k[..], 19).unwrap();
        for (name, p) in [("gzip", gz), ("xz", xz), ("lzma", lzma), ("zstd", zst)] {
            assert_eq!(
                zimage_version(&zimage(&p)).unwrap(),
                "6.6.63-1-ARCH",
                "{name}"
            );
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = zimage_version(b"not a kernel at all, no magic here..........")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an ARM zImage"), "{e}");
        let e = zimage_version(&[0u8; 10]).unwrap_err().to_string();
        assert!(e.contains("not an ARM zImage"), "{e}");
        // An LZ4 payload is named.
        let e = zimage_version(&zimage(b"\x02\x21\x4c\x18 lz4 data"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lz4-compressed"), "{e}");
        // A payload without a banner.
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b"no banner in here, Linux version but not the banner")
                .unwrap();
            e.finish().unwrap()
        };
        let e = zimage_version(&zimage(&gz)).unwrap_err().to_string();
        assert!(
            e.contains("no `Linux version` banner") && e.contains("gzip at"),
            "{e}"
        );
        // Truncated before the banner: an error, not a panic.
        let k = kernel("6.1.0-50-armmp");
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&k).unwrap();
            e.finish().unwrap()
        };
        let img = zimage(&xz);
        assert!(zimage_version(&img[..img.len() / 20]).is_err());
    }
}
