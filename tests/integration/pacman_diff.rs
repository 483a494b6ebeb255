//! Differential test of hc1img's package transaction (`[packages] upgrade = true`,
//! `src/packages/{resolve,install}.rs`) against Debian's real `pacman` 6.0 (libalpm `sync.c`
//! `alpm_sync_sysupgrade` and its replaces, `deps.c` resolution and `alpm_checkdeps`,
//! `conflict.c` package and file conflicts, `add.c` extraction and `backup`/`.pacnew`/
//! `.pacsave`, `remove.c` the old version's files and directories, `be_local.c` the local
//! database), on generated repository histories (issue 26).
//!
//! Each case is one small history under its own name prefix (`c17-a`, `usr/share/c17/…`),
//! drawn from its seed by a splitmix64 generator, mixing the features of [`FEATURES`]: plain
//! upgrades (files added, changed, removed, retyped; same, newer and older versions), epochs
//! and other `vercmp` corners, versioned `provides`/`depends`, `conflicts`, file conflicts,
//! `backup` files edited or removed in the root or not (`.pacnew`), symlinks, directories with
//! modes, non-root owners, set-id bits, empty files, xattrs; and what hc1img is known not to do
//! yet: splits (a file moving from A's old version to B, pulled in by A's new one), renames
//! through `replaces`, broken reverse dependencies, directories the new version drops
//! (`rmdir`) and a changed file that stops being a `backup` file (`pacsave`). The "old"
//! packages of every case are installed by the real `pacman -U` (reasons set by `pacman -D
//! --asdeps`) into one root R, which starts as the synthetic Arch Linux ARM tarball
//! (`common::alarm_tarball`, its noise blobs shrunk) extracted; the cases' edits are applied;
//! R, archived by `bsdtar`, is the tarball hc1img builds from. The "new" packages are written
//! as makepkg writes them (`common::pkgs::build_pkg`; the first few by Debian's `makepkg`
//! itself), signed by a throwaway key, indexed by the real `repo-add`.
//!
//! Cases run in groups sharing one repository: a copy of R gets the real `pacman -Syu
//! --noscriptlet` with an empty `--hookdir` and `SigLevel = Required DatabaseOptional`
//! against a keyring made by `pacman-key --init`/`--add`/`--lsign-key` (real signature checks,
//! so `%VALIDATION%` is `pgp` as hc1img writes it; `SigLevel = Never` would give `sha256`,
//! and the keyring costs a second or two, once); hc1img gets a profile with `upgrade = true`,
//! the repository as its `file://` mirror and every node section off, runs `lock` then
//! `build`, and the root filesystem is read back with `e2fsck -fn` and `debugfs` (`rdump` for
//! contents and link targets; `stat` for modes and owners, which `rdump` does not fully
//! restore; `ea_list`). The profile's `install = []` makes the transaction pacman's plain
//! `-Syu` (an anchor package installed in R and never in the repository stays, as any
//! installed package the repository lacks). Compared: for every path in
//! the union of both local databases' `%FILES%` and R's (and each `%BACKUP%` path's
//! `.pacnew`/`.pacsave`), existence, type, permission bits, owner, contents, symlink target and
//! xattrs; and `var/lib/pacman/local/*/` (`desc`, `files`, `mtree`, `install`, and no other
//! file) byte for byte, except `desc`'s `%INSTALLDATE%`. Or both refuse (pacman exits
//! non-zero, `hc1img lock` or `build` does): both messages are printed.
//!
//! Most cases are meant to be accepted and run 40 to a group (one `pacman -Syu`, one `hc1img
//! lock` + `build`, one read-back); those meant to be refused run one to a group, against the
//! same R, their group's repository holding only their packages. When a group is refused by
//! one side only, the cases the messages name run alone and the rest again; a difference is
//! charged to the case its path or package names.
//!
//! Knobs: `HC1IMG_PACMAN_DIFF_CASES=N` (default 200), `HC1IMG_PACMAN_DIFF_SEED=S[,S…]` replays
//! those cases only, `HC1IMG_PACMAN_DIFF_FEATURES=plain,epoch,…` restricts the generator (a
//! failing case prints its packages, files and edits, and the line that replays it),
//! `HC1IMG_PACMAN_DIFF_VERBOSE=1` times each group's steps.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::pkgs::{self, Entry, Kind, Pkg};
use crate::common::*;

/// Every feature the generator can mix. Scenario features pick a case's shape; the others
/// (`symlink` … `makepkg`) change the entries of any case.
const FEATURES: &[&str] = &[
    "plain",
    "epoch",
    "provides",
    "conflicts",
    "fileconflict",
    "backup",
    "split",
    "replaces",
    "revdep",
    "symlink",
    "dirmode",
    "owner",
    "empty",
    "xattr",
    "typechange",
    "rmdir",
    "pacsave",
    "makepkg",
];

const SCENARIOS: &[&str] = &[
    "plain",
    "epoch",
    "provides",
    "conflicts",
    "fileconflict",
    "backup",
    "split",
    "replaces",
    "revdep",
];

const DEFAULT_CASES: usize = 200;
/// The first case's seed in the default run; case i's is [`seed_of`]`(i)`.
const BASE_SEED: u64 = 0x6863_3169_6d67_2026;
/// Cases per accepting group.
const GROUP: usize = 40;
/// Groups run side by side.
const THREADS: usize = 2;
/// How many new packages (those of the first cases that fit) the real makepkg makes.
const MAKEPKG_PACKAGES: usize = 4;

/// splitmix64: a small deterministic generator, one per case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `pct`%.
    fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn seed_of(i: usize) -> u64 {
    Rng(BASE_SEED ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).next()
}

/// A change made to R after the old packages are installed (as an admin would).
#[derive(Clone, Debug)]
enum Edit {
    Write(String, Vec<u8>),
    Remove(String),
}

/// One generated history.
#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    prefix: String,
    scenario: &'static str,
    /// Features this case really uses.
    used: BTreeSet<&'static str>,
    /// Installed by `pacman -U` (`true`: `--asdeps`).
    old: Vec<(Pkg, bool)>,
    /// In the repository.
    new: Vec<Pkg>,
    edits: Vec<Edit>,
    /// Meant to be refused: runs in a group of its own.
    refuse: bool,
    makepkg: bool,
}

/// The generator for one case: its random source, the enabled features and what it used.
struct Gen<'a> {
    rng: Rng,
    on: &'a BTreeSet<&'static str>,
    used: BTreeSet<&'static str>,
    p: String,
}

const VERSION_STEPS: &[(&str, &str)] = &[
    ("1.0-1", "1.1-1"),
    ("1.0-1", "1.0-2"),
    ("1.0-1", "1.0.1-1"),
    ("1.0-1", "1.0-1.1"),
    ("0.9rc1-1", "0.9-1"),
    ("2.0-1", "10.0-1"),
    ("1.0a-1", "1.0-1"),
    ("1.0-1", "1.0+git3-1"),
];

const EPOCH_PAIRS: &[(&str, &str)] = &[
    ("1:1.0-1", "2.0-1"),
    ("1.0-1", "1:0.1-1"),
    ("1:1.0-1", "1:1.0-2"),
    ("1:1.0-1", "2:0.5-1"),
    ("2:1.0-1", "1:9.9-1"),
    ("1:2.0-1", "1:10.0-1"),
    ("3:1.0-1", "3:1.0-1"),
    ("1:1.0-2", "1:1.0-1"),
    ("1.0-1", "1.0-1"),
    ("1:1.0_beta-1", "1:1.0-1"),
];

