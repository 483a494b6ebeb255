//! Loading: the `extends` chain, path resolution, the board and lock files, overrides, and the
//! checks every value passes before anything is fetched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::check::{SectionChecks, Validator};
use super::layers;
use super::node::{self, Kind, Loc, Node, Sources};
use super::schema::{RawProfile, RawSecret};
use super::secrets::{self, SecretSource};
use super::{InputFiles, Overrides, Profile};
use crate::sections::{self, Sections};

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
    &["docker", "preload", "[]"],
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
    let whole = merged.clone();
    let sections_part = take_sections(&mut merged, &sources)?;
    let raw: RawProfile = node::from_node(&merged, &sources).map_err(anyhow::Error::msg)?;
    let node: Sections = node::from_node(&sections_part, &sources).map_err(anyhow::Error::msg)?;
    let merged = whole;
    let v = Validator {
        sources: &sources,
        root: &merged,
    };
    let mut profile = v.profile(raw, node, chain_paths, overrides)?;
    profile.origins = layers::origins(&merged, &sources);
    Ok(profile)
}

pub(super) fn parent_dir(p: &Path) -> PathBuf {
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
pub(super) fn resolve_url(u: &str, dir: &Path) -> String {
    if u.contains("://") || Path::new(u).is_absolute() {
        u.to_string()
    } else {
        normalize(&dir.join(u)).to_string_lossy().into_owned()
    }
}

/// The top-level keys of a profile that are not sections ([`RawProfile`]'s fields).
const IMAGE_KEYS: &[&str] = &[
    "name", "board", "source", "rootfs", "boot", "secrets", "packages",
];

/// Move the sections' tables (the registry's names) out of the merged profile into a table of
/// their own, for [`Sections`]; what stays is [`RawProfile`]'s. A top-level key that is
/// neither is an error naming the closest known key.
fn take_sections(merged: &mut Node, sources: &Sources) -> anyhow::Result<Node> {
    let loc = merged.loc;
    let Some(top) = merged.table_mut() else {
        anyhow::bail!("{}: a profile is a TOML table", sources.where_(loc));
    };
    let known: Vec<&str> = IMAGE_KEYS
        .iter()
        .chain(sections::APPLY_ORDER)
        .copied()
        .collect();
    if let Some((key, e)) = top.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        let hint = crate::values::did_you_mean(key, &known)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        anyhow::bail!(
            "{}: unknown key `{key}` at the top level{hint}",
            sources.where_(e.key_loc)
        );
    }
    let mut part = BTreeMap::new();
    for name in sections::APPLY_ORDER {
        if let Some(e) = top.remove(*name) {
            part.insert(name.to_string(), e);
        }
    }
    Ok(Node {
        loc,
        kind: Kind::Table(part),
    })
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Validator<'_> {
    fn profile(
        &self,
        raw: RawProfile,
        mut node: Sections,
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
                let hint = crate::values::did_you_mean(name, &names)
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
        // Source and lock.
        let (source, lock_path, lock_exists, keyring) = self.source(&raw, ov)?;

        self.image(&raw, &board)?;

        // The sections (their own checks, through the registry), before anything is fetched.
        let dirs_key = self.key_as_written(&["overlays"], &["dirs", "names"]);
        for (i, d) in node.overlays.dirs.iter_mut().enumerate() {
            let abs = std::path::absolute(&*d).map_err(|e| {
                self.err(
                    &["overlays", dirs_key],
                    format!("[{i}] {}: {}", d.display(), secrets::io_reason(&e)),
                )
            })?;
            *d = normalize(&abs);
        }
        let vars = super::template_vars(&raw.name, &board, node.swarm.as_ref());
        let at = SectionChecks {
            v: self,
            secrets: &secret_sources,
            vars: &vars,
        };
        sections::check_all(&node, &at)?;
        let packages = self.packages(&raw, ov, lock_path.as_deref(), lock_exists)?;

        Ok(Profile {
            name: raw.name,
            board,
            source,
            rootfs: raw.rootfs,
            boot: raw.boot,
            secrets: secret_sources,
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
}
