//! The image's own alpm hooks, matched against the package transaction as pacman matches them
//! (`alpm-hooks(5)`; libalpm `hook.c`): which ones the build does natively, which ones the first
//! boot runs, and what each is fed on stdin.
//!
//! - **Where:** `usr/share/libalpm/hooks/*.hook`, then `etc/pacman.d/hooks/*.hook` (pacman's
//!   `HookDir` order): a hook of the same file name in a later directory replaces the earlier
//!   one; a hook that is a symlink to `/dev/null` is disabled. Hooks run in file-name order.
//! - **Format:** INI-like; one or more `[Trigger]` sections (`Operation = Install|Upgrade|
//!   Remove`, repeatable; `Type = Path|File|Package`; `Target = GLOB`, repeatable, a leading
//!   `!` negates) and one `[Action]` (`When = PreTransaction|PostTransaction`, `Exec`,
//!   `Description`, `Depends`, `AbortOnFail`, `NeedsTargets`). Unknown keys are errors, as in
//!   libalpm.
//! - **Matching** (`_alpm_hook_trigger_match_file`, `_alpm_hook_trigger_match_pkg`): a Path
//!   target is matched (`fnmatch(3)` without flags: `*` crosses `/`) against the `%FILES%` names
//!   (no leading `/`, directories with a trailing `/`) of the new packages (install) and of the
//!   versions they replace and the packages removed (remove); a name in both is an upgrade.
//!   Of a target list, the last pattern that matches decides (`_alpm_fnmatch_patterns`): a
//!   negated one means no match. A Package target is matched against package names: an added
//!   package that was installed is an upgrade, else an install; a removed one a removal. A hook
//!   runs when any of its triggers matches; with `NeedsTargets`, the matched files or package
//!   names, sorted and unique, one per line, are its stdin.
//! - **What the build does with a matched hook** ([`Disposition`]): what hc1img does itself at
//!   build time is not run again — module indexes and the initramfs (kmod's and mkinitcpio's
//!   hooks, `src/kernel.rs`), `sysusers.d` (`packages::firstboot`). A `PreTransaction` hook
//!   cannot run before a transaction that is already made: it is reported. Every other
//!   `PostTransaction` hook is deferred to the first boot, run by the deferred unit in this
//!   order with its targets on stdin.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

/// When a hook runs (`When =`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Pre,
    Post,
}

/// One `[Trigger]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trigger {
    pub install: bool,
    pub upgrade: bool,
    pub remove: bool,
    /// `Type = Package` (else Path; `File` is its old name).
    pub package: bool,
    pub targets: Vec<String>,
}

/// One hook file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The file name (`60-depmod.hook`).
    pub name: String,
    pub triggers: Vec<Trigger>,
    pub when: When,
    pub exec: String,
    pub description: Option<String>,
    pub needs_targets: bool,
}

/// Parse a hook file; `name` is its file name (for errors and order).
pub fn parse(name: &str, text: &str) -> Result<Hook> {
    let mut triggers: Vec<Trigger> = Vec::new();
    let mut section = "";
    let (mut when, mut exec, mut description, mut needs_targets) = (None, None, None, false);
    let mut action_seen = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("{name} line {}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            match s {
                "Trigger" => triggers.push(Trigger::default()),
                "Action" if !action_seen => action_seen = true,
                "Action" => bail!("{}: a second [Action] section", at()),
                other => bail!("{}: unknown section [{other}]", at()),
            }
            section = if s == "Trigger" { "Trigger" } else { "Action" };
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        match (section, key) {
            ("Trigger", k) => {
                let Some(t) = triggers.last_mut() else {
                    bail!("{}: {k} outside a section", at());
                };
                match k {
                    "Operation" => match value {
                        "Install" => t.install = true,
                        "Upgrade" => t.upgrade = true,
                        "Remove" => t.remove = true,
                        v => bail!(
                            "{}: Operation = {v:?}: expected Install, Upgrade or Remove",
                            at()
                        ),
                    },
                    "Type" => match value {
                        "Package" => t.package = true,
                        "Path" | "File" => t.package = false,
                        v => bail!("{}: Type = {v:?}: expected Path or Package", at()),
                    },
                    "Target" => t.targets.push(value.to_string()),
                    k => bail!("{}: unknown [Trigger] key {k:?}", at()),
                }
            }
            ("Action", "When") => {
                when = Some(match value {
                    "PreTransaction" => When::Pre,
                    "PostTransaction" => When::Post,
                    v => bail!(
                        "{}: When = {v:?}: expected PreTransaction or PostTransaction",
                        at()
                    ),
                })
            }
            ("Action", "Exec") => exec = Some(value.to_string()),
            ("Action", "Description") => description = Some(value.to_string()),
            ("Action", "NeedsTargets") => needs_targets = true,
            ("Action", "AbortOnFail" | "Depends") => {}
            ("Action", k) => bail!("{}: unknown [Action] key {k:?}", at()),
            (_, k) => bail!("{}: {k} outside a section", at()),
        }
    }
    if triggers.is_empty() {
        bail!("{name}: no [Trigger] section");
    }
    for t in &triggers {
        if !(t.install || t.upgrade || t.remove) || t.targets.is_empty() {
            bail!("{name}: a [Trigger] needs an Operation and a Target");
        }
    }
    let Some(exec) = exec.filter(|e| !e.is_empty()) else {
        bail!("{name}: no Exec in [Action]");
    };
    let Some(when) = when else {
        bail!("{name}: no When in [Action]");
    };
    Ok(Hook {
        name: name.to_string(),
        triggers,
        when,
        exec,
        description,
        needs_targets,
    })
}

