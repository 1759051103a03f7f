//! What every fuzz target asserts: one public function per target, over the raw input.
//!
//! Each function panics when an invariant of wsrelay is broken, and returns quietly otherwise.
//! The targets in `fuzz/fuzz_targets/` are one-line calls to these; `tests/fuzz_regressions.rs`
//! includes this file with `#[path]` and replays the committed seeds and regressions through the
//! same functions under a plain `cargo test`. So this file uses nothing but `std`, `wsrelay` and
//! the crates wsrelay itself depends on (`sha1`, `base64`, `serde`, `serde_json`, `flate2`),
//! which are there for its integration tests too.
//!
//! Several targets start their input with a read-size header (see [`read_sizes`]), the way uWS'
//! `makeChunked` takes each chunk size from the input: the fuzzer chooses where reads split.

use std::io::IoSlice;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha1::{Digest as _, Sha1};
use wsrelay::chat;
use wsrelay::conn::{Chunk, Conn, Event, Mount, Sent, Settings};
use wsrelay::eio::packet::{self as eio, Packet, PacketError};
use wsrelay::eio::{relay, sid};
use wsrelay::origin::OriginPolicy;
use wsrelay::proto::ProtoError;
use wsrelay::proto::close::{self, CloseCode};
use wsrelay::proto::deflate::{Inflater, TAIL};
use wsrelay::proto::frame::{self, FrameHead, MAX_HEAD_LEN, OpCode, decode_head, encode_head};
use wsrelay::proto::handshake::{self, Request, Upgrade};
use wsrelay::proto::mask::{apply_mask, apply_mask_scalar};
use wsrelay::proto::message::{Limits, Message, Reader};
use wsrelay::proto::utf8::Utf8Validator;
use wsrelay::proxy::{Cidr, TrustedProxies};
use wsrelay::redis::resp::{self, RespError, Value};
use wsrelay::sio::packet::{self as sio_packet, Data, PacketType};

/// Splits a read-size header off the input: the low 4 bits of byte 0 say how many size bytes
/// follow (each one read of `byte + 1` bytes, cycled); none means one byte per read.
fn read_sizes(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (vec![1], data);
    };
    let (sizes, rest) = rest.split_at(usize::from(n & 0x0f).min(rest.len()));
    let sizes = if sizes.is_empty() {
        vec![1]
    } else {
        sizes.iter().map(|&s| usize::from(s) + 1).collect()
    };
    (sizes, rest)
}

/// `data` cut into reads of the given sizes, cycled; a size of 0 or `usize::MAX` is "the rest".
fn reads<'a>(mut data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for &size in sizes.iter().cycle() {
        if data.is_empty() {
            break;
        }
        let n = if size == 0 {
            data.len()
        } else {
            size.min(data.len())
        };
        let (read, rest) = data.split_at(n);
        out.push(read);
        data = rest;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// frame_head

/// Payload limits the header decoder is also run with; each must agree with the unlimited run.
const HEAD_LIMITS: [u64; 6] = [0, 125, 126, 0xffff, 0x1_0000, 1 << 20];

