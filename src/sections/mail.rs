//! Outgoing mail: a relay configuration so cron and the sysadmin scripts can mail root's
//! messages out through the cluster's smarthost, and a check that the image has the program.
//!
//! Two programs, chosen by `program`:
//! - `msmtp` (the default; `msmtp` and `msmtp-mta` in Arch Linux's `extra`, maintained):
//!   `/etc/msmtprc` in `msmtp(1)`'s configuration syntax (a `defaults` section, then `account
//!   default`), 0600 root:root because it may hold the password; `/usr/bin/sendmail` is
//!   msmtp-mta's link to msmtp, and msmtp's `aliases` command maps local recipients through
//!   `/etc/aliases`.
//! - `ssmtp` (AUR only, unmaintained; for a tarball that has it): `/etc/ssmtp/ssmtp.conf`
//!   (`ssmtp.conf(5)`: `key=value` lines; 0640 root:mail because it may hold `AuthPass`) and
//!   `/etc/ssmtp/revaliases` (`local:from-address:mailhub`).
//!
//! Both: the `root:` entry of `/etc/aliases` (`aliases(5)`). The program and `sendmail` are
//! the section's needs (`Section::needs`): not in the tree (the tarball plus `[packages]`,
//! installed before the edits), the build stops naming the package to add.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Need, Section, Sections};
use crate::edit::accounts::group_gid;
use crate::edit::{
    EditContext, check_one_line, mkdir_p, read_text_optional, update_file, write_file,
};
use crate::tree::Tree;
use crate::values::HostPort;
use crate::values::is_word;

pub const MSMTPRC: &str = "etc/msmtprc";
pub const SSMTP_CONF: &str = "etc/ssmtp/ssmtp.conf";
pub const REVALIASES: &str = "etc/ssmtp/revaliases";
pub const ALIASES: &str = "etc/aliases";

/// The `[mail]` profile section. Nothing is written unless `mailhub` is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The program that sends: msmtp (with msmtp-mta's `sendmail`; the default) or ssmtp (only
    /// for a tarball that already has it). The build checks the image has it.
    pub program: Program,
    /// The relay, `host:port` (e.g. `smtp.example.org:587`). Unset: no mail configuration.
    pub mailhub: Option<HostPort>,
    /// Address that receives mail for root and system users (`root:` in `/etc/aliases`).
    /// Required with `mailhub`.
    pub root: String,
    /// The name the node says it is (msmtp `domain`, the EHLO name; ssmtp `hostname=`). Unset:
    /// not written.
    pub hostname: Option<String>,
    /// Implicit TLS from the start (port 465): msmtp `tls on`, `tls_starttls off`; ssmtp
    /// `UseTLS=`. Excludes `use_starttls`.
    #[serde(alias = "tls")]
    pub use_tls: bool,
    /// Upgrade with STARTTLS (port 587): msmtp `tls on`, `tls_starttls on`; ssmtp
    /// `UseSTARTTLS=`. Both false: no TLS.
    #[serde(alias = "starttls")]
    pub use_starttls: bool,
    /// The relay account (msmtp `auth on`, `user`; ssmtp `AuthUser=`). Unset: no
    /// authentication.
    pub auth_user: Option<String>,
    /// Secret holding the relay password (msmtp `password`; ssmtp `AuthPass=`); needs
    /// `auth_user`. From the card unless baked; until it arrives mail goes out
    /// unauthenticated.
    #[serde(alias = "password_secret")]
    pub auth_pass_secret: Option<String>,
    /// The domain mail appears to come from (msmtp `from %U@DOMAIN`, else `%U@hostname`;
    /// ssmtp `RewriteDomain=`).
    pub rewrite_domain: Option<String>,
    /// Let programs set the From address (msmtp `allow_from_override`; ssmtp
    /// `FromLineOverride=`).
    pub from_line_override: bool,
    /// ssmtp's `/etc/ssmtp/revaliases` lines (msmtp ignores them, with a warning). Default: one
    /// line mapping root to `root` via `mailhub`.
    pub revaliases: Vec<Revalias>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            program: Program::Msmtp,
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

/// Which relay program `[mail]` configures.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Program {
    /// msmtp + msmtp-mta (Arch Linux `extra`).
    #[default]
    Msmtp,
    /// ssmtp (AUR), for a tarball that already has it.
    Ssmtp,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Msmtp => "msmtp",
            Program::Ssmtp => "ssmtp",
        }
    }
}

