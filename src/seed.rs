//! `hc1img seed`: per-node values on the microSD card, so the images stay identical across
//! nodes and free of secrets (like cloud-init's NoCloud seed, without cloud-init).
//!
//! Reads a built `sd.img`'s FAT partition (found through the first MBR entry,
//! [`crate::disk::window`]) with [`crate::fat::read_fat32`] and writes a copy whose FAT is
//! that volume written again by [`crate::fat::write_fat32`] with the directory
//! `hc1img-seed/` added: `seed.conf` (`key=value` lines: `hostname`, `address`, `gateway`,
//! `dns`, and one `label=KEY=VALUE` per engine label) and `secrets/NAME` files. Everything outside the partition (MBR, bootloader blobs,
//! the U-Boot environment area) is copied as it is, holes stay holes, and when the input has
//! a block map (`sd.img.bmap`) the copy gets its own ([`crate::disk::bmap`]), covering what
//! `sd.img`'s covers: the FAT metadata is mapped in full by the same
//! [`crate::disk::sd::map_boot_partition`], so the seeded card flashes onto used media.
//!
//! The card accepts the secrets listed in its `hc1img-secrets.txt` ([`CARD_LIST`]): the
//! ones its profile does not bake, which the node's boot puts in place
//! (`hc1-card-secrets`, see [`crate::sections::firstboot`]) and erases from the card.
//! A seeded copy holds secrets: it is written mode 0600, through a temporary name renamed
//! into place.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::disk::SECTOR;
use crate::disk::window::first_mbr_partition;
use crate::profile::SecretSource;

/// The seed directory on the card's FAT partition.
pub const SEED_DIR: &str = "hc1img-seed";

/// What `hc1img seed` writes.
#[derive(Debug, Default)]
pub struct Seed {
    pub hostname: Option<String>,
    /// `ADDRESS/PREFIX` for the first Ethernet port (systemd-networkd `Address=`).
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
    /// `KEY=VALUE` Docker engine labels (`--label`), added to (or overriding) the profile's
    /// `[swarm] labels` in `daemon.json` at first boot.
    pub labels: Vec<String>,
    /// `(name, file)`: secret files to put under `secrets/`.
    pub secrets: Vec<(String, std::path::PathBuf)>,
}

fn check_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    if !ok {
        bail!("--hostname {h:?}: use 1-63 lower-case letters, digits and inner `-`");
    }
    Ok(())
}

fn check_ip(flag: &str, v: &str, with_prefix: bool) -> Result<()> {
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {v:?} is not an IP address"))?;
    match (with_prefix, prefix) {
        (true, Some(p)) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match p.parse::<u8>() {
                Ok(n) if n <= max => Ok(()),
                _ => bail!("{flag} {v:?}: the prefix length must be 0-{max}"),
            }
        }
        (true, None) => bail!("{flag} {v:?} needs a prefix length, e.g. 192.168.1.31/24"),
        (false, Some(_)) => bail!("{flag} {v:?} takes a plain address, without /prefix"),
        (false, None) => Ok(()),
    }
}

/// The text of `seed.conf`.
pub fn seed_conf(seed: &Seed) -> Result<String> {
    let mut s = String::from("# Written by `hc1img seed`; read once by the node's first boot.\n");
    if let Some(h) = &seed.hostname {
        check_hostname(h)?;
        s.push_str(&format!("hostname={h}\n"));
    }
    if let Some(a) = &seed.address {
        check_ip("--address", a, true)?;
        s.push_str(&format!("address={a}\n"));
    }
    if let Some(g) = &seed.gateway {
        if seed.address.is_none() {
            bail!("--gateway needs --address (a static address)");
        }
        check_ip("--gateway", g, false)?;
        s.push_str(&format!("gateway={g}\n"));
    }
    if !seed.dns.is_empty() {
        if seed.address.is_none() {
            bail!("--dns needs --address (a static address)");
        }
        for d in &seed.dns {
            check_ip("--dns", d, false)?;
        }
        s.push_str(&format!("dns={}\n", seed.dns.join(" ")));
    }
    let mut keys = std::collections::BTreeSet::new();
    for l in &seed.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected KEY=VALUE, e.g. --label hc1.disk=ssd");
        };
        crate::sections::swarm::check_label(k, v)
            .map_err(|e| anyhow::anyhow!("--label {l:?}: {e}"))?;
        if !keys.insert(k) {
            bail!("--label {l:?}: {k} is given twice");
        }
        s.push_str(&format!("label={k}={v}\n"));
    }
    Ok(s)
}

