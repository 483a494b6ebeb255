//! Bad profiles give one clear line naming the file, the line and the key; nothing panics.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use hc1img::profile::{self, Overrides};

const BOARD: &str = r#"
name = "test-board"
arch = "armv7h"
consoles = ["ttyS0"]
root_device = "/dev/sda1"
boot_txt = "setenv bootargs \"{bootargs}\"\n{set_macaddr}\nload ${devtype} ${devnum}:1 ${kernel_addr_r} zImage\n"
[sd]
first_sector = 8192
partition_size = "64MiB"
env_area = { sector = 6272, sectors = 32 }
blobs = [ { file = "bl1.bin", sector = 1 }, { file = "u-boot.bin", sector = 63 } ]
"#;

const URL: &str = "http://example.org/root.tar.gz";

/// A directory with a board, a valid base profile and a secret; `extra` files are added on top.
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "board.toml", BOARD);
    write(
        dir.path(),
        "base.toml",
        &format!(
            "name = \"base\"\nboard = \"board.toml\"\n[source]\nurl = \"{URL}\"\n[secrets]\ntok = {{ file = \"tok\", bake = true }}\n"
        ),
    );
    write(dir.path(), "tok", "s3cret\n");
    chmod(&dir.path().join("tok"), 0o600);
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write fixture");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn load_err(path: &Path, ov: &Overrides) -> String {
    match profile::load(path, ov) {
        Ok(p) => panic!("{} loaded but should fail: {p:?}", path.display()),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("{msg}");
            assert!(!msg.contains('\n'), "error is not one line: {msg}");
            msg
        }
    }
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn the_fixture_itself_loads() {
    let d = fixture(&[]);
    let p = profile::load(&d.path().join("base.toml"), &Overrides::default()).expect("loads");
    assert_eq!(p.name, "base");
    assert_eq!(p.board.name, "test-board");
    assert_eq!(p.rootfs.label, "root");
    assert_eq!(p.node.users.remove, vec!["alarm".to_string()]);
}

#[test]
fn unknown_key_with_did_you_mean() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[rootfs]\nsiz = \"4GiB\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert_eq!(
        msg,
        format!(
            "{}:4: unknown key `siz` in [rootfs]; did you mean `size`?",
            file(d.path(), "p.toml")
        )
    );
}

#[test]
fn unknown_top_level_key() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\nnmae = \"x\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert_eq!(
        msg,
        format!(
            "{}:3: unknown key `nmae` at the top level; did you mean `name`?",
            file(d.path(), "p.toml")
        )
    );
}

#[test]
fn unknown_key_in_array_of_tables() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[[users.add]]\nname = \"a\"\nuid = 1000\nshel = \"/bin/sh\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:6: unknown key `shel` in [users.add[0]]",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
    assert!(msg.ends_with("did you mean `shell`?"), "{msg}");
}

#[test]
fn wrong_type_names_the_key() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[rootfs]\nbytes_per_inode = \"many\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:4: rootfs.bytes_per_inode: expected u32",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
    assert!(msg.contains("found string \"many\""), "{msg}");
}

#[test]
fn section_of_wrong_type() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\nrootfs = 3\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert_eq!(
        msg,
        format!(
            "{}:3: rootfs: expected a table, found an integer",
            file(d.path(), "p.toml")
        )
    );
}

#[test]
fn bad_enum_value_suggests() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[rootfs]\nfeatures = \"ful\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:4: rootfs.features: expected \"full\" or \"conservative\"",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
    assert!(msg.contains("did you mean \"full\""), "{msg}");
}

#[test]
fn missing_extends_file_names_file_and_line() {
    let d = fixture(&[("p.toml", "# child\nextends = \"nope.toml\"\nname = \"p\"\n")]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:2: extends: file {} cannot be read: no such file",
            file(d.path(), "p.toml"),
            file(d.path(), "nope.toml")
        )),
        "{msg}"
    );
}

#[test]
fn extends_cycle_is_named() {
    let d = fixture(&[
        ("a.toml", "extends = \"b.toml\"\nname = \"a\"\n"),
        ("b.toml", "extends = \"sub/c.toml\"\n"),
        ("sub/c.toml", "extends = \"../a.toml\"\n"),
    ]);
    let msg = load_err(&d.path().join("a.toml"), &Overrides::default());
    assert!(msg.contains("extends: cycle: "), "{msg}");
    assert!(
        msg.starts_with(&format!("{}:1:", file(d.path(), "sub/c.toml"))),
        "{msg}"
    );
    for f in ["a.toml", "b.toml", "c.toml"] {
        assert!(msg.contains(f), "{msg} should name {f}");
    }
}

