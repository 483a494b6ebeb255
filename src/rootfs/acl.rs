//! POSIX.1e ACLs carried by tar archives: the pax `SCHILY.acl.access` and `SCHILY.acl.default`
//! records (star's keywords; bsdtar writes them for every file with an extended ACL, GNU tar
//! with `--acls`), turned into the `system.posix_acl_access` / `system.posix_acl_default`
//! xattr values in the kernel's VFS form, which the ext4 writer converts to ext4's own on-disk
//! form (src/ext4/xattr.rs).
//!
//! The text is POSIX.1e's long form, read as libarchive's `archive_acl_from_text_l`
//! (libarchive archive_acl.c) reads it: entries separated by `,` or newlines,
//! `tag:qualifier:perms` with an optional fourth field holding the numeric id
//! (`group:adm:r-x:4`, what bsdtar writes: libarchive's `ARCHIVE_ENTRY_ACL_STYLE_EXTRA_ID`),
//! tags `user`/`group`/`other`/`mask` or their first letters, a `default:` prefix moving an
//! entry to the default ACL, `#` starting a comment. Ids come from the text only: a qualifier
//! that is a name without a numeric id (what GNU tar writes) is never looked up on the build
//! host (its ids need not be the image's), so such an ACL is left out with a warning.
//!
//! The value is linux include/uapi/linux/posix_acl_xattr.h's: a little-endian `u32` version 2,
//! then one `{u16 tag, u16 perm, u32 id}` per entry, sorted by tag then id, valid as the
//! kernel's `posix_acl_valid` (linux fs/posix_acl.c) requires: one owner, owning group and
//! other entry, a mask when there are named entries, no id twice. Like the kernel's
//! `posix_acl_update_mode` when bsdtar sets an access ACL on extraction, the access ACL's
//! owner, mask (else owning group) and other permissions become the mode's rwx bits, and an
//! access ACL of those three entries alone is no xattr, only the mode.

use std::fmt;

/// `ACL_USER_OBJ` … `ACL_OTHER` (linux include/uapi/linux/posix_acl.h).
pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;
/// The id of entries that have none (`ACL_UNDEFINED_ID`).
const UNDEFINED_ID: u32 = u32::MAX;
/// `POSIX_ACL_XATTR_VERSION`.
const XATTR_VERSION: u32 = 2;
/// More entries than one ext4 xattr block could hold (4 KiB of 8-byte entries).
const MAX_ENTRIES: usize = 512;

/// One ACL entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub tag: u16,
    pub id: u32,
    /// `r` 4, `w` 2, `x` 1.
    pub perm: u16,
}

/// Why a text ACL cannot be imported.
#[derive(Debug, PartialEq, Eq)]
pub enum AclError {
    /// Not an ACL: the input is bad.
    Malformed(String),
    /// A named entry without a numeric id: valid, but its id is unknown here.
    NameOnly(String),
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclError::Malformed(m) => f.write_str(m),
            AclError::NameOnly(n) => write!(
                f,
                "names {n} without a numeric id, which hc1img does not look up on the build host; ACL left out (make the tarball with bsdtar, which records ids)"
            ),
        }
    }
}

/// Both ACLs an entry's records describe.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acls {
    pub access: Vec<Entry>,
    pub default: Vec<Entry>,
}

fn bad(msg: impl Into<String>) -> AclError {
    AclError::Malformed(msg.into())
}

/// A numeric id: decimal digits, below `ACL_UNDEFINED_ID`.
fn id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&v| v != UNDEFINED_ID)
}

fn perms(s: &str) -> Option<u16> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u16, |p, b| match b {
        b'r' | b'R' => Some(p | 4),
        b'w' | b'W' => Some(p | 2),
        b'x' | b'X' => Some(p | 1),
        b'-' => Some(p),
        _ => None,
    })
}

