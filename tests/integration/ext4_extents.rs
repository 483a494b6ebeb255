//! Extent trees: fragmented files (index + leaf blocks), extents split at 32768 blocks, a
//! multi-extent journal.

use std::io::{Cursor, Read};

use crate::ext4_util::*;
use hc1img::ext4::{Ext4Writer, FeatureLevel};
use hc1img::tree::{BlockRun, DataRef, FileData, Node, NodeKind};

fn block_of(tag: u32, i: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    for (k, c) in b.chunks_mut(8).enumerate() {
        c[..4].copy_from_slice(&tag.to_le_bytes());
        c[4..].copy_from_slice(&(i ^ k as u32).to_le_bytes());
    }
    b
}

fn levels(img: &std::path::Path, path: &str) -> usize {
    let s = debugfs(img, &format!("dump_extents {path}"));
    // Lines look like " 0/ 2   1/  5     0 - 339  1234 ..." : level/max-level first.
    let first = s.lines().nth(1).unwrap_or("");
    let max = first
        .split('/')
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .unwrap_or("x");
    max.trim()
        .parse::<usize>()
        .unwrap_or_else(|_| panic!("cannot parse dump_extents:\n{s}"))
}

#[test]
fn fragmented_and_huge_files_get_extent_trees() {
    for level in [FeatureLevel::Full, FeatureLevel::Conservative] {
        let dir = tempfile::tempdir().unwrap();
        let size = 512u64 << 20;
        let (img, f) = image(dir.path(), "ext.img", size);
        let mut o = opts(size, level);
        o.journal_blocks = Some(40_000);
        let mut w = Ext4Writer::create(f, 0, &o).unwrap();

        // Interleave three files block by block so each gets one run per block.
        let counts = [1500u32, 1500, 10];
        let mut refs: Vec<Vec<BlockRun>> = vec![Vec::new(); 3];
        for i in 0..1500u32 {
            for (f, &n) in counts.iter().enumerate() {
                if i < n {
                    let r = w
                        .write_data(&mut Cursor::new(block_of(f as u32, i)), 4096)
                        .unwrap();
                    refs[f].extend(r.runs);
                }
            }
        }
        let huge_len = (129u64 << 20) + 77;
        let huge = w
            .write_data(&mut std::io::repeat(0xA5).take(huge_len), huge_len)
            .unwrap();

        let mut t = empty_tree();
        let pm = meta(0o755);
        for (f, runs) in refs.iter().enumerate() {
            let size = u64::from(counts[f]) * 4096;
            let r = DataRef {
                size,
                runs: runs.clone(),
            };
            t.insert(
                format!("frag{f}").as_bytes(),
                Node {
                    meta: meta(0o644),
                    kind: NodeKind::File(FileData::Stored(r)),
                },
                &pm,
            )
            .unwrap();
        }
        t.insert(
            b"huge",
            Node {
                meta: meta(0o644),
                kind: NodeKind::File(FileData::Stored(huge)),
            },
            &pm,
        )
        .unwrap();
        let stats = w.finish(&t).unwrap();
        e2fsck_clean(&img);
        // The journal body (all but its superblock) must read as zeros on the device.
        let total: u64 = stats.must_be_zero.iter().map(|r| r.1).sum();
        assert_eq!(total, (40_000 - 1) * 4096);
        assert!(stats.must_be_zero.len() >= 2, "{:?}", stats.must_be_zero);

        assert_eq!(levels(&img, "/frag0"), 2, "1500 extents need two levels");
        assert_eq!(levels(&img, "/frag2"), 1, "10 extents need one leaf block");
        let out = dir.path().join("out");
        for (f, &n) in counts.iter().enumerate() {
            let got = debugfs_dump(&img, &format!("/frag{f}"), &out);
            assert_eq!(got.len() as u64, u64::from(n) * 4096);
            for i in 0..n {
                let b = &got[i as usize * 4096..(i as usize + 1) * 4096];
                assert!(b == block_of(f as u32, i).as_slice(), "frag{f} block {i}");
            }
        }
        // i_blocks counts the tree blocks too: 1500 data + 5 leaves + 1 index block.
        let s = debugfs(&img, "stat /frag0");
        assert!(s.contains("Blockcount: 12048"), "{s}");

        // 32768-block extents.
        let s = debugfs(&img, "dump_extents /huge");
        assert!(s.contains("32768"), "{s}");
        let got = debugfs_dump(&img, "/huge", &out);
        assert_eq!(got.len() as u64, huge_len);
        assert!(got.iter().all(|&b| b == 0xA5));

        // The journal: 40000 blocks in two extents.
        let s = debugfs(&img, "stat <8>");
        assert!(s.contains("Size: 163840000"), "{s}");
        // Its extents, e.g. "(0-32767):1090-33857, (32768-39999):...", are exactly the
        // must-be-zero ranges plus the superblock block.
        let ext_line = s
            .lines()
            .skip_while(|l| !l.starts_with("EXTENTS:"))
            .nth(1)
            .unwrap();
        let mut phys: Vec<(u64, u64)> = Vec::new();
        for part in ext_line.split(", ") {
            let p = part.split(':').nth(1).unwrap();
            let (a, b) = p.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            match phys.last_mut() {
                Some(last) if last.1 + 1 == a => last.1 = b,
                _ => phys.push((a, b)),
            }
        }
        let mut zero: Vec<(u64, u64)> = Vec::new();
        for &(off, len) in &stats.must_be_zero {
            let (a, b) = (off / 4096, (off + len) / 4096 - 1);
            match zero.last_mut() {
                Some(last) if last.1 + 1 == a => last.1 = b,
                _ => zero.push((a, b)),
            }
        }
        zero[0].0 -= 1; // the journal superblock
        assert_eq!(phys, zero, "{s}");
        let s = debugfs(&img, "logdump");
        // An empty journal, exactly as mke2fs leaves it.
        assert!(
            s.contains("Journal starts at block 0, transaction 1"),
            "{s}"
        );
        let s = debugfs(&img, "logdump -S");
        assert!(s.contains("Total journal blocks:     40000"), "{s}");
    }
}
