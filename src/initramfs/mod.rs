//! The initramfs as the kernel reads it, kept whole: read, changed (its kernel modules
//! swapped for another kernel's) and written back.
//!
//! # Format
//!
//! An initramfs is one or more *segments* back to back
//! (Documentation/driver-api/early-userspace/buffer-format.rst): each a newc cpio archive
//! (magic `070701`/`070702`, [`cpio`]) either plain or compressed, the compression told by its
//! magic number ([`compress`]: gzip RFC 1952, zstd RFC 8878, the xz file format), with any
//! number of NULs between segments. `unpack_to_rootfs()` in `init/initramfs.c` reads them so:
//! a plain archive starts at a multiple of 4 bytes and runs to its `TRAILER!!!`; a compressed
//! segment is exactly one gzip member / zstd frame / xz stream (the decompressor reports how
//! many bytes it took, and the next segment starts there), and what it unpacks to is one or
//! more archives with NULs between them, ending with a `TRAILER!!!`. Later segments unpack
//! over earlier ones (Debian puts its CPU microcode in a plain first segment). Optionally,
//! all of it sits inside a legacy U-Boot ramdisk image (`uInitrd`, read and written in
//! `uimage.rs`).
//!
//! # Model
//!
//! [`Initramfs`] keeps everything: the segments in order, each with its [`Compression`] and
//! its [`Entry`]s (every header field, the data, the `TRAILER!!!` entries too), the NULs
//! between segments, and the U-Boot header. [`Initramfs::write`] emits a segment whose
//! entries and compression are what was read as its original bytes, so reading then writing
//! an untouched initramfs gives the same bytes; a changed segment is written as newc (inode
//! numbers renumbered deterministically, entries in the model's order) and compressed again
//! with the same compression ([`compress::encode`]: gzip level 9 with no name and mtime 0,
//! zstd level 3 with a checksum, xz preset 6 keeping the original stream's integrity check).
//!
//! # Why the module swap rewrites a segment
//!
//! [`Initramfs::replace_modules`] removes the old kernel's module directory from the segment
//! that holds it and adds the new one there, in place. Appending a second newc segment with
//! the new modules would also boot (the kernel unpacks appended segments over the first), but
//! the old kernel's modules would stay in the image, the archive would hold two module trees,
//! and the build's read-back check would have to guess which of them counts. Rewriting keeps
//! one tree, and the result reads back like any initramfs.
//!
//! # Bounds
//!
//! Reading never panics and never allocates by what a header says beyond what the input
//! holds: names are at most `PATH_MAX`, data grows as it is read, everything unpacked counts
//! against [`MAX_UNPACKED`] and [`MAX_ENTRIES`], and the xz/lzma decoders refuse headers
//! that ask for more than 256 MiB of memory.

#![warn(clippy::cast_possible_truncation)]

pub mod compress;
pub mod cpio;
mod uimage;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::BufReader;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

pub use compress::{Compression, XzCheck};

use compress::{Capped, Format, SliceDecoder};
use cpio::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, Source};

/// Most bytes an initramfs may unpack to, all segments together. Real ones are tens of MiB;
/// the HC1 has 2 GiB of RAM, which the kernel unpacks the initramfs into, and this model
/// holds all of it in memory.
pub const MAX_UNPACKED: u64 = 512 << 20;

/// Most entries an initramfs may have (real ones have a few thousand).
pub const MAX_ENTRIES: usize = 1 << 20;

/// Suffixes of kernel module files.
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// Most symlinks followed while resolving one path (the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// One cpio entry, every field of its newc header kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (without its NUL): `usr/lib/…`, `./usr/lib/…` or `/usr/lib/…`.
    pub name: Vec<u8>,
    /// The inode number read. [`Initramfs::write`] renumbers; it only tells hard links
    /// apart: regular files of one archive with nlink ≥ 2 and the same (dev, ino) are links
    /// of one file, and the data is on the last of them.
    pub ino: u32,
    /// File type and permission bits (`S_IFREG | 0o644`, …).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Device number of a character or block device node.
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// File contents, a symlink's target; empty on all links of a hard-linked file but the
    /// one that carries the data.
    pub data: Vec<u8>,
    /// Written with the `070702` magic (a checksum of the data), not `070701`.
    pub crc: bool,
}

