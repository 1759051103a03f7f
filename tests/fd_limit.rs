//! Verifies the server under a tiny open-file limit (`ulimit -n 64`, soft and hard, so it
//! cannot raise it) flooded with more connections than it can hold: it warns, pauses accepting
//! instead of spinning on EMFILE (little CPU time while full), keeps serving the client it
//! already has meanwhile, and once the flood is gone it serves new clients again.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{OP_TEXT, RawClient, Server, accept_for, new_key, upgrade_request};

/// User plus system CPU time of `pid`, in clock ticks (proc(5): fields 14 and 15 of stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn emfile_flood_does_not_spin_and_the_server_recovers() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -S -n 64 && ulimit -H -n 64 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--listen", "127.0.0.1:0", "--mode", "echo"])
        .stdin(std::process::Stdio::null());
    let server = Server::start_command(cmd);
    assert!(
        server.stderr().contains("below --max-connections"),
        "{}",
        server.stderr()
    );

    // A client from before the flood, to show the server stays responsive during it.
    let mut early = RawClient::connect(server.addr);
    let key = new_key();
    let head = early.handshake(&upgrade_request(server.addr, &key));
    assert_eq!(head.status, 101);

    // More than 64 descriptors' worth; the rest wait in the listen backlog.
    let flood: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(server.addr).expect("connect (listen backlog)"))
        .collect();
    server.wait_for_log("pausing accepts", Duration::from_secs(5));
    let before = cpu_ticks(server.pid());
    thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.pid()) - before;
    // 2 s at 100 ticks/s is 200 ticks for a spinning core; backing off costs a few.
    assert!(
        used < 40,
        "{used} CPU ticks in 2 s while the fd table was full"
    );
    // While full, the client it holds is still served.
    for i in 0..3 {
        let text = format!("still here {i}");
        early.send_frame(true, OP_TEXT, text.as_bytes());
        assert_eq!(early.read_text(), text);
    }

    drop(flood);
    // The server sees the flood go (EOF on what it holds, then the backlog) and takes
    // new clients again.
    for attempt in 0.. {
        let mut client = RawClient::connect(server.addr);
        let key = new_key();
        client.send_lenient(&upgrade_request(server.addr, &key));
        match client.try_read_response_head() {
            Ok(response) if response.status == 101 => {
                assert_eq!(
                    response.header("sec-websocket-accept"),
                    Some(accept_for(&key).as_str())
                );
                client.send_frame(true, OP_TEXT, b"back");
                assert_eq!(client.read_text(), "back");
                return;
            }
            other => assert!(attempt < 50, "no recovery: {other:?}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
}
