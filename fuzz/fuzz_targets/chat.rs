//! `chat`: The chat protocol: arbitrary bytes as a text message give either exactly one broadcast
//! `{"type":"message",name,msg}` with the input's fields, or exactly one
//! `{"type":"error",msg}` for the sender; never both, never a panic.
//!
//! The assertions are in `wsrelay_fuzz::checks::chat`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::chat(data));
