//! The application modes on top of connections: chat, relay and echo.
//!
//! The event loop reports joins, leaves and messages by connection id; the app answers with
//! [`Action`]s. Every outgoing frame is encoded once here and shared by all its receivers.
//!
//! In chat mode a connection joins the room its URL path names (`/` is the default room);
//! messages and notices go to that room only, each with the room's next sequence number, and
//! a connection first receives the room's recent history, or what it missed since the cursor
//! it resumes from (`?since=SEQ&epoch=EPOCH`).
//!
//! Commit, then render: a message or notice is handed to the room's log as a draft (its JSON
//! without `seq` and `ts`, see [`crate::room::log`]); when the append completes, the log
//! queues a [`Committed`] event and [`App::on_committed`], the one way an event reaches
//! clients, stamps it, publishes it to the room's connections and answers the room's held long
//! polls. The in-process log completes at once, so [`App::commit`] drains the queue before it
//! returns; a log that completes later would be drained the same way when its reply is read.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::chat::{self, Presence, Stamp};
use crate::conn::Frame;
use crate::longpoll::{Waiter, Waiters};
use crate::proto::handshake::{Method, write_head};
use crate::proto::{CloseCode, OpCode, frame};
use crate::room::log::{
    Asker, Committed, Draft, HistoryLimits, Kind, Log, LogEvent, MemoryLog, now_ms,
};
use crate::room::{DEFAULT_ROOM, RoomError, RoomId, RoomLimits, Rooms, valid_name};
use crate::sio::{Recover, Request, SioConfig, SioServer};

/// How long a long-polling client counts as present after its last poll began: one wait
/// (`poll_wait`), plus this much (at most) to make the next request.
const GUEST_GRACE: Duration = Duration::from_secs(10);

/// How often departed long-polling clients are looked for.
const GUEST_SCAN: Duration = Duration::from_secs(1);

/// Presence notices per room: after a burst of `PRESENCE_BURST`, at most one per
/// `PRESENCE_INTERVAL`; changes in between are announced together, with the count then. A
/// class of people arriving at once still sees each arrival; churn in a room of N members
/// costs at most 4 N deliveries a second, and a person sees the count within 250 ms.
const PRESENCE_INTERVAL: Duration = Duration::from_millis(250);
const PRESENCE_BURST: u32 = 8;

/// How much faster than `--max-message-rate` a client may send for a moment: two seconds'
/// worth of messages at once (at the default, 20 in a row).
const MESSAGE_BURST_SECONDS: u32 = 2;

/// How long a `POST /send`, or a request waiting for its room to load from a shared log, is
/// held at most: a shared log answers or fails every append within its command timeout.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// The close reason of a client over `--max-message-rate` (§7.4.1: 1008, policy).
pub const RATE_LIMITED: &str = "too many messages";

const JSON_TYPE: &str = "application/json";
/// Every JSON answer: never cached, never sniffed as another type (a `<script>` tag).
const JSON_FIELDS: &str = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";

/// What the server does with messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// JSON chat: `{"name","msg"}` in, `{"type":"message",…}` to everyone, join/leave notices.
    Chat,
    /// Every message, verbatim, to every connected client.
    Relay,
    /// Every message back to its sender only (what the conformance suite needs).
    Echo,
}

/// Something the event loop must do for the app.
#[derive(Debug)]
pub enum Action {
    /// Queue `frame` to every open connection, except `except`.
    Broadcast {
        /// The encoded frame.
        frame: Frame,
        /// A connection to skip (the sender, with `--no-echo-sender`).
        except: Option<usize>,
    },
    /// Queue `frame` to every open member of a room (looked up by name when the action runs,
    /// so a room freed meanwhile gets nothing).
    Publish {
        /// The room's name.
        room: Rc<str>,
        /// The encoded frame.
        frame: Frame,
    },
    /// Answer a held HTTP request (a long poll) with a whole response.
    Respond {
        /// The connection.
        to: usize,
        /// Status line, fields and body.
        response: Vec<u8>,
    },
    /// Queue `frame` to one connection.
    Send {
        /// The receiver.
        to: usize,
        /// The encoded frame.
        frame: Frame,
    },
    /// Close one connection with a code (§7.4.1).
    Close {
        /// The connection.
        to: usize,
        /// Why.
        code: CloseCode,
        /// A short reason.
        reason: &'static str,
    },
}

/// The application state for one server.
#[derive(Debug)]
pub struct App {
    mode: Mode,
    echo_sender: bool,
    /// Open WebSocket connections.
    online: usize,
    /// Chat rooms (empty in the other modes).
    rooms: Rooms,
    /// Long polls waiting for their room's next event.
    waiters: Waiters,
    /// When to look for long-polling clients that stopped polling.
    guest_scan: Option<Instant>,
    /// How long a long poll waits for an event.
    poll_wait: Duration,
    /// Reused for JSON and frames, so a broadcast allocates only its shared frame.
    json: Vec<u8>,
    frame: Vec<u8>,
    /// Chat messages a connection may send a second (0: no limit): one per
    /// `message_interval`, `message_tolerance` ahead at most (a GCRA, the scheme of RFC 1459
    /// §8.10's flood control).
    message_rate: u32,
    message_interval: Option<Duration>,
    message_tolerance: Duration,
    /// Per connection (or socket.io session) that sent a chat message: when its next message
    /// is due (the GCRA's theoretical arrival time). Forgotten when it leaves.
    message_due: HashMap<usize, Instant>,
    /// Presence notices per room, by name (see [`PRESENCE_INTERVAL`]); a room's entry goes
    /// once it has nothing pending and its allowance is whole again.
    gates: HashMap<Rc<str>, Gate>,
    /// Reused for what the log tells.
    events: Vec<LogEvent>,
    /// The `POST /send` being handled, and the answer once its message is committed at once.
    replying: Option<Asker>,
    reply: Option<Vec<u8>>,
    /// The log is shared with other nodes: appends complete later, rooms load, presence
    /// counts every node.
    shared: bool,
    /// Counts connections and requests (see [`Asker`]): an answer that comes late must not
    /// reach a later connection with the same id.
    serial: u64,
    /// `POST /send` requests held for their commit, by connection.
    awaiting: HashMap<usize, u64>,
    /// Joins, polls and sends waiting for their room to load from a shared log, by room.
    deferred: HashMap<Rc<str>, Vec<Deferred>>,
    /// The earliest deadline of a deferred poll or send.
    deferred_due: Option<Instant>,
    /// When the earliest pending presence notice may go out.
    presence_due: Option<Instant>,
    /// Socket.IO clients (Engine.IO sessions on `/socket.io/`).
    sio: SioServer,
    /// Reused for what socket.io sockets ask of the rooms.
    sio_requests: Vec<Request>,
}

/// One room's presence notices: a GCRA over [`PRESENCE_INTERVAL`] with a burst of
/// [`PRESENCE_BURST`], the changes not yet announced, and the last notice sent.
#[derive(Debug, Default)]
struct Gate {
    /// When the next notice is due; one may go out while this is at most the tolerance ahead.
    due: Option<Instant>,
    /// Joins and leaves not yet announced, the latest change, and the count after it.
    pending: Option<(u32, u32, Presence, usize)>,
    /// The epoch and seq of the last notice committed (set by [`App::on_committed`]): the next
    /// one replaces it in the history if nothing came between, so churn never pushes messages
    /// out of the history.
    last: Option<(Rc<str>, u64)>,
}

impl Gate {
    fn tolerance() -> Duration {
        PRESENCE_INTERVAL * (PRESENCE_BURST - 1)
    }

