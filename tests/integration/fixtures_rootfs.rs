//! Checks the realistic rootfs fixture other tests consume through `HC1IMG_TEST_ROOTFS`.
//!
//! The fixture is built by `scripts/fixtures/debian-armhf-rootfs.sh` (called by
//! `scripts/test`, which exports the variable): real Debian bookworm armhf packages shaped
//! like Arch Linux ARM's odroid-xu3 tarball. This test pins down the properties the
//! importer and the image tests rely on, so a fixture regression fails here, by name,
//! instead of as a puzzling failure elsewhere. The tarball is decompressed by the host's
//! `gzip` (fast even in debug builds) and parsed with the `tar` crate.
//!
//! Without `HC1IMG_TEST_ROOTFS` the test fails (never skips) and says how to get it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// Path of the fixture tarball, or an error telling how to build it.
fn fixture_path() -> Result<PathBuf> {
    let Some(path) = std::env::var_os("HC1IMG_TEST_ROOTFS") else {
        bail!(
            "HC1IMG_TEST_ROOTFS is not set: run the suite with scripts/test, or export \
             HC1IMG_TEST_ROOTFS=$(scripts/fixtures/debian-armhf-rootfs.sh)"
        );
    };
    let path = PathBuf::from(path);
    ensure!(
        path.is_file(),
        "HC1IMG_TEST_ROOTFS={} is not a file; rebuild it with scripts/fixtures/debian-armhf-rootfs.sh",
        path.display()
    );
    Ok(path)
}

/// What the test remembers of one tar entry.
#[derive(Debug, Default)]
struct Seen {
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    has_owner_names: bool,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Contents, only for the few small files the test inspects.
    data: Option<Vec<u8>>,
}

const KEEP_DATA: &[&str] = &[
    "./etc/passwd",
    "./etc/shadow",
    "./etc/group",
    "./etc/gshadow",
    "./boot/sd_fusing.sh",
    "./boot/boot.scr",
];
/// Files whose first bytes carry a magic number worth checking.
const KEEP_HEAD: &[&str] = &["./boot/zImage", "./boot/dtbs/exynos5422-odroidhc1.dtb"];

fn read_fixture() -> Result<BTreeMap<String, Seen>> {
    let path = fixture_path()?;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip (apt-get install gzip)")?;
    let stdout = child.stdout.take().context("gzip has no stdout pipe")?;
    let mut archive = tar::Archive::new(stdout);
    let mut seen = BTreeMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading an entry of {}", path.display()))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Some(attr) = ext.key()?.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(attr.to_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        let header = entry.header();
        let mut s = Seen {
            kind: header.entry_type().as_byte(),
            mode: header.mode()?,
            uid: header.uid()?,
            gid: header.gid()?,
            size: header.size()?,
            has_owner_names: header.username_bytes().is_some_and(|u| !u.is_empty())
                || header.groupname_bytes().is_some_and(|g| !g.is_empty()),
            xattrs,
            data: None,
        };
        if KEEP_DATA.contains(&name.as_str()) {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            s.data = Some(buf);
        } else if KEEP_HEAD.contains(&name.as_str()) {
            let mut buf = vec![0u8; 64];
            entry.read_exact(&mut buf)?;
            s.data = Some(buf);
        }
        seen.insert(name, s);
    }
    let status = child.wait()?;
    ensure!(
        status.success(),
        "gzip -dc {} failed: {status}",
        path.display()
    );
    Ok(seen)
}

fn get<'a>(seen: &'a BTreeMap<String, Seen>, name: &str) -> Result<&'a Seen> {
    seen.get(name)
        .with_context(|| format!("fixture has no {name}"))
}

fn text(seen: &BTreeMap<String, Seen>, name: &str) -> Result<String> {
    let data = get(seen, name)?.data.clone().unwrap_or_default();
    String::from_utf8(data).with_context(|| format!("{name} is not UTF-8"))
}

