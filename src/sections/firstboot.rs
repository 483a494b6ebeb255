//! The node's first boot: the image ships no per-machine identity, and these units give the
//! node one when it first starts, so one image serves many SSDs.
//!
//! Written here (plain systemd units and POSIX sh scripts, enabled by symlinks):
//!
//! - `hc1-firstboot.service` runs `/usr/lib/hc1img/hc1-firstboot` (source:
//!   `assets/firstboot/hc1-firstboot`) before the network: host name from the boot card's seed
//!   or from `[system] hostname`'s template (`{mac6}`, `{mac}`: the first Ethernet MAC), and a
//!   static address from the seed that `hc1img seed` writes. Its settings
//!   go to `/etc/hc1img/firstboot.conf` (`KEY=value` lines, read without shell evaluation).
//! - `hc1-card-secrets.service` (every boot) and `hc1-card-secrets.path` (while running) run
//!   `/usr/lib/hc1img/hc1-card-secrets` (source: `assets/firstboot/hc1-card-secrets`): each
//!   secret the card's seed brings (`hc1img seed --secret NAME=FILE`) goes where
//!   `/etc/hc1img/card-secrets.conf` says, root-owned with its mode, and is erased from the
//!   card. The conf is made from what the edits recorded with
//!   [`EditContext::on_card`] for the secrets the profile does not bake
//!   ([`write_card_secrets`]); without such secrets none of this is installed.
//! - `hc1-ssh-keygen.service` makes the SSH host keys (`ssh-keygen -A`) before `sshd`, unless
//!   the rootfs has its own generator (Arch Linux ARM's `sshdgenkeys.service`).
//! - `hc1-pacman-keyring.service` initialises and populates pacman's keyring on the node
//!   (`pacman-key --init`, `--populate archlinuxarm`) when the rootfs has `pacman-key`.
//! - Root growth with systemd's own machinery: a `repart.d` drop-in (`repart.d(5)`) lets
//!   `systemd-repart.service` grow GPT partition 1 (type `root-arm`) into the whole disk,
//!   moving the backup GPT header to the end; `x-systemd.growfs` on `/` in fstab (added by
//!   [`super::fstab`]) makes `systemd-growfs-root.service` grow the ext4 online, ordered after
//!   repart by a drop-in.
//!
//! - `hc1-health.service` runs `/usr/local/sbin/hc1-health` (source: `assets/ops/hc1-health`)
//!   once, after the first boot's units (docker, the swarm join, root growth, the clock), so
//!   its one line per check is in the journal; a failing check never fails the unit. The
//!   command stays for the admin.
//!
//! `machine-id` (`uninitialized`, systemd's first-boot marker) and the removal of per-machine
//! state are [`super::system`]'s `first_boot_reset`. Units follow `systemd.unit(5)`; every one
//! passes `systemd-analyze verify` (tested).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::system;
use super::{EditInputs, Section, Sections};
use crate::edit::units::{LIB_UNITS, enable_unit, install_unit};
use crate::edit::{EditContext, exists, mkdir_p, write_file};
use crate::tree::Tree;
use crate::values::AbsPath;

/// Where the scripts go.
pub const LIB_DIR: &str = "usr/lib/hc1img";
/// The settings file the first-boot script reads.
pub const FIRSTBOOT_CONF: &str = "etc/hc1img/firstboot.conf";
/// The first-boot script (POSIX sh).
pub const FIRSTBOOT_SCRIPT: &str = include_str!("../../assets/firstboot/hc1-firstboot");
/// The card-secrets script (POSIX sh).
pub const CARD_SECRETS_SCRIPT: &str = include_str!("../../assets/firstboot/hc1-card-secrets");
/// What the card-secrets script does with each secret (`NAME ACTION ARGS…` lines).
pub const CARD_SECRETS_CONF: &str = "etc/hc1img/card-secrets.conf";
/// The health report (bash), as shipped in the image.
pub const HEALTH_SCRIPT: &str = include_str!("../../assets/ops/hc1-health");
pub const HEALTH_BIN: &str = "usr/local/sbin/hc1-health";
/// Every first-boot unit is wanted by `multi-user.target`.
pub(crate) const MULTI_USER: Option<&str> = Some("multi-user.target");
/// The repart.d drop-in that grows partition 1.
pub const REPART_CONF: &str = "usr/lib/repart.d/50-hc1img-root.conf";

