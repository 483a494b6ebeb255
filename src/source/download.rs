//! Getting one URL's bytes into a part file while hashing them.
//!
//! HTTP(S) downloads resume after a dropped connection or truncated body with a `Range:
//! bytes=N-` request (RFC 9110 §14.2); a `206` reply must start at `N` (checked against
//! `Content-Range`, §14.4), a `200` reply means the server ignores ranges and the part file is
//! restarted from byte 0. Connection errors, timeouts, 408, 429 and 5xx are retried with
//! exponential backoff; other HTTP errors (404, 403, ...) fail the URL at once. `file://` URLs
//! (RFC 8089) and plain paths are copied. A host name that does not resolve (getaddrinfo(3)
//! fails) is not a transient fault: the URL fails at once with [`Unresolvable`], without
//! retries, unless a proxy (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) resolves names for us.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};

use super::FetchOptions;
use super::hash::hex_digest;

/// What the downloaded bytes must be, when known.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Expect<'a> {
    pub sha256: Option<&'a str>,
    pub size: Option<u64>,
}

/// A URL whose host name does not resolve: the machine is offline or the name is wrong;
/// retrying will not help.
#[derive(Debug, thiserror::Error)]
#[error("host {host} does not resolve ({detail})")]
pub struct Unresolvable {
    pub host: String,
    pub detail: String,
}

/// Whether the HTTP client would go through a proxy (which resolves names itself).
fn proxied() -> bool {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// Resolve `url`'s host as the connection would (no proxy): an [`Unresolvable`] error when
/// the name does not resolve. IP addresses pass.
fn resolve(url: &Url) -> Result<(), Unresolvable> {
    use std::net::ToSocketAddrs;
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || proxied() {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(80);
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Unresolvable {
            host: host.to_string(),
            detail: "no address".into(),
        }),
        Err(e) => Err(Unresolvable {
            host: host.to_string(),
            detail: e.to_string(),
        }),
    }
}

/// What was downloaded.
#[derive(Clone, Debug)]
pub(crate) struct Got {
    pub sha256: String,
    pub size: u64,
}

/// Fetches `url` into `part` (created or truncated) and checks it against `expect`.
///
/// On error `part` may hold partial or wrong bytes; the caller removes it.
pub(crate) fn download(
    url: &str,
    part: &Path,
    expect: &Expect<'_>,
    opts: &FetchOptions,
) -> Result<Got> {
    let mut sink = Part::create(part)?;
    let bar = progress_bar(url, opts);
    let result = match classify(url)? {
        Location::Http(u) => http_download(&u, &mut sink, expect, opts, &bar),
        Location::Local(path) => copy_local(&path, &mut sink, &bar),
    };
    bar.finish_and_clear();
    result?;
    sink.finish(expect)
}

enum Location {
    Http(Url),
    Local(PathBuf),
}

fn classify(url: &str) -> Result<Location> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Ok(Location::Local(PathBuf::from(url)));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            let u = Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
            Ok(Location::Http(u))
        }
        "file" => {
            let u = Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
            let path = u.to_file_path().map_err(|()| {
                anyhow!("file URL {url:?} does not name a local absolute path (use file:///path)")
            })?;
            Ok(Location::Local(path))
        }
        other => bail!(
            "unsupported URL scheme {other:?} in {url:?}; use http://, https://, file:// or a \
             plain path"
        ),
    }
}

/// The part file being written, with the running hash of its contents.
struct Part {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    len: u64,
}

