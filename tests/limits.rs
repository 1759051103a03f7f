//! Verifies the message limits (RFC 6455 §10.4): a frame whose header declares more
//! than `--max-message` bytes gets close 1009 at once, before any payload is sent (2 GiB
//! against the 1 MiB default; 1 MiB + 1 too); a message that grows past the limit over
//! several fragments gets 1009; a message with more than `--max-fragments` fragments
//! gets 1009 without waiting for its end; messages exactly at either limit pass.

mod common;

use common::{
    OP_BINARY, OP_CONT, OP_TEXT, RawClient, Server, assert_rejected, b0, encode_frame, encode_head,
};

const MASK: Option<[u8; 4]> = Some([0xA5, 0x5A, 0x0F, 0xF0]);

#[test]
fn declared_2_gib_frame_gets_1009_without_its_payload() {
    let server = Server::start(&["--mode", "echo"]);
    for opcode in [OP_BINARY, OP_TEXT] {
        let head = encode_head(b0(true, opcode), MASK, 2 << 30);
        assert_rejected(
            &server,
            &format!("2 GiB opcode {opcode:#x} header"),
            &head,
            1009,
        );
    }
}

#[test]
fn declared_length_one_over_the_default_gets_1009() {
    let server = Server::start(&["--mode", "echo"]);
    let head = encode_head(b0(true, OP_BINARY), MASK, 1024 * 1024 + 1);
    assert_rejected(&server, "1 MiB + 1 header", &head, 1009);
}

#[test]
fn max_message_is_inclusive_and_counts_all_fragments() {
    let server = Server::start(&["--mode", "echo", "--max-message", "1000"]);
    let mut client = RawClient::open(&server);
    let exact = vec![b'x'; 1000];
    client.send_frame(true, OP_TEXT, &exact);
    assert_eq!(client.read_message(), (OP_TEXT, exact.clone()));
    client.send_frame(false, OP_BINARY, &exact[..600]);
    client.send_frame(true, OP_CONT, &exact[600..]);
    assert_eq!(client.read_message(), (OP_BINARY, exact));

    let over = encode_frame(b0(true, OP_TEXT), MASK, &[b'x'; 1001]);
    assert_rejected(&server, "1001-byte frame", &over, 1009);
    let mut split = encode_frame(b0(false, OP_TEXT), MASK, &[b'x'; 600]);
    split.extend(encode_head(b0(true, OP_CONT), MASK, 401));
    assert_rejected(&server, "600 + 401 bytes, second header only", &split, 1009);
}

#[test]
fn more_fragments_than_max_fragments_get_1009() {
    let server = Server::start(&["--mode", "echo", "--max-fragments", "4"]);
    let mut client = RawClient::open(&server);
    client.send_frame(false, OP_TEXT, b"one ");
    client.send_frame(false, OP_CONT, b"two ");
    client.send_frame(false, OP_CONT, b"three ");
    client.send_frame(true, OP_CONT, b"four");
    assert_eq!(client.read_text(), "one two three four");

    // Five fragments, none final: the fifth alone must trigger the close.
    let five: Vec<u8> = (0..5)
        .flat_map(|i| {
            encode_frame(
                b0(false, if i == 0 { OP_TEXT } else { OP_CONT }),
                MASK,
                b"f",
            )
        })
        .collect();
    assert_rejected(&server, "five unfinished fragments", &five, 1009);
}
