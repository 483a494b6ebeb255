//! A synthetic tree shaped like Arch Linux ARM's rootfs, and assertions, for the edits' tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::tree::{DataRef, FileData, Meta, Node, NodeKind, Timestamp, Tree};

pub const TS: i64 = 1_700_000_000;
const OLD: i64 = 1_600_000_000;

pub const ADMIN_HASH: &str = "$6$rounds=5000$saltsalt$Qz0hv1mYtqkM3pX0Yx6c7dG7y0hH4lS1g9Yk8mZfB8d6Y3pQ1Vq0x2W3e4R5t6Y7u8I9o0P1a2S3d4F5g6H7j8";
pub const SMTP_PASS: &str = "Sm7p-Pa55-w0rd-9931";

/// The test secret store.
pub fn secrets(name: &str) -> Result<Vec<u8>> {
    match name {
        "admin-hash" => Ok(format!("{ADMIN_HASH}\n").into_bytes()),
        "yes-hash" => {
            Ok(b"$y$j9T$abcdefghijklmnop$0123456789abcdefghijklmnopqrstuvwxyzABCDE".to_vec())
        }
        "plain" => Ok(b"hunter2-plaintext\n".to_vec()),
        "smtp-pass" => Ok(SMTP_PASS.as_bytes().to_vec()),
        "smtp-spaced" => Ok(format!("{SMTP_PASS} tail").into_bytes()),
        _ => bail!("no secret {name}"),
    }
}

pub type Secrets = fn(&str) -> Result<Vec<u8>>;

fn meta(perm: u16, uid: u32, gid: u32) -> Meta {
    Meta::new(perm, uid, gid, Timestamp::from_secs(OLD))
}

pub fn put(t: &mut Tree, path: &str, perm: u16, uid: u32, gid: u32, kind: NodeKind) {
    t.insert(
        path.as_bytes(),
        Node {
            meta: meta(perm, uid, gid),
            kind,
        },
        &meta(0o755, 0, 0),
    )
    .unwrap();
}

pub fn bytes(t: &mut Tree, path: &str, perm: u16, data: &str) {
    put(
        t,
        path,
        perm,
        0,
        0,
        NodeKind::File(FileData::Bytes(data.as_bytes().to_vec())),
    );
}

pub fn stored(t: &mut Tree, path: &str) {
    put(
        t,
        path,
        0o644,
        0,
        0,
        NodeKind::File(FileData::Stored(DataRef {
            size: 10,
            runs: vec![],
        })),
    );
}

pub fn dir(t: &mut Tree, path: &str, perm: u16, uid: u32, gid: u32) {
    put(t, path, perm, uid, gid, NodeKind::Dir(BTreeMap::new()));
}

pub fn link(t: &mut Tree, path: &str, target: &str) {
    put(
        t,
        path,
        0o777,
        0,
        0,
        NodeKind::Symlink(target.as_bytes().to_vec()),
    );
}

pub const PASSWD: &str = "root:x:0:0::/root:/bin/bash
bin:x:1:1::/:/usr/bin/nologin
daemon:x:2:2::/:/usr/bin/nologin
mail:x:8:12::/var/spool/mail:/usr/bin/nologin
ftp:x:14:11::/srv/ftp:/usr/bin/nologin
http:x:33:33::/srv/http:/usr/bin/nologin
nobody:x:65534:65534:Kernel Overflow User:/:/usr/bin/nologin
dbus:x:81:81:System Message Bus:/:/usr/bin/nologin
systemd-journal-remote:x:982:982:systemd Journal Remote:/:/usr/bin/nologin
alarm:x:1000:1000::/home/alarm:/bin/bash
";

pub const SHADOW: &str = "root:$6$Xp0b2sdd$T0ZSVy.hpmGsMWbXSo/z2kXbVc8rm4MFPj0.8sPYWSoZ8fAg6NOkItxr0GBHw0z7hlo9bFjhU5l05fAbv1Ujm.:17000::::::
bin:!*:17000::::::
daemon:!*:17000::::::
mail:!*:17000::::::
ftp:!*:17000::::::
http:!*:17000::::::
nobody:!*:17000::::::
dbus:!*:17000::::::
systemd-journal-remote:!*:17000::::::
alarm:$6$PeLvfcUf$NJTlEoDyRE0g6yCAT2kjSUUs0O1/nqFBWJQnXDPcmnCLNwG7ej6uEAYf5SMvn8rVvXCIoHzlNs7bEkTRG2bTm/:17000:0:99999:7:::
";

