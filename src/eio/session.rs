//! Engine.IO sessions, sans IO: requests, WebSocket messages, closed connections and `now`
//! in; answers, frames for connections ([`Wire`]) and the app's events ([`Up`]) out.
//!
//! Every state transition of a session lives in this file:
//!
//! ```text
//! GET handshake --> polling --WS ?sid= (101)--> polling + probe --"2probe"/"3probe", "5"--> websocket
//!                      |                             \--anything else, probe closed--> polling
//!                      |--app Close, no GET held--> closing --next GET ("…1") or close timeout--> gone
//! WS handshake --> websocket
//! any --client "1", "2" (wrong way), bad packet, ping unanswered, transport lost, over budget--> gone
//! ```
//!
//! The server pings every `ping_interval` (a text frame `2` on WebSocket, a `2` in the next
//! poll's payload on polling) and ends a session whose client sends nothing within
//! `ping_timeout` of a ping (any packet answers it; clients send `3`). A long-polling `GET` is
//! held until the session has packets (a ping comes within `ping_interval`), and is answered
//! with all of them in one payload when the event loop calls [`Sessions::flush`], once a turn.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::packet::{self, Packet, Refusal, Transport};
use super::response::{self, Cors};
use super::sid::{self, Node, Tags};
use crate::admission::Ticket;
use crate::proto::handshake::Method;
use crate::proto::{CloseCode, OpCode, frame};

/// The first session id: sessions share the app's id space with connections (slab keys,
/// far below it), so `Action::Send { to }` and the rest reach either by id.
pub const ID_BASE: usize = 1 << (usize::BITS - 2);

/// Whether an app id names an Engine.IO session rather than a connection.
pub fn is_session(id: usize) -> bool {
    id >= ID_BASE
}

/// The app id of the session in slot `key` (slots stay below `--max-connections`, at most
/// 2^24, so this cannot overflow even where usize has 32 bits).
fn id_of(key: u32) -> usize {
    ID_BASE + key as usize
}

fn key_of(id: usize) -> Option<u32> {
    u32::try_from(id.checked_sub(ID_BASE)?).ok()
}

/// A session's slot as a connection names it: the slot plus one, so that an
/// `Option<Slot>` takes four bytes in every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(NonZeroU32);

impl Slot {
    fn new(key: u32) -> Option<Self> {
        NonZeroU32::new(key.checked_add(1)?).map(Self)
    }

    fn key(self) -> u32 {
        self.0.get() - 1
    }
}

/// `Session::ws` of a session that is polling.
const NO_CONN: u32 = u32::MAX;

/// Per-server Engine.IO settings, from the flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the server pings (`--eio-ping-interval`).
    pub ping_interval: Duration,
    /// How long a ping waits for an answer (`--eio-ping-timeout`).
    pub ping_timeout: Duration,
    /// Largest polling `POST` body and WebSocket message (`--eio-max-payload`).
    pub max_payload: u64,
    /// Bytes of packets a polling session may hold for its next poll (`--max-output`, the
    /// budget of a WebSocket connection); past it the session is closed.
    pub max_output: usize,
    /// How long a session the app closed waits for the poll that carries its close packet.
    pub close_timeout: Duration,
}

/// What the app hears of its sessions (forwarded to `App::on_eio_*`).
#[derive(Debug, PartialEq, Eq)]
pub enum Up<'a> {
    /// Session `id` opened; `query` is its handshake request's query string.
    Open {
        /// The session's app id.
        id: usize,
        /// The handshake's query string (after `?`).
        query: &'a str,
    },
    /// A text message packet, without its `4`.
    Text {
        /// The session's app id.
        id: usize,
        /// The message.
        text: &'a str,
    },
    /// A binary message packet.
    Binary {
        /// The session's app id.
        id: usize,
        /// The message.
        data: &'a [u8],
    },
    /// Session `id` is over, whatever the reason; nothing more reaches it.
    Closed {
        /// The session's app id.
        id: usize,
    },
}

/// What the event loop must do to a connection for the sessions.
#[derive(Debug)]
pub enum Wire {
    /// Answer `conn`'s held request with this whole response; it serves the session no more.
    Respond {
        /// The connection holding a poll.
        conn: usize,
        /// Status line, fields and body.
        response: Vec<u8>,
    },
    /// Queue this frame to WebSocket connection `conn`.
    Frame {
        /// The connection.
        conn: usize,
        /// A whole frame holding one packet.
        frame: Rc<[u8]>,
    },
    /// Close WebSocket connection `conn` with `code`; it serves the session no more.
    Close {
        /// The connection.
        conn: usize,
        /// §7.4.1.
        code: CloseCode,
        /// A short reason.
        reason: &'static str,
    },
    /// A polling session's place under the connection limits is free.
    Release(Ticket),
}

/// A plain HTTP request under `/socket.io/`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Its method (`OPTIONS` and others reach here too).
    pub method: Method,
    /// Path and query.
    pub target: &'a str,
    /// The body of a `POST`.
    pub body: &'a [u8],
    /// Its page's origin, for the CORS fields of the answer.
    pub cors: Cors<'a>,
    /// From another site's page the Origin policy does not admit (no `Origin` sent).
    pub foreign: bool,
}

/// How a plain request is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// This whole response, now.
    Now(Vec<u8>),
    /// Held (a poll) for session `key` until `until` at most; answered by a [`Wire::Respond`].
    Hold {
        /// The session's slot, which the connection now serves.
        key: Slot,
        /// A backstop: the session answers well before.
        until: Instant,
    },
    /// The session is another node's: the request goes there (through the room store) and
    /// its answer comes back, or 400 "Session ID unknown" if there is no such node.
    Elsewhere(Node),
}

/// How a WebSocket handshake under `/socket.io/` is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeAnswer {
    /// Keep the 101: the connection now carries the session, or probes to take it over.
    Accept(Slot),
    /// Send this whole response instead of the 101 (the reference's `abortUpgrade`).
    Refuse(Vec<u8>),
    /// Keep the 101, then close the WebSocket at once with 1008: a handshake the reference
    /// server completes and then closes (a probe for a session already upgraded, or being
    /// upgraded; a `polling` transport asked over WebSocket).
    Close,
}

/// Where a frame for a session goes, from [`Sessions::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// To this WebSocket connection, as it is.
    Ws(usize),
    /// Queued for the session's next poll.
    Queued,
    /// Nowhere: the session is gone or closing (or was just closed, over its budget).
    Dropped,
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent a close packet.
    ByClient,
    /// No answer to a ping within the timeout.
    PingTimeout,
    /// A packet that does not parse, or a ping from the client ("invalid heartbeat
    /// direction"), or a second concurrent poll.
    BadPacket,
    /// A WebSocket message over `max_payload`.
    TooBig,
    /// Its transport's connection is gone.
    TransportLost,
    /// Over its output budget while polling.
    Overflow,
    /// The server is stopping.
    Shutdown,
}

