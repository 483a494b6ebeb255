//! Docker: the engine's `/etc/docker/daemon.json`, enabling `docker.service`, and container
//! images preloaded for an offline first boot.
//!
//! `daemon.json` follows dockerd's documented configuration file (`dockerd(8)`, "Daemon
//! configuration file"); it is written as pretty JSON with keys sorted, so the same profile
//! always gives the same bytes. The engine's identity (`/var/lib/docker`) is never created
//! here: dockerd makes it on the node (see `system`).
//!
//! `preload`: archives as `docker save` writes them (docker-image-save(1), the image tarball
//! format `docker load` reads) go into `/var/lib/hc1img/preload/` (root-only), streamed into
//! the image by the build ([`EditInputs::preloaded`]); `hc1-docker-preload.service` loads
//! them once at the first boot, after `docker.service` and before `hc1-swarm-join.service`,
//! deleting each archive once it is loaded. A failed load keeps its archive, fails the unit
//! (`hc1-health` reports it) and is tried again at the next boot. Writing Docker's own store
//! (`/var/lib/docker/overlay2`) offline is not something Docker supports: the engine loads
//! what it is given.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::firstboot::{LIB_DIR, MULTI_USER};
use super::{EditInputs, Locator, Section, Sections};
use crate::edit::units::{LIB_UNITS, enable_unit, install_unit};
use crate::edit::{EditContext, mkdir_p, write_file, write_file_data};
use crate::tree::Tree;
use crate::values::UnitName;

/// Path of the file this edit writes.
pub const DAEMON_JSON: &str = "etc/docker/daemon.json";

/// Where the preloaded archives wait for their first boot (root-only).
pub const PRELOAD_DIR: &str = "var/lib/hc1img/preload";

/// The unit that loads them.
pub const PRELOAD_UNIT: &str = "hc1-docker-preload.service";

/// Its script (in [`LIB_DIR`]).
const PRELOAD_SCRIPT: &str = "#!/bin/sh
# hc1-docker-preload (written by hc1img, [docker] preload): load each archive of
# /var/lib/hc1img/preload with `docker load`, then delete it. A failed load keeps its archive
# and fails this unit (hc1-health reports it); the next boot tries again.
dir=/var/lib/hc1img/preload
failed=0
for f in \"$dir\"/*; do
    [ -f \"$f\" ] || continue
    if docker load -i \"$f\"; then
        rm -f -- \"$f\"
        echo \"hc1-docker-preload: loaded ${f##*/}\"
    else
        echo \"hc1-docker-preload: docker load -i $f failed; kept for the next boot\" >&2
        failed=1
    fi
done
exit $failed
";

/// The unit: once (while the directory holds an archive), after the engine, before the join.
fn preload_unit(docker: &UnitName) -> String {
    format!(
        "[Unit]\n\
         Description=hc1img: load the preloaded container images\n\
         Documentation=file:/{LIB_DIR}/hc1-docker-preload\n\
         Requires={docker}\n\
         After={docker}\n\
         Before=hc1-swarm-join.service\n\
         ConditionDirectoryNotEmpty=/{PRELOAD_DIR}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/{LIB_DIR}/hc1-docker-preload\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The `[docker]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Write daemon.json and enable the unit. Default true.
    pub enable: bool,
    /// The contents of `daemon.json`, as a TOML table (`[docker.daemon]`). Given in the
    /// profile it replaces the default as a whole. Default `{ "storage-driver" = "overlay2" }`.
    pub daemon: toml::Table,
    /// Unit to enable. Default `docker.service`.
    pub unit: UnitName,
    /// Target whose `.wants/` gets the unit. Default `multi-user.target`.
    pub wanted_by: UnitName,
    /// `docker save` archives (paths relative to the profile file) loaded once at the first
    /// boot, before the swarm join: images a node runs even where the registry is
    /// unreachable. Their contents are inputs of the derivation. Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preload: Vec<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let mut daemon = toml::Table::new();
        daemon.insert(
            "storage-driver".into(),
            toml::Value::String("overlay2".into()),
        );
        Config {
            enable: true,
            daemon,
            unit: UnitName::known("docker.service"),
            wanted_by: UnitName::known("multi-user.target"),
            preload: Vec::new(),
        }
    }
}

/// TOML value to JSON with object keys in sorted order.
fn to_json(path: &str, v: &toml::Value) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => J::Number(n),
            None => bail!("docker.daemon.{path}: {f} cannot be written as JSON"),
        },
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(_) => {
            bail!("docker.daemon.{path}: a TOML date has no JSON form; write it as a string")
        }
        toml::Value::Array(a) => J::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| to_json(&format!("{path}[{i}]"), v))
                .collect::<Result<_>>()?,
        ),
        toml::Value::Table(t) => table_to_json(path, t)?,
    })
}

