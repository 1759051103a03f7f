//! Verifies `GET /metrics`: after real traffic (two relay clients, three messages, a
//! foreign-origin handshake, an oversized request head, a too-big message, a client close)
//! every counter says exactly what happened, and the exposition parses with Prometheus' own
//! Python parser (`prometheus_client`, found through `WSRELAY_PYTHON` or `python3`; test.sh
//! installs it) into the same samples. `/healthz` answers `ok`.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::{
    OP_CLOSE, OP_TEXT, RawClient, Server, close_payload, get_request, http_exchange, new_key,
    parse_metrics, request, upgrade_headers,
};

/// Samples as prometheus_client parses them, or `None` (with a note) when it is not installed
/// outside CI.
fn parse_with_prometheus_client(text: &str) -> Option<HashMap<String, f64>> {
    let python = std::env::var("WSRELAY_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let usable = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        // test.sh names the interpreter it installed the parser for; then it must work.
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("WSRELAY_PYTHON").is_none(),
            "{python} cannot import prometheus_client (under CI, or named by WSRELAY_PYTHON): \
             test.sh installs it"
        );
        eprintln!("SKIPPED the prometheus_client parse: pip install prometheus-client");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client rejected:\n{text}"
    );
    Some(serde_json::from_slice(&output.stdout).expect("the parser's JSON"))
}

#[test]
fn counters_match_the_traffic_and_parse_with_prometheus_client() {
    let server = Server::start(&["--mode", "relay", "--max-message", "1000"]);
    let mut a = RawClient::open(&server);
    let mut b = RawClient::open(&server);
    for text in ["one", "two", "three"] {
        a.send_frame(true, OP_TEXT, text.as_bytes());
        assert_eq!(a.read_text(), text);
        assert_eq!(b.read_text(), text);
    }
    // 403: a page from elsewhere.
    let mut headers = upgrade_headers(server.addr, &new_key());
    headers.push(("Origin", "http://evil.example".to_owned()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        http_exchange(server.addr, &request("GET / HTTP/1.1", &refs)).status,
        403
    );
    // 431: a request head over 8 KiB.
    let big = "x".repeat(9000);
    let head = request("GET / HTTP/1.1", &[("Host", "h"), ("X-Big", &big)]);
    assert_eq!(http_exchange(server.addr, &head).status, 431);
    // 1009: b sends more than --max-message.
    b.send_frame(true, OP_TEXT, &[b'x'; 1001]);
    b.expect_close(1009);
    b.finish_close(1009);
    // 1000: a says goodbye; the server echoes.
    a.send_frame(true, OP_CLOSE, &close_payload(1000, b"bye"));
    a.expect_close(1000);
    a.expect_eof();
    let health = http_exchange(server.addr, &get_request(server.addr, "/healthz"));
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));

    let response = http_exchange(server.addr, &get_request(server.addr, "/metrics"));
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{response:?}"
    );
    let text = String::from_utf8(response.body).unwrap();
    let m = parse_metrics(&text);
    let expect = [
        // a, b, the 403, the 431, /healthz, /metrics.
        ("wsrelay_connections_accepted_total", 6.0),
        ("wsrelay_upgrades_total", 2.0),
        ("wsrelay_http_requests_total", 2.0),
        ("wsrelay_websockets_open", 0.0),
        ("wsrelay_handshake_rejections_total{status=\"403\"}", 1.0),
        ("wsrelay_handshake_rejections_total{status=\"431\"}", 1.0),
        ("wsrelay_handshake_rejections_total{status=\"503\"}", 0.0),
        ("wsrelay_messages_received_total", 3.0),
        ("wsrelay_message_bytes_received_total", 11.0),
        ("wsrelay_messages_sent_total", 3.0),
        ("wsrelay_deliveries_total", 6.0),
        ("wsrelay_close_frames_sent_total{code=\"1000\"}", 1.0),
        ("wsrelay_close_frames_sent_total{code=\"1009\"}", 1.0),
        ("wsrelay_close_frames_sent_total{code=\"1001\"}", 0.0),
        ("wsrelay_slow_consumer_closes_total", 0.0),
        ("wsrelay_limit_hits_total{limit=\"origin\"}", 1.0),
        ("wsrelay_limit_hits_total{limit=\"max_handshake\"}", 1.0),
        ("wsrelay_limit_hits_total{limit=\"max_message\"}", 1.0),
        ("wsrelay_limit_hits_total{limit=\"max_connections\"}", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(m.get(name), Some(&value), "{name} in:\n{text}");
    }
    // This request's socket at least; the 403/431 ones may not have been reaped yet.
    let open = m["wsrelay_connections_open"];
    assert!((1.0..=4.0).contains(&open), "connections_open {open}");
    assert!(m["wsrelay_received_bytes_total"] > 9000.0);
    assert!(m["wsrelay_sent_bytes_total"] > 0.0);

    if let Some(parsed) = parse_with_prometheus_client(&text) {
        assert_eq!(
            parsed, m,
            "prometheus_client reads other samples than we wrote"
        );
    }
}
