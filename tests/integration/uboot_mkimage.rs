//! boot.scr against the real `mkimage` / `dumpimage` (u-boot-tools).

use crate::disk_common::{run, run_env, stdout};
use hc1img::uboot::{DEFAULT_SCRIPT_NAME, script_image};

fn mkimage(script: &[u8], name: &str, epoch: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("boot.txt");
    let scr = dir.path().join("boot.scr");
    std::fs::write(&txt, script).unwrap();
    let epoch = epoch.to_string();
    let out = run_env(
        "mkimage",
        &[
            "-A",
            "arm",
            "-O",
            "linux",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            name,
            "-d",
            txt.to_str().unwrap(),
            scr.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", &epoch)],
    );
    assert!(
        out.status.success(),
        "mkimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&scr).unwrap()
}

#[test]
fn byte_identical_to_mkimage() {
    let boot_txt = "# After modifying, run ./mkscr\n\
        part uuid ${devtype} ${devnum}:${bootpart} uuid\n\
        setenv bootargs \"console=tty1 console=ttySAC2,115200n8 root=/dev/sda1 rw rootwait fsck.mode=force\"\n\
        if load ${devtype} ${devnum}:${bootpart} ${kernel_addr_r} /zImage; then\n\
          bootz ${kernel_addr_r} - ${fdt_addr_r}\n\
        fi\n";
    let cases: Vec<(Vec<u8>, &str, u32)> = vec![
        (
            boot_txt.as_bytes().to_vec(),
            DEFAULT_SCRIPT_NAME,
            1_700_000_000,
        ),
        (b"a".to_vec(), DEFAULT_SCRIPT_NAME, 0),
        (b"ab".to_vec(), "x", 1),
        (b"abc".to_vec(), "", 4_000_000_000),
        (b"abcd".to_vec(), "exactly-32-bytes-long-name-12345", 86_400),
        (
            b"echo odd length\nboot".to_vec(),
            "a name much longer than thirty-two bytes",
            12345,
        ),
        (vec![b'z'; 4097], DEFAULT_SCRIPT_NAME, 1_234_567_890),
    ];
    for (script, name, epoch) in cases {
        let ours = script_image(&script, name, epoch);
        let theirs = mkimage(&script, name, epoch);
        assert_eq!(
            ours,
            theirs,
            "differs from mkimage for script of {} bytes, name {name:?}, epoch {epoch}",
            script.len()
        );
    }
}

#[test]
fn dumpimage_lists_arm_linux_script() {
    let dir = tempfile::tempdir().unwrap();
    let scr = dir.path().join("boot.scr");
    std::fs::write(
        &scr,
        script_image(b"echo hello\n", DEFAULT_SCRIPT_NAME, 1_600_000_000),
    )
    .unwrap();
    let out = run("dumpimage", &["-l", scr.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("ARM Linux Script (uncompressed)"), "{text}");
    assert!(text.contains("Image Name:   U-Boot boot script"), "{text}");
    assert!(text.contains("Image 0: 11 Bytes"), "{text}");
}
