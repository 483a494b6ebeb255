//! Profiles: the declarative description of one node image, loaded from TOML.
//!
//! [`load`] reads a profile file, follows its `extends` chain, lays its files over each other
//! ([`layers`]: tables key by key, lists append with `"!X"`/`"!*"`, arrays of tables merge by
//! name, `enable = false` turns a section off), resolves relative paths against
//! the file that wrote them, loads the board file and the lock file (`hc1img.lock`, the
//! sha256/size pins of the source tarball and the `[packages]` pins), applies the command-line
//! [`Overrides`], and checks
//! every value before anything is fetched. Errors are one line, `FILE:LINE: key.path: what`.
//!
//! The file format is documented in `docs/profiles.md`. The image-level schema types live in
//! [`schema`]; the node's sections are the `Config` types of [`crate::sections`] (its registry
//! lists them), gathered in [`crate::sections::Sections`] as [`Profile::node`], which is
//! exactly what [`crate::sections::apply_all`] consumes; their checks run here, through the
//! [`crate::sections::Locator`] this module implements.
//! The result, [`Profile`], is plain typed data (serde `Serialize`); the derivation hash over it
//! is in `plan` (a module above this one).

mod board;
mod check;
mod image;
mod layers;
mod load;
mod lock;
pub(crate) mod node;
mod pins;
pub mod schema;
pub mod secrets;
pub mod size;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sections::swarm::Swarm;

pub use load::load;
pub use lock::{LOCK_FILE_NAME, is_sha256_hex, read_lock, write_lock};
pub use schema::{Blob, Board, Boot, Features, LockFile, Pin, Rootfs, SdLayout, SectorRange};
pub use secrets::{Secret, SecretSource};
pub use size::{Bytes, Size};

/// Command-line overrides (`--source-url`, `--source-sha256`, `--secret NAME=FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces the source URL; mirrors and the signature URL of the profile are then dropped,
    /// and the pin is looked up in the lock file under the new URL.
    pub source_url: Option<String>,
    /// Replaces the pinned sha256 (the pinned size is then unknown).
    pub source_sha256: Option<String>,
    /// Replaces where a declared secret is read from.
    pub secrets: BTreeMap<String, PathBuf>,
    /// `--no-packages`: ignore the profile's `[packages]` (e.g. for a test tarball that is not
    /// Arch Linux ARM).
    pub no_packages: bool,
}

/// A loaded, merged and validated profile. Paths are absolute (or relative to the current
/// directory when the profile was given by a relative path).
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// `[a-z0-9-]+`; the most-derived file's `name`.
    pub name: String,
    /// The board file's contents.
    pub board: Board,
    /// The root tarball, when the profile (or `--source-url`) names one.
    pub source: Option<Source>,
    pub rootfs: Rootfs,
    pub boot: Boot,
    /// Declared secrets and where their values come from (after overrides).
    pub secrets: BTreeMap<String, SecretSource>,
    /// `[packages]` with its pins from the lock file (none with `--no-packages`).
    pub packages: Option<crate::packages::Packages>,
    /// The node's sections, as [`crate::sections::apply_all`] consumes them. `overlays.dirs`
    /// are absolute paths.
    pub node: crate::sections::Sections,
    /// Every file the profile was made from.
    pub files: InputFiles,
    /// Every value of the merged profile files as a dotted key path with the `FILE:LINE` that
    /// wrote it (`hc1img plan`); not part of the derivation.
    #[serde(skip)]
    pub origins: Vec<(String, String)>,
}

/// The `[source]` of a profile with its pin from the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// As written in the profile (or `--source-url`): the key of the pin in the lock file.
    pub url: String,
    /// `url` then the mirrors, with plain relative paths made relative to the profile file
    /// that wrote them (the command line's `--source-url` stays relative to the current
    /// directory).
    pub fetch_urls: Vec<String>,
    /// Tried in order after `url`.
    pub mirrors: Vec<String>,
    /// URL of a detached OpenPGP signature of the tarball.
    pub signature: Option<String>,
    /// OpenPGP public key(s) (armored or binary) that must have made `signature`.
    pub keyring: Option<PathBuf>,
    /// Pinned sha256 (lowercase hex), from the lock file or `--source-sha256`.
    pub sha256: Option<String>,
    /// Pinned size in bytes, from the lock file.
    pub size: Option<u64>,
}

