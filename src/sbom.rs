//! `sbom.spdx.json`: what a build put into its images, as an SPDX 2.3 JSON document (SPDX
//! Specification v2.3: clause 6 document creation information, 7 packages, 10 other licensing
//! information, 11 relationships, 12 annotations; JSON field names from its annex, the
//! `spdx-schema.json` of 2.3).
//!
//! The document describes one package, `SPDXRef-Image`: the node image of the profile (name:
//! the profile's; version: the derivation hash). Its two files, `ssd.img` and `sd.img`, are
//! packages of their own (`SPDXRef-ImageFile-ssd.img`, `…-sd.img`, with their sha256) that it
//! `CONTAINS`; it is `GENERATED_FROM` the root tarball (`SPDXRef-Rootfs`: pinned URL, sha256,
//! signer); hc1img is its `BUILD_TOOL_OF` (`SPDXRef-Tool-hc1img`, with its version); and it
//! `CONTAINS` one package per entry of the image's final local pacman database
//! (`/var/lib/pacman/local/*/desc` after the transaction: the tarball's packages plus what
//! `[packages]` installed, minus what it upgraded or replaced), each with its name, version,
//! architecture (in its `pkg:alpm/archarm/…` purl), declared licence, homepage, packager (as
//! supplier), build date, and, when `[packages]` pinned it, the package file's name, sha256,
//! download URL and its signer's key fingerprint (an annotation). `DEPENDS_ON` links a package
//! to each installed package satisfying one of its `%DEPENDS%` (by name or `%PROVIDES%`, with
//! the version constraint, as pacman's `_alpm_depcmp`). Every input of the derivation (the same
//! `kind/name: digest` as `manifest.json`'s `inputs`: format, profile, board, overlay files,
//! package pins, secret digests, `SOURCE_DATE_EPOCH`) is an annotation on the image.
//!
//! Licences: Arch's `%LICENSE%` values are SPDX expressions since 2023, but older packages (and
//! the tarball's) say `GPL2`, `custom:Foo` or `BSD`. A value made only of SPDX identifiers hc1img
//! knows ([`SPDX_IDS`], [`SPDX_EXCEPTIONS`], any case) and `AND`/`OR`/`WITH`/parentheses is kept;
//! the unambiguous old names are mapped ([`OLD_ARCH_NAMES`]: `MPL2` is `MPL-2.0`, but `GPL2`
//! may mean "only" or "or later", so it is not); any other name becomes a `LicenseRef-…` listed
//! in `hasExtractedLicensingInfos` with the original string; no value at all is `NOASSERTION`.
//! Several values are joined with `AND`. URLs that SPDX validators reject as a download
//! location or homepage (`file://`, a local path) are left out (`NOASSERTION`), the URL kept in
//! the package's `sourceInfo`.
//!
//! Deterministic: no wall-clock time (`created` and the annotations' dates are the build's time,
//! `SOURCE_DATE_EPOCH` or the tarball's newest mtime), the namespace is derived from the
//! derivation hash, and packages are sorted by name: the same inputs give the same bytes.
//! `hc1img inspect --sbom` prints the document as a table ([`table`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::manifest::OutputFile;
use crate::packages::PackagePin;
use crate::packages::db::Desc;
use crate::packages::version::Dep;

/// The file name, beside `manifest.json`.
pub const FILE_NAME: &str = "sbom.spdx.json";

/// Where a build's root tarball came from.
#[derive(Clone, Debug)]
pub struct Tarball<'a> {
    /// The pinned URL (or path) it was fetched from.
    pub url: &'a str,
    pub sha256: &'a str,
    /// Fingerprint of the key whose signature over it was checked when it was pinned.
    pub signer: Option<&'a str>,
}