#[test]
fn fixture_is_a_realistic_alarm_shaped_rootfs() -> Result<()> {
    let seen = read_fixture()?;

    // Size and variety: a real system, with every entry type the importer must handle.
    ensure!(seen.len() > 10_000, "only {} entries", seen.len());
    let count = |k: u8| seen.values().filter(|s| s.kind == k).count();
    ensure!(count(b'0') > 5_000, "regular files: {}", count(b'0'));
    ensure!(count(b'5') > 1_000, "directories: {}", count(b'5'));
    ensure!(count(b'2') > 100, "symlinks: {}", count(b'2'));
    ensure!(count(b'1') >= 1, "no hard links");
    ensure!(count(b'3') >= 1, "no character devices");
    ensure!(
        seen.values()
            .any(|s| s.kind == b'0' && s.mode & 0o4000 != 0),
        "no setuid file"
    );
    ensure!(
        seen.values()
            .any(|s| s.kind == b'0' && s.mode & 0o2000 != 0 && s.gid != 0),
        "no setgid file with a non-root group"
    );
    // Every name is "./…" and owners are numeric only, as bsdtar --numeric-owner writes.
    ensure!(
        seen.keys().all(|n| n.starts_with("./")),
        "a name lacks the ./ prefix"
    );
    ensure!(
        seen.values().all(|s| !s.has_owner_names),
        "an entry carries user/group names"
    );
    // Merged /usr, like Arch Linux ARM.
    for link in ["./bin", "./sbin", "./lib"] {
        ensure!(get(&seen, link)?.kind == b'2', "{link} is not a symlink");
    }

    // ping: security.capability = vfs_cap_data v2 with CAP_NET_RAW (bit 13) effective.
    let ping = get(&seen, "./usr/bin/ping")?;
    let cap = ping
        .xattrs
        .get("security.capability")
        .context("/usr/bin/ping has no SCHILY.xattr.security.capability")?;
    ensure!(cap.len() == 20, "capability xattr is {} bytes", cap.len());
    ensure!(
        cap[..4] == [0x01, 0, 0, 0x02],
        "not VFS_CAP_REVISION_2 with the effective flag"
    );
    let permitted = u32::from_le_bytes([cap[4], cap[5], cap[6], cap[7]]);
    ensure!(
        permitted == 1 << 13,
        "permitted set {permitted:#x}, want CAP_NET_RAW"
    );

    // Users like ALARM's tarball.
    let passwd = text(&seen, "./etc/passwd")?;
    ensure!(
        passwd.lines().any(|l| l.starts_with("root:x:0:0:")),
        "root missing: {passwd}"
    );
    ensure!(
        passwd
            .lines()
            .any(|l| l.starts_with("alarm:x:1000:1000:") && l.contains(":/home/alarm:")),
        "alarm missing: {passwd}"
    );
    ensure!(text(&seen, "./etc/group")?.contains("\nalarm:x:1000:"));
    let shadow = get(&seen, "./etc/shadow")?;
    ensure!(
        shadow.mode & 0o777 == 0o600,
        "shadow mode {:o}",
        shadow.mode
    );
    ensure!(text(&seen, "./etc/shadow")?.contains("\nalarm:$6$"));
    ensure!(text(&seen, "./etc/gshadow")?.contains("\nalarm:!:"));
    let home = get(&seen, "./home/alarm/")?;
    ensure!(home.kind == b'5' && (home.uid, home.gid) == (1000, 1000));
    ensure!(home.mode & 0o777 == 0o700, "home mode {:o}", home.mode);

    // /boot: Exynos blobs that fit the raw sectors sd_fusing.sh writes them to.
    let fusing = text(&seen, "./boot/sd_fusing.sh")?;
    let offsets = [
        ("bl1.bin", 1u64, 8192u64),
        ("bl2.bin", 31, 14336),
        ("u-boot.bin", 63, 1_040_507),
        ("tzsw.bin", 2111, 262_144),
    ];
    for (i, (file, sector, size)) in offsets.iter().enumerate() {
        let s = get(&seen, &format!("./boot/{file}"))?;
        ensure!(s.size == *size, "{file} is {} bytes, want {size}", s.size);
        ensure!(
            fusing.contains(&format!("if=./{file}")) && fusing.contains(&format!("seek={sector} ")),
            "sd_fusing.sh does not write {file} at sector {sector}"
        );
        if let Some((_, next, _)) = offsets.get(i + 1) {
            ensure!(
                sector * 512 + size <= next * 512,
                "{file} overlaps the next blob"
            );
        }
    }
    // Real kernel and dtb: zImage magic at 0x24, FDT magic at 0.
    let zimage = get(&seen, "./boot/zImage")?
        .data
        .clone()
        .unwrap_or_default();
    ensure!(
        zimage.get(0x24..0x28) == Some(&[0x18, 0x28, 0x6f, 0x01][..]),
        "zImage magic"
    );
    let dtb = get(&seen, "./boot/dtbs/exynos5422-odroidhc1.dtb")?;
    ensure!(dtb.data.as_deref().and_then(|d| d.get(..4)) == Some(&[0xd0, 0x0d, 0xfe, 0xed][..]));
    // boot.scr: legacy U-Boot image (magic 0x27051956), type script (6).
    let scr = get(&seen, "./boot/boot.scr")?
        .data
        .clone()
        .unwrap_or_default();
    ensure!(scr.len() > 64 && scr[..4] == [0x27, 0x05, 0x19, 0x56] && scr[30] == 6);
    ensure!(get(&seen, "./boot/initramfs-linux.img")?.size > 1 << 20);
    ensure!(get(&seen, "./boot/boot.txt")?.kind == b'0');
    Ok(())
}