pub const GROUP: &str = "root:x:0:root
sys:x:3:bin,alarm
mem:x:8:
ftp:x:11:
mail:x:12:
log:x:19:
smmsp:x:25:
proc:x:26:
games:x:50:
lock:x:54:
network:x:90:
floppy:x:94:
scanner:x:96:
power:x:98:
adm:x:999:daemon
wheel:x:998:alarm
utmp:x:997:
audio:x:996:alarm
disk:x:995:
input:x:994:
kmem:x:993:
kvm:x:992:
lp:x:991:
optical:x:990:
render:x:989:
sgx:x:988:
storage:x:987:alarm
tty:x:5:
uucp:x:986:
video:x:985:alarm
users:x:984:
groups:x:983:
systemd-journal-remote:x:982:
bin:x:1:daemon
daemon:x:2:bin
http:x:33:
nobody:x:65534:
dbus:x:81:
alarm:x:1000:
";

/// `gshadow` with the same groups, administrators/members as Arch's shadow tools write.
pub fn gshadow() -> String {
    let mut s = String::new();
    for l in GROUP.lines() {
        let f: Vec<&str> = l.split(':').collect();
        s.push_str(&format!("{}:!*::{}\n", f[0], f[3]));
    }
    s
}

pub const SSHD_CONFIG: &str = "#\t$OpenBSD: sshd_config,v 1.104 2021/07/02 05:11:21 dtucker Exp $

# This is the sshd server system-wide configuration file.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
UsePAM yes
Subsystem\tsftp\t/usr/lib/ssh/sftp-server
";

/// A tree shaped like Arch Linux ARM's rootfs, with the account files captured in memory.
pub fn arch_tree() -> (Tree, Secrets) {
    let mut t = Tree::new(meta(0o755, 0, 0));
    for d in [
        "etc", "usr", "usr/bin", "usr/lib", "var", "var/lib", "home", "srv",
    ] {
        dir(&mut t, d, 0o755, 0, 0);
    }
    dir(&mut t, "root", 0o750, 0, 0);
    link(&mut t, "bin", "usr/bin");
    link(&mut t, "sbin", "usr/bin");
    link(&mut t, "lib", "usr/lib");
    // msmtp-mta's /usr/bin/sendmail is a link to msmtp (what `[mail]` needs by default), and
    // what the shipped `[backup]` and `[builds]` need (`Section::needs`).
    link(&mut t, "usr/bin/sendmail", "msmtp");
    for exe in [
        "usr/bin/bash",
        "usr/bin/nologin",
        "usr/bin/msmtp",
        "usr/bin/mount.nfs",
        "usr/lib/docker/cli-plugins/docker-buildx",
    ] {
        put(
            &mut t,
            exe,
            0o755,
            0,
            0,
            NodeKind::File(FileData::Stored(DataRef::default())),
        );
    }
    dir(&mut t, "srv/ftp", 0o555, 14, 11);
    dir(&mut t, "srv/http", 0o755, 33, 33);
    stored(&mut t, "usr/lib/os-release");
    bytes(&mut t, "etc/passwd", 0o644, PASSWD);
    bytes(&mut t, "etc/shadow", 0o600, SHADOW);
    bytes(&mut t, "etc/group", 0o644, GROUP);
    bytes(&mut t, "etc/gshadow", 0o600, &gshadow());
    bytes(&mut t, "etc/hostname", 0o644, "alarm\n");
    bytes(&mut t, "etc/ssh/sshd_config", 0o644, SSHD_CONFIG);
    dir(&mut t, "etc/ssh/sshd_config.d", 0o755, 0, 0);
    bytes(&mut t, "etc/ssh/ssh_host_ed25519_key", 0o600, "KEY");
    bytes(&mut t, "etc/ssh/ssh_host_ed25519_key.pub", 0o644, "PUB");
    bytes(&mut t, "etc/ssh/ssh_host_rsa_key", 0o600, "KEY");
    stored(&mut t, "etc/ssh/moduli");
    bytes(
        &mut t,
        "etc/machine-id",
        0o444,
        "0123456789abcdef0123456789abcdef\n",
    );
    stored(&mut t, "etc/pacman.d/mirrorlist");
    stored(&mut t, "etc/pacman.d/gnupg/pubring.gpg");
    stored(&mut t, "var/lib/docker/engine-id");
    stored(&mut t, "etc/locale.gen");
    link(&mut t, "etc/localtime", "/usr/share/zoneinfo/UTC");
    stored(&mut t, "usr/share/zoneinfo/UTC");
    stored(&mut t, "usr/share/zoneinfo/Europe/Berlin");
    for u in [
        "docker.service",
        "cronie.service",
        "sshd.service",
        "systemd-repart.service",
    ] {
        stored(&mut t, &format!("usr/lib/systemd/system/{u}"));
    }
    dir(&mut t, "etc/systemd/system", 0o755, 0, 0);
    dir(&mut t, "home/alarm", 0o700, 1000, 1000);
    put(
        &mut t,
        "home/alarm/.bashrc",
        0o644,
        1000,
        1000,
        NodeKind::File(FileData::Stored(DataRef::default())),
    );
    dir(&mut t, "var/spool/mail", 0o1777, 0, 12);
    put(
        &mut t,
        "var/spool/mail/alarm",
        0o660,
        1000,
        12,
        NodeKind::File(FileData::Bytes(vec![])),
    );
    (t, secrets)
}

