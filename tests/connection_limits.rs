//! Verifies `--max-connections` and `--max-connections-per-ip`: over either limit a
//! handshake is answered with HTTP 503 before any upgrade, a slot freed by a leaving client
//! is usable again, other addresses (127.0.0.2, 127.0.0.3 as real source addresses) are not
//! held back by one address's flood (refused sockets, answered at once, do not count against
//! the server-wide limit; past 8 refusals in flight from one address the rest are closed
//! unanswered), and `/metrics` counts the hits.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use common::{
    OP_TEXT, RawClient, Server, accept_for, fetch_metrics, http_exchange, new_key, upgrade_request,
};

/// A TCP connection to `addr` from the source address `src`.
fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let src: IpAddr = src.parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
    socket.into()
}

/// Tries an upgrade from `src`; the response status.
fn upgrade_status(server: &Server, src: &str) -> (u16, Option<RawClient>) {
    let mut client = RawClient::from_stream(connect_from(src, server.addr));
    let key = new_key();
    let response = client.handshake(&upgrade_request(server.addr, &key));
    if response.status == 101 {
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(accept_for(&key).as_str())
        );
        (101, Some(client))
    } else {
        (response.status, None)
    }
}

/// Retries an upgrade from `src` until it gets 101 (the server needs a moment to see a
/// client leave); bounded.
fn upgrade_eventually(server: &Server, src: &str) -> RawClient {
    for _ in 0..100 {
        if let (101, Some(client)) = upgrade_status(server, src) {
            return client;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("no 101 from {src} within 5 s; stderr:\n{}", server.stderr());
}

/// Runs the close handshake from the client side.
fn leave(mut client: RawClient) {
    client.send_frame(true, common::OP_CLOSE, &common::close_payload(1000, b""));
    client.expect_close(1000);
    client.expect_eof();
}

#[test]
fn over_max_connections_gets_503_until_a_slot_frees() {
    let server = Server::start(&["--mode", "echo", "--max-connections", "3"]);
    let mut held: Vec<RawClient> = (0..3).map(|_| RawClient::open(&server)).collect();
    let response = http_exchange(server.addr, &upgrade_request(server.addr, &new_key()));
    assert_eq!(response.status, 503, "{response:?}");
    // The ones inside are not disturbed.
    held[0].send_frame(true, OP_TEXT, b"still here");
    assert_eq!(held[0].read_text(), "still here");

    leave(held.pop().unwrap());
    let mut again = upgrade_eventually(&server, "127.0.0.1");
    again.send_frame(true, OP_TEXT, b"in");
    assert_eq!(again.read_text(), "in");

    drop(held);
    drop(again);
    // Metrics over a free slot: the full server answers 503 to /metrics too.
    let mut metrics = None;
    for _ in 0..100 {
        let response = http_exchange(server.addr, &common::get_request(server.addr, "/metrics"));
        if response.status == 200 {
            metrics = Some(common::parse_metrics(&String::from_utf8_lossy(
                &response.body,
            )));
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let metrics = metrics.expect("/metrics answered once clients left");
    assert!(metrics["wsrelay_limit_hits_total{limit=\"max_connections\"}"] >= 1.0);
    assert!(metrics["wsrelay_handshake_rejections_total{status=\"503\"}"] >= 1.0);
}

#[test]
fn one_address_over_its_limit_gets_503_others_do_not() {
    // Not trusted as proxies (the default trusts loopback, and every client here is loopback).
    let server = Server::start(&[
        "--mode",
        "echo",
        "--max-connections-per-ip",
        "2",
        "--trusted-proxy",
        "none",
    ]);
    let (s1, a) = upgrade_status(&server, "127.0.0.1");
    let (s2, b) = upgrade_status(&server, "127.0.0.1");
    assert_eq!((s1, s2), (101, 101));
    for _ in 0..3 {
        let (status, _) = upgrade_status(&server, "127.0.0.1");
        assert_eq!(status, 503, "third connection from 127.0.0.1");
    }
    let mut others: Vec<RawClient> = ["127.0.0.2", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|src| match upgrade_status(&server, src) {
            (101, Some(c)) => c,
            (status, _) => panic!("{src} got {status} while 127.0.0.1 was at its limit"),
        })
        .collect();
    others[2].send_frame(true, OP_TEXT, b"ok");
    assert_eq!(others[2].read_text(), "ok");

    leave(a.unwrap());
    let _back = upgrade_eventually(&server, "127.0.0.1");
    drop(b);

    let metrics = fetch_metrics_from(&server, "127.0.0.4");
    assert!(metrics["wsrelay_limit_hits_total{limit=\"max_connections_per_ip\"}"] >= 3.0);
}

/// `/metrics` fetched from another source address (127.0.0.1 is at its limit).
fn fetch_metrics_from(server: &Server, src: &str) -> std::collections::HashMap<String, f64> {
    let mut client = RawClient::from_stream(connect_from(src, server.addr));
    client.send(&common::get_request(server.addr, "/metrics"));
    let response = client.read_response_head();
    assert_eq!(response.status, 200, "{response:?}");
    common::parse_metrics(&String::from_utf8_lossy(&client.read_to_eof()))
}

#[test]
fn metrics_helper_works_on_a_fresh_server() {
    let server = Server::start(&[]);
    let metrics = fetch_metrics(server.addr);
    assert_eq!(metrics["wsrelay_connections_accepted_total"], 1.0);
}

#[test]
fn silent_sockets_over_the_per_ip_limit_do_not_fill_the_server() {
    let server = Server::start(&[
        "--max-connections",
        "20",
        "--max-connections-per-ip",
        "2",
        "--trusted-proxy",
        "none",
    ]);
    // 25 silent sockets from one address: 2 admitted, the next 8 (the cap on refusals in
    // flight from one address) refused at once, the rest closed unanswered.
    let mut flood: Vec<TcpStream> = (0..25)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    // A refused socket reads its 503 without sending a byte.
    let mut refused = RawClient::from_stream(flood.remove(2));
    let head = refused.read_response_head();
    assert_eq!(head.status, 503, "{head:?}");
    // Past the cap: the close, without a word.
    let mut dropped = RawClient::from_stream(flood.pop().unwrap());
    assert_eq!(dropped.read_to_eof(), b"");
    // Another address still gets in: the refusals hold no server-wide slots.
    let (status, client) = upgrade_status(&server, "127.0.0.2");
    assert_eq!(status, 101, "stderr:\n{}", server.stderr());
    drop(client);
    drop(flood);
}
