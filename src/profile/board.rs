//! Checks of a [`Board`] against what only the tarball knows: the bootloader blobs' real
//! lengths, and the `dd … seek=N` lines of the package's own fusing script (for the HC1,
//! `uboot-odroid-xu3`'s `sd_fusing.sh`), so a board file that disagrees with the bootloader it
//! installs is refused instead of producing a card that does not boot. The rules themselves
//! live in [`crate::disk::blobs`]; these methods feed them the board's layout.

use std::collections::BTreeMap;

use super::schema::Board;
use crate::disk::blobs;

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
