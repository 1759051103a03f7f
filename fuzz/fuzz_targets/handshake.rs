//! `handshake`: RFC 6455 §4.2.1-4.2.2 upgrade requests: never panics, never reports a head longer than the
//! input or the byte cap, and an accepted upgrade's `Sec-WebSocket-Accept` is the one
//! recomputed here with SHA-1 and base64 from its single 16-byte key.
//!
//! The assertions are in `wsrelay_fuzz::checks::handshake`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::handshake(data));
