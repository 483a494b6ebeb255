//! The output store: `out/<name>-<first 12 hex of the derivation>/`, with `out/<name>` a
//! symlink to the newest build of that profile (like Nix's `result`), or an explicit
//! `--out DIR`.
//!
//! Rules (the ones Nix and mkosi keep for their output directories):
//!
//! - hc1img never deletes or moves what it did not make. An existing output path is used only
//!   when it is an empty directory, a directory holding an hc1img `manifest.json`, or one whose
//!   replacement was interrupted ([`REPLACING`] names the files hc1img owns there); a file, a
//!   dangling symlink or any other non-empty directory is refused before any work. Replacing a
//!   build touches only the files its manifest lists; other files in the directory stay.
//! - A build is "up to date" only when the manifest's derivation is the current one.
//! - A build writes into a staging directory (`.hc1img-staging-…`) on the same filesystem as
//!   the result: beside the output directory when that does not exist yet (then one
//!   `rename(2)` puts it in place), inside it when it does (a mount point works: the files are
//!   renamed in one by one, `manifest.json` last, so a directory with a `manifest.json` is
//!   complete by construction).
//! - The staging directory holds a `.hc1img-lock` file with the builder's pid, `flock(2)`ed for the
//!   build's whole life. A later build removes staging directories whose lock nobody holds
//!   (their build was killed) and never one whose build is running. SIGINT, SIGTERM and SIGHUP
//!   remove the staging directory before the process exits ([`remove_staging_on_signals`]);
//!   a failed build or commit removes it on drop.
//! - Commits into one parent directory are serialised by an `flock` on that directory, so two
//!   concurrent builds of the same inputs both succeed with the same result.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::manifest::Manifest;

/// Files every complete output directory holds.
pub const OUTPUTS: [&str; 4] = ["ssd.img", "sd.img", "sbom.spdx.json", "manifest.json"];

/// Prefix of staging directories (beside or inside the output directory).
pub const STAGING_PREFIX: &str = ".hc1img-staging-";

/// Marker written while a build's files are replaced in place: the JSON list of the file
/// names hc1img owns in the directory, so an interrupted replacement can be resumed.
pub const REPLACING: &str = ".hc1img-replacing";

const MANIFEST: &str = "manifest.json";
/// The checksum list `build --compress` (or `--sign-key`) writes (GNU `sha256sum` format;
/// `src/sums.rs`).
pub const SHA256SUMS: &str = "SHA256SUMS";
/// Its detached signature (`build --sign-key`, `hc1img sign`; `src/signing.rs`).
pub const SHA256SUMS_SIG: &str = "SHA256SUMS.sig";
/// Hidden, so the `SHA256SUMS` of a build (every file not starting with `.`) never lists it.
const LOCK: &str = ".hc1img-lock";

/// Staging directories of builds in progress (and [`TempDir`]s), removed by the signal thread.
static LIVE_STAGING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Where a profile's build goes.
#[derive(Clone, Debug)]
pub struct OutDir {
    /// Final directory.
    pub dir: PathBuf,
    /// The `out/<name>` symlink to update, when the directory is the default store path.
    pub link: Option<PathBuf>,
}

/// What is at the output path before a build.
#[derive(Debug)]
pub enum Existing {
    /// Nothing.
    Absent,
    /// An empty directory (possibly a mount point).
    Empty,
    /// A directory with an hc1img manifest.
    Build(Box<Manifest>),
    /// A directory whose replacement by hc1img was interrupted: the files hc1img owns there.
    Interrupted(BTreeSet<String>),
}

impl Existing {
    /// Whether this is a build of `derivation`.
    pub fn is_build_of(&self, derivation: &str) -> bool {
        matches!(self, Existing::Build(m) if m.derivation == derivation)
    }
}

impl OutDir {
    /// The default store location under `root` (normally `out/`).
    pub fn in_store(root: &Path, name: &str, derivation: &str) -> OutDir {
        let short = &derivation[..derivation.len().min(12)];
        OutDir {
            dir: root.join(format!("{name}-{short}")),
            link: Some(root.join(name)),
        }
    }

    /// An explicit `--out DIR`.
    pub fn explicit(dir: PathBuf) -> OutDir {
        OutDir { dir, link: None }
    }

