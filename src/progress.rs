//! Progress and messages for long work, in one place: indicatif bars on a terminal, silence
//! otherwise (or with `-q`), and `-v` explanations of what was decided and why.
//!
//! Bars go to stderr and draw only when stderr is a terminal (indicatif's default draw
//! target hides itself otherwise), so logs and CI output stay clean.
//!
//! With `HC1IMG_TIMINGS=1` in the environment every step also prints
//! `timing: SECONDS STEP` (seconds since the first step, whatever the verbosity), so
//! `scripts/bench` can tell where a build's time goes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How chatty the tool is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    #[default]
    Normal,
    Verbose,
}

/// The reporter passed down through a build.
#[derive(Clone, Debug, Default)]
pub struct Reporter {
    pub verbosity: Verbosity,
    /// Put before every message as `[PREFIX] `: the profile, when several build at once.
    prefix: Option<String>,
}

impl Reporter {
    pub fn new(verbosity: Verbosity) -> Self {
        Reporter {
            verbosity,
            prefix: None,
        }
    }

    /// The same reporter, with every message tagged `[name] ` (the builds of one
    /// `hc1img build A.toml B.toml` run at the same time and their lines interleave).
    pub fn tagged(&self, name: &str) -> Reporter {
        Reporter {
            verbosity: self.verbosity,
            prefix: Some(name.to_string()),
        }
    }

    fn tag(&self, msg: &str) -> String {
        match &self.prefix {
            Some(p) => format!("[{p}] {msg}"),
            None => msg.to_string(),
        }
    }

    /// A step the user should see (suppressed by `-q`).
    pub fn step(&self, msg: impl AsRef<str>) {
        let msg = self.tag(msg.as_ref());
        timing(&msg);
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{msg}");
        }
    }

    /// A [`timing`] line (tagged like the messages).
    pub fn timing(&self, what: &str) {
        timing(&self.tag(what));
    }

    /// A decision explained under `-v`.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("  {}", self.tag(msg.as_ref()));
        }
    }

    /// A warning: always shown.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("warning: {}", self.tag(msg.as_ref()));
    }

    /// A byte-count bar (bytes, rate, ETA) for work of known size; hidden when quiet or when
    /// stderr is not a terminal.
    pub fn bytes_bar(&self, total: u64, what: &str) -> ProgressBar {
        if self.verbosity == Verbosity::Quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// With `HC1IMG_TIMINGS` set (non-empty), print `timing: SECONDS WHAT` to stderr, SECONDS
/// counted from the first call.
pub fn timing(what: &str) {
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    let start = START.get_or_init(|| {
        std::env::var_os("HC1IMG_TIMINGS")
            .filter(|v| !v.is_empty())
            .map(|_| Instant::now())
    });
    if let Some(t0) = start {
        eprintln!("timing: {:.3} {what}", t0.elapsed().as_secs_f64());
    }
}
