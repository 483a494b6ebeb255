//! Outgoing mail: an ssmtp-style relay configuration so cron and the sysadmin scripts can mail
//! root's messages out through the cluster's smarthost.
//!
//! Writes `/etc/ssmtp/ssmtp.conf` (`ssmtp.conf(5)`: `key=value` lines; 0640 root:mail because
//! it may hold `AuthPass`), `/etc/ssmtp/revaliases` (`local:from-address:mailhub`) and the
//! `root:` entry of `/etc/aliases` (`aliases(5)`).

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{
    EditContext, check_one_line, group_gid, mkdir_p, read_text_optional, update_file, write_file,
};
use crate::tree::Tree;

/// Paths this edit reads.
pub const CAPTURED: &[&str] = &["etc/aliases"];

pub const SSMTP_CONF: &str = "etc/ssmtp/ssmtp.conf";
pub const REVALIASES: &str = "etc/ssmtp/revaliases";
pub const ALIASES: &str = "etc/aliases";

/// The `[mail]` profile section. Nothing is written unless `mailhub` is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The relay, `host:port` (e.g. `smtp.example.org:587`). Unset: no mail configuration.
    pub mailhub: Option<String>,
    /// Address that receives mail for root and system users. Required with `mailhub`.
    pub root: String,
    /// `hostname=` (the name ssmtp says it is). Default: not written.
    pub hostname: Option<String>,
    /// `UseTLS=` (TLS from the start, port 465). Default false. Alias `tls`.
    #[serde(alias = "tls")]
    pub use_tls: bool,
    /// `UseSTARTTLS=` (upgrade with STARTTLS, port 587). Default true. Alias `starttls`.
    #[serde(alias = "starttls")]
    pub use_starttls: bool,
    /// `AuthUser=`. Default: not written.
    pub auth_user: Option<String>,
    /// Secret holding `AuthPass=`. Default: not written. Alias `password_secret`.
    #[serde(alias = "password_secret")]
    pub auth_pass_secret: Option<String>,
    /// `RewriteDomain=`: the domain mail appears to come from. Default: not written.
    pub rewrite_domain: Option<String>,
    /// `FromLineOverride=YES`: let programs set the From address. Default true.
    pub from_line_override: bool,
    /// `/etc/ssmtp/revaliases` lines. Default: one line mapping root to `root` via `mailhub`.
    pub revaliases: Vec<Revalias>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mailhub: None,
            root: String::new(),
            hostname: None,
            use_tls: false,
            use_starttls: true,
            auth_user: None,
            auth_pass_secret: None,
            rewrite_domain: None,
            from_line_override: true,
            revaliases: Vec::new(),
        }
    }
}

/// One reverse alias: mail from local user `local` is sent as `from` (through `mailhub`, or
/// the main one).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Revalias {
    pub local: String,
    pub from: String,
    pub mailhub: Option<String>,
}

/// A value for ssmtp.conf/revaliases: one word, no comment sign; `:` only in a `host:port`.
fn check_value(field: &str, v: &str) -> Result<()> {
    check_one_line(field, v)?;
    let colon_ok = field == "mail.mailhub";
    if v.is_empty()
        || v.contains(char::is_whitespace)
        || v.contains('#')
        || (!colon_ok && v.contains(':'))
    {
        bail!("{field} = {v:?} must be non-empty without spaces, `#` or `:`");
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "YES" } else { "NO" }
}

