//! The opening handshake, server side (RFC 6455 §4.2.1-4.2.2), over `httparse`.
//!
//! [`parse`] reads one HTTP request head from the front of a buffer and classifies it: a valid
//! WebSocket upgrade, a plain HTTP request (the chat page, health checks), or a refusal with the
//! HTTP status it is answered with.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};

use super::deflate::{self, Agreed, Malformed};
use super::error::HandshakeError;

/// §1.3: the GUID appended to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header fields accepted in one request; more is answered 431.
const MAX_HEADERS: usize = 32;

/// A request head that parsed and passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A valid opening handshake (§4.2.1).
    Upgrade(Upgrade<'a>),
    /// A plain HTTP request (`GET`, or a `POST` with a body of `body_len` bytes to follow).
    Http {
        /// `GET` or `POST`, or another method (the router answers it, mostly with 405).
        method: Method,
        /// The request target, e.g. `/healthz`.
        path: &'a str,
        /// `Content-Length` of a `POST`; 0 for any other method.
        body_len: u64,
        /// The `Origin` field, if a browser sent one (RFC 6454 §7).
        origin: Option<&'a [u8]>,
        /// `Access-Control-Request-Headers`, which a CORS preflight (`OPTIONS`) sends.
        request_headers: Option<&'a [u8]>,
        /// The `Host` field.
        host: Option<&'a [u8]>,
        /// `Sec-Fetch-Site: cross-site`: a browser sent it for a page of another site, which
        /// may leave out `Origin` (an `<img>`, a `no-cors` fetch; Fetch Metadata §2.1).
        cross_site: bool,
        /// What a proxy said about its client, if it said anything.
        forwarded: Forwarded<'a>,
    },
}

impl<'a> Request<'a> {
    /// The `X-Forwarded-For` and `Forwarded` lines of the request.
    pub fn forwarded(&self) -> &Forwarded<'a> {
        match self {
            Self::Upgrade(up) => &up.forwarded,
            Self::Http { forwarded, .. } => forwarded,
        }
    }
}

/// Lines of a header field kept at most: the last ones, where a proxy appends.
const FORWARDED_LINES: usize = 4;

/// The values of the header fields by which proxies name their clients, as sent: the de facto
/// `X-Forwarded-For` (a comma-separated list of addresses, the client's first, each proxy
/// appending its peer) and RFC 7239's `Forwarded` (`for=` pairs, likewise appended). Only the
/// last [`FORWARDED_LINES`] lines of each are kept, in order: proxies append to the end, and
/// only the end can be trusted. Which entries are believed is up to the caller, who knows
/// which peers are trusted proxies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// `X-Forwarded-For` values, oldest line first.
    pub x_forwarded_for: Lines<'a>,
    /// `Forwarded` values, oldest line first.
    pub forwarded: Lines<'a>,
}

/// The last [`FORWARDED_LINES`] values of one header field, in the order they came.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lines<'a> {
    /// A ring: `len` values, the oldest at `start`.
    values: [&'a [u8]; FORWARDED_LINES],
    start: u8,
    len: u8,
}

impl<'a> Lines<'a> {
    fn push(&mut self, value: &'a [u8]) {
        let n = FORWARDED_LINES as u8;
        if self.len < n {
            if let Some(slot) = self
                .values
                .get_mut(usize::from((self.start + self.len) % n))
            {
                *slot = value;
            }
            self.len += 1;
        } else {
            if let Some(slot) = self.values.get_mut(usize::from(self.start)) {
                *slot = value;
            }
            self.start = (self.start + 1) % n;
        }
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let n = FORWARDED_LINES as u8;
        (0..self.len)
            .filter_map(move |i| self.values.get(usize::from((self.start + i) % n)).copied())
    }

    /// Whether the field was absent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The HTTP methods of a request; where a route does not take one, it is answered 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Pages, health, metrics, long polling; and the opening handshake (§4.2.1 item 1).
    Get,
    /// Sending a chat message without a WebSocket.
    Post,
    /// A CORS preflight (Fetch §3.2.2).
    Options,
    /// Any other method token (RFC 9110 §9.1).
    Other,
}

