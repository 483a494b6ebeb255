//! Package versions and dependency strings, compared exactly as pacman compares them.
//!
//! A version is `[epoch:]pkgver[-pkgrel]`. [`vercmp`] follows libalpm's `alpm_pkg_vercmp`
//! (lib/libalpm/version.c): the epoch (missing = 0) is compared first, then pkgver, then
//! pkgrel only when both sides have one; each part is compared with the RPM segment rules
//! (`rpmvercmp`): separators are runs of non-alphanumeric characters, a longer separator
//! wins, numeric segments compare as numbers (leading zeros ignored) and beat alphabetic
//! ones, and when one side runs out, a remaining alphabetic segment is *older* (`1.0a` <
//! `1.0`) while a remaining numeric one is newer (`1.0.1` > `1.0`). The unit tests compare
//! against Debian's `vercmp` binary (package `pacman-package-manager`).
//!
//! A dependency string is `name`, `name=ver`, `name>=ver`, `name<=ver`, `name>ver` or
//! `name<ver`, optionally followed by `: description` (optdepends), as `alpm_dep_from_string`
//! reads it. A dependency is satisfied by a package of that name whose version matches, or by
//! a package providing that name: an unversioned dependency by any provision of the name, a
//! versioned one only by a provision with `=version` that matches (`_alpm_depcmp_provides`).

use std::cmp::Ordering;
use std::fmt;

/// Compare two full versions (`epoch:pkgver-pkgrel`) like `vercmp(8)`.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (e1, v1, r1) = split_evr(a);
    let (e2, v2, r2) = split_evr(b);
    segments_cmp(e1, e2)
        .then_with(|| segments_cmp(v1, v2))
        .then_with(|| match (r1, r2) {
            (Some(x), Some(y)) => segments_cmp(x, y),
            _ => Ordering::Equal,
        })
}

/// Split `[epoch:]version[-release]` (libalpm's `parseEVR`): the epoch is the leading digits
/// when a `:` follows them (empty epoch = 0), the release is after the last `-`.
fn split_evr(evr: &str) -> (&str, &str, Option<&str>) {
    let digits = evr.bytes().take_while(u8::is_ascii_digit).count();
    let (epoch, rest) = if evr.as_bytes().get(digits) == Some(&b':') {
        let e = &evr[..digits];
        (if e.is_empty() { "0" } else { e }, &evr[digits + 1..])
    } else {
        ("0", evr)
    };
    match rest.rfind('-') {
        Some(i) => (epoch, &rest[..i], Some(&rest[i + 1..])),
        None => (epoch, rest, None),
    }
}

/// `rpmvercmp`: compare two version parts segment by segment.
fn segments_cmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() && j < b.len() {
        let (si, sj) = (i, j);
        while i < a.len() && !a[i].is_ascii_alphanumeric() {
            i += 1;
        }
        while j < b.len() && !b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        // Different separator lengths decide.
        if i - si != j - sj {
            return (i - si).cmp(&(j - sj));
        }
        let numeric = a[i].is_ascii_digit();
        let class = |c: u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let (ei, ej) = (
            i + a[i..].iter().take_while(|&&c| class(c)).count(),
            j + b[j..].iter().take_while(|&&c| class(c)).count(),
        );
        if ej == j {
            // Segments of different types: numeric is newer than alphabetic.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut x, mut y) = (&a[i..ei], &b[j..ej]);
        if numeric {
            while x.first() == Some(&b'0') {
                x = &x[1..];
            }
            while y.first() == Some(&b'0') {
                y = &y[1..];
            }
            match x.len().cmp(&y.len()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match x.cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
        i = ei;
        j = ej;
    }
    let (rest_a, rest_b) = (&a[i.min(a.len())..], &b[j.min(b.len())..]);
    if rest_a.is_empty() && rest_b.is_empty() {
        return Ordering::Equal;
    }
    // A remaining alphabetic segment never beats the end of the string.
    let a_alpha = rest_a.first().is_some_and(u8::is_ascii_alphabetic);
    let b_alpha = rest_b.first().is_some_and(u8::is_ascii_alphabetic);
    if (rest_a.is_empty() && !b_alpha) || a_alpha {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// A version constraint operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Any,
    Eq,
    Ge,
    Le,
    Gt,
    Lt,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Any => "",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Lt => "<",
        }
    }
}

/// A parsed dependency (or provision, conflict, replacement).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dep {
    pub name: String,
    pub op: Op,
    /// Empty for [`Op::Any`].
    pub version: String,
}

impl Dep {
    /// Parse `name[OP version][: description]` like `alpm_dep_from_string` (the description
    /// is dropped).
    pub fn parse(s: &str) -> Dep {
        let s = match s.find(": ") {
            Some(i) => &s[..i],
            None => s,
        };
        let (name, op, version) = if let Some(i) = s.find('<') {
            match s[i + 1..].strip_prefix('=') {
                Some(v) => (&s[..i], Op::Le, v),
                None => (&s[..i], Op::Lt, &s[i + 1..]),
            }
        } else if let Some(i) = s.find('>') {
            match s[i + 1..].strip_prefix('=') {
                Some(v) => (&s[..i], Op::Ge, v),
                None => (&s[..i], Op::Gt, &s[i + 1..]),
            }
        } else if let Some(i) = s.find('=') {
            (&s[..i], Op::Eq, &s[i + 1..])
        } else {
            (s, Op::Any, "")
        };
        Dep {
            name: name.to_string(),
            op,
            version: version.to_string(),
        }
    }

