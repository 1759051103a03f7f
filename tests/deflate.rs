//! Verifies permessage-deflate (RFC 7692) over real sockets, against a second DEFLATE
//! implementation (flate2 here, driven by the test): the 101 answers an offer with both
//! no-context-takeover parameters; compressed messages are inflated and long echoes come back
//! compressed, short ones plain; RSV1 where it may not be is 1002; a 64-byte frame that
//! inflates past `--max-message` is closed with 1009 and, sent by 200 clients, grows the
//! server's peak RSS by less than twice the limit (beyond what as many plain frames refused
//! for their declared length cost a twin server); a relayed broadcast is compressed once
//! for all its deflate receivers, and the others get the plain frame.

mod common;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use common::{
    OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RawClient, Server, b0, encode_frame, fetch_metrics,
    new_key, request, upgrade_headers,
};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// RFC 7692 §7.2.1: raw DEFLATE, sync flush, the 0x00 0x00 0xff 0xff tail removed.
fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut z = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush tail");
    out.truncate(out.len() - 4);
    out
}

/// RFC 7692 §7.2.2: the tail appended, then inflated.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut z = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    z.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A client that offered `offer`, and the server's `Sec-WebSocket-Extensions` answer.
fn open_offering(server: &Server, offer: &str) -> (RawClient, Option<String>) {
    let mut client = RawClient::connect(server.addr);
    let mut headers = upgrade_headers(server.addr, &new_key());
    headers.push(("Sec-WebSocket-Extensions", offer.to_owned()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let response = client.handshake(&request("GET / HTTP/1.1", &refs));
    assert_eq!(response.status, 101, "{response:?}");
    let answer = response
        .header("sec-websocket-extensions")
        .map(str::to_owned);
    client.rsv_allowed = 4;
    (client, answer)
}

/// A masked frame with RSV1 set on it.
fn compressed_frame(client: &mut RawClient, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = client.next_mask();
    encode_frame(b0(fin, opcode) | 0x40, Some(mask), payload)
}

#[test]
fn echo_inflates_what_it_gets_and_compresses_what_is_long() {
    let server = Server::start(&["--mode", "echo", "--deflate"]);
    let (mut client, answer) = open_offering(&server, OFFER);
    assert_eq!(answer.as_deref(), Some(ANSWER));

    let long = "{\"name\":\"ann\",\"msg\":\"hello hello hello\"} ".repeat(20);
    let frame = compressed_frame(&mut client, true, OP_TEXT, &deflate(long.as_bytes(), 6));
    client.send(&frame);
    let echo = client.read_frame();
    assert_eq!((echo.rsv, echo.opcode, echo.fin), (4, OP_TEXT, true));
    assert!(echo.payload.len() < long.len() / 4, "{echo:?}");
    assert_eq!(inflate(&echo.payload), long.as_bytes());

    // Short: inflated on the way in, plain on the way out (under the 128-byte threshold).
    let frame = compressed_frame(&mut client, true, OP_BINARY, &deflate(b"tiny", 6));
    client.send(&frame);
    let echo = client.read_frame();
    assert_eq!((echo.rsv, echo.opcode), (0, OP_BINARY));
    assert_eq!(echo.payload, b"tiny");

    // Fragmented: RSV1 on the first frame only, a ping between the fragments.
    let packed = deflate(long.as_bytes(), 1);
    let (head, tail) = packed.split_at(packed.len() / 2);
    let mut bytes = compressed_frame(&mut client, false, OP_TEXT, head);
    bytes.extend(client.masked(true, OP_PING, b"p"));
    bytes.extend(client.masked(true, OP_CONT, tail));
    client.send(&bytes);
    assert_eq!(client.read_message(), (0xA, b"p".to_vec()));
    let echo = client.read_frame();
    assert_eq!(inflate(&echo.payload), long.as_bytes());

    // The window the client limits us to is answered, and kept (RFC 7692 §7.1.2.1).
    let offer = "permessage-deflate; server_max_window_bits=9; client_max_window_bits";
    let (mut small, answer) = open_offering(&server, offer);
    assert_eq!(answer, Some(format!("{ANSWER}; server_max_window_bits=9")));
    let frame = compressed_frame(&mut small, true, OP_TEXT, &deflate(long.as_bytes(), 6));
    small.send(&frame);
    let echo = small.read_frame();
    let mut z = Decompress::new_with_window_bits(false, 9);
    let mut input = echo.payload.clone();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(long.len() + 1);
    z.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("fits a 512-byte window");
    assert_eq!(out, long.as_bytes());

    let m = fetch_metrics(server.addr);
    assert_eq!(m["wsrelay_deflate_upgrades_total"], 2.0);
    assert_eq!(m["wsrelay_deflate_messages_received_total"], 4.0);
}

#[test]
fn offers_that_cannot_be_accepted_and_misplaced_rsv1() {
    let server = Server::start(&["--mode", "echo", "--deflate"]);
    // Declined (an unknown parameter): no extension, and RSV1 is then a reserved bit.
    let (mut client, answer) = open_offering(&server, "permessage-deflate; foo=1");
    assert_eq!(answer, None);
    let frame = compressed_frame(&mut client, true, OP_TEXT, &deflate(b"hi", 6));
    client.send(&frame);
    client.expect_close(1002);
    // The next offer in the list is taken.
    let offers = "permessage-deflate; server_max_window_bits=16, permessage-deflate";
    let (_, answer) = open_offering(&server, offers);
    assert_eq!(answer.as_deref(), Some(ANSWER));
    // RSV1 on a continuation frame, or a control frame: 1002 (RFC 7692 §6.1).
    let (mut client, _) = open_offering(&server, OFFER);
    let mut bytes = compressed_frame(&mut client, false, OP_TEXT, &deflate(b"hi", 6));
    bytes.extend(compressed_frame(&mut client, true, OP_CONT, b""));
    client.send(&bytes);
    client.expect_close(1002);
    let (mut client, _) = open_offering(&server, OFFER);
    let frame = compressed_frame(&mut client, true, OP_PING, b"");
    client.send(&frame);
    client.expect_close(1002);
    // Not DEFLATE: 1007.
    let (mut client, _) = open_offering(&server, OFFER);
    let frame = compressed_frame(&mut client, true, OP_BINARY, &[0xff; 8]);
    client.send(&frame);
    client.expect_close(1007);
    // Without --deflate nothing is negotiated.
    let plain = Server::start(&["--mode", "echo"]);
    let (_, answer) = open_offering(&plain, OFFER);
    assert_eq!(answer, None);
}

/// The peak resident set size of `pid` in KiB (`VmHWM` in proc(5)'s status).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_64_byte_bomb_is_1009_and_costs_no_more_than_the_limit() {
    const LIMIT: usize = 16 * 1024;
    let limit = LIMIT.to_string();
    let args = ["--mode", "echo", "--deflate", "--max-message", &limit];
    // The largest run of zeros whose compressed form leaves the frame at 64 bytes: 2 bytes of
    // header, 4 of mask, 58 of payload.
    let (zeros, bomb) = (LIMIT..=80 * 1024)
        .step_by(1024)
        .map(|n| (n, deflate(&vec![0; n], 9)))
        .take_while(|(_, packed)| packed.len() <= 58)
        .last()
        .expect("a bomb within 58 bytes");
    assert!(zeros > 2 * LIMIT, "{zeros} zeros in {} bytes", bomb.len());

    // Two servers, treated alike but for the last phase: the growth of the bombed one beyond
    // the other's is what the bombs cost (the loop's own tables grow with connections).
    let bombed = Server::start(&args);
    let control = Server::start(&args);
    let ordinary: Vec<u8> = (0..4096u32)
        .map(|i| b"hello, world "[i as usize % 13])
        .collect();
    let mut grown = Vec::new();
    for (server, is_bomb) in [(&bombed, true), (&control, false)] {
        // Warm up: the process's one inflater, its zlib window and the loop's tables exist
        // before the measurement starts, as on any server that has been up a while.
        for _ in 0..200 {
            let (mut client, _) = open_offering(server, OFFER);
            let frame = compressed_frame(&mut client, true, OP_BINARY, &deflate(&ordinary, 6));
            client.send(&frame);
            assert_eq!(inflate(&client.read_frame().payload), ordinary);
        }
        let before = peak_rss_kib(server.pid());
        for i in 0..200 {
            let (mut client, _) = open_offering(server, OFFER);
            let frame = if is_bomb {
                compressed_frame(&mut client, true, OP_BINARY, &bomb)
            } else {
                // The control: a plain frame that declares one byte over the limit, refused
                // from its header before a byte of it is buffered.
                let mut head = client.masked(true, OP_BINARY, &[]);
                head[1] = 0x80 | 126;
                head.splice(2..2, ((LIMIT + 1) as u16).to_be_bytes());
                head
            };
            assert!(frame.len() <= 64, "{} bytes", frame.len());
            client.send(&frame);
            let close = client.expect_close(1009);
            assert_eq!(&close.payload[2..], b"message too big", "client {i}");
        }
        grown.push(peak_rss_kib(server.pid()).saturating_sub(before) as usize * 1024);
        let m = fetch_metrics(server.addr);
        assert_eq!(m["wsrelay_limit_hits_total{limit=\"max_message\"}"], 200.0);
    }
    eprintln!(
        "peak RSS growth: bombed {} KiB, control {} KiB",
        grown[0] / 1024,
        grown[1] / 1024
    );
    // Each bomb would be `zeros` bytes (more than twice the limit) if inflated whole.
    let cost = grown[0].saturating_sub(grown[1]);
    assert!(
        cost < 2 * LIMIT,
        "200 bombs grew the peak RSS by {} KiB, 200 refused headers by {} KiB: {} KiB for a \
         {} KiB limit",
        grown[0] / 1024,
        grown[1] / 1024,
        cost / 1024,
        LIMIT / 1024
    );
}

#[test]
fn a_broadcast_is_compressed_once_for_every_deflate_receiver() {
    let server = Server::start(&["--mode", "relay", "--deflate"]);
    let (mut first, _) = open_offering(&server, OFFER);
    let (mut second, _) = open_offering(&server, "permessage-deflate");
    let mut plain = RawClient::open(&server);
    let mut sender = RawClient::open(&server);
    let json = "{\"type\":\"message\",\"name\":\"ann\",\"msg\":\"see you at noon\"}".repeat(8);
    sender.send_frame(true, OP_TEXT, json.as_bytes());
    let a = first.read_frame();
    let b = second.read_frame();
    assert_eq!((a.rsv, b.rsv), (4, 4));
    assert_eq!(a.payload, b.payload, "one encoding, shared");
    assert_eq!(inflate(&a.payload), json.as_bytes());
    assert_eq!(plain.read_message(), (OP_TEXT, json.as_bytes().to_vec()));
    assert_eq!(sender.read_message(), (OP_TEXT, json.as_bytes().to_vec()));
    let m = fetch_metrics(server.addr);
    assert_eq!(m["wsrelay_deflate_compressions_total"], 1.0);
    assert_eq!(m["wsrelay_deflate_deliveries_total"], 2.0);
    assert_eq!(m["wsrelay_deliveries_total"], 4.0);
}
