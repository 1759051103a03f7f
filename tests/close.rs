//! Verifies the closing handshake (RFC 6455 §5.5.1, §7.4): a close with a valid code
//! is answered with the same code and then the server closes TCP; an empty close is
//! answered too; a 1-byte close payload or a code that must not appear on the wire gets
//! 1002; a reason that is not UTF-8 gets 1007; data after the client's close is not
//! answered; and after a protocol-error close the server closes TCP whether or not the
//! client answers.

mod common;

use common::{
    CLOSE_WAIT, OP_CLOSE, OP_TEXT, RawClient, Server, assert_rejected, b0, close_payload,
    encode_frame,
};

const MASK: Option<[u8; 4]> = Some([0x01, 0x80, 0x7F, 0xFE]);

fn echo_server() -> Server {
    Server::start(&["--mode", "echo"])
}

fn close_frame(payload: &[u8]) -> Vec<u8> {
    encode_frame(b0(true, OP_CLOSE), MASK, payload)
}

#[test]
fn close_1000_is_echoed_then_tcp_is_closed() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    client.send(&close_frame(&close_payload(1000, b"bye")));
    client.expect_close(1000);
    client.expect_eof();
}

#[test]
fn empty_close_is_answered_then_tcp_is_closed() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    client.send(&close_frame(b""));
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OP_CLOSE, "{frame:?}");
    assert!(
        frame.payload.is_empty() || frame.close_code() == Some(1000),
        "an empty close should be answered empty or with 1000, not {frame:?}"
    );
    client.expect_eof();
}

#[test]
fn valid_close_codes_are_echoed() {
    let server = echo_server();
    let codes = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    for code in codes {
        let mut client = RawClient::open(&server);
        client.send(&close_frame(&close_payload(code, b"reason")));
        let frame = client.read_frame();
        assert_eq!(
            frame.close_code(),
            Some(code),
            "sent close {code}, got {frame:?}"
        );
        client.expect_eof();
    }
}

#[test]
fn invalid_close_codes_get_1002() {
    let server = echo_server();
    let codes = [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in codes {
        let bytes = close_frame(&close_payload(code, b""));
        assert_rejected(&server, &format!("close code {code}"), &bytes, 1002);
    }
}

#[test]
fn one_byte_close_payload_gets_1002() {
    let server = echo_server();
    assert_rejected(&server, "close payload [0x03]", &close_frame(&[0x03]), 1002);
}

#[test]
fn close_reason_that_is_not_utf8_gets_1007() {
    let server = echo_server();
    let payload = close_payload(1000, b"bad \xFF\xFE reason");
    assert_rejected(
        &server,
        "reason with 0xFF 0xFE",
        &close_frame(&payload),
        1007,
    );
    let payload = close_payload(1000, b"cut \xE2\x82");
    assert_rejected(
        &server,
        "reason with a cut code point",
        &close_frame(&payload),
        1007,
    );
}

#[test]
fn data_after_the_clients_close_is_not_answered() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    let mut bytes = close_frame(&close_payload(1000, b""));
    bytes.extend(encode_frame(b0(true, OP_TEXT), MASK, b"too late"));
    client.send_lenient(&bytes);
    client.expect_close(1000);
    client.expect_eof();
}

#[test]
fn protocol_error_close_then_tcp_close_without_the_clients_answer() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    client.send(&encode_frame(0x81, None, b"unmasked"));
    client.expect_close(1002);
    // No close from us: the server must still give up and close TCP.
    client.set_read_timeout(CLOSE_WAIT);
    client.expect_eof();
}

#[test]
fn protocol_error_close_then_tcp_close_after_the_clients_answer() {
    let server = echo_server();
    let mut client = RawClient::open(&server);
    client.send(&encode_frame(0x81, None, b"unmasked"));
    client.expect_close(1002);
    client.send_lenient(&close_frame(&close_payload(1002, b"")));
    client.expect_eof();
}
