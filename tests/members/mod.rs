//! Many chat members at once, cheaply: raw sockets with a hand-made handshake, drained by a
//! few threads with poll(2), each tallying the chat messages it sees (count, `seq` order,
//! close code) without a JSON parser or a per-frame allocation. Used where hundreds or
//! thousands of clients would swamp the test process (and the server's CPU) as tungstenite
//! clients with a thread each.

// Each test crate uses a different subset of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Read/write timeout on blocking sockets here.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a WebSocket to `path`; `rcvbuf` shrinks the socket's receive buffer before connecting
/// (a reader that takes little). Returns the socket and any bytes read after the 101.
#[track_caller]
pub fn open(addr: SocketAddr, path: &str, rcvbuf: Option<usize>) -> (TcpStream, Vec<u8>) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send upgrade");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..100 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                buf.starts_with(b"HTTP/1.1 101 "),
                "upgrade refused: {:?}",
                String::from_utf8_lossy(&buf)
            );
            return (stream, buf.split_off(end + 4));
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!("EOF before the 101: {:?}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no 101 ({e}): {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    panic!("no 101 in 100 reads");
}

/// `copies` masked text frames of `text`, back to back: one write's worth.
/// Runs the calling thread at the lowest priority (nice 19): a test's load generator stands
/// for other machines' clients, so on a 2-core host it must not take the CPU the server, the
/// readers and a latency probe need (on Linux the nice value is per thread). Readers keep
/// their priority: one starved of CPU is a slow consumer, and is closed as one.
pub fn background() {
    // SAFETY: setpriority takes plain integers and only changes this thread's scheduling;
    // gettid cannot fail. A refusal (EPERM/EACCES) leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

pub fn frames(text: &str, copies: usize) -> Vec<u8> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126);
    let mut out = Vec::with_capacity(copies * (payload.len() + 6));
    for i in 0..copies {
        let key = (i as u32)
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(1)
            .to_be_bytes();
        out.push(0x81);
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(j, b)| b ^ key[j % 4]));
    }
    out
}

/// What one member has seen.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// `"type":"message"` frames.
    pub messages: u64,
    /// The last message's `seq`.
    pub last_seq: u64,
    /// The first `seq` that did not increase: `(previous, this)`.
    pub disorder: Option<(u64, u64)>,
    /// `"type":"error"` frames.
    pub errors: u64,
    /// `"type":"notification"` frames.
    pub notices: u64,
    /// The close code the server sent, if it did (0 for a close without one).
    pub closed: Option<u16>,
    /// The socket ended (EOF or error).
    pub ended: bool,
}