impl Source {
    /// The pinned sha256, or an error telling how to pin.
    pub fn require_sha256(&self) -> anyhow::Result<&str> {
        self.sha256.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "source {} is not pinned: run `hc1img lock` or pass --source-sha256",
                self.fetch_urls.first().unwrap_or(&self.url)
            )
        })
    }
}

/// The files a profile was loaded from (for `--explain`, watch lists and manifests; none of
/// these paths enters the derivation hash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InputFiles {
    /// The `extends` chain, most-derived (the file given) first.
    pub profiles: Vec<PathBuf>,
    pub board: PathBuf,
    /// Where the pins live: `hc1img.lock` next to the profile file that declared
    /// `[source] url` (it may not exist yet). `None` without a source.
    pub lock: Option<PathBuf>,
    /// Whether `lock` existed and was read.
    pub lock_exists: bool,
    pub keyring: Option<PathBuf>,
    /// Overlay directories (absolute), in the order they are applied.
    pub overlays: Vec<PathBuf>,
    /// Secret files (after overrides), by secret name.
    pub secrets: BTreeMap<String, PathBuf>,
}

impl InputFiles {
    /// All existing input files and directories, in a stable order.
    pub fn all(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.profiles.iter().map(PathBuf::as_path).collect();
        v.push(&self.board);
        if let (Some(l), true) = (&self.lock, self.lock_exists) {
            v.push(l);
        }
        if let Some(k) = &self.keyring {
            v.push(k);
        }
        v.extend(self.overlays.iter().map(PathBuf::as_path));
        v.extend(self.secrets.values().map(PathBuf::as_path));
        v
    }
}

/// The variables of overlay files marked `template = true` (`[[overlays.entry]]`): `{name}`
/// (the profile), `{board}`, `{arch}`, and with a `[swarm]` section `{swarm.role}`,
/// `{swarm.manager}` (the first manager as `HOST:PORT`, port 2377 when not given; empty for
/// `init`), `{swarm.managers}` (all of them, space-separated) and `{swarm.advertise_addr}`
/// (empty when unset). Every value comes from the profile, so the derivation hash covers them.
pub(crate) fn template_vars(
    name: &str,
    board: &Board,
    swarm: Option<&Swarm>,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("name".to_string(), name.to_string());
    v.insert("board".to_string(), board.name.clone());
    v.insert("arch".to_string(), board.arch.clone());
    if let Some(sw) = swarm {
        let role = crate::sections::swarm::role_name(sw.role);
        let managers: Vec<String> = sw
            .managers
            .iter()
            .map(|m| crate::sections::swarm::manager_addr(m))
            .collect();
        v.insert("swarm.role".to_string(), role.to_string());
        v.insert(
            "swarm.manager".to_string(),
            managers.first().cloned().unwrap_or_default(),
        );
        v.insert("swarm.managers".to_string(), managers.join(" "));
        v.insert(
            "swarm.advertise_addr".to_string(),
            sw.advertise_addr.clone().unwrap_or_default(),
        );
    }
    v
}

impl Profile {
    /// The template variables for overlay files (pass as `sections::EditInputs::vars`):
    /// `name`, `board`, `arch`, and with `[swarm]` `swarm.role`, `swarm.manager`,
    /// `swarm.managers`, `swarm.advertise_addr` (see `docs/profiles.md`).
    pub fn template_vars(&self) -> BTreeMap<String, String> {
        template_vars(&self.name, &self.board, self.swarm())
    }

    /// `[swarm]`: how the node joins the Docker swarm at first boot (none without the table).
    pub fn swarm(&self) -> Option<&Swarm> {
        self.node.swarm.as_ref()
    }

    /// The lock file path (`hc1img lock` writes here).
    pub fn lock_path(&self) -> Option<&Path> {
        self.files.lock.as_deref()
    }

    /// Read a declared secret's value now.
    pub fn secret(&self, name: &str) -> anyhow::Result<Secret> {
        match self.secrets.get(name) {
            Some(src) => secrets::read(name, src),
            None => {
                let names: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
                let hint = crate::values::did_you_mean(name, &names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "profile `{}` declares no secret `{name}` in [secrets]{hint}",
                    self.name
                )
            }
        }
    }

    /// The consoles in effect (`[boot] console`, else the board's).
    pub fn consoles(&self) -> &[String] {
        self.boot.console.as_deref().unwrap_or(&self.board.consoles)
    }