#[test]
fn self_extension_is_a_cycle() {
    let d = fixture(&[("a.toml", "extends = \"a.toml\"\n")]);
    let msg = load_err(&d.path().join("a.toml"), &Overrides::default());
    assert!(msg.contains("extends: cycle:"), "{msg}");
}

#[test]
fn bad_sha256_in_lock() {
    let bad = "AB".repeat(32);
    let d = fixture(&[(
        "hc1img.lock",
        &format!("[pins.\"{URL}\"]\nsha256 = \"{bad}\"\nsize = 10\n"),
    )]);
    let msg = load_err(&d.path().join("base.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:2: pins.\"{URL}\".sha256: expected 64 lowercase hex digits",
            file(d.path(), "hc1img.lock")
        )),
        "{msg}"
    );
}

#[test]
fn unknown_key_in_lock() {
    let sha = "ab".repeat(32);
    let d = fixture(&[(
        "hc1img.lock",
        &format!("[pins.\"{URL}\"]\nsha256 = \"{sha}\"\nsise = 10\n"),
    )]);
    let msg = load_err(&d.path().join("base.toml"), &Overrides::default());
    assert!(msg.contains("hc1img.lock:3: unknown key `sise`"), "{msg}");
    assert!(msg.contains("did you mean `size`?"), "{msg}");
}

#[test]
fn missing_secret_file() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[secrets]\nother = { file = \"missing\", bake = true }\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:4: secrets.other.file: secret file {} cannot be read: no such file",
            file(d.path(), "p.toml"),
            file(d.path(), "missing")
        )),
        "{msg}"
    );
}

#[test]
fn world_readable_secret_file() {
    let d = fixture(&[]);
    chmod(&d.path().join("tok"), 0o644);
    let msg = load_err(&d.path().join("base.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:6: secrets.tok.file:",
            file(d.path(), "base.toml")
        )),
        "{msg}"
    );
    assert!(msg.contains("world-readable"), "{msg}");
    assert!(
        msg.contains(&format!("chmod 600 {}", file(d.path(), "tok"))),
        "{msg}"
    );
}

#[test]
fn bad_size_string() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[rootfs]\n\nsize = \"4GB\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:5: rootfs.size: invalid size `4GB`",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
}

#[test]
fn board_errors_name_the_board_file() {
    let d = fixture(&[(
        "board.toml",
        &BOARD.replace(
            "{ file = \"u-boot.bin\", sector = 63 }",
            "{ file = \"u-boot.bin\", sector = 6280 }",
        ),
    )]);
    let msg = load_err(&d.path().join("base.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!("{}:", file(d.path(), "board.toml"))),
        "{msg}"
    );
    assert!(
        msg.contains("sd.blobs: [1] u-boot.bin at sector 6280 starts inside env_area"),
        "{msg}"
    );
}

#[test]
fn unknown_placeholder_in_boot_txt() {
    let d = fixture(&[("board.toml", &BOARD.replace("{set_macaddr}", "{kernel}"))]);
    let msg = load_err(&d.path().join("base.toml"), &Overrides::default());
    assert!(
        msg.contains(
            "boot_txt: template line 2: unknown variable {kernel} (known: bootargs, set_macaddr, name, board)"
        ),
        "{msg}"
    );
}

#[test]
fn macaddr_on_a_board_that_cannot_pass_it() {
    let d = fixture(&[
        ("board.toml", &BOARD.replace(r"{set_macaddr}\n", "")),
        (
            "p.toml",
            "extends = \"base.toml\"\nname = \"p\"\n[boot]\nmacaddr = \"02:1e:06:aa:bb:cc\"\n",
        ),
    ]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!("{}:", file(d.path(), "p.toml"))),
        "{msg}"
    );
    assert!(
        msg.contains("boot.macaddr: board test-board has no way to pass a MAC address")
            && msg.ends_with("remove macaddr"),
        "{msg}"
    );
    // The same profile loads on a board whose boot_txt takes the address.
    let ok = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[boot]\nmacaddr = \"02:1e:06:aa:bb:cc\"\n",
    )]);
    let p = profile::load(&ok.path().join("p.toml"), &Overrides::default()).expect("loads");
    assert!(
        p.boot_txt(None)
            .expect("boot.txt")
            .contains("setenv macaddr \"02:1e:06:aa:bb:cc\""),
    );
}

