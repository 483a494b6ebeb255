//! `hc1img diff DIR_A DIR_B`: what changed between two builds, path by path, so a user sees what
//! a profile change or a new tarball really did before flashing the nodes.
//!
//! Each directory holds a build's `ssd.img`, `sd.img` and `manifest.json`. The root filesystem
//! is read from `ssd.img`: the GPT header at LBA 1 (UEFI 2.10 §5.3.2) names the partition entry
//! array, whose first entry gives the root partition's first and last LBA (§5.3.3); the ext4
//! inside is read with the `ext4-view` crate (a reader that shares no code with hc1img's
//! writer). The boot files are read from `sd.img`: the first MBR partition entry (offset 446,
//! start LBA at +8, sector count at +12) locates the FAT volume, read with [`crate::fat::read_fat32`].
//! The raw bootloader area before that partition (the Exynos blobs) is compared as one item.
//!
//! Reported per path: added (`+`), removed (`-`), content changed (`M … (content)`, by
//! sha256), metadata changed (`m … (mode 0644->0600, uid 0->1000, …)`: file type, permission
//! bits, owner, group, mtime, symlink target; for FAT files the modification time and
//! attributes). Boot items are prefixed `boot:`. Extended attributes are not compared:
//! `ext4-view` does not read them. Names are shown escaped ([`crate::tree::escaped`]).
//!
//! Times: `ext4-view` 1.0.0 decodes an inode's 32-bit seconds field through `i32::try_from`
//! of the unsigned value, so it calls any inode dated before 1970 or after 2038 corrupt. The
//! window it reads through ([`Ext4Window`]) therefore decodes every inode's mtime itself as
//! the kernel does (Documentation/filesystems/ext4/inodes.rst, "Inode Timestamps": the signed
//! 32-bit seconds plus the two epoch bits of `i_mtime_extra`, nanoseconds in its other 30
//! bits), hands `ext4-view` the inode with its times zeroed and its number in `i_atime` (which
//! is not compared) so the mtime can be found again, and clears `metadata_csum` in the
//! superblock it hands over, since the changed inodes no longer match their checksums
//! (`e2fsck` is what validates an image; `diff` only compares).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::disk::window::first_mbr_partition;

/// One difference between two builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A path only in the second build.
    Added(String),
    /// A path only in the first build.
    Removed(String),
    /// A regular file (or the raw bootloader area) whose bytes differ.
    Content(String),
    /// A path whose metadata differs; each item reads like `mode 0644->0600`.
    Metadata(String, Vec<String>),
}

/// All differences, root filesystem paths first (`/…`), then boot items (`boot:/…`), each
/// group sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    pub changes: Vec<Change>,
}

impl DiffReport {
    /// Whether the two builds have the same files with the same metadata.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added(p) => write!(f, "+ {p}"),
            Change::Removed(p) => write!(f, "- {p}"),
            Change::Content(p) => write!(f, "M {p} (content)"),
            Change::Metadata(p, what) => write!(f, "m {p} ({})", what.join(", ")),
        }
    }
}

impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// What is compared of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    /// Permission bits (ext4) or the attribute byte (FAT).
    mode: u16,
    uid: u32,
    gid: u32,
    /// Modification time: seconds and nanoseconds (ext4) or the FAT date-time as a number.
    mtime: (i64, u32),
    /// sha256 of a regular file's bytes.
    content: Option<String>,
    link: Option<String>,
}

/// Compare the builds in directories `a` and `b`.
pub fn diff(a: &Path, b: &Path) -> Result<DiffReport> {
    for dir in [a, b] {
        for f in ["ssd.img", "sd.img", "manifest.json"] {
            if !dir.join(f).is_file() {
                bail!(
                    "{}: no {f}; hc1img diff compares two build output directories (each with ssd.img, sd.img and manifest.json)",
                    dir.display()
                );
            }
        }
    }
    let mut changes = Vec::new();
    let (ra, rb) = (
        root_tree(&a.join("ssd.img"))?,
        root_tree(&b.join("ssd.img"))?,
    );
    compare(&ra, &rb, "", true, &mut changes);
    let (ba, bb) = (boot_tree(&a.join("sd.img"))?, boot_tree(&b.join("sd.img"))?);
    compare(&ba, &bb, "boot:", false, &mut changes);
    Ok(DiffReport { changes })
}

