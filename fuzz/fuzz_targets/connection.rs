//! `connection`: The whole per-connection state machine (`wsrelay::conn::Conn`) driven by fuzzer-chosen
//! events: bytes in at any read split, timer ticks, partial writes, sends, close, fail, EOF.
//! Everything written after the 101 is well-formed unmasked server frames and nothing follows
//! a close frame; queued output stays within budget; every closing state has a deadline.
//!
//! The assertions are in `wsrelay_fuzz::checks::connection`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::connection(data));
