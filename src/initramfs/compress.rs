//! The compressions of an initramfs segment (and of a zImage payload, read by `kernel_image.rs`):
//! recognising them by magic number, decoding exactly one member/frame/stream out of a byte
//! slice (reporting how many bytes it took, as the kernel's decompressors report `*pos`), a cap
//! on what a decoder may produce, and the encoders a rewritten segment uses.
//!
//! The magic numbers are the kernel's (`lib/decompress.c`, `compressed_formats[]`), so that a
//! format the kernel could boot but hc1img cannot read is named in the error rather than
//! reported as garbage. Formats: gzip (RFC 1952), zstd (RFC 8878), xz (the .xz file format,
//! tukaani.org/xz/xz-file-format.txt), LZMA-alone (`.lzma`, read for zImages only), and, named
//! but not read, bzip2, LZO (lzop) and LZ4 (legacy frame). `rootfs::input` sniffs
//! the tarball's compression itself: its list is a tarball's (it knows `ustar`, not cpio nor
//! the kernel's other formats), so this one does not reuse it.

#![warn(clippy::cast_possible_truncation)]

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};

/// A compressed format the kernel knows, by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Xz,
    Zstd,
    Lzma,
    Bzip2,
    Lzo,
    Lz4,
}

impl Format {
    /// The name the kernel's messages use.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Lzma => "lzma",
            Format::Bzip2 => "bzip2",
            Format::Lzo => "lzo",
            Format::Lz4 => "lz4",
        }
    }
}

/// Magic numbers, longest form: the kernel tells formats apart by their first two bytes
/// (`compressed_formats[]`); these longer prefixes are what each format always starts with,
/// which the zImage reader (`kernel_image.rs`) needs when it scans a zImage for its payload. gzip: ID1 ID2
/// CM=deflate (RFC 1952 2.3.1); xz: the Stream Header magic; zstd: the frame magic
/// 0xFD2FB528 (RFC 8878 3.1.1); LZMA-alone: the properties byte lc=3 lp=0 pb=2 (0x5d) every
/// `lzma`/`xz --format=lzma` preset writes, then a little-endian dictionary size whose two
/// low bytes are zero (every preset's is a multiple of 64 KiB); bzip2: `BZh`; lzop:
/// `\x89LZO\0`; LZ4 legacy: 0x184C2102 little-endian.
pub const SIGNATURES: [(Format, &[u8]); 7] = [
    (Format::Gzip, &[0x1f, 0x8b, 0x08]),
    (Format::Xz, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]),
    (Format::Zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
    (Format::Lzma, &[0x5d, 0x00, 0x00]),
    (Format::Bzip2, b"BZh"),
    (Format::Lzo, &[0x89, b'L', b'Z', b'O', 0x00]),
    (Format::Lz4, &[0x02, 0x21, 0x4c, 0x18]),
];

/// The format whose magic number `data` starts with.
pub fn sniff(data: &[u8]) -> Option<Format> {
    SIGNATURES
        .iter()
        .find(|(_, magic)| data.starts_with(magic))
        .map(|(f, _)| *f)
}

/// Largest LZMA dictionary (and so decoder memory) accepted: xz's `-9` uses 64 MiB. A header
/// asking for more is refused by liblzma before it allocates.
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// Decodes one gzip member, zstd frame, xz stream or LZMA-alone stream from the start of a
/// byte slice, and stops at its end (what follows is not read). [`SliceDecoder::consumed`]
/// then tells how many bytes of the slice it was.
pub struct SliceDecoder<'a> {
    inner: Inner<'a>,
    len: usize,
}

enum Inner<'a> {
    Gzip(Box<flate2::bufread::GzDecoder<&'a [u8]>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, &'a [u8]>>),
    Lzma(Box<LzmaSlice<'a>>),
}

impl<'a> SliceDecoder<'a> {
    /// A decoder for `format` over `input` (which starts with the format's magic number).
    /// Fails for the formats that are only named, not read.
    pub fn new(format: Format, input: &'a [u8]) -> Result<SliceDecoder<'a>> {
        let inner = match format {
            Format::Gzip => Inner::Gzip(Box::new(flate2::bufread::GzDecoder::new(input))),
            Format::Zstd => Inner::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(input)
                    .context("cannot start a zstd decoder")?
                    .single_frame(),
            )),
            Format::Xz => {
                // One stream (no LZMA_CONCATENATED): the kernel's unxz stops there too.
                let s = xz2::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                    .context("cannot start an xz decoder")?;
                Inner::Lzma(Box::new(LzmaSlice::new(s, input)))
            }
            Format::Lzma => {
                let s = xz2::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                    .context("cannot start an lzma decoder")?;
                Inner::Lzma(Box::new(LzmaSlice::new(s, input)))
            }
            Format::Bzip2 | Format::Lzo | Format::Lz4 => {
                bail!("{} data is not read by hc1img", format.name())
            }
        };
        Ok(SliceDecoder {
            inner,
            len: input.len(),
        })
    }

    /// Bytes of the input the member/frame/stream took, once [`Read::read`] returned 0.
    pub fn consumed(self) -> usize {
        let rest = match self.inner {
            Inner::Gzip(d) => d.into_inner().len(),
            Inner::Zstd(d) => d.finish().len(),
            Inner::Lzma(d) => d.input.len().saturating_sub(d.pos),
        };
        self.len.saturating_sub(rest)
    }
}

impl Read for SliceDecoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Gzip(d) => d.read(buf),
            Inner::Zstd(d) => d.read(buf),
            Inner::Lzma(d) => d.read(buf),
        }
    }
}