/// `frame_head`: RFC 6455 §5.2 header decoding.
///
/// Whatever decodes re-encodes to the same bytes (the decoder accepts only minimal lengths and
/// clear RSV2 and RSV3, so the encoding is unique); every prefix of a decodable header is "need
/// more" (`Ok(None)`, which consumes nothing); nothing past the 14-byte maximum is looked at;
/// a payload limit only ever turns a result into `MessageTooBig`. Then the other direction:
/// a header built from the input encodes and decodes back to itself.
pub fn frame_head(data: &[u8]) {
    let result = decode_head(data, u64::MAX);
    let window = data.get(..MAX_HEAD_LEN).unwrap_or(data);
    assert_eq!(
        decode_head(window, u64::MAX),
        result,
        "looked past 14 bytes"
    );
    match result {
        Ok(Some((head, len))) => {
            assert!(len <= data.len() && len <= MAX_HEAD_LEN, "length {len}");
            let mut out = Vec::new();
            encode_head(&head, &mut out);
            assert_eq!(out, data[..len], "{head:?} does not re-encode to its bytes");
            for cut in 0..len {
                assert_eq!(
                    decode_head(&data[..cut], u64::MAX),
                    Ok(None),
                    "prefix {cut}"
                );
            }
            assert_eq!(
                head.payload_len >> 63,
                0,
                "§5.2: top bit of a 64-bit length"
            );
            if head.opcode.is_control() {
                assert!(head.fin && head.payload_len <= 125, "§5.5: {head:?}");
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD_LEN, "need more with a full header"),
        Err(_) => {}
    }
    for limit in HEAD_LIMITS {
        let limited = decode_head(data, limit);
        let agrees = match result {
            Ok(Some((head, _))) if head.payload_len > limit => {
                limited == Err(ProtoError::MessageTooBig)
            }
            // The limit is checked as soon as the length is known, before the masking key.
            Ok(None) => matches!(limited, Ok(None) | Err(ProtoError::MessageTooBig)),
            other => limited == other,
        };
        assert!(agrees, "limit {limit}: {limited:?} vs unlimited {result:?}");
    }
    if let Some(head) = head_from(data) {
        let mut out = Vec::new();
        encode_head(&head, &mut out);
        assert_eq!(
            decode_head(&out, u64::MAX),
            Ok(Some((head, out.len()))),
            "encode then decode {head:?}"
        );
    }
}

/// A valid header built from the input's bytes, for the encode side of the round trip.
fn head_from(data: &[u8]) -> Option<FrameHead> {
    let (&[b0, b1, k0, k1, k2, k3], rest) = data.split_first_chunk::<6>()?;
    let opcode = OpCode::from_bits(b0).unwrap_or(OpCode::Binary);
    let wide = rest
        .first_chunk::<8>()
        .map_or(u64::from(b1), |b| u64::from_be_bytes(*b));
    let payload_len = match (opcode.is_control(), b1 & 0x03) {
        (true, _) => u64::from(b1 & 0x7f) % 126,
        (false, 0) => u64::from(b1 & 0x7f),
        (false, 1) => wide & 0xffff,
        (false, _) => wide >> 1,
    };
    Some(FrameHead {
        fin: b0 & 0x80 != 0 || opcode.is_control(),
        rsv1: b0 & 0x40 != 0,
        opcode,
        mask: (b1 & 0x80 != 0).then_some([k0, k1, k2, k3]),
        payload_len,
    })
}

// ---------------------------------------------------------------------------------------------
// message

/// Small limits, so the fuzzer reaches them: 4 KiB messages of at most 8 frames.
pub const MESSAGE_LIMITS: Limits = Limits {
    max_message: 4096,
    max_fragments: 8,
};

/// What a reader made of a stream, comparable across read splits.
#[derive(Debug, PartialEq)]
enum Out {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Err(ProtoError),
    /// The stream ended with no partial frame or message held.
    Idle(bool),
}

/// `message`: RFC 6455 §5.4-5.6 reassembly of client frames, and RFC 7692 §6-7 when bit 4 of
/// the first byte says permessage-deflate was negotiated.
///
/// Input: a read-size header, then the client's byte stream. The stream fed whole, in the
/// fuzzer's reads and one byte at a time gives the same messages and the same error, the
/// same as the model; no message exceeds [`MESSAGE_LIMITS`] once inflated, and the inflater's
/// buffer never holds more than that limit plus one byte, however much the input would
/// inflate to; no control payload exceeds 125 bytes, and a reader that says "need more" has
/// consumed its whole input.
pub fn message(data: &[u8]) {
    let deflate = data.first().is_some_and(|b| b & 0x10 != 0);
    let (sizes, stream) = read_sizes(data);
    let whole = read_messages(stream, &[0], false, deflate);
    assert_eq!(whole, model_messages(stream, deflate), "whole vs the model");
    assert_eq!(
        read_messages(stream, &sizes, true, deflate),
        whole,
        "reads {sizes:?}"
    );
    if stream.len() <= 2048 {
        assert_eq!(
            read_messages(stream, &[1], false, deflate),
            whole,
            "one byte per read"
        );
    }
}

/// The stream read with a fresh [`Reader`] in reads of `sizes`; `reclaim`: free each message's
/// buffer as soon as it has been looked at, as the connection does.
fn read_messages(stream: &[u8], sizes: &[usize], reclaim: bool, deflate: bool) -> Vec<Out> {
    let mut reader = Reader::new();
    let mut inflater = Inflater::new();
    let limit = MESSAGE_LIMITS.max_message as usize;
    let mut out = Vec::new();
    for read in reads(stream, sizes) {
        let mut buf = read.to_vec();
        let mut pos = 0;
        loop {
            let rest = buf.get_mut(pos..).unwrap_or_default();
            let len = rest.len();
            let zlib = deflate.then_some(&mut inflater);
            let (used, msg) = match reader.next(rest, &MESSAGE_LIMITS, zlib) {
                Ok(step) => step,
                Err(e) => {
                    assert!(inflater.capacity() <= limit + 1, "inflated past the limit");
                    out.push(Out::Err(e));
                    return out;
                }
            };
            assert!(used <= len, "used {used} of {len}");
            pos += used;
            let Some(msg) = msg else {
                assert_eq!(used, len, "need more, with input left");
                break;
            };
            assert!(used > 0, "a message from no input");
            let len = match &msg {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                _ => 0,
            };
            assert!(len <= limit, "a {len}-byte message");
            out.push(record(msg));
            assert!(inflater.capacity() <= limit + 1, "inflated past the limit");
            if reclaim {
                reader.reclaim();
            }
        }
    }
    out.push(Out::Idle(reader.is_idle()));
    out
}

/// What RFC 6455 §5.4-5.6 and §10.4 say a server reads from `stream`, written plainly over the
/// whole stream: frames in order, each checked, then its payload; a text message fails on the
/// first byte that makes it invalid UTF-8, even before the message is complete (§8.1).
///
/// With `deflate`: RSV1 marks the first frame of a compressed message (RFC 7692 §6), and is
/// an error anywhere else; a compressed message is inflated whole when it ends (§7.2.2), into
/// at most the message limit.
fn model_messages(stream: &[u8], deflate: bool) -> Vec<Out> {
    let limits = MESSAGE_LIMITS;
    let mut out = Vec::new();
    // The data message being assembled: opcode, bytes so far, frames so far, compressed.
    let mut msg: Option<(OpCode, Vec<u8>, u32, bool)> = None;
    let mut rest = stream;
    loop {
        let (head, len) = match decode_head(rest, limits.max_message) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return fail(out, e),
        };
        // RFC 6455 §5.2: RSV1 is reserved unless an extension defines it; RFC 7692 §6.1: not
        // on control frames or non-first fragments.
        if head.rsv1 && !deflate {
            return fail(out, ProtoError::ReservedBits);
        }
        if head.rsv1 && (head.opcode.is_control() || head.opcode == OpCode::Continuation) {
            return fail(out, ProtoError::MisplacedRsv1);
        }
        // §5.1: a server MUST fail on an unmasked client frame.
        let Some(key) = head.mask else {
            return fail(out, ProtoError::UnmaskedFrame);
        };
        if !head.opcode.is_control() {
            match (head.opcode, &mut msg) {
                (OpCode::Continuation, None) => {
                    return fail(out, ProtoError::UnexpectedContinuation);
                }
                (OpCode::Continuation, Some((_, buf, frames, _))) => {
                    if buf.len() as u64 + head.payload_len > limits.max_message {
                        return fail(out, ProtoError::MessageTooBig);
                    }
                    *frames += 1;
                    if *frames > limits.max_fragments {
                        return fail(out, ProtoError::TooManyFragments);
                    }
                }
                (_, Some(_)) => return fail(out, ProtoError::ExpectedContinuation),
                (op, None) => msg = Some((op, Vec::new(), 1, head.rsv1)),
            }
        }
        rest = &rest[len..];
        let have = rest.len().min(head.payload_len as usize);
        let mut payload = rest[..have].to_vec();
        apply_mask_scalar(&mut payload, key, 0);
        rest = &rest[have..];
        let whole = have as u64 == head.payload_len;
        if head.opcode.is_control() {
            if !whole {
                return partial(out);
            }
            out.push(match head.opcode {
                OpCode::Ping => Out::Ping(payload),
                OpCode::Pong => Out::Pong(payload),
                _ => match close::parse(&payload) {
                    Ok(c) => Out::Close(c.code.map(|c| c.0), c.reason.into()),
                    Err(e) => return fail(out, e),
                },
            });
            continue;
        }
        let Some((op, buf, _, compressed)) = &mut msg else {
            unreachable!("a data frame always has a message");
        };
        buf.extend_from_slice(&payload);
        // §8.1 fails fast on text as it arrives; compressed text is checked once inflated.
        if *op == OpCode::Text && !*compressed && doomed_at(buf).is_some() {
            return fail(out, ProtoError::InvalidUtf8);
        }
        if !whole {
            return partial(out);
        }
        if head.fin {
            let (op, buf, _, compressed) =
                msg.take().unwrap_or((OpCode::Binary, Vec::new(), 0, false));
            let buf = if compressed {
                match model_inflate(&buf) {
                    Ok(inflated) => inflated,
                    Err(e) => return fail(out, e),
                }
            } else {
                buf
            };
            out.push(match String::from_utf8(buf) {
                Ok(text) if op == OpCode::Text => Out::Text(text),
                Err(_) if op == OpCode::Text => return fail(out, ProtoError::InvalidUtf8),
                Ok(text) => Out::Binary(text.into_bytes()),
                Err(e) => Out::Binary(e.into_bytes()),
            });
        }
    }
    out.push(Out::Idle(rest.is_empty() && msg.is_none()));
    out
}

/// RFC 7692 §7.2.2 as plainly as flate2 allows: the payload, then the tail, inflated into a
/// buffer of the limit plus one byte; filling it is "too big", and data zlib refuses first is
/// invalid. The two are fed one after the other, as the server does: zlib may find a bad block
/// only once the tail is there, after the payload alone filled the buffer.
fn model_inflate(payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let cap = MESSAGE_LIMITS.max_message as usize + 1;
    let mut z = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(cap);
    for input in [payload, &TAIL[..]] {
        let start = z.total_in();
        loop {
            let seen = (z.total_in(), z.total_out());
            let rest = input
                .get((z.total_in() - start) as usize..)
                .unwrap_or_default();
            let status = z
                .decompress_vec(rest, &mut out, flate2::FlushDecompress::Sync)
                .map_err(|_| ProtoError::InvalidDeflate)?;
            if out.len() >= cap {
                return Err(ProtoError::MessageTooBig);
            }
            if status == flate2::Status::StreamEnd {
                return Ok(out);
            }
            let all_in = (z.total_in() - start) as usize == input.len();
            if all_in || (z.total_in(), z.total_out()) == seen {
                break;
            }
        }
    }
    Ok(out)
}

/// The stream ended inside a frame's payload.
fn partial(mut out: Vec<Out>) -> Vec<Out> {
    out.push(Out::Idle(false));
    out
}

