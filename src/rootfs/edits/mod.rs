//! The profile's edits of the root filesystem: small, declarative changes to the in-memory
//! [`Tree`] that turn a stock Arch Linux ARM tarball into an Odroid HC1 Docker Swarm node.
//!
//! Each concern is one module with a `Config` struct that *is* the profile section (serde,
//! `deny_unknown_fields`, every field defaulted) and an `apply` function. The shared helpers
//! below are the one way edits read, write, create and remove entries, so every entry an edit
//! touches gets the build's timestamp ([`EditContext::timestamp`]) and secrets are handled in
//! one place.
//!
//! Only files the import captured into memory ([`FileData::Bytes`]) can be read; the paths the
//! edits read are listed by [`captured_paths`], which the Plan routes to
//! [`crate::rootfs::import::Route::Capture`].
//!
//! Recommended order (see [`APPLY_ORDER`]): `system`, `users`, `ssh`, `mail`, `journald`,
//! `io_scheduler`, `mirrorlist`, `docker`, `cron`, `backup`, `cleanup`, `builds`, `firstboot`,
//! `swarm`, `fstab`, `overlays` — users before the
//! edits that look users/groups up (ssh, mail, cron, overlays), overlays last so a site file
//! can override a generated one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};

use crate::tree::{self, FileData, Meta, Node, NodeKind, Timestamp, Tree};

pub mod backup;
pub mod builds;
pub mod cleanup;
pub mod cron;
pub mod docker;
pub mod firstboot;
pub mod fstab;
pub mod io_scheduler;
pub mod journald;
pub mod mail;
pub mod mirrorlist;
pub mod overlays;
pub mod ssh;
pub mod swarm;
pub mod system;
pub mod users;

/// Every file of the repository's `assets/` that the edits embed into images, by its path
/// under `assets/`. The derivation hashes them (`plan`, above this module): editing a script changes the
/// image, so it changes the hash too.
pub const EMBEDDED_ASSETS: &[(&str, &str)] = &[
    ("firstboot/hc1-card-secrets", firstboot::CARD_SECRETS_SCRIPT),
    ("firstboot/hc1-firstboot", firstboot::FIRSTBOOT_SCRIPT),
    ("firstboot/hc1-swarm-join", swarm::SCRIPT),
    ("ops/docker-bake.hcl", builds::BAKE_TEMPLATE),
    ("ops/hc1-bake", builds::BAKE_SCRIPT),
    ("ops/hc1-buildx-setup", builds::SETUP_SCRIPT),
    ("ops/hc1-docker-cleanup", cleanup::SCRIPT),
    ("ops/hc1-health", firstboot::HEALTH_SCRIPT),
    ("ops/hc1-volume-backup", backup::BACKUP_SCRIPT),
    ("ops/hc1-volume-restore", backup::RESTORE_SCRIPT),
];

/// The order the edits run in (module names; [`apply_all`] follows it, and docs/profiles.md's
/// sentence on the order is checked against it).
pub const APPLY_ORDER: &[&str] = &[
    "system",
    "users",
    "ssh",
    "mail",
    "journald",
    "io_scheduler",
    "mirrorlist",
    "docker",
    "cron",
    "backup",
    "cleanup",
    "builds",
    "firstboot",
    "swarm",
    "fstab",
    "overlays",
];

/// Every edit's section together, for a profile that wants them as one table (each field is
/// also usable on its own as `[users]`, `[system]`, … in a larger profile struct).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sections {
    pub system: system::Config,
    pub users: users::Config,
    pub ssh: ssh::Config,
    pub mail: mail::Config,
    pub journald: journald::Config,
    pub io_scheduler: io_scheduler::Config,
    pub mirrorlist: mirrorlist::Config,
    pub docker: docker::Config,
    pub cron: cron::Config,
    pub backup: backup::Config,
    pub cleanup: cleanup::Config,
    pub builds: builds::Config,
    pub firstboot: firstboot::Config,
    pub fstab: fstab::Config,
    pub overlays: overlays::Config,
}

/// Inputs of [`apply_all`] that come from the build rather than the profile sections.
#[derive(Clone, Debug)]
pub struct EditInputs<'a> {
    /// FAT volume id of the boot partition (for `/etc/fstab`).
    pub boot_volume_id: u32,
    /// Directory holding the named overlay directories (the profile's `overlays/`).
    pub overlays_dir: &'a std::path::Path,
    /// Template variables for overlay files marked as templates.
    pub vars: &'a BTreeMap<String, String>,
    /// The profile's `[swarm]`, for the first-boot join unit.
    pub swarm: Option<&'a swarm::Swarm>,
}

