//! Verifies chat rooms, history and resume over real sockets against the real binary: a
//! client joins the room its URL path names (`/` is the default room); messages, join/leave
//! notices and counts stay in their room; each event has a per-room `seq` and a `ts`; a new
//! client gets a `welcome` and then the recent history marked `"history":true`; a client cut
//! off by a TCP reset that reconnects with `?since=SEQ&epoch=EPOCH` gets exactly what it
//! missed, or a `gap` notice when part of it is no longer kept.

mod common;

use std::os::fd::AsRawFd;

use serde_json::{Value, json};
use tungstenite::Message;

use common::{Server, Ws, connect_ws_to, ws_recv_text, ws_send};

#[track_caller]
fn recv(ws: &mut Ws) -> Value {
    let text = ws_recv_text(ws);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON {text:?}: {e}"))
}

fn say(ws: &mut Ws, name: &str, msg: &str) {
    ws_send(
        ws,
        Message::text(json!({ "name": name, "msg": msg }).to_string()),
    );
}

/// Sends `{prefix}1` .. `{prefix}n` and sees each come back as a message, in order.
#[track_caller]
fn say_and_see(ws: &mut Ws, prefix: &str, n: u32) {
    for i in 1..=n {
        let msg = format!("{prefix}{i}");
        say(ws, "a", &msg);
        expect(ws, "message", "msg", json!(msg));
    }
}

/// Connects to `target`; returns the client, its welcome and what it was sent before its own
/// live join notice (history, missed events, gap notices), which it checks comes next.
#[track_caller]
fn join(server: &Server, target: &str) -> (Ws, Value, Vec<Value>) {
    let mut ws = connect_ws_to(server, target);
    let welcome = recv(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let own_join = welcome["seq"].as_u64().unwrap() + 1;
    let mut before = Vec::new();
    loop {
        let v = recv(&mut ws);
        if v["seq"].as_u64() == Some(own_join) {
            assert_eq!(
                (v["type"].as_str(), v["event"].as_str()),
                (Some("notification"), Some("join")),
                "after the catch-up comes the client's own join: {v}"
            );
            assert!(v.get("history").is_none());
            return (ws, welcome, before);
        }
        assert!(
            v["seq"].as_u64().is_none_or(|s| s < own_join),
            "nothing live before the own join: {v}"
        );
        before.push(v);
    }
}

#[track_caller]
fn expect(ws: &mut Ws, kind: &str, field: &str, value: Value) -> Value {
    let v = recv(ws);
    assert_eq!(v["type"], kind, "{v}");
    assert_eq!(v[field], value, "{v}");
    assert!(
        v["seq"].is_u64() && v["ts"].as_u64().unwrap() > 1_600_000_000_000,
        "{v}"
    );
    v
}

/// Resets the connection (SO_LINGER 0, then close): no close frame, an RST on the wire.
fn reset(ws: Ws) {
    let stream = ws.into_inner();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a properly sized, initialised linger struct.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_LINGER");
    drop(stream);
}

#[test]
fn two_rooms_do_not_leak_messages_or_counts() {
    let server = Server::start(&[]);
    let (mut a1, w, _) = join(&server, "/alpha");
    assert_eq!(w["room"], "alpha");
    let (mut a2, _, _) = join(&server, "/alpha");
    expect(&mut a1, "notification", "count", json!(2));
    let (mut b1, w, _) = join(&server, "/beta");
    assert_eq!(w["seq"], 0, "beta is a new room");
    say(&mut b1, "bea", "in beta");
    expect(&mut b1, "message", "msg", json!("in beta"));
    say(&mut a2, "al", "in alpha");
    // Alpha sees only alpha: the next thing each alpha client gets is alpha's message.
    let m1 = expect(&mut a1, "message", "msg", json!("in alpha"));
    let m2 = expect(&mut a2, "message", "msg", json!("in alpha"));
    assert_eq!(m1, m2);
    assert_eq!(m1["seq"], 3, "alpha: two joins, then this");
    // `/` is the default room: counts start at 1, nothing from alpha or beta.
    let (mut d, w, history) = join(&server, "/");
    assert_eq!((w["room"].as_str(), history.len()), (Some("main"), 0));
    drop(b1);
    say(&mut d, "dee", "in main");
    expect(&mut d, "message", "msg", json!("in main"));
    // Alpha's clients saw neither beta's leave nor main's traffic.
    say(&mut a1, "al", "still alpha");
    expect(&mut a2, "message", "msg", json!("still alpha"));
}

#[test]
fn late_joiner_gets_the_last_n_in_order_marked_as_history() {
    let server = Server::start(&["--history", "4"]);
    let (mut a, _, _) = join(&server, "/h");
    say_and_see(&mut a, "m", 6);
    // Events so far: join(1), m1..m6 (2..7). Kept: the last 4.
    let (_b, welcome, history) = join(&server, "/h");
    assert_eq!(welcome["seq"], 7);
    let msgs: Vec<&str> = history.iter().map(|v| v["msg"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["m3", "m4", "m5", "m6"]);
    let seqs: Vec<u64> = history.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    assert!(history.iter().all(|v| v["history"] == true));
}

#[test]
fn resume_after_a_reset_gets_exactly_the_missed_events() {
    let server = Server::start(&["--history", "50"]);
    let (mut a, _, _) = join(&server, "/r");
    let (mut c, welcome, _) = join(&server, "/r");
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    expect(&mut a, "notification", "count", json!(2));
    say(&mut a, "a", "before");
    expect(&mut a, "message", "msg", json!("before"));
    let last = expect(&mut c, "message", "msg", json!("before"))["seq"]
        .as_u64()
        .unwrap();
    reset(c);
    // The server sees the reset; its leave notice reaches `a` (and the history).
    let leave = expect(&mut a, "notification", "event", json!("leave"));
    assert_eq!(leave["count"], 1);
    say_and_see(&mut a, "missed ", 3);
    let target = format!("/r?since={last}&epoch={epoch}");
    let (mut c, _, missed) = join(&server, &target);
    let got: Vec<(u64, String)> = missed
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["msg"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "{missed:?}");
    assert_eq!(got[0].0, last + 1, "no gap, no duplicate");
    assert!(
        got.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "in order: {got:?}"
    );
    assert_eq!(missed[0]["event"], "leave");
    assert!(
        missed.iter().all(|v| v.get("history").is_none()),
        "missed events come as they were sent, not as history: {missed:?}"
    );
    assert_eq!(got[3].1, "missed 3");
    assert!(missed.iter().all(|v| v["type"] != "gap"));
    // Live again.
    expect(&mut a, "notification", "count", json!(2));
    say(&mut c, "c", "back");
    expect(&mut a, "message", "msg", json!("back"));
}

#[test]
fn a_cursor_older_than_the_history_gets_a_gap_notice() {
    let server = Server::start(&["--history", "3"]);
    let (mut a, welcome, _) = join(&server, "/g");
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    say_and_see(&mut a, "m", 5);
    // Events: join(1), m1..m5 (2..6); kept 4..6. A client that saw 1 missed 2..6.
    let (_b, _, got) = join(&server, &format!("/g?since=1&epoch={epoch}"));
    assert_eq!(got[0]["type"], "gap", "{got:?}");
    assert_eq!(
        (got[0]["from"].as_u64(), got[0]["to"].as_u64()),
        (Some(2), Some(3))
    );
    let seqs: Vec<u64> = got[1..]
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    // A cursor from another epoch (a restarted server, a room made anew): the room started
    // over, so the gap has no range and everything kept follows.
    let (_c, _, got) = join(&server, "/g?since=3&epoch=old");
    assert_eq!(got[0]["type"], "gap");
    assert!(got[0].get("from").is_none(), "{got:?}");
    assert_eq!(got.len(), 1 + 3);
}

#[test]
fn invalid_room_names_and_the_room_limit_are_refused_with_close_codes() {
    let server = Server::start(&["--max-rooms", "1"]);
    // "." and "..": a browser would remove them from the path and land in the default room.
    let bad = ["/a%20b", "/has.dot-ok_but~not", "/..", "/.", "/..?since=1"];
    for (target, code) in bad.map(|t| (t, 1008)) {
        let mut ws = connect_ws_to(&server, target);
        match common::ws_recv(&mut ws) {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), code, "{target}"),
            other => panic!("{target}: expected close {code}, got {other:?}"),
        }
    }
    let (_a, _, _) = join(&server, "/one");
    let mut ws = connect_ws_to(&server, "/two");
    match common::ws_recv(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1013),
        other => panic!("expected close 1013, got {other:?}"),
    }
    // The room that exists still takes members.
    let (_b, _, history) = join(&server, "/one");
    assert_eq!(history.len(), 1, "one's own first join");
}

