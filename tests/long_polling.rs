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
    // Three pollers come, each with an up-to-date cursor: each poll is held and announces
    // its client (seq 2, 3, 4). Each is answered by the next one's join (the last at the end
    // of its wait); then they stop polling.
    let held: Vec<_> = (1..=3)
        .map(|since| {
            let query = format!("room=p&client=c{since}&since={since}&epoch={epoch}");
            let s = hold_poll(server.addr, &query);
            thread::sleep(Duration::from_millis(100));
            s
        })
        .collect();
    for s in held {
        let (status, body) = read_answer(&mut common::RawClient::from_stream(s)).unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("joined"));
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

/// A poll that must be answered at once (a held one would run into the read timeout, since
/// the servers here wait 20 s): status and JSON body.
fn poll_now(addr: SocketAddr, query: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let host = addr.to_string();
    let mut headers = vec![("Host", host.as_str())];
    headers.extend_from_slice(extra);
    let r = http_exchange(
        addr,
        &request(&format!("GET /poll?{query} HTTP/1.1"), &headers),
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// A poll sent on a socket that is kept open (held by the server), not read.
fn hold_poll(addr: SocketAddr, query: &str) -> std::net::TcpStream {
    use std::io::Write as _;
    let mut s = common::tcp_connect(addr);
    let host = addr.to_string();
    s.write_all(&request(
        &format!("GET /poll?{query} HTTP/1.1"),
        &[("Host", &host)],
    ))
    .unwrap();
    s
}

/// The notifications kept in a room's history (none if the room does not exist).
fn history_notices(addr: SocketAddr, room: &str) -> Vec<Value> {
    let (status, v) = poll_now(addr, &format!("room={room}"), &[]);
    assert_eq!(status, 200);
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "notification")
        .cloned()
        .collect()
}

#[test]
fn one_shot_polls_make_no_room_and_announce_nobody() {
    let max_rooms = 4;
    let server = Server::start(&["--max-rooms", "4", "--poll-wait", "20"]);
    let addr = server.addr;
    // An existing room with a member, to try the bad cursors on it too.
    let mut ws = connect_ws_to(&server, "/real");
    let welcome: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    ws_events_until(&mut ws, 1); // its own join
    // Twice --max-rooms one-shot polls of each kind, each with its own client id: without a
    // cursor, with a cursor from the future (in the room's epoch and without one), with a
    // made-up epoch. Each is answered at once (a held poll would time out here).
    let max = u64::MAX.to_string();
    for i in 0..2 * max_rooms {
        for query in [
            format!("room=r{i}&client=a{i}"),
            format!("room=r{i}&client=b{i}&since={max}"),
            format!("room=r{i}&client=c{i}&since=5"),
            format!("room=r{i}&client=d{i}&since=0&epoch=made-up"),
            format!("room=real&client=e{i}&since={max}&epoch={epoch}"),
            format!("room=real&client=f{i}&since=99"),
        ] {
            let (status, v) = poll_now(addr, &query, &[]);
            assert_eq!(status, 200, "{query}: {v}");
            let events = v.as_array().unwrap();
            assert_eq!(events[0]["type"], "welcome", "{query}: {v}");
            if query.contains("since") {
                // A cursor the room never had is a bad cursor: a restart notice, no range.
                assert_eq!(events[1]["type"], "gap", "{query}: {v}");
                assert!(events[1].get("from").is_none(), "{query}: {v}");
            }
        }
    }
    // None of them made a room or was announced: the room slots are free and no join
    // notice is in any history (the real room has only its member's own join).
    for i in 0..2 * max_rooms {
        assert!(history_notices(addr, &format!("r{i}")).is_empty(), "r{i}");
    }
    assert_eq!(history_notices(addr, "real").len(), 1);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(ws.read().is_err(), "the member saw no notice");
    // Held polls with client ids in 2 × --max-rooms new rooms: guests alone do not pin their
    // rooms, so a WebSocket client still gets a new room.
    let held: Vec<_> = (0..2 * max_rooms)
        .map(|i| hold_poll(addr, &format!("room=g{i}&client=h{i}&since=0")))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut fresh = connect_ws_to(&server, "/fresh");
    let v: Value = serde_json::from_str(&ws_recv_text(&mut fresh)).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["room"].as_str()),
        (Some("welcome"), Some("fresh"))
    );
    drop(held);
}

