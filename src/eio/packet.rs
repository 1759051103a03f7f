//! Engine.IO v4 packets and long-polling payloads (the protocol's "Packet encoding" and
//! "Payload" sections), over byte slices: no sessions, no sockets, no clock.
//!
//! A packet is a type digit, then its data: `0` open, `1` close, `2` ping, `3` pong, `4`
//! message, `5` upgrade, `6` noop. Over WebSocket a text frame holds one packet and a binary
//! frame one binary message. Over HTTP long polling a payload joins packets with the record
//! separator 0x1e, a binary message written as `b` + base64 ("there is no way to send binary
//! data in an HTTP long-polling payload otherwise").

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};

use crate::proto::{OpCode, frame};

/// Joins the packets of a long-polling payload: "the record separator (`\x1e`)".
pub const SEPARATOR: u8 = 0x1e;

/// A packet from a client. The data of types that carry none (open, close, upgrade, noop) is
/// ignored, as the reference server does.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0`: only a server opens; ignored from a client.
    Open,
    /// `1`: the client is done with the session.
    Close,
    /// `2`: a heartbeat in the wrong direction, or `2probe` during an upgrade.
    Ping(&'a str),
    /// `3`: the answer to the server's ping.
    Pong(&'a str),
    /// `4…`: a text message, without the `4`.
    Message(&'a str),
    /// `b…`: a binary message sent as base64 text, decoded.
    Binary(Vec<u8>),
    /// `5`: completes an upgrade to WebSocket.
    Upgrade,
    /// `6`: nothing; ends a poll cycle during an upgrade.
    Noop,
}

/// Why bytes are not a packet: the reference parser's "parser error", after which the
/// session is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// An empty packet, or one that does not start with a packet type.
    UnknownType,
    /// `b` followed by something that is not base64.
    BadBase64,
    /// A long-polling payload that is not UTF-8 (its packets are strings).
    NotUtf8,
}

impl PacketError {
    /// A short reason, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownType => "unknown packet type",
            Self::BadBase64 => "invalid base64 in a binary packet",
            Self::NotUtf8 => "payload is not UTF-8",
        }
    }
}

/// Decodes one packet written as text (a WebSocket text frame, or one element of a payload).
pub fn decode(text: &str) -> Result<Packet<'_>, PacketError> {
    let Some(&kind) = text.as_bytes().first() else {
        return Err(PacketError::UnknownType);
    };
    // The type is one ASCII byte, so the data starts at a character boundary.
    let data = text.get(1..).unwrap_or_default();
    Ok(match kind {
        b'0' => Packet::Open,
        b'1' => Packet::Close,
        b'2' => Packet::Ping(data),
        b'3' => Packet::Pong(data),
        b'4' => Packet::Message(data),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        // Browsers pad base64 and Node's decoder does not insist: accept either.
        b'b' => Packet::Binary(
            STANDARD_PAD_INDIFFERENT
                .decode(data)
                .map_err(|_| PacketError::BadBase64)?,
        ),
        _ => return Err(PacketError::UnknownType),
    })
}

/// The packets of a long-polling payload (a `POST` body), in order. The caller stops at the
/// first error, as the reference parser does.
pub fn decode_payload(
    body: &[u8],
) -> Result<impl Iterator<Item = Result<Packet<'_>, PacketError>>, PacketError> {
    let text = std::str::from_utf8(body).map_err(|_| PacketError::NotUtf8)?;
    Ok(text.split(char::from(SEPARATOR)).map(decode))
}

/// Appends the packets that server frames hold to a long-polling payload, separated from
/// what `out` holds already: a text frame's payload as it is (the app sends whole packets), a
/// binary frame's as `b` + base64. `frames` holds whole unmasked frames back to back; anything
/// else (a control frame, a torn one) is skipped. Returns the packets appended.
pub fn push_frames(mut frames: &[u8], out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    while let Ok(Some((head, len))) = frame::decode_head(frames, u64::MAX) {
        let Some(end) = usize::try_from(head.payload_len)
            .ok()
            .and_then(|p| p.checked_add(len))
        else {
            break;
        };
        let (Some(payload), Some(rest)) = (frames.get(len..end), frames.get(end..)) else {
            break;
        };
        frames = rest;
        let binary = match head.opcode {
            OpCode::Text => false,
            OpCode::Binary => true,
            _ => continue,
        };
        if !out.is_empty() {
            out.push(SEPARATOR);
        }
        if binary {
            out.push(b'b');
            push_base64(payload, out);
        } else {
            out.extend_from_slice(payload);
        }
        n += 1;
    }
    n
}