fn table_to_json(path: &str, t: &toml::Table) -> Result<serde_json::Value> {
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    let mut m = serde_json::Map::new();
    for k in keys {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        m.insert(k.clone(), to_json(&p, &t[k])?);
    }
    Ok(serde_json::Value::Object(m))
}

/// The bytes of `daemon.json` for `cfg`.
pub fn daemon_json(cfg: &Config) -> Result<Vec<u8>> {
    let v = table_to_json("", &cfg.daemon)?;
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    Ok(s.into_bytes())
}

/// The name a preloaded archive has on the node: its file name.
pub fn preload_name(path: &std::path::Path) -> Option<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_plain_file_name(n))
        .map(str::to_string)
}

/// Letters, digits, `.`, `_`, `-`, `+`, not starting with `.`: a name that is safe as one file
/// name on the node and in the unit's shell loop.
fn is_plain_file_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// Put the preloaded archives (already stored by the build: `preloaded`, name and data) into
/// [`PRELOAD_DIR`] and install the unit that loads them.
fn apply_preload(
    tree: &mut Tree,
    cfg: &Config,
    ctx: &EditContext,
    preloaded: &[(String, crate::tree::FileData)],
) -> Result<()> {
    for p in &cfg.preload {
        let name = preload_name(p).unwrap_or_default();
        if !preloaded.iter().any(|(n, _)| *n == name) {
            bail!(
                "docker.preload: {} was not read into the image (internal: the build stores the archives before the sections run)",
                p.display()
            );
        }
    }
    if preloaded.is_empty() {
        return Ok(());
    }
    mkdir_p(tree, ctx, PRELOAD_DIR, 0o700, 0, 0, false)?;
    for (name, data) in preloaded {
        write_file_data(
            tree,
            ctx,
            &format!("{PRELOAD_DIR}/{name}"),
            data.clone(),
            0o600,
            0,
            0,
        )?;
    }
    mkdir_p(tree, ctx, LIB_DIR, 0o755, 0, 0, false)?;
    write_file(
        tree,
        ctx,
        &format!("{LIB_DIR}/hc1-docker-preload"),
        PRELOAD_SCRIPT,
        0o755,
        0,
        0,
    )?;
    install_unit(
        tree,
        ctx,
        LIB_UNITS,
        PRELOAD_UNIT,
        preload_unit(&cfg.unit),
        MULTI_USER,
    )?;
    Ok(())
}

/// Apply the `[docker]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    apply_with(tree, cfg, ctx, &[])
}

/// [`apply`] with the archives the build stored for `preload`.
fn apply_with(
    tree: &mut Tree,
    cfg: &Config,
    ctx: &EditContext,
    preloaded: &[(String, crate::tree::FileData)],
) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    if crate::edit::units::find_unit(tree, &cfg.unit).is_none() {
        bail!(
            "docker.unit {:?} is not installed in the rootfs (no usr/lib/systemd/system/{0}); \
             add the docker package to the rootfs or set docker.enable = false",
            cfg.unit
        );
    }
    let json = daemon_json(cfg)?;
    mkdir_p(tree, ctx, "etc/docker", 0o755, 0, 0, false)?;
    write_file(tree, ctx, DAEMON_JSON, json, 0o644, 0, 0)?;
    enable_unit(tree, ctx, &cfg.unit, &cfg.wanted_by)?;
    apply_preload(tree, cfg, ctx, preloaded)
}

