//! Verifies cluster mode: wsrelay processes started with `--redis redis://127.0.0.1:PORT`
//! share every chat room through one real `redis-server` (started here on a free loopback
//! port, no persistence). Clients on different nodes see the same events in one order under
//! one `seq`, counted with one cluster-wide presence; a late joiner or a resuming client on
//! one node gets what was said on another; long polling on one node mixes with WebSocket
//! clients on another; a node SIGKILLed mid-traffic leaves the count within 15 s, and its
//! clients, resuming on other nodes with their cursor, get every event once, in the room's
//! order; two processes on one port (`--reuse-port`) share its clients' room; a node starts
//! without Redis (503 on `/healthz`) and becomes healthy once Redis answers; Redis killed
//! gives 503 naming Redis on `/healthz` (the admin port's too) until it is back; Redis killed
//! and restarted empty gives senders errors while it is down, then a room started over; a node
//! whose Redis links are cut (`CLIENT KILL`) while data is kept catches up with nothing
//! missed; `--history` and `--history-bytes` bound what Redis keeps; the script's operations,
//! called directly, read what a node missed even across an epoch change.
//!
//! Every client here checks, on every event it gets, what the protocol promises within an
//! epoch: `seq` only grows (history, missed events and live ones), and live events (above the
//! welcome's `seq`) come one by one, none skipped. redis-server comes from `apt-get install
//! redis-server` (`test.sh` installs it); without it the tests say so and pass, except
//! under `CI`.

mod common;
mod redis;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use common::{Server, Ws, connect_ws_to, fetch_metrics, get_request, http_exchange, request};
use redis::{Cluster, kill_node, links_to, start_node};

/// The longest any one expected event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Per-connection message rate for tests that send bursts (the default is 10 a second).
const FAST: [&str; 2] = ["--max-message-rate", "1000"];

// ---------------------------------------------------------------------------------------
// A chat member that checks the protocol's promises on everything it receives

/// A WebSocket client in one room on one node; it records every JSON message it gets.
struct Member {
    label: String,
    ws: Ws,
    /// The current epoch (from the last welcome).
    epoch: String,
    /// The current epoch's first welcome `seq`: events above it are live.
    boundary: u64,
    /// The highest `seq` received in the current epoch.
    last: u64,
    /// Every event with a `seq` (history, missed, live), as received, all epochs.
    events: Vec<Value>,
    /// Where the current epoch's events start in `events`.
    epoch_start: usize,
    welcomes: Vec<Value>,
    gaps: Vec<Value>,
    errors: Vec<Value>,
    /// Promises broken so far: a `seq` that did not grow, a live `seq` that skipped one.
    faults: Vec<String>,
}

impl Member {
    /// Joins `path` on `node` and reads the welcome.
    #[track_caller]
    fn join(node: &Server, path: &str, label: &str) -> Member {
        Member::connect(node, path, label, None)
    }

    /// Reconnects to `path` on `node` with the cursor (`since`, `epoch`).
    #[track_caller]
    fn resume(node: &Server, path: &str, label: &str, since: u64, epoch: &str) -> Member {
        let target = format!("{path}?since={since}&epoch={epoch}");
        Member::connect(node, &target, label, Some((since, epoch)))
    }

    #[track_caller]
    fn connect(node: &Server, target: &str, label: &str, cursor: Option<(u64, &str)>) -> Member {
        let ws = connect_ws_to(node, target);
        let mut m = Member {
            label: label.to_owned(),
            ws,
            epoch: String::new(),
            boundary: 0,
            last: 0,
            events: Vec::new(),
            epoch_start: 0,
            welcomes: Vec::new(),
            gaps: Vec::new(),
            errors: Vec::new(),
            faults: Vec::new(),
        };
        let welcome = m.recv(Instant::now() + EVENT_WAIT);
        let welcome = welcome.unwrap_or_else(|| panic!("{label}: no welcome"));
        assert_eq!(
            welcome["type"], "welcome",
            "{label}: the welcome comes first"
        );
        if let Some((since, epoch)) = cursor
            && welcome["epoch"] == epoch
        {
            m.last = since;
        }
        m
    }

    /// The next JSON message before `deadline`, recorded and checked; `None` on timeout.
    /// A close from the server fails the test: members are never disconnected here.
    #[track_caller]
    fn recv(&mut self, deadline: Instant) -> Option<Value> {
        self.next(deadline).unwrap_or_else(|e| {
            panic!(
                "{}: connection lost: {e}; recent: {}",
                self.label,
                self.recent()
            )
        })
    }

