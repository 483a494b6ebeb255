//! Joining the Docker swarm, from the profile's `[swarm]` section.
//!
//! Writes `hc1-swarm-join.service` and its script `/usr/lib/hc1img/hc1-swarm-join` (source:
//! `assets/firstboot/hc1-swarm-join`), settings in `/etc/hc1img/swarm.conf` (`KEY=value`
//! lines: `ROLE`, `MANAGERS`, `ADVERTISE_ADDR`, `ATTEMPTS`). The join token is read on the
//! node from `/var/lib/hc1img/secrets/swarm-token` (0600, directory 0700): put there by
//! `hc1-card-secrets` from the card's seed (the default: the image holds no token), by hand,
//! or, when the profile bakes the secret (`bake = true`), written into the image here. Without
//! a token the script logs one line and exits 0; `hc1-swarm-join.path` (`systemd.path(5)`,
//! `PathExists=`) starts the join as soon as the token appears. The service is ordered after
//! `network-online.target`, `docker.service` and, unless `wait_for_time_sync = false`, a
//! synchronised clock (`systemd-time-wait-sync.service`, `time-sync.target`:
//! `systemd.special(7)`); it is idempotent (the script checks `docker info` first, both units
//! have a done-file condition, the token is deleted after a join) and retries with
//! `Restart=on-failure`. `docker swarm join` and `init` follow Docker's CLI reference.
//!
//! `labels` become the engine's labels: a `labels` list of `key=value` strings in
//! `/etc/docker/daemon.json` (dockerd(8), "Daemon configuration file"; Docker's "Object
//! labels" for the key format), kept with any `[docker.daemon] labels`. A card's
//! `hc1img seed --label` adds to or overrides them at first boot (`hc1-firstboot`).
//!
//! The section's types, [`Swarm`] and [`SwarmRole`], live here with the edit that consumes
//! them (the profile re-exports them), so the edits need nothing from `profile`.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::firstboot::{LIB_DIR, MULTI_USER};
use super::{EditInputs, Locator, Section, Sections};
use crate::edit::units::{LIB_UNITS, install_unit};
use crate::edit::{EditContext, check_one_line, mkdir_p, write_file};
use crate::tree::Tree;
use crate::values::is_word;
use anyhow::Context as _;

/// `[swarm]`: how the node joins the Docker swarm at first boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// `init`: the first manager runs `docker swarm init`; `manager` and `worker` join.
    /// Required.
    pub role: SwarmRole,
    /// Managers to join, `host` or `host:port` (port 2377 by default).
    #[serde(default)]
    pub managers: Vec<crate::values::Endpoint>,
    /// `--advertise-addr` (an address or an interface name such as `eth0`).
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Name of the secret holding the join token (required for `manager` and `worker`).
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Wait for a synchronised clock before joining (`systemd-time-wait-sync.service`): the
    /// HC1 has no RTC and swarm's mutual TLS fails with a clock in 1970. Default true.
    #[serde(default = "default_true")]
    pub wait_for_time_sync: bool,
    /// Docker engine labels (`daemon.json` `labels`, `key=value`), for placement constraints
    /// (`node.labels` is manager-side; these are `engine.labels`). A card's
    /// `hc1img seed --label` adds to or overrides them at first boot.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmRole {
    /// `docker swarm init`: the first manager.
    Init,
    /// Join as a manager.
    Manager,
    /// Join as a worker.
    Worker,
}

/// The join script (POSIX sh).
pub const SCRIPT: &str = include_str!("../../assets/firstboot/hc1-swarm-join");
pub const CONF: &str = "etc/hc1img/swarm.conf";
pub const TOKEN: &str = "var/lib/hc1img/secrets/swarm-token";

const UNIT: &str = "\
[Unit]
Description=hc1img: join the Docker swarm ({role})
Documentation=file:/usr/lib/hc1img/hc1-swarm-join
Wants=network-online.target docker.service{wait_unit}
After=network-online.target docker.service hc1-firstboot.service hc1-card-secrets.service time-sync.target{wait_unit}
ConditionPathExists=!/var/lib/hc1img/swarm.done
StartLimitIntervalSec=0

[Service]
Type=oneshot
ExecStart=/usr/lib/hc1img/hc1-swarm-join
Restart=on-failure
RestartSec=60

[Install]
WantedBy=multi-user.target
";