impl Gen<'_> {
    fn has(&mut self, f: &'static str) -> bool {
        self.on.contains(f)
    }
    /// `f` is on and the dice say so (`pct`%): then it counts as used.
    fn maybe(&mut self, f: &'static str, pct: u64) -> bool {
        let yes = self.has(f) && self.rng.pct(pct);
        if yes {
            self.used.insert(f);
        }
        yes
    }

    fn name(&self, s: &str) -> String {
        format!("{}-{s}", self.p)
    }

    fn content(&mut self, tag: &str) -> Vec<u8> {
        if self.maybe("empty", 12) {
            return Vec::new();
        }
        let n = self.rng.below(3);
        let x = self.rng.next() % 1000;
        match n {
            0 => format!("{tag} {x}\n").into_bytes(),
            1 => noise(1 + self.rng.below(5000), self.rng.next()),
            _ => format!("{tag} {x}\n")
                .repeat(1 + self.rng.below(300))
                .into_bytes(),
        }
    }

    fn owner(&mut self) -> (u32, u32) {
        if self.maybe("owner", 25) {
            *self
                .rng
                .pick(&[(1234, 1234), (4321, 2345), (0, 2345), (65534, 65534)])
        } else {
            (0, 0)
        }
    }

    fn file(&mut self, path: String, tag: &str) -> Entry {
        let mode = *self.rng.pick(&[0o644, 0o644, 0o755, 0o600, 0o640]);
        let mode = if self.maybe("owner", 5) {
            *self.rng.pick(&[0o4755, 0o2755])
        } else {
            mode
        };
        let (uid, gid) = self.owner();
        let data = self.content(tag);
        let mut e = Entry {
            uid,
            gid,
            ..Entry::file(&path, mode, data)
        };
        if self.maybe("xattr", 10) {
            let v = format!("v{}", self.rng.next() % 100);
            e.xattrs.push(("user.hc1".to_string(), v.into_bytes()));
        }
        e
    }

    fn dir(&mut self, path: String) -> Entry {
        let mode = if self.maybe("dirmode", 50) {
            *self.rng.pick(&[0o700, 0o750, 0o2775, 0o1777, 0o555, 0o711])
        } else {
            0o755
        };
        let (uid, gid) = self.owner();
        Entry {
            path,
            kind: Kind::Dir,
            mode,
            uid,
            gid,
            xattrs: Vec::new(),
        }
    }

    fn symlink(&mut self, path: String, base: &str) -> Entry {
        let target = match self.rng.below(3) {
            0 => "f0".to_string(),
            1 => format!("/{base}/f1"),
            _ => "../nowhere/dangling".to_string(),
        };
        Entry {
            path,
            kind: Kind::Symlink(target),
            mode: 0o777,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }

    /// A package's entries under `base` (`usr/share/c17/a`): files, maybe a directory with
    /// files in it and symlinks.
    fn entries(&mut self, base: &str) -> Vec<Entry> {
        let mut v = vec![self.dir(base.to_string())];
        for i in 0..1 + self.rng.below(4) {
            let tag = format!("{base}/f{i}");
            v.push(self.file(format!("{base}/f{i}"), &tag));
        }
        if self.has("dirmode") && self.rng.pct(40) {
            self.used.insert("dirmode");
            let d = format!("{base}/d");
            v.push(self.dir(d.clone()));
            let tag = format!("{d}/g");
            v.push(self.file(format!("{d}/g"), &tag));
        }
        if self.maybe("symlink", 40) {
            v.push(self.symlink(format!("{base}/l0"), base));
        }
        v
    }

    /// The next version of `old` entries: each kept, changed, removed, retyped; some added.
    fn mutate(&mut self, old: &[Entry], base: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut gone: BTreeSet<String> = BTreeSet::new();
        for e in old {
            if gone.iter().any(|g| e.path.starts_with(&format!("{g}/"))) {
                continue;
            }
            let roll = self.rng.below(100);
            match &e.kind {
                Kind::Dir if e.path == base => out.push(e.clone()),
                Kind::Dir => {
                    if roll < 15 && self.maybe("rmdir", 100) {
                        // The directory and what is in it go.
                        gone.insert(e.path.clone());
                    } else if roll < 35 {
                        let mut d = self.dir(e.path.clone());
                        d.kind = Kind::Dir;
                        out.push(d);
                    } else {
                        out.push(e.clone());
                    }
                }
                Kind::File(_) | Kind::Symlink(_) => {
                    if roll < 15 {
                        gone.insert(e.path.clone());
                    } else if roll < 40 {
                        let tag = format!("{} new", e.path);
                        let mut f = self.file(e.path.clone(), &tag);
                        if matches!(e.kind, Kind::Symlink(_)) {
                            f = self.symlink(e.path.clone(), base);
                        }
                        out.push(f);
                    } else if roll < 50 && self.maybe("typechange", 60) {
                        // File <-> symlink, or a file becomes a directory with a file in it.
                        match (&e.kind, self.rng.below(2)) {
                            (Kind::File(_), 0) => out.push(self.symlink(e.path.clone(), base)),
                            (Kind::Symlink(_), _) => {
                                let tag = format!("{} was a link", e.path);
                                out.push(self.file(e.path.clone(), &tag));
                            }
                            _ => {
                                out.push(self.dir(e.path.clone()));
                                let tag = format!("{} in", e.path);
                                out.push(self.file(format!("{}/in", e.path), &tag));
                            }
                        }
                    } else if roll < 60 {
                        let mut f = e.clone();
                        if !matches!(f.kind, Kind::Symlink(_)) {
                            f.mode = *self.rng.pick(&[0o644, 0o755, 0o600]);
                            (f.uid, f.gid) = self.owner();
                        }
                        out.push(f);
                    } else {
                        out.push(e.clone());
                    }
                }
            }
        }
        for i in 0..self.rng.below(3) {
            let tag = format!("{base}/n{i}");
            out.push(self.file(format!("{base}/n{i}"), &tag));
        }
        out
    }

    /// A version step (old, new) where new is newer, the same or older.
    fn step(&mut self) -> (String, String) {
        let (a, b) = *self.rng.pick(VERSION_STEPS);
        match self.rng.below(10) {
            0 => (a.to_string(), a.to_string()),
            1 => (b.to_string(), a.to_string()),
            _ => (a.to_string(), b.to_string()),
        }
    }

    fn pkg(&self, s: &str, ver: &str, files: Vec<Entry>) -> Pkg {
        Pkg {
            files,
            // Some xz (pacman reads both; xz costs more CPU to write, so few).
            ext: if self.rng_ext(s, ver) { "xz" } else { "zst" },
            ..Pkg::new(&self.name(s), ver)
        }
    }

    /// Whether this package is compressed with xz: one in eight, by its name and version.
    fn rng_ext(&self, s: &str, ver: &str) -> bool {
        let h = format!("{}{s}{ver}", self.p)
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        h % 8 == 0
    }

    fn base(&self, s: &str) -> String {
        format!("usr/share/{}/{s}", self.p)
    }
}

