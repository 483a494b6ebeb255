//! What pacman does after installing packages on the target, done at build time where it is
//! declarative and deferred to the node's first boot where it is not.
//!
//! At build time ([`apply_sysusers`]): the `sysusers.d(5)` files the packages installed
//! (`/usr/lib/sysusers.d/*.conf`) are applied to `/etc/passwd`, `/etc/shadow`, `/etc/group`
//! and `/etc/gshadow` the way `systemd-sysusers` does: `g NAME ID` and `u NAME ID "GECOS" HOME
//! SHELL` create what is missing (ids `-` are allocated downwards from 999, a user's group is
//! created with the user's id when it is free, home `/`, shell `/usr/bin/nologin`, password
//! `!*`), `m USER GROUP` adds memberships; existing accounts are never changed. So docker's
//! `docker` group exists in the image and the edits (`[users]`) can put users in it.
//!
//! At first boot ([`write_deferred`]): one unit, `hc1-pacman-deferred.service`, enabled in
//! `sysinit.target`, runs once while the marker `/var/lib/hc1img/pacman-deferred.pending`
//! (written by the build) exists, before `sysinit.target` ends and so before `docker.service`
//! and every normal unit. It runs what pacman's hooks would have: `ldconfig`,
//! `systemd-sysusers`, `systemd-tmpfiles --create`, then the `post_install VERSION` function of each installed package whose
//! scriptlet is on [`REVIEWED_SCRIPTLETS`]. It removes the marker only when every step
//! succeeded (a failed step leaves the unit failed and retries at the next boot).
//! `tmpfiles.d` is left to it and to `systemd-tmpfiles-setup.service`, which runs at every boot
//! anyway; `systemctl daemon-reload` is moot on a system that has not booted yet. What kmod's
//! and mkinitcpio's hooks do (module indexes, the initramfs for the new kernel) is done at
//! build time by `src/kernel.rs`, so the first boot's udev coldplug finds every module.
//!
//! Scriptlets not on the list are never run; the build reports them. A scriptlet can do
//! anything as root: the list holds only packages whose `post_install` has been read and found
//! to touch nothing but the package's own files. `uboot-odroid-xu3` must never be on it: its
//! `post_install` `dd`s bootloader blobs onto the disk holding the root filesystem.

use anyhow::{Context, Result, bail};

use crate::edit;
use crate::edit::EditContext;
use crate::edit::accounts::{format_colon_file, parse_colon_file};
use crate::tree::{FileData, NodeKind, Tree};

/// Where packages put their `sysusers.d` files (relative to the root).
pub const SYSUSERS_DIR: &str = "usr/lib/sysusers.d/";

/// Packages whose `.INSTALL` `post_install` the deferred unit runs. Reviewed by reading the
/// scriptlet; empty until one is needed. Never add `uboot-odroid-xu3` (see the module docs).
pub const REVIEWED_SCRIPTLETS: &[&str] = &[];

/// Packages whose scriptlets must never run, whatever list is passed.
pub const NEVER_RUN: &[&str] = &["uboot-odroid-xu3"];

/// The unit's name, and where its files go.
pub const UNIT: &str = "hc1-pacman-deferred.service";
pub const SCRIPT_PATH: &str = "usr/lib/hc1img/pacman-deferred";
pub const MARKER: &str = "var/lib/hc1img/pacman-deferred.pending";

/// The unit file.
pub fn unit_text() -> String {
    format!(
        "# Written by hc1img: finishes, at the first boot, the package installs the image build\n\
         # made without running ARM code (pacman's hooks and reviewed post_install scriptlets).\n\
         [Unit]\n\
         Description=Finish the packages hc1img installed at build time\n\
         Documentation=file:///{SCRIPT_PATH}\n\
         DefaultDependencies=no\n\
         ConditionPathExists=/{MARKER}\n\
         RequiresMountsFor=/var/lib /usr\n\
         After=local-fs.target systemd-sysusers.service systemd-tmpfiles-setup.service\n\
         Before=sysinit.target docker.service shutdown.target\n\
         Conflicts=shutdown.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=/{SCRIPT_PATH}\n\
         \n\
         [Install]\n\
         WantedBy=sysinit.target\n"
    )
}

