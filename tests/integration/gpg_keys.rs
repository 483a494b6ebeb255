//! A throw-away GnuPG home for the tests that sign things (tarballs, packages): keys are made
//! by the test, never shipped. Needs the Debian packages `gpg`, `gpg-agent` and `gpgv` (a test
//! fails, never skips, when they are missing).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, anyhow, ensure};

pub const MISSING: &str = "GnuPG is needed by this test: apt-get install gpg gpg-agent gpgv";

/// A throw-away GnuPG home directory; its agent is stopped on drop.
pub struct Gpg {
    pub home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Result<Gpg> {
        Command::new("gpg")
            .arg("--version")
            .output()
            .context(MISSING)?;
        let home = tempfile::Builder::new().prefix("gpg").tempdir_in("/tmp")?;
        Ok(Gpg { home })
    }

    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
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
    pub fn gen_key(&self, uid: &str, algo: &str, usage: &str) -> Result<String> {
        self.run(&["--quick-gen-key", uid, algo, usage, "never"])?;
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])?)?;
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no fingerprint for {uid} in {listing}"))
    }

    /// The fingerprint of the key with this user ID.
    pub fn gen_key_fpr(&self, uid: &str) -> Result<String> {
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])?)?;
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no fingerprint for {uid} in {listing}"))
    }

    pub fn export(&self, to: &Path, armor: bool) -> Result<()> {
        let out = to.to_string_lossy().into_owned();
        let mut args = vec!["--output", out.as_str()];
        if armor {
            args.push("--armor");
        }
        args.push("--export");
        self.run(&args)?;
        Ok(())
    }

    pub fn sign(&self, data: &Path, sig: &Path, armor: bool) -> Result<()> {
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
