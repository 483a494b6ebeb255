//! Accounts: remove the tarball's default users, lock (or set) root's password, create system
//! groups and the cluster's admin users with password hash, SSH keys and sudo.
//!
//! Edits the four shadow-suite files (`passwd(5)`, `shadow(5)`, `group(5)`, `gshadow(5)`) so
//! they stay consistent: `pwck -r` and `grpck -r` (shadow-utils) find nothing to fix. Locked
//! passwords are written as `!` (what Arch's `useradd` writes); password hashes come only from
//! secrets and must be crypt(3) strings: SHA-512 (`$6$`) or yescrypt (`$y$`).

use serde::{Deserialize, Serialize};

use anyhow::{Context, Result, bail};

use super::{EditInputs, Locator, Section, Sections};
use crate::edit::accounts::{format_colon_file, parse_colon_file};
use crate::edit::{EditContext, mkdir_p, read_text, rel, update_file, write_file};
use crate::tree::{NodeKind, Tree};
use crate::values::{is_user_name, is_word};
use std::collections::BTreeSet;

/// The `[users]` profile section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Apply this section. Default true; `false` leaves the rootfs's account files as they are.
    #[serde(skip_serializing_if = "super::is_true")]
    pub enable: bool,
    /// Users to delete: their passwd/shadow lines, their private group, their membership in
    /// other groups, their home directory and `/var/spool/mail/NAME`. A user the tarball does
    /// not have is only noted. Default: `["alarm"]`.
    pub remove: Vec<String>,
    /// Secret holding root's password as a crypt hash (`$6$…`/`$y$…`). Unset: root's password
    /// is locked (`!`), so only the admin users (SSH keys + sudo) can get in.
    pub root_password_secret: Option<String>,
    /// Groups to create (as system groups, gid allocated downwards from 999) when the rootfs
    /// lacks them, e.g. `["docker"]`. Any group in a user's `groups` must exist or be here.
    pub create_groups: Vec<String>,
    /// Users to add.
    pub add: Vec<User>,
    /// Write `/etc/sudoers.d/wheel` (0440) with `%wheel ALL=(ALL:ALL) ALL`. Default false.
    pub sudo_wheel: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            remove: vec!["alarm".to_string()],
            root_password_secret: None,
            create_groups: Vec::new(),
            add: Vec::new(),
            sudo_wheel: false,
        }
    }
}

/// One user to add (`[[users.add]]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct User {
    /// Login name: `[a-z_][a-z0-9_-]*`, at most 32 characters. Required.
    pub name: String,
    /// User id. Default 1000 (free once `alarm` is removed).
    pub uid: u32,
    /// Id of the user's private group (named like the user, created). Default: the uid.
    pub gid: Option<u32>,
    /// GECOS comment. Default empty.
    pub comment: String,
    /// Home directory, created 0700 and owned by the user. Default `/home/NAME`.
    pub home: Option<String>,
    /// Login shell. Default `/bin/bash`.
    pub shell: String,
    /// Supplementary groups, e.g. `["wheel", "docker"]`; each must exist in the rootfs or be
    /// listed in `create_groups`.
    pub groups: Vec<String>,
    /// Secret holding the password as a crypt hash (`$6$…` or `$y$…`). Unset: locked (`!`),
    /// key-only login.
    pub password_secret: Option<String>,
    /// Lines for `~/.ssh/authorized_keys` (0600, directory 0700, owned by the user).
    pub authorized_keys: Vec<String>,
}

impl Default for User {
    fn default() -> Self {
        User {
            name: String::new(),
            uid: 1000,
            gid: None,
            comment: String::new(),
            home: None,
            shell: "/bin/bash".to_string(),
            groups: Vec::new(),
            password_secret: None,
            authorized_keys: Vec::new(),
        }
    }
}