/// Starts the join as soon as a token is in place (from a re-seeded card, or put there by
/// hand), on a node that booted without one.
const PATH_UNIT: &str = "\
[Unit]
Description=hc1img: join the Docker swarm once a join token is in place
Documentation=file:/usr/lib/hc1img/hc1-swarm-join
ConditionPathExists=!/var/lib/hc1img/swarm.done

[Path]
PathExists=/var/lib/hc1img/secrets/swarm-token
Unit=hc1-swarm-join.service

[Install]
WantedBy=paths.target
";

/// Check one engine label: Docker's key format (lower-case letters and digits, with single
/// inner `.` or `-`; not in the reserved `com.docker.`, `io.docker.`, `org.dockerproject.`
/// namespaces) and a value of 1-255 printable characters without `"`, `\\`, `'` or `=` at the
/// start (the node's first boot writes it into JSON with a shell script).
pub fn check_label(key: &str, value: &str) -> std::result::Result<(), String> {
    let b = key.as_bytes();
    let key_ok = !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !b
            .windows(2)
            .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric());
    if !key_ok {
        return Err(format!(
            "label key {key:?}: use lower-case letters and digits with single inner `.` or `-` \
             (e.g. \"hc1.disk\")"
        ));
    }
    if ["com.docker.", "io.docker.", "org.dockerproject."]
        .iter()
        .any(|p| key.starts_with(p))
    {
        return Err(format!(
            "label key {key:?} is in a namespace Docker reserves; use your own prefix"
        ));
    }
    let value_ok = !value.is_empty()
        && value.len() <= 255
        && !value.starts_with(char::is_whitespace)
        && !value.ends_with(char::is_whitespace)
        && value
            .chars()
            .all(|c| !c.is_control() && !matches!(c, '"' | '\\' | '\''));
    if !value_ok {
        return Err(format!(
            "label {key}: value {value:?} must be 1-255 printable characters without quotes, \
             backslashes or surrounding spaces"
        ));
    }
    Ok(())
}

/// Add `labels` to `daemon.json`'s `labels` list (written by the `docker` edit).
fn apply_labels(
    tree: &mut Tree,
    labels: &std::collections::BTreeMap<String, String>,
    ctx: &EditContext,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    for (k, v) in labels {
        check_label(k, v).map_err(|e| anyhow::anyhow!("swarm.labels: {e}"))?;
    }
    let path = super::docker::DAEMON_JSON;
    let Some(text) = crate::edit::read_text_optional(tree, path)? else {
        bail!("swarm.labels need the Docker engine ([docker] enable = true): they go to /{path}");
    };
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("/{path} written by [docker] is not JSON: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        bail!("/{path} written by [docker] is not a JSON object");
    };
    let list = obj
        .entry("labels")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else {
        bail!("docker.daemon.labels must be a list of \"key=value\" strings");
    };
    for (k, val) in labels {
        let taken = list.iter().any(|e| {
            e.as_str()
                .is_some_and(|s| s.split_once('=').is_some_and(|(ek, _)| ek == k))
        });
        if taken {
            bail!("swarm.labels: {k:?} is also in [docker.daemon] labels; set it in one place");
        }
        list.push(serde_json::Value::String(format!("{k}={val}")));
    }
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    crate::edit::update_file(tree, ctx, path, s)
}

/// The role as `hc1-swarm-join` and the templates name it.
pub fn role_name(r: SwarmRole) -> &'static str {
    match r {
        SwarmRole::Init => "init",
        SwarmRole::Manager => "manager",
        SwarmRole::Worker => "worker",
    }
}

/// Docker's swarm management port, the default of a manager address without one.
pub const MANAGER_PORT: u16 = 2377;

/// A manager address as `host:port` ([`MANAGER_PORT`] when not given).
pub fn manager_addr(m: &str) -> String {
    if m.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        m.to_string()
    } else {
        format!("{m}:{MANAGER_PORT}")
    }
}

