//! I/O scheduler: a udev rule choosing the block-layer scheduler of the microSD card and the
//! SSD (`mq-deadline` on blk-mq kernels; the old name was `deadline`).
//!
//! Follows `udev(7)` rule syntax: match keys `==`, the sysfs attribute assignment
//! `ATTR{queue/scheduler}=`. Only whole disks (`ENV{DEVTYPE}=="disk"`) have a queue.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::{EditContext, write_file};
use crate::tree::Tree;
use crate::values::IoScheduler;

/// Path of the rule this edit writes.
pub const RULE: &str = "etc/udev/rules.d/60-ioscheduler.rules";

/// The `[io_scheduler]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Write the rule. Default true.
    pub enable: bool,
    /// Scheduler name as the kernel lists it in `queue/scheduler`. Default `mq-deadline`.
    pub scheduler: IoScheduler,
    /// Kernel device name patterns (udev globs). Default `["mmcblk[0-9]*", "sd[a-z]*"]`.
    pub devices: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            scheduler: IoScheduler::MqDeadline,
            devices: vec!["mmcblk[0-9]*".into(), "sd[a-z]*".into()],
        }
    }
}

/// Apply the `[io_scheduler]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    let s = &cfg.scheduler;
    if cfg.devices.is_empty() {
        bail!("io_scheduler.devices is empty; list kernel names like \"sd[a-z]*\"");
    }
    let mut rule =
        String::from("# Written by hc1img: I/O scheduler for the microSD card and the SSD.\n");
    for d in &cfg.devices {
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"[]*?-_|".contains(&b))
        {
            bail!("io_scheduler.devices: {d:?} is not a kernel name pattern like \"sd[a-z]*\"");
        }
        rule.push_str(&format!(
            "ACTION==\"add|change\", SUBSYSTEM==\"block\", ENV{{DEVTYPE}}==\"disk\", \
             KERNEL==\"{d}\", ATTR{{queue/scheduler}}=\"{s}\"\n"
        ));
    }
    write_file(tree, ctx, RULE, rule, 0o644, 0, 0)
}

impl Section for Config {
    const NAME: &'static str = "io_scheduler";

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        let glob = |d: &str| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"[]*?-_|".contains(&b))
        };
        if self.devices.is_empty() {
            return Err(at.err(
                &["io_scheduler", "devices"],
                &"expected a non-empty list of kernel name globs like \"sd[a-z]*\"",
            ));
        }
        for (i, d) in self.devices.iter().enumerate() {
            if !glob(d) {
                let msg = format!(
                    "[{i}] {d:?}: expected a kernel name glob like \"sd[a-z]*\" (letters, digits, []*?-_|)"
                );
                return Err(at.err(&["io_scheduler", "devices"], &msg));
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

    #[test]
    fn writes_the_rule() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert_file(
            &t,
            RULE,
            b"# Written by hc1img: I/O scheduler for the microSD card and the SSD.\n\
ACTION==\"add|change\", SUBSYSTEM==\"block\", ENV{DEVTYPE}==\"disk\", KERNEL==\"mmcblk[0-9]*\", ATTR{queue/scheduler}=\"mq-deadline\"\n\
ACTION==\"add|change\", SUBSYSTEM==\"block\", ENV{DEVTYPE}==\"disk\", KERNEL==\"sd[a-z]*\", ATTR{queue/scheduler}=\"mq-deadline\"\n",
            0o644,
            0,
            0,
        );
        assert_dir(&t, "etc/udev/rules.d", 0o755, 0, 0);
    }

    #[test]
    fn rejects_injection() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let c = Config {
            devices: vec!["sd\"x".into()],
            ..Config::default()
        };
        assert!(apply(&mut t, &c, &ctx).is_err());
    }
}
