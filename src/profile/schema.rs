//! The typed profile, board and lock-file schemas (serde), with their defaults.
//!
//! Every table denies unknown keys. The node-configuration sections (`[system]`, `[users]`,
//! `[ssh]`, `[mail]`, `[journald]`, `[io_scheduler]`, `[mirrorlist]`, `[docker]`, `[cron]`,
//! `[backup]`, `[cleanup]`, `[builds]`, `[fstab]`, `[overlays]`) are not defined here: their schema is the `Config` struct of the
//! edit that consumes them ([`crate::rootfs::edits`]), so there is one definition of each
//! field and its default. This file holds the image-level sections (`[source]`, `[rootfs]`,
//! `[boot]`, `[secrets]`, `[swarm]`), the board file and the lock file.
//! The user-facing description is `docs/profiles.md`; keep both in step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::size::{Bytes, Size};
use crate::rootfs::edits;

/// A profile file as written (one file, or the merge of an `extends` chain). Relative paths have
/// already been resolved against the file that declared them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub name: String,
    pub board: PathBuf,
    #[serde(default)]
    pub source: Option<RawSource>,
    #[serde(default)]
    pub rootfs: Rootfs,
    #[serde(default)]
    pub boot: Boot,
    #[serde(default)]
    pub secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    pub swarm: Option<Swarm>,
    /// `[packages]`: extra packages installed at build time ([`crate::packages::Config`]).
    #[serde(default)]
    pub packages: Option<crate::packages::Config>,
    // The node-configuration sections: the edits' own `Config` types are the schema.
    #[serde(default)]
    pub system: edits::system::Config,
    #[serde(default)]
    pub users: edits::users::Config,
    #[serde(default)]
    pub ssh: edits::ssh::Config,
    #[serde(default)]
    pub mail: edits::mail::Config,
    #[serde(default)]
    pub journald: edits::journald::Config,
    #[serde(default)]
    pub io_scheduler: edits::io_scheduler::Config,
    #[serde(default)]
    pub mirrorlist: edits::mirrorlist::Config,
    #[serde(default)]
    pub docker: edits::docker::Config,
    #[serde(default)]
    pub cron: edits::cron::Config,
    #[serde(default)]
    pub firstboot: edits::firstboot::Config,
    #[serde(default)]
    pub backup: edits::backup::Config,
    #[serde(default)]
    pub cleanup: edits::cleanup::Config,
    #[serde(default)]
    pub builds: edits::builds::Config,
    #[serde(default)]
    pub fstab: edits::fstab::Config,
    #[serde(default)]
    pub overlays: edits::overlays::Config,
}

impl RawProfile {
    /// The node sections as [`edits::Sections`] (moved out; the rest of `self` stays usable).
    pub fn take_sections(&mut self) -> edits::Sections {
        edits::Sections {
            system: std::mem::take(&mut self.system),
            users: std::mem::take(&mut self.users),
            ssh: std::mem::take(&mut self.ssh),
            mail: std::mem::take(&mut self.mail),
            journald: std::mem::take(&mut self.journald),
            io_scheduler: std::mem::take(&mut self.io_scheduler),
            mirrorlist: std::mem::take(&mut self.mirrorlist),
            docker: std::mem::take(&mut self.docker),
            cron: std::mem::take(&mut self.cron),
            firstboot: std::mem::take(&mut self.firstboot),
            backup: std::mem::take(&mut self.backup),
            cleanup: std::mem::take(&mut self.cleanup),
            builds: std::mem::take(&mut self.builds),
            fstab: std::mem::take(&mut self.fstab),
            overlays: std::mem::take(&mut self.overlays),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub url: String,
    #[serde(default)]
    pub mirrors: Vec<String>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
    /// Put the value into the image (private builds only). Default false: the image carries
    /// no value and the node takes it from its card (`hc1img seed`).
    #[serde(default)]
    pub bake: bool,
}

/// `[rootfs]`: the ext4 root filesystem on the SSD image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// Filesystem (and partition) size, or `auto`.
    #[serde(default)]
    pub size: Size,
    /// Which ext4 feature set to write.
    #[serde(default)]
    pub features: Features,
    /// Filesystem label (at most 16 bytes).
    #[serde(default = "default_label")]
    pub label: String,
    /// One inode per this many bytes (like `mke2fs -i`).
    #[serde(default = "default_bytes_per_inode")]
    pub bytes_per_inode: u32,
}

fn default_label() -> String {
    "root".to_string()
}

fn default_bytes_per_inode() -> u32 {
    16384
}

impl Default for Rootfs {
    fn default() -> Self {
        Rootfs {
            size: Size::Auto,
            features: Features::Full,
            label: default_label(),
            bytes_per_inode: default_bytes_per_inode(),
        }
    }
}

/// ext4 feature sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Features {
    /// What current mke2fs writes by default for ext4 (extents, flex_bg, metadata_csum, 64bit…).
    #[default]
    Full,
    /// A smaller set old kernels and tools all understand.
    Conservative,
}

