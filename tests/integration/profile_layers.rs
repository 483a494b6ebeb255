//! Layering of `extends` chains (docs/profiles.md, "Loading rules"): lists append, `"!X"`
//! removes, `"!*"` clears, arrays of tables merge by name, `enable = false` turns a section
//! off, a derived profile names itself; each rule's misuse is one located error.

use hc1img::profile::{self, Overrides, Profile};

const BOARD: &str = r#"
name = "test-board"
arch = "armv7h"
consoles = ["ttyS0"]
root_device = "/dev/sda1"
boot_txt = "setenv bootargs \"{bootargs}\"\n"
[sd]
first_sector = 8192
partition_size = "64MiB"
blobs = []
"#;

/// The parent every test extends: lists, arrays of tables and a `[mail]` to inherit.
const BASE: &str = r#"name = "base"
board = "board.toml"
[source]
url = "http://example.org/root.tar.gz"
[secrets]
tok = {}
[boot]
extra_args = ["a=1", "b=2"]
[users]
remove = ["alarm", "guest"]
[[users.add]]
name = "admin"
uid = 1000
comment = "Admin"
groups = ["wheel"]
[[users.add]]
name = "bob"
uid = 1001
[[cron.job]]
name = "tidy"
schedule = "@daily"
command = "true"
[mail]
mailhub = "smtp.lan:587"
root = "ops@lan"
auth_user = "u@lan"
auth_pass_secret = "tok"
[overlays]
dirs = ["ov"]
"#;

/// A directory with the board, `base.toml`, an overlay `ov/` and `p.toml` = `child`.
fn dir_with(child: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let w = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    };
    w("board.toml", BOARD);
    w("base.toml", BASE);
    w("ov/etc/motd", "hi\n");
    w("ov2/etc/issue", "hi\n");
    w("p.toml", child);
    d
}

fn load(child: &str) -> Profile {
    let d = dir_with(child);
    profile::load(&d.path().join("p.toml"), &Overrides::default())
        .unwrap_or_else(|e| panic!("{child}\n{e:#}"))
}

/// The one-line error of loading `child`, with p.toml's path written `P`.
fn err(child: &str) -> String {
    let d = dir_with(child);
    let p = d.path().join("p.toml");
    match profile::load(&p, &Overrides::default()) {
        Ok(_) => panic!("loaded but should fail:\n{child}"),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains('\n'), "not one line: {msg}");
            msg.replace(&p.display().to_string(), "P")
        }
    }
}

const HEAD: &str = "extends = \"base.toml\"\nname = \"p\"\n";

fn child(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn lists_append_to_the_inherited_list() {
    let p = load(&child("[boot]\nextra_args = [\"c=3\", \"a=1\"]\n"));
    // Appended in order; an item the list already has is not added twice.
    assert_eq!(p.boot.extra_args, ["a=1", "b=2", "c=3"]);
    // Lists the child does not set are inherited whole.
    assert_eq!(p.node.users.remove, ["alarm", "guest"]);
    // Paths are compared resolved: the child's "ov2" is appended after the parent's "ov".
    let p = load(&child("[overlays]\ndirs = [\"ov2\"]\n"));
    let names: Vec<_> = p
        .node
        .overlays
        .dirs
        .iter()
        .map(|d| d.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ov", "ov2"]);
}

#[test]
fn bang_item_removes_from_the_inherited_list() {
    let p = load(&child("[users]\nremove = [\"!guest\", \"extra\"]\n"));
    assert_eq!(p.node.users.remove, ["alarm", "extra"]);
    // A path item is resolved like the paths it removes.
    let p = load(&child("[overlays]\ndirs = [\"!ov\", \"ov2\"]\n"));
    assert_eq!(p.node.overlays.dirs.len(), 1);
    assert!(p.node.overlays.dirs[0].ends_with("ov2"));
    // Removing what is not there is an error at the item, with a suggestion.
    assert_eq!(
        err(&child("[users]\nremove = [\"!gest\"]\n")),
        "P:4: users.remove[0]: \"!gest\" removes nothing: the inherited list has no \"gest\"; did you mean \"!guest\"?"
    );
}

#[test]
fn bang_star_clears_the_inherited_list() {
    let p = load(&child("[boot]\nextra_args = [\"!*\", \"z=9\"]\n"));
    assert_eq!(p.boot.extra_args, ["z=9"]);
    let p = load(&child("[users]\nremove = [\"!*\"]\n"));
    assert!(p.node.users.remove.is_empty());
    // Only as the first item (it clears what is inherited, not what the child wrote).
    assert_eq!(
        err(&child("[boot]\nextra_args = [\"z=9\", \"!*\"]\n")),
        "P:4: boot.extra_args[1]: \"!*\" clears the inherited list: write it as the first item"
    );
}

#[test]
fn arrays_of_tables_merge_by_name() {
    let p = load(&child(
        "[[users.add]]\nname = \"admin\"\ncomment = \"Boss\"\ngroups = [\"docker\"]\n\
         [[users.add]]\nname = \"carol\"\nuid = 1002\n\
         [[cron.job]]\nname = \"tidy\"\nschedule = \"@hourly\"\n",
    ));
    let users: Vec<_> = p.node.users.add.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        users,
        ["admin", "bob", "carol"],
        "same name merged in place, new appended"
    );
    let admin = &p.node.users.add[0];
    assert_eq!(admin.comment, "Boss", "the child's key overrides");
    assert_eq!(admin.uid, 1000, "the parent's other keys stay");
    assert_eq!(admin.groups, ["wheel", "docker"], "lists inside append too");
    assert_eq!(p.node.cron.jobs.len(), 1);
    assert_eq!(p.node.cron.jobs[0].schedule.as_deref(), Some("@hourly"));
    assert_eq!(p.node.cron.jobs[0].command, "true");
    // The alias `[[cron.jobs]]` meets the parent's `[[cron.job]]`.
    let p = load(&child(
        "[[cron.jobs]]\nname = \"tidy\"\nschedule = \"@weekly\"\n",
    ));
    assert_eq!(p.node.cron.jobs.len(), 1);
    assert_eq!(p.node.cron.jobs[0].schedule.as_deref(), Some("@weekly"));
    // `"!NAME"` in an inline array of tables drops by name too.
    let p = load(&child("[users]\nadd = [\"!bob\"]\n"));
    let users: Vec<_> = p.node.users.add.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["admin"]);
}

