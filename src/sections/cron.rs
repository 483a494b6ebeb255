//! cron: enable the cron daemon (Arch's `cronie`) and install the profile's jobs as
//! `/etc/cron.d/` files, plus optional logrotate drop-ins.
//!
//! Job files follow the system crontab format of `crontab(5)` (cronie): five time fields (or
//! an `@daily`-style nickname), the user, the command. In a command an unescaped `%` means
//! newline, so it is refused here. logrotate drop-ins (`logrotate(8)`, `/etc/logrotate.d/`)
//! are copied verbatim.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::accounts::passwd_user;
use crate::edit::units::enable_unit;
use crate::edit::{EditContext, check_file_name, check_one_line, write_file};
use crate::tree::Tree;
use crate::values::is_user_name;
use crate::values::{CronSchedule, UnitName};
use std::collections::BTreeSet;

/// The `[cron]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Enable the cron unit. Default true.
    pub enable: bool,
    /// The cron daemon's unit. Default `cronie.service`.
    pub unit: UnitName,
    /// Target whose `.wants/` gets the unit. Default `multi-user.target`.
    pub wanted_by: UnitName,
    /// Jobs, one `/etc/cron.d/NAME` file each (`[[cron.job]]`, alias `[[cron.jobs]]`).
    #[serde(rename = "job", alias = "jobs")]
    pub jobs: Vec<Job>,
    /// logrotate drop-ins, one `/etc/logrotate.d/NAME` file each (`[[cron.logrotate]]`).
    pub logrotate: Vec<Logrotate>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            unit: UnitName::known("cronie.service"),
            wanted_by: UnitName::known("multi-user.target"),
            jobs: Vec::new(),
            logrotate: Vec::new(),
        }
    }
}

/// One cron job.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Job {
    /// File name in `/etc/cron.d/` (letters, digits, `_`, `-`). Required.
    pub name: String,
    /// Five cron time fields (`30 3 * * *`) or a nickname (`@daily`). Required.
    pub schedule: Option<CronSchedule>,
    /// User the command runs as; must exist in the rootfs. Default `root`.
    pub user: Option<String>,
    /// The command (one line; write `\%` for a literal `%`). Required.
    pub command: String,
}

/// One logrotate drop-in.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Logrotate {
    /// File name in `/etc/logrotate.d/`. Required.
    pub name: String,
    /// The drop-in's text. Required.
    pub content: String,
}

/// Check a cron command: one line, not empty, every `%` escaped as `\%`.
pub fn check_command(field: &str, c: &str) -> Result<()> {
    check_one_line(field, c)?;
    if c.trim().is_empty() {
        bail!("{field} is empty");
    }
    let b = c.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'%' && (i == 0 || b[i - 1] != b'\\') {
            bail!("{field}: cron turns an unescaped `%` into a newline; write `\\%`");
        }
    }
    Ok(())
}

