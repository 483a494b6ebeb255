//! The files `depmod -b ROOT VERSION` writes into `lib/modules/VERSION/`, byte for byte as
//! kmod 30's `tools/depmod.c` writes them (`depmod_output` and its `output_*` functions), in
//! the order it writes them:
//!
//! | file | content |
//! |---|---|
//! | `modules.dep` | per module, `PATH: DEP DEP...` (all dependencies, users first) |
//! | `modules.dep.bin` | index: module name -> that line, priority = module order |
//! | `modules.alias` | a comment, then `alias ALIAS NAME` per `alias=` of each module |
//! | `modules.alias.bin` | index: alias (`-` as `_` outside `[...]`) -> name |
//! | `modules.softdep` | a comment, then `softdep NAME VALUE` per `softdep=` |
//! | `modules.symbols` | a comment, then `alias symbol:SYM NAME`, in symbol-table order |
//! | `modules.symbols.bin` | index: `symbol:SYM` -> name, priority = the owner's order |
//! | `modules.builtin.bin` | index: each `modules.builtin` name -> "" (0 bytes without the file) |
//! | `modules.builtin.alias.bin` | index: the `NAME.alias=ALIAS` records of `modules.builtin.modinfo` |
//! | `modules.devname` | `NAME DEVNAME cMAJ:MIN` per module with both (a comment first when any) |
//!
//! The index format is in [`super::index`]; the orders in [`super::depmod`] and
//! [`super::hash_order`].

use anyhow::{Context, Result};

use super::depmod::{Depmod, builtin_names};
use super::hash_order::{self, SYMBOL_BUCKETS};
use super::index::Index;

/// depmod's `PATH_MAX` buffers for the fields of `modules.builtin.modinfo`.
const FIELD_MAX: usize = 4096;

/// Every file, in depmod's order.
pub(super) fn all(d: &Depmod) -> Result<Vec<(String, Vec<u8>)>> {
    let dep_lines = dep_lines(d);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("modules.dep", text_dep(&dep_lines)),
        ("modules.dep.bin", dep_bin(&dep_lines)?),
        ("modules.alias", text_alias(d)),
        ("modules.alias.bin", alias_bin(d)?),
        ("modules.softdep", text_softdep(d)),
        ("modules.symbols", text_symbols(d)),
        ("modules.symbols.bin", symbols_bin(d)?),
        ("modules.builtin.bin", builtin_bin(d)?),
        ("modules.builtin.alias.bin", builtin_alias_bin(d)?),
        ("modules.devname", text_devname(d)),
    ];
    Ok(files.into_iter().map(|(n, b)| (n.to_string(), b)).collect())
}

/// Per module in order: (name, priority, `PATH: DEP...` without newline).
fn dep_lines(d: &Depmod) -> Vec<(&str, u32, String)> {
    d.modules()
        .enumerate()
        .map(|(pos, m)| {
            let mut line = format!("{}:", m.path);
            for dep in d.all_deps(pos) {
                if let Some(dm) = d.module(dep) {
                    line.push(' ');
                    line.push_str(&dm.path);
                }
            }
            (m.name.as_str(), priority(pos), line)
        })
        .collect()
}

/// A module's position as an index priority (depmod's `uint16_t idx`; 65535 modules at most
/// there, more than any kernel has).
fn priority(pos: usize) -> u32 {
    u32::try_from(pos).unwrap_or(u32::MAX)
}

