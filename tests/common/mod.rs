//! Shared harness for the integration tests.
//!
//! [`Server`] runs the real `wsrelay` binary on an ephemeral port. Tests talk to it
//! over real sockets in two ways:
//!
//! - [`connect_ws`]: a tungstenite client, for conversations between well-behaved peers;
//! - [`RawClient`]: a hand-written handshake plus the minimal RFC 6455 frame
//!   encoder/decoder below, for sending bytes a correct client never would.
//!
//! The codec here is deliberately independent of the server's `proto` module, so the
//! tests check the server against a second implementation instead of against itself.
//! Every blocking read has a socket timeout and every loop has a bound, so a hung server
//! fails a test instead of hanging it.

// Each test crate compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;

/// Read/write timeout on every client socket: the longest any single wait may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server may take to close TCP after it sent a close frame the client
/// never answers ("reads until the client's close, or a short timeout").
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long the server may take to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stderr kept for failure messages; the rest is read and dropped.
const LOG_CAP: usize = 64 * 1024;

/// Largest HTTP response head the harness accepts.
const MAX_HEAD: usize = 64 * 1024;

// Opcodes, RFC 6455 §5.2.
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

// ---------------------------------------------------------------------------------------
// The server process

/// A running `wsrelay`; killed (and reaped) on drop.
pub struct Server {
    child: Child,
    /// Where the server said it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `wsrelay --listen 127.0.0.1:0 <args>` and waits (bounded) for the
    /// `listening on ws://HOST:PORT/` line on its stderr.
    pub fn start(args: &[&str]) -> Server {
        Server::start_command(Server::command(args))
    }

    /// `wsrelay --listen 127.0.0.1:0 <args>`, not yet started, to add environment variables.
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsrelay"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `cmd` (which runs wsrelay, maybe through a wrapper; its stdin is the caller's
    /// to set) and waits (bounded) for its
    /// `listening on ws://HOST:PORT/` line.
    pub fn start_command(cmd: Command) -> Server {
        let shown = format!("{cmd:?}");
        let (mut child, log, rx) = Server::spawn_logged(cmd);
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => Server { child, addr, log },
            Err(err) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "{shown} did not print `listening on ws://HOST:PORT/` \
                     ({err}; exit: {status:?}); stderr:\n{}",
                    lock(&log)
                );
            }
        }
    }

    /// Starts `cmd` without waiting for anything: for a server that starts on the first
    /// connection (`systemd-socket-activate`) at `addr`.
    pub fn spawn_at(cmd: Command, addr: SocketAddr) -> Server {
        let (child, log, _rx) = Server::spawn_logged(cmd);
        Server { child, addr, log }
    }

    fn spawn_logged(mut cmd: Command) -> (Child, Arc<Mutex<String>>, mpsc::Receiver<SocketAddr>) {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let thread_log = Arc::clone(&log);
        thread::spawn(move || drain_stderr(stderr, &thread_log, tx));
        (child, log, rx)
    }

    /// Waits (polling, at most `limit`) until stderr holds `needle`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in stderr within {limit:?}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the server said its admin listener (`--admin-listen`) is, waiting (bounded) for
    /// the `admin listening on http://HOST:PORT/` line.
    #[track_caller]
    pub fn admin_addr(&self) -> SocketAddr {
        const LINE: &str = "admin listening on http://";
        self.wait_for_log(LINE, STARTUP_TIMEOUT);
        let log = self.stderr();
        let rest = &log[log.find(LINE).expect("waited for it") + LINE.len()..];
        let end = rest.find('/').unwrap_or(rest.len());
        rest[..end]
            .parse()
            .unwrap_or_else(|e| panic!("bad admin address in {rest:?}: {e}"))
    }

    /// The exit status if the server has ended already; `None` while it runs.
    pub fn wait_exit_now(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written to stderr so far (first 64 KiB).
    pub fn stderr(&self) -> String {
        lock(&self.log).clone()
    }

    /// Sends SIGTERM with kill(1).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait().expect("try_wait on wsrelay") {
                Some(status) => return status,
                None if Instant::now() >= deadline => panic!(
                    "wsrelay still running {limit:?} after being asked to stop; stderr:\n{}",
                    self.stderr()
                ),
                // Polling a child's exit: std has no wait-with-timeout.
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock(log: &Mutex<String>) -> MutexGuard<'_, String> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads stderr until the child closes it, so the pipe never fills; reports the
/// first `listening on` address through `tx`.
fn drain_stderr(stderr: ChildStderr, log: &Mutex<String>, tx: mpsc::Sender<SocketAddr>) {
    let mut reader = BufReader::new(stderr);
    let mut tx = Some(tx);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        {
            let mut log = lock(log);
            if log.len() < LOG_CAP {
                log.push_str(&text);
            }
        }
        if let Some(addr) = parse_listen_line(&text)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(addr);
        }
    }
}

