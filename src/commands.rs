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

/// `hc1img build`: returns the output directory.
pub fn build(
    args: &CommonArgs,
    out: Option<PathBuf>,
    rebuild: bool,
    rep: &Reporter,
) -> Result<PathBuf> {
    let p = args.load()?;
    let drv = plan::derivation(&p)?;
    let timestamp = source_date_epoch()?;
    let out = match out {
        Some(dir) => OutDir::explicit(dir),
        None => OutDir::in_store(Path::new("out"), &p.name, &drv.hash),
    };
    if out.is_complete() && !rebuild {
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
    let staging = out.start()?;
    let report = crate::build::build(
        &crate::build::BuildInputs {
            profile: &p,
            derivation: &drv.hash,
            tarball: &tarball,
            tarball_sha256: &spec.sha256,
            timestamp,
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
    rep.step("hashing the outputs");
    let mut manifest = manifest_for(&p, &drv, &spec);
    manifest.record_outputs(staging.path(), &["ssd.img", "sd.img"])?;
    manifest.write(staging.path())?;
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

/// `hc1img fetch`.
pub fn fetch(args: &CommonArgs, rep: &Reporter) -> Result<()> {
    let p = args.load()?;
    let spec = source_spec(&p)?;
    let path = source::fetch(&spec, &Cache::from_env()?, &fetch_options(rep))?;
    println!("{}", path.display());
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

/// `hc1img verify`.
pub fn verify(dir: &Path) -> Result<()> {
    for line in crate::manifest::verify(dir)? {
        println!("{line}");
    }
    Ok(())
}