/// The `[firstboot]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Install the first-boot units at all. Default true.
    pub enable: bool,
    /// Grow partition 1 and its ext4 to fill the disk at boot (systemd-repart +
    /// x-systemd.growfs). Default true.
    pub grow_root: bool,
    /// Directory on the node where the seed written by `hc1img seed` is read. Default
    /// `/boot/hc1img-seed` (the card's FAT partition, mounted at `/boot` by `[fstab]`).
    pub seed_dir: AbsPath,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            grow_root: true,
            seed_dir: AbsPath::known("/boot/hc1img-seed"),
        }
    }
}

/// `hc1-health` once after the first boot, into the journal (`-`: a failing check is a
/// report, not a failed unit).
const HEALTH_UNIT: &str = "\
[Unit]
Description=hc1img: health report after the first boot (hc1-health)
Documentation=file:/usr/local/sbin/hc1-health
Wants=network-online.target
After=network-online.target time-sync.target docker.service hc1-firstboot.service hc1-card-secrets.service hc1-swarm-join.service systemd-repart.service systemd-growfs-root.service
ConditionPathExists=!/var/lib/hc1img/health.done

[Service]
Type=oneshot
StateDirectory=hc1img
ExecStart=-/usr/local/sbin/hc1-health
ExecStartPost=/usr/bin/touch /var/lib/hc1img/health.done

[Install]
WantedBy=multi-user.target
";

const FIRSTBOOT_UNIT: &str = "\
[Unit]
Description=hc1img first boot: host name, address and secrets from the seed
Documentation=file:/usr/lib/hc1img/hc1-firstboot
DefaultDependencies=no
Wants=network-pre.target {mount}
After=local-fs.target systemd-udev-trigger.service {mount}
Before=network-pre.target systemd-networkd.service systemd-hostnamed.service hc1-swarm-join.service
# The seed's engine labels go into daemon.json before the engine reads it.
Before=docker.service
Conflicts=shutdown.target
Before=shutdown.target
ConditionPathExists=!/var/lib/hc1img/firstboot.done

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/hc1img/hc1-firstboot

[Install]
WantedBy=multi-user.target
";

const CARD_SECRETS_UNIT: &str = "\
[Unit]
Description=hc1img: put the secrets the boot card brings into place
Documentation=file:/usr/lib/hc1img/hc1-card-secrets
DefaultDependencies=no
Wants={mount}
After=local-fs.target {mount} hc1-firstboot.service
Before=hc1-swarm-join.service hc1-buildx-setup.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
ExecStart=/usr/lib/hc1img/hc1-card-secrets

[Install]
WantedBy=multi-user.target
";

const CARD_SECRETS_PATH: &str = "\
[Unit]
Description=hc1img: take the secrets put on the boot card while the node runs
Documentation=file:/usr/lib/hc1img/hc1-card-secrets
Wants={mount}
After={mount}

[Path]
DirectoryNotEmpty={seed}/secrets
Unit=hc1-card-secrets.service

[Install]
WantedBy=paths.target
";

const SSH_KEYGEN_UNIT: &str = "\
[Unit]
Description=hc1img: generate the SSH host keys of this node
Before=ssh.service sshd.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

const PACMAN_KEYRING_UNIT: &str = "\
[Unit]
Description=hc1img: initialise and populate pacman's keyring on this node
After=time-sync.target
ConditionPathExists=!/etc/pacman.d/gnupg/trustdb.gpg

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/pacman-key --init
ExecStart=/usr/bin/pacman-key --populate archlinuxarm

[Install]
WantedBy=multi-user.target
";

const REPART_DROPIN: &str = "\
# Written by hc1img: grow the root partition (GPT partition 1, type root-arm) into all free
# space behind it at boot; systemd-repart also moves the backup GPT header to the disk's end.
[Partition]
Type=root-arm
";

const GROWFS_DROPIN: &str = "\
# Written by hc1img: grow the ext4 after systemd-repart has grown its partition.
[Unit]
After=systemd-repart.service
";

/// The mount unit name of an absolute directory (`/boot/x` -> `boot.mount`, its first
/// component: the seed lives on a mounted card).
fn mount_unit_of(dir: &str) -> Option<String> {
    let first = dir.trim_start_matches('/').split('/').next()?;
    (!first.is_empty()).then(|| format!("{first}.mount"))
}

