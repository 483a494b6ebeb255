//! Tar import: one pass over the inflated tar stream turns every entry into a node of the
//! [`Tree`], while regular files' bytes go straight to a [`DataSink`] (the ext4 writer).
//!
//! Follows POSIX pax (IEEE 1003.1 `pax` format), GNU tar long names (handled by the `tar`
//! crate), and bsdtar's extraction semantics: leading `/` stripped, entries that escape the
//! root with `..` refused, a later entry for the same path replaces the earlier one (a
//! directory over a directory only updates metadata), entries below a symlink or a file are
//! refused. Every refusal and replacement is reported in [`ImportReport::warnings`].
//!
//! Hostile archives are bounded as bsdtar and GNU tar bound them: nothing a header declares
//! sizes an allocation (files held in memory are read as they arrive, under
//! [`MAX_BOOT_BYTES`] and [`MAX_CAPTURED_BYTES`]); owners above 2^32 - 1 are refused, not
//! wrapped; times outside what ext4 stores are clamped with a warning, as the kernel clamps
//! them; every name in a message is escaped ([`tree::escaped`]), the tar crate's errors too;
//! `/boot` names must be UTF-8 (the FAT partition stores UTF-16 names); parent directories
//! the archive does not list are recorded ([`ImportReport::implied_dirs`]) so the build can
//! give them its timestamp.
//! Extended attributes come from pax `SCHILY.xattr.NAME` and `LIBARCHIVE.xattr.NAME` (the
//! latter base64-encoded) records; POSIX ACLs from `SCHILY.acl.access` / `SCHILY.acl.default`
//! ([`super::acl`]; NFSv4 ACLs, `SCHILY.acl.ace`, have no ext4 form and are left out with a
//! warning); sub-second mtimes from the pax `mtime` record, pre-1970 ones also from GNU
//! base-256 header fields ([`header_time`]). Sparse members, GNU tar's four formats, are
//! imported with their holes: a 4 KiB block that is all hole gets no block in the image
//! ([`store`], [`super::sparse`]).
//!
//! `/boot` files are held once, at their exact size ([`BootFile::data`] is shared): the builds
//! of one pass over a tarball (`hc1img build A B C`, [`crate::rootfs::fanout`]) import the
//! same bytes, so a [`BootShare`] lets each build keep a reference to the copy another build
//! already holds, compared byte for byte as the entry streams (design.md, "Every role from one
//! pass"; issue 19: memory stays near one build's whatever the number of profiles).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};

use super::{acl, sparse};
use crate::tree::{self, DataRef, FileData, Meta, Node, NodeId, NodeKind, Timestamp, Tree};

/// The most the `/boot` files may add up to: they are held in memory for the FAT partition.
pub const MAX_BOOT_BYTES: u64 = 1 << 30;
/// The most one file that the edits read (`/etc/passwd`, …) may hold: it is held in memory.
pub const MAX_CAPTURED_BYTES: u64 = 64 << 20;

/// Where file data goes while the tarball streams (the ext4 writer in a build).
pub trait DataSink {
    /// Store exactly `len` bytes read from `src`.
    fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef>;

    /// The contents of a regular file: held in memory, or read back from where
    /// [`Self::write_data`] stored them (a small file: the package install compares `backup`
    /// files before it removes them).
    fn read_data(&self, data: &FileData) -> Result<Vec<u8>>;

    /// Take back the storage of data that no reachable node of `tree` refers to any more.
    /// Call it only where every `DataRef` still meant for the tree is in it (between two
    /// packages, not during one). Storage that is never reused need do nothing.
    fn reclaim(&mut self, _tree: &Tree) -> Result<()> {
        Ok(())
    }
}

impl DataSink for crate::ext4::Ext4Writer {
    fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef> {
        crate::ext4::Ext4Writer::write_data(self, src, len)
    }

    fn read_data(&self, data: &FileData) -> Result<Vec<u8>> {
        crate::ext4::Ext4Writer::read_data(self, data)
    }

    fn reclaim(&mut self, tree: &Tree) -> Result<()> {
        crate::ext4::Ext4Writer::reclaim(self, tree).map(drop)
    }
}

/// What the import does with one path, decided by the Plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Into the tree, file data into the sink.
    Keep,
    /// Into the tree, file data held in memory because the Plan edits it.
    Capture,
    /// Not imported at all.
    Drop,
    /// A file for the boot partition: held in memory, keyed by its path below the boot
    /// directory; not put in the tree.
    Boot,
}

/// A file destined for the FAT boot partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// The contents, shared with the other builds of a pass that read the same bytes.
    pub data: Arc<[u8]>,
    pub mtime: Timestamp,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Newest mtime seen, the default for timestamps the tool sets itself.
    pub newest_mtime: i64,
    /// Boot files by path relative to the boot directory (`zImage`, `dtbs/x.dtb`).
    pub boot: BTreeMap<String, BootFile>,
    pub warnings: Vec<String>,
    /// Directories the archive did not list (made as parents of its entries), the root among
    /// them unless listed: they take the build's timestamp ([`date_implied_dirs`]).
    pub implied_dirs: std::collections::BTreeSet<NodeId>,
}

