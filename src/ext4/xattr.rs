//! Extended attributes: in the inode's extra space after `i_extra_isize` (the "ibody", with
//! the 0xEA020000 magic) and, for what does not fit there, in one external xattr block
//! (header with refcount 1, entry hashes, block hash and `metadata_csum` checksum).
//!
//! Names are split into the kernel's namespace index + suffix (`user.` = 1,
//! `system.posix_acl_access` = 2, `system.posix_acl_default` = 3, `trusted.` = 4,
//! `security.` = 6, `system.` = 7). POSIX ACL values given in the VFS xattr form (version 2,
//! linux include/uapi/linux/posix_acl_xattr.h, as getfattr and src/rootfs/acl.rs give them)
//! are converted to ext4's compact on-disk form (linux fs/ext4/acl.h, `ext4_acl_to_disk`:
//! version 1, the owner, owning group, mask and other entries without an id), the bytes
//! `mkfs.ext4 -d` writes (tests/integration/tar_fidelity.rs compares them).
//!
//! Spec: Documentation/filesystems/ext4/attributes.rst; hashes as e2fsprogs
//! lib/ext2fs/ext_attr.c (`ext2fs_ext_attr_hash_entry`, block rehash).

use anyhow::{Result, bail};

use super::csum::crc32c_raw;
use super::format::*;
use super::inode::XATTR_IBODY;
use std::collections::BTreeMap;

const MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;
const IBODY_SPACE: usize = INODE_SIZE - XATTR_IBODY - 4;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Attr {
    fn entry_size(&self) -> usize {
        (16 + self.name.len() + 3) & !3
    }
    fn value_size(&self) -> usize {
        (self.value.len() + 3) & !3
    }
    fn sort_key(&self) -> (u8, usize, &[u8]) {
        (self.index, self.name.len(), &self.name)
    }
    fn hash(&self) -> u32 {
        let mut h: u32 = 0;
        for &c in &self.name {
            h = (h << 5) ^ (h >> 27) ^ u32::from(c);
        }
        let mut padded = self.value.clone();
        padded.resize(self.value_size(), 0);
        for w in padded.chunks(4) {
            let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            h = (h << 16) ^ (h >> 16) ^ v;
        }
        h
    }
}

fn convert_acl(full: &str, v: &[u8]) -> Result<Vec<u8>> {
    if v.len() < 4 || u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != 2 {
        // Already in ext4 form (or something we pass through unchanged).
        return Ok(v.to_vec());
    }
    if !(v.len() - 4).is_multiple_of(8) {
        bail!(
            "ext4: xattr {full}: malformed POSIX ACL value ({} bytes)",
            v.len()
        );
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in v[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[0..4]);
        if tag == 2 || tag == 8 {
            out.extend_from_slice(&e[4..8]);
        }
    }
    Ok(out)
}

/// Split the tree's full names into on-disk entries, sorted as the kernel expects.
pub fn prepare(xattrs: &BTreeMap<Vec<u8>, Vec<u8>>, path: &str) -> Result<Vec<Attr>> {
    let mut out = Vec::new();
    for (full, value) in xattrs {
        let name = String::from_utf8_lossy(full);
        let (index, suffix, value) = if full == b"system.posix_acl_access" {
            (2, &b""[..], convert_acl(&name, value)?)
        } else if full == b"system.posix_acl_default" {
            (3, &b""[..], convert_acl(&name, value)?)
        } else if let Some(s) = full.strip_prefix(b"user.") {
            (1, s, value.clone())
        } else if let Some(s) = full.strip_prefix(b"trusted.") {
            (4, s, value.clone())
        } else if let Some(s) = full.strip_prefix(b"security.") {
            (6, s, value.clone())
        } else if let Some(s) = full.strip_prefix(b"system.") {
            (7, s, value.clone())
        } else {
            bail!(
                "ext4: {path}: xattr {name:?} is in no namespace ext4 stores (user., trusted., security., system.)"
            );
        };
        if suffix.is_empty() && index != 2 && index != 3 {
            bail!("ext4: {path}: xattr name {name:?} has nothing after its namespace prefix");
        }
        if suffix.len() > 255 {
            bail!("ext4: {path}: xattr name {name:?} is longer than 255 bytes");
        }
        out.push(Attr {
            index,
            name: suffix.to_vec(),
            value,
        });
    }
    out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(out)
}

