//! wsrelay: a real-time chat and broadcast server on a hand-rolled RFC 6455 stack.
//!
//! Four layers; each calls only the one below it:
//!
//! ```text
//! app.rs, chat.rs, http.rs   application: JSON in, broadcast out; sees messages, never frames
//! conn.rs                    one connection's state machine: bytes + `now` in, bytes + events out
//! proto/                     RFC 6455 codec: functions over &[u8]; no mio, no std::net, no clock
//! event_loop.rs              the only module that imports mio: sockets, Slab, deadlines, signals
//! ```
//!
//! `config.rs` holds the flags and their defaults; `daemon.rs` the process glue: rlimit,
//! sd_notify, socket activation (the only `unsafe`); `log.rs` the log lines; `metrics.rs` the
//! counters behind `/metrics`; `origin.rs` the Origin policy (RFC 6455 §10.2); `admission.rs`
//! the connection limits; `proxy.rs` the client address behind a trusted proxy; `redis/` the
//! RESP codec and the `--redis` target, for a shared store; `eio/` Engine.IO (the transport
//! of socket.io clients, on `/socket.io/`), whose sessions reach the app through `sio/`;
//! `tls.rs` rustls below everything (`--tls-cert`), a transport the layers above never see.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod admission;
pub mod app;
pub mod chat;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod eio;
pub mod event_loop;
pub mod http;
pub mod log;
pub mod longpoll;
pub mod metrics;
pub mod origin;
pub mod proto;
pub mod proxy;
pub mod redis;
pub mod room;
pub mod sio;
pub mod tls;
