//! systemd units in an image: where unit files live, enabling a unit the way
//! `systemctl enable` does (a `WantedBy=` symlink in `TARGET.wants/`, `systemd.unit(5)`), and
//! installing the units the sections write.

use anyhow::{Result, bail};

use super::{EditContext, exists, mkdir_p, symlink, write_file};
use crate::tree::Tree;
use crate::values::UnitName;

/// Where systemd looks for a unit file in an image: the admin's and the vendor's directory.
const UNIT_DIRS: &[&str] = &["etc/systemd/system", "usr/lib/systemd/system"];

/// The path of unit `unit` in the tree, if it is installed.
pub fn find_unit(tree: &Tree, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|p| exists(tree, p))
}

/// Check a unit name is one plain file name with a unit suffix.
pub fn check_unit_name(field: &str, unit: &str) -> Result<()> {
    UnitName::new(unit)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// Enable `unit` the way `systemctl enable` does for `WantedBy=target`: a symlink
/// `/etc/systemd/system/<target>.wants/<unit>` to the unit file. Returns `false` (and
/// changes nothing) when the unit is not installed in the tree.
pub fn enable_unit(tree: &mut Tree, ctx: &EditContext, unit: &str, target: &str) -> Result<bool> {
    check_unit_name("unit", unit)?;
    check_unit_name("target", target)?;
    let Some(path) = find_unit(tree, unit) else {
        return Ok(false);
    };
    let wants = format!("etc/systemd/system/{target}.wants");
    mkdir_p(tree, ctx, &wants, 0o755, 0, 0, false)?;
    symlink(tree, ctx, &format!("{wants}/{unit}"), &format!("/{path}"))?;
    Ok(true)
}

/// The admin's unit directory (where the operations units go).
pub const ETC_UNITS: &str = "etc/systemd/system";
/// The vendor unit directory (where the first-boot units go).
pub const LIB_UNITS: &str = "usr/lib/systemd/system";

/// Write unit `name` (0644, root) into `dir` ([`ETC_UNITS`] or [`LIB_UNITS`]) and, with
/// `wanted_by`, enable it for that target.
pub fn install_unit(
    tree: &mut Tree,
    ctx: &EditContext,
    dir: &str,
    name: &str,
    text: impl Into<Vec<u8>>,
    wanted_by: Option<&str>,
) -> Result<()> {
    check_unit_name("unit", name)?;
    mkdir_p(tree, ctx, dir, 0o755, 0, 0, false)?;
    write_file(tree, ctx, &format!("{dir}/{name}"), text, 0o644, 0, 0)?;
    if let Some(target) = wanted_by
        && !enable_unit(tree, ctx, name, target)?
    {
        bail!("internal: {name} was written to /{dir} but is not found");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{EditContext, exists};
    use super::*;

    #[test]
    fn enable_unit_needs_the_unit() {
        let (mut t, secrets) = arch_tree();
        let ctx = EditContext::new(TS, &secrets);
        assert!(!enable_unit(&mut t, &ctx, "nope.service", "multi-user.target").unwrap());
        assert!(!exists(
            &t,
            "etc/systemd/system/multi-user.target.wants/nope.service"
        ));
        assert!(enable_unit(&mut t, &ctx, "sshd.service", "multi-user.target").unwrap());
        assert_symlink(
            &t,
            "etc/systemd/system/multi-user.target.wants/sshd.service",
            "/usr/lib/systemd/system/sshd.service",
        );
        assert!(enable_unit(&mut t, &ctx, "../x.service", "multi-user.target").is_err());
    }
}