/// Apply the `[firstboot]` section; `system` supplies the host name template.
pub fn apply(
    tree: &mut Tree,
    cfg: &Config,
    system_cfg: &system::Config,
    ctx: &EditContext,
) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    let seed = cfg.seed_dir.as_str();
    let template = system::hostname_template(system_cfg);
    mkdir_p(tree, ctx, "etc/hc1img", 0o755, 0, 0, false)?;
    mkdir_p(tree, ctx, LIB_DIR, 0o755, 0, 0, false)?;
    let conf = format!(
        "# Written by hc1img: settings of /usr/lib/hc1img/hc1-firstboot.\nHOSTNAME_TEMPLATE={}\nSEED_DIR={seed}\n",
        template.unwrap_or("")
    );
    write_file(tree, ctx, FIRSTBOOT_CONF, conf, 0o644, 0, 0)?;
    write_file(
        tree,
        ctx,
        &format!("{LIB_DIR}/hc1-firstboot"),
        FIRSTBOOT_SCRIPT,
        0o755,
        0,
        0,
    )?;
    mkdir_p(tree, ctx, "usr/local/sbin", 0o755, 0, 0, false)?;
    write_file(tree, ctx, HEALTH_BIN, HEALTH_SCRIPT, 0o755, 0, 0)?;
    install_unit(
        tree,
        ctx,
        LIB_UNITS,
        "hc1-health.service",
        HEALTH_UNIT,
        MULTI_USER,
    )?;
    let mount = mount_unit_of(seed).unwrap_or_default();
    install_unit(
        tree,
        ctx,
        LIB_UNITS,
        "hc1-firstboot.service",
        FIRSTBOOT_UNIT.replace("{mount}", &mount),
        MULTI_USER,
    )?;

    if exists(tree, "usr/bin/ssh-keygen") {
        if crate::edit::units::find_unit(tree, "sshdgenkeys.service").is_some() {
            ctx.note("firstboot: the rootfs generates SSH host keys itself (sshdgenkeys.service)");
        } else {
            install_unit(
                tree,
                ctx,
                LIB_UNITS,
                "hc1-ssh-keygen.service",
                SSH_KEYGEN_UNIT,
                MULTI_USER,
            )?;
        }
    }
    if exists(tree, "usr/bin/pacman-key") {
        install_unit(
            tree,
            ctx,
            LIB_UNITS,
            "hc1-pacman-keyring.service",
            PACMAN_KEYRING_UNIT,
            MULTI_USER,
        )?;
    }
    if cfg.grow_root {
        if crate::edit::units::find_unit(tree, "systemd-repart.service").is_none() {
            bail!(
                "firstboot.grow_root needs systemd-repart, which the rootfs lacks \
                 (no systemd-repart.service); set firstboot.grow_root = false"
            );
        }
        mkdir_p(tree, ctx, "usr/lib/repart.d", 0o755, 0, 0, false)?;
        write_file(tree, ctx, REPART_CONF, REPART_DROPIN, 0o644, 0, 0)?;
        let dropin = "etc/systemd/system/systemd-growfs-root.service.d";
        mkdir_p(tree, ctx, dropin, 0o755, 0, 0, false)?;
        write_file(
            tree,
            ctx,
            &format!("{dropin}/50-hc1img-after-repart.conf"),
            GROWFS_DROPIN,
            0o644,
            0,
            0,
        )?;
        enable_unit(tree, ctx, "systemd-repart.service", "sysinit.target")?;
    }
    Ok(())
}

