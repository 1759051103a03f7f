//! Verifies relay mode: every text or binary message reaches every connected client
//! verbatim and with its type, the sender included, in the order it was sent; with
//! `--no-echo-sender` it reaches everyone but the sender; a client that vanished without
//! a close does not stop delivery to the others.

mod common;

use tungstenite::Message;

use common::{OP_CLOSE, OP_TEXT, RawClient, Server, close_payload, connect_ws, ws_recv, ws_send};

#[test]
fn each_message_reaches_every_client_including_the_sender() {
    let server = Server::start(&["--mode", "relay"]);
    let mut clients = [
        connect_ws(&server),
        connect_ws(&server),
        connect_ws(&server),
    ];
    let messages = [
        Message::text("hello from 0 ✓"),
        Message::binary(vec![0u8, 0xFF, 0x80, 1]),
        Message::text("{\"not\":\"parsed in relay mode\"}"),
    ];
    for (sender, message) in messages.iter().enumerate() {
        ws_send(&mut clients[sender], message.clone());
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(&ws_recv(client), message, "client {i}, sender {sender}");
        }
    }
}

#[test]
fn order_from_one_sender_is_kept() {
    let server = Server::start(&["--mode", "relay"]);
    let mut sender = connect_ws(&server);
    let mut others = [connect_ws(&server), connect_ws(&server)];
    for i in 0..100 {
        ws_send(&mut sender, Message::text(format!("#{i}")));
    }
    for client in others.iter_mut().chain(std::iter::once(&mut sender)) {
        for i in 0..100 {
            assert_eq!(ws_recv(client), Message::text(format!("#{i}")));
        }
    }
}

#[test]
fn no_echo_sender_skips_the_sender() {
    let server = Server::start(&["--mode", "relay", "--no-echo-sender"]);
    let mut a = connect_ws(&server);
    let mut b = connect_ws(&server);
    let mut c = connect_ws(&server);
    ws_send(&mut a, Message::text("from a"));
    assert_eq!(ws_recv(&mut b), Message::text("from a"));
    assert_eq!(ws_recv(&mut c), Message::text("from a"));
    ws_send(&mut b, Message::binary(b"from b".to_vec()));
    assert_eq!(ws_recv(&mut c), Message::binary(b"from b".to_vec()));
    // a's next message is b's: its own never came back.
    assert_eq!(ws_recv(&mut a), Message::binary(b"from b".to_vec()));
    ws_send(&mut c, Message::text("from c"));
    assert_eq!(ws_recv(&mut a), Message::text("from c"));
    // b's next message is c's: its own never came back.
    assert_eq!(ws_recv(&mut b), Message::text("from c"));
}

#[test]
fn a_vanished_client_does_not_stop_delivery() {
    let server = Server::start(&["--mode", "relay"]);
    let mut a = connect_ws(&server);
    let mut b = connect_ws(&server);
    let c = connect_ws(&server);
    drop(c); // TCP closed, no close frame
    for i in 0..20 {
        ws_send(&mut a, Message::text(format!("after c left {i}")));
    }
    for client in [&mut a, &mut b] {
        for i in 0..20 {
            assert_eq!(ws_recv(client), Message::text(format!("after c left {i}")));
        }
    }
}

#[test]
fn many_messages_in_one_read_keep_their_order_and_precede_the_close_echo() {
    let server = Server::start(&["--mode", "relay"]);
    let mut sender = RawClient::open(&server);
    let mut others = [connect_ws(&server), connect_ws(&server)];
    // One write: 50 messages then a close, so the server reads them together.
    let mut bytes = Vec::new();
    for i in 0..50 {
        bytes.extend(sender.masked(true, OP_TEXT, format!("#{i}").as_bytes()));
    }
    bytes.extend(sender.masked(true, OP_CLOSE, &close_payload(1000, b"")));
    sender.send(&bytes);
    for i in 0..50 {
        assert_eq!(sender.read_frame().text(), format!("#{i}"));
    }
    assert_eq!(sender.read_frame().close_code(), Some(1000));
    for client in &mut others {
        for i in 0..50 {
            assert_eq!(ws_recv(client), Message::text(format!("#{i}")));
        }
    }
}
