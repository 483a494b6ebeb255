//! Installing pinned packages into the build's tree, as `pacman -U` would on the node.
//!
//! Each (cached, pinned) `.pkg.tar.zst`/`.pkg.tar.xz` is decoded once per build, through the
//! project's decompressors ([`crate::rootfs::input`]):
//!
//! 1. [`prepare`] (before the tarball import) checks the whole file's sha256 against the pin
//!    and decodes only the archive's head, up to `.PKGINFO` (`PKGBUILD(5)` fields as
//!    `key = value` lines): makepkg writes the metadata members first (`.BUILDINFO`, `.MTREE`,
//!    `.PKGINFO`, in `LC_COLLATE=C` order), so this is a few KiB of output — the name and
//!    version (checked against the pin) and the `backup` list, which the tarball import
//!    needs to hold the image's copies of those files in memory. (An archive whose `.PKGINFO`
//!    is not at its head is read on until it is found: slower, same result.)
//! 2. [`install_all`] (after the tarball import, before the edits) streams each archive once
//!    through the tarball's own importer ([`crate::rootfs::import::import_with`]): file data
//!    goes straight into the ext4 data area, `/boot` files to the boot partition, the files
//!    the edits read into memory. Its [`Hooks`](crate::rootfs::import::Hooks) do, entry by
//!    entry as the stream arrives, what a separate listing pass used to do before the stream:
//!    read `.MTREE` (gzip'd mtree, copied verbatim into the local database) and `.INSTALL`
//!    (the scriptlet, kept as the local database's `install`), list the other entries and
//!    hash (md5) the `backup` files, and check each entry against the tree as it is when the
//!    entry arrives (with the paths this package itself created set apart, that is the tree
//!    the package found). `.BUILDINFO` and any other top-level dot file are skipped, as
//!    libalpm does.
//!
//! Why not list first and stream second: that decodes every package twice, and xz is slow
//! (Debian's docker as a 28 MB `.pkg.tar.xz` costs 1.4 s of CPU per decode; issue 27).
//! Why not keep one decoder per package open from the head read until the install: an xz
//! decoder holds its 8 MiB dictionary (zstd at makepkg's `-20`, 32 MiB), times the packages
//! of an upgrade, against the build's bounded memory. Why not keep the listing in the cache
//! by sha256: a first build would still decode twice. Here the head read costs the decoding
//! of the metadata members only, and memory stays what one streaming decoder takes.
//! Measured (docs/benchmarks.md, "Each package decoded once"): installing that docker
//! package cost 4.9–5.3 s of CPU with the listing pass, 2.1–2.7 s without; the head read
//! takes 0.04–0.08 s.
//!
//! The images are the ones the listing pass gave, with one exception: the tarball import now
//! holds in memory every path `.PKGINFO` lists in `backup`, where the listing pass held only
//! those the package ships as regular files. A `backup` entry naming a file the package does
//! not ship (makepkg warns about such) whose path the tarball has thus puts the tarball's
//! file, unchanged, in other blocks.
//!
//! pacman's rules (libalpm `add.c`, `conflict.c`), and what we do:
//! - A directory that already exists keeps its owner, mode and time (pacman only warns on a
//!   mismatch).
//! - A non-directory entry over an existing file is a file conflict (pacman: "exists in
//!   filesystem") and fails the build, unless the file belongs to the installed version this
//!   package upgrades or a package it replaces (`%REPLACES%`), or is a `backup` file — or it
//!   changes hands (`conflict.c` `_alpm_db_find_fileconflicts`): its owner is an installed
//!   package this transaction upgrades or removes and has not yet, as when a package is split
//!   and the new sub-package comes first. The old owner's upgrade or removal then leaves the
//!   file (pacman's `skip_remove`); should its new version ship the file too, that is a
//!   conflict between two packages of the transaction. Replacing the old version's files is
//!   the normal case of an upgrade: no "duplicate entry" warning.
//! - `backup` files (libalpm `extract_single_file`): when the file on the image has the same
//!   contents as the package's, or (upgrade) still has the contents the old version shipped
//!   (its `%BACKUP%` md5), the package's file is installed. Otherwise the image's file stays:
//!   the package's goes beside it as `FILE.pacnew` — except on an upgrade whose new file equals
//!   the old one, where pacman installs nothing. `%BACKUP%` records the md5 of the package's
//!   file either way, as pacman does. (The decision needs the package file's md5, so it is
//!   taken when the stream has passed; the image's file is set aside when its entry arrives.)
//! - On an upgrade the old version's files that the new one does not ship are removed (one
//!   that stands where the new version has a directory, or above one of its entries, as soon
//!   as that entry arrives; the rest once the new version's file list is complete), and its
//!   local database entry replaced; the packages a replacement removes go the same way
//!   (`remove.c` `remove_package_files`, `unlink_file`): a `backup` file whose contents
//!   differ from its `%BACKUP%` md5 is kept as `FILE.pacsave`, a directory goes when it is
//!   empty and no other installed package lists it.
//! - The local database entry `var/lib/pacman/local/NAME-VERSION/` gets `desc` (the fields of
//!   `_alpm_local_db_write`, in its order: `%INSTALLDATE%` is the build's timestamp,
//!   `%REASON%` 1 for dependencies, `%VALIDATION%` `pgp` when the pin's signature was checked, else `sha256`), `files` (`%FILES%` sorted as
//!   `_alpm_filelist_sort` does, directories with a trailing `/`; `%BACKUP%` as `path<TAB>md5`),
//!   `mtree` (the package's `.MTREE` bytes) and `install` (the `.INSTALL` scriptlet), all
//!   root-owned 0644 in a 0755 directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{Context, Result, bail};
use md5::{Digest, Md5};

use super::Fetched;
use super::db::{Desc, LOCAL_DB};
use crate::edit;
use crate::edit::EditContext;
use crate::rootfs::import::{self, BootFile, DataSink, Route};
use crate::rootfs::input::{self, Inflated};
use crate::source::fast;
use crate::tree::{self, FileData, Meta, Node, NodeId, NodeKind, Timestamp, Tree};

/// `.PKGINFO`: `key = value` lines, in order (keys repeat for lists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PkgInfo(pub Vec<(String, String)>);

impl PkgInfo {
    pub fn parse(text: &str) -> PkgInfo {
        PkgInfo(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(" = "))
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One package: its head after [`prepare`], the rest once [`install_all`] has streamed it.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub fetched: Fetched,
    pub info: PkgInfo,
    /// The `backup` paths `.PKGINFO` lists.
    pub backup_paths: BTreeSet<String>,
    /// The fields below come from the one pass over the archive ([`install_all`]); they are
    /// empty until then.
    pub mtree: Option<Vec<u8>>,
    /// `.INSTALL` and its mtime.
    pub scriptlet: Option<(Vec<u8>, i64)>,
    /// Entries other than the metadata: normalised path and whether it is a directory.
    pub entries: Vec<(Vec<u8>, bool)>,
    /// `%FILES%` lines, sorted.
    pub files: Vec<String>,
    /// `backup` paths with the md5 of the package's file.
    pub backup: BTreeMap<String, String>,
    /// The fast form [`prepare`] read and verified, which [`install_all`] streams.
    pub fast: Option<fast::FastForm>,
    /// Why the fast form that was there was not used, for the build to show.
    pub fast_warning: Option<String>,
}

impl Prepared {
    pub fn name(&self) -> &str {
        &self.fetched.pin.name
    }