fn fail(mut out: Vec<Out>, e: ProtoError) -> Vec<Out> {
    out.push(Out::Err(e));
    out
}

fn record(msg: Message<'_>) -> Out {
    let max = MESSAGE_LIMITS.max_message as usize;
    match msg {
        Message::Text(t) => {
            assert!(t.len() <= max, "text of {}", t.len());
            Out::Text(t.into())
        }
        Message::Binary(b) => {
            assert!(b.len() <= max, "binary of {}", b.len());
            Out::Binary(b.into())
        }
        Message::Ping(p) => {
            assert!(p.len() <= 125, "ping of {}", p.len());
            Out::Ping(p.into())
        }
        Message::Pong(p) => {
            assert!(p.len() <= 125, "pong of {}", p.len());
            Out::Pong(p.into())
        }
        Message::Close(c) => {
            let code = c.code.map(|c| c.0);
            assert!(code.is_none_or(valid_close_code), "close code {code:?}");
            assert!(c.reason.len() <= 123, "close reason of {}", c.reason.len());
            Out::Close(code, c.reason.into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// utf8

/// `utf8`: RFC 6455 §8.1 incremental validation.
///
/// Input: a read-size header, then the text. For the fuzzer's split, whole, and one byte at a
/// time, the validator agrees with `std::str::from_utf8`, and it fails fast: a piece is
/// refused exactly when the bytes so far can no longer begin valid UTF-8. A validator reused
/// after `finish` behaves like a new one.
pub fn utf8(data: &[u8]) {
    let (sizes, text) = read_sizes(data);
    let valid = std::str::from_utf8(text).is_ok();
    let doomed_at = doomed_at(text);
    let mut reused = Utf8Validator::new();
    let _ = reused.feed(b"\xe2\x82");
    let _ = reused.finish();
    for (i, sizes) in [&sizes[..], &[0], &[1]].into_iter().enumerate() {
        let mut v = if i == 2 { reused } else { Utf8Validator::new() };
        let mut fed = 0;
        let mut refused = false;
        for piece in reads(text, sizes) {
            fed += piece.len();
            let r = v.feed(piece);
            let doomed = doomed_at.is_some_and(|at| fed >= at);
            assert_eq!(r.is_err(), doomed, "after {fed} bytes, reads {sizes:?}");
            if r.is_err() {
                refused = true;
                break;
            }
        }
        let ok = !refused && v.finish().is_ok();
        assert_eq!(ok, valid, "reads {sizes:?}");
    }
}

/// How many bytes of `text` make it certain that no continuation can make it valid UTF-8.
fn doomed_at(text: &[u8]) -> Option<usize> {
    let e = std::str::from_utf8(text).err()?;
    let bad = e.error_len()?; // None: only cut short, which more bytes can fix
    let end = e.valid_up_to() + bad;
    // std's `error_len` leaves out the byte that broke a well-begun sequence.
    match std::str::from_utf8(&text[e.valid_up_to()..end]) {
        Err(cut) if cut.error_len().is_none() => Some(end + 1),
        _ => Some(end),
    }
}

// ---------------------------------------------------------------------------------------------
// mask

/// `mask`: RFC 6455 §5.3 masking.
///
/// Input: a 4-byte key, a 4-byte payload offset, an alignment byte, a split byte, then the
/// payload. The fast path equals the byte-at-a-time reference at any offset, length and
/// alignment; masking twice restores the input; masking in two pieces (the second at the
/// continued offset) equals masking whole.
pub fn mask(data: &[u8]) {
    let Some((&[k0, k1, k2, k3, o0, o1, o2, o3, align, split], payload)) =
        data.split_first_chunk::<10>()
    else {
        return;
    };
    let key = [k0, k1, k2, k3];
    let offset = u32::from_le_bytes([o0, o1, o2, o3]) as usize;
    let align = usize::from(align % 8);
    let mut fast = vec![0u8; align];
    fast.extend_from_slice(payload);
    let mut slow = payload.to_vec();
    apply_mask(&mut fast[align..], key, offset);
    apply_mask_scalar(&mut slow, key, offset);
    assert_eq!(
        fast[align..],
        slow[..],
        "fast vs scalar, offset {offset}, align {align}"
    );
    apply_mask(&mut fast[align..], key, offset);
    assert_eq!(&fast[align..], payload, "masking twice");
    let cut = usize::from(split).min(payload.len());
    let mut parts = payload.to_vec();
    let (a, b) = parts.split_at_mut(cut);
    apply_mask(a, key, offset);
    apply_mask(b, key, offset + cut);
    assert_eq!(parts, slow, "split at {cut}");
}

// ---------------------------------------------------------------------------------------------
// handshake

/// §1.3: the GUID the accept key is derived with.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `handshake`: RFC 6455 §4.2.1-4.2.2 request parsing.
///
/// Under several byte caps: "need more" only below the cap; a complete head is no longer than
/// the input or the cap, parses the same without the bytes after it, and every prefix of it
/// is "need more"; an accepted upgrade is a GET over HTTP/1.1 with exactly one key of 16
/// bytes, and its `Sec-WebSocket-Accept` equals base64(SHA-1(key + GUID)) computed here.
pub fn handshake(data: &[u8]) {
    for cap in [8192, 256, 64, data.len()] {
        let result = handshake::parse(data, cap);
        match &result {
            Ok(None) => assert!(data.len() < cap, "need more at {} of cap {cap}", data.len()),
            Ok(Some((req, len))) => {
                let len = *len;
                assert!(len <= data.len() && len <= cap, "head of {len}, cap {cap}");
                let head = &data[..len];
                assert!(
                    head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
                    "{head:?}"
                );
                assert_eq!(&handshake::parse(head, cap), &result, "head alone");
                for cut in [len - 1, len / 2, len.saturating_sub(4)] {
                    assert_eq!(
                        handshake::parse(&head[..cut], cap),
                        Ok(None),
                        "prefix {cut}"
                    );
                }
                if let Request::Upgrade(up) = req {
                    check_upgrade(head, up);
                }
                check_forwarded(req);
            }
            Err(_) => {}
        }
    }
}

/// The client a trusted proxy names is never one of the trusted (`--trusted-proxy`: the
/// rightmost entry that is not a trusted proxy), and trusting everyone names nobody.
fn check_forwarded(req: &Request<'_>) {
    let fwd = req.forwarded();
    if let Some(ip) = TrustedProxies::loopback().client(fwd) {
        assert!(!ip.is_loopback(), "a loopback client named: {ip}");
    }
    let all = ["0.0.0.0/0", "::/0"].map(|b| Cidr::parse(b).expect("a valid block"));
    assert_eq!(TrustedProxies::new(all.to_vec()).client(fwd), None);
}

fn check_upgrade(head: &[u8], up: &Upgrade<'_>) {
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    assert_eq!(parts.len(), 3, "request line {request_line:?}");
    assert_eq!(parts[0], b"GET", "§4.2.1 item 1: method");
    assert_eq!(parts[1], up.path.as_bytes(), "path");
    assert_eq!(parts[2], b"HTTP/1.1", "§4.2.1 item 1: version");
    let fields: Vec<(&[u8], &[u8])> = lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let colon = l
                .iter()
                .position(|&b| b == b':')
                .expect("a field line has a colon");
            (&l[..colon], ows_trim(&l[colon + 1..]))
        })
        .collect();
    let values = |name: &str| -> Vec<&[u8]> {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
            .collect()
    };
    let has_token = |name: &str, token: &str| {
        values(name).iter().any(|v| {
            v.split(|&b| b == b',')
                .any(|t| ows_trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    assert!(!values("host").is_empty(), "§4.2.1 item 2: Host");
    assert!(has_token("upgrade", "websocket"), "§4.2.1 item 3: Upgrade");
    assert!(
        has_token("connection", "upgrade"),
        "§4.2.1 item 4: Connection"
    );
    assert_eq!(values("sec-websocket-version"), [b"13"], "§4.2.1 item 6");
    let keys = values("sec-websocket-key");
    assert_eq!(keys.len(), 1, "§4.2.1 item 5: one key");
    let key = keys[0];
    let decoded = STANDARD.decode(key).expect("the key is base64");
    assert_eq!(decoded.len(), 16, "§4.2.1 item 5: a 16-byte key");
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    let expected = STANDARD.encode(digest);
    assert_eq!(
        &up.accept[..],
        expected.as_bytes(),
        "§4.2.2: accept for {key:?}"
    );
    assert_eq!(handshake::accept_key(key), up.accept);
    assert_eq!(up.origin, values("origin").first().copied(), "origin");
}

/// RFC 9110 §5.6.3: OWS = *( SP / HTAB ).
fn ows_trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// close

/// RFC 6455 §7.4: the codes an endpoint may put in a close frame (1012-1014 are IANA
/// registrations since the RFC). Written out here, not taken from wsrelay.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// `close`: RFC 6455 §5.5.1 and §7.4 close payloads.
///
/// The parser's answer equals one computed here from the RFC: empty, or a valid code and a
/// UTF-8 reason; 1 byte, an invalid code and a non-UTF-8 reason are each their own error.
/// What parses re-encodes to the same bytes; any code and reason encode to at most 125 bytes,
/// the reason cut at a character boundary.
pub fn close(data: &[u8]) {
    let expected = match data {
        [] => Ok((None, "")),
        [_] => Err(ProtoError::ClosePayloadTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                Err(ProtoError::InvalidCloseCode)
            } else {
                match std::str::from_utf8(reason) {
                    Ok(r) => Ok((Some(code), r)),
                    Err(_) => Err(ProtoError::InvalidUtf8),
                }
            }
        }
    };
    let parsed = close::parse(data);
    assert_eq!(parsed.map(|p| (p.code.map(|c| c.0), p.reason)), expected);
    if let Some([hi, lo]) = data.first_chunk::<2>() {
        let code = u16::from_be_bytes([*hi, *lo]);
        assert_eq!(CloseCode(code).is_valid_on_wire(), valid_close_code(code));
    }
    if let Ok(p) = parsed
        && let Some(code) = p.code
        && p.reason.len() <= 123
    {
        let mut out = Vec::new();
        close::encode(code, p.reason, &mut out);
        assert_eq!(out, data, "re-encoding");
    }
    // Any code with any reason: at most 125 bytes, the longest prefix that fits.
    if let Some((&[hi, lo], rest)) = data.split_first_chunk::<2>() {
        let reason = String::from_utf8_lossy(rest);
        let mut out = Vec::new();
        close::encode(CloseCode(u16::from_be_bytes([hi, lo])), &reason, &mut out);
        assert!(out.len() <= 125, "§5.5: {} bytes", out.len());
        assert_eq!(out[..2], [hi, lo]);
        let cut = std::str::from_utf8(&out[2..]).expect("a reason cut at a char boundary");
        assert!(reason.starts_with(cut));
        let next = reason[cut.len()..].chars().next();
        assert!(
            next.is_none_or(|c| cut.len() + c.len_utf8() > 123),
            "cut too short"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// connection

/// Settings the connection target runs with: small, so the fuzzer reaches every limit.
pub fn connection_settings() -> Settings {
    Settings {
        limits: MESSAGE_LIMITS,
        max_output: 1024,
        max_handshake: 1024,
        handshake_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(2),
        // Short, so timer ticks reach the ping and the idle drop.
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(1),
        // RFC_UPGRADE comes from another origin; the target is about what follows the 101.
        origins: OriginPolicy::any(),
        // Any method and a body of its own size under the mount, as for Engine.IO.
        mount: Some(Mount {
            prefix: "/socket.io/",
            max_body: 64,
        }),
        deflate: true,
    }
}

/// Output a connection may hold beyond its data budget: a 101 response, a close frame, and a
/// pong or two (each at most 2 + 125 bytes).
const OUTPUT_SLACK: usize = 512;

/// The §1.3 opening handshake, for the op that upgrades in one step.
pub const RFC_UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// [`RFC_UPGRADE`] offering permessage-deflate as Chromium does.
pub const DEFLATE_UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Codes the application closes with (all valid to send, §7.4.1).
const APP_CODES: [CloseCode; 5] = [
    CloseCode::NORMAL,
    CloseCode::GOING_AWAY,
    CloseCode::POLICY,
    CloseCode::INTERNAL,
    CloseCode(4000),
];

/// Reads op arguments off the input; missing bytes read as 0.
struct Ops<'a>(&'a [u8]);

impl<'a> Ops<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// One connection driven the way the event loop drives it, plus what the test saw.
struct Driver {
    conn: Conn,
    settings: Settings,
    inflater: Inflater,
    now: Instant,
    /// Every byte written to the socket.
    wire: Vec<u8>,
    /// The socket's write half was shut (`handle_flushed` said so).
    shut: bool,
    upgraded: bool,
    requested: bool,
    /// A send was refused as over budget.
    overflowed: bool,
    /// The last client frame built, for the repeat op.
    last_frame: Vec<u8>,
}

/// `connection`: the whole per-connection state machine, driven by fuzzer-chosen events.
///
/// Input: a list of ops (first byte of each, mod 11): 0 raw bytes in (length, read size);
/// 1 a client frame masked here (b0, length, key, payload, read size); 2 that frame again N
/// times; 3 the §1.3 upgrade request (read size; its high bit: offering permessage-deflate,
/// which the settings accept); 4 a timer tick; 5 a partial write; 6 a
/// text/binary frame sent (shared or owned); 7 `close`; 8 `fail`; 9 end of stream; 10 a socket error.
/// Text and binary messages are echoed with `send`; a plain GET is answered with `respond`.
///
/// Invariants, after every op: queued output stays within `max_output + max_message +
/// OUTPUT_SLACK`; nothing is queued once the write half is shut; every state but Open and Done
/// has a deadline; events come in order (upgrade or request once, messages only after an
/// upgrade and within limits). On the wire: after a 101 response only whole, unmasked,
/// unfragmented server frames with valid opcodes, text in UTF-8, close payloads valid, and
/// nothing after a close frame; any other response is one HTTP response and its body.
pub fn connection(data: &[u8]) {
    let settings = connection_settings();
    let start = Instant::now();
    let mut d = Driver {
        conn: Conn::new(start, &settings),
        settings,
        inflater: Inflater::new(),
        now: start,
        wire: Vec::new(),
        shut: false,
        upgraded: false,
        requested: false,
        overflowed: false,
        last_frame: Vec::new(),
    };
    let mut ops = Ops(data);
    while !ops.0.is_empty() {
        let op = ops.byte() % 11;
        match op {
            0 => {
                let len = usize::from(ops.byte());
                let size = usize::from(ops.byte());
                let bytes = ops.bytes(len).to_vec();
                d.feed(&bytes, size);
            }
            1 => {
                let b0 = ops.byte();
                let len = ops.byte();
                let key: [u8; 4] = ops.bytes(4).try_into().unwrap_or([0; 4]);
                let payload = ops.bytes(usize::from(len)).to_vec();
                let size = usize::from(ops.byte());
                d.last_frame = client_frame(b0, &payload, key);
                let frame = d.last_frame.clone();
                d.feed(&frame, size);
            }
            2 => {
                let times = usize::from(ops.byte());
                let frames = d.last_frame.repeat(times);
                d.feed(&frames, 0);
            }
            3 => {
                // The high bit: offer permessage-deflate (RFC 7692) with the request.
                let size = ops.byte();
                let request = if size & 0x80 != 0 {
                    DEFLATE_UPGRADE
                } else {
                    RFC_UPGRADE
                };
                d.feed(request, usize::from(size & 0x7f));
            }
            4 => {
                d.now += Duration::from_millis(50) * u32::from(ops.byte());
                d.conn.handle_timeout(d.now, &d.settings);
                let deadline = d.conn.poll_timeout();
                assert!(
                    deadline.is_none_or(|at| at > d.now),
                    "a deadline passed unnoticed"
                );
            }
            5 => {
                let n = usize::from(ops.byte()) * 8;
                d.write(n);
            }
            6 => {
                let len = usize::from(ops.byte()) * 8;
                let opcode = if len % 16 == 0 {
                    OpCode::Text
                } else {
                    OpCode::Binary
                };
                let mut frame = Vec::new();
                frame::encode_frame(opcode, &vec![b'x'; len], &mut frame);
                d.send(if len % 3 == 0 {
                    Chunk::Owned(frame.into_boxed_slice())
                } else {
                    Chunk::Shared(Rc::from(frame))
                });
            }
            7 | 8 => {
                let code = APP_CODES[usize::from(ops.byte()) % APP_CODES.len()];
                let reason = "going away, and this reason is long enough to need cutting at \
                              some point because close frames hold 125 bytes at most ok";
                let reason = &reason[..usize::from(ops.byte()).min(reason.len())];
                if op == 7 {
                    d.conn.close(d.now, code, reason, &d.settings);
                } else {
                    d.conn.fail(d.now, code, reason, &d.settings);
                }
            }
            9 => d.conn.handle_eof(),
            _ => d.conn.handle_error(),
        }
        d.check_state();
    }
    // The peer reads everything that is left; unless the socket is gone, that is all of it.
    let alive = !d.conn.is_done();
    d.write(usize::MAX);
    d.check_state();
    d.check_wire(alive);
}

impl Driver {
    /// Bytes read from the socket, in reads of `size` (0: all at once), as the event loop
    /// feeds them: one application event at a time, acting on each before the next.
    fn feed(&mut self, bytes: &[u8], size: usize) {
        for read in reads(bytes, &[size]) {
            if !self.conn.wants_read() {
                return;
            }
            let mut buf = read.to_vec();
            let mut pos = 0;
            while pos < buf.len() && !self.conn.is_done() {
                let mut events = Vec::new();
                let rest = &mut buf[pos..];
                let len = rest.len();
                let used = self.conn.handle_bytes(
                    self.now,
                    rest,
                    &self.settings,
                    &mut self.inflater,
                    &mut |e| {
                        events.push(match e {
                            Event::Upgraded { .. } => Seen::Upgraded,
                            Event::Request { .. } => Seen::Request,
                            Event::Text(t) => Seen::Data(OpCode::Text, t.as_bytes().to_vec()),
                            Event::Binary(b) => Seen::Data(OpCode::Binary, b.to_vec()),
                            Event::Refused { .. } => Seen::Refused,
                            Event::CloseSent(_) => Seen::CloseSent,
                        });
                    },
                );
                assert!(used > 0 && used <= len, "used {used} of {len}");
                assert!(
                    events.len() <= 1,
                    "more than one event per call: {events:?}"
                );
                pos += used;
                for event in events {
                    self.on_event(event);
                }
                self.check_state();
            }
        }
    }

    fn on_event(&mut self, event: Seen) {
        match event {
            Seen::Upgraded => {
                assert!(
                    !self.upgraded && !self.requested,
                    "a second upgrade or request"
                );
                self.upgraded = true;
            }
            Seen::Request => {
                assert!(
                    !self.upgraded && !self.requested,
                    "a second upgrade or request"
                );
                self.requested = true;
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec();
                self.conn.respond(self.now, head, b"ok", &self.settings);
            }
            Seen::Refused | Seen::CloseSent => {}
            Seen::Data(opcode, payload) => {
                assert!(self.upgraded, "a message before the upgrade");
                assert!(payload.len() as u64 <= self.settings.limits.max_message);
                // Echo, as `--mode echo` does: encoded once, shared.
                let mut frame = Vec::new();
                frame::encode_frame(opcode, &payload, &mut frame);
                self.send(Chunk::Shared(Rc::from(frame)));
            }
        }
    }

    fn send(&mut self, chunk: Chunk) {
        let open = self.conn.is_open();
        let sent = self.conn.send(self.now, chunk, &self.settings);
        assert_eq!(sent == Sent::NotOpen, !open, "{sent:?}, open {open}");
        if sent == Sent::Overflow {
            assert!(!self.conn.is_open(), "still open after overflow");
            self.overflowed = true;
        }
    }

    /// The socket takes up to `n` bytes, as `write_vectored` would.
    fn write(&mut self, mut n: usize) {
        if self.conn.is_done() {
            return; // The event loop has dropped the socket.
        }
        while n > 0 {
            let mut slices = [IoSlice::new(&[]); 4];
            let filled = self.conn.io_slices(&mut slices);
            let mut written = 0;
            for slice in &slices[..filled] {
                let take = slice.len().min(n - written);
                self.wire.extend_from_slice(&slice[..take]);
                written += take;
            }
            if written == 0 {
                break;
            }
            assert!(
                !self.shut,
                "{written} bytes written after the write half was shut"
            );
            self.conn.handle_written(written);
            n -= written;
        }
        if self.conn.queued() == 0 && self.conn.handle_flushed(self.now, &self.settings) {
            self.shut = true;
        }
        self.check_wire(false);
    }

    fn check_state(&self) {
        let s = &self.settings;
        let bound = s.max_output + s.limits.max_message as usize + OUTPUT_SLACK;
        let queued = self.conn.queued();
        assert!(queued <= bound, "{queued} bytes queued, bound {bound}");
        assert_eq!(self.conn.wants_write(), queued > 0);
        assert!(
            !self.shut || queued == 0,
            "output queued after the write half was shut"
        );
        let mut slices = [IoSlice::new(&[]); 64];
        let n = self.conn.io_slices(&mut slices);
        if n < slices.len() {
            let total: usize = slices[..n].iter().map(|s| s.len()).sum();
            assert_eq!(
                total, queued,
                "io_slices hold {total} bytes, queued() says {queued}"
            );
        }
        assert!(
            !self.conn.is_done() || !self.conn.wants_read(),
            "done but reading"
        );
        if !self.conn.wants_read() && !self.conn.is_done() {
            assert!(queued > 0, "neither reading nor writing, but not done");
        }
        if !self.conn.is_open() && !self.conn.is_done() {
            assert!(
                self.conn.poll_timeout().is_some(),
                "a closing or handshaking connection without a deadline"
            );
        }
        assert!(
            !self.conn.is_open() || self.upgraded,
            "open without an upgrade"
        );
    }

    /// What was written so far is a prefix of a valid response; `end`: and it is complete.
    fn check_wire(&self, end: bool) {
        let wire = &self.wire[..];
        let status = b"HTTP/1.1 101 Switching Protocols\r\n";
        if wire.len() < status.len() && !end {
            return;
        }
        if !wire.starts_with(status) {
            if !wire.is_empty() {
                check_http_response(wire, end);
            }
            return;
        }
        assert!(self.upgraded, "a 101 without an upgrade event");
        let Some(head_end) = find(wire, b"\r\n\r\n") else {
            assert!(!end, "an unfinished 101 response");
            return;
        };
        let last_close = check_frames(&wire[head_end + 4..], end);
        if end && self.overflowed {
            let code = last_close.and_then(|p| p.first_chunk::<2>().copied());
            assert_eq!(code, Some([0x03, 0xf0]), "an overflowed peer is told 1008");
        }
    }
}

/// An application event, owned.
#[derive(Debug)]
enum Seen {
    Upgraded,
    Request,
    Refused,
    CloseSent,
    Data(OpCode, Vec<u8>),
}

/// A masked client frame: `b0` as given (reserved bits and opcodes too), `payload` masked.
fn client_frame(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let head = FrameHead {
        fin: true,
        rsv1: false,
        opcode: OpCode::Text,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::new();
    encode_head(&head, &mut out);
    out[0] = b0;
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out
}

/// Server frames after the 101: whole, unmasked, unfragmented, valid, nothing after a close.
/// Returns the close frame's payload, if one was sent.
fn check_frames(mut wire: &[u8], end: bool) -> Option<&[u8]> {
    while !wire.is_empty() {
        let Some((head, len)) = decode_head(wire, u64::MAX).expect("a valid frame header") else {
            assert!(!end, "a partial frame header at the end: {wire:?}");
            return None;
        };
        assert_eq!(head.mask, None, "§5.1: a server MUST NOT mask");
        assert!(head.fin, "the server does not fragment");
        assert_ne!(head.opcode, OpCode::Continuation);
        let Some(payload) = wire[len..].get(..head.payload_len as usize) else {
            assert!(!end, "a partial frame at the end");
            return None;
        };
        match head.opcode {
            OpCode::Text => assert!(std::str::from_utf8(payload).is_ok(), "text not UTF-8"),
            OpCode::Close => {
                close::parse(payload).expect("a valid close payload");
                let after = &wire[len + payload.len()..];
                assert!(
                    after.is_empty(),
                    "{} bytes after a close frame",
                    after.len()
                );
                return Some(payload);
            }
            _ => {}
        }
        wire = &wire[len + payload.len()..];
    }
    None
}

/// One HTTP response (a refusal or the answer to a plain GET) with its whole body, and nothing
/// after it.
fn check_http_response(wire: &[u8], end: bool) {
    let prefix = b"HTTP/1.1 ";
    let n = wire.len().min(prefix.len());
    assert_eq!(wire[..n], prefix[..n], "not an HTTP response: {wire:?}");
    let Some(head_end) = find(wire, b"\r\n\r\n") else {
        assert!(!end, "an unfinished response head");
        return;
    };
    let head = std::str::from_utf8(&wire[..head_end]).expect("an ASCII response head");
    let length: usize = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .expect("a numeric Content-Length");
    let body = &wire[head_end + 4..];
    assert!(
        body.len() <= length,
        "{} bytes after the response",
        body.len() - length
    );
    assert!(!end || body.len() == length, "a short body");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// chat

/// `chat`: the chat protocol's handling of one text message.
///
/// The input (as lossy UTF-8) goes to `chat::handle_text`. `Ok` means the output is exactly
/// `{"type":"message","name":…,"msg":…,"seq":…,"ts":…}` with the input's fields and stamp, which an independent reading
/// of the input confirms are valid; `Err` means it is exactly `{"type":"error","msg":…}` and
/// the independent reading finds the input invalid. The output is one JSON value, so never
/// both.
pub fn chat(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    // The stamp is taken from the input too, so any seq and ts must come out unchanged.
    let stamp = chat::Stamp {
        seq: u64::from(data.len() as u32).wrapping_mul(0x9e37_79b9),
        ts: data
            .iter()
            .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b)),
    };
    let accepted = chat::handle_text(&text, stamp, &mut out).is_ok();
    let reply: serde_json::Value =
        serde_json::from_slice(&out).expect("the output is exactly one JSON value");
    let reply = reply.as_object().expect("the output is an object");
    let expected = expected_chat(&text);
    if accepted {
        let (name, msg) = expected.expect("accepted an invalid chat message");
        assert_eq!(reply.len(), 5, "{reply:?}");
        assert_eq!(reply["type"], "message");
        assert_eq!(reply["seq"].as_u64(), Some(stamp.seq));
        assert_eq!(reply["ts"].as_u64(), Some(stamp.ts));
        assert_eq!(reply["name"].as_str(), Some(&name[..]));
        assert_eq!(reply["msg"].as_str(), Some(&msg[..]));
    } else {
        assert_eq!(expected, None, "refused a valid chat message");
        assert_eq!(reply.len(), 2, "{reply:?}");
        assert_eq!(reply["type"], "error");
        assert!(reply["msg"].is_string());
    }
}

/// `{"name","msg"}` read independently: both strings, each once, 1-64 and 1-4000 characters;
/// other fields ignored. Like any serde struct, a 2-element array `[name, msg]` reads too.
fn expected_chat(text: &str) -> Option<(String, String)> {
    let Chat(name, msg) = serde_json::from_str(text).ok()?;
    let (name, msg) = (name?, msg?);
    let ok = (1..=64).contains(&name.chars().count()) && (1..=4000).contains(&msg.chars().count());
    ok.then_some((name, msg))
}

struct Chat(Option<String>, Option<String>);

impl<'de> de::Deserialize<'de> for Chat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ChatVisitor)
    }
}

struct ChatVisitor;

impl<'de> Visitor<'de> for ChatVisitor {
    type Value = Chat;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chat message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Chat, A::Error> {
        let (mut name, mut msg) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "name" => &mut name,
                "msg" => &mut msg,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom("duplicate field"));
            }
            *slot = Some(map.next_value::<String>()?);
        }
        Ok(Chat(name, msg))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Chat, A::Error> {
        let name = seq.next_element::<String>()?;
        let msg = seq.next_element::<String>()?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("more than 2 elements"));
        }
        Ok(Chat(name, msg))
    }
}

