//! One module file as depmod sees it: its name (from its file name), its `.modinfo` keys,
//! exported and undefined symbols ([`ModuleInfo`], [`read_module`]), and which paths under
//! `usr/lib/modules/<kver>/` depmod takes for modules ([`is_module_path`]).
//!
//! Follows kmod 30: `shared/util.c` (`path_to_modname`, `modname_normalize`,
//! `path_ends_with_kmod_ext`), `tools/depmod.c` (`should_exclude_dir`, `output_devname`) and
//! `libkmod/libkmod-module.c` (`kmod_module_get_info`: a `.modinfo` string without `=` is a key
//! with an empty value). The kernel side is `include/linux/module.h` (`MODULE_ALIAS`,
//! `MODULE_SOFTDEP`, `MODULE_INFO`) and `scripts/mod/modpost.c` (`depends=`, `vermagic=`,
//! `name=`).

use anyhow::{Context, Result, bail};

use super::compress;
use super::elf::{Elf, Undefined};

/// The file name endings depmod takes for modules. Debian's kmod 30 is built without zlib
/// and so skips `.ko.gz`; Arch Linux ARM's kmod has all three.
pub const MODULE_EXTENSIONS: [&str; 4] = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"];

/// What depmod needs of one module, parsed from its (possibly compressed) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Relative to `usr/lib/modules/<kver>/`, e.g. `kernel/drivers/usb/storage/usb-storage.ko.xz`.
    pub path: String,
    /// From the file name, as depmod names modules: `usb_storage`.
    pub name: String,
    /// The `alias=` values of `.modinfo`, in order (duplicates kept).
    pub aliases: Vec<String>,
    /// The `softdep=` values, in order (e.g. `pre: crc32c`).
    pub softdeps: Vec<String>,
    /// modpost's `depends=` list (the modules whose symbols this one uses), in order.
    /// depmod does not use it: it resolves [`ModuleInfo::undefined`] itself.
    pub depends: Vec<String>,
    /// `name=` (kernels since 5.4 record the module's name).
    pub modinfo_name: Option<String>,
    /// `vermagic=`.
    pub vermagic: Option<String>,
    /// The exported symbols as depmod reads them (see [`super::elf`]).
    pub exports: Vec<String>,
    /// The undefined symbols depmod resolves, in the order it resolves them.
    pub undefined: Vec<Undefined>,
}

/// A `modules.devname` entry: a device node that loads the module when opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devname {
    /// The node under /dev (`mapper/control`).
    pub name: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
}

/// Reads `file_bytes`, the module file at `path` (relative to `usr/lib/modules/<kver>/`),
/// compressed or not. Nothing of the bytes is kept.
pub fn read_module(path: &str, file_bytes: &[u8]) -> Result<ModuleInfo> {
    read(path, file_bytes).with_context(|| format!("kernel module {path}"))
}

fn read(path: &str, file_bytes: &[u8]) -> Result<ModuleInfo> {
    let name = module_name(path).context("no module name in the file name")?;
    let data = compress::decompress(file_bytes)?;
    let elf = Elf::parse(&data)?;
    let mut info = ModuleInfo {
        path: path.to_string(),
        name,
        aliases: vec![],
        softdeps: vec![],
        depends: vec![],
        modinfo_name: None,
        vermagic: None,
        exports: elf.exports()?,
        undefined: elf.undefined()?,
    };
    for entry in elf.strings(".modinfo")? {
        let (key, value) = match entry.iter().position(|&b| b == b'=') {
            Some(eq) => (
                entry.get(..eq).unwrap_or_default(),
                entry.get(eq + 1..).unwrap_or_default(),
            ),
            None => (entry, &[][..]),
        };
        let text = || {
            String::from_utf8(value.to_vec()).with_context(|| {
                format!(
                    ".modinfo {}= value {:?} is not UTF-8",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                )
            })
        };
        match key {
            b"alias" => info.aliases.push(text()?),
            b"softdep" => info.softdeps.push(text()?),
            b"depends" => info.depends.extend(
                text()?
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_string),
            ),
            b"name" => info.modinfo_name = Some(text()?),
            b"vermagic" => info.vermagic = Some(text()?),
            _ => {}
        }
    }
    Ok(info)
}