fn compare(
    a: &BTreeMap<String, Entry>,
    b: &BTreeMap<String, Entry>,
    prefix: &str,
    ext4: bool,
    out: &mut Vec<Change>,
) {
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let shown = format!("{prefix}{p}");
        match (a.get(p), b.get(p)) {
            (None, Some(_)) => out.push(Change::Added(shown)),
            (Some(_), None) => out.push(Change::Removed(shown)),
            (Some(x), Some(y)) => {
                if x.kind != y.kind {
                    out.push(Change::Metadata(
                        shown,
                        vec![format!("type {}->{}", x.kind, y.kind)],
                    ));
                    continue;
                }
                if x.content != y.content {
                    out.push(Change::Content(shown.clone()));
                }
                let mut what = Vec::new();
                if x.mode != y.mode {
                    if ext4 {
                        what.push(format!("mode {:04o}->{:04o}", x.mode, y.mode));
                    } else {
                        what.push(format!("attributes {:#04x}->{:#04x}", x.mode, y.mode));
                    }
                }
                if x.uid != y.uid {
                    what.push(format!("uid {}->{}", x.uid, y.uid));
                }
                if x.gid != y.gid {
                    what.push(format!("gid {}->{}", x.gid, y.gid));
                }
                if x.mtime != y.mtime {
                    what.push(format!(
                        "mtime {}->{}",
                        show_time(x.mtime),
                        show_time(y.mtime)
                    ));
                }
                if x.link != y.link {
                    what.push(format!(
                        "link {}->{}",
                        x.link.as_deref().unwrap_or(""),
                        y.link.as_deref().unwrap_or("")
                    ));
                }
                if !what.is_empty() {
                    out.push(Change::Metadata(shown, what));
                }
            }
            (None, None) => {}
        }
    }
}

fn show_time((s, ns): (i64, u32)) -> String {
    if ns == 0 {
        s.to_string()
    } else {
        format!("{s}.{ns:09}")
    }
}

