//! `SHA256SUMS`: the checksum list of an output (or release) directory, in GNU coreutils'
//! `sha256sum` format (one `HEX  NAME` line per file, sorted by name; `sha256sum -c` checks
//! it), and its detached OpenPGP signature `SHA256SUMS.sig` (`hc1img sign`).
//!
//! It lists every regular file of the directory whose name does not start with `.` (hc1img's
//! temporaries and locks), except itself and its signature. Writing it anew removes a signature
//! that no longer matches it, so a directory never holds a signature of other sums.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest::OutputFile;
pub use crate::store::SHA256SUMS;
/// The detached signature of `SHA256SUMS` (binary OpenPGP, as Arch's `.sig` files).
pub use crate::store::SHA256SUMS_SIG as SIGNATURE;
use crate::store::write_via_temp;

/// The files `SHA256SUMS` lists in `dir`: every regular file not starting with `.`, but the
/// sums and their signature, sorted by name.
pub fn listed_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == SHA256SUMS || name == SIGNATURE || name.starts_with('.') || !e.path().is_file() {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Write `dir/SHA256SUMS` over [`listed_files`], taking each file's sha256 from `known` when
/// it is there and from `hash` otherwise. When the new text differs from the file's, a
/// signature of the old one is removed.
pub fn write(
    dir: &Path,
    known: &BTreeMap<String, OutputFile>,
    hash: &dyn Fn(&[PathBuf]) -> Result<Vec<OutputFile>>,
) -> Result<()> {
    let entries = listed_files(dir)?;
    let unknown: Vec<PathBuf> = entries
        .iter()
        .filter(|n| !known.contains_key(*n))
        .map(|n| dir.join(n))
        .collect();
    let mut hashed = hash(&unknown)?.into_iter();
    let mut sums = String::new();
    for name in entries {
        let sha = match known.get(&name) {
            Some(o) => o.sha256.clone(),
            None => hashed
                .next()
                .map(|o| o.sha256)
                .with_context(|| format!("internal error: {name} was not hashed"))?,
        };
        sums.push_str(&format!("{sha}  {name}\n"));
    }
    let path = dir.join(SHA256SUMS);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == sums) {
        return Ok(());
    }
    let sig = dir.join(SIGNATURE);
    if sig.exists() {
        std::fs::remove_file(&sig).with_context(|| {
            format!(
                "{}: cannot remove the signature of the previous {SHA256SUMS}",
                sig.display()
            )
        })?;
    }
    write_via_temp(&path, |tmp| {
        std::fs::write(tmp, sums).with_context(|| format!("{}: cannot write", tmp.display()))
    })
}

/// The lines of a `SHA256SUMS` text as (name, sha256), in order; `what` names it in errors.
/// Takes `sha256sum`'s text (`HEX  NAME`) and binary (`HEX *NAME`) forms; names must be plain
/// file names (a release directory is flat).
pub fn parse(text: &str, what: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| {
            anyhow::anyhow!(
                "{what} line {}: {why}; expected `SHA256  NAME` as sha256sum writes it",
                i + 1
            )
        };
        let Some((hex, rest)) = line.split_once(' ') else {
            return Err(bad("no file name"));
        };
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(|| bad("no space or `*` before the file name"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not 64 hex digits"));
        }
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(bad(&format!("{name:?} is not a plain file name")));
        }
        if name == SHA256SUMS || name == SIGNATURE {
            return Err(bad(&format!(
                "it lists {name}, which cannot be checked against it (make the sums before \
                 {SHA256SUMS} and {SIGNATURE} are there)"
            )));
        }
        if out.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(bad(&format!("{name} is listed twice")));
        }
        out.push((name.to_string(), hex.to_ascii_lowercase()));
    }
    if out.is_empty() {
        bail!("{what}: lists no file");
    }
    Ok(out)
}

/// Check every file `dir/SHA256SUMS` lists against it, hashing them with `hash` (in the order
/// given); returns the listed names with their sha256. One error names every file that is
/// missing or differs.
pub fn check(
    dir: &Path,
    hash: &dyn Fn(&[PathBuf]) -> Result<Vec<OutputFile>>,
) -> Result<BTreeMap<String, String>> {
    let path = dir.join(SHA256SUMS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let entries = parse(&text, &path.display().to_string())?;
    let (present, missing): (Vec<_>, Vec<_>) =
        entries.iter().partition(|(n, _)| dir.join(n).is_file());
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        bail!(
            "{}: lists {} that {} not in {}: the directory is incomplete",
            path.display(),
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" },
            dir.display()
        );
    }
    let paths: Vec<PathBuf> = present.iter().map(|(n, _)| dir.join(n)).collect();
    let got = hash(&paths)?;
    let differ: Vec<&str> = present
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| *want != got.sha256)
        .map(|((n, _), _)| n.as_str())
        .collect();
    if !differ.is_empty() {
        bail!(
            "{}: {} {} not hash to what {} says: the file was altered or the sums are stale",
            dir.display(),
            differ.join(", "),
            if differ.len() == 1 { "does" } else { "do" },
            path.display()
        );
    }
    Ok(entries.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(paths: &[PathBuf]) -> Result<Vec<OutputFile>> {
        crate::manifest::hash_files(paths, &|_| {})
    }

    #[test]
    fn sums_list_every_file_and_a_stale_signature_goes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("b.img"), b"bbb").unwrap();
        std::fs::write(d.join("a.json"), b"{}").unwrap();
        std::fs::write(d.join(".hc1img-lock"), b"1").unwrap();
        std::fs::write(d.join(SIGNATURE), b"old").unwrap();
        let known = BTreeMap::from([(
            "b.img".to_string(),
            OutputFile {
                size: 3,
                sha256: crate::source::sha256_file(&d.join("b.img")).unwrap(),
            },
        )]);
        write(d, &known, &hash).unwrap();
        let text = std::fs::read_to_string(d.join(SHA256SUMS)).unwrap();
        let names: Vec<String> = parse(&text, "x")
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["a.json", "b.img"]);
        assert!(!d.join(SIGNATURE).exists(), "the old signature stays");
        assert_eq!(check(d, &hash).unwrap().len(), 2);
        // The same sums again: a signature of them is kept.
        std::fs::write(d.join(SIGNATURE), b"sig").unwrap();
        write(d, &known, &hash).unwrap();
        assert!(d.join(SIGNATURE).exists());
        std::fs::write(d.join("a.json"), b"[]").unwrap();
        let e = check(d, &hash).unwrap_err().to_string();
        assert!(e.contains("a.json does not hash to"), "{e}");
        std::fs::remove_file(d.join("a.json")).unwrap();
        let e = check(d, &hash).unwrap_err().to_string();
        assert!(e.contains("lists a.json that is not in"), "{e}");
    }

    #[test]
    fn parse_takes_sha256sum_text_and_refuses_the_rest() {
        let h = "ab".repeat(32);
        let ok = parse(&format!("{h}  a.img\n{h} *b.img\n"), "S").unwrap();
        assert_eq!(ok[1], ("b.img".to_string(), h.clone()));
        for bad in [
            format!("{h} a.img"),
            format!("{h}  ../a.img"),
            format!("{h}  d/a.img"),
            "abc  a.img".to_string(),
            format!("{h}  a.img\n{h}  a.img"),
            format!("{h}  SHA256SUMS"),
            format!("{h}  SHA256SUMS.sig"),
            String::new(),
        ] {
            assert!(parse(&bad, "S").is_err(), "{bad:?}");
        }
    }
}