    /// Reads (recording and checking) until the connection is gone, at most `limit`; says how
    /// it went. For a member whose node was killed.
    #[track_caller]
    fn until_lost(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self.next(deadline) {
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{}: the connection still stands {limit:?} later; recent: {}",
                    self.label,
                    self.recent()
                ),
                Err(why) => return why,
            }
        }
    }

    /// The next JSON message before `deadline`, recorded and checked: `Ok(None)` on timeout,
    /// `Err` (what happened) once the connection is closed or broken.
    #[track_caller]
    fn next(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws
                .get_mut()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("{}: non-JSON {text:?}: {e}", self.label));
                    self.record(&v);
                    return Ok(Some(v));
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(frame)) => {
                    return Err(format!("the server sent close {frame:?}"));
                }
                Ok(other) => panic!(
                    "{}: the server sent {other:?}; recent: {}",
                    self.label,
                    self.recent()
                ),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn record(&mut self, v: &Value) {
        match v["type"].as_str() {
            Some("welcome") => {
                let epoch = v["epoch"].as_str().unwrap_or_default().to_owned();
                if self.welcomes.is_empty() || epoch != self.epoch {
                    self.epoch = epoch;
                    self.boundary = v["seq"].as_u64().unwrap_or(0);
                    self.last = 0;
                    self.epoch_start = self.events.len();
                }
                self.welcomes.push(v.clone());
            }
            Some("gap") => self.gaps.push(v.clone()),
            Some("error") => self.errors.push(v.clone()),
            _ => {
                let Some(seq) = v["seq"].as_u64() else {
                    self.faults.push(format!("an event without a seq: {v}"));
                    return;
                };
                if seq <= self.last {
                    self.faults.push(format!(
                        "seq {seq} after {} (twice or out of order): {v}",
                        self.last
                    ));
                } else if seq > self.boundary {
                    let want = self.last.max(self.boundary) + 1;
                    if seq != want {
                        self.faults.push(format!(
                            "live seq {seq} where {want} was next (missed): {v}"
                        ));
                    }
                    if v.get("history").is_some() {
                        self.faults
                            .push(format!("history above the welcome's seq: {v}"));
                    }
                }
                self.last = self.last.max(seq);
                self.events.push(v.clone());
            }
        }
    }

    /// Reads until an event satisfies `pred` (at most `limit`); returns it.
    #[track_caller]
    fn until(
        &mut self,
        limit: Duration,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            match self.recv(deadline) {
                Some(v) if pred(&v) => return v,
                Some(_) => {}
                None => panic!(
                    "{}: no {what} within {limit:?}; recent: {}",
                    self.label,
                    self.recent()
                ),
            }
        }
    }

    /// Reads until the latest live presence notice says `count` are online (returns at once
    /// if it already does); returns that notice.
    #[track_caller]
    fn wait_count(&mut self, count: usize) -> Value {
        let latest = self.events[self.epoch_start..]
            .iter()
            .rev()
            .find(|v| v["type"] == "notification" && v.get("history").is_none());
        if let Some(v) = latest
            && v["count"] == count
        {
            return v.clone();
        }
        self.until(EVENT_WAIT, &format!("notice with count {count}"), |v| {
            v["type"] == "notification" && v["count"] == count
        })
    }

    /// Reads until a chat message `msg` arrives.
    #[track_caller]
    fn wait_msg(&mut self, msg: &str) -> Value {
        self.until(EVENT_WAIT, &format!("message {msg:?}"), |v| {
            v["type"] == "message" && v["msg"] == msg
        })
    }

    /// Reads until every message in `want` has arrived (at most `limit`).
    #[track_caller]
    fn wait_all(&mut self, want: &BTreeSet<String>, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !want.iter().all(|m| self.has_msg(m)) {
            if self.recv(deadline).is_none() {
                let missing: Vec<_> = want.iter().filter(|m| !self.has_msg(m)).collect();
                panic!(
                    "{}: {} of {} messages missing after {limit:?}: {missing:?}; recent: {}",
                    self.label,
                    missing.len(),
                    want.len(),
                    self.recent()
                );
            }
        }
    }

    fn has_msg(&self, msg: &str) -> bool {
        self.events
            .iter()
            .any(|v| v["type"] == "message" && v["msg"] == msg)
    }

    #[track_caller]
    fn say(&mut self, msg: &str) {
        let text = json!({ "name": self.label, "msg": msg }).to_string();
        if let Err(e) = self.ws.send(Message::text(text)) {
            panic!("{}: send {msg:?}: {e}", self.label);
        }
    }

    /// Says `msg` and waits for it to come back.
    #[track_caller]
    fn say_and_see(&mut self, msg: &str) -> Value {
        self.say(msg);
        self.wait_msg(msg)
    }

    /// The events of the current epoch with `seq` in `range`, without the `history` mark.
    fn span(&self, range: std::ops::RangeInclusive<u64>) -> Vec<Value> {
        self.events[self.epoch_start..]
            .iter()
            .filter(|v| range.contains(&v["seq"].as_u64().unwrap()))
            .map(unmarked)
            .collect()
    }

    /// Asserts no promise was broken and no error or gap came.
    #[track_caller]
    fn assert_clean(&self) {
        assert!(
            self.faults.is_empty(),
            "{}: {:#?}\nrecent: {}",
            self.label,
            self.faults,
            self.recent()
        );
        assert!(
            self.errors.is_empty(),
            "{}: errors {:?}",
            self.label,
            self.errors
        );
        assert!(self.gaps.is_empty(), "{}: gaps {:?}", self.label, self.gaps);
    }

    /// The last few events, for failure messages.
    fn recent(&self) -> String {
        let from = self.events.len().saturating_sub(6);
        format!(
            "events[{from}..]={:?} welcomes={:?} gaps={:?} errors={:?} faults={:?}",
            &self.events[from..],
            self.welcomes,
            self.gaps,
            self.errors,
            self.faults
        )
    }
}

/// `v` without its `history` mark: what the event was when first sent.
fn unmarked(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("history");
    }
    v
}

/// What a client resuming after `since` must get of `all` (a member's events in order, up to
/// the resume's welcome): every event above `since`, except a presence notice directly
/// followed by another, which the later one replaced in the history.
fn missed_after(all: &[Value], since: u64, upto: u64) -> Vec<Value> {
    let kept: Vec<&Value> = all
        .iter()
        .filter(|v| {
            let s = v["seq"].as_u64().unwrap();
            s > since && s <= upto
        })
        .collect();
    kept.iter()
        .enumerate()
        .filter(|(i, v)| {
            let replaced = v["type"] == "notification"
                && kept.get(i + 1).is_some_and(|next| {
                    next["type"] == "notification"
                        && next["seq"].as_u64() == v["seq"].as_u64().map(|s| s + 1)
                });
            !replaced
        })
        .map(|(_, v)| unmarked(v))
        .collect()
}

/// Asserts every member saw the same events (whole JSON objects) over the `seq` range all of
/// them saw live, and that range holds every message in `want`.
#[track_caller]
fn assert_one_order(members: &[Member], want: &BTreeSet<String>) {
    let lo = members.iter().map(|m| m.boundary).max().unwrap() + 1;
    let hi = members.iter().map(|m| m.last).min().unwrap();
    let first = &members[0];
    let reference = first.span(lo..=hi);
    let msgs: BTreeSet<String> = reference
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["msg"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = want.difference(&msgs).collect();
    assert!(
        missing.is_empty(),
        "{}: seq {lo}..={hi} lacks {missing:?}",
        first.label
    );
    let count = reference.iter().filter(|v| v["type"] == "message").count();
    assert_eq!(count, msgs.len(), "{}: a message twice", first.label);
    for m in &members[1..] {
        let span = m.span(lo..=hi);
        if span != reference {
            let diff = span
                .iter()
                .zip(&reference)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("{}: {a}\n{}: {b}", m.label, first.label));
            panic!(
                "{} and {} differ over seq {lo}..={hi} ({} vs {} events); first difference:\n{}",
                m.label,
                first.label,
                span.len(),
                reference.len(),
                diff.unwrap_or_else(|| "one is a prefix of the other".to_owned())
            );
        }
    }
}

