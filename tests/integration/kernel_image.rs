//! `hc1img::kernel_image::zimage_version` on two real ARM zImages: Debian bookworm's armhf
//! `linux-image-*-armmp` kernels A and B (scripts/fixtures/debian-armhf-kernels.sh), whose
//! releases the fixture takes from the package names (`A.version`, `B.version`).

use std::path::PathBuf;

use hc1img::kernel_image::zimage_version;

/// The kernels fixture directory, from `HC1IMG_TEST_KERNELS` (scripts/test exports it).
pub fn kernels_dir() -> PathBuf {
    let p = std::env::var_os("HC1IMG_TEST_KERNELS").unwrap_or_else(|| {
        panic!(
            "HC1IMG_TEST_KERNELS is not set: scripts/test fetches the kernels fixture; by hand: \
             export HC1IMG_TEST_KERNELS=$(scripts/fixtures/debian-armhf-kernels.sh)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.join("A.version").is_file() && p.join("B.version").is_file(),
        "HC1IMG_TEST_KERNELS={} is not a directory made by scripts/fixtures/debian-armhf-kernels.sh",
        p.display()
    );
    p
}

/// Kernel `slot` ("A" or "B") of the fixture: its release and its unpacked package root.
pub fn kernel(slot: &str) -> (String, PathBuf) {
    let dir = kernels_dir();
    let v = std::fs::read_to_string(dir.join(format!("{slot}.version"))).unwrap();
    (v.trim().to_string(), dir.join(slot))
}

#[test]
fn debian_armhf_zimages_give_their_release() {
    let mut seen = Vec::new();
    for slot in ["A", "B"] {
        let (v, root) = kernel(slot);
        let path = root.join(format!("boot/vmlinuz-{v}"));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = zimage_version(&data).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert_eq!(got, v, "{}", path.display());
        assert!(root.join(format!("usr/lib/modules/{v}")).is_dir());
        seen.push(got);

        // Damaged images: errors that say what is wrong, never a panic.
        let mut bad = data.clone();
        bad[0x24] ^= 0xff;
        let e = format!("{:#}", zimage_version(&bad).unwrap_err());
        assert!(e.contains("not an ARM zImage"), "{e}");
        let e = format!(
            "{:#}",
            zimage_version(&data[..data.len() / 10]).unwrap_err()
        );
        assert!(
            e.contains("no `Linux version` banner") && e.contains("xz at"),
            "{e}"
        );
    }
    assert_ne!(
        seen[0], seen[1],
        "the fixture's two kernels are different releases"
    );
}
