//! kmod's binary index files (`modules.dep.bin`, `modules.alias.bin`, `modules.symbols.bin`,
//! `modules.builtin.bin`, `modules.builtin.alias.bin`): a writer that produces the bytes
//! `depmod` writes for the same insertions, and a bounds-checked reader.
//!
//! The format is the one documented at the top of kmod's `libkmod/libkmod-index.c` and written
//! by `index_write()` in `tools/depmod.c` (kmod 30):
//!
//! - a 12-byte header of big-endian u32s: magic `0xB007F457`, version `0x00020001`, and the
//!   offset of the root node;
//! - the nodes of a path-compressed trie (a "Patricia trie" over 7-bit ASCII). A node is
//!   referred to by a u32 whose high nibble says which parts it has (`0x8000_0000`: a prefix,
//!   `0x4000_0000`: values, `0x2000_0000`: children) and whose low 28 bits are its file
//!   offset. At that offset: the prefix, NUL-terminated; then the children as a first and a
//!   last character and `last - first + 1` u32 child references (0 for a missing child);
//!   then the value count and, per value, a u32 priority and the NUL-terminated value.
//!
//! depmod builds the trie by inserting keys one at a time (`index_insert`) and writes it in
//! post-order, children in character order. For a given set of keys that trie is unique: the
//! root has an empty prefix, and every other node's prefix is the longest common prefix of the
//! keys below it (after the character that leads to it). [`Index`] therefore collects the keys
//! in a sorted map and builds the same trie from it, with explicit stacks (no recursion, so a
//! hostile key set cannot exhaust the stack). A key's values are ordered as `index_add_value`
//! orders them: by ascending priority, and among equal priorities the last inserted first.
//!
//! depmod aborts on nothing here but corrupts its memory on a key or value byte >= 0x80 (its
//! child table has 128 entries); [`Index::insert`] refuses such strings, and NUL bytes, with an
//! error instead.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};

/// `INDEX_MAGIC`.
pub const MAGIC: u32 = 0xB007_F457;
/// `INDEX_VERSION`: major 2, minor 1.
pub const VERSION: u32 = 0x0002_0001;
/// Flag bits of a node reference (`enum node_offset`).
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;
const NODE_MASK: u32 = 0x0FFF_FFFF;
/// `INDEX_CHILDMAX`: keys and values are 7-bit ASCII.
const CHILDMAX: u8 = 128;

/// One value of a key: its priority and the string.
pub type Value = (u32, String);

/// An index being built: keys with their values, in the order depmod would insert them.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// Key -> values in insertion order.
    keys: BTreeMap<Vec<u8>, Vec<Value>>,
}

