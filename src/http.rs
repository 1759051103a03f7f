//! Plain HTTP on the WebSocket port: the chat page, its assets, a health check and metrics.

use crate::proto::handshake::write_head;

/// The chat page and its assets, built into the binary.
const INDEX_HTML: &str = include_str!("web/index.html");
const CHAT_JS: &str = include_str!("web/chat.js");
const CHAT_CSS: &str = include_str!("web/chat.css");

/// Only our own script and style run on the page, so injected markup could not run anyway.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n";

const ASSET_HEADERS: &str = "X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n";

/// A response: its head and a static body.
#[derive(Debug)]
pub struct Response {
    /// Status line and fields, ending in the blank line.
    pub head: Vec<u8>,
    /// The body.
    pub body: &'static [u8],
}

/// Prometheus' text exposition format, version 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers a `GET` for `target` (path plus optional query); `metrics` writes the body of
/// `/metrics` when that is asked for.
pub fn route(target: &str, metrics: impl FnOnce(&mut String)) -> Response {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        let mut body = String::with_capacity(4096);
        metrics(&mut body);
        let mut head = Vec::with_capacity(body.len() + 256);
        write_head(
            200,
            METRICS_TYPE,
            body.len(),
            "Cache-Control: no-store\r\n",
            &mut head,
        );
        // The body is built per request, so it travels in the head's buffer.
        head.extend_from_slice(body.as_bytes());
        return Response { head, body: b"" };
    }
    let (status, content_type, extra, body) = match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE_HEADERS, INDEX_HTML),
        "/chat.js" => (
            200,
            "text/javascript; charset=utf-8",
            ASSET_HEADERS,
            CHAT_JS,
        ),
        "/chat.css" => (200, "text/css; charset=utf-8", ASSET_HEADERS, CHAT_CSS),
        "/healthz" => (
            200,
            "text/plain; charset=utf-8",
            "Cache-Control: no-store\r\n",
            "ok\n",
        ),
        _ => (404, "text/plain; charset=utf-8", "", "not found\n"),
    };
    let mut head = Vec::with_capacity(512);
    write_head(status, content_type, body.len(), extra, &mut head);
    Response {
        head,
        body: body.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route("/?room=x", |_| {});
        assert!(r.head.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(String::from_utf8_lossy(&r.head).contains("Content-Security-Policy"));
        assert!(std::str::from_utf8(r.body).unwrap().contains("chat.js"));
        assert!(route("/healthz", |_| {}).head.starts_with(b"HTTP/1.1 200 "));
        assert!(route("/nope", |_| {}).head.starts_with(b"HTTP/1.1 404 "));
        let m = route("/metrics?x", |b| b.push_str("a 1\n"));
        assert!(m.head.starts_with(b"HTTP/1.1 200 "));
        assert!(m.head.ends_with(b"\r\n\r\na 1\n") && m.body.is_empty());
    }
}