/// The module name of a module path, as `path_to_modname`: the file name up to its first
/// `.`, with `-` as `_` (`usb-storage.ko.xz` -> `usb_storage`). `None` when that is empty.
pub fn module_name(path: &str) -> Option<String> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = normalize_name(base);
    (!name.is_empty()).then_some(name)
}

/// `modname_normalize`: up to the first `.`, `-` as `_`.
pub fn normalize_name(name: &str) -> String {
    name.split('.').next().unwrap_or_default().replace('-', "_")
}

/// Whether depmod takes the file at `path` (relative to `usr/lib/modules/<kver>/`) for a
/// module: a name ending in `.ko`, `.ko.gz`, `.ko.xz` or `.ko.zst` after at least one more
/// character, in no directory called `build` or `source` (depmod skips those, and `.`/`..`).
pub fn is_module_path(path: &str) -> bool {
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        if part.is_empty() || matches!(part, "." | ".." | "build" | "source") {
            return false;
        }
        if parts.peek().is_none() {
            return MODULE_EXTENSIONS
                .iter()
                .any(|ext| part.len() > ext.len() && part.ends_with(ext));
        }
    }
    false
}

impl ModuleInfo {
    /// The `modules.devname` entry of this module, as `output_devname` finds it: the last
    /// `devname:` alias and the last `char-major-M-m`/`block-major-M-m` alias seen, stopping
    /// as soon as both are known. A devname without a major/minor is none (depmod says so
    /// on stderr and writes nothing).
    pub fn devname(&self) -> Option<Devname> {
        let mut name: Option<&str> = None;
        let mut dev: Option<(char, u32, u32)> = None;
        for alias in &self.aliases {
            if let Some(n) = alias.strip_prefix("devname:") {
                name = Some(n);
            } else if let Some(d) = scan_major_minor(alias, "char-major-") {
                dev = Some(('c', d.0, d.1));
            } else if let Some(d) = scan_major_minor(alias, "block-major-") {
                dev = Some(('b', d.0, d.1));
            }
            if name.is_some() && dev.is_some() {
                break;
            }
        }
        let (kind, major, minor) = dev?;
        Some(Devname {
            name: name?.to_string(),
            kind,
            major,
            minor,
        })
    }

    /// Checks that `name` is what the path says (a caller may build a [`ModuleInfo`]).
    pub(crate) fn check_name(&self) -> Result<()> {
        match module_name(&self.path) {
            Some(n) if n == self.name => Ok(()),
            other => bail!(
                "module {} is named {:?}, but its file name says {other:?}",
                self.path,
                self.name
            ),
        }
    }
}

/// `sscanf(value, "<prefix>%u-%u", &major, &minor) == 2`.
fn scan_major_minor(value: &str, prefix: &str) -> Option<(u32, u32)> {
    let rest = value.strip_prefix(prefix)?;
    let (major, rest) = scan_u32(rest)?;
    let rest = rest.strip_prefix('-')?;
    let (minor, _) = scan_u32(rest)?;
    Some((major, minor))
}

/// scanf's `%u`: white space skipped, an optional sign, decimal digits; an overflow gives
/// `ULONG_MAX`, a `-` negates (modulo 2^64); the result is stored in 32 bits.
pub(crate) fn scan_u32(s: &str) -> Option<(u32, &str)> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(b'+') => (false, s.get(1..)?),
        _ => (false, s),
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut v: Option<u64> = Some(0);
    for d in s.bytes().take(digits) {
        v = v
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(d - b'0')));
    }
    let v = match v {
        None => u64::MAX,
        Some(v) if negative => v.wrapping_neg(),
        Some(v) => v,
    };
    let low = u32::try_from(v & 0xFFFF_FFFF).ok()?;
    Some((low, s.get(digits..)?))
}

