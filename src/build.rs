//! The build engine: one streaming pass from the verified tarball to `ssd.img` and `sd.img`.
//!
//! Data flow: the tarball is hashed and inflated on other threads ([`crate::rootfs::input`]);
//! each tar entry becomes a tree node while its bytes go straight into the ext4 data area of
//! `ssd.img` at the root partition's offset; `/boot` files and the files the edits change are
//! held in memory. After the stream, the profile's pinned packages are streamed in the same
//! way ([`crate::packages::install`]); the kernel step indexes the module trees and fits the
//! card's initramfs to the card's kernel ([`crate::kernel`]); then the edits run on the tree,
//! the ext4 metadata is written, the GPT around it, then `sd.img` (MBR, bootloader blobs, FAT
//! with `boot.txt`/`boot.scr`), after the hardware lints of [`crate::lint`] (warnings only),
//! and the card's kernel and initramfs are read back and checked. Everything the build
//! decides is a function of [`BuildInputs`], so the same inputs give the same bytes.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::ext4::{Ext4Options, Ext4Stats, Ext4Writer};
use crate::ids;
use crate::packages::install::Prepared;
use crate::profile::{Profile, Size};
use crate::progress::Reporter;
use crate::rootfs::fanout::Tap;
use crate::rootfs::import::{self, ImportReport};
use crate::rootfs::input::{self, Inflated};
use crate::sector::SECTOR;
use crate::tree::{Meta, Timestamp, Tree};

/// Everything a build reads besides the profile: the verified tarball and the derivation.
pub struct BuildInputs<'a> {
    pub profile: &'a Profile,
    /// The derivation hash (64 hex): the seed of every identifier in the images.
    pub derivation: &'a str,
    pub tarball: &'a Path,
    pub tarball_sha256: &'a str,
    /// `SOURCE_DATE_EPOCH`, or `None` for the newest mtime in the tarball.
    pub timestamp: Option<i64>,
    /// The profile's pinned packages, fetched and verified, in install order.
    pub packages: &'a [crate::packages::Fetched],
}

/// Identifiers and the timestamp, decided by the build, that the edits and the boot card use.
#[derive(Clone, Debug)]
pub struct BuildIds {
    pub timestamp: i64,
    /// FAT volume ID of the boot partition (for `/etc/fstab`).
    pub boot_volume_id: u32,
    /// GPT partition GUID of the root partition.
    pub root_partuuid: String,
    pub root_fs_uuid: String,
}

/// What a build produced, for the manifest and the user.
#[derive(Debug)]
pub struct BuildReport {
    pub import: ImportReport,
    pub ext4: Ext4Stats,
    pub boot_files: Vec<String>,
    pub boot_txt: String,
    /// `ssd.img` and `sd.img`: size and sha256, hashed as soon as each was complete.
    pub images: BTreeMap<String, crate::manifest::OutputFile>,
    /// What the first boot runs for the packages (the manifest's `first_boot`).
    pub first_boot: Vec<String>,
    /// The root's final local pacman database (every installed package's `desc`), for the
    /// SBOM ([`crate::sbom`]).
    pub local_db: Vec<crate::packages::db::Desc>,
    /// The time the build gave what it wrote: `SOURCE_DATE_EPOCH` or the tarball's newest mtime.
    pub timestamp: i64,
}

/// A build's tar stream: a pass over the tarball of its own, or its share of a pass.
enum Stream {
    Own(Inflated),
    Shared(Tap),
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Own(s) => s.read(buf),
            Stream::Shared(t) => t.read(buf),
        }
    }
}

impl Stream {
    /// The tarball's sha256 and size, once the stream is read to its end.
    fn finish(self) -> Result<(String, u64)> {
        match self {
            Stream::Own(s) => s.finish(),
            Stream::Shared(t) => t.finish(),
        }
    }
}

/// Round `v` up to a multiple of `m`.
fn round_up(v: u64, m: u64) -> u64 {
    v.div_ceil(m) * m
}

/// What the packages add to the root for `size = "auto"`, in bytes: what the transaction
/// installs (each package's `.PKGINFO` `size`, which the sync database's `%ISIZE%` repeats)
/// minus what it frees (the installed size, `%SIZE%` in the tarball's local database, of each
/// version an upgrade replaces, and of each package a replacement removes). Negative when the
/// upgrades shrink the root. `local` is
/// `NAME-VERSION` -> `%SIZE%` of the tarball's local database, read only when a pin upgrades.
fn packages_net(
    prepared: &[crate::packages::install::Prepared],
    local: &BTreeMap<String, u64>,
) -> i64 {
    let mut net: i64 = 0;
    for p in prepared {
        let adds = p
            .info
            .get("size")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        net = net.saturating_add(i64::try_from(adds).unwrap_or(i64::MAX));
        let pin = &p.fetched.pin;
        if let Some(frees) = pin.frees {
            net = net.saturating_sub(i64::try_from(frees).unwrap_or(i64::MAX));
            continue;
        }
        let old = pin.upgrades.iter().map(|v| format!("{}-{v}", pin.name));
        for dir in old.chain(pin.removes.iter().cloned()) {
            let frees = local.get(&dir).copied().unwrap_or(0);
            net = net.saturating_sub(i64::try_from(frees).unwrap_or(i64::MAX));
        }
    }
    net
}

