//! Socket.IO v5 over Engine.IO v4 (`/socket.io/`): the application side of a socket.io
//! client, independent of its transport.
//!
//! The contract with the Engine.IO layer (`src/eio/`, in the event loop): every Engine.IO
//! session has an id in the same space as WebSocket connections (`usize`), whatever its
//! transport (WebSocket, or long polling, where the session outlives each request). The
//! Engine.IO layer handles its own packets (open, ping/pong, upgrade, noop, close) and hands the
//! app only sessions opening and closing and their `message` packets (type 4), through
//! [`crate::app::App`]'s `on_eio_*` methods, which forward here. Everything the app sends a
//! session is a WebSocket frame holding one whole Engine.IO packet: a text frame `4…` for a
//! text message, a binary frame (no prefix) for a binary one, queued with the usual
//! [`crate::app::Action`]s (`Send`, `Publish`, `Close`). The Engine.IO layer writes it as is to a
//! WebSocket session and turns it into a polling payload (`4…`, or `b` + base64) for a polling
//! one, so a broadcast is encoded once for every receiver.
//!
//! What [`SioServer`] does with them (socket.io-protocol, "Exchange protocol"):
//!
//! - A session is a set of *sockets*, one per namespace it connected to: `/` always, and those
//!   of `--sio-namespace`. `CONNECT` to another namespace is refused with
//!   `44/nsp,{"message":"Invalid namespace"}`; one that never connects any within
//!   `--sio-connect-timeout` (45 s, the reference server's `connectTimeout`) is closed.
//! - A malformed packet, a binary packet whose attachments are too many or too large (more
//!   than [`packet::MAX_ATTACHMENTS`], or [`MAX_ATTACHMENT_BYTES`] together) or do not come
//!   within the same timeout, and any packet but `CONNECT` for a namespace the session has no
//!   socket on, close the session (the reference's `Client.ondata` and `ondecoded` close the
//!   Engine.IO connection for each). `DISCONNECT` ends one socket; the session stays.
//! - `--mode echo` is the official test suite's reference server (socket.io-protocol's
//!   README): a new socket gets `auth` with its CONNECT payload (written apart from the
//!   CONNECT answer, see `ECHO_AUTH_DELAY`); on `/`, `message` comes back as `message-back`
//!   and `message-with-ack` is acknowledged, with the same arguments (and attachments);
//!   `/custom` exists. `--mode relay` behaves the same. With the Engine.IO layer, the suite
//!   passes whole (32 of 32) against `--mode echo --sio-connect-timeout 1000` and its ping
//!   timings.
//! - `--mode chat` is the tutorial chat over the chat's rooms: see [`chat`] for how events go
//!   through a room's log and come back, with their offsets for connection-state recovery.
//!   The room is the CONNECT payload's `room`, else the handshake query's (`io(url, {query:
//!   {room}})`), else `main`. A session's events count against `--max-message-rate` like a
//!   chat connection's messages; over it, the socket gets an `error` event and a DISCONNECT.
//!   What needs the rooms (joins, leaves, events to commit) is handed
//!   to the app as [`Request`]s, which it answers through [`SioServer::placed`],
//!   [`SioServer::joined`], [`SioServer::publish`], [`SioServer::ack`] and the like.
//!
//! Memory: one `Session` entry per session (32 bytes, with the first socket inline), a
//! member entry (16 bytes) per socket in a chat room, and nothing else while it is idle; more
//! sockets, and a binary packet being collected, live in a box only sessions that need them
//! have.

pub mod chat;
pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::value::RawValue;
use slab::Slab;

use self::chat::Rendered;
use self::packet::{Assembly, Data, MAX_ATTACHMENTS, Packet, PacketError, PacketType};
use crate::app::{Action, Mode, query_param};
use crate::conn::Frame;
use crate::proto::{CloseCode, OpCode, frame};
use crate::room::log::Log;
use crate::room::{DEFAULT_ROOM, MAX_ROOM_NAME, RoomId};

/// How long a session has to connect to a namespace: the reference server's `connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(45_000);

/// Namespaces a server serves at most, `/` included (each socket names its own in a byte).
pub const MAX_NAMESPACES: usize = 32;

/// Bytes of binary attachments one packet may carry together: the reference server's
/// `maxHttpBufferSize` (1 MB) for one Engine.IO message, here for all of a packet's.
pub const MAX_ATTACHMENT_BYTES: usize = 1 << 20;

/// How long echo mode holds the `auth` event after the CONNECT answer. The reference server
/// writes it separately: socket.io emits it in the same tick as the answer, but engine.io sends
/// what comes while a write is in flight once that write drains. A client that handles one
/// message per read, as the official test suite's `waitFor` does (a promise resolved by the
/// first of two messages that came in one TCP segment registers its next listener too late),
/// needs them apart: a millisecond, when the answer is long written (writes only microseconds
/// apart still reach it in one read). What echo mode sends that session meanwhile waits behind
/// it, in order.
const ECHO_AUTH_DELAY: Duration = Duration::from_millis(1);

/// The close reasons (RFC 6455 §7.4.1: 1008 for a policy, 1002 for a protocol violation).
const CONNECT_TIMEOUT_REASON: &str = "no socket.io CONNECT in time";
const ATTACHMENT_TIMEOUT_REASON: &str = "socket.io attachments did not come in time";

/// What the socket.io side of a server does.
#[derive(Debug, Clone)]
pub struct SioConfig {
    /// Chat rooms (`--mode chat`), or the test suite's echo server.
    pub chat: bool,
    /// The namespaces clients may connect to, `/` first.
    pub namespaces: Vec<Box<str>>,
    /// How long a session has to connect to a namespace, and a binary packet to be whole.
    pub connect_timeout: Duration,
}

impl SioConfig {
    /// The defaults for a server in `mode`: `/`, and `/custom` in echo and relay modes.
    pub fn new(mode: Mode) -> Self {
        let mut namespaces = vec![Box::from("/")];
        if mode != Mode::Chat {
            namespaces.push("/custom".into());
        }
        Self {
            chat: mode == Mode::Chat,
            namespaces,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Adds namespaces (`--sio-namespace`), each once.
    pub fn with_namespaces(mut self, names: &[String]) -> Self {
        for name in names {
            if !self.namespaces.iter().any(|n| **n == **name) {
                self.namespaces.push(name.as_str().into());
            }
        }
        self.namespaces.truncate(MAX_NAMESPACES);
        self
    }
}

impl Default for SioConfig {
    fn default() -> Self {
        Self::new(Mode::Chat)
    }
}

/// Whether `name` may name a namespace: `/` and up to 63 more of `[A-Za-z0-9_.-/]`, so it is
/// written in packets and JSON without escaping and never holds the `,` that ends it.
pub fn valid_namespace(name: &str) -> bool {
    name.starts_with('/')
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
}

/// What a socket asks of the chat rooms, for the app (see [`SioServer::take_requests`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A socket connecting to namespace `nsp` wants room `room`: the app answers with
    /// [`SioServer::placed`] or [`SioServer::refuse`] at once, and [`SioServer::joined`]
    /// once the room's log can be read.
    Join {
        /// The session.
        session: usize,
        /// Which session with that id.
        serial: u32,
        /// The namespace's index.
        nsp: u8,
        /// The room's name (not checked yet).
        room: Rc<str>,
        /// Where a reconnecting client left off, if it asks to recover.
        recover: Option<Recover>,
    },
    /// A socket placed in `room` is gone; `announced` if it had joined (its arrival was told).
    Leave {
        /// The room.
        room: RoomId,
        /// Whether it had joined.
        announced: bool,
    },
    /// A joined socket emitted an event: `draft` is its log entry (see [`chat::draft`]); the
    /// socket is to be acknowledged with [`SioServer::ack`] once it is committed.
    Event {
        /// The session.
        session: usize,
        /// Which session with that id.
        serial: u32,
        /// The namespace's index.
        nsp: u8,
        /// The socket's room.
        room: RoomId,
        /// The draft.
        draft: Rc<str>,
        /// The acknowledgment id the client asked for.
        ack: Option<u64>,
    },
}

/// A reconnecting client's private session id and offset (its CONNECT's `pid` and `offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    /// The `pid` it was given, answered again if it recovers.
    pub pid: Box<str>,
    /// The epoch of its last event.
    pub epoch: Box<str>,
    /// The seq of its last event.
    pub seq: u64,
}

/// One socket: a session's connection to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Socket {
    /// The namespace's index; [`NO_SOCKET`] marks an empty slot.
    nsp: u8,
    /// Chat: in its room's member list (it gets the room's events), or waiting for the room.
    joined: bool,
    /// Chat: its room, once the app placed it ([`NO_ROOM`] before).
    room: u32,
    /// Chat: its place in the room's member list, once joined.
    index: u32,
}

