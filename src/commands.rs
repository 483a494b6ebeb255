//! The commands behind the CLI: each resolves what it needs (profile, derivation, source) and
//! calls the library. `main.rs` only parses arguments and prints errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest::{Manifest, SourceRecord};
use crate::plan::{self, Derivation};
use crate::profile::{self, Overrides, Profile};
use crate::progress::{Reporter, Verbosity};
use crate::source::{self, Cache, FetchOptions, Keyring, Mirrors, SignatureSpec};
pub use crate::store::SHA256SUMS;
use crate::store::{OutDir, write_via_temp};

/// Flags shared by commands that resolve a profile.
#[derive(Clone, Debug)]
pub struct CommonArgs {
    pub profile: PathBuf,
    pub source_url: Option<String>,
    pub source_sha256: Option<String>,
    /// `NAME=FILE` pairs.
    pub secrets: Vec<String>,
    /// `--no-packages`.
    pub no_packages: bool,
    /// `--mirror`, `--keyring`, `--locked`.
    pub trust: TrustArgs,
}

/// Where fetched files come from first and which key must have signed them (`--mirror URL`
/// and `HC1IMG_MIRROR`, `--keyring FILE` and `HC1IMG_KEYRING`), and whether the lock file may
/// change (`--locked` refuses).
#[derive(Clone, Debug, Default)]
pub struct TrustArgs {
    pub mirrors: Vec<String>,
    pub keyring: Option<PathBuf>,
    pub locked: bool,
}

/// [`TrustArgs`] resolved: the mirrors (arguments, then the environment) and the override key.
struct Trust {
    mirrors: Mirrors,
    keyring: Option<PathBuf>,
    locked: bool,
}

impl Trust {
    fn new(a: &TrustArgs) -> Result<Trust> {
        if let Some(k) = &a.keyring
            && !k.is_file()
        {
            bail!(
                "--keyring {} (or HC1IMG_KEYRING): not a readable file; give an armored or \
                 binary OpenPGP public key file",
                k.display()
            );
        }
        Ok(Trust {
            mirrors: Mirrors::from_env(&a.mirrors)?,
            keyring: a.keyring.clone(),
            locked: a.locked,
        })
    }

    /// The key the tarball must be signed by: `--keyring`, else `[source] keyring`, else the
    /// built-in Arch Linux ARM key.
    fn source_keyring(&self, p: &Profile) -> Keyring {
        let profile = p.source.as_ref().and_then(|s| s.keyring.clone());
        match self.keyring.clone().or(profile) {
            Some(k) => Keyring::File(k),
            None => Keyring::Embedded,
        }
    }

    /// The key packages must be signed by: `--keyring`, else `[packages] keyring`, else the
    /// tarball's.
    fn package_keyring(&self, p: &Profile) -> Keyring {
        let profile = p.packages.as_ref().and_then(|k| k.config.keyring.clone());
        match self.keyring.clone().or(profile) {
            Some(k) => Keyring::File(k),
            None => self.source_keyring(p),
        }
    }
}

impl CommonArgs {
    fn overrides(&self) -> Result<Overrides> {
        let mut secrets = BTreeMap::new();
        for s in &self.secrets {
            let Some((name, file)) = s.split_once('=') else {
                bail!("--secret {s}: expected NAME=FILE, e.g. --secret swarm_token=./token");
            };
            secrets.insert(name.to_string(), PathBuf::from(file));
        }
        Ok(Overrides {
            source_url: self.source_url.clone(),
            source_sha256: self.source_sha256.clone(),
            secrets,
            no_packages: self.no_packages,
        })
    }

    fn load(&self) -> Result<Profile> {
        profile::load(&self.profile, &self.overrides()?)
    }
}

fn fetch_options(rep: &Reporter) -> FetchOptions {
    FetchOptions {
        progress: rep.verbosity != Verbosity::Quiet,
        ..FetchOptions::default()
    }
}

/// The profile's source as the fetcher wants it (pinned): the mirrors' `os/<file>` first, then
/// the profile's URLs; the signature pinned in the lock file (else `<URL>.sig`) when the profile
/// names a `signature` or the pin carries one.
fn source_spec(p: &Profile, trust: &Trust) -> Result<source::SourceSpec> {
    let Some(spec) = p.source.as_ref() else {
        bail!(
            "profile {} names no [source]; add one or pass --source-url and --source-sha256",
            p.name
        );
    };
    let sha256 = spec.require_sha256()?.to_string();
    let name = source::mirror::file_name(&spec.url);
    let pin = locked_pin(p, &spec.url).filter(|pin| pin.sha256 == sha256);
    let inline = match pin.as_ref().and_then(|pin| pin.signature.as_deref()) {
        Some(b) => Some(decode_signature(b, p)?),
        None => None,
    };
    let signature = match (&spec.signature, inline) {
        (None, None) => None,
        (url, inline) => Some(SignatureSpec {
            urls: source::mirror::prepend(
                trust.mirrors.tarball(&format!("{name}.sig")),
                url.as_slice(),
            ),
            inline,
            keyring: trust.source_keyring(p),
        }),
    };
    Ok(source::SourceSpec {
        urls: source::mirror::prepend(trust.mirrors.tarball(name), &spec.fetch_urls),
        sha256,
        size: spec.size,
        signature,
    })
}

/// The lock file's pin of `url` for this profile, if the lock file holds one.
fn locked_pin(p: &Profile, url: &str) -> Option<profile::Pin> {
    let lock = p.files.lock.as_ref().filter(|_| p.files.lock_exists)?;
    profile::read_lock(lock).ok()?.pins.remove(url)
}

fn decode_signature(b64: &str, p: &Profile) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .with_context(|| {
            format!(
                "{}: the tarball pin's `signature` is not valid base64; re-pin with `hc1img lock`",
                p.files
                    .lock
                    .as_deref()
                    .unwrap_or(Path::new("hc1img.lock"))
                    .display()
            )
        })
}

/// `SOURCE_DATE_EPOCH` as the build uses it.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

/// `hc1img build --compress`: the compressed copies (and block maps, `SHA256SUMS`) to write
/// beside the images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    /// Only `ssd.img`, `sd.img` and `manifest.json`.
    #[default]
    None,
    /// `*.img.zst` (zstd level [`ZSTD_LEVEL`], multi-threaded), `*.img.bmap`, `SHA256SUMS`.
    Zst,
    /// `*.img.xz` (xz preset [`XZ_PRESET`], multi-threaded), `*.img.bmap`, `SHA256SUMS`.
    Xz,
}

/// The fixed zstd level of `--compress zst`: part of what makes the bytes reproducible.
pub const ZSTD_LEVEL: i32 = 9;
/// The fixed xz preset of `--compress xz` (xz's own default).
pub const XZ_PRESET: u32 = 6;

/// The images of an output directory, in the order they are written.
const IMAGES: [&str; 2] = ["ssd.img", "sd.img"];

