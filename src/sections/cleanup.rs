//! Clean-up: a daily prune of the node's stopped containers, dangling images and unused
//! volumes, with an opt-out label (target.md, "Data on the cluster"; issue 9).
//!
//! Writes `/usr/local/sbin/hc1-docker-cleanup` (from `assets/ops/`), its configuration
//! `/etc/hc1/cleanup.conf`, and `hc1-docker-cleanup.service` + `.timer` (`systemd.timer(5)`)
//! enabled in `timers.target`. The script runs `docker container|image|volume prune --force
//! --filter label!=LABEL` (the prune filters of the Docker CLI reference) and logs what each
//! step freed to the journal.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::backup::{shell_conf, timer_unit};
use super::{EditInputs, Locator, Section, Sections};
use crate::edit::units::{ETC_UNITS, install_unit};
use crate::edit::{EditContext, mkdir_p, write_file};
use crate::tree::Tree;
use crate::values::{CalendarSpec, TimeSpan};

/// The clean-up script, as shipped in the image.
pub const SCRIPT: &str = include_str!("../../assets/ops/hc1-docker-cleanup");

pub const BIN: &str = "usr/local/sbin/hc1-docker-cleanup";
pub const CONF: &str = "etc/hc1/cleanup.conf";
pub const SERVICE: &str = "hc1-docker-cleanup.service";
pub const TIMER: &str = "hc1-docker-cleanup.timer";

/// The `[cleanup]` profile section. Nothing is written unless `enable = true`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Install and enable the clean-up timer. Default false.
    pub enable: bool,
    /// `OnCalendar=` of the timer. Default `*-*-* 04:00:00` (after the backup).
    pub schedule: CalendarSpec,
    /// `RandomizedDelaySec=`. Default `30min`.
    pub randomized_delay: TimeSpan,
    /// Containers, images and volumes with this label are kept. Default `hc1.keep`.
    pub keep_label: String,
    /// `dangling` (untagged), `unused` (also tagged images no container uses) or `none`.
    /// Default `dangling`.
    pub images: String,
    /// `all` (named and anonymous unused volumes), `anonymous` or `none`. Default `all`.
    pub volumes: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: false,
            schedule: CalendarSpec::known("*-*-* 04:00:00"),
            randomized_delay: TimeSpan::known("30min"),
            keep_label: "hc1.keep".into(),
            images: "dangling".into(),
            volumes: "all".into(),
        }
    }
}

/// Check the section's values (no tree needed).
pub fn check(cfg: &Config) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    let label_ok = !cfg.keep_label.is_empty()
        && cfg
            .keep_label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-=/".contains(&b));
    if !label_ok {
        bail!(
            "cleanup.keep_label = {:?} must be a label key (or key=value) of letters, digits, \
             `.`, `_`, `-`, `/`",
            cfg.keep_label
        );
    }
    if !["dangling", "unused", "none"].contains(&cfg.images.as_str()) {
        bail!(
            "cleanup.images = {:?} must be \"dangling\", \"unused\" or \"none\"",
            cfg.images
        );
    }
    if !["all", "anonymous", "none"].contains(&cfg.volumes.as_str()) {
        bail!(
            "cleanup.volumes = {:?} must be \"all\", \"anonymous\" or \"none\"",
            cfg.volumes
        );
    }
    Ok(())
}

/// Apply the `[cleanup]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    check(cfg)?;
    if !cfg.enable {
        return Ok(());
    }
    mkdir_p(tree, ctx, "etc/hc1", 0o755, 0, 0, false)?;
    write_file(tree, ctx, BIN, SCRIPT, 0o750, 0, 0)?;
    let conf = shell_conf(
        "the profile's [cleanup] section; read by hc1-docker-cleanup",
        &[
            ("HC1_CLEANUP_KEEP_LABEL", cfg.keep_label.clone()),
            ("HC1_CLEANUP_IMAGES", cfg.images.clone()),
            ("HC1_CLEANUP_VOLUMES", cfg.volumes.clone()),
        ],
    )?;
    write_file(tree, ctx, CONF, conf, 0o644, 0, 0)?;
    let service = format!(
        "# Written by hc1img: see hc1-docker-cleanup --help.\n[Unit]\n\
         Description=Prune stopped containers, dangling images and unused volumes\n\
         Requires=docker.service\nAfter=docker.service hc1-volume-backup.service\n\n\
         [Service]\nType=oneshot\nExecStart=/{BIN}\nNice=10\nIOSchedulingClass=idle\n"
    );
    install_unit(tree, ctx, ETC_UNITS, SERVICE, service, None)?;
    let timer = timer_unit(
        "Daily clean-up of the Docker engine",
        &cfg.schedule,
        &cfg.randomized_delay,
    );
    install_unit(tree, ctx, ETC_UNITS, TIMER, timer, Some("timers.target"))?;
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "cleanup";
    const ASSETS: &'static [(&'static str, &'static str)] = &[("ops/hc1-docker-cleanup", SCRIPT)];

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        check(self).map_err(|e| at.err(&["cleanup"], &e))
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
    fn writes_script_conf_and_enabled_timer() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg: Config =
            toml::from_str("enable = true\nkeep_label = \"keep\"\nvolumes = \"anonymous\"\n")
                .unwrap();
        apply(&mut t, &cfg, &ctx).unwrap();
        assert_file(&t, BIN, SCRIPT.as_bytes(), 0o750, 0, 0);
        assert_file(
            &t,
            CONF,
            b"# Written by hc1img from the profile's [cleanup] section; read by \
              hc1-docker-cleanup.\nHC1_CLEANUP_KEEP_LABEL='keep'\nHC1_CLEANUP_IMAGES='dangling'\n\
              HC1_CLEANUP_VOLUMES='anonymous'\n",
            0o644,
            0,
            0,
        );
        let timer = text(&t, "etc/systemd/system/hc1-docker-cleanup.timer");
        assert!(
            timer.contains("OnCalendar=*-*-* 04:00:00\nRandomizedDelaySec=30min\n"),
            "{timer}"
        );
        assert_symlink(
            &t,
            "etc/systemd/system/timers.target.wants/hc1-docker-cleanup.timer",
            "/etc/systemd/system/hc1-docker-cleanup.timer",
        );
        assert!(
            text(&t, "etc/systemd/system/hc1-docker-cleanup.service")
                .contains("ExecStart=/usr/local/sbin/hc1-docker-cleanup\n")
        );
    }

    #[test]
    fn disabled_writes_nothing_and_bad_values_are_refused() {
        let (mut t, secrets) = arch_tree();
        let before = format!("{t:?}");
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert_eq!(before, format!("{t:?}"));
        for b in [
            "enable = true\nimages = \"everything\"",
            "enable = true\nvolumes = \"named\"",
            "enable = true\nkeep_label = \"a b\"",
            "enable = true\nkeep_label = \"\"",
            "enable = true\nschedule = \"\"",
            "enable = true\nrandomized_delay = \"-1\"",
        ] {
            // Refused when read (a value's type) or when applied.
            let refused = match toml::from_str::<Config>(b) {
                Ok(cfg) => apply(&mut t, &cfg, &ctx).is_err(),
                Err(_) => true,
            };
            assert!(refused, "accepted: {b}");
        }
        assert_eq!(before, format!("{t:?}"));
    }
}
