//! `/etc/fstab` of the node: the root filesystem on the SSD and the microSD card's FAT
//! partition mounted at `/boot`, so kernel updates land where U-Boot reads them.
//!
//! `fstab(5)`: six whitespace-separated fields. The boot partition is named by its FAT volume
//! id, which `blkid` shows as the UUID `XXXX-XXXX` (upper-case hex, high half first); the
//! caller passes the id it wrote into the FAT boot sector. `nofail` keeps a node booting when
//! the card's partition cannot be mounted. `/boot` stays in the tree as an empty 0755 mount
//! point (the import routes its files to the FAT image).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::{EditContext, check_one_line, mkdir_p, write_file};
use crate::tree::Tree;
use crate::values::is_word;

pub const FSTAB: &str = "etc/fstab";

/// The `[fstab]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Apply this section. Default true; `false` leaves the rootfs's `/etc/fstab` as it is.
    #[serde(skip_serializing_if = "super::is_true")]
    pub enable: bool,
    /// Root device. Default `/dev/sda1` (the HC1's SATA SSD).
    pub root_device: String,
    /// Root mount options. Default `rw,relatime`.
    pub root_options: String,
    /// Mount the boot partition at `/boot`. Default true.
    pub boot: bool,
    /// Boot mount options. Default `rw,relatime,fmask=0077,dmask=0077,nofail`.
    pub boot_options: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            root_device: "/dev/sda1".into(),
            root_options: "rw,relatime".into(),
            boot: true,
            boot_options: "rw,relatime,fmask=0077,dmask=0077,nofail".into(),
        }
    }
}

/// A FAT volume id as blkid shows it (`1234-ABCD`).
pub fn fat_uuid(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xffff)
}

fn check_field(field: &str, v: &str) -> Result<()> {
    check_one_line(field, v)?;
    if v.is_empty() || v.contains(char::is_whitespace) || v.contains('#') {
        bail!("fstab.{field} = {v:?} must be one word without spaces or `#`");
    }
    Ok(())
}

/// Whether vfat mount options keep every file root's alone (`fmask`/`umask` with no bits for
/// group and others; `dmask` too, or `umask`).
fn private_masks(opts: &str) -> bool {
    let mask = |key: &str| {
        opts.split(',')
            .filter_map(|o| o.strip_prefix(key))
            .filter_map(|v| u32::from_str_radix(v, 8).ok())
            .next_back()
    };
    let umask = mask("umask=");
    let ok = |m: Option<u32>| m.or(umask).is_some_and(|m| m & 0o077 == 0o077);
    ok(mask("fmask=")) && ok(mask("dmask="))
}

/// The text of `/etc/fstab`.
pub fn render(cfg: &Config, boot_volume_id: u32) -> Result<String> {
    check_field("root_device", &cfg.root_device)?;
    check_field("root_options", &cfg.root_options)?;
    let mut s = format!(
        "# Written by hc1img: <file system> <dir> <type> <options> <dump> <pass>\n\
         {} / ext4 {} 0 1\n",
        cfg.root_device, cfg.root_options
    );
    if cfg.boot {
        check_field("boot_options", &cfg.boot_options)?;
        s.push_str(&format!(
            "UUID={} /boot vfat {} 0 2\n",
            fat_uuid(boot_volume_id),
            cfg.boot_options
        ));
    }
    Ok(s)
}

