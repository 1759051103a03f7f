//! permessage-deflate (RFC 7692): negotiation, and the two transformations of a message payload.
//!
//! wsrelay negotiates no context takeover in either direction (§7.1.1), so every message is
//! compressed and inflated on its own: one [`Deflater`] and one [`Inflater`] per process serve
//! every connection, a connection holds no zlib state, and a broadcast is compressed once for
//! all its receivers.
//!
//! - [`negotiate`] reads the `Sec-WebSocket-Extensions` lines of an opening handshake and picks
//!   the first `permessage-deflate` offer this server can honour (§5, §7); [`Agreed`] writes
//!   the answer.
//! - [`Inflater::inflate`] turns a received compressed payload back into the message (§7.2.2),
//!   never producing more than the message limit, however small the input.
//! - [`Deflater::frame`] turns one encoded server frame into its compressed form (§7.2.1), with
//!   RSV1 set on it (§6).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtoError;
use super::frame::{self, FrameHead, OpCode};

/// §7.2.1: the empty stored block a sync flush ends with; a sender removes it, a receiver
/// appends it back before inflating (§7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The extension's name (§7).
const NAME: &[u8] = b"permessage-deflate";

/// LZ77 window sizes a peer may name, as base-2 logarithms (§7.1.2: "between 8 to 15").
const WINDOW_BITS: std::ops::RangeInclusive<u8> = 8..=15;

/// The smallest window zlib can compress with: it refuses 8 for raw deflate (it would widen it
/// to 9, breaking the promise), so a peer that limits us to 2^8 gets its messages uncompressed.
const MIN_DEFLATE_BITS: u8 = 9;

/// The parameters of an accepted offer. Both directions go without context takeover, whatever
/// the offer said (§7.1.1.1 and §7.1.1.2 let a server answer so even when not asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// `server_max_window_bits` from the offer, repeated in the answer (§7.1.2.1: "with the same
    /// or smaller value"); our window is at most 2^this.
    pub server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The window bits to compress our messages with; 8 means "send them uncompressed".
    pub fn window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// Appends the `Sec-WebSocket-Extensions` line of the 101 (§5: one element, the accepted
    /// extension with its parameters).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
              client_no_context_takeover",
        );
        if let Some(bits) = self.server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            if bits >= 10 {
                out.push(b'1');
            }
            out.push(b'0' + bits % 10);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A `Sec-WebSocket-Extensions` value that does not follow RFC 6455 §9.1's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Picks the first `permessage-deflate` offer this server can honour from the values of every
/// `Sec-WebSocket-Extensions` line, in order (§5: "The order of elements is important as it
/// specifies the client's preference"). `Ok(None)`: no such offer, or every one was declined;
/// the connection then goes uncompressed. `Err`: a value that is not an extension list.
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Agreed>, Malformed> {
    let mut agreed = None;
    for value in values {
        // Every line is parsed, even after a pick, so a malformed one is never let through.
        for_each_extension(value, &mut |name, params| {
            if agreed.is_none() && name.eq_ignore_ascii_case(NAME) {
                agreed = accept(params);
            }
        })?;
    }
    Ok(agreed)
}

/// One extension parameter: a name and, if it has one, its value (quotes removed).
type Param<'a> = (&'a [u8], Option<Value<'a>>);

/// A parameter value: a token, or a quoted string still holding its escapes.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

