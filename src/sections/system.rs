//! Basic system identity and the first-boot reset.
//!
//! Writes `hostname(5)` (a fixed name; a template such as `hc1-{mac6}` is left to the node's
//! first boot and only exposed by [`hostname_template`]), the time zone as the
//! `/etc/localtime` symlink (`localtime(5)`: relative link into `/usr/share/zoneinfo`),
//! `locale.conf(5)` and `vconsole.conf(5)`. Those are exactly what `systemd-firstboot` would
//! otherwise ask for on the console of a first boot, hanging a headless node.
//!
//! So that many nodes can be flashed from one image, nothing per-machine is kept:
//! `/etc/machine-id` becomes `uninitialized` (`machine-id(5)`: the next boot is a first boot,
//! `ConditionFirstBoot=yes` holds, a fresh id is made), SSH host keys are removed (Arch's
//! `sshdgenkeys.service` makes new ones), as are Docker's state with its engine id
//! (`/var/lib/docker`), the pacman keyring (`/etc/pacman.d/gnupg`, initialised on the node
//! with `pacman-key --init`) and systemd's random seed and credential secret.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Section, Sections};
use crate::edit::{EditContext, remove, symlink, write_file};
use crate::tree::{NodeKind, Tree};
use crate::values::{HostnameTemplate, Keymap, Locale, TimeZone};

/// D-Bus's machine ID file (`machine-id(5)`: a symlink to /etc/machine-id, or a copy).
pub const DBUS_MACHINE_ID: &str = "var/lib/dbus/machine-id";

/// Per-machine state removed by the first-boot reset (directories with their contents).
pub const PER_MACHINE: &[&str] = &[
    "var/lib/docker",
    "etc/pacman.d/gnupg",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
];

/// The `[system]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Apply this section. Default true; `false` leaves the rootfs's identity files and
    /// per-machine state as they are.
    #[serde(skip_serializing_if = "super::is_true")]
    pub enable: bool,
    /// A fixed host name (written to `/etc/hostname`), or a template with placeholders like
    /// `hc1-{mac6}` that the node's first boot fills in (nothing written here). Unset: the
    /// rootfs's `/etc/hostname` is kept.
    pub hostname: Option<HostnameTemplate>,
    /// Time zone below `/usr/share/zoneinfo`; must exist in the rootfs. Default `UTC`.
    pub timezone: TimeZone,
    /// `LANG=` in `/etc/locale.conf`. Default `C.UTF-8` (built into glibc, needs no
    /// locale-gen).
    pub locale: Locale,
    /// `KEYMAP=` in `/etc/vconsole.conf`. Default `us`.
    pub keymap: Keymap,
    /// Reset per-machine state (machine-id, SSH host keys, Docker state, pacman keyring,
    /// random seed). Default true; turn off only for an image that is used once.
    pub first_boot_reset: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            hostname: None,
            timezone: TimeZone::known("UTC"),
            locale: Locale::known("C.UTF-8"),
            keymap: Keymap::known("us"),
            first_boot_reset: true,
        }
    }
}

/// The hostname template, when `hostname` has placeholders (for the first-boot unit).
pub fn hostname_template(cfg: &Config) -> Option<&str> {
    cfg.hostname
        .as_ref()
        .filter(|h| h.is_template())
        .map(|h| h.as_str())
}

