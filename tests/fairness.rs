//! Verifies that one client's cheap input cannot stall clients in other rooms: a probe alone
//! in its room sends a message, waits for its echo and repeats, first while one member of a
//! room of 200 writes 8,000 tiny messages in one send once a second, then while clients
//! connect to, join and leave a room of 2,000 as fast as two threads can; the probe's p99
//! round trip stays under 10 ms in both. The bursts still reach every member of their room,
//! in order (latency bought by dropping them would not count), and the churn leaves the
//! crowded room's history holding the messages sent before it (presence notices do not push
//! them out).
//!
//! The message rate limit is lifted (through its environment variable, which a server
//! without the flag ignores): the burst is what is under test. The test process and the
//! server share the machine, so the test's own readers are few threads over poll(2). The
//! probe is open loop (a message every 2 ms, each timed from its own send), so a stall is
//! counted for every message it held up, as a person typing would feel it.

mod common;
mod members;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use members::{Drain, await_message, background, frames, open, quantile};

const ROOM: usize = 200;
const CROWD: usize = 2000;
const BURST: usize = 8000;
const PHASE: Duration = Duration::from_secs(4);
/// The bound under test, for the optimized server (`test.sh` runs this file with `--release`
/// too). A debug build does each delivery several times slower, so it gets a looser bound,
/// still far below the seconds the unbounded loop took.
/// How often the probe sends.
const PROBE_EVERY: Duration = Duration::from_millis(2);
const P99_LIMIT: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(60)
} else {
    Duration::from_millis(10)
};