    fn dir_name(&self) -> String {
        format!("{}-{}", self.fetched.pin.name, self.fetched.pin.version)
    }
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// The most a metadata member (`.PKGINFO`, `.MTREE`, `.INSTALL`) may hold: it is read into
/// memory (makepkg's are KiBs; a gzip'd `.MTREE` of a large package a few MiB).
const MAX_METADATA_BYTES: u64 = import::MAX_CAPTURED_BYTES;

/// Read a metadata member, refusing one above [`MAX_METADATA_BYTES`].
fn read_member(data: &mut dyn Read, what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    data.take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut v)
        .with_context(|| format!("{what}: truncated"))?;
    if v.len() as u64 > MAX_METADATA_BYTES {
        bail!("{what}: larger than {MAX_METADATA_BYTES} bytes; not a package makepkg wrote");
    }
    Ok(v)
}

/// Reads through to `inner`, hashing (sha256) every byte read.
struct Sha256Reader<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        Ok(n)
    }
}

/// Reads through to `inner`, counting the bytes as decoded from `path`
/// ([`crate::rootfs::input::decoded_bytes`]).
struct Counted<'a, R> {
    inner: R,
    path: &'a std::path::Path,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        input::note_decoded(self.path, n as u64);
        Ok(n)
    }
}

