//! Distributed image builds: on manager nodes, a `docker buildx` builder spanning every HC1
//! (one BuildKit builder node per node, docker-container driver) and a bake file that builds
//! the cluster's images, tags them `REGISTRY/NAME:YYYYMMDD` and pushes them to the cluster
//! registry (target.md, "The node configuration this cluster uses"; issue 9).
//!
//! Writes `/usr/local/sbin/hc1-buildx-setup` (run once at boot by `hc1-buildx-setup.service`,
//! enabled in `multi-user.target`), `/usr/local/sbin/hc1-bake`, `/etc/hc1/builds.conf`, the
//! bake file `/etc/hc1/docker-bake.hcl` (buildx's HCL bake format: `variable`, `group`,
//! `target` blocks with `inherits`, `contexts = { base = "target:base" }` so images built
//! `FROM base` wait for the base target) and, for a plain-HTTP registry, the BuildKit daemon
//! configuration `/etc/hc1/buildkitd.toml` (`[registry."HOST:PORT"] http/insecure`: BuildKit
//! in a container does not read dockerd's `daemon.json`). The engine's own trust of the
//! registry is `[docker.daemon] insecure-registries`, which this edit requires rather than
//! duplicates.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::backup::{check_abs_path, is_plain_word, shell_conf};
use super::docker;
use super::{EditInputs, Locator, Need, Section, Sections};
use crate::edit::units::{ETC_UNITS, install_unit};
use crate::edit::{EditContext, mkdir_p, write_file};
use crate::tree::Tree;

pub const SETUP_SCRIPT: &str = include_str!("../../assets/ops/hc1-buildx-setup");
pub const BAKE_SCRIPT: &str = include_str!("../../assets/ops/hc1-bake");
/// The bake file's fixed part; `@NAME@` placeholders are filled and the image targets
/// appended by [`bake_file`].
pub const BAKE_TEMPLATE: &str = include_str!("../../assets/ops/docker-bake.hcl");

pub const SETUP_BIN: &str = "usr/local/sbin/hc1-buildx-setup";
/// In sbin, run as root: buildx keeps its builders per user (`~/.docker/buildx`), and the
/// builder is root's (made by the boot-time set-up, reaching the nodes with root's SSH key).
pub const BAKE_BIN: &str = "usr/local/sbin/hc1-bake";
pub const CONF: &str = "etc/hc1/builds.conf";
pub const BAKE_FILE: &str = "etc/hc1/docker-bake.hcl";
pub const BUILDKITD_TOML: &str = "etc/hc1/buildkitd.toml";
pub const SSH_KEY: &str = "etc/hc1/buildx-ssh-key";
pub const SSH_CONFIG: &str = "etc/ssh/ssh_config.d/50-hc1-buildx.conf";
pub const SERVICE: &str = "hc1-buildx-setup.service";

/// The `[builds]` profile section. Nothing is written unless `enable = true` (set it on the
/// manager profiles).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Install the builder set-up and the bake file. Default false.
    pub enable: bool,
    /// buildx builder name. Default `hc1`.
    pub builder: String,
    /// Every cluster node (host names), one builder node each. Required when enabled.
    pub nodes: Vec<String>,
    /// How buildx reaches a node's Docker engine; `{node}` is replaced by the host name.
    /// Default `ssh://admin@{node}`.
    pub endpoint: String,
    /// Platforms the builder nodes build. Default `["linux/arm/v7"]`.
    pub platforms: Vec<String>,
    /// The cluster registry `HOST:PORT`. Required when enabled.
    pub registry: Option<String>,
    /// The registry speaks plain HTTP: it must be in `[docker.daemon] insecure-registries`,
    /// and BuildKit is told so. Default true.
    pub registry_insecure: bool,
    /// Directory on the manager holding one build context per image (`SRC/NAME`).
    /// Default `/srv/build`.
    pub source_dir: String,
    /// Image names, each built from `source_dir/NAME`. Default `["base"]`.
    pub images: Vec<String>,
    /// The image the others are built on (`FROM base`): built first. Empty: none.
    /// Default `base`.
    pub base: String,
    /// Secret holding the SSH private key root uses to reach the nodes (`ssh://` endpoints).
    /// Unset: root's own SSH configuration.
    pub ssh_key_secret: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: false,
            builder: "hc1".into(),
            nodes: Vec::new(),
            endpoint: "ssh://admin@{node}".into(),
            platforms: vec!["linux/arm/v7".into()],
            registry: None,
            registry_insecure: true,
            source_dir: "/srv/build".into(),
            images: vec!["base".into()],
            base: "base".into(),
            ssh_key_secret: None,
        }
    }
}

