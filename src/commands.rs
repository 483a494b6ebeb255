//! The commands behind the CLI: each resolves what it needs (profile, derivation, source) and
//! calls the library. `main.rs` only parses arguments and prints errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest::{Manifest, SourceRecord};
use crate::plan::{self, Derivation};
use crate::profile::{self, Overrides, Profile};
use crate::progress::{Reporter, Verbosity};
use crate::source::{self, Cache, FetchOptions, SignatureSpec};
use crate::store::OutDir;

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

/// The profile's source as the fetcher wants it (pinned).
fn source_spec(p: &Profile) -> Result<source::SourceSpec> {
    let Some(spec) = p.source_spec() else {
        bail!(
            "profile {} names no [source]; add one or pass --source-url and --source-sha256",
            p.name
        );
    };
    let sha256 = spec.require_sha256()?.to_string();
    let signature = match (&spec.signature, &spec.keyring) {
        (Some(url), Some(keyring)) => Some(SignatureSpec {
            url: url.clone(),
            keyring: keyring.clone(),
        }),
        _ => None,
    };
    Ok(source::SourceSpec {
        urls: spec.urls,
        sha256,
        size: spec.size,
        signature,
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

/// The checksum list `--compress` writes (GNU `sha256sum` format).
pub const SHA256SUMS: &str = "SHA256SUMS";

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

/// Write `out` through a hidden temporary name in its directory and rename it into place, so
/// an interrupted run never leaves a truncated file under the final name.
fn write_via_temp(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
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
            let mapped: u64 = crate::disk::sparse::data_ranges(&f, size)?
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

/// Hash the outputs into the manifest and write it; with `--compress`, also write
/// `SHA256SUMS` over every file in `dir` but itself (hidden temporaries aside), sorted by
/// name. Hashes already in `manifest` for unchanged files are reused when `reuse` is set.
fn record_and_write(
    dir: &Path,
    manifest: &mut Manifest,
    compress: Compress,
    reuse: bool,
    rep: &Reporter,
) -> Result<()> {
    rep.step("hashing the outputs");
    let mut names: Vec<String> = IMAGES.iter().map(|s| s.to_string()).collect();
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
    if compress == Compress::None && !dir.join(SHA256SUMS).is_file() {
        return Ok(());
    }
    let mut entries: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == SHA256SUMS || name.starts_with('.') || !e.path().is_file() {
            continue;
        }
        entries.push(name);
    }
    entries.sort();
    let unknown: Vec<PathBuf> = entries
        .iter()
        .filter(|n| !manifest.outputs.contains_key(*n))
        .map(|n| dir.join(n))
        .collect();
    let mut hashed = hash_files(&unknown, rep)?.into_iter();
    let mut sums = String::new();
    for name in entries {
        let sha = match manifest.outputs.get(&name) {
            Some(o) => o.sha256.clone(),
            None => hashed
                .next()
                .map(|o| o.sha256)
                .with_context(|| format!("internal error: {name} was not hashed"))?,
        };
        sums.push_str(&format!("{sha}  {name}\n"));
    }
    write_via_temp(&dir.join(SHA256SUMS), |tmp| {
        std::fs::write(tmp, sums).with_context(|| format!("{}: cannot write", tmp.display()))
    })
}

/// `hc1img build`: returns the output directory.
pub fn build(
    args: &CommonArgs,
    out: Option<PathBuf>,
    rebuild: bool,
    compress: Compress,
    rep: &Reporter,
) -> Result<PathBuf> {
    crate::progress::timing("loading the profile");
    let p = args.load()?;
    warn_unbaked_overrides(args, &p, rep)?;
    if let Some(pk) = &p.packages {
        pk.require_pins(&p.name, &source_spec(&p)?.sha256)?;
    }
    let drv = plan::derivation(&p)?;
    let timestamp = source_date_epoch()?;
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
            record_and_write(&out.dir, &mut manifest, compress, true, rep)?;
            rep.step(format!("built {}", out.dir.display()));
            return Ok(out.dir);
        }
        rep.step(format!(
            "{} is up to date ({})",
            out.dir.display(),
            drv.short()
        ));
        return Ok(out.dir);
    }
    rep.detail(format!("derivation {}", drv.hash));
    let spec = source_spec(&p)?;
    let cache = Cache::from_env()?;
    let tarball = source::fetch(&spec, &cache, &fetch_options(rep))?;
    let packages = match &p.packages {
        Some(pk) => {
            let pins = pk.require_pins(&p.name, &spec.sha256)?;
            rep.step(format!("fetching {} pinned packages", pins.len()));
            crate::packages::fetch(&pk.config, pins, &cache, &fetch_options(rep))?
        }
        None => Vec::new(),
    };
    let staging = out.start()?;
    let report = crate::build::build(
        &crate::build::BuildInputs {
            profile: &p,
            derivation: &drv.hash,
            tarball: &tarball,
            tarball_sha256: &spec.sha256,
            timestamp,
            packages: &packages,
        },
        staging.path(),
        rep,
    )?;
    rep.detail(format!(
        "ext4: {} of {} blocks used, {} of {} inodes used",
        report.ext4.blocks_total - report.ext4.blocks_free,
        report.ext4.blocks_total,
        report.ext4.inodes_total - report.ext4.inodes_free,
        report.ext4.inodes_total
    ));
    write_compressed(staging.path(), compress, false, rep)?;
    let mut manifest = manifest_for(&p, &drv, &spec);
    record_and_write(staging.path(), &mut manifest, compress, false, rep)?;
    let dir = staging.commit()?;
    rep.step(format!("built {}", dir.display()));
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
    }
}