const NO_SOCKET: u8 = u8::MAX;
const NO_ROOM: u32 = u32::MAX;
const EMPTY: Socket = Socket {
    nsp: NO_SOCKET,
    joined: false,
    room: NO_ROOM,
    index: 0,
};

/// The query names no room.
const NO_NAME: u32 = u32::MAX;

/// One Engine.IO session's socket.io state.
#[derive(Debug)]
struct Session {
    /// Tells this session from a later one with the same id.
    serial: u32,
    /// The handshake query's room: an index in [`SioServer::names`], or [`NO_NAME`].
    query: u32,
    /// The first socket, inline: most sessions have one.
    first: Socket,
    /// Whether a socket ever connected: the connect deadline no longer applies.
    connected_once: bool,
    /// What few sessions need: more sockets, a binary packet being collected.
    more: Option<Box<More>>,
}

// The memory budget of an idle session (see the module documentation).
const _: () = assert!(std::mem::size_of::<Session>() <= 32);

#[derive(Debug, Default)]
struct More {
    /// Sockets after the first.
    sockets: Vec<Socket>,
    /// A binary packet waiting for its attachments, and when it started.
    assembly: Option<(Assembly, Instant)>,
}

impl Session {
    fn socket(&self, nsp: u8) -> Option<&Socket> {
        if self.first.nsp == nsp {
            return Some(&self.first);
        }
        self.more.as_ref()?.sockets.iter().find(|s| s.nsp == nsp)
    }

    fn socket_mut(&mut self, nsp: u8) -> Option<&mut Socket> {
        if self.first.nsp == nsp {
            return Some(&mut self.first);
        }
        self.more
            .as_mut()?
            .sockets
            .iter_mut()
            .find(|s| s.nsp == nsp)
    }

    fn add(&mut self, socket: Socket) {
        if self.first.nsp == NO_SOCKET {
            self.first = socket;
        } else {
            self.more.get_or_insert_default().sockets.push(socket);
        }
    }

    fn remove(&mut self, nsp: u8) -> Option<Socket> {
        if self.first.nsp == nsp {
            return Some(std::mem::replace(&mut self.first, EMPTY));
        }
        let more = self.more.as_mut()?;
        let at = more.sockets.iter().position(|s| s.nsp == nsp)?;
        let socket = more.sockets.swap_remove(at);
        self.shrink();
        Some(socket)
    }

    /// Drops the box once nothing is in it.
    fn shrink(&mut self) {
        if self
            .more
            .as_ref()
            .is_some_and(|m| m.sockets.is_empty() && m.assembly.is_none())
        {
            self.more = None;
        }
    }

    fn sockets(&self) -> impl Iterator<Item = Socket> + '_ {
        let more = self.more.iter().flat_map(|m| m.sockets.iter().copied());
        std::iter::once(self.first)
            .filter(|s| s.nsp != NO_SOCKET)
            .chain(more)
    }
}

/// A socket in a chat room's member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    /// Any id of the app's space: Engine.IO sessions are numbered high in it.
    session: usize,
    nsp: u8,
}

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The session must have connected a socket.
    Connect,
    /// A binary packet begun then must be whole.
    Assembly,
}

#[derive(Debug)]
struct Deadline {
    at: Instant,
    session: usize,
    serial: u32,
    due: Due,
}

/// The Socket.IO server state: sockets per session and namespace, pending connects, acks.
#[derive(Debug)]
pub struct SioServer {
    config: SioConfig,
    sessions: HashMap<usize, Session>,
    /// Chat: the sockets in each room, by the app's room id.
    members: HashMap<RoomId, Vec<Member>>,
    /// Connect and attachment deadlines in the order they fall (one timeout for all, so
    /// they are pushed in order); one whose session or packet is gone is dropped when due.
    deadlines: VecDeque<Deadline>,
    /// Echo mode's `auth` events held after their CONNECT answer (see [`ECHO_AUTH_DELAY`]),
    /// in order: for session (and serial), namespace.
    held: VecDeque<(Instant, usize, u32, u8, Frame)>,
    /// Counts sessions, to tell them apart (see [`Session::serial`]).
    serial: u32,
    /// What the app has to do for sockets, in order.
    requests: Vec<Request>,
    /// Room names handshake queries named, with how many sessions hold each: a session keeps
    /// an index, not a copy.
    names: Slab<(Rc<str>, u32)>,
    name_ids: HashMap<Rc<str>, u32>,
    /// Keys for ids: a process-random SipHash (std's `RandomState`).
    keys: RandomState,
    /// Counts ids made.
    tokens: u64,
    /// Reused for packets and frames.
    text: Vec<u8>,
    frame: Vec<u8>,
}

impl Default for SioServer {
    fn default() -> Self {
        Self::new(SioConfig::default())
    }
}

impl SioServer {
    /// A server with no session yet.
    pub fn new(config: SioConfig) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            members: HashMap::new(),
            deadlines: VecDeque::new(),
            held: VecDeque::new(),
            serial: 0,
            requests: Vec::new(),
            names: Slab::new(),
            name_ids: HashMap::new(),
            keys: RandomState::new(),
            tokens: 0,
            text: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// Engine.IO session `id` opened; `query` is its handshake request's query string.
    pub fn on_open(&mut self, id: usize, query: &str, now: Instant, out: &mut Vec<Action>) {
        if self.sessions.contains_key(&id) {
            // Not closed before its id was reused: its sockets go now.
            self.close(id, out);
        }
        self.serial = self.serial.wrapping_add(1);
        let query = match query_param(query, "room").filter(|n| !n.is_empty()) {
            Some(name) if self.config.chat => self.intern(name),
            _ => NO_NAME,
        };
        self.sessions.insert(
            id,
            Session {
                serial: self.serial,
                query,
                first: EMPTY,
                connected_once: false,
                more: None,
            },
        );
        self.deadlines.push_back(Deadline {
            at: now + self.config.connect_timeout,
            session: id,
            serial: self.serial,
            due: Due::Connect,
        });
    }

    /// A text `message` packet (its payload, without the `4`) from session `id`.
    pub fn on_text(&mut self, id: usize, text: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        if session.more.as_ref().is_some_and(|m| m.assembly.is_some()) {
            return self.fail(id, PacketError::TextInAttachments, out);
        }
        let packet = match packet::decode(text, MAX_ATTACHMENTS) {
            Ok(p) => p,
            Err(e) => return self.fail(id, e, out),
        };
        if packet.kind.is_binary() && packet.attachments > 0 {
            let serial = session.serial;
            if let Some(session) = self.sessions.get_mut(&id) {
                let assembly = Assembly::new(text, packet.attachments);
                session.more.get_or_insert_default().assembly = Some((assembly, now));
            }
            self.deadlines.push_back(Deadline {
                at: now + self.config.connect_timeout,
                session: id,
                serial,
                due: Due::Assembly,
            });
            return;
        }
        self.handle(id, packet, &[], now, out);
    }

    /// A binary `message` packet from session `id`.
    pub fn on_binary(&mut self, id: usize, data: &[u8], now: Instant, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some((assembly, _)) = session.more.as_mut().and_then(|m| m.assembly.as_mut()) else {
            return self.fail(id, PacketError::UnexpectedBinary, out);
        };
        match assembly.push(data, MAX_ATTACHMENT_BYTES) {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => return self.fail(id, e, out),
        }
        let Some((assembly, _)) = session.more.as_mut().and_then(|m| m.assembly.take()) else {
            return;
        };
        session.shrink();
        // It decoded when it came; a failure now would be a bug, answered as a bad packet.
        let packet = match packet::decode(assembly.head(), MAX_ATTACHMENTS) {
            Ok(p) => p,
            Err(e) => return self.fail(id, e, out),
        };
        if let Data::Array(items) = &packet.data
            && let Err(e) = packet::check_placeholders(items, assembly.attachments().len())
        {
            return self.fail(id, e, out);
        }
        self.handle(id, packet, assembly.attachments(), now, out);
    }

    /// Session `id` closed (any reason); its sockets are gone.
    pub fn on_close(&mut self, id: usize, out: &mut Vec<Action>) {
        self.close(id, out);
    }