/// Apply `[swarm]` (nothing without one).
pub fn apply(tree: &mut Tree, swarm: Option<&Swarm>, ctx: &EditContext) -> Result<()> {
    let Some(sw) = swarm else {
        return Ok(());
    };
    apply_labels(tree, &sw.labels, ctx)?;
    let role = role_name(sw.role);
    let managers: Vec<String> = sw.managers.iter().map(|m| manager_addr(m)).collect();
    for m in &managers {
        if m.is_empty()
            || !m
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        {
            bail!("swarm.managers: {m:?} is not a host or host:port");
        }
    }
    let advertise = sw.advertise_addr.as_deref().unwrap_or("");
    check_one_line("swarm.advertise_addr", advertise)?;
    if advertise.contains(char::is_whitespace) {
        bail!("swarm.advertise_addr = {advertise:?} must be one word");
    }

    mkdir_p(tree, ctx, "etc/hc1img", 0o755, 0, 0, false)?;
    mkdir_p(tree, ctx, LIB_DIR, 0o755, 0, 0, false)?;
    write_file(
        tree,
        ctx,
        CONF,
        format!(
            "# Written by hc1img: settings of /usr/lib/hc1img/hc1-swarm-join.\n\
             ROLE={role}\nMANAGERS={}\nADVERTISE_ADDR={advertise}\nATTEMPTS=5\n",
            managers.join(" ")
        ),
        0o644,
        0,
        0,
    )?;
    write_file(
        tree,
        ctx,
        &format!("{LIB_DIR}/hc1-swarm-join"),
        SCRIPT,
        0o755,
        0,
        0,
    )?;
    if sw.role != SwarmRole::Init {
        mkdir_p(tree, ctx, "var/lib/hc1img", 0o755, 0, 0, false)?;
        mkdir_p(tree, ctx, "var/lib/hc1img/secrets", 0o700, 0, 0, false)?;
        install_unit(
            tree,
            ctx,
            LIB_UNITS,
            "hc1-swarm-join.path",
            PATH_UNIT,
            Some("paths.target"),
        )?;
    }
    if let Some(name) = sw.token_secret.as_ref().filter(|n| !ctx.baked(n)) {
        // From the card: the node waits for it (see hc1-swarm-join).
        ctx.on_card(name, "swarm-token");
    } else if let Some(name) = &sw.token_secret {
        let token = ctx.secret_line(name)?;
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            bail!(
                "secret {name:?} does not look like a swarm join token \
                 (`docker swarm join-token -q worker` prints one)"
            );
        }
        write_file(tree, ctx, TOKEN, format!("{token}\n"), 0o600, 0, 0)?;
    }
    let wait_unit = if sw.wait_for_time_sync {
        " systemd-time-wait-sync.service"
    } else {
        ""
    };
    let unit = UNIT
        .replace("{role}", role)
        .replace("{wait_unit}", wait_unit);
    install_unit(
        tree,
        ctx,
        LIB_UNITS,
        "hc1-swarm-join.service",
        unit,
        MULTI_USER,
    )?;
    Ok(())
}

/// The `[swarm]` section: absent, the node joins no swarm.
pub type Config = Option<Swarm>;

