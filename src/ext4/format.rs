//! On-disk constants and little-endian field helpers for ext4 structures.
//!
//! Offsets and values follow the kernel's Documentation/filesystems/ext4/ (super.rst,
//! group_descr.rst, inodes.rst, dynamic.rst) and e2fsprogs lib/ext2fs/ext2_fs.h.

pub const BLOCK_SIZE: usize = 4096;
pub const BLOCK_SIZE_U64: u64 = 4096;
pub const LOG_BLOCK_SIZE: u32 = 2; // 1024 << 2
pub const BLOCKS_PER_GROUP: u64 = 32768;
pub const INODE_SIZE: usize = 256;
pub const EXTRA_ISIZE: u16 = 32;
#[allow(clippy::cast_possible_truncation)] // 4096 / 256 = 16
pub const INODES_PER_BLOCK: u32 = (BLOCK_SIZE / INODE_SIZE) as u32;
pub const FLEX_BG_SIZE: u32 = 16;
pub const LOG_GROUPS_PER_FLEX: u8 = 4;
pub const FIRST_INO: u32 = 11;

pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const BAD_INO: u32 = 1;

// Superblock features.
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_EXT_ATTR: u32 = 0x8;
pub const COMPAT_DIR_INDEX: u32 = 0x20;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub const RO_COMPAT_GDT_CSUM: u32 = 0x10;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

pub const DEFM_XATTR_USER: u32 = 0x4;
pub const DEFM_ACL: u32 = 0x8;
/// `s_flags`: directory hashes treat name bytes as signed chars (what mke2fs writes on x86
/// and every reader understands; the kernel honours either flag).
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
pub const HASH_HALF_MD4: u8 = 1;

// Group descriptor flags.
pub const BG_INODE_UNINIT: u16 = 0x1;
pub const BG_BLOCK_UNINIT: u16 = 0x2;

// Inode flags.
pub const INODE_INDEX_FL: u32 = 0x1000;
pub const INODE_EXTENTS_FL: u32 = 0x80000;

// Directory entry file types.
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;

/// Maximum length of one initialized extent.
pub const MAX_EXTENT_LEN: u32 = 32768;

pub fn put_u8(buf: &mut [u8], off: usize, v: u8) {
    buf[off] = v;
}

pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn put_be32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Does block group `g` hold a superblock backup under `sparse_super` (0, 1, powers of 3, 5
/// and 7)?
pub fn group_has_super(g: u32) -> bool {
    if g <= 1 {
        return true;
    }
    for base in [3u32, 5, 7] {
        let mut p = base;
        while p < g {
            match p.checked_mul(base) {
                Some(n) => p = n,
                None => break,
            }
        }
        if p == g {
            return true;
        }
    }
    false
}

/// The earliest time a 256-byte inode stores: the signed 32-bit seconds field's minimum
/// (1901-12-13), as the kernel's `s_time_min` for inodes with `_extra` fields.
pub const TIME_MIN: i64 = i32::MIN as i64;
/// The latest: the 32-bit field plus the two epoch bits (2446-05-10), the kernel's
/// `s_time_max` (`S32_MAX + (3 << 32)`).
pub const TIME_MAX: i64 = i32::MAX as i64 + (3 << 32);

/// Split a signed time into ext4's 32-bit seconds field and the `_extra` field (two epoch
/// bits + nanoseconds << 2). Times outside [`TIME_MIN`]..=[`TIME_MAX`] are clamped (with
/// nanoseconds 0), as the kernel's `timestamp_truncate` does, instead of wrapping.
#[allow(clippy::cast_possible_truncation)] // the low 32 bits of the seconds, by design (the high bits go to the extra field)
pub fn encode_time(sec: i64, nsec: u32) -> (u32, u32) {
    let (sec, nsec) = if sec <= TIME_MIN || sec >= TIME_MAX {
        (sec.clamp(TIME_MIN, TIME_MAX), 0)
    } else {
        (sec, nsec)
    };
    let lo = sec as i32;
    let epoch = ((sec - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, epoch | (nsec.min(999_999_999) << 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_groups() {
        let got: Vec<u32> = (0..130).filter(|&g| group_has_super(g)).collect();
        assert_eq!(got, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }

    #[test]
    fn times_encode_epoch_bits() {
        assert_eq!(encode_time(1, 5), (1, 20));
        // 2038 overflow: epoch bit 1.
        assert_eq!(encode_time(1 << 31, 0), (0x8000_0000, 1));
        assert_eq!(encode_time(-1, 0), (0xFFFF_FFFF, 0));
        // Outside the range: clamped, never wrapped (1800 must not read back as 2344).
        assert_eq!(encode_time(-5_364_662_400, 7), encode_time(TIME_MIN, 0));
        assert_eq!(encode_time(TIME_MIN, 0), (0x8000_0000, 0));
        assert_eq!(encode_time(1 << 40, 7), (0x7FFF_FFFF, 3));
    }

    #[test]
    fn time_range_decodes_back() {
        // What the kernel's ext4_decode_extra_time reads: lo as i32 + (epoch << 32).
        for t in [TIME_MIN, -1, 0, 1 << 31, TIME_MAX] {
            let (lo, ex) = encode_time(t, 0);
            assert_eq!(i64::from(lo as i32) + (i64::from(ex & 3) << 32), t);
        }
    }
}
