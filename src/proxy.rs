//! The client behind a trusted proxy: `--trusted-proxy` and the addresses a proxy forwards.
//!
//! Behind a reverse proxy (TLS in front, as the README advises) every connection comes from
//! the proxy's address, so the per-address limit would count all users as one. A peer listed
//! with `--trusted-proxy` is believed about its client: the client is the rightmost address in
//! `X-Forwarded-For` that is not itself a trusted proxy, or, when the request carries no
//! `X-Forwarded-For`, the rightmost such `for=` of RFC 7239 `Forwarded`. Rightmost, because
//! each proxy appends the peer it saw and only the entries appended by trusted proxies can be
//! believed: anything further left was written by the client. `X-Forwarded-For` is preferred
//! because it is what nginx's `$proxy_add_x_forwarded_for` and HAProxy's `option forwardfor`
//! write, while both pass a client's own `Forwarded` header through unchanged.
//!
//! Pure functions over the header bytes: no allocation, no panics, whatever the peer sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proto::handshake::{Forwarded, trim};

/// Characters an address entry may take, brackets, port and quotes included
/// (`"[ffff:…:ffff]:65535"` is 49); longer entries are not addresses.
const MAX_ENTRY: usize = 64;

/// An address block, `ADDR/LEN` (RFC 4632 notation, RFC 4291 §2.3 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, with the host bits cleared.
    net: IpAddr,
    /// Leading bits that must match.
    len: u8,
}

impl Cidr {
    /// Parses `ADDR` (a single address) or `ADDR/LEN`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                (a, Some(l.parse::<u8>().ok()?))
            }
            Some(_) => return None,
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return None;
        }
        Some(Self {
            net: mask(ip, len),
            len,
        })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.len) == self.net
    }
}

/// `ip` with all but its first `len` bits cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & keep))
        }
    }
}

/// The peers whose word about their client is taken (`--trusted-proxy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

impl TrustedProxies {
    /// The default: loopback (127.0.0.0/8 and ::1), where a proxy on the same host connects
    /// from; a local client that sends no forwarded address is then not limited per address.
    pub fn loopback() -> Self {
        Self {
            blocks: [
                Cidr {
                    net: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    len: 8,
                },
                Cidr {
                    net: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    len: 128,
                },
            ]
            .into(),
        }
    }

    /// The blocks listed; `none` alone (or nothing) trusts no peer.
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self { blocks }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The client a trusted proxy's request names, if it names one it can be believed about:
    /// the rightmost entry that is not a trusted proxy, from `X-Forwarded-For` if the request
    /// has it, else from `Forwarded`. `None` when there is no such entry, or when that entry
    /// is not an address (`unknown`, an obfuscated node, garbage): then nothing is known.
    pub fn client(&self, headers: &Forwarded<'_>) -> Option<IpAddr> {
        if !headers.x_forwarded_for.is_empty() {
            let entries = headers
                .x_forwarded_for
                .iter()
                .flat_map(|line| line.split(|&b| b == b','))
                .map(xff_entry);
            return self.rightmost_untrusted(entries);
        }
        let entries = headers
            .forwarded
            .iter()
            .flat_map(|line| Elements { rest: line })
            .map(forwarded_for);
        self.rightmost_untrusted(entries)
    }

    /// The last entry that is not a trusted address; `None` if there is none, or if that entry
    /// is not an address. Left to right, so nothing is collected.
    fn rightmost_untrusted(&self, entries: impl Iterator<Item = Option<IpAddr>>) -> Option<IpAddr> {
        let mut found = None;
        for entry in entries {
            match entry {
                Some(ip) if self.contains(ip) => {}
                other => found = Some(other),
            }
        }
        found.flatten().map(|ip| ip.to_canonical())
    }
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `2001:db8::1`, and the forms some proxies
/// write with a port or brackets (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn xff_entry(entry: &[u8]) -> Option<IpAddr> {
    node(trim(entry))
}