/// Give the directories the archive did not list the build's timestamp (known only after
/// the stream, when it is the newest mtime).
pub fn date_implied_dirs(tree: &mut Tree, report: &ImportReport, timestamp: i64) {
    for &id in &report.implied_dirs {
        tree.node_mut(id).meta.mtime = Timestamp::from_secs(timestamp);
    }
}

/// Clamp a time into what ext4's 256-byte inodes store (see [`crate::ext4::clamp_time`]),
/// warning when it changed.
fn clamp_time(t: Timestamp, shown: &str, warnings: &mut Vec<String>) -> Timestamp {
    let c = crate::ext4::clamp_time(t);
    if c != t {
        warnings.push(format!(
            "{shown}: mtime {} is outside what ext4 stores (years 1901 to 2446), clamped to {}",
            t.sec, c.sec
        ));
    }
    c
}

/// Read exactly `size` bytes of an entry that is held in memory, refusing more than `limit`
/// before reading (the header's size never sizes an allocation: the buffer grows as the
/// bytes arrive).
fn read_held(
    entry: &mut dyn Read,
    size: u64,
    limit: u64,
    shown: &str,
    what: &str,
) -> Result<Vec<u8>> {
    if size > limit {
        bail!(
            "{shown}: {size} bytes, but {what} are held in memory and may hold at most {} bytes; repack the tarball without it",
            limit
        );
    }
    let mut data = Vec::new();
    entry.take(size).read_to_end(&mut data).map_err(|e| {
        anyhow!(
            "{shown}: cannot read file data: {}",
            tree::escaped_str(&e.to_string())
        )
    })?;
    if data.len() as u64 != size {
        bail!(
            "{shown}: truncated file data ({} of {size} bytes)",
            data.len()
        );
    }
    Ok(data)
}

/// `/boot` file contents already held by the builds of one pass over a tarball, by path below
/// the boot directory. A build that reads a file whose bytes equal a held copy keeps that copy
/// (an [`Arc`] clone) instead of its own, so the builds of one pass hold each `/boot` file
/// once. Only equal bytes are shared: the comparison is the oracle, not the path.
#[derive(Debug, Default)]
pub struct BootShare {
    held: Mutex<BTreeMap<String, Vec<Arc<[u8]>>>>,
}

impl BootShare {
    /// The held copy of `rel` of `size` bytes, if any (the one added last).
    fn candidate(&self, rel: &str, size: u64) -> Option<Arc<[u8]>> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(rel)?
            .iter()
            .rev()
            .find(|d| d.len() as u64 == size)
            .cloned()
    }

    /// Keep `data` for `rel`: a held copy with the same bytes if there is one (another build
    /// read it meanwhile), else `data` itself, at its exact size, now held.
    fn keep(&self, rel: &str, data: Vec<u8>) -> Arc<[u8]> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let list = held.entry(rel.to_string()).or_default();
        if let Some(d) = list.iter().find(|d| ***d == *data) {
            return d.clone();
        }
        let d: Arc<[u8]> = Arc::from(data);
        list.push(d.clone());
        d
    }
}

/// Read exactly `size` bytes of the `/boot` entry `rel` (after the limit check of
/// [`read_held`]): while they equal the copy `share` holds, nothing is allocated and that
/// copy is returned; from the first difference on (or without a copy), the bytes are read
/// into a buffer of their own that grows as they arrive, then held in `share`.
fn read_boot(
    entry: &mut dyn Read,
    size: u64,
    limit: u64,
    shown: &str,
    rel: &str,
    share: &BootShare,
) -> Result<Arc<[u8]>> {
    if size > limit {
        bail!(
            "{shown}: {size} bytes, but the /boot files together are held in memory and may hold at most {limit} bytes; repack the tarball without it"
        );
    }
    let cand = share.candidate(rel, size);
    let mut own: Option<Vec<u8>> = cand.is_none().then(Vec::new);
    let mut buf = vec![0u8; (64 << 10).min(size as usize)];
    let mut pos = 0usize;
    while (pos as u64) < size {
        let want = buf.len().min((size - pos as u64) as usize);
        let n = match entry.read(&mut buf[..want]) {
            Ok(0) => bail!("{shown}: truncated file data ({pos} of {size} bytes)"),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!(
                "{shown}: cannot read file data: {}",
                tree::escaped_str(&e.to_string())
            ),
        };
        match (&mut own, &cand) {
            (Some(v), _) => v.extend_from_slice(&buf[..n]),
            (None, Some(c)) if c[pos..pos + n] == buf[..n] => {}
            (None, c) => {
                let mut v = c.as_ref().map_or_else(Vec::new, |c| c[..pos].to_vec());
                v.extend_from_slice(&buf[..n]);
                own = Some(v);
            }
        }
        pos += n;
    }
    Ok(match (own, cand) {
        (None, Some(c)) => c,
        (own, _) => share.keep(rel, own.unwrap_or_default()),
    })
}

/// The tar stream, shared between the tar crate (which reads headers and data through it) and
/// the import, which reads what the crate's raw mode does not know: the extension blocks
/// after an old GNU sparse header ([`sparse_map`]). The crate never reads ahead of the
/// header it hands out, so the next bytes after one are the extension blocks.
struct Tap<'a>(std::cell::RefCell<&'a mut dyn Read>);

