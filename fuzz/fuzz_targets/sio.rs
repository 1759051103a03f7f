//! `sio`: Socket.IO v5 (socket.io-protocol, "Packet encoding"): any text decodes to a packet
//! whose canonical encoding decodes back to it, or to an error, never a panic; the server
//! (echo or chat mode) fed any messages, attachments, reconnects and timeouts sends only
//! whole frames to open sessions, each text one a packet that decodes, followed by exactly the
//! attachments it announces.
//!
//! The assertions are in `wsrelay_fuzz::checks::sio`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::sio(data));
