//! The application modes on top of connections: chat, relay and echo.
//!
//! The event loop reports joins, leaves and messages by connection id; the app answers with
//! [`Action`]s. Every outgoing frame is encoded once here and shared by all its receivers.

use std::rc::Rc;

use crate::chat::{self, Presence};
use crate::proto::{CloseCode, OpCode, frame};

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
    /// Reused for JSON and frames, so a broadcast allocates only its shared frame.
    json: Vec<u8>,
    frame: Vec<u8>,
}

impl App {
    /// An app in `mode`; `echo_sender` says whether relay mode sends a message back to its sender.
    pub fn new(mode: Mode, echo_sender: bool) -> Self {
        Self {
            mode,
            echo_sender,
            online: 0,
            json: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// Open WebSocket connections.
    pub fn online(&self) -> usize {
        self.online
    }

    /// A connection completed its handshake.
    pub fn on_join(&mut self, _id: usize, out: &mut Vec<Action>) {
        self.online += 1;
        self.presence(Presence::Join, out);
    }

    /// A connection stopped being open.
    pub fn on_leave(&mut self, _id: usize, out: &mut Vec<Action>) {
        self.online = self.online.saturating_sub(1);
        self.presence(Presence::Leave, out);
    }

    /// A text message from connection `id`.
    pub fn on_text(&mut self, id: usize, text: &str, out: &mut Vec<Action>) {
        match self.mode {
            Mode::Chat => {
                let ok = chat::handle_text(text, &mut self.json).is_ok();
                let frame = encode(&mut self.frame, OpCode::Text, &self.json);
                out.push(if ok {
                    Action::Broadcast {
                        frame,
                        except: None,
                    }
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

    fn presence(&mut self, event: Presence, out: &mut Vec<Action>) {
        if self.mode == Mode::Chat {
            chat::presence(event, self.online, &mut self.json);
            let frame = encode(&mut self.frame, OpCode::Text, &self.json);
            out.push(Action::Broadcast {
                frame,
                except: None,
            });
        }
    }
}

/// Encodes one server frame into a shared buffer, using `scratch` for the encoding.
fn encode(scratch: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) -> Rc<[u8]> {
    scratch.clear();
    frame::encode_frame(opcode, payload, scratch);
    Rc::from(&scratch[..])
}