/// One reverse alias: mail from local user `local` is sent as `from` (through `mailhub`, or
/// the main one).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Revalias {
    /// The local user. Required.
    pub local: String,
    /// The address its mail is sent as. Required.
    pub from: String,
    /// The relay for this user's mail. Unset: the section's `mailhub`.
    pub mailhub: Option<HostPort>,
}

/// A value for ssmtp.conf/revaliases: one word, no comment sign; `:` only in a `host:port`.
fn check_value(field: &str, v: &str) -> Result<()> {
    check_one_line(field, v)?;
    if v.is_empty() || v.contains(char::is_whitespace) || v.contains('#') || v.contains(':') {
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
    if !cfg.root.contains('@') {
        bail!(
            "mail.root = {:?} must be the mail address that receives root's mail",
            cfg.root
        );
    }
    check_value("mail.root", &cfg.root)?;
    match cfg.program {
        Program::Ssmtp => apply_ssmtp(tree, cfg, hub, ctx)?,
        Program::Msmtp => apply_msmtp(tree, cfg, hub, ctx)?,
    }

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

/// A value for msmtprc: `"…"` with `\\` and `"` escaped (msmtp's quoting).
fn msmtp_quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `/etc/msmtprc`: one `default` account, last in the file so the boot's card-secrets step can
/// replace its `auth`/`user`/`password` lines.
fn apply_msmtp(tree: &mut Tree, cfg: &Config, hub: &HostPort, ctx: &EditContext) -> Result<()> {
    let (host, port) = hub.parts();
    if cfg.use_tls && cfg.use_starttls {
        bail!(
            "mail.use_tls and mail.use_starttls are both true: choose one (465: use_tls, 587: use_starttls)"
        );
    }
    if !cfg.revaliases.is_empty() {
        ctx.warnings.borrow_mut().push(
            "[mail] revaliases is ssmtp's; msmtp sends as `from` (user@rewrite_domain): ignored"
                .to_string(),
        );
    }
    let mut conf = String::from(
        "# Written by hc1img: relay outgoing mail through the cluster's smarthost (msmtp(1)).\n\
         # /usr/bin/sendmail is msmtp (msmtp-mta). Root-only: it may hold the relay password.\n\
         defaults\n\
         aliases /etc/aliases\n\
         syslog LOG_MAIL\n\
         timeout 30\n",
    );
    conf.push_str(&format!(
        "allow_from_override {}\n",
        if cfg.from_line_override { "on" } else { "off" }
    ));
    if let Some(h) = &cfg.hostname {
        check_value("mail.hostname", h)?;
        conf.push_str(&format!("domain {h}\n"));
    }
    let from_domain = match (&cfg.rewrite_domain, &cfg.hostname) {
        (Some(d), _) => {
            check_value("mail.rewrite_domain", d)?;
            d.clone()
        }
        (None, Some(h)) => h.clone(),
        (None, None) => "%H".to_string(),
    };
    conf.push_str(&format!(
        "\naccount default\nhost {host}\nport {port}\nfrom %U@{from_domain}\n"
    ));
    let (tls, starttls) = match (cfg.use_tls, cfg.use_starttls) {
        (true, _) => ("on", "off"),
        (false, true) => ("on", "on"),
        (false, false) => ("off", "off"),
    };
    conf.push_str(&format!("tls {tls}\ntls_starttls {starttls}\n"));
    if let Some(u) = &cfg.auth_user {
        check_value("mail.auth_user", u)?;
    }
    let on_card = cfg
        .auth_pass_secret
        .as_deref()
        .filter(|name| !ctx.baked(name));
    match (&cfg.auth_user, &cfg.auth_pass_secret) {
        (None, Some(_)) => bail!("mail.auth_pass_secret is set but mail.auth_user is not"),
        (Some(u), None) => conf.push_str(&format!("auth on\nuser {u}\n")),
        (None, None) => conf.push_str("auth off\n"),
        (Some(u), Some(name)) => match on_card {
            // The password comes from the card: until then mail goes out unauthenticated.
            Some(name) => {
                ctx.on_card(name, format!("msmtp-auth {u}"));
                conf.push_str("auth off\n");
            }
            None => {
                let pass = ctx.secret_line(name).context("mail.auth_pass_secret")?;
                conf.push_str(&format!(
                    "auth on\nuser {u}\npassword {}\n",
                    msmtp_quote(&pass)
                ));
            }
        },
    }
    write_file(tree, ctx, MSMTPRC, conf, 0o600, 0, 0)
}

fn apply_ssmtp(tree: &mut Tree, cfg: &Config, hub: &HostPort, ctx: &EditContext) -> Result<()> {
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
        let h = r.mailhub.as_ref().unwrap_or(hub);
        rev.push_str(&format!("{}:{}:{h}\n", r.local, r.from));
    }
    write_file(tree, ctx, REVALIASES, rev, 0o644, 0, 0)
}

impl Section for Config {
    const NAME: &'static str = "mail";
    const CAPTURED: &'static [&'static str] = &["etc/aliases"];

    /// With a relay: the program and a `sendmail` (cron and the operations scripts mail
    /// through it).
    fn needs(&self, _all: &Sections) -> Vec<Need> {
        if self.mailhub.is_none() {
            return Vec::new();
        }
        let by = format!("[mail] program = {:?}", self.program.name());
        match self.program {
            Program::Msmtp => vec![
                Need {
                    by: by.clone(),
                    paths: &["usr/bin/msmtp"],
                    package: "msmtp-mta, which depends on msmtp",
                },
                Need {
                    by,
                    paths: &["usr/bin/sendmail", "usr/sbin/sendmail"],
                    package: "msmtp-mta, which depends on msmtp",
                },
            ],
            Program::Ssmtp => vec![
                Need {
                    by: by.clone(),
                    paths: &["usr/bin/ssmtp", "usr/sbin/ssmtp"],
                    package: "ssmtp is only in the AUR: use a tarball that has it, or the default program = \"msmtp\" with msmtp-mta",
                },
                Need {
                    by,
                    paths: &["usr/bin/sendmail", "usr/sbin/sendmail"],
                    package: "ssmtp's sendmail",
                },
            ],
        }
    }

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        // A value of ssmtp.conf: one word, no comment sign, no ':'.
        let value = |v: &str| is_word(v) && !v.contains(['#', ':']);
        let pass = at.key_as_written(&["mail"], &["auth_pass_secret", "password_secret"]);
        if self.auth_pass_secret.is_some() && self.auth_user.is_none() {
            return Err(at.err(&["mail", pass], &"needs `auth_user` (the relay account)"));
        }
        at.declared(&["mail", pass], &self.auth_pass_secret)?;
        if self.mailhub.is_none() {
            return Ok(());
        }
        if !self.root.contains('@') || !value(&self.root) {
            let msg = format!(
                "{:?}: expected the mail address that receives root's mail",
                self.root
            );
            return Err(at.err(&["mail", "root"], &msg));
        }
        for (k, v) in [
            ("hostname", &self.hostname),
            ("auth_user", &self.auth_user),
            ("rewrite_domain", &self.rewrite_domain),
        ] {
            if let Some(v) = v
                && !value(v)
            {
                let msg = format!("{v:?}: one word without spaces, '#' or ':'");
                return Err(at.err(&["mail", k], &msg));
            }
        }
        if self.use_tls && self.use_starttls {
            let tls = at.key_as_written(&["mail"], &["use_tls", "tls"]);
            return Err(at.err(
                &["mail", tls],
                &"implicit TLS and STARTTLS exclude each other; set one of them to false",
            ));
        }
        let paths: &[&[&str]] = &[&["mail", "revaliases"]];
        for (i, r) in self.revaliases.iter().enumerate() {
            for (k, v) in [("local", &r.local), ("from", &r.from)] {
                if !value(v) {
                    let msg = format!("{v:?}: one word without spaces, '#' or ':'");
                    return Err(at.item_err(paths, i, k, &msg));
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
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::remove;
    use crate::edit::testutil::*;

    fn cfg() -> Config {
        Config {
            program: Program::Ssmtp,
            mailhub: Some("smtp.example.org:587".parse().unwrap()),
            root: "ops@example.org".into(),
            auth_user: Some("hc1@example.org".into()),
            auth_pass_secret: Some("smtp-pass".into()),
            ..Config::default()
        }
    }

    /// The Arch tree with ssmtp (from the AUR) as well.
    fn ssmtp_tree() -> (Tree, Secrets) {
        let (mut t, secrets) = arch_tree();
        stored(&mut t, "usr/bin/ssmtp");
        (t, secrets)
    }

    fn msmtp_cfg() -> Config {
        Config {
            program: Program::Msmtp,
            ..cfg()
        }
    }

    #[test]
    fn writes_msmtprc_root_only_and_alias() {
        let (mut t, secrets) = arch_tree();
        bytes(&mut t, ALIASES, 0o644, "# aliases\nroot: alarm\n");
        let ctx = EditContext::new(TS, &secrets);
        // The default program is msmtp.
        let c: Config = toml::from_str(
            "mailhub = \"smtp.example.org:587\"\nroot = \"ops@example.org\"\n\
             auth_user = \"hc1@example.org\"\npassword_secret = \"smtp-pass\"\n\
             rewrite_domain = \"example.org\"\nhostname = \"hc1-a\"\n",
        )
        .unwrap();
        assert_eq!(c.program, Program::Msmtp);
        apply(&mut t, &c, &ctx).unwrap();
        let want = format!(
            "# Written by hc1img: relay outgoing mail through the cluster's smarthost (msmtp(1)).\n\
             # /usr/bin/sendmail is msmtp (msmtp-mta). Root-only: it may hold the relay password.\n\
             defaults\naliases /etc/aliases\nsyslog LOG_MAIL\ntimeout 30\nallow_from_override on\n\
             domain hc1-a\n\naccount default\nhost smtp.example.org\nport 587\n\
             from %U@example.org\ntls on\ntls_starttls on\nauth on\nuser hc1@example.org\n\
             password \"{SMTP_PASS}\"\n"
        );
        assert_file(&t, MSMTPRC, want.as_bytes(), 0o600, 0, 0);
        assert_file(
            &t,
            ALIASES,
            b"# aliases\nroot: ops@example.org\n",
            0o644,
            0,
            0,
        );
        assert!(t.lookup(b"etc/ssmtp").is_none());
    }

    #[test]
    fn msmtp_tls_modes_card_password_and_quoting() {
        let (mut t, secrets) = arch_tree();
        let mut ctx = EditContext::new(TS, &secrets);
        ctx.card_secrets.insert("smtp-pass".into());
        apply(&mut t, &msmtp_cfg(), &ctx).unwrap();
        let rc = text(&t, MSMTPRC);
        assert!(
            rc.ends_with("from %U@%H\ntls on\ntls_starttls on\nauth off\n"),
            "{rc}"
        );
        assert_eq!(
            ctx.card_actions.borrow().as_slice(),
            [(
                "smtp-pass".to_string(),
                "msmtp-auth hc1@example.org".to_string()
            )]
        );

        let c = Config {
            use_tls: true,
            use_starttls: false,
            auth_user: None,
            auth_pass_secret: None,
            from_line_override: false,
            ..msmtp_cfg()
        };
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &c, &ctx).unwrap();
        let rc = text(&t, MSMTPRC);
        assert!(rc.contains("allow_from_override off\n"), "{rc}");
        assert!(rc.ends_with("tls on\ntls_starttls off\nauth off\n"), "{rc}");
        let c = Config {
            use_tls: false,
            use_starttls: false,
            ..c
        };
        apply(&mut t, &c, &ctx).unwrap();
        assert!(text(&t, MSMTPRC).ends_with("tls off\ntls_starttls off\nauth off\n"));

        assert_eq!(msmtp_quote(r#"a b"c\d"#), r#""a b\"c\\d""#);
    }

    #[test]
    fn a_program_not_in_the_image_names_the_package() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        remove(&mut t, &ctx, "usr/bin/sendmail").unwrap();
        let sections = |mail: Config| Sections {
            mail,
            ..Sections::default()
        };
        let e = super::super::check_needs(&sections(msmtp_cfg()), &t)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[mail] program = \"msmtp\" needs /usr/bin/sendmail (msmtp-mta, which depends on msmtp)")
                && e.contains("add the packages to [packages] install"),
            "{e}"
        );
        let (t, _) = arch_tree();
        super::super::check_needs(&sections(msmtp_cfg()), &t).unwrap();
        let e = super::super::check_needs(&sections(cfg()), &t)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[mail] program = \"ssmtp\" needs /usr/bin/ssmtp (ssmtp is only in the AUR"),
            "{e}"
        );
        // Nothing is needed without a relay.
        super::super::check_needs(&sections(Config::default()), &t).unwrap();
    }

    #[test]
    fn writes_ssmtp_files_and_alias() {
        let (mut t, secrets) = ssmtp_tree();
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
            "program = \"ssmtp\"\nmailhub = \"relay.lan:465\"\nroot = \"ops@example.org\"\ntls = true\n\
             starttls = false\nrewrite_domain = \"example.org\"\n",
        )
        .unwrap();
        let (mut t, secrets) = ssmtp_tree();
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
        let (mut t, secrets) = ssmtp_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert!(t.lookup(b"etc/ssmtp").is_none());
        assert!(t.lookup(ALIASES.as_bytes()).is_none());

        let g = text(&t, "etc/group").replace("mail:x:12:\n", "");
        update_file(&mut t, &ctx, "etc/group", g).unwrap();
        let e = apply(&mut t, &cfg(), &ctx).unwrap_err().to_string();
        assert!(e.contains("`mail` group"), "{e}");

        let (mut t, _) = ssmtp_tree();
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
