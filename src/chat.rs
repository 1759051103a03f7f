//! The chat protocol: `{"name","msg"}` in; messages, join/leave notices and errors out.
//!
//! Pure functions from text to JSON text; framing, rooms and fan-out belong to the layers
//! around it. Every message and notice of a room carries its per-room sequence number `seq`
//! and the server's time `ts` (milliseconds since the Unix epoch): the cursor a client resumes
//! from. Both are known only once the room's log has committed the event, so a message or
//! notice is first written as a *draft*, the same JSON object without them
//! ([`draft_text`], [`presence_draft`]), and [`stamp`] adds them, as the last two fields,
//! when the log answers.

use std::borrow::Cow;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest accepted message, in characters.
pub const MAX_MSG_CHARS: usize = 4000;

/// A chat message from a client.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    msg: Cow<'a, str>,
}

/// What the server sends to chat clients.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    /// A draft: [`stamp`] adds `seq` and `ts`.
    Message {
        name: &'a str,
        msg: &'a str,
    },
    /// A draft: [`stamp`] adds `seq` and `ts`.
    Notification {
        event: &'a str,
        count: usize,
        msg: &'a str,
    },
    Error {
        msg: &'a str,
    },
    /// First on every connection: where the client is and the cursor it resumes from.
    Welcome {
        room: &'a str,
        epoch: &'a str,
        seq: u64,
    },
    /// Events the client missed that are no longer kept.
    Gap {
        msg: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
    },
}

/// A room event's place in its room: sequence number and server time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Per-room sequence number, from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Whether a client arrived or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A client completed its handshake.
    Join,
    /// A client's connection closed.
    Leave,
}

/// Handles one text message from a client; `stamp` is what the message gets if it is valid.
///
/// `Ok(())`: `out` holds the JSON to broadcast to the room. `Err(())`: `out` holds an error
/// for the sender only, and nothing is broadcast.
#[allow(clippy::result_unit_err)]
pub fn handle_text(text: &str, stamp: Stamp, out: &mut Vec<u8>) -> Result<(), ()> {
    draft_text(text, out)?;
    stamp_in_place(stamp, out);
    Ok(())
}

/// Handles one text message from a client, as a draft for the room's log.
///
/// `Ok(())`: `out` holds the message without `seq` and `ts` (see [`stamp`]). `Err(())`: `out`
/// holds an error for the sender only, and nothing is to be committed.
#[allow(clippy::result_unit_err)]
pub fn draft_text(text: &str, out: &mut Vec<u8>) -> Result<(), ()> {
    out.clear();
    let error = match serde_json::from_str::<Incoming<'_>>(text) {
        Err(e) if e.is_data() => "expected {\"name\": string, \"msg\": string}",
        Err(_) => "invalid JSON",
        Ok(m) if !(1..=MAX_NAME_CHARS).contains(&m.name.chars().count()) => {
            "name must be 1 to 64 characters"
        }
        Ok(m) if !(1..=MAX_MSG_CHARS).contains(&m.msg.chars().count()) => {
            "msg must be 1 to 4000 characters"
        }
        Ok(m) => {
            write(
                &Outgoing::Message {
                    name: &m.name,
                    msg: &m.msg,
                },
                out,
            );
            return Ok(());
        }
    };
    self::error(error, out);
    Err(())
}

/// Writes an error for one client: `{"type":"error","msg":…}`.
pub fn error(msg: &str, out: &mut Vec<u8>) {
    out.clear();
    write(&Outgoing::Error { msg }, out);
}

/// Writes the notice broadcast when a client joins or leaves; `count` is who is in the room.
pub fn presence(event: Presence, count: usize, stamp: Stamp, out: &mut Vec<u8>) {
    let changes = match event {
        Presence::Join => (1, 0),
        Presence::Leave => (0, 1),
    };
    presence_changes(event, changes, count, stamp, out);
}

/// Writes one notice for several joins and leaves, `(joins, leaves)`, announced together;
/// `event` is the latest of them and `count` who is in the room after it.
pub fn presence_changes(
    event: Presence,
    changes: (u32, u32),
    count: usize,
    stamp: Stamp,
    out: &mut Vec<u8>,
) {
    presence_draft(event, changes, count, out);
    stamp_in_place(stamp, out);
}