impl Section for Config {
    const NAME: &'static str = "docker";

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        if let Err(e) = daemon_json(self) {
            let msg = e.to_string();
            let msg = msg.strip_prefix("docker.daemon.").unwrap_or(&msg);
            // Point at the offending key: the message starts with its dotted path.
            let key = msg.split(": ").next().unwrap_or("");
            let mut path = vec!["docker", "daemon"];
            path.extend(key.split('.').map(|k| k.split('[').next().unwrap_or(k)));
            // The error shows `docker.daemon: ` and the message (which names the key itself).
            return Err(at.err_shown(&path, "docker.daemon", &msg));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.preload {
            let Some(name) = preload_name(p) else {
                return Err(at.err(
                    &["docker", "preload"],
                    &format!(
                        "{}: the file name must be letters, digits, '.', '_', '-' or '+' (it is the archive's name on the node)",
                        p.display()
                    ),
                ));
            };
            if !names.insert(name.clone()) {
                return Err(at.err(
                    &["docker", "preload"],
                    &format!("two archives are named {name}; rename one"),
                ));
            }
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(at.err(
                        &["docker", "preload"],
                        &format!(
                            "{} is not a regular file (a `docker save` archive)",
                            p.display()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(at.err(&["docker", "preload"], &format!("{}: {e}", p.display())));
                }
            }
        }
        if !self.preload.is_empty() && !self.enable {
            return Err(at.err(
                &["docker", "preload"],
                &"needs the engine: docker.enable = false loads nothing",
            ));
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
        apply_with(tree, self, ctx, inputs.preloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::testutil::*;
    use std::path::Path;

    #[test]
    fn writes_sorted_json_and_enables_the_unit() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg: Config = toml::from_str(
            "[daemon]\nstorage-driver = \"overlay2\"\ninsecure-registries = [\"registry.lan:5000\"]\n\
             log-driver = \"json-file\"\n[daemon.log-opts]\nmax-size = \"10m\"\nmax-file = \"3\"\n",
        )
        .unwrap();
        apply(&mut t, &cfg, &ctx).unwrap();
        let want = "{\n  \"insecure-registries\": [\n    \"registry.lan:5000\"\n  ],\n  \
                    \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \
                    \"max-size\": \"10m\"\n  },\n  \"storage-driver\": \"overlay2\"\n}\n";
        assert_file(&t, DAEMON_JSON, want.as_bytes(), 0o644, 0, 0);
        let parsed: serde_json::Value = serde_json::from_str(want).unwrap();
        assert_eq!(parsed["log-opts"]["max-size"], "10m");
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/docker.service",
            "/usr/lib/systemd/system/docker.service",
        );
    }

    #[test]
    fn preloaded_archives_are_root_only_and_loaded_by_a_unit_before_the_join() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let cfg = Config {
            preload: vec!["/site/images/app.tar".into()],
            ..Config::default()
        };
        let stored = [(
            "app.tar".to_string(),
            crate::tree::FileData::Bytes(b"archive".to_vec()),
        )];
        apply_with(&mut t, &cfg, &ctx, &stored).unwrap();
        assert_file(
            &t,
            "var/lib/hc1img/preload/app.tar",
            b"archive",
            0o600,
            0,
            0,
        );
        let dir = t.node(t.lookup(PRELOAD_DIR.as_bytes()).unwrap());
        assert_eq!(dir.meta.perm & 0o777, 0o700);
        assert_file(
            &t,
            "usr/lib/hc1img/hc1-docker-preload",
            PRELOAD_SCRIPT.as_bytes(),
            0o755,
            0,
            0,
        );
        let unit = preload_unit(&cfg.unit);
        assert!(unit.contains("After=docker.service\nBefore=hc1-swarm-join.service\n"));
        assert!(unit.contains("ConditionDirectoryNotEmpty=/var/lib/hc1img/preload\n"));
        assert_file(
            &t,
            "usr/lib/systemd/system/hc1-docker-preload.service",
            unit.as_bytes(),
            0o644,
            0,
            0,
        );
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/hc1-docker-preload.service",
            "/usr/lib/systemd/system/hc1-docker-preload.service",
        );
        // An archive the build did not store is an error, not a silent skip.
        let (mut t, _) = arch_tree();
        let e = apply_with(&mut t, &cfg, &ctx, &[]).unwrap_err().to_string();
        assert!(
            e.contains("app.tar") && e.contains("not read into the image"),
            "{e}"
        );
        assert_eq!(preload_name(Path::new("/x/.hidden")), None);
        assert_eq!(preload_name(Path::new("/x/a b.tar")), None);
    }

    #[test]
    fn default_is_overlay2_and_missing_unit_is_an_error() {
        assert_eq!(
            daemon_json(&Config::default()).unwrap(),
            b"{\n  \"storage-driver\": \"overlay2\"\n}\n"
        );
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        t.remove(b"usr/lib/systemd/system/docker.service");
        let e = apply(&mut t, &Config::default(), &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker.service") && e.contains("not installed"),
            "{e}"
        );
        assert!(t.lookup(DAEMON_JSON.as_bytes()).is_none());
    }
}
