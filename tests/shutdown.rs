//! Verifies shutdown on SIGTERM: every connected client gets a close frame with code
//! 1001 (going away), whether or not it answers, and the process exits with status 0
//! within a bounded time; an idle server exits 0 as well. With 100 clients, every message
//! the server accepted before the signal reaches every client before its close frame. While
//! it waits for the last clients, new connects are refused at once (the listener is closed).

mod common;

use std::time::Duration;

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use common::{OP_PING, OP_PONG, OP_TEXT, RawClient, Server, connect_ws, ws_send};

const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// A raw client whose upgrade the server has surely finished (a ping was answered).
fn ready_client(server: &Server) -> RawClient {
    let mut client = RawClient::open(server);
    client.send_frame(true, OP_PING, b"ready?");
    loop {
        let frame = client.read_frame();
        match frame.opcode {
            OP_PONG => return client,
            OP_TEXT => continue, // a chat join notice
            _ => panic!("expected a pong, got {frame:?}"),
        }
    }
}

/// Skips text frames (chat notices) up to the close frame, which must say 1001.
#[track_caller]
fn expect_going_away(client: &mut RawClient) {
    for _ in 0..100 {
        let frame = client.read_frame();
        if frame.opcode != OP_TEXT {
            assert_eq!(frame.close_code(), Some(1001), "{frame:?}");
            return;
        }
    }
    panic!("no close frame among 100 frames");
}

fn shutdown_with_clients(mode: &str) {
    let mut server = Server::start(&["--mode", mode]);
    let mut answering = ready_client(&server);
    let mut silent = ready_client(&server);
    let mut ws = connect_ws(&server);
    ws_send(&mut ws, Message::Ping(b"ready?".to_vec().into()));
    // Chat join notices may come before the pong.
    for _ in 0..10 {
        match ws.read() {
            Ok(Message::Pong(_)) => break,
            Ok(_) => continue,
            Err(e) => panic!("tungstenite client waiting for its pong: {e}"),
        }
    }

    server.terminate();

    expect_going_away(&mut answering);
    answering.finish_close(1001);
    expect_going_away(&mut silent); // and never answers
    // The silent client keeps the server waiting; meanwhile nobody new gets in.
    let refused = std::net::TcpStream::connect(server.addr);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a connect during shutdown: {refused:?}"
    );
    let close = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("tungstenite client: {e}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));

    let status = server.wait_exit(EXIT_LIMIT);
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    silent.expect_eof();
}

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    shutdown_with_clients("echo");
}

#[test]
fn sigterm_in_chat_mode_sends_1001_and_exits_0() {
    shutdown_with_clients("chat");
}

#[test]
fn sigterm_with_no_clients_exits_0() {
    let mut server = Server::start(&[]);
    server.terminate();
    let status = server.wait_exit(EXIT_LIMIT);
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn sigterm_with_100_clients_delivers_accepted_messages_then_1001_to_all() {
    const CLIENTS: usize = 100;
    const MESSAGES: usize = 20;
    let mut server = Server::start(&["--mode", "relay"]);
    let mut clients: Vec<RawClient> = (0..CLIENTS).map(|_| ready_client(&server)).collect();
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("message {i}")).collect();
    let sender = &mut clients[0];
    for text in &sent {
        sender.send_frame(true, OP_TEXT, text.as_bytes());
    }
    // The sender's own copies back mean the server has read and broadcast all of them.
    for text in &sent {
        assert_eq!(&sender.read_text(), text);
    }

    server.terminate();

    for (i, client) in clients.iter_mut().enumerate() {
        let skip = if i == 0 { MESSAGES } else { 0 };
        for text in &sent[skip..] {
            let frame = client.read_frame();
            assert_eq!(frame.opcode, OP_TEXT, "client {i}: {frame:?}");
            assert_eq!(frame.text(), text, "client {i}");
        }
        let close = client.read_frame();
        assert_eq!(close.close_code(), Some(1001), "client {i}: {close:?}");
    }
    for client in &mut clients {
        client.finish_close(1001);
    }
    let status = server.wait_exit(EXIT_LIMIT);
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
}