/// `... listening on ws://127.0.0.1:40123/ ...` (or `wss://`) -> `127.0.0.1:40123`.
fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    let line = line.replacen("listening on wss://", "listening on ws://", 1);
    let rest = &line[line.find("listening on ws://")? + "listening on ws://".len()..];
    let end = rest.find('/').unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// Plain TCP and HTTP

/// A TCP connection with both socket timeouts set to [`IO_TIMEOUT`].
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Everything after the head up to EOF (only filled by [`http_exchange`]).
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn parse(head: &[u8]) -> HttpResponse {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?} in {text:?}"));
        let headers = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {line:?} in {text:?}"));
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        HttpResponse {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header `name` holds `token` (both case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Sends `request` on a new connection, reads the response and everything after it
/// until the server closes the connection, and checks the rules every plain HTTP
/// response follows here: `Connection: close`, the connection then closed, and a
/// `Content-Length` (if any) that matches the body.
#[track_caller]
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut client = RawClient::connect(addr);
    client.send_lenient(request);
    let mut response = client.read_response_head();
    response.body = client.read_to_eof();
    let shown = String::from_utf8_lossy(&request[..request.len().min(200)]).into_owned();
    assert!(
        response.has_token("connection", "close"),
        "response to {shown:?} lacks `Connection: close`: {response:?}"
    );
    if let Some(length) = response.header("content-length") {
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(response.body.len()),
            "Content-Length disagrees with the bytes before EOF, for {shown:?}"
        );
    }
    response
}

/// `GET /metrics`, as `name{labels}` -> value; checks each line is a comment or a sample.
#[track_caller]
pub fn fetch_metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let response = http_exchange(addr, &get_request(addr, "/metrics"));
    assert_eq!(response.status, 200, "{response:?}");
    parse_metrics(&String::from_utf8_lossy(&response.body))
}

/// Prometheus text lines, as `name{labels}` -> value.
#[track_caller]
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            (name.to_owned(), value)
        })
        .collect()
}

/// `GET <path> HTTP/1.1` with a Host header and nothing else.
pub fn get_request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
}

/// A request head from a request line and header lines.
pub fn request(request_line: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("{request_line}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// The headers of a valid RFC 6455 §4.1 upgrade request.
pub fn upgrade_headers(addr: SocketAddr, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Host", addr.to_string()),
        ("Upgrade", "websocket".to_owned()),
        ("Connection", "Upgrade".to_owned()),
        ("Sec-WebSocket-Key", key.to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
    ]
}

/// A valid upgrade request for `/`.
pub fn upgrade_request(addr: SocketAddr, key: &str) -> Vec<u8> {
    let headers = upgrade_headers(addr, key);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    request("GET / HTTP/1.1", &refs)
}

/// A fresh random `Sec-WebSocket-Key`.
pub fn new_key() -> String {
    generate_key()
}

/// `Sec-WebSocket-Accept` for `key`, computed by tungstenite (RFC 6455 §4.2.2).
pub fn accept_for(key: &str) -> String {
    derive_accept_key(key.as_bytes())
}

// ---------------------------------------------------------------------------------------
// The independent frame codec (RFC 6455 §5.2)

/// First header byte: FIN bit plus opcode.
pub fn b0(fin: bool, opcode: u8) -> u8 {
    (if fin { 0x80 } else { 0x00 }) | opcode
}

/// A frame header with the shortest length encoding, masked when `mask` is given.
pub fn encode_head(b0: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0x00 };
    let mut head = vec![b0];
    match len {
        0..=125 => head.push(mask_bit | len as u8),
        126..=0xFFFF => {
            head.push(mask_bit | 126);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            head.push(mask_bit | 127);
            head.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        head.extend_from_slice(&key);
    }
    head
}

/// XORs `payload` with `mask`, starting at byte `offset` of the frame payload (§5.3).
pub fn apply_mask(payload: &[u8], mask: [u8; 4], offset: usize) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, byte)| byte ^ mask[(offset + i) % 4])
        .collect()
}

