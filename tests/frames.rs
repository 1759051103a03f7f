//! Verifies that the server enforces RFC 6455 §5 framing on client frames: unmasked
//! frames, RSV bits, reserved opcodes, fragmented or oversized control frames, 64-bit
//! lengths with the top bit set, continuations with nothing to continue and data frames
//! inside a fragmented message all get close 1002; text that is not UTF-8 gets 1007,
//! as soon as the bad byte arrives; a code point split across fragments is accepted;
//! fragments are reassembled; pings (also between fragments) get pongs with the same
//! payload. Runs in echo mode so accepted messages are visible.

mod common;

use common::{
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, Server, assert_rejected,
    b0, close_payload, encode_frame, encode_head,
};

const MASK: Option<[u8; 4]> = Some([0x37, 0xFA, 0x21, 0x3D]);

fn echo_server() -> Server {
    Server::start(&["--mode", "echo"])
}

/// Masked frames concatenated.
fn frames(list: &[(bool, u8, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|&(fin, opcode, payload)| encode_frame(b0(fin, opcode), MASK, payload))
        .collect()
}

#[test]
fn unmasked_client_frames_get_1002() {
    let server = echo_server();
    let text = encode_frame(0x81, None, b"hello");
    assert_rejected(&server, "unmasked text", &text, 1002);
    let ping = encode_frame(0x89, None, b"");
    assert_rejected(&server, "unmasked ping", &ping, 1002);
}

#[test]
fn rsv_bits_get_1002() {
    let server = echo_server();
    for (what, rsv) in [("RSV1", 0x40), ("RSV2", 0x20), ("RSV3", 0x10)] {
        let bytes = encode_frame(0x81 | rsv, MASK, b"hello");
        assert_rejected(&server, what, &bytes, 1002);
    }
    let ping = encode_frame(0x89 | 0x40, MASK, b"");
    assert_rejected(&server, "RSV1 on a ping", &ping, 1002);
}

#[test]
fn reserved_opcodes_get_1002() {
    let server = echo_server();
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        let bytes = encode_frame(b0(true, opcode), MASK, b"x");
        assert_rejected(&server, &format!("opcode {opcode:#x}"), &bytes, 1002);
    }
}

#[test]
fn fragmented_control_frames_get_1002() {
    let server = echo_server();
    for (what, opcode, payload) in [
        ("ping with FIN=0", OP_PING, &b"x"[..]),
        ("pong with FIN=0", OP_PONG, &b"x"[..]),
        ("close with FIN=0", OP_CLOSE, &close_payload(1000, b"")[..]),
    ] {
        let bytes = encode_frame(b0(false, opcode), MASK, payload);
        assert_rejected(&server, what, &bytes, 1002);
    }
}

#[test]
fn control_payloads_over_125_bytes_get_1002() {
    let server = echo_server();
    let long = [b'a'; 126];
    let long_close = close_payload(1000, &[b'r'; 124]);
    for (what, opcode, payload) in [
        ("126-byte ping", OP_PING, &long[..]),
        ("126-byte pong", OP_PONG, &long[..]),
        ("126-byte close", OP_CLOSE, &long_close[..]),
    ] {
        let bytes = encode_frame(b0(true, opcode), MASK, payload);
        assert_rejected(&server, what, &bytes, 1002);
    }
}

#[test]
fn length_with_the_top_bit_set_gets_1002() {
    // RFC 6455 §5.2: "the most significant bit MUST be 0" in a 64-bit length.
    let server = echo_server();
    let mut bytes = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0x10];
    bytes.extend_from_slice(&MASK.unwrap());
    assert_rejected(&server, "length 0x8000000000000010", &bytes, 1002);
}

#[test]
fn continuation_with_nothing_to_continue_gets_1002() {
    let server = echo_server();
    let last = frames(&[(true, OP_CONT, b"orphan")]);
    assert_rejected(&server, "final continuation first", &last, 1002);
    let middle = frames(&[(false, OP_CONT, b"orphan")]);
    assert_rejected(&server, "non-final continuation first", &middle, 1002);
    let after = frames(&[(true, OP_TEXT, b"done"), (true, OP_CONT, b"orphan")]);
    let mut client = RawClient::open(&server);
    client.send(&after);
    assert_eq!(client.read_text(), "done");
    client.expect_close(1002);
    client.finish_close(1002);
}

#[test]
fn data_frame_inside_a_fragmented_message_gets_1002() {
    let server = echo_server();
    for (what, first, second) in [
        ("text inside text", OP_TEXT, OP_TEXT),
        ("binary inside text", OP_TEXT, OP_BINARY),
        ("text inside binary", OP_BINARY, OP_TEXT),
        ("binary inside binary", OP_BINARY, OP_BINARY),
    ] {
        let bytes = frames(&[(false, first, b"part"), (true, second, b"new")]);
        assert_rejected(&server, what, &bytes, 1002);
    }
}

#[test]
fn pings_get_pongs_with_the_same_payload() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    let binary: Vec<u8> = (0..125).map(|i| (i * 7) as u8).collect();
    for payload in [&b""[..], b"hello", &[b'z'; 125], &binary] {
        client.send_frame(true, OP_PING, payload);
        let pong = client.read_frame();
        assert_eq!(pong.opcode, OP_PONG, "{pong:?}");
        assert!(pong.fin, "{pong:?}");
        assert_eq!(pong.payload, payload, "pong payload");
    }
}

