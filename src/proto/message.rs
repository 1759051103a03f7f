//! Message reassembly (RFC 6455 §5.4, §5.5, §5.6) over a stream of client bytes.
//!
//! [`Reader::next`] takes whatever bytes a read returned, in any split, and yields one message
//! at a time. A message that arrives whole in one read is unmasked in place and handed out
//! without a copy; only a message split across reads or fragments is buffered, and that buffer
//! is freed once the message is delivered, so an idle reader holds no heap memory.
//!
//! With permessage-deflate negotiated (RFC 7692), a message whose first frame has RSV1 set is
//! reassembled as it came, then inflated whole by the process's one [`Inflater`] into its own
//! buffer, bounded by the same message limit (and its text checked as UTF-8 then): a reader
//! holds no zlib state between reads.

use super::close::{self, ClosePayload};
use super::deflate::Inflater;
use super::error::ProtoError;
use super::frame::{self, FrameHead, MAX_HEAD_LEN, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Limits on what one message may cost (§10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message payload in bytes, summed over its fragments.
    pub max_message: u64,
    /// Most frames one data message may be split into.
    pub max_fragments: u32,
}

/// A complete message or control frame from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping; §5.5.2 asks for a pong with the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame with a valid payload (§5.5.1).
    Close(ClosePayload<'a>),
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    /// RSV1 on the first frame of a message (RFC 7692 §6).
    compressed: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already seen, mod 4: where the mask continues.
    mask_offset: u8,
}

/// A data message being buffered.
#[derive(Debug)]
struct Assembly {
    /// Text or Binary.
    opcode: OpCode,
    buf: Vec<u8>,
    /// Frames so far, the first included.
    fragments: u32,
    /// Set once the message's final frame has begun.
    fin: bool,
    /// The payload is DEFLATE data, to inflate once whole (RFC 7692 §6.2).
    compressed: bool,
    utf8: Utf8Validator,
}

/// Where [`Reader::advance`] stopped.
enum Step {
    /// All input consumed, no message complete.
    NeedMore,
    /// A whole message unmasked in place at `input[start..used]`.
    InPlace {
        opcode: OpCode,
        start: usize,
        compressed: bool,
    },
    /// A control frame complete in `control`.
    Control(OpCode),
    /// A data message complete in `msg`.
    Data,
}

/// A control frame payload split across reads (at most 125 bytes, §5.5).
#[derive(Debug)]
struct ControlBuf {
    len: u8,
    bytes: [u8; 125],
}

/// Streaming parser of client frames into messages, server side (client frames are masked).
#[derive(Debug, Default)]
pub struct Reader {
    /// A frame header split across reads; `head[..head_len]` holds it.
    head: [u8; MAX_HEAD_LEN],
    head_len: u8,
    frame: Option<Frame>,
    msg: Option<Box<Assembly>>,
    control: Option<Box<ControlBuf>>,
    /// The last message came from `msg`/`control`; free them on the next call.
    delivered: bool,
}

impl Reader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the reader holds no partial frame or message.
    pub fn is_idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.msg.is_none() && self.control.is_none()
    }

    /// Parses from the front of `input`, unmasking it in place.
    ///
    /// Returns the bytes consumed and, if one completed, a message. `(n, None)` means all of
    /// `input` was consumed (`n == input.len()`) and more bytes are needed. Call again with the
    /// rest of the input until it returns `None`. After an error the stream is unusable.
    ///
    /// `inflater` is `Some` when permessage-deflate was negotiated: RSV1 may then mark a message
    /// compressed (RFC 7692 §6), which `inflater` inflates; the message borrows its buffer.
    pub fn next<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: &Limits,
        inflater: Option<&'a mut Inflater>,
    ) -> Result<(usize, Option<Message<'a>>), ProtoError> {
        let (used, step) = self.advance(input, limits, inflater.is_some())?;
        let msg = match step {
            Step::NeedMore => None,
            Step::InPlace {
                opcode,
                start,
                compressed: true,
            } => {
                let payload = input.get(start..used).unwrap_or_default();
                let inflater = inflater.ok_or(ProtoError::ReservedBits)?;
                Some(complete(
                    opcode,
                    inflater.inflate(payload, limits.max_message)?,
                )?)
            }
            Step::InPlace { opcode, start, .. } => Some(complete(
                opcode,
                input.get(start..used).unwrap_or_default(),
            )?),
            Step::Control(opcode) => {
                let buf = self.control.as_deref();
                let payload = buf.and_then(|c| c.bytes.get(..usize::from(c.len)));
                Some(complete(opcode, payload.unwrap_or_default())?)
            }
            Step::Data => match self.msg.as_deref() {
                Some(m) if m.compressed => {
                    let inflater = inflater.ok_or(ProtoError::ReservedBits)?;
                    Some(complete(
                        m.opcode,
                        inflater.inflate(&m.buf, limits.max_message)?,
                    )?)
                }
                Some(m) if m.opcode == OpCode::Text => Some(Message::Text(as_str(&m.buf)?)),
                Some(m) => Some(Message::Binary(&m.buf)),
                None => None,
            },
        };
        Ok((used, msg))
    }

    /// Frees the buffer of the message last returned; call once done with it, so an idle
    /// reader holds no heap memory. [`Reader::next`] also does it first thing.
    pub fn reclaim(&mut self) {
        if std::mem::take(&mut self.delivered) {
            self.control = None;
            if self.msg.as_ref().is_some_and(|m| m.fin) {
                self.msg = None;
            }
        }
    }

    /// Consumes input until a message completes or the input runs out.
    fn advance(
        &mut self,
        input: &mut [u8],
        limits: &Limits,
        deflate: bool,
    ) -> Result<(usize, Step), ProtoError> {
        self.reclaim();
        let mut pos = 0;
        loop {
            let frame = match self.frame {
                Some(f) => f,
                None => {
                    let rest = input.get(pos..).unwrap_or_default();
                    let Some((head, used)) = self.take_head(rest, limits)? else {
                        return Ok((input.len(), Step::NeedMore));
                    };
                    pos += used;
                    self.start_frame(head, limits, deflate)?
                }
            };
            let rest = input.get_mut(pos..).unwrap_or_default();
            // Fast path: a whole frame that is also a whole message needs no copy.
            let whole = frame.remaining <= rest.len() as u64;
            let unbuffered = if frame.opcode.is_control() {
                self.control.is_none()
            } else {
                frame.fin && self.msg.is_none()
            };
            if whole && unbuffered {
                let len = frame.remaining as usize; // <= rest.len(), checked above
                self.frame = None;
                let (payload, _) = rest.split_at_mut(len);
                apply_mask(payload, frame.mask, usize::from(frame.mask_offset));
                return Ok((
                    pos + len,
                    Step::InPlace {
                        opcode: frame.opcode,
                        start: pos,
                        compressed: frame.compressed,
                    },
                ));
            }
            // Slow path: buffer what arrived of this frame.
            let take = frame.remaining.min(rest.len() as u64) as usize;
            let (chunk, _) = rest.split_at_mut(take);
            apply_mask(chunk, frame.mask, usize::from(frame.mask_offset));
            pos += take;
            let remaining = frame.remaining - take as u64;
            self.frame = Some(Frame {
                remaining,
                mask_offset: ((usize::from(frame.mask_offset) + take) % 4) as u8,
                ..frame
            });
            if frame.opcode.is_control() {
                let buf = self.control.get_or_insert_with(|| {
                    Box::new(ControlBuf {
                        len: 0,
                        bytes: [0; 125],
                    })
                });
                let start = usize::from(buf.len);
                // start + take <= 125: the header check bounded the whole payload to 125.
                if let Some(dst) = buf.bytes.get_mut(start..start + take) {
                    dst.copy_from_slice(chunk);
                }
                buf.len += take as u8;
            } else {
                let msg = self.msg.get_or_insert_with(|| {
                    Box::new(Assembly {
                        opcode: frame.opcode,
                        buf: Vec::new(),
                        fragments: 1,
                        fin: frame.fin,
                        compressed: frame.compressed,
                        utf8: Utf8Validator::new(),
                    })
                });
                // Compressed text is checked once inflated (RFC 7692 §6.2 then RFC 6455 §8.1).
                if msg.opcode == OpCode::Text && !msg.compressed {
                    // §8.1, fail fast: invalid bytes are rejected as soon as they arrive.
                    msg.utf8.feed(chunk).map_err(|_| ProtoError::InvalidUtf8)?;
                }
                msg.buf.extend_from_slice(chunk);
            }
            if remaining > 0 {
                return Ok((pos, Step::NeedMore));
            }
            self.frame = None;
            if frame.opcode.is_control() {
                self.delivered = true;
                return Ok((pos, Step::Control(frame.opcode)));
            }
            if frame.fin {
                if let Some(msg) = self.msg.as_deref_mut()
                    && msg.opcode == OpCode::Text
                    && !msg.compressed
                {
                    msg.utf8.finish().map_err(|_| ProtoError::InvalidUtf8)?;
                }
                self.delivered = true;
                return Ok((pos, Step::Data));
            }
        }
    }

    /// Completes a frame header from the spill buffer and/or `input`.
    ///
    /// Returns the header and how many bytes of `input` it used, or `None` once all of `input`
    /// has been moved into the spill buffer.
    fn take_head(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<Option<(FrameHead, usize)>, ProtoError> {
        let had = usize::from(self.head_len);
        if had == 0 {
            if let Some((head, used)) = frame::decode_head(input, limits.max_message)? {
                return Ok(Some((head, used)));
            }
            // decode_head needs at most MAX_HEAD_LEN bytes, so input is shorter than that.
            let n = input.len().min(MAX_HEAD_LEN);
            if let (Some(dst), Some(src)) = (self.head.get_mut(..n), input.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.head_len = n as u8;
            return Ok(None);
        }
        let add = (MAX_HEAD_LEN - had).min(input.len());
        // had < MAX_HEAD_LEN (a spilled header is incomplete), so had + add <= MAX_HEAD_LEN.
        if let (Some(dst), Some(src)) = (self.head.get_mut(had..had + add), input.get(..add)) {
            dst.copy_from_slice(src);
        }
        match frame::decode_head(
            self.head.get(..had + add).unwrap_or_default(),
            limits.max_message,
        )? {
            Some((head, len)) => {
                self.head_len = 0;
                // The header is longer than what was spilled before, since that was incomplete.
                Ok(Some((head, len.saturating_sub(had))))
            }
            None => {
                self.head_len = (had + add) as u8;
                Ok(None)
            }
        }
    }

    /// Checks a new frame against the message in progress (§5.4) and the limits (§10.4).
    fn start_frame(
        &mut self,
        head: FrameHead,
        limits: &Limits,
        deflate: bool,
    ) -> Result<Frame, ProtoError> {
        if head.rsv1 {
            // §5.2: RSV1 "MUST be 0 unless an extension is negotiated that defines meanings".
            if !deflate {
                return Err(ProtoError::ReservedBits);
            }
            // RFC 7692 §6.1: never on control frames or non-first fragments.
            if head.opcode.is_control() || head.opcode == OpCode::Continuation {
                return Err(ProtoError::MisplacedRsv1);
            }
        }
        // §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
        let mask = head.mask.ok_or(ProtoError::UnmaskedFrame)?;
        let mut compressed = head.rsv1;
        match (head.opcode, self.msg.as_deref_mut()) {
            (op, _) if op.is_control() => {}
            (OpCode::Continuation, None) => return Err(ProtoError::UnexpectedContinuation),
            (OpCode::Continuation, Some(msg)) => {
                if msg.buf.len() as u64 + head.payload_len > limits.max_message {
                    return Err(ProtoError::MessageTooBig);
                }
                msg.fragments += 1;
                if msg.fragments > limits.max_fragments {
                    return Err(ProtoError::TooManyFragments);
                }
                msg.fin = head.fin;
                compressed = msg.compressed;
            }
            (_, Some(_)) => return Err(ProtoError::ExpectedContinuation),
            (op, None) => {
                if !head.fin {
                    self.msg = Some(Box::new(Assembly {
                        opcode: op,
                        buf: Vec::new(),
                        fragments: 1,
                        fin: false,
                        compressed,
                        utf8: Utf8Validator::new(),
                    }));
                }
            }
        }
        let frame = Frame {
            opcode: head.opcode,
            fin: head.fin,
            compressed,
            mask,
            remaining: head.payload_len,
            mask_offset: 0,
        };
        self.frame = Some(frame);
        Ok(frame)
    }
}

/// Builds the message for a complete, unmasked payload.
fn complete(opcode: OpCode, payload: &[u8]) -> Result<Message<'_>, ProtoError> {
    Ok(match opcode {
        OpCode::Text => Message::Text(as_str(payload)?),
        OpCode::Binary | OpCode::Continuation => Message::Binary(payload),
        OpCode::Ping => Message::Ping(payload),
        OpCode::Pong => Message::Pong(payload),
        OpCode::Close => Message::Close(close::parse(payload)?),
    })
}

