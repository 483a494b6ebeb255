//! The Exynos bootloader blobs of the microSD: `bl1.bin`, `bl2.bin`, `u-boot.bin` and
//! `tzsw.bin`, written raw at fixed 512-byte sectors between the MBR and the first partition,
//! where the Exynos5422 iROM and each loader stage look for the next.
//!
//! The positions come from the board file ([`BlobSlot`]); the `uboot-odroid-xu3` package's own
//! `sd_fusing.sh` (Arch Linux ARM PKGBUILDs, `alarm/uboot-odroid-xu3/sd_fusing.sh`) is the
//! reference: [`parse_sd_fusing`] reads its SD-card branch (`dd ... seek=N`, with the
//! `*_position=N` variables it sets; the eMMC `boot0` branch is ignored) and
//! [`compare_with_board`] refuses a board file that disagrees with the package it boots.
//! [`check_layout`] refuses blobs that overlap each other, the MBR (sector 0), the first
//! partition or U-Boot's saved environment.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;

use anyhow::{Context, Result, bail, ensure};

use super::SECTOR;
use crate::sparse::write_at_zeroing;

/// Where one blob goes on the card.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSlot {
    /// File name of the blob in `/boot` of the rootfs, e.g. `bl1.bin`.
    pub file: String,
    /// First 512-byte sector it is written to.
    pub sector: u64,
    /// Largest size the slot allows, in sectors (`None`: bounded only by its neighbours).
    #[serde(default)]
    pub max_sectors: Option<u64>,
}

/// A sector range `[start, end)` occupied by something, for error messages.
struct Extent {
    what: String,
    start: u64,
    end: u64,
}

/// Refuse a layout where a blob overlaps the MBR, another blob, the first partition or the
/// U-Boot environment area, exceeds its slot's `max_sectors`, is missing or empty.
///
/// `blob_sizes` maps blob file names to their sizes in bytes; `env_area` is
/// `(first sector, sector count)` of U-Boot's saved environment.
pub fn check_layout(
    slots: &[BlobSlot],
    blob_sizes: &BTreeMap<String, u64>,
    first_partition_sector: u64,
    env_area: Option<(u64, u64)>,
) -> Result<()> {
    let mut blobs: Vec<Extent> = Vec::new();
    for s in slots {
        let Some(&size) = blob_sizes.get(&s.file) else {
            bail!(
                "blob {} (board slot at sector {}) was not found; the rootfs /boot must provide it",
                s.file,
                s.sector
            );
        };
        ensure!(size > 0, "blob {} is empty", s.file);
        let sectors = size.div_ceil(SECTOR);
        if let Some(max) = s.max_sectors {
            ensure!(
                sectors <= max,
                "blob {} is {size} bytes ({sectors} sectors) but its slot at sector {} allows \
                 only {max} sectors",
                s.file,
                s.sector
            );
        }
        ensure!(
            s.sector > 0,
            "blob {} at sector 0 would overwrite the MBR; blobs start at sector 1 or later",
            s.file
        );
        let end = s
            .sector
            .checked_add(sectors)
            .filter(|e| e.checked_mul(SECTOR).is_some())
            .with_context(|| format!("blob {} sector {} is out of range", s.file, s.sector))?;
        ensure!(
            end <= first_partition_sector,
            "blob {} (sectors {}..{end}) overlaps the first partition, which starts at sector \
             {first_partition_sector}",
            s.file,
            s.sector
        );
        if let Some((env_start, env_sectors)) = env_area {
            let env_end = env_start.saturating_add(env_sectors);
            ensure!(
                end <= env_start || s.sector >= env_end,
                "blob {} (sectors {}..{end}) overlaps the U-Boot environment area (sectors \
                 {env_start}..{env_end})",
                s.file,
                s.sector
            );
        }
        blobs.push(Extent {
            what: s.file.clone(),
            start: s.sector,
            end,
        });
    }
    if let Some((env_start, env_sectors)) = env_area {
        let env_end = env_start.saturating_add(env_sectors);
        ensure!(
            env_start > 0 && env_end <= first_partition_sector,
            "the U-Boot environment area (sectors {env_start}..{env_end}) overlaps the MBR or \
             the first partition at sector {first_partition_sector}"
        );
    }
    blobs.sort_by_key(|e| (e.start, e.end));
    for pair in blobs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        ensure!(
            a.end <= b.start,
            "blobs {} (sectors {}..{}) and {} (sectors {}..{}) overlap",
            a.what,
            a.start,
            a.end,
            b.what,
            b.start,
            b.end
        );
    }
    Ok(())
}

