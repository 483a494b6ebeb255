//! flake.nix: parsed by Nix itself (`nix-instantiate --parse`, Debian package `nix-bin`), and
//! its contents checked against the repository: the version equals Cargo.toml's
//! `package.version`, the package is built with `rustPlatform.buildRustPackage` from the
//! repository's Cargo.lock, the dev shell has the test oracles, and every source pin in
//! `profiles/hc1img.lock` appears in it (the image derivations fetch the pinned tarball).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// flake.nix as Nix's parser normalises it (one line, attributes sorted).
fn parsed() -> String {
    let o = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(repo().join("flake.nix"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nix-instantiate ({e}); install Debian's nix-bin (scripts/test does) — tests never skip a missing oracle")
        });
    assert!(
        o.status.success(),
        "nix-instantiate --parse flake.nix failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("nix-instantiate prints UTF-8")
}

/// The string value of the first `name = "…";` binding in the parsed expression.
fn binding<'a>(nix: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name} = \"");
    let start = nix.find(&key)? + key.len();
    let len = nix[start..].find('"')?;
    Some(&nix[start..start + len])
}

#[test]
fn flake_version_matches_cargo_toml() {
    let nix = parsed();
    let cargo: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let want = cargo["package"]["version"].as_str().unwrap();
    assert_eq!(
        binding(&nix, "version"),
        Some(want),
        "flake.nix's version must equal Cargo.toml's package.version ({want})"
    );
    assert_eq!(binding(&nix, "pname"), Some("hc1img"));
}

#[test]
fn flake_builds_the_crate_and_has_the_oracles() {
    let nix = parsed();
    assert!(
        nix.contains("rustPlatform.buildRustPackage"),
        "packages.default must use rustPlatform.buildRustPackage: {nix}"
    );
    let lock = format!("lockFile = {};", repo().join("Cargo.lock").display());
    assert!(
        nix.contains(&lock),
        "cargoLock must name ./Cargo.lock: {nix}"
    );
    for top in ["packages = ", "apps = ", "devShells = "] {
        assert!(nix.contains(top), "flake outputs lack {top:?}");
    }
    let shell = nix
        .split("devShells = ")
        .nth(1)
        .expect("a devShells output");
    for oracle in [
        "e2fsprogs",
        "dosfstools",
        "mtools",
        "ubootTools",
        "gptfdisk",
        "qemu",
        "bmap-tools",
    ] {
        assert!(
            shell.contains(&format!("({oracle})")),
            "devShells.default lacks the oracle {oracle}"
        );
    }
}

#[test]
fn flake_fetches_the_pinned_sources() {
    let nix = parsed();
    let lock: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("profiles/hc1img.lock")).unwrap())
            .unwrap();
    let pins = lock
        .get("pins")
        .and_then(|p| p.as_table())
        .cloned()
        .unwrap_or_default();
    for (url, pin) in &pins {
        let sha = pin["sha256"].as_str().unwrap();
        assert!(
            nix.contains(sha) && nix.contains(url.as_str()),
            "profiles/hc1img.lock pins {url} to {sha}, but flake.nix does not fetch it with that hash"
        );
    }
}

/// The parser really is checking: a broken expression is refused.
#[test]
fn nix_parser_rejects_a_broken_flake() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("flake.nix");
    std::fs::write(&f, "{ outputs = { self }: { version = \"1\" }; }").unwrap();
    let o = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&f)
        .output()
        .expect("nix-instantiate (nix-bin) must be installed");
    assert!(!o.status.success(), "a missing `;` must not parse");
}