/// Apply the `[system]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    // The values' syntax was checked when the profile was read (crate::values).
    match &cfg.hostname {
        None => {}
        Some(h) if h.is_template() => {
            ctx.note(format!(
                "system.hostname {h:?} is a template: /etc/hostname is set at first boot"
            ));
        }
        Some(h) => {
            write_file(tree, ctx, "etc/hostname", format!("{h}\n"), 0o644, 0, 0)?;
        }
    }

    let tz = &cfg.timezone;
    let zone = format!("usr/share/zoneinfo/{tz}");
    match tree.lookup(zone.as_bytes()).map(|id| &tree.node(id).kind) {
        Some(NodeKind::File(_) | NodeKind::Symlink(_)) => {}
        _ => bail!(
            "system.timezone = {tz:?}: /{zone} is not in the rootfs (is tzdata installed, is \
             the name right?)"
        ),
    }
    symlink(tree, ctx, "etc/localtime", &format!("../{zone}"))?;

    write_file(
        tree,
        ctx,
        "etc/locale.conf",
        format!("LANG={}\n", cfg.locale),
        0o644,
        0,
        0,
    )?;
    if !["C", "C.UTF-8", "C.utf8", "POSIX"].contains(&cfg.locale.as_str())
        && tree.lookup(b"usr/lib/locale/locale-archive").is_none()
    {
        ctx.note(format!(
            "system.locale {:?} is not compiled in the rootfs (no /usr/lib/locale/locale-archive); \
             run locale-gen on the node",
            cfg.locale
        ));
    }
    write_file(
        tree,
        ctx,
        "etc/vconsole.conf",
        format!("KEYMAP={}\n", cfg.keymap),
        0o644,
        0,
        0,
    )?;

    if cfg.first_boot_reset {
        write_file(tree, ctx, "etc/machine-id", "uninitialized\n", 0o444, 0, 0)?;
        let mut removed = Vec::new();
        let host_keys: Vec<String> = match tree.lookup(b"etc/ssh") {
            Some(id) => tree
                .children(id)
                .filter(|(n, _)| n.starts_with(b"ssh_host_"))
                .map(|(n, _)| format!("etc/ssh/{}", String::from_utf8_lossy(n)))
                .collect(),
            None => Vec::new(),
        };
        for p in host_keys
            .iter()
            .map(String::as_str)
            .chain(PER_MACHINE.iter().copied())
        {
            if remove(tree, ctx, p)? {
                removed.push(format!("/{p}"));
            }
        }
        // D-Bus's own copy of the machine ID: systemd adopts it as the machine ID when
        // /etc/machine-id is `uninitialized`, so every node would share it. A symlink to
        // /etc/machine-id (what systemd recommends) stays.
        if let Some(id) = tree.lookup(DBUS_MACHINE_ID.as_bytes())
            && !matches!(tree.node(id).kind, NodeKind::Symlink(_))
            && remove(tree, ctx, DBUS_MACHINE_ID)?
        {
            removed.push(format!("/{DBUS_MACHINE_ID}"));
        }
        if !removed.is_empty() {
            ctx.note(format!(
                "first-boot reset removed per-machine state: {}",
                removed.join(", ")
            ));
        }
    }
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "system";

    fn apply(
        &self,
        tree: &mut Tree,
        _: &Sections,
        ctx: &EditContext,
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::testutil::*;

    #[test]
    fn writes_identity_and_resets_per_machine_state() {
        let (mut t, secrets) = arch_tree();
        bytes(
            &mut t,
            DBUS_MACHINE_ID,
            0o444,
            "5fe0d2ae6f9147efaa69a27ffb230f57\n",
        );
        let ctx = EditContext::new(TS, &secrets);
        let c = Config {
            hostname: Some("hc1-manager1".parse().unwrap()),
            timezone: "Europe/Berlin".parse().unwrap(),
            ..Config::default()
        };
        apply(&mut t, &c, &ctx).unwrap();
        assert_file(&t, "etc/hostname", b"hc1-manager1\n", 0o644, 0, 0);
        assert_symlink(&t, "etc/localtime", "../usr/share/zoneinfo/Europe/Berlin");
        assert_file(&t, "etc/locale.conf", b"LANG=C.UTF-8\n", 0o644, 0, 0);
        assert_file(&t, "etc/vconsole.conf", b"KEYMAP=us\n", 0o644, 0, 0);
        assert_file(&t, "etc/machine-id", b"uninitialized\n", 0o444, 0, 0);
        for gone in [
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/ssh_host_rsa_key",
            "var/lib/docker",
            "etc/pacman.d/gnupg",
            DBUS_MACHINE_ID,
        ] {
            assert!(t.lookup(gone.as_bytes()).is_none(), "{gone} still there");
        }
        // A symlink to /etc/machine-id is not a copy: it stays.
        let (mut t2, _) = arch_tree();
        link(&mut t2, DBUS_MACHINE_ID, "/etc/machine-id");
        apply(&mut t2, &c, &ctx).unwrap();
        assert_symlink(&t2, DBUS_MACHINE_ID, "/etc/machine-id");
        assert!(t.lookup(b"etc/ssh/moduli").is_some());
        assert!(t.lookup(b"etc/ssh/sshd_config").is_some());
        assert!(t.lookup(b"etc/pacman.d/mirrorlist").is_some());
        let notes = ctx.take_notes();
        assert!(
            notes.iter().any(|n| n.contains("/var/lib/docker")),
            "{notes:?}"
        );
    }

    #[test]
    fn hostname_template_is_left_for_first_boot() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let c = Config {
            hostname: Some("hc1-{mac6}".parse().unwrap()),
            first_boot_reset: false,
            ..Config::default()
        };
        apply(&mut t, &c, &ctx).unwrap();
        assert_eq!(hostname_template(&c), Some("hc1-{mac6}"));
        assert_eq!(text(&t, "etc/hostname"), "alarm\n");
        assert!(t.lookup(b"var/lib/docker").is_some());
        assert_symlink(&t, "etc/localtime", "../usr/share/zoneinfo/UTC");
    }

    #[test]
    fn a_zone_the_rootfs_lacks_is_refused() {
        // The syntax of each value is its type's (crate::values); the rootfs is checked here.
        let c = Config {
            timezone: "Mars/Olympus".parse().unwrap(),
            ..Config::default()
        };
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let e = format!("{:#}", apply(&mut t, &c, &ctx).unwrap_err());
        assert!(
            e.contains("/usr/share/zoneinfo/Mars/Olympus is not in the rootfs"),
            "{e}"
        );
    }
}