#[test]
fn bad_swarm_label() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[swarm]\nrole = \"init\"\nlabels = { \"Disk\" = \"ssd\" }\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!("{}:", file(d.path(), "p.toml")))
            && msg.contains("swarm.labels: label key \"Disk\": use lower-case letters"),
        "{msg}"
    );
}

#[test]
fn undeclared_secret_reference() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[swarm]\nrole = \"worker\"\nmanagers = [\"m1\"]\ntoken_secret = \"tk\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:6: swarm.token_secret: no secret `tk` is declared; did you mean `tok`?",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
}

#[test]
fn invalid_toml_syntax() {
    let d = fixture(&[("p.toml", "extends = \"base.toml\"\nname = \"p\"\n[rootfs\n")]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!("{}:3: invalid TOML", file(d.path(), "p.toml"))),
        "{msg}"
    );
}

#[test]
fn error_in_parent_points_at_parent() {
    let d = fixture(&[
        (
            "base.toml",
            &format!(
                "name = \"base\"\nboard = \"board.toml\"\n[source]\nurl = \"{URL}\"\n[boot]\nrootdelay = -1\n"
            ),
        ),
        ("p.toml", "extends = \"base.toml\"\nname = \"p\"\n"),
    ]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:6: boot.rootdelay:",
            file(d.path(), "base.toml")
        )),
        "{msg}"
    );
}

#[test]
fn bad_override_values() {
    let d = fixture(&[]);
    let base = d.path().join("base.toml");
    let msg = load_err(
        &base,
        &Overrides {
            source_sha256: Some("xyz".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        msg,
        "--source-sha256 \"xyz\": expected 64 lowercase hex digits"
    );
    let mut secrets = BTreeMap::new();
    secrets.insert("tk".to_string(), PathBuf::from("/nonexistent"));
    let msg = load_err(
        &base,
        &Overrides {
            secrets,
            ..Default::default()
        },
    );
    assert!(
        msg.starts_with("--secret tk=/nonexistent: the profile declares no secret `tk`"),
        "{msg}"
    );
    assert!(msg.ends_with("did you mean `tok`?"), "{msg}");
}

#[test]
fn name_must_be_simple() {
    let d = fixture(&[("p.toml", "extends = \"base.toml\"\nname = \"My Node\"\n")]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:2: name: invalid name \"My Node\"",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
}

#[test]
fn bad_url() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[source]\nurl = \"ftp://x/y\"\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:4: source.url: invalid URL \"ftp://x/y\"",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
}

#[test]
fn missing_required_key() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[swarm]\nmanagers = [\"m1\"]\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert_eq!(
        msg,
        format!(
            "{}:3: swarm: missing required key `role`",
            file(d.path(), "p.toml")
        )
    );
}

#[test]
fn secret_needs_exactly_one_source() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[secrets]\nx = { file = \"tok\", env = \"HOME\" }\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.starts_with(&format!(
            "{}:4: secrets.x: give at most one of",
            file(d.path(), "p.toml")
        )),
        "{msg}"
    );
}

#[test]
fn joining_swarm_node_needs_a_token() {
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[swarm]\nrole = \"manager\"\nmanagers = [\"m1:2377\"]\n",
    )]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    assert!(
        msg.contains("swarm: a joining node needs `token_secret`"),
        "{msg}"
    );
}

