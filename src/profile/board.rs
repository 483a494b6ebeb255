//! Checks of a [`Board`] against what only the tarball knows: the bootloader blobs' real
//! lengths, and the `dd … seek=N` lines of the package's own fusing script (for the HC1,
//! `uboot-odroid-xu3`'s `sd_fusing.sh`), so a board file that disagrees with the bootloader it
//! installs is refused instead of producing a card that does not boot.

use std::collections::BTreeMap;

use super::schema::Board;

/// Bytes per sector on the card.
pub const SECTOR: u64 = 512;

impl Board {
    /// Check that the blobs, with their real lengths in bytes (by file name), stay clear of each
    /// other, of the U-Boot environment area and of the boot partition. A blob missing from
    /// `sizes` is an error (the tarball lacks it).
    pub fn check_blob_layout(&self, sizes: &BTreeMap<String, u64>) -> anyhow::Result<()> {
        let mut spans: Vec<(u64, u64, String)> = Vec::new();
        for b in &self.sd.blobs {
            let len = *sizes.get(&b.file).ok_or_else(|| {
                anyhow::anyhow!(
                    "board {}: bootloader blob /boot/{} is not in the tarball",
                    self.name,
                    b.file
                )
            })?;
            let end = b.sector.saturating_add(len.div_ceil(SECTOR));
            spans.push((b.sector, end, format!("/boot/{}", b.file)));
        }
        if let Some(env) = &self.sd.env_area {
            spans.push((
                env.sector,
                env.sector.saturating_add(env.sectors),
                "the U-Boot environment area".to_string(),
            ));
        }
        spans.sort();
        for w in spans.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if a.1 > b.0 {
                anyhow::bail!(
                    "board {}: {} (sectors {}..{}) overlaps {} (from sector {})",
                    self.name,
                    a.2,
                    a.0,
                    a.1,
                    b.2,
                    b.0
                );
            }
        }
        if let Some(last) = spans.iter().max_by_key(|s| s.1)
            && last.1 > self.sd.first_sector
        {
            anyhow::bail!(
                "board {}: {} ends at sector {}, after the boot partition's first sector {}",
                self.name,
                last.2,
                last.1,
                self.sd.first_sector
            );
        }
        Ok(())
    }

    /// Check a fusing script's `dd if=FILE … seek=N` lines against `[sd] blobs`: every blob
    /// must be written by the script at the same sector, and the script must write no other
    /// file. `seek=$var` / `seek=${var}` use the variable's numeric assignments, ignoring
    /// those in an `if`/`else` branch that targets an eMMC boot partition (a branch that also
    /// assigns something ending in `boot0`, as upstream scripts do); the SD value must then be
    /// unique.
    pub fn check_fusing_script(&self, script: &str) -> anyhow::Result<()> {
        let name = self.sd.fusing_script.as_deref().unwrap_or("fusing script");
        // Numeric assignments per branch (a branch ends at if/elif/else/fi).
        let mut vars: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
        let mut branch: Vec<(String, u64, usize)> = Vec::new();
        let mut branch_is_emmc = false;
        let mut flush = |branch: &mut Vec<(String, u64, usize)>, emmc: &mut bool| {
            if !*emmc {
                for (k, v, line) in branch.drain(..) {
                    vars.entry(k).or_default().entry(v).or_insert(line);
                }
            }
            branch.clear();
            *emmc = false;
        };
        let mut dd_lines: Vec<(usize, String, String)> = Vec::new();
        for (i, raw) in script.lines().enumerate() {
            let line = strip_comment(raw).trim();
            let first = line.split_whitespace().next().unwrap_or("");
            if ["if", "elif", "else", "fi"].contains(&first.trim_end_matches(';')) {
                flush(&mut branch, &mut branch_is_emmc);
            }
            for tok in line.split([';', ' ', '\t']) {
                let Some((k, v)) = tok.split_once('=') else {
                    continue;
                };
                let is_var = !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !k.as_bytes()[0].is_ascii_digit();
                if !is_var {
                    continue;
                }
                let v = v.trim_matches('"');
                if v.ends_with("boot0") {
                    branch_is_emmc = true;
                }
                if let Ok(n) = v.parse::<u64>() {
                    branch.push((k.to_string(), n, i + 1));
                }
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if !words.contains(&"dd") {
                continue;
            }
            let arg = |key: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(key))
                    .map(|v| v.trim_matches('"'))
            };
            if let (Some(file), Some(seek)) = (arg("if="), arg("seek=")) {
                let file = file.rsplit('/').next().unwrap_or(file).to_string();
                dd_lines.push((i + 1, file, seek.to_string()));
            }
        }
        flush(&mut branch, &mut branch_is_emmc);

        let mut written: BTreeMap<String, (u64, usize)> = BTreeMap::new();
        for (line, file, seek) in dd_lines {
            let sector = match seek.parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    let var = seek
                        .trim_start_matches('$')
                        .trim_start_matches('{')
                        .trim_end_matches('}');
                    let values = vars.get(var).map(|m| m.keys().copied().collect::<Vec<_>>());
                    match values.as_deref() {
                        Some([n]) => *n,
                        Some(many) if !many.is_empty() => anyhow::bail!(
                            "{name}:{line}: cannot tell where `dd` writes {file}: {var} is set to {many:?} outside an eMMC branch"
                        ),
                        _ => anyhow::bail!(
                            "{name}:{line}: cannot tell where `dd` writes {file}: seek={seek} is not a number set in the script"
                        ),
                    }
                }
            };
            written.entry(file).or_insert((sector, line));
        }
        for b in &self.sd.blobs {
            match written.get(&b.file) {
                Some((s, _)) if *s == b.sector => {}
                Some((s, line)) => anyhow::bail!(
                    "{name}:{line}: writes {} at sector {s} but board {} says {}; fix [sd] blobs in the board file",
                    b.file,
                    self.name,
                    b.sector
                ),
                None => anyhow::bail!(
                    "{name} never writes {}, which board {} places at sector {}",
                    b.file,
                    self.name,
                    b.sector
                ),
            }
        }
        for (file, (s, line)) in &written {
            if !self.sd.blobs.iter().any(|b| &b.file == file) {
                anyhow::bail!(
                    "{name}:{line}: writes {file} at sector {s}, which board {} does not list in [sd] blobs",
                    self.name
                );
            }
        }
        Ok(())
    }
}