pub fn text(t: &Tree, path: &str) -> String {
    let id = t
        .lookup(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    match &t.node(id).kind {
        NodeKind::File(FileData::Bytes(b)) => String::from_utf8(b.clone()).unwrap(),
        k => panic!("{path}: not an in-memory file: {k:?}"),
    }
}

pub fn assert_file(t: &Tree, path: &str, data: &[u8], perm: u16, uid: u32, gid: u32) {
    let id = t
        .lookup(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    let n = t.node(id);
    assert_eq!(
        n.kind,
        NodeKind::File(FileData::Bytes(data.to_vec())),
        "{path} contents"
    );
    assert_eq!(
        (n.meta.perm, n.meta.uid, n.meta.gid),
        (perm, uid, gid),
        "{path} mode/owner"
    );
    assert_eq!(n.meta.mtime.sec, TS, "{path} mtime");
}

pub fn assert_dir(t: &Tree, path: &str, perm: u16, uid: u32, gid: u32) {
    let id = t
        .lookup(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    let n = t.node(id);
    assert!(n.kind.is_dir(), "{path} is not a directory");
    assert_eq!(
        (n.meta.perm, n.meta.uid, n.meta.gid),
        (perm, uid, gid),
        "{path} mode/owner"
    );
}

pub fn assert_symlink(t: &Tree, path: &str, target: &str) {
    let id = t
        .lookup(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    assert_eq!(
        t.node(id).kind,
        NodeKind::Symlink(target.as_bytes().to_vec()),
        "{path} target"
    );
}

/// Write the tree's directories, in-memory files (stored files become empty files) and
/// symlinks under `root`, with their modes, so host tools can check them.
pub fn materialize(t: &Tree, root: &Path) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let mut entries = Vec::new();
    t.walk(|p, _, id| entries.push((p.to_vec(), id)));
    for (p, id) in &entries {
        let dst = root.join(String::from_utf8_lossy(p).as_ref());
        let n = t.node(*id);
        match &n.kind {
            NodeKind::Dir(_) => std::fs::create_dir_all(&dst).unwrap(),
            NodeKind::File(FileData::Bytes(b)) => std::fs::write(&dst, b).unwrap(),
            NodeKind::File(FileData::Stored(_)) => std::fs::write(&dst, b"").unwrap(),
            NodeKind::Symlink(target) => {
                symlink(String::from_utf8_lossy(target).as_ref(), &dst).unwrap()
            }
            _ => {}
        }
    }
    for (p, id) in entries.iter().rev() {
        let n = t.node(*id);
        if matches!(n.kind, NodeKind::Dir(_) | NodeKind::File(_)) {
            let dst = root.join(String::from_utf8_lossy(p).as_ref());
            std::fs::set_permissions(
                &dst,
                std::fs::Permissions::from_mode(n.meta.perm as u32 | 0o700),
            )
            .unwrap();
        }
    }
}

/// Run `tool -r -R root` (pwck/grpck): must exist, print nothing and succeed.
pub fn run_check(tool: &str, root: &Path) {
    let out = Command::new(tool)
        .arg("-r")
        .arg("-R")
        .arg(root)
        .output()
        .unwrap_or_else(|e| {
            panic!("oracle {tool} is missing ({e}); install Debian's `passwd` package")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let meaningful: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("no changes"))
        .collect();
    assert!(
        out.status.success() && meaningful.is_empty(),
        "{tool} -r -R {} failed ({}):\n{text}",
        root.display(),
        out.status
    );
}

/// Check units the tree ships with the real `systemd-analyze verify --root`: the tree is
/// written to a temporary root next to a copy of the host's own units (so targets such as
/// `network-online.target` resolve); every executable named in `stand_ins` that the tree
/// lacks becomes an empty script. Fails on a non-zero exit or any message naming a unit.
pub fn verify_units(t: &Tree, units: &[&str], stand_ins: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    materialize(t, root);
    let unit_dir = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("sysinit.target").exists())
        .expect("the host's systemd units are needed (Debian's `systemd` package)");
    let out = Command::new("cp")
        .args([
            "-rn",
            &format!("{host_units}/."),
            unit_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for exe in stand_ins {
        let p = root.join(exe.trim_start_matches('/'));
        if !p.exists() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for unit in units {
        // materialize() leaves files owner-writable and executable; units carry their mode.
        let perm = t
            .node(
                t.lookup(format!("usr/lib/systemd/system/{unit}").as_bytes())
                    .unwrap(),
            )
            .meta
            .perm;
        std::fs::set_permissions(
            unit_dir.join(unit),
            std::fs::Permissions::from_mode(perm.into()),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(format!("/usr/lib/systemd/system/{unit}"))
            .output()
            .expect("oracle systemd-analyze is missing (Debian's `systemd` package)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains(unit),
            "systemd-analyze verify {unit}: {}\n{text}",
            out.status
        );
    }
}
