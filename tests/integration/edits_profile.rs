//! A profile loaded by `hc1img::profile::load` carries the edits' config structs as its node
//! sections (`Profile::node`), and the public API applies them to a tree built from outside the
//! crate (as the build does after the tar import).

use std::collections::BTreeMap;
use std::process::Command;

use hc1img::edit::EditContext;
use hc1img::profile::{self, Overrides};
use hc1img::sections::{self, users};
use hc1img::tree::{FileData, Meta, Node, NodeKind, Timestamp, Tree};

const BOARD: &str = r#"
name = "test-board"
arch = "armv7h"
consoles = ["ttyS0"]
root_device = "/dev/sda1"
boot_txt = "setenv bootargs \"{bootargs}\"\n{set_macaddr}\n"
[sd]
first_sector = 8192
partition_size = "64MiB"
blobs = []
"#;

const PROFILE: &str = r#"
[users]
create_groups = ["docker"]
sudo_wheel = true
[[users.add]]
name = "admin"
uid = 1001
groups = ["wheel", "docker"]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@desk"]

[system]
hostname = "hc1-worker1"
timezone = "UTC"

[docker.daemon]
storage-driver = "overlay2"
insecure-registries = ["registry.lan:5000"]

[mirrorlist]
servers = ["http://mirror.archlinuxarm.org/$arch/$repo"]

[[cron.job]]
name = "cleanup"
schedule = "15 4 * * *"
command = "docker system prune -af"

[overlays]
names = ["site"]
[[overlays.entry]]
path = "/etc/motd"
mode = "0640"
"#;

fn meta(perm: u16) -> Meta {
    Meta::new(perm, 0, 0, Timestamp::from_secs(1))
}

fn file(t: &mut Tree, path: &str, perm: u16, data: &str) {
    t.insert(
        path.as_bytes(),
        Node {
            meta: meta(perm),
            kind: NodeKind::File(FileData::Bytes(data.as_bytes().to_vec())),
        },
        &meta(0o755),
    )
    .unwrap();
}

fn content(t: &Tree, path: &str) -> String {
    match &t.node(t.lookup(path.as_bytes()).expect(path)).kind {
        NodeKind::File(FileData::Bytes(b)) => String::from_utf8(b.clone()).unwrap(),
        k => panic!("{path}: {k:?}"),
    }
}

fn minimal_tree() -> Tree {
    let mut t = Tree::new(meta(0o755));
    file(
        &mut t,
        "etc/passwd",
        0o644,
        "root:x:0:0::/root:/bin/bash\nalarm:x:1000:1000::/home/alarm:/bin/bash\n",
    );
    file(
        &mut t,
        "etc/shadow",
        0o600,
        "root:$6$x$y:17000::::::\nalarm:$6$x$y:17000::::::\n",
    );
    file(
        &mut t,
        "etc/group",
        0o644,
        "root:x:0:root\nmail:x:12:\nwheel:x:998:alarm\nalarm:x:1000:\n",
    );
    file(
        &mut t,
        "etc/gshadow",
        0o600,
        "root:::root\nmail:!*::\nwheel:!*::alarm\nalarm:!::\n",
    );
    file(&mut t, "etc/ssh/sshd_config", 0o644, "UsePAM yes\n");
    file(&mut t, "usr/share/zoneinfo/UTC", 0o644, "TZif");
    file(&mut t, "usr/bin/bash", 0o755, "");
    for u in ["docker.service", "cronie.service", "systemd-repart.service"] {
        file(
            &mut t,
            &format!("usr/lib/systemd/system/{u}"),
            0o644,
            "[Unit]\n",
        );
    }
    t.insert(
        b"root",
        Node {
            meta: meta(0o700),
            kind: NodeKind::Dir(BTreeMap::new()),
        },
        &meta(0o755),
    )
    .unwrap();
    t.insert(
        b"bin",
        Node {
            meta: meta(0o777),
            kind: NodeKind::Symlink(b"usr/bin".to_vec()),
        },
        &meta(0o755),
    )
    .unwrap();
    t
}

