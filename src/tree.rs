//! The in-memory file tree of the root filesystem: metadata only.
//!
//! The tar import fills it, the profile's edits change it, and the ext4 writer serialises it.
//! File *contents* normally live in the image already (a [`DataRef`] names the blocks the ext4
//! writer put them in while the tarball streamed past); only small files that the Plan edits,
//! and files the Plan adds, are held in memory ([`FileData::Bytes`]).
//!
//! Paths are byte strings (tar names need not be UTF-8), always relative to the root, with
//! components separated by `/`. Hard links are several directory entries naming the same
//! [`NodeId`]. The tree is a plain arena (`Vec<Node>`); removed nodes stay in the arena but are
//! unreachable, and [`Tree::walk`] visits only what is reachable, in a fixed order (depth
//! first, names in byte order), which is what makes inode numbering deterministic.

use std::collections::BTreeMap;

use thiserror::Error;

/// Index of a node in the tree's arena.
pub type NodeId = usize;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn from_secs(sec: i64) -> Self {
        Timestamp { sec, nsec: 0 }
    }
}

/// Ownership, permissions, times and extended attributes of one inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask); the file type is in
    /// [`NodeKind`].
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// Extended attributes by full name (`security.capability`, `user.foo`,
    /// `system.posix_acl_access`, …) with their raw values as the kernel stores them.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    pub fn new(perm: u16, uid: u32, gid: u32, mtime: Timestamp) -> Self {
        Meta {
            perm: perm & 0o7777,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// A run of contiguous filesystem blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRun {
    /// First block number (filesystem-relative).
    pub start: u64,
    /// Number of blocks.
    pub len: u32,
}

impl BlockRun {
    /// The `start` of a hole: `len` blocks of a sparse file that have no block and read as
    /// zeros (ext4: no extent maps them).
    pub const HOLE: u64 = u64::MAX;

    /// A hole of `len` blocks.
    pub fn hole(len: u32) -> BlockRun {
        BlockRun {
            start: Self::HOLE,
            len,
        }
    }

    pub fn is_hole(&self) -> bool {
        self.start == Self::HOLE
    }
}

/// Where the ext4 writer stored a file's data, in file order; a sparse file's holes are
/// runs of [`BlockRun::hole`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataRef {
    /// File size in bytes.
    pub size: u64,
    pub runs: Vec<BlockRun>,
}

/// Contents of a regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileData {
    /// Already written into the image by the ext4 writer.
    Stored(DataRef),
    /// Held in memory; written when the filesystem is finished.
    Bytes(Vec<u8>),
}

impl FileData {
    pub fn size(&self) -> u64 {
        match self {
            FileData::Stored(r) => r.size,
            FileData::Bytes(b) => b.len() as u64,
        }
    }
}

/// What kind of inode a node is, with its kind-specific payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(FileData),
    Symlink(Vec<u8>),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
    Socket,
}

