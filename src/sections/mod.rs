//! The profile's sections: the TOML tables that turn a stock Arch Linux ARM tarball into an
//! Odroid HC1 Docker Swarm node, one module per table.
//!
//! Each module owns its section whole: the `Config` type that *is* the table (serde,
//! `deny_unknown_fields`, every field defaulted and documented — the reference tables of
//! `docs/profiles.md` are generated from these doc comments), its load-time check (pure: it
//! sees the profile but no tree and nothing fetched, and locates its errors through a
//! [`Locator`] as `FILE:LINE: key.path: message`), its apply step on the in-memory [`Tree`]
//! (through the helpers of [`crate::edit`]), the paths of the tarball it reads (so the import
//! captures them) and the files of `assets/` it embeds. [`Section`] is that contract.
//!
//! [`registry!`] below is the one list of the sections, in the order they are applied: users
//! before the sections that look users/groups up (ssh, mail, cron, overlays), `swarm` after
//! every section that takes a secret from the card, overlays last so a site file can override a
//! generated one. [`Sections`], [`APPLY_ORDER`], [`apply_all`], [`check_all`],
//! [`captured_paths`] and [`embedded_assets`] all come from it.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::edit::EditContext;
use crate::tree::Tree;

/// One section of the profile (implemented by its `Config` type).
pub trait Section: Default + Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned {
    /// The table's name (`users` for `[users]`); the registry's field of the same name holds it.
    const NAME: &'static str;
    /// Paths (relative to the root) whose contents the apply step reads: the import captures
    /// them into memory.
    const CAPTURED: &'static [&'static str] = &[];
    /// The files of the repository's `assets/` the section embeds into images, by path under
    /// `assets/`, with their text. The derivation hashes them: editing a script changes the
    /// image, so it changes the hash too.
    const ASSETS: &'static [(&'static str, &'static str)] = &[];

    /// The load-time check, run before anything is fetched: what can be known from the
    /// profile alone (that a time zone or user exists in the tarball is checked by `apply`).
    fn check(&self, _all: &Sections, _at: &dyn Locator) -> Result<()> {
        Ok(())
    }

    /// The programs the section needs from the image, as configured (a `[backup]` with
    /// `target = "nfs"` needs `mount.nfs`): each is checked after the package transaction,
    /// before any section applies ([`check_needs`]), so a missing one is a build error naming
    /// the package to add, not a unit that fails on every node.
    fn needs(&self, _all: &Sections) -> Vec<Need> {
        Vec::new()
    }

    /// Edit the tree. `all` is every section (some read another's settings).
    fn apply(
        &self,
        tree: &mut Tree,
        all: &Sections,
        ctx: &EditContext,
        inputs: &EditInputs,
    ) -> Result<()>;
}

/// A program a section needs from the image (tarball plus `[packages]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The setting that needs it, as a profile writes it (`[backup] target = "nfs"`).
    pub by: String,
    /// Where the program may be (relative to the root): any one will do.
    pub paths: &'static [&'static str],
    /// What to add to `[packages] install` for it (Arch Linux ARM's package), or what to do.
    pub package: &'static str,
}

/// The needs ([`Section::needs`]) the tree does not meet, as one error naming each setting,
/// the program and the package to add.
pub fn check_needs(cfg: &Sections, tree: &Tree) -> Result<()> {
    let missing: Vec<String> = needs_all(cfg)
        .into_iter()
        .filter(|n| !n.paths.iter().any(|p| tree.lookup(p.as_bytes()).is_some()))
        .map(|n| format!("{} needs /{} ({})", n.by, n.paths[0], n.package))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the image (tarball plus [packages]) lacks what the profile's sections run: {}; add the \
         packages to [packages] install",
        missing.join("; ")
    );
    Ok(())
}

