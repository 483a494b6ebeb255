//! The legacy U-Boot image around an initramfs (`mkimage -T ramdisk -C none`, a "uInitrd"):
//! a 64-byte big-endian header (U-Boot `include/image.h`, see [`crate::uboot`]) with magic
//! `0x27051956`, the header's CRC32, the data size and the data's CRC32, then the data, which
//! U-Boot hands to the kernel as the initramfs. Read: the header is checked as `bootm` checks
//! it; written: the size and both CRCs are recomputed for the new data, every other field
//! is kept.

#![warn(clippy::cast_possible_truncation)]

use anyhow::{Context, Result, bail};

use crate::uboot::{HEADER_LEN, IH_COMP_NONE, IH_MAGIC};

/// `IH_TYPE_RAMDISK`.
pub const IH_TYPE_RAMDISK: u8 = 3;

/// The header of a wrapped initramfs, and any bytes after its data.
#[derive(Debug, Clone)]
pub struct Wrapper {
    header: [u8; HEADER_LEN],
    tail: Vec<u8>,
}

fn be32(h: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = h.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_be_bytes(b)
}

fn header_crc(h: &[u8; HEADER_LEN]) -> u32 {
    let mut z = *h;
    z[4..8].fill(0);
    crc32fast::hash(&z)
}

impl Wrapper {
    /// The wrapper and its data, when `data` starts with a legacy U-Boot header; `None`
    /// when it does not.
    pub fn parse(data: &[u8]) -> Result<Option<(Wrapper, &[u8])>> {
        if !data.starts_with(&IH_MAGIC.to_be_bytes()) {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(
            data.get(..HEADER_LEN)
                .context("U-Boot image truncated in its header")?,
        );
        if header_crc(&header) != be32(&header, 4) {
            bail!("U-Boot image: bad header CRC (U-Boot would refuse it too)");
        }
        let (kind, comp) = (header[30], header[31]);
        if kind != IH_TYPE_RAMDISK {
            bail!("U-Boot image of type {kind}, not a ramdisk (type {IH_TYPE_RAMDISK})");
        }
        if comp != IH_COMP_NONE {
            bail!("U-Boot ramdisk compressed by U-Boot (compression {comp}): not read");
        }
        let size = be32(&header, 12) as usize;
        let rest = data.get(HEADER_LEN..).unwrap_or_default();
        let Some(body) = rest.get(..size) else {
            bail!(
                "U-Boot image truncated: its header announces {size} bytes of data, {} follow",
                rest.len()
            );
        };
        if crc32fast::hash(body) != be32(&header, 24) {
            bail!("U-Boot image: bad data CRC (U-Boot would refuse it too)");
        }
        let tail = rest.get(size..).unwrap_or_default().to_vec();
        Ok(Some((Wrapper { header, tail }, body)))
    }

    /// Fill in the header in `out[..64]` for the data `out[64..]`, and append the tail.
    pub fn finish(&self, out: &mut Vec<u8>) -> Result<()> {
        let body = out.get(HEADER_LEN..).unwrap_or_default();
        let size = u32::try_from(body.len()).context("initramfs larger than 4 GiB")?;
        let mut h = self.header;
        h[12..16].copy_from_slice(&size.to_be_bytes());
        h[24..28].copy_from_slice(&crc32fast::hash(body).to_be_bytes());
        let hcrc = header_crc(&h);
        h[4..8].copy_from_slice(&hcrc.to_be_bytes());
        out.get_mut(..HEADER_LEN)
            .context("internal error: no room for the U-Boot header")?
            .copy_from_slice(&h);
        out.extend_from_slice(&self.tail);
        Ok(())
    }
}
