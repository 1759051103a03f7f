//! Protocol violations and their one mapping to the wire (RFC 6455 §7.4.1, §4.2.2).

use std::fmt;

use super::close::CloseCode;

/// A violation of RFC 6455 by the peer, after the opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// §5.1: a client MUST mask every frame it sends.
    UnmaskedFrame,
    /// §5.2: RSV1-3 MUST be 0 unless an extension defines them.
    ReservedBits,
    /// §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
    ReservedOpcode,
    /// §5.5: control frames MUST NOT be fragmented.
    FragmentedControl,
    /// §5.5: control frames MUST have a payload length of 125 bytes or less.
    ControlTooLong,
    /// §5.2: the most significant bit of a 64-bit length MUST be 0.
    LengthTopBit,
    /// §5.2: "the minimal number of bytes MUST be used to encode the length".
    NonMinimalLength,
    /// §5.4: a continuation frame arrived with no message to continue.
    UnexpectedContinuation,
    /// §5.4: a new data frame arrived inside a fragmented message.
    ExpectedContinuation,
    /// §8.1: a text message or close reason is not valid UTF-8.
    InvalidUtf8,
    /// §10.4: the message is larger than this server accepts.
    MessageTooBig,
    /// §10.4: the message has more fragments than this server accepts.
    TooManyFragments,
    /// §5.5.1: a close payload of 1 byte cannot hold a status code.
    ClosePayloadTooShort,
    /// §7.4: the close code is not one an endpoint may send.
    InvalidCloseCode,
    /// RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
    /// frames and non-first fragments of a data message."
    MisplacedRsv1,
    /// RFC 7692 §7.2.2: a compressed message whose payload is not DEFLATE data (or refers back
    /// past its own start, which no context takeover forbids).
    InvalidDeflate,
}

impl ProtoError {
    /// The close code this violation is answered with (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD, // 1007, §8.1
            // 1007 as Node ws answers it: the payload is not what its frame says it is.
            Self::InvalidDeflate => CloseCode::INVALID_PAYLOAD,
            Self::MessageTooBig | Self::TooManyFragments => CloseCode::TOO_BIG, // 1009, §10.4
            _ => CloseCode::PROTOCOL,                                           // 1002
        }
    }

    /// A stable short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnmaskedFrame => "unmasked frame",
            Self::ReservedBits => "reserved bits set",
            Self::ReservedOpcode => "reserved opcode",
            Self::FragmentedControl => "fragmented control frame",
            Self::ControlTooLong => "control frame too long",
            Self::LengthTopBit => "64-bit length with top bit set",
            Self::NonMinimalLength => "non-minimal length",
            Self::UnexpectedContinuation => "unexpected continuation",
            Self::ExpectedContinuation => "expected continuation",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::MessageTooBig => "message too big",
            Self::TooManyFragments => "too many fragments",
            Self::ClosePayloadTooShort => "close payload of 1 byte",
            Self::InvalidCloseCode => "invalid close code",
            Self::MisplacedRsv1 => "rsv1 on a control or continuation frame",
            Self::InvalidDeflate => "invalid deflate data",
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ProtoError {}

/// Why an opening handshake or plain HTTP request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Malformed request or a missing/invalid required header: 400.
    BadRequest(&'static str),
    /// §4.2.1: "The method of the request MUST be GET": 405.
    MethodNotAllowed,
    /// §4.2.2: unsupported `Sec-WebSocket-Version`: 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// The request head is over the byte cap or has too many fields: 431.
    HeadersTooLarge,
    /// §10.2: the `Origin` is not one this server accepts: 403.
    ForbiddenOrigin,
    /// A `POST` without one `Content-Length` (chunked bodies are not read): 411.
    LengthRequired,
    /// A request body over the server's cap: 413.
    ContentTooLarge,
    /// The server or this client's address holds its maximum of connections: 503.
    Unavailable(&'static str),
}

impl HandshakeError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedVersion => 426,
            Self::HeadersTooLarge => 431,
            Self::ForbiddenOrigin => 403,
            Self::LengthRequired => 411,
            Self::ContentTooLarge => 413,
            Self::Unavailable(_) => 503,
        }
    }

    /// A short human reason, sent as the response body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(why) => why,
            Self::MethodNotAllowed => "method not allowed",
            Self::UnsupportedVersion => "unsupported websocket version",
            Self::HeadersTooLarge => "request header too large",
            Self::ForbiddenOrigin => "origin not allowed",
            Self::LengthRequired => "a POST needs one Content-Length",
            Self::ContentTooLarge => "request body too large",
            Self::Unavailable(why) => why,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for HandshakeError {}
