//! One connection's state machine, sans IO: bytes and `now` in, bytes and events out.
//!
//! Drive it like this: feed what the socket read to [`Conn::handle_bytes`], its end-of-stream
//! to [`Conn::handle_eof`], expired deadlines to [`Conn::handle_timeout`]; write what
//! [`Conn::io_slices`] returns and report it with [`Conn::handle_written`]; when
//! [`Conn::handle_flushed`] says so, shut down the socket's write half; drop the socket once
//! [`Conn::is_done`]. Every state transition lives in this file.
//!
//! ```text
//! Handshake --upgrade--> Open --peer close / error--> Flushing --written--> Lingering --EOF--> Done
//!     |  \--GET page--> Responding --respond()--> Flushing        ^
//!     |                  Open --close()--> Closing --peer close---/
//!     \--bad request, foreign Origin (403), over a limit (503) / timeout--> Flushing / Done
//! Flushing or Responding --peer EOF with output queued--> Draining --written--> Done
//! Open --silent for ping_interval--> Open (pinged) --silent for pong_timeout--> Done
//! ```
//!
//! A plain connection ([`Conn::new_plain`]) takes the `GET` path for an upgrade request too.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::origin::OriginPolicy;
use crate::proto::deflate::{Deflater, Inflater};
use crate::proto::handshake::{self, Forwarded, Method, Request, Upgrade};
use crate::proto::{
    CloseCode, HandshakeError, Limits, Message, OpCode, ProtoError, Reader, close, frame,
};

/// Largest request body read: a chat message sent by `POST` (64 + 4000 characters of up to 4
/// bytes each, JSON-escaped) fits; anything larger is answered 413 before a byte is buffered.
pub const MAX_BODY: u64 = 32 * 1024;

/// How long a connection refused at accept may take to read its answer before it is dropped.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Per-server settings every connection is driven with (kept once, not per connection).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Message size and fragment limits (§10.4).
    pub limits: Limits,
    /// Bytes of queued output a connection may hold before it is closed as a slow consumer.
    pub max_output: usize,
    /// Largest request head accepted.
    pub max_handshake: usize,
    /// Time allowed from accept to a complete request head.
    pub handshake_timeout: Duration,
    /// Time allowed for the closing handshake and the last writes.
    pub close_timeout: Duration,
    /// Silence after which an open connection is pinged (§5.5.2).
    pub ping_interval: Duration,
    /// Time a pinged connection has to send anything (a pong will do) before it is dropped.
    pub pong_timeout: Duration,
    /// Which pages may open a WebSocket (§10.2).
    pub origins: OriginPolicy,
    /// A path served by a layer of its own (Engine.IO's `/socket.io/`), if any.
    pub mount: Option<Mount>,
    /// Whether permessage-deflate (RFC 7692) is negotiated with clients that offer it.
    pub deflate: bool,
}

/// Requests under a path prefix that a layer above answers whole: every method reaches the
/// application (elsewhere only GET and POST do; others are answered 405 here), and a `POST`
/// body may be up to `max_body` bytes instead of [`MAX_BODY`] (Engine.IO's `maxPayload`).
#[derive(Debug, Clone, Copy)]
pub struct Mount {
    /// The path prefix, e.g. `/socket.io/`.
    pub prefix: &'static str,
    /// The largest `POST` body read under it.
    pub max_body: u64,
}

/// A server data frame (or several back to back), encoded once for all its receivers: plain,
/// and compressed (RFC 7692) for receivers that negotiated permessage-deflate, made when the
/// first of them needs it and shared by the rest. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Frame(Rc<Encodings>);

#[derive(Debug)]
struct Encodings {
    plain: Rc<[u8]>,
    /// For a batch, the frames `plain` holds, in order; empty for a single frame.
    parts: Vec<Frame>,
    /// Compressed encodings made so far, by window bits; `None`: the plain bytes (nothing in
    /// it was worth compressing). At most one entry per window size in use.
    deflated: RefCell<Vec<Deflated>>,
}

/// One compressed encoding: its window bits, and its bytes (`None`: the plain ones).
type Deflated = (u8, Option<Rc<[u8]>>);

impl Frame {
    /// One whole encoded frame.
    pub fn new(plain: Rc<[u8]>) -> Self {
        Self::batch(plain, Vec::new())
    }

    /// `plain`, the frames of `parts` back to back: each part is compressed at most once,
    /// whether it goes out alone or in batches.
    pub fn batch(plain: Rc<[u8]>, parts: Vec<Frame>) -> Self {
        Self(Rc::new(Encodings {
            plain,
            parts,
            deflated: RefCell::new(Vec::new()),
        }))
    }

    /// The uncompressed bytes.
    pub fn plain(&self) -> &Rc<[u8]> {
        &self.0.plain
    }

    /// The bytes for a receiver whose [`Conn::deflate`] is `deflate`, and whether any of them
    /// are compressed; compresses with `deflater` the first time a window size needs it.
    pub fn encoded(&self, deflate: Option<u8>, deflater: &mut Deflater) -> (Rc<[u8]>, bool) {
        let plain = || (self.0.plain.clone(), false);
        let Some(bits) = deflate else {
            return plain();
        };
        let known = self
            .0
            .deflated
            .borrow()
            .iter()
            .find(|e| e.0 == bits)
            .cloned();
        let made = match known {
            Some((_, made)) => made,
            None => {
                let made = if self.0.parts.is_empty() {
                    deflater.frame(&self.0.plain, bits).map(Rc::from)
                } else {
                    let mut any = false;
                    let mut out = Vec::with_capacity(self.0.plain.len());
                    for part in &self.0.parts {
                        let (bytes, compressed) = part.encoded(deflate, deflater);
                        any |= compressed;
                        out.extend_from_slice(&bytes);
                    }
                    any.then(|| Rc::from(out))
                };
                self.0.deflated.borrow_mut().push((bits, made.clone()));
                made
            }
        };
        made.map_or_else(plain, |bytes| (bytes, true))
    }
}

/// Bytes queued for a peer: shared broadcast frames, static page bodies or owned replies.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// A frame encoded once and shared by every receiver.
    Shared(Rc<[u8]>),
    /// Bytes built into the binary (the chat page).
    Static(&'static [u8]),
    /// Bytes for this connection only.
    Owned(Box<[u8]>),
    /// An HTTP response head (the 101 too): never dropped, everything after depends on it.
    Head(Box<[u8]>),
    /// Small frames queued back to back, copied into one buffer (see [`Outbox::push`]).
    Frames(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Shared(b) => b,
            Self::Static(b) => b,
            Self::Owned(b) | Self::Head(b) => b,
            Self::Frames(b) => b,
        }
    }
}

/// Frames up to this size are copied into a [`Chunk::Frames`] buffer when another small frame
/// is queued behind them in a long queue; larger ones keep a slot of their own. A slot costs 24
/// bytes, so no chunk costs more than 1/20 of its bytes again in bookkeeping, and a queue
/// within a budget of B bytes holds at most about `COALESCE_AFTER` + B/256 slots, however small
/// the frames.
const SMALL_FRAME: usize = 512;

/// Chunks a queue holds before small frames are coalesced: one `write_vectored` call's worth
/// (the event loop writes 64 slices at a time). Shorter queues, the usual case, keep each
/// shared frame as it is: copying them cost the 100-subscriber fan-out bench ~8 %.
const COALESCE_AFTER: usize = 64;

/// Largest [`Chunk::Frames`] buffer: a few `write_vectored` slices' worth (the kernel takes
/// about 64 KiB per write on loopback), small enough that the copy into it stays in cache.
const FRAMES_MAX: usize = 16 * 1024;

