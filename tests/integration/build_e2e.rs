//! End-to-end: the `hc1img` binary builds the shipped worker profile from an Arch-Linux-ARM
//! shaped tarball, and the two images are checked with tools nobody here wrote: sgdisk,
//! sfdisk, blkid, e2fsck, debugfs, fsck.fat, mtools, mkimage/dumpimage.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::common::*;

const ROOT_OFFSET: u64 = 1 << 20;
const BOOT_OFFSET: u64 = 8192 * 512;

/// Run `hc1img build` on `profile` with the tarball as source; returns (status, stderr).
fn hc1img_build(
    cwd: &Path,
    profile: &Path,
    tarball: &Path,
    out: Option<&Path>,
    extra: &[&str],
) -> (bool, String) {
    let mut cmd = build_command(cwd, profile, tarball, out);
    cmd.env_remove("SOURCE_DATE_EPOCH").args(extra);
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn build_ok(cwd: &Path, tarball: &Path, out: &Path) {
    let (ok, err) = hc1img_build(
        cwd,
        &repo().join("profiles/worker.toml"),
        tarball,
        Some(out),
        &[],
    );
    assert!(ok, "hc1img build failed:\n{err}");
}

#[test]
fn worker_images_pass_the_oracles() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let out = tmp.path().join("out");
    build_ok(tmp.path(), &tarball, &out);
    let ssd = out.join("ssd.img");
    let sd = out.join("sd.img");

    // GPT: valid, exactly one partition of the ARM root type named root at 1 MiB.
    let v = run_ok("sgdisk", &["-v", ssd.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let parts = j["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(j["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(
        parts[0]["type"].as_str().unwrap().to_lowercase(),
        "69dad710-2ce4-4e3c-b16c-21a1d49abed3"
    );
    assert_eq!(parts[0]["name"], "root");
    let root_len = parts[0]["size"].as_u64().unwrap() * 512;
    let b = run_ok(
        "blkid",
        &["-p", "-O", &ROOT_OFFSET.to_string(), ssd.to_str().unwrap()],
    );
    assert!(
        b.contains("TYPE=\"ext4\"") && b.contains("LABEL=\"root\""),
        "{b}"
    );

    // ext4: clean, and the node configuration is in it.
    let root = tmp.path().join("root.ext4");
    extract(&ssd, ROOT_OFFSET, root_len, &root);
    let fsck = run("e2fsck", &["-fn", root.to_str().unwrap()]);
    assert!(
        fsck.status.success(),
        "e2fsck -fn found problems:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let passwd = debugfs(&root, "cat /etc/passwd");
    assert!(!passwd.contains("alarm"), "{passwd}");
    assert!(passwd.contains("admin:x:1000:"), "{passwd}");
    let caps = debugfs(&root, "ea_list /usr/bin/ping");
    assert!(caps.contains("security.capability"), "{caps}");
    let fstab = debugfs(&root, "cat /etc/fstab");
    assert!(fstab.contains("/dev/sda1 / ext4"), "{fstab}");
    assert!(fstab.contains(" /boot vfat "), "{fstab}");
    let boot_dir = debugfs(&root, "ls /boot");
    assert!(
        !boot_dir.contains("zImage"),
        "the ext4 /boot must be an empty mount point: {boot_dir}"
    );
    assert_eq!(debugfs(&root, "cat /etc/machine-id"), "uninitialized\n");

    // sd.img: MBR with one bootable FAT32 partition at 8192.
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", sd.to_str().unwrap()])).unwrap();
    let parts = j["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(j["partitiontable"]["label"], "dos");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["start"], 8192);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    let boot_len = parts[0]["size"].as_u64().unwrap() * 512;
    let b = run_ok(
        "blkid",
        &["-p", "-O", &BOOT_OFFSET.to_string(), sd.to_str().unwrap()],
    );
    assert!(b.contains("TYPE=\"vfat\""), "{b}");
    // fstab mounts exactly this volume at /boot.
    let uuid = b
        .split("UUID=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        fstab.contains(&format!("UUID={uuid} /boot vfat")),
        "{fstab} vs {uuid}"
    );
    let boot = tmp.path().join("boot.fat");
    extract(&sd, BOOT_OFFSET, boot_len, &boot);
    let f = run("fsck.fat", &["-n", boot.to_str().unwrap()]);
    assert!(
        f.status.success(),
        "fsck.fat -n: {}",
        String::from_utf8_lossy(&f.stdout)
    );

    // Every /boot file of the tarball is on the card with the same bytes; blobs at their sectors.
    let card = std::fs::read(&sd).unwrap();
    let got = tmp.path().join("got");
    for (name, sector) in [
        ("bl1.bin", 1u64),
        ("bl2.bin", 31),
        ("u-boot.bin", 63),
        ("tzsw.bin", 2111),
    ] {
        let want = tar_file(&tarball, &format!("boot/{name}"));
        let at = (sector * 512) as usize;
        assert_eq!(
            &card[at..at + want.len()],
            &want[..],
            "{name} at sector {sector}"
        );
    }
    assert!(
        card[2624 * 512..BOOT_OFFSET as usize]
            .iter()
            .all(|&b| b == 0),
        "bytes between tzsw and the partition"
    );
    for name in [
        "zImage",
        "initramfs-linux.img",
        "dtbs/exynos5422-odroidhc1.dtb",
        "sd_fusing.sh",
    ] {
        let want = tar_file(&tarball, &format!("boot/{name}"));
        let _ = std::fs::remove_file(&got);
        run_ok(
            "mcopy",
            &[
                "-n",
                "-i",
                &format!("{}@@{BOOT_OFFSET}", sd.display()),
                &format!("::{name}"),
                got.to_str().unwrap(),
            ],
        );
        assert_eq!(sha256_file(&got), sha256_hex(&want), "{name}");
    }

    // boot.scr is what mkimage makes of the boot.txt beside it.
    let txt = tmp.path().join("boot.txt");
    let scr = tmp.path().join("boot.scr");
    for (n, p) in [("boot.txt", &txt), ("boot.scr", &scr)] {
        run_ok(
            "mcopy",
            &[
                "-n",
                "-i",
                &format!("{}@@{BOOT_OFFSET}", sd.display()),
                &format!("::{n}"),
                p.to_str().unwrap(),
            ],
        );
    }
    let boot_txt = std::fs::read_to_string(&txt).unwrap();
    assert!(
        boot_txt.contains("root=/dev/sda1") && boot_txt.contains("fsck.mode=force"),
        "{boot_txt}"
    );
    let ts = u32::from_be_bytes(std::fs::read(&scr).unwrap()[8..12].try_into().unwrap());
    let theirs = tmp.path().join("mkimage.scr");
    let o = Command::new("mkimage")
        .env("SOURCE_DATE_EPOCH", ts.to_string())
        .args([
            "-A",
            "arm",
            "-O",
            "linux",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            "U-Boot boot script",
            "-d",
        ])
        .arg(&txt)
        .arg(&theirs)
        .output()
        .expect("mkimage (u-boot-tools) must be installed");
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(&scr).unwrap(),
        std::fs::read(&theirs).unwrap(),
        "boot.scr differs from mkimage's"
    );
    let l = run_ok("dumpimage", &["-l", scr.to_str().unwrap()]);
    assert!(l.contains("ARM Linux Script"), "{l}");

    // No secret reaches the manifest; the manifest's digests are the files'.
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    for s in ["MAILSECRET-42", "TOKENSECRET", "saltsalt"] {
        assert!(!manifest.contains(s), "secret {s} in manifest.json");
    }
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["outputs"]["ssd.img"]["sha256"], sha256_file(&ssd));
    let verify = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    assert!(verify.status.success());
    let inspect = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .arg("inspect")
        .arg(&sd)
        .output()
        .unwrap();
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.contains("u-boot.bin") && inspect.contains("FAT"),
        "{inspect}"
    );
}

/// The bytes of one file in a tarball (read with Python's tarfile, not our reader).
fn tar_file(tarball: &Path, name: &str) -> Vec<u8> {
    let o = Command::new("python3")
        .args(["-c", "import sys,tarfile; t=tarfile.open(sys.argv[1]); sys.stdout.buffer.write(t.extractfile(sys.argv[2]).read())"])
        .arg(tarball)
        .arg(name)
        .output()
        .expect("python3 must be installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    build_ok(tmp.path(), &tarball, &a);
    build_ok(tmp.path(), &tarball, &b);
    for f in ["ssd.img", "sd.img", "manifest.json"] {
        assert_eq!(
            sha256_file(&a.join(f)),
            sha256_file(&b.join(f)),
            "{f} differs between two builds of the same inputs"
        );
    }
}

#[test]
fn store_layout_and_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let profile = repo().join("profiles/worker.toml");
    let (ok, err) = hc1img_build(tmp.path(), &profile, &tarball, None, &[]);
    assert!(ok, "{err}");
    let link = std::fs::read_link(tmp.path().join("out/worker")).unwrap();
    let name = link.to_string_lossy().into_owned();
    assert!(
        name.starts_with("worker-") && name.len() == "worker-".len() + 12,
        "{name}"
    );
    assert!(
        tmp.path()
            .join("out")
            .join(&name)
            .join("manifest.json")
            .is_file()
    );
    let (ok, err) = hc1img_build(tmp.path(), &profile, &tarball, None, &[]);
    assert!(ok && err.contains("up to date"), "{err}");
    // Nothing else is left in out/: no temporary directories.
    let entries: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

/// A failing build prints one clear error and leaves no output directory.
fn assert_fails(opts: Alarm, needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &opts);
    let out = tmp.path().join("out");
    let (ok, err) = hc1img_build(
        tmp.path(),
        &repo().join("profiles/worker.toml"),
        &tarball,
        Some(&out),
        &[],
    );
    assert!(!ok, "build should fail");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a failed build left {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_blob_is_a_clear_error() {
    assert_fails(
        Alarm {
            omit: Some("tzsw.bin"),
            ..Alarm::default()
        },
        "tzsw.bin",
    );
}

#[test]
fn disagreeing_sd_fusing_is_a_clear_error() {
    assert_fails(
        Alarm {
            fusing: (1, 31, 63, 2112),
            ..Alarm::default()
        },
        "update the board file",
    );
}

#[test]
fn blob_too_large_for_its_slot_is_a_clear_error() {
    // u-boot.bin from sector 63 may not run into tzsw.bin at 2111.
    assert_fails(
        Alarm {
            uboot_len: 2100 * 512,
            ..Alarm::default()
        },
        "overlap",
    );
}

#[test]
fn wrong_sha256_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(tmp.path())
        .env("HC1IMG_CACHE", tmp.path().join("cache"))
        .arg("build")
        .arg(repo().join("profiles/worker.toml"))
        .args([
            "--source-url",
            tarball.to_str().unwrap(),
            "--source-sha256",
            &"ab".repeat(32),
            "--out",
            out.to_str().unwrap(),
            "--no-packages",
        ])
        .args(worker_secrets(tmp.path()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("sha256") && err.contains(&"ab".repeat(32)),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn node_configuration_is_in_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = alarm_tarball(tmp.path(), &Alarm::default());
    let out = tmp.path().join("out");
    build_ok(tmp.path(), &tarball, &out);
    let ssd = out.join("ssd.img");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let root = tmp.path().join("root.ext4");
    extract(
        &ssd,
        ROOT_OFFSET,
        j["partitiontable"]["partitions"][0]["size"]
            .as_u64()
            .unwrap()
            * 512,
        &root,
    );

    // Every file the profile's node sections write: exact content, mode and owner.
    let files: &[(&str, u32, u32, &str)] = &[
        (
            "/etc/systemd/journald.conf.d/hc1img.conf",
            0o644,
            0,
            "# Written by hc1img: journal in RAM, capped, to spare the flash.\n[Journal]\nStorage=volatile\nRuntimeMaxUse=50M\n",
        ),
        (
            "/etc/docker/daemon.json",
            0o644,
            0,
            "{\n  \"insecure-registries\": [\n    \"registry.cluster.lan:5000\"\n  ],\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  },\n  \"storage-driver\": \"overlay2\"\n}\n",
        ),
        (
            "/etc/udev/rules.d/60-ioscheduler.rules",
            0o644,
            0,
            "# Written by hc1img: I/O scheduler for the microSD card and the SSD.\nACTION==\"add|change\", SUBSYSTEM==\"block\", ENV{DEVTYPE}==\"disk\", KERNEL==\"mmcblk[0-9]*\", ATTR{queue/scheduler}=\"mq-deadline\"\nACTION==\"add|change\", SUBSYSTEM==\"block\", ENV{DEVTYPE}==\"disk\", KERNEL==\"sd[a-z]*\", ATTR{queue/scheduler}=\"mq-deadline\"\n",
        ),
        (
            "/etc/hc1/cleanup.conf",
            0o644,
            0,
            "# Written by hc1img from the profile's [cleanup] section; read by hc1-docker-cleanup.\nHC1_CLEANUP_KEEP_LABEL='hc1.keep'\nHC1_CLEANUP_IMAGES='dangling'\nHC1_CLEANUP_VOLUMES='all'\n",
        ),
        (
            "/etc/pacman.d/mirrorlist",
            0o644,
            0,
            "# Written by hc1img: pacman tries these in order.\nServer = http://de3.mirror.archlinuxarm.org/$arch/$repo\nServer = http://mirror.archlinuxarm.org/$arch/$repo\n",
        ),
        (
            "/etc/ssh/sshd_config.d/10-hc1img.conf",
            0o644,
            0,
            "# Written by hc1img.\nPermitRootLogin no\n",
        ),
        (
            "/etc/sudoers.d/wheel",
            0o440,
            0,
            "# Written by hc1img: members of wheel may run any command as any user.\n%wheel ALL=(ALL:ALL) ALL\n",
        ),
        ("/etc/aliases", 0o644, 0, "root: admin@cluster.lan\n"),
        ("/etc/locale.conf", 0o644, 0, "LANG=C.UTF-8\n"),
        ("/etc/vconsole.conf", 0o644, 0, "KEYMAP=us\n"),
        ("/etc/machine-id", 0o444, 0, "uninitialized\n"),
    ];
    for (path, mode, gid, content) in files {
        assert_eq!(debugfs(&root, &format!("cat {path}")), *content, "{path}");
        assert_eq!(stat(&root, path), (*mode, 0, *gid), "{path}: mode/owner");
    }
    // The relay: msmtp's system configuration, root-only, and one Debian's msmtp reads.
    assert_eq!(stat(&root, "/etc/msmtprc"), (0o600, 0, 0));
    assert!(!debugfs(&root, "ls /etc").contains("ssmtp"));
    // msmtp reads the aliases file too: the image's, copied next to the configuration.
    let aliases = root.with_file_name("aliases");
    std::fs::write(&aliases, debugfs(&root, "cat /etc/aliases")).unwrap();
    let text = debugfs(&root, "cat /etc/msmtprc");
    assert!(text.contains("\naliases /etc/aliases\n"), "{text}");
    let rc = root.with_file_name("msmtprc");
    let local = format!("\naliases {}\n", aliases.display());
    std::fs::write(&rc, text.replace("\naliases /etc/aliases\n", &local)).unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_ok("msmtp", &["-C", rc.to_str().unwrap(), "--pretend", "root"]);
    for line in [
        "host = smtp.cluster.lan\n",
        "port = 587\n",
        "tls = on\n",
        "tls_starttls = on\n",
        "from = root@cluster.lan\n",
        "syslog = LOG_MAIL\n",
        "timeout = 30 seconds\n",
        // The password comes from the card: none in the image.
        "password = (not set)\n",
    ] {
        assert!(out.contains(line), "msmtp --pretend lacks {line:?}:\n{out}");
    }
    assert_eq!(stat(&root, "/etc/shadow").0, 0o600);
    assert_eq!(stat(&root, "/home/admin"), (0o700, 1000, 1000));
    // alarm is gone with its home; root's password is locked.
    let ls = debugfs(&root, "ls /home");
    assert!(!ls.contains("alarm"), "{ls}");
    let shadow = debugfs(&root, "cat /etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with("root:!")), "{shadow}");
    assert!(!shadow.contains("alarm"), "{shadow}");
    // No per-machine identity is baked in: SSH host keys are gone.
    assert!(!debugfs(&root, "ls /etc/ssh").contains("ssh_host_"));
    // The timezone link and the enablement links point at files that exist in the image.
    for (link, target) in [
        ("/etc/localtime", "../usr/share/zoneinfo/Europe/Paris"),
        (
            "/etc/systemd/system/multi-user.target.wants/docker.service",
            "/usr/lib/systemd/system/docker.service",
        ),
        (
            "/etc/systemd/system/multi-user.target.wants/cronie.service",
            "/usr/lib/systemd/system/cronie.service",
        ),
    ] {
        let s = debugfs(&root, &format!("stat {link}"));
        assert!(
            s.contains(&format!("Fast link dest: \"{target}\"")),
            "{link}: {s}"
        );
        let resolved = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("/etc/{target}")
        };
        assert!(
            !debugfs(&root, &format!("stat {resolved}")).is_empty(),
            "{link} -> {target} dangles"
        );
    }
    // The operations scripts are installed executable, their timers enabled.
    assert_eq!(
        stat(&root, "/usr/local/sbin/hc1-volume-backup"),
        (0o750, 0, 0)
    );
    assert_eq!(
        stat(&root, "/usr/local/bin/hc1-volume-restore"),
        (0o755, 0, 0)
    );
    for timer in ["hc1-volume-backup.timer", "hc1-docker-cleanup.timer"] {
        let s = debugfs(
            &root,
            &format!("stat /etc/systemd/system/timers.target.wants/{timer}"),
        );
        assert!(
            s.contains(&format!("Fast link dest: \"/etc/systemd/system/{timer}\"")),
            "{timer}: {s}"
        );
    }
}
