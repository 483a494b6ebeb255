//! The few things depmod reads from a kernel module's ELF file: the `.modinfo` strings, the
//! exported symbols and the undefined symbols, read as kmod 30's `libkmod/libkmod-elf.c`
//! reads them.
//!
//! Formats: the System V gABI ("ELF Object File Format", chapter 4) as glibc's `elf.h`
//! spells it: `Elf32_Ehdr`/`Elf64_Ehdr` (`e_shoff` at 32/40, `e_shentsize`, `e_shnum`,
//! `e_shstrndx` at 46..52/58..64), section headers of 40/64 bytes (`sh_name`,
//! `sh_offset` at 16/24, `sh_size` at 20/32), symbols of 16/24 bytes (`st_name`, `st_value`,
//! `st_info`, `st_shndx`). Both classes and both byte orders are read (the HC1 is ELF32
//! little-endian). From the kernel (`include/linux/module.h`, `include/linux/export.h`,
//! `scripts/mod/modpost.c`): `.modinfo` holds NUL-separated `key=value` strings (`alias=`,
//! `depends=`, `softdep=`, `vermagic=`, `name=`, ...); `__ksymtab_strings` the names of the
//! exported symbols; `.symtab` a `__crc_NAME` symbol per export when `CONFIG_MODVERSIONS` is
//! set; `__versions` 64-byte entries (a CRC of the ELF class's word size, then the name) for
//! the symbols the module uses.
//!
//! What depmod takes (`kmod_elf_get_strings`, `kmod_elf_get_symbols`,
//! `kmod_elf_get_dependency_symbols`):
//!
//! - sections are looked up by name, the first one of that name from index 1 on;
//! - `.modinfo`: the strings between runs of NULs, leading NULs skipped, empty ones dropped;
//! - exports: the names of the `.symtab` symbols called `__crc_NAME` (any section, any
//!   binding), in symbol-table order; when there is none (no `CONFIG_MODVERSIONS`, or no
//!   `.symtab`), the strings of `__ksymtab_strings` split as `.modinfo` is (which, for
//!   `EXPORT_SYMBOL_NS` exports, includes the namespace names: depmod indexes them too);
//! - undefined symbols: every `.symtab` symbol from index 1 on with `st_shndx == SHN_UNDEF`
//!   and a non-empty name (on SPARC not `STT_REGISTER`), weak if `STB_WEAK`, in table order;
//!   then the `__versions` entries no such symbol named (`module_layout` on older kernels).
//!
//! Hand-written rather than the `object` or `goblin` crates: those parse far more than these
//! four tables (relocations, DWARF, Mach-O, PE...) and would still need kmod's own rules on
//! top; the reads needed here are a few dozen bounds-checked lines.
//!
//! Every offset, size and count from the file is checked against the input before it is used,
//! and nothing is allocated by a size the file states: allocations follow what was actually
//! found in the input. Where kmod quietly gives up on a damaged table (a name offset outside
//! `.strtab`, a `.symtab` or `__versions` that is not a whole number of entries, a string
//! without its NUL), this reader stops with an error naming the table: a damaged module must
//! not end up in an image with an index that says it needs nothing.

use anyhow::{Context, Result, bail, ensure};

const EI_NIDENT: usize = 16;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
const SHN_UNDEF: u16 = 0;
const STB_WEAK: u8 = 2;
const STT_REGISTER: u8 = 13;
const EM_SPARC: u16 = 2;
const EM_SPARCV9: u16 = 43;
/// `struct modversion_info`: a CRC and a name, 64 bytes in both classes.
const MODVERSION_LEN: usize = 64;

/// One undefined symbol as depmod resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undefined {
    pub name: String,
    /// `STB_WEAK`: depmod still makes the exporter a dependency.
    pub weak: bool,
}

