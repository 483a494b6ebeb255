//! Checks of a [`Board`] against what only the tarball knows: the bootloader blobs' real
//! lengths, and the `dd … seek=N` lines of the package's own fusing script (for the HC1,
//! `uboot-odroid-xu3`'s `sd_fusing.sh`), so a board file that disagrees with the bootloader it
//! installs is refused instead of producing a card that does not boot. The rules themselves
//! live in [`crate::disk::blobs`]; these methods feed them the board's layout. Also: reading a
//! board file with its load-time checks, and the `boot_txt` template.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::check::{R, Validator};
use super::load::is_name;
use super::node::{self, Sources};
use super::schema::Board;
use super::secrets;
use crate::disk::blobs;
use crate::values::is_word;

impl Board {
    /// Check that the blobs, with their real lengths in bytes (by file name), stay clear of the
    /// MBR, each other, the U-Boot environment area and the boot partition. A blob missing
    /// from `sizes` is an error (the tarball lacks it).
    pub fn check_blob_layout(&self, sizes: &BTreeMap<String, u64>) -> anyhow::Result<()> {
        let env = self.sd.env_area.as_ref().map(|e| (e.sector, e.sectors));
        blobs::check_layout(&self.sd.blobs, sizes, self.sd.first_sector, env)
            .map_err(|e| anyhow::anyhow!("board {}: {e}", self.name))
    }

    /// Check that the fusing script writes each blob at the sector the board file says.
    pub fn check_fusing_script(&self, script: &str) -> anyhow::Result<()> {
        let name = self.sd.fusing_script.as_deref().unwrap_or("fusing script");
        let seeks =
            blobs::parse_sd_fusing(script).map_err(|e| anyhow::anyhow!("/boot/{name}: {e}"))?;
        blobs::compare_with_board(&self.sd.blobs, &seeks)
            .map_err(|e| anyhow::anyhow!("/boot/{name} disagrees with board {}: {e}", self.name))
    }
}

/// Fill the board's `boot_txt` placeholders (`{bootargs}`, `{set_macaddr}`, and the
/// profile's `{name}` and `{board}`); U-Boot's own `${name}` stay.
pub(crate) fn render_template(
    tpl: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    crate::template::render_with(tpl, value, BOOT_TXT_VARS)
}

/// Whether a board's `boot_txt` (already checked to render) uses the placeholder `{name}`.
pub(super) fn uses_placeholder(boot_txt: &str, name: &str) -> bool {
    render_template(boot_txt, &|n| {
        Some(if n == name {
            "\u{1}".to_string()
        } else {
            String::new()
        })
    })
    .is_ok_and(|s| s.contains('\u{1}'))
}

/// The placeholders a board's `boot_txt` may use.
pub(crate) const BOOT_TXT_VARS: &[&str] = &["bootargs", "set_macaddr", "name", "board"];

