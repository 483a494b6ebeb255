//! Backups: every node backs its Docker volumes (and MySQL/MariaDB dumps) up to the cluster's
//! backup target each day, and any node can fill an empty volume from the newest backup
//! (target.md, "Data on the cluster"; issue 9).
//!
//! Writes the scripts `/usr/local/sbin/hc1-volume-backup` and `/usr/local/bin/hc1-volume-restore`
//! (from `assets/ops/`), their configuration `/etc/hc1/backup.conf` (shell variables), and the
//! systemd units `hc1-volume-backup.service` + `.timer` (`systemd.timer(5)`: `OnCalendar=`,
//! `RandomizedDelaySec=`, `Persistent=`), enabled in `timers.target`. The target is an NFS or
//! CIFS share mounted by a `.mount` unit (`systemd.mount(5)`: the unit is named after its
//! `Where=` path, escaped as `systemd-escape --path` does) that the script starts for its run
//! and stops after, never at boot (a NAS that is down fails a run, not the boot; CIFS
//! credentials go to a 0600 file,
//! `mount.cifs(8)` `credentials=`), or an rsync-over-SSH destination whose private key comes
//! from a secret (0600). Secret values only ever reach those two files.
//!
//! The helpers at the bottom (shell configuration files, calendar and time-span checks) are
//! shared with the `cleanup` and `builds` edits.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Need, Section, Sections};
use crate::edit::units::{ETC_UNITS, install_unit};
use crate::edit::{EditContext, check_one_line, mkdir_p, write_file};
use crate::tree::Tree;
use crate::values::{AbsPath, CalendarSpec, TimeSpan};

/// The backup script, as shipped in the image.
pub const BACKUP_SCRIPT: &str = include_str!("../../assets/ops/hc1-volume-backup");
/// The restore script, as shipped in the image.
pub const RESTORE_SCRIPT: &str = include_str!("../../assets/ops/hc1-volume-restore");

pub const BACKUP_BIN: &str = "usr/local/sbin/hc1-volume-backup";
pub const RESTORE_BIN: &str = "usr/local/bin/hc1-volume-restore";
pub const CONF: &str = "etc/hc1/backup.conf";
pub const CIFS_CREDENTIALS: &str = "etc/hc1/backup-cifs.cred";
pub const SSH_KEY: &str = "etc/hc1/backup-ssh-key";
pub const SERVICE: &str = "hc1-volume-backup.service";
pub const TIMER: &str = "hc1-volume-backup.timer";

/// Where the backups go.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// No backups (nothing is written).
    #[default]
    None,
    /// An NFS export mounted at `mount_point`.
    Nfs,
    /// A CIFS (SMB) share mounted at `mount_point`.
    Cifs,
    /// rsync over SSH to `rsync_dest`.
    Rsync,
    /// A local directory `mount_point` (a disk mounted by other means, or a test VM); no
    /// mount unit, and the script does not insist on a mount point there.
    Local,
}

/// The `[backup]` profile section. Nothing is written unless `target` is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `nfs`, `cifs`, `rsync`, `local` or `none`. Default `none`.
    pub target: Target,
    /// The share: `host:/export` (NFS) or `//host/share` (CIFS). Required for those.
    pub share: Option<String>,
    /// Where the share is mounted. Default `/mnt/backup`.
    pub mount_point: AbsPath,
    /// Extra mount options (one option per element). Default none.
    pub mount_options: Vec<String>,
    /// CIFS account (with `cifs_password_secret`); unset = guest.
    pub cifs_user: Option<String>,
    /// Secret holding the CIFS password.
    pub cifs_password_secret: Option<String>,
    /// rsync destination `USER@HOST:/PATH`. Required for `rsync`.
    pub rsync_dest: Option<String>,
    /// Secret holding the SSH private key for `rsync`. Required for `rsync`.
    pub ssh_key_secret: Option<String>,
    /// SSH port for `rsync`. Default 22.
    pub ssh_port: u16,
    /// `OnCalendar=` of the timer. Default `daily`.
    pub schedule: CalendarSpec,
    /// `RandomizedDelaySec=` of the timer (spreads the nodes' load). Default `1h`.
    pub randomized_delay: TimeSpan,
    /// Dated directories of this host older than this many days are deleted after a good run.
    /// Default 14.
    pub keep_days: u32,
    /// Dump running MySQL/MariaDB containers too. Default true.
    pub mysql: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target: Target::None,
            share: None,
            mount_point: AbsPath::known("/mnt/backup"),
            mount_options: Vec::new(),
            cifs_user: None,
            cifs_password_secret: None,
            rsync_dest: None,
            ssh_key_secret: None,
            ssh_port: 22,
            schedule: CalendarSpec::known("daily"),
            randomized_delay: TimeSpan::known("1h"),
            keep_days: 14,
            mysql: true,
        }
    }
}