/// The tarball's local database sizes ([`packages_net`]), when a pin upgrades or removes one
/// of its packages and the lock did not record what that frees (`frees`, written by locks
/// since issue 26): one more pass over the tarball. Empty otherwise.
fn local_sizes(
    tarball: &Path,
    packages: &[crate::packages::Fetched],
) -> Result<BTreeMap<String, u64>> {
    if packages
        .iter()
        .all(|f| (f.pin.upgrades.is_none() && f.pin.removes.is_empty()) || f.pin.frees.is_some())
    {
        return Ok(BTreeMap::new());
    }
    crate::packages::db::local_sizes_from_tarball(tarball)
        .context("size = \"auto\": cannot read the installed sizes of the tarball's packages")
}

/// Size and minimum inode count for `size = "auto"`: the unpacked tar size plus what the
/// packages add ([`packages_net`]), plus 30% and 256 MiB of headroom (journal, metadata,
/// first-boot writes), rounded to 64 MiB; and room for as many inodes as that many bytes of
/// tar stream could hold entries (one per 512-byte header), capped at one inode per two
/// blocks, which is as dense as a tarball of tiny files needs. Without a cheap size hint,
/// 4 GiB (plus what the packages add) and the profile's inode ratio.
fn auto_size(tarball: &Path, packages: i64) -> Result<(u64, u64)> {
    let hint = input::unpacked_size_hint(tarball)?;
    let add = |n: u64| n.saturating_add_signed(packages);
    Ok(match hint {
        Some(n) => {
            let n = add(n);
            let size = round_up(n + n * 3 / 10 + (256 << 20), 64 << 20);
            (size, (n / 512 + 4096).min(size / 4096 / 2))
        }
        None => (round_up(add(4 << 30), 64 << 20).max(4 << 30), 0),
    })
}

/// The bytes `[docker] preload` adds to the root (the archives as they are).
fn preload_bytes(p: &crate::profile::Profile) -> i64 {
    p.node
        .docker
        .preload
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .fold(0i64, i64::saturating_add)
}

/// How many times `size = "auto"` builds again after a build found the filesystem too small.
const AUTO_RETRIES: usize = 3;

/// The size and inode count to build again with after `e` ([`crate::ext4::TooSmall`]) said
/// what a build at `size` with `inodes` lacked: the missing blocks plus the same 30% and
/// 64 MiB for the metadata of the larger geometry, rounded to 64 MiB; the inodes the tree
/// needs plus 10% and 4096, with at least one block per inode. `None` when `e` is not that.
fn grown(e: &anyhow::Error, size: u64, inodes: u64) -> Option<(u64, u64)> {
    let t = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::ext4::TooSmall>())?;
    let bytes = t.blocks.saturating_mul(4096);
    let mut size = round_up(size + bytes + bytes * 3 / 10 + (64 << 20), 64 << 20);
    let mut inodes = inodes;
    if t.inodes > 0 {
        inodes = inodes.max(t.inodes + t.inodes / 10 + 4096);
        size = size.max(round_up(inodes * 4096 + (256 << 20), 64 << 20));
    }
    Some((size, inodes))
}

/// The package heads ([`crate::packages::install::prepare`]: sha256 checked, `.PKGINFO`
/// read), before the filesystem is sized.
fn prepare_packages(
    inp: &BuildInputs,
    rep: &Reporter,
) -> Result<Vec<crate::packages::install::Prepared>> {
    let prepared: Vec<Prepared> = inp
        .packages
        .iter()
        .map(crate::packages::install::prepare)
        .collect::<Result<_>>()?;
    for p in &prepared {
        if let Some(w) = &p.fast_warning {
            rep.warn(w);
        }
    }
    let fast = prepared.iter().filter(|p| p.fast.is_some()).count();
    if !prepared.is_empty() {
        rep.detail(format!(
            "packages: {fast} of {} read through their fast forms",
            prepared.len()
        ));
    }
    Ok(prepared)
}

/// Open the tar stream of the pinned tarball, through its fast form when the cache has one
/// that verifies ([`Inflated::open_pinned`]); says which under `-v`, warns about a fast form
/// that did not verify, and sizes `bar` by the bytes the stream reads.
fn open_tarball(
    tarball: &Path,
    sha256: &str,
    progress: input::ProgressFn,
    bar: &indicatif::ProgressBar,
    rep: &Reporter,
) -> Result<Inflated> {
    let (s, warning) = Inflated::open_pinned(tarball, sha256, Some(progress))?;
    if let Some(w) = warning {
        rep.warn(w);
    }
    match s.fast_form() {
        Some(f) => rep.detail(format!("reading the fast form {}", f.display())),
        None if crate::source::fast::cache_of(tarball, sha256).is_some() => {
            rep.detail(format!("writing the fast form of {}", tarball.display()))
        }
        None => {}
    }
    bar.set_length(s.input_len());
    Ok(s)
}

/// Run the whole build, writing `ssd.img` and `sd.img` into `dir`. With `size = "auto"`, a
/// build that finds the filesystem too small (many tiny or empty files, a package larger than
/// it says) is built again, larger by what it lacked ([`grown`]).
pub fn build(inp: &BuildInputs, dir: &Path, rep: &Reporter) -> Result<BuildReport> {
    let prepared = prepare_packages(inp, rep)?;
    let (fs_size, min_inodes) = match inp.profile.rootfs.size {
        Size::Bytes(s) => return build_sized(inp, dir, rep, s, 0, prepared, None),
        Size::Auto => {
            let local = local_sizes(inp.tarball, inp.packages)?;
            let adds = packages_net(&prepared, &local) + preload_bytes(inp.profile);
            auto_size(inp.tarball, adds)?
        }
    };
    rep.detail(format!("rootfs size auto: {} MiB", fs_size >> 20));
    let first = build_sized(inp, dir, rep, fs_size, min_inodes, prepared.clone(), None);
    build_again(inp, dir, rep, (fs_size, min_inodes), &prepared, first)
}