impl Section for Config {
    const NAME: &'static str = "swarm";
    const ASSETS: &'static [(&'static str, &'static str)] = &[("firstboot/hc1-swarm-join", SCRIPT)];

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        let Some(sw) = self else {
            return Ok(());
        };
        for (k, v) in &sw.labels {
            if let Err(e) = check_label(k, v) {
                return Err(at.err(&["swarm", "labels"], &e));
            }
        }
        if let Some(a) = &sw.advertise_addr
            && !is_word(a)
        {
            let msg = format!("{a:?}: expected an address or interface name");
            return Err(at.err(&["swarm", "advertise_addr"], &msg));
        }
        if sw.role != SwarmRole::Init {
            if sw.managers.is_empty() {
                return Err(at.err(
                    &["swarm", "managers"],
                    &"a joining node needs at least one manager address",
                ));
            }
            if sw.token_secret.is_none() {
                return Err(at.err(
                    &["swarm"],
                    &"a joining node needs `token_secret` (the name of the secret holding the join token)",
                ));
            }
        }
        at.declared(&["swarm", "token_secret"], &sw.token_secret)
    }

    /// The join unit, then the card-secrets list: it is complete once every section that takes
    /// a secret from the card (mail, backup, swarm, users) has run.
    fn apply(
        &self,
        tree: &mut Tree,
        all: &Sections,
        ctx: &EditContext,
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self.as_ref(), ctx)?;
        super::firstboot::write_card_secrets(tree, &all.firstboot, ctx).context("[firstboot]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::testutil::*;

    fn worker(secret: &str) -> Swarm {
        Swarm {
            role: SwarmRole::Worker,
            managers: vec!["m1.lan".parse().unwrap(), "m2.lan:2400".parse().unwrap()],
            advertise_addr: Some("eth0".into()),
            token_secret: Some(secret.into()),
            wait_for_time_sync: true,
            labels: Default::default(),
        }
    }

    #[test]
    fn labels_join_daemon_json_and_bad_ones_are_named() {
        let (mut t, secrets) = arch_tree();
        let mut ctx = EditContext::new(TS, &secrets);
        ctx.card_secrets.insert("tok".into());
        let daemon: toml::Table =
            toml::from_str("storage-driver = \"overlay2\"\nlabels = [\"site=lab\"]\n").unwrap();
        let docker = super::super::docker::Config {
            daemon,
            ..Default::default()
        };
        super::super::docker::apply(&mut t, &docker, &ctx).unwrap();
        let mut sw = worker("tok");
        sw.labels = [("hc1.disk", "ssd"), ("rack", "a 3")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        apply(&mut t, Some(&sw), &ctx).unwrap();
        assert_eq!(
            text(&t, super::super::docker::DAEMON_JSON),
            "{\n  \"labels\": [\n    \"site=lab\",\n    \"hc1.disk=ssd\",\n    \"rack=a 3\"\n  ],\n  \
             \"storage-driver\": \"overlay2\"\n}\n"
        );
        // The same key in [docker.daemon] and [swarm]: one place only.
        sw.labels = [("site".to_string(), "x".to_string())].into();
        let e = apply(&mut t, Some(&sw), &ctx).unwrap_err().to_string();
        assert!(
            e.contains("\"site\" is also in [docker.daemon] labels"),
            "{e}"
        );
        for (k, v, want) in [
            ("Rack", "a", "use lower-case letters"),
            ("rack..x", "a", "use lower-case letters"),
            ("io.docker.x", "a", "namespace Docker reserves"),
            ("rack", "", "must be 1-255 printable"),
            ("rack", "a\"b", "without quotes"),
        ] {
            assert!(check_label(k, v).unwrap_err().contains(want), "{k}={v}");
        }
        // Without the engine there is nowhere to put them.
        let (mut t, _) = arch_tree();
        sw.labels = [("rack".to_string(), "a".to_string())].into();
        let e = apply(&mut t, Some(&sw), &ctx).unwrap_err().to_string();
        assert!(e.contains("need the Docker engine"), "{e}");
    }

    #[test]
    fn writes_conf_token_and_unit() {
        let (mut t, _) = arch_tree();
        let secrets = |n: &str| -> Result<Vec<u8>> {
            match n {
                "tok" => Ok(b"SWMTKN-1-abc-def\n".to_vec()),
                _ => bail!("no"),
            }
        };
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, Some(&worker("tok")), &ctx).unwrap();
        assert_eq!(
            text(&t, CONF),
            "# Written by hc1img: settings of /usr/lib/hc1img/hc1-swarm-join.\n\
             ROLE=worker\nMANAGERS=m1.lan:2377 m2.lan:2400\nADVERTISE_ADDR=eth0\nATTEMPTS=5\n"
        );
        assert_file(&t, TOKEN, b"SWMTKN-1-abc-def\n", 0o600, 0, 0);
        assert_dir(&t, "var/lib/hc1img/secrets", 0o700, 0, 0);
        let unit = text(&t, "usr/lib/systemd/system/hc1-swarm-join.service");
        assert!(unit.contains("systemd-time-wait-sync.service"), "{unit}");
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/hc1-swarm-join.service",
            "/usr/lib/systemd/system/hc1-swarm-join.service",
        );
        // The token never reaches the notes.
        assert!(!format!("{:?}", ctx.notes.borrow()).contains("SWMTKN"));
        verify_units(&t, &["hc1-swarm-join.service"], &[]);
    }

    #[test]
    fn no_time_wait_and_bad_tokens() {
        let (mut t, _) = arch_tree();
        let secrets = |n: &str| -> Result<Vec<u8>> {
            match n {
                "tok" => Ok(b"SWMTKN-1-abc\n".to_vec()),
                "bad" => Ok(b"SWMTKN 1; rm -rf /\n".to_vec()),
                _ => bail!("no"),
            }
        };
        let ctx = EditContext::new(TS, &secrets);
        let mut sw = worker("tok");
        sw.wait_for_time_sync = false;
        apply(&mut t, Some(&sw), &ctx).unwrap();
        let unit = text(&t, "usr/lib/systemd/system/hc1-swarm-join.service");
        assert!(!unit.contains("time-wait-sync"), "{unit}");
        let e = apply(&mut t, Some(&worker("bad")), &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("join token") && !e.contains("rm -rf"), "{e}");
    }
}