/// `fnmatch(3)` with no flags: `*` and `?` match any character (`/` too), `[...]` a set
/// (`!` or `^` negates, `a-z` ranges), `\` escapes.
pub fn fnmatch(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_set(pattern, p, s[i]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
            Some(&c) => (c == s[i]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(np) => {
                p = np;
                i += 1;
            }
            None => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A bracket expression at `pattern[p]` against `c`: the position after it when `c` is in the
/// set; a `[` without its `]` is a literal `[`.
fn match_set(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = matches!(pattern.get(j), Some(b'!' | b'^'));
    if negate {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &x = pattern.get(j)?;
        if x == b']' && !first {
            break;
        }
        first = false;
        if pattern.get(j + 1) == Some(&b'-') && pattern.get(j + 2).is_some_and(|&e| e != b']') {
            hit |= (x..=pattern[j + 2]).contains(&c);
            j += 3;
        } else {
            hit |= x == c;
            j += 1;
        }
    }
    (hit != negate).then_some(j + 1)
}

/// `_alpm_fnmatch_patterns`: the last pattern that matches decides; `!` negates.
pub fn matches(patterns: &[String], s: &str) -> bool {
    for pat in patterns.iter().rev() {
        let (neg, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat.strip_prefix('\\').unwrap_or(pat)),
        };
        if fnmatch(pat.as_bytes(), s.as_bytes()) {
            return !neg;
        }
    }
    false
}

/// What the transaction did, as the hooks see it.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Packages added (installed or upgraded): name, whether it was installed before, its
    /// `%FILES%`.
    pub added: Vec<(String, bool, Vec<String>)>,
    /// `%FILES%` of the versions the added packages replace and of the removed packages.
    pub old_files: Vec<String>,
    /// Packages removed (replaced by another name).
    pub removed: Vec<String>,
}

/// Whether `hook` is triggered by `c`, and its targets (sorted, unique) when it needs them.
pub fn triggered(hook: &Hook, c: &Changes) -> Option<Vec<String>> {
    let mut hit = false;
    let mut targets = BTreeSet::new();
    for t in &hook.triggers {
        let mut found: Vec<String> = Vec::new();
        if t.package {
            for (name, was, _) in &c.added {
                if matches(&t.targets, name) && ((*was && t.upgrade) || (!*was && t.install)) {
                    found.push(name.clone());
                }
            }
            if t.remove {
                found.extend(c.removed.iter().filter(|n| matches(&t.targets, n)).cloned());
            }
        } else {
            let install: BTreeSet<&str> = c
                .added
                .iter()
                .flat_map(|(_, _, f)| f)
                .filter(|f| matches(&t.targets, f))
                .map(String::as_str)
                .collect();
            let remove: BTreeSet<&str> = c
                .old_files
                .iter()
                .filter(|f| matches(&t.targets, f))
                .map(String::as_str)
                .collect();
            for f in &install {
                let up = remove.contains(f);
                if (up && t.upgrade) || (!up && t.install) {
                    found.push(f.to_string());
                }
            }
            if t.remove {
                found.extend(
                    remove
                        .iter()
                        .filter(|f| !install.contains(*f))
                        .map(|f| f.to_string()),
                );
            }
        }
        if !found.is_empty() {
            hit = true;
            targets.extend(found);
        }
    }
    hit.then(|| {
        if hook.needs_targets {
            targets.into_iter().collect()
        } else {
            Vec::new()
        }
    })
}

/// What the build does with a triggered hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done at build time by hc1img (what does it).
    Native(&'static str),
    /// Run at the first boot, with these targets on stdin.
    Deferred(Vec<String>),
    /// A `PreTransaction` hook: pacman would have run it before the transaction.
    PreTransaction,
}

/// Hooks whose work hc1img does at build time, by the start of their `Exec`.
const NATIVE: &[(&str, &str)] = &[
    (
        "/usr/share/libalpm/scripts/depmod",
        "module indexes (src/kernel.rs)",
    ),
    ("/usr/bin/depmod", "module indexes (src/kernel.rs)"),
    (
        "/usr/share/libalpm/scripts/mkinitcpio",
        "the card's initramfs (src/kernel.rs)",
    ),
    (
        "/usr/bin/mkinitcpio",
        "the card's initramfs (src/kernel.rs)",
    ),
    (
        "/usr/share/libalpm/scripts/systemd-hook sysusers",
        "sysusers.d (packages::firstboot)",
    ),
    (
        "/usr/bin/systemd-sysusers",
        "sysusers.d (packages::firstboot)",
    ),
];

/// Every hook of `files` (file name, text or `None` for a hook disabled by a `/dev/null`
/// link, in `HookDir` order) that `changes` trigger, in pacman's order, with what the build
/// does with it.
pub fn plan(
    files: &[(String, Option<String>)],
    changes: &Changes,
) -> Result<Vec<(Hook, Disposition)>> {
    let mut by_name: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for (name, text) in files {
        by_name.insert(name, text.as_deref());
    }
    let mut out = Vec::new();
    for (name, text) in by_name {
        let Some(text) = text else { continue };
        let hook = parse(name, text)?;
        let Some(targets) = triggered(&hook, changes) else {
            continue;
        };
        let d = if let Some((_, what)) = NATIVE
            .iter()
            .find(|(e, _)| hook.exec == *e || hook.exec.starts_with(&format!("{e} ")))
        {
            Disposition::Native(what)
        } else if hook.when == When::Pre {
            Disposition::PreTransaction
        } else {
            Disposition::Deferred(targets)
        };
        out.push((hook, d));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_is_fnmatch_without_flags() {
        for (p, s, want) in [
            (
                "usr/lib/modules/*/vmlinuz",
                "usr/lib/modules/6.6.1-1/vmlinuz",
                true,
            ),
            (
                "usr/lib/modules/*/vmlinuz",
                "usr/lib/modules/a/b/vmlinuz",
                true,
            ),
            ("usr/lib/modules/*/", "usr/lib/modules/6.6/", true),
            ("*.conf", "etc/x.conf", true),
            ("usr/?in/*", "usr/bin/x", true),
            ("usr/[bs]in/x", "usr/sin/x", true),
            ("usr/[!b]in/x", "usr/bin/x", false),
            ("usr/[a-c]in/x", "usr/bin/x", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("abc", "abcd", false),
            ("[", "[", false),
        ] {
            assert_eq!(fnmatch(p.as_bytes(), s.as_bytes()), want, "{p} {s}");
        }
        let pats = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(
            &pats(&["usr/share/*", "!usr/share/doc/*"]),
            "usr/share/x"
        ));
        assert!(!matches(
            &pats(&["usr/share/*", "!usr/share/doc/*"]),
            "usr/share/doc/x"
        ));
        assert!(matches(
            &pats(&["!usr/share/doc/*", "usr/share/*"]),
            "usr/share/doc/x"
        ));
    }

    const HWDB: &str = "[Trigger]\nType = Path\nOperation = Install\nOperation = Upgrade\n\
        Operation = Remove\nTarget = usr/lib/udev/hwdb.d/*\n\n[Action]\n\
        Description = Updating udev hardware database...\nWhen = PostTransaction\n\
        Exec = /usr/bin/systemd-hwdb --usr update\n";

    #[test]
    fn triggers_see_installs_upgrades_and_removals_as_pacman_does() {
        let hook = parse("30-systemd-hwdb.hook", HWDB).unwrap();
        let mut needs = hook.clone();
        needs.needs_targets = true;
        let mut c = Changes {
            added: vec![(
                "systemd".into(),
                true,
                vec![
                    "usr/lib/udev/hwdb.d/".into(),
                    "usr/lib/udev/hwdb.d/20-a.hwdb".into(),
                ],
            )],
            old_files: vec![
                "usr/lib/udev/hwdb.d/".into(),
                "usr/lib/udev/hwdb.d/20-a.hwdb".into(),
                "usr/lib/udev/hwdb.d/10-gone.hwdb".into(),
            ],
            removed: vec![],
        };
        assert_eq!(
            triggered(&needs, &c).unwrap(),
            [
                // `*` matches the empty name too: the directory is a target (an upgrade).
                "usr/lib/udev/hwdb.d/",
                "usr/lib/udev/hwdb.d/10-gone.hwdb",
                "usr/lib/udev/hwdb.d/20-a.hwdb"
            ]
        );
        assert_eq!(triggered(&hook, &c).unwrap(), Vec::<String>::new());
        // Only an upgrade trigger: the removed file does not count.
        let up = parse(
            "x.hook",
            &HWDB
                .replace("Operation = Install\n", "")
                .replace("Operation = Remove\n", ""),
        )
        .unwrap();
        let mut up_t = up.clone();
        up_t.needs_targets = true;
        assert_eq!(
            triggered(&up_t, &c).unwrap(),
            ["usr/lib/udev/hwdb.d/", "usr/lib/udev/hwdb.d/20-a.hwdb"]
        );
        c.added[0].2.clear();
        c.old_files.clear();
        assert!(triggered(&up, &c).is_none());
        // Package triggers: installed before is an upgrade.
        let pkg = parse(
            "p.hook",
            "[Trigger]\nType = Package\nOperation = Install\nTarget = sys*\n[Action]\n\
             When = PostTransaction\nExec = /bin/true\nNeedsTargets\n",
        )
        .unwrap();
        assert!(triggered(&pkg, &c).is_none());
        c.added[0].1 = false;
        assert_eq!(triggered(&pkg, &c).unwrap(), ["systemd"]);
    }

    #[test]
    fn native_deferred_and_pre_transaction_hooks() {
        let depmod = "[Trigger]\nType = Path\nOperation = Install\nTarget = usr/lib/modules/*/\n\
            [Action]\nWhen = PostTransaction\nExec = /usr/share/libalpm/scripts/depmod\nNeedsTargets\n";
        let pre = "[Trigger]\nType = Path\nOperation = Install\nTarget = usr/lib/modules/*/\n\
            [Action]\nWhen = PreTransaction\nExec = /usr/bin/true\n";
        let c = Changes {
            added: vec![(
                "linux".into(),
                false,
                vec![
                    "usr/lib/modules/6.6/".into(),
                    "usr/lib/udev/hwdb.d/x".into(),
                ],
            )],
            ..Changes::default()
        };
        let files = vec![
            ("60-depmod.hook".to_string(), Some(depmod.to_string())),
            ("30-systemd-hwdb.hook".to_string(), Some(HWDB.to_string())),
            ("10-pre.hook".to_string(), Some(pre.to_string())),
            // Disabled in /etc/pacman.d/hooks by a /dev/null link.
            ("10-pre.hook".to_string(), None),
            (
                "99-untouched.hook".to_string(),
                Some(HWDB.replace("hwdb.d", "none.d")),
            ),
        ];
        let p = plan(&files, &c).unwrap();
        let got: Vec<(&str, &Disposition)> = p.iter().map(|(h, d)| (h.name.as_str(), d)).collect();
        assert_eq!(
            got,
            [
                ("30-systemd-hwdb.hook", &Disposition::Deferred(vec![])),
                (
                    "60-depmod.hook",
                    &Disposition::Native("module indexes (src/kernel.rs)")
                ),
            ]
        );
    }

    #[test]
    fn bad_hooks_are_one_line_errors_naming_the_file() {
        for (text, want) in [
            (
                "[Action]\nWhen = PostTransaction\nExec = x\n",
                "no [Trigger]",
            ),
            ("[Trigger]\nOperation = Frob\n", "Operation = \"Frob\""),
            (
                "[Trigger]\nOperation = Install\nTarget = x\n[Action]\nWhen = Later\nExec = x\n",
                "When = \"Later\"",
            ),
            (
                "[Trigger]\nOperation = Install\nTarget = x\n[Action]\nWhen = PostTransaction\n",
                "no Exec",
            ),
            (
                "[Trigger]\nOperation = Install\nTarget = x\nColour = red\n",
                "unknown [Trigger] key",
            ),
            ("Exec = x\n", "outside a section"),
        ] {
            let e = parse("bad.hook", text).unwrap_err().to_string();
            assert!(e.starts_with("bad.hook") && e.contains(want), "{e}");
        }
    }
}