/// A validated view of an ELF file's section table.
pub struct Elf<'a> {
    data: &'a [u8],
    is64: bool,
    big_endian: bool,
    machine: u16,
    shoff: usize,
    shnum: u16,
    /// The section-name string table (`e_shstrndx`).
    shstrtab: &'a [u8],
}

impl<'a> Elf<'a> {
    /// Checks the identification, the header and the section table of `data` as kmod's
    /// `kmod_elf_new` does.
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>> {
        ensure!(
            data.len() > EI_NIDENT && data.starts_with(b"\x7fELF"),
            "not an ELF file ({} bytes, no \\x7fELF magic)",
            data.len()
        );
        let is64 = match data.get(4) {
            Some(&ELFCLASS32) => false,
            Some(&ELFCLASS64) => true,
            other => bail!("ELF class {other:?} is neither ELFCLASS32 nor ELFCLASS64"),
        };
        let big_endian = match data.get(5) {
            Some(&ELFDATA2LSB) => false,
            Some(&ELFDATA2MSB) => true,
            other => bail!("ELF data encoding {other:?} is neither LSB nor MSB"),
        };
        let ehdr_len = if is64 { 64 } else { 52 };
        ensure!(
            data.len() > ehdr_len,
            "ELF file of {} bytes is too short for its {ehdr_len}-byte header",
            data.len()
        );
        let mut elf = Elf {
            data,
            is64,
            big_endian,
            machine: 0,
            shoff: 0,
            shnum: 0,
            shstrtab: &[],
        };
        let (shoff, shentsize_at) = if is64 {
            (elf.uint(40, 8)?, 58)
        } else {
            (elf.uint(32, 4)?, 46)
        };
        elf.machine = elf.u16_at(18)?;
        let shentsize = elf.u16_at(shentsize_at)?;
        elf.shnum = elf.u16_at(shentsize_at + 2)?;
        let shstrndx = elf.u16_at(shentsize_at + 4)?;
        let want = elf.shdr_len();
        ensure!(
            usize::from(shentsize) == want,
            "ELF section header size {shentsize}, expected {want}"
        );
        let table_end = usize::try_from(shoff)
            .ok()
            .and_then(|o| o.checked_add(usize::from(elf.shnum) * want))
            .filter(|&end| end <= data.len());
        ensure!(
            table_end.is_some(),
            "ELF section table ({} headers at offset {shoff}) lies beyond the file's {} bytes",
            elf.shnum,
            data.len()
        );
        elf.shoff = usize::try_from(shoff)?;
        ensure!(
            shstrndx != SHN_UNDEF && shstrndx < elf.shnum,
            "ELF section-name table index {shstrndx} out of 1..{}",
            elf.shnum
        );
        let (off, size, _) = elf.section_header(shstrndx)?;
        let names = elf
            .range(off, size)
            .context("ELF section-name table lies beyond the file")?;
        ensure!(
            names.last() == Some(&0),
            "ELF section-name table is empty or does not end with NUL"
        );
        elf.shstrtab = names;
        Ok(elf)
    }

    fn shdr_len(&self) -> usize {
        if self.is64 { 64 } else { 40 }
    }

    /// An unsigned integer of `size` bytes at `at`, in the file's byte order.
    fn uint(&self, at: usize, size: usize) -> Result<u64> {
        uint_in(self.data, at, size, self.big_endian)
    }

    fn u16_at(&self, at: usize) -> Result<u16> {
        Ok(u16::try_from(self.uint(at, 2)?)?)
    }

    fn u32_at(&self, at: usize) -> Result<u32> {
        Ok(u32::try_from(self.uint(at, 4)?)?)
    }

    /// The bytes `off..off + size` of the file, if they lie within it.
    fn range(&self, off: u64, size: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.data.get(start..end)
    }