/// Appends `data` in base64 with padding (what the reference server sends).
fn push_base64(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let Some(len) = base64::encoded_len(data.len(), true) else {
        return; // More than usize::MAX / 4 * 3 bytes: cannot be in memory.
    };
    out.resize(start + len, 0);
    let written = out
        .get_mut(start..)
        .map_or(0, |tail| STANDARD.encode_slice(data, tail).unwrap_or(0));
    out.truncate(start + written);
}

/// Appends the open packet that starts a session (the protocol's "Handshake" section):
/// `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`. `sid` is
/// URL-safe base64, so it needs no JSON escaping.
pub fn write_open(sid: &str, upgrade: bool, open: &Open, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let upgrades = if upgrade { r#"["websocket"]"# } else { "[]" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        open.ping_interval_ms, open.ping_timeout_ms, open.max_payload
    );
}

/// The numbers an open packet announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// How often the server pings, in milliseconds.
    pub ping_interval_ms: u64,
    /// How long the server waits for the pong, in milliseconds.
    pub ping_timeout_ms: u64,
    /// The largest payload (polling body, WebSocket message) the server takes, in bytes.
    pub max_payload: u64,
}

/// The query parameters of an Engine.IO request (the protocol's "Handshake" section).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// `EIO`: the protocol revision; only `4` is served.
    pub eio: Option<&'a str>,
    /// `transport`: `polling` or `websocket`.
    pub transport: Option<&'a str>,
    /// `sid`: the session of a request after the handshake.
    pub sid: Option<&'a str>,
}

/// The query parameters of request target `target` (the first value of each). Values are
/// compared as sent, not percent-decoded: every value served (`4`, `polling`, `websocket`, a
/// URL-safe sid) is written the same either way.
pub fn parse_query(target: &str) -> Query<'_> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut q = Query::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "EIO" => &mut q.eio,
            "transport" => &mut q.transport,
            "sid" => &mut q.sid,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    q
}

/// The transports served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    /// The `transport` query value, if it names a transport served.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value? {
            "polling" => Some(Self::Polling),
            "websocket" => Some(Self::WebSocket),
            _ => None,
        }
    }
}

/// The errors a request is refused with, with the code and message its answer carries (the
/// reference server's `Server.errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 0: `transport` missing or not `polling`/`websocket`.
    UnknownTransport,
    /// 1: `sid` names no live session.
    UnknownSid,
    /// 2: a handshake that is not a `GET`.
    BadHandshakeMethod,
    /// 3: anything else malformed (a transport that does not match the session's, a second
    /// concurrent `GET`, a bad payload).
    BadRequest,
    /// 4: refused by policy (another site's page).
    Forbidden,
    /// 5: `EIO` missing or not `4`.
    UnsupportedProtocolVersion,
}