/// Generate case `prefix` from `seed` with the features `on`.
fn generate(seed: u64, prefix: &str, on: &BTreeSet<&'static str>) -> Case {
    let mut g = Gen {
        rng: Rng(seed),
        on,
        used: BTreeSet::new(),
        p: prefix.to_string(),
    };
    let scenarios: Vec<&'static str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| on.contains(s))
        .collect();
    assert!(
        !scenarios.is_empty(),
        "HC1IMG_PACMAN_DIFF_FEATURES enables no scenario (one of {SCENARIOS:?})"
    );
    let scenario = *g.rng.pick(&scenarios);
    g.used.insert(scenario);
    let mut old: Vec<(Pkg, bool)> = Vec::new();
    let mut new: Vec<Pkg> = Vec::new();
    let mut edits = Vec::new();
    let mut refuse = false;
    match scenario {
        "plain" => {
            let n = 1 + g.rng.below(3);
            let names: Vec<String> = (0..n)
                .map(|i| ((b'a' + i as u8) as char).to_string())
                .collect();
            for (i, s) in names.iter().enumerate() {
                let base = g.base(s);
                let (ov, nv) = g.step();
                let files = g.entries(&base);
                let mut o = g.pkg(s, &ov, files.clone());
                let nfiles = g.mutate(&files, &base);
                let mut nw = g.pkg(s, &nv, nfiles);
                // a's new version needs b's new one (when b has one).
                if i + 1 < n && g.rng.pct(50) {
                    let dep = g.name(&names[i + 1]);
                    o.deps.push(dep.clone());
                    nw.deps.push(dep);
                }
                let asdep = i > 0 && g.rng.pct(50);
                old.push((o, asdep));
                new.push(nw);
            }
        }
        "epoch" => {
            let (ov, nv) = *g.rng.pick(EPOCH_PAIRS);
            let base = g.base("a");
            let files = g.entries(&base);
            old.push((g.pkg("a", ov, files.clone()), false));
            let nfiles = g.mutate(&files, &base);
            new.push(g.pkg("a", nv, nfiles));
        }
        "provides" => {
            let base = g.base("a");
            let files = g.entries(&base);
            old.push((g.pkg("a", "1.0-1", files.clone()), false));
            let nfiles = g.mutate(&files, &base);
            let mut a = g.pkg("a", "2.0-1", nfiles);
            let virt = g.name("virt");
            let want = g.rng.below(5);
            a.deps.push(match want {
                0 => virt.clone(),
                1 => format!("{virt}>=2"),
                2 => format!("{virt}=2"),
                3 => format!("{virt}<3"),
                _ => format!("{virt}>1.5"),
            });
            // Providers: impl2 (virt=2) and maybe impl1 (virt=1), impl3 (virt=3, sorted
            // after), or an installed one.
            let provider = |g: &mut Gen, s: &str, v: &str| {
                let b = g.base(s);
                let f = g.entries(&b);
                let mut p = g.pkg(s, "1.0-1", f);
                p.provides.push(format!("{virt}={v}"));
                p
            };
            match g.rng.below(4) {
                0 => {
                    let p = provider(&mut g, "impl9", "2");
                    old.push((p, g.rng.pct(50)));
                }
                1 => new.push(provider(&mut g, "zimpl3", "3")),
                _ => {}
            }
            if g.rng.pct(50) {
                new.push(provider(&mut g, "impl1", "1"));
            }
            if g.rng.pct(85) {
                new.push(provider(&mut g, "impl2", "2"));
            } else if old.len() == 1 {
                // Nothing provides it: both must refuse.
                refuse = true;
            }
            new.push(a);
        }
        "conflicts" => {
            // c is installed; a's new version pulls in b; b (or a) conflicts with c, or
            // with a version of c that is not the one installed / upgraded to.
            let cbase = g.base("c");
            let cf = g.entries(&cbase);
            let mut c = g.pkg("c", "1.0-1", cf.clone());
            c.provides.push(g.name("cvirt"));
            old.push((c.clone(), false));
            let abase = g.base("a");
            let af = g.entries(&abase);
            old.push((g.pkg("a", "1.0-1", af.clone()), false));
            let naf = g.mutate(&af, &abase);
            let mut a = g.pkg("a", "2.0-1", naf);
            let bbase = g.base("b");
            let bf = g.entries(&bbase);
            let mut b = g.pkg("b", "1.0-1", bf);
            a.deps.push(g.name("b"));
            let cname = g.name("c");
            let upgrade_c = g.rng.pct(40);
            if upgrade_c {
                let ncf = g.mutate(&cf, &cbase);
                let mut nc = g.pkg("c", "2.0-1", ncf);
                nc.provides.push(g.name("cvirt"));
                new.push(nc);
            }
            let (conflict, hits) = match g.rng.below(5) {
                0 => (cname.clone(), true),
                1 => (format!("{cname}<1"), false),
                2 => (g.name("cvirt"), true),
                3 => (format!("{cname}<2"), !upgrade_c),
                _ => (format!("{cname}>=1.0-1"), true),
            };
            if g.rng.pct(30) {
                a.conflicts.push(conflict);
            } else {
                b.conflicts.push(conflict);
            }
            refuse = hits;
            new.push(a);
            new.push(b);
        }
        "fileconflict" => {
            // b (new, pulled in by a's new version) ships a path that c owns, or that is
            // in R unowned, or a directory that is there unowned.
            let cbase = g.base("c");
            let cf = g.entries(&cbase);
            old.push((g.pkg("c", "1.0-1", cf.clone()), false));
            let abase = g.base("a");
            let af = g.entries(&abase);
            old.push((g.pkg("a", "1.0-1", af.clone()), false));
            let mut a = g.pkg("a", "2.0-1", af);
            a.deps.push(g.name("b"));
            let bbase = g.base("b");
            let mut bf = g.entries(&bbase);
            match g.rng.below(3) {
                0 => {
                    let taken = format!("{cbase}/f0");
                    let tag = "b's copy".to_string();
                    bf.push(g.file(taken, &tag));
                    refuse = true;
                }
                1 => {
                    let path = format!("{bbase}/admin");
                    edits.push(Edit::Write(path.clone(), b"made by the admin\n".to_vec()));
                    let tag = "b's admin".to_string();
                    bf.push(g.file(path, &tag));
                    refuse = true;
                }
                _ => {
                    let path = format!("{bbase}/admindir");
                    edits.push(Edit::Write(
                        format!("{path}/keep"),
                        b"the admin's\n".to_vec(),
                    ));
                    bf.push(g.dir(path.clone()));
                    let tag = "b in admindir".to_string();
                    bf.push(g.file(format!("{path}/x"), &tag));
                }
            }
            let b = g.pkg("b", "1.0-1", bf);
            new.push(a);
            new.push(b);
        }
        "backup" => {
            let base = g.base("a");
            let mut files = g.entries(&base);
            let conf_dir = format!("etc/{}", g.p);
            files.push(g.dir(conf_dir.clone()));
            let conf = format!("{conf_dir}/a.conf");
            let orig = format!("setting = {}\n", g.rng.next() % 100).into_bytes();
            files.push(Entry::file(&conf, 0o644, orig.clone()));
            let mut o = g.pkg("a", "1.0-1", files.clone());
            o.backup.push(conf.clone());
            let mut nfiles: Vec<Entry> = g
                .mutate(&files, &base)
                .into_iter()
                .filter(|e| e.path != conf)
                .collect();
            let changed = g.rng.pct(60);
            let newdata = if changed {
                format!("setting = new {}\n", g.rng.next() % 100).into_bytes()
            } else {
                orig.clone()
            };
            if !nfiles.iter().any(|e| e.path == conf_dir) {
                nfiles.push(g.dir(conf_dir.clone()));
            }
            nfiles.push(Entry::file(&conf, 0o644, newdata));
            // A second backup file new in this version, maybe already in R (unowned).
            let conf2 = format!("{conf_dir}/b.conf");
            let with2 = g.rng.pct(40);
            if with2 {
                nfiles.push(Entry::file(&conf2, 0o644, b"b = 1\n".to_vec()));
            }
            let mut nw = g.pkg("a", "2.0-1", nfiles);
            if g.rng.pct(85) || !g.maybe("pacsave", 100) {
                nw.backup.push(conf.clone());
            }
            if with2 {
                nw.backup.push(conf2.clone());
                if g.rng.pct(50) {
                    edits.push(Edit::Write(conf2, b"b = admin\n".to_vec()));
                }
            }
            match g.rng.below(3) {
                0 => edits.push(Edit::Write(conf, b"setting = the admin's\n".to_vec())),
                1 => edits.push(Edit::Remove(conf)),
                _ => {}
            }
            old.push((o, false));
            new.push(nw);
        }
        "split" => {
            // a's old version ships x; its new one does not and depends on b, which ships
            // x. Or: b, installed, gives x to a's new version.
            let abase = g.base("a");
            let af = g.entries(&abase);
            let moved = format!("usr/share/{}/moved", g.p);
            let tag = format!("{moved} old");
            let mv = g.file(moved.clone(), &tag);
            let bbase = g.base("b");
            let bf = g.entries(&bbase);
            if g.rng.pct(60) {
                let mut oa = af.clone();
                oa.push(mv.clone());
                old.push((g.pkg("a", "1.0-1", oa), false));
                let na = g.mutate(&af, &abase);
                let mut a = g.pkg("a", "1.1-1", na);
                a.deps.push(g.name("b"));
                let mut nb = bf.clone();
                nb.push(if g.rng.pct(50) {
                    mv
                } else {
                    let tag = format!("{moved} new");
                    g.file(moved, &tag)
                });
                new.push(a);
                new.push(g.pkg("b", "1.0-1", nb));
            } else {
                let mut ob = bf.clone();
                ob.push(mv.clone());
                old.push((g.pkg("a", "1.0-1", af.clone()), false));
                old.push((g.pkg("b", "1.0-1", ob), g.rng.pct(50)));
                let mut na = g.mutate(&af, &abase);
                na.push(mv);
                new.push(g.pkg("a", "1.1-1", na));
                new.push(g.pkg("b", "1.1-1", bf));
            }
        }
        "replaces" => {
            // foo is installed (and needed by user); the repository has foo-ng instead.
            let fbase = g.base("foo");
            let ff = g.entries(&fbase);
            let renamed = g.pkg("foo", "1.0-1", ff.clone());
            let foo_name = renamed.name.clone();
            old.push((renamed, g.rng.pct(50)));
            let ubase = g.base("user");
            let uf = g.entries(&ubase);
            let mut user = g.pkg("user", "1.0-1", uf);
            user.deps.push(foo_name.clone());
            old.push((user, false));
            // foo-ng keeps some of foo's paths (files change hands) and adds its own.
            let mut nf = g.mutate(&ff, &fbase);
            let ngbase = g.base("foo-ng");
            nf.extend(g.entries(&ngbase));
            let mut ng = g.pkg("foo-ng", "2.0-1", nf);
            ng.replaces.push(foo_name.clone());
            ng.conflicts.push(foo_name.clone());
            if g.rng.pct(80) {
                ng.provides.push(format!("{foo_name}=2.0"));
            } else {
                // Nothing provides foo any more: user's dependency breaks.
                refuse = true;
            }
            new.push(ng);
        }
        "revdep" => {
            // baz needs libbar.so=1; libbar's new version provides libbar.so=2.
            let lbase = g.base("libbar");
            let lf = g.entries(&lbase);
            let so = g.name("libbar.so");
            let mut lb = g.pkg("libbar", "1.0-1", lf.clone());
            lb.provides.push(format!("{so}=1"));
            old.push((lb, true));
            let bbase = g.base("baz");
            let bf = g.entries(&bbase);
            let mut user = g.pkg("baz", "1.0-1", bf.clone());
            user.deps.push(format!("{so}=1"));
            old.push((user, false));
            let nlf = g.mutate(&lf, &lbase);
            let mut nlb = g.pkg("libbar", "2.0-1", nlf);
            nlb.provides.push(format!("{so}=2"));
            new.push(nlb);
            match g.rng.below(3) {
                0 => {
                    // baz is rebuilt against the new soname: fine.
                    let nbf = g.mutate(&bf, &bbase);
                    let mut nbaz = g.pkg("baz", "1.0-2", nbf);
                    nbaz.deps.push(format!("{so}=2"));
                    new.push(nbaz);
                }
                1 => {
                    // The new libbar still provides the old soname too.
                    new[0].provides.push(format!("{so}=1"));
                }
                _ => refuse = true,
            }
        }
        other => unreachable!("{other}"),
    }
    // The first cases' new packages come from the real makepkg.
    Case {
        seed,
        prefix: prefix.to_string(),
        scenario,
        used: g.used,
        old,
        new,
        edits,
        refuse,
        makepkg: false,
    }
}

