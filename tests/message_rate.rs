//! Verifies the chat message rate limit (`--max-message-rate`): a client that sends faster
//! than the limit allows, beyond its burst allowance, gets an `error` and then close 1008,
//! while everything it sent within the allowance was published; a client sending at a human
//! pace with the default limit is never stopped.

mod common;
mod members;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{RawClient, Server, connect_ws_to, ws_recv_text, ws_send};
use members::{Drain, frames, open};
use tungstenite::Message;

#[test]
fn a_flood_gets_an_error_then_1008_and_a_typist_does_not() {
    let server = Server::start(&[]);
    // The flood: 1,000 messages in one send (the default allows a burst far below that).
    let (mut flood, early) = open(server.addr, "/r", None);
    let writer = flood.try_clone().unwrap();
    let drain = Drain::start(vec![(writer, early)], 1);
    flood
        .write_all(&frames(r#"{"name":"a","msg":"b"}"#, 1000))
        .expect("send");
    let end = drain.wait(
        Duration::from_secs(10),
        |t| t.closed.is_some() || t.ended,
        |_| true,
    );
    let t = &end[0];
    assert_eq!(t.closed, Some(1008), "the flood is closed with 1008: {t:?}");
    assert_eq!(t.errors, 1, "one error before the close: {t:?}");
    assert!(
        (1..1000).contains(&t.messages),
        "what came within the allowance was published, the rest was not: {t:?}"
    );

    // A fast typist: 12 messages, 4 a second, all published.
    let mut typist = connect_ws_to(&server, "/t");
    let mut seen = 0;
    for i in 0..12 {
        ws_send(
            &mut typist,
            Message::text(format!(r#"{{"name":"t","msg":"m{i}"}}"#)),
        );
        thread::sleep(Duration::from_millis(250));
        while seen <= i {
            let text = ws_recv_text(&mut typist);
            assert!(!text.contains(r#""type":"error""#), "{text}");
            if text.contains(r#""type":"message""#) {
                seen += 1;
            }
        }
    }
    // A raw client can also lift the limit per server: the flag takes a rate a second.
    let lifted = Server::start(&["--max-message-rate", "100000"]);
    let mut raw = RawClient::open(&lifted);
    raw.send(&frames(r#"{"name":"a","msg":"b"}"#, 1000));
    let mut messages = 0;
    while messages < 1000 {
        let text = raw.read_text();
        assert!(!text.contains(r#""type":"error""#), "{text}");
        messages += u32::from(text.contains(r#""type":"message""#));
    }
}
