//! The validated value types of the profile format: each rule about what a value may be lives
//! here once, in the type's constructor, and runs while the profile is deserialised, so a wrong
//! value is refused before any fetch with the location of the key (`FILE:LINE: key.path:
//! message`, added by the profile reader around the message written here).
//!
//! String-like types keep the text as written and serialise it unchanged (the derivation hash
//! of a profile does not change by being checked); enums serialise as their lower-case names.
//! The syntax followed: host names RFC 1123 §2.1 (labels of letters, digits and `-`), time
//! zones the tz database's names (`tzfile(5)`, `/usr/share/zoneinfo/NAME`), unit names
//! `systemd.unit(5)`, calendar expressions and time spans `systemd.time(7)`, cron schedules
//! `crontab(5)`, journald's `Storage=` and sizes `journald.conf(5)`, I/O schedulers the Linux
//! block layer's `queue/scheduler`, mirror URLs pacman's `Server =` lines (`pacman.conf(5)`).
//! A rule that needs the root tree (does the zone file exist?) stays in the section's apply
//! step; this module depends on nothing else in the crate but [`crate::template`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A string newtype whose constructor checks `$check(&str) -> Result<(), String>`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Check `s`; the error is one sentence without location.
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                $check(&s)?;
                Ok(Self(s))
            }

            /// A value the program itself supplies (a default); checked in debug builds and
            /// by this module's tests.
            #[allow(dead_code, reason = "not every value type has a default")]
            pub(crate) fn known(s: &str) -> Self {
                debug_assert!($check(s).is_ok(), "{s:?}");
                Self(s.to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, o: &str) -> bool {
                self.0 == o
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, o: &&str) -> bool {
                self.0 == *o
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Checked inside the visitor, so the reader locates the error at the value.
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// A host name (RFC 1123): dot-separated labels of letters, digits and `-` (not first or
/// last), each at most 63 characters, at most 64 in all (Linux's `HOST_NAME_MAX`).
pub fn check_hostname(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{h:?} is not a valid host name (letters, digits, `-`, dot-separated labels, at most 64 characters)"
        ))
    }
}

/// The placeholders a host name template may use (filled at first boot from the Ethernet MAC:
/// its last six hex digits, or all twelve).
pub const HOSTNAME_PLACEHOLDERS: &[&str] = &["mac6", "mac"];

fn check_hostname_template(h: &str) -> Result<(), String> {
    let names = crate::template::placeholders(h).map_err(|e| format!("{h:?}: {e}"))?;
    for p in &names {
        if !HOSTNAME_PLACEHOLDERS.contains(&p.as_str()) {
            return Err(format!(
                "{h:?}: unknown placeholder {{{p}}} (known: {})",
                HOSTNAME_PLACEHOLDERS
                    .iter()
                    .map(|v| format!("{{{v}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    // The literal parts with every placeholder standing for a short label.
    let vars = names
        .into_iter()
        .map(|n| (n, "a0b1c2".to_string()))
        .collect();
    let sample = crate::template::render(h, &vars).map_err(|e| format!("{h:?}: {e}"))?;
    check_hostname(&sample).map_err(|_| {
        format!(
            "{h:?}: a host name is dot-separated labels of letters, digits and '-' (not at a label's start or end), at most 64 characters"
        )
    })
}

checked_string!(
    /// `[system] hostname`: a fixed host name, or a template such as `"hc1-{mac6}"` that the
    /// first boot fills in ([`HOSTNAME_PLACEHOLDERS`]).
    HostnameTemplate,
    check_hostname_template
);

impl HostnameTemplate {
    /// Whether the name has placeholders (set at first boot) rather than being fixed.
    pub fn is_template(&self) -> bool {
        self.0.contains(['{', '}'])
    }
}

fn check_time_zone(tz: &str) -> Result<(), String> {
    let ok = !tz.is_empty()
        && !tz.starts_with('/')
        && !tz.split('/').any(|c| c.is_empty() || c.starts_with('.'))
        && tz
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_+-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tz:?}: expected a zoneinfo name like \"Europe/Paris\" or \"UTC\""
        ))
    }
}

checked_string!(
    /// A tz database zone name (`Europe/Paris`, `UTC`): relative, no `.`-components.
    TimeZone,
    check_time_zone
);

fn check_locale(v: &str) -> Result<(), String> {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{v:?}: expected a locale like \"C.UTF-8\" or \"en_US.UTF-8\""
        ))
    }
}

