//! Verifies idle handling: an open client that sends nothing for `--ping-interval` gets a
//! ping; one that then sends nothing (no pong) for `--pong-timeout` is dropped; one that
//! answers every ping stays open and keeps working.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{OP_PING, OP_PONG, OP_TEXT, RawClient, Server};

#[test]
fn silent_client_is_pinged_then_dropped_answering_client_stays() {
    let server = Server::start(&[
        "--mode",
        "echo",
        "--ping-interval",
        "1",
        "--pong-timeout",
        "1",
    ]);
    let mut silent = RawClient::open(&server);
    let mut answering = RawClient::open(&server);
    // Answers every ping at once, for three intervals, then shows it still works.
    let answerer = thread::spawn(move || {
        for round in 0..3 {
            let ping = answering.read_frame();
            assert_eq!(ping.opcode, OP_PING, "round {round}: {ping:?}");
            answering.send_frame(true, OP_PONG, &ping.payload);
        }
        answering.send_frame(true, OP_TEXT, b"alive");
        assert_eq!(answering.read_text(), "alive");
    });

    let start = Instant::now();
    let ping = silent.read_frame();
    assert_eq!(ping.opcode, OP_PING, "{ping:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "pinged after only {:?}",
        start.elapsed()
    );
    silent.expect_eof();
    let gone = start.elapsed();
    assert!(gone < Duration::from_secs(4), "dropped after {gone:?}");

    if let Err(panic) = answerer.join() {
        std::panic::resume_unwind(panic);
    }

    let metrics = common::fetch_metrics(server.addr);
    assert!(metrics["wsrelay_pings_sent_total"] >= 4.0);
    assert_eq!(
        metrics["wsrelay_limit_hits_total{limit=\"idle_timeout\"}"],
        1.0
    );
}

#[test]
fn a_talking_client_is_not_pinged() {
    let server = Server::start(&["--mode", "echo", "--ping-interval", "1"]);
    let mut client = RawClient::open(&server);
    // A message every 300 ms for 2.4 s: never 1 s of silence, so never a ping.
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        let text = format!("m{i}");
        client.send_frame(true, OP_TEXT, text.as_bytes());
        let frame = client.read_frame();
        assert_eq!(frame.opcode, OP_TEXT, "{frame:?}");
        assert_eq!(frame.text(), text);
    }
}
