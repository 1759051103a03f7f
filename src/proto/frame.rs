//! Frame headers (RFC 6455 §5.2): decode from the front of a byte slice, encode into a `Vec`.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! ```

use super::error::ProtoError;

/// The longest possible header: 2 + 8 (64-bit length) + 4 (masking key).
pub const MAX_HEAD_LEN: usize = 14;

/// A frame's opcode (§5.2); reserved values are rejected at decode time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a UTF-8 text frame.
    Text,
    /// 0x2: a binary frame.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Maps the low nibble of the first header byte; reserved opcodes are an error (§5.2).
    pub fn from_bits(bits: u8) -> Result<Self, ProtoError> {
        match bits & 0x0f {
            0x0 => Ok(Self::Continuation),
            0x1 => Ok(Self::Text),
            0x2 => Ok(Self::Binary),
            0x8 => Ok(Self::Close),
            0x9 => Ok(Self::Ping),
            0xa => Ok(Self::Pong),
            _ => Err(ProtoError::ReservedOpcode),
        }
    }

    /// The wire value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    /// Control frames have the high bit of the opcode set (§5.5).
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Whether this is the final fragment of a message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, "Per-Message Compressed" (RFC 7692 §6); the caller
    /// decides whether it may be set (RSV2 and RSV3 never may).
    pub rsv1: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame (§5.3).
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

/// Decodes a frame header from the front of `buf` (RFC 6455 §5.2).
///
/// `Ok(None)`: `buf` holds less than a whole header; nothing is consumed. On success the
/// second value is the header's length. Frames declaring more than `max_payload` bytes fail
/// before anything is allocated for them (§10.4).
pub fn decode_head(buf: &[u8], max_payload: u64) -> Result<Option<(FrameHead, usize)>, ProtoError> {
    let Some((&[b0, b1], rest)) = buf.split_first_chunk::<2>() else {
        return Ok(None);
    };
    // §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated"; the only one we negotiate,
    // permessage-deflate, defines RSV1 alone (RFC 7692 §6), which the caller checks.
    if b0 & 0x30 != 0 {
        return Err(ProtoError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let opcode = OpCode::from_bits(b0)?;
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST
        // NOT be fragmented."
        if !fin {
            return Err(ProtoError::FragmentedControl);
        }
        if len7 > 125 {
            return Err(ProtoError::ControlTooLong);
        }
    }
    let (payload_len, rest, ext_len) = match len7 {
        126 => {
            let Some((ext, rest)) = rest.split_first_chunk::<2>() else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes(*ext));
            if len < 126 {
                return Err(ProtoError::NonMinimalLength);
            }
            (len, rest, 2)
        }
        127 => {
            let Some((ext, rest)) = rest.split_first_chunk::<8>() else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(*ext);
            // §5.2: "the most significant bit MUST be 0".
            if len >> 63 != 0 {
                return Err(ProtoError::LengthTopBit);
            }
            if len <= 0xffff {
                return Err(ProtoError::NonMinimalLength);
            }
            (len, rest, 8)
        }
        n => (u64::from(n), rest, 0),
    };
    if payload_len > max_payload {
        return Err(ProtoError::MessageTooBig);
    }
    let mask = if b1 & 0x80 != 0 {
        let Some((key, _)) = rest.split_first_chunk::<4>() else {
            return Ok(None);
        };
        Some(*key)
    } else {
        None
    };
    let head_len = 2 + ext_len + if mask.is_some() { 4 } else { 0 };
    Ok(Some((
        FrameHead {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
        },
        head_len,
    )))
}

/// Appends the encoded header to `out`, with the shortest length encoding (§5.2).
pub fn encode_head(head: &FrameHead, out: &mut Vec<u8>) {
    let b0 =
        if head.fin { 0x80 } else { 0 } | if head.rsv1 { 0x40 } else { 0 } | head.opcode.bits();
    let mask_bit = if head.mask.is_some() { 0x80 } else { 0 };
    match head.payload_len {
        n @ 0..=125 => out.extend_from_slice(&[b0, mask_bit | n as u8]),
        n @ 126..=0xffff => {
            out.extend_from_slice(&[b0, mask_bit | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[b0, mask_bit | 127]);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    if let Some(key) = head.mask {
        out.extend_from_slice(&key);
    }
}

/// Appends a whole unmasked, unfragmented server frame (§5.1: servers MUST NOT mask).
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let head = FrameHead {
        fin: true,
        rsv1: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    out.reserve(MAX_HEAD_LEN + payload.len());
    encode_head(&head, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all_ways(bytes: &[u8]) -> Result<Option<(FrameHead, usize)>, ProtoError> {
        // Every prefix shorter than the header says "need more"; none consumes anything.
        let whole = decode_head(bytes, u64::MAX >> 1);
        if let Ok(Some((_, len))) = whole {
            for cut in 0..len {
                assert_eq!(
                    decode_head(&bytes[..cut], u64::MAX >> 1),
                    Ok(None),
                    "cut {cut}"
                );
            }
        }
        whole
    }

    #[test]
    fn rfc_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        let (h, n) = decode_all_ways(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
        // A single-frame masked text message "Hello".
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode_all_ways(&masked).unwrap().unwrap();
        assert_eq!(
            (h.mask, h.payload_len, n),
            (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6)
        );
        // A fragmented unmasked text message: "Hel" then "lo".
        let (h, _) = decode_all_ways(&[0x01, 0x03, 0x48, 0x65, 0x6c])
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let (h, _) = decode_all_ways(&[0x80, 0x02, 0x6c, 0x6f]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // Unmasked ping and masked pong, "Hello".
        let (h, _) = decode_all_ways(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
            .unwrap()
            .unwrap();
        assert_eq!(h.opcode, OpCode::Ping);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_all_ways(&pong).unwrap().unwrap().0.opcode,
            OpCode::Pong
        );
        // 256 bytes binary message in a single unmasked frame.
        let (h, n) = decode_all_ways(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        // 64KiB binary message in a single unmasked frame.
        let (h, n) = decode_all_ways(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn violations() {
        let cases: &[(&[u8], ProtoError)] = &[
            (&[0xa1, 0x80], ProtoError::ReservedBits),
            (&[0xe1, 0x80], ProtoError::ReservedBits),
            (&[0x91, 0x80], ProtoError::ReservedBits),
            (&[0x83, 0x80], ProtoError::ReservedOpcode),
            (&[0x8b, 0x80], ProtoError::ReservedOpcode),
            (&[0x09, 0x80], ProtoError::FragmentedControl),
            (&[0x89, 0xfe], ProtoError::ControlTooLong),
            (
                &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
                ProtoError::LengthTopBit,
            ),
            (&[0x82, 0xfe, 0x00, 0x7d], ProtoError::NonMinimalLength),
            (
                &[0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
                ProtoError::NonMinimalLength,
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(decode_head(bytes, u64::MAX), Err(*err), "{bytes:x?}");
        }
    }

    #[test]
    fn declared_length_over_limit_fails_before_payload() {
        let two_gib = [0x82, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            decode_head(&two_gib, 1 << 20),
            Err(ProtoError::MessageTooBig)
        );
    }

    #[test]
    fn encode_round_trips() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                for opcode in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
                    let head = FrameHead {
                        fin: len % 2 == 0,
                        rsv1: len % 3 == 0,
                        opcode,
                        mask,
                        payload_len: len,
                    };
                    let mut out = Vec::new();
                    encode_head(&head, &mut out);
                    assert_eq!(decode_all_ways(&out), Ok(Some((head, out.len()))));
                }
            }
        }
    }
}
