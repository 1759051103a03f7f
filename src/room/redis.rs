//! The room log in Redis (`--redis`): one order, one history and one epoch per room for every
//! node that shares the Redis, and presence counted over the nodes.
//!
//! Every change is one call of one Lua script (`redis.lua`, see its header for the keys), so
//! it is atomic: an append gets the room's next seq, is stamped (seq, time from Redis),
//! kept in the room's stream (trimmed to `--history` and `--history-bytes`) and published on
//! the room's channel. Every node, the appending one included, sends events on from that
//! channel, so local and remote events take one path ([`LogEvent::Committed`]), in one order.
//! Pub/sub may drop (a link cut); the stream is the truth: a node that sees a hole in a
//! room's seq, or whose link comes back, reads the stream from its last seq ("load") and sends
//! on what it missed, once each.
//!
//! Each held room keeps a copy of the stream's tail ([`Tail`]), loaded when the room is opened
//! and kept up to date by the channel, so reads (welcomes, resumes, polls) cost no round trip.
//!
//! Two links, both driven by the event loop: commands (pipelined: every append of one turn
//! goes out in one write) and the subscription (a subscribed connection can do nothing else).
//! A node's presence is a field per room (its members there) and a deadline it renews every
//! [`BEAT`]; a node that stops beating is reaped by the next beat of another node, which
//! announces the departures, so a dead node's members leave the count within
//! [`NODE_TTL`] + [`BEAT`].

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::RoomId;
use super::log::{Committed, Draft, HistoryLimits, Kind, Log, LogEvent, Read, Tail, acked};
use crate::chat::{self, Presence};
use crate::log;
use crate::redis::link::Link;
use crate::redis::resp::Value;
use crate::redis::url::{Endpoint, Target};

/// The script every node runs.
const SCRIPT: &str = include_str!("redis.lua");
/// Prefix of every key.
const PREFIX: &str = "wsrelay:";
/// How often a node renews its presence deadline (and reaps dead nodes).
pub const BEAT: Duration = Duration::from_secs(3);
/// How long a node counts after its last beat: three beats, so one slow turn or lost reply
/// does not make a live node's members leave.
pub const NODE_TTL: Duration = Duration::from_secs(9);
/// A room's keys live this long after its last event: abandoned rooms cost Redis nothing.
const ROOM_TTL: Duration = Duration::from_secs(24 * 3600);
/// Channel messages kept for a room while its stream is being read, and their bytes; past
/// either they are dropped and read from the stream again.
const MAX_BUFFERED: usize = 10_000;
const MAX_BUFFERED_BYTES: usize = 16 << 20;

/// Appends awaiting Redis' reply at most; past it a message fails at once ("busy") rather
/// than queue without bound behind a Redis that cannot keep up.
const MAX_APPENDS: usize = 16_384;

/// The command link and the subscription link.
pub const LINKS: usize = 2;
const CMD: usize = 0;
const SUB: usize = 1;

/// What a reply on the command link answers.
#[derive(Debug)]
enum Pending {
    /// Part of the connection's set-up (AUTH, SELECT, CLIENT SETNAME, SCRIPT LOAD).
    Hello,
    /// A presence deadline renewal; the reply names rooms of dead nodes.
    Beat,
    /// An append, with its draft for the sender if it fails.
    Append { room: Rc<str>, draft: Draft },
    /// A read of room `room`'s stream (its incarnation, to ignore a reply for a room since
    /// freed and made again).
    Load { room: RoomId, incarnation: u64 },
    /// This node's presence counts written again.
    Here,
    /// A message to another node's relay channel; with the number of a request passed on,
    /// whose asker must hear if no node got it.
    Relay(Option<u64>),
}

/// A room held here.
#[derive(Debug)]
struct Held {
    name: Rc<str>,
    channel: Rc<[u8]>,
    incarnation: u64,
    /// The subscription link confirmed the room's channel.
    subscribed: bool,
    /// A load is in flight.
    loading: bool,
    /// The stream must be read (after the last seq seen): first open, a hole, a link back.
    needs_load: bool,
    /// Make the room's epoch if it has none (a member joined).
    create: bool,
    /// The copy of the stream's tail; `None` until the first load.
    tail: Option<Copy>,
    /// Channel messages that came while a load was in flight, or after a hole.
    buffer: Vec<Message>,
    /// The bytes of the events in `buffer`.
    buffered: usize,
    /// This node's members in the room, as last written to Redis.
    here: usize,
}

/// A room's state as this node knows it.
#[derive(Debug)]
struct Copy {
    /// "" while the room has no epoch in Redis (nobody has been in it).
    epoch: Rc<str>,
    last: u64,
    tail: Tail,
}

/// One event from a room's channel: `epoch \n seq \n replaced \n json`.
#[derive(Debug, Clone)]
struct Message {
    epoch: Rc<str>,
    seq: u64,
    replaced: u64,
    json: Box<str>,
}

impl Message {
    fn parse(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.splitn(4, '\n');
        let epoch = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        let replaced = parts.next()?.parse().ok()?;
        let json = parts.next()?;
        Some(Self {
            epoch: epoch.into(),
            seq,
            replaced,
            json: json.into(),
        })
    }
}