    /// `sh_offset`, `sh_size` and `sh_name` of section `idx` (the table was bounds-checked).
    fn section_header(&self, idx: u16) -> Result<(u64, u64, u32)> {
        let at = self.shoff + usize::from(idx) * self.shdr_len();
        Ok(if self.is64 {
            (
                self.uint(at + 24, 8)?,
                self.uint(at + 32, 8)?,
                self.u32_at(at)?,
            )
        } else {
            (
                self.uint(at + 16, 4)?,
                self.uint(at + 20, 4)?,
                self.u32_at(at)?,
            )
        })
    }

    /// The first section called `name`, from index 1 on (`kmod_elf_get_section`). Sections
    /// whose name offset is outside the name table are skipped, as kmod skips them; a section
    /// of that name whose bytes lie outside the file is an error.
    fn section(&self, name: &str) -> Result<Option<&'a [u8]>> {
        for idx in 1..self.shnum {
            let (off, size, nameoff) = self.section_header(idx)?;
            let Some(n) = usize::try_from(nameoff)
                .ok()
                .and_then(|o| self.shstrtab.get(o..))
            else {
                continue;
            };
            if cstr(n) != name.as_bytes() {
                continue;
            }
            let data = self.range(off, size).with_context(|| {
                format!(
                    "ELF section {name} (#{idx}: {size} bytes at offset {off}) lies beyond the file's {} bytes",
                    self.data.len()
                )
            })?;
            return Ok(Some(data));
        }
        Ok(None)
    }

    /// The strings of section `name` as `kmod_elf_get_strings` splits them (see the module
    /// doc); an absent section has none.
    pub fn strings(&self, name: &str) -> Result<Vec<&'a [u8]>> {
        Ok(self.section(name)?.map(split_strings).unwrap_or_default())
    }

    /// `.symtab` and `.strtab`, when both are there; an error when `.symtab` is not a whole
    /// number of symbols.
    fn symbols(&self) -> Result<Option<Symbols<'a>>> {
        let (Some(strtab), Some(symtab)) = (self.section(".strtab")?, self.section(".symtab")?)
        else {
            return Ok(None);
        };
        let entsize = if self.is64 { 24 } else { 16 };
        ensure!(
            symtab.len() % entsize == 0,
            "ELF .symtab of {} bytes is not a whole number of {entsize}-byte symbols",
            symtab.len()
        );
        Ok(Some(Symbols {
            is64: self.is64,
            big_endian: self.big_endian,
            strtab,
            symtab,
            entsize,
        }))
    }

    /// The exported symbols as depmod reads them (`kmod_elf_get_symbols`): the `__crc_`
    /// symbols' names, else the strings of `__ksymtab_strings`.
    pub fn exports(&self) -> Result<Vec<String>> {
        if let Some(syms) = self.symbols()? {
            let mut crcs = vec![];
            for i in 1..syms.count() {
                let sym = syms.get(i)?;
                if let Some(name) = sym.name.strip_prefix(b"__crc_") {
                    crcs.push(utf8(name, "exported symbol (__crc_)")?);
                }
            }
            if !crcs.is_empty() {
                return Ok(crcs);
            }
        }
        self.strings("__ksymtab_strings")?
            .into_iter()
            .map(|s| utf8(s, "__ksymtab_strings entry"))
            .collect()
    }

    /// The undefined symbols depmod resolves (`kmod_elf_get_dependency_symbols`): none
    /// without `.symtab`/`.strtab`.
    pub fn undefined(&self) -> Result<Vec<Undefined>> {
        let Some(syms) = self.symbols()? else {
            return Ok(vec![]);
        };
        let versions = match self.section("__versions")? {
            None => &[][..],
            Some(v) => {
                ensure!(
                    v.len() % MODVERSION_LEN == 0,
                    "ELF __versions of {} bytes is not a whole number of {MODVERSION_LEN}-byte entries",
                    v.len()
                );
                v
            }
        };
        let crc_len = if self.is64 { 8 } else { 4 };
        let version_names = versions
            .chunks_exact(MODVERSION_LEN)
            .map(|e| {
                let n = e.get(crc_len..).unwrap_or_default();
                ensure!(
                    n.contains(&0),
                    "ELF __versions entry has no NUL in its name"
                );
                Ok(cstr(n))
            })
            .collect::<Result<Vec<&[u8]>>>()?;
        let mut visited = vec![false; version_names.len()];
        let sparc = self.machine == EM_SPARC || self.machine == EM_SPARCV9;
        let mut out = vec![];
        for i in 1..syms.count() {
            let sym = syms.get(i)?;
            if sym.shndx != SHN_UNDEF {
                continue;
            }
            if sparc && sym.info & 0xf == STT_REGISTER {
                continue;
            }
            if sym.name.is_empty() {
                continue;
            }
            if let Some(k) = version_names.iter().position(|&n| n == sym.name)
                && let Some(v) = visited.get_mut(k)
            {
                *v = true;
            }
            out.push(Undefined {
                name: utf8(sym.name, "undefined symbol")?,
                weak: sym.info >> 4 == STB_WEAK,
            });
        }
        for (name, seen) in version_names.iter().zip(&visited) {
            if !seen {
                out.push(Undefined {
                    name: utf8(name, "__versions entry")?,
                    weak: false,
                });
            }
        }
        Ok(out)
    }
}

