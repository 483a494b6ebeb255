//! Sparse tar members, as GNU tar writes them with `--sparse` (GNU tar manual, "Sparse
//! Formats"): the old GNU format (header type `S`, four map entries in the header at offset
//! 386, `isextended` at 482, the real size at 483, then extension blocks of 21 entries each
//! with their own `isextended` at 504), and the pax formats 0.0 (repeated `GNU.sparse.offset`
//! / `GNU.sparse.numbytes` records), 0.1 (`GNU.sparse.map` = `offset,size,…`) and 1.0
//! (`GNU.sparse.major=1`, the map at the start of the data: decimal numbers each ended by a
//! newline, the count first, padded with NULs to a 512-byte block). The real name is
//! `GNU.sparse.name` and the real size `GNU.sparse.size` (0.x) or `GNU.sparse.realsize` (1.0).
//! bsdtar writes the 1.0 form too.
//!
//! A member's data is its chunks' bytes one after another; [`Expand`] reads it back as the
//! whole file (a plain member is one chunk, [`Map::whole`]), the holes as zeros. The import
//! writes only the blocks that hold data ([`Map::data_blocks`]): a block that is all hole
//! stays a hole in the ext4 file (no block allocated, no extent maps it), as GNU tar leaves
//! it when it extracts; files held in memory (`/boot`, the files the edits read) get zeros.
//!
//! Maps are checked before any data is read, as GNU tar and the `tar` crate check them: chunks in order without overlap, inside the real size, each but the last a whole
//! number of 512-byte blocks (so the archive holds them back to back), adding up to the data
//! the member holds. Nothing a map declares sizes an allocation: a map grows entry by entry,
//! up to [`MAX_CHUNKS`].

use std::io::{self, Read};

/// The most chunks one member's map may list (16 MiB of map in memory).
pub const MAX_CHUNKS: usize = 1 << 20;
const BLOCK: u64 = 512;

/// One stretch of data: `len` bytes at `offset` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
}

/// Where a sparse member's data lies in its file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Map {
    /// The file's size, holes included.
    pub real_size: u64,
    pub chunks: Vec<Chunk>,
}

impl Map {
    /// A plain member's: its `size` bytes of data, no hole.
    pub fn whole(size: u64) -> Map {
        Map {
            real_size: size,
            chunks: vec![Chunk {
                offset: 0,
                len: size,
            }],
        }
    }

    fn push(&mut self, offset: u64, len: u64) -> Result<(), String> {
        if self.chunks.len() == MAX_CHUNKS {
            return Err(format!("sparse map lists more than {MAX_CHUNKS} chunks"));
        }
        self.chunks.push(Chunk { offset, len });
        Ok(())
    }

    /// Whether this is a plain member's map ([`Map::whole`]): one chunk, no hole.
    pub fn is_whole(&self) -> bool {
        matches!(self.chunks[..], [Chunk { offset: 0, len }] if len == self.real_size)
    }

    /// The block ranges `[first, end)` of `block`-byte blocks that hold some of the file's
    /// data, in order, adjacent ones merged; every other block is all hole.
    pub fn data_blocks(&self, block: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut spans = self
            .chunks
            .iter()
            .filter(|c| c.len > 0)
            .map(move |c| (c.offset / block, (c.offset + c.len).div_ceil(block)))
            .peekable();
        std::iter::from_fn(move || {
            let (first, mut end) = spans.next()?;
            while let Some(&(f, e)) = spans.peek() {
                if f > end {
                    break;
                }
                end = end.max(e);
                spans.next();
            }
            Some((first, end))
        })
    }

