//! depmod's computation: which module file stands for each name, the order of the modules,
//! who exports each symbol, and the dependencies between modules; as kmod 30's
//! `tools/depmod.c` computes them for `depmod -b ROOT VERSION` with no configuration file.
//!
//! - Modules: every module path ([`super::is_module_path`]). Two files of the same module name:
//!   depmod's default search list is just `updates` (`cfg_load`), so a file under `updates/`
//!   replaces an earlier one, and otherwise the first found stays (`depmod_module_is_higher_priority`).
//!   "Found" is in directory-walk order for depmod; here it is the order of the input.
//! - Order (`depmod_modules_build_array`, `depmod_modules_sort`): the modules in the iteration
//!   order of depmod's module-by-name hash table ([`super::hash_order`]), then stably sorted so
//!   that those named in `modules.order` come first, in its order (a line naming the same module
//!   twice counts where it last appears; a line is matched against the module's path with its
//!   compression suffix cut off). A `modules.order` whose last line lacks its newline is
//!   "corrupted" to depmod, which then sorts nothing. A module's place in this order is its
//!   priority in the indexes.
//! - Symbols (`depmod_load_modules`): each module's exports, in module order; a symbol exported
//!   twice belongs to the later module (`hash_add` replaces).
//! - Dependencies (`depmod_load_module_dependencies`): each undefined symbol (weak ones too,
//!   a leading `.` dropped) whose owner is known makes the owner a dependency, first use first.
//!   Then a topological sort (`depmod_calculate_dependencies`): the modules nothing depends on,
//!   in module order, on a stack; popping one numbers it and pushes each dependency that has no
//!   other unnumbered user left. A cycle is an error, as for depmod (which then writes nothing).
//!   A module's dependencies are sorted by that number, and so is the transitive list
//!   `modules.dep` holds (`mod_get_all_sorted_dependencies`): users before what they use.
//! - Built-in modules: the names of the `modules.builtin` lines (`output_builtin_bin`).

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Context, Result, bail, ensure};

use super::hash_order::{self, MODULE_BUCKETS};
use super::module::{ModuleInfo, is_module_path, scan_u32};

/// The kernel's own lists (each optional: absent files are empty).
///
/// An empty `builtin` or `builtin_modinfo` is taken for an absent file: depmod then writes an
/// empty (0-byte) `modules.builtin.bin` / `modules.builtin.alias.bin`, where for a present but
/// empty file it would write an index with no keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelLists {
    /// `modules.order`.
    pub order: String,
    /// `modules.builtin`.
    pub builtin: String,
    /// `modules.builtin.modinfo`.
    pub builtin_modinfo: Vec<u8>,
}

/// depmod's view of one kernel's modules, and the files it writes.
#[derive(Debug, Clone)]
pub struct Depmod {
    pub(super) version: String,
    pub(super) lists: KernelLists,
    /// As given (duplicates included, for [`Depmod::subset`]).
    pub(super) inputs: Vec<ModuleInfo>,
    /// Indexes into `inputs`, in depmod's order; a module's position here is its `idx`.
    pub(super) order: Vec<usize>,
    /// Module name -> position in `order`.
    by_name: HashMap<String, usize>,
    /// Per position: direct dependencies (positions), sorted by `dep_sort`.
    pub(super) deps: Vec<Vec<usize>>,
    /// Per position: the topological number (`dep_sort_idx`).
    dep_sort: Vec<u32>,
    /// Symbol -> owner position.
    pub(super) symbols: HashMap<String, usize>,
    /// Names of the `modules.builtin` lines.
    builtin: BTreeSet<String>,
    /// Why depmod would fail on these modules (a dependency cycle), if it would.
    pub(super) failure: Option<String>,
}

/// `is_version_number`: `sscanf(version, "%u.%u") == 2`.
fn is_version_number(version: &str) -> bool {
    scan_u32(version)
        .and_then(|(_, rest)| rest.strip_prefix('.'))
        .and_then(scan_u32)
        .is_some()
}

/// `fgets(line, PATH_MAX, f)` over `data`: chunks up to and including a newline, at most
/// 4095 bytes each, each cut at its first NUL as C's `strlen` sees it.
pub(super) fn fgets_lines(data: &[u8]) -> Vec<&[u8]> {
    const MAX: usize = 4095;
    let mut out = vec![];
    let mut rest = data;
    while !rest.is_empty() {
        let window = rest.get(..MAX.min(rest.len())).unwrap_or(rest);
        let len = window
            .iter()
            .position(|&b| b == b'\n')
            .map_or(window.len(), |nl| nl + 1);
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk.split(|&b| b == 0).next().unwrap_or_default());
        rest = tail;
    }
    out
}