/// Splits an event as sent into its draft and its time: the inverse of [`chat::stamp`],
/// whose `,"seq":N,"ts":T}` ends every event the script stamps the same way.
fn unstamp(json: &str) -> Option<(Rc<str>, u64)> {
    let at = json.rfind(r#","seq":"#)?;
    let rest = json
        .get(at..)?
        .strip_prefix(r#","seq":"#)?
        .strip_suffix('}')?;
    let (_, ts) = rest.split_once(r#","ts":"#)?;
    let ts = ts.parse().ok()?;
    let mut body = json.get(..at)?.to_owned();
    body.push('}');
    Some((body.into(), ts))
}

/// The room log in Redis; see the module documentation.
#[derive(Debug)]
pub struct RedisLog {
    target: Target,
    /// This process's name in presence fields: host, pid and start time.
    node: Rc<str>,
    limits: HistoryLimits,
    /// The SHA-1 of [`SCRIPT`], for EVALSHA.
    sha: String,
    links: [Link; LINKS],
    /// Set-up replies still awaited per link; 0 once it is usable.
    hello: [usize; LINKS],
    /// Whether the link finished its set-up.
    ready: [bool; LINKS],
    /// What each awaited reply on the command link answers, in order.
    pending: VecDeque<Pending>,
    /// Appends in `pending`.
    appends: usize,
    rooms: Vec<Option<Held>>,
    by_channel: HashMap<Rc<[u8]>, RoomId>,
    /// `SUBSCRIBE`s and `UNSUBSCRIBE`s sent on the subscription link and not yet confirmed,
    /// by channel: a confirmation says the channel is subscribed only when it answers the
    /// channel's last request (a room closed and opened again before its first `SUBSCRIBE`
    /// was confirmed is unsubscribed for a while after that confirmation).
    unconfirmed: HashMap<Rc<[u8]>, usize>,
    incarnations: u64,
    events: Vec<LogEvent>,
    next_beat: Option<Instant>,
    /// Why the links are not usable, for `/healthz` and the log (one line per episode).
    error: Option<String>,
    /// Whether the current outage was logged.
    logged_down: bool,
    /// The process is stopping: its members stop counting at once.
    leaving: bool,
    /// Reused for replies.
    replies: Vec<Value>,
    /// For `/metrics`: events sent on from Redis, appends that failed, links lost.
    received: u64,
    failed: u64,
    lost_links: u64,
    /// This node's relay channel (Engine.IO requests for its sessions, answers to requests
    /// it passed on), once the event loop named the node.
    relay_channel: Option<Rc<[u8]>>,
    /// Messages on it, for the event loop; their bytes.
    relayed: Vec<Vec<u8>>,
    relayed_bytes: usize,
    /// Requests passed on that no node got (no subscriber, or the link dropped the call).
    unheard: Vec<u64>,
}

/// Bytes of relay messages kept for the event loop, which takes them after every read; a
/// flood past it is dropped (the requests' askers time out).
const MAX_RELAYED_BYTES: usize = 64 << 20;

/// The relay channel of node `node`.
fn relay_channel(node: &[u8]) -> Vec<u8> {
    let mut channel = format!("{PREFIX}relay:").into_bytes();
    for b in node {
        channel.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    channel
}

impl RedisLog {
    /// A log in the Redis at `target`, for node `node`, bounding each room's history by
    /// `limits` (in Redis and in the copies here); it connects when the event loop runs.
    pub fn new(target: Target, node: &str, limits: HistoryLimits, now: Instant) -> Self {
        let sha = Sha1::digest(SCRIPT.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let first_error = format!("redis {}: connecting", target.redacted());
        Self {
            target,
            node: node.into(),
            limits,
            sha,
            links: [Link::new(now), Link::new(now)],
            hello: [0; LINKS],
            ready: [false; LINKS],
            pending: VecDeque::new(),
            appends: 0,
            rooms: Vec::new(),
            by_channel: HashMap::new(),
            unconfirmed: HashMap::new(),
            incarnations: 0,
            events: Vec::new(),
            next_beat: None,
            error: Some(first_error),
            logged_down: false,
            leaving: false,
            replies: Vec::new(),
            received: 0,
            failed: 0,
            lost_links: 0,
            relay_channel: None,
            relayed: Vec::new(),
            relayed_bytes: 0,
            unheard: Vec::new(),
        }
    }

    /// Listens on node `node`'s relay channel (see `crate::eio::relay`) from now on.
    pub fn relay_as(&mut self, node: &[u8], now: Instant) {
        let channel: Rc<[u8]> = relay_channel(node).into();
        if self.ready[SUB]
            && let Some(link) = self.links.get_mut(SUB)
        {
            link.send(&[b"SUBSCRIBE", &channel], now, false);
        }
        self.relay_channel = Some(channel);
    }

    /// Publishes `message` on node `to`'s relay channel; `ask` names a request passed on,
    /// reported by [`RedisLog::take_relayed`] if no node got it. False if the command link
    /// is down (nothing sent).
    pub fn relay(&mut self, to: &[u8], message: &[u8], ask: Option<u64>, now: Instant) -> bool {
        if !self.ready[CMD] {
            return false;
        }
        let Some(link) = self.links.get_mut(CMD) else {
            return false;
        };
        link.send(&[b"PUBLISH", &relay_channel(to), message], now, true);
        self.pending.push_back(Pending::Relay(ask));
        true
    }

    /// Messages on this node's relay channel since the last call, and requests passed on
    /// that no node got.
    pub fn take_relayed(&mut self, messages: &mut Vec<Vec<u8>>, unheard: &mut Vec<u64>) {
        messages.append(&mut self.relayed);
        self.relayed_bytes = 0;
        unheard.append(&mut self.unheard);
    }

    /// Appends this process's Redis figures to a `/metrics` body.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let up = u8::from(self.ready == [true; LINKS]);
        let families: [(&str, &str, &str, u64); 5] = [
            (
                "wsrelay_redis_up",
                "gauge",
                "Both Redis links are usable (1) or not (0).",
                u64::from(up),
            ),
            (
                "wsrelay_redis_events_total",
                "counter",
                "Room events received from Redis and sent on.",
                self.received,
            ),
            (
                "wsrelay_redis_failed_appends_total",
                "counter",
                "Messages and notices Redis did not commit (their senders were told).",
                self.failed,
            ),
            (
                "wsrelay_redis_links_lost_total",
                "counter",
                "Redis links closed (by Redis, an error or a timeout).",
                self.lost_links,
            ),
            (
                "wsrelay_redis_appends_in_flight",
                "gauge",
                "Appends waiting for Redis' reply.",
                self.appends as u64,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    /// Where the links connect.
    pub fn endpoint(&self) -> &Endpoint {
        &self.target.endpoint
    }

    /// Link `i`'s state, for the event loop.
    pub fn link(&self, i: usize) -> Option<&Link> {
        self.links.get(i)
    }

    /// Link `i`'s state, for the event loop.
    pub fn link_mut(&mut self, i: usize) -> Option<&mut Link> {
        self.links.get_mut(i)
    }

    fn key(room: &str, what: &str) -> String {
        format!("{PREFIX}{{{room}}}:{what}")
    }

    fn channel(&self, room: &str) -> Rc<[u8]> {
        // Channels are not per database: the database is part of the name.
        format!("{PREFIX}{}:{{{room}}}", self.target.db)
            .into_bytes()
            .into()
    }

    fn node_rooms(&self) -> String {
        format!("{PREFIX}node:{}", self.node)
    }

    fn held(&self, room: RoomId) -> Option<&Held> {
        self.rooms.get(room).and_then(Option::as_ref)
    }

    fn copy(&self, room: RoomId) -> Option<&Copy> {
        self.held(room).and_then(|h| h.tail.as_ref())
    }

    /// Link `i` connected: its set-up goes first.
    pub fn on_connected(&mut self, i: usize, now: Instant) {
        let Some(link) = self.links.get_mut(i) else {
            return;
        };
        link.connected();
        self.ready[i] = false;
        if i == SUB {
            self.unconfirmed.clear();
        }
        let mut hello = 0;
        let auth: Vec<&[u8]> = match (&self.target.user, &self.target.password) {
            (Some(user), Some(password)) => vec![b"AUTH", user.as_bytes(), password.as_bytes()],
            (None, Some(password)) => vec![b"AUTH", password.as_bytes()],
            _ => Vec::new(),
        };
        if !auth.is_empty() {
            link.send(&auth, now, true);
            hello += 1;
        }
        if i == CMD && self.target.db != 0 {
            link.send(
                &[b"SELECT", self.target.db.to_string().as_bytes()],
                now,
                true,
            );
            hello += 1;
        }
        let role = if i == CMD { "cmd" } else { "sub" };
        let name = format!("wsrelay-{}-{role}", self.node);
        link.send(&[b"CLIENT", b"SETNAME", name.as_bytes()], now, true);
        hello += 1;
        if i == CMD {
            link.send(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()], now, true);
            hello += 1;
            self.pending.clear();
            for _ in 0..hello {
                self.pending.push_back(Pending::Hello);
            }
        }
        self.hello[i] = hello;
    }

    /// Link `i` is closed (by the peer, an error, or at the link's request).
    pub fn on_closed(&mut self, i: usize, now: Instant, why: &str) {
        let Some(link) = self.links.get_mut(i) else {
            return;
        };
        link.down(now);
        if std::mem::replace(&mut self.ready[i], false) {
            self.lost_links += 1;
        }
        self.hello[i] = 0;
        let which = if i == CMD { "command" } else { "subscription" };
        let error = format!("redis {}: {which} link: {why}", self.target.redacted());
        if !self.logged_down {
            self.logged_down = true;
            log!(
                Warn,
                "{error}; retrying (every {}s at most)",
                crate::redis::link::MAX_BACKOFF.as_secs()
            );
        } else {
            log!(Debug, "{error}");
        }
        self.error = Some(error);
        if i == CMD {
            let why: Rc<str> = format!("the room store is unreachable ({why})").into();
            self.appends = 0;
            for pending in std::mem::take(&mut self.pending) {
                match pending {
                    Pending::Append { room, draft } => {
                        self.failed += 1;
                        self.events.push(LogEvent::Failed {
                            room,
                            draft,
                            why: why.clone(),
                        });
                    }
                    Pending::Load { room, incarnation } => {
                        if let Some(h) = self.rooms.get_mut(room).and_then(Option::as_mut)
                            && h.incarnation == incarnation
                        {
                            h.loading = false;
                            h.needs_load = true;
                        }
                    }
                    Pending::Relay(Some(id)) => self.unheard.push(id),
                    Pending::Hello | Pending::Beat | Pending::Here | Pending::Relay(None) => {}
                }
            }
            self.next_beat = None;
        } else {
            // Whatever the channel carried meanwhile is read from the streams once back.
            self.unconfirmed.clear();
            for h in self.rooms.iter_mut().flatten() {
                h.subscribed = false;
                h.needs_load = true;
            }
        }
    }

    /// Bytes read from link `i`.
    pub fn on_input(&mut self, i: usize, bytes: &[u8], now: Instant) {
        let mut replies = std::mem::take(&mut self.replies);
        let Some(link) = self.links.get_mut(i) else {
            return;
        };
        if let Err(e) = link.feed(bytes, &mut replies) {
            link.request_close(e);
        }
        for reply in replies.drain(..) {
            if i == CMD {
                self.on_reply(reply, now);
            } else {
                self.on_sub_reply(reply, now);
            }
        }
        self.replies = replies;
    }

    /// A set-up reply on link `i`: an error ends the attempt; the last one makes it usable.
    fn on_hello(&mut self, i: usize, reply: &Value, now: Instant) {
        if let Value::Error(e) = reply {
            let e = String::from_utf8_lossy(e).into_owned();
            if let Some(link) = self.links.get_mut(i) {
                link.request_close(e);
            }
            return;
        }
        self.hello[i] = self.hello[i].saturating_sub(1);
        if self.hello[i] > 0 {
            return;
        }
        self.ready[i] = true;
        if let Some(link) = self.links.get_mut(i) {
            link.proven();
        }
        if self.ready == [true; LINKS] {
            if self.logged_down {
                log!(Info, "redis {}: connected", self.target.redacted());
            }
            self.logged_down = false;
            self.error = None;
        }
        if i == CMD {
            self.beat(now);
            // Presence as it is here now: counts of notices that failed meanwhile, or of
            // rooms freed since, must not stay in Redis.
            self.write_here(now);
        } else {
            let channels: Vec<Rc<[u8]>> = self
                .rooms
                .iter()
                .flatten()
                .map(|h| h.channel.clone())
                .collect();
            for chunk in channels.chunks(256) {
                let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                args.extend(chunk.iter().map(|c| &c[..]));
                if let Some(link) = self.links.get_mut(SUB) {
                    link.send(&args, now, false);
                }
            }
            for channel in channels {
                *self.unconfirmed.entry(channel).or_default() += 1;
            }
            if let (Some(channel), Some(link)) = (&self.relay_channel, self.links.get_mut(SUB)) {
                link.send(&[b"SUBSCRIBE", channel], now, false);
            }
        }
        self.load_due(now);
    }

    /// Sets this node's counts in Redis to those of the rooms held here, and forgets the
    /// others, at once (one call).
    fn write_here(&mut self, now: Instant) {
        let node_rooms = self.node_rooms();
        let ttl = ROOM_TTL.as_millis().to_string();
        let counts: Vec<(Rc<str>, String)> = self
            .rooms
            .iter()
            .flatten()
            .filter(|h| h.here > 0)
            .map(|h| (h.name.clone(), h.here.to_string()))
            .collect();
        let mut args: Vec<&[u8]> = vec![
            b"EVALSHA",
            self.sha.as_bytes(),
            b"1",
            node_rooms.as_bytes(),
            b"here",
            self.node.as_bytes(),
            PREFIX.as_bytes(),
            ttl.as_bytes(),
        ];
        for (room, n) in &counts {
            args.extend([room.as_bytes(), n.as_bytes()]);
        }
        self.links[CMD].send(&args, now, true);
        self.pending.push_back(Pending::Here);
    }

    /// Renews this node's presence deadline (reaping dead nodes'); when leaving, ends it.
    fn beat(&mut self, now: Instant) {
        let nodes = format!("{PREFIX}nodes");
        let ttl = if self.leaving {
            0
        } else {
            NODE_TTL.as_millis()
        };
        let ttl = ttl.to_string();
        let args: [&[u8]; 8] = [
            b"EVALSHA",
            self.sha.as_bytes(),
            b"1",
            nodes.as_bytes(),
            b"beat",
            self.node.as_bytes(),
            ttl.as_bytes(),
            PREFIX.as_bytes(),
        ];
        self.links[CMD].send(&args, now, true);
        self.pending.push_back(Pending::Beat);
        self.next_beat = Some(now + BEAT);
        // The subscription link sends nothing of its own: a PING, answered within the reply
        // timeout, tells a Redis gone silent (its host down, no reset) from a quiet channel.
        if self.ready[SUB] {
            self.links[SUB].send(&[b"PING"], now, true);
        }
    }

    /// The process is stopping: its members stop counting now rather than at its deadline
    /// (another node's next beat announces their leaving).
    pub fn leave(&mut self, now: Instant) {
        self.leaving = true;
        if self.ready[CMD] {
            self.beat(now);
        }
    }

    fn on_reply(&mut self, reply: Value, now: Instant) {
        let Some(pending) = self.pending.pop_front() else {
            if let Some(link) = self.links.get_mut(CMD) {
                link.request_close("a reply nobody asked for".into());
            }
            return;
        };
        if let Value::Error(e) = &reply
            && e.starts_with(b"NOSCRIPT")
        {
            // The script cache was flushed (SCRIPT FLUSH): every call fails until the link's
            // set-up loads it again.
            if let Some(link) = self.links.get_mut(CMD) {
                link.request_close("the script is gone from Redis".into());
            }
        }
        match pending {
            Pending::Hello => self.on_hello(CMD, &reply, now),
            Pending::Beat => self.on_beat(&reply, now),
            Pending::Here => {
                if let Value::Error(e) = &reply {
                    log!(Warn, "redis: presence: {}", String::from_utf8_lossy(e));
                }
            }
            Pending::Append { room, draft } => {
                self.appends = self.appends.saturating_sub(1);
                self.on_appended(room, draft, &reply);
            }
            Pending::Load { room, incarnation } => self.on_loaded(room, incarnation, &reply, now),
            // PUBLISH answers how many subscribers got the message: none, no such node.
            Pending::Relay(ask) => {
                if let (Some(id), Value::Int(0) | Value::Error(_)) = (ask, &reply) {
                    self.unheard.push(id);
                }
            }
        }
    }

    /// A beat's reply: rooms that lost a dead node's members, announced from here.
    fn on_beat(&mut self, reply: &Value, now: Instant) {
        let Some([known, gone]) = reply.as_array() else {
            if let Value::Error(e) = reply {
                log!(Warn, "redis: beat: {}", String::from_utf8_lossy(e));
            }
            return;
        };
        if known.as_int() == Some(0) && !self.leaving {
            // Reaped as dead by another node (a turn longer than NODE_TTL) or new: its
            // members left the counts, and come back in.
            self.write_here(now);
        }
        let Some(gone) = gone.as_array() else {
            return;
        };
        let mut json = Vec::new();
        for pair in gone.chunks(2) {
            let [room, n] = pair else { continue };
            let (Some(room), Some(n)) = (room.as_bytes(), n.as_int()) else {
                continue;
            };
            let Ok(room) = std::str::from_utf8(room) else {
                continue;
            };
            let left = u32::try_from(n).unwrap_or(u32::MAX);
            chat::presence_draft(Presence::Leave, (0, left), chat::COUNT_SLOT, &mut json);
            let here = self
                .rooms
                .iter()
                .flatten()
                .find(|h| &*h.name == room)
                .map_or(0, |h| h.here);
            let draft = Draft {
                body: String::from_utf8_lossy(&json).into(),
                kind: Kind::Notice {
                    replaces: None,
                    here,
                },
            };
            log!(
                Info,
                "room {room}: {left} members of a node that stopped beating left"
            );
            self.send_append(room.into(), draft, now);
        }
    }

    fn on_appended(&mut self, room: Rc<str>, draft: Draft, reply: &Value) {
        let json = reply.as_array().and_then(|parts| parts.get(2)?.as_bytes());
        match json {
            Some(json) => {
                if let Kind::Message {
                    reply: Some(to), ..
                } = draft.kind
                {
                    let json = String::from_utf8_lossy(json).into();
                    self.events.push(LogEvent::Replied { to, json });
                }
                // The event itself reaches the app from the channel, like other nodes' events.
                self.events.extend(acked(draft.kind));
            }
            // Not the script's answer: a `POST /send` must hear something all the same.
            None => {
                let why = match reply {
                    Value::Error(e) => String::from_utf8_lossy(e).into_owned(),
                    _ => "unexpected reply".to_owned(),
                };
                log!(Warn, "redis: append to room {room}: {why}");
                self.failed += 1;
                self.events.push(LogEvent::Failed {
                    room,
                    draft,
                    why: format!("the room store refused it ({why})").into(),
                });
            }
        }
    }

    /// A load's reply: the room's epoch, last seq, lost mark and the entries asked for.
    fn on_loaded(&mut self, room: RoomId, incarnation: u64, reply: &Value, now: Instant) {
        let limits = self.limits;
        let Some(h) = self.rooms.get_mut(room).and_then(Option::as_mut) else {
            return;
        };
        if h.incarnation != incarnation {
            return;
        }
        h.loading = false;
        let parsed = (|| {
            let [epoch, seq, lost, entries] = reply.as_array()? else {
                return None;
            };
            let epoch: Rc<str> = std::str::from_utf8(epoch.as_bytes()?).ok()?.into();
            let mut list = Vec::new();
            for pair in entries.as_array()?.chunks(2) {
                let [seq, json] = pair else { return None };
                let json = std::str::from_utf8(json.as_bytes()?).ok()?;
                list.push((u64::try_from(seq.as_int()?).ok()?, json));
            }
            let seq = u64::try_from(seq.as_int()?).ok()?;
            let lost = u64::try_from(lost.as_int()?).ok()?;
            Some((epoch, seq, lost, list))
        })();
        let Some((epoch, seq, lost, entries)) = parsed else {
            let why = match reply {
                Value::Error(e) => String::from_utf8_lossy(e).into_owned(),
                _ => "unexpected reply".to_owned(),
            };
            log!(
                Warn,
                "redis: load room {}: {why}; retried with the next beat",
                h.name
            );
            h.needs_load = true;
            return;
        };
        let name = h.name.clone();
        match &mut h.tail {
            None => {
                // First load: the entries are history, not news.
                let mut tail = Tail::default();
                for &(s, json) in &entries {
                    tail.keep(s, json, limits);
                }
                tail.lost_through = tail.lost_through.max(lost);
                h.tail = Some(Copy {
                    epoch,
                    last: seq,
                    tail,
                });
                self.events.push(LogEvent::Ready(name.clone()));
            }
            Some(copy) => {
                if *copy.epoch != *epoch && !copy.epoch.is_empty() {
                    *copy = Copy {
                        epoch: epoch.clone(),
                        last: 0,
                        tail: Tail::default(),
                    };
                    self.events.push(LogEvent::Restarted(name.clone()));
                }
                copy.epoch = epoch.clone();
                let first = entries.first().map_or(seq + 1, |&(s, _)| s);
                if lost > copy.last && first > copy.last + 1 {
                    // Gone from the stream before this node read them.
                    let to = lost.min(first - 1);
                    self.events.push(LogEvent::Lost {
                        room: name.clone(),
                        from: copy.last + 1,
                        to,
                    });
                    copy.last = to;
                }
                copy.tail.lost_through = copy.tail.lost_through.max(lost);
                for (s, json) in entries {
                    if s > copy.last {
                        Self::commit(&mut self.events, &name, copy, s, 0, json, limits);
                    }
                }
                // Events replaced or never kept (larger than the history) end the catch-up.
                copy.last = copy.last.max(seq);
            }
        }
        self.drain_buffer(room, now);
        // A load asked for meanwhile (the buffer overflowed) goes now.
        self.load_due(now);
    }

    /// Takes event `seq` of room `name` into its copy and sends it on.
    fn commit(
        events: &mut Vec<LogEvent>,
        name: &Rc<str>,
        copy: &mut Copy,
        seq: u64,
        replaced: u64,
        json: &str,
        limits: HistoryLimits,
    ) {
        if replaced > 0 {
            copy.tail.drop_last(replaced);
        }
        copy.tail.keep(seq, json, limits);
        copy.last = seq;
        let Some((body, ts)) = unstamp(json) else {
            log!(
                Warn,
                "room {name}: event {seq} is not one wsrelay wrote; skipped"
            );
            return;
        };
        let kind = if json.starts_with(r#"{"type":"notification""#) {
            Kind::Notice {
                replaces: None,
                here: 0,
            }
        } else if json.starts_with(r#"{"type":"event""#) {
            Kind::Sio {
                from: None,
                nsp: 0,
                ack: None,
            }
        } else {
            Kind::Message {
                reply: None,
                from: None,
            }
        };
        events.push(LogEvent::Committed(Committed {
            room: name.clone(),
            epoch: copy.epoch.clone(),
            seq,
            ts,
            draft: Draft { body, kind },
        }));
    }

    /// Applies channel messages held while the room loaded, up to the next hole.
    fn drain_buffer(&mut self, room: RoomId, now: Instant) {
        let Some(h) = self.rooms.get_mut(room).and_then(Option::as_mut) else {
            return;
        };
        let buffered = std::mem::take(&mut h.buffer);
        h.buffered = 0;
        for m in buffered {
            self.on_message(room, m, now);
        }
    }

    /// One event from a room's channel.
    fn on_message(&mut self, room: RoomId, m: Message, now: Instant) {
        let limits = self.limits;
        let Some(h) = self.rooms.get_mut(room).and_then(Option::as_mut) else {
            return;
        };
        if h.loading || h.needs_load || h.tail.is_none() {
            if h.buffer.len() < MAX_BUFFERED && h.buffered + m.json.len() <= MAX_BUFFERED_BYTES {
                h.buffered += m.json.len();
                h.buffer.push(m);
            } else {
                h.buffer.clear();
                h.buffered = 0;
                h.needs_load = true;
                self.load_due(now);
            }
            return;
        }
        let Some(copy) = h.tail.as_mut() else {
            return;
        };
        if *copy.epoch != *m.epoch {
            if copy.epoch.is_empty() {
                // The room's first event made its epoch.
                copy.epoch = m.epoch.clone();
            } else {
                // Redis lost the room (restarted empty, or it expired) and it began again.
                *copy = Copy {
                    epoch: m.epoch.clone(),
                    last: 0,
                    tail: Tail::default(),
                };
                self.events.push(LogEvent::Restarted(h.name.clone()));
            }
        }
        if m.seq <= copy.last {
            return; // Seen (in a load that overlapped the channel).
        }
        if m.seq > copy.last + 1 {
            // A hole: read the stream from the last seq seen; this and later messages wait.
            h.buffered += m.json.len();
            h.buffer.push(m);
            h.needs_load = true;
            self.load_due(now);
            return;
        }
        let name = h.name.clone();
        Self::commit(
            &mut self.events,
            &name,
            copy,
            m.seq,
            m.replaced,
            &m.json,
            limits,
        );
    }

    fn on_sub_reply(&mut self, reply: Value, now: Instant) {
        if self.hello[SUB] > 0 || matches!(reply, Value::Error(_)) {
            return self.on_hello(SUB, &reply, now);
        }
        let Some(parts) = reply.as_array() else {
            return;
        };
        let kind = parts.first().and_then(Value::as_bytes).unwrap_or_default();
        let channel = parts.get(1).and_then(Value::as_bytes).unwrap_or_default();
        if self.relay_channel.as_deref() == Some(channel) {
            if kind == b"message"
                && let Some(message) = parts.get(2).and_then(Value::as_bytes)
                && self.relayed_bytes + message.len() <= MAX_RELAYED_BYTES
            {
                self.relayed_bytes += message.len();
                self.relayed.push(message.to_vec());
            }
            return;
        }
        if matches!(kind, b"subscribe" | b"unsubscribe") {
            // Only the answer to the channel's last request says where it stands.
            match self.unconfirmed.get_mut(channel) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return;
                }
                Some(_) => {
                    self.unconfirmed.remove(channel);
                }
                None => {}
            }
        }
        let Some(&room) = self.by_channel.get(channel) else {
            return; // A room freed meanwhile.
        };
        match kind {
            b"subscribe" => {
                if let Some(h) = self.rooms.get_mut(room).and_then(Option::as_mut) {
                    h.subscribed = true;
                }
                self.load_due(now);
            }
            b"message" => {
                match parts
                    .get(2)
                    .and_then(Value::as_bytes)
                    .and_then(Message::parse)
                {
                    Some(m) => self.on_message(room, m, now),
                    None => log!(
                        Warn,
                        "redis: a message on the room channel wsrelay did not write"
                    ),
                }
            }
            _ => {}
        }
    }

    /// Sends the loads that can go: rooms subscribed, with a load due, none in flight.
    fn load_due(&mut self, now: Instant) {
        if !self.ready[CMD] {
            return;
        }
        let mut due = Vec::new();
        for (id, h) in self.rooms.iter_mut().enumerate() {
            let Some(h) = h else { continue };
            if h.subscribed && h.needs_load && !h.loading {
                h.needs_load = false;
                h.loading = true;
                let since = h.tail.as_ref().map(|c| (c.last, c.epoch.clone()));
                due.push((id, h.name.clone(), h.incarnation, since, h.create));
            }
        }
        for (id, name, incarnation, since, create) in due {
            let epoch = since
                .as_ref()
                .map_or_else(|| Rc::from(""), |(_, e)| e.clone());
            let (meta, log) = (Self::key(&name, "meta"), Self::key(&name, "log"));
            let since = since.map_or_else(|| "-1".to_owned(), |(s, _)| s.to_string());
            let count = self.limits.events.to_string();
            let args: [&[u8]; 10] = [
                b"EVALSHA",
                self.sha.as_bytes(),
                b"2",
                meta.as_bytes(),
                log.as_bytes(),
                b"load",
                since.as_bytes(),
                count.as_bytes(),
                if create { b"1" } else { b"0" },
                epoch.as_bytes(),
            ];
            self.links[CMD].send(&args, now, true);
            self.pending.push_back(Pending::Load {
                room: id,
                incarnation,
            });
        }
    }

    fn send_append(&mut self, room: Rc<str>, draft: Draft, now: Instant) {
        if self.ready[CMD] && self.appends >= MAX_APPENDS {
            self.failed += 1;
            self.events.push(LogEvent::Failed {
                room,
                draft,
                why: "the room store is busy; try again".into(),
            });
            return;
        }
        if !self.ready[CMD] {
            let why = self.error.as_deref().unwrap_or("connecting");
            self.failed += 1;
            self.events.push(LogEvent::Failed {
                room,
                draft,
                why: format!("the room store is unreachable ({why})").into(),
            });
            return;
        }
        let keys = [
            Self::key(&room, "meta"),
            Self::key(&room, "log"),
            Self::key(&room, "here"),
            format!("{PREFIX}nodes"),
            self.node_rooms(),
        ];
        let (kind, replaces, here) = match draft.kind {
            Kind::Message { .. } | Kind::Sio { .. } => ("m", 0, 0),
            Kind::Notice { replaces, here } => ("n", replaces.unwrap_or(0), here),
        };
        let (replaces, here) = (replaces.to_string(), here.to_string());
        let (events, bytes) = (
            self.limits.events.to_string(),
            self.limits.bytes.to_string(),
        );
        let channel = self.channel(&room);
        let ttl = ROOM_TTL.as_millis().to_string();
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", self.sha.as_bytes(), b"5"];
        args.extend(keys.iter().map(String::as_bytes));
        args.extend([
            &b"append"[..],
            draft.body.as_bytes(),
            kind.as_bytes(),
            replaces.as_bytes(),
            self.node.as_bytes(),
            here.as_bytes(),
            events.as_bytes(),
            bytes.as_bytes(),
            &channel,
            ttl.as_bytes(),
            room.as_bytes(),
            if matches!(draft.kind, Kind::Message { reply: Some(_), .. }) {
                b"1"
            } else {
                b"0"
            },
        ]);
        self.links[CMD].send(&args, now, true);
        self.appends += 1;
        self.pending.push_back(Pending::Append { room, draft });
    }

    /// When [`RedisLog::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let beat = self.next_beat.filter(|_| self.ready[CMD]);
        self.links
            .iter()
            .filter_map(Link::deadline)
            .chain(beat)
            .min()
    }

    /// Beats when due, and asks for overdue links to be closed.
    pub fn handle_timeout(&mut self, now: Instant) {
        for link in &mut self.links {
            link.check(now);
        }
        if self.ready[CMD] && self.next_beat.is_some_and(|t| t <= now) {
            self.beat(now);
            // Loads that failed are tried again.
            self.load_due(now);
        }
    }
}

impl Log for RedisLog {
    fn open(&mut self, room: RoomId, name: &Rc<str>, create: bool) {
        self.incarnations += 1;
        let channel = self.channel(name);
        if self.rooms.len() <= room {
            self.rooms.resize_with(room + 1, || None);
        }
        self.by_channel.insert(channel.clone(), room);
        if self.ready[SUB]
            && let Some(link) = self.links.get_mut(SUB)
        {
            link.send(&[b"SUBSCRIBE", &channel], Instant::now(), false);
            *self.unconfirmed.entry(channel.clone()).or_default() += 1;
        }
        self.rooms[room] = Some(Held {
            name: name.clone(),
            channel,
            incarnation: self.incarnations,
            subscribed: false,
            loading: false,
            needs_load: true,
            create,
            tail: None,
            buffer: Vec::new(),
            buffered: 0,
            here: 0,
        });
    }

    fn close(&mut self, room: RoomId) {
        let Some(h) = self.rooms.get_mut(room).and_then(Option::take) else {
            return;
        };
        self.by_channel.remove(&h.channel);
        if self.ready[SUB]
            && let Some(link) = self.links.get_mut(SUB)
        {
            link.send(&[b"UNSUBSCRIBE", &h.channel], Instant::now(), false);
            *self.unconfirmed.entry(h.channel).or_default() += 1;
        }
    }

    fn keeps(&self, room: RoomId) -> bool {
        // Nothing is only here, but a room held (subscribed, its tail copied) until evicted
        // answers its long polls and resumes without a load, as an in-process room with
        // history stays until evicted.
        self.copy(room).is_some_and(|c| !c.epoch.is_empty())
    }

    fn ready(&self, room: RoomId) -> bool {
        self.copy(room).is_some()
    }

    fn counts_presence(&self) -> bool {
        true
    }

    fn health(&self) -> Option<String> {
        self.error.clone()
    }

    fn redis(&mut self) -> Option<&mut RedisLog> {
        Some(self)
    }

    fn epoch(&self, room: RoomId) -> Rc<str> {
        self.copy(room)
            .map_or_else(|| Rc::from(""), |c| c.epoch.clone())
    }

    fn last_seq(&self, room: RoomId) -> u64 {
        self.copy(room).map_or(0, |c| c.last)
    }

    fn append(&mut self, room: RoomId, draft: Draft) {
        let Some(h) = self.rooms.get_mut(room).and_then(Option::as_mut) else {
            return;
        };
        if let Kind::Notice { here, .. } = draft.kind {
            h.here = here;
        }
        h.create = true;
        let name = h.name.clone();
        self.send_append(name, draft, Instant::now());
    }

    fn take_events(&mut self, out: &mut Vec<LogEvent>) {
        let received = self
            .events
            .iter()
            .filter(|e| matches!(e, LogEvent::Committed(_)));
        self.received += received.count() as u64;
        out.append(&mut self.events);
    }

    fn read(&self, room: RoomId, since: Option<u64>) -> Read<'_> {
        match self.copy(room) {
            Some(c) => c.tail.read(since, c.last),
            None => Read {
                gap: None,
                events: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Stamp;
    use crate::redis::link::REPLY_TIMEOUT;
    use crate::redis::resp::{self, Limits};

    /// A beat's reply: this node was known, no node was reaped.
    const BEAT_OK: &[u8] = b"*2\r\n:1\r\n*0\r\n";

    const LIMITS: HistoryLimits = HistoryLimits {
        events: 10,
        bytes: 10_000,
    };

    /// The commands queued on link `i` since the last call, each as its arguments.
    fn sent(log: &mut RedisLog, i: usize) -> Vec<Vec<String>> {
        let link = log.link_mut(i).unwrap();
        let out = link.output().to_vec();
        link.consumed(out.len());
        let mut buf = &out[..];
        let mut commands = Vec::new();
        while let Some((v, used)) = resp::parse(buf, &Limits::default()).unwrap() {
            let args = v.as_array().unwrap().iter();
            let args = args.map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).into());
            commands.push(args.collect());
            buf = &buf[used..];
        }
        commands
    }

    /// The operation of every `EVALSHA` in `commands` (its first argument after the keys).
    fn ops(commands: &[Vec<String>]) -> Vec<String> {
        commands
            .iter()
            .map(|c| match c[0].as_str() {
                "EVALSHA" => c[3 + c[2].parse::<usize>().unwrap()].clone(),
                other => other.to_owned(),
            })
            .collect()
    }

    /// An array of bulk strings, as Redis pushes channel messages.
    fn push(parts: &[&str]) -> Vec<u8> {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let mut out = Vec::new();
        resp::encode(&parts, &mut out);
        out
    }

    /// A load's reply: epoch, last seq, lost mark and the entries.
    fn loaded(epoch: &str, seq: u64, lost: u64, entries: &[(u64, &str)]) -> Vec<u8> {
        let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
        let mut out = format!(
            "*4\r\n{}{}{}",
            bulk(epoch),
            bulk(&seq.to_string()),
            bulk(&lost.to_string())
        );
        out.push_str(&format!("*{}\r\n", entries.len() * 2));
        for (s, json) in entries {
            out.push_str(&bulk(&s.to_string()));
            out.push_str(&bulk(json));
        }
        out.into_bytes()
    }

    /// Event `seq` as the script stamps it.
    fn event(seq: u64, msg: &str) -> String {
        format!(r#"{{"type":"message","name":"x","msg":"{msg}","seq":{seq},"ts":1}}"#)
    }

    /// A channel message of event `seq` in `epoch`.
    fn message(channel: &str, epoch: &str, seq: u64, msg: &str) -> Vec<u8> {
        let payload = format!("{epoch}\n{seq}\n0\n{}", event(seq, msg));
        push(&["message", channel, &payload])
    }

    /// A log with both links up and set up (the beat answered), its output taken.
    fn up(now: Instant) -> RedisLog {
        let target = crate::redis::url::parse("redis://127.0.0.1:6379").unwrap();
        let mut log = RedisLog::new(target, "n1", LIMITS, now);
        log.on_connected(CMD, now);
        log.on_input(CMD, b"+OK\r\n+OK\r\n", now);
        log.on_connected(SUB, now);
        log.on_input(SUB, b"+OK\r\n", now);
        assert!(log.health().is_none());
        // The beat (this node was known) and its counts written.
        log.on_input(CMD, &[BEAT_OK, b":1\r\n"].concat(), now);
        assert!(log.pending.is_empty());
        sent(&mut log, CMD);
        sent(&mut log, SUB);
        log
    }

    fn events(log: &mut RedisLog) -> Vec<LogEvent> {
        let mut out = Vec::new();
        log.take_events(&mut out);
        out
    }

    /// The seqs of the events committed in `events`.
    fn seqs(events: &[LogEvent]) -> Vec<u64> {
        let committed = events.iter().filter_map(|e| match e {
            LogEvent::Committed(c) => Some(c.seq),
            _ => None,
        });
        committed.collect()
    }

    #[test]
    fn a_room_opened_again_is_loaded_once_its_last_subscribe_is_confirmed() {
        let now = Instant::now();
        let mut log = up(now);
        let name: Rc<str> = "a".into();
        let channel = String::from_utf8(log.channel("a").to_vec()).unwrap();
        log.open(0, &name, true);
        log.close(0);
        log.open(0, &name, true);
        assert_eq!(
            ops(&sent(&mut log, SUB)),
            ["SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE"]
        );
        // The first SUBSCRIBE's confirmation: the UNSUBSCRIBE after it is not answered yet, so
        // a load now could miss what is published before the second SUBSCRIBE.
        log.on_input(SUB, &push(&["subscribe", &channel, "1"]), now);
        assert!(ops(&sent(&mut log, CMD)).is_empty());
        log.on_input(SUB, &push(&["unsubscribe", &channel, "0"]), now);
        assert!(ops(&sent(&mut log, CMD)).is_empty());
        log.on_input(SUB, &push(&["subscribe", &channel, "1"]), now);
        assert_eq!(ops(&sent(&mut log, CMD)), ["load"]);
        log.on_input(
            CMD,
            &loaded("e1", 2, 0, &[(1, &event(1, "m1")), (2, &event(2, "m2"))]),
            now,
        );
        assert_eq!(events(&mut log), [LogEvent::Ready(name.clone())]);
        assert_eq!((log.last_seq(0), log.read(0, None).events.len()), (2, 2));
        log.on_input(SUB, &message(&channel, "e1", 3, "m3"), now);
        assert_eq!(seqs(&events(&mut log)), [3]);
    }

    /// `up`, with room "a" open as room 0, subscribed and loaded with `entries`; its channel.
    fn with_room(now: Instant, epoch: &str, entries: &[(u64, &str)]) -> (RedisLog, String) {
        let mut log = up(now);
        let channel = String::from_utf8(log.channel("a").to_vec()).unwrap();
        log.open(0, &"a".into(), true);
        log.on_input(SUB, &push(&["subscribe", &channel, "1"]), now);
        let last = entries.last().map_or(0, |e| e.0);
        log.on_input(CMD, &loaded(epoch, last, 0, entries), now);
        sent(&mut log, CMD);
        sent(&mut log, SUB);
        events(&mut log);
        (log, channel)
    }

    #[test]
    fn a_load_after_a_link_came_back_names_the_epoch_its_cursor_counts_in() {
        let now = Instant::now();
        let (mut log, channel) =
            with_room(now, "e1", &[(4, &event(4, "m4")), (5, &event(5, "m5"))]);
        log.on_closed(SUB, now, "cut");
        log.on_connected(SUB, now);
        log.on_input(SUB, b"+OK\r\n", now);
        assert_eq!(ops(&sent(&mut log, SUB)), ["CLIENT", "SUBSCRIBE"]);
        log.on_input(SUB, &push(&["subscribe", &channel, "1"]), now);
        let load = sent(&mut log, CMD);
        assert_eq!(ops(&load), ["load"]);
        // since 5 in epoch e1: the script reads the whole stream if the room is in another.
        assert_eq!(load[0][6..], ["5", "10", "1", "e1"]);
        // Redis came back empty and the room began again, with 2 events so far.
        log.on_input(
            CMD,
            &loaded("e2", 2, 0, &[(1, &event(1, "n1")), (2, &event(2, "n2"))]),
            now,
        );
        let got = events(&mut log);
        assert_eq!(got[0], LogEvent::Restarted("a".into()));
        assert_eq!(seqs(&got), [1, 2]);
        assert_eq!((&*log.epoch(0), log.last_seq(0)), ("e2", 2));
    }

    #[test]
    fn a_load_asked_for_while_one_was_in_flight_or_that_failed_goes_later() {
        let now = Instant::now();
        let mut log = up(now);
        let channel = String::from_utf8(log.channel("a").to_vec()).unwrap();
        log.open(0, &"a".into(), true);
        log.on_input(SUB, &push(&["subscribe", &channel, "1"]), now);
        assert_eq!(ops(&sent(&mut log, CMD)), ["load"]);
        // An error reply: tried again with the next beat, not at once (it may last).
        log.on_input(CMD, b"-ERR busy\r\n", now);
        assert!(sent(&mut log, CMD).is_empty());
        log.handle_timeout(now + BEAT);
        assert_eq!(ops(&sent(&mut log, CMD)), ["beat", "load"]);
        log.on_input(CMD, BEAT_OK, now);
        // More channel messages than are kept while the load is in flight: they are dropped,
        // and read from the stream by another load once this one is answered.
        for seq in 3..MAX_BUFFERED as u64 + 4 {
            log.on_input(SUB, &message(&channel, "e1", seq, "m"), now);
        }
        assert!(sent(&mut log, CMD).is_empty());
        log.on_input(CMD, &loaded("e1", 2, 0, &[(2, &event(2, "m2"))]), now);
        assert_eq!(events(&mut log), [LogEvent::Ready("a".into())]);
        let load = sent(&mut log, CMD);
        assert_eq!(ops(&load), ["load"]);
        assert_eq!(load[0][6], "2");
        log.on_input(
            CMD,
            &loaded("e1", 4, 0, &[(3, &event(3, "m3")), (4, &event(4, "m4"))]),
            now,
        );
        assert_eq!(seqs(&events(&mut log)), [3, 4]);
        log.on_input(SUB, &message(&channel, "e1", 5, "m5"), now);
        assert_eq!(seqs(&events(&mut log)), [5]);
    }

    #[test]
    fn a_silent_subscription_link_is_closed() {
        let now = Instant::now();
        let (mut log, channel) = with_room(now, "e1", &[]);
        // Each beat PINGs the subscription link too; a pong or a message answers.
        let t1 = now + BEAT;
        log.handle_timeout(t1);
        assert_eq!(ops(&sent(&mut log, SUB)), ["PING"]);
        log.on_input(SUB, &push(&["pong", ""]), t1);
        log.on_input(CMD, BEAT_OK, t1);
        let t2 = t1 + BEAT;
        log.handle_timeout(t2);
        log.on_input(SUB, &message(&channel, "e1", 1, "m1"), t2);
        log.on_input(CMD, BEAT_OK, t2);
        // Then nothing comes, not even the answer to the next PING.
        let t3 = t2 + BEAT;
        log.handle_timeout(t3);
        log.on_input(CMD, BEAT_OK, t3);
        log.handle_timeout(t3 + REPLY_TIMEOUT - Duration::from_millis(1));
        assert_eq!(log.link(SUB).unwrap().close_requested(), None);
        log.handle_timeout(t3 + REPLY_TIMEOUT);
        assert!(log.link(SUB).unwrap().close_requested().is_some());
    }

    fn notice(here: usize) -> Draft {
        let mut json = Vec::new();
        chat::presence_draft(Presence::Join, (1, 0), chat::COUNT_SLOT, &mut json);
        let body = String::from_utf8(json).unwrap().into();
        let kind = Kind::Notice {
            replaces: None,
            here,
        };
        Draft { body, kind }
    }

    /// The counts of every `here` call in `commands`.
    fn counts(commands: &[Vec<String>]) -> Vec<Vec<String>> {
        let calls = commands
            .iter()
            .filter(|c| c.get(4).is_some_and(|op| op == "here"));
        calls.map(|c| c[8..].to_vec()).collect()
    }

    #[test]
    fn counts_are_written_again_as_they_are_here_after_an_outage_or_a_reaping() {
        let now = Instant::now();
        let mut log = up(now);
        log.open(0, &"a".into(), true);
        log.open(1, &"b".into(), true);
        sent(&mut log, SUB);
        log.on_closed(CMD, now, "cut");
        // Notices fail while the command link is down; room b is freed meanwhile.
        log.append(0, notice(2));
        log.append(1, notice(0));
        log.close(1);
        for i in 0..3 {
            let name: Rc<str> = format!("c{i}").into();
            log.open(2, &name, true);
            log.append(2, notice(0));
            log.close(2);
        }
        let failed = events(&mut log);
        assert_eq!(failed.len(), 5);
        assert!(failed.iter().all(|e| matches!(e, LogEvent::Failed { .. })));
        // Back: one call sets this node's counts to what is here (room a: 2), dropping any
        // other room's it may have left in Redis.
        log.on_connected(CMD, now);
        log.on_input(CMD, b"+OK\r\n+OK\r\n", now);
        let back = sent(&mut log, CMD);
        assert_eq!(ops(&back), ["CLIENT", "SCRIPT", "beat", "here"]);
        assert_eq!(back[3][5..8], ["n1", PREFIX, "86400000"]);
        assert_eq!(counts(&back), [["a", "2"]]);
        // The beat says another node reaped this one meanwhile: its counts go in again.
        log.on_input(CMD, b"*2\r\n:0\r\n*0\r\n", now);
        assert_eq!(counts(&sent(&mut log, CMD)), [["a", "2"]]);
        log.on_input(CMD, b":1\r\n:1\r\n", now);
        assert!(log.pending.is_empty());
    }

    #[test]
    fn the_messages_kept_while_a_room_loads_are_bounded_in_bytes() {
        let now = Instant::now();
        let mut log = up(now);
        let channel = String::from_utf8(log.channel("a").to_vec()).unwrap();
        log.open(0, &"a".into(), true);
        log.on_input(SUB, &push(&["subscribe", &channel, "1"]), now);
        assert_eq!(ops(&sent(&mut log, CMD)), ["load"]);
        let big = "x".repeat(MAX_BUFFERED_BYTES / 3);
        for seq in 1..=3 {
            log.on_input(SUB, &message(&channel, "e1", seq, &big), now);
        }
        let h = log.held(0).unwrap();
        assert!(h.buffer.is_empty() && h.buffered == 0 && h.needs_load);
        log.on_input(CMD, &loaded("e1", 0, 0, &[]), now);
        assert_eq!(events(&mut log), [LogEvent::Ready("a".into())]);
        assert_eq!(ops(&sent(&mut log, CMD)), ["load"]);
    }

    #[test]
    fn a_flushed_script_is_loaded_again() {
        let now = Instant::now();
        let (mut log, _) = with_room(now, "e1", &[]);
        log.append(0, notice(1));
        log.on_input(CMD, b"-NOSCRIPT No matching script.\r\n", now);
        assert!(matches!(events(&mut log)[..], [LogEvent::Failed { .. }]));
        assert!(log.link(CMD).unwrap().close_requested().is_some());
    }

    #[test]
    fn a_send_is_answered_whatever_redis_replies() {
        let now = Instant::now();
        let (mut log, _) = with_room(now, "e1", &[]);
        let to = crate::room::log::Asker { conn: 7, serial: 1 };
        let body: Rc<str> = r#"{"type":"message","name":"x","msg":"hi"}"#.into();
        let kind = Kind::Message {
            reply: Some(to),
            from: None,
        };
        for reply in [
            &b"*3\r\n$2\r\ne1\r\n$1\r\n1\r\n$2\r\n{}\r\n"[..],
            b"*0\r\n",
            b":1\r\n",
        ] {
            log.append(
                0,
                Draft {
                    body: body.clone(),
                    kind,
                },
            );
            log.on_input(CMD, reply, now);
            let answered = events(&mut log);
            assert!(
                matches!(
                    answered[..],
                    [LogEvent::Replied { .. } | LogEvent::Failed { .. }]
                ),
                "{answered:?}"
            );
        }
    }

    #[test]
    fn unstamp_inverts_stamp() {
        let mut json = Vec::new();
        let draft = r#"{"type":"message","name":"a","msg":",\"seq\":1}"}"#;
        chat::stamp(draft, Stamp { seq: 42, ts: 1700 }, false, &mut json);
        let json = String::from_utf8(json).unwrap();
        let (body, ts) = unstamp(&json).unwrap();
        assert_eq!((&*body, ts), (draft, 1700));
        assert_eq!(unstamp("{}"), None);
    }

    #[test]
    fn channel_messages() {
        let m = Message::parse(b"r1-2\n7\n6\n{\"a\":\"x\ny\"}").unwrap();
        assert_eq!(
            (&*m.epoch, m.seq, m.replaced, &*m.json),
            ("r1-2", 7, 6, "{\"a\":\"x\ny\"}")
        );
        assert!(Message::parse(b"r1\nx\n0\n{}").is_none());
    }

    #[test]
    fn appends_of_one_turn_go_out_together_and_each_reply_answers_its_own() {
        let now = Instant::now();
        let (mut log, channel) = with_room(now, "e1", &[]);
        let draft = |reply| Draft {
            body: r#"{"type":"message","name":"x","msg":"m"}"#.into(),
            kind: Kind::Message { reply, from: None },
        };
        let asker = |conn| crate::room::log::Asker { conn, serial: 1 };
        // Three messages read in one turn: three commands in the output before any reply, so
        // the event loop writes them in one write (one round trip, not three).
        log.append(0, draft(Some(asker(7))));
        log.append(0, draft(None));
        log.append(0, draft(Some(asker(9))));
        assert_eq!(ops(&sent(&mut log, CMD)), ["append", "append", "append"]);
        // The replies come in order; the channel carries the events for everyone.
        let reply = |seq: u64| {
            let json = event(seq, "m");
            format!(
                "*3\r\n$2\r\ne1\r\n${}\r\n{seq}\r\n${}\r\n{json}\r\n",
                seq.to_string().len(),
                json.len()
            )
        };
        log.on_input(CMD, [reply(1), reply(2), reply(3)].concat().as_bytes(), now);
        let replied: Vec<usize> = events(&mut log)
            .iter()
            .filter_map(|e| match e {
                LogEvent::Replied { to, json } => {
                    assert!(json.contains("\"seq\""), "{json}");
                    Some(to.conn)
                }
                _ => None,
            })
            .collect();
        assert_eq!(replied, [7, 9]);
        for seq in 1..=3 {
            log.on_input(SUB, &message(&channel, "e1", seq, "m"), now);
        }
        assert_eq!(seqs(&events(&mut log)), [1, 2, 3]);
    }
}
