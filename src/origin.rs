//! Which pages may open a WebSocket here: the `Origin` check of RFC 6455 §10.2.
//!
//! A browser sends `Origin` with every WebSocket handshake, and any page can try to connect to
//! any server (cross-site WebSocket hijacking). The default admits clients that send no
//! `Origin` (they are not browsers, §4.1: only "browser clients" MUST send it) and pages served
//! from the same host and port the client connected to (its `Host`); `--allow-origin` adds more.
//!
//! A refusal is invisible to the page's user (the browser says only that the connection
//! failed), so the operator hears of it: [`RefusalLog`] says which refusals to log, at most one
//! line per origin per minute so a flood of them cannot fill the journal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an origin's refusals stay unlogged after one is logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Origins remembered as recently logged; when full the memory is cleared (so an origin may
/// be logged again early, but a flood of distinct origins cannot grow the table).
const REMEMBERED: usize = 1024;

/// Bytes of an origin that tell it apart in the table (real ones are far shorter; the head
/// cap bounds the rest), so the table holds at most 1024 × 256 bytes of keys.
const KEY_BYTES: usize = 256;

/// Lines logged per [`LOG_INTERVAL`] at most, over all origins: many distinct origins in a
/// minute are a flood, and the metrics count them anyway.
const LINES_PER_INTERVAL: u32 = 60;

/// The set of origins a server accepts; built once from the flags.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Origins admitted besides the same-origin ones, as (scheme, host, port), lowercased and
    /// with the scheme's default port filled in, since browsers leave it out.
    allow: Vec<(Box<str>, Box<str>, u16)>,
    /// `--allow-origin null`: sandboxed pages and `file:` URLs.
    null: bool,
    /// `--allow-origin '*'`: every origin.
    any: bool,
}

impl OriginPolicy {
    /// A policy from `--allow-origin` values: `*` for any, else `scheme://host[:port]`.
    pub fn new<S: AsRef<str>>(origins: &[S]) -> Self {
        let mut policy = Self::default();
        for origin in origins {
            let origin = origin.as_ref().trim();
            let origin = origin.strip_suffix('/').unwrap_or(origin);
            if origin == "*" {
                policy.any = true;
            } else if origin.eq_ignore_ascii_case("null") {
                policy.null = true;
            } else if let Some(entry) = normal(origin.as_bytes()) {
                policy.allow.push(entry);
            }
        }
        policy
    }

    /// Every origin is admitted.
    pub fn any() -> Self {
        Self {
            allow: Vec::new(),
            null: false,
            any: true,
        }
    }

    /// Whether every origin is admitted (`--allow-origin '*'`).
    pub fn admits_any(&self) -> bool {
        self.any
    }

    /// Whether a handshake with these `Origin` and `Host` fields is admitted.
    pub fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        self.any
            || (self.null && origin == b"null")
            || (!self.allow.is_empty() && normal(origin).is_some_and(|o| self.allow.contains(&o)))
            || host.is_some_and(|h| same_origin(origin, h))
    }

    /// Whether `--allow-origin` can take `value`: `*`, `null` or `scheme://host[:port]`.
    pub fn valid_entry(value: &str) -> bool {
        let v = value.trim();
        let v = v.strip_suffix('/').unwrap_or(v);
        v == "*" || v.eq_ignore_ascii_case("null") || normal(v.as_bytes()).is_some()
    }
}

/// Whether to log a refused origin, from [`RefusalLog::note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Log it.
    Log,
    /// Log it, and say that more refusals are not logged for the rest of the minute.
    LogLast,
    /// Logged recently enough: stay quiet.
    Quiet,
}

/// Which origins' refusals were logged recently. Sans IO: the time comes in as `now`.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Origins (their first [`KEY_BYTES`]) and when each was last logged.
    logged: HashMap<Box<[u8]>, Instant>,
    /// When the current [`LOG_INTERVAL`] of the overall line budget started.
    window: Option<Instant>,
    /// Lines logged in that interval.
    lines: u32,
}

