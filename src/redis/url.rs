//! The `--redis` value: where the Redis server is and how to log in, as a [`Target`].
//!
//! Accepted forms (the usual Redis URL conventions, without TLS):
//!
//! ```text
//! redis://[[user]:password@]host[:port][/db]    port 6379 by default, IPv6 as [::1]
//! unix:///path/to.sock[?db=N]
//! /path/to.sock                                 the whole value is the path
//! ```
//!
//! User and password are percent-decoded (`%40` for `@`), so any byte can be written.

use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// Redis' own default port.
const DEFAULT_PORT: u16 = 6379;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP address (IPv6 without brackets) and a port.
    Tcp {
        /// The host name or address.
        host: String,
        /// The TCP port.
        port: u16,
    },
    /// A Unix domain socket's path.
    Unix(PathBuf),
}

/// A parsed `--redis` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The ACL user for `AUTH user password`; `None`: `AUTH password` (the default user).
    pub user: Option<String>,
    /// The password; `None`: no `AUTH`.
    pub password: Option<String>,
    /// The database to `SELECT`; 0 is Redis' default.
    pub db: u32,
}

/// Parses `redis://[[user]:password@]host[:port][/db]` (port 6379 by default; IPv6 as [::1]), `unix:///path/to.sock[?db=N]` or a bare absolute path `/path/to.sock`.
pub fn parse(url: &str) -> Result<Target, String> {
    if url.starts_with('/') {
        return unix(url, 0);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "invalid Redis URL {url:?}: expected redis://host[:port][/db], \
             unix:///path/to.sock or an absolute socket path"
        ));
    };
    // RFC 3986 §3.1: schemes are case-insensitive.
    match scheme.to_ascii_lowercase().as_str() {
        "redis" => tcp(rest),
        "unix" => {
            let (path, db) = match rest.split_once('?') {
                Some((path, query)) => (path, query_db(query)?),
                None => (rest, 0),
            };
            unix(path, db)
        }
        "rediss" => {
            Err("TLS to Redis is not supported; use a local stunnel or a Unix socket".into())
        }
        _ => Err(format!(
            "unsupported scheme {scheme:?} in the Redis URL: expected redis:// or unix://"
        )),
    }
}

impl Target {
    /// For log lines and /healthz: the URL without the password.
    ///
    /// A password shows as `***`, so the log says one is set; the user is kept.
    pub fn redacted(&self) -> String {
        let mut out = String::new();
        match &self.endpoint {
            Endpoint::Tcp { host, port } => {
                out.push_str("redis://");
                if let Some(user) = &self.user {
                    percent_encode(user, &mut out);
                }
                if self.password.is_some() {
                    out.push_str(":***");
                }
                if self.user.is_some() || self.password.is_some() {
                    out.push('@');
                }
                if host.contains(':') {
                    let _ = write!(out, "[{host}]:{port}/{}", self.db);
                } else {
                    let _ = write!(out, "{host}:{port}/{}", self.db);
                }
            }
            Endpoint::Unix(path) => {
                let _ = write!(out, "unix://{}?db={}", path.display(), self.db);
            }
        }
        out
    }
}

