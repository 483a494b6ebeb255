//! Installing pinned packages into the build's tree, as `pacman -U` would on the node.
//!
//! Two passes over each (cached, pinned) `.pkg.tar.zst`/`.pkg.tar.xz`, both through the
//! project's one decompressor ([`crate::rootfs::input::Inflated`], which also re-checks the
//! package's sha256 against the pin):
//!
//! 1. [`prepare`] (before the tarball import) reads the metadata members makepkg writes at the
//!    top of the archive — `.PKGINFO` (`PKGBUILD(5)` fields as `key = value` lines), `.MTREE`
//!    (gzip'd mtree, copied verbatim into the local database), `.INSTALL` (the scriptlet, kept
//!    as the local database's `install`) — and lists the other entries, with the md5 of each
//!    `backup` file. `.BUILDINFO` and any other top-level dot file are skipped, as libalpm does.
//! 2. [`install_all`] (after the tarball import, before the edits) streams the archive through
//!    the tarball's own importer ([`crate::rootfs::import::import`]): file data goes straight
//!    into the ext4 data area, `/boot` files to the boot partition, the files the edits read
//!    into memory.
//!
//! pacman's rules (libalpm `add.c`, `conflict.c`), and what we do:
//! - A directory that already exists keeps its owner, mode and time (pacman only warns on a
//!   mismatch).
//! - A non-directory entry over an existing file is a file conflict (pacman: "exists in
//!   filesystem") and fails the build, unless the file belongs to the installed version this
//!   package upgrades, or is a `backup` file.
//! - `backup` files (libalpm `extract_single_file`): when the file on the image has the same
//!   contents as the package's, or (upgrade) still has the contents the old version shipped
//!   (its `%BACKUP%` md5), the package's file is installed. Otherwise the image's file stays:
//!   the package's goes beside it as `FILE.pacnew` — except on an upgrade whose new file equals
//!   the old one, where pacman installs nothing. `%BACKUP%` records the md5 of the package's
//!   file either way, as pacman does.
//! - On an upgrade the old version's files that the new one does not ship are removed, and its
//!   local database entry replaced.
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
use crate::rootfs::input::Inflated;
use crate::tree::{self, FileData, Meta, Node, NodeKind, Timestamp, Tree};

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

/// One package after the metadata pass.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub fetched: Fetched,
    pub info: PkgInfo,
    pub mtree: Option<Vec<u8>>,
    /// `.INSTALL` and its mtime.
    pub scriptlet: Option<(Vec<u8>, i64)>,
    /// Entries other than the metadata: normalised path and whether it is a directory.
    pub entries: Vec<(Vec<u8>, bool)>,
    /// `%FILES%` lines, sorted.
    pub files: Vec<String>,
    /// `backup` paths with the md5 of the package's file.
    pub backup: BTreeMap<String, String>,
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