    /// When a notice may next go out.
    fn ready_at(&self, now: Instant) -> Instant {
        self.due
            .and_then(|d| d.checked_sub(Self::tolerance()))
            .map_or(now, |at| at.max(now))
    }

    /// Spends one notice of the allowance at `now`.
    fn spend(&mut self, now: Instant) {
        self.due = Some(self.due.map_or(now, |d| d.max(now)) + PRESENCE_INTERVAL);
    }
}

/// What the app does with a plain HTTP request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Not the app's: the static routes answer it.
    Pass,
    /// This whole response, now.
    Now(Vec<u8>),
    /// Held: the app answers with [`Action::Respond`] by this time.
    Hold(Instant),
}

/// A request that waits for its room to load from a shared log.
#[derive(Debug)]
enum Deferred {
    /// A WebSocket client's welcome and catch-up, and its join notice.
    Join {
        conn: usize,
        since: Option<u64>,
        epoch: Option<Box<str>>,
    },
    /// `GET /poll`, answered 503 at `until` if the room has not loaded.
    Poll {
        conn: usize,
        query: Box<str>,
        foreign: bool,
        until: Instant,
    },
    /// `POST /send`, the same.
    Send {
        conn: usize,
        body: Box<[u8]>,
        until: Instant,
    },
    /// A socket.io socket's join (its CONNECT answer), and its join notice.
    SioJoin {
        session: usize,
        serial: u32,
        nsp: u8,
        recover: Option<Box<Recover>>,
    },
}

impl Deferred {
    fn conn(&self) -> usize {
        match self {
            Self::Join { conn, .. } | Self::Poll { conn, .. } | Self::Send { conn, .. } => *conn,
            Self::SioJoin { session, .. } => *session,
        }
    }

    fn until(&self) -> Option<Instant> {
        match self {
            Self::Join { .. } | Self::SioJoin { .. } => None,
            Self::Poll { until, .. } | Self::Send { until, .. } => Some(*until),
        }
    }
}

/// What a long poll's answer depends on: room name, epoch and cursor.
type AnswerKey = (Rc<str>, Rc<str>, u64);

/// A plain HTTP request, as the connection read it.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// `GET` or `POST`.
    pub method: Method,
    /// Path and query.
    pub target: &'a str,
    /// The body of a `POST`.
    pub body: &'a [u8],
    /// From another site's page the Origin policy does not admit (see `conn::Event::Request`).
    pub foreign: bool,
}

/// Where a resuming client left off, from its URL's query.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cursor<'a> {
    since: Option<u64>,
    epoch: Option<&'a str>,
}

/// Splits a request target into the room name and the resume cursor.
fn parse_target(target: &str) -> (&str, Cursor<'_>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = path.strip_prefix('/').unwrap_or(path);
    let name = if name.is_empty() { DEFAULT_ROOM } else { name };
    (name, parse_cursor(query))
}

fn parse_cursor(query: &str) -> Cursor<'_> {
    Cursor {
        since: query_param(query, "since").and_then(|v| v.parse().ok()),
        epoch: query_param(query, "epoch").filter(|v| !v.is_empty()),
    }
}

/// The first value of `key` in a query string (values are used as they are: every value the
/// server reads is a number or a `[A-Za-z0-9_.-]` name, which need no decoding).
pub(crate) fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key))
        .map(|(_, v)| v)
}

/// A whole JSON response; `extra` is more header lines.
fn json_response(status: u16, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 160);
    let fields = format!("{JSON_FIELDS}{extra}");
    write_head(status, JSON_TYPE, body.len(), &fields, &mut out);
    out.extend_from_slice(body);
    out
}

impl App {
    /// An app in `mode`; `echo_sender` says whether relay mode sends a message back to its
    /// sender; `rooms` bounds chat rooms and their history; a long poll waits `poll_wait`.
    pub fn new(mode: Mode, echo_sender: bool, rooms: RoomLimits, poll_wait: Duration) -> Self {
        Self {
            mode,
            echo_sender,
            online: 0,
            // The start time tells this run's room epochs from an earlier run's.
            rooms: Rooms::new(
                rooms.max_rooms,
                Box::new(MemoryLog::new(
                    HistoryLimits {
                        events: rooms.history,
                        bytes: rooms.history_bytes,
                    },
                    now_ms(),
                )),
            ),
            waiters: Waiters::default(),
            guest_scan: None,
            poll_wait,
            json: Vec::new(),
            frame: Vec::new(),
            message_rate: 0,
            message_interval: None,
            message_tolerance: Duration::ZERO,
            message_due: HashMap::new(),
            gates: HashMap::new(),
            events: Vec::new(),
            replying: None,
            reply: None,
            shared: false,
            serial: 0,
            awaiting: HashMap::new(),
            deferred: HashMap::new(),
            deferred_due: None,
            presence_due: None,
            sio: SioServer::new(SioConfig::new(mode)),
            sio_requests: Vec::new(),
        }
    }

    /// Serves socket.io clients as `config` says (namespaces, connect timeout).
    pub fn with_sio(mut self, config: SioConfig) -> Self {
        self.sio = SioServer::new(config);
        self
    }

    /// Keeps chat rooms in `log` instead of this process's memory (before any client).
    pub fn with_log(mut self, log: Box<dyn Log>) -> Self {
        self.shared = log.counts_presence();
        self.rooms.set_log(log);
        self
    }

    /// The Redis log, if rooms are kept in Redis, for the event loop to drive its sockets.
    pub fn redis(&mut self) -> Option<&mut crate::room::redis::RedisLog> {
        self.rooms.log.redis()
    }

    /// Engine.IO session `id` opened (see [`crate::sio`]); `query` is its handshake's query.
    pub fn on_eio_open(&mut self, id: usize, query: &str, now: Instant, out: &mut Vec<Action>) {
        self.sio.on_open(id, query, now, out);
        self.sio_requests(now, out);
    }

    /// A text `message` packet (its payload, without the `4`) from Engine.IO session `id`.
    pub fn on_eio_text(&mut self, id: usize, text: &str, now: Instant, out: &mut Vec<Action>) {
        self.sio.on_text(id, text, now, out);
        self.sio_requests(now, out);
    }

    /// A binary `message` packet from Engine.IO session `id`.
    pub fn on_eio_binary(&mut self, id: usize, data: &[u8], now: Instant, out: &mut Vec<Action>) {
        self.sio.on_binary(id, data, now, out);
        self.sio_requests(now, out);
    }

    /// Engine.IO session `id` closed.
    pub fn on_eio_close(&mut self, id: usize, out: &mut Vec<Action>) {
        self.message_due.remove(&id);
        self.sio.on_close(id, out);
        self.sio_requests(Instant::now(), out);
    }

    /// Does what socket.io sockets asked of the chat rooms, in order (answering may ask more:
    /// a socket over its message rate is disconnected, and so leaves its room).
    fn sio_requests(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut requests = std::mem::take(&mut self.sio_requests);
        loop {
            self.sio.take_requests(&mut requests);
            if requests.is_empty() {
                break;
            }
            for request in requests.drain(..) {
                match request {
                    Request::Join {
                        session,
                        serial,
                        nsp,
                        room,
                        recover,
                    } => self.sio_join(session, serial, nsp, &room, recover, out),
                    Request::Leave { room, announced } => self.sio_leave(room, announced, out),
                    Request::Event {
                        session,
                        serial,
                        nsp,
                        room,
                        draft,
                        ack,
                    } => {
                        if !self.within_rate(session, now) {
                            let msg =
                                format!("{RATE_LIMITED}: at most {} a second", self.message_rate);
                            self.sio.kick(session, serial, nsp, &msg, out);
                            continue;
                        }
                        let from = Some(Asker {
                            conn: session,
                            serial: u64::from(serial),
                        });
                        self.commit_body(room, draft, Kind::Sio { from, nsp, ack }, out);
                    }
                }
            }
        }
        self.sio_requests = requests;
    }

