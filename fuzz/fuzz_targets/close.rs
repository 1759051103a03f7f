//! `close`: RFC 6455 §5.5.1 and §7.4 close payloads: only valid codes (1000-1003, 1007-1014,
//! 3000-4999) and UTF-8 reasons are accepted; encode and parse round-trip within 125 bytes.
//!
//! The assertions are in `wsrelay_fuzz::checks::close`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::close(data));