/// Read a package's head: check the whole file's sha256 against the pin, decode up to its
/// `.PKGINFO` (module doc) and check it names the pinned package. When the cache holds the
/// package's fast form ([`crate::source::fast`]), that is read instead, and its sha256
/// checked against its record; one that does not verify (or whose head is not right) is
/// removed, the original read, and [`Prepared::fast_warning`] says so.
pub fn prepare(f: &Fetched) -> Result<Prepared> {
    let sha = &f.pin.sha256;
    let mut warning = None;
    if let Some(cache) = fast::cache_of(&f.path, sha) {
        let tried = fast::find(&cache, sha).and_then(|ff| match ff {
            Some(ff) => prepare_from(f, Some(&ff)).map(|p| Some((p, ff))),
            None => Ok(None),
        });
        match tried {
            Ok(Some((mut p, ff))) => {
                p.fast = Some(ff);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => {
                fast::remove(&cache, sha);
                warning = Some(format!(
                    "package {}: its fast form does not verify ({e:#}); reading the original and writing the fast form again",
                    f.pin.filename
                ));
            }
        }
    }
    let mut p = prepare_from(f, None)?;
    p.fast_warning = warning;
    Ok(p)
}

/// [`prepare`] from the original, or from its fast form `fast` (its sha256 checked against
/// its record instead of the pin's).
fn prepare_from(f: &Fetched, fast: Option<&fast::FastForm>) -> Result<Prepared> {
    let (shown, read) = match fast {
        Some(ff) => (
            format!(
                "package {} (its fast form {})",
                f.pin.filename,
                ff.path.display()
            ),
            ff.path.as_path(),
        ),
        None => (
            format!("package {} ({})", f.pin.filename, f.path.display()),
            f.path.as_path(),
        ),
    };
    let file = std::fs::File::open(read).with_context(|| format!("{shown}: cannot open"))?;
    let mut src = Sha256Reader {
        inner: std::io::BufReader::with_capacity(1 << 16, file),
        hash: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let mut head = vec![0u8; 512];
    let n =
        input::read_full(&mut src, &mut head).with_context(|| format!("{shown}: cannot read"))?;
    head.truncate(n);
    let Some(kind) = input::Compression::sniff(&head) else {
        bail!(
            "{shown}: not a tar archive (expected .pkg.tar.zst, .pkg.tar.xz, .pkg.tar.gz or .pkg.tar)"
        );
    };
    let mut info = None;
    {
        let dec = input::decoder(kind, std::io::Cursor::new(head).chain(&mut src))
            .with_context(|| format!("{shown}: cannot start decoding"))?;
        let counted = Counted {
            inner: dec,
            path: &f.path,
        };
        let mut ar = tar::Archive::new(counted);
        // Raw mode with the importer's own pax parser, so this sees the names the install
        // pass sees (pax `path` records, GNU long names) whatever binary xattr records
        // precede them.
        let mut pax_path: Option<Vec<u8>> = None;
        for e in ar
            .entries()
            .with_context(|| format!("{shown}: not a tar archive"))?
            .raw(true)
        {
            let mut e = e.with_context(|| format!("{shown}: corrupt archive"))?;
            match e.header().entry_type() {
                tar::EntryType::XHeader => {
                    let d = read_member(&mut e, &format!("{shown}: pax header"))?;
                    pax_path = import::parse_pax(&d)
                        .with_context(|| format!("{shown}: bad pax header"))?
                        .into_iter()
                        .rev()
                        .find(|(k, _)| k == b"path")
                        .map(|(_, v)| v);
                    continue;
                }
                tar::EntryType::GNULongName => {
                    let mut d = read_member(&mut e, &format!("{shown}: long name"))?;
                    while d.last() == Some(&0) {
                        d.pop();
                    }
                    pax_path = Some(d);
                    continue;
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::GNULongLink => continue,
                _ => {}
            }
            let raw = pax_path
                .take()
                .unwrap_or_else(|| e.path_bytes().into_owned());
            if raw == b".PKGINFO" {
                let data = read_member(&mut e, &format!("{shown}: .PKGINFO"))?;
                let text = String::from_utf8(data)
                    .map_err(|_| anyhow::anyhow!("{shown}: .PKGINFO is not UTF-8"))?;
                info = Some(PkgInfo::parse(&text));
                break;
            }
        }
    }
    // The rest of the file, hashed only.
    std::io::copy(&mut src, &mut std::io::sink())
        .with_context(|| format!("{shown}: cannot read"))?;
    let sha = hex::encode(sha2::Digest::finalize(src.hash));
    if let Some(ff) = fast {
        if sha != ff.sha256 {
            bail!("{shown}: sha256 is {sha}, its record says {}", ff.sha256);
        }
    } else if sha != f.pin.sha256 {
        bail!(
            "{shown}: sha256 is {sha}, but the lock file pins {}; the build stops (re-pin with `hc1img lock` if the repository changed on purpose)",
            f.pin.sha256
        );
    }
    let Some(info) = info else {
        bail!("{shown}: no .PKGINFO; not a pacman package");
    };
    if info.get("pkgname") != Some(f.pin.name.as_str())
        || info.get("pkgver") != Some(f.pin.version.as_str())
    {
        bail!(
            "{shown}: its .PKGINFO says {}-{}, the lock file {}-{}",
            info.get("pkgname").unwrap_or("?"),
            info.get("pkgver").unwrap_or("?"),
            f.pin.name,
            f.pin.version
        );
    }
    let backup_paths = info.all("backup").into_iter().map(String::from).collect();
    Ok(Prepared {
        fetched: f.clone(),
        info,
        backup_paths,
        mtree: None,
        scriptlet: None,
        entries: Vec::new(),
        files: Vec::new(),
        backup: BTreeMap::new(),
        fast: None,
        fast_warning: None,
    })
}

/// Paths the tarball import must hold in memory for the packages: the local database's
/// `desc` and `files`, every package's `backup` files (compared with the package's) and the
/// `sysusers.d` files the packages add.
pub fn captured(path: &[u8], prepared: &[Prepared]) -> bool {
    if let Some(rest) = path.strip_prefix(LOCAL_DB.as_bytes()) {
        return rest.ends_with(b"/desc") || rest.ends_with(b"/files");
    }
    path.starts_with(super::firstboot::SYSUSERS_DIR.as_bytes())
        || prepared
            .iter()
            .any(|p| p.backup_paths.contains(&tree::display(path)))
}

/// What installing the packages did.
#[derive(Debug, Default)]
pub struct InstallReport {
    /// Files the packages put below `/boot` (for the boot partition).
    pub boot: BTreeMap<String, BootFile>,
    pub warnings: Vec<String>,
    /// Installed `NAME-VERSION`s, in install order.
    pub installed: Vec<String>,
    /// `NAME-VERSION`s that have an `.INSTALL` scriptlet.
    pub scriptlets: Vec<String>,
    /// Files written as `.pacnew`.
    pub pacnew: Vec<String>,
    /// Files kept as `.pacsave` (a changed `backup` file of a removed or upgraded package
    /// that the new version no longer ships).
    pub pacsave: Vec<String>,
    /// Files that changed hands: `(path, from NAME-VERSION, to NAME-VERSION)`.
    pub handed: Vec<(String, String, String)>,
    /// What the transaction did, for the image's alpm hooks ([`super::hooks`]).
    pub changes: super::hooks::Changes,
}

/// The transaction's state across its packages (libalpm `conflict.c`
/// `_alpm_db_find_fileconflicts`, `trans->skip_remove`; `remove.c`).
#[derive(Debug, Default)]
struct Transaction {
    /// Installed packages (`NAME-VERSION`) the transaction upgrades or removes and has not
    /// yet: a file one of them owns may change hands to another package of the transaction.
    pending: BTreeSet<String>,
    /// Their files (not directories): which pending package owns each path.
    owners: BTreeMap<String, String>,
    /// Their `%FILES%` and `%BACKUP%`, read from the local database once, when the
    /// transaction starts; taken by the package that upgrades or removes them.
    old: BTreeMap<String, (Vec<String>, BTreeMap<String, String>)>,
    /// Files that changed hands: path -> the new owner (`NAME-VERSION`). The old owner's
    /// upgrade or removal leaves them (pacman's `skip_remove`); a second package of the
    /// transaction shipping one is a file conflict.
    handed: BTreeMap<String, String>,
}

/// The `%FILES%`/`%BACKUP%` of an installed package, from the tree's local database.
fn local_files(tree: &Tree, dir: &str) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let path = format!("{LOCAL_DB}{dir}/files");
    let Some(text) = edit::read_text_optional(tree, &path)? else {
        return Ok((Vec::new(), BTreeMap::new()));
    };
    let d = Desc::parse(&text, &format!("/{path}"))?;
    let backup = d
        .all("BACKUP")
        .iter()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    Ok((d.all("FILES").to_vec(), backup))
}

/// The installed package owning `path`, if any (for conflict messages).
fn owner(tree: &Tree, path: &str) -> Option<String> {
    let id = tree.lookup(LOCAL_DB.as_bytes())?;
    let dirs: Vec<String> = tree.children(id).map(|(n, _)| tree::display(n)).collect();
    dirs.into_iter()
        .find(|d| local_files(tree, d).is_ok_and(|(f, _)| f.iter().any(|x| x == path)))
}

/// The contents of an in-memory regular file.
fn bytes_at(tree: &Tree, path: &[u8]) -> Option<Vec<u8>> {
    let id = tree.lookup(path)?;
    match &tree.node(id).kind {
        NodeKind::File(FileData::Bytes(b)) => Some(b.clone()),
        _ => None,
    }
}

/// What to do with a backup file that already exists.
enum Keep {
    /// Keep the image's file, install the package's as `.pacnew`.
    Pacnew(Node),
    /// Keep the image's file, drop the package's.
    Old(Node),
}

/// Install every prepared package, in order, each in one pass over its archive (which fills in
/// the [`Prepared`] fields that come from the stream). `captured` are the paths the edits
/// read (routed to memory); `timestamp` is `%INSTALLDATE%` and the time of what this writes.
pub fn install_all(
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    prepared: &mut [Prepared],
    captured: &[&str],
    timestamp: i64,
) -> Result<InstallReport> {
    let mut rep = InstallReport::default();
    let no_secrets = |_: &str| -> Result<Vec<u8>> { bail!("no secrets here") };
    let ctx = EditContext::new(timestamp, &no_secrets);
    let mut tx = Transaction::default();
    for p in prepared.iter() {
        let pin = &p.fetched.pin;
        let old = pin.upgrades.iter().map(|v| format!("{}-{v}", pin.name));
        for dir in old.chain(pin.removes.iter().cloned()) {
            let listed = local_files(tree, &dir)?;
            for f in listed.0.iter().filter(|f| !f.ends_with('/')) {
                tx.owners.insert(f.clone(), dir.clone());
            }
            tx.old.insert(dir.clone(), listed);
            tx.pending.insert(dir);
        }
    }
    for p in prepared {
        let dir = p.dir_name();
        install_one(tree, sink, p, captured, &ctx, &mut tx, &mut rep)
            .with_context(|| format!("installing {dir}"))?;
        // What it replaced or removed is room for the next one (ext4::Ext4Writer::reclaim).
        sink.reclaim(tree)?;
    }
    if !edit::exists(tree, &format!("{LOCAL_DB}ALPM_DB_VERSION")) {
        edit::write_file(
            tree,
            &ctx,
            &format!("{LOCAL_DB}ALPM_DB_VERSION"),
            "9\n",
            0o644,
            0,
            0,
        )?;
    }
    Ok(rep)
}

/// The one pass over a package's archive ([`import::Hooks`]): pacman's checks on each entry
/// against the tree as it is when the entry arrives, and what the local database needs.
struct Unpack<'a> {
    /// `NAME-VERSION` of the package.
    me: String,
    tx: &'a mut Transaction,
    /// Existing paths an entry may replace quietly ([`import::Hooks::replaces`]).
    expected: BTreeSet<Vec<u8>>,
    /// `.PKGINFO` from [`prepare`]: the stream's must be the same.
    info: &'a PkgInfo,
    /// `backup` paths.
    backup_paths: &'a BTreeSet<String>,
    /// The `%FILES%` of the upgraded version and of the packages this one replaces.
    old_set: BTreeSet<&'a str>,
    /// Their files (not directories) on the image, with their nodes.
    old_ids: &'a BTreeMap<String, NodeId>,
    captured: &'a [&'a str],
    /// Paths this package created so far (entries and their missing parents): what is not
    /// among them and exists is what the package found.
    created: BTreeSet<Vec<u8>>,
    /// Directories that existed already: pacman keeps their owner, mode and time.
    skip_dirs: BTreeSet<Vec<u8>>,
    /// `backup` files that existed already, as they were, with their md5 when held in memory.
    existing_backup: BTreeMap<Vec<u8>, (Node, Option<String>)>,
    /// The upgraded version's `%BACKUP%` (path -> md5).
    old_backup: &'a BTreeMap<String, String>,
    /// Files the old version listed in `backup` that the new one ships but not as `backup`,
    /// as they were: kept as `.pacsave` when the admin changed them (`add.c`).
    was_backup: BTreeMap<Vec<u8>, Node>,
    /// The entry whose held contents are to be hashed (a `backup` file), and the hashes.
    md5_for: Option<String>,
    md5s: BTreeMap<String, String>,
    mtree: Option<Vec<u8>>,
    scriptlet: Option<(Vec<u8>, i64)>,
    entries: Vec<(Vec<u8>, bool)>,
    files: Vec<String>,
}

impl Unpack<'_> {
    /// Remove the upgraded version's file at `path` if it is still there: it stands where the
    /// new version has a directory (or above one of its entries), and pacman removes the old
    /// version's files the new one does not ship before extracting.
    fn clear_old_file(&self, tree: &mut Tree, path: &[u8]) {
        if let Some(id) = tree.lookup(path)
            && self.old_ids.get(&tree::display(path)) == Some(&id)
            && !self.created.contains(path)
        {
            tree.remove(path);
        }
    }
}

