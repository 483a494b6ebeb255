//! Overlays: copy site file trees (`overlays/<name>/`, e.g. the sysadmin scripts and the
//! backup/clean-up timers) from the host into the rootfs.
//!
//! Regular files, directories and symlinks are copied in sorted order (byte order of names,
//! overlays in the listed order, a later one wins). Nothing of the host's identity leaks in:
//! owners are root:root and times are the build's timestamp; modes are 0755 for directories,
//! 0644 for files (0755 when the host file has an execute bit, which git records), unless a
//! `[[overlays.entry]]` sets `mode`/`owner` for a path. An existing directory keeps its mode
//! and owner unless an entry says otherwise. Files marked `template` are rendered with
//! [`crate::template::render`].
//!
//! A destination that passes through a symlink in the rootfs (e.g. `lib/…` where Arch has
//! `lib -> usr/lib`) is refused: the overlay must use the real path, otherwise the copy would
//! land somewhere else than its author meant.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::accounts::{group_gid, passwd_user};
use crate::edit::{EditContext, check_no_symlink_parent, rel};
use crate::template as templates;
use crate::tree::{NodeKind, Tree};
use crate::values::Mode;
use crate::values::is_user_name;
use std::collections::BTreeSet;

/// The `[overlays]` profile section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Overlay directories, applied in order (a later one wins). Relative paths are taken
    /// below the overlays directory the caller passes (the profile's `overlays/`); absolute
    /// ones (as a loader that resolved them passes) are used as they are. Alias `names`.
    #[serde(alias = "names")]
    pub dirs: Vec<PathBuf>,
    /// Per-path settings (`[[overlays.entry]]`); each must match a copied path.
    #[serde(rename = "entry")]
    pub entries: Vec<Entry>,
}

/// Settings for one copied path.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Entry {
    /// Absolute path in the rootfs, e.g. `/usr/local/bin/backup-volumes`. Required.
    pub path: String,
    /// Octal mode as a string, e.g. `"0750"`.
    pub mode: Option<Mode>,
    /// `user:group` or `user` (its primary group), names from the rootfs or numeric ids.
    pub owner: Option<String>,
    /// Render the file as a template (`{swarm.manager}` …). Default false.
    pub template: bool,
}

struct Settings {
    mode: Option<u16>,
    owner: Option<(u32, u32)>,
    template: bool,
    used: bool,
}

fn parse_owner(tree: &Tree, path: &str, o: &str) -> Result<(u32, u32)> {
    let (u, g) = match o.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (o, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let (uid, gid, _) = passwd_user(tree, u)?.with_context(|| {
                format!("overlays.entry {path:?}: user {u:?} does not exist in the rootfs")
            })?;
            (uid, Some(gid))
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_gid(tree, g)?.with_context(|| {
                format!("overlays.entry {path:?}: group {g:?} does not exist in the rootfs")
            })?,
        },
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

enum HostKind {
    Dir,
    File(Vec<u8>, bool),
    Symlink(String),
}

/// Everything below `dir`, parents first, names in byte order; paths relative to `dir`.
fn walk_host(dir: &Path, prefix: &str, out: &mut Vec<(String, HostKind)>) -> Result<()> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        names.push(
            e.with_context(|| format!("cannot read {}", dir.display()))?
                .file_name(),
        );
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        let host = dir.join(&n);
        let name = n
            .to_str()
            .with_context(|| format!("{}: file name is not UTF-8", host.display()))?;
        let p = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let md = std::fs::symlink_metadata(&host)
            .with_context(|| format!("cannot stat {}", host.display()))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let t = std::fs::read_link(&host)
                .with_context(|| format!("cannot read link {}", host.display()))?;
            let t = t
                .to_str()
                .with_context(|| format!("{}: link target is not UTF-8", host.display()))?;
            out.push((p, HostKind::Symlink(t.to_string())));
        } else if ft.is_dir() {
            out.push((p.clone(), HostKind::Dir));
            walk_host(&host, &p, out)?;
        } else if ft.is_file() {
            let data =
                std::fs::read(&host).with_context(|| format!("cannot read {}", host.display()))?;
            out.push((
                p,
                HostKind::File(data, md.permissions().mode() & 0o111 != 0),
            ));
        } else {
            bail!(
                "{}: only files, directories and symlinks can be in an overlay",
                host.display()
            );
        }
    }
    Ok(())
}