impl Read for &Tap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// A header's mtime, read as GNU tar writes it: octal, or base-256 (first byte 0x80 for a
/// positive number, 0xff for a negative one in two's complement, GNU tar manual, "Basic Tar
/// Format") — the `tar` crate reads only the low 8 bytes of the latter, unsigned. An
/// unreadable field is 0; one beyond what an `i64` holds is clamped (and then clamped again
/// to what ext4 stores, with a warning).
fn header_time(header: &tar::Header) -> i64 {
    let f = &header.as_old().mtime;
    match f[0] {
        0xff => {
            // Negative: the 96-bit two's complement number, sign-extended into i128.
            let mut b = [0xffu8; 16];
            b[4..].copy_from_slice(f);
            let v = i128::from_be_bytes(b);
            i64::try_from(v).unwrap_or(i64::MIN)
        }
        0x80 => {
            let mut b = [0u8; 16];
            b[4..].copy_from_slice(f);
            b[4] &= 0x7f;
            i64::try_from(i128::from_be_bytes(b)).unwrap_or(i64::MAX)
        }
        _ => header
            .mtime()
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
    }
}

/// The sparse map of a regular file's member (src/rootfs/sparse.rs): the old GNU format's
/// from its header and the extension blocks read from `tap`, the pax formats' from
/// `records` or (1.0) from the start of the data; a plain member is one chunk. Checked
/// against the bytes the member holds.
fn sparse_map(
    tap: &Tap<'_>,
    entry: &mut dyn Read,
    header: &tar::Header,
    records: &[(Vec<u8>, Vec<u8>)],
) -> std::result::Result<sparse::Map, String> {
    let stored = header
        .entry_size()
        .map_err(|e| tree::escaped_str(&e.to_string()))?;
    let (map, data) = if header.entry_type() == tar::EntryType::GNUSparse {
        let gnu = header
            .as_gnu()
            .ok_or("sparse member (type S) without a GNU header")?;
        let map = sparse::old_gnu(gnu, || {
            let mut b = [0u8; 512];
            tap.0.borrow_mut().read_exact(&mut b)?;
            Ok(b)
        })?;
        (map, stored)
    } else {
        match sparse::from_pax(records)? {
            None => return Ok(sparse::Map::whole(stored)),
            Some(sparse::PaxSparse::Map(m)) => (m, stored),
            Some(sparse::PaxSparse::InData(real)) => {
                let (m, took) = sparse::read_map_1_0(entry, real, stored)?;
                (m, stored - took)
            }
        }
    };
    map.check(data)?;
    Ok(map)
}

/// Store the ACLs an entry's `SCHILY.acl.*` records gave (src/rootfs/acl.rs) as its
/// `system.posix_acl_*` xattrs, the access ACL setting the mode's rwx bits; a default ACL
/// only on a directory, as the kernel has it (true when one was left out for that).
fn apply_acls(
    error: Option<acl::AclError>,
    mut acls: acl::Acls,
    is_dir: bool,
    meta: &mut Meta,
) -> std::result::Result<bool, acl::AclError> {
    if let Some(e) = error {
        return Err(e);
    }
    if !acls.access.is_empty() {
        let v = acl::access_xattr(&mut acls.access, &mut meta.perm)?;
        if let Some(v) = v {
            meta.xattrs.insert(b"system.posix_acl_access".to_vec(), v);
        }
    }
    if acls.default.is_empty() {
        return Ok(false);
    }
    if !is_dir {
        return Ok(true);
    }
    let v = acl::default_xattr(&mut acls.default)?;
    meta.xattrs.insert(b"system.posix_acl_default".to_vec(), v);
    Ok(false)
}

/// Store a file's data through `sink`: a plain file in one piece; a sparse one block range
/// by block range ([`sparse::Map::data_blocks`]), the 4 KiB blocks that are all hole left
/// as holes ([`crate::tree::BlockRun::hole`]).
fn store(sink: &mut dyn DataSink, data: &mut sparse::Expand, map: &sparse::Map) -> Result<DataRef> {
    if map.is_whole() {
        return sink.write_data(data, map.real_size);
    }
    const BLOCK: u64 = 4096;
    anyhow::ensure!(
        map.real_size.div_ceil(BLOCK) <= u64::from(u32::MAX),
        "a {}-byte file is larger than an ext4 file of 4 KiB blocks may be (16 TiB)",
        map.real_size
    );
    let mut runs = Vec::new();
    let hole = |runs: &mut Vec<crate::tree::BlockRun>, mut n: u64| {
        while n > 0 {
            let len = u32::try_from(n).unwrap_or(u32::MAX);
            runs.push(crate::tree::BlockRun::hole(len));
            n -= u64::from(len);
        }
    };
    let mut next = 0u64; // the first block not stored yet
    for (first, end) in map.data_blocks(BLOCK) {
        hole(&mut runs, first - next);
        data.skip_hole(first * BLOCK);
        let len = (end * BLOCK).min(map.real_size) - first * BLOCK;
        runs.extend(sink.write_data(&mut data.take(len), len)?.runs);
        next = end;
    }
    hole(&mut runs, map.real_size.div_ceil(BLOCK) - next);
    Ok(DataRef {
        size: map.real_size,
        runs,
    })
}

