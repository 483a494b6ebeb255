//! The `hc1img` command line: parse arguments, call the library, print an error as one line
//! (`error: what: why`); `diff` exits like diff(1) (0 same, 1 different, 2 trouble).

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use hc1img::commands::{self, CommonArgs, Compress, TrustArgs};
use hc1img::progress::{Reporter, Verbosity};

/// Build ready-to-boot disk images for Odroid HC1 nodes running Arch Linux ARM.
///
/// A profile (TOML) names a pinned root tarball and how to configure the node; `hc1img build`
/// turns it into `ssd.img` (GPT + ext4 root, for the SATA SSD) and `sd.img` (bootloader +
/// FAT /boot, for the microSD), without root, loop devices or mkfs. Write them with
/// `hc1img flash sd.img /dev/sdX` (and the same for ssd.img).
#[derive(Parser, Debug)]
#[command(name = "hc1img", version, about, long_about)]
struct Cli {
    /// Print only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Explain what is decided and why.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by the commands that resolve a profile.
#[derive(Args, Debug)]
struct ProfileArgs {
    /// The profile file, e.g. profiles/worker.toml.
    profile: PathBuf,
    /// Use this tarball instead of the profile's pinned source (http(s)://, file:// or a path).
    #[arg(long, requires = "source_sha256", value_name = "URL")]
    source_url: Option<String>,
    /// The sha256 of the --source-url tarball (64 hex digits).
    #[arg(long, requires = "source_url", value_name = "HEX")]
    source_sha256: Option<String>,
    /// Read the secret NAME from FILE instead of the file the profile names (repeatable).
    #[arg(long = "secret", value_name = "NAME=FILE")]
    secrets: Vec<String>,
    /// Leave out the profile's [packages] (for a tarball the packages were not pinned
    /// against, e.g. a test tarball).
    #[arg(long)]
    no_packages: bool,
    #[command(flatten)]
    trust: TrustFlags,
    /// Refuse to change the lock file (as `cargo build --locked`): fail when a pin is missing
    /// or stale instead of locking on first use.
    #[arg(long)]
    locked: bool,
}

/// Where fetched files come from and who must have signed them.
#[derive(Args, Debug)]
struct TrustFlags {
    /// Try this mirror first for every file fetched (tarball, signatures, databases, packages),
    /// laid out like Arch Linux ARM's (`os/<tarball>`, `<arch>/<repo>/<file>`, what
    /// `hc1img vendor` writes): http(s)://, file:// or a directory. Repeatable; also
    /// HC1IMG_MIRROR (space-separated), tried after these.
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    /// Check the tarball's and the packages' signatures against this armored or binary OpenPGP
    /// key file instead of the profile's keyring (default: the built-in Arch Linux ARM key).
    #[arg(long, env = "HC1IMG_KEYRING", value_name = "FILE")]
    keyring: Option<PathBuf>,
}

impl TrustFlags {
    fn args(self, locked: bool) -> TrustArgs {
        TrustArgs {
            mirrors: self.mirrors,
            keyring: self.keyring,
            locked,
        }
    }
}

impl ProfileArgs {
    fn common(self) -> CommonArgs {
        CommonArgs {
            profile: self.profile,
            source_url: self.source_url,
            source_sha256: self.source_sha256,
            secrets: self.secrets,
            no_packages: self.no_packages,
            trust: self.trust.args(self.locked),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build ssd.img, sd.img and manifest.json for a profile.
    ///
    /// Without --out the images go to out/<profile>-<hash>/ (hash = first 12 hex digits of the
    /// derivation hash) and out/<profile> points at the newest build; an existing complete
    /// build of the same inputs is reused at once.
    Build {
        #[command(flatten)]
        profile: ProfileArgs,
        /// More profiles to build in the same run, each into its own out/ directory (not with
        /// --out); those that share a source are built from one pass over its tarball.
        #[arg(value_name = "PROFILE")]
        more: Vec<PathBuf>,
        /// Write the outputs to DIR instead of the content-addressed out/ store.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Build even when a complete output for these inputs exists.
        #[arg(long)]
        rebuild: bool,
        /// Also write compressed images (ssd.img.zst/sd.img.zst or .xz), bmaptool block maps
        /// (ssd.img.bmap, sd.img.bmap) and SHA256SUMS, all listed in manifest.json. Flash with
        /// `hc1img flash sd.img.zst /dev/sdX`. The bytes are reproducible
        /// (zstd level 9 or xz preset 6, on up to 4 cores; the same bytes for any number of
        /// cores). The images do not depend on this flag:
        /// when the out/ directory of these inputs already exists without the compressed
        /// files, they are made from its images instead of building again.
        #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Compress::None)]
        compress: Compress,
        /// Sign the build's SHA256SUMS (written even without --compress) with this OpenPGP
        /// secret key (armored or binary, as `gpg --export-secret-keys` writes it; a protected
        /// key's passphrase in HC1IMG_SIGN_PASSPHRASE): writes SHA256SUMS.sig and prints
        /// `FINGERPRINT  PATH`. The key is read before any work; the images and the manifest
        /// do not depend on it.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Show the resolved profile, every input with its digest, and the derivation hash.
    /// Fetches and builds nothing.
    Plan {
        #[command(flatten)]
        profile: ProfileArgs,
        /// Print JSON (top-level field `derivation`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Download and verify the profile's pinned source and packages into the cache (locking on
    /// first use, like build).
    Fetch {
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Re-pin: download the current tarball at the profile's URL and verify its signature,
    /// resolve [packages] against the repositories' current databases and verify every
    /// package's signature, and write it all to the lock file. Every profile next to that lock
    /// file is re-locked in the same resolution, so they share one tarball pin and one package
    /// snapshot.
    Lock {
        /// Profile files or directories (default: profiles/); each selects every profile next
        /// to its lock file.
        profiles: Vec<PathBuf>,
        #[command(flatten)]
        trust: TrustFlags,
    },
    /// Copy every pinned input of the profiles (the tarball and its signature, each package
    /// and its signature) into DIR laid out like an Arch Linux ARM mirror, with a repository
    /// database made for them; `--mirror file://DIR` then builds with upstream gone.
    Vendor {
        /// Where to write the tree (created; files already there with the same bytes are kept).
        dir: PathBuf,
        /// The profiles (default: every profile next to profiles/hc1img.lock).
        profiles: Vec<PathBuf>,
        #[command(flatten)]
        trust: TrustFlags,
    },
    /// Describe a built image: partition table, filesystems, labels, UUIDs and bootloader
    /// blobs, as a check before flashing; or, with --sbom, what a build's images hold.
    Inspect {
        /// ssd.img or sd.img; with --sbom, an output directory (or its sbom.spdx.json).
        image: PathBuf,
        /// Print the build's software bill of materials (sbom.spdx.json, SPDX 2.3) as a table:
        /// the tarball, then every installed package with its version, architecture, licence,
        /// the pinned package file's sha256 and its signer.
        #[arg(long)]
        sbom: bool,
    },
    /// What differs between two builds: root filesystem paths added, removed, changed in
    /// content or metadata, and boot files — check a profile or tarball change before flashing.
    Diff {
        /// The older output directory.
        a: PathBuf,
        /// The newer output directory.
        b: PathBuf,
    },
    /// Re-hash a build's outputs against its manifest.json and report any that differ; with
    /// --keyring, also check SHA256SUMS.sig against the key, every file SHA256SUMS lists, and
    /// each listed manifest against SHA256SUMS (an output directory or a release's files).
    Verify {
        /// An output directory (containing manifest.json), or a directory of release files
        /// (with SHA256SUMS and SHA256SUMS.sig).
        dir: PathBuf,
        /// The OpenPGP public key (armored or binary) the release must be signed with; a
        /// missing or bad signature is an error.
        #[arg(long, value_name = "FILE")]
        keyring: Option<PathBuf>,
    },
    /// Sign DIR/SHA256SUMS with an OpenPGP secret key into DIR/SHA256SUMS.sig (a detached
    /// binary signature, checked by `gpgv` and `hc1img verify --keyring`). In an output
    /// directory without SHA256SUMS, it is written from manifest.json first; every file it
    /// lists is hashed again before signing. Prints `FINGERPRINT  PATH`.
    Sign {
        /// An output directory, or a directory of release files with its SHA256SUMS.
        dir: PathBuf,
        /// The secret key (armored or binary, as `gpg --export-secret-keys` writes it; a
        /// protected key's passphrase in HC1IMG_SIGN_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Write an image to a card or disk: only the blocks its block map lists (every byte
    /// without one), then flush, read them back and compare their SHA-256.
    ///
    /// IMAGE is an sd.img, ssd.img or seeded sd-NODE.img, plain or .zst/.xz; its block map is
    /// found beside it as bmaptool finds it (IMAGE.bmap, then with each extension taken off:
    /// sd.img.bmap for sd.img.zst). Refused, naming the reason, before anything is written:
    /// a device that is mounted (it or a partition), holds the running system's root
    /// filesystem or swap, is in use (device-mapper, RAID, another program) or read-only,
    /// or is not a block device or regular file; without --force, a device larger than 2 TiB,
    /// a partition, or a fixed disk (not removable, not on USB or an SD card reader).
    Flash {
        /// The image: sd.img, ssd.img, sd-NODE.img, or their .zst/.xz.
        image: PathBuf,
        /// The card or disk (/dev/sdX, /dev/mmcblkN; `lsblk` lists them), or an existing file.
        device: PathBuf,
        /// The block map to use instead of the one found beside IMAGE.
        #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
        bmap: Option<PathBuf>,
        /// Write every byte of the image, without a block map.
        #[arg(long)]
        no_bmap: bool,
        /// Write to a device larger than 2 TiB, a partition or a fixed disk (never to a
        /// mounted or busy one, nor to the one holding the running system).
        #[arg(long)]
        force: bool,
    },
    /// Write copies of a built sd.img, one per node, each carrying that node's own values
    /// (host name, static address, secrets) for its boot, so every node of a role shares one
    /// public, secret-free ssd.img and sd.img.
    #[command(after_help = SEED_HELP)]
    Seed {
        /// A built sd.img (left unchanged).
        sd_img: PathBuf,
        /// Where to write the seeded copy (one node), or a directory for sd-HOSTNAME.img
        /// (several). Default: sd-HOSTNAME.img in the current directory.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// A node's host name (repeatable: one seeded card per host name).
        #[arg(long)]
        hostname: Vec<String>,
        /// Static address of the first Ethernet port, ADDRESS/PREFIX (default: DHCP); with
        /// several --hostname, one --address each, in the same order.
        #[arg(long)]
        address: Vec<String>,
        /// Gateway for --address.
        #[arg(long)]
        gateway: Option<String>,
        /// DNS server for --address (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// A Docker engine label for the node(s), KEY=VALUE (repeatable): added to the
        /// profile's [swarm] labels (or overriding one with the same key) at first boot.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A secret for the node(s), NAME=FILE: any secret the profile declares without
        /// `bake = true` (the card's hc1img-secrets.txt lists them). The file must not be
        /// world-readable; the node moves it into place and erases it from the card.
        #[arg(long = "secret", value_name = "NAME=FILE")]
        secrets: Vec<String>,
        /// Also write the seeded card to DEVICE as `hc1img flash` does (one --hostname).
        /// Without --output the seeded copy is a private temporary file, removed afterwards.
        #[arg(long, value_name = "DEVICE")]
        flash: Option<PathBuf>,
        /// With --flash: write to a device larger than 2 TiB, a partition or a fixed disk.
        #[arg(long, requires = "flash")]
        force: bool,
    },
}

/// `hc1img seed --help`: the bootstrap order (the same as README.md's).
const SEED_HELP: &str = "\
Bootstrap a cluster (the images hold no secrets; each card brings its node's):
  1. hc1img build profiles/leader.toml profiles/manager.toml profiles/worker.toml
  2. flash the leader's ssd.img and sd.img as they are and boot it: it runs `docker swarm init`
  3. on the leader: docker swarm join-token -q manager > manager-token
                    docker swarm join-token -q worker  > worker-token   (chmod 600 both)
  4. hc1img seed out/worker/sd.img --hostname hc1-w1 --hostname hc1-w2 \\
         --secret swarm_worker_token=worker-token -o cards/
     hc1img seed out/manager/sd.img --hostname hc1-manager-2 \\
         --secret swarm_manager_token=manager-token
     (add --secret admin_password_hash=FILE, mail_password=FILE, … as the profile declares)
  5. flash each node's ssd.img and its own seeded card; at boot it takes its secrets, erases
     them from the card and joins. A node without a token boots and waits: seed its card later,
     or copy the token to /var/lib/hc1img/secrets/swarm-token (mode 600).";

fn main() -> ExitCode {
    // Before any thread starts: an interrupted build removes its staging directory.
    if let Err(e) = hc1img::store::remove_staging_on_signals() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let rep = Reporter::new(verbosity);
    let result = match cli.command {
        Command::Build {
            profile,
            out,
            rebuild,
            compress,
            more,
            sign_key,
        } => {
            let first = profile.common();
            let mut all = vec![first.clone()];
            all.extend(more.into_iter().map(|p| commands::CommonArgs {
                profile: p,
                ..first.clone()
            }));
            commands::build_all(&all, out, rebuild, compress, sign_key.as_deref(), &rep).map(|_| ())
        }
        Command::Plan { profile, json } => commands::plan(&profile.common(), json),
        Command::Fetch { profile } => commands::fetch(&profile.common(), &rep),
        Command::Lock { profiles, trust } => commands::lock(&profiles, &trust.args(false), &rep),
        Command::Vendor {
            dir,
            profiles,
            trust,
        } => commands::vendor(&dir, &profiles, &trust.args(false), &rep),
        Command::Inspect { image, sbom } => commands::inspect(&image, sbom),
        // Exit like diff(1): 0 same, 1 different, 2 trouble.
        Command::Diff { a, b } => match commands::diff(&a, &b) {
            Ok(false) => Ok(()),
            Ok(true) => return ExitCode::from(1),
            Err(e) => {
                print_error(&e);
                return ExitCode::from(2);
            }
        },
        Command::Verify { dir, keyring } => commands::verify(&dir, keyring.as_deref(), &rep),
        Command::Sign { dir, key } => commands::sign(&dir, &key, &rep),
        Command::Flash {
            image,
            device,
            bmap,
            no_bmap,
            force,
        } => {
            let map = match (bmap, no_bmap) {
                (Some(f), _) => hc1img::flash::MapChoice::File(f),
                (None, true) => hc1img::flash::MapChoice::Whole,
                (None, false) => hc1img::flash::MapChoice::Beside,
            };
            hc1img::flash::flash(&image, &device, &map, force, &rep)
        }
        Command::Seed {
            sd_img,
            output,
            hostname,
            address,
            gateway,
            dns,
            labels,
            secrets,
            flash,
            force,
        } => commands::seed(
            &sd_img,
            output,
            &hostname,
            &address,
            hc1img::seed::Seed {
                hostname: None,
                address: None,
                gateway,
                dns,
                labels,
                secrets: Vec::new(),
            },
            &secrets,
            flash.as_deref().map(|d| (d, force)),
            &rep,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// One line, `error: what: why` (the context chain joined by `: `), with any control
/// character that reached a message escaped so it cannot drive the terminal.
fn print_error(e: &anyhow::Error) {
    let text = format!("{e:#}");
    let shown: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect();
    eprintln!("error: {shown}");
}