/// §7: the offer if it can be accepted, `None` if it must be declined: "A server MUST decline
/// an extension negotiation offer for this extension if … [it] contains an extension parameter
/// not defined for use in an offer … with an invalid value … multiple extension parameters with
/// the same name … [or] the server doesn't support the offered configuration."
fn accept(params: &[Param<'_>]) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        server_max_window_bits: None,
    };
    for &(name, value) in params {
        let (slot, ok) = match name {
            // §7.1.1.1, §7.1.1.2: these have no value.
            n if n.eq_ignore_ascii_case(b"server_no_context_takeover") => (0, value.is_none()),
            n if n.eq_ignore_ascii_case(b"client_no_context_takeover") => (1, value.is_none()),
            // §7.1.2.1: a value is required.
            n if n.eq_ignore_ascii_case(b"server_max_window_bits") => {
                let bits = value.and_then(window_bits);
                agreed.server_max_window_bits = bits;
                (2, bits.is_some())
            }
            // §7.1.2.2: no value, or a valid one. Our inflater keeps a whole 2^15 window (one,
            // shared), so we never ask the client for a smaller one and leave it out of the
            // answer, as "the server may either ignore this value" allows.
            n if n.eq_ignore_ascii_case(b"client_max_window_bits") => {
                (3, value.is_none() || value.and_then(window_bits).is_some())
            }
            _ => return None,
        };
        let dup = seen.get_mut(slot).map(|s| std::mem::replace(s, true));
        if !ok || dup != Some(false) {
            return None;
        }
    }
    Some(agreed)
}

/// §7.1.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive"; a
/// quoted value must be the same token once unquoted (RFC 6455 §9.1).
fn window_bits(value: Value<'_>) -> Option<u8> {
    let digits = match value {
        Value::Token(t) => t,
        // A quoted window size holds digits only, so it can have no escapes worth undoing.
        Value::Quoted(q) if !q.contains(&b'\\') => q,
        Value::Quoted(_) => return None,
    };
    let bits = match digits {
        [d @ b'8'..=b'9'] => d - b'0',
        [b'1', d @ b'0'..=b'5'] => 10 + (d - b'0'),
        _ => return None,
    };
    WINDOW_BITS.contains(&bits).then_some(bits)
}

/// The most parameters one extension may carry here; a longer list is declined with the offer
/// (each name may appear once, and there are four).
const MAX_PARAMS: usize = 8;

/// Calls `on(name, params)` for each extension of a `Sec-WebSocket-Extensions` value, per RFC
/// 6455 §9.1 with the list rule of RFC 9110 §5.6.1 (empty elements are allowed and skipped):
///
/// ```text
/// extension-list = 1#extension
/// extension      = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
///
/// Whitespace is allowed around `,`, `;` and `=`. An extension with more than [`MAX_PARAMS`]
/// parameters is passed with a parameter list that cannot be accepted.
fn for_each_extension<'a>(
    value: &'a [u8],
    on: &mut impl FnMut(&'a [u8], &[Param<'a>]),
) -> Result<(), Malformed> {
    let mut s = Scanner { rest: value };
    loop {
        s.skip_ows();
        if s.eat(b',') {
            continue; // an empty list element
        }
        if s.rest.is_empty() {
            return Ok(());
        }
        let name = s.token().ok_or(Malformed)?;
        let mut params: [Param<'a>; MAX_PARAMS] = [(b"", None); MAX_PARAMS];
        let mut n = 0;
        let mut too_many = false;
        loop {
            s.skip_ows();
            if !s.eat(b';') {
                break;
            }
            s.skip_ows();
            let pname = s.token().ok_or(Malformed)?;
            s.skip_ows();
            let pvalue = if s.eat(b'=') {
                s.skip_ows();
                Some(match s.quoted()? {
                    Some(q) => Value::Quoted(q),
                    None => Value::Token(s.token().ok_or(Malformed)?),
                })
            } else {
                None
            };
            match params.get_mut(n) {
                Some(slot) => {
                    *slot = (pname, pvalue);
                    n += 1;
                }
                None => too_many = true,
            }
        }
        if too_many {
            // Declined as a whole: a name the offer cannot have.
            on(name, &[(b"", None)]);
        } else {
            on(name, params.get(..n).unwrap_or_default());
        }
        s.skip_ows();
        if !s.rest.is_empty() && !s.eat(b',') {
            return Err(Malformed);
        }
    }
}

/// A cursor over a header value.
struct Scanner<'a> {
    rest: &'a [u8],
}