impl Part {
    fn create(path: &Path) -> Result<Part> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot create part file {}", path.display()))?;
        Ok(Part {
            file,
            path: path.to_path_buf(),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .with_context(|| format!("cannot write part file {}", self.path.display()))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Throws away what was written so far.
    fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .with_context(|| format!("cannot truncate part file {}", self.path.display()))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Flushes the part file to disk and checks it against `expect`.
    fn finish(self, expect: &Expect<'_>) -> Result<Got> {
        self.file
            .sync_all()
            .with_context(|| format!("cannot flush part file {}", self.path.display()))?;
        let sha256 = hex_digest(self.hasher);
        if let Some(want) = expect.sha256
            && want != sha256
        {
            bail!(
                "sha256 mismatch: expected {want}, got {sha256} ({} bytes)",
                self.len
            );
        }
        if let Some(want) = expect.size
            && want != self.len
        {
            bail!("size mismatch: expected {want} bytes, got {}", self.len);
        }
        Ok(Got {
            sha256,
            size: self.len,
        })
    }
}

fn copy_local(path: &Path, sink: &mut Part, bar: &ProgressBar) -> Result<()> {
    let mut src = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if let Ok(meta) = src.metadata() {
        bar.set_length(meta.len());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        sink.write(&buf[..n])?;
        bar.set_position(sink.len);
    }
}

/// How one HTTP attempt failed.
enum Failure {
    /// Worth retrying (connection trouble, timeout, 5xx): the part file is kept for resuming.
    Retry(anyhow::Error),
    /// This URL will not work (404, wrong size, disk error).
    Fatal(anyhow::Error),
}

fn http_download(
    url: &Url,
    sink: &mut Part,
    expect: &Expect<'_>,
    opts: &FetchOptions,
    bar: &ProgressBar,
) -> Result<()> {
    // The blocking client's `timeout` bounds the wait for the response head and for each read
    // of the body, which is exactly a stall timeout.
    let client = Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.read_timeout)
        .user_agent(concat!("hc1img/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot set up the HTTP client")?;
    resolve(url)?;
    let mut failed_in_row = 0u32;
    let mut delay = opts.backoff;
    let mut high_water = 0u64;
    loop {
        let err = match attempt(&client, url, sink, expect, opts, bar) {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => e,
        };
        if sink.len > high_water {
            // This attempt got further than any before: resume at once, with a fresh budget.
            high_water = sink.len;
            failed_in_row = 0;
            delay = opts.backoff;
            continue;
        }
        if failed_in_row >= opts.retries {
            let tries = opts.retries + 1;
            return Err(err.context(format!("gave up after {tries} attempt(s) without progress")));
        }
        failed_in_row += 1;
        std::thread::sleep(delay);
        delay = delay.saturating_mul(2);
    }
}

fn attempt(
    client: &Client,
    url: &Url,
    sink: &mut Part,
    expect: &Expect<'_>,
    opts: &FetchOptions,
    bar: &ProgressBar,
) -> Result<(), Failure> {
    let fatal = Failure::Fatal;
    let offset = sink.len;
    let mut req = client.get(url.clone());
    if offset > 0 {
        req = req.header(RANGE, format!("bytes={offset}-"));
    }
    let mut resp = req
        .send()
        .map_err(|e| Failure::Retry(anyhow!("{}", describe_reqwest(&e, opts))))?;
    let status = resp.status();
    let total = match status {
        StatusCode::OK => {
            if offset > 0 {
                // The server ignored our Range request: start over.
                sink.restart().map_err(fatal)?;
            }
            resp.content_length()
        }
        StatusCode::PARTIAL_CONTENT => {
            let range = content_range(&resp);
            match range {
                Some((start, total)) if start == offset => total,
                _ => {
                    sink.restart().map_err(fatal)?;
                    return Err(Failure::Retry(anyhow!(
                        "HTTP 206 with Content-Range {:?} does not continue at byte {offset}; \
                         restarting",
                        header_str(&resp, CONTENT_RANGE)
                    )));
                }
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
            // `bytes */N` with N == offset: we already have everything.
            if unsatisfied_total(&resp) == Some(offset) {
                return Ok(());
            }
            sink.restart().map_err(fatal)?;
            return Err(Failure::Retry(anyhow!(
                "HTTP {status} for a resume at byte {offset}; restarting"
            )));
        }
        s if s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS
            || s.is_server_error() =>
        {
            return Err(Failure::Retry(anyhow!("HTTP {status}")));
        }
        _ => return Err(fatal(anyhow!("HTTP {status}"))),
    };
    if let (Some(total), Some(want)) = (total, expect.size)
        && total != want
    {
        return Err(fatal(anyhow!(
            "server says the file has {total} bytes, the source pins size = {want}"
        )));
    }
    if let Some(total) = total {
        bar.set_length(total);
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure::Retry(anyhow!(
                    "transfer broke off after {} bytes: {}",
                    sink.len,
                    describe_io(&e, opts)
                )));
            }
        };
        sink.write(&buf[..n]).map_err(fatal)?;
        bar.set_position(sink.len);
        if let Some(want) = expect.size
            && sink.len > want
        {
            return Err(fatal(anyhow!(
                "server sent more than the pinned size = {want} bytes"
            )));
        }
    }
    match total {
        Some(total) if sink.len < total => Err(Failure::Retry(anyhow!(
            "connection closed after {} of {total} bytes",
            sink.len
        ))),
        Some(total) if sink.len > total => Err(fatal(anyhow!(
            "server sent {} bytes but announced {total}",
            sink.len
        ))),
        _ => Ok(()),
    }
}

fn header_str(resp: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL if not `*`).
fn content_range(resp: &Response) -> Option<(u64, Option<u64>)> {
    parse_content_range(&header_str(resp, CONTENT_RANGE)?)
}

fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// `Content-Range: bytes */TOTAL` (sent with 416) → TOTAL.
fn unsatisfied_total(resp: &Response) -> Option<u64> {
    header_str(resp, CONTENT_RANGE)?
        .trim()
        .strip_prefix("bytes */")?
        .trim()
        .parse()
        .ok()
}

fn stalled(opts: &FetchOptions) -> String {
    format!(
        "timed out: the server sent nothing for {:?} (read timeout)",
        opts.read_timeout
    )
}

fn describe_reqwest(e: &reqwest::Error, opts: &FetchOptions) -> String {
    if e.is_timeout() {
        if e.is_connect() {
            return format!("timed out connecting after {:?}", opts.connect_timeout);
        }
        return stalled(opts);
    }
    chain(e)
}

fn describe_io(e: &std::io::Error, opts: &FetchOptions) -> String {
    let inner_timeout = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<reqwest::Error>())
        .is_some_and(reqwest::Error::is_timeout);
    if e.kind() == std::io::ErrorKind::TimedOut || inner_timeout {
        return stalled(opts);
    }
    chain(e)
}

/// An error and its sources, joined with ": ", skipping repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn progress_bar(url: &str, opts: &FetchOptions) -> ProgressBar {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_owned();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(name);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn url_classification() -> Result<()> {
        assert!(matches!(classify("https://e.org/a")?, Location::Http(_)));
        assert!(matches!(classify("HTTP://e.org/a")?, Location::Http(_)));
        match classify("file:///tmp/a%20b")? {
            Location::Local(p) => assert_eq!(p, PathBuf::from("/tmp/a b")),
            Location::Http(_) => bail!("file URL classified as HTTP"),
        }
        match classify("rel/path.tar.gz")? {
            Location::Local(p) => assert_eq!(p, PathBuf::from("rel/path.tar.gz")),
            Location::Http(_) => bail!("path classified as HTTP"),
        }
        assert!(classify("ftp://e.org/a").is_err());
        assert!(classify("file://remotehost/a").is_err());
        Ok(())
    }
}
