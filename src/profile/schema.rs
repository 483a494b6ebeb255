//! The typed profile, board and lock-file schemas (serde), with their defaults.
//!
//! Every table denies unknown keys. The node's sections (`[system]`, `[users]`, … `[swarm]`,
//! `[overlays]`) are not defined here: each is the `Config` type of its module in
//! [`crate::sections`], whose registry lists them, so there is one definition of each field and
//! its default. This file holds the image-level tables (`name`, `board`, `[source]`,
//! `[rootfs]`, `[boot]`, `[secrets]`, `[packages]`), the board file and the lock file.
//! The user-facing description is `docs/profiles.md`; keep both in step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::size::{Bytes, Size};

/// The image-level part of a profile as written (one file, or the merge of an `extends`
/// chain; the loader takes the sections' tables out first, into [`crate::sections::Sections`]).
/// Relative paths have already been resolved against the file that declared them.
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
    /// `[packages]`: extra packages installed at build time ([`crate::packages::Config`]).
    #[serde(default)]
    pub packages: Option<crate::packages::Config>,
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

/// ext4 feature sets: the writer's own type (`full`, the default, or `conservative`).
pub use crate::ext4::FeatureLevel as Features;

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
    /// Kernel modules the root device needs in the initramfs (names as modprobe takes them),
    /// for kernels that build them as modules; the build puts them (and what they depend on)
    /// into the card's initramfs and refuses a card without them (`src/kernel.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_modules: Vec<String>,
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
