//! How the files of an `extends` chain are laid over each other, on the spanned TOML tree
//! ([`super::node`]) before anything is deserialised, so every rule holds for every section
//! and every value keeps the file and line that wrote it.
//!
//! The rules follow mkosi's for its list settings (`mkosi/config.py`: an item `!X` removes
//! `X`, `!*` removes everything), applied to TOML (docs/profiles.md, "Loading rules"):
//!
//! - tables merge key by key, recursively; a scalar in the derived file replaces the
//!   inherited one;
//! - a list appends to the inherited list (an item already there is not added twice);
//!   a string item `"!X"` removes `X` from the inherited list, and `"!*"`, as the first item,
//!   clears it;
//! - an array of tables listed in [`IDENTITY`] (`[[users.add]]`, `[[cron.job]]`, …) merges
//!   by its identity key: a child item with the same `name` is laid over the inherited one,
//!   `remove = true` drops it, a new name is appended;
//! - keys that are aliases of each other ([`ALIASES`]) meet: the derived file's spelling
//!   replaces the inherited one;
//! - after the whole chain is merged, a section whose `Config` has no `enable` of its own
//!   ([`SWITCHED_HERE`]) is removed when it says `enable = false`, which leaves its default,
//!   the section being off ([`sections_off`]).
//!
//! The first file of the chain goes through the same rules over nothing inherited, so a
//! `"!X"` or a `remove = true` that removes nothing is an error wherever it is written.

use std::collections::BTreeMap;

use super::node::{self, Entry, Kind, Loc, Node, Sources};

/// Arrays of tables that merge by a key, and that key (paths of table keys, as written in the
/// profile).
pub(crate) const IDENTITY: &[(&[&str], &str)] = &[
    (&["users", "add"], "name"),
    (&["cron", "job"], "name"),
    (&["cron", "jobs"], "name"),
    (&["cron", "logrotate"], "name"),
    (&["mail", "revaliases"], "local"),
    (&["overlays", "entry"], "path"),
];

/// Keys that name the same field (serde aliases of the sections' `Config` types), by table.
const ALIASES: &[(&str, &[&str])] = &[
    ("cron", &["job", "jobs"]),
    ("overlays", &["dirs", "names"]),
    ("mail", &["use_tls", "tls"]),
    ("mail", &["use_starttls", "starttls"]),
    ("mail", &["auth_pass_secret", "password_secret"]),
];

/// Sections whose `Config` has no `enable` field and whose default writes nothing: here
/// `enable = false` removes the section (with everything inherited), `enable = true` is
/// dropped. The other node sections have an `enable` of their own (their `Config` decides).
pub(crate) const SWITCHED_HERE: &[&str] = &[
    "source",
    "packages",
    "mail",
    "mirrorlist",
    "backup",
    "overlays",
    "swarm",
];

/// Sections every image needs: `enable = false` there is an error saying why.
const ALWAYS_ON: &[(&str, &str)] = &[
    ("rootfs", "every image has a root filesystem"),
    ("boot", "every image boots with a kernel command line"),
];

/// Lay `derived` over `base` (`None` for the first file of a chain).
pub(crate) fn merge(base: Option<Node>, derived: Node, sources: &Sources) -> anyhow::Result<Node> {
    Layer { sources }.value(base, derived, &mut Vec::new())
}

struct Layer<'a> {
    sources: &'a Sources,
}