/// What a connection tells the application.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The opening handshake completed; the peer may now send and receive messages.
    Upgraded {
        /// The request target.
        path: &'a str,
    },
    /// A plain HTTP request, with its whole body; answer it with [`Conn::respond`], at once
    /// or (a long poll) after [`Conn::hold`].
    Request {
        /// `GET` or `POST` (any method under [`Settings::mount`]).
        method: Method,
        /// The request target.
        path: &'a str,
        /// The body of a `POST` (empty for a `GET`).
        body: &'a [u8],
        /// Sent for a page of another site that the Origin policy does not admit, without
        /// `Origin` (`Sec-Fetch-Site: cross-site`): it may read, not act as a client.
        foreign: bool,
        /// The `Origin` of the page that sent it, which the Origin policy admitted (for a
        /// CORS answer).
        origin: Option<&'a [u8]>,
        /// `Access-Control-Request-Headers`, in a CORS preflight.
        request_headers: Option<&'a [u8]>,
    },
    /// A complete text message.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// The request was refused with this HTTP status (the response is queued).
    Refused {
        /// 400, 403, 405, 411, 413, 426, 431 or 503.
        status: u16,
        /// For a 403, the `Origin` that was refused and the `Host` it was compared with, so
        /// the operator can be told which `--allow-origin` would admit it.
        origin: Option<(&'a [u8], Option<&'a [u8]>)>,
    },
    /// The connection queued a close frame of its own accord: an echo of the peer's close, or
    /// a protocol violation (§7.4.1).
    CloseSent(CloseCode),
}

/// The event loop's answer once a request head is complete, from the callback of
/// [`Conn::handle_bytes_admitting`]: only the head names the client behind a trusted proxy,
/// so only then can its per-address limit be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go on with the request.
    Yes,
    /// Answer 503 with this reason, then close (a limit only the head could tell).
    Unavailable(&'static str),
    /// Close without an answer: over a limit, and refusals are at their cap.
    Close,
}

/// What an expired deadline did, from [`Conn::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The request head did not arrive in time: the socket is dropped.
    Handshake,
    /// An open connection was silent for `ping_interval`: a ping is queued.
    Pinged,
    /// A pinged connection sent nothing for `pong_timeout`: the socket is dropped.
    Idle,
    /// A closing handshake or the last writes took too long: the socket is dropped.
    Closing,
}

/// The outcome of [`Conn::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued.
    Queued,
    /// Not queued: the connection is not open.
    NotOpen,
    /// Over the output budget: the connection is now closing with 1008.
    Overflow,
}

/// Where the connection is; each variant says what the peer may do next.
#[derive(Debug)]
enum State {
    /// Reading the HTTP request head; `buf` holds it only when it spans reads. `plain`: an
    /// upgrade is not offered here, and a request for one is answered as a plain `GET`.
    Handshake { buf: Vec<u8>, plain: bool },
    /// Reading the `need` more bytes of a `POST` body (at most [`MAX_BODY`] in all, or the
    /// mount's limit); boxed, as only a request with a body pays for it.
    Body(Box<BodyState>),
    /// A plain HTTP request was read; the application owes a response.
    Responding,
    /// WebSocket messages flow both ways. `pinged`: the peer went silent, was pinged, and has
    /// sent nothing since; the next deadline drops it. `deflate`: permessage-deflate was
    /// negotiated, with our window at most 2^this (RFC 7692 §7.1.2.1). (Both sit beside the
    /// enum's tag, where they cost no bytes.)
    Open {
        reader: Reader,
        pinged: bool,
        deflate: Option<u8>,
    },
    /// We sent a close frame; reading until the peer's close (§7.1.2). `Some`: as in `Open`.
    Closing(Reader, Option<u8>),
    /// The last bytes are queued; the write half closes once they are written.
    Flushing,
    /// The write half is shut; reading until the peer closes, so no reset loses our last bytes.
    Lingering,
    /// The peer stopped sending; the last bytes are written, then the socket is dropped.
    Draining,
    /// Nothing left to do: drop the socket.
    Done,
}

/// A request whose body is being read.
#[derive(Debug)]
struct BodyState {
    method: Method,
    target: Box<str>,
    body: Vec<u8>,
    need: usize,
    foreign: bool,
    origin: Option<Box<[u8]>>,
}

/// Queued output: chunks, how much of the front one is written, and the total unwritten.
///
/// Invariants: `queued` is the sum of the chunks' lengths minus `offset`; `offset` is less
/// than the front chunk's length (0 when the queue is empty).
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Chunk>,
    /// Bytes of `queue[0]` already written.
    offset: usize,
    /// Unwritten bytes in the queue.
    queued: usize,
}

impl Outbox {
    /// Queues `chunk`. In a queue of [`COALESCE_AFTER`] chunks or more, a small frame behind
    /// another small one is copied onto it (into a [`Chunk::Frames`] buffer of at most
    /// [`FRAMES_MAX`]), so a burst of tiny frames takes a few slots instead of one each; other
    /// frames are queued as they are (a shared frame then costs no copy). HTTP heads are never
    /// merged: they are kept when a backlog is dropped.
    fn push(&mut self, chunk: Chunk) {
        let len = chunk.bytes().len();
        self.queued += len;
        if len <= SMALL_FRAME
            && self.queue.len() >= COALESCE_AFTER
            && !matches!(chunk, Chunk::Head(_))
        {
            match self.queue.back_mut() {
                Some(Chunk::Frames(buf)) if buf.len() + len <= FRAMES_MAX => {
                    buf.extend_from_slice(chunk.bytes());
                    return;
                }
                Some(back @ (Chunk::Shared(_) | Chunk::Owned(_)))
                    if back.bytes().len() <= SMALL_FRAME =>
                {
                    // The back chunk's bytes move into the buffer unchanged, so a write
                    // offset into it (when it is also the front) stays valid.
                    let mut buf = Vec::with_capacity((2 * (back.bytes().len() + len)).max(256));
                    buf.extend_from_slice(back.bytes());
                    buf.extend_from_slice(chunk.bytes());
                    *back = Chunk::Frames(buf);
                    return;
                }
                _ => {}
            }
        }
        self.queue.push_back(chunk);
    }

    /// Whether queueing `len` more bytes would take the queue over `budget`: the budget is in
    /// bytes the peer has not taken (bookkeeping stays a small fraction of it, see
    /// [`SMALL_FRAME`]). One chunk is always accepted into an empty queue: the budget bounds
    /// the backlog, not the message size (which `limits.max_message` bounds).
    fn over_budget(&self, len: usize, budget: usize) -> bool {
        !self.queue.is_empty() && self.queued + len > budget
    }

    fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut buf = Vec::with_capacity(payload.len() + 4);
        frame::encode_frame(opcode, payload, &mut buf);
        self.push(Chunk::Owned(buf.into_boxed_slice()));
    }

    /// Drops every frame not yet started, keeping a partly written one so framing stays valid,
    /// and any HTTP head.
    fn drop_unstarted(&mut self) {
        let started = self.offset > 0;
        let mut i = 0;
        self.queue.retain(|c| {
            i += 1;
            (i == 1 && started) || matches!(c, Chunk::Head(_))
        });
        // A started buffer of small frames keeps only the frame being written.
        if started
            && let Some(Chunk::Frames(buf)) = self.queue.front_mut()
            && let Some(end) = frame_end(buf, self.offset)
        {
            buf.truncate(end);
        }
        let total: usize = self.queue.iter().map(|c| c.bytes().len()).sum();
        self.queued = total.saturating_sub(self.offset);
    }

    fn advance(&mut self, mut n: usize) {
        self.queued = self.queued.saturating_sub(n);
        while let Some(front) = self.queue.front() {
            let left = front.bytes().len().saturating_sub(self.offset);
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.queue.pop_front();
        }
        // All queued output is written: give back the queue's memory.
        self.queue = VecDeque::new();
    }
}

/// The end of the frame holding byte `at` of `frames` (whole server frames, back to back).
fn frame_end(frames: &[u8], at: usize) -> Option<usize> {
    let mut pos = 0;
    while pos <= at {
        let (head, head_len) = frame::decode_head(frames.get(pos..)?, u64::MAX).ok()??;
        let len = usize::try_from(head.payload_len).ok()?;
        pos = pos.checked_add(head_len)?.checked_add(len)?;
    }
    Some(pos)
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    state: State,
    out: Outbox,
    deadline: Option<Instant>,
}

// An idle connection holds no heap memory, so this is most of what it costs; keep it visible.
const _: () = assert!(size_of::<Conn>() <= 120);