#[test]
fn a_profile_with_every_section_builds_a_node_tree() {
    // The profile loader is the one way to read these sections: write a profile directory
    // (board, profile, overlay) and load it.
    let pdir = tempfile::tempdir().unwrap();
    std::fs::write(pdir.path().join("board.toml"), BOARD).unwrap();
    std::fs::write(
        pdir.path().join("node.toml"),
        format!("name = \"node\"\nboard = \"board.toml\"\n{PROFILE}"),
    )
    .unwrap();
    std::fs::create_dir_all(pdir.path().join("site/etc")).unwrap();
    std::fs::write(
        pdir.path().join("site/etc/motd"),
        "welcome to the cluster\n",
    )
    .unwrap();
    let p = profile::load(&pdir.path().join("node.toml"), &Overrides::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let sections = p.node.clone();
    assert_eq!(sections.journald.storage.as_str(), "volatile");
    assert_eq!(sections.fstab.root_device, "/dev/sda1");
    assert_eq!(sections.users.add[0].groups, ["wheel", "docker"]);
    assert_eq!(sections.overlays.dirs, [pdir.path().join("site")]);
    // Plain serde over the same text gives the same sections, but for the overlay dirs, which
    // only the loader resolves (against the profile file).
    let mut plain: sections::Sections = toml::from_str(PROFILE).unwrap();
    assert_eq!(plain.overlays.dirs, [std::path::PathBuf::from("site")]);
    plain.overlays.dirs = sections.overlays.dirs.clone();
    assert_eq!(plain, sections);
    assert!(toml::from_str::<sections::Sections>("[journald]\nstorage_typo = 1\n").is_err());

    let mut t = minimal_tree();
    let secrets = |name: &str| -> anyhow::Result<Vec<u8>> { anyhow::bail!("no secret {name}") };
    let ctx = EditContext::new(1_700_000_000, &secrets);
    // The build may pass any overlays_dir: the loaded dirs are absolute.
    let elsewhere = tempfile::tempdir().unwrap();
    let vars = BTreeMap::new();
    let inputs = sections::EditInputs {
        preloaded: &[],
        boot_volume_id: 0x0102_0304,
        overlays_dir: elsewhere.path(),
        vars: &vars,
    };
    sections::apply_all(&mut t, &sections, &ctx, &inputs).unwrap();

    assert_eq!(content(&t, "etc/hostname"), "hc1-worker1\n");
    assert_eq!(
        content(&t, "etc/passwd"),
        "root:x:0:0::/root:/bin/bash\nadmin:x:1001:1001::/home/admin:/bin/bash\n"
    );
    assert_eq!(
        content(&t, "etc/group"),
        "root:x:0:root\nmail:x:12:\nwheel:x:998:admin\ndocker:x:999:admin\nadmin:x:1001:\n"
    );
    assert!(content(&t, "etc/shadow").starts_with("root:!:19675::::::\n"));
    assert!(content(&t, "etc/ssh/sshd_config").starts_with("# Added by hc1img"));
    assert!(content(&t, "etc/docker/daemon.json").contains("\"registry.lan:5000\""));
    assert!(content(&t, "etc/fstab").contains("UUID=0102-0304 /boot vfat"));
    assert!(
        content(&t, "etc/cron.d/cleanup").ends_with("15 4 * * * root docker system prune -af\n")
    );
    assert_eq!(content(&t, "etc/machine-id"), "uninitialized\n");
    assert_eq!(content(&t, "etc/motd"), "welcome to the cluster\n");
    let motd = t.lookup(b"etc/motd").unwrap();
    assert_eq!(t.node(motd).meta.perm, 0o640);

    // The account files, as written, pass shadow-utils' own checks.
    let root = tempfile::tempdir().unwrap();
    for f in ["passwd", "shadow", "group", "gshadow"] {
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc").join(f),
            content(&t, &format!("etc/{f}")),
        )
        .unwrap();
    }
    for d in ["root", "home/admin", "usr/bin"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    std::fs::write(root.path().join("usr/bin/bash"), "").unwrap();
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

#[test]
fn captured_paths_are_what_the_edits_read() {
    let p = sections::captured_paths();
    assert!(p.contains(&"etc/shadow") && p.contains(&"etc/ssh/sshd_config"));
    // An edit that needs an uncaptured file says so.
    let mut t = minimal_tree();
    t.insert(
        b"etc/passwd",
        Node {
            meta: meta(0o644),
            kind: NodeKind::File(FileData::Stored(hc1img::tree::DataRef::default())),
        },
        &meta(0o755),
    )
    .unwrap();
    let secrets = |_: &str| -> anyhow::Result<Vec<u8>> { anyhow::bail!("none") };
    let ctx = EditContext::new(0, &secrets);
    let e = users::apply(&mut t, &users::Config::default(), &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/passwd") && e.contains("capture"), "{e}");
}

#[test]
fn apply_all_names_the_failing_section() {
    let mut t = minimal_tree();
    let secrets = |_: &str| -> anyhow::Result<Vec<u8>> { anyhow::bail!("none") };
    let ctx = EditContext::new(0, &secrets);
    let sections: sections::Sections =
        toml::from_str("[system]\ntimezone = \"Europe/Nowhere\"\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = BTreeMap::new();
    let inputs = sections::EditInputs {
        preloaded: &[],
        boot_volume_id: 0,
        overlays_dir: dir.path(),
        vars: &vars,
    };
    let e = format!(
        "{:#}",
        sections::apply_all(&mut t, &sections, &ctx, &inputs).unwrap_err()
    );
    assert!(
        e.starts_with("[system]: ") && e.contains("Europe/Nowhere"),
        "{e}"
    );
}