/// Resets the connection (SO_LINGER 0, then close): no close frame, an RST on the wire.
fn reset(m: Member) {
    let stream = m.ws.into_inner();
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

/// Runs each member's `work` on its own thread, all starting together; returns the members
/// in the same order (a panic in one is re-raised here with its message).
fn together(
    members: Vec<Member>,
    work: impl Fn(&mut Member) + Send + Sync + 'static,
) -> Vec<Member> {
    let work = Arc::new(work);
    let start = Arc::new(Barrier::new(members.len()));
    let handles: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            let (work, start) = (Arc::clone(&work), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                work(&mut m);
                m
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// HTTP

/// `GET path`: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = http_exchange(addr, &get_request(addr, path));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// `GET /poll?query`: the JSON array (the welcome first).
#[track_caller]
fn poll(addr: SocketAddr, query: &str) -> Vec<Value> {
    let (status, body) = get(addr, &format!("/poll?{query}"));
    assert_eq!(status, 200, "/poll?{query}: {body}");
    let events: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
    assert_eq!(events[0]["type"], "welcome", "{events:?}");
    events
}

/// `POST /send?room=ROOM` with a chat message: status and JSON answer.
fn post_send(addr: SocketAddr, room: &str, name: &str, msg: &str) -> (u16, Value) {
    let body = json!({ "name": name, "msg": msg }).to_string();
    let host = addr.to_string();
    let len = body.len().to_string();
    let mut req = request(
        &format!("POST /send?room={room} HTTP/1.1"),
        &[
            ("Host", &host),
            ("Content-Type", "application/json"),
            ("Content-Length", &len),
        ],
    );
    req.extend_from_slice(body.as_bytes());
    let r = http_exchange(addr, &req);
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

// ---------------------------------------------------------------------------------------
// The harness itself

#[test]
fn the_redis_harness_kills_and_restarts_an_empty_server_on_its_port() {
    let Some(mut redis) = redis::RedisServer::start_or_skip() else {
        return;
    };
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
    assert_eq!(redis.keys(), ["k"]);
    // links_to finds this process's own connection by its local address.
    let link = std::net::TcpStream::connect(redis.addr()).unwrap();
    let local = link.local_addr().unwrap().to_string();
    assert_eq!(links_to(std::process::id(), redis.port), [local]);
    drop(link);
    let port = redis.port;
    redis.kill();
    assert!(!redis::ping(redis.addr()), "killed, yet it answers");
    redis.restart();
    assert_eq!(redis.port, port);
    assert!(redis::ping(redis.addr()));
    assert_eq!(
        redis.cli(&["GET", "k"]).trim(),
        "",
        "restarted empty: no persistence"
    );
    assert!(redis.keys().is_empty());
}

// ---------------------------------------------------------------------------------------
// One room across nodes

/// `per_node` members on each of `nodes` nodes join one room one after another (each sees
/// the cluster-wide count it makes), then all send `each` messages at once; every member on
/// every node gets every message once, and all see the same events in the same order.
fn concurrent_senders(nodes: usize, per_node: usize, each: usize) {
    let Some(c) = Cluster::start(nodes, &FAST) else {
        return;
    };
    let total = nodes * per_node;
    let mut members = Vec::new();
    for i in 0..total {
        let node = i % nodes;
        let label = format!("n{node}c{}", i / nodes);
        let mut m = Member::join(&c.nodes[node], "/busy", &label);
        m.wait_count(i + 1);
        members.push(m);
    }
    for m in &mut members {
        m.wait_count(total);
    }
    let want: BTreeSet<String> = members
        .iter()
        .flat_map(|m| (0..each).map(move |j| format!("{}-{j}", m.label)))
        .collect();
    let all = want.clone();
    let members = together(members, move |m| {
        for j in 0..each {
            let msg = format!("{}-{j}", m.label);
            m.say(&msg);
        }
        m.wait_all(&all, Duration::from_secs(20));
    });
    for m in &members {
        m.assert_clean();
        // A sender's messages keep the order it sent them in.
        let own: Vec<&str> = m
            .events
            .iter()
            .filter(|v| v["type"] == "message" && v["name"] == m.label.as_str())
            .map(|v| v["msg"].as_str().unwrap())
            .collect();
        let sent: Vec<String> = (0..each).map(|j| format!("{}-{j}", m.label)).collect();
        assert_eq!(own, sent, "{}: its own messages, in order", m.label);
    }
    assert_one_order(&members, &want);
}

#[test]
fn two_nodes_concurrent_senders_see_one_order() {
    concurrent_senders(2, 2, 40);
}

#[test]
fn three_nodes_concurrent_senders_see_one_order() {
    concurrent_senders(3, 2, 25);
}

#[test]
fn a_late_joiner_on_another_node_gets_the_history() {
    let Some(c) = Cluster::start(2, &[]) else {
        return;
    };
    let mut a = Member::join(&c.nodes[0], "/late", "a");
    a.wait_count(1);
    for i in 1..=5 {
        a.say_and_see(&format!("m{i}"));
    }
    let mut b = Member::join(&c.nodes[1], "/late", "b");
    assert_eq!(
        b.welcomes[0]["seq"].as_u64(),
        Some(a.last),
        "B's welcome names the room's last event, said on A"
    );
    b.wait_count(2);
    let history: Vec<Value> = b
        .events
        .iter()
        .filter(|v| v.get("history") == Some(&json!(true)))
        .map(unmarked)
        .collect();
    assert_eq!(
        history,
        a.span(1..=a.last),
        "B's history is exactly what A saw (join, m1..m5), seq and ts included"
    );
    a.wait_count(2);
    b.say_and_see("hi from B");
    a.wait_msg("hi from B");
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn resume_on_another_node_gets_exactly_what_was_missed() {
    let Some(c) = Cluster::start(2, &["--history", "50"]) else {
        return;
    };
    let (na, nb) = (&c.nodes[0], &c.nodes[1]);
    // `s` on B watches the whole time; `c` hops: on A, cut, resumed on B, cut, resumed on A.
    let mut s = Member::join(nb, "/hop", "s");
    s.wait_count(1);
    let mut cl = Member::join(na, "/hop", "c");
    cl.wait_count(2);
    s.wait_count(2);
    let mut hops = 0;
    for (to, back) in [(nb, "on B"), (na, "on A")] {
        hops += 1;
        s.say(&format!("before {hops}"));
        cl.wait_msg(&format!("before {hops}"));
        let (since, epoch) = (cl.last, cl.epoch.clone());
        cl.assert_clean();
        reset(cl);
        s.until(EVENT_WAIT, "c's leave", |v| {
            v["event"] == "leave" && v["count"] == 1
        });
        for i in 1..=3 {
            s.say_and_see(&format!("missed {hops}.{i}"));
        }
        cl = Member::resume(to, "/hop", &format!("c {back}"), since, &epoch);
        let upto = cl.welcomes[0]["seq"].as_u64().unwrap();
        assert_eq!(cl.welcomes[0]["epoch"].as_str(), Some(epoch.as_str()));
        assert_eq!(upto, s.last, "the welcome names the room's last event");
        s.wait_count(2);
        cl.wait_count(2);
        let caught_up: Vec<Value> = cl
            .events
            .iter()
            .filter(|v| v["seq"].as_u64().unwrap() <= upto)
            .map(unmarked)
            .collect();
        assert_eq!(
            caught_up,
            missed_after(&s.events, since, upto),
            "c {back} got exactly what it missed, as first sent (not as history)"
        );
        assert!(
            cl.events.iter().all(|v| v.get("history").is_none()),
            "missed events are not history: {:?}",
            cl.events
        );
        cl.say_and_see(&format!("back {back}"));
        s.wait_msg(&format!("back {back}"));
    }
    cl.assert_clean();
    s.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Long polling on another node

#[test]
fn long_polling_on_one_node_and_websockets_on_another_see_one_sequence() {
    let Some(c) = Cluster::start(2, &["--poll-wait", "5"]) else {
        return;
    };
    let b = c.nodes[1].addr;
    let mut ws = Member::join(&c.nodes[0], "/lp", "ws");
    ws.wait_count(1);
    // A one-shot poll on B: the welcome and A's history (the WebSocket client's join).
    let first = poll(b, "room=lp");
    assert_eq!(first[0]["epoch"].as_str(), Some(ws.epoch.as_str()));
    assert_eq!(first[0]["seq"].as_u64(), Some(ws.last));
    assert_eq!(
        first[1..].iter().map(unmarked).collect::<Vec<_>>(),
        ws.span(1..=ws.last),
        "B's history is what A's client saw"
    );
    let epoch = ws.epoch.clone();
    let since = ws.last;
    let sent: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let want = sent.clone();
    // The poller keeps polling B with a client id (so it is present) until it has every message.
    let poller = thread::spawn(move || {
        let mut since = since;
        let mut seen: Vec<Value> = Vec::new();
        let start = Instant::now();
        while !want
            .iter()
            .all(|m| seen.iter().any(|v| v["msg"] == m.as_str()))
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the poller on B saw only {seen:?}"
            );
            let got = poll(b, &format!("room=lp&client=p1&since={since}&epoch={epoch}"));
            assert_eq!(got[0]["epoch"].as_str(), Some(epoch.as_str()), "{got:?}");
            for v in &got[1..] {
                let s = v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no seq: {got:?}"));
                assert_eq!(s, since + 1, "no gap, no duplicate: {got:?}");
                assert!(v.get("history").is_none(), "{got:?}");
                since = s;
                seen.push(v.clone());
            }
        }
        seen
    });
    // The poller on B counts in the cluster-wide count A's client sees.
    let join = ws.wait_count(2);
    assert_eq!(join["event"], "join");
    // Interleaved: a WebSocket message on A, a POST /send on B, ...
    for (i, msg) in sent.iter().enumerate() {
        if i % 2 == 0 {
            ws.say(msg);
        } else {
            let (status, v) = post_send(b, "lp", "lp", msg);
            assert_eq!(status, 200, "POST /send on B: {v}");
            assert_eq!(
                (v["type"].as_str(), v["msg"].as_str()),
                (Some("message"), Some(msg.as_str()))
            );
            assert!(v["seq"].is_u64(), "{v}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    ws.wait_all(&sent.iter().cloned().collect(), EVENT_WAIT);
    let lp_seen = poller
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    ws.assert_clean();
    let from = lp_seen[0]["seq"].as_u64().unwrap();
    let to = lp_seen.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(
        unmarked(&lp_seen[0]),
        unmarked(&join),
        "the poller's first event is its own join"
    );
    assert_eq!(
        ws.span(from..=to),
        lp_seen.iter().map(unmarked).collect::<Vec<_>>(),
        "the WebSocket client on A and the poller on B saw the same events"
    );
}

// ---------------------------------------------------------------------------------------
// A node killed mid-traffic

#[test]
fn a_node_killed_mid_traffic_its_clients_resume_on_another_node() {
    let Some(c) = Cluster::start(3, &["--max-message-rate", "1000", "--history", "1000"]) else {
        return;
    };
    let (na, nb, nc) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    // Watchers that never leave on B and C, two members on A (to be killed), senders on B
    // and C; each join sees the count it makes.
    let plan = [
        (nb, "b-watch"),
        (nc, "c-watch"),
        (na, "a0"),
        (na, "a1"),
        (nb, "b-send"),
        (nc, "c-send"),
    ];
    let total = plan.len();
    let mut members = Vec::new();
    for (i, (node, label)) in plan.into_iter().enumerate() {
        let mut m = Member::join(node, "/failover", label);
        m.wait_count(i + 1);
        members.push(m);
    }
    for m in &mut members {
        m.wait_count(total);
    }
    let epoch = members[0].epoch.clone();
    let mut it = members.into_iter();
    let mut watchers: Vec<Member> = it.by_ref().take(2).collect();
    let on_a: Vec<Member> = it.by_ref().take(2).collect();
    let senders: Vec<Member> = it.collect();
    // Each sender sends one message every 20 ms (2 s); A is killed 700 ms in.
    const SENT: usize = 100;
    let want: BTreeSet<String> = senders
        .iter()
        .flat_map(|m| (0..SENT).map(move |j| format!("{}-{j}", m.label)))
        .collect();
    let traffic = thread::spawn(|| {
        together(senders, |m| {
            for j in 0..SENT {
                m.say(&format!("{}-{j}", m.label));
                thread::sleep(Duration::from_millis(20));
            }
        })
    });
    thread::sleep(Duration::from_millis(700));
    kill_node(na);
    let killed = Instant::now();
    // Each of A's members reads what A sent it until its socket dies; half a second later
    // (the page's first retry) it resumes with its cursor, as the page does: a0 on B, a1 on C.
    let lost: Vec<(Member, String)> = on_a
        .into_iter()
        .map(|mut old| {
            let why = old.until_lost(EVENT_WAIT);
            old.assert_clean();
            (old, why)
        })
        .collect();
    eprintln!(
        "A's members lost their sockets {:?} after the kill",
        killed.elapsed()
    );
    thread::sleep(Duration::from_millis(500));
    let mut resumed = Vec::new();
    for ((old, why), to) in lost.into_iter().zip([nb, nc]) {
        let (since, cursor_epoch) = (old.last, old.epoch.clone());
        let label = format!("{} resumed", old.label);
        let new = Member::resume(to, "/failover", &label, since, &cursor_epoch);
        eprintln!(
            "{} ({why}) at seq {since}; resumed on {} at seq {}, {:?} after the kill",
            old.label,
            to.addr,
            new.welcomes[0]["seq"],
            killed.elapsed()
        );
        resumed.push((old, new));
    }
    let mut members = traffic
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!("traffic over {:?} after the kill", killed.elapsed());
    // Presence: once the resumed members have joined (above their welcomes' seq), the count
    // comes back to `total` within 15 s of the kill: A's members left it (else it would be
    // `total` + 2), the resumed ones count (else `total` - 2).
    let joined = resumed
        .iter()
        .map(|(_, new)| new.welcomes[0]["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    for w in &mut watchers {
        let v = w.until(
            Duration::from_secs(20),
            &format!("notice with count {total} after seq {joined}"),
            |v| {
                v["type"] == "notification"
                    && v["count"] == total
                    && v["seq"].as_u64().is_some_and(|s| s > joined)
            },
        );
        let after = killed.elapsed();
        eprintln!("{}: count {total} again after {after:?}: {v}", w.label);
        assert!(
            after <= Duration::from_secs(15),
            "{}: the killed node's members left the count only after {after:?}",
            w.label
        );
    }
    for (_, new) in &mut resumed {
        new.wait_count(total);
    }
    for m in members.iter_mut().chain(&mut watchers) {
        m.wait_count(total);
    }
    // Every message reaches everyone (a resumed member: what it had not got before the
    // kill); the continuous members see one order.
    for m in members.iter_mut().chain(&mut watchers) {
        m.wait_all(&want, Duration::from_secs(15));
        m.assert_clean();
    }
    for (old, new) in &mut resumed {
        let rest = want.iter().filter(|m| !old.has_msg(m)).cloned().collect();
        new.wait_all(&rest, Duration::from_secs(15));
        new.assert_clean();
    }
    members.extend(watchers);
    assert_one_order(&members, &want);
    // Each resumed member's whole sequence (before the kill, caught up, live) is the room's
    // as a member on B that never left saw it.
    let cont = members.iter().find(|m| m.label == "b-watch").unwrap();
    let hi = members
        .iter()
        .chain(resumed.iter().map(|(_, new)| new))
        .map(|m| m.last)
        .min()
        .unwrap();
    for (old, new) in &resumed {
        let since = old.last;
        let upto = new.welcomes[0]["seq"].as_u64().unwrap();
        assert_eq!(
            new.welcomes[0]["epoch"].as_str(),
            Some(epoch.as_str()),
            "{}: the room kept its epoch",
            new.label
        );
        let lo = old.boundary + 1;
        assert_eq!(
            old.span(lo..=since),
            cont.span(lo..=since),
            "{}: before the kill, what b-watch saw",
            old.label
        );
        let caught_up: Vec<Value> = new
            .events
            .iter()
            .filter(|v| v["seq"].as_u64().unwrap() <= upto)
            .map(unmarked)
            .collect();
        assert_eq!(
            caught_up,
            missed_after(&cont.events, since, upto),
            "{}: exactly what it missed (after {since}, up to {upto})",
            new.label
        );
        assert_eq!(
            new.span(upto + 1..=hi),
            cont.span(upto + 1..=hi),
            "{}: live after the resume, what b-watch saw",
            new.label
        );
        let mut got: Vec<&str> = old.events[old.epoch_start..]
            .iter()
            .chain(&new.events)
            .filter(|v| v["type"] == "message")
            .map(|v| v["msg"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        let all: Vec<&str> = want.iter().map(String::as_str).collect();
        assert_eq!(
            got, all,
            "{}: every message once, across the kill",
            old.label
        );
        eprintln!(
            "{}: {} events before the kill, {} caught up, {} live after",
            old.label,
            old.span(lo..=since).len(),
            caught_up.len(),
            new.events.len() - caught_up.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Many processes on one port

#[test]
fn two_processes_on_one_port_share_rooms() {
    let Some(redis) = redis::RedisServer::start_or_skip() else {
        return;
    };
    let listen = format!("127.0.0.1:{}", redis::free_port());
    let url = redis.url();
    let node = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wsrelay"));
        cmd.args(["--listen", &listen, "--reuse-port", "--redis", &url])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(FAST)
            .stdin(std::process::Stdio::null());
        Server::start_command(cmd)
    };
    let nodes = vec![node(), node()];
    let c = Cluster { redis, nodes };
    assert_eq!(c.nodes[0].addr, c.nodes[1].addr, "one port");
    let admins = [c.nodes[0].admin_addr(), c.nodes[1].admin_addr()];
    let upgrades = || admins.map(|a| fetch_metrics(a)["wsrelay_upgrades_total"]);
    // Each client joins through the shared port; the process whose admin /metrics counted
    // its upgrade took it. Each join sees the count it makes, over both processes.
    const CLIENTS: usize = 16;
    let mut members = Vec::new();
    let mut per_process = [0; 2];
    for i in 0..CLIENTS {
        let before = upgrades();
        let mut m = Member::join(&c.nodes[0], "/shared", &format!("c{i}"));
        let after = upgrades();
        let p = match (after[0] - before[0], after[1] - before[1]) {
            (1.0, 0.0) => 0,
            (0.0, 1.0) => 1,
            other => panic!("c{i}: upgrades counted {other:?}"),
        };
        per_process[p] += 1;
        m.label = format!("p{p}c{i}");
        m.wait_count(i + 1);
        members.push(m);
    }
    eprintln!("{CLIENTS} clients: {per_process:?} per process");
    // All to one process has probability 2^-15 when the kernel spreads them.
    assert!(
        per_process.iter().all(|&n| n > 0),
        "one process took every client: {per_process:?}"
    );
    let open: f64 = admins
        .iter()
        .map(|&a| fetch_metrics(a)["wsrelay_websockets_open"])
        .sum();
    assert_eq!(open, CLIENTS as f64);
    for m in &mut members {
        m.wait_count(CLIENTS);
    }
    const EACH: usize = 2;
    let want: BTreeSet<String> = members
        .iter()
        .flat_map(|m| (0..EACH).map(move |j| format!("{}-{j}", m.label)))
        .collect();
    let all = want.clone();
    let members = together(members, move |m| {
        for j in 0..EACH {
            m.say(&format!("{}-{j}", m.label));
        }
        m.wait_all(&all, Duration::from_secs(15));
    });
    for m in &members {
        m.assert_clean();
    }
    assert_one_order(&members, &want);
}

// ---------------------------------------------------------------------------------------
// Presence

#[test]
fn presence_counts_every_node_and_a_killed_node_leaves_within_15_s() {
    let Some(c) = Cluster::start(3, &[]) else {
        return;
    };
    // Two on A, one on B, two on C, one after another: each join's count is cluster-wide.
    let mut members = Vec::new();
    for (i, node) in [0, 0, 1, 2, 2].into_iter().enumerate() {
        let mut m = Member::join(&c.nodes[node], "/count", &format!("n{node}m{i}"));
        m.wait_count(i + 1);
        members.push(m);
    }
    for m in &mut members {
        m.wait_count(5);
    }
    kill_node(&c.nodes[2]);
    let killed = Instant::now();
    let mut survivors: Vec<Member> = members.drain(..3).collect();
    for m in &mut survivors {
        let v = m.until(Duration::from_secs(20), "leave notice with count 3", |v| {
            v["type"] == "notification" && v["count"] == 3
        });
        let after = killed.elapsed();
        assert_eq!(v["event"], "leave", "{v}");
        eprintln!("{}: count 3 after {after:?}", m.label);
        assert!(
            after <= Duration::from_secs(15),
            "{}: the killed node's members left the count only after {after:?}",
            m.label
        );
    }
    // The count stays right after that: a new member on B makes 4.
    let mut late = Member::join(&c.nodes[1], "/count", "late");
    late.wait_count(4);
    for m in &mut survivors {
        m.wait_count(4);
        m.assert_clean();
    }
    late.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Redis unreachable, lost, restarted

#[test]
fn redis_unreachable_at_start_then_healthy_once_it_answers() {
    let Some(mut c) = Cluster::start_without_redis(2, &[]) else {
        return;
    };
    for node in &c.nodes {
        let (status, body) = get(node.addr, "/healthz");
        assert_eq!(status, 503, "/healthz without Redis: {body}");
        let port = c.redis.port.to_string();
        assert!(
            body.to_ascii_lowercase().contains("redis") || body.contains(&port),
            "the 503 names its cause (Redis, or its address): {body:?}"
        );
        let (status, body) = get(node.addr, "/");
        assert_eq!(status, 200, "the page is served without Redis");
        assert!(
            body.contains("<html") || body.contains("<!doctype"),
            "{body:.200}"
        );
    }
    c.redis.restart();
    let started = Instant::now();
    for node in &c.nodes {
        loop {
            let (status, body) = get(node.addr, "/healthz");
            if status == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}: /healthz still {status} {body:?} 10 s after Redis started",
                node.addr
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    let mut a = Member::join(&c.nodes[0], "/up", "a");
    a.wait_count(1);
    let mut b = Member::join(&c.nodes[1], "/up", "b");
    b.wait_count(2);
    a.wait_count(2);
    a.say_and_see("hello from A");
    b.wait_msg("hello from A");
    b.say_and_see("hello from B");
    a.wait_msg("hello from B");
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn healthz_503_while_redis_is_down_on_the_admin_port_too() {
    let Some(mut c) = Cluster::start(1, &["--admin-listen", "127.0.0.1:0"]) else {
        return;
    };
    let node = &c.nodes[0];
    let ports = [("main", node.addr), ("admin", node.admin_addr())];
    // Healthy once its links are up.
    for (which, addr) in ports {
        let (after, body) = wait_health(addr, 200, Duration::from_secs(10));
        assert_eq!(body, "ok\n", "{which}");
        eprintln!("{which}: 200 after {after:?}");
    }
    c.redis.kill();
    let killed = Instant::now();
    let check_down = |which: &str, addr: SocketAddr| {
        let r = http_exchange(addr, &get_request(addr, "/healthz"));
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 503, "{which} /healthz with Redis down: {body:?}");
        assert!(
            body.starts_with("unavailable: ") && body.to_ascii_lowercase().contains("redis"),
            "{which}: the 503 names Redis: {body:?}"
        );
        assert_eq!(r.header("retry-after"), Some("5"), "{which}: {r:?}");
        body
    };
    for (which, addr) in ports {
        let (after, _) = wait_health(addr, 503, Duration::from_secs(10));
        let body = check_down(which, addr);
        eprintln!("{which}: 503 {after:?} after Redis was killed: {body:?}");
    }
    // It stays 503 while reconnecting fails, long enough for the backoff (0.1 s, doubled per
    // failure) to reach its 5 s cap.
    while killed.elapsed() < Duration::from_secs(7) {
        for (which, addr) in ports {
            check_down(which, addr);
        }
        thread::sleep(Duration::from_millis(500));
    }
    let metric = |name: &str| {
        let (status, text) = get(node.admin_addr(), "/metrics");
        assert_eq!(status, 200);
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics: {text}"))
    };
    assert_eq!(metric("wsrelay_redis_up"), 0, "down while Redis is");
    assert!(metric("wsrelay_redis_links_lost_total") >= 1);
    c.redis.restart();
    // Healthy again within 15 s (the node retries every 5 s at most).
    for (which, addr) in ports {
        let (after, body) = wait_health(addr, 200, Duration::from_secs(15));
        assert_eq!(body, "ok\n", "{which}");
        eprintln!("{which}: 200 again {after:?} after Redis' restart");
    }
    assert_eq!(metric("wsrelay_redis_up"), 1, "up once both links are");
}

/// Polls `GET /healthz` at `addr` until it answers `status` (at most `limit`); how long
/// that took, and the body.
#[track_caller]
fn wait_health(addr: SocketAddr, status: u16, limit: Duration) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let (got, body) = get(addr, "/healthz");
        if got == status {
            return (start.elapsed(), body);
        }
        assert!(
            start.elapsed() < limit,
            "{addr}: /healthz still {got} {body:?} after {limit:?}, not {status}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn redis_killed_and_restarted_empty_errors_then_starts_the_room_over() {
    let Some(mut c) = Cluster::start(2, &[]) else {
        return;
    };
    let mut a = Member::join(&c.nodes[0], "/outage", "a");
    a.wait_count(1);
    let mut b = Member::join(&c.nodes[1], "/outage", "b");
    b.wait_count(2);
    a.wait_count(2);
    a.say_and_see("before");
    b.wait_msg("before");
    let old_epoch = a.epoch.clone();
    c.redis.kill();
    // While Redis is down a message cannot be committed: its sender gets an error, nobody
    // gets the message.
    for (m, msg) in [(&mut a, "lost on A"), (&mut b, "lost on B")] {
        m.say(msg);
        let v = m.until(
            EVENT_WAIT,
            "error for a message sent while Redis is down",
            |v| v["type"] == "error",
        );
        assert!(v["msg"].is_string(), "{v}");
    }
    c.redis.restart();
    // The room started over: a gap without range and a welcome of a new epoch, on each node.
    for m in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while m.gaps.is_empty() || m.epoch == old_epoch {
            if m.recv(deadline).is_none() {
                panic!(
                    "{}: no gap and new welcome within 15 s of Redis' restart; recent: {}",
                    m.label,
                    m.recent()
                );
            }
        }
        eprintln!(
            "{}: gap and new epoch {:?} after Redis' restart",
            m.label, m.epoch
        );
        let gap = &m.gaps[0];
        assert!(
            gap.get("from").is_none() && gap.get("to").is_none(),
            "{}: the room started over, the gap has no range: {gap}",
            m.label
        );
    }
    // Chat works again, in the new epoch, across nodes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        // The node may need a moment to have its link back: retry on an error.
        a.say("after");
        let v = a.until(EVENT_WAIT, "after, or an error", |v| {
            v["type"] == "error" || v["msg"] == "after"
        });
        if v["type"] == "message" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "a: errors 10 s after the restart: {v}"
        );
        thread::sleep(Duration::from_millis(300));
    };
    let seen = b.wait_msg("after");
    assert_eq!(unmarked(&seen), unmarked(&after));
    assert_eq!(a.epoch, b.epoch, "one new epoch for the room");
    assert_ne!(a.epoch, old_epoch);
    b.say_and_see("after from B");
    a.wait_msg("after from B");
    for m in [&a, &b] {
        assert!(m.faults.is_empty(), "{}: {:?}", m.label, m.faults);
        let lost = m
            .events
            .iter()
            .find(|v| v["msg"].as_str().is_some_and(|s| s.starts_with("lost on")));
        assert!(
            lost.is_none(),
            "{}: a message refused with an error was published: {lost:?}",
            m.label
        );
    }
}

#[test]
fn cut_redis_links_catch_up_from_the_stream_with_nothing_missed() {
    let Some(c) = Cluster::start(2, &FAST) else {
        return;
    };
    let (na, nb) = (&c.nodes[0], &c.nodes[1]);
    let mut members = Vec::new();
    for (i, (node, label)) in [
        (na, "a-send"),
        (nb, "b-send"),
        (na, "a-read"),
        (nb, "b-read"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = Member::join(node, "/cut", label);
        m.wait_count(i + 1);
        members.push(m);
    }
    for m in &mut members {
        m.wait_count(4);
    }
    let epoch = members[0].epoch.clone();
    const SENT: usize = 150;
    // The senders send one message every 10 ms for 1.5 s; meanwhile B's links are cut, then
    // every node's subscriptions, then every node's command links.
    let cutter = {
        let (port, b_pid) = (c.redis.port, nb.pid());
        let cli = move |args: &[&str]| {
            let out = std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .output()
                .expect("run redis-cli");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let links = links_to(b_pid, port);
            assert!(!links.is_empty(), "node B holds no connection to Redis");
            for addr in &links {
                cli(&["CLIENT", "KILL", "ADDR", addr]);
            }
            thread::sleep(Duration::from_millis(400));
            let pubsub = cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            thread::sleep(Duration::from_millis(400));
            let normal = cli(&["CLIENT", "KILL", "TYPE", "normal"]);
            (links, pubsub, normal)
        })
    };
    let (senders, readers): (Vec<Member>, Vec<Member>) = {
        let mut it = members.into_iter();
        let senders = vec![it.next().unwrap(), it.next().unwrap()];
        (senders, it.collect())
    };
    let senders = together(senders, |m| {
        for j in 0..SENT {
            m.say(&format!("{}-{j}", m.label));
            thread::sleep(Duration::from_millis(10));
        }
    });
    let (links, pubsub, normal) = cutter
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!(
        "cut B's links {links:?}; CLIENT KILL TYPE pubsub: {pubsub:?}, TYPE normal: {normal:?}"
    );
    // Each sender first hears back about every message it sent: its echo or an error.
    let mut members = senders;
    for m in &mut members {
        let deadline = Instant::now() + Duration::from_secs(15);
        let own = |m: &Member| {
            m.events
                .iter()
                .filter(|v| v["type"] == "message" && v["name"] == m.label.as_str())
                .count()
        };
        while own(m) + m.errors.len() < SENT {
            if m.recv(deadline).is_none() {
                panic!(
                    "{}: {} echoes + {} errors for {SENT} messages sent, 15 s after; recent: {}",
                    m.label,
                    own(m),
                    m.errors.len(),
                    m.recent()
                );
            }
        }
    }
    // Once links are back, each sender's last word goes through (retried, under a new text,
    // while it gets an error); everything committed before it comes before it, to everyone.
    let mut ends = BTreeSet::new();
    for m in &mut members {
        let deadline = Instant::now() + Duration::from_secs(10);
        for attempt in 1.. {
            let end = format!("{} end {attempt}", m.label);
            let errors = m.errors.len();
            m.say(&end);
            m.until(EVENT_WAIT, "its end marker or an error", |v| {
                v["msg"] == end.as_str() || v["type"] == "error"
            });
            if m.errors.len() == errors {
                ends.insert(end);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: errors 10 s after the cuts",
                m.label
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
    members.extend(readers);
    for m in &mut members {
        m.wait_all(&ends, Duration::from_secs(15));
    }
    let committed: BTreeSet<String> = members[0]
        .events
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["msg"].as_str().unwrap().to_owned())
        .collect();
    for m in &members {
        assert!(m.faults.is_empty(), "{}: {:#?}", m.label, m.faults);
        assert!(
            m.gaps.is_empty(),
            "{}: the data was kept, yet: {:?}",
            m.label,
            m.gaps
        );
        assert!(
            m.welcomes.iter().all(|w| w["epoch"] == epoch.as_str()),
            "{}: the epoch changed: {:?}",
            m.label,
            m.welcomes
        );
    }
    // Every message was committed, or its sender was told it was not.
    for m in &members[..2] {
        let own = (0..SENT)
            .filter(|j| committed.contains(&format!("{}-{j}", m.label)))
            .count();
        let refused = m.errors.len();
        assert!(
            own + refused >= SENT,
            "{}: {own} committed + {refused} errors < {SENT} sent (silently dropped)",
            m.label
        );
        eprintln!("{}: {own} of {SENT} committed, {refused} errors", m.label);
    }
    assert_one_order(&members, &committed);
}

// ---------------------------------------------------------------------------------------
// History bounds

#[test]
fn history_bounds_hold_in_redis() {
    let Some(mut c) = Cluster::start(2, &["--history", "5", "--history-bytes", "2000"]) else {
        return;
    };
    let mut a = Member::join(&c.nodes[0], "/few", "a");
    a.wait_count(1);
    for i in 1..=12 {
        a.say_and_see(&format!("m{i}"));
    }
    // Events: a's join (1), m1..m12 (2..13); kept: the last 5.
    let tail = a.span(a.last - 4..=a.last);
    let mut b = Member::join(&c.nodes[1], "/few", "b");
    // The history comes before the member's own join (its first live event).
    b.wait_count(2);
    assert_eq!(
        history_of(&b),
        tail,
        "B's history: the last 5 events said on A"
    );
    // Messages of 700 characters: each event is over 700 bytes, so 2000 bytes keep 2 of them.
    let long = |i: usize| format!("{i}{}", "x".repeat(699));
    let mut w = Member::join(&c.nodes[0], "/big", "w");
    w.wait_count(1);
    for i in 1..=4 {
        w.say_and_see(&long(i));
    }
    let mut late = Member::join(&c.nodes[1], "/big", "late");
    late.wait_count(2);
    let big = history_of(&late);
    let msgs: Vec<&str> = big
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["msg"].as_str().unwrap())
        .collect();
    assert!(
        !msgs.is_empty() && msgs.len() <= 2 && msgs.last() == Some(&long(4).as_str()),
        "--history-bytes 2000 keeps 1-2 of the 700-byte messages, the last among them: {} kept",
        msgs.len()
    );
    assert_eq!(big, w.span(big[0]["seq"].as_u64().unwrap()..=w.last));
    // In Redis: no stream holds more than --history entries, whatever the keys are called.
    let mut streams = 0;
    for key in c.redis.keys() {
        if c.redis.cli(&["TYPE", &key]).trim() == "stream" {
            streams += 1;
            let len: u64 = c.redis.cli(&["XLEN", &key]).trim().parse().unwrap();
            assert!(
                len <= 5,
                "stream {key:?} holds {len} entries with --history 5"
            );
        }
    }
    eprintln!("{streams} streams in Redis, each within --history");
    // The history lives in Redis: a node that heard none of it serves it.
    let fresh = start_node(&c.redis, &["--history", "5", "--history-bytes", "2000"]);
    let mut again = Member::join(&fresh, "/few", "again");
    again.wait_count(3);
    assert_eq!(
        history_of(&again),
        b.span(b.last - 4..=b.last),
        "a new node serves the last 5 events from Redis"
    );
    c.nodes.push(fresh);
    for m in [&a, &b, &w, &late, &again] {
        m.assert_clean();
    }
}

/// A member's history, as received after its welcome (without the `history` mark).
fn history_of(m: &Member) -> Vec<Value> {
    m.events
        .iter()
        .filter(|v| v.get("history") == Some(&json!(true)))
        .map(unmarked)
        .collect()
}

// ---------------------------------------------------------------------------------------
// The script, called directly

/// wsrelay's Lua script, run here with `EVAL` to check one operation at a time.
const SCRIPT: &str = include_str!("../src/room/redis.lua");

/// Appends a message to room `s` with the script; returns its epoch.
fn script_append(redis: &redis::RedisServer, msg: &str) -> String {
    let draft = format!(r#"{{"type":"message","name":"t","msg":"{msg}"}}"#);
    let out = redis.cli(&[
        "EVAL",
        SCRIPT,
        "5",
        "wsrelay:{s}:meta",
        "wsrelay:{s}:log",
        "wsrelay:{s}:here",
        "wsrelay:nodes",
        "wsrelay:node:t",
        "append",
        &draft,
        "m",
        "0",
        "t",
        "0",
        "10",
        "10000",
        "wsrelay:0:{s}",
        "60000",
        "s",
    ]);
    out.lines().next().unwrap().to_owned()
}

/// Loads room `s` after `since` in `epoch` with the script: epoch, last seq and the seqs read.
fn script_load(redis: &redis::RedisServer, since: &str, epoch: &str) -> (String, u64, Vec<u64>) {
    let out = redis.cli(&[
        "EVAL",
        SCRIPT,
        "2",
        "wsrelay:{s}:meta",
        "wsrelay:{s}:log",
        "load",
        since,
        "10",
        "0",
        epoch,
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let seqs = lines[3..].iter().step_by(2).map(|s| s.parse().unwrap());
    (
        lines[0].to_owned(),
        lines[1].parse().unwrap(),
        seqs.collect(),
    )
}

#[test]
fn a_load_with_a_cursor_of_another_epoch_reads_the_new_epoch_from_its_start() {
    let Some(redis) = redis::RedisServer::start_or_skip() else {
        return;
    };
    let old = script_append(&redis, "old 1");
    for i in 2..=5 {
        script_append(&redis, &format!("old {i}"));
    }
    let (_, _, seqs) = script_load(&redis, "3", &old);
    assert_eq!(seqs, [4, 5], "after 3 in its own epoch");
    // The room is lost (Redis came back empty, or its keys expired) and begins again.
    redis.cli(&["DEL", "wsrelay:{s}:meta", "wsrelay:{s}:log"]);
    let new = script_append(&redis, "new 1");
    script_append(&redis, "new 2");
    assert_ne!(new, old);
    // A node that saw 5 events of the old epoch reads the new one from its start.
    assert_eq!(script_load(&redis, "5", &old), (new.clone(), 2, vec![1, 2]));
    assert_eq!(script_load(&redis, "1", &new), (new, 2, vec![2]));
}

/// A beat of `node` with the script (`ttl` ms to live): whether it was known, and the rooms
/// and counts of dead nodes it reaped.
fn script_beat(redis: &redis::RedisServer, node: &str, ttl: &str) -> Vec<String> {
    let out = redis.cli(&[
        "EVAL",
        SCRIPT,
        "1",
        "wsrelay:nodes",
        "beat",
        node,
        ttl,
        "wsrelay:",
    ]);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(Into::into)
        .collect()
}

#[test]
fn a_nodes_counts_are_set_whole_and_a_reaped_node_learns_it_was() {
    let Some(redis) = redis::RedisServer::start_or_skip() else {
        return;
    };
    let here = |counts: &[&str]| {
        let mut args = vec![
            "EVAL",
            SCRIPT,
            "1",
            "wsrelay:node:t",
            "here",
            "t",
            "wsrelay:",
            "60000",
        ];
        args.extend(counts);
        redis.cli(&args);
    };
    let count = |room: &str| redis.cli(&["HGET", &format!("wsrelay:{{{room}}}:here"), "t"]);
    assert_eq!(script_beat(&redis, "t", "60000"), ["0"], "new");
    assert_eq!(script_beat(&redis, "t", "60000"), ["1"]);
    here(&["x", "2", "y", "3"]);
    assert_eq!((count("x").trim(), count("y").trim()), ("2", "3"));
    // Room y is not in the next call: this node has nobody there any more.
    here(&["x", "1"]);
    assert_eq!((count("x").trim(), count("y").trim()), ("1", ""));
    assert_eq!(redis.cli(&["SMEMBERS", "wsrelay:node:t"]).trim(), "x");
    // Node t stops beating; node u reaps it and announces its member in x.
    script_beat(&redis, "t", "0");
    thread::sleep(Duration::from_millis(5));
    assert_eq!(script_beat(&redis, "u", "60000"), ["0", "x", "1"]);
    assert_eq!(count("x").trim(), "");
    // t was only slow: its next beat says it was forgotten, so it writes its counts again.
    assert_eq!(script_beat(&redis, "t", "60000"), ["0"]);
}

// ---------------------------------------------------------------------------------------
// Engine.IO long polling without sticky sessions

/// A long-polling request for Engine.IO session `sid` (`None`: a handshake): status and body.
fn eio_poll(addr: SocketAddr, sid: Option<&str>, post: Option<&str>) -> (u16, String) {
    let mut target = "/socket.io/?EIO=4&transport=polling".to_owned();
    if let Some(sid) = sid {
        target.push_str("&sid=");
        target.push_str(sid);
    }
    let host = addr.to_string();
    let req = match post {
        None => get_request(addr, &target),
        Some(body) => {
            let len = body.len().to_string();
            let line = format!("POST {target} HTTP/1.1");
            let mut req = request(
                &line,
                &[
                    ("Host", &host),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", &len),
                ],
            );
            req.extend_from_slice(body.as_bytes());
            req
        }
    };
    let r = http_exchange(addr, &req);
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Polls `sid` at `addr` until a payload holds `want` (pings are answered on the way).
#[track_caller]
fn eio_poll_until(addr: SocketAddr, sid: &str, want: &str) -> String {
    let deadline = Instant::now() + EVENT_WAIT;
    let mut seen = String::new();
    while Instant::now() < deadline {
        let (status, body) = eio_poll(addr, Some(sid), None);
        assert_eq!(status, 200, "poll at {addr}: {body}");
        seen.push_str(&body);
        seen.push('\u{1e}');
        if body.split('\u{1e}').any(|p| p == "2") {
            assert_eq!(eio_poll(addr, Some(sid), Some("3")).0, 200);
        }
        if body.contains(want) {
            return seen;
        }
    }
    panic!("no {want:?} at {addr} within {EVENT_WAIT:?}; got {seen:?}");
}

#[test]
fn engine_io_polls_reach_their_session_on_any_node_and_a_dead_nodes_sid_gets_400() {
    let Some(c) = Cluster::start(2, &[]) else {
        return;
    };
    let (a, b) = (c.nodes[0].addr, c.nodes[1].addr);
    // Both linked to Redis (A listening on its relay channel).
    wait_health(a, 200, EVENT_WAIT);
    wait_health(b, 200, EVENT_WAIT);
    // The session opens on A; every request after that goes to B, which passes it on.
    let (status, open) = eio_poll(a, None, None);
    assert_eq!(status, 200, "{open}");
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
        .expect("the open packet's JSON");
    let sid = open["sid"].as_str().expect("a sid").to_owned();
    assert_eq!(eio_poll(b, Some(&sid), Some("40")), (200, "ok".to_owned()));
    let connected = eio_poll_until(b, &sid, r#"42["connected""#);
    assert!(connected.contains(r#"40{"sid":"#), "{connected}");
    // A WebSocket member of the room on A hears what the session says through B.
    let mut ws = Member::join(&c.nodes[0], "/main", "ws");
    assert_eq!(
        eio_poll(b, Some(&sid), Some(r#"42["message","through B"]"#)),
        (200, "ok".to_owned())
    );
    // Events carry the room's offset as a last argument (connection-state recovery).
    eio_poll_until(b, &sid, r#"42["message","through B","#);
    ws.until(EVENT_WAIT, "the socket.io event", |v| {
        v.to_string().contains("through B")
    });
    let relayed = |addr, direction: &str| {
        fetch_metrics(addr)
            .get(&format!(
                "wsrelay_eio_relayed_total{{direction=\"{direction}\"}}"
            ))
            .copied()
            .unwrap_or_default()
    };
    assert!(relayed(b, "out") >= 4.0, "B passed the polls on");
    assert!(relayed(a, "in") >= 4.0, "A served them");
    assert_eq!(relayed(a, "out"), 0.0);
    // A dies: its sessions are gone, and B says so at once (no subscriber got the request),
    // not after the hold limit; the client then opens a new session.
    // A's relay channel, named by the first 6 bytes of the sid: A listens on it until it dies.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&sid)
        .expect("a base64 sid");
    let channel: String = std::iter::once("wsrelay:relay:".to_owned())
        .chain(raw[..6].iter().map(|b| format!("{b:02x}")))
        .collect();
    let listeners = || {
        c.redis
            .cli(&["PUBSUB", "NUMSUB", &channel])
            .trim_end()
            .to_owned()
    };
    assert!(listeners().ends_with("\n1"), "{}", listeners());
    kill_node(&c.nodes[0]);
    // Redis learns of it when the kernel closes A's sockets, a moment after the signal.
    let deadline = Instant::now() + EVENT_WAIT;
    while !listeners().ends_with("\n0") {
        assert!(
            Instant::now() < deadline,
            "A still listens: {}",
            listeners()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    let (status, body) = eio_poll(b, Some(&sid), None);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Session ID unknown"), "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        asked.elapsed()
    );
    ws.assert_clean();
}
