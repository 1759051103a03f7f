//! What a client says over its WebSocket and how it reads deliveries, for each kind of server:
//!
//! - `raw`: relay servers (wsrelay `--mode relay`, the `ws` tutorial server): binary frames
//!   whose payload starts with the publisher's sequence number and send time, little-endian.
//! - `chat`: wsrelay `--mode chat`: `{"name":"b","msg":BODY}` out; `{"type":"message",…,
//!   "msg":BODY,"seq":N,"ts":T}` in, after a `welcome`. `seq` is the room's: it must rise
//!   strictly at every receiver, and be the same number for one message everywhere.
//! - `json`: relay servers too, with chat-like JSON text (`{"seq":"HEX","ts":"HEX",…,"msg":
//!   "words…"}`), compressible as chat is: for the permessage-deflate rows.
//! - `socketio`: socket.io 4 over WebSocket only (Engine.IO 4): the server opens with
//!   `0{…}`, the client joins the main namespace with `40` and is in once `40{…}` comes back;
//!   events are `42["message",BODY]`; a server ping `2` is answered `3`. wsrelay appends the
//!   room's offset, `42["message",BODY,"EPOCH:SEQ"]`: its SEQ is read as `chat`'s `seq` is.
//!
//! In the text dialects BODY is the publisher's sequence number and send time as 16 hex
//! digits each, padded with `x` to the message size: a per-publisher counter, so loss and
//! reordering are checked the same way for every server.

use wsrelay::proto::OpCode;

/// Smallest text BODY: two 16-digit hex numbers.
const TEXT_MIN: usize = 32;

/// The protocol a client speaks over its WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// Binary frames, sequence number and send time first (relay servers).
    Raw,
    /// wsrelay's chat JSON in the room `main`.
    Chat,
    /// socket.io 4 events over Engine.IO 4, WebSocket transport only.
    Socketio,
    /// Chat-like JSON text relayed as it is (relay servers), sequence number and send time as
    /// hex at fixed places.
    Json,
}

/// The shortest `json` message: its fixed front and a few words.
const JSON_MIN: usize = 128;

/// A message the publisher sent, as one receiver read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The publisher's sequence number, from 0.
    pub seq: u64,
    /// When the publisher sent it, in ns on the wall clock.
    pub sent_ns: u64,
    /// The server's own sequence number for it, where the server gives one (chat: `seq`).
    pub order: Option<u64>,
}

/// What one incoming text or binary message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A message from the publisher.
    Delivery(Delivery),
    /// The protocol's handshake is done: the client is in and will receive broadcasts.
    Joined,
    /// Answer with this text message (Engine.IO handshake and pings).
    Reply(&'static [u8]),
    /// Nothing to do: a notice, a welcome's neighbours, history, a packet not used here.
    Other,
}

