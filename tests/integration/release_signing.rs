//! Signed releases (`hc1img build --sign-key`, `hc1img sign`, `hc1img verify --keyring`),
//! checked with GnuPG's `gpgv` as the oracle, on an output directory an existing test built
//! (`compress_e2e::store_build_gains_compressed_copies_without_rebuilding`: no build of its
//! own). Keys are made by the test with `gpg --quick-gen-key` in throw-away GnuPG homes: an
//! ed25519 key with a signing subkey (which must be the one that signs), and a
//! passphrase-protected RSA key. `gpgv` and `hc1img verify --keyring` accept the signature;
//! a changed `SHA256SUMS`, image byte or signature is refused by `hc1img verify` (the first
//! two and the last also by `gpgv` where it can see them: it checks the sums' signature, not
//! the image); a missing signature, a foreign keyring and missing, public-only or locked keys
//! are one-line errors naming the file; the secret key's text reaches no output. A release
//! directory assembled as the release workflow does (flat `PROFILE-FILE` names, `sha256sum --
//! * > SHA256SUMS`) is signed and verified the same way, its manifest checked against the sums.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gpg_keys::{Gpg, MISSING};

/// A throw-away release key: its GnuPG home, the secret key exported armored, the public key
/// exported binary (gpgv's keyring), its primary fingerprint.
pub(crate) struct ReleaseKey {
    /// Its GnuPG home (the agent is stopped when the test ends).
    gpg: Gpg,
    pub secret: PathBuf,
    pub public: PathBuf,
    pub fingerprint: String,
    /// The fingerprint of the signing subkey (what gpgv reports as the signing key).
    pub subkey: String,
}

impl ReleaseKey {
    /// An ed25519 primary key with an ed25519 signing subkey, exported into `dir`.
    pub(crate) fn new(dir: &Path) -> ReleaseKey {
        let gpg = Gpg::new().expect(MISSING);
        let fingerprint = gpg
            .gen_key("Release Test <release@example.invalid>", "ed25519", "sign")
            .unwrap();
        gpg.run(&["--quick-add-key", &fingerprint, "ed25519", "sign", "never"])
            .unwrap();
        let listing = String::from_utf8(
            gpg.run(&["--with-colons", "--list-keys", &fingerprint])
                .unwrap(),
        )
        .unwrap();
        let fprs: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .filter_map(|r| r.split(':').find(|f| !f.is_empty()))
            .collect();
        assert_eq!(fprs.len(), 2, "{listing}");
        let secret = dir.join("release-secret.asc");
        let public = dir.join("release-public.gpg");
        let s = secret.to_string_lossy().into_owned();
        gpg.run(&[
            "--output",
            &s,
            "--armor",
            "--export-secret-keys",
            &fingerprint,
        ])
        .unwrap();
        gpg.export(&public, false).unwrap();
        ReleaseKey {
            subkey: fprs[1].to_string(),
            gpg,
            secret,
            public,
            fingerprint,
        }
    }

    /// A base64 line from the middle of the armored secret key: it must appear nowhere else.
    fn secret_line(&self) -> String {
        let text = std::fs::read_to_string(&self.secret).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.len() > 40 && !l.starts_with('-'))
            .collect();
        assert!(!lines.is_empty(), "{text}");
        lines[lines.len() / 2].to_string()
    }
}

/// `gpgv --keyring KEYRING SIG DATA`: GnuPG's verdict and its status lines.
pub(crate) fn gpgv(keyring: &Path, sig: &Path, data: &Path) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    let o = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .args(["--status-fd", "1", "--keyring"])
        .arg(keyring)
        .arg(sig)
        .arg(data)
        .output()
        .expect(MISSING);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// `gpgv` accepts `dir/SHA256SUMS.sig` over `dir/SHA256SUMS`, made by the release key's
