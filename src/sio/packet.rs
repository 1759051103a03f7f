//! Socket.IO v5 packets as the default parser encodes them (socket.io-protocol, "Packet
//! encoding"; `socketio/socket.io` · `packages/socket.io-parser/lib/index.ts`):
//!
//! ```text
//! <type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>][JSON payload]
//! + binary attachments, one Engine.IO binary message each, in the messages that follow
//! ```
//!
//! Pure functions over one message's text: [`decode`] reads a text packet and checks its payload
//! as the reference decoder does (`isPayloadValid`); [`Assembly`] collects a binary packet's
//! attachments, bounded in number ([`MAX_ATTACHMENTS`]), bytes and (by its caller) time;
//! [`encode_head`] and [`write_array`] write outgoing packets into the caller's buffer. Payloads
//! are never rebuilt from a parsed tree: each element keeps its JSON text ([`RawValue`]), so an
//! argument passed on is the client's own, laid out by [`minify`] as `JSON.stringify` would.

use std::borrow::Cow;
use std::io::Write as _;

use serde_json::value::RawValue;

/// Binary attachments one packet may announce: socket.io-parser's `maxAttachments` default.
pub const MAX_ATTACHMENTS: usize = 10;

/// Longest acknowledgment id, in digits: any `u64` (JavaScript numbers are exact only to 2^53,
/// but a client's id is only echoed, never computed with).
const MAX_ID_DIGITS: usize = 20;

/// Event names the protocol keeps for itself: an EVENT naming one is invalid
/// (socket.io-parser's `RESERVED_EVENTS`).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A packet's type: the first character of its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: connect to a namespace (client: auth payload; server: `{"sid"}`).
    Connect,
    /// `1`: leave a namespace; no payload.
    Disconnect,
    /// `2`: an event: a non-empty array, the event name first.
    Event,
    /// `3`: an acknowledgment: an array of arguments.
    Ack,
    /// `4`: a refused connect (server only): `{"message"}`.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an acknowledgment with binary attachments.
    BinaryAck,
}

impl PacketType {
    /// The type a character names.
    pub fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// The character that names the type.
    pub fn digit(self) -> u8 {
        match self {
            Self::Connect => b'0',
            Self::Disconnect => b'1',
            Self::Event => b'2',
            Self::Ack => b'3',
            Self::ConnectError => b'4',
            Self::BinaryEvent => b'5',
            Self::BinaryAck => b'6',
        }
    }

    /// Whether the packet announces binary attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A packet's payload, as JSON text borrowed from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// No payload.
    None,
    /// A JSON object (CONNECT's auth, CONNECT_ERROR's error).
    Object(&'a str),
    /// A JSON string (a CONNECT_ERROR of protocol v4).
    Text(&'a str),
    /// An array (EVENT, ACK and their binary forms): each element's JSON text.
    Array(Vec<&'a str>),
}

/// One decoded text packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Its type.
    pub kind: PacketType,
    /// Binary attachments that follow (0 unless [`PacketType::is_binary`]).
    pub attachments: usize,
    /// The namespace, `/` when none is written.
    pub nsp: &'a str,
    /// The acknowledgment id, if the sender wants one.
    pub id: Option<u64>,
    /// The payload.
    pub data: Data<'a>,
}

/// Why a packet is malformed; the reference server closes the session for each of them
/// (its `Client.ondata` catches the decoder's error and calls `conn.close()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// An empty message.
    Empty,
    /// The first character is not `0`-`6`.
    UnknownType,
    /// A binary packet without `<digits>-` after its type.
    Attachments,
    /// More attachments than [`MAX_ATTACHMENTS`].
    TooManyAttachments,
    /// An acknowledgment id longer than any `u64`.
    Id,
    /// The payload is not JSON, or not what the type requires (`isPayloadValid`).
    Payload,
    /// A text message while a binary packet's attachments are awaited.
    TextInAttachments,
    /// A binary message while no binary packet awaits attachments.
    UnexpectedBinary,
    /// The attachments together are over their byte limit.
    AttachmentsTooBig,
    /// A placeholder names no attachment (`{"_placeholder":true,"num":N}` with `N` out of range).
    Placeholder,
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty packet",
            Self::UnknownType => "unknown packet type",
            Self::Attachments => "illegal attachments",
            Self::TooManyAttachments => "too many attachments",
            Self::Id => "invalid ack id",
            Self::Payload => "invalid payload",
            Self::TextInAttachments => "text while reconstructing a binary packet",
            Self::UnexpectedBinary => "binary data when not reconstructing a packet",
            Self::AttachmentsTooBig => "attachments too large",
            Self::Placeholder => "illegal placeholder",
        })
    }
}

