//! Dependency resolution, the way `pacman -S` resolves a transaction (libalpm `deps.c`:
//! `_alpm_resolvedeps`, `_alpm_resolvedep`; `conflict.c`).
//!
//! - A dependency already satisfied by an installed package (the tarball's local database)
//!   or by a package already chosen pulls in nothing: installed packages are kept and never
//!   upgraded implicitly. An installed package is replaced only when a dependency needs a
//!   version it does not have; the replacement is then the repository package of that name.
//! - Otherwise the first repository (in the configured order) holding a package of that name
//!   whose version satisfies the constraint wins (a literal name match beats providers).
//! - Failing that, a provider: every package of every repository (repository order, then
//!   package name order) whose `provides` satisfy the dependency (versioned dependencies need
//!   versioned provisions). An already-installed provider wins; otherwise pacman asks and
//!   defaults to the first, which is what we take, without asking.
//! - An explicit target that is already installed is kept as it is (like `--needed`).
//! - Cycles are fine: a package is chosen once, before its own dependencies are looked at.
//! - Conflicts (`%CONFLICTS%`, matched against names and provisions) between two chosen
//!   packages, or between a chosen one and an installed one that stays, are errors: pacman
//!   asks to remove the installed package and `--noconfirm` answers no (`sync.c`
//!   `_alpm_sync_prepare`, pacman's `callback.c`), so both refuse.
//! - `-Syu` ([`sysupgrade`], libalpm `sync.c` `alpm_sync_sysupgrade`, `check_replacers`,
//!   `check_literal`): for each installed package in name order, each repository in order:
//!   the packages of that repository whose `%REPLACES%` name the installed one literally (name
//!   and version, never provisions) replace it (pacman asks "Replace X with Y?" and
//!   `--noconfirm` answers yes); a held package on either side is not replaced. Else the
//!   repository's package of the same name, when newer, is an upgrade. The first repository
//!   that has either ends the search. A replaced package is removed by the transaction: it
//!   no longer satisfies anything and conflicts with nothing.
//! - Reverse dependencies (`deps.c` `alpm_checkdeps` with `reversedeps`): an installed
//!   package that stays must still have each dependency that an upgraded or removed package
//!   satisfied before; otherwise the transaction is refused ("installing X breaks dependency
//!   'D' required by Y", as pacman says), naming the way out.
//!
//! The result lists packages in install order: every package after its dependencies (cycles
//! broken at the edge that closes them, deterministically).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

use super::db::Package;
use super::version::{Dep, vercmp};

/// Why a package is installed (pacman's `%REASON%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Explicit,
    Dependency,
}

/// One package to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub pkg: Package,
    pub reason: Reason,
    /// The installed version this one replaces, if any.
    pub upgrades: Option<String>,
    /// Installed packages (`NAME-VERSION`) this one replaces (`%REPLACES%`, [`sysupgrade`]):
    /// the transaction removes them.
    pub removes: Vec<String>,
}

/// What `pacman -Syu` puts into the transaction before resolving (module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sysupgrade {
    /// `NAME>=VERSION` (upgrades) and `NAME=VERSION` (replacers) targets for [`resolve`].
    pub targets: Vec<String>,
    /// Replacer name -> the installed packages (names) it replaces.
    pub replaces: BTreeMap<String, Vec<String>>,
    /// Replacements not made because a package is held (pacman warns "ignoring package
    /// replacement").
    pub held: Vec<String>,
}