#[test]
fn derived_values_win_and_lists_append() {
    let d = fixture(&[
        (
            "base.toml",
            &format!(
                "name = \"base\"\nboard = \"board.toml\"\n[source]\nurl = \"{URL}\"\n\
                 [boot]\nrootdelay = 5\nextra_args = [\"a=1\", \"b=2\"]\n[users]\nremove = [\"alarm\", \"guest\"]\n"
            ),
        ),
        (
            "sub/p.toml",
            "extends = \"../base.toml\"\nname = \"p\"\nboard = \"../board.toml\"\n[boot]\nextra_args = [\"c=3\"]\nroot = \"partuuid\"\n",
        ),
    ]);
    let p = profile::load(&d.path().join("sub/p.toml"), &Overrides::default()).expect("load");
    assert_eq!(p.name, "p");
    assert_eq!(p.boot.rootdelay, 5, "parent value kept");
    assert_eq!(
        p.boot.extra_args,
        ["a=1", "b=2", "c=3"],
        "the derived list appends"
    );
    assert_eq!(p.node.users.remove.len(), 2);
    // The lock lives next to the file that declared [source] (the parent).
    assert_eq!(p.lock_path(), Some(d.path().join("hc1img.lock").as_path()));
    assert!(!p.files.lock_exists);
    assert_eq!(p.files.profiles.len(), 2);
    let cmd = p
        .kernel_cmdline(Some("0A1B2C3D-0000-4000-8000-000000000001"))
        .expect("cmdline");
    assert!(
        cmd.contains("root=PARTUUID=0a1b2c3d-0000-4000-8000-000000000001 rw rootwait rootdelay=5"),
        "{cmd}"
    );
    assert!(cmd.ends_with(" a=1 b=2 c=3"), "{cmd}");
    assert!(p.kernel_cmdline(None).is_err());
    assert!(p.source.clone().is_some_and(|s| s.sha256.is_none()));
}

