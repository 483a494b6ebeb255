//! FAT32 volume for the microSD boot partition (`sd.img` partition 1): kernel, initramfs,
//! dtbs and `boot.scr`, at the root, where U-Boot's `load mmc 0:1` reads them.
//!
//! Spec: Microsoft "FAT: General Overview of On-Disk Format" (fatgen103) for the boot
//! sector, FSInfo, FAT and directory entries, and the long-file-name (VFAT) entries.
//!
//! Written here, not with the `fatfs` crate (0.3.6, no longer a dependency) first planned: `fatfs` 0.3.6 writes long
//! name entries in front of every `.`/`..` and points the `..` of a root subdirectory at
//! cluster 2 instead of 0, so `fsck.fat` rejects any volume with a directory (we need
//! `dtbs/`), and it leaves the FSInfo free count unset. A write-once volume is simple:
//!
//! - layout like `mkfs.fat`: 32 reserved sectors (boot sector at 0, FSInfo at 1, backups at 6
//!   and 7), two FATs, root directory at cluster 2, cluster size from Microsoft's FAT32 table;
//! - allocation is contiguous and in a fixed order: root, then every directory in sorted
//!   path order, then every file in sorted path order; every name gets long-name entries
//!   unless it already is an upper-case 8.3 name, plus a short alias (`BASIS~N` when the
//!   basis is lossy or taken, as Windows does);
//! - every time field is [`FatOptions::timestamp`] (UTC, clamped to 1980..=2107, even
//!   seconds); the volume ID and label come from [`FatOptions`]. Same inputs, same bytes.
//!
//! The volume must land on bytes that read as zero (a fresh sparse image): free clusters and
//! the unused tail of the FATs are not written, so the image stays sparse.
//!
//! [`read_fat32`] reads a volume back (any FAT32 volume, long names included): `hc1img seed`
//! writes a seeded card by reading the built one and writing it again with the seed's files
//! added, and `hc1img diff` compares boot files with it.

#![warn(clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use anyhow::{Context, Result, bail, ensure};

use crate::sector::SECTOR;
use crate::sparse::{write_at_zeroing, write_nonzero_at};

/// What decides the bytes of the volume besides its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatOptions {
    /// Volume label: at most 11 characters, upper-case ASCII letters, digits, space and
    /// `!#$%&'()-@^_`{}~`. Empty means no label (`NO NAME`).
    pub label: String,
    /// Volume serial number (what `blkid` shows as the UUID, `XXXX-XXXX`).
    pub volume_id: u32,
    /// Seconds since the Unix epoch for every file and directory time.
    pub timestamp: i64,
}

/// A DOS date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DosDateTime {
    /// Year, 1980..=2107.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u16,
    /// Day of month, 1..=31.
    pub day: u16,
    /// Hour, 0..=23.
    pub hour: u16,
    /// Minute, 0..=59.
    pub min: u16,
    /// Second, even, 0..=58.
    pub sec: u16,
}

impl DosDateTime {
    /// The 16-bit DOS date.
    pub fn date(&self) -> u16 {
        ((self.year - 1980) << 9) | (self.month << 5) | self.day
    }
    /// The 16-bit DOS time (2-second resolution).
    pub fn time(&self) -> u16 {
        (self.hour << 11) | (self.min << 5) | (self.sec / 2)
    }
}

/// `n` bytes as a buffer length, or an error naming `what` (more than this host can address).
fn buf_len(n: u64, what: &str) -> Result<usize> {
    usize::try_from(n).with_context(|| format!("{what}: {n} bytes do not fit in memory here"))
}

/// Convert Unix seconds to a DOS date-time (UTC), clamped to the DOS range; seconds are
/// rounded down to even.
#[allow(clippy::cast_possible_truncation)] // t is clamped to 1980..=2107: each field fits its u16
pub fn dos_datetime(unix: i64) -> DosDateTime {
    // 1980-01-01 00:00:00 and 2107-12-31 23:59:58 in Unix seconds.
    const MIN: i64 = 315_532_800;
    const MAX: i64 = 4_354_819_198;
    let t = unix.clamp(MIN, MAX);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    DosDateTime {
        year: year as u16,
        month: month as u16,
        day: day as u16,
        hour: (secs / 3600) as u16,
        min: (secs / 60 % 60) as u16,
        sec: (secs % 60 / 2 * 2) as u16,
    }
}

const RESERVED_SECTORS: u32 = 32;
const NUM_FATS: u32 = 2;
const FSINFO_SECTOR: u64 = 1;
const BACKUP_BOOT_SECTOR: u64 = 6;
const ROOT_CLUSTER: u32 = 2;
/// Fewest clusters a FAT32 volume may have (fatgen103).
const MIN_CLUSTERS: u64 = 65_525;
/// Most clusters a FAT32 volume may have (28-bit entries minus reserved values).
const MAX_CLUSTERS: u64 = 0x0FFF_FFF5 - 2;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
const LFN_CHARS: usize = 13;

/// Bytes per cluster for a FAT32 volume of `size` bytes (Microsoft's FAT32 table, as
/// `mkfs.fat` uses it).
fn cluster_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    match size {
        s if s <= 260 * MIB => 512,
        s if s <= 8 * 1024 * MIB => 4096,
        s if s <= 16 * 1024 * MIB => 8192,
        s if s <= 32 * 1024 * MIB => 16384,
        _ => 32768,
    }
}