/// The list, at the root of a built card's FAT, of the secrets `hc1img seed` may put on it.
pub const CARD_LIST: &str = "hc1img-secrets.txt";

/// The text of [`CARD_LIST`] for the secrets the edits said the node takes from its card
/// (`None` when there are none).
pub fn card_list(ctx: &crate::edit::EditContext) -> Option<String> {
    let names: std::collections::BTreeSet<String> = ctx
        .card_actions
        .borrow()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    if names.is_empty() {
        return None;
    }
    let mut s = String::from(
        "# The secrets this card's node takes from its card, never from the image:\n\
         #   hc1img seed sd.img --hostname NAME --secret SECRET=FILE\n",
    );
    for n in names {
        s.push_str(&n);
        s.push('\n');
    }
    Some(s)
}

/// The secret names a card's [`CARD_LIST`] accepts.
fn accepted(vol: &crate::fat::FatVolume) -> Vec<String> {
    vol.entries
        .iter()
        .find(|e| !e.is_dir && e.path == CARD_LIST)
        .map(|e| {
            String::from_utf8_lossy(&e.data)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Write a copy of `sd_img` with `seed` on its FAT partition to `out` (and `out.bmap` when
/// `sd_img.bmap` exists).
pub fn write_seed(sd_img: &Path, out: &Path, seed: &Seed) -> Result<()> {
    let conf = seed_conf(seed)?;
    let input = File::open(sd_img).with_context(|| format!("{}: cannot open", sd_img.display()))?;
    let len = input
        .metadata()
        .with_context(|| format!("{}: cannot stat", sd_img.display()))?
        .len();
    let (lba, sectors) = first_mbr_partition(&input, sd_img)?;
    let (start, size) = (lba * SECTOR, sectors * SECTOR);
    let vol = crate::fat::read_fat32(&input, start, size, &sd_img.display().to_string())?;
    if vol
        .entries
        .iter()
        .any(|e| e.path == SEED_DIR || e.path.starts_with(&format!("{SEED_DIR}/")))
    {
        bail!(
            "{}: the card already holds a seed ({SEED_DIR}/); seed a fresh sd.img",
            sd_img.display()
        );
    }
    let known = accepted(&vol);
    let mut files = vol.files();
    files.insert(format!("{SEED_DIR}/seed.conf"), conf.into_bytes());
    for (name, file) in &seed.secrets {
        if !known.contains(name) {
            if known.is_empty() {
                bail!(
                    "--secret {name}=…: {} takes no secrets from its card (its profile bakes \
                     every secret it declares, or declares none)",
                    sd_img.display()
                );
            }
            bail!(
                "--secret {name}=…: {} takes only {} from its card (listed in its {CARD_LIST})",
                sd_img.display(),
                known.join(", ")
            );
        }
        let s = crate::profile::secrets::read(name, &SecretSource::File(file.clone()))?;
        files.insert(format!("{SEED_DIR}/secrets/{name}"), s.bytes().to_vec());
    }
    if seed.hostname.is_none() && seed.address.is_none() && seed.secrets.is_empty() {
        bail!("nothing to seed: give --hostname, --address or --secret");
    }
    if out.exists() {
        bail!(
            "{}: already exists; remove it or choose another --output",
            out.display()
        );
    }
    let bmap_in = with_suffix(sd_img, ".bmap");
    let bmap_out = bmap_in.is_file().then(|| with_suffix(out, ".bmap"));
    if let Some(b) = bmap_out.as_ref().filter(|b| b.exists()) {
        bail!(
            "{}: already exists; remove it or choose another --output",
            b.display()
        );
    }
    let tmp = with_prefix(out, ".tmp-");
    let tmp_bmap = bmap_out.as_ref().map(|b| with_prefix(b, ".tmp-"));
    let r = (|| -> Result<()> {
        let f = crate::sparse::create_sparse(&tmp, len)?;
        // It holds secrets: the owner's alone.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("{}: cannot make it private (chmod 600)", tmp.display()))?;
        // Everything outside the FAT partition as it is, mapped bytes and holes alike.
        let mut buf = vec![0u8; 1 << 20];
        for (a, b) in crate::sparse::data_ranges(&input, len)? {
            for (lo, hi) in [(a, b.min(start)), (a.max(start + size), b)] {
                let mut at = lo;
                while at < hi {
                    let n = (hi - at).min(buf.len() as u64) as usize;
                    input.read_exact_at(&mut buf[..n], at).with_context(|| {
                        format!("{}: cannot read at byte {at}", sd_img.display())
                    })?;
                    f.write_all_at(&buf[..n], at)
                        .with_context(|| format!("{}: cannot write", tmp.display()))?;
                    at += n as u64;
                }
            }
        }
        let opts = crate::fat::FatOptions {
            label: vol.label.clone(),
            volume_id: vol.volume_id,
            timestamp: vol.newest_mtime(),
        };
        crate::fat::write_fat32(&f, start, size, &opts, &files).with_context(|| {
            format!("{}: cannot write the seeded boot partition", tmp.display())
        })?;
        // The card's map plus the seed's changes: the volume's metadata mapped as `sd.img`'s is.
        crate::disk::sd::map_boot_partition(&f, start, size)
            .with_context(|| format!("{}: cannot map the seeded boot partition", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("{}: cannot flush", tmp.display()))?;
        if let Some(tb) = &tmp_bmap {
            crate::disk::bmap::write_bmap(&tmp, tb, &|_| {})?;
        }
        std::fs::rename(&tmp, out)
            .with_context(|| format!("{}: cannot move into place", out.display()))?;
        if let (Some(tb), Some(b)) = (&tmp_bmap, &bmap_out) {
            std::fs::rename(tb, b)
                .with_context(|| format!("{}: cannot move into place", b.display()))?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
        if let Some(tb) = &tmp_bmap {
            let _ = std::fs::remove_file(tb);
        }
    }
    r
}

/// `dir/name` + `suffix`.
fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `dir/` + `prefix` + `name`.
fn with_prefix(p: &Path, prefix: &str) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!("{prefix}{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_lines_and_validation() {
        let s = Seed {
            hostname: Some("hc1-3".into()),
            address: Some("10.0.0.31/24".into()),
            gateway: Some("10.0.0.1".into()),
            dns: vec!["10.0.0.1".into(), "9.9.9.9".into()],
            labels: vec!["hc1.disk=ssd 2TB".into(), "rack=a-3".into()],
            secrets: vec![],
        };
        assert_eq!(
            seed_conf(&s).unwrap(),
            "# Written by `hc1img seed`; read once by the node's first boot.\n\
             hostname=hc1-3\naddress=10.0.0.31/24\ngateway=10.0.0.1\ndns=10.0.0.1 9.9.9.9\n\
             label=hc1.disk=ssd 2TB\nlabel=rack=a-3\n"
        );
        for (bad, want) in [
            (
                Seed {
                    hostname: Some("HC1_3".into()),
                    ..Seed::default()
                },
                "--hostname",
            ),
            (
                Seed {
                    address: Some("10.0.0.31".into()),
                    ..Seed::default()
                },
                "prefix length",
            ),
            (
                Seed {
                    gateway: Some("10.0.0.1".into()),
                    ..Seed::default()
                },
                "--gateway needs --address",
            ),
            (
                Seed {
                    address: Some("10.0.0.300/24".into()),
                    ..Seed::default()
                },
                "not an IP address",
            ),
            (
                Seed {
                    labels: vec!["rack".into()],
                    ..Seed::default()
                },
                "--label \"rack\": expected KEY=VALUE",
            ),
            (
                Seed {
                    labels: vec!["Rack=a".into()],
                    ..Seed::default()
                },
                "--label \"Rack=a\": label key \"Rack\": use lower-case letters",
            ),
            (
                Seed {
                    labels: vec!["com.docker.x=1".into()],
                    ..Seed::default()
                },
                "namespace Docker reserves",
            ),
            (
                Seed {
                    labels: vec!["rack=say \"hi\"".into()],
                    ..Seed::default()
                },
                "without quotes",
            ),
            (
                Seed {
                    labels: vec!["rack=a".into(), "rack=b".into()],
                    ..Seed::default()
                },
                "rack is given twice",
            ),
        ] {
            let e = seed_conf(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