impl User {
    pub fn home_dir(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

/// The four account databases, parsed.
struct Db {
    passwd: Vec<Vec<String>>,
    shadow: Vec<Vec<String>>,
    group: Vec<Vec<String>>,
    gshadow: Vec<Vec<String>>,
}

const FIELDS: [(&str, usize); 4] = [
    ("etc/passwd", 7),
    ("etc/shadow", 9),
    ("etc/group", 4),
    ("etc/gshadow", 4),
];

impl Db {
    fn load(tree: &Tree) -> Result<Db> {
        let mut files = Vec::new();
        for (path, n) in FIELDS {
            let lines = parse_colon_file(&read_text(tree, path)?);
            for (i, l) in lines.iter().enumerate() {
                if l.len() != n {
                    bail!(
                        "/{path} line {}: expected {n} `:`-separated fields, found {}",
                        i + 1,
                        l.len()
                    );
                }
            }
            files.push(lines);
        }
        let gshadow = files.pop().unwrap_or_default();
        let group = files.pop().unwrap_or_default();
        let shadow = files.pop().unwrap_or_default();
        let passwd = files.pop().unwrap_or_default();
        Ok(Db {
            passwd,
            shadow,
            group,
            gshadow,
        })
    }

    fn save(&self, tree: &mut Tree, ctx: &EditContext) -> Result<()> {
        update_file(tree, ctx, "etc/passwd", format_colon_file(&self.passwd))?;
        update_file(tree, ctx, "etc/shadow", format_colon_file(&self.shadow))?;
        update_file(tree, ctx, "etc/group", format_colon_file(&self.group))?;
        update_file(tree, ctx, "etc/gshadow", format_colon_file(&self.gshadow))?;
        // The hashes live in shadow/gshadow: never readable by group or others.
        for p in ["etc/shadow", "etc/gshadow"] {
            if let Some(id) = tree.lookup(p.as_bytes()) {
                let m = &mut tree.node_mut(id).meta;
                if m.perm & 0o077 != 0 {
                    ctx.note(format!("users: /{p} was mode {:04o}; made 0600", m.perm));
                    m.perm = 0o600;
                }
            }
        }
        Ok(())
    }

    fn user(&self, name: &str) -> Option<&Vec<String>> {
        self.passwd.iter().find(|l| l[0] == name)
    }

    fn group_by_name(&self, name: &str) -> Option<&Vec<String>> {
        self.group.iter().find(|l| l[0] == name)
    }

    fn group_by_gid(&self, gid: u32) -> Option<&Vec<String>> {
        self.group.iter().find(|l| l[2] == gid.to_string())
    }

    fn add_group(&mut self, name: &str, gid: u32) {
        self.group.push(vec![
            name.into(),
            "x".into(),
            gid.to_string(),
            String::new(),
        ]);
        self.gshadow
            .push(vec![name.into(), "!".into(), String::new(), String::new()]);
    }

    fn remove_group(&mut self, name: &str) {
        self.group.retain(|l| l[0] != name);
        self.gshadow.retain(|l| l[0] != name);
    }

    /// Add `user` to `group`'s member list in group and gshadow (a group missing from
    /// gshadow gets its line there, as `grpck` expects).
    fn add_member(&mut self, group: &str, user: &str) {
        if !self.gshadow.iter().any(|l| l[0] == group) {
            let members = self
                .group_by_name(group)
                .map(|g| g[3].clone())
                .unwrap_or_default();
            self.gshadow
                .push(vec![group.into(), "!".into(), String::new(), members]);
        }
        for l in self.group.iter_mut().chain(self.gshadow.iter_mut()) {
            if l[0] == group {
                l[3] = with_member(&l[3], user);
            }
        }
    }
}

fn members(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').filter(|m| !m.is_empty())
}

fn with_member(list: &str, user: &str) -> String {
    let mut v: Vec<&str> = members(list).collect();
    if !v.contains(&user) {
        v.push(user);
    }
    v.join(",")
}

fn without_member(list: &str, user: &str) -> String {
    members(list)
        .filter(|m| *m != user)
        .collect::<Vec<_>>()
        .join(",")
}

/// Check `name` is a portable login/group name.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    if !is_user_name(name) {
        bail!(
            "{field} = {name:?} is not a valid name (lower-case letters, digits, `_`, `-`, \
             starting with a letter or `_`, at most 32 characters)"
        );
    }
    Ok(())
}

