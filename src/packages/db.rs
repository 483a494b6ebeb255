//! Package databases: the sync databases of a repository (`<repo>.db`) and the local database
//! of an installed system (`/var/lib/pacman/local`).
//!
//! A sync database is a tar archive, compressed with gzip, zstd or xz (or not at all), holding
//! one directory `NAME-VERSION/` per package with a `desc` file (repo-add(8); libalpm
//! `be_sync.c`). The local database holds the same kind of `desc` file per installed package,
//! plus `files` (`%FILES%`, `%BACKUP%`), `mtree` and `install` (libalpm `be_local.c`).
//! A `desc` file is a sequence of sections: a `%KEY%` line, one value per line, then an empty
//! line.
//!
//! Databases are decompressed with the project's one reader, [`crate::rootfs::input::Inflated`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::version::Dep;
use crate::rootfs::input::Inflated;

/// A `desc` file: every section's values by key (without the `%`s).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desc(pub BTreeMap<String, Vec<String>>);

impl Desc {
    /// Parse a desc file; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Desc> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut cur: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                cur = None;
                continue;
            }
            match &cur {
                None => {
                    let Some(key) = line
                        .strip_prefix('%')
                        .and_then(|l| l.strip_suffix('%'))
                        .filter(|k| !k.is_empty())
                    else {
                        bail!(
                            "{what} line {}: expected a %SECTION% header, found {line:?}",
                            i + 1
                        );
                    };
                    map.entry(key.to_string()).or_default();
                    cur = Some(key.to_string());
                }
                Some(k) => map.entry(k.clone()).or_default().push(line.to_string()),
            }
        }
        Ok(Desc(map))
    }

    /// The first value of a section.
    pub fn one(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// All values of a section (empty when absent).
    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    fn deps(&self, key: &str) -> Vec<Dep> {
        self.all(key).iter().map(|s| Dep::parse(s)).collect()
    }
}

/// One package of a database, with what resolution needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The repository it comes from (`local` for installed packages).
    pub repo: String,
    /// `%FILENAME%` (sync databases only).
    pub filename: String,
    /// `%SHA256SUM%` (sync databases only).
    pub sha256: String,
    /// `%CSIZE%`: size of the package file.
    pub csize: Option<u64>,
    pub arch: String,
    pub depends: Vec<Dep>,
    pub provides: Vec<Dep>,
    pub conflicts: Vec<Dep>,
    pub replaces: Vec<Dep>,
    /// `%PGPSIG%`: the package file's detached signature, base64 (sync databases only).
    pub pgpsig: Option<String>,
    /// `%REASON%` is 1: installed as a dependency (local databases only).
    pub as_dependency: bool,
    /// `%SIZE%`: the installed size in bytes (local databases only).
    pub size: Option<u64>,
}

impl Package {
    /// Build from a parsed desc; `what` names the desc in errors.
    pub fn from_desc(d: &Desc, repo: &str, what: &str) -> Result<Package> {
        let name = d
            .one("NAME")
            .with_context(|| format!("{what}: no %NAME%"))?;
        let version = d
            .one("VERSION")
            .with_context(|| format!("{what}: no %VERSION%"))?;
        Ok(Package {
            name: name.to_string(),
            version: version.to_string(),
            repo: repo.to_string(),
            filename: d.one("FILENAME").unwrap_or_default().to_string(),
            sha256: d.one("SHA256SUM").unwrap_or_default().to_string(),
            csize: d.one("CSIZE").and_then(|s| s.parse().ok()),
            arch: d.one("ARCH").unwrap_or_default().to_string(),
            depends: d.deps("DEPENDS"),
            provides: d.deps("PROVIDES"),
            conflicts: d.deps("CONFLICTS"),
            replaces: d.deps("REPLACES"),
            pgpsig: d.one("PGPSIG").map(str::to_owned),
            as_dependency: d.one("REASON") == Some("1"),
            size: d.one("SIZE").and_then(|s| s.parse().ok()),
        })
    }

    /// `NAME-VERSION`, the directory name in a database.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// Read every `*/desc` of a (compressed) database tar at `path`, in archive order; `desc` is
/// called with the entry's directory name and the file's text. Other entries are skipped.
pub fn for_each_desc(
    path: &Path,
    mut desc: impl FnMut(&str, &str) -> Result<()>,
) -> Result<(String, u64)> {
    let mut stream = Inflated::open(path, None)?;
    {
        let mut ar = tar::Archive::new(&mut stream);
        for e in ar
            .entries()
            .with_context(|| format!("{}: not a tar archive", path.display()))?
        {
            let mut e = e.with_context(|| format!("{}: corrupt tar entry", path.display()))?;
            let p = e.path_bytes().into_owned();
            let p = String::from_utf8_lossy(&p).into_owned();
            let p = p.trim_start_matches("./");
            let Some(dir) = p.strip_suffix("/desc") else {
                continue;
            };
            if dir.contains('/') || !e.header().entry_type().is_file() {
                continue;
            }
            let mut text = String::new();
            e.read_to_string(&mut text)
                .with_context(|| format!("{}: {p}: not UTF-8 text", path.display()))?;
            desc(dir, &text).with_context(|| format!("{}: {p}", path.display()))?;
        }
    }
    stream.finish()
}

/// Read a sync database file (`core.db`) as the packages of repository `repo`, checking each
/// entry's directory name agrees with its `%NAME%`/`%VERSION%`.
pub fn read_sync_db(path: &Path, repo: &str) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    for_each_desc(path, |dir, text| {
        let d = Desc::parse(text, dir)?;
        let p = Package::from_desc(&d, repo, dir)?;
        if p.dir_name() != dir {
            bail!("entry {dir}/ describes {}", p.dir_name());
        }
        if p.filename.is_empty() || p.filename.contains('/') || !super::is_sha256(&p.sha256) {
            bail!("{dir}: needs %FILENAME% (a plain file name) and %SHA256SUM% (64 hex digits)");
        }
        out.push(p);
        Ok(())
    })
    .with_context(|| format!("repository {repo}: cannot read its database"))?;
    Ok(out)
}