/// The part after `redis://`.
fn tcp(rest: &str) -> Result<Target, String> {
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let db = match path {
        "" | "/" => 0,
        _ => match path.strip_prefix('/') {
            Some(db) => number(db).ok_or_else(|| format!("bad db {db:?} in the Redis URL"))?,
            None => {
                return Err(format!(
                    "unexpected {path:?} after the host in the Redis URL"
                ));
            }
        },
    };
    // The last '@' ends the user info: an unencoded '@' in a password still works.
    let (user, password, host_port) = match authority.rsplit_once('@') {
        Some((info, host_port)) => {
            let Some((user, password)) = info.split_once(':') else {
                return Err(
                    "a Redis user needs a password: redis://user:password@host (or :password@ for the default user)"
                        .into(),
                );
            };
            let user = percent_decode(user, "user")?;
            let password = percent_decode(password, "password")?;
            if password.is_empty() {
                return Err("empty password in the Redis URL".into());
            }
            (
                (!user.is_empty()).then_some(user),
                Some(password),
                host_port,
            )
        }
        None => (None, None, authority),
    };
    let (host, port) = host_and_port(host_port)?;
    Ok(Target {
        endpoint: Endpoint::Tcp { host, port },
        user,
        password,
        db,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_and_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let Some((addr, after)) = bracketed.split_once(']') else {
            return Err(format!("unclosed '[' in the Redis host {text:?}"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 address {addr:?} in the Redis URL"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        };
        (addr, port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        if host.is_empty() {
            return Err("empty host in the Redis URL".into());
        }
        // A DNS name or IPv4 address; anything else is a typo, not a host.
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(format!("bad host {host:?} in the Redis URL"));
        }
        (host, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => number(port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("bad port {port:?} in the Redis URL"))?,
    };
    Ok((host.to_string(), port))
}

/// A Unix socket target; `path` must be absolute and name a file.
fn unix(path: &str, db: u32) -> Result<Target, String> {
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "bad Redis socket path {path:?}: expected an absolute path to a socket, as in unix:///run/redis.sock"
        ));
    }
    Ok(Target {
        endpoint: Endpoint::Unix(PathBuf::from(path)),
        user: None,
        password: None,
        db,
    })
}

/// `db=N`, the only query a `unix://` URL takes.
fn query_db(query: &str) -> Result<u32, String> {
    let Some(db) = query.strip_prefix("db=") else {
        return Err(format!(
            "unexpected query {query:?} in the Redis URL: only ?db=N is understood"
        ));
    };
    number(db).ok_or_else(|| format!("bad db {db:?} in the Redis URL"))
}

/// A decimal u32 of ASCII digits only (no sign, no spaces).
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str, what: &str) -> Result<String, String> {
    let bad = || format!("bad percent escape in the Redis {what}");
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes.next().and_then(hex).ok_or_else(bad)?;
        let lo = bytes.next().and_then(hex).ok_or_else(bad)?;
        out.push((hi << 4) | lo);
    }
    String::from_utf8(out).map_err(|_| format!("the Redis {what} is not UTF-8 once decoded"))
}

