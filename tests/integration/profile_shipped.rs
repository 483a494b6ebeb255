//! The profiles shipped in `profiles/` load cleanly and say what target.md's node template says.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use hc1img::profile::{self, Overrides, Profile};
use hc1img::sections::swarm::SwarmRole;

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

/// Overrides supplying every secret the shipped profiles declare, from a private temp dir.
fn secrets(dir: &Path) -> Overrides {
    let mut ov = Overrides::default();
    for name in [
        "admin_password_hash",
        "mail_password",
        "swarm_worker_token",
        "swarm_manager_token",
    ] {
        let p = dir.join(name);
        std::fs::write(&p, format!("value of {name}\n")).expect("write secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        ov.secrets.insert(name.to_string(), p);
    }
    ov
}

fn load(name: &str, dir: &Path) -> Profile {
    let mut ov = secrets(dir);
    // Only pass the secrets this profile declares.
    let probe = std::fs::read_to_string(profiles_dir().join(name)).expect("read profile");
    for tok in ["swarm_worker_token", "swarm_manager_token"] {
        if !probe.contains(tok) {
            ov.secrets.remove(tok);
        }
    }
    profile::load(&profiles_dir().join(name), &ov)
        .unwrap_or_else(|e| panic!("profiles/{name}: {e:#}"))
}

fn check_common(p: &Profile) {
    let b = &p.board;
    assert_eq!(b.name, "odroid-hc1");
    assert_eq!(b.arch, "armv7h");
    let blobs: Vec<(&str, u64)> =
        b.sd.blobs
            .iter()
            .map(|x| (x.file.as_str(), x.sector))
            .collect();
    assert_eq!(
        blobs,
        vec![
            ("bl1.bin", 1),
            ("bl2.bin", 31),
            ("u-boot.bin", 63),
            ("tzsw.bin", 2111)
        ]
    );
    assert_eq!(b.sd.first_sector, 8192);
    let env = b.sd.env_area.expect("env area");
    assert_eq!((env.sector, env.sectors), (6272, 32));
    assert!(env.sector + env.sectors <= b.sd.first_sector);

    let src = p.source.clone().expect("source");
    assert_eq!(
        src.fetch_urls[0],
        "http://os.archlinuxarm.org/os/ArchLinuxARM-odroid-xu3-latest.tar.gz"
    );
    assert_eq!(
        p.lock_path(),
        Some(profiles_dir().join("hc1img.lock").as_path())
    );

    // target.md's node template, section by section.
    let n = &p.node;
    assert_eq!(n.users.remove, vec!["alarm".to_string()]);
    assert!(n.users.root_password_secret.is_none());
    assert!(n.users.sudo_wheel, "the admin gets sudo through wheel");
    assert!(n.users.create_groups.contains(&"docker".to_string()));
    let admin = n
        .users
        .add
        .iter()
        .find(|u| u.name == "admin")
        .expect("admin user");
    assert!(admin.groups.contains(&"wheel".to_string()));
    assert!(admin.groups.contains(&"docker".to_string()));
    assert_eq!(
        admin.password_secret.as_deref(),
        Some("admin_password_hash")
    );
    assert_eq!(n.system.hostname.as_deref(), Some("hc1-{mac6}"));
    assert_eq!(n.system.locale, "C.UTF-8");
    assert!(n.system.first_boot_reset);
    assert!(n.ssh.enable);
    assert_eq!(n.ssh.permit_root_login, "no");
    assert_eq!(n.journald.runtime_max_use, "50M");
    assert_eq!(n.journald.storage.as_str(), "volatile");
    let daemon = &n.docker.daemon;
    assert_eq!(
        daemon.get("storage-driver").and_then(|v| v.as_str()),
        Some("overlay2")
    );
    assert!(
        daemon
            .get("insecure-registries")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a
                .iter()
                .any(|r| r.as_str() == Some("registry.cluster.lan:5000")))
    );
    assert_eq!(n.io_scheduler.scheduler.as_str(), "mq-deadline");
    assert!(
        n.io_scheduler
            .devices
            .iter()
            .any(|d| d.starts_with("mmcblk"))
    );
    assert!(n.io_scheduler.devices.iter().any(|d| d.starts_with("sd")));
    assert_eq!(n.mail.mailhub.as_deref(), Some("smtp.cluster.lan:587"));
    assert!(n.mail.use_starttls && !n.mail.use_tls);
    assert_eq!(n.mail.auth_pass_secret.as_deref(), Some("mail_password"));
    assert!(!n.mirrorlist.servers.is_empty());
    // cron stays for the site's own jobs; the daily operations are the timer modules.
    assert!(n.cron.enable && n.cron.jobs.is_empty());
    assert_eq!(n.backup.target, hc1img::sections::backup::Target::Nfs);
    assert_eq!(n.backup.mount_point, "/mnt/backup");
    assert!(n.cleanup.enable);
    assert_eq!(
        n.builds.registry.as_deref(),
        Some("registry.cluster.lan:5000")
    );
    assert_eq!(n.fstab.root_device, "/dev/sda1");
    assert!(n.fstab.boot);
    // The site's files for every node (overlays/common, first; the roles' after it).
    assert!(n.overlays.dirs[0].ends_with("overlays/common"));
    assert_eq!(p.files.overlays, n.overlays.dirs);

    let cmdline = p.kernel_cmdline(None).expect("cmdline");
    assert_eq!(
        cmdline,
        "console=tty1 console=ttySAC2,115200n8 root=/dev/sda1 rw rootwait fsck.mode=force fsck.repair=yes usb-storage.quirks=152d:0578:u"
    );
    let txt = p.boot_txt(None).expect("boot.txt");
    assert!(
        txt.contains(&format!("setenv bootargs \"{cmdline}\"")),
        "{txt}"
    );
    for uboot in [
        "load ${devtype} ${devnum}:${bootpart} ${kernel_addr_r} zImage",
        "${fdt_addr_r} dtbs/exynos5422-odroidhc1.dtb",
        "${ramdisk_addr_r} initramfs-linux.img",
        "bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr_r}",
        "setenv bootpart \"${distro_bootpart}\"",
    ] {
        assert!(txt.contains(uboot), "boot.txt lacks {uboot:?}:\n{txt}");
    }
    // The HC1's RTL8153 (r8152) has no MAC parameter; the XU3's smsc95xx one does nothing.
    assert!(!txt.contains("macaddr"), "{txt}");
    // Our placeholders are all filled; U-Boot's `${bootargs}` stays.
    assert_eq!(
        txt.matches("{bootargs}").count(),
        txt.matches("${bootargs}").count(),
        "{txt}"
    );
    assert!(!txt.contains("{set_macaddr}"), "{txt}");
    assert!(
        !txt.contains("/boot/"),
        "boot files sit at the FAT root:\n{txt}"
    );
}

