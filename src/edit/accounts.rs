//! The shadow-suite account files of an image (`passwd(5)`, `group(5)`, and the `shadow(5)` /
//! `gshadow(5)` files in the same `:`-separated format): parsing, formatting and lookups.

use anyhow::{Context, Result};

use super::read_text_optional;
use crate::tree::Tree;

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