/// `pacman -Syu`'s upgrades and replacements (module doc). Packages named in `hold` are
/// left at their installed version (pacman's `IgnorePkg`).
pub fn sysupgrade(
    repos: &[(String, Vec<Package>)],
    installed: &[Package],
    hold: &[String],
) -> Sysupgrade {
    let mut out = Sysupgrade::default();
    let mut local: Vec<&Package> = installed.iter().collect();
    local.sort_by(|a, b| a.name.cmp(&b.name));
    // Replacer name -> the repository it was taken from (pacman: "cannot replace X by Y"
    // when another repository's package of that name is already a replacer).
    let mut replacer_repo: BTreeMap<String, &str> = BTreeMap::new();
    for lp in local {
        for (repo, pkgs) in repos {
            let mut sorted: Vec<&Package> = pkgs
                .iter()
                .filter(|sp| sp.replaces.iter().any(|r| r.literal(&lp.name, &lp.version)))
                .collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            let mut replaced = false;
            for sp in sorted {
                if hold.contains(&sp.name) || hold.contains(&lp.name) {
                    out.held.push(format!(
                        "ignoring package replacement ({} => {}) ([packages] hold)",
                        lp.dir_name(),
                        sp.dir_name()
                    ));
                    continue;
                }
                match replacer_repo.get(&sp.name) {
                    Some(r) if *r != repo.as_str() => continue,
                    Some(_) => {}
                    None => {
                        replacer_repo.insert(sp.name.clone(), repo);
                        out.targets.push(format!("{}={}", sp.name, sp.version));
                        replaced = true;
                    }
                }
                out.replaces
                    .entry(sp.name.clone())
                    .or_default()
                    .push(lp.name.clone());
            }
            if replaced {
                break;
            }
            if let Some(sp) = pkgs.iter().find(|q| q.name == lp.name) {
                if !hold.contains(&lp.name)
                    && vercmp(&sp.version, &lp.version) == std::cmp::Ordering::Greater
                {
                    out.targets.push(format!("{}>={}", sp.name, sp.version));
                }
                break;
            }
        }
    }
    out.targets.sort();
    out
}

/// Resolve `targets` against `repos` (in order) with `installed` kept when possible. An
/// installed package named in `hold` is never replaced: a target or dependency that needs it
/// newer is an error naming it (pacman asks before it ignores an `IgnorePkg` upgrade; with
/// `--noconfirm` it skips the package and then fails on the dependency). `replaces` are the
/// replacements [`sysupgrade`] made (empty outside `-Syu`).
pub fn resolve(
    targets: &[String],
    repos: &[(String, Vec<Package>)],
    installed: &[Package],
    hold: &[String],
    replaces: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Chosen>> {
    let repo_names: Vec<&str> = repos.iter().map(|(n, _)| n.as_str()).collect();
    let removed: BTreeSet<&str> = replaces.values().flatten().map(String::as_str).collect();
    let mut r = Resolver {
        repos,
        hold,
        repo_names,
        installed: installed
            .iter()
            .filter(|p| !removed.contains(p.name.as_str()))
            .map(|p| (p.name.clone(), p))
            .collect(),
        removed: installed
            .iter()
            .filter(|p| removed.contains(p.name.as_str()))
            .map(|p| (p.name.clone(), p))
            .collect(),
        replaces,
        chosen: BTreeMap::new(),
        order: Vec::new(),
    };
    for t in targets {
        let dep = Dep::parse(t);
        if r.chosen.contains_key(&dep.name) {
            if let Some(c) = r.chosen.get_mut(&dep.name) {
                c.reason = Reason::Explicit;
            }
            continue;
        }
        if let Some(p) = r.installed.get(&dep.name)
            && dep.version_ok(&p.version)
        {
            continue;
        }
        let Some(p) = r.find(&dep) else {
            bail!("{t}: not found in {}", r.repo_names.join(", "));
        };
        r.check_hold(&p, t)?;
        r.add(p, Reason::Explicit, &mut vec![t.clone()])?;
    }
    r.check_conflicts()?;
    r.check_reverse_deps()?;
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    let names: Vec<String> = r.order.clone();
    for n in &names {
        r.post_order(n, &mut done, &mut BTreeSet::new(), &mut out);
    }
    Ok(out)
}

struct Resolver<'a> {
    repos: &'a [(String, Vec<Package>)],
    /// Installed packages that stay at their version (`[packages] hold`).
    hold: &'a [String],
    repo_names: Vec<&'a str>,
    /// Installed packages, without those the transaction removes.
    installed: BTreeMap<String, &'a Package>,
    /// Installed packages the transaction removes (replaced).
    removed: BTreeMap<String, &'a Package>,
    replaces: &'a BTreeMap<String, Vec<String>>,
    chosen: BTreeMap<String, Chosen>,
    /// Names in the order they were chosen.
    order: Vec<String>,
}