impl Refusal {
    /// The `code` field of the answer.
    pub fn code(self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::Forbidden => 4,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    /// The `message` field of the answer.
    pub fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::Forbidden => "Forbidden",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP status: 403 for `Forbidden`, else 400 (the reference's `abortRequest`).
    pub fn status(self) -> u16 {
        match self {
            Self::Forbidden => 403,
            _ => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(opcode, payload, &mut out);
        out
    }

    #[test]
    fn every_packet_type_decodes() {
        let table: [(&str, Packet<'_>); 10] = [
            ("0", Packet::Open),
            ("1", Packet::Close),
            ("2", Packet::Ping("")),
            ("2probe", Packet::Ping("probe")),
            ("3probe", Packet::Pong("probe")),
            ("4hello é", Packet::Message("hello é")),
            ("4", Packet::Message("")),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
            ("bAQID", Packet::Binary(vec![1, 2, 3])),
        ];
        for (text, want) in table {
            assert_eq!(decode(text), Ok(want), "{text:?}");
        }
        assert_eq!(decode("bAQ=="), Ok(Packet::Binary(vec![1])));
        assert_eq!(decode("bAQ"), Ok(Packet::Binary(vec![1])));
        assert_eq!(decode("b"), Ok(Packet::Binary(vec![])));
        for bad in ["", "7", "x", "é", "\u{1e}"] {
            assert_eq!(decode(bad), Err(PacketError::UnknownType), "{bad:?}");
        }
        assert_eq!(decode("b!!"), Err(PacketError::BadBase64));
    }

    #[test]
    fn payloads_split_on_the_record_separator() {
        // The protocol's own example: "4hello\x1e4€\x1ebAQIDBA==".
        let body = "4hello\u{1e}4€\u{1e}bAQIDBA==".as_bytes();
        let packets: Vec<_> = decode_payload(body).unwrap().collect();
        assert_eq!(
            packets,
            [
                Ok(Packet::Message("hello")),
                Ok(Packet::Message("€")),
                Ok(Packet::Binary(vec![1, 2, 3, 4])),
            ]
        );
        let packets: Vec<_> = decode_payload(b"").unwrap().collect();
        assert_eq!(packets, [Err(PacketError::UnknownType)]);
        let packets: Vec<_> = decode_payload(b"3\x1e\x1e4x").unwrap().collect();
        assert_eq!(packets[1], Err(PacketError::UnknownType));
        assert!(decode_payload(b"4\xff").is_err());
    }

    #[test]
    fn frames_become_a_payload() {
        let mut frames = frame(OpCode::Text, b"4hello");
        frames.extend(frame(OpCode::Ping, b"skipped"));
        frames.extend(frame(OpCode::Binary, &[1, 2, 3, 4]));
        frames.extend(frame(OpCode::Text, "4€".as_bytes()));
        let mut out = Vec::new();
        assert_eq!(push_frames(&frames, &mut out), 3);
        assert_eq!(out, "4hello\u{1e}bAQIDBA==\u{1e}4€".as_bytes());
        // Appending goes after a separator; a torn frame is dropped.
        let torn = frame(OpCode::Text, b"2");
        assert_eq!(push_frames(&torn[..2], &mut out), 0);
        assert_eq!(push_frames(&torn, &mut out), 1);
        assert!(out.ends_with(b"\x1e2"));
        // Large frames (16- and 64-bit lengths) too.
        for len in [200, 70_000] {
            let mut out = Vec::new();
            assert_eq!(
                push_frames(&frame(OpCode::Binary, &vec![7; len]), &mut out),
                1
            );
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(decode(text), Ok(Packet::Binary(vec![7; len])));
        }
    }

    #[test]
    fn open_packet_is_the_reference_json() {
        let open = Open {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
        };
        let mut out = Vec::new();
        write_open("abc-_", true, &open, &mut out);
        assert_eq!(
            out,
            br#"0{"sid":"abc-_","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        out.clear();
        write_open("s", false, &open, &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out[1..]).unwrap();
        assert_eq!(json["upgrades"], serde_json::json!([]));
    }

    #[test]
    fn query_takes_the_first_value_of_each_parameter() {
        let q = parse_query("/socket.io/?EIO=4&transport=polling&t=N8hyd6w&sid=abc&EIO=3");
        assert_eq!(
            q,
            Query {
                eio: Some("4"),
                transport: Some("polling"),
                sid: Some("abc"),
            }
        );
        assert_eq!(parse_query("/socket.io/"), Query::default());
        assert_eq!(parse_query("/socket.io/?EIO&sid=").eio, Some(""));
        assert_eq!(
            Transport::parse(Some("websocket")),
            Some(Transport::WebSocket)
        );
        assert_eq!(Transport::parse(Some("abc")), None);
        assert_eq!(Transport::parse(None), None);
    }

    #[test]
    fn refusals_carry_the_reference_codes() {
        let all = [
            Refusal::UnknownTransport,
            Refusal::UnknownSid,
            Refusal::BadHandshakeMethod,
            Refusal::BadRequest,
            Refusal::Forbidden,
            Refusal::UnsupportedProtocolVersion,
        ];
        for (i, r) in all.iter().enumerate() {
            assert_eq!(usize::from(r.code()), i);
        }
        assert_eq!(Refusal::UnknownSid.message(), "Session ID unknown");
        assert_eq!(Refusal::Forbidden.status(), 403);
        assert_eq!(Refusal::UnsupportedProtocolVersion.status(), 400);
    }
}
