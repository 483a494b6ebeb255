//! The kernel a node boots, made to agree with itself across the root and the card: what
//! Arch Linux ARM's pacman hooks do after a kernel upgrade, done at build time without
//! running any tool.
//!
//! - **Module indexes** (kmod's `60-depmod.hook`): every kernel module tree of the root,
//!   `usr/lib/modules/<release>/` holding `modules.order` or a `kernel/` directory, gets what
//!   `depmod` writes ([`crate::kmod`]) when the transaction installed files into it or when it
//!   has no `modules.dep` (Arch Linux ARM's `linux-odroid-xu3` is built with
//!   `DEPMOD=/doesnt/exist`); a tree nothing touched keeps its indexes as they are.
//! - **The card's initramfs** (mkinitcpio's `90-mkinitcpio-install.hook`): the release of the
//!   card's `zImage` is read from the image itself ([`crate::kernel_image::zimage_version`]). When
//!   `initramfs-linux.img` holds modules of another release (the tarball's, after an upgrade
//!   of the kernel package, because the initramfs belongs to no package), its module tree is
//!   replaced by the card kernel's: the same module names, what they depend on, and the
//!   board's `root_modules` (what the root device needs: for the HC1's SSD behind a USB-SATA
//!   bridge `scsi_mod`, `sd_mod`, `usb-storage`, `uas`), with module indexes written for that
//!   subset ([`crate::kmod::Depmod::subset`]). The same happens when the release matches but a
//!   root module is missing (an initramfs made with `autodetect` on another machine). The
//!   archive is rewritten in its own compression ([`crate::initramfs`] says why it is
//!   rewritten rather than appended to).
//! - **The read-back check** ([`check_card`]): after `sd.img` is written its `zImage` and
//!   initramfs are read back from the FAT volume; a release mismatch or a root module that is
//!   neither in the initramfs nor built into the kernel stops the build with one line naming
//!   both.
//!
//! A root without any kernel module tree (a kernel with everything built in, or the small
//! synthetic tarballs of the tests) has nothing to match: the hardware lints of
//! [`crate::lint`] still warn as before.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};

use crate::edit::{self, EditContext};
use crate::initramfs::{self, Initramfs, NewFile};
use crate::kmod::{self, Depmod, KernelLists};
use crate::rootfs::import::BootFile;
use crate::tree::{FileData, NodeKind, Tree};

/// Where kernel module trees live in the root (merged `/usr`, as Arch Linux ARM).
pub const MODULES_DIR: &str = "usr/lib/modules";
/// The kernel image on the card (Arch Linux ARM's `linux-*` packages' `/boot/zImage`).
pub const ZIMAGE: &str = "zImage";
/// The initramfs on the card (mkinitcpio's `linux.preset`; no fallback image on ALARM).
pub const INITRAMFS: &str = "initramfs-linux.img";

/// Reads a regular file's contents from wherever the build holds them.
pub type ReadData<'a> = &'a dyn Fn(&FileData) -> Result<Vec<u8>>;

/// A module name as modprobe compares them (`-` and `_` alike).
fn norm(name: &str) -> String {
    kmod::module::normalize_name(name)
}

/// The module name of a module file's path (`kernel/…/usb-storage.ko.xz` → `usb_storage`),
/// `None` for a path that is not a module file.
fn module_name(path: &str) -> Option<String> {
    kmod::is_module_path(path)
        .then(|| kmod::module_name(path))
        .flatten()
}