impl Entry {
    /// The `TRAILER!!!` entry that ends an archive, as `gen_init_cpio` writes it.
    pub fn trailer() -> Entry {
        Entry {
            name: cpio::TRAILER.to_vec(),
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            data: Vec::new(),
            crc: false,
        }
    }

    pub fn is_trailer(&self) -> bool {
        self.name == cpio::TRAILER
    }

    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }

    /// The name without a leading `./` or `/` (lossy UTF-8).
    pub fn path(&self) -> String {
        String::from_utf8_lossy(&self.name)
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string()
    }
}

/// One segment: a newc archive, plain or compressed.
#[derive(Debug, Clone)]
pub struct Segment {
    pub compression: Compression,
    /// The entries, in order, `TRAILER!!!` entries included.
    pub entries: Vec<Entry>,
    /// The bytes read and the fingerprint of what they held.
    original: Original,
    /// NULs before the segment.
    zeros_before: usize,
}

#[derive(Clone)]
struct Original {
    bytes: Vec<u8>,
    fingerprint: Vec<u8>,
}

impl std::fmt::Debug for Original {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Original({} bytes)", self.bytes.len())
    }
}

/// What a segment's bytes would be, before compression, as a hash (with the compression).
fn fingerprint(c: Compression, newc: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(c.name().as_bytes());
    h.update([0u8]);
    h.update(newc);
    h.finalize().to_vec()
}

impl Segment {
    fn read_from(
        compression: Compression,
        entries: Vec<Entry>,
        bytes: &[u8],
        zeros_before: usize,
    ) -> Result<Segment> {
        let newc = cpio::newc_bytes(&entries)?;
        Ok(Segment {
            compression,
            entries,
            original: Original {
                bytes: bytes.to_vec(),
                fingerprint: fingerprint(compression, &newc),
            },
            zeros_before,
        })
    }

    /// Whether [`Initramfs::write`] would write this segment anew rather than as the bytes
    /// it was read from.
    pub fn is_changed(&self) -> Result<bool> {
        let newc = cpio::newc_bytes(&self.entries)?;
        Ok(self.original_for(&newc).is_none())
    }

    /// The original bytes, when they held `newc` with this compression.
    fn original_for(&self, newc: &[u8]) -> Option<&[u8]> {
        (fingerprint(self.compression, newc) == self.original.fingerprint)
            .then_some(self.original.bytes.as_slice())
    }

    /// The segment's bytes: the original ones when nothing changed.
    fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        let newc = cpio::newc_bytes(&self.entries)?;
        if let Some(b) = self.original_for(&newc) {
            return Ok(Cow::Borrowed(b));
        }
        let out = compress::encode(self.compression, &newc)
            .with_context(|| format!("cannot compress ({})", self.compression.name()))?;
        Ok(Cow::Owned(out))
    }
}

/// A whole initramfs image.
#[derive(Debug, Clone)]
pub struct Initramfs {
    pub segments: Vec<Segment>,
    /// The legacy U-Boot header around it, if any.
    wrapper: Option<uimage::Wrapper>,
    /// NULs after the last segment.
    zeros_after: usize,
}

/// A file to put in a kernel's module directory ([`Initramfs::replace_modules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Relative to the version directory: `kernel/drivers/usb/storage/uas.ko.zst`,
    /// `modules.dep`, …
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits (`0o644`); a file type may be given too: `S_IFREG` (the default),
    /// `S_IFLNK` (then `data` is the target) or `S_IFDIR` (`data` empty).
    pub mode: u32,
}

/// Read an initramfs image: the segments, plain or compressed, optionally inside a legacy
/// U-Boot ramdisk image. Fails (with the segment and byte it was at) on anything the kernel
/// would not unpack, and on compressions other than gzip, zstd and xz.
pub fn read(data: &[u8]) -> Result<Initramfs> {
    read_capped(data, MAX_UNPACKED)
}

