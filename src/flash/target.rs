//! What `hc1img flash` may write to, decided before a byte is written, from what Linux
//! publishes about block devices and mounts:
//!
//! - sysfs (Documentation/ABI/stable/sysfs-block, sysfs-dev): `/sys/dev/block/MAJ:MIN` leads
//!   to the device's directory, with `dev`, `size` (512-byte sectors), `ro`, `removable`, a
//!   subdirectory per partition (holding a `partition` file), `holders/` (the device-mapper
//!   or md devices built on it) and, for a loop device, `loop/backing_file`;
//! - `/proc/self/mountinfo` (proc(5): field 3 `MAJ:MIN`, field 5 the mount point, the mount
//!   source after the ` - ` separator; `\ooo` octal escapes) and `/proc/swaps`.
//!
//! A block device is refused, whatever `--force` says, when it or anything on it (a
//! partition, a device-mapper or md device built on either, recursively) holds the running
//! system's root filesystem, is an active swap area, is mounted, or is held by another
//! device; or when it is read-only. Opening it with `O_EXCL` then makes the kernel refuse a
//! device that is in use in a way these files do not show. Without `--force` it is also
//! refused when it is larger than [`MAX_MEDIA_BYTES`], is a partition (an image is written
//! to the whole card; balena-etcher offers whole drives only), or looks like a system disk
//! the way balena-etcher and rpi-imager tell one (not removable, not on USB, not behind an
//! SD/MMC host, not a virtual device such as a loop device). A regular file is accepted (an image
//! file written from another), unless it is an active swap file or backs a loop device that
//! one of the refusals above applies to. Anything else (a directory, a character device, a
//! missing path) is refused.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::BinaryBytes;

/// The largest device written without `--force`: 2 TiB. The HC1 takes a microSD card and
/// one 2.5" SATA drive; anything larger is more likely a data or system disk.
pub const MAX_MEDIA_BYTES: u64 = 2 << 40;

/// A device number, `MAJ:MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

impl Dev {
    /// From a `dev_t` (`st_dev`, `st_rdev`).
    pub fn from_raw(raw: u64) -> Dev {
        Dev {
            major: libc::major(raw),
            minor: libc::minor(raw),
        }
    }

    /// From `MAJ:MIN` as sysfs and mountinfo write it.
    pub fn parse(s: &str) -> Option<Dev> {
        let (a, b) = s.trim().split_once(':')?;
        Some(Dev {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Field 3: the device of the mounted filesystem.
    pub dev: Dev,
    /// Field 5: where it is mounted (escapes resolved).
    pub at: String,
    /// The mount source (after ` - ` and the type), e.g. `/dev/sdb1`.
    pub source: String,
    /// The device the source names, when it is a block device (btrfs reports an anonymous
    /// device in field 3, so the source is the one that names the disk).
    pub source_dev: Option<Dev>,
}

/// One active swap area of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub name: String,
    /// The swap device, when it is a block device.
    pub dev: Option<Dev>,
    /// `(st_dev, st_ino)` of a swap file.
    pub file: Option<(u64, u64)>,
}

/// What the running system has mounted and in use, and where its sysfs is.
#[derive(Debug, Clone)]
pub struct Host {
    /// The sysfs mount (`/sys`).
    pub sys: PathBuf,
    pub mounts: Vec<Mount>,
    pub swaps: Vec<Swap>,
    /// The devices the root filesystem is on: `st_dev` of `/`, and the device and source of
    /// the mount at `/`.
    pub root: Vec<Dev>,
}

impl Host {
    /// The running system, read from `/sys`, `/proc/self/mountinfo` and `/proc/swaps`.
    pub fn current() -> Result<Host> {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .with_context(|| format!("{p}: cannot read (is /proc mounted?)"))
        };
        let block_dev = |p: &str| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.file_type().is_block_device())
                .map(|m| Dev::from_raw(m.rdev()))
        };
        let mut mounts = parse_mountinfo(&read("/proc/self/mountinfo")?);
        for m in &mut mounts {
            if m.source.starts_with('/') {
                m.source_dev = block_dev(&m.source);
            }
        }
        let swaps = parse_swaps(&read("/proc/swaps")?)
            .into_iter()
            .map(|name| {
                let meta = std::fs::metadata(&name).ok();
                Swap {
                    dev: block_dev(&name),
                    file: meta
                        .filter(|m| m.file_type().is_file())
                        .map(|m| (m.dev(), m.ino())),
                    name,
                }
            })
            .collect();
        let mut root = vec![Dev::from_raw(
            std::fs::metadata("/").context("/: cannot stat")?.dev(),
        )];
        for m in mounts.iter().filter(|m| m.at == "/") {
            root.push(m.dev);
            root.extend(m.source_dev);
        }
        Ok(Host {
            sys: PathBuf::from("/sys"),
            mounts,
            swaps,
            root,
        })
    }
}