impl Resolver<'_> {
    /// Refuse to replace an installed package that is held; `why` is the chain that wants it.
    fn check_hold(&self, p: &Package, why: &str) -> Result<()> {
        if let Some(i) = self.installed.get(&p.name)
            && self.hold.contains(&p.name)
        {
            bail!(
                "{why}: needs {} newer than the held {} ([packages] hold): remove it from hold, \
                 or drop what needs it",
                p.name,
                i.dir_name()
            );
        }
        Ok(())
    }

    /// `_alpm_resolvedep`: a literal match in repository order, else the first provider.
    fn find(&self, dep: &Dep) -> Option<Package> {
        for (_, pkgs) in self.repos {
            if let Some(p) = pkgs.iter().find(|p| p.name == dep.name)
                && dep.version_ok(&p.version)
            {
                return Some(p.clone());
            }
        }
        let mut providers = Vec::new();
        for (_, pkgs) in self.repos {
            let mut v: Vec<&Package> = pkgs
                .iter()
                .filter(|p| p.name != dep.name && dep.by_provides(&p.provides))
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            providers.extend(v);
        }
        providers
            .iter()
            .find(|p| self.installed.contains_key(&p.name))
            .or(providers.first())
            .map(|p| (*p).clone())
    }

    /// Satisfied by something chosen, or installed and staying?
    fn satisfied(&self, dep: &Dep) -> bool {
        self.chosen
            .values()
            .any(|c| dep.satisfied_by(&c.pkg.name, &c.pkg.version, &c.pkg.provides))
            || self.installed.values().any(|p| {
                !self.chosen.contains_key(&p.name)
                    && dep.satisfied_by(&p.name, &p.version, &p.provides)
            })
    }

    fn add(&mut self, pkg: Package, reason: Reason, chain: &mut Vec<String>) -> Result<()> {
        let name = pkg.name.clone();
        let upgrades = self.installed.get(&name).map(|p| p.version.clone());
        let removes = self
            .replaces
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|n| self.removed.get(n))
            .map(|p| p.dir_name())
            .collect();
        let deps = pkg.depends.clone();
        self.chosen.insert(
            name.clone(),
            Chosen {
                pkg,
                reason,
                upgrades,
                removes,
            },
        );
        self.order.push(name.clone());
        if chain.last() != Some(&name) {
            chain.push(name.clone());
        }
        for dep in &deps {
            if self.satisfied(dep) {
                continue;
            }
            let Some(p) = self.find(dep) else {
                bail!(
                    "{} -> {dep}: not found in {}",
                    chain.join(" -> "),
                    self.repo_names.join(", ")
                );
            };
            if self.chosen.contains_key(&p.name) {
                // Chosen already, at a version that does not satisfy this dependency.
                bail!(
                    "{} -> {dep}: {} is already chosen for another dependency",
                    chain.join(" -> "),
                    self.chosen[&p.name].pkg.dir_name()
                );
            }
            self.check_hold(&p, &format!("{} -> {dep}", chain.join(" -> ")))?;
            chain.push(p.name.clone());
            self.add(p, Reason::Dependency, chain)?;
            chain.pop();
        }
        Ok(())
    }

    fn check_conflicts(&self) -> Result<()> {
        let chosen: Vec<&Package> = self.chosen.values().map(|c| &c.pkg).collect();
        let staying: Vec<&Package> = self
            .installed
            .values()
            .filter(|p| !self.chosen.contains_key(&p.name))
            .copied()
            .collect();
        for a in &chosen {
            for b in chosen.iter().chain(staying.iter()) {
                if a.name == b.name {
                    continue;
                }
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(c) = x
                        .conflicts
                        .iter()
                        .find(|c| c.satisfied_by(&y.name, &y.version, &y.provides))
                    {
                        let where_y = if y.repo == "local" {
                            "installed in the tarball".to_string()
                        } else {
                            format!("from {}", y.repo)
                        };
                        bail!(
                            "{} conflicts with {} ({c}); {} is {where_y}",
                            x.dir_name(),
                            y.dir_name(),
                            y.name
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// `alpm_checkdeps` with `reversedeps` (module doc): each dependency of an installed
    /// package that stays, which an upgraded or removed package satisfied, must still be
    /// satisfied by what is chosen or stays.
    fn check_reverse_deps(&self) -> Result<()> {
        let staying: Vec<&Package> = self
            .installed
            .values()
            .filter(|p| !self.chosen.contains_key(&p.name))
            .copied()
            .collect();
        let modified: Vec<&Package> = self
            .installed
            .values()
            .filter(|p| self.chosen.contains_key(&p.name))
            .chain(self.removed.values())
            .copied()
            .collect();
        let sat = |d: &Dep, p: &Package| d.satisfied_by(&p.name, &p.version, &p.provides);
        for lp in &staying {
            for d in &lp.depends {
                let Some(cause) = modified.iter().find(|m| sat(d, m)) else {
                    continue; // not satisfied by what changes (maybe already broken)
                };
                if self.chosen.values().any(|c| sat(d, &c.pkg)) || staying.iter().any(|s| sat(d, s))
                {
                    continue;
                }
                let what = match self.chosen.get(&cause.name) {
                    Some(c) => format!("installing {}", c.pkg.dir_name()),
                    None => {
                        let by = self
                            .chosen
                            .values()
                            .find(|c| c.removes.contains(&cause.dir_name()))
                            .map(|c| format!(" (replaced by {})", c.pkg.dir_name()))
                            .unwrap_or_default();
                        format!("removing {}{by}", cause.dir_name())
                    }
                };
                bail!(
                    "{what} breaks dependency '{d}' required by {} (installed in the tarball), as \
                     pacman would refuse: keep {} with `[packages] hold = [\"{}\"]`, or add a \
                     {} that works without it to [packages] install",
                    lp.dir_name(),
                    cause.name,
                    cause.name,
                    lp.name
                );
            }
        }
        Ok(())
    }

    fn post_order(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
        out: &mut Vec<Chosen>,
    ) {
        if done.contains(name) || visiting.contains(name) {
            return;
        }
        let Some(c) = self.chosen.get(name) else {
            return;
        };
        visiting.insert(name.to_string());
        for dep in &c.pkg.depends {
            // The chosen package that satisfies it, if any (first in choice order).
            if let Some(n) = self.order.iter().find(|n| {
                let p = &self.chosen[n.as_str()].pkg;
                dep.satisfied_by(&p.name, &p.version, &p.provides)
            }) {
                self.post_order(n, done, visiting, out);
            }
        }
        visiting.remove(name);
        done.insert(name.to_string());
        out.push(c.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::version::Dep;

    fn pkg(repo: &str, name: &str, ver: &str, deps: &[&str], provides: &[&str]) -> Package {
        Package {
            name: name.into(),
            version: ver.into(),
            repo: repo.into(),
            filename: format!("{name}-{ver}-armv7h.pkg.tar.xz"),
            sha256: "0".repeat(64),
            csize: None,
            arch: "armv7h".into(),
            depends: deps.iter().map(|d| Dep::parse(d)).collect(),
            provides: provides.iter().map(|d| Dep::parse(d)).collect(),
            conflicts: Vec::new(),
            replaces: Vec::new(),
            pgpsig: None,
            as_dependency: false,
            size: None,
        }
    }

    #[test]
    fn upgrades_are_what_pacman_syu_would_take() -> Result<()> {
        let repos = vec![
            (
                "core".into(),
                vec![
                    pkg("core", "libfoo", "1.1-1", &["libbar>=2"], &[]),
                    pkg("core", "libbar", "2-1", &[], &[]),
                    pkg("core", "same", "1-1", &[], &[]),
                    pkg("core", "older", "4-1", &[], &[]),
                ],
            ),
            (
                "extra".into(),
                vec![pkg("extra", "libfoo", "9-1", &[], &[])],
            ),
        ];
        let installed = [
            pkg("local", "libfoo", "1.0-1", &[], &[]),
            pkg("local", "same", "1-1", &[], &[]),
            pkg("local", "older", "5-1", &[], &[]),
            pkg("local", "gone", "1-1", &[], &[]),
        ];
        // The first repository holding the name decides (core's 1.1, not extra's 9).
        let up = sysupgrade(&repos, &installed, &[]).targets;
        assert_eq!(up, ["libfoo>=1.1-1"]);
        let chosen = resolve(&up, &repos, &installed, &[], &BTreeMap::new())?;
        assert_eq!(names(&chosen), ["libbar-2-1", "libfoo-1.1-1"]);
        assert_eq!(chosen[1].upgrades.as_deref(), Some("1.0-1"));
        Ok(())
    }

    #[test]
    fn held_packages_stay_and_what_needs_them_newer_is_refused() -> Result<()> {
        let repos = vec![(
            "core".into(),
            vec![
                pkg("core", "linux-odroid-xu3", "6.6.143-1", &[], &[]),
                pkg("core", "libfoo", "2-1", &[], &[]),
                pkg(
                    "core",
                    "module-pkg",
                    "1-1",
                    &["linux-odroid-xu3>=6.6.140"],
                    &[],
                ),
                pkg("core", "tool", "1-1", &["libfoo"], &[]),
            ],
        )];
        let installed = [
            pkg("local", "linux-odroid-xu3", "6.6.138-1", &[], &[]),
            pkg("local", "libfoo", "1-1", &[], &[]),
        ];
        let hold = vec!["linux-odroid-xu3".to_string()];
        let up = sysupgrade(&repos, &installed, &hold).targets;
        assert_eq!(up, ["libfoo>=2-1"]);
        // What the held version satisfies installs.
        let chosen = resolve(&t(&["tool"]), &repos, &installed, &hold, &BTreeMap::new())?;
        assert_eq!(names(&chosen), ["tool-1-1"]);
        // A dependency on a newer one names the held package and the way out.
        let e = resolve(
            &t(&["module-pkg"]),
            &repos,
            &installed,
            &hold,
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("module-pkg -> linux-odroid-xu3>=6.6.140")
                && e.contains("held linux-odroid-xu3-6.6.138-1")
                && e.contains("[packages] hold"),
            "{e}"
        );
        // So does an explicit target.
        let e = resolve(
            &t(&["linux-odroid-xu3>=6.6.143"]),
            &repos,
            &installed,
            &hold,
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("linux-odroid-xu3>=6.6.143: needs"), "{e}");
        Ok(())
    }

    #[test]
    fn replaces_swap_a_renamed_package_and_broken_reverse_deps_are_refused() -> Result<()> {
        let mut ng = pkg("core", "foo-ng", "2-1", &[], &["foo=2"]);
        ng.replaces = vec![Dep::parse("foo<2")];
        ng.conflicts = vec![Dep::parse("foo")];
        let mut held_ng = pkg("extra", "bar-ng", "1-1", &[], &[]);
        held_ng.replaces = vec![Dep::parse("bar")];
        let repos = vec![
            (
                "core".into(),
                vec![
                    ng.clone(),
                    // A package of the replaced name: the replacement wins (same repository).
                    pkg("core", "foo", "1.5-1", &[], &[]),
                    pkg("core", "libbar", "2-1", &[], &["libbar.so=2"]),
                ],
            ),
            ("extra".into(), vec![held_ng]),
        ];
        let installed = [
            pkg("local", "foo", "1-1", &[], &[]),
            pkg("local", "bar", "1-1", &[], &[]),
            pkg("local", "uses-foo", "1-1", &["foo"], &[]),
        ];
        let hold = vec!["bar".to_string()];
        let up = sysupgrade(&repos, &installed, &hold);
        assert_eq!(up.targets, ["foo-ng=2-1"]);
        assert_eq!(up.replaces["foo-ng"], ["foo"]);
        assert_eq!(up.held.len(), 1, "{:?}", up.held);
        let chosen = resolve(&up.targets, &repos, &installed, &hold, &up.replaces)?;
        assert_eq!(names(&chosen), ["foo-ng-2-1"]);
        assert_eq!(chosen[0].removes, ["foo-1-1"]);
        // uses-foo's `foo` is satisfied by foo-ng's provision: no break. A replacer that
        // does not provide the name breaks it.
        let mut bare = ng.clone();
        bare.provides.clear();
        let repos2 = vec![("core".into(), vec![bare])];
        let up = sysupgrade(&repos2, &installed, &[]);
        let e = resolve(&up.targets, &repos2, &installed, &[], &up.replaces)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("removing foo-1-1 (replaced by foo-ng-2-1) breaks dependency 'foo' required by uses-foo-1-1"),
            "{e}"
        );
        // An upgrade that drops a provision another installed package needs.
        let repos3 = vec![(
            "core".into(),
            vec![pkg("core", "libbar", "2-1", &[], &["libbar.so=2"])],
        )];
        let installed3 = [
            pkg("local", "libbar", "1-1", &[], &["libbar.so=1"]),
            pkg("local", "baz", "1-1", &["libbar.so=1"], &[]),
            // Already broken before: not this transaction's doing.
            pkg("local", "old", "1-1", &["missing"], &[]),
        ];
        let up = sysupgrade(&repos3, &installed3, &[]);
        let e = resolve(&up.targets, &repos3, &installed3, &[], &up.replaces)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "installing libbar-2-1 breaks dependency 'libbar.so=1' required by baz-1-1"
            ) && e.contains("hold = [\"libbar\"]"),
            "{e}"
        );
        // Held, it stays and nothing breaks.
        let up = sysupgrade(&repos3, &installed3, &["libbar".to_string()]);
        assert!(up.targets.is_empty());
        Ok(())
    }

    fn names(v: &[Chosen]) -> Vec<String> {
        v.iter().map(|c| c.pkg.dir_name()).collect()
    }

    fn t(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn versioned_deps_pick_the_repo_that_satisfies_them_and_order_deps_first() {
        let repos = vec![
            ("core".into(), vec![pkg("core", "runc", "1.1-1", &[], &[])]),
            (
                "extra".into(),
                vec![
                    pkg(
                        "extra",
                        "docker",
                        "1:26.0-1",
                        &["containerd", "runc>=1.2"],
                        &[],
                    ),
                    pkg("extra", "containerd", "1.7-1", &["runc"], &[]),
                    pkg("extra", "runc", "1.2.1-1", &[], &[]),
                ],
            ),
        ];
        // containerd takes core's runc (first repository, any version) before docker's
        // runc>=1.2 is looked at: a clash, reported with the chain.
        let e = resolve(&t(&["docker"]), &repos, &[], &[], &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker -> runc>=1.2") && e.contains("already chosen"),
            "{e}"
        );
        let repos2 = vec![
            ("core".into(), vec![pkg("core", "runc", "1.1-1", &[], &[])]),
            (
                "extra".into(),
                vec![
                    pkg(
                        "extra",
                        "docker",
                        "1:26.0-1",
                        &["runc>=1.2", "containerd"],
                        &[],
                    ),
                    pkg("extra", "containerd", "1.7-1", &["runc"], &[]),
                    pkg("extra", "runc", "1.2.1-1", &[], &[]),
                ],
            ),
        ];
        let r = resolve(&t(&["docker"]), &repos2, &[], &[], &BTreeMap::new()).unwrap();
        assert_eq!(
            names(&r),
            ["runc-1.2.1-1", "containerd-1.7-1", "docker-1:26.0-1"]
        );
        assert_eq!(r[2].reason, Reason::Explicit);
        assert_eq!(r[0].reason, Reason::Dependency);
        assert_eq!(r[0].pkg.repo, "extra");
    }

    #[test]
    fn provides_and_two_providers_take_the_first_in_repo_order_unless_one_is_installed() {
        let repos = vec![
            ("core".into(), vec![pkg("core", "app", "1-1", &["sh"], &[])]),
            (
                "extra".into(),
                vec![
                    pkg("extra", "zsh-sh", "1-1", &[], &["sh"]),
                    pkg("extra", "dash", "1-1", &[], &["sh"]),
                ],
            ),
            (
                "alarm".into(),
                vec![pkg("alarm", "bash", "5-1", &[], &["sh"])],
            ),
        ];
        let r = resolve(&t(&["app"]), &repos, &[], &[], &BTreeMap::new()).unwrap();
        assert_eq!(names(&r), ["dash-1-1", "app-1-1"]);
        let installed = [pkg("local", "bash", "5-1", &[], &["sh"])];
        let r = resolve(&t(&["app"]), &repos, &installed, &[], &BTreeMap::new()).unwrap();
        assert_eq!(names(&r), ["app-1-1"], "an installed provider satisfies it");
        // Versioned provides.
        let repos = vec![(
            "core".into(),
            vec![
                pkg("core", "app", "1-1", &["libfoo.so>=2"], &[]),
                pkg("core", "foo1", "1-1", &[], &["libfoo.so=1"]),
                pkg("core", "foo2", "2-1", &[], &["libfoo.so=2"]),
            ],
        )];
        let r = resolve(&t(&["app"]), &repos, &[], &[], &BTreeMap::new()).unwrap();
        assert_eq!(names(&r), ["foo2-2-1", "app-1-1"]);
    }

    #[test]
    fn cycles_resolve_and_installed_packages_are_kept_unless_too_old() {
        let repos = vec![(
            "core".into(),
            vec![
                pkg("core", "a", "1-1", &["b"], &[]),
                pkg("core", "b", "1-1", &["a", "c>=2"], &[]),
                pkg("core", "c", "3-1", &[], &[]),
            ],
        )];
        let r = resolve(&t(&["a"]), &repos, &[], &[], &BTreeMap::new()).unwrap();
        assert_eq!(names(&r), ["c-3-1", "b-1-1", "a-1-1"]);
        let installed = [pkg("local", "c", "2.5-1", &[], &[])];
        let r = resolve(&t(&["a"]), &repos, &installed, &[], &BTreeMap::new()).unwrap();
        assert_eq!(
            names(&r),
            ["b-1-1", "a-1-1"],
            "installed c 2.5 satisfies c>=2"
        );
        let installed = [pkg("local", "c", "1-1", &[], &[])];
        let r = resolve(&t(&["a"]), &repos, &installed, &[], &BTreeMap::new()).unwrap();
        assert_eq!(names(&r), ["c-3-1", "b-1-1", "a-1-1"]);
        assert_eq!(r[0].upgrades.as_deref(), Some("1-1"));
        // An installed explicit target is kept.
        let installed = [pkg("local", "a", "0.9-1", &[], &[])];
        assert!(
            resolve(&t(&["a"]), &repos, &installed, &[], &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn missing_dependency_names_the_chain() {
        let repos = vec![
            ("core".into(), vec![pkg("core", "runc", "1.1-1", &[], &[])]),
            (
                "extra".into(),
                vec![
                    pkg("extra", "docker", "1-1", &["containerd"], &[]),
                    pkg("extra", "containerd", "1-1", &["runc>=1.2"], &[]),
                ],
            ),
            ("alarm".into(), vec![]),
        ];
        let e = resolve(&t(&["docker"]), &repos, &[], &[], &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "docker -> containerd -> runc>=1.2: not found in core, extra, alarm"
        );
        let e = resolve(&t(&["nope"]), &repos, &[], &[], &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "nope: not found in core, extra, alarm");
    }

    #[test]
    fn conflicts_are_errors() {
        let mut cronie = pkg("core", "cronie", "1-1", &[], &["cron"]);
        cronie.conflicts = vec![Dep::parse("cron")];
        let fcron = pkg("local", "fcron", "3-1", &[], &["cron"]);
        let repos = vec![("core".into(), vec![cronie.clone()])];
        let e = resolve(
            &t(&["cronie"]),
            &repos,
            std::slice::from_ref(&fcron),
            &[],
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "cronie-1-1 conflicts with fcron-3-1 (cron); fcron is installed in the tarball"
        );
        let mut fc = fcron.clone();
        fc.repo = "extra".into();
        let repos = vec![("core".into(), vec![cronie]), ("extra".into(), vec![fc])];
        let e = resolve(&t(&["cronie", "fcron"]), &repos, &[], &[], &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("conflicts with fcron-3-1"), "{e}");
    }
}