/// Whether a build failed only because the `size = "auto"` estimate was too small.
fn too_small(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<crate::ext4::TooSmall>())
}

/// While `r` says the filesystem of `(size, inodes)` was too small, build again, alone and
/// larger by what it lacked ([`grown`]), at most [`AUTO_RETRIES`] times.
fn build_again(
    inp: &BuildInputs,
    dir: &Path,
    rep: &Reporter,
    (mut size, mut inodes): (u64, u64),
    prepared: &[crate::packages::install::Prepared],
    mut r: Result<BuildReport>,
) -> Result<BuildReport> {
    for _ in 0..AUTO_RETRIES {
        let e = match r {
            Err(e) if too_small(&e) => e,
            r => return r,
        };
        let Some((s, i)) = grown(&e, size, inodes) else {
            return Err(e);
        };
        rep.detail(format!(
            "rootfs size auto: {} MiB was too small ({e:#}); building again at {} MiB with at least {i} inodes",
            size >> 20,
            s >> 20
        ));
        (size, inodes) = (s, i);
        for f in ["ssd.img", "sd.img"] {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("{}: cannot remove", p.display()))?;
            }
        }
        r = build_sized(inp, dir, rep, size, inodes, prepared.to_vec(), None);
    }
    r
}

/// A job's package heads and its filesystem's size and minimum inode count.
type Setup = (Vec<Prepared>, (u64, u64));

/// One build of a shared pass: its inputs, its output directory and its reporter (whose
/// prefix names the profile).
pub struct Job<'a> {
    pub inputs: BuildInputs<'a>,
    pub dir: &'a Path,
    pub rep: Reporter,
}

/// Run several builds of the same tarball from one pass over it ([`crate::rootfs::fanout`]):
/// the tarball is read, verified and inflated once, each build imports the same tar stream on
/// a thread of its own and writes its own images, byte-identical to a build of its own. A
/// build whose `size = "auto"` estimate is too small is built again alone afterwards, as
/// [`build`] does. Returns one result per job, in order.
pub fn build_shared(jobs: &[Job], rep: &Reporter) -> Result<Vec<Result<BuildReport>>> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let tarball = first.inputs.tarball;
    if let Some(j) = jobs
        .iter()
        .find(|j| j.inputs.tarball_sha256 != first.inputs.tarball_sha256)
    {
        bail!(
            "internal error: profiles {} and {} do not share a source",
            first.inputs.profile.name,
            j.inputs.profile.name
        );
    }
    // Each job's package heads and size; a job whose packages fail fails alone, as a build
    // that fails later does.
    let mut local: Option<Result<BTreeMap<String, u64>, String>> = None;
    let setups: Vec<Result<Setup>> = jobs
        .iter()
        .map(|j| {
            let p = prepare_packages(&j.inputs, &j.rep)?;
            let size = match j.inputs.profile.rootfs.size {
                Size::Bytes(s) => (s, 0),
                Size::Auto => {
                    let local = local.get_or_insert_with(|| {
                        local_sizes(tarball, j.inputs.packages).map_err(|e| format!("{e:#}"))
                    });
                    let local = local.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let adds = packages_net(&p, local) + preload_bytes(j.inputs.profile);
                    let (size, inodes) = auto_size(tarball, adds)?;
                    j.rep
                        .detail(format!("rootfs size auto: {} MiB", size >> 20));
                    (size, inodes)
                }
            };
            Ok((p, size))
        })
        .collect();
    let names: Vec<&str> = jobs
        .iter()
        .map(|j| j.inputs.profile.name.as_str())
        .collect();
    rep.step(format!(
        "importing {} once for {}",
        tarball.display(),
        names.join(", ")
    ));
    let total = std::fs::metadata(tarball)
        .with_context(|| format!("{}: cannot stat", tarball.display()))?
        .len();
    let bar = rep.bytes_bar(total, "import");
    let bar2 = bar.clone();
    let stream = open_tarball(
        tarball,
        first.inputs.tarball_sha256,
        Box::new(move |n| bar2.set_position(n)),
        &bar,
        rep,
    )?;
    let taps = crate::rootfs::fanout::split(stream, tarball, jobs.len());
    let results: Vec<Result<BuildReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .zip(taps)
            .zip(&setups)
            .map(|((j, tap), setup)| {
                s.spawn(move || match setup {
                    Ok((p, (size, inodes))) => build_sized(
                        &j.inputs,
                        j.dir,
                        &j.rep,
                        *size,
                        *inodes,
                        p.clone(),
                        Some(tap),
                    ),
                    // Its own error is returned below; its share of the stream is let go.
                    Err(_) => Err(anyhow::anyhow!("not built")),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a build thread crashed")))
            })
            .collect()
    });
    bar.finish_and_clear();
    Ok(jobs
        .iter()
        .zip(results)
        .zip(setups)
        .map(|((j, r), setup)| {
            let (p, size) = setup?;
            match j.inputs.profile.rootfs.size {
                Size::Auto => build_again(&j.inputs, j.dir, &j.rep, size, &p, r),
                Size::Bytes(_) => r,
            }
        })
        .collect())
}

