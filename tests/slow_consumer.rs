//! Verifies the per-connection output budget (`--max-output`): in relay mode, a client
//! that never reads while another sends 2000 messages of 16 KiB is disconnected (close
//! 1008, or EOF/reset, once it starts reading, after an in-order prefix of the
//! messages), while a client that keeps reading receives every message, in order, and the
//! server's peak RSS stays far below the 32 MiB the never-reading client was sent.

mod common;

use std::io::ErrorKind;
use std::thread;

use tungstenite::Message;

use common::{OP_BINARY, OP_CLOSE, RawClient, Server, connect_ws, ws_recv, ws_send};

const COUNT: u32 = 2000;
const SIZE: usize = 16 * 1024;

fn message(seq: u32) -> Vec<u8> {
    let mut payload = vec![(seq % 251) as u8; SIZE];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    payload
}

fn seq_of(payload: &[u8]) -> u32 {
    let bytes: [u8; 4] = payload[..4]
        .try_into()
        .expect("payload has a sequence number");
    u32::from_be_bytes(bytes)
}

/// The peak resident set size of `pid` in KiB (`VmHWM` in proc(5)'s status).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn slow_reader_is_disconnected_while_others_get_everything() {
    let server = Server::start(&[
        "--mode",
        "relay",
        "--no-echo-sender",
        "--max-output",
        "65536",
    ]);
    let mut slow = RawClient::open(&server);
    let mut reader = connect_ws(&server);
    let mut sender = connect_ws(&server);

    let reading = thread::spawn(move || {
        for seq in 0..COUNT {
            match ws_recv(&mut reader) {
                Message::Binary(payload) => {
                    assert_eq!(payload.len(), SIZE, "message {seq}: wrong size");
                    assert_eq!(&payload[..], &message(seq)[..], "message {seq} differs");
                }
                other => panic!("message {seq}: expected binary, got {other:?}"),
            }
        }
    });
    for seq in 0..COUNT {
        ws_send(&mut sender, Message::binary(message(seq)));
    }
    reading
        .join()
        .expect("the reading client got every message in order");
    let peak = peak_rss_kib(server.pid());
    assert!(peak < 16 * 1024, "server peak RSS {peak} KiB");

    // Now the slow client reads: some prefix of the messages, then the end.
    let mut next = 0;
    loop {
        match slow.next_frame() {
            Ok(Some(frame)) if frame.opcode == OP_BINARY => {
                assert!(frame.fin && frame.payload.len() == SIZE, "{frame:?}");
                assert_eq!(seq_of(&frame.payload), next, "gap before the disconnect");
                next += 1;
                assert!(next < COUNT, "the slow client was never disconnected");
            }
            Ok(Some(frame)) if frame.opcode == OP_CLOSE => {
                assert_eq!(frame.close_code(), Some(1008), "{frame:?}");
                break;
            }
            Ok(Some(frame)) => panic!("unexpected {frame:?}"),
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                break;
            }
            Err(e) => panic!("slow client after {next} messages: {e}"),
        }
    }
}