/// Apply the `[cron]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if cfg.enable && !enable_unit(tree, ctx, &cfg.unit, &cfg.wanted_by)? {
        if cfg.jobs.is_empty() {
            ctx.note(format!(
                "cron.unit {:?} is not installed in the rootfs; cron not enabled",
                cfg.unit
            ));
        } else {
            bail!(
                "cron.unit {:?} is not installed in the rootfs, so the profile's cron jobs \
                 would never run; add cronie to the rootfs or name the right unit",
                cfg.unit
            );
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for j in &cfg.jobs {
        let f = format!("cron.job {:?}", j.name);
        check_file_name("cron.job.name", &j.name, false)?;
        if !names.insert(j.name.as_str()) {
            bail!("{f}: listed twice");
        }
        let Some(schedule) = &j.schedule else {
            bail!("{f}: missing required key `schedule`");
        };
        check_command(&format!("{f}: command"), &j.command)?;
        let user = j.user.as_deref().unwrap_or("root");
        if passwd_user(tree, user)
            .with_context(|| format!("{f}: cannot look user {user:?} up"))?
            .is_none()
        {
            bail!("{f}: user {user:?} does not exist in the rootfs");
        }
        let body = format!(
            "# Written by hc1img: cron job {:?}.\nSHELL=/bin/bash\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/bin\n{} {user} {}\n",
            j.name,
            schedule.split_whitespace().collect::<Vec<_>>().join(" "),
            j.command.trim()
        );
        write_file(
            tree,
            ctx,
            &format!("etc/cron.d/{}", j.name),
            body,
            0o644,
            0,
            0,
        )?;
    }
    for l in &cfg.logrotate {
        check_file_name("cron.logrotate.name", &l.name, true)?;
        if l.content.trim().is_empty() {
            bail!("cron.logrotate {:?}: content is empty", l.name);
        }
        let mut body = l.content.clone();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        write_file(
            tree,
            ctx,
            &format!("etc/logrotate.d/{}", l.name),
            body,
            0o644,
            0,
            0,
        )?;
    }
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "cron";

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        let paths: &[&[&str]] = &[&["cron", "job"], &["cron", "jobs"]];
        let mut seen = BTreeSet::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let here = |k: &str, msg: String| at.item_err(paths, i, k, &msg);
            for (k, v) in [
                ("name", j.name.as_str()),
                ("schedule", j.schedule.as_deref().unwrap_or("")),
                ("command", j.command.as_str()),
            ] {
                if v.trim().is_empty() {
                    return Err(here(k, format!("missing required key `{k}`")));
                }
            }
            if check_file_name("name", &j.name, false).is_err() {
                return Err(here(
                    "name",
                    format!(
                        "{:?}: cron.d file names use letters, digits, '_' and '-' only",
                        j.name
                    ),
                ));
            }
            if !seen.insert(j.name.clone()) {
                return Err(here("name", format!("job {:?} is defined twice", j.name)));
            }
            if let Some(u) = &j.user
                && !is_user_name(u)
            {
                return Err(here("user", format!("{u:?}: not a user name")));
            }
            if let Err(e) = check_command("command", &j.command) {
                return Err(here("command", format!("{e}")));
            }
        }
        let paths: &[&[&str]] = &[&["cron", "logrotate"]];
        let mut seen = BTreeSet::new();
        for (i, l) in self.logrotate.iter().enumerate() {
            let here = |k: &str, msg: String| at.item_err(paths, i, k, &msg);
            if check_file_name("name", &l.name, true).is_err() {
                return Err(here(
                    "name",
                    format!(
                        "{:?}: a file name of letters, digits, '_', '-', '.'",
                        l.name
                    ),
                ));
            }
            if !seen.insert(l.name.clone()) {
                return Err(here("name", format!("{:?} is defined twice", l.name)));
            }
            if l.content.trim().is_empty() {
                return Err(here("content", "missing or empty".to_string()));
            }
        }
        Ok(())
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

    fn job() -> Job {
        Job {
            name: "docker-cleanup".into(),
            schedule: Some("30  3 * * *".parse().unwrap()),
            user: None,
            command: "/usr/local/bin/docker-cleanup > /dev/null 2>&1".into(),
        }
    }

    #[test]
    fn enables_cronie_and_writes_jobs() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let c = Config {
            jobs: vec![
                job(),
                Job {
                    name: "stamp".into(),
                    schedule: Some("@daily".parse().unwrap()),
                    user: Some("http".into()),
                    command: "date +\\%F > /tmp/stamp".into(),
                },
            ],
            logrotate: vec![Logrotate {
                name: "backup".into(),
                content: "/var/log/backup.log {\n  weekly\n  rotate 4\n}".into(),
            }],
            ..Config::default()
        };
        apply(&mut t, &c, &ctx).unwrap();
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/cronie.service",
            "/usr/lib/systemd/system/cronie.service",
        );
        assert_file(
            &t,
            "etc/cron.d/docker-cleanup",
            b"# Written by hc1img: cron job \"docker-cleanup\".\nSHELL=/bin/bash\n\
PATH=/usr/local/sbin:/usr/local/bin:/usr/bin\n\
30 3 * * * root /usr/local/bin/docker-cleanup > /dev/null 2>&1\n",
            0o644,
            0,
            0,
        );
        assert!(text(&t, "etc/cron.d/stamp").ends_with("@daily http date +\\%F > /tmp/stamp\n"));
        assert_file(
            &t,
            "etc/logrotate.d/backup",
            b"/var/log/backup.log {\n  weekly\n  rotate 4\n}\n",
            0o644,
            0,
            0,
        );
    }

    #[test]
    fn invalid_jobs_are_refused() {
        let bad = [
            (
                Job {
                    schedule: None,
                    ..job()
                },
                "missing required key `schedule`",
            ),
            (
                Job {
                    command: "date +%F".into(),
                    ..job()
                },
                "unescaped `%`",
            ),
            (
                Job {
                    user: Some("alice".into()),
                    ..job()
                },
                "\"alice\" does not exist",
            ),
            (
                Job {
                    name: "a.b".into(),
                    ..job()
                },
                "plain file name",
            ),
            (
                Job {
                    command: "a\nb".into(),
                    ..job()
                },
                "one line",
            ),
        ];
        for (j, want) in bad {
            let (mut t, secrets) = arch_tree();
            let ctx = EditContext::new(TS, &secrets);
            let c = Config {
                jobs: vec![j],
                ..Config::default()
            };
            let e = apply(&mut t, &c, &ctx).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn missing_unit_is_a_note_without_jobs_and_an_error_with_them() {
        let (mut t, secrets) = arch_tree();
        t.remove(b"usr/lib/systemd/system/cronie.service");
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert!(
            ctx.take_notes()
                .iter()
                .any(|n| n.contains("cronie.service"))
        );
        let c = Config {
            jobs: vec![job()],
            ..Config::default()
        };
        assert!(apply(&mut t, &c, &ctx).is_err());
    }
}
