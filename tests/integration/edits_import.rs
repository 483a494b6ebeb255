//! The capture contract end to end: a tarball shaped like Arch Linux ARM's goes through the
//! real tar import with `captured_paths()` routed to memory, then every edit runs on the
//! result. Proves the edits need nothing the import does not capture.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use hc1img::edit::EditContext;
use hc1img::rootfs::import::{DataSink, import};
use hc1img::sections;
use hc1img::tree::{BlockRun, DataRef, FileData, Meta, NodeKind, Timestamp, Tree};

struct CountingSink(u64);

impl DataSink for CountingSink {
    fn write_data(&mut self, src: &mut dyn Read, len: u64) -> anyhow::Result<DataRef> {
        let n = std::io::copy(&mut src.take(len), &mut std::io::sink())?;
        anyhow::ensure!(n == len, "short read");
        self.0 += 1;
        Ok(DataRef {
            size: len,
            runs: vec![BlockRun {
                start: self.0,
                len: 1,
            }],
        })
    }

    fn read_data(&self, _data: &FileData) -> anyhow::Result<Vec<u8>> {
        anyhow::bail!("CountingSink keeps no data")
    }
}

const PASSWD: &str = "root:x:0:0::/root:/bin/bash\nbin:x:1:1::/:/usr/bin/nologin\n\
mail:x:8:12::/var/spool/mail:/usr/bin/nologin\nnobody:x:65534:65534:Kernel Overflow User:/:/usr/bin/nologin\n\
alarm:x:1000:1000::/home/alarm:/bin/bash\n";
const SHADOW: &str = "root:$6$rootsalt$rootroothash:19000::::::\nbin:!*:19000::::::\n\
mail:!*:19000::::::\nnobody:!*:19000::::::\nalarm:$6$alarmsalt$alarmhash:19000:0:99999:7:::\n";
const GROUP: &str = "root:x:0:root\nbin:x:1:root,bin\nsys:x:3:bin\ntty:x:5:\nmail:x:12:\n\
wheel:x:998:root,alarm\nnobody:x:65534:\nalarm:x:1000:\n";
const GSHADOW: &str = "root:::root\nbin:::root,bin\nsys:::bin\ntty:::\nmail:::\n\
wheel:::root,alarm\nnobody:::\nalarm:!::\n";