impl Compress {
    fn ext(self) -> Option<&'static str> {
        match self {
            Compress::None => None,
            Compress::Zst => Some("zst"),
            Compress::Xz => Some("xz"),
        }
    }

    /// The extra files this setting adds to an output directory.
    pub fn extra_outputs(self) -> Vec<String> {
        let Some(ext) = self.ext() else {
            return Vec::new();
        };
        let mut v: Vec<String> = IMAGES
            .iter()
            .flat_map(|i| [format!("{i}.{ext}"), format!("{i}.bmap")])
            .collect();
        v.push(SHA256SUMS.into());
        v
    }
}

/// Whether `dir` lacks any file `compress` adds or its manifest does not list them.
fn missing_extras(dir: &Path, compress: Compress) -> bool {
    let extras = compress.extra_outputs();
    if extras.is_empty() {
        return false;
    }
    let listed = Manifest::read(dir)
        .map(|m| {
            extras
                .iter()
                .filter(|e| e.as_str() != SHA256SUMS)
                .all(|e| m.outputs.contains_key(e))
        })
        .unwrap_or(false);
    !listed || extras.iter().any(|e| !dir.join(e).is_file())
}

/// SHA-256 of `paths` with one progress bar over all of them (hidden with `-q` or off a
/// terminal).
fn hash_files(paths: &[PathBuf], rep: &Reporter) -> Result<Vec<crate::manifest::OutputFile>> {
    let mut total = 0u64;
    for p in paths {
        total += std::fs::metadata(p)
            .with_context(|| format!("{}: missing output", p.display()))?
            .len();
    }
    let bar = rep.bytes_bar(total, "hashing");
    let r = crate::manifest::hash_files(paths, &|n| bar.set_position(n));
    bar.finish_and_clear();
    r
}

/// Write the compressed images and block maps `compress` asks for into `dir` (skipping those
/// already there when `only_missing`).
fn write_compressed(
    dir: &Path,
    compress: Compress,
    only_missing: bool,
    rep: &Reporter,
) -> Result<()> {
    let Some(ext) = compress.ext() else {
        return Ok(());
    };
    for img in IMAGES {
        let image = dir.join(img);
        let size = std::fs::metadata(&image)
            .with_context(|| format!("{}: missing image", image.display()))?
            .len();
        let packed = dir.join(format!("{img}.{ext}"));
        if !(only_missing && packed.is_file()) {
            rep.step(format!("compressing {img} ({ext})"));
            let bar = rep.bytes_bar(size, img);
            let on = |n: u64| bar.set_position(n);
            write_via_temp(&packed, |tmp| match compress {
                Compress::Xz => crate::disk::bmap::compress_xz(&image, tmp, XZ_PRESET, &on),
                _ => crate::disk::bmap::compress_zstd(&image, tmp, ZSTD_LEVEL, &on),
            })?;
            bar.finish_and_clear();
        }
        let bmap = dir.join(format!("{img}.bmap"));
        if !(only_missing && bmap.is_file()) {
            rep.step(format!("mapping {img}"));
            let f = std::fs::File::open(&image)
                .with_context(|| format!("{}: cannot open", image.display()))?;
            let mapped: u64 = crate::sparse::data_ranges(&f, size)?
                .iter()
                .map(|(a, b)| b - a)
                .sum();
            let bar = rep.bytes_bar(mapped, &format!("{img}.bmap"));
            let on = |n: u64| bar.set_position(n);
            write_via_temp(&bmap, |tmp| crate::disk::bmap::write_bmap(&image, tmp, &on))?;
            bar.finish_and_clear();
        }
    }
    Ok(())
}

/// Hash the outputs into the manifest and write it; with `sums` (`--compress`,
/// `--sign-key`) or when the directory has one already, also write `SHA256SUMS`
/// ([`crate::sums::write`]). Hashes already in `manifest` for unchanged images are reused when
/// `reuse` is set.
fn record_and_write(
    dir: &Path,
    manifest: &mut Manifest,
    sums: bool,
    reuse: bool,
    rep: &Reporter,
) -> Result<()> {
    rep.step("hashing the outputs");
    let mut names: Vec<String> = IMAGES.iter().map(|s| s.to_string()).collect();
    names.push(crate::sbom::FILE_NAME.into());
    // Every compressed copy and map present (a directory may hold both .zst and .xz).
    for e in [Compress::Zst, Compress::Xz] {
        for x in e.extra_outputs() {
            if x != SHA256SUMS && dir.join(&x).is_file() && !names.contains(&x) {
                names.push(x);
            }
        }
    }
    let mut todo = Vec::new();
    for name in names {
        let p = dir.join(&name);
        let size = std::fs::metadata(&p)
            .with_context(|| format!("{}: missing output", p.display()))?
            .len();
        if reuse
            && manifest
                .outputs
                .get(&name)
                .is_some_and(|o| o.size == size && IMAGES.contains(&name.as_str()))
        {
            continue; // the images of an existing build: hashed when it was built
        }
        todo.push(name);
    }
    let paths: Vec<PathBuf> = todo.iter().map(|n| dir.join(n)).collect();
    for (name, o) in todo.into_iter().zip(hash_files(&paths, rep)?) {
        manifest.outputs.insert(name, o);
    }
    write_via_temp(&dir.join("manifest.json"), |tmp| {
        let text =
            serde_json::to_string_pretty(&*manifest).context("cannot serialise manifest.json")?;
        std::fs::write(tmp, text + "\n").with_context(|| format!("{}: cannot write", tmp.display()))
    })?;
    if !sums && !dir.join(SHA256SUMS).is_file() {
        return Ok(());
    }
    crate::sums::write(dir, &manifest.outputs, &|p| hash_files(p, rep))
}

/// The SBOM of a finished build ([`crate::sbom`]) into `dir`: the image's final local
/// database, the pins, the tarball and the derivation's inputs.
fn write_sbom(
    dir: &Path,
    pd: &Pending,
    manifest: &Manifest,
    report: &crate::build::BuildReport,
) -> Result<()> {
    let url =
        pd.p.source
            .as_ref()
            .map_or_else(|| manifest.source.url.clone(), |s| s.url.clone());
    let signer = locked_pin(&pd.p, &url)
        .filter(|pin| pin.sha256 == pd.spec.sha256)
        .and_then(|pin| pin.signer);
    let pins: Vec<crate::packages::PackagePin> =
        pd.packages.iter().map(|f| f.pin.clone()).collect();
    let inputs = crate::sbom::Inputs {
        profile: &pd.p.name,
        derivation: &pd.drv.hash,
        tool_version: env!("CARGO_PKG_VERSION"),
        created: report.timestamp,
        tarball: crate::sbom::Tarball {
            url: &url,
            sha256: &pd.spec.sha256,
            signer: signer.as_deref(),
        },
        inputs: &manifest.inputs,
        images: &report.images,
        installed: &report.local_db,
        pins: &pins,
    };
    crate::sbom::write(&dir.join(crate::sbom::FILE_NAME), &inputs)
}

