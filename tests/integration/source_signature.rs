//! Integration tests for OpenPGP detached-signature checking (`hc1img::source::verify_signature`,
//! `fetch` and `fetch_unpinned_signed` with a `SignatureSpec`, the built-in Arch Linux ARM key).
//! Keys and signatures are made by GnuPG (expired ones with `--faked-system-time`), and GnuPG's
//! `gpgv` is the oracle the results are compared with. Needs the Debian packages `gpg`, `gpg-agent`
//! and `gpgv` (the test fails, never skips, when they are missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hc1img::source::{
    ALARM_FINGERPRINT, Cache, FetchOptions, Keyring, SignatureSpec, SourceSpec, fetch,
    fetch_unpinned_signed,
};

fn verify_signature(data: &Path, sig: &Path, keyring: &Path) -> Result<()> {
    hc1img::source::verify_signature(data, sig, &Keyring::File(keyring.to_path_buf())).map(drop)
}

use crate::gpg_keys::{Gpg, MISSING};

/// GnuPG's own verdict (the oracle): does `gpgv` accept the signature with this binary keyring?
fn gpgv_accepts(keyring_bin: &Path, sig: &Path, data: &Path) -> Result<bool> {
    Ok(gpgv_status(keyring_bin, sig, data)?.0)
}

