//! `hc1img seed`: per-node values on the microSD card, so the SSD image stays identical
//! across nodes (like cloud-init's NoCloud seed, without cloud-init).
//!
//! Copies a built `sd.img` and adds, on its FAT partition (found through the first MBR entry,
//! [`crate::disk::window`]), the directory `hc1img-seed/` with `seed.conf` (`key=value`
//! lines: `hostname`, `address`, `gateway`, `dns`) and `secrets/NAME` files. The node's first
//! boot (`hc1-firstboot`, see [`crate::rootfs::edits::firstboot`]) reads them from
//! `/boot/hc1img-seed`, moves the secrets to its root filesystem (0600) and deletes them from
//! the card. The output is written through a temporary name and renamed into place.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::disk::SECTOR;
use crate::disk::window::{Window, first_mbr_partition};
use crate::profile::SecretSource;

/// The seed directory on the card's FAT partition.
pub const SEED_DIR: &str = "hc1img-seed";
/// Secrets the first boot knows what to do with.
pub const KNOWN_SECRETS: &[&str] = &["swarm_token"];

/// What `hc1img seed` writes.
#[derive(Debug, Default)]
pub struct Seed {
    pub hostname: Option<String>,
    /// `ADDRESS/PREFIX` for the first Ethernet port (systemd-networkd `Address=`).
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
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
    Ok(s)
}

/// Write a copy of `sd_img` with `seed` on its FAT partition to `out`.
pub fn write_seed(sd_img: &Path, out: &Path, seed: &Seed) -> Result<()> {
    let conf = seed_conf(seed)?;
    let mut secrets = Vec::new();
    for (name, file) in &seed.secrets {
        if !KNOWN_SECRETS.contains(&name.as_str()) {
            bail!(
                "--secret {name}=…: unknown seed secret; the first boot knows {}",
                KNOWN_SECRETS.join(", ")
            );
        }
        let s = crate::profile::secrets::read(name, &SecretSource::File(file.clone()))?;
        secrets.push((name.clone(), s));
    }
    if seed.hostname.is_none() && seed.address.is_none() && secrets.is_empty() {
        bail!("nothing to seed: give --hostname, --address or --secret");
    }
    if out.exists() {
        bail!(
            "{}: already exists; remove it or choose another --output",
            out.display()
        );
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".tmp-{name}"));
    let r = (|| -> Result<()> {
        std::fs::copy(sd_img, &tmp)
            .with_context(|| format!("cannot copy {} to {}", sd_img.display(), tmp.display()))?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tmp)
            .with_context(|| format!("{}: cannot open for writing", tmp.display()))?;
        let (lba, sectors) = first_mbr_partition(&f, sd_img)?;
        let win = Window::writable(f, lba * SECTOR, sectors * SECTOR);
        let fs = fatfs::FileSystem::new(win, fatfs::FsOptions::new())
            .with_context(|| format!("{}: cannot open the FAT boot partition", sd_img.display()))?;
        {
            let root = fs.root_dir();
            if root.open_dir(SEED_DIR).is_ok() {
                bail!(
                    "{}: the card already holds a seed ({SEED_DIR}/); seed a fresh sd.img",
                    sd_img.display()
                );
            }
            let dir = root
                .create_dir(SEED_DIR)
                .with_context(|| format!("cannot create {SEED_DIR}/ on the card"))?;
            let mut f = dir
                .create_file("seed.conf")
                .context("cannot create seed.conf on the card")?;
            f.truncate().context("seed.conf")?;
            f.write_all(conf.as_bytes())
                .context("cannot write seed.conf (is the FAT partition full?)")?;
            if !secrets.is_empty() {
                let sdir = dir
                    .create_dir("secrets")
                    .context("cannot create the secrets directory on the card")?;
                for (name, s) in &secrets {
                    let mut f = sdir
                        .create_file(name)
                        .with_context(|| format!("cannot create secret {name:?} on the card"))?;
                    f.truncate().context("secret file")?;
                    f.write_all(s.bytes())
                        .with_context(|| format!("cannot write secret {name:?} on the card"))?;
                }
            }
        }
        fs.unmount()
            .with_context(|| format!("{}: cannot finish the FAT update", tmp.display()))?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("{}: cannot move into place", out.display()))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
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
            secrets: vec![],
        };
        assert_eq!(
            seed_conf(&s).unwrap(),
            "# Written by `hc1img seed`; read once by the node's first boot.\n\
             hostname=hc1-3\naddress=10.0.0.31/24\ngateway=10.0.0.1\ndns=10.0.0.1 9.9.9.9\n"
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
        ] {
            let e = seed_conf(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