/// `.symtab` with its string table.
struct Symbols<'a> {
    is64: bool,
    big_endian: bool,
    strtab: &'a [u8],
    symtab: &'a [u8],
    entsize: usize,
}

struct Symbol<'a> {
    name: &'a [u8],
    info: u8,
    shndx: u16,
}

impl<'a> Symbols<'a> {
    fn count(&self) -> usize {
        self.symtab.len() / self.entsize
    }

    fn get(&self, i: usize) -> Result<Symbol<'a>> {
        let start = i * self.entsize;
        let entry = self
            .symtab
            .get(start..start + self.entsize)
            .with_context(|| format!("ELF symbol {i} beyond .symtab"))?;
        let be = self.big_endian;
        let name_off = u32::try_from(uint_in(entry, 0, 4, be)?)?;
        let (info_at, shndx_at) = if self.is64 { (4, 6) } else { (12, 14) };
        let info = entry.get(info_at).copied().unwrap_or(0);
        let shndx = u16::try_from(uint_in(entry, shndx_at, 2, be)?)?;
        let rest = usize::try_from(name_off)
            .ok()
            .and_then(|o| self.strtab.get(o..))
            .filter(|r| !r.is_empty())
            .with_context(|| {
                format!(
                    "ELF symbol {i}: name offset {name_off} outside .strtab ({} bytes)",
                    self.strtab.len()
                )
            })?;
        ensure!(
            rest.contains(&0),
            "ELF symbol {i}: name at .strtab offset {name_off} has no NUL"
        );
        Ok(Symbol {
            name: cstr(rest),
            info,
            shndx,
        })
    }
}

/// An unsigned integer of `size` (<= 8) bytes at `at` of `data`.
fn uint_in(data: &[u8], at: usize, size: usize, big_endian: bool) -> Result<u64> {
    let bytes = at
        .checked_add(size)
        .and_then(|end| data.get(at..end))
        .with_context(|| {
            format!(
                "ELF read of {size} bytes at offset {at} beyond the {} bytes there",
                data.len()
            )
        })?;
    let mut v = 0u64;
    if big_endian {
        for &b in bytes {
            v = (v << 8) | u64::from(b);
        }
    } else {
        for &b in bytes.iter().rev() {
            v = (v << 8) | u64::from(b);
        }
    }
    Ok(v)
}

/// The bytes of `s` up to its first NUL (all of it without one).
fn cstr(s: &[u8]) -> &[u8] {
    s.split(|&b| b == 0).next().unwrap_or_default()
}