/// Read secret `name` and check it is a SHA-512 or yescrypt crypt hash. Errors name the
/// secret, never its value.
pub fn password_hash(ctx: &EditContext, secret: &str) -> Result<String> {
    let h = ctx.secret_line(secret)?;
    let ok = (h.starts_with("$6$") || h.starts_with("$y$"))
        && h.len() >= 20
        && h[3..].contains('$')
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./$=,".contains(&b));
    if !ok {
        bail!(
            "secret {secret:?} is not a SHA-512 (`$6$…`) or yescrypt (`$y$…`) crypt hash \
             (plaintext?); store the output of `mkpasswd -m sha-512` or `mkpasswd -m yescrypt`"
        );
    }
    Ok(h)
}

/// The shadow password field of `user`: the hash of a baked secret; `!` (locked, key-only
/// login) without a secret, or when the secret comes from the card, whose first boot sets it
/// (`chpasswd -e`).
fn account_password(ctx: &EditContext, user: &str, secret: Option<&str>) -> Result<String> {
    match secret {
        Some(s) if ctx.baked(s) => password_hash(ctx, s),
        Some(s) => {
            ctx.on_card(s, format!("password {user}"));
            Ok("!".to_string())
        }
        None => Ok("!".to_string()),
    }
}

/// Days since the epoch, for shadow's "last change" field.
fn days(ctx: &EditContext) -> String {
    (ctx.timestamp.max(0) / 86_400).to_string()
}

fn remove_user(tree: &mut Tree, ctx: &EditContext, db: &mut Db, name: &str) -> Result<()> {
    let Some(line) = db.user(name).cloned() else {
        ctx.note(format!(
            "users.remove: no user {name:?} in the rootfs, nothing removed"
        ));
        return Ok(());
    };
    let uid: u32 = line[2]
        .parse()
        .with_context(|| format!("/etc/passwd: bad uid for user {name:?}"))?;
    let gid = line[3].clone();
    db.passwd.retain(|l| l[0] != name);
    db.shadow.retain(|l| l[0] != name);
    for l in db.group.iter_mut() {
        l[3] = without_member(&l[3], name);
    }
    for l in db.gshadow.iter_mut() {
        l[2] = without_member(&l[2], name);
        l[3] = without_member(&l[3], name);
    }
    let private = db
        .group
        .iter()
        .any(|g| g[0] == name && g[2] == gid && g[3].is_empty());
    if private && !db.passwd.iter().any(|l| l[3] == gid) {
        db.remove_group(name);
    } else if db.group_by_name(name).is_some() {
        ctx.note(format!(
            "users.remove: group {name:?} kept (not {name}'s private group or still used)"
        ));
    }
    let home = rel(&line[5]).ok();
    if let Some(home) = home {
        match tree.lookup(home.as_bytes()) {
            Some(id) if tree.node(id).kind.is_dir() && tree.node(id).meta.uid == uid => {
                crate::edit::remove(tree, ctx, &home)?;
            }
            Some(_) => ctx.note(format!(
                "users.remove: /{home} of {name:?} is not a directory owned by it; left alone"
            )),
            None => {}
        }
    }
    crate::edit::remove(tree, ctx, &format!("var/spool/mail/{name}"))?;
    Ok(())
}

fn allocate_system_gid(db: &Db) -> Result<u32> {
    (500..=999u32)
        .rev()
        .find(|g| db.group_by_gid(*g).is_none())
        .context("users.create_groups: no free system gid between 500 and 999")
}