fn label_bytes(label: &str) -> Result<Option<[u8; 11]>> {
    if label.is_empty() {
        return Ok(None);
    }
    ensure!(
        label.len() <= 11,
        "FAT volume label {label:?} is longer than 11 characters"
    );
    for c in label.chars() {
        let ok = c.is_ascii_uppercase() || c.is_ascii_digit() || " !#$%&'()-@^_`{}~".contains(c);
        ensure!(
            ok,
            "FAT volume label {label:?} contains {c:?}; use upper-case ASCII letters, digits, \
             space or !#$%&'()-@^_`{{}}~"
        );
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

fn check_path(path: &str) -> Result<()> {
    ensure!(!path.is_empty(), "empty file path for the FAT volume");
    for comp in path.split('/') {
        ensure!(
            !comp.is_empty() && comp != "." && comp != "..",
            "FAT file path {path:?} must be relative, with non-empty components and no . or .."
        );
        ensure!(
            comp.encode_utf16().count() <= 255,
            "FAT file path {path:?}: component {comp:?} is longer than 255 characters"
        );
        if let Some(c) = comp
            .chars()
            .find(|&c| c.is_control() || "\"*:<>?\\|".contains(c))
        {
            bail!("FAT file path {path:?} contains {c:?}, which FAT does not allow in names");
        }
        ensure!(
            !comp.ends_with('.') && !comp.ends_with(' '),
            "FAT file path {path:?}: component {comp:?} ends with a dot or space, which FAT drops"
        );
    }
    Ok(())
}

/// Characters allowed in a short (8.3) name besides upper-case letters and digits.
const SFN_SPECIAL: &str = "$%'-_@~`!(){}^#&";

/// If `name` already is a valid upper-case 8.3 name, its 11-byte form.
fn exact_short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || SFN_SPECIAL.contains(c))
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || !ok(base) || !ok(ext) {
        return None;
    }
    if name.ends_with('.') {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(out)
}

/// Windows' short-name basis (fatgen103 "Basis-Name Generation Algorithm"): upper-case,
/// invalid characters to `_`, spaces and leading dots dropped, base and extension cut to
/// 8 and 3. Returns the basis and whether the conversion lost information.
fn basis_name(name: &str) -> ([u8; 11], bool) {
    let mut lossy = false;
    let conv = |s: &str, lossy: &mut bool| -> Vec<u8> {
        let mut v = Vec::new();
        for c in s.chars() {
            if c == ' ' || c == '.' {
                *lossy = true;
                continue;
            }
            let u = c.to_ascii_uppercase();
            if u.is_ascii_uppercase() || u.is_ascii_digit() || SFN_SPECIAL.contains(u) {
                v.push(u as u8);
            } else {
                v.push(b'_');
                *lossy = true;
            }
        }
        v
    };
    let trimmed = name.trim_start_matches('.');
    if trimmed.len() != name.len() {
        lossy = true;
    }
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut b = conv(base, &mut lossy);
    let mut e = conv(ext, &mut lossy);
    if b.len() > 8 {
        b.truncate(8);
        lossy = true;
    }
    if e.len() > 3 {
        e.truncate(3);
        lossy = true;
    }
    if b.is_empty() {
        b.push(b'_');
        lossy = true;
    }
    let mut out = [b' '; 11];
    out[..b.len()].copy_from_slice(&b);
    out[8..8 + e.len()].copy_from_slice(&e);
    (out, lossy)
}

/// Short alias for `name` in a directory whose aliases are `taken`; `None` when the name is
/// itself an exact 8.3 name (no long-name entries needed).
fn short_alias(name: &str, taken: &BTreeSet<[u8; 11]>) -> Result<([u8; 11], bool)> {
    if let Some(exact) = exact_short_name(name) {
        return Ok((exact, false));
    }
    let (basis, lossy) = basis_name(name);
    if !lossy && !taken.contains(&basis) {
        return Ok((basis, true));
    }
    let base_len = basis[..8]
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(0, |p| p + 1);
    for n in 1u32..1_000_000 {
        let tail = format!("~{n}");
        let keep = base_len.min(8 - tail.len());
        let mut cand = basis;
        cand[keep..8].fill(b' ');
        cand[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        if !taken.contains(&cand) {
            return Ok((cand, true));
        }
    }
    bail!("cannot find a free short name for {name:?} in its FAT directory")
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}

/// Directory entries (32 bytes each) for one name: long-name entries (last part first),
/// then the short entry.
#[allow(clippy::cast_possible_truncation)] // components are <= 255 UTF-16 units (check_path): <= 20 parts
fn name_entries(
    name: &str,
    short: [u8; 11],
    needs_lfn: bool,
    attr: u8,
    cluster: u32,
    size: u32,
    when: DosDateTime,
) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    if needs_lfn {
        let units: Vec<u16> = name.encode_utf16().collect();
        let parts = units.len().div_ceil(LFN_CHARS);
        let sum = lfn_checksum(&short);
        for part in (0..parts).rev() {
            let mut e = [0u8; 32];
            let mut ord = (part + 1) as u8;
            if part + 1 == parts {
                ord |= 0x40;
            }
            e[0] = ord;
            e[11] = ATTR_LFN;
            e[13] = sum;
            let mut chars = [0xFFFFu16; LFN_CHARS];
            for (i, slot) in chars.iter_mut().enumerate() {
                let idx = part * LFN_CHARS + i;
                match idx.cmp(&units.len()) {
                    std::cmp::Ordering::Less => *slot = units[idx],
                    std::cmp::Ordering::Equal => *slot = 0,
                    std::cmp::Ordering::Greater => {}
                }
            }
            const POS: [usize; LFN_CHARS] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
            for (i, &p) in POS.iter().enumerate() {
                e[p..p + 2].copy_from_slice(&chars[i].to_le_bytes());
            }
            out.push(e);
        }
    }
    out.push(short_entry(short, attr, cluster, size, when));
    out
}

#[allow(clippy::cast_possible_truncation)] // the cluster number is stored as two 16-bit halves
fn short_entry(short: [u8; 11], attr: u8, cluster: u32, size: u32, when: DosDateTime) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0..11].copy_from_slice(&short);
    e[11] = attr;
    // [12] NT case flags 0, [13] creation tenths 0 (even seconds).
    e[14..16].copy_from_slice(&when.time().to_le_bytes());
    e[16..18].copy_from_slice(&when.date().to_le_bytes());
    e[18..20].copy_from_slice(&when.date().to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&when.time().to_le_bytes());
    e[24..26].copy_from_slice(&when.date().to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// One child of a directory in the volume plan.
struct Child {
    name: String,
    /// Full path of the child.
    path: String,
    is_dir: bool,
}

/// Format a FAT32 volume of `size` bytes at byte `offset` of `file` and write `files` into
/// it (keys: `/`-separated paths relative to the volume root; directories are created as
/// needed). Same inputs give the same bytes.
///
/// `offset` and `size` must be multiples of 512 and `size` large enough for FAT32 (at least
/// 65525 clusters: about 33 MiB). The range must read as zeros beforehand (a fresh sparse
/// image); the file is extended to `offset + size` if shorter. The boot sector's hidden
/// sector count is `offset / 512`, the partition start when `file` is a whole disk image.
// Sector and cluster counts are checked against 2^32 sectors and MAX_CLUSTERS (< 2^28)
// below, so cluster numbers fit u32 and the FAT (4 bytes a cluster) fits usize; the BPB
// constants are small.
#[allow(clippy::cast_possible_truncation)]
pub fn write_fat32<D: AsRef<[u8]>>(
    file: &File,
    offset: u64,
    size: u64,
    opts: &FatOptions,
    files: &BTreeMap<String, D>,
) -> Result<()> {
    ensure!(
        offset.is_multiple_of(SECTOR) && size.is_multiple_of(SECTOR),
        "FAT volume offset {offset} and size {size} must be multiples of 512 bytes"
    );
    let label = label_bytes(&opts.label)?;
    let when = dos_datetime(opts.timestamp);

    // The directory tree: every ancestor of every file.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for path in files.keys() {
        check_path(path)?;
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            dirs.insert(path[..at + i].to_string());
            at += i + 1;
        }
    }
    if let Some(clash) = dirs.iter().find(|d| files.contains_key(*d)) {
        bail!("FAT volume: {clash:?} is given both as a file and as a directory of other files");
    }
    let mut folded = BTreeMap::new();
    for p in files.keys().chain(dirs.iter()) {
        if let Some(prev) = folded.insert(p.to_lowercase(), p) {
            bail!(
                "FAT volume: paths {prev:?} and {p:?} differ only in case, which FAT cannot hold"
            );
        }
    }
    let parent_of = |p: &str| p.rfind('/').map_or(String::new(), |i| p[..i].to_string());
    let name_of = |p: &str| {
        p.rfind('/')
            .map_or(p.to_string(), |i| p[i + 1..].to_string())
    };
    // "" is the root.
    let mut children: BTreeMap<String, Vec<Child>> = BTreeMap::new();
    children.insert(String::new(), Vec::new());
    for d in &dirs {
        children.insert(d.clone(), Vec::new());
    }
    for (p, is_dir) in dirs
        .iter()
        .map(|d| (d, true))
        .chain(files.keys().map(|f| (f, false)))
    {
        if let Some(list) = children.get_mut(&parent_of(p)) {
            list.push(Child {
                name: name_of(p),
                path: p.clone(),
                is_dir,
            });
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }

    // Short aliases, per directory, in child order.
    let mut aliases: BTreeMap<String, ([u8; 11], bool)> = BTreeMap::new();
    for list in children.values() {
        let mut taken = BTreeSet::new();
        for c in list {
            let (short, lfn) = short_alias(&c.name, &taken)?;
            taken.insert(short);
            aliases.insert(c.path.clone(), (short, lfn));
        }
    }

    // Geometry.
    let cluster = cluster_size(size);
    let spc = cluster / SECTOR;
    let total_sectors = size / SECTOR;
    ensure!(
        total_sectors <= u64::from(u32::MAX),
        "FAT volume of {size} bytes has more than 2^32 sectors"
    );
    let too_small = || {
        anyhow::anyhow!(
            "FAT32 volume of {size} bytes ({} MiB) is too small: FAT32 needs at least {MIN_CLUSTERS} \
             clusters (about 33 MiB); enlarge the boot partition",
            size / (1024 * 1024)
        )
    };
    let avail = total_sectors
        .checked_sub(u64::from(RESERVED_SECTORS))
        .ok_or_else(too_small)?;
    // Smallest FAT that covers all the clusters left after the FATs.
    let mut fat_sectors = (avail / spc + 2) * 4 / SECTOR + 1;
    loop {
        let data = avail
            .checked_sub(u64::from(NUM_FATS) * fat_sectors)
            .ok_or_else(too_small)?;
        let clusters = data / spc;
        let need = ((clusters + 2) * 4).div_ceil(SECTOR);
        if need <= fat_sectors {
            // Shrink while still sufficient (converges in a few steps).
            let smaller = fat_sectors - 1;
            let data2 = avail - u64::from(NUM_FATS) * smaller;
            if ((data2 / spc + 2) * 4).div_ceil(SECTOR) <= smaller {
                fat_sectors = smaller;
                continue;
            }
            break;
        }
        fat_sectors = need;
    }
    let data_start = u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat_sectors;
    let clusters = (total_sectors - data_start) / spc;
    if clusters < MIN_CLUSTERS {
        return Err(too_small());
    }
    ensure!(
        clusters <= MAX_CLUSTERS,
        "FAT32 volume of {size} bytes has too many clusters"
    );

    // Directory sizes, then cluster allocation: root, other dirs (sorted), files (sorted).
    let dir_entries = |path: &str| -> usize {
        let mut n = if path.is_empty() {
            usize::from(label.is_some())
        } else {
            2
        };
        for c in children.get(path).map(Vec::as_slice).unwrap_or(&[]) {
            let lfn = aliases.get(&c.path).is_some_and(|a| a.1);
            n += 1 + if lfn {
                c.name.encode_utf16().count().div_ceil(LFN_CHARS)
            } else {
                0
            };
        }
        n
    };
    let mut next: u64 = u64::from(ROOT_CLUSTER);
    // path -> (first cluster, cluster count)
    let mut alloc: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    let mut order: Vec<String> = vec![String::new()];
    order.extend(dirs.iter().cloned());
    for d in &order {
        let n = ((dir_entries(d) * 32) as u64).div_ceil(cluster).max(1);
        alloc.insert(d.clone(), (next as u32, n));
        next += n;
    }
    for (p, data) in files {
        let n = (data.as_ref().len() as u64).div_ceil(cluster);
        let first = if n == 0 { 0 } else { next as u32 };
        alloc.insert(p.clone(), (first, n));
        next += n;
    }
    let used = next - u64::from(ROOT_CLUSTER);
    if used > clusters {
        let total: u64 = files.values().map(|d| d.as_ref().len() as u64).sum();
        bail!(
            "FAT volume of {} MiB is too small for {} files of {total} bytes in total ({used} \
             clusters of {cluster} bytes needed, {clusters} available); enlarge the boot partition",
            size / (1024 * 1024),
            files.len()
        );
    }

    let needed = offset
        .checked_add(size)
        .context("FAT volume offset + size overflows")?;
    let len = file.metadata().context("cannot stat the image file")?.len();
    if len < needed {
        file.set_len(needed)
            .with_context(|| format!("cannot extend the image file to {needed} bytes"))?;
    }
    let put = |at: u64, data: &[u8], what: &str| -> Result<()> {
        write_at_zeroing(file, offset + at, data)
            .with_context(|| format!("cannot write the FAT volume's {what}"))
    };

    // Boot sector, FSInfo, and their backups.
    let mut bs = [0u8; 512];
    bs[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    bs[3..11].copy_from_slice(b"mkfs.fat");
    bs[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    bs[13] = spc as u8;
    bs[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    bs[16] = NUM_FATS as u8;
    bs[21] = 0xF8;
    bs[24..26].copy_from_slice(&63u16.to_le_bytes());
    bs[26..28].copy_from_slice(&255u16.to_le_bytes());
    let hidden = u32::try_from(offset / SECTOR).unwrap_or(0);
    bs[28..32].copy_from_slice(&hidden.to_le_bytes());
    bs[32..36].copy_from_slice(&(total_sectors as u32).to_le_bytes());
    bs[36..40].copy_from_slice(&(fat_sectors as u32).to_le_bytes());
    bs[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes());
    bs[48..50].copy_from_slice(&(FSINFO_SECTOR as u16).to_le_bytes());
    bs[50..52].copy_from_slice(&(BACKUP_BOOT_SECTOR as u16).to_le_bytes());
    bs[64] = 0x80;
    bs[66] = 0x29;
    bs[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    bs[71..82].copy_from_slice(&label.unwrap_or(*b"NO NAME    "));
    bs[82..90].copy_from_slice(b"FAT32   ");
    // Boot code: "int 0x18"-free stub that just halts (this volume is never BIOS-booted).
    bs[90..93].copy_from_slice(&[0xFA, 0xF4, 0xEB]);
    bs[93] = 0xFD;
    bs[510] = 0x55;
    bs[511] = 0xAA;
    let mut fsinfo = [0u8; 512];
    fsinfo[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    fsinfo[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    let free = (clusters - used) as u32;
    fsinfo[488..492].copy_from_slice(&free.to_le_bytes());
    let next_free = if used < clusters {
        next as u32
    } else {
        0xFFFF_FFFF
    };
    fsinfo[492..496].copy_from_slice(&next_free.to_le_bytes());
    fsinfo[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    put(0, &bs, "boot sector")?;
    put(FSINFO_SECTOR * SECTOR, &fsinfo, "FSInfo sector")?;
    put(BACKUP_BOOT_SECTOR * SECTOR, &bs, "backup boot sector")?;
    put(
        (BACKUP_BOOT_SECTOR + 1) * SECTOR,
        &fsinfo,
        "backup FSInfo sector",
    )?;

    // FATs: only the used prefix is written.
    let mut fat = Vec::with_capacity(((next) * 4) as usize);
    fat.extend_from_slice(&0x0FFF_FFF8u32.to_le_bytes());
    fat.extend_from_slice(&END_OF_CHAIN.to_le_bytes());
    let mut chains: Vec<(u32, u64)> = alloc.values().copied().filter(|a| a.1 > 0).collect();
    chains.sort_unstable();
    for (first, n) in chains {
        for i in 0..n {
            let c = u64::from(first) + i;
            debug_assert_eq!(fat.len() as u64, c * 4);
            let v = if i + 1 == n {
                END_OF_CHAIN
            } else {
                (c + 1) as u32
            };
            fat.extend_from_slice(&v.to_le_bytes());
        }
    }
    for k in 0..u64::from(NUM_FATS) {
        put(
            (u64::from(RESERVED_SECTORS) + k * fat_sectors) * SECTOR,
            &fat,
            "allocation table",
        )?;
    }

    let cluster_pos = |c: u32| (data_start + (u64::from(c) - 2) * spc) * SECTOR;

    // Directories.
    for d in &order {
        let (first, n) = alloc.get(d).copied().unwrap_or((ROOT_CLUSTER, 1));
        let mut buf: Vec<u8> = Vec::with_capacity((n * cluster) as usize);
        if d.is_empty() {
            if let Some(l) = label {
                buf.extend_from_slice(&short_entry(l, ATTR_VOLUME_ID, 0, 0, when));
            }
        } else {
            let parent = parent_of(d);
            let parent_cluster = if parent.is_empty() {
                0
            } else {
                alloc.get(&parent).map_or(0, |a| a.0)
            };
            buf.extend_from_slice(&short_entry(
                *b".          ",
                ATTR_DIRECTORY,
                first,
                0,
                when,
            ));
            buf.extend_from_slice(&short_entry(
                *b"..         ",
                ATTR_DIRECTORY,
                parent_cluster,
                0,
                when,
            ));
        }
        for c in children.get(d).map(Vec::as_slice).unwrap_or(&[]) {
            let (short, lfn) = aliases.get(&c.path).copied().unwrap_or(([b'_'; 11], true));
            let (cl, _) = alloc.get(&c.path).copied().unwrap_or((0, 0));
            let (attr, sz) = if c.is_dir {
                (ATTR_DIRECTORY, 0)
            } else {
                let len = files.get(&c.path).map_or(0, |d| d.as_ref().len());
                let len = u32::try_from(len).with_context(|| {
                    format!("{} is larger than 4 GiB, which FAT cannot hold", c.path)
                })?;
                (ATTR_ARCHIVE, len)
            };
            for e in name_entries(&c.name, short, lfn, attr, cl, sz, when) {
                buf.extend_from_slice(&e);
            }
        }
        buf.resize((n * cluster) as usize, 0);
        let what = if d.is_empty() {
            "root directory".to_string()
        } else {
            format!("directory {d}")
        };
        put(cluster_pos(first), &buf, &what)?;
    }

    // File data, contiguous.
    for (p, data) in files {
        let (first, n) = alloc.get(p).copied().unwrap_or((0, 0));
        if n > 0 {
            write_nonzero_at(file, offset + cluster_pos(first), data.as_ref())
                .with_context(|| format!("cannot write {p} into the FAT volume"))?;
        }
    }
    Ok(())
}

/// Unix seconds (UTC) of a DOS date and time as stored in a directory entry (the inverse of
/// [`dos_datetime`]; a month or day of 0 reads as 1).
pub fn unix_from_dos(date: u16, time: u16) -> i64 {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0x0F).clamp(1, 12);
    let day = i64::from(date & 0x1F).max(1);
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = i64::from(time >> 11) * 3600
        + i64::from((time >> 5) & 0x3F) * 60
        + i64::from(time & 0x1F) * 2;
    days * 86_400 + secs
}

/// One file or directory read back from a FAT32 volume by [`read_fat32`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatEntry {
    /// `/`-separated path from the volume root (long name when there is one).
    pub path: String,
    pub is_dir: bool,
    /// The attribute byte (`0x10` directory, `0x20` archive, …).
    pub attr: u8,
    /// Modification date and time as stored (DOS format).
    pub mdate: u16,
    pub mtime: u16,
    /// File contents (empty for a directory).
    pub data: Vec<u8>,
}

/// A FAT32 volume read back: what [`write_fat32`] needs to write it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatVolume {
    /// Volume label (`""` for `NO NAME`).
    pub label: String,
    pub volume_id: u32,
    /// Every file and directory, parents before children.
    pub entries: Vec<FatEntry>,
}

impl FatVolume {
    /// The regular files, by path (what [`write_fat32`] takes).
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries
            .iter()
            .filter(|e| !e.is_dir)
            .map(|e| (e.path.clone(), e.data.clone()))
            .collect()
    }

    /// The newest modification time of any entry, in Unix seconds (0 when empty).
    pub fn newest_mtime(&self) -> i64 {
        self.entries
            .iter()
            .map(|e| unix_from_dos(e.mdate, e.mtime))
            .max()
            .unwrap_or(0)
    }
}

/// Read every file of the FAT32 volume of `size` bytes at byte `offset` of `file` (fatgen103:
/// boot sector, FAT chains, short and long directory entries). Everything read is bounded by
/// the volume: a chain that loops or leaves the volume, or a file size its chain cannot hold,
/// is an error, never an allocation sized by the volume's own fields. `what` names the image
/// in messages.
pub fn read_fat32(file: &File, offset: u64, size: u64, what: &str) -> Result<FatVolume> {
    use std::os::unix::fs::FileExt as _;
    let read = |at: u64, buf: &mut [u8]| -> Result<()> {
        ensure!(
            at.checked_add(buf.len() as u64).is_some_and(|e| e <= size),
            "{what}: the FAT volume refers to bytes past its end (corrupt boot partition?)"
        );
        file.read_exact_at(buf, offset + at)
            .with_context(|| format!("{what}: cannot read the FAT boot partition"))
    };
    let mut bs = [0u8; 512];
    read(0, &mut bs)?;
    let bad =
        |why: &str| anyhow::anyhow!("{what}: the boot partition is not a FAT32 volume ({why})");
    if bs[510..512] != [0x55, 0xAA] {
        return Err(bad("no boot sector signature"));
    }
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let spc = u64::from(bs[13]);
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let nfats = u64::from(bs[16]);
    let fat_sectors = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
    let total = u64::from(u32::from_le_bytes([bs[32], bs[33], bs[34], bs[35]]));
    let root = u32::from_le_bytes([bs[44], bs[45], bs[46], bs[47]]);
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 || !spc.is_power_of_two() {
        return Err(bad("bad sector or cluster size"));
    }
    if fat_sectors == 0 || nfats == 0 || reserved == 0 || total * bps > size {
        return Err(bad("bad geometry, or larger than its partition"));
    }
    let cluster = bps * spc;
    let data_start = (reserved + nfats * fat_sectors) * bps;
    let clusters = total
        .saturating_sub(reserved + nfats * fat_sectors)
        .checked_div(spc)
        .unwrap_or(0);
    if data_start >= total * bps || clusters == 0 {
        return Err(bad("no data area"));
    }
    // The first FAT, as far as it covers clusters that exist.
    let fat_len = ((clusters + 2) * 4).min(fat_sectors * bps);
    let mut fat = vec![0u8; buf_len(fat_len, what)?];
    read(reserved * bps, &mut fat)?;
    let next_of = |c: u32| -> u32 {
        let i = c as usize * 4;
        fat.get(i..i + 4).map_or(END_OF_CHAIN, |b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0FFF_FFFF
        })
    };
    // A chain's clusters, at most `limit` of them (a loop or a stray entry is an error).
    let chain = |first: u32, limit: u64, name: &str| -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut c = first;
        while (2..0x0FFF_FFF8).contains(&c) {
            ensure!(
                u64::from(c) < clusters + 2,
                "{what}: boot:{name}: its cluster chain leaves the volume (corrupt FAT)"
            );
            ensure!(
                (out.len() as u64) < limit,
                "{what}: boot:{name}: its cluster chain is longer than it can be (a loop?)"
            );
            out.push(c);
            c = next_of(c);
        }
        Ok(out)
    };
    let cluster_at = |c: u32| data_start + (u64::from(c) - 2) * cluster;
    let cluster_len = buf_len(cluster, what)?;
    let read_chain = |first: u32, limit: u64, name: &str| -> Result<Vec<u8>> {
        let cs = chain(first, limit, name)?;
        let mut buf = vec![0u8; cs.len() * cluster_len];
        for (i, &c) in cs.iter().enumerate() {
            let at = i * cluster_len;
            read(cluster_at(c), &mut buf[at..at + cluster_len])?;
        }
        Ok(buf)
    };
    let label = {
        let l = String::from_utf8_lossy(&bs[71..82]).trim_end().to_string();
        if l == "NO NAME" { String::new() } else { l }
    };
    let volume_id = u32::from_le_bytes([bs[67], bs[68], bs[69], bs[70]]);

    let mut entries = Vec::new();
    let mut seen_dirs: BTreeSet<u32> = BTreeSet::new();
    let mut stack: Vec<(String, u32)> = vec![(String::new(), root)];
    while let Some((dir, first)) = stack.pop() {
        ensure!(
            seen_dirs.insert(first),
            "{what}: boot:{dir}/ is reached twice (corrupt directory tree)"
        );
        ensure!(
            seen_dirs.len() as u64 <= clusters,
            "{what}: more directories than clusters (corrupt directory tree)"
        );
        let raw = read_chain(first, clusters, &format!("{dir}/"))?;
        let mut lfn: Vec<(u8, [u16; LFN_CHARS])> = Vec::new();
        let mut children = Vec::new();
        for e in raw.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xE5 {
                lfn.clear();
                continue;
            }
            let attr = e[11];
            if attr & 0x3F == ATTR_LFN {
                const POS: [usize; LFN_CHARS] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                let mut u = [0u16; LFN_CHARS];
                for (k, &p) in POS.iter().enumerate() {
                    u[k] = u16::from_le_bytes([e[p], e[p + 1]]);
                }
                lfn.push((e[0] & 0x1F, u));
                continue;
            }
            let long = std::mem::take(&mut lfn);
            if attr & ATTR_VOLUME_ID != 0 {
                continue;
            }
            if &e[0..11] == b".          " || &e[0..11] == b"..         " {
                continue;
            }
            let name = if long.is_empty() {
                short_name_text(e)
            } else {
                let mut units: Vec<u16> = Vec::new();
                let mut parts = long;
                parts.sort_by_key(|p| p.0);
                for (_, u) in parts {
                    units.extend(u.iter().copied().take_while(|&c| c != 0 && c != 0xFFFF));
                }
                String::from_utf16_lossy(&units)
            };
            let cl = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            let len = u64::from(u32::from_le_bytes([e[28], e[29], e[30], e[31]]));
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let mtime = u16::from_le_bytes([e[22], e[23]]);
            let mdate = u16::from_le_bytes([e[24], e[25]]);
            let is_dir = attr & ATTR_DIRECTORY != 0;
            let data = if is_dir || len == 0 {
                Vec::new()
            } else {
                let mut d = read_chain(cl, len.div_ceil(cluster), &path)?;
                ensure!(
                    d.len() as u64 >= len,
                    "{what}: boot:{path}: {len} bytes, but its clusters hold only {}",
                    d.len()
                );
                #[allow(clippy::cast_possible_truncation)] // len <= d.len(), checked above
                d.truncate(len as usize);
                d
            };
            if is_dir {
                children.push((path.clone(), cl));
            }
            entries.push(FatEntry {
                path,
                is_dir,
                attr,
                mdate,
                mtime,
                data,
            });
        }
        // Depth first, in directory order.
        stack.extend(children.into_iter().rev());
    }
    Ok(FatVolume {
        label,
        volume_id,
        entries,
    })
}