/// Where a section's check reports an error: the profile reader implements it and adds the
/// file and line of the key (`FILE:LINE: key.path: message`).
pub trait Locator {
    /// An error at the key `path` (e.g. `["ssh", "extra"]`).
    fn err(&self, path: &[&str], msg: &dyn fmt::Display) -> anyhow::Error;
    /// An error located at the key `path` that shows the key path `shown` (for a message
    /// that names the key itself, e.g. `docker.daemon: log-opts.max-size: …`).
    fn err_shown(&self, path: &[&str], shown: &str, msg: &dyn fmt::Display) -> anyhow::Error;
    /// An error at key `key` of element `i` of the array of tables at the first of `paths`
    /// the profile writes (several for a table with an alias): `FILE:LINE: a.b[i].key: msg`.
    fn item_err(
        &self,
        paths: &[&[&str]],
        i: usize,
        key: &str,
        msg: &dyn fmt::Display,
    ) -> anyhow::Error;
    /// The first of `keys` the profile writes in the table at `table` (for a key with an
    /// alias), else the first.
    fn key_as_written<'k>(&self, table: &[&str], keys: &[&'k str]) -> &'k str;
    /// Why secret `name` cannot be referred to (`None` when `[secrets]` declares it).
    fn undeclared_secret(&self, name: &str) -> Option<String>;
    /// The variables overlay templates may use (`Profile::template_vars`).
    fn template_vars(&self) -> &BTreeMap<String, String>;

    /// An error at `path` unless `secret` (when set) is declared in `[secrets]`.
    fn declared(&self, path: &[&str], secret: &Option<String>) -> Result<()> {
        match secret.as_deref().and_then(|n| self.undeclared_secret(n)) {
            Some(msg) => Err(self.err(path, &msg)),
            None => Ok(()),
        }
    }
}

/// Inputs of [`apply_all`] that come from the build rather than the profile sections.
#[derive(Clone, Debug)]
pub struct EditInputs<'a> {
    /// FAT volume id of the boot partition (for `/etc/fstab`).
    pub boot_volume_id: u32,
    /// Directory against which relative overlay directories are read (the loader makes the
    /// profile's absolute, so a build passes any directory).
    pub overlays_dir: &'a std::path::Path,
    /// Template variables for overlay files marked as templates.
    pub vars: &'a BTreeMap<String, String>,
    /// `[docker] preload`'s archives, streamed into the image by the build: name on the
    /// node and data.
    pub preloaded: &'a [(String, crate::tree::FileData)],
}

/// The registry: `name: Type` for every section, in apply order. Generates [`Sections`] and
/// the functions that walk every section.
macro_rules! registry {
    ($($name:ident: $ty:ty),* $(,)?) => {

        /// Every section of a profile, each field the table of its name (absent tables take
        /// their defaults).
        #[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct Sections {
            $(pub $name: $ty,)*
        }

        /// The sections' names in the order they are applied (docs/profiles.md's sentence on
        /// the order is checked against it).
        pub const APPLY_ORDER: &[&str] = &[$(stringify!($name)),*];

        /// Apply every section in [`APPLY_ORDER`], after [`check_needs`]. The first failing
        /// edit's error names its section.
        pub fn apply_all(
            tree: &mut Tree,
            cfg: &Sections,
            ctx: &EditContext,
            inputs: &EditInputs,
        ) -> Result<()> {
            check_needs(cfg, tree)?;
            $(
                Section::apply(&cfg.$name, tree, cfg, ctx, inputs)
                    .with_context(|| format!("[{}]", <$ty as Section>::NAME))?;
            )*
            Ok(())
        }

        /// Every section's [`Section::needs`], in [`APPLY_ORDER`].
        pub fn needs_all(cfg: &Sections) -> Vec<Need> {
            let mut v = Vec::new();
            $(v.extend(Section::needs(&cfg.$name, cfg));)*
            v
        }

        /// Run every section's load-time check, in [`APPLY_ORDER`]; the first error is
        /// returned.
        pub fn check_all(cfg: &Sections, at: &dyn Locator) -> Result<()> {
            $(Section::check(&cfg.$name, cfg, at)?;)*
            Ok(())
        }

        /// Paths (relative to the root) whose contents the sections read: the import must
        /// capture them into memory. Sorted, without duplicates.
        pub fn captured_paths() -> Vec<&'static str> {
            let mut v: Vec<&'static str> = Vec::new();
            $(v.extend_from_slice(<$ty as Section>::CAPTURED);)*
            v.sort_unstable();
            v.dedup();
            v
        }

        /// Every file of `assets/` the sections embed into images (path under `assets/`,
        /// text), sorted by path.
        pub fn embedded_assets() -> Vec<(&'static str, &'static str)> {
            let mut v: Vec<(&'static str, &'static str)> = Vec::new();
            $(v.extend_from_slice(<$ty as Section>::ASSETS);)*
            v.sort_unstable();
            v
        }

        /// `(name, Rust type of its table, NAME)` of every section, in apply order (for the
        /// docs generator and the registry's own test).
        pub fn schema_types() -> Vec<(&'static str, &'static str, &'static str)> {
            vec![$((stringify!($name), std::any::type_name::<$ty>(), <$ty as Section>::NAME)),*]
        }
    };
}