    /// Whether `version` meets this constraint (`dep_vercmp`).
    pub fn version_ok(&self, version: &str) -> bool {
        let c = vercmp(version, &self.version);
        match self.op {
            Op::Any => true,
            Op::Eq => c == Ordering::Equal,
            Op::Ge => c != Ordering::Less,
            Op::Le => c != Ordering::Greater,
            Op::Gt => c == Ordering::Greater,
            Op::Lt => c == Ordering::Less,
        }
    }

    /// Satisfied by a package called `name` at `version`?
    pub fn literal(&self, name: &str, version: &str) -> bool {
        self.name == name && self.version_ok(version)
    }

    /// Satisfied by one of `provides`? An unversioned provision satisfies only unversioned
    /// dependencies.
    pub fn by_provides(&self, provides: &[Dep]) -> bool {
        provides.iter().any(|p| {
            p.name == self.name
                && match self.op {
                    Op::Any => true,
                    _ => p.op == Op::Eq && self.version_ok(&p.version),
                }
        })
    }

    /// Satisfied by the package `name`-`version` with `provides` (`_alpm_depcmp`).
    pub fn satisfied_by(&self, name: &str, version: &str, provides: &[Dep]) -> bool {
        self.literal(name, version) || self.by_provides(provides)
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.as_str(), self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs with pacman's own expectations (test/util/vercmptest.sh) plus epochs/releases.
    const CASES: &[(&str, &str, i8)] = &[
        ("1.5.0", "1.5.0", 0),
        ("1.5.1", "1.5.0", 1),
        ("1.5.1", "1.5", 1),
        ("1.5.0-1", "1.5.0-1", 0),
        ("1.5.0-1", "1.5.0-2", -1),
        ("1.5.0-1", "1.5.1-1", -1),
        ("1.5.0-2", "1.5.1-1", -1),
        ("1.5-1", "1.5", 0),
        ("1.5-1", "1.5-2", -1),
        ("1.1-1", "1.1", 0),
        ("1.0a", "1.0alpha", -1),
        ("1.0b", "1.0alpha", 1),
        ("1.0a", "1.0", -1),
        ("1.0", "1.0rc1", 1),
        ("1.0rc1", "1.0.1", -1),
        ("1.0.a", "1.0.1", -1),
        ("1.0.1", "1.0.a", 1),
        ("1.0", "1.0.", -1),
        ("1.0..", "1.0.", 0),
        ("1.0..", "1.0.1", -1),
        ("1..0", "1.0", 1),
        ("1_0", "1.0", 0),
        ("1.0.0", "1.0", 1),
        ("01.0", "1.0", 0),
        ("1.010", "1.9", 1),
        ("0:1.0", "1.0", 0),
        ("1:1.0", "1.0", 1),
        ("1:1.0", "2.0", 1),
        ("2:1.0", "1:5.0", 1),
        (":1.0", "1.0", 0),
        ("1.0-1", "1.0-1.1", -1),
        ("1.0-1.1", "1.0-1.2", -1),
        ("2.0.0-1", "2.0.0rc1-1", 1),
        ("26.1.3-1", "26.1.3-2", -1),
        ("1.2.3", "1.2.3a", 1),
        ("a", "b", -1),
        ("1", "a", 1),
        ("1.0+1", "1.0.1", 0),
    ];

    #[test]
    fn vercmp_known_cases() {
        for &(a, b, want) in CASES {
            let got = vercmp(a, b) as i8;
            assert_eq!(got, want, "vercmp({a}, {b})");
            assert_eq!(vercmp(b, a) as i8, -want, "vercmp({b}, {a})");
        }
    }

    /// The same pairs through Debian's real `vercmp` (pacman-package-manager).
    #[test]
    fn vercmp_agrees_with_pacmans_binary() {
        let extra = [
            ("1.0~rc1", "1.0"),
            ("3.0-0.1", "3.0-0"),
            ("2.38.1-1", "2.38-3"),
            ("20230101", "20221231.1"),
            ("1.0a1", "1.0a"),
            ("1:0", "0:9"),
            ("r1234.abcd", "r999.ffff"),
        ];
        for (a, b) in CASES.iter().map(|c| (c.0, c.1)).chain(extra) {
            let out = std::process::Command::new("vercmp")
                .args([a, b])
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run the oracle `vercmp` ({e}); install pacman-package-manager")
                });
            let s = String::from_utf8_lossy(&out.stdout);
            let oracle: i32 = s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("vercmp said {s:?}"));
            assert_eq!(vercmp(a, b) as i32, oracle.signum(), "vercmp {a} {b}");
        }
    }

    #[test]
    fn dependency_strings() {
        let d = Dep::parse("runc>=1.2");
        assert_eq!(
            (d.name.as_str(), d.op, d.version.as_str()),
            ("runc", Op::Ge, "1.2")
        );
        assert_eq!(d.to_string(), "runc>=1.2");
        assert_eq!(Dep::parse("glibc").op, Op::Any);
        assert_eq!(Dep::parse("a<=2").op, Op::Le);
        assert_eq!(Dep::parse("a<2").op, Op::Lt);
        assert_eq!(Dep::parse("a>2").op, Op::Gt);
        assert_eq!(Dep::parse("a=1:2-3").version, "1:2-3");
        assert_eq!(Dep::parse("bash: for scripts").name, "bash");
        assert!(d.literal("runc", "1.2.0-1"));
        assert!(!d.literal("runc", "1.1.9-1"));
        // Versioned deps need versioned provisions.
        let provs = [Dep::parse("runc")];
        assert!(!d.by_provides(&provs));
        assert!(Dep::parse("runc").by_provides(&provs));
        assert!(d.by_provides(&[Dep::parse("runc=1.3")]));
        assert!(!d.by_provides(&[Dep::parse("runc=1.1")]));
    }
}
