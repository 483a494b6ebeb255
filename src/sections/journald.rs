//! journald: keep the journal in RAM and small, to spare the node's flash.
//!
//! Writes the drop-in `/etc/systemd/journald.conf.d/hc1img.conf` (`journald.conf(5)`: drop-ins
//! in `journald.conf.d/` override `/etc/systemd/journald.conf`).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{EditInputs, Section, Sections};
use crate::edit::{EditContext, write_file};
use crate::tree::Tree;
use crate::values::{JournaldSize, JournaldStorage};

/// Path of the drop-in this edit writes.
pub const DROP_IN: &str = "etc/systemd/journald.conf.d/hc1img.conf";

/// The `[journald]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Write the drop-in at all. Default true.
    pub enable: bool,
    /// `Storage=`: `volatile`, `persistent`, `auto` or `none`. Default `volatile`.
    pub storage: JournaldStorage,
    /// `RuntimeMaxUse=` (size with K/M/G/T suffix). Default `50M`.
    pub runtime_max_use: JournaldSize,
    /// `SystemMaxUse=`, only written when set (matters for persistent storage).
    pub system_max_use: Option<JournaldSize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            storage: JournaldStorage::Volatile,
            runtime_max_use: JournaldSize::known("50M"),
            system_max_use: None,
        }
    }
}

/// Apply the `[journald]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    // The values' syntax is their types' (crate::values): nothing can break the file.
    let mut s = format!(
        "# Written by hc1img: journal in RAM, capped, to spare the flash.\n[Journal]\n\
         Storage={}\nRuntimeMaxUse={}\n",
        cfg.storage, cfg.runtime_max_use
    );
    if let Some(m) = &cfg.system_max_use {
        s.push_str(&format!("SystemMaxUse={m}\n"));
    }
    write_file(tree, ctx, DROP_IN, s, 0o644, 0, 0)
}

impl Section for Config {
    const NAME: &'static str = "journald";

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
}
