//! Loading: the `extends` chain, path resolution, the board and lock files, overrides, and the
//! checks every value passes before anything is fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::node::{self, Kind, Loc, Node, Sources};
use super::schema::{Board, LockFile, RawProfile, RawSecret};
use super::secrets::{self, SecretSource};
use super::size::Size;
use super::{InputFiles, Overrides, Profile, Source};

/// Name of the lock file kept next to the profile file that declares `[source]`.
pub const LOCK_FILE_NAME: &str = "hc1img.lock";

/// Longest `extends` chain accepted.
const MAX_CHAIN: usize = 32;

/// Keys holding paths relative to the file that declares them (`*` = every table key,
/// `[]` = every array element).
const PATH_KEYS: &[&[&str]] = &[
    &["board"],
    &["source", "keyring"],
    &["secrets", "*", "file"],
    &["overlays", "dirs", "[]"],
];

/// Load, merge and validate the profile at `path`. See the module docs of [`super`].
pub fn load(path: &Path, overrides: &Overrides) -> anyhow::Result<Profile> {
    let mut sources = Sources::default();
    let mut chain: Vec<Node> = Vec::new();
    let mut chain_paths: Vec<PathBuf> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut cur = path.to_path_buf();
    let mut via: Option<Loc> = None;
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

    // Merge from the root of the chain down to the file given.
    let mut merged: Option<Node> = None;
    for doc in chain.into_iter().rev() {
        merged = Some(match merged {
            None => doc,
            Some(base) => node::merge(base, doc),
        });
    }
    let merged = merged.ok_or_else(|| anyhow::anyhow!("internal: empty extends chain"))?;
    let raw: RawProfile = node::from_node(&merged, &sources).map_err(anyhow::Error::msg)?;
    let v = Validator {
        sources: &sources,
        root: &merged,
    };
    v.profile(raw, chain_paths, overrides)
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
                resolve_paths(item, rest, dir);
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
        "# Pins of the source tarballs, written by `hc1img lock`: re-pin on purpose.\n\n{body}"
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

/// Fill `{name}` placeholders (not `${name}`, which is U-Boot's); unknown names are errors.
pub(crate) fn render_template(
    tpl: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(tpl.len() + 256);
    let mut rest = tpl;
    while let Some(pos) = rest.find('{') {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let is_uboot = before.ends_with('$');
        let name_len = after[1..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len() - 1);
        let closes = after[1 + name_len..].starts_with('}');
        if !is_uboot && name_len > 0 && closes {
            let name = &after[1..1 + name_len];
            match value(name) {
                Some(v) => out.push_str(&v),
                None => anyhow::bail!("unknown placeholder `{{{name}}}`"),
            }
            rest = &after[name_len + 2..];
        } else {
            out.push('{');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
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

fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
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
        raw: RawProfile,
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
            secret_sources.insert(name.clone(), SecretSource::File(file.clone()));
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
            }
        }
        let declared = |path: &[&str], name: &Option<String>| -> R {
            if let Some(n) = name
                && !secret_sources.contains_key(n)
            {
                let names: Vec<&str> = secret_sources.keys().map(String::as_str).collect();
                let hint = node::did_you_mean(n, &names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| {
                        format!("; declare it in [secrets] ({n} = {{ file = \"...\" }})")
                    });
                return Err(self.err(path, format!("no secret `{n}` is declared{hint}")));
            }
            Ok(())
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

        // users.
        let u = &raw.users;
        for (i, r) in u.remove.iter().enumerate() {
            if !is_user_name(r) || r == "root" {
                return Err(self.err(
                    &["users", "remove"],
                    format!("[{i}] {r:?}: not a removable user name"),
                ));
            }
        }
        declared(&["users", "root_password_secret"], &u.root_password_secret)?;
        let mut names = BTreeSet::new();
        let mut uids = BTreeSet::new();
        for (i, a) in u.add.iter().enumerate() {
            let p = |k: &str| format!("users.add[{i}].{k}");
            let here = |k: &str, msg: String| {
                let l = self.add_loc(i, k);
                anyhow::anyhow!("{}: {}: {msg}", self.sources.where_(l), p(k))
            };
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
            if a.uid == 0 || a.uid >= 60000 {
                return Err(here("uid", format!("{}: use 1..59999", a.uid)));
            }
            if !uids.insert(a.uid) {
                return Err(here("uid", format!("uid {} is used twice", a.uid)));
            }
            for g in &a.groups {
                if !is_user_name(g) {
                    return Err(here("groups", format!("{g:?}: not a group name")));
                }
            }
            if !a.shell.starts_with('/') || !is_word(&a.shell) {
                return Err(here(
                    "shell",
                    format!("{:?}: expected an absolute path", a.shell),
                ));
            }
            if let Some(h) = &a.home
                && (!h.starts_with('/') || !is_word(h))
            {
                return Err(here("home", format!("{h:?}: expected an absolute path")));
            }
            if let Some(s) = &a.password_secret
                && !secret_sources.contains_key(s)
            {
                return Err(here(
                    "password_secret",
                    format!("no secret `{s}` is declared in [secrets]"),
                ));
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

        // system.
        let s = &raw.system;
        let tz_ok = !s.timezone.is_empty()
            && !s.timezone.starts_with('/')
            && !s.timezone.split('/').any(|c| c == ".." || c.is_empty())
            && s.timezone
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"/_+-".contains(&c));
        if !tz_ok {
            return Err(self.err(
                &["system", "timezone"],
                format!(
                    "{:?}: expected a zoneinfo name like \"Europe/Paris\" or \"UTC\"",
                    s.timezone
                ),
            ));
        }
        if !is_word(&s.locale) || s.locale.contains('/') {
            return Err(self.err(
                &["system", "locale"],
                format!("{:?}: expected a locale like \"en_US.UTF-8\"", s.locale),
            ));
        }
        if !is_word(&s.keymap) || s.keymap.contains('/') {
            return Err(self.err(
                &["system", "keymap"],
                format!("{:?}: expected a keymap like \"us\"", s.keymap),
            ));
        }

        // journald.
        if let Some(j) = &raw.journald {
            for (k, v) in [
                ("runtime_max_use", &j.runtime_max_use),
                ("system_max_use", &j.system_max_use),
            ] {
                if let Some(v) = v {
                    let digits = v.trim_end_matches(['K', 'M', 'G', 'T', 'P', 'E']);
                    let ok = !digits.is_empty()
                        && digits.len() + 1 >= v.len()
                        && digits.bytes().all(|c| c.is_ascii_digit());
                    if !ok {
                        return Err(self.err(
                            &["journald", k],
                            format!("{v:?}: expected journald's size syntax, like \"50M\""),
                        ));
                    }
                }
            }
        }

        // swarm.
        if let Some(sw) = &raw.swarm {
            use super::schema::SwarmRole;
            for m in &sw.managers {
                if !is_host_port(m) {
                    return Err(self.err(
                        &["swarm", "managers"],
                        format!("{m:?}: expected HOST or HOST:PORT"),
                    ));
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

        // hostname.
        if let Some(h) = &raw.hostname {
            let sample = render_template(&h.name, &|n| match n {
                "mac6" => Some("a1b2c3".to_string()),
                "mac" => Some("001e06a1b2c3".to_string()),
                _ => None,
            })
            .map_err(|e| {
                self.err(
                    &["hostname", "name"],
                    format!("{e} (known: {{mac6}}, {{mac}})"),
                )
            })?;
            if !is_name(&sample) || sample.ends_with('-') {
                return Err(self.err(&["hostname", "name"], format!("{:?}: a hostname is [a-z0-9-], at most 63, not starting or ending with '-'", h.name)));
            }
        }

        // io_scheduler.
        if let Some(io) = &raw.io_scheduler {
            const KNOWN: &[&str] = &[
                "mq-deadline",
                "bfq",
                "kyber",
                "none",
                "deadline",
                "noop",
                "cfq",
            ];
            if !KNOWN.contains(&io.scheduler.as_str()) {
                let hint = node::did_you_mean(&io.scheduler, KNOWN)
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                return Err(self.err(
                    &["io_scheduler", "scheduler"],
                    format!(
                        "{:?}: expected one of {}{hint}",
                        io.scheduler,
                        KNOWN.join(", ")
                    ),
                ));
            }
            if io.devices.is_empty() || io.devices.iter().any(|d| !is_word(d)) {
                return Err(self.err(
                    &["io_scheduler", "devices"],
                    "expected a non-empty list of udev KERNEL globs like \"sd[a-z]\"",
                ));
            }
        }

        // mail.
        if let Some(m) = &raw.mail {
            if !is_host_port(&m.mailhub) {
                return Err(self.err(
                    &["mail", "mailhub"],
                    format!("{:?}: expected HOST:PORT", m.mailhub),
                ));
            }
            if !is_word(&m.root) {
                return Err(self.err(
                    &["mail", "root"],
                    format!("{:?}: expected a mail address", m.root),
                ));
            }
            if m.auth_user.is_some() != m.password_secret.is_some() {
                return Err(self.err(&["mail"], "`auth_user` and `password_secret` go together"));
            }
            declared(&["mail", "password_secret"], &m.password_secret)?;
        }

        // cron.
        if let Some(c) = &raw.cron {
            let mut seen = BTreeSet::new();
            for (i, j) in c.jobs.iter().enumerate() {
                let loc = |k: &str| self.job_loc(i, k);
                let here = |k: &str, msg: String| {
                    anyhow::anyhow!("{}: cron.jobs[{i}].{k}: {msg}", self.sources.where_(loc(k)))
                };
                let name_ok = !j.name.is_empty()
                    && j.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !name_ok {
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
                let fields = j.schedule.split_whitespace().count();
                let keyword = [
                    "@reboot",
                    "@yearly",
                    "@annually",
                    "@monthly",
                    "@weekly",
                    "@daily",
                    "@midnight",
                    "@hourly",
                ]
                .contains(&j.schedule.trim());
                if !(keyword || (fields == 5 && !j.schedule.starts_with('@')))
                    || j.schedule.contains('\n')
                {
                    return Err(here(
                        "schedule",
                        format!(
                            "{:?}: expected five cron fields or @daily/@hourly/…",
                            j.schedule
                        ),
                    ));
                }
                if !is_user_name(&j.user) && j.user != "root" {
                    return Err(here("user", format!("{:?}: not a user name", j.user)));
                }
                if j.command.trim().is_empty() || j.command.contains(['\n', '\r', '%']) {
                    return Err(here(
                        "command",
                        "one line, not empty, no '%' (cron turns it into a newline)".to_string(),
                    ));
                }
            }
        }

        // mirrorlist.
        if let Some(ml) = &raw.mirrorlist {
            if ml.servers.is_empty() {
                return Err(self.err(&["mirrorlist", "servers"], "expected at least one server"));
            }
            for sv in &ml.servers {
                let ok = (sv.starts_with("http://") || sv.starts_with("https://")) && is_word(sv);
                if !ok {
                    return Err(self.err(&["mirrorlist", "servers"], format!("{sv:?}: expected an http(s) URL like \"http://mirror.archlinuxarm.org/$arch/$repo\"")));
                }
            }
        }

        // overlays.
        for d in &raw.overlays.dirs {
            if !d.is_dir() {
                return Err(self.err(
                    &["overlays", "dirs"],
                    format!("{} is not a directory", d.display()),
                ));
            }
        }

        Ok(Profile {
            name: raw.name,
            board,
            source,
            rootfs: raw.rootfs,
            boot: raw.boot,
            secrets: secret_sources,
            users: raw.users,
            system: raw.system,
            journald: raw.journald,
            docker: raw.docker,
            swarm: raw.swarm,
            hostname: raw.hostname,
            io_scheduler: raw.io_scheduler,
            mail: raw.mail,
            cron: raw.cron,
            mirrorlist: raw.mirrorlist,
            overlays: raw.overlays.dirs.clone(),
            files: InputFiles {
                profiles: chain,
                board: raw.board.clone(),
                lock: lock_path,
                lock_exists,
                keyring,
                overlays: raw.overlays.dirs,
                secrets: secret_files,
            },
        })
    }

    fn add_loc(&self, i: usize, key: &str) -> Loc {
        self.array_item_loc(&["users", "add"], i, key)
    }

    fn job_loc(&self, i: usize, key: &str) -> Loc {
        self.array_item_loc(&["cron", "jobs"], i, key)
    }

    fn array_item_loc(&self, path: &[&str], i: usize, key: &str) -> Loc {
        let arr = self.root.entry(path).map(|e| &e.value);
        match arr.map(|n| &n.kind) {
            Some(Kind::Array(items)) => match items.get(i) {
                Some(item) => item.loc_of(&[key]),
                None => self.root.loc_of(path),
            },
            _ => self.root.loc_of(path),
        }
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
                "give exactly one of `file = \"PATH\"` or `env = \"VAR\"`",
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
                    self.url(&["source", "signature"], sig)?;
                    if s.keyring.is_none() {
                        return Err(self.err(&["source"], "`signature` needs `keyring` (the public key file that must have made it)"));
                    }
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
        let mut has_bootargs = false;
        render_template(&board.boot_txt, &|n| {
            if n == "bootargs" || n == "set_macaddr" {
                Some(String::new())
            } else {
                None
            }
        })
        .map_err(|e| {
            v.err(
                &["boot_txt"],
                format!(
                    "{e} (known: {{bootargs}}, {{set_macaddr}}; U-Boot variables are ${{name}})"
                ),
            )
        })?;
        render_template(&board.boot_txt, &|n| {
            Some(if n == "bootargs" {
                "\u{1}".to_string()
            } else {
                String::new()
            })
        })
        .map(|s| has_bootargs = s.contains('\u{1}'))?;
        if !has_bootargs {
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
        assert_eq!(out.ok().as_deref(), Some("a ${x} B {{ ${y}"));
        assert!(render_template("{nope}", &|_| None).is_err());
    }

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
    }
}