#[test]
fn plain_path_source_is_relative_to_its_profile_and_pinned_as_written() {
    let sha = "ef".repeat(32);
    let d = fixture(&[
        (
            "lib/base.toml",
            "name = \"base\"\nboard = \"../board.toml\"\n[source]\nurl = \"tarballs/root.tar.gz\"\nmirrors = [\"/srv/abs.tar.gz\", \"file:///srv/x.tar.gz\"]\n",
        ),
        (
            "lib/hc1img.lock",
            &format!("[pins.\"tarballs/root.tar.gz\"]\nsha256 = \"{sha}\"\nsize = 7\n"),
        ),
        ("p.toml", "extends = \"lib/base.toml\"\nname = \"p\"\n"),
    ]);
    let p = profile::load(&d.path().join("p.toml"), &Overrides::default()).expect("load");
    let spec = p.source.clone().expect("source");
    assert_eq!(
        spec.fetch_urls,
        vec![
            file(d.path(), "lib/tarballs/root.tar.gz"),
            "/srv/abs.tar.gz".to_string(),
            "file:///srv/x.tar.gz".to_string()
        ]
    );
    assert_eq!(spec.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(spec.size, Some(7));
    assert!(p.files.lock_exists);
}

/// Load `extends = "base.toml"` + `body` as p.toml (with an `ov` overlay dir present) and
/// return the error with `p.toml`'s path replaced by `P`.
fn node_err(body: &str) -> String {
    let d = fixture(&[
        (
            "p.toml",
            &format!("extends = \"base.toml\"\nname = \"p\"\n{body}"),
        ),
        ("ov/etc/motd", "hello\n"),
        ("ov/etc/tpl", "join {swarm.manager}\n"),
    ]);
    let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
    msg.replace(&file(d.path(), "p.toml"), "P")
        .replace(&d.path().display().to_string(), "D")
}

#[test]
fn node_sections_are_checked_at_load_time() {
    // (profile body, expected start of the error)
    let cases: &[(&str, &str)] = &[
        (
            "[system]\nhostname = \"hc1_{mac6}\"\n",
            "P:4: system.hostname: \"hc1_{mac6}\": a host name is",
        ),
        (
            "[system]\nhostname = \"hc1-{serial}\"\n",
            "P:4: system.hostname: \"hc1-{serial}\": unknown placeholder {serial} (known: {mac6}, {mac})",
        ),
        (
            "[system]\ntimezone = \"../etc/passwd\"\n",
            "P:4: system.timezone: \"../etc/passwd\": expected a zoneinfo name",
        ),
        (
            "[system]\nlocale = \"en US\"\n",
            "P:4: system.locale: \"en US\": expected a locale",
        ),
        (
            "[system]\nkeymap = \"de/latin1\"\n",
            "P:4: system.keymap: \"de/latin1\": expected a keymap",
        ),
        (
            "[users]\nroot_password_secret = \"tk\"\n",
            "P:4: users.root_password_secret: no secret `tk` is declared; did you mean `tok`?",
        ),
        (
            "[[users.add]]\nname = \"bob\"\n\n[[users.add]]\nname = \"eve\"\nuid = 1001\npassword_secret = \"nope\"\n",
            "P:9: users.add[1].password_secret: no secret `nope` is declared",
        ),
        (
            "[[users.add]]\nuid = 1001\n",
            "P:3: users.add[0].name: missing required key `name`",
        ),
        (
            "[[users.add]]\nname = \"a\"\n[[users.add]]\nname = \"b\"\n",
            "P:5: users.add[1].uid: uid 1000 is used twice",
        ),
        (
            "[ssh]\npermit_root_login = \"prohibit_password\"\n",
            "P:4: ssh.permit_root_login: \"prohibit_password\": expected",
        ),
        (
            "[journald]\nruntime_max_use = \"50 MB\"\n",
            "P:4: journald.runtime_max_use: \"50 MB\": expected journald's size syntax",
        ),
        (
            "[journald]\nstorage = \"volatil\"\n",
            "P:4: journald.storage: expected \"volatile\" or",
        ),
        (
            "[io_scheduler]\nscheduler = \"deadlin\"\n",
            "P:4: io_scheduler.scheduler: expected \"mq-deadline\" or \"bfq\" or \"kyber\" or \"none\" or \"deadline\" or \"noop\" or \"cfq\", found \"deadlin\"; did you mean \"deadline\"?",
        ),
        (
            "[io_scheduler]\ndevices = [\"sd a\"]\n",
            "P:4: io_scheduler.devices: [0] \"sd a\": expected a kernel name glob",
        ),
        (
            "[mail]\nmailhub = \"smtp.lan:smtp\"\nroot = \"a@b\"\n",
            "P:4: mail.mailhub: \"smtp.lan:smtp\": expected HOST:PORT",
        ),
        (
            "[mail]\nmailhub = \"smtp.lan\"\nroot = \"a@b\"\n",
            "P:4: mail.mailhub: \"smtp.lan\": expected HOST:PORT",
        ),
        (
            "[mail]\nmailhub = \"smtp.lan:587\"\nroot = \"root\"\n",
            "P:5: mail.root: \"root\": expected the mail address",
        ),
        (
            "[mail]\nmailhub = \"smtp.lan:587\"\nroot = \"a@b\"\nauth_user = \"u\"\npassword_secret = \"pw\"\n",
            "P:7: mail.password_secret: no secret `pw` is declared",
        ),
        (
            "[mail]\nmailhub = \"smtp.lan:465\"\nroot = \"a@b\"\ntls = true\n",
            "P:6: mail.tls: implicit TLS and STARTTLS exclude each other",
        ),
        (
            "[mirrorlist]\nservers = [\"ftp://m/$arch/$repo\"]\n",
            "P:4: mirrorlist.servers[0]: \"ftp://m/$arch/$repo\": expected an http(s):// or file:// URL",
        ),
        (
            "[mirrorlist]\nservers = [\"http://m/$arch\"]\n",
            "P:4: mirrorlist.servers[0]: \"http://m/$arch\": lacks `$repo`",
        ),
        (
            "[docker]\nunit = \"docker\"\n",
            "P:4: docker.unit: \"docker\" is not a systemd unit name",
        ),
        (
            "[docker.daemon]\nlimits = { cpu = nan }\n",
            "P:4: docker.daemon: limits.cpu: NaN cannot be written as JSON",
        ),
        (
            "[[cron.jobs]]\nname = \"x\"\nschedule = \"daily\"\ncommand = \"true\"\n",
            "P:5: cron.jobs[0].schedule: \"daily\" is not a cron schedule: give five fields",
        ),
        (
            "[[cron.job]]\nname = \"a.b\"\nschedule = \"@daily\"\ncommand = \"true\"\n",
            "P:4: cron.job[0].name: \"a.b\": cron.d file names use",
        ),
        (
            "[[cron.job]]\nname = \"x\"\nschedule = \"@daily\"\ncommand = \"date +%F\"\n",
            "P:6: cron.job[0].command: command: cron turns an unescaped `%` into a newline",
        ),
        (
            "[[cron.job]]\nname = \"x\"\nschedule = \"@daily\"\n",
            "P:3: cron.job[0].command: missing required key `command`",
        ),
        (
            "[fstab]\nroot_options = \"rw, noatime\"\n",
            "P:4: fstab.root_options: \"rw, noatime\": one word",
        ),
        (
            "[overlays]\ndirs = [\"ov\", \"missing\"]\n",
            "P:4: overlays.dirs: [1] D/missing is not a directory",
        ),
        (
            "[overlays]\ndirs = [\"ov\"]\n[[overlays.entry]]\npath = \"/etc/motd\"\nmode = \"rwx\"\n",
            "P:7: overlays.entry[0].mode: \"rwx\": expected an octal mode",
        ),
        (
            "[overlays]\ndirs = [\"ov\"]\n[[overlays.entry]]\npath = \"etc/motd\"\n",
            "P:6: overlays.entry[0].path: \"etc/motd\": expected an absolute path",
        ),
        (
            "[overlays]\ndirs = [\"ov\"]\n[[overlays.entry]]\npath = \"/etc/issue\"\n",
            "P:6: overlays.entry[0].path: \"/etc/issue\" matches no file in the overlay dirs",
        ),
        (
            "[overlays]\ndirs = [\"ov\"]\n[[overlays.entry]]\npath = \"/etc/tpl\"\ntemplate = true\n",
            "P:7: overlays.entry[0].template: D/ov/etc/tpl: unknown variable {swarm.manager} (known: arch, board, name)",
        ),
        (
            "[hostname]\nname = \"hc1-{mac6}\"\n",
            "P:3: hostname: the [hostname] section is gone; write `hostname = \"...\"` under [system]",
        ),
    ];
    for (body, want) in cases {
        let msg = node_err(body);
        assert!(
            msg.starts_with(want),
            "profile:\n{body}\nwant prefix: {want}\ngot:         {msg}"
        );
    }
}

/// Each validated value type (`hc1img::values`) refuses a wrong value with the file, line and
/// key of the value, before anything is fetched: one case per type.
#[test]
fn every_value_type_refuses_a_wrong_value_where_it_is_written() {
    let cases: &[(&str, &str)] = &[
        // HostnameTemplate
        (
            "[system]\nhostname = \"hc1-{ip}\"\n",
            "P:4: system.hostname: \"hc1-{ip}\": unknown placeholder {ip}",
        ),
        // TimeZone
        (
            "[system]\ntimezone = \"Europe//Paris\"\n",
            "P:4: system.timezone: \"Europe//Paris\": expected a zoneinfo name",
        ),
        // Locale, Keymap
        (
            "[system]\nlocale = \"C UTF-8\"\n",
            "P:4: system.locale: \"C UTF-8\": expected a locale",
        ),
        (
            "[system]\nkeymap = \"us;de\"\n",
            "P:4: system.keymap: \"us;de\": expected a keymap",
        ),
        // UnitName
        (
            "[cron]\nwanted_by = \"multi-user\"\n",
            "P:4: cron.wanted_by: \"multi-user\" is not a systemd unit name",
        ),
        // HostPort
        (
            "[mail]\nmailhub = \"smtp.lan:99999\"\n",
            "P:4: mail.mailhub: \"smtp.lan:99999\": expected HOST:PORT",
        ),
        // Endpoint
        (
            "[swarm]\nmanagers = [\"m1:2377\", \"m 2\"]\n",
            "P:4: swarm.managers[1]: \"m 2\": expected HOST or HOST:PORT",
        ),
        // Mode
        (
            "[overlays]\ndirs = [\"ov\"]\n[[overlays.entry]]\npath = \"/etc/motd\"\nmode = \"17777\"\n",
            "P:7: overlays.entry[0].mode: \"17777\": expected an octal mode",
        ),
        // CalendarSpec, TimeSpan
        (
            "[backup]\nschedule = \"daily; reboot\"\n",
            "P:4: backup.schedule: \"daily; reboot\" is not a systemd calendar expression",
        ),
        (
            "[cleanup]\nrandomized_delay = \"a while\"\n",
            "P:4: cleanup.randomized_delay: \"a while\" is not a systemd time span",
        ),
        // AbsPath
        (
            "[backup]\nmount_point = \"/mnt/../etc\"\n",
            "P:4: backup.mount_point: \"/mnt/../etc\" must be an absolute path",
        ),
        (
            "[firstboot]\nseed_dir = \"boot/seed\"\n",
            "P:4: firstboot.seed_dir: \"boot/seed\" must be an absolute path",
        ),
        // CronSchedule
        (
            "[[cron.job]]\nname = \"x\"\nschedule = \"@often\"\ncommand = \"true\"\n",
            "P:5: cron.job[0].schedule: \"@often\" is not a cron schedule",
        ),
        // JournaldSize, JournaldStorage
        (
            "[journald]\nsystem_max_use = \"1 G\"\n",
            "P:4: journald.system_max_use: \"1 G\": expected journald's size syntax",
        ),
        (
            "[journald]\nstorage = \"disk\"\n",
            "P:4: journald.storage: expected \"volatile\" or \"persistent\" or \"auto\" or \"none\", found \"disk\"",
        ),
        // MirrorUrl
        (
            "[mirrorlist]\nservers = [\"http://m/$arch/$repo\", \"http://m/$arch\"]\n",
            "P:4: mirrorlist.servers[1]: \"http://m/$arch\": lacks `$repo`",
        ),
        // IoScheduler
        (
            "[io_scheduler]\nscheduler = \"fifo\"\n",
            "P:4: io_scheduler.scheduler: expected \"mq-deadline\"",
        ),
    ];
    for (body, want) in cases {
        let msg = node_err(body);
        assert!(
            msg.starts_with(want),
            "profile:\n{body}\nwant prefix: {want}\ngot:         {msg}"
        );
        assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    }
}

#[test]
fn unknown_keys_in_node_sections_suggest_and_aliases_work() {
    let msg = node_err("[[cron.job]]\nname = \"x\"\nschedul = \"@daily\"\ncommand = \"true\"\n");
    assert_eq!(
        msg,
        "P:5: unknown key `schedul` in [cron.job[0]]; did you mean `schedule`?"
    );
    let msg = node_err("[mail]\nstarttl = true\n");
    assert!(
        msg.starts_with("P:4: unknown key `starttl` in [mail]; did you mean `starttls`?"),
        "{msg}"
    );
    let msg = node_err("[users]\nsudo_whel = true\n");
    assert_eq!(
        msg,
        "P:4: unknown key `sudo_whel` in [users]; did you mean `sudo_wheel`?"
    );
    let msg = node_err("[journald]\nruntime_max_use = 50\n");
    assert!(
        msg.starts_with("P:4: journald.runtime_max_use: expected a string, found integer `50`"),
        "{msg}"
    );

    // The aliases load to the same values as the field names.
    let d = fixture(&[
        (
            "a.toml",
            "extends = \"base.toml\"\nname = \"p\"\n[mail]\nmailhub = \"h:465\"\nroot = \"a@b\"\ntls = true\nstarttls = false\nauth_user = \"u\"\npassword_secret = \"tok\"\n[[cron.jobs]]\nname = \"j\"\nschedule = \"@daily\"\ncommand = \"true\"\n[overlays]\nnames = [\"ov\"]\n",
        ),
        (
            "b.toml",
            "extends = \"base.toml\"\nname = \"p\"\n[mail]\nmailhub = \"h:465\"\nroot = \"a@b\"\nuse_tls = true\nuse_starttls = false\nauth_user = \"u\"\nauth_pass_secret = \"tok\"\n[[cron.job]]\nname = \"j\"\nschedule = \"@daily\"\ncommand = \"true\"\n[overlays]\ndirs = [\"ov\"]\n",
        ),
        ("ov/x", "x"),
    ]);
    let a = profile::load(&d.path().join("a.toml"), &Overrides::default()).expect("a");
    let b = profile::load(&d.path().join("b.toml"), &Overrides::default()).expect("b");
    assert_eq!(a.node, b.node);
    assert!(a.node.mail.use_tls && !a.node.mail.use_starttls);
    assert_eq!(a.node.cron.jobs.len(), 1);
    assert!(a.node.overlays.dirs[0].is_absolute());
}

#[test]
fn node_defaults_when_sections_are_absent() {
    let d = fixture(&[]);
    let p = profile::load(&d.path().join("base.toml"), &Overrides::default()).expect("loads");
    let n = &p.node;
    assert_eq!(n.system.locale, "C.UTF-8");
    assert_eq!(n.system.timezone, "UTC");
    assert!(n.system.hostname.is_none());
    assert!(n.mail.use_starttls && !n.mail.use_tls && n.mail.mailhub.is_none());
    assert_eq!(n.journald.storage.as_str(), "volatile");
    assert_eq!(n.io_scheduler.scheduler.as_str(), "mq-deadline");
    assert_eq!(
        n.docker
            .daemon
            .get("storage-driver")
            .and_then(|v| v.as_str()),
        Some("overlay2")
    );
    assert!(n.overlays.dirs.is_empty() && p.files.overlays.is_empty());
}

#[test]
fn relative_overlay_dirs_are_resolved_against_their_profile_when_loaded_by_a_relative_path() {
    let d = fixture(&[
        (
            "sub/p.toml",
            "extends = \"../base.toml\"\nname = \"p\"\n[overlays]\ndirs = [\"../ov\", \"local\"]\n",
        ),
        ("ov/a", "a"),
        ("sub/local/b", "b"),
    ]);
    // Load through a path relative to the current directory (`../../tmp/…`).
    let cwd = std::env::current_dir().expect("cwd");
    let mut rel = PathBuf::new();
    for _ in cwd.components().skip(1) {
        rel.push("..");
    }
    rel.push(d.path().strip_prefix("/").expect("absolute tempdir"));
    rel.push("sub/p.toml");
    assert!(rel.is_relative());
    let p = profile::load(&rel, &Overrides::default()).expect("load");
    let want = vec![d.path().join("ov"), d.path().join("sub/local")];
    assert_eq!(p.node.overlays.dirs, want);
    assert!(want.iter().all(|w| w.is_absolute()));
}

#[test]
fn overlay_templates_get_the_swarm_variables() {
    let d = fixture(&[
        (
            "p.toml",
            "extends = \"base.toml\"\nname = \"w\"\n[swarm]\nrole = \"worker\"\nmanagers = [\"m1\", \"m2:2400\"]\ntoken_secret = \"tok\"\n[overlays]\ndirs = [\"ov\"]\n[[overlays.entry]]\npath = \"/etc/tpl\"\ntemplate = true\n",
        ),
        (
            "ov/etc/tpl",
            "join {swarm.manager} of {swarm.managers} as {name}\n",
        ),
    ]);
    let p = profile::load(&d.path().join("p.toml"), &Overrides::default()).expect("load");
    let v = p.template_vars();
    assert_eq!(v["swarm.manager"], "m1:2377");
    assert_eq!(v["swarm.managers"], "m1:2377 m2:2400");
    assert_eq!(v["swarm.role"], "worker");
    assert_eq!(v["name"], "w");
    assert_eq!(v["board"], "test-board");
}

#[test]
fn operations_sections_are_checked_at_load_time() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[backup]\ntarget = \"nfs\"\n",
            ":3: backup: backup.share is required",
            "",
        ),
        (
            "[backup]\ntarget = \"rsync\"\nrsync_dest = \"b@nas:/x\"\nssh_key_secret = \"nokey\"\n",
            ":6: backup.ssh_key_secret: no secret `nokey` is declared",
            "",
        ),
        (
            "[cleanup]\nenable = true\nvolumes = \"named\"\n",
            ":3: cleanup: cleanup.volumes = \"named\"",
            "",
        ),
        (
            "[builds]\nenable = true\nnodes = [\"n1\"]\nregistry = \"reg.lan:5000\"\n",
            ":6: builds.registry: builds.registry = \"reg.lan:5000\" is a plain-HTTP registry",
            "insecure-registries",
        ),
    ];
    for (body, want, also) in cases {
        let d = fixture(&[(
            "p.toml",
            &format!("extends = \"base.toml\"\nname = \"p\"\n{body}"),
        )]);
        let msg = load_err(&d.path().join("p.toml"), &Overrides::default());
        let path = file(d.path(), "p.toml");
        assert!(msg.starts_with(&path), "{msg}");
        assert!(msg.contains(want) && msg.contains(also), "{body}: {msg}");
    }
    // With the registry trusted, the same [builds] loads.
    let d = fixture(&[(
        "p.toml",
        "extends = \"base.toml\"\nname = \"p\"\n[docker.daemon]\ninsecure-registries = [\"reg.lan:5000\"]\n\
         [builds]\nenable = true\nnodes = [\"n1\"]\nregistry = \"reg.lan:5000\"\n",
    )]);
    let p = profile::load(&d.path().join("p.toml"), &Overrides::default()).expect("loads");
    assert!(p.node.builds.enable);
}