/// Parse one record's text into `acls`: entries go to `default` when `into_default` or when
/// they carry a `default:` prefix, else to `access`.
pub fn parse_into(text: &[u8], into_default: bool, acls: &mut Acls) -> Result<(), AclError> {
    let text = std::str::from_utf8(text).map_err(|_| bad("ACL text is not UTF-8"))?;
    for raw in text.split([',', '\n']) {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let shown = || format!("{entry:?}");
        let mut fields: Vec<&str> = entry.split(':').map(str::trim).collect();
        let mut default = into_default;
        if matches!(fields[0], "d" | "default") {
            default = true;
            fields.remove(0);
        }
        let tag = match fields.first().copied().unwrap_or("") {
            "u" | "user" => USER_OBJ,
            "g" | "group" => GROUP_OBJ,
            "o" | "other" => OTHER,
            "m" | "mask" => MASK,
            _ => return Err(bad(format!("ACL entry {} has an unknown tag", shown()))),
        };
        let e = if tag == USER_OBJ || tag == GROUP_OBJ {
            let (qual, p, extra) = match fields[1..] {
                [q, p] => (q, p, None),
                [q, p, i] => (q, p, Some(i)),
                _ => {
                    return Err(bad(format!(
                        "ACL entry {} is not tag:qualifier:perms[:id]",
                        shown()
                    )));
                }
            };
            let perm = perms(p)
                .ok_or_else(|| bad(format!("ACL entry {} has bad permissions", shown())))?;
            let extra_id = match extra {
                Some(i) => {
                    Some(id(i).ok_or_else(|| bad(format!("ACL entry {} has a bad id", shown())))?)
                }
                None => None,
            };
            match (qual.is_empty(), id(qual).or(extra_id)) {
                (true, None) => Entry {
                    tag,
                    id: UNDEFINED_ID,
                    perm,
                },
                (_, Some(i)) => Entry {
                    tag: if tag == USER_OBJ { USER } else { GROUP },
                    id: i,
                    perm,
                },
                (false, None) => {
                    let what = if tag == USER_OBJ { "user" } else { "group" };
                    return Err(AclError::NameOnly(format!("{what} {qual:?}")));
                }
            }
        } else {
            // `other::rwx`, or Solaris' `other:rwx`.
            let p = match fields[1..] {
                ["", p] | [p] => p,
                _ => {
                    return Err(bad(format!(
                        "ACL entry {} is not {}::perms",
                        shown(),
                        fields[0]
                    )));
                }
            };
            Entry {
                tag,
                id: UNDEFINED_ID,
                perm: perms(p)
                    .ok_or_else(|| bad(format!("ACL entry {} has bad permissions", shown())))?,
            }
        };
        let list = if default {
            &mut acls.default
        } else {
            &mut acls.access
        };
        if list.len() == MAX_ENTRIES {
            return Err(bad(format!(
                "ACL has more than {MAX_ENTRIES} entries, more than ext4 stores"
            )));
        }
        list.push(e);
    }
    Ok(())
}

/// Sort `entries` and check them as the kernel's `posix_acl_valid` does.
fn valid(entries: &mut [Entry]) -> Result<(), AclError> {
    entries.sort_by_key(|e| (e.tag, e.id));
    let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
    for (t, name) in [
        (USER_OBJ, "user::"),
        (GROUP_OBJ, "group::"),
        (OTHER, "other::"),
    ] {
        if count(t) != 1 {
            return Err(bad(format!("ACL has {} {name} entries, not one", count(t))));
        }
    }
    if count(MASK) > 1 {
        return Err(bad("ACL has more than one mask entry"));
    }
    if count(MASK) == 0 && count(USER) + count(GROUP) > 0 {
        return Err(bad("ACL has named entries but no mask entry"));
    }
    if let Some(w) = entries.windows(2).find(|w| {
        (w[0].tag == USER || w[0].tag == GROUP) && w[0].tag == w[1].tag && w[0].id == w[1].id
    }) {
        let what = if w[0].tag == USER { "user" } else { "group" };
        return Err(bad(format!("ACL names {what} {} twice", w[0].id)));
    }
    Ok(())
}

/// The xattr value (linux posix_acl_xattr.h) of sorted, valid entries.
fn xattr(entries: &[Entry]) -> Vec<u8> {
    let mut v = XATTR_VERSION.to_le_bytes().to_vec();
    for e in entries {
        v.extend_from_slice(&e.tag.to_le_bytes());
        v.extend_from_slice(&e.perm.to_le_bytes());
        v.extend_from_slice(&e.id.to_le_bytes());
    }
    v
}

/// The access ACL applied to a file's permission bits `perm` (as the kernel's
/// `posix_acl_equiv_mode`: the rwx bits follow the owner, mask (else owning group) and other
/// entries); the xattr value unless the ACL says no more than the mode.
pub fn access_xattr(entries: &mut [Entry], perm: &mut u16) -> Result<Option<Vec<u8>>, AclError> {
    valid(entries)?;
    let mut mode = 0u16;
    let mut equiv = true;
    for e in entries.iter() {
        let p = e.perm & 7;
        match e.tag {
            USER_OBJ => mode |= p << 6,
            GROUP_OBJ => mode |= p << 3,
            OTHER => mode |= p,
            MASK => {
                mode = (mode & !0o070) | (p << 3);
                equiv = false;
            }
            _ => equiv = false,
        }
    }
    *perm = (*perm & !0o777) | mode;
    Ok((!equiv).then(|| xattr(entries)))
}