/// Apply every section in [`APPLY_ORDER`] (the one list of the order). The first failing
/// edit's error names its section.
pub fn apply_all(
    tree: &mut Tree,
    cfg: &Sections,
    ctx: &EditContext,
    inputs: &EditInputs,
) -> Result<()> {
    for name in APPLY_ORDER {
        apply_section(name, tree, cfg, ctx, inputs).with_context(|| format!("[{name}]"))?;
    }
    Ok(())
}

/// Apply section `name` (one of [`APPLY_ORDER`]).
fn apply_section(
    name: &str,
    tree: &mut Tree,
    cfg: &Sections,
    ctx: &EditContext,
    inputs: &EditInputs,
) -> Result<()> {
    match name {
        "system" => system::apply(tree, &cfg.system, ctx),
        "users" => users::apply(tree, &cfg.users, ctx),
        "ssh" => ssh::apply(tree, &cfg.ssh, ctx),
        "mail" => mail::apply(tree, &cfg.mail, ctx),
        "journald" => journald::apply(tree, &cfg.journald, ctx),
        "io_scheduler" => io_scheduler::apply(tree, &cfg.io_scheduler, ctx),
        "mirrorlist" => mirrorlist::apply(tree, &cfg.mirrorlist, ctx),
        "docker" => docker::apply(tree, &cfg.docker, ctx),
        "cron" => cron::apply(tree, &cfg.cron, ctx),
        "backup" => backup::apply(tree, &cfg.backup, ctx),
        "cleanup" => cleanup::apply(tree, &cfg.cleanup, ctx),
        "builds" => builds::apply(tree, &cfg.builds, &cfg.docker, ctx),
        "firstboot" => firstboot::apply(tree, &cfg.firstboot, &cfg.system, ctx),
        // The card-secrets list is complete once every section that takes a secret from the
        // card (mail, backup, swarm, users) has run.
        "swarm" => swarm::apply(tree, inputs.swarm, ctx).and_then(|()| {
            firstboot::write_card_secrets(tree, &cfg.firstboot, ctx).context("[firstboot]")
        }),
        "fstab" => {
            let grow_root = cfg.firstboot.enable && cfg.firstboot.grow_root;
            fstab::apply(tree, &cfg.fstab, ctx, inputs.boot_volume_id, grow_root)
        }
        "overlays" => overlays::apply(tree, &cfg.overlays, ctx, inputs.overlays_dir, inputs.vars),
        other => bail!("internal: {other:?} in APPLY_ORDER is no section"),
    }
}

/// `serde(skip_serializing_if)` for an `enable` that was added after images were first
/// built: on (the default) it is left out of the resolved profile, so the derivation hash of a
/// profile that does not turn the section off stays what it was.
pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

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