impl Conn {
    /// A connection just accepted at `now`.
    pub fn new(now: Instant, settings: &Settings) -> Self {
        Self {
            state: State::Handshake {
                buf: Vec::new(),
                plain: false,
            },
            out: Outbox::default(),
            deadline: Some(now + settings.handshake_timeout),
        }
    }

    /// A connection just accepted at `now` that serves plain HTTP only (the admin listener):
    /// it never upgrades, so it can never become a WebSocket.
    pub fn new_plain(now: Instant, settings: &Settings) -> Self {
        let mut conn = Self::new(now, settings);
        conn.state = State::Handshake {
            buf: Vec::new(),
            plain: true,
        };
        conn
    }

    /// A connection accepted over a connection limit: answered with `err` (a 503) at once,
    /// before any request is read (a server may answer early, RFC 9112 §9.5), so the client
    /// learns why instead of seeing a reset; dropped within [`REFUSAL_LINGER`], so refused
    /// clients hold no slot for long.
    pub fn new_refused(now: Instant, err: HandshakeError) -> Self {
        let mut head = Vec::with_capacity(200);
        handshake::write_refusal(&err, &mut head);
        let mut out = Outbox::default();
        out.push(Chunk::Head(head.into_boxed_slice()));
        Self {
            state: State::Flushing,
            out,
            deadline: Some(now + REFUSAL_LINGER),
        }
    }

    /// Whether WebSocket messages may be sent to this connection.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// For a connection that negotiated permessage-deflate, the base-2 logarithm of the
    /// largest window its messages may be compressed with (8-15, RFC 7692 §7.1.2.1).
    pub fn deflate(&self) -> Option<u8> {
        match self.state {
            State::Open { deflate, .. } => deflate,
            _ => None,
        }
    }

    /// Whether the socket can be dropped.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether the socket should be read (false once the peer's end of stream was seen).
    pub fn wants_read(&self) -> bool {
        !matches!(self.state, State::Done | State::Draining)
    }