fn build_sized(
    inp: &BuildInputs,
    dir: &Path,
    rep: &Reporter,
    fs_size: u64,
    min_inodes: u64,
    mut prepared: Vec<crate::packages::install::Prepared>,
    tap: Option<Tap>,
) -> Result<BuildReport> {
    let d = inp.derivation;
    let fs_uuid = ids::uuid(d, "ssd.root.fs-uuid");
    let part_guid = ids::uuid(d, "ssd.root.partition-guid");
    let disk_guid = ids::uuid(d, "ssd.disk-guid");
    let boot_volume_id = ids::u32_id(d, "sd.boot.volume-id");

    let p = inp.profile;
    let fs_size = fs_size / 4096 * 4096;
    let (first_lba, last_lba, disk_size) = crate::disk::gpt::layout(fs_size);
    let ssd_path = dir.join("ssd.img");
    let ssd = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&ssd_path)
        .with_context(|| format!("{}: cannot create", ssd_path.display()))?;
    ssd.set_len(disk_size)
        .with_context(|| format!("{}: cannot size the image", ssd_path.display()))?;

    // Times the tool sets itself come from SOURCE_DATE_EPOCH or the tarball's newest mtime,
    // known only after the stream: the writer takes the final value at finish.
    let provisional_ts = inp.timestamp.unwrap_or(0);
    let opts = Ext4Options {
        size: fs_size,
        bytes_per_inode: u64::from(p.rootfs.bytes_per_inode),
        min_inodes,
        features: p.rootfs.features,
        uuid: *fs_uuid.as_bytes(),
        hash_seed: *ids::uuid(d, "ssd.root.hash-seed").as_bytes(),
        label: p.rootfs.label.clone(),
        timestamp: provisional_ts,
        journal_blocks: None,
    };
    let mut writer = Ext4Writer::create(
        ssd.try_clone()
            .context("cannot duplicate the ssd.img handle")?,
        first_lba * SECTOR,
        &opts,
    )?;
    // A file that does not fit is counted, not fatal, until `check_room` after the packages:
    // the error then says how much the whole build lacked.
    writer.read_on_when_full();

    // The one pass over the tarball (or this build's share of one, with its own bar).
    let (mut stream, bar) = match tap {
        Some(t) => (Stream::Shared(t), indicatif::ProgressBar::hidden()),
        None => {
            rep.step(format!("importing {}", inp.tarball.display()));
            let total = std::fs::metadata(inp.tarball)
                .with_context(|| format!("{}: cannot stat", inp.tarball.display()))?
                .len();
            let bar = rep.bytes_bar(total, "import");
            let bar2 = bar.clone();
            let s = open_tarball(
                inp.tarball,
                inp.tarball_sha256,
                Box::new(move |n| bar2.set_position(n)),
                &bar,
                rep,
            )?;
            (Stream::Own(s), bar)
        }
    };
    let dir_meta = Meta::new(0o755, 0, 0, Timestamp::from_secs(provisional_ts));
    let mut tree = Tree::new(dir_meta.clone());
    let captured = crate::sections::captured_paths();
    // The packages' metadata (read first): their backup files and the local database are
    // captured.
    let route = |p: &[u8]| {
        if !prepared.is_empty() && crate::packages::install::captured(p, &prepared) {
            import::Route::Capture
        } else {
            crate::rootfs::route(p, &captured)
        }
    };
    let share = match &stream {
        Stream::Shared(t) => t.boot_share(),
        Stream::Own(_) => Default::default(),
    };
    let mut report = import::import_shared(
        &mut stream,
        &mut tree,
        &mut writer,
        &route,
        &dir_meta,
        &share,
    )
    .with_context(|| format!("{}: import failed", inp.tarball.display()))?;
    drop(share);
    let (sha, _) = stream.finish()?;
    bar.finish_and_clear();
    if sha != inp.tarball_sha256 {
        bail!(
            "{}: sha256 is {sha}, but the pin says {}; the cached file changed: delete it and fetch again",
            inp.tarball.display(),
            inp.tarball_sha256
        );
    }
    for w in &report.warnings {
        rep.warn(w);
    }
    rep.detail(format!(
        "{} tar entries, {} MiB of file data",
        report.entries,
        report.file_bytes >> 20
    ));
    let timestamp = inp.timestamp.unwrap_or(report.newest_mtime);
    import::date_implied_dirs(&mut tree, &report, timestamp);
    // Entries a later one replaced: room for the packages.
    writer.reclaim(&tree)?;

    let env = BuildIds {
        timestamp,
        boot_volume_id,
        root_partuuid: part_guid.to_string(),
        root_fs_uuid: fs_uuid.to_string(),
    };
    let mut first_boot = Vec::new();
    if !prepared.is_empty() {
        let strict = inp
            .profile
            .packages
            .as_ref()
            .is_some_and(|p| p.config.strict);
        first_boot = install_packages(
            &mut tree,
            &mut writer,
            &mut prepared,
            &captured,
            (timestamp, strict),
            &mut report,
            rep,
        )?;
    }
    // Whatever did not fit, in the tarball or the packages (they read on past it): the error
    // says how much, and `size = "auto"` builds again that much larger.
    writer.check_room(&tree)?;
    let kernels = kernel_step(
        &mut tree,
        &writer,
        &prepared,
        &p.board.root_modules,
        timestamp,
        &mut report,
        rep,
    )?;
    rep.step("configuring the node");
    let secrets = |name: &str| p.secret(name).map(|s| s.bytes().to_vec());
    let card = p
        .secrets
        .iter()
        .filter(|(_, src)| **src == crate::profile::SecretSource::Card)
        .map(|(name, _)| name.clone());
    let ctx = crate::edit::EditContext::new(timestamp, &secrets).with_card_secrets(card);
    let vars = p.template_vars();
    let preloaded = store_preload(&p.node.docker, &mut writer, rep)?;
    crate::sections::apply_all(
        &mut tree,
        &p.node,
        &ctx,
        &crate::sections::EditInputs {
            boot_volume_id,
            overlays_dir: Path::new("."),
            vars: &vars,
            preloaded: &preloaded,
        },
    )?;
    for n in ctx.take_notes() {
        rep.detail(n);
    }
    for w in ctx.take_warnings() {
        rep.warn(w);
    }
    let card_list = crate::seed::card_list(&ctx);

    // What the image holds, for the SBOM: the local database after the transaction and edits.
    let local_db = crate::packages::db::read_local_from_tree(&tree, &|d| writer.read_data(d))?;

    rep.step("writing the root filesystem");
    writer.set_timestamp(timestamp);
    let ext4 = writer.finish(&tree)?;
    // The journal must read as zeros on the device even when the image is flashed by a
    // tool that skips holes (bmaptool): write them out, as mke2fs does by default.
    let zeros = vec![0u8; 1 << 20];
    for &(off, len) in &ext4.must_be_zero {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64);
            std::os::unix::fs::FileExt::write_all_at(
                &ssd,
                &zeros[..n as usize],
                first_lba * SECTOR + off + done,
            )
            .with_context(|| format!("{}: cannot zero the journal", ssd_path.display()))?;
            done += n;
        }
    }
    crate::disk::gpt::write_gpt(
        &ssd,
        disk_size,
        disk_guid,
        &crate::disk::gpt::GptPartition {
            first_lba,
            last_lba,
            type_guid: crate::disk::gpt::ARM32_ROOT,
            part_guid,
            name: "root".into(),
        },
    )?;
    // ssd.img is complete: hash it (for manifest.json) on another thread while it is flushed
    // and sd.img is written, instead of reading it again after the build.
    let ssd_hash = spawn_hash(&ssd, &ssd_path)?;
    ssd.sync_all()
        .with_context(|| format!("{}: cannot flush", ssd_path.display()))?;

    rep.detail("checking the boot files (initramfs modules, blob layout, boot.txt)");
    // With a kernel module tree in the root, the kernel step made the initramfs fit and the
    // read-back check below decides; the initramfs lint is for roots without one.
    let boot_files: BTreeMap<String, &[u8]> = report
        .boot
        .iter()
        .filter(|(k, _)| kernels.is_none() || k.as_str() != crate::kernel::INITRAMFS)
        .map(|(k, v)| (k.clone(), &v.data[..]))
        .collect();
    let root = p.boot.root.as_deref().unwrap_or(&p.board.root_device);
    for w in crate::lint::lint_boot(&p.board, root, &boot_files) {
        rep.warn(w);
    }

    rep.step("writing the boot card");
    let sd_path = dir.join("sd.img");
    let (boot_files, boot_txt) = write_sd(inp, &report, &env, card_list, &sd_path)?;
    if let Some(kernels) = &kernels {
        let card = check_written_card(&sd_path, &p.board, kernels)?;
        rep.detail(format!(
            "the card: kernel {}, initramfs modules of {}",
            card.kernel,
            card.initramfs.join(", ")
        ));
    }
    let sd = std::fs::File::open(&sd_path)
        .with_context(|| format!("{}: cannot open to hash it", sd_path.display()))?;
    let sd_hash = spawn_hash(&sd, &sd_path)?;
    rep.timing("waiting for the image hashes");
    let mut images = BTreeMap::new();
    for (name, h) in [("ssd.img", ssd_hash), ("sd.img", sd_hash)] {
        let (size, sha256) = h
            .join()
            .map_err(|_| anyhow::anyhow!("the thread hashing {name} crashed"))??;
        images.insert(
            name.to_string(),
            crate::manifest::OutputFile { size, sha256 },
        );
    }
    Ok(BuildReport {
        import: report,
        ext4,
        boot_files,
        boot_txt,
        images,
        first_boot,
        local_db,
        timestamp,
    })
}

