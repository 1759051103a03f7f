//! The chat protocol: `{"name","msg"}` in; messages, join/leave notices and errors out.
//!
//! Pure functions from text to JSON text; framing and fan-out belong to the layers around it.

use std::borrow::Cow;

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
    Message {
        name: &'a str,
        msg: &'a str,
    },
    Notification {
        event: &'a str,
        count: usize,
        msg: &'a str,
    },
    Error {
        msg: &'a str,
    },
}

/// Whether a client arrived or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A client completed its handshake.
    Join,
    /// A client's connection closed.
    Leave,
}

/// Handles one text message from a client.
///
/// `Ok(())`: `out` holds the JSON to broadcast to every client. `Err(())`: `out` holds an error
/// for the sender only, and nothing is broadcast.
#[allow(clippy::result_unit_err)]
pub fn handle_text(text: &str, out: &mut Vec<u8>) -> Result<(), ()> {
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
    write(&Outgoing::Error { msg: error }, out);
    Err(())
}

/// Writes the notice broadcast when a client joins or leaves; `count` is who is left online.
pub fn presence(event: Presence, count: usize, out: &mut Vec<u8>) {
    out.clear();
    let (event, text) = match event {
        Presence::Join => ("join", format!("A user joined. {count} online.")),
        Presence::Leave => ("leave", format!("A user left. {count} online.")),
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

fn write(value: &Outgoing<'_>, out: &mut Vec<u8>) {
    // Serializing these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(text: &str) -> (bool, Value) {
        let mut out = Vec::new();
        let ok = handle_text(text, &mut out).is_ok();
        (ok, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn message_is_broadcast_with_type() {
        let (ok, v) = run(r#"{"name":"ann","msg":"hi \"there\" <b>","extra":1}"#);
        assert!(ok);
        assert_eq!(
            v,
            json!({"type":"message","name":"ann","msg":"hi \"there\" <b>"})
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
        presence(Presence::Join, 3, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["event"], "join");
        assert_eq!(v["count"], 3);
        assert!(v["msg"].as_str().unwrap().contains('3'));
        presence(Presence::Leave, 2, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["count"].as_u64()),
            (Some("leave"), Some(2))
        );
    }
}