/// signing subkey.
pub(crate) fn gpgv_accepts(key: &ReleaseKey, dir: &Path) {
    let (ok, said) = gpgv(
        &key.public,
        &dir.join("SHA256SUMS.sig"),
        &dir.join("SHA256SUMS"),
    );
    assert!(
        ok && said.contains("GOODSIG") && said.contains(&key.subkey),
        "gpgv refuses {}/SHA256SUMS.sig:\n{said}",
        dir.display()
    );
}

/// `hc1img -q ARGS` with `env`: success, stdout, stderr.
fn hc1img(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("-q")
        .args(args)
        .env_remove("HC1IMG_SIGN_PASSPHRASE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A failing `hc1img -q ARGS`: its error, checked to be one line that contains every `needle`.
fn fails(args: &[&str], env: &[(&str, &str)], needles: &[&str], log: &mut String) -> String {
    let (ok, out, err) = hc1img(args, env);
    log.push_str(&out);
    log.push_str(&err);
    assert!(!ok, "hc1img {args:?} succeeded:\n{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "hc1img {args:?}: not a one-line error:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "hc1img {args:?}: {n:?} not in {err}");
    }
    err
}

/// Flip one byte of `path` at `at` (from the end when negative); returns how to put it back.
fn flip(path: &Path, at: i64) -> impl FnOnce() + use<> {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if at < 0 {
        bytes.len() - at.unsigned_abs() as usize
    } else {
        at as usize
    };
    let old = bytes[i];
    bytes[i] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
    let path = path.to_path_buf();
    move || {
        bytes[i] = old;
        std::fs::write(&path, &bytes).unwrap();
    }
}

/// Everything `hc1img sign` and `hc1img verify --keyring` promise, on the signed output
/// directory `dir` (its images already built): `log` collects every output, which must not hold
/// the secret key.
pub(crate) fn sign_and_verify(tmp: &Path, dir: &Path, key: &ReleaseKey, log: &mut String) {
    let d = dir.to_str().unwrap();
    let secret = key.secret.to_str().unwrap();
    let public = key.public.to_str().unwrap();

    // hc1img sign: prints FINGERPRINT  PATH; gpgv and hc1img verify --keyring accept it.
    let (ok, out, err) = hc1img(&["sign", d, "--key", secret], &[]);
    log.push_str(&out);
    log.push_str(&err);
    assert!(ok, "hc1img sign failed:\n{err}");
    assert_eq!(
        out,
        format!(
            "{}  {}\n",
            key.fingerprint,
            dir.join("SHA256SUMS.sig").display()
        )
    );
    gpgv_accepts(key, dir);
    let (ok, out, err) = hc1img(&["verify", d, "--keyring", public], &[]);
    log.push_str(&out);
    assert!(
        ok,
        "hc1img verify --keyring refuses a good signature:\n{err}"
    );
    for want in [
        format!(
            "SHA256SUMS.sig: good signature of SHA256SUMS by {}",
            key.fingerprint
        ),
        "sd.img: ok".to_string(),
        "sbom.spdx.json: ok".to_string(),
        "manifest.json: its ".to_string(),
    ] {
        assert!(out.contains(&want), "{want} not in:\n{out}");
    }
    // The armored public key works as a keyring too (and the secret key file, for its public
    // part).
    let armored = tmp.join("release-public.asc");
    key.gpg.export(&armored, true).unwrap();
    assert!(hc1img(&["verify", d, "--keyring", armored.to_str().unwrap()], &[]).0);

    // A changed SHA256SUMS: the signature no longer holds, for both.
    let sums = dir.join("SHA256SUMS");
    let undo = flip(&sums, 3);
    fails(
        &["verify", d, "--keyring", public],
        &[],
        &["BAD signature", "SHA256SUMS.sig", "SHA256SUMS"],
        log,
    );
    assert!(!gpgv(&key.public, &dir.join("SHA256SUMS.sig"), &sums).0);
    undo();
    // A changed image byte: the signed sums say otherwise (gpgv checks only the sums' signature,
    // which still holds; `sha256sum -c` and hc1img verify see the image).
    let undo = flip(&dir.join("sd.img"), 1 << 20);
    fails(
        &["verify", d, "--keyring", public],
        &[],
        &["sd.img does not hash to what", "SHA256SUMS"],
        log,
    );
    let (ok, _, _) = hc1img(&["verify", d], &[]);
    assert!(!ok, "hc1img verify (no keyring) accepts a changed image");
    undo();
    // A changed signature.
    let sig = dir.join("SHA256SUMS.sig");
    let undo = flip(&sig, -3);
    fails(
        &["verify", d, "--keyring", public],
        &[],
        &["SHA256SUMS.sig"],
        log,
    );
    assert!(!gpgv(&key.public, &sig, &sums).0);
    undo();
    gpgv_accepts(key, dir);

    // Another key's keyring.
    let other = Gpg::new().expect(MISSING);
    other
        .gen_key("Someone Else <else@example.invalid>", "ed25519", "sign")
        .unwrap();
    let other_pub = tmp.join("other.gpg");
    other.export(&other_pub, false).unwrap();
    fails(
        &["verify", d, "--keyring", other_pub.to_str().unwrap()],
        &[],
        &["no key in keyring", "SHA256SUMS.sig"],
        log,
    );
    assert!(!gpgv(&other_pub, &sig, &sums).0);

    // No signature: verify without --keyring behaves as before; with it, one line.
    let saved = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    assert!(hc1img(&["verify", d], &[]).0);
    fails(
        &["verify", d, "--keyring", public],
        &[],
        &["SHA256SUMS.sig: missing"],
        log,
    );
    std::fs::write(&sig, saved).unwrap();

    // Keys that cannot sign: missing, public only, not a key, locked by a passphrase.
    fails(
        &["sign", d, "--key", "/nonexistent/key.asc"],
        &[],
        &["/nonexistent/key.asc: cannot read it"],
        log,
    );
    fails(
        &["sign", d, "--key", public],
        &[],
        &["holds only a public key"],
        log,
    );
    let garbled = tmp.join("garbled.asc");
    let text = std::fs::read_to_string(&key.secret).unwrap();
    std::fs::write(&garbled, text.replace(&key.secret_line(), &"A".repeat(64))).unwrap();
    fails(
        &["sign", d, "--key", garbled.to_str().unwrap()],
        &[],
        &["garbled.asc"],
        log,
    );
    let locked = locked_rsa_key(tmp, "hunter2");
    let l = locked.to_str().unwrap();
    fails(
        &["sign", d, "--key", l],
        &[],
        &["protected by a passphrase", "HC1IMG_SIGN_PASSPHRASE"],
        log,
    );
    fails(
        &["sign", d, "--key", l],
        &[("HC1IMG_SIGN_PASSPHRASE", "wrong")],
        &["HC1IMG_SIGN_PASSPHRASE does not unlock it"],
        log,
    );
    // With its passphrase it signs; gpgv accepts (its own public key).
    let (ok, out, err) = hc1img(
        &["sign", d, "--key", l],
        &[("HC1IMG_SIGN_PASSPHRASE", "hunter2")],
    );
    log.push_str(&out);
    log.push_str(&err);
    assert!(ok, "signing with the passphrase failed:\n{err}");
    let rsa_pub = tmp.join("locked-public.gpg");
    assert!(
        gpgv(&rsa_pub, &sig, &sums).0,
        "gpgv refuses the RSA key's signature"
    );
    // Put the release key's signature back.
    assert!(hc1img(&["sign", d, "--key", secret], &[]).0);
    gpgv_accepts(key, dir);

    release_directory(tmp, dir, key, log);

    // The secret key's text is in no output, no file of the directory beside the images.
    let line = key.secret_line();
    assert!(!log.contains(&line), "the secret key reached the output");
    for f in [
        "manifest.json",
        "sbom.spdx.json",
        "SHA256SUMS",
        "SHA256SUMS.sig",
    ] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&line),
            "the secret key is in {f}"
        );
    }
}