/// Check the section's values (no tree needed: the loader calls this before any fetch).
pub fn check(cfg: &Config) -> Result<()> {
    if cfg.target == Target::None {
        return Ok(());
    }
    if cfg.keep_days == 0 {
        bail!("backup.keep_days must be at least 1");
    }
    match cfg.target {
        Target::None => {}
        Target::Nfs | Target::Cifs => {
            let Some(share) = &cfg.share else {
                bail!(
                    "backup.share is required with target = \"{}\" (like {})",
                    target_name(cfg.target),
                    if cfg.target == Target::Nfs {
                        "\"nas.lan:/export/backup\""
                    } else {
                        "\"//nas.lan/backup\""
                    }
                );
            };
            let shape_ok = match cfg.target {
                Target::Nfs => share
                    .split_once(":/")
                    .is_some_and(|(h, _)| !h.is_empty() && !h.contains('/')),
                _ => share
                    .strip_prefix("//")
                    .and_then(|r| r.split_once('/'))
                    .is_some_and(|(h, s)| !h.is_empty() && !s.is_empty()),
            };
            if !shape_ok || !is_plain_word(share) {
                bail!(
                    "backup.share = {share:?}: expected {} without spaces or quotes",
                    if cfg.target == Target::Nfs {
                        "HOST:/EXPORT"
                    } else {
                        "//HOST/SHARE"
                    }
                );
            }
            for o in &cfg.mount_options {
                if o.is_empty() || o.contains(',') || !is_plain_word(o) {
                    bail!("backup.mount_options: {o:?} must be one option without `,` or spaces");
                }
            }
            if cfg.target == Target::Cifs {
                match (&cfg.cifs_user, &cfg.cifs_password_secret) {
                    (Some(u), Some(_)) => {
                        if u.is_empty() || u.contains(',') || !is_plain_word(u) {
                            bail!("backup.cifs_user = {u:?} must be one word without `,`");
                        }
                    }
                    (None, None) => {}
                    _ => bail!("backup.cifs_user and backup.cifs_password_secret go together"),
                }
            } else if cfg.cifs_user.is_some() || cfg.cifs_password_secret.is_some() {
                bail!("backup.cifs_user/cifs_password_secret only apply to target = \"cifs\"");
            }
        }
        Target::Local => {
            // Only mount_point counts; share/cifs_*/rsync_* inherited through `extends` from a
            // profile with a network target are ignored (a profile cannot unset a key).
        }
        Target::Rsync => {
            let Some(d) = &cfg.rsync_dest else {
                bail!("backup.rsync_dest is required with target = \"rsync\" (USER@HOST:/PATH)");
            };
            check_rsync_dest(d)?;
            if cfg.ssh_key_secret.is_none() {
                bail!(
                    "backup.ssh_key_secret is required with target = \"rsync\" (the secret \
                     holding the SSH private key)"
                );
            }
            if cfg.ssh_port == 0 {
                bail!("backup.ssh_port must not be 0");
            }
        }
    }
    Ok(())
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::None => "none",
        Target::Nfs => "nfs",
        Target::Cifs => "cifs",
        Target::Rsync => "rsync",
        Target::Local => "local",
    }
}

