//! `frame_head`: RFC 6455 §5.2 frame headers: whatever decodes re-encodes to the same bytes, every prefix of
//! a header is "need more" (which consumes nothing), limits only ever add `MessageTooBig`.
//! Defends against a header misread on a split read, or a length accepted in two encodings.
//!
//! The assertions are in `wsrelay_fuzz::checks::frame_head`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::frame_head(data));