    /// Whether output is waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.out.queued > 0
    }

    /// Unwritten output bytes.
    pub fn queued(&self) -> usize {
        self.out.queued
    }

    /// The earliest time [`Conn::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Processes bytes read from the peer, unmasking them in place, up to and including the
    /// first event for the application; returns how many bytes were used. Call again with the
    /// rest, so that what the application sends in reply is queued before anything the
    /// connection sends later (an echo before the close that a later bad frame causes).
    /// `inflater`, shared by every connection, inflates compressed messages.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        input: &mut [u8],
        settings: &Settings,
        inflater: &mut Inflater,
        on: &mut impl FnMut(Event<'_>),
    ) -> usize {
        self.handle_bytes_admitting(now, input, settings, inflater, &mut |_| Admit::Yes, on)
    }

    /// [`Conn::handle_bytes`], asking `admit` once the request head is complete (before it is
    /// answered or any event is sent) whether to go on, given what a proxy said about its
    /// client.
    pub fn handle_bytes_admitting(
        &mut self,
        now: Instant,
        input: &mut [u8],
        settings: &Settings,
        inflater: &mut Inflater,
        admit: &mut impl FnMut(&Forwarded<'_>) -> Admit,
        on: &mut impl FnMut(Event<'_>),
    ) -> usize {
        match &mut self.state {
            State::Handshake { .. } => self.handle_handshake(now, input, settings, admit, on),
            State::Open { pinged, .. } => {
                // Anything from the peer shows it is alive: the idle clock starts over. Moving
                // the deadline later costs the event loop nothing (its timer is re-armed lazily).
                *pinged = false;
                self.deadline = Some(now + settings.ping_interval);
                self.handle_frames(now, input, settings, inflater, on)
            }
            State::Closing(..) => self.handle_frames(now, input, settings, inflater, on),
            State::Body(_) => self.handle_body(input, on),
            // Bytes after a request and bytes after a close are ignored (§5.5.1: after sending a
            // Close frame the endpoint "MUST NOT send any more data frames"; reads are moot).
            State::Responding
            | State::Flushing
            | State::Lingering
            | State::Draining
            | State::Done => input.len(),
        }
    }

    /// The peer closed its write half (read returned 0).
    pub fn handle_eof(&mut self) {
        match self.state {
            // A close echo or HTTP response still queued is written before the socket goes:
            // a client may send its request or close frame and shut down in one breath.
            State::Flushing | State::Responding if self.out.queued > 0 => {
                self.state = State::Draining;
            }
            // Without a close frame this is an abnormal closure (1006, §7.1.5): nothing to send.
            _ => {
                self.state = State::Done;
                self.deadline = None;
            }
        }
    }

    /// The socket failed (reset, broken pipe): nothing more can be read or written.
    pub fn handle_error(&mut self) {
        self.state = State::Done;
        self.deadline = None;
    }

    /// Acts on an expired deadline; a no-op (`None`) when `now` is before it.
    pub fn handle_timeout(&mut self, now: Instant, settings: &Settings) -> Option<Expired> {
        if self.deadline.is_none_or(|d| d > now) {
            return None;
        }
        let expired = match &mut self.state {
            // §5.5.2: a Ping "MAY be sent … as a means to verify that the remote endpoint is
            // still responsive"; §5.5.2 also obliges the peer to answer it with a Pong.
            State::Open { pinged, .. } if !*pinged => {
                *pinged = true;
                self.out.push_frame(OpCode::Ping, b"");
                self.deadline = Some(now + settings.pong_timeout);
                return Some(Expired::Pinged);
            }
            State::Open { .. } => Expired::Idle,
            State::Handshake { .. } => Expired::Handshake,
            _ => Expired::Closing,
        };
        // Every other deadline ends the same way: the peer was too slow; no more bytes for it.
        self.state = State::Done;
        self.deadline = None;
        Some(expired)
    }

    /// Fills `slices` with queued output, front first; returns how many were filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, (slot, chunk)) in slices.iter_mut().zip(&self.out.queue).enumerate() {
            let bytes = chunk.bytes();
            *slot = IoSlice::new(if i == 0 {
                bytes.get(self.out.offset..).unwrap_or_default()
            } else {
                bytes
            });
            n += 1;
        }
        n
    }

    /// The unwritten bytes of the only queued chunk, when exactly one is queued.
    pub fn sole_chunk(&self) -> Option<&[u8]> {
        match self.out.queue.len() {
            1 => self.out.queue.front()?.bytes().get(self.out.offset..),
            _ => None,
        }
    }

    /// Records that `n` bytes of output were written.
    pub fn handle_written(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// Called when the output is fully written; returns true when the socket's write half
    /// should now be shut down (the last bytes of a close or an HTTP response went out).
    pub fn handle_flushed(&mut self, now: Instant, settings: &Settings) -> bool {
        if self.out.queued > 0 {
            return false;
        }
        match self.state {
            State::Flushing => {
                self.state = State::Lingering;
                // The deadline set when the last bytes were queued still bounds the whole
                // goodbye (a refusal's is short).
                let linger = now + settings.close_timeout;
                self.deadline = Some(self.deadline.map_or(linger, |d| d.min(linger)));
                true
            }
            State::Draining => {
                self.state = State::Done;
                self.deadline = None;
                false
            }
            _ => false,
        }
    }

    /// Queues a data frame for the peer, within its output budget.
    pub fn send(&mut self, now: Instant, frame: Chunk, settings: &Settings) -> Sent {
        self.send_behind(now, frame, settings, 0)
    }

    /// [`Conn::send`] when `below` bytes made from earlier output (TLS records) still wait
    /// for the socket: they count against the budget too, since the peer has not taken them.
    pub fn send_behind(
        &mut self,
        now: Instant,
        frame: Chunk,
        settings: &Settings,
        below: usize,
    ) -> Sent {
        if !self.is_open() {
            return Sent::NotOpen;
        }
        let len = frame.bytes().len();
        if self.out.over_budget(len, settings.max_output)
            || (below > 0 && self.out.queued + below + len > settings.max_output)
        {
            self.overflow(now, settings);
            return Sent::Overflow;
        }
        self.out.push(frame);
        Sent::Queued
    }

    /// Keeps a request waiting for its response until `until` at most (a long poll); the
    /// application must [`Conn::respond`] before then or the connection is dropped.
    pub fn hold(&mut self, until: Instant) {
        if matches!(self.state, State::Responding) {
            self.deadline = Some(until);
        }
    }

    /// Whether a plain HTTP request waits for its response.
    pub fn is_responding(&self) -> bool {
        matches!(self.state, State::Responding)
    }

    /// Answers a plain HTTP request with `head` then `body`; the connection closes after it.
    pub fn respond(
        &mut self,
        now: Instant,
        head: Vec<u8>,
        body: &'static [u8],
        settings: &Settings,
    ) {
        if matches!(self.state, State::Responding) {
            self.out.push(Chunk::Head(head.into_boxed_slice()));
            if !body.is_empty() {
                self.out.push(Chunk::Static(body));
            }
            self.state = State::Flushing;
            self.deadline = Some(now + settings.close_timeout);
        }
    }

    /// Answers a WebSocket handshake the application refuses after all (Engine.IO's checks of
    /// its query) with `response`, a whole HTTP response, instead of the 101 queued at
    /// [`Event::Upgraded`]; the connection closes after it. Only right after that event,
    /// before any output is written; later it fails the connection with 1008 instead.
    pub fn refuse_upgrade(&mut self, now: Instant, response: Vec<u8>, settings: &Settings) {
        let unwritten = self.out.offset == 0
            && self.out.queue.len() == 1
            && matches!(self.out.queue.front(), Some(Chunk::Head(_)));
        if !(unwritten && self.is_open()) {
            return self.fail(now, CloseCode::POLICY, "refused", settings);
        }
        self.out = Outbox::default();
        self.out.push(Chunk::Head(response.into_boxed_slice()));
        self.state = State::Flushing;
        self.deadline = Some(now + settings.close_timeout);
    }

    /// Starts the closing handshake with `code` (§7.1.2); the peer's close is awaited.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str, settings: &Settings) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Open {
                reader, deflate, ..
            } => {
                self.queue_close(code, reason);
                self.state = State::Closing(reader, deflate);
                self.deadline = Some(now + settings.close_timeout);
            }
            // Not yet a WebSocket: nothing to say goodbye with.
            State::Handshake { .. } | State::Body(_) | State::Responding => {
                self.deadline = None;
            }
            other => self.state = other,
        }
    }

    /// Fails the WebSocket connection (§7.1.7): a close frame with `code`, then the TCP close.
    pub fn fail(&mut self, now: Instant, code: CloseCode, reason: &str, settings: &Settings) {
        if let State::Open { .. } | State::Closing(..) = self.state {
            if matches!(self.state, State::Open { .. }) {
                self.queue_close(code, reason);
            }
            self.state = State::Flushing;
            self.deadline = Some(now + settings.close_timeout);
        }
    }

    /// Closes a peer that does not read what it is sent: its backlog is dropped (all but a
    /// partly written frame) so the close frame goes out next (1008, §7.4.1).
    fn overflow(&mut self, now: Instant, settings: &Settings) {
        self.out.drop_unstarted();
        self.fail(now, CloseCode::POLICY, "slow consumer", settings);
    }

    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = Vec::with_capacity(125);
        close::encode(code, reason, &mut payload);
        self.out.push_frame(OpCode::Close, &payload);
    }

    fn handle_handshake(
        &mut self,
        now: Instant,
        input: &mut [u8],
        settings: &Settings,
        admit: &mut impl FnMut(&Forwarded<'_>) -> Admit,
        on: &mut impl FnMut(Event<'_>),
    ) -> usize {
        let State::Handshake { buf, .. } = &mut self.state else {
            return 0;
        };
        let max = settings.max_handshake;
        // The common case: the whole head in one read, parsed where it lies.
        if buf.is_empty() {
            return match handshake::parse(input, max) {
                Ok(None) => {
                    buf.extend_from_slice(input); // parse checked input.len() < max
                    input.len()
                }
                Ok(Some((req, len))) => {
                    self.accept(now, req, settings, admit, on);
                    len
                }
                Err(e) => {
                    self.refuse(now, &e, None, settings, on);
                    input.len()
                }
            };
        }
        // The head spans reads: copy no more than the cap allows, then parse the copy. Earlier
        // reads held no complete head, so the head ends inside this read.
        let before = buf.len();
        let take = input.len().min(max.saturating_sub(before) + 1);
        buf.extend_from_slice(input.get(..take).unwrap_or_default());
        // Re-parsing the whole copy on every read would make a client that sends one byte at
        // a time cost O(n²): parse only once the empty line that ends a head (RFC 9112 §2.2
        // allows bare LF) may have arrived, or the cap is reached.
        let fresh = buf.get(before.saturating_sub(3)..).unwrap_or_default();
        let may_end =
            fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
        if !may_end && buf.len() < max {
            return take;
        }
        let owned = std::mem::take(buf);
        match handshake::parse(&owned, max) {
            Ok(None) => {
                if let State::Handshake { buf, .. } = &mut self.state {
                    *buf = owned;
                }
                take
            }
            Ok(Some((req, len))) => {
                self.accept(now, req, settings, admit, on);
                len.saturating_sub(before)
            }
            Err(e) => {
                self.refuse(now, &e, None, settings, on);
                input.len()
            }
        }
    }

    /// Acts on a complete request head.
    fn accept(
        &mut self,
        now: Instant,
        req: Request<'_>,
        settings: &Settings,
        admit: &mut impl FnMut(&Forwarded<'_>) -> Admit,
        on: &mut impl FnMut(Event<'_>),
    ) {
        match admit(req.forwarded()) {
            Admit::Yes => {}
            Admit::Unavailable(why) => {
                self.refuse(now, &HandshakeError::Unavailable(why), None, settings, on);
                // Like a refusal at accept: a second to read the answer, not the close timeout,
                // so refusals in flight stay few.
                self.deadline = Some(now + REFUSAL_LINGER);
                return;
            }
            Admit::Close => {
                self.state = State::Done;
                self.deadline = None;
                return;
            }
        }
        let plain = matches!(self.state, State::Handshake { plain: true, .. });
        // The mount takes any method and its own body size (never on a plain connection).
        let mount = match &req {
            Request::Http { path, .. } if !plain => {
                settings.mount.filter(|m| path.starts_with(m.prefix))
            }
            _ => None,
        };
        let max_body = mount.map_or(MAX_BODY, |m| m.max_body);
        match req {
            // §10.2: "servers that are not intended to process input from any web page but only
            // for certain sites SHOULD verify the |Origin| field"; 403 as §4.2.2 suggests.
            Request::Upgrade(up) if !settings.origins.allows(up.origin, up.host) => {
                let compared = up.origin.map(|o| (o, up.host));
                self.refuse(
                    now,
                    &HandshakeError::ForbiddenOrigin,
                    compared,
                    settings,
                    on,
                );
            }
            // RFC 9110 §7.8: a server "MAY ignore a received Upgrade header field if it wishes to
            // continue using the current protocol"; the client then sees no 101 (§4.1).
            Request::Upgrade(up) if plain => {
                self.state = State::Responding;
                self.deadline = Some(now + settings.close_timeout);
                on(Event::Request {
                    method: Method::Get,
                    path: up.path,
                    body: &[],
                    // Its Origin passed the check above; a WebSocket client sends none else.
                    foreign: false,
                    origin: up.origin,
                    request_headers: None,
                });
            }
            // RFC 6455 §4.2.1 item 9 and §9.1: a Sec-WebSocket-Extensions that is not an
            // extension list is a handshake that does not match the description: 400. Only
            // looked at when the extension is on, as before it was.
            Request::Upgrade(Upgrade {
                deflate: Err(_), ..
            }) if settings.deflate => {
                let why = HandshakeError::BadRequest("malformed Sec-WebSocket-Extensions");
                self.refuse(now, &why, None, settings, on);
            }
            Request::Upgrade(up) => {
                let agreed = up.deflate.ok().flatten().filter(|_| settings.deflate);
                let mut head = Vec::with_capacity(256);
                handshake::write_accept(&up.accept, agreed.as_ref(), &mut head);
                self.out.push(Chunk::Head(head.into_boxed_slice()));
                self.state = State::Open {
                    reader: Reader::new(),
                    pinged: false,
                    deflate: agreed.map(|a| a.window_bits()),
                };
                self.deadline = Some(now + settings.ping_interval);
                on(Event::Upgraded { path: up.path });
            }
            // §10.2 for the HTTP side too: a page from another site may not post into a room
            // or poll as a guest, though a browser sends such requests without asking (CORS
            // "simple requests"). Requests without `Origin` are not from such pages.
            Request::Http { origin, host, .. } if !settings.origins.allows(origin, host) => {
                let compared = origin.map(|o| (o, host));
                self.refuse(
                    now,
                    &HandshakeError::ForbiddenOrigin,
                    compared,
                    settings,
                    on,
                );
            }
            // Only GET and POST are served outside the mount (RFC 9110 §15.5.6).
            Request::Http {
                method: Method::Options | Method::Other,
                ..
            } if mount.is_none() => {
                self.refuse(now, &HandshakeError::MethodNotAllowed, None, settings, on);
            }
            Request::Http { body_len, .. } if body_len > max_body => {
                self.refuse(now, &HandshakeError::ContentTooLarge, None, settings, on);
            }
            Request::Http {
                method,
                path,
                body_len: 0,
                origin,
                request_headers,
                cross_site,
                ..
            } => {
                self.state = State::Responding;
                self.deadline = Some(now + settings.close_timeout);
                on(Event::Request {
                    method,
                    path,
                    body: &[],
                    foreign: foreign(cross_site, origin, settings),
                    origin,
                    request_headers,
                });
            }
            Request::Http {
                method,
                path,
                body_len,
                origin,
                cross_site,
                ..
            } => {
                // At most `max_body` (checked above); the buffer grows as the bytes come, so a
                // head alone does not make the server reserve it.
                let need = usize::try_from(body_len).unwrap_or(0);
                self.state = State::Body(Box::new(BodyState {
                    method,
                    target: path.into(),
                    body: Vec::new(),
                    need,
                    foreign: foreign(cross_site, origin, settings),
                    origin: origin.map(Box::from),
                }));
                // The handshake deadline still runs: the body is part of the request.
            }
        }
    }

    /// Collects a request body; once whole, hands the request to the application.
    fn handle_body(&mut self, input: &[u8], on: &mut impl FnMut(Event<'_>)) -> usize {
        let State::Body(b) = &mut self.state else {
            return 0;
        };
        let take = input.len().min(b.need);
        b.body
            .extend_from_slice(input.get(..take).unwrap_or_default());
        b.need -= take;
        if b.need > 0 {
            return take;
        }
        if let State::Body(b) = std::mem::replace(&mut self.state, State::Responding) {
            // The deadline set for the request (handshake) now bounds the response.
            on(Event::Request {
                method: b.method,
                path: &b.target,
                body: &b.body,
                foreign: b.foreign,
                origin: b.origin.as_deref(),
                request_headers: None,
            });
        }
        // Bytes after the body (pipelined requests) are not read: one request per connection.
        input.len()
    }

    /// Answers the request with the status for `err`, then closes; `origin` as in
    /// [`Event::Refused`].
    fn refuse<'a>(
        &mut self,
        now: Instant,
        err: &HandshakeError,
        origin: Option<(&'a [u8], Option<&'a [u8]>)>,
        settings: &Settings,
        on: &mut impl FnMut(Event<'_>),
    ) {
        let mut resp = Vec::with_capacity(200);
        handshake::write_refusal(err, &mut resp);
        self.out.push(Chunk::Head(resp.into_boxed_slice()));
        self.state = State::Flushing;
        self.deadline = Some(now + settings.close_timeout);
        on(Event::Refused {
            status: err.status(),
            origin,
        });
    }

    fn handle_frames(
        &mut self,
        now: Instant,
        input: &mut [u8],
        settings: &Settings,
        inflater: &mut Inflater,
        on: &mut impl FnMut(Event<'_>),
    ) -> usize {
        let closing = matches!(self.state, State::Closing(..));
        let (State::Open {
            reader, deflate, ..
        }
        | State::Closing(reader, deflate)) = &mut self.state
        else {
            return 0;
        };
        let deflate = deflate.is_some();
        let mut pos = 0;
        let mut failure: Option<ProtoError> = None;
        let mut overflow = false;
        let mut peer_closed = false;
        let mut echoed = None;
        while let Some(rest) = input.get_mut(pos..) {
            let zlib = deflate.then_some(&mut *inflater);
            let (used, msg) = match reader.next(rest, &settings.limits, zlib) {
                Ok(step) => step,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            pos += used;
            let Some(msg) = msg else { break };
            match msg {
                Message::Close(c) => {
                    if !closing {
                        // §5.5.1: reply with a Close frame, "typically echoing the status code".
                        let mut payload = Vec::with_capacity(2);
                        if let Some(code) = c.code {
                            close::encode(code, "", &mut payload);
                        }
                        self.out.push_frame(OpCode::Close, &payload);
                        // §7.4.1: an empty close is counted as 1005, "no status code present".
                        echoed = Some(c.code.unwrap_or(CloseCode(1005)));
                    }
                    peer_closed = true;
                    break;
                }
                // Once closing, only the peer's close matters (§5.5.1).
                _ if closing => {}
                // §5.5.2: "a Pong frame sent in response MUST have identical Application data".
                // A peer that pings without reading the pongs is a slow consumer like any other.
                Message::Ping(p) if self.out.over_budget(p.len() + 2, settings.max_output) => {
                    overflow = true;
                    break;
                }
                Message::Ping(p) => self.out.push_frame(OpCode::Pong, p),
                Message::Pong(_) => {}
                Message::Text(t) => {
                    on(Event::Text(t));
                    reader.reclaim();
                    return pos;
                }
                Message::Binary(b) => {
                    on(Event::Binary(b));
                    reader.reclaim();
                    return pos;
                }
            }
        }
        reader.reclaim();
        if overflow {
            self.overflow(now, settings);
            on(Event::CloseSent(CloseCode::POLICY));
        } else if let Some(e) = failure {
            if closing {
                self.state = State::Done;
                self.deadline = None;
            } else {
                self.fail(now, e.close_code(), e.as_str(), settings);
                on(Event::CloseSent(e.close_code()));
            }
        } else if peer_closed {
            if let Some(code) = echoed {
                on(Event::CloseSent(code));
            }
            // §7.1.1: the server closes the TCP connection first, once its close frame is out.
            self.state = State::Flushing;
            self.deadline = Some(now + settings.close_timeout);
        }
        // Bytes after an error or a close are not read (§5.5.1).
        input.len()
    }
}

/// Whether a plain request comes from another site's page that the Origin policy does not
/// admit. Such a page's `<img>` or `no-cors` fetch sends no `Origin`, so the policy alone
/// would let it through; Fetch Metadata (`Sec-Fetch-Site`) tells. A request with `Origin` was
/// checked against the policy already.
fn foreign(cross_site: bool, origin: Option<&[u8]>, settings: &Settings) -> bool {
    cross_site && origin.is_none() && !settings.origins.admits_any()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mask::apply_mask;

    fn settings() -> Settings {
        Settings {
            limits: Limits {
                max_message: 1 << 20,
                max_fragments: 16,
            },
            max_output: 1 << 16,
            max_handshake: 8192,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            origins: OriginPolicy::default(),
            mount: Some(Mount {
                prefix: "/socket.io/",
                max_body: 100,
            }),
            deflate: true,
        }
    }

    const UPGRADE: &[u8] = b"GET /room HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let head = frame::FrameHead {
            fin: b0 & 0x80 != 0,
            rsv1: false,
            opcode: OpCode::from_bits(b0).unwrap(),
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        frame::encode_head(&head, &mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key, 0);
        out
    }

    fn written(conn: &mut Conn) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = conn.io_slices(&mut slices);
            if n == 0 {
                break;
            }
            let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            out.extend_from_slice(&bytes);
            conn.handle_written(bytes.len());
        }
        out
    }

    /// Feeds `input` in chunks of `chunk`, recording events as strings.
    fn drive(input: &[u8], chunk: usize) -> (Conn, Vec<String>, Vec<u8>) {
        let s = settings();
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        let mut events = Vec::new();
        for piece in input.chunks(chunk) {
            let mut piece = piece.to_vec();
            let mut pos = 0;
            while pos < piece.len() {
                let used =
                    conn.handle_bytes(now, &mut piece[pos..], &s, &mut Inflater::new(), &mut |e| {
                        events.push(format!("{e:?}"))
                    });
                assert!(used > 0, "no progress");
                pos += used;
            }
        }
        let out = written(&mut conn);
        (conn, events, out)
    }

    #[test]
    fn frames_in_the_same_read_as_the_upgrade_are_processed() {
        let mut input = UPGRADE.to_vec();
        input.extend(client_frame(0x81, b"hi"));
        input.extend(client_frame(0x89, b"p"));
        for chunk in [input.len(), 1, 5, 64] {
            let (conn, events, out) = drive(&input, chunk);
            assert!(conn.is_open());
            assert_eq!(
                events,
                ["Upgraded { path: \"/room\" }", "Text(\"hi\")"],
                "chunk {chunk}"
            );
            assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(
                out.ends_with(&[0x8a, 0x01, b'p']),
                "pong echoes the ping payload"
            );
        }
    }

    /// UPGRADE with a `Sec-WebSocket-Extensions` line.
    fn upgrade_offering(offer: &str) -> Vec<u8> {
        let head = String::from_utf8(UPGRADE.to_vec()).unwrap();
        let line = format!("Host: h\r\nSec-WebSocket-Extensions: {offer}\r\n");
        head.replace("Host: h\r\n", &line).into_bytes()
    }

    #[test]
    fn permessage_deflate_is_negotiated_and_inflated() {
        let mut input = upgrade_offering("permessage-deflate; client_max_window_bits");
        // RFC 7692 §7.2.3.1: "Hello", compressed.
        let mut hello = client_frame(0x81, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        hello[0] |= 0x40;
        input.extend(&hello);
        for chunk in [input.len(), 1, 7] {
            let (conn, events, out) = drive(&input, chunk);
            assert_eq!(events, ["Upgraded { path: \"/room\" }", "Text(\"Hello\")"]);
            assert_eq!(conn.deflate(), Some(15));
            let head = String::from_utf8_lossy(&out);
            assert!(
                head.contains(
                    "\r\nSec-WebSocket-Extensions: permessage-deflate; \
                     server_no_context_takeover; client_no_context_takeover\r\n\r\n"
                ),
                "{head}"
            );
        }
        // The window the client asked for is answered and kept.
        let input = upgrade_offering("permessage-deflate; server_max_window_bits=10");
        let (conn, _, out) = drive(&input, input.len());
        assert!(String::from_utf8_lossy(&out).contains("; server_max_window_bits=10\r\n"));
        assert_eq!(conn.deflate(), Some(10));
        // An offer that must be declined: the connection goes uncompressed, and RSV1 from the
        // client is then a protocol error.
        let mut input = upgrade_offering("permessage-deflate; unknown_parameter");
        input.extend(&hello);
        let (conn, _, out) = drive(&input, input.len());
        assert!(!String::from_utf8_lossy(&out).contains("Extensions"));
        assert!(!conn.is_open());
        assert!(out.ends_with(b"reserved bits set"));
    }

    #[test]
    fn malformed_extensions_are_400_only_with_deflate_on() {
        let input = upgrade_offering("permessage-deflate; a=\"unterminated");
        let (conn, events, out) = drive(&input, input.len());
        assert_eq!(events, ["Refused { status: 400, origin: None }"]);
        assert!(out.starts_with(b"HTTP/1.1 400 "));
        assert!(!conn.is_open());
        let mut s = settings();
        s.deflate = false;
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        let mut z = Inflater::new();
        conn.handle_bytes(now, &mut input.clone(), &s, &mut z, &mut |_| {});
        assert!(conn.is_open() && conn.deflate().is_none());
        let out = written(&mut conn);
        assert!(!String::from_utf8_lossy(&out).contains("Extensions"));
    }

    #[test]
    fn close_is_echoed_then_connection_flushes_and_lingers() {
        let mut input = UPGRADE.to_vec();
        input.extend(client_frame(0x88, &[0x03, 0xe8, b'x']));
        input.extend(client_frame(0x81, b"ignored after close"));
        let (mut conn, events, out) = drive(&input, input.len());
        assert_eq!(events.len(), 2);
        assert!(events[1].starts_with("CloseSent"), "{events:?}");
        assert!(out.ends_with(&[0x88, 0x02, 0x03, 0xe8]));
        assert!(conn.handle_flushed(Instant::now(), &settings()));
        assert!(!conn.is_done());
        conn.handle_eof();
        assert!(conn.is_done());
    }

    #[test]
    fn close_then_eof_still_writes_the_echo() {
        let s = settings();
        let mut input = UPGRADE.to_vec();
        input.extend(client_frame(0x88, &[0x03, 0xe8]));
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        assert_eq!(
            conn.handle_bytes(now, &mut input, &s, &mut Inflater::new(), &mut |_| {}),
            UPGRADE.len()
        );
        let mut rest = input[UPGRADE.len()..].to_vec();
        conn.handle_bytes(now, &mut rest, &s, &mut Inflater::new(), &mut |_| {});
        conn.handle_eof();
        assert!(!conn.wants_read() && !conn.is_done());
        assert!(written(&mut conn).ends_with(&[0x88, 0x02, 0x03, 0xe8]));
        assert!(!conn.handle_flushed(now, &s));
        assert!(conn.is_done());
    }

    #[test]
    fn protocol_error_sends_its_close_code() {
        let mut input = UPGRADE.to_vec();
        input.extend([0x81, 0x02, b'h', b'i']); // unmasked
        let (conn, _, out) = drive(&input, input.len());
        assert!(!conn.is_open());
        assert!(out.ends_with(&[
            0x03, 0xea, b'u', b'n', b'm', b'a', b's', b'k', b'e', b'd', b' ', b'f', b'r', b'a',
            b'm', b'e'
        ]));
    }

    #[test]
    fn plain_get_waits_for_respond() {
        let s = settings();
        let (mut conn, events, _) = drive(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", 3);
        assert_eq!(
            events,
            [
                "Request { method: Get, path: \"/healthz\", body: [], foreign: false, origin: None, request_headers: None }"
            ]
        );
        conn.respond(
            Instant::now(),
            b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            b"ok",
            &s,
        );
        assert_eq!(written(&mut conn), b"HTTP/1.1 200 OK\r\n\r\nok");
        assert!(conn.handle_flushed(Instant::now(), &s));
    }

    #[test]
    fn oversized_head_spanning_reads_is_431() {
        let mut input = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        input.resize(20000, b'a');
        let (conn, _, out) = drive(&input, 1000);
        assert!(out.starts_with(b"HTTP/1.1 431 "));
        assert!(!conn.is_open());
    }

    #[test]
    fn heads_spanning_reads_are_parsed_once_they_can_end() {
        for chunk in [1, 2, 3, 7] {
            let (_, events, _) = drive(b"GET /x HTTP/1.1\nHost: h\n\n", chunk);
            assert_eq!(
                events,
                [
                    "Request { method: Get, path: \"/x\", body: [], foreign: false, origin: None, request_headers: None }"
                ],
                "bare LF, chunk {chunk}"
            );
            let (_, events, _) = drive(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n", chunk);
            assert_eq!(
                events,
                [
                    "Request { method: Get, path: \"/y\", body: [], foreign: false, origin: None, request_headers: None }"
                ],
                "CRLF, chunk {chunk}"
            );
            let (conn, _, out) = drive(b"NOT A REQUEST\r\n\r\n", chunk);
            assert!(out.starts_with(b"HTTP/1.1 400 "), "chunk {chunk}");
            assert!(!conn.is_open());
        }
    }

    #[test]
    fn post_body_is_read_whole_at_any_split_and_capped() {
        let req = b"POST /send?room=a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        for chunk in [1, 4, req.len()] {
            let (conn, events, _) = drive(req, chunk);
            assert_eq!(
                events,
                [
                    "Request { method: Post, path: \"/send?room=a\", body: [104, 101, 108, 108, 111], foreign: false, origin: None, request_headers: None }"
                ],
                "chunk {chunk}"
            );
            assert!(conn.is_responding());
        }
        let big = format!(
            "POST /send HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let (_, events, out) = drive(big.as_bytes(), 7);
        assert_eq!(events, ["Refused { status: 413, origin: None }"]);
        assert!(
            out.starts_with(b"HTTP/1.1 413 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let chunked = b"POST /send HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_, _, out) = drive(chunked, 3);
        assert!(out.starts_with(b"HTTP/1.1 411 "));
    }

    #[test]
    fn the_mount_takes_any_method_and_its_own_body_size() {
        // Outside it: 405 and the usual body cap; inside: the request, with its origin.
        let (_, events, out) = drive(b"PUT /x HTTP/1.1\r\nHost: h\r\n\r\n", 4);
        assert_eq!(events, ["Refused { status: 405, origin: None }"]);
        assert!(out.starts_with(b"HTTP/1.1 405 "));
        let preflight = b"OPTIONS /socket.io/?EIO=4 HTTP/1.1\r\nHost: h\r\nOrigin: http://h\r\n\
            Access-Control-Request-Headers: x-a\r\n\r\n";
        let (_, events, _) = drive(preflight, 7);
        assert_eq!(
            events,
            [
                r#"Request { method: Options, path: "/socket.io/?EIO=4", body: [], foreign: false, origin: Some([104, 116, 116, 112, 58, 47, 47, 104]), request_headers: Some([120, 45, 97]) }"#
            ]
        );
        let post = |len: usize| {
            let mut req = format!(
                "POST /socket.io/?sid=a HTTP/1.1\r\nHost: h\r\nOrigin: http://h\r\nContent-Length: {len}\r\n\r\n"
            )
            .into_bytes();
            req.resize(req.len() + len, b'4');
            req
        };
        let (conn, events, _) = drive(&post(100), 9);
        assert!(conn.is_responding(), "{events:?}");
        assert!(events[0].contains("origin: Some("), "{events:?}");
        let (_, events, _) = drive(&post(101), 9);
        assert_eq!(events, ["Refused { status: 413, origin: None }"]);
    }

    #[test]
    fn an_upgrade_refused_after_the_event_answers_instead_of_the_101() {
        let s = settings();
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        let mut input = UPGRADE.to_vec();
        input.extend(client_frame(0x81, b"ignored"));
        let used = conn.handle_bytes(now, &mut input, &s, &mut Inflater::new(), &mut |_| {});
        assert!(conn.is_open());
        conn.refuse_upgrade(now, b"HTTP/1.1 400 Bad Request\r\n\r\nno".to_vec(), &s);
        assert!(!conn.is_open());
        conn.handle_bytes(
            now,
            &mut input[used..],
            &s,
            &mut Inflater::new(),
            &mut |_| {},
        );
        assert_eq!(written(&mut conn), b"HTTP/1.1 400 Bad Request\r\n\r\nno");
        assert!(conn.handle_flushed(now, &s));
        // Once the 101 is out it is too late for a status: the WebSocket is failed instead.
        let (mut conn, _, _) = drive(UPGRADE, UPGRADE.len());
        conn.refuse_upgrade(now, b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), &s);
        assert_eq!(&written(&mut conn)[..4], &[0x88, 9, 0x03, 0xf0]);
    }

    #[test]
    fn handshake_deadline() {
        let s = settings();
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        assert_eq!(conn.handle_timeout(now + Duration::from_secs(1), &s), None);
        assert!(!conn.is_done());
        assert_eq!(
            conn.handle_timeout(now + s.handshake_timeout, &s),
            Some(Expired::Handshake)
        );
        assert!(conn.is_done());
    }

    #[test]
    fn slow_consumer_before_the_101_is_written_still_gets_it() {
        let s = settings();
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        conn.handle_bytes(
            now,
            &mut UPGRADE.to_vec(),
            &s,
            &mut Inflater::new(),
            &mut |_| {},
        );
        let big: Rc<[u8]> = vec![0x82; 40_000].into();
        assert_eq!(conn.send(now, Chunk::Shared(big.clone()), &s), Sent::Queued);
        assert_eq!(conn.send(now, Chunk::Shared(big), &s), Sent::Overflow);
        let out = written(&mut conn);
        assert!(out.starts_with(b"HTTP/1.1 101 "));
        assert!(out.ends_with(b"slow consumer"));
    }

    #[test]
    fn slow_consumer_is_closed_with_1008_and_backlog_dropped() {
        let s = settings();
        let (mut conn, _, _) = drive(UPGRADE, UPGRADE.len());
        let now = Instant::now();
        let big: Rc<[u8]> = vec![0x82; 40_000].into();
        assert_eq!(conn.send(now, Chunk::Shared(big.clone()), &s), Sent::Queued);
        assert_eq!(
            conn.send(now, Chunk::Shared(big.clone()), &s),
            Sent::Overflow
        );
        assert!(!conn.is_open());
        let out = written(&mut conn);
        assert_eq!(out.len(), 2 + 2 + "slow consumer".len());
        assert_eq!(&out[..4], &[0x88, 15, 0x03, 0xf0]);
        assert_eq!(conn.send(now, Chunk::Shared(big), &s), Sent::NotOpen);
    }

    #[test]
    fn tiny_frames_share_slots_and_the_budget_counts_bytes() {
        let mut s = settings();
        s.max_output = 1 << 20;
        let (mut conn, _, _) = drive(UPGRADE, UPGRADE.len());
        let now = Instant::now();
        // 14,000 frames of 72 bytes: 1,008,000 bytes, within the 1 MiB budget.
        let mut want = Vec::new();
        for i in 0..14_000u32 {
            let mut frame = vec![0x81, 70];
            frame.extend((0..70).map(|j| (i + j) as u8));
            want.extend_from_slice(&frame);
            let sent = conn.send(now, Chunk::Shared(frame.into()), &s);
            assert_eq!(sent, Sent::Queued, "frame {i}");
        }
        assert_eq!(conn.queued(), want.len());
        let slots = conn.out.queue.len();
        assert!(slots <= COALESCE_AFTER + 64, "{slots} slots");
        // A lone small frame keeps its shared buffer; large ones are never copied.
        let big: Rc<[u8]> = vec![0x82; 4096].into();
        conn.send(now, Chunk::Shared(big.clone()), &s);
        assert!(matches!(conn.out.queue.back(), Some(Chunk::Shared(b)) if Rc::ptr_eq(b, &big)));
        want.extend_from_slice(&big);
        assert_eq!(written(&mut conn), want);
        // Over the budget by bytes alone.
        let full: Rc<[u8]> = vec![0x82; 600_000].into();
        assert_eq!(
            conn.send(now, Chunk::Shared(full.clone()), &s),
            Sent::Queued
        );
        assert_eq!(conn.send(now, Chunk::Shared(full), &s), Sent::Overflow);
    }

    #[test]
    fn a_slow_consumer_keeps_only_the_started_frame_of_a_shared_slot() {
        let s = settings();
        let (mut conn, _, _) = drive(UPGRADE, UPGRADE.len());
        let now = Instant::now();
        // The first 63 keep their slots; the 64th and those after share the last one.
        for i in 0..80u8 {
            let frame: Rc<[u8]> = vec![0x81, 3, i, i, i].into();
            assert_eq!(conn.send(now, Chunk::Shared(frame), &s), Sent::Queued);
        }
        assert_eq!(conn.out.queue.len(), COALESCE_AFTER);
        assert!(matches!(conn.out.queue.back(), Some(Chunk::Frames(_))));
        // The 63 shared frames and two bytes of the 64th are out when the backlog is dropped.
        conn.handle_written(63 * 5 + 2);
        conn.overflow(now, &s);
        let out = written(&mut conn);
        assert_eq!(&out[..3], &[63, 63, 63], "the rest of the started frame");
        assert_eq!(&out[3..7], &[0x88, 15, 0x03, 0xf0], "then the close");
        assert_eq!(out.len(), 3 + 4 + "slow consumer".len());
    }

    #[test]
    fn sole_chunk_is_the_unwritten_rest_of_a_lone_chunk_only() {
        let s = settings();
        let (mut conn, _, _) = drive(UPGRADE, UPGRADE.len());
        written(&mut conn); // the 101
        let now = Instant::now();
        assert_eq!(conn.sole_chunk(), None);
        let frame: Rc<[u8]> = vec![0x81, 3, 1, 2, 3].into();
        conn.send(now, Chunk::Shared(frame.clone()), &s);
        assert_eq!(conn.sole_chunk(), Some(&frame[..]));
        conn.handle_written(2);
        assert_eq!(conn.sole_chunk(), Some(&frame[2..]));
        conn.send(now, Chunk::Shared(frame), &s);
        assert_eq!(conn.sole_chunk(), None, "two chunks go out by io_slices");
        conn.handle_written(3 + 5);
        assert_eq!(conn.sole_chunk(), None);
        assert!(!conn.wants_write());
    }

    #[test]
    fn silent_open_connection_is_pinged_then_dropped_and_input_resets_the_clock() {
        let s = settings();
        let (mut conn, _, _) = drive(UPGRADE, UPGRADE.len());
        let opened = conn
            .poll_timeout()
            .expect("an open connection has an idle deadline");
        // Input pushes the deadline later.
        let later = opened + Duration::from_secs(10);
        let mut ping = client_frame(0x8a, b"");
        conn.handle_bytes(later, &mut ping, &s, &mut Inflater::new(), &mut |_| {});
        assert_eq!(conn.poll_timeout(), Some(later + s.ping_interval));
        // Not due yet: nothing happens (the event loop re-arms).
        assert_eq!(conn.handle_timeout(opened, &s), None);
        let due = later + s.ping_interval;
        assert_eq!(conn.handle_timeout(due, &s), Some(Expired::Pinged));
        assert_eq!(written(&mut conn), [0x89, 0x00]);
        assert!(conn.is_open());
        // A pong (any input) clears it.
        let mut pong = client_frame(0x8a, b"");
        conn.handle_bytes(due, &mut pong, &s, &mut Inflater::new(), &mut |_| {});
        let next = due + s.ping_interval;
        assert_eq!(conn.handle_timeout(next, &s), Some(Expired::Pinged));
        written(&mut conn);
        // Silence after the ping: dropped.
        let end = next + s.pong_timeout;
        assert_eq!(conn.handle_timeout(end, &s), Some(Expired::Idle));
        assert!(conn.is_done());
    }

    #[test]
    fn admission_at_the_head_can_refuse_or_drop_before_any_answer() {
        let s = settings();
        let now = Instant::now();
        let mut conn = Conn::new(now, &s);
        let mut seen = Vec::new();
        let mut events = Vec::new();
        conn.handle_bytes_admitting(
            now,
            &mut UPGRADE.to_vec(),
            &s,
            &mut Inflater::new(),
            &mut |f| {
                seen.push(f.x_forwarded_for.is_empty());
                Admit::Unavailable("too many connections from your address")
            },
            &mut |e| events.push(format!("{e:?}")),
        );
        assert_eq!(seen, [true]);
        assert_eq!(events, ["Refused { status: 503, origin: None }"]);
        assert!(written(&mut conn).starts_with(b"HTTP/1.1 503 "));
        // The answer gets a refusal's second, not the close timeout.
        assert_eq!(conn.poll_timeout(), Some(now + REFUSAL_LINGER));

        let mut conn = Conn::new(now, &s);
        let mut events = Vec::new();
        conn.handle_bytes_admitting(
            now,
            &mut UPGRADE.to_vec(),
            &s,
            &mut Inflater::new(),
            &mut |_| Admit::Close,
            &mut |e| events.push(format!("{e:?}")),
        );
        assert!(events.is_empty() && conn.is_done() && !conn.wants_write());
    }

    #[test]
    fn foreign_origin_is_403_and_same_origin_upgrades() {
        let s = settings();
        let with_origin = |origin: &str| {
            let head = String::from_utf8(UPGRADE.to_vec())
                .unwrap()
                .replace("Host: h\r\n", &format!("Host: h\r\nOrigin: {origin}\r\n"));
            let now = Instant::now();
            let mut conn = Conn::new(now, &s);
            let mut events = Vec::new();
            conn.handle_bytes(
                now,
                &mut head.into_bytes(),
                &s,
                &mut Inflater::new(),
                &mut |e| match e {
                    // The refused origin and the Host it was compared with, for the log line.
                    Event::Refused {
                        status,
                        origin: Some((origin, host)),
                    } => events.push(format!(
                        "{status} {} {}",
                        origin.escape_ascii(),
                        host.unwrap_or_default().escape_ascii()
                    )),
                    e => events.push(format!("{e:?}")),
                },
            );
            (conn, events)
        };
        let (mut conn, events) = with_origin("https://evil.example");
        assert_eq!(events, ["403 https://evil.example h"]);
        assert!(written(&mut conn).starts_with(b"HTTP/1.1 403 "));
        let (conn, events) = with_origin("http://h");
        assert!(conn.is_open(), "{events:?}");
    }

    #[test]
    fn plain_connection_answers_an_upgrade_as_a_get() {
        let s = settings();
        // Whole, then one byte at a time: the same single request, never a 101.
        for chunk in [UPGRADE.len(), 1] {
            let now = Instant::now();
            let mut conn = Conn::new_plain(now, &s);
            let mut events = Vec::new();
            for piece in UPGRADE.chunks(chunk) {
                let used = conn.handle_bytes(
                    now,
                    &mut piece.to_vec(),
                    &s,
                    &mut Inflater::new(),
                    &mut |e| events.push(format!("{e:?}")),
                );
                assert_eq!(used, piece.len());
            }
            assert_eq!(
                events,
                [
                    r#"Request { method: Get, path: "/room", body: [], foreign: false, origin: None, request_headers: None }"#
                ]
            );
            assert!(conn.is_responding() && !conn.is_open());
            assert!(written(&mut conn).is_empty());
            conn.respond(now, b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec(), b"", &s);
            assert!(written(&mut conn).starts_with(b"HTTP/1.1 404 "));
            assert!(conn.handle_flushed(now, &s) && !conn.is_open());
        }
        // The handshake deadline holds as for any connection.
        let now = Instant::now();
        let mut conn = Conn::new_plain(now, &s);
        let late = now + s.handshake_timeout;
        assert_eq!(conn.handle_timeout(late, &s), Some(Expired::Handshake));
        assert!(conn.is_done());
    }

    #[test]
    fn connection_over_a_limit_is_answered_503_at_once_and_dropped_soon() {
        let s = settings();
        let now = Instant::now();
        let mut conn = Conn::new_refused(now, HandshakeError::Unavailable("server full"));
        assert!(
            conn.poll_timeout()
                .is_some_and(|d| d <= now + REFUSAL_LINGER)
        );
        // Whatever the client sends is not read as a request.
        let mut events = Vec::new();
        conn.handle_bytes(
            now,
            &mut UPGRADE.to_vec(),
            &s,
            &mut Inflater::new(),
            &mut |e| events.push(format!("{e:?}")),
        );
        assert!(events.is_empty(), "{events:?}");
        let out = written(&mut conn);
        assert!(out.starts_with(b"HTTP/1.1 503 "));
        assert!(out.ends_with(b"server full\n"));
        assert!(conn.handle_flushed(now, &s));
        assert!(
            conn.poll_timeout()
                .is_some_and(|d| d <= now + REFUSAL_LINGER)
        );
        conn.handle_timeout(now + REFUSAL_LINGER, &s);
        assert!(conn.is_done());
    }
}
