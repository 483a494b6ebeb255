//! Loading: the `extends` chain, path resolution, the board and lock files, overrides, and the
//! checks every value passes before anything is fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::layers;
use super::node::{self, Kind, Loc, Node, Sources};
use super::schema::{Board, LockFile, RawProfile, RawSecret};
use super::secrets::{self, SecretSource};
use super::size::Size;
use super::{InputFiles, Overrides, Profile, Source};
use crate::rootfs::edits;

/// Name of the lock file kept next to the profile file that declares `[source]`.
pub const LOCK_FILE_NAME: &str = "hc1img.lock";

/// Longest `extends` chain accepted.
const MAX_CHAIN: usize = 32;

/// Keys holding paths relative to the file that declares them (`*` = every table key,
/// `[]` = every array element).
const PATH_KEYS: &[&[&str]] = &[
    &["board"],
    &["source", "keyring"],
    &["packages", "keyring"],
    &["secrets", "*", "file"],
    &["overlays", "dirs", "[]"],
    &["overlays", "names", "[]"],
];

/// Load, merge and validate the profile at `path`. See the module docs of [`super`].
pub fn load(path: &Path, overrides: &Overrides) -> anyhow::Result<Profile> {
    let mut sources = Sources::default();
    let mut chain: Vec<Node> = Vec::new();
    let mut chain_paths: Vec<PathBuf> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut cur = path.to_path_buf();
    let mut via: Option<Loc> = None;
    // The `extends` of the first derived file without a `name` of its own.
    let mut nameless: Option<Loc> = None;
    loop {
        let canon = match std::fs::canonicalize(&cur) {
            Ok(c) => c,
            Err(e) => match via {
                Some(l) => anyhow::bail!(
                    "{}: extends: file {} cannot be read: {}",
                    sources.where_(l),
                    cur.display(),
                    secrets::io_reason(&e)
                ),
                None => anyhow::bail!(
                    "{}: cannot read profile: {}",
                    cur.display(),
                    secrets::io_reason(&e)
                ),
            },
        };
        if let Some(pos) = seen.iter().position(|p| *p == canon) {
            let mut names: Vec<String> = chain_paths[pos..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            names.push(cur.display().to_string());
            let at = via.map(|l| sources.where_(l)).unwrap_or_default();
            anyhow::bail!("{at}: extends: cycle: {}", names.join(" -> "));
        }
        if chain.len() >= MAX_CHAIN {
            let at = via.map(|l| sources.where_(l)).unwrap_or_default();
            anyhow::bail!("{at}: extends: chain longer than {MAX_CHAIN} files");
        }
        let text = std::fs::read_to_string(&cur).map_err(|e| match via {
            Some(l) => anyhow::anyhow!(
                "{}: extends: file {} cannot be read: {}",
                sources.where_(l),
                cur.display(),
                secrets::io_reason(&e)
            ),
            None => anyhow::anyhow!(
                "{}: cannot read profile: {}",
                cur.display(),
                secrets::io_reason(&e)
            ),
        })?;
        let idx = sources.add(&cur, text);
        let mut doc = node::parse(&sources, idx)?;
        let dir = parent_dir(&cur);
        for keys in PATH_KEYS {
            resolve_paths(&mut doc, keys, &dir);
        }
        let extends = doc.table_mut().and_then(|t| t.remove("extends"));
        if let Some(e) = &extends
            && doc.entry(&["name"]).is_none()
        {
            nameless.get_or_insert(e.key_loc);
        }
        seen.push(canon);
        chain_paths.push(cur.clone());
        chain.push(doc);
        match extends {
            None => break,
            Some(e) => match &e.value.kind {
                Kind::Str(s) if !s.is_empty() => {
                    via = Some(e.value.loc);
                    cur = normalize(&dir.join(s));
                }
                _ => anyhow::bail!(
                    "{}: extends: expected a path (string) relative to this file, found {}",
                    sources.where_(e.value.loc),
                    e.value.type_name()
                ),
            },
        }
    }

    if let Some(l) = nameless {
        anyhow::bail!(
            "{}: name: a derived profile must set its own `name` (with its parent's it would share its out/ directory and lock pins)",
            sources.where_(l)
        );
    }

    // Lay the files over each other from the root of the chain down to the file given.
    let mut merged: Option<Node> = None;
    for doc in chain.into_iter().rev() {
        merged = Some(layers::merge(merged, doc, &sources)?);
    }
    let mut merged = merged.ok_or_else(|| anyhow::anyhow!("internal: empty extends chain"))?;
    layers::sections_off(&mut merged, &sources)?;
    if let Some(e) = merged.entry(&["hostname"]) {
        anyhow::bail!(
            "{}: hostname: the [hostname] section is gone; write `hostname = \"...\"` under [system] (a fixed name or a template like \"hc1-{{mac6}}\")",
            sources.where_(e.key_loc)
        );
    }
    let raw: RawProfile = node::from_node(&merged, &sources).map_err(anyhow::Error::msg)?;
    let v = Validator {
        sources: &sources,
        root: &merged,
    };
    let mut profile = v.profile(raw, chain_paths, overrides)?;
    profile.origins = layers::origins(&merged, &sources);
    Ok(profile)
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Lexically drop `.` components and fold `dir/..` (for readable messages; the file system
/// is not consulted, so symlinked directories keep their meaning only when there is no `..`).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

fn resolve_paths(node: &mut Node, keys: &[&str], dir: &Path) {
    let Some((first, rest)) = keys.split_first() else {
        if let Kind::Str(s) = &mut node.kind
            && !s.is_empty()
        {
            *s = normalize(&dir.join(&*s)).to_string_lossy().into_owned();
        }
        return;
    };
    match (*first, &mut node.kind) {
        ("[]", Kind::Array(items)) => {
            for item in items {
                // A list item `"!PATH"` removes an inherited path: resolve PATH the same way.
                match &mut item.kind {
                    Kind::Str(s) if s == "!*" => {}
                    Kind::Str(s) if rest.is_empty() && s.len() > 1 && s.starts_with('!') => {
                        let p = normalize(&dir.join(&s[1..]));
                        *s = format!("!{}", p.to_string_lossy());
                    }
                    _ => resolve_paths(item, rest, dir),
                }
            }
        }
        ("*", Kind::Table(t)) => {
            for e in t.values_mut() {
                resolve_paths(&mut e.value, rest, dir);
            }
        }
        (k, Kind::Table(t)) => {
            if let Some(e) = t.get_mut(k) {
                resolve_paths(&mut e.value, rest, dir);
            }
        }
        _ => {}
    }
}

/// A plain relative path (no `scheme://`) is relative to `dir`; anything else is kept.
fn resolve_url(u: &str, dir: &Path) -> String {
    if u.contains("://") || Path::new(u).is_absolute() {
        u.to_string()
    } else {
        normalize(&dir.join(u)).to_string_lossy().into_owned()
    }
}

/// True for 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Read and check a lock file.
pub fn read_lock(path: &Path) -> anyhow::Result<LockFile> {
    let mut sources = Sources::default();
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read lock file: {}",
            path.display(),
            secrets::io_reason(&e)
        )
    })?;
    let idx = sources.add(path, text);
    let doc = node::parse(&sources, idx)?;
    let lock: LockFile = node::from_node(&doc, &sources).map_err(anyhow::Error::msg)?;
    let v = Validator {
        sources: &sources,
        root: &doc,
    };
    for (name, set) in &lock.packages {
        for (i, p) in set.package.iter().enumerate() {
            if !is_sha256_hex(&p.sha256) || p.filename.contains('/') || p.filename.is_empty() {
                return Err(v.err(
                    &["packages", name],
                    format!("package[{i}] ({}): needs a plain filename and a 64-hex sha256; re-pin with `hc1img lock`", p.name),
                ));
            }
        }
    }
    for (url, pin) in &lock.pins {
        v.url(&["pins", url], url)?;
        if !is_sha256_hex(&pin.sha256) {
            return Err(v.err(
                &["pins", url, "sha256"],
                format!(
                    "expected 64 lowercase hex digits, found {:?}; re-pin with `hc1img lock`",
                    pin.sha256
                ),
            ));
        }
    }
    Ok(lock)
}

