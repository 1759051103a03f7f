//! The only module that touches mio: the listener, client sockets in a `Slab`, write queues,
//! deadlines and signals, on one thread.
//!
//! An optional admin listener (`--admin-listen`) feeds the same `Slab`: its connections are
//! plain HTTP only ([`Conn::new_plain`]), answered by [`http::route_admin`], never shown to
//! the app, outside the connection limits and outside the connection and traffic counters.
//!
//! Sockets are registered once, edge-triggered, for both directions; reads drain to
//! `WouldBlock` (bounded per turn for fairness), writes are batched with `write_vectored`.
//! The loop also keeps the connection limits, the counters behind `/metrics`, and tells the
//! service manager how it is doing (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`) on
//! deadlines of its own.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::admission::{self, Admission, Ticket, Verdict};
use crate::app::{Action, App, RATE_LIMITED, Reply};
use crate::conn::{Admit, Chunk, Conn, Event, Expired, Frame, Sent, Settings};
use crate::daemon::{Notifier, Notify};
use crate::eio::is_eio_target;
use crate::eio::packet::Refusal;
use crate::eio::relay::{self, Relayed, Relays};
use crate::eio::response::{self, Cors};
use crate::eio::session::{
    Answer, Delivery, Request as EioRequest, Sessions, Slot, Up, UpgradeAnswer, Wire, is_session,
};
use crate::http;
use crate::log;
use crate::metrics::{Limit, Metrics};
use crate::origin::{Note, OriginPolicy, RefusalLog};
use crate::proto::deflate::{Deflater, Inflater};
use crate::proto::handshake::{Forwarded, Method};
use crate::proto::{CloseCode, HandshakeError};
use crate::proxy::TrustedProxies;
use crate::redis::url::Endpoint;
use crate::room::redis::LINKS;
use crate::tls::{Certs, Tls};

/// A socket to the room store: TCP or a Unix socket.
enum StoreStream {
    Tcp(TcpStream),
    Unix(mio::net::UnixStream),
}