/// Everything the document is made from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub profile: &'a str,
    /// 64 hex digits.
    pub derivation: &'a str,
    /// hc1img's version.
    pub tool_version: &'a str,
    /// The build's time (Unix seconds): `SOURCE_DATE_EPOCH` or the tarball's newest mtime.
    pub created: i64,
    pub tarball: Tarball<'a>,
    /// The derivation's inputs, `kind/name` -> digest (as `manifest.json` lists them).
    pub inputs: &'a BTreeMap<String, String>,
    /// `ssd.img` and `sd.img`: size and sha256.
    pub images: &'a BTreeMap<String, OutputFile>,
    /// The image's final local database: one `desc` per installed package.
    pub installed: &'a [Desc],
    /// The lock file's pins of the packages `[packages]` installed.
    pub pins: &'a [PackagePin],
}

/// The SPDX document (only the fields hc1img writes), in the order they are written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: String,
    data_license: String,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(default)]
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    has_extracted_licensing_infos: Vec<ExtractedLicence>,
    #[serde(default)]
    relationships: Vec<Relationship>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    package_file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    supplier: Option<String>,
    #[serde(default)]
    download_location: String,
    #[serde(default)]
    files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(default)]
    license_concluded: String,
    #[serde(default)]
    license_declared: String,
    #[serde(default)]
    copyright_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    built_date: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checksum {
    algorithm: String,
    #[serde(rename = "checksumValue")]
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: String,
    reference_type: String,
    reference_locator: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Annotation {
    annotation_date: String,
    annotation_type: String,
    annotator: String,
    comment: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExtractedLicence {
    license_id: String,
    extracted_text: String,
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: String,
    related_spdx_element: String,
}

const NOASSERTION: &str = "NOASSERTION";
const IMAGE: &str = "SPDXRef-Image";
const ROOTFS: &str = "SPDXRef-Rootfs";
const TOOL: &str = "SPDXRef-Tool-hc1img";
/// The comment that starts a signer annotation ([`table`] reads it back).
const SIGNER: &str = "OpenPGP signer (primary key fingerprint): ";

/// `YYYY-MM-DDThh:mm:ssZ` (UTC) of a Unix time, as SPDX dates are written; before 1970 is
/// written as 1970.
pub fn spdx_date(unix: i64) -> String {
    let t = u64::try_from(unix).unwrap_or(0);
    let s = t % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        crate::source::ymd(t),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The document as JSON text (pretty, ending in a newline).
pub fn render(inp: &Inputs<'_>) -> Result<String> {
    let doc = document(inp);
    let mut text = serde_json::to_string_pretty(&doc).context("cannot serialise the SBOM")?;
    text.push('\n');
    Ok(text)
}

/// Write the document to `path`.
pub fn write(path: &Path, inp: &Inputs<'_>) -> Result<()> {
    let text = render(inp)?;
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

/// One installed package, read from its `desc`.
struct Installed<'a> {
    name: &'a str,
    version: &'a str,
    desc: &'a Desc,
    depends: Vec<Dep>,
    provides: Vec<Dep>,
    id: String,
}

fn document(inp: &Inputs<'_>) -> Document {
    let date = spdx_date(inp.created);
    let tool = format!("Tool: hc1img-{}", inp.tool_version);
    let note = |comment: String| Annotation {
        annotation_date: date.clone(),
        annotation_type: "OTHER".into(),
        annotator: tool.clone(),
        comment,
    };
    let mut licences = Licences::default();
    let mut packages = Vec::new();
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE)];

    packages.push(Package {
        comment: Some(format!(
            "The node image hc1img built from profile {} (ssd.img and sd.img); its version is \
             the derivation hash, which covers every input listed in the annotations.",
            inp.profile
        )),
        version_info: Some(inp.derivation.to_string()),
        primary_package_purpose: Some("OPERATING-SYSTEM".into()),
        built_date: Some(date.clone()),
        annotations: inp
            .inputs
            .iter()
            .map(|(k, v)| note(format!("derivation input {k}: {v}")))
            .collect(),
        ..package(IMAGE, inp.profile)
    });
    for (name, o) in inp.images {
        let id = format!("SPDXRef-ImageFile-{}", spdx_idstring(name));
        packages.push(Package {
            package_file_name: Some(name.clone()),
            checksums: vec![sha256(&o.sha256)],
            primary_package_purpose: Some("FILE".into()),
            comment: Some(format!("{} bytes", o.size)),
            ..package(&id, name)
        });
        rels.push(rel(IMAGE, "CONTAINS", &id));
    }
    let file = crate::source::mirror::file_name(inp.tarball.url);
    packages.push(Package {
        package_file_name: Some(file.to_string()),
        download_location: download_location(inp.tarball.url),
        checksums: vec![sha256(inp.tarball.sha256)],
        source_info: Some(format!("the pinned root tarball, from {}", inp.tarball.url)),
        primary_package_purpose: Some("ARCHIVE".into()),
        annotations: inp
            .tarball
            .signer
            .map(|s| {
                note(format!(
                    "{SIGNER}{s}; its signature over the tarball was verified when it was pinned"
                ))
            })
            .into_iter()
            .collect(),
        ..package(ROOTFS, file)
    });
    rels.push(rel(IMAGE, "GENERATED_FROM", ROOTFS));
    packages.push(Package {
        version_info: Some(inp.tool_version.to_string()),
        primary_package_purpose: Some("APPLICATION".into()),
        ..package(TOOL, "hc1img")
    });
    rels.push(rel(TOOL, "BUILD_TOOL_OF", IMAGE));

    // The installed packages, by name (a local database holds one version of each).
    let mut installed: Vec<Installed<'_>> = inp
        .installed
        .iter()
        .filter_map(|d| {
            Some(Installed {
                name: d.one("NAME")?,
                version: d.one("VERSION")?,
                desc: d,
                depends: d.all("DEPENDS").iter().map(|s| Dep::parse(s)).collect(),
                provides: d.all("PROVIDES").iter().map(|s| Dep::parse(s)).collect(),
                id: String::new(),
            })
        })
        .collect();
    installed.sort_by(|a, b| (a.name, a.version).cmp(&(b.name, b.version)));
    let mut taken = std::collections::BTreeSet::new();
    for i in &mut installed {
        let base = format!("SPDXRef-Package-{}", spdx_idstring(i.name));
        let mut id = base.clone();
        let mut n = 2;
        while !taken.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        i.id = id;
    }
    let pins: BTreeMap<(&str, &str), &PackagePin> = inp
        .pins
        .iter()
        .map(|p| ((p.name.as_str(), p.version.as_str()), p))
        .collect();
    for i in &installed {
        packages.push(installed_package(
            i,
            pins.get(&(i.name, i.version)).copied(),
            file,
            &mut licences,
            &note,
        ));
        rels.push(rel(IMAGE, "CONTAINS", &i.id));
    }
    for i in &installed {
        let mut deps = std::collections::BTreeSet::new();
        for d in &i.depends {
            // The package of that name first, then a provider (`_alpm_depcmp`).
            let by_name = installed.iter().find(|t| d.literal(t.name, t.version));
            if let Some(t) =
                by_name.or_else(|| installed.iter().find(|t| d.by_provides(&t.provides)))
                && t.id != i.id
            {
                deps.insert(t.id.as_str());
            }
        }
        for t in deps {
            rels.push(rel(&i.id, "DEPENDS_ON", t));
        }
    }

    Document {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: format!(
            "hc1img-{}-{}",
            inp.profile,
            &inp.derivation[..inp.derivation.len().min(12)]
        ),
        document_namespace: format!(
            "https://spdx.org/spdxdocs/hc1img-{}-{}",
            spdx_idstring(inp.profile),
            inp.derivation
        ),
        creation_info: CreationInfo {
            created: date.clone(),
            creators: vec![tool.clone()],
            comment: Some(format!(
                "The software in the images hc1img built for profile {} (derivation {}): the \
                 packages are the image's final local pacman database.",
                inp.profile, inp.derivation
            )),
        },
        packages,
        has_extracted_licensing_infos: licences.extracted(),
        relationships: rels,
    }
}

/// The SPDX package of one installed pacman package.
fn installed_package(
    i: &Installed<'_>,
    pin: Option<&PackagePin>,
    tarball: &str,
    licences: &mut Licences,
    note: &dyn Fn(String) -> Annotation,
) -> Package {
    let d = i.desc;
    let arch = d.one("ARCH").unwrap_or("any");
    let purl = format!(
        "pkg:alpm/archarm/{}@{}?arch={}",
        purl_encode(i.name, false),
        purl_encode(i.version, true),
        purl_encode(arch, false)
    );
    let mut p = Package {
        version_info: Some(i.version.to_string()),
        supplier: d.one("PACKAGER").and_then(supplier),
        homepage: d.one("URL").filter(|u| spdx_url(u)).map(str::to_owned),
        license_declared: licences.expression(d.all("LICENSE")),
        description: d.one("DESC").map(str::to_owned),
        external_refs: vec![ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: purl,
        }],
        primary_package_purpose: Some("INSTALL".into()),
        built_date: d
            .one("BUILDDATE")
            .and_then(|s| s.parse::<i64>().ok())
            .map(spdx_date),
        source_info: Some(format!("installed in the root tarball {tarball}")),
        ..package(&i.id, i.name)
    };
    if let Some(pin) = pin {
        p.package_file_name = Some(pin.filename.clone());
        p.checksums = vec![sha256(&pin.sha256)];
        p.download_location = download_location(&pin.url);
        p.source_info = Some(format!(
            "installed by hc1img from {} (repository {}, pinned in the lock file), fetched from {}",
            pin.filename, pin.repo, pin.url
        ));
        if let Some(s) = &pin.signer {
            p.annotations.push(note(format!(
                "{SIGNER}{s}; its signature over {} was verified when it was pinned",
                pin.filename
            )));
        }
    }
    p
}

