//! The HTTP answers of the long-polling transport, each a whole response that ends the
//! connection (one request per connection, as everywhere on this server), with the CORS fields
//! the reference server adds when it is configured with `cors: { origin, credentials: true }`.

use std::io::Write as _;

use super::packet::Refusal;

/// What a request said about the page that sent it, for a CORS answer (Fetch §3.2).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cors<'a> {
    /// `Origin`, already admitted by the Origin policy (a refused one never gets here).
    pub origin: Option<&'a [u8]>,
    /// `Access-Control-Request-Headers` of a preflight.
    pub request_headers: Option<&'a [u8]>,
}

/// Writes the status line, the fields every answer has and `extra` (whole field lines); the
/// body follows. No `content_type`: no body and no `Content-Length` (a 204).
fn head(
    status: u16,
    content_type: &str,
    body_len: usize,
    extra: &[u8],
    cors: &Cors<'_>,
    out: &mut Vec<u8>,
) {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    if !content_type.is_empty() {
        let _ = write!(
            out,
            "Content-Type: {content_type}\r\nContent-Length: {body_len}\r\n"
        );
    }
    // The answers depend on the session, never cached; never sniffed as HTML.
    out.extend_from_slice(b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    if let Some(origin) = cors.origin {
        // Credentials (cookies) may be sent, so the origin is named, never `*` (Fetch §3.2.5).
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(origin);
        out.extend_from_slice(b"\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
    }
    out.extend_from_slice(extra);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// 200 with a payload (packets for a `GET`).
pub fn payload(body: &[u8], cors: &Cors<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    head(
        200,
        "text/plain; charset=UTF-8",
        body.len(),
        b"",
        cors,
        &mut out,
    );
    out.extend_from_slice(body);
    out
}

/// 200 `ok`: a `POST`'s packets were taken (`text/html`, as the reference sends it).
pub fn ok(cors: &Cors<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    head(200, "text/html", 2, b"", cors, &mut out);
    out.extend_from_slice(b"ok");
    out
}

/// The answer to a refused request: `{"code":…,"message":…}` with 400 or 403.
pub fn refusal(r: Refusal, cors: &Cors<'_>) -> Vec<u8> {
    let body = format!(r#"{{"code":{},"message":"{}"}}"#, r.code(), r.message());
    let mut out = Vec::with_capacity(body.len() + 256);
    head(
        r.status(),
        "application/json",
        body.len(),
        b"",
        cors,
        &mut out,
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// The answer to a refused WebSocket handshake: 400 with the message as the body (the
/// reference's `abortUpgrade`), instead of the 101.
pub fn upgrade_refusal(r: Refusal) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    let none = Cors::default();
    head(400, "text/html", r.message().len(), b"", &none, &mut out);
    out.extend_from_slice(r.message().as_bytes());
    out
}

/// 503: no more sessions may open now (`--max-connections`, `--max-connections-per-ip`).
pub fn unavailable(cors: &Cors<'_>) -> Vec<u8> {
    let body = "too many connections\n";
    let mut out = Vec::with_capacity(256);
    let retry = b"Retry-After: 5\r\n";
    head(
        503,
        "text/plain; charset=utf-8",
        body.len(),
        retry,
        cors,
        &mut out,
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// 413: a `POST` body over `maxPayload` (the reference answers it so, and keeps the session).
pub fn too_large(cors: &Cors<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    head(413, "text/plain; charset=utf-8", 0, b"", cors, &mut out);
    out
}

/// 204 to a CORS preflight: the methods the transport uses and the fields the page asked for
/// (reflected, as the `cors` package does when no list is configured).
pub fn preflight(cors: &Cors<'_>) -> Vec<u8> {
    let mut extra = b"Access-Control-Allow-Methods: GET, POST\r\n".to_vec();
    if let (Some(_), Some(fields)) = (cors.origin, cors.request_headers) {
        extra.extend_from_slice(b"Access-Control-Allow-Headers: ");
        extra.extend_from_slice(fields);
        extra.extend_from_slice(b"\r\n");
    }
    let mut out = Vec::with_capacity(256 + extra.len());
    // RFC 9110 §8.6: no Content-Length in a 204.
    head(204, "", 0, &extra, cors, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn answers_are_whole_responses() {
        let none = Cors::default();
        let r = payload(b"2", &none);
        assert!(text(&r).starts_with(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 1\r\n"
        ));
        assert!(text(&r).ends_with("Connection: close\r\n\r\n2"));
        assert!(!text(&r).contains("Access-Control"));
        let r = refusal(Refusal::UnknownSid, &none);
        assert!(text(&r).starts_with("HTTP/1.1 400 "));
        assert!(text(&r).ends_with("\r\n\r\n{\"code\":1,\"message\":\"Session ID unknown\"}"));
        assert!(text(&refusal(Refusal::Forbidden, &none)).starts_with("HTTP/1.1 403 "));
        let r = upgrade_refusal(Refusal::UnsupportedProtocolVersion);
        assert!(text(&r).ends_with("\r\n\r\nUnsupported protocol version"));
        let r = unavailable(&none);
        assert!(text(&r).contains("\r\nRetry-After: 5\r\n"), "{}", text(&r));
        assert!(
            text(&r).ends_with("close\r\n\r\ntoo many connections\n"),
            "{}",
            text(&r)
        );
        assert!(text(&ok(&none)).ends_with("\r\n\r\nok"));
        assert!(text(&too_large(&none)).starts_with("HTTP/1.1 413 "));
    }

    #[test]
    fn cors_names_the_admitted_origin() {
        let cors = Cors {
            origin: Some(b"https://app.example"),
            request_headers: Some(b"x-token"),
        };
        let r = ok(&cors);
        assert!(text(&r).contains(
            "Access-Control-Allow-Origin: https://app.example\r\nAccess-Control-Allow-Credentials: true\r\n"
        ));
        let r = preflight(&cors);
        let t = text(&r);
        assert!(t.starts_with("HTTP/1.1 204 No Content\r\n"), "{t}");
        assert!(!t.contains("Content-Length"), "{t}");
        assert!(
            t.contains("Access-Control-Allow-Headers: x-token\r\n"),
            "{t}"
        );
        assert!(t.ends_with("Connection: close\r\n\r\n"), "{t}");
    }
}