fn check_rsync_dest(d: &str) -> Result<()> {
    let ok = d.split_once(":/").is_some_and(|(uh, path)| {
        let (user, host) = uh.split_once('@').unwrap_or(("", uh));
        let user_ok = user.is_empty()
            || user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        let path_ok = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
            && !path.split('/').any(|c| c == "..");
        user_ok && host_ok && path_ok
    });
    if !ok {
        bail!(
            "backup.rsync_dest = {d:?}: expected USER@HOST:/PATH (letters, digits, `_-./` in \
             the path)"
        );
    }
    Ok(())
}

/// The unit name systemd gives a mount point (`systemd-escape --path`): `/mnt/backup` →
/// `mnt-backup.mount`; `-` becomes `\x2d`.
pub fn mount_unit_name(path: &str) -> Result<String> {
    check_abs_path("mount point", path)?;
    let trimmed = path.trim_matches('/');
    let mut s = String::new();
    for (i, c) in trimmed.split('/').enumerate() {
        if i > 0 {
            s.push('-');
        }
        for (j, b) in c.bytes().enumerate() {
            if b == b'-' || (i == 0 && j == 0 && b == b'.') {
                s.push_str(&format!("\\x{b:02x}"));
            } else {
                s.push(b as char);
            }
        }
    }
    Ok(format!("{s}.mount"))
}