/// Undo the `\ooo` octal escapes of mountinfo and /proc/swaps fields.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                u8::try_from(d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok()
            });
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of a `/proc/self/mountinfo` text (lines it cannot read are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Mount {
                dev: Dev::parse(fields.get(2)?)?,
                at: unescape_octal(fields.get(4)?),
                source: unescape_octal(fields.get(sep + 2)?),
                source_dev: None,
            })
        })
        .collect()
}

/// The file names of a `/proc/swaps` text.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape_octal)
        .collect()
}

/// A block device in sysfs.
#[derive(Debug, Clone)]
struct Block {
    /// The kernel's name (`sdb`, `loop3`, `mmcblk0p1`).
    name: String,
    /// Its sysfs directory, canonical.
    dir: PathBuf,
    dev: Dev,
    /// Reached through `holders/` from the device asked for: the name of the device it is
    /// built on.
    held_from: Option<String>,
}

fn read_attr(dir: &Path, attr: &str) -> Result<String> {
    let p = dir.join(attr);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .with_context(|| format!("{}: cannot read", p.display()))
}

fn block_at(dir: &Path, held_from: Option<String>) -> Result<Block> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", dir.display()))?;
    let dev = read_attr(&dir, "dev")?;
    Ok(Block {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dev: Dev::parse(&dev)
            .with_context(|| format!("{}/dev: {dev:?} is not MAJ:MIN", dir.display()))?,
        dir,
        held_from,
    })
}

/// The most devices [`family`] follows (a disk with its partitions and what is built on
/// them is a handful).
const MAX_FAMILY: usize = 4096;