/// [`read`] with a cap on the unpacked size (tests use a small one).
pub(crate) fn read_capped(data: &[u8], cap: u64) -> Result<Initramfs> {
    let (wrapper, body, base) = match uimage::Wrapper::parse(data)? {
        Some((w, body)) => (Some(w), body, crate::uboot::HEADER_LEN),
        None => (None, data, 0),
    };
    let mut left = cap;
    let mut entries_left = MAX_ENTRIES;
    let mut segments = Vec::new();
    let mut pos = 0usize;
    loop {
        let rest = body.get(pos..).unwrap_or_default();
        let zeros = rest.iter().take_while(|&&b| b == 0).count();
        let start = pos + zeros;
        let Some(rest) = body.get(start..).filter(|r| !r.is_empty()) else {
            if segments.is_empty() {
                bail!("no cpio archive in it (it is empty or all NULs)");
            }
            return Ok(Initramfs {
                segments,
                wrapper,
                zeros_after: zeros,
            });
        };
        let n = segments.len() + 1;
        let (seg, len) = read_segment(rest, start, zeros, &mut left, cap, &mut entries_left)
            .with_context(|| format!("segment {n} (at byte {})", base + start))?;
        segments.push(seg);
        pos = start + len;
    }
}

/// Read the segment at the start of `rest` (byte `start` of the image); returns it and its
/// length.
fn read_segment(
    rest: &[u8],
    start: usize,
    zeros_before: usize,
    left: &mut u64,
    cap: u64,
    entries_left: &mut usize,
) -> Result<(Segment, usize)> {
    let (compression, entries, len) =
        if rest.starts_with(cpio::MAGIC) || rest.starts_with(cpio::MAGIC_CRC) {
            if !start.is_multiple_of(4) {
                bail!(
                    "a plain newc archive must start at a multiple of 4 bytes (the kernel \
                     refuses it otherwise)"
                );
            }
            let mut src = Source::new(Capped::new(rest, left, cap));
            let mut entries = Vec::new();
            cpio::read_archive(&mut src, &mut entries, entries_left)?;
            let len = usize::try_from(src.offset).context("segment size")?;
            (Compression::None, entries, len)
        } else {
            let compression = match compress::sniff(rest) {
                Some(Format::Gzip) => Compression::Gzip,
                Some(Format::Zstd) => Compression::Zstd,
                Some(Format::Xz) => Compression::Xz(XzCheck::of_stream(rest)?),
                Some(f) => bail!(
                    "{}-compressed; hc1img reads newc archives plain or compressed with gzip, \
                     zstd or xz",
                    f.name()
                ),
                None => bail!(
                    "neither a newc cpio archive nor gzip, zstd or xz data (it starts with {})",
                    hex::encode(rest.get(..6).unwrap_or(rest))
                ),
            };
            let format = match compression {
                Compression::Gzip => Format::Gzip,
                Compression::Zstd => Format::Zstd,
                _ => Format::Xz,
            };
            let dec = SliceDecoder::new(format, rest)?;
            let mut src = Source::new(BufReader::with_capacity(
                1 << 16,
                Capped::new(dec, left, cap),
            ));
            let entries = cpio::read_stream(&mut src, entries_left)
                .with_context(|| format!("{} data", format.name()))?;
            let len = src.into_inner().into_inner().inner.consumed();
            (compression, entries, len)
        };
    if len == 0 {
        bail!("internal error: an empty segment");
    }
    let bytes = rest
        .get(..len)
        .context("internal error: segment past the input")?;
    let seg = Segment::read_from(compression, entries, bytes, zeros_before)?;
    Ok((seg, len))
}

impl Initramfs {
    /// The image's bytes: unchanged segments as they were read, changed ones rewritten
    /// ([`Segment`]); the NULs between segments kept (a plain archive after a segment whose
    /// length changed gets up to 3 more, to start at a multiple of 4); the U-Boot header, if
    /// any, with the new size and CRCs.
    pub fn write(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let base = if self.wrapper.is_some() {
            out.resize(crate::uboot::HEADER_LEN, 0);
            crate::uboot::HEADER_LEN
        } else {
            0
        };
        for (n, seg) in self.segments.iter().enumerate() {
            let bytes = seg.bytes().with_context(|| format!("segment {}", n + 1))?;
            let mut zeros = seg.zeros_before;
            if seg.compression == Compression::None {
                zeros += cpio::pad4(out.len() - base + zeros);
            }
            out.resize(out.len() + zeros, 0);
            out.extend_from_slice(&bytes);
        }
        out.resize(out.len() + self.zeros_after, 0);
        if let Some(w) = &self.wrapper {
            w.finish(&mut out)?;
        }
        Ok(out)
    }