/// Decodes one text packet (an Engine.IO `message` without its `4`), as socket.io-parser's
/// `decodeString` reads it, checking the payload as its `isPayloadValid` does. Stricter in two
/// places, both of which the reference reads by JavaScript's number coercion: the attachment
/// count and the id are ASCII digits only (`"5-"`, an empty count, is refused), and an EVENT
/// or ACK without a payload is refused, as the protocol says it MUST be ("The payload is
/// mandatory and MUST be a non-empty array. If that's not the case, then the receiver MUST
/// close the connection").
pub fn decode(text: &str, max_attachments: usize) -> Result<Packet<'_>, PacketError> {
    let (&first, _) = text.as_bytes().split_first().ok_or(PacketError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(PacketError::UnknownType)?;
    // Every boundary below follows an ASCII byte, so the slices are on char boundaries.
    let mut rest = text.get(1..).unwrap_or_default();
    let mut attachments = 0;
    if kind.is_binary() {
        let (count, after) = rest.split_once('-').ok_or(PacketError::Attachments)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PacketError::Attachments);
        }
        // More digits than any limit needs is too many, not an overflow.
        attachments = count.parse().unwrap_or(usize::MAX);
        if attachments > max_attachments {
            return Err(PacketError::TooManyAttachments);
        }
        rest = after;
    }
    let mut nsp = "/";
    if rest.starts_with('/') {
        // The namespace runs to the first `,` (consumed) or the end.
        let (name, after) = rest.split_once(',').unwrap_or((rest, ""));
        nsp = name;
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut id = None;
    if digits > 0 {
        let (number, after) = rest.split_at_checked(digits).ok_or(PacketError::Id)?;
        if digits > MAX_ID_DIGITS {
            return Err(PacketError::Id);
        }
        id = Some(number.parse().map_err(|_| PacketError::Id)?);
        rest = after;
    }
    let data = payload(kind, rest)?;
    Ok(Packet {
        kind,
        attachments,
        nsp,
        id,
        data,
    })
}

/// Reads and checks a payload for its packet type (`isPayloadValid`).
fn payload(kind: PacketType, json: &str) -> Result<Data<'_>, PacketError> {
    if json.is_empty() {
        return match kind {
            PacketType::Connect | PacketType::Disconnect => Ok(Data::None),
            _ => Err(PacketError::Payload),
        };
    }
    match kind {
        PacketType::Disconnect => Err(PacketError::Payload),
        PacketType::Connect => object(json).map(Data::Object),
        PacketType::ConnectError => {
            let raw = raw(json)?;
            match raw.get().as_bytes().first() {
                Some(b'{') => Ok(Data::Object(raw.get())),
                Some(b'"') => Ok(Data::Text(raw.get())),
                _ => Err(PacketError::Payload),
            }
        }
        PacketType::Event | PacketType::BinaryEvent => {
            let args = array(json)?;
            match args.first() {
                Some(name) if valid_event_name(name) => Ok(Data::Array(args)),
                _ => Err(PacketError::Payload),
            }
        }
        PacketType::Ack | PacketType::BinaryAck => array(json).map(Data::Array),
    }
}

/// One JSON value's text, without the whitespace around it.
fn raw(json: &str) -> Result<&RawValue, PacketError> {
    serde_json::from_str::<&RawValue>(json).map_err(|_| PacketError::Payload)
}

/// The text of a JSON object, or an error.
pub fn object(json: &str) -> Result<&str, PacketError> {
    let raw = raw(json)?.get();
    if raw.starts_with('{') {
        Ok(raw)
    } else {
        Err(PacketError::Payload)
    }
}

/// The elements of a JSON array, each as its text.
fn array(json: &str) -> Result<Vec<&str>, PacketError> {
    let items: Vec<&RawValue> = serde_json::from_str(json).map_err(|_| PacketError::Payload)?;
    Ok(items.into_iter().map(RawValue::get).collect())
}