/// `[boot]`: kernel command line knobs rendered into `boot.txt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// `root=` device: a path like `/dev/sda1`, `PARTUUID=…`/`UUID=…`/`LABEL=…`, or the word
    /// `partuuid` (use the SSD image's deterministic partition GUID). Default: the board's
    /// `root_device`.
    #[serde(default)]
    pub root: Option<String>,
    /// `rootdelay=` seconds; 0 = omitted.
    #[serde(default)]
    pub rootdelay: u32,
    /// Add `fsck.mode=force fsck.repair=yes`.
    #[serde(default = "yes")]
    pub fsck_force: bool,
    /// Add `usb-storage.quirks=152d:0578:u` (JMS578 bridge without UAS).
    #[serde(default = "yes")]
    pub uas_quirk: bool,
    /// Extra kernel arguments, appended verbatim in order.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Consoles (`console=` arguments); default: the board's.
    #[serde(default)]
    pub console: Option<Vec<String>>,
    /// A fixed MAC address (`aa:bb:cc:dd:ee:ff`) set as U-Boot's `${macaddr}` in the card's
    /// `boot.scr`, for boards whose `boot_txt` uses `{set_macaddr}` (not the HC1: its RTL8153
    /// keeps its own MAC).
    #[serde(default)]
    pub macaddr: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            root: None,
            rootdelay: 0,
            fsck_force: true,
            uas_quirk: true,
            extra_args: Vec::new(),
            console: None,
            macaddr: None,
        }
    }
}

/// `[swarm]`: how the node joins the Docker swarm at first boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    pub role: SwarmRole,
    /// Managers to join, `host` or `host:port` (port 2377 by default).
    #[serde(default)]
    pub managers: Vec<crate::values::Endpoint>,
    /// `--advertise-addr` (an address or an interface name such as `eth0`).
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Name of the secret holding the join token (required for `manager` and `worker`).
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Wait for a synchronised clock before joining (`systemd-time-wait-sync.service`): the
    /// HC1 has no RTC and swarm's mutual TLS fails with a clock in 1970. Default true.
    #[serde(default = "default_true")]
    pub wait_for_time_sync: bool,
    /// Docker engine labels (`daemon.json` `labels`, `key=value`), for placement constraints
    /// (`node.labels` is manager-side; these are `engine.labels`). A card's
    /// `hc1img seed --label` adds to or overrides them at first boot.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmRole {
    /// `docker swarm init`: the first manager.
    Init,
    /// Join as a manager.
    Manager,
    /// Join as a worker.
    Worker,
}

/// The board file (`profiles/boards/*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// `[a-z0-9-]+`.
    pub name: String,
    /// Arch Linux ARM architecture (`armv7h`).
    pub arch: String,
    /// Default `console=` arguments, in order (the last one gets `/dev/console`).
    pub consoles: Vec<String>,
    /// Default `root=`.
    pub root_device: String,
    /// U-Boot hush script template; `{bootargs}` is ours, `${…}` is U-Boot's.
    pub boot_txt: String,
    /// The microSD card layout.
    pub sd: SdLayout,
}

/// `[sd]` of a board file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdLayout {
    /// First sector (512 bytes) of the FAT boot partition.
    pub first_sector: u64,
    /// Size of the boot partition.
    pub partition_size: Bytes,
    /// Where U-Boot keeps its saved environment; must lie before `first_sector`.
    #[serde(default)]
    pub env_area: Option<SectorRange>,
    /// Bootloader blobs from the tarball's `/boot`, written raw at these sectors (may be
    /// empty for boards whose firmware does not read the card raw, e.g. QEMU).
    pub blobs: Vec<Blob>,
    /// A `/boot` shell script whose `dd … seek=N` lines must agree with `blobs`.
    #[serde(default)]
    pub fusing_script: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectorRange {
    pub sector: u64,
    pub sectors: u64,
}

/// Where one bootloader blob goes on the card (the disk layer's own type).
pub use crate::disk::blobs::BlobSlot as Blob;

/// `hc1img.lock`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Pins keyed by source URL.
    #[serde(default)]
    pub pins: BTreeMap<String, Pin>,
    /// Package pins by profile name (`[packages.NAME]`), written by `hc1img lock` for
    /// profiles with `[packages]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, crate::packages::LockedSet>,
}

/// One pinned tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// The tarball's detached OpenPGP signature (binary, base64), checked when the file enters
    /// the cache: upstream replaces the `.sig` of a "latest" tarball, the lock keeps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Fingerprint of the primary key that made `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}
