//! Random TOML-ish text and random valid TOML documents fed to the loader (as the profile, the
//! parent profile, the board file and the lock file): it returns errors, never panics.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hc1img::profile::{self, Overrides};
use proptest::prelude::*;

const BOARD: &str = r#"
name = "b"
arch = "armv7h"
consoles = ["ttyS0"]
root_device = "/dev/sda1"
boot_txt = "setenv bootargs \"{bootargs}\""
[sd]
first_sector = 8192
partition_size = "1MiB"
blobs = [{ file = "u-boot.bin", sector = 1 }]
"#;

fn dir_with(profile: &str, base: &str, board: &str, lock: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path();
    std::fs::write(p.join("p.toml"), profile).expect("write");
    std::fs::write(p.join("base.toml"), base).expect("write");
    std::fs::write(p.join("board.toml"), board).expect("write");
    std::fs::write(p.join("hc1img.lock"), lock).expect("write");
    std::fs::write(p.join("s"), "x").expect("write");
    std::fs::set_permissions(p.join("s"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    d
}

fn try_load(dir: &Path) {
    let r = profile::load(&dir.join("p.toml"), &Overrides::default());
    if let Err(e) = r {
        let msg = format!("{e:#}");
        assert!(!msg.is_empty());
        assert!(!msg.contains("internal:"), "{msg}");
    }
}

/// Words the schema knows, so random documents reach deep into it.
const KEYS: &[&str] = &[
    "name",
    "board",
    "extends",
    "source",
    "url",
    "mirrors",
    "signature",
    "keyring",
    "rootfs",
    "size",
    "features",
    "label",
    "bytes_per_inode",
    "boot",
    "root",
    "rootdelay",
    "fsck_force",
    "uas_quirk",
    "extra_args",
    "console",
    "macaddr",
    "secrets",
    "file",
    "env",
    "users",
    "remove",
    "add",
    "uid",
    "gid",
    "groups",
    "shell",
    "password_secret",
    "authorized_keys",
    "journald",
    "storage",
    "runtime_max_use",
    "docker",
    "daemon",
    "swarm",
    "role",
    "managers",
    "token_secret",
    "labels",
    "hostname",
    "system",
    "timezone",
    "io_scheduler",
    "scheduler",
    "devices",
    "mail",
    "mailhub",
    "program",
    "cron",
    "jobs",
    "schedule",
    "command",
    "mirrorlist",
    "servers",
    "overlays",
    "dirs",
    "pins",
    "sha256",
    "sd",
    "blobs",
    "sector",
    "sectors",
    "first_sector",
    "partition_size",
    "env_area",
    "consoles",
    "arch",
    "root_device",
    "boot_txt",
    "fusing_script",
    // The node sections (the edits' config types), with their aliases.
    "create_groups",
    "sudo_wheel",
    "root_password_secret",
    "comment",
    "home",
    "locale",
    "keymap",
    "first_boot_reset",
    "ssh",
    "permit_root_login",
    "password_authentication",
    "extra",
    "enable",
    "system_max_use",
    "unit",
    "wanted_by",
    "job",
    "user",
    "logrotate",
    "content",
    "use_tls",
    "tls",
    "use_starttls",
    "starttls",
    "auth_user",
    "auth_pass_secret",
    "rewrite_domain",
    "revaliases",
    "local",
    "from",
    "fstab",
    "root_options",
    "boot_options",
    "names",
    "entry",
    "path",
    "mode",
    "owner",
    "template",
    "zzz",
];

fn scalar() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<f64>().prop_map(toml::Value::Float),
        prop::sample::select(vec![
            "",
            "4GiB",
            "auto",
            "full",
            "base.toml",
            "p.toml",
            "board.toml",
            "s",
            "worker",
            "http://x/y",
            "/dev/sda1",
            "partuuid",
            "volatile",
            "50M",
            "{bootargs}",
            "a-b",
            "hc1-{mac6}",
            "\u{0}",
            "ab",
            "-1",
            "9999999999999999999999TiB",
        ])
        .prop_map(|s| toml::Value::String(s.to_string())),
        "\\PC{0,12}".prop_map(toml::Value::String),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(|m| {
                toml::Value::Table(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::btree_map(prop::sample::select(KEYS), value(), 0..8).prop_map(|m| {
        let t: toml::Table = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        toml::to_string(&t).unwrap_or_default()
    })
}

/// TOML-looking noise: fragments of real syntax glued at random.
fn tomlish() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        prop::sample::select(vec![
            "[",
            "]",
            "[[",
            "]]",
            "=",
            "\"",
            "'",
            "'''",
            "\"\"\"",
            "{",
            "}",
            ",",
            ".",
            "\n",
            " ",
            "#",
            "extends",
            "board",
            "name",
            "rootfs",
            "size",
            "users.add",
            "secrets",
            "1",
            "-0x1F",
            "1e400",
            "inf",
            "nan",
            "true",
            "1979-05-27T07:32:00Z",
            "\\u0000",
            "${x}",
        ])
        .prop_map(str::to_string),
        "\\PC{0,6}",
    ];
    prop::collection::vec(frag, 0..40).prop_map(|v| v.concat())
}

const GOOD_BASE: &str =
    "name = \"base\"\nboard = \"board.toml\"\n[secrets]\ns = { file = \"s\", bake = true }\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_text_as_profile(text in "\\PC{0,200}") {
        let d = dir_with(&text, GOOD_BASE, BOARD, "");
        try_load(d.path());
    }

    #[test]
    fn tomlish_noise_everywhere(a in tomlish(), b in tomlish(), c in tomlish()) {
        let d = dir_with(&format!("extends = \"base.toml\"\n{a}"), &format!("{GOOD_BASE}{b}"), BOARD, &c);
        try_load(d.path());
        let d = dir_with("extends = \"base.toml\"\n", GOOD_BASE, &format!("{BOARD}{a}"), "");
        try_load(d.path());
    }

    #[test]
    fn random_documents_as_profile_parent_board_and_lock(
        p in document(), b in document(), board in document(), lock in document()
    ) {
        let d = dir_with(&format!("extends = \"base.toml\"\n{p}"), &format!("{GOOD_BASE}\n{b}"), BOARD, "");
        try_load(d.path());
        let d = dir_with(&p, &b, &board, &lock);
        try_load(d.path());
        let d = dir_with(GOOD_BASE, "", &board, &lock);
        try_load(d.path());
    }

    #[test]
    fn fusing_script_checker_never_panics(script in tomlish(), noise in "\\PC{0,80}") {
        let d = dir_with(GOOD_BASE, "", BOARD, "");
        let p = profile::load(&d.path().join("p.toml"), &Overrides::default()).expect("load");
        let _ = p.board.check_fusing_script(&script);
        let _ = p.board.check_fusing_script(&format!("dd if=u-boot.bin seek=${{x}} {noise}\nx={noise}"));
        let mut sizes = std::collections::BTreeMap::new();
        sizes.insert("u-boot.bin".to_string(), noise.len() as u64 * 1_000_000_007);
        let _ = p.board.check_blob_layout(&sizes);
    }
}
