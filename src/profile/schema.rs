//! The typed profile, board and lock-file schemas (serde), with their defaults.
//!
//! Every table denies unknown keys; every node-configuration section is an optional table, so
//! later sections are added as new `#[serde(default)]` fields without touching old profiles.
//! The user-facing description is `docs/profiles.md`; keep both in step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::size::{Bytes, Size};

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
    pub users: Users,
    #[serde(default)]
    pub system: System,
    #[serde(default)]
    pub journald: Option<Journald>,
    #[serde(default)]
    pub docker: Option<Docker>,
    #[serde(default)]
    pub swarm: Option<Swarm>,
    #[serde(default)]
    pub hostname: Option<Hostname>,
    #[serde(default)]
    pub io_scheduler: Option<IoScheduler>,
    #[serde(default)]
    pub mail: Option<Mail>,
    #[serde(default)]
    pub cron: Option<Cron>,
    #[serde(default)]
    pub mirrorlist: Option<Mirrorlist>,
    #[serde(default)]
    pub overlays: Overlays,
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
    /// A fixed MAC address for the on-board Ethernet (`aa:bb:cc:dd:ee:ff`), baked into the
    /// card's `boot.scr`. Unset: U-Boot's `${macaddr}` from the card's saved environment.
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

/// `[users]`: accounts in the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Users removed from passwd/shadow/group (with their home directories).
    #[serde(default = "default_remove")]
    pub remove: Vec<String>,
    /// Name of a secret holding root's crypt(3) password hash (`mkpasswd -m sha-512`). Unset:
    /// root's password is locked (`!`), so the tarball's `root`/`root` never works.
    #[serde(default)]
    pub root_password_secret: Option<String>,
    /// Users added.
    #[serde(default)]
    pub add: Vec<UserAdd>,
}

fn default_remove() -> Vec<String> {
    vec!["alarm".to_string()]
}

impl Default for Users {
    fn default() -> Self {
        Users {
            remove: default_remove(),
            root_password_secret: None,
            add: Vec::new(),
        }
    }
}

/// `[[users.add]]`: one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAdd {
    pub name: String,
    pub uid: u32,
    /// Primary group id; default = `uid`, with a group named like the user.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Supplementary groups (must exist in the rootfs, e.g. `wheel`, `docker`).
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "default_shell")]
    pub shell: String,
    /// Home directory; default `/home/NAME`.
    #[serde(default)]
    pub home: Option<String>,
    /// Name of a secret holding the crypt(3) password hash; unset = password locked.
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Lines of `~/.ssh/authorized_keys` (public keys, not secrets).
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

fn default_shell() -> String {
    "/bin/bash".to_string()
}

/// `[system]`: settings systemd-firstboot would otherwise ask for on the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_locale")]
    pub locale: String,
    #[serde(default = "default_keymap")]
    pub keymap: String,
}

fn default_timezone() -> String {
    "UTC".to_string()
}
fn default_locale() -> String {
    "en_US.UTF-8".to_string()
}
fn default_keymap() -> String {
    "us".to_string()
}

impl Default for System {
    fn default() -> Self {
        System {
            timezone: default_timezone(),
            locale: default_locale(),
            keymap: default_keymap(),
        }
    }
}

/// `[journald]`: a drop-in in `/etc/systemd/journald.conf.d/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journald {
    #[serde(default)]
    pub storage: JournalStorage,
    /// `RuntimeMaxUse=` in journald's syntax (`50M`, `1G`, bytes).
    #[serde(default)]
    pub runtime_max_use: Option<String>,
    /// `SystemMaxUse=` in journald's syntax.
    #[serde(default)]
    pub system_max_use: Option<String>,
}

/// journald `Storage=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStorage {
    #[default]
    Volatile,
    Persistent,
    Auto,
    None,
}

/// `[docker]`: the Docker engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Docker {
    /// Enable `docker.service` (the engine is never started at build time).
    #[serde(default = "yes")]
    pub enable: bool,
    /// Written as `/etc/docker/daemon.json` (keys sorted).
    #[serde(default)]
    pub daemon: serde_json::Map<String, serde_json::Value>,
}

/// `[swarm]`: how the node joins the Docker swarm at first boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    pub role: SwarmRole,
    /// Managers to join, `host` or `host:port` (port 2377 by default).
    #[serde(default)]
    pub managers: Vec<String>,
    /// `--advertise-addr` (an address or an interface name such as `eth0`).
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Name of the secret holding the join token (required for `manager` and `worker`).
    #[serde(default)]
    pub token_secret: Option<String>,
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

/// `[hostname]`: set at first boot (never baked: many nodes share one image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostname {
    /// A fixed name, or a template with `{mac6}` (last 6 hex digits of the Ethernet MAC) or
    /// `{mac}` (all 12).
    pub name: String,
}

/// `[io_scheduler]`: a udev rule choosing the block I/O scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoScheduler {
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// udev `KERNEL==` globs the rule matches.
    #[serde(default = "default_sched_devices")]
    pub devices: Vec<String>,
}

fn default_scheduler() -> String {
    "mq-deadline".to_string()
}

fn default_sched_devices() -> Vec<String> {
    vec!["mmcblk[0-9]".to_string(), "sd[a-z]".to_string()]
}

/// `[mail]`: outgoing mail through a relay (ssmtp-style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    /// Relay `host:port`.
    pub mailhub: String,
    /// Where mail for root and system users goes.
    pub root: String,
    #[serde(default)]
    pub rewrite_domain: Option<String>,
    /// Implicit TLS to the relay.
    #[serde(default = "yes")]
    pub tls: bool,
    /// STARTTLS instead of implicit TLS.
    #[serde(default)]
    pub starttls: bool,
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Name of the secret holding the relay password.
    #[serde(default)]
    pub password_secret: Option<String>,
}

/// `[cron]`: jobs written to `/etc/cron.d/`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cron {
    #[serde(default)]
    pub jobs: Vec<CronJob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    /// File name under `/etc/cron.d/`.
    pub name: String,
    /// Five cron fields, or `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`/`@reboot`.
    pub schedule: String,
    #[serde(default = "default_cron_user")]
    pub user: String,
    pub command: String,
}

fn default_cron_user() -> String {
    "root".to_string()
}

/// `[mirrorlist]`: `/etc/pacman.d/mirrorlist`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirrorlist {
    /// `Server =` lines in order (`$arch`/`$repo` are pacman's variables).
    pub servers: Vec<String>,
}

/// `[overlays]`: directory trees copied over the rootfs, in order (later ones win).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Overlays {
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
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
}