/// Paths (relative to the root) whose contents the edits read: the import must capture them
/// into memory.
pub fn captured_paths() -> Vec<&'static str> {
    let mut v = Vec::new();
    v.extend_from_slice(users::CAPTURED);
    v.extend_from_slice(ssh::CAPTURED);
    v.extend_from_slice(mail::CAPTURED);
    v.sort_unstable();
    v.dedup();
    v
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
/// went to the image instead of memory is an error: add its path to [`captured_paths`].
pub fn read_optional(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(id) = lookup(tree, path) else {
        return Ok(None);
    };
    match &tree.node(id).kind {
        NodeKind::File(FileData::Bytes(b)) => Ok(Some(b.clone())),
        NodeKind::File(FileData::Stored(_)) => bail!(
            "/{}: contents are not in memory; the import must capture this path \
             (add it to rootfs::edits::captured_paths)",
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
fn touch_parent(tree: &mut Tree, ctx: &EditContext, path: &str) {
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
            kind: NodeKind::File(FileData::Bytes(data.into())),
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

/// Where systemd looks for a unit file in an image: the admin's and the vendor's directory.
const UNIT_DIRS: &[&str] = &["etc/systemd/system", "usr/lib/systemd/system"];

/// The path of unit `unit` in the tree, if it is installed.
pub fn find_unit(tree: &Tree, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|p| exists(tree, p))
}

/// Check a unit name is one plain file name with a unit suffix.
pub fn check_unit_name(field: &str, unit: &str) -> Result<()> {
    crate::values::UnitName::new(unit)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// Enable `unit` the way `systemctl enable` does for `WantedBy=target`: a symlink
/// `/etc/systemd/system/<target>.wants/<unit>` to the unit file. Returns `false` (and
/// changes nothing) when the unit is not installed in the tree.
pub fn enable_unit(tree: &mut Tree, ctx: &EditContext, unit: &str, target: &str) -> Result<bool> {
    check_unit_name("unit", unit)?;
    check_unit_name("target", target)?;
    let Some(path) = find_unit(tree, unit) else {
        return Ok(false);
    };
    let wants = format!("etc/systemd/system/{target}.wants");
    mkdir_p(tree, ctx, &wants, 0o755, 0, 0, false)?;
    symlink(tree, ctx, &format!("{wants}/{unit}"), &format!("/{path}"))?;
    Ok(true)
}

/// The admin's unit directory (where the operations units go).
pub const ETC_UNITS: &str = "etc/systemd/system";
/// The vendor unit directory (where the first-boot units go).
pub const LIB_UNITS: &str = "usr/lib/systemd/system";

/// Write unit `name` (0644, root) into `dir` ([`ETC_UNITS`] or [`LIB_UNITS`]) and, with
/// `wanted_by`, enable it for that target.
pub fn install_unit(
    tree: &mut Tree,
    ctx: &EditContext,
    dir: &str,
    name: &str,
    text: impl Into<Vec<u8>>,
    wanted_by: Option<&str>,
) -> Result<()> {
    check_unit_name("unit", name)?;
    mkdir_p(tree, ctx, dir, 0o755, 0, 0, false)?;
    write_file(tree, ctx, &format!("{dir}/{name}"), text, 0o644, 0, 0)?;
    if let Some(target) = wanted_by
        && !enable_unit(tree, ctx, name, target)?
    {
        bail!("internal: {name} was written to /{dir} but is not found");
    }
    Ok(())
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

/// The `passwd`-style database files as parsed lines of `:`-separated fields.
pub(crate) fn parse_colon_file(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

pub(crate) fn format_colon_file(lines: &[Vec<String>]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(&l.join(":"));
        s.push('\n');
    }
    s
}

/// Look a user up in the tree's `/etc/passwd`: `(uid, gid, home)`.
pub fn passwd_user(tree: &Tree, name: &str) -> Result<Option<(u32, u32, String)>> {
    let Some(text) = read_text_optional(tree, "etc/passwd")? else {
        return Ok(None);
    };
    for f in parse_colon_file(&text) {
        if f.len() >= 7 && f[0] == name {
            let uid = f[2]
                .parse()
                .with_context(|| format!("/etc/passwd: bad uid for user {name:?}"))?;
            let gid = f[3]
                .parse()
                .with_context(|| format!("/etc/passwd: bad gid for user {name:?}"))?;
            return Ok(Some((uid, gid, f[5].clone())));
        }
    }
    Ok(None)
}

/// Look a group's gid up in the tree's `/etc/group`.
pub fn group_gid(tree: &Tree, name: &str) -> Result<Option<u32>> {
    let Some(text) = read_text_optional(tree, "etc/group")? else {
        return Ok(None);
    };
    for f in parse_colon_file(&text) {
        if f.len() >= 3 && f[0] == name {
            return f[2]
                .parse()
                .map(Some)
                .with_context(|| format!("/etc/group: bad gid for group {name:?}"));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {

    /// Every embedded shell script passes the real `shellcheck`.
    #[test]
    fn embedded_scripts_are_shellcheck_clean() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in EMBEDDED_ASSETS.iter().filter(|(n, _)| !n.ends_with(".hcl")) {
            let p = dir.path().join(name.replace('/', "_"));
            std::fs::write(&p, text).unwrap();
            let out = std::process::Command::new("shellcheck")
                .arg(&p)
                .output()
                .expect("shellcheck is needed (scripts/test installs it)");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    /// Every file under assets/ is embedded (and so hashed), with the bytes on disk.
    #[test]
    fn embedded_assets_are_every_asset_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                let rel = f
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                on_disk.push((rel, std::fs::read_to_string(&f).unwrap()));
            }
        }
        on_disk.sort();
        let embedded: Vec<(String, String)> = EMBEDDED_ASSETS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(embedded, on_disk);
    }
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

    #[test]
    fn apply_order_names_every_section_once_and_the_docs_agree() {
        // Every table of `Sections` (its serialised keys) and `[swarm]` (the profile's own),
        // each once, and nothing else.
        let keys = match serde_json::to_value(Sections::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect::<Vec<_>>(),
            other => panic!("Sections does not serialise to a table: {other:?}"),
        };
        let mut want: Vec<String> = keys.into_iter().chain(["swarm".to_string()]).collect();
        want.sort();
        let mut have: Vec<String> = APPLY_ORDER.iter().map(|s| s.to_string()).collect();
        have.sort();
        assert_eq!(have, want, "APPLY_ORDER against the sections");
        // docs/profiles.md says the order in one sentence: it must be this one.
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/profiles.md"))
                .unwrap();
        let flat = docs.split_whitespace().collect::<Vec<_>>().join(" ");
        let listed = APPLY_ORDER
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let said = format!("They are applied in this order: {listed}");
        assert!(
            flat.contains(&format!("{said}.")) || flat.contains(&format!("{said} (")),
            "docs/profiles.md must say: They are applied in this order: {listed}."
        );
    }

    #[test]
    fn captured_paths_cover_the_account_files() {
        let p = captured_paths();
        for want in [
            "etc/passwd",
            "etc/shadow",
            "etc/group",
            "etc/gshadow",
            "etc/ssh/sshd_config",
        ] {
            assert!(p.contains(&want), "{want} missing from {p:?}");
        }
    }

    #[test]
    fn enable_unit_needs_the_unit() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        assert!(!enable_unit(&mut t, &ctx, "nope.service", "multi-user.target").unwrap());
        assert!(!exists(
            &t,
            "etc/systemd/system/multi-user.target.wants/nope.service"
        ));
        assert!(enable_unit(&mut t, &ctx, "sshd.service", "multi-user.target").unwrap());
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/sshd.service",
            "/usr/lib/systemd/system/sshd.service",
        );
        assert!(enable_unit(&mut t, &ctx, "../x.service", "multi-user.target").is_err());
    }

    /// Every in-memory file of the tree whose contents contain `needle`.
    fn files_containing(t: &Tree, needle: &str) -> Vec<String> {
        let mut hits = Vec::new();
        t.walk(|p, _, id| {
            if let NodeKind::File(FileData::Bytes(b)) = &t.node(id).kind
                && b.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(tree::display(p));
            }
        });
        hits
    }

    fn node_config() -> (
        users::Config,
        system::Config,
        ssh::Config,
        mail::Config,
        cron::Config,
    ) {
        let u: users::Config = toml::from_str(
            r#"
            create_groups = ["docker"]
            sudo_wheel = true
            [[add]]
            name = "admin"
            groups = ["wheel", "docker"]
            password_secret = "admin-hash"
            authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@desk"]
            "#,
        )
        .unwrap();
        let s = system::Config {
            hostname: Some("hc1-{mac6}".parse().unwrap()),
            ..system::Config::default()
        };
        let m = mail::Config {
            mailhub: Some("smtp.example.org:587".parse().unwrap()),
            root: "ops@example.org".into(),
            auth_user: Some("hc1@example.org".into()),
            auth_pass_secret: Some("smtp-pass".into()),
            ..mail::Config::default()
        };
        let c: cron::Config = toml::from_str(
            "[[job]]\nname = \"docker-cleanup\"\nschedule = \"@daily\"\nuser = \"admin\"\n\
             command = \"docker system prune -f\"\n",
        )
        .unwrap();
        (u, s, ssh::Config::default(), m, c)
    }

    #[test]
    fn whole_node_in_recommended_order_is_consistent_and_keeps_secrets_in_place() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let (u, s, sh, m, c) = node_config();
        system::apply(&mut t, &s, &ctx).unwrap();
        users::apply(&mut t, &u, &ctx).unwrap();
        ssh::apply(&mut t, &sh, &ctx).unwrap();
        mail::apply(&mut t, &m, &ctx).unwrap();
        journald::apply(&mut t, &journald::Config::default(), &ctx).unwrap();
        io_scheduler::apply(&mut t, &io_scheduler::Config::default(), &ctx).unwrap();
        mirrorlist::apply(&mut t, &mirrorlist::Config::default(), &ctx).unwrap();
        docker::apply(&mut t, &docker::Config::default(), &ctx).unwrap();
        cron::apply(&mut t, &c, &ctx).unwrap();
        fstab::apply(&mut t, &fstab::Config::default(), &ctx, 0xabcd_1234, false).unwrap();

        // Secrets are only where they belong, with restrictive modes.
        assert_eq!(files_containing(&t, SMTP_PASS), ["etc/msmtprc"]);
        assert_file(
            &t,
            "etc/msmtprc",
            text(&t, "etc/msmtprc").as_bytes(),
            0o600,
            0,
            0,
        );
        assert_eq!(files_containing(&t, ADMIN_HASH), ["etc/shadow"]);
        let notes = ctx.take_notes();
        let dbg = format!("{ctx:?} {u:?} {m:?} {notes:?}");
        assert!(
            !dbg.contains(SMTP_PASS) && !dbg.contains(ADMIN_HASH),
            "{dbg}"
        );
        assert!(
            text(&t, "etc/ssh/sshd_config.d/10-hc1img.conf").contains("PasswordAuthentication no")
        );
        assert!(
            lookup(&t, "etc/hostname").is_some(),
            "template hostname keeps the old file"
        );

        let dir = tempfile::tempdir().unwrap();
        testutil::materialize(&t, dir.path());
        testutil::run_check("pwck", dir.path());
        testutil::run_check("grpck", dir.path());
    }

    /// Secrets that are not baked: no value anywhere in the tree (even with the values at
    /// hand), locked accounts, unauthenticated mail, and the card-secrets map and units.
    #[test]
    fn card_secrets_stay_out_of_the_image_and_are_mapped_for_the_boot() {
        let (mut t, secrets) = arch_tree();
        bytes(
            &mut t,
            "usr/lib/systemd/system/systemd-repart.service",
            0o644,
            "",
        );
        let card = ["admin-hash", "smtp-pass", "tok", "plain", "yes-hash"];
        let ctx = EditContext::new(TS, &secrets).with_card_secrets(card.map(String::from));
        let (mut u, s, sh, m, _) = node_config();
        u.root_password_secret = Some("yes-hash".into());
        u.add[0].authorized_keys.clear();
        system::apply(&mut t, &s, &ctx).unwrap();
        users::apply(&mut t, &u, &ctx).unwrap();
        ssh::apply(&mut t, &sh, &ctx).unwrap();
        mail::apply(&mut t, &m, &ctx).unwrap();
        let b: backup::Config = toml::from_str(
            "target = \"rsync\"\nrsync_dest = \"backup@nas.lan:/srv/hc1\"\nssh_key_secret = \"plain\"\n",
        )
        .unwrap();
        backup::apply(&mut t, &b, &ctx).unwrap();
        let mut bl = builds::tests::cfg();
        bl.ssh_key_secret = Some("plain".into());
        let d: docker::Config = toml::from_str(
            "[daemon]\nstorage-driver = \"overlay2\"\ninsecure-registries = [\"registry.cluster.lan:5000\"]\n",
        )
        .unwrap();
        builds::apply(&mut t, &bl, &d, &ctx).unwrap();
        let fb = firstboot::Config::default();
        firstboot::apply(&mut t, &fb, &s, &ctx).unwrap();
        let sw = swarm::Swarm {
            role: swarm::SwarmRole::Worker,
            managers: vec!["m1.lan".parse().unwrap()],
            advertise_addr: None,
            token_secret: Some("tok".into()),
            wait_for_time_sync: true,
            labels: Default::default(),
        };
        swarm::apply(&mut t, Some(&sw), &ctx).unwrap();
        firstboot::write_card_secrets(&mut t, &fb, &ctx).unwrap();
        fstab::apply(&mut t, &fstab::Config::default(), &ctx, 0xabcd_1234, true).unwrap();

        for v in [
            ADMIN_HASH,
            SMTP_PASS,
            "hunter2-plaintext",
            "SWMTKN",
            "$y$j9T$",
        ] {
            assert_eq!(
                files_containing(&t, v),
                Vec::<String>::new(),
                "{v} in the tree"
            );
        }
        let shadow = text(&t, "etc/shadow");
        for user in ["root", "admin"] {
            let line = shadow
                .lines()
                .find(|l| l.starts_with(&format!("{user}:")))
                .unwrap();
            assert_eq!(
                line.split(':').nth(1),
                Some("!"),
                "{user} is not locked: {line}"
            );
        }
        let msmtprc = text(&t, "etc/msmtprc");
        assert!(
            msmtprc.ends_with("\nauth off\n") && !msmtprc.contains("\npassword "),
            "{msmtprc}"
        );
        assert!(lookup(&t, swarm::TOKEN).is_none());
        assert!(lookup(&t, backup::SSH_KEY).is_none());
        assert_eq!(
            text(&t, firstboot::CARD_SECRETS_CONF),
            "# Written by hc1img: where hc1-card-secrets puts each secret the boot card brings.\n\
             # NAME ACTION ARGS (see /usr/lib/hc1img/hc1-card-secrets --help)\n\
             yes-hash password root\n\
             admin-hash password admin\n\
             smtp-pass msmtp-auth hc1@example.org\n\
             plain file /etc/hc1/backup-ssh-key 0600\n\
             plain file /etc/hc1/buildx-ssh-key 0600\n\
             tok swarm-token\n"
        );
        assert_eq!(
            ctx.card_actions
                .borrow()
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            ["admin-hash", "plain", "smtp-pass", "tok", "yes-hash"]
        );
        assert!(
            text(&t, "etc/systemd/system/hc1-volume-backup.service")
                .contains("ConditionPathExists=/etc/hc1/backup-ssh-key")
        );
        assert!(
            text(&t, "etc/systemd/system/hc1-buildx-setup.service")
                .contains("ConditionPathExists=/etc/hc1/buildx-ssh-key")
        );
        // The admin has neither a password in the image nor a key: a warning says so.
        let w = ctx.take_warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("admin") && w.contains("admin-hash=FILE")),
            "{w:?}"
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(text(&t, "etc/fstab").contains("fmask=0077,dmask=0077"));
        verify_units(
            &t,
            &[
                "hc1-card-secrets.service",
                "hc1-card-secrets.path",
                "hc1-swarm-join.service",
                "hc1-swarm-join.path",
                "hc1-firstboot.service",
            ],
            &["/usr/bin/docker"],
        );
    }

    /// With world-readable /boot masks the build warns that seeded secrets would be exposed.
    #[test]
    fn loose_boot_masks_warn_when_secrets_come_from_the_card() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets).with_card_secrets(["tok".to_string()]);
        let loose = fstab::Config {
            boot_options: "rw,fmask=0022,dmask=0022".into(),
            ..fstab::Config::default()
        };
        fstab::apply(&mut t, &loose, &ctx, 1, false).unwrap();
        assert!(
            ctx.take_warnings().is_empty(),
            "no card secrets, no warning"
        );
        ctx.on_card("tok", "swarm-token");
        fstab::apply(&mut t, &loose, &ctx, 1, false).unwrap();
        let w = ctx.take_warnings();
        assert!(w.len() == 1 && w[0].contains("fmask=0077"), "{w:?}");
    }

    #[test]
    fn secret_values_never_reach_errors() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let (mut u, _, _, mut m, _) = node_config();
        // ssmtp.conf cannot hold a space (msmtprc quotes it).
        testutil::stored(&mut t, "usr/bin/ssmtp");
        m.program = mail::Program::Ssmtp;
        m.auth_pass_secret = Some("smtp-spaced".into());
        let e = format!("{:#} {:?}", mail::apply(&mut t, &m, &ctx).unwrap_err(), ctx);
        assert!(e.contains("\"smtp-spaced\""), "{e}");
        assert!(!e.contains(SMTP_PASS), "secret leaked: {e}");
        // A hash where a different kind of secret is expected is not echoed either.
        m.auth_pass_secret = Some("admin-hash".into());
        let r = mail::apply(&mut t, &m, &ctx);
        assert!(r.is_ok(), "a hash is a valid (if odd) password");
        u.add[0].password_secret = Some("smtp-pass".into());
        let e = format!("{:#}", users::apply(&mut t, &u, &ctx).unwrap_err());
        assert!(e.contains("\"smtp-pass\"") && !e.contains(SMTP_PASS), "{e}");
        let notes = ctx.take_notes().join("\n");
        assert!(
            !notes.contains(SMTP_PASS) && !notes.contains(ADMIN_HASH),
            "{notes}"
        );
    }
}