checked_string!(
    /// A locale name (`LANG=` of `locale.conf(5)`): `C.UTF-8`, `en_US.UTF-8`, `de_DE@euro`.
    Locale,
    check_locale
);

fn check_keymap(v: &str) -> Result<(), String> {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!("{v:?}: expected a keymap like \"us\""))
    }
}

checked_string!(
    /// A console keymap (`KEYMAP=` of `vconsole.conf(5)`): `us`, `de-latin1`.
    Keymap,
    check_keymap
);

fn check_abs_path(p: &str) -> Result<(), String> {
    let ok = p.starts_with('/')
        && p.len() > 1
        && p.trim_matches('/').split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{p:?} must be an absolute path of letters, digits, `_`, `-`, `.` (no `.` or `..` components)"
        ))
    }
}

checked_string!(
    /// An absolute path on the node made of plain components (letters, digits, `_`, `-`,
    /// `.`; no `.` or `..`), not `/` itself: safe in a unit file, a shell variable and a path
    /// below the root tree.
    AbsPath,
    check_abs_path
);

fn check_unit_name(unit: &str) -> Result<(), String> {
    let ok_suffix = [
        ".service", ".socket", ".timer", ".target", ".path", ".mount",
    ]
    .iter()
    .any(|s| unit.ends_with(s) && unit.len() > s.len());
    let ok_chars = unit
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    if ok_suffix && ok_chars {
        Ok(())
    } else {
        Err(format!(
            "{unit:?} is not a systemd unit name (like `docker.service`)"
        ))
    }
}

checked_string!(
    /// A systemd unit name with its type suffix (`docker.service`, `multi-user.target`).
    UnitName,
    check_unit_name
);

/// Split `HOST[:PORT]`; the host is letters, digits, `.`, `-`, `_`, the port 1–65535.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|n| *n > 0)?),
    };
    host_ok.then_some((host, port))
}

fn check_host_port(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Some((_, Some(_))) => Ok(()),
        _ => Err(format!(
            "{s:?}: expected HOST:PORT, like \"smtp.example.org:587\""
        )),
    }
}

checked_string!(
    /// `HOST:PORT` with the port required (a mail relay).
    HostPort,
    check_host_port
);

impl HostPort {
    /// The host and the port.
    pub fn parts(&self) -> (&str, u16) {
        match split_host_port(&self.0) {
            Some((h, Some(p))) => (h, p),
            // The constructor made sure of both.
            _ => (&self.0, 0),
        }
    }
}

fn check_endpoint(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Some(_) => Ok(()),
        None => Err(format!("{s:?}: expected HOST or HOST:PORT")),
    }
}

checked_string!(
    /// `HOST` or `HOST:PORT` (a swarm manager; the port defaults where it is used).
    Endpoint,
    check_endpoint
);

fn check_mode(m: &str) -> Result<(), String> {
    match u16::from_str_radix(m, 8) {
        Ok(v) if v <= 0o7777 && m.len() <= 5 && !m.starts_with('+') => Ok(()),
        _ => Err(format!("{m:?}: expected an octal mode like \"0755\"")),
    }
}

checked_string!(
    /// A file mode written in octal (`"0755"`, `"644"`), at most `07777`.
    Mode,
    check_mode
);

impl Mode {
    /// The permission bits.
    pub fn bits(&self) -> u16 {
        u16::from_str_radix(&self.0, 8).unwrap_or(0)
    }
}

fn check_calendar(v: &str) -> Result<(), String> {
    let ok = !v.trim().is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" *:,./~-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a systemd calendar expression like \"daily\" or \"*-*-* 04:00:00\""
        ))
    }
}

checked_string!(
    /// A systemd calendar expression (`OnCalendar=`): `daily`, `*-*-* 04:00:00`,
    /// `Mon..Fri 02:30`. The characters are checked here; systemd parses it on the node.
    CalendarSpec,
    check_calendar
);