/// Apply the `[fstab]` section; `boot_volume_id` is the FAT volume id of the boot partition.
///
/// `grow_root` adds `x-systemd.growfs` to the root's options (see [`super::firstboot`]).
pub fn apply(
    tree: &mut Tree,
    cfg: &Config,
    ctx: &EditContext,
    boot_volume_id: u32,
    grow_root: bool,
) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    let mut cfg = cfg.clone();
    if grow_root && !cfg.root_options.split(',').any(|o| o == "x-systemd.growfs") {
        cfg.root_options.push_str(",x-systemd.growfs");
    }
    let cfg = &cfg;
    if cfg.boot && !ctx.card_actions.borrow().is_empty() && !private_masks(&cfg.boot_options) {
        ctx.warn(format!(
            "fstab.boot_options = {:?} lets other users read /boot, where the card's seeded \
             secrets wait until they are moved: add fmask=0077,dmask=0077",
            cfg.boot_options
        ));
    }
    let s = render(cfg, boot_volume_id)?;
    write_file(tree, ctx, FSTAB, s, 0o644, 0, 0)?;
    if cfg.boot {
        mkdir_p(tree, ctx, "boot", 0o755, 0, 0, true)?;
        let id = tree.lookup(b"boot");
        if let Some(id) = id
            && tree.children(id).next().is_some()
        {
            ctx.note("fstab: /boot in the rootfs is not empty; the mounted FAT partition hides it");
        }
    }
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "fstab";

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        for (k, v) in [
            ("root_device", &self.root_device),
            ("root_options", &self.root_options),
            ("boot_options", &self.boot_options),
        ] {
            if !is_word(v) || v.contains('#') {
                let msg = format!("{v:?}: one word without spaces or '#'");
                return Err(at.err(&["fstab", k], &msg));
            }
        }
        Ok(())
    }

    fn apply(
        &self,
        tree: &mut Tree,
        all: &Sections,
        ctx: &EditContext,
        inputs: &EditInputs,
    ) -> Result<()> {
        let grow_root = all.firstboot.enable && all.firstboot.grow_root;
        apply(tree, self, ctx, inputs.boot_volume_id, grow_root)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    #[test]
    fn private_masks_need_no_group_or_other_bits() {
        assert!(super::private_masks("rw,fmask=0077,dmask=0077,nofail"));
        assert!(super::private_masks("umask=077"));
        assert!(super::private_masks("umask=022,fmask=0177,dmask=0077"));
        assert!(!super::private_masks(
            "rw,relatime,fmask=0022,dmask=0022,nofail"
        ));
        assert!(!super::private_masks("fmask=0077"));
        assert!(!super::private_masks("rw"));
    }

    use super::*;
    use crate::edit::testutil::*;

    #[test]
    fn writes_fstab_and_mount_point() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx, 0x1a2b_3c4d, false).unwrap();
        let want = "# Written by hc1img: <file system> <dir> <type> <options> <dump> <pass>\n\
                    /dev/sda1 / ext4 rw,relatime 0 1\n\
                    UUID=1A2B-3C4D /boot vfat rw,relatime,fmask=0077,dmask=0077,nofail 0 2\n";
        assert_file(&t, FSTAB, want.as_bytes(), 0o644, 0, 0);
        assert_dir(&t, "boot", 0o755, 0, 0);

        // libmount (findmnt) reads it as we mean it.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fstab");
        std::fs::write(&f, want).unwrap();
        let out = Command::new("findmnt")
            .args(["--tab-file"])
            .arg(&f)
            .args(["-n", "-r", "-o", "SOURCE,TARGET,FSTYPE,OPTIONS,FREQ,PASSNO"])
            .output()
            .expect("oracle findmnt (util-linux) is missing");
        assert!(out.status.success(), "{out:?}");
        let got = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines,
            [
                "/dev/sda1 / ext4 rw,relatime 0 1",
                "UUID=1A2B-3C4D /boot vfat rw,relatime,fmask=0077,dmask=0077,nofail 0 2"
            ]
        );
    }

    #[test]
    fn options_and_errors() {
        assert_eq!(fat_uuid(0x0000_00ff), "0000-00FF");
        let c = Config {
            boot: false,
            root_device: "PARTUUID=0b3f6a8e-0001-4c3a-8d5e-123456789abc".into(),
            ..Config::default()
        };
        assert_eq!(
            render(&c, 0).unwrap(),
            "# Written by hc1img: <file system> <dir> <type> <options> <dump> <pass>\n\
             PARTUUID=0b3f6a8e-0001-4c3a-8d5e-123456789abc / ext4 rw,relatime 0 1\n"
        );
        let c = Config {
            root_options: "rw, noatime".into(),
            ..Config::default()
        };
        assert!(render(&c, 0).is_err());
    }
}