impl import::Hooks for Unpack<'_> {
    fn entry(
        &mut self,
        tree: &mut Tree,
        raw: &[u8],
        kind: tar::EntryType,
        mtime: i64,
        data: &mut dyn Read,
    ) -> Result<()> {
        self.md5_for = None;
        let name = String::from_utf8_lossy(raw).into_owned();
        match name.as_str() {
            ".PKGINFO" => {
                let text = String::from_utf8(read_member(data, ".PKGINFO")?)
                    .map_err(|_| anyhow::anyhow!(".PKGINFO is not UTF-8"))?;
                if PkgInfo::parse(&text) != *self.info {
                    bail!("two different .PKGINFO members");
                }
                return Ok(());
            }
            ".MTREE" => {
                self.mtree = Some(read_member(data, ".MTREE")?);
                return Ok(());
            }
            ".INSTALL" => {
                // pacman extracts it into the local database with the archive's time,
                // which `.MTREE` records.
                self.scriptlet = Some((read_member(data, ".INSTALL")?, mtime));
                return Ok(());
            }
            _ => {}
        }
        let comps = tree::normalize(raw);
        if !self.old_ids.is_empty()
            && let Some(comps) = &comps
        {
            for i in 1..comps.len() {
                self.clear_old_file(tree, &comps[..i].join(&b'/'));
            }
            if kind.is_dir() {
                self.clear_old_file(tree, &comps.join(&b'/'));
            }
        }
        if name.starts_with('.') {
            return Ok(()); // .BUILDINFO, .CHANGELOG, ... (libalpm ignores them)
        }
        let Some(comps) = comps else {
            bail!("entry {name:?} escapes the root");
        };
        let path = comps.join(&b'/');
        let shown = tree::display(&path);
        let is_dir = kind.is_dir();
        if is_dir && !name.ends_with('/') {
            self.files.push(format!("{name}/"));
        } else {
            self.files.push(name.clone());
        }
        self.entries.push((path.clone(), is_dir));
        let backup = kind.is_file() && self.backup_paths.contains(&shown);
        if backup {
            self.md5_for = Some(shown.clone());
        }
        // Conflicts, existing directories, backup files: against what the package found.
        if self.created.contains(&path) {
            return Ok(());
        }
        let Some(id) = tree.lookup(&path) else {
            return Ok(());
        };
        let existing_dir = tree.node(id).kind.is_dir();
        if is_dir {
            if existing_dir {
                self.skip_dirs.insert(path);
            }
            return Ok(());
        }
        if existing_dir {
            bail!("/{shown}: the package has a file where the image has a directory");
        }
        if let Some(o) = self.tx.handed.get(&shown) {
            bail!(
                "/{shown} is in both {o} and {}: a file conflict between two packages of the \
                 transaction, as pacman would report",
                self.me
            );
        }
        // A file an installed package leaves in this transaction changes hands (libalpm
        // `conflict.c`: "file changed packages"); its old owner's upgrade or removal keeps it.
        let hands_over = !self.old_set.contains(shown.as_str())
            && self
                .tx
                .owners
                .get(&shown)
                .is_some_and(|o| self.tx.pending.contains(o));
        if hands_over {
            self.tx.handed.insert(shown.clone(), self.me.clone());
        }
        if backup {
            // Decided once the package's file is read (its md5): see `install_one`.
            let cur = bytes_at(tree, &path).map(|b| md5_hex(&b));
            let node = tree.node(id).clone();
            self.existing_backup
                .entry(path.clone())
                .or_insert((node, cur));
            self.expected.insert(path);
            return Ok(());
        }
        if hands_over || self.old_set.contains(shown.as_str()) {
            if self.old_backup.contains_key(&shown) && kind.is_file() {
                let node = tree.node(id).clone();
                self.was_backup.entry(path.clone()).or_insert(node);
            }
            self.expected.insert(path);
            return Ok(());
        }
        let who = owner(tree, &shown)
            .map(|o| format!("owned by {o}"))
            .unwrap_or_else(|| "owned by no package".to_string());
        bail!(
            "/{shown} exists in the root filesystem ({who}): a file conflict, as pacman would report"
        );
    }

    fn route(&mut self, tree: &Tree, path: &[u8]) -> Route {
        // Metadata members, and directories that exist already (pacman keeps their owner,
        // mode and time).
        if (!path.contains(&b'/') && path.starts_with(b".")) || self.skip_dirs.contains(path) {
            return Route::Drop;
        }
        let mut end = 0;
        while end < path.len() {
            end = path[end..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(path.len(), |i| end + i);
            let prefix = &path[..end];
            if tree.lookup(prefix).is_none() {
                self.created.insert(prefix.to_vec());
            }
            end += 1;
        }
        if self.backup_paths.contains(&tree::display(path))
            || path.starts_with(super::firstboot::SYSUSERS_DIR.as_bytes())
        {
            Route::Capture
        } else {
            crate::rootfs::route(path, self.captured)
        }
    }

    fn held(&mut self, _path: &[u8], data: &[u8]) {
        if let Some(p) = self.md5_for.take() {
            self.md5s.insert(p, md5_hex(data));
        }
    }

    fn replaces(&self, path: &[u8]) -> bool {
        self.expected.contains(path)
    }
}