/// A node as RFC 7239 §6 writes it, unquoted: `IPv4 [":" port]`, `"[" IPv6 "]" [":" port]`;
/// also a bare IPv6 address, as `X-Forwarded-For` has it. `unknown` and obfuscated
/// identifiers (§6.2, §6.3) are not addresses.
fn node(s: &[u8]) -> Option<IpAddr> {
    if s.len() > MAX_ENTRY {
        return None;
    }
    let s = std::str::from_utf8(s).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The address in one `Forwarded` element's `for=` pair (RFC 7239 §4:
/// `forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )`,
/// `forwarded-pair = token "=" value`, `value = token / quoted-string`); `None` if it has none
/// or it is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (trim(pair.get(..eq)?), trim(pair.get(eq + 1..)?));
        if name.eq_ignore_ascii_case(b"for") {
            // §5.2: a quoted value is the node with the quotes off; a backslash escape has
            // no business in an address.
            let value = match value {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            };
            if value.contains(&b'\\') {
                return None;
            }
            found = node(value);
        }
    }
    found
}

/// The elements of one `Forwarded` line: split at commas outside quoted strings.
struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = unquoted_position(self.rest, b',').unwrap_or(self.rest.len());
        let element = self.rest.get(..end)?;
        self.rest = self.rest.get(end + 1..).unwrap_or_default();
        Some(element)
    }
}