/// Incremental frame parser for one socket.
struct Parser {
    buf: Vec<u8>,
    start: usize,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], tally: &mut Tally) {
        self.buf.extend_from_slice(bytes);
        while let Some((opcode, range, used)) = decode(&self.buf[self.start..]) {
            let payload = &self.buf[self.start + range.0..self.start + range.1];
            match opcode {
                0x1 => count(payload, tally),
                0x8 => {
                    tally.closed = Some(match payload {
                        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                        _ => 0,
                    });
                }
                _ => {}
            }
            self.start += used;
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// `(opcode, payload range, frame length)` of the unmasked frame at the front of `buf`.
fn decode(buf: &[u8]) -> Option<(u8, (usize, usize), usize)> {
    let (&b0, rest) = buf.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let (len, head) = match b1 & 0x7F {
        126 => (u16::from_be_bytes(*rest.first_chunk::<2>()?) as usize, 4),
        127 => (u64::from_be_bytes(*rest.first_chunk::<8>()?) as usize, 10),
        n => (n as usize, 2),
    };
    (buf.len() >= head + len).then_some((b0 & 0x0F, (head, head + len), head + len))
}

fn count(payload: &[u8], tally: &mut Tally) {
    if payload.starts_with(br#"{"type":"message""#) {
        tally.messages += 1;
        let seq = field_u64(payload, br#""seq":"#).unwrap_or(0);
        if seq <= tally.last_seq && tally.disorder.is_none() {
            tally.disorder = Some((tally.last_seq, seq));
        }
        tally.last_seq = seq;
    } else if payload.starts_with(br#"{"type":"error""#) {
        tally.errors += 1;
    } else if payload.starts_with(br#"{"type":"notification""#) {
        tally.notices += 1;
    }
}

/// The number after `key` in a JSON object's bytes.
pub fn field_u64(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// Sockets read by background threads until dropped, each with its [`Tally`].
pub struct Drain {
    tallies: Arc<Vec<Mutex<Tally>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drain {
    /// Reads `members` (socket, bytes already read) on `threads` threads.
    pub fn start(members: Vec<(TcpStream, Vec<u8>)>, threads: usize) -> Drain {
        let tallies: Arc<Vec<Mutex<Tally>>> =
            Arc::new((0..members.len()).map(|_| Mutex::default()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut groups: Vec<Vec<(usize, TcpStream, Vec<u8>)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (i, (stream, early)) in members.into_iter().enumerate() {
            groups[i % threads].push((i, stream, early));
        }
        let threads = groups
            .into_iter()
            .map(|group| {
                let (tallies, stop) = (Arc::clone(&tallies), Arc::clone(&stop));
                thread::spawn(move || drain(group, &tallies, &stop))
            })
            .collect();
        Drain {
            tallies,
            stop,
            threads,
        }
    }

    /// A copy of every member's tally.
    pub fn tallies(&self) -> Vec<Tally> {
        self.tallies
            .iter()
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Waits (at most `limit`) until `done` holds for every tally, or one fails `ok`; returns
    /// the tallies at that point.
    pub fn wait(
        &self,
        limit: Duration,
        done: impl Fn(&Tally) -> bool,
        ok: impl Fn(&Tally) -> bool,
    ) -> Vec<Tally> {
        let deadline = Instant::now() + limit;
        loop {
            let tallies = self.tallies();
            if tallies.iter().all(&done) || !tallies.iter().all(&ok) || Instant::now() > deadline {
                return tallies;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn drain(group: Vec<(usize, TcpStream, Vec<u8>)>, tallies: &[Mutex<Tally>], stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut socks = Vec::new();
    for (i, stream, early) in group {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut parser = Parser {
            buf: Vec::new(),
            start: 0,
        };
        if let Some(t) = tallies.get(i) {
            parser.feed(&early, &mut t.lock().unwrap_or_else(|p| p.into_inner()));
        }
        fds.push(libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        socks.push((i, stream, parser));
    }
    let mut chunk = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        for (pfd, (i, stream, parser)) in fds.iter_mut().zip(&mut socks) {
            if pfd.revents == 0 || pfd.fd < 0 {
                continue;
            }
            pfd.revents = 0;
            let mut tally = tallies[*i].lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: at most 64 reads per socket per wakeup, so one does not starve others.
            for _ in 0..64 {
                match stream.read(&mut chunk) {
                    Ok(0) => {
                        tally.ended = true;
                        pfd.fd = -1;
                        break;
                    }
                    Ok(n) => parser.feed(&chunk[..n], &mut tally),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        tally.ended = true;
                        pfd.fd = -1;
                        break;
                    }
                }
            }
        }
    }
}

/// Reads a blocking member's frames until a chat message whose bytes contain `needle` (at most
/// `limit` frames), feeding `parser` state in `buf`; returns when it arrived.
pub fn await_message(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> Instant {
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..10_000 {
        while let Some((opcode, range, used)) = decode(buf) {
            let hit = opcode == 0x1
                && buf[range.0..range.1].starts_with(br#"{"type":"message""#)
                && buf[range.0..range.1]
                    .windows(needle.len())
                    .any(|w| w == needle);
            buf.drain(..used);
            if hit {
                return Instant::now();
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed the probe"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("probe read: {e}"),
        }
    }
    panic!("no message with {needle:?} in 10,000 reads");
}

/// The `q` quantile (0..=1) of `samples` (sorted here).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

/// The resident set size of `pid` in KiB, peak (`VmHWM`) and now (`VmRSS`), from proc(5).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