    /// The earliest time [`SioServer::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.held.front().map(|h| h.0);
        [self.deadlines.front().map(|d| d.at), held]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sessions that never sent a CONNECT in time are closed, and the like.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        while self.held.front().is_some_and(|h| h.0 <= now) {
            let Some((_, to, serial, nsp, frame)) = self.held.pop_front() else {
                break;
            };
            // Its socket is still there (the session's other output is sent anyway).
            if self.sessions.get(&to).is_some_and(|s| s.serial == serial)
                && (nsp == NO_SOCKET || self.connected(to, serial, nsp))
            {
                out.push(Action::Send { to, frame });
            }
        }
        while let Some(d) = self.deadlines.front() {
            if d.at > now {
                break;
            }
            let Some(d) = self.deadlines.pop_front() else {
                break;
            };
            let Some(session) = self
                .sessions
                .get(&d.session)
                .filter(|s| s.serial == d.serial)
            else {
                continue;
            };
            let reason = match d.due {
                Due::Connect if !session.connected_once => CONNECT_TIMEOUT_REASON,
                Due::Assembly
                    if session
                        .more
                        .as_ref()
                        .and_then(|m| m.assembly.as_ref())
                        .is_some_and(|(_, since)| *since + self.config.connect_timeout <= now) =>
                {
                    ATTACHMENT_TIMEOUT_REASON
                }
                _ => continue,
            };
            crate::log!(Debug, "socket.io session {}: {reason}", d.session);
            self.close(d.session, out);
            out.push(Action::Close {
                to: d.session,
                code: CloseCode::POLICY,
                reason,
            });
        }
        // A burst of sessions opening leaves no queue behind once their deadlines are past.
        if self.deadlines.capacity() > 64 && self.deadlines.len() < self.deadlines.capacity() / 4 {
            self.deadlines.shrink_to(self.deadlines.len() * 2);
        }
    }

    /// Moves what sockets asked of the chat rooms to `out`, in order.
    pub fn take_requests(&mut self, out: &mut Vec<Request>) {
        out.append(&mut self.requests);
    }

    /// Whether any socket is in room `room`.
    pub fn has_members(&self, room: RoomId) -> bool {
        self.members.contains_key(&room)
    }

    /// The app put a connecting socket in room `room` (its join waits for the room's log).
    pub fn placed(&mut self, session: usize, serial: u32, nsp: u8, room: RoomId) {
        let Ok(room) = u32::try_from(room) else {
            return;
        };
        if let Some(socket) = self
            .sessions
            .get_mut(&session)
            .filter(|s| s.serial == serial)
            .and_then(|s| s.socket_mut(nsp))
            .filter(|k| !k.joined)
        {
            socket.room = room;
        }
    }

    /// The app refused a connecting socket its room: `why` goes back as a CONNECT_ERROR.
    pub fn refuse(
        &mut self,
        session: usize,
        serial: u32,
        nsp: u8,
        why: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self
            .sessions
            .get_mut(&session)
            .filter(|s| s.serial == serial)
        else {
            return;
        };
        if s.socket(nsp).is_none_or(|k| k.joined) {
            return;
        }
        let socket = s.remove(nsp);
        debug_assert!(
            socket.is_some_and(|k| k.room == NO_ROOM),
            "refused once placed"
        );
        let name = self.namespace_name(nsp);
        self.start(PacketType::ConnectError, 0, &name, None);
        self.text.extend_from_slice(br#"{"message":"#);
        let _ = serde_json::to_writer(&mut self.text, why);
        self.text.push(b'}');
        self.send_text(session, out);
    }

    /// The room's log can be read: the connecting socket joins the room and is told so.
    /// A client that asked to recover and whose offset is in the room's history gets what it
    /// missed, then its CONNECT answer with the same `pid` (its `socket.recovered` is true);
    /// any other gets the answer with a new `pid`, then the welcome with the room's current
    /// offset. Returns whether the socket joined (it was still waiting), so the app announces
    /// it.
    #[allow(clippy::too_many_arguments)]
    pub fn joined(
        &mut self,
        session: usize,
        serial: u32,
        nsp: u8,
        room: RoomId,
        log: &dyn Log,
        recover: Option<&Recover>,
        out: &mut Vec<Action>,
    ) -> bool {
        let Ok(room32) = u32::try_from(room) else {
            return false;
        };
        let Some(s) = self
            .sessions
            .get_mut(&session)
            .filter(|s| s.serial == serial)
        else {
            return false;
        };
        let Some(socket) = s.socket_mut(nsp).filter(|k| !k.joined && k.room == room32) else {
            return false;
        };
        let members = self.members.entry(room).or_default();
        socket.joined = true;
        socket.index = u32::try_from(members.len()).unwrap_or(u32::MAX);
        members.push(Member { session, nsp });
        s.connected_once = true;
        let (epoch, last) = (log.epoch(room), log.last_seq(room));
        // The client's offset is in this epoch of the room (or is "nothing yet" in a room the
        // store had not made when it was given), not past the room's last event, and every
        // event after it is still kept.
        let recovered = recover
            .filter(|r| r.seq <= last && (*r.epoch == *epoch || (r.epoch.is_empty() && r.seq == 0)))
            .and_then(|r| {
                let read = log.read(room, Some(r.seq));
                read.gap.is_none().then_some((r, read.events))
            });
        let name = self.namespace_name(nsp);
        let recovering = recovered.is_some();
        let pid = match recovered {
            Some((r, events)) => {
                // The reference sends the missed packets first, then the CONNECT answer; the
                // client holds them until it is connected.
                for (seq, json) in events {
                    if let Some(rendered) = chat::render(json, &epoch, seq) {
                        self.send_rendered(session, &name, &rendered, out);
                    }
                }
                String::from(&*r.pid)
            }
            None => self.token(),
        };
        let sid = self.sid(&pid);
        self.start(PacketType::Connect, 0, &name, None);
        self.text.extend_from_slice(br#"{"sid":""#);
        self.text.extend_from_slice(sid.as_bytes());
        self.text.extend_from_slice(br#"","pid":""#);
        self.text.extend_from_slice(pid.as_bytes());
        self.text.extend_from_slice(br#""}"#);
        self.send_text(session, out);
        if !recovering {
            self.start(PacketType::Event, 0, &name, None);
            let text = &mut self.text;
            text.extend_from_slice(br#"[""#);
            text.extend_from_slice(chat::WELCOME_EVENT.as_bytes());
            text.extend_from_slice(br#"",""#);
            text.extend_from_slice(chat::WELCOME_TEXT.as_bytes());
            text.extend_from_slice(br#"",""#);
            chat::offset(&epoch, last, text);
            text.extend_from_slice(br#""]"#);
            self.send_text(session, out);
        }
        true
    }

    /// Sends a committed room event (`json`, as the log keeps it) to the room's sockets, with
    /// its offset: each packet encoded once per namespace and shared by its receivers.
    pub fn publish(
        &mut self,
        room: RoomId,
        epoch: &str,
        seq: u64,
        json: &str,
        out: &mut Vec<Action>,
    ) {
        if !self.members.contains_key(&room) {
            return;
        }
        let Some(rendered) = chat::render(json, epoch, seq) else {
            return;
        };
        self.fan_out(room, &rendered, out);
    }

    /// Queues `rendered` to every socket of the room it is for.
    fn fan_out(&mut self, room: RoomId, rendered: &Rendered, out: &mut Vec<Action>) {
        let Some(members) = self.members.get(&room) else {
            return;
        };
        // Frames per namespace index, made when its first receiver is found.
        let mut frames: Vec<Option<Vec<Frame>>> = vec![None; self.config.namespaces.len()];
        for m in members {
            debug_assert!(self.sessions.contains_key(&m.session), "{m:?}");
            let Some(name) = self.config.namespaces.get(usize::from(m.nsp)) else {
                continue;
            };
            if *rendered.nsp != **name {
                continue;
            }
            let Some(slot) = frames.get_mut(usize::from(m.nsp)) else {
                continue;
            };
            let encoded = slot.get_or_insert_with(|| {
                let mut text = vec![b'4'];
                chat::packet_text(rendered, name, &mut text);
                let mut all = vec![frame(&mut self.frame, OpCode::Text, &text)];
                for a in &rendered.attachments {
                    all.push(frame(&mut self.frame, OpCode::Binary, a));
                }
                all
            });
            for f in encoded.iter() {
                out.push(Action::Send {
                    to: m.session,
                    frame: f.clone(),
                });
            }
        }
    }

    /// Acknowledges event `id` of a socket, once it is committed (with no arguments, as the
    /// tutorial's server calls `callback()`).
    pub fn ack(&mut self, session: usize, serial: u32, nsp: u8, id: u64, out: &mut Vec<Action>) {
        if !self.connected(session, serial, nsp) {
            return;
        }
        let name = self.namespace_name(nsp);
        self.start(PacketType::Ack, 0, &name, Some(id));
        self.text.extend_from_slice(b"[]");
        self.send_text(session, out);
    }

    /// Tells a socket its event was not sent: an `error` event `{"message":…}`, the shape of
    /// socket.io's own errors (no offset: it is no room event).
    pub fn error(
        &mut self,
        session: usize,
        serial: u32,
        nsp: u8,
        msg: &str,
        out: &mut Vec<Action>,
    ) {
        if !self.connected(session, serial, nsp) {
            return;
        }
        let name = self.namespace_name(nsp);
        self.start(PacketType::Event, 0, &name, None);
        self.text.extend_from_slice(br#"["error",{"message":"#);
        let _ = serde_json::to_writer(&mut self.text, msg);
        self.text.extend_from_slice(b"}]");
        self.send_text(session, out);
    }

    /// Disconnects a socket from the server's side (a chat client over its message rate):
    /// `msg` as an error, then DISCONNECT; the session and its other sockets stay.
    pub fn kick(&mut self, session: usize, serial: u32, nsp: u8, msg: &str, out: &mut Vec<Action>) {
        if !self.connected(session, serial, nsp) {
            return;
        }
        self.error(session, serial, nsp, msg, out);
        let name = self.namespace_name(nsp);
        self.start(PacketType::Disconnect, 0, &name, None);
        self.send_text(session, out);
        self.remove_socket(session, nsp);
    }

    /// Whether session `session` (that one) has a socket on `nsp`.
    fn connected(&self, session: usize, serial: u32, nsp: u8) -> bool {
        self.sessions
            .get(&session)
            .filter(|s| s.serial == serial)
            .is_some_and(|s| s.socket(nsp).is_some())
    }

    /// Handles one whole packet (its attachments with it).
    fn handle(
        &mut self,
        id: usize,
        packet: Packet<'_>,
        attachments: &[Box<[u8]>],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let nsp = self.namespace(packet.nsp);
        let socket = nsp.and_then(|n| self.sessions.get(&id)?.socket(n).copied());
        match (packet.kind, nsp, socket) {
            (PacketType::Connect, None, _) => {
                // socket.io's `Client.connect`: an unknown namespace is refused, the session
                // stays.
                self.start(PacketType::ConnectError, 0, packet.nsp, None);
                self.text
                    .extend_from_slice(br#"{"message":"Invalid namespace"}"#);
                self.send_text(id, out);
            }
            (PacketType::Connect, Some(n), None) => {
                let auth = match packet.data {
                    Data::Object(auth) => auth,
                    _ => "{}",
                };
                self.connect(id, n, auth, now, out);
            }
            // A CONNECT for a namespace it is on, any other packet for one it is not on, and a
            // CONNECT_ERROR (the server's to send) are an "invalid state" to the reference.
            (PacketType::Connect | PacketType::ConnectError, ..) | (_, _, None) => {
                self.fail(id, PacketError::Payload, out)
            }
            (PacketType::Disconnect, _, Some(socket)) => self.remove_socket(id, socket.nsp),
            (PacketType::Event | PacketType::BinaryEvent, _, Some(socket)) => {
                let Data::Array(items) = &packet.data else {
                    return;
                };
                if self.config.chat {
                    self.chat_event(id, socket, items, attachments, packet.id, out);
                } else if socket.nsp == 0 {
                    self.echo(id, items, attachments, packet.id, out);
                }
            }
            // The server never asks for an acknowledgment: nothing awaits one.
            (PacketType::Ack | PacketType::BinaryAck, ..) => {}
        }
    }

    /// CONNECT to namespace `nsp` with payload `auth` (a JSON object).
    fn connect(&mut self, id: usize, nsp: u8, auth: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if !self.config.chat {
            session.add(Socket {
                nsp,
                joined: true,
                room: NO_ROOM,
                index: 0,
            });
            session.connected_once = true;
            let name = self.namespace_name(nsp);
            let sid = self.token();
            self.start(PacketType::Connect, 0, &name, None);
            self.text.extend_from_slice(br#"{"sid":""#);
            self.text.extend_from_slice(sid.as_bytes());
            self.text.extend_from_slice(br#""}"#);
            self.send_text(id, out);
            // The reference server's `socket.emit("auth", socket.handshake.auth)`, written
            // after the answer (see `ECHO_AUTH_DELAY`).
            self.start(PacketType::Event, 0, &name, None);
            packet::write_array([r#""auth""#, auth], &mut self.text);
            let frame = frame(&mut self.frame, OpCode::Text, &self.text);
            let serial = self.sessions.get(&id).map_or(0, |s| s.serial);
            self.held
                .push_back((now + ECHO_AUTH_DELAY, id, serial, nsp, frame));
            return;
        }
        // Fields as JavaScript reads them: the last of a repeated key; only strings count.
        let fields: HashMap<std::borrow::Cow<'_, str>, &RawValue> =
            serde_json::from_str(auth).unwrap_or_default();
        let text =
            |key: &str| -> Option<String> { serde_json::from_str(fields.get(key)?.get()).ok() };
        let (serial, query) = (session.serial, session.query);
        let room: Rc<str> = match text("room") {
            Some(room) => room.into(),
            None => match self.names.get(query as usize) {
                Some((name, _)) => name.clone(),
                None if query == NO_NAME => DEFAULT_ROOM.into(),
                // Named, but too long to be a room: refused as invalid by the app.
                None => "".into(),
            },
        };
        let recover = (|| {
            let pid = text("pid").filter(|p| valid_token(p))?;
            let offset = text("offset")?;
            let (epoch, seq) = chat::parse_offset(&offset)?;
            Some(Recover {
                pid: pid.into(),
                epoch: epoch.into(),
                seq,
            })
        })();
        session.add(Socket {
            nsp,
            joined: false,
            room: NO_ROOM,
            index: 0,
        });
        self.requests.push(Request::Join {
            session: id,
            serial,
            nsp,
            room,
            recover,
        });
    }

    /// The suite's reference server on `/`: `message` comes back as `message-back`,
    /// `message-with-ack` is acknowledged, both with the same arguments and attachments.
    fn echo(
        &mut self,
        id: usize,
        items: &[&str],
        attachments: &[Box<[u8]>],
        ack: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let Some((first, args)) = items.split_first() else {
            return;
        };
        let binary = !attachments.is_empty();
        match packet::event_name(first).as_deref() {
            Some("message") => {
                let kind = if binary {
                    PacketType::BinaryEvent
                } else {
                    PacketType::Event
                };
                self.start(kind, attachments.len(), "/", None);
                let items = std::iter::once(r#""message-back""#).chain(args.iter().copied());
                packet::write_array(items, &mut self.text);
            }
            Some("message-with-ack") if ack.is_some() => {
                let kind = if binary {
                    PacketType::BinaryAck
                } else {
                    PacketType::Ack
                };
                self.start(kind, attachments.len(), "/", ack);
                packet::write_array(args.iter().copied(), &mut self.text);
            }
            _ => return,
        }
        self.send_text(id, out);
        for a in attachments {
            let frame = frame(&mut self.frame, OpCode::Binary, a);
            self.send(id, frame, out);
        }
    }

    /// An event from a socket in a chat room: handed to the app for the room's log, unless it
    /// is too large for it.
    fn chat_event(
        &mut self,
        id: usize,
        socket: Socket,
        items: &[&str],
        attachments: &[Box<[u8]>],
        ack: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let Some(serial) = self.sessions.get(&id).map(|s| s.serial) else {
            return;
        };
        if !socket.joined {
            // The reference has no socket until its CONNECT is answered: an "invalid state".
            return self.fail(id, PacketError::Payload, out);
        }
        let name = self.namespace_name(socket.nsp);
        let mut json = std::mem::take(&mut self.text);
        chat::draft(&name, items, attachments, &mut json);
        let size = json.len();
        let draft = std::str::from_utf8(&json).map(Rc::from);
        json.clear();
        self.text = json;
        match draft {
            Ok(draft) if size <= chat::MAX_EVENT => self.requests.push(Request::Event {
                session: id,
                serial,
                nsp: socket.nsp,
                room: socket.room as RoomId,
                draft,
                ack,
            }),
            _ => {
                let msg = format!("not sent: events are at most {} bytes", chat::MAX_EVENT);
                self.error(id, serial, socket.nsp, &msg, out);
            }
        }
    }

    /// Takes socket `nsp` of session `id` away: out of its room (the app hears of it).
    fn remove_socket(&mut self, id: usize, nsp: u8) {
        let Some(socket) = self.sessions.get_mut(&id).and_then(|s| s.remove(nsp)) else {
            return;
        };
        self.leave(socket);
    }

    /// A socket is gone: out of its room's member list, and the app told.
    fn leave(&mut self, socket: Socket) {
        if socket.room == NO_ROOM {
            return;
        }
        let room = socket.room as RoomId;
        if socket.joined
            && let Some(members) = self.members.get_mut(&room)
        {
            let index = socket.index as usize;
            if index < members.len() {
                members.swap_remove(index);
                // The member moved into `index` needs its place updated.
                if let Some(&moved) = members.get(index)
                    && let Some(k) = self
                        .sessions
                        .get_mut(&moved.session)
                        .and_then(|s| s.socket_mut(moved.nsp))
                {
                    k.index = socket.index;
                }
            }
            if members.is_empty() {
                self.members.remove(&room);
            }
        }
        self.requests.push(Request::Leave {
            room,
            announced: socket.joined,
        });
    }

    /// Forgets session `id` and its sockets.
    fn close(&mut self, id: usize, _out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        // One at a time, the session still there: a socket leaving a room's list moves
        // another into its place, maybe this session's next one, whose index must follow.
        let sockets: Vec<u8> = session.sockets().map(|s| s.nsp).collect();
        for nsp in sockets {
            self.remove_socket(id, nsp);
        }
        if let Some(session) = self.sessions.remove(&id) {
            self.release(session.query);
        }
    }

    /// Closes session `id` for a malformed packet, as the reference server does.
    fn fail(&mut self, id: usize, e: PacketError, out: &mut Vec<Action>) {
        crate::log!(Debug, "socket.io session {id}: {e}; closed");
        self.close(id, out);
        let code = match e {
            PacketError::AttachmentsTooBig => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL,
        };
        out.push(Action::Close {
            to: id,
            code,
            reason: "invalid socket.io packet",
        });
    }

    /// The index of a configured namespace.
    fn namespace(&self, name: &str) -> Option<u8> {
        let at = self.config.namespaces.iter().position(|n| **n == *name)?;
        u8::try_from(at).ok()
    }

    /// A configured namespace's name (shared, for writing while `self` is borrowed).
    fn namespace_name(&self, nsp: u8) -> Box<str> {
        self.config
            .namespaces
            .get(usize::from(nsp))
            .cloned()
            .unwrap_or_else(|| "/".into())
    }

    /// Starts a text packet in `self.text`: the Engine.IO `4`, then the packet's head.
    fn start(&mut self, kind: PacketType, attachments: usize, nsp: &str, id: Option<u64>) {
        self.text.clear();
        self.text.push(b'4');
        packet::encode_head(kind, attachments, nsp, id, &mut self.text);
    }

    /// Queues the packet in `self.text` to session `to`, as one text frame.
    fn send_text(&mut self, to: usize, out: &mut Vec<Action>) {
        let frame = frame(&mut self.frame, OpCode::Text, &self.text);
        self.send(to, frame, out);
    }

    /// Queues a frame to session `to`, behind an `auth` event held for it (echo mode).
    fn send(&mut self, to: usize, frame: Frame, out: &mut Vec<Action>) {
        match self.held.iter().rev().find(|h| h.1 == to) {
            Some(&(at, _, serial, ..)) => {
                self.held.push_back((at, to, serial, NO_SOCKET, frame));
            }
            None => out.push(Action::Send { to, frame }),
        }
    }

    /// Queues a room event to one socket on namespace `nsp`, if it is for that namespace.
    fn send_rendered(&mut self, to: usize, nsp: &str, rendered: &Rendered, out: &mut Vec<Action>) {
        if *rendered.nsp != *nsp {
            return;
        }
        self.text.clear();
        self.text.push(b'4');
        chat::packet_text(rendered, nsp, &mut self.text);
        self.send_text(to, out);
        for a in &rendered.attachments {
            let frame = frame(&mut self.frame, OpCode::Binary, a);
            out.push(Action::Send { to, frame });
        }
    }

    /// A new random id: 15 bytes in URL-safe base64, 20 characters, like the reference's
    /// `base64id`. From a process-random SipHash of a counter: unique and hard to guess, which
    /// is all an id needs here (a `pid` only replays a room's history, which its members may
    /// read anyway).
    fn token(&mut self) -> String {
        self.tokens += 1;
        self.digest(&self.tokens.to_le_bytes())
    }

    /// The socket id of a `pid`: a recovered socket gets its id back without it being kept.
    fn sid(&self, pid: &str) -> String {
        let mut seed = b"sid:".to_vec();
        seed.extend_from_slice(pid.as_bytes());
        self.digest(&seed)
    }

    fn digest(&self, seed: &[u8]) -> String {
        let a = self.keys.hash_one((seed, 0u8)).to_le_bytes();
        let b = self.keys.hash_one((seed, 1u8)).to_le_bytes();
        let mut bytes = [0u8; 15];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = if i < 8 {
                a.get(i).copied().unwrap_or(0)
            } else {
                b.get(i - 8).copied().unwrap_or(0)
            };
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A handshake query's room, shared with other sessions naming it: its index.
    fn intern(&mut self, name: &str) -> u32 {
        if name.len() > MAX_ROOM_NAME {
            // Too long to be a room: remembered as "named, but invalid" (see `connect`).
            return NO_NAME - 1;
        }
        let id = match self.name_ids.get(name) {
            Some(&id) => id,
            None => {
                let rc: Rc<str> = name.into();
                let Ok(id) = u32::try_from(self.names.insert((rc.clone(), 0))) else {
                    return NO_NAME - 1;
                };
                self.name_ids.insert(rc, id);
                id
            }
        };
        if let Some((_, holders)) = self.names.get_mut(id as usize) {
            *holders += 1;
        }
        id
    }

    /// A session that held a query room's name is gone.
    fn release(&mut self, id: u32) {
        let Some((_, holders)) = self.names.get_mut(id as usize) else {
            return;
        };
        *holders -= 1;
        if *holders == 0 {
            let (name, _) = self.names.remove(id as usize);
            self.name_ids.remove(&name);
        }
    }
}

/// Whether a client's `pid` looks like one this server gives: 1-64 of `[A-Za-z0-9_-]`.
fn valid_token(pid: &str) -> bool {
    (1..=64).contains(&pid.len())
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Encodes one server frame, shared by its receivers, using `scratch` for the encoding.
fn frame(scratch: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) -> Frame {
    scratch.clear();
    frame::encode_frame(opcode, payload, scratch);
    Frame::new(Rc::from(&scratch[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::decode_head;

    /// What an action does, readably: a frame's text or bytes to a session, or a close.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Out {
        Text(usize, String),
        Binary(usize, Vec<u8>),
        Close(usize, u16),
        Other,
    }

    /// Reads the actions back: each frame must be one whole unmasked server frame.
    pub(crate) fn read(out: &mut Vec<Action>) -> Vec<Out> {
        out.drain(..)
            .map(|action| match action {
                Action::Send { to, frame } => {
                    let frame = frame.plain();
                    let (head, len) = decode_head(frame, u64::MAX >> 1).unwrap().unwrap();
                    let payload = frame[len..].to_vec();
                    assert_eq!(payload.len() as u64, head.payload_len);
                    assert!(head.fin && head.mask.is_none());
                    match head.opcode {
                        OpCode::Text => Out::Text(to, String::from_utf8(payload).unwrap()),
                        OpCode::Binary => Out::Binary(to, payload),
                        other => panic!("{other:?}"),
                    }
                }
                Action::Close { to, code, .. } => Out::Close(to, code.0),
                _ => Out::Other,
            })
            .collect()
    }

    fn text(to: usize, s: &str) -> Out {
        Out::Text(to, s.to_owned())
    }

    /// An echo server (the suite's reference) with session 1 open at `now`.
    fn echo(now: Instant) -> SioServer {
        let mut sio = SioServer::new(SioConfig::new(Mode::Echo));
        sio.on_open(1, "EIO=4&transport=websocket", now, &mut Vec::new());
        sio
    }

    /// Sends `packets` as session 1's text messages; what came back, held `auth` events
    /// included (their millisecond passes).
    fn talk(sio: &mut SioServer, now: Instant, packets: &[&str]) -> Vec<Out> {
        let mut out = Vec::new();
        for p in packets {
            sio.on_text(1, p, now, &mut out);
        }
        sio.handle_timeout(now + ECHO_AUTH_DELAY, &mut out);
        read(&mut out)
    }

    /// `40{"sid":…}` with nothing but a 20-character sid; returns what followed it.
    fn connected(got: &[Out], prefix: &str) -> Vec<Out> {
        let Some(Out::Text(1, first)) = got.first() else {
            panic!("{got:?}")
        };
        let json = first
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{first}"));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["sid"]);
        assert_eq!(v["sid"].as_str().unwrap().len(), 20);
        got[1..].to_vec()
    }

    /// The suite's `initSocketIOConnection`: session 1 connected to `/`.
    fn suite_session(now: Instant) -> SioServer {
        let mut sio = echo(now);
        let got = talk(&mut sio, now, &["0"]);
        assert_eq!(connected(&got, "40"), [text(1, r#"42["auth",{}]"#)]);
        sio
    }

    #[test]
    fn suite_connect() {
        let now = Instant::now();
        suite_session(now);
        let mut sio = echo(now);
        let got = talk(&mut sio, now, &[r#"0{"token":"123"}"#]);
        assert_eq!(
            connected(&got, "40"),
            [text(1, r#"42["auth",{"token":"123"}]"#)]
        );
        let mut sio = echo(now);
        let got = talk(&mut sio, now, &["0/custom,"]);
        assert_eq!(
            connected(&got, "40/custom,"),
            [text(1, r#"42/custom,["auth",{}]"#)]
        );
        let mut sio = echo(now);
        let got = talk(&mut sio, now, &[r#"0/custom,{"token":"abc"}"#]);
        assert_eq!(
            connected(&got, "40/custom,"),
            [text(1, r#"42/custom,["auth",{"token":"abc"}]"#)]
        );
        let mut sio = echo(now);
        let got = talk(&mut sio, now, &["0/random"]);
        assert_eq!(
            got,
            [text(1, r#"44/random,{"message":"Invalid namespace"}"#)]
        );
        // Still open, and still bound to connect in time.
        let got = talk(&mut sio, now, &["0"]);
        assert_eq!(connected(&got, "40").len(), 1);
        let mut sio = echo(now);
        assert_eq!(talk(&mut sio, now, &["abc"]), [Out::Close(1, 1002)]);
        // Gone: what it sends next is not read.
        assert_eq!(talk(&mut sio, now, &["0"]), []);
    }

    #[test]
    fn the_auth_event_is_written_apart_from_the_connect_answer() {
        let now = Instant::now();
        let mut sio = echo(now);
        let mut out = Vec::new();
        sio.on_text(1, "0", now, &mut out);
        sio.on_text(1, r#"2["message","early"]"#, now, &mut out);
        let got = read(&mut out);
        assert!(
            matches!(&got[..], [Out::Text(1, t)] if t.starts_with("40")),
            "{got:?}"
        );
        assert_eq!(sio.poll_timeout(), Some(now + ECHO_AUTH_DELAY));
        sio.handle_timeout(now, &mut out);
        assert!(out.is_empty());
        // Then the auth event, and what came meanwhile behind it.
        sio.handle_timeout(now + ECHO_AUTH_DELAY, &mut out);
        assert_eq!(
            read(&mut out),
            [
                text(1, r#"42["auth",{}]"#),
                text(1, r#"42["message-back","early"]"#)
            ]
        );
        // A socket gone meanwhile gets no auth event.
        let mut sio = echo(now);
        sio.on_text(1, "0", now, &mut out);
        sio.on_text(1, "1", now, &mut out);
        out.clear();
        sio.handle_timeout(now + ECHO_AUTH_DELAY, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn sessions_that_never_connect_are_closed_in_time() {
        let now = Instant::now();
        let mut sio = echo(now);
        let timeout = DEFAULT_CONNECT_TIMEOUT;
        assert_eq!(sio.poll_timeout(), Some(now + timeout));
        let mut out = Vec::new();
        sio.handle_timeout(now + timeout - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        sio.handle_timeout(now + timeout, &mut out);
        assert_eq!(read(&mut out), [Out::Close(1, 1008)]);
        assert_eq!(sio.poll_timeout(), None);
        assert!(sio.sessions.is_empty());
        // One that connected is left alone, even after leaving its namespace (the reference
        // clears its timer on the first connect).
        let mut sio = suite_session(now);
        assert_eq!(talk(&mut sio, now, &["1"]), []);
        sio.handle_timeout(now + timeout, &mut out);
        assert!(out.is_empty());
        assert_eq!(sio.poll_timeout(), None);
        // A refused namespace does not count as connecting.
        let mut sio = echo(now);
        talk(&mut sio, now, &["0/nope,"]);
        sio.handle_timeout(now + timeout, &mut out);
        assert_eq!(read(&mut out), [Out::Close(1, 1008)]);
    }

    #[test]
    fn suite_disconnect() {
        let now = Instant::now();
        let mut sio = suite_session(now);
        assert_eq!(talk(&mut sio, now, &["1"]), []);
        // No socket on `/` any more: an event for it is an invalid state.
        assert_eq!(
            talk(&mut sio, now, &[r#"2["message",1]"#]),
            [Out::Close(1, 1002)]
        );
        let mut sio = suite_session(now);
        let got = talk(&mut sio, now, &["0/custom"]);
        assert_eq!(
            connected(&got, "40/custom,"),
            [text(1, r#"42/custom,["auth",{}]"#)]
        );
        let got = talk(
            &mut sio,
            now,
            &["1/custom", r#"2["message","message to main namespace"]"#],
        );
        assert_eq!(
            got,
            [text(1, r#"42["message-back","message to main namespace"]"#)]
        );
        // A second CONNECT to a namespace it is on is an invalid state too.
        assert_eq!(talk(&mut sio, now, &["0"]), [Out::Close(1, 1002)]);
    }

    #[test]
    fn suite_messages() {
        let now = Instant::now();
        let mut sio = suite_session(now);
        assert_eq!(
            talk(&mut sio, now, &[r#"2["message",1,"2",{"3":[true]}]"#]),
            [text(1, r#"42["message-back",1,"2",{"3":[true]}]"#)]
        );
        assert_eq!(
            talk(
                &mut sio,
                now,
                &[r#"2456["message-with-ack",1,"2",{"3":[false]}]"#]
            ),
            [text(1, r#"43456[1,"2",{"3":[false]}]"#)]
        );
        // Other events, and acks (the server asks for none), are taken quietly.
        assert_eq!(talk(&mut sio, now, &[r#"2["other"]"#, "31[1]"]), []);
        // Arguments come back as JSON.stringify lays them out.
        assert_eq!(
            talk(&mut sio, now, &["2 [ \"message\" , { \"a b\" : [ 1 ] } ]"]),
            [text(1, r#"42["message-back",{"a b":[1]}]"#)]
        );
        for bad in ["2{}", r#"2abc["message-with-ack",1,"2",{"3":[false]}]"#] {
            let mut sio = suite_session(now);
            assert_eq!(talk(&mut sio, now, &[bad]), [Out::Close(1, 1002)], "{bad}");
        }
    }

    #[test]
    fn suite_binary_messages() {
        let now = Instant::now();
        for (packet, answer) in [
            (
                r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            ),
            (
                r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            ),
        ] {
            let mut sio = suite_session(now);
            let mut out = Vec::new();
            sio.on_text(1, packet, now, &mut out);
            sio.on_binary(1, &[1, 2, 3], now, &mut out);
            assert!(out.is_empty(), "nothing before the last attachment");
            sio.on_binary(1, &[4, 5, 6], now, &mut out);
            sio.handle_timeout(now + ECHO_AUTH_DELAY, &mut out);
            assert_eq!(
                read(&mut out),
                [
                    text(1, answer),
                    Out::Binary(1, vec![1, 2, 3]),
                    Out::Binary(1, vec![4, 5, 6])
                ]
            );
            assert!(sio.sessions[&1].more.is_none(), "nothing kept after");
        }
        // A binary packet with no attachments is whole at once, and comes back as text.
        let mut sio = suite_session(now);
        assert_eq!(
            talk(&mut sio, now, &[r#"50-["message",1]"#]),
            [text(1, r#"42["message-back",1]"#)]
        );
    }

    #[test]
    fn attachments_are_bounded_in_number_size_and_time() {
        let now = Instant::now();
        let close = |sio: &mut SioServer, binary: &[&[u8]]| {
            let mut out = Vec::new();
            for b in binary {
                sio.on_binary(1, b, now, &mut out);
            }
            read(&mut out)
        };
        let mut sio = suite_session(now);
        let eleven = r#"511-["message"]"#;
        assert_eq!(talk(&mut sio, now, &[eleven]), [Out::Close(1, 1002)]);
        let mut sio = suite_session(now);
        talk(&mut sio, now, &[r#"52-["message"]"#]);
        let big = vec![0; MAX_ATTACHMENT_BYTES / 2 + 1];
        assert_eq!(close(&mut sio, &[&big, &big]), [Out::Close(1, 1009)]);
        let mut sio = suite_session(now);
        talk(&mut sio, now, &[r#"52-["message"]"#]);
        assert_eq!(close(&mut sio, &[b"x"]), []);
        assert_eq!(
            talk(&mut sio, now, &[r#"2["message"]"#]),
            [Out::Close(1, 1002)]
        );
        let mut sio = suite_session(now);
        assert_eq!(close(&mut sio, &[b"x"]), [Out::Close(1, 1002)]);
        // A placeholder naming no attachment.
        let mut sio = suite_session(now);
        talk(
            &mut sio,
            now,
            &[r#"51-["message",{"_placeholder":true,"num":1}]"#],
        );
        assert_eq!(close(&mut sio, &[b"x"]), [Out::Close(1, 1002)]);
        // Attachments that never come: closed after the connect timeout.
        let mut sio = suite_session(now);
        let later = now + Duration::from_secs(1);
        sio.on_text(1, r#"52-["message"]"#, later, &mut Vec::new());
        let mut out = Vec::new();
        sio.handle_timeout(now + DEFAULT_CONNECT_TIMEOUT, &mut out);
        assert!(out.is_empty(), "the connect deadline passes: it connected");
        assert_eq!(sio.poll_timeout(), Some(later + DEFAULT_CONNECT_TIMEOUT));
        sio.handle_timeout(later + DEFAULT_CONNECT_TIMEOUT, &mut out);
        assert_eq!(read(&mut out), [Out::Close(1, 1008)]);
    }

    #[test]
    fn sessions_are_apart_and_forgotten() {
        let now = Instant::now();
        let mut sio = suite_session(now);
        sio.on_open(2, "", now, &mut Vec::new());
        let mut out = Vec::new();
        sio.on_text(2, "0/custom,", now, &mut out);
        sio.handle_timeout(now + ECHO_AUTH_DELAY, &mut out);
        let got = read(&mut out);
        assert!(
            matches!(&got[..], [Out::Text(2, _), Out::Text(2, _)]),
            "{got:?}"
        );
        // Session 2 is on `/custom` only: its `/` is not session 1's.
        sio.on_text(2, r#"2["message"]"#, now, &mut out);
        assert_eq!(read(&mut out), [Out::Close(2, 1002)]);
        assert_eq!(
            talk(&mut sio, now, &[r#"2["message"]"#]),
            [text(1, r#"42["message-back"]"#)]
        );
        sio.on_close(1, &mut out);
        sio.on_close(2, &mut out);
        sio.on_close(3, &mut out);
        assert!(out.is_empty());
        assert!(sio.sessions.is_empty());
        assert!(sio.requests.is_empty(), "echo mode asks nothing of rooms");
    }

    /// Chat mode, through the app: rooms, the log, offsets and recovery.
    mod chat_mode {
        use super::*;
        use crate::app::App;
        use crate::room::RoomLimits;

        fn app() -> App {
            let limits = RoomLimits {
                max_rooms: 10,
                history: 10,
                history_bytes: 10_000,
            };
            App::new(Mode::Chat, true, limits, Duration::from_secs(25))
        }

        /// Session `id` opens with `query` and sends `packets`; what every session got.
        fn send(app: &mut App, id: usize, packets: &[&str]) -> Vec<Out> {
            let mut out = Vec::new();
            for p in packets {
                app.on_eio_text(id, p, Instant::now(), &mut out);
            }
            read(&mut out)
        }

        fn open(app: &mut App, id: usize, query: &str) {
            app.on_eio_open(id, query, Instant::now(), &mut Vec::new());
        }

        /// The `{"sid","pid"}` of a CONNECT answer.
        fn answer(out: &Out, prefix: &str) -> (String, String) {
            let Out::Text(_, t) = out else {
                panic!("{out:?}")
            };
            let json = t.strip_prefix(prefix).unwrap_or_else(|| panic!("{t}"));
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
            let field = |k: &str| v[k].as_str().unwrap().to_owned();
            (field("sid"), field("pid"))
        }

        /// The offset a packet's last argument carries.
        fn offset_of(out: &Out) -> String {
            let Out::Text(_, t) = out else {
                panic!("{out:?}")
            };
            let array = &t[t.find('[').unwrap()..];
            let v: serde_json::Value = serde_json::from_str(array).unwrap();
            v.as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }

        /// Session `id` joins room `lobby`: its pid and the welcome's offset.
        fn join_lobby(app: &mut App, id: usize) -> (String, String) {
            open(app, id, "EIO=4&transport=websocket&room=lobby");
            let got = send(app, id, &["0"]);
            let (_, pid) = answer(&got[0], "40");
            let Out::Text(to, welcome) = &got[1] else {
                panic!("{got:?}")
            };
            assert_eq!(*to, id);
            let offset = offset_of(&got[1]);
            assert_eq!(
                *welcome,
                format!(r#"42["connected","Welcome to the chat","{offset}"]"#)
            );
            (pid, offset)
        }

        #[test]
        fn events_reach_the_room_with_their_offsets_and_are_acknowledged() {
            let mut app = app();
            let (_, offset) = join_lobby(&mut app, 1);
            let (epoch, seq) = chat::parse_offset(&offset).unwrap();
            assert_eq!(seq, 0, "a new room");
            // The second arrival is announced to plain members (seq 2), not to sockets.
            open(&mut app, 2, "room=lobby");
            let mut out = Vec::new();
            app.on_eio_text(2, "0", Instant::now(), &mut out);
            let got = read(&mut out);
            assert!(got.iter().all(|o| !matches!(o, Out::Text(1, _))), "{got:?}");
            assert!(
                got.contains(&Out::Other),
                "the notice is published: {got:?}"
            );
            // A plain WebSocket member of the room (seq 3 announces it).
            app.on_join(9, "/lobby", &mut out);
            out.clear();
            // An event with an ack: everyone gets it (the sender too), then the sender the ack.
            let got = send(&mut app, 1, &[r#"27["chat message","hi",{"x":[1]}]"#]);
            let event = format!(r#"42["chat message","hi",{{"x":[1]}},"{epoch}:4"]"#);
            assert_eq!(
                got,
                [
                    Out::Other,
                    text(1, &event),
                    text(2, &event),
                    text(1, "437[]")
                ]
            );
            assert_eq!(app.members("lobby"), [9]);
            // A plain member's message is not for the sockets; the next event's offset skips it.
            let mut out = Vec::new();
            app.on_text(9, r#"{"name":"ann","msg":"yo"}"#, Instant::now(), &mut out);
            assert_eq!(read(&mut out), [Out::Other]);
            let got = send(&mut app, 2, &[r#"2["chat message","back"]"#]);
            let event = format!(r#"42["chat message","back","{epoch}:6"]"#);
            assert_eq!(got, [Out::Other, text(1, &event), text(2, &event)]);
        }

        #[test]
        fn engine_io_session_ids_are_any_ids() {
            // The Engine.IO layer numbers its sessions from 2^62 up in the app's id space.
            let mut app = app();
            let (a, b) = (1 << (usize::BITS - 2), (1 << (usize::BITS - 2)) + 7);
            for id in [a, b] {
                open(&mut app, id, "room=lobby");
                let got = send(&mut app, id, &["0"]);
                assert!(matches!(&got[0], Out::Text(to, t) if *to == id && t.starts_with("40{")));
            }
            let got = send(&mut app, a, &[r#"21["x"]"#]);
            let to: Vec<usize> = got
                .iter()
                .filter_map(|o| match o {
                    Out::Text(to, _) => Some(*to),
                    _ => None,
                })
                .collect();
            assert_eq!(to, [a, b, a]);
        }

        #[test]
        fn plain_members_see_events_as_objects() {
            let mut app = app();
            join_lobby(&mut app, 1);
            let mut out = Vec::new();
            app.on_join(9, "/lobby", &mut out);
            app.on_eio_text(1, r#"2["chat message","hi"]"#, Instant::now(), &mut out);
            let Some(Action::Publish { room, frame }) =
                out.iter().rfind(|a| matches!(a, Action::Publish { .. }))
            else {
                panic!("{out:?}")
            };
            assert_eq!(&**room, "lobby");
            let frame = frame.plain();
            let (_, len) = decode_head(frame, 1 << 20).unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&frame[len..]).unwrap();
            assert_eq!(
                (&v["type"], &v["nsp"], &v["event"], &v["args"], &v["seq"]),
                (
                    &"event".into(),
                    &"/".into(),
                    &"chat message".into(),
                    &serde_json::json!(["hi"]),
                    &3.into()
                )
            );
        }

        #[test]
        fn a_reconnecting_client_gets_exactly_what_it_missed() {
            let mut app = app();
            let (pid, _) = join_lobby(&mut app, 1);
            join_lobby(&mut app, 2);
            send(&mut app, 2, &[r#"2["m","one"]"#]);
            // Session 1's last event: "one", then it drops.
            let got = send(&mut app, 2, &[r#"2["m","two"]"#]);
            let seen = offset_of(got.iter().find(|o| matches!(o, Out::Text(1, _))).unwrap());
            let mut out = Vec::new();
            app.on_eio_close(1, &mut out);
            send(&mut app, 2, &[r#"2["m","three"]"#, r#"2["m","four"]"#]);
            // It reconnects on a new session with its pid and offset.
            open(&mut app, 3, "room=lobby");
            let connect = format!(r#"0{{"pid":"{pid}","offset":"{seen}"}}"#);
            let got = send(&mut app, 3, &[&connect]);
            let texts: Vec<&str> = got
                .iter()
                .filter_map(|o| match o {
                    Out::Text(3, t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            let (epoch, n) = chat::parse_offset(&seen).unwrap();
            // The two events (its leave notice, seq n + 1, is skipped), then the answer with
            // the same pid.
            assert_eq!(texts.len(), 3, "{texts:?}");
            assert_eq!(texts[0], format!(r#"42["m","three","{epoch}:{}"]"#, n + 2));
            assert_eq!(texts[1], format!(r#"42["m","four","{epoch}:{}"]"#, n + 3));
            let (sid, again) = answer(&text(3, texts[2]), "40");
            assert_eq!(again, pid);
            assert_eq!(sid.len(), 20);
            // An offset from elsewhere, or gone from the history, is a new start.
            for offset in ["other-1:1".to_owned(), format!("{epoch}:99")] {
                open(&mut app, 4, "room=lobby");
                let connect = format!(r#"0{{"pid":"{pid}","offset":"{offset}"}}"#);
                let got = send(&mut app, 4, &[&connect]);
                let (_, new) = answer(&got[0], "40");
                assert_ne!(new, pid);
                assert!(matches!(&got[1], Out::Text(4, t) if t.starts_with(r#"42["connected""#)));
                app.on_eio_close(4, &mut Vec::new());
            }
        }

        #[test]
        fn a_history_too_short_is_no_recovery() {
            let limits = RoomLimits {
                max_rooms: 10,
                history: 2,
                history_bytes: 10_000,
            };
            let mut app = App::new(Mode::Chat, true, limits, Duration::from_secs(25));
            let (pid, offset) = join_lobby(&mut app, 1);
            app.on_eio_close(1, &mut Vec::new());
            join_lobby(&mut app, 2);
            send(&mut app, 2, &[r#"2["a"]"#, r#"2["b"]"#, r#"2["c"]"#]);
            open(&mut app, 3, "room=lobby");
            let connect = format!(r#"0{{"pid":"{pid}","offset":"{offset}"}}"#);
            let got = send(&mut app, 3, &[&connect]);
            let (_, new) = answer(&got[0], "40");
            assert_ne!(new, pid, "events it missed are gone: not recovered");
        }

        #[test]
        fn rooms_from_auth_query_or_default() {
            let mut app = app();
            open(&mut app, 1, "room=lobby");
            send(&mut app, 1, &[r#"0{"room":"den"}"#]);
            open(&mut app, 2, "");
            send(&mut app, 2, &["0"]);
            open(&mut app, 3, "room=lobby");
            send(&mut app, 3, &["0"]);
            let got = send(&mut app, 1, &[r#"2["x"]"#]);
            let to: Vec<usize> = got
                .iter()
                .filter_map(|o| match o {
                    Out::Text(to, _) => Some(*to),
                    _ => None,
                })
                .collect();
            assert_eq!(to, [1], "alone in den");
            let got = send(&mut app, 2, &[r#"2["x"]"#]);
            assert!(
                matches!(&got[..], [Out::Other, Out::Text(2, _)]),
                "alone in main: {got:?}"
            );
            // A name the chat refuses is a CONNECT_ERROR; the session stays.
            open(&mut app, 4, "room=a%20b");
            let got = send(&mut app, 4, &["0"]);
            assert_eq!(got, [text(4, r#"44{"message":"invalid room name"}"#)]);
            open(&mut app, 5, &format!("room={}", "x".repeat(65)));
            let got = send(&mut app, 5, &[r#"0{"room":".."}"#, "0"]);
            let refused = text(5, r#"44{"message":"invalid room name"}"#);
            assert_eq!(got, [refused.clone(), refused]);
        }

        #[test]
        fn namespaces_keep_their_events() {
            let mut app =
                app().with_sio(SioConfig::new(Mode::Chat).with_namespaces(&["/admin".into()]));
            join_lobby(&mut app, 1);
            open(&mut app, 2, "room=lobby");
            let got = send(&mut app, 2, &["0/admin,"]);
            answer(&got[0], "40/admin,");
            let got = send(&mut app, 2, &[r#"2/admin,["x"]"#]);
            let to: Vec<usize> = got
                .iter()
                .filter_map(|o| match o {
                    Out::Text(to, _) => Some(*to),
                    _ => None,
                })
                .collect();
            assert_eq!(to, [2]);
            assert!(matches!(&got[1], Out::Text(2, t) if t.starts_with(r#"42/admin,["x","#)));
            // And `/`'s events stay on `/`.
            let got = send(&mut app, 1, &[r#"2["y"]"#]);
            assert!(got.iter().all(|o| !matches!(o, Out::Text(2, _))), "{got:?}");
        }

        #[test]
        fn binary_events_go_through_the_room() {
            let mut app = app();
            join_lobby(&mut app, 1);
            join_lobby(&mut app, 2);
            let mut out = Vec::new();
            let now = Instant::now();
            app.on_eio_text(
                1,
                r#"51-["file",{"_placeholder":true,"num":0}]"#,
                now,
                &mut out,
            );
            app.on_eio_binary(1, &[0, 255, 7], now, &mut out);
            let got = read(&mut out);
            let (epoch, _) = {
                let Out::Text(_, t) = &got[1] else {
                    panic!("{got:?}")
                };
                let o = offset_of(&got[1]);
                assert_eq!(
                    *t,
                    format!(r#"451-["file",{{"_placeholder":true,"num":0}},"{o}"]"#)
                );
                (o, ())
            };
            assert_eq!(
                got[1..],
                [
                    got[1].clone(),
                    Out::Binary(1, vec![0, 255, 7]),
                    Out::Text(
                        2,
                        match &got[1] {
                            Out::Text(_, t) => t.clone(),
                            _ => unreachable!(),
                        }
                    ),
                    Out::Binary(2, vec![0, 255, 7]),
                ],
                "{epoch}"
            );
        }

        #[test]
        fn too_large_or_too_fast_is_refused() {
            let mut app = app().with_message_rate(1);
            join_lobby(&mut app, 1);
            let big = format!(r#"2["m","{}"]"#, "x".repeat(chat::MAX_EVENT));
            let got = send(&mut app, 1, &[&big]);
            assert!(
                matches!(&got[..], [Out::Text(1, t)] if t.starts_with(r#"42["error",{"message":"not sent: events are at most"#)),
                "{got:?}"
            );
            let got = send(&mut app, 1, &[r#"2["m"]"#, r#"2["m"]"#]);
            assert_eq!(
                got.len(),
                4,
                "a burst of two, each published and sent: {got:?}"
            );
            let got = send(&mut app, 1, &[r#"21["m"]"#]);
            assert!(
                matches!(&got[..], [Out::Text(1, e), Out::Text(1, d), ..] if e.starts_with(r#"42["error",{"message":"too many messages"#) && d == "41"),
                "{got:?}"
            );
            // Disconnected from `/`: further events are an invalid state.
            assert_eq!(send(&mut app, 1, &[r#"2["m"]"#]), [Out::Close(1, 1002)]);
        }

        #[test]
        fn a_session_with_two_sockets_in_a_room_leaves_it_whole() {
            // Found by the `sio` fuzz target: closing the session moved its second socket into
            // the first one's place in the room's list after the session was forgotten, so
            // the second stayed listed, and later events went to a closed session.
            let mut app =
                app().with_sio(SioConfig::new(Mode::Chat).with_namespaces(&["/admin".into()]));
            join_lobby(&mut app, 1);
            send(&mut app, 1, &["0/admin,"]);
            app.on_eio_close(1, &mut Vec::new());
            open(&mut app, 2, "room=lobby");
            send(&mut app, 2, &["0/admin,"]);
            let got = send(&mut app, 2, &[r#"2/admin,["x"]"#]);
            assert!(
                got.iter()
                    .all(|o| !matches!(o, Out::Text(1, _) | Out::Binary(1, _))),
                "{got:?}"
            );
        }

        #[test]
        fn leaving_frees_the_room() {
            let mut app = app();
            join_lobby(&mut app, 1);
            join_lobby(&mut app, 2);
            send(&mut app, 1, &["1"]);
            let mut out = Vec::new();
            app.on_eio_close(2, &mut out);
            app.on_eio_close(1, &mut out);
            // The room's events were kept (history): it is held until evicted; nobody counts.
            out.clear();
            app.on_join(9, "/lobby", &mut out);
            let Some(Action::Publish { frame, .. }) = out.last() else {
                panic!("{out:?}")
            };
            let frame = frame.plain();
            let (_, len) = decode_head(frame, 1 << 20).unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&frame[len..]).unwrap();
            assert_eq!((&v["event"], &v["count"]), (&"join".into(), &1.into()));
        }
    }
}