#[test]
fn worker_loads() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = load("worker.toml", d.path());
    assert_eq!(p.name, "worker");
    check_common(&p);
    let sw = p.swarm().expect("swarm");
    assert_eq!(sw.role, SwarmRole::Worker);
    assert_eq!(sw.token_secret.as_deref(), Some("swarm_worker_token"));
    assert!(!sw.managers.is_empty());
    // Handed over with --secret, but not baked: never read, taken from the card.
    assert_eq!(
        p.secrets.get("swarm_worker_token"),
        Some(&profile::SecretSource::Card)
    );
    assert!(p.secret("swarm_worker_token").is_err());
    assert_eq!(p.files.profiles.len(), 2);
    assert!(!p.node.builds.enable, "builds run on the managers only");
}

#[test]
fn manager_loads() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = load("manager.toml", d.path());
    assert_eq!(p.name, "manager");
    check_common(&p);
    assert_eq!(p.swarm().map(|s| s.role), Some(SwarmRole::Manager));
    assert!(p.node.builds.enable, "managers run the image builds");
}

#[test]
fn leader_loads() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = load("leader.toml", d.path());
    assert_eq!(p.name, "leader");
    check_common(&p);
    assert_eq!(p.swarm().map(|s| s.role), Some(SwarmRole::Init));
    assert!(p.node.builds.enable, "managers run the image builds");
}

