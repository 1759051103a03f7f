//! Verifies the opening handshake (RFC 6455 §4.2.1-4.2.2): valid upgrades, with header
//! names and tokens in any case and `Connection`/`Upgrade` as token lists, get 101 with
//! the right `Sec-WebSocket-Accept`; a missing or wrong version gets 426 with
//! `Sec-WebSocket-Version: 13`; a missing Host, a bad or missing key, HTTP/1.0 or no
//! `Connection: Upgrade` get 400; a head over `--max-handshake` gets 431; a client that
//! stalls is dropped after `--handshake-timeout` (an upgraded one is not); and frames
//! sent in the same write as the request are processed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tungstenite::Message;

use common::{
    OP_PING, OP_PONG, OP_TEXT, RawClient, Server, accept_for, connect_ws, http_exchange, new_key,
    request, upgrade_headers, upgrade_request, ws_recv, ws_send,
};

/// An upgrade request from the valid headers with `edit` applied to them.
fn edited_request(
    addr: SocketAddr,
    key: &str,
    request_line: &str,
    edit: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> Vec<u8> {
    let mut headers = upgrade_headers(addr, key);
    edit(&mut headers);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    request(request_line, &refs)
}

fn without(headers: &mut Vec<(&'static str, String)>, name: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

fn replace(headers: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    without(headers, name);
    headers.push((name, value.to_owned()));
}

#[track_caller]
fn assert_upgraded(server: &Server, what: &str, bytes: &[u8], key: &str) {
    let mut client = RawClient::connect(server.addr);
    client.send(bytes);
    let response = client
        .try_read_response_head()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(response.status, 101, "{what}: {response:?}");
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some(accept_for(key).as_str()),
        "{what}: {response:?}"
    );
    assert!(
        response.has_token("upgrade", "websocket"),
        "{what}: {response:?}"
    );
    assert!(
        response.has_token("connection", "upgrade"),
        "{what}: {response:?}"
    );
    // The connection really is a WebSocket now.
    client.send_frame(true, OP_PING, b"up");
    let pong = client.read_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"up"[..])
    );
}

#[test]
fn valid_upgrade_gets_101_with_the_right_accept() {
    let server = Server::start(&["--mode", "echo"]);
    let key = new_key();
    assert_upgraded(
        &server,
        "standard request",
        &upgrade_request(server.addr, &key),
        &key,
    );
}

#[test]
fn rfc_sample_key_gets_the_rfc_sample_accept() {
    // RFC 6455 §1.3 and §4.2.2 give this key and its accept value.
    let server = Server::start(&["--mode", "echo"]);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut client = RawClient::connect(server.addr);
    let response = client.handshake(&upgrade_request(server.addr, key));
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
}

#[test]
fn tungstenite_client_can_connect_and_talk() {
    let server = Server::start(&["--mode", "echo"]);
    let mut ws = connect_ws(&server);
    ws_send(&mut ws, Message::text("hello"));
    assert_eq!(ws_recv(&mut ws), Message::text("hello"));
}

#[test]
fn header_names_and_tokens_are_case_insensitive_lists() {
    let server = Server::start(&["--mode", "echo"]);
    let addr = server.addr;
    let line = "GET / HTTP/1.1";
    let key = new_key();
    let host = addr.to_string();
    let lowercase = request(
        line,
        &[
            ("host", &host),
            ("upgrade", "WebSocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", &key),
            ("sec-websocket-version", "13"),
        ],
    );
    assert_upgraded(
        &server,
        "lower-case names, mixed-case values",
        &lowercase,
        &key,
    );
    let cases = [
        (
            "Connection: keep-alive, Upgrade",
            "Connection",
            "keep-alive, Upgrade",
        ),
        (
            "Connection: Upgrade,keep-alive",
            "Connection",
            "Upgrade,keep-alive",
        ),
        ("Connection: UPGRADE", "Connection", "UPGRADE"),
        ("Upgrade: WEBSOCKET", "Upgrade", "WEBSOCKET"),
        ("Upgrade: foo, websocket", "Upgrade", "foo, websocket"),
    ];
    for (what, name, value) in cases {
        let key = new_key();
        let bytes = edited_request(addr, &key, line, |h| replace(h, name, value));
        assert_upgraded(&server, what, &bytes, &key);
    }
}

#[test]
fn missing_or_wrong_version_gets_426_naming_version_13() {
    let server = Server::start(&[]);
    let key = new_key();
    let line = "GET / HTTP/1.1";
    let cases = [
        (
            "no version",
            edited_request(server.addr, &key, line, |h| {
                without(h, "Sec-WebSocket-Version")
            }),
        ),
        (
            "version 8",
            edited_request(server.addr, &key, line, |h| {
                replace(h, "Sec-WebSocket-Version", "8")
            }),
        ),
        (
            "version 14",
            edited_request(server.addr, &key, line, |h| {
                replace(h, "Sec-WebSocket-Version", "14")
            }),
        ),
    ];
    for (what, bytes) in cases {
        let response = http_exchange(server.addr, &bytes);
        assert_eq!(response.status, 426, "{what}: {response:?}");
        assert_eq!(
            response.header("sec-websocket-version"),
            Some("13"),
            "{what}: {response:?}"
        );
    }
}