fn is_name(s: &str, extra: &[u8]) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Check the section's values (no tree needed).
pub fn check(cfg: &Config) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    if !is_name(&cfg.builder, b"_-") {
        bail!(
            "builds.builder = {:?} must be letters, digits, `_`, `-`",
            cfg.builder
        );
    }
    if cfg.nodes.is_empty() {
        bail!("builds.nodes is empty: list every cluster node's host name");
    }
    for n in &cfg.nodes {
        if !is_name(n, b".-") {
            bail!("builds.nodes: {n:?} is not a host name");
        }
    }
    if !cfg.endpoint.contains("{node}") || !is_plain_word(&cfg.endpoint) {
        bail!(
            "builds.endpoint = {:?} must be one word containing {{node}}, like \
             \"ssh://admin@{{node}}\"",
            cfg.endpoint
        );
    }
    if cfg.platforms.is_empty() {
        bail!("builds.platforms is empty");
    }
    for p in &cfg.platforms {
        if !is_name(p, b"/_-") {
            bail!("builds.platforms: {p:?} is not a platform like \"linux/arm/v7\"");
        }
    }
    match &cfg.registry {
        None => bail!("builds.registry is required (the cluster registry, HOST:PORT)"),
        Some(r) if !is_name(r, b".-:") => {
            bail!("builds.registry = {r:?} must be HOST or HOST:PORT")
        }
        Some(_) => {}
    }
    check_abs_path("builds.source_dir", &cfg.source_dir)?;
    if cfg.images.is_empty() {
        bail!("builds.images is empty");
    }
    let mut seen = std::collections::BTreeSet::new();
    for i in &cfg.images {
        let lower = i.bytes().all(|b| !b.is_ascii_uppercase());
        if !is_name(i, b"._-") || !lower || i.starts_with('_') {
            bail!("builds.images: {i:?} must be a lowercase image name (letters, digits, `._-`)");
        }
        if !seen.insert(i.as_str()) {
            bail!("builds.images: {i:?} is listed twice");
        }
    }
    if !cfg.base.is_empty() && !cfg.images.contains(&cfg.base) {
        bail!("builds.base = {:?} is not one of builds.images", cfg.base);
    }
    if cfg.ssh_key_secret.is_some() && !cfg.endpoint.starts_with("ssh://") {
        bail!("builds.ssh_key_secret only applies to an ssh:// endpoint");
    }
    Ok(())
}

/// The engine must run and trust a plain-HTTP registry through `[docker.daemon]
/// insecure-registries` (the one place that setting lives).
pub fn check_trust(cfg: &Config, docker: &docker::Config) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    if !docker.enable {
        bail!("builds.enable needs the Docker engine ([docker] enable = true)");
    }
    let registry = cfg.registry.as_deref().unwrap_or_default();
    if cfg.registry_insecure {
        let listed = docker
            .daemon
            .get("insecure-registries")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(registry)));
        if !listed {
            bail!(
                "builds.registry = {registry:?} is a plain-HTTP registry (registry_insecure = \
                 true) but [docker.daemon] insecure-registries does not list it; add it there \
                 so the engine trusts it"
            );
        }
    }
    Ok(())
}