/// Write each slot's blob at its sector. Checks the slots among themselves and against the
/// MBR first (the partition and environment checks need [`check_layout`]).
pub fn write_blobs<D: AsRef<[u8]>>(
    file: &File,
    slots: &[BlobSlot],
    blobs: &BTreeMap<String, D>,
) -> Result<()> {
    let sizes: BTreeMap<String, u64> = blobs
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().len() as u64))
        .collect();
    check_layout(slots, &sizes, u64::MAX, None)?;
    for s in slots {
        let data = blobs
            .get(&s.file)
            .with_context(|| format!("blob {} is missing", s.file))?;
        write_at_zeroing(file, s.sector * SECTOR, data.as_ref())
            .with_context(|| format!("cannot write blob {} at sector {}", s.file, s.sector))?;
    }
    Ok(())
}

/// One `if` level while reading the script.
struct Frame {
    /// The condition tests for an eMMC (`$emmc`, `boot0`).
    emmc: bool,
    /// In the `then` part (false after `else`).
    in_then: bool,
}

fn unquote(s: &str) -> &str {
    s.trim_matches(|c| c == '"' || c == '\'')
}

/// Read the SD-card fusing steps of an `sd_fusing.sh`: every `dd if=FILE ... seek=N` outside
/// the eMMC branch, in script order, as `(file name, 512-byte sector)`. `seek` may be a number
/// or a `$var` / `${var}` set by a `var=N` line (also outside the eMMC branch); `bs=` other
/// than 512 scales it. `dd if=/dev/...` lines (clearing areas) are skipped.
pub fn parse_sd_fusing(script: &str) -> Result<Vec<(String, u64)>> {
    let mut vars: HashMap<String, u64> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    for (idx, raw) in script.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        for stmt in line.split(';') {
            let mut stmt = stmt.trim();
            if stmt.starts_with('#') {
                break;
            }
            if let Some(rest) = stmt.strip_prefix("then ") {
                stmt = rest.trim();
            }
            let is_emmc = |c: &str| c.contains("emmc") || c.contains("boot0");
            if stmt.starts_with("if ") || stmt.starts_with("if[") {
                stack.push(Frame {
                    emmc: is_emmc(stmt),
                    in_then: true,
                });
                continue;
            }
            if stmt.starts_with("elif ") {
                if let Some(top) = stack.last_mut() {
                    top.emmc = is_emmc(stmt);
                    top.in_then = true;
                }
                continue;
            }
            match stmt {
                "then" | "" => continue,
                "else" => {
                    if let Some(top) = stack.last_mut() {
                        top.in_then = false;
                    }
                    continue;
                }
                "fi" => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            if stack.iter().any(|f| f.emmc && f.in_then) {
                continue;
            }
            let tokens: Vec<&str> = stmt.split_whitespace().collect();
            // name=value assignment
            if tokens.len() == 1
                && let Some((name, value)) = tokens[0].split_once('=')
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                match unquote(value).parse::<u64>() {
                    Ok(v) => {
                        vars.insert(name.to_string(), v);
                    }
                    Err(_) => {
                        vars.remove(name);
                    }
                }
                continue;
            }
            let dd_at = match tokens.first() {
                Some(&"dd") => 1,
                Some(&"sudo") if tokens.get(1) == Some(&"dd") => 2,
                _ => continue,
            };
            let mut input = None;
            let mut seek = None;
            let mut bs = SECTOR;
            for t in &tokens[dd_at..] {
                if let Some(v) = t.strip_prefix("if=") {
                    input = Some(unquote(v));
                } else if let Some(v) = t.strip_prefix("seek=") {
                    seek = Some(unquote(v));
                } else if let Some(v) = t.strip_prefix("bs=") {
                    bs = unquote(v).parse().with_context(|| {
                        format!("sd_fusing.sh line {lineno}: cannot read bs={v} (expected bytes)")
                    })?;
                    ensure!(
                        bs > 0 && bs.is_multiple_of(SECTOR),
                        "sd_fusing.sh line {lineno}: bs={bs} is not a multiple of 512"
                    );
                }
            }
            let Some(input) = input else { continue };
            if input.starts_with("/dev/") {
                continue;
            }
            let file = input.rsplit('/').next().unwrap_or(input).to_string();
            let seek = match seek {
                None => 0,
                Some(v) => {
                    if let Some(name) = v.strip_prefix('$') {
                        let name = name.trim_start_matches('{').trim_end_matches('}');
                        *vars.get(name).with_context(|| {
                            format!(
                                "sd_fusing.sh line {lineno}: seek=${name} uses a variable that \
                                 is not set to a number outside the eMMC branch"
                            )
                        })?
                    } else {
                        v.parse().with_context(|| {
                            format!("sd_fusing.sh line {lineno}: cannot read seek={v}")
                        })?
                    }
                }
            };
            out.push((file, seek * (bs / SECTOR)));
        }
    }
    ensure!(
        !out.is_empty(),
        "sd_fusing.sh has no `dd if=FILE ... seek=N` line for an SD card"
    );
    Ok(out)
}