/// Strings separated by runs of NULs, empty ones dropped (a last one without NUL kept).
pub fn split_strings(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0).filter(|s| !s.is_empty()).collect()
}

fn utf8(s: &[u8], what: &str) -> Result<String> {
    String::from_utf8(s.to_vec())
        .map_err(|_| anyhow::anyhow!("{what} {:?} is not UTF-8", String::from_utf8_lossy(s)))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // sizes of small hand-made test data
pub(crate) mod tests {
    use super::*;

    /// A symbol for [`build`]: name, st_info, st_shndx.
    pub struct Sym<'a>(pub &'a str, pub u8, pub u16);

    /// A small relocatable ELF: sections named as given (with their bytes), plus .symtab /
    /// .strtab from `syms` when `syms` is `Some`, then .shstrtab.
    pub fn build(
        is64: bool,
        big: bool,
        sections: &[(&str, Vec<u8>)],
        syms: Option<&[Sym]>,
    ) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, v: u64, n: usize| {
            let b = v.to_le_bytes();
            if big {
                out.extend(b[..n].iter().rev());
            } else {
                out.extend_from_slice(&b[..n]);
            }
        };
        let word = if is64 { 8 } else { 4 };
        let mut secs: Vec<(String, Vec<u8>)> = sections
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        if let Some(syms) = syms {
            let mut strtab = vec![0u8];
            let mut symtab = vec![0u8; if is64 { 24 } else { 16 }];
            for Sym(name, info, shndx) in syms {
                let off = strtab.len() as u64;
                strtab.extend_from_slice(name.as_bytes());
                strtab.push(0);
                if is64 {
                    put(&mut symtab, off, 4);
                    symtab.push(*info);
                    symtab.push(0);
                    put(&mut symtab, u64::from(*shndx), 2);
                    put(&mut symtab, 0, 8);
                    put(&mut symtab, 0, 8);
                } else {
                    put(&mut symtab, off, 4);
                    put(&mut symtab, 0, 4);
                    put(&mut symtab, 0, 4);
                    symtab.push(*info);
                    symtab.push(0);
                    put(&mut symtab, u64::from(*shndx), 2);
                }
            }
            secs.push((".symtab".into(), symtab));
            secs.push((".strtab".into(), strtab));
        }
        let mut shstrtab = vec![0u8];
        let mut name_offs = vec![];
        for (n, _) in &secs {
            name_offs.push(shstrtab.len() as u64);
            shstrtab.extend_from_slice(n.as_bytes());
            shstrtab.push(0);
        }
        name_offs.push(shstrtab.len() as u64);
        shstrtab.extend_from_slice(b".shstrtab\0");
        secs.push((".shstrtab".into(), shstrtab));

        let ehdr = if is64 { 64 } else { 52 };
        let mut body = vec![];
        let mut offs = vec![];
        for (_, d) in &secs {
            offs.push((ehdr + body.len()) as u64);
            body.extend_from_slice(d);
        }
        let shoff = (ehdr + body.len()) as u64;
        let mut out = vec![0x7f, b'E', b'L', b'F'];
        out.push(if is64 { 2 } else { 1 });
        out.push(if big { 2 } else { 1 });
        out.push(1);
        out.resize(16, 0);
        put(&mut out, 1, 2); // ET_REL
        put(&mut out, 40, 2); // EM_ARM
        put(&mut out, 1, 4);
        put(&mut out, 0, word); // entry
        put(&mut out, 0, word); // phoff
        put(&mut out, shoff, word);
        put(&mut out, 0, 4); // flags
        put(&mut out, ehdr as u64, 2);
        put(&mut out, 0, 2);
        put(&mut out, 0, 2);
        put(&mut out, if is64 { 64 } else { 40 }, 2);
        put(&mut out, secs.len() as u64 + 1, 2);
        put(&mut out, secs.len() as u64, 2); // shstrndx: the last
        assert_eq!(out.len(), ehdr);
        out.extend_from_slice(&body);
        let shdr = |out: &mut Vec<u8>, name: u64, off: u64, size: u64| {
            put(out, name, 4);
            put(out, 1, 4); // PROGBITS
            put(out, 0, word); // flags
            put(out, 0, word); // addr
            put(out, off, word);
            put(out, size, word);
            put(out, 0, 4);
            put(out, 0, 4);
            put(out, 1, word);
            put(out, 0, word);
        };
        shdr(&mut out, 0, 0, 0);
        for (i, (_, d)) in secs.iter().enumerate() {
            shdr(&mut out, name_offs[i], offs[i], d.len() as u64);
        }
        out
    }

    fn versions(is64: bool, names: &[&str]) -> Vec<u8> {
        let mut v = vec![];
        for n in names {
            let mut e = vec![0u8; 64];
            let c = if is64 { 8 } else { 4 };
            e[..c].fill(0xab);
            e[c..c + n.len()].copy_from_slice(n.as_bytes());
            v.extend_from_slice(&e);
        }
        v
    }

    fn module(is64: bool, big: bool) -> Vec<u8> {
        build(
            is64,
            big,
            &[
                (".text", vec![0; 8]),
                (
                    ".modinfo",
                    b"\0\0license=GPL\0alias=usb:v1234p*\0\0softdep=pre: crc32c\0name=demo"
                        .to_vec(),
                ),
                ("__ksymtab_strings", b"\0demo_fn\0NS_DEMO\0".to_vec()),
                (
                    "__versions",
                    versions(is64, &["module_layout", "usb_register", "weak_thing"]),
                ),
            ],
            Some(&[
                Sym("demo.c", 4, 0xfff1),
                Sym("usb_register", 0x10, 0),
                Sym("weak_thing", 0x20, 0),
                Sym("demo_fn", 0x12, 1),
                Sym("", 0x10, 0),
            ]),
        )
    }

    #[test]
    fn reads_all_four_layouts() {
        for is64 in [false, true] {
            for big in [false, true] {
                let data = module(is64, big);
                let elf = Elf::parse(&data).unwrap();
                let info: Vec<&[u8]> = elf.strings(".modinfo").unwrap();
                assert_eq!(
                    info,
                    [
                        &b"license=GPL"[..],
                        b"alias=usb:v1234p*",
                        b"softdep=pre: crc32c",
                        b"name=demo"
                    ]
                );
                // No __crc_ symbol: the __ksymtab_strings strings, namespace included.
                assert_eq!(elf.exports().unwrap(), ["demo_fn", "NS_DEMO"]);
                let und = elf.undefined().unwrap();
                let got: Vec<(&str, bool)> =
                    und.iter().map(|u| (u.name.as_str(), u.weak)).collect();
                assert_eq!(
                    got,
                    [
                        ("usb_register", false),
                        ("weak_thing", true),
                        ("module_layout", false)
                    ],
                    "is64={is64} big={big}"
                );
            }
        }
    }

    #[test]
    fn crc_symbols_are_the_exports_when_present() {
        let data = build(
            false,
            false,
            &[("__ksymtab_strings", b"a\0b\0".to_vec())],
            Some(&[
                Sym("__crc_b", 0x10, 0xfff1),
                Sym("x", 0x10, 0),
                Sym("__crc_a", 0x10, 0xfff1),
            ]),
        );
        let elf = Elf::parse(&data).unwrap();
        assert_eq!(elf.exports().unwrap(), ["b", "a"]);
        // __crc_ symbols that are undefined (shndx 0) are undefined symbols too, as in kmod.
        assert_eq!(elf.undefined().unwrap().len(), 1);
    }

    #[test]
    fn absent_tables_give_nothing() {
        let data = build(true, false, &[(".text", vec![1, 2, 3])], None);
        let elf = Elf::parse(&data).unwrap();
        assert!(elf.strings(".modinfo").unwrap().is_empty());
        assert!(elf.exports().unwrap().is_empty());
        assert!(elf.undefined().unwrap().is_empty());
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors_not_panics() {
        for is64 in [false, true] {
            let good = module(is64, false);
            for cut in 0..good.len() {
                let data = &good[..cut];
                if let Ok(elf) = Elf::parse(data) {
                    let _ = elf.strings(".modinfo");
                    let _ = elf.exports();
                    let _ = elf.undefined();
                }
            }
            // Every byte flipped in turn, and a few bytes set to extremes.
            for at in 0..good.len() {
                for v in [0x00, 0xff, 0x80] {
                    let mut d = good.clone();
                    d[at] = v;
                    if let Ok(elf) = Elf::parse(&d) {
                        let _ = elf.strings(".modinfo");
                        let _ = elf.exports();
                        let _ = elf.undefined();
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let good = module(false, false);
        let err = |d: &[u8]| format!("{:#}", Elf::parse(d).err().unwrap());
        assert!(err(b"\x7fELF").contains("not an ELF"));
        assert!(err(&good[..40]).contains("too short"));
        let mut d = good.clone();
        d[4] = 3;
        assert!(err(&d).contains("class"));
        let mut d = good.clone();
        d[46] = 41; // e_shentsize
        assert!(err(&d).contains("section header size"));
        let mut d = good.clone();
        d[32..36].copy_from_slice(&u32::MAX.to_le_bytes()); // e_shoff
        assert!(err(&d).contains("beyond"));
        let mut d = good.clone();
        d[50..52].copy_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        assert!(err(&d).contains("section-name table index"));
    }

    #[test]
    fn damaged_tables_are_errors() {
        // .symtab not a whole number of symbols.
        let mut data = build(
            false,
            false,
            &[],
            Some(&[Sym("a", 0x10, 0), Sym("b", 0x10, 0)]),
        );
        let elf = Elf::parse(&data).unwrap();
        assert_eq!(elf.undefined().unwrap().len(), 2);
        // Shrink .symtab's sh_size (section 1) by one byte.
        let shoff = u32::from_le_bytes(data[32..36].try_into().unwrap()) as usize;
        let size_at = shoff + 40 + 20;
        let size = u32::from_le_bytes(data[size_at..size_at + 4].try_into().unwrap());
        data[size_at..size_at + 4].copy_from_slice(&(size - 1).to_le_bytes());
        let elf = Elf::parse(&data).unwrap();
        let e = format!("{:#}", elf.undefined().unwrap_err());
        assert!(e.contains("whole number"), "{e}");
        // A name offset outside .strtab.
        let mut data = build(false, false, &[], Some(&[Sym("a", 0x10, 0)]));
        let shoff = u32::from_le_bytes(data[32..36].try_into().unwrap()) as usize;
        let sym_off =
            u32::from_le_bytes(data[shoff + 40 + 16..shoff + 40 + 20].try_into().unwrap()) as usize;
        data[sym_off + 16..sym_off + 20].copy_from_slice(&9999u32.to_le_bytes());
        let elf = Elf::parse(&data).unwrap();
        let e = format!("{:#}", elf.undefined().unwrap_err());
        assert!(e.contains("outside .strtab"), "{e}");
        // __versions not a multiple of 64.
        let data = build(
            false,
            false,
            &[("__versions", vec![0; 65])],
            Some(&[Sym("a", 0x10, 0)]),
        );
        let elf = Elf::parse(&data).unwrap();
        assert!(elf.undefined().is_err());
    }

    #[test]
    fn modinfo_splitting_as_kmod() {
        assert!(split_strings(b"").is_empty());
        assert!(split_strings(b"\0\0\0").is_empty());
        assert_eq!(split_strings(b"a\0\0b"), [&b"a"[..], b"b"]);
        assert_eq!(split_strings(b"\0a=1\0"), [&b"a=1"[..]]);
    }
}
