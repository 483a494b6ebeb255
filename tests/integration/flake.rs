//! flake.nix: parsed by Nix itself (`nix-instantiate --parse`, Debian package `nix-bin`), and
//! its contents checked against the repository: the version equals Cargo.toml's
//! `package.version`, the package is built with `rustPlatform.buildRustPackage` from the
//! repository's Cargo.lock, the dev shell has the test oracles, and every source pin in
//! `profiles/hc1img.lock` is what the image derivations fetch (nix/profiles.nix, evaluated).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `nix-instantiate ARGS`, one at a time: on a machine where Nix has never run, the first
/// invocations create Nix's state database (/nix/var/nix/db), and concurrent ones race to do
/// so ("SQLite database '/nix/var/nix/db/db.sqlite' is busy"). The tests of this module run on
/// parallel threads of one test binary, so a process-wide lock serialises them.
fn nix_instantiate(args: &[&std::ffi::OsStr]) -> std::process::Output {
    static NIX: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = NIX.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Command::new("nix-instantiate")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nix-instantiate ({e}); install Debian's nix-bin (scripts/test does) — tests never skip a missing oracle")
        })
}

/// flake.nix as Nix's parser normalises it (one line, attributes sorted).
fn parsed() -> String {
    let flake = repo().join("flake.nix");
    let o = nix_instantiate(&["--parse".as_ref(), flake.as_os_str()]);
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

/// `nix/profiles.nix` evaluated by Nix itself, with `root` = `dir`.
fn nix_profiles(dir: &std::path::Path) -> serde_json::Value {
    let expr = format!(
        "import {}/nix/profiles.nix {{ root = {}; }}",
        repo().display(),
        dir.display()
    );
    let o = nix_instantiate(&[
        "--eval".as_ref(),
        "--strict".as_ref(),
        "--json".as_ref(),
        "-E".as_ref(),
        expr.as_ref(),
    ]);
    assert!(
        o.status.success(),
        "nix-instantiate --eval nix/profiles.nix failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The image derivations of flake.nix fetch what hc1img itself would: for every profile, the
/// source URL Nix finds (following `extends`) and its pin equal what hc1img's profile loader
/// reads — in the repository as committed, and in a copy whose lock file has a pin.
#[test]
fn flake_images_fetch_what_hc1img_pins() {
    use std::collections::BTreeSet;
    let flake = std::fs::read_to_string(repo().join("flake.nix")).unwrap();
    assert!(
        flake.contains("import ./nix/profiles.nix") && flake.contains("pkgs.fetchurl"),
        "flake.nix must build images from nix/profiles.nix with a fixed-output fetch"
    );
    let tmp = tempfile::tempdir().unwrap();
    // The profiles, and the overlays they name (../overlays).
    let copy = Command::new("cp")
        .args(["-r"])
        .arg(repo().join("profiles"))
        .arg(repo().join("overlays"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let base: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("profiles/base.toml")).unwrap())
            .unwrap();
    let url = base["source"]["url"].as_str().unwrap();
    let sha = "ab".repeat(32);
    std::fs::write(
        tmp.path().join("profiles/hc1img.lock"),
        format!("[pins.\"{url}\"]\nsha256 = \"{sha}\"\nsize = 123\n"),
    )
    .unwrap();

    // The secrets a profile declares along its `extends` chain, each from a private file
    // (the loader checks that they exist).
    let overrides_for = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        let mut o = hc1img::profile::Overrides::default();
        let mut next = Some(path.to_path_buf());
        while let Some(p) = next.take() {
            let t: toml::Table = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            for name in t
                .get("secrets")
                .and_then(|s| s.as_table())
                .into_iter()
                .flat_map(|s| s.keys())
            {
                let f = tmp.path().join(format!("secret-{name}"));
                std::fs::write(&f, "SWMTKN-1-x\n").unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
                o.secrets.insert(name.clone(), f);
            }
            next = t
                .get("extends")
                .and_then(|e| e.as_str())
                .map(|e| p.parent().unwrap().join(e));
        }
        o
    };
    for (root, pinned) in [(repo(), false), (tmp.path().to_path_buf(), true)] {
        let nix = nix_profiles(&root);
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(root.join("profiles")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let p = hc1img::profile::load(&path, &overrides_for(&path))
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            names.insert(p.name.clone());
            let n = &nix[&p.name];
            let src = p
                .source
                .as_ref()
                .expect("every shipped profile has a source");
            assert_eq!(n["url"].as_str(), Some(src.url.as_str()), "{}", p.name);
            assert_eq!(
                n["pin"]["sha256"].as_str(),
                src.sha256.as_deref(),
                "{}",
                p.name
            );
            assert_eq!(src.sha256.is_some(), pinned, "{}", p.name);
        }
        let nix_names: BTreeSet<String> = nix.as_object().unwrap().keys().cloned().collect();
        assert_eq!(nix_names, names, "profiles Nix sees vs profiles/*.toml");
    }
}

/// The parser really is checking: a broken expression is refused.
#[test]
fn nix_parser_rejects_a_broken_flake() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("flake.nix");
    std::fs::write(&f, "{ outputs = { self }: { version = \"1\" }; }").unwrap();
    let o = nix_instantiate(&["--parse".as_ref(), f.as_os_str()]);
    assert!(!o.status.success(), "a missing `;` must not parse");
}