    /// A socket.io socket asks for room `name`: it counts in the room from now on, and joins
    /// it (is answered) once the room's log can be read.
    fn sio_join(
        &mut self,
        session: usize,
        serial: u32,
        nsp: u8,
        name: &str,
        recover: Option<Recover>,
        out: &mut Vec<Action>,
    ) {
        let room = match self.rooms.pin(name) {
            Ok(room) => room,
            Err(RoomError::InvalidName) => {
                return self
                    .sio
                    .refuse(session, serial, nsp, "invalid room name", out);
            }
            Err(RoomError::TooManyRooms) => {
                return self.sio.refuse(session, serial, nsp, "too many rooms", out);
            }
        };
        self.sio.placed(session, serial, nsp, room);
        if !self.rooms.log.ready(room) {
            let recover = recover.map(Box::new);
            let join = Deferred::SioJoin {
                session,
                serial,
                nsp,
                recover,
            };
            return self.defer(room, join);
        }
        self.sio_joined(session, serial, nsp, room, recover.as_ref(), out);
    }

    /// A socket.io socket's room can be read: it is answered, and its arrival announced.
    fn sio_joined(
        &mut self,
        session: usize,
        serial: u32,
        nsp: u8,
        room: RoomId,
        recover: Option<&Recover>,
        out: &mut Vec<Action>,
    ) {
        let log = &*self.rooms.log;
        if self
            .sio
            .joined(session, serial, nsp, room, log, recover, out)
        {
            let count = self.rooms.count(room);
            self.presence(room, Presence::Join, count, out);
        }
    }

    /// A socket.io socket left room `room` (`announced`: it had joined), as
    /// [`App::on_leave`] handles a WebSocket member's leaving.
    fn sio_leave(&mut self, room: RoomId, announced: bool, out: &mut Vec<Action>) {
        let name = self.rooms.shared_name(room);
        let count = self.rooms.count(room).saturating_sub(1);
        if announced {
            self.announce_leave(room, count, out);
        }
        self.rooms.unpin(room);
        self.wake_if_unheard(&name, out);
    }

    /// Announces a member's leaving, `count` being who is left here: at once when nobody is
    /// (other nodes' members hear of it now, with whatever the gate held back, or never, as
    /// the room may be freed here next), else through the room's presence gate.
    fn announce_leave(&mut self, room: RoomId, count: usize, out: &mut Vec<Action>) {
        if self.shared && count == 0 {
            self.announce_now(room, Presence::Leave, count, out);
        } else {
            self.presence(room, Presence::Leave, count, out);
        }
    }

    /// A room this node no longer holds (so no longer hears, with a shared log): polls held
    /// on it (without a client id, which would have kept it) poll again now rather than miss
    /// what comes.
    fn wake_if_unheard(&mut self, name: &Rc<str>, out: &mut Vec<Action>) {
        if self.shared && self.rooms.find(name).is_none() {
            let mut woken = Vec::new();
            self.waiters.take_room(name, &mut woken);
            if !woken.is_empty() {
                self.answer(woken, Instant::now(), out);
            }
        }
    }

    /// Appends the room store's figures to a `/metrics` body (nothing without one).
    pub fn render_store_metrics(&mut self, out: &mut String) {
        if let Some(store) = self.redis() {
            store.render_metrics(out);
        }
    }

    /// Handles what the room log has to tell (after its store's replies were read).
    pub fn on_store(&mut self, out: &mut Vec<Action>) {
        self.take_events(out);
    }

    /// Why the server cannot serve its clients fully now (e.g. its store is unreachable),
    /// for `/healthz`; `None` when all is well.
    pub fn health(&self) -> Option<String> {
        self.rooms.log.health()
    }

    /// Limits each connection to `per_second` chat messages a second, with a burst of
    /// [`MESSAGE_BURST_SECONDS`] worth; over it, an `error` and close 1008.
    pub fn with_message_rate(mut self, per_second: u32) -> Self {
        let per_second = per_second.max(1);
        self.message_rate = per_second;
        let interval = Duration::from_secs(1) / per_second;
        self.message_interval = Some(interval);
        let burst = per_second.saturating_mul(MESSAGE_BURST_SECONDS);
        self.message_tolerance = interval.saturating_mul(burst.saturating_sub(1));
        self
    }

    /// Open WebSocket connections.
    pub fn online(&self) -> usize {
        self.online
    }

    /// The open members of a room, by name.
    pub fn members(&self, room: &str) -> &[usize] {
        self.rooms.members_by_name(room)
    }

    /// Connection `id` completed its handshake for `target` (path and query).
    pub fn on_join(&mut self, id: usize, target: &str, out: &mut Vec<Action>) {
        self.online += 1;
        if self.mode != Mode::Chat {
            return;
        }
        let (name, cursor) = parse_target(target);
        self.serial += 1;
        let room = match self.rooms.join(name, id, self.serial as u32) {
            Ok(room) => room,
            // §7.4.1: 1008 for a request that violates policy; 1013 "Try Again Later".
            Err(RoomError::InvalidName) => {
                return out.push(Action::Close {
                    to: id,
                    code: CloseCode::POLICY,
                    reason: "invalid room name",
                });
            }
            Err(RoomError::TooManyRooms) => {
                return out.push(Action::Close {
                    to: id,
                    code: CloseCode::TRY_AGAIN_LATER,
                    reason: "too many rooms",
                });
            }
        };
        if !self.rooms.log.ready(room) {
            let join = Deferred::Join {
                conn: id,
                since: cursor.since,
                epoch: cursor.epoch.map(Into::into),
            };
            self.defer(room, join);
            return;
        }
        self.catch_up(id, room, &cursor, out);
        let count = self.rooms.count(room);
        self.presence(room, Presence::Join, count, out);
    }

    /// Keeps a request until its room has loaded from the shared log.
    fn defer(&mut self, room: RoomId, request: Deferred) {
        if let Some(until) = request.until() {
            self.deferred_due = Some(self.deferred_due.map_or(until, |d| d.min(until)));
        }
        let name = self.rooms.shared_name(room);
        self.deferred.entry(name).or_default().push(request);
    }

    /// Runs the requests that waited for room `name` to load.
    fn on_ready(&mut self, name: &Rc<str>, out: &mut Vec<Action>) {
        let Some(requests) = self.deferred.remove(name) else {
            return;
        };
        let now = Instant::now();
        for request in requests {
            match request {
                Deferred::Join { conn, since, epoch } => {
                    let Some(room) = self.rooms.membership.room_of(conn) else {
                        continue; // Gone meanwhile.
                    };
                    let cursor = Cursor {
                        since,
                        epoch: epoch.as_deref(),
                    };
                    self.catch_up(conn, room, &cursor, out);
                    let count = self.rooms.count(room);
                    self.presence(room, Presence::Join, count, out);
                }
                Deferred::Poll {
                    conn,
                    query,
                    foreign,
                    ..
                } => {
                    let reply = self.poll(conn, name, &query, now, foreign, out);
                    self.answer_later(conn, reply, out);
                }
                Deferred::Send { conn, body, .. } => {
                    let reply = self.send(conn, name, &body, now, out);
                    self.answer_later(conn, reply, out);
                }
                Deferred::SioJoin {
                    session,
                    serial,
                    nsp,
                    recover,
                } => {
                    if let Some(room) = self.rooms.find(name) {
                        self.sio_joined(session, serial, nsp, room, recover.as_deref(), out);
                    }
                }
            }
        }
    }

