//! `mask`: RFC 6455 §5.3 masking: the 8-byte fast path equals the byte-at-a-time reference for any key,
//! offset, length, alignment and split.
//!
//! The assertions are in `wsrelay_fuzz::checks::mask`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::mask(data));