fn check_timespan(v: &str) -> Result<(), String> {
    let ok = !v.trim().is_empty()
        && v.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a systemd time span like \"30min\" or \"1h\""
        ))
    }
}

checked_string!(
    /// A systemd time span (`RandomizedDelaySec=`): `0`, `30min`, `1h 30min`.
    TimeSpan,
    check_timespan
);

/// The `@` nicknames cron accepts in place of five fields.
pub const CRON_NICKNAMES: &[&str] = &[
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn check_cron_schedule(s: &str) -> Result<(), String> {
    let t = s.trim();
    if CRON_NICKNAMES.contains(&t) {
        return Ok(());
    }
    let fields: Vec<&str> = t.split_whitespace().collect();
    let ok = fields.len() == 5
        && fields.iter().all(|f| {
            f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*,-/".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{t:?} is not a cron schedule: give five fields like \"30 3 * * *\" or one of {}",
            CRON_NICKNAMES.join(", ")
        ))
    }
}

checked_string!(
    /// A crontab schedule: five fields of digits, `*`, `,`, `-`, `/` and month/day names, or
    /// one of [`CRON_NICKNAMES`].
    CronSchedule,
    check_cron_schedule
);

fn check_journald_size(v: &str) -> Result<(), String> {
    let digits = v.trim_end_matches(['K', 'M', 'G', 'T', 'P', 'E']);
    let ok = !digits.is_empty()
        && digits.len() + 1 >= v.len()
        && digits.bytes().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?}: expected journald's size syntax, like \"50M\""
        ))
    }
}

/// A portable user or group name (`useradd(8)`'s rule): `[a-z_][a-z0-9_-]*`, at most 32.
pub fn is_user_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_')
        && s.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

checked_string!(
    /// A journald size (`SystemMaxUse=`): digits with an optional `K`, `M`, `G`, `T`, `P` or
    /// `E` (powers of 1024).
    JournaldSize,
    check_journald_size
);

/// One word: no whitespace, control characters, quotes or backslashes (a value that goes into
/// a kernel command line, a `KEY=value` line or a unit file as one token).
pub fn is_word(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
}

fn check_mirror_url(sv: &str) -> Result<(), String> {
    let scheme = ["http://", "https://", "file://"]
        .iter()
        .any(|p| sv.len() > p.len() && sv.starts_with(p));
    if !scheme || !is_word(sv) {
        return Err(format!(
            "{sv:?}: expected an http(s):// or file:// URL like \"http://mirror.archlinuxarm.org/$arch/$repo\""
        ));
    }
    if !sv.contains("$repo") {
        return Err(format!(
            "{sv:?}: lacks `$repo` (Arch Linux ARM mirrors end in /$arch/$repo)"
        ));
    }
    Ok(())
}

checked_string!(
    /// A pacman mirror (`Server =` of `pacman.conf(5)`): an http(s):// or file:// URL with
    /// `$repo` (and usually `$arch`) left for pacman to fill in.
    MirrorUrl,
    check_mirror_url
);

/// journald's `Storage=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournaldStorage {
    Volatile,
    Persistent,
    Auto,
    None,
}

impl JournaldStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            JournaldStorage::Volatile => "volatile",
            JournaldStorage::Persistent => "persistent",
            JournaldStorage::Auto => "auto",
            JournaldStorage::None => "none",
        }
    }
}

impl fmt::Display for JournaldStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Linux block I/O scheduler (`/sys/block/*/queue/scheduler`): the multi-queue ones and
/// the legacy names older kernels used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoScheduler {
    MqDeadline,
    Bfq,
    Kyber,
    None,
    Deadline,
    Noop,
    Cfq,
}

impl IoScheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            IoScheduler::MqDeadline => "mq-deadline",
            IoScheduler::Bfq => "bfq",
            IoScheduler::Kyber => "kyber",
            IoScheduler::None => "none",
            IoScheduler::Deadline => "deadline",
            IoScheduler::Noop => "noop",
            IoScheduler::Cfq => "cfq",
        }
    }
}