impl Dialect {
    /// The request target of the opening handshake.
    pub fn path(self) -> &'static str {
        match self {
            // The chat room `main` (README: `ws://HOST/` joins the default room).
            Self::Raw | Self::Chat | Self::Json => "/",
            Self::Socketio => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// Whether the client can take part as soon as the server answers 101.
    pub fn open_at_upgrade(self) -> bool {
        matches!(self, Self::Raw | Self::Json)
    }

    /// Smallest message size this dialect can carry its counter and timestamp in.
    pub fn min_size(self) -> usize {
        match self {
            Self::Raw => 16,
            Self::Chat | Self::Socketio => TEXT_MIN,
            Self::Json => JSON_MIN,
        }
    }

    /// Bytes a delivery adds to `size` on the wire, roughly (frame header and envelope): for
    /// the in-flight window only.
    pub fn overhead(self) -> u64 {
        match self {
            Self::Raw | Self::Json => 4,
            // {"type":"message","name":"b","msg":"…","seq":N,"ts":T}
            Self::Chat => 80,
            // 42["message","…"] (wsrelay's offset argument not counted)
            Self::Socketio => 20,
        }
    }

    /// Writes message `seq` sent at `sent_ns`, `size` bytes of body, into `out`; returns the
    /// opcode to send it with.
    pub fn encode(self, seq: u64, sent_ns: u64, size: usize, out: &mut Vec<u8>) -> OpCode {
        out.clear();
        match self {
            Self::Raw => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&sent_ns.to_le_bytes());
                out.resize(size.max(16), 0);
                return OpCode::Binary;
            }
            Self::Json => {
                json_message(seq, sent_ns, size.max(JSON_MIN), out);
                return OpCode::Text;
            }
            Self::Chat => out.extend_from_slice(br#"{"name":"b","msg":""#),
            Self::Socketio => out.extend_from_slice(br#"42["message",""#),
        }
        let start = out.len();
        out.extend_from_slice(format!("{seq:016x}{sent_ns:016x}").as_bytes());
        out.resize(start + size.max(TEXT_MIN), b'x');
        out.extend_from_slice(match self {
            Self::Chat => br#""}"#.as_slice(),
            _ => br#""]"#.as_slice(),
        });
        OpCode::Text
    }

    /// Reads one incoming message. `Err` for a message that claims to be a delivery but is
    /// not one this load generator sent: a broken server, to be counted as such.
    pub fn read(self, payload: &[u8]) -> Result<Inbound, &'static str> {
        match self {
            Self::Raw => {
                let (seq, sent_ns) = decode_raw(payload);
                Ok(Inbound::Delivery(Delivery {
                    seq,
                    sent_ns,
                    order: None,
                }))
            }
            Self::Chat => read_chat(payload),
            Self::Socketio => read_socketio(payload),
            Self::Json => {
                // {"seq":"<16 hex>","ts":"<16 hex>",…
                let front = payload.strip_prefix(br#"{"seq":""#).ok_or("not our JSON")?;
                let (seq, ts) = (front.get(..16), front.get(24..40));
                let both = [seq.unwrap_or_default(), ts.unwrap_or_default()].concat();
                let (seq, sent_ns) = decode_text(&both).ok_or("JSON without our counter")?;
                Ok(Inbound::Delivery(Delivery {
                    seq,
                    sent_ns,
                    order: None,
                }))
            }
        }
    }
}

/// A chat message as JSON, `size` bytes: the sequence number and send time as 16 hex digits at
/// fixed places (`{"seq":"…","ts":"…",`), then a chat line of words picked by `seq`, so that
/// messages differ as chat lines do but share a vocabulary (and compress as chat does).
fn json_message(seq: u64, sent_ns: u64, size: usize, out: &mut Vec<u8>) {
    const WORDS: [&str; 24] = [
        "ok", "the", "build", "is", "green", "again", "see", "you", "at", "noon", "who", "is",
        "on", "call", "tonight", "deploy", "stuck", "retrying", "thanks", "lunch", "review",
        "please", "merged", "done",
    ];
    out.extend_from_slice(
        format!(
            "{{\"seq\":\"{seq:016x}\",\"ts\":\"{sent_ns:016x}\",\"type\":\"message\",\
             \"name\":\"user{}\",\"room\":\"lobby\",\"msg\":\"",
            seq % 97
        )
        .as_bytes(),
    );
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() + 3 < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(size.saturating_sub(2));
    out.extend_from_slice(b"\"}");
}

/// The sequence number and send time at the front of a raw payload.
pub fn decode_raw(p: &[u8]) -> (u64, u64) {
    let word = |r: std::ops::Range<usize>| {
        p.get(r)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    };
    (word(0..8), word(8..16))
}

fn read_chat(p: &[u8]) -> Result<Inbound, &'static str> {
    // wsrelay writes "type" first (serde's internally tagged enum); a scan, not a JSON parse,
    // so the load generator's cost per delivery stays near the raw dialect's.
    if p.starts_with(br#"{"type":"welcome""#) {
        return Ok(Inbound::Joined);
    }
    // History replayed to a joining client ends with `"history":true` (README, Messages).
    if !p.starts_with(br#"{"type":"message""#) || p.ends_with(br#""history":true}"#) {
        return Ok(Inbound::Other);
    }
    let body = find(p, br#""msg":""#)
        .and_then(|at| p.get(at + 7..))
        .ok_or("chat message without msg")?;
    let (seq, sent_ns) = decode_text(body).ok_or("chat msg not from the publisher")?;
    // BODY is hex and `x` only, so any `"seq":` is the field; it is near the end.
    let order = rfind(p, br#""seq":"#)
        .and_then(|at| p.get(at + 6..))
        .and_then(|rest| {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
        })
        .ok_or("chat message without seq")?;
    Ok(Inbound::Delivery(Delivery {
        seq,
        sent_ns,
        order: Some(order),
    }))
}

fn read_socketio(p: &[u8]) -> Result<Inbound, &'static str> {
    const EVENT: &[u8] = br#"42["message",""#;
    Ok(match p {
        // Engine.IO open: join the main namespace (Socket.IO CONNECT).
        [b'0', b'{', ..] => Inbound::Reply(b"40"),
        // Socket.IO CONNECT acknowledged, with the session id.
        [b'4', b'0', ..] => Inbound::Joined,
        // Engine.IO ping: pong, or the server drops the client after pingTimeout.
        [b'2'] => Inbound::Reply(b"3"),
        _ if p.starts_with(EVENT) => {
            let body = &p[EVENT.len()..];
            let (seq, sent_ns) = decode_text(body).ok_or("event not ours")?;
            Inbound::Delivery(Delivery {
                seq,
                sent_ns,
                order: socketio_offset(body)?,
            })
        }
        _ => Inbound::Other,
    })
}

/// The room's seq in a trailing offset argument, `42["message",BODY,"EPOCH:SEQ"]` (wsrelay's
/// connection-state recovery: README, Socket.IO clients), given what follows `42["message","`;
/// `None` for an event with BODY alone (socket.io's own server). BODY is hex and `x` only, so
/// its closing quote is the first one.
fn socketio_offset(body: &[u8]) -> Result<Option<u64>, &'static str> {
    let end = body
        .iter()
        .position(|&b| b == b'"')
        .ok_or("event not ours")?;
    let rest = &body[end + 1..];
    if rest == b"]" {
        return Ok(None);
    }
    let offset = rest
        .strip_prefix(b",\"")
        .and_then(|r| r.strip_suffix(b"\"]"))
        .ok_or("event with other arguments")?;
    let (_, seq) = std::str::from_utf8(offset)
        .ok()
        .and_then(|o| o.rsplit_once(':'))
        .ok_or("offset not EPOCH:SEQ")?;
    seq.parse().map(Some).map_err(|_| "offset not EPOCH:SEQ")
}

