//! Hash-indexed directories (htree): the half-MD4 name hash and the dx_root / dx_node index
//! blocks above the leaf blocks.
//!
//! Leaves are ordinary directory blocks holding the entries sorted by hash. The root (logical
//! block 0) keeps `.` and `..` followed by `dx_root_info` and the index; a second index level
//! (dx_node blocks) is used only when the root cannot address every leaf. A leaf that starts
//! with the same hash the previous leaf ended with gets the collision bit in its index hash.
//! With `metadata_csum` every index block ends with a `dx_tail` checksum.
//!
//! Spec: Documentation/filesystems/ext4/directory.rst ("Hash Tree Directories"); the hash is
//! the kernel's fs/ext4/hash.c `half_md4_transform` / `str2hashbuf` (signed or unsigned char
//! as `s_flags` says), also e2fsprogs lib/ext2fs/dirhash.c.

use anyhow::{Result, bail};

use super::csum::crc32c_raw;
use super::dir::{DirEntry, leaf_blocks_sorted};
use super::format::*;

#[allow(clippy::cast_possible_truncation)] // as fs/ext4/hash.c: the pad is the length's low byte, repeated
fn str2hashbuf(msg: &[u8], len: usize, out: &mut [u32; 8], unsigned: bool) {
    let mut pad = (len as u32) | ((len as u32) << 8);
    pad |= pad << 16;
    let mut val = pad;
    let take = len.min(32);
    let mut num = 8usize;
    let mut k = 0;
    for (i, &b) in msg.iter().take(take).enumerate() {
        let c = if unsigned {
            u32::from(b)
        } else {
            i32::from(b as i8) as u32
        };
        val = c.wrapping_add(val << 8);
        if i % 4 == 3 {
            out[k] = val;
            k += 1;
            val = pad;
            num -= 1;
        }
    }
    if num > 0 {
        out[k] = val;
        k += 1;
        num -= 1;
    }
    while num > 0 {
        out[k] = pad;
        k += 1;
        num -= 1;
    }
}

