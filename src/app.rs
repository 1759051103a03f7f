//! The application modes on top of connections: chat, relay and echo.
//!
//! The event loop reports joins, leaves and messages by connection id; the app answers with
//! [`Action`]s. Every outgoing frame is encoded once here and shared by all its receivers.
//!
//! In chat mode a connection joins the room its URL path names (`/` is the default room);
//! messages and notices go to that room only, each with the room's next sequence number, and
//! a connection first receives the room's recent history, or what it missed since the cursor
//! it resumes from (`?since=SEQ&epoch=EPOCH`).

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::chat::{self, Presence, Stamp};
use crate::proto::{CloseCode, OpCode, frame};
use crate::room::{DEFAULT_ROOM, RoomError, RoomId, RoomLimits, Rooms};

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
        frame: Rc<[u8]>,
        /// A connection to skip (the sender, with `--no-echo-sender`).
        except: Option<usize>,
    },
    /// Queue `frame` to every open member of a room (looked up by name when the action runs,
    /// so a room freed meanwhile gets nothing).
    Publish {
        /// The room's name.
        room: Rc<str>,
        /// The encoded frame.
        frame: Rc<[u8]>,
    },
    /// Queue `frame` to one connection.
    Send {
        /// The receiver.
        to: usize,
        /// The encoded frame.
        frame: Rc<[u8]>,
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
    /// Reused for JSON and frames, so a broadcast allocates only its shared frame.
    json: Vec<u8>,
    frame: Vec<u8>,
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
    let mut cursor = Cursor::default();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", v)) => cursor.since = v.parse().ok(),
            Some(("epoch", v)) if !v.is_empty() => cursor.epoch = Some(v),
            _ => {}
        }
    }
    (name, cursor)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl App {
    /// An app in `mode`; `echo_sender` says whether relay mode sends a message back to its
    /// sender; `rooms` bounds chat rooms and their history.
    pub fn new(mode: Mode, echo_sender: bool, rooms: RoomLimits) -> Self {
        Self {
            mode,
            echo_sender,
            online: 0,
            // The start time tells this run's room epochs from an earlier run's.
            rooms: Rooms::new(rooms, now_ms()),
            json: Vec::new(),
            frame: Vec::new(),
        }
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
        let room = match self.rooms.join(name, id) {
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
        self.catch_up(id, room, &cursor, out);
        let count = self.rooms.members(room).len();
        self.presence(room, Presence::Join, count, out);
    }

    /// Sends a joining connection the welcome, any gap notice and the history it should see.
    fn catch_up(&mut self, id: usize, room: RoomId, cursor: &Cursor<'_>, out: &mut Vec<Action>) {
        let epoch = self.rooms.epoch(room);
        chat::welcome(
            self.rooms.name(room),
            epoch,
            self.rooms.next_seq(room).saturating_sub(1),
            &mut self.json,
        );
        out.push(Action::Send {
            to: id,
            frame: encode(&mut self.frame, OpCode::Text, &self.json),
        });
        // A cursor from another epoch counts nothing here: the room started over since.
        let same_epoch = cursor.epoch.is_none_or(|e| e == epoch);
        let since = if same_epoch { cursor.since } else { None };
        let replay = self.rooms.replay(room, since);
        let gap = if same_epoch {
            replay.gap.map(Some)
        } else {
            cursor.since.map(|_| None)
        };
        if let Some(range) = gap {
            chat::gap(range, &mut self.json);
            out.push(Action::Send {
                to: id,
                frame: encode(&mut self.frame, OpCode::Text, &self.json),
            });
        }
        for (_, json) in replay.events {
            chat::history(json, &mut self.json);
            out.push(Action::Send {
                to: id,
                frame: encode(&mut self.frame, OpCode::Text, &self.json),
            });
        }
    }

    /// A connection stopped being open.
    pub fn on_leave(&mut self, id: usize, out: &mut Vec<Action>) {
        self.online = self.online.saturating_sub(1);
        if let Some(room) = self.rooms.room_of(id) {
            let count = self.rooms.members(room).len().saturating_sub(1);
            self.presence(room, Presence::Leave, count, out);
            self.rooms.leave(id);
        }
    }

    /// A text message from connection `id`.
    pub fn on_text(&mut self, id: usize, text: &str, out: &mut Vec<Action>) {
        match self.mode {
            Mode::Chat => {
                let Some(room) = self.rooms.room_of(id) else {
                    return; // Refused a room; its close is under way.
                };
                let stamp = self.stamp(room);
                let ok = chat::handle_text(text, stamp, &mut self.json).is_ok();
                let frame = encode(&mut self.frame, OpCode::Text, &self.json);
                out.push(if ok {
                    self.publish(room, frame)
                } else {
                    Action::Send { to: id, frame }
                });
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

    /// The stamp the room's next event gets.
    fn stamp(&self, room: RoomId) -> Stamp {
        Stamp {
            seq: self.rooms.next_seq(room),
            ts: now_ms(),
        }
    }

    /// Records the event in `self.json` (stamped with [`App::stamp`]) as the room's next one
    /// and returns the action that sends `frame` to the room.
    fn publish(&mut self, room: RoomId, frame: Rc<[u8]>) -> Action {
        let json = std::str::from_utf8(&self.json).unwrap_or_default();
        self.rooms.append(room, json);
        Action::Publish {
            room: self.rooms.shared_name(room),
            frame,
        }
    }

    fn presence(&mut self, room: RoomId, event: Presence, count: usize, out: &mut Vec<Action>) {
        let stamp = self.stamp(room);
        chat::presence(event, count, stamp, &mut self.json);
        let frame = encode(&mut self.frame, OpCode::Text, &self.json);
        let action = self.publish(room, frame);
        out.push(action);
    }
}

/// Encodes one server frame into a shared buffer, using `scratch` for the encoding.
fn encode(scratch: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) -> Rc<[u8]> {
    scratch.clear();
    frame::encode_frame(opcode, payload, scratch);
    Rc::from(&scratch[..])
}