/// A whole frame: header, then the payload masked with `mask` if given.
pub fn encode_frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut frame = encode_head(b0, mask, payload.len() as u64);
    match mask {
        Some(key) => frame.extend(apply_mask(payload, key, 0)),
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// A close frame payload: big-endian code, then the reason (§5.5.1).
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// One decoded frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame with at least two payload bytes.
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (OP_CLOSE, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.payload[..self.payload.len().min(40)];
        write!(
            f,
            "Frame {{ fin: {}, rsv: {}, opcode: {:#x}, masked: {}, len: {}, payload: {:02x?}{} }}",
            self.fin,
            self.rsv,
            self.opcode,
            self.masked,
            self.payload.len(),
            shown,
            if shown.len() < self.payload.len() {
                "…"
            } else {
                ""
            }
        )
    }
}

/// Decodes one frame from the front of `buf`; `None` if `buf` holds less than a frame.
pub fn decode_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let (len, rest) = match second & 0x7F {
        126 => {
            let (bytes, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*bytes)), rest)
        }
        127 => {
            let (bytes, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*bytes), rest)
        }
        n => (u64::from(n), rest),
    };
    let masked = second & 0x80 != 0;
    let (mask, rest) = if masked {
        let (key, rest) = rest.split_first_chunk::<4>()?;
        (Some(*key), rest)
    } else {
        (None, rest)
    };
    let len = usize::try_from(len).ok()?;
    let payload = rest.get(..len)?;
    let payload = match mask {
        Some(key) => apply_mask(payload, key, 0),
        None => payload.to_vec(),
    };
    let used = buf.len() - rest.len() + len;
    let frame = Frame {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x7,
        opcode: first & 0x0F,
        masked,
        payload,
    };
    Some((frame, used))
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

// ---------------------------------------------------------------------------------------
// The raw client

/// A client that speaks bytes: a hand-made handshake, hand-encoded masked frames,
/// hand-decoded server frames.
pub struct RawClient {
    pub stream: TcpStream,
    /// Received bytes not yet decoded.
    buf: Vec<u8>,
    /// xorshift32 state for masking keys, so each frame gets a different non-zero key.
    mask_state: u32,
    /// RSV bits server frames may carry (RSV1 = 4 once permessage-deflate is negotiated).
    pub rsv_allowed: u8,
}