impl<'a> Scanner<'a> {
    fn skip_ows(&mut self) {
        while let [b' ' | b'\t', rest @ ..] = self.rest {
            self.rest = rest;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.rest.split_first() {
            Some((&b, rest)) if b == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// `token = 1*tchar` (RFC 9110 §5.6.2).
    fn token(&mut self) -> Option<&'a [u8]> {
        let len = self.rest.iter().take_while(|&&b| is_tchar(b)).count();
        let (token, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        (!token.is_empty()).then_some(token)
    }

    /// A quoted-string (RFC 9110 §5.6.4) if one starts here: its content, escapes kept.
    fn quoted(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        let Some((b'"', body)) = self.rest.split_first() else {
            return Ok(None);
        };
        let mut i = 0;
        loop {
            match body.get(i) {
                Some(b'"') => break,
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                Some(b'\\') if body.get(i + 1).is_some_and(|&b| b == b'\t' || b >= 0x20) => i += 2,
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                Some(&b) if b == b'\t' || (b >= 0x20 && b != 0x7f && b != b'\\') => i += 1,
                _ => return Err(Malformed),
            }
        }
        let content = body.get(..i).ok_or(Malformed)?;
        self.rest = body.get(i + 1..).unwrap_or_default();
        Ok(Some(content))
    }
}

/// `tchar` (RFC 9110 §5.6.2): `!#$%&'*+-.^_`|~`, digits and letters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Inflates received messages, one at a time, for every connection (§7.2.2). The zlib state is
/// made on first use and reset before each message; the output buffer is reused, and shrunk
/// after a large message so that an idle server gives the memory back.
#[derive(Default)]
pub struct Inflater {
    zlib: Option<Box<Decompress>>,
    out: Vec<u8>,
    /// Messages inflated, for `/metrics`.
    inflated: u64,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("capacity", &self.out.capacity())
            .finish()
    }
}

/// Output capacity an [`Inflater`] keeps between messages.
const KEEP_CAPACITY: usize = 64 * 1024;

impl Inflater {
    /// An inflater; it allocates nothing until it inflates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages inflated so far (whether or not they turned out valid).
    pub fn inflated(&self) -> u64 {
        self.inflated
    }

    /// Bytes the output buffer can hold now: never more than the largest of 64 KiB and the
    /// limits it was used with plus one (the fuzz target checks it).
    pub fn capacity(&self) -> usize {
        self.out.capacity()
    }

    /// The message carried by `payload`, a compressed message's payload with its tail removed
    /// (§7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the payload of the
    /// message. Decompress the resulting data using DEFLATE."). A message larger than `max`
    /// fails as soon as output passes `max` (§10.4), so a few bytes that would inflate to
    /// gigabytes cost no more than `max + 1` bytes of buffer; data that is not DEFLATE fails.
    pub fn inflate(&mut self, payload: &[u8], max: u64) -> Result<&[u8], ProtoError> {
        self.inflated += 1;
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        self.out.clear();
        let zlib = self
            .zlib
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        // No context takeover (§7.1.1.2): each message starts from nothing, whatever the last
        // one did (it may have failed half way).
        zlib.reset(false);
        // One past the limit, to tell "exactly at the limit" from "over it".
        let cap = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
        for input in [payload, &TAIL[..]] {
            let mut rest = input;
            loop {
                if self.out.len() == self.out.capacity() {
                    if self.out.len() >= cap {
                        return Err(ProtoError::MessageTooBig);
                    }
                    // One buffer for the process, of KEEP_CAPACITY (or the cap, if smaller)
                    // to begin with; past that doubling, but straight to the cap once past
                    // half of it, so a message near the limit never holds 1.5 times it.
                    let doubled = (self.out.len() * 2).max(KEEP_CAPACITY);
                    let want = if doubled > cap / 2 { cap } else { doubled };
                    self.out.reserve_exact(want - self.out.len());
                }
                let (in0, out0) = (zlib.total_in(), zlib.total_out());
                let status = zlib
                    .decompress_vec(rest, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| ProtoError::InvalidDeflate)?;
                let used = usize::try_from(zlib.total_in() - in0).unwrap_or(rest.len());
                let made = zlib.total_out() - out0;
                rest = rest.get(used..).unwrap_or_default();
                if self.out.len() >= cap {
                    return Err(ProtoError::MessageTooBig);
                }
                // §7.2.3.4: a block with BFINAL set may end the data; the rest is not DEFLATE.
                if status == Status::StreamEnd {
                    return Ok(&self.out);
                }
                let room = self.out.len() < self.out.capacity();
                if (rest.is_empty() && room) || (used == 0 && made == 0 && room) {
                    break;
                }
            }
        }
        Ok(&self.out)
    }
}

/// Compresses server frames for every connection that negotiated the extension (§7.2.1):
/// one zlib stream per window size in use, made on first use, reset after every message.
pub struct Deflater {
    level: Compression,
    /// Payloads shorter than this are sent uncompressed.
    threshold: usize,
    /// Indexed by window bits minus [`MIN_DEFLATE_BITS`].
    zlib: [Option<Box<Compress>>; 7],
    scratch: Vec<u8>,
    /// Frames compressed, and their payload bytes before and after, for `/metrics`.
    counts: (u64, u64, u64),
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl Deflater {
    /// A deflater at zlib `level` (0-9) that leaves payloads under `threshold` bytes alone.
    pub fn new(level: u32, threshold: usize) -> Self {
        Self {
            level: Compression::new(level.min(9)),
            threshold,
            zlib: Default::default(),
            scratch: Vec::new(),
            counts: (0, 0, 0),
        }
    }

    /// Frames compressed so far, and their payload bytes before and after.
    pub fn counts(&self) -> (u64, u64, u64) {
        self.counts
    }

    /// The compressed form of `plain`, one whole unmasked server data frame, for a peer whose
    /// window is at most 2^`window_bits`: the same frame with RSV1 set (§6: "the Per-Message
    /// Compressed bit … of the first frame of the message") and the payload compressed.
    /// `None` when it should go as it is: a control frame, a payload under the threshold, a
    /// window zlib cannot honour, or a payload that does not shrink.
    pub fn frame(&mut self, plain: &[u8], window_bits: u8) -> Option<Vec<u8>> {
        let (head, head_len) = frame::decode_head(plain, u64::MAX).ok()??;
        let payload = plain.get(head_len..)?;
        let data = matches!(head.opcode, OpCode::Text | OpCode::Binary);
        if !data || !head.fin || head.rsv1 || head.mask.is_some() {
            return None;
        }
        if payload.len() < self.threshold || payload.len() as u64 != head.payload_len {
            return None;
        }
        let slot = window_bits.checked_sub(MIN_DEFLATE_BITS)?;
        let level = self.level;
        let zlib = self
            .zlib
            .get_mut(usize::from(slot))?
            .get_or_insert_with(|| {
                Box::new(Compress::new_with_window_bits(level, false, window_bits))
            });
        self.scratch.clear();
        // A sync flush ends the data with an empty stored block (§7.2.1 step 2); deflate
        // output is at most a little over its input, so this reserve is all it needs.
        self.scratch.reserve(payload.len() + payload.len() / 8 + 64);
        let mut rest = payload;
        let done = loop {
            let before = zlib.total_in();
            if zlib
                .compress_vec(rest, &mut self.scratch, FlushCompress::Sync)
                .is_err()
            {
                break false;
            }
            let used = usize::try_from(zlib.total_in() - before).unwrap_or(rest.len());
            rest = rest.get(used..).unwrap_or_default();
            if rest.is_empty() && self.scratch.ends_with(&TAIL) {
                break true;
            }
            if self.scratch.len() == self.scratch.capacity() {
                self.scratch.reserve(self.scratch.len().max(256));
            } else if used == 0 {
                break false;
            }
        };
        // §7.1.1.1: no context takeover, so the next message starts from nothing.
        zlib.reset();
        if !done {
            return None;
        }
        // §7.2.1 step 3: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end."
        let compressed = self.scratch.get(..self.scratch.len() - TAIL.len())?;
        if compressed.len() >= payload.len() {
            return None;
        }
        self.counts.0 += 1;
        self.counts.1 += payload.len() as u64;
        self.counts.2 += compressed.len() as u64;
        let head = FrameHead {
            rsv1: true,
            payload_len: compressed.len() as u64,
            ..head
        };
        let mut out = Vec::with_capacity(frame::MAX_HEAD_LEN + compressed.len());
        frame::encode_head(&head, &mut out);
        out.extend_from_slice(compressed);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str]) -> Result<Option<Agreed>, Malformed> {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    const PLAIN: Result<Option<Agreed>, Malformed> = Ok(Some(Agreed {
        server_max_window_bits: None,
    }));

    fn bits(n: u8) -> Result<Option<Agreed>, Malformed> {
        Ok(Some(Agreed {
            server_max_window_bits: Some(n),
        }))
    }

    #[test]
    fn offers_browsers_and_the_rfc_send() {
        // Chromium and Firefox.
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]),
            PLAIN
        );
        // §7.1.3 examples.
        assert_eq!(offer(&["permessage-deflate"]), PLAIN);
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=10"]),
            bits(10)
        );
        assert_eq!(
            offer(&[
                "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
                 permessage-deflate; client_max_window_bits"
            ]),
            bits(10)
        );
        assert_eq!(
            offer(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]),
            PLAIN
        );
        assert_eq!(
            offer(&[r#"permessage-deflate; server_max_window_bits="9""#]),
            bits(9)
        );
        assert_eq!(
            offer(&["PerMessage-Deflate ;Server_Max_Window_Bits = 8"]),
            bits(8)
        );
        assert_eq!(offer(&[]), Ok(None));
        assert_eq!(
            offer(&["x-webkit-deflate-frame", "foo, bar; baz=1"]),
            Ok(None)
        );
    }

    #[test]
    fn offers_that_must_be_declined_fall_through_to_the_next() {
        let declined = [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
            "permessage-deflate; client_max_window_bits=0",
            r#"permessage-deflate; server_max_window_bits="1\0""#,
            "permessage-deflate; a; b; c; d; e; f; g; h; i",
        ];
        for first in declined {
            assert_eq!(offer(&[first]), Ok(None), "{first}");
            let two = format!("{first}, permessage-deflate; server_max_window_bits=12");
            assert_eq!(offer(&[&two]), bits(12), "{two}");
            // Across header lines, in order.
            assert_eq!(offer(&[first, "permessage-deflate"]), PLAIN, "{first}");
        }
    }

    #[test]
    fn malformed_values() {
        for bad in [
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate; a=",
            "permessage-deflate; a=\"unterminated",
            "permessage-deflate a",
            "permessage-deflate; a=b c",
            "\"quoted\"",
            "permessage-deflate; a=\"\x01\"",
            "per/message",
        ] {
            assert_eq!(offer(&[bad]), Err(Malformed), "{bad:?}");
        }
        // A malformed line is an error even after an acceptable offer.
        assert_eq!(offer(&["permessage-deflate", "a;"]), Err(Malformed));
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        assert_eq!(offer(&[" , permessage-deflate ,, "]), PLAIN);
        assert_eq!(offer(&[""]), Ok(None));
    }

    #[test]
    fn response_line() {
        let mut out = Vec::new();
        Agreed {
            server_max_window_bits: Some(9),
        }
        .write_response(&mut out);
        assert_eq!(
            out,
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
              client_no_context_takeover; server_max_window_bits=9\r\n"
        );
        out.clear();
        Agreed {
            server_max_window_bits: Some(15),
        }
        .write_response(&mut out);
        assert!(out.ends_with(b"server_max_window_bits=15\r\n"));
    }

    #[test]
    fn rfc_7_2_3_examples_inflate() {
        let mut z = Inflater::new();
        // §7.2.3.1: "Hello" in one compressed block.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(z.inflate(&hello, 100), Ok(&b"Hello"[..]));
        // §7.2.3.3: a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(z.inflate(&stored, 100), Ok(&b"Hello"[..]));
        // §7.2.3.4: BFINAL set.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(z.inflate(&last, 100), Ok(&b"Hello"[..]));
        // §7.2.3.5: two blocks.
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(z.inflate(&two, 100), Ok(&b"Hello"[..]));
        // Exactly at the limit is fine; one byte less is not.
        assert_eq!(z.inflate(&hello, 5), Ok(&b"Hello"[..]));
        assert_eq!(z.inflate(&hello, 4), Err(ProtoError::MessageTooBig));
        // §7.2.3.2 is the second message of a shared window: without context takeover its
        // back-reference points before the start of the data.
        let shared = [0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(z.inflate(&shared, 100), Err(ProtoError::InvalidDeflate));
        // And the inflater is usable after an error.
        assert_eq!(z.inflate(&hello, 100), Ok(&b"Hello"[..]));
        assert_eq!(
            z.inflate(&[0xff, 0xff], 100),
            Err(ProtoError::InvalidDeflate)
        );
        assert_eq!(z.inflate(&[], 100), Ok(&b""[..]));
    }

    /// A server frame with `payload`.
    fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(opcode, payload, &mut out);
        out
    }

    #[test]
    fn frames_round_trip_through_every_window() {
        let text: String = (0..300)
            .map(|i| format!("{{\"name\":\"user{}\",\"msg\":\"hello {i}\"}}", i % 7))
            .collect();
        let plain = server_frame(OpCode::Text, text.as_bytes());
        let mut d = Deflater::new(6, 64);
        let mut z = Inflater::new();
        for bits in 9..=15 {
            let out = d.frame(&plain, bits).expect("compressible");
            let (head, len) = frame::decode_head(&out, u64::MAX).unwrap().unwrap();
            assert!(head.rsv1 && head.fin && head.opcode == OpCode::Text);
            assert!(
                out.len() < plain.len() / 3,
                "{} of {}",
                out.len(),
                plain.len()
            );
            assert_eq!(z.inflate(&out[len..], 1 << 20).unwrap(), text.as_bytes());
            // No context takeover: the same input gives the same output again.
            assert_eq!(d.frame(&plain, bits), Some(out));
        }
        // A window of 2^8 cannot be honoured by zlib: the frame goes as it is.
        assert_eq!(d.frame(&plain, 8), None);
    }

    #[test]
    fn what_is_left_alone() {
        let mut d = Deflater::new(6, 64);
        let long = vec![b'a'; 1000];
        assert_eq!(d.frame(&server_frame(OpCode::Text, &long[..63]), 15), None);
        assert!(
            d.frame(&server_frame(OpCode::Text, &long[..64]), 15)
                .is_some()
        );
        assert_eq!(d.frame(&server_frame(OpCode::Ping, &long[..100]), 15), None);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let random: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(d.frame(&server_frame(OpCode::Binary, &random), 15), None);
        assert_eq!(d.frame(&[0x81], 15), None);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut d = Deflater::new(9, 0);
        let zeros = vec![0u8; 10 << 20];
        let bomb = d.frame(&server_frame(OpCode::Binary, &zeros), 15).unwrap();
        let (_, len) = frame::decode_head(&bomb, u64::MAX).unwrap().unwrap();
        let payload = &bomb[len..];
        assert!(payload.len() < 12 << 10, "{}", payload.len());
        let mut z = Inflater::new();
        assert_eq!(z.inflate(payload, 1 << 20), Err(ProtoError::MessageTooBig));
        assert!(z.out.capacity() <= (1 << 20) + 1, "{}", z.out.capacity());
        assert_eq!(z.inflate(payload, 10 << 20).map(<[u8]>::len), Ok(10 << 20));
        // The big buffer is given back before the next message.
        z.inflate(&[0x03, 0x00], 10).unwrap();
        assert!(z.out.capacity() <= KEEP_CAPACITY);
    }
}