/// Apply the `[overlays]` section: `overlays_dir` holds the named overlay directories, `vars`
/// are the template variables.
pub fn apply(
    tree: &mut Tree,
    cfg: &Config,
    ctx: &EditContext,
    overlays_dir: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<()> {
    let mut settings: BTreeMap<String, Settings> = BTreeMap::new();
    for e in &cfg.entries {
        let p = rel(&e.path).with_context(|| format!("overlays.entry {:?}", e.path))?;
        let s = Settings {
            mode: e.mode.as_ref().map(Mode::bits),
            owner: e
                .owner
                .as_deref()
                .map(|o| parse_owner(tree, &e.path, o))
                .transpose()?,
            template: e.template,
            used: false,
        };
        if settings.insert(p, s).is_some() {
            bail!("overlays.entry {:?} is listed twice", e.path);
        }
    }

    for d in &cfg.dirs {
        let dir = overlays_dir.join(d);
        let name = d.display().to_string();
        if !dir.is_dir() {
            bail!("overlay {name:?}: {} is not a directory", dir.display());
        }
        let mut items = Vec::new();
        walk_host(&dir, "", &mut items)?;
        for (p, kind) in items {
            let shown = format!("overlay {name:?}: /{p}");
            check_no_symlink_parent(tree, &p).with_context(|| shown.clone())?;
            let s = settings.get_mut(&p);
            let (mode, owner, template) = match s {
                Some(s) => {
                    s.used = true;
                    (s.mode, s.owner, s.template)
                }
                None => (None, None, false),
            };
            let (uid, gid) = owner.unwrap_or((0, 0));
            let existing = tree
                .lookup(p.as_bytes())
                .map(|id| (id, tree.node(id).kind.clone()));
            if template && !matches!(kind, HostKind::File(..)) {
                bail!("{shown}: only regular files can be templates");
            }
            match kind {
                HostKind::Dir => match existing {
                    Some((id, NodeKind::Dir(_))) => {
                        if mode.is_some() || owner.is_some() {
                            let m = &mut tree.node_mut(id).meta;
                            if let Some(mode) = mode {
                                m.perm = mode;
                            }
                            if owner.is_some() {
                                m.uid = uid;
                                m.gid = gid;
                            }
                            m.mtime = ctx.mtime();
                        }
                    }
                    Some((_, NodeKind::Symlink(t))) => bail!(
                        "{shown}: the rootfs has a symlink there (to {}); refusing to copy a \
                         directory through it, use the real path",
                        crate::tree::display(&t)
                    ),
                    Some(_) => bail!("{shown}: the rootfs has a non-directory there"),
                    None => {
                        crate::edit::mkdir_p(tree, ctx, &p, mode.unwrap_or(0o755), uid, gid, true)?
                    }
                },
                HostKind::File(data, exec) => {
                    if matches!(existing, Some((_, NodeKind::Dir(_)))) {
                        bail!("{shown}: the rootfs has a directory there");
                    }
                    if let Some((_, NodeKind::Symlink(t))) = &existing {
                        ctx.note(format!(
                            "{shown} replaces a symlink (to {})",
                            crate::tree::display(t)
                        ));
                    }
                    let data = if template {
                        let text = String::from_utf8(data)
                            .map_err(|_| anyhow::anyhow!("{shown}: template is not UTF-8"))?;
                        templates::render(&text, vars)
                            .with_context(|| shown.clone())?
                            .into_bytes()
                    } else {
                        data
                    };
                    let default = if exec { 0o755 } else { 0o644 };
                    crate::edit::write_file(
                        tree,
                        ctx,
                        &p,
                        data,
                        mode.unwrap_or(default),
                        uid,
                        gid,
                    )?;
                }
                HostKind::Symlink(target) => {
                    if let Some((_, NodeKind::Dir(c))) = &existing
                        && !c.is_empty()
                    {
                        bail!("{shown}: the rootfs has a non-empty directory there");
                    }
                    if let Some((_, NodeKind::Dir(_))) = existing {
                        crate::edit::remove(tree, ctx, &p)?;
                    }
                    crate::edit::symlink(tree, ctx, &p, &target)?;
                    // A symlink's mode means nothing on Linux; only its owner is kept.
                    if owner.is_some()
                        && let Some(id) = tree.lookup(p.as_bytes())
                    {
                        let m = &mut tree.node_mut(id).meta;
                        m.uid = uid;
                        m.gid = gid;
                    }
                }
            }
        }
    }
    let unused: Vec<&String> = settings
        .iter()
        .filter(|(_, s)| !s.used)
        .map(|(p, _)| p)
        .collect();
    if !unused.is_empty() {
        bail!(
            "overlays.entry for /{} matches no file in the overlays {:?}",
            unused[0],
            cfg.dirs
        );
    }
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "overlays";

    /// The overlay directories exist (the loader made them absolute), and each per-path entry
    /// names something they copy; a template's placeholders are all known.
    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        let dirs_key = at.key_as_written(&["overlays"], &["dirs", "names"]);
        for (i, d) in self.dirs.iter().enumerate() {
            if !d.is_dir() {
                let msg = format!("[{i}] {} is not a directory", d.display());
                return Err(at.err(&["overlays", dirs_key], &msg));
            }
        }
        let vars = at.template_vars();
        let paths: &[&[&str]] = &[&["overlays", "entry"]];
        let mut seen = BTreeSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            let here = |k: &str, msg: String| at.item_err(paths, i, k, &msg);
            if e.path.is_empty() {
                return Err(here("path", "missing required key `path`".to_string()));
            }
            let r = match rel(&e.path) {
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
            let copies: Vec<PathBuf> = self
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
                            format!("{}: cannot be read: {err}", c.display()),
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
                let names = templates::placeholders(&text)
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

    fn apply(
        &self,
        tree: &mut Tree,
        _: &Sections,
        ctx: &EditContext,
        inputs: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, ctx, inputs.overlays_dir, inputs.vars)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::edit::testutil::*;

    fn write(root: &Path, p: &str, data: &str, mode: u32) {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, data).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn vars() -> BTreeMap<String, String> {
        [("swarm.manager".to_string(), "10.0.0.1".to_string())].into()
    }

    #[test]
    fn copies_files_dirs_and_links_with_profile_modes() {
        let host = tempfile::tempdir().unwrap();
        let o = host.path().join("sysadmin");
        write(
            &o,
            "usr/local/bin/backup-volumes",
            "#!/bin/sh\necho backup\n",
            0o775,
        );
        write(&o, "etc/hc1/join.conf", "MANAGER={swarm.manager}\n", 0o600);
        write(&o, "etc/hc1/secret.conf", "x\n", 0o666);
        std::fs::create_dir_all(o.join("srv/backup")).unwrap();
        symlink("../bin/backup-volumes", o.join("usr/local/sbin-link")).unwrap();
        let o2 = host.path().join("later");
        write(&o2, "etc/hc1/secret.conf", "y\n", 0o644);

        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg: Config = toml::from_str(
            "names = [\"sysadmin\", \"later\"]\n\
             [[entry]]\npath = \"/etc/hc1/join.conf\"\ntemplate = true\n\
             [[entry]]\npath = \"/etc/hc1/secret.conf\"\nmode = \"0640\"\nowner = \"root:mail\"\n\
             [[entry]]\npath = \"/srv/backup\"\nmode = \"0700\"\nowner = \"http\"\n",
        )
        .unwrap();
        apply(&mut t, &cfg, &ctx, host.path(), &vars()).unwrap();
        assert_file(
            &t,
            "usr/local/bin/backup-volumes",
            b"#!/bin/sh\necho backup\n",
            0o755,
            0,
            0,
        );
        assert_file(&t, "etc/hc1/join.conf", b"MANAGER=10.0.0.1\n", 0o644, 0, 0);
        assert_file(&t, "etc/hc1/secret.conf", b"y\n", 0o640, 0, 12);
        assert_dir(&t, "etc/hc1", 0o755, 0, 0);
        assert_dir(&t, "srv/backup", 0o700, 33, 33);
        assert_dir(&t, "usr/local", 0o755, 0, 0);
        assert_symlink(&t, "usr/local/sbin-link", "../bin/backup-volumes");
        // Existing directories keep their metadata.
        assert_dir(&t, "etc", 0o755, 0, 0);
        let id = t.lookup(b"etc").unwrap();
        assert_eq!(
            t.node(id).meta.mtime.sec,
            TS,
            "etc changed, so its mtime is the build's"
        );
    }

    #[test]
    fn refuses_paths_through_symlinks_and_bad_entries() {
        let host = tempfile::tempdir().unwrap();
        let o = host.path().join("bad");
        write(&o, "lib/systemd/system/x.service", "[Unit]\n", 0o644);
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg = Config {
            dirs: vec!["bad".into()],
            entries: vec![],
        };
        let e = format!(
            "{:#}",
            apply(&mut t, &cfg, &ctx, host.path(), &vars()).unwrap_err()
        );
        assert!(e.contains("/lib") && e.contains("symlink"), "{e}");
        assert!(t.lookup(b"usr/lib/systemd/system/x.service").is_none());

        let o = host.path().join("ok");
        write(&o, "etc/a", "a\n", 0o644);
        for (entry, want) in [
            (
                Entry {
                    path: "/etc/b".into(),
                    ..Entry::default()
                },
                "matches no file",
            ),
            (
                Entry {
                    path: "/../etc/a".into(),
                    ..Entry::default()
                },
                "..",
            ),
            (
                Entry {
                    path: "/etc/a".into(),
                    mode: Some("755".parse().unwrap()),
                    owner: Some("nobody-here".into()),
                    ..Entry::default()
                },
                "\"nobody-here\" does not exist",
            ),
        ] {
            let cfg = Config {
                dirs: vec!["ok".into()],
                entries: vec![entry],
            };
            let e = format!(
                "{:#}",
                apply(&mut t, &cfg, &ctx, host.path(), &vars()).unwrap_err()
            );
            assert!(e.contains(want), "want {want:?} in {e}");
        }
        let cfg = Config {
            dirs: vec!["../bad".into()],
            entries: vec![],
        };
        assert!(apply(&mut t, &cfg, &ctx, host.path(), &vars()).is_err());
        let cfg = Config {
            dirs: vec!["missing".into()],
            entries: vec![],
        };
        let e = apply(&mut t, &cfg, &ctx, host.path(), &vars())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn template_errors_name_the_file() {
        let host = tempfile::tempdir().unwrap();
        write(&host.path().join("t"), "etc/x", "{nope}\n", 0o644);
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg = Config {
            dirs: vec![host.path().join("t")],
            entries: vec![Entry {
                path: "/etc/x".into(),
                template: true,
                ..Entry::default()
            }],
        };
        let e = format!(
            "{:#}",
            apply(&mut t, &cfg, &ctx, Path::new("/nonexistent"), &vars()).unwrap_err()
        );
        assert!(e.contains("/etc/x") && e.contains("{nope}"), "{e}");
    }
}
