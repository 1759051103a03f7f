//! Socket.IO events in chat rooms: the log entry of an emitted event, room events rendered as
//! socket.io packets, and the offsets of connection-state recovery.
//!
//! One room, two kinds of member. A room's log holds JSON objects, each sent as is to plain
//! chat clients (WebSocket members, long polls, history and resume) and kept as is in Redis, where
//! every node reads it back. So an event a socket.io client emits is kept as an object of the
//! chat's own shape, a *draft* that the log stamps with `seq` and `ts` like any message:
//!
//! ```text
//! {"type":"event","nsp":"/","event":"chat message","args":["hi"],"seq":7,"ts":1764864000000}
//! ```
//!
//! with `"attachments":["<base64>",…]` after `args` for a binary event (its placeholders stay in
//! `args`). That is what plain chat clients expect of a room event: a typed object with its
//! `seq` and `ts`, so their cursor counts it and a resume replays it in order; the bundled page
//! and the usual tutorial page show only `message` and `notification` objects and skip it. (A
//! `message` with a made-up name and the arguments as text would show it, but could not give
//! socket.io receivers the arguments back unchanged, or would keep everything twice.)
//!
//! Socket.IO receivers get the event as emitted, on its namespace, with its offset appended:
//! `42["chat message","hi","<offset>"]`, or for a binary event `451-[…,"<offset>"]` and the
//! attachments as binary frames. They get nothing else from the room: a socket.io client of
//! the tutorial chat listens to the events its peers emit, and an extra event for the chat's
//! messages and presence notices would reach every handler `onAny` installs, under a name
//! that may be one of its own (`chat`, `message`). Their sequence numbers are skipped, as the
//! events of other namespaces are: an offset orders, it does not count.
//!
//! The offset is the event's place in its room, `EPOCH:SEQ` (e.g. `19aeb3c2f10-1:42`): what the
//! reference server appends as the last argument of every stored event when
//! `connectionStateRecovery` is on (socket.io's `SessionAwareAdapter.broadcast` pushes its id
//! onto `packet.data`), and what socket.io-client ≥ 4.6 keeps as `_lastOffset` from the last
//! string argument of each event and sends back on reconnect in its CONNECT payload,
//! `{"pid":…,"offset":…}`. Epochs are `[0-9a-z-]` and never hold `:`.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::packet::{self, PacketType};

/// Longest event a chat room takes from a socket.io client, in bytes of its draft
/// (attachments in base64 included): a chat message's 4000 characters take up to 16 KB of
/// JSON, and an event larger than the room's whole `--history-bytes` (64 KiB by default) would
/// empty its history.
pub const MAX_EVENT: usize = 16 << 10;

/// The event a new socket gets first, and its text (the socket.io tutorial chat's welcome).
pub const WELCOME_EVENT: &str = "connected";
/// See [`WELCOME_EVENT`].
pub const WELCOME_TEXT: &str = "Welcome to the chat";

/// A room event's offset: `EPOCH:SEQ`.
pub fn offset(epoch: &str, seq: u64, out: &mut Vec<u8>) {
    let _ = write!(out, "{epoch}:{seq}");
}

/// The epoch and seq of an offset.
pub fn parse_offset(offset: &str) -> Option<(&str, u64)> {
    let (epoch, seq) = offset.rsplit_once(':')?;
    let valid = epoch
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((epoch, seq.parse().ok()?))
}