/// `gpgv`'s exit status and its `--status-fd` lines (GOODSIG, EXPKEYSIG, EXPSIG, ...).
fn gpgv_status(keyring_bin: &Path, sig: &Path, data: &Path) -> Result<(bool, String)> {
    let home = tempfile::tempdir()?;
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .args(["--status-fd", "1", "--keyring"])
        .arg(keyring_bin)
        .arg(sig)
        .arg(data)
        .output()
        .context(MISSING)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
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
    // Not beside the file: `<URL>.sig` is tried first.
    let sig = f.p("good.sig");
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
            urls: vec![file_url(&other_sig)?],
            inline: None,
            keyring: Keyring::File(kr.clone()),
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

    // A pinned (inline) signature over other bytes: refused the same way.
    let inline_bad = SourceSpec {
        signature: Some(SignatureSpec {
            urls: Vec::new(),
            inline: Some(std::fs::read(&other_sig)?),
            keyring: Keyring::File(kr.clone()),
        }),
        ..bad.clone()
    };
    let err = match fetch(&inline_bad, &cache, &quiet()) {
        Ok(p) => bail!("badly signed file accepted at {}", p.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("BAD signature"), "{err}");
    assert!(err.contains("the recorded signature of"), "{err}");
    assert_eq!(cache.lookup(&sha), None);

    // The right signature: accepted, under its pin.
    let good = SourceSpec {
        signature: Some(SignatureSpec {
            urls: vec![file_url(&sig)?],
            inline: None,
            keyring: Keyring::File(kr.clone()),
        }),
        ..bad
    };
    let path = fetch(&good, &cache, &quiet())?;
    assert_eq!(path, cache.path_for(&sha));
    assert_eq!(sha256_oracle(&path)?, sha);
    Ok(())
}

/// Every file name in the cache's `sha256/` directory.
fn cached_names(cache: &Cache) -> Result<Vec<String>> {
    let dir = cache.root().join("sha256");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

#[test]
fn unpinned_fetches_are_checked_before_they_enter_the_cache() -> Result<()> {
    let gpg = Gpg::new()?;
    let fpr = gpg.gen_key("Alarm Test <alarm@example.invalid>", "ed25519", "sign")?;
    let f = Files::new()?;
    let data = f.write("root.tar.gz", &vec![5u8; 10_000])?;
    let kr = f.p("keyring.asc");
    gpg.export(&kr, true)?;
    let cache_dir = tempfile::tempdir()?;
    let cache = Cache::new(cache_dir.path().to_path_buf());
    let spec = SignatureSpec {
        urls: Vec::new(),
        inline: None,
        keyring: Keyring::File(kr.clone()),
    };
    let urls = vec![file_url(&data)?];

    // No `.sig` anywhere: refused unsigned, nothing cached.
    let err = match fetch_unpinned_signed(&urls, &spec, &cache, &quiet()) {
        Ok(g) => bail!("unsigned file accepted: {g:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("no signature found"), "{err}");
    assert_eq!(cached_names(&cache)?, Vec::<String>::new());

    // `<URL>.sig` over other bytes (a swapped signature): refused, nothing cached.
    let other = f.write("other", b"other")?;
    gpg.sign(&other, &f.p("root.tar.gz.sig"), false)?;
    let err = match fetch_unpinned_signed(&urls, &spec, &cache, &quiet()) {
        Ok(g) => bail!("badly signed file accepted: {g:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("BAD signature") && err.contains(&fpr), "{err}");
    assert_eq!(cached_names(&cache)?, Vec::<String>::new());

    // The right `<URL>.sig`: cached under its sha256, signer and signature returned.
    gpg.sign(&data, &f.p("root.tar.gz.sig"), false)?;
    let got = fetch_unpinned_signed(&urls, &spec, &cache, &quiet())?;
    assert_eq!(got.verified.signer, fpr);
    assert_eq!(got.file.sha256, sha256_oracle(&data)?);
    assert_eq!(got.signature, std::fs::read(f.p("root.tar.gz.sig"))?);
    assert_eq!(cached_names(&cache)?, vec![got.file.sha256.clone()]);
    Ok(())
}

#[test]
fn the_built_in_key_is_arch_linux_arms_and_refuses_other_signers() -> Result<()> {
    // The embedded file is the key gpg sees with the documented fingerprint.
    let f = Files::new()?;
    let key = f.write("alarm.asc", hc1img::source::ALARM_KEY)?;
    let gpg = Gpg::new()?;
    let shown =
        String::from_utf8(gpg.run(&["--with-colons", "--show-keys", &key.to_string_lossy()])?)?;
    let fpr = shown
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|r| r.split(':').find(|x| !x.is_empty()))
        .unwrap_or_default();
    assert_eq!(fpr, ALARM_FINGERPRINT);
    assert_eq!(fpr, "68B3537F39A313B3E574D06777193F152BDBE6A6");
    assert!(shown.contains("Arch Linux ARM Build System"), "{shown}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/README.md"))?;
    assert!(
        readme.contains(&sha256_oracle(&key)?),
        "keys/README.md does not record the key's sha256"
    );

    // A throwaway key's signature is refused against it, naming the signer's key id.
    let fpr = gpg.gen_key("Not Alarm <n@example.invalid>", "ed25519", "sign")?;
    let data = f.write("data", b"data")?;
    let sig = f.p("data.sig");
    gpg.sign(&data, &sig, false)?;
    let err = match hc1img::source::verify_signature(&data, &sig, &Keyring::Embedded) {
        Ok(v) => bail!("accepted: {v:?}"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("error as shown: {err}");
    assert!(err.contains(ALARM_FINGERPRINT), "{err}");
    assert!(err.contains(&fpr[24..]), "does not name the key id: {err}");
    assert!(err.contains("--keyring"), "does not say what to do: {err}");
    assert!(!err.contains('\n'), "{err}");
    Ok(())
}

#[test]
fn expired_keys_and_expired_signatures_are_refused() -> Result<()> {
    let f = Files::new()?;
    let data = f.write("data", b"signed in 2020")?;
    // A key made on 2020-01-01 valid for one day, and a signature made with it that day.
    let gpg = Gpg::new()?;
    let past = ["--faked-system-time", "20200101T120000!"];
    let mut args = past.to_vec();
    args.extend([
        "--quick-gen-key",
        "Expired <e@example.invalid>",
        "ed25519",
        "sign",
        "1d",
    ]);
    gpg.run(&args)?;
    let fpr = gpg.gen_key_fpr("Expired <e@example.invalid>")?;
    let sig = f.p("data.sig");
    let (d, s) = (data.to_string_lossy(), sig.to_string_lossy());
    let mut args = past.to_vec();
    args.extend(["--output", &*s, "--detach-sign", &*d]);
    gpg.run(&args)?;
    let kr = f.p("expired.gpg");
    gpg.export(&kr, false)?;
    let (_, status) = gpgv_status(&kr, &sig, &data)?;
    assert!(status.contains("EXPKEYSIG"), "oracle: {status}");
    let err = err_text(verify_signature(&data, &sig, &kr))?;
    assert!(
        err.contains(&format!("key {fpr} expired on 2020-01-02")),
        "{err}"
    );

    // A key made in 2019 that never expires, and a signature valid for one day in 2020.
    let gpg = Gpg::new()?;
    gpg.run(&[
        "--faked-system-time",
        "20190101T120000!",
        "--quick-gen-key",
        "Sigexp <s@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ])?;
    let fpr = gpg.gen_key_fpr("Sigexp <s@example.invalid>")?;
    let mut args = past.to_vec();
    args.extend([
        "--default-sig-expire",
        "1d",
        "--output",
        &*s,
        "--detach-sign",
        &*d,
    ]);
    gpg.run(&args)?;
    gpg.export(&kr, false)?;
    let (_, status) = gpgv_status(&kr, &sig, &data)?;
    assert!(status.contains("EXPSIG"), "oracle: {status}");
    let err = err_text(verify_signature(&data, &sig, &kr))?;
    assert!(err.contains(&fpr), "{err}");
    assert!(err.contains("expired on 2020-01-02"), "{err}");
    Ok(())
}
