//! Integration tests for `hc1img::source::fetch` against a small HTTP/1.1 server running in the
//! test process on 127.0.0.1, with behaviours that misbehave on purpose (404, wrong bytes,
//! truncated bodies, dropped chunked bodies, servers ignoring Range, stalls, 503s).
//! Expected hashes come from coreutils `sha256sum`, not from the code under test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hc1img::source::{Cache, FetchOptions, SourceSpec, fetch, fetch_unpinned, sha256_file};

/// How the server answers one path.
#[derive(Clone)]
enum Behave {
    /// Serves the body; honours `Range: bytes=N-` with 206.
    Serve(Vec<u8>),
    /// Answers with this status and an empty body.
    Status(u16),
    /// First request: announces the full length, sends `cut` bytes, closes. Then like `Serve`.
    CutFirst(Vec<u8>, usize),
    /// First request: chunked body, one chunk of `cut` bytes, then the connection is dropped
    /// without the final chunk. Then like `Serve`.
    ChunkedCutFirst(Vec<u8>, usize),
    /// First request: like `CutFirst`; later requests get 200 with the whole body, ignoring Range.
    IgnoreRangeCutFirst(Vec<u8>, usize),
    /// Sends headers announcing this many bytes, then nothing, holding the connection open.
    Stall(usize),
    /// The first `n` requests get `status`, later ones like `Serve`.
    FailFirst(usize, u16, Vec<u8>),
    /// Like `Serve`, but sends the body slowly in 8 pieces (to overlap concurrent fetches).
    Slow(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Req {
    path: String,
    range: Option<String>,
}

struct Server {
    base: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn start(routes: Vec<(&str, Behave)>) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind test server")?;
        let base = format!("http://{}", listener.local_addr()?);
        let routes: Arc<HashMap<String, Behave>> =
            Arc::new(routes.into_iter().map(|(p, b)| (p.to_owned(), b)).collect());
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let routes = Arc::clone(&routes);
                let log = Arc::clone(&log2);
                thread::spawn(move || {
                    let _ = handle(stream, &routes, &log);
                });
            }
        });
        Ok(Server { base, log })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self, path: &str) -> Vec<Req> {
        match self.log.lock() {
            Ok(log) => log.iter().filter(|r| r.path == path).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn handle(
    stream: TcpStream,
    routes: &HashMap<String, Behave>,
    log: &Mutex<Vec<Req>>,
) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad request line {line:?}"))?
        .to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    let nth = {
        let mut log = log.lock().map_err(|_| anyhow!("log poisoned"))?;
        log.push(Req {
            path: path.clone(),
            range: range.clone(),
        });
        log.iter().filter(|r| r.path == path).count() - 1
    };
    let mut out = stream;
    match routes.get(&path) {
        None => status(&mut out, 404),
        Some(Behave::Serve(body)) => serve(&mut out, body, range.as_deref(), 1),
        Some(Behave::Slow(body)) => serve(&mut out, body, range.as_deref(), 8),
        Some(Behave::Status(code)) => status(&mut out, *code),
        Some(Behave::CutFirst(body, cut)) if nth == 0 => cut_first(&mut out, body, *cut),
        Some(Behave::CutFirst(body, _)) => serve(&mut out, body, range.as_deref(), 1),
        Some(Behave::ChunkedCutFirst(body, cut)) if nth == 0 => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{cut:x}\r\n"
            )?;
            out.write_all(&body[..*cut])?;
            out.write_all(b"\r\n")?;
            out.flush()?;
            Ok(())
        }
        Some(Behave::ChunkedCutFirst(body, _)) => serve(&mut out, body, range.as_deref(), 1),
        Some(Behave::IgnoreRangeCutFirst(body, cut)) if nth == 0 => cut_first(&mut out, body, *cut),
        Some(Behave::IgnoreRangeCutFirst(body, _)) => serve(&mut out, body, None, 1),
        Some(Behave::Stall(len)) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            out.flush()?;
            thread::sleep(Duration::from_secs(20));
            Ok(())
        }
        Some(Behave::FailFirst(n, code, _)) if nth < *n => status(&mut out, *code),
        Some(Behave::FailFirst(_, _, body)) => serve(&mut out, body, range.as_deref(), 1),
    }
}