/// The count a presence draft carries when a shared log fills in the cluster-wide one: it is
/// written as [`COUNT_SLOT_TEXT`], a number no room reaches, in the `count` field and the text.
pub const COUNT_SLOT: usize = usize::MAX;

/// How [`COUNT_SLOT`] reads in a draft.
pub const COUNT_SLOT_TEXT: &str = "18446744073709551615";

/// [`presence_changes`] as a draft for the room's log: without `seq` and `ts` (see [`stamp`]).
pub fn presence_draft(
    event: Presence,
    (joins, leaves): (u32, u32),
    count: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    let users = |n: u32| match n {
        1 => "A user".to_owned(),
        n => format!("{n} users"),
    };
    let what = match (joins, leaves) {
        (0, 0) | (1, 0) if event == Presence::Join => "A user joined".to_owned(),
        (0, 0) | (0, 1) => "A user left".to_owned(),
        (j, 0) => format!("{} joined", users(j)),
        (0, l) => format!("{} left", users(l)),
        (j, l) => format!("{} joined and {l} left", users(j)),
    };
    let text = format!("{what}. {count} online.");
    let event = match event {
        Presence::Join => "join",
        Presence::Leave => "leave",
    };
    write(
        &Outgoing::Notification {
            event,
            count,
            msg: &text,
        },
        out,
    );
}

/// Writes the first message of a connection: its room, the room's epoch (which changes when
/// the room's sequence starts over) and the last sequence number so far.
pub fn welcome(room: &str, epoch: &str, seq: u64, out: &mut Vec<u8>) {
    out.clear();
    write(&Outgoing::Welcome { room, epoch, seq }, out);
}

/// Writes the notice that events `from..=to` were missed and are gone (both unknown when the
/// room started over since the client's cursor).
pub fn gap(range: Option<(u64, u64)>, out: &mut Vec<u8>) {
    out.clear();
    let msg = match range {
        Some((from, to)) if from == to => format!("1 earlier message was missed ({from})."),
        Some((from, to)) => format!(
            "{} earlier messages were missed ({from}-{to}).",
            to - from + 1
        ),
        None => "This room started over (the server restarted, or the room was idle and \
                 freed); its history begins again."
            .to_owned(),
    };
    write(
        &Outgoing::Gap {
            msg: &msg,
            from: range.map(|r| r.0),
            to: range.map(|r| r.1),
        },
        out,
    );
}