fn add_user(tree: &mut Tree, ctx: &EditContext, db: &mut Db, u: &User) -> Result<()> {
    let field = format!("users.add {:?}", u.name);
    check_name("users.add.name", &u.name)?;
    if u.uid == 0 {
        bail!("{field}: uid 0 is root's; pick another uid");
    }
    if db.user(&u.name).is_some() {
        bail!("{field}: a user of that name already exists in the rootfs");
    }
    if let Some(l) = db.passwd.iter().find(|l| l[2] == u.uid.to_string()) {
        bail!("{field}: uid {} is already used by user {:?}", u.uid, l[0]);
    }
    let gid = u.gid.unwrap_or(u.uid);
    match (db.group_by_name(&u.name), db.group_by_gid(gid)) {
        (Some(g), _) if g[2] != gid.to_string() => bail!(
            "{field}: group {:?} already exists with gid {}, not {gid}",
            u.name,
            g[2]
        ),
        (Some(_), _) => {}
        (None, Some(g)) => bail!("{field}: gid {gid} is already used by group {:?}", g[0]),
        (None, None) => db.add_group(&u.name, gid),
    }
    let home = u.home_dir();
    let home_rel = rel(&home).with_context(|| format!("{field}: bad home"))?;
    for (what, v) in [
        ("comment", &u.comment),
        ("home", &home),
        ("shell", &u.shell),
    ] {
        if v.contains([':', '\n']) || v.chars().any(char::is_control) {
            bail!("{field}: {what} must not contain `:` or control characters");
        }
    }
    if !u.shell.starts_with('/') || !home.starts_with('/') {
        bail!("{field}: shell and home must be absolute paths");
    }
    for g in &u.groups {
        if db.group_by_name(g).is_none() {
            bail!(
                "{field}: supplementary group {g:?} does not exist in the rootfs; add it to \
                 users.create_groups"
            );
        }
        db.add_member(g, &u.name);
    }
    let pw = account_password(ctx, &u.name, u.password_secret.as_deref())
        .with_context(|| format!("{field}: password_secret"))?;
    if pw == "!" && u.authorized_keys.is_empty() {
        ctx.warn(match &u.password_secret {
            Some(s) => format!(
                "{field}: no password hash in the image and no authorized_keys: nobody can log \
                 in as {} until the node's card brings one (`hc1img seed --secret {s}=FILE`)",
                u.name
            ),
            None => format!(
                "{field}: no password_secret and no authorized_keys: nobody can log in as {}",
                u.name
            ),
        });
    }
    db.passwd.push(vec![
        u.name.clone(),
        "x".into(),
        u.uid.to_string(),
        gid.to_string(),
        u.comment.clone(),
        home.clone(),
        u.shell.clone(),
    ]);
    db.shadow.push(vec![
        u.name.clone(),
        pw,
        days(ctx),
        "0".into(),
        "99999".into(),
        "7".into(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    if let Some(id) = tree.lookup(home_rel.as_bytes()) {
        let owner = tree.node(id).meta.uid;
        if owner != u.uid {
            bail!(
                "{field}: home {home} already exists in the rootfs, owned by uid {owner}; \
                 choose a home directory of its own"
            );
        }
    }
    mkdir_p(tree, ctx, &home_rel, 0o700, u.uid, gid, true)?;
    if !u.authorized_keys.is_empty() {
        let mut keys = String::new();
        for (i, k) in u.authorized_keys.iter().enumerate() {
            let k = k.trim();
            if k.is_empty() || k.contains(['\n', '\r']) {
                bail!(
                    "{field}: authorized_keys[{i}] must be one non-empty line (one key per \
                     entry)"
                );
            }
            keys.push_str(k);
            keys.push('\n');
        }
        let ssh = format!("{home_rel}/.ssh");
        mkdir_p(tree, ctx, &ssh, 0o700, u.uid, gid, true)?;
        write_file(
            tree,
            ctx,
            &format!("{ssh}/authorized_keys"),
            keys,
            0o600,
            u.uid,
            gid,
        )?;
    }
    Ok(())
}

/// Apply the `[users]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if !cfg.enable {
        return Ok(());
    }
    let mut db = Db::load(tree)?;
    for name in &cfg.remove {
        if name == "root" {
            bail!("users.remove: refusing to remove root");
        }
        remove_user(tree, ctx, &mut db, name)?;
    }

    let root_pw = account_password(ctx, "root", cfg.root_password_secret.as_deref())
        .context("users.root_password_secret")?;
    let root = db
        .shadow
        .iter_mut()
        .find(|l| l[0] == "root")
        .context("/etc/shadow has no root entry; the rootfs is broken")?;
    root[1] = root_pw;
    root[2] = days(ctx);

    for g in &cfg.create_groups {
        check_name("users.create_groups", g)?;
        if db.group_by_name(g).is_none() {
            let gid = allocate_system_gid(&db)?;
            db.add_group(g, gid);
        }
    }

    let mut seen = std::collections::BTreeSet::new();
    for u in &cfg.add {
        if !seen.insert(u.name.as_str()) {
            bail!("users.add: user {:?} is listed twice", u.name);
        }
        add_user(tree, ctx, &mut db, u)?;
    }
    db.save(tree, ctx)?;

    if cfg.sudo_wheel {
        if db.group_by_name("wheel").is_none() {
            bail!("users.sudo_wheel: the rootfs has no `wheel` group");
        }
        mkdir_p(tree, ctx, "etc/sudoers.d", 0o750, 0, 0, false)?;
        write_file(
            tree,
            ctx,
            "etc/sudoers.d/wheel",
            "# Written by hc1img: members of wheel may run any command as any user.\n\
             %wheel ALL=(ALL:ALL) ALL\n",
            0o440,
            0,
            0,
        )?;
    }
    Ok(())
}

/// Whether any account in the tree's passwd has a non-empty `~/.ssh/authorized_keys`.
pub fn any_authorized_keys(tree: &Tree) -> Result<bool> {
    let text = read_text(tree, "etc/passwd")?;
    for l in parse_colon_file(&text) {
        if l.len() < 7 {
            continue;
        }
        let Ok(home) = rel(&l[5]) else { continue };
        if let Some(id) = tree.lookup(format!("{home}/.ssh/authorized_keys").as_bytes())
            && let NodeKind::File(d) = &tree.node(id).kind
            && d.size() > 0
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Section for Config {
    const NAME: &'static str = "users";
    const CAPTURED: &'static [&'static str] =
        &["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"];

    fn check(&self, _all: &Sections, at: &dyn Locator) -> Result<()> {
        for (i, r) in self.remove.iter().enumerate() {
            if !is_user_name(r) || r == "root" {
                let msg = format!("[{i}] {r:?}: not a removable user name");
                return Err(at.err(&["users", "remove"], &msg));
            }
        }
        at.declared(
            &["users", "root_password_secret"],
            &self.root_password_secret,
        )?;
        for (i, g) in self.create_groups.iter().enumerate() {
            if !is_user_name(g) {
                let msg = format!("[{i}] {g:?}: group names are [a-z_][a-z0-9_-]* (at most 32)");
                return Err(at.err(&["users", "create_groups"], &msg));
            }
        }
        let paths: &[&[&str]] = &[&["users", "add"]];
        let mut names = BTreeSet::new();
        let mut uids = BTreeSet::new();
        for (i, a) in self.add.iter().enumerate() {
            let here = |k: &str, msg: String| at.item_err(paths, i, k, &msg);
            if a.name.is_empty() {
                return Err(here("name", "missing required key `name`".to_string()));
            }
            if !is_user_name(&a.name) || a.name == "root" {
                return Err(here(
                    "name",
                    format!(
                        "{:?}: user names are [a-z_][a-z0-9_-]* (at most 32), not root",
                        a.name
                    ),
                ));
            }
            if !names.insert(a.name.clone()) {
                return Err(here("name", format!("user {:?} is added twice", a.name)));
            }
            if self.remove.contains(&a.name) {
                return Err(here(
                    "name",
                    format!("user {:?} is also in users.remove", a.name),
                ));
            }
            if a.uid == 0 || a.uid >= 60000 {
                return Err(here("uid", format!("{}: use 1..59999", a.uid)));
            }
            if !uids.insert(a.uid) {
                return Err(here("uid", format!("uid {} is used twice", a.uid)));
            }
            if let Some(g) = a.gid
                && (g == 0 || g >= 60000)
            {
                return Err(here("gid", format!("{g}: use 1..59999")));
            }
            for g in &a.groups {
                if !is_user_name(g) {
                    return Err(here("groups", format!("{g:?}: not a group name")));
                }
            }
            if a.comment.contains([':', '\n', '\r']) {
                return Err(here(
                    "comment",
                    "one line without ':' (it goes into /etc/passwd)".to_string(),
                ));
            }
            if !a.shell.starts_with('/') || !is_word(&a.shell) || a.shell.contains(':') {
                return Err(here(
                    "shell",
                    format!("{:?}: expected an absolute path", a.shell),
                ));
            }
            if let Some(h) = &a.home
                && (!h.starts_with('/') || !is_word(h) || h.contains(':') || h.contains("/.."))
            {
                return Err(here("home", format!("{h:?}: expected an absolute path")));
            }
            if let Some(msg) = a
                .password_secret
                .as_deref()
                .and_then(|n| at.undeclared_secret(n))
            {
                return Err(here("password_secret", msg));
            }
            for k in &a.authorized_keys {
                let ok = k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-");
                if !ok || k.contains(['\n', '\r']) {
                    return Err(here(
                        "authorized_keys",
                        "each element is one public key line (\"ssh-ed25519 AAAA… comment\")"
                            .to_string(),
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
        _: &EditInputs,
    ) -> Result<()> {
        apply(tree, self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::testutil::*;

    fn admin() -> User {
        User {
            name: "admin".into(),
            uid: 1000,
            groups: vec!["wheel".into(), "docker".into()],
            password_secret: Some("admin-hash".into()),
            authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@desk".into()],
            ..User::default()
        }
    }

    fn cfg() -> Config {
        Config {
            create_groups: vec!["docker".into()],
            add: vec![admin()],
            sudo_wheel: true,
            ..Config::default()
        }
    }

    #[test]
    fn removes_alarm_adds_admin_and_stays_consistent() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &cfg(), &ctx).unwrap();

        let passwd = text(&t, "etc/passwd");
        assert!(!passwd.contains("alarm"), "{passwd}");
        assert!(
            passwd.ends_with("admin:x:1000:1000::/home/admin:/bin/bash\n"),
            "{passwd}"
        );
        let shadow = text(&t, "etc/shadow");
        assert!(shadow.starts_with("root:!:19675::::::\n"), "{shadow}");
        assert!(
            shadow.ends_with(&format!("admin:{ADMIN_HASH}:19675:0:99999:7:::\n")),
            "{shadow}"
        );
        assert!(!shadow.contains("alarm"));
        let group = text(&t, "etc/group");
        assert!(!group.contains("alarm"), "{group}");
        assert!(group.contains("\nsys:x:3:bin\n"), "{group}");
        assert!(group.contains("\nwheel:x:998:admin\n"), "{group}");
        assert!(group.contains("\nstorage:x:987:\n"), "{group}");
        assert!(
            group.ends_with("admin:x:1000:\ndocker:x:981:admin\n")
                || group.ends_with("docker:x:981:admin\nadmin:x:1000:\n"),
            "{group}"
        );
        let gshadow = text(&t, "etc/gshadow");
        assert!(gshadow.contains("\nwheel:!*::admin\n"), "{gshadow}");
        assert!(gshadow.contains("\ndocker:!::admin\n"), "{gshadow}");
        assert!(gshadow.contains("\nadmin:!::\n"), "{gshadow}");
        assert!(!gshadow.contains("alarm"));

        // Modes of the databases are kept.
        assert_file(&t, "etc/shadow", shadow.as_bytes(), 0o600, 0, 0);
        assert_file(&t, "etc/passwd", passwd.as_bytes(), 0o644, 0, 0);

        assert!(t.lookup(b"home/alarm").is_none());
        assert!(t.lookup(b"var/spool/mail/alarm").is_none());
        assert_dir(&t, "home/admin", 0o700, 1000, 1000);
        assert_dir(&t, "home/admin/.ssh", 0o700, 1000, 1000);
        assert_file(
            &t,
            "home/admin/.ssh/authorized_keys",
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@desk\n",
            0o600,
            1000,
            1000,
        );
        assert_file(
            &t,
            "etc/sudoers.d/wheel",
            b"# Written by hc1img: members of wheel may run any command as any user.\n\
              %wheel ALL=(ALL:ALL) ALL\n",
            0o440,
            0,
            0,
        );
        assert_dir(&t, "etc/sudoers.d", 0o750, 0, 0);
        assert!(any_authorized_keys(&t).unwrap());

        let dir = tempfile::tempdir().unwrap();
        materialize(&t, dir.path());
        run_check("pwck", dir.path());
        run_check("grpck", dir.path());
    }

    #[test]
    fn a_group_missing_from_gshadow_gets_its_line() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let gs = text(&t, "etc/gshadow").replace("wheel:!*::alarm\n", "");
        update_file(&mut t, &ctx, "etc/gshadow", gs).unwrap();
        apply(&mut t, &cfg(), &ctx).unwrap();
        assert!(text(&t, "etc/gshadow").contains("\nwheel:!::admin\n"));
        let dir = tempfile::tempdir().unwrap();
        materialize(&t, dir.path());
        run_check("grpck", dir.path());
    }

    #[test]
    fn the_oracle_sees_a_broken_database() {
        // The consistency check must be able to fail: a member without a user.
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let g = text(&t, "etc/group").replace("wheel:x:998:alarm", "wheel:x:998:ghost");
        update_file(&mut t, &ctx, "etc/group", g).unwrap();
        let dir = tempfile::tempdir().unwrap();
        materialize(&t, dir.path());
        let r = std::panic::catch_unwind(|| run_check("grpck", dir.path()));
        assert!(
            r.is_err(),
            "grpck accepted a group member that does not exist"
        );
    }

    #[test]
    fn root_hash_from_secret_and_yescrypt() {
        let (mut t, secrets) = arch_tree();
        bytes(&mut t, "etc/shadow", 0o644, SHADOW);
        let ctx = EditContext::new(TS, &secrets);
        let c = Config {
            root_password_secret: Some("yes-hash".into()),
            remove: vec!["alarm".into(), "ghost".into()],
            ..Config::default()
        };
        apply(&mut t, &c, &ctx).unwrap();
        let shadow = text(&t, "etc/shadow");
        assert!(
            shadow.starts_with("root:$y$j9T$abcdefghijklmnop$"),
            "{shadow}"
        );
        let notes = ctx.take_notes();
        assert!(notes.iter().any(|n| n.contains("\"ghost\"")), "{notes:?}");
    }

    #[test]
    fn plaintext_password_is_refused_without_leaking_it() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        let mut c = cfg();
        c.add[0].password_secret = Some("plain".into());
        let e = format!("{:#}", apply(&mut t, &c, &ctx).unwrap_err());
        assert!(e.contains("\"plain\"") && e.contains("plaintext?"), "{e}");
        assert!(!e.contains("hunter2"), "secret leaked: {e}");
        let e = format!(
            "{:#}",
            apply(
                &mut t,
                &Config {
                    root_password_secret: Some("missing".into()),
                    ..Config::default()
                },
                &ctx
            )
            .unwrap_err()
        );
        assert!(e.contains("\"missing\""), "{e}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_requests_are_clear_errors() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    add: vec![User {
                        groups: vec!["docker".into()],
                        ..admin()
                    }],
                    ..Config::default()
                },
                "\"docker\" does not exist",
            ),
            (
                Config {
                    remove: vec![],
                    add: vec![User {
                        groups: vec![],
                        ..admin()
                    }],
                    ..Config::default()
                },
                "uid 1000 is already used by user \"alarm\"",
            ),
            (
                Config {
                    add: vec![User {
                        name: "Bad Name".into(),
                        ..admin()
                    }],
                    ..Config::default()
                },
                "not a valid name",
            ),
            (
                Config {
                    add: vec![User {
                        groups: vec![],
                        gid: Some(998),
                        ..admin()
                    }],
                    ..Config::default()
                },
                "gid 998 is already used by group \"wheel\"",
            ),
            (
                Config {
                    remove: vec!["root".into()],
                    ..Config::default()
                },
                "refusing to remove root",
            ),
            (
                Config {
                    add: vec![User {
                        groups: vec![],
                        home: Some("/usr/bin".into()),
                        ..admin()
                    }],
                    ..Config::default()
                },
                "home /usr/bin already exists in the rootfs, owned by uid 0",
            ),
        ];
        for (c, want) in cases {
            let (mut t, secrets) = arch_tree();
            let ctx = EditContext::new(TS, &secrets);
            let e = format!("{:#}", apply(&mut t, &c, &ctx).unwrap_err());
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn config_parses_from_toml_with_defaults() {
        let c: Config = toml::from_str(
            "create_groups = [\"docker\"]\n[[add]]\nname = \"admin\"\ngroups = [\"wheel\"]\n",
        )
        .unwrap();
        assert_eq!(c.remove, vec!["alarm".to_string()]);
        assert_eq!(c.add[0].uid, 1000);
        assert_eq!(c.add[0].shell, "/bin/bash");
        assert_eq!(c.add[0].home_dir(), "/home/admin");
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