    /// The `root=` value; `root_partuuid` is the SSD partition's GUID, needed when
    /// `[boot] root = "partuuid"`.
    pub fn root_arg(&self, root_partuuid: Option<&str>) -> anyhow::Result<String> {
        let root = self.boot.root.as_deref().unwrap_or(&self.board.root_device);
        if root == "partuuid" {
            match root_partuuid {
                Some(u) => Ok(format!("PARTUUID={}", u.to_ascii_lowercase())),
                None => anyhow::bail!(
                    "boot.root = \"partuuid\" needs the SSD partition's GUID (internal: none given)"
                ),
            }
        } else {
            Ok(root.to_string())
        }
    }

    /// The kernel command line (what the board's `boot_txt` puts in `{bootargs}`).
    pub fn kernel_cmdline(&self, root_partuuid: Option<&str>) -> anyhow::Result<String> {
        let mut args: Vec<String> = self
            .consoles()
            .iter()
            .map(|c| format!("console={c}"))
            .collect();
        args.push(format!("root={}", self.root_arg(root_partuuid)?));
        args.push("rw".into());
        args.push("rootwait".into());
        if self.boot.rootdelay > 0 {
            args.push(format!("rootdelay={}", self.boot.rootdelay));
        }
        if self.boot.fsck_force {
            args.push("fsck.mode=force".into());
            args.push("fsck.repair=yes".into());
        }
        if self.boot.uas_quirk {
            args.push("usb-storage.quirks=152d:0578:u".into());
        }
        args.extend(self.boot.extra_args.iter().cloned());
        Ok(args.join(" "))
    }

