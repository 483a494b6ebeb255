//! `hc1img::kmod` against Debian bookworm's kmod 30 (`depmod`, `modprobe`) on two real Debian
//! armhf kernels (`HC1IMG_TEST_KERNELS`, from scripts/fixtures/debian-armhf-kernels.sh).
//!
//! For each case, a depmod root is made in a temporary directory: kmod 30 as Debian builds
//! it reads `ROOT/lib/modules/VERSION/` (not `usr/lib`), so the module files are symlinked
//! there from the fixture (depmod follows them and writes only its own files), and the
//! kernel's lists are written as real files. `depmod -b ROOT -C EMPTY_DIR VERSION` (no host
//! configuration) runs there, hc1img's `Depmod` reads the same files, and:
//!
//! - every file depmod writes must be one hc1img writes and the other way round, each
//!   byte-identical (the ten files: the text ones and the `.bin` indexes);
//! - for both kernels as shipped, hc1img's files are also put in a root of their own and
//!   queried with `modprobe -d ROOT -S VERSION --show-depends MODULE` (usb-storage, uas,
//!   sd_mod, xhci-pci, r8152, overlay, bridge, nls_ascii, some built-in modules and every 50th
//!   module) and `modprobe -R ALIAS` (every 80th alias of modules.alias and some built-in
//!   aliases): the answers must be those modprobe gives from depmod's files.
//!
//! Variants of kernel A: some modules compressed with xz and zstd (Debian's kmod is built
//! `+ZSTD +XZ -ZLIB`: it skips `.ko.gz` files, so gzip is checked by reading each gzipped
//! module back to the same `ModuleInfo` instead); a `modules.order` with lines removed (the
//! modules it no longer names follow in depmod's hash-table order) and one whose last line
//! lacks its newline; no kernel lists at all (on a small tree); lists crafted to hit depmod's
//! parsing corners; and `Depmod::subset` for an initramfs-like set of modules against depmod
//! run on a tree holding only those.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use crate::common::run_ok;
use hc1img::kmod::{self, Depmod, KernelLists, ModuleInfo};

/// The fixture directory: A/, B/, A.version, B.version.
fn kernels() -> PathBuf {
    let Some(path) = std::env::var_os("HC1IMG_TEST_KERNELS") else {
        panic!(
            "HC1IMG_TEST_KERNELS is not set: run the suite with scripts/test, or export \
             HC1IMG_TEST_KERNELS=$(scripts/fixtures/debian-armhf-kernels.sh)"
        );
    };
    PathBuf::from(path)
}

/// One kernel of the fixture.
struct Kernel {
    version: String,
    /// `usr/lib/modules/<version>/` of the unpacked package.
    dir: PathBuf,
    /// Module paths relative to `dir`, sorted.
    modules: Vec<String>,
    lists: KernelLists,
}

fn load_kernel(slot: &str) -> Kernel {
    let base = kernels();
    let version = std::fs::read_to_string(base.join(format!("{slot}.version")))
        .unwrap_or_else(|e| panic!("{}/{slot}.version: {e}", base.display()))
        .trim()
        .to_string();
    let dir = base.join(slot).join("usr/lib/modules").join(&version);
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    let mut modules = vec![];
    walk(&dir, "", &mut modules);
    modules.retain(|p| kmod::is_module_path(p));
    modules.sort();
    assert!(
        modules.len() > 1000,
        "{}: only {} modules",
        dir.display(),
        modules.len()
    );
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_default();
    let lists = KernelLists {
        order: String::from_utf8(read("modules.order")).unwrap(),
        builtin: String::from_utf8(read("modules.builtin")).unwrap(),
        builtin_modinfo: read("modules.builtin.modinfo"),
    };
    assert!(!lists.order.is_empty() && !lists.builtin.is_empty());
    Kernel {
        version,
        dir,
        modules,
        lists,
    }
}

fn kernel(slot: &str) -> &'static Kernel {
    static A: OnceLock<Kernel> = OnceLock::new();
    static B: OnceLock<Kernel> = OnceLock::new();
    match slot {
        "A" => A.get_or_init(|| load_kernel("A")),
        _ => B.get_or_init(|| load_kernel("B")),
    }
}

/// Every file under `dir` (relative paths).
fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), &r, out);
        } else {
            out.push(r);
        }
    }
}

