//! `utf8`: RFC 6455 §8.1 incremental UTF-8 validation against `std::str::from_utf8`, for any split,
//! failing on exactly the first piece that makes the text hopeless.
//!
//! The assertions are in `wsrelay_fuzz::checks::utf8`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::utf8(data));