/// What each shipped profile's sections run (`Section::needs`: `[mail]`'s sendmail, `[backup]`'s
/// `mount.nfs`, `[builds]`' docker-buildx) comes from a package the profile installs: the first
/// word of each need's package is in `[packages] install`.
#[test]
fn shipped_profiles_install_what_their_sections_need() {
    let d = tempfile::tempdir().unwrap();
    for name in [
        "worker.toml",
        "manager.toml",
        "leader.toml",
        "qemu-worker.toml",
    ] {
        let p = load(name, d.path());
        let install = &p.packages.as_ref().expect("[packages]").config.install;
        let needs = hc1img::sections::needs_all(&p.node);
        assert!(
            needs.iter().any(|n| n.by.starts_with("[backup]")),
            "{name}: {needs:?}"
        );
        for n in &needs {
            let pkg = n.package.split([',', ' ']).next().unwrap();
            assert!(
                install.iter().any(|i| i == pkg),
                "profiles/{name}: {} needs /{} from {pkg}, which [packages] install {install:?} lacks",
                n.by,
                n.paths[0]
            );
        }
        let builds = needs.iter().any(|n| n.package == "docker-buildx");
        assert_eq!(
            builds,
            name != "worker.toml" && name != "qemu-worker.toml",
            "{name}"
        );
    }
}

#[test]
fn shipped_lock_file_parses() {
    let lock = profile::read_lock(&profiles_dir().join("hc1img.lock")).expect("lock");
    for pin in lock.pins.values() {
        assert!(profile::is_sha256_hex(&pin.sha256));
    }
}

/// The shipped profiles load with no secret file at all: they bake none.
#[test]
fn shipped_profiles_load_without_any_secret_file() {
    for name in [
        "worker.toml",
        "manager.toml",
        "leader.toml",
        "qemu-worker.toml",
        "base.toml",
    ] {
        let p = profile::load(&profiles_dir().join(name), &Overrides::default())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(!p.secrets.is_empty(), "{name} declares its secrets");
        for (s, src) in &p.secrets {
            assert_eq!(*src, profile::SecretSource::Card, "{name}: {s} is baked");
        }
        assert!(p.files.secrets.is_empty(), "{name} reads a secret file");
    }
}

#[test]
fn lock_roundtrip_and_override_pin() {
    let d = tempfile::tempdir().expect("tempdir");
    let url = "http://os.archlinuxarm.org/os/ArchLinuxARM-odroid-xu3-latest.tar.gz";
    let mut lock = profile::LockFile::default();
    lock.pins.insert(
        url.to_string(),
        profile::Pin {
            sha256: "ab".repeat(32),
            size: Some(42),
            signature: None,
            signer: None,
        },
    );
    let path = d.path().join("hc1img.lock");
    profile::write_lock(&path, &lock).expect("write");
    assert_eq!(profile::read_lock(&path).expect("read"), lock);

    let ov = Overrides {
        source_url: Some("file:///srv/root.tar.gz".into()),
        source_sha256: Some("cd".repeat(32)),
        ..secrets(d.path())
    };
    let mut ov = ov;
    ov.secrets.remove("swarm_manager_token");
    let p = profile::load(&profiles_dir().join("worker.toml"), &ov).expect("load");
    let spec = p.source.clone().expect("spec");
    assert_eq!(spec.fetch_urls, vec!["file:///srv/root.tar.gz".to_string()]);
    assert_eq!(spec.sha256.as_deref(), Some("cd".repeat(32).as_str()));
    assert_eq!(spec.size, None);
    assert_eq!(spec.require_sha256().expect("pinned"), "cd".repeat(32));
}

#[test]
fn qemu_board_loads_under_a_shipped_profile() {
    let d = tempfile::tempdir().expect("tempdir");
    let board = profiles_dir().join("boards/qemu-virt.toml");
    let worker = profiles_dir().join("worker.toml");
    let p = d.path().join("qemu.toml");
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nname = \"qemu\"\nboard = {:?}\n[boot]\nfsck_force = false\nuas_quirk = false\n",
            worker.display().to_string(),
            board.display().to_string()
        ),
    )
    .expect("write");
    let mut ov = secrets(d.path());
    ov.secrets.remove("swarm_manager_token");
    let prof = profile::load(&p, &ov).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(prof.board.name, "qemu-virt");
    assert!(prof.board.sd.blobs.is_empty());
    // The child's board wins over base's, and its root_device is the default root=.
    assert_eq!(prof.files.board, board);
    assert_eq!(
        prof.kernel_cmdline(None).expect("cmdline"),
        "console=ttyAMA0 root=/dev/vdb1 rw rootwait"
    );
    let txt = prof.boot_txt(None).expect("boot.txt");
    assert!(
        txt.contains("bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}"),
        "{txt}"
    );
}