/// Where a module file of a test tree comes from.
enum Source {
    /// A symlink to this fixture file.
    Link(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// A test tree: module path -> source.
type Tree = BTreeMap<String, Source>;

/// The modules of kernel `k` as they are, optionally only those `keep` says.
fn plain_tree(k: &Kernel, keep: impl Fn(&str) -> bool) -> Tree {
    k.modules
        .iter()
        .filter(|p| keep(p))
        .map(|p| (p.clone(), Source::Link(k.dir.join(p))))
        .collect()
}

/// A depmod root holding `tree` and `lists` (an empty list is an absent file), plus `extra`
/// files (hc1img's indexes, for modprobe) in the modules directory.
struct Root {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// ROOT/lib/modules/VERSION
    dir: PathBuf,
    /// An empty configuration directory for `-C`.
    conf: PathBuf,
}

fn make_root(version: &str, tree: &Tree, lists: &KernelLists, extra: &[(String, Vec<u8>)]) -> Root {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = root.join("lib/modules").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = root.join("etc/depmod.d");
    std::fs::create_dir_all(&conf).unwrap();
    for (rel, src) in tree {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        match src {
            Source::Link(from) => std::os::unix::fs::symlink(from, &to).unwrap(),
            Source::Bytes(b) => std::fs::write(&to, b).unwrap(),
        }
    }
    for (name, data) in [
        ("modules.order", lists.order.as_bytes()),
        ("modules.builtin", lists.builtin.as_bytes()),
        ("modules.builtin.modinfo", lists.builtin_modinfo.as_slice()),
    ] {
        if !data.is_empty() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    for (name, data) in extra {
        std::fs::write(dir.join(name), data).unwrap();
    }
    Root {
        _tmp: tmp,
        root,
        dir,
        conf,
    }
}

/// Runs Debian's depmod on `r`; returns the files it wrote, by name, and its wall time.
fn run_depmod(r: &Root, version: &str) -> (BTreeMap<String, Vec<u8>>, f64) {
    let before: BTreeSet<String> = std::fs::read_dir(&r.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let t = Instant::now();
    let out = Command::new("depmod")
        .arg("-b")
        .arg(&r.root)
        .arg("-C")
        .arg(&r.conf)
        .arg(version)
        .output()
        .expect("running depmod (Debian package kmod; scripts/test installs it)");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "depmod -b {} {version} failed: {}",
        r.root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(&r.dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if !before.contains(&name) {
            files.insert(name.clone(), std::fs::read(r.dir.join(&name)).unwrap());
        }
    }
    (files, secs)
}

/// Reads every module of `tree` with hc1img (one file at a time, as the build does).
fn read_modules(tree: &Tree) -> Vec<ModuleInfo> {
    tree.iter()
        .map(|(rel, src)| {
            let bytes = match src {
                Source::Link(p) => std::fs::read(p).unwrap(),
                Source::Bytes(b) => b.clone(),
            };
            kmod::read_module(rel, &bytes).unwrap_or_else(|e| panic!("{e:#}"))
        })
        .collect()
}

/// Where two versions of a file first differ, for the failure message.
fn first_difference(name: &str, ours: &[u8], theirs: &[u8]) -> String {
    if !name.ends_with(".bin") {
        let (a, b) = (
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(theirs),
        );
        let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        for i in 0..la.len().max(lb.len()) {
            if la.get(i) != lb.get(i) {
                return format!(
                    "{name}: line {} differs:\n  hc1img: {:?}\n  depmod: {:?}\n  ({} vs {} lines)",
                    i + 1,
                    la.get(i),
                    lb.get(i),
                    la.len(),
                    lb.len()
                );
            }
        }
    }
    let at = ours
        .iter()
        .zip(theirs)
        .position(|(x, y)| x != y)
        .unwrap_or(ours.len().min(theirs.len()));
    format!(
        "{name}: {} bytes from hc1img, {} from depmod; first difference at byte {at}",
        ours.len(),
        theirs.len()
    )
}

/// hc1img's files equal depmod's, the same set and every byte.
fn assert_same_files(what: &str, ours: &[(String, Vec<u8>)], theirs: &BTreeMap<String, Vec<u8>>) {
    let our_names: BTreeSet<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    let their_names: BTreeSet<&str> = theirs.keys().map(String::as_str).collect();
    assert_eq!(
        our_names, their_names,
        "{what}: hc1img writes other files than depmod"
    );
    let diffs: Vec<String> = ours
        .iter()
        .filter(|(n, b)| theirs.get(n) != Some(b))
        .map(|(n, b)| first_difference(n, b, theirs.get(n).map_or(&[][..], |v| v)))
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: files differ from depmod's:\n{}",
        diffs.join("\n")
    );
}

/// depmod and hc1img on `tree`; returns hc1img's Depmod and files, with depmod's.
struct Compared {
    depmod: Depmod,
    ours: Vec<(String, Vec<u8>)>,
    theirs: BTreeMap<String, Vec<u8>>,
    root: Root,
}

fn compare(what: &str, version: &str, tree: &Tree, lists: &KernelLists) -> Compared {
    let root = make_root(version, tree, lists, &[]);
    let (theirs, depmod_secs) = run_depmod(&root, version);
    let t = Instant::now();
    let modules = read_modules(tree);
    let read_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let depmod = Depmod::new(version, lists, modules).unwrap_or_else(|e| panic!("{e:#}"));
    let ours = depmod.files().unwrap_or_else(|e| panic!("{e:#}"));
    let our_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {} modules; Debian depmod {depmod_secs:.2} s; hc1img: reading {read_secs:.2} s, \
         depmod and files {our_secs:.2} s",
        tree.len()
    );
    assert_same_files(what, &ours, &theirs);
    Compared {
        depmod,
        ours,
        theirs,
        root,
    }
}

/// `modprobe -d ROOT -S VERSION ARGS...`: exit status and output, ROOT replaced by "ROOT".
fn modprobe(root: &Root, version: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(&root.root)
        .arg("-S")
        .arg(version)
        .arg("-C")
        .arg(&root.conf)
        .args(args)
        .output()
        .expect("running modprobe (Debian package kmod)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        text.replace(&root.root.display().to_string(), "ROOT"),
    )
}

/// modprobe gives the same answers from hc1img's indexes as from depmod's.
fn query_both(k: &Kernel, c: &Compared, tree: &Tree) {
    let mine = make_root(&k.version, tree, &k.lists, &c.ours);
    let text = |n: &str| String::from_utf8(c.theirs[n].clone()).unwrap();

    let mut names: Vec<String> = [
        "usb-storage",
        "uas",
        "sd_mod",
        "xhci-pci",
        "r8152",
        "overlay",
        "bridge",
        "nls_ascii",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let all: Vec<String> = c.depmod.modules().map(|m| m.name.clone()).collect();
    names.extend(all.iter().step_by(50).cloned());
    names.extend(
        k.lists
            .builtin
            .lines()
            .step_by(40)
            .filter_map(kmod::module_name),
    );
    let mut loaded = 0;
    for name in &names {
        let theirs = modprobe(&c.root, &k.version, &["--show-depends", name]);
        let ours = modprobe(&mine, &k.version, &["--show-depends", name]);
        assert_eq!(ours, theirs, "modprobe --show-depends {name}");
        if theirs.0 && theirs.1.contains("insmod ") {
            loaded += 1;
        }
    }
    assert!(
        loaded > 50,
        "only {loaded} of {} modules resolved",
        names.len()
    );

    let mut aliases: Vec<String> = text("modules.alias")
        .lines()
        .skip(1)
        .step_by(80)
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .collect();
    let modinfo = String::from_utf8_lossy(&k.lists.builtin_modinfo).to_string();
    aliases.extend(
        modinfo
            .split('\0')
            .filter_map(|r| r.split_once(".alias=").map(|(_, a)| a.to_string()))
            .step_by(10),
    );
    let mut resolved = 0;
    for alias in &aliases {
        let theirs = modprobe(&c.root, &k.version, &["-R", alias]);
        let ours = modprobe(&mine, &k.version, &["-R", alias]);
        assert_eq!(ours, theirs, "modprobe -R {alias}");
        resolved += usize::from(theirs.0);
    }
    assert!(
        resolved * 2 > aliases.len(),
        "only {resolved} of {} aliases resolved",
        aliases.len()
    );
    eprintln!(
        "kernel {}: modprobe agrees on {} --show-depends and {} -R queries",
        k.version,
        names.len(),
        aliases.len()
    );
}

fn as_shipped(slot: &str) {
    let k = kernel(slot);
    let tree = plain_tree(k, |_| true);
    let c = compare(
        &format!("kernel {slot} {}", k.version),
        &k.version,
        &tree,
        &k.lists,
    );
    // Plausibility: the files are not trivially empty.
    assert!(c.depmod.modules().count() == k.modules.len());
    assert!(
        c.depmod
            .deps("usb-storage")
            .is_some_and(|d| d.iter().any(|p| p.ends_with("/scsi_mod.ko")))
    );
    query_both(k, &c, &tree);
}

#[test]
fn kernel_a_as_shipped() {
    as_shipped("A");
}

#[test]
fn kernel_b_as_shipped() {
    as_shipped("B");
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "xz" => {
            // As the kernel's Makefile.modinst: xz --check=crc32 --lzma2=dict=1MiB.
            let mut e = xz2::write::XzEncoder::new_stream(
                Vec::new(),
                xz2::stream::Stream::new_easy_encoder(6, xz2::stream::Check::Crc32).unwrap(),
            );
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 19).unwrap(),
        _ => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

/// Kernel A with usb-storage, uas, sd_mod and every 150th module compressed (xz, zstd in
/// turn), depmod's paths keeping the suffixes; the gzipped versions read back the same.
#[test]
fn compressed_modules() {
    let k = kernel("A");
    let picked: BTreeSet<&String> = k
        .modules
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            i % 150 == 7
                || p.ends_with("/usb-storage.ko")
                || p.ends_with("/uas.ko")
                || p.ends_with("/sd_mod.ko")
        })
        .map(|(_, p)| p)
        .collect();
    let version = run_ok("depmod", &["-V"]);
    assert!(
        version.contains("+XZ") && version.contains("+ZSTD"),
        "Debian's depmod no longer reads xz and zstd modules: {version}"
    );
    let mut tree = Tree::new();
    let mut gz_checked = 0;
    for p in &k.modules {
        if !picked.contains(p) {
            tree.insert(p.clone(), Source::Link(k.dir.join(p)));
            continue;
        }
        let plain = std::fs::read(k.dir.join(p)).unwrap();
        let kind = if gz_checked % 2 == 0 { "xz" } else { "zst" };
        tree.insert(format!("{p}.{kind}"), Source::Bytes(compress(kind, &plain)));
        // gzip: Debian's depmod cannot read it; hc1img reads the same module.
        let want = kmod::read_module(p, &plain).unwrap();
        let gz = kmod::read_module(&format!("{p}.gz"), &compress("gz", &plain)).unwrap();
        assert_eq!(
            ModuleInfo {
                path: want.path.clone(),
                ..gz
            },
            want
        );
        gz_checked += 1;
    }
    assert!(picked.len() > 20 && gz_checked == picked.len());
    let c = compare("kernel A, compressed modules", &k.version, &tree, &k.lists);
    let dep = String::from_utf8_lossy(&c.theirs["modules.dep"]).to_string();
    assert!(dep.contains("usb-storage.ko.") && dep.contains(".ko.zst") && dep.contains(".ko.xz"));
}

/// Kernel A with a `modules.order` missing every 9th line: those modules come last, in
/// depmod's hash-table order, which shows in modules.dep, modules.alias and the priorities.
#[test]
fn partial_modules_order() {
    let k = kernel("A");
    let order: String = k
        .lists
        .order
        .lines()
        .enumerate()
        .filter(|(i, _)| i % 9 != 4)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let lists = KernelLists {
        order,
        ..k.lists.clone()
    };
    let tree = plain_tree(k, |_| true);
    compare("kernel A, partial modules.order", &k.version, &tree, &lists);
    // A corrupted order (last line without its newline): no sorting at all.
    let lists = KernelLists {
        order: k.lists.order.trim_end().to_string(),
        ..k.lists.clone()
    };
    let tree = plain_tree(k, |p| p.contains("/usb/") || p.contains("/scsi/"));
    compare(
        "kernel A, corrupted modules.order",
        &k.version,
        &tree,
        &lists,
    );
}

/// No modules.order, modules.builtin or modules.builtin.modinfo: depmod writes empty
/// builtin indexes and orders all modules by its hash table.
#[test]
fn no_kernel_lists() {
    let k = kernel("B");
    let tree = plain_tree(k, |p| p.contains("/usb/") || p.contains("/net/bridge/"));
    assert!(tree.len() > 50);
    let c = compare(
        "kernel B, no lists",
        &k.version,
        &tree,
        &KernelLists::default(),
    );
    assert!(c.theirs["modules.builtin.bin"].is_empty());
}

/// `Depmod::subset` for an initramfs-like set (the closure of a few storage and network
/// modules), against depmod on a tree of only those files.
#[test]
fn subset_for_an_initramfs() {
    let k = kernel("A");
    let tree = plain_tree(k, |_| true);
    let full = Depmod::new(&k.version, &k.lists, read_modules(&tree)).unwrap();
    let keep = full
        .closure(&[
            "usb-storage",
            "uas",
            "sd_mod",
            "ext4",
            "r8152",
            "xhci-plat-hcd",
            "unix",
        ])
        .unwrap();
    assert!(keep.len() > 10, "{keep:?}");
    assert!(
        full.closure(&["no-such-module"])
            .unwrap_err()
            .to_string()
            .contains("no-such-module")
    );
    let sub = full.subset(&keep);
    let small: Tree = keep
        .iter()
        .map(|p| (p.clone(), Source::Link(k.dir.join(p))))
        .collect();
    let root = make_root(&k.version, &small, &k.lists, &[]);
    let (theirs, _) = run_depmod(&root, &k.version);
    assert_same_files("initramfs subset", &sub.files().unwrap(), &theirs);
    // The subset's modules depend on the same modules as in the full set (the order may
    // differ: it follows the numbering of the smaller graph).
    for m in sub.modules() {
        let set = |d: &Depmod| {
            d.deps(&m.name).map(|v| {
                v.into_iter()
                    .map(str::to_string)
                    .collect::<BTreeSet<String>>()
            })
        };
        assert_eq!(set(&sub), set(&full), "{}", m.name);
    }
}

/// Kernel lists written to hit depmod's parsing corners, with the USB storage and SCSI
/// modules of kernel B: a `modules.order` with repeated lines (the last counts), unknown paths
/// and an empty line; a `modules.builtin` with a repeated line, lines not starting with a
/// letter (skipped) and one without a `.` (its name keeps the newline); a
/// `modules.builtin.modinfo` with one alias for two modules (the index's order of equal
/// priorities), bracket patterns (an unmatched one is left out), a record without `=` (which
/// swallows the next record), an empty alias and a last record without its NUL.
#[test]
fn crafted_kernel_lists() {
    let k = kernel("B");
    let tree = plain_tree(k, |p| {
        p.contains("/usb/storage/") || p.contains("/scsi/") || p.contains("/usb/core/")
    });
    let paths: Vec<&String> = tree.keys().collect();
    assert!(paths.len() > 20);
    let mut order = String::new();
    for p in paths.iter().rev().step_by(2) {
        order.push_str(&format!("{p}\n"));
    }
    order.push_str("kernel/not/there.ko\n\n");
    order.push_str(&format!("{}\n", paths[0]));
    for p in paths.iter().step_by(3) {
        order.push_str(&format!("{p}\n"));
    }
    let lists = KernelLists {
        order,
        builtin: "kernel/fs/ext4/ext4.ko\nkernel/net/unix/unix.ko\n9p-first-is-a-digit.ko\n\
                  kernel/crypto/crc32c-generic.ko\nkernel/nodot\n\n/kernel/abs.ko\n\
                  kernel/fs/ext4/ext4.ko\n"
            .into(),
        builtin_modinfo: b"ext4.alias=fs-ext4\0ext4.alias=fs-ext3\0ext4.license=GPL\0\
              unix.alias=net-pf-1\0crc32c_generic.alias=crypto-crc32c\0\
              crc32c_arm.alias=crypto-crc32c\0crc32c_generic.alias=crc32c\0\
              a.alias=pci:v[0-9]-x-[a-]\0a.alias=bad]\0a.alias=bad[-\0b.noequals\0\
              c.alias=swallowed\0d.alias=\0e.description=x=y\0.alias=nomod\0\
              f.alias=last-without-nul"
            .to_vec(),
    };
    let c = compare("kernel B, crafted lists", &k.version, &tree, &lists);
    let bin = &c.theirs["modules.builtin.alias.bin"];
    let r = kmod::index::Reader::new(bin).unwrap();
    let entries = r.entries().unwrap();
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert!(!keys.contains(&"swallowed"), "{keys:?}");
    // Equal priorities: the one inserted last comes first.
    assert_eq!(
        r.get("crypto_crc32c").unwrap(),
        Some(vec![(0, "crc32c_arm".into()), (0, "crc32c_generic".into())])
    );
    let builtin = kmod::index::Reader::new(&c.theirs["modules.builtin.bin"]).unwrap();
    assert!(builtin.get("nodot\n").unwrap().is_some());
}