fn hcl_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bake file for `cfg`: the template with its placeholders filled, then one target per
/// image, the base image first.
pub fn bake_file(cfg: &Config) -> Result<String> {
    check(cfg)?;
    let mut order: Vec<String> = Vec::new();
    if !cfg.base.is_empty() {
        order.push(cfg.base.clone());
    }
    order.extend(cfg.images.iter().filter(|i| **i != cfg.base).cloned());
    let mut s = BAKE_TEMPLATE
        .replace("@BUILDER@", &cfg.builder)
        .replace("@REGISTRY@", cfg.registry.as_deref().unwrap_or_default())
        .replace("@SRC@", &cfg.source_dir)
        .replace("@TARGETS@", &hcl_list(&order))
        .replace("@PLATFORMS@", &hcl_list(&cfg.platforms));
    if s.contains('@') {
        bail!("internal: assets/ops/docker-bake.hcl has an unknown @PLACEHOLDER@");
    }
    for name in &order {
        s.push_str(&format!(
            "\ntarget \"{name}\" {{\n  inherits = [\"_hc1\"]\n  context = \"${{SRC}}/{name}\"\n"
        ));
        if !cfg.base.is_empty() && *name != cfg.base {
            s.push_str(&format!(
                "  contexts = {{\n    {b} = \"target:{b}\"\n  }}\n",
                b = cfg.base
            ));
        }
        s.push_str(&format!(
            "  tags = [\"${{REGISTRY}}/{name}:${{TAG}}\"]\n}}\n"
        ));
    }
    Ok(s)
}