/// Measures the probe's round trips until `stop` (bounded by `PHASE` + 2 s), open loop: a
/// message every `PROBE_EVERY` whatever came back, each timed from its own send to its echo, so
/// a stall of the server counts once for every message it held up, not once in all. An echo
/// still missing at the end counts as the time since its send.
fn probe(stream: &mut TcpStream, buf: &mut Vec<u8>, stop: &Arc<AtomicBool>) -> Vec<Duration> {
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let writer = {
        let (mut out, sent, stop) = (
            stream.try_clone().expect("clone the probe"),
            Arc::clone(&sent),
            Arc::clone(stop),
        );
        thread::spawn(move || {
            let deadline = Instant::now() + PHASE + Duration::from_secs(2);
            for k in 0u32.. {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let frame = frames(&format!(r#"{{"name":"probe","msg":"{k}"}}"#), 1);
                sent.lock().unwrap().push(Instant::now());
                out.write_all(&frame).expect("probe write");
                thread::sleep(PROBE_EVERY);
            }
        })
    };
    let mut got: Vec<Option<Duration>> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut drain_until = None;
    loop {
        while let Some((payload, used)) = text_frame(buf) {
            buf.drain(..used);
            let name = br#""name":"probe""#;
            if !payload.starts_with(br#"{"type":"message""#)
                || !payload.windows(name.len()).any(|w| w == name)
            {
                continue;
            }
            let Some(k) = members::field_u64(&payload, br#""msg":""#) else {
                continue; // a warm-up message
            };
            let now = Instant::now();
            let sent = sent.lock().unwrap();
            if let Some(at) = sent.get(k as usize) {
                got.resize(got.len().max(k as usize + 1), None);
                got[k as usize] = Some(now - *at);
            }
        }
        let done = writer.is_finished();
        let expected = sent.lock().unwrap().len();
        if done && got.iter().flatten().count() >= expected {
            break;
        }
        if done
            && *drain_until.get_or_insert(Instant::now() + Duration::from_secs(5)) < Instant::now()
        {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed the probe"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("probe read: {e}"),
        }
    }
    writer.join().expect("probe writer");
    stream.set_read_timeout(Some(members::IO_TIMEOUT)).unwrap();
    let end = Instant::now();
    let sent = sent.lock().unwrap();
    sent.iter()
        .enumerate()
        .map(|(k, at)| got.get(k).copied().flatten().unwrap_or(end - *at))
        .collect()
}

fn summary(samples: &mut [Duration]) -> String {
    let n = samples.len();
    let p50 = quantile(samples, 0.5);
    let p99 = quantile(samples, 0.99);
    let max = samples.last().copied().unwrap_or_default();
    format!("{n} round trips: p50 {p50:?}, p99 {p99:?}, max {max:?}")
}

/// The `msg` values of the history a new client of `path` is sent.
fn history_msgs(addr: std::net::SocketAddr, path: &str) -> Vec<String> {
    let (mut stream, mut buf) = open(addr, path, None);
    let mut chunk = [0u8; 64 * 1024];
    let mut out = Vec::new();
    let mut texts = 0;
    // The welcome, then history frames, then the first live one.
    for _ in 0..1000 {
        while let Some((payload, used)) = text_frame(&buf) {
            texts += 1;
            let json: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            buf.drain(..used);
            if texts == 1 {
                continue;
            }
            if json["history"] != true {
                return out;
            }
            if json["type"] == "message" {
                out.push(json["msg"].as_str().unwrap_or_default().to_owned());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    out
}

/// The payload and length of an unmasked text frame at the front of `buf`.
fn text_frame(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (&b1, rest) = buf.get(1..)?.split_first()?;
    let (len, head) = match b1 & 0x7F {
        126 => (u16::from_be_bytes(*rest.first_chunk::<2>()?) as usize, 4),
        127 => return None,
        n => (n as usize, 2),
    };
    let payload = buf.get(head..head + len)?;
    Some((payload.to_vec(), head + len))
}

#[test]
fn bursts_and_churn_in_one_room_do_not_stall_another() {
    let mut cmd = Server::command(&[
        "--max-connections",
        "30000",
        "--max-connections-per-ip",
        "30000",
    ]);
    cmd.env("WSRELAY_MAX_MESSAGE_RATE", "1000000");
    let server = Server::start_command(cmd);
    let addr = server.addr;

    let room: Vec<_> = (0..ROOM).map(|_| open(addr, "/busy", None)).collect();
    let mut burster = room[0].0.try_clone().expect("clone");
    let room = Drain::start(room, 2);
    let crowd: Vec<_> = (0..CROWD).map(|_| open(addr, "/crowd", None)).collect();
    let mut speaker = crowd[0].0.try_clone().expect("clone");
    let crowd = Drain::start(crowd, 1);
    for i in 0..5 {
        let text = format!(r#"{{"name":"s","msg":"keep{i}"}}"#);
        speaker.write_all(&frames(&text, 1)).expect("speak");
    }

    let (mut probe_stream, mut probe_buf) = open(addr, "/probe", None);
    let stop = Arc::new(AtomicBool::new(false));
    // Warm up: connections, allocations, the first join notices.
    for _ in 0..20 {
        probe_stream
            .write_all(&frames(r#"{"name":"probe","msg":"w"}"#, 1))
            .unwrap();
        await_message(&mut probe_stream, &mut probe_buf, br#""name":"probe""#);
    }

    // Phase 1: 8,000 tiny messages in one send, once a second.
    let bursts = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            background();
            let burst = frames(r#"{"name":"a","msg":"b"}"#, BURST);
            let start = Instant::now();
            let mut sent = 0u32;
            while start.elapsed() < PHASE && !stop.load(Ordering::Relaxed) {
                burster.write_all(&burst).expect("burst write");
                sent += 1;
                let next = Duration::from_secs(u64::from(sent));
                thread::sleep(next.saturating_sub(start.elapsed()));
            }
            stop.store(true, Ordering::Relaxed);
            sent
        })
    };
    let mut burst_samples = probe(&mut probe_stream, &mut probe_buf, &stop);
    let sent = bursts.join().expect("burster");
    let burst_report = summary(&mut burst_samples);
    let want = u64::from(sent) * BURST as u64;
    let alive = |t: &members::Tally| t.closed.is_none() && !t.ended && t.disorder.is_none();
    let tallies = room.wait(Duration::from_secs(20), |t| t.messages >= want, alive);
    let behind: Vec<_> = tallies
        .iter()
        .filter(|t| t.messages != want || !alive(t))
        .collect();
    assert!(
        behind.is_empty(),
        "{} of {ROOM} members of the busy room did not get the {want} messages of {sent} \
         bursts, in order, without being closed; first: {:?} (probe: {burst_report})",
        behind.len(),
        behind.first()
    );

    // Phase 2: connect, join, leave, as fast as two threads can (bounded in count and time).
    stop.store(false, Ordering::Relaxed);
    let cycles = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let (stop, cycles, failures) = (
                Arc::clone(&stop),
                Arc::clone(&cycles),
                Arc::clone(&failures),
            );
            thread::spawn(move || {
                background();
                let start = Instant::now();
                while start.elapsed() < PHASE && cycles.load(Ordering::Relaxed) < 40_000 {
                    let cycle = std::panic::catch_unwind(|| drop(open(addr, "/crowd", None)));
                    if let Err(e) = cycle {
                        failures.lock().unwrap().push(format!("{e:?}"));
                        break;
                    }
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
                stop.store(true, Ordering::Relaxed);
            })
        })
        .collect();
    let mut churn_samples = probe(&mut probe_stream, &mut probe_buf, &stop);
    for c in churners {
        c.join().expect("churner");
    }
    let churn_report = summary(&mut churn_samples);
    let cycles = cycles.load(Ordering::Relaxed);
    eprintln!("burst ({sent} bursts): {burst_report}");
    eprintln!("churn ({cycles} cycles): {churn_report}");
    assert!(
        failures.lock().unwrap().is_empty(),
        "churn cycles failed: {:?}",
        failures.lock().unwrap()
    );

    let p99 = |s: &mut Vec<Duration>| quantile(s, 0.99);
    assert!(
        p99(&mut burst_samples) < P99_LIMIT && p99(&mut churn_samples) < P99_LIMIT,
        "probe latency in another room: during {sent} bursts of {BURST} into {ROOM}: \
         {burst_report}; during {cycles} join/leave cycles into {CROWD}: {churn_report}"
    );
    let kept = history_msgs(addr, "/crowd");
    let want: Vec<String> = (0..5).map(|i| format!("keep{i}")).collect();
    assert_eq!(
        kept, want,
        "the crowded room's history after {cycles} join/leave cycles"
    );
    drop((room, crowd));
}
