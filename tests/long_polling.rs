//! Verifies HTTP long polling against the real binary: `GET /poll?room=R` answers at once
//! with the welcome and the room's history, `GET /poll?…&since=SEQ&epoch=E` waits (up to
//! `--poll-wait`) for the room's next events, `POST /send?room=R` publishes a chat message;
//! long-polling and WebSocket clients in one room see the same events in the same order; a
//! polling client counts as present while it keeps polling; bad requests get 400/405/411/413.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use common::{Server, Ws, connect_ws_to, http_exchange, request, ws_recv_text, ws_send};

fn poll(addr: SocketAddr, query: &str) -> Vec<Value> {
    let host = addr.to_string();
    let r = http_exchange(
        addr,
        &request(&format!("GET /poll?{query} HTTP/1.1"), &[("Host", &host)]),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).expect("a JSON body");
    let events = v.as_array().expect("a JSON array").clone();
    assert_eq!(events[0]["type"], "welcome", "{events:?}");
    events
}

fn post(addr: SocketAddr, path: &str, body: &[u8], extra: &[(&str, &str)]) -> (u16, Value) {
    let host = addr.to_string();
    let len = body.len().to_string();
    let mut headers = vec![
        ("Host", host.as_str()),
        ("Content-Type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    if !extra
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        headers.push(("Content-Length", &len));
    }
    let mut req = request(&format!("POST {path} HTTP/1.1"), &headers);
    req.extend_from_slice(body);
    let r = http_exchange(addr, &req);
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// A WebSocket client's events until (and including) the one with `seq` (the welcome and
/// anything without a seq are left out).
fn ws_events_until(ws: &mut Ws, seq: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v: Value = serde_json::from_str(&ws_recv_text(ws)).unwrap();
        let Some(s) = v["seq"].as_u64() else { continue };
        if v["type"] == "welcome" {
            continue;
        }
        out.push(v);
        if s >= seq {
            return out;
        }
    }
}

/// What identifies an event for comparison: seq, type and text (the `history` mark and the
/// transport differ).
fn key(v: &Value) -> (u64, String, String) {
    (
        v["seq"].as_u64().unwrap(),
        v["type"].as_str().unwrap().to_owned(),
        v["msg"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn long_polling_and_websocket_clients_see_one_sequence() {
    let server = Server::start(&["--poll-wait", "5"]);
    let addr = server.addr;
    let mut ws = connect_ws_to(&server, "/mix");
    // The poller's first request: welcome plus history (the WebSocket client's join), and
    // it arrives as a guest, which everyone hears about.
    let first = poll(addr, "room=mix&client=poller1");
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    assert!(first[1..].iter().all(|v| v["history"] == true), "{first:?}");
    let joins: Vec<_> = first[1..]
        .iter()
        .map(|v| (v["seq"].clone(), v["count"].clone()))
        .collect();
    assert_eq!(
        joins,
        [(json!(1), json!(1)), (json!(2), json!(2))],
        "both joins, the guest's too"
    );
    // The poller keeps polling in a thread, collecting everything until it has seen seq 8.
    let poller = thread::spawn(move || {
        let mut since = first[0]["seq"].as_u64().unwrap();
        let mut seen = Vec::new();
        let start = Instant::now();
        while since < 8 && start.elapsed() < Duration::from_secs(30) {
            let got = poll(
                addr,
                &format!("room=mix&client=poller1&since={since}&epoch={epoch}"),
            );
            for v in &got[1..] {
                let s = v["seq"].as_u64().unwrap();
                assert_eq!(s, since + 1, "no gap, no duplicate: {got:?}");
                assert!(v.get("history").is_none());
                since = s;
                seen.push(v.clone());
            }
        }
        seen
    });
    // Interleaved senders: WebSocket, POST, WebSocket, ... (events 3..=8 after the two joins).
    for i in 0..6 {
        let msg = format!("m{i}");
        if i % 2 == 0 {
            let text = json!({"name": "ws", "msg": msg}).to_string();
            ws_send(&mut ws, Message::text(text));
        } else {
            let body = json!({"name": "lp", "msg": msg}).to_string();
            let (status, v) = post(addr, "/send?room=mix", body.as_bytes(), &[]);
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["msg"], msg);
        }
        // Pace the senders a little so that some events find the poll waiting.
        thread::sleep(Duration::from_millis(30));
    }
    let ws_seen = ws_events_until(&mut ws, 8);
    let lp_seen = poller.join().unwrap();
    // The WebSocket client saw its own join (1) and the poller's (2) live, then the same 3..=8
    // as the poller.
    assert_eq!(ws_seen[1]["event"], "join");
    assert_eq!(ws_seen[1]["count"], 2, "the poller counts as present");
    let ws_keys: Vec<_> = ws_seen[2..].iter().map(key).collect();
    let lp_keys: Vec<_> = lp_seen.iter().map(key).collect();
    assert_eq!(ws_keys, lp_keys);
    assert_eq!(ws_keys.len(), 6, "{ws_keys:?}");
}

#[test]
fn a_poll_that_finds_nothing_is_answered_empty_after_the_wait() {
    let server = Server::start(&["--poll-wait", "1"]);
    let first = poll(server.addr, "room=quiet");
    let (seq, epoch) = (first[0]["seq"].as_u64().unwrap(), first[0]["epoch"].clone());
    let start = Instant::now();
    let epoch = epoch.as_str().unwrap();
    let got = poll(
        server.addr,
        &format!("room=quiet&since={seq}&epoch={epoch}"),
    );
    let waited = start.elapsed();
    assert_eq!(got.len(), 1, "only the welcome: {got:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    // Another epoch: the room started over; a gap notice without range, then the history.
    let got = poll(server.addr, &format!("room=quiet&since={seq}&epoch=gone"));
    assert_eq!(got[1]["type"], "gap", "{got:?}");
    assert!(got[1].get("from").is_none());
}

#[test]
fn a_poller_that_stops_polling_is_announced_as_gone() {
    let server = Server::start(&["--poll-wait", "1"]);
    let mut ws = connect_ws_to(&server, "/p");
    poll(server.addr, "room=p&client=brief");
    // Its join, then (after one wait plus at most as long again) its leave.
    let mut events = Vec::new();
    while events.len() < 2 {
        let v: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
        if v["type"] == "notification" && v.get("history").is_none() {
            events.push(v);
        }
    }
    let counts: Vec<_> = events
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_owned(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [("join".into(), 1), ("join".into(), 2)]);
    let v: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["count"].as_u64()),
        (Some("leave"), Some(1)),
        "{v}"
    );
}

#[test]
fn bad_requests_get_their_status() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let ok = br#"{"name":"a","msg":"b"}"#;
    let (status, v) = post(addr, "/send?room=bad%20name", ok, &[]);
    assert_eq!((status, v["type"].as_str()), (400, Some("error")));
    let (status, v) = post(addr, "/send", br#"{"name":"a"}"#, &[]);
    assert_eq!((status, v["type"].as_str()), (400, Some("error")), "{v}");
    let (status, _) = post(addr, "/send", b"\xff\xfe", &[]);
    assert_eq!(status, 400);
    let (status, _) = post(addr, "/", ok, &[]);
    assert_eq!(status, 405);
    let (status, _) = post(addr, "/send", ok, &[("Transfer-Encoding", "chunked")]);
    assert_eq!(status, 411);
    let big = vec![b'x'; 40 * 1024];
    let (status, _) = post(addr, "/send", &big, &[]);
    assert_eq!(status, 413);
    // A valid POST to the default room still works after all that.
    let (status, v) = post(addr, "/send", ok, &[]);
    assert_eq!(
        (status, v["type"].as_str(), v["seq"].as_u64()),
        (200, Some("message"), Some(1))
    );
}