/// The two 16-digit hex numbers at the front of a text BODY.
fn decode_text(body: &[u8]) -> Option<(u64, u64)> {
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    Some((hex(body.get(..16)?)?, hex(body.get(16..32)?)?))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_dialects_round_trip_through_the_servers_envelopes() {
        let mut out = Vec::new();
        assert_eq!(Dialect::Chat.encode(5, 77, 40, &mut out), OpCode::Text);
        let sent: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let msg = sent["msg"].as_str().unwrap();
        assert_eq!(msg.len(), 40);
        // What wsrelay broadcasts for it (src/chat.rs: draft, then seq and ts appended).
        let echoed = format!(r#"{{"type":"message","name":"b","msg":"{msg}","seq":12,"ts":1}}"#);
        let want = Delivery {
            seq: 5,
            sent_ns: 77,
            order: Some(12),
        };
        assert_eq!(
            Dialect::Chat.read(echoed.as_bytes()),
            Ok(Inbound::Delivery(want))
        );
        let history = echoed.replace(r#""ts":1"#, r#""ts":1,"history":true"#);
        assert_eq!(Dialect::Chat.read(history.as_bytes()), Ok(Inbound::Other));
        let welcome = br#"{"type":"welcome","room":"main","epoch":"e","seq":0}"#;
        assert_eq!(Dialect::Chat.read(welcome), Ok(Inbound::Joined));

        assert_eq!(Dialect::Socketio.encode(5, 77, 32, &mut out), OpCode::Text);
        let sent: serde_json::Value = serde_json::from_slice(&out[2..]).unwrap();
        assert_eq!(sent[0], "message");
        // io.emit("message", m) sends the same packet on.
        let want = Delivery {
            order: None,
            ..want
        };
        assert_eq!(Dialect::Socketio.read(&out), Ok(Inbound::Delivery(want)));
        // wsrelay appends the room's offset as a last argument: its seq is the order.
        let mut with_offset = out[..out.len() - 1].to_vec();
        with_offset.extend_from_slice(br#","19aeb3c2f10-1:42"]"#);
        let want = Delivery {
            order: Some(42),
            ..want
        };
        assert_eq!(
            Dialect::Socketio.read(&with_offset),
            Ok(Inbound::Delivery(want))
        );
        let bad = [&out[..out.len() - 1], br#","nope"]"#.as_slice()].concat();
        assert!(Dialect::Socketio.read(&bad).is_err());
    }

    #[test]
    fn engine_io_handshake_and_pings() {
        let open = br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        assert_eq!(Dialect::Socketio.read(open), Ok(Inbound::Reply(b"40")));
        assert_eq!(
            Dialect::Socketio.read(br#"40{"sid":"b"}"#),
            Ok(Inbound::Joined)
        );
        assert_eq!(Dialect::Socketio.read(b"2"), Ok(Inbound::Reply(b"3")));
        assert!(
            Dialect::Socketio
                .read(br#"42["message","nothex"]"#)
                .is_err()
        );
    }

    #[test]
    fn raw_keeps_the_binary_layout() {
        let mut out = Vec::new();
        assert_eq!(Dialect::Raw.encode(3, 9, 32, &mut out), OpCode::Binary);
        assert_eq!(out.len(), 32);
        assert_eq!(decode_raw(&out), (3, 9));
    }
}