/// Writes the draft of an event emitted on namespace `nsp`: `items` are its elements (the
/// event name first), `attachments` its binary attachments.
pub fn draft(nsp: &str, items: &[&str], attachments: &[Box<[u8]>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(br#"{"type":"event","nsp":"#);
    // A configured namespace: `/` and `[A-Za-z0-9_.-/]`, so never escaped; serde says so anyway.
    let _ = serde_json::to_writer(&mut *out, nsp);
    out.extend_from_slice(br#","event":"#);
    let (name, args) = items
        .split_first()
        .map_or(("null", &[][..]), |(n, a)| (*n, a));
    packet::minify(name, out);
    out.extend_from_slice(br#","args":"#);
    packet::write_array(args.iter().copied(), out);
    if !attachments.is_empty() {
        out.extend_from_slice(br#","attachments":["#);
        for (i, a) in attachments.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            let start = out.len();
            out.resize(start + base64::encoded_len(a.len(), true).unwrap_or(0), 0);
            let written = STANDARD
                .encode_slice(a, out.get_mut(start..).unwrap_or_default())
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// The fields of a kept event that say how socket.io sockets get it (others are ignored).
#[derive(Deserialize)]
struct Kept<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    nsp: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    args: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    attachments: Option<Vec<&'a RawValue>>,
}

/// A socket.io event of a room as its sockets get it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The namespace it was emitted on.
    pub nsp: String,
    /// The JSON array: its elements, then the offset.
    pub array: Vec<u8>,
    /// Decoded binary attachments.
    pub attachments: Vec<Vec<u8>>,
}

/// How a committed room event (`json`, as the log keeps it) reaches socket.io sockets, with
/// its offset appended: `None` for the chat's own messages and notices (see the module
/// documentation), and for an entry this server did not write.
pub fn render(json: &str, epoch: &str, seq: u64) -> Option<Rendered> {
    // The chat's objects are never parsed: only the log entries of events are rendered.
    if !json.starts_with(r#"{"type":"event""#) {
        return None;
    }
    let kept: Kept<'_> = serde_json::from_str(json).ok()?;
    if kept.kind.map(RawValue::get) != Some(r#""event""#) {
        return None;
    }
    let mut array = Vec::with_capacity(json.len() + 32);
    let nsp: String = serde_json::from_str(kept.nsp?.get()).ok()?;
    array.push(b'[');
    array.extend_from_slice(kept.event?.get().as_bytes());
    for arg in kept.args? {
        array.push(b',');
        array.extend_from_slice(arg.get().as_bytes());
    }
    push_offset(epoch, seq, &mut array);
    let mut attachments = Vec::new();
    for a in kept.attachments.unwrap_or_default() {
        let text: &str = serde_json::from_str(a.get()).ok()?;
        attachments.push(STANDARD.decode(text).ok()?);
    }
    Some(Rendered {
        nsp,
        array,
        attachments,
    })
}

/// Closes a JSON array with the offset as its last element.
fn push_offset(epoch: &str, seq: u64, array: &mut Vec<u8>) {
    array.extend_from_slice(br#",""#);
    offset(epoch, seq, array);
    array.extend_from_slice(br#""]"#);
}

/// Appends a whole packet's text (after the Engine.IO `4`): its head for namespace `nsp` and
/// the rendered array.
pub fn packet_text(rendered: &Rendered, nsp: &str, out: &mut Vec<u8>) {
    let n = rendered.attachments.len();
    let kind = if n == 0 {
        PacketType::Event
    } else {
        PacketType::BinaryEvent
    };
    packet::encode_head(kind, n, nsp, None, out);
    out.extend_from_slice(&rendered.array);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Stamp, stamp};

    fn text(rendered: &Rendered, nsp: &str) -> String {
        let mut out = Vec::new();
        packet_text(rendered, nsp, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_event_goes_through_the_log_unchanged() {
        let mut json = Vec::new();
        draft(
            "/",
            &[r#""chat message""#, r#" { "a" : [1, "x y"] }"#, "2"],
            &[],
            &mut json,
        );
        let body = String::from_utf8(json.clone()).unwrap();
        assert_eq!(
            body,
            r#"{"type":"event","nsp":"/","event":"chat message","args":[{"a":[1,"x y"]},2]}"#
        );
        stamp(&body, Stamp { seq: 7, ts: 99 }, false, &mut json);
        let kept = std::str::from_utf8(&json).unwrap();
        let r = render(kept, "e1-2", 7).unwrap();
        assert_eq!(
            text(&r, "/"),
            r#"2["chat message",{"a":[1,"x y"]},2,"e1-2:7"]"#
        );
        // Marked as history for a plain client, it still renders the same.
        let mut marked = Vec::new();
        stamp(&body, Stamp { seq: 7, ts: 99 }, true, &mut marked);
        assert_eq!(
            render(std::str::from_utf8(&marked).unwrap(), "e1-2", 7),
            Some(r)
        );
    }

    #[test]
    fn binary_events_keep_their_attachments() {
        let mut json = Vec::new();
        let attachments: Vec<Box<[u8]>> = vec![Box::new([1, 2, 3]), Box::new([])];
        let items = [r#""up""#, r#"{"_placeholder":true,"num":0}"#];
        draft("/admin", &items, &attachments, &mut json);
        let body = std::str::from_utf8(&json).unwrap();
        assert!(body.ends_with(r#""attachments":["AQID",""]}"#), "{body}");
        let r = render(body, "e", 1).unwrap();
        let Rendered {
            nsp, attachments, ..
        } = &r;
        assert_eq!(
            (&**nsp, attachments),
            ("/admin", &vec![vec![1, 2, 3], vec![]])
        );
        assert_eq!(
            text(&r, "/admin"),
            r#"52-/admin,["up",{"_placeholder":true,"num":0},"e:1"]"#
        );
    }

    #[test]
    fn only_events_are_rendered() {
        let json = r#"{"type":"message","name":"a","msg":"b","seq":3,"ts":4}"#;
        assert_eq!(render(json, "x-1", 3), None);
        let notice = r#"{"type":"notification","event":"join","count":1,"msg":"x","seq":1,"ts":2}"#;
        assert_eq!(render(notice, "x-1", 1), None);
        assert_eq!(render("not json", "e", 1), None);
        assert_eq!(render(r#"{"type":"event" "#, "e", 1), None);
        assert_eq!(render(r#"{"type":"event"}"#, "e", 1), None);
    }

    #[test]
    fn offsets() {
        let mut out = Vec::new();
        offset("19aeb3c2f10-1", 42, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(parse_offset(&text), Some(("19aeb3c2f10-1", 42)));
        assert_eq!(parse_offset(":0"), Some(("", 0)));
        for bad in [
            "",
            "e",
            "e:",
            "e:x",
            "e:-1",
            "e\":1",
            "e:1:",
            "e:99999999999999999999999",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }
}