/// The tar crate's error messages may quote raw header bytes: escape them.
fn tar_error(what: &str, e: &std::io::Error) -> anyhow::Error {
    anyhow!("{what}: {}", tree::escaped_str(&e.to_string()))
}

/// Parse a pax decimal time (`1700000000.5`, possibly negative) into a timestamp.
fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut nsec: u32 = digits.parse().ok()?;
    let mut sec = sec;
    if int.starts_with('-') && nsec > 0 {
        // -1.25 means 1.25 s before the epoch: sec -2, nsec 0.75e9.
        sec -= 1;
        nsec = 1_000_000_000 - nsec;
    }
    Some(Timestamp { sec, nsec })
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s: Vec<u8> = s.iter().copied().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// What the import asks its caller about each entry. A plain route function (what the
/// tarball's import uses) is one; the package installer (`packages::install`) is
/// another: in the one pass over a package it reads the metadata members, checks each entry
/// against the tree as it is when the entry arrives (pacman's file conflicts) and hashes the
/// `backup` files.
pub trait Hooks {
    /// Called first for every entry other than pax and GNU name records, before the import
    /// looks at its name: `raw` is the name as archived (pax `GNU.sparse.name`, else pax
    /// `path`, else GNU long name, else the header's), `kind` and `mtime` the header's
    /// ([`header_time`]), `data` the file's contents (a sparse member's expanded). What the
    /// hook reads of `data` is not imported (it should route such an entry [`Route::Drop`]).
    /// It may change the tree; an error stops the import.
    fn entry(
        &mut self,
        _tree: &mut Tree,
        _raw: &[u8],
        _kind: tar::EntryType,
        _mtime: i64,
        _data: &mut dyn Read,
    ) -> Result<()> {
        Ok(())
    }

    /// Where the entry at `path` (normalised, no leading `/`) goes; asked once per entry the
    /// import goes on with, with the tree as it is before the entry.
    fn route(&mut self, tree: &Tree, path: &[u8]) -> Route;

    /// The contents of a regular file routed [`Route::Capture`], once read.
    fn held(&mut self, _path: &[u8], _data: &[u8]) {}

    /// Whether the entry at `path` (normalised) may replace what the tree has there without
    /// a warning: a package's new version replacing its old version's file is the normal
    /// case of an upgrade, where a tarball's duplicate entry is worth a warning.
    fn replaces(&self, _path: &[u8]) -> bool {
        false
    }
}

/// A route function as [`Hooks`].
struct RouteOnly<'a>(&'a dyn Fn(&[u8]) -> Route);

impl Hooks for RouteOnly<'_> {
    fn route(&mut self, _tree: &Tree, path: &[u8]) -> Route {
        (self.0)(path)
    }
}

/// Import every entry of the tar stream `input`. `route` is asked once per path (normalised,
/// no leading `/`). `boot_dir` names the directory whose files are routed to the boot
/// partition (e.g. `boot`); the directory itself stays in the tree as an empty mount point.
pub fn import(
    input: &mut dyn Read,
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    route: &dyn Fn(&[u8]) -> Route,
    default_meta: &Meta,
) -> Result<ImportReport> {
    import_shared(
        input,
        tree,
        sink,
        route,
        default_meta,
        &BootShare::default(),
    )
}

/// [`import`], keeping the `/boot` files in `share`, which the other builds of the same pass
/// over the tarball use too (each `/boot` file is then held once for all of them).
pub fn import_shared(
    input: &mut dyn Read,
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    route: &dyn Fn(&[u8]) -> Route,
    default_meta: &Meta,
    share: &BootShare,
) -> Result<ImportReport> {
    import_with(
        input,
        tree,
        sink,
        &mut RouteOnly(route),
        default_meta,
        share,
    )
}