/// A package with the fields every package has, the rest empty.
fn package(id: &str, name: &str) -> Package {
    Package {
        spdx_id: id.to_string(),
        name: name.to_string(),
        version_info: None,
        package_file_name: None,
        supplier: None,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        checksums: Vec::new(),
        homepage: None,
        source_info: None,
        license_concluded: NOASSERTION.into(),
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        description: None,
        comment: None,
        external_refs: Vec::new(),
        primary_package_purpose: None,
        built_date: None,
        annotations: Vec::new(),
    }
}

fn sha256(hex: &str) -> Checksum {
    Checksum {
        algorithm: "SHA256".into(),
        value: hex.to_string(),
    }
}

fn rel(a: &str, typ: &str, b: &str) -> Relationship {
    Relationship {
        spdx_element_id: a.to_string(),
        relationship_type: typ.to_string(),
        related_spdx_element: b.to_string(),
    }
}

/// `s` as an SPDX `idstring` (letters, digits, `.` and `-`): `+` becomes `plus`, any other
/// character `-`.
fn spdx_idstring(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => out.push(c),
            '+' => out.push_str("plus"),
            _ => out.push('-'),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// Percent-encode for a purl component (the purl specification): everything but unreserved
/// characters, and `:` too unless `keep_colon` (an epoch in a version reads as written).
fn purl_encode(s: &str, keep_colon: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b':' if keep_colon => out.push(':'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Whether SPDX validators take `u` as a URL (a download location or a homepage): `http`,
/// `https`, `ftp` or `sftp`, a host name with a dot and a top-level domain of 2 to 5 letters, an
/// optional port, and no white space.
fn spdx_url(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https" | "ftp" | "sftp") || u.chars().any(char::is_whitespace) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match host_port.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let Some(tld) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && (2..=5).contains(&tld.len())
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `url` as a `downloadLocation`, or `NOASSERTION` when validators would not take it.
fn download_location(url: &str) -> String {
    if spdx_url(url) {
        url.to_string()
    } else {
        NOASSERTION.into()
    }
}

/// `PACKAGER` (`Name <email>`) as an SPDX supplier (`Person: Name (email)`).
fn supplier(packager: &str) -> Option<String> {
    let clean = |s: &str| {
        s.chars()
            .filter(|c| !matches!(c, '(' | ')' | '<' | '>') && !c.is_control())
            .collect::<String>()
            .trim()
            .to_string()
    };
    let (name, email) = match packager.split_once('<') {
        Some((n, rest)) => (clean(n), clean(rest.split('>').next().unwrap_or(""))),
        None => (clean(packager), String::new()),
    };
    if name.is_empty() {
        return None;
    }
    Some(if email.is_empty() {
        format!("Person: {name}")
    } else {
        format!("Person: {name} ({email})")
    })
}

/// SPDX licence identifiers hc1img passes through as they are (the ones Arch's packages use
/// most; any other becomes a `LicenseRef-`). Matched without regard to case.
pub const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-2.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "blessing",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-2-Clause-Patent",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.2",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "Info-ZIP",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "libtiff",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MIT-CMU",
    "MPL-1.1",
    "MPL-2.0",
    "NCSA",
    "OFL-1.1",
    "OLDAP-2.8",
    "OpenSSL",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "SGI-B-2.0",
    "Sleepycat",
    "TCL",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// SPDX licence exceptions (after `WITH`) passed through.
pub const SPDX_EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-3.0",
    "Autoconf-exception-generic",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "Font-exception-2.0",
    "GCC-exception-3.1",
    "GPL-3.0-linking-exception",
    "Libtool-exception",
    "Linux-syscall-note",
    "LLVM-exception",
];

/// Arch's old licence names (`/usr/share/licenses/common`) that name one SPDX licence. The
/// others (`GPL`, `GPL2`, `LGPL`, `AGPL3`, `Apache`, `BSD`, `PHP`, `PSF`, `ZPL`, …) do not
/// say which version or whether "or later" applies, and become `LicenseRef-`s.
pub const OLD_ARCH_NAMES: &[(&str, &str)] = &[
    ("Artistic2.0", "Artistic-2.0"),
    ("CCPL:by", "CC-BY-3.0"),
    ("MPL2", "MPL-2.0"),
    ("PerlArtistic", "Artistic-1.0-Perl"),
    ("RUBY", "Ruby"),
];

/// The licence references a document needs, by the Arch name they stand for.
#[derive(Default)]
struct Licences {
    refs: BTreeMap<String, String>,
}

impl Licences {
    /// The `licenseDeclared` of a package whose `%LICENSE%` values are `values`.
    fn expression(&mut self, values: &[String]) -> String {
        let parts: Vec<String> = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| self.one(v))
            .collect();
        match parts.as_slice() {
            [] => NOASSERTION.into(),
            [one] => one.clone(),
            many => many
                .iter()
                .map(|p| {
                    if p.contains(' ') && !is_wrapped(p) {
                        format!("({p})")
                    } else {
                        p.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }

    /// One `%LICENSE%` value as an SPDX expression: itself when it is one hc1img can check,
    /// the SPDX licence an old Arch name stands for, else a reference to the whole value (an
    /// unknown name inside an expression included: no operator is lost or invented).
    fn one(&mut self, value: &str) -> String {
        if let Some(e) = spdx_expression(value) {
            return e;
        }
        match OLD_ARCH_NAMES
            .iter()
            .find(|(old, _)| old.eq_ignore_ascii_case(value))
        {
            Some((_, id)) => (*id).to_string(),
            None => self.reference(value),
        }
    }

    /// The `LicenseRef-` standing for the Arch licence name `value`.
    fn reference(&mut self, value: &str) -> String {
        if let Some(id) = self.refs.get(value) {
            return id.clone();
        }
        let base = format!("LicenseRef-{}", spdx_idstring(value));
        let mut id = base.clone();
        let mut n = 2;
        while self.refs.values().any(|v| *v == id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        self.refs.insert(value.to_string(), id.clone());
        id
    }

    fn extracted(&self) -> Vec<ExtractedLicence> {
        let mut v: Vec<ExtractedLicence> = self
            .refs
            .iter()
            .map(|(name, id)| ExtractedLicence {
                license_id: id.clone(),
                extracted_text: format!(
                    "The licence the package database names \"{name}\" (its text is in the \
                     image under /usr/share/licenses/)."
                ),
                name: name.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.license_id.cmp(&b.license_id));
        v
    }
}

/// `name` as written in `list`, compared without regard to case.
fn known<'a>(name: &str, list: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    list.into_iter().find(|k| k.eq_ignore_ascii_case(name))
}

/// What the last token of a licence expression was ([`spdx_expression`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Start,
    Open,
    Operator,
    With,
    Licence,
    Exception,
    Close,
}

/// `value` as an SPDX expression when it is made only of known identifiers, `AND`, `OR`,
/// `WITH` + a known exception and balanced parentheses, in a valid order (SPDX 2.3 annex D).
fn spdx_expression(value: &str) -> Option<String> {
    use Last::*;
    let spaced = value.replace('(', " ( ").replace(')', " ) ");
    let mut out: Vec<&str> = Vec::new();
    let mut depth = 0usize;
    let mut last = Start;
    for t in spaced.split_whitespace() {
        let operand = matches!(last, Start | Open | Operator);
        let (next, word) = match t {
            "(" if operand => {
                depth += 1;
                (Open, "(")
            }
            ")" if matches!(last, Licence | Exception | Close) && depth > 0 => {
                depth -= 1;
                (Close, ")")
            }
            "AND" | "OR" if matches!(last, Licence | Exception | Close) => (Operator, t),
            "WITH" if last == Licence => (With, t),
            _ if last == With => (Exception, known(t, SPDX_EXCEPTIONS.iter().copied())?),
            _ if operand => (Licence, known(t, SPDX_IDS.iter().copied())?),
            _ => return None,
        };
        out.push(word);
        last = next;
    }
    if !matches!(last, Licence | Exception | Close) || depth != 0 {
        return None;
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// Whether the expression `e` is one parenthesised group: `(…)` whose first `(` closes last.
fn is_wrapped(e: &str) -> bool {
    if !e.starts_with('(') {
        return false;
    }
    let mut depth = 0usize;
    for (i, c) in e.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1 == e.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// `hc1img inspect --sbom`: the document at `path` (an `sbom.spdx.json`, or an output
/// directory holding one) as a table: the image, the tarball, then one line per installed
/// package (name, version, architecture, licence, sha256 of the pinned package file, signer).
pub fn table(path: &Path) -> Result<String> {
    let file = if path.is_dir() {
        path.join(FILE_NAME)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "{}: cannot read (give an output directory or its {FILE_NAME})",
            file.display()
        )
    })?;
    let doc: Document = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not an SPDX 2.3 JSON document as hc1img writes them",
            file.display()
        )
    })?;
    let signer = |p: &Package| {
        p.annotations
            .iter()
            .find_map(|a| a.comment.strip_prefix(SIGNER))
            .map(|s| s.split(';').next().unwrap_or(s).to_string())
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{}  ({}, created {})\n",
        doc.name, doc.spdx_version, doc.creation_info.created
    ));
    let mut rows = Vec::new();
    for p in &doc.packages {
        if p.spdx_id == ROOTFS {
            out.push_str(&format!(
                "tarball  {}  sha256 {}  signer {}\n",
                p.name,
                p.checksums.first().map_or("-", |c| c.value.as_str()),
                signer(p).as_deref().unwrap_or("-")
            ));
        }
        let Some(purl) = p
            .external_refs
            .iter()
            .find(|r| r.reference_type == "purl" && r.reference_locator.starts_with("pkg:alpm/"))
        else {
            continue;
        };
        let arch = purl
            .reference_locator
            .split_once("?arch=")
            .map_or("-", |(_, a)| a);
        rows.push([
            p.name.clone(),
            p.version_info.clone().unwrap_or_else(|| "-".into()),
            arch.to_string(),
            p.license_declared.clone(),
            p.checksums
                .first()
                .map_or_else(|| "-".into(), |c| c.value.chars().take(16).collect()),
            signer(p).unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&format!("{} installed packages\n", rows.len()));
    let head = ["NAME", "VERSION", "ARCH", "LICENCE", "SHA256", "SIGNER"].map(str::to_owned);
    let mut widths = head.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(text: &str) -> Desc {
        Desc::parse(text, "test").unwrap()
    }

    #[test]
    fn licences_keep_spdx_map_the_obvious_and_refer_to_the_rest() {
        let mut l = Licences::default();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(l.expression(&v(&["mit"])), "MIT");
        assert_eq!(
            l.expression(&v(&["GPL-2.0-or-later WITH linux-syscall-note"])),
            "GPL-2.0-or-later WITH Linux-syscall-note"
        );
        assert_eq!(
            l.expression(&v(&["(MIT OR Apache-2.0)", "zlib"])),
            "(MIT OR Apache-2.0) AND Zlib"
        );
        assert_eq!(l.expression(&v(&["MPL2"])), "MPL-2.0");
        assert_eq!(l.expression(&v(&["GPL2"])), "LicenseRef-GPL2");
        assert_eq!(
            l.expression(&v(&["custom:Foo Bar", "GPL2"])),
            "LicenseRef-custom-Foo-Bar AND LicenseRef-GPL2"
        );
        // An unknown name inside an expression: the value as one reference.
        assert_eq!(
            l.expression(&v(&["MIT OR WeirdLicence"])),
            "LicenseRef-MIT-OR-WeirdLicence"
        );
        // Broken expressions are references too, never passed on.
        for bad in [
            "MIT AND",
            "(MIT",
            "MIT WITH MIT",
            "AND MIT",
            "MIT Apache-2.0",
        ] {
            assert!(spdx_expression(bad).is_none(), "{bad}");
        }
        assert_eq!(l.expression(&[]), NOASSERTION);
        // Two names that make the same id stay apart.
        assert_eq!(
            l.expression(&v(&["custom:a+b"])),
            "LicenseRef-custom-aplusb"
        );
        assert_eq!(
            l.expression(&v(&["custom-aplusb"])),
            "LicenseRef-custom-aplusb-2"
        );
        assert_eq!(l.extracted().len(), 5);
    }

    #[test]
    fn urls_suppliers_ids_and_dates() {
        assert!(spdx_url("https://archlinuxarm.org/packages/armv7h/docker"));
        assert!(spdx_url("http://os.archlinuxarm.org:8080/os/x.tar.gz"));
        for bad in [
            "file:///tmp/x.tar.gz",
            "/tmp/x.tar.gz",
            "https://localhost/x",
            "https://a b.org/",
            "https://x.org:/",
        ] {
            assert!(!spdx_url(bad), "{bad}");
        }
        assert_eq!(
            supplier("Arch Linux ARM Build System <builder+xu3@archlinuxarm.org>").as_deref(),
            Some("Person: Arch Linux ARM Build System (builder+xu3@archlinuxarm.org)")
        );
        assert_eq!(supplier("  ").as_deref(), None);
        assert_eq!(spdx_idstring("libstdc++_x"), "libstdcplusplus-x");
        assert_eq!(purl_encode("1:2.3+4", true), "1:2.3%2B4");
        assert_eq!(spdx_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(spdx_date(1_700_000_500), "2023-11-14T22:21:40Z");
        assert_eq!(spdx_date(-5), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_document_lists_every_package_with_its_pin_and_dependencies() {
        let installed = vec![
            desc(
                "%NAME%\nhello\n\n%VERSION%\n2:1.0-3\n\n%ARCH%\narmv7h\n\n%URL%\nhttps://example.org/hello\n\n%LICENSE%\nMIT\n\n%DEPENDS%\nlibfoo>=1.1\nsh\nmissing\n\n",
            ),
            desc("%NAME%\nlibfoo\n\n%VERSION%\n1.1-1\n\n%ARCH%\narmv7h\n\n"),
            desc("%NAME%\ndash\n\n%VERSION%\n0.5-1\n\n%PROVIDES%\nsh\n\n"),
        ];
        let pins = vec![PackagePin {
            name: "hello".into(),
            version: "2:1.0-3".into(),
            reason: "explicit".into(),
            repo: "extra".into(),
            filename: "hello-2:1.0-3-armv7h.pkg.tar.zst".into(),
            sha256: "ab".repeat(32),
            size: None,
            url: "file:///m/extra/hello-2:1.0-3-armv7h.pkg.tar.zst".into(),
            upgrades: None,
            removes: Vec::new(),
            frees: None,
            signature: None,
            signer: Some("F".repeat(40)),
        }];
        let inputs = BTreeMap::from([("profile/pk".to_string(), "cd".repeat(32))]);
        let images = BTreeMap::from([(
            "ssd.img".to_string(),
            OutputFile {
                size: 1,
                sha256: "ef".repeat(32),
            },
        )]);
        let inp = Inputs {
            profile: "pk",
            derivation: &"01".repeat(32),
            tool_version: "0.1.0",
            created: 1_700_000_500,
            tarball: Tarball {
                url: "https://os.archlinuxarm.org/os/ArchLinuxARM-odroid-xu3-latest.tar.gz",
                sha256: &"23".repeat(32),
                signer: Some("68B3537F39A313B3E574D06777193F152BDBE6A6"),
            },
            inputs: &inputs,
            images: &images,
            installed: &installed,
            pins: &pins,
        };
        let text = render(&inp).unwrap();
        assert_eq!(text, render(&inp).unwrap(), "same inputs, same bytes");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:21:40Z");
        let names: Vec<&str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "pk",
                "ssd.img",
                "ArchLinuxARM-odroid-xu3-latest.tar.gz",
                "hc1img",
                "dash",
                "hello",
                "libfoo"
            ]
        );
        let rels: Vec<String> = v["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["spdxElementId"].as_str().unwrap(),
                    r["relationshipType"].as_str().unwrap(),
                    r["relatedSpdxElement"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "SPDXRef-Package-hello DEPENDS_ON SPDXRef-Package-libfoo",
            "SPDXRef-Package-hello DEPENDS_ON SPDXRef-Package-dash",
            "SPDXRef-Image CONTAINS SPDXRef-Package-dash",
            "SPDXRef-Image GENERATED_FROM SPDXRef-Rootfs",
        ] {
            assert!(rels.iter().any(|r| r == want), "{want} not in {rels:#?}");
        }
        let hello = &v["packages"][5];
        assert_eq!(hello["checksums"][0]["checksumValue"], "ab".repeat(32));
        // file:// is no download location SPDX validators take; the URL stays in sourceInfo.
        assert_eq!(hello["downloadLocation"], NOASSERTION);
        assert!(
            hello["sourceInfo"]
                .as_str()
                .unwrap()
                .contains("file:///m/extra")
        );
        assert_eq!(
            hello["externalRefs"][0]["referenceLocator"],
            "pkg:alpm/archarm/hello@2:1.0-3?arch=armv7h"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        write(&p, &inp).unwrap();
        let t = table(dir.path()).unwrap();
        assert!(t.contains("3 installed packages"), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("hello ")
                && l.contains("2:1.0-3")
                && l.contains("MIT")
                && l.contains(&"F".repeat(40))),
            "{t}"
        );
        assert!(
            t.contains("signer 68B3537F39A313B3E574D06777193F152BDBE6A6"),
            "{t}"
        );
    }
}