fn status(out: &mut TcpStream, code: u16) -> Result<()> {
    write!(
        out,
        "HTTP/1.1 {code} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    Ok(out.flush()?)
}

fn cut_first(out: &mut TcpStream, body: &[u8], cut: usize) -> Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body[..cut])?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)?;
    Ok(())
}

fn serve(out: &mut TcpStream, body: &[u8], range: Option<&str>, pieces: usize) -> Result<()> {
    let len = body.len();
    let start = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let start: usize = r.trim_end_matches('-').parse()?;
            if start >= len {
                write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                return Ok(out.flush()?);
            }
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - start
            )?;
            start
        }
        None => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            0
        }
    };
    let rest = &body[start..];
    let step = rest.len().div_ceil(pieces).max(1);
    for piece in rest.chunks(step) {
        out.write_all(piece)?;
        out.flush()?;
        if pieces > 1 {
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Deterministic pseudo-random test data.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// SHA-256 from coreutils `sha256sum` (an independent oracle).
fn oracle_sha256(bytes: &[u8]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("blob");
    std::fs::write(&p, bytes)?;
    let out = Command::new("sha256sum")
        .arg(&p)
        .output()
        .context("sha256sum (Debian package coreutils) is needed by this test")?;
    ensure!(out.status.success(), "sha256sum failed");
    let text = String::from_utf8(out.stdout)?;
    let hex = text
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("no sha256sum output"))?;
    Ok(hex.to_owned())
}

fn opts() -> FetchOptions {
    FetchOptions {
        progress: false,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        retries: 2,
        backoff: Duration::from_millis(10),
    }
}

fn spec(urls: Vec<String>, sha256: String) -> SourceSpec {
    SourceSpec {
        urls,
        sha256,
        size: None,
        signature: None,
    }
}

/// Names of leftover files in the cache's tmp dir other than lock files.
fn leftovers(cache: &Cache) -> Result<Vec<String>> {
    let tmp = cache.root().join("tmp");
    if !tmp.exists() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&tmp)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".lock") {
            names.push(name);
        }
    }
    Ok(names)
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        v.push(e?.path());
    }
    Ok(v)
}

fn new_cache() -> Result<(tempfile::TempDir, Cache)> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::new(dir.path().join("cache"));
    Ok((dir, cache))
}

#[test]
fn download_lands_in_cache_and_second_fetch_uses_no_network() -> Result<()> {
    let body = data(300_000, 1);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/root.tar.gz", Behave::Serve(body.clone()))])?;
    let (_d, cache) = new_cache()?;
    let mut s = spec(vec![server.url("/root.tar.gz")], sha.clone());
    s.size = Some(body.len() as u64);
    assert_eq!(cache.lookup(&sha), None);

    let path = fetch(&s, &cache, &opts())?;
    assert_eq!(path, cache.path_for(&sha));
    assert_eq!(cache.lookup(&sha), Some(path.clone()));
    assert!(std::fs::read(&path)? == body, "cached bytes differ");
    assert!(std::fs::metadata(&path)?.permissions().readonly());
    assert_eq!(server.requests("/root.tar.gz").len(), 1);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());

    let again = fetch(&s, &cache, &opts())?;
    assert_eq!(again, path);
    assert_eq!(
        server.requests("/root.tar.gz").len(),
        1,
        "a cache hit contacted the server"
    );
    Ok(())
}

