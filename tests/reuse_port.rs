//! Verifies `--reuse-port`: two wsrelay processes started with it on the same port both start,
//! and the kernel spreads connections to that port over both (each one's `--admin-listen`
//! `/metrics` counts its share); a process without it cannot bind a port another holds, nor
//! join one bound without it (exit 1). At scale: two processes on one port hold 8,000 idle
//! WebSocket connections between them, each a fair share, and still answer on them.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{OP_TEXT, RawClient, Server, fetch_metrics, new_key, tcp_connect, upgrade_request};

/// A port free a moment ago: the processes below must all be given the same one.
fn free_port() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().unwrap()
}

/// `wsrelay --listen ADDR --admin-listen 127.0.0.1:0 --mode echo <args>`.
fn command(addr: SocketAddr, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsrelay"));
    cmd.args(["--listen", &addr.to_string()])
        .args(["--admin-listen", "127.0.0.1:0", "--mode", "echo"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs a process that must fail to start; its exit code and stderr.
fn run_failing(addr: SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let output = command(addr, args).output().expect("run wsrelay");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends an upgrade on a fresh connection to `addr`; the 101 is read later, so many
/// handshakes are in flight at once.
fn begin_upgrade(addr: SocketAddr) -> RawClient {
    let mut client = RawClient::from_stream(tcp_connect(addr));
    client.send(&upgrade_request(addr, &new_key()));
    client
}

#[test]
fn both_start_on_one_port_and_share_its_connections() {
    let addr = free_port();
    let a = Server::start_command(command(addr, &["--reuse-port"]));
    let b = Server::start_command(command(addr, &["--reuse-port"]));
    assert_eq!((a.addr, b.addr), (addr, addr));
    assert!(a.stderr().contains("port shared"), "{}", a.stderr());

    // Held open until all are made, so each is a new 4-tuple the kernel hashes to a process.
    let mut clients: Vec<RawClient> = (0..64).map(|_| begin_upgrade(addr)).collect();
    for c in &mut clients {
        let response = c.read_response_head();
        assert_eq!(response.status, 101, "{response:?}");
    }
    let (ma, mb) = (fetch_metrics(a.admin_addr()), fetch_metrics(b.admin_addr()));
    let accepted =
        |m: &std::collections::HashMap<String, f64>| m["wsrelay_connections_accepted_total"];
    let (na, nb) = (accepted(&ma), accepted(&mb));
    eprintln!("64 connections: {na} to one process, {nb} to the other");
    assert_eq!(na + nb, 64.0);
    assert_eq!(
        ma["wsrelay_websockets_open"] + mb["wsrelay_websockets_open"],
        64.0
    );
    // Each process gets a share: all 64 to one happens with probability 2^-63 when the
    // kernel spreads them, and always when it does not.
    assert!(
        na > 0.0 && nb > 0.0,
        "one process took all 64: {na} and {nb}"
    );
}

#[test]
fn without_reuse_port_the_second_fails_to_bind() {
    let addr = free_port();
    let _shared = Server::start_command(command(addr, &["--reuse-port"]));
    let (code, stderr) = run_failing(addr, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--listen {addr}: ")), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");

    // Every socket on the port must ask for sharing: the first one too.
    let addr = free_port();
    let _alone = Server::start_command(command(addr, &[]));
    let (code, stderr) = run_failing(addr, &["--reuse-port"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

/// Idle WebSocket connections opened in all: ~4,000 per process. The test holds one
/// descriptor per connection, well under the 20,000-file limit of this machine.
const IDLE: usize = 8_000;

#[test]
fn two_processes_hold_8000_idle_websockets() {
    let started = Instant::now();
    let addr = free_port();
    // All from 127.0.0.1: the per-address limit would cap them otherwise.
    let args = ["--reuse-port", "--max-connections-per-ip", "10000"];
    let a = Server::start_command(command(addr, &args));
    let b = Server::start_command(command(addr, &args));

    // In batches: all upgrades of a batch are sent, then all their 101s read.
    let mut clients: Vec<RawClient> = Vec::with_capacity(IDLE);
    while clients.len() < IDLE {
        let batch = (IDLE - clients.len()).min(500);
        let mut fresh: Vec<RawClient> = (0..batch).map(|_| begin_upgrade(addr)).collect();
        for c in &mut fresh {
            let response = c.read_response_head();
            assert_eq!(response.status, 101, "{response:?}");
        }
        clients.append(&mut fresh);
    }
    let opened = started.elapsed();

    let (ma, mb) = (fetch_metrics(a.admin_addr()), fetch_metrics(b.admin_addr()));
    let (na, nb) = (ma["wsrelay_websockets_open"], mb["wsrelay_websockets_open"]);
    eprintln!("{IDLE} idle websockets in {opened:?}: {na} in one process, {nb} in the other");
    assert_eq!(na + nb, IDLE as f64);
    // An even split has a standard deviation of ~45 here: 3,000 is 22 of them away.
    assert!(na >= 3_000.0 && nb >= 3_000.0, "uneven: {na} and {nb}");

    // Held, not just counted: every 80th still echoes, wherever it landed.
    for (i, c) in clients.iter_mut().enumerate().step_by(80) {
        let text = format!("still here {i}");
        c.send_frame(true, OP_TEXT, text.as_bytes());
        assert_eq!(c.read_text(), text);
    }
    let total = started.elapsed();
    eprintln!("whole test: {total:?}");
    assert!(total < Duration::from_secs(120), "took {total:?}");
}