/// Writes a kept event as sent again from history: the same object plus `"history":true`.
pub fn history(json: &str, out: &mut Vec<u8>) {
    out.clear();
    // Every kept event is an object written by `write`, so it ends in `}`.
    match json.strip_suffix('}') {
        Some(body) => {
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(br#","history":true}"#);
        }
        None => out.extend_from_slice(json.as_bytes()),
    }
}

/// Writes a committed event: its draft (a JSON object without `seq` and `ts`) with `seq` and
/// `ts` added as its last fields, and `"history":true` after them when it is sent again from
/// history (as [`history`] marks it).
pub fn stamp(draft: &str, stamp: Stamp, history: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(draft.as_bytes());
    stamp_in_place(stamp, out);
    if history {
        out.pop();
        out.extend_from_slice(br#","history":true}"#);
    }
}

/// Adds `seq` and `ts` to the draft in `out`, as the last fields of its object (where the
/// serializer would put them: byte for byte the JSON of the whole event).
fn stamp_in_place(stamp: Stamp, out: &mut Vec<u8>) {
    // Every draft is an object written by `write`, so it ends in `}`.
    if out.last() == Some(&b'}') {
        out.pop();
    }
    let _ = write!(out, r#","seq":{},"ts":{}}}"#, stamp.seq, stamp.ts);
}

fn write(value: &Outgoing<'_>, out: &mut Vec<u8>) {
    // Serializing these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const STAMP: Stamp = Stamp { seq: 7, ts: 1234 };

    fn run(text: &str) -> (bool, Value) {
        let mut out = Vec::new();
        let ok = handle_text(text, STAMP, &mut out).is_ok();
        (ok, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn message_is_broadcast_with_type() {
        let (ok, v) = run(r#"{"name":"ann","msg":"hi \"there\" <b>","extra":1}"#);
        assert!(ok);
        assert_eq!(
            v,
            json!({"type":"message","name":"ann","msg":"hi \"there\" <b>","seq":7,"ts":1234})
        );
    }

    #[test]
    fn bad_input_is_an_error_for_the_sender() {
        for text in [
            "not json",
            "{\"name\":\"a\"",
            "[1,2]",
            r#"{"name":"a"}"#,
            r#"{"name":1,"msg":"x"}"#,
            r#"{"name":"","msg":"x"}"#,
            r#"{"name":"a","msg":""}"#,
        ] {
            let (ok, v) = run(text);
            assert!(!ok, "{text}");
            assert_eq!(v["type"], "error", "{text}");
            assert!(v["msg"].is_string());
        }
        let long_name = format!(r#"{{"name":"{}","msg":"x"}}"#, "é".repeat(65));
        assert!(!run(&long_name).0);
        let max_name = format!(r#"{{"name":"{}","msg":"x"}}"#, "é".repeat(64));
        assert!(run(&max_name).0);
        let long_msg = format!(r#"{{"name":"a","msg":"{}"}}"#, "x".repeat(4001));
        assert!(!run(&long_msg).0);
    }

    #[test]
    fn presence_notices_carry_the_count() {
        let mut out = Vec::new();
        presence(Presence::Join, 3, STAMP, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["event"], "join");
        assert_eq!(v["count"], 3);
        assert!(v["msg"].as_str().unwrap().contains('3'));
        assert_eq!((v["seq"].as_u64(), v["ts"].as_u64()), (Some(7), Some(1234)));
        presence(Presence::Leave, 2, STAMP, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["count"].as_u64()),
            (Some("leave"), Some(2))
        );
        assert_eq!(v["msg"], "A user left. 2 online.");
        presence_changes(Presence::Leave, (3, 2), 5, STAMP, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msg"], "3 users joined and 2 left. 5 online.");
        assert_eq!(
            (v["event"].as_str(), v["count"].as_u64()),
            (Some("leave"), Some(5))
        );
        presence_changes(Presence::Join, (2, 0), 9, STAMP, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msg"], "2 users joined. 9 online.");
    }

    #[test]
    fn welcome_gap_and_history() {
        let mut out = Vec::new();
        welcome("main", "e1", 41, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"welcome","room":"main","epoch":"e1","seq":41})
        );
        gap(Some((3, 9)), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["from"].as_u64(), v["to"].as_u64()),
            (Some("gap"), Some(3), Some(9))
        );
        assert!(v["msg"].as_str().unwrap().contains("7 earlier"));
        gap(None, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("from").is_none() && v["type"] == "gap");
        let mut live = Vec::new();
        handle_text(r#"{"name":"a","msg":"b"}"#, STAMP, &mut live).unwrap();
        history(std::str::from_utf8(&live).unwrap(), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"message","name":"a","msg":"b","seq":7,"ts":1234,"history":true})
        );
    }

    #[test]
    fn a_stamped_draft_is_the_whole_event() {
        let (mut draft, mut whole, mut out) = (Vec::new(), Vec::new(), Vec::new());
        draft_text(r#"{"name":"a","msg":"b"}"#, &mut draft).unwrap();
        handle_text(r#"{"name":"a","msg":"b"}"#, STAMP, &mut whole).unwrap();
        let draft = std::str::from_utf8(&draft).unwrap();
        stamp(draft, STAMP, false, &mut out);
        assert_eq!(out, whole);
        stamp(draft, STAMP, true, &mut out);
        let mut marked = Vec::new();
        history(std::str::from_utf8(&whole).unwrap(), &mut marked);
        assert_eq!(out, marked);
        let mut notice = Vec::new();
        presence_draft(Presence::Join, (2, 1), 4, &mut notice);
        presence_changes(Presence::Join, (2, 1), 4, STAMP, &mut whole);
        stamp(
            std::str::from_utf8(&notice).unwrap(),
            STAMP,
            false,
            &mut out,
        );
        assert_eq!(out, whole);
    }
}
