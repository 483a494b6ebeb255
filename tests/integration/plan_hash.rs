//! The derivation hash: equal for equal inputs wherever they sit, different when exactly one
//! input changes, blind to formatting.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hc1img::plan::{self, Derivation, InputKind};
use hc1img::profile::{self, Overrides};

const URL: &str = "http://example.org/root.tar.gz";
const SHA_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SHA_B: &str = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const BOARD: &str = r#"
name = "test-board"
arch = "armv7h"
consoles = ["tty1", "ttySAC2,115200n8"]
root_device = "/dev/sda1"
boot_txt = """
setenv bootargs "{bootargs}"
{set_macaddr}
load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} zImage
"""
[sd]
first_sector = 8192
partition_size = "256MiB"
env_area = { sector = 6272, sectors = 32 }
blobs = [ { file = "bl1.bin", sector = 1 }, { file = "u-boot.bin", sector = 63 } ]
"#;

fn base() -> String {
    format!(
        r#"name = "base"
board = "boards/b.toml"
[source]
url = "{URL}"
mirrors = ["http://mirror.example.org/root.tar.gz"]
[secrets]
token = {{ file = "secrets/token", bake = true }}
[journald]
storage = "volatile"
runtime_max_use = "50M"
[overlays]
dirs = ["ov"]
"#
    )
}

const CHILD: &str = r#"extends = "base.toml"
name = "child"
[rootfs]
size = "4GiB"
label = "root"
[swarm]
role = "worker"
managers = ["m1:2377"]
token_secret = "token"
"#;

/// Same values as CHILD, other formatting, order, comments and size spelling.
const CHILD_REFORMATTED: &str = r#"# a comment
name   =   'child'   # trailing comment
extends = 'base.toml'

swarm.token_secret = "token"
swarm.managers = [ "m1:2377", ]
swarm.role = "worker"

[rootfs]
label = "root"
size = 4294967296
"#;

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, text).expect("write");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path();
    write(p, "boards/b.toml", BOARD);
    write(p, "base.toml", &base());
    write(p, "child.toml", CHILD);
    write(
        p,
        "hc1img.lock",
        &format!("[pins.\"{URL}\"]\nsha256 = \"{SHA_A}\"\nsize = 1234\n"),
    );
    write(p, "secrets/token", "SWMTKN-1-abc\n");
    chmod(&p.join("secrets/token"), 0o600);
    write(p, "ov/etc/motd", "hello\n");
    write(p, "ov/usr/local/bin/tool", "#!/bin/sh\necho hi\n");
    chmod(&p.join("ov/usr/local/bin/tool"), 0o755);
    std::os::unix::fs::symlink("../bin/tool", p.join("ov/usr/local/sbin-tool")).expect("symlink");
    d
}

fn derive(dir: &Path) -> Derivation {
    derive_with(dir, &Overrides::default(), None)
}

fn derive_with(dir: &Path, ov: &Overrides, epoch: Option<&str>) -> Derivation {
    let p = profile::load(&dir.join("child.toml"), ov).unwrap_or_else(|e| panic!("load: {e:#}"));
    plan::derivation_with(&p, epoch.map(OsStr::new)).unwrap_or_else(|e| panic!("derive: {e:#}"))
}

/// Apply `change` to a fresh fixture and check the hash moves (and that it was stable before).
fn assert_changes(what: &str, change: impl FnOnce(&Path)) {
    let d = fixture();
    let before = derive(d.path());
    assert_eq!(before.hash, derive(d.path()).hash, "hash not stable");
    change(d.path());
    let after = derive(d.path());
    assert_ne!(
        before.hash, after.hash,
        "changing {what} did not change the hash"
    );
}