impl End {
    /// The close frame a WebSocket session gets (none when its connection is gone, or at
    /// shutdown, when every connection gets 1001 anyway).
    fn close(self) -> Option<(CloseCode, &'static str)> {
        match self {
            Self::ByClient => Some((CloseCode::NORMAL, "")),
            Self::PingTimeout => Some((CloseCode::POLICY, "ping timeout")),
            Self::BadPacket => Some((CloseCode::PROTOCOL, "bad packet")),
            // §7.4.1: 1009 for a message "too big for it to process".
            Self::TooBig => Some((CloseCode::TOO_BIG, "over maxPayload")),
            Self::Overflow => Some((CloseCode::POLICY, "slow consumer")),
            Self::TransportLost | Self::Shutdown => None,
        }
    }

    /// The packet a held poll is answered with: a noop when the client closed (it is done
    /// with the session already), else a close packet (the reference's `doClose`).
    fn last_packet(self) -> &'static [u8] {
        match self {
            Self::ByClient => b"6",
            _ => b"1",
        }
    }
}

/// One session: 32 bytes while it is on WebSocket (its polling state is boxed).
#[derive(Debug)]
struct Session {
    /// The secret part of the sid (see [`sid`]).
    tag: u64,
    /// Milliseconds after `Sessions::epoch` of the next ping; once `pinged`, of the ping
    /// timeout; for a polling session that is closing, of its end.
    deadline: u64,
    /// The WebSocket connection carrying the session; [`NO_CONN`] while it polls.
    ws: u32,
    /// A ping is out and unanswered.
    pinged: bool,
    /// The long-polling state; `None` once on WebSocket.
    polling: Option<Box<Polling>>,
}

/// A polling session's state between and during requests.
///
/// Invariants: `queued` is the byte length of `queue`; `ready` is set only while `held` is
/// and `queue` is not empty, and then the slot is listed in `Sessions::ready`.
#[derive(Debug, Default)]
struct Polling {
    /// Frames for the next poll, each holding one packet, shared with other receivers.
    queue: VecDeque<Rc<[u8]>>,
    queued: usize,
    /// The connection holding a `GET`, and the origin of its page (for the answer's CORS).
    held: Option<(usize, Option<Box<[u8]>>)>,
    /// A WebSocket connection probing to take the session over.
    probe: Option<usize>,
    /// The probe sent `2probe`: polls are answered at once from now on, so the client can
    /// pause polling and send `5`.
    probed: bool,
    /// Listed in `Sessions::ready`.
    ready: bool,
    /// Closed by the app: its close packet goes with the next poll, then the session ends.
    closing: bool,
    /// Its place under `--max-connections` and `--max-connections-per-ip`.
    ticket: Option<Ticket>,
}

// The idle cost of a socket.io client on WebSocket, beside its connection: keep it visible.
const _: () = assert!(size_of::<Session>() <= 32);

/// Every Engine.IO session of the server.
#[derive(Debug)]
pub struct Sessions {
    config: Config,
    open: packet::Open,
    /// What session deadlines count milliseconds from (8 bytes a deadline, not an
    /// `Instant`'s 16).
    epoch: Instant,
    slab: Slab<Session>,
    /// (deadline, slot), earliest first; entries whose slot's deadline moved are stale.
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    tags: Tags,
    /// This process's name in its sids.
    node: Node,
    /// Polling sessions with packets and a held poll, answered by [`Sessions::flush`].
    ready: Vec<u32>,
    /// The ping packet as a text frame, shared by every WebSocket session.
    ping: Rc<[u8]>,
}

impl Sessions {
    /// No sessions yet; `secret` keys the sids (32 bytes from the kernel's random source).
    pub fn new(config: Config, secret: [u8; 32], now: Instant) -> Self {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let open = packet::Open {
            ping_interval_ms: millis(config.ping_interval),
            ping_timeout_ms: millis(config.ping_timeout),
            max_payload: config.max_payload,
        };
        Self {
            config,
            open,
            epoch: now,
            slab: Slab::new(),
            timers: BinaryHeap::new(),
            node: Tags::new(secret).node(),
            tags: Tags::new(secret),
            ready: Vec::new(),
            ping: text_frame(b"2"),
        }
    }

    /// This process's name in the sids it makes (requests for another's are passed on).
    pub fn node(&self) -> Node {
        self.node
    }

    /// How long a poll may be held: a ping answers it within the interval, the session's end
    /// within the timeout after.
    pub fn hold_limit(&self) -> Duration {
        self.config.ping_interval + self.config.ping_timeout
    }