    /// Sends a deferred request's answer, if it has one now (else it was held again).
    fn answer_later(&mut self, conn: usize, reply: Reply, out: &mut Vec<Action>) {
        if let Reply::Now(response) = reply {
            out.push(Action::Respond { to: conn, response });
        }
    }

    /// Sends a joining connection the welcome, any gap notice and the history it should see.
    fn catch_up(&mut self, id: usize, room: RoomId, cursor: &Cursor<'_>, out: &mut Vec<Action>) {
        // A cursor from another epoch, or past the room's last event, counts nothing here: the
        // room started over since (or the cursor is made up). Long polls treat it the same.
        let last = self.rooms.log.last_seq(room);
        let valid = cursor
            .epoch
            .is_none_or(|e| *e == *self.rooms.log.epoch(room))
            && cursor.since.is_none_or(|s| s <= last);
        let since = if valid { cursor.since } else { None };
        let reset = !valid && cursor.since.is_some();
        let mut scratch = std::mem::take(&mut self.frame);
        self.replay(room, since, reset, &mut |json| {
            let frame = encode(&mut scratch, OpCode::Text, json);
            out.push(Action::Send { to: id, frame });
        });
        self.frame = scratch;
    }

    /// What a client with cursor `since` is sent first, one JSON object at a time: the
    /// welcome; a gap notice if events after `since` are gone (or, with `reset`, if the room
    /// started over since the client's cursor); then the kept events after `since`. With no
    /// cursor these are all kept events, marked as history; a resuming client gets what it
    /// missed as it was sent.
    fn replay(
        &mut self,
        room: RoomId,
        since: Option<u64>,
        reset: bool,
        each: &mut dyn FnMut(&[u8]),
    ) {
        let log = &self.rooms.log;
        let epoch = log.epoch(room);
        chat::welcome(
            self.rooms.name(room),
            &epoch,
            log.last_seq(room),
            &mut self.json,
        );
        each(&self.json);
        let read = log.read(room, since);
        let gap = if reset {
            Some(None)
        } else {
            read.gap.map(Some)
        };
        if let Some(range) = gap {
            chat::gap(range, &mut self.json);
            each(&self.json);
        }
        for (_, json) in read.events {
            if since.is_none() {
                chat::history(json, &mut self.json);
                each(&self.json);
            } else {
                each(json.as_bytes());
            }
        }
    }

