//! Editing the in-memory root [`Tree`]: the one way the sections read, write, create and
//! remove entries, so every entry an edit touches gets the build's timestamp
//! ([`EditContext::timestamp`]) and secrets are handled in one place.
//!
//! Paths are POSIX paths inside the root (`/etc/x` or `etc/x`); nothing is written through a
//! symlink or outside the root. Only files the import captured into memory
//! ([`FileData::Bytes`]) can be read: the paths the sections read are named by each section
//! (their `Section::CAPTURED`, which the build hands to the import). The systemd unit
//! helpers are in [`units`], the shadow-suite account files in [`accounts`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};

use crate::tree::{self, FileData, Meta, Node, NodeKind, Timestamp, Tree};

pub mod accounts;
pub mod units;

#[cfg(test)]
pub(crate) mod testutil;

/// What every edit gets besides the tree and its own config.
pub struct EditContext<'a> {
    /// Modification time (seconds since the epoch) of every entry an edit creates or changes.
    pub timestamp: i64,
    /// Looks a named secret up and returns its bytes. Its value must never reach a message.
    pub secrets: &'a dyn Fn(&str) -> Result<Vec<u8>>,
    /// Non-fatal remarks for the build report (never contain secret values).
    pub notes: RefCell<Vec<String>>,
    /// Warnings for the build report (always shown; never contain secret values).
    pub warnings: RefCell<Vec<String>>,
    /// Secrets that are not baked into the image (the profile's `SecretSource::Card`):
    /// edits leave their values out and say, with [`EditContext::on_card`], where the node
    /// puts them when its card brings them.
    pub card_secrets: std::collections::BTreeSet<String>,
    /// `(secret, action)` lines recorded by [`EditContext::on_card`], for
    /// [`firstboot::write_card_secrets`].
    pub card_actions: RefCell<Vec<(String, String)>>,
}

impl fmt::Debug for EditContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EditContext")
            .field("timestamp", &self.timestamp)
            .field("secrets", &"<redacted>")
            .field("notes", &self.notes.borrow())
            .field("card_secrets", &self.card_secrets)
            .finish()
    }
}

impl<'a> EditContext<'a> {
    pub fn new(timestamp: i64, secrets: &'a dyn Fn(&str) -> Result<Vec<u8>>) -> Self {
        EditContext {
            timestamp,
            secrets,
            notes: RefCell::new(Vec::new()),
            warnings: RefCell::new(Vec::new()),
            card_secrets: Default::default(),
            card_actions: RefCell::new(Vec::new()),
        }
    }

    /// The same context where the secrets `names` are not baked but come from the card.
    pub fn with_card_secrets(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.card_secrets = names.into_iter().collect();
        self
    }

    /// Whether secret `name` goes into the image (else the node takes it from its card).
    pub fn baked(&self, name: &str) -> bool {
        !self.card_secrets.contains(name)
    }

    /// Record what the node's boot does with secret `name` when its card brings it: one line
    /// of `/etc/hc1img/card-secrets.conf` (`NAME ACTION ARGS…`, see
    /// `assets/firstboot/hc1-card-secrets`).
    pub fn on_card(&self, name: &str, action: impl Into<String>) {
        self.card_actions
            .borrow_mut()
            .push((name.to_string(), action.into()));
    }

    /// Record a warning.
    pub fn warn(&self, msg: impl Into<String>) {
        self.warnings.borrow_mut().push(msg.into());
    }

    /// The warnings recorded so far.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// Record a non-fatal remark.
    pub fn note(&self, msg: impl Into<String>) {
        self.notes.borrow_mut().push(msg.into());
    }