/// Apply the `[backup]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    check(cfg)?;
    if cfg.target == Target::None {
        return Ok(());
    }
    mkdir_p(tree, ctx, "etc/hc1", 0o755, 0, 0, false)?;
    write_file(tree, ctx, BACKUP_BIN, BACKUP_SCRIPT, 0o750, 0, 0)?;
    write_file(tree, ctx, RESTORE_BIN, RESTORE_SCRIPT, 0o755, 0, 0)?;

    let keep = cfg.keep_days.to_string();
    let mysql = if cfg.mysql { "1" } else { "0" };
    let mut vars: Vec<(&str, String)> = Vec::new();
    let mut unit_deps = String::new();
    let mut mount_condition = String::new();
    match cfg.target {
        Target::None => {}
        Target::Nfs | Target::Cifs => {
            let share = cfg.share.as_deref().unwrap_or_default();
            vars.push(("HC1_BACKUP_MODE", "mount".into()));
            vars.push(("HC1_BACKUP_DIR", cfg.mount_point.to_string()));
            let mut opts: Vec<String> = Vec::new();
            let fstype = if cfg.target == Target::Nfs {
                "nfs"
            } else {
                "cifs"
            };
            if cfg.target == Target::Cifs {
                match (&cfg.cifs_user, &cfg.cifs_password_secret) {
                    (Some(user), Some(secret)) if ctx.baked(secret) => {
                        let pass = ctx.secret_line(secret)?;
                        let cred = format!("username={user}\npassword={pass}\n");
                        write_file(tree, ctx, CIFS_CREDENTIALS, cred, 0o600, 0, 0)?;
                        opts.push(format!("credentials=/{CIFS_CREDENTIALS}"));
                    }
                    (Some(user), Some(secret)) => {
                        // From the card: until it is there, the share is not mounted and the
                        // backup is skipped (never a failed unit).
                        ctx.on_card(secret, format!("cifs-cred /{CIFS_CREDENTIALS} {user}"));
                        opts.push(format!("credentials=/{CIFS_CREDENTIALS}"));
                        mount_condition = format!("ConditionPathExists=/{CIFS_CREDENTIALS}\n");
                        unit_deps.push_str(&mount_condition);
                    }
                    _ => opts.push("guest".into()),
                }
            }
            opts.extend(cfg.mount_options.iter().cloned());
            let unit = mount_unit_name(&cfg.mount_point)?;
            let mut body = format!(
                "# Written by hc1img: the backup share for hc1-volume-backup.\n[Unit]\n\
                 Description=Backup share {share}\nWants=network-online.target\n\
                 After=network-online.target\n{mount_condition}\n[Mount]\nWhat={share}\nWhere={}\n\
                 Type={fstype}\n",
                cfg.mount_point
            );
            if !opts.is_empty() {
                body.push_str(&format!("Options={}\n", opts.join(",")));
            }
            // Not in remote-fs.target: the backup script starts it for its run and stops it
            // after, so a NAS that is down fails that run (and mails root), never the boot.
            body.push_str("TimeoutSec=60\n");
            install_unit(tree, ctx, ETC_UNITS, &unit, body, None)?;
            mkdir_p(tree, ctx, &cfg.mount_point, 0o755, 0, 0, false)?;
            vars.push(("HC1_BACKUP_MOUNT_UNIT", unit));
            vars.push(("HC1_BACKUP_SHARE", share.to_string()));
        }
        Target::Local => {
            vars.push(("HC1_BACKUP_MODE", "mount".into()));
            vars.push(("HC1_BACKUP_DIR", cfg.mount_point.to_string()));
            vars.push(("HC1_BACKUP_REQUIRE_MOUNT", "0".into()));
            mkdir_p(tree, ctx, &cfg.mount_point, 0o700, 0, 0, false)?;
            unit_deps.push_str(&format!("RequiresMountsFor={}\n", cfg.mount_point));
        }
        Target::Rsync => {
            let dest = cfg.rsync_dest.as_deref().unwrap_or_default();
            let secret = cfg.ssh_key_secret.as_deref().unwrap_or_default();
            if ctx.baked(secret) {
                let mut key = ctx.secret(secret)?;
                if key.is_empty() {
                    bail!("secret {secret:?} (backup.ssh_key_secret) is empty");
                }
                if key.last() != Some(&b'\n') {
                    key.push(b'\n');
                }
                write_file(tree, ctx, SSH_KEY, key, 0o600, 0, 0)?;
            } else {
                // From the card: the backup is skipped until the key is there.
                ctx.on_card(secret, format!("file /{SSH_KEY} 0600"));
                unit_deps.push_str(&format!("ConditionPathExists=/{SSH_KEY}\n"));
            }
            vars.push(("HC1_BACKUP_MODE", "rsync".into()));
            vars.push(("HC1_BACKUP_RSYNC_DEST", dest.into()));
            vars.push(("HC1_BACKUP_SSH_KEY", format!("/{SSH_KEY}")));
            vars.push(("HC1_BACKUP_SSH_PORT", cfg.ssh_port.to_string()));
        }
    }
    vars.push(("HC1_BACKUP_KEEP_DAYS", keep));
    vars.push(("HC1_BACKUP_MYSQL", mysql.into()));
    let conf = shell_conf(
        "the profile's [backup] section; read by hc1-volume-backup and hc1-volume-restore",
        &vars,
    )?;
    write_file(tree, ctx, CONF, conf, 0o644, 0, 0)?;

    let service = format!(
        "# Written by hc1img: see hc1-volume-backup --help.\n[Unit]\n\
         Description=Back up Docker volumes and MySQL databases to the backup target\n\
         Requires=docker.service\n\
         After=docker.service network-online.target time-sync.target\n\
         Wants=network-online.target\n{unit_deps}\n[Service]\nType=oneshot\n\
         ExecStart=/{BACKUP_BIN}\nNice=10\nIOSchedulingClass=idle\n"
    );
    install_unit(tree, ctx, ETC_UNITS, SERVICE, service, None)?;
    let timer = timer_unit(
        "Daily backup of Docker volumes",
        &cfg.schedule,
        &cfg.randomized_delay,
    );
    install_unit(tree, ctx, ETC_UNITS, TIMER, timer, Some("timers.target"))?;
    Ok(())
}