// ---------------------------------------------------------------------------------------------
// resp

/// Small limits the parser is also run with, so the fuzzer reaches them.
const RESP_SMALL: resp::Limits = resp::Limits {
    max_bulk: 16,
    max_elements: 4,
    max_depth: 2,
};

/// `resp`: RESP2 replies from Redis, read the way the Redis link reads them: parse from the
/// front, drop the bytes used, repeat until "need more" or an error.
///
/// Each value used `0 < n <= len` bytes, parses the same from exactly those bytes, and those
/// bytes cut short are "need more"; its canonical encoding (written here) parses back to it.
/// Small limits give the same result or `TooLarge`/`TooDeep`, and the same whenever the value
/// fits them. Then `encode`: the input split at each 0 byte, as a command's arguments, encodes
/// to the canonical bytes of an array of bulk strings and parses back to that array.
pub fn resp(data: &[u8]) {
    let limits = resp::Limits::default();
    let mut rest = data;
    loop {
        let result = resp::parse(rest, &limits);
        let small = resp::parse(rest, &RESP_SMALL);
        assert!(
            small == result || matches!(small, Err(RespError::TooLarge | RespError::TooDeep)),
            "small limits: {small:?} vs {result:?}"
        );
        let Ok(Some((value, used))) = result else {
            break;
        };
        assert!(
            used > 0 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        let (bytes, after) = rest.split_at(used);
        assert_eq!(
            resp::parse(bytes, &limits),
            Ok(Some((value.clone(), used))),
            "alone"
        );
        for cut in [used - 1, used / 2] {
            assert_eq!(resp::parse(&bytes[..cut], &limits), Ok(None), "cut {cut}");
        }
        if resp_fits(&value, &RESP_SMALL, 0) {
            assert_eq!(small, Ok(Some((value.clone(), used))), "fits small limits");
        }
        let mut out = Vec::new();
        write_resp(&value, &mut out);
        assert_eq!(
            resp::parse(&out, &limits),
            Ok(Some((value, out.len()))),
            "canonical re-encoding"
        );
        rest = after;
    }

    let args: Vec<&[u8]> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == 0).collect()
    };
    let command = Value::Array(args.iter().map(|a| Value::Bulk(a.to_vec())).collect());
    let mut out = Vec::new();
    resp::encode(&args, &mut out);
    let mut expected = Vec::new();
    write_resp(&command, &mut expected);
    assert_eq!(out, expected, "encode");
    assert_eq!(
        resp::parse(&out, &limits),
        Ok(Some((command, out.len()))),
        "encode then parse"
    );
}

