//! The first-boot proof: the images `hc1img build profiles/qemu-worker.toml` writes boot
//! through a real U-Boot (Debian's `u-boot-qemu`, as `-bios`), a real Linux kernel and a real
//! systemd in `qemu-system-arm -M virt` (no KVM), and the node configures itself.
//!
//! The root tarball is the bootable Debian armhf fixture (`scripts/fixtures/debian-armhf-rootfs.sh
//! --boot`, exported by `scripts/test` as `HC1IMG_TEST_BOOT_ROOTFS`): real packages configured
//! by their maintainer scripts, Debian's initramfs, a stand-in `docker` that records its calls.
//! A small report unit (added through an overlay of the test profile) waits for the boot to
//! finish, prints `HC1TEST key=value` lines on the serial console and powers off.
//!
//! The profile is `qemu-worker.toml` as shipped, its NFS backup share and mail relay included:
//! neither host is on QEMU's user network. The test runs an SMTP sink on the host's loopback
//! (the guest reaches it as 10.0.2.2); the report script points the node's `/etc/msmtprc` at
//! it before the backup run, keeping the rest of the file as built.
//!
//! Boots: (1) the built images, with no secret (the images hold none), the SSD enlarged to
//! twice its size: the node reaches `running` with no failed unit and waits for a join token;
//! `hc1-health` prints every check and reports the NAS unreachable; the backup run fails and
//! its mail reaches the sink (sender, `[mail] root`, subject); (2) the same disks with a card
//! seeded by `hc1img seed` (token, admin password hash, mail password): the node takes the
//! secrets (root-only modes), erases them from the card (still `fsck.fat -n` clean) and joins
//! once with the seeded token; the NAS is back (a bind mount stands in for the share) and the
//! backup run succeeds; (3) the kernel upgrade, booted as the HC1 boots: the same profile on
//! `boards/qemu-virt-usb.toml` (the SSD is USB mass storage behind xHCI, so its drivers must
//! come from the initramfs) built with `[packages]` on (upgrade = true, the shipped default)
//! from the fixture with a local database owning kernel A and a signed repository offering
//! kernel B as Arch Linux ARM packages it (`scripts/fixtures/debian-armhf-kernels.sh`,
//! `HC1IMG_TEST_KERNELS`), with another MAC and a card seeded with an address, a token and an
//! engine label (`--label`, merged into daemon.json): the node runs kernel B with no failed
//! unit, `usb_storage` loaded, and `modprobe --show-depends` of a module outside the
//! initramfs resolves from the root's build-time indexes. The same repository offers
//! `hc1-hooktest`, a package with its own alpm hook (a Path trigger on its files,
//! `NeedsTargets`): the build defers it, and the first boot runs it once with the matched
//! targets on stdin. Before that boot, `pacman -Qk`/`-Qkk` run on the node's view of the
//! built disks (the root, the card's partition at `/boot` with the mount's masks): no file of
//! any package missing, nothing altered but what a FAT `/boot` does not keep (mode, time).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{extract, repo, run_ok};

const UBOOT: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
/// Hard limit of one boot. TCG on 2 cores: about two minutes with the machine to itself
/// (three boots and their builds took 432 s on 2026-12-04), but a first boot passed 420 s twice
/// while the rest of the suite and another build shared the two cores; a hung boot is still
/// caught well inside CI's time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const TOKEN: &str = "SWMTKN-1-TOKENSECRET";
const SEED_TOKEN: &str = "SWMTKN-1-SEEDEDTOKEN";
const ADMIN_HASH: &str =
    "$6$bootsalt$QWERTYUIOPasdfghjklzxcvbnm0123456789QWERTYUIOPasdfghjklzxcvbnm0123456789abcdef./";
const MAIL_PW: &str = "BOOT-MAIL-PASSWORD";

