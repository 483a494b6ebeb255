//! The repository database `hc1img vendor` writes beside the packages it copies: a sync
//! database as `repo-add(8)` makes it (a gzip'd tar holding one `NAME-VERSION/desc` per
//! package, the sections of libalpm's `be_sync.c`), made from each package's own `.PKGINFO`
//! and its pin (file name, size, sha256, signature as `%PGPSIG%`), so pacman and `hc1img lock`
//! can resolve against a vendored tree as against an Arch Linux ARM mirror. The archive is
//! byte-for-byte reproducible: entries sorted, owner 0, mtime 0, no gzip timestamp.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::install::PkgInfo;

/// One package of a vendored repository: its pin and its `.PKGINFO`.
pub struct Entry<'a> {
    pub pin: &'a super::PackagePin,
    pub info: &'a PkgInfo,
}

/// The sync `desc` of one package, in repo-add's section order.
pub fn sync_desc(e: &Entry<'_>) -> String {
    let (pin, i) = (e.pin, e.info);
    let mut s = String::new();
    let mut one = |key: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            s.push_str(&format!("%{key}%\n{v}\n\n"));
        }
    };
    let csize = pin.size.map(|n| n.to_string());
    one("FILENAME", Some(&pin.filename));
    one("NAME", Some(&pin.name));
    one("BASE", i.get("pkgbase"));
    one("VERSION", Some(&pin.version));
    one("DESC", i.get("pkgdesc"));
    one("CSIZE", csize.as_deref());
    one("ISIZE", i.get("size"));
    one("SHA256SUM", Some(&pin.sha256));
    one("PGPSIG", pin.signature.as_deref());
    one("URL", i.get("url"));
    one("ARCH", i.get("arch"));
    one("BUILDDATE", i.get("builddate"));
    one("PACKAGER", i.get("packager"));
    for (key, field) in [
        ("GROUPS", "group"),
        ("LICENSE", "license"),
        ("REPLACES", "replaces"),
        ("CONFLICTS", "conflict"),
        ("PROVIDES", "provides"),
        ("DEPENDS", "depend"),
        ("OPTDEPENDS", "optdepend"),
    ] {
        let v = i.all(field);
        if !v.is_empty() {
            s.push_str(&format!("%{key}%\n"));
            for x in v {
                s.push_str(x);
                s.push('\n');
            }
            s.push('\n');
        }
    }
    s
}

/// Write the sync database holding `entries` to `out` (a gzip'd tar).
pub fn write_db(out: &Path, entries: &[Entry<'_>]) -> Result<()> {
    let mut sorted: Vec<&Entry<'_>> = entries.iter().collect();
    sorted.sort_by(|a, b| a.pin.name.cmp(&b.pin.name));
    let f =
        std::fs::File::create(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(f, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let header = |size: u64, dir: bool| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    for e in sorted {
        let dir = format!("{}-{}", e.pin.name, e.pin.version);
        let desc = sync_desc(e);
        let mut h = header(0, true);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .with_context(|| format!("{}: cannot write", out.display()))?;
        let mut h = header(desc.len() as u64, false);
        b.append_data(&mut h, format!("{dir}/desc"), desc.as_bytes())
            .with_context(|| format!("{}: cannot write", out.display()))?;
    }
    let gz = b
        .into_inner()
        .with_context(|| format!("{}: cannot write", out.display()))?;
    let mut f = gz
        .finish()
        .with_context(|| format!("{}: cannot write", out.display()))?;
    f.flush()
        .with_context(|| format!("{}: cannot write", out.display()))
}
