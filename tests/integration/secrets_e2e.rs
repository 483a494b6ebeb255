//! Secrets reach the image only where they belong, with safe modes, and nowhere else: not in
//! `plan` output, build logs (even with `-v`), `manifest.json`, error messages, or any other
//! file of the root filesystem.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

const ADMIN_HASH: &str =
    "$6$leaksalt$QWERTYUIOPasdfghjklzxcvbnm0123456789QWERTYUIOPasdfghjklzxcvbnm0123456789abcdef./";
const MAIL_PW: &str = "MAIL-PASSWORD-must-not-leak";
const TOKEN: &str = "SWMTKN-1-token-must-not-leak";

fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!("{name}={}", p.display())
}

fn hc1img(dir: &Path, args: &[&str], admin_hash: &str) -> Output {
    let tarball = dir.join("alarm.tar.gz");
    let sha = sha256_hex(&std::fs::read(&tarball).unwrap());
    Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .args(args)
        .arg(repo().join("profiles/worker.toml"))
        .arg("--source-url")
        .arg(&tarball)
        .args(["--source-sha256", &sha])
        .arg("--no-packages")
        .args([
            "--secret",
            &secret_file(dir, "admin_password_hash", admin_hash),
        ])
        .args(["--secret", &secret_file(dir, "mail_password", MAIL_PW)])
        .args(["--secret", &secret_file(dir, "swarm_worker_token", TOKEN)])
        .output()
        .unwrap()
}

fn assert_no_secret(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for s in [ADMIN_HASH, MAIL_PW, TOKEN, "leaksalt"] {
        assert!(!text.contains(s), "{what} contains a secret ({s})");
    }
}

#[test]
fn secrets_stay_where_they_belong() {
    let tmp = tempfile::tempdir().unwrap();
    alarm_tarball(tmp.path(), &Alarm::default());

    for args in [&["plan"][..], &["plan", "--json"][..]] {
        let o = hc1img(tmp.path(), args, ADMIN_HASH);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_no_secret("plan output", &o.stdout);
        assert_no_secret("plan stderr", &o.stderr);
    }

    let out = tmp.path().join("out");
    let o = hc1img(
        tmp.path(),
        &["-v", "build", "--out", out.to_str().unwrap()],
        ADMIN_HASH,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_secret("build log", &o.stdout);
    assert_no_secret("build log", &o.stderr);
    assert_no_secret(
        "manifest.json",
        &std::fs::read(out.join("manifest.json")).unwrap(),
    );

    // In the image: only in /etc/shadow (0600) and the mail relay config (0640 root:mail).
    let ssd = out.join("ssd.img");
    let fs = ext4list::open(&ssd, 1 << 20);
    let mut found = Vec::new();
    for (path, e) in ext4list::list(&fs) {
        if e["type"] != "file" {
            continue;
        }
        let data =
            String::from_utf8_lossy(&fs.read(format!("/{path}").as_str()).unwrap()).into_owned();
        for s in [ADMIN_HASH, MAIL_PW, TOKEN] {
            if data.contains(s) {
                found.push((
                    path.clone(),
                    s,
                    e["mode"].as_u64().unwrap(),
                    e["gid"].as_u64().unwrap(),
                ));
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![
            ("etc/shadow".to_string(), ADMIN_HASH, 0o600, 0),
            ("etc/ssmtp/ssmtp.conf".to_string(), MAIL_PW, 0o640, 12),
            (
                "var/lib/hc1img/secrets/swarm-token".to_string(),
                TOKEN,
                0o600,
                0
            ),
        ],
        "secrets in the image"
    );

    // A bad secret is named in the error, its value is not.
    let bad = "plaintext-password-not-a-hash";
    let o = hc1img(
        tmp.path(),
        &["build", "--out", tmp.path().join("out2").to_str().unwrap()],
        bad,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("admin_password_hash"), "{err}");
    assert!(!err.contains(bad), "the error quotes the secret: {err}");
    assert!(!tmp.path().join("out2").exists());
}