/// After every edit: the secrets the edits recorded as coming from the card
/// ([`EditContext::on_card`]) go to `/etc/hc1img/card-secrets.conf`, with the script and
/// units that put them in place at boot. Nothing without such secrets.
pub fn write_card_secrets(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    let actions = ctx.card_actions.borrow().clone();
    if actions.is_empty() {
        return Ok(());
    }
    if !cfg.enable {
        let names: std::collections::BTreeSet<&str> =
            actions.iter().map(|(n, _)| n.as_str()).collect();
        ctx.warn(format!(
            "firstboot.enable = false: the secrets {} are not baked (bake = true) and no boot \
             takes them from the card, so the node never gets them",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ));
        return Ok(());
    }
    let mut conf = String::from(
        "# Written by hc1img: where hc1-card-secrets puts each secret the boot card brings.\n\
         # NAME ACTION ARGS (see /usr/lib/hc1img/hc1-card-secrets --help)\n",
    );
    for (name, action) in &actions {
        crate::edit::check_one_line("card secret", action)?;
        conf.push_str(&format!("{name} {action}\n"));
    }
    mkdir_p(tree, ctx, "etc/hc1img", 0o755, 0, 0, false)?;
    mkdir_p(tree, ctx, LIB_DIR, 0o755, 0, 0, false)?;
    write_file(tree, ctx, CARD_SECRETS_CONF, conf, 0o644, 0, 0)?;
    write_file(
        tree,
        ctx,
        &format!("{LIB_DIR}/hc1-card-secrets"),
        CARD_SECRETS_SCRIPT,
        0o755,
        0,
        0,
    )?;
    let mount = mount_unit_of(&cfg.seed_dir).unwrap_or_default();
    install_unit(
        tree,
        ctx,
        LIB_UNITS,
        "hc1-card-secrets.service",
        CARD_SECRETS_UNIT.replace("{mount}", &mount),
        MULTI_USER,
    )?;
    install_unit(
        tree,
        ctx,
        LIB_UNITS,
        "hc1-card-secrets.path",
        CARD_SECRETS_PATH
            .replace("{mount}", &mount)
            .replace("{seed}", &cfg.seed_dir),
        Some("paths.target"),
    )?;
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "firstboot";
    const ASSETS: &'static [(&'static str, &'static str)] = &[
        ("firstboot/hc1-card-secrets", CARD_SECRETS_SCRIPT),
        ("firstboot/hc1-firstboot", FIRSTBOOT_SCRIPT),
        ("ops/hc1-health", HEALTH_SCRIPT),
    ];

    fn apply(
        &self,
        tree: &mut Tree,
        all: &Sections,
        ctx: &EditContext,
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, &all.system, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::testutil::*;

    fn template_system() -> system::Config {
        system::Config {
            hostname: Some("hc1-{mac6}".parse().unwrap()),
            ..system::Config::default()
        }
    }

    #[test]
    fn writes_units_scripts_and_repart_dropin() {
        let (mut t, secrets) = arch_tree();
        bytes(
            &mut t,
            "usr/lib/systemd/system/systemd-repart.service",
            0o644,
            "",
        );
        bytes(&mut t, "usr/bin/ssh-keygen", 0o755, "");
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &template_system(), &ctx).unwrap();
        assert_file(
            &t,
            FIRSTBOOT_CONF,
            b"# Written by hc1img: settings of /usr/lib/hc1img/hc1-firstboot.\n\
              HOSTNAME_TEMPLATE=hc1-{mac6}\nSEED_DIR=/boot/hc1img-seed\n",
            0o644,
            0,
            0,
        );
        assert_file(
            &t,
            "usr/lib/hc1img/hc1-firstboot",
            FIRSTBOOT_SCRIPT.as_bytes(),
            0o755,
            0,
            0,
        );
        let unit = text(&t, "usr/lib/systemd/system/hc1-firstboot.service");
        assert!(unit.contains("After=local-fs.target systemd-udev-trigger.service boot.mount"));
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/hc1-firstboot.service",
            "/usr/lib/systemd/system/hc1-firstboot.service",
        );
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/hc1-ssh-keygen.service",
            "/usr/lib/systemd/system/hc1-ssh-keygen.service",
        );
        assert!(text(&t, REPART_CONF).contains("Type=root-arm"));
        assert_symlink(
            &t,
            "etc/systemd/system/sysinit.target.wants/systemd-repart.service",
            "/usr/lib/systemd/system/systemd-repart.service",
        );
        assert!(
            text(
                &t,
                "etc/systemd/system/systemd-growfs-root.service.d/50-hc1img-after-repart.conf"
            )
            .contains("After=systemd-repart.service")
        );
        // No pacman-key in this tree: no keyring unit.
        assert!(
            t.lookup(b"usr/lib/systemd/system/hc1-pacman-keyring.service")
                .is_none()
        );
    }

    #[test]
    fn systemd_analyze_verify_accepts_every_unit() {
        let (mut t, secrets) = arch_tree();
        bytes(
            &mut t,
            "usr/lib/systemd/system/systemd-repart.service",
            0o644,
            "",
        );
        bytes(&mut t, "usr/bin/ssh-keygen", 0o755, "#!/bin/sh\n");
        bytes(&mut t, "usr/bin/pacman-key", 0o755, "#!/bin/sh\n");
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &template_system(), &ctx).unwrap();
        verify_units(
            &t,
            &[
                "hc1-firstboot.service",
                "hc1-ssh-keygen.service",
                "hc1-pacman-keyring.service",
                "hc1-health.service",
            ],
            &["/usr/bin/touch"],
        );
        assert_file(&t, HEALTH_BIN, HEALTH_SCRIPT.as_bytes(), 0o755, 0, 0);
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/hc1-health.service",
            "/usr/lib/systemd/system/hc1-health.service",
        );
    }

    #[test]
    fn grow_root_without_repart_is_an_error() {
        let (mut t, secrets) = arch_tree();
        t.remove(b"usr/lib/systemd/system/systemd-repart.service");
        let ctx = EditContext::new(TS, &secrets);
        let e = apply(&mut t, &Config::default(), &template_system(), &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd-repart"), "{e}");
    }
}
