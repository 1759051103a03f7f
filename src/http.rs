//! Plain HTTP on the WebSocket port: the chat page, its assets, a health check and metrics;
//! and the admin listener's two routes.

use crate::proto::HandshakeError;
use crate::proto::handshake::{Method, write_head, write_refusal};

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

/// The answer to a `POST` anywhere but the long-polling endpoint.
pub fn method_not_allowed() -> Response {
    let mut head = Vec::with_capacity(200);
    write_refusal(&HandshakeError::MethodNotAllowed, &mut head);
    Response { head, body: b"" }
}

/// Answers a `GET` for `target` (path plus optional query); `health` is why the server is
/// unwell (`App::health`), for `/healthz`; `metrics` writes the body of `/metrics` when that
/// is asked for.
pub fn route(target: &str, health: Option<&str>, metrics: impl FnOnce(&mut String)) -> Response {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        let mut body = String::with_capacity(4096);
        metrics(&mut body);
        return built(200, METRICS_TYPE, "Cache-Control: no-store\r\n", &body);
    }
    if path == "/healthz"
        && let Some(cause) = health
    {
        // One line whatever the cause holds, so a checker can log the body as it is.
        let cause: String = cause
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let body = format!("unavailable: {cause}\n");
        // A load balancer that honours it (RFC 9110 §10.2.3) asks again in a few seconds.
        let extra = "Cache-Control: no-store\r\nRetry-After: 5\r\n";
        return built(503, "text/plain; charset=utf-8", extra, &body);
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
        _ => return not_found(),
    };
    let mut head = Vec::with_capacity(512);
    write_head(status, content_type, body.len(), extra, &mut head);
    Response {
        head,
        body: body.as_bytes(),
    }
}

/// Answers a request on the admin listener (`--admin-listen`): `GET /metrics` and
/// `GET /healthz` as [`route`] does, 404 for anything else (no page, no long polling).
pub fn route_admin(
    method: Method,
    target: &str,
    health: Option<&str>,
    metrics: impl FnOnce(&mut String),
) -> Response {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match (method, path) {
        (Method::Get, "/metrics" | "/healthz") => route(target, health, metrics),
        _ => not_found(),
    }
}

/// 404, for a target not served.
fn not_found() -> Response {
    let body = "not found\n";
    let mut head = Vec::with_capacity(128);
    write_head(404, "text/plain; charset=utf-8", body.len(), "", &mut head);
    Response {
        head,
        body: body.as_bytes(),
    }
}

/// A response whose body is built per request: it travels in the head's buffer.
fn built(status: u16, content_type: &str, extra: &str, body: &str) -> Response {
    let mut head = Vec::with_capacity(body.len() + 256);
    write_head(status, content_type, body.len(), extra, &mut head);
    head.extend_from_slice(body.as_bytes());
    Response { head, body: b"" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route("/?room=x", None, |_| {});
        assert!(r.head.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(String::from_utf8_lossy(&r.head).contains("Content-Security-Policy"));
        assert!(std::str::from_utf8(r.body).unwrap().contains("chat.js"));
        let ok = route("/healthz", None, |_| {});
        assert!(ok.head.starts_with(b"HTTP/1.1 200 ") && ok.body == b"ok\n");
        assert!(
            route("/nope", None, |_| {})
                .head
                .starts_with(b"HTTP/1.1 404 ")
        );
        let m = route("/metrics?x", None, |b| b.push_str("a 1\n"));
        assert!(m.head.starts_with(b"HTTP/1.1 200 "));
        assert!(m.head.ends_with(b"\r\n\r\na 1\n") && m.body.is_empty());
    }

    #[test]
    fn healthz_names_the_cause_with_503() {
        let r = route("/healthz?x", Some("store down:\r\nEvil: 1"), |_| {});
        let whole = String::from_utf8_lossy(&r.head);
        assert!(
            whole.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{whole}"
        );
        assert!(whole.contains("\r\nRetry-After: 5\r\n"), "{whole}");
        assert!(whole.contains("\r\nContent-Length: 34\r\n"), "{whole}");
        // The cause stays one line of the body.
        assert!(
            whole.ends_with("\r\n\r\nunavailable: store down:  Evil: 1\n"),
            "{whole}"
        );
        assert!(r.body.is_empty());
        // Only /healthz says it: the page and the metrics are served as usual.
        let page = route("/", Some("store down"), |_| {});
        assert!(page.head.starts_with(b"HTTP/1.1 200 "));
        let m = route("/metrics", Some("store down"), |b| b.push_str("a 1\n"));
        assert!(m.head.starts_with(b"HTTP/1.1 200 "));
    }

    #[test]
    fn admin_routes_only_metrics_and_healthz() {
        let get = |target: &str| route_admin(Method::Get, target, None, |b| b.push_str("a 1\n"));
        assert!(get("/metrics").head.ends_with(b"\r\n\r\na 1\n"));
        assert!(get("/healthz?probe").head.starts_with(b"HTTP/1.1 200 "));
        for target in ["/", "/index.html", "/chat.js", "/poll?room=main", "/send"] {
            let r = get(target);
            assert!(r.head.starts_with(b"HTTP/1.1 404 "), "{target}");
        }
        let post = route_admin(Method::Post, "/metrics", None, |_| {});
        assert!(post.head.starts_with(b"HTTP/1.1 404 "));
        let sick = route_admin(Method::Get, "/healthz", Some("x"), |_| {});
        assert!(sick.head.starts_with(b"HTTP/1.1 503 "));
    }
}