#[test]
fn remove_true_drops_an_inherited_item() {
    let p = load(&child("[[users.add]]\nname = \"admin\"\nremove = true\n"));
    let users: Vec<_> = p.node.users.add.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["bob"]);
    let p = load(&child("[[cron.job]]\nname = \"tidy\"\nremove = true\n"));
    assert!(p.node.cron.jobs.is_empty());
    // `remove = false` is the same as leaving it out.
    let p = load(&child(
        "[[users.add]]\nname = \"admin\"\nremove = false\nuid = 1005\n",
    ));
    assert_eq!(p.node.users.add[0].uid, 1005);

    assert_eq!(
        err(&child("[[users.add]]\nname = \"dave\"\nremove = true\n")),
        "P:3: users.add[0]: `remove = true` removes nothing: no inherited item has name = \"dave\""
    );
    assert_eq!(
        err(&child(
            "[[users.add]]\nname = \"admin\"\nremove = true\nuid = 7\n"
        )),
        "P:5: users.add[0].remove: `remove = true` drops the inherited item: give only `name` with it"
    );
    assert_eq!(
        err(&child(
            "[[users.add]]\nname = \"admin\"\nremove = \"yes\"\n"
        )),
        "P:5: users.add[0].remove: expected a boolean (`remove = true` drops the inherited item), found a string"
    );
}

#[test]
fn an_inherited_section_turns_off_with_enable_false() {
    // [mail] has no `enable` of its own: off drops everything inherited.
    let p = load(&child("[mail]\nenable = false\n"));
    assert_eq!(p.node.mail, Default::default());
    let p = load(&child("[overlays]\nenable = false\n"));
    assert!(p.node.overlays.dirs.is_empty());
    // `enable = true` keeps what is inherited.
    let p = load(&child("[mail]\nenable = true\n"));
    assert_eq!(p.node.mail.mailhub.as_deref(), Some("smtp.lan:587"));
    // Sections with an `enable` of their own keep their values, off.
    let p = load(&child("[users]\nenable = false\n"));
    assert!(!p.node.users.enable);

    assert_eq!(
        err(&child("[mail]\nenable = \"no\"\n")),
        "P:4: mail.enable: expected a boolean, found a string"
    );
    assert_eq!(
        err(&child("[rootfs]\nenable = false\n")),
        "P:4: rootfs.enable: [rootfs] cannot be turned off: every image has a root filesystem"
    );
}

#[test]
fn a_derived_profile_names_itself() {
    let d = dir_with("# child\nextends = \"base.toml\"\n[boot]\nrootdelay = 1\n");
    let p = d.path().join("p.toml");
    let msg = match profile::load(&p, &Overrides::default()) {
        Ok(_) => panic!("a nameless derived profile loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert_eq!(
        msg,
        format!(
            "{}:2: name: a derived profile must set its own `name` (with its parent's it would share its out/ directory and lock pins)",
            p.display()
        )
    );
    // The chain's first file needs one too (the schema's required key).
    let d = dir_with("board = \"board.toml\"\n");
    let msg = match profile::load(&d.path().join("p.toml"), &Overrides::default()) {
        Ok(_) => panic!("a nameless profile loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(msg.ends_with("missing required key `name`"), "{msg}");
}

#[test]
fn the_first_file_follows_the_same_rules() {
    // Nothing is inherited: a removal there removes nothing, which is an error.
    let d = dir_with("");
    std::fs::write(
        d.path().join("p.toml"),
        "name = \"p\"\nboard = \"board.toml\"\n[boot]\nextra_args = [\"!a=1\"]\n",
    )
    .expect("write");
    let msg = match profile::load(&d.path().join("p.toml"), &Overrides::default()) {
        Ok(_) => panic!("loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        msg.ends_with(
            ":4: boot.extra_args[0]: \"!a=1\" removes nothing: the inherited list has no \"a=1\""
        ),
        "{msg}"
    );
}

#[test]
fn plan_origins_name_the_file_and_line_of_each_value() {
    let d = dir_with(&child("[boot]\nextra_args = [\"c=3\"]\n"));
    let p = profile::load(&d.path().join("p.toml"), &Overrides::default()).expect("load");
    let at = |key: &str| {
        p.origins
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, at)| at.clone())
            .unwrap_or_else(|| panic!("no origin for {key}: {:?}", p.origins))
    };
    let base = d.path().join("base.toml").display().to_string();
    let child = d.path().join("p.toml").display().to_string();
    assert_eq!(at("boot.extra_args[0]"), format!("{base}:8"));
    assert_eq!(at("boot.extra_args[2]"), format!("{child}:4"));
    assert_eq!(at("name"), format!("{child}:2"));
    assert_eq!(at("users.add[0].comment"), format!("{base}:14"));
}