/// Write entries into `region` (entries from `entries_at`, values at the end of the region,
/// offsets relative to `value_base`).
#[allow(clippy::cast_possible_truncation)] // names are <= 255 bytes (checked when read); offsets and lengths lie inside one block or
// the inode's in-inode area
fn lay_out(region: &mut [u8], entries_at: usize, value_base: usize, attrs: &[Attr]) -> Vec<u32> {
    let mut pos = entries_at;
    let mut vend = region.len();
    let mut hashes = Vec::new();
    for a in attrs {
        vend -= a.value_size();
        region[vend..vend + a.value.len()].copy_from_slice(&a.value);
        let h = a.hash();
        put_u8(region, pos, a.name.len() as u8);
        put_u8(region, pos + 1, a.index);
        put_u16(
            region,
            pos + 2,
            if a.value.is_empty() {
                0
            } else {
                (vend - value_base) as u16
            },
        );
        put_u32(region, pos + 4, 0);
        put_u32(region, pos + 8, a.value.len() as u32);
        put_u32(region, pos + 12, h);
        region[pos + 16..pos + 16 + a.name.len()].copy_from_slice(&a.name);
        pos += a.entry_size();
        hashes.push(h);
    }
    hashes
}

fn space(attrs: &[Attr]) -> usize {
    attrs
        .iter()
        .map(|a| a.entry_size() + a.value_size())
        .sum::<usize>()
        + 4
}

/// Decide what goes in the inode and what in a block. Returns (ibody attrs, block attrs).
pub fn split(attrs: Vec<Attr>, path: &str) -> Result<(Vec<Attr>, Vec<Attr>)> {
    let mut ibody = Vec::new();
    let mut block = Vec::new();
    for a in attrs {
        let mut trial = ibody.clone();
        trial.push(a.clone());
        if space(&trial) <= IBODY_SPACE {
            ibody = trial;
        } else {
            block.push(a);
        }
    }
    if !block.is_empty() && space(&block) > BLOCK_SIZE - BLOCK_HEADER {
        bail!(
            "ext4: {path}: extended attributes need {} bytes, more than one 4 KiB xattr block holds",
            space(&block)
        );
    }
    Ok((ibody, block))
}

/// Fill the inode's in-body xattr area (bytes from `XATTR_IBODY` to the end).
pub fn write_ibody(raw: &mut [u8], attrs: &[Attr]) {
    if attrs.is_empty() {
        return;
    }
    put_u32(raw, XATTR_IBODY, MAGIC);
    let region = &mut raw[XATTR_IBODY + 4..];
    lay_out(region, 0, 0, attrs);
}

/// An external xattr block at block number `blk`; `csum_seed` with metadata_csum.
pub fn block(attrs: &[Attr], blk: u64, csum_seed: Option<u32>) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE];
    put_u32(&mut b, 0, MAGIC);
    put_u32(&mut b, 4, 1); // h_refcount
    put_u32(&mut b, 8, 1); // h_blocks
    let hashes = lay_out(&mut b, BLOCK_HEADER, 0, attrs);
    let mut h: u32 = 0;
    for eh in hashes {
        if eh == 0 {
            h = 0;
            break;
        }
        h = (h << 16) ^ (h >> 16) ^ eh;
    }
    put_u32(&mut b, 12, h);
    if let Some(seed) = csum_seed {
        let c = crc32c_raw(seed, &blk.to_le_bytes());
        let c = crc32c_raw(c, &b);
        put_u32(&mut b, 16, c);
    }
    b
}