    /// Sessions open (closing ones included).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The earliest time [`Sessions::handle_timeout`] may have something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Reverse((at, _)) = self.timers.peek()?;
        Some(self.instant(*at))
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn instant(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis)
    }

    /// Moves slot `key`'s deadline to `at` (a new heap entry; the old one goes stale).
    fn set_deadline(&mut self, key: u32, at: Instant) {
        let at = self.millis(at);
        if let Some(s) = self.slab.get_mut(key as usize) {
            s.deadline = at;
            self.timers.push(Reverse((at, key)));
        }
    }

    /// The slot of the live session `sid` names.
    fn lookup(&self, sid: &str) -> Option<u32> {
        let (node, key, tag) = sid::decode(sid)?;
        if node != self.node {
            return None;
        }
        let s = self.slab.get(key as usize)?;
        (s.tag == tag).then_some(key)
    }

    /// Opens a session on WebSocket connection `ws` ([`NO_CONN`]: polling, holding `ticket`);
    /// returns its slot and sid.
    fn insert(&mut self, now: Instant, ws: u32, ticket: Option<Ticket>) -> Option<(u32, String)> {
        let entry = self.slab.vacant_entry();
        let key = u32::try_from(entry.key()).ok()?;
        Slot::new(key)?;
        let tag = self.tags.make();
        let polling = (ws == NO_CONN).then(|| {
            Box::new(Polling {
                ticket,
                ..Polling::default()
            })
        });
        entry.insert(Session {
            tag,
            deadline: 0,
            ws,
            pinged: false,
            polling,
        });
        self.set_deadline(key, now + self.config.ping_interval);
        let sid = sid::encode(self.node, key, tag);
        Some((key, String::from_utf8_lossy(&sid).into_owned()))
    }

    /// A plain HTTP request under `/socket.io/` from connection `conn`: a handshake, a poll,
    /// packets, or a CORS preflight. `admit` counts a new polling session under the
    /// connection limits (`None`: over one, answered 503).
    pub fn handle_request(
        &mut self,
        now: Instant,
        conn: usize,
        req: &Request<'_>,
        admit: &mut dyn FnMut() -> Option<Ticket>,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> Answer {
        let cors = &req.cors;
        let refuse = |r: Refusal| Answer::Now(response::refusal(r, cors));
        if req.method == Method::Options {
            return Answer::Now(response::preflight(cors));
        }
        // Another site's page cannot open or drive a session on its visitors' behalf.
        if req.foreign {
            return refuse(Refusal::Forbidden);
        }
        let q = packet::parse_query(req.target);
        // The reference server's `verify`, in its order: transport, then sid or handshake.
        let Some(transport) = Transport::parse(q.transport) else {
            return refuse(Refusal::UnknownTransport);
        };
        let Some(sid) = q.sid else {
            if req.method != Method::Get {
                return refuse(Refusal::BadHandshakeMethod);
            }
            // A WebSocket handshake comes as an upgrade, not as a plain GET.
            if transport != Transport::Polling {
                return refuse(Refusal::BadRequest);
            }
            if q.eio != Some("4") {
                return refuse(Refusal::UnsupportedProtocolVersion);
            }
            let Some(ticket) = admit() else {
                return Answer::Now(response::unavailable(cors));
            };
            let Some((key, sid)) = self.insert(now, NO_CONN, Some(ticket)) else {
                out.push(Wire::Release(ticket));
                return Answer::Now(response::unavailable(cors));
            };
            let mut body = Vec::with_capacity(160);
            packet::write_open(&sid, true, &self.open, &mut body);
            let query = req.target.split_once('?').map_or("", |(_, q)| q);
            on(Up::Open {
                id: id_of(key),
                query,
            });
            return Answer::Now(response::payload(&body, cors));
        };
        let Some(key) = self.lookup(sid) else {
            return match sid::decode(sid) {
                // Another node's session (a balancer without sticky sessions): it answers.
                Some((node, ..)) if node != self.node && transport == Transport::Polling => {
                    Answer::Elsewhere(node)
                }
                _ => refuse(Refusal::UnknownSid),
            };
        };
        if self.expired(now, key, on, out) {
            return refuse(Refusal::UnknownSid);
        }
        let polling = self
            .slab
            .get(key as usize)
            .is_some_and(|s| s.polling.is_some());
        // A polling request for a session on WebSocket (or upgraded to it) is a mismatch.
        if transport != Transport::Polling || !polling {
            return refuse(Refusal::BadRequest);
        }
        match req.method {
            Method::Get => self.poll(now, key, conn, cors, on, out),
            Method::Post => self.post(now, key, req.body, cors, on, out),
            _ => refuse(Refusal::BadRequest),
        }
    }

    /// A `GET` for polling session `key`: answered now if it has packets (or is being
    /// upgraded, or closing), else held.
    fn poll(
        &mut self,
        now: Instant,
        key: u32,
        conn: usize,
        cors: &Cors<'_>,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> Answer {
        let Some(p) = self
            .slab
            .get_mut(key as usize)
            .and_then(|s| s.polling.as_deref_mut())
        else {
            return Answer::Now(response::refusal(Refusal::UnknownSid, cors));
        };
        if p.held.is_some() {
            // The reference's "overlap from client": this poll gets 400, the held one the
            // close packet, and the session ends.
            self.end(key, End::BadPacket, on, out);
            return Answer::Now(response::refusal(Refusal::BadRequest, cors));
        }
        if p.closing {
            let mut body = take_payload(p);
            push_packet(b"1", &mut body);
            self.remove(key, out);
            return Answer::Now(response::payload(&body, cors));
        }
        if !p.queue.is_empty() {
            let body = take_payload(p);
            return Answer::Now(response::payload(&body, cors));
        }
        if p.probed {
            // An upgrade is under way: end the poll cycle so the client can send `5`.
            return Answer::Now(response::payload(b"6", cors));
        }
        p.held = Some((conn, cors.origin.map(Box::from)));
        // Answered by the next ping at the latest, or the session's end a timeout later.
        let until = now + self.config.ping_interval + self.config.ping_timeout;
        match Slot::new(key) {
            Some(key) => Answer::Hold { key, until },
            None => Answer::Now(response::refusal(Refusal::BadRequest, cors)),
        }
    }

    /// A `POST` of packets for polling session `key`, answered `ok` once they are handled.
    fn post(
        &mut self,
        now: Instant,
        key: u32,
        body: &[u8],
        cors: &Cors<'_>,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> Answer {
        // The connection reads no more than this (413 there); kept here as the rule's home.
        if body.len() as u64 > self.config.max_payload {
            return Answer::Now(response::too_large(cors));
        }
        let closing = self
            .slab
            .get(key as usize)
            .and_then(|s| s.polling.as_deref())
            .is_some_and(|p| p.closing);
        if closing {
            // The app is done with it: packets go nowhere (the reference ignores them too).
            return Answer::Now(response::ok(cors));
        }
        let packets = match packet::decode_payload(body) {
            Ok(packets) => packets,
            Err(_) => {
                self.end(key, End::BadPacket, on, out);
                return Answer::Now(response::refusal(Refusal::BadRequest, cors));
            }
        };
        for packet in packets {
            let Ok(packet) = packet else {
                // The reference closes the session on a parser error; so do we, and say so.
                self.end(key, End::BadPacket, on, out);
                return Answer::Now(response::refusal(Refusal::BadRequest, cors));
            };
            if !self.handle_packet(now, key, packet, on, out) {
                break;
            }
        }
        Answer::Now(response::ok(cors))
    }

    /// A packet from the client on the session's transport; false once the session ended.
    fn handle_packet(
        &mut self,
        now: Instant,
        key: u32,
        packet: Packet<'_>,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> bool {
        self.alive(now, key);
        let id = id_of(key);
        match packet {
            // Not the client's to send, or nothing to do: ignored, as the reference does.
            Packet::Open | Packet::Noop | Packet::Upgrade | Packet::Pong(_) => {}
            // v4: the server pings; the reference ends the session ("invalid heartbeat
            // direction").
            Packet::Ping(_) => {
                self.end(key, End::BadPacket, on, out);
                return false;
            }
            Packet::Close => {
                self.end(key, End::ByClient, on, out);
                return false;
            }
            Packet::Message(text) => on(Up::Text { id, text }),
            Packet::Binary(data) => on(Up::Binary { id, data: &data }),
        }
        true
    }

    /// Ends session `key` if its ping went unanswered (or its close ran out) by `now`, as
    /// its timer will: a request read in the same turn as the timer expired, but before it
    /// fired, finds it gone, whatever order the event loop sees them in. True if it ended.
    fn expired(
        &mut self,
        now: Instant,
        key: u32,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> bool {
        let due = self.millis(now);
        let Some(s) = self.slab.get(key as usize) else {
            return true;
        };
        if s.deadline > due {
            return false;
        }
        if s.polling.as_deref().is_some_and(|p| p.closing) {
            self.remove(key, out);
            true
        } else if s.pinged {
            self.end(key, End::PingTimeout, on, out);
            true
        } else {
            false // A ping is due: the timer sends it.
        }
    }

    /// Anything from the client answers an outstanding ping: the next one is due a whole
    /// interval later.
    fn alive(&mut self, now: Instant, key: u32) {
        if self.slab.get(key as usize).is_some_and(|s| s.pinged) {
            if let Some(s) = self.slab.get_mut(key as usize) {
                s.pinged = false;
            }
            self.set_deadline(key, now + self.config.ping_interval);
        }
    }

    /// A WebSocket handshake under `/socket.io/` on connection `conn`: a new session on
    /// WebSocket, or (with `sid`) a probe to take a polling session over.
    pub fn handle_upgrade(
        &mut self,
        now: Instant,
        conn: usize,
        target: &str,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> UpgradeAnswer {
        let refuse = |r: Refusal| UpgradeAnswer::Refuse(response::upgrade_refusal(r));
        let q = packet::parse_query(target);
        let Some(transport) = Transport::parse(q.transport) else {
            return refuse(Refusal::UnknownTransport);
        };
        if let Some(sid) = q.sid {
            let Some(key) = self.lookup(sid) else {
                return refuse(Refusal::UnknownSid);
            };
            if self.expired(now, key, on, out) {
                return refuse(Refusal::UnknownSid);
            }
            // Only WebSocket comes as an upgrade ("transport doesnt handle upgraded requests").
            if transport != Transport::WebSocket {
                return UpgradeAnswer::Close;
            }
            let Some(p) = self
                .slab
                .get_mut(key as usize)
                .and_then(|s| s.polling.as_deref_mut())
            else {
                // "transport had already been upgraded".
                return UpgradeAnswer::Close;
            };
            // "transport has already been trying to upgrade", or closing.
            if p.probe.is_some() || p.closing {
                return UpgradeAnswer::Close;
            }
            let Some(slot) = Slot::new(key) else {
                return refuse(Refusal::BadRequest);
            };
            p.probe = Some(conn);
            p.probed = false;
            return UpgradeAnswer::Accept(slot);
        }
        if transport != Transport::WebSocket {
            return UpgradeAnswer::Close;
        }
        // The reference checks this after its 101 and writes its 400 into the WebSocket;
        // before the 101 the client can read it.
        if q.eio != Some("4") {
            return refuse(Refusal::UnsupportedProtocolVersion);
        }
        let Some((key, sid)) = u32::try_from(conn)
            .ok()
            .filter(|&ws| ws != NO_CONN)
            .and_then(|ws| self.insert(now, ws, None))
        else {
            return refuse(Refusal::BadRequest);
        };
        let mut open = Vec::with_capacity(160);
        packet::write_open(&sid, false, &self.open, &mut open);
        out.push(Wire::Frame {
            conn,
            frame: text_frame(&open),
        });
        let query = target.split_once('?').map_or("", |(_, q)| q);
        on(Up::Open {
            id: id_of(key),
            query,
        });
        match Slot::new(key) {
            Some(slot) => UpgradeAnswer::Accept(slot),
            None => refuse(Refusal::BadRequest), // `insert` made sure it exists.
        }
    }

    /// A text message on WebSocket connection `conn`, which serves the session in `slot` (or
    /// probes to).
    pub fn handle_ws_text(
        &mut self,
        now: Instant,
        slot: Slot,
        conn: usize,
        text: &str,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) {
        let key = slot.key();
        if self.expired(now, key, on, out) {
            return;
        }
        match self.role(key, conn) {
            Role::Transport => {
                if text.len() as u64 > self.config.max_payload {
                    return self.end(key, End::TooBig, on, out);
                }
                match packet::decode(text) {
                    Ok(packet) => {
                        self.handle_packet(now, key, packet, on, out);
                    }
                    Err(_) => self.end(key, End::BadPacket, on, out),
                }
            }
            Role::Probe => match packet::decode(text) {
                Ok(Packet::Ping("probe")) => self.probed(key, conn, out),
                Ok(Packet::Upgrade) => self.upgrade(key, conn, out),
                _ => self.abort_upgrade(key, conn, out),
            },
            Role::None => out.push(Wire::Close {
                conn,
                code: CloseCode::POLICY,
                reason: "no session",
            }),
        }
    }

    /// A binary message on WebSocket connection `conn`, which serves the session in `slot`
    /// (or probes to).
    pub fn handle_ws_binary(
        &mut self,
        now: Instant,
        slot: Slot,
        conn: usize,
        data: &[u8],
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) {
        let key = slot.key();
        if self.expired(now, key, on, out) {
            return;
        }
        match self.role(key, conn) {
            Role::Transport if data.len() as u64 > self.config.max_payload => {
                self.end(key, End::TooBig, on, out);
            }
            Role::Transport => {
                self.alive(now, key);
                on(Up::Binary {
                    id: id_of(key),
                    data,
                });
            }
            Role::Probe => self.abort_upgrade(key, conn, out),
            Role::None => out.push(Wire::Close {
                conn,
                code: CloseCode::POLICY,
                reason: "no session",
            }),
        }
    }

    /// What connection `conn` is to session `key`.
    fn role(&self, key: u32, conn: usize) -> Role {
        let Some(s) = self.slab.get(key as usize) else {
            return Role::None;
        };
        if s.ws != NO_CONN && s.ws as usize == conn {
            return Role::Transport;
        }
        match s.polling.as_deref() {
            Some(p) if p.probe == Some(conn) => Role::Probe,
            _ => Role::None,
        }
    }

    /// The probe sent `2probe`: it is answered `3probe`, and a held poll is answered now
    /// (the reference sends a noop there), so the client can pause polling.
    fn probed(&mut self, key: u32, conn: usize, out: &mut Vec<Wire>) {
        out.push(Wire::Frame {
            conn,
            frame: text_frame(b"3probe"),
        });
        let Some(p) = self
            .slab
            .get_mut(key as usize)
            .and_then(|s| s.polling.as_deref_mut())
        else {
            return;
        };
        p.probed = true;
        if let Some((held, origin)) = p.held.take() {
            let mut body = take_payload(p);
            if body.is_empty() {
                body.push(b'6');
            }
            out.push(respond(held, &body, origin.as_deref()));
        }
    }

    /// The probe sent `5`: the session moves to it, with the packets the polls had not
    /// taken; a held poll gets a noop.
    fn upgrade(&mut self, key: u32, conn: usize, out: &mut Vec<Wire>) {
        let Some(s) = self.slab.get_mut(key as usize) else {
            return;
        };
        let (Some(p), Ok(ws)) = (s.polling.take(), u32::try_from(conn)) else {
            return;
        };
        s.ws = ws;
        for frame in p.queue {
            out.push(Wire::Frame { conn, frame });
        }
        if let Some((held, origin)) = p.held {
            out.push(respond(held, b"6", origin.as_deref()));
        }
        if let Some(ticket) = p.ticket {
            // The WebSocket connection holds a place of its own.
            out.push(Wire::Release(ticket));
        }
    }

    /// The probe sent something else: it is closed and the session keeps polling (the
    /// reference's `transport.close()` in `_maybeUpgrade`).
    fn abort_upgrade(&mut self, key: u32, conn: usize, out: &mut Vec<Wire>) {
        if let Some(p) = self
            .slab
            .get_mut(key as usize)
            .and_then(|s| s.polling.as_deref_mut())
        {
            p.probe = None;
            p.probed = false;
        }
        out.push(Wire::Close {
            conn,
            code: CloseCode::PROTOCOL,
            reason: "upgrade failed",
        });
    }

    /// Connection `conn`, which served the session in `slot`, is gone (closed, failed, or its held
    /// poll dropped): a lost transport ends the session (the reference's "transport close"
    /// and "poll connection closed prematurely"); a lost probe only ends the upgrade.
    pub fn conn_closed(
        &mut self,
        slot: Slot,
        conn: usize,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) {
        let key = slot.key();
        let Some(s) = self.slab.get_mut(key as usize) else {
            return;
        };
        if s.ws != NO_CONN && s.ws as usize == conn {
            s.ws = NO_CONN; // Nothing to close there.
            return self.end(key, End::TransportLost, on, out);
        }
        let Some(p) = s.polling.as_deref_mut() else {
            return;
        };
        if p.probe == Some(conn) {
            p.probe = None;
            p.probed = false;
        } else if p.held.as_ref().is_some_and(|(held, _)| *held == conn) {
            p.held = None;
            self.end(key, End::TransportLost, on, out);
        }
    }

    /// A frame from the app for session `id`: where it goes. A polling session keeps it for
    /// its next poll, within `max_output` bytes; past that the session ends.
    pub fn send(
        &mut self,
        id: usize,
        frame: &Rc<[u8]>,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) -> Delivery {
        let Some(key) = key_of(id) else {
            return Delivery::Dropped;
        };
        let Some(s) = self.slab.get_mut(key as usize) else {
            return Delivery::Dropped;
        };
        let Some(p) = s.polling.as_deref_mut() else {
            return Delivery::Ws(s.ws as usize);
        };
        if p.closing {
            return Delivery::Dropped;
        }
        // As for a WebSocket client: the budget bounds the backlog, not one message.
        if p.queued > 0 && p.queued + frame.len() > self.config.max_output {
            self.end(key, End::Overflow, on, out);
            return Delivery::Dropped;
        }
        p.queued += frame.len();
        p.queue.push_back(frame.clone());
        if p.held.is_some() && !p.ready {
            p.ready = true;
            self.ready.push(key);
        }
        Delivery::Queued
    }

    /// The app closes session `id`: a WebSocket one gets a close frame after what it was
    /// sent; a polling one sends what it holds and a close packet with its next poll.
    pub fn close(
        &mut self,
        now: Instant,
        id: usize,
        code: CloseCode,
        reason: &'static str,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) {
        let Some(key) = key_of(id) else {
            return;
        };
        let Some(s) = self.slab.get_mut(key as usize) else {
            return;
        };
        let Some(p) = s.polling.as_deref_mut() else {
            out.push(Wire::Close {
                conn: s.ws as usize,
                code,
                reason,
            });
            s.ws = NO_CONN;
            return self.end(key, End::TransportLost, on, out);
        };
        if p.closing {
            return;
        }
        p.closing = true;
        if let Some(probe) = p.probe.take() {
            out.push(Wire::Close {
                conn: probe,
                code,
                reason,
            });
        }
        if let Some((held, origin)) = p.held.take() {
            let mut body = take_payload(p);
            push_packet(b"1", &mut body);
            out.push(respond(held, &body, origin.as_deref()));
            self.remove(key, out);
        } else {
            self.set_deadline(key, now + self.config.close_timeout);
        }
        on(Up::Closed { id });
    }

    /// Answers the held polls of sessions that got packets since the last call (once a
    /// turn, so one payload carries all of a turn's packets).
    pub fn flush(&mut self, out: &mut Vec<Wire>) {
        for key in std::mem::take(&mut self.ready) {
            let Some(p) = self
                .slab
                .get_mut(key as usize)
                .and_then(|s| s.polling.as_deref_mut())
            else {
                continue;
            };
            if !std::mem::take(&mut p.ready) {
                continue;
            }
            if let Some((held, origin)) = p.held.take() {
                let body = take_payload(p);
                out.push(respond(held, &body, origin.as_deref()));
            }
        }
    }

    /// Pings that are due, and ends sessions whose ping went unanswered (and closing ones
    /// whose last poll never came).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        on: &mut dyn FnMut(Up<'_>),
        out: &mut Vec<Wire>,
    ) {
        let due = self.millis(now);
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > due {
                break;
            }
            self.timers.pop();
            let Some(s) = self.slab.get_mut(key as usize) else {
                continue;
            };
            if s.deadline != at {
                continue; // Moved since: a stale entry.
            }
            if s.polling.as_deref().is_some_and(|p| p.closing) {
                self.remove(key, out);
            } else if s.pinged {
                self.end(key, End::PingTimeout, on, out);
            } else {
                s.pinged = true;
                let ws = s.ws;
                self.set_deadline(key, now + self.config.ping_timeout);
                let ping = self.ping.clone();
                if ws != NO_CONN {
                    out.push(Wire::Frame {
                        conn: ws as usize,
                        frame: ping,
                    });
                } else {
                    // Within the budget like any packet: a client that answers by POST but
                    // never polls cannot pile pings up.
                    self.send(id_of(key), &ping, on, out);
                }
            }
        }
    }

    /// The server stops: held polls get a close packet, and every session ends (WebSocket
    /// connections get the server's 1001 with everyone else).
    pub fn shutdown(&mut self, on: &mut dyn FnMut(Up<'_>), out: &mut Vec<Wire>) {
        let keys: Vec<u32> = self
            .slab
            .iter()
            .filter_map(|(k, _)| u32::try_from(k).ok())
            .collect();
        for key in keys {
            self.end(key, End::Shutdown, on, out);
        }
    }

    /// Ends session `key` now: its WebSocket gets a close frame, a held poll its last
    /// packet, a probe is closed, and the app hears of it (unless it closed it itself).
    fn end(&mut self, key: u32, why: End, on: &mut dyn FnMut(Up<'_>), out: &mut Vec<Wire>) {
        let Some(s) = self.slab.get_mut(key as usize) else {
            return;
        };
        if s.ws != NO_CONN
            && let Some((code, reason)) = why.close()
        {
            out.push(Wire::Close {
                conn: s.ws as usize,
                code,
                reason,
            });
        }
        let told = s.polling.as_deref().is_some_and(|p| p.closing);
        if let Some(p) = s.polling.as_deref_mut() {
            if let Some((held, origin)) = p.held.take() {
                out.push(respond(held, why.last_packet(), origin.as_deref()));
            }
            if let Some(probe) = p.probe.take() {
                let (code, reason) = why.close().unwrap_or((CloseCode::GOING_AWAY, ""));
                out.push(Wire::Close {
                    conn: probe,
                    code,
                    reason,
                });
            }
        }
        self.remove(key, out);
        if !told {
            on(Up::Closed { id: id_of(key) });
        }
    }

    /// Frees slot `key` and its place under the connection limits.
    fn remove(&mut self, key: u32, out: &mut Vec<Wire>) {
        if let Some(s) = self.slab.try_remove(key as usize)
            && let Some(ticket) = s.polling.and_then(|p| p.ticket)
        {
            out.push(Wire::Release(ticket));
        }
        if self.slab.is_empty() {
            // A flood of handshakes grew the table; give the memory back once it is over.
            self.slab = Slab::new();
        }
    }
}

/// What a connection is to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It carries the session.
    Transport,
    /// It probes to take the session over.
    Probe,
    /// Nothing (any more).
    None,
}

/// A whole text frame holding `payload` (a packet).
fn text_frame(payload: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame::encode_frame(OpCode::Text, payload, &mut out);
    out.into()
}

/// The payload of everything `p` holds, which it then no longer holds.
fn take_payload(p: &mut Polling) -> Vec<u8> {
    let mut body = Vec::with_capacity(p.queued + p.queued / 3 + 16);
    for frame in std::mem::take(&mut p.queue) {
        packet::push_frames(&frame, &mut body);
    }
    p.queued = 0;
    body
}

/// Appends one packet to a payload.
fn push_packet(packet: &[u8], body: &mut Vec<u8>) {
    if !body.is_empty() {
        body.push(packet::SEPARATOR);
    }
    body.extend_from_slice(packet);
}

/// The answer to held poll `conn` carrying `body`.
fn respond(conn: usize, body: &[u8], origin: Option<&[u8]>) -> Wire {
    let cors = Cors {
        origin,
        request_headers: None,
    };
    Wire::Respond {
        conn,
        response: response::payload(body, &cors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: Duration = Duration::from_millis(300);
    const PT: Duration = Duration::from_millis(200);

    /// Sessions driven by hand: requests in, answers, wire work and app events out.
    struct Harness {
        s: Sessions,
        t0: Instant,
        ups: Vec<String>,
        wire: Vec<Wire>,
    }

    impl Harness {
        fn new() -> Self {
            Self::with_output(1 << 20)
        }

        fn with_output(max_output: usize) -> Self {
            let config = Config {
                ping_interval: PI,
                ping_timeout: PT,
                max_payload: 1000,
                max_output,
                close_timeout: Duration::from_secs(2),
            };
            let t0 = Instant::now();
            Self {
                s: Sessions::new(config, [9; 32], t0),
                t0,
                ups: Vec::new(),
                wire: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn request(
            &mut self,
            ms: u64,
            conn: usize,
            method: Method,
            target: &str,
            body: &[u8],
        ) -> Answer {
            let req = Request {
                method,
                target,
                body,
                cors: Cors::default(),
                foreign: false,
            };
            let now = self.at(ms);
            let ups = &mut self.ups;
            let mut on = |up: Up<'_>| ups.push(format!("{up:?}"));
            let mut admit = || Some(ticket());
            self.s
                .handle_request(now, conn, &req, &mut admit, &mut on, &mut self.wire)
        }

        fn get(&mut self, ms: u64, conn: usize, sid: &str) -> Answer {
            let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
            self.request(ms, conn, Method::Get, &target, b"")
        }

        fn post(&mut self, ms: u64, sid: &str, body: &[u8]) -> Answer {
            let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
            self.request(ms, 99, Method::Post, &target, body)
        }

        /// A polling session: its sid.
        fn open_polling(&mut self) -> String {
            let answer = self.request(
                0,
                1,
                Method::Get,
                "/socket.io/?EIO=4&transport=polling&t=x",
                b"",
            );
            let body = body(&answer);
            assert!(body.starts_with(r#"0{"sid":""#), "{body}");
            assert!(body.contains(r#""upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000}"#), "{body}");
            body[9..9 + sid::SID_LEN].to_owned()
        }

        fn upgrade(&mut self, ms: u64, conn: usize, target: &str) -> UpgradeAnswer {
            let now = self.at(ms);
            let ups = &mut self.ups;
            self.s.handle_upgrade(
                now,
                conn,
                target,
                &mut |up| ups.push(format!("{up:?}")),
                &mut self.wire,
            )
        }

        fn ws_text(&mut self, ms: u64, slot: Slot, conn: usize, text: &str) {
            let now = self.at(ms);
            let ups = &mut self.ups;
            self.s.handle_ws_text(
                now,
                slot,
                conn,
                text,
                &mut |up| ups.push(format!("{up:?}")),
                &mut self.wire,
            );
        }

        fn tick(&mut self, ms: u64) {
            let now = self.at(ms);
            let ups = &mut self.ups;
            self.s
                .handle_timeout(now, &mut |up| ups.push(format!("{up:?}")), &mut self.wire);
            self.s.flush(&mut self.wire);
        }

        fn send(&mut self, id: usize, frame: &Rc<[u8]>) -> Delivery {
            let ups = &mut self.ups;
            self.s.send(
                id,
                frame,
                &mut |up| ups.push(format!("{up:?}")),
                &mut self.wire,
            )
        }

        /// The wire work so far, as strings (responses by their body).
        fn wire(&mut self) -> Vec<String> {
            std::mem::take(&mut self.wire)
                .into_iter()
                .map(|w| match w {
                    Wire::Respond { conn, response } => {
                        format!("respond {conn} {}", body(&Answer::Now(response)))
                    }
                    Wire::Frame { conn, frame } => {
                        let mut payload = Vec::new();
                        packet::push_frames(&frame, &mut payload);
                        format!("frame {conn} {}", String::from_utf8_lossy(&payload))
                    }
                    Wire::Close { conn, code, .. } => format!("close {conn} {}", code.0),
                    Wire::Release(_) => "release".to_owned(),
                })
                .collect()
        }

        fn ups(&mut self) -> Vec<String> {
            std::mem::take(&mut self.ups)
        }
    }

    fn ticket() -> Ticket {
        let mut a = crate::admission::Admission::new(
            crate::admission::Limits {
                max_connections: 10,
                max_per_ip: 10,
            },
            crate::proxy::TrustedProxies::new(Vec::new()),
        );
        a.accept("192.0.2.1".parse().unwrap()).1.unwrap()
    }

    /// The body of an answer given now (with its status when not 200).
    fn body(answer: &Answer) -> String {
        let Answer::Now(r) = answer else {
            return format!("{answer:?}");
        };
        let text = String::from_utf8_lossy(r).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        match &head[9..12] {
            "200" => body.to_owned(),
            status => format!("{status} {body}"),
        }
    }

    fn frame(opcode: OpCode, payload: &[u8]) -> Rc<[u8]> {
        let mut out = Vec::new();
        frame::encode_frame(opcode, payload, &mut out);
        out.into()
    }

    #[test]
    fn handshake_errors_carry_the_reference_codes() {
        let mut h = Harness::new();
        let cases: [(Method, &str, &str); 10] = [
            (
                Method::Get,
                "/socket.io/?EIO=4",
                r#"400 {"code":0,"message":"Transport unknown"}"#,
            ),
            (
                Method::Get,
                "/socket.io/?EIO=4&transport=abc",
                r#"400 {"code":0,"message":"Transport unknown"}"#,
            ),
            (
                Method::Get,
                "/socket.io/?transport=polling",
                r#"400 {"code":5,"message":"Unsupported protocol version"}"#,
            ),
            (
                Method::Get,
                "/socket.io/?EIO=abc&transport=polling",
                r#"400 {"code":5,"message":"Unsupported protocol version"}"#,
            ),
            (
                Method::Get,
                "/socket.io/?EIO=3&transport=polling",
                r#"400 {"code":5,"message":"Unsupported protocol version"}"#,
            ),
            (
                Method::Post,
                "/socket.io/?EIO=4&transport=polling",
                r#"400 {"code":2,"message":"Bad handshake method"}"#,
            ),
            (
                Method::Other,
                "/socket.io/?EIO=4&transport=polling",
                r#"400 {"code":2,"message":"Bad handshake method"}"#,
            ),
            (
                Method::Get,
                "/socket.io/?EIO=4&transport=websocket",
                r#"400 {"code":3,"message":"Bad request"}"#,
            ),
            (
                Method::Get,
                "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA",
                r#"400 {"code":1,"message":"Session ID unknown"}"#,
            ),
            (
                Method::Options,
                "/socket.io/?EIO=4&transport=polling",
                "204 ",
            ),
        ];
        for (method, target, want) in cases {
            let got = body(&h.request(0, 1, method, target, b""));
            assert_eq!(got, want, "{method:?} {target}");
        }
        let req = Request {
            method: Method::Get,
            target: "/socket.io/?EIO=4&transport=polling",
            body: b"",
            cors: Cors::default(),
            foreign: true,
        };
        let answer = h.s.handle_request(
            h.t0,
            1,
            &req,
            &mut || Some(ticket()),
            &mut |_| {},
            &mut h.wire,
        );
        assert_eq!(body(&answer), r#"403 {"code":4,"message":"Forbidden"}"#);
        // Over the connection limits: 503, no session.
        let req = Request {
            foreign: false,
            ..req
        };
        let answer =
            h.s.handle_request(h.t0, 1, &req, &mut || None, &mut |_| {}, &mut h.wire);
        assert!(body(&answer).starts_with("503 "));
        assert!(h.s.is_empty() && h.ups().is_empty());
    }

    #[test]
    fn polling_round_trip_with_pings_held_polls_and_payloads() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        let id = ID_BASE;
        assert_eq!(
            h.ups(),
            [format!(
                "Open {{ id: {id}, query: \"EIO=4&transport=polling&t=x\" }}"
            )]
        );
        // A poll with nothing to say is held; the ping answers it at the interval.
        assert!(matches!(h.get(10, 2, &sid), Answer::Hold { .. }));
        h.tick(299);
        assert!(h.wire().is_empty());
        h.tick(300);
        assert_eq!(h.wire(), ["respond 2 2"]);
        // The pong (any packet) answers the ping: no timeout; the next ping a whole interval on.
        assert_eq!(body(&h.post(350, &sid, b"3")), "ok");
        h.tick(500);
        assert_eq!(h.s.len(), 1);
        // Messages both ways; a binary one as base64.
        assert_eq!(
            body(&h.post(400, &sid, "4hé\u{1e}bAQID\u{1e}6".as_bytes())),
            "ok"
        );
        assert_eq!(
            h.ups(),
            [
                format!("Text {{ id: {id}, text: \"hé\" }}"),
                format!("Binary {{ id: {id}, data: [1, 2, 3] }}"),
            ]
        );
        assert_eq!(h.send(id, &frame(OpCode::Text, b"4a")), Delivery::Queued);
        assert_eq!(
            h.send(id, &frame(OpCode::Binary, &[1, 2, 3, 4])),
            Delivery::Queued
        );
        assert_eq!(body(&h.get(410, 3, &sid)), "4a\u{1e}bAQIDBA==");
        // Held, then answered once a turn with all that came.
        assert!(matches!(h.get(420, 4, &sid), Answer::Hold { .. }));
        h.send(id, &frame(OpCode::Text, b"4b"));
        h.send(id, &frame(OpCode::Text, b"4c"));
        h.s.flush(&mut h.wire);
        assert_eq!(h.wire(), ["respond 4 4b\u{1e}4c"]);
        // The next ping, 300 ms after the pong at 350.
        h.tick(649);
        assert!(h.wire().is_empty());
        assert!(matches!(h.get(649, 5, &sid), Answer::Hold { .. }));
        h.tick(650);
        assert_eq!(h.wire(), ["respond 5 2"]);
    }

    #[test]
    fn an_unanswered_ping_ends_the_session() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        h.ups();
        h.tick(300);
        h.tick(499);
        assert_eq!(h.s.len(), 1);
        h.tick(500);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
        assert_eq!(h.wire(), ["release"]);
        assert_eq!(
            body(&h.get(501, 2, &sid)),
            r#"400 {"code":1,"message":"Session ID unknown"}"#
        );
        // A poll read after the timeout but before its timer fired finds the session gone.
        let sid = h.open_polling();
        h.ups();
        h.tick(300);
        let gone = body(&h.get(500, 2, &sid));
        assert_eq!(gone, r#"400 {"code":1,"message":"Session ID unknown"}"#);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
    }

    #[test]
    fn a_second_poll_a_close_packet_or_a_bad_payload_ends_the_session() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        h.ups();
        assert!(matches!(h.get(1, 2, &sid), Answer::Hold { .. }));
        assert_eq!(
            body(&h.get(2, 3, &sid)),
            r#"400 {"code":3,"message":"Bad request"}"#
        );
        assert_eq!(h.wire(), ["respond 2 1", "release"]);
        assert_eq!(h.ups().len(), 1);
        // The client's close: its held poll gets a noop.
        let sid = h.open_polling();
        h.ups();
        assert!(matches!(h.get(1, 2, &sid), Answer::Hold { .. }));
        assert_eq!(body(&h.post(2, &sid, b"1")), "ok");
        assert_eq!(h.wire(), ["respond 2 6", "release"]);
        assert_eq!(h.ups().len(), 1);
        assert!(body(&h.get(3, 2, &sid)).starts_with(r#"400 {"code":1,"#));
        // Messages before a bad packet are delivered; the session then ends.
        for bad in [&b"4a\x1e9"[..], b"4a\x1ebA!", b"4a\xff", b"", b"2"] {
            let sid = h.open_polling();
            h.ups();
            let answer = body(&h.post(1, &sid, bad));
            let ups = h.ups();
            assert!(
                ups.last().unwrap().starts_with("Closed"),
                "{bad:?}: {ups:?}"
            );
            if bad == b"2" {
                assert_eq!(answer, "ok"); // "invalid heartbeat direction"
            } else {
                assert!(answer.starts_with("400 "), "{bad:?}: {answer}");
            }
            assert_eq!(
                ups.len() == 2,
                bad.starts_with(b"4a\x1e"),
                "{bad:?}: {ups:?}"
            );
            h.wire();
        }
        assert!(h.s.is_empty());
    }

    #[test]
    fn a_polling_session_over_its_budget_is_closed() {
        let mut h = Harness::with_output(100);
        let sid = h.open_polling();
        h.ups();
        let big = frame(OpCode::Text, &[b'4'; 60]);
        assert_eq!(h.send(ID_BASE, &big), Delivery::Queued);
        assert_eq!(h.send(ID_BASE, &big), Delivery::Dropped);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
        assert!(body(&h.get(1, 2, &sid)).starts_with("400 "));
    }

    #[test]
    fn pings_for_a_session_that_never_polls_stay_within_its_budget() {
        let mut h = Harness::with_output(9);
        let sid = h.open_polling();
        h.ups();
        // Answered by POST every time, never polled: three 3-byte pings fit, a fourth not.
        for i in 0..3 {
            let at = 300 + 301 * i;
            h.tick(at);
            assert_eq!(body(&h.post(at + 1, &sid, b"3")), "ok", "ping {i}");
        }
        assert!(h.ups().is_empty());
        h.tick(300 + 301 * 3);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
    }

    #[test]
    fn the_app_closes_a_polling_session_after_what_it_sent() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        h.ups();
        h.send(ID_BASE, &frame(OpCode::Text, b"4bye"));
        let mut on = |_: Up<'_>| {};
        h.s.close(h.t0, ID_BASE, CloseCode::NORMAL, "", &mut on, &mut h.wire);
        h.ups.push("closed".into());
        assert_eq!(
            h.send(ID_BASE, &frame(OpCode::Text, b"4late")),
            Delivery::Dropped
        );
        assert_eq!(body(&h.post(1, &sid, b"4ignored")), "ok");
        assert_eq!(body(&h.get(2, 2, &sid)), "4bye\u{1e}1");
        assert!(h.s.is_empty());
        assert_eq!(h.ups(), ["closed"]);
        // Never polled again: gone after the close timeout.
        let _sid = h.open_polling();
        let id = ID_BASE;
        let ups = &mut h.ups;
        h.s.close(
            h.t0,
            id,
            CloseCode::NORMAL,
            "",
            &mut |u| ups.push(format!("{u:?}")),
            &mut h.wire,
        );
        assert_eq!(h.ups().len(), 2, "open, then closed once");
        h.tick(1999);
        assert_eq!(h.s.len(), 1);
        h.tick(2000);
        assert!(h.s.is_empty() && h.ups().is_empty());
    }

    #[test]
    fn websocket_sessions_ping_take_messages_and_end_on_bad_packets() {
        let mut h = Harness::new();
        let UpgradeAnswer::Accept(slot) = h.upgrade(0, 7, "/socket.io/?EIO=4&transport=websocket")
        else {
            panic!("refused");
        };
        let wire = h.wire();
        assert_eq!(wire.len(), 1);
        assert!(wire[0].starts_with(r#"frame 7 0{"sid":""#), "{wire:?}");
        assert!(wire[0].contains(r#""upgrades":[],"#), "{wire:?}");
        assert_eq!(h.ups().len(), 1);
        h.ws_text(1, slot, 7, "4hello");
        assert_eq!(
            h.ups(),
            [format!("Text {{ id: {ID_BASE}, text: \"hello\" }}")]
        );
        h.tick(300);
        assert_eq!(h.wire(), ["frame 7 2"]);
        h.ws_text(400, slot, 7, "3");
        h.tick(500);
        assert!(h.wire().is_empty() && h.ups().is_empty());
        h.tick(700);
        assert_eq!(h.wire(), ["frame 7 2"]);
        // Over maxPayload: 1009.
        h.ws_text(701, slot, 7, &"4".repeat(1001));
        assert_eq!(h.wire(), ["close 7 1009"]);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
        for (bad, code) in [("x", 1002), ("2", 1002), ("1", 1000)] {
            let UpgradeAnswer::Accept(slot) =
                h.upgrade(0, 8, "/socket.io/?EIO=4&transport=websocket")
            else {
                panic!();
            };
            h.wire();
            h.ws_text(1, slot, 8, bad);
            assert_eq!(h.wire(), [format!("close 8 {code}")], "{bad:?}");
        }
        let polling = h.upgrade(0, 9, "/socket.io/?EIO=4&transport=polling");
        assert_eq!(polling, UpgradeAnswer::Close);
        for (target, want) in [
            ("/socket.io/?EIO=4", "Transport unknown"),
            (
                "/socket.io/?EIO=abc&transport=websocket",
                "Unsupported protocol version",
            ),
            (
                "/socket.io/?EIO=4&transport=websocket&sid=nope",
                "Session ID unknown",
            ),
        ] {
            let UpgradeAnswer::Refuse(r) = h.upgrade(0, 9, target) else {
                panic!("{target}");
            };
            let text = String::from_utf8(r).unwrap();
            assert!(
                text.starts_with("HTTP/1.1 400 ") && text.ends_with(want),
                "{text}"
            );
        }
    }

    #[test]
    fn a_polling_session_upgrades_to_websocket() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        h.ups();
        assert!(matches!(h.get(1, 2, &sid), Answer::Hold { .. }));
        h.send(ID_BASE, &frame(OpCode::Text, b"4early"));
        // Nothing is flushed yet; the probe arrives.
        let target = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let UpgradeAnswer::Accept(slot) = h.upgrade(2, 5, &target) else {
            panic!();
        };
        // A second probe is closed after its 101 while one is under way, as the reference does.
        assert_eq!(h.upgrade(2, 6, &target), UpgradeAnswer::Close);
        h.ws_text(3, slot, 5, "2probe");
        assert_eq!(h.wire(), ["frame 5 3probe", "respond 2 4early"]);
        // Polls are answered at once while the client pauses.
        assert_eq!(body(&h.get(4, 3, &sid)), "6");
        h.send(ID_BASE, &frame(OpCode::Text, b"4queued"));
        h.ws_text(5, slot, 5, "5");
        assert_eq!(h.wire(), ["frame 5 4queued", "release"]);
        assert_eq!(
            h.send(ID_BASE, &frame(OpCode::Text, b"4x")),
            Delivery::Ws(5)
        );
        h.ws_text(6, slot, 5, "4up");
        assert_eq!(h.ups(), [format!("Text {{ id: {ID_BASE}, text: \"up\" }}")]);
        // The session is on WebSocket now: polling is refused, another WebSocket closed.
        assert!(body(&h.get(7, 3, &sid)).starts_with(r#"400 {"code":3,"#));
        assert_eq!(h.upgrade(7, 6, &target), UpgradeAnswer::Close);
        // Losing its WebSocket ends it.
        let ups = &mut h.ups;
        h.s.conn_closed(slot, 5, &mut |u| ups.push(format!("{u:?}")), &mut h.wire);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
        assert!(h.wire().is_empty());
    }

    #[test]
    fn a_failed_probe_leaves_the_session_polling() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        let target = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let UpgradeAnswer::Accept(slot) = h.upgrade(1, 5, &target) else {
            panic!();
        };
        h.ws_text(2, slot, 5, "4not yet");
        assert_eq!(h.wire(), ["close 5 1002"]);
        assert!(matches!(h.get(3, 2, &sid), Answer::Hold { .. }));
        // A new probe may come; a probe whose socket goes only ends the upgrade.
        let UpgradeAnswer::Accept(slot) = h.upgrade(4, 6, &target) else {
            panic!();
        };
        let ups = &mut h.ups;
        h.s.conn_closed(slot, 6, &mut |u| ups.push(format!("{u:?}")), &mut h.wire);
        assert_eq!(h.s.len(), 1);
        // A held poll whose socket goes ends the session ("closed prematurely").
        h.ups();
        let ups = &mut h.ups;
        h.s.conn_closed(slot, 2, &mut |u| ups.push(format!("{u:?}")), &mut h.wire);
        assert_eq!(h.ups(), [format!("Closed {{ id: {ID_BASE} }}")]);
        assert_eq!(h.wire(), ["release"]);
    }

    #[test]
    fn shutdown_answers_held_polls_and_ends_every_session() {
        let mut h = Harness::new();
        let sid = h.open_polling();
        assert!(matches!(h.get(1, 2, &sid), Answer::Hold { .. }));
        h.upgrade(0, 7, "/socket.io/?EIO=4&transport=websocket");
        h.wire();
        h.ups();
        let ups = &mut h.ups;
        h.s.shutdown(&mut |u| ups.push(format!("{u:?}")), &mut h.wire);
        assert_eq!(h.wire(), ["respond 2 1", "release"]);
        assert_eq!(h.ups().len(), 2);
        assert!(h.s.is_empty());
    }
}
