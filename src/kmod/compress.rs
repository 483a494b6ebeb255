//! Compressed module files (`.ko.xz`, `.ko.zst`, `.ko.gz`), recognised as kmod 30's
//! `libkmod/libkmod-file.c` (`kmod_file_open`) recognises them: by their first bytes, not
//! their name: zstd frame magic `28 B5 2F FD` (RFC 8878), xz stream magic
//! `FD 37 7A 58 5A 00` (the .xz file format, 2.1.1.1) and gzip `1F 8B` (RFC 1952). Anything
//! else is the module itself.
//!
//! The decompressed size is capped at [`MAX_MODULE_BYTES`]: a decompression bomb stops with an
//! error after that many bytes instead of filling memory. Concatenated xz streams, zstd frames
//! and gzip members are all read, as kmod's decoders read them.

use std::borrow::Cow;
use std::io::Read;

use anyhow::{Context, Result, ensure};

/// The largest decompressed module accepted (the largest real modules are a few MiB).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];

/// The compression of a module file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Xz,
    Gzip,
}

impl Compression {
    pub fn detect(data: &[u8]) -> Compression {
        if data.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else if data.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else if data.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// The module bytes of `data`: itself, or decompressed (at most [`MAX_MODULE_BYTES`]).
pub fn decompress(data: &[u8]) -> Result<Cow<'_, [u8]>> {
    decompress_capped(data, MAX_MODULE_BYTES)
}

/// [`decompress`] with a given cap.
pub fn decompress_capped(data: &[u8], cap: u64) -> Result<Cow<'_, [u8]>> {
    let kind = Compression::detect(data);
    let reader: Box<dyn Read + '_> = match kind {
        Compression::None => return Ok(Cow::Borrowed(data)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(data).context("starting the zstd decoder")?,
        ),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(data)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
    };
    let mut out = Vec::new();
    reader
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing a {kind:?} module"))?;
    ensure!(
        u64::try_from(out.len()).unwrap_or(u64::MAX) <= cap,
        "{kind:?} module decompresses to more than {cap} bytes"
    );
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    #[test]
    fn all_three_and_plain() {
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        assert!(matches!(decompress(&plain).unwrap(), Cow::Borrowed(_)));
        for (packed, kind) in [
            (xz(&plain), Compression::Xz),
            (gz(&plain), Compression::Gzip),
            (zst(&plain), Compression::Zstd),
        ] {
            assert_eq!(Compression::detect(&packed), kind);
            assert_eq!(decompress(&packed).unwrap().as_ref(), plain.as_slice());
        }
    }

    #[test]
    fn bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 4 << 20];
        for packed in [xz(&zeros), gz(&zeros), zst(&zeros)] {
            assert!(packed.len() < 1 << 20);
            let e = decompress_capped(&packed, 1 << 20).unwrap_err();
            assert!(
                format!("{e:#}").contains("more than 1048576 bytes"),
                "{e:#}"
            );
            assert_eq!(decompress_capped(&packed, 4 << 20).unwrap().len(), 4 << 20);
        }
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let data = vec![7u8; 10_000];
        for packed in [xz(&data), gz(&data), zst(&data)] {
            for cut in [packed.len() / 2, packed.len() - 1] {
                assert!(decompress(&packed[..cut]).is_err());
            }
            let mut bad = packed.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            // A flipped byte is detected or yields some bytes; never a panic.
            let _ = decompress(&bad);
        }
    }
}