fn edit(dir: &Path, name: &str, from: &str, to: &str) {
    let p = dir.join(name);
    let text = std::fs::read_to_string(&p).expect("read");
    assert!(text.contains(from), "{name} has no {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn same_inputs_in_two_directories_give_the_same_hash() {
    let a = fixture();
    let b = fixture();
    let da = derive(a.path());
    let db = derive(b.path());
    assert_eq!(da.hash, db.hash);
    assert_eq!(da.inputs, db.inputs);
    assert_eq!(da.resolved, db.resolved);
    assert_eq!(da.hash.len(), 64);
    assert!(
        da.hash
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(da.short(), &da.hash[..12]);
    // No path of either directory leaks into what is hashed.
    let json = serde_json::to_string(&da).expect("json");
    let tmp = a.path().to_string_lossy();
    assert!(!json.contains(tmp.as_ref()), "path leaked: {json}");
    // Nor the secret value.
    assert!(!json.contains("SWMTKN"), "secret leaked: {json}");
}

#[test]
fn inputs_cover_every_kind() {
    let d = fixture();
    let der = derive_with(d.path(), &Overrides::default(), Some("1700000000"));
    let kinds: Vec<InputKind> = der.inputs.iter().map(|i| i.kind).collect();
    for k in [
        InputKind::Format,
        InputKind::Source,
        InputKind::Profile,
        InputKind::Board,
        InputKind::Overlay,
        InputKind::Secret,
        InputKind::Env,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    let names: Vec<&str> = der.inputs.iter().map(|i| i.name.as_str()).collect();
    for n in [
        "overlay[0]/etc",
        "overlay[0]/etc/motd",
        "overlay[0]/usr/local/bin/tool",
        "overlay[0]/usr/local/sbin-tool",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let src = der
        .inputs
        .iter()
        .find(|i| i.kind == InputKind::Source)
        .expect("source");
    assert_eq!(src.digest, SHA_A);
    let fmt = der
        .inputs
        .iter()
        .find(|i| i.kind == InputKind::Format && i.name == "hc1img")
        .expect("format");
    assert_eq!(fmt.digest, plan::FORMAT_VERSION.to_string());
    // The embedded assets/ scripts are an input too.
    let assets = der
        .inputs
        .iter()
        .find(|i| i.kind == InputKind::Format && i.name == "assets")
        .expect("assets input");
    assert_eq!(assets.digest.len(), 64);
}

#[test]
fn formatting_comments_and_key_order_do_not_change_the_hash() {
    let d = fixture();
    let before = derive(d.path());
    write(d.path(), "child.toml", CHILD_REFORMATTED);
    edit(
        d.path(),
        "base.toml",
        "[journald]",
        "# journal on tmpfs\n[journald]",
    );
    assert_eq!(before.hash, derive(d.path()).hash);
}

#[test]
fn source_url_and_mirrors_do_not_change_the_hash() {
    let d = fixture();
    let before = derive(d.path());
    edit(
        d.path(),
        "base.toml",
        "http://mirror.example.org/root.tar.gz",
        "https://other.example.net/x.tgz",
    );
    assert_eq!(before.hash, derive(d.path()).hash);
}

#[test]
fn source_sha_changes_the_hash() {
    assert_changes("the pinned sha256", |p| {
        edit(p, "hc1img.lock", SHA_A, SHA_B)
    });
}

#[test]
fn source_sha_override_changes_the_hash() {
    let d = fixture();
    let before = derive(d.path());
    let ov = Overrides {
        source_sha256: Some(SHA_B.to_string()),
        ..Default::default()
    };
    assert_ne!(before.hash, derive_with(d.path(), &ov, None).hash);
}

#[test]
fn profile_value_changes_the_hash() {
    assert_changes("rootfs.label", |p| {
        edit(p, "child.toml", "label = \"root\"", "label = \"rootfs\"")
    });
}

#[test]
fn board_value_changes_the_hash() {
    assert_changes("board consoles", |p| {
        edit(p, "boards/b.toml", "ttySAC2,115200n8", "ttySAC2,9600n8")
    });
}

#[test]
fn board_template_changes_the_hash() {
    assert_changes("board boot_txt", |p| {
        edit(p, "boards/b.toml", "zImage", "zImage.new")
    });
}

#[test]
fn overlay_content_changes_the_hash() {
    assert_changes("an overlay file's content", |p| {
        write(p, "ov/etc/motd", "hello!\n")
    });
}

#[test]
fn overlay_mode_changes_the_hash() {
    // The execute bit decides the file's mode in the image (0644 or 0755).
    assert_changes("an overlay file's execute bit", |p| {
        chmod(&p.join("ov/etc/motd"), 0o755)
    });
}

#[test]
fn checkout_umask_does_not_change_the_hash() {
    // A checkout made under umask 077 has 0600 files and 0700 directories: same image.
    let d = fixture();
    let before = derive(d.path()).hash;
    chmod(&d.path().join("ov/etc/motd"), 0o600);
    chmod(&d.path().join("ov/usr/local/bin/tool"), 0o700);
    chmod(&d.path().join("ov/etc"), 0o700);
    assert_eq!(before, derive(d.path()).hash);
}

#[test]
fn overlay_new_file_changes_the_hash() {
    assert_changes("a new overlay file", |p| write(p, "ov/etc/issue", ""));
}

#[test]
fn overlay_symlink_target_changes_the_hash() {
    assert_changes("an overlay symlink target", |p| {
        let l = p.join("ov/usr/local/sbin-tool");
        std::fs::remove_file(&l).expect("rm");
        std::os::unix::fs::symlink("../bin/other", &l).expect("symlink");
    });
}

#[test]
fn secret_value_changes_the_hash() {
    assert_changes("a secret's value", |p| {
        write(p, "secrets/token", "SWMTKN-1-abd\n")
    });
}

#[test]
fn secret_override_with_other_value_changes_the_hash_same_value_does_not() {
    let d = fixture();
    let before = derive(d.path());
    let other = d.path().join("other-token");
    write(d.path(), "other-token", "SWMTKN-1-abc\n");
    chmod(&other, 0o600);
    let mut ov = Overrides::default();
    ov.secrets.insert("token".into(), other.clone());
    assert_eq!(
        before.hash,
        derive_with(d.path(), &ov, None).hash,
        "same value, other file"
    );
    write(d.path(), "other-token", "SWMTKN-1-zzz\n");
    assert_ne!(before.hash, derive_with(d.path(), &ov, None).hash);
}

#[test]
fn source_date_epoch_changes_the_hash() {
    let d = fixture();
    let unset = derive_with(d.path(), &Overrides::default(), None);
    let one = derive_with(d.path(), &Overrides::default(), Some("1700000000"));
    let two = derive_with(d.path(), &Overrides::default(), Some("1700000001"));
    assert_ne!(unset.hash, one.hash);
    assert_ne!(one.hash, two.hash);
}

#[test]
fn extends_parent_value_changes_the_hash() {
    assert_changes("a value in the parent profile", |p| {
        edit(p, "base.toml", "\"50M\"", "\"64M\"")
    });
}

#[test]
fn default_made_explicit_does_not_change_the_hash() {
    let d = fixture();
    let before = derive(d.path());
    edit(
        d.path(),
        "child.toml",
        "[rootfs]",
        "[rootfs]\nbytes_per_inode = 16384\nfeatures = \"full\"",
    );
    assert_eq!(before.hash, derive(d.path()).hash);
    // The same for node sections (the edits' defaults), including an alias.
    let child = d.path().join("child.toml");
    let mut body = std::fs::read_to_string(&child).expect("read");
    body.push_str(
        "[ssh]\nenable = true\npermit_root_login = \"no\"\n[system]\nlocale = \"C.UTF-8\"\n\
         [mail]\nstarttls = true\n[docker.daemon]\nstorage-driver = \"overlay2\"\n",
    );
    std::fs::write(&child, body).expect("write");
    assert_eq!(before.hash, derive(d.path()).hash);
}

#[test]
fn unpinned_source_is_an_error() {
    let d = fixture();
    std::fs::remove_file(d.path().join("hc1img.lock")).expect("rm");
    let p =
        profile::load(&d.path().join("child.toml"), &Overrides::default()).expect("loads unpinned");
    let err = match plan::derivation_with(&p, None) {
        Ok(_) => panic!("derivation without a pin"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("is not pinned: run `hc1img lock`"), "{err}");
}

#[test]
fn bad_source_date_epoch_is_an_error() {
    let d = fixture();
    let p = profile::load(&d.path().join("child.toml"), &Overrides::default()).expect("loads");
    let err = match plan::derivation_with(&p, Some(OsStr::new("yesterday"))) {
        Ok(_) => panic!("accepted a bad SOURCE_DATE_EPOCH"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.starts_with("SOURCE_DATE_EPOCH=\"yesterday\""), "{err}");
}

#[test]
fn every_node_section_is_covered_by_the_hash() {
    // One non-default value per node section, appended to the child profile.
    let changes: &[(&str, &str)] = &[
        ("system", "[system]\nhostname = \"hc1-{mac6}\"\n"),
        ("users", "[users]\nsudo_wheel = true\n"),
        ("ssh", "[ssh]\npermit_root_login = \"prohibit-password\"\n"),
        (
            "mail",
            "[mail]\nmailhub = \"smtp.lan:587\"\nroot = \"ops@lan\"\n",
        ),
        ("journald", "[journald]\nsystem_max_use = \"100M\"\n"),
        ("io_scheduler", "[io_scheduler]\nscheduler = \"bfq\"\n"),
        (
            "mirrorlist",
            "[mirrorlist]\nservers = [\"http://m.lan/$arch/$repo\"]\n",
        ),
        (
            "docker",
            "[docker.daemon]\ninsecure-registries = [\"registry.lan:5000\"]\n",
        ),
        (
            "cron",
            "[[cron.job]]\nname = \"j\"\nschedule = \"@daily\"\ncommand = \"true\"\n",
        ),
        (
            "backup",
            "[backup]\ntarget = \"nfs\"\nshare = \"nas.lan:/b\"\n",
        ),
        ("cleanup", "[cleanup]\nenable = true\n"),
        (
            "builds",
            "[builds]\nenable = true\nnodes = [\"n1\"]\nregistry = \"registry.lan:5000\"\nregistry_insecure = false\n",
        ),
        ("fstab", "[fstab]\nboot = false\n"),
        (
            "overlays",
            "[[overlays.entry]]\npath = \"/etc/motd\"\nmode = \"0600\"\n",
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (section, text) in changes {
        let d = fixture();
        let before = derive(d.path());
        let child = d.path().join("child.toml");
        let mut body = std::fs::read_to_string(&child).expect("read");
        body.push_str(text);
        std::fs::write(&child, body).expect("write");
        let after = derive(d.path());
        assert_ne!(before.hash, after.hash, "[{section}] is not in the hash");
        assert!(
            after.resolved["node"].get(*section).is_some(),
            "{section} missing from the resolved profile"
        );
        assert!(seen.insert(after.hash), "two changes gave one hash");
    }
}

#[test]
fn resolved_overlays_are_digests_not_paths() {
    let d = fixture();
    let der = derive(d.path());
    let dirs = der.resolved["node"]["overlays"]["dirs"]
        .as_array()
        .expect("dirs array");
    assert_eq!(dirs.len(), 1);
    let digest = dirs[0].as_str().expect("string");
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    assert!(der.resolved.get("files").is_none());
    assert!(der.resolved.get("overlays").is_none());
}

/// `[docker] preload`: each archive's sha256 is an input (named by its file name), its path is
/// not (the resolved profile lists names); other bytes move the hash; a missing archive is an
/// error naming the key.
#[test]
fn preloaded_archives_are_inputs_by_content() {
    let d = fixture();
    write(d.path(), "images/app.tar", "archive v1");
    let mut child = std::fs::read_to_string(d.path().join("child.toml")).expect("read");
    child.push_str("\n[docker]\npreload = [\"images/app.tar\"]\n");
    write(d.path(), "child.toml", &child);
    let a = derive(d.path());
    let input = a
        .inputs
        .iter()
        .find(|i| i.name == "app.tar")
        .expect("no preload input");
    assert_eq!(
        input.digest,
        crate::common::sha256_hex(b"archive v1"),
        "the input is not the archive's sha256"
    );
    assert_eq!(
        a.resolved["node"]["docker"]["preload"],
        serde_json::json!(["app.tar"])
    );
    // The same bytes elsewhere: the same hash.
    let e = tempfile::tempdir().expect("tempdir");
    crate::common::run_ok(
        "cp",
        &[
            "-a",
            &format!("{}/.", d.path().display()),
            e.path().to_str().unwrap(),
        ],
    );
    assert_eq!(derive(e.path()).hash, a.hash);
    write(d.path(), "images/app.tar", "archive v2");
    assert_ne!(derive(d.path()).hash, a.hash);
    std::fs::remove_file(d.path().join("images/app.tar")).expect("rm");
    let err = match profile::load(&d.path().join("child.toml"), &Overrides::default()) {
        Ok(_) => panic!("a missing archive loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("docker.preload") && err.contains("app.tar"),
        "{err}"
    );
}