#[test]
fn unsolicited_pongs_are_ignored() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    let bytes = frames(&[(true, OP_PONG, b"unasked"), (true, OP_TEXT, b"after")]);
    client.send(&bytes);
    assert_eq!(client.read_text(), "after");
}

#[test]
fn pings_between_fragments_are_answered_and_the_message_arrives() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    let bytes = frames(&[
        (false, OP_TEXT, b"Hello, "),
        (true, OP_PING, b"one"),
        (false, OP_CONT, b"wor"),
        (true, OP_PING, b"two"),
        (true, OP_CONT, b"ld"),
    ]);
    client.send(&bytes);
    for expected in [&b"one"[..], b"two"] {
        let pong = client.read_frame();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (OP_PONG, expected));
    }
    assert_eq!(client.read_text(), "Hello, world");
}

#[test]
fn fragmented_messages_are_reassembled_keeping_their_type() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    let text = frames(&[
        (false, OP_TEXT, b"frag"),
        (false, OP_CONT, b""),
        (false, OP_CONT, b"men"),
        (true, OP_CONT, b"ted"),
    ]);
    client.send(&text);
    assert_eq!(client.read_message(), (OP_TEXT, b"fragmented".to_vec()));
    let binary = frames(&[
        (false, OP_BINARY, &[0, 1, 2]),
        (true, OP_CONT, &[0xFF, 0xFE]),
    ]);
    client.send(&binary);
    assert_eq!(
        client.read_message(),
        (OP_BINARY, vec![0, 1, 2, 0xFF, 0xFE])
    );
    // One byte per write: the server must cope with any read boundary.
    let slow = frames(&[(false, OP_TEXT, b"by"), (true, OP_CONT, "te ✓".as_bytes())]);
    for byte in &slow {
        client.send(std::slice::from_ref(byte));
    }
    assert_eq!(client.read_text(), "byte ✓");
}

#[test]
fn invalid_utf8_text_gets_1007() {
    let server = echo_server();
    let cases: [(&str, Vec<u8>); 8] = [
        ("0xFF", frames(&[(true, OP_TEXT, b"ab\xFFcd")])),
        (
            "overlong 0xC0 0xAF",
            frames(&[(true, OP_TEXT, b"ab\xC0\xAFcd")]),
        ),
        (
            "surrogate U+D800",
            frames(&[(true, OP_TEXT, b"\xED\xA0\x80")]),
        ),
        (
            "above U+10FFFF",
            frames(&[(true, OP_TEXT, b"\xF4\x90\x80\x80")]),
        ),
        (
            "lone continuation byte",
            frames(&[(true, OP_TEXT, b"\x80")]),
        ),
        (
            "truncated at the end",
            frames(&[(true, OP_TEXT, b"ok\xE2\x82")]),
        ),
        (
            "truncated at the end of the last fragment",
            frames(&[(false, OP_TEXT, b"ok"), (true, OP_CONT, b"\xE2\x82")]),
        ),
        (
            "bad byte in a continuation",
            frames(&[(false, OP_TEXT, b"ok"), (true, OP_CONT, b"\xFF")]),
        ),
    ];
    for (what, bytes) in cases {
        assert_rejected(&server, what, &bytes, 1007);
    }
}

#[test]
fn invalid_utf8_in_an_unfinished_message_gets_1007_at_once() {
    // Only the first fragment is sent (FIN=0): the close must come without the rest.
    let server = echo_server();
    for (what, payload) in [
        ("0xC0 0xAF", &b"ab\xC0\xAFcd"[..]),
        ("0xFF", b"ok\xFF"),
        ("surrogate", b"\xED\xA0\x80"),
    ] {
        let bytes = frames(&[(false, OP_TEXT, payload)]);
        assert_rejected(&server, what, &bytes, 1007);
    }
}

#[test]
fn invalid_utf8_in_an_unfinished_frame_gets_1007_at_once() {
    // The header declares 64 bytes, only 8 are sent and the sixth is 0xFF.
    let server = echo_server();
    let mask = MASK.unwrap();
    let mut bytes = encode_head(b0(true, OP_TEXT), MASK, 64);
    bytes.extend(common::apply_mask(b"hello\xFFxx", mask, 0));
    assert_rejected(&server, "0xFF in the first 8 of 64 bytes", &bytes, 1007);
}

#[test]
fn code_points_split_across_fragments_are_valid() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    let euro = frames(&[(false, OP_TEXT, b"\xE2"), (true, OP_CONT, b"\x82\xAC")]);
    client.send(&euro);
    assert_eq!(client.read_text(), "€");
    let emoji = frames(&[
        (false, OP_TEXT, b"a\xF0\x9F"),
        (false, OP_CONT, b"\x98"),
        (true, OP_CONT, b"\x80b"),
    ]);
    client.send(&emoji);
    assert_eq!(client.read_text(), "a😀b");
}

#[test]
fn empty_messages_are_echoed() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    client.send_frame(true, OP_TEXT, b"");
    assert_eq!(client.read_message(), (OP_TEXT, Vec::new()));
    client.send_frame(true, OP_BINARY, b"");
    assert_eq!(client.read_message(), (OP_BINARY, Vec::new()));
}