/// The local database (installed packages) of a root tarball, read from its
/// `var/lib/pacman/local/*/desc` entries.
pub fn read_local_from_tarball(tarball: &Path) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    for_each_local_desc(tarball, |shown, d| {
        out.push(Package::from_desc(d, "local", shown)?);
        Ok(())
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The installed size (`%SIZE%`, bytes) of each package of a root tarball's local database,
/// by `NAME-VERSION`; packages whose desc has no `%SIZE%` are left out.
pub fn local_sizes_from_tarball(tarball: &Path) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for_each_local_desc(tarball, |shown, d| {
        let p = Package::from_desc(d, "local", shown)?;
        if let Some(n) = d.one("SIZE").and_then(|s| s.parse().ok()) {
            out.insert(p.dir_name(), n);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Call `f` with the path (for messages) and the parsed contents of every
/// `var/lib/pacman/local/*/desc` entry of the root tarball `tarball`, in archive order.
fn for_each_local_desc(tarball: &Path, mut f: impl FnMut(&str, &Desc) -> Result<()>) -> Result<()> {
    let mut stream = Inflated::open(tarball, None)?;
    {
        let mut ar = tar::Archive::new(&mut stream);
        for e in ar
            .entries()
            .with_context(|| format!("{}: not a tar archive", tarball.display()))?
        {
            let mut e = e.with_context(|| format!("{}: corrupt tar entry", tarball.display()))?;
            let raw = e.path_bytes().into_owned();
            let Some(comps) = crate::tree::normalize(&raw) else {
                continue;
            };
            let p = comps.join(&b'/');
            let Some(rest) = p.strip_prefix(LOCAL_DB.as_bytes()) else {
                continue;
            };
            let Some(dir) = rest.strip_suffix(b"/desc") else {
                continue;
            };
            if dir.contains(&b'/') || !e.header().entry_type().is_file() {
                continue;
            }
            let shown = String::from_utf8_lossy(&p).into_owned();
            let mut text = String::new();
            e.read_to_string(&mut text)
                .with_context(|| format!("{}: /{shown}: not UTF-8", tarball.display()))?;
            let d = Desc::parse(&text, &shown)?;
            f(&shown, &d)?;
        }
    }
    stream.finish()?;
    Ok(())
}

/// The local database of a root being built: the `desc` of every `var/lib/pacman/local/*/`
/// directory of `tree` (none when it has no local database), in name order, each checked to
/// name its package (`%NAME%`, `%VERSION%`). `read` gives a file's bytes, in memory or
/// already written to the image.
pub fn read_local_from_tree(
    tree: &crate::tree::Tree,
    read: &dyn Fn(&crate::tree::FileData) -> Result<Vec<u8>>,
) -> Result<Vec<Desc>> {
    use crate::tree::NodeKind;
    let Some(dir) = tree.lookup(LOCAL_DB.trim_end_matches('/').as_bytes()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, id) in tree.children(dir) {
        let Some(desc) = tree
            .children(id)
            .find(|(n, _)| *n == b"desc")
            .map(|(_, d)| d)
        else {
            continue;
        };
        let NodeKind::File(data) = &tree.node(desc).kind else {
            continue;
        };
        let shown = format!("/{LOCAL_DB}{}/desc", crate::tree::display(name));
        let text = String::from_utf8(read(data).with_context(|| format!("{shown}: cannot read"))?)
            .map_err(|_| anyhow::anyhow!("{shown}: not UTF-8 text"))?;
        let d = Desc::parse(&text, &shown)?;
        Package::from_desc(&d, "local", &shown)?;
        out.push(d);
    }
    Ok(out)
}

/// Where pacman keeps the local database, relative to the root, with a trailing `/`.
pub const LOCAL_DB: &str = "var/lib/pacman/local/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desc_sections() {
        let d = Desc::parse(
            "%NAME%\ndocker\n\n%VERSION%\n1:26.1-1\n\n%DEPENDS%\ncontainerd\nrunc>=1.2\n\n",
            "x",
        )
        .unwrap();
        let p = Package::from_desc(&d, "extra", "x").unwrap();
        assert_eq!(p.dir_name(), "docker-1:26.1-1");
        assert_eq!(p.depends[1].to_string(), "runc>=1.2");
        assert!(Desc::parse("NAME\nx\n", "f").is_err());
        assert!(Package::from_desc(&Desc::parse("%NAME%\nx\n", "f").unwrap(), "r", "f").is_err());
    }
}
