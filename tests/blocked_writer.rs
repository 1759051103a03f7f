//! Verifies that a client whose socket stops taking data does not stall the server: while an
//! echo-mode client floods messages and never reads its echoes, another client still gets
//! `/healthz` answered, and the flooder is disconnected as a slow consumer.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{OP_BINARY, RawClient, Server, get_request, http_exchange};

#[test]
fn a_client_that_never_reads_does_not_stall_others() {
    let server = Server::start(&["--mode", "echo", "--max-output", "262144"]);
    let mut flooder = RawClient::open(&server);
    flooder
        .stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("set a write timeout");
    let frame = flooder.masked(true, OP_BINARY, &[0x5a; 16 * 1024]);
    // Fill both directions' socket buffers: echoes pile up in the server until its writes
    // block, then its budget closes the flooder (the write then fails or times out).
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 4000 && started.elapsed() < Duration::from_secs(10) {
        if flooder.stream.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 16, "the flood did not get going ({sent} frames)");

    // The loop must still serve everybody else, promptly.
    let response = http_exchange(server.addr, &get_request(server.addr, "/healthz"));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}