fn as_str(bytes: &[u8]) -> Result<&str, ProtoError> {
    std::str::from_utf8(bytes).map_err(|_| ProtoError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::CloseCode;

    const LIMITS: Limits = Limits {
        max_message: 1 << 16,
        max_fragments: 8,
    };

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0xa1, 0x22, 0x03, 0x94];
        let head = FrameHead {
            fin: b0 & 0x80 != 0,
            rsv1: false,
            opcode: OpCode::from_bits(b0).unwrap(),
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        frame::encode_head(&head, &mut out);
        out[0] |= b0 & 0x70;
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key, 0);
        out
    }

    /// What a reader makes of `input` fed in chunks of `chunk` bytes.
    #[derive(Debug, PartialEq)]
    enum Out {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
        Err(ProtoError),
    }

    fn run(input: &[u8], chunk: usize) -> Vec<Out> {
        run_with(input, chunk, None)
    }

    /// [`run`], with permessage-deflate negotiated when `inflater` is given.
    fn run_with(input: &[u8], chunk: usize, mut inflater: Option<&mut Inflater>) -> Vec<Out> {
        let mut reader = Reader::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut piece = piece.to_vec();
            let mut pos = 0;
            loop {
                match reader.next(&mut piece[pos..], &LIMITS, inflater.as_deref_mut()) {
                    Err(e) => {
                        out.push(Out::Err(e));
                        return out;
                    }
                    Ok((n, msg)) => {
                        pos += n;
                        let Some(msg) = msg else { break };
                        out.push(match msg {
                            Message::Text(t) => Out::Text(t.into()),
                            Message::Binary(b) => Out::Binary(b.into()),
                            Message::Ping(b) => Out::Ping(b.into()),
                            Message::Pong(b) => Out::Pong(b.into()),
                            Message::Close(c) => Out::Close(c.code.map(|c| c.0), c.reason.into()),
                        });
                    }
                }
            }
        }
        out
    }

    /// Feeds whole, one byte at a time, and in a few other splits; all must agree.
    fn check(input: &[u8], expected: &[Out]) {
        for chunk in [input.len(), 1, 2, 3, 7, 13] {
            assert_eq!(run(input, chunk), expected, "chunk {chunk}");
        }
    }

    /// Feeds whole and in splits with permessage-deflate negotiated; all must agree.
    fn check_deflate(input: &[u8], expected: &[Out]) {
        let mut z = Inflater::new();
        for chunk in [input.len(), 1, 2, 3, 7, 13] {
            assert_eq!(
                run_with(input, chunk, Some(&mut z)),
                expected,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn rfc_7692_compressed_messages() {
        // §7.2.3.1 "Hello" in one frame, then §7.2.3.3's stored block, as binary.
        let mut input = frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        input.extend(frame(0xc2, &stored));
        // §7.2.1's fragmented example, with a ping between the fragments; then a plain one.
        input.extend(frame(0x41, &[0xf2, 0x48, 0xcd]));
        input.extend(frame(0x89, b"p"));
        input.extend(frame(0x80, &[0xc9, 0xc9, 0x07, 0x00]));
        input.extend(frame(0x81, b"plain"));
        check_deflate(
            &input,
            &[
                Out::Text("Hello".into()),
                Out::Binary(b"Hello".to_vec()),
                Out::Ping(b"p".to_vec()),
                Out::Text("Hello".into()),
                Out::Text("plain".into()),
            ],
        );
        // Without the extension, RSV1 is a reserved bit (RFC 6455 §5.2).
        check(&input, &[Out::Err(ProtoError::ReservedBits)]);
    }

    #[test]
    fn rfc_7692_violations() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let cases: Vec<(Vec<u8>, ProtoError)> = vec![
            // §6.1: not on control frames, not on a non-first fragment.
            (frame(0xc9, b""), ProtoError::MisplacedRsv1),
            (
                [frame(0x41, &hello[..3]), frame(0xc0, &hello[3..])].concat(),
                ProtoError::MisplacedRsv1,
            ),
            // Not DEFLATE data.
            (frame(0xc2, &[0xff, 0xff, 0xff]), ProtoError::InvalidDeflate),
            // Valid DEFLATE, invalid UTF-8 once inflated: checked on the inflated text.
            (frame(0xc1, &[0xfa, 0x0f, 0x00]), ProtoError::InvalidUtf8),
            // RSV2 and RSV3 stay reserved.
            (frame(0xe1, &hello), ProtoError::ReservedBits),
        ];
        for (input, err) in cases {
            check_deflate(&input, &[Out::Err(err)]);
        }
    }

    #[test]
    fn a_small_frame_that_inflates_past_the_limit_is_too_big() {
        // 64 KiB + 1 zero bytes in a few hundred bytes of DEFLATE: over LIMITS.max_message.
        let mut d = crate::proto::deflate::Deflater::new(9, 0);
        let mut plain = Vec::new();
        frame::encode_frame(OpCode::Binary, &vec![0; (1 << 16) + 1], &mut plain);
        let bomb = d.frame(&plain, 15).unwrap();
        let (_, head_len) = frame::decode_head(&bomb, u64::MAX).unwrap().unwrap();
        let payload = &bomb[head_len..];
        assert!(payload.len() < 200, "{}", payload.len());
        check_deflate(
            &frame(0xc2, payload),
            &[Out::Err(ProtoError::MessageTooBig)],
        );
        // At exactly the limit it passes.
        plain.clear();
        frame::encode_frame(OpCode::Binary, &vec![0; 1 << 16], &mut plain);
        let ok = d.frame(&plain, 15).unwrap();
        let (_, head_len) = frame::decode_head(&ok, u64::MAX).unwrap().unwrap();
        check_deflate(
            &frame(0xc2, &ok[head_len..]),
            &[Out::Binary(vec![0; 1 << 16])],
        );
    }

    #[test]
    fn rfc_5_7_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        check(&bytes, &[Out::Text("Hello".into())]);
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let mut input = frame(0x01, b"Hel");
        input.extend(frame(0x89, b"p"));
        input.extend(frame(0x00, b""));
        input.extend(frame(0x8a, b"q"));
        input.extend(frame(0x80, b"lo"));
        input.extend(frame(0x82, &[0u8; 300]));
        input.extend(frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        check(
            &input,
            &[
                Out::Ping(b"p".to_vec()),
                Out::Pong(b"q".to_vec()),
                Out::Text("Hello".into()),
                Out::Binary(vec![0; 300]),
                Out::Close(Some(1000), "bye".into()),
            ],
        );
    }

    #[test]
    fn code_point_split_across_fragments_is_valid() {
        let mut input = frame(0x01, &"κ".as_bytes()[..1]);
        input.extend(frame(0x80, &"κ".as_bytes()[1..]));
        check(&input, &[Out::Text("κ".into())]);
    }

    #[test]
    fn violations_map_to_errors() {
        let unmasked = [0x81, 0x00];
        let cases: Vec<(Vec<u8>, ProtoError)> = vec![
            (unmasked.to_vec(), ProtoError::UnmaskedFrame),
            (frame(0x80, b"x"), ProtoError::UnexpectedContinuation),
            (
                [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
                ProtoError::ExpectedContinuation,
            ),
            (frame(0xc1, b"x"), ProtoError::ReservedBits),
            (frame(0x88, &[0x03]), ProtoError::ClosePayloadTooShort),
            (frame(0x88, &[0x03, 0xed]), ProtoError::InvalidCloseCode),
            (frame(0x81, &[0xff]), ProtoError::InvalidUtf8),
            (
                frame(0x82, &vec![0; (1 << 16) + 1]),
                ProtoError::MessageTooBig,
            ),
            (
                [frame(0x02, &[0; 40000]), frame(0x80, &[0; 40000])].concat(),
                ProtoError::MessageTooBig,
            ),
            (
                (0..9)
                    .map(|_| frame(0x00, b""))
                    .fold(frame(0x01, b""), |a, f| [a, f].concat()),
                { ProtoError::TooManyFragments },
            ),
        ];
        for (input, err) in cases {
            check(&input, &[Out::Err(err)]);
        }
        assert_eq!(ProtoError::InvalidUtf8.close_code(), CloseCode(1007));
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        // First fragment only, not final: the error must not wait for the rest.
        let input = frame(0x01, b"ok \xc0\xaf");
        check(&input, &[Out::Err(ProtoError::InvalidUtf8)]);
        // A single final frame whose bad byte arrives before the rest of its payload.
        let input = frame(0x81, b"ok \xff and more text after it");
        assert_eq!(
            run(&input[..10], 1),
            vec![Out::Err(ProtoError::InvalidUtf8)]
        );
    }

    #[test]
    fn reclaim_frees_a_buffered_message() {
        let mut reader = Reader::new();
        let mut input = frame(0x82, &[7; 3000]);
        let (head, body) = input.split_at_mut(100);
        assert_eq!(reader.next(head, &LIMITS, None).unwrap(), (100, None));
        let (n, msg) = reader.next(body, &LIMITS, None).unwrap();
        assert_eq!(
            (
                n,
                msg.map(|m| matches!(m, Message::Binary(b) if b.len() == 3000))
            ),
            (body.len(), Some(true))
        );
        assert!(!reader.is_idle());
        reader.reclaim();
        assert!(reader.is_idle());
    }

    #[test]
    fn idle_after_each_message() {
        let mut reader = Reader::new();
        let mut input = frame(0x01, b"ab");
        input.extend(frame(0x80, b"cd"));
        let mut pos = 0;
        let (n, msg) = reader.next(&mut input[pos..], &LIMITS, None).unwrap();
        pos += n;
        assert_eq!(msg, Some(Message::Text("abcd")));
        let (n, msg) = reader.next(&mut input[pos..], &LIMITS, None).unwrap();
        assert_eq!((n, msg), (0, None));
        assert!(reader.is_idle());
    }
}
