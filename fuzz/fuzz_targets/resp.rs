//! `resp`: RESP2 replies from Redis, read from the front as the Redis link reads them: never a
//! panic; each value's byte count is honest (it parses the same alone, and one byte short is
//! "need more"); values re-encode and parse back; limits only ever add `TooLarge`/`TooDeep`;
//! any command encodes to bytes that parse back to its arguments. Defends against a length
//! trusted for an allocation, unbounded nesting, and a reply misread on a split read.
//!
//! The assertions are in `wsrelay_fuzz::checks::resp`, which `tests/fuzz_regressions.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::resp(data));