    /// The board's `boot_txt` with our placeholders filled in: `{bootargs}` (see
    /// [`Profile::kernel_cmdline`]) and `{set_macaddr}` (a `setenv macaddr` line when
    /// `[boot] macaddr` is set, else a comment). U-Boot's `${…}` are left alone.
    pub fn boot_txt(&self, root_partuuid: Option<&str>) -> anyhow::Result<String> {
        let bootargs = self.kernel_cmdline(root_partuuid)?;
        let set_mac = match &self.boot.macaddr {
            Some(m) => format!("setenv macaddr \"{m}\""),
            None => "# macaddr: taken from the card's saved U-Boot environment, if any".to_string(),
        };
        board::render_template(&self.board.boot_txt, &|name| match name {
            "bootargs" => Some(bootargs.clone()),
            "set_macaddr" => Some(set_mac.clone()),
            "name" => Some(self.name.clone()),
            "board" => Some(self.board.name.clone()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::edit::{EditContext, testutil};
    use crate::sections;
    use crate::tree::NodeKind;

    /// The shipped worker profile, with its secrets from private temp files.
    fn shipped_worker(dir: &Path) -> Profile {
        let mut ov = Overrides::default();
        for (name, value) in [
            ("admin_password_hash", format!("{}\n", testutil::ADMIN_HASH)),
            ("mail_password", format!("{}\n", testutil::SMTP_PASS)),
            ("swarm_worker_token", "SWMTKN-1-test\n".to_string()),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, value).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            ov.secrets.insert(name.to_string(), p);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/worker.toml");
        load(&path, &ov).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The shipped node template, applied by `sections::apply_all` to an Arch-like tree, gives a
    /// consistent node: every section finds what it needs (groups, units, the overlay's
    /// operations scripts and timers), secrets land only where they belong, and shadow-utils'
    /// own checkers accept the account files.
    #[test]
    fn shipped_node_template_applies_to_an_arch_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let p = shipped_worker(tmp.path());
        let (mut t, _) = testutil::arch_tree();
        testutil::stored(&mut t, "usr/share/zoneinfo/Europe/Paris");
        let secrets = |name: &str| p.secret(name).map(|s| s.bytes().to_vec());
        let card = p
            .secrets
            .iter()
            .filter(|(_, src)| **src == SecretSource::Card)
            .map(|(n, _)| n.clone());
        let ctx = EditContext::new(testutil::TS, &secrets).with_card_secrets(card);
        let vars = p.template_vars();
        let elsewhere = tempfile::tempdir().unwrap();
        let inputs = sections::EditInputs {
            preloaded: &[],
            boot_volume_id: 0x1234_abcd,
            overlays_dir: elsewhere.path(),
            vars: &vars,
        };
        sections::apply_all(&mut t, &p.node, &ctx, &inputs).unwrap_or_else(|e| panic!("{e:#}"));

        let text = |path: &str| testutil::text(&t, path);
        assert!(!text("etc/passwd").contains("alarm"));
        assert!(text("etc/passwd").contains("admin:x:1000:1000:Cluster administrator:"));
        assert!(text("etc/group").contains("docker:x:"));
        assert!(text("etc/sudoers.d/wheel").contains("%wheel ALL=(ALL:ALL) ALL"));
        assert_eq!(text("etc/machine-id"), "uninitialized\n");
        assert_eq!(text("etc/locale.conf"), "LANG=C.UTF-8\n");
        assert!(text("etc/systemd/journald.conf.d/hc1img.conf").contains("RuntimeMaxUse=50M"));
        assert!(text("etc/systemd/journald.conf.d/hc1img.conf").contains("Storage=volatile"));
        assert!(
            text("etc/udev/rules.d/60-ioscheduler.rules")
                .contains("ATTR{queue/scheduler}=\"mq-deadline\"")
        );
        let daemon: serde_json::Value =
            serde_json::from_str(&text("etc/docker/daemon.json")).unwrap();
        assert_eq!(daemon["storage-driver"], "overlay2");
        assert_eq!(
            daemon["insecure-registries"][0],
            "registry.cluster.lan:5000"
        );
        let msmtprc = text("etc/msmtprc");
        assert!(
            msmtprc.contains(
                "host smtp.cluster.lan\nport 587\nfrom %U@cluster.lan\ntls on\ntls_starttls on\n"
            ),
            "{msmtprc}"
        );
        // The daily operations: timers enabled, the backup share mounted by its run only.
        assert!(text("etc/hc1/backup.conf").contains("HC1_BACKUP_DIR='/mnt/backup'"));
        assert!(
            text("etc/systemd/system/mnt-backup.mount")
                .contains("What=nas.cluster.lan:/export/hc1-backups\n")
        );
        for timer in ["hc1-volume-backup.timer", "hc1-docker-cleanup.timer"] {
            let link = format!("etc/systemd/system/timers.target.wants/{timer}");
            assert!(t.lookup(link.as_bytes()).is_some(), "{timer} not enabled");
        }
        // Builds are for the managers only.
        assert!(t.lookup(b"etc/hc1/docker-bake.hcl").is_none());
        assert!(text("etc/fstab").contains("UUID=1234-ABCD /boot vfat"));
        assert!(text("etc/pacman.d/mirrorlist").contains("Server = http://"));
        for (script, mode) in [
            ("usr/local/sbin/hc1-volume-backup", 0o750),
            ("usr/local/bin/hc1-volume-restore", 0o755),
            ("usr/local/sbin/hc1-docker-cleanup", 0o750),
        ] {
            let id = t.lookup(script.as_bytes()).unwrap();
            assert!(matches!(t.node(id).kind, NodeKind::File(_)));
            assert_eq!(t.node(id).meta.perm, mode, "{script}");
        }
        assert!(t.lookup(b"etc/hostname").is_some_and(|id| {
            // A template hostname is set at first boot; the tarball's file is kept.
            matches!(&t.node(id).kind, NodeKind::File(_))
        }));

        // No secret of the shipped profiles is in the tree; the card brings them.
        let mut leaked = Vec::new();
        t.walk(|path, _, id| {
            if let NodeKind::File(crate::tree::FileData::Bytes(b)) = &t.node(id).kind {
                for v in [testutil::ADMIN_HASH, testutil::SMTP_PASS, "SWMTKN-1-test"] {
                    if b.windows(v.len()).any(|w| w == v.as_bytes()) {
                        leaked.push(crate::tree::display(path));
                    }
                }
            }
        });
        assert!(leaked.is_empty(), "secrets in {leaked:?}");
        assert_eq!(
            text("etc/hc1img/card-secrets.conf")
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "admin_password_hash password admin",
                "mail_password msmtp-auth hc1-nodes@cluster.lan",
                "swarm_worker_token swarm-token"
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        testutil::materialize(&t, dir.path());
        testutil::run_check("pwck", dir.path());
        testutil::run_check("grpck", dir.path());
    }
}

#[cfg(test)]
mod enable_tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::edit::{EditContext, testutil};
    use crate::sections;
    use crate::tree::{FileData, NodeKind, Tree};

    /// `profiles/manager.toml` (every node section on, `[builds]` too) extended by `body`,
    /// with the secrets it declares from private temp files.
    fn manager_with(dir: &Path, body: &str) -> Profile {
        let mut ov = Overrides::default();
        for name in [
            "admin_password_hash",
            "mail_password",
            "swarm_manager_token",
        ] {
            let p = dir.join(name);
            std::fs::write(&p, "value\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            ov.secrets.insert(name.to_string(), p);
        }
        let manager = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/manager.toml");
        let path = dir.join("off.toml");
        let text = format!("extends = {manager:?}\nname = \"off\"\n{body}");
        std::fs::write(&path, text).unwrap();
        load(&path, &ov).unwrap_or_else(|e| panic!("{body}: {e:#}"))
    }

    /// The node tree `p` makes of an Arch-like tree.
    fn applied(p: &Profile) -> Tree {
        let (mut t, _) = testutil::arch_tree();
        testutil::stored(&mut t, "usr/share/zoneinfo/Europe/Paris");
        let secrets = |_: &str| Ok(b"value\n".to_vec());
        let card = p.secrets.keys().cloned();
        let ctx = EditContext::new(testutil::TS, &secrets).with_card_secrets(card);
        let vars = p.template_vars();
        let inputs = sections::EditInputs {
            preloaded: &[],
            boot_volume_id: 0x1234_abcd,
            overlays_dir: Path::new("/"),
            vars: &vars,
        };
        sections::apply_all(&mut t, &p.node, &ctx, &inputs).unwrap_or_else(|e| panic!("{e:#}"));
        t
    }

    /// Whether an edit made `path` (the tarball's own files are `Stored`).
    fn made(t: &Tree, path: &str) -> bool {
        match t.lookup(path.as_bytes()).map(|id| &t.node(id).kind) {
            Some(NodeKind::File(FileData::Stored(_))) | None => false,
            Some(_) => true,
        }
    }

    /// `[X] enable = false` in a derived profile turns section X off, whether its `Config`
    /// has an `enable` of its own or the loader drops the section: a file only that section
    /// writes is made with the parent profile and not with the derived one.
    #[test]
    fn every_node_section_turns_off_with_enable_false() {
        let tmp = tempfile::tempdir().unwrap();
        let on = applied(&manager_with(tmp.path(), ""));
        let marks: &[(&str, &str)] = &[
            ("system", "etc/locale.conf"),
            ("users", "etc/sudoers.d/wheel"),
            ("ssh", sections::ssh::DROP_IN),
            ("mail", sections::mail::MSMTPRC),
            ("journald", sections::journald::DROP_IN),
            ("io_scheduler", sections::io_scheduler::RULE),
            ("mirrorlist", sections::mirrorlist::MIRRORLIST),
            ("docker", sections::docker::DAEMON_JSON),
            (
                "cron",
                "etc/systemd/system/multi-user.target.wants/cronie.service",
            ),
            ("backup", sections::backup::BACKUP_BIN),
            ("cleanup", sections::cleanup::BIN),
            ("builds", sections::builds::BAKE_BIN),
            ("firstboot", "usr/lib/hc1img/hc1-firstboot"),
            ("swarm", sections::swarm::CONF),
            ("fstab", sections::fstab::FSTAB),
            ("overlays", "etc/sysctl.d/90-hc1-site.conf"),
        ];
        for (section, path) in marks {
            assert!(made(&on, path), "[{section}] on: {path} missing");
            // [builds] needs the engine: with [docker] off, it goes off too.
            let also = if *section == "docker" {
                "[builds]\nenable = false\n"
            } else {
                ""
            };
            let p = manager_with(tmp.path(), &format!("[{section}]\nenable = false\n{also}"));
            let off = applied(&p);
            assert!(!made(&off, path), "[{section}] enable = false: {path} made");
        }
        // Sections outside the node tree: off means absent from the loaded profile.
        assert!(manager_with(tmp.path(), "").packages.is_some());
        let p = manager_with(tmp.path(), "[packages]\nenable = false\n");
        assert!(p.packages.is_none());
        let p = manager_with(
            tmp.path(),
            "[packages]\nenable = false\n[source]\nenable = false\n",
        );
        assert!(p.source.is_none() && p.packages.is_none());
    }
}
