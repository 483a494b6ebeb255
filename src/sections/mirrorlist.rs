//! pacman mirrors: `/etc/pacman.d/mirrorlist` from the profile's server list.
//!
//! `pacman.conf(5)`: `Server = URL` lines, tried in order; `$repo` and `$arch` are expanded
//! by pacman (Arch Linux ARM's mirrors use `…/$arch/$repo`).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{EditInputs, Section, Sections};
use crate::edit::{EditContext, write_file};
use crate::tree::Tree;
use crate::values::MirrorUrl;

pub const MIRRORLIST: &str = "etc/pacman.d/mirrorlist";

/// The `[mirrorlist]` profile section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Server URLs in order of preference, e.g.
    /// `http://de.mirror.archlinuxarm.org/$arch/$repo`. Empty (default): the rootfs's list
    /// is kept.
    pub servers: Vec<MirrorUrl>,
}

/// Apply the `[mirrorlist]` section.
pub fn apply(tree: &mut Tree, cfg: &Config, ctx: &EditContext) -> Result<()> {
    if cfg.servers.is_empty() {
        return Ok(());
    }
    let mut s = String::from("# Written by hc1img: pacman tries these in order.\n");
    for (i, url) in cfg.servers.iter().enumerate() {
        let field = format!("mirrorlist.servers[{i}]");
        if !url.contains("$arch") {
            ctx.note(format!(
                "{field} = {url:?} has no `$arch`; fine only for a single-arch mirror"
            ));
        }
        s.push_str(&format!("Server = {url}\n"));
    }
    write_file(tree, ctx, MIRRORLIST, s, 0o644, 0, 0)
}

impl Section for Config {
    const NAME: &'static str = "mirrorlist";

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
    fn writes_servers_in_order() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        apply(&mut t, &Config::default(), &ctx).unwrap();
        assert!(matches!(
            t.node(t.lookup(MIRRORLIST.as_bytes()).unwrap()).kind,
            crate::tree::NodeKind::File(crate::tree::FileData::Stored(_))
        ));
        let c = Config {
            servers: vec![
                "http://de3.mirror.archlinuxarm.org/$arch/$repo"
                    .parse()
                    .unwrap(),
                "http://mirror.archlinuxarm.org/$arch/$repo"
                    .parse()
                    .unwrap(),
            ],
        };
        apply(&mut t, &c, &ctx).unwrap();
        assert_file(
            &t,
            MIRRORLIST,
            b"# Written by hc1img: pacman tries these in order.\n\
Server = http://de3.mirror.archlinuxarm.org/$arch/$repo\n\
Server = http://mirror.archlinuxarm.org/$arch/$repo\n",
            0o644,
            0,
            0,
        );
    }
}
