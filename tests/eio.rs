//! Verifies Engine.IO v4 on `/socket.io/` against the real binary, with raw HTTP and
//! tungstenite: the handshake on both transports and the protocol's errors and statuses,
//! long polling (held polls answered by the server's ping, `POST`ed packets, noop, close,
//! a second concurrent poll), the heartbeat and its timeout, the upgrade from polling to
//! WebSocket, `maxPayload`, CORS under the Origin policy, the connection limits, SIGTERM
//! with a held poll, and that a socket.io client's WebSocket is kept out of the app's
//! broadcasts, in every mode.
//!
//! The Socket.IO layer behind the seam is a stub here, so these tests check what Engine.IO
//! does on its own; `src/eio/session.rs` drives the rest (the app's frames to sessions)
//! without sockets.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

use common::{
    HttpResponse, OP_TEXT, RawClient, Server, connect_ws_to, fetch_metrics, http_exchange, request,
    ws_recv, ws_recv_text, ws_send,
};

/// The test suite's own heartbeat: a ping every 300 ms, 200 ms to answer it.
const FAST: [&str; 4] = ["--eio-ping-interval", "300", "--eio-ping-timeout", "200"];

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";
const WEBSOCKET: &str = "/socket.io/?EIO=4&transport=websocket";

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--mode", "echo"];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// With pings `interval_ms` apart, for tests that must not see them.
fn start_slow(interval_ms: &str) -> Server {
    let args = ["--mode", "echo", "--eio-ping-interval", interval_ms];
    Server::start(&args)
}

/// One request on a connection of its own; the whole response.
#[track_caller]
fn exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> HttpResponse {
    let host = addr.to_string();
    let len = body.len().to_string();
    let mut headers = vec![("Host", host.as_str())];
    if method == "POST" {
        headers.push(("Content-Type", "text/plain;charset=UTF-8"));
        headers.push(("Content-Length", &len));
    }
    headers.extend_from_slice(extra);
    let mut req = request(&format!("{method} {target} HTTP/1.1"), &headers);
    req.extend_from_slice(body);
    http_exchange(addr, &req)
}

fn text(r: &HttpResponse) -> &str {
    std::str::from_utf8(&r.body).expect("a UTF-8 body")
}

