//! The GitHub Actions workflows (`.github/workflows/ci.yml`, `release.yml`) pass `actionlint`
//! (which also runs shellcheck on their `run:` scripts), and say what the project promises:
//! CI runs `scripts/test` on pushes and pull requests; a `v*` tag builds every profile
//! compressed and attaches images, block maps, manifests and SHA256SUMS to the release.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn actionlint(files: &[&Path]) -> std::process::Output {
    Command::new("actionlint")
        .arg("-no-color")
        .args(files)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run actionlint ({e}); install it (scripts/test does, from PyPI) — tests never skip a missing oracle")
        })
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(".github/workflows").join(name))
        .unwrap_or_else(|e| panic!(".github/workflows/{name}: {e}"))
}

#[test]
fn workflows_pass_actionlint() {
    let ci = repo().join(".github/workflows/ci.yml");
    let release = repo().join(".github/workflows/release.yml");
    let o = actionlint(&[&ci, &release]);
    assert!(
        o.status.success(),
        "actionlint found problems:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// actionlint really checks: an unknown event and a bad expression are reported.
#[test]
fn actionlint_rejects_a_broken_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yml");
    std::fs::write(
        &f,
        "on: pushh\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope( }}\n",
    )
    .unwrap();
    let o = actionlint(&[&f]);
    assert!(!o.status.success(), "actionlint accepted a broken workflow");
}

#[test]
fn ci_runs_the_test_command_on_push_and_pull_request() {
    let ci = read("ci.yml");
    for needle in ["\n  push:", "\n  pull_request:", "scripts/test", "sudo "] {
        assert!(ci.contains(needle), "ci.yml lacks {needle:?}");
    }
    assert!(
        repo().join("scripts/test").is_file(),
        "ci.yml runs scripts/test, which must exist"
    );
}

#[test]
fn release_builds_every_profile_and_uploads_the_artifacts() {
    let r = read("release.yml");
    for needle in [
        "tags:",
        "\"v*\"",
        "profiles/*.toml",
        "--compress zst",
        "*.img.zst",
        "*.bmap",
        "manifest.json",
        "SHA256SUMS",
        "gh release upload",
        "chmod 600",
        "::warning::skipping",
        "actions/cache@",
        "hashFiles('profiles/hc1img.lock')",
        "HC1IMG_CACHE",
    ] {
        assert!(r.contains(needle), "release.yml lacks {needle:?}");
    }
}