impl RawClient {
    /// Opens TCP only.
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(tcp_connect(addr))
    }

    /// Wraps a connected stream (timeouts are set here).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            mask_state: 0x37FA_213D,
            rsv_allowed: 0,
        }
    }

    /// Opens TCP and completes a valid upgrade, checking the 101 and its accept value.
    #[track_caller]
    pub fn open(server: &Server) -> RawClient {
        let mut client = RawClient::connect(server.addr);
        let key = new_key();
        let response = client.handshake(&upgrade_request(server.addr, &key));
        assert_eq!(response.status, 101, "upgrade refused: {response:?}");
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(accept_for(&key).as_str()),
            "wrong Sec-WebSocket-Accept: {response:?}"
        );
        client
    }

    /// Sends `request` and reads the response head; bytes after it stay buffered.
    #[track_caller]
    pub fn handshake(&mut self, request: &[u8]) -> HttpResponse {
        self.send(request);
        self.read_response_head()
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// The next mask key (never all zero, so a server that skips unmasking is caught).
    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_be_bytes()
    }

    /// A masked frame, for callers that batch several into one write.
    pub fn masked(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = self.next_mask();
        encode_frame(b0(fin, opcode), Some(mask), payload)
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("write {} bytes: {e}", bytes.len());
        }
    }

    /// Writes, ignoring a connection the server already closed or reset.
    pub fn send_lenient(&mut self, bytes: &[u8]) {
        match self.stream.write_all(bytes) {
            Err(e) if !is_reset(&e) => panic!("write {} bytes: {e}", bytes.len()),
            _ => {}
        }
    }

    /// Sends one masked frame.
    #[track_caller]
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let frame = self.masked(fin, opcode, payload);
        self.send(&frame);
    }

    /// Reads more bytes into the buffer; `Ok(0)` on EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
            }
        }
    }

    /// The next server frame; `Ok(None)` on a clean EOF between frames. Checks that
    /// server frames are unmasked (§5.1) with RSV bits clear (§5.2, no extensions).
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf) {
                self.buf.drain(..used);
                assert!(
                    !frame.masked,
                    "RFC 6455 §5.1: server frame is masked: {frame:?}"
                );
                assert_eq!(
                    frame.rsv & !self.rsv_allowed,
                    0,
                    "RSV bits set without an extension: {frame:?}"
                );
                return Ok(Some(frame));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("EOF inside a frame: {:02x?}", self.buf),
                    ))
                };
            }
        }
    }

    /// The next server frame; panics on EOF, error or timeout.
    #[track_caller]
    pub fn read_frame(&mut self) -> Frame {
        match self.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("server closed the connection where a frame was expected"),
            Err(e) => panic!("no frame from the server: {e}"),
        }
    }

    /// The next message: data frames reassembled into `(opcode, payload)`, or a
    /// control frame as it arrives between messages.
    #[track_caller]
    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        let first = self.read_frame();
        if first.fin || first.opcode >= OP_CLOSE {
            return (first.opcode, first.payload);
        }
        assert_ne!(
            first.opcode, OP_CONT,
            "continuation without a start: {first:?}"
        );
        let mut payload = first.payload;
        // Bounded: the server's own --max-fragments default.
        for _ in 0..4096 {
            let next = self.read_frame();
            assert_eq!(
                next.opcode, OP_CONT,
                "expected a continuation, got {next:?}"
            );
            payload.extend_from_slice(&next.payload);
            if next.fin {
                return (first.opcode, payload);
            }
        }
        panic!("server message has more than 4096 fragments");
    }

    /// Reads a text message and returns it.
    #[track_caller]
    pub fn read_text(&mut self) -> String {
        let (opcode, payload) = self.read_message();
        assert_eq!(
            opcode, OP_TEXT,
            "expected text, got opcode {opcode:#x}: {payload:02x?}"
        );
        String::from_utf8(payload).expect("server text message is UTF-8")
    }

    /// The next frame must be a close frame with `code` and a UTF-8 reason.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16) -> Frame {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode, OP_CLOSE,
            "expected close {code}, got {frame:?}"
        );
        assert_eq!(
            frame.close_code(),
            Some(code),
            "wrong close code in {frame:?}"
        );
        assert!(frame.fin, "fragmented close frame {frame:?}");
        assert!(
            std::str::from_utf8(&frame.payload[2..]).is_ok(),
            "close reason is not UTF-8: {frame:?}"
        );
        frame
    }

    /// The server must close TCP (EOF or reset) before the read timeout, with no
    /// further frames.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        match self.next_frame() {
            Ok(None) => {}
            Err(e) if is_reset(&e) => {}
            Ok(Some(frame)) => panic!("expected the server to close TCP, got {frame:?}"),
            Err(e) if is_timeout(&e) => panic!("server kept the TCP connection open ({e})"),
            Err(e) => panic!("expected the server to close TCP, got {e}"),
        }
    }

    /// Answers a close from the server with a close echoing `code` and expects the
    /// server to close TCP within [`CLOSE_WAIT`].
    #[track_caller]
    pub fn finish_close(&mut self, code: u16) {
        let frame = self.masked(true, OP_CLOSE, &close_payload(code, b""));
        self.send_lenient(&frame);
        self.set_read_timeout(CLOSE_WAIT);
        self.expect_eof();
    }

    /// Nothing may arrive for `quiet` (a read with that timeout must time out).
    #[track_caller]
    pub fn expect_silence(&mut self, quiet: Duration) {
        assert!(self.buf.is_empty(), "unread bytes: {:02x?}", self.buf);
        self.set_read_timeout(quiet);
        let result = self.fill();
        self.set_read_timeout(IO_TIMEOUT);
        match result {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("server closed the connection during {quiet:?} of expected silence"),
            Ok(_) => panic!("server sent {:02x?} during expected silence", self.buf),
            Err(e) => panic!("connection failed during expected silence: {e}"),
        }
    }

    /// Reads an HTTP response head; bytes after it stay buffered.
    #[track_caller]
    pub fn read_response_head(&mut self) -> HttpResponse {
        self.try_read_response_head()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads an HTTP response head, or says why there is none.
    pub fn try_read_response_head(&mut self) -> Result<HttpResponse, String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(HttpResponse::parse(&head[..end]));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(format!("response head over {MAX_HEAD} bytes"));
            }
            let got = String::from_utf8_lossy(&self.buf).into_owned();
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "server closed the connection before a full response head: {got:?}"
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("no response head ({e}); got {got:?}")),
            }
        }
    }

    /// Everything until the server closes TCP (EOF or reset); panics on timeout.
    #[track_caller]
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_reset(&e) => break,
                Err(e) => panic!(
                    "server kept the connection open ({e}) after {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                ),
            }
        }
        std::mem::take(&mut self.buf)
    }
}