/// The pieces of `s` between `sep`s outside quoted strings.
fn split_unquoted(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match unquoted_position(s, sep) {
            Some(i) => {
                rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// The first `sep` in `s` that is outside a quoted string (RFC 9110 §5.6.4, with its
/// backslash escapes).
fn unquoted_position(s: &[u8], sep: u8) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake::parse;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parse_and_match() {
        let loopback = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(loopback.contains(ip("127.1.2.3")));
        assert!(loopback.contains(ip("::ffff:127.0.0.1")));
        assert!(!loopback.contains(ip("128.0.0.1")));
        assert!(!loopback.contains(ip("::1")));
        let host = Cidr::parse(" 10.1.2.3 ").unwrap();
        assert!(host.contains(ip("10.1.2.3")) && !host.contains(ip("10.1.2.4")));
        // Host bits in the network are ignored, as `ip route` does.
        assert_eq!(Cidr::parse("10.1.2.3/16"), Cidr::parse("10.1.0.0/16"));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/8/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "example.com",
            "10.0.0.0/999999999999",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad:?}");
        }
    }

    /// The client a request head names, as seen from a peer trusting `trusted`.
    fn client(trusted: &[&str], fields: &str) -> Option<IpAddr> {
        let text = format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n");
        let Ok(Some((req, _))) = parse(text.as_bytes(), 8192) else {
            panic!("{text:?}");
        };
        let proxies = TrustedProxies::new(trusted.iter().filter_map(|s| Cidr::parse(s)).collect());
        proxies.client(req.forwarded())
    }

    #[test]
    fn x_forwarded_for_rightmost_untrusted() {
        let lo = ["127.0.0.0/8", "::1"];
        let cases: &[(&str, Option<&str>)] = &[
            // nginx's $proxy_add_x_forwarded_for: the client's own value, then the peer.
            (
                "X-Forwarded-For: 203.0.113.9, 127.0.0.1",
                Some("203.0.113.9"),
            ),
            (
                "X-Forwarded-For: 198.51.100.1, 203.0.113.9",
                Some("203.0.113.9"),
            ),
            ("X-Forwarded-For: 203.0.113.9", Some("203.0.113.9")),
            (
                "X-Forwarded-For:  203.0.113.9 ,127.0.0.2 , ::1 ",
                Some("203.0.113.9"),
            ),
            // Lines combine in order (RFC 9110 §5.3); HAProxy appends a line of its own.
            (
                "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 203.0.113.9",
                Some("203.0.113.9"),
            ),
            (
                "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 127.0.0.1",
                Some("203.0.113.9"),
            ),
            ("X-Forwarded-For: 2001:db8::7", Some("2001:db8::7")),
            ("X-Forwarded-For: [2001:db8::7]:4711", Some("2001:db8::7")),
            ("X-Forwarded-For: [2001:db8::7]", Some("2001:db8::7")),
            ("X-Forwarded-For: 203.0.113.9:4711", Some("203.0.113.9")),
            ("X-Forwarded-For: ::ffff:203.0.113.9", Some("203.0.113.9")),
            // Only trusted entries: nothing to believe.
            ("X-Forwarded-For: 127.0.0.1, ::1", None),
            // The rightmost untrusted entry is not an address: nothing is known, and the
            // addresses left of it (the client's word) are not taken instead.
            ("X-Forwarded-For: 203.0.113.9, unknown", None),
            ("X-Forwarded-For: 203.0.113.9, ", None),
            ("X-Forwarded-For: 203.0.113.9, 1.2.3", None),
            ("X-Forwarded-For: 203.0.113.9, 1.2.3.4.5", None),
            ("X-Forwarded-For: ,,,", None),
            ("", None),
        ];
        for (fields, want) in cases {
            assert_eq!(client(&lo, fields), want.map(ip), "{fields:?}");
        }
        // With nothing trusted, the rightmost entry is the client.
        assert_eq!(
            client(&[], "X-Forwarded-For: 203.0.113.9, 127.0.0.1"),
            Some(ip("127.0.0.1"))
        );
        // A chain of trusted proxies.
        assert_eq!(
            client(
                &["10.0.0.0/8", "127.0.0.1"],
                "X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.1.1.1, 10.2.2.2"
            ),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn forwarded_for_pairs() {
        let lo = ["127.0.0.0/8", "::1"];
        let cases: &[(&str, Option<&str>)] = &[
            // RFC 7239 §4 and §7.1 examples.
            ("Forwarded: for=\"_gazonk\"", None),
            (
                "Forwarded: For=\"[2001:db8:cafe::17]:4711\"",
                Some("2001:db8:cafe::17"),
            ),
            (
                "Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43",
                Some("192.0.2.60"),
            ),
            (
                "Forwarded: for=192.0.2.43, for=198.51.100.17",
                Some("198.51.100.17"),
            ),
            (
                "Forwarded: for=192.0.2.43, for=127.0.0.1",
                Some("192.0.2.43"),
            ),
            (
                "Forwarded: for=192.0.2.43\r\nForwarded: for=127.0.0.1;by=x",
                Some("192.0.2.43"),
            ),
            ("Forwarded: for=unknown", None),
            ("Forwarded: for=192.0.2.43, for=unknown", None),
            ("Forwarded: proto=https", None),
            ("Forwarded: for=\"192.0.2.43\"", Some("192.0.2.43")),
            ("Forwarded: for=\"192.0.2.43:80\"", Some("192.0.2.43")),
            // Commas and semicolons inside quotes do not split.
            (
                "Forwarded: for=1.1.1.1;x=\"a,for=6.6.6.6\"",
                Some("1.1.1.1"),
            ),
            ("Forwarded: for=\"1.1.1.1\\\"\"", None),
            ("Forwarded: for=\"unterminated, for=2.2.2.2", None),
            // X-Forwarded-For wins when both are present.
            (
                "Forwarded: for=1.1.1.1\r\nX-Forwarded-For: 2.2.2.2",
                Some("2.2.2.2"),
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(client(&lo, fields), want.map(ip), "{fields:?}");
        }
    }

    #[test]
    fn hostile_values_neither_panic_nor_pass() {
        let lo = ["127.0.0.0/8"];
        let long = format!("X-Forwarded-For: {}", "1".repeat(5000));
        assert_eq!(client(&lo, &long), None);
        let commas = format!("X-Forwarded-For: 203.0.113.9{}", ",".repeat(5000));
        assert_eq!(client(&lo, &commas), None);
        let quotes = format!("Forwarded: {}", "\"\\".repeat(2000));
        assert_eq!(client(&lo, &quotes), None);
        for b in 0u8..=255 {
            let raw = [
                b'f', b'o', b'r', b'=', b, b'"', b',', b';', b'\\', b'[', b']', b':',
            ];
            let headers = Forwarded::default();
            let _ = forwarded_for(&raw);
            let _ = xff_entry(&raw);
            let _ = TrustedProxies::loopback().client(&headers);
            let _ = Elements { rest: &raw }.count();
        }
    }
}
