//! The site overlays of the repository's top-level `overlays/` (`common/` for every node,
//! `manager/` for the managers) end up in the images built from the shipped profiles, with
//! the modes and owners the profiles give them: the `hc1img` binary builds
//! `profiles/manager.toml` from an Arch-Linux-ARM shaped tarball, and `debugfs` reads the ext4
//! root back (`e2fsck -fn` first).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use hc1img::profile::{self, Overrides};

use crate::common::*;

const ROOT_OFFSET: u64 = 1 << 20;

/// The wheel group of the synthetic tarball (`common::GROUP`).
const WHEEL: u32 = 998;

fn overlay_file(rel: &str) -> String {
    std::fs::read_to_string(repo().join("overlays").join(rel)).expect("read overlay file")
}

#[test]
fn shipped_overlays_are_in_the_manager_image() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let out = tmp.path().join("out");
    let mut secrets = Vec::new();
    for name in [
        "admin_password_hash",
        "mail_password",
        "swarm_manager_token",
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, "$6$salt$value\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        secrets.push("--secret".to_string());
        secrets.push(format!("{name}={}", p.display()));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(tmp.path())
        .env("HC1IMG_CACHE", tmp.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("build")
        .arg(repo().join("profiles/manager.toml"))
        .arg("--source-url")
        .arg(&tarball)
        .arg("--source-sha256")
        .arg(sha256_hex(&std::fs::read(&tarball).unwrap()))
        .arg("--no-packages")
        .arg("--out")
        .arg(&out)
        .args(&secrets)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "hc1img build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let ssd = out.join("ssd.img");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let len = j["partitiontable"]["partitions"][0]["size"]
        .as_u64()
        .unwrap()
        * 512;
    let root = tmp.path().join("root.ext4");
    extract(&ssd, ROOT_OFFSET, len, &root);
    let fsck = run("e2fsck", &["-fn", root.to_str().unwrap()]);
    assert!(fsck.status.success(), "e2fsck -fn: {fsck:?}");

    // (path in the image, file under overlays/, mode, uid, gid)
    let files: &[(&str, &str, u32, u32, u32)] = &[
        (
            "/etc/sysctl.d/90-hc1-site.conf",
            "common/etc/sysctl.d/90-hc1-site.conf",
            0o644,
            0,
            0,
        ),
        // [[overlays.entry]] in base.toml: for the admins only.
        (
            "/usr/local/bin/hc1-node-info",
            "common/usr/local/bin/hc1-node-info",
            0o750,
            0,
            WHEEL,
        ),
        // The execute bit git records gives 0755.
        (
            "/usr/local/bin/hc1-swarm-status",
            "manager/usr/local/bin/hc1-swarm-status",
            0o755,
            0,
            0,
        ),
    ];
    for (path, src, mode, uid, gid) in files {
        assert_eq!(stat(&root, path), (*mode, *uid, *gid), "{path}: mode/owner");
        assert_eq!(
            debugfs(&root, &format!("cat {path}")),
            overlay_file(src),
            "{path}"
        );
    }
    // The motd is a template: the profile's name, board and architecture filled in.
    assert_eq!(stat(&root, "/etc/motd"), (0o644, 0, 0));
    let motd = debugfs(&root, "cat /etc/motd");
    assert_eq!(
        motd,
        overlay_file("common/etc/motd")
            .replace("{name}", "manager")
            .replace("{board}", "odroid-hc1")
            .replace("{arch}", "armv7h")
    );
    assert!(motd.starts_with("manager: a node"), "{motd}");
}

/// Every shipped profile gets `overlays/common`, the managers `overlays/manager` after it, the
/// workers not.
#[test]
fn shipped_profiles_name_their_overlays() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ov = Overrides::default();
    for name in [
        "admin_password_hash",
        "mail_password",
        "swarm_worker_token",
        "swarm_manager_token",
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, "x\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        ov.secrets.insert(name.to_string(), p);
    }
    let overlays = repo().join("overlays");
    for (file, want) in [
        ("worker.toml", &["common"][..]),
        ("qemu-worker.toml", &["common"]),
        ("manager.toml", &["common", "manager"]),
        ("leader.toml", &["common", "manager"]),
    ] {
        let path = repo().join("profiles").join(file);
        let mut ov = ov.clone();
        let text = std::fs::read_to_string(&path).unwrap();
        let declared_by_base = ["admin_password_hash", "mail_password"];
        ov.secrets.retain(|k, _| {
            declared_by_base.contains(&k.as_str())
                || text.contains(k.as_str())
                || (file == "qemu-worker.toml" && k == "swarm_worker_token")
        });
        let p = profile::load(&path, &ov).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let want: Vec<_> = want.iter().map(|d| overlays.join(d)).collect();
        let got: Vec<_> = p
            .node
            .overlays
            .dirs
            .iter()
            .map(|d| std::fs::canonicalize(d).unwrap())
            .collect();
        let want: Vec<_> = want
            .iter()
            .map(|d| std::fs::canonicalize(d).unwrap())
            .collect();
        assert_eq!(got, want, "{file}");
        assert!(Path::new(&got[0]).join("etc/motd").is_file());
    }
}