    fn parent(&self) -> PathBuf {
        match self.dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// What is at the output path; an error (naming it) when hc1img may not use it.
    pub fn inspect(&self) -> Result<Existing> {
        let d = &self.dir;
        let meta = match fs::metadata(d) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if fs::symlink_metadata(d).is_ok() {
                    bail!(
                        "{}: is a symlink to nothing; hc1img does not replace it: remove it or choose another --out",
                        d.display()
                    );
                }
                return Ok(Existing::Absent);
            }
            Err(e) => return Err(e).with_context(|| format!("{}: cannot stat", d.display())),
        };
        if !meta.is_dir() {
            bail!(
                "{}: exists and is not a directory; hc1img writes a directory there and does not replace a file: choose another --out",
                d.display()
            );
        }
        let manifest = d.join(MANIFEST);
        if manifest.exists() {
            let m = Manifest::read(d)?;
            if m.tool != "hc1img" {
                bail!(
                    "{}: was not written by hc1img (tool {:?}); hc1img will not replace that directory: choose another --out",
                    manifest.display(),
                    m.tool
                );
            }
            return Ok(Existing::Build(Box::new(m)));
        }
        let marker = d.join(REPLACING);
        if marker.exists() {
            let text = fs::read_to_string(&marker)
                .with_context(|| format!("{}: cannot read", marker.display()))?;
            let owned: BTreeSet<String> = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: corrupt; remove the directory's contents by hand",
                    marker.display()
                )
            })?;
            return Ok(Existing::Interrupted(owned));
        }
        for e in fs::read_dir(d).with_context(|| format!("{}: cannot list", d.display()))? {
            let e = e.with_context(|| format!("{}: cannot list", d.display()))?;
            if !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                bail!(
                    "{}: is not empty and holds no hc1img manifest.json; hc1img will not write into it: choose a new or empty directory as --out",
                    d.display()
                );
            }
        }
        Ok(Existing::Empty)
    }

    /// Whether a complete build of `derivation` is there.
    pub fn is_up_to_date(&self, existing: &Existing, derivation: &str) -> bool {
        existing.is_build_of(derivation) && OUTPUTS.iter().all(|f| self.dir.join(f).is_file())
    }

    /// Create a staging directory on the output's filesystem (removing stale ones of killed
    /// builds first).
    pub fn start(&self) -> Result<Staging> {
        let existing = self.inspect()?;
        let parent = self.parent();
        fs::create_dir_all(&parent).with_context(|| {
            format!(
                "{}: cannot create the output directory's parent",
                parent.display()
            )
        })?;
        remove_stale(&parent)?;
        let base = if matches!(existing, Existing::Absent) {
            parent
        } else {
            remove_stale(&self.dir)?;
            self.dir.clone()
        };
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}{name}-"))
            .tempdir_in(&base)
            .with_context(|| {
                format!(
                    "{}: cannot create a staging directory for the build",
                    base.display()
                )
            })?
            .keep();
        let mut live = live_staging();
        live.push(tmp.clone());
        drop(live);
        let mut staging = Staging {
            path: tmp,
            lock: None,
            out: self.clone(),
        };
        // On error, dropping `staging` removes the directory.
        staging.lock = Some(take_lock(&staging.path)?);
        Ok(staging)
    }
}

fn live_staging() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE_STAGING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Create `dir/.hc1img-lock` holding our pid, locked: written under a temporary name and renamed,
/// so another build never sees an unlocked `lock` of a running build.
fn take_lock(dir: &Path) -> Result<fs::File> {
    let tmp = dir.join(format!("{LOCK}.new"));
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    f.try_lock()
        .with_context(|| format!("{}: cannot lock", tmp.display()))?;
    writeln!(f, "{}", std::process::id())
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    fs::rename(&tmp, dir.join(LOCK))
        .with_context(|| format!("{}: cannot rename", tmp.display()))?;
    Ok(f)
}