/// Sends `bytes` on a fresh upgraded connection and expects a close with `code`, then
/// finishes the close handshake and expects TCP closed. `what` names the case.
#[track_caller]
pub fn assert_rejected(server: &Server, what: &str, bytes: &[u8], code: u16) {
    let mut client = RawClient::open(server);
    client.send_lenient(bytes);
    let frame = match client.next_frame() {
        Ok(Some(frame)) => frame,
        Ok(None) => panic!("{what}: server closed TCP without a close frame; sent {bytes:02x?}"),
        Err(e) => panic!("{what}: no close frame ({e}); sent {bytes:02x?}"),
    };
    assert!(
        frame.opcode == OP_CLOSE && frame.close_code() == Some(code),
        "{what}: expected close {code}, got {frame:?}; sent {bytes:02x?}"
    );
    client.finish_close(code);
}

// ---------------------------------------------------------------------------------------
// tungstenite clients

pub type Ws = tungstenite::WebSocket<TcpStream>;

/// A tungstenite client connected to `ws://ADDR/`.
#[track_caller]
pub fn connect_ws(server: &Server) -> Ws {
    connect_ws_to(server, "/")
}

/// A tungstenite client connected to `ws://ADDR<target>` (a room path, a query).
#[track_caller]
pub fn connect_ws_to(server: &Server, target: &str) -> Ws {
    let stream = tcp_connect(server.addr);
    let url = format!("ws://{}{target}", server.addr);
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            ws
        }
        Err(e) => panic!("tungstenite handshake with {url}: {e}"),
    }
}

/// The next data or close message; pings and pongs are skipped (tungstenite answers
/// pings itself).
#[track_caller]
pub fn ws_recv(ws: &mut Ws) -> Message {
    for _ in 0..1000 {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(message) => return message,
            Err(e) => panic!("websocket read: {e}"),
        }
    }
    panic!("1000 pings/pongs in a row");
}

#[track_caller]
pub fn ws_recv_text(ws: &mut Ws) -> String {
    match ws_recv(ws) {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[track_caller]
pub fn ws_send(ws: &mut Ws, message: Message) {
    if let Err(e) = ws.send(message) {
        panic!("websocket send: {e}");
    }
}

/// Runs the close handshake from the client side and waits for the server to close.
#[track_caller]
pub fn ws_close(ws: &mut Ws) {
    if let Err(e) = ws.close(None) {
        panic!("websocket close: {e}");
    }
    for _ in 0..1000 {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(e) => panic!("websocket closing: {e}"),
        }
    }
    panic!("server kept sending after our close");
}