/// `hc1img plan`.
pub fn plan(args: &CommonArgs, json: bool) -> Result<()> {
    let p = args.load()?;
    let drv = plan::derivation(&p)?;
    if json {
        let v = serde_json::json!({
            "derivation": drv.hash,
            "name": p.name,
            "inputs": drv.inputs.iter().map(|i| serde_json::json!({
                "kind": format!("{:?}", i.kind).to_lowercase(),
                "name": i.name,
                "digest": i.digest,
            })).collect::<Vec<_>>(),
            "profile": drv.resolved,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("profile     {}", p.name);
        println!("derivation  {}", drv.hash);
        println!("output      out/{}-{}/", p.name, drv.short());
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
        println!("resolved profile:");
        println!("{}", serde_json::to_string_pretty(&drv.resolved)?);
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

/// `hc1img fetch`.
pub fn fetch(args: &CommonArgs, rep: &Reporter) -> Result<()> {
    let p = args.load()?;
    let spec = source_spec(&p)?;
    let cache = Cache::from_env()?;
    let path = source::fetch(&spec, &cache, &fetch_options(rep))?;
    println!("{}", path.display());
    if let Some(pk) = &p.packages {
        let pins = pk.require_pins(&p.name, &spec.sha256)?;
        for f in crate::packages::fetch(&pk.config, pins, &cache, &fetch_options(rep))? {
            println!("{}", f.path.display());
        }
    }
    Ok(())
}

/// `hc1img lock`: the only command that changes a pin.
pub fn lock(profile_path: &Path, rep: &Reporter) -> Result<()> {
    let p = profile::load(profile_path, &Overrides::default())?;
    let Some(src) = &p.source else {
        bail!(
            "{}: the profile names no [source] to pin",
            profile_path.display()
        );
    };
    let Some(lock_path) = p.lock_path().map(Path::to_path_buf) else {
        bail!(
            "{}: cannot tell where the lock file goes",
            profile_path.display()
        );
    };
    let cache = Cache::from_env()?;
    let opts = fetch_options(rep);
    rep.step(format!("fetching {}", src.url));
    let got = source::fetch_unpinned(&src.fetch_urls, &cache, &opts)?;
    if let (Some(sig_url), Some(keyring)) = (&src.signature, &src.keyring) {
        let sig = source::fetch_unpinned(std::slice::from_ref(sig_url), &cache, &opts)
            .with_context(|| format!("cannot fetch the signature {sig_url}"))?;
        source::verify_signature(&got.path, &sig.path, keyring)
            .with_context(|| format!("{}: signature check failed; not re-pinning", src.url))?;
        rep.step(format!("signature ok ({})", keyring.display()));
    }
    let mut lock = if lock_path.exists() {
        profile::read_lock(&lock_path)?
    } else {
        profile::LockFile::default()
    };
    let old = lock.pins.insert(
        src.url.clone(),
        profile::Pin {
            sha256: got.sha256.clone(),
            size: Some(got.size),
        },
    );
    let packages = match &p.packages {
        Some(pk) => {
            let set =
                crate::packages::lock(&pk.config, &got.path, &got.sha256, &cache, &opts, rep)?;
            Some(set)
        }
        None => None,
    };
    if let Some(set) = &packages {
        lock.packages.insert(p.name.clone(), set.clone());
    }
    profile::write_lock(&lock_path, &lock)?;
    match old {
        Some(o) if o.sha256 == got.sha256 => {
            println!("{}: unchanged, sha256 {}", src.url, got.sha256)
        }
        Some(o) => println!(
            "{}:\n  old sha256 {}\n  new sha256 {} ({} bytes)",
            src.url, o.sha256, got.sha256, got.size
        ),
        None => println!(
            "{}: pinned sha256 {} ({} bytes)",
            src.url, got.sha256, got.size
        ),
    }
    if let Some(set) = &packages {
        println!(
            "[packages] of {}: {} packages pinned",
            p.name,
            set.package.len()
        );
        for pin in &set.package {
            println!(
                "  {} {} ({}, {})",
                pin.name, pin.version, pin.repo, pin.reason
            );
        }
    }
    Ok(())
}

/// The HC1 board file, built in so `inspect` can name the blobs without a profile.
const HC1_BOARD: &str = include_str!("../profiles/boards/odroid-hc1.toml");

/// `hc1img inspect`.
pub fn inspect(image: &Path) -> Result<()> {
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

/// `hc1img verify`.
pub fn verify(dir: &Path) -> Result<()> {
    for line in crate::manifest::verify(dir)? {
        println!("{line}");
    }
    Ok(())
}

/// `hc1img seed`: a copy of `sd_img` per node, each with that node's seed (see
/// [`crate::seed`]). `hostnames` and `addresses` pair up in order; `common` holds what every
/// node gets (gateway, DNS, and the `--secret`s).
#[allow(clippy::too_many_arguments)]
pub fn seed(
    sd_img: &Path,
    output: Option<PathBuf>,
    hostnames: &[String],
    addresses: &[String],
    mut common: crate::seed::Seed,
    secrets: &[String],
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
        let node = crate::seed::Seed {
            hostname: h,
            address: a,
            gateway: common.gateway.clone(),
            dns: common.dns.clone(),
            secrets: common.secrets.clone(),
        };
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