/// Write a lock file (sorted by URL, with a header comment).
pub fn write_lock(path: &Path, lock: &LockFile) -> anyhow::Result<()> {
    let body = toml::to_string(lock).context("serialising the lock file")?;
    let text = format!(
        "# Pins of the source tarballs and packages, written by `hc1img lock`: re-pin on purpose.\n\n{body}"
    );
    let dir = parent_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Fill the board's `boot_txt` placeholders (`{bootargs}`, `{set_macaddr}`, and the
/// profile's `{name}` and `{board}`); U-Boot's own `${name}` stay.
pub(crate) fn render_template(
    tpl: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    crate::template::render_with(tpl, value, BOOT_TXT_VARS)
}

/// Whether a board's `boot_txt` (already checked to render) uses the placeholder `{name}`.
fn uses_placeholder(boot_txt: &str, name: &str) -> bool {
    render_template(boot_txt, &|n| {
        Some(if n == name {
            "\u{1}".to_string()
        } else {
            String::new()
        })
    })
    .is_ok_and(|s| s.contains('\u{1}'))
}

/// The placeholders a board's `boot_txt` may use.
pub(crate) const BOOT_TXT_VARS: &[&str] = &["bootargs", "set_macaddr", "name", "board"];

/// Why a reference to secret `n` is invalid (`None` when `n` is declared).
fn undeclared(secrets: &BTreeMap<String, SecretSource>, n: &str) -> Option<String> {
    if secrets.contains_key(n) {
        return None;
    }
    let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
    let hint = node::did_you_mean(n, &names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_else(|| format!("; declare it in [secrets] ({n} = {{}})"));
    Some(format!("no secret `{n}` is declared{hint}"))
}

struct Validator<'a> {
    sources: &'a Sources,
    root: &'a Node,
}

type R = anyhow::Result<()>;

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

fn is_user_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_')
        && s.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
}