/// Sign `dir/SHA256SUMS` with `key` into `dir/SHA256SUMS.sig`, writing the sums first from
/// `dir/manifest.json` when there are none; with `check`, every file the sums list is hashed
/// again first (one attests only what one has checked). Prints `FINGERPRINT  SIGNATURE`.
fn sign_dir(
    dir: &Path,
    key: &crate::signing::SigningKey,
    check: bool,
    rep: &Reporter,
) -> Result<()> {
    let sums = dir.join(SHA256SUMS);
    if !sums.is_file() {
        if !dir.join("manifest.json").is_file() {
            bail!(
                "{}: missing, and {} holds no manifest.json to write it from: sign an hc1img \
                 output directory, or a directory with a SHA256SUMS (`sha256sum -- * > \
                 SHA256SUMS`)",
                sums.display(),
                dir.display()
            );
        }
        let m = Manifest::read(dir)?;
        crate::sums::write(dir, &m.outputs, &|p| hash_files(p, rep))?;
    }
    if check {
        rep.step(format!("checking {}", sums.display()));
        crate::sums::check(dir, &|p| hash_files(p, rep))?;
    }
    let sig = dir.join(crate::sums::SIGNATURE);
    key.sign_file(&sums, &sig)?;
    rep.step(format!(
        "signed {} with key {}: {}",
        sums.display(),
        key.fingerprint,
        sig.display()
    ));
    println!("{}  {}", key.fingerprint, sig.display());
    Ok(())
}

/// A profile ready to build: resolved, pinned, its source and packages fetched, its staging
/// directory made.
struct Pending {
    p: Profile,
    drv: Derivation,
    spec: source::SourceSpec,
    tarball: PathBuf,
    packages: Vec<crate::packages::Fetched>,
    staging: crate::store::Staging,
    rep: Reporter,
}

/// `hc1img build`: returns the output directory.
pub fn build(
    args: &CommonArgs,
    out: Option<PathBuf>,
    rebuild: bool,
    compress: Compress,
    sign_key: Option<&Path>,
    rep: &Reporter,
) -> Result<PathBuf> {
    build_all(
        std::slice::from_ref(args),
        out,
        rebuild,
        compress,
        sign_key,
        rep,
    )?
    .into_iter()
    .next()
    .context("internal error: a build without an output directory")
}