// ---- Shared with `cleanup` and `builds` ----------------------------------------------------

/// A `[Timer]` unit running its service on `schedule` with a random delay, catching up on a
/// run missed while the node was off (`Persistent=true`).
pub(crate) fn timer_unit(description: &str, schedule: &str, delay: &str) -> String {
    format!(
        "# Written by hc1img.\n[Unit]\nDescription={description}\n\n[Timer]\n\
         OnCalendar={schedule}\nRandomizedDelaySec={delay}\nPersistent=true\n\n\
         [Install]\nWantedBy=timers.target\n"
    )
}

/// A file of `NAME='value'` lines for a script to source. Values must be one line.
pub(crate) fn shell_conf(source: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut s = format!("# Written by hc1img from {source}.\n");
    for (k, v) in vars {
        check_one_line(k, v)?;
        s.push_str(&format!("{k}='{}'\n", v.replace('\'', "'\\''")));
    }
    Ok(s)
}

/// Check an absolute path on the node (see [`AbsPath`]).
pub(crate) fn check_abs_path(field: &str, p: &str) -> Result<()> {
    AbsPath::new(p)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// One word: no whitespace, control characters, quotes or backslashes.
pub(crate) fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "'\"\\`$".contains(c))
}

impl Section for Config {
    const NAME: &'static str = "backup";