/// Remove the staging directories in `dir` whose build is gone (nobody holds their lock).
fn remove_stale(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let path = e.path();
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        // No lock file yet: a build is just starting there (or died in that instant).
        let Ok(lock) = fs::File::open(path.join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // its build is running
        }
        fs::remove_dir_all(&path).with_context(|| {
            format!(
                "{}: cannot remove the staging directory of an interrupted build",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// A build in progress; dropped without [`Staging::commit`], it removes itself.
pub struct Staging {
    path: PathBuf,
    /// The flocked `lock` file, held while the build runs.
    lock: Option<fs::File>,
    out: OutDir,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let mut live = live_staging();
        live.retain(|p| p != &self.path);
        let _ = remove_tree(&self.path);
        drop(self.lock.take());
    }
}

/// A private temporary directory (mode 0700, under `$TMPDIR`) removed when dropped and, like
/// a staging directory, when SIGINT, SIGTERM or SIGHUP ends the process: for files that must
/// not outlive the command (`hc1img seed --flash`'s seeded copy, which holds secrets).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let mut live = live_staging();
        use std::os::unix::fs::PermissionsExt as _;
        let path = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .context("cannot create a temporary directory (is $TMPDIR writable?)")?
            .keep();
        live.push(path.clone());
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let mut live = live_staging();
        live.retain(|p| p != &self.0);
        let _ = remove_tree(&self.0);
    }
}

/// Remove a directory tree; a missing one is fine.
fn remove_tree(p: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_file_if_there(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("{}: cannot remove", p.display()))
        }
        _ => Ok(()),
    }
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the finished outputs into place and point the store symlink at them. An older
    /// build there is replaced file by file (only the files its manifest lists); the
    /// staging directory is gone afterwards, whether the commit succeeded or not.
    pub fn commit(self) -> Result<PathBuf> {
        for f in OUTPUTS {
            if !self.path.join(f).is_file() {
                bail!("internal error: build finished without {f}");
            }
        }
        let new = Manifest::read(&self.path)?;
        let parent = self.out.parent();
        let parent_fd = fs::File::open(&parent)
            .with_context(|| format!("{}: cannot open", parent.display()))?;
        parent_fd
            .lock()
            .with_context(|| format!("{}: cannot lock", parent.display()))?;
        // A signal now waits until the files are in place.
        let live = live_staging();
        let dir = self.out.dir.clone();
        match self.out.inspect()? {
            Existing::Absent => {
                remove_file_if_there(&self.path.join(LOCK))?;
                fs::rename(&self.path, &dir).with_context(|| {
                    format!("{}: cannot move the build into place", dir.display())
                })?;
            }
            Existing::Empty => self.replace(&dir, BTreeSet::new(), &new)?,
            Existing::Build(old) => self.replace(&dir, owned_by(&old), &new)?,
            Existing::Interrupted(owned) => self.replace(&dir, owned, &new)?,
        }
        drop(live);
        if let Some(link) = &self.out.link {
            update_link(link, &dir)?;
        }
        Ok(dir)
    }

    /// Put the staged files into the existing directory `dir`, removing the files of the old
    /// build (`old`) that the new one does not have.
    fn replace(&self, dir: &Path, old: BTreeSet<String>, new: &Manifest) -> Result<()> {
        let mut staged = Vec::new();
        for e in fs::read_dir(&self.path)
            .with_context(|| format!("{}: cannot list", self.path.display()))?
        {
            let e = e.with_context(|| format!("{}: cannot list", self.path.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name != LOCK && name != MANIFEST {
                staged.push(name);
            }
        }
        staged.sort();
        let mut owned = old.clone();
        owned.extend(staged.iter().cloned());
        owned.extend(new.outputs.keys().cloned());
        let marker = dir.join(REPLACING);
        let marker_tmp = dir.join(format!("{REPLACING}.tmp"));
        let text = serde_json::to_string(&owned).context("cannot serialise the file list")?;
        fs::write(&marker_tmp, text)
            .with_context(|| format!("{}: cannot write", marker_tmp.display()))?;
        fs::rename(&marker_tmp, &marker)
            .with_context(|| format!("{}: cannot rename", marker_tmp.display()))?;
        remove_file_if_there(&dir.join(MANIFEST))?;
        for name in &staged {
            fs::rename(self.path.join(name), dir.join(name))
                .with_context(|| format!("{}: cannot move into place", dir.join(name).display()))?;
        }
        for name in old.difference(&staged.iter().cloned().collect()) {
            let p = dir.join(name);
            if name != MANIFEST && fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                remove_file_if_there(&p)?;
            }
        }
        fs::rename(self.path.join(MANIFEST), dir.join(MANIFEST))
            .with_context(|| format!("{}: cannot move into place", dir.join(MANIFEST).display()))?;
        remove_file_if_there(&marker)
    }
}

/// The file names an old build's manifest says hc1img made, and the checksum list and its
/// signature, which hc1img writes there and which a new build must not leave stale.
fn owned_by(m: &Manifest) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = m.outputs.keys().cloned().collect();
    s.insert(MANIFEST.into());
    s.insert(SHA256SUMS.into());
    s.insert(SHA256SUMS_SIG.into());
    s
}