    /// Check the map against the `stored` bytes of data the member holds.
    pub fn check(&self, stored: u64) -> Result<(), String> {
        let mut end = 0u64;
        let mut total = 0u64;
        let last = self.chunks.iter().rposition(|c| c.len > 0);
        for (i, c) in self.chunks.iter().enumerate() {
            if c.offset < end {
                return Err(format!(
                    "sparse map chunk at offset {} overlaps the one before it or is out of order",
                    c.offset
                ));
            }
            end = c
                .offset
                .checked_add(c.len)
                .filter(|&e| e <= self.real_size)
                .ok_or_else(|| {
                    format!(
                        "sparse map chunk of {} bytes at offset {} ends past the file's size {}",
                        c.len, c.offset, self.real_size
                    )
                })?;
            if Some(i) != last && c.len % BLOCK != 0 && c.len > 0 {
                return Err(format!(
                    "sparse map chunk of {} bytes at offset {} is not a whole number of 512-byte blocks",
                    c.len, c.offset
                ));
            }
            total += c.len; // <= end <= real_size: no overflow
        }
        if total != stored {
            return Err(format!(
                "sparse map lists {total} bytes of data but the member holds {stored}"
            ));
        }
        Ok(())
    }
}

/// The pax sparse format an entry's records name, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum PaxSparse {
    /// 0.0 or 0.1: the whole map is in the records.
    Map(Map),
    /// 1.0: the map starts the data; the file's real size.
    InData(u64),
}

fn number(key: &str, v: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad pax {key} record"))
}

/// The sparse format of an entry whose pax records are `records`: `None` without
/// `GNU.sparse.*` records.
pub fn from_pax(records: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<PaxSparse>, String> {
    if !records.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
        return Ok(None);
    }
    let last = |key: &str| {
        records
            .iter()
            .rev()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    let real_size = match (last("GNU.sparse.realsize"), last("GNU.sparse.size")) {
        (Some(v), _) => number("GNU.sparse.realsize", v)?,
        (None, Some(v)) => number("GNU.sparse.size", v)?,
        (None, None) => {
            return Err("sparse member without GNU.sparse.realsize or GNU.sparse.size".into());
        }
    };
    if let Some(major) = last("GNU.sparse.major") {
        let minor = last("GNU.sparse.minor").unwrap_or(b"0");
        if major != b"1" || minor != b"0" {
            return Err(format!(
                "GNU sparse format {}.{} is not one hc1img reads (0.0, 0.1, 1.0)",
                String::from_utf8_lossy(major),
                String::from_utf8_lossy(minor)
            ));
        }
        return Ok(Some(PaxSparse::InData(real_size)));
    }
    let mut map = Map {
        real_size,
        chunks: Vec::new(),
    };
    if let Some(text) = last("GNU.sparse.map") {
        // 0.1: offset,size,offset,size,…
        let mut it = text.split(|&b| b == b',');
        while let Some(off) = it.next() {
            if off.is_empty() && map.chunks.is_empty() {
                break; // an empty map
            }
            let off = number("GNU.sparse.map", off)?;
            let len = it
                .next()
                .ok_or_else(|| "pax GNU.sparse.map record has an odd number of values".to_string())
                .and_then(|v| number("GNU.sparse.map", v))?;
            map.push(off, len)?;
        }
    } else {
        // 0.0: each GNU.sparse.offset is followed by its GNU.sparse.numbytes.
        let mut off = None;
        for (k, v) in records {
            match k.as_slice() {
                b"GNU.sparse.offset" => off = Some(number("GNU.sparse.offset", v)?),
                b"GNU.sparse.numbytes" => {
                    let o = off
                        .take()
                        .ok_or("pax GNU.sparse.numbytes record without its GNU.sparse.offset")?;
                    map.push(o, number("GNU.sparse.numbytes", v)?)?;
                }
                _ => {}
            }
        }
        if off.is_some() {
            return Err("pax GNU.sparse.offset record without its GNU.sparse.numbytes".into());
        }
    }
    if let Some(n) = last("GNU.sparse.numblocks") {
        let n = number("GNU.sparse.numblocks", n)?;
        if n != map.chunks.len() as u64 {
            return Err(format!(
                "pax GNU.sparse.numblocks says {n} chunks but the map lists {}",
                map.chunks.len()
            ));
        }
    }
    Ok(Some(PaxSparse::Map(map)))
}

/// Read a 1.0 map from the start of a member's data (`stored` bytes), with its padding;
/// returns the map and the bytes it took.
pub fn read_map_1_0(
    data: &mut dyn Read,
    real_size: u64,
    stored: u64,
) -> Result<(Map, u64), String> {
    let mut used = 0u64;
    let mut next = |what: &str| -> Result<u64, String> {
        let mut v: u64 = 0;
        let mut digits = 0;
        loop {
            if used == stored {
                return Err(format!("sparse map ends before its {what}"));
            }
            let mut b = [0u8];
            data.read_exact(&mut b)
                .map_err(|e| format!("cannot read the sparse map: {e}"))?;
            used += 1;
            match b[0] {
                b'\n' if digits > 0 => return Ok(v),
                c @ b'0'..=b'9' if digits < 20 => {
                    v = v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(c - b'0')))
                        .ok_or_else(|| format!("sparse map {what} is too large"))?;
                    digits += 1;
                }
                _ => return Err(format!("sparse map {what} is not a decimal number")),
            }
        }
    };
    let count = next("chunk count")?;
    let mut map = Map {
        real_size,
        chunks: Vec::new(),
    };
    for _ in 0..count {
        let off = next("chunk offset")?;
        let len = next("chunk size")?;
        map.push(off, len)?;
    }
    let padded = used.div_ceil(BLOCK) * BLOCK;
    if padded > stored {
        return Err("sparse map's padding runs past the member's data".into());
    }
    io::copy(&mut data.take(padded - used), &mut io::sink())
        .map_err(|e| format!("cannot read the sparse map: {e}"))?;
    Ok((map, padded))
}