/// [`import_shared`] with [`Hooks`] in place of a route function.
pub fn import_with(
    input: &mut dyn Read,
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    hooks: &mut dyn Hooks,
    default_meta: &Meta,
    share: &BootShare,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    report.implied_dirs.insert(Tree::ROOT);
    let mut boot_bytes: u64 = 0;
    let tap = Tap(std::cell::RefCell::new(input));
    let mut archive = tar::Archive::new(&tap);
    // Raw mode: we read pax and GNU long-name records ourselves, because the tar crate's pax
    // reader splits records at newlines and so breaks on binary xattr values (capabilities,
    // ACLs) that contain a 0x0a byte; pax records are length-prefixed and may hold any byte.
    let entries = archive
        .entries()
        .map_err(|e| tar_error("cannot read the tar stream", &e))?
        .raw(true);
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut nfs4_acls = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_error("corrupt tar stream", &e))?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::XHeader => {
                let data = read_small(&mut entry, "pax header")?;
                pax = parse_pax(&data).context("corrupt pax extended header")?;
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                report
                    .warnings
                    .push("pax global header ignored (its defaults are not applied)".into());
                continue;
            }
            tar::EntryType::GNULongName => {
                long_name = Some(trim_nul(read_small(&mut entry, "GNU long name")?));
                continue;
            }
            tar::EntryType::GNULongLink => {
                long_link = Some(trim_nul(read_small(&mut entry, "GNU long link name")?));
                continue;
            }
            _ => {}
        }
        report.entries += 1;
        let records = std::mem::take(&mut pax);
        let value = |key: &[u8]| {
            records
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_slice())
        };
        let raw_path = value(b"GNU.sparse.name")
            .or_else(|| value(b"path"))
            .map(<[u8]>::to_vec)
            .or(long_name.take())
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let link_name = value(b"linkpath")
            .map(<[u8]>::to_vec)
            .or(long_link.take())
            .or_else(|| entry.link_name_bytes().map(|c| c.into_owned()));
        let header = entry.header().clone();
        let shown = tree::escaped(&raw_path);
        let mtime = header_time(&header);
        if let Some(size) = value(b"size") {
            let size: u64 = std::str::from_utf8(size)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            anyhow::ensure!(
                size == entry.size(),
                "{shown}: pax size {size} differs from the header's; such tarballs are not supported"
            );
        }
        // Where the file's data lies in what the member holds (sparse members: src/rootfs/sparse.rs).
        let map = if matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        ) {
            sparse_map(&tap, &mut entry, &header, &records).map_err(|e| anyhow!("{shown}: {e}"))?
        } else {
            sparse::Map::whole(entry.size())
        };
        let size = map.real_size;
        let mut data = sparse::Expand::new(&mut entry, &map);
        hooks.entry(tree, &raw_path, kind, mtime, &mut data)?;
        let number = |key: &[u8], field: std::io::Result<u64>| -> Result<u64> {
            match value(key) {
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .with_context(|| format!("{shown}: bad pax {} record", tree::escaped(key))),
                None => field.map_err(|e| {
                    tar_error(
                        &format!("{shown}: bad {} in tar header", tree::escaped(key)),
                        &e,
                    )
                }),
            }
        };
        // ext4 stores 32-bit owners; a larger one must not wrap (2^32 would become root).
        let owner = |key: &[u8], field: std::io::Result<u64>| -> Result<u32> {
            let n = number(key, field)?;
            u32::try_from(n).map_err(|_| {
                anyhow!(
                    "{shown}: {} {n} is above 4294967295, the largest owner ext4 stores; fix the tarball",
                    tree::escaped(key)
                )
            })
        };
        let mut meta = Meta::new(
            (header.mode().unwrap_or(0o644) & 0o7777) as u16,
            owner(b"uid", header.uid())?,
            owner(b"gid", header.gid())?,
            Timestamp::from_secs(mtime),
        );
        let (major, minor) = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        let mut acls = acl::Acls::default();
        let mut acl_error = None;
        for (key, val) in &records {
            if key == b"mtime" {
                if let Some(t) = pax_time(val) {
                    meta.mtime = t;
                }
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.insert(name.to_vec(), val.clone());
            } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                match base64_decode(val) {
                    Some(v) => {
                        meta.xattrs.insert(percent_decode(name), v);
                    }
                    None => report
                        .warnings
                        .push(format!("{shown}: undecodable xattr record ignored")),
                }
            } else if key == b"SCHILY.acl.access" || key == b"SCHILY.acl.default" {
                if let Err(e) = acl::parse_into(val, key == b"SCHILY.acl.default", &mut acls) {
                    acl_error.get_or_insert(e);
                }
            } else if key == b"SCHILY.acl.ace" {
                nfs4_acls += 1;
                if nfs4_acls == 1 {
                    report.warnings.push(format!(
                        "{shown}: NFSv4 ACL (pax SCHILY.acl.ace) left out: ext4 stores POSIX ACLs only"
                    ));
                }
            }
        }
        match apply_acls(acl_error, acls, kind.is_dir(), &mut meta) {
            Ok(false) => {}
            Ok(true) => report.warnings.push(format!(
                "{shown}: default ACL left out: only a directory has one"
            )),
            Err(e) => match e {
                acl::AclError::NameOnly(_) => {
                    report.warnings.push(format!("{shown}: its ACL {e}"));
                }
                acl::AclError::Malformed(m) => bail!("{shown}: pax SCHILY.acl record: {m}"),
            },
        }
        meta.mtime = clamp_time(meta.mtime, &shown, &mut report.warnings);
        report.newest_mtime = report.newest_mtime.max(meta.mtime.sec);

        let Some(comps) = tree::normalize(&raw_path) else {
            if raw_path.split(|&b| b == b'/').any(|c| c == b"..") {
                report
                    .warnings
                    .push(format!("{shown}: escapes the root, skipped"));
            } else if kind.is_dir() {
                tree.node_mut(Tree::ROOT).meta = meta;
                report.implied_dirs.remove(&Tree::ROOT);
            } else {
                report.warnings.push(format!(
                    "{shown}: names the root directory but is not a directory, skipped"
                ));
            }
            continue;
        };
        let path = comps.join(&b'/');
        if raw_path.split(|&b| b == b'/').any(|c| c == b"..") {
            report
                .warnings
                .push(format!("{shown}: contains `..`, skipped"));
            continue;
        }
        let r = hooks.route(tree, &path);
        if r == Route::Drop {
            continue;
        }
        if r == Route::Boot {
            if kind.is_file()
                || kind == tar::EntryType::Continuous
                || kind == tar::EntryType::GNUSparse
            {
                let Ok(rel) = String::from_utf8(comps[1..].join(&b'/')) else {
                    bail!(
                        "{shown}: a /boot name that is not UTF-8; the FAT boot partition stores UTF-16 names: rename it in the tarball"
                    );
                };
                let old = report.boot.get(&rel).map_or(0, |b| b.data.len() as u64);
                let data = read_boot(
                    &mut data,
                    size,
                    (MAX_BOOT_BYTES - boot_bytes + old).min(MAX_BOOT_BYTES),
                    &shown,
                    &rel,
                    share,
                )?;
                boot_bytes = boot_bytes - old + size;
                let replaced = report.boot.insert(
                    rel,
                    BootFile {
                        data,
                        mtime: meta.mtime,
                    },
                );
                if replaced.is_some() && !hooks.replaces(&path) {
                    report
                        .warnings
                        .push(format!("{shown}: duplicate entry, the later one wins"));
                }
            } else if !kind.is_dir() {
                report.warnings.push(format!(
                    "{shown}: not a regular file; the FAT boot partition cannot hold it, skipped"
                ));
            }
            continue;
        }

        if let Err(e) = tree.check_parents(&path) {
            report.warnings.push(format!("{shown}: skipped: {e}"));
            continue;
        }
        let exists = tree.lookup(&path).is_some();
        let node_kind = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                report.file_bytes += size;
                let stored = if r == Route::Capture {
                    let held = read_held(
                        &mut data,
                        size,
                        MAX_CAPTURED_BYTES,
                        &shown,
                        "files the node configuration edits",
                    )?;
                    hooks.held(&path, &held);
                    FileData::Bytes(held)
                } else {
                    FileData::Stored(
                        store(sink, &mut data, &map)
                            .with_context(|| format!("{shown}: cannot store file data"))?,
                    )
                };
                NodeKind::File(stored)
            }
            tar::EntryType::Directory => NodeKind::Dir(BTreeMap::new()),
            tar::EntryType::Symlink => {
                let target = link_name.clone().unwrap_or_default();
                NodeKind::Symlink(target)
            }
            tar::EntryType::Link => {
                let target = link_name.clone().unwrap_or_default();
                let missing = missing_parents(tree, &comps);
                if let Err(e) = tree.link(&path, &target, default_meta) {
                    report
                        .warnings
                        .push(format!("{shown}: hard link not created: {e}"));
                    continue;
                }
                note_implied(tree, &comps, missing, &mut report.implied_dirs);
                if exists && !hooks.replaces(&path) {
                    report
                        .warnings
                        .push(format!("{shown}: duplicate entry, the later one wins"));
                }
                continue;
            }
            tar::EntryType::Char => NodeKind::CharDev { major, minor },
            tar::EntryType::Block => NodeKind::BlockDev { major, minor },
            tar::EntryType::Fifo => NodeKind::Fifo,
            other => {
                report.warnings.push(format!(
                    "{shown}: unsupported tar entry type {other:?}, skipped"
                ));
                continue;
            }
        };
        let was_dir = exists
            && tree
                .lookup(&path)
                .is_some_and(|id| tree.node(id).kind.is_dir());
        let missing = missing_parents(tree, &comps);
        match tree.insert(
            &path,
            Node {
                meta,
                kind: node_kind.clone(),
            },
            default_meta,
        ) {
            Ok(id) => {
                note_implied(tree, &comps, missing, &mut report.implied_dirs);
                if node_kind.is_dir() {
                    report.implied_dirs.remove(&id);
                }
                if exists && !(was_dir && node_kind.is_dir()) && !hooks.replaces(&path) {
                    report
                        .warnings
                        .push(format!("{shown}: duplicate entry, the later one wins"));
                }
            }
            Err(e) => report.warnings.push(format!("{shown}: skipped: {e}")),
        }
    }
    if nfs4_acls > 1 {
        report.warnings.push(format!(
            "{} more entries' NFSv4 ACLs left out",
            nfs4_acls - 1
        ));
    }
    Ok(report)
}

