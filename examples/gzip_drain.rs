//! Drain a gzip file through one decoder, single-threaded, for docs/benchmarks.md's decoder
//! comparison (`/usr/bin/time -v` around it gives user CPU and peak RSS):
//!
//!     cargo build --release --example gzip_drain
//!     target/release/examples/gzip_drain zlib-rs|sirocco FILE [--sha256]
//!
//! `zlib-rs` is flate2's `MultiGzDecoder` over zlib-rs, `sirocco` hc1img's
//! `rootfs::input::MultiGz`; both read through a 1 MiB `BufReader`, as `rootfs::input` does.
//! With `--sha256` the output's sha256 is printed (compare with `zcat FILE | sha256sum`).
use std::io::{BufReader, Read};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, which, file, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: gzip_drain zlib-rs|sirocco FILE [--sha256]");
    };
    let f = std::fs::File::open(file)?;
    let raw = BufReader::with_capacity(1 << 20, f);
    let mut dec: Box<dyn Read> = match which.as_str() {
        "zlib-rs" => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        "sirocco" => Box::new(hc1img::rootfs::input::MultiGz::new(raw)),
        other => anyhow::bail!("unknown decoder {other:?}"),
    };
    let hash = rest.iter().any(|a| a == "--sha256");
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if hash {
            sha2::Digest::update(&mut h, &buf[..n]);
        }
    }
    if hash {
        println!("{}  {total} bytes", hex::encode(sha2::Digest::finalize(h)));
    } else {
        println!("{total} bytes");
    }
    Ok(())
}
