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
//! Boots: (1) the built images, with no secret (the images hold none), the SSD enlarged to
//! twice its size: the node reaches `running` with no failed unit and waits for a join token;
//! (2) the same disks with a card seeded by `hc1img seed` (token, admin password hash, mail
//! password): the node takes the secrets (root-only modes), erases them from the card (still
//! `fsck.fat -n` clean) and joins once with the seeded token; (3) fresh copies of the built
//! images with another MAC and a card seeded with an address and a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{extract, repo, run_ok};

const UBOOT: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
/// Hard limit of one boot (TCG on 2 cores: a boot takes about a minute).
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
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

const REPORT: &str = r#"#!/bin/sh
# hc1img boot test: report the node's state on the console once the boot is over.
state=$(systemctl is-system-running --wait)
say() { echo "HC1TEST $*" >/dev/console; }
say "state=$state"
say "failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
say "machine-id=$(cat /etc/machine-id)"
say "hostname=$(cat /proc/sys/kernel/hostname)"
say "cmdline=$(cat /proc/cmdline)"
src=$(findmnt -no SOURCE /)
say "root=$src $(findmnt -no FSTYPE /) $(lsblk -dno UUID,PARTUUID "$src" | tr -s ' ')"
say "disk-sectors=$(cat /sys/block/vdb/size)"
say "part-sectors=$(cat /sys/class/block/vdb1/size)"
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
say "timers=$(systemctl is-enabled hc1-volume-backup.timer hc1-docker-cleanup.timer | tr '\n' ' ')"
systemctl start hc1-volume-backup.service
say "backup=$? $(systemctl show -p Result --value hc1-volume-backup.service)"
systemctl start hc1-docker-cleanup.service
say "cleanup=$? $(systemctl show -p Result --value hc1-docker-cleanup.service)"
say "failed-after-ops=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
while IFS= read -r line; do say "docker: $line"; done </var/lib/docker-standin/calls.log
journalctl -b --no-pager -o cat -u hc1-firstboot -u hc1-card-secrets -u hc1-swarm-join -u systemd-repart \
    -u systemd-growfs-root | sed 's/^/HC1LOG /' >/dev/console
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

/// The test profile: qemu-worker.toml on the Debian fixture, plus the report overlay.
fn write_profile(dir: &Path) -> PathBuf {
    let ov = dir.join("overlay");
    std::fs::create_dir_all(ov.join("usr/local/lib/hc1img-test")).unwrap();
    std::fs::create_dir_all(ov.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::fs::write(ov.join("usr/local/lib/hc1img-test/report"), REPORT).unwrap();
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
    let profile = dir.join("qemu-boot-test.toml");
    std::fs::write(
        &profile,
        format!(
            r#"# The boot test's profile: qemu-worker.toml on the Debian armhf fixture.
extends = "{qemu}"
name = "qemu-boot-test"

[rootfs]
size = "1GiB"

[users]
# Debian has no wheel group: make it, as Arch Linux ARM has it.
create_groups = ["docker", "wheel"]

[cron]
# Debian's cron daemon is not in the fixture.
enable = false

[backup]
# No NAS in the VM: back up to a local directory.
target = "local"
mount_point = "/var/backups/hc1"

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

/// One boot: the card image last (virtio 0 for U-Boot, /dev/vda for Linux), the SSD first.
/// Returns the serial log; panics with it when the boot does not finish in time.
fn boot(name: &str, ssd: &Path, sd: &Path, mac: &str, dir: &Path) -> String {
    let log = dir.join(format!("{name}.serial.log"));
    let started = Instant::now();
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-M",
            "virt",
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
        .args(["-device", "virtio-blk-device,drive=ssd"])
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
    let profile = write_profile(dir);

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
    let log1 = boot("first", &ssd, &sd, "52:54:00:12:34:56", dir);
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
    // The daily operations ([backup], [cleanup]): timers enabled, one run each succeeds
    // against the stand-in docker.
    assert_eq!(
        r1["timers"],
        "enabled enabled",
        "{}",
        ctx("operations timers")
    );
    assert_eq!(r1["backup"], "0 success", "{}", ctx("backup service"));
    assert_eq!(r1["cleanup"], "0 success", "{}", ctx("clean-up service"));
    assert_eq!(
        r1["failed-after-ops"],
        "",
        "{}",
        ctx("failed units after the operations")
    );
    assert!(
        docker1.iter().any(|c| c.starts_with("volume ls")),
        "{}",
        ctx("the backup did not list the volumes")
    );
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
    let log2 = boot("second", &ssd, &sd2, "52:54:00:12:34:56", dir);
    let (r2, docker2) = report(&log2);
    let ctx2 = |what: &str| format!("{what}; report {r2:#?}\nlog:\n{log2}");
    assert_eq!(r2["state"], "running", "{}", ctx2("system state"));
    assert_eq!(r2["failed"], "", "{}", ctx2("failed units"));
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

    // --- boot 3: another copy of the same images, another MAC, a seeded card -------------
    let (ssd3, sd3) = (dir.join("ssd3.img"), dir.join("sd3.img"));
    copy_image(&out.join("ssd.img"), &ssd3, 1);
    let token3 = dir.join("seed-token");
    write_secret(&token3, SEED_TOKEN);
    let seeded = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("seed")
        .arg(out.join("sd.img"))
        .arg("--output")
        .arg(&sd3)
        .args(["--address", "10.0.2.99/24", "--gateway", "10.0.2.2"])
        .arg("--secret")
        .arg(format!("swarm_worker_token={}", token3.display()))
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "hc1img seed: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let log3 = boot("copy", &ssd3, &sd3, "52:54:00:ab:cd:ef", dir);
    let (r3, docker3) = report(&log3);
    assert_eq!(r3["state"], "running", "boot 3: {r3:#?}\n{log3}");
    assert_eq!(r3["failed"], "", "boot 3: {r3:#?}");
    assert_ne!(r3["machine-id"], mid1, "two copies share a machine-id");
    assert_eq!(r3["hostname"], "hc1-abcdef");
    assert!(
        r3["seed-network"].contains("MACAddress=52:54:00:ab:cd:ef")
            && r3["seed-network"].contains("Address=10.0.2.99/24")
            && r3["seed-network"].contains("Gateway=10.0.2.2"),
        "boot 3: {r3:#?}"
    );
    assert_eq!(r3["seed-left"], "", "the seeded token stayed on the card");
    let j3 = joins(&docker3);
    assert_eq!(j3.len(), 1, "boot 3: {docker3:#?}");
    assert!(
        j3[0].contains(&format!("--token {SEED_TOKEN} ")),
        "boot 3 did not use the seeded token: {j3:?}"
    );
    // The built images are untouched by booting copies of them.
    let verify = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}
