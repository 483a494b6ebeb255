//! The load-time checks of the image-level tables `[rootfs]` (the ext4 root's size, label and
//! inode ratio) and `[boot]` (the kernel command line's `root=`, arguments, consoles, MAC).

use super::board::uses_placeholder;
use super::check::{R, Validator};
use super::schema::{Board, RawProfile};
use super::size::Size;
use crate::values::is_word;

fn is_macaddr(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

impl Validator<'_> {
    /// Check `[rootfs]` and `[boot]` of `raw` for `board`.
    pub(super) fn image(&self, raw: &RawProfile, board: &Board) -> R {
        // rootfs.
        let rf = &raw.rootfs;
        if let Size::Bytes(b) = rf.size
            && (b < 16 << 20 || !b.is_multiple_of(4096))
        {
            return Err(self.err(
                &["rootfs", "size"],
                format!("{b} bytes: must be at least 16MiB and a multiple of 4096 (or \"auto\")"),
            ));
        }
        if rf.label.len() > 16 || rf.label.chars().any(|c| c.is_control()) {
            return Err(self.err(
                &["rootfs", "label"],
                format!("{:?}: at most 16 bytes, no control characters", rf.label),
            ));
        }
        if !(1024..=(64 << 20)).contains(&rf.bytes_per_inode) {
            return Err(self.err(
                &["rootfs", "bytes_per_inode"],
                format!("{}: must be between 1024 and 67108864", rf.bytes_per_inode),
            ));
        }

        // boot.
        let b = &raw.boot;
        if let Some(root) = &b.root {
            let ok = root == "partuuid"
                || (root.starts_with("/dev/") && root.len() > 5)
                || ["PARTUUID=", "UUID=", "LABEL=", "PARTLABEL="]
                    .iter()
                    .any(|p| root.len() > p.len() && root.starts_with(p));
            if !ok || !is_word(root) {
                return Err(self.err(
                    &["boot", "root"],
                    format!(
                        "{root:?}: expected \"partuuid\", a /dev/ path or PARTUUID=/UUID=/LABEL=…"
                    ),
                ));
            }
        }
        for (i, a) in b.extra_args.iter().enumerate() {
            if !is_word(a) {
                return Err(self.err(
                    &["boot", "extra_args"],
                    format!("[{i}] {a:?}: one kernel argument per element, without spaces, quotes or backslashes"),
                ));
            }
        }
        if let Some(cs) = &b.console {
            self.consoles(&["boot", "console"], cs)?;
        }
        if let Some(m) = &b.macaddr
            && !is_macaddr(m)
        {
            return Err(self.err(
                &["boot", "macaddr"],
                format!("{m:?}: expected a unicast MAC like \"02:1e:06:aa:bb:cc\""),
            ));
        }
        if b.macaddr.is_some() && !uses_placeholder(&board.boot_txt, "set_macaddr") {
            return Err(self.err(
                &["boot", "macaddr"],
                format!(
                    "board {} has no way to pass a MAC address (its boot_txt never uses \
                     {{set_macaddr}}; the HC1's RTL8153 keeps its own in its eFuse): remove macaddr",
                    board.name
                ),
            ));
        }
        Ok(())
    }
}