/// Hash the finished image `file` on a new thread: its size and sha256.
fn spawn_hash(
    file: &std::fs::File,
    path: &Path,
) -> Result<std::thread::JoinHandle<Result<(u64, String)>>> {
    let f = file
        .try_clone()
        .with_context(|| format!("{}: cannot duplicate the handle", path.display()))?;
    let path = path.to_path_buf();
    Ok(std::thread::spawn(move || {
        crate::source::sha256_open_file(&f, &path, &|_| {})
    }))
}

/// Install the prepared packages into the tree (after the tarball, before the edits), apply
/// their `sysusers.d` files, match the image's alpm hooks against the transaction
/// ([`crate::packages::hooks`]) and write the first-boot unit for the rest
/// ([`crate::packages::firstboot`]). `(timestamp, strict)`: the build's time and
/// `[packages] strict` (refuse what the first boot would have to run).
fn install_packages(
    tree: &mut Tree,
    writer: &mut Ext4Writer,
    prepared: &mut [crate::packages::install::Prepared],
    captured: &[&str],
    (timestamp, strict): (i64, bool),
    report: &mut ImportReport,
    rep: &Reporter,
) -> Result<Vec<String>> {
    use crate::packages::{firstboot, hooks, install};
    rep.step(format!("installing {} packages", prepared.len()));
    let r = install::install_all(tree, writer, prepared, captured, timestamp)?;
    for w in &r.warnings {
        rep.warn(w);
    }
    for f in &r.pacnew {
        rep.warn(format!(
            "{f}: the image's file differs from the package's; pacman's rule keeps it"
        ));
    }
    for f in &r.pacsave {
        rep.warn(format!(
            "{f}: a changed configuration file the new packages no longer ship, saved as pacman does"
        ));
    }
    if !r.handed.is_empty() {
        rep.detail(format!(
            "{} files changed hands between packages (e.g. {} from {} to {})",
            r.handed.len(),
            r.handed[0].0,
            r.handed[0].1,
            r.handed[0].2
        ));
    }
    report.boot.extend(r.boot);
    let no_secrets = |_: &str| -> Result<Vec<u8>> { bail!("no secrets here") };
    let ctx = crate::edit::EditContext::new(timestamp, &no_secrets);
    let sysusers: Vec<String> = prepared
        .iter()
        .flat_map(|p| &p.entries)
        .filter(|(path, dir)| {
            !dir && path.starts_with(firstboot::SYSUSERS_DIR.as_bytes()) && path.ends_with(b".conf")
        })
        .map(|(path, _)| crate::tree::display(path))
        .collect();
    for n in firstboot::apply_sysusers(tree, &ctx, &sysusers)? {
        rep.detail(n);
    }
    let installed: Vec<firstboot::Installed> = prepared
        .iter()
        .map(|p| firstboot::Installed {
            name: p.fetched.pin.name.clone(),
            version: p.fetched.pin.version.clone(),
            upgrades: p.fetched.pin.upgrades.clone(),
            has_scriptlet: p.scriptlet.is_some(),
        })
        .collect();
    // The image's alpm hooks the transaction triggers (packages::hooks).
    let mut deferred = Vec::new();
    let mut pre = Vec::new();
    for (hook, d) in hooks::plan(&hook_files(tree, writer)?, &r.changes)? {
        match d {
            hooks::Disposition::Native(what) => rep.detail(format!(
                "alpm hook {}: done at build time: {what}",
                hook.name
            )),
            hooks::Disposition::PreTransaction => pre.push(hook.name),
            hooks::Disposition::Deferred(targets) => deferred.push(firstboot::DeferredHook {
                name: hook.name,
                exec: hook.exec,
                targets: hook.needs_targets.then_some(targets),
            }),
        }
    }
    let reviewed: Vec<String> = installed
        .iter()
        .filter(|i| i.has_scriptlet && firstboot::REVIEWED_SCRIPTLETS.contains(&i.name.as_str()))
        .map(|i| format!("{}-{}", i.name, i.version))
        .collect();
    if strict && (!deferred.is_empty() || !reviewed.is_empty()) {
        let names: Vec<String> = deferred
            .iter()
            .map(|h| format!("alpm hook {} ({})", h.name, h.exec))
            .chain(
                reviewed
                    .iter()
                    .map(|s| format!("the .INSTALL scriptlet of {s}")),
            )
            .collect();
        bail!(
            "[packages] strict = true: the node's first boot would have to run {}; drop the \
             package that brings it, or set strict = false",
            names.join(", ")
        );
    }
    for name in &pre {
        rep.warn(format!(
            "alpm hook {name}: a PreTransaction hook the packages trigger; pacman would have run it before the transaction, the build cannot"
        ));
    }
    // What the first boot runs, for the warnings and the manifest (`hc1img plan` shows it).
    let mut first_boot = Vec::new();
    for h in &deferred {
        let runs = format!(
            "runs {:?}{}",
            h.exec,
            match &h.targets {
                Some(t) => format!(" with {} targets on stdin", t.len()),
                None => String::new(),
            }
        );
        rep.warn(format!(
            "alpm hook {}: deferred to the first boot (hc1-pacman-deferred.service {runs})",
            h.name
        ));
        first_boot.push(format!("alpm hook {}: {runs}", h.name));
    }
    first_boot.extend(
        reviewed
            .iter()
            .map(|s| format!("{s}: its .INSTALL scriptlet (reviewed)")),
    );
    let skipped = firstboot::write_deferred(
        tree,
        &ctx,
        &installed,
        firstboot::REVIEWED_SCRIPTLETS,
        &deferred,
    )?;
    for s in skipped {
        rep.warn(format!(
            "{s}: its .INSTALL scriptlet is not on the reviewed list and will not run (packages::firstboot::REVIEWED_SCRIPTLETS)"
        ));
    }
    rep.detail(format!("installed {}", r.installed.join(" ")));
    Ok(first_boot)
}