impl StoreStream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Self::Tcp(s) => s,
            Self::Unix(s) => s,
        }
    }

    /// Whether a connect finished: `Ok(true)` connected, `Ok(false)` not yet.
    fn connected(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Self::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            Self::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = error {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Read for StoreStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for StoreStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const ADMIN: Token = Token(usize::MAX - 3);
/// The room store's links (`--redis`): commands, subscription.
const STORE: [Token; LINKS] = [Token(usize::MAX - 4), Token(usize::MAX - 5)];

/// Admin connections open at once; more are closed unanswered. A scraper and a health checker
/// or two each hold one for a request; the cap keeps a flood on the admin port from taking
/// the descriptors clients need (its connections are outside --max-connections).
const ADMIN_CONNECTIONS: usize = 16;

/// Bytes read per `read` call; one buffer shared by every connection.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per turn before others get theirs.
const READS_PER_TURN: usize = 16;
/// Deliveries (one chunk queued to one receiver) one connection's input may cause per turn;
/// past it, the rest of its input waits for the next turn (unread in the kernel, or the unused
/// part of a read kept in `Server::pending`). Bytes are the wrong measure: a 64 KiB read holds
/// ~2,300 tiny chat messages, each sent to every member of a room. A delivery costs 50-100 ns
/// here, so this is 2-3 ms of queueing at most (the writes it causes are bounded by
/// `WRITES_PER_TURN`, which dominates: tests/fairness.rs measures the same p99 at 8,192 and
/// 32,768); a burst into a room of 200 then goes out 160 messages a turn. At least one message
/// is handled per turn, so a room larger than this still gets one a turn. A relay publisher's
/// own copies count too (one each): at 8,192 or 16,384 it got 5 or 9 reads of tiny messages a
/// turn instead of 16, its subscribers smaller writes, and the 100-subscriber fan-out bench
/// lost 10-15 %.
const DELIVERIES_PER_TURN: u64 = 32 * 1024;
/// Slices per `write_vectored` call (below Linux's IOV_MAX of 1024).
const IOVECS: usize = 64;
/// How long to stop accepting after EMFILE/ENFILE, so a full fd table does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often `STATUS=` may be sent to the service manager: often enough to be current in
/// `systemctl status`, rarely enough that a connection storm is not a datagram storm.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// Clients written per turn by `flush_dirty`; the rest keep their place for the next turn. A
/// write to a client costs ~10 us on loopback (the kernel delivers it to the peer then and
/// there), so a message to a room of 2,000 is 20 ms of writes: split over turns, reads and
/// replies of other clients go between. A reader's own replies are written at the end of its
/// read, outside this count, so they never wait behind someone else's fan-out. With
/// `DELIVERIES_PER_TURN` this keeps a turn to a few milliseconds of work on this machine.
const WRITES_PER_TURN: usize = 128;
/// How much longer than the longest hold a poll passed on to another node waits for its
/// answer: the trip through the store twice, with room for a slow turn on either node.
const RELAY_SLACK: Duration = Duration::from_secs(2);
/// Largest run of one read's broadcast frames queued to a receiver as one chunk.
const BATCH_MAX: usize = 64 * 1024;
/// Plaintext encrypted per write to a TLS client: one full record (RFC 8446 §5.1: at most
/// 2^14 bytes). Records the socket does not take stay with the connection and count against
/// its output budget, so a blocked peer strands at most this much ciphertext.
const TLS_BATCH: usize = 16 * 1024;

thread_local! {
    /// Plaintext gathered for one TLS write and the records made from it: the loop's, not
    /// each connection's, so an idle TLS connection holds no buffer.
    static TLS_SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// One accepted client.
struct Client {
    stream: TcpStream,
    conn: Conn,
    /// Whether the app has been told this connection joined.
    joined: bool,
    /// Accepted on the admin listener: plain HTTP, answered by `http::route_admin`.
    admin: bool,
    /// Whether it is in `Server::dirty`.
    dirty: bool,
    /// The last write hit `WouldBlock`: wait for the writable edge before writing again.
    blocked: bool,
    /// The deadline last put in the timer heap.
    timer: Option<Instant>,
    /// The peer's entry in the address table (4 bytes here, not an `IpAddr`'s 17); it says
    /// whether the socket is being refused (answered 503 and soon dropped). `None` once the
    /// connection is to be dropped unanswered and counts nowhere.
    ticket: Option<Ticket>,
    /// The slot of the Engine.IO session this connection serves (its WebSocket, a probe to
    /// take it over, or a held poll), told when the connection stops serving it. Such a
    /// WebSocket is not the app's client: no join, no leave, no broadcasts.
    eio: Option<Slot>,
    /// TLS below everything (`--tls-cert`); boxed, so a plain connection pays a pointer.
    tls: Option<Box<Tls>>,
}

impl Client {
    /// Whether anything waits to be written: queued output, or TLS records.
    fn wants_write(&self) -> bool {
        self.conn.wants_write() || self.unsent() > 0
    }

    /// TLS records made and not yet taken by the socket.
    fn unsent(&self) -> usize {
        self.tls.as_ref().map_or(0, |t| t.unsent().len())
    }
}

// The loop's whole per-connection cost besides the kernel's socket: keep it visible (160
// bytes in all in a release build, 8 of them the TLS pointer; mio's stream carries a
// selector id in debug builds, so the budget leaves the stream out).
const _: () = assert!(size_of::<Client>() - size_of::<TcpStream>() <= 160);

/// Server-wide settings that are not per connection.
#[derive(Debug)]
pub struct Options {
    /// How long to wait for clients to close after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Most client sockets at once; more are answered 503.
    pub max_connections: usize,
    /// Most client sockets from one IP address at once; more are answered 503.
    pub max_connections_per_ip: u32,
    /// Peers believed about the client they forward (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
    /// Where to send `READY=1` and the rest (`NOTIFY_SOCKET`).
    pub notifier: Option<Notifier>,
    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`).
    pub watchdog: Option<Duration>,
    /// Payloads under this many bytes go uncompressed to permessage-deflate clients.
    pub deflate_threshold: usize,
}

/// The server: a listener, its clients and the app.
pub struct Server {
    poll: Poll,
    /// Taken (closed) at shutdown, so new connects are refused rather than left waiting.
    listener: Option<TcpListener>,
    /// The admin listener, if any; taken at shutdown too.
    admin: Option<TcpListener>,
    /// Clients from the admin listener, left out of the connection gauges.
    admin_open: usize,
    signals: Signals,
    clients: Slab<Client>,
    app: App,
    settings: Settings,
    read_buf: Vec<u8>,
    actions: Vec<Action>,
    /// Clients with output to write, in the order they got it.
    dirty: VecDeque<usize>,
    /// Writes `flush_dirty` may still make this turn.
    writes_left: usize,
    /// Clients whose reads were cut short for fairness, in order, and the same as a set: they
    /// are read next turn and not again this one.
    readable: Vec<usize>,
    waiting: HashSet<usize>,
    /// Last turn's `readable`, being read this turn. A client that closes leaves both lists,
    /// so its id, reused by a new client, is never read twice in one turn.
    again: VecDeque<usize>,
    /// Input read but not yet handled, from clients cut short in the middle of a read: the
    /// bytes and where the unhandled part starts. At most one read (`READ_BUF`) per client,
    /// and only for clients in `readable`; their socket is not read again until it is used.
    pending: HashMap<usize, (Vec<u8>, usize)>,
    /// Deliveries queued so far (never reset): a reader's share of a turn is measured in it.
    pushes: u64,
    /// The client whose read is being handled.
    reading: Option<usize>,
    /// Broadcast frames from that read not yet queued to the other receivers: each gets one
    /// chunk per read instead of one per message. `batch_skip` holds the reader (it got its
    /// copies one by one, in order with its own output) and the broadcast's `except`.
    batch: Vec<u8>,
    /// The frames in `batch`, so that each is compressed once for all its receivers.
    batch_parts: Vec<Frame>,
    batch_skip: [Option<usize>; 2],
    /// Messages in `batch`.
    batch_messages: u64,
    /// Deadlines, earliest first; entries can be stale (checked against the connection).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    accept_paused_until: Option<Instant>,
    /// The last accept failed for want of descriptors (logged once per episode, not per retry).
    fd_starved: bool,
    /// The last notification to the service manager failed.
    notify_failing: bool,
    shutdown_deadline: Option<Instant>,
    options: Options,
    /// The connection limits and the sockets per address they are checked against.
    admission: Admission,
    /// Which refused origins were logged recently.
    refusals: RefusalLog,
    metrics: Metrics,
    /// When to send the next `WATCHDOG=1`.
    watchdog_at: Option<Instant>,
    /// When `STATUS=` may next be sent, and the counts it last reported.
    status_at: Option<Instant>,
    status_sent: (usize, usize),
    /// Sockets to the room store, per link (`--redis`).
    store: [Option<StoreStream>; LINKS],
    /// Links whose reads were cut short for fairness: read again next turn.
    store_again: [bool; LINKS],
    /// Engine.IO sessions (`/socket.io/`), and what they asked of connections, not yet done.
    eio: Sessions,
    eio_wire: Vec<Wire>,
    /// Polls passed on to the node holding their session, and passed on to this one.
    relays: Relays,
    /// permessage-deflate, for every connection: no context takeover, so no state per client.
    inflater: Inflater,
    deflater: Deflater,
    /// The listener speaks TLS with these settings (`--tls-cert`); SIGHUP reloads them.
    certs: Option<Certs>,
    /// Plaintext decrypted from one read of a TLS client.
    plain_buf: Vec<u8>,
}

impl Server {
    /// Sets up the loop around an already bound, non-blocking listener, with `eio` for the
    /// Engine.IO sessions to come.
    pub fn new(
        listener: std::net::TcpListener,
        mut app: App,
        settings: Settings,
        options: Options,
        eio: Sessions,
    ) -> io::Result<Self> {
        if let Some(store) = app.redis() {
            // Polls for this node's sessions that reach another node come here through it.
            store.relay_as(&eio.node(), Instant::now());
        }
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // zlib's default level: a broadcast is compressed once, whatever its receivers.
        let deflater = Deflater::new(6, options.deflate_threshold);
        // SIGHUP reloads the TLS certificate; without TLS it is logged and ignored (it no
        // longer ends the process, so `systemctl reload` is harmless either way).
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener: Some(listener),
            admin: None,
            admin_open: 0,
            signals,
            clients: Slab::new(),
            app,
            settings,
            read_buf: vec![0; READ_BUF],
            actions: Vec::new(),
            dirty: VecDeque::new(),
            writes_left: WRITES_PER_TURN,
            readable: Vec::new(),
            again: VecDeque::new(),
            waiting: HashSet::new(),
            pending: HashMap::new(),
            pushes: 0,
            reading: None,
            batch: Vec::new(),
            batch_parts: Vec::new(),
            batch_skip: [None; 2],
            batch_messages: 0,
            timers: BinaryHeap::new(),
            accept_paused_until: None,
            fd_starved: false,
            notify_failing: false,
            shutdown_deadline: None,
            admission: Admission::new(
                admission::Limits {
                    max_connections: options.max_connections,
                    max_per_ip: options.max_connections_per_ip,
                },
                options.trusted_proxies.clone(),
            ),
            options,
            refusals: RefusalLog::default(),
            metrics: Metrics::default(),
            watchdog_at: None,
            status_at: None,
            status_sent: (usize::MAX, usize::MAX),
            store: [None, None],
            store_again: [false; LINKS],
            eio,
            eio_wire: Vec::new(),
            relays: Relays::default(),
            inflater: Inflater::new(),
            deflater,
            certs: None,
            plain_buf: Vec::new(),
        })
    }

    /// Also answers `GET /metrics` and `GET /healthz` on `listener` (an already bound one), and
    /// nothing else: no page, no WebSocket.
    pub fn serve_admin(&mut self, listener: std::net::TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        self.poll
            .registry()
            .register(&mut listener, ADMIN, Interest::READABLE)?;
        self.admin = Some(listener);
        Ok(())
    }

    /// Makes the main listener speak TLS (`--tls-cert`) with `certs`; SIGHUP reloads them.
    pub fn serve_tls(&mut self, certs: Certs) {
        self.certs = Some(certs);
    }

    /// Client sockets from the main listener: handshaking, open or closing.
    fn connections(&self) -> usize {
        self.clients.len().saturating_sub(self.admin_open)
    }

    /// Sends one message to the service manager, if there is one.
    fn notify(&mut self, state: Notify<'_>) {
        let Some(n) = &self.options.notifier else {
            return;
        };
        match n.notify(&state) {
            Ok(()) => self.notify_failing = false,
            // Once per run of failures: a vanished manager would otherwise get a warning per
            // watchdog tick.
            Err(e) if !std::mem::replace(&mut self.notify_failing, true) => {
                log!(
                    Warn,
                    "sd_notify {state}: {e} (further failures are logged at debug)"
                );
            }
            Err(e) => log!(Debug, "sd_notify {state}: {e}"),
        }
    }

    /// Sends `WATCHDOG=1` and `STATUS=` when they are due.
    fn tick_manager(&mut self, now: Instant) {
        if self.options.notifier.is_none() {
            return;
        }
        if let Some(interval) = self.options.watchdog
            && self.watchdog_at.is_none_or(|at| at <= now)
        {
            self.notify(Notify::Watchdog);
            self.watchdog_at = Some(now + interval);
        }
        if self.shutdown_deadline.is_none() && self.status_at.is_none_or(|at| at <= now) {
            let counts = (self.connections(), self.app.online());
            if counts != self.status_sent {
                self.status_sent = counts;
                let status = format!(
                    "{} connections, {} websockets, {} accepted",
                    counts.0, counts.1, self.metrics.accepted
                );
                self.notify(Notify::Status(&status));
            }
            self.status_at = Some(now + STATUS_INTERVAL);
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener closed",
            )),
        }
    }

    /// Runs until a signal asks to stop and every client has closed (or the deadline passed).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // The listener is bound, listening and registered: connections are accepted from now.
        self.notify(Notify::Ready);
        self.tick_manager(Instant::now());
        loop {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.writes_left = WRITES_PER_TURN;
            // Clients cut short last turn; this turn's go to the next, so none reads twice.
            self.again = std::mem::take(&mut self.readable).into();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(now, false),
                    ADMIN => self.accept(now, true),
                    SIGNALS => self.handle_signals(now),
                    token if STORE.contains(&token) => {
                        let i = usize::from(token == STORE[1]);
                        self.store_ready(now, i, event.is_writable());
                    }
                    Token(id) => {
                        let hup = event.is_read_closed() || event.is_error();
                        if event.is_readable() || hup {
                            self.read(now, id, hup);
                        }
                        if event.is_writable() {
                            self.mark_dirty(id);
                        }
                    }
                }
            }
            while let Some(id) = self.again.pop_front() {
                if self.waiting.remove(&id) {
                    // No event to say whether the peer closed: read to `WouldBlock`.
                    self.read(now, id, true);
                }
            }
            for i in 0..LINKS {
                if std::mem::take(&mut self.store_again[i]) {
                    self.store_ready(now, i, false);
                }
            }
            self.apply_actions(now);
            // Held polls get what this turn's reads queued for their sessions, in one answer.
            self.flush_sessions(now);
            self.store_turn(now);
            self.flush_dirty(now);
            self.fire_timers(now);
            // What this turn's reads and timers asked of the store, in one write per link.
            self.write_store(now);
            self.tick_manager(now);
            if let Some(at) = self.accept_paused_until
                && at <= now
            {
                self.accept_paused_until = None;
                self.accept(now, false);
                self.accept(now, true);
            }
            if let Some(deadline) = self.shutdown_deadline
                && (self.clients.is_empty() || deadline <= now)
            {
                log!(
                    Info,
                    "stopped ({} clients left unclosed)",
                    self.clients.len()
                );
                return Ok(());
            }
        }
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.readable.is_empty() || !self.dirty.is_empty() || self.store_again.contains(&true) {
            return Some(Duration::ZERO);
        }
        [
            self.timers.peek().map(|Reverse((at, _))| *at),
            self.accept_paused_until,
            self.shutdown_deadline,
            self.watchdog_at,
            self.status_at.filter(|_| self.shutdown_deadline.is_none()),
            self.app.poll_timeout(),
            self.app.presence_due(),
            self.relays.poll_timeout(),
            self.store_due(),
            self.eio.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        // Round up so a deadline is not polled for again just before it expires.
        .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// Accepts what the main listener (or the admin one) has queued, until `WouldBlock`.
    fn accept(&mut self, now: Instant, admin: bool) {
        while self.shutdown_deadline.is_none() && self.accept_paused_until.is_none() {
            let listener = if admin { &self.admin } else { &self.listener };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) if admin => self.admit_admin(now, stream, peer),
                Ok((stream, peer)) => self.admit(now, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.metrics.limit(Limit::OpenFiles);
                    if std::mem::replace(&mut self.fd_starved, true) {
                        log!(Debug, "accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    } else {
                        log!(Warn, "accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    }
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                }
                // Out of kernel memory: the pending connection stays queued, so retrying at
                // once would spin; back off as for a full fd table.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::ENOBUFS)) => {
                    log!(Warn, "accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                }
                // ECONNABORTED and the like concern one peer only.
                Err(e) => log!(Debug, "accept: {e}"),
            }
        }
    }

    /// Takes a client from the main listener, within the connection limits.
    fn admit(&mut self, now: Instant, mut stream: TcpStream, peer: SocketAddr) {
        self.metrics.accepted += 1;
        self.fd_starved = false;
        let (verdict, ticket) = self.admission.accept(peer.ip());
        let refusal = match verdict {
            Verdict::Admit => None,
            Verdict::Refuse(limit) => Some(limit),
            Verdict::Drop(limit) => {
                // Refusals are at their cap: no answer, just the close.
                self.metrics.limit(limit);
                log!(Debug, "{peer}: over {}, closed unanswered", limit.as_str());
                return;
            }
        };
        let Some(ticket) = ticket else {
            debug_assert!(false, "a socket kept without a ticket");
            return;
        };
        // A 503 would need a TLS handshake first: over a limit a TLS socket is closed before
        // any TLS work, so a flood costs no handshakes.
        if let (Some(limit), Some(_)) = (refusal, &self.certs) {
            self.metrics.limit(limit);
            self.admission.release(ticket);
            log!(Debug, "{peer}: over {}, closed (TLS)", limit.as_str());
            return;
        }
        let tls = match self.certs.as_ref().map(|c| Tls::new(c.config().clone())) {
            None => None,
            Some(Ok(tls)) => Some(Box::new(tls)),
            Some(Err(e)) => {
                log!(Warn, "{peer}: {e}");
                self.admission.release(ticket);
                return;
            }
        };
        let entry = self.clients.vacant_entry();
        let id = entry.key();
        // Chat lines are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log!(Warn, "register {peer}: {e}");
            self.admission.release(ticket);
            return;
        }
        // Over a limit the socket is still taken, so the client reads a 503 (sent at
        // once) instead of waiting in the backlog; it is dropped soon after.
        let conn = match refusal {
            Some(limit) => {
                self.metrics.limit(limit);
                self.metrics.rejected(503);
                log!(Debug, "{peer}: over {}", limit.as_str());
                let why = match limit {
                    Limit::MaxConnections => "server full",
                    _ => "too many connections from your address",
                };
                Conn::new_refused(now, HandshakeError::Unavailable(why))
            }
            None => Conn::new(now, &self.settings),
        };
        entry.insert(Client {
            stream,
            conn,
            joined: false,
            admin: false,
            dirty: false,
            blocked: false,
            timer: None,
            ticket: Some(ticket),
            eio: None,
            tls,
        });
        log!(Debug, "accepted {peer} as {id}");
        self.sync(now, id);
    }

    /// Takes a connection from the admin listener: outside the connection limits (a full
    /// server must still answer its scraper), within [`ADMIN_CONNECTIONS`], and with the
    /// same deadlines and request limits as any connection.
    fn admit_admin(&mut self, now: Instant, mut stream: TcpStream, peer: SocketAddr) {
        self.fd_starved = false;
        if self.admin_open >= ADMIN_CONNECTIONS {
            log!(
                Debug,
                "admin {peer}: {ADMIN_CONNECTIONS} open already, closed unanswered"
            );
            return;
        }
        let entry = self.clients.vacant_entry();
        let id = entry.key();
        let _ = stream.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log!(Warn, "register admin {peer}: {e}");
            return;
        }
        entry.insert(Client {
            stream,
            conn: Conn::new_plain(now, &self.settings),
            joined: false,
            admin: true,
            dirty: false,
            blocked: false,
            timer: None,
            ticket: None,
            eio: None,
            tls: None,
        });
        self.admin_open += 1;
        log!(Debug, "accepted {peer} on the admin listener as {id}");
        self.sync(now, id);
    }

    fn handle_signals(&mut self, now: Instant) {
        let mut count = 0;
        let mut hangup = false;
        for signal in self.signals.pending() {
            match signal {
                libc::SIGHUP => hangup = true,
                _ => count += 1,
            }
        }
        if hangup {
            self.reload_certs();
        }
        if count == 0 {
            return;
        }
        if self.shutdown_deadline.is_some() || count > 1 {
            log!(Info, "second signal: exiting now");
            std::process::exit(1);
        }
        log!(
            Info,
            "shutting down: closing {} clients",
            self.clients.len()
        );
        self.notify(Notify::Stopping);
        self.shutdown_deadline = Some(now + self.options.shutdown_timeout);
        // This node's members stop counting in the cluster now, not at its presence deadline.
        if let Some(store) = self.app.redis() {
            store.leave(now);
        }
        // Closed, not only deregistered: a port bound here then refuses new connects at once
        // (under socket activation systemd keeps its copy and queues them for the next start).
        for mut listener in [self.listener.take(), self.admin.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // Held long polls get their answer, not a bare close.
        self.app.on_shutdown(now, &mut self.actions);
        let (app, actions) = (&mut self.app, &mut self.actions);
        self.eio.shutdown(
            &mut |up| tell_app(app, actions, now, up),
            &mut self.eio_wire,
        );
        self.apply_actions(now);
        let ids: Vec<usize> = self.clients.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(c) = self.clients.get_mut(id) {
                if c.conn.is_open() {
                    self.metrics.close_sent(CloseCode::GOING_AWAY);
                }
                // §7.4.1: 1001, "an endpoint is going away, such as a server going down".
                c.conn.close(
                    now,
                    CloseCode::GOING_AWAY,
                    "server shutting down",
                    &self.settings,
                );
            }
            self.sync(now, id);
        }
    }

    /// SIGHUP: reads the certificate and key again for new handshakes; open connections keep
    /// theirs, and a pair that does not load leaves the one in use.
    fn reload_certs(&mut self) {
        match &mut self.certs {
            None => log!(Info, "SIGHUP: nothing to reload (no --tls-cert)"),
            Some(certs) => match certs.reload() {
                Ok(()) => log!(Info, "SIGHUP: TLS certificate and key reloaded"),
                Err(e) => log!(Error, "SIGHUP: {e}; still using the previous certificate"),
            },
        }
    }

    /// Reads until `WouldBlock`, EOF or the per-turn caps (reads, deliveries), feeding the
    /// connection; input left over from a read cut short last turn goes first. A read that
    /// fills less than the buffer drained the socket: the edge-triggered registration reports
    /// the next bytes, so the read that would only say `WouldBlock` is skipped (a third of an
    /// echo's system calls), unless `hup` says the peer's FIN or an error came with the bytes
    /// (it would not be reported again). nginx does the same (`ngx_unix_recv`, `pending_eof`).
    fn read(&mut self, now: Instant, id: usize, hup: bool) {
        if !self.waiting.is_empty() && self.waiting.contains(&id) {
            return; // Cut short already this turn: its turn to read again is the next.
        }
        let start = self.pushes;
        // Checked first: hashing the id on every read costs more than the check.
        if !self.pending.is_empty()
            && let Some((mut rest, from)) = self.pending.remove(&id)
        {
            let cut = self.handle_read(now, id, rest.get_mut(from..).unwrap_or_default(), start);
            if let Some(used) = cut {
                // Kept only for a client still there: a closed one's id may be reused.
                if self.clients.contains(id) {
                    self.pending.insert(id, (rest, from + used));
                }
                self.cut_short(now, id);
                return;
            }
            if let Some(client) = self.clients.get_mut(id)
                && client.tls.as_ref().is_some_and(|t| t.peer_closed())
            {
                // Its close_notify came behind the input just handled: the end, now.
                client.conn.handle_eof();
                self.sync(now, id);
            }
        }
        // Taken out so the app's actions can run between the messages of one read.
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut plain = std::mem::take(&mut self.plain_buf);
        let mut drained = false;
        for turn in 0.. {
            let Some(client) = self.clients.get_mut(id) else {
                break; // "Sporadic events happen" (mio), and a client can be gone by now.
            };
            if !client.conn.wants_read() {
                break;
            }
            if turn == READS_PER_TURN || self.pushes - start >= DELIVERIES_PER_TURN {
                self.cut_short(now, id);
                break;
            }
            if client.conn.queued() + client.unsent() > self.settings.max_output / 2 {
                // Its own output (pongs, echoes) piles up: let the peer take some before its
                // next input can push it over budget.
                client.blocked = write_out(client, now, &self.settings, &mut self.metrics);
            }
            match client.stream.read(&mut buf) {
                Ok(0) => client.conn.handle_eof(),
                Ok(n) => {
                    if !client.admin {
                        self.metrics.bytes_in += n as u64;
                    }
                    drained = n < buf.len() && !hup;
                    let mut input = buf.get_mut(..n).unwrap_or_default();
                    let mut peer_closed = false;
                    if let Some(tls) = client.tls.as_mut() {
                        plain.clear();
                        match tls.handle_input(input, &mut plain) {
                            Ok(found) => peer_closed = found.peer_closed,
                            Err(e) => {
                                // Not TLS, or broken TLS: this connection only, no answer.
                                log!(Debug, "{id}: {e}");
                                self.metrics.tls_errors += 1;
                                client.conn.handle_error();
                            }
                        }
                        input = plain.as_mut_slice();
                        if client.unsent() > self.settings.max_output && !client.conn.is_done() {
                            // Records it made itself (alerts, key updates) count against the
                            // output budget too, once the socket had its chance to take them:
                            // a peer that asks for them and reads nothing is a slow consumer.
                            client.blocked =
                                write_out(client, now, &self.settings, &mut self.metrics);
                            if client.unsent() > self.settings.max_output {
                                log!(Debug, "{id}: TLS output over --max-output, closing");
                                self.metrics.slow_consumers += 1;
                                self.metrics.limit(Limit::MaxOutput);
                                client.conn.handle_error();
                            }
                        }
                    }
                    // Plaintext read with a TLS error (or overflow) behind it is not acted on.
                    let done = client.conn.is_done();
                    let cut = match input.is_empty() || done {
                        true => None,
                        false => self.handle_read(now, id, &mut *input, start),
                    };
                    if let Some(used) = cut {
                        if self.clients.contains(id) {
                            let rest = input.get(used..).unwrap_or_default().to_vec();
                            self.pending.insert(id, (rest, 0));
                        }
                        // A close_notify here is acted on once `pending` is used up.
                        self.cut_short(now, id);
                        break;
                    }
                    if peer_closed
                        && !done
                        && let Some(client) = self.clients.get_mut(id)
                    {
                        // close_notify (RFC 8446 §6.1): the end of its data, like a FIN.
                        client.conn.handle_eof();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log!(Debug, "read from {id}: {e}");
                    client.conn.handle_error();
                }
            }
            self.sync(now, id);
            if drained {
                break;
            }
        }
        self.read_buf = buf;
        self.plain_buf = plain;
        self.write_reply(now, id);
    }

    /// Puts a client whose input is not all handled in `readable`, for the next turn.
    fn cut_short(&mut self, now: Instant, id: usize) {
        if self.clients.contains(id) && self.waiting.insert(id) {
            self.readable.push(id);
        }
        self.write_reply(now, id);
    }

    /// Writes what a client's own input caused for it (echoes, replies, its copies of its
    /// messages) at once, so they never wait behind other clients' fan-out in `flush_dirty`.
    fn write_reply(&mut self, now: Instant, id: usize) {
        if let Some(client) = self.clients.get_mut(id)
            && client.wants_write()
            && !client.blocked
        {
            client.blocked = write_out(client, now, &self.settings, &mut self.metrics);
            self.sync(now, id);
            // A write that failed may have closed it: its leave notice goes out now.
            self.apply_actions(now);
        }
    }

    /// Handles bytes read from `id` and runs their actions; `Some(used)` when its deliveries
    /// since `start` reached the per-turn cap before the end of `input`.
    fn handle_read(
        &mut self,
        now: Instant,
        id: usize,
        input: &mut [u8],
        start: u64,
    ) -> Option<usize> {
        self.reading = Some(id);
        let cut = self.handle_input(now, id, input, start);
        self.reading = None;
        self.apply_actions(now); // the batch goes out to the others
        cut
    }

    /// Feeds one read's bytes to a connection, one application event at a time; stops early,
    /// returning how many bytes it used, once the deliveries since `start` reach the cap.
    fn handle_input(
        &mut self,
        now: Instant,
        id: usize,
        input: &mut [u8],
        start: u64,
    ) -> Option<usize> {
        let mut pos = 0;
        while let Some(rest) = input.get_mut(pos..).filter(|r| !r.is_empty()) {
            if self.pushes - start >= DELIVERIES_PER_TURN {
                return Some(pos);
            }
            // Taken before the client is borrowed, for `/metrics`.
            let gauges = (self.connections(), self.app.online());
            self.metrics.eio_sessions = self.eio.len() as u64;
            self.metrics.take_zlib(&self.inflater, &self.deflater);
            let client = self.clients.get_mut(id)?;
            let admin = client.admin;
            let app = &mut self.app;
            let actions = &mut self.actions;
            let m = &mut self.metrics;
            let refusals = &mut self.refusals;
            let (sessions, wire) = (&mut self.eio, &mut self.eio_wire);
            let link = &mut client.eio;
            // The client's address for log lines: a trusted proxy's once its head names it.
            let from = Cell::new(client.ticket.and_then(|t| self.admission.ip(t)));
            // Shared by the head's check and a new long-polling session's (which comes after).
            let admission = RefCell::new(&mut self.admission);
            let ticket = Cell::new(client.ticket);
            let verdict = Cell::new(None);
            let mut refused = None;
            // Asked once the request head is complete: a trusted proxy's socket moves to the
            // client it names, and is checked against the per-address limit there.
            let mut admit = |forwarded: &Forwarded<'_>| {
                let Some(t) = ticket.get() else {
                    return Admit::Yes;
                };
                if !t.is_proxied() {
                    return Admit::Yes;
                }
                let mut admission = admission.borrow_mut();
                let (v, moved) = admission.head(t, forwarded);
                ticket.set(moved);
                let client = moved.and_then(|t| admission.ip(t));
                if client != from.get() {
                    log!(
                        Debug,
                        "{id}: client {client:?} behind proxy {:?}",
                        from.get()
                    );
                    from.set(client);
                }
                verdict.set(Some(v));
                match v {
                    Verdict::Admit => Admit::Yes,
                    Verdict::Refuse(_) => {
                        Admit::Unavailable("too many connections from your address")
                    }
                    Verdict::Drop(_) => Admit::Close,
                }
            };
            let mut response = None;
            let mut hold = None;
            let (own_node, relay_id) = (sessions.node(), self.relays.next_id());
            let mut elsewhere = None;
            let used = client.conn.handle_bytes_admitting(
                now,
                rest,
                &self.settings,
                &mut self.inflater,
                &mut admit,
                &mut |event| match event {
                    Event::Upgraded { path } if is_eio_target(path) => {
                        let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
                        match sessions.handle_upgrade(now, id, path, up, wire) {
                            UpgradeAnswer::Accept(key) => {
                                m.upgraded += 1;
                                *link = Some(key);
                            }
                            UpgradeAnswer::Refuse(response) => {
                                m.rejected(400);
                                refused = Some(Err(response));
                            }
                            UpgradeAnswer::Close => {
                                m.upgraded += 1;
                                refused = Some(Ok(()));
                            }
                        }
                    }
                    Event::Upgraded { path } => {
                        m.upgraded += 1;
                        app.on_join(id, path, actions);
                    }
                    // Not a client's request: the app never sees it, and it is not counted.
                    Event::Request { method, path, .. } if admin => {
                        let (open, online) = gauges;
                        let health = app.health();
                        let metrics = |out: &mut String| {
                            m.render(open, online, out);
                            app.render_store_metrics(out);
                        };
                        let r = http::route_admin(method, path, health.as_deref(), metrics);
                        response = Some(r);
                    }
                    Event::Request {
                        method,
                        path,
                        body,
                        foreign,
                        origin,
                        request_headers,
                    } if is_eio_target(path) => {
                        m.http_requests += 1;
                        let req = EioRequest {
                            method,
                            target: path,
                            body,
                            cors: Cors {
                                origin,
                                request_headers,
                            },
                            foreign,
                        };
                        // A polling session holds a place under the limits like a socket.
                        let mut admit_session = || {
                            let added = admission.borrow_mut().add(ticket.get()?);
                            added.map_err(|limit| m.limit(limit)).ok()
                        };
                        let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
                        match sessions.handle_request(now, id, &req, &mut admit_session, up, wire) {
                            Answer::Now(head) => {
                                response = Some(http::Response { head, body: b"" })
                            }
                            Answer::Hold { key, until } => {
                                *link = Some(key);
                                hold = Some(until);
                            }
                            Answer::Elsewhere(node) => {
                                let relayed = Relayed {
                                    from: own_node,
                                    id: relay_id,
                                    method,
                                    target: path,
                                    origin,
                                    body,
                                };
                                let unknown = response::refusal(Refusal::UnknownSid, &req.cors);
                                elsewhere = Some((node, relayed.encode(), unknown));
                            }
                        }
                    }
                    Event::Request {
                        method,
                        path,
                        body,
                        foreign,
                        ..
                    } => {
                        m.http_requests += 1;
                        let (open, online) = gauges;
                        let request = crate::app::HttpRequest {
                            method,
                            target: path,
                            body,
                            foreign,
                        };
                        match app.on_http(id, request, now, actions) {
                            Reply::Pass if method != Method::Get => {
                                response = Some(http::method_not_allowed());
                            }
                            Reply::Pass => {
                                let health = app.health();
                                let metrics = |out: &mut String| {
                                    m.render(open, online, out);
                                    app.render_store_metrics(out);
                                };
                                response = Some(http::route(path, health.as_deref(), metrics));
                            }
                            Reply::Now(whole) => {
                                response = Some(http::Response {
                                    head: whole,
                                    body: b"",
                                });
                            }
                            Reply::Hold(until) => hold = Some(until),
                        }
                    }
                    Event::Text(text) => {
                        m.messages_in += 1;
                        m.message_bytes_in += text.len() as u64;
                        match *link {
                            Some(key) => {
                                let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
                                sessions.handle_ws_text(now, key, id, text, up, wire);
                            }
                            None => app.on_text(id, text, now, actions),
                        }
                    }
                    Event::Binary(data) => {
                        m.messages_in += 1;
                        m.message_bytes_in += data.len() as u64;
                        match *link {
                            Some(key) => {
                                let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
                                sessions.handle_ws_binary(now, key, id, data, up, wire);
                            }
                            None => app.on_binary(id, data, actions),
                        }
                    }
                    Event::Refused { status, origin } => {
                        m.rejected(status);
                        match status {
                            403 => {
                                m.limit(Limit::Origin);
                                if let Some((origin, host)) = origin {
                                    let from = from.get();
                                    log_refused_origin(refusals, now, origin, host, from);
                                }
                            }
                            431 => m.limit(Limit::MaxHandshake),
                            _ => {}
                        }
                    }
                    Event::CloseSent(code) => {
                        m.close_sent(code);
                        if code == CloseCode::TOO_BIG {
                            m.limit(Limit::MaxMessage);
                        } else if code == CloseCode::POLICY {
                            // A peer that pings faster than it reads the pongs.
                            m.slow_consumers += 1;
                            m.limit(Limit::MaxOutput);
                        }
                    }
                },
            );
            if let Some(Verdict::Refuse(limit) | Verdict::Drop(limit)) = verdict.get() {
                // The 503 itself is counted with the other refusals (`Event::Refused`).
                m.limit(limit);
                log!(
                    Debug,
                    "{id}: client {:?} over {}",
                    from.get(),
                    limit.as_str()
                );
            }
            client.ticket = ticket.get();
            match refused {
                Some(Err(response)) => client.conn.refuse_upgrade(now, response, &self.settings),
                Some(Ok(())) => {
                    // §7.4.1: 1008, a request "that violates its policy".
                    m.close_sent(CloseCode::POLICY);
                    let why = "not an upgrade this session can take";
                    client
                        .conn
                        .fail(now, CloseCode::POLICY, why, &self.settings);
                }
                None => {}
            }
            if let Some(r) = response {
                client.conn.respond(now, r.head, r.body, &self.settings);
            }
            if let Some(until) = hold {
                // The app answers by `until`; the connection's own deadline is a backstop.
                client.conn.hold(until + self.settings.close_timeout);
            }
            if let Some((node, message, unknown)) = elsewhere {
                // Another node's session: the request goes there, its answer comes back. No
                // such node (or no store to reach it): the session is gone as far as anyone
                // can tell, and the client starts a new one.
                let sent = message.is_some_and(|message| {
                    app.redis()
                        .is_some_and(|s| s.relay(&node, &message, Some(relay_id), now))
                });
                if sent {
                    let until = now + sessions.hold_limit() + RELAY_SLACK;
                    self.relays.passed_on(id, unknown, until);
                    client.conn.hold(until + self.settings.close_timeout);
                    m.relayed_out += 1;
                } else {
                    client.conn.respond(now, unknown, b"", &self.settings);
                }
            }
            self.sync(now, id);
            self.apply_actions(now);
            if used == 0 {
                debug_assert!(false, "handle_bytes made no progress");
                return None;
            }
            pos += used;
        }
        None
    }

    /// Brings the loop's view of a client in line with its connection state.
    fn sync(&mut self, now: Instant, id: usize) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let open = client.conn.is_open();
        let mut lost = None;
        if let Some(key) = client.eio {
            // Neither an open WebSocket nor a held poll: it serves its session no more.
            if !open && !client.conn.is_responding() {
                client.eio = None;
                lost = Some(key);
            }
        } else if open != client.joined {
            // The app heard of the join from `Event::Upgraded`, with the path; here, of the leave.
            client.joined = open;
            // At shutdown nobody is left to tell, and N notices to N clients would be O(N²).
            if !open && self.shutdown_deadline.is_none() {
                self.app.on_leave(id, &mut self.actions);
            }
            if open && client.conn.deflate().is_some() {
                self.metrics.deflate_upgrades += 1;
            }
        }
        if client.wants_write() {
            if !client.dirty && !client.blocked {
                client.dirty = true;
                self.dirty.push_back(id);
            }
        } else if client.conn.handle_flushed(now, &self.settings) {
            // A state change with nothing left to write (e.g. the peer's close reply to ours).
            shutdown_write(client);
        }
        let deadline = client.conn.poll_timeout();
        // A deadline that moved later keeps its heap entry: when that fires, the connection
        // says it is not due yet and is re-armed then. An open connection's idle deadline moves
        // on every read, and this keeps it at one heap entry instead of one per read.
        let armed_earlier = matches!((client.timer, deadline), (Some(t), Some(d)) if t <= d);
        if deadline != client.timer && !armed_earlier {
            client.timer = deadline;
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, id)));
            }
        }
        if client.conn.is_done() {
            let mut client = self.clients.remove(id);
            if let Some(tls) = client.tls.as_mut() {
                // An idle timeout, say: tell the peer the end is deliberate (RFC 8446 §6.1),
                // or why its handshake failed (an alert); one write, best effort.
                tls.close_notify();
                if !tls.unsent().is_empty()
                    && let Ok(n) = client.stream.write(tls.unsent())
                {
                    tls.handle_written(n);
                }
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
            if client.admin {
                self.admin_open -= 1;
            }
            if let Some(ticket) = client.ticket {
                self.admission.release(ticket);
            }
            self.pending.remove(&id);
            if self.waiting.remove(&id) {
                self.readable.retain(|&r| r != id);
                self.again.retain(|&r| r != id);
            }
            // Before the id can be reused: a long poll this connection held is forgotten.
            self.app.on_drop(id, now);
            self.relays.conn_gone(id);
            log!(Debug, "closed {id}");
        }
        if let Some(key) = lost {
            let (app, actions) = (&mut self.app, &mut self.actions);
            let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
            self.eio.conn_closed(key, id, up, &mut self.eio_wire);
        }
    }

    /// The socket became writable.
    fn mark_dirty(&mut self, id: usize) {
        if let Some(client) = self.clients.get_mut(id) {
            client.blocked = false;
            if !client.dirty {
                client.dirty = true;
                self.dirty.push_back(id);
            }
        }
    }

    /// Runs the app's actions and what Engine.IO sessions asked of connections; closing a
    /// slow consumer can add more (its leave notice).
    fn apply_actions(&mut self, now: Instant) {
        let mut overflowed = Vec::new();
        // Consecutive events for one room (what one read from the room store brought, in
        // order) go to its members as one shared chunk, not one chunk each: one delivery per
        // member instead of one per event.
        let mut room_batch: Option<(Rc<str>, Vec<Frame>)> = None;
        while !self.actions.is_empty()
            || !self.eio_wire.is_empty()
            || (self.reading.is_none() && !self.batch.is_empty())
        {
            self.apply_wire(now, &mut overflowed);
            let mut taken = std::mem::take(&mut self.actions);
            for action in taken.drain(..) {
                if !matches!(action, Action::Broadcast { .. }) {
                    // Whatever came before goes first.
                    self.flush_batch(now, &mut overflowed);
                }
                match &action {
                    Action::Publish { room, .. }
                        if room_batch.as_ref().is_some_and(|(r, _)| r == room) => {}
                    _ => self.flush_room_batch(now, room_batch.take(), &mut overflowed),
                }
                match action {
                    Action::Broadcast { frame, except } => {
                        self.metrics.messages_out += 1;
                        if let Some(reader) = self.reading
                            && frame.plain().len() < BATCH_MAX
                        {
                            self.batch_broadcast(now, reader, frame, except, &mut overflowed);
                            continue;
                        }
                        self.flush_batch(now, &mut overflowed);
                        let to = To::All([except, None]);
                        self.fan_out(now, to, &frame, 1, &mut overflowed);
                    }
                    Action::Publish { room, frame } => {
                        self.metrics.messages_out += 1;
                        room_batch
                            .get_or_insert_with(|| (room, Vec::new()))
                            .1
                            .push(frame);
                    }
                    Action::Respond { to, response } => {
                        if let Some(client) = self.clients.get_mut(to)
                            && client.conn.is_responding()
                        {
                            client.conn.respond(now, response, b"", &self.settings);
                            overflowed.push(to);
                        }
                    }
                    Action::Send { to, frame } => {
                        self.metrics.messages_out += 1;
                        self.fan_out(now, To::One(to), &frame, 1, &mut overflowed);
                    }
                    Action::Close { to, code, reason } if is_session(to) => {
                        let (app, actions) = (&mut self.app, &mut self.actions);
                        let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
                        self.eio
                            .close(now, to, code, reason, up, &mut self.eio_wire);
                    }
                    Action::Close { to, code, reason } => {
                        if let Some(client) = self.clients.get_mut(to) {
                            if client.conn.is_open() {
                                self.metrics.close_sent(code);
                                if reason == RATE_LIMITED {
                                    self.metrics.limit(Limit::MaxMessageRate);
                                }
                            }
                            client.conn.fail(now, code, reason, &self.settings);
                            overflowed.push(to);
                        }
                    }
                }
            }
            // A small emptied buffer goes back, so the next message's actions need no
            // allocation; a big one (a shutdown's closes, say) is freed.
            if self.actions.is_empty() && taken.capacity() <= 64 {
                self.actions = taken;
            }
            self.flush_room_batch(now, room_batch.take(), &mut overflowed);
            if self.reading.is_none() {
                self.flush_batch(now, &mut overflowed);
            }
            for id in overflowed.drain(..) {
                self.sync(now, id);
            }
        }
    }

    /// Queues a room's consecutive events to its members: one frame alone, several as one
    /// chunk (each part still compressed at most once, for receivers that want it so).
    fn flush_room_batch(
        &mut self,
        now: Instant,
        batch: Option<(Rc<str>, Vec<Frame>)>,
        changed: &mut Vec<usize>,
    ) {
        let Some((room, mut frames)) = batch else {
            return;
        };
        let messages = frames.len() as u64;
        let frame = if frames.len() == 1 {
            frames.pop()
        } else {
            let mut plain = Vec::with_capacity(frames.iter().map(|f| f.plain().len()).sum());
            for f in &frames {
                plain.extend_from_slice(f.plain());
            }
            Some(Frame::batch(Rc::from(plain), frames))
        };
        if let Some(frame) = frame {
            self.fan_out(now, To::Room(&room), &frame, messages, changed);
        }
    }

    /// Carries out what Engine.IO sessions asked of connections.
    fn apply_wire(&mut self, now: Instant, changed: &mut Vec<usize>) {
        for wire in std::mem::take(&mut self.eio_wire) {
            match wire {
                Wire::Respond { conn, response } if relay::is_remote(conn) => {
                    if let Some((to, id)) = self.relays.remote_answered(conn) {
                        let reply = relay::Reply {
                            id,
                            response: &response,
                        };
                        if let Some(store) = self.app.redis() {
                            store.relay(&to, &reply.encode(), None, now);
                        }
                    }
                }
                Wire::Respond { conn, response } => {
                    if let Some(client) = self.clients.get_mut(conn)
                        && client.conn.is_responding()
                    {
                        client.eio = None;
                        client.conn.respond(now, response, b"", &self.settings);
                        changed.push(conn);
                    }
                }
                Wire::Frame { conn, frame } => {
                    if let Some(client) = self.clients.get_mut(conn)
                        && client.conn.is_open()
                    {
                        // Engine.IO's own packets (open, pings, 3probe) go uncompressed.
                        let out = Out {
                            dirty: &mut self.dirty,
                            changed: &mut *changed,
                            metrics: &mut self.metrics,
                            messages: 1,
                            compressed: false,
                        };
                        deliver(now, &self.settings, (conn, client), frame, out);
                    }
                }
                Wire::Close { conn, code, reason } => {
                    if let Some(client) = self.clients.get_mut(conn) {
                        client.eio = None;
                        if client.conn.is_open() {
                            self.metrics.close_sent(code);
                        }
                        client.conn.fail(now, code, reason, &self.settings);
                        changed.push(conn);
                    }
                }
                Wire::Release(ticket) => self.admission.release(ticket),
            }
        }
    }

    /// Answers held polls with what their sessions were sent since the last time.
    fn flush_sessions(&mut self, now: Instant) {
        self.eio.flush(&mut self.eio_wire);
        self.apply_actions(now);
    }

    /// Queues `frame` (holding `messages` messages) for Engine.IO session `id`: to its
    /// WebSocket, or for its next poll.
    fn send_to_session(
        &mut self,
        now: Instant,
        id: usize,
        frame: &Frame,
        messages: u64,
        changed: &mut Vec<usize>,
    ) {
        let (app, actions) = (&mut self.app, &mut self.actions);
        let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
        // A polling session keeps the plain frame: its payload is text either way.
        match self.eio.send(id, frame.plain(), up, &mut self.eio_wire) {
            Delivery::Ws(conn) => {
                if let Some(client) = self.clients.get_mut(conn)
                    && client.conn.is_open()
                {
                    let (bytes, compressed) =
                        frame.encoded(client.conn.deflate(), &mut self.deflater);
                    let out = Out {
                        dirty: &mut self.dirty,
                        changed,
                        metrics: &mut self.metrics,
                        messages,
                        compressed,
                    };
                    deliver(now, &self.settings, (conn, client), bytes, out);
                    self.pushes += 1;
                }
            }
            Delivery::Queued => {
                self.metrics.deliveries += messages;
                self.pushes += 1;
            }
            Delivery::Dropped => {}
        }
    }

    /// Queues a broadcast from the reader's current read: the reader's own copy now, the
    /// others' into the batch.
    fn batch_broadcast(
        &mut self,
        now: Instant,
        reader: usize,
        frame: Frame,
        except: Option<usize>,
        changed: &mut Vec<usize>,
    ) {
        let skip = [Some(reader), except];
        if skip != self.batch_skip || self.batch.len() + frame.plain().len() > BATCH_MAX {
            self.flush_batch(now, changed);
        }
        self.batch_skip = skip;
        self.batch.extend_from_slice(frame.plain());
        self.batch_messages += 1;
        if except != Some(reader) {
            self.fan_out(now, To::One(reader), &frame, 1, changed);
        }
        self.batch_parts.push(frame);
    }

    /// Queues the batched frames, as one shared chunk, to every open client not skipped.
    fn flush_batch(&mut self, now: Instant, changed: &mut Vec<usize>) {
        if self.batch.is_empty() {
            return;
        }
        let parts = std::mem::take(&mut self.batch_parts);
        let frames = Frame::batch(Rc::from(&self.batch[..]), parts);
        self.batch.clear();
        let messages = std::mem::take(&mut self.batch_messages);
        self.fan_out(now, To::All(self.batch_skip), &frames, messages, changed);
    }

    /// Queues `frame` (holding `messages` messages) to every open client among `to`.
    fn fan_out(
        &mut self,
        now: Instant,
        to: To<'_>,
        frame: &Frame,
        messages: u64,
        changed: &mut Vec<usize>,
    ) {
        let (clients, settings) = (&mut self.clients, &self.settings);
        let (dirty, metrics) = (&mut self.dirty, &mut self.metrics);
        let (pushes, deflater) = (&mut self.pushes, &mut self.deflater);
        // Engine.IO sessions among the receivers, served after the connections.
        let mut sessions = Vec::new();
        let mut queue = |id: usize, client: &mut Client| {
            if client.conn.is_open() {
                // The plain frame, or the compressed one, made now if this is the first
                // receiver that needs it.
                let (bytes, compressed) = frame.encoded(client.conn.deflate(), deflater);
                let out = Out {
                    dirty: &mut *dirty,
                    changed: &mut *changed,
                    metrics: &mut *metrics,
                    messages,
                    compressed,
                };
                deliver(now, settings, (id, client), bytes, out);
                *pushes += 1;
            }
        };
        match to {
            To::All(skip) => {
                // A broadcast is for the app's own clients: a socket.io client's WebSocket
                // takes only Engine.IO packets.
                for (id, client) in clients.iter_mut() {
                    if !skip.contains(&Some(id)) && client.eio.is_none() {
                        queue(id, client);
                    }
                }
            }
            To::Room(room) => {
                for &id in self.app.members(room) {
                    if is_session(id) {
                        sessions.push(id);
                    } else if let Some(client) = clients.get_mut(id) {
                        queue(id, client);
                    }
                }
            }
            To::One(id) if is_session(id) => sessions.push(id),
            To::One(id) => {
                if let Some(client) = clients.get_mut(id) {
                    queue(id, client);
                }
            }
        }
        for id in sessions {
            self.send_to_session(now, id, frame, messages, changed);
        }
    }

    /// Writes what dirty clients have queued, as far as their sockets take it, oldest first
    /// and at most `writes_left` this turn; the others keep their place for the next.
    fn flush_dirty(&mut self, now: Instant) {
        while self.writes_left > 0 && !self.dirty.is_empty() {
            while self.writes_left > 0
                && let Some(id) = self.dirty.pop_front()
            {
                let Some(client) = self.clients.get_mut(id) else {
                    continue;
                };
                client.dirty = false;
                if client.wants_write() {
                    self.writes_left -= 1;
                }
                client.blocked = write_out(client, now, &self.settings, &mut self.metrics);
                self.sync(now, id);
            }
            // Leaves caused by failed writes queue notices for others.
            self.apply_actions(now);
        }
    }

    /// When the room store has something to do (a retry, a beat, a reply overdue).
    fn store_due(&mut self) -> Option<Instant> {
        self.app.redis().and_then(|s| s.poll_timeout())
    }

    /// The room store's timers, connects and closes; then what it told the app.
    fn store_turn(&mut self, now: Instant) {
        let Some(store) = self.app.redis() else {
            return;
        };
        store.handle_timeout(now);
        for i in 0..LINKS {
            let close = self
                .app
                .redis()
                .and_then(|s| s.link(i))
                .and_then(|l| l.close_requested())
                .map(str::to_owned);
            if let Some(why) = close {
                self.close_store(now, i, &why);
            }
            let connect = self.store[i].is_none()
                && self
                    .app
                    .redis()
                    .and_then(|s| s.link(i))
                    .is_some_and(|l| l.wants_connect(now));
            if connect {
                self.connect_store(now, i);
            }
        }
        self.write_store(now);
        self.app.on_store(&mut self.actions);
        self.apply_actions(now);
        self.relay_turn(now);
    }

    /// Serves what came on this node's relay channel (polls for its sessions from other
    /// nodes, answers to polls passed on from here) and answers polls passed on that reached
    /// no node, or whose answer is overdue.
    fn relay_turn(&mut self, now: Instant) {
        let Some(store) = self.app.redis() else {
            return;
        };
        let (mut messages, mut unheard) = (Vec::new(), Vec::new());
        store.take_relayed(&mut messages, &mut unheard);
        let mut answers: Vec<_> = unheard
            .into_iter()
            .filter_map(|id| self.relays.unheard(id))
            .collect();
        self.relays.expire(now, &mut answers);
        if messages.is_empty() && answers.is_empty() {
            return; // The common turn: nothing relayed.
        }
        for message in &messages {
            match relay::decode(message) {
                Some(relay::Message::Reply(r)) => {
                    if let Some(conn) = self.relays.answered(r.id) {
                        answers.push((conn, r.response.to_vec()));
                    }
                }
                Some(relay::Message::Request(q)) => self.serve_relayed(now, &q),
                None => log!(Warn, "redis: a relay message wsrelay did not write"),
            }
        }
        for (conn, answer) in answers {
            if let Some(client) = self.clients.get_mut(conn)
                && client.conn.is_responding()
            {
                client.conn.respond(now, answer, b"", &self.settings);
                self.sync(now, conn);
            }
        }
        self.apply_actions(now);
    }

    /// A poll another node passed on for a session here: served as if it had come here,
    /// its answer sent back now or when the session has one.
    fn serve_relayed(&mut self, now: Instant, q: &Relayed<'_>) {
        self.metrics.relayed_in += 1;
        let conn = self.relays.remote(q.from, q.id);
        let req = EioRequest {
            method: q.method,
            target: q.target,
            body: q.body,
            cors: Cors {
                origin: q.origin,
                request_headers: None,
            },
            // The node it came to checked the Origin policy.
            foreign: false,
        };
        let (app, actions) = (&mut self.app, &mut self.actions);
        let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
        let answer =
            match self
                .eio
                .handle_request(now, conn, &req, &mut || None, up, &mut self.eio_wire)
            {
                Answer::Now(answer) => answer,
                Answer::Hold { .. } => return,
                // Not ours either (a node whose sid names a third): nobody has it.
                Answer::Elsewhere(_) => response::refusal(Refusal::UnknownSid, &req.cors),
            };
        if self.relays.remote_answered(conn).is_some() {
            let reply = relay::Reply {
                id: q.id,
                response: &answer,
            };
            if let Some(store) = self.app.redis() {
                store.relay(&q.from, &reply.encode(), None, now);
            }
        }
    }

    /// Starts a connect on link `i`. A host name is resolved here, blocking the loop: use an
    /// address or a Unix socket where that matters.
    fn connect_store(&mut self, now: Instant, i: usize) {
        let Some(store) = self.app.redis() else {
            return;
        };
        let stream = match store.endpoint().clone() {
            Endpoint::Tcp { host, port } => {
                use std::net::ToSocketAddrs;
                match (host.as_str(), port).to_socket_addrs() {
                    Ok(mut addrs) => match addrs.next() {
                        Some(addr) => TcpStream::connect(addr).map(|s| {
                            let _ = s.set_nodelay(true);
                            StoreStream::Tcp(s)
                        }),
                        None => Err(io::Error::other(format!("{host}: no address"))),
                    },
                    Err(e) => Err(e),
                }
            }
            Endpoint::Unix(path) => mio::net::UnixStream::connect(path).map(StoreStream::Unix),
        };
        if let Some(link) = store.link_mut(i) {
            link.connecting(now);
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => return store.on_closed(i, now, &e.to_string()),
        };
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            STORE[i],
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return store.on_closed(i, now, &e.to_string());
        }
        self.store[i] = Some(stream);
    }

    /// Closes link `i`'s socket and tells the store why.
    fn close_store(&mut self, now: Instant, i: usize, why: &str) {
        if let Some(mut stream) = self.store[i].take() {
            let _ = self.poll.registry().deregister(stream.source());
        }
        if let Some(store) = self.app.redis() {
            store.on_closed(i, now, why);
        }
    }

    /// Link `i`'s socket is readable or writable: finishes a connect, reads replies.
    fn store_ready(&mut self, now: Instant, i: usize, writable: bool) {
        let Some(stream) = self.store[i].as_mut() else {
            return;
        };
        let Some(store) = self.app.redis() else {
            return;
        };
        if store.link(i).is_some_and(|l| l.is_connecting()) {
            match stream.connected() {
                Ok(true) => store.on_connected(i, now),
                Ok(false) => return,
                Err(e) => return self.close_store(now, i, &e.to_string()),
            }
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut closed = None;
        // Bounded per turn like a client's reads: a busy channel must not starve the clients.
        let start = self.pushes;
        for turn in 0.. {
            let Some(stream) = self.store[i].as_mut() else {
                break;
            };
            if turn == READS_PER_TURN || self.pushes - start >= DELIVERIES_PER_TURN {
                // Not drained: edge-triggered, so no new edge comes; read again next turn.
                self.store_again[i] = true;
                break;
            }
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = Some("closed by Redis".to_owned());
                    break;
                }
                Ok(n) => {
                    let Some(store) = self.app.redis() else { break };
                    store.on_input(i, buf.get(..n).unwrap_or_default(), now);
                    if let Some(why) = store.link(i).and_then(|l| l.close_requested()) {
                        // A bad reply: nothing more on this link can be read.
                        closed = Some(why.to_owned());
                        break;
                    }
                    // What this read completed goes out before the next read, so a flood from
                    // the store never piles up here.
                    self.app.on_store(&mut self.actions);
                    self.apply_actions(now);
                    self.relay_turn(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(e.to_string());
                    break;
                }
            }
        }
        self.read_buf = buf;
        if let Some(why) = closed {
            self.close_store(now, i, &why);
        } else if writable {
            self.write_store(now);
        }
        self.app.on_store(&mut self.actions);
        self.apply_actions(now);
    }

    /// Writes what the store's links have queued, until done or the socket is full (its
    /// writable edge comes back here).
    fn write_store(&mut self, now: Instant) {
        for i in 0..LINKS {
            let mut failed = None;
            while let (Some(stream), Some(link)) = (
                self.store[i].as_mut(),
                self.app.redis().and_then(|s| s.link_mut(i)),
            ) {
                if !link.is_up() || link.output().is_empty() {
                    break;
                }
                match stream.write(link.output()) {
                    Ok(n) => link.consumed(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(why) = failed {
                self.close_store(now, i, &why);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(client) = self.clients.get_mut(id)
                && client.timer == Some(at)
            {
                client.timer = None;
                match client.conn.handle_timeout(now, &self.settings) {
                    None => {}
                    Some(Expired::Pinged) => self.metrics.pings += 1,
                    Some(Expired::Idle) => self.metrics.limit(Limit::IdleTimeout),
                    Some(Expired::Handshake) => self.metrics.limit(Limit::HandshakeTimeout),
                    Some(Expired::Closing) => self.metrics.limit(Limit::CloseTimeout),
                }
                self.sync(now, id);
            }
        }
        if self.app.poll_timeout().is_some_and(|at| at <= now) {
            self.app.handle_timeout(now, &mut self.actions);
        }
        if self.eio.poll_timeout().is_some_and(|at| at <= now) {
            let (app, actions) = (&mut self.app, &mut self.actions);
            let up = &mut |up: Up<'_>| tell_app(app, actions, now, up);
            self.eio.handle_timeout(now, up, &mut self.eio_wire);
        }
        // Presence notices held back by their room's allowance.
        self.app.flush_presence(now, &mut self.actions);
        self.apply_actions(now);
        // Pings for polling sessions go out with their held polls.
        self.flush_sessions(now);
        self.flush_dirty(now);
    }
}

/// Tells the operator about a refused `Origin`, which the page's user cannot see (the browser
/// says only that the connection failed): at `warn`, with the `Host` it was compared with and
/// the flag that would admit it; at most once per origin per minute ([`RefusalLog`]).
fn log_refused_origin(
    log: &mut RefusalLog,
    now: Instant,
    origin: &[u8],
    host: Option<&[u8]>,
    from: Option<IpAddr>,
) {
    let note = log.note(now, origin);
    if note == Note::Quiet {
        return;
    }
    // Peer bytes: cut short and escaped, so a line cannot be forged or made huge.
    let shown = |b: &[u8]| b.get(..200).unwrap_or(b).escape_ascii().to_string();
    let fix = match std::str::from_utf8(origin) {
        Ok(o) if o != "*" && OriginPolicy::valid_entry(o) => {
            format!("to admit it, run with --allow-origin {}", shown(origin))
        }
        _ => "it is not an origin --allow-origin can name".to_owned(),
    };
    let from = from.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
    let host = host.map_or_else(|| "(none)".to_owned(), |h| format!("\"{}\"", shown(h)));
    let more = if note == Note::LogLast {
        "; more refused origins are not logged this minute (wsrelay_limit_hits_total counts them)"
    } else {
        ""
    };
    log!(
        Warn,
        "refused Origin \"{}\" from {from} with 403: not the same origin as Host {host} \
         and not allowed by --allow-origin; {fix} (not logged again for this origin for a \
         minute{more})",
        shown(origin)
    );
}

/// Forwards what the Engine.IO layer tells the app (the seam in `crate::sio`).
fn tell_app(app: &mut App, actions: &mut Vec<Action>, now: Instant, up: Up<'_>) {
    match up {
        Up::Open { id, query } => app.on_eio_open(id, query, now, actions),
        Up::Text { id, text } => app.on_eio_text(id, text, now, actions),
        Up::Binary { id, data } => app.on_eio_binary(id, data, now, actions),
        Up::Closed { id } => app.on_eio_close(id, actions),
    }
}

/// The receivers of [`Server::fan_out`].
enum To<'a> {
    /// Every client but these (a broadcast's sender, a batch's reader).
    All([Option<usize>; 2]),
    /// The members of a chat room.
    Room(&'a str),
    /// One client.
    One(usize),
}

/// Where [`deliver`] reports: `dirty` collects clients with output, `changed` those whose
/// state may have changed.
struct Out<'a> {
    dirty: &'a mut VecDeque<usize>,
    changed: &'a mut Vec<usize>,
    metrics: &'a mut Metrics,
    /// Messages in the chunk, for the deliveries count (a batch holds several).
    messages: u64,
    /// The chunk is (or holds) compressed frames.
    compressed: bool,
}

/// Queues a frame for a client.
fn deliver(
    now: Instant,
    settings: &Settings,
    (id, client): (usize, &mut Client),
    frame: Rc<[u8]>,
    out: Out<'_>,
) {
    // TLS records not yet taken count too: the budget is what the peer has not taken.
    let queued = client.conn.queued() + client.unsent();
    if queued > 0 && queued + frame.len() > settings.max_output {
        // The budget is for what the peer does not take, not for what this turn produced:
        // give the socket a chance before calling the peer slow, even one that would block
        // (its writable edge may be among this turn's events, not yet seen: one syscall).
        client.blocked = write_out(client, now, settings, out.metrics);
        out.changed.push(id);
    }
    let unsent = client.unsent();
    let sent = client
        .conn
        .send_behind(now, Chunk::Shared(frame), settings, unsent);
    if sent == Sent::Queued {
        out.metrics.deliveries += out.messages;
        if out.compressed {
            out.metrics.deflate_deliveries += out.messages;
        }
    }
    match sent {
        Sent::Queued if !client.dirty && !client.blocked => {
            client.dirty = true;
            out.dirty.push_back(id);
        }
        Sent::Overflow => {
            log!(Debug, "closing slow consumer {id}");
            out.metrics.slow_consumers += 1;
            out.metrics.close_sent(CloseCode::POLICY);
            out.metrics.limit(Limit::MaxOutput);
            out.changed.push(id);
        }
        _ => {}
    }
}

/// Writes queued output until it is gone or the socket would block; returns true if it would.
/// A write the kernel took only part of found the send buffer full: that is `WouldBlock`
/// without the call that would say so (TCP marks the socket to report the writable edge;
/// nginx's `ngx_unix_send` clears `ready` the same way).
fn write_out(client: &mut Client, now: Instant, settings: &Settings, m: &mut Metrics) -> bool {
    if client.tls.is_some() {
        return write_out_tls(client, now, settings, m);
    }
    // Checked before the slice array is made: zeroing it was most of this function's time.
    while client.conn.wants_write() {
        // One chunk goes out by send(2): writev(2) adds the VFS layer's checks and
        // notifications on top of the same TCP send (2-3 % of an echo's server time here).
        let (result, offered) = if let Some(one) = client.conn.sole_chunk() {
            (client.stream.write(one), one.len())
        } else {
            let mut slices = [IoSlice::new(&[]); IOVECS];
            let n = client.conn.io_slices(&mut slices);
            if n == 0 {
                break;
            }
            let slices = slices.get(..n).unwrap_or_default();
            let offered: usize = slices.iter().map(|s| s.len()).sum();
            let result = match slices {
                [one] => client.stream.write(one),
                _ => client.stream.write_vectored(slices),
            };
            (result, offered)
        };
        match result {
            Ok(0) => {
                client.conn.handle_error();
                return false;
            }
            Ok(written) => {
                if !client.admin {
                    m.bytes_out += written as u64;
                }
                client.conn.handle_written(written);
                if written < offered {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                client.conn.handle_error();
                return false;
            }
        }
    }
    if client.conn.handle_flushed(now, settings) {
        shutdown_write(client);
    }
    false
}

/// [`write_out`] for a TLS client: records not taken last time first, then queued output
/// encrypted [`TLS_BATCH`] at a time into the loop's scratch buffer and written from there;
/// only what the socket does not take is kept with the connection.
fn write_out_tls(client: &mut Client, now: Instant, settings: &Settings, m: &mut Metrics) -> bool {
    let Client {
        stream, conn, tls, ..
    } = client;
    let Some(tls) = tls.as_mut() else {
        return false;
    };
    let blocked = TLS_SCRATCH.with_borrow_mut(|(plain, records)| {
        loop {
            if !tls.unsent().is_empty() {
                match stream.write(tls.unsent()) {
                    Ok(0) => return Err(()),
                    Ok(n) => {
                        m.bytes_out += n as u64;
                        tls.handle_written(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(()),
                }
            }
            // Before the handshake is done output waits in the queue (none is made then);
            // after close_notify none can be sent: the connection is over.
            if !tls.may_send() {
                return if tls.is_closed() && conn.wants_write() {
                    Err(())
                } else {
                    Ok(false)
                };
            }
            let mut slices = [IoSlice::new(&[]); IOVECS];
            let n = conn.io_slices(&mut slices);
            let Some(first) = slices.first().filter(|_| n > 0) else {
                return Ok(false);
            };
            // One slice (a receiver's shared broadcast chunk, typically) or a full record's
            // worth in the first is encrypted from where it is; several are gathered first, so
            // tiny frames share a record.
            let data: &[u8] = if n == 1 || first.len() >= TLS_BATCH {
                first.get(..TLS_BATCH.min(first.len())).unwrap_or_default()
            } else {
                plain.clear();
                for slice in slices.get(..n).unwrap_or_default() {
                    let room = TLS_BATCH - plain.len();
                    plain.extend_from_slice(slice.get(..room.min(slice.len())).unwrap_or_default());
                    if plain.len() == TLS_BATCH {
                        break;
                    }
                }
                plain
            };
            let size = Tls::sealed_len(TLS_BATCH);
            if records.len() < size {
                records.resize(size, 0);
            }
            let used = data.len();
            let sealed = match tls.encrypt_to(data, records) {
                Ok(sealed) => sealed,
                Err(e) => {
                    log!(Debug, "{e}");
                    return Err(());
                }
            };
            conn.handle_written(used);
            if !tls.unsent().is_empty() {
                // Handshake records rustls made on the way (a key update's answer) go first:
                // these were sealed with the keys that follow them.
                tls.keep(records.get(..sealed).unwrap_or_default());
                continue;
            }
            let mut at = 0;
            while let Some(rest) = records.get(at..sealed).filter(|r| !r.is_empty()) {
                match stream.write(rest) {
                    Ok(0) => return Err(()),
                    Ok(n) => {
                        m.bytes_out += n as u64;
                        at += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tls.keep(rest);
                        return Ok(true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(()),
                }
            }
        }
    });
    match blocked {
        Ok(true) => return true,
        Ok(false) => {}
        Err(()) => {
            conn.handle_error();
            return false;
        }
    }
    if client.conn.handle_flushed(now, settings) {
        shutdown_write(client);
    }
    false
}

/// Shuts the socket's write half after the last bytes of a close or a response, with a
/// TLS `close_notify` first (RFC 8446 §6.1) on a TLS connection.
fn shutdown_write(client: &mut Client) {
    if let Some(tls) = client.tls.as_mut() {
        tls.close_notify();
        // One write, best effort: the socket has just taken everything before it.
        if let Ok(n) = client.stream.write(tls.unsent()) {
            tls.handle_written(n);
        }
    }
    let _ = client.stream.shutdown(Shutdown::Write);
}
