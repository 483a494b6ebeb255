//! U-Boot boot script: wrap `boot.txt` (rendered by [`crate::profile::Profile::boot_txt`]) in the legacy image
//! format that `boot.scr` uses.
//!
//! [`script_image`] produces exactly the bytes of
//! `mkimage -A arm -O linux -T script -C none -n NAME -d boot.txt boot.scr` with
//! `SOURCE_DATE_EPOCH=timestamp` (U-Boot `tools/mkimage.c`, `tools/default_image.c`,
//! `include/image.h`):
//!
//! - a 64-byte big-endian `image_header`: magic `0x27051956`, header CRC32 (computed with the
//!   CRC field zero), creation time, data size, load address 0, entry point 0, data CRC32,
//!   `os` = Linux (5), `arch` = ARM (2), `type` = script (6), `comp` = none (0), and the name
//!   in 32 bytes (`strncpy`: truncated to 32 bytes, zero-filled, no terminator required);
//! - the data: for the script and multi-file types, a table of big-endian u32 lengths (one per
//!   input file, then a 0), then the files. `mkimage` pads every file but the last to 4 bytes
//!   (`copy_file(..., pad=1)`), and the last one (our only one) is not padded at all.
//!
//! The CRCs are the zlib CRC32 (`crc32fast`). `mkimage` refuses an empty input file; a script
//! with no bytes is still encoded here, but callers should never need that.

#![warn(clippy::cast_possible_truncation)]

/// `IH_MAGIC` from U-Boot's `include/image.h`.
pub const IH_MAGIC: u32 = 0x2705_1956;
/// `IH_OS_LINUX`.
pub const IH_OS_LINUX: u8 = 5;
/// `IH_ARCH_ARM`.
pub const IH_ARCH_ARM: u8 = 2;
/// `IH_TYPE_SCRIPT`.
pub const IH_TYPE_SCRIPT: u8 = 6;
/// `IH_COMP_NONE`.
pub const IH_COMP_NONE: u8 = 0;
/// `IH_NMLEN`: bytes of the image name field.
pub const IH_NMLEN: usize = 32;
/// Size of the legacy image header.
pub const HEADER_LEN: usize = 64;

/// The name `mkscr` gives the Arch Linux ARM boot script.
pub const DEFAULT_SCRIPT_NAME: &str = "U-Boot boot script";

/// Encode `script` as a U-Boot legacy script image (`boot.scr`), byte-identical to `mkimage`
/// with `SOURCE_DATE_EPOCH=timestamp`. `name` is truncated to 32 bytes as `mkimage` does.
pub fn script_image(script: &[u8], name: &str, timestamp: u32) -> Vec<u8> {
    // Data part: length table (one entry + terminating zero), then the script, unpadded.
    let mut data = Vec::with_capacity(8 + script.len());
    // A script larger than 4 GiB cannot be a boot script; saturate instead of wrapping so the
    // header never lies silently (U-Boot would then refuse the image).
    let len = u32::try_from(script.len()).unwrap_or(u32::MAX);
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script);

    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let data_crc = crc32fast::hash(&data);

    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&IH_MAGIC.to_be_bytes());
    // [4..8] header CRC, filled below.
    header[8..12].copy_from_slice(&timestamp.to_be_bytes());
    header[12..16].copy_from_slice(&data_len.to_be_bytes());
    // [16..20] load address 0, [20..24] entry point 0.
    header[24..28].copy_from_slice(&data_crc.to_be_bytes());
    header[28] = IH_OS_LINUX;
    header[29] = IH_ARCH_ARM;
    header[30] = IH_TYPE_SCRIPT;
    header[31] = IH_COMP_NONE;
    let name = name.as_bytes();
    let n = name.len().min(IH_NMLEN);
    header[32..32 + n].copy_from_slice(&name[..n]);
    let hcrc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let img = script_image(b"echo hi\n", "U-Boot boot script", 1_700_000_000);
        assert_eq!(&img[0..4], &IH_MAGIC.to_be_bytes());
        assert_eq!(
            u32::from_be_bytes(img[8..12].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_be_bytes(img[12..16].try_into().unwrap()), 16);
        assert_eq!(&img[28..32], &[5, 2, 6, 0]);
        assert_eq!(&img[32..50], b"U-Boot boot script");
        assert_eq!(&img[64..72], &[0, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!(&img[72..], b"echo hi\n");
        let mut h = img[..64].to_vec();
        h[4..8].fill(0);
        assert_eq!(
            crc32fast::hash(&h),
            u32::from_be_bytes(img[4..8].try_into().unwrap())
        );
    }

    #[test]
    fn long_name_truncated() {
        let img = script_image(b"x", &"n".repeat(40), 0);
        assert_eq!(&img[32..64], "n".repeat(32).as_bytes());
        assert_eq!(img.len(), 64 + 8 + 1);
    }
}
