//! journald: keep the journal in RAM and small, to spare the node's flash.
//!
//! Writes the drop-in `/etc/systemd/journald.conf.d/hc1img.conf` (`journald.conf(5)`: drop-ins
//! in `journald.conf.d/` override `/etc/systemd/journald.conf`).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditContext, check_one_line, write_file};
use crate::tree::Tree;

/// Path of the drop-in this edit writes.
pub const DROP_IN: &str = "etc/systemd/journald.conf.d/hc1img.conf";

/// The `[journald]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Write the drop-in at all. Default true.
    pub enable: bool,
    /// `Storage=`: `volatile`, `persistent`, `auto` or `none`. Default `volatile`.
    pub storage: String,
    /// `RuntimeMaxUse=` (size with K/M/G/T suffix). Default `50M`.
    pub runtime_max_use: String,
    /// `SystemMaxUse=`, only written when set (matters for persistent storage).
    pub system_max_use: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            storage: "volatile".into(),
            runtime_max_use: "50M".into(),
            system_max_use: None,
        }
    }
}

fn check_size(field: &str, v: &str) -> Result<()> {
    let digits = v.trim_end_matches(['K', 'M', 'G', 'T', 'P', 'E']);
    let ok = !digits.is_empty()
        && digits.len() + 1 >= v.len()
        && digits.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        bail!("journald.{field} = {v:?} is not a size like `50M`");
    }
    Ok(())
}

/// Apply the `[journald]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    if !["volatile", "persistent", "auto", "none"].contains(&cfg.storage.as_str()) {
        bail!(
            "journald.storage = {:?} must be volatile, persistent, auto or none",
            cfg.storage
        );
    }
    check_one_line("journald.storage", &cfg.storage)?;
    check_size("runtime_max_use", &cfg.runtime_max_use)?;
    let mut s = format!(
        "# Written by hc1img: journal in RAM, capped, to spare the flash.\n[Journal]\n\
         Storage={}\nRuntimeMaxUse={}\n",
        cfg.storage, cfg.runtime_max_use
    );
    if let Some(m) = &cfg.system_max_use {
        check_size("system_max_use", m)?;
        s.push_str(&format!("SystemMaxUse={m}\n"));
    }
    write_file(tree, ctx, DROP_IN, s, 0o644, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn writes_the_drop_in() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert_file(
            &t,
            DROP_IN,
            b"# Written by hc1img: journal in RAM, capped, to spare the flash.\n[Journal]\n\
              Storage=volatile\nRuntimeMaxUse=50M\n",
            0o644,
            0,
            0,
        );
        assert_dir(&t, "etc/systemd/journald.conf.d", 0o755, 0, 0);
    }

    #[test]
    fn rejects_bad_values() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        for c in [
            Config {
                storage: "ram".into(),
                ..Config::default()
            },
            Config {
                runtime_max_use: "50 M".into(),
                ..Config::default()
            },
            Config {
                runtime_max_use: "50M\nStorage=persistent".into(),
                ..Config::default()
            },
        ] {
            assert!(apply(&mut t, &c, &ctx).is_err(), "{c:?}");
        }
        assert!(t.lookup(DROP_IN.as_bytes()).is_none());
    }
}