    /// Every entry but the trailers, segment after segment.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| !e.is_trailer())
    }

    /// The kernel versions `V` whose module directory `usr/lib/modules/V/` or
    /// `lib/modules/V/` is in the archive (as a directory entry or as the parent of some
    /// entry), through the archive's own symlinks (`lib -> usr/lib`). Sorted.
    pub fn module_versions(&self) -> Vec<String> {
        let paths = Paths::new(self);
        let mut out = BTreeSet::new();
        for e in self.entries() {
            let Some(r) = paths.resolve(&e.name) else {
                continue;
            };
            if let Some((i, v)) = version_at(&r)
                && (r.len() > i + 1 || e.is_dir())
            {
                out.insert(v.to_string());
            }
        }
        out.into_iter().collect()
    }

    /// The module files (`*.ko`, `*.ko.xz`, `*.ko.zst`, `*.ko.gz`) under the module directory
    /// of `version`, relative to it (`kernel/drivers/usb/storage/usb-storage.ko.zst`). Sorted.
    pub fn modules(&self, version: &str) -> Vec<String> {
        let paths = Paths::new(self);
        let mut out = BTreeSet::new();
        for e in self.entries().filter(|e| e.is_file()) {
            let Some(r) = paths.resolve(&e.name) else {
                continue;
            };
            if let Some((i, v)) = version_at(&r)
                && v == version
                && let Some(rel) = r.get(i + 1..).filter(|rel| !rel.is_empty())
                && r.last()
                    .is_some_and(|b| MODULE_SUFFIXES.iter().any(|s| b.ends_with(s)))
            {
                out.insert(rel.join("/"));
            }
        }
        out.into_iter().collect()
    }

    /// Replace the module directory of kernel `old` with one for kernel `new` holding
    /// `files`: every entry under the old directory goes (whichever parent it is under,
    /// `usr/lib/modules` or `lib/modules`, and in whichever segment); the new directory is
    /// added where the old one was (same segment, same parent and name prefix, at the
    /// position of its first entry), the directory first, then `files` in the order given,
    /// each after the directories it needs. Directories made here are root-owned, mode 0755;
    /// every new entry has the old directory's mtime (that of its first entry when the
    /// archive has no entry for the directory itself). Links of a hard-linked file that
    /// stay keep the data and a correct link count.
    ///
    /// Fails when the archive has no modules for `old`, when it already has some for `new`
    /// (and `new` is not `old`), and on a path or mode in `files` that cannot be written.
    pub fn replace_modules(&mut self, old: &str, new: &str, files: Vec<NewFile>) -> Result<()> {
        let versions = self.module_versions();
        if !versions.iter().any(|v| v == old) {
            bail!(
                "the initramfs has no kernel modules for version {old:?} (it has {})",
                if versions.is_empty() {
                    "none".to_string()
                } else {
                    format!("modules for {}", versions.join(", "))
                }
            );
        }
        check_component(new).with_context(|| format!("kernel version {new:?}"))?;
        if new != old && versions.iter().any(|v| v == new) {
            bail!("the initramfs already has kernel modules for version {new:?}");
        }
        check_files(&files)?;

        // Everything under the old directory, and the entry of the directory itself.
        let paths = Paths::new(self);
        let mut gone: Vec<HashSet<usize>> = vec![HashSet::new(); self.segments.len()];
        let mut first: Option<(usize, usize, Vec<String>)> = None;
        let mut dir: Option<(usize, usize, Vec<String>)> = None;
        for (s, seg) in self.segments.iter().enumerate() {
            for (i, e) in seg.entries.iter().enumerate() {
                if e.is_trailer() {
                    continue;
                }
                let Some(r) = paths.resolve(&e.name) else {
                    continue;
                };
                let Some((at, v)) = version_at(&r) else {
                    continue;
                };
                if v != old {
                    continue;
                }
                let target = r.get(..=at).unwrap_or_default().to_vec();
                if first.is_none() {
                    first = Some((s, i, target.clone()));
                }
                if dir.is_none() && r.len() == at + 1 && e.is_dir() {
                    dir = Some((s, i, target));
                }
                if let Some(g) = gone.get_mut(s) {
                    g.insert(i);
                }
            }
        }
        let Some((s, i, target)) = dir.or(first) else {
            bail!("internal error: no entry of the module directory of {old:?}");
        };
        let chosen = self
            .segments
            .get(s)
            .and_then(|seg| seg.entries.get(i))
            .context("internal error: module directory entry")?;
        let new_dir = paths
            .renamed_dir(&chosen.name, &target, new)
            .with_context(|| {
                format!(
                    "cannot tell where to put the modules of {new:?} from the entry {:?}",
                    chosen.path()
                )
            })?;
        let (mtime, crc) = (chosen.mtime, chosen.crc);
        drop(paths);

        for (seg, g) in self.segments.iter_mut().zip(&gone) {
            if g.is_empty() {
                continue;
            }
            keep_links_whole(&mut seg.entries, g);
        }
        // Where the first removed entry of segment `s` was, once the removed ones are gone.
        // (No removed entry comes before the first one: its index stays.)
        let insert_at = gone
            .get(s)
            .and_then(|g| g.iter().copied().min())
            .unwrap_or(0);
        for (seg, g) in self.segments.iter_mut().zip(&gone) {
            let mut j = 0;
            seg.entries.retain(|_| {
                let keep = !g.contains(&j);
                j += 1;
                keep
            });
        }
        let added = module_dir_entries(&new_dir, files, mtime, crc);
        let seg = self
            .segments
            .get_mut(s)
            .context("internal error: module segment")?;
        let at = insert_at.min(seg.entries.len());
        seg.entries.splice(at..at, added);
        Ok(())
    }
}