#[test]
fn a_cursor_past_the_last_event_is_answered_as_a_restart() {
    let server = Server::start(&[]);
    let (_a, welcome, _) = join(&server, "/future");
    let epoch = welcome["epoch"].as_str().unwrap();
    // Same epoch, but a seq the room never had: resuming from it would make the client drop
    // every live event up to it as "seen". It gets a restart notice and the whole history.
    let (_b, _, before) = join(&server, &format!("/future?since=99&epoch={epoch}"));
    assert_eq!(before[0]["type"], "gap", "{before:?}");
    assert!(before[0].get("from").is_none(), "{before:?}");
    assert_eq!(before[1]["seq"], 1, "{before:?}");
    assert_eq!(before[1]["history"], true, "{before:?}");
}

#[test]
fn a_presence_notice_replaced_in_history_is_not_reported_missed() {
    let server = Server::start(&[]);
    let (_a, welcome, _) = join(&server, "/z");
    let epoch = welcome["epoch"].as_str().unwrap();
    // B's join notice replaces A's in the history (nothing came between them).
    let (_b, _, _) = join(&server, "/z");
    // A client that has seen nothing of this epoch misses nothing that was said.
    let (_c, _, before) = join(&server, &format!("/z?since=0&epoch={epoch}"));
    assert!(before.iter().all(|v| v["type"] != "gap"), "{before:?}");
    assert_eq!(before.len(), 1, "B's notice: {before:?}");
}
