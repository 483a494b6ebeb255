//! `sbom.spdx.json` against the SPDX project's own validator, `pyspdxtools -i` (spdx-tools
//! from PyPI, installed by `scripts/test`; a missing validator fails the test). The documents
//! of real builds are validated where those builds already run (`packages_e2e`,
//! `compress_e2e`); here, without building an image, a document made of everything awkward an
//! Arch local database holds: every licence identifier and exception hc1img passes through,
//! the old Arch names it maps, custom and compound licence strings it must turn into
//! `LicenseRef-`s, package names with `+`, `@` and `_`, epochs, virtual dependencies, and URLs
//! a validator refuses (`file://`, a path). And the validator really checks: a document with
//! an undeclared licence reference and a dangling relationship is refused.

use std::collections::BTreeMap;
use std::path::Path;

use hc1img::manifest::OutputFile;
use hc1img::packages::PackagePin;
use hc1img::packages::db::Desc;
use hc1img::sbom::{Inputs, OLD_ARCH_NAMES, SPDX_EXCEPTIONS, SPDX_IDS, Tarball};

/// `pyspdxtools -i FILE`: whether SPDX's validator accepts the document, and what it said.
pub(crate) fn spdx_validate(path: &Path) -> (bool, String) {
    let o = std::process::Command::new("pyspdxtools")
        .arg("-i")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the SPDX validator pyspdxtools ({e}); install it (scripts/test does: \
                 pip install spdx-tools) — tests never skip a missing oracle"
            )
        });
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Fails the test unless `pyspdxtools` finds the document valid.
pub(crate) fn assert_spdx_valid(path: &Path) {
    let (ok, said) = spdx_validate(path);
    assert!(
        ok,
        "pyspdxtools refuses {}:\n{said}\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

fn desc(name: &str, version: &str, extra: &str) -> Desc {
    Desc::parse(
        &format!("%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%ARCH%\narmv7h\n\n{extra}"),
        name,
    )
    .unwrap()
}

fn list(key: &str, values: &[&str]) -> String {
    format!("%{key}%\n{}\n\n", values.join("\n"))
}

#[test]
fn an_awkward_local_database_gives_a_valid_document() {
    let mut installed = Vec::new();
    // Every identifier hc1img passes through, each with an exception after it for some.
    for (i, id) in SPDX_IDS.iter().enumerate() {
        let lic = match SPDX_EXCEPTIONS.get(i) {
            Some(e) => format!("{} WITH {}", id.to_lowercase(), e),
            None => id.to_string(),
        };
        installed.push(desc(&format!("lib{i}"), "1.0-1", &list("LICENSE", &[&lic])));
    }
    for (i, (old, _)) in OLD_ARCH_NAMES.iter().enumerate() {
        installed.push(desc(&format!("old{i}"), "1-1", &list("LICENSE", &[old])));
    }
    installed.push(desc(
        "libstdc++",
        "14.1.1+r1+g43b7e2fd3ad-1",
        &(list(
            "LICENSE",
            &[
                "custom",
                "custom:GCC runtime library exception",
                "GPL3",
                "(MIT OR Apache-2.0) AND Zlib",
                "MIT OR Somebody's Licence",
                "GPL-2.0-or-later WITH",
            ],
        ) + &list("URL", &["file:///usr/share/doc"])
            + &list("PACKAGER", &["Someone (the builder) <a@b.c>"])
            + &list("BUILDDATE", &["1700000000"])
            + &list("DESC", &["The GNU \"Standard C++\" library — ünïcode"])
            + &list(
                "DEPENDS",
                &["glibc>=2.39", "sh", "gcc-libs=14.1.1+r1+g43b7e2fd3ad-1"],
            )),
    ));
    installed.push(desc(
        "gcc-libs",
        "14.1.1+r1+g43b7e2fd3ad-1",
        &list("PROVIDES", &["libstdc++.so=6-32"]),
    ));
    installed.push(desc(
        "glibc",
        "2.39+r52-1",
        &list("URL", &["https://www.gnu.org/software/libc"]),
    ));
    installed.push(desc("bash@5", "1:5.2.026-2", &list("PROVIDES", &["sh"])));
    installed.push(desc("python_x", "3.12.4-1", ""));
    let pins = vec![PackagePin {
        name: "bash@5".into(),
        version: "1:5.2.026-2".into(),
        reason: "explicit".into(),
        repo: "core".into(),
        filename: "bash@5-1:5.2.026-2-armv7h.pkg.tar.xz".into(),
        sha256: "ab".repeat(32),
        size: Some(1),
        url: "/srv/mirror/core/bash@5-1:5.2.026-2-armv7h.pkg.tar.xz".into(),
        upgrades: None,
        removes: Vec::new(),
        frees: None,
        signature: None,
        signer: Some("68B3537F39A313B3E574D06777193F152BDBE6A6".into()),
    }];
    let inputs = BTreeMap::from([
        ("format/hc1img".to_string(), "2".to_string()),
        ("overlay/overlay[0]/etc/motd".to_string(), "cd".repeat(32)),
        (
            "env/SOURCE_DATE_EPOCH".to_string(),
            "1700000500".to_string(),
        ),
    ]);
    let images = BTreeMap::from([
        (
            "sd.img".to_string(),
            OutputFile {
                size: 1,
                sha256: "01".repeat(32),
            },
        ),
        (
            "ssd.img".to_string(),
            OutputFile {
                size: 2,
                sha256: "02".repeat(32),
            },
        ),
    ]);
    let inp = Inputs {
        profile: "work+er_1",
        derivation: &"0f".repeat(32),
        tool_version: env!("CARGO_PKG_VERSION"),
        created: 1_700_000_500,
        tarball: Tarball {
            url: "file:///tmp/ArchLinuxARM-odroid-xu3-latest.tar.gz",
            sha256: &"23".repeat(32),
            signer: None,
        },
        inputs: &inputs,
        images: &images,
        installed: &installed,
        pins: &pins,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbom.spdx.json");
    hc1img::sbom::write(&path, &inp).unwrap();
    assert_spdx_valid(&path);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let refs: Vec<&str> = v["hasExtractedLicensingInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for name in [
        "custom",
        "GPL3",
        "MIT OR Somebody's Licence",
        "GPL-2.0-or-later WITH",
    ] {
        assert!(refs.contains(&name), "{name} not referred to: {refs:?}");
    }
    // Every installed package is in it, once.
    let packages = v["packages"].as_array().unwrap();
    assert_eq!(
        packages
            .iter()
            .filter(|p| p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|l| l.starts_with("pkg:alpm/")))
            .count(),
        installed.len()
    );

    // The validator is no rubber stamp.
    let mut broken = v.clone();
    broken["packages"][0]["licenseDeclared"] = "LicenseRef-nobody-declared-this".into();
    broken["relationships"][0]["relatedSpdxElement"] = "SPDXRef-nowhere".into();
    let bad = dir.path().join("broken.spdx.json");
    std::fs::write(&bad, serde_json::to_string(&broken).unwrap()).unwrap();
    let (ok, said) = spdx_validate(&bad);
    assert!(
        !ok && said.contains("LicenseRef-nobody-declared-this") && said.contains("SPDXRef-nowhere"),
        "pyspdxtools accepted a broken document:\n{said}"
    );
}