/// `first`, its partitions, and every device built on any of them (`holders/`), recursively.
fn family(first: Block) -> Result<Vec<Block>> {
    let mut out: Vec<Block> = Vec::new();
    let mut queue = vec![first];
    while let Some(b) = queue.pop() {
        if out.iter().any(|o| o.dir == b.dir) {
            continue;
        }
        if out.len() >= MAX_FAMILY {
            bail!("{}: more than {MAX_FAMILY} devices built on it", b.name);
        }
        if let Ok(entries) = std::fs::read_dir(&b.dir) {
            for e in entries.flatten() {
                if e.path().join("partition").is_file() {
                    queue.push(block_at(&e.path(), b.held_from.clone())?);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(b.dir.join("holders")) {
            for e in entries.flatten() {
                queue.push(block_at(&e.path(), Some(b.name.clone()))?);
            }
        }
        out.push(b);
    }
    Ok(out)
}

/// How a block device is attached, as far as sysfs says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attachment {
    /// Its `removable` flag is set (card readers' media, some USB sticks).
    Removable,
    /// Below a USB device (`…/usbN/…`): USB sticks, card readers, SATA adapters.
    Usb,
    /// Below an SD/MMC host (`…/mmc_host/…` or `…/mmcN/…`): an SD card in a built-in reader.
    Mmc,
    /// Not on hardware (`/sys/devices/virtual/`): loop, device-mapper, md, zram.
    Virtual,
    /// None of these: a fixed internal disk.
    Fixed,
}

fn attachment(sys: &Path, b: &Block) -> Attachment {
    // A partition's flags are its disk's.
    let disk = if b.dir.join("partition").is_file() {
        b.dir.parent().unwrap_or(&b.dir).to_path_buf()
    } else {
        b.dir.clone()
    };
    let comps: Vec<String> = disk
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let virtual_root = sys.join("devices/virtual");
    if read_attr(&disk, "removable").is_ok_and(|r| r == "1") {
        Attachment::Removable
    } else if comps.iter().any(|c| c.starts_with("usb")) {
        Attachment::Usb
    } else if comps
        .iter()
        .any(|c| c == "mmc_host" || (c.starts_with("mmc") && !c.starts_with("mmcblk")))
    {
        Attachment::Mmc
    } else if disk.starts_with(&virtual_root)
        || virtual_root
            .canonicalize()
            .is_ok_and(|v| disk.starts_with(v))
    {
        Attachment::Virtual
    } else {
        Attachment::Fixed
    }
}

/// A block device that may be written: its kernel name and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub name: String,
    pub size: u64,
}

/// The refusals that `--force` does not lift, for the device `dev` and everything on it.
/// `shown` is how the user named it.
fn in_use(host: &Host, dev: Dev, shown: &str) -> Result<Block> {
    let dir = host.sys.join(format!("dev/block/{dev}"));
    let first = block_at(&dir, None).with_context(|| {
        format!("{shown}: block device {dev} has no sysfs entry (is /sys mounted?)")
    })?;
    let members = family(first.clone())?;
    let what = |b: &Block| {
        if b.dir == first.dir {
            shown.to_string()
        } else {
            format!("{shown}: {}", b.name)
        }
    };
    for b in &members {
        if host.root.contains(&b.dev) {
            bail!(
                "{} holds the running system's root filesystem (/); refusing to write to it",
                what(b)
            );
        }
    }
    for b in &members {
        if let Some(s) = host.swaps.iter().find(|s| s.dev == Some(b.dev)) {
            bail!(
                "{} is in use as swap ({}); refusing to write to it (swapoff {} first if it \
                 is the right device)",
                what(b),
                s.name,
                s.name
            );
        }
    }
    for b in &members {
        if let Some(m) = host
            .mounts
            .iter()
            .find(|m| m.dev == b.dev || m.source_dev == Some(b.dev))
        {
            bail!(
                "{} is mounted at {}; unmount it first if it is the right device (umount {})",
                what(b),
                m.at,
                m.at
            );
        }
    }
    if let Some(b) = members.iter().find(|b| b.held_from.is_some()) {
        bail!(
            "{} is in use by {} (device-mapper, LVM, LUKS or RAID built on {}); close it first \
             if it is the right device",
            shown,
            b.name,
            b.held_from.as_deref().unwrap_or("it")
        );
    }
    Ok(first)
}

/// Check the block device `dev`, named `shown` by the user: every refusal, the ones
/// `force` lifts included.
pub fn check_block(host: &Host, dev: Dev, shown: &str, force: bool) -> Result<Checked> {
    let b = in_use(host, dev, shown)?;
    if read_attr(&b.dir, "ro").is_ok_and(|r| r == "1") {
        bail!(
            "{shown} ({}) is read-only (a card's lock switch?); unlock it and try again",
            b.name
        );
    }
    let sectors = read_attr(&b.dir, "size")?;
    let size = sectors
        .parse::<u64>()
        .ok()
        .and_then(|s| s.checked_mul(512))
        .with_context(|| {
            format!(
                "{}/size: {sectors:?} is not a sector count",
                b.dir.display()
            )
        })?;
    if !force && size > MAX_MEDIA_BYTES {
        bail!(
            "{shown} ({}) is {}, more than the {} a card or SSD for an HC1 would be; give \
             --force if it is the disk to overwrite",
            b.name,
            BinaryBytes(size),
            BinaryBytes(MAX_MEDIA_BYTES)
        );
    }
    if !force && b.dir.join("partition").is_file() {
        let disk = b
            .dir
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        bail!(
            "{shown} ({}) is a partition of {disk}: an image is written to the whole card or \
             disk (/dev/{disk}); give --force to write into the partition",
            b.name
        );
    }
    if !force && attachment(&host.sys, &b) == Attachment::Fixed {
        bail!(
            "{shown} ({}, {}) is a fixed disk (not removable, not on USB or an SD card reader), \
             as a system disk is; give --force if it is the disk to overwrite",
            b.name,
            BinaryBytes(size)
        );
    }
    Ok(Checked { name: b.name, size })
}

/// Check a regular file named `shown` (`meta` its metadata): not an active swap file, and
/// not the backing file of a loop device that is in use.
pub fn check_file(host: &Host, meta: &std::fs::Metadata, shown: &str) -> Result<()> {
    let id = (meta.dev(), meta.ino());
    if let Some(s) = host.swaps.iter().find(|s| s.file == Some(id)) {
        bail!(
            "{shown} is an active swap file ({}); refusing to write to it",
            s.name
        );
    }
    let Ok(entries) = std::fs::read_dir(host.sys.join("block")) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let Ok(backing) = read_attr(&e.path(), "loop/backing_file") else {
            continue;
        };
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(&backing);
        let same = std::fs::metadata(backing).is_ok_and(|m| (m.dev(), m.ino()) == id);
        if !same {
            continue;
        }
        let dev = read_attr(&e.path(), "dev")?;
        let Some(dev) = Dev::parse(&dev) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        in_use(host, dev, &format!("/dev/{name}"))
            .with_context(|| format!("{shown} backs /dev/{name}, which is in use"))?;
    }
    Ok(())
}

