//! Sparse image files: create a file of its final length with `set_len` (one hole), then write
//! only the non-zero parts of each buffer, so untouched and all-zero regions stay holes. The
//! result reads back identically to a fully written file, takes far less disk space, and lets
//! `disk::bmap` find the mapped ranges with `SEEK_DATA`/`SEEK_HOLE`.

#![warn(clippy::cast_possible_truncation)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Granularity of the zero check: a chunk of this many bytes that is entirely zero is skipped.
pub const CHUNK: usize = 4096;

/// `x`, or `max` when it is larger: a byte count that indexes a buffer of `max` bytes.
fn at_most(x: u64, max: usize) -> usize {
    usize::try_from(x).map_or(max, |x| x.min(max))
}

/// Create (or truncate) `path` as a sparse file of exactly `len` bytes, opened read-write.
pub fn create_sparse(path: &Path, len: u64) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create image file {}", path.display()))?;
    file.set_len(len)
        .with_context(|| format!("cannot set length of {} to {len} bytes", path.display()))?;
    Ok(file)
}

/// Write `data` at byte `offset` of `file`, skipping every all-zero chunk (aligned to
/// [`CHUNK`] in file offsets).
///
/// Only correct where the target region already reads as zero (a hole of a file made by
/// [`create_sparse`]): skipped chunks are not written at all. Use [`write_at_zeroing`] to
/// overwrite data that may be non-zero.
pub fn write_nonzero_at(file: &File, offset: u64, data: &[u8]) -> Result<()> {
    let mut pos = 0usize;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let to_boundary = CHUNK - at_most(abs % CHUNK as u64, CHUNK);
        let n = to_boundary.min(data.len() - pos);
        let chunk = &data[pos..pos + n];
        if chunk.iter().any(|&b| b != 0) {
            file.write_all_at(chunk, abs)
                .with_context(|| format!("cannot write {n} bytes at offset {abs} of the image"))?;
        }
        pos += n;
    }
    Ok(())
}

/// Write `data` at `offset`, like [`write_nonzero_at`], but all-zero chunks are still written
/// when the bytes already there are not zero. Correct whatever the file held before.
pub fn write_at_zeroing(file: &File, offset: u64, data: &[u8]) -> Result<()> {
    let mut old = vec![0u8; CHUNK];
    let mut pos = 0usize;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let to_boundary = CHUNK - at_most(abs % CHUNK as u64, CHUNK);
        let n = to_boundary.min(data.len() - pos);
        let chunk = &data[pos..pos + n];
        let write = if chunk.iter().any(|&b| b != 0) {
            true
        } else {
            let got = read_up_to(file, abs, &mut old[..n])?;
            old[..got].iter().any(|&b| b != 0)
        };
        if write {
            file.write_all_at(chunk, abs)
                .with_context(|| format!("cannot write {n} bytes at offset {abs} of the image"))?;
        }
        pos += n;
    }
    Ok(())
}

/// Make `[offset, offset + len)` of `file` data rather than hole, keeping its bytes: read it
/// and write it back, zeros included. The block map ([`super::bmap`]) maps data extents only,
/// and a flashing tool writes only what is mapped, so every byte whose value matters on the
/// target (FAT tables, directories, the zeroed U-Boot environment) must be data.
pub fn materialize(file: &File, offset: u64, len: u64) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = at_most(len - done, buf.len());
        let at = offset + done;
        let got = read_up_to(file, at, &mut buf[..n])?;
        buf[got..n].fill(0);
        file.write_all_at(&buf[..n], at)
            .with_context(|| format!("cannot write {n} bytes at offset {at} of the image"))?;
        done += n as u64;
    }
    Ok(())
}

/// Read into `buf` from `offset`, stopping early at end of file; returns the bytes read.
pub(crate) fn read_up_to(file: &File, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file
            .read_at(&mut buf[done..], offset + done as u64)
            .with_context(|| {
                format!(
                    "cannot read at offset {} of the image",
                    offset + done as u64
                )
            })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Data extents `[start, end)` of `file` (whole file if the filesystem cannot tell).
#[allow(unsafe_code)] // lseek(SEEK_DATA/SEEK_HOLE): not in std
pub fn data_ranges(file: &File, len: u64) -> Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        let Ok(off) = libc::off_t::try_from(pos) else {
            break;
        };
        // SAFETY: lseek on a file descriptor we own (borrowed from `file`), no memory access.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            if err.raw_os_error() == Some(libc::EINVAL) && pos == 0 {
                return Ok(vec![(0, len)]); // SEEK_DATA unsupported: everything is data
            }
            return Err(err).context("lseek(SEEK_DATA) failed on the image");
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error())
                .context("lseek(SEEK_HOLE) failed on the image");
        }
        let (data, hole) = (data as u64, (hole as u64).min(len));
        if hole > data {
            out.push((data, hole));
        }
        pos = hole.max(data + 1);
    }
    Ok(out)
}

/// Pass every byte of the first `len` bytes of `file` to `f`, in order and in chunks of at
/// most 1 MiB: data extents are read, holes are passed as zeros from memory without reading
/// them (so a mostly-empty image costs no page-cache zero-filling).
pub fn for_each_chunk(file: &File, len: u64, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let zeros = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for (start, end) in data_ranges(file, len)?
        .into_iter()
        .chain(std::iter::once((len, len)))
    {
        while pos < start {
            let n = at_most(start - pos, CHUNK);
            f(&zeros[..n])?;
            pos += n as u64;
        }
        while pos < end {
            let n = at_most(end - pos, CHUNK);
            file.read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("cannot read {n} bytes at offset {pos}"))?;
            f(&buf[..n])?;
            pos += n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_chunks_skipped_and_overwrite_works() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = create_sparse(&p, 3 * CHUNK as u64).unwrap();
        let mut data = vec![0u8; 2 * CHUNK];
        data[CHUNK + 5] = 7;
        write_nonzero_at(&f, 100, &data).unwrap();
        let all = std::fs::read(&p).unwrap();
        assert_eq!(all.len(), 3 * CHUNK);
        assert_eq!(all[100 + CHUNK + 5], 7);
        assert_eq!(all.iter().filter(|&&b| b != 0).count(), 1);
        write_at_zeroing(&f, 100, &vec![0u8; 2 * CHUNK]).unwrap();
        assert!(std::fs::read(&p).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn materialized_zeros_are_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = create_sparse(&p, 4 * CHUNK as u64).unwrap();
        write_nonzero_at(&f, 0, &[1, 2, 3]).unwrap();
        assert_eq!(
            data_ranges(&f, 4 * CHUNK as u64).unwrap(),
            [(0, CHUNK as u64)]
        );
        materialize(&f, 2 * CHUNK as u64, CHUNK as u64).unwrap();
        let r = data_ranges(&f, 4 * CHUNK as u64).unwrap();
        assert!(
            r.iter()
                .any(|&(s, e)| s <= 2 * CHUNK as u64 && e >= 3 * CHUNK as u64),
            "{r:?}"
        );
        let all = std::fs::read(&p).unwrap();
        assert_eq!(&all[..3], &[1, 2, 3]);
        assert!(all[3..].iter().all(|&b| b == 0));
    }
}