    /// The notes recorded so far.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.notes.borrow_mut())
    }

    /// The bytes of secret `name`. The error names the secret, never its value; the lookup's
    /// own error is not included, in case it quotes what it read.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>> {
        (self.secrets)(name).map_err(|_| {
            anyhow::anyhow!("secret {name:?} cannot be read; define it in the profile's secrets")
        })
    }

    /// The secret `name` as one line of UTF-8 text (one trailing newline removed).
    pub fn secret_line(&self, name: &str) -> Result<String> {
        let mut v = self.secret(name)?;
        if v.last() == Some(&b'\n') {
            v.pop();
            if v.last() == Some(&b'\r') {
                v.pop();
            }
        }
        let s = String::from_utf8(v)
            .map_err(|_| anyhow::anyhow!("secret {name:?} is not UTF-8 text"))?;
        if s.is_empty() {
            bail!("secret {name:?} is empty");
        }
        if s.contains(['\n', '\r', '\0']) {
            bail!("secret {name:?} must be a single line");
        }
        Ok(s)
    }

    pub fn mtime(&self) -> Timestamp {
        Timestamp::from_secs(self.timestamp)
    }

    /// Metadata for an entry this edit creates.
    pub fn meta(&self, perm: u16, uid: u32, gid: u32) -> Meta {
        Meta::new(perm, uid, gid, self.mtime())
    }
}

/// Strip a leading `/` and check the path stays inside the root; returns the normalised
/// relative path (components joined by `/`).
pub fn rel(path: &str) -> Result<String> {
    if path.split('/').any(|c| c == "..") {
        bail!("path {path:?} contains `..`; give a plain absolute path inside the rootfs");
    }
    let comps = tree::normalize(path.as_bytes())
        .with_context(|| format!("path {path:?} names no file inside the rootfs"))?;
    let v: Vec<String> = comps
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .collect();
    Ok(v.join("/"))
}

/// Fail unless no existing ancestor of `path` in the tree is a symlink or a non-directory:
/// edits never write through a link.
pub fn check_no_symlink_parent(tree: &Tree, path: &str) -> Result<()> {
    let r = rel(path)?;
    let comps: Vec<&str> = r.split('/').collect();
    let mut cur = Tree::ROOT;
    for (i, c) in comps[..comps.len() - 1].iter().enumerate() {
        let NodeKind::Dir(m) = &tree.node(cur).kind else {
            bail!("/{r}: an ancestor is not a directory in the rootfs");
        };
        let Some(&next) = m.get(c.as_bytes()) else {
            return Ok(());
        };
        let shown = format!("/{}", comps[..=i].join("/"));
        match &tree.node(next).kind {
            NodeKind::Dir(_) => cur = next,
            NodeKind::Symlink(t) => bail!(
                "/{r}: {shown} is a symlink (to {}) in the rootfs; refusing to write through it, \
                 use the real path",
                tree::display(t)
            ),
            _ => bail!("/{r}: {shown} is not a directory in the rootfs"),
        }
    }
    Ok(())
}

/// The node at `path`, if any (symlinks not followed).
pub fn lookup(tree: &Tree, path: &str) -> Option<tree::NodeId> {
    tree.lookup(path.as_bytes())
}

/// Whether something exists at `path` (symlinks not followed).
pub fn exists(tree: &Tree, path: &str) -> bool {
    lookup(tree, path).is_some()
}

/// Contents of the regular file at `path`, or `None` when nothing is there. A file whose data
/// went to the image instead of memory is an error: add its path to its section's `CAPTURED`.
pub fn read_optional(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(id) = lookup(tree, path) else {
        return Ok(None);
    };
    match &tree.node(id).kind {
        NodeKind::File(FileData::Bytes(b)) => Ok(Some(b.clone())),
        NodeKind::File(FileData::Stored(_)) => bail!(
            "/{}: contents are not in memory; the import must capture this path \
             (add it to its section's CAPTURED paths)",
            rel(path)?
        ),
        _ => bail!("/{}: not a regular file in the rootfs", rel(path)?),
    }
}

/// Contents of the regular file at `path`; missing is an error.
pub fn read_file(tree: &Tree, path: &str) -> Result<Vec<u8>> {
    read_optional(tree, path)?.with_context(|| {
        format!(
            "/{}: not found in the rootfs",
            rel(path).unwrap_or_default()
        )
    })
}

/// Contents of the file at `path` as UTF-8 text, or `None` when missing.
pub fn read_text_optional(tree: &Tree, path: &str) -> Result<Option<String>> {
    match read_optional(tree, path)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("/{}: not UTF-8 text", rel(path).unwrap_or_default())),
    }
}

