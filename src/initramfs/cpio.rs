//! The newc ("new ASCII") cpio format, read and written as the kernel's unpacker
//! (`init/initramfs.c`) and `usr/gen_init_cpio.c` know it.
//!
//! An entry is a 110-byte header, the name, then the data. The header is the magic `070701`
//! (or `070702`: the same with a checksum) then 13 fields of 8 hex digits: ino, mode, uid,
//! gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize (with the
//! name's NUL) and check (`parse_header()` in `init/initramfs.c`). The name is NUL-terminated
//! and padded with NULs so that header + name is a multiple of 4; the data is padded to a
//! multiple of 4 too. A symlink's data is its target. An archive ends with an entry named
//! `TRAILER!!!`.
//!
//! Hard links: every link of a file is an entry with the same (devmajor, devminor, ino) and
//! nlink ≥ 2, and only one carries the data — the last, as GNU cpio and `gen_init_cpio` write
//! them. The kernel creates the first link it meets as a file and links the others to it
//! (`maybe_link()`, regular files only); its table of links is emptied at each `TRAILER!!!`.

#![warn(clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};

use super::Entry;

/// Magic of a newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// Magic of a newc header with a checksum (the sum of the data's bytes).
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Bytes of a header.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";
/// Largest name size read or written, its NUL included: the kernel's `PATH_MAX`.
pub const MAX_NAME: usize = 4096;

/// File type bits of `mode` (`<sys/stat.h>`).
pub const S_IFMT: u32 = 0o170_000;
pub const S_IFSOCK: u32 = 0o140_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFBLK: u32 = 0o060_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFCHR: u32 = 0o020_000;
pub const S_IFIFO: u32 = 0o010_000;

/// NULs that pad `len` bytes to a multiple of 4.
pub fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// A reader that counts what it handed out and can look one byte ahead (to skip the NULs
/// between archives).
pub struct Source<R> {
    inner: R,
    /// Bytes read through this reader so far.
    pub offset: u64,
    peeked: Option<u8>,
}

impl<R: Read> Source<R> {
    pub fn new(inner: R) -> Source<R> {
        Source {
            inner,
            offset: 0,
            peeked: None,
        }
    }

    /// Skip NUL bytes; `false` at the end of the input.
    pub fn skip_zeros(&mut self) -> io::Result<bool> {
        loop {
            let b = match self.peeked {
                Some(b) => b,
                None => {
                    let mut one = [0u8; 1];
                    if self.inner.read(&mut one)? == 0 {
                        return Ok(false);
                    }
                    one[0]
                }
            };
            if b != 0 {
                self.peeked = Some(b);
                return Ok(true);
            }
            self.peeked = None;
            self.offset += 1;
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match (self.peeked, buf.first_mut()) {
            (_, None) => 0,
            (Some(b), Some(first)) => {
                *first = b;
                self.peeked = None;
                1
            }
            (None, Some(_)) => self.inner.read(buf)?,
        };
        self.offset += n as u64;
        Ok(n)
    }
}

/// Read exactly `n` bytes, growing the buffer with what arrives (64 KiB at a time), never by
/// what a header claims.
fn read_bounded(r: &mut impl Read, n: u32) -> io::Result<Vec<u8>> {
    let n = n as usize;
    let mut v = Vec::new();
    while v.len() < n {
        let start = v.len();
        v.resize(start + (n - start).min(1 << 16), 0);
        r.read_exact(&mut v[start..])?;
    }
    Ok(v)
}

/// Skip `n` (< 4) padding bytes.
fn skip_pad(r: &mut impl Read, n: usize) -> io::Result<()> {
    let mut pad = [0u8; 3];
    r.read_exact(&mut pad[..n.min(3)])
}

fn truncated(e: io::Error, what: &str) -> anyhow::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        anyhow::anyhow!("cpio archive truncated in {what}")
    } else {
        anyhow::Error::new(e).context(format!("cannot read {what}"))
    }
}

/// One field of 8 hex digits.
fn hex8(h: &[u8; HEADER_LEN], i: usize) -> Result<u32> {
    let raw = h.get(6 + i * 8..14 + i * 8).unwrap_or_default();
    std::str::from_utf8(raw)
        .ok()
        .filter(|s| s.len() == 8 && s.bytes().all(|c| c.is_ascii_hexdigit()))
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .with_context(|| {
            format!(
                "bad cpio header field {:?}",
                String::from_utf8_lossy(raw).into_owned()
            )
        })
}

/// Read one entry (header, name, data and their padding). `r` is at a multiple of 4.
pub fn read_entry(r: &mut impl Read) -> Result<Entry> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).map_err(|e| truncated(e, "a header"))?;
    let crc = if h.starts_with(MAGIC) {
        false
    } else if h.starts_with(MAGIC_CRC) {
        true
    } else {
        bail!(
            "bad cpio header magic {:?} (only newc archives, 070701/070702, are read)",
            String::from_utf8_lossy(h.get(..6).unwrap_or_default())
        );
    };
    let namesize = hex8(&h, 11)? as usize;
    if namesize == 0 || namesize > MAX_NAME {
        bail!("bad cpio name size {namesize} (1 to {MAX_NAME})");
    }
    let mut name = vec![0u8; namesize];
    r.read_exact(&mut name)
        .map_err(|e| truncated(e, "a name"))?;
    if name.pop() != Some(0) || name.contains(&0) {
        bail!(
            "cpio entry name {:?} is not one NUL-terminated string",
            String::from_utf8_lossy(&name)
        );
    }
    skip_pad(r, pad4(HEADER_LEN + namesize)).map_err(|e| truncated(e, "a name"))?;
    let filesize = hex8(&h, 6)?;
    let data = read_bounded(r, filesize).map_err(|e| {
        truncated(
            e,
            &format!("the data of {:?}", String::from_utf8_lossy(&name)),
        )
    })?;
    skip_pad(r, pad4(data.len())).map_err(|e| truncated(e, "padding"))?;
    Ok(Entry {
        name,
        ino: hex8(&h, 0)?,
        mode: hex8(&h, 1)?,
        uid: hex8(&h, 2)?,
        gid: hex8(&h, 3)?,
        nlink: hex8(&h, 4)?,
        mtime: hex8(&h, 5)?,
        dev_major: hex8(&h, 7)?,
        dev_minor: hex8(&h, 8)?,
        rdev_major: hex8(&h, 9)?,
        rdev_minor: hex8(&h, 10)?,
        data,
        crc,
    })
}