#[test]
fn invalid_upgrade_requests_get_400() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let key = new_key();
    let line = "GET / HTTP/1.1";
    let key_header = "Sec-WebSocket-Key";
    let cases = [
        (
            "no Host",
            edited_request(addr, &key, line, |h| without(h, "Host")),
        ),
        (
            "no key",
            edited_request(addr, &key, line, |h| without(h, key_header)),
        ),
        (
            "key decodes to 15 bytes",
            edited_request(addr, &key, line, |h| {
                replace(h, key_header, "AAAAAAAAAAAAAAAAAAAA")
            }),
        ),
        (
            "key decodes to 17 bytes",
            edited_request(addr, &key, line, |h| {
                replace(h, key_header, "AAAAAAAAAAAAAAAAAAAAAAA=")
            }),
        ),
        (
            "key is not base64",
            edited_request(addr, &key, line, |h| {
                replace(h, key_header, "not*base64*at*all!!!!!==")
            }),
        ),
        (
            "HTTP/1.0",
            edited_request(addr, &key, "GET / HTTP/1.0", |_| {}),
        ),
        (
            "no Connection header",
            edited_request(addr, &key, line, |h| without(h, "Connection")),
        ),
        (
            "Connection without Upgrade",
            edited_request(addr, &key, line, |h| replace(h, "Connection", "keep-alive")),
        ),
    ];
    for (what, bytes) in cases {
        let response = http_exchange(addr, &bytes);
        assert_eq!(response.status, 400, "{what}: {response:?}");
    }
}

/// A valid upgrade request padded with an `X-Padding` header to `total` bytes.
fn padded_request(addr: SocketAddr, key: &str, total: usize) -> Vec<u8> {
    let base = upgrade_request(addr, key).len() + "X-Padding: \r\n".len();
    let pad = "p".repeat(total.checked_sub(base).expect("total too small"));
    let bytes = edited_request(addr, key, "GET / HTTP/1.1", |h| h.push(("X-Padding", pad)));
    assert_eq!(bytes.len(), total);
    bytes
}

#[test]
fn head_over_max_handshake_gets_431() {
    let server = Server::start(&["--max-handshake", "1024"]);
    let key = new_key();
    let response = http_exchange(server.addr, &padded_request(server.addr, &key, 2000));
    assert_eq!(response.status, 431, "{response:?}");
}

#[test]
fn head_over_max_handshake_gets_431_before_it_ends() {
    let server = Server::start(&["--max-handshake", "1024"]);
    let key = new_key();
    let mut bytes = padded_request(server.addr, &key, 2000);
    bytes.truncate(bytes.len() - 4); // no blank line: the head never ends
    let response = http_exchange(server.addr, &bytes);
    assert_eq!(response.status, 431, "{response:?}");
}

#[test]
fn default_max_handshake_is_8192_bytes() {
    let server = Server::start(&["--mode", "echo"]);
    let key = new_key();
    let bytes = padded_request(server.addr, &key, 8000);
    assert_upgraded(&server, "8000-byte head", &bytes, &key);
    let bytes = padded_request(server.addr, &key, 9000);
    let response = http_exchange(server.addr, &bytes);
    assert_eq!(response.status, 431, "9000-byte head: {response:?}");
}

#[test]
fn stalled_handshake_is_dropped_after_the_timeout() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let half = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n";
    let start = Instant::now();
    let mut client = RawClient::connect(server.addr);
    client.send(half);
    // Whatever the server says (maybe a 408), it must close within the read timeout.
    client.read_to_eof();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "dropped after {elapsed:?}, before the 1 s handshake timeout"
    );
}

#[test]
fn silent_connection_is_dropped_after_the_timeout() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let start = Instant::now();
    let mut client = RawClient::connect(server.addr);
    client.read_to_eof();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "dropped after {elapsed:?}, before the 1 s handshake timeout"
    );
}

#[test]
fn upgraded_connection_outlives_the_handshake_timeout() {
    let server = Server::start(&["--mode", "echo", "--handshake-timeout", "1"]);
    let mut client = RawClient::open(&server);
    client.expect_silence(Duration::from_secs(2));
    client.send_frame(true, OP_PING, b"still here");
    let pong = client.read_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"still here"[..])
    );
}

#[test]
fn frames_in_the_same_write_as_the_request_are_processed() {
    let server = Server::start(&["--mode", "echo"]);
    let key = new_key();
    let mut client = RawClient::connect(server.addr);
    let mut bytes = upgrade_request(server.addr, &key);
    bytes.extend(client.masked(true, OP_TEXT, b"early bird"));
    bytes.extend(client.masked(true, OP_PING, b"p"));
    bytes.extend(client.masked(true, OP_TEXT, "second ✓".as_bytes()));
    let response = client.handshake(&bytes);
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(client.read_text(), "early bird");
    let pong = client.read_frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (OP_PONG, &b"p"[..]));
    assert_eq!(client.read_text(), "second ✓");
}