impl Initramfs {
    /// Add a module directory for kernel `new` holding `files` to an archive that has none
    /// (an initramfs made without modules, or by `autodetect` on a machine that needed none):
    /// under `usr/lib/modules` (or `lib/modules` when the archive has a real `lib` directory
    /// and no `usr/lib`), in the last segment before its `TRAILER!!!`, with the parent
    /// directories the kernel's unpacker needs (it creates no missing parents), root-owned,
    /// mode 0755, all with the segment's newest mtime and its header format (070701/070702).
    ///
    /// Fails when the archive already has kernel modules (use [`Initramfs::replace_modules`]),
    /// and on a path or mode in `files` that cannot be written.
    pub fn add_modules(&mut self, new: &str, files: Vec<NewFile>) -> Result<()> {
        let versions = self.module_versions();
        if !versions.is_empty() {
            bail!(
                "the initramfs already has kernel modules (for {}): replace them instead",
                versions.join(", ")
            );
        }
        check_component(new).with_context(|| format!("kernel version {new:?}"))?;
        check_files(&files)?;
        let paths = Paths::new(self);
        let mut dirs: HashSet<String> = HashSet::new();
        let mut real_lib = false;
        for e in self.entries() {
            let Some(r) = paths.resolve(&e.name) else {
                continue;
            };
            if e.is_dir() {
                dirs.insert(r.join("/"));
            }
            if e.is_dir() && r == ["lib"] {
                real_lib = true;
            }
        }
        drop(paths);
        let parent = if real_lib && !dirs.contains("usr/lib") {
            "lib/modules"
        } else {
            "usr/lib/modules"
        };
        let Some(seg) = self
            .segments
            .iter_mut()
            .rev()
            .find(|s| s.entries.iter().any(|e| !e.is_trailer()))
        else {
            bail!("the initramfs has no archive to add the modules of {new:?} to");
        };
        let mtime = seg.entries.iter().map(|e| e.mtime).max().unwrap_or(0);
        let crc = seg.entries.iter().any(|e| e.crc);
        let mut added = Vec::new();
        let comps: Vec<&str> = parent.split('/').collect();
        for j in 1..=comps.len() {
            let d = comps.get(..j).unwrap_or_default().join("/");
            if !dirs.contains(&d) {
                let mut e = module_dir_entries(&d, Vec::new(), mtime, crc);
                added.append(&mut e);
            }
        }
        added.extend(module_dir_entries(
            &format!("{parent}/{new}"),
            files,
            mtime,
            crc,
        ));
        let at = seg
            .entries
            .iter()
            .position(Entry::is_trailer)
            .unwrap_or(seg.entries.len());
        seg.entries.splice(at..at, added);
        Ok(())
    }
}

/// The version directory in a resolved path `[usr, lib, modules, V, …]` or
/// `[lib, modules, V, …]`: the index of `V`, and `V`.
fn version_at(r: &[String]) -> Option<(usize, &str)> {
    match r {
        [a, b, c, v, ..] if a == "usr" && b == "lib" && c == "modules" => Some((3, v)),
        [a, b, v, ..] if a == "lib" && b == "modules" => Some((2, v)),
        _ => None,
    }
}