/// Whether an installed package other than those the transaction just removed lists the
/// directory `dir` (`path/`) in its `%FILES%` (libalpm `remove.c` `unlink_file`: a directory
/// another package owns stays).
fn dir_owned(tree: &Tree, dir: &str) -> Result<bool> {
    let Some(id) = tree.lookup(LOCAL_DB.as_bytes()) else {
        return Ok(false);
    };
    let dirs: Vec<String> = tree.children(id).map(|(n, _)| tree::display(n)).collect();
    let line = format!("\n{dir}\n");
    for d in dirs {
        if let Some(text) = edit::read_text_optional(tree, &format!("{LOCAL_DB}{d}/files"))?
            && text.contains(&line)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn install_one(
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    p: &mut Prepared,
    captured: &[&str],
    ctx: &EditContext,
    tx: &mut Transaction,
    rep: &mut InstallReport,
) -> Result<()> {
    let pin = p.fetched.pin.clone();
    let me = p.dir_name();
    // The version this one upgrades (its `backup` md5s are pacman's "original" hashes), and
    // the packages it replaces (`%REPLACES%`): all their files are this package's old files.
    let upgraded = pin.upgrades.as_ref().map(|v| format!("{}-{v}", pin.name));
    let (mut old_files, old_backup) = upgraded
        .as_ref()
        .and_then(|dir| tx.old.remove(dir))
        .unwrap_or_default();
    // Every old package's `backup` md5s, for `.pacsave` (libalpm `remove.c` `unlink_file`).
    let mut saved_md5 = old_backup.clone();
    for dir in &pin.removes {
        let (files, backup) = tx.old.remove(dir).unwrap_or_default();
        if files.is_empty() && backup.is_empty() {
            bail!(
                "the lock file says it replaces {dir}, which the tarball does not have installed: run `hc1img lock` on the profile"
            );
        }
        old_files.extend(files);
        saved_md5.extend(backup);
    }
    old_files.sort();
    old_files.dedup();
    let old_ids: BTreeMap<String, NodeId> = old_files
        .iter()
        .filter(|f| !f.ends_with('/'))
        .filter_map(|f| tree.lookup(f.as_bytes()).map(|id| (f.clone(), id)))
        .collect();
    // Their database entries go (their files once the new version's list is known).
    for dir in upgraded.iter().chain(&pin.removes) {
        edit::remove(tree, ctx, &format!("{LOCAL_DB}{dir}"))?;
    }

    // The one pass over the archive.
    let mut un = Unpack {
        me: me.clone(),
        tx,
        expected: BTreeSet::new(),
        info: &p.info,
        backup_paths: &p.backup_paths,
        old_set: old_files.iter().map(String::as_str).collect(),
        old_ids: &old_ids,
        captured,
        created: BTreeSet::new(),
        skip_dirs: BTreeSet::new(),
        existing_backup: BTreeMap::new(),
        old_backup: &old_backup,
        was_backup: BTreeMap::new(),
        md5_for: None,
        md5s: BTreeMap::new(),
        mtree: None,
        scriptlet: None,
        entries: Vec::new(),
        files: Vec::new(),
    };
    let default_meta = Meta::new(0o755, 0, 0, Timestamp::from_secs(ctx.timestamp));
    let mut stream = match &p.fast {
        Some(ff) => Inflated::open_fast(&p.fetched.path, ff.clone())?,
        None => Inflated::open_pinned(&p.fetched.path, &pin.sha256, None)?.0,
    };
    let r = import::import_with(
        &mut stream,
        tree,
        sink,
        &mut un,
        &default_meta,
        &import::BootShare::default(),
    )
    .with_context(|| format!("{}: cannot unpack", pin.filename))?;
    let (sha, _) = stream.finish()?;
    if sha != pin.sha256 {
        bail!(
            "{}: sha256 is {sha}, but the lock file pins {}; the build stops",
            pin.filename,
            pin.sha256
        );
    }
    let Unpack {
        tx,
        created: _,
        skip_dirs: _,
        existing_backup,
        was_backup,
        md5s,
        mtree,
        scriptlet,
        entries,
        mut files,
        ..
    } = un;
    files.sort();
    let mut backup = BTreeMap::new();
    for b in p.info.all("backup") {
        if let Some(m) = md5s.get(b) {
            backup.insert(b.to_string(), m.clone());
        }
    }
    rep.warnings.extend(
        r.warnings
            .into_iter()
            .map(|w| format!("{}: {w}", p.dir_name())),
    );
    rep.boot.extend(r.boot);

    // The old packages' files the new one does not ship (libalpm `remove.c`
    // `remove_package_files`). Those the stream replaced or removed were in the way of the new
    // version's entries; their directories are touched as if they had been removed first, as
    // before a pacman extraction. Files that changed hands to another package stay; a changed
    // `backup` file is kept as `.pacsave`; a directory goes when it is empty and no other
    // package lists it (children first: the list is sorted, walked backwards).
    if !old_files.is_empty() {
        let new: BTreeSet<&str> = files.iter().map(String::as_str).collect();
        for f in old_files.iter().rev().filter(|f| !new.contains(f.as_str())) {
            edit::rel(f)?;
            if let Some(dir) = f.strip_suffix('/') {
                let empty_dir = tree.lookup(dir.as_bytes()).is_some_and(
                    |id| matches!(&tree.node(id).kind, NodeKind::Dir(c) if c.is_empty()),
                );
                if empty_dir && !dir_owned(tree, f)? {
                    edit::remove(tree, ctx, dir)?;
                }
                continue;
            }
            if let Some(to) = tx.handed.get(f) {
                rep.handed
                    .push((f.clone(), old_owner(&tx.owners, f), to.clone()));
                continue;
            }
            match old_ids.get(f) {
                Some(&id) if tree.lookup(f.as_bytes()) == Some(id) => {
                    let saved = match saved_md5.get(f) {
                        Some(md5) => {
                            let node = tree.node(id).clone();
                            save_if_changed(tree, &*sink, f, node, md5, &default_meta, rep)?
                        }
                        None => false,
                    };
                    if saved {
                        tree.remove(f.as_bytes());
                    } else {
                        edit::remove(tree, ctx, f)?;
                    }
                }
                Some(_) => edit::touch_parent(tree, ctx, f),
                None => {}
            }
        }
    }
    rep.changes
        .added
        .push((pin.name.clone(), upgraded.is_some(), files.clone()));
    rep.changes.old_files.extend(old_files.iter().cloned());
    for dir in &pin.removes {
        // `NAME-PKGVER-PKGREL`: the name is what precedes the last two dashes.
        if let Some(name) = dir.rsplitn(3, '-').nth(2) {
            rep.changes.removed.push(name.to_string());
        }
    }
    if let Some(dir) = &upgraded {
        tx.pending.remove(dir);
    }
    for dir in &pin.removes {
        tx.pending.remove(dir);
    }

    // A file the old version had in `backup` and the new one ships as a plain file: the
    // package's file is installed, the admin's changed one kept as `.pacsave` (`add.c`).
    for (path, node) in was_backup {
        let shown = tree::display(&path);
        if let Some(md5) = old_backup.get(&shown) {
            save_if_changed(tree, &*sink, &shown, node, md5, &default_meta, rep)?;
        }
    }

    // Backup files that were on the image (pacman's rule, module doc).
    let mut keep: BTreeMap<Vec<u8>, Keep> = BTreeMap::new();
    for (path, (node, cur)) in existing_backup {
        let shown = tree::display(&path);
        let Some(new_md5) = backup.get(&shown) else {
            continue;
        };
        let orig = old_backup.get(&shown);
        if cur.as_deref() == Some(new_md5.as_str()) || (orig.is_some() && cur.as_ref() == orig) {
            // Unchanged from what was shipped: take the package's file.
        } else if orig == Some(new_md5) {
            keep.insert(path, Keep::Old(node));
        } else {
            keep.insert(path, Keep::Pacnew(node));
        }
    }
    for (path, k) in keep {
        let shown = tree::display(&path);
        match k {
            Keep::Old(old) => {
                tree.insert(&path, old, &default_meta)?;
            }
            Keep::Pacnew(old) => {
                let id = tree
                    .lookup(&path)
                    .with_context(|| format!("/{shown}: missing after unpacking"))?;
                let new = tree.node(id).clone();
                let pacnew = [path.as_slice(), b".pacnew"].concat();
                tree.insert(&pacnew, new, &default_meta)?;
                tree.insert(&path, old, &default_meta)?;
                rep.pacnew.push(format!("/{shown}.pacnew"));
            }
        }
    }
    p.mtree = mtree;
    p.scriptlet = scriptlet;
    p.entries = entries;
    p.files = files;
    p.backup = backup;

    // The local database entry.
    let dir = format!("{LOCAL_DB}{}", p.dir_name());
    edit::mkdir_p(tree, ctx, &dir, 0o755, 0, 0, true)?;
    edit::write_file(
        tree,
        ctx,
        &format!("{dir}/desc"),
        local_desc(p, ctx.timestamp),
        0o644,
        0,
        0,
    )?;
    edit::write_file(
        tree,
        ctx,
        &format!("{dir}/files"),
        local_files_text(p),
        0o644,
        0,
        0,
    )?;
    if let Some(m) = &p.mtree {
        edit::write_file(tree, ctx, &format!("{dir}/mtree"), m.clone(), 0o644, 0, 0)?;
    }
    if let Some((s, mtime)) = &p.scriptlet {
        let path = format!("{dir}/install");
        edit::write_file(tree, ctx, &path, s.clone(), 0o644, 0, 0)?;
        if let Some(id) = tree.lookup(path.as_bytes()) {
            tree.node_mut(id).meta.mtime = Timestamp::from_secs(*mtime);
        }
        rep.scriptlets.push(p.dir_name());
    }
    rep.installed.push(p.dir_name());
    Ok(())
}

/// The local `desc`, in `_alpm_local_db_write`'s order.
/// Keep `node` (the regular file at `path` as the image had it) as `PATH.pacsave` when its
/// contents differ from `md5`, the `%BACKUP%` md5 pacman recorded for it (libalpm `remove.c`
/// `unlink_file`, `add.c`). Returns whether it did.
fn save_if_changed(
    tree: &mut Tree,
    sink: &dyn DataSink,
    path: &str,
    node: Node,
    md5: &str,
    meta: &Meta,
    rep: &mut InstallReport,
) -> Result<bool> {
    let NodeKind::File(data) = &node.kind else {
        return Ok(false);
    };
    let cur = sink
        .read_data(data)
        .with_context(|| format!("/{path}: cannot read it back"))?;
    if md5_hex(&cur) == md5 {
        return Ok(false);
    }
    let pacsave = format!("{path}.pacsave");
    tree.insert(pacsave.as_bytes(), node, meta)?;
    rep.pacsave.push(format!("/{pacsave}"));
    Ok(true)
}

/// The installed package that owned `path` before the transaction.
fn old_owner(owners: &BTreeMap<String, String>, path: &str) -> String {
    owners.get(path).cloned().unwrap_or_default()
}

pub fn local_desc(p: &Prepared, installdate: i64) -> String {
    let i = &p.info;
    let mut s = String::new();
    let one = |s: &mut String, key: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            s.push_str(&format!("%{key}%\n{v}\n\n"));
        }
    };
    one(&mut s, "NAME", i.get("pkgname"));
    one(&mut s, "VERSION", i.get("pkgver"));
    one(&mut s, "BASE", i.get("pkgbase"));
    one(&mut s, "DESC", i.get("pkgdesc"));
    one(&mut s, "URL", i.get("url"));
    one(&mut s, "ARCH", i.get("arch"));
    one(
        &mut s,
        "BUILDDATE",
        i.get("builddate").filter(|v| *v != "0"),
    );
    let date = installdate.to_string();
    one(&mut s, "INSTALLDATE", Some(&date));
    one(&mut s, "PACKAGER", i.get("packager"));
    one(&mut s, "SIZE", i.get("size").filter(|v| *v != "0"));
    if p.fetched.pin.reason == "dependency" {
        one(&mut s, "REASON", Some("1"));
    }
    let list = |s: &mut String, key: &str, v: Vec<&str>| {
        if !v.is_empty() {
            s.push_str(&format!("%{key}%\n"));
            for x in v {
                s.push_str(x);
                s.push('\n');
            }
            s.push('\n');
        }
    };
    list(&mut s, "GROUPS", i.all("group"));
    list(&mut s, "LICENSE", i.all("license"));
    // pacman records how it validated the file: by its signature when it checked one.
    let validation = match p.fetched.pin.signature {
        Some(_) => "pgp",
        None => "sha256",
    };
    list(&mut s, "VALIDATION", vec![validation]);
    list(&mut s, "REPLACES", i.all("replaces"));
    list(&mut s, "DEPENDS", i.all("depend"));
    list(&mut s, "OPTDEPENDS", i.all("optdepend"));
    list(&mut s, "CONFLICTS", i.all("conflict"));
    list(&mut s, "PROVIDES", i.all("provides"));
    list(&mut s, "XDATA", i.all("xdata"));
    s
}