fn fixture() -> PathBuf {
    let p = std::env::var_os("HC1IMG_TEST_BOOT_ROOTFS").unwrap_or_else(|| {
        panic!(
            "HC1IMG_TEST_BOOT_ROOTFS is not set: scripts/test builds the bootable fixture; by hand: \
             export HC1IMG_TEST_BOOT_ROOTFS=$(scripts/fixtures/debian-armhf-rootfs.sh --boot)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "HC1IMG_TEST_BOOT_ROOTFS={} is not a file",
        p.display()
    );
    p
}

/// The report script; `{SMTP_PORT}` is the host port of the test's SMTP sink.
const REPORT: &str = r#"#!/bin/sh
# hc1img boot test: report the node's state on the console once the boot is over.
state=$(systemctl is-system-running --wait)
say() { echo "HC1TEST $*" >/dev/console; }
mkdir -p /var/lib/hc1img-test
boots=$(($(cat /var/lib/hc1img-test/boots 2>/dev/null || echo 0) + 1))
echo "$boots" >/var/lib/hc1img-test/boots
say "boots=$boots"
say "state=$state"
say "failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
say "machine-id=$(cat /etc/machine-id)"
say "hostname=$(cat /proc/sys/kernel/hostname)"
say "cmdline=$(cat /proc/cmdline)"
src=$(findmnt -no SOURCE /)
say "root=$src $(findmnt -no FSTYPE /) $(lsblk -dno UUID,PARTUUID "$src" | tr -s ' ')"
disk=$(lsblk -no PKNAME "$src")
say "disk-sectors=$(cat "/sys/block/$disk/size")"
say "part-sectors=$(cat "/sys/class/block/${src#/dev/}/size")"
say "kernel=$(uname -r)"
say "usb-storage=$(lsmod | awk '$1 == "usb_storage" { print "loaded" }')"
# A module no initramfs holds, resolved from the root's own indexes at the first boot.
say "modprobe-bridge=$(modprobe --show-depends bridge 2>&1 | sed 's|.*/||' | tr '\n' ' ')"
say "fs-bytes=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')"
say "swarm-unit=$(systemctl show -p ActiveState --value hc1-swarm-join.service)"
say "token-file=$([ -e /var/lib/hc1img/secrets/swarm-token ] && echo present || echo absent)"
say "seed-network=$(tr '\n' ' ' </etc/systemd/network/10-hc1img-seed.network 2>/dev/null)"
say "seed-left=$(ls /boot/hc1img-seed/secrets 2>/dev/null | tr '\n' ' ')"
say "ssh-keys=$(ls /etc/ssh/ | grep -c '^ssh_host_.*_key$')"
say "admin-pw=$(awk -F: '$1 == "admin" { print substr($2, 1, 3) }' /etc/shadow)"
say "msmtp=$(grep -c '^password ' /etc/msmtprc) $(stat -c '%a %U %G' /etc/msmtprc)"
say "card-received=$(ls /var/lib/hc1img/card-secrets 2>/dev/null | tr '\n' ' ')"
say "secrets-dir=$(stat -c '%a %U' /var/lib/hc1img/secrets)"
say "boot-modes=$(stat -c '%a' /boot/boot.scr) $(stat -c '%a' /boot/hc1img-seed 2>/dev/null)"
say "engine-labels=$(tr -d ' \n' </etc/docker/daemon.json | grep -o '"labels":\[[^]]*\]')"
say "hook-targets=$(tr '\n' ' ' </var/lib/hc1-hooktest/targets 2>/dev/null)"
say "deferred=$(systemctl show -p Result --value hc1-pacman-deferred.service) $(systemctl show -p ActiveState --value hc1-pacman-deferred.service) $([ -e /var/lib/hc1img/pacman-deferred.pending ] && echo pending || echo done)"
say "preload=$(systemctl show -p Result --value hc1-docker-preload.service) $(systemctl show -p ConditionResult --value hc1-docker-preload.service) left:$(ls /var/lib/hc1img/preload 2>/dev/null | tr '\n' ' ')"
say "timers=$(systemctl is-enabled hc1-volume-backup.timer hc1-docker-cleanup.timer | tr '\n' ' ')"
# What an admin runs after flashing a node (the NAS and the relay are not on this network).
/usr/local/sbin/hc1-health >/run/hc1img-test-health 2>&1
say "health-rc=$?"
while IFS= read -r line; do say "health: $line"; done </run/hc1img-test-health
if [ "$boots" = 1 ]; then
    # No NAS: the backup run fails and mails root through the relay of /etc/msmtprc, pointed
    # at the test's SMTP sink (10.0.2.2 is the host's loopback in QEMU's user network).
    sed -i -e 's/^host .*/host 10.0.2.2/' -e 's/^port .*/port {SMTP_PORT}/' \
        -e 's/^tls .*/tls off/' -e 's/^tls_starttls .*/tls_starttls off/' /etc/msmtprc
    systemctl start hc1-volume-backup.service
    say "backup=$? $(systemctl show -p Result --value hc1-volume-backup.service)"
else
    # The NAS is back: a bind mount of a local directory stands in for the NFS share.
    mkdir -p /run/systemd/system/mnt-backup.mount.d /var/backups/nas
    printf '[Mount]\nWhat=/var/backups/nas\nType=none\nOptions=bind\n' \
        >/run/systemd/system/mnt-backup.mount.d/nas-is-back.conf
    systemctl daemon-reload
    systemctl start hc1-volume-backup.service
    say "backup=$? $(systemctl show -p Result --value hc1-volume-backup.service)"
    say "backup-mounted-after=$(findmnt -n /mnt/backup >/dev/null && echo yes || echo no)"
fi
systemctl start hc1-docker-cleanup.service
say "cleanup=$? $(systemctl show -p Result --value hc1-docker-cleanup.service)"
say "failed-after-ops=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
while IFS= read -r line; do say "docker: $line"; done </var/lib/docker-standin/calls.log
journalctl -b --no-pager -o cat -u hc1-firstboot -u hc1-card-secrets -u hc1-swarm-join -u systemd-repart \
    -u systemd-growfs-root -u hc1-health -u hc1-volume-backup | sed 's/^/HC1LOG /' >/dev/console
say "end"
systemctl poweroff
"#;

/// The report runs from a transient timer started by this unit, after the boot transaction:
/// `is-system-running --wait` inside the boot transaction would wait for itself.
const REPORT_UNIT: &str = "[Unit]
Description=hc1img boot test: schedule the report
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/bin/systemd-run --no-block --on-active=3 --unit=hc1img-test-report-late /usr/local/lib/hc1img-test/report

[Install]
WantedBy=multi-user.target
";

/// The test profile: qemu-worker.toml as shipped (its NFS backup share and mail relay
/// included, neither on QEMU's network) on the Debian fixture, plus the report overlay and
/// what the Debian fixture lacks next to Arch Linux ARM.
fn write_profile(dir: &Path, smtp_port: u16) -> PathBuf {
    let ov = dir.join("overlay");
    std::fs::create_dir_all(ov.join("usr/local/lib/hc1img-test")).unwrap();
    std::fs::create_dir_all(ov.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::fs::write(
        ov.join("usr/local/lib/hc1img-test/report"),
        REPORT.replace("{SMTP_PORT}", &smtp_port.to_string()),
    )
    .unwrap();
    std::fs::write(
        ov.join("etc/systemd/system/hc1img-test-report.service"),
        REPORT_UNIT,
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/hc1img-test-report.service",
        ov.join("etc/systemd/system/multi-user.target.wants/hc1img-test-report.service"),
    )
    .unwrap();
    // Arch Linux ARM ships DHCP on its Ethernet port (systemd-networkd's eth.network); the
    // Debian fixture has no network configuration, so the test adds ALARM's file.
    std::fs::create_dir_all(ov.join("etc/systemd/network")).unwrap();
    std::fs::write(
        ov.join("etc/systemd/network/eth.network"),
        "[Match]\nName=eth*\n\n[Network]\nDHCP=yes\nDNSSEC=no\n",
    )
    .unwrap();
    // A container image as `docker save` writes it (manifest.json, the config, one layer),
    // preloaded for an offline first boot ([docker] preload, relative to the profile).
    let mut layer = tar::Builder::new(Vec::new());
    crate::common::append(
        &mut layer,
        vec![crate::common::E::File("hello.txt", 0o644, b"hi\n".to_vec())],
    );
    let layer = layer.into_inner().unwrap();
    let mut app = tar::Builder::new(std::fs::File::create(dir.join("app.tar")).unwrap());
    crate::common::append(
        &mut app,
        vec![
            crate::common::E::File(
                "manifest.json",
                0o644,
                br#"[{"Config":"config.json","RepoTags":["hc1test/app:1"],"Layers":["layer.tar"]}]"#
                    .to_vec(),
            ),
            crate::common::E::File(
                "config.json",
                0o644,
                br#"{"architecture":"arm","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                    .to_vec(),
            ),
            crate::common::E::File("layer.tar", 0o644, layer),
        ],
    );
    app.into_inner().unwrap();
    let profile = dir.join("qemu-boot-test.toml");
    std::fs::write(
        &profile,
        format!(
            r#"# The boot test's profile: qemu-worker.toml on the Debian armhf fixture.
extends = "{qemu}"
name = "qemu-boot-test"

[users]
# Debian has no wheel group: make it, as Arch Linux ARM has it.
create_groups = ["docker", "wheel"]

[cron]
# Debian's cron daemon is not in the fixture.
enable = false

[boot]
# TCG on two shared cores: udev's coldplug can outlast systemd's 90 s device timeout (a boot
# under load once timed out on /dev/ttyAMA0 and the card's partition alike). Emulation only.
extra_args = ["systemd.default_device_timeout_sec=600"]

[docker]
preload = ["app.tar"]

[overlays]
dirs = ["{ov}"]

[[overlays.entry]]
path = "/usr/local/lib/hc1img-test/report"
mode = "0755"
"#,
            qemu = repo().join("profiles/qemu-worker.toml").display(),
            ov = ov.display(),
        ),
    )
    .unwrap();
    profile
}

/// What the kernel-upgrade boot builds from: the boot fixture with a local pacman database in
/// which `linux-odroid-xu3` (kernel A) owns the kernel, its dtbs and its modules, as in Arch
/// Linux ARM's tarball; and a signed `core` repository whose `linux-odroid-xu3` is kernel B
/// packaged with the layout of Arch Linux ARM's kernel package (`boot/zImage`, flat
/// `boot/dtbs/*.dtb`, `usr/lib/modules/<kver>/` without any `modules.dep*`, the dummy
/// `usr/lib/initcpio/<kver>`). Returns the tarball and the mirror URL; the key is
/// `dir/keyring.asc`.
fn kernel_upgrade_inputs(dir: &Path, tarball: &Path) -> (PathBuf, String) {
    use std::io::Read;
    let (kdir, a, b) = crate::common::test_kernels();
    // 1. The tarball, copied entry by entry, plus the local database.
    let mut owned: Vec<String> = Vec::new();
    let out = dir.join("alarm-kernel-a.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&out).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(tarball).unwrap(),
    ));
    let mods = format!("usr/lib/modules/{a}/");
    for e in ar.entries().unwrap().raw(true) {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        let dir_entry = h.entry_type().is_dir();
        let name = path.trim_end_matches('/');
        let base = name.rsplit('/').next().unwrap_or("");
        let kernel_file = name == "boot/zImage"
            || name.starts_with("boot/dtbs/")
            || (format!("{name}/").starts_with(&mods)
                && (!base.starts_with("modules.")
                    || matches!(
                        base,
                        "modules.order" | "modules.builtin" | "modules.builtin.modinfo"
                    )));
        if kernel_file && !name.is_empty() {
            owned.push(if dir_entry {
                format!("{name}/")
            } else {
                name.to_string()
            });
        }
        // Long names come as pax/GNU records in raw mode: keep them as they are.
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        builder.append(&h, &data[..]).unwrap();
    }
    assert!(
        owned.iter().any(|p| p.starts_with(&mods)),
        "the boot fixture has no {mods}: its kernel is not kernel A of HC1IMG_TEST_KERNELS"
    );
    for d in ["usr/", "usr/lib/", "usr/lib/modules/", "boot/"] {
        owned.push(d.to_string());
    }
    owned.sort();
    owned.dedup();
    let db = "var/lib/pacman/local/linux-odroid-xu3-6.1.0-1";
    let desc = format!(
        "%NAME%\nlinux-odroid-xu3\n\n%VERSION%\n6.1.0-1\n\n%BASE%\nlinux-odroid-xu3\n\n\
         %DESC%\nstand-in: Debian's {a}\n\n%ARCH%\narmv7h\n\n%BUILDDATE%\n1690000000\n\n\
         %INSTALLDATE%\n1690000000\n\n%SIZE%\n1\n\n%VALIDATION%\npgp\n\n"
    );
    let files = format!("%FILES%\n{}\n\n", owned.join("\n"));
    crate::common::append(
        &mut builder,
        vec![
            crate::common::E::Dir("var/lib/pacman", 0o755),
            crate::common::E::Dir("var/lib/pacman/local", 0o755),
            crate::common::E::File(
                "var/lib/pacman/local/ALPM_DB_VERSION",
                0o644,
                b"9\n".to_vec(),
            ),
            crate::common::E::Dir(db, 0o755),
            crate::common::E::File(&format!("{db}/desc"), 0o644, desc.into_bytes()),
            crate::common::E::File(&format!("{db}/files"), 0o644, files.into_bytes()),
        ],
    );
    builder.into_inner().unwrap().finish().unwrap();

    // 2. Kernel B as Arch Linux ARM packages its kernel.
    let pkg = dir.join("pkg-linux");
    let kb = kdir.join("B");
    let sh = |cmd: &str| run_ok("sh", &["-euc", cmd]);
    sh(&format!(
        "p={p}; k={k}; mkdir -p $p/boot/dtbs $p/usr/lib/modules $p/usr/lib/initcpio
         cp $k/boot/vmlinuz-{b} $p/boot/zImage
         cp $k/usr/lib/linux-image-{b}/*.dtb $p/boot/dtbs/
         cp -a $k/usr/lib/modules/{b} $p/usr/lib/modules/
         : >$p/usr/lib/initcpio/{b}
         ! ls $p/usr/lib/modules/{b}/modules.dep* 2>/dev/null",
        p = pkg.display(),
        k = kb.display(),
    ));
    let size: u64 = sh(&format!(
        "du -sb --apparent-size {} | cut -f1",
        pkg.display()
    ))
    .trim()
    .parse()
    .unwrap();
    std::fs::write(
        pkg.join(".PKGINFO"),
        format!(
            "# Generated by makepkg 6.0.2\npkgname = linux-odroid-xu3\npkgbase = linux-odroid-xu3\n\
             pkgver = 6.1.1-1\npkgdesc = stand-in: Debian's {b}\nurl = https://www.kernel.org/\n\
             builddate = 1700000000\npackager = Test Packager <test@example.org>\nsize = {size}\n\
             arch = armv7h\nlicense = GPL2\n"
        ),
    )
    .unwrap();
    let core = dir.join("mirror/core");
    std::fs::create_dir_all(&core).unwrap();
    let file = core.join("linux-odroid-xu3-6.1.1-1-armv7h.pkg.tar.zst");
    sh(&format!(
        "cd {p} && find . -exec touch -h -d @1700000000 {{}} +
         LANG=C bsdtar -cf - --format=mtree --options='!all,use-set,type,uid,gid,mode,time,size,md5,sha256,link' .PKGINFO boot usr | gzip -c -f -n >.MTREE
         touch -d @1700000000 .MTREE
         LANG=C bsdtar -cf {f} --zstd --uid 0 --gid 0 .PKGINFO .MTREE boot usr",
        p = pkg.display(),
        f = file.display(),
    ));
    std::fs::remove_dir_all(&pkg).unwrap();
    // 3. A package with its own alpm hook (alpm-hooks(5)): a Path trigger on its files and
    //    `NeedsTargets`; the build defers it and the first boot runs it, targets on stdin.
    use crate::common::pkgs::{Entry, Pkg};
    let hooked = crate::common::pkgs::build_pkg(
        &dir.join("pkgwork"),
        &core,
        &Pkg {
            files: vec![
                Entry::file(
                    "usr/bin/hc1-hooktest-index",
                    0o755,
                    b"#!/bin/sh\nmkdir -p /var/lib/hc1-hooktest\ncat >/var/lib/hc1-hooktest/targets\n"
                        .to_vec(),
                ),
                Entry::file("usr/share/hc1-hooktest/a.txt", 0o644, b"a\n".to_vec()),
                Entry::file("usr/share/hc1-hooktest/b.txt", 0o644, b"b\n".to_vec()),
                Entry::file(
                    "usr/share/libalpm/hooks/60-hc1-hooktest.hook",
                    0o644,
                    HOOKTEST_HOOK,
                ),
            ],
            ..Pkg::new("hc1-hooktest", "1.0-1")
        },
    );
    let gpg = crate::common::pkgs::signer(dir);
    // The tarball too, as Arch Linux ARM signs its tarballs.
    crate::common::pkgs::sign_all(&gpg, &[&file, &hooked, &out]);
    crate::common::pkgs::repo_add(&core, "core", &[file, hooked]);
    (out, format!("file://{}/mirror/$repo", dir.display()))
}

/// `pacman -Qk` and `-Qkk` on the node's view of a built image: the root's package files and
/// local database (read back with debugfs) with the card's boot partition where the node
/// mounts it (`/boot`, vfat with `fstab.boot_options`' masks). Every file of every package is
/// there (`-Qk`); nothing differs but what a FAT `/boot` cannot hold: the owner and mode
/// the mount options give (docs/profiles.md, "What pacman -Qkk reports on a node").
fn node_view_pacman_check(dir: &Path, out: &Path, kernel: &str) {
    let view = dir.join("node-view");
    std::fs::create_dir_all(view.join("usr/lib")).unwrap();
    std::fs::create_dir_all(view.join("usr/share")).unwrap();
    std::fs::create_dir_all(view.join("var/lib")).unwrap();
    let ssd = out.join("ssd.img");
    let (start, len) = partition1(&ssd);
    let fs = dir.join("node-view.ext4");
    extract(&ssd, start, len, &fs);
    for (what, to) in [
        ("/var/lib/pacman", "var/lib"),
        ("/usr/lib/modules", "usr/lib"),
        ("/usr/lib/initcpio", "usr/lib"),
        ("/usr/share/hc1-hooktest", "usr/share"),
        ("/usr/share/libalpm", "usr/share"),
    ] {
        crate::common::debugfs(&fs, &format!("rdump {what} {}", view.join(to).display()));
    }
    std::fs::create_dir_all(view.join("usr/bin")).unwrap();
    crate::common::debugfs(
        &fs,
        &format!(
            "dump -p /usr/bin/hc1-hooktest-index {}",
            view.join("usr/bin/hc1-hooktest-index").display()
        ),
    );
    std::fs::remove_file(&fs).unwrap();
    let sd = out.join("sd.img");
    let fat = dir.join("node-view.fat");
    extract(
        &sd,
        8192 * 512,
        std::fs::metadata(&sd).unwrap().len() - 8192 * 512,
        &fat,
    );
    std::fs::create_dir_all(view.join("boot")).unwrap();
    run_ok(
        "mcopy",
        &[
            "-s",
            "-m",
            "-n",
            "-i",
            fat.to_str().unwrap(),
            "::/",
            view.join("boot").to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&fat).unwrap();
    // vfat with fmask=0077,dmask=0077 (the shipped fstab.boot_options), owned by root.
    run_ok(
        "sh",
        &[
            "-euc",
            &format!(
                "find {b} -type f -exec chmod 0700 {{}} + && find {b} -type d -exec chmod 0700 {{}} +",
                b = view.join("boot").display()
            ),
        ],
    );
    assert!(view.join("boot/zImage").is_file(), "no zImage on the card");
    let pacman =
        |args: &[&str]| crate::common::pkgs::pacman(&view, &["--config", "/dev/null"], args);
    let q = pacman(&["-Q"]);
    let q = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(
        q.contains("linux-odroid-xu3 6.1.1-1") && q.contains("hc1-hooktest 1.0-1"),
        "pacman -Q on the node's view:\n{q}"
    );
    let k = pacman(&["-Qk"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&k.stdout),
        String::from_utf8_lossy(&k.stderr)
    );
    assert!(
        k.status.success()
            && !text.contains("warning")
            && text
                .lines()
                .filter(|l| l.contains(" total files, "))
                .count()
                == 2
            && text
                .lines()
                .filter(|l| l.contains(" total files, "))
                .all(|l| l.ends_with(" 0 missing files")),
        "pacman -Qk on the node's view (root + card at /boot):\n{text}"
    );
    let k = pacman(&["-Qkk"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&k.stdout),
        String::from_utf8_lossy(&k.stderr)
    );
    // Kernel B's files on the card are the package's bytes (sizes and checksums agree); what
    // the card's FAT does not keep is all that is reported, and only for /boot: the mode
    // (the mount's masks) and the time (one time for the whole volume, the build's).
    let mut boot_reports = 0;
    for line in text.lines().filter(|l| l.starts_with("warning: ")) {
        assert!(
            (line.contains(&format!("{}/boot/", view.display()))
                || line.contains(&format!("{}/boot (", view.display())))
                && (line.ends_with("(Permissions mismatch)")
                    || line.ends_with("(Modification time mismatch)")),
            "pacman -Qkk reports more than a FAT /boot explains: {line}\n{text}"
        );
        boot_reports += 1;
    }
    assert!(boot_reports > 0, "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("hc1-hooktest: ") && l.ends_with(" total files, 0 altered files")
        ),
        "{text}"
    );
    assert!(
        view.join(format!("usr/lib/modules/{kernel}/modules.dep"))
            .is_file(),
        "kernel {kernel}'s module indexes are not in the root"
    );
    std::fs::remove_dir_all(&view).unwrap();
}

/// hc1-hooktest's alpm hook: a Path trigger on its data files, `NeedsTargets`.
const HOOKTEST_HOOK: &str = "[Trigger]\nType = Path\nOperation = Install\nOperation = Upgrade\n\
    Target = usr/share/hc1-hooktest/*\n\n[Action]\nDescription = Indexing hc1-hooktest...\n\
    When = PostTransaction\nExec = /usr/bin/hc1-hooktest-index\nNeedsTargets\n";

/// One boot: the card image last (virtio 0 for U-Boot, /dev/vda for Linux), the SSD first.
/// Returns the serial log; panics with it when the boot does not finish in time.
fn boot(name: &str, ssd: &Path, sd: &Path, mac: &str, dir: &Path, usb: bool) -> String {
    let log = dir.join(format!("{name}.serial.log"));
    let started = Instant::now();
    // The SSD as a virtio disk, or (`usb`) as the HC1 has it: USB mass storage behind an
    // xHCI controller (highmem=off: the 32-bit armmp kernel can then claim the PCI window).
    let ssd_dev: &[&str] = if usb {
        &["-device", "qemu-xhci", "-device", "usb-storage,drive=ssd"]
    } else {
        &["-device", "virtio-blk-device,drive=ssd"]
    };
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-M",
            if usb { "virt,highmem=off" } else { "virt" },
            "-cpu",
            "cortex-a15",
            "-smp",
            "2",
            "-m",
            "1024",
        ])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-bios")
        .arg(UBOOT)
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("if=none,id=ssd,format=raw,file={}", ssd.display()))
        .args(ssd_dev)
        .arg("-drive")
        .arg(format!("if=none,id=sd,format=raw,file={}", sd.display()))
        .args(["-device", "virtio-blk-device,drive=sd"])
        .args(["-netdev", "user,id=n0"])
        .arg("-device")
        .arg(format!("virtio-net-device,netdev=n0,mac={mac}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oracle qemu-system-arm is missing (Debian's qemu-system-arm)");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    // Kept after the test for a look at what the node printed.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("boot_qemu-{name}.serial.log"));
    let _ = std::fs::write(&kept, &text);
    eprintln!(
        "boot {name}: {:.0} s, qemu {status:?}, serial log {}",
        started.elapsed().as_secs_f64(),
        kept.display()
    );
    match status {
        Some(s) if s.success() && text.contains("HC1TEST end") => text,
        _ => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "boot {name} did not finish (qemu: {status:?}, {err}) within {BOOT_TIMEOUT:?}; serial log:\n{text}"
            )
        }
    }
}

/// The `HC1TEST key=value` lines of a serial log (the `docker:` lines as one list).
fn report(log: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut kv = BTreeMap::new();
    let mut docker = Vec::new();
    for l in log.lines() {
        let Some(i) = l.find("HC1TEST ") else {
            continue;
        };
        let rest = l[i + 8..].trim_end_matches('\r');
        if let Some(call) = rest.strip_prefix("docker: ") {
            docker.push(call.to_string());
        } else if let Some((k, v)) = rest.split_once('=') {
            kv.insert(k.to_string(), v.trim().to_string());
        }
    }
    (kv, docker)
}

/// `hc1-health`'s lines as the report printed them, each `OK|FAIL|SKIP check message`.
fn health_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            Some(
                l[l.find("HC1TEST health: hc1-health: ")? + 28..]
                    .trim_end()
                    .to_string(),
            )
        })
        .collect()
}

/// The mail a failed backup run sends: from root at the relay's domain, to `[mail] root`
/// (root's alias), naming the node and the failure.
fn backup_failure_mail(m: &Mail, host: &str) {
    assert_eq!(m.from, "root@cluster.lan", "envelope sender: {m:#?}");
    assert_eq!(
        m.to,
        ["admin@cluster.lan"],
        "envelope recipient ([mail] root): {m:#?}"
    );
    assert_eq!(
        m.header("Subject"),
        Some(format!("[{host}] volume backup FAILED").as_str()),
        "{m:#?}"
    );
    assert!(
        m.header("From")
            .is_some_and(|f| f.contains("root@cluster.lan")),
        "From header: {m:#?}"
    );
    assert_eq!(m.header("To"), Some("root"), "{m:#?}");
    assert!(
        m.data
            .contains("cannot mount the backup share (mnt-backup.mount)"),
        "the mail does not say what failed: {m:#?}"
    );
}

fn joins(docker: &[String]) -> Vec<&String> {
    docker
        .iter()
        .filter(|c| c.starts_with("swarm join"))
        .collect()
}

fn dumpe2fs_field(fs: &Path, key: &str) -> String {
    let d = run_ok("dumpe2fs", &["-h", fs.to_str().unwrap()]);
    d.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in dumpe2fs -h:\n{d}"))
        .trim()
        .to_string()
}

fn write_secret(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Copy an image and make it `factor` times as large (a bigger SSD behind the same data).
fn copy_image(from: &Path, to: &Path, factor: u64) {
    run_ok(
        "cp",
        &[
            "--sparse=always",
            from.to_str().unwrap(),
            to.to_str().unwrap(),
        ],
    );
    let len = std::fs::metadata(from).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(to).unwrap();
    f.set_len(len * factor).unwrap();
}

/// Start and length in bytes of GPT partition 1, from `sgdisk -i 1`.
fn partition1(img: &Path) -> (u64, u64) {
    let out = run_ok("sgdisk", &["-i", "1", img.to_str().unwrap()]);
    let num = |key: &str| -> u64 {
        let l = out
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in sgdisk -i 1:\n{out}"));
        l[key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = num("First sector:");
    let last = num("Last sector:");
    (first * 512, (last - first + 1) * 512)
}

/// One message the SMTP sink received: its envelope and its data (headers and body).
#[derive(Debug, Clone)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

impl Mail {
    /// The value of header `name` (case-insensitive), if the message has it.
    fn header(&self, name: &str) -> Option<&str> {
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
    }
}

/// A mail sink: the SMTP server side of RFC 5321 that a relay client needs (greeting,
/// EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), on 127.0.0.1 only,
/// keeping every message. It stops when dropped.
struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (mails.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn
                    && let Err(e) = smtp_session(c, &m)
                {
                    eprintln!("smtp sink: session ended: {e}");
                }
            }
        });
        SmtpSink {
            port,
            mails,
            stop,
            thread: Some(thread),
        }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn smtp_session(conn: TcpStream, mails: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 hc1img-test-sink ESMTP\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let addr = |arg: &str| -> String {
        let a = arg.trim();
        let a = a.split_whitespace().next().unwrap_or("");
        a.trim_start_matches('<').trim_end_matches('>').to_string()
    };
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']);
        let verb = cmd.get(..4).unwrap_or(cmd).to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-hc1img-test-sink\r\n250 8BITMIME\r\n",
            "HELO" | "NOOP" => b"250 ok\r\n",
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                b"250 ok\r\n"
            }
            "MAIL" => match cmd.split_once(':') {
                Some((_, a)) => {
                    (from, to) = (addr(a), Vec::new());
                    b"250 ok\r\n"
                }
                None => b"501 MAIL FROM:<address>\r\n",
            },
            "RCPT" => match cmd.split_once(':') {
                Some((_, a)) => {
                    to.push(addr(a));
                    b"250 ok\r\n"
                }
                None => b"501 RCPT TO:<address>\r\n",
            },
            "DATA" => {
                w.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(l));
                    data.push('\n');
                }
                mails.lock().unwrap().push(Mail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 queued\r\n"
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        w.write_all(reply)?;
    }
}

#[test]
fn first_boot_in_qemu() {
    let tarball = fixture();
    for tool in ["qemu-system-arm", "sgdisk", "e2fsck", "dumpe2fs"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "oracle {tool} is missing (scripts/test installs it)"
        );
    }
    assert!(
        Path::new(UBOOT).is_file(),
        "{UBOOT} is missing (Debian's u-boot-qemu; scripts/test installs it)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = SmtpSink::start();
    let profile = write_profile(dir, sink.port);

    let out = dir.join("out");
    let built = crate::common::build_command(dir, &profile, &tarball, Some(&out))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // The identifiers the build chose, read back from the images with the oracles.
    let built_ssd = out.join("ssd.img");
    let info = run_ok("sgdisk", &["-i", "1", built_ssd.to_str().unwrap()]);
    let partuuid = info
        .lines()
        .find_map(|l| l.strip_prefix("Partition unique GUID: "))
        .unwrap_or_else(|| panic!("sgdisk -i 1:\n{info}"))
        .trim()
        .to_lowercase();
    let (start, len) = partition1(&built_ssd);
    let part_img = dir.join("root.ext4");
    extract(&built_ssd, start, len, &part_img);
    let fs_uuid = dumpe2fs_field(&part_img, "Filesystem UUID");
    std::fs::remove_file(&part_img).unwrap();

    // --- boot 1: the SSD on a disk twice its size --------------------------------------
    let (ssd, sd) = (dir.join("ssd.img"), dir.join("sd.img"));
    copy_image(&out.join("ssd.img"), &ssd, 2);
    copy_image(&out.join("sd.img"), &sd, 1);
    let log1 = boot("first", &ssd, &sd, "52:54:00:12:34:56", dir, false);
    let (r1, docker1) = report(&log1);
    let ctx = |what: &str| format!("{what}; report {r1:#?}\nlog:\n{log1}");
    assert!(
        log1.contains("hc1img: boot.scr for profile qemu-boot-test on board qemu-virt"),
        "{}",
        ctx("U-Boot did not run our boot.scr")
    );
    assert!(
        r1["cmdline"].contains("fsck.mode=force"),
        "{}",
        ctx("cmdline")
    );
    assert!(
        r1["cmdline"].contains("root=/dev/vdb1"),
        "{}",
        ctx("cmdline")
    );
    assert_eq!(
        r1["root"],
        format!("/dev/vdb1 ext4 {fs_uuid} {partuuid}"),
        "{}",
        ctx("root")
    );
    assert_eq!(r1["state"], "running", "{}", ctx("system state"));
    assert_eq!(r1["failed"], "", "{}", ctx("failed units"));
    let mid1 = r1["machine-id"].clone();
    assert!(
        mid1.len() == 32 && mid1.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        ctx("machine-id")
    );
    assert_eq!(r1["hostname"], "hc1-123456", "{}", ctx("hostname template"));
    assert!(
        r1["ssh-keys"].parse::<u32>().unwrap_or(0) >= 1,
        "{}",
        ctx("ssh host keys made at first boot")
    );
    // Root growth: partition 1 reaches the end of the doubled disk (less the backup GPT),
    // and the ext4 fills it.
    let disk: u64 = r1["disk-sectors"].parse().unwrap();
    let part: u64 = r1["part-sectors"].parse().unwrap();
    assert!(
        part + 2048 + 34 + 2048 >= disk,
        "{}",
        ctx(&format!("partition 1 has {part} of {disk} sectors"))
    );
    // Swarm: no token anywhere, so no join; the node waits without a failed unit.
    assert_eq!(joins(&docker1).len(), 0, "{}", ctx("swarm joins"));
    assert_eq!(r1["token-file"], "absent", "{}", ctx("token file"));
    assert_eq!(r1["swarm-unit"], "inactive", "{}", ctx("swarm unit"));
    assert!(
        log1.contains("hc1-swarm-join: no join token yet"),
        "{}",
        ctx("the join does not say it waits")
    );
    // No password hash: the admin account is locked; no mail password: none in msmtprc.
    assert_eq!(r1["admin-pw"], "!", "{}", ctx("admin account"));
    assert_eq!(r1["msmtp"], "0 600 root root", "{}", ctx("msmtprc"));
    assert!(
        r1["boot-modes"].starts_with("700"),
        "{}",
        ctx("/boot is root's alone")
    );
    // The daily operations ([backup], [cleanup]): timers enabled. The NAS is not on this
    // network: the boot did not wait for it (running, no failed unit, above), hc1-health says
    // so, and the backup run fails and mails root through the relay.
    assert_eq!(
        r1["timers"],
        "enabled enabled",
        "{}",
        ctx("operations timers")
    );
    let health = health_lines(&log1);
    for check in [
        "clock", "root", "docker", "swarm", "backup", "nas", "mail", "space",
    ] {
        assert!(
            health
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(check)),
            "{}",
            ctx(&format!("hc1-health printed no {check} line: {health:#?}"))
        );
    }
    assert!(
        health
            .iter()
            .any(|l| l.starts_with("FAIL nas") && l.contains("nas.cluster.lan:2049 unreachable")),
        "{}",
        ctx("hc1-health does not report the NAS unreachable")
    );
    for ok in ["OK   root", "OK   docker", "OK   space"] {
        assert!(
            health.iter().any(|l| l.starts_with(ok)),
            "{}",
            ctx(&format!("hc1-health: no `{ok}`"))
        );
    }
    assert_eq!(r1["health-rc"], "1", "{}", ctx("hc1-health exit status"));
    // The preloaded archive was loaded once, by the engine, and is gone from the node.
    assert_eq!(
        r1["preload"],
        "success yes left:",
        "{}",
        ctx("hc1-docker-preload.service")
    );
    assert_eq!(
        docker1
            .iter()
            .filter(|c| *c == "load -i /var/lib/hc1img/preload/app.tar")
            .count(),
        1,
        "{}",
        ctx("docker load of the preloaded archive")
    );
    assert!(
        health.iter().any(|l| l.starts_with("OK   preload")),
        "{}",
        ctx("hc1-health: no `OK   preload`")
    );
    assert!(
        log1.lines()
            .any(|l| l.contains("HC1LOG hc1-health: FAIL nas")),
        "{}",
        ctx("hc1-health.service did not report after the first boot")
    );
    assert_eq!(
        r1["backup"],
        "1 exit-code",
        "{}",
        ctx("backup without its NAS")
    );
    assert_eq!(r1["cleanup"], "0 success", "{}", ctx("clean-up service"));
    assert_eq!(
        r1["failed-after-ops"],
        "hc1-volume-backup.service",
        "{}",
        ctx("the failed backup run is the only failed unit (its mount unit is not left failed)")
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{}", ctx(&format!("mails: {mails:#?}")));
    backup_failure_mail(&mails[0], "hc1-123456");
    assert!(
        docker1.iter().any(|c| c.contains("prune")),
        "{}",
        ctx("the clean-up did not prune")
    );
    assert!(!log1.contains(&format!("hc1-swarm-join: {TOKEN}")));
    assert!(
        log1.lines()
            .filter(|l| l.contains("HC1LOG"))
            .all(|l| !l.contains(TOKEN)),
        "{}",
        ctx("the token reached the journal")
    );

    // After power-off: the enlarged disk's GPT is valid, the ext4 clean and as big as its
    // partition.
    let v = run_ok("sgdisk", &["-v", ssd.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let (start, len) = partition1(&ssd);
    extract(&ssd, start, len, &part_img);
    let fsck = Command::new("e2fsck")
        .args(["-fn", part_img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn after boot 1:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let field = |k: &str| -> u64 {
        dumpe2fs_field(&part_img, k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} in dumpe2fs is not a number"))
    };
    let fs_bytes = field("Block count") * field("Block size");
    assert!(
        fs_bytes + 4 * 1024 * 1024 >= len && fs_bytes <= len,
        "the ext4 ({fs_bytes} bytes) does not fill partition 1 ({len} bytes)"
    );
    std::fs::remove_file(&part_img).unwrap();

    // --- boot 2: the same disks, the card re-seeded with the secrets ---------------------
    let sd2 = dir.join("sd2.img");
    let (t2, h2, m2) = (dir.join("s-token"), dir.join("s-hash"), dir.join("s-mail"));
    write_secret(&t2, TOKEN);
    write_secret(&h2, ADMIN_HASH);
    write_secret(&m2, MAIL_PW);
    let seeded = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("seed")
        .arg(&sd)
        .arg("--output")
        .arg(&sd2)
        .arg("--secret")
        .arg(format!("swarm_worker_token={}", t2.display()))
        .arg("--secret")
        .arg(format!("admin_password_hash={}", h2.display()))
        .arg("--secret")
        .arg(format!("mail_password={}", m2.display()))
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "hc1img seed: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let log2 = boot("second", &ssd, &sd2, "52:54:00:12:34:56", dir, false);
    let (r2, docker2) = report(&log2);
    let ctx2 = |what: &str| format!("{what}; report {r2:#?}\nlog:\n{log2}");
    assert_eq!(r2["state"], "running", "{}", ctx2("system state"));
    assert_eq!(r2["failed"], "", "{}", ctx2("failed units"));
    // Loaded at the first boot only: the unit's condition keeps it from running again.
    assert_eq!(r2["preload"], "success no left:", "{}", ctx2("preload"));
    assert_eq!(
        docker2.iter().filter(|c| c.starts_with("load ")).count(),
        1,
        "{}",
        ctx2("docker load ran again")
    );
    assert_eq!(r2["machine-id"], mid1, "boot 2 changed the machine-id");
    assert_eq!(r2["hostname"], "hc1-123456");
    let j = joins(&docker2);
    assert_eq!(j.len(), 1, "{}", ctx2("swarm joins"));
    assert_eq!(
        j[0].as_str(),
        format!("swarm join --token {TOKEN} --advertise-addr eth0 hc1-manager-1.cluster.lan:2377"),
        "{}",
        ctx2("swarm join")
    );
    assert_eq!(
        r2["token-file"],
        "absent",
        "{}",
        ctx2("token removed after the join")
    );
    assert_eq!(
        r2["secrets-dir"],
        "700 root",
        "{}",
        ctx2("secrets directory")
    );
    assert_eq!(r2["admin-pw"], "$6$", "{}", ctx2("admin password hash"));
    assert_eq!(r2["msmtp"], "1 600 root root", "{}", ctx2("msmtprc"));
    assert_eq!(
        r2["card-received"],
        "admin_password_hash mail_password swarm_worker_token",
        "{}",
        ctx2("secrets taken from the card")
    );
    assert_eq!(r2["seed-left"], "", "{}", ctx2("secrets left on the card"));
    assert_eq!(r2["boot-modes"], "700 700", "{}", ctx2("/boot modes"));
    // The NAS is back (a bind mount stands in for it): the backup run succeeds, lists the
    // volumes through the stand-in docker and unmounts the share after it.
    assert_eq!(
        r2["backup"],
        "0 success",
        "{}",
        ctx2("backup with its NAS back")
    );
    assert_eq!(
        r2["backup-mounted-after"],
        "no",
        "{}",
        ctx2("share left mounted")
    );
    assert_eq!(
        r2["failed-after-ops"],
        "",
        "{}",
        ctx2("failed units after the operations")
    );
    assert!(
        docker2.iter().any(|c| c.starts_with("volume ls")),
        "{}",
        ctx2("the backup did not list the volumes")
    );
    assert_eq!(sink.mails().len(), 1, "boot 2 mailed: {:#?}", sink.mails());
    for v in [TOKEN, ADMIN_HASH, MAIL_PW] {
        assert!(
            log2.lines()
                .filter(|l| l.contains("HC1LOG"))
                .all(|l| !l.contains(v)),
            "{}",
            ctx2("a secret reached the journal")
        );
    }
    // The card after the boot: a clean FAT without the secrets.
    let fat = dir.join("sd2.fat");
    let sd2_len = std::fs::metadata(&sd2).unwrap().len();
    extract(&sd2, 8192 * 512, sd2_len - 8192 * 512, &fat);
    let fsck = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck.fat -n of the card after boot 2:\n{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let left = run_ok(
        "mdir",
        &["-i", fat.to_str().unwrap(), "-b", "::/hc1img-seed/secrets"],
    );
    assert_eq!(left.trim(), "", "secrets left on the card: {left}");
    std::fs::remove_file(&fat).unwrap();

    // --- boot 3: the kernel upgrade, booted as the HC1 boots: root on USB storage --------
    // The same profile on a board whose SSD is USB mass storage, built from a tarball whose
    // local database owns kernel A and a signed repository offering kernel B, with the
    // shipped defaults ([packages] upgrade = true): the build installs B, indexes its modules
    // and gives the card an initramfs for B. Another MAC, a card seeded with an address.
    let (upgrade_tarball, mirror) = kernel_upgrade_inputs(dir, &tarball);
    let (_, kernel_a, kernel_b) = crate::common::test_kernels();
    let usb_profile = dir.join("qemu-usb-test.toml");
    std::fs::write(
        &usb_profile,
        format!(
            r#"extends = "qemu-boot-test.toml"
name = "qemu-usb-test"
board = {board:?}

# Signed like Arch Linux ARM's tarball; pinned on first use into hc1img.lock beside this file.
[source]
url = {url:?}
signature = "{url}.sig"
mirrors = ["!*"]
keyring = {key:?}

[fstab]
root_device = "/dev/sda1"

[packages]
install = ["!*", "linux-odroid-xu3", "hc1-hooktest"]
repositories = ["!*", "core"]
mirrors = ["!*", {mirror:?}]
keyring = {key:?}
"#,
            board = repo()
                .join("profiles/boards/qemu-virt-usb.toml")
                .display()
                .to_string(),
            url = upgrade_tarball.display().to_string(),
            key = dir.join("keyring.asc").display().to_string(),
        ),
    )
    .unwrap();
    let usb_out = dir.join("out-usb");
    let built = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(dir)
        .env("HC1IMG_CACHE", dir.join("cache"))
        .arg("build")
        .arg(&usb_profile)
        .args(crate::common::worker_secrets(dir))
        .arg("--out")
        .arg(&usb_out)
        .output()
        .unwrap();
    let build_log = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(
        built.status.success(),
        "kernel-upgrade build failed:\n{build_log}"
    );
    assert!(
        build_log.contains(&format!("modules were for kernel {kernel_a}"))
            && build_log.contains(&format!("kernel {kernel_b} (the card's zImage)")),
        "the build does not say it made an initramfs for {kernel_b}:\n{build_log}"
    );
    assert!(
        dir.join("hc1img.lock").is_file(),
        "the pins went elsewhere:\n{build_log}"
    );
    assert!(
        build_log.contains("alpm hook 60-hc1-hooktest.hook: deferred to the first boot")
            && build_log.contains("with 3 targets on stdin"),
        "the build does not say it deferred hc1-hooktest's hook:\n{build_log}"
    );
    node_view_pacman_check(dir, &usb_out, &kernel_b);
    std::fs::remove_file(&upgrade_tarball).unwrap();
    let (ssd3, sd3) = (dir.join("ssd3.img"), dir.join("sd3.img"));
    copy_image(&usb_out.join("ssd.img"), &ssd3, 1);
    let token3 = dir.join("seed-token");
    write_secret(&token3, SEED_TOKEN);
    let seeded = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("seed")
        .arg(usb_out.join("sd.img"))
        .arg("--output")
        .arg(&sd3)
        .args(["--address", "10.0.2.99/24", "--gateway", "10.0.2.2"])
        .args(["--label", "zone=rack-b"])
        .arg("--secret")
        .arg(format!("swarm_worker_token={}", token3.display()))
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "hc1img seed: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let log3 = boot("usb-upgrade", &ssd3, &sd3, "52:54:00:ab:cd:ef", dir, true);
    let (r3, docker3) = report(&log3);
    assert_eq!(r3["state"], "running", "boot 3: {r3:#?}\n{log3}");
    assert_eq!(r3["failed"], "", "boot 3: {r3:#?}");
    // Kernel B booted, its USB storage driver came from the initramfs, and a module no
    // initramfs holds resolves from the root's indexes written at build time.
    assert_eq!(r3["kernel"], kernel_b, "boot 3: {r3:#?}");
    assert_eq!(r3["usb-storage"], "loaded", "boot 3: {r3:#?}");
    assert!(r3["root"].starts_with("/dev/sda1 ext4 "), "boot 3: {r3:#?}");
    assert!(
        r3["modprobe-bridge"].contains("bridge.ko"),
        "modprobe --show-depends bridge at the first boot: {r3:#?}"
    );
    assert_ne!(r3["machine-id"], mid1, "two copies share a machine-id");
    assert_eq!(r3["hostname"], "hc1-abcdef");
    assert!(
        r3["seed-network"].contains("MACAddress=52:54:00:ab:cd:ef")
            && r3["seed-network"].contains("Address=10.0.2.99/24")
            && r3["seed-network"].contains("Gateway=10.0.2.2"),
        "boot 3: {r3:#?}"
    );
    assert_eq!(r3["seed-left"], "", "the seeded token stayed on the card");
    // hc1-hooktest's own hook ran at the first boot, with its matched targets on stdin
    // (sorted, the directory too: `*` matches the empty name), and only once.
    assert_eq!(
        r3["hook-targets"],
        "usr/share/hc1-hooktest/ usr/share/hc1-hooktest/a.txt usr/share/hc1-hooktest/b.txt",
        "boot 3: {r3:#?}"
    );
    // The unit succeeded (RemainAfterExit) and took its marker away: it will not run again.
    assert_eq!(r3["deferred"], "success active done", "boot 3: {r3:#?}");
    assert!(
        r3["engine-labels"].contains("\"zone=rack-b\""),
        "the card's --label is not an engine label in daemon.json: {r3:#?}"
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "boot 3: {mails:#?}");
    backup_failure_mail(&mails[1], "hc1-abcdef");
    let j3 = joins(&docker3);
    assert_eq!(j3.len(), 1, "boot 3: {docker3:#?}");
    assert!(
        j3[0].contains(&format!("--token {SEED_TOKEN} ")),
        "boot 3 did not use the seeded token: {j3:?}"
    );
    // The built images are untouched by booting copies of them.
    for o in [&out, &usb_out] {
        let verify = Command::new(env!("CARGO_BIN_EXE_hc1img"))
            .arg("verify")
            .arg(o)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{verify:?}");
    }
}