/// Paths inside the archive, resolved through its symlinks as the kernel's unpacker would
/// meet them (a later entry replaces an earlier one of the same path).
struct Paths {
    links: HashMap<String, String>,
}

impl Paths {
    fn new(ifs: &Initramfs) -> Paths {
        let mut p = Paths {
            links: HashMap::new(),
        };
        for e in ifs.entries() {
            let Some(r) = p.resolve(&e.name) else {
                continue;
            };
            let key = r.join("/");
            if e.is_symlink() {
                p.links
                    .insert(key, String::from_utf8_lossy(&e.data).into_owned());
            } else {
                p.links.remove(&key);
            }
        }
        p
    }

    /// `name` resolved: its directories through the archive's symlinks, its last component
    /// as is. `None` for a symlink loop.
    fn resolve(&self, name: &[u8]) -> Option<Vec<String>> {
        let name = String::from_utf8_lossy(name);
        let mut comps: Vec<String> = name
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        let Some(last) = comps.pop() else {
            return Some(Vec::new());
        };
        let mut dir = self.resolve_dirs(comps)?;
        if last == ".." {
            dir.pop();
        } else {
            dir.push(last);
        }
        Some(dir)
    }

    /// Directory components resolved through symlinks (absolute targets from the root).
    fn resolve_dirs(&self, comps: Vec<String>) -> Option<Vec<String>> {
        let mut todo: VecDeque<String> = comps.into();
        let mut out: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    out.pop();
                    continue;
                }
                _ => {}
            }
            out.push(c);
            if let Some(t) = self.links.get(&out.join("/")) {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return None;
                }
                out.pop();
                if t.starts_with('/') {
                    out.clear();
                }
                for tc in t.split('/').rev() {
                    todo.push_front(tc.to_string());
                }
            }
        }
        Some(out)
    }

    /// The name for version `new`'s directory, from `name`, an entry at or under the old
    /// version directory (resolved: `target`): the prefix of `name` that resolves to the
    /// directory, its last component replaced.
    fn renamed_dir(&self, name: &[u8], target: &[String], new: &str) -> Result<String> {
        let name = std::str::from_utf8(name).context("the name is not UTF-8")?;
        let pieces: Vec<&str> = name.split('/').collect();
        for k in 0..pieces.len() {
            let prefix = pieces.get(..=k).unwrap_or_default();
            if self.resolve(prefix.join("/").as_bytes()).as_deref() == Some(target) {
                let mut out: Vec<&str> = pieces.get(..k).unwrap_or_default().to_vec();
                if target.last().map(String::as_str) != pieces.get(k).copied() {
                    bail!("its version directory is not named as a version");
                }
                out.push(new);
                return Ok(out.join("/"));
            }
        }
        bail!("no prefix of it names the version directory")
    }
}

/// A kernel version usable as a directory name.
fn check_component(c: &str) -> Result<()> {
    if c.is_empty() || c == "." || c == ".." || c.contains('/') || c.contains('\0') {
        bail!("not a directory name");
    }
    Ok(())
}

/// The paths and modes of `files` can be written: relative, no `.`/`..`/empty components,
/// no duplicates, no file where a directory is needed, file types regular, symlink or
/// directory.
fn check_files(files: &[NewFile]) -> Result<()> {
    let mut seen = HashSet::new();
    let mut leaves = HashSet::new();
    for f in files {
        let what = || format!("new module file {:?}", f.path);
        if f.path.is_empty()
            || f.path.contains('\0')
            || f.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("{}: not a relative path of plain components", what());
        }
        if !seen.insert(f.path.as_str()) {
            bail!("{}: given twice", what());
        }
        match f.mode & S_IFMT {
            0 | S_IFREG => {}
            S_IFLNK if !f.data.is_empty() => {}
            S_IFDIR if f.data.is_empty() => {}
            S_IFLNK | S_IFDIR => bail!("{}: a symlink needs a target, a directory no data", what()),
            t => bail!("{}: file type {t:o} not supported", what()),
        }
        if f.mode & S_IFMT != S_IFDIR {
            leaves.insert(f.path.as_str());
        }
    }
    for f in files {
        let mut at = 0;
        while let Some(slash) = f.path.get(at..).and_then(|r| r.find('/')) {
            let dir = f.path.get(..at + slash).unwrap_or_default();
            if leaves.contains(dir) {
                bail!("new module file {:?}: {dir:?} is not a directory", f.path);
            }
            at += slash + 1;
        }
    }
    Ok(())
}