    /// A plain HTTP request: long polling (`GET /poll`) and sending (`POST /send`) in chat
    /// mode; anything else passes to the static routes.
    pub fn on_http(
        &mut self,
        id: usize,
        req: HttpRequest<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Reply {
        let HttpRequest {
            method,
            target,
            body,
            foreign,
        } = req;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if self.mode != Mode::Chat {
            return Reply::Pass;
        }
        let name = query_param(query, "room").filter(|n| !n.is_empty());
        let name = name.unwrap_or(DEFAULT_ROOM);
        let valid = valid_name(name);
        match (method, path) {
            (Method::Get, "/poll") if valid => self.poll(id, name, query, now, foreign, out),
            (Method::Post, "/send") if valid => self.send(id, name, body, now, out),
            (Method::Get, "/poll") | (Method::Post, "/send") => {
                self.http_error(400, "", "invalid room name")
            }
            // RFC 9110 §15.5.6: a 405 lists the methods the target has.
            (_, "/poll") => self.http_error(405, "Allow: GET\r\n", "use GET /poll"),
            (_, "/send") => self.http_error(405, "Allow: POST\r\n", "use POST /send"),
            _ => Reply::Pass,
        }
    }

    /// The HTTP answer to a room that cannot be opened: 400 for a bad name, 503 (try later)
    /// when every room slot is taken by a room with members.
    fn room_refused(&mut self, e: RoomError) -> Reply {
        match e {
            RoomError::InvalidName => self.http_error(400, "", "invalid room name"),
            RoomError::TooManyRooms => self.http_error(503, "Retry-After: 5\r\n", "too many rooms"),
        }
    }

    /// `{"type":"error","msg":…}` with `status`; `extra` is more header lines.
    fn http_error(&mut self, status: u16, extra: &str, msg: &str) -> Reply {
        chat::error(msg, &mut self.json);
        Reply::Now(json_response(status, extra, &self.json))
    }

    /// `GET /poll?room=R&since=SEQ&epoch=EPOCH&client=ID`: what the room has after `since`,
    /// now if there is any, else as soon as there is (or an empty answer after `poll_wait`).
    ///
    /// Only a poll that is held (its cursor is the room's last event, or the room does not
    /// exist yet and the cursor is 0) can make a room or announce its client as present: a
    /// request answered at once creates nothing, so cheap one-shot requests cannot fill
    /// `--max-rooms` or the history. A cursor past the room's last event is a bad cursor,
    /// answered like one from another epoch. `foreign` (a cross-site request from a page the
    /// Origin policy does not admit) may read, but not count as present.
    fn poll(
        &mut self,
        id: usize,
        name: &str,
        query: &str,
        now: Instant,
        foreign: bool,
        out: &mut Vec<Action>,
    ) -> Reply {
        let cursor = parse_cursor(query);
        let mut existing = self.rooms.find(name);
        if self.shared {
            // The room's state is in the store: held here (without making it there) to read it.
            let room = match existing.map_or_else(|| self.rooms.open(name), Ok) {
                Ok(room) => room,
                Err(e) => return self.room_refused(e),
            };
            if !self.rooms.log.ready(room) {
                let until = now + self.poll_wait.min(STORE_WAIT);
                let poll = Deferred::Poll {
                    conn: id,
                    query: query.into(),
                    foreign,
                    until,
                };
                self.defer(room, poll);
                // Answered with a 503 at `until`, or, once the room loads, held again for
                // up to a whole wait: the connection waits for that too.
                return Reply::Hold(until + self.poll_wait);
            }
            existing = Some(room);
        }
        let last = existing.map_or(0, |room| self.rooms.log.last_seq(room));
        let same_epoch = match existing {
            Some(room) => cursor
                .epoch
                .is_none_or(|e| *e == *self.rooms.log.epoch(room)),
            // A room not made yet has the epoch "" (parsed as none) and nothing in it.
            None => cursor.epoch.is_none(),
        };
        let guest = query_param(query, "client").filter(|g| valid_name(g));
        if guest.is_some() && foreign {
            return self.http_error(403, "", "a cross-site page cannot poll as present");
        }
        match cursor.since {
            // Up to date: held below.
            Some(since) if same_epoch && since == last => {}
            // Behind: what the client missed, at once.
            Some(since) if same_epoch && since < last => {
                let body = match existing {
                    Some(room) => self.poll_body(room, Some(since), false),
                    None => self.unmade_room_body(name, false),
                };
                return Reply::Now(json_response(200, "", &body));
            }
            // No cursor: the history, at once. Another epoch's cursor, or one past the last
            // event (made up, or from a room since freed): a gap notice and the history.
            _ => {
                let reset = cursor.since.is_some();
                let body = match existing {
                    Some(room) => self.poll_body(room, None, reset),
                    None => self.unmade_room_body(name, reset),
                };
                return Reply::Now(json_response(200, "", &body));
            }
        }
        let room = match existing.map_or_else(|| self.rooms.open(name), Ok) {
            Ok(room) => room,
            Err(e) => return self.room_refused(e),
        };
        let deadline = now + self.poll_wait;
        if let Some(guest) = guest {
            // Present through the wait, and a little after it ends (time to poll again).
            let until = deadline + GUEST_GRACE.min(self.poll_wait);
            if self.rooms.presence.touch_guest(room, guest, until) {
                // Published before the poll is held, so the arrival does not answer its own
                // poll at once: the client sees its join with the next event or at the end
                // of the wait.
                let count = self.rooms.count(room);
                self.presence(room, Presence::Join, count, out);
            }
            self.guest_scan.get_or_insert(now + GUEST_SCAN);
        }
        let (name, epoch) = (self.rooms.shared_name(room), self.rooms.log.epoch(room));
        let guest = guest.map(Rc::from);
        self.waiters.hold(id, name, epoch, guest, last, deadline);
        Reply::Hold(deadline)
    }

    /// The answer for a room that does not exist: a welcome with no epoch and nothing in it,
    /// after a restart notice if the client had a cursor in an earlier incarnation.
    fn unmade_room_body(&mut self, name: &str, had_cursor: bool) -> Vec<u8> {
        let mut body = b"[".to_vec();
        chat::welcome(name, "", 0, &mut self.json);
        body.extend_from_slice(&self.json);
        if had_cursor {
            chat::gap(None, &mut self.json);
            body.push(b',');
            body.extend_from_slice(&self.json);
        }
        body.push(b']');
        body
    }

    /// A long poll's answer: what [`App::replay`] gives, as one JSON array.
    fn poll_body(&mut self, room: RoomId, since: Option<u64>, reset: bool) -> Vec<u8> {
        let mut body = b"[".to_vec();
        self.replay(room, since, reset, &mut |json| {
            if body.len() > 1 {
                body.push(b',');
            }
            body.extend_from_slice(json);
        });
        body.push(b']');
        body
    }

    /// Answers held polls: each gets what its room has after its cursor. A client whose poll
    /// is answered counts as present only a little longer (time to poll again).
    fn answer(&mut self, waiters: Vec<(usize, Waiter)>, now: Instant, out: &mut Vec<Action>) {
        // The polls of one room usually share one cursor: build that answer once. The body
        // depends on the epoch too: a room freed and made again starts its seq over.
        let mut cached: Option<(AnswerKey, Vec<u8>)> = None;
        let grace = now + GUEST_GRACE.min(self.poll_wait);
        for (conn, w) in waiters {
            let room = self.rooms.find(&w.room);
            if let (Some(room), Some(guest)) = (room, &w.guest) {
                self.rooms.presence.shorten_guest(room, guest, grace);
            }
            let response = match &cached {
                Some(((name, epoch, since), response))
                    if *name == w.room && *epoch == w.epoch && *since == w.since =>
                {
                    response.clone()
                }
                _ => {
                    let body = match room {
                        Some(room) if *self.rooms.log.epoch(room) == *w.epoch => {
                            self.poll_body(room, Some(w.since), false)
                        }
                        Some(room) => self.poll_body(room, None, true),
                        // Freed here, but kept in the store: no news; the next poll reads it.
                        None if self.shared => {
                            let mut body = b"[".to_vec();
                            chat::welcome(&w.room, &w.epoch, w.since, &mut self.json);
                            body.extend_from_slice(&self.json);
                            body.push(b']');
                            body
                        }
                        None => self.unmade_room_body(&w.room, true),
                    };
                    let response = json_response(200, "", &body);
                    cached = Some(((w.room, w.epoch, w.since), response.clone()));
                    response
                }
            };
            out.push(Action::Respond { to: conn, response });
        }
    }

    /// `POST /send?room=R` with `{"name","msg"}`: published like a WebSocket client's message,
    /// to a room that exists (someone is in it, or it has history); answered with the message
    /// as committed (with its `seq`).
    fn send(
        &mut self,
        id: usize,
        name: &str,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Reply {
        let room = match self.rooms.find(name) {
            Some(room) => room,
            None if self.shared => match self.rooms.open(name) {
                Ok(room) => room,
                Err(e) => return self.room_refused(e),
            },
            None => return self.http_error(404, "", "no such room: poll it first"),
        };
        if !self.rooms.log.ready(room) {
            let until = now + STORE_WAIT;
            let body = body.into();
            self.defer(
                room,
                Deferred::Send {
                    conn: id,
                    body,
                    until,
                },
            );
            // Answered with a 503 at `until`, or, once the room loads, held again for its
            // commit: the connection waits for that too.
            return Reply::Hold(until + STORE_WAIT);
        }
        if self.shared && self.rooms.log.epoch(room).is_empty() {
            // Nobody has been in the room anywhere (or not since it expired).
            return self.http_error(404, "", "no such room: poll it first");
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return self.http_error(400, "", "body is not UTF-8");
        };
        if chat::draft_text(text, &mut self.json).is_err() {
            return Reply::Now(json_response(400, "", &self.json));
        }
        self.serial += 1;
        let asker = Asker {
            conn: id,
            serial: self.serial,
        };
        let kind = Kind::Message {
            reply: Some(asker),
            from: None,
        };
        self.replying = Some(asker);
        self.commit(room, kind, out);
        self.replying = None;
        if let Some(response) = self.reply.take() {
            return Reply::Now(response);
        }
        // Committed later (a shared log): answered with `Action::Respond` then, or a 503.
        self.awaiting.insert(id, asker.serial);
        Reply::Hold(now + STORE_WAIT)
    }

    /// A connection is gone: a long poll it held waits no more, and its client counts as
    /// present only a little longer (time to poll again).
    pub fn on_drop(&mut self, id: usize, now: Instant) {
        self.awaiting.remove(&id);
        if !self.deferred.is_empty() {
            for requests in self.deferred.values_mut() {
                // Before the id is reused: a new connection must not get this one's answer.
                requests.retain(|r| r.conn() != id);
            }
            self.deferred.retain(|_, r| !r.is_empty());
        }
        if let Some(w) = self.waiters.drop_conn(id)
            && let (Some(guest), Some(room)) = (&w.guest, self.rooms.find(&w.room))
        {
            self.rooms
                .presence
                .shorten_guest(room, guest, now + GUEST_GRACE.min(self.poll_wait));
        }
    }

    /// The earliest time [`App::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.waiters.next_deadline(),
            self.guest_scan,
            self.deferred_due,
            self.sio.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Answers long polls that waited `poll_wait` with no event, and announces long-polling
    /// clients that stopped polling.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut expired = Vec::new();
        self.waiters.take_expired(now, &mut expired);
        self.answer(expired, now, out);
        if self.deferred_due.is_some_and(|d| d <= now) {
            self.expire_deferred(now, out);
        }
        if self.sio.poll_timeout().is_some_and(|d| d <= now) {
            self.sio.handle_timeout(now, out);
            self.sio_requests(now, out);
        }
        if self.guest_scan.is_some_and(|t| t <= now) {
            let mut gone = Vec::new();
            self.rooms.presence.expire_guests(now, &mut gone);
            // One notice per departure, counting down to who is left.
            for (room, n) in gone {
                let left = self.rooms.count(room);
                for k in (0..n).rev() {
                    self.presence(room, Presence::Leave, left + k, out);
                }
            }
            self.guest_scan = self.rooms.presence.has_guests().then_some(now + GUEST_SCAN);
        }
    }

    /// Answers 503 to deferred polls and sends whose room did not load in time.
    fn expire_deferred(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut late = Vec::new();
        let mut next: Option<Instant> = None;
        for requests in self.deferred.values_mut() {
            requests.retain(|r| match r.until() {
                Some(until) if until <= now => {
                    late.push(r.conn());
                    false
                }
                Some(until) => {
                    next = Some(next.map_or(until, |n| n.min(until)));
                    true
                }
                None => true,
            });
        }
        self.deferred.retain(|_, r| !r.is_empty());
        self.deferred_due = next;
        for conn in late {
            if let Reply::Now(response) = self.unavailable() {
                out.push(Action::Respond { to: conn, response });
            }
        }
    }

    /// 503 naming why the store cannot answer.
    fn unavailable(&mut self) -> Reply {
        let why = self
            .health()
            .unwrap_or_else(|| "room store did not answer".into());
        self.http_error(503, "Retry-After: 5\r\n", &why)
    }

    /// The server is stopping: every held poll gets its answer now rather than a reset.
    pub fn on_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut all = Vec::new();
        self.waiters.take_all(&mut all);
        self.answer(all, now, out);
    }