impl RefusalLog {
    /// A refusal of `origin` at `now`: whether to log it.
    pub fn note(&mut self, now: Instant, origin: &[u8]) -> Note {
        let key = origin.get(..KEY_BYTES).unwrap_or(origin);
        if self
            .logged
            .get(key)
            .is_some_and(|&at| now.saturating_duration_since(at) < LOG_INTERVAL)
        {
            return Note::Quiet;
        }
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= LOG_INTERVAL)
        {
            self.window = Some(now);
            self.lines = 0;
        }
        if self.lines >= LINES_PER_INTERVAL {
            return Note::Quiet;
        }
        self.lines += 1;
        if self.logged.len() >= REMEMBERED && !self.logged.contains_key(key) {
            self.logged = HashMap::new();
        }
        self.logged.insert(key.into(), now);
        if self.lines == LINES_PER_INTERVAL {
            Note::LogLast
        } else {
            Note::Log
        }
    }
}

/// An origin as (scheme, host, port), lowercased, the port defaulted by the scheme; `None`
/// unless it is `http` or `https` with a host and nothing after the port (RFC 6454 §6.2).
fn normal(origin: &[u8]) -> Option<(Box<str>, Box<str>, u16)> {
    let (scheme, authority) = split_scheme(origin)?;
    let scheme = std::str::from_utf8(scheme).ok()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (host, port) = split_port(authority, default_port)?;
    let host = std::str::from_utf8(host).ok()?.to_ascii_lowercase();
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return None;
    }
    Some((scheme.into(), host.into(), port))
}