/// Pass 1: read a package's metadata and entry list, check it is the pinned package.
pub fn prepare(f: &Fetched) -> Result<Prepared> {
    let shown = format!("package {} ({})", f.pin.filename, f.path.display());
    let mut stream = Inflated::open(&f.path, None).with_context(|| shown.clone())?;
    let mut info = None;
    let mut mtree = None;
    let mut scriptlet = None;
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let mut md5s: BTreeMap<String, String> = BTreeMap::new();
    {
        let mut ar = tar::Archive::new(&mut stream);
        // Raw mode with the importer's own pax parser, so both passes see the same names
        // (pax `path` records, GNU long names) whatever binary xattr records precede them.
        let mut pax_path: Option<Vec<u8>> = None;
        for e in ar
            .entries()
            .with_context(|| format!("{shown}: not a tar archive"))?
            .raw(true)
        {
            let mut e = e.with_context(|| format!("{shown}: corrupt archive"))?;
            match e.header().entry_type() {
                tar::EntryType::XHeader => {
                    let mut d = Vec::new();
                    e.read_to_end(&mut d)
                        .with_context(|| format!("{shown}: truncated pax header"))?;
                    pax_path = import::parse_pax(&d)
                        .with_context(|| format!("{shown}: bad pax header"))?
                        .into_iter()
                        .rev()
                        .find(|(k, _)| k == b"path")
                        .map(|(_, v)| v);
                    continue;
                }
                tar::EntryType::GNULongName => {
                    let mut d = Vec::new();
                    e.read_to_end(&mut d)
                        .with_context(|| format!("{shown}: truncated long name"))?;
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
            let name = String::from_utf8_lossy(&raw).into_owned();
            let mut data = Vec::new();
            match name.as_str() {
                ".PKGINFO" | ".MTREE" | ".INSTALL" => {
                    e.read_to_end(&mut data)
                        .with_context(|| format!("{shown}: {name}: truncated"))?;
                }
                _ => {}
            }
            match name.as_str() {
                ".PKGINFO" => {
                    let text = String::from_utf8(data)
                        .map_err(|_| anyhow::anyhow!("{shown}: .PKGINFO is not UTF-8"))?;
                    info = Some(PkgInfo::parse(&text));
                    continue;
                }
                ".MTREE" => {
                    mtree = Some(data);
                    continue;
                }
                ".INSTALL" => {
                    // pacman extracts it into the local database with the archive's time,
                    // which `.MTREE` records.
                    let t = e.header().mtime().unwrap_or(0) as i64;
                    scriptlet = Some((data, t));
                    continue;
                }
                _ => {}
            }
            if name.starts_with('.') {
                continue; // .BUILDINFO, .CHANGELOG, ... (libalpm ignores them)
            }
            let Some(comps) = tree::normalize(&raw) else {
                bail!("{shown}: entry {name:?} escapes the root");
            };
            let path = comps.join(&b'/');
            let kind = e.header().entry_type();
            let is_dir = kind.is_dir();
            if is_dir && !name.ends_with('/') {
                files.push(format!("{name}/"));
            } else {
                files.push(name.clone());
            }
            if kind.is_file() {
                let mut h = Md5::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = e
                        .read(&mut buf)
                        .with_context(|| format!("{shown}: {name}: truncated"))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                md5s.insert(tree::display(&path), hex::encode(h.finalize()));
            }
            entries.push((path, is_dir));
        }
    }
    let (sha, _) = stream.finish().with_context(|| shown.clone())?;
    if sha != f.pin.sha256 {
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
    let mut backup = BTreeMap::new();
    for b in info.all("backup") {
        if let Some(m) = md5s.get(b) {
            backup.insert(b.to_string(), m.clone());
        }
    }
    files.sort();
    Ok(Prepared {
        fetched: f.clone(),
        info,
        mtree,
        scriptlet,
        entries,
        files,
        backup,
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
            .any(|p| p.backup.contains_key(&tree::display(path)))
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

/// Pass 2: install every prepared package, in order. `captured` are the paths the edits read
/// (routed to memory); `timestamp` is `%INSTALLDATE%` and the time of what this writes.
pub fn install_all(
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    prepared: &[Prepared],
    captured: &[&str],
    timestamp: i64,
) -> Result<InstallReport> {
    let mut rep = InstallReport::default();
    let no_secrets = |_: &str| -> Result<Vec<u8>> { bail!("no secrets here") };
    let ctx = EditContext::new(timestamp, &no_secrets);
    for p in prepared {
        install_one(tree, sink, p, captured, &ctx, &mut rep)
            .with_context(|| format!("installing {}", p.dir_name()))?;
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

fn install_one(
    tree: &mut Tree,
    sink: &mut dyn DataSink,
    p: &Prepared,
    captured: &[&str],
    ctx: &EditContext,
    rep: &mut InstallReport,
) -> Result<()> {
    let pin = &p.fetched.pin;
    // The version this one replaces.
    let (old_files, old_backup) = match &pin.upgrades {
        Some(v) => local_files(tree, &format!("{}-{v}", pin.name))?,
        None => (Vec::new(), BTreeMap::new()),
    };
    let old_set: BTreeSet<&str> = old_files.iter().map(String::as_str).collect();

    // Conflicts, existing directories, backup files.
    let mut skip_dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut keep: BTreeMap<Vec<u8>, Keep> = BTreeMap::new();
    for (path, is_dir) in &p.entries {
        let Some(id) = tree.lookup(path) else {
            continue;
        };
        let shown = tree::display(path);
        let existing_dir = tree.node(id).kind.is_dir();
        if *is_dir {
            if existing_dir {
                skip_dirs.insert(path.clone());
            }
            continue;
        }
        if existing_dir {
            bail!("/{shown}: the package has a file where the image has a directory");
        }
        if let Some(new_md5) = p.backup.get(&shown) {
            let cur = bytes_at(tree, path).map(|b| md5_hex(&b));
            let orig = old_backup.get(&shown);
            let node = tree.node(id).clone();
            if cur.as_deref() == Some(new_md5.as_str()) || (orig.is_some() && cur.as_ref() == orig)
            {
                // Unchanged from what was shipped: take the package's file.
            } else if orig == Some(new_md5) {
                keep.insert(path.clone(), Keep::Old(node));
            } else {
                keep.insert(path.clone(), Keep::Pacnew(node));
            }
            continue;
        }
        if old_set.contains(shown.as_str()) {
            continue;
        }
        let who = owner(tree, &shown)
            .map(|o| format!("owned by {o}"))
            .unwrap_or_else(|| "owned by no package".to_string());
        bail!(
            "/{shown} exists in the root filesystem ({who}): a file conflict, as pacman would report"
        );
    }

    // Upgrade: drop the old version's files the new one does not ship, and its db entry.
    if let Some(v) = &pin.upgrades {
        let new: BTreeSet<&str> = p.files.iter().map(String::as_str).collect();
        for f in old_files.iter().filter(|f| !f.ends_with('/')) {
            if !new.contains(f.as_str()) {
                edit::remove(tree, ctx, f)?;
            }
        }
        edit::remove(tree, ctx, &format!("{LOCAL_DB}{}-{v}", pin.name))?;
    }

    // Stream the archive into the tree.
    let backup_paths: BTreeSet<Vec<u8>> = p.backup.keys().map(|k| k.as_bytes().to_vec()).collect();
    let route = |path: &[u8]| {
        // Metadata members, and directories that exist already (pacman keeps their owner,
        // mode and time).
        if (!path.contains(&b'/') && path.starts_with(b".")) || skip_dirs.contains(path) {
            Route::Drop
        } else if backup_paths.contains(path)
            || path.starts_with(super::firstboot::SYSUSERS_DIR.as_bytes())
        {
            Route::Capture
        } else {
            crate::rootfs::route(path, captured)
        }
    };
    let default_meta = Meta::new(0o755, 0, 0, Timestamp::from_secs(ctx.timestamp));
    let mut stream = Inflated::open(&p.fetched.path, None)?;
    let r = import::import(&mut stream, tree, sink, &route, &default_meta)
        .with_context(|| format!("{}: cannot unpack", p.fetched.pin.filename))?;
    let (sha, _) = stream.finish()?;
    if sha != pin.sha256 {
        bail!(
            "{}: sha256 is {sha}, but the lock file pins {}; the build stops",
            pin.filename,
            pin.sha256
        );
    }
    rep.warnings.extend(
        r.warnings
            .into_iter()
            .map(|w| format!("{}: {w}", p.dir_name())),
    );
    rep.boot.extend(r.boot);

    // Backup files kept from the image.
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
        let mut b = tar::Builder::new(Vec::new());
        let mut info = format!("pkgname = {name}\npkgver = {ver}\narch = armv7h\nsize = 3\n");
        for x in backup {
            info.push_str(&format!("backup = {x}\n"));
        }
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            h.set_mtime(1000);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add(".PKGINFO", info.as_bytes());
        for (p, d) in files {
            add(p, d);
        }
        let bytes = zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap();
        let path = dir.join(format!("{name}-{ver}.pkg.tar.zst"));
        std::fs::write(&path, &bytes).unwrap();
        Fetched {
            pin: PackagePin {
                name: name.into(),
                version: ver.into(),
                reason: "explicit".into(),
                repo: "core".into(),
                filename: format!("{name}-{ver}.pkg.tar.zst"),
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                size: None,
                url: String::new(),
                upgrades: upgrades.map(String::from),
                signature: None,
                signer: None,
            },
            path,
        }
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
        let prepared = f.iter().map(prepare).collect::<Result<Vec<_>>>()?;
        install_all(t, &mut MemSink::default(), &prepared, &[], 5000)
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

    #[test]
    fn a_corrupt_cached_package_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut f = package(d.path(), "a", "1-1", &[], &[("usr/bin/x", b"a")], None);
        f.pin.sha256 = "0".repeat(64);
        let e = format!("{:#}", prepare(&f).unwrap_err());
        assert!(e.contains("but the lock file pins 0000"), "{e}");
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