/// How many leading components of `comps`' parents are present in the tree.
fn missing_parents(tree: &Tree, comps: &[Vec<u8>]) -> usize {
    if comps.len() < 2 || tree.lookup(&comps[..comps.len() - 1].join(&b'/')).is_some() {
        return comps.len().saturating_sub(1); // the usual case: the parent is there
    }
    let mut present = 0;
    for i in 1..comps.len() {
        if tree.lookup(&comps[..i].join(&b'/')).is_none() {
            break;
        }
        present = i;
    }
    present
}

/// Record the parents of `comps` past the first `present` ones: the insert just made them.
fn note_implied(
    tree: &Tree,
    comps: &[Vec<u8>],
    present: usize,
    implied: &mut std::collections::BTreeSet<NodeId>,
) {
    for i in present + 1..comps.len() {
        if let Some(id) = tree.lookup(&comps[..i].join(&b'/')) {
            implied.insert(id);
        }
    }
}

/// Read a metadata entry's data (pax header, GNU long name); refuses absurd sizes.
fn read_small(entry: &mut dyn Read, what: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    entry
        .take(16 << 20)
        .read_to_end(&mut data)
        .with_context(|| format!("truncated {what}"))?;
    Ok(data)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Parse pax extended header records (POSIX.1-2008 `pax`, "pax Extended Header"): each
/// record is `LEN KEY=VALUE\n`, where LEN counts the whole record in bytes, so a value may
/// hold any byte, newlines included.
pub fn parse_pax(mut data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .context("pax record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("pax record with a bad length")?;
        anyhow::ensure!(
            len > sp + 1 && len <= data.len() && data[len - 1] == b'\n',
            "pax record length {len} does not match its contents"
        );
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("pax record without `=`")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// libarchive percent-encodes `%`, `=` and non-printable bytes in xattr names.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 3]), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes a call (as a tar entry may).
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn boot_share_keeps_one_copy_of_equal_bytes_only() {
        let share = BootShare::default();
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let read = |data: &[u8], step| {
            read_boot(
                &mut Trickle(data, step),
                data.len() as u64,
                1 << 20,
                "boot/zImage",
                "zImage",
                &share,
            )
            .unwrap()
        };
        let first = read(&a, 70_000);
        let again = read(&a, 4096);
        assert!(Arc::ptr_eq(&first, &again), "equal bytes are held once");
        // A difference past the first chunk: a copy of its own, with the right bytes.
        let mut b = a.clone();
        b[150_000] ^= 1;
        let other = read(&b, 65_536);
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(&other[..], &b[..]);
        assert_eq!(&first[..], &a[..]);
        // Both are held now: a third read of either shares.
        assert!(Arc::ptr_eq(&read(&b, 1000), &other));
        // Same path, other size: never compared with the held ones.
        let short = read(&a[..1000], 512);
        assert_eq!(&short[..], &a[..1000]);
        // Truncated data is an error, not a short file.
        let e = read_boot(
            &mut Trickle(&a[..10], 10),
            20,
            1 << 20,
            "boot/x",
            "x",
            &share,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    /// Stores data in memory: enough to test the import's bookkeeping without ext4.
    #[derive(Default)]
    struct MemSink {
        files: Vec<Vec<u8>>,
    }

    impl DataSink for MemSink {
        fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef> {
            let mut v = Vec::new();
            src.take(len).read_to_end(&mut v)?;
            anyhow::ensure!(v.len() as u64 == len, "short");
            self.files.push(v);
            Ok(DataRef {
                size: len,
                runs: vec![crate::tree::BlockRun {
                    start: self.files.len() as u64,
                    len: 1,
                }],
            })
        }

        fn read_data(&self, data: &FileData) -> Result<Vec<u8>> {
            match data {
                FileData::Bytes(b) => Ok(b.clone()),
                FileData::Stored(r) => Ok(self.files[r.runs[0].start as usize - 1].clone()),
            }
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn run(tar: &[u8], route: &dyn Fn(&[u8]) -> Route) -> (Tree, ImportReport, MemSink) {
        let m = Meta::new(0o755, 0, 0, Timestamp::from_secs(1));
        let mut tree = Tree::new(m.clone());
        let mut sink = MemSink::default();
        let r = import(&mut &tar[..], &mut tree, &mut sink, route, &m).unwrap();
        (tree, r, sink)
    }

    #[test]
    fn imports_types_xattrs_and_routes() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, "./etc/", &[][..]).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o4755, 5);
        h.set_uid(70000);
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", &b"\x01\x02"[..]),
            ("LIBARCHIVE.xattr.user.x%3Dy", &b"aGk="[..]),
            ("mtime", &b"1700000000.25"[..]),
        ])
        .unwrap();
        b.append_data(&mut h, "usr/bin/ping", &b"hello"[..])
            .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 3);
        b.append_data(&mut h, "etc/passwd", &b"abc"[..]).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 2);
        b.append_data(&mut h, "boot/dtbs/a.dtb", &b"dt"[..])
            .unwrap();
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        b.append_link(&mut h, "usr/bin/ping2", "usr/bin/ping")
            .unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "lib", "usr/lib").unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "lib/escape", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();

        let route = |p: &[u8]| match p {
            b"etc/passwd" => Route::Capture,
            p if p.starts_with(b"boot/") => Route::Boot,
            _ => Route::Keep,
        };
        let (tree, rep, sink) = run(&tar, &route);
        let ping = tree.lookup(b"usr/bin/ping").unwrap();
        let n = tree.node(ping);
        assert_eq!(n.meta.perm, 0o4755);
        assert_eq!(n.meta.uid, 70000);
        assert_eq!(
            n.meta.mtime,
            Timestamp {
                sec: 1700000000,
                nsec: 250_000_000
            }
        );
        assert_eq!(n.meta.xattrs[&b"security.capability"[..]], b"\x01\x02");
        assert_eq!(n.meta.xattrs[&b"user.x=y"[..]], b"hi");
        assert_eq!(tree.lookup(b"usr/bin/ping2"), Some(ping));
        assert_eq!(sink.files, vec![b"hello".to_vec()]);
        let pw = tree.node(tree.lookup(b"etc/passwd").unwrap());
        assert_eq!(pw.kind, NodeKind::File(FileData::Bytes(b"abc".to_vec())));
        assert_eq!(&rep.boot["dtbs/a.dtb"].data[..], b"dt");
        assert!(tree.lookup(b"boot/dtbs").is_none());
        assert!(
            rep.warnings.iter().any(|w| w.contains("lib/escape")),
            "{:?}",
            rep.warnings
        );
        assert_eq!(rep.newest_mtime, 1700000000);
    }

    #[test]
    fn escapes_are_refused_and_duplicates_reported() {
        let mut data = Vec::new();
        // Build by hand: the tar crate refuses to write `..` paths.
        for (name, body) in [("../evil", &b"x"[..]), ("a", &b"1"[..]), ("a", &b"22"[..])] {
            let mut h = header(tar::EntryType::Regular, 0o644, body.len() as u64);
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            data.extend_from_slice(h.as_bytes());
            let mut blk = body.to_vec();
            blk.resize(512, 0);
            data.extend_from_slice(&blk);
        }
        data.extend_from_slice(&[0u8; 1024]);
        let (tree, rep, _) = run(&data, &|_: &[u8]| Route::Keep);
        assert!(tree.lookup(b"evil").is_none());
        assert!(rep.warnings.iter().any(|w| w.contains("../evil")));
        assert!(rep.warnings.iter().any(|w| w.contains("duplicate")));
        let a = tree.node(tree.lookup(b"a").unwrap());
        assert_eq!(
            a.kind,
            NodeKind::File(FileData::Stored(DataRef {
                size: 2,
                runs: vec![crate::tree::BlockRun { start: 2, len: 1 }]
            }))
        );
    }

    #[test]
    fn pax_records_may_hold_newlines() {
        let rec = |k: &str, v: &[u8]| {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut len = body.len() + 2;
            while format!("{len} ").len() + body.len() != len {
                len += 1;
            }
            [format!("{len} ").into_bytes(), body].concat()
        };
        let data = [
            rec("SCHILY.xattr.user.bin", b"a\nb\n"),
            rec("uid", b"70000"),
        ]
        .concat();
        let r = parse_pax(&data).unwrap();
        assert_eq!(
            r[0],
            (b"SCHILY.xattr.user.bin".to_vec(), b"a\nb\n".to_vec())
        );
        assert_eq!(r[1], (b"uid".to_vec(), b"70000".to_vec()));
        assert!(parse_pax(b"99 x=y\n").is_err());
        assert!(parse_pax(b"5 x=y\n").is_err());
    }

    #[test]
    fn header_times_read_gnu_base_256_of_both_signs() {
        let mut h = tar::Header::new_gnu();
        let mut at = |f: [u8; 12]| {
            h.as_old_mut().mtime = f;
            header_time(&h)
        };
        // GNU tar 1.34's field for 1938-01-01.
        assert_eq!(
            at([
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc3, 0xcf, 0x04, 0x00
            ]),
            -1_009_843_200
        );
        assert_eq!(at([0xff; 12]), -1);
        assert_eq!(at([0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]), 1 << 32);
        // Past an i64: clamped (and then clamped again to ext4's range, with a warning).
        assert_eq!(at([0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), i64::MIN);
        assert_eq!(at([0x80, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), i64::MAX);
        assert_eq!(at(*b"00000001750\0"), 1000);
        assert_eq!(at(*b"garbage\0\0\0\0\0"), 0);
    }

    #[test]
    fn sparse_files_are_stored_block_range_by_range_with_holes_between() {
        let map = sparse::Map {
            real_size: 5 * 4096,
            chunks: vec![
                sparse::Chunk {
                    offset: 0,
                    len: 512,
                },
                sparse::Chunk {
                    offset: 3 * 4096 + 5,
                    len: 3,
                },
            ],
        };
        let stored = [[1u8; 512].as_slice(), b"abc"].concat();
        let mut sink = MemSink::default();
        let mut inner = &stored[..];
        let mut data = sparse::Expand::new(&mut inner, &map);
        let r = store(&mut sink, &mut data, &map).unwrap();
        use crate::tree::BlockRun;
        assert_eq!(r.size, 5 * 4096);
        assert_eq!(
            r.runs,
            [
                BlockRun { start: 1, len: 1 },
                BlockRun::hole(2),
                BlockRun { start: 2, len: 1 },
                BlockRun::hole(1)
            ]
        );
        let mut first = vec![1u8; 512];
        first.resize(4096, 0);
        let mut second = vec![0u8; 4096];
        second[5..8].copy_from_slice(b"abc");
        assert_eq!(sink.files, [first, second]);
        // A plain file is one piece.
        let plain = sparse::Map::whole(3);
        let mut inner = &b"xyz"[..];
        let r = store(
            &mut sink,
            &mut sparse::Expand::new(&mut inner, &plain),
            &plain,
        )
        .unwrap();
        assert_eq!(r.size, 3);
        assert_eq!(sink.files[2], b"xyz");
    }

    #[test]
    fn pax_time_parses_fractions() {
        assert_eq!(pax_time(b"12"), Some(Timestamp { sec: 12, nsec: 0 }));
        assert_eq!(
            pax_time(b"12.000000001"),
            Some(Timestamp { sec: 12, nsec: 1 })
        );
        assert_eq!(
            pax_time(b"-1.25"),
            Some(Timestamp {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(pax_time(b"x"), None);
        assert_eq!(base64_decode(b"aGVsbG8="), Some(b"hello".to_vec()));
    }
}
