//! One pass over a root tarball shared by several builds (`hc1img build A.toml B.toml …` with
//! profiles of the same source): the tarball is read, hashed and inflated once
//! ([`Inflated`]), and a fan-out thread hands every chunk of the tar stream to each build's
//! [`Tap`] through its own bounded channel, so each build parses the same bytes it would have
//! read from a pass of its own, and memory stays flat (at most [`DEPTH`] chunks of up to 1 MiB
//! per build in flight, the decoder's own, shared between the builds, whatever the tarball's
//! size).
//!
//! The slowest build sets the pace: a chunk is handed to every tap before the next is read.
//! A build that stops (an error) drops its tap and the others go on. [`Tap::finish`] returns
//! the tarball's sha256 and size once the whole stream has been read, as
//! [`Inflated::finish`] does for a single build.
//!
//! The taps of one pass also share a [`BootShare`]: the builds read the same `/boot` files,
//! and each is held once for all of them, not once per build.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use anyhow::{Result, anyhow};

use super::import::BootShare;
use super::input::Inflated;

/// Chunks queued per tap.
pub const DEPTH: usize = 8;

type Chunk = io::Result<Arc<Vec<u8>>>;
/// The pass's outcome as every tap receives it: sha256 and size, or the error as text.
type Outcome = std::result::Result<(String, u64), String>;

/// One build's view of the shared tar stream.
pub struct Tap {
    rx: Receiver<Chunk>,
    cur: Arc<Vec<u8>>,
    pos: usize,
    outcome: Receiver<Outcome>,
    path: PathBuf,
    share: Arc<BootShare>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Tap {
    /// The `/boot` files held for every build of this pass.
    pub fn boot_share(&self) -> Arc<BootShare> {
        self.share.clone()
    }

    /// Read what the tar parser left and wait for the end of the pass: the compressed
    /// tarball's sha256 (hex) and size, as [`Inflated::finish`] gives them.
    pub fn finish(mut self) -> Result<(String, u64)> {
        let path = self.path.display().to_string();
        io::copy(&mut self, &mut io::sink())
            .map_err(|e| anyhow!("{path}: corrupt compressed data: {e}"))?;
        drop(self.rx);
        match self.outcome.recv() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(anyhow!(e)),
            Err(_) => Err(anyhow!("{path}: the thread sharing the tarball crashed")),
        }
    }
}

/// Split one pass over the tarball at `path` into `n` taps (one per build).
pub fn split(mut stream: Inflated, path: &Path, n: usize) -> Vec<Tap> {
    let mut txs = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    let mut taps = Vec::with_capacity(n);
    let share = Arc::new(BootShare::default());
    for _ in 0..n {
        let (tx, rx) = sync_channel::<Chunk>(DEPTH);
        let (otx, orx) = sync_channel::<Outcome>(1);
        txs.push(tx);
        outs.push(otx);
        taps.push(Tap {
            rx,
            cur: Arc::new(Vec::new()),
            pos: 0,
            outcome: orx,
            path: path.to_path_buf(),
            share: share.clone(),
        });
    }
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut failed = None;
        loop {
            // The decoder's own chunks, passed on without a copy.
            match stream.next_chunk() {
                Ok(None) => break,
                Ok(Some(buf)) => {
                    let c = Arc::new(buf);
                    txs.retain(|tx| tx.send(Ok(c.clone())).is_ok());
                    if txs.is_empty() {
                        break; // every build stopped
                    }
                }
                Err(e) => {
                    for tx in &txs {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    failed = Some(format!("{}: corrupt compressed data: {e}", path.display()));
                    break;
                }
            }
        }
        drop(txs);
        let outcome = match failed {
            Some(e) => Err(e),
            None => stream.finish().map_err(|e| format!("{e:#}")),
        };
        for o in outs {
            let _ = o.send(outcome.clone());
        }
    });
    taps
}