/// Stream `[docker] preload`'s archives into the root filesystem's data area (never whole in
/// memory); the docker section puts them in place ([`crate::sections::docker`]).
fn store_preload(
    docker: &crate::sections::docker::Config,
    writer: &mut Ext4Writer,
    rep: &Reporter,
) -> Result<Vec<(String, crate::tree::FileData)>> {
    let mut out = Vec::new();
    if !docker.enable {
        return Ok(out);
    }
    for path in &docker.preload {
        let shown = format!("docker.preload: {}", path.display());
        let name = crate::sections::docker::preload_name(path)
            .ok_or_else(|| anyhow::anyhow!("{shown}: not a usable file name"))?;
        let mut f = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
        let len = f
            .metadata()
            .with_context(|| format!("{shown}: cannot stat"))?
            .len();
        // The length measured now: a file that shrinks while it is read is an error (the
        // derivation hashed it before the build; it must not change during one).
        let data = writer
            .write_data(&mut f, len)
            .with_context(|| format!("{shown}: cannot store it in the image"))?;
        rep.detail(format!(
            "preloaded {name} ({} MiB): loaded at the first boot by hc1-docker-preload.service",
            len >> 20
        ));
        out.push((name, crate::tree::FileData::Stored(data)));
    }
    Ok(out)
}