impl Validator<'_> {
    pub(super) fn consoles(&self, path: &[&str], cs: &[String]) -> R {
        if cs.is_empty() {
            return Err(self.err(path, "expected at least one console"));
        }
        for c in cs {
            if !is_word(c) {
                return Err(self.err(
                    path,
                    format!("{c:?}: a console is like \"ttySAC2,115200n8\""),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn board(&self, path: &Path) -> anyhow::Result<Board> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.err(
                &["board"],
                format!(
                    "board file {} cannot be read: {}",
                    path.display(),
                    secrets::io_reason(&e)
                ),
            )
        })?;
        let mut sources = Sources::default();
        let idx = sources.add(path, text);
        let doc = node::parse(&sources, idx)?;
        let board: Board = node::from_node(&doc, &sources).map_err(anyhow::Error::msg)?;
        let v = Validator {
            sources: &sources,
            root: &doc,
        };
        if !is_name(&board.name) {
            return Err(v.err(
                &["name"],
                format!("invalid board name {:?}: use [a-z0-9-]", board.name),
            ));
        }
        if board.arch.is_empty()
            || !board
                .arch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(v.err(
                &["arch"],
                format!("{:?}: expected an architecture like \"armv7h\"", board.arch),
            ));
        }
        v.consoles(&["consoles"], &board.consoles)?;
        if !is_word(&board.root_device) {
            return Err(v.err(&["root_device"], "expected a device like \"/dev/sda1\""));
        }
        for (i, m) in board.root_modules.iter().enumerate() {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(v.err(
                    &["root_modules"],
                    format!("[{i}] {m:?}: expected a kernel module name like \"usb-storage\""),
                ));
            }
        }
        render_template(&board.boot_txt, &|n| {
            if BOOT_TXT_VARS.contains(&n) {
                Some(String::new())
            } else {
                None
            }
        })
        .map_err(|e| {
            v.err(
                &["boot_txt"],
                format!("{e}; U-Boot's own variables are written ${{name}}"),
            )
        })?;
        if !uses_placeholder(&board.boot_txt, "bootargs") {
            return Err(v.err(&["boot_txt"], "the template never uses {bootargs}"));
        }
        let sd = &board.sd;
        if sd.partition_size.0 == 0 || !sd.partition_size.0.is_multiple_of(512) {
            return Err(v.err(
                &["sd", "partition_size"],
                "must be a positive multiple of 512 bytes",
            ));
        }
        if sd.first_sector < 2
            || sd
                .first_sector
                .checked_add(sd.partition_size.0 / 512)
                .is_none_or(|e| e > u64::from(u32::MAX))
        {
            return Err(v.err(
                &["sd", "first_sector"],
                "the partition must start after sector 1 and end within 2 TiB (MBR)",
            ));
        }
        if let Some(env) = &sd.env_area
            && (env.sector == 0
                || env.sectors == 0
                || env.sector.saturating_add(env.sectors) > sd.first_sector)
        {
            return Err(v.err(
                &["sd", "env_area"],
                format!(
                    "sectors {}..{} must be non-empty, after the MBR and before first_sector ({})",
                    env.sector,
                    env.sector.saturating_add(env.sectors),
                    sd.first_sector
                ),
            ));
        }
        let mut sectors = BTreeSet::new();
        let mut files = BTreeSet::new();
        for (i, bl) in sd.blobs.iter().enumerate() {
            let simple = !bl.file.is_empty()
                && bl.file != "."
                && bl.file != ".."
                && !bl.file.contains(['/', '\\', '\0']);
            if !simple {
                return Err(v.err(
                    &["sd", "blobs"],
                    format!("[{i}] file {:?}: expected a file name in /boot", bl.file),
                ));
            }
            if bl.sector == 0 || bl.sector >= sd.first_sector {
                return Err(v.err(&["sd", "blobs"], format!("[{i}] {} at sector {}: blobs go between the MBR (sector 0) and first_sector ({})", bl.file, bl.sector, sd.first_sector)));
            }
            if let Some(env) = &sd.env_area
                && (env.sector..env.sector + env.sectors).contains(&bl.sector)
            {
                return Err(v.err(
                    &["sd", "blobs"],
                    format!(
                        "[{i}] {} at sector {} starts inside env_area",
                        bl.file, bl.sector
                    ),
                ));
            }
            if !sectors.insert(bl.sector) || !files.insert(bl.file.clone()) {
                return Err(v.err(
                    &["sd", "blobs"],
                    format!(
                        "[{i}] {} at sector {}: file or sector used twice",
                        bl.file, bl.sector
                    ),
                ));
            }
        }
        let ordered: Vec<u64> = sd.blobs.iter().map(|b| b.sector).collect();
        if ordered.windows(2).any(|w| w[0] >= w[1]) {
            return Err(v.err(
                &["sd", "blobs"],
                "list the blobs in increasing sector order",
            ));
        }
        if let Some(f) = &sd.fusing_script
            && (f.is_empty() || f.contains(['/', '\\', '\0']))
        {
            return Err(v.err(
                &["sd", "fusing_script"],
                format!("{f:?}: expected a file name in /boot"),
            ));
        }
        Ok(board)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_keeps_uboot_variables() {
        let out = render_template("a ${x} {bootargs} {{ ${y}", &|n| {
            (n == "bootargs").then(|| "B".to_string())
        });
        assert_eq!(out.ok().as_deref(), Some("a ${x} B { ${y}"));
        assert!(render_template("{nope}", &|_| None).is_err());
    }
}