/// Whether an event's first element names it: a number, or a string that is not reserved.
fn valid_event_name(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<'_, str>>(raw)
            .is_ok_and(|name| !RESERVED_EVENTS.contains(&&*name)),
        Some(b'-' | b'0'..=b'9') => true,
        _ => false,
    }
}

/// The event name an EVENT's first element holds, if it is a string.
pub fn event_name(raw: &str) -> Option<Cow<'_, str>> {
    serde_json::from_str(raw).ok()
}

/// Checks that every placeholder (`{"_placeholder":true,"num":N}`, at any depth) in a binary
/// packet's elements names one of its `attachments`, as socket.io-parser's
/// `reconstructPacket` does before it swaps the buffers in.
pub fn check_placeholders(items: &[&str], attachments: usize) -> Result<(), PacketError> {
    fn walk(value: &serde_json::Value, attachments: usize) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
                    return map
                        .get("num")
                        .and_then(serde_json::Value::as_u64)
                        .is_some_and(|n| n < attachments as u64);
                }
                map.values().all(|v| walk(v, attachments))
            }
            serde_json::Value::Array(items) => items.iter().all(|v| walk(v, attachments)),
            _ => true,
        }
    }
    for item in items {
        // Only an object or an array can hold a placeholder: skip parsing strings and numbers.
        if !item.starts_with(['{', '[']) {
            continue;
        }
        // serde_json refuses nesting past 128 levels, so the walk is as deep at most.
        let value: serde_json::Value =
            serde_json::from_str(item).map_err(|_| PacketError::Payload)?;
        if !walk(&value, attachments) {
            return Err(PacketError::Placeholder);
        }
    }
    Ok(())
}

/// A binary packet whose attachments are coming (socket.io-parser's `BinaryReconstructor`):
/// its text and the attachments so far, at most [`MAX_ATTACHMENTS`] and `max_bytes` in all.
#[derive(Debug)]
pub struct Assembly {
    /// The packet's text, decoded again once it is whole.
    head: Box<str>,
    /// Attachments announced.
    expected: usize,
    /// Attachments so far; `bytes` is their total length.
    attachments: Vec<Box<[u8]>>,
    bytes: usize,
}

impl Assembly {
    /// Starts collecting for the binary packet `text`, which announced `expected` attachments
    /// (at least one).
    pub fn new(text: &str, expected: usize) -> Self {
        Self {
            head: text.into(),
            expected,
            attachments: Vec::new(),
            bytes: 0,
        }
    }

    /// Takes the next attachment; `Ok(true)` once all have come. The limit is checked before
    /// anything is kept.
    pub fn push(&mut self, data: &[u8], max_bytes: usize) -> Result<bool, PacketError> {
        let bytes = self.bytes.saturating_add(data.len());
        if bytes > max_bytes {
            return Err(PacketError::AttachmentsTooBig);
        }
        if self.attachments.len() >= self.expected {
            return Err(PacketError::UnexpectedBinary);
        }
        self.bytes = bytes;
        self.attachments.push(data.into());
        Ok(self.attachments.len() == self.expected)
    }

    /// The packet's text.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The attachments, in order.
    pub fn attachments(&self) -> &[Box<[u8]>] {
        &self.attachments
    }

    /// Bytes held: the text and the attachments.
    pub fn held(&self) -> usize {
        self.head.len() + self.bytes
    }
}

/// Appends a packet's head: `<type>[<attachments>-][<nsp>,][<id>]` (the namespace only when it
/// is not `/`, as the reference encoder writes it).
pub fn encode_head(
    kind: PacketType,
    attachments: usize,
    nsp: &str,
    id: Option<u64>,
    out: &mut Vec<u8>,
) {
    out.push(kind.digit());
    if kind.is_binary() {
        let _ = write!(out, "{attachments}-");
    }
    if nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
}

/// Appends a JSON array of the given elements (each valid JSON text), laid out by [`minify`].
pub fn write_array<'a>(items: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        minify(item, out);
    }
    out.push(b']');
}