fn half_md4(buf: &mut [u32; 4], inp: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a.wrapping_add($f($b, $c, $d)).wrapping_add($x);
            $a = $a.rotate_left($s);
        };
    }
    round!(f, a, b, c, d, inp[0], 3);
    round!(f, d, a, b, c, inp[1], 7);
    round!(f, c, d, a, b, inp[2], 11);
    round!(f, b, c, d, a, inp[3], 19);
    round!(f, a, b, c, d, inp[4], 3);
    round!(f, d, a, b, c, inp[5], 7);
    round!(f, c, d, a, b, inp[6], 11);
    round!(f, b, c, d, a, inp[7], 19);

    round!(g, a, b, c, d, inp[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, inp[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[6].wrapping_add(K2), 13);

    round!(h, a, b, c, d, inp[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, inp[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// (hash, minor_hash) of `name` with half-MD4 and the given seed.
pub fn name_hash(name: &[u8], seed: &[u8; 16], unsigned: bool) -> (u32, u32) {
    let mut buf = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let s: Vec<u32> = seed
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if s.iter().any(|&x| x != 0) {
        buf.copy_from_slice(&s);
    }
    let mut p = name;
    let mut len = name.len();
    let mut inp = [0u32; 8];
    loop {
        str2hashbuf(p, len, &mut inp, unsigned);
        half_md4(&mut buf, &inp);
        if len <= 32 {
            break;
        }
        len -= 32;
        p = &p[32..];
    }
    let mut hash = buf[1] & !1;
    if hash == 0x7FFF_FFFF << 1 {
        hash = (0x7FFF_FFFF - 1) << 1;
    }
    (hash, buf[2])
}

const ROOT_COUNT_OFF: usize = 0x20;
const NODE_COUNT_OFF: usize = 0x8;

fn limit(count_off: usize, csum: bool) -> usize {
    (BLOCK_SIZE - count_off - if csum { 8 } else { 0 }) / 8
}

#[allow(clippy::cast_possible_truncation)] // limit and count of one 4096-byte index block (< 512 entries)
fn write_index(
    buf: &mut [u8],
    count_off: usize,
    lim: usize,
    entries: &[(u32, u32)],
    seed: Option<u32>,
) {
    put_u16(buf, count_off, lim as u16);
    put_u16(buf, count_off + 2, entries.len() as u16);
    put_u32(buf, count_off + 4, entries[0].1);
    for (i, &(h, b)) in entries.iter().enumerate().skip(1) {
        put_u32(buf, count_off + i * 8, h);
        put_u32(buf, count_off + i * 8 + 4, b);
    }
    if let Some(s) = seed {
        let tail = count_off + lim * 8;
        let c = crc32c_raw(s, &buf[..count_off + entries.len() * 8]);
        let c = crc32c_raw(c, &[0u8; 8]);
        put_u32(buf, tail + 4, c);
    }
}

/// All blocks (logical order) of an indexed directory with these entries (without `.`/`..`).
/// `seed`: the directory inode's checksum seed when metadata_csum is on.
#[allow(clippy::cast_possible_truncation)] // block numbers inside one directory of at most 2^32 blocks; BLOCK_SIZE is 4096
pub fn build(
    self_ino: u32,
    parent_ino: u32,
    entries: &[DirEntry<'_>],
    hash_seed: &[u8; 16],
    unsigned: bool,
    seed: Option<u32>,
) -> Result<Vec<Vec<u8>>> {
    let csum = seed.is_some();
    let mut hashed: Vec<(u32, u32, &DirEntry<'_>)> = entries
        .iter()
        .map(|e| {
            let (h, m) = name_hash(e.name, hash_seed, unsigned);
            (h, m, e)
        })
        .collect();
    hashed.sort_by(|a, b| (a.0, a.1, a.2.name).cmp(&(b.0, b.1, b.2.name)));
    let sorted: Vec<(u32, DirEntry<'_>)> = hashed.iter().map(|(h, _, e)| (*h, **e)).collect();
    let leaves = leaf_blocks_sorted(&sorted, seed);

    let root_lim = limit(ROOT_COUNT_OFF, csum);
    let node_lim = limit(NODE_COUNT_OFF, csum);
    let nleaves = leaves.len();
    let (levels, nnodes) = if nleaves <= root_lim {
        (0u8, 0usize)
    } else {
        let n = nleaves.div_ceil(node_lim);
        if n > root_lim {
            bail!(
                "ext4: directory with {} entries is too large for a two-level htree",
                entries.len()
            );
        }
        (1, n)
    };
    // Logical blocks: 0 root, 1..=nnodes index nodes, then leaves.
    let first_leaf = 1 + nnodes as u32;
    let leaf_index: Vec<(u32, u32)> = leaves
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (*h, first_leaf + i as u32))
        .collect();

    let mut root = vec![0u8; BLOCK_SIZE];
    put_u32(&mut root, 0, self_ino);
    put_u16(&mut root, 4, 12);
    put_u8(&mut root, 6, 1);
    put_u8(&mut root, 7, FT_DIR);
    root[8] = b'.';
    put_u32(&mut root, 12, parent_ino);
    put_u16(&mut root, 16, (BLOCK_SIZE - 12) as u16);
    put_u8(&mut root, 18, 2);
    put_u8(&mut root, 19, FT_DIR);
    root[20] = b'.';
    root[21] = b'.';
    // dx_root_info
    put_u32(&mut root, 24, 0);
    put_u8(&mut root, 28, HASH_HALF_MD4);
    put_u8(&mut root, 29, 8);
    put_u8(&mut root, 30, levels);
    put_u8(&mut root, 31, 0);

    let mut out = Vec::with_capacity(1 + nnodes + nleaves);
    if levels == 0 {
        write_index(&mut root, ROOT_COUNT_OFF, root_lim, &leaf_index, seed);
        out.push(root);
    } else {
        let mut nodes = Vec::new();
        let mut root_entries = Vec::new();
        for (i, chunk) in leaf_index.chunks(node_lim).enumerate() {
            let mut node = vec![0u8; BLOCK_SIZE];
            put_u32(&mut node, 0, 0);
            put_u16(&mut node, 4, BLOCK_SIZE as u16);
            write_index(&mut node, NODE_COUNT_OFF, node_lim, chunk, seed);
            root_entries.push((chunk[0].0, 1 + i as u32));
            nodes.push(node);
        }
        write_index(&mut root, ROOT_COUNT_OFF, root_lim, &root_entries, seed);
        out.push(root);
        out.extend(nodes);
    }
    out.extend(leaves.into_iter().map(|(_, b)| b));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from e2fsprogs 1.47: `debugfs -R "dx_hash -h half_md4 [-s SEED] NAME"`
    // (`-h 4` selects the unsigned-char variant).
    const SEED: [u8; 16] = [
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55,
        0x55,
    ];
    const LONG: &str = "grüße-日本語-a-longer-name-that-goes-beyond-32-bytes";

    #[test]
    fn half_md4_matches_e2fsprogs() {
        assert_eq!(
            name_hash(b"hello", &[0; 16], false),
            (0x1746_da32, 0x4200_13b5)
        );
        assert_eq!(
            name_hash(b"hello", &SEED, false),
            (0xe4a9_77aa, 0xb8f2_ce63)
        );
        assert_eq!(
            name_hash(LONG.as_bytes(), &SEED, false),
            (0x3c22_a27c, 0x5d41_dc8b)
        );
        assert_eq!(
            name_hash(LONG.as_bytes(), &SEED, true),
            (0x1d6e_88b0, 0x62a3_1f3f)
        );
    }
}