    /// A connection stopped being open.
    pub fn on_leave(&mut self, id: usize, out: &mut Vec<Action>) {
        self.online = self.online.saturating_sub(1);
        self.message_due.remove(&id);
        if let Some(room) = self.rooms.membership.room_of(id) {
            let count = self.rooms.count(room).saturating_sub(1);
            let name = self.rooms.shared_name(room);
            let announced = !self.deferred.get(&name).is_some_and(|requests| {
                requests
                    .iter()
                    .any(|r| matches!(r, Deferred::Join { conn, .. } if *conn == id))
            });
            if !announced {
                // Its join waited for the room to load and was never announced: nor is this.
                if let Some(requests) = self.deferred.get_mut(&name) {
                    requests.retain(|r| r.conn() != id);
                }
                self.deferred.retain(|_, r| !r.is_empty());
            } else {
                self.announce_leave(room, count, out);
            }
            self.rooms.leave(id);
            self.wake_if_unheard(&name, out);
        }
    }

    /// A text message from connection `id`, received at `now`.
    pub fn on_text(&mut self, id: usize, text: &str, now: Instant, out: &mut Vec<Action>) {
        match self.mode {
            Mode::Chat => {
                let Some(room) = self.rooms.membership.room_of(id) else {
                    return; // Refused a room; its close is under way.
                };
                if !self.within_rate(id, now) {
                    let msg = format!("{RATE_LIMITED}: at most {} a second", self.message_rate);
                    chat::error(&msg, &mut self.json);
                    let frame = encode(&mut self.frame, OpCode::Text, &self.json);
                    out.push(Action::Send { to: id, frame });
                    // §7.4.1: 1008 for a message that violates policy.
                    return out.push(Action::Close {
                        to: id,
                        code: CloseCode::POLICY,
                        reason: RATE_LIMITED,
                    });
                }
                if chat::draft_text(text, &mut self.json).is_ok() {
                    let from = self.rooms.membership.serial(id).map(|serial| Asker {
                        conn: id,
                        serial: u64::from(serial),
                    });
                    let kind = Kind::Message { reply: None, from };
                    self.commit(room, kind, out);
                } else {
                    let frame = encode(&mut self.frame, OpCode::Text, &self.json);
                    out.push(Action::Send { to: id, frame });
                }
            }
            _ => self.relay(id, OpCode::Text, text.as_bytes(), out),
        }
    }

    /// A binary message from connection `id`.
    pub fn on_binary(&mut self, id: usize, data: &[u8], out: &mut Vec<Action>) {
        match self.mode {
            // §7.4.1: 1003 for "a type of data it cannot accept".
            Mode::Chat => out.push(Action::Close {
                to: id,
                code: CloseCode::UNSUPPORTED,
                reason: "chat takes JSON text messages",
            }),
            _ => self.relay(id, OpCode::Binary, data, out),
        }
    }

    fn relay(&mut self, id: usize, opcode: OpCode, payload: &[u8], out: &mut Vec<Action>) {
        let frame = encode(&mut self.frame, opcode, payload);
        out.push(match self.mode {
            Mode::Echo => Action::Send { to: id, frame },
            _ => Action::Broadcast {
                frame,
                except: (!self.echo_sender).then_some(id),
            },
        });
    }

    /// Whether connection `id` may send a chat message at `now` (and counts it if so).
    fn within_rate(&mut self, id: usize, now: Instant) -> bool {
        let Some(interval) = self.message_interval else {
            return true;
        };
        let due = self.message_due.entry(id).or_insert(now);
        let at = (*due).max(now);
        if at > now + self.message_tolerance {
            return false;
        }
        *due = at + interval;
        true
    }

    /// Hands the draft in `self.json` (an event without `seq` and `ts`) to the room's log,
    /// then sends on every event the log has committed (the in-process log: this one, now).
    fn commit(&mut self, room: RoomId, kind: Kind, out: &mut Vec<Action>) {
        let body = std::str::from_utf8(&self.json).unwrap_or_default().into();
        self.commit_body(room, body, kind, out);
    }

    /// Hands the draft `body` to the room's log, and sends on what the log has committed.
    fn commit_body(&mut self, room: RoomId, body: Rc<str>, kind: Kind, out: &mut Vec<Action>) {
        self.rooms.touch(room);
        self.rooms.log.append(room, Draft { body, kind });
        self.take_events(out);
    }

    /// Handles what the room log has to tell, in order: committed events through
    /// [`App::on_committed`], rooms loaded, appends answered or failed.
    fn take_events(&mut self, out: &mut Vec<Action>) {
        let mut events = std::mem::take(&mut self.events);
        self.rooms.log.take_events(&mut events);
        for event in events.drain(..) {
            match event {
                LogEvent::Committed(event) => self.on_committed(event, out),
                LogEvent::Ready(name) => self.on_ready(&name, out),
                LogEvent::Restarted(name) => self.on_restarted(&name, out),
                LogEvent::Lost { room, from, to } => {
                    chat::gap(Some((from, to)), &mut self.json);
                    let frame = encode(&mut self.frame, OpCode::Text, &self.json);
                    out.push(Action::Publish { room, frame });
                }
                LogEvent::Acked { to, nsp, ack } => {
                    let serial = u32::try_from(to.serial).unwrap_or(u32::MAX);
                    self.sio.ack(to.conn, serial, nsp, ack, out);
                }
                LogEvent::Replied { to, json } => {
                    let response = json_response(200, "", json.as_bytes());
                    if self.replying == Some(to) {
                        self.reply = Some(response);
                    } else if self.awaiting.get(&to.conn) == Some(&to.serial) {
                        self.awaiting.remove(&to.conn);
                        out.push(Action::Respond {
                            to: to.conn,
                            response,
                        });
                    }
                }
                LogEvent::Failed { draft, why, .. } => self.on_failed(&draft, &why, out),
            }
        }
        // A handler that appends (a deferred join's notice) took what that completed itself.
        self.events = events;
    }

    /// A draft the log could not commit: its sender is told (never a silent drop).
    fn on_failed(&mut self, draft: &Draft, why: &str, out: &mut Vec<Action>) {
        let msg = format!("not sent: {why}");
        if let Kind::Sio {
            from: Some(to),
            nsp,
            ..
        } = draft.kind
        {
            // Not acknowledged: a client emitting with a timeout and retries sends it again.
            let serial = u32::try_from(to.serial).unwrap_or(u32::MAX);
            return self.sio.error(to.conn, serial, nsp, &msg, out);
        }
        let Kind::Message { reply, from } = draft.kind else {
            return; // A notice: the store's count is set again when it is back.
        };
        if let Some(to) = from
            && self.rooms.membership.serial(to.conn).map(u64::from) == Some(to.serial)
        {
            chat::error(&msg, &mut self.json);
            let frame = encode(&mut self.frame, OpCode::Text, &self.json);
            out.push(Action::Send { to: to.conn, frame });
        }
        if let Some(to) = reply {
            let response = {
                chat::error(&msg, &mut self.json);
                json_response(503, "Retry-After: 5\r\n", &self.json)
            };
            if self.replying == Some(to) {
                self.reply = Some(response);
            } else if self.awaiting.get(&to.conn) == Some(&to.serial) {
                self.awaiting.remove(&to.conn);
                out.push(Action::Respond {
                    to: to.conn,
                    response,
                });
            }
        }
    }