// The sections' modules, declared here rather than inside `registry!` so that rustfmt (which
// does not look into macros, rust-lang/rustfmt#3253) formats them with the rest.
pub mod backup;
pub mod builds;
pub mod cleanup;
pub mod cron;
pub mod docker;
pub mod firstboot;
pub mod fstab;
pub mod io_scheduler;
pub mod journald;
pub mod mail;
pub mod mirrorlist;
pub mod overlays;
pub mod ssh;
pub mod swarm;
pub mod system;
pub mod users;

registry! {
    system: system::Config,
    users: users::Config,
    ssh: ssh::Config,
    mail: mail::Config,
    journald: journald::Config,
    io_scheduler: io_scheduler::Config,
    mirrorlist: mirrorlist::Config,
    docker: docker::Config,
    cron: cron::Config,
    backup: backup::Config,
    cleanup: cleanup::Config,
    builds: builds::Config,
    firstboot: firstboot::Config,
    swarm: swarm::Config,
    fstab: fstab::Config,
    overlays: overlays::Config,
}

/// `serde(skip_serializing_if)` for an `enable` that was added after images were first
/// built: on (the default) it is left out of the resolved profile, so the derivation hash of a
/// profile that does not turn the section off stays what it was.
pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

#[cfg(test)]
mod tests {

