//! `eio_payload`: Engine.IO v4 long-polling payloads and packets (the protocol's "Packet
//! encoding" and "Payload" sections), from a peer's `POST` body: a refusal exactly for
//! non-UTF-8 bodies, one packet per 0x1e-separated record as the protocol's table says
//! (base64 binary included), packets that re-encode to themselves, server frames that turn
//! into a payload giving back the same messages; the same bytes as a query and a sid. Defends
//! against a panic, a lost or invented packet, or a payload our own client could not read.
//!
//! The assertions are in `wsrelay_fuzz::checks::eio_payload`, which `tests/fuzz_regressions.rs`
//! also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsrelay_fuzz::checks::eio_payload(data));
