//! Verifies the Origin check (RFC 6455 §10.2): by default a client that sends no Origin and
//! a page from the same host:port as the `Host` it asked for are upgraded (101), a page from
//! anywhere else gets 403 before any upgrade; `--allow-origin` (repeatable, or comma-separated
//! in `WSRELAY_ALLOW_ORIGIN`) admits the listed origins, and `*` admits all; a refused origin
//! is logged at `warn` (with the `Host` it was compared with and the flag that would admit it)
//! once per origin per minute, and every refusal is counted in `/metrics`.

mod common;

use common::{RawClient, Server, http_exchange, new_key, request, upgrade_headers};

/// The status of an upgrade that carries `origin` (and the server's address as `Host`).
fn status_with_origin(server: &Server, origin: Option<&str>) -> u16 {
    let mut headers = upgrade_headers(server.addr, &new_key());
    if let Some(origin) = origin {
        headers.push(("Origin", origin.to_owned()));
    }
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let head = request("GET / HTTP/1.1", &refs);
    let mut client = RawClient::connect(server.addr);
    client.handshake(&head).status
}

#[test]
fn default_admits_no_origin_and_same_origin_only() {
    let server = Server::start(&[]);
    let same = format!("http://{}", server.addr);
    let other_port = format!("http://127.0.0.1:{}", server.addr.port().wrapping_add(1));
    assert_eq!(status_with_origin(&server, None), 101);
    assert_eq!(status_with_origin(&server, Some(&same)), 101);
    for origin in [
        "http://evil.example",
        &other_port,
        &format!("https://{}.evil.example", server.addr.ip()),
        "null",
    ] {
        assert_eq!(status_with_origin(&server, Some(origin)), 403, "{origin}");
    }
}

#[test]
fn forbidden_origin_response_is_a_complete_403() {
    let server = Server::start(&[]);
    let mut headers = upgrade_headers(server.addr, &new_key());
    headers.push(("Origin", "http://evil.example".to_owned()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let response = http_exchange(server.addr, &request("GET / HTTP/1.1", &refs));
    assert_eq!(response.status, 403);
    assert!(response.header("sec-websocket-accept").is_none());
}

#[test]
fn allow_origin_flag_and_env() {
    let server = Server::start(&[
        "--allow-origin",
        "https://app.example",
        "--allow-origin",
        "http://localhost:3000",
    ]);
    assert_eq!(
        status_with_origin(&server, Some("https://app.example")),
        101
    );
    assert_eq!(
        status_with_origin(&server, Some("http://localhost:3000")),
        101
    );
    assert_eq!(
        status_with_origin(&server, Some("https://evil.example")),
        403
    );
    assert_eq!(status_with_origin(&server, None), 101);

    let mut cmd = Server::command(&[]);
    cmd.env(
        "WSRELAY_ALLOW_ORIGIN",
        "https://a.example,https://b.example",
    );
    let server = Server::start_command(cmd);
    assert_eq!(status_with_origin(&server, Some("https://b.example")), 101);
    assert_eq!(status_with_origin(&server, Some("https://c.example")), 403);

    let server = Server::start(&["--allow-origin", "*"]);
    assert_eq!(status_with_origin(&server, Some("https://c.example")), 101);
}

#[test]
fn a_foreign_page_can_neither_post_nor_poll() {
    let server = Server::start(&[]);
    let _member = common::connect_ws(&server);
    let host = server.addr.to_string();
    let same = format!("http://{host}");
    let body = br#"{"name":"mallory","msg":"csrf"}"#;
    let len = body.len().to_string();
    let post = |origin: &str| {
        let mut req = common::request(
            "POST /send?room=main HTTP/1.1",
            &[
                ("Host", &host),
                ("Origin", origin),
                ("Content-Type", "text/plain"),
                ("Content-Length", &len),
            ],
        );
        req.extend_from_slice(body);
        common::http_exchange(server.addr, &req).status
    };
    assert_eq!(post("http://evil.example"), 403);
    assert_eq!(post(&same), 200);
    let poll = |origin: &str| {
        let req = common::request(
            "GET /poll?room=main&client=x&since=0 HTTP/1.1",
            &[("Host", &host), ("Origin", origin)],
        );
        common::http_exchange(server.addr, &req).status
    };
    assert_eq!(poll("http://evil.example"), 403);
    assert_eq!(poll(&same), 200);
}

#[test]
fn refused_origins_are_logged_at_warn_once_per_origin() {
    let server = Server::start(&[]);
    for _ in 0..5 {
        assert_eq!(
            status_with_origin(&server, Some("http://localhost:3000")),
            403
        );
    }
    for _ in 0..3 {
        assert_eq!(
            status_with_origin(&server, Some("http://evil.example")),
            403
        );
    }
    server.wait_for_log("http://evil.example", std::time::Duration::from_secs(5));
    let log = server.stderr();
    let warned = |origin: &str| {
        log.lines()
            .filter(|l| l.contains("warn") && l.contains(origin))
            .collect::<Vec<_>>()
    };
    let local = warned("http://localhost:3000");
    assert_eq!(local.len(), 1, "one line per origin per minute:\n{log}");
    // What the operator needs: the origin, the Host it was compared with, the flag.
    let host = format!("{:?}", server.addr.to_string());
    assert!(local[0].contains(&host), "no Host {host} in {:?}", local[0]);
    assert!(
        local[0].contains("--allow-origin http://localhost:3000"),
        "{:?}",
        local[0]
    );
    assert_eq!(warned("http://evil.example").len(), 1, "{log}");
    // Still counted, every one.
    let metrics = common::fetch_metrics(server.addr);
    assert_eq!(metrics["wsrelay_limit_hits_total{limit=\"origin\"}"], 8.0);
    assert_eq!(
        metrics["wsrelay_handshake_rejections_total{status=\"403\"}"],
        8.0
    );
}