fn read_at(f: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<()> {
    f.read_exact_at(buf, at).with_context(|| {
        format!(
            "{}: cannot read {} bytes at {at}",
            path.display(),
            buf.len()
        )
    })
}

/// Byte range of the first GPT partition of `image`.
fn gpt_root(f: &File, image: &Path) -> Result<(u64, u64)> {
    let mut hdr = [0u8; 92];
    read_at(f, image, &mut hdr, 512)?;
    if &hdr[0..8] != b"EFI PART" {
        bail!(
            "{}: no GPT header at LBA 1; is this an hc1img ssd.img?",
            image.display()
        );
    }
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let entries_lba = u64_at(&hdr, 72);
    let mut entry = [0u8; 128];
    read_at(f, image, &mut entry, entries_lba * 512)?;
    let (first, last) = (u64_at(&entry, 32), u64_at(&entry, 40));
    if entry[0..16].iter().all(|&b| b == 0) || last < first {
        bail!(
            "{}: the first GPT partition entry is empty; is this an hc1img ssd.img?",
            image.display()
        );
    }
    Ok((first * 512, (last - first + 1) * 512))
}

/// Where the inode tables are (from the superblock and group descriptors; ext4
/// Documentation/filesystems/ext4/super.rst and group_descr.rst).
struct InodeTables {
    inode_size: u64,
    inodes_per_group: u64,
    /// Byte offset of each group's inode table.
    tables: Vec<u64>,
}

/// Inode number → mtime (seconds, nanoseconds), as the kernel decodes it.
type Mtimes = Arc<Mutex<BTreeMap<u32, (i64, u32)>>>;

/// ext4-view's reader over a byte range of an image file, decoding times itself (module doc).
struct Ext4Window {
    f: File,
    start: u64,
    tables: InodeTables,
    mtimes: Mtimes,
}

const SB_OFFSET: u64 = 1024;
const RO_COMPAT: usize = 0x64;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

impl InodeTables {
    fn read(f: &File, start: u64, image: &Path) -> Result<InodeTables> {
        let mut sb = [0u8; 1024];
        read_at(f, image, &mut sb, start + SB_OFFSET)?;
        let u16_at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32_at = |b: &[u8], o: usize| {
            u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
        };
        if u16_at(&sb, 0x38) != 0xEF53 {
            bail!(
                "{}: no ext4 superblock in the root partition",
                image.display()
            );
        }
        let bit64 = u32_at(&sb, 0x60) & 0x80 != 0;
        let blocks = u32_at(&sb, 0x4) | if bit64 { u32_at(&sb, 0x150) << 32 } else { 0 };
        let block_size = 1024u64 << u32_at(&sb, 0x18).min(6);
        let first_data_block = u32_at(&sb, 0x14);
        let blocks_per_group = u32_at(&sb, 0x20).max(1);
        let inodes_per_group = u32_at(&sb, 0x28);
        let inode_size = if u32_at(&sb, 0x4C) == 0 {
            128
        } else {
            u16_at(&sb, 0x58)
        };
        let desc_size = if bit64 { u16_at(&sb, 0xFE).max(32) } else { 32 };
        let groups = blocks
            .saturating_sub(first_data_block)
            .div_ceil(blocks_per_group);
        if groups > 1 << 24 || !(128..=block_size).contains(&inode_size) {
            bail!("{}: implausible ext4 superblock", image.display());
        }
        let mut gdt = vec![0u8; (groups * desc_size) as usize];
        read_at(
            f,
            image,
            &mut gdt,
            start + (first_data_block + 1) * block_size,
        )?;
        let tables = gdt
            .chunks_exact(desc_size as usize)
            .map(|d| {
                let hi = if desc_size >= 64 {
                    u32_at(d, 0x28) << 32
                } else {
                    0
                };
                (u32_at(d, 0x8) | hi) * block_size
            })
            .collect();
        Ok(InodeTables {
            inode_size,
            inodes_per_group,
            tables,
        })
    }
}

impl ext4_view::Ext4Read for Ext4Window {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.f.read_exact_at(dst, self.start + start)?;
        let end = start + dst.len() as u64;
        // The superblock as a filesystem without metadata checksums.
        let ro = SB_OFFSET + RO_COMPAT as u64;
        if start <= ro && ro + 4 <= end {
            let i = (ro - start) as usize;
            let v = u32::from_le_bytes([dst[i], dst[i + 1], dst[i + 2], dst[i + 3]]);
            dst[i..i + 4].copy_from_slice(&(v & !RO_COMPAT_METADATA_CSUM).to_le_bytes());
        }
        let t = &self.tables;
        let table_len = t.inodes_per_group * t.inode_size;
        for (g, &table) in t.tables.iter().enumerate() {
            if table >= end || table + table_len <= start {
                continue;
            }
            let first = start.max(table);
            // Whole inode records inside this read.
            let mut idx = (first - table).div_ceil(t.inode_size);
            while idx < t.inodes_per_group && table + (idx + 1) * t.inode_size <= end {
                let at = (table + idx * t.inode_size - start) as usize;
                let rec = &mut dst[at..at + t.inode_size as usize];
                let ino = g as u64 * t.inodes_per_group + idx + 1;
                let ino = u32::try_from(ino).map_err(|_| "inode number above 2^32")?;
                let u32_at =
                    |r: &[u8], o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
                let lo = u32_at(rec, 0x10);
                let extra_isize = u16::from_le_bytes([rec[0x80], rec[0x81]]);
                let extra = if t.inode_size >= 0x8C && extra_isize >= 12 {
                    u32_at(rec, 0x88)
                } else {
                    0
                };
                let sec = i64::from(lo as i32) + (i64::from(extra & 3) << 32);
                let nsec = (extra >> 2).min(999_999_999);
                self.mtimes
                    .lock()
                    .map_err(|_| "poisoned lock")?
                    .insert(ino, (sec, nsec));
                rec[0x8..0xC].copy_from_slice(&ino.to_le_bytes());
                for o in [0xC, 0x10] {
                    rec[o..o + 4].fill(0);
                }
                for o in [0x84, 0x88, 0x8C, 0x90, 0x94] {
                    if o + 4 <= rec.len() {
                        rec[o..o + 4].fill(0);
                    }
                }
                idx += 1;
            }
        }
        Ok(())
    }
}

