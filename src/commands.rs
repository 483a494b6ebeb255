//! The commands behind the CLI: each resolves what it needs and calls the library.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::progress::Reporter;

/// Flags shared by commands that resolve a profile.
#[derive(Clone, Debug)]
pub struct CommonArgs {
    pub profile: PathBuf,
    pub source_url: Option<String>,
    pub source_sha256: Option<String>,
    /// `NAME=FILE` pairs.
    pub secrets: Vec<String>,
}

pub fn build(
    args: &CommonArgs,
    out: Option<PathBuf>,
    rebuild: bool,
    rep: &Reporter,
) -> Result<PathBuf> {
    let _ = (args, out, rebuild, rep);
    bail!("build: not wired yet")
}

pub fn plan(args: &CommonArgs, json: bool) -> Result<()> {
    let _ = (args, json);
    bail!("plan: not wired yet")
}

pub fn fetch(args: &CommonArgs, rep: &Reporter) -> Result<()> {
    let _ = (args, rep);
    bail!("fetch: not wired yet")
}

pub fn lock(profile: &Path, rep: &Reporter) -> Result<()> {
    let _ = (profile, rep);
    bail!("lock: not wired yet")
}

pub fn inspect(image: &Path) -> Result<()> {
    let _ = image;
    bail!("inspect: not wired yet")
}

pub fn verify(dir: &Path) -> Result<()> {
    let _ = dir;
    bail!("verify: not wired yet")
}