fn check_string(what: &str, s: &str) -> Result<()> {
    if let Some(b) = s.bytes().find(|&b| b == 0 || b >= CHILDMAX) {
        bail!(
            "kmod index {what} {s:?} has byte 0x{b:02x}: kmod's index holds only 7-bit ASCII without NUL"
        );
    }
    Ok(())
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// `index_insert(idx, key, value, priority)`.
    pub fn insert(&mut self, key: &str, value: &str, priority: u32) -> Result<()> {
        check_string("key", key)?;
        check_string("value", value)?;
        self.keys
            .entry(key.as_bytes().to_vec())
            .or_default()
            .push((priority, value.to_string()));
        Ok(())
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The file depmod's `index_write` writes for these insertions.
    pub fn write(&self) -> Result<Vec<u8>> {
        let entries: Vec<(&[u8], Vec<&Value>)> = self
            .keys
            .iter()
            .map(|(k, vals)| {
                // Ties in reverse insertion order, then a stable sort by priority.
                let mut v: Vec<&Value> = vals.iter().rev().collect();
                v.sort_by_key(|(p, _)| *p);
                (k.as_slice(), v)
            })
            .collect();
        let nodes = build_trie(&entries);
        write_trie(&nodes, &entries)
    }
}

/// One trie node: its prefix (a range of one of its keys), the entry whose key ends here,
/// and its children by character.
struct Node {
    /// (entry, start, end): the prefix is `entries[entry].0[start..end]`.
    prefix: (usize, usize, usize),
    value: Option<usize>,
    children: Vec<(u8, usize)>,
}

/// The trie of `entries` (sorted by key, distinct keys), as an arena whose node 0 is the root.
fn build_trie(entries: &[(&[u8], Vec<&Value>)]) -> Vec<Node> {
    let mut nodes = vec![];
    // (node id to fill, entries lo..hi that all share key[..depth], depth, is the root)
    let mut work = vec![(0usize, 0usize, entries.len(), 0usize, true)];
    nodes.push(Node {
        prefix: (0, 0, 0),
        value: None,
        children: vec![],
    });
    while let Some((id, lo, hi, depth, root)) = work.pop() {
        let keys = |i: usize| entries.get(i).map_or(&[][..], |e| e.0);
        // The prefix: empty at the root; elsewhere the longest common prefix of the keys
        // below (in a sorted run, that of the first and the last).
        let prefix_len = if root || lo >= hi {
            0
        } else {
            let (a, b) = (keys(lo), keys(hi - 1));
            let a = a.get(depth..).unwrap_or_default();
            let b = b.get(depth..).unwrap_or_default();
            a.iter().zip(b).take_while(|(x, y)| x == y).count()
        };
        let pos = depth + prefix_len;
        let mut value = None;
        let mut i = lo;
        if i < hi && keys(i).len() == pos {
            value = Some(i);
            i += 1;
        }
        let mut children = vec![];
        while i < hi {
            let Some(&c) = keys(i).get(pos) else {
                // Cannot happen for distinct sorted keys (only the first can end at `pos`).
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < hi && keys(j).get(pos) == Some(&c) {
                j += 1;
            }
            let child = nodes.len();
            nodes.push(Node {
                prefix: (0, 0, 0),
                value: None,
                children: vec![],
            });
            children.push((c, child));
            work.push((child, i, j, pos + 1, false));
            i = j;
        }
        if let Some(n) = nodes.get_mut(id) {
            n.prefix = (lo, depth, pos);
            n.value = value;
            n.children = children;
        }
    }
    nodes
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes the trie in post-order (children first, in character order), as depmod does.
fn write_trie(nodes: &[Node], entries: &[(&[u8], Vec<&Value>)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    put_u32(&mut out, MAGIC);
    put_u32(&mut out, VERSION);
    put_u32(&mut out, 0); // root offset, filled in below
    let mut offsets = vec![0u32; nodes.len()];
    let mut stack = vec![(0usize, false)];
    while let Some((id, children_done)) = stack.pop() {
        let node = nodes.get(id).context("kmod index: node out of range")?;
        if !children_done {
            stack.push((id, true));
            for &(_, child) in node.children.iter().rev() {
                stack.push((child, false));
            }
            continue;
        }
        let at = u32::try_from(out.len())
            .ok()
            .filter(|&at| at <= NODE_MASK)
            .context("kmod index larger than 256 MiB: node offsets have 28 bits")?;
        let mut offset = at;
        let (e, start, end) = node.prefix;
        let prefix = entries
            .get(e)
            .and_then(|(k, _)| k.get(start..end))
            .unwrap_or_default();
        if !prefix.is_empty() {
            out.extend_from_slice(prefix);
            out.push(0);
            offset |= NODE_PREFIX;
        }
        if let (Some(&(first, _)), Some(&(last, _))) = (node.children.first(), node.children.last())
        {
            out.push(first);
            out.push(last);
            let mut next = node.children.iter().peekable();
            for c in first..=last {
                match next.peek() {
                    Some(&&(ch, child)) if ch == c => {
                        put_u32(&mut out, offsets.get(child).copied().unwrap_or(0));
                        next.next();
                    }
                    _ => put_u32(&mut out, 0),
                }
            }
            offset |= NODE_CHILDS;
        }
        if let Some((_, values)) = node.value.and_then(|v| entries.get(v)) {
            put_u32(&mut out, u32::try_from(values.len())?);
            for (priority, value) in values {
                put_u32(&mut out, *priority);
                out.extend_from_slice(value.as_bytes());
                out.push(0);
            }
            offset |= NODE_VALUES;
        }
        if let Some(o) = offsets.get_mut(id) {
            *o = offset;
        }
    }
    let root = offsets.first().copied().unwrap_or(0);
    if let Some(slot) = out.get_mut(8..12) {
        slot.copy_from_slice(&root.to_be_bytes());
    }
    Ok(out)
}

/// A parsed index file, for reading back (tests, and checking what an image holds).
pub struct Reader<'a> {
    data: &'a [u8],
    root: u32,
}

/// One node as read from a file.
struct ReadNode<'a> {
    prefix: &'a [u8],
    first: u8,
    children: Vec<u32>,
    values: Vec<Value>,
}

impl<'a> Reader<'a> {
    /// Checks the header of `data`.
    pub fn new(data: &'a [u8]) -> Result<Reader<'a>> {
        let word = |at: usize| -> Result<u32> {
            let b = data
                .get(at..at + 4)
                .with_context(|| format!("kmod index of {} bytes: no header", data.len()))?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        ensure!(
            word(0)? == MAGIC,
            "not a kmod index: magic {:#010x}",
            word(0)?
        );
        ensure!(
            word(4)? == VERSION,
            "kmod index version {:#010x}, expected {VERSION:#010x}",
            word(4)?
        );
        Ok(Reader {
            data,
            root: word(8)?,
        })
    }

    fn u32_at(&self, at: usize) -> Result<u32> {
        let b = self
            .data
            .get(at..at.saturating_add(4))
            .filter(|b| b.len() == 4)
            .with_context(|| format!("kmod index: u32 at {at} beyond the end"))?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr_at(&self, at: usize) -> Result<(&'a [u8], usize)> {
        let rest = self
            .data
            .get(at..)
            .with_context(|| format!("kmod index: string at {at} beyond the end"))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .with_context(|| format!("kmod index: string at {at} has no NUL"))?;
        Ok((rest.get(..len).unwrap_or_default(), at + len + 1))
    }

    fn node(&self, reference: u32) -> Result<ReadNode<'a>> {
        let mut at = (reference & NODE_MASK) as usize;
        let mut prefix: &[u8] = &[];
        if reference & NODE_PREFIX != 0 {
            (prefix, at) = self.cstr_at(at)?;
        }
        let (mut first, mut children) = (0, vec![]);
        if reference & NODE_CHILDS != 0 {
            let fl = self
                .data
                .get(at..at + 2)
                .with_context(|| format!("kmod index: children at {at} beyond the end"))?;
            let (f, l) = (fl[0], fl[1]);
            ensure!(f <= l, "kmod index: children range {f}..{l} at {at}");
            first = f;
            at += 2;
            for _ in f..=l {
                children.push(self.u32_at(at)?);
                at += 4;
            }
        }
        let mut values = vec![];
        if reference & NODE_VALUES != 0 {
            let n = self.u32_at(at)?;
            at += 4;
            for _ in 0..n {
                let priority = self.u32_at(at)?;
                let (v, next) = self.cstr_at(at + 4)?;
                values.push((priority, String::from_utf8_lossy(v).into_owned()));
                at = next;
            }
        }
        Ok(ReadNode {
            prefix,
            first,
            children,
            values,
        })
    }

    /// A child reference of a node written at `parent`; depmod writes children before their
    /// parent, so a reader that insists on that cannot loop.
    fn child_ok(parent: u32, child: u32) -> Result<()> {
        ensure!(
            child & NODE_MASK < parent & NODE_MASK,
            "kmod index: child node at {} is not before its parent at {}",
            child & NODE_MASK,
            parent & NODE_MASK
        );
        Ok(())
    }

    /// The values of `key` (exact match), in file order; `None` when the key is absent.
    pub fn get(&self, key: &str) -> Result<Option<Vec<Value>>> {
        let key = key.as_bytes();
        let mut reference = self.root;
        let mut i = 0;
        loop {
            if reference & NODE_MASK == 0 {
                return Ok(None);
            }
            let node = self.node(reference)?;
            let Some(rest) = key.get(i..) else {
                return Ok(None);
            };
            if !rest.starts_with(node.prefix) {
                return Ok(None);
            }
            i += node.prefix.len();
            let Some(&c) = key.get(i) else {
                return Ok((!node.values.is_empty()).then_some(node.values));
            };
            let child = c
                .checked_sub(node.first)
                .and_then(|k| node.children.get(k as usize))
                .copied()
                .unwrap_or(0);
            if child & NODE_MASK == 0 {
                return Ok(None);
            }
            Self::child_ok(reference, child)?;
            reference = child;
            i += 1;
        }
    }

    /// Every key with its values, in key order.
    pub fn entries(&self) -> Result<Vec<(String, Vec<Value>)>> {
        let mut out = vec![];
        if self.root & NODE_MASK == 0 {
            return Ok(out);
        }
        // (node reference, the key up to this node)
        let mut stack = vec![(self.root, Vec::<u8>::new())];
        while let Some((reference, mut key)) = stack.pop() {
            let node = self.node(reference)?;
            key.extend_from_slice(node.prefix);
            if !node.values.is_empty() {
                out.push((String::from_utf8_lossy(&key).into_owned(), node.values));
            }
            for (k, &child) in node.children.iter().enumerate().rev() {
                if child & NODE_MASK == 0 {
                    continue;
                }
                Self::child_ok(reference, child)?;
                let mut ck = key.clone();
                ck.push(node.first.wrapping_add(u8::try_from(k).unwrap_or(0)));
                stack.push((child, ck));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // sizes of small hand-made test data
mod tests {
    use super::*;

    /// The example of libkmod-index.c's comment: ask, ate, on, once, one.
    #[test]
    fn example_trie_bytes() {
        let mut idx = Index::new();
        for (i, k) in ["on", "ask", "once", "ate", "one"].iter().enumerate() {
            idx.insert(k, &format!("v{k}"), u32::try_from(i).unwrap())
                .unwrap();
        }
        let bytes = idx.write().unwrap();
        // Post-order: "sk" (under 'a' 's'), "te", then the 'a' node, then "ce", "e", then
        // "n" (holding "on"), then the root.
        let mut expect: Vec<u8> = vec![];
        let u = |e: &mut Vec<u8>, v: u32| e.extend_from_slice(&v.to_be_bytes());
        u(&mut expect, MAGIC);
        u(&mut expect, VERSION);
        u(&mut expect, 0); // patched below
        // node "k" under a-s: prefix "k", value (1, "vask")
        let ask = expect.len() as u32;
        expect.extend_from_slice(b"k\0");
        u(&mut expect, 1);
        u(&mut expect, 1);
        expect.extend_from_slice(b"vask\0");
        let ate = expect.len() as u32;
        expect.extend_from_slice(b"e\0");
        u(&mut expect, 1);
        u(&mut expect, 3);
        expect.extend_from_slice(b"vate\0");
        // node 'a': no prefix, children s..t
        let a = expect.len() as u32;
        expect.extend_from_slice(b"st");
        u(&mut expect, ask | NODE_PREFIX | NODE_VALUES);
        u(&mut expect, ate | NODE_PREFIX | NODE_VALUES);
        let once = expect.len() as u32;
        expect.extend_from_slice(b"e\0");
        u(&mut expect, 1);
        u(&mut expect, 2);
        expect.extend_from_slice(b"vonce\0");
        let one = expect.len() as u32;
        u(&mut expect, 1);
        u(&mut expect, 4);
        expect.extend_from_slice(b"vone\0");
        // node 'o': prefix "n", children c..e (d missing), value "on"
        let on = expect.len() as u32;
        expect.extend_from_slice(b"n\0ce");
        u(&mut expect, once | NODE_PREFIX | NODE_VALUES);
        u(&mut expect, 0);
        u(&mut expect, one | NODE_VALUES);
        u(&mut expect, 1);
        u(&mut expect, 0);
        expect.extend_from_slice(b"von\0");
        let root = expect.len() as u32;
        expect.push(b'a');
        expect.push(b'o');
        u(&mut expect, a | NODE_CHILDS);
        for _ in b'b'..b'o' {
            u(&mut expect, 0);
        }
        u(&mut expect, on | NODE_PREFIX | NODE_CHILDS | NODE_VALUES);
        expect[8..12].copy_from_slice(&(root | NODE_CHILDS).to_be_bytes());
        assert_eq!(bytes, expect);

        let r = Reader::new(&bytes).unwrap();
        assert_eq!(r.get("once").unwrap(), Some(vec![(2, "vonce".into())]));
        assert_eq!(r.get("on").unwrap(), Some(vec![(0, "von".into())]));
        assert_eq!(r.get("o").unwrap(), None);
        assert_eq!(r.get("onces").unwrap(), None);
        assert_eq!(r.get("b").unwrap(), None);
        let keys: Vec<String> = r.entries().unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(keys, ["ask", "ate", "on", "once", "one"]);
    }

    #[test]
    fn empty_index_is_a_bare_header() {
        let bytes = Index::new().write().unwrap();
        assert_eq!(bytes.len(), 12);
        assert_eq!(&bytes[8..12], &12u32.to_be_bytes());
        let r = Reader::new(&bytes).unwrap();
        assert!(r.entries().unwrap().is_empty());
        assert_eq!(r.get("").unwrap(), None);
    }

    #[test]
    fn values_by_priority_then_last_inserted_first() {
        let mut idx = Index::new();
        idx.insert("k", "b", 5).unwrap();
        idx.insert("k", "a", 1).unwrap();
        idx.insert("k", "c", 5).unwrap();
        idx.insert("k", "d", 0).unwrap();
        idx.insert("", "root", 0).unwrap();
        let bytes = idx.write().unwrap();
        let r = Reader::new(&bytes).unwrap();
        let got: Vec<(u32, String)> = r.get("k").unwrap().unwrap();
        let want: Vec<(u32, String)> = [(0, "d"), (1, "a"), (5, "c"), (5, "b")]
            .iter()
            .map(|&(p, v)| (p, v.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(r.get("").unwrap(), Some(vec![(0, "root".to_string())]));
    }

    #[test]
    fn refuses_non_ascii_and_nul() {
        let mut idx = Index::new();
        assert!(idx.insert("caf\u{e9}", "x", 0).is_err());
        assert!(idx.insert("a\0b", "x", 0).is_err());
        assert!(idx.insert("ok", "v\u{80}", 0).is_err());
        assert!(idx.is_empty());
    }

    /// Many keys with shared prefixes, read back in full; a deep chain ("a", "aa", ...) does
    /// not recurse.
    #[test]
    fn read_back_many_and_deep() {
        let mut idx = Index::new();
        let mut want = BTreeMap::new();
        for i in 0..2000u32 {
            let k = format!("pci:v{:08X}d{:08X}*", i % 37, i * 7919);
            idx.insert(&k, &format!("m{i}"), i).unwrap();
            want.entry(k)
                .or_insert_with(Vec::new)
                .push((i, format!("m{i}")));
        }
        for n in 1..3000 {
            let k = "a".repeat(n);
            idx.insert(&k, "deep", 0).unwrap();
            want.insert(k, vec![(0, "deep".to_string())]);
        }
        let bytes = idx.write().unwrap();
        let r = Reader::new(&bytes).unwrap();
        let got: BTreeMap<String, Vec<Value>> = r.entries().unwrap().into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(
            r.get(&"a".repeat(2999)).unwrap(),
            Some(vec![(0, "deep".into())])
        );
    }

    #[test]
    fn reader_rejects_garbage_without_panicking() {
        assert!(Reader::new(b"").is_err());
        assert!(Reader::new(&[0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1]).is_err());
        let mut idx = Index::new();
        idx.insert("alpha", "1", 0).unwrap();
        idx.insert("beta", "2", 0).unwrap();
        let good = idx.write().unwrap();
        for cut in 0..good.len() {
            if let Ok(r) = Reader::new(&good[..cut]) {
                let _ = r.entries();
                let _ = r.get("alpha");
            }
        }
        // A node that names itself as its child.
        let mut bad = good.clone();
        let root = u32::from_be_bytes(bad[8..12].try_into().unwrap());
        let at = (root & NODE_MASK) as usize + 2;
        bad[at..at + 4].copy_from_slice(&root.to_be_bytes());
        let r = Reader::new(&bad).unwrap();
        assert!(r.entries().is_err());
        for b in 0..good.len() {
            let mut flipped = good.clone();
            flipped[b] ^= 0xff;
            if let Ok(r) = Reader::new(&flipped) {
                let _ = r.entries();
                let _ = r.get("beta");
            }
        }
    }
}