fn sha256_reader(mut r: impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Every path of the root filesystem in `ssd.img`, `/`-prefixed.
fn root_tree(image: &Path) -> Result<BTreeMap<String, Entry>> {
    let f = File::open(image).with_context(|| format!("{}: cannot open", image.display()))?;
    let (start, _) = gpt_root(&f, image)?;
    let tables = InodeTables::read(&f, start, image)?;
    let mtimes = Mtimes::default();
    let window = Ext4Window {
        f,
        start,
        tables,
        mtimes: mtimes.clone(),
    };
    let fs = ext4_view::Ext4::load(Box::new(window)).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read the ext4 root filesystem: {e}",
            image.display()
        )
    })?;
    let mut out = BTreeMap::new();
    // (the path's bytes, for ext4-view; the path as shown)
    let mut stack = vec![(b"/".to_vec(), String::from("/"))];
    while let Some((dir_bytes, dir)) = stack.pop() {
        let rd = fs
            .read_dir(dir_bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("{}: reading directory {dir}: {e}", image.display()))?;
        for e in rd {
            let e = e.map_err(|e| {
                anyhow::anyhow!("{}: reading directory {dir}: {e}", image.display())
            })?;
            let raw = e.file_name().as_ref().to_vec();
            if raw == b"." || raw == b".." {
                continue;
            }
            let name = crate::tree::escaped(&raw);
            let (path_bytes, path) = if dir == "/" {
                ([b"/".as_slice(), &raw].concat(), format!("/{name}"))
            } else {
                (
                    [dir_bytes.as_slice(), b"/", &raw].concat(),
                    format!("{dir}/{name}"),
                )
            };
            let md = fs
                .symlink_metadata(path_bytes.as_slice())
                .map_err(|e| anyhow::anyhow!("{}: {path}: {e}", image.display()))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_regular_file() {
                "file"
            } else if ft.is_char_dev() {
                "char-device"
            } else if ft.is_block_dev() {
                "block-device"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            let (content, link) = match kind {
                "file" => {
                    let file = fs
                        .open(path_bytes.as_slice())
                        .map_err(|e| anyhow::anyhow!("{}: opening {path}: {e}", image.display()))?;
                    let sha = sha256_reader(file)
                        .with_context(|| format!("{}: reading {path}", image.display()))?;
                    (Some(sha), None)
                }
                "symlink" => {
                    let t = fs.read_link(path_bytes.as_slice()).map_err(|e| {
                        anyhow::anyhow!("{}: reading link {path}: {e}", image.display())
                    })?;
                    (None, Some(crate::tree::escaped(t.as_ref())))
                }
                _ => (None, None),
            };
            // i_atime carries the inode number (see Ext4Window).
            let ino = u32::try_from(md.accessed().seconds()).unwrap_or(0);
            let mtime = mtimes
                .lock()
                .map_err(|_| anyhow::anyhow!("internal error: poisoned lock"))?
                .get(&ino)
                .copied()
                .with_context(|| format!("{}: {path}: inode {ino} not read", image.display()))?;
            out.insert(
                path.clone(),
                Entry {
                    kind,
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime,
                    content,
                    link,
                },
            );
            if kind == "dir" {
                stack.push((path_bytes, path));
            }
        }
    }
    Ok(out)
}

/// Every file of the FAT partition of `sd.img` (`/`-prefixed), plus the raw area before it.
fn boot_tree(image: &Path) -> Result<BTreeMap<String, Entry>> {
    let f = File::open(image).with_context(|| format!("{}: cannot open", image.display()))?;
    let (lba, sectors) = first_mbr_partition(&f, image)?;
    let mut out = BTreeMap::new();
    // The bootloader blobs live in the sectors after the MBR, before the partition.
    let mut raw = vec![0u8; ((lba - 1) * 512) as usize];
    read_at(&f, image, &mut raw, 512)?;
    out.insert(
        "(bootloader sectors before the partition)".to_string(),
        Entry {
            kind: "raw",
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            content: Some(hex::encode(Sha256::digest(&raw))),
            link: None,
        },
    );
    let vol = crate::fat::read_fat32(&f, lba * 512, sectors * 512, &image.display().to_string())?;
    for e in vol.entries {
        let d = crate::fat::unix_from_dos(e.mdate, e.mtime);
        let content = (!e.is_dir).then(|| hex::encode(Sha256::digest(&e.data)));
        out.insert(
            format!("/{}", e.path),
            Entry {
                kind: if e.is_dir { "dir" } else { "file" },
                mode: u16::from(e.attr),
                uid: 0,
                gid: 0,
                mtime: (d, 0),
                content,
                link: None,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &'static str, mode: u16, content: Option<&str>, link: Option<&str>) -> Entry {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: (1_700_000_000, 0),
            content: content.map(str::to_string),
            link: link.map(str::to_string),
        }
    }

    #[test]
    fn one_line_per_change_in_path_order() {
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        a.insert("/gone".to_string(), entry("file", 0o644, Some("1"), None));
        a.insert("/f".to_string(), entry("file", 0o644, Some("1"), None));
        b.insert("/f".to_string(), entry("file", 0o600, Some("2"), None));
        a.insert("/l".to_string(), entry("symlink", 0o777, None, Some("x")));
        let mut l = entry("symlink", 0o777, None, Some("y"));
        l.uid = 1000;
        l.mtime = (1_700_000_001, 5);
        b.insert("/l".to_string(), l);
        a.insert("/t".to_string(), entry("file", 0o644, Some("1"), None));
        b.insert("/t".to_string(), entry("dir", 0o755, None, None));
        b.insert("/new".to_string(), entry("dir", 0o755, None, None));
        let mut changes = Vec::new();
        compare(&a, &b, "", true, &mut changes);
        let r = DiffReport { changes };
        assert_eq!(
            r.to_string(),
            "M /f (content)\n\
             m /f (mode 0644->0600)\n\
             - /gone\n\
             m /l (uid 0->1000, mtime 1700000000->1700000001.000000005, link x->y)\n\
             + /new\n\
             m /t (type file->dir)\n"
        );
        let mut same = Vec::new();
        compare(&a, &a, "boot:", false, &mut same);
        assert!(same.is_empty());
    }
}