/// The case as a replayable description.
fn describe(c: &Case, features: &BTreeSet<&'static str>) -> String {
    let mut s = format!(
        "case {} (scenario {}, features used {:?}{}): replay with HC1IMG_PACMAN_DIFF_SEED={} HC1IMG_PACMAN_DIFF_FEATURES={}\n",
        c.prefix,
        c.scenario,
        c.used,
        if c.makepkg {
            ", new packages by makepkg"
        } else {
            ""
        },
        c.seed,
        features.iter().copied().collect::<Vec<_>>().join(",")
    );
    let pk = |s: &mut String, tag: &str, p: &Pkg| {
        s.push_str(&format!("  {tag} {} {}", p.name, p.ver));
        for (k, v) in [
            ("depends", &p.deps),
            ("provides", &p.provides),
            ("conflicts", &p.conflicts),
            ("replaces", &p.replaces),
            ("backup", &p.backup),
        ] {
            if !v.is_empty() {
                s.push_str(&format!(" {k}={v:?}"));
            }
        }
        s.push('\n');
        for e in &p.files {
            let what = match &e.kind {
                Kind::File(d) => format!("file {} bytes md5 {}", d.len(), md5_hex(d)),
                Kind::Dir => "dir".to_string(),
                Kind::Symlink(t) => format!("-> {t}"),
            };
            s.push_str(&format!(
                "      {} {what} {:o} {}:{}{}\n",
                e.path,
                e.mode,
                e.uid,
                e.gid,
                if e.xattrs.is_empty() {
                    String::new()
                } else {
                    format!(" xattrs {:?}", e.xattrs)
                }
            ));
        }
    };
    for (p, asdep) in &c.old {
        pk(&mut s, if *asdep { "old (asdeps)" } else { "old" }, p);
    }
    for p in &c.new {
        pk(&mut s, "new", p);
    }
    for e in &c.edits {
        s.push_str(&format!("  edit {e:?}\n"));
    }
    s
}

fn md5_hex(d: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(d))
}

/// Features from `HC1IMG_PACMAN_DIFF_FEATURES` (all by default).
fn features() -> BTreeSet<&'static str> {
    match std::env::var("HC1IMG_PACMAN_DIFF_FEATURES") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                *FEATURES
                    .iter()
                    .find(|f| **f == s)
                    .unwrap_or_else(|| panic!("unknown feature {s:?}; known: {FEATURES:?}"))
            })
            .collect(),
        _ => FEATURES.iter().copied().collect(),
    }
}

