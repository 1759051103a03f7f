//! Verifies echo mode: each message goes back to its sender only, in order, with its
//! type kept (text stays text, binary stays binary) and its bytes intact, including a
//! 512 KiB text and a 1 MiB binary message (the default --max-message); and a client's
//! close handshake completes cleanly.

mod common;

use tungstenite::Message;

use common::{Server, Ws, connect_ws, ws_close, ws_recv, ws_send};

fn echo_server() -> Server {
    Server::start(&["--mode", "echo"])
}

#[track_caller]
fn round_trip(ws: &mut Ws, message: Message) {
    ws_send(ws, message.clone());
    let echoed = ws_recv(ws);
    assert!(echoed == message, "echo differs from what was sent");
}

#[test]
fn text_stays_text_and_binary_stays_binary() {
    let server = echo_server();
    let mut ws = connect_ws(&server);
    round_trip(&mut ws, Message::text("plain ascii"));
    round_trip(&mut ws, Message::text("ünïcödé ✓ 😀"));
    round_trip(&mut ws, Message::binary(vec![0u8, 1, 2, 0x80, 0xFF]));
    // Bytes that happen to be valid UTF-8 still come back as binary.
    round_trip(&mut ws, Message::binary(b"looks like text".to_vec()));
    round_trip(&mut ws, Message::text(""));
    round_trip(&mut ws, Message::binary(Vec::new()));
}

#[test]
fn large_messages_arrive_intact() {
    let server = echo_server();
    let mut ws = connect_ws(&server);
    // Multi-byte characters land on every read-buffer boundary somewhere.
    let unit = "héllo wörld 😀 ✓ ";
    let text = unit.repeat(512 * 1024 / unit.len() + 1);
    assert!(text.len() >= 512 * 1024);
    round_trip(&mut ws, Message::text(text));
    let binary: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    round_trip(&mut ws, Message::binary(binary));
}

#[test]
fn messages_come_back_in_order() {
    let server = echo_server();
    let mut ws = connect_ws(&server);
    for i in 0..200 {
        ws_send(&mut ws, Message::text(format!("message {i}")));
    }
    for i in 0..200 {
        assert_eq!(ws_recv(&mut ws), Message::text(format!("message {i}")));
    }
}

#[test]
fn messages_go_back_to_their_sender_only() {
    let server = echo_server();
    let mut a = connect_ws(&server);
    let mut b = connect_ws(&server);
    ws_send(&mut a, Message::text("from a"));
    assert_eq!(ws_recv(&mut a), Message::text("from a"));
    // If b had been sent a's message it would come before b's own echo.
    ws_send(&mut b, Message::text("from b"));
    assert_eq!(ws_recv(&mut b), Message::text("from b"));
    ws_send(&mut a, Message::text("again a"));
    assert_eq!(ws_recv(&mut a), Message::text("again a"));
}

#[test]
fn client_close_handshake_completes() {
    let server = echo_server();
    let mut ws = connect_ws(&server);
    round_trip(&mut ws, Message::text("before close"));
    ws_close(&mut ws);
}