/// Opens a polling session; returns its sid, checking the open packet.
#[track_caller]
fn open_polling(addr: SocketAddr) -> String {
    let r = exchange(addr, "GET", POLLING, b"", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    let body = text(&r);
    assert!(body.starts_with('0'), "{body}");
    let open: Value = serde_json::from_str(&body[1..]).expect("the open packet's JSON");
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    open["sid"].as_str().expect("a string sid").to_owned()
}

fn with_sid(sid: &str) -> String {
    format!("{POLLING}&sid={sid}")
}

/// `{"code":…}` of a refusal, with its status.
#[track_caller]
fn refusal(r: &HttpResponse) -> (u16, u64) {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let v: Value = serde_json::from_slice(&r.body).expect("a JSON error");
    (r.status, v["code"].as_u64().expect("a code"))
}

/// Sends a poll without reading its answer yet.
fn start_poll(addr: SocketAddr, sid: &str) -> RawClient {
    let mut c = RawClient::connect(addr);
    c.send(format!("GET {} HTTP/1.1\r\nHost: {addr}\r\n\r\n", with_sid(sid)).as_bytes());
    c
}

/// The answer to a poll started with [`start_poll`].
#[track_caller]
fn finish_poll(mut c: RawClient) -> (u16, String) {
    let head = c.read_response_head();
    let body = c.read_to_eof();
    (
        head.status,
        String::from_utf8(body).expect("a UTF-8 payload"),
    )
}

#[test]
fn handshake_errors_get_the_reference_codes_and_statuses() {
    let server = start(&[]);
    let addr = server.addr;
    let cases: [(&str, &str, (u16, u64)); 9] = [
        ("GET", "/socket.io/?transport=polling", (400, 5)),
        ("GET", "/socket.io/?EIO=abc&transport=polling", (400, 5)),
        ("GET", "/socket.io/?EIO=4", (400, 0)),
        ("GET", "/socket.io/?EIO=4&transport=abc", (400, 0)),
        ("POST", POLLING, (400, 2)),
        ("PUT", POLLING, (400, 2)),
        ("GET", "/socket.io/?EIO=4&transport=websocket", (400, 3)),
        (
            "GET",
            "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA",
            (400, 1),
        ),
        (
            "POST",
            "/socket.io/?EIO=4&transport=polling&sid=nope",
            (400, 1),
        ),
    ];
    for (method, target, want) in cases {
        let r = exchange(addr, method, target, b"", &[]);
        assert_eq!(refusal(&r), want, "{method} {target}: {}", text(&r));
    }
    // Elsewhere other methods are still 405, and the page and /healthz still answer.
    assert_eq!(exchange(addr, "PUT", "/", b"", &[]).status, 405);
    assert_eq!(exchange(addr, "GET", "/healthz", b"", &[]).status, 200);
    // A polling request for a session on WebSocket is a mismatch (code 3).
    let mut ws = connect_ws_to(&server, WEBSOCKET);
    let open: Value = serde_json::from_str(&ws_recv_text(&mut ws)[1..]).unwrap();
    let r = exchange(
        addr,
        "GET",
        &with_sid(open["sid"].as_str().unwrap()),
        b"",
        &[],
    );
    assert_eq!(refusal(&r), (400, 3));
}

#[test]
fn polling_round_trip_with_the_heartbeat_through_held_polls() {
    let server = start(&[]);
    let addr = server.addr;
    let sid = open_polling(addr);
    for _ in 0..3 {
        // The poll is held until the server's ping, about 300 ms on.
        let started = Instant::now();
        let r = exchange(addr, "GET", &with_sid(&sid), b"", &[]);
        let waited = started.elapsed();
        assert_eq!((r.status, text(&r)), (200, "2"), "{r:?}");
        assert!(
            waited >= Duration::from_millis(150),
            "answered after {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
        let r = exchange(addr, "POST", &with_sid(&sid), b"3", &[]);
        assert_eq!((r.status, text(&r)), (200, "ok"));
        assert_eq!(r.header("content-type"), Some("text/html"));
    }
    // Messages, a binary one and a noop are taken (the stub app answers nothing).
    let r = exchange(
        addr,
        "POST",
        &with_sid(&sid),
        "4hé\u{1e}bAQID\u{1e}6".as_bytes(),
        &[],
    );
    assert_eq!((r.status, text(&r)), (200, "ok"));
    let metrics = fetch_metrics(addr);
    assert_eq!(metrics.get("wsrelay_eio_sessions_open"), Some(&1.0));
}

#[test]
fn an_unanswered_ping_ends_a_polling_session() {
    let server = start(&[]);
    let sid = open_polling(server.addr);
    thread::sleep(Duration::from_millis(300 + 200 + 50));
    let r = exchange(server.addr, "GET", &with_sid(&sid), b"", &[]);
    assert_eq!(refusal(&r), (400, 1));
    assert_eq!(
        fetch_metrics(server.addr).get("wsrelay_eio_sessions_open"),
        Some(&0.0)
    );
}

#[test]
fn a_close_packet_answers_the_held_poll_with_a_noop_and_ends_the_session() {
    let server = start(&[]);
    let addr = server.addr;
    let sid = open_polling(addr);
    let held = start_poll(addr, &sid);
    thread::sleep(Duration::from_millis(50));
    let r = exchange(addr, "POST", &with_sid(&sid), b"1", &[]);
    assert_eq!((r.status, text(&r)), (200, "ok"));
    assert_eq!(finish_poll(held), (200, "6".to_owned()));
    assert_eq!(
        refusal(&exchange(addr, "GET", &with_sid(&sid), b"", &[])),
        (400, 1)
    );
}

#[test]
fn a_second_concurrent_poll_is_400_and_ends_the_session() {
    let server = start_slow("5000");
    let addr = server.addr;
    let sid = open_polling(addr);
    let held = start_poll(addr, &sid);
    thread::sleep(Duration::from_millis(50));
    let second = exchange(addr, "GET", &with_sid(&sid), b"", &[]);
    assert_eq!(refusal(&second), (400, 3));
    assert_eq!(finish_poll(held), (200, "1".to_owned()));
    assert_eq!(
        refusal(&exchange(addr, "GET", &with_sid(&sid), b"", &[])),
        (400, 1)
    );
}

#[test]
fn bad_packets_end_the_session_and_max_payload_is_enforced() {
    let server = start(&["--eio-max-payload", "100"]);
    let addr = server.addr;
    let sid = open_polling(addr);
    // Over maxPayload: 413, and the session lives on (the reference keeps it).
    let big = [b'4'; 101];
    assert_eq!(
        exchange(addr, "POST", &with_sid(&sid), &big, &[]).status,
        413
    );
    // At the limit: taken. A socket.io CONNECT, so that the socket.io layer keeps the
    // session too (a hundred 4s read as a packet it would close the session for, as the
    // reference server's socket.io does).
    let connect = format!(r#"40{{"k":"{}"}}"#, "x".repeat(90));
    assert_eq!(connect.len(), 100);
    let r = exchange(addr, "POST", &with_sid(&sid), connect.as_bytes(), &[]);
    assert_eq!((r.status, text(&r)), (200, "ok"));
    // An unknown packet type is a parse error: 400, and the session is gone.
    assert_eq!(
        refusal(&exchange(addr, "POST", &with_sid(&sid), b"9", &[])),
        (400, 3)
    );
    assert_eq!(
        refusal(&exchange(addr, "POST", &with_sid(&sid), b"3", &[])),
        (400, 1)
    );
    // Over WebSocket, a message over maxPayload is closed with 1009.
    let (mut c, r) = raw_upgrade(addr, WEBSOCKET);
    assert_eq!(r.status, 101);
    assert!(c.read_text().starts_with("0{"));
    c.send_frame(true, OP_TEXT, &[b'4'; 101]);
    c.expect_close(1009);
}

/// A raw upgrade request for `target`; the response head.
fn raw_upgrade(addr: SocketAddr, target: &str) -> (RawClient, HttpResponse) {
    let mut c = RawClient::connect(addr);
    let key = common::new_key();
    let host = addr.to_string();
    let headers = [
        ("Host", host.as_str()),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.as_str()),
        ("Sec-WebSocket-Version", "13"),
    ];
    let r = c.handshake(&request(&format!("GET {target} HTTP/1.1"), &headers));
    (c, r)
}

#[test]
fn websocket_handshake_heartbeat_and_timeout() {
    let server = start(&[]);
    let mut ws = connect_ws_to(&server, WEBSOCKET);
    let first = ws_recv_text(&mut ws);
    let open: Value = serde_json::from_str(&first[1..]).expect("the open packet");
    assert!(first.starts_with('0'));
    assert_eq!(open["upgrades"], serde_json::json!([]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
    for _ in 0..3 {
        assert_eq!(ws_recv_text(&mut ws), "2");
        ws_send(&mut ws, Message::text("3"));
    }
    // No pong: the session ends within the timeout, with a close frame.
    assert_eq!(ws_recv_text(&mut ws), "2");
    let started = Instant::now();
    match ws_recv(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn websocket_handshake_errors_are_answered_before_the_101() {
    let server = start(&[]);
    let addr = server.addr;
    for (target, message) in [
        (
            "/socket.io/?transport=websocket",
            "Unsupported protocol version",
        ),
        (
            "/socket.io/?EIO=abc&transport=websocket",
            "Unsupported protocol version",
        ),
        ("/socket.io/?EIO=4", "Transport unknown"),
        ("/socket.io/?EIO=4&transport=abc", "Transport unknown"),
        (
            "/socket.io/?EIO=4&transport=websocket&sid=nope",
            "Session ID unknown",
        ),
    ] {
        let (mut c, r) = raw_upgrade(addr, target);
        assert_eq!(r.status, 400, "{target}: {r:?}");
        assert_eq!(c.read_to_eof(), message.as_bytes(), "{target}");
    }
    // The polling transport asked over WebSocket: 101, then closed (the reference does so).
    let (mut c, r) = raw_upgrade(addr, POLLING);
    assert_eq!(r.status, 101);
    c.expect_close(1008);
    // A client's close packet ends the session and its WebSocket.
    let mut ws = connect_ws_to(&server, WEBSOCKET);
    ws_recv_text(&mut ws);
    ws_send(&mut ws, Message::text("1"));
    assert!(matches!(ws_recv(&mut ws), Message::Close(_)));
}

#[test]
fn a_polling_session_upgrades_to_websocket() {
    let server = start_slow("2000");
    let addr = server.addr;
    let sid = open_polling(addr);
    let held = start_poll(addr, &sid);
    thread::sleep(Duration::from_millis(50));
    let target = format!("{WEBSOCKET}&sid={sid}");
    let mut ws = connect_ws_to(&server, &target);
    ws_send(&mut ws, Message::text("2probe"));
    assert_eq!(ws_recv_text(&mut ws), "3probe");
    // The held poll ends with a noop, so the client can pause polling; polls meanwhile too.
    assert_eq!(finish_poll(held), (200, "6".to_owned()));
    let r = exchange(addr, "GET", &with_sid(&sid), b"", &[]);
    assert_eq!((r.status, text(&r)), (200, "6"));
    ws_send(&mut ws, Message::text("5"));
    // The session is on WebSocket now: polls are refused, another WebSocket is closed.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        refusal(&exchange(addr, "GET", &with_sid(&sid), b"", &[])),
        (400, 3)
    );
    let (mut other, r) = raw_upgrade(addr, &target);
    assert_eq!(r.status, 101);
    other.expect_close(1008);
    // Its pings come over the WebSocket.
    assert_eq!(ws_recv_text(&mut ws), "2");
    ws_send(&mut ws, Message::text("3"));
    assert_eq!(
        fetch_metrics(addr).get("wsrelay_eio_sessions_open"),
        Some(&1.0)
    );
}

#[test]
fn cors_follows_the_origin_policy() {
    let server = start(&["--allow-origin", "http://app.example"]);
    let addr = server.addr;
    let allowed = [("Origin", "http://app.example")];
    let r = exchange(addr, "GET", POLLING, b"", &allowed);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let same = format!("http://{addr}");
    let r = exchange(addr, "GET", POLLING, b"", &[("Origin", &same)]);
    assert_eq!(r.header("access-control-allow-origin"), Some(same.as_str()));
    // A preflight for a client with extra headers.
    let preflight = [
        ("Origin", "http://app.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "x-token"),
    ];
    let r = exchange(addr, "OPTIONS", POLLING, b"", &preflight);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
    assert!(r.has_token("access-control-allow-methods", "POST"));
    // Another origin: 403, and no session.
    let r = exchange(
        addr,
        "GET",
        POLLING,
        b"",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    // Without Origin (not a browser): no CORS fields.
    let r = exchange(addr, "GET", POLLING, b"", &[]);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn polling_sessions_count_under_the_connection_limits() {
    let server = start(&["--max-connections-per-ip", "3", "--trusted-proxy", "none"]);
    let addr = server.addr;
    open_polling(addr);
    open_polling(addr);
    // Two sessions and the handshake's own socket: the third is over the limit.
    let r = exchange(addr, "GET", POLLING, b"", &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        fetch_metrics(addr).get("wsrelay_eio_sessions_open"),
        Some(&2.0)
    );
}

#[test]
fn socketio_websockets_are_not_the_apps_clients_in_any_mode() {
    for mode in ["echo", "relay", "chat"] {
        let mut args = vec!["--mode", mode];
        args.extend_from_slice(&FAST);
        let server = Server::start(&args);
        let mut eio = connect_ws_to(&server, WEBSOCKET);
        assert!(ws_recv_text(&mut eio).starts_with("0{"), "{mode}");
        let mut plain = connect_ws_to(&server, "/");
        if mode == "chat" {
            ws_recv_text(&mut plain); // the welcome
        }
        ws_send(&mut plain, Message::text(r#"{"name":"a","msg":"hi"}"#));
        // Its echo, relay or chat message (after a join notice in chat).
        let heard = (0..5).any(|_| ws_recv_text(&mut plain).contains("hi"));
        assert!(heard, "{mode}");
        // The socket.io client hears only Engine.IO packets: its pings.
        for _ in 0..2 {
            assert_eq!(ws_recv_text(&mut eio), "2", "{mode}");
            ws_send(&mut eio, Message::text("3"));
        }
        let metrics = fetch_metrics(server.addr);
        assert_eq!(metrics.get("wsrelay_websockets_open"), Some(&1.0), "{mode}");
        assert_eq!(
            metrics.get("wsrelay_eio_sessions_open"),
            Some(&1.0),
            "{mode}"
        );
    }
}

#[test]
fn sigterm_answers_held_polls_with_a_close_packet() {
    let mut server = start_slow("10000");
    let sid = open_polling(server.addr);
    let held = start_poll(server.addr, &sid);
    thread::sleep(Duration::from_millis(100));
    server.terminate();
    assert_eq!(finish_poll(held), (200, "1".to_owned()));
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}