/// The old GNU format's map: the header's four entries, then those of the extension blocks
/// `next_block` reads while the last block read says one follows. An entry whose size field
/// is empty ends its block's list, as in GNU tar.
pub fn old_gnu(
    header: &tar::GnuHeader,
    mut next_block: impl FnMut() -> io::Result<[u8; 512]>,
) -> Result<Map, String> {
    let mut map = Map {
        real_size: header
            .real_size()
            .map_err(|e| format!("bad real size in sparse header: {e}"))?,
        chunks: Vec::new(),
    };
    let add = |map: &mut Map, list: &[tar::GnuSparseHeader]| -> Result<(), String> {
        for s in list {
            if s.numbytes[0] == 0 {
                break;
            }
            let off = s.offset().map_err(|e| format!("bad sparse map: {e}"))?;
            let len = s.length().map_err(|e| format!("bad sparse map: {e}"))?;
            map.push(off, len)?;
        }
        Ok(())
    };
    add(&mut map, &header.sparse)?;
    let mut extended = header.is_extended();
    while extended {
        let raw = next_block().map_err(|e| format!("cannot read a sparse extension block: {e}"))?;
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.as_mut_bytes().copy_from_slice(&raw);
        add(&mut map, ext.sparse())?;
        extended = ext.is_extended();
    }
    Ok(map)
}

/// A sparse member's data read back as the whole file: zeros for the holes.
pub struct Expand<'a> {
    inner: &'a mut dyn Read,
    chunks: &'a [Chunk],
    real_size: u64,
    pos: u64,
    /// The chunk `pos` is in or before.
    at: usize,
}

impl<'a> Expand<'a> {
    /// `map` must have passed [`Map::check`] against what `inner` holds.
    pub fn new(inner: &'a mut dyn Read, map: &'a Map) -> Expand<'a> {
        Expand {
            inner,
            chunks: &map.chunks,
            real_size: map.real_size,
            pos: 0,
            at: 0,
        }
    }

    /// Move on to `to` (never backwards) over what must be hole: no chunk's data lies between
    /// here and `to` (as between two of [`Map::data_blocks`]' ranges).
    pub fn skip_hole(&mut self, to: u64) {
        self.pos = self.pos.max(to.min(self.real_size));
    }
}