/// Apply the `[mail]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    let Some(hub) = &cfg.mailhub else {
        return Ok(());
    };
    check_value("mail.mailhub", hub)?;
    if !cfg.root.contains('@') {
        bail!(
            "mail.root = {:?} must be the mail address that receives root's mail",
            cfg.root
        );
    }
    check_value("mail.root", &cfg.root)?;
    let mail_gid = group_gid(tree, "mail")?
        .context("mail: the rootfs has no `mail` group in /etc/group (ssmtp.conf is root:mail)")?;

    let mut conf = format!(
        "# Written by hc1img: relay outgoing mail through the cluster's smarthost.\n\
         root={}\nmailhub={hub}\n",
        cfg.root
    );
    if let Some(h) = &cfg.hostname {
        check_value("mail.hostname", h)?;
        conf.push_str(&format!("hostname={h}\n"));
    }
    if let Some(d) = &cfg.rewrite_domain {
        check_value("mail.rewrite_domain", d)?;
        conf.push_str(&format!("RewriteDomain={d}\n"));
    }
    conf.push_str(&format!(
        "UseTLS={}\nUseSTARTTLS={}\nFromLineOverride={}\n",
        yes(cfg.use_tls),
        yes(cfg.use_starttls),
        yes(cfg.from_line_override)
    ));
    if let Some(u) = &cfg.auth_user {
        check_value("mail.auth_user", u)?;
    }
    // A password that comes from the card: the account goes in with it at boot (until then
    // mail goes out unauthenticated).
    let on_card = cfg
        .auth_pass_secret
        .as_deref()
        .filter(|name| !ctx.baked(name));
    if let Some(u) = &cfg.auth_user
        && on_card.is_none()
    {
        conf.push_str(&format!("AuthUser={u}\n"));
    }
    if let Some(name) = on_card {
        let Some(u) = &cfg.auth_user else {
            bail!("mail.auth_pass_secret is set but mail.auth_user is not");
        };
        ctx.on_card(name, format!("ssmtp-auth {u}"));
    } else if let Some(name) = &cfg.auth_pass_secret {
        if cfg.auth_user.is_none() {
            bail!("mail.auth_pass_secret is set but mail.auth_user is not");
        }
        let pass = ctx.secret_line(name).context("mail.auth_pass_secret")?;
        if pass.contains(char::is_whitespace) || pass.contains('#') {
            bail!(
                "secret {name:?} (mail.auth_pass_secret) contains a space or `#`, which \
                 ssmtp.conf cannot hold"
            );
        }
        conf.push_str(&format!("AuthPass={pass}\n"));
    }
    mkdir_p(tree, ctx, "etc/ssmtp", 0o755, 0, 0, false)?;
    write_file(tree, ctx, SSMTP_CONF, conf, 0o640, 0, mail_gid)?;

    let mut rev = String::from("# Written by hc1img: local user:from address:mailhub\n");
    let default = [Revalias {
        local: "root".into(),
        from: cfg.root.clone(),
        mailhub: None,
    }];
    let list = if cfg.revaliases.is_empty() {
        &default[..]
    } else {
        &cfg.revaliases[..]
    };
    for r in list {
        check_value("mail.revaliases.local", &r.local)?;
        check_value("mail.revaliases.from", &r.from)?;
        let h = r.mailhub.as_deref().unwrap_or(hub);
        check_value("mail.mailhub", h)?;
        rev.push_str(&format!("{}:{}:{h}\n", r.local, r.from));
    }
    write_file(tree, ctx, REVALIASES, rev, 0o644, 0, 0)?;

    let entry = format!("root: {}", cfg.root);
    match read_text_optional(tree, ALIASES)? {
        Some(old) => {
            let mut lines: Vec<String> = old
                .lines()
                .filter(|l| !l.trim_start().starts_with("root:"))
                .map(str::to_string)
                .collect();
            lines.push(entry);
            update_file(tree, ctx, ALIASES, lines.join("\n") + "\n")?;
        }
        None => write_file(tree, ctx, ALIASES, entry + "\n", 0o644, 0, 0)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn cfg() -> Config {
        Config {
            mailhub: Some("smtp.example.org:587".into()),
            root: "ops@example.org".into(),
            auth_user: Some("hc1@example.org".into()),
            auth_pass_secret: Some("smtp-pass".into()),
            ..Config::default()
        }
    }

    #[test]
    fn writes_ssmtp_files_and_alias() {
        let (mut t, secrets) = arch_tree();
        bytes(
            &mut t,
            ALIASES,
            0o644,
            "# aliases\nroot: alarm\npostmaster: root\n",
        );
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &cfg(), &ctx).unwrap();
        let want = format!(
            "# Written by hc1img: relay outgoing mail through the cluster's smarthost.\n\
             root=ops@example.org\nmailhub=smtp.example.org:587\nUseTLS=NO\nUseSTARTTLS=YES\n\
             FromLineOverride=YES\nAuthUser=hc1@example.org\nAuthPass={SMTP_PASS}\n"
        );
        assert_file(&t, SSMTP_CONF, want.as_bytes(), 0o640, 0, 12);
        assert_file(
            &t,
            REVALIASES,
            b"# Written by hc1img: local user:from address:mailhub\n\
              root:ops@example.org:smtp.example.org:587\n",
            0o644,
            0,
            0,
        );
        assert_file(
            &t,
            ALIASES,
            b"# aliases\npostmaster: root\nroot: ops@example.org\n",
            0o644,
            0,
            0,
        );
    }

    #[test]
    fn aliases_and_rewrite_domain() {
        let c: Config = toml::from_str(
            "mailhub = \"relay.lan:465\"\nroot = \"ops@example.org\"\ntls = true\n\
             starttls = false\nrewrite_domain = \"example.org\"\n",
        )
        .unwrap();
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &c, &ctx).unwrap();
        assert_eq!(
            text(&t, SSMTP_CONF),
            "# Written by hc1img: relay outgoing mail through the cluster's smarthost.\n\
             root=ops@example.org\nmailhub=relay.lan:465\nRewriteDomain=example.org\n\
             UseTLS=YES\nUseSTARTTLS=NO\nFromLineOverride=YES\n"
        );
    }

    #[test]
    fn nothing_without_mailhub_and_clear_errors() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert!(t.lookup(b"etc/ssmtp").is_none());
        assert!(t.lookup(ALIASES.as_bytes()).is_none());

        let g = text(&t, "etc/group").replace("mail:x:12:\n", "");
        update_file(&mut t, &ctx, "etc/group", g).unwrap();
        let e = apply(&mut t, &cfg(), &ctx).unwrap_err().to_string();
        assert!(e.contains("`mail` group"), "{e}");

        let (mut t, _) = arch_tree();
        let c = Config {
            auth_pass_secret: Some("nope".into()),
            ..cfg()
        };
        let e = format!("{:#}", apply(&mut t, &c, &ctx).unwrap_err());
        assert!(e.contains("\"nope\""), "{e}");
        // Without an aliases file one is created.
        apply(&mut t, &cfg(), &ctx).unwrap();
        assert_file(&t, ALIASES, b"root: ops@example.org\n", 0o644, 0, 0);
    }
}