impl NodeKind {
    /// The `S_IFMT` bits for this kind.
    pub fn type_bits(&self) -> u16 {
        match self {
            NodeKind::Dir(_) => 0o040000,
            NodeKind::File(_) => 0o100000,
            NodeKind::Symlink(_) => 0o120000,
            NodeKind::CharDev { .. } => 0o020000,
            NodeKind::BlockDev { .. } => 0o060000,
            NodeKind::Fifo => 0o010000,
            NodeKind::Socket => 0o140000,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, NodeKind::Dir(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub meta: Meta,
    pub kind: NodeKind,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TreeError {
    #[error("path {0:?} is empty or escapes the root")]
    BadPath(String),
    #[error("{0:?}: a parent component is not a directory")]
    NotADirectory(String),
    #[error("{0:?}: no such file or directory")]
    NotFound(String),
    #[error("{0:?}: cannot replace a non-empty directory with a non-directory")]
    DirNotEmpty(String),
    #[error("{0:?}: cannot hard-link to a directory")]
    LinkToDir(String),
}

/// Normalise a tar-style path: strip leading `/` and `./`, drop `.` components and empty
/// components, resolve `..` lexically. Returns the components, or `None` when the path names
/// the root itself or escapes above it (bsdtar refuses such entries).
pub fn normalize(path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c.to_vec()),
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Lossy display form of a byte path (invalid UTF-8 becomes U+FFFD): a lookup key, not for
/// messages; use [`escaped`] to show a name to the user.
pub fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A name as it may be shown on a terminal: bytes that are not UTF-8 as `\xNN`, control
/// characters (C0, DEL, C1: terminal escape sequences, newlines that would fake a line of
/// output) and bidirectional overrides as `\u{…}`, and `\` as `\\`, so two different names
/// never look the same (GNU tar's `--quoting-style=escape` does the same).
pub fn escaped(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// [`escaped`] for text that is already a string (for instance another crate's error message,
/// which may quote raw header bytes).
pub fn escaped_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
}

/// The file tree: an arena of nodes rooted at [`Tree::ROOT`].
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    pub const ROOT: NodeId = 0;

    /// A tree holding only the root directory.
    pub fn new(root_meta: Meta) -> Self {
        Tree {
            nodes: vec![Node {
                meta: root_meta,
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    /// Children of a directory in name order (empty for non-directories).
    pub fn children(&self, id: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        let map = match &self.nodes[id].kind {
            NodeKind::Dir(m) => Some(m),
            _ => None,
        };
        map.into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_slice(), *v)))
    }

    /// Find the node at `path` (not following symlinks). The empty path and `/` name the root.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let Some(comps) = normalize(path) else {
            return path
                .iter()
                .all(|&b| b == b'/' || b == b'.')
                .then_some(Self::ROOT);
        };
        let mut cur = Self::ROOT;
        for c in &comps {
            match &self.nodes[cur].kind {
                NodeKind::Dir(m) => cur = *m.get(c)?,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Whether an entry at `path` could be inserted: every existing ancestor is a directory.
    /// Lets the import refuse an entry before its data is stored.
    pub fn check_parents(&self, path: &[u8]) -> Result<(), TreeError> {
        let comps = normalize(path).ok_or_else(|| TreeError::BadPath(display(path)))?;
        let mut cur = Self::ROOT;
        for c in &comps[..comps.len() - 1] {
            match &self.nodes[cur].kind {
                NodeKind::Dir(m) => match m.get(c) {
                    Some(&n) => cur = n,
                    None => return Ok(()),
                },
                _ => return Err(TreeError::NotADirectory(display(path))),
            }
        }
        if self.nodes[cur].kind.is_dir() {
            Ok(())
        } else {
            Err(TreeError::NotADirectory(display(path)))
        }
    }

    /// Directory that will hold `comps`' last component, creating missing parents with
    /// `parent_meta`.
    fn parent_dir(
        &mut self,
        comps: &[Vec<u8>],
        path: &[u8],
        parent_meta: &Meta,
    ) -> Result<NodeId, TreeError> {
        let mut cur = Self::ROOT;
        for c in &comps[..comps.len() - 1] {
            let next = match &self.nodes[cur].kind {
                NodeKind::Dir(m) => m.get(c).copied(),
                _ => return Err(TreeError::NotADirectory(display(path))),
            };
            cur = match next {
                Some(n) => n,
                None => {
                    let id = self.push(Node {
                        meta: parent_meta.clone(),
                        kind: NodeKind::Dir(BTreeMap::new()),
                    });
                    self.dir_mut(cur).insert(c.clone(), id);
                    id
                }
            };
            if !self.nodes[cur].kind.is_dir() {
                return Err(TreeError::NotADirectory(display(path)));
            }
        }
        Ok(cur)
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn dir_mut(&mut self, id: NodeId) -> &mut BTreeMap<Vec<u8>, NodeId> {
        match &mut self.nodes[id].kind {
            NodeKind::Dir(m) => m,
            _ => unreachable!("dir_mut called on a non-directory; callers check is_dir first"),
        }
    }

    /// Create or replace the entry at `path`, the way bsdtar extracts over an existing tree:
    /// a directory over a directory only updates its metadata (children stay); anything else
    /// replaces the old entry, except that a non-empty directory cannot be replaced by a
    /// non-directory. Missing parents are created with `parent_meta`. Returns the node id.
    pub fn insert(
        &mut self,
        path: &[u8],
        node: Node,
        parent_meta: &Meta,
    ) -> Result<NodeId, TreeError> {
        let comps = normalize(path).ok_or_else(|| TreeError::BadPath(display(path)))?;
        let parent = self.parent_dir(&comps, path, parent_meta)?;
        let name = comps[comps.len() - 1].clone();
        if let Some(&old) = self.dir_mut(parent).get(&name)
            && let NodeKind::Dir(old_children) = &self.nodes[old].kind
        {
            if node.kind.is_dir() {
                self.nodes[old].meta = node.meta;
                return Ok(old);
            }
            if !old_children.is_empty() {
                return Err(TreeError::DirNotEmpty(display(path)));
            }
        }
        let id = self.push(node);
        self.dir_mut(parent).insert(name, id);
        Ok(id)
    }

    /// Add a hard link at `path` to the existing non-directory at `target`.
    pub fn link(
        &mut self,
        path: &[u8],
        target: &[u8],
        parent_meta: &Meta,
    ) -> Result<NodeId, TreeError> {
        let t = self
            .lookup(target)
            .ok_or_else(|| TreeError::NotFound(display(target)))?;
        if self.nodes[t].kind.is_dir() {
            return Err(TreeError::LinkToDir(display(target)));
        }
        let comps = normalize(path).ok_or_else(|| TreeError::BadPath(display(path)))?;
        let parent = self.parent_dir(&comps, path, parent_meta)?;
        let name = comps[comps.len() - 1].clone();
        if let Some(&old) = self.dir_mut(parent).get(&name)
            && let NodeKind::Dir(c) = &self.nodes[old].kind
            && !c.is_empty()
        {
            return Err(TreeError::DirNotEmpty(display(path)));
        }
        self.dir_mut(parent).insert(name, t);
        Ok(t)
    }

    /// Remove the entry at `path` (and, for a directory, everything below it). Returns the
    /// removed node's id, or `None` when nothing was there.
    pub fn remove(&mut self, path: &[u8]) -> Option<NodeId> {
        let comps = normalize(path)?;
        let mut cur = Self::ROOT;
        for c in &comps[..comps.len() - 1] {
            match &self.nodes[cur].kind {
                NodeKind::Dir(m) => cur = *m.get(c)?,
                _ => return None,
            }
        }
        match &mut self.nodes[cur].kind {
            NodeKind::Dir(m) => m.remove(&comps[comps.len() - 1]),
            _ => None,
        }
    }

    /// Visit every reachable entry depth first, names in byte order, parents before children.
    /// The callback gets the full path (no leading `/`; empty for the root), the parent's id
    /// (the root is its own parent) and the node's id. A hard-linked node is visited once per
    /// link.
    pub fn walk(&self, mut f: impl FnMut(&[u8], NodeId, NodeId)) {
        let mut path = Vec::new();
        f(&path, Self::ROOT, Self::ROOT);
        self.walk_dir(Self::ROOT, &mut path, &mut f);
    }

    fn walk_dir(&self, dir: NodeId, path: &mut Vec<u8>, f: &mut impl FnMut(&[u8], NodeId, NodeId)) {
        for (name, id) in self.children(dir) {
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            f(path, dir, id);
            if self.nodes[id].kind.is_dir() {
                self.walk_dir(id, path, f);
            }
            path.truncate(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_cannot_drive_a_terminal_or_collide() {
        assert_eq!(escaped(b"usr/bin/ls"), "usr/bin/ls");
        assert_eq!(escaped("grüße".as_bytes()), "grüße");
        assert_eq!(
            escaped(b"a\x1b[2J\nerror: fake"),
            "a\\u{1b}[2J\\u{a}error: fake"
        );
        assert_eq!(escaped(b"a\xff"), "a\\xff");
        assert_ne!(escaped(b"a\xff"), escaped(b"a\xfe"));
        assert_ne!(escaped(b"a\\xff"), escaped(b"a\xff"));
        assert_eq!(escaped("x\u{202e}y\u{9b}".as_bytes()), "x\\u{202e}y\\u{9b}");
        assert_eq!(escaped_str("bad \u{7}"), "bad \\u{7}");
    }

    fn meta() -> Meta {
        Meta::new(0o755, 0, 0, Timestamp::from_secs(1))
    }

    fn file(b: &[u8]) -> Node {
        Node {
            meta: Meta::new(0o644, 0, 0, Timestamp::from_secs(1)),
            kind: NodeKind::File(FileData::Bytes(b.to_vec())),
        }
    }

    #[test]
    fn normalize_handles_dots_and_escapes() {
        assert_eq!(
            normalize(b"./a//b/./c"),
            Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        );
        assert_eq!(
            normalize(b"/etc/passwd"),
            Some(vec![b"etc".to_vec(), b"passwd".to_vec()])
        );
        assert_eq!(normalize(b"a/../b"), Some(vec![b"b".to_vec()]));
        assert_eq!(normalize(b"../x"), None);
        assert_eq!(normalize(b"./"), None);
    }

    #[test]
    fn insert_creates_parents_and_replaces_files() {
        let mut t = Tree::new(meta());
        let a = t.insert(b"usr/bin/x", file(b"1"), &meta()).unwrap();
        assert_eq!(t.lookup(b"/usr/bin/x"), Some(a));
        let b = t.insert(b"usr/bin/x", file(b"22"), &meta()).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.lookup(b"usr/bin/x"), Some(b));
        assert!(t.node(t.lookup(b"usr").unwrap()).kind.is_dir());
    }

    #[test]
    fn dir_over_dir_keeps_children_and_file_cannot_replace_full_dir() {
        let mut t = Tree::new(meta());
        t.insert(b"etc/a", file(b"1"), &meta()).unwrap();
        let d = Node {
            meta: Meta::new(0o700, 5, 5, Timestamp::from_secs(9)),
            kind: NodeKind::Dir(BTreeMap::new()),
        };
        let id = t.insert(b"etc", d, &meta()).unwrap();
        assert_eq!(t.node(id).meta.uid, 5);
        assert!(t.lookup(b"etc/a").is_some());
        assert_eq!(
            t.insert(b"etc", file(b"x"), &meta()),
            Err(TreeError::DirNotEmpty("etc".into()))
        );
        assert_eq!(
            t.insert(b"etc/a/b", file(b"x"), &meta()),
            Err(TreeError::NotADirectory("etc/a/b".into()))
        );
    }

    #[test]
    fn hard_links_share_a_node_and_walk_is_ordered() {
        let mut t = Tree::new(meta());
        let a = t.insert(b"b/one", file(b"1"), &meta()).unwrap();
        assert_eq!(t.link(b"a/two", b"b/one", &meta()).unwrap(), a);
        assert!(t.link(b"c", b"b", &meta()).is_err());
        let mut seen = Vec::new();
        t.walk(|p, _, _| seen.push(display(p)));
        assert_eq!(seen, ["", "a", "a/two", "b", "b/one"]);
        let b = t.lookup(b"b");
        assert_eq!(t.remove(b"b"), b);
        assert!(t.lookup(b"b/one").is_none());
        assert_eq!(t.lookup(b"a/two"), Some(a));
    }
}