fn is_macaddr(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

impl Validator<'_> {
    fn err(&self, path: &[&str], msg: impl std::fmt::Display) -> anyhow::Error {
        let loc = self.root.loc_of(path);
        let p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        anyhow::anyhow!(
            "{}: {}: {msg}",
            self.sources.where_(loc),
            node::join_path(&p)
        )
    }

    fn url(&self, path: &[&str], u: &str) -> R {
        let ok = if let Some(rest) = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
        {
            let host = rest.split('/').next().unwrap_or("");
            !host.is_empty() && rest.len() > host.len() + 1
        } else if let Some(rest) = u.strip_prefix("file://") {
            rest.starts_with('/')
        } else {
            !u.is_empty() && !u.contains("://")
        };
        if !ok || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                path,
                format!("invalid URL {u:?}: expected http://HOST/PATH, https://HOST/PATH, file:///PATH or a file path"),
            ));
        }
        Ok(())
    }

    fn profile(
        &self,
        mut raw: RawProfile,
        chain: Vec<PathBuf>,
        ov: &Overrides,
    ) -> anyhow::Result<Profile> {
        if !is_name(&raw.name) {
            return Err(self.err(
                &["name"],
                format!(
                    "invalid name {:?}: use lowercase letters, digits and '-' (at most 63)",
                    raw.name
                ),
            ));
        }

        // Board.
        let board = self.board(&raw.board)?;

        // Secrets (declarations, then overrides).
        let mut secret_sources: BTreeMap<String, SecretSource> = BTreeMap::new();
        let mut secret_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (name, decl) in &raw.secrets {
            if !is_secret_name(name) {
                return Err(self.err(
                    &["secrets", name],
                    "secret names use letters, digits, '_' and '-'",
                ));
            }
            let src = self.secret_decl(name, decl)?;
            secret_sources.insert(name.clone(), src);
        }
        for (name, file) in &ov.secrets {
            if !secret_sources.contains_key(name) {
                let names: Vec<&str> = secret_sources.keys().map(String::as_str).collect();
                let hint = node::did_you_mean(name, &names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "--secret {name}={}: the profile declares no secret `{name}` in [secrets]{hint}",
                    file.display()
                );
            }
            // A secret that is not baked stays on the card: `--secret` does not bake it
            // (`hc1img build` warns).
            if secret_sources.get(name) != Some(&SecretSource::Card) {
                secret_sources.insert(name.clone(), SecretSource::File(file.clone()));
            }
        }
        for (name, src) in &secret_sources {
            match src {
                SecretSource::File(p) => {
                    let what = if ov.secrets.contains_key(name) {
                        format!("--secret {name}")
                    } else {
                        let l = self.root.loc_of(&["secrets", name, "file"]);
                        format!("{}: secrets.{name}.file", self.sources.where_(l))
                    };
                    secrets::check_file(&what, p)?;
                    secret_files.insert(name.clone(), p.clone());
                }
                SecretSource::Env(var) => {
                    if std::env::var_os(var).is_none() {
                        return Err(self.err(
                            &["secrets", name, "env"],
                            format!("environment variable {var} is not set; export it or pass --secret {name}=FILE"),
                        ));
                    }
                }
                SecretSource::Card => {}
            }
        }
        let declared = |path: &[&str], name: &Option<String>| -> R {
            match name.as_deref().and_then(|n| undeclared(&secret_sources, n)) {
                Some(msg) => Err(self.err(path, msg)),
                None => Ok(()),
            }
        };

        // Source and lock.
        let (source, lock_path, lock_exists, keyring) = self.source(&raw, ov)?;

        // rootfs.
        let rf = &raw.rootfs;
        if let Size::Bytes(b) = rf.size
            && (b < 16 << 20 || !b.is_multiple_of(4096))
        {
            return Err(self.err(
                &["rootfs", "size"],
                format!("{b} bytes: must be at least 16MiB and a multiple of 4096 (or \"auto\")"),
            ));
        }
        if rf.label.len() > 16 || rf.label.chars().any(|c| c.is_control()) {
            return Err(self.err(
                &["rootfs", "label"],
                format!("{:?}: at most 16 bytes, no control characters", rf.label),
            ));
        }
        if !(1024..=(64 << 20)).contains(&rf.bytes_per_inode) {
            return Err(self.err(
                &["rootfs", "bytes_per_inode"],
                format!("{}: must be between 1024 and 67108864", rf.bytes_per_inode),
            ));
        }

        // boot.
        let b = &raw.boot;
        if let Some(root) = &b.root {
            let ok = root == "partuuid"
                || (root.starts_with("/dev/") && root.len() > 5)
                || ["PARTUUID=", "UUID=", "LABEL=", "PARTLABEL="]
                    .iter()
                    .any(|p| root.len() > p.len() && root.starts_with(p));
            if !ok || !is_word(root) {
                return Err(self.err(
                    &["boot", "root"],
                    format!(
                        "{root:?}: expected \"partuuid\", a /dev/ path or PARTUUID=/UUID=/LABEL=…"
                    ),
                ));
            }
        }
        for (i, a) in b.extra_args.iter().enumerate() {
            if !is_word(a) {
                return Err(self.err(
                    &["boot", "extra_args"],
                    format!("[{i}] {a:?}: one kernel argument per element, without spaces, quotes or backslashes"),
                ));
            }
        }
        if let Some(cs) = &b.console {
            self.consoles(&["boot", "console"], cs)?;
        }
        if let Some(m) = &b.macaddr
            && !is_macaddr(m)
        {
            return Err(self.err(
                &["boot", "macaddr"],
                format!("{m:?}: expected a unicast MAC like \"02:1e:06:aa:bb:cc\""),
            ));
        }
        if b.macaddr.is_some() && !uses_placeholder(&board.boot_txt, "set_macaddr") {
            return Err(self.err(
                &["boot", "macaddr"],
                format!(
                    "board {} has no way to pass a MAC address (its boot_txt never uses \
                     {{set_macaddr}}; the HC1's RTL8153 keeps its own in its eFuse): remove macaddr",
                    board.name
                ),
            ));
        }

        // swarm.
        if let Some(sw) = &raw.swarm {
            use super::schema::SwarmRole;
            for (k, v) in &sw.labels {
                if let Err(e) = crate::rootfs::edits::swarm::check_label(k, v) {
                    return Err(self.err(&["swarm", "labels"], e));
                }
            }
            if let Some(a) = &sw.advertise_addr
                && !is_word(a)
            {
                return Err(self.err(
                    &["swarm", "advertise_addr"],
                    format!("{a:?}: expected an address or interface name"),
                ));
            }
            if sw.role != SwarmRole::Init {
                if sw.managers.is_empty() {
                    return Err(self.err(
                        &["swarm", "managers"],
                        "a joining node needs at least one manager address",
                    ));
                }
                if sw.token_secret.is_none() {
                    return Err(self.err(&["swarm"], "a joining node needs `token_secret` (the name of the secret holding the join token)"));
                }
            }
            declared(&["swarm", "token_secret"], &sw.token_secret)?;
        }

        // The node sections (the edits' own config types), checked before anything is fetched.
        let mut node = raw.take_sections();
        self.users(&node.users, &secret_sources)?;
        self.ssh(&node.ssh)?;
        self.mail(&node.mail, &secret_sources)?;
        self.io_scheduler(&node.io_scheduler)?;
        self.docker(&node.docker)?;
        self.cron(&node.cron)?;
        // [backup], [cleanup], [builds]: the edits' own checks, and their secrets declared.
        edits::backup::check(&node.backup).map_err(|e| self.err(&["backup"], e))?;
        declared(
            &["backup", "cifs_password_secret"],
            &node.backup.cifs_password_secret,
        )?;
        declared(&["backup", "ssh_key_secret"], &node.backup.ssh_key_secret)?;
        edits::cleanup::check(&node.cleanup).map_err(|e| self.err(&["cleanup"], e))?;
        edits::builds::check(&node.builds).map_err(|e| self.err(&["builds"], e))?;
        edits::builds::check_trust(&node.builds, &node.docker)
            .map_err(|e| self.err(&["builds", "registry"], e))?;
        declared(&["builds", "ssh_key_secret"], &node.builds.ssh_key_secret)?;
        self.fstab(&node.fstab)?;
        let vars = super::template_vars(&raw.name, &board, raw.swarm.as_ref());
        self.overlays(&mut node.overlays, &vars)?;
        let packages = self.packages(&raw, ov, lock_path.as_deref(), lock_exists)?;

        Ok(Profile {
            name: raw.name,
            board,
            source,
            rootfs: raw.rootfs,
            boot: raw.boot,
            secrets: secret_sources,
            swarm: raw.swarm,
            packages,
            files: InputFiles {
                profiles: chain,
                board: raw.board.clone(),
                lock: lock_path,
                lock_exists,
                keyring,
                overlays: node.overlays.dirs.clone(),
                secrets: secret_files,
            },
            node,
            origins: Vec::new(),
        })
    }

    /// Location of `key` in element `i` of the array of tables at `path` (the first of
    /// `paths` that exists, for keys with an alias), or of the nearest thing that exists.
    fn item_loc(&self, paths: &[&[&str]], i: usize, key: &str) -> Loc {
        let path = paths
            .iter()
            .copied()
            .find(|p| self.root.entry(p).is_some())
            .unwrap_or(paths[0]);
        let arr = self.root.entry(path).map(|e| &e.value);
        match arr.map(|n| &n.kind) {
            Some(Kind::Array(items)) => match items.get(i) {
                Some(item) => item.loc_of(&[key]),
                None => self.root.loc_of(path),
            },
            _ => self.root.loc_of(path),
        }
    }

    /// The first of `keys` present in the table at `table` (for fields with an alias), else
    /// the first.
    fn key_as_written<'k>(&self, table: &[&str], keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|k| {
                let mut p = table.to_vec();
                p.push(k);
                self.root.entry(&p).is_some()
            })
            .unwrap_or(keys[0])
    }

    /// An error at element `i` of an array of tables: `FILE:LINE: a.b[i].key: msg`.
    fn item_err(
        &self,
        paths: &[&[&str]],
        shown: &str,
        i: usize,
        key: &str,
        msg: impl std::fmt::Display,
    ) -> anyhow::Error {
        let l = self.item_loc(paths, i, key);
        anyhow::anyhow!("{}: {shown}[{i}].{key}: {msg}", self.sources.where_(l))
    }

    fn users(&self, u: &edits::users::Config, secrets: &BTreeMap<String, SecretSource>) -> R {
        let declared = |path: &[&str], name: &Option<String>| -> R {
            match name.as_deref().and_then(|n| undeclared(secrets, n)) {
                Some(msg) => Err(self.err(path, msg)),
                None => Ok(()),
            }
        };
        for (i, r) in u.remove.iter().enumerate() {
            if !is_user_name(r) || r == "root" {
                return Err(self.err(
                    &["users", "remove"],
                    format!("[{i}] {r:?}: not a removable user name"),
                ));
            }
        }
        declared(&["users", "root_password_secret"], &u.root_password_secret)?;
        for (i, g) in u.create_groups.iter().enumerate() {
            if !is_user_name(g) {
                return Err(self.err(
                    &["users", "create_groups"],
                    format!("[{i}] {g:?}: group names are [a-z_][a-z0-9_-]* (at most 32)"),
                ));
            }
        }
        let paths: &[&[&str]] = &[&["users", "add"]];
        let mut names = BTreeSet::new();
        let mut uids = BTreeSet::new();
        for (i, a) in u.add.iter().enumerate() {
            let here = |k: &str, msg: String| self.item_err(paths, "users.add", i, k, msg);
            if a.name.is_empty() {
                return Err(here("name", "missing required key `name`".to_string()));
            }
            if !is_user_name(&a.name) || a.name == "root" {
                return Err(here(
                    "name",
                    format!(
                        "{:?}: user names are [a-z_][a-z0-9_-]* (at most 32), not root",
                        a.name
                    ),
                ));
            }
            if !names.insert(a.name.clone()) {
                return Err(here("name", format!("user {:?} is added twice", a.name)));
            }
            if u.remove.contains(&a.name) {
                return Err(here(
                    "name",
                    format!("user {:?} is also in users.remove", a.name),
                ));
            }
            if a.uid == 0 || a.uid >= 60000 {
                return Err(here("uid", format!("{}: use 1..59999", a.uid)));
            }
            if !uids.insert(a.uid) {
                return Err(here("uid", format!("uid {} is used twice", a.uid)));
            }
            if let Some(g) = a.gid
                && (g == 0 || g >= 60000)
            {
                return Err(here("gid", format!("{g}: use 1..59999")));
            }
            for g in &a.groups {
                if !is_user_name(g) {
                    return Err(here("groups", format!("{g:?}: not a group name")));
                }
            }
            if a.comment.contains([':', '\n', '\r']) {
                return Err(here(
                    "comment",
                    "one line without ':' (it goes into /etc/passwd)".to_string(),
                ));
            }
            if !a.shell.starts_with('/') || !is_word(&a.shell) || a.shell.contains(':') {
                return Err(here(
                    "shell",
                    format!("{:?}: expected an absolute path", a.shell),
                ));
            }
            if let Some(h) = &a.home
                && (!h.starts_with('/') || !is_word(h) || h.contains(':') || h.contains("/.."))
            {
                return Err(here("home", format!("{h:?}: expected an absolute path")));
            }
            if let Some(msg) = a
                .password_secret
                .as_deref()
                .and_then(|n| undeclared(secrets, n))
            {
                return Err(here("password_secret", msg));
            }
            for k in &a.authorized_keys {
                let ok = k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-");
                if !ok || k.contains(['\n', '\r']) {
                    return Err(here(
                        "authorized_keys",
                        "each element is one public key line (\"ssh-ed25519 AAAA… comment\")"
                            .to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn ssh(&self, s: &edits::ssh::Config) -> R {
        const PRL: &[&str] = &["no", "yes", "prohibit-password", "forced-commands-only"];
        if !PRL.contains(&s.permit_root_login.as_str()) {
            let hint = node::did_you_mean(&s.permit_root_login, PRL)
                .map(|x| format!("; did you mean {x:?}?"))
                .unwrap_or_default();
            return Err(self.err(
                &["ssh", "permit_root_login"],
                format!(
                    "{:?}: expected \"no\", \"yes\", \"prohibit-password\" or \"forced-commands-only\"{hint}",
                    s.permit_root_login
                ),
            ));
        }
        for (i, l) in s.extra.iter().enumerate() {
            if l.trim().is_empty() || l.chars().any(char::is_control) {
                return Err(self.err(
                    &["ssh", "extra"],
                    format!("[{i}] {l:?}: one `Keyword value` line per element"),
                ));
            }
        }
        Ok(())
    }

    fn mail(&self, m: &edits::mail::Config, secrets: &BTreeMap<String, SecretSource>) -> R {
        let declared = |path: &[&str], name: &Option<String>| -> R {
            match name.as_deref().and_then(|n| undeclared(secrets, n)) {
                Some(msg) => Err(self.err(path, msg)),
                None => Ok(()),
            }
        };
        // A value of ssmtp.conf: one word, no comment sign, no ':'.
        let value = |v: &str| is_word(v) && !v.contains(['#', ':']);
        let pass = self.key_as_written(&["mail"], &["auth_pass_secret", "password_secret"]);
        if m.auth_pass_secret.is_some() && m.auth_user.is_none() {
            return Err(self.err(&["mail", pass], "needs `auth_user` (the relay account)"));
        }
        declared(&["mail", pass], &m.auth_pass_secret)?;
        if m.mailhub.is_none() {
            return Ok(());
        }
        if !m.root.contains('@') || !value(&m.root) {
            return Err(self.err(
                &["mail", "root"],
                format!(
                    "{:?}: expected the mail address that receives root's mail",
                    m.root
                ),
            ));
        }
        for (k, v) in [
            ("hostname", &m.hostname),
            ("auth_user", &m.auth_user),
            ("rewrite_domain", &m.rewrite_domain),
        ] {
            if let Some(v) = v
                && !value(v)
            {
                return Err(self.err(
                    &["mail", k],
                    format!("{v:?}: one word without spaces, '#' or ':'"),
                ));
            }
        }
        if m.use_tls && m.use_starttls {
            let tls = self.key_as_written(&["mail"], &["use_tls", "tls"]);
            return Err(self.err(
                &["mail", tls],
                "implicit TLS and STARTTLS exclude each other; set one of them to false",
            ));
        }
        let paths: &[&[&str]] = &[&["mail", "revaliases"]];
        for (i, r) in m.revaliases.iter().enumerate() {
            for (k, v) in [("local", &r.local), ("from", &r.from)] {
                if !value(v) {
                    return Err(self.item_err(
                        paths,
                        "mail.revaliases",
                        i,
                        k,
                        format!("{v:?}: one word without spaces, '#' or ':'"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn io_scheduler(&self, io: &edits::io_scheduler::Config) -> R {
        let glob = |d: &str| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"[]*?-_|".contains(&b))
        };
        if io.devices.is_empty() {
            return Err(self.err(
                &["io_scheduler", "devices"],
                "expected a non-empty list of kernel name globs like \"sd[a-z]*\"",
            ));
        }
        for (i, d) in io.devices.iter().enumerate() {
            if !glob(d) {
                return Err(self.err(
                    &["io_scheduler", "devices"],
                    format!("[{i}] {d:?}: expected a kernel name glob like \"sd[a-z]*\" (letters, digits, []*?-_|)"),
                ));
            }
        }
        Ok(())
    }

    fn docker(&self, d: &edits::docker::Config) -> R {
        if let Err(e) = edits::docker::daemon_json(d) {
            let msg = e.to_string();
            let msg = msg.strip_prefix("docker.daemon.").unwrap_or(&msg);
            // Point at the offending key: the message starts with its dotted path.
            let key = msg.split(": ").next().unwrap_or("");
            let mut path = vec!["docker", "daemon"];
            path.extend(key.split('.').map(|k| k.split('[').next().unwrap_or(k)));
            let l = self.root.loc_of(&path);
            return Err(anyhow::anyhow!(
                "{}: docker.daemon: {msg}",
                self.sources.where_(l)
            ));
        }
        Ok(())
    }

    fn cron(&self, c: &edits::cron::Config) -> R {
        let key = self.key_as_written(&["cron"], &["job", "jobs"]);
        let shown = format!("cron.{key}");
        let paths: &[&[&str]] = &[&["cron", "job"], &["cron", "jobs"]];
        let mut seen = BTreeSet::new();
        for (i, j) in c.jobs.iter().enumerate() {
            let here = |k: &str, msg: String| self.item_err(paths, &shown, i, k, msg);
            for (k, v) in [
                ("name", j.name.as_str()),
                ("schedule", j.schedule.as_deref().unwrap_or("")),
                ("command", j.command.as_str()),
            ] {
                if v.trim().is_empty() {
                    return Err(here(k, format!("missing required key `{k}`")));
                }
            }
            if edits::check_file_name("name", &j.name, false).is_err() {
                return Err(here(
                    "name",
                    format!(
                        "{:?}: cron.d file names use letters, digits, '_' and '-' only",
                        j.name
                    ),
                ));
            }
            if !seen.insert(j.name.clone()) {
                return Err(here("name", format!("job {:?} is defined twice", j.name)));
            }
            if let Some(u) = &j.user
                && !is_user_name(u)
            {
                return Err(here("user", format!("{u:?}: not a user name")));
            }
            if let Err(e) = edits::cron::check_command("command", &j.command) {
                return Err(here("command", format!("{e}")));
            }
        }
        let paths: &[&[&str]] = &[&["cron", "logrotate"]];
        let mut seen = BTreeSet::new();
        for (i, l) in c.logrotate.iter().enumerate() {
            let here = |k: &str, msg: String| self.item_err(paths, "cron.logrotate", i, k, msg);
            if edits::check_file_name("name", &l.name, true).is_err() {
                return Err(here(
                    "name",
                    format!(
                        "{:?}: a file name of letters, digits, '_', '-', '.'",
                        l.name
                    ),
                ));
            }
            if !seen.insert(l.name.clone()) {
                return Err(here("name", format!("{:?} is defined twice", l.name)));
            }
            if l.content.trim().is_empty() {
                return Err(here("content", "missing or empty".to_string()));
            }
        }
        Ok(())
    }

    fn fstab(&self, f: &edits::fstab::Config) -> R {
        for (k, v) in [
            ("root_device", &f.root_device),
            ("root_options", &f.root_options),
            ("boot_options", &f.boot_options),
        ] {
            if !is_word(v) || v.contains('#') {
                return Err(self.err(
                    &["fstab", k],
                    format!("{v:?}: one word without spaces or '#'"),
                ));
            }
        }
        Ok(())
    }

    /// Check the overlay directories exist and make them absolute (the loader already made
    /// them relative to the file that declared them); check the per-path entries.
    fn overlays(&self, o: &mut edits::overlays::Config, vars: &BTreeMap<String, String>) -> R {
        let dirs_key = self.key_as_written(&["overlays"], &["dirs", "names"]);
        for (i, d) in o.dirs.iter_mut().enumerate() {
            if !d.is_dir() {
                return Err(self.err(
                    &["overlays", dirs_key],
                    format!("[{i}] {} is not a directory", d.display()),
                ));
            }
            let abs = std::path::absolute(&*d).map_err(|e| {
                self.err(
                    &["overlays", dirs_key],
                    format!("[{i}] {}: {}", d.display(), secrets::io_reason(&e)),
                )
            })?;
            *d = normalize(&abs);
        }
        let paths: &[&[&str]] = &[&["overlays", "entry"]];
        let mut seen = BTreeSet::new();
        for (i, e) in o.entries.iter().enumerate() {
            let here = |k: &str, msg: String| self.item_err(paths, "overlays.entry", i, k, msg);
            if e.path.is_empty() {
                return Err(here("path", "missing required key `path`".to_string()));
            }
            let r = match edits::rel(&e.path) {
                Ok(r) if e.path.starts_with('/') && !r.is_empty() => r,
                _ => {
                    return Err(here(
                        "path",
                        format!(
                            "{:?}: expected an absolute path in the rootfs, without `..`",
                            e.path
                        ),
                    ));
                }
            };
            if !seen.insert(r.clone()) {
                return Err(here("path", format!("{:?} is listed twice", e.path)));
            }
            // It must match something an overlay copies; a template must be a regular file
            // whose placeholders are all known.
            let copies: Vec<PathBuf> = o
                .dirs
                .iter()
                .map(|d| d.join(&r))
                .filter(|p| std::fs::symlink_metadata(p).is_ok())
                .collect();
            if copies.is_empty() {
                return Err(here(
                    "path",
                    format!("{:?} matches no file in the overlay dirs", e.path),
                ));
            }
            for c in copies.iter().filter(|_| e.template) {
                let text = match std::fs::symlink_metadata(c) {
                    Ok(m) if m.is_file() => std::fs::read(c).map_err(|err| {
                        here(
                            "template",
                            format!("{}: {}", c.display(), secrets::io_reason(&err)),
                        )
                    })?,
                    _ => {
                        return Err(here(
                            "template",
                            format!("{} is not a regular file", c.display()),
                        ));
                    }
                };
                let text = String::from_utf8(text)
                    .map_err(|_| here("template", format!("{} is not UTF-8 text", c.display())))?;
                let names = crate::template::placeholders(&text)
                    .map_err(|err| here("template", format!("{}: {err}", c.display())))?;
                if let Some(n) = names.iter().find(|n| !vars.contains_key(n.as_str())) {
                    let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                    return Err(here(
                        "template",
                        format!(
                            "{}: unknown variable {{{n}}} (known: {})",
                            c.display(),
                            known.join(", ")
                        ),
                    ));
                }
            }
            if let Some(ow) = &e.owner {
                let part = |s: &str| s.parse::<u32>().is_ok() || is_user_name(s);
                let ok = match ow.split_once(':') {
                    Some((u, g)) => part(u) && part(g),
                    None => part(ow),
                };
                if !ok {
                    return Err(here(
                        "owner",
                        format!("{ow:?}: expected \"user\", \"user:group\" or numeric ids"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn consoles(&self, path: &[&str], cs: &[String]) -> R {
        if cs.is_empty() {
            return Err(self.err(path, "expected at least one console"));
        }
        for c in cs {
            if !is_word(c) {
                return Err(self.err(
                    path,
                    format!("{c:?}: a console is like \"ttySAC2,115200n8\""),
                ));
            }
        }
        Ok(())
    }

    fn secret_decl(&self, name: &str, d: &RawSecret) -> anyhow::Result<SecretSource> {
        if !d.bake {
            // Not baked: `file`/`env` only say where a private build would read it.
            if d.file.is_some() && d.env.is_some() {
                return Err(self.err(
                    &["secrets", name],
                    "give at most one of `file = \"PATH\"` or `env = \"VAR\"`",
                ));
            }
            return Ok(SecretSource::Card);
        }
        match (&d.file, &d.env) {
            (Some(f), None) => Ok(SecretSource::File(f.clone())),
            (None, Some(v)) => {
                let ok = v
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(self.err(
                        &["secrets", name, "env"],
                        format!("{v:?}: not an environment variable name"),
                    ));
                }
                Ok(SecretSource::Env(v.clone()))
            }
            _ => Err(self.err(
                &["secrets", name],
                "a baked secret (`bake = true`) needs exactly one of `file = \"PATH\"` or `env = \"VAR\"`",
            )),
        }
    }

    #[allow(clippy::type_complexity)]
    fn source(
        &self,
        raw: &RawProfile,
        ov: &Overrides,
    ) -> anyhow::Result<(Option<Source>, Option<PathBuf>, bool, Option<PathBuf>)> {
        if let Some(u) = &ov.source_url {
            let bad = u.is_empty() || u.chars().any(char::is_whitespace);
            if bad {
                anyhow::bail!("--source-url {u:?}: expected an http(s)/file URL or a path");
            }
        }
        if let Some(h) = &ov.source_sha256
            && !is_sha256_hex(h)
        {
            anyhow::bail!("--source-sha256 {h:?}: expected 64 lowercase hex digits");
        }
        let mut source = match &raw.source {
            Some(s) => {
                self.url(&["source", "url"], &s.url)?;
                for m in &s.mirrors {
                    self.url(&["source", "mirrors"], m)?;
                }
                if let Some(sig) = &s.signature {
                    // Without `keyring` the built-in Arch Linux ARM key must have made it.
                    self.url(&["source", "signature"], sig)?;
                }
                if let Some(k) = &s.keyring
                    && !k.is_file()
                {
                    return Err(self.err(
                        &["source", "keyring"],
                        format!("{} is not a readable file", k.display()),
                    ));
                }
                let dir_of = |path: &[&str]| {
                    let f = self.root.loc_of(path).file;
                    self.sources
                        .files
                        .get(f)
                        .map(|f| parent_dir(&f.path))
                        .unwrap_or_else(|| PathBuf::from("."))
                };
                let mut fetch = vec![resolve_url(&s.url, &dir_of(&["source", "url"]))];
                let mdir = dir_of(&["source", "mirrors"]);
                fetch.extend(s.mirrors.iter().map(|m| resolve_url(m, &mdir)));
                Some(Source {
                    url: s.url.clone(),
                    fetch_urls: fetch,
                    mirrors: s.mirrors.clone(),
                    signature: s.signature.clone(),
                    keyring: s.keyring.clone(),
                    sha256: None,
                    size: None,
                })
            }
            None => None,
        };
        if let Some(u) = &ov.source_url {
            source = Some(Source {
                url: u.clone(),
                fetch_urls: vec![u.clone()],
                mirrors: Vec::new(),
                signature: None,
                keyring: None,
                sha256: None,
                size: None,
            });
        }
        let Some(mut src) = source else {
            if ov.source_sha256.is_some() {
                anyhow::bail!(
                    "--source-sha256 given but the profile has no [source] and no --source-url"
                );
            }
            return Ok((None, None, false, None));
        };
        // The lock lives next to the file that wrote `source.url` (or the profile given).
        let decl_file = match self.root.entry(&["source", "url"]) {
            Some(e) => e.value.loc.file,
            None => 0,
        };
        let lock_path = self
            .sources
            .files
            .get(decl_file)
            .map(|f| parent_dir(&f.path).join(LOCK_FILE_NAME))
            .ok_or_else(|| anyhow::anyhow!("internal: no declaring file for [source]"))?;
        let lock_exists = lock_path.is_file();
        if lock_exists {
            let lock = read_lock(&lock_path)?;
            if let Some(pin) = lock.pins.get(&src.url) {
                src.sha256 = Some(pin.sha256.clone());
                src.size = pin.size;
            }
        }
        if let Some(h) = &ov.source_sha256 {
            if src.sha256.as_deref() != Some(h.as_str()) {
                src.size = None;
            }
            src.sha256 = Some(h.clone());
        }
        let keyring = src.keyring.clone();
        Ok((Some(src), Some(lock_path), lock_exists, keyring))
    }

    /// `[packages]`, checked, with this profile's pins from the lock file.
    fn packages(
        &self,
        raw: &RawProfile,
        ov: &Overrides,
        lock_path: Option<&Path>,
        lock_exists: bool,
    ) -> anyhow::Result<Option<crate::packages::Packages>> {
        let Some(cfg) = &raw.packages else {
            return Ok(None);
        };
        if let Err((key, msg)) = cfg.check() {
            return Err(self.err(&["packages", key], msg));
        }
        if ov.no_packages {
            return Ok(None);
        }
        if lock_path.is_none() {
            return Err(self.err(
                &["packages"],
                "needs a [source]: packages are resolved against the root tarball's installed ones",
            ));
        }
        let pins = match lock_path {
            Some(l) if lock_exists => read_lock(l)?.packages.remove(&raw.name),
            _ => None,
        };
        Ok(Some(crate::packages::Packages {
            config: cfg.clone(),
            pins,
        }))
    }

    fn board(&self, path: &Path) -> anyhow::Result<Board> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.err(
                &["board"],
                format!(
                    "board file {} cannot be read: {}",
                    path.display(),
                    secrets::io_reason(&e)
                ),
            )
        })?;
        let mut sources = Sources::default();
        let idx = sources.add(path, text);
        let doc = node::parse(&sources, idx)?;
        let board: Board = node::from_node(&doc, &sources).map_err(anyhow::Error::msg)?;
        let v = Validator {
            sources: &sources,
            root: &doc,
        };
        if !is_name(&board.name) {
            return Err(v.err(
                &["name"],
                format!("invalid board name {:?}: use [a-z0-9-]", board.name),
            ));
        }
        if board.arch.is_empty()
            || !board
                .arch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(v.err(
                &["arch"],
                format!("{:?}: expected an architecture like \"armv7h\"", board.arch),
            ));
        }
        v.consoles(&["consoles"], &board.consoles)?;
        if !is_word(&board.root_device) {
            return Err(v.err(&["root_device"], "expected a device like \"/dev/sda1\""));
        }
        render_template(&board.boot_txt, &|n| {
            if BOOT_TXT_VARS.contains(&n) {
                Some(String::new())
            } else {
                None
            }
        })
        .map_err(|e| {
            v.err(
                &["boot_txt"],
                format!("{e}; U-Boot's own variables are written ${{name}}"),
            )
        })?;
        if !uses_placeholder(&board.boot_txt, "bootargs") {
            return Err(v.err(&["boot_txt"], "the template never uses {bootargs}"));
        }
        let sd = &board.sd;
        if sd.partition_size.0 == 0 || !sd.partition_size.0.is_multiple_of(512) {
            return Err(v.err(
                &["sd", "partition_size"],
                "must be a positive multiple of 512 bytes",
            ));
        }
        if sd.first_sector < 2
            || sd
                .first_sector
                .checked_add(sd.partition_size.0 / 512)
                .is_none_or(|e| e > u64::from(u32::MAX))
        {
            return Err(v.err(
                &["sd", "first_sector"],
                "the partition must start after sector 1 and end within 2 TiB (MBR)",
            ));
        }
        if let Some(env) = &sd.env_area
            && (env.sector == 0
                || env.sectors == 0
                || env.sector.saturating_add(env.sectors) > sd.first_sector)
        {
            return Err(v.err(
                &["sd", "env_area"],
                format!(
                    "sectors {}..{} must be non-empty, after the MBR and before first_sector ({})",
                    env.sector,
                    env.sector.saturating_add(env.sectors),
                    sd.first_sector
                ),
            ));
        }
        let mut sectors = BTreeSet::new();
        let mut files = BTreeSet::new();
        for (i, bl) in sd.blobs.iter().enumerate() {
            let simple = !bl.file.is_empty()
                && bl.file != "."
                && bl.file != ".."
                && !bl.file.contains(['/', '\\', '\0']);
            if !simple {
                return Err(v.err(
                    &["sd", "blobs"],
                    format!("[{i}] file {:?}: expected a file name in /boot", bl.file),
                ));
            }
            if bl.sector == 0 || bl.sector >= sd.first_sector {
                return Err(v.err(&["sd", "blobs"], format!("[{i}] {} at sector {}: blobs go between the MBR (sector 0) and first_sector ({})", bl.file, bl.sector, sd.first_sector)));
            }
            if let Some(env) = &sd.env_area
                && (env.sector..env.sector + env.sectors).contains(&bl.sector)
            {
                return Err(v.err(
                    &["sd", "blobs"],
                    format!(
                        "[{i}] {} at sector {} starts inside env_area",
                        bl.file, bl.sector
                    ),
                ));
            }
            if !sectors.insert(bl.sector) || !files.insert(bl.file.clone()) {
                return Err(v.err(
                    &["sd", "blobs"],
                    format!(
                        "[{i}] {} at sector {}: file or sector used twice",
                        bl.file, bl.sector
                    ),
                ));
            }
        }
        let ordered: Vec<u64> = sd.blobs.iter().map(|b| b.sector).collect();
        if ordered.windows(2).any(|w| w[0] >= w[1]) {
            return Err(v.err(
                &["sd", "blobs"],
                "list the blobs in increasing sector order",
            ));
        }
        if let Some(f) = &sd.fusing_script
            && (f.is_empty() || f.contains(['/', '\\', '\0']))
        {
            return Err(v.err(
                &["sd", "fusing_script"],
                format!("{f:?}: expected a file name in /boot"),
            ));
        }
        Ok(board)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_keeps_uboot_variables() {
        let out = render_template("a ${x} {bootargs} {{ ${y}", &|n| {
            (n == "bootargs").then(|| "B".to_string())
        });
        assert_eq!(out.ok().as_deref(), Some("a ${x} B { ${y}"));
        assert!(render_template("{nope}", &|_| None).is_err());
    }

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
    }
}