impl fmt::Display for IoScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The closest candidate by edit distance, when it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(key, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let (d, c) = best?;
    let limit = (key.chars().count().max(c.chars().count()) / 3).max(2);
    (d <= limit).then_some(c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T: for<'de> Deserialize<'de>>(s: &str) -> T {
        serde_json::from_value(serde_json::Value::String(s.into()))
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn bad<T: for<'de> Deserialize<'de> + fmt::Debug>(s: &str) -> String {
        serde_json::from_value::<T>(serde_json::Value::String(s.into()))
            .expect_err(s)
            .to_string()
    }

    #[test]
    fn each_type_accepts_the_usual_and_refuses_the_wrong() {
        assert!(!ok::<HostnameTemplate>("hc1-{mac6}").is_empty());
        assert!(ok::<HostnameTemplate>("hc1-{mac6}").is_template());
        assert!(!ok::<HostnameTemplate>("node1.lan").is_template());
        assert!(bad::<HostnameTemplate>("hc1-{ip}").contains("unknown placeholder {ip}"));
        assert!(bad::<HostnameTemplate>("-hc1").contains("dot-separated labels"));
        ok::<TimeZone>("Europe/Paris");
        ok::<AbsPath>("/mnt/backup");
        assert!(bad::<AbsPath>("/boot/../etc").contains("absolute path"));
        assert!(bad::<AbsPath>("boot/seed").contains("absolute path"));
        ok::<Locale>("en_US.UTF-8");
        assert!(bad::<Locale>("en US").contains("expected a locale"));
        ok::<Keymap>("de-latin1");
        assert!(bad::<Keymap>("us;rm").contains("expected a keymap"));
        assert!(bad::<TimeZone>("../etc/passwd").contains("zoneinfo name"));
        ok::<UnitName>("docker.service");
        assert!(bad::<UnitName>("docker").contains("not a systemd unit name"));
        assert_eq!(ok::<HostPort>("smtp.lan:587").parts(), ("smtp.lan", 587));
        assert!(bad::<HostPort>("smtp.lan").contains("expected HOST:PORT"));
        assert!(bad::<HostPort>("smtp.lan:0").contains("expected HOST:PORT"));
        ok::<Endpoint>("mgr1");
        ok::<Endpoint>("mgr1:2377");
        assert!(bad::<Endpoint>("mgr 1").contains("expected HOST or HOST:PORT"));
        assert_eq!(ok::<Mode>("0755").bits(), 0o755);
        assert!(bad::<Mode>("0855").contains("octal mode"));
        assert!(bad::<Mode>("+755").contains("octal mode"));
        ok::<CalendarSpec>("*-*-* 04:00:00");
        assert!(bad::<CalendarSpec>("daily;reboot").contains("calendar expression"));
        ok::<TimeSpan>("1h 30min");
        assert!(bad::<TimeSpan>("soon").contains("time span"));
        ok::<CronSchedule>("@daily");
        ok::<CronSchedule>("30 3 * * mon");
        assert!(bad::<CronSchedule>("30 3 * *").contains("not a cron schedule"));
        ok::<JournaldSize>("50M");
        assert!(bad::<JournaldSize>("50 MB").contains("size syntax"));
        ok::<MirrorUrl>("http://mirror.archlinuxarm.org/$arch/$repo");
        assert!(bad::<MirrorUrl>("http://mirror.example.org/").contains("lacks `$repo`"));
        assert!(bad::<MirrorUrl>("ftp://x/$repo").contains("http(s)://"));
        assert_eq!(
            ok::<JournaldStorage>("persistent"),
            JournaldStorage::Persistent
        );
        assert!(bad::<JournaldStorage>("disk").contains("unknown variant"));
        assert_eq!(ok::<IoScheduler>("mq-deadline"), IoScheduler::MqDeadline);
        assert!(bad::<IoScheduler>("fifo").contains("unknown variant"));
    }

    #[test]
    fn values_serialise_as_written() {
        let m = ok::<Mode>("644");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"644\"");
        assert_eq!(
            serde_json::to_string(&IoScheduler::MqDeadline).unwrap(),
            "\"mq-deadline\""
        );
        for s in [JournaldStorage::Volatile, JournaldStorage::None] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