/// The image's alpm hook files in pacman's `HookDir` order (`usr/share/libalpm/hooks`, then
/// `etc/pacman.d/hooks`): file name and text, `None` for a hook disabled by a link to
/// `/dev/null` ([`crate::packages::hooks`]).
fn hook_files(tree: &Tree, writer: &Ext4Writer) -> Result<Vec<(String, Option<String>)>> {
    use crate::tree::NodeKind;
    let mut out = Vec::new();
    for dir in ["usr/share/libalpm/hooks", "etc/pacman.d/hooks"] {
        let Some(id) = tree.lookup(dir.as_bytes()) else {
            continue;
        };
        for (name, child) in tree.children(id) {
            let name = crate::tree::display(name);
            if !name.ends_with(".hook") {
                continue;
            }
            match &tree.node(child).kind {
                NodeKind::Symlink(t) if t.as_slice() == b"/dev/null" => out.push((name, None)),
                NodeKind::File(data) => {
                    let bytes = writer
                        .read_data(data)
                        .with_context(|| format!("/{dir}/{name}: cannot read it back"))?;
                    let text = String::from_utf8(bytes)
                        .map_err(|_| anyhow::anyhow!("/{dir}/{name}: not UTF-8 text"))?;
                    out.push((name, Some(text)));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// What the kernel hooks would do after the transaction ([`crate::kernel`]): module indexes
/// for the module trees the packages touched (or that lack them), and an initramfs on the card
/// for the card's kernel with the root device's modules.
fn kernel_step(
    tree: &mut Tree,
    writer: &Ext4Writer,
    prepared: &[crate::packages::install::Prepared],
    root_modules: &[String],
    timestamp: i64,
    report: &mut ImportReport,
    rep: &Reporter,
) -> Result<Option<BTreeMap<String, crate::kmod::Depmod>>> {
    use crate::kernel;
    if kernel::module_trees(tree).is_empty() {
        return Ok(None);
    }
    rep.step("indexing kernel modules");
    let touched = kernel::touched_releases(
        prepared
            .iter()
            .flat_map(|p| p.entries.iter().filter(|(_, dir)| !dir))
            .map(|(path, _)| path.as_slice()),
    );
    let read = |d: &crate::tree::FileData| writer.read_data(d);
    let no_secrets = |_: &str| -> Result<Vec<u8>> { bail!("no secrets here") };
    let ctx = crate::edit::EditContext::new(timestamp, &no_secrets);
    let indexed = kernel::index_modules(tree, &ctx, &touched, &read)?;
    for r in &indexed.written {
        rep.detail(format!(
            "/{}/{r}/: module indexes written",
            kernel::MODULES_DIR
        ));
    }
    if let Some(note) = kernel::card_initramfs(
        &mut report.boot,
        tree,
        &indexed.kernels,
        root_modules,
        &read,
    )? {
        // Seen without -v: the card does not carry the tarball's initramfs as it was.
        rep.step(note);
    }
    Ok(Some(indexed.kernels))
}

/// [`crate::kernel::check_card`] on the written `sd.img`: its `zImage` and initramfs read
/// back from the FAT volume.
fn check_written_card(
    path: &Path,
    board: &crate::profile::Board,
    kernels: &BTreeMap<String, crate::kmod::Depmod>,
) -> Result<crate::kernel::CardKernel> {
    use crate::kernel::{INITRAMFS, ZIMAGE, check_card};
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let vol = crate::fat::read_fat32(
        &file,
        board.sd.first_sector * SECTOR,
        board.sd.partition_size.0,
        &path.display().to_string(),
    )?;
    let get = |name: &str| vol.entries.iter().find(|e| !e.is_dir && e.path == name);
    let Some(zimage) = get(ZIMAGE) else {
        bail!("{}: the card has no {ZIMAGE}", path.display());
    };
    let initramfs = get(INITRAMFS).map(|e| e.data.as_slice());
    let release = crate::kernel_image::zimage_version(&zimage.data)
        .with_context(|| format!("{}: /{ZIMAGE}", path.display()))?;
    let builtin = |m: &str| kernels.get(&release).is_some_and(|d| d.is_builtin(m));
    check_card(&zimage.data, initramfs, &board.root_modules, &builtin)
        .with_context(|| format!("{}: the card would not find its root", path.display()))
}

/// Write `sd.img`: MBR, blobs, FAT with the boot files plus `boot.txt`, `boot.scr` and a
/// `mkscr` that still works on the node.
fn write_sd(
    inp: &BuildInputs,
    report: &ImportReport,
    env: &BuildIds,
    card_list: Option<String>,
    path: &Path,
) -> Result<(Vec<String>, String)> {
    let board = &inp.profile.board;
    let sd = &board.sd;
    let sizes: BTreeMap<String, u64> = report
        .boot
        .iter()
        .map(|(k, v)| (k.clone(), v.data.len() as u64))
        .collect();
    board.check_blob_layout(&sizes)?;
    if let Some(script) = &sd.fusing_script {
        let Some(f) = report.boot.get(script) else {
            bail!(
                "the tarball's /boot has no {script}, which board {} says to check the blob sectors against",
                board.name
            );
        };
        board.check_fusing_script(&String::from_utf8_lossy(&f.data))?;
    }
    // The contents are the import's own (shared) copies, not copied again.
    let blobs: BTreeMap<String, Arc<[u8]>> = sd
        .blobs
        .iter()
        .filter_map(|b| {
            report
                .boot
                .get(&b.file)
                .map(|f| (b.file.clone(), f.data.clone()))
        })
        .collect();
    let mut files: BTreeMap<String, Arc<[u8]>> = report
        .boot
        .iter()
        .map(|(k, v)| (k.clone(), v.data.clone()))
        .collect();
    let boot_txt = inp.profile.boot_txt(Some(&env.root_partuuid))?;
    let ts = u32::try_from(env.timestamp.max(0)).unwrap_or(u32::MAX);
    files.insert("boot.txt".into(), Arc::from(boot_txt.as_bytes()));
    files.insert(
        "boot.scr".into(),
        crate::uboot::script_image(boot_txt.as_bytes(), crate::uboot::DEFAULT_SCRIPT_NAME, ts)
            .into(),
    );
    files.insert("mkscr".into(), Arc::from(MKSCR));
    if let Some(list) = card_list {
        files.insert(crate::seed::CARD_LIST.into(), Arc::from(list.into_bytes()));
    }
    crate::disk::sd::write_sd_image(
        path,
        &crate::disk::sd::SdImage {
            disk_signature: ids::u32_id(inp.derivation, "sd.disk-signature"),
            first_partition_sector: sd.first_sector,
            fat_bytes: sd.partition_size.0,
            env_area: sd.env_area.as_ref().map(|e| (e.sector, e.sectors)),
            slots: &sd.blobs,
            blobs: &blobs,
            fat: &crate::fat::FatOptions {
                label: "BOOT".into(),
                volume_id: env.boot_volume_id,
                timestamp: env.timestamp,
            },
            files: &files,
        },
    )?;
    Ok((files.keys().cloned().collect(), boot_txt))
}

/// `/boot/mkscr` on the card: recompiles boot.scr after an edit of boot.txt on the node.
const MKSCR: &[u8] = b"#!/bin/sh\n# Recompile boot.scr after editing boot.txt (run in /boot; needs uboot-tools).\ncd \"$(dirname \"$0\")\" && mkimage -A arm -O linux -T script -C none -n \"U-Boot boot script\" -d boot.txt boot.scr\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::install::PkgInfo;
    use crate::packages::{Fetched, PackagePin};

    fn prepared(name: &str, size: &str, upgrades: Option<&str>) -> Prepared {
        let pin = PackagePin {
            name: name.into(),
            version: "2-1".into(),
            reason: "explicit".into(),
            repo: "core".into(),
            filename: format!("{name}-2-1-armv7h.pkg.tar.zst"),
            sha256: "0".repeat(64),
            size: None,
            url: String::new(),
            upgrades: upgrades.map(String::from),
            removes: Vec::new(),
            frees: None,
            signature: None,
            signer: None,
        };
        Prepared {
            fetched: Fetched {
                pin,
                path: "/nonexistent".into(),
            },
            info: PkgInfo::parse(&format!("pkgname = {name}\npkgver = 2-1\nsize = {size}\n")),
            backup_paths: Default::default(),
            mtree: None,
            scriptlet: None,
            entries: Vec::new(),
            files: Vec::new(),
            backup: BTreeMap::new(),
            fast: None,
            fast_warning: None,
        }
    }

    #[test]
    fn packages_count_what_they_install_minus_what_they_replace() {
        let local = BTreeMap::from([("up-1-1".to_string(), 80u64)]);
        let p = [
            prepared("new", "100", None),
            prepared("up", "50", Some("1-1")),
            // Not in the local database: nothing to subtract; no size: nothing to add.
            prepared("gone", "7", Some("0-1")),
            prepared("bad", "lots", None),
        ];
        assert_eq!(packages_net(&p, &local), 100 + 50 - 80 + 7);
        // Upgrades that shrink the root.
        let local = BTreeMap::from([("up-1-1".to_string(), 500u64)]);
        assert_eq!(packages_net(&p[1..2], &local), -450);
    }

    #[test]
    fn a_retry_grows_by_what_was_missing() {
        let too_small = |blocks, inodes| {
            anyhow::Error::new(crate::ext4::TooSmall {
                message: "short".into(),
                blocks,
                inodes,
            })
            .context("building")
        };
        let mib = 1u64 << 20;
        // 1000 blocks (3.9 MiB) missing: + 30% and 64 MiB, rounded to 64 MiB.
        assert_eq!(
            grown(&too_small(1000, 0), 896 * mib, 5000),
            Some((1024 * mib, 5000))
        );
        // 250 MiB missing: 896 + 325 + 64 = 1285 -> 1344 MiB.
        assert_eq!(
            grown(&too_small(64000, 0), 896 * mib, 0),
            Some((1344 * mib, 0))
        );
        // Inodes: those needed + 10% + 4096, and a block for each.
        let (size, inodes) = grown(&too_small(0, 150_000), 320 * mib, 1000).unwrap();
        assert_eq!(inodes, 150_000 + 15_000 + 4096);
        assert!(size >= inodes * 4096 + (256 << 20) && size % (64 * mib) == 0);
        assert_eq!(grown(&anyhow::anyhow!("other"), 896 * mib, 0), None);
    }
}