/// Read one archive, up to and including its `TRAILER!!!`, appending its entries to
/// `entries`; `entries_left` is the budget of entries for the whole initramfs.
pub fn read_archive(
    r: &mut impl Read,
    entries: &mut Vec<Entry>,
    entries_left: &mut usize,
) -> Result<()> {
    loop {
        let e = read_entry(r).with_context(|| match entries.last() {
            Some(p) if !p.is_trailer() => format!("cpio entry after {:?}", p.path()),
            _ => "first cpio entry".to_string(),
        })?;
        *entries_left = entries_left
            .checked_sub(1)
            .context("more entries than an initramfs has (a bomb, or not an initramfs)")?;
        let end = e.is_trailer();
        entries.push(e);
        if end {
            return Ok(());
        }
    }
}

/// Read the archives of a decompressed segment until its end: the kernel's
/// `flush_buffer()` accepts several, with NULs between them, each starting at a multiple of 4.
pub fn read_stream<R: Read>(r: &mut Source<R>, entries_left: &mut usize) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut archives = 0;
    while r.skip_zeros().context("cannot decompress")? {
        if !r.offset.is_multiple_of(4) {
            bail!(
                "a cpio archive starts at byte {} of the unpacked data, not at a multiple of 4 \
                 (the kernel refuses such padding)",
                r.offset
            );
        }
        read_archive(r, &mut entries, entries_left)?;
        archives += 1;
    }
    if archives == 0 {
        bail!("no cpio archive in it");
    }
    Ok(entries)
}

/// Write `entries` as newc, ending with a `TRAILER!!!` (one is added when the last entry is
/// not one). Inode numbers are renumbered 1, 2, … in order; the links of one file (regular
/// files of the same archive with nlink ≥ 2 and the same device and ino) share one number.
/// Trailers keep the fields they have. Checksums (070702) are recomputed.
pub fn write_newc(entries: &[Entry], out: &mut impl Write) -> Result<()> {
    let mut next_ino = 1u32;
    let mut links: HashMap<(usize, u32, u32, u32), u32> = HashMap::new();
    let mut archive = 0usize;
    let end = Entry::trailer();
    let add_end = entries.last().is_none_or(|e| !e.is_trailer());
    for e in entries.iter().chain(add_end.then_some(&end)) {
        let mut fresh = || {
            let i = next_ino;
            next_ino = next_ino.wrapping_add(1);
            i
        };
        let ino = if e.is_trailer() {
            e.ino
        } else if e.is_file() && e.nlink >= 2 {
            *links
                .entry((archive, e.dev_major, e.dev_minor, e.ino))
                .or_insert_with(fresh)
        } else {
            fresh()
        };
        write_entry(e, ino, out).with_context(|| format!("cpio entry {:?}", e.path()))?;
        if e.is_trailer() {
            archive += 1;
        }
    }
    Ok(())
}

/// Write one entry with inode number `ino`.
fn write_entry(e: &Entry, ino: u32, out: &mut impl Write) -> Result<()> {
    if e.name.contains(&0) {
        bail!("a name cannot hold a NUL byte");
    }
    let namesize = e.name.len() + 1;
    if namesize > MAX_NAME {
        bail!("name longer than {} bytes", MAX_NAME - 1);
    }
    let filesize =
        u32::try_from(e.data.len()).context("more than 4 GiB of data (newc cannot say it)")?;
    let check = if e.crc {
        e.data
            .iter()
            .fold(0u32, |s, &b| s.wrapping_add(u32::from(b)))
    } else {
        0
    };
    let fields = [
        ino,
        e.mode,
        e.uid,
        e.gid,
        e.nlink,
        e.mtime,
        filesize,
        e.dev_major,
        e.dev_minor,
        e.rdev_major,
        e.rdev_minor,
        u32::try_from(namesize).context("name size")?,
        check,
    ];
    let mut h = Vec::with_capacity(HEADER_LEN + namesize + 3);
    h.extend_from_slice(if e.crc { MAGIC_CRC } else { MAGIC });
    for f in fields {
        h.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    h.extend_from_slice(&e.name);
    h.push(0);
    h.resize(h.len() + pad4(h.len()), 0);
    out.write_all(&h)?;
    out.write_all(&e.data)?;
    out.write_all(&[0u8; 3][..pad4(e.data.len())])?;
    Ok(())
}

/// [`write_newc`] into a new buffer.
pub fn newc_bytes(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_newc(entries, &mut out)?;
    Ok(out)
}

/// A plain newc archive of `(name, mode, data)` entries and its `TRAILER!!!`, written field by
/// field as buffer-format.rst lays it out (inode numbers from 1, one link, mtime 0): for tests
/// that need an archive this module's writer did not make.
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test archives are small
pub(crate) fn hand_made(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let all = entries
        .iter()
        .copied()
        .chain(std::iter::once(("TRAILER!!!", 0, &b""[..])));
    for (i, (name, mode, data)) in all.enumerate() {
        let fields = [
            i as u32 + 1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}
