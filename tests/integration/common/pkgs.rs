//! Test pacman packages and repositories, made the way Arch's tools make them: [`build_pkg`]
//! assembles a package as makepkg's `create_package` does (`.PKGINFO` in `write_pkginfo`'s
//! order, gzip'd `.MTREE` from bsdtar's mtree writer, `.INSTALL`, a zstd/xz tar of the
//! listed files), [`makepkg`] runs Debian's real `makepkg` over a PKGBUILD for the same
//! package, [`repo_add`] indexes a repository with the real `repo-add`, [`signer`] and
//! [`sign_all`] sign packages with a throwaway key, and [`pacman`] runs Debian's real `pacman`
//! on a root directory. Used by `packages_e2e`, `boot_qemu` and `pacman_diff`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::run_ok;
use crate::gpg_keys::Gpg;

/// What one package entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// One entry of a package (path relative to the root, no leading or trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    /// Permission bits (ignored for symlinks).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Extended attributes (`user.*`), set on the staged file so bsdtar archives them.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A root-owned regular file.
    pub fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
        Entry {
            path: path.to_string(),
            kind: Kind::File(data.into()),
            mode,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }
}

/// One test package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    /// `[epoch:]pkgver-pkgrel`.
    pub ver: String,
    pub deps: Vec<String>,
    pub provides: Vec<String>,
    pub conflicts: Vec<String>,
    pub replaces: Vec<String>,
    pub backup: Vec<String>,
    pub files: Vec<Entry>,
    pub install: Option<String>,
    /// `zst` or `xz`.
    pub ext: &'static str,
}

impl Pkg {
    pub fn new(name: &str, ver: &str) -> Pkg {
        Pkg {
            name: name.to_string(),
            ver: ver.to_string(),
            deps: Vec::new(),
            provides: Vec::new(),
            conflicts: Vec::new(),
            replaces: Vec::new(),
            backup: Vec::new(),
            files: Vec::new(),
            install: None,
            ext: "zst",
        }
    }