/// The device or file `hc1img flash` writes to, checked and open for reading and writing.
#[derive(Debug)]
pub struct Target {
    /// As the user named it.
    pub path: PathBuf,
    pub file: File,
    /// The kernel's name and size of a block device; `None` for a regular file.
    pub block: Option<Checked>,
}

impl Target {
    /// Check `path` on the running system and open it. `not_these` are files it must not be
    /// (the image and its map).
    pub fn open(path: &Path, force: bool, not_these: &[&Path]) -> Result<Target> {
        let shown = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{shown}: no such device or file (lsblk lists the disks; to write an image \
                 file, create it first)"
            ),
            Err(e) => return Err(e).with_context(|| format!("{shown}: cannot stat")),
        };
        let ft = meta.file_type();
        for other in not_these {
            if std::fs::metadata(other)
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
            {
                bail!(
                    "{shown} is {} itself; name the device to write",
                    other.display()
                );
            }
        }
        if ft.is_dir() {
            bail!("{shown} is a directory, not a block device or an image file");
        }
        if !ft.is_block_device() && !ft.is_file() {
            let kind = if ft.is_char_device() {
                "a character device"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            bail!("{shown} is {kind}, not a block device or an image file");
        }
        let host = Host::current()?;
        if ft.is_file() {
            check_file(&host, &meta, &shown)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("{shown}: cannot open for writing"))?;
            return Ok(Target {
                path: path.to_path_buf(),
                file,
                block: None,
            });
        }
        let checked = check_block(&host, Dev::from_raw(meta.rdev()), &shown, force)?;
        // O_EXCL on a block device: the kernel refuses it while the device is mounted or
        // claimed (device-mapper, md, another exclusive opener), whatever the files above said.
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => bail!(
                "{shown} ({}) is in use: the kernel refuses exclusive access (mounted, or held \
                 by another program or device)",
                checked.name
            ),
            Err(e) => return Err(e).with_context(|| format!("{shown}: cannot open for writing")),
        };
        let size = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("{shown}: cannot find its size"))?;
        Ok(Target {
            path: path.to_path_buf(),
            file,
            block: Some(Checked {
                name: checked.name,
                size,
            }),
        })
    }

    /// Refuse an image of `len` bytes that does not fit; a regular file shorter than the image
    /// is extended to its length (the rest stays sparse).
    pub fn make_room(&self, len: u64, image: &Path) -> Result<()> {
        match &self.block {
            Some(b) if len > b.size => bail!(
                "{} needs {len} bytes ({}), {} ({}) holds {} ({}); use a larger card or disk",
                image.display(),
                BinaryBytes(len),
                self.path.display(),
                b.name,
                b.size,
                BinaryBytes(b.size)
            ),
            Some(_) => Ok(()),
            None => {
                let have = self
                    .file
                    .metadata()
                    .with_context(|| format!("{}: cannot stat", self.path.display()))?
                    .len();
                if have < len {
                    self.file.set_len(len).with_context(|| {
                        format!("{}: cannot extend to {len} bytes", self.path.display())
                    })?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree: `dev/block/MAJ:MIN` links to each device's directory.
    struct FakeSys {
        _tmp: tempfile::TempDir,
        sys: PathBuf,
    }

    impl FakeSys {
        fn new() -> FakeSys {
            let tmp = tempfile::tempdir().unwrap();
            let sys = tmp.path().join("sys");
            std::fs::create_dir_all(sys.join("dev/block")).unwrap();
            std::fs::create_dir_all(sys.join("block")).unwrap();
            FakeSys { _tmp: tmp, sys }
        }

        /// A disk at `path` (under sys/devices), `sectors` long.
        fn disk(&self, path: &str, dev: &str, sectors: u64, removable: bool) -> PathBuf {
            let dir = self.sys.join("devices").join(path);
            std::fs::create_dir_all(dir.join("holders")).unwrap();
            for (attr, v) in [
                ("dev", dev.to_string()),
                ("size", sectors.to_string()),
                ("ro", "0".into()),
                ("removable", if removable { "1" } else { "0" }.into()),
            ] {
                std::fs::write(dir.join(attr), format!("{v}\n")).unwrap();
            }
            symlink(&dir, self.sys.join("dev/block").join(dev)).unwrap();
            let name = dir.file_name().unwrap().to_owned();
            symlink(&dir, self.sys.join("block").join(name)).unwrap();
            dir
        }

        fn part(&self, disk: &Path, name: &str, dev: &str) -> PathBuf {
            let dir = disk.join(name);
            std::fs::create_dir_all(dir.join("holders")).unwrap();
            std::fs::write(dir.join("dev"), format!("{dev}\n")).unwrap();
            std::fs::write(dir.join("partition"), "1\n").unwrap();
            std::fs::write(dir.join("size"), "2048\n").unwrap();
            symlink(&dir, self.sys.join("dev/block").join(dev)).unwrap();
            dir
        }

        fn hold(&self, lower: &Path, upper: &Path) {
            let name = upper.file_name().unwrap();
            symlink(upper, lower.join("holders").join(name)).unwrap();
        }

        fn host(&self, mountinfo: &str, swaps: Vec<Swap>, root: &str) -> Host {
            Host {
                sys: self.sys.clone(),
                mounts: parse_mountinfo(mountinfo),
                swaps,
                root: vec![Dev::parse(root).unwrap()],
            }
        }
    }

    fn dev(s: &str) -> Dev {
        Dev::parse(s).unwrap()
    }

    #[test]
    fn mountinfo_and_swaps_parse_with_escapes() {
        let m = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
             37 35 0:33 / / rw shared:1 - btrfs /dev/sda2 rw\n\
             garbage\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, dev("98:0"));
        assert_eq!(m[0].at, "/mnt two");
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[1].at, "/");
        assert_eq!(m[1].source, "/dev/sda2");
        assert_eq!(
            parse_swaps(
                "Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition 1 0 100\n/swap\\040file file 1 0 -2\n"
            ),
            vec!["/dev/zram0".to_string(), "/swap file".to_string()]
        );
    }

    /// A machine: sda (fixed SATA) with sda1 (/boot/efi) and sda2 under dm-0 (the root);
    /// sdb on USB, 3 TiB; sdc, fixed SATA, with sdc1; mmcblk0 in a built-in reader; loop0 free, loop1
    /// with loop1p1 mounted; zram0 as swap; nvme0n1 with nvme0n1p1 mounted as btrfs.
    fn machine() -> (FakeSys, Host) {
        let f = FakeSys::new();
        let sda = f.disk(
            "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
            "8:0",
            1 << 30,
            false,
        );
        f.part(&sda, "sda1", "8:1");
        let sda2 = f.part(&sda, "sda2", "8:2");
        let dm0 = f.disk("virtual/block/dm-0", "254:0", 1 << 28, false);
        f.hold(&sda2, &dm0);
        f.disk(
            "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
            "8:16",
            3 << 31,
            false,
        );
        f.disk(
            "platform/soc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
            "179:0",
            1 << 25,
            false,
        );
        f.disk("virtual/block/loop0", "7:0", 1 << 20, false);
        let loop1 = f.disk("virtual/block/loop1", "7:1", 1 << 20, false);
        f.part(&loop1, "loop1p1", "259:0");
        f.disk("virtual/block/zram0", "253:0", 1 << 20, false);
        let nvme = f.disk(
            "pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1",
            "259:5",
            1 << 29,
            false,
        );
        f.part(&nvme, "nvme0n1p1", "259:6");
        let sdc = f.disk(
            "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdc",
            "8:32",
            1 << 29,
            false,
        );
        f.part(&sdc, "sdc1", "8:33");
        let mut host = f.host(
            "22 1 254:0 / / rw - ext4 /dev/mapper/root rw\n\
             23 22 8:1 / /boot/efi rw - vfat /dev/sda1 rw\n\
             24 22 259:0 / /mnt/card\\040x rw - vfat /dev/loop1p1 rw\n\
             25 22 0:40 / /mnt/nvme rw - btrfs /dev/nvme0n1p1 rw\n",
            vec![Swap {
                name: "/dev/zram0".into(),
                dev: Some(dev("253:0")),
                file: None,
            }],
            "254:0",
        );
        // What Host::current learns by stat(2) of the mount source.
        host.mounts[3].source_dev = Some(dev("259:6"));
        (f, host)
    }

    #[test]
    fn refusals_name_the_reason() {
        let (_f, host) = machine();
        for (d, force, want) in [
            (
                "8:0",
                true,
                "/dev/x: dm-0 holds the running system's root filesystem",
            ),
            (
                "8:2",
                true,
                "/dev/x: dm-0 holds the running system's root filesystem",
            ),
            (
                "254:0",
                true,
                "/dev/x holds the running system's root filesystem",
            ),
            ("8:1", true, "/dev/x is mounted at /boot/efi"),
            ("7:1", true, "/dev/x: loop1p1 is mounted at /mnt/card x"),
            ("253:0", true, "/dev/x is in use as swap (/dev/zram0)"),
            (
                "8:16",
                false,
                "/dev/x (sdb) is 3.00 TiB, more than the 2.00 TiB",
            ),
            ("8:32", false, "/dev/x (sdc, 256.00 GiB) is a fixed disk"),
            ("8:33", false, "/dev/x (sdc1) is a partition of sdc"),
            // btrfs: an anonymous device in mountinfo, the partition as the source.
            ("259:5", true, "/dev/x: nvme0n1p1 is mounted at /mnt/nvme"),
        ] {
            let e = format!(
                "{:#}",
                check_block(&host, dev(d), "/dev/x", force).unwrap_err()
            );
            assert!(e.contains(want), "{d}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn cards_usb_disks_and_loop_devices_pass() {
        let (f, mut host) = machine();
        host.mounts.retain(|m| m.at != "/mnt/nvme");
        for (d, force, name) in [
            ("179:0", false, "mmcblk0"),
            ("7:0", false, "loop0"),
            ("8:16", true, "sdb"),
            ("259:5", true, "nvme0n1"),
            ("8:32", true, "sdc"),
        ] {
            let c = check_block(&host, dev(d), "/dev/x", force).unwrap();
            assert_eq!(c.name, name);
        }
        // A read-only card.
        let mmc = f.sys.join("dev/block/179:0");
        std::fs::write(mmc.join("ro"), "1\n").unwrap();
        let e = format!(
            "{:#}",
            check_block(&host, dev("179:0"), "/dev/x", true).unwrap_err()
        );
        assert!(e.contains("read-only"), "{e}");
        // Held by device-mapper but not mounted: an open LUKS volume.
        let usb = f.sys.join("dev/block/8:16").canonicalize().unwrap();
        let dm1 = f.disk("virtual/block/dm-1", "254:1", 1 << 20, false);
        f.hold(&usb, &dm1);
        let e = format!(
            "{:#}",
            check_block(&host, dev("8:16"), "/dev/x", true).unwrap_err()
        );
        assert!(e.contains("/dev/x is in use by dm-1"), "{e}");
        // A removable flag makes a fixed-looking disk a card.
        let nvme = f.sys.join("dev/block/259:5");
        std::fs::write(nvme.join("removable"), "1\n").unwrap();
        check_block(&host, dev("259:5"), "/dev/x", false).unwrap();
        // No sysfs entry.
        let e = format!(
            "{:#}",
            check_block(&host, dev("1:99"), "/dev/x", false).unwrap_err()
        );
        assert!(e.contains("no sysfs entry"), "{e}");
    }

    #[test]
    fn a_file_backing_a_mounted_loop_device_or_swap_is_refused() {
        let (f, mut host) = machine();
        let img = f.sys.parent().unwrap().join("card.img");
        std::fs::write(&img, b"x").unwrap();
        let meta = std::fs::metadata(&img).unwrap();
        check_file(&host, &meta, "card.img").unwrap();
        let loop1 = f.sys.join("block/loop1");
        std::fs::create_dir_all(loop1.join("loop")).unwrap();
        std::fs::write(
            loop1.join("loop/backing_file"),
            format!("{}\n", img.display()),
        )
        .unwrap();
        let e = format!("{:#}", check_file(&host, &meta, "card.img").unwrap_err());
        assert!(
            e.contains(
                "card.img backs /dev/loop1, which is in use: /dev/loop1: loop1p1 is mounted"
            ),
            "{e}"
        );
        std::fs::remove_file(loop1.join("loop/backing_file")).unwrap();
        host.swaps.push(Swap {
            name: "/swapfile".into(),
            dev: None,
            file: Some((meta.dev(), meta.ino())),
        });
        let e = format!("{:#}", check_file(&host, &meta, "card.img").unwrap_err());
        assert!(e.contains("active swap file (/swapfile)"), "{e}");
    }
}