/// Appends valid JSON text without whitespace between its tokens, as `JSON.stringify` lays
/// out what `JSON.parse` read (numbers and string escapes stay as written).
pub fn minify(json: &str, out: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    out.reserve(json.len());
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else if b == b'"' {
            in_string = true;
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Packet<'_> {
        decode(text, MAX_ATTACHMENTS).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    fn err(text: &str) -> PacketError {
        match decode(text, MAX_ATTACHMENTS) {
            Ok(p) => panic!("{text:?} decoded as {p:?}"),
            Err(e) => e,
        }
    }

    /// Encodes a decoded packet again: the canonical text of what was read.
    fn encode(p: &Packet<'_>) -> String {
        let mut out = Vec::new();
        encode_head(p.kind, p.attachments, p.nsp, p.id, &mut out);
        match &p.data {
            Data::None => {}
            Data::Object(json) | Data::Text(json) => minify(json, &mut out),
            Data::Array(items) => write_array(items.iter().copied(), &mut out),
        }
        String::from_utf8(out).unwrap()
    }

    /// The protocol document's examples ("Packet encoding", "Examples" and "Sample session").
    #[test]
    fn protocol_examples_round_trip() {
        for text in [
            "0",
            r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
            r#"4{"message":"Not authorized"}"#,
            r#"2["foo"]"#,
            r#"2/admin,["bar"]"#,
            r#"51-["baz",{"_placeholder":true,"num":0}]"#,
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            r#"212["foo"]"#,
            r#"3/admin,13["bar"]"#,
            r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
            "1",
            "1/admin,",
            r#"461-/admin,1[{"_placeholder":true,"num":0}]"#.get(1..).unwrap(),
            r#"0/admin,"#,
            r#"2/admin,1["tellme"]"#,
        ] {
            let p = ok(text);
            // `1/admin,` and `0/admin,` lose nothing but the trailing comma of an empty rest.
            assert_eq!(encode(&p).trim_end_matches(','), text.trim_end_matches(','));
        }
        let p = ok(r#"3/admin,13["bar"]"#);
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (
                PacketType::Ack,
                "/admin",
                Some(13),
                Data::Array(vec![r#""bar""#])
            )
        );
        let p =
            ok(r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#);
        assert_eq!((p.kind, p.attachments), (PacketType::BinaryEvent, 2));
    }

    /// The official test suite's packets (`test-suite/test-suite.js`, "Socket.IO protocol").
    #[test]
    fn suite_packets() {
        assert_eq!(ok("0").data, Data::None);
        assert_eq!(
            ok(r#"0{"token":"123"}"#).data,
            Data::Object(r#"{"token":"123"}"#)
        );
        assert_eq!(ok("0/custom,").nsp, "/custom");
        assert_eq!(ok("0/random").nsp, "/random");
        let p = ok(r#"0/custom,{"token":"abc"}"#);
        assert_eq!(
            (p.nsp, p.data),
            ("/custom", Data::Object(r#"{"token":"abc"}"#))
        );
        assert_eq!(ok("1/custom").kind, PacketType::Disconnect);
        let p = ok(r#"2["message",1,"2",{"3":[true]}]"#);
        assert_eq!(
            p.data,
            Data::Array(vec![r#""message""#, "1", r#""2""#, r#"{"3":[true]}"#])
        );
        let p = ok(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#);
        assert_eq!(p.id, Some(456));
        let p = ok(
            r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        );
        assert_eq!((p.attachments, p.id), (2, Some(789)));
        assert_eq!(err("abc"), PacketError::UnknownType);
        assert_eq!(err("2{}"), PacketError::Payload);
        assert_eq!(
            err(r#"2abc["message-with-ack",1,"2",{"3":[false]}]"#),
            PacketError::Payload
        );
    }

    #[test]
    fn malformed_packets() {
        assert_eq!(err(""), PacketError::Empty);
        assert_eq!(err("7"), PacketError::UnknownType);
        assert_eq!(err("5[\"a\"]"), PacketError::Attachments);
        assert_eq!(err("5-[\"a\"]"), PacketError::Attachments);
        assert_eq!(err("5x-[\"a\"]"), PacketError::Attachments);
        assert_eq!(err("511-[\"a\"]"), PacketError::TooManyAttachments);
        assert_eq!(
            err("599999999999999999999999999-[\"a\"]"),
            PacketError::TooManyAttachments
        );
        assert_eq!(decode("511-[\"a\"]", 11).map(|p| p.attachments), Ok(11));
        assert_eq!(err("2123456789012345678901[\"a\"]"), PacketError::Id);
        assert_eq!(ok("218446744073709551615[\"a\"]").id, Some(u64::MAX));
        assert_eq!(err("218446744073709551616[\"a\"]"), PacketError::Id);
        // EVENT: a non-empty array whose first element is a number or an unreserved string.
        for bad in [
            "2",
            "2[]",
            "2{}",
            "2\"a\"",
            "2[true]",
            "2[null]",
            "2[[1]]",
            "2[\"connect\"]",
            "2[\"disconnecting\"]",
            "2[\"a\"",
            "2[\"a\"]x",
            "2[\"a\"],",
            "50-[\"connect\"]",
        ] {
            assert_eq!(err(bad), PacketError::Payload, "{bad}");
        }
        assert!(matches!(ok("2[1]").data, Data::Array(_)));
        assert!(matches!(ok("2[-1.5,2]").data, Data::Array(_)));
        assert!(matches!(ok("2[\"\\u0063onnectx\"]").data, Data::Array(_)));
        assert_eq!(err("2[\"\\u0063onnect\"]"), PacketError::Payload);
        // ACK: any array, mandatory.
        assert_eq!(ok("31[]").data, Data::Array(vec![]));
        assert_eq!(err("31"), PacketError::Payload);
        assert_eq!(err("31{}"), PacketError::Payload);
        // CONNECT: nothing or an object; DISCONNECT: nothing.
        assert_eq!(err("0[]"), PacketError::Payload);
        assert_eq!(err("0\"x\""), PacketError::Payload);
        assert_eq!(err("1{}"), PacketError::Payload);
        assert_eq!(ok("1/a,1").id, Some(1));
        // CONNECT_ERROR: an object or a string.
        assert_eq!(ok("4\"no\"").data, Data::Text("\"no\""));
        assert_eq!(err("4[]"), PacketError::Payload);
        // Whitespace around the payload is JSON's; inside it is kept (and minified on output).
        assert_eq!(ok("2 [ \"a\" , 1 ] ").data, Data::Array(vec!["\"a\"", "1"]));
    }

    #[test]
    fn whole_and_cut_anywhere() {
        // A packet cut short decodes as something else or fails, and never panics: every
        // prefix (on a char boundary) is tried.
        let text = r#"52-/admin,12["é",{"_placeholder":true,"num":1},{"a":[1,{"_placeholder":true,"num":0}]}]"#;
        let whole = ok(text);
        assert_eq!(
            (whole.attachments, whole.nsp, whole.id),
            (2, "/admin", Some(12))
        );
        for cut in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
            let _ = decode(&text[..cut], MAX_ATTACHMENTS);
        }
        let Data::Array(items) = whole.data else {
            panic!()
        };
        assert_eq!(check_placeholders(&items, 2), Ok(()));
        assert_eq!(check_placeholders(&items, 1), Err(PacketError::Placeholder));
        assert_eq!(
            check_placeholders(&[r#"{"_placeholder":true,"num":-1}"#], 3),
            Err(PacketError::Placeholder)
        );
        assert_eq!(
            check_placeholders(&[r#"{"_placeholder":true,"num":"0"}"#], 3),
            Err(PacketError::Placeholder)
        );
        assert_eq!(
            check_placeholders(&[r#"{"_placeholder":false}"#], 0),
            Ok(())
        );
    }

    #[test]
    fn attachments_are_bounded() {
        let mut a = Assembly::new("52-[\"a\"]", 2);
        assert_eq!(a.push(&[1; 10], 16), Ok(false));
        assert_eq!(a.push(&[2; 7], 16), Err(PacketError::AttachmentsTooBig));
        assert_eq!(a.push(&[2; 6], 16), Ok(true));
        assert_eq!(a.push(&[], 16), Err(PacketError::UnexpectedBinary));
        assert_eq!(a.attachments().len(), 2);
        assert_eq!(a.held(), 8 + 16);
    }

    #[test]
    fn minify_keeps_strings() {
        let mut out = Vec::new();
        minify(
            " { \"a b\" : [ 1 , \"x\\\" y\" ] ,\n\"c\":\t\"\\\\\" } ",
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"a b":[1,"x\" y"],"c":"\\"}"#
        );
    }
}