/// Before the entries `gone` are removed: links of a hard-linked file that stay get the
/// data (on the last of them) when it was on a removed link, and a link count less the
/// removed links.
fn keep_links_whole(entries: &mut [Entry], gone: &HashSet<usize>) {
    let mut groups: HashMap<(usize, u32, u32, u32), Vec<usize>> = HashMap::new();
    let mut archive = 0;
    for (i, e) in entries.iter().enumerate() {
        if e.is_trailer() {
            archive += 1;
        } else if e.is_file() && e.nlink >= 2 {
            groups
                .entry((archive, e.dev_major, e.dev_minor, e.ino))
                .or_default()
                .push(i);
        }
    }
    for members in groups.values() {
        let (removed, kept): (Vec<usize>, Vec<usize>) =
            members.iter().partition(|i| gone.contains(i));
        let Some(&last) = kept.last() else {
            continue;
        };
        if removed.is_empty() {
            continue;
        }
        let n = u32::try_from(removed.len()).unwrap_or(u32::MAX);
        for &k in &kept {
            if let Some(e) = entries.get_mut(k) {
                e.nlink = e.nlink.saturating_sub(n).max(1);
            }
        }
        let data_kept = kept
            .iter()
            .any(|&k| entries.get(k).is_some_and(|e| !e.data.is_empty()));
        let holder = removed
            .iter()
            .rev()
            .copied()
            .find(|&r| entries.get(r).is_some_and(|e| !e.data.is_empty()));
        if !data_kept && let Some(h) = holder {
            let data = entries
                .get_mut(h)
                .map(|e| std::mem::take(&mut e.data))
                .unwrap_or_default();
            if let Some(e) = entries.get_mut(last) {
                e.data = data;
            }
        }
    }
}

/// The entries of a new module directory `dir` (its name in the archive) holding `files`.
fn module_dir_entries(dir: &str, files: Vec<NewFile>, mtime: u32, crc: bool) -> Vec<Entry> {
    let entry = |name: String, mode: u32, data: Vec<u8>| Entry {
        name: name.into_bytes(),
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
        mtime,
        dev_major: 0,
        dev_minor: 0,
        rdev_major: 0,
        rdev_minor: 0,
        data,
        crc,
    };
    let mut out = vec![entry(dir.to_string(), S_IFDIR | 0o755, Vec::new())];
    // Directories made so far, relative to `dir` ("" is `dir`), and their index in `out`.
    let mut dirs: HashMap<String, usize> = HashMap::from([(String::new(), 0)]);
    for f in files {
        let comps: Vec<&str> = f.path.split('/').collect();
        for j in 1..comps.len() {
            let rel = comps.get(..j).unwrap_or_default().join("/");
            if !dirs.contains_key(&rel) {
                dirs.insert(rel.clone(), out.len());
                out.push(entry(format!("{dir}/{rel}"), S_IFDIR | 0o755, Vec::new()));
            }
        }
        let ty = match f.mode & S_IFMT {
            0 => S_IFREG,
            t => t,
        };
        let mode = ty | (f.mode & 0o7777);
        if ty == S_IFDIR {
            if let Some(e) = dirs.get(&f.path).and_then(|&ix| out.get_mut(ix)) {
                e.mode = mode;
                continue;
            }
            dirs.insert(f.path.clone(), out.len());
        }
        out.push(entry(format!("{dir}/{}", f.path), mode, f.data));
    }
    // A directory's link count: 2 and one per subdirectory.
    let names: HashMap<Vec<u8>, usize> = out
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_dir())
        .map(|(i, e)| (e.name.clone(), i))
        .collect();
    let parents: Vec<usize> = out
        .iter()
        .filter(|e| e.is_dir())
        .filter_map(|e| {
            let name = std::str::from_utf8(&e.name).ok()?;
            let (parent, _) = name.rsplit_once('/')?;
            names.get(parent.as_bytes()).copied()
        })
        .collect();
    for p in parents {
        if let Some(e) = out.get_mut(p) {
            e.nlink = e.nlink.saturating_add(1);
        }
    }
    out
}
