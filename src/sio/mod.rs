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

use std::time::Instant;

use crate::app::Action;

pub mod chat;
pub mod packet;

/// The Socket.IO server state: sockets per session and namespace, pending connects, acks.
#[derive(Debug, Default)]
pub struct SioServer {}

impl SioServer {
    /// Engine.IO session `id` opened; `query` is its handshake request's query string.
    pub fn on_open(&mut self, _id: usize, _query: &str, _now: Instant, _out: &mut Vec<Action>) {}

    /// A text `message` packet (its payload, without the `4`) from session `id`.
    pub fn on_text(&mut self, _id: usize, _text: &str, _now: Instant, _out: &mut Vec<Action>) {}

    /// A binary `message` packet from session `id`.
    pub fn on_binary(&mut self, _id: usize, _data: &[u8], _now: Instant, _out: &mut Vec<Action>) {}

    /// Session `id` closed (any reason); its sockets are gone.
    pub fn on_close(&mut self, _id: usize, _out: &mut Vec<Action>) {}

    /// The earliest time [`SioServer::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Sessions that never sent a CONNECT in time are closed, and the like.
    pub fn handle_timeout(&mut self, _now: Instant, _out: &mut Vec<Action>) {}
}