    /// Every embedded shell script passes the real `shellcheck`.
    #[test]
    fn embedded_scripts_are_shellcheck_clean() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in embedded_assets()
            .iter()
            .filter(|(n, _)| !n.ends_with(".hcl"))
        {
            let p = dir.path().join(name.replace('/', "_"));
            std::fs::write(&p, text).unwrap();
            let out = std::process::Command::new("shellcheck")
                .arg(&p)
                .output()
                .expect("shellcheck is needed (scripts/test installs it)");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    /// Every file under assets/ is embedded (and so hashed), with the bytes on disk.
    #[test]
    fn embedded_assets_are_every_asset_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                let rel = f
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                on_disk.push((rel, std::fs::read_to_string(&f).unwrap()));
            }
        }
        on_disk.sort();
        let embedded: Vec<(String, String)> = embedded_assets()
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(embedded, on_disk);
    }
    use super::*;
    use crate::edit::testutil::{self, *};
    use crate::edit::{EditContext, lookup};
    use crate::tree::{self, FileData, NodeKind};

    #[test]
    fn apply_order_names_every_section_once_and_the_docs_agree() {
        // Every table of `Sections` (its serialised keys), each once, and nothing else; each
        // section's NAME is its field's.
        let keys = match serde_json::to_value(Sections::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect::<Vec<_>>(),
            other => panic!("Sections does not serialise to a table: {other:?}"),
        };
        let mut want: Vec<String> = keys;
        want.sort();
        for (field, _, name) in schema_types() {
            assert_eq!(
                field, name,
                "the registry's field {field} holds a section named {name}"
            );
        }
        let mut have: Vec<String> = APPLY_ORDER.iter().map(|s| s.to_string()).collect();
        have.sort();
        assert_eq!(have, want, "APPLY_ORDER against the sections");
        // docs/profiles.md says the order in one sentence: it must be this one.
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/profiles.md"))
                .unwrap();
        let flat = docs.split_whitespace().collect::<Vec<_>>().join(" ");
        let listed = APPLY_ORDER
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let said = format!("They are applied in this order: {listed}");
        assert!(
            flat.contains(&format!("{said}.")) || flat.contains(&format!("{said} (")),
            "docs/profiles.md must say: They are applied in this order: {listed}."
        );
    }

    #[test]
    fn captured_paths_cover_the_account_files() {
        let p = captured_paths();
        for want in [
            "etc/passwd",
            "etc/shadow",
            "etc/group",
            "etc/gshadow",
            "etc/ssh/sshd_config",
        ] {
            assert!(p.contains(&want), "{want} missing from {p:?}");
        }
    }

    /// Every in-memory file of the tree whose contents contain `needle`.
    fn files_containing(t: &Tree, needle: &str) -> Vec<String> {
        let mut hits = Vec::new();
        t.walk(|p, _, id| {
            if let NodeKind::File(FileData::Bytes(b)) = &t.node(id).kind
                && b.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(tree::display(p));
            }
        });
        hits
    }

    fn node_config() -> (
        users::Config,
        system::Config,
        ssh::Config,
        mail::Config,
        cron::Config,
    ) {
        let u: users::Config = toml::from_str(
            r#"
            create_groups = ["docker"]
            sudo_wheel = true
            [[add]]
            name = "admin"
            groups = ["wheel", "docker"]
            password_secret = "admin-hash"
            authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@desk"]
            "#,
        )
        .unwrap();
        let s = system::Config {
            hostname: Some("hc1-{mac6}".parse().unwrap()),
            ..system::Config::default()
        };
        let m = mail::Config {
            mailhub: Some("smtp.example.org:587".parse().unwrap()),
            root: "ops@example.org".into(),
            auth_user: Some("hc1@example.org".into()),
            auth_pass_secret: Some("smtp-pass".into()),
            ..mail::Config::default()
        };
        let c: cron::Config = toml::from_str(
            "[[job]]\nname = \"docker-cleanup\"\nschedule = \"@daily\"\nuser = \"admin\"\n\
             command = \"docker system prune -f\"\n",
        )
        .unwrap();
        (u, s, ssh::Config::default(), m, c)
    }

    #[test]
    fn whole_node_in_recommended_order_is_consistent_and_keeps_secrets_in_place() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let (u, s, sh, m, c) = node_config();
        system::apply(&mut t, &s, &ctx).unwrap();
        users::apply(&mut t, &u, &ctx).unwrap();
        ssh::apply(&mut t, &sh, &ctx).unwrap();
        mail::apply(&mut t, &m, &ctx).unwrap();
        journald::apply(&mut t, &journald::Config::default(), &ctx).unwrap();
        io_scheduler::apply(&mut t, &io_scheduler::Config::default(), &ctx).unwrap();
        mirrorlist::apply(&mut t, &mirrorlist::Config::default(), &ctx).unwrap();
        docker::apply(&mut t, &docker::Config::default(), &ctx).unwrap();
        cron::apply(&mut t, &c, &ctx).unwrap();
        fstab::apply(&mut t, &fstab::Config::default(), &ctx, 0xabcd_1234, false).unwrap();

        // Secrets are only where they belong, with restrictive modes.
        assert_eq!(files_containing(&t, SMTP_PASS), ["etc/msmtprc"]);
        assert_file(
            &t,
            "etc/msmtprc",
            text(&t, "etc/msmtprc").as_bytes(),
            0o600,
            0,
            0,
        );
        assert_eq!(files_containing(&t, ADMIN_HASH), ["etc/shadow"]);
        let notes = ctx.take_notes();
        let dbg = format!("{ctx:?} {u:?} {m:?} {notes:?}");
        assert!(
            !dbg.contains(SMTP_PASS) && !dbg.contains(ADMIN_HASH),
            "{dbg}"
        );
        assert!(
            text(&t, "etc/ssh/sshd_config.d/10-hc1img.conf").contains("PasswordAuthentication no")
        );
        assert!(
            lookup(&t, "etc/hostname").is_some(),
            "template hostname keeps the old file"
        );

        let dir = tempfile::tempdir().unwrap();
        testutil::materialize(&t, dir.path());
        testutil::run_check("pwck", dir.path());
        testutil::run_check("grpck", dir.path());
    }

    /// Secrets that are not baked: no value anywhere in the tree (even with the values at
    /// hand), locked accounts, unauthenticated mail, and the card-secrets map and units.
    #[test]
    fn card_secrets_stay_out_of_the_image_and_are_mapped_for_the_boot() {
        let (mut t, secrets) = arch_tree();
        bytes(
            &mut t,
            "usr/lib/systemd/system/systemd-repart.service",
            0o644,
            "",
        );
        let card = ["admin-hash", "smtp-pass", "tok", "plain", "yes-hash"];
        let ctx = EditContext::new(TS, &secrets).with_card_secrets(card.map(String::from));
        let (mut u, s, sh, m, _) = node_config();
        u.root_password_secret = Some("yes-hash".into());
        u.add[0].authorized_keys.clear();
        system::apply(&mut t, &s, &ctx).unwrap();
        users::apply(&mut t, &u, &ctx).unwrap();
        ssh::apply(&mut t, &sh, &ctx).unwrap();
        mail::apply(&mut t, &m, &ctx).unwrap();
        let b: backup::Config = toml::from_str(
            "target = \"rsync\"\nrsync_dest = \"backup@nas.lan:/srv/hc1\"\nssh_key_secret = \"plain\"\n",
        )
        .unwrap();
        backup::apply(&mut t, &b, &ctx).unwrap();
        let mut bl = builds::tests::cfg();
        bl.ssh_key_secret = Some("plain".into());
        let d: docker::Config = toml::from_str(
            "[daemon]\nstorage-driver = \"overlay2\"\ninsecure-registries = [\"registry.cluster.lan:5000\"]\n",
        )
        .unwrap();
        builds::apply(&mut t, &bl, &d, &ctx).unwrap();
        let fb = firstboot::Config::default();
        firstboot::apply(&mut t, &fb, &s, &ctx).unwrap();
        let sw = swarm::Swarm {
            role: swarm::SwarmRole::Worker,
            managers: vec!["m1.lan".parse().unwrap()],
            advertise_addr: None,
            token_secret: Some("tok".into()),
            wait_for_time_sync: true,
            labels: Default::default(),
        };
        swarm::apply(&mut t, Some(&sw), &ctx).unwrap();
        firstboot::write_card_secrets(&mut t, &fb, &ctx).unwrap();
        fstab::apply(&mut t, &fstab::Config::default(), &ctx, 0xabcd_1234, true).unwrap();

        for v in [
            ADMIN_HASH,
            SMTP_PASS,
            "hunter2-plaintext",
            "SWMTKN",
            "$y$j9T$",
        ] {
            assert_eq!(
                files_containing(&t, v),
                Vec::<String>::new(),
                "{v} in the tree"
            );
        }
        let shadow = text(&t, "etc/shadow");
        for user in ["root", "admin"] {
            let line = shadow
                .lines()
                .find(|l| l.starts_with(&format!("{user}:")))
                .unwrap();
            assert_eq!(
                line.split(':').nth(1),
                Some("!"),
                "{user} is not locked: {line}"
            );
        }
        let msmtprc = text(&t, "etc/msmtprc");
        assert!(
            msmtprc.ends_with("\nauth off\n") && !msmtprc.contains("\npassword "),
            "{msmtprc}"
        );
        assert!(lookup(&t, swarm::TOKEN).is_none());
        assert!(lookup(&t, backup::SSH_KEY).is_none());
        assert_eq!(
            text(&t, firstboot::CARD_SECRETS_CONF),
            "# Written by hc1img: where hc1-card-secrets puts each secret the boot card brings.\n\
             # NAME ACTION ARGS (see /usr/lib/hc1img/hc1-card-secrets --help)\n\
             yes-hash password root\n\
             admin-hash password admin\n\
             smtp-pass msmtp-auth hc1@example.org\n\
             plain file /etc/hc1/backup-ssh-key 0600\n\
             plain file /etc/hc1/buildx-ssh-key 0600\n\
             tok swarm-token\n"
        );
        assert_eq!(
            ctx.card_actions
                .borrow()
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            ["admin-hash", "plain", "smtp-pass", "tok", "yes-hash"]
        );
        assert!(
            text(&t, "etc/systemd/system/hc1-volume-backup.service")
                .contains("ConditionPathExists=/etc/hc1/backup-ssh-key")
        );
        assert!(
            text(&t, "etc/systemd/system/hc1-buildx-setup.service")
                .contains("ConditionPathExists=/etc/hc1/buildx-ssh-key")
        );
        // The admin has neither a password in the image nor a key: a warning says so.
        let w = ctx.take_warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("admin") && w.contains("admin-hash=FILE")),
            "{w:?}"
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(text(&t, "etc/fstab").contains("fmask=0077,dmask=0077"));
        verify_units(
            &t,
            &[
                "hc1-card-secrets.service",
                "hc1-card-secrets.path",
                "hc1-swarm-join.service",
                "hc1-swarm-join.path",
                "hc1-firstboot.service",
            ],
            &["/usr/bin/docker"],
        );
    }

    /// With world-readable /boot masks the build warns that seeded secrets would be exposed.
    #[test]
    fn loose_boot_masks_warn_when_secrets_come_from_the_card() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets).with_card_secrets(["tok".to_string()]);
        let loose = fstab::Config {
            boot_options: "rw,fmask=0022,dmask=0022".into(),
            ..fstab::Config::default()
        };
        fstab::apply(&mut t, &loose, &ctx, 1, false).unwrap();
        assert!(
            ctx.take_warnings().is_empty(),
            "no card secrets, no warning"
        );
        ctx.on_card("tok", "swarm-token");
        fstab::apply(&mut t, &loose, &ctx, 1, false).unwrap();
        let w = ctx.take_warnings();
        assert!(w.len() == 1 && w[0].contains("fmask=0077"), "{w:?}");
    }

    #[test]
    fn secret_values_never_reach_errors() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let (mut u, _, _, mut m, _) = node_config();
        // ssmtp.conf cannot hold a space (msmtprc quotes it).
        testutil::stored(&mut t, "usr/bin/ssmtp");
        m.program = mail::Program::Ssmtp;
        m.auth_pass_secret = Some("smtp-spaced".into());
        let e = format!("{:#} {:?}", mail::apply(&mut t, &m, &ctx).unwrap_err(), ctx);
        assert!(e.contains("\"smtp-spaced\""), "{e}");
        assert!(!e.contains(SMTP_PASS), "secret leaked: {e}");
        // A hash where a different kind of secret is expected is not echoed either.
        m.auth_pass_secret = Some("admin-hash".into());
        let r = mail::apply(&mut t, &m, &ctx);
        assert!(r.is_ok(), "a hash is a valid (if odd) password");
        u.add[0].password_secret = Some("smtp-pass".into());
        let e = format!("{:#}", users::apply(&mut t, &u, &ctx).unwrap_err());
        assert!(e.contains("\"smtp-pass\"") && !e.contains(SMTP_PASS), "{e}");
        let notes = ctx.take_notes().join("\n");
        assert!(
            !notes.contains(SMTP_PASS) && !notes.contains(ADMIN_HASH),
            "{notes}"
        );
    }
}