    /// Room `name` started over in the store: its members get the new welcome and a restart
    /// notice (their cursors mean nothing now), its held polls their answer.
    fn on_restarted(&mut self, name: &Rc<str>, out: &mut Vec<Action>) {
        let Some(room) = self.rooms.find(name) else {
            return;
        };
        let log = &self.rooms.log;
        chat::welcome(name, &log.epoch(room), log.last_seq(room), &mut self.json);
        let frame = encode(&mut self.frame, OpCode::Text, &self.json);
        out.push(Action::Publish {
            room: name.clone(),
            frame,
        });
        chat::gap(None, &mut self.json);
        let frame = encode(&mut self.frame, OpCode::Text, &self.json);
        out.push(Action::Publish {
            room: name.clone(),
            frame,
        });
        let mut woken = Vec::new();
        self.waiters.take_room(name, &mut woken);
        if !woken.is_empty() {
            self.answer(woken, Instant::now(), out);
        }
    }

    /// The one path from a room's log to its clients: renders a committed event (its draft
    /// with `seq` and `ts`), publishes it to the room's connections, answers the room's
    /// waiting long polls, and for a `POST /send` keeps the answer; a presence notice becomes
    /// the one the room's next notice may replace.
    fn on_committed(&mut self, event: Committed, out: &mut Vec<Action>) {
        let Committed {
            room,
            epoch,
            seq,
            ts,
            draft,
        } = event;
        chat::stamp(&draft.body, Stamp { seq, ts }, false, &mut self.json);
        match draft.kind {
            Kind::Message { .. } | Kind::Sio { .. } => {}
            Kind::Notice { .. } => {
                if let Some(gate) = self.gates.get_mut(&room) {
                    gate.last = Some((epoch.clone(), seq));
                }
            }
        }
        let frame = encode(&mut self.frame, OpCode::Text, &self.json);
        out.push(Action::Publish {
            room: room.clone(),
            frame,
        });
        // Socket.IO sockets get a socket.io event, rendered for them (see `crate::sio::chat`)
        // with its offset; the chat's own messages and notices are not for them.
        if let Some(id) = self.rooms.find(&room) {
            let json = std::str::from_utf8(&self.json).unwrap_or_default();
            self.sio.publish(id, &epoch, seq, json, out);
        }
        let mut woken = Vec::new();
        self.waiters.take_room(&room, &mut woken);
        if !woken.is_empty() {
            self.answer(woken, Instant::now(), out);
        }
    }

    /// Announces a join or leave (`count`: who is in the room after it): at once while the
    /// room's presence allowance lasts, else with the changes after it, when
    /// [`App::flush_presence`] is next called after [`App::presence_due`].
    fn presence(&mut self, room: RoomId, event: Presence, count: usize, out: &mut Vec<Action>) {
        // The clock is read here, as the log reads it for `ts`, so that callers stay as they are.
        let now = Instant::now();
        let name = self.rooms.shared_name(room);
        let gate = self.gates.entry(name.clone()).or_default();
        let (joins, leaves) = match event {
            Presence::Join => (1, 0),
            Presence::Leave => (0, 1),
        };
        let pending = match gate.pending.take() {
            Some((j, l, _, _)) => (j + joins, l + leaves, event, count),
            None if gate.ready_at(now) <= now => {
                gate.spend(now);
                // Looked at again once its allowance is whole, to be forgotten then: a room
                // that never needs holding back must not keep its entry for ever.
                if let Some(due) = gate.due {
                    self.presence_due = Some(self.presence_due.map_or(due, |d| d.min(due)));
                }
                return self.announce(&name, (joins, leaves, event, count), out);
            }
            None => (joins, leaves, event, count),
        };
        gate.pending = Some(pending);
        let at = gate.ready_at(now);
        self.presence_due = Some(self.presence_due.map_or(at, |d| d.min(at)));
    }

    /// Announces a join or leave at once, with whatever changes the room's gate held back.
    fn announce_now(&mut self, room: RoomId, event: Presence, count: usize, out: &mut Vec<Action>) {
        let name = self.rooms.shared_name(room);
        let gate = self.gates.entry(name.clone()).or_default();
        let (joins, leaves) = match event {
            Presence::Join => (1, 0),
            Presence::Leave => (0, 1),
        };
        let (joins, leaves) = match gate.pending.take() {
            Some((j, l, _, _)) => (j + joins, l + leaves),
            None => (joins, leaves),
        };
        gate.spend(Instant::now());
        self.announce(&name, (joins, leaves, event, count), out);
    }

    /// When [`App::flush_presence`] has a notice to send.
    pub fn presence_due(&self) -> Option<Instant> {
        self.presence_due
    }