/// What the server needs from a valid opening handshake.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// The request target (`/` or a room path).
    pub path: &'a str,
    /// The `Origin` field, if a browser sent one (§4.2.1 item 7, §10.2).
    pub origin: Option<&'a [u8]>,
    /// The `Host` field (§4.2.1 item 2), to tell a same-origin page from a foreign one.
    pub host: Option<&'a [u8]>,
    /// The `Sec-WebSocket-Accept` value for this request's key (§4.2.2).
    pub accept: [u8; 28],
    /// What a proxy said about its client, if it said anything.
    pub forwarded: Forwarded<'a>,
    /// The first `permessage-deflate` offer this server can honour (RFC 7692 §5), or a
    /// `Sec-WebSocket-Extensions` field that is not an extension list (RFC 6455 §9.1).
    pub deflate: Result<Option<Agreed>, Malformed>,
}

/// Parses a request head from the front of `buf`.
///
/// `Ok(None)`: incomplete, and still under `max_len`. `Ok(Some((req, len)))`: `len` bytes were
/// the head; whatever follows (a client's first frames) belongs to the connection.
pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_len => len,
        Ok(httparse::Status::Complete(_)) => return Err(HandshakeError::HeadersTooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max_len => {
            return Err(HandshakeError::HeadersTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeadersTooLarge),
        Err(_) => return Err(HandshakeError::BadRequest("malformed request")),
    };
    let path = req.path.unwrap_or("/");
    let http11 = req.version == Some(1);
    let headers: &[httparse::Header<'_>] = req.headers;
    let field = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let mut forwarded = Forwarded::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded.x_forwarded_for.push(h.value);
        } else if h.name.eq_ignore_ascii_case("forwarded") {
            forwarded.forwarded.push(h.value);
        }
    }
    if http11 && field("host").next().is_none() {
        // RFC 9112 §3.2: a 1.1 request without Host gets 400; §4.2.1 item 2 for the upgrade.
        return Err(HandshakeError::BadRequest("missing Host"));
    }
    // §4.2.1 item 3: |Upgrade| "including the value websocket", compared case-insensitively.
    let wants_ws = field("upgrade").any(|h| has_token(h.value, b"websocket"));
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    // §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if wants_ws && method != Method::Get {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if !wants_ws {
        let origin = field("origin").next().map(|h| trim(h.value));
        let host = field("host").next().map(|h| trim(h.value));
        let cross_site = field("sec-fetch-site").any(|h| trim(h.value) == b"cross-site");
        let request_headers = field("access-control-request-headers")
            .next()
            .map(|h| trim(h.value));
        // Only a POST's body is read; other requests end at their head.
        let body_len = if method == Method::Post {
            let mut lengths = field("content-length").map(|h| h.value);
            let chunked = field("transfer-encoding").next().is_some();
            post_body_len(chunked, (lengths.next(), lengths.next()))?
        } else {
            0
        };
        let http = Request::Http {
            method,
            path,
            body_len,
            origin,
            request_headers,
            host,
            cross_site,
            forwarded,
        };
        return Ok(Some((http, len)));
    }
    if !http11 {
        return Err(HandshakeError::BadRequest("websocket needs HTTP/1.1"));
    }
    // §4.2.1 item 4: |Connection| "that includes the token Upgrade".
    if !field("connection").any(|h| has_token(h.value, b"upgrade")) {
        return Err(HandshakeError::BadRequest("missing Connection: Upgrade"));
    }
    // §4.2.1 item 6 and §4.2.2: any version but 13 is answered 426 with the one we speak.
    let mut versions = field("sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if trim(v.value) == b"13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    // §4.2.1 item 5: a key that "when decoded, is 16 bytes in length".
    let mut keys = field("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => trim(k.value),
        _ => {
            return Err(HandshakeError::BadRequest(
                "missing or repeated Sec-WebSocket-Key",
            ));
        }
    };
    let mut decoded = [0u8; 18];
    match STANDARD.decode_slice(key, &mut decoded) {
        Ok(16) => {}
        _ => return Err(HandshakeError::BadRequest("invalid Sec-WebSocket-Key")),
    }
    let origin = field("origin").next().map(|h| trim(h.value));
    let host = field("host").next().map(|h| trim(h.value));
    // §9.1: "this header field MAY be split or combined across multiple lines".
    let deflate = deflate::negotiate(field("sec-websocket-extensions").map(|h| h.value));
    Ok(Some((
        Request::Upgrade(Upgrade {
            path,
            origin,
            host,
            accept: accept_key(key),
            forwarded,
            deflate,
        }),
        len,
    )))
}