/// Write `out` through a hidden temporary name in its directory and rename it into place, so
/// an interrupted run never leaves a truncated file under the final name.
pub fn write_via_temp(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".tmp-{name}"));
    let r = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, out)
            .with_context(|| format!("{}: cannot move into place", out.display()))
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Point `link` at `dir` (relative, atomically via a temporary link and rename).
fn update_link(link: &Path, dir: &Path) -> Result<()> {
    let target = dir
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.to_path_buf());
    if link.exists() && !link.is_symlink() {
        bail!(
            "{}: exists and is not a symlink; remove it so hc1img can point it at the newest build",
            link.display()
        );
    }
    let tmp = link.with_extension(format!("link-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .with_context(|| format!("{}: cannot create symlink", tmp.display()))?;
    fs::rename(&tmp, link).with_context(|| format!("{}: cannot update symlink", link.display()))?;
    Ok(())
}

/// Remove the staging directories of builds in progress when SIGINT, SIGTERM or SIGHUP
/// arrives, then exit with 128 + the signal number. Call first thing in `main`, before any
/// thread is started: the signals are blocked in every thread and taken by one thread that
/// waits for them (`sigwait`), so the removal runs as ordinary code, not in a handler.
#[allow(unsafe_code)] // signal masks and sigwait: not in std
pub fn remove_staging_on_signals() -> Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is a valid sigset_t; the signal numbers are valid.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        bail!(
            "cannot block signals: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is a valid signal set, `sig` a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                // Held until exit: no staging directory is made or committed after this.
                let live = live_staging();
                for p in live.iter() {
                    // The build may still be creating files in it: retry a few times.
                    for _ in 0..5 {
                        if remove_tree(p).is_ok() {
                            break;
                        }
                    }
                }
                // SAFETY: _exit ends the process without running other threads' code.
                unsafe { libc::_exit(128 + sig) };
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SourceRecord;
    use std::collections::BTreeMap;

    fn manifest(derivation: &str, outputs: &[&str]) -> Manifest {
        Manifest {
            tool: "hc1img".into(),
            tool_version: "0".into(),
            format_version: 1,
            profile: "w".into(),
            derivation: derivation.into(),
            source: SourceRecord {
                url: String::new(),
                sha256: String::new(),
            },
            inputs: BTreeMap::new(),
            outputs: outputs
                .iter()
                .map(|o| {
                    (
                        o.to_string(),
                        crate::manifest::OutputFile {
                            size: 0,
                            sha256: String::new(),
                        },
                    )
                })
                .collect(),
            first_boot: Vec::new(),
        }
    }

    /// Stage a build of `derivation` with the given extra outputs.
    fn stage(out: &OutDir, derivation: &str, extra: &[&str]) -> Staging {
        let s = out.start().unwrap();
        for f in ["ssd.img", "sd.img", "sbom.spdx.json"].iter().chain(extra) {
            fs::write(s.path().join(f), format!("{derivation} {f}")).unwrap();
        }
        let mut outs = vec!["ssd.img", "sd.img", "sbom.spdx.json"];
        outs.extend_from_slice(extra);
        manifest(derivation, &outs).write(s.path()).unwrap();
        s
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_temp_dir_is_private_removed_on_drop_and_known_to_the_signal_thread() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = TempDir::new(".hc1img-test-").unwrap();
        let p = t.path().to_path_buf();
        std::fs::write(p.join("secret"), b"x").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(live_staging().contains(&p));
        drop(t);
        assert!(!p.exists());
        assert!(!live_staging().contains(&p));
    }

    #[test]
    fn staging_commits_atomically_and_links() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::in_store(root.path(), "worker", "0123456789abcdef");
        assert_eq!(out.dir, root.path().join("worker-0123456789ab"));
        assert!(!out.is_up_to_date(&out.inspect().unwrap(), "0123456789abcdef"));
        let dir = stage(&out, "0123456789abcdef", &[]).commit().unwrap();
        assert!(out.is_up_to_date(&out.inspect().unwrap(), "0123456789abcdef"));
        assert!(!out.is_up_to_date(&out.inspect().unwrap(), "fedcba"));
        assert_eq!(
            fs::read_link(root.path().join("worker")).unwrap(),
            PathBuf::from("worker-0123456789ab")
        );
        assert_eq!(
            fs::read(dir.join("sd.img")).unwrap(),
            b"0123456789abcdef sd.img"
        );
        assert_eq!(
            names(&dir),
            ["manifest.json", "sbom.spdx.json", "sd.img", "ssd.img"]
        );
        assert_eq!(names(root.path()), ["worker", "worker-0123456789ab"]);
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::in_store(root.path(), "w", "ff");
        {
            let s = out.start().unwrap();
            fs::write(s.path().join("ssd.img"), b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_refuses_incomplete_output() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::explicit(root.path().join("x"));
        let s = out.start().unwrap();
        fs::write(s.path().join("ssd.img"), b"").unwrap();
        assert!(s.commit().is_err());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_file_or_foreign_directory_is_refused_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, b"mine").unwrap();
        let e = OutDir::explicit(file.clone()).start().err().unwrap();
        assert!(
            format!("{e:#}").contains("file: exists and is not a directory"),
            "{e:#}"
        );
        assert_eq!(fs::read(&file).unwrap(), b"mine");

        let dir = root.path().join("photos");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("cat.jpg"), b"meow").unwrap();
        let e = OutDir::explicit(dir.clone()).start().err().unwrap();
        assert!(
            format!("{e:#}").contains("photos: is not empty and holds no hc1img manifest.json"),
            "{e:#}"
        );
        assert_eq!(names(&dir), ["cat.jpg"]);

        let link = root.path().join("dangling");
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        assert!(OutDir::explicit(link.clone()).start().is_err());
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(names(root.path()), ["dangling", "file", "photos"]);
    }

    #[test]
    fn replacing_a_build_keeps_the_users_files() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::explicit(root.path().join("o"));
        stage(&out, "aaa", &["ssd.img.zst", "ssd.img.bmap"])
            .commit()
            .unwrap();
        fs::write(out.dir.join("notes.txt"), b"mine").unwrap();
        let existing = out.inspect().unwrap();
        assert!(existing.is_build_of("aaa") && !existing.is_build_of("bbb"));
        stage(&out, "bbb", &[]).commit().unwrap();
        assert_eq!(
            names(&out.dir),
            [
                "manifest.json",
                "notes.txt",
                "sbom.spdx.json",
                "sd.img",
                "ssd.img"
            ]
        );
        assert_eq!(fs::read(out.dir.join("ssd.img")).unwrap(), b"bbb ssd.img");
        assert!(out.inspect().unwrap().is_build_of("bbb"));
        assert_eq!(names(root.path()), ["o"]);
    }

    #[test]
    fn an_empty_directory_is_filled_in_place() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::explicit(root.path().join("o"));
        fs::create_dir(&out.dir).unwrap();
        let s = stage(&out, "aaa", &[]);
        assert!(
            s.path().starts_with(&out.dir),
            "stages inside the directory"
        );
        s.commit().unwrap();
        assert_eq!(
            names(&out.dir),
            ["manifest.json", "sbom.spdx.json", "sd.img", "ssd.img"]
        );
    }

    #[test]
    fn an_interrupted_replacement_is_resumed() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::explicit(root.path().join("o"));
        fs::create_dir(&out.dir).unwrap();
        fs::write(out.dir.join("ssd.img"), b"half").unwrap();
        fs::write(out.dir.join("sd.img.zst"), b"old").unwrap();
        fs::write(out.dir.join(REPLACING), r#"["sd.img.zst","ssd.img"]"#).unwrap();
        assert!(matches!(out.inspect().unwrap(), Existing::Interrupted(_)));
        stage(&out, "ccc", &[]).commit().unwrap();
        assert_eq!(
            names(&out.dir),
            ["manifest.json", "sbom.spdx.json", "sd.img", "ssd.img"]
        );
    }

    #[test]
    fn a_failed_commit_leaves_no_staging() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::explicit(root.path().join("o"));
        stage(&out, "aaa", &[]).commit().unwrap();
        // The user replaced an output by a directory: the rename onto it fails.
        fs::remove_file(out.dir.join("sd.img")).unwrap();
        fs::create_dir(out.dir.join("sd.img")).unwrap();
        fs::write(out.dir.join("sd.img/keep"), b"k").unwrap();
        assert!(stage(&out, "bbb", &[]).commit().is_err());
        assert!(
            !names(&out.dir)
                .iter()
                .any(|n| n.starts_with(STAGING_PREFIX)),
            "{:?}",
            names(&out.dir)
        );
        assert_eq!(fs::read(out.dir.join("sd.img/keep")).unwrap(), b"k");
    }

    #[test]
    fn stale_staging_is_removed_but_not_a_running_one() {
        let root = tempfile::tempdir().unwrap();
        // A killed build's staging: its lock file is there but nobody holds it.
        let stale = root.path().join(format!("{STAGING_PREFIX}o-dead"));
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join(LOCK), b"999999\n").unwrap();
        fs::write(stale.join("ssd.img"), b"big").unwrap();
        // A running build's staging, for another output in the same parent.
        let running = OutDir::explicit(root.path().join("other")).start().unwrap();
        let out = OutDir::explicit(root.path().join("o"));
        stage(&out, "aaa", &[]).commit().unwrap();
        assert!(!stale.exists());
        assert!(running.path().join(LOCK).exists());
        drop(running);
        assert_eq!(names(root.path()), ["o"]);
    }
}