/// Apply the `[builds]` section; `docker` is the profile's `[docker]` section (the engine
/// must trust the registry).
pub fn apply(
    tree: &mut Tree,
    cfg: &Config,
    docker: &docker::Config,
    ctx: &EditContext,
) -> Result<()> {
    check(cfg)?;
    if !cfg.enable {
        return Ok(());
    }
    check_trust(cfg, docker)?;
    let registry = cfg.registry.clone().unwrap_or_default();
    mkdir_p(tree, ctx, "etc/hc1", 0o755, 0, 0, false)?;
    write_file(tree, ctx, SETUP_BIN, SETUP_SCRIPT, 0o750, 0, 0)?;
    write_file(tree, ctx, BAKE_BIN, BAKE_SCRIPT, 0o750, 0, 0)?;
    write_file(tree, ctx, BAKE_FILE, bake_file(cfg)?, 0o644, 0, 0)?;
    let mut vars = vec![
        ("HC1_BUILDX_BUILDER", cfg.builder.clone()),
        ("HC1_BUILDX_NODES", cfg.nodes.join(" ")),
        ("HC1_BUILDX_ENDPOINT", cfg.endpoint.clone()),
        ("HC1_BUILDX_PLATFORMS", cfg.platforms.join(",")),
        ("HC1_BAKE_FILE", format!("/{BAKE_FILE}")),
        ("HC1_BAKE_SRC", cfg.source_dir.clone()),
        ("HC1_BAKE_REGISTRY", registry.clone()),
    ];
    if cfg.registry_insecure {
        let toml = format!(
            "# Written by hc1img: BuildKit on every builder node pushes to the cluster \
             registry over plain HTTP.\n[registry.\"{registry}\"]\n  http = true\n  \
             insecure = true\n"
        );
        write_file(tree, ctx, BUILDKITD_TOML, toml, 0o644, 0, 0)?;
        vars.push(("HC1_BUILDX_CONFIG", format!("/{BUILDKITD_TOML}")));
    } else {
        vars.push(("HC1_BUILDX_CONFIG", String::new()));
    }
    let conf = shell_conf(
        "the profile's [builds] section; read by hc1-buildx-setup and hc1-bake",
        &vars,
    )?;
    write_file(tree, ctx, CONF, conf, 0o644, 0, 0)?;
    let mut key_condition = String::new();
    if let Some(secret) = &cfg.ssh_key_secret {
        if ctx.baked(secret) {
            let mut key = ctx.secret(secret)?;
            if key.is_empty() {
                bail!("secret {secret:?} (builds.ssh_key_secret) is empty");
            }
            if key.last() != Some(&b'\n') {
                key.push(b'\n');
            }
            write_file(tree, ctx, SSH_KEY, key, 0o600, 0, 0)?;
        } else {
            // From the card: the builder is set up at the first boot that has the key.
            ctx.on_card(secret, format!("file /{SSH_KEY} 0600"));
            key_condition = format!("ConditionPathExists=/{SSH_KEY}\n");
        }
        let ssh = format!(
            "# Written by hc1img: how root reaches the buildx builder nodes.\nHost {}\n  \
             IdentityFile /{SSH_KEY}\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n",
            cfg.nodes.join(" ")
        );
        write_file(tree, ctx, SSH_CONFIG, ssh, 0o644, 0, 0)?;
    }
    mkdir_p(tree, ctx, &cfg.source_dir, 0o755, 0, 0, false)?;
    let service = format!(
        "# Written by hc1img: see hc1-buildx-setup --help.\n[Unit]\n\
         Description=Create the buildx builder spanning every cluster node\n\
         Requires=docker.service\nAfter=docker.service network-online.target \
         hc1-card-secrets.service\nWants=network-online.target\n{key_condition}\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/{SETUP_BIN}\n\n[Install]\nWantedBy=multi-user.target\n"
    );
    install_unit(
        tree,
        ctx,
        ETC_UNITS,
        SERVICE,
        service,
        Some("multi-user.target"),
    )?;
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "builds";

    /// `docker buildx`: only an optional dependency of Arch's `docker`.
    fn needs(&self, _all: &Sections) -> Vec<Need> {
        if !self.enable {
            return Vec::new();
        }
        vec![Need {
            by: "[builds] enable = true".into(),
            paths: &[
                "usr/lib/docker/cli-plugins/docker-buildx",
                "usr/libexec/docker/cli-plugins/docker-buildx",
            ],
            package: "docker-buildx",
        }]
    }
    const ASSETS: &'static [(&'static str, &'static str)] = &[
        ("ops/docker-bake.hcl", BAKE_TEMPLATE),
        ("ops/hc1-bake", BAKE_SCRIPT),
        ("ops/hc1-buildx-setup", SETUP_SCRIPT),
    ];

    fn check(&self, all: &Sections, at: &dyn Locator) -> Result<()> {
        check(self).map_err(|e| at.err(&["builds"], &e))?;
        check_trust(self, &all.docker).map_err(|e| at.err(&["builds", "registry"], &e))?;
        at.declared(&["builds", "ssh_key_secret"], &self.ssh_key_secret)
    }

    fn apply(
        &self,
        tree: &mut Tree,
        all: &Sections,
        ctx: &EditContext,
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, &all.docker, ctx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::edit::testutil::*;

    pub(crate) fn cfg() -> Config {
        toml::from_str(
            "enable = true\nnodes = [\"hc1-manager-1.cluster.lan\", \"hc1-worker-1.cluster.lan\"]\n\
             registry = \"registry.cluster.lan:5000\"\nimages = [\"web\", \"base\", \"api\"]\n",
        )
        .unwrap()
    }

    fn docker_with(reg: &str) -> docker::Config {
        toml::from_str(&format!(
            "[daemon]\nstorage-driver = \"overlay2\"\ninsecure-registries = [\"{reg}\"]\n"
        ))
        .unwrap()
    }

    #[test]
    fn bake_file_parses_as_hcl_with_the_base_first_and_dated_tags() {
        let text = bake_file(&cfg()).unwrap();
        let body: hcl::Body = hcl::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let blocks: Vec<&hcl::Block> = body.blocks().collect();
        let find = |kind: &str, label: &str| {
            blocks
                .iter()
                .find(|b| {
                    b.identifier() == kind && b.labels().first().map(|l| l.as_str()) == Some(label)
                })
                .unwrap_or_else(|| panic!("no {kind} {label:?} in\n{text}"))
        };
        let attr = |b: &hcl::Block, name: &str| {
            b.body()
                .attributes()
                .find(|a| a.key() == name)
                .map(|a| a.expr().to_string().split_whitespace().collect::<String>())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let group = find("group", "default");
        assert_eq!(attr(group, "targets"), r#"["base","web","api"]"#);
        assert!(
            attr(find("variable", "REGISTRY"), "default").contains("registry.cluster.lan:5000")
        );
        assert_eq!(
            attr(find("target", "_hc1"), "platforms"),
            r#"["linux/arm/v7"]"#
        );
        for name in ["base", "web", "api"] {
            let t = find("target", name);
            assert_eq!(
                attr(t, "tags"),
                format!(r#"["${{REGISTRY}}/{name}:${{TAG}}"]"#)
            );
            assert_eq!(attr(t, "context"), format!(r#""${{SRC}}/{name}""#));
            let has_ctx = t.body().attributes().any(|a| a.key() == "contexts");
            assert_eq!(has_ctx, name != "base", "{name}");
        }
        assert!(attr(find("target", "web"), "contexts").contains("\"target:base\""));
        // The order in the file: the base target before the others.
        let pos = |n: &str| text.find(&format!("target \"{n}\"")).unwrap();
        assert!(pos("base") < pos("web") && pos("base") < pos("api"));
    }

    #[test]
    fn writes_scripts_conf_buildkitd_and_enables_the_setup() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let mut c = cfg();
        c.ssh_key_secret = Some("plain".into());
        apply(&mut t, &c, &docker_with("registry.cluster.lan:5000"), &ctx).unwrap();
        assert_file(&t, SETUP_BIN, SETUP_SCRIPT.as_bytes(), 0o750, 0, 0);
        assert_file(&t, BAKE_BIN, BAKE_SCRIPT.as_bytes(), 0o750, 0, 0);
        let conf = text(&t, CONF);
        assert!(
            conf.contains(
                "HC1_BUILDX_NODES='hc1-manager-1.cluster.lan hc1-worker-1.cluster.lan'\n"
            )
        );
        assert!(conf.contains("HC1_BUILDX_CONFIG='/etc/hc1/buildkitd.toml'\n"));
        let bk: toml::Table = toml::from_str(&text(&t, BUILDKITD_TOML)).unwrap();
        assert_eq!(
            bk["registry"]["registry.cluster.lan:5000"]["http"].as_bool(),
            Some(true)
        );
        assert_file(&t, SSH_KEY, b"hunter2-plaintext\n", 0o600, 0, 0);
        assert!(text(&t, SSH_CONFIG).contains(
            "Host hc1-manager-1.cluster.lan hc1-worker-1.cluster.lan\n  IdentityFile /etc/hc1/buildx-ssh-key\n"
        ));
        assert_dir(&t, "srv/build", 0o755, 0, 0);
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/hc1-buildx-setup.service",
            "/etc/systemd/system/hc1-buildx-setup.service",
        );
    }

    #[test]
    fn registry_must_be_trusted_by_the_engine_and_bad_values_are_refused() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let e = apply(&mut t, &cfg(), &docker_with("other:5000"), &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("insecure-registries"), "{e}");
        assert!(t.lookup(BAKE_FILE.as_bytes()).is_none());
        let mut tls = cfg();
        tls.registry_insecure = false;
        apply(&mut t, &tls, &docker_with("other:5000"), &ctx).unwrap();
        assert!(t.lookup(BUILDKITD_TOML.as_bytes()).is_none());
        let before = format!("{t:?}");
        apply(&mut t, &Config::default(), &docker::Config::default(), &ctx).unwrap();
        assert_eq!(before, format!("{t:?}"));
        for change in [
            "nodes = []",
            "nodes = [\"a b\"]",
            "endpoint = \"ssh://admin@host\"",
            "registry = \"reg istry\"",
            "images = [\"Base\"]",
            "images = [\"web\", \"web\"]",
            "base = \"nope\"",
            "source_dir = \"relative\"",
            "platforms = []",
            "builder = \"-x\"",
            "endpoint = \"tcp://{node}:2376\"\nssh_key_secret = \"plain\"",
        ] {
            let mut v: toml::Table = toml::from_str(&toml::to_string(&cfg()).unwrap()).unwrap();
            let c: toml::Table = toml::from_str(change).unwrap();
            v.extend(c);
            let c: Config = v.try_into().unwrap();
            assert!(check(&c).is_err(), "accepted: {change}");
        }
    }
}