/// The default ACL's xattr value.
pub fn default_xattr(entries: &mut [Entry]) -> Result<Vec<u8>, AclError> {
    valid(entries)?;
    Ok(xattr(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Acls, AclError> {
        let mut a = Acls::default();
        parse_into(text.as_bytes(), false, &mut a)?;
        Ok(a)
    }

    fn e(tag: u16, id: u32, perm: u16) -> Entry {
        Entry { tag, id, perm }
    }

    #[test]
    fn bsdtar_text_with_extra_ids_becomes_the_kernels_xattr() {
        // What bsdtar 3.6 writes for systemd's /var/log/journal.
        let mut a = parse(
            "user::rwx,group::r-x,other::---,user:1234:rw-,group:adm:r-x:4,group:systemd-journal:r-x:190,mask::rwx",
        )
        .unwrap();
        let mut perm = 0o2755;
        let v = access_xattr(&mut a.access, &mut perm).unwrap().unwrap();
        assert_eq!(perm, 0o2770, "setgid kept, group bits from the mask");
        let want = [
            e(USER_OBJ, UNDEFINED_ID, 7),
            e(USER, 1234, 6),
            e(GROUP_OBJ, UNDEFINED_ID, 5),
            e(GROUP, 4, 5),
            e(GROUP, 190, 5),
            e(MASK, UNDEFINED_ID, 7),
            e(OTHER, UNDEFINED_ID, 0),
        ];
        assert_eq!(a.access, want);
        assert_eq!(&v[..4], &[2, 0, 0, 0]);
        assert_eq!(v.len(), 4 + 8 * want.len());
        // The group:adm entry: tag 8, perm 5, id 4.
        assert_eq!(&v[4 + 8 * 3..4 + 8 * 4], &[8, 0, 5, 0, 4, 0, 0, 0]);
    }

    #[test]
    fn default_prefix_short_tags_solaris_forms_and_comments() {
        let a = parse("u::rw-\n g : : r-- \n o:r\n#c\nd:u::rwx,default:g:7:r-x,default:m::rwx,d:o::---,default:group::r--\n")
            .unwrap();
        assert_eq!(
            a.access,
            [
                e(USER_OBJ, UNDEFINED_ID, 6),
                e(GROUP_OBJ, UNDEFINED_ID, 4),
                e(OTHER, UNDEFINED_ID, 4)
            ]
        );
        let mut d = a.default;
        let v = default_xattr(&mut d).unwrap();
        assert_eq!(v.len(), 4 + 8 * 5);
        assert_eq!(d[2], e(GROUP, 7, 5));
        // A minimal access ACL is the mode alone.
        let mut acc = a.access;
        let mut perm = 0o777;
        assert_eq!(access_xattr(&mut acc, &mut perm).unwrap(), None);
        assert_eq!(perm, 0o644);
        // GNU tar's `#effective:` remark after an entry is a comment.
        let a = parse("user::rw-\ngroup:7:rw-\t#effective:r--\nmask::r--\nother::r--\n").unwrap();
        assert_eq!(a.access[1], e(GROUP, 7, 6));
    }

    #[test]
    fn names_without_ids_are_never_looked_up() {
        let err = parse("user::rw-,group:adm:r-x,mask::r-x,other::---").unwrap_err();
        assert_eq!(err, AclError::NameOnly("group \"adm\"".into()));
        assert!(err.to_string().contains("not look up"), "{err}");
    }

    #[test]
    fn hostile_text_is_an_error_not_a_panic() {
        for (text, why) in [
            ("bogus::rwx", "unknown tag"),
            ("user::rwz", "bad permissions"),
            ("user::", "bad permissions"),
            ("user", "not tag:qualifier"),
            ("user:a:b:c:d", "not tag:qualifier"),
            ("user:x:rw-:4294967295", "bad id"),
            ("user:x:rw-:99999999999999999999", "bad id"),
            ("user:x:rw-:-1", "bad id"),
            ("other:x:rwx", "not other::perms"),
            ("mask", "not mask::perms"),
            (":::", "unknown tag"),
            ("default", "unknown tag"),
        ] {
            match parse(text) {
                Err(AclError::Malformed(m)) => assert!(m.contains(why), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(parse_into(b"\xff", false, &mut Acls::default()).is_err());
        let many = (0..600)
            .map(|i| format!("u:{i}:r"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            parse(&many)
                .unwrap_err()
                .to_string()
                .contains("more than 512")
        );
    }

    #[test]
    fn invalid_acls_are_refused_as_the_kernel_refuses_them() {
        for (text, why) in [
            ("user::rw-,other::r--", "0 group:: entries"),
            (
                "user::rw-,user::r--,group::r--,other::r--",
                "2 user:: entries",
            ),
            ("user::rw-,user:5:r--,group::r--,other::r--", "no mask"),
            (
                "user::rw-,group::r--,mask::r--,mask::r--,other::r--",
                "more than one mask",
            ),
            (
                "user::rw-,user:5:r--,user:5:rw-,group::r--,mask::rw-,other::r--",
                "user 5 twice",
            ),
        ] {
            let mut a = parse(text).unwrap();
            let mut perm = 0o644;
            let err = access_xattr(&mut a.access, &mut perm)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        // The same id as user and as group is fine.
        let mut a = parse("u::rw-,u:5:r,g::r,g:5:r,m::r,o::r").unwrap();
        assert!(access_xattr(&mut a.access, &mut 0o644).unwrap().is_some());
    }
}