impl Layer<'_> {
    fn err(&self, loc: Loc, path: &[String], msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: {}: {msg}",
            self.sources.where_(loc),
            node::join_path(path)
        )
    }

    fn value(
        &self,
        base: Option<Node>,
        derived: Node,
        path: &mut Vec<String>,
    ) -> anyhow::Result<Node> {
        match derived.kind {
            Kind::Table(dt) => {
                let mut bt = match base.map(|b| b.kind) {
                    Some(Kind::Table(t)) => t,
                    _ => BTreeMap::new(),
                };
                for (k, de) in dt {
                    let inherited = take_inherited(&mut bt, path, &k);
                    path.push(k.clone());
                    let value = self.value(inherited.map(|e| e.value), de.value, path)?;
                    path.pop();
                    bt.insert(
                        k,
                        Entry {
                            key_loc: de.key_loc,
                            value,
                        },
                    );
                }
                Ok(Node {
                    loc: derived.loc,
                    kind: Kind::Table(bt),
                })
            }
            Kind::Array(items) => {
                let inherited = match base.map(|b| b.kind) {
                    Some(Kind::Array(v)) => v,
                    _ => Vec::new(),
                };
                let items = self.list(inherited, items, path)?;
                Ok(Node {
                    loc: derived.loc,
                    kind: Kind::Array(items),
                })
            }
            kind => Ok(Node {
                loc: derived.loc,
                kind,
            }),
        }
    }

    /// A derived list over the inherited one.
    fn list(
        &self,
        inherited: Vec<Node>,
        items: Vec<Node>,
        path: &mut Vec<String>,
    ) -> anyhow::Result<Vec<Node>> {
        let id_key = identity_key(path);
        let mut kept = inherited;
        let mut added: Vec<Node> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            path.push(format!("[{i}]"));
            match &item.kind {
                Kind::Str(s) if s == "!*" => {
                    if i != 0 {
                        return Err(self.err(
                            item.loc,
                            path,
                            "\"!*\" clears the inherited list: write it as the first item",
                        ));
                    }
                    kept.clear();
                }
                Kind::Str(s) if s.starts_with('!') => {
                    let x = &s[1..];
                    let before = kept.len();
                    kept.retain(|n| ident(n, id_key) != Some(x));
                    if kept.len() == before {
                        let names: Vec<&str> =
                            kept.iter().filter_map(|n| ident(n, id_key)).collect();
                        let hint = crate::values::did_you_mean(x, &names)
                            .map(|c| format!("; did you mean \"!{c}\"?"))
                            .unwrap_or_default();
                        return Err(self.err(
                            item.loc,
                            path,
                            format!("{s:?} removes nothing: the inherited list has no {x:?}{hint}"),
                        ));
                    }
                }
                Kind::Table(_) if id_key.is_some() => {
                    let key = id_key.unwrap_or("name");
                    self.named_item(&mut kept, &mut added, item, key, path)?;
                }
                _ => {
                    let item = self.value(None, item, path)?;
                    let dup = matches!(item.kind, Kind::Str(_) | Kind::Int(_) | Kind::Bool(_))
                        && kept.iter().chain(&added).any(|n| same_scalar(n, &item));
                    if !dup {
                        added.push(item);
                    }
                }
            }
            path.pop();
        }
        kept.extend(added);
        Ok(kept)
    }

    /// One item of an array of tables that merges by `key`.
    fn named_item(
        &self,
        kept: &mut Vec<Node>,
        added: &mut Vec<Node>,
        mut item: Node,
        key: &str,
        path: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let loc = item.loc;
        let mut remove = false;
        if let Some(t) = item.table_mut()
            && let Some(e) = t.remove("remove")
        {
            match e.value.kind {
                Kind::Bool(b) => remove = b,
                _ => {
                    path.push("remove".into());
                    return Err(self.err(
                        e.value.loc,
                        path,
                        format!(
                            "expected a boolean (`remove = true` drops the inherited item), found {}",
                            e.value.type_name()
                        ),
                    ));
                }
            }
            if remove && t.len() != 1 {
                path.push("remove".into());
                return Err(self.err(
                    e.key_loc,
                    path,
                    format!("`remove = true` drops the inherited item: give only `{key}` with it"),
                ));
            }
        }
        let name = ident(&item, Some(key)).map(str::to_string);
        let pos = name
            .as_deref()
            .and_then(|n| kept.iter().position(|k| ident(k, Some(key)) == Some(n)));
        match (remove, pos) {
            (true, Some(p)) => {
                kept.remove(p);
            }
            (true, None) => {
                let what = match &name {
                    Some(n) => format!("no inherited item has {key} = {n:?}"),
                    None => format!("it needs `{key}`, the item to drop"),
                };
                return Err(self.err(
                    loc,
                    path,
                    format!("`remove = true` removes nothing: {what}"),
                ));
            }
            (false, Some(p)) => {
                let base = kept.remove(p);
                let merged = self.value(Some(base), item, path)?;
                kept.insert(p, merged);
            }
            (false, None) => added.push(self.value(None, item, path)?),
        }
        Ok(())
    }
}