    /// Sends the presence notices that are due, each with every change since the room's
    /// last one; forgets rooms whose allowance is whole again.
    pub fn flush_presence(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.presence_due.is_none_or(|d| d > now) {
            return;
        }
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for (name, gate) in &mut self.gates {
            let Some(pending) = gate.pending else {
                // Nothing to send: come back when its allowance is whole, to forget it.
                if let Some(due) = gate.due.filter(|d| *d > now) {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
                continue;
            };
            let at = gate.ready_at(now);
            if at <= now {
                gate.pending = None;
                gate.spend(now);
                ready.push((name.clone(), pending));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.presence_due = next;
        for (name, pending) in ready {
            self.announce(&name, pending, out);
        }
        self.gates
            .retain(|_, g| g.pending.is_some() || g.due.is_some_and(|d| d > now));
    }

    /// Publishes one presence notice for `joins` and `leaves`, the latest being `event` with
    /// `count` after it, replacing the room's previous notice in the history if nothing came
    /// between. A room gone meanwhile has nobody to tell.
    fn announce(
        &mut self,
        name: &Rc<str>,
        (joins, leaves, event, count): (u32, u32, Presence, usize),
        out: &mut Vec<Action>,
    ) {
        let Some(room) = self.rooms.find(name) else {
            return;
        };
        // The previous notice, if it is in this epoch: the log drops it if it is still the
        // room's newest event when this one is appended.
        let epoch = self.rooms.log.epoch(room);
        let replaces = self
            .gates
            .get(name)
            .and_then(|g| g.last.as_ref())
            .filter(|(e, _)| *e == epoch)
            .map(|&(_, seq)| seq);
        // A shared log sums every node's count into the notice; `count` is this node's.
        let shown = if self.shared { chat::COUNT_SLOT } else { count };
        chat::presence_draft(event, (joins, leaves), shown, &mut self.json);
        self.commit(
            room,
            Kind::Notice {
                replaces,
                here: count,
            },
            out,
        );
    }
}

/// Encodes one server frame into a shared buffer, using `scratch` for the encoding; its
/// compressed form is made later, once, if a receiver needs it.
fn encode(scratch: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) -> Frame {
    scratch.clear();
    frame::encode_frame(opcode, payload, scratch);
    Frame::new(Rc::from(&scratch[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::redis::RedisLog;

    /// An app in chat mode on a Redis log whose links are up and set up.
    fn shared(poll_wait: Duration, now: Instant) -> App {
        let limits = RoomLimits {
            max_rooms: 10,
            history: 10,
            history_bytes: 1000,
        };
        let target = crate::redis::url::parse("redis://127.0.0.1:6379").unwrap();
        let history = HistoryLimits {
            events: 10,
            bytes: 1000,
        };
        let log = RedisLog::new(target, "n1", history, now);
        let mut app = App::new(Mode::Chat, true, limits, poll_wait).with_log(Box::new(log));
        let redis = app.redis().unwrap();
        redis.on_connected(0, now);
        // Set-up, the beat, the counts written.
        redis.on_input(0, b"+OK\r\n+OK\r\n*2\r\n:1\r\n*0\r\n:1\r\n", now);
        redis.on_connected(1, now);
        redis.on_input(1, b"+OK\r\n", now);
        app
    }

    /// Room `a` loads, empty and never made.
    fn load_a(app: &mut App, now: Instant, out: &mut Vec<Action>) {
        let redis = app.redis().unwrap();
        redis.on_input(
            1,
            b"*3\r\n$9\r\nsubscribe\r\n$13\r\nwsrelay:0:{a}\r\n:1\r\n",
            now,
        );
        redis.on_input(0, b"*4\r\n$0\r\n\r\n$1\r\n0\r\n$1\r\n0\r\n*0\r\n", now);
        app.on_store(out);
    }

    #[test]
    fn a_poll_held_on_a_room_freed_here_is_told_no_news_at_once() {
        let now = Instant::now();
        let mut app = shared(Duration::from_secs(25), now);
        let mut out = Vec::new();
        app.on_join(5, "/a", &mut out);
        load_a(&mut app, now, &mut out);
        out.clear();
        let poll = HttpRequest {
            method: Method::Get,
            target: "/poll?room=a&since=0",
            body: b"",
            foreign: false,
        };
        assert!(matches!(
            app.on_http(1, poll, now, &mut out),
            Reply::Hold(_)
        ));
        // The last member here leaves: the room is freed here, not in Redis.
        app.on_leave(5, &mut out);
        assert_eq!(app.rooms.find("a"), None);
        let answers: Vec<&Vec<u8>> = out
            .iter()
            .filter_map(|a| match a {
                Action::Respond { to: 1, response } => Some(response),
                _ => None,
            })
            .collect();
        let [response] = answers[..] else {
            panic!("the poll is answered at once: {out:?}");
        };
        let text = String::from_utf8_lossy(response);
        let body: serde_json::Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body.as_array().unwrap().len(), 1, "a welcome only: {body}");
        assert_eq!(
            (&body[0]["type"], &body[0]["seq"]),
            (&"welcome".into(), &0.into())
        );
    }

    #[test]
    fn a_request_held_for_its_room_to_load_is_held_for_what_follows_too() {
        let now = Instant::now();
        let wait = Duration::from_secs(25);
        let mut app = shared(wait, now);
        let mut out = Vec::new();
        let poll = HttpRequest {
            method: Method::Get,
            target: "/poll?room=a&since=0",
            body: b"",
            foreign: false,
        };
        let Reply::Hold(held) = app.on_http(1, poll, now, &mut out) else {
            panic!("the room is not loaded yet");
        };
        assert!(app.poll_timeout().is_some_and(|t| t <= now + STORE_WAIT));
        // The room loads: the poll is up to date, and waits for the room's next event.
        load_a(&mut app, now, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let waits_until = app.waiters.next_deadline().expect("the poll is held");
        assert!(waits_until > now + STORE_WAIT);
        assert!(
            waits_until <= held,
            "the poll waits until {waits_until:?}, its connection only until {held:?}"
        );
        // A send held for its room waits for its commit after the room loads too.
        let send = HttpRequest {
            method: Method::Post,
            target: "/send?room=b",
            body: br#"{"name":"x","msg":"hi"}"#,
            foreign: false,
        };
        let Reply::Hold(held) = app.on_http(2, send, now, &mut out) else {
            panic!("room b is not loaded yet");
        };
        assert!(held >= now + STORE_WAIT * 2);
    }

    #[test]
    fn presence_gates_of_quiet_rooms_are_forgotten() {
        let limits = RoomLimits {
            max_rooms: 10,
            history: 10,
            history_bytes: 1000,
        };
        let mut app = App::new(Mode::Chat, true, limits, Duration::from_secs(1));
        let mut out = Vec::new();
        // One join and leave in each of many rooms: never held back, so never pending.
        for i in 0..100 {
            app.on_join(i, &format!("/room{i}"), &mut out);
            app.on_leave(i, &mut out);
        }
        assert!(
            app.presence_due().is_some(),
            "a look at the gates is scheduled"
        );
        // Two notices each: the allowance is whole two intervals later.
        std::thread::sleep(PRESENCE_INTERVAL * 2 + Duration::from_millis(50));
        app.flush_presence(Instant::now(), &mut out);
        assert_eq!(app.gates.len(), 0, "every allowance is whole again");
        assert_eq!(app.presence_due(), None);
    }

    /// The texts of the frames sent to `to`.
    fn texts_to(to: usize, out: &mut Vec<Action>) -> Vec<String> {
        out.drain(..)
            .filter_map(|a| match a {
                Action::Send { to: t, frame } if t == to => {
                    let frame = frame.plain();
                    let (_, len) = frame::decode_head(frame, 1 << 20).unwrap().unwrap();
                    Some(String::from_utf8(frame[len..].to_vec()).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_socket_io_join_waits_for_its_room_and_its_ack_for_the_store() {
        let now = Instant::now();
        let mut app = shared(Duration::from_secs(25), now);
        let mut out = Vec::new();
        app.on_eio_open(1, "EIO=4&transport=websocket&room=a", now, &mut out);
        app.on_eio_text(1, "0", now, &mut out);
        assert!(out.is_empty(), "answered once room a is loaded: {out:?}");
        load_a(&mut app, now, &mut out);
        let got = texts_to(1, &mut out);
        assert!(got[0].starts_with(r#"40{"sid":""#), "{got:?}");
        // The room was never made in the store: no epoch yet, nothing in it.
        assert_eq!(got[1], r#"42["connected","Welcome to the chat",":0"]"#);
        assert_eq!(got.len(), 2);
        app.on_eio_text(1, r#"25["m"]"#, now, &mut out);
        assert!(texts_to(1, &mut out).is_empty(), "not committed yet");
        // The store commits the join notice, then the event: the ack is due.
        let notice = r#"{"type":"notification","event":"join","count":1,"msg":"A user joined. 1 online.","seq":1,"ts":5}"#;
        let event = r#"{"type":"event","nsp":"/","event":"m","args":[],"seq":2,"ts":6}"#;
        let reply = |seq: u64, json: &str| {
            format!(
                "*3\r\n$4\r\nr1-1\r\n$1\r\n{seq}\r\n${}\r\n{json}\r\n",
                json.len()
            )
        };
        let replies = reply(1, notice) + &reply(2, event);
        app.redis().unwrap().on_input(0, replies.as_bytes(), now);
        app.on_store(&mut out);
        assert_eq!(texts_to(1, &mut out), ["435[]"]);
        // The channel brings both (this node's events come back the way other nodes' do).
        let message = |seq: u64, json: &str| {
            let body = format!("r1-1\n{seq}\n0\n{json}");
            format!(
                "*3\r\n$7\r\nmessage\r\n$13\r\nwsrelay:0:{{a}}\r\n${}\r\n{body}\r\n",
                body.len()
            )
        };
        let channel = message(1, notice) + &message(2, event);
        app.redis().unwrap().on_input(1, channel.as_bytes(), now);
        app.on_store(&mut out);
        // The notice is for plain members only.
        assert_eq!(texts_to(1, &mut out), [r#"42["m","r1-1:2"]"#]);
    }
}