/// The cases of this run: `HC1IMG_PACMAN_DIFF_SEED` or the default seeds.
fn cases(on: &BTreeSet<&'static str>) -> Vec<Case> {
    let seeds: Vec<u64> = match std::env::var("HC1IMG_PACMAN_DIFF_SEED") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| s.trim().parse().expect("HC1IMG_PACMAN_DIFF_SEED: a number"))
            .collect(),
        _ => {
            let n = std::env::var("HC1IMG_PACMAN_DIFF_CASES")
                .ok()
                .map(|v| v.parse().expect("HC1IMG_PACMAN_DIFF_CASES: a number"))
                .unwrap_or(DEFAULT_CASES);
            (0..n).map(seed_of).collect()
        }
    };
    let mut made = 0;
    seeds
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let mut c = generate(s, &format!("c{i}"), on);
            if made + c.new.len() <= MAKEPKG_PACKAGES && on.contains("makepkg") && !c.new.is_empty()
            {
                made += c.new.len();
                c.makepkg = true;
                c.used.insert("makepkg");
            }
            c
        })
        .collect()
}

/// The case a message or path names (`c17-…`, `…/c17/…`), among `ids`.
fn cases_named(text: &str, ids: &[usize]) -> BTreeSet<usize> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    for i in 0..b.len() {
        if b[i] == b'c' && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 1
                && (j == b.len() || b[j] == b'-' || b[j] == b'/')
                && let Ok(n) = text[i + 1..j].parse::<usize>()
                && ids.contains(&n)
            {
                out.insert(n);
            }
        }
    }
    out
}

/// Shared inputs of every group.
struct World {
    dir: PathBuf,
    /// R: the tarball's tree (old packages installed, edits made).
    root: PathBuf,
    tarball: PathBuf,
    keyring: PathBuf,
    gpgdir: PathBuf,
    hookdir: PathBuf,
    /// Each case's new package files (signed).
    new_files: Vec<Vec<PathBuf>>,
}

/// What one side did with a group.
enum Outcome {
    Refused(String),
    /// The root directory to compare.
    Done(PathBuf),
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pacman_opts(w: &World, conf: &Path, cache: &Path, log: &Path) -> Vec<String> {
    [
        "--config",
        conf.to_str().unwrap(),
        "--gpgdir",
        w.gpgdir.to_str().unwrap(),
        "--hookdir",
        w.hookdir.to_str().unwrap(),
        "--cachedir",
        cache.to_str().unwrap(),
        "--logfile",
        log.to_str().unwrap(),
        "--noprogressbar",
    ]
    .map(String::from)
    .to_vec()
}

fn hc1img(w: &World, cwd: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hc1img"))
        .current_dir(cwd)
        .env("HC1IMG_CACHE", w.dir.join("cache"))
        .env("HC1IMG_KEYRING", &w.keyring)
        .env_remove("HC1IMG_MIRROR")
        .env("SOURCE_DATE_EPOCH", "1700000500")
        .args(args)
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

/// Run one group of cases: its repository, pacman's and hc1img's transactions.
fn run_group(w: &World, name: &str, ids: &[usize]) -> (Outcome, Outcome, PathBuf) {
    let t = std::time::Instant::now();
    let verbose = std::env::var_os("HC1IMG_PACMAN_DIFF_VERBOSE").is_some();
    let lap = |what: &str| {
        if verbose {
            eprintln!(
                "{name} ({} cases): {what} at {:.2?}",
                ids.len(),
                t.elapsed()
            );
        }
    };
    let g = w.dir.join(name);
    let repo = g.join("repo/core");
    std::fs::create_dir_all(&repo).unwrap();
    let mut files = Vec::new();
    for &i in ids {
        for f in &w.new_files[i] {
            let to = repo.join(f.file_name().unwrap());
            std::fs::hard_link(f, &to).unwrap();
            let sig = PathBuf::from(format!("{}.sig", f.display()));
            std::fs::hard_link(&sig, format!("{}.sig", to.display())).unwrap();
            files.push(to);
        }
    }
    if files.is_empty() {
        // repo-add makes no database from nothing: an empty one, as pacman reads it.
        run_ok(
            "bsdtar",
            &[
                "-czf",
                repo.join("core.db.tar.gz").to_str().unwrap(),
                "-T",
                "/dev/null",
            ],
        );
        std::os::unix::fs::symlink("core.db.tar.gz", repo.join("core.db")).unwrap();
    } else {
        pkgs::repo_add(&repo, "core", &files);
    }

    lap("repo-add");
    // pacman -Syu on a copy of R.
    let r2 = g.join("pacman-root");
    run_ok(
        "cp",
        &["-a", w.root.to_str().unwrap(), r2.to_str().unwrap()],
    );
    let conf = g.join("pacman.conf");
    std::fs::write(
        &conf,
        format!(
            "[options]\nArchitecture = armv7h\nSigLevel = Required DatabaseOptional\n\n[core]\nServer = file://{}\n",
            repo.display()
        ),
    )
    .unwrap();
    let opts = pacman_opts(w, &conf, &g.join("pacman-cache"), &g.join("pacman.log"));
    let o: Vec<&str> = opts.iter().map(String::as_str).collect();
    let out = pkgs::pacman(&r2, &o, &["-Syu", "--noscriptlet"]);
    let theirs = if out.status.success() {
        Outcome::Done(r2)
    } else {
        Outcome::Refused(text(&out))
    };

    lap("pacman");
    // hc1img lock + build.
    let profile = g.join("diff.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"diff\"\nboard = {board:?}\n\n[source]\nurl = {src:?}\n\n[rootfs]\nsize = \"64MiB\"\n\n\
             [docker]\nenable = false\n\n[cron]\nenable = false\n\n[ssh]\nenable = false\n\n\
             [firstboot]\nenable = false\n\n[fstab]\nenable = false\n\n[io_scheduler]\nenable = false\n\n\
             [journald]\nenable = false\n\n[system]\nenable = false\n\n[users]\nenable = false\n\n\
             [packages]\n# A plain `pacman -Syu`.\n\
             install = []\nupgrade = true\nrepositories = [\"core\"]\n\
             mirrors = [\"file://{mirror}/$repo\"]\narchitecture = \"armv7h\"\n",
            board = repo_root().join("profiles/boards/odroid-hc1.toml").display().to_string(),
            src = w.tarball.display().to_string(),
            mirror = g.join("repo").display(),
        ),
    )
    .unwrap();
    let ps = profile.to_str().unwrap();
    let (ok, msg) = hc1img(w, &g, &["-q", "lock", ps]);
    lap("lock");
    let ours = if !ok {
        Outcome::Refused(format!("hc1img lock: {msg}"))
    } else {
        let (ok, msg) = hc1img(w, &g, &["-q", "build", ps, "--out", "out"]);
        lap("build");
        if !ok {
            Outcome::Refused(format!("hc1img build: {msg}"))
        } else {
            let root = g.join("image-root");
            let fs = g.join("root.ext4");
            rdump(&g.join("out"), &fs, &root);
            lap("rdump");
            Outcome::Done(root)
        }
    };
    (theirs, ours, g)
}

fn repo_root() -> PathBuf {
    repo()
}

/// Cut the root filesystem out of `out/ssd.img` into `fs`, check it with `e2fsck -fn`, and
/// extract it into `root` with `debugfs rdump`.
fn rdump(out: &Path, fs: &Path, root: &Path) {
    let ssd = out.join("ssd.img");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok("sfdisk", &["--json", ssd.to_str().unwrap()])).unwrap();
    let p = &j["partitiontable"]["partitions"][0];
    let start = p["start"].as_u64().unwrap() * 512;
    let len = p["size"].as_u64().unwrap() * 512;
    extract(&ssd, start, len, fs);
    let fsck = run("e2fsck", &["-fn", fs.to_str().unwrap()]);
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    std::fs::create_dir_all(root).unwrap();
    debugfs(fs, &format!("rdump / {}", root.display()));
}

