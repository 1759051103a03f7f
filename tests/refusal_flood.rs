//! Verifies that one address opening sockets as fast as it can, far over
//! `--max-connections-per-ip`, cannot take the server's file descriptors (it runs under
//! `ulimit -n 2048`): refusals from one address are capped, the rest of its sockets are closed
//! unanswered at once, so accepting never pauses and a second address (127.0.0.3) gets its
//! WebSocket upgraded and answered at once, during the flood and after it.

mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use common::{OP_TEXT, RawClient, Server, new_key, upgrade_request};

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(2);
/// Sockets the flooding client keeps open at once (more than the server's 2048 descriptors,
/// fewer than the test process's own limit); older ones are closed as new ones open.
const HELD: usize = 3000;
/// Connection attempts at most, whatever the clock says.
const MAX_ATTEMPTS: u64 = 200_000;
/// The longest a probe from the second address may take, connect to echo: "at once", with
/// room for a loaded machine (a probe takes about 1 ms; one that waits out a paused accept,
/// 100 ms each time, takes 120-230 ms).
const PROBE_LIMIT: Duration = Duration::from_millis(150);

/// A TCP connection to `addr` from the source address `src`, or the connect error.
fn try_connect_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(1))?;
    Ok(socket.into())
}

/// Upgrades from 127.0.0.3 and echoes one message; how long that took, or what went wrong.
fn probe(server: &Server) -> Result<Duration, String> {
    let started = Instant::now();
    let stream = try_connect_from("127.0.0.3".parse().unwrap(), server.addr)
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = RawClient::from_stream(stream);
    client.set_read_timeout(Duration::from_secs(3));
    client.send(&upgrade_request(server.addr, &new_key()));
    let head = client.try_read_response_head()?;
    if head.status != 101 {
        return Err(format!("status {}", head.status));
    }
    client.send_frame(true, OP_TEXT, b"probe");
    let text = client.read_text();
    if text != "probe" {
        return Err(format!("echo {text:?}"));
    }
    Ok(started.elapsed())
}

#[test]
fn one_address_flooding_leaves_the_server_accepting_others() {
    // The flood holds HELD sockets in this process: lift its soft limit to the hard one (a
    // 1024 default would make the probes fail for want of descriptors here, not there).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -S -n 2048 && ulimit -H -n 2048 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--listen", "127.0.0.1:0", "--mode", "echo"])
        .args(["--max-connections-per-ip", "4"])
        // Loopback is trusted as a proxy by default, and proxies are not limited per address.
        .args(["--trusted-proxy", "none"])
        .stdin(std::process::Stdio::null());
    let server = Server::start_command(cmd);
    // Nothing from 127.0.0.3 yet: the probe must work on an idle server.
    probe(&server).expect("probe before the flood");

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, attempts, addr) = (Arc::clone(&stop), Arc::clone(&attempts), server.addr);
        thread::spawn(move || {
            let src: IpAddr = "127.0.0.2".parse().unwrap();
            let mut held = VecDeque::with_capacity(HELD);
            let (mut ok, mut failed) = (0u64, 0u64);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < FLOOD
                && ok + failed < MAX_ATTEMPTS
            {
                match try_connect_from(src, addr) {
                    Ok(s) => {
                        ok += 1;
                        if held.len() == HELD {
                            held.pop_front();
                        }
                        held.push_back(s);
                    }
                    Err(_) => failed += 1,
                }
                attempts.store(ok + failed, Ordering::Relaxed);
            }
            (ok, failed)
        })
    };

    // Probes during the flood (once it is under way) and after it.
    let mut took = Vec::new();
    let mut failed_probes = Vec::new();
    let started = Instant::now();
    while attempts.load(Ordering::Relaxed) < 500 && started.elapsed() < FLOOD {
        thread::sleep(Duration::from_millis(10));
    }
    while started.elapsed() < FLOOD + Duration::from_millis(500) && took.len() < 20 {
        match probe(&server) {
            Ok(t) => took.push(t),
            Err(e) => failed_probes.push(e),
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = flood.join().expect("flood thread");
    let after = probe(&server);
    let log = server.stderr();
    took.sort();
    // The median, not every probe: a shared 2-core machine can stall any one of them; a
    // server that pauses accepting stalls them all.
    let median = took.get(took.len() / 2).copied();
    // One probe may fail outright (a SYN dropped from a full backlog is retried after 1 s,
    // the probe's connect timeout); a paused accept fails them all.
    assert!(
        failed_probes.len() <= 1
            && median.is_some_and(|m| m <= PROBE_LIMIT)
            && after.as_ref().is_ok_and(|t| *t <= PROBE_LIMIT * 4),
        "127.0.0.3 was held back by 127.0.0.2's flood ({ok} sockets, {failed} failed \
         connects): probes took {took:?}, failed {failed_probes:?}; after: {after:?}; \
         stderr:\n{log}"
    );
    assert!(
        !log.contains("pausing accepts"),
        "the flood exhausted the server's descriptors; stderr:\n{log}"
    );
    assert!(
        ok > 1000,
        "the flood was too slow to test anything: {ok} sockets"
    );
}
