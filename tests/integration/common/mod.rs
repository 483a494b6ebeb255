//! Shared helpers for the integration tests: synthetic tarballs shaped like Arch Linux ARM's
//! odroid-xu3 root tarball, and running the real oracle tools (a missing tool fails the test
//! with the Debian package to install; it never skips).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// sha256 of the file at `path`, read in 1 MiB pieces (images are hundreds of MiB: reading
/// them whole made a test process of several GiB).
pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("cannot open {} to hash it: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        }
    }
    hex::encode(h.finalize())
}

/// Run a tool and return its stdout; panics with the command, status and output otherwise.
pub fn run_ok(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a tool, failing the test clearly when it is not installed.
pub fn run(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run the oracle `{tool}` ({e}); install it (scripts/test does) — tests never skip a missing oracle")
    })
}

/// Deterministic pseudo-random bytes (xorshift), so blobs look like real binaries.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One entry of a synthetic tarball.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, Vec<u8>),
    Symlink(&'a str, &'a str),
}

pub const MTIME: u64 = 1_700_000_000;

/// Append entries to a tar builder with root ownership and a fixed mtime.
pub fn append(b: &mut tar::Builder<impl Write>, entries: Vec<E>) {
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
}

/// The SD-card offsets of the real `uboot-odroid-xu3` `sd_fusing.sh` (eMMC branch first,
/// then the SD branch, then `dd … seek=$var` lines), parameterised so tests can disagree.
pub fn sd_fusing_sh(bl1: u64, bl2: u64, uboot: u64, tzsw: u64) -> String {
    format!(
        "#!/usr/bin/bash\n\
         if [ -n \"$emmc\" ]; then\n    signed_bl1_position=0\n    bl2_position=30\n    uboot_position=62\n    tzsw_position=2110\n    device=$1boot0\n\
         else\n    signed_bl1_position={bl1}\n    bl2_position={bl2}\n    uboot_position={uboot}\n    tzsw_position={tzsw}\n    device=$1\nfi\n\
         dd iflag=dsync oflag=dsync if=./bl1.bin of=$device seek=$signed_bl1_position\n\
         dd iflag=dsync oflag=dsync if=./bl2.bin of=$device seek=$bl2_position\n\
         dd iflag=dsync oflag=dsync if=./u-boot.bin of=$device seek=$uboot_position\n\
         dd iflag=dsync oflag=dsync if=./tzsw.bin of=$device seek=$tzsw_position\n"
    )
}

/// Options for [`alarm_tarball`].
pub struct Alarm {
    /// Leave out this /boot file (to test missing blobs).
    pub omit: Option<&'static str>,
    /// sd_fusing.sh SD offsets.
    pub fusing: (u64, u64, u64, u64),
    pub uboot_len: usize,
    /// Include the programs the shipped profiles' sections need (`Section::needs`) when
    /// `[packages]` are not installed: msmtp and msmtp-mta's `/usr/bin/sendmail` (`[mail]`),
    /// nfs-utils' `mount.nfs` (`[backup]`), docker-buildx (`[builds]`); off for a tarball the
    /// packages are installed into.
    pub section_programs: bool,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm {
            omit: None,
            fusing: (1, 31, 63, 2111),
            uboot_len: 600 * 1024,
            section_programs: true,
        }
    }
}

/// The Arch Linux ARM `/etc` account files: root and alarm (uid 1000).
pub const PASSWD: &str = "root:x:0:0::/root:/bin/bash\nbin:x:1:1::/:/usr/bin/nologin\ndaemon:x:2:2::/:/usr/bin/nologin\nmail:x:8:12::/var/spool/mail:/usr/bin/nologin\nnobody:x:65534:65534:Kernel Overflow User:/:/usr/bin/nologin\nalarm:x:1000:1000::/home/alarm:/bin/bash\n";
pub const SHADOW: &str = "root:$6$rootsalt$rootroothash:19000::::::\nbin:!*:19000::::::\ndaemon:!*:19000::::::\nmail:!*:19000::::::\nnobody:!*:19000::::::\nalarm:$6$alarmsalt$alarmhash:19000:0:99999:7:::\n";
pub const GROUP: &str = "root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\nsys:x:3:bin\ntty:x:5:\nmail:x:12:\nwheel:x:998:root,alarm\nnobody:x:65534:\nalarm:x:1000:\n";
pub const GSHADOW: &str = "root:::root\nbin:::root,bin,daemon\ndaemon:::root,bin,daemon\nsys:::bin\ntty:::\nmail:::\nwheel:::root,alarm\nnobody:::\nalarm:!::\n";