/// What a path is, for the comparison (its owner and mode apart: [`Meta`]).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Missing,
    File { md5: String, len: u64 },
    Dir,
    Symlink(String),
    Other(u32),
}

/// Permission bits (none for a symlink), owner.
type Meta = (Option<u32>, u32, u32);

fn node(root: &Path, rel: &str) -> (Node, Option<Meta>) {
    let p = root.join(rel);
    let Ok(m) = std::fs::symlink_metadata(&p) else {
        return (Node::Missing, None);
    };
    let ft = m.file_type();
    let mode = (!ft.is_symlink()).then_some(m.permissions().mode() & 0o7777);
    let n = if ft.is_symlink() {
        Node::Symlink(
            std::fs::read_link(&p)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        )
    } else if ft.is_dir() {
        Node::Dir
    } else if ft.is_file() {
        Node::File {
            md5: md5_hex(&std::fs::read(&p).unwrap()),
            len: m.len(),
        }
    } else {
        Node::Other(m.mode())
    };
    (n, Some((mode, m.uid(), m.gid())))
}

/// `name (len) = "value"` for each xattr of `path` (lgetxattr), as debugfs's `ea_list`
/// prints printable values; only the name and length for the others.
fn xattrs_of(path: &Path) -> BTreeSet<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer is valid for its length; the path is NUL-terminated.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return BTreeSet::new();
    }
    names.truncate(n as usize);
    let mut out = BTreeSet::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0, "lgetxattr {}", path.display());
        v.truncate(len as usize);
        out.insert(xattr_line(&String::from_utf8_lossy(name), &v));
    }
    out
}

fn xattr_line(name: &str, v: &[u8]) -> String {
    if v.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{name} ({}) = \"{}\"", v.len(), String::from_utf8_lossy(v))
    } else {
        format!("{name} ({})", v.len())
    }
}

/// Each of `paths` in the filesystem image `fs`, as debugfs reads it (one `debugfs -f` run
/// of `stat` and `ea_list` requests): permission bits and owner (`rdump` restores neither
/// the set-id and sticky bits nor a symlink's owner), and the xattrs.
fn image_meta(
    fs: &Path,
    paths: &[String],
    work: &Path,
) -> BTreeMap<String, (Option<Meta>, BTreeSet<String>)> {
    let cmds = work.join("debugfs.cmds");
    let mut s = String::new();
    for p in paths {
        s.push_str(&format!("stat \"/{p}\"\nea_list \"/{p}\"\n"));
    }
    std::fs::write(&cmds, s).unwrap();
    let out = run_ok(
        "debugfs",
        &["-f", cmds.to_str().unwrap(), fs.to_str().unwrap()],
    );
    let mut map: BTreeMap<String, (Option<Meta>, BTreeSet<String>)> = BTreeMap::new();
    let mut cur: Option<(String, bool)> = None;
    let field = |line: &str, key: &str| -> Option<String> {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    };
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("debugfs: stat \"/") {
            let p = rest.trim_end_matches('"').to_string();
            map.entry(p.clone()).or_default();
            cur = Some((p, true));
        } else if let Some(rest) = line.strip_prefix("debugfs: ea_list \"/") {
            let p = rest.trim_end_matches('"').to_string();
            cur = Some((p, false));
        } else if let Some((p, is_stat)) = &cur {
            let e = map.get_mut(p).unwrap();
            if *is_stat {
                if line.contains("Type: ") && line.contains("Mode: ") {
                    let mode = u32::from_str_radix(&field(line, "Mode:").unwrap(), 8).unwrap();
                    let symlink = field(line, "Type:").as_deref() == Some("symlink");
                    e.0 = Some(((!symlink).then_some(mode & 0o7777), 0, 0));
                } else if line.starts_with("User:")
                    && let Some(m) = &mut e.0
                {
                    m.1 = field(line, "User:").unwrap().parse().unwrap();
                    m.2 = field(line, "Group:").unwrap().parse().unwrap();
                }
            } else if let Some(attr) = line.strip_prefix("  ") {
                // `name (len) = "value"` or `name (len) = hex…`.
                let attr = attr.trim_end();
                let keep = if attr.contains(") = \"") && attr.ends_with('"') {
                    attr.to_string()
                } else {
                    attr.split_once(" = ")
                        .map(|(a, _)| a.to_string())
                        .unwrap_or_else(|| attr.to_string())
                };
                e.1.insert(keep);
            }
        }
    }
    map
}

/// The local database entries of a root: dir name → file name → bytes.
fn local_db(root: &Path) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let local = root.join("var/lib/pacman/local");
    for e in std::fs::read_dir(&local).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_dir() {
            continue;
        }
        let mut files = BTreeMap::new();
        for f in std::fs::read_dir(e.path()).unwrap() {
            let f = f.unwrap();
            files.insert(
                f.file_name().to_string_lossy().into_owned(),
                std::fs::read(f.path()).unwrap(),
            );
        }
        out.insert(e.file_name().to_string_lossy().into_owned(), files);
    }
    out
}

/// `%KEY%` sections of a desc/files text.
fn sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('%') && line.ends_with('%') && line.len() > 2 {
            cur = Some(line.to_string());
            out.entry(line.to_string()).or_insert_with(Vec::new);
        } else if line.is_empty() {
            cur = None;
        } else if let Some(k) = &cur {
            out.get_mut(k).unwrap().push(line.to_string());
        }
    }
    out
}