/// Whether `origin` (RFC 6454 §6.1: `scheme "://" host [ ":" port ]`) names the same host and
/// port as a `Host` field (RFC 9110 §7.2: `host [ ":" port ]`); a missing port is the scheme's.
fn same_origin(origin: &[u8], host: &[u8]) -> bool {
    let Some((scheme, authority)) = split_scheme(origin) else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case(b"https") {
        443
    } else if scheme.eq_ignore_ascii_case(b"http") {
        80
    } else {
        return false;
    };
    match (
        split_port(authority, default_port),
        split_port(host, default_port),
    ) {
        (Some((a, ap)), Some((b, bp))) => ap == bp && a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// `https://h:1` -> (`https`, `h:1`).
fn split_scheme(origin: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = origin.windows(3).position(|w| w == b"://")?;
    Some((origin.get(..at)?, origin.get(at + 3..)?))
}

/// `h:8080` -> (`h`, 8080); `[::1]:80` -> (`[::1]`, 80); `h` -> (`h`, default).
fn split_port(authority: &[u8], default: u16) -> Option<(&[u8], u16)> {
    // An IPv6 literal holds colons of its own; the port comes after its `]`.
    let port_from = authority
        .iter()
        .rposition(|&b| b == b']')
        .map_or(0, |i| i + 1);
    let tail = authority.get(port_from..)?;
    match tail.iter().position(|&b| b == b':') {
        None => (!authority.is_empty()).then_some((authority, default)),
        Some(i) => {
            let colon = port_from + i;
            let port = std::str::from_utf8(authority.get(colon + 1..)?)
                .ok()?
                .parse()
                .ok()?;
            Some((authority.get(..colon)?, port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_origin_per_interval() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note(t0, b"http://localhost:3000"), Note::Log);
        assert_eq!(log.note(t0, b"http://localhost:3000"), Note::Quiet);
        assert_eq!(log.note(t0, b"http://evil.example"), Note::Log);
        let later = t0 + LOG_INTERVAL - Duration::from_millis(1);
        assert_eq!(log.note(later, b"http://localhost:3000"), Note::Quiet);
        assert_eq!(
            log.note(t0 + LOG_INTERVAL, b"http://localhost:3000"),
            Note::Log
        );
        // A clock that steps back does not panic or log twice.
        assert_eq!(log.note(t0, b"http://evil.example"), Note::Quiet);
    }

    #[test]
    fn a_flood_of_distinct_origins_is_bounded_in_lines_and_memory() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let mut lines = 0;
        let mut last = 0;
        for i in 0..5000u32 {
            // Long origins: only their first KEY_BYTES are kept.
            let origin = format!("http://{i}.{}", "a".repeat(1000));
            match log.note(t0 + Duration::from_millis(i.into()), origin.as_bytes()) {
                Note::Log => lines += 1,
                Note::LogLast => last += 1,
                Note::Quiet => {}
            }
            assert!(log.logged.len() <= REMEMBERED);
            assert!(log.logged.keys().all(|k| k.len() <= KEY_BYTES));
        }
        assert_eq!((lines + last, last), (LINES_PER_INTERVAL, 1));
        // The next interval has a budget again.
        let next = t0 + LOG_INTERVAL * 2;
        assert_eq!(log.note(next, b"http://new.example"), Note::Log);
        // The table is cleared when full, never grown past its cap.
        let mut log = RefusalLog::default();
        for i in 0..3000u32 {
            let at = t0 + LOG_INTERVAL * (i / LINES_PER_INTERVAL + 1);
            log.note(at, format!("http://{i}.example").as_bytes());
            assert!(log.logged.len() <= REMEMBERED);
        }
    }

    #[test]
    fn default_policy() {
        let p = OriginPolicy::new::<&str>(&[]);
        let yes = [
            (None, Some("x")),
            (Some("http://chat.example:8080"), Some("chat.example:8080")),
            (Some("HTTP://Chat.Example"), Some("chat.example:80")),
            (Some("https://chat.example"), Some("chat.example")),
            (Some("http://[::1]:9"), Some("[::1]:9")),
        ];
        for (origin, host) in yes {
            assert!(
                p.allows(origin.map(str::as_bytes), host.map(str::as_bytes)),
                "{origin:?} {host:?}"
            );
        }
        let no = [
            (Some("http://evil.example"), Some("chat.example")),
            (Some("http://chat.example:8081"), Some("chat.example:8080")),
            (Some("https://chat.example"), Some("chat.example:80")),
            (Some("null"), Some("chat.example")),
            (Some("ftp://chat.example"), Some("chat.example")),
            (Some("http://chat.example"), None),
            (Some("http://chat.example:x"), Some("chat.example:x")),
        ];
        for (origin, host) in no {
            assert!(
                !p.allows(origin.map(str::as_bytes), host.map(str::as_bytes)),
                "{origin:?} {host:?}"
            );
        }
    }

    #[test]
    fn allowlist_and_any() {
        let p = OriginPolicy::new(&["https://App.example/", "null"]);
        assert!(p.allows(Some(b"https://app.example"), Some(b"ws.example")));
        assert!(p.allows(Some(b"null"), Some(b"ws.example")));
        assert!(!p.allows(Some(b"https://app.example:444"), Some(b"ws.example")));
        assert!(OriginPolicy::new(&["*"]).allows(Some(b"http://x"), Some(b"y")));
        assert!(OriginPolicy::any().allows(Some(b"http://x"), None));
    }

    #[test]
    fn allowlist_entries_compare_by_scheme_host_and_port() {
        let p = OriginPolicy::new(&["https://App.example:443", "http://a", "null"]);
        let host = Some(&b"server.example"[..]);
        for yes in [
            "https://app.example",
            "HTTPS://APP.EXAMPLE:443",
            "http://a:80",
            "null",
        ] {
            assert!(p.allows(Some(yes.as_bytes()), host), "{yes}");
        }
        for no in [
            "http://app.example",
            "https://app.example:8443",
            "http://b",
            "https://a",
        ] {
            assert!(!p.allows(Some(no.as_bytes()), host), "{no}");
        }
        for ok in ["*", "null", "http://a", "https://h:1/", "http://[::1]:8080"] {
            assert!(OriginPolicy::valid_entry(ok), "{ok}");
        }
        for bad in [
            "a.example",
            "ftp://a",
            "http://",
            "http://a/path",
            "http://a:x",
        ] {
            assert!(!OriginPolicy::valid_entry(bad), "{bad}");
        }
    }
}