impl Read for Expand<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self
            .chunks
            .get(self.at)
            .is_some_and(|c| self.pos >= c.offset + c.len)
        {
            self.at += 1;
        }
        let room = self.real_size - self.pos;
        if room == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match self.chunks.get(self.at) {
            Some(c) if self.pos >= c.offset => {
                let left = usize::try_from(c.offset + c.len - self.pos).unwrap_or(usize::MAX);
                let n = self.inner.read(&mut buf[..max.min(left)])?;
                if n == 0 {
                    // The member ended early: so does the file (its reader tells).
                    return Ok(0);
                }
                n
            }
            next => {
                let hole = next.map_or(room, |c| c.offset - self.pos);
                let n = max.min(usize::try_from(hole).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn expand(map: &Map, data: &[u8], step: usize) -> Vec<u8> {
        let mut d = data;
        let mut e = Expand::new(&mut d, map);
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = e.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn expand_fills_holes_with_zeros() {
        let map = Map {
            real_size: 3000,
            chunks: vec![
                Chunk {
                    offset: 512,
                    len: 512,
                },
                Chunk {
                    offset: 2048,
                    len: 700,
                },
                Chunk {
                    offset: 3000,
                    len: 0,
                },
            ],
        };
        map.check(1212).unwrap();
        let data: Vec<u8> = (0..1212u32).map(|i| (i % 250 + 1) as u8).collect();
        let mut want = vec![0u8; 3000];
        want[512..1024].copy_from_slice(&data[..512]);
        want[2048..2748].copy_from_slice(&data[512..]);
        for step in [1, 7, 512, 4096] {
            assert_eq!(expand(&map, &data, step), want, "step {step}");
        }
        // Short data ends the file early: its reader sees fewer bytes than the size.
        assert_eq!(expand(&map, &data[..100], 64), want[..612]);
        // A plain member passes through.
        assert_eq!(expand(&Map::whole(1212), &data, 100), data);
    }

    #[test]
    fn pax_0_0_and_0_1_maps() {
        let r00 = [
            rec("GNU.sparse.size", "10000"),
            rec("GNU.sparse.numblocks", "2"),
            rec("GNU.sparse.offset", "0"),
            rec("GNU.sparse.numbytes", "512"),
            rec("GNU.sparse.offset", "9000"),
            rec("GNU.sparse.numbytes", "1000"),
        ];
        let r01 = [
            rec("GNU.sparse.size", "10000"),
            rec("GNU.sparse.numblocks", "2"),
            rec("GNU.sparse.name", "a/b"),
            rec("GNU.sparse.map", "0,512,9000,1000"),
        ];
        let want = Map {
            real_size: 10000,
            chunks: vec![
                Chunk {
                    offset: 0,
                    len: 512,
                },
                Chunk {
                    offset: 9000,
                    len: 1000,
                },
            ],
        };
        assert_eq!(from_pax(&r00).unwrap(), Some(PaxSparse::Map(want.clone())));
        assert_eq!(from_pax(&r01).unwrap(), Some(PaxSparse::Map(want)));
        assert_eq!(from_pax(&[rec("path", "x")]).unwrap(), None);
        let r10 = [
            rec("GNU.sparse.major", "1"),
            rec("GNU.sparse.minor", "0"),
            rec("GNU.sparse.realsize", "77"),
        ];
        assert_eq!(from_pax(&r10).unwrap(), Some(PaxSparse::InData(77)));
    }

    #[test]
    fn pax_1_0_map_is_read_from_the_data_with_its_padding() {
        let mut data = b"2\n0\n512\n4096\n10\n".to_vec();
        let map_len = data.len();
        data.resize(512, 0);
        data.extend_from_slice(&[7u8; 522]);
        let mut r = &data[..];
        let (map, took) = read_map_1_0(&mut r, 4106, data.len() as u64).unwrap();
        assert_eq!(took, 512);
        assert!(map_len < 512);
        assert_eq!(
            map.chunks,
            [
                Chunk {
                    offset: 0,
                    len: 512
                },
                Chunk {
                    offset: 4096,
                    len: 10
                }
            ]
        );
        map.check(data.len() as u64 - took).unwrap();
        assert_eq!(r.len(), 522, "the padding is consumed, the data is not");
    }

    #[test]
    fn hostile_maps_are_errors_without_big_allocations() {
        let bad_pax: &[(&[(&str, &str)], &str)] = &[
            (
                &[("GNU.sparse.numblocks", "1")],
                "without GNU.sparse.realsize",
            ),
            (&[("GNU.sparse.size", "x")], "bad pax GNU.sparse.size"),
            (&[("GNU.sparse.size", "-1")], "bad pax GNU.sparse.size"),
            (
                &[("GNU.sparse.size", "1"), ("GNU.sparse.map", "0,1,5")],
                "odd number",
            ),
            (
                &[("GNU.sparse.size", "1"), ("GNU.sparse.map", "0,,")],
                "bad pax GNU.sparse.map",
            ),
            (
                &[("GNU.sparse.size", "1"), ("GNU.sparse.numbytes", "1")],
                "without its GNU.sparse.offset",
            ),
            (
                &[("GNU.sparse.size", "1"), ("GNU.sparse.offset", "1")],
                "without its GNU.sparse.numbytes",
            ),
            (
                &[
                    ("GNU.sparse.size", "1"),
                    ("GNU.sparse.numblocks", "18446744073709551615"),
                    ("GNU.sparse.map", "0,1"),
                ],
                "numblocks says",
            ),
            (
                &[("GNU.sparse.realsize", "1"), ("GNU.sparse.major", "2")],
                "format 2.0",
            ),
        ];
        for (recs, why) in bad_pax {
            let recs: Vec<_> = recs.iter().map(|(k, v)| rec(k, v)).collect();
            let e = from_pax(&recs).unwrap_err();
            assert!(e.contains(why), "{recs:?}: {e}");
        }
        let check = |size: u64, chunks: &[(u64, u64)], stored: u64| {
            Map {
                real_size: size,
                chunks: chunks
                    .iter()
                    .map(|&(offset, len)| Chunk { offset, len })
                    .collect(),
            }
            .check(stored)
            .unwrap_err()
        };
        assert!(check(100, &[(0, 512)], 512).contains("past the file's size"));
        assert!(check(u64::MAX, &[(u64::MAX, 512)], 512).contains("past the file's size"));
        assert!(check(4096, &[(1024, 512), (512, 512)], 1024).contains("overlaps"));
        assert!(check(4096, &[(0, 1024), (512, 512)], 1536).contains("overlaps"));
        assert!(check(4096, &[(0, 100), (1024, 512)], 612).contains("whole number"));
        assert!(check(4096, &[(0, 512)], 1024).contains("lists 512 bytes"));
        // A 1.0 map declaring a huge count ends with the data, not with memory.
        let mut d: &[u8] = b"18446744073709551615\n0\n";
        let e = read_map_1_0(&mut d, 10, 23).unwrap_err();
        assert!(e.contains("ends before"), "{e}");
        for (text, why) in [
            (&b"99999999999999999999999\n"[..], "too large"),
            (b"1\n0x\n", "not a decimal"),
            (b"\n", "not a decimal"),
            (b"1\n0\n", "ends before"),
        ] {
            let mut d = text;
            let e = read_map_1_0(&mut d, 10, text.len() as u64).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // Endless 0.1 map values stop at MAX_CHUNKS.
        let many = vec!["0,0"; MAX_CHUNKS + 1].join(",");
        let e = from_pax(&[rec("GNU.sparse.size", "1"), rec("GNU.sparse.map", &many)]).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn old_gnu_map_reads_extension_blocks() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        let g = h.as_gnu_mut().unwrap();
        for (i, s) in g.sparse.iter_mut().enumerate() {
            s.set_offset(i as u64 * 1024);
            s.set_length(512);
        }
        g.set_is_extended(true);
        g.realsize.copy_from_slice(b"00000100000\0");
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.sparse_mut()[0].set_offset(8192);
        ext.sparse_mut()[0].set_length(100);
        let mut blocks = vec![*ext.as_bytes()].into_iter();
        let map = old_gnu(h.as_gnu().unwrap(), || {
            blocks
                .next()
                .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
        })
        .unwrap();
        assert_eq!(map.real_size, 0o100000);
        assert_eq!(map.chunks.len(), 5);
        assert_eq!(
            map.chunks[4],
            Chunk {
                offset: 8192,
                len: 100
            }
        );
        map.check(4 * 512 + 100).unwrap();
        // An extension block that never comes is an error.
        let e = old_gnu(h.as_gnu().unwrap(), || {
            Err(io::ErrorKind::UnexpectedEof.into())
        })
        .unwrap_err();
        assert!(e.contains("extension block"), "{e}");
    }
}