fn text_dep(lines: &[(&str, u32, String)]) -> Vec<u8> {
    let mut out = String::new();
    for (_, _, line) in lines {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

fn dep_bin(lines: &[(&str, u32, String)]) -> Result<Vec<u8>> {
    let mut idx = Index::new();
    for (name, prio, line) in lines {
        idx.insert(name, line, *prio)
            .with_context(|| format!("modules.dep.bin entry of {name}"))?;
    }
    idx.write().context("modules.dep.bin")
}

fn text_alias(d: &Depmod) -> Vec<u8> {
    let mut out = String::from("# Aliases extracted from modules themselves.\n");
    for m in d.modules() {
        for a in &m.aliases {
            out.push_str(&format!("alias {a} {}\n", m.name));
        }
    }
    out.into_bytes()
}

/// kmod's `alias_normalize`: `-` becomes `_` except inside `[...]`; `None` for an unmatched
/// bracket (depmod warns and leaves the alias out of the index).
pub(super) fn alias_normalize(alias: &str) -> Option<String> {
    let mut out = String::with_capacity(alias.len());
    let mut chars = alias.chars();
    while let Some(c) = chars.next() {
        match c {
            '-' => out.push('_'),
            ']' => return None,
            '[' => {
                out.push('[');
                loop {
                    let c = chars.next()?;
                    out.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn alias_bin(d: &Depmod) -> Result<Vec<u8>> {
    let mut idx = Index::new();
    for (pos, m) in d.modules().enumerate() {
        for a in &m.aliases {
            let Some(key) = alias_normalize(a) else {
                continue;
            };
            idx.insert(&key, &m.name, priority(pos))
                .with_context(|| format!("modules.alias.bin entry of {}", m.name))?;
        }
    }
    idx.write().context("modules.alias.bin")
}

fn text_softdep(d: &Depmod) -> Vec<u8> {
    let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
    for m in d.modules() {
        for s in &m.softdeps {
            out.push_str(&format!("softdep {} {s}\n", m.name));
        }
    }
    out.into_bytes()
}

/// The symbols with their owners' positions, in depmod's hash-table order.
fn symbols_in_order(d: &Depmod) -> Vec<(&str, usize)> {
    let mut syms: Vec<(&str, usize)> = d.symbols.iter().map(|(s, &o)| (s.as_str(), o)).collect();
    hash_order::sort_by_hash_order(&mut syms, SYMBOL_BUCKETS, |(s, _)| s.to_string());
    syms
}

fn text_symbols(d: &Depmod) -> Vec<u8> {
    let mut out = String::from("# Aliases for symbols, used by symbol_request().\n");
    for (sym, owner) in symbols_in_order(d) {
        if let Some(m) = d.module(owner) {
            out.push_str(&format!("alias symbol:{sym} {}\n", m.name));
        }
    }
    out.into_bytes()
}

fn symbols_bin(d: &Depmod) -> Result<Vec<u8>> {
    let mut idx = Index::new();
    for (sym, owner) in symbols_in_order(d) {
        if let Some(m) = d.module(owner) {
            idx.insert(&format!("symbol:{sym}"), &m.name, priority(owner))
                .with_context(|| format!("modules.symbols.bin entry of {sym}"))?;
        }
    }
    idx.write().context("modules.symbols.bin")
}

fn builtin_bin(d: &Depmod) -> Result<Vec<u8>> {
    if d.lists.builtin.is_empty() {
        return Ok(vec![]);
    }
    let mut idx = Index::new();
    for name in builtin_names(&d.lists.builtin) {
        idx.insert(&name, "", 0)
            .with_context(|| format!("modules.builtin.bin entry {name:?}"))?;
    }
    idx.write().context("modules.builtin.bin")
}

/// `flush_stream_to(in, endchar, buf, PATH_MAX)` at `*pos`: the bytes up to `endchar`, a NUL
/// or the end, the stopping byte consumed; empty unless it stopped at `endchar`.
fn flush_to<'a>(data: &'a [u8], pos: &mut usize, endchar: u8) -> &'a [u8] {
    let start = *pos;
    let mut stored = 0;
    loop {
        let Some(&c) = data.get(*pos) else {
            return &[]; // EOF
        };
        *pos += 1;
        if c == endchar || c == 0 {
            let len = if stored == FIELD_MAX {
                stored - 1
            } else {
                stored
            };
            return if c == endchar {
                data.get(start..start + len).unwrap_or_default()
            } else {
                &[]
            };
        }
        if stored == FIELD_MAX {
            return &[]; // the buffer is full: c is dropped, and it is not endchar
        }
        stored += 1;
    }
}

/// `flush_stream(in, '\0')`: skip to after the next NUL.
fn skip_record(data: &[u8], pos: &mut usize) {
    while let Some(&c) = data.get(*pos) {
        *pos += 1;
        if c == 0 {
            break;
        }
    }
}

fn builtin_alias_bin(d: &Depmod) -> Result<Vec<u8>> {
    let data = d.lists.builtin_modinfo.as_slice();
    if data.is_empty() {
        return Ok(vec![]);
    }
    let mut idx = Index::new();
    let mut pos = 0;
    while pos < data.len() {
        let modname = flush_to(data, &mut pos, b'.');
        if modname.is_empty() {
            continue;
        }
        let key = flush_to(data, &mut pos, b'=');
        if key != b"alias" {
            skip_record(data, &mut pos);
            continue;
        }
        let value = flush_to(data, &mut pos, 0);
        if value.is_empty() {
            continue;
        }
        let (modname, value) = (
            String::from_utf8_lossy(modname),
            String::from_utf8_lossy(value),
        );
        let Some(alias) = alias_normalize(&value) else {
            continue;
        };
        idx.insert(&alias, &modname, 0)
            .with_context(|| format!("modules.builtin.alias.bin entry {modname}.alias={value}"))?;
    }
    idx.write().context("modules.builtin.alias.bin")
}

fn text_devname(d: &Depmod) -> Vec<u8> {
    let mut out = String::new();
    for m in d.modules() {
        if let Some(dev) = m.devname() {
            if out.is_empty() {
                out.push_str("# Device nodes to trigger on-demand module loading.\n");
            }
            out.push_str(&format!(
                "{} {} {}{}:{}\n",
                m.name, dev.name, dev.kind, dev.major, dev.minor
            ));
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::depmod::KernelLists;
    use super::super::elf::Undefined;
    use super::super::index::Reader;
    use super::super::module::ModuleInfo;
    use super::*;

    #[test]
    fn alias_normalize_as_kmod() {
        assert_eq!(alias_normalize("usb:v-1").as_deref(), Some("usb:v_1"));
        assert_eq!(
            alias_normalize("pci:v[0-9]d-*").as_deref(),
            Some("pci:v[0-9]d_*")
        );
        assert_eq!(alias_normalize("a]"), None);
        assert_eq!(alias_normalize("a[0-"), None);
    }

    #[test]
    fn builtin_modinfo_records() {
        let mut pos = 0;
        let data = b"ab.alias=x-y\0";
        assert_eq!(flush_to(data, &mut pos, b'.'), b"ab");
        assert_eq!(flush_to(data, &mut pos, b'='), b"alias");
        assert_eq!(flush_to(data, &mut pos, 0), b"x-y");
        assert_eq!(pos, data.len());
    }

    fn module(path: &str, aliases: &[&str], softdeps: &[&str]) -> ModuleInfo {
        ModuleInfo {
            path: path.into(),
            name: super::super::module::module_name(path).unwrap(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            softdeps: softdeps.iter().map(|s| s.to_string()).collect(),
            depends: vec![],
            modinfo_name: None,
            vermagic: None,
            exports: vec![format!("{}_fn", path.len())],
            undefined: vec![Undefined {
                name: "printk".into(),
                weak: false,
            }],
        }
    }

    #[test]
    fn small_tree_files() {
        let lists = KernelLists {
            order: "kernel/loop.ko\nkernel/dm-mod.ko\n".into(),
            builtin: "kernel/fs/ext4/ext4.ko\n".into(),
            builtin_modinfo:
                b"ext4.alias=fs-ext4\0ext4.license=GPL\0ext4.alias=fs-ext3\0crc32c.alias=crypto-crc32c\0"
                    .to_vec(),
        };
        let mods = vec![
            module(
                "kernel/dm-mod.ko",
                &["devname:mapper/control", "char-major-10-236"],
                &[],
            ),
            module(
                "kernel/loop.ko",
                &[
                    "block-major-7-*",
                    "char-major-10-237",
                    "devname:loop-control",
                ],
                &["pre: crc32c"],
            ),
        ];
        let d = Depmod::new("6.1.0", &lists, mods).unwrap();
        let files = d.files().unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "modules.dep",
                "modules.dep.bin",
                "modules.alias",
                "modules.alias.bin",
                "modules.softdep",
                "modules.symbols",
                "modules.symbols.bin",
                "modules.builtin.bin",
                "modules.builtin.alias.bin",
                "modules.devname"
            ]
        );
        let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
        assert_eq!(get("modules.dep"), b"kernel/loop.ko:\nkernel/dm-mod.ko:\n");
        assert_eq!(
            String::from_utf8(get("modules.devname")).unwrap(),
            "# Device nodes to trigger on-demand module loading.\n\
             loop loop-control c10:237\n\
             dm_mod mapper/control c10:236\n"
        );
        assert_eq!(
            String::from_utf8(get("modules.softdep")).unwrap(),
            "# Soft dependencies extracted from modules themselves.\nsoftdep loop pre: crc32c\n"
        );
        let bin = get("modules.builtin.alias.bin");
        let r = Reader::new(&bin).unwrap();
        assert_eq!(
            r.entries().unwrap(),
            [
                ("crypto_crc32c".to_string(), vec![(0, "crc32c".to_string())]),
                ("fs_ext3".to_string(), vec![(0, "ext4".to_string())]),
                ("fs_ext4".to_string(), vec![(0, "ext4".to_string())]),
            ]
        );
        let bin = get("modules.dep.bin");
        let r = Reader::new(&bin).unwrap();
        assert_eq!(
            r.get("dm_mod").unwrap(),
            Some(vec![(1, "kernel/dm-mod.ko:".to_string())])
        );
        let bin = get("modules.builtin.bin");
        let r = Reader::new(&bin).unwrap();
        assert_eq!(r.get("ext4").unwrap(), Some(vec![(0, String::new())]));

        // No lists: empty builtin indexes, no devname comment when no module has one.
        let d = Depmod::new("6.1.0", &KernelLists::default(), vec![]).unwrap();
        let files = d.files().unwrap();
        let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
        assert!(get("modules.builtin.bin").is_empty());
        assert!(get("modules.builtin.alias.bin").is_empty());
        assert!(get("modules.devname").is_empty());
        assert!(get("modules.dep").is_empty());
        assert_eq!(get("modules.dep.bin").len(), 12);
    }
}