/// The local `files`.
pub fn local_files_text(p: &Prepared) -> String {
    let mut s = String::new();
    if !p.files.is_empty() {
        s.push_str("%FILES%\n");
        for f in &p.files {
            s.push_str(f);
            s.push('\n');
        }
        s.push('\n');
    }
    let backups: Vec<&str> = p.info.all("backup");
    if !backups.is_empty() {
        s.push_str("%BACKUP%\n");
        for b in backups {
            let m = p.backup.get(b).map(String::as_str).unwrap_or("");
            s.push_str(&format!("{b}\t{m}\n"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::PackagePin;
    use crate::tree::{BlockRun, DataRef};

    /// Keeps file data in memory.
    #[derive(Default)]
    struct MemSink(Vec<Vec<u8>>);

    impl DataSink for MemSink {
        fn write_data(&mut self, src: &mut dyn Read, len: u64) -> Result<DataRef> {
            let mut v = Vec::new();
            src.take(len).read_to_end(&mut v)?;
            self.0.push(v);
            Ok(DataRef {
                size: len,
                runs: vec![BlockRun {
                    start: self.0.len() as u64,
                    len: 1,
                }],
            })
        }

        fn read_data(&self, data: &FileData) -> Result<Vec<u8>> {
            match data {
                FileData::Bytes(b) => Ok(b.clone()),
                FileData::Stored(r) => Ok(self.0[r.runs[0].start as usize - 1].clone()),
            }
        }
    }

    /// A `.pkg.tar.zst` with `.PKGINFO` and `files`; returns it as fetched and pinned.
    fn package(
        dir: &std::path::Path,
        name: &str,
        ver: &str,
        backup: &[&str],
        files: &[(&str, &[u8])],
        upgrades: Option<&str>,
    ) -> Fetched {
        let mut entries = vec![pkginfo(name, ver, backup)];
        for (p, d) in files {
            entries.push(file(p, d));
        }
        archive(dir, name, ver, &entries, upgrades, "zst")
    }

    /// One archive member: name, type, mode, contents.
    type Member = (String, tar::EntryType, u32, Vec<u8>);

    fn file(path: &str, data: &[u8]) -> Member {
        (path.into(), tar::EntryType::Regular, 0o644, data.to_vec())
    }

    fn pkginfo(name: &str, ver: &str, backup: &[&str]) -> Member {
        let mut info = format!("pkgname = {name}\npkgver = {ver}\narch = armv7h\nsize = 3\n");
        for x in backup {
            info.push_str(&format!("backup = {x}\n"));
        }
        file(".PKGINFO", info.as_bytes())
    }

    /// A package of `members`, in that order, compressed as `ext` (`zst` or `xz`); returns it
    /// as fetched and pinned.
    fn archive(
        dir: &std::path::Path,
        name: &str,
        ver: &str,
        members: &[Member],
        upgrades: Option<&str>,
        ext: &str,
    ) -> Fetched {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            h.set_mtime(1000);
            h.set_cksum();
            b.append_data(&mut h, path, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let bytes = match ext {
            "zst" => zstd::encode_all(&tar[..], 3).unwrap(),
            _ => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                std::io::Write::write_all(&mut e, &tar).unwrap();
                e.finish().unwrap()
            }
        };
        let filename = format!("{name}-{ver}-armv7h.pkg.tar.{ext}");
        let path = dir.join(&filename);
        std::fs::write(&path, &bytes).unwrap();
        Fetched {
            pin: PackagePin {
                name: name.into(),
                version: ver.into(),
                reason: "explicit".into(),
                repo: "core".into(),
                filename,
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                size: None,
                url: String::new(),
                upgrades: upgrades.map(String::from),
                removes: Vec::new(),
                frees: None,
                signature: None,
                signer: None,
            },
            path,
        }
    }

    /// `n` bytes that do not compress (xorshift).
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn tree_with(files: &[(&str, &[u8])]) -> Tree {
        let m = Meta::new(0o755, 0, 0, Timestamp::from_secs(1));
        let mut t = Tree::new(m.clone());
        for (p, d) in files {
            t.insert(
                p.as_bytes(),
                Node {
                    meta: Meta::new(0o644, 0, 0, Timestamp::from_secs(1)),
                    kind: NodeKind::File(FileData::Bytes(d.to_vec())),
                },
                &m,
            )
            .unwrap();
        }
        t
    }

    fn install(t: &mut Tree, f: &[Fetched]) -> Result<InstallReport> {
        Ok(install_mem(t, f)?.0)
    }

    /// [`install`], keeping the data sink to read the files back ([`contents`]).
    fn install_mem(t: &mut Tree, f: &[Fetched]) -> Result<(InstallReport, MemSink)> {
        let mut prepared = f.iter().map(prepare).collect::<Result<Vec<_>>>()?;
        let mut sink = MemSink::default();
        let r = install_all(t, &mut sink, &mut prepared, &[], 5000)?;
        Ok((r, sink))
    }

    fn contents(t: &Tree, sink: &MemSink, path: &str) -> Option<Vec<u8>> {
        match &t.node(t.lookup(path.as_bytes())?).kind {
            NodeKind::File(d) => sink.read_data(d).ok(),
            _ => None,
        }
    }

    #[test]
    fn file_conflicts_name_the_owner() {
        let d = tempfile::tempdir().unwrap();
        let f = package(d.path(), "a", "1-1", &[], &[("usr/bin/x", b"a")], None);
        let mut t = tree_with(&[("usr/bin/x", b"tarball's")]);
        let e = format!(
            "{:#}",
            install(&mut t, std::slice::from_ref(&f)).unwrap_err()
        );
        assert!(
            e.contains("/usr/bin/x exists in the root filesystem (owned by no package)"),
            "{e}"
        );
        let mut t = tree_with(&[
            ("usr/bin/x", b"b's"),
            (
                "var/lib/pacman/local/b-1-1/files",
                b"%FILES%\nusr/\nusr/bin/\nusr/bin/x\n\n",
            ),
        ]);
        let e = format!("{:#}", install(&mut t, &[f]).unwrap_err());
        assert!(e.contains("(owned by b-1-1)"), "{e}");
    }

    #[test]
    fn upgrade_replaces_unmodified_backup_files_and_removes_old_files() {
        let d = tempfile::tempdir().unwrap();
        let old_conf: &[u8] = b"v1\n";
        let files = format!(
            "%FILES%\netc/\netc/a.conf\nusr/\nusr/share/old\n\n%BACKUP%\netc/a.conf\t{}\n\n",
            md5_hex(old_conf)
        );
        let mut t = tree_with(&[
            ("etc/a.conf", old_conf),
            ("usr/share/old", b"x"),
            (
                "var/lib/pacman/local/a-1-1/desc",
                b"%NAME%\na\n\n%VERSION%\n1-1\n\n",
            ),
            ("var/lib/pacman/local/a-1-1/files", files.as_bytes()),
        ]);
        let f = package(
            d.path(),
            "a",
            "2-1",
            &["etc/a.conf"],
            &[("etc/a.conf", b"v2\n")],
            Some("1-1"),
        );
        let r = install(&mut t, &[f]).unwrap();
        assert!(r.pacnew.is_empty());
        assert_eq!(bytes_at(&t, b"etc/a.conf").unwrap(), b"v2\n");
        assert!(t.lookup(b"usr/share/old").is_none());
        assert!(t.lookup(b"var/lib/pacman/local/a-1-1").is_none());
        let files = edit::read_text(&t, "var/lib/pacman/local/a-2-1/files").unwrap();
        assert_eq!(
            files,
            format!(
                "%FILES%\netc/a.conf\n\n%BACKUP%\netc/a.conf\t{}\n\n",
                md5_hex(b"v2\n")
            )
        );
        let desc = edit::read_text(&t, "var/lib/pacman/local/a-2-1/desc").unwrap();
        assert_eq!(
            desc,
            "%NAME%\na\n\n%VERSION%\n2-1\n\n%ARCH%\narmv7h\n\n%INSTALLDATE%\n5000\n\n%SIZE%\n3\n\n%VALIDATION%\nsha256\n\n"
        );
        assert_eq!(
            edit::read_text(&t, "var/lib/pacman/local/ALPM_DB_VERSION").unwrap(),
            "9\n"
        );
    }

    /// `NAME-VERSION`'s local database entry with `files` (and `backup` md5s) in `t`.
    fn installed(t: &mut Tree, dir: &str, files: &[&str], backup: &[(&str, &[u8])]) {
        let mut text = String::from("%FILES%\n");
        for f in files {
            text.push_str(f);
            text.push('\n');
        }
        text.push('\n');
        if !backup.is_empty() {
            text.push_str("%BACKUP%\n");
            for (p, d) in backup {
                text.push_str(&format!("{p}\t{}\n", md5_hex(d)));
            }
            text.push('\n');
        }
        let (name, ver) = dir.split_at(dir.find('-').unwrap());
        let m = Meta::new(0o755, 0, 0, Timestamp::from_secs(1));
        for (f, d) in [
            ("files", text),
            (
                "desc",
                format!("%NAME%\n{name}\n\n%VERSION%\n{}\n\n", &ver[1..]),
            ),
        ] {
            let node = Node {
                meta: Meta::new(0o644, 0, 0, Timestamp::from_secs(1)),
                kind: NodeKind::File(FileData::Bytes(d.into_bytes())),
            };
            t.insert(format!("{LOCAL_DB}{dir}/{f}").as_bytes(), node, &m)
                .unwrap();
        }
    }

    #[test]
    fn a_file_that_changes_hands_in_the_transaction_is_no_conflict() {
        let d = tempfile::tempdir().unwrap();
        let tarball = || {
            let mut t = tree_with(&[("usr/lib/fw/x", b"old x"), ("usr/lib/fw/y", b"old y")]);
            installed(
                &mut t,
                "fw-1-1",
                &[
                    "usr/",
                    "usr/lib/",
                    "usr/lib/fw/",
                    "usr/lib/fw/x",
                    "usr/lib/fw/y",
                ],
                &[],
            );
            t
        };
        let sub = package(
            d.path(),
            "fw-x",
            "2-1",
            &[],
            &[("usr/lib/fw/x", b"new x")],
            None,
        );
        let fw = package(
            d.path(),
            "fw",
            "2-1",
            &[],
            &[("usr/lib/fw/y", b"new y")],
            Some("1-1"),
        );
        // The new sub-package first (its dependency order), then the split package.
        for order in [[&sub, &fw], [&fw, &sub]] {
            let mut t = tarball();
            let (r, m) = install_mem(&mut t, &[order[0].clone(), order[1].clone()]).unwrap();
            assert_eq!(contents(&t, &m, "usr/lib/fw/x").unwrap(), b"new x");
            assert_eq!(contents(&t, &m, "usr/lib/fw/y").unwrap(), b"new y");
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
            let files = edit::read_text(&t, "var/lib/pacman/local/fw-2-1/files").unwrap();
            assert!(!files.contains("fw/x"), "{files}");
        }
        // Both new packages ship it: a conflict, whoever came first.
        let both = package(
            d.path(),
            "fw",
            "2-1",
            &[],
            &[("usr/lib/fw/x", b"x again"), ("usr/lib/fw/y", b"new y")],
            Some("1-1"),
        );
        let mut t = tarball();
        let e = format!("{:#}", install(&mut t, &[sub.clone(), both]).unwrap_err());
        assert!(
            e.contains("/usr/lib/fw/x is in both fw-x-2-1 and fw-2-1"),
            "{e}"
        );
        // Owned by a package the transaction leaves alone: still a conflict.
        let mut t = tarball();
        let e = format!("{:#}", install(&mut t, &[sub]).unwrap_err());
        assert!(e.contains("(owned by fw-1-1)"), "{e}");
    }

    #[test]
    fn a_replacement_removes_the_replaced_package_and_keeps_changed_backup_files() {
        let d = tempfile::tempdir().unwrap();
        let shipped: &[u8] = b"shipped\n";
        let mut t = tree_with(&[
            ("usr/bin/foo", b"foo 1"),
            ("etc/foo.conf", b"edited\n"),
            ("etc/foo.d/extra.conf", b"edited too\n"),
            ("usr/share/foo/data", b"data"),
        ]);
        installed(
            &mut t,
            "foo-1-1",
            &[
                "etc/",
                "etc/foo.conf",
                "etc/foo.d/",
                "etc/foo.d/extra.conf",
                "usr/",
                "usr/bin/",
                "usr/bin/foo",
                "usr/share/",
                "usr/share/foo/",
                "usr/share/foo/data",
            ],
            &[("etc/foo.conf", shipped), ("etc/foo.d/extra.conf", shipped)],
        );
        // Another package owns usr/share/: it stays when foo's files go.
        installed(&mut t, "bar-1-1", &["usr/", "usr/share/"], &[]);
        let mut ng = package(
            d.path(),
            "foo-ng",
            "2-1",
            &["etc/foo.conf"],
            &[("usr/bin/foo", b"foo 2"), ("etc/foo.conf", shipped)],
            None,
        );
        ng.pin.removes = vec!["foo-1-1".into()];
        let (r, m) = install_mem(&mut t, &[ng]).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(contents(&t, &m, "usr/bin/foo").unwrap(), b"foo 2");
        // No "original" hash for another package's file: the edited one stays, the new one
        // goes beside it (libalpm `add.c`).
        assert_eq!(contents(&t, &m, "etc/foo.conf").unwrap(), b"edited\n");
        assert_eq!(contents(&t, &m, "etc/foo.conf.pacnew").unwrap(), shipped);
        // A changed backup file nobody ships any more is saved.
        assert!(t.lookup(b"etc/foo.d/extra.conf").is_none());
        assert_eq!(
            contents(&t, &m, "etc/foo.d/extra.conf.pacsave").unwrap(),
            b"edited too\n"
        );
        assert_eq!(r.pacsave, ["/etc/foo.d/extra.conf.pacsave"]);
        assert!(t.lookup(b"usr/share/foo").is_none());
        assert!(t.lookup(b"usr/share").is_some());
        assert!(t.lookup(b"var/lib/pacman/local/foo-1-1").is_none());
        assert!(t.lookup(b"var/lib/pacman/local/foo-ng-2-1/desc").is_some());
    }

    #[test]
    fn a_corrupt_cached_package_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut f = package(d.path(), "a", "1-1", &[], &[("usr/bin/x", b"a")], None);
        f.pin.sha256 = "0".repeat(64);
        let e = format!("{:#}", prepare(&f).unwrap_err());
        assert!(e.contains("but the lock file pins 0000"), "{e}");
    }

    #[test]
    fn each_package_is_decoded_once() {
        let d = tempfile::tempdir().unwrap();
        let big = noise(1 << 20, 7);
        for ext in ["zst", "xz"] {
            let members = [
                pkginfo(ext, "1-1", &["etc/a.conf"]),
                file(".MTREE", b"mtree"),
                file("etc/a.conf", b"conf\n"),
                file("usr/lib/big", &big),
            ];
            let f = archive(d.path(), ext, "1-1", &members, None, ext);
            let raw = std::fs::read(&f.path).unwrap();
            let mut tar = Vec::new();
            input::decoder(input::Compression::sniff(&raw).unwrap(), &raw[..])
                .unwrap()
                .read_to_end(&mut tar)
                .unwrap();
            let before = input::decoded_bytes(&f.path);
            let mut t = tree_with(&[("etc/a.conf", b"conf\n")]);
            let r = install(&mut t, std::slice::from_ref(&f)).unwrap();
            assert!(r.pacnew.is_empty());
            // The whole archive once, and its head (`.PKGINFO`'s header and data) again.
            let decoded = input::decoded_bytes(&f.path) - before;
            assert!(
                decoded >= tar.len() as u64 && decoded <= tar.len() as u64 + 4096,
                "{ext}: {decoded} bytes decoded for a {}-byte archive",
                tar.len()
            );
            let files =
                edit::read_text(&t, &format!("var/lib/pacman/local/{ext}-1-1/files")).unwrap();
            assert_eq!(
                files,
                format!(
                    "%FILES%\netc/a.conf\nusr/lib/big\n\n%BACKUP%\netc/a.conf\t{}\n\n",
                    md5_hex(b"conf\n")
                )
            );
            assert_eq!(
                edit::read_text(&t, &format!("var/lib/pacman/local/{ext}-1-1/mtree")).unwrap(),
                "mtree"
            );
        }
    }

    #[test]
    fn pkginfo_after_the_files_is_still_found() {
        let d = tempfile::tempdir().unwrap();
        let members = [
            file("usr/bin/x", b"x"),
            file(".INSTALL", b"post_install() { :; }\n"),
            pkginfo("late", "1-1", &[]),
        ];
        let f = archive(d.path(), "late", "1-1", &members, None, "zst");
        let mut t = tree_with(&[]);
        let r = install(&mut t, &[f]).unwrap();
        assert_eq!(r.scriptlets, ["late-1-1"]);
        assert_eq!(bytes_at(&t, b"usr/bin/x"), None);
        assert!(t.lookup(b"usr/bin/x").is_some());
    }

    #[test]
    fn a_package_that_lists_a_file_before_its_directory_and_twice_is_not_in_conflict_with_itself() {
        let d = tempfile::tempdir().unwrap();
        let members = [
            pkginfo("own", "1-1", &[]),
            file("opt/own/x", b"1"),
            (
                "opt/own/".into(),
                tar::EntryType::Directory,
                0o700,
                Vec::new(),
            ),
            file("opt/own/x", b"2"),
        ];
        let f = archive(d.path(), "own", "1-1", &members, None, "zst");
        let mut t = tree_with(&[("usr/bin/y", b"y")]);
        install(&mut t, &[f]).unwrap();
        let id = t.lookup(b"opt/own").unwrap();
        assert_eq!(
            t.node(id).meta.perm,
            0o700,
            "the package's directory entry applies"
        );
        let files = edit::read_text(&t, "var/lib/pacman/local/own-1-1/files").unwrap();
        assert_eq!(files, "%FILES%\nopt/own/\nopt/own/x\nopt/own/x\n\n");
        // A directory that was on the image keeps its metadata.
        let members = [
            pkginfo("two", "1-1", &[]),
            ("usr/".into(), tar::EntryType::Directory, 0o700, Vec::new()),
            file("usr/bin/z", b"z"),
        ];
        let f = archive(d.path(), "two", "1-1", &members, None, "zst");
        install(&mut t, &[f]).unwrap();
        let id = t.lookup(b"usr").unwrap();
        assert_eq!(t.node(id).meta.perm, 0o755);
    }

    #[test]
    fn an_upgrade_whose_file_became_a_directory_replaces_it() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tree_with(&[
            ("usr/share/a/thing", b"old file"),
            ("usr/share/a/gone", b"old"),
            (
                "var/lib/pacman/local/a-1-1/files",
                b"%FILES%\nusr/\nusr/share/\nusr/share/a/\nusr/share/a/gone\nusr/share/a/thing\n\n",
            ),
        ]);
        let members = [
            pkginfo("a", "2-1", &[]),
            (
                "usr/share/a/thing/".into(),
                tar::EntryType::Directory,
                0o755,
                Vec::new(),
            ),
            file("usr/share/a/thing/inside", b"new"),
        ];
        let f = archive(d.path(), "a", "2-1", &members, Some("1-1"), "zst");
        let r = install(&mut t, &[f]).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(t.lookup(b"usr/share/a/thing/inside").is_some());
        assert!(t.lookup(b"usr/share/a/gone").is_none());
        // The directory that lost files was touched, as when pacman removes them.
        let id = t.lookup(b"usr/share/a").unwrap();
        assert_eq!(t.node(id).meta.mtime, Timestamp::from_secs(5000));
        assert!(t.lookup(b"var/lib/pacman/local/a-1-1").is_none());
    }

    #[test]
    fn pkginfo_lines() {
        let i = PkgInfo::parse(
            "# Generated by makepkg\npkgname = hello\npkgver = 1.0-1\ndepend = glibc\ndepend = bash>=5\nbackup = etc/hello.conf\n",
        );
        assert_eq!(i.get("pkgname"), Some("hello"));
        assert_eq!(i.all("depend"), ["glibc", "bash>=5"]);
        assert_eq!(i.get("nope"), None);
    }
}
