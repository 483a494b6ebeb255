//! Inode numbers for the tree: [`Tree::walk`] order, root = 2, then from 11 (12 when the
//! writer adds `lost+found` as inode 11), one number per node however many names link to it.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::format::{FIRST_INO, ROOT_INO};
use crate::tree::{NodeId, Tree, display};

pub struct Numbering {
    /// Nodes in first-visit order (root first).
    pub order: Vec<NodeId>,
    pub ino_of: HashMap<NodeId, u32>,
    /// Names linking to each node.
    pub nlinks: HashMap<NodeId, u32>,
    /// Parent directory of each node at its first visit (the root is its own parent).
    pub parent_of: HashMap<NodeId, NodeId>,
    /// First path of each node, `/`-prefixed, for messages.
    pub path_of: HashMap<NodeId, String>,
    /// `Some(11)` when the writer must create `lost+found` itself.
    pub lpf_ino: Option<u32>,
    /// Highest inode number in use.
    pub last_ino: u32,
}

pub fn number(tree: &Tree, inodes_count: u32) -> Result<Numbering> {
    if !tree.node(Tree::ROOT).kind.is_dir() {
        bail!("ext4: the tree's root is not a directory");
    }
    let lpf_node = tree
        .children(Tree::ROOT)
        .find(|(n, _)| *n == b"lost+found")
        .map(|(_, id)| id);
    if let Some(id) = lpf_node
        && !tree.node(id).kind.is_dir()
    {
        bail!("ext4: /lost+found in the tree is not a directory; e2fsck needs it to be one");
    }
    let has_lpf = lpf_node.is_some();
    let mut n = Numbering {
        order: Vec::new(),
        ino_of: HashMap::new(),
        nlinks: HashMap::new(),
        parent_of: HashMap::new(),
        path_of: HashMap::new(),
        lpf_ino: if has_lpf { None } else { Some(FIRST_INO) },
        last_ino: 0,
    };
    let mut next: u64 = if has_lpf { FIRST_INO } else { FIRST_INO + 1 }.into();
    tree.walk(|path, parent, id| {
        *n.nlinks.entry(id).or_insert(0) += 1;
        if n.ino_of.contains_key(&id) {
            return;
        }
        let ino = if id == Tree::ROOT {
            ROOT_INO
        } else {
            next += 1;
            // Saturates instead of wrapping; the count check below rejects it.
            u32::try_from(next - 1).unwrap_or(u32::MAX)
        };
        n.ino_of.insert(id, ino);
        n.parent_of.insert(id, parent);
        n.path_of.insert(id, format!("/{}", display(path)));
        n.order.push(id);
    });
    let last = next - 1;
    if last > u64::from(inodes_count) {
        return Err(anyhow::Error::new(super::TooSmall {
            message: format!(
                "ext4: the tree needs {last} inodes but the filesystem has {inodes_count}; raise the rootfs size or lower bytes_per_inode"
            ),
            blocks: 0,
            inodes: last,
        }));
    }
    n.last_ino = u32::try_from(last).context("ext4: inode numbers exceed 2^32")?;
    Ok(n)
}