/// One installed package, as the deferred script needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    /// The version it upgraded: pacman calls `post_upgrade NEW OLD` then, else
    /// `post_install NEW`.
    pub upgrades: Option<String>,
    pub has_scriptlet: bool,
}

/// An alpm hook the first boot runs ([`super::hooks`]): its file name, `Exec`, and the
/// targets fed on stdin when it has `NeedsTargets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredHook {
    pub name: String,
    pub exec: String,
    pub targets: Option<Vec<String>>,
}

/// The end of a hook's targets in the script (a here-document's delimiter: no `%FILES%` name
/// is this line).
const TARGETS_END: &str = "HC1IMG_HOOK_TARGETS_END";

/// The deferred script. `allow` is the reviewed list ([`REVIEWED_SCRIPTLETS`] in a build).
/// Returns the script and the packages whose scriptlet it does not run.
pub fn script_text(
    installed: &[Installed],
    allow: &[&str],
    hooks: &[DeferredHook],
) -> (String, Vec<String>) {
    let mut s = String::from(
        "#!/bin/sh\n\
         # Written by hc1img: what pacman would have run after installing the image's packages.\n\
         # Runs once (hc1-pacman-deferred.service) while the marker file exists.\n\
         failed=0\n\
         step() { \"$@\" || { echo \"hc1-pacman-deferred: '$*' failed\" >&2; failed=1; }; }\n\
         step ldconfig\n\
         step systemd-sysusers\n\
         step systemd-tmpfiles --create\n",
    );
    let mut skipped = Vec::new();
    for p in installed.iter().filter(|p| p.has_scriptlet) {
        let ok = allow.contains(&p.name.as_str()) && !NEVER_RUN.contains(&p.name.as_str());
        if !ok {
            skipped.push(format!("{}-{}", p.name, p.version));
            continue;
        }
        let db = format!("/var/lib/pacman/local/{}-{}/install", p.name, p.version);
        // libalpm `add.c`: `post_upgrade NEW OLD` for an upgrade, `post_install NEW` else.
        let (func, args) = match &p.upgrades {
            Some(old) => (
                "post_upgrade",
                format!("{} {}", shell_quote(&p.version), shell_quote(old)),
            ),
            None => ("post_install", shell_quote(&p.version)),
        };
        s.push_str(&format!(
            "step sh -c '. \"$1\"; shift; if command -v {func} >/dev/null; then {func} \"$@\"; fi' {func} {} {args}\n",
            shell_quote(&db),
        ));
    }
    // The PostTransaction hooks pacman would have run, in its order, after the scriptlets.
    for h in hooks {
        s.push_str(&format!(
            "echo {} >&2\n",
            shell_quote(&format!("hc1-pacman-deferred: running hook {}", h.name))
        ));
        match &h.targets {
            Some(t) => {
                s.push_str(&format!(
                    "step sh -c {} <<'{TARGETS_END}'\n",
                    shell_quote(&h.exec)
                ));
                for line in t {
                    s.push_str(line);
                    s.push('\n');
                }
                s.push_str(TARGETS_END);
                s.push('\n');
            }
            None => s.push_str(&format!("step sh -c {} </dev/null\n", shell_quote(&h.exec))),
        }
    }
    s.push_str(&format!(
        "if [ \"$failed\" = 0 ]; then rm -f /{MARKER}; fi\nexit \"$failed\"\n"
    ));
    (s, skipped)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Write the unit, its script and the marker, and enable the unit. Returns the packages
/// whose scriptlets are not run.
pub fn write_deferred(
    tree: &mut Tree,
    ctx: &EditContext,
    installed: &[Installed],
    allow: &[&str],
    hooks: &[DeferredHook],
) -> Result<Vec<String>> {
    let (script, skipped) = script_text(installed, allow, hooks);
    edit::write_file(tree, ctx, SCRIPT_PATH, script, 0o755, 0, 0)?;
    edit::units::install_unit(
        tree,
        ctx,
        edit::units::ETC_UNITS,
        UNIT,
        unit_text(),
        Some("sysinit.target"),
    )?;
    let listing: String = installed
        .iter()
        .map(|p| format!("{}-{}\n", p.name, p.version))
        .collect();
    edit::write_file(tree, ctx, MARKER, listing, 0o644, 0, 0)?;
    Ok(skipped)
}

/// Apply the `sysusers.d` files at `paths` (in memory in the tree) to the account files.
/// Returns notes (what was created).
pub fn apply_sysusers(tree: &mut Tree, ctx: &EditContext, paths: &[String]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if paths.is_empty() {
        return Ok(notes);
    }
    let files = ["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"];
    let mut db = Vec::new();
    for f in files {
        db.push(parse_colon_file(&edit::read_text(tree, f)?));
    }
    let days = (ctx.timestamp.max(0) / 86_400).to_string();
    for path in paths {
        let Some(id) = tree.lookup(path.as_bytes()) else {
            continue;
        };
        let NodeKind::File(FileData::Bytes(b)) = &tree.node(id).kind else {
            continue;
        };
        let text = String::from_utf8_lossy(b).into_owned();
        for (n, line) in text.lines().enumerate() {
            let f = split_fields(line);
            if f.is_empty() {
                continue;
            }
            let at = || format!("/{path} line {}", n + 1);
            let field = |i: usize| f.get(i).map(String::as_str).unwrap_or("-");
            match field(0) {
                "g" => {
                    let name = field(1);
                    if db[2].iter().any(|l| l[0] == name) {
                        continue;
                    }
                    let gid = pick_id(field(2), &db[2], 2).with_context(at)?;
                    db[2].push(vec![
                        name.into(),
                        "x".into(),
                        gid.to_string(),
                        String::new(),
                    ]);
                    db[3].push(vec![name.into(), "!*".into(), String::new(), String::new()]);
                    notes.push(format!("sysusers: group {name} ({gid}) from /{path}"));
                }
                // `u!`: a fully locked account (sysusers.d(5)): the password locked, as for
                // `u`, and the account expired (shadow's expiry day 1, usermod(8)'s advice).
                kind @ ("u" | "u!") => {
                    let name = field(1);
                    if db[0].iter().any(|l| l[0] == name) {
                        continue;
                    }
                    let (uid_s, gid_s) = match field(2).split_once(':') {
                        Some((u, g)) => (u.to_string(), Some(g.to_string())),
                        None => (field(2).to_string(), None),
                    };
                    let uid = pick_id(&uid_s, &db[0], 2).with_context(at)?;
                    let gid = match gid_s {
                        Some(g) => match g.parse::<u32>() {
                            Ok(n) => n,
                            Err(_) => group_id(&db[2], &g)
                                .with_context(|| format!("{}: group {g} does not exist", at()))?,
                        },
                        None => match group_id(&db[2], name) {
                            Some(g) => g,
                            None => {
                                let g = if db[2].iter().any(|l| l[2] == uid.to_string()) {
                                    pick_id("-", &db[2], 2).with_context(at)?
                                } else {
                                    uid
                                };
                                db[2].push(vec![
                                    name.into(),
                                    "x".into(),
                                    g.to_string(),
                                    String::new(),
                                ]);
                                db[3].push(vec![
                                    name.into(),
                                    "!*".into(),
                                    String::new(),
                                    String::new(),
                                ]);
                                g
                            }
                        },
                    };
                    let gecos = field(3).replace(':', " ");
                    let gecos = if gecos == "-" { String::new() } else { gecos };
                    let home = if field(4) == "-" { "/" } else { field(4) };
                    let shell = if field(5) == "-" {
                        "/usr/bin/nologin"
                    } else {
                        field(5)
                    };
                    db[0].push(vec![
                        name.into(),
                        "x".into(),
                        uid.to_string(),
                        gid.to_string(),
                        gecos,
                        home.into(),
                        shell.into(),
                    ]);
                    db[1].push(vec![
                        name.into(),
                        "!*".into(),
                        days.clone(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        if kind == "u!" { "1" } else { "" }.into(),
                        String::new(),
                    ]);
                    notes.push(format!("sysusers: user {name} ({uid}:{gid}) from /{path}"));
                }
                "m" => {
                    let (user, group) = (field(1), field(2));
                    for (i, col) in [(2usize, 3usize), (3, 3)] {
                        if let Some(l) = db[i].iter_mut().find(|l| l[0] == group) {
                            let mut m: Vec<&str> =
                                l[col].split(',').filter(|x| !x.is_empty()).collect();
                            if !m.contains(&user) {
                                m.push(user);
                            }
                            l[col] = m.join(",");
                        }
                    }
                }
                _ => {} // `r` ranges and unknown types: left to systemd-sysusers at boot
            }
        }
    }
    for (f, lines) in files.iter().zip(&db) {
        edit::update_file(tree, ctx, f, format_colon_file(lines))?;
    }
    Ok(notes)
}

fn group_id(groups: &[Vec<String>], name: &str) -> Option<u32> {
    groups
        .iter()
        .find(|l| l[0] == name)
        .and_then(|l| l[2].parse().ok())
}

/// A numeric id as given, or the highest free system id (999 downwards) for `-`.
fn pick_id(spec: &str, lines: &[Vec<String>], col: usize) -> Result<u32> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    if spec != "-" && !spec.starts_with('/') {
        bail!("id {spec:?} is not a number, `-` or a path");
    }
    (1..=999u32)
        .rev()
        .find(|id| !lines.iter().any(|l| l.get(col) == Some(&id.to_string())))
        .context("no free system id below 1000")
}

/// Split a sysusers line into fields (whitespace-separated, `"…"` quoting); comments and
/// blank lines give nothing.
fn split_fields(line: &str) -> Vec<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uboot_is_never_on_the_list_and_unlisted_scriptlets_do_not_run() {
        assert!(!REVIEWED_SCRIPTLETS.contains(&"uboot-odroid-xu3"));
        let pk = |n: &str| Installed {
            name: n.into(),
            version: "1-1".into(),
            upgrades: None,
            has_scriptlet: true,
        };
        let up = Installed {
            upgrades: Some("0.9-1".into()),
            ..pk("upgraded")
        };
        let hooks = [
            DeferredHook {
                name: "30-systemd-hwdb.hook".into(),
                exec: "/usr/bin/systemd-hwdb --usr update".into(),
                targets: None,
            },
            DeferredHook {
                name: "90-own.hook".into(),
                exec: "/usr/bin/own-hook 'quoted arg'".into(),
                targets: Some(vec!["usr/share/own/a".into(), "usr/share/own/b".into()]),
            },
        ];
        let (s, skipped) = script_text(
            &[pk("hello"), pk("uboot-odroid-xu3"), pk("other"), up],
            &["hello", "uboot-odroid-xu3", "upgraded"],
            &hooks,
        );
        assert!(
            s.contains("then post_upgrade \"$@\"; fi' post_upgrade '/var/lib/pacman/local/upgraded-1-1/install' '1-1' '0.9-1'\n"),
            "{s}"
        );
        assert!(
            s.contains("step sh -c '/usr/bin/systemd-hwdb --usr update' </dev/null\n"),
            "{s}"
        );
        assert!(
            s.contains("step sh -c '/usr/bin/own-hook '\\''quoted arg'\\''' <<'HC1IMG_HOOK_TARGETS_END'\nusr/share/own/a\nusr/share/own/b\nHC1IMG_HOOK_TARGETS_END\n"),
            "{s}"
        );
        // The script runs: sh -n parses it.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, &s).unwrap();
        let o = std::process::Command::new("sh")
            .arg("-n")
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            s.contains("'/var/lib/pacman/local/hello-1-1/install'"),
            "{s}"
        );
        assert!(!s.contains("uboot"), "{s}");
        assert!(!s.contains("depmod"), "{s}");
        assert_eq!(skipped, ["uboot-odroid-xu3-1-1", "other-1-1"]);
    }

    #[test]
    fn sysusers_fields() {
        assert_eq!(
            split_fields("u docker - \"Docker daemon\" /var/lib/docker"),
            ["u", "docker", "-", "Docker daemon", "/var/lib/docker"]
        );
        assert!(split_fields("  # comment").is_empty());
    }
}