/// Whether `value`, nested in `depth` arrays, is within `limits`.
fn resp_fits(value: &Value, limits: &resp::Limits, depth: usize) -> bool {
    match value {
        Value::Bulk(b) => b.len() <= limits.max_bulk,
        Value::Array(items) => {
            depth < limits.max_depth
                && items.len() <= limits.max_elements
                && items.iter().all(|v| resp_fits(v, limits, depth + 1))
        }
        _ => true,
    }
}

/// The canonical RESP2 bytes of `value` (Nil as `$-1`), written plainly from the spec.
fn write_resp(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Status(s) => out.extend_from_slice(&[b"+", &s[..], b"\r\n"].concat()),
        Value::Error(s) => out.extend_from_slice(&[b"-", &s[..], b"\r\n"].concat()),
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                write_resp(item, out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sio

/// `sio`: Socket.IO packets and the server that reads them. Byte 0 picks the mode (even: echo,
/// the test suite's server; odd: chat, rooms on the in-process log); the rest is ops split at
/// each 0 byte, sessions 1 and 2 being open (`?room=r`) from the start. An op's first byte:
/// `b`/`B` a binary message from session 1/2 (the rest), `T` a text message from session 2,
/// `o`/`O` session 1/2 closes and opens again (the rest as its query), `w` the connect timeout
/// passes; anything else is a text message from session 1, the whole op (lossy UTF-8).
/// Sessions have ids high in the app's id space, as the Engine.IO layer gives them.
///
/// Every text message also goes through the codec: what decodes re-encodes (head, minified
/// payload) to text that decodes to the same packet, whose payload is the same JSON, and
/// re-encodes to the same text. The server's output: only whole unmasked server frames, to
/// open sessions; each text frame is `4` and a packet that decodes (so its event names are
/// valid and its payload is the right shape), followed by exactly the binary frames it
/// announces, all within the op; chat frames to rooms are JSON objects with a `type`.
pub fn sio(data: &[u8]) {
    let Some((&mode, ops)) = data.split_first() else {
        return;
    };
    let mode = if mode % 2 == 0 {
        wsrelay::app::Mode::Echo
    } else {
        wsrelay::app::Mode::Chat
    };
    let limits = wsrelay::room::RoomLimits {
        max_rooms: 4,
        history: 8,
        history_bytes: 4096,
    };
    let mut app = wsrelay::app::App::new(mode, true, limits, Duration::from_secs(25))
        .with_sio(wsrelay::sio::SioConfig::new(mode).with_namespaces(&["/a".into()]));
    let mut now = Instant::now();
    let timeout = wsrelay::sio::DEFAULT_CONNECT_TIMEOUT;
    let mut out = Vec::new();
    let mut wire = SioWire::default();
    for id in [1, 2] {
        app.on_eio_open(SIO_BASE + id, "EIO=4&room=r", now, &mut out);
    }
    wire.check(&mut out);
    for op in ops.split(|&b| b == 0) {
        let (kind, rest) = op.split_first().map_or((0, op), |(&k, r)| (k, r));
        match kind {
            b'b' | b'B' => {
                let id = if kind == b'b' { 1 } else { 2 };
                app.on_eio_binary(SIO_BASE + id, rest, now, &mut out);
            }
            b'o' | b'O' => {
                let id = if kind == b'o' { 1 } else { 2 };
                app.on_eio_close(SIO_BASE + id, &mut out);
                let query = String::from_utf8_lossy(rest);
                app.on_eio_open(SIO_BASE + id, &query, now, &mut out);
                wire.closed[id] = false;
            }
            b'w' => {
                now += timeout;
                app.handle_timeout(now, &mut out);
            }
            b'T' => {
                let text = String::from_utf8_lossy(rest);
                sio_codec(&text);
                app.on_eio_text(SIO_BASE + 2, &text, now, &mut out);
            }
            _ => {
                let text = String::from_utf8_lossy(op);
                sio_codec(&text);
                app.on_eio_text(SIO_BASE + 1, &text, now, &mut out);
            }
        }
        wire.check(&mut out);
    }
}

/// Where the fuzzed sessions' ids start: Engine.IO's first id (`eio::session::ID_BASE`).
const SIO_BASE: usize = 1 << (usize::BITS - 2);

/// What the sessions were sent so far.
#[derive(Default)]
struct SioWire {
    /// Closed by the server (index: session id).
    closed: [bool; 3],
    /// Binary frames a session is owed by the last binary packet it was sent.
    owed: [usize; 3],
}

impl SioWire {
    fn check(&mut self, out: &mut Vec<wsrelay::app::Action>) {
        use wsrelay::app::Action;
        for action in out.drain(..) {
            match action {
                Action::Send { to, frame } => {
                    let to = to.wrapping_sub(SIO_BASE);
                    assert!(to == 1 || to == 2, "to {to}");
                    assert!(!self.closed[to], "sent to {to} after closing it");
                    let frame = frame.plain();
                    let payload = whole_frame(frame);
                    if frame[0] & 0x0f == 0x2 {
                        assert!(self.owed[to] > 0, "an attachment nobody announced");
                        self.owed[to] -= 1;
                        continue;
                    }
                    assert_eq!(self.owed[to], 0, "text before the attachments announced");
                    let text = std::str::from_utf8(payload).expect("a text frame is UTF-8");
                    let packet = text.strip_prefix('4').expect("an Engine.IO message");
                    let p = sio_packet::decode(packet, usize::MAX)
                        .unwrap_or_else(|e| panic!("the server sent {packet:?}: {e:?}"));
                    if p.kind.is_binary() {
                        self.owed[to] = p.attachments;
                    }
                    if p.kind == PacketType::Connect {
                        assert!(matches!(p.data, Data::Object(_)), "{packet}");
                    }
                }
                Action::Close { to, .. } => {
                    let to = to.wrapping_sub(SIO_BASE);
                    assert!(to == 1 || to == 2, "close {to}");
                    self.closed[to] = true;
                    self.owed[to] = 0;
                }
                Action::Publish { room, frame } => {
                    assert!(wsrelay::room::valid_name(&room), "{room:?}");
                    // JSON's grammar, not serde's number range: a client's 1e400 is passed on
                    // as written (JavaScript reads it as Infinity).
                    let text = std::str::from_utf8(whole_frame(frame.plain())).expect("UTF-8");
                    let raw: &serde_json::value::RawValue =
                        serde_json::from_str(text).expect("a chat frame is JSON");
                    assert!(raw.get().starts_with(r#"{"type":""#), "{text}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(self.owed, [0; 3], "attachments owed after the op");
    }
}

/// The payload of one whole unmasked server frame, which `frame` must be exactly.
fn whole_frame(frame: &[u8]) -> &[u8] {
    let (head, len) = decode_head(frame, u64::MAX >> 1)
        .expect("a valid frame")
        .expect("a whole header");
    assert!(head.fin && head.mask.is_none(), "{head:?}");
    assert!(matches!(head.opcode, OpCode::Text | OpCode::Binary));
    let payload = &frame[len..];
    assert_eq!(payload.len() as u64, head.payload_len);
    payload
}

/// A packet's canonical text: its head and its payload minified.
fn sio_encode(p: &sio_packet::Packet<'_>) -> String {
    let mut out = Vec::new();
    sio_packet::encode_head(p.kind, p.attachments, p.nsp, p.id, &mut out);
    match &p.data {
        Data::None => {}
        Data::Object(json) | Data::Text(json) => sio_packet::minify(json, &mut out),
        Data::Array(items) => sio_packet::write_array(items.iter().copied(), &mut out),
    }
    String::from_utf8(out).expect("UTF-8 in, UTF-8 out")
}

/// The payload's JSON, if serde_json reads it as a value (it refuses numbers like 1e400 that
/// the packet decoder takes as they are).
fn sio_json(text: &str, p: &sio_packet::Packet<'_>) -> Option<serde_json::Value> {
    let start = match &p.data {
        Data::None => return None,
        Data::Object(_) | Data::Text(_) => text.find(['{', '"'])?,
        Data::Array(_) => text.find('[')?,
    };
    serde_json::from_str(text.get(start..)?).ok()
}

fn sio_codec(text: &str) {
    let Ok(p) = sio_packet::decode(text, sio_packet::MAX_ATTACHMENTS) else {
        return;
    };
    let canonical = sio_encode(&p);
    let again = sio_packet::decode(&canonical, sio_packet::MAX_ATTACHMENTS)
        .unwrap_or_else(|e| panic!("{text:?} re-encoded as {canonical:?}: {e:?}"));
    assert_eq!(
        (again.kind, again.attachments, again.nsp, again.id),
        (p.kind, p.attachments, p.nsp, p.id),
        "{text:?} vs {canonical:?}"
    );
    assert_eq!(sio_encode(&again), canonical);
    // The namespace's `/`, written or not, is the same namespace; past it the payload starts
    // after the head, whose digits it never begins with.
    if let (Some(a), Some(b)) = (sio_json(text, &p), sio_json(&canonical, &again)) {
        assert_eq!(a, b, "{text:?} vs {canonical:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// eio_payload

/// Engine.IO v4 (the protocol's "Packet encoding" and "Payload" sections): the input as a
/// long-polling `POST` body, and as a request's query string and sid.
///
/// - `decode_payload` refuses exactly the bodies that are not UTF-8; otherwise it yields one
///   result per record (split on 0x1e here, by hand), each equal to a model decoder written
///   here: a type digit and its data, `b` + base64 (padding optional) for binary.
/// - Every packet decoded re-encodes (type digit + data, `b` + padded base64) to text that
///   decodes to the same packet.
/// - The messages, sent back as server frames (text `4…`, binary), become a payload through
///   `push_frames` that decodes to the same messages in the same order.
/// - `parse_query` takes each parameter's first value, as a model does; `sid::decode`
///   accepts only what `sid::encode` writes.
pub fn eio_payload(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(eio::decode_payload(data).err(), Some(PacketError::NotUtf8));
        return;
    };
    let Ok(packets) = eio::decode_payload(data) else {
        panic!("a UTF-8 body refused");
    };
    let packets: Vec<_> = packets.collect();
    let records: Vec<&str> = text.split('\u{1e}').collect();
    assert_eq!(packets.len(), records.len(), "one packet per record");
    let mut messages = Vec::new();
    for (record, packet) in records.iter().zip(&packets) {
        assert_eq!(*packet, model_packet(record), "{record:?}");
        let Ok(packet) = packet else { continue };
        let again = encode_packet(packet);
        assert_eq!(eio::decode(&again).as_ref(), Ok(packet), "{again:?}");
        match packet {
            Packet::Message(t) => messages.push((OpCode::Text, format!("4{t}").into_bytes())),
            Packet::Binary(b) => messages.push((OpCode::Binary, b.clone())),
            _ => {}
        }
    }
    let mut frames = Vec::new();
    for (opcode, payload) in &messages {
        frame::encode_frame(*opcode, payload, &mut frames);
    }
    let mut body = Vec::new();
    assert_eq!(eio::push_frames(&frames, &mut body), messages.len());
    if !messages.is_empty() {
        let Ok(back) = eio::decode_payload(&body) else {
            panic!("a payload of ours is not UTF-8");
        };
        let back: Vec<_> = back.collect();
        assert_eq!(back.len(), messages.len());
        for (got, (opcode, payload)) in back.iter().zip(&messages) {
            match (got, opcode) {
                (Ok(Packet::Message(t)), OpCode::Text) => assert_eq!(t.as_bytes(), &payload[1..]),
                (Ok(Packet::Binary(b)), OpCode::Binary) => assert_eq!(b, payload),
                other => panic!("{other:?}"),
            }
        }
    }
    // The same bytes as a request target's query, and as a sid.
    let query = eio::parse_query(text);
    let q = text.split_once('?').map_or("", |(_, q)| q);
    let first = |key: &str| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    };
    assert_eq!(query.eio, first("EIO"));
    assert_eq!(query.transport, first("transport"));
    assert_eq!(query.sid, first("sid"));
    if let Some((node, key, tag)) = sid::decode(text) {
        assert_eq!(
            sid::encode(node, key, tag),
            text.as_bytes(),
            "a sid decodes, so it re-encodes"
        );
    }
    // The same bytes as a message on a node's relay channel (Redis is trusted, but a message
    // we did not write must still be dropped, never panic): what decodes re-encodes.
    match relay::decode(text.as_bytes()) {
        Some(relay::Message::Request(r)) => {
            assert_eq!(
                r.encode().as_deref(),
                Some(text.as_bytes()),
                "a request re-encodes"
            );
        }
        Some(relay::Message::Reply(r)) => assert_eq!(r.encode(), text.as_bytes()),
        None => {}
    }
}

/// The packet a payload record holds, decoded here from the protocol's table.
fn model_packet(record: &str) -> Result<Packet<'_>, PacketError> {
    let mut chars = record.chars();
    let kind = chars.next();
    let data = chars.as_str();
    Ok(match kind {
        Some('0') => Packet::Open,
        Some('1') => Packet::Close,
        Some('2') => Packet::Ping(data),
        Some('3') => Packet::Pong(data),
        Some('4') => Packet::Message(data),
        Some('5') => Packet::Upgrade,
        Some('6') => Packet::Noop,
        Some('b') => {
            // Padding is optional, but never more than the length calls for (RFC 4648 §4).
            let unpadded = data.trim_end_matches('=');
            let canonical = (4 - unpadded.len() % 4) % 4;
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded);
            match bytes {
                Ok(bytes) if data.len() - unpadded.len() <= canonical => Packet::Binary(bytes),
                _ => return Err(PacketError::BadBase64),
            }
        }
        _ => return Err(PacketError::UnknownType),
    })
}

/// A packet written back as text.
fn encode_packet(packet: &Packet<'_>) -> String {
    match packet {
        Packet::Open => "0".into(),
        Packet::Close => "1".into(),
        Packet::Ping(d) => format!("2{d}"),
        Packet::Pong(d) => format!("3{d}"),
        Packet::Message(d) => format!("4{d}"),
        Packet::Upgrade => "5".into(),
        Packet::Noop => "6".into(),
        Packet::Binary(b) => format!("b{}", STANDARD.encode(b)),
    }
}
