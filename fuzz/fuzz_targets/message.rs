//! `message`: RFC 6455 §5.4-5.6 reassembly with fuzzer-chosen read boundaries: the same stream whole, in
//! the fuzzer's reads and byte by byte gives the same messages and the same error, within the
//! limits. Defends against state lost across reads, a declared length trusted for an
//! allocation, and thousands of tiny fragments.
//!
//! The assertions are in `wsrelay_fuzz::checks::message`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::message(data));