    /// The mount helper of a share, or rsync and ssh.
    fn needs(&self, _all: &Sections) -> Vec<Need> {
        let by = format!("[backup] target = {:?}", target_name(self.target));
        let need = |paths, package| Need {
            by: by.clone(),
            paths,
            package,
        };
        match self.target {
            Target::Nfs => vec![need(
                &["usr/bin/mount.nfs", "usr/sbin/mount.nfs"],
                "nfs-utils",
            )],
            Target::Cifs => vec![need(
                &["usr/bin/mount.cifs", "usr/sbin/mount.cifs"],
                "cifs-utils",
            )],
            Target::Rsync => vec![
                need(&["usr/bin/rsync"], "rsync"),
                need(&["usr/bin/ssh"], "openssh"),
            ],
            Target::Local | Target::None => Vec::new(),
        }
    }
    const ASSETS: &'static [(&'static str, &'static str)] = &[
        ("ops/hc1-volume-backup", BACKUP_SCRIPT),
        ("ops/hc1-volume-restore", RESTORE_SCRIPT),
    ];

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        check(self).map_err(|e| at.err(&["backup"], &e))?;
        at.declared(
            &["backup", "cifs_password_secret"],
            &self.cifs_password_secret,
        )?;
        at.declared(&["backup", "ssh_key_secret"], &self.ssh_key_secret)
    }

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

    fn nfs() -> Config {
        toml::from_str("target = \"nfs\"\nshare = \"nas.lan:/export/hc1\"\nkeep_days = 7\n")
            .unwrap()
    }

    #[test]
    fn nfs_target_writes_mount_unit_scripts_conf_and_enabled_timer() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &nfs(), &ctx).unwrap();
        assert_file(&t, BACKUP_BIN, BACKUP_SCRIPT.as_bytes(), 0o750, 0, 0);
        assert_file(&t, RESTORE_BIN, RESTORE_SCRIPT.as_bytes(), 0o755, 0, 0);
        assert_file(
            &t,
            CONF,
            b"# Written by hc1img from the profile's [backup] section; read by hc1-volume-backup \
              and hc1-volume-restore.\nHC1_BACKUP_MODE='mount'\nHC1_BACKUP_DIR='/mnt/backup'\n\
              HC1_BACKUP_MOUNT_UNIT='mnt-backup.mount'\nHC1_BACKUP_SHARE='nas.lan:/export/hc1'\n\
              HC1_BACKUP_KEEP_DAYS='7'\nHC1_BACKUP_MYSQL='1'\n",
            0o644,
            0,
            0,
        );
        let mount = text(&t, "etc/systemd/system/mnt-backup.mount");
        assert!(mount.contains("What=nas.lan:/export/hc1\nWhere=/mnt/backup\nType=nfs\n"));
        assert!(!mount.contains("Options="), "{mount}");
        // Never a boot requirement: not enabled anywhere, not required by the service (the
        // script starts it for its run, so a NAS that is down fails the run and mails root).
        assert!(!mount.contains("[Install]"), "{mount}");
        assert!(
            t.lookup(b"etc/systemd/system/remote-fs.target.wants")
                .is_none()
        );
        let svc = text(&t, "etc/systemd/system/hc1-volume-backup.service");
        assert!(!svc.contains("RequiresMountsFor"), "{svc}");
        assert!(svc.contains("ExecStart=/usr/local/sbin/hc1-volume-backup\n"));
        let timer = text(&t, "etc/systemd/system/hc1-volume-backup.timer");
        assert!(timer.contains("OnCalendar=daily\nRandomizedDelaySec=1h\nPersistent=true\n"));
        assert_symlink(
            &t,
            "etc/systemd/system/timers.target.wants/hc1-volume-backup.timer",
            "/etc/systemd/system/hc1-volume-backup.timer",
        );
        assert_dir(&t, "mnt/backup", 0o755, 0, 0);
        assert!(t.lookup(CIFS_CREDENTIALS.as_bytes()).is_none());
    }

    #[test]
    fn cifs_password_goes_only_to_the_0600_credentials_file() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg: Config = toml::from_str(
            "target = \"cifs\"\nshare = \"//nas.lan/backup\"\nmount_point = \"/srv/hc1-backup\"\n\
             mount_options = [\"vers=3.0\"]\ncifs_user = \"hc1\"\n\
             cifs_password_secret = \"smtp-pass\"\n",
        )
        .unwrap();
        apply(&mut t, &cfg, &ctx).unwrap();
        assert_file(
            &t,
            CIFS_CREDENTIALS,
            format!("username=hc1\npassword={SMTP_PASS}\n").as_bytes(),
            0o600,
            0,
            0,
        );
        let unit = r"etc/systemd/system/srv-hc1\x2dbackup.mount";
        let mount = text(&t, unit);
        assert!(
            mount.contains("Type=cifs\nOptions=credentials=/etc/hc1/backup-cifs.cred,vers=3.0\n"),
            "{mount}"
        );
        let mut hits = Vec::new();
        t.walk(|p, _, id| {
            if let crate::tree::NodeKind::File(crate::tree::FileData::Bytes(b)) = &t.node(id).kind
                && String::from_utf8_lossy(b).contains(SMTP_PASS)
            {
                hits.push(crate::tree::display(p));
            }
        });
        assert_eq!(hits, [CIFS_CREDENTIALS]);
        let notes = format!("{:?}", ctx.take_notes());
        assert!(!notes.contains(SMTP_PASS));
    }

    #[test]
    fn rsync_target_writes_the_key_and_no_mount_unit() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg: Config = toml::from_str(
            "target = \"rsync\"\nrsync_dest = \"backup@nas.lan:/srv/hc1\"\n\
             ssh_key_secret = \"plain\"\nssh_port = 2222\nmysql = false\n",
        )
        .unwrap();
        apply(&mut t, &cfg, &ctx).unwrap();
        assert_file(&t, SSH_KEY, b"hunter2-plaintext\n", 0o600, 0, 0);
        let conf = text(&t, CONF);
        assert!(conf.contains("HC1_BACKUP_MODE='rsync'\nHC1_BACKUP_RSYNC_DEST='backup@nas.lan:/srv/hc1'\nHC1_BACKUP_SSH_KEY='/etc/hc1/backup-ssh-key'\nHC1_BACKUP_SSH_PORT='2222'\n"), "{conf}");
        assert!(conf.contains("HC1_BACKUP_MYSQL='0'\n"));
        assert!(t.lookup(b"etc/systemd/system/mnt-backup.mount").is_none());
        let svc = text(&t, "etc/systemd/system/hc1-volume-backup.service");
        assert!(!svc.contains("RequiresMountsFor"), "{svc}");
    }

    #[test]
    fn local_target_is_a_plain_directory() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg: Config =
            toml::from_str("target = \"local\"\nmount_point = \"/var/backups/hc1\"\n").unwrap();
        apply(&mut t, &cfg, &ctx).unwrap();
        let conf = text(&t, CONF);
        assert!(conf.contains("HC1_BACKUP_MODE='mount'\nHC1_BACKUP_DIR='/var/backups/hc1'\nHC1_BACKUP_REQUIRE_MOUNT='0'\n"), "{conf}");
        assert_dir(&t, "var/backups/hc1", 0o700, 0, 0);
        let mut units = Vec::new();
        t.walk(|p, _, _| {
            let p = crate::tree::display(p);
            if p.ends_with(".mount") {
                units.push(p);
            }
        });
        assert!(units.is_empty(), "{units:?}");
        // A share inherited from a parent profile is ignored: still no mount unit.
        let inherited: Config = toml::from_str(
            "target = \"local\"\nmount_point = \"/var/backups/hc1\"\nshare = \"nas:/x\"\n",
        )
        .unwrap();
        check(&inherited).unwrap();
        let (mut t2, _) = arch_tree();
        apply(&mut t2, &inherited, &ctx).unwrap();
        assert_eq!(text(&t2, CONF), conf);
        let mut mounts = 0;
        t2.walk(|p, _, _| mounts += usize::from(crate::tree::display(p).ends_with(".mount")));
        assert_eq!(mounts, 0);
    }

    #[test]
    fn default_writes_nothing_and_bad_values_are_refused() {
        let (mut t, secrets) = arch_tree();
        let before = format!("{t:?}");
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert_eq!(before, format!("{t:?}"));
        let bad = [
            "target = \"nfs\"",
            "target = \"nfs\"\nshare = \"//nas/x\"",
            "target = \"nfs\"\nshare = \"nas:/x y\"",
            "target = \"nfs\"\nshare = \"nas:/x\"\nmount_point = \"/mnt/../etc\"",
            "target = \"nfs\"\nshare = \"nas:/x\"\nmount_point = \"/\"",
            "target = \"nfs\"\nshare = \"nas:/x\"\nmount_options = [\"a,b\"]",
            "target = \"nfs\"\nshare = \"nas:/x\"\nschedule = \"daily\\nExecStart=/bin/sh\"",
            "target = \"nfs\"\nshare = \"nas:/x\"\nrandomized_delay = \"soon\"",
            "target = \"nfs\"\nshare = \"nas:/x\"\nkeep_days = 0",
            "target = \"nfs\"\nshare = \"nas:/x\"\ncifs_user = \"u\"",
            "target = \"cifs\"\nshare = \"//nas/x\"\ncifs_user = \"u\"",
            "target = \"rsync\"\nrsync_dest = \"nas:/x\"",
            "target = \"rsync\"\nrsync_dest = \"nas:relative\"\nssh_key_secret = \"plain\"",
            "target = \"rsync\"\nrsync_dest = \"u@nas:/x'y\"\nssh_key_secret = \"plain\"",
        ];
        // Refused when read (a value's type) or by the section's check.
        for b in bad {
            let refused = match toml::from_str::<Config>(b) {
                Ok(cfg) => check(&cfg).is_err(),
                Err(_) => true,
            };
            assert!(refused, "accepted: {b}");
        }
        let cfg: Config =
            toml::from_str("target = \"cifs\"\nshare = \"//nas/x\"\ncifs_user = \"u\"\ncifs_password_secret = \"nope\"").unwrap();
        let e = format!("{:#}", apply(&mut t, &cfg, &ctx).unwrap_err());
        assert!(e.contains("\"nope\""), "{e}");
    }

    /// Every unit the three operations edits write, checked by the host's
    /// `systemd-analyze verify` in a root holding the host's own units, the written scripts
    /// and a stand-in `docker.service` (the tarball's is not in memory here).
    #[test]
    fn ops_units_pass_systemd_analyze_verify() {
        use std::process::Command;
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cifs: Config = toml::from_str(
            "target = \"cifs\"\nshare = \"//nas.lan/backup\"\nmount_point = \"/srv/hc1-backup\"\n\
             cifs_user = \"hc1\"\ncifs_password_secret = \"smtp-pass\"\n",
        )
        .unwrap();
        apply(&mut t, &cifs, &ctx).unwrap();
        let clean: super::super::cleanup::Config = toml::from_str("enable = true").unwrap();
        super::super::cleanup::apply(&mut t, &clean, &ctx).unwrap();
        let builds: super::super::builds::Config = toml::from_str(
            "enable = true\nnodes = [\"n1.lan\", \"n2.lan\"]\nregistry = \"reg.lan:5000\"\n",
        )
        .unwrap();
        let docker: super::super::docker::Config =
            toml::from_str("[daemon]\ninsecure-registries = [\"reg.lan:5000\"]\n").unwrap();
        super::super::builds::apply(&mut t, &builds, &docker, &ctx).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        materialize(&t, root);
        let units = root.join("usr/lib/systemd/system");
        let host_units = std::path::Path::new("/usr/lib/systemd/system");
        assert!(
            host_units.join("sysinit.target").exists(),
            "the host's systemd units are missing; install Debian's systemd"
        );
        let cp = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", host_units.display()))
            .arg(&units)
            .status()
            .unwrap();
        assert!(cp.success());
        std::fs::write(
            units.join("docker.service"),
            "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/bin/dockerd\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                units.join("docker.service"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        let written = [
            r"srv-hc1\x2dbackup.mount",
            SERVICE,
            TIMER,
            super::super::cleanup::SERVICE,
            super::super::cleanup::TIMER,
            super::super::builds::SERVICE,
        ];
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg("verify").arg(format!("--root={}", root.display()));
        for u in written {
            // materialize() adds owner bits for the test's own access; give the unit its
            // mode from the tree back.
            let id = t
                .lookup(format!("etc/systemd/system/{u}").as_bytes())
                .unwrap();
            assert_eq!(t.node(id).meta.perm, 0o644, "{u}");
            let f = root.join("etc/systemd/system").join(u);
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            cmd.arg(format!("/etc/systemd/system/{u}"));
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("oracle systemd-analyze is missing ({e}); install Debian's systemd")
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "systemd-analyze verify: {}\n{err}",
            out.status
        );
        // The oracle does object to a broken unit.
        let bad = root.join("etc/systemd/system").join(TIMER);
        std::fs::write(&bad, "[Timer]\nOnCalendar=not a calendar\n").unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(format!("/etc/systemd/system/{TIMER}"))
            .output()
            .unwrap();
        assert!(
            !out.status.success() || !out.stderr.is_empty(),
            "a broken timer passed"
        );
    }

    #[test]
    fn mount_unit_names_match_systemd_escape() {
        for p in [
            "/mnt/backup",
            "/srv/hc1-backup",
            "/mnt/.x/a_b",
            "/.hidden/b-c",
        ] {
            let out = std::process::Command::new("systemd-escape")
                .args(["--path", "--suffix=mount", p])
                .output()
                .unwrap_or_else(|e| {
                    panic!("oracle systemd-escape is missing ({e}); install Debian's systemd")
                });
            assert!(out.status.success());
            let want = String::from_utf8(out.stdout).unwrap();
            assert_eq!(mount_unit_name(p).unwrap(), want.trim(), "{p}");
        }
    }
}
