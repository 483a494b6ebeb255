//! Docker: the engine's `/etc/docker/daemon.json` and enabling `docker.service`.
//!
//! `daemon.json` follows dockerd's documented configuration file (`dockerd(8)`, "Daemon
//! configuration file"); it is written as pretty JSON with keys sorted, so the same profile
//! always gives the same bytes. The engine's identity (`/var/lib/docker`) is never created
//! here: dockerd makes it on the node (see `system`).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::units::enable_unit;
use crate::edit::{EditContext, mkdir_p, write_file};
use crate::tree::Tree;
use crate::values::UnitName;

/// Path of the file this edit writes.
pub const DAEMON_JSON: &str = "etc/docker/daemon.json";

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

/// Apply the `[docker]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
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
    Ok(())
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
        Ok(())
    }

    fn apply(
        &self,
        tree: &mut Tree,
        _: &Sections,
        ctx: &EditContext,
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::testutil::*;

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
