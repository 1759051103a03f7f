//! wsrelay: a real-time chat and broadcast server on a hand-rolled RFC 6455 stack.
//!
//! Four layers; each calls only the one below it:
//!
//! ```text
//! chat.rs, http.rs   application: JSON in, broadcast out; sees text messages, never frames
//! conn.rs            one connection's state machine; pure: bytes + `now` in, bytes + events out
//! proto/             RFC 6455 codec: functions over &[u8]; no mio, no std::net, no clock
//! event_loop.rs      the only module that imports mio: sockets, Slab, deadlines, signals
//! ```
#![forbid(unsafe_code)]

pub mod proto;
