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
    // The poller's first request: welcome plus history (the WebSocket client's join).
    let first = poll(addr, "room=mix&client=poller1");
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    let history: Vec<_> = first[1..]
        .iter()
        .map(|v| (v["seq"].clone(), v["history"].clone()))
        .collect();
    assert_eq!(history, [(json!(1), json!(true))]);
    // It keeps polling in a thread, collecting everything until it has seen seq 8. Its
    // first poll with a cursor makes it present: its own join (2) is the first answer.
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
    // The WebSocket client sees its own join (1), then the poller's (2) with a count of 2.
    let joins = ws_events_until(&mut ws, 2);
    assert_eq!(joins[1]["event"], "join");
    assert_eq!(joins[1]["count"], 2, "the poller counts as present");
    // Interleaved senders: WebSocket, POST, WebSocket, ... (events 3..=8).
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
    assert_eq!(
        key(&lp_seen[0]),
        key(&joins[1]),
        "the poller saw its own join"
    );
    let ws_keys: Vec<_> = ws_seen.iter().map(key).collect();
    let lp_keys: Vec<_> = lp_seen[1..].iter().map(key).collect();
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
fn pollers_that_stop_polling_are_announced_as_gone_one_by_one() {
    let server = Server::start(&["--poll-wait", "1"]);
    let mut ws = connect_ws_to(&server, "/p");
    let first = poll(server.addr, "room=p");
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    // Three pollers come (their first poll with a cursor), then stop polling.
    for (i, client) in ["c1", "c2", "c3"].iter().enumerate() {
        let since = 1 + i;
        let got = poll(
            server.addr,
            &format!("room=p&client={client}&since={since}&epoch={epoch}"),
        );
        assert_eq!(got[1]["event"], "join", "{got:?}");
    }
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 7 && start.elapsed() < Duration::from_secs(10) {
        let v: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
        if v["type"] == "notification" {
            seen.push((
                v["event"].as_str().unwrap().to_owned(),
                v["count"].as_u64().unwrap(),
            ));
        }
    }
    let want: Vec<(String, u64)> = [("join", 1), ("join", 2), ("join", 3), ("join", 4)]
        .into_iter()
        .chain([("leave", 3), ("leave", 2), ("leave", 1)])
        .map(|(e, c)| (e.to_owned(), c))
        .collect();
    assert_eq!(seen, want, "each departure counts down");
}

#[test]
fn one_shot_requests_do_not_make_rooms() {
    // One room at most: a poll without a cursor or a POST must not take the slot.
    let server = Server::start(&["--max-rooms", "1", "--poll-wait", "1"]);
    let got = poll(server.addr, "room=ghost&client=x");
    assert_eq!(
        (got.len(), got[0]["epoch"].as_str(), got[0]["seq"].as_u64()),
        (1, Some(""), Some(0))
    );
    let (status, _) = post(
        server.addr,
        "/send?room=ghost",
        br#"{"name":"a","msg":"b"}"#,
        &[],
    );
    assert_eq!(status, 404, "no such room");
    // The slot is still free for a WebSocket client's room.
    let mut ws = connect_ws_to(&server, "/real");
    let welcome: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
    assert_eq!(welcome["room"], "real");
    // A poller with an up-to-date cursor in a full server is told to come back later.
    let host = server.addr.to_string();
    let r = http_exchange(
        server.addr,
        &request("GET /poll?room=other&since=0 HTTP/1.1", &[("Host", &host)]),
    );
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn without_history_a_poller_moves_past_the_gap_instead_of_looping() {
    let server = Server::start(&["--history", "0", "--poll-wait", "1"]);
    let mut ws = connect_ws_to(&server, "/h0");
    ws_send(
        &mut ws,
        Message::text(json!({"name": "a", "msg": "gone"}).to_string()),
    );
    ws_events_until(&mut ws, 2);
    let first = poll(server.addr, "room=h0");
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    // A cursor at 0 missed 1-2, none kept: one gap notice, answered at once.
    let got = poll(server.addr, &format!("room=h0&since=0&epoch={epoch}"));
    assert_eq!(
        (got[1]["type"].as_str(), got[1]["to"].as_u64()),
        (Some("gap"), Some(2))
    );
    // Moving the cursor to the gap's end, the poll waits (and answers with nothing new).
    let start = Instant::now();
    let got = poll(server.addr, &format!("room=h0&since=2&epoch={epoch}"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(start.elapsed() >= Duration::from_millis(900));
}

#[test]
fn sigterm_answers_held_polls_before_exiting() {
    let mut server = Server::start(&["--poll-wait", "20"]);
    let _ws = connect_ws_to(&server, "/t");
    let first = poll(server.addr, "room=t");
    let (seq, epoch) = (
        first[0]["seq"].as_u64().unwrap(),
        first[0]["epoch"].as_str().unwrap().to_owned(),
    );
    let addr = server.addr;
    let held = thread::spawn(move || {
        let start = Instant::now();
        let got = poll(addr, &format!("room=t&since={seq}&epoch={epoch}"));
        (got, start.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    server.terminate();
    let (got, waited) = held.join().unwrap();
    assert_eq!(got[0]["type"], "welcome");
    assert!(
        waited < Duration::from_secs(5),
        "answered at shutdown, not after the wait"
    );
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn bad_requests_get_their_status() {
    let server = Server::start(&[]);
    let addr = server.addr;
    // The default room exists while someone is in it.
    let _ws = connect_ws_to(&server, "/");
    let ok = br#"{"name":"a","msg":"b"}"#;
    let (status, v) = post(addr, "/send?room=bad%20name", ok, &[]);
    assert_eq!((status, v["type"].as_str()), (400, Some("error")));
    let (status, v) = post(addr, "/send", br#"{"name":"a"}"#, &[]);
    assert_eq!((status, v["type"].as_str()), (400, Some("error")), "{v}");
    let (status, _) = post(addr, "/send", b"\xff\xfe", &[]);
    assert_eq!(status, 400);
    let (status, _) = post(addr, "/", ok, &[]);
    assert_eq!(status, 405);
    let (status, _) = post(addr, "/poll", ok, &[]);
    assert_eq!(status, 405);
    let (status, _) = post(addr, "/send", ok, &[("Content-Length", "1")]);
    assert_eq!(status, 400, "two lengths");
    let (status, _) = post(addr, "/send", ok, &[("Transfer-Encoding", "chunked")]);
    assert_eq!(status, 411);
    let big = vec![b'x'; 40 * 1024];
    let (status, _) = post(addr, "/send", &big, &[]);
    assert_eq!(status, 413);
    // A valid POST to the default room still works after all that.
    let (status, v) = post(addr, "/send", ok, &[]);
    assert_eq!(
        (status, v["type"].as_str(), v["seq"].as_u64()),
        (200, Some("message"), Some(2)),
        "the WebSocket client's join was 1"
    );
}