/// One hex digit's value.
fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Escapes what would not read back as a user name in a URL (RFC 3986 §2.3 unreserved kept).
fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_target(host: &str, port: u16, db: u32) -> Target {
        Target {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            user: None,
            password: None,
            db,
        }
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(
            parse("redis://localhost"),
            Ok(tcp_target("localhost", 6379, 0))
        );
        assert_eq!(
            parse("redis://localhost/"),
            Ok(tcp_target("localhost", 6379, 0))
        );
        assert_eq!(
            parse("redis://10.0.0.5:6380"),
            Ok(tcp_target("10.0.0.5", 6380, 0))
        );
        assert_eq!(
            parse("redis://cache.internal:7000/3"),
            Ok(tcp_target("cache.internal", 7000, 3))
        );
        assert_eq!(
            parse("REDIS://h/4294967295"),
            Ok(tcp_target("h", 6379, u32::MAX))
        );
        assert_eq!(parse("redis://[::1]"), Ok(tcp_target("::1", 6379, 0)));
        assert_eq!(
            parse("redis://[fe80::1]:6380/2"),
            Ok(tcp_target("fe80::1", 6380, 2))
        );
        assert_eq!(parse("redis://h:65535"), Ok(tcp_target("h", 65535, 0)));
    }

    #[test]
    fn user_and_password() {
        let t = parse("redis://:s3cret@h").unwrap();
        assert_eq!((t.user, t.password), (None, Some("s3cret".into())));
        let t = parse("redis://app:pw@h:1/2").unwrap();
        assert_eq!(t.user.as_deref(), Some("app"));
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(t.endpoint, tcp_target("h", 1, 2).endpoint);
        assert_eq!(t.db, 2);
        let t = parse("redis://a%40b:p%3A%2F%40%25%C3%A9@h").unwrap();
        assert_eq!(t.user.as_deref(), Some("a@b"));
        assert_eq!(t.password.as_deref(), Some("p:/@%é"));
        // The last '@' ends the user info.
        let t = parse("redis://:p@ss@h").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.endpoint, tcp_target("h", 6379, 0).endpoint);
    }

    #[test]
    fn unix_forms() {
        let sock = |p: &str, db| Target {
            endpoint: Endpoint::Unix(PathBuf::from(p)),
            user: None,
            password: None,
            db,
        };
        assert_eq!(
            parse("unix:///run/redis.sock"),
            Ok(sock("/run/redis.sock", 0))
        );
        assert_eq!(
            parse("unix:///run/redis.sock?db=5"),
            Ok(sock("/run/redis.sock", 5))
        );
        assert_eq!(
            parse("/var/run/redis/redis.sock"),
            Ok(sock("/var/run/redis/redis.sock", 0))
        );
        // A bare path is taken whole.
        assert_eq!(parse("/tmp/odd?name"), Ok(sock("/tmp/odd?name", 0)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("rediss://h"),
            Err("TLS to Redis is not supported; use a local stunnel or a Unix socket".into())
        );
        for (url, want) in [
            ("localhost:6379", "invalid Redis URL"),
            ("", "invalid Redis URL"),
            ("run/redis.sock", "invalid Redis URL"),
            ("http://h", "unsupported scheme \"http\""),
            ("redis+unix:///s", "unsupported scheme"),
            ("redis://", "empty host"),
            ("redis://:6379", "empty host"),
            ("redis://:pw@", "empty host"),
            ("redis://:pw@/1", "empty host"),
            ("redis://h:", "bad port"),
            ("redis://h:0", "bad port"),
            ("redis://h:65536", "bad port"),
            ("redis://h:+1", "bad port"),
            ("redis://h:abc", "bad port"),
            ("redis://h:1:2", "bad port"),
            ("redis://h/x", "bad db"),
            ("redis://h/-1", "bad db"),
            ("redis://h/4294967296", "bad db"),
            ("redis://h/1/2", "bad db"),
            ("redis://h/1?x=y", "bad db"),
            ("redis://h?db=1", "unexpected \"?db=1\""),
            ("redis://h#frag", "unexpected"),
            ("redis://h x", "bad host"),
            ("redis://h%41", "bad host"),
            ("redis://[::1", "unclosed '['"),
            ("redis://[::1]x", "unexpected \"x\" after the IPv6"),
            ("redis://[nope]", "bad IPv6 address"),
            ("redis://[]", "bad IPv6 address"),
            ("redis://[::1]:", "bad port"),
            ("redis://user@h", "needs a password"),
            ("redis://user:@h", "empty password"),
            ("redis://:%zz@h", "bad percent escape in the Redis password"),
            ("redis://%4@h", "needs a password"),
            ("redis://%4:p@h", "bad percent escape in the Redis user"),
            ("redis://:%ff@h", "not UTF-8"),
            ("unix://", "bad Redis socket path"),
            ("unix://run/redis.sock", "bad Redis socket path"),
            ("unix:///run/", "bad Redis socket path"),
            ("unix:///s?db=x", "bad db"),
            ("unix:///s?db=", "bad db"),
            ("unix:///s?password=x", "only ?db=N"),
        ] {
            let err = parse(url).expect_err(url);
            assert!(err.contains(want), "{url:?}: {err:?}");
        }
    }

    #[test]
    fn redacted_hides_the_password() {
        for (url, shown) in [
            ("redis://h", "redis://h:6379/0"),
            ("redis://:s3cret@h:1/2", "redis://:***@h:1/2"),
            (
                "redis://a%40b:s3cret@[::1]",
                "redis://a%40b:***@[::1]:6379/0",
            ),
            ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
            ("/run/redis.sock", "unix:///run/redis.sock?db=0"),
        ] {
            let t = parse(url).unwrap();
            assert_eq!(t.redacted(), shown);
            assert!(!t.redacted().contains("s3cret"));
        }
        // Without a password it reads back as the same target.
        for url in ["redis://[::1]:7/8", "unix:///s?db=9"] {
            let t = parse(url).unwrap();
            assert_eq!(parse(&t.redacted()), Ok(t));
        }
    }
}