/// Contents of the file at `path` as UTF-8 text; missing is an error.
pub fn read_text(tree: &Tree, path: &str) -> Result<String> {
    read_text_optional(tree, path)?.with_context(|| {
        format!(
            "/{}: not found in the rootfs",
            rel(path).unwrap_or_default()
        )
    })
}

/// Set the mtime of the directory holding `path` (its entries changed).
pub fn touch_parent(tree: &mut Tree, ctx: &EditContext, path: &str) {
    let r = match rel(path) {
        Ok(r) => r,
        Err(_) => return,
    };
    let parent = match r.rsplit_once('/') {
        Some((p, _)) => p.to_string(),
        None => String::new(),
    };
    if let Some(id) = tree.lookup(parent.as_bytes())
        && tree.node(id).kind.is_dir()
    {
        tree.node_mut(id).meta.mtime = ctx.mtime();
    }
}

/// Create every missing ancestor of `path` as a root-owned 0755 directory.
fn ensure_parents(tree: &mut Tree, ctx: &EditContext, path: &str) -> Result<()> {
    let r = rel(path)?;
    if let Some((parent, _)) = r.rsplit_once('/') {
        mkdir_p(tree, ctx, parent, 0o755, 0, 0, false)?;
    }
    Ok(())
}

/// Create the directory `path` and its missing ancestors (ancestors root-owned 0755). When
/// `set_existing` is true an existing directory at `path` gets `mode`/`uid`/`gid` too;
/// otherwise it is left alone. A non-directory in the way is an error.
pub fn mkdir_p(
    tree: &mut Tree,
    ctx: &EditContext,
    path: &str,
    mode: u16,
    uid: u32,
    gid: u32,
    set_existing: bool,
) -> Result<()> {
    let r = rel(path)?;
    check_no_symlink_parent(tree, &r)?;
    let comps: Vec<&str> = r.split('/').collect();
    for i in 0..comps.len() {
        let p = comps[..=i].join("/");
        let last = i + 1 == comps.len();
        match tree.lookup(p.as_bytes()) {
            Some(id) => {
                let node = tree.node_mut(id);
                match &node.kind {
                    NodeKind::Dir(_) => {
                        if last && set_existing {
                            node.meta.perm = mode & 0o7777;
                            node.meta.uid = uid;
                            node.meta.gid = gid;
                            node.meta.mtime = ctx.mtime();
                        }
                    }
                    NodeKind::Symlink(t) => bail!(
                        "/{p} is a symlink (to {}) in the rootfs, not a directory; refusing to \
                         create /{r} through it",
                        tree::display(t)
                    ),
                    _ => bail!("/{p} exists in the rootfs and is not a directory"),
                }
            }
            None => {
                let meta = if last {
                    ctx.meta(mode, uid, gid)
                } else {
                    ctx.meta(0o755, 0, 0)
                };
                tree.insert(
                    p.as_bytes(),
                    Node {
                        meta,
                        kind: NodeKind::Dir(BTreeMap::new()),
                    },
                    &ctx.meta(0o755, 0, 0),
                )
                .with_context(|| format!("cannot create directory /{p}"))?;
                touch_parent(tree, ctx, &p);
            }
        }
    }
    Ok(())
}

/// Create or replace the regular file at `path` with `data`, `mode`, `uid`, `gid` and the
/// build's timestamp. Missing ancestors become root-owned 0755 directories.
pub fn write_file(
    tree: &mut Tree,
    ctx: &EditContext,
    path: &str,
    data: impl Into<Vec<u8>>,
    mode: u16,
    uid: u32,
    gid: u32,
) -> Result<()> {
    write_file_data(
        tree,
        ctx,
        path,
        FileData::Bytes(data.into()),
        mode,
        uid,
        gid,
    )
}

