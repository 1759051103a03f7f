//! Verifies `--admin-listen`: a second listener in the same process answers `GET /metrics` and
//! `GET /healthz`, 404 for the page and every other path and method, and never upgrades (a
//! WebSocket client gets no 101). Its `/metrics` reports the main listener's connections and
//! leaves its own out of every connection and traffic count (and the chat's online count); it
//! answers while the main listener is full, keeps the handshake deadline, and closes
//! connections past its own cap of 16 unanswered. The same address for both listeners is a configuration error (exit 2);
//! an admin address that cannot be bound stops the server (exit 1).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    RawClient, Server, connect_ws, fetch_metrics, get_request, http_exchange, request, tcp_connect,
    upgrade_request,
};

/// The status of a WebSocket handshake by tungstenite with `url`, at `addr`.
fn ws_status(addr: SocketAddr, path: &str) -> u16 {
    let url = format!("ws://{addr}{path}");
    match tungstenite::client(url.as_str(), tcp_connect(addr)) {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            response.status().as_u16()
        }
        Err(e) => panic!("handshake with {url}: {e}"),
    }
}

#[test]
fn answers_metrics_and_healthz_and_nothing_else() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = server.admin_addr();
    assert_ne!(admin, server.addr);

    let health = http_exchange(admin, &get_request(admin, "/healthz"));
    assert_eq!((health.status, &health.body[..]), (200, &b"ok\n"[..]));
    let metrics = http_exchange(admin, &get_request(admin, "/metrics?x=1"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{metrics:?}"
    );
    for path in [
        "/",
        "/index.html",
        "/chat.js",
        "/chat.css",
        "/poll?room=main",
        "/lobby",
    ] {
        let r = http_exchange(admin, &get_request(admin, path));
        assert_eq!(r.status, 404, "GET {path} on the admin listener: {r:?}");
    }
    let host = admin.to_string();
    for path in ["/send?room=main", "/metrics"] {
        let post = request(
            &format!("POST {path} HTTP/1.1"),
            &[("Host", &host), ("Content-Length", "2")],
        );
        let mut bytes = post;
        bytes.extend_from_slice(b"{}");
        let r = http_exchange(admin, &bytes);
        assert_eq!(r.status, 404, "POST {path} on the admin listener: {r:?}");
    }

    // No WebSocket here: the Upgrade field is ignored and the request answered as a GET.
    assert_eq!(ws_status(admin, "/"), 404);
    assert_eq!(ws_status(admin, "/lobby"), 404);
    assert_eq!(ws_status(admin, "/metrics"), 200);
    let mut raw = RawClient::connect(admin);
    let response = raw.handshake(&upgrade_request(admin, &common::new_key()));
    assert_eq!(response.status, 404, "{response:?}");
    assert!(response.header("sec-websocket-accept").is_none());
    raw.read_to_eof();

    // The main listener is unchanged.
    assert_eq!(ws_status(server.addr, "/"), 101);
    let page = http_exchange(server.addr, &get_request(server.addr, "/"));
    assert_eq!(page.status, 200);
}

#[test]
fn metrics_count_the_main_listener_only() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = server.admin_addr();
    let mut clients: Vec<_> = (0..3).map(|_| connect_ws(&server)).collect();
    // One socket on the main port still handshaking, one idle on the admin port.
    let _handshaking = tcp_connect(server.addr);
    // Accepted before the scrapes below, which queue behind it.
    let _idle_admin = tcp_connect(admin);
    // The handshaking socket may still be in the backlog: wait for its accept.
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = fetch_metrics(admin);
        if m["wsrelay_connections_accepted_total"] == 4.0 || Instant::now() > deadline {
            break m;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(m["wsrelay_connections_accepted_total"], 4.0, "{m:?}");
    assert_eq!(m["wsrelay_connections_open"], 4.0, "{m:?}");
    assert_eq!(m["wsrelay_websockets_open"], 3.0, "{m:?}");
    assert_eq!(m["wsrelay_upgrades_total"], 3.0, "{m:?}");
    assert_eq!(m["wsrelay_http_requests_total"], 0.0, "{m:?}");
    // Scrapes are not clients: the counts do not move with them.
    let again = fetch_metrics(admin);
    for name in [
        "wsrelay_connections_accepted_total",
        "wsrelay_connections_open",
        "wsrelay_http_requests_total",
        "wsrelay_received_bytes_total",
        "wsrelay_sent_bytes_total",
    ] {
        assert_eq!(again[name], m[name], "{name} moved with a scrape");
    }
    // The chat's own count of who is online leaves the admin connections out too.
    let mut fourth = connect_ws(&server);
    let welcome = common::ws_recv_text(&mut fourth);
    assert!(welcome.contains("\"welcome\""), "{welcome}");
    let joined = loop {
        let text = common::ws_recv_text(&mut fourth);
        if text.contains("\"join\"") && !text.contains("\"history\"") {
            break text;
        }
    };
    assert!(joined.contains("\"count\":4"), "{joined}");
    for ws in &mut clients {
        common::ws_close(ws);
    }
}

#[test]
fn answers_while_the_main_listener_is_full() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0", "--max-connections", "2"]);
    let admin = server.admin_addr();
    let _a = connect_ws(&server);
    let _b = connect_ws(&server);
    let full = http_exchange(server.addr, &get_request(server.addr, "/healthz"));
    assert_eq!(full.status, 503, "{full:?}");
    let health = http_exchange(admin, &get_request(admin, "/healthz"));
    assert_eq!(health.status, 200, "{health:?}");
    let m = fetch_metrics(admin);
    assert_eq!(
        m["wsrelay_limit_hits_total{limit=\"max_connections\"}"],
        1.0
    );
}

#[test]
fn keeps_the_handshake_deadline() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0", "--handshake-timeout", "1"]);
    let admin = server.admin_addr();
    let mut silent = RawClient::connect(admin);
    let start = Instant::now();
    silent.expect_eof();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    let m = fetch_metrics(admin);
    assert_eq!(
        m["wsrelay_limit_hits_total{limit=\"handshake_timeout\"}"],
        1.0
    );
}

#[test]
fn closes_connections_past_its_cap_unanswered() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0", "--log-level", "debug"]);
    let admin = server.admin_addr();
    let accepted = || server.stderr().matches("on the admin listener as").count();
    let mut held: Vec<RawClient> = (0..16).map(|_| RawClient::connect(admin)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted() < 16 {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let mut over = RawClient::connect(admin);
    over.expect_eof();
    // The line is written before the close, but read from the server's stderr by another
    // thread: it may reach the test a moment after the EOF.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server
        .stderr()
        .contains("16 open already, closed unanswered")
    {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    // The main listener is not held back by it.
    assert_eq!(ws_status(server.addr, "/"), 101);
    // A slot freed is usable again, once the server has seen the close.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = RawClient::connect(admin);
        c.send_lenient(&get_request(admin, "/healthz"));
        match c.try_read_response_head() {
            Ok(r) => {
                assert_eq!(r.status, 200, "{r:?}");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "no answer after a slot freed: {e}"
            ),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn same_address_twice_is_a_configuration_error_and_an_unbindable_one_stops_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = |admin: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
            .args(["--listen", &addr, "--admin-listen", admin])
            .stdin(Stdio::null())
            .output()
            .expect("run wsrelay");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&addr);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--admin-listen must differ from --listen"),
        "{stderr}"
    );
    drop(taken);
    // TEST-NET-1 (RFC 5737): no interface here has it.
    let (code, stderr) = run("192.0.2.1:9100");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--admin-listen 192.0.2.1:9100"), "{stderr}");
}