/// The releases whose module trees the root holds, sorted.
pub fn module_trees(tree: &Tree) -> Vec<String> {
    let Some(dir) = tree.lookup(MODULES_DIR.as_bytes()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, id) in tree.children(dir) {
        if !tree.node(id).kind.is_dir() {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let has = |f: &str| {
            tree.lookup(format!("{MODULES_DIR}/{name}/{f}").as_bytes())
                .is_some()
        };
        if has("modules.order") || has("kernel") {
            out.push(name.to_string());
        }
    }
    out.sort();
    out
}

/// Every module file below `usr/lib/modules/<release>/`, as paths relative to it, with the
/// file's data (symbolic links, such as `build` and `source`, are not followed: depmod does
/// not look into them either).
fn module_files(tree: &Tree, release: &str) -> Vec<(String, FileData)> {
    let base = format!("{MODULES_DIR}/{release}");
    let Some(root) = tree.lookup(base.as_bytes()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((prefix, id)) = stack.pop() {
        for (name, child) in tree.children(id) {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            match &tree.node(child).kind {
                NodeKind::Dir(_) => stack.push((path, child)),
                NodeKind::File(d) if module_name(&path).is_some() => out.push((path, d.clone())),
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A text list next to the modules (`modules.order`, `modules.builtin`), empty when absent.
fn list(tree: &Tree, release: &str, name: &str, read: ReadData) -> Result<Vec<u8>> {
    let path = format!("{MODULES_DIR}/{release}/{name}");
    match tree.lookup(path.as_bytes()).map(|id| &tree.node(id).kind) {
        Some(NodeKind::File(d)) => read(d).with_context(|| format!("/{path}: cannot read")),
        _ => Ok(Vec::new()),
    }
}

/// The kernel's own lists for `release`.
fn kernel_lists(tree: &Tree, release: &str, read: ReadData) -> Result<KernelLists> {
    let text = |name: &str| -> Result<String> {
        String::from_utf8(list(tree, release, name, read)?)
            .with_context(|| format!("/{MODULES_DIR}/{release}/{name}: not UTF-8 text"))
    };
    Ok(KernelLists {
        order: text("modules.order")?,
        builtin: text("modules.builtin")?,
        builtin_modinfo: list(tree, release, "modules.builtin.modinfo", read)?,
    })
}

/// depmod over the module tree of `release`, reading one module at a time.
pub fn depmod(tree: &Tree, release: &str, read: ReadData) -> Result<Depmod> {
    let lists = kernel_lists(tree, release, read)?;
    let mut modules = Vec::new();
    for (path, data) in module_files(tree, release) {
        let bytes = read(&data).with_context(|| format!("/{MODULES_DIR}/{release}/{path}"))?;
        modules.push(
            kmod::read_module(&path, &bytes)
                .with_context(|| format!("/{MODULES_DIR}/{release}/{path}"))?,
        );
    }
    Depmod::new(release, &lists, modules)
        .with_context(|| format!("/{MODULES_DIR}/{release}/: cannot index the modules"))
}

/// What the module step did.
#[derive(Debug, Default)]
pub struct Indexed {
    /// depmod of every module tree of the root, by release.
    pub kernels: BTreeMap<String, Depmod>,
    /// The releases whose indexes were written.
    pub written: Vec<String>,
}

/// Write depmod's files for every module tree the transaction touched (`touched`: releases
/// with files installed by a package) or that has no `modules.dep`.
pub fn index_modules(
    tree: &mut Tree,
    ctx: &EditContext,
    touched: &BTreeSet<String>,
    read: ReadData,
) -> Result<Indexed> {
    let mut out = Indexed::default();
    for release in module_trees(tree) {
        let d = depmod(tree, &release, read)?;
        let dir = format!("{MODULES_DIR}/{release}");
        if touched.contains(&release) || !edit::exists(tree, &format!("{dir}/modules.dep")) {
            for (name, bytes) in d.files()? {
                edit::write_file(tree, ctx, &format!("{dir}/{name}"), bytes, 0o644, 0, 0)?;
            }
            out.written.push(release.clone());
        }
        out.kernels.insert(release, d);
    }
    Ok(out)
}

/// The releases a package's entries install module files into.
pub fn touched_releases<'a>(paths: impl IntoIterator<Item = &'a [u8]>) -> BTreeSet<String> {
    let prefix = format!("{MODULES_DIR}/");
    paths
        .into_iter()
        .filter_map(|p| {
            let rest = p.strip_prefix(prefix.as_bytes())?;
            let end = rest.iter().position(|&b| b == b'/')?;
            std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
        })
        .collect()
}

/// Make the card's initramfs carry the modules of the card's kernel (see the module docs).
/// `boot` is the card's files; returns a note when the initramfs was rewritten.
pub fn card_initramfs(
    boot: &mut BTreeMap<String, BootFile>,
    tree: &Tree,
    kernels: &BTreeMap<String, Depmod>,
    root_modules: &[String],
    read: ReadData,
) -> Result<Option<String>> {
    if kernels.is_empty() {
        return Ok(None);
    }
    let Some(zimage) = boot.get(ZIMAGE) else {
        return Ok(None);
    };
    let release = crate::kernel_image::zimage_version(&zimage.data)
        .with_context(|| format!("/boot/{ZIMAGE}: cannot read the kernel's release"))?;
    let Some(depmod) = kernels.get(&release) else {
        bail!(
            "/boot/{ZIMAGE} is kernel {release}, but the root has modules only for {}: the kernel \
             package and its modules disagree",
            kernels.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let Some(file) = boot.get(INITRAMFS) else {
        let missing: Vec<&String> = root_modules
            .iter()
            .filter(|m| !depmod.is_builtin(m))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        bail!(
            "/boot/{INITRAMFS} is missing, and kernel {release} has the root device's modules {} \
             as modules, not built in",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let module_file = |path: &str| -> Result<Vec<u8>> {
        let full = format!("{MODULES_DIR}/{release}/{path}");
        match tree.lookup(full.as_bytes()).map(|id| &tree.node(id).kind) {
            Some(NodeKind::File(d)) => read(d).with_context(|| format!("/{full}")),
            _ => bail!("/{full}: not a file in the root"),
        }
    };
    let Some((bytes, note)) = fit_initramfs(&file.data, depmod, root_modules, &module_file)? else {
        return Ok(None);
    };
    let mtime = file.mtime;
    boot.insert(
        INITRAMFS.to_string(),
        BootFile {
            data: bytes.into(),
            mtime,
        },
    );
    Ok(Some(note))
}

/// The initramfs `data` fitted to the kernel of `depmod` (see the module docs): `None` when
/// it already holds that kernel's modules and every root module; else the new archive and a
/// note saying what changed. `module_file` reads a file below that kernel's module tree
/// (`kernel/…/x.ko.xz`, `modules.order`).
pub fn fit_initramfs(
    data: &[u8],
    depmod: &Depmod,
    root_modules: &[String],
    module_file: &dyn Fn(&str) -> Result<Vec<u8>>,
) -> Result<Option<(Vec<u8>, String)>> {
    let release = depmod.version().to_string();
    let mut ird = initramfs::read(data).with_context(|| format!("/boot/{INITRAMFS}"))?;
    let versions = ird.module_versions();
    let old = versions.first().cloned();
    if versions.len() > 1 {
        bail!(
            "/boot/{INITRAMFS} holds modules of several kernels ({}); expected one",
            versions.join(", ")
        );
    }
    let present: BTreeSet<String> = old
        .as_deref()
        .map(|v| {
            ird.modules(v)
                .iter()
                .filter_map(|p| module_name(p))
                .collect()
        })
        .unwrap_or_default();
    let missing_root: Vec<&String> = root_modules
        .iter()
        .filter(|m| !present.contains(&norm(m)) && !depmod.is_builtin(m))
        .collect();
    if old.as_deref() == Some(release.as_str()) && missing_root.is_empty() {
        return Ok(None);
    }
    // The same module set, as far as the new kernel has it, plus the root device's modules.
    let mut wanted: Vec<String> = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    for name in &present {
        if depmod.deps(name).is_some() {
            wanted.push(name.clone());
        } else if !depmod.is_builtin(name) {
            gone.push(name.clone());
        }
    }
    for m in root_modules {
        if !depmod.is_builtin(m) {
            wanted.push(norm(m));
        }
    }
    let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let keep = depmod.closure(&names).with_context(|| {
        format!("/boot/{INITRAMFS}: the modules it needs are not all in kernel {release}")
    })?;
    let mut files = Vec::new();
    for path in &keep {
        files.push(NewFile {
            path: path.clone(),
            data: module_file(path)?,
            mode: 0o644,
        });
    }
    for name in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        // The kernel's lists, when it has them.
        let data = module_file(name).unwrap_or_default();
        if !data.is_empty() {
            files.push(NewFile {
                path: name.to_string(),
                data,
                mode: 0o644,
            });
        }
    }
    for (name, data) in depmod.subset(&keep).files()? {
        files.push(NewFile {
            path: name,
            data,
            mode: 0o644,
        });
    }
    match &old {
        Some(v) => ird.replace_modules(v, &release, files),
        None => ird.add_modules(&release, files),
    }
    .with_context(|| format!("/boot/{INITRAMFS}: cannot put the modules of kernel {release} in"))?;
    let bytes = ird
        .write()
        .with_context(|| format!("/boot/{INITRAMFS}: cannot write it again"))?;
    let mut note = match &old {
        Some(v) if *v != release => format!(
            "/boot/{INITRAMFS}: its modules were for kernel {v}; now {} modules of kernel {release} (the card's zImage)",
            keep.len()
        ),
        _ => format!(
            "/boot/{INITRAMFS}: added the root device's modules of kernel {release} ({} modules in all)",
            keep.len()
        ),
    };
    if !gone.is_empty() {
        note.push_str(&format!(
            "; not in kernel {release}, left out: {}",
            gone.join(", ")
        ));
    }
    Ok(Some((bytes, note)))
}

/// The kernel on a card, as [`check_card`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardKernel {
    /// The release of `zImage`.
    pub kernel: String,
    /// The releases of the module trees inside the initramfs (none without one).
    pub initramfs: Vec<String>,
}

/// Read a card's kernel and initramfs: the release of each.
pub fn card_kernel(
    zimage: &[u8],
    initramfs: Option<&[u8]>,
) -> Result<(CardKernel, Option<Initramfs>)> {
    let kernel = crate::kernel_image::zimage_version(zimage)
        .with_context(|| format!("/boot/{ZIMAGE}: cannot read the kernel's release"))?;
    card_release(kernel, initramfs)
}

/// [`card_kernel`] for a kernel whose release is known.
fn card_release(
    kernel: String,
    initramfs: Option<&[u8]>,
) -> Result<(CardKernel, Option<Initramfs>)> {
    let ird = initramfs
        .map(|b| initramfs::read(b).with_context(|| format!("/boot/{INITRAMFS}")))
        .transpose()?;
    let versions = ird
        .as_ref()
        .map(Initramfs::module_versions)
        .unwrap_or_default();
    Ok((
        CardKernel {
            kernel,
            initramfs: versions,
        },
        ird,
    ))
}

/// The read-back check: the card's initramfs has modules of exactly the card's kernel, and
/// every root module in it or built into that kernel (`builtin`: the root's
/// `modules.builtin` names of that release).
pub fn check_card(
    zimage: &[u8],
    initramfs: Option<&[u8]>,
    root_modules: &[String],
    builtin: &dyn Fn(&str) -> bool,
) -> Result<CardKernel> {
    let (card, ird) = card_kernel(zimage, initramfs)?;
    check_release(card, ird, root_modules, builtin)
}

/// [`check_card`] once the releases are read.
fn check_release(
    card: CardKernel,
    ird: Option<Initramfs>,
    root_modules: &[String],
    builtin: &dyn Fn(&str) -> bool,
) -> Result<CardKernel> {
    let k = &card.kernel;
    let Some(ird) = ird else {
        if let Some(m) = root_modules.iter().find(|m| !builtin(m)) {
            bail!(
                "the card has kernel {k} and no {INITRAMFS}, but the root device needs module {m}"
            );
        }
        return Ok(card);
    };
    match card.initramfs.as_slice() {
        [v] if v == k => {}
        [] if root_modules.iter().all(|m| builtin(m)) => return Ok(card),
        [] => bail!("the card's kernel is {k}, but its {INITRAMFS} has no kernel modules"),
        vs => bail!(
            "the card's kernel is {k}, but its {INITRAMFS} has modules for {}",
            vs.join(", ")
        ),
    }
    let present: BTreeSet<String> = ird
        .modules(k)
        .iter()
        .filter_map(|p| module_name(p))
        .collect();
    if let Some(m) = root_modules
        .iter()
        .find(|m| !present.contains(&norm(m)) && !builtin(m))
    {
        bail!("the card's {INITRAMFS} (kernel {k}) lacks {m}, which the root device needs");
    }
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmod::ModuleInfo;

    const OLD: &str = "6.6.138-1-ARCH";
    const NEW: &str = "6.6.143-1-ARCH";

    /// A plain newc archive of `(name, mode, data)`, written by hand (the kernel's
    /// buffer-format.rst), ending with `TRAILER!!!`.
    fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        crate::initramfs::cpio::hand_made(entries)
    }

    fn module(path: &str, exports: &[&str], undefined: &[&str]) -> ModuleInfo {
        kmod::module::test_module(path, exports, undefined)
    }

    /// Kernel NEW: `ahci` uses `libata`'s symbol, `usb-storage` uses `usbcore`'s, `sd_mod`
    /// is built in.
    fn new_kernel() -> Depmod {
        let lists = KernelLists {
            order: "kernel/libata.ko\nkernel/ahci.ko\nkernel/usbcore.ko\nkernel/usb-storage.ko\n"
                .into(),
            builtin: "kernel/drivers/scsi/sd_mod.ko\n".into(),
            builtin_modinfo: Vec::new(),
        };
        Depmod::new(
            NEW,
            &lists,
            vec![
                module("kernel/libata.ko", &["ata_sym"], &[]),
                module("kernel/ahci.ko", &[], &["ata_sym"]),
                module("kernel/usbcore.ko", &["usb_sym"], &[]),
                module("kernel/usb-storage.ko", &[], &["usb_sym"]),
            ],
        )
        .unwrap()
    }

    fn file(path: &str) -> Result<Vec<u8>> {
        Ok(format!("{NEW}/{path}").into_bytes())
    }

    const DIR: u32 = 0o040755;
    const REG: u32 = 0o100644;

    #[test]
    fn the_old_kernels_modules_become_the_new_kernels_with_their_dependencies() {
        let old_dir = format!("usr/lib/modules/{OLD}");
        let old_ko = format!("{old_dir}/kernel/ahci.ko");
        let old_kernel = format!("{old_dir}/kernel");
        let archive = newc(&[
            ("init", 0o100755, b"#!/bin/sh\n"),
            ("usr", DIR, b""),
            ("usr/lib", DIR, b""),
            ("usr/lib/modules", DIR, b""),
            (&old_dir, DIR, b""),
            (&old_kernel, DIR, b""),
            (&old_ko, REG, b"old ahci"),
        ]);
        let roots = vec!["usb-storage".to_string(), "sd_mod".to_string()];
        let (bytes, note) = fit_initramfs(&archive, &new_kernel(), &roots, &file)
            .unwrap()
            .expect("the archive changes");
        assert!(note.contains(&format!("were for kernel {OLD}")), "{note}");
        let got = initramfs::read(&bytes).unwrap();
        assert_eq!(got.module_versions(), [NEW]);
        // ahci with libata (its dependency), usb-storage with usbcore; sd_mod is built in.
        assert_eq!(
            got.modules(NEW),
            [
                "kernel/ahci.ko",
                "kernel/libata.ko",
                "kernel/usb-storage.ko",
                "kernel/usbcore.ko"
            ]
        );
        let data = |name: &str| {
            got.entries()
                .find(|e| e.path() == format!("usr/lib/modules/{NEW}/{name}"))
                .map(|e| e.data.clone())
        };
        assert_eq!(
            data("kernel/ahci.ko").unwrap(),
            file("kernel/ahci.ko").unwrap()
        );
        let dep = String::from_utf8(data("modules.dep").unwrap()).unwrap();
        assert!(dep.contains("kernel/ahci.ko: kernel/libata.ko\n"), "{dep}");
        assert!(data("modules.dep.bin").is_some());
        assert!(got.entries().any(|e| e.path() == "init"));
        // Fitted once, it stays as it is.
        assert!(
            fit_initramfs(&bytes, &new_kernel(), &roots, &file)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_archive_without_modules_gains_the_root_modules() {
        let archive = newc(&[("init", 0o100755, b"#!/bin/sh\n")]);
        let roots = vec!["usb-storage".to_string()];
        let (bytes, note) = fit_initramfs(&archive, &new_kernel(), &roots, &file)
            .unwrap()
            .expect("the archive changes");
        assert!(note.contains("added the root device's modules"), "{note}");
        let got = initramfs::read(&bytes).unwrap();
        assert_eq!(
            got.modules(NEW),
            ["kernel/usb-storage.ko", "kernel/usbcore.ko"]
        );
        // The unpacker creates no parents: every directory is there, before what it holds.
        let names: Vec<String> = got.entries().map(|e| e.path()).collect();
        let at = |n: &str| names.iter().position(|x| x == n).unwrap_or(usize::MAX);
        assert!(at("usr") < at("usr/lib") && at("usr/lib") < at("usr/lib/modules"));
        assert!(at("usr/lib/modules") < at(&format!("usr/lib/modules/{NEW}")));
    }

    #[test]
    fn a_root_module_the_kernel_lacks_is_an_error_naming_it() {
        let archive = newc(&[("init", 0o100755, b"#!/bin/sh\n")]);
        let roots = vec!["uas".to_string()];
        let e = fit_initramfs(&archive, &new_kernel(), &roots, &file)
            .unwrap_err()
            .to_string();
        assert!(e.contains(NEW), "{e}");
        let chain = format!(
            "{:#}",
            fit_initramfs(&archive, &new_kernel(), &roots, &file).unwrap_err()
        );
        assert!(chain.contains("\"uas\""), "{chain}");
    }

    #[test]
    fn the_check_refuses_a_mismatch_and_a_missing_root_module() {
        let check = |kernel: &str, archive: &[u8], roots: &[&str]| {
            let roots: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
            let (card, ird) = card_release(kernel.to_string(), Some(archive)).unwrap();
            check_release(card, ird, &roots, &|m: &str| m == "sd_mod").map_err(|e| e.to_string())
        };
        let dir = format!("usr/lib/modules/{OLD}");
        let ko = format!("{dir}/kernel/usb-storage.ko");
        let archive = newc(&[
            ("usr", DIR, b""),
            ("usr/lib", DIR, b""),
            ("usr/lib/modules", DIR, b""),
            (&dir, DIR, b""),
            (&format!("{dir}/kernel"), DIR, b""),
            (&ko, REG, b"x"),
        ]);
        let e = check(NEW, &archive, &["usb-storage"]).unwrap_err();
        assert!(e.contains(NEW) && e.contains(OLD), "{e}");
        let e = check(OLD, &archive, &["usb-storage", "uas"]).unwrap_err();
        assert!(e.contains("lacks uas") && e.contains(OLD), "{e}");
        // Built in is as good as present.
        let ok = check(OLD, &archive, &["usb-storage", "sd_mod"]).unwrap();
        assert_eq!(ok.initramfs, [OLD]);
        let e = check(NEW, &newc(&[("init", REG, b"")]), &["usb-storage"]).unwrap_err();
        assert!(e.contains("no kernel modules"), "{e}");
    }

    #[test]
    fn module_names_and_touched_releases() {
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko.xz").as_deref(),
            Some("usb_storage")
        );
        assert_eq!(module_name("modules.dep"), None);
        let t = touched_releases([
            b"usr/lib/modules/6.6.143-1-ARCH/kernel/a.ko.xz".as_slice(),
            b"usr/lib/modules/6.6.143-1-ARCH/".as_slice(),
            b"usr/lib/modules/extramodules".as_slice(),
            b"usr/bin/x".as_slice(),
        ]);
        assert_eq!(t.into_iter().collect::<Vec<_>>(), ["6.6.143-1-ARCH"]);
    }
}