/// `hc1img build PROFILE...`: every profile into its own out/ directory. The profiles that
/// share a source are built from one pass over its tarball ([`crate::build::build_shared`]);
/// profiles of different sources make one pass per source. With `sign_key`, each output's
/// `SHA256SUMS` is signed (the key is read first, so a bad one fails before any work).
/// Returns the output directories in the order of `args`; when a build fails the others still
/// finish, then the first error is returned.
pub fn build_all(
    args: &[CommonArgs],
    out: Option<PathBuf>,
    rebuild: bool,
    compress: Compress,
    sign_key: Option<&Path>,
    rep: &Reporter,
) -> Result<Vec<PathBuf>> {
    crate::progress::timing("loading the profile");
    let several = args.len() > 1;
    if several && out.is_some() {
        bail!(
            "--out names one output directory, but {} profiles were given: leave --out away to \
             build each into out/<profile>-<hash>/, or build them one at a time",
            args.len()
        );
    }
    let timestamp = source_date_epoch()?;
    let key = sign_key.map(crate::signing::SigningKey::load).transpose()?;
    let key = key.as_ref();
    let mut dirs: Vec<Option<PathBuf>> = vec![None; args.len()];
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match prepare(a, out.clone(), rebuild, compress, several, rep)? {
            Ok(dir) => {
                if let Some(key) = key {
                    sign_dir(&dir, key, true, rep)?;
                }
                dirs[i] = Some(dir)
            }
            Err(pd) => {
                if let Some((_, other)) = pending.iter().find(|(_, o)| o.drv.hash == pd.drv.hash) {
                    bail!(
                        "{} and profile {} are the same build (derivation {}): give it once",
                        a.profile.display(),
                        other.p.name,
                        pd.drv.short()
                    );
                }
                pending.push((i, pd));
            }
        }
    }
    // One pass per source.
    let mut by_source: BTreeMap<String, Vec<(usize, Pending)>> = BTreeMap::new();
    for (i, pd) in pending {
        by_source
            .entry(pd.spec.sha256.clone())
            .or_default()
            .push((i, pd));
    }
    if by_source.len() > 1 {
        rep.step(format!(
            "the profiles name {} different sources: one pass over each",
            by_source.len()
        ));
    }
    let mut first_err = None;
    for group in by_source.into_values() {
        let results: Vec<Result<crate::build::BuildReport>> = {
            let jobs: Vec<crate::build::Job> = group
                .iter()
                .map(|(_, pd)| crate::build::Job {
                    inputs: crate::build::BuildInputs {
                        profile: &pd.p,
                        derivation: &pd.drv.hash,
                        tarball: &pd.tarball,
                        tarball_sha256: &pd.spec.sha256,
                        timestamp,
                        packages: &pd.packages,
                    },
                    dir: pd.staging.path(),
                    rep: pd.rep.clone(),
                })
                .collect();
            if let [job] = jobs.as_slice() {
                vec![crate::build::build(&job.inputs, job.dir, &job.rep)]
            } else {
                crate::build::build_shared(&jobs, rep)?
            }
        };
        for ((i, pd), r) in group.into_iter().zip(results) {
            let name = pd.p.name.clone();
            match r.and_then(|report| complete(pd, report, compress, key)) {
                Ok(dir) => dirs[i] = Some(dir),
                Err(e) => {
                    let e = if several {
                        e.context(format!("profile {name}"))
                    } else {
                        e
                    };
                    // The first failure is the error; any later one is shown as it happens.
                    match first_err {
                        None => first_err = Some(e),
                        Some(_) => rep.warn(format!("{e:#}")),
                    }
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    dirs.into_iter()
        .map(|d| d.context("internal error: a profile was not built"))
        .collect()
}

/// Resolve one profile for `hc1img build`: the output directory when it is up to date (its
/// compressed copies added if `compress` asks for them), or what its build needs.
fn prepare(
    args: &CommonArgs,
    out: Option<PathBuf>,
    rebuild: bool,
    compress: Compress,
    several: bool,
    rep: &Reporter,
) -> Result<std::result::Result<PathBuf, Pending>> {
    let trust = Trust::new(&args.trust)?;
    let p = locked_profile(args, &trust, rep)?;
    let rep = &if several {
        rep.tagged(&p.name)
    } else {
        rep.clone()
    };
    warn_unbaked_overrides(args, &p, rep)?;
    let drv = plan::derivation(&p)?;
    let out = match out {
        Some(dir) => OutDir::explicit(dir),
        None => OutDir::in_store(Path::new("out"), &p.name, &drv.hash),
    };
    // Refuse an --out hc1img may not use before any work.
    let existing = out.inspect()?;
    if out.is_up_to_date(&existing, &drv.hash) && !rebuild {
        if missing_extras(&out.dir, compress) {
            // Same images, only the compressed copies are missing: make them from the images
            // already built rather than building again.
            rep.step(format!(
                "{} is up to date ({}); adding its compressed copies",
                out.dir.display(),
                drv.short()
            ));
            let mut manifest = Manifest::read(&out.dir)?;
            write_compressed(&out.dir, compress, true, rep)?;
            record_and_write(
                &out.dir,
                &mut manifest,
                compress != Compress::None,
                true,
                rep,
            )?;
            rep.step(format!("built {}", out.dir.display()));
            return Ok(Ok(out.dir));
        }
        rep.step(format!(
            "{} is up to date ({})",
            out.dir.display(),
            drv.short()
        ));
        return Ok(Ok(out.dir));
    }
    rep.detail(format!("derivation {}", drv.hash));
    let spec = source_spec(&p, &trust)?;
    let cache = Cache::from_env()?;
    let opts = fetch_options(rep);
    let tarball = source::fetch(&spec, &cache, &opts).map_err(not_served)?;
    let packages = fetch_pinned_packages(&p, &spec, &trust, &cache, &opts, rep)?;
    let staging = out.start()?;
    Ok(Err(Pending {
        rep: rep.clone(),
        p,
        drv,
        spec,
        tarball,
        packages,
        staging,
    }))
}

/// After the build of `pd`: its SBOM, its compressed copies, manifest.json, `SHA256SUMS` and
/// its signature (with `key`), and the staging directory moved into place.
fn complete(
    pd: Pending,
    report: crate::build::BuildReport,
    compress: Compress,
    key: Option<&crate::signing::SigningKey>,
) -> Result<PathBuf> {
    let rep = &pd.rep;
    rep.detail(format!(
        "ext4: {} of {} blocks used, {} of {} inodes used",
        report.ext4.blocks_total - report.ext4.blocks_free,
        report.ext4.blocks_total,
        report.ext4.inodes_total - report.ext4.inodes_free,
        report.ext4.inodes_total
    ));
    write_compressed(pd.staging.path(), compress, false, rep)?;
    let mut manifest = manifest_for(&pd.p, &pd.drv, &pd.spec);
    write_sbom(pd.staging.path(), &pd, &manifest, &report)?;
    // The images were hashed by the build as it finished them.
    manifest.outputs.extend(report.images);
    manifest.first_boot = report.first_boot;
    let sums = compress != Compress::None || key.is_some();
    record_and_write(pd.staging.path(), &mut manifest, sums, true, rep)?;
    if let Some(key) = key {
        // Signed in the staging directory: the signature moves into place with the rest.
        key.sign_file(
            &pd.staging.path().join(SHA256SUMS),
            &pd.staging.path().join(crate::sums::SIGNATURE),
        )?;
    }
    let dir = pd.staging.commit()?;
    rep.step(format!("built {}", dir.display()));
    if let Some(key) = key {
        let sig = dir.join(crate::sums::SIGNATURE);
        rep.step(format!(
            "signed with key {}: {}",
            key.fingerprint,
            sig.display()
        ));
        println!("{}  {}", key.fingerprint, sig.display());
    }
    Ok(dir)
}

fn manifest_for(p: &Profile, drv: &Derivation, spec: &source::SourceSpec) -> Manifest {
    Manifest {
        tool: "hc1img".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        format_version: plan::FORMAT_VERSION,
        profile: p.name.clone(),
        derivation: drv.hash.clone(),
        source: SourceRecord {
            url: spec.urls.first().cloned().unwrap_or_default(),
            sha256: spec.sha256.clone(),
        },
        inputs: drv
            .inputs
            .iter()
            .map(|i| {
                (
                    format!("{:?}/{}", i.kind, i.name).to_lowercase(),
                    i.digest.clone(),
                )
            })
            .collect(),
        outputs: BTreeMap::new(),
        first_boot: Vec::new(),
    }
}

/// `hc1img plan`.
pub fn plan(args: &CommonArgs, json: bool) -> Result<()> {
    let p = args.load()?;
    // On a fresh clone the source and `[packages]` are not pinned yet: show the plan with
    // those inputs marked as what the first build (or `hc1img lock`) will pin.
    let unpinned = p.source.as_ref().is_some_and(|s| s.sha256.is_none())
        || p.packages.as_ref().is_some_and(|k| k.pins.is_none());
    let drv = if unpinned {
        plan::preview(&p)?
    } else {
        plan::derivation(&p)?
    };
    let to_lock: Vec<String> = drv
        .inputs
        .iter()
        .filter(|i| i.digest == plan::UNPINNED)
        .map(|i| format!("{}/{}", format!("{:?}", i.kind).to_lowercase(), i.name))
        .collect();
    // The tarball's packages the pins replace (`[packages] upgrade`), as (name, from, to).
    let upgrades: Vec<(String, String, String)> = p
        .packages
        .iter()
        .flat_map(|pk| pk.pins.iter().flat_map(|l| &l.package))
        .filter_map(|pin| {
            let from = pin.upgrades.clone()?;
            Some((pin.name.clone(), from, pin.version.clone()))
        })
        .collect();
    // The tarball's packages the pins replace by another name (`%REPLACES%`), as (old, new).
    let replaces: Vec<(String, String)> = p
        .packages
        .iter()
        .flat_map(|pk| pk.pins.iter().flat_map(|l| &l.package))
        .flat_map(|pin| {
            pin.removes
                .iter()
                .map(|r| (r.clone(), format!("{}-{}", pin.name, pin.version)))
        })
        .collect();
    // What the first boot runs for the packages (deferred alpm hooks, reviewed scriptlets) is
    // known once the tarball and the packages are read: from the store's build of this very
    // derivation when there is one (same inputs, same result).
    let first_boot: Option<Vec<String>> = if p.packages.is_none() {
        Some(Vec::new())
    } else if unpinned {
        None
    } else {
        match OutDir::in_store(Path::new("out"), &p.name, &drv.hash).inspect() {
            Ok(crate::store::Existing::Build(m)) if m.derivation == drv.hash => Some(m.first_boot),
            _ => None,
        }
    };
    if json {
        let v = serde_json::json!({
            "derivation": if unpinned { serde_json::Value::Null } else { drv.hash.clone().into() },
            "to_lock": to_lock,
            "name": p.name,
            "first_boot": first_boot,
            "upgrades": upgrades.iter().map(|(n, f, t)| serde_json::json!({
                "name": n, "from": f, "to": t,
            })).collect::<Vec<_>>(),
            "replaces": replaces.iter().map(|(old, new)| serde_json::json!({
                "old": old, "new": new,
            })).collect::<Vec<_>>(),
            "inputs": drv.inputs.iter().map(|i| serde_json::json!({
                "kind": format!("{:?}", i.kind).to_lowercase(),
                "name": i.name,
                "digest": i.digest,
            })).collect::<Vec<_>>(),
            "profile": drv.resolved,
            "origins": p.origins.iter().map(|(k, at)| (k.clone(), serde_json::Value::String(at.clone()))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("profile     {}", p.name);
        if unpinned {
            println!(
                "derivation  not yet known: {} not pinned; the first `hc1img build` (or `hc1img lock`) pins them",
                to_lock.join(", ")
            );
            println!("output      out/{}-<derivation>/", p.name);
        } else {
            println!("derivation  {}", drv.hash);
            println!("output      out/{}-{}/", p.name, drv.short());
        }
        if !p.secrets.is_empty() {
            println!("secrets:");
            for (name, src) in &p.secrets {
                let how = if *src == profile::SecretSource::Card {
                    "not in the image: the node takes it from its card (hc1img seed --secret)"
                } else {
                    "BAKED into the image (bake = true): keep the image private"
                };
                println!("  {name:<40} {how}");
            }
        }
        println!("inputs:");
        for i in &drv.inputs {
            println!(
                "  {:<8} {:<40} {}",
                format!("{:?}", i.kind).to_lowercase(),
                i.name,
                i.digest
            );
        }
        if !upgrades.is_empty() {
            println!("upgrades of the tarball's packages:");
            for (n, f, t) in &upgrades {
                println!("  {n} {f} -> {t}");
            }
        }
        if !replaces.is_empty() {
            println!(
                "the tarball's packages replaced by another ([packages] upgrade, %REPLACES%):"
            );
            for (old, new) in &replaces {
                println!("  {old} -> {new}");
            }
        }
        match &first_boot {
            Some(lines) if lines.is_empty() => {}
            Some(lines) => {
                println!("deferred to the node's first boot (hc1-pacman-deferred.service):");
                for l in lines {
                    println!("  {l}");
                }
            }
            None => println!(
                "deferred to the node's first boot: known once the tarball and the packages are \
                 read (`hc1img build` lists it, and this command after it)"
            ),
        }
        println!("resolved profile:");
        println!("{}", serde_json::to_string_pretty(&drv.resolved)?);
        println!("where each value comes from:");
        for (key, at) in &p.origins {
            println!("  {key:<40} {at}");
        }
    }
    Ok(())
}

/// `--secret NAME=FILE` for a secret the profile does not bake: the file is not read and the
/// value does not enter the image; say so, and where it goes instead.
fn warn_unbaked_overrides(args: &CommonArgs, p: &Profile, rep: &Reporter) -> Result<()> {
    for name in args.overrides()?.secrets.keys() {
        if p.secrets.get(name) == Some(&profile::SecretSource::Card) {
            rep.warn(format!(
                "--secret {name}: not put into the image (the profile does not set \
                 `bake = true` for it); give it to the node with `hc1img seed --secret {name}=FILE`"
            ));
        }
    }
    Ok(())
}

/// A pinned tarball that could not be fetched, as one line saying what to do.
fn not_served(e: anyhow::Error) -> anyhow::Error {
    source::not_served("the pinned root tarball", e)
}

/// The profile with every pin it needs: when the source or `[packages]` is not pinned (or the
/// pins are stale) this is lock on first use: they are resolved, verified and written to the
/// lock file (never moving a pin that is there), unless `--locked` forbids it.
fn locked_profile(args: &CommonArgs, trust: &Trust, rep: &Reporter) -> Result<Profile> {
    let p = args.load()?;
    let Some(src) = &p.source else {
        return Ok(p);
    };
    let why = match &src.sha256 {
        None => Some(format!("the source {} is not pinned", src.url)),
        Some(sha) => p
            .packages
            .as_ref()
            .and_then(|pk| pk.require_pins(&p.name, sha).err())
            .map(|e| format!("{e:#}")),
    };
    let Some(why) = why else {
        return Ok(p);
    };
    let lock_path = p
        .lock_path()
        .map(Path::to_path_buf)
        .with_context(|| format!("{}: cannot tell where the lock file goes", p.name))?;
    if trust.locked {
        bail!(
            "{}: {why}, and --locked refuses to change the lock file: run `hc1img lock {}` and \
             commit the lock file",
            lock_path.display(),
            args.profile.display()
        );
    }
    rep.step(format!(
        "{why}: locking on first use into {}",
        lock_path.display()
    ));
    lock_profiles(std::slice::from_ref(&p), &lock_path, false, trust, rep)?;
    args.load()
}

/// `hc1img fetch`: the pinned source and packages into the cache (locking on first use).
pub fn fetch(args: &CommonArgs, rep: &Reporter) -> Result<()> {
    let trust = Trust::new(&args.trust)?;
    let p = locked_profile(args, &trust, rep)?;
    let spec = source_spec(&p, &trust)?;
    let cache = Cache::from_env()?;
    let opts = fetch_options(rep);
    let path = source::fetch(&spec, &cache, &opts).map_err(not_served)?;
    println!("{}", path.display());
    for f in fetch_pinned_packages(&p, &spec, &trust, &cache, &opts, rep)? {
        println!("{}", f.path.display());
    }
    Ok(())
}

/// The profile's pinned `[packages]` (none without the section), fetched and verified into
/// the cache: what `build` installs and `fetch` lists.
fn fetch_pinned_packages(
    p: &Profile,
    spec: &source::SourceSpec,
    trust: &Trust,
    cache: &Cache,
    opts: &FetchOptions,
    rep: &Reporter,
) -> Result<Vec<crate::packages::Fetched>> {
    let Some(pk) = &p.packages else {
        return Ok(Vec::new());
    };
    let pins = pk.require_pins(&p.name, &spec.sha256)?;
    rep.step(format!("fetching {} pinned packages", pins.len()));
    let keyring = trust.package_keyring(p);
    let f = crate::packages::Fetcher {
        cache,
        opts,
        mirrors: &trust.mirrors,
        keyring: &keyring,
    };
    crate::packages::fetch(&pk.config, pins, &f)
}

/// `hc1img lock [PROFILE...]`: re-pin, in one resolution, every profile next to the lock file
/// of the profiles given (default: `profiles/`), so profiles sharing a source share one tarball
/// pin and one package snapshot and none is left pinned against a tarball that moved.
pub fn lock(profiles: &[PathBuf], trust: &TrustArgs, rep: &Reporter) -> Result<()> {
    let trust = Trust::new(trust)?;
    let given: Vec<PathBuf> = if profiles.is_empty() {
        vec![PathBuf::from("profiles")]
    } else {
        profiles.to_vec()
    };
    let mut groups: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for g in &given {
        let dir = if g.is_dir() {
            g.clone()
        } else {
            let p = profile::load(g, &Overrides::default())?;
            let lock = p.lock_path().map(Path::to_path_buf).with_context(|| {
                format!("{}: the profile names no [source] to pin", g.display())
            })?;
            parent_of(&lock)
        };
        let lock = dir.join(profile::LOCK_FILE_NAME);
        if let std::collections::btree_map::Entry::Vacant(e) = groups.entry(lock) {
            e.insert(siblings(&dir)?);
        }
    }
    for (lock_path, files) in groups {
        let mut loaded = Vec::new();
        for f in &files {
            let p = profile::load(f, &Overrides::default())
                .with_context(|| format!("re-locking every profile of {}", lock_path.display()))?;
            let canon = |l: &Path| std::fs::canonicalize(parent_of(l)).ok();
            if p.lock_path()
                .and_then(canon)
                .is_some_and(|d| Some(d) == canon(&lock_path))
            {
                loaded.push(p);
            }
        }
        if loaded.is_empty() {
            bail!(
                "{}: no profile in {} pins its source there",
                lock_path.display(),
                parent_of(&lock_path).display()
            );
        }
        lock_profiles(&loaded, &lock_path, true, &trust, rep)?;
    }
    Ok(())
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The `*.toml` files directly in `dir`, sorted.
fn siblings(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let path = e.path();
        if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            v.push(path);
        }
    }
    v.sort();
    Ok(v)
}

/// One line of what a lock pinned: file, sha256, size, signer, date.
fn pin_line(
    what: &str,
    file: &str,
    sha256: &str,
    size: Option<u64>,
    v: Option<&source::Verified>,
) -> String {
    let size = size.map_or_else(|| "? bytes".to_owned(), |n| format!("{n} bytes"));
    let signed = match v {
        Some(v) => format!("signed by {} on {}", v.signer, v.date()),
        None => "not signed (the profile names no [source] signature)".to_owned(),
    };
    format!("{what} {file} sha256 {sha256} {size}, {signed}")
}

/// Pin the sources and packages of `ps` (profiles sharing `lock_path`) and write the lock file.
/// `relock` re-pins the sources (`hc1img lock`); otherwise existing pins are kept and only
/// missing or stale ones are made (lock on first use). Every package set is resolved against
/// one download of the repository databases.
fn lock_profiles(
    ps: &[Profile],
    lock_path: &Path,
    relock: bool,
    trust: &Trust,
    rep: &Reporter,
) -> Result<()> {
    let cache = Cache::from_env()?;
    let opts = fetch_options(rep);
    let mut lock = if lock_path.exists() {
        profile::read_lock(lock_path)?
    } else {
        profile::LockFile::default()
    };
    let mut lines = Vec::new();
    // Source URL -> (tarball in the cache, its sha256, its installed packages).
    let mut tarballs: BTreeMap<
        String,
        (PathBuf, String, Option<Vec<crate::packages::db::Package>>),
    > = BTreeMap::new();
    let mut snapshots: BTreeMap<String, crate::packages::Repos> = BTreeMap::new();
    for p in ps {
        let Some(src) = &p.source else {
            continue;
        };
        if !tarballs.contains_key(&src.url) {
            let (path, pin, line) = pin_source(p, &lock, relock, trust, &cache, &opts, rep)?;
            lines.push(line);
            tarballs.insert(src.url.clone(), (path, pin.sha256.clone(), None));
            lock.pins.insert(src.url.clone(), pin);
        }
        let Some(pk) = &p.packages else {
            continue;
        };
        let Some((tarball, sha, installed)) = tarballs.get_mut(&src.url) else {
            bail!("internal error: {} was not pinned", src.url);
        };
        let current = lock.packages.get(&p.name).cloned();
        let fresh = crate::packages::Packages {
            config: pk.config.clone(),
            pins: current,
        };
        if !relock && fresh.require_pins(&p.name, sha).is_ok() {
            continue;
        }
        let keyring = trust.package_keyring(p);
        let f = crate::packages::Fetcher {
            cache: &cache,
            opts: &opts,
            mirrors: &trust.mirrors,
            keyring: &keyring,
        };
        let key = format!(
            "{:?} {} {:?}",
            pk.config.repositories, pk.config.architecture, pk.config.mirrors
        );
        if !snapshots.contains_key(&key) {
            snapshots.insert(
                key.clone(),
                crate::packages::fetch_repos(&pk.config, &f, rep)?,
            );
        }
        let repos = &snapshots[&key];
        if installed.is_none() {
            rep.step("reading the tarball's installed packages");
            *installed = Some(crate::packages::db::read_local_from_tarball(tarball)?);
        }
        let inst = installed.as_deref().unwrap_or_default();
        let (set, pinned) = crate::packages::pin(&pk.config, repos, inst, sha, &f, rep)
            .map_err(|e| anyhow::anyhow!("[packages] of profile {}: {e:#}", p.name))?;
        for x in &pinned {
            let line = pin_line(
                "pinned",
                &x.pin.filename,
                &x.pin.sha256,
                x.pin.size,
                Some(&x.verified),
            );
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lock.packages.insert(p.name.clone(), set);
    }
    profile::write_lock(lock_path, &lock)?;
    for l in lines {
        println!("{l}");
    }
    rep.step(format!("wrote {}", lock_path.display()));
    Ok(())
}

/// Pin (or, unless `relock`, keep and re-check) the tarball of `p`'s source; returns it in the
/// cache, its pin and the line reporting it.
#[allow(clippy::too_many_arguments)]
fn pin_source(
    p: &Profile,
    lock: &profile::LockFile,
    relock: bool,
    trust: &Trust,
    cache: &Cache,
    opts: &FetchOptions,
    rep: &Reporter,
) -> Result<(PathBuf, profile::Pin, String)> {
    let Some(src) = &p.source else {
        bail!("profile {} names no [source] to pin", p.name);
    };
    let name = source::mirror::file_name(&src.url);
    if let (false, Some(old)) = (relock, lock.pins.get(&src.url)) {
        // Keep the pin; still check the file and its signature.
        let spec = source_spec(p, trust)?;
        let got = source::fetch_checked(&spec, cache, opts).map_err(not_served)?;
        let v = got.signature.as_ref().map(|(_, v)| v);
        let line = pin_line("kept", name, &old.sha256, old.size, v);
        return Ok((got.path, old.clone(), line));
    }
    let urls = source::mirror::prepend(trust.mirrors.tarball(name), &src.fetch_urls);
    rep.step(format!("fetching {}", src.url));
    let old = lock.pins.get(&src.url);
    let (fetched, signature, signer, verified) = match &src.signature {
        Some(sig_url) => {
            let sig = SignatureSpec {
                urls: source::mirror::prepend(
                    trust.mirrors.tarball(&format!("{name}.sig")),
                    std::slice::from_ref(sig_url),
                ),
                inline: None,
                keyring: trust.source_keyring(p),
            };
            let got = source::fetch_unpinned_signed(&urls, &sig, cache, opts)?;
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&got.signature);
            let signer = got.verified.signer.clone();
            (got.file, Some(b64), Some(signer), Some(got.verified))
        }
        None => (
            source::fetch_unpinned(&urls, cache, opts)?,
            None,
            None,
            None,
        ),
    };
    let what = match old {
        Some(o) if o.sha256 == fetched.sha256 => "unchanged",
        Some(_) => "re-pinned",
        None => "pinned",
    };
    let line = pin_line(
        what,
        name,
        &fetched.sha256,
        Some(fetched.size),
        verified.as_ref(),
    );
    let pin = profile::Pin {
        sha256: fetched.sha256.clone(),
        size: Some(fetched.size),
        signature,
        signer,
    };
    Ok((fetched.path, pin, line))
}

/// `hc1img vendor DIR [PROFILE...]`: copy every pinned input of the profiles (default: every
/// profile next to `profiles/hc1img.lock`) out of the cache into `dir`, laid out like an Arch
/// Linux ARM mirror (`os/<tarball>` + `.sig`, `<arch>/<repo>/<package>` + `.sig`, and a
/// `<repo>.db` made for them), so `--mirror file://DIR` builds with upstream gone.
pub fn vendor(dir: &Path, profiles: &[PathBuf], trust: &TrustArgs, rep: &Reporter) -> Result<()> {
    use base64::Engine as _;
    let trust = Trust::new(trust)?;
    let files = if profiles.is_empty() {
        siblings(Path::new("profiles"))?
    } else {
        profiles.to_vec()
    };
    let cache = Cache::from_env()?;
    let opts = fetch_options(rep);
    // (arch, repo) -> pins with their .PKGINFO, by file name.
    let mut repos: BTreeMap<
        (String, String),
        BTreeMap<
            String,
            (
                crate::packages::PackagePin,
                crate::packages::install::PkgInfo,
            ),
        >,
    > = BTreeMap::new();
    let mut written = 0usize;
    for f in &files {
        let args = CommonArgs {
            profile: f.clone(),
            source_url: None,
            source_sha256: None,
            secrets: Vec::new(),
            no_packages: false,
            trust: TrustArgs::default(),
        };
        let p = locked_profile(&args, &trust, rep)?;
        let Some(src) = &p.source else {
            continue;
        };
        let spec = source_spec(&p, &trust)?;
        let tarball = source::fetch(&spec, &cache, &opts).map_err(not_served)?;
        let name = source::mirror::file_name(&src.url);
        let os = dir.join("os");
        written += copy_into(&tarball, &os.join(name))?;
        if let Some(sig) = locked_pin(&p, &src.url).and_then(|pin| pin.signature) {
            written += write_into(
                &os.join(format!("{name}.sig")),
                &decode_signature(&sig, &p)?,
            )?;
        }
        let Some(pk) = &p.packages else {
            continue;
        };
        let pins = pk.require_pins(&p.name, &spec.sha256)?;
        let keyring = trust.package_keyring(&p);
        let fetcher = crate::packages::Fetcher {
            cache: &cache,
            opts: &opts,
            mirrors: &trust.mirrors,
            keyring: &keyring,
        };
        for repo in &pk.config.repositories {
            repos
                .entry((pk.config.architecture.clone(), repo.clone()))
                .or_default();
        }
        for got in crate::packages::fetch(&pk.config, pins, &fetcher)? {
            let repo_dir = dir.join(&pk.config.architecture).join(&got.pin.repo);
            written += copy_into(&got.path, &repo_dir.join(&got.pin.filename))?;
            if let Some(sig) = &got.pin.signature {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(sig.trim())
                    .with_context(|| {
                        format!("{}: its signature is not valid base64", got.pin.filename)
                    })?;
                written += write_into(&repo_dir.join(format!("{}.sig", got.pin.filename)), &bytes)?;
            }
            let info = crate::packages::install::prepare(&got)?.info;
            repos
                .entry((pk.config.architecture.clone(), got.pin.repo.clone()))
                .or_default()
                .insert(got.pin.filename.clone(), (got.pin.clone(), info));
        }
    }
    for ((arch, repo), pkgs) in &repos {
        let entries: Vec<crate::packages::vendor::Entry<'_>> = pkgs
            .values()
            .map(|(pin, info)| crate::packages::vendor::Entry { pin, info })
            .collect();
        let repo_dir = dir.join(arch).join(repo);
        std::fs::create_dir_all(&repo_dir)
            .with_context(|| format!("{}: cannot create", repo_dir.display()))?;
        let db = repo_dir.join(format!("{repo}.db"));
        write_via_temp(&db, |tmp| crate::packages::vendor::write_db(tmp, &entries))?;
        println!("{} ({} packages)", db.display(), entries.len());
    }
    rep.step(format!(
        "vendored into {} ({written} files written); build from it with --mirror file://{}",
        dir.display(),
        std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
    ));
    Ok(())
}

/// Copy `from` to `to` (through a temporary name) unless `to` already holds the same bytes;
/// returns how many files were written (0 or 1).
fn copy_into(from: &Path, to: &Path) -> Result<usize> {
    if to.is_file() && source::sha256_file(to)? == source::sha256_file(from)? {
        return Ok(0);
    }
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("{}: cannot create", d.display()))?;
    }
    write_via_temp(to, |tmp| {
        std::fs::copy(from, tmp)
            .map(drop)
            .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
        // The cache's copies are read-only; the vendored tree's are the owner's to manage.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("{}: cannot chmod", tmp.display()))
    })?;
    println!("{}", to.display());
    Ok(1)
}

/// Write `bytes` to `to` (through a temporary name) unless it already holds them.
fn write_into(to: &Path, bytes: &[u8]) -> Result<usize> {
    if std::fs::read(to).is_ok_and(|b| b == bytes) {
        return Ok(0);
    }
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("{}: cannot create", d.display()))?;
    }
    write_via_temp(to, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))
    })?;
    println!("{}", to.display());
    Ok(1)
}