fn without_installdate(desc: &[u8]) -> String {
    let t = String::from_utf8_lossy(desc);
    let mut out = String::new();
    let mut skip = false;
    for line in t.split_inclusive('\n') {
        if line == "%INSTALLDATE%\n" {
            skip = true;
            continue;
        }
        if skip {
            if line == "\n" {
                skip = false;
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

/// Paths compared, and local database entries pacman added or removed, over the run: the
/// comparison is not vacuous.
static COMPARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CHANGED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Compare pacman's root `theirs` with hc1img's `ours` (its filesystem image `fs`); each
/// difference as a line.
fn compare(base: &Path, theirs: &Path, ours: &Path, fs: &Path, work: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let before: BTreeSet<String> = local_db(base).into_keys().collect();
    let after: BTreeSet<String> = local_db(theirs).into_keys().collect();
    CHANGED.fetch_add(
        after.symmetric_difference(&before).count(),
        std::sync::atomic::Ordering::SeqCst,
    );
    let (dt, do_) = (local_db(theirs), local_db(ours));
    let names: BTreeSet<&String> = dt.keys().chain(do_.keys()).collect();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    let mut add_paths = |files: &[u8]| {
        let s = sections(&String::from_utf8_lossy(files));
        for f in s.get("%FILES%").into_iter().flatten() {
            paths.insert(f.trim_end_matches('/').to_string());
        }
        for b in s.get("%BACKUP%").into_iter().flatten() {
            let p = b.split('\t').next().unwrap();
            paths.insert(format!("{p}.pacnew"));
            paths.insert(format!("{p}.pacsave"));
        }
    };
    for db in [&dt, &do_, &local_db(base)] {
        for files in db.values() {
            if let Some(f) = files.get("files") {
                add_paths(f);
            }
        }
    }
    for n in names {
        match (dt.get(n), do_.get(n)) {
            (Some(_), None) => diffs.push(format!("local db {n}: pacman has it, hc1img not")),
            (None, Some(_)) => diffs.push(format!("local db {n}: hc1img has it, pacman not")),
            (Some(a), Some(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let (x, y) = (a.get(k), b.get(k));
                    let same = match (x, y) {
                        (Some(x), Some(y)) if k == "desc" => {
                            without_installdate(x) == without_installdate(y)
                        }
                        (Some(x), Some(y)) if k == "mtree" => x == y,
                        (x, y) => x == y,
                    };
                    if !same {
                        let show = |v: Option<&Vec<u8>>| match v {
                            None => "(none)".to_string(),
                            Some(v) if k == "mtree" => {
                                format!("{} bytes md5 {}", v.len(), md5_hex(v))
                            }
                            Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
                        };
                        diffs.push(format!(
                            "local db {n}/{k}: pacman {} hc1img {}",
                            show(x),
                            show(y)
                        ));
                    }
                }
            }
            (None, None) => {}
        }
    }
    let paths: Vec<String> = paths.into_iter().filter(|p| !p.is_empty()).collect();
    let meta = image_meta(fs, &paths, work);
    COMPARED.fetch_add(paths.len(), std::sync::atomic::Ordering::SeqCst);
    for p in &paths {
        let ((a, ma), (b, _)) = (node(theirs, p), node(ours, p));
        if a != b {
            diffs.push(format!("/{p}: pacman {a:?}, hc1img {b:?}"));
            continue;
        }
        if a == Node::Missing {
            continue;
        }
        let (mb, xb) = meta.get(p).cloned().unwrap_or_default();
        if ma != mb {
            let show = |m: Option<Meta>| match m {
                Some((Some(mode), u, g)) => format!("mode {mode:o} owner {u}:{g}"),
                Some((None, u, g)) => format!("owner {u}:{g}"),
                None => "(no stat)".to_string(),
            };
            diffs.push(format!("/{p}: pacman {}, hc1img {}", show(ma), show(mb)));
        }
        let xa = xattrs_of(&theirs.join(p));
        if xa != xb {
            diffs.push(format!("/{p}: xattrs pacman {xa:?}, hc1img {xb:?}"));
        }
    }
    diffs
}

/// One case's package files: the old ones (with `--asdeps`), the new ones.
type Built = (Vec<(PathBuf, bool)>, Vec<PathBuf>);

/// Build every case's packages (old into `old/`, new into `new/` and signed), in parallel.
fn build_all(
    dir: &Path,
    cases: &[Case],
    gpg: &crate::gpg_keys::Gpg,
) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<Vec<PathBuf>>) {
    let old_dir = dir.join("old");
    let new_dir = dir.join("new");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let threads = 3;
    let results: Vec<Built> = std::thread::scope(|sc| {
        let chunks: Vec<_> = (0..threads)
            .map(|t| {
                let (old_dir, new_dir) = (&old_dir, &new_dir);
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for (i, c) in cases.iter().enumerate().filter(|(i, _)| i % threads == t) {
                        let work = dir.join(format!("work/{i}"));
                        let old: Vec<(PathBuf, bool)> = c
                            .old
                            .iter()
                            .map(|(p, asdep)| (pkgs::build_pkg(&work, old_dir, p), *asdep))
                            .collect();
                        let new: Vec<PathBuf> = c
                            .new
                            .iter()
                            .map(|p| {
                                if c.makepkg {
                                    let f = pkgs::makepkg(&work.join(format!("mk-{}", p.name)), p);
                                    let to = new_dir.join(f.file_name().unwrap());
                                    std::fs::copy(&f, &to).unwrap();
                                    to
                                } else {
                                    pkgs::build_pkg(&work, new_dir, p)
                                }
                            })
                            .collect();
                        let refs: Vec<&PathBuf> = new.iter().collect();
                        pkgs::sign_all(gpg, &refs);
                        out.push((i, (old, new)));
                    }
                    out
                })
            })
            .collect();
        let mut all: Vec<(usize, Built)> =
            chunks.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_by_key(|x| x.0);
        all.into_iter().map(|(_, b)| b).collect()
    });
    let mut explicit = Vec::new();
    let mut asdeps = Vec::new();
    let mut new = Vec::new();
    for (o, n) in results {
        for (f, d) in o {
            if d {
                asdeps.push(f);
            } else {
                explicit.push(f);
            }
        }
        new.push(n);
    }
    (explicit, asdeps, new)
}

/// The verdict on one group, per case: `None` agrees, else the description of the
/// disagreement.
fn judge(
    w: &World,
    ids: &[usize],
    theirs: &Outcome,
    ours: &Outcome,
    g: &Path,
) -> Result<BTreeMap<usize, Vec<String>>, BTreeSet<usize>> {
    match (theirs, ours) {
        (Outcome::Refused(_), Outcome::Refused(_)) if ids.len() == 1 => Ok(BTreeMap::new()),
        (Outcome::Done(t), Outcome::Done(o)) => {
            let diffs = compare(&w.root, t, o, &g.join("root.ext4"), g);
            let mut per: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for d in diffs {
                let named = cases_named(&d, ids);
                if named.is_empty() {
                    for &i in ids {
                        per.entry(i).or_default().push(format!("(group-wide) {d}"));
                    }
                }
                for i in named {
                    per.entry(i).or_default().push(d.clone());
                }
            }
            Ok(per)
        }
        (t, o) => {
            let msg = |x: &Outcome| match x {
                Outcome::Refused(m) => m.clone(),
                Outcome::Done(_) => String::new(),
            };
            let mut named = cases_named(&msg(t), ids);
            named.extend(cases_named(&msg(o), ids));
            if ids.len() == 1 {
                let say = |who: &str, x: &Outcome| match x {
                    Outcome::Refused(m) => format!("{who} refused:\n{}", indent(m)),
                    Outcome::Done(_) => format!("{who} accepted"),
                };
                let mut per = BTreeMap::new();
                per.insert(
                    ids[0],
                    vec![format!("{}\n{}", say("pacman", t), say("hc1img", o))],
                );
                Ok(per)
            } else if named.is_empty() {
                // Nobody to blame: run them all alone.
                Err(ids.iter().copied().collect())
            } else {
                Err(named)
            }
        }
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn upgrades_agree_with_pacman() {
    let t0 = std::time::Instant::now();
    let on = features();
    let cases = cases(&on);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();

    // The signer, and pacman's keyring trusting it (made once: pacman-key --init is the slow
    // part), beside building the packages.
    let gpg = pkgs::signer(&dir);
    let keyring = dir.join("keyring.asc");
    let fpr = gpg
        .gen_key_fpr("Packages Test <pk@example.invalid>")
        .unwrap();
    let gpgdir = dir.join("pacman-gnupg");
    let hookdir = dir.join("hooks");
    std::fs::create_dir_all(&hookdir).unwrap();
    let (explicit, asdeps, new_files) = std::thread::scope(|sc| {
        let keys = sc.spawn(|| {
            let g = gpgdir.to_str().unwrap();
            run_ok("pacman-key", &["--gpgdir", g, "--init"]);
            run_ok(
                "pacman-key",
                &["--gpgdir", g, "--add", keyring.to_str().unwrap()],
            );
            run_ok("pacman-key", &["--gpgdir", g, "--lsign-key", &fpr]);
        });
        let built = build_all(&dir, &cases, &gpg);
        keys.join().unwrap();
        built
    });
    // The anchor `install` names (never in the repository).
    let anchor = pkgs::build_pkg(
        &dir.join("work/anchor"),
        &dir.join("old"),
        &Pkg {
            files: vec![Entry::file(
                "usr/share/hc1-anchor/README",
                0o644,
                b"anchor\n".to_vec(),
            )],
            ..Pkg::new("hc1-anchor", "1-1")
        },
    );
    let t_built = t0.elapsed();

    // R: the synthetic tarball, extracted; the old packages installed by pacman -U.
    let root = dir.join("R");
    std::fs::create_dir_all(&root).unwrap();
    let base = alarm_tarball(
        &dir,
        &Alarm {
            section_programs: false,
            ..Alarm::default()
        },
    );
    run_ok(
        "bsdtar",
        &["-xpf", base.to_str().unwrap(), "-C", root.to_str().unwrap()],
    );
    // The kernel, initramfs and shell are noise: smaller noise makes every copy of R cheap.
    for (blob, seed) in [
        ("boot/zImage", 5),
        ("boot/initramfs-linux.img", 6),
        ("usr/bin/bash", 8),
    ] {
        std::fs::write(root.join(blob), noise(8192, seed)).unwrap();
    }
    std::fs::create_dir_all(root.join("var/lib/pacman")).unwrap();
    let conf = dir.join("pacman-U.conf");
    std::fs::write(
        &conf,
        "[options]\nArchitecture = armv7h\nSigLevel = Never\n",
    )
    .unwrap();
    let w0 = World {
        dir: dir.clone(),
        root: root.clone(),
        tarball: PathBuf::new(),
        keyring: keyring.clone(),
        gpgdir: gpgdir.clone(),
        hookdir: hookdir.clone(),
        new_files: Vec::new(),
    };
    let opts = pacman_opts(
        &w0,
        &conf,
        &dir.join("pacman-cache"),
        &dir.join("pacman-U.log"),
    );
    let mut o: Vec<&str> = opts.iter().map(String::as_str).collect();
    o.push("-U");
    o.push("--noscriptlet");
    // One -U for all (some depend on others), then the reasons (`pacman -D --asdeps`).
    let mut all: Vec<&str> = explicit
        .iter()
        .chain(&asdeps)
        .map(|p| p.to_str().unwrap())
        .collect();
    all.push(anchor.to_str().unwrap());
    pkgs::pacman_ok(&root, &o, &all);
    let deps: Vec<&str> = cases
        .iter()
        .flat_map(|c| &c.old)
        .filter(|(_, d)| *d)
        .map(|(p, _)| p.name.as_str())
        .collect();
    if !deps.is_empty() {
        let mut d = vec!["--config", conf.to_str().unwrap(), "-D", "--asdeps"];
        d.extend(deps);
        pkgs::pacman_ok(&root, &d, &[]);
    }
    for c in &cases {
        for e in &c.edits {
            match e {
                Edit::Write(p, data) => {
                    let f = root.join(p);
                    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                    std::fs::write(f, data).unwrap();
                }
                Edit::Remove(p) => std::fs::remove_file(root.join(p)).unwrap(),
            }
        }
    }
    let tarball = dir.join("alarm-diff.tar");
    run_ok(
        "bsdtar",
        &[
            "-cf",
            tarball.to_str().unwrap(),
            "--format=pax",
            "-C",
            root.to_str().unwrap(),
            ".",
        ],
    );
    let w = World {
        tarball,
        new_files,
        ..w0
    };
    let t_root = t0.elapsed();

    // Groups: the accepting cases GROUP at a time, the refusing ones alone.
    let mut queue: Vec<Vec<usize>> = Vec::new();
    let acc: Vec<usize> = (0..cases.len()).filter(|&i| !cases[i].refuse).collect();
    for chunk in acc.chunks(GROUP) {
        queue.push(chunk.to_vec());
    }
    for i in (0..cases.len()).filter(|&i| cases[i].refuse) {
        queue.push(vec![i]);
    }
    // Rounds: every group of a round runs (THREADS at a time); the cases a refused group
    // names make the next round, alone, with the rest of their group.
    let failures: std::sync::Mutex<BTreeMap<usize, Vec<String>>> = Default::default();
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let both_refused = std::sync::atomic::AtomicUsize::new(0);
    while !queue.is_empty() {
        let round = std::sync::Mutex::new(std::mem::take(&mut queue));
        let next = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            for _ in 0..THREADS {
                sc.spawn(|| {
                    loop {
                        let Some(ids) = round.lock().unwrap().pop() else {
                            break;
                        };
                        let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        let (theirs, ours, g) = run_group(&w, &format!("g{n}"), &ids);
                        if let (Outcome::Refused(a), Outcome::Refused(b)) = (&theirs, &ours)
                            && ids.len() == 1
                        {
                            both_refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            {
                                eprintln!(
                                    "{}: both refuse\n{}\n{}",
                                    cases[ids[0]].prefix,
                                    indent(a),
                                    indent(b)
                                );
                            }
                        }
                        match judge(&w, &ids, &theirs, &ours, &g) {
                            Ok(per) => {
                                let mut f = failures.lock().unwrap();
                                for (i, d) in per {
                                    f.entry(i).or_default().extend(d);
                                }
                            }
                            Err(mut named) => {
                                // Each refusal names one case; its scenario's other cases
                                // in the group likely meet the same fate: they run alone
                                // too, so the rest is run again once, not once per case.
                                let scenarios: BTreeSet<&str> =
                                    named.iter().map(|&i| cases[i].scenario).collect();
                                named.extend(
                                    ids.iter()
                                        .copied()
                                        .filter(|&i| scenarios.contains(cases[i].scenario)),
                                );
                                let rest: Vec<usize> =
                                    ids.iter().copied().filter(|i| !named.contains(i)).collect();
                                let mut q = next.lock().unwrap();
                                q.extend(named.into_iter().map(|i| vec![i]));
                                if !rest.is_empty() {
                                    q.push(rest);
                                }
                            }
                        }
                        let _ = std::fs::remove_dir_all(&g);
                    }
                });
            }
        });
        queue = next.into_inner().unwrap();
    }
    let failures = failures.into_inner().unwrap();
    let runs = runs.into_inner();
    let both_refused = both_refused.into_inner();
    // pacman-key started an agent for its keyring.
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&gpgdir)
        .args(["--kill", "gpg-agent"])
        .output();
    let elapsed = t0.elapsed();
    let compared = COMPARED.load(std::sync::atomic::Ordering::SeqCst);
    let changed = CHANGED.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "pacman_diff: {} cases ({} refused by both; {compared} paths compared, {changed} local database entries changed by pacman), {runs} transactions, features {:?}; packages built in {:.1?}, root in {:.1?}, total {:.1?}",
        cases.len(),
        both_refused,
        on,
        t_built,
        t_root - t_built,
        elapsed
    );
    if !failures.is_empty() {
        let mut report = String::new();
        let mut by_feature: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, d) in &failures {
            let c = &cases[*i];
            *by_feature.entry(c.scenario).or_default() += 1;
            report.push_str(&describe(c, &on));
            for line in d {
                report.push_str(&format!("  DIFFERS: {line}\n"));
            }
            report.push('\n');
        }
        // Each feature: failing cases that use it / cases that use it.
        let mut tally: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (i, c) in cases.iter().enumerate() {
            for f in &c.used {
                let t = tally.entry(f).or_default();
                t.1 += 1;
                if failures.contains_key(&i) {
                    t.0 += 1;
                }
            }
        }
        let tally: Vec<String> = tally
            .iter()
            .map(|(f, (bad, all))| format!("{f} {bad}/{all}"))
            .collect();
        panic!(
            "{} of {} cases disagree with pacman (by scenario: {by_feature:?}; failing/using per feature: {}):\n\n{report}",
            failures.len(),
            cases.len(),
            tally.join(", ")
        );
    }
    if both_refused < cases.len() {
        assert!(
            compared > 0 && changed > 0,
            "nothing was compared ({compared} paths) or upgraded ({changed} entries)"
        );
    }
}
