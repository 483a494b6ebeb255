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

use anyhow::{Result, bail};

use super::firstboot::{LIB_DIR, MULTI_USER};
use super::{EditContext, LIB_UNITS, check_one_line, install_unit, mkdir_p, write_file};
use crate::profile::{Swarm, SwarmRole};
use crate::tree::Tree;

/// The join script (POSIX sh).
pub const SCRIPT: &str = include_str!("../../../assets/firstboot/hc1-swarm-join");
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

fn role_name(r: SwarmRole) -> &'static str {
    match r {
        SwarmRole::Init => "init",
        SwarmRole::Manager => "manager",
        SwarmRole::Worker => "worker",
    }
}

/// A manager address as `host:port` (port 2377 when not given).
pub fn manager_addr(m: &str) -> String {
    if m.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        m.to_string()
    } else {
        format!("{m}:2377")
    }
}

/// Apply `[swarm]` (nothing without one).
pub fn apply(tree: &mut Tree, swarm: Option<&Swarm>, ctx: &EditContext) -> Result<()> {
    let Some(sw) = swarm else {
        return Ok(());
    };
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

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn worker(secret: &str) -> Swarm {
        Swarm {
            role: SwarmRole::Worker,
            managers: vec!["m1.lan".into(), "m2.lan:2400".into()],
            advertise_addr: Some("eth0".into()),
            token_secret: Some(secret.into()),
            wait_for_time_sync: true,
        }
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
