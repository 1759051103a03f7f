//! Verifies that a burst of tiny chat messages does not close members that read: one member of
//! a room of 100 writes 12,000 copies of `{"name":"a","msg":"b"}` in one send, then 120,000
//! more in another; every member (the sender too) gets every one of them, in `seq` order, and
//! none is closed; a member that reads nothing is still closed with 1008, and the server's
//! resident memory stays bounded meanwhile.
//!
//! The per-connection message rate limit is lifted here (through its environment variable,
//! which a server without the flag ignores): the output budget is what is under test.

mod common;
mod members;

use std::io::Write;
use std::time::Duration;

use common::{Server, fetch_metrics};
use members::{Drain, Tally, frames, open, rss_kib};

const MEMBERS: usize = 100;
const BURST: u64 = 12_000;
const TEXT: &str = r#"{"name":"a","msg":"b"}"#;

#[test]
fn a_burst_of_tiny_messages_reaches_every_reading_member() {
    let mut cmd = Server::command(&[]);
    cmd.env("WSRELAY_MAX_MESSAGE_RATE", "1000000");
    let server = Server::start_command(cmd);
    let members: Vec<_> = (0..MEMBERS)
        .map(|_| open(server.addr, "/burst", None))
        .collect();
    let mut sender = members[0].0.try_clone().expect("clone the sender");
    // Joined last, with a receive buffer of 4 KiB it never reads.
    let (idle, _) = open(server.addr, "/burst", Some(4096));
    let drain = Drain::start(members, 4);
    let alive = |t: &Tally| t.closed.is_none() && !t.ended && t.disorder.is_none();

    let mut sent = 0;
    for (burst, limit) in [(BURST, 30), (10 * BURST, 90)] {
        sender
            .write_all(&frames(TEXT, burst as usize))
            .expect("send the burst");
        sent += burst;
        let tallies = drain.wait(Duration::from_secs(limit), |t| t.messages >= sent, alive);
        let closed = tallies.iter().filter(|t| !alive(t)).count();
        let short: Vec<u64> = tallies
            .iter()
            .map(|t| t.messages)
            .filter(|&m| m != sent)
            .collect();
        assert!(
            closed == 0 && short.is_empty(),
            "after {sent} messages: {closed} of {MEMBERS} reading members closed or out of \
             order (first: {:?}); {} got a number other than {sent} (e.g. {:?})",
            tallies.iter().find(|t| !alive(t)),
            short.len(),
            short.first()
        );
    }
    let (peak, now) = rss_kib(server.pid());
    let metrics = fetch_metrics(server.addr);
    assert_eq!(
        metrics.get("wsrelay_slow_consumer_closes_total"),
        Some(&1.0),
        "the member that reads nothing, and only it, is closed as slow"
    );
    // 100 members sent 9.5 MB each: the server held little of it at any time.
    assert!(
        peak < 64 * 1024,
        "server peak RSS {peak} KiB (now {now} KiB)"
    );
    // The idle member now reads: what it was sent ends with close 1008, or, if the kernel's
    // buffers were still full of what it was sent when the close timeout passed, with EOF.
    let idle = Drain::start(vec![(idle, Vec::new())], 1);
    let end = idle.wait(
        Duration::from_secs(10),
        |t| t.closed.is_some() || t.ended,
        |_| true,
    );
    assert!(
        matches!(end[0].closed, Some(1008) | None) && (end[0].closed.is_some() || end[0].ended),
        "{:?}",
        end[0]
    );
    assert!(end[0].messages < sent, "{:?}", end[0]);
}