/// `path_to_modname` of a `modules.builtin` line (its newline included, as `fgets` left it).
pub(super) fn builtin_name(line: &[u8]) -> String {
    let base = line.rsplit(|&b| b == b'/').next().unwrap_or(line);
    let name = base.split(|&b| b == b'.').next().unwrap_or_default();
    String::from_utf8_lossy(name).replace('-', "_")
}

/// The builtin module names of `modules.builtin`, as depmod indexes them: one per line that
/// starts with an ASCII letter.
pub(super) fn builtin_names(builtin: &str) -> Vec<String> {
    fgets_lines(builtin.as_bytes())
        .into_iter()
        .filter(|l| l.first().is_some_and(u8::is_ascii_alphabetic))
        .map(builtin_name)
        .collect()
}

/// Whether a module at `path` is under `updates/` (depmod's one default search directory).
fn under_updates(path: &str) -> bool {
    path.starts_with("updates/")
}

/// `uncrelpath`: the path with everything after `<dir>/<name as long as the module name>.ko`
/// cut (the compression suffix), as `depmod_module_add` cuts it.
fn uncompressed_path(m: &ModuleInfo) -> &str {
    let dir = m.path.rfind('/').map_or(0, |i| i + 1);
    let len = dir + m.name.len() + ".ko".len();
    m.path.get(..len).unwrap_or(&m.path)
}

impl Depmod {
    /// depmod over `modules` (each read by [`super::read_module`]) with the kernel's lists.
    /// Fails like depmod on a bad version or a dependency cycle, and on a module whose path
    /// depmod would not take or whose name does not match its path.
    pub fn new(version: &str, lists: &KernelLists, modules: Vec<ModuleInfo>) -> Result<Depmod> {
        ensure!(
            is_version_number(version),
            "kernel version {version:?} does not start with NUMBER.NUMBER (depmod: Bad version passed)"
        );
        for m in &modules {
            ensure!(
                is_module_path(&m.path),
                "{} is not a path depmod takes for a module (a relative path ending in .ko, .ko.gz, .ko.xz or .ko.zst, not under build/ or source/)",
                m.path
            );
            m.check_name()?;
        }
        let d = Depmod::build(version, lists.clone(), modules);
        if let Some(why) = &d.failure {
            bail!("depmod {version}: {why}");
        }
        Ok(d)
    }

    /// The computation; never fails, a cycle is recorded in `failure`.
    fn build(version: &str, lists: KernelLists, inputs: Vec<ModuleInfo>) -> Depmod {
        // Which file stands for each name.
        let mut chosen: HashMap<&str, usize> = HashMap::new();
        for (i, m) in inputs.iter().enumerate() {
            // The first found stays, unless the new one is under updates/.
            if !chosen.contains_key(m.name.as_str()) || under_updates(&m.path) {
                chosen.insert(m.name.as_str(), i);
            }
        }
        let mut order: Vec<usize> = chosen.into_values().collect();
        hash_order::sort_by_hash_order(&mut order, MODULE_BUCKETS, |&i| {
            inputs.get(i).map(|m| m.name.clone()).unwrap_or_default()
        });
        sort_by_modules_order(&lists.order, &inputs, &mut order);

        let n = order.len();
        let module = |pos: usize| order.get(pos).and_then(|&i| inputs.get(i));
        let by_name: HashMap<String, usize> = (0..n)
            .filter_map(|pos| module(pos).map(|m| (m.name.clone(), pos)))
            .collect();

        let mut symbols: HashMap<String, usize> = HashMap::new();
        for pos in 0..n {
            for e in module(pos)
                .map(|m| m.exports.as_slice())
                .unwrap_or_default()
            {
                if !e.is_empty() {
                    symbols.insert(e.clone(), pos);
                }
            }
        }

        let mut deps: Vec<Vec<usize>> = vec![vec![]; n];
        let mut users = vec![0u32; n];
        for (pos, list) in deps.iter_mut().enumerate() {
            for u in module(pos)
                .map(|m| m.undefined.as_slice())
                .unwrap_or_default()
            {
                let name = u.name.strip_prefix('.').unwrap_or(&u.name);
                if let Some(&owner) = symbols.get(name)
                    && !list.contains(&owner)
                {
                    list.push(owner);
                    if let Some(c) = users.get_mut(owner) {
                        *c += 1;
                    }
                }
            }
        }

        // Topological numbering, as depmod_calculate_dependencies.
        let mut left = users;
        let mut stack: Vec<usize> = (0..n).filter(|&i| left.get(i) == Some(&0)).collect();
        let mut dep_sort = vec![u32::MAX; n];
        let mut numbered = 0u32;
        while let Some(src) = stack.pop() {
            if let Some(s) = dep_sort.get_mut(src) {
                *s = numbered;
            }
            numbered += 1;
            for &dst in deps.get(src).map(Vec::as_slice).unwrap_or_default() {
                if let Some(l) = left.get_mut(dst) {
                    *l = l.saturating_sub(1);
                    if *l == 0 {
                        stack.push(dst);
                    }
                }
            }
        }
        let failure = (usize::try_from(numbered).unwrap_or(usize::MAX) < n).then(|| {
            describe_cycle(&left, &deps, |pos| {
                module(pos).map_or("?", |m| m.name.as_str())
            })
        });
        for list in &mut deps {
            list.sort_by_key(|&d| dep_sort.get(d).copied().unwrap_or(u32::MAX));
        }

        let builtin = builtin_names(&lists.builtin).into_iter().collect();
        Depmod {
            version: version.to_string(),
            lists,
            inputs,
            order,
            by_name,
            deps,
            dep_sort,
            symbols,
            builtin,
            failure,
        }
    }

