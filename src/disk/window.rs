//! A byte range of an image file as a `Read + Write + Seek` stream, so a filesystem library
//! (`fatfs`) can work on one partition of a whole-disk image in place; and the lookup of the
//! first MBR partition (`sd.img`'s FAT), from the classic MBR layout: entries at offset 446,
//! start LBA at +8 and sector count at +12 (little-endian), signature 0x55AA at 510.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::SECTOR;

/// One partition of an image file. Writes are refused unless made with [`Window::writable`].
pub struct Window {
    f: File,
    start: u64,
    len: u64,
    pos: u64,
    writable: bool,
}

impl Window {
    /// A read-only view of `len` bytes at `start`.
    pub fn read_only(f: File, start: u64, len: u64) -> Self {
        Window {
            f,
            start,
            len,
            pos: 0,
            writable: false,
        }
    }

    /// A read-write view (`f` must be open for writing).
    pub fn writable(f: File, start: u64, len: u64) -> Self {
        Window {
            writable: true,
            ..Window::read_only(f, start, len)
        }
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.f.read_exact_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Window {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "this image is opened read-only",
            ));
        }
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.f.write_all_at(&buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

/// Start LBA and length in sectors of the first MBR partition of `image` (open as `f`).
pub fn first_mbr_partition(f: &File, image: &Path) -> Result<(u64, u64)> {
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0)
        .with_context(|| format!("{}: cannot read the MBR", image.display()))?;
    if mbr[510..512] != [0x55, 0xaa] {
        bail!(
            "{}: no MBR boot signature; is this an hc1img sd.img?",
            image.display()
        );
    }
    let e = &mbr[446..462];
    let lba = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
    let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
    if lba == 0 || sectors == 0 {
        bail!(
            "{}: the first MBR partition is empty; is this an hc1img sd.img?",
            image.display()
        );
    }
    let size = f
        .metadata()
        .with_context(|| format!("{}: cannot stat", image.display()))?
        .len();
    if (lba + sectors) * SECTOR > size {
        bail!(
            "{}: the first MBR partition ends past the end of the file ({} bytes); \
             is the image truncated?",
            image.display(),
            size
        );
    }
    Ok((lba, sectors))
}
