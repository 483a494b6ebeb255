//! Integration tests for OpenPGP detached-signature checking (`hc1img::source::verify_signature`
//! and `fetch` with a `SignatureSpec`). Keys and signatures are made by GnuPG, and GnuPG's `gpgv`
//! is the oracle the results are compared with. Needs the Debian packages `gpg`, `gpg-agent`
//! and `gpgv` (the test fails, never skips, when they are missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hc1img::source::{Cache, FetchOptions, SignatureSpec, SourceSpec, fetch, verify_signature};

const MISSING: &str = "GnuPG is needed by this test: apt-get install gpg gpg-agent gpgv";

/// A throw-away GnuPG home directory; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Result<Gpg> {
        Command::new("gpg")
            .arg("--version")
            .output()
            .context(MISSING)?;
        let home = tempfile::Builder::new().prefix("gpg").tempdir_in("/tmp")?;
        Ok(Gpg { home })
    }

    fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .context(MISSING)?;
        ensure!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    }

    /// Makes a key and returns its primary fingerprint.
    fn gen_key(&self, uid: &str, algo: &str, usage: &str) -> Result<String> {
        self.run(&["--quick-gen-key", uid, algo, usage, "never"])?;
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])?)?;
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no fingerprint for {uid} in {listing}"))
    }

    fn export(&self, to: &Path, armor: bool) -> Result<()> {
        let out = to.to_string_lossy().into_owned();
        let mut args = vec!["--output", out.as_str()];
        if armor {
            args.push("--armor");
        }
        args.push("--export");
        self.run(&args)?;
        Ok(())
    }

    fn sign(&self, data: &Path, sig: &Path, armor: bool) -> Result<()> {
        let (d, s) = (data.to_string_lossy(), sig.to_string_lossy());
        let mut args = vec!["--output", &*s];
        if armor {
            args.push("--armor");
        }
        args.extend(["--detach-sign", &*d]);
        self.run(&args)?;
        Ok(())
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// GnuPG's own verdict (the oracle): does `gpgv` accept the signature with this binary keyring?
fn gpgv_accepts(keyring_bin: &Path, sig: &Path, data: &Path) -> Result<bool> {
    let home = tempfile::tempdir()?;
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .arg("--keyring")
        .arg(keyring_bin)
        .arg(sig)
        .arg(data)
        .output()
        .context(MISSING)?;
    Ok(out.status.success())
}

fn err_text(r: Result<()>) -> Result<String> {
    match r {
        Ok(()) => bail!("verification succeeded but should have failed"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            Ok(msg)
        }
    }
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Result<Files> {
        Ok(Files {
            dir: tempfile::tempdir()?,
        })
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.p(name);
        std::fs::write(&p, bytes)?;
        Ok(p)
    }
}

#[test]
fn good_signatures_verify_in_binary_and_armored_forms() -> Result<()> {
    let gpg = Gpg::new()?;
    gpg.gen_key("Alarm Test <alarm@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write(
        "root.tar.gz",
        b"pretend this is ArchLinuxARM-armv7-latest.tar.gz\n",
    )?;
    let (kr_bin, kr_asc) = (f.p("keyring.gpg"), f.p("keyring.asc"));
    gpg.export(&kr_bin, false)?;
    gpg.export(&kr_asc, true)?;
    let (sig_bin, sig_asc) = (f.p("root.tar.gz.sig"), f.p("root.tar.gz.asc"));
    gpg.sign(&data, &sig_bin, false)?;
    gpg.sign(&data, &sig_asc, true)?;

    assert!(
        gpgv_accepts(&kr_bin, &sig_bin, &data)?,
        "oracle rejects the good signature"
    );
    verify_signature(&data, &sig_bin, &kr_asc)?;
    verify_signature(&data, &sig_bin, &kr_bin)?;
    verify_signature(&data, &sig_asc, &kr_bin)?;
    verify_signature(&data, &sig_asc, &kr_asc)?;
    Ok(())
}

#[test]
fn tampered_data_is_a_bad_signature() -> Result<()> {
    let gpg = Gpg::new()?;
    gpg.gen_key("Alarm Test <alarm@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write("data", b"original bytes")?;
    let kr = f.p("keyring.gpg");
    gpg.export(&kr, false)?;
    let sig = f.p("data.sig");
    gpg.sign(&data, &sig, false)?;
    std::fs::write(&data, b"Original bytes")?;

    assert!(
        !gpgv_accepts(&kr, &sig, &data)?,
        "oracle accepts tampered data"
    );
    let err = err_text(verify_signature(&data, &sig, &kr))?;
    assert!(err.contains("BAD signature"), "{err}");
    assert!(err.contains(&*data.to_string_lossy()), "{err}");
    assert!(!err.contains('\n'), "error is not one line: {err}");
    Ok(())
}

#[test]
fn signature_by_a_key_outside_the_keyring_is_refused() -> Result<()> {
    let signer = Gpg::new()?;
    signer.gen_key("Signer <s@example.invalid>", "ed25519", "sign")?;
    let other = Gpg::new()?;
    let other_fpr = other.gen_key("Other <o@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write("data", b"some data")?;
    let sig = f.p("data.sig");
    signer.sign(&data, &sig, false)?;
    let kr = f.p("other.gpg");
    other.export(&kr, false)?;

    assert!(
        !gpgv_accepts(&kr, &sig, &data)?,
        "oracle accepts an unknown key"
    );
    let err = err_text(verify_signature(&data, &sig, &kr))?;
    assert!(err.contains("no key in keyring"), "{err}");
    assert!(!err.contains(&other_fpr), "names the wrong key: {err}");
    Ok(())
}

#[test]
fn rsa_keys_verify() -> Result<()> {
    let gpg = Gpg::new()?;
    gpg.gen_key("Rsa Test <rsa@example.invalid>", "rsa2048", "sign")?;
    let f = Files::new()?;
    let data = f.write("data", &vec![7u8; 100_000])?;
    let kr = f.p("keyring.gpg");
    gpg.export(&kr, false)?;
    let sig = f.p("data.sig");
    gpg.sign(&data, &sig, false)?;
    assert!(gpgv_accepts(&kr, &sig, &data)?);
    verify_signature(&data, &sig, &kr)?;
    std::fs::write(&data, vec![8u8; 100_000])?;
    let err = err_text(verify_signature(&data, &sig, &kr))?;
    assert!(err.contains("BAD signature"), "{err}");
    Ok(())
}

#[test]
fn signing_subkeys_verify() -> Result<()> {
    let gpg = Gpg::new()?;
    let fpr = gpg.gen_key("Sub Test <sub@example.invalid>", "ed25519", "cert")?;
    gpg.run(&["--quick-add-key", &fpr, "ed25519", "sign", "never"])?;
    let f = Files::new()?;
    let data = f.write("data", b"signed by a subkey")?;
    let kr = f.p("keyring.asc");
    gpg.export(&kr, true)?;
    let kr_bin = f.p("keyring.gpg");
    gpg.export(&kr_bin, false)?;
    let sig = f.p("data.sig");
    gpg.sign(&data, &sig, false)?;
    assert!(gpgv_accepts(&kr_bin, &sig, &data)?);
    verify_signature(&data, &sig, &kr)?;
    Ok(())
}

#[test]
fn revoked_keys_are_refused() -> Result<()> {
    let gpg = Gpg::new()?;
    let fpr = gpg.gen_key("Revoked <r@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write("data", b"signed before the key was revoked")?;
    let sig = f.p("data.sig");
    gpg.sign(&data, &sig, false)?;
    let kr_before = f.p("before.gpg");
    gpg.export(&kr_before, false)?;
    verify_signature(&data, &sig, &kr_before)?;

    // GnuPG writes a revocation certificate at key generation; its armor line is escaped with
    // a leading ':' so it cannot be imported by accident.
    let rev_path = gpg
        .home
        .path()
        .join("openpgp-revocs.d")
        .join(format!("{fpr}.rev"));
    let rev = std::fs::read_to_string(&rev_path)
        .with_context(|| format!("no revocation certificate at {}", rev_path.display()))?;
    let rev = rev.replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    let rev_file = f.write("rev.asc", rev.as_bytes())?;
    gpg.run(&["--import", &rev_file.to_string_lossy()])?;
    let kr = f.p("after.gpg");
    gpg.export(&kr, false)?;
    let err = err_text(verify_signature(&data, &sig, &kr))?;
    assert!(
        err.contains(&format!("key {fpr}, which is revoked")),
        "{err}"
    );
    Ok(())
}

#[test]
fn malformed_inputs_give_clear_errors() -> Result<()> {
    let gpg = Gpg::new()?;
    gpg.gen_key("Alarm Test <alarm@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write("data", b"x")?;
    let kr = f.p("keyring.gpg");
    gpg.export(&kr, false)?;
    let junk = f.write("junk.sig", b"this is not an OpenPGP signature\n")?;
    let err = err_text(verify_signature(&data, &junk, &kr))?;
    assert!(err.contains(&*junk.to_string_lossy()), "{err}");

    let sig = f.p("data.sig");
    gpg.sign(&data, &sig, false)?;
    let missing = f.p("no-such-keyring.gpg");
    let err = err_text(verify_signature(&data, &sig, &missing))?;
    assert!(err.contains("cannot open keyring"), "{err}");
    let err = err_text(verify_signature(&f.p("no-data"), &sig, &kr))?;
    assert!(
        err.contains("cannot open") && err.contains("no-data"),
        "{err}"
    );
    assert!(!err.contains("BAD"), "{err}");
    Ok(())
}

fn file_url(p: &Path) -> Result<String> {
    Ok(reqwest::Url::from_file_path(p)
        .map_err(|()| anyhow!("cannot make a file URL for {}", p.display()))?
        .to_string())
}

fn sha256_oracle(p: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(p).output()?;
    ensure!(out.status.success(), "sha256sum failed");
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

fn quiet() -> FetchOptions {
    FetchOptions {
        progress: false,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        retries: 0,
        backoff: Duration::from_millis(10),
    }
}

#[test]
fn fetch_checks_the_signature_before_accepting_the_file() -> Result<()> {
    let gpg = Gpg::new()?;
    gpg.gen_key("Alarm Test <alarm@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write("root.tar.gz", &vec![42u8; 64_000])?;
    let sha = sha256_oracle(&data)?;
    let kr = f.p("keyring.asc");
    gpg.export(&kr, true)?;
    let sig = f.p("root.tar.gz.sig");
    gpg.sign(&data, &sig, false)?;
    let other = f.write("other", b"other")?;
    let other_sig = f.p("other.sig");
    gpg.sign(&other, &other_sig, false)?;

    // A signature over different bytes: refused, nothing cached under the pin.
    let cache_dir = tempfile::tempdir()?;
    let cache = Cache::new(cache_dir.path().to_path_buf());
    let bad = SourceSpec {
        urls: vec![file_url(&data)?],
        sha256: sha.clone(),
        size: Some(64_000),
        signature: Some(SignatureSpec {
            url: file_url(&other_sig)?,
            keyring: kr.clone(),
        }),
    };
    let err = match fetch(&bad, &cache, &quiet()) {
        Ok(p) => bail!("badly signed file accepted at {}", p.display()),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("error as shown: {err}");
    assert!(
        err.contains("signature check failed") && err.contains("BAD signature"),
        "{err}"
    );
    assert_eq!(cache.lookup(&sha), None);
    let parts: Vec<_> = std::fs::read_dir(cache.root().join("tmp"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "leftover part files: {parts:?}");

    // The right signature: accepted, and the .sig is cached by its own hash.
    let good = SourceSpec {
        signature: Some(SignatureSpec {
            url: file_url(&sig)?,
            keyring: kr.clone(),
        }),
        ..bad
    };
    let path = fetch(&good, &cache, &quiet())?;
    assert_eq!(path, cache.path_for(&sha));
    assert!(
        cache.lookup(&sha256_oracle(&sig)?).is_some(),
        "signature not cached"
    );
    Ok(())
}
