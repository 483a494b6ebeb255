//! sshd hardening: a drop-in that forbids root logins and, once some account has SSH keys,
//! password logins.
//!
//! `sshd_config(5)`: the first value of a keyword wins and `Include` reads files in place, so
//! the main file must include `sshd_config.d/*.conf` before its own settings. Arch's does
//! (`Include /etc/ssh/sshd_config.d/*.conf` near the top); when a rootfs's does not, the line
//! is added as the first line.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::{
    EditContext, check_one_line, mkdir_p, read_text_optional, update_file, write_file,
};
use crate::tree::Tree;

pub const MAIN: &str = "etc/ssh/sshd_config";
pub const DROP_IN: &str = "etc/ssh/sshd_config.d/10-hc1img.conf";
const INCLUDE: &str = "Include /etc/ssh/sshd_config.d/*.conf";

/// The `[ssh]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Write the drop-in. Default true.
    pub enable: bool,
    /// `PermitRootLogin`. Default `no`.
    pub permit_root_login: String,
    /// `PasswordAuthentication`: true/false, or unset = `no` as soon as any account in the
    /// rootfs has a non-empty `~/.ssh/authorized_keys` (apply after `users`), else left alone.
    pub password_authentication: Option<bool>,
    /// Further `Keyword value` lines for the drop-in.
    pub extra: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            permit_root_login: "no".into(),
            password_authentication: None,
            extra: Vec::new(),
        }
    }
}

/// Whether `text` (an sshd_config) includes the drop-in directory.
fn includes_drop_ins(text: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split_whitespace();
        matches!(w.next(), Some(k) if k.eq_ignore_ascii_case("include"))
            && w.any(|a| a.ends_with("sshd_config.d/*.conf") || a == "sshd_config.d/*")
    })
}

/// Apply the `[ssh]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    if !["no", "yes", "prohibit-password", "forced-commands-only"]
        .contains(&cfg.permit_root_login.as_str())
    {
        bail!(
            "ssh.permit_root_login = {:?} must be no, yes, prohibit-password or \
             forced-commands-only",
            cfg.permit_root_login
        );
    }
    let password = match cfg.password_authentication {
        Some(b) => Some(b),
        None => {
            if super::users::any_authorized_keys(tree)? {
                Some(false)
            } else {
                ctx.note("ssh: no account has authorized_keys, so password logins stay allowed");
                None
            }
        }
    };
    let mut s = format!(
        "# Written by hc1img.\nPermitRootLogin {}\n",
        cfg.permit_root_login
    );
    if let Some(b) = password {
        s.push_str(&format!(
            "PasswordAuthentication {}\n",
            if b { "yes" } else { "no" }
        ));
    }
    for (i, l) in cfg.extra.iter().enumerate() {
        check_one_line(&format!("ssh.extra[{i}]"), l)?;
        if l.trim().is_empty() {
            bail!("ssh.extra[{i}] is empty");
        }
        s.push_str(l.trim());
        s.push('\n');
    }
    mkdir_p(tree, ctx, "etc/ssh/sshd_config.d", 0o755, 0, 0, false)?;
    write_file(tree, ctx, DROP_IN, s, 0o644, 0, 0)?;

    match read_text_optional(tree, MAIN)? {
        Some(main) if includes_drop_ins(&main) => {}
        Some(main) => {
            update_file(
                tree,
                ctx,
                MAIN,
                format!("# Added by hc1img: drop-ins first (first value wins).\n{INCLUDE}\n{main}"),
            )?;
        }
        None => ctx.note("ssh: /etc/ssh/sshd_config is not in the rootfs (openssh missing?)"),
    }
    Ok(())
}

impl Section for Config {
    const NAME: &'static str = "ssh";
    const CAPTURED: &'static [&'static str] = &["etc/ssh/sshd_config"];

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        const PRL: &[&str] = &["no", "yes", "prohibit-password", "forced-commands-only"];
        if !PRL.contains(&self.permit_root_login.as_str()) {
            let hint = crate::values::did_you_mean(&self.permit_root_login, PRL)
                .map(|x| format!("; did you mean {x:?}?"))
                .unwrap_or_default();
            let msg = format!(
                "{:?}: expected \"no\", \"yes\", \"prohibit-password\" or \"forced-commands-only\"{hint}",
                self.permit_root_login
            );
            return Err(at.err(&["ssh", "permit_root_login"], &msg));
        }
        for (i, l) in self.extra.iter().enumerate() {
            if l.trim().is_empty() || l.chars().any(char::is_control) {
                let msg = format!("[{i}] {l:?}: one `Keyword value` line per element");
                return Err(at.err(&["ssh", "extra"], &msg));
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
    use crate::edit::testutil::*;

    #[test]
    fn drop_in_follows_the_keys() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert_file(
            &t,
            DROP_IN,
            b"# Written by hc1img.\nPermitRootLogin no\n",
            0o644,
            0,
            0,
        );
        assert!(
            ctx.take_notes()
                .iter()
                .any(|n| n.contains("password logins"))
        );
        // Arch's main file already includes the drop-ins: unchanged.
        assert_eq!(text(&t, MAIN), SSHD_CONFIG);

        bytes(
            &mut t,
            "home/alarm/.ssh/authorized_keys",
            0o600,
            "ssh-ed25519 AAAA k\n",
        );
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert_file(
            &t,
            DROP_IN,
            b"# Written by hc1img.\nPermitRootLogin no\nPasswordAuthentication no\n",
            0o644,
            0,
            0,
        );
    }

    #[test]
    fn adds_the_include_when_missing() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let old = SSHD_CONFIG.replace("Include /etc/ssh/sshd_config.d/*.conf\n", "");
        bytes(&mut t, MAIN, 0o644, &old);
        let c = Config {
            password_authentication: Some(true),
            extra: vec!["MaxAuthTries 3".into()],
            ..Config::default()
        };
        apply(&mut t, &c, &ctx).unwrap();
        let want = format!(
            "# Added by hc1img: drop-ins first (first value wins).\n\
             Include /etc/ssh/sshd_config.d/*.conf\n{old}"
        );
        assert_file(&t, MAIN, want.as_bytes(), 0o644, 0, 0);
        assert!(text(&t, DROP_IN).ends_with("PasswordAuthentication yes\nMaxAuthTries 3\n"));
        assert!(includes_drop_ins(&text(&t, MAIN)));
        let bad = Config {
            permit_root_login: "maybe".into(),
            ..Config::default()
        };
        assert!(apply(&mut t, &bad, &ctx).is_err());
    }
}