/// [`write_file`] with contents that may already be stored in the image (a large file the
/// build streamed into the filesystem, e.g. `[docker] preload`).
pub fn write_file_data(
    tree: &mut Tree,
    ctx: &EditContext,
    path: &str,
    data: FileData,
    mode: u16,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let r = rel(path)?;
    check_no_symlink_parent(tree, &r)?;
    if let Some(id) = tree.lookup(r.as_bytes())
        && tree.node(id).kind.is_dir()
    {
        bail!("/{r} is a directory in the rootfs; cannot write a file there");
    }
    ensure_parents(tree, ctx, &r)?;
    tree.insert(
        r.as_bytes(),
        Node {
            meta: ctx.meta(mode, uid, gid),
            kind: NodeKind::File(data),
        },
        &ctx.meta(0o755, 0, 0),
    )
    .with_context(|| format!("cannot write /{r}"))?;
    touch_parent(tree, ctx, &r);
    Ok(())
}

/// Replace the contents of the existing regular file at `path`, keeping its mode, owner and
/// extended attributes (mtime becomes the build's). Missing is an error.
pub fn update_file(
    tree: &mut Tree,
    ctx: &EditContext,
    path: &str,
    data: impl Into<Vec<u8>>,
) -> Result<()> {
    let r = rel(path)?;
    let id = tree
        .lookup(r.as_bytes())
        .with_context(|| format!("/{r}: not found in the rootfs"))?;
    let node = tree.node_mut(id);
    if !matches!(node.kind, NodeKind::File(_)) {
        bail!("/{r}: not a regular file in the rootfs");
    }
    node.kind = NodeKind::File(FileData::Bytes(data.into()));
    node.meta.mtime = ctx.mtime();
    Ok(())
}

/// Create or replace the symlink at `path` pointing to `target` (root-owned, 0777).
pub fn symlink(tree: &mut Tree, ctx: &EditContext, path: &str, target: &str) -> Result<()> {
    let r = rel(path)?;
    check_no_symlink_parent(tree, &r)?;
    if let Some(id) = tree.lookup(r.as_bytes())
        && tree.node(id).kind.is_dir()
    {
        bail!("/{r} is a directory in the rootfs; cannot put a symlink there");
    }
    ensure_parents(tree, ctx, &r)?;
    tree.insert(
        r.as_bytes(),
        Node {
            meta: ctx.meta(0o777, 0, 0),
            kind: NodeKind::Symlink(target.as_bytes().to_vec()),
        },
        &ctx.meta(0o755, 0, 0),
    )
    .with_context(|| format!("cannot create symlink /{r}"))?;
    touch_parent(tree, ctx, &r);
    Ok(())
}

/// Remove the entry at `path` (a directory with everything below it). Returns whether
/// something was there.
pub fn remove(tree: &mut Tree, ctx: &EditContext, path: &str) -> Result<bool> {
    let r = rel(path)?;
    let removed = tree.remove(r.as_bytes()).is_some();
    if removed {
        touch_parent(tree, ctx, &r);
    }
    Ok(removed)
}

/// Reject a value that would break the line-oriented file it goes into.
pub fn check_one_line(field: &str, value: &str) -> Result<()> {
    if value.chars().any(|c| c.is_control()) {
        bail!("{field} must be one line without control characters");
    }
    Ok(())
}

/// A plain file name for a drop-in (`[A-Za-z0-9_-]`, optionally with dots inside).
pub fn check_file_name(field: &str, name: &str, allow_dots: bool) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (allow_dots && b == b'.')
        });
    if !ok {
        let what = if allow_dots {
            "letters, digits, `_`, `-`, `.`"
        } else {
            "letters, digits, `_`, `-`"
        };
        bail!("{field} = {name:?} must be a plain file name of {what}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn stored_files_cannot_be_read_and_symlinked_parents_are_refused() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let e = read_file(&t, "/usr/lib/os-release")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/usr/lib/os-release") && e.contains("capture"),
            "{e}"
        );
        let e = write_file(&mut t, &ctx, "/lib/x", "y", 0o644, 0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/lib is a symlink"), "{e}");
        let e = write_file(&mut t, &ctx, "/../etc/x", "y", 0o644, 0, 0).unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
        write_file(&mut t, &ctx, "/srv/a/b", "y", 0o600, 3, 4).unwrap();
        assert_file(&t, "srv/a/b", b"y", 0o600, 3, 4);
        assert_dir(&t, "srv/a", 0o755, 0, 0);
        let id = t.lookup(b"srv").unwrap();
        assert_eq!(t.node(id).meta.mtime.sec, TS);
    }
}