/// A small `.tar.gz` shaped like `ArchLinuxARM-odroid-xu3-latest.tar.gz`: account files with
/// root/alarm, a systemd unit layout, a capability on ping, and a `/boot` with the four Exynos
/// blobs, `sd_fusing.sh`, kernel, initramfs and dtb.
pub fn alarm_tarball(dir: &Path, opts: &Alarm) -> PathBuf {
    let path = dir.join("alarm.tar.gz");
    let f = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let (b1, b2, u, t) = opts.fusing;
    let boot: Vec<(&str, Vec<u8>)> = vec![
        ("boot/bl1.bin", noise(15 * 512, 1)),
        ("boot/bl2.bin", noise(14 * 1024, 2)),
        ("boot/u-boot.bin", noise(opts.uboot_len, 3)),
        ("boot/tzsw.bin", noise(256 * 1024, 4)),
        ("boot/sd_fusing.sh", sd_fusing_sh(b1, b2, u, t).into_bytes()),
        ("boot/zImage", noise(3 << 20, 5)),
        ("boot/initramfs-linux.img", noise(1 << 20, 6)),
        ("boot/dtbs/exynos5422-odroidhc1.dtb", noise(60 * 1024, 7)),
        ("boot/boot.txt", b"# upstream boot.txt\n".to_vec()),
    ];
    let mut entries = vec![
        E::Dir("./", 0o755),
        E::Dir("boot", 0o755),
        E::Dir("boot/dtbs", 0o755),
        E::Dir("etc", 0o755),
        E::Dir("etc/systemd", 0o755),
        E::Dir("etc/systemd/system", 0o755),
        E::Dir("etc/systemd/system/multi-user.target.wants", 0o755),
        E::Dir("home", 0o755),
        E::Dir("root", 0o750),
        E::Dir("usr", 0o755),
        E::Dir("usr/bin", 0o755),
        E::Dir("usr/lib", 0o755),
        E::Dir("usr/lib/systemd", 0o755),
        E::Dir("usr/lib/systemd/system", 0o755),
        E::Dir("var", 0o755),
        E::Dir("var/spool", 0o755),
        E::Dir("var/spool/mail", 0o1777),
        E::File("etc/passwd", 0o644, PASSWD.into()),
        E::File("etc/shadow", 0o600, SHADOW.into()),
        E::File("etc/group", 0o644, GROUP.into()),
        E::File("etc/gshadow", 0o600, GSHADOW.into()),
        E::File("etc/fstab", 0o644, b"# <file system> <dir> <type> <options> <dump> <pass>\n".to_vec()),
        E::File("etc/hostname", 0o644, b"alarm\n".to_vec()),
        E::File("usr/bin/bash", 0o755, noise(900 * 1024, 8)),
        E::File(
            "usr/lib/systemd/system/docker.service",
            0o644,
            b"[Unit]\nDescription=Docker\n[Service]\nExecStart=/usr/bin/dockerd\n[Install]\nWantedBy=multi-user.target\n".to_vec(),
        ),
        E::File(
            "usr/lib/systemd/system/sshd.service",
            0o644,
            b"[Unit]\nDescription=OpenSSH\n[Service]\nExecStart=/usr/bin/sshd -D\n[Install]\nWantedBy=multi-user.target\n".to_vec(),
        ),
        E::File(
            "usr/lib/systemd/system/cronie.service",
            0o644,
            b"[Unit]\nDescription=cron daemon\n[Service]\nExecStart=/usr/bin/crond -n\n[Install]\nWantedBy=multi-user.target\n".to_vec(),
        ),
        E::File(
            "usr/lib/systemd/system/systemd-repart.service",
            0o644,
            b"[Unit]\nDescription=Repartition Root Disk\n[Service]\nType=oneshot\nExecStart=/usr/bin/systemd-repart --dry-run=no\n".to_vec(),
        ),
        E::Dir("etc/ssh", 0o755),
        E::File("etc/ssh/sshd_config", 0o644, b"Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n".to_vec()),
        E::File("etc/ssh/ssh_host_ed25519_key", 0o600, b"host key baked into the tarball\n".to_vec()),
        E::Dir("usr/share", 0o755),
        E::Dir("usr/share/zoneinfo", 0o755),
        E::Dir("usr/share/zoneinfo/Europe", 0o755),
        E::File("usr/share/zoneinfo/UTC", 0o644, b"TZif2 utc".to_vec()),
        E::File("usr/share/zoneinfo/Europe/Paris", 0o644, b"TZif2 paris".to_vec()),
        E::File("etc/machine-id", 0o444, b"0123456789abcdef0123456789abcdef\n".to_vec()),
        E::Symlink("etc/systemd/system/multi-user.target.wants/sshd.service", "/usr/lib/systemd/system/sshd.service"),
        E::Symlink("bin", "usr/bin"),
    ];
    if opts.section_programs {
        entries.push(E::File("usr/bin/msmtp", 0o755, noise(200 * 1024, 9)));
        entries.push(E::Symlink("usr/bin/sendmail", "msmtp"));
        entries.push(E::File("usr/bin/mount.nfs", 0o4755, noise(1024, 10)));
        entries.push(E::File(
            "usr/lib/docker/cli-plugins/docker-buildx",
            0o755,
            noise(1024, 11),
        ));
    }
    for (p, data) in &boot {
        if opts.omit != p.strip_prefix("boot/") {
            entries.push(E::File(p, 0o644, data.clone()));
        }
    }
    append(&mut b, entries);
    // alarm's home, owned by alarm as in the real tarball.
    for (path, kind, mode, data) in [
        ("home/alarm", tar::EntryType::Directory, 0o700, &b""[..]),
        (
            "home/alarm/.bashrc",
            tar::EntryType::Regular,
            0o644,
            &b"# bashrc\n"[..],
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(MTIME);
        h.set_mode(mode);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    // ping with cap_net_raw+ep, as iputils' install script sets it.
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_mode(0o755);
    h.set_size(4);
    b.append_pax_extensions([(
        "SCHILY.xattr.security.capability",
        &[
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ][..],
    )])
    .unwrap();
    b.append_data(&mut h, "usr/bin/ping", &b"ping"[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
    path
}

/// Write a ustar/pax header + data for a device or fifo (the tar crate's `append_data` works
/// for these too).
fn special(
    b: &mut tar::Builder<impl Write>,
    path: &str,
    kind: tar::EntryType,
    major: u32,
    minor: u32,
) {
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_mode(0o660);
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    b.append_data(&mut h, path, &[][..]).unwrap();
}

/// A `.tar.gz` exercising every corner the ext4 writer must get right: every entry type,
/// 255-byte and UTF-8 names, a deep path, a directory of `wide` entries (htree), hard link
/// groups, files of 0 B / 1 B / 4096 B / 4097 B and one of `big_mib` MiB, short and long
/// symlinks, xattrs that fit the inode and one that needs an xattr block, a POSIX ACL, a
/// capability, 32-bit owners, setuid/setgid/sticky bits and sub-second mtimes.
pub fn torture_tarball(dir: &Path, wide: usize, big_mib: usize) -> PathBuf {
    let path = dir.join("torture.tar.gz");
    let f = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let long_name = "n".repeat(255);
    let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
    let long_target = "t/".repeat(100) + "end";
    let mut entries = vec![
        E::Dir("./", 0o755),
        E::Dir("files", 0o755),
        E::File("files/empty", 0o644, vec![]),
        E::File("files/one", 0o644, vec![b'x']),
        E::File("files/block", 0o644, noise(4096, 11)),
        E::File("files/block-plus-one", 0o644, noise(4097, 12)),
        E::File("files/setuid", 0o4755, noise(100, 13)),
        E::File("files/setgid", 0o2755, noise(100, 14)),
        E::Dir("files/sticky", 0o1777),
        E::Dir("names", 0o755),
        E::File("names/grüße-日本語-😀", 0o644, b"utf8".to_vec()),
        E::Symlink("links/short", "../files/one"),
        E::Symlink("links/long", &long_target),
        E::Symlink("links/dangling", "/nonexistent/target"),
        E::Dir("wide", 0o755),
        // What the node configuration edits expect of any root: account files and a zone.
        E::Dir("etc", 0o755),
        E::File("etc/passwd", 0o644, PASSWD.into()),
        E::File("etc/shadow", 0o600, SHADOW.into()),
        E::File("etc/group", 0o644, GROUP.into()),
        E::File("etc/gshadow", 0o600, GSHADOW.into()),
        E::Dir("usr", 0o755),
        E::Dir("usr/share", 0o755),
        E::Dir("usr/share/zoneinfo", 0o755),
        E::File("usr/share/zoneinfo/UTC", 0o644, b"TZif2 utc".to_vec()),
    ];
    entries.insert(1, E::Dir("links", 0o755));
    let long_path = format!("names/{long_name}");
    entries.push(E::File(&long_path, 0o644, b"long".to_vec()));
    let deep_file = format!("deep/{deep}leaf");
    entries.push(E::File(&deep_file, 0o600, b"deep".to_vec()));
    append(&mut b, entries);
    for i in 0..wide {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(
            &mut h,
            format!("wide/entry-{i:06}-with-a-longer-name"),
            &[][..],
        )
        .unwrap();
    }
    // Hard link groups: three names for one file, two for another.
    for (target, links) in [
        ("files/block", vec!["files/hl-a", "files/hl-b"]),
        ("files/one", vec!["names/hl-one"]),
    ] {
        for l in links {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_mode(0o644);
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Link);
            b.append_link(&mut h, l, target).unwrap();
        }
    }
    special(&mut b, "dev-null", tar::EntryType::Char, 1, 3);
    special(&mut b, "dev-sda1", tar::EntryType::Block, 8, 1);
    special(&mut b, "dev-big", tar::EntryType::Char, 300, 70000);
    special(&mut b, "fifo", tar::EntryType::Fifo, 0, 0);
    // Owners above 65535, sub-second mtime, xattrs small and large, an ACL and a capability.
    let acl: Vec<u8> = [
        2u32.to_le_bytes().to_vec(),
        vec![1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
        vec![4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
        vec![0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    let big_xattr = noise(3000, 15);
    let mut h = tar::Header::new_ustar();
    h.set_uid(100000);
    h.set_gid(200000);
    h.set_mtime(MTIME);
    h.set_mode(0o640);
    h.set_size(5);
    b.append_pax_extensions([
        ("mtime", &b"1700000000.123456789"[..]),
        ("SCHILY.xattr.user.small", &b"value"[..]),
        ("SCHILY.xattr.system.posix_acl_access", &acl[..]),
        (
            "SCHILY.xattr.security.capability",
            &[
                1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ][..],
        ),
    ])
    .unwrap();
    b.append_data(&mut h, "files/xattr-small", &b"small"[..])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_mode(0o644);
    h.set_size(3);
    b.append_pax_extensions([("SCHILY.xattr.user.big", &big_xattr[..])])
        .unwrap();
    b.append_data(&mut h, "files/xattr-big", &b"big"[..])
        .unwrap();
    // The big file: 1 MiB of noise repeated, streamed.
    let chunk = noise(1 << 20, 16);
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_mode(0o644);
    h.set_size((big_mib as u64) << 20);
    let reader = std::io::Read::take(Cycle { chunk, pos: 0 }, (big_mib as u64) << 20);
    b.append_data(&mut h, "files/big", reader).unwrap();
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

/// The alarm tarball of `opts` as a plain `.tar` at `dir/name`, with entries added at the end
/// by `extra` (which may also write raw bytes to the file); the archive is ended after it.
pub fn alarm_tar_with(
    dir: &Path,
    name: &str,
    opts: &Alarm,
    extra: impl FnOnce(&mut tar::Builder<std::fs::File>),
) -> PathBuf {
    let sub = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&sub).unwrap();
    let gz = alarm_tarball(&sub, opts);
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()),
        &mut tar,
    )
    .unwrap();
    // Drop the end-of-archive blocks; the builder writes them again when it finishes.
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|&b| b == 0) {
        tar.truncate(tar.len() - 512);
    }
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&tar).unwrap();
    let mut b = tar::Builder::new(f);
    extra(&mut b);
    b.into_inner().unwrap().flush().unwrap();
    path
}

/// Endless repetition of one buffer.
pub struct Cycle {
    chunk: Vec<u8>,
    pos: usize,
}

impl Cycle {
    pub fn new(chunk: Vec<u8>) -> Cycle {
        Cycle { chunk, pos: 0 }
    }
}

impl std::io::Read for Cycle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.chunk.len();
        Ok(n)
    }
}
pub mod ext4list;
pub mod pkgs;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Secrets the worker profile declares, as files with safe modes.
pub fn worker_secrets(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut args = Vec::new();
    for (name, value) in [
        (
            "admin_password_hash",
            "$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij./",
        ),
        ("mail_password", "MAILSECRET-42"),
        ("swarm_worker_token", "SWMTKN-1-TOKENSECRET"),
    ] {
        let p = dir.join(format!("secret-{name}"));
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        args.push("--secret".to_string());
        args.push(format!("{name}={}", p.display()));
    }
    args
}

/// Copy `len` bytes at `offset` of `image` into a new file (holes stay holes).
pub fn extract(image: &Path, offset: u64, len: u64, to: &Path) {
    run_ok(
        "dd",
        &[
            &format!("if={}", image.display()),
            &format!("of={}", to.display()),
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            &format!("skip={offset}"),
            &format!("count={len}"),
            "conv=sparse",
            "status=none",
        ],
    );
}

/// The root filesystem of the build in `out` (its ssd.img's first partition), extracted into
/// `dir/root.ext4` and checked clean by `e2fsck -fn`.
pub fn root_fs(dir: &Path, out: &Path) -> PathBuf {
    let ssd = out.join("ssd.img");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let size = j["partitiontable"]["partitions"][0]["size"]
        .as_u64()
        .unwrap()
        * 512;
    let root = dir.join("root.ext4");
    extract(&ssd, 1 << 20, size, &root);
    let f = run("e2fsck", &["-fn", root.to_str().unwrap()]);
    assert!(
        f.status.success(),
        "e2fsck -fn:\n{}",
        String::from_utf8_lossy(&f.stdout)
    );
    root
}

/// Run one debugfs request against a filesystem image.
pub fn debugfs(fs: &Path, cmd: &str) -> String {
    run_ok("debugfs", &["-R", cmd, fs.to_str().unwrap()])
}

/// `debugfs stat` summary of a path: (permission bits, uid, gid).
pub fn stat(fs: &Path, path: &str) -> (u32, u32, u32) {
    let s = debugfs(fs, &format!("stat {path}"));
    let field = |key: &str| -> String {
        s.split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("{path}: no {key} in {s}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    (
        u32::from_str_radix(&field("Mode:"), 8).unwrap(),
        field("User:").parse().unwrap(),
        field("Group:").parse().unwrap(),
    )
}

/// `hc1img build PROFILE --source-url TARBALL --source-sha256 SHA` with the worker profile's
/// secrets and `--out OUT` when given, run in `cwd` with its own download cache.
pub fn build_command(cwd: &Path, profile: &Path, tarball: &Path, out: Option<&Path>) -> Command {
    let sha = sha256_hex(&std::fs::read(tarball).unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hc1img"));
    cmd.current_dir(cwd)
        .env("HC1IMG_CACHE", cwd.join("cache"))
        .arg("build")
        .arg(profile)
        .arg("--source-url")
        .arg(tarball)
        .arg("--source-sha256")
        .arg(&sha)
        // The shipped profiles' [packages] are pinned against the real tarball, not this one.
        .arg("--no-packages")
        .args(worker_secrets(cwd));
    if let Some(o) = out {
        cmd.arg("--out").arg(o);
    }
    cmd
}

/// The two Debian armmp kernels of `scripts/fixtures/debian-armhf-kernels.sh` (exported by
/// `scripts/test` as `HC1IMG_TEST_KERNELS`): A is the boot fixture's, B the upgrade.
pub fn test_kernels() -> (PathBuf, String, String) {
    let dir = PathBuf::from(std::env::var_os("HC1IMG_TEST_KERNELS").unwrap_or_else(|| {
        panic!(
            "HC1IMG_TEST_KERNELS is not set: scripts/test fetches the kernels; by hand: \
             export HC1IMG_TEST_KERNELS=$(scripts/fixtures/debian-armhf-kernels.sh)"
        )
    }));
    let version = |slot: &str| {
        std::fs::read_to_string(dir.join(format!("{slot}.version")))
            .unwrap_or_else(|e| panic!("{}/{slot}.version: {e}", dir.display()))
            .trim()
            .to_string()
    };
    let (a, b) = (version("A"), version("B"));
    (dir, a, b)
}

/// A loop device over a file, detached on drop.
pub struct Loop(pub String);

impl Loop {
    /// Attach `file` (with `-P`: its partitions get their own devices, `/dev/loopNpM`).
    pub fn attach(file: &Path, partitions: bool) -> Loop {
        let mut args = vec!["-f", "--show"];
        if partitions {
            args.push("-P");
        }
        args.push(file.to_str().unwrap());
        Loop(run_ok("losetup", &args).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A file of `len` random bytes (from /dev/urandom): a used card or disk.
pub fn used_media(path: &Path, len: u64) {
    use std::io::Read;
    let mut src = std::fs::File::open("/dev/urandom").unwrap().take(len);
    let mut dst = std::fs::File::create(path).unwrap();
    assert_eq!(std::io::copy(&mut src, &mut dst).unwrap(), len);
}

/// The partitions of a disk image or device as `sfdisk --json` reads them: (start, size) in
/// bytes.
pub fn partitions(disk: &Path) -> Vec<(u64, u64)> {
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    let sector = j["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * sector,
                p["size"].as_u64().unwrap() * sector,
            )
        })
        .collect()
}