/// The body length of a `POST`, which must be given as one `Content-Length` (RFC 9112 §6.3):
/// a chunked body would need a parser of its own, and a server may ask for a length (411).
fn post_body_len(
    transfer_encoding: bool,
    content_length: (Option<&[u8]>, Option<&[u8]>),
) -> Result<u64, HandshakeError> {
    let value = match (transfer_encoding, content_length) {
        (true, _) | (false, (None, _)) => return Err(HandshakeError::LengthRequired),
        // RFC 9112 §6.3: more than one length is an unrecoverable error (400).
        (false, (Some(_), Some(_))) => {
            return Err(HandshakeError::BadRequest("repeated Content-Length"));
        }
        (false, (Some(value), None)) => value,
    };
    let digits = trim(value);
    // RFC 9110 §8.6: Content-Length = 1*DIGIT.
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::BadRequest("invalid Content-Length"));
    }
    // More than 18 digits is beyond any cap, and would not fit the sum below.
    if digits.len() > 18 {
        return Err(HandshakeError::ContentTooLarge);
    }
    Ok(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Appends the 101 response that completes a handshake (§4.2.2 item 5), with the extension
/// accepted, if any (§4.2.2 item 5.6, RFC 7692 §5).
pub fn write_accept(accept: &[u8; 28], deflate: Option<&Agreed>, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    if let Some(agreed) = deflate {
        agreed.write_response(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an HTTP/1.1 response head that ends the connection; `extra` is zero or more
/// `Name: value\r\n` lines.
pub fn write_head(
    status: u16,
    content_type: &str,
    body_len: usize,
    extra: &str,
    out: &mut Vec<u8>,
) {
    use std::io::Write as _;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n\
         {extra}Connection: close\r\n\r\n"
    );
}

/// Appends the whole response for a refused handshake: status, needed fields, a short body.
pub fn write_refusal(err: &HandshakeError, out: &mut Vec<u8>) {
    let extra = match err {
        // §4.2.2: a 426 carries the versions the server understands.
        HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
        HandshakeError::MethodNotAllowed => "Allow: GET, POST\r\n",
        _ => "",
    };
    let body = err.reason();
    write_head(
        err.status(),
        "text/plain; charset=utf-8",
        body.len() + 1,
        extra,
        out,
    );
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
}

/// `Sec-WebSocket-Accept` for a key (§4.2.2 item 5.4): base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 base64 characters.
    let _ = STANDARD.encode_slice(digest, &mut out);
    out
}

/// Whether a comma-separated header value holds `token`, ignoring ASCII case (RFC 9110 §5.6.1).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Strips optional whitespace (RFC 9110 §5.6.3: OWS = *( SP / HTAB )).
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_1_3_key_and_accept() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_request_whole_and_byte_by_byte() {
        let expected = Request::Upgrade(Upgrade {
            path: "/chat",
            origin: Some(b"http://example.com"),
            host: Some(b"server.example.com"),
            accept: *b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            forwarded: Forwarded::default(),
            deflate: Ok(None),
        });
        assert_eq!(
            parse(RFC_REQUEST, 8192),
            Ok(Some((expected, RFC_REQUEST.len())))
        );
        for cut in 0..RFC_REQUEST.len() {
            assert_eq!(parse(&RFC_REQUEST[..cut], 8192), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn trailing_frame_bytes_are_not_part_of_the_head() {
        let mut buf = RFC_REQUEST.to_vec();
        buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let (_, len) = parse(&buf, 8192).unwrap().unwrap();
        assert_eq!(len, RFC_REQUEST.len());
    }

    fn req(lines: &str) -> Result<Option<(Request<'static>, usize)>, HandshakeError> {
        let text: &'static str = Box::leak(format!("{lines}\r\n\r\n").into_boxed_str());
        parse(text.as_bytes(), 8192)
    }

    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn tokens_are_case_insensitive_lists() {
        let r = req(&format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\n{KEY}\r\nSec-WebSocket-Version: 13"
        ));
        assert!(matches!(r, Ok(Some((Request::Upgrade(_), _)))));
    }

    #[test]
    fn refusals() {
        let ok_rest = format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{KEY}");
        let cases: Vec<(String, u16)> = vec![
            (format!("GET / HTTP/1.1\r\n{ok_rest}\r\nSec-WebSocket-Version: 13"), 400),
            (format!("GET / HTTP/1.0\r\nHost: h\r\n{ok_rest}\r\nSec-WebSocket-Version: 13"), 400),
            (format!("POST / HTTP/1.1\r\nHost: h\r\n{ok_rest}\r\nSec-WebSocket-Version: 13"), 405),
            (format!("GET / HTTP/1.1\r\nHost: h\r\n{ok_rest}"), 426),
            (format!("GET / HTTP/1.1\r\nHost: h\r\n{ok_rest}\r\nSec-WebSocket-Version: 8"), 426),
            (
                format!("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n{KEY}\r\nSec-WebSocket-Version: 13"),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13".into(),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13".into(),
                400,
            ),
            ("GARBAGE\u{1}\r\n".into(), 400),
        ];
        for (text, status) in cases {
            let got = req(&text).map_err(|e| e.status());
            assert_eq!(got.err(), Some(status), "{text:?}");
        }
    }

    #[test]
    fn plain_get_is_http() {
        assert_eq!(
            req("GET /healthz HTTP/1.1\r\nHost: h").map(|r| r.map(|(r, _)| r)),
            Ok(Some(Request::Http {
                method: Method::Get,
                path: "/healthz",
                body_len: 0,
                origin: None,
                request_headers: None,
                host: Some(b"h"),
                cross_site: false,
                forwarded: Forwarded::default(),
            }))
        );
        // Fetch Metadata: only the exact value "cross-site" marks another site's page.
        for (value, cross) in [("cross-site", true), ("same-site", false), ("none", false)] {
            let head = format!("GET /poll HTTP/1.1\r\nHost: h\r\nSec-Fetch-Site: {value}");
            let got = req(&head).map(|r| r.map(|(r, _)| r));
            assert!(
                matches!(got, Ok(Some(Request::Http { cross_site, .. })) if cross_site == cross),
                "{value}: {got:?}"
            );
        }
    }

    #[test]
    fn other_methods_reach_the_router_without_a_body() {
        let got = req(
            "OPTIONS /socket.io/ HTTP/1.1\r\nHost: h\r\nOrigin: http://a\r\nAccess-Control-Request-Headers: x-a, x-b",
        );
        assert!(
            matches!(
                got,
                Ok(Some((
                    Request::Http {
                        method: Method::Options,
                        body_len: 0,
                        request_headers: Some(b"x-a, x-b"),
                        ..
                    },
                    _
                )))
            ),
            "{got:?}"
        );
        let got = req("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 9");
        assert!(
            matches!(
                got,
                Ok(Some((
                    Request::Http {
                        method: Method::Other,
                        body_len: 0,
                        ..
                    },
                    _
                )))
            ),
            "{got:?}"
        );
    }

    #[test]
    fn forwarded_lines_keep_the_last_four_in_order() {
        let xff: String = (1..=6)
            .map(|i| format!("X-Forwarded-For: 192.0.2.{i}\r\n"))
            .collect();
        let head =
            format!("GET / HTTP/1.1\r\nHost: h\r\n{xff}Forwarded: for=a\r\nforwarded: for=b");
        let Ok(Some((r, _))) = req(&head) else {
            panic!("{head:?}");
        };
        let f = r.forwarded();
        let lines: Vec<&[u8]> = f.x_forwarded_for.iter().collect();
        let want: [&[u8]; 4] = [b"192.0.2.3", b"192.0.2.4", b"192.0.2.5", b"192.0.2.6"];
        assert_eq!(lines, want);
        let lines: Vec<&[u8]> = f.forwarded.iter().collect();
        assert_eq!(lines, [&b"for=a"[..], b"for=b"]);
        let Ok(Some((r, _))) = req("GET / HTTP/1.1\r\nHost: h") else {
            panic!();
        };
        assert!(r.forwarded().x_forwarded_for.is_empty() && r.forwarded().forwarded.is_empty());
    }

    #[test]
    fn oversized_head_is_431() {
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        big.resize(9000, b'a');
        assert_eq!(parse(&big, 8192), Err(HandshakeError::HeadersTooLarge));
        let many: String = (0..40).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\nHost: h\r\n{many}")).err(),
            Some(HandshakeError::HeadersTooLarge)
        );
    }
}