/// liblzma over a slice, driven by hand: xz2's `bufread::XzDecoder` reports an error when
/// it is read again after the end of a stream that has more bytes after it.
struct LzmaSlice<'a> {
    stream: xz2::stream::Stream,
    input: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> LzmaSlice<'a> {
    fn new(stream: xz2::stream::Stream, input: &'a [u8]) -> LzmaSlice<'a> {
        LzmaSlice {
            stream,
            input,
            pos: 0,
            done: false,
        }
    }
}

/// `a - b` for liblzma's byte counters (which only grow), as a `usize` that indexes a buffer
/// of at most `max` bytes.
fn progress(a: u64, b: u64, max: usize) -> usize {
    usize::try_from(a.saturating_sub(b)).map_or(max, |n| n.min(max))
}

impl Read for LzmaSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        loop {
            let rest = self.input.get(self.pos..).unwrap_or_default();
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .process(rest, buf, xz2::stream::Action::Run)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = progress(self.stream.total_in(), in0, rest.len());
            let produced = progress(self.stream.total_out(), out0, buf.len());
            self.pos += consumed;
            if status == xz2::stream::Status::StreamEnd {
                self.done = true;
                return Ok(produced);
            }
            if produced > 0 {
                return Ok(produced);
            }
            if consumed == 0 {
                return Err(if self.pos >= self.input.len() {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "compressed data truncated")
                } else {
                    io::Error::new(io::ErrorKind::InvalidData, "corrupt compressed data")
                });
            }
        }
    }
}

/// A reader that fails once `inner` produced more than the bytes `left` in a shared budget:
/// decompression bombs stop there, whatever the headers claim.
pub struct Capped<'b, R> {
    pub inner: R,
    left: &'b mut u64,
    cap: u64,
}

impl<'b, R: Read> Capped<'b, R> {
    /// `inner`, drawing from `left` (of a total budget `cap`, named in the error).
    pub fn new(inner: R, left: &'b mut u64, cap: u64) -> Capped<'b, R> {
        Capped { inner, left, cap }
    }
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(l) => {
                *self.left = l;
                Ok(n)
            }
            None => Err(io::Error::other(format!(
                "unpacks to more than {} MiB (a decompression bomb, or not an initramfs)",
                self.cap >> 20
            ))),
        }
    }
}

/// The integrity check of an xz stream (Stream Flags, xz-file-format 2.1.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XzCheck {
    None,
    Crc32,
    Crc64,
    Sha256,
}

impl XzCheck {
    /// The check of the xz stream `data` starts with (byte 7 of its Stream Header).
    pub fn of_stream(data: &[u8]) -> Result<XzCheck> {
        match data.get(7).map(|b| b & 0x0f) {
            Some(0x00) => Ok(XzCheck::None),
            Some(0x01) => Ok(XzCheck::Crc32),
            Some(0x04) => Ok(XzCheck::Crc64),
            Some(0x0a) => Ok(XzCheck::Sha256),
            Some(c) => bail!("xz stream with an unknown integrity check (ID {c})"),
            None => bail!("xz stream truncated in its header"),
        }
    }

    fn lzma(self) -> xz2::stream::Check {
        match self {
            XzCheck::None => xz2::stream::Check::None,
            XzCheck::Crc32 => xz2::stream::Check::Crc32,
            XzCheck::Crc64 => xz2::stream::Check::Crc64,
            XzCheck::Sha256 => xz2::stream::Check::Sha256,
        }
    }
}

/// The compression of one initramfs segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain newc archive.
    None,
    Gzip,
    Zstd,
    /// An xz stream, with the integrity check the original used: the kernel's XZ Embedded
    /// decoder reads only streams with no check or CRC32 (Documentation/staging/xz.rst,
    /// "Notes on compression options"; `lib/xz/xz_dec_stream.c` refuses others), so a
    /// rewritten stream keeps the check the kernel already accepted.
    Xz(XzCheck),
}

impl Compression {
    /// A short tag for fingerprints and messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz(XzCheck::None) => "xz (no check)",
            Compression::Xz(XzCheck::Crc32) => "xz (CRC32)",
            Compression::Xz(XzCheck::Crc64) => "xz (CRC64)",
            Compression::Xz(XzCheck::Sha256) => "xz (SHA-256)",
        }
    }
}

/// gzip level: the highest, fixed so a rewrite is reproducible.
pub const GZIP_LEVEL: u32 = 9;
/// zstd level (with a content checksum): 3, zstd's own default; level 19 took tens of seconds
/// on a Debian initramfs for a few percent of its size, on every build that rewrites one.
pub const ZSTD_LEVEL: i32 = 3;
/// xz preset.
pub const XZ_PRESET: u32 = 6;

/// `data` compressed as `c`, deterministically: gzip without a file name and with mtime 0
/// (RFC 1952 2.3.1), zstd single-threaded with a checksum, xz with the given check.
pub fn encode(c: Compression, data: &[u8]) -> Result<Vec<u8>> {
    let out = match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            e.write_all(data).context("gzip")?;
            e.finish().context("gzip")?
        }
        Compression::Zstd => {
            let mut e =
                zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).context("zstd")?;
            e.include_checksum(true).context("zstd")?;
            e.write_all(data).context("zstd")?;
            e.finish().context("zstd")?
        }
        Compression::Xz(check) => {
            let s = xz2::stream::Stream::new_easy_encoder(XZ_PRESET, check.lzma()).context("xz")?;
            let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), s);
            e.write_all(data).context("xz")?;
            e.finish().context("xz")?
        }
    };
    Ok(out)
}