/// The text of an 8.3 entry's name (`BOOT    SCR` -> `BOOT.SCR`).
fn short_name_text(e: &[u8]) -> String {
    let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
    let base = if base.as_bytes().first() == Some(&0x05) {
        format!("\u{e5}{}", &base[1..])
    } else {
        base
    };
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// The byte ranges `[start, end)` of the FAT32 volume at `offset` of `file` whose contents
/// matter even where they are zero: the reserved sectors (boot sector, FSInfo, backups), every
/// FAT in full (a free cluster is a zero entry) and every cluster of every directory (a zero
/// entry ends a directory). Read from the volume itself (boot sector, FAT chains, directory
/// entries; fatgen103), relative to `offset`; `len` bounds the volume. A read-only layout
/// query for the block map: everything else is file data or free space.
pub fn metadata_ranges(file: &File, offset: u64, len: u64) -> Result<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    let read = |at: u64, buf: &mut [u8]| -> Result<()> {
        file.read_exact_at(buf, offset + at)
            .with_context(|| format!("cannot read the FAT volume at byte {at}"))
    };
    let mut bs = [0u8; 512];
    read(0, &mut bs)?;
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let bps = u16_at(&bs, 11);
    let spc = u64::from(bs[13]);
    let reserved = u16_at(&bs, 14);
    let fats = u64::from(bs[16]);
    let fat_sectors = u64::from(u32_at(&bs, 36));
    let root = u32_at(&bs, 44);
    ensure!(
        bs[510..512] == [0x55, 0xAA]
            && matches!(bps, 512 | 1024 | 2048 | 4096)
            && spc.is_power_of_two()
            && fats > 0
            && fat_sectors > 0,
        "not a FAT32 boot sector"
    );
    let fat_bytes = fat_sectors * bps;
    let data_start = (reserved + fats * fat_sectors) * bps;
    let cluster_bytes = spc * bps;
    ensure!(data_start < len, "FAT32 metadata larger than the volume");
    let clusters = (len - data_start) / cluster_bytes;
    let mut out = vec![(0, data_start)];
    // The first FAT, read once (at most 4 bytes per cluster of the volume).
    let mut fat = vec![0u8; buf_len(fat_bytes.min((clusters + 2) * 4), "FAT volume")?];
    read(reserved * bps, &mut fat)?;
    let next = |c: u32| -> Option<u32> {
        let i = c as usize * 4;
        let v = u32_at(fat.get(i..i + 4)?, 0) & 0x0FFF_FFFF;
        (2..0x0FFF_FFF8).contains(&v).then_some(v)
    };
    let mut todo = vec![root];
    let mut seen = BTreeSet::new();
    let mut cluster = vec![0u8; buf_len(cluster_bytes, "FAT volume")?];
    while let Some(first) = todo.pop() {
        let mut c = first;
        // A chain ends at an end-of-chain mark; a loop or an out-of-range cluster ends it too.
        while c >= 2 && u64::from(c) < clusters + 2 && seen.insert(c) {
            let at = data_start + u64::from(c - 2) * cluster_bytes;
            out.push((at, at + cluster_bytes));
            read(at, &mut cluster)?;
            for e in cluster.chunks_exact(32) {
                if e[0] == 0 {
                    break;
                }
                let attr = e[11];
                if e[0] == 0xE5 || attr & 0x0F == 0x0F || attr & 0x10 == 0 || e[0] == b'.' {
                    continue;
                }
                let sub = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                    | u32::from(u16::from_le_bytes([e[26], e[27]]));
                todo.push(sub);
            }
            match next(c) {
                Some(n) => c = n,
                None => break,
            }
        }
    }
    out.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in out {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(n))
                .unwrap()
        };
        let f = open("v.img");
        let opts = FatOptions {
            label: "BOOT".into(),
            volume_id: 0x1234_5678,
            timestamp: 1_700_000_000,
        };
        let mut files = BTreeMap::new();
        files.insert("boot.scr".to_string(), b"script".to_vec());
        files.insert("zImage".to_string(), vec![7u8; 10_000]);
        files.insert("dtbs/exynos5422-odroidhc1.dtb".to_string(), vec![1u8; 600]);
        files.insert(
            "hc1img-seed/secrets/a_long_secret_name".to_string(),
            b"x\n".to_vec(),
        );
        files.insert("empty".to_string(), Vec::new());
        write_fat32(&f, 4096, 40 << 20, &opts, &files).unwrap();
        let v = read_fat32(&f, 4096, 40 << 20, "v.img").unwrap();
        assert_eq!(v.label, "BOOT");
        assert_eq!(v.volume_id, 0x1234_5678);
        assert_eq!(v.files(), files);
        assert_eq!(v.newest_mtime(), 1_700_000_000);
        assert!(
            v.entries
                .iter()
                .any(|e| e.is_dir && e.path == "hc1img-seed/secrets")
        );
        // Written again from what was read: the same bytes.
        let g = open("w.img");
        let again = FatOptions {
            label: v.label.clone(),
            volume_id: v.volume_id,
            timestamp: v.newest_mtime(),
        };
        write_fat32(&g, 4096, 40 << 20, &again, &v.files()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("v.img")).unwrap(),
            std::fs::read(dir.path().join("w.img")).unwrap()
        );
        // A chain that loops is an error, not a hang.
        let fat0 = 4096 + 32 * 512;
        use std::os::unix::fs::FileExt as _;
        let cl = 2u32.to_le_bytes();
        f.write_all_at(&cl, fat0 + 2 * 4).unwrap();
        let e = read_fat32(&f, 4096, 40 << 20, "v.img")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v.img"), "{e}");
    }

    #[test]
    fn dos_time_conversion() {
        let d = dos_datetime(1_700_000_001); // 2023-11-14 22:13:21 UTC
        assert_eq!((d.year, d.month, d.day), (2023, 11, 14));
        assert_eq!((d.hour, d.min, d.sec), (22, 13, 20));
        let d = dos_datetime(0);
        assert_eq!((d.year, d.month, d.day, d.hour), (1980, 1, 1, 0));
        let d = dos_datetime(951_782_400); // 2000-02-29
        assert_eq!((d.year, d.month, d.day), (2000, 2, 29));
        let d = dos_datetime(i64::MAX);
        assert_eq!((d.year, d.month, d.day), (2107, 12, 31));
        for t in [315_532_800, 951_782_400, 1_700_000_000, 4_354_819_198] {
            let d = dos_datetime(t);
            assert_eq!(unix_from_dos(d.date(), d.time()), t);
        }
    }

    #[test]
    fn labels_and_paths_validated() {
        assert!(label_bytes("BOOT").unwrap().is_some());
        assert!(label_bytes("").unwrap().is_none());
        assert!(label_bytes("boot").is_err());
        assert!(label_bytes("TWELVE_CHARS").is_err());
        assert!(check_path("dtbs/x.dtb").is_ok());
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a:b", "trail."] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_names() {
        let none = BTreeSet::new();
        assert_eq!(
            short_alias("BOOT.SCR", &none).unwrap(),
            (*b"BOOT    SCR", false)
        );
        assert_eq!(
            short_alias("boot.scr", &none).unwrap(),
            (*b"BOOT    SCR", true)
        );
        assert_eq!(
            short_alias("zImage", &none).unwrap(),
            (*b"ZIMAGE     ", true)
        );
        assert_eq!(
            short_alias("initramfs-linux.img", &none).unwrap(),
            (*b"INITRA~1IMG", true)
        );
        let mut taken = BTreeSet::new();
        taken.insert(*b"INITRA~1IMG");
        assert_eq!(
            short_alias("initramfs-linux-fallback.img", &taken).unwrap(),
            (*b"INITRA~2IMG", true)
        );
        assert_eq!(
            short_alias(".hidden", &none).unwrap(),
            (*b"HIDDEN~1   ", true)
        );
    }
}