/// A release as `.github/workflows/release.yml` assembles it from the output directory `dir`:
/// `PROFILE-FILE` copies of the compressed images, maps, manifest and SBOM, the lock file, a
/// `SHA256SUMS` by `sha256sum -- *`, signed with `hc1img sign`: gpgv and `hc1img verify
/// --keyring` accept it; a manifest that disagrees with the (signed) sums is refused.
fn release_directory(tmp: &Path, dir: &Path, key: &ReleaseKey, log: &mut String) {
    let rel = tmp.join("release");
    std::fs::create_dir(&rel).unwrap();
    for f in [
        "ssd.img.zst",
        "sd.img.zst",
        "ssd.img.bmap",
        "sd.img.bmap",
        "manifest.json",
        "sbom.spdx.json",
    ] {
        std::fs::copy(dir.join(f), rel.join(format!("small-{f}"))).unwrap();
    }
    std::fs::write(rel.join("hc1img.lock"), b"# the lock file\n").unwrap();
    let sums = || {
        for f in ["SHA256SUMS", "SHA256SUMS.sig"] {
            let _ = std::fs::remove_file(rel.join(f));
        }
        let o = Command::new("sh")
            .args(["-c", "sha256sum -- * > SHA256SUMS"])
            .current_dir(&rel)
            .output()
            .unwrap();
        assert!(o.status.success(), "sha256sum: {o:?}");
    };
    sums();
    let r = rel.to_str().unwrap();
    let (ok, out, err) = hc1img(&["sign", r, "--key", key.secret.to_str().unwrap()], &[]);
    log.push_str(&out);
    log.push_str(&err);
    assert!(ok, "hc1img sign on a release directory failed:\n{err}");
    gpgv_accepts(key, &rel);
    let public = key.public.to_str().unwrap();
    let (ok, out, err) = hc1img(&["verify", r, "--keyring", public], &[]);
    log.push_str(&out);
    assert!(ok, "hc1img verify --keyring refuses the release:\n{err}");
    assert!(
        out.contains("small-manifest.json: its ") && out.contains("small-sd.img.zst: ok"),
        "{out}"
    );
    // A manifest that says other bytes than the (signed) sums: refused, though the signature
    // is good.
    let m = rel.join("small-manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["outputs"]["sd.img.zst"]["sha256"] = "00".repeat(32).into();
    std::fs::write(&m, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    sums();
    assert!(hc1img(&["sign", r, "--key", key.secret.to_str().unwrap()], &[]).0);
    gpgv_accepts(key, &rel);
    fails(
        &["verify", r, "--keyring", public],
        &[],
        &[
            "small-sd.img.zst",
            "SHA256SUMS and small-manifest.json disagree",
        ],
        log,
    );
}

/// An RSA signing key protected by `passphrase`, its secret part exported armored to
/// `dir/locked-secret.asc` (returned) and its public part to `dir/locked-public.gpg`.
fn locked_rsa_key(dir: &Path, passphrase: &str) -> PathBuf {
    let home = tempfile::Builder::new()
        .prefix("gpg")
        .tempdir_in("/tmp")
        .unwrap();
    let gpg = |args: &[&str]| {
        let o = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args([
                "--batch",
                "--no-tty",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                passphrase,
            ])
            .args(args)
            .output()
            .expect(MISSING);
        assert!(
            o.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let uid = "Locked Key <locked@example.invalid>";
    gpg(&["--quick-gen-key", uid, "rsa2048", "sign", "never"]);
    let secret = dir.join("locked-secret.asc");
    gpg(&[
        "--output",
        secret.to_str().unwrap(),
        "--armor",
        "--export-secret-keys",
        uid,
    ]);
    gpg(&[
        "--output",
        dir.join("locked-public.gpg").to_str().unwrap(),
        "--export",
        uid,
    ]);
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "gpg-agent"])
        .output();
    secret
}
