//! Engine.IO v4 (<https://socket.io/docs/v4/engine-io-protocol/>) on `/socket.io/` of the
//! same port: the transport layer under socket.io clients, over WebSocket or HTTP long
//! polling, sans IO like `conn.rs`.
//!
//! - [`packet`]: packets, long-polling payloads, the handshake query and its errors.
//! - [`response`]: the long-polling transport's HTTP answers, with CORS fields.
//! - [`sid`]: compact, unguessable session ids.
//! - [`session`]: every session's state machine: handshakes, polls, upgrades, pings.
//!
//! The event loop feeds [`session::Sessions`] what arrives under [`PATH`] (plain requests,
//! WebSocket handshakes and their messages, connections that went away, expired timers) and
//! carries out what it returns: answers to requests, [`session::Wire`] work on other
//! connections (a held poll answered by another request's packets, a frame, a close), and
//! [`session::Up`] events it forwards to the app's `on_eio_*` methods (the seam in
//! `crate::sio`). The app answers with the usual actions; a frame for a session reaches
//! [`session::Sessions::send`], which says which WebSocket connection takes it as it is, or
//! keeps it for the session's next poll (turned into payload text then).
//!
//! Where sessions live: in a table of their own, with ids from [`session::ID_BASE`] up in the
//! id space the app uses for connections, so `Send`, `Publish` and `Close` reach a session by
//! id whatever carries it, and the id stays the same when a polling session moves to
//! WebSocket (a connection's slab key could not: the socket changes). A connection that serves
//! a session (its WebSocket, a probe, a held poll) names the session's slot, so the loop
//! tells the session when it goes. A session on WebSocket costs its 32-byte entry, a 16-byte
//! timer entry and 4 bytes in its connection; its polling state (queue, held poll) is boxed
//! and exists only while it polls.
//!
//! A polling session holds a place under `--max-connections` and `--max-connections-per-ip`
//! (it has no socket between requests, but costs memory like a client), so a flood of
//! handshakes from one address is refused with 503 like a flood of sockets.

pub mod packet;
pub mod relay;
pub mod response;
pub mod session;
pub mod sid;

/// The path prefix Engine.IO serves (the reference server's default `path`, matched as a
/// prefix as it does).
pub const PATH: &str = "/socket.io/";

/// Whether a request target is Engine.IO's.
pub fn is_eio_target(target: &str) -> bool {
    target.starts_with(PATH)
}