/// The HC1 board file, built in so `inspect` can name the blobs without a profile.
const HC1_BOARD: &str = include_str!("../profiles/boards/odroid-hc1.toml");

/// `hc1img inspect`; with `sbom`, the SBOM of the output directory (or `sbom.spdx.json`)
/// `image` as a table.
pub fn inspect(image: &Path, sbom: bool) -> Result<()> {
    if sbom {
        print!("{}", crate::sbom::table(image)?);
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct B {
        sd: Sd,
    }
    #[derive(serde::Deserialize)]
    struct Sd {
        blobs: Vec<crate::disk::blobs::BlobSlot>,
    }
    let slots = toml::from_str::<B>(HC1_BOARD)
        .map(|b| b.sd.blobs)
        .unwrap_or_default();
    let report = crate::disk::inspect::inspect(image, &slots)?;
    print!("{report}");
    // A card: the kernel it boots and the kernel its initramfs has modules for.
    let fat = report.partitions.iter().find(|p| {
        matches!(report.table, crate::disk::inspect::Table::Mbr { .. })
            && p.fs.version.as_deref() == Some("FAT32")
    });
    if let Some(p) = fat {
        let file = std::fs::File::open(image)
            .with_context(|| format!("cannot open {}", image.display()))?;
        let vol = crate::fat::read_fat32(
            &file,
            p.start * crate::sector::SECTOR,
            p.sectors * crate::sector::SECTOR,
            &image.display().to_string(),
        )?;
        let get = |name: &str| {
            vol.entries
                .iter()
                .find(|e| !e.is_dir && e.path == name)
                .map(|e| e.data.as_slice())
        };
        if let Some(z) = get(crate::kernel::ZIMAGE) {
            match crate::kernel::card_kernel(z, get(crate::kernel::INITRAMFS)) {
                Ok((k, ird)) => {
                    println!("kernel on the card: {}", k.kernel);
                    match (ird, k.initramfs.is_empty()) {
                        (None, _) => println!("initramfs: none"),
                        (Some(_), true) => println!("initramfs: no kernel modules"),
                        (Some(_), false) => {
                            println!("initramfs: modules of {}", k.initramfs.join(", "))
                        }
                    }
                }
                Err(e) => println!("kernel on the card: cannot tell ({e:#})"),
            }
        }
    }
    Ok(())
}

/// `hc1img diff`: prints the differences; returns whether there are any.
pub fn diff(a: &Path, b: &Path) -> Result<bool> {
    let report = crate::diff::diff(a, b)?;
    if report.is_empty() {
        println!("no differences");
    } else {
        print!("{report}");
    }
    Ok(!report.is_empty())
}

/// `hc1img verify`: the outputs against the manifest; with `keyring`, the signature of
/// `SHA256SUMS`, every file it lists and the manifests against it ([`crate::signing::verify`]).
pub fn verify(dir: &Path, keyring: Option<&Path>, rep: &Reporter) -> Result<()> {
    let lines = match keyring {
        None => crate::manifest::verify(dir)?,
        Some(k) => crate::signing::verify(dir, k, &|p| hash_files(p, rep))?,
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `hc1img sign DIR --key FILE`: sign `DIR/SHA256SUMS` (written from the manifest when an
/// output directory has none), after checking every file it lists.
pub fn sign(dir: &Path, key: &Path, rep: &Reporter) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "{}: not a directory; give an output (or release) directory",
            dir.display()
        );
    }
    let key = crate::signing::SigningKey::load(key)?;
    sign_dir(dir, &key, true, rep)
}

/// `hc1img seed`: a copy of `sd_img` per node, each with that node's seed (see
/// [`crate::seed`]). `hostnames` and `addresses` pair up in order; `common` holds what every
/// node gets (gateway, DNS, and the `--secret`s). With `flash` (`--flash DEVICE`, and
/// `--force`), the one node's card is also written to DEVICE ([`seed_and_flash`]).
#[allow(clippy::too_many_arguments)]
pub fn seed(
    sd_img: &Path,
    output: Option<PathBuf>,
    hostnames: &[String],
    addresses: &[String],
    mut common: crate::seed::Seed,
    secrets: &[String],
    flash: Option<(&Path, bool)>,
    rep: &Reporter,
) -> Result<()> {
    for s in secrets {
        let Some((name, file)) = s.split_once('=') else {
            bail!("--secret {s:?}: write NAME=FILE, e.g. swarm_worker_token=worker-token");
        };
        common.secrets.push((name.to_string(), PathBuf::from(file)));
    }
    if addresses.len() > 1 && addresses.len() != hostnames.len() {
        bail!(
            "{} --address for {} --hostname: give one --address per --hostname, in the same order",
            addresses.len(),
            hostnames.len()
        );
    }
    let mut nodes: Vec<(Option<String>, Option<String>)> = Vec::new();
    if hostnames.is_empty() {
        nodes.push((None, addresses.first().cloned()));
    } else {
        for (i, h) in hostnames.iter().enumerate() {
            if hostnames[..i].contains(h) {
                bail!("--hostname {h} is given twice");
            }
            nodes.push((Some(h.clone()), addresses.get(i).cloned()));
        }
    }
    if nodes.len() > 1 && addresses.len() == 1 {
        bail!(
            "one --address for {} nodes: give one --address per --hostname",
            nodes.len()
        );
    }
    let node_seed = |hostname: Option<String>, address: Option<String>| crate::seed::Seed {
        hostname,
        address,
        gateway: common.gateway.clone(),
        dns: common.dns.clone(),
        labels: common.labels.clone(),
        secrets: common.secrets.clone(),
    };
    if let Some((device, force)) = flash {
        let [(h, a)] = nodes.as_slice() else {
            bail!(
                "--flash writes one card: give one --hostname, not {}",
                nodes.len()
            );
        };
        let node = node_seed(h.clone(), a.clone());
        return seed_and_flash(sd_img, output.as_deref(), &node, device, force, rep);
    }
    let several = nodes.len() > 1;
    let mut outs = Vec::new();
    for (h, _) in &nodes {
        let out = match (&output, h) {
            (Some(dir), Some(h)) if several => dir.join(format!("sd-{h}.img")),
            (Some(o), _) => o.clone(),
            (None, Some(h)) => PathBuf::from(format!("sd-{h}.img")),
            (None, None) => {
                bail!("give --output FILE (or --hostname, which names sd-HOSTNAME.img)")
            }
        };
        outs.push(out);
    }
    if several {
        if let Some(dir) = &output
            && !dir.is_dir()
        {
            bail!(
                "{}: with several --hostname, --output must be an existing directory (each node \
                 gets DIR/sd-HOSTNAME.img)",
                dir.display()
            );
        }
        // Refuse before writing anything.
        for o in &outs {
            if o.exists() {
                bail!(
                    "{}: already exists; remove it or choose another --output",
                    o.display()
                );
            }
        }
    }
    for ((h, a), out) in nodes.into_iter().zip(outs) {
        let node = node_seed(h, a);
        crate::seed::write_seed(sd_img, &out, &node)?;
        rep.step(format!(
            "wrote {} (seed for the node's boot{})",
            out.display(),
            node.hostname
                .as_deref()
                .map(|h| format!(": host name {h}"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// `hc1img seed … --flash DEVICE`: check DEVICE first (nothing is seeded for a device that
/// would be refused), write the seeded copy to `output` (kept) or to a private temporary
/// directory (removed afterwards, also when interrupted: the copy holds secrets), then write
/// it to DEVICE through its own block map as `hc1img flash` does.
fn seed_and_flash(
    sd_img: &Path,
    output: Option<&Path>,
    node: &crate::seed::Seed,
    device: &Path,
    force: bool,
    rep: &Reporter,
) -> Result<()> {
    let target = crate::flash::Target::open(device, force, &[sd_img])?;
    let len = std::fs::metadata(sd_img)
        .with_context(|| format!("{}: cannot open", sd_img.display()))?
        .len();
    target.make_room(len, sd_img)?;
    let tmp;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => {
            tmp = crate::store::TempDir::new(".hc1img-seed-")?;
            let name = node.hostname.as_deref().unwrap_or("card");
            tmp.path().join(format!("sd-{name}.img"))
        }
    };
    crate::seed::write_seed(sd_img, &out, node)?;
    let mut bmap = out.clone().into_os_string();
    bmap.push(".bmap");
    let bmap = PathBuf::from(bmap);
    let map = if bmap.is_file() {
        crate::flash::MapChoice::File(bmap)
    } else {
        crate::flash::MapChoice::Whole
    };
    let image = crate::flash::Image::open(&out, &map)?;
    crate::flash::write(&image, &target, rep)?;
    if output.is_some() {
        rep.step(format!("kept the seeded card as {}", out.display()));
    }
    Ok(())
}