    /// The file name makepkg gives it.
    pub fn file_name(&self) -> String {
        format!("{}-{}-armv7h.pkg.tar.{}", self.name, self.ver, self.ext)
    }
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Lay `p`'s entries out under `dir` (parents made 0755, root-owned, as makepkg's
/// `$pkgdir` under fakeroot), with their modes, owners and xattrs.
fn stage(dir: &Path, p: &Pkg) {
    std::fs::create_dir_all(dir).unwrap();
    for e in &p.files {
        let f = dir.join(&e.path);
        let mut parent = f.parent().unwrap().to_path_buf();
        let mut missing = Vec::new();
        while !parent.exists() {
            missing.push(parent.clone());
            parent = parent.parent().unwrap().to_path_buf();
        }
        for m in missing.iter().rev() {
            std::fs::create_dir(m).unwrap();
            std::fs::set_permissions(m, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        match &e.kind {
            Kind::File(data) => std::fs::write(&f, data).unwrap(),
            Kind::Dir => {
                if !f.is_dir() {
                    std::fs::create_dir(&f).unwrap();
                }
            }
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &f).unwrap(),
        }
    }
    // Modes, owners and xattrs once every entry exists (a 0555 directory stays writable to
    // root anyway, but keep the order makepkg's `package()` functions usually have).
    for e in &p.files {
        let f = dir.join(&e.path);
        if !matches!(e.kind, Kind::Symlink(_)) {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(e.mode)).unwrap();
        }
        std::os::unix::fs::lchown(&f, Some(e.uid), Some(e.gid)).unwrap();
        for (k, v) in &e.xattrs {
            set_xattr(&f, k, v);
        }
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and the value slice is valid for its length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// `.PKGINFO` in makepkg's `write_pkginfo` order.
fn pkginfo(p: &Pkg, size: usize) -> String {
    let mut info = format!(
        "# Generated by makepkg 6.0.2\npkgname = {n}\npkgbase = {n}\npkgver = {v}\npkgdesc = test package {n}\nurl = https://example.org/{n}\nbuilddate = 1700000000\npackager = Test Packager <test@example.org>\nsize = {size}\narch = armv7h\nlicense = MIT\n",
        n = p.name,
        v = p.ver
    );
    for (key, list) in [
        ("replaces", &p.replaces),
        ("conflict", &p.conflicts),
        ("provides", &p.provides),
        ("backup", &p.backup),
        ("depend", &p.deps),
    ] {
        for d in list {
            info.push_str(&format!("{key} = {d}\n"));
        }
    }
    info
}

/// Build `p` like makepkg's `create_package` into `repo_dir` (staged in `work/NAME-VER`);
/// returns the package file.
pub fn build_pkg(work: &Path, repo_dir: &Path, p: &Pkg) -> PathBuf {
    let dir = work.join(format!("{}-{}", p.name, p.ver));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    stage(&dir, p);
    let size: usize = p
        .files
        .iter()
        .map(|e| match &e.kind {
            Kind::File(d) => d.len(),
            _ => 0,
        })
        .sum();
    std::fs::write(dir.join(".PKGINFO"), pkginfo(p, size)).unwrap();
    let mut meta = vec![".PKGINFO".to_string()];
    if let Some(s) = &p.install {
        std::fs::write(dir.join(".INSTALL"), s).unwrap();
        meta.push(".INSTALL".into());
    }
    let tops: std::collections::BTreeSet<String> = p
        .files
        .iter()
        .map(|e| e.path.split('/').next().unwrap().to_string())
        .collect();
    let d = dir.to_str().unwrap();
    let list: Vec<String> = meta.iter().cloned().chain(tops.iter().cloned()).collect();
    let file = repo_dir.join(p.file_name());
    let flag = if p.ext == "zst" { "--zstd" } else { "-J" };
    let mut all = vec![".PKGINFO".to_string(), ".MTREE".to_string()];
    all.extend(meta.into_iter().skip(1));
    all.extend(tops);
    // One shell: the times (makepkg touches everything to SOURCE_DATE_EPOCH), `.MTREE` (its
    // bsdtar options), then the archive (metadata first, as makepkg lists them).
    run_ok(
        "sh",
        &[
            "-c",
            &format!(
                "cd {d} && find . -exec touch -h -d @1700000000 {{}} + && \
                 LANG=C bsdtar -cf - --format=mtree --options='!all,use-set,type,uid,gid,mode,time,size,md5,sha256,link' {} | gzip -c -f -n > .MTREE && touch -d @1700000000 .MTREE && \
                 LANG=C bsdtar -cf {} {flag} {}",
                list.join(" "),
                file.display(),
                all.join(" ")
            ),
        ],
    );
    file
}

/// `[epoch:]pkgver-pkgrel` → (epoch, pkgver, pkgrel).
pub fn split_ver(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = v.split_once(':').unwrap_or(("", v));
    let (ver, rel) = rest.rsplit_once('-').unwrap();
    (epoch, ver, rel)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Run Debian's `makepkg` (as `nobody` through `setpriv`: makepkg refuses root; its
/// `package()` runs under fakeroot, so owners are kept) over a PKGBUILD for `p` in `work`;
/// returns the package file (in `work`).
pub fn makepkg(work: &Path, p: &Pkg) -> PathBuf {
    std::fs::create_dir_all(work).unwrap();
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (epoch, ver, rel) = split_ver(&p.ver);
    let mut pb = format!("pkgname={}\npkgver={ver}\npkgrel={rel}\n", p.name);
    if !epoch.is_empty() {
        pb.push_str(&format!("epoch={epoch}\n"));
    }
    pb.push_str(&format!(
        "pkgdesc=\"test package {n}\"\nurl=\"https://example.org/{n}\"\narch=(armv7h)\nlicense=(MIT)\n",
        n = p.name
    ));
    for (key, list) in [
        ("depends", &p.deps),
        ("provides", &p.provides),
        ("conflicts", &p.conflicts),
        ("replaces", &p.replaces),
        ("backup", &p.backup),
    ] {
        let items: Vec<String> = list.iter().map(|d| quote(d)).collect();
        pb.push_str(&format!("{key}=({})\n", items.join(" ")));
    }
    if let Some(s) = &p.install {
        let name = format!("{}.install", p.name);
        std::fs::write(work.join(&name), s).unwrap();
        pb.push_str(&format!("install={name}\n"));
    }
    pb.push_str("package() {\n  cd \"$pkgdir\"\n");
    for e in &p.files {
        let path = quote(&e.path);
        pb.push_str(&format!("  mkdir -p \"$(dirname {path})\"\n"));
        match &e.kind {
            Kind::File(data) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                pb.push_str(&format!("  printf %s '{b64}' | base64 -d > {path}\n"));
            }
            Kind::Dir => pb.push_str(&format!("  mkdir -p {path}\n")),
            Kind::Symlink(t) => pb.push_str(&format!("  ln -s {} {path}\n", quote(t))),
        }
    }
    for e in &p.files {
        let path = quote(&e.path);
        if !matches!(e.kind, Kind::Symlink(_)) {
            pb.push_str(&format!("  chmod {:o} {path}\n", e.mode));
        }
        pb.push_str(&format!("  chown -h {}:{} {path}\n", e.uid, e.gid));
        for (k, v) in &e.xattrs {
            pb.push_str(&format!(
                "  setfattr -h -n {k} -v {} {path}\n",
                quote(&String::from_utf8_lossy(v))
            ));
        }
    }
    pb.push_str("}\n");
    std::fs::write(work.join("PKGBUILD"), pb).unwrap();
    let conf = work.join("makepkg.conf");
    std::fs::write(
        &conf,
        format!(
            "CARCH=\"armv7h\"\nCHOST=\"armv7l-unknown-linux-gnueabihf\"\nPKGEXT='.pkg.tar.{}'\nSRCEXT='.src.tar.gz'\n\
             OPTIONS=(!strip !docs !libtool !staticlibs emptydirs !zipman !purge !debug !lto)\n\
             INTEGRITY_CHECK=(sha256)\nCOMPRESSXZ=(xz -c -z -)\nCOMPRESSZST=(zstd -c -z -q -)\n\
             PACKAGER=\"Test Packager <test@example.org>\"\n",
            p.ext
        ),
    )
    .unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "makepkg",
        ])
        .arg("--config")
        .arg(&conf)
        .args(["--nodeps", "--noconfirm", "--nocolor"])
        .current_dir(work)
        .env("HOME", work)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("makepkg (Debian package makepkg) and setpriv are needed by this test");
    assert!(
        o.status.success(),
        "makepkg failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let f = work.join(p.file_name());
    assert!(f.is_file(), "makepkg did not make {}", f.display());
    f
}

/// `repo-add` (Debian's pacman-package-manager) over the package files of one repository.
pub fn repo_add(repo_dir: &Path, name: &str, files: &[PathBuf]) {
    let db = repo_dir.join(format!("{name}.db.tar.gz"));
    let mut args = vec!["-q".to_string(), db.display().to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("repo-add", &a);
    assert!(repo_dir.join(format!("{name}.db")).exists());
}

/// A signing key for the test repositories; its public half is `dir/keyring.asc` (what
/// hc1img gets as `HC1IMG_KEYRING`).
pub fn signer(dir: &Path) -> Gpg {
    let gpg = Gpg::new().unwrap();
    gpg.gen_key("Packages Test <pk@example.invalid>", "ed25519", "sign")
        .unwrap();
    gpg.export(&dir.join("keyring.asc"), true).unwrap();
    gpg
}

/// Sign each package (`FILE.sig` beside it, which repo-add puts into the database).
pub fn sign_all(gpg: &Gpg, files: &[&PathBuf]) {
    for f in files {
        gpg.sign(f, &PathBuf::from(format!("{}.sig", f.display())), false)
            .unwrap();
    }
}

/// Debian's `pacman` on the root directory `root` (database in `root/var/lib/pacman`,
/// `--noconfirm`), with `opts` (`--config FILE`, `--gpgdir`, …) before `args`.
pub fn pacman(root: &Path, opts: &[&str], args: &[&str]) -> Output {
    let r = root.display().to_string();
    let db = format!("{r}/var/lib/pacman");
    let mut a = vec!["--root", &r, "--dbpath", &db, "--noconfirm"];
    a.extend_from_slice(opts);
    a.extend_from_slice(args);
    super::run("pacman", &a)
}

/// [`pacman`], which must succeed; its stdout and stderr.
pub fn pacman_ok(root: &Path, opts: &[&str], args: &[&str]) -> String {
    let o = pacman(root, opts, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "pacman {args:?} failed:\n{text}");
    text
}