/// The identity key of the array of tables at `path` (index segments ignored).
fn identity_key(path: &[String]) -> Option<&'static str> {
    let keys: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .filter(|s| !s.starts_with('['))
        .collect();
    IDENTITY
        .iter()
        .find(|(p, _)| *p == keys.as_slice())
        .map(|(_, k)| *k)
}

/// What `"!X"` compares with: a string item itself, or a table's identity key.
fn ident<'n>(n: &'n Node, key: Option<&str>) -> Option<&'n str> {
    match (&n.kind, key) {
        (Kind::Str(s), _) => Some(s),
        (Kind::Table(t), Some(k)) => match t.get(k).map(|e| &e.value.kind) {
            Some(Kind::Str(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn same_scalar(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (Kind::Str(x), Kind::Str(y)) => x == y,
        (Kind::Int(x), Kind::Int(y)) => x == y,
        (Kind::Bool(x), Kind::Bool(y)) => x == y,
        _ => false,
    }
}

/// The inherited entry for derived key `k` of the table at `path`: under `k`, or under another
/// spelling of the same field (which the derived spelling then replaces).
fn take_inherited(bt: &mut BTreeMap<String, Entry>, path: &[String], k: &str) -> Option<Entry> {
    if let Some(e) = bt.remove(k) {
        return Some(e);
    }
    let table = match path {
        [t] => t.as_str(),
        _ => return None,
    };
    let group = ALIASES
        .iter()
        .find(|(t, names)| *t == table && names.contains(&k))?;
    group.1.iter().find_map(|other| bt.remove(*other))
}

/// Apply `enable` of the sections in [`SWITCHED_HERE`] to the merged tree, and refuse it where
/// a section cannot be off.
pub(crate) fn sections_off(root: &mut Node, sources: &Sources) -> anyhow::Result<()> {
    let Some(top) = root.table_mut() else {
        return Ok(());
    };
    for (section, why) in ALWAYS_ON {
        if let Some(e) = top.get(*section).and_then(|s| s.value.entry(&["enable"])) {
            anyhow::bail!(
                "{}: {section}.enable: [{section}] cannot be turned off: {why}",
                sources.where_(e.key_loc)
            );
        }
    }
    for section in SWITCHED_HERE {
        let Some(t) = top.get_mut(*section).and_then(|s| s.value.table_mut()) else {
            continue;
        };
        let Some(e) = t.remove("enable") else {
            continue;
        };
        match e.value.kind {
            Kind::Bool(true) => {}
            Kind::Bool(false) => {
                top.remove(*section);
            }
            _ => anyhow::bail!(
                "{}: {section}.enable: expected a boolean, found {}",
                sources.where_(e.value.loc),
                e.value.type_name()
            ),
        }
    }
    Ok(())
}

/// Every value of the merged tree with the `FILE:LINE` that wrote it, as dotted key paths in
/// the tree's order (for `hc1img plan`).
pub(crate) fn origins(root: &Node, sources: &Sources) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(root, &mut Vec::new(), sources, &mut out);
    out
}

fn walk(n: &Node, path: &mut Vec<String>, sources: &Sources, out: &mut Vec<(String, String)>) {
    match &n.kind {
        Kind::Table(t) => {
            for (k, e) in t {
                path.push(k.clone());
                walk(&e.value, path, sources, out);
                path.pop();
            }
        }
        Kind::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                walk(item, path, sources, out);
                path.pop();
            }
        }
        _ => out.push((node::join_path(path), sources.where_(n.loc))),
    }
}