/// A module that exports `exports` and uses `undefined`, with nothing else: for tests of what
/// is built on [`ModuleInfo`] (dependencies, indexes, the initramfs step).
#[cfg(test)]
pub(crate) fn test_module(path: &str, exports: &[&str], undefined: &[&str]) -> ModuleInfo {
    ModuleInfo {
        path: path.into(),
        name: module_name(path).unwrap_or_default(),
        aliases: Vec::new(),
        softdeps: Vec::new(),
        depends: Vec::new(),
        modinfo_name: None,
        vermagic: None,
        exports: exports.iter().map(|s| s.to_string()).collect(),
        undefined: undefined
            .iter()
            .map(|s| super::Undefined {
                name: s.to_string(),
                weak: false,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::elf::tests::{Sym, build};
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko.xz").as_deref(),
            Some("usb_storage")
        );
        assert_eq!(module_name("a.b.ko").as_deref(), Some("a"));
        assert_eq!(module_name("dir/.ko"), None);
        assert!(is_module_path("kernel/fs/ext4/ext4.ko"));
        assert!(is_module_path("updates/x.ko.zst"));
        assert!(is_module_path("x.ko.gz"));
        assert!(!is_module_path("kernel/.ko"));
        assert!(!is_module_path("build/x.ko"));
        assert!(!is_module_path("kernel/source/x.ko"));
        assert!(!is_module_path("kernel/x.ko.bz2"));
        assert!(!is_module_path("kernel//x.ko"));
        assert!(!is_module_path("modules.dep"));
    }

    fn with_aliases(aliases: &[&str]) -> ModuleInfo {
        ModuleInfo {
            path: "m.ko".into(),
            name: "m".into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            softdeps: vec![],
            depends: vec![],
            modinfo_name: None,
            vermagic: None,
            exports: vec![],
            undefined: vec![],
        }
    }

    #[test]
    fn devname_as_depmod() {
        let d = with_aliases(&["devname:mapper/control", "char-major-10-236"]).devname();
        assert_eq!(
            d,
            Some(Devname {
                name: "mapper/control".into(),
                kind: 'c',
                major: 10,
                minor: 236
            })
        );
        let d = with_aliases(&["block-major-7-*", "block-major-7-0", "devname:loop0"]).devname();
        assert_eq!(d.map(|d| (d.kind, d.major, d.minor)), Some(('b', 7, 0)));
        assert_eq!(with_aliases(&["devname:x"]).devname(), None);
        assert_eq!(with_aliases(&["char-major-1-2"]).devname(), None);
        // Stops at the first complete pair.
        let d = with_aliases(&["devname:a", "char-major-1-2", "devname:b"]).devname();
        assert_eq!(d.map(|d| d.name), Some("a".into()));
        assert_eq!(scan_u32(" +12x"), Some((12, "x")));
        assert_eq!(scan_u32("-1"), Some((u32::MAX, "")));
        assert_eq!(scan_u32("99999999999999999999999"), Some((u32::MAX, "")));
        assert_eq!(scan_u32("x"), None);
    }

    #[test]
    fn reads_a_compressed_module() {
        use std::io::Write;
        let elf = build(
            false,
            false,
            &[(
                ".modinfo",
                b"alias=pci:v*\0depends=a,b-c\0softdep=post: x\0vermagic=6.1 SMP\0name=my_mod\0flag\0"
                    .to_vec(),
            )],
            Some(&[Sym("__crc_my_fn", 0x10, 0xfff1), Sym("printk", 0x10, 0)]),
        );
        let want = |path: &str| ModuleInfo {
            path: path.into(),
            name: "my_mod".into(),
            aliases: vec!["pci:v*".into()],
            softdeps: vec!["post: x".into()],
            depends: vec!["a".into(), "b-c".into()],
            modinfo_name: Some("my_mod".into()),
            vermagic: Some("6.1 SMP".into()),
            exports: vec!["my_fn".into()],
            undefined: vec![Undefined {
                name: "printk".into(),
                weak: false,
            }],
        };
        assert_eq!(
            read_module("k/my-mod.ko", &elf).unwrap(),
            want("k/my-mod.ko")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            read_module("k/my-mod.ko.gz", &gz).unwrap(),
            want("k/my-mod.ko.gz")
        );
        let zst = zstd::encode_all(&elf[..], 1).unwrap();
        assert_eq!(
            read_module("k/my-mod.ko.zst", &zst).unwrap(),
            want("k/my-mod.ko.zst")
        );
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&elf).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(
            read_module("k/my-mod.ko.xz", &xz).unwrap(),
            want("k/my-mod.ko.xz")
        );
        let e = read_module("k/broken.ko.xz", &xz[..xz.len() / 2]).unwrap_err();
        assert!(format!("{e:#}").contains("k/broken.ko.xz"), "{e:#}");
        let e = read_module("k/text.ko", b"hello, world, not an ELF").unwrap_err();
        assert!(format!("{e:#}").contains("not an ELF"), "{e:#}");
    }
}