    /// The kernel version this was built for.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The module at a position of depmod's order.
    pub(super) fn module(&self, pos: usize) -> Option<&ModuleInfo> {
        self.order.get(pos).and_then(|&i| self.inputs.get(i))
    }

    /// The modules depmod indexes, in its order (that of `modules.dep`).
    pub fn modules(&self) -> impl Iterator<Item = &ModuleInfo> {
        (0..self.order.len()).filter_map(|pos| self.module(pos))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.replace('-', "_")).copied()
    }

    /// Every module `pos` needs, directly or not, in `modules.dep` order.
    pub(super) fn all_deps(&self, pos: usize) -> Vec<usize> {
        let mut seen: HashSet<usize> = HashSet::new();
        let mut stack: Vec<usize> = self.deps.get(pos).cloned().unwrap_or_default();
        while let Some(d) = stack.pop() {
            if d != pos && seen.insert(d) {
                stack.extend(self.deps.get(d).map(Vec::as_slice).unwrap_or_default());
            }
        }
        let mut out: Vec<usize> = seen.into_iter().collect();
        out.sort_by_key(|&d| (self.dep_sort.get(d).copied().unwrap_or(u32::MAX), d));
        out
    }

    /// The hard dependencies of module `name` ("usb-storage" or "usb_storage": '-' and '_'
    /// alike) as module paths, in modules.dep order; None when unknown.
    pub fn deps(&self, name: &str) -> Option<Vec<&str>> {
        let pos = self.position(name)?;
        Some(
            self.all_deps(pos)
                .into_iter()
                .filter_map(|d| self.module(d).map(|m| m.path.as_str()))
                .collect(),
        )
    }

    /// `names` plus everything they depend on (transitively), as paths; error naming a module
    /// that is neither a module file nor builtin.
    pub fn closure(&self, names: &[&str]) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for &name in names {
            match self.position(name) {
                Some(pos) => {
                    out.extend(self.module(pos).map(|m| m.path.clone()));
                    out.extend(
                        self.all_deps(pos)
                            .into_iter()
                            .filter_map(|d| self.module(d).map(|m| m.path.clone())),
                    );
                }
                None if self.is_builtin(name) => {}
                None => bail!(
                    "module {name:?} is neither a module file of kernel {} nor built into it (modules.builtin)",
                    self.version
                ),
            }
        }
        Ok(out)
    }

    /// Whether `name` is built into the kernel (modules.builtin).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    /// A Depmod over only the modules whose paths are in `keep` (what an initramfs holds),
    /// same lists. Should those modules form a dependency cycle (possible only when a symbol's
    /// later exporter is left out), [`Depmod::files`] reports it.
    pub fn subset(&self, keep: &BTreeSet<String>) -> Depmod {
        let inputs = self
            .inputs
            .iter()
            .filter(|m| keep.contains(&m.path))
            .cloned()
            .collect();
        Depmod::build(&self.version, self.lists.clone(), inputs)
    }

    /// Every file depmod would write, by file name ("modules.dep", "modules.dep.bin", …), in a
    /// fixed order (depmod's).
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        if let Some(why) = &self.failure {
            bail!("depmod {}: {why}", self.version);
        }
        super::files::all(self).with_context(|| format!("module indexes of {}", self.version))
    }
}

