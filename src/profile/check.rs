//! The profile reader's checks: [`Validator`] reports an error at a key of the merged profile
//! files as `FILE:LINE: key.path: message`, and [`SectionChecks`] is the reader's side of the
//! sections' [`sections::Locator`] (locations, the declared secrets, the template variables),
//! so each section's own check locates its errors the same way.

use std::collections::BTreeMap;

use super::node::{self, Kind, Node, Sources};
use super::secrets::SecretSource;
use crate::sections;

pub(super) struct Validator<'a> {
    pub sources: &'a Sources,
    pub root: &'a Node,
}

pub(super) type R = anyhow::Result<()>;

impl Validator<'_> {
    pub(super) fn err(&self, path: &[&str], msg: impl std::fmt::Display) -> anyhow::Error {
        let loc = self.root.loc_of(path);
        let p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        anyhow::anyhow!(
            "{}: {}: {msg}",
            self.sources.where_(loc),
            node::join_path(&p)
        )
    }

    pub(super) fn url(&self, path: &[&str], u: &str) -> R {
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

    /// The first of `keys` present in the table at `table` (for fields with an alias), else
    /// the first.
    pub(super) fn key_as_written<'k>(&self, table: &[&str], keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|k| {
                let mut p = table.to_vec();
                p.push(k);
                self.root.entry(&p).is_some()
            })
            .unwrap_or(keys[0])
    }
}

/// Why a reference to secret `n` is invalid (`None` when `n` is declared).
pub(super) fn undeclared(secrets: &BTreeMap<String, SecretSource>, n: &str) -> Option<String> {
    if secrets.contains_key(n) {
        return None;
    }
    let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
    let hint = crate::values::did_you_mean(n, &names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_else(|| format!("; declare it in [secrets] ({n} = {{}})"));
    Some(format!("no secret `{n}` is declared{hint}"))
}

/// The profile reader's side of the sections' checks: locations from the merged files, the
/// declared secrets, the template variables.
pub(super) struct SectionChecks<'a> {
    pub v: &'a Validator<'a>,
    pub secrets: &'a BTreeMap<String, SecretSource>,
    pub vars: &'a BTreeMap<String, String>,
}

impl sections::Locator for SectionChecks<'_> {
    fn err(&self, path: &[&str], msg: &dyn std::fmt::Display) -> anyhow::Error {
        self.v.err(path, msg)
    }

    fn err_shown(&self, path: &[&str], shown: &str, msg: &dyn std::fmt::Display) -> anyhow::Error {
        let l = self.v.root.loc_of(path);
        anyhow::anyhow!("{}: {shown}: {msg}", self.v.sources.where_(l))
    }

    fn item_err(
        &self,
        paths: &[&[&str]],
        i: usize,
        key: &str,
        msg: &dyn std::fmt::Display,
    ) -> anyhow::Error {
        let root = self.v.root;
        let path = paths
            .iter()
            .copied()
            .find(|p| root.entry(p).is_some())
            .unwrap_or(paths[0]);
        let l = match root.entry(path).map(|e| &e.value.kind) {
            Some(Kind::Array(items)) => match items.get(i) {
                Some(item) => item.loc_of(&[key]),
                None => root.loc_of(path),
            },
            _ => root.loc_of(path),
        };
        let shown = path.join(".");
        anyhow::anyhow!("{}: {shown}[{i}].{key}: {msg}", self.v.sources.where_(l))
    }

    fn key_as_written<'k>(&self, table: &[&str], keys: &[&'k str]) -> &'k str {
        self.v.key_as_written(table, keys)
    }

    fn undeclared_secret(&self, name: &str) -> Option<String> {
        undeclared(self.secrets, name)
    }

    fn template_vars(&self) -> &BTreeMap<String, String> {
        self.vars
    }
}