/// A shell line without its comment (a `#` at the start of a word; `${1##*/}` is no comment).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace() || c == ';';
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::schema::{Blob, SdLayout, SectorRange};
    use crate::profile::size::Bytes;

    fn hc1() -> Board {
        let blob = |f: &str, s| Blob {
            file: f.to_string(),
            sector: s,
        };
        Board {
            name: "odroid-hc1".into(),
            arch: "armv7h".into(),
            consoles: vec!["tty1".into()],
            root_device: "/dev/sda1".into(),
            boot_txt: "{bootargs}".into(),
            sd: SdLayout {
                first_sector: 8192,
                partition_size: Bytes(256 << 20),
                env_area: Some(SectorRange {
                    sector: 6272,
                    sectors: 32,
                }),
                blobs: vec![
                    blob("bl1.bin", 1),
                    blob("bl2.bin", 31),
                    blob("u-boot.bin", 63),
                    blob("tzsw.bin", 2111),
                ],
                fusing_script: Some("sd_fusing.sh".into()),
            },
        }
    }

    /// Shaped like the uboot-odroid-xu3 script: eMMC positions in the `if` branch, SD ones in
    /// the `else` branch.
    const SCRIPT: &str = r#"#!/usr/bin/bash
[ -d /sys/block/${1##*/}boot0 ] && emmc=1
if [ -n "$emmc" ]; then
    signed_bl1_position=0
    bl2_position=30
    uboot_position=62
    tzsw_position=2110
    device=$1boot0
else
    signed_bl1_position=1
    bl2_position=31
    uboot_position=63
    tzsw_position=2111
    device=$1
fi
# fuse
dd iflag=dsync oflag=dsync if=./bl1.bin of=$device seek=$signed_bl1_position
dd iflag=dsync oflag=dsync if=./bl2.bin of=$device seek=$bl2_position
dd iflag=dsync oflag=dsync if=./u-boot.bin of=$device seek=${uboot_position}
dd iflag=dsync oflag=dsync if=./tzsw.bin of=$device seek=2111
"#;

    /// The other common shape: SD positions first, an eMMC override after.
    const SCRIPT_SD_FIRST: &str = r#"#!/bin/sh
bl1=1; bl2=31
uboot=63
tzsw=2111
device=$1
if [ "$emmc" = "1" ]; then
    bl1=0; bl2=30; uboot=62; tzsw=2110
    device=/dev/${1##*/}boot0
fi
dd if=bl1.bin of=$device seek=$bl1
dd if=bl2.bin of=$device seek=$bl2
dd if=u-boot.bin of=$device seek=$uboot
dd if=tzsw.bin of=$device seek=$tzsw
"#;

    #[test]
    fn agreeing_script_passes() {
        let r = hc1().check_fusing_script(SCRIPT);
        assert!(r.is_ok(), "{r:?}");
        let r = hc1().check_fusing_script(SCRIPT_SD_FIRST);
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn disagreeing_script_is_named() {
        let bad = SCRIPT.replace("tzsw_position=2111", "tzsw_position=719");
        let bad = bad.replace("seek=2111", "seek=$tzsw_position");
        // A variable set twice on the SD path is ambiguous.
        let twice = SCRIPT.replace("device=$1\n", "device=$1\nbl2_position=32\n");
        let err2 = hc1()
            .check_fusing_script(&twice)
            .err()
            .map(|e| e.to_string());
        assert!(
            err2.as_deref()
                .is_some_and(|e| e.contains("bl2_position is set to [31, 32]")),
            "{err2:?}"
        );
        let err = hc1().check_fusing_script(&bad).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "sd_fusing.sh:20: writes tzsw.bin at sector 719 but board odroid-hc1 says 2111; fix [sd] blobs in the board file"
            )
        );
        let extra = format!("{SCRIPT}dd if=./extra.bin of=$device seek=3000\n");
        assert!(hc1().check_fusing_script(&extra).is_err());
        let missing = SCRIPT.replace("if=./bl2.bin", "if=./other.bin");
        assert!(hc1().check_fusing_script(&missing).is_err());
    }

    #[test]
    fn blob_lengths_are_checked() {
        let mut sizes: BTreeMap<String, u64> = [
            ("bl1.bin", 15360),
            ("bl2.bin", 16384),
            ("u-boot.bin", 1024 * 1024),
            ("tzsw.bin", 262144),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert!(hc1().check_blob_layout(&sizes).is_ok());
        // A bl1 one sector too long runs into bl2.
        sizes.insert("bl1.bin".into(), 15360 + 1);
        let err = hc1().check_blob_layout(&sizes).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "board odroid-hc1: /boot/bl1.bin (sectors 1..32) overlaps /boot/bl2.bin (from sector 31)"
            )
        );
        sizes.insert("bl1.bin".into(), 15360);
        sizes.insert("tzsw.bin".into(), 4 << 20);
        assert!(hc1().check_blob_layout(&sizes).is_err());
        sizes.remove("tzsw.bin");
        assert!(hc1().check_blob_layout(&sizes).is_err());
    }
}