#[test]
fn wrong_sha256_is_refused_and_leaves_nothing() -> Result<()> {
    let served = data(50_000, 2);
    let wanted = data(50_000, 3);
    let want_sha = oracle_sha256(&wanted)?;
    let got_sha = oracle_sha256(&served)?;
    let server = Server::start(vec![("/f", Behave::Serve(served))])?;
    let (_d, cache) = new_cache()?;
    let url = server.url("/f");
    let err = match fetch(&spec(vec![url.clone()], want_sha.clone()), &cache, &opts()) {
        Ok(p) => bail!("wrong bytes were accepted as {}", p.display()),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(!err.contains('\n'), "error is not one line: {err}");
    assert!(err.contains(&url), "error does not name the URL: {err}");
    assert!(
        err.contains(&format!("expected {want_sha}")),
        "no expected hash: {err}"
    );
    assert!(
        err.contains(&format!("got {got_sha}")),
        "no actual hash: {err}"
    );
    assert_eq!(cache.lookup(&want_sha), None);
    assert_eq!(cache.lookup(&got_sha), None);
    assert_eq!(
        files_in(&cache.root().join("sha256"))?,
        Vec::<PathBuf>::new()
    );
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn not_found_is_a_clear_error_naming_url_and_status() -> Result<()> {
    let server = Server::start(vec![("/gone", Behave::Status(404))])?;
    let (_d, cache) = new_cache()?;
    let url = server.url("/gone");
    let sha = oracle_sha256(b"whatever")?;
    let err = match fetch(&spec(vec![url.clone()], sha), &cache, &opts()) {
        Ok(_) => bail!("a 404 was accepted"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains(&url) && err.contains("404"), "{err}");
    // 404 is not worth retrying.
    assert_eq!(server.requests("/gone").len(), 1);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn mirrors_are_tried_in_order_after_404_and_bad_bytes() -> Result<()> {
    let body = data(70_000, 4);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![
        ("/missing", Behave::Status(404)),
        ("/corrupt", Behave::Serve(data(70_000, 5))),
        ("/good", Behave::Serve(body.clone())),
        ("/unused", Behave::Serve(body.clone())),
    ])?;
    let (_d, cache) = new_cache()?;
    let urls = ["/missing", "/corrupt", "/good", "/unused"].map(|p| server.url(p));
    let path = fetch(&spec(urls.to_vec(), sha.clone()), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body);
    assert_eq!(server.requests("/missing").len(), 1);
    assert_eq!(server.requests("/corrupt").len(), 1);
    assert_eq!(server.requests("/good").len(), 1);
    assert_eq!(server.requests("/unused").len(), 0);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn all_failing_mirrors_are_listed_in_the_error() -> Result<()> {
    let server = Server::start(vec![
        ("/a", Behave::Status(404)),
        ("/b", Behave::Status(403)),
    ])?;
    let (_d, cache) = new_cache()?;
    let sha = oracle_sha256(b"x")?;
    let err = match fetch(
        &spec(vec![server.url("/a"), server.url("/b")], sha),
        &cache,
        &opts(),
    ) {
        Ok(_) => bail!("fetch succeeded with no good mirror"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains(&format!("[1] {}", server.url("/a"))), "{err}");
    assert!(err.contains(&format!("[2] {}", server.url("/b"))), "{err}");
    assert!(err.contains("404") && err.contains("403"), "{err}");
    Ok(())
}

#[test]
fn truncated_body_is_resumed_with_range() -> Result<()> {
    let body = data(200_000, 6);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/t", Behave::CutFirst(body.clone(), 123_457))])?;
    let (_d, cache) = new_cache()?;
    let path = fetch(&spec(vec![server.url("/t")], sha), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body, "resumed file differs");
    let reqs = server.requests("/t");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=123457-"));
    Ok(())
}

#[test]
fn dropped_chunked_connection_is_resumed() -> Result<()> {
    let body = data(150_000, 7);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/c", Behave::ChunkedCutFirst(body.clone(), 40_000))])?;
    let (_d, cache) = new_cache()?;
    let path = fetch(&spec(vec![server.url("/c")], sha), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body, "resumed file differs");
    let reqs = server.requests("/c");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=40000-"));
    Ok(())
}

#[test]
fn server_ignoring_range_makes_the_download_restart() -> Result<()> {
    let body = data(120_000, 8);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![(
        "/i",
        Behave::IgnoreRangeCutFirst(body.clone(), 60_000),
    )])?;
    let (_d, cache) = new_cache()?;
    let path = fetch(&spec(vec![server.url("/i")], sha), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body, "restarted file differs");
    let reqs = server.requests("/i");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=60000-"));
    Ok(())
}

#[test]
fn stalled_server_times_out_with_a_clear_error() -> Result<()> {
    let server = Server::start(vec![("/s", Behave::Stall(1000))])?;
    let (_d, cache) = new_cache()?;
    let mut o = opts();
    o.read_timeout = Duration::from_millis(300);
    o.retries = 1;
    let url = server.url("/s");
    let sha = oracle_sha256(b"never")?;
    let err = match fetch(&spec(vec![url.clone()], sha), &cache, &o) {
        Ok(_) => bail!("a stalled download succeeded"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("gave up after 2 attempt(s)"), "{err}");
    assert_eq!(server.requests("/s").len(), 2);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn server_errors_are_retried_then_succeed() -> Result<()> {
    let body = data(10_000, 9);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/r", Behave::FailFirst(2, 503, body.clone()))])?;
    let (_d, cache) = new_cache()?;
    let path = fetch(&spec(vec![server.url("/r")], sha), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body);
    assert_eq!(server.requests("/r").len(), 3);
    Ok(())
}

#[test]
fn server_errors_give_up_after_the_retry_budget() -> Result<()> {
    let server = Server::start(vec![("/r", Behave::FailFirst(10, 503, Vec::new()))])?;
    let (_d, cache) = new_cache()?;
    let mut o = opts();
    o.retries = 1;
    let sha = oracle_sha256(b"")?;
    let err = match fetch(&spec(vec![server.url("/r")], sha), &cache, &o) {
        Ok(_) => bail!("succeeded although every answer was 503"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(
        err.contains("503") && err.contains("gave up after 2 attempt(s)"),
        "{err}"
    );
    assert_eq!(server.requests("/r").len(), 2);
    Ok(())
}

#[test]
fn wrong_pinned_size_is_refused() -> Result<()> {
    let body = data(5_000, 10);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/z", Behave::Serve(body))])?;
    let (_d, cache) = new_cache()?;
    let mut s = spec(vec![server.url("/z")], sha.clone());
    s.size = Some(4_999);
    let err = match fetch(&s, &cache, &opts()) {
        Ok(_) => bail!("a file of the wrong size was accepted"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains("4999") && err.contains("5000"), "{err}");
    assert_eq!(cache.lookup(&sha), None);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn file_urls_and_plain_paths_are_copied_and_verified() -> Result<()> {
    let (dir, cache) = new_cache()?;
    let body = data(90_000, 11);
    let sha = oracle_sha256(&body)?;
    let src = dir.path().join("local root.tar.gz");
    std::fs::write(&src, &body)?;
    let url = reqwest::Url::from_file_path(&src)
        .map_err(|()| anyhow!("cannot make a file URL"))?
        .to_string();
    assert!(url.starts_with("file:///") && url.contains("%20"), "{url}");
    let path = fetch(&spec(vec![url], sha.clone()), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body);

    let (_d2, cache2) = new_cache()?;
    let plain = src.to_string_lossy().into_owned();
    let path2 = fetch(&spec(vec![plain], sha.clone()), &cache2, &opts())?;
    assert!(std::fs::read(&path2)? == body);

    let (_d3, cache3) = new_cache()?;
    let missing = dir
        .path()
        .join("nope.tar.gz")
        .to_string_lossy()
        .into_owned();
    let err = match fetch(&spec(vec![missing.clone()], sha), &cache3, &opts()) {
        Ok(_) => bail!("a missing file was fetched"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains(&missing), "{err}");
    Ok(())
}

#[test]
fn unpinned_fetch_hashes_and_stores_the_file() -> Result<()> {
    let body = data(33_333, 12);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![
        ("/missing", Behave::Status(404)),
        ("/u", Behave::Serve(body.clone())),
    ])?;
    let (_d, cache) = new_cache()?;
    let got = fetch_unpinned(&[server.url("/missing"), server.url("/u")], &cache, &opts())?;
    assert_eq!(got.sha256, sha);
    assert_eq!(got.size, body.len() as u64);
    assert_eq!(got.path, cache.path_for(&sha));
    assert!(std::fs::read(&got.path)? == body);
    assert_eq!(sha256_file(&got.path)?, sha);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    // Fetching it pinned now is a cache hit.
    fetch(&spec(vec![server.url("/u")], sha), &cache, &opts())?;
    assert_eq!(server.requests("/u").len(), 1);
    Ok(())
}

#[test]
fn concurrent_fetches_of_one_file_download_it_once() -> Result<()> {
    let body = data(400_000, 13);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/slow", Behave::Slow(body.clone()))])?;
    let (_d, cache) = new_cache()?;
    let s = spec(vec![server.url("/slow")], sha.clone());
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (s, cache) = (s.clone(), cache.clone());
            thread::spawn(move || fetch(&s, &cache, &opts()).map_err(|e| format!("{e:#}")))
        })
        .collect();
    for h in handles {
        let path = h
            .join()
            .map_err(|_| anyhow!("fetch thread panicked"))?
            .map_err(|e| anyhow!(e))?;
        assert_eq!(path, cache.path_for(&sha));
    }
    assert!(std::fs::read(cache.path_for(&sha))? == body);
    assert_eq!(server.requests("/slow").len(), 1);
    assert_eq!(leftovers(&cache)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn bad_specs_are_refused_before_any_download() -> Result<()> {
    let (_d, cache) = new_cache()?;
    let err = match fetch(&spec(vec![], "a".repeat(64)), &cache, &opts()) {
        Ok(_) => bail!("a spec without URLs was fetched"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains("no URL"), "{err}");
    let err = match fetch(&spec(vec!["/x".into()], "ABC".into()), &cache, &opts()) {
        Ok(_) => bail!("a malformed sha256 was accepted"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains("64 lowercase hex"), "{err}");
    let err = match fetch(
        &spec(vec!["ftp://example.invalid/x".into()], "a".repeat(64)),
        &cache,
        &opts(),
    ) {
        Ok(_) => bail!("an ftp URL was accepted"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(err.contains("unsupported URL scheme"), "{err}");
    Ok(())
}

#[test]
fn resume_after_all_bytes_arrived_accepts_416() -> Result<()> {
    // The whole body arrives but the chunked stream is never terminated: the resume asks for
    // bytes past the end, and the server's 416 with `bytes */LEN` says the file is complete.
    let body = data(20_000, 14);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/e", Behave::ChunkedCutFirst(body.clone(), 20_000))])?;
    let (_d, cache) = new_cache()?;
    let path = fetch(&spec(vec![server.url("/e")], sha), &cache, &opts())?;
    assert!(std::fs::read(&path)? == body);
    let reqs = server.requests("/e");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=20000-"));
    Ok(())
}

#[test]
fn refused_connection_falls_back_to_the_next_mirror() -> Result<()> {
    // A port nobody listens on: bind, learn the port, close.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/x", l.local_addr()?)
    };
    let body = data(1_000, 15);
    let sha = oracle_sha256(&body)?;
    let server = Server::start(vec![("/ok", Behave::Serve(body.clone()))])?;
    let (_d, cache) = new_cache()?;
    let path = fetch(
        &spec(vec![dead.clone(), server.url("/ok")], sha.clone()),
        &cache,
        &opts(),
    )?;
    assert!(std::fs::read(&path)? == body);

    let (_d2, cache2) = new_cache()?;
    let err = match fetch(&spec(vec![dead.clone()], sha), &cache2, &opts()) {
        Ok(_) => bail!("fetch from a closed port succeeded"),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error as shown: {msg}");
            msg
        }
    };
    assert!(
        err.contains(&dead) && err.contains("onnection refused"),
        "{err}"
    );
    assert!(err.contains("gave up after 3 attempt(s)"), "{err}");
    Ok(())
}