/// Refuse a board file whose blob slots disagree with `sd_fusing.sh` (as read by
/// [`parse_sd_fusing`]): every blob the script writes must be a slot at the same sector, and
/// every slot must be written by the script.
pub fn compare_with_board(slots: &[BlobSlot], fusing: &[(String, u64)]) -> Result<()> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for (file, sector) in fusing {
        if let Some(prev) = seen.insert(file, *sector)
            && prev != *sector
        {
            problems.push(format!(
                "sd_fusing.sh writes {file} twice, at sectors {prev} and {sector}"
            ));
        }
        match slots.iter().find(|s| &s.file == file) {
            None => problems.push(format!(
                "sd_fusing.sh writes {file} at sector {sector} but the board file has no slot \
                 for it"
            )),
            Some(s) if s.sector != *sector => problems.push(format!(
                "sd_fusing.sh writes {file} at sector {sector} but the board file says sector {}",
                s.sector
            )),
            Some(_) => {}
        }
    }
    for s in slots {
        if !seen.contains_key(s.file.as_str()) {
            problems.push(format!(
                "the board file places {} at sector {} but sd_fusing.sh does not write it",
                s.file, s.sector
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}; update the board file to match the package's sd_fusing.sh",
            problems.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SD/eMMC structure of Arch Linux ARM's `alarm/uboot-odroid-xu3/sd_fusing.sh`
    /// (abridged: the echo lines and license header are left out).
    const ALARM: &str = r#"#!/usr/bin/bash
if [ -z $1 ]
then
    echo "usage: ./sd_fusing.sh <SD Reader's device file>"
    exit 0
fi

if [ -d /sys/block/${1##*/}boot0 ]; then
    echo "$1 is an eMMC card, disabling ${1##*/}boot0 ro"
    if ! echo 0 > /sys/block/${1##*/}boot0/force_ro; then
	echo "Enabling r/w for $1boot0 failed"
	exit 1
    fi
    emmc=1
fi

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

#<BL1 fusing>
dd iflag=dsync oflag=dsync if=./bl1.bin of=$device seek=$signed_bl1_position
dd iflag=dsync oflag=dsync if=./bl2.bin of=$device seek=$bl2_position
dd iflag=dsync oflag=dsync if=./u-boot.bin of=$device seek=$uboot_position
dd iflag=dsync oflag=dsync if=./tzsw.bin of=$device seek=$tzsw_position
"#;

    pub(crate) fn hc1_slots() -> Vec<BlobSlot> {
        [
            ("bl1.bin", 1),
            ("bl2.bin", 31),
            ("u-boot.bin", 63),
            ("tzsw.bin", 2111),
        ]
        .iter()
        .map(|(f, s)| BlobSlot {
            file: f.to_string(),
            sector: *s,
            max_sectors: None,
        })
        .collect()
    }

    #[test]
    fn parses_alarm_script_sd_branch() {
        let got = parse_sd_fusing(ALARM).unwrap();
        let want: Vec<(String, u64)> = [
            ("bl1.bin", 1),
            ("bl2.bin", 31),
            ("u-boot.bin", 63),
            ("tzsw.bin", 2111),
        ]
        .iter()
        .map(|(f, s)| (f.to_string(), *s))
        .collect();
        assert_eq!(got, want);
        compare_with_board(&hc1_slots(), &got).unwrap();
    }

    #[test]
    fn literal_seek_bs_and_dev_zero() {
        let s = "dd if=/boot/bl1.bin of=$1 seek=1\n\
                 dd if=/dev/zero of=$1 seek=1231 count=32 bs=512\n\
                 sudo dd if=\"u-boot.bin\" of=$1 bs=4096 seek=8 conv=fsync\n";
        assert_eq!(
            parse_sd_fusing(s).unwrap(),
            vec![("bl1.bin".to_string(), 1), ("u-boot.bin".to_string(), 64)]
        );
    }

    #[test]
    fn parse_errors() {
        let e = parse_sd_fusing("echo nothing\n").unwrap_err().to_string();
        assert!(e.contains("no `dd"), "{e}");
        let e = parse_sd_fusing("if [ -n \"$emmc\" ]; then\n x=1\nfi\ndd if=a.bin seek=$x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4") && e.contains("$x"), "{e}");
    }

    #[test]
    fn board_disagreement_is_clear() {
        let script = ALARM.replace("tzsw_position=2111", "tzsw_position=2112");
        let fusing = parse_sd_fusing(&script).unwrap();
        let e = compare_with_board(&hc1_slots(), &fusing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tzsw.bin at sector 2112"), "{e}");
        assert!(e.contains("board file says sector 2111"), "{e}");
        assert!(e.contains("update the board file"), "{e}");
        let mut slots = hc1_slots();
        slots.push(BlobSlot {
            file: "extra.bin".into(),
            sector: 3000,
            max_sectors: None,
        });
        let e = compare_with_board(&slots, &parse_sd_fusing(ALARM).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra.bin at sector 3000"), "{e}");
    }

    fn sizes(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, s)| (k.to_string(), *s)).collect()
    }

    #[test]
    fn layout_checks() {
        let real = sizes(&[
            ("bl1.bin", 15 * 1024),
            ("bl2.bin", 14 * 1024),
            ("u-boot.bin", 1_000_000),
            ("tzsw.bin", 256 * 1024),
        ]);
        check_layout(&hc1_slots(), &real, 8192, Some((6272, 32))).unwrap();

        let mut big = real.clone();
        big.insert("bl2.bin".into(), 17 * 1024);
        let e = check_layout(&hc1_slots(), &big, 8192, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bl2.bin (sectors 31..65)") && e.contains("u-boot.bin"),
            "{e}"
        );

        let e = check_layout(&hc1_slots(), &real, 2500, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tzsw.bin") && e.contains("first partition"),
            "{e}"
        );

        // The Arch install guide's partition at 4096 would hold U-Boot's environment.
        let e = check_layout(&hc1_slots(), &real, 4096, Some((6272, 32)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("environment area (sectors 6272..6304)"), "{e}");

        // u-boot.bin of exactly 1 MiB ends right where tzsw.bin starts: allowed.
        let mut exact = real.clone();
        exact.insert("u-boot.bin".into(), 1024 * 1024);
        check_layout(&hc1_slots(), &exact, 8192, Some((6272, 32))).unwrap();

        let e = check_layout(&hc1_slots(), &real, 8192, Some((2500, 32)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tzsw.bin") && e.contains("environment"), "{e}");

        let mut slots = hc1_slots();
        slots[0].max_sectors = Some(8);
        let e = check_layout(&slots, &real, 8192, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("allows only 8 sectors"), "{e}");

        let mut slots = hc1_slots();
        slots[0].sector = 0;
        let e = check_layout(&slots, &real, 8192, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MBR"), "{e}");

        let e = check_layout(&hc1_slots(), &sizes(&[("bl1.bin", 1)]), 8192, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bl2.bin") && e.contains("not found"), "{e}");
    }
}
