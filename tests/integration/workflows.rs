//! The GitHub Actions workflows (`.github/workflows/ci.yml`, `release.yml`) pass `actionlint`
//! (which also runs shellcheck on their `run:` scripts), and say what the project promises:
//! CI runs `scripts/test` on pushes and pull requests; a `v*` tag builds every profile
//! compressed and attaches images, block maps, manifests, SBOMs, SHA256SUMS and its signature
//! to the release; no build step gets a repository secret (the images are secret-free), and
//! exactly one step, the signing step, reads the release key (`secrets.HC1IMG_SIGNING_KEY`).

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
        "sbom.spdx.json",
        "SHA256SUMS",
        "hc1img sign release --key",
        "hc1img verify release --keyring",
        "steps.sign.outputs.fingerprint",
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

/// The repository secret that holds the release's signing key.
const SIGNING_KEY: &str = "secrets.HC1IMG_SIGNING_KEY";

/// The secrets a workflow reads, checked (`Err` says why not): no `secrets` expression anywhere
/// but `secrets.GITHUB_TOKEN` in a step that does not build (the upload) and
/// [`SIGNING_KEY`] in at most one step, which signs (`hc1img sign`), does not build, and
/// removes the key's file (`rm -f`); none in a build step, a job's or the workflow's env, and
/// no `--secret`. Returns the signing step (`.jobs.JOB.steps[N]`), if there is one.
fn check_secrets(path: &Path) -> Result<Option<String>, String> {
    let doc = parsed(path);
    let mut refs = Vec::new();
    secret_refs(&doc, "", &mut refs);
    let mut builds = Vec::new();
    let mut steps = Vec::new();
    for (job, j) in doc["jobs"].as_object().expect("a workflow has jobs") {
        for (i, step) in j["steps"].as_array().into_iter().flatten().enumerate() {
            let at = format!(".jobs.{job}.steps[{i}]");
            let run = step["run"].as_str().unwrap_or("");
            if run.contains("hc1img build") {
                builds.push(at.clone());
                if run.contains("--secret") {
                    return Err(format!("{at} passes --secret to hc1img build"));
                }
            }
            steps.push((at, run.to_string()));
        }
    }
    if builds.is_empty() {
        return Err("no step runs hc1img build".into());
    }
    // The step an expression sits in (`.jobs.JOB.steps[N]`), if any.
    let step_of = |at: &str| {
        steps
            .iter()
            .find(|(s, _)| at.starts_with(&format!("{s}.")))
            .map(|(s, run)| (s.clone(), run.clone()))
    };
    let mut signers: Vec<String> = Vec::new();
    for (at, expr) in &refs {
        let step = step_of(at);
        let in_build = step.as_ref().is_some_and(|(s, _)| builds.contains(s));
        match (expr.as_str(), step) {
            ("secrets.GITHUB_TOKEN", Some(_)) if !in_build => {}
            (SIGNING_KEY, Some((s, run))) if !in_build => {
                if !run.contains("hc1img sign") {
                    return Err(format!(
                        "{at}: reads the signing key but does not run hc1img sign"
                    ));
                }
                if !run.contains("rm -f") {
                    return Err(format!(
                        "{at}: does not remove the signing key's file (rm -f)"
                    ));
                }
                if !signers.contains(&s) {
                    signers.push(s);
                }
            }
            _ => return Err(format!("reads a secret at {at}: ${{{{ {expr} }}}}")),
        }
    }
    if signers.len() > 1 {
        return Err(format!(
            "{} steps read the signing key ({}): only the signing step may",
            signers.len(),
            signers.join(", ")
        ));
    }
    Ok(signers.pop())
}

#[test]
fn release_passes_no_secret_to_any_build_and_the_key_to_the_signing_step_only() {
    let path = repo().join(".github/workflows/release.yml");
    match check_secrets(&path) {
        Ok(Some(step)) => {
            let doc = parsed(&path);
            let (job, i) = step
                .strip_prefix(".jobs.")
                .and_then(|s| s.split_once(".steps["))
                .unwrap();
            let i: usize = i.trim_end_matches(']').parse().unwrap();
            assert_eq!(doc["jobs"][job]["steps"][i]["name"], "Sign SHA256SUMS");
        }
        Ok(None) => panic!("release.yml: no step signs the release with the signing key"),
        Err(e) => panic!("release.yml: {e}"),
    }
}

/// The check finds a secret handed to a build, wherever it hides, allows the upload token,
/// and the signing key only in one signing step.
#[test]
fn the_secret_check_catches_a_leaking_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let build = "      - run: hc1img build profiles/worker.toml\n";
    let upload = "      - run: gh release upload v1 x\n        env:\n          GH_TOKEN: ${{ secrets.GITHUB_TOKEN }}\n";
    let sign = "      - run: |\n          hc1img sign release --key \"$K\"\n          rm -f \"$K\"\n        env:\n          KEY: ${{ secrets.HC1IMG_SIGNING_KEY }}\n";
    let cases = [
        (format!("{build}{upload}"), None),
        (format!("{build}{sign}{upload}"), None),
        (
            format!("{build}{sign}{sign}"),
            Some("2 steps read the signing key"),
        ),
        (
            format!("{build}        env:\n          K: ${{{{ secrets.HC1IMG_SIGNING_KEY }}}}\n"),
            Some("secrets.HC1IMG_SIGNING_KEY"),
        ),
        (
            format!(
                "{build}      - run: echo\n        env:\n          K: ${{{{ secrets.HC1IMG_SIGNING_KEY }}}}\n"
            ),
            Some("does not run hc1img sign"),
        ),
        (
            format!("{build}{}", sign.replace("rm -f", "true")),
            Some("does not remove the signing key's file"),
        ),
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
        match (check_secrets(&f), want) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) if e.contains(w) => {}
            (r, w) => panic!("{steps}: got {r:?}, wanted {w:?}"),
        }
    }
}