#[test]
fn held_polls_of_two_epochs_get_their_own_answers() {
    // One room slot: a room is evicted while a poll of it is held, and made again.
    let server = Server::start(&["--max-rooms", "1", "--poll-wait", "20"]);
    let addr = server.addr;
    let read_answer = |s: std::net::TcpStream| {
        let mut c = common::RawClient::from_stream(s);
        let (status, body) = read_answer(&mut c).expect("an answer");
        assert_eq!(status, 200);
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    // The first incarnation of "x", made by a held poll at seq 0.
    let old = hold_poll(addr, "room=x&since=0");
    thread::sleep(Duration::from_millis(200));
    // A WebSocket client takes the slot ("x" is evicted), then leaves.
    let mut y = connect_ws_to(&server, "/y");
    ws_recv_text(&mut y);
    common::ws_close(&mut y);
    // "x" is made again by another held poll at seq 0, and a member joins it: one event wakes
    // both polls, whose cursors look alike but belong to different epochs.
    let new = hold_poll(addr, "room=x&since=0");
    thread::sleep(Duration::from_millis(200));
    let mut x = connect_ws_to(&server, "/x");
    let welcome: Value = serde_json::from_str(&ws_recv_text(&mut x)).unwrap();
    let (old, new) = (read_answer(old), read_answer(new));
    let kinds = |v: &Value| -> Vec<String> {
        let a = v.as_array().unwrap();
        a.iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    // The poll of the current epoch gets the join as news; the old one learns the room
    // started over, then gets its history.
    assert_eq!(kinds(&new), ["welcome", "notification"], "{new}");
    assert_eq!(new[1]["history"], Value::Null, "{new}");
    assert_eq!(kinds(&old), ["welcome", "gap", "notification"], "{old}");
    assert_eq!(old[2]["history"], true, "{old}");
    assert_eq!(old[0]["epoch"], welcome["epoch"]);
}

#[test]
fn a_poller_whose_answered_poll_is_its_last_is_gone_within_the_grace() {
    let server = Server::start(&["--poll-wait", "4"]);
    let addr = server.addr;
    let mut ws = connect_ws_to(&server, "/g");
    let first = poll(addr, "room=g");
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    let mut since = first[0]["seq"].as_u64().unwrap();
    // Poll until a poll is held (an older server answered the first one with the join).
    let held = loop {
        let s = hold_poll(
            addr,
            &format!("room=g&client=c&since={since}&epoch={epoch}"),
        );
        thread::sleep(Duration::from_millis(200));
        let mut c = common::RawClient::from_stream(s);
        c.set_read_timeout(Duration::from_millis(100));
        match read_answer(&mut c) {
            Some((_, body)) => since = last_seq(&body).unwrap_or(since),
            None => break c,
        }
        assert!(since < 10, "polls keep being answered at once");
    };
    // An event answers the held poll; the client never polls again (a closed tab).
    ws_send(
        &mut ws,
        Message::text(json!({"name": "w", "msg": "hi"}).to_string()),
    );
    let mut held = held;
    held.set_read_timeout(Duration::from_secs(5));
    let answered = Instant::now();
    assert_eq!(read_answer(&mut held).map(|a| a.0), Some(200));
    drop(held);
    let left = loop {
        let v: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
        if v["event"] == "leave" {
            break answered.elapsed();
        }
        assert!(answered.elapsed() < Duration::from_secs(20));
    };
    // Present for the grace after its last poll ended (min(10 s, --poll-wait) = 4 s, plus
    // the 1 s scan), not for another whole wait on top.
    assert!(left < Duration::from_millis(6500), "left after {left:?}");
}

/// A response's status and body, or `None` if no head arrives within the read timeout.
fn read_answer(c: &mut common::RawClient) -> Option<(u16, Vec<u8>)> {
    let head = c.try_read_response_head().ok()?;
    c.set_read_timeout(Duration::from_secs(5));
    Some((head.status, c.read_to_eof()))
}

/// The last `seq` in a poll's JSON answer.
fn last_seq(body: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.as_array()?.iter().filter_map(|e| e["seq"].as_u64()).max()
}

#[test]
fn a_cross_site_page_may_read_but_not_poll_as_present() {
    let server = Server::start(&["--poll-wait", "20"]);
    let addr = server.addr;
    let mut ws = connect_ws_to(&server, "/victim");
    let welcome: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
    ws_events_until(&mut ws, 1); // its own join
    let (seq, epoch) = (1, welcome["epoch"].clone());
    let epoch = epoch.as_str().unwrap();
    // An <img> or no-cors fetch from another site: no Origin, Sec-Fetch-Site: cross-site.
    let cross = [("Sec-Fetch-Site", "cross-site")];
    let query = format!("room=victim&client=evil&since={seq}&epoch={epoch}");
    let (status, v) = poll_now(addr, &query, &cross);
    assert_eq!((status, v["type"].as_str()), (403, Some("error")), "{v}");
    // Reading without presence is what any page could do by loading the chat page.
    let (status, _) = poll_now(addr, "room=victim", &cross);
    assert_eq!(status, 200);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(ws.read().is_err(), "nobody was announced");
    // The page's own held poll (same-origin) still counts: the member sees it join.
    use std::io::Write as _;
    let mut own = common::tcp_connect(addr);
    let host = addr.to_string();
    let head = request(
        &format!(
            "GET /poll?{} HTTP/1.1",
            query.replace("client=evil", "client=mine")
        ),
        &[("Host", &host), ("Sec-Fetch-Site", "same-origin")],
    );
    own.write_all(&head).unwrap();
    ws.get_mut()
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .unwrap();
    let v: Value = serde_json::from_str(&ws_recv_text(&mut ws)).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["count"].as_u64()),
        (Some("join"), Some(2)),
        "{v}"
    );
}