fn tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |path: &str, mode: u32, uid: u64, kind: tar::EntryType, data: &[u8], link: &str| {
            let mut h = tar::Header::new_ustar();
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_690_000_000);
            h.set_mode(mode);
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            if kind == tar::EntryType::Symlink {
                b.append_link(&mut h, path, link).unwrap();
            } else {
                b.append_data(&mut h, path, data).unwrap();
            }
        };
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    for d in [
        "./",
        "etc/",
        "etc/ssh/",
        "etc/ssh/sshd_config.d/",
        "etc/pacman.d/",
        "etc/pacman.d/gnupg/",
        "usr/",
        "usr/bin/",
        "usr/lib/",
        "usr/lib/systemd/system/",
        "usr/share/zoneinfo/",
        "var/",
        "var/lib/",
        "var/lib/docker/",
        "var/spool/mail/",
        "boot/",
        "home/",
    ] {
        add(d, 0o755, 0, D, b"", "");
    }
    add("root/", 0o750, 0, D, b"", "");
    add("home/alarm/", 0o700, 1000, D, b"", "");
    add("home/alarm/.bashrc", 0o644, 1000, F, b"# bashrc\n", "");
    add("bin", 0o777, 0, L, b"", "usr/bin");
    add("lib", 0o777, 0, L, b"", "usr/lib");
    add("usr/bin/bash", 0o755, 0, F, b"\x7fELF", "");
    add("usr/bin/nologin", 0o755, 0, F, b"\x7fELF", "");
    add("usr/bin/msmtp", 0o755, 0, F, b"\x7fELF", "");
    add("usr/bin/sendmail", 0o777, 0, L, b"", "msmtp");
    add("etc/passwd", 0o644, 0, F, PASSWD.as_bytes(), "");
    add("etc/shadow", 0o600, 0, F, SHADOW.as_bytes(), "");
    add("etc/group", 0o644, 0, F, GROUP.as_bytes(), "");
    add("etc/gshadow", 0o600, 0, F, GSHADOW.as_bytes(), "");
    add("etc/hostname", 0o644, 0, F, b"alarm\n", "");
    add("etc/fstab", 0o644, 0, F, b"# empty\n", "");
    add(
        "etc/machine-id",
        0o444,
        0,
        F,
        b"0123456789abcdef0123456789abcdef\n",
        "",
    );
    add(
        "etc/ssh/sshd_config",
        0o644,
        0,
        F,
        b"Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n",
        "",
    );
    add("etc/ssh/ssh_host_ed25519_key", 0o600, 0, F, b"PRIVATE", "");
    add(
        "etc/pacman.d/mirrorlist",
        0o644,
        0,
        F,
        b"Server = http://mirror.archlinuxarm.org/$arch/$repo\n",
        "",
    );
    add("etc/pacman.d/gnupg/pubring.gpg", 0o644, 0, F, b"keys", "");
    add("var/lib/docker/engine-id", 0o600, 0, F, b"id", "");
    add("var/spool/mail/alarm", 0o660, 1000, F, b"", "");
    add("usr/share/zoneinfo/UTC", 0o644, 0, F, b"TZif2", "");
    for u in [
        "docker.service",
        "cronie.service",
        "sshd.service",
        "systemd-repart.service",
    ] {
        add(
            &format!("usr/lib/systemd/system/{u}"),
            0o644,
            0,
            F,
            b"[Install]\nWantedBy=multi-user.target\n",
            "",
        );
    }
    add("boot/zImage", 0o644, 0, F, b"kernel", "");
    b.into_inner().unwrap()
}

const PROFILE: &str = r#"
[users]
create_groups = ["docker"]
sudo_wheel = true
[[users.add]]
name = "admin"
groups = ["wheel", "docker"]
password_secret = "admin-hash"
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@desk"]

[system]
hostname = "hc1-{mac6}"

[mail]
mailhub = "smtp.example.org:587"
root = "ops@example.org"
auth_user = "hc1@example.org"
auth_pass_secret = "smtp-pass"

[docker.daemon]
storage-driver = "overlay2"
insecure-registries = ["registry.lan:5000"]

[mirrorlist]
servers = ["http://de3.mirror.archlinuxarm.org/$arch/$repo"]

[[cron.job]]
name = "docker-cleanup"
schedule = "30 3 * * *"
command = "docker system prune -af --volumes"
"#;

const HASH: &str = "$6$Vf3pQ9s1$0mYtqkM3pX0Yx6c7dG7y0hH4lS1g9Yk8mZfB8d6Y3pQ1Vq0x2W3e4R5t6Y7u8I9o0P1a2S3d4F5g6H7j8.";
const SMTP: &str = "relay-Pa55-7781";

fn bytes_of(t: &Tree, p: &str) -> Vec<u8> {
    match &t.node(t.lookup(p.as_bytes()).expect(p)).kind {
        NodeKind::File(FileData::Bytes(b)) => b.clone(),
        k => panic!("{p}: {k:?}"),
    }
}