/// Stable sort of `order` by `modules.order` (see the module doc).
fn sort_by_modules_order(text: &str, inputs: &[ModuleInfo], order: &mut [usize]) {
    let lines = fgets_lines(text.as_bytes());
    if lines.iter().any(|l| !l.is_empty() && !l.ends_with(b"\n")) {
        return; // "corrupted line misses '\n'": no sorting at all
    }
    let by_path: HashMap<&[u8], usize> = order
        .iter()
        .filter_map(|&i| inputs.get(i).map(|m| (uncompressed_path(m).as_bytes(), i)))
        .collect();
    let total = i64::try_from(lines.len())
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let mut sort_idx: HashMap<usize, i64> = HashMap::new();
    for (lineno, line) in (1i64..).zip(&lines) {
        let Some(path) = line.strip_suffix(b"\n") else {
            continue;
        };
        if let Some(&i) = by_path.get(path) {
            sort_idx.insert(i, lineno - total);
        }
    }
    order.sort_by_key(|i| sort_idx.get(i).copied().unwrap_or(1));
}

/// A cycle among the modules the topological sort could not number (`left[pos] > 0`): every
/// such module has an unnumbered user, so walking from user to user must come back.
fn describe_cycle<'a>(
    left: &[u32],
    deps: &[Vec<usize>],
    name: impl Fn(usize) -> &'a str,
) -> String {
    let stuck: Vec<usize> = (0..left.len())
        .filter(|&i| left.get(i).is_some_and(|&l| l > 0))
        .collect();
    let stuck_set: HashSet<usize> = stuck.iter().copied().collect();
    let mut user_of: HashMap<usize, usize> = HashMap::new();
    for &u in &stuck {
        for &d in deps.get(u).map(Vec::as_slice).unwrap_or_default() {
            if stuck_set.contains(&d) {
                user_of.entry(d).or_insert(u);
            }
        }
    }
    let mut walk: Vec<usize> = vec![];
    let mut at = stuck.first().copied();
    while let Some(p) = at {
        if let Some(start) = walk.iter().position(|&w| w == p) {
            // walk[start..] is the cycle backwards (each one is used by the next).
            let mut cycle: Vec<&str> = walk
                .get(start..)
                .unwrap_or_default()
                .iter()
                .rev()
                .map(|&w| name(w))
                .collect();
            if let Some(&first) = cycle.first() {
                cycle.push(first);
            }
            return format!(
                "dependency cycle: {} ({} modules left unsorted)",
                cycle.join(" -> "),
                stuck.len()
            );
        }
        walk.push(p);
        at = user_of.get(&p).copied();
    }
    format!("dependency cycle among {} modules", stuck.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str, exports: &[&str], undefined: &[&str]) -> ModuleInfo {
        super::super::module::test_module(path, exports, undefined)
    }

    fn lists(order: &str) -> KernelLists {
        KernelLists {
            order: order.into(),
            builtin: "kernel/drivers/usb/host/ehci-hcd.ko\nkernel/fs/ext4/ext4.ko\n".into(),
            builtin_modinfo: vec![],
        }
    }

    #[test]
    fn chain_order_and_closure() {
        let mods = vec![
            m("kernel/c.ko", &["c_fn"], &["printk"]),
            m("kernel/b.ko.xz", &["b_fn"], &["c_fn"]),
            m("kernel/usb-a.ko", &["a_fn"], &["b_fn", "c_fn", ".c_fn"]),
            m("extra/solo.ko", &[], &["a_fn"]),
        ];
        let d = Depmod::new(
            "6.1.0-1",
            &lists("kernel/usb-a.ko\nkernel/b.ko\nkernel/c.ko\n"),
            mods,
        )
        .unwrap();
        let names: Vec<&str> = d.modules().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["usb_a", "b", "c", "solo"]);
        assert_eq!(d.deps("usb-a").unwrap(), ["kernel/b.ko.xz", "kernel/c.ko"]);
        assert_eq!(d.deps("c").unwrap(), Vec::<&str>::new());
        assert_eq!(d.deps("nope"), None);
        let c = d.closure(&["solo", "ext4", "ehci_hcd"]).unwrap();
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            [
                "extra/solo.ko",
                "kernel/b.ko.xz",
                "kernel/c.ko",
                "kernel/usb-a.ko"
            ]
        );
        let e = d.closure(&["missing_mod"]).unwrap_err();
        assert!(format!("{e}").contains("missing_mod"));
        assert!(d.is_builtin("ehci-hcd"));
        assert!(!d.is_builtin("usb_a"));

        // Without b, a's deps are just c.
        let keep: BTreeSet<String> = ["kernel/usb-a.ko", "kernel/c.ko"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = d.subset(&keep);
        assert_eq!(s.deps("usb_a").unwrap(), ["kernel/c.ko"]);
        assert_eq!(s.modules().count(), 2);
    }

    #[test]
    fn later_exporter_wins_and_updates_replace() {
        let mods = vec![
            m("kernel/x1/dup.ko", &["s"], &[]),
            m("kernel/x2/dup.ko", &["t"], &[]),
            m("kernel/one.ko", &["s"], &[]),
            m("kernel/two.ko", &["s"], &[]),
            m("kernel/user.ko", &[], &["s"]),
        ];
        let order = "kernel/one.ko\nkernel/two.ko\nkernel/user.ko\nkernel/x1/dup.ko\n";
        let d = Depmod::new("6.1", &lists(order), mods.clone()).unwrap();
        // The first dup stays, and its "s" is the last exported in module order.
        assert_eq!(d.deps("user").unwrap(), ["kernel/x1/dup.ko"]);
        assert!(d.modules().any(|m| m.path == "kernel/x1/dup.ko"));
        assert!(!d.modules().any(|m| m.path == "kernel/x2/dup.ko"));
        let mut more = mods;
        more.push(m("updates/dup.ko", &[], &[]));
        let d = Depmod::new("6.1", &lists(order), more).unwrap();
        // updates/dup.ko (exporting nothing) replaces it: "s" is two's again.
        assert!(d.modules().any(|m| m.path == "updates/dup.ko"));
        assert_eq!(d.deps("user").unwrap(), ["kernel/two.ko"]);
    }

    #[test]
    fn cycles_and_bad_input_are_errors() {
        let mods = vec![
            m("kernel/p.ko", &["p"], &["q"]),
            m("kernel/q.ko", &["q"], &["r"]),
            m("kernel/r.ko", &["r"], &["p"]),
            m("kernel/top.ko", &[], &["p"]),
        ];
        let e = Depmod::new("6.1", &lists(""), mods).unwrap_err();
        let e = format!("{e}");
        assert!(e.contains("dependency cycle"), "{e}");
        assert!(
            e.contains("p -> q -> r -> p")
                || e.contains("q -> r -> p -> q")
                || e.contains("r -> p -> q -> r"),
            "{e}"
        );
        assert!(Depmod::new("x.y", &lists(""), vec![]).is_err());
        assert!(Depmod::new("6", &lists(""), vec![]).is_err());
        assert!(Depmod::new("6.1", &lists(""), vec![m("kernel/p.txt", &[], &[])]).is_err());
        let mut wrong = m("kernel/p.ko", &[], &[]);
        wrong.name = "q".into();
        assert!(Depmod::new("6.1", &lists(""), vec![wrong]).is_err());
    }

    #[test]
    fn corrupted_or_absent_order_keeps_hash_order() {
        let mods: Vec<ModuleInfo> = (0..20)
            .map(|i| m(&format!("kernel/m{i}.ko"), &[], &[]))
            .collect();
        let hashed = Depmod::new("6.1", &lists(""), mods.clone()).unwrap();
        let names = |d: &Depmod| d.modules().map(|m| m.name.clone()).collect::<Vec<_>>();
        let mut want = names(&hashed);
        let corrupted =
            Depmod::new("6.1", &lists("kernel/m5.ko\nkernel/m6.ko"), mods.clone()).unwrap();
        assert_eq!(names(&corrupted), want);
        let sorted = Depmod::new("6.1", &lists("kernel/m5.ko\nkernel/m6.ko\n"), mods).unwrap();
        want.retain(|n| n != "m5" && n != "m6");
        want.insert(0, "m6".into());
        want.insert(0, "m5".into());
        assert_eq!(names(&sorted), want);
    }

    #[test]
    fn fgets_and_builtin_names() {
        assert_eq!(fgets_lines(b"a\nb"), [&b"a\n"[..], b"b"]);
        assert_eq!(fgets_lines(b"a\0x\n"), [&b"a"[..]]);
        let long = vec![b'x'; 5000];
        assert_eq!(fgets_lines(&long).len(), 2);
        assert_eq!(
            builtin_names("kernel/a/b-c.ko\n9bad.ko\n\nnodot\n"),
            ["b_c", "nodot\n"]
        );
    }
}