#[test]
fn imported_alarm_tree_becomes_a_node() {
    let captured = sections::captured_paths();
    let route = |p: &[u8]| hc1img::rootfs::route(p, &captured);
    let m = Meta::new(0o755, 0, 0, Timestamp::from_secs(0));
    let mut tree = Tree::new(m.clone());
    let tar = tarball();
    let rep = import(&mut &tar[..], &mut tree, &mut CountingSink(0), &route, &m).unwrap();
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);

    let secrets = |name: &str| -> anyhow::Result<Vec<u8>> {
        match name {
            "admin-hash" => Ok(HASH.as_bytes().to_vec()),
            "smtp-pass" => Ok(SMTP.as_bytes().to_vec()),
            _ => anyhow::bail!("unknown"),
        }
    };
    let ctx = EditContext::new(rep.newest_mtime, &secrets);
    let sections: sections::Sections = toml::from_str(PROFILE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = BTreeMap::new();
    let inputs = sections::EditInputs {
        preloaded: &[],
        boot_volume_id: 0xDEAD_BEEF,
        overlays_dir: dir.path(),
        vars: &vars,
    };
    sections::apply_all(&mut tree, &sections, &ctx, &inputs).unwrap();

    let s = |p: &str| String::from_utf8(bytes_of(&tree, p)).unwrap();
    assert_eq!(
        s("etc/passwd"),
        "root:x:0:0::/root:/bin/bash\nbin:x:1:1::/:/usr/bin/nologin\n\
         mail:x:8:12::/var/spool/mail:/usr/bin/nologin\n\
         nobody:x:65534:65534:Kernel Overflow User:/:/usr/bin/nologin\n\
         admin:x:1000:1000::/home/admin:/bin/bash\n"
    );
    assert_eq!(
        s("etc/group"),
        "root:x:0:root\nbin:x:1:root,bin\nsys:x:3:bin\ntty:x:5:\nmail:x:12:\n\
         wheel:x:998:root,admin\nnobody:x:65534:\ndocker:x:999:admin\nadmin:x:1000:\n"
    );
    assert!(s("etc/shadow").contains(&format!("\nadmin:{HASH}:")));
    assert_eq!(s("etc/machine-id"), "uninitialized\n");
    // A template hostname is set at first boot: the tarball's file stays as it was.
    let hn = tree.lookup(b"etc/hostname").unwrap();
    assert!(matches!(
        tree.node(hn).kind,
        NodeKind::File(FileData::Stored(_))
    ));
    assert!(s("etc/fstab").contains("UUID=DEAD-BEEF /boot vfat"));
    for gone in [
        "etc/ssh/ssh_host_ed25519_key",
        "var/lib/docker",
        "etc/pacman.d/gnupg",
        "home/alarm",
        "var/spool/mail/alarm",
    ] {
        assert!(tree.lookup(gone.as_bytes()).is_none(), "{gone} survived");
    }
    // Secrets only where they belong.
    let mut holders = Vec::new();
    tree.walk(|p, _, id| {
        if let NodeKind::File(FileData::Bytes(b)) = &tree.node(id).kind {
            for sec in [HASH, SMTP] {
                if b.windows(sec.len()).any(|w| w == sec.as_bytes()) {
                    holders.push(String::from_utf8_lossy(p).into_owned());
                }
            }
        }
    });
    assert_eq!(holders, ["etc/msmtprc", "etc/shadow"]);
    let notes = ctx.take_notes().join("\n");
    assert!(!notes.contains(HASH) && !notes.contains(SMTP));

    // shadow-utils agrees the account files are consistent.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    for f in ["passwd", "shadow", "group", "gshadow"] {
        std::fs::write(
            root.path().join("etc").join(f),
            bytes_of(&tree, &format!("etc/{f}")),
        )
        .unwrap();
    }
    for d in ["root", "home/admin", "usr/bin", "var/spool/mail"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    for exe in ["usr/bin/bash", "usr/bin/nologin"] {
        std::fs::write(root.path().join(exe), "").unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
    for tool in ["pwck", "grpck"] {
        let out = Command::new(tool)
            .args(["-r", "-R"])
            .arg(root.path())
            .output()
            .unwrap_or_else(|e| panic!("oracle {tool} missing ({e}); apt-get install passwd"));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.lines().all(|l| l.contains("no changes")),
            "{tool}: {text}"
        );
    }
}
