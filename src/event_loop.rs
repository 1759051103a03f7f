//! The only module that touches mio: the listener, client sockets in a `Slab`, write queues,
//! deadlines and signals, on one thread.
//!
//! Sockets are registered once, edge-triggered, for both directions; reads drain to
//! `WouldBlock` (bounded per turn for fairness), writes are batched with `write_vectored`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::app::{Action, App};
use crate::conn::{Chunk, Conn, Event, Sent, Settings};
use crate::http;
use crate::log;
use crate::proto::CloseCode;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Bytes read per `read` call; one buffer shared by every connection.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per turn before others get theirs.
const READS_PER_TURN: usize = 16;
/// Slices per `write_vectored` call (below Linux's IOV_MAX of 1024).
const IOVECS: usize = 64;
/// How long to stop accepting after EMFILE/ENFILE, so a full fd table does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Largest run of one read's broadcast frames queued to a receiver as one chunk.
const BATCH_MAX: usize = 64 * 1024;

/// One accepted client.
struct Client {
    stream: TcpStream,
    conn: Conn,
    /// Whether the app has been told this connection joined.
    joined: bool,
    /// Whether it is in `Server::dirty`.
    dirty: bool,
    /// The last write hit `WouldBlock`: wait for the writable edge before writing again.
    blocked: bool,
    /// The deadline last put in the timer heap.
    timer: Option<Instant>,
}

// The loop's whole per-connection cost besides the kernel's socket: keep it visible.
const _: () = assert!(size_of::<Client>() <= 160);

/// The server: a listener, its clients and the app.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    clients: Slab<Client>,
    app: App,
    settings: Settings,
    read_buf: Vec<u8>,
    actions: Vec<Action>,
    /// Clients with output to write this turn.
    dirty: Vec<usize>,
    /// Clients whose reads were cut short for fairness.
    readable: Vec<usize>,
    /// The client whose read is being handled.
    reading: Option<usize>,
    /// Broadcast frames from that read not yet queued to the other receivers: each gets one
    /// chunk per read instead of one per message. `batch_skip` holds the reader (it got its
    /// copies one by one, in order with its own output) and the broadcast's `except`.
    batch: Vec<u8>,
    batch_skip: [Option<usize>; 2],
    /// Deadlines, earliest first; entries can be stale (checked against the connection).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    accept_paused_until: Option<Instant>,
    shutdown_timeout: Duration,
    shutdown_deadline: Option<Instant>,
}

impl Server {
    /// Sets up the loop around an already bound, non-blocking listener.
    pub fn new(
        listener: std::net::TcpListener,
        app: App,
        settings: Settings,
        shutdown_timeout: Duration,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener,
            signals,
            clients: Slab::new(),
            app,
            settings,
            read_buf: vec![0; READ_BUF],
            actions: Vec::new(),
            dirty: Vec::new(),
            readable: Vec::new(),
            reading: None,
            batch: Vec::new(),
            batch_skip: [None; 2],
            timers: BinaryHeap::new(),
            accept_paused_until: None,
            shutdown_timeout,
            shutdown_deadline: None,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until a signal asks to stop and every client has closed (or the deadline passed).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            // Clients cut short last turn; this turn's go to the next, so none reads twice.
            let again = std::mem::take(&mut self.readable);
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(now),
                    SIGNALS => self.handle_signals(now),
                    Token(id) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(now, id);
                        }
                        if event.is_writable() {
                            self.mark_dirty(id);
                        }
                    }
                }
            }
            for id in again {
                self.read(now, id);
            }
            self.apply_actions(now);
            self.flush_dirty(now);
            self.fire_timers(now);
            if let Some(at) = self.accept_paused_until
                && at <= now
            {
                self.accept_paused_until = None;
                self.accept(now);
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

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.readable.is_empty() {
            return Some(Duration::ZERO);
        }
        [
            self.timers.peek().map(|Reverse((at, _))| *at),
            self.accept_paused_until,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        // Round up so a deadline is not polled for again just before it expires.
        .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn accept(&mut self, now: Instant) {
        while self.shutdown_deadline.is_none() && self.accept_paused_until.is_none() {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
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
                        continue;
                    }
                    let conn = Conn::new(now, &self.settings);
                    entry.insert(Client {
                        stream,
                        conn,
                        joined: false,
                        dirty: false,
                        blocked: false,
                        timer: None,
                    });
                    log!(Debug, "accepted {peer} as {id}");
                    self.sync(now, id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    log!(Warn, "accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                }
                // ECONNABORTED and the like concern one peer only.
                Err(e) => log!(Debug, "accept: {e}"),
            }
        }
    }

    fn handle_signals(&mut self, now: Instant) {
        let count = self.signals.pending().count();
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
        self.shutdown_deadline = Some(now + self.shutdown_timeout);
        let _ = self.poll.registry().deregister(&mut self.listener);
        let ids: Vec<usize> = self.clients.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(c) = self.clients.get_mut(id) {
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

    /// Reads until `WouldBlock`, EOF or the per-turn cap, feeding the connection.
    fn read(&mut self, now: Instant, id: usize) {
        // Taken out so the app's actions can run between the messages of one read.
        let mut buf = std::mem::take(&mut self.read_buf);
        for turn in 0.. {
            let Some(client) = self.clients.get_mut(id) else {
                break; // "Sporadic events happen" (mio), and a client can be gone by now.
            };
            if !client.conn.wants_read() {
                break;
            }
            if turn == READS_PER_TURN {
                self.readable.push(id);
                break;
            }
            match client.stream.read(&mut buf) {
                Ok(0) => client.conn.handle_eof(),
                Ok(n) => {
                    self.reading = Some(id);
                    self.handle_input(now, id, buf.get_mut(..n).unwrap_or_default());
                    self.reading = None;
                    self.apply_actions(now); // the batch goes out to the others
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log!(Debug, "read from {id}: {e}");
                    client.conn.handle_error();
                }
            }
            self.sync(now, id);
        }
        self.read_buf = buf;
    }

    /// Feeds one read's bytes to a connection, one application event at a time.
    fn handle_input(&mut self, now: Instant, id: usize, input: &mut [u8]) {
        let mut pos = 0;
        while let Some(rest) = input.get_mut(pos..).filter(|r| !r.is_empty()) {
            let Some(client) = self.clients.get_mut(id) else {
                return;
            };
            let app = &mut self.app;
            let actions = &mut self.actions;
            let mut response = None;
            let used =
                client
                    .conn
                    .handle_bytes(now, rest, &self.settings, &mut |event| match event {
                        Event::Upgraded { .. } => {}
                        Event::Request { path } => response = Some(http::route(path)),
                        Event::Text(text) => app.on_text(id, text, actions),
                        Event::Binary(data) => app.on_binary(id, data, actions),
                    });
            if let Some(r) = response {
                client.conn.respond(now, r.head, r.body, &self.settings);
            }
            self.sync(now, id);
            self.apply_actions(now);
            if used == 0 {
                debug_assert!(false, "handle_bytes made no progress");
                return;
            }
            pos += used;
        }
    }

    /// Brings the loop's view of a client in line with its connection state.
    fn sync(&mut self, now: Instant, id: usize) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let open = client.conn.is_open();
        if open != client.joined {
            client.joined = open;
            // At shutdown nobody is left to tell, and N notices to N clients would be O(N²).
            if self.shutdown_deadline.is_none() {
                if open {
                    self.app.on_join(id, &mut self.actions);
                } else {
                    self.app.on_leave(id, &mut self.actions);
                }
            }
        }
        if client.conn.wants_write() {
            if !client.dirty && !client.blocked {
                client.dirty = true;
                self.dirty.push(id);
            }
        } else if client.conn.handle_flushed(now, &self.settings) {
            // A state change with nothing left to write (e.g. the peer's close reply to ours).
            let _ = client.stream.shutdown(Shutdown::Write);
        }
        let deadline = client.conn.poll_timeout();
        if deadline != client.timer {
            client.timer = deadline;
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, id)));
            }
        }
        if client.conn.is_done() {
            let mut client = self.clients.remove(id);
            let _ = self.poll.registry().deregister(&mut client.stream);
            log!(Debug, "closed {id}");
        }
    }

    /// The socket became writable.
    fn mark_dirty(&mut self, id: usize) {
        if let Some(client) = self.clients.get_mut(id) {
            client.blocked = false;
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Runs the app's actions; closing a slow consumer can add more (its leave notice).
    fn apply_actions(&mut self, now: Instant) {
        let mut overflowed = Vec::new();
        while !self.actions.is_empty() || (self.reading.is_none() && !self.batch.is_empty()) {
            for action in std::mem::take(&mut self.actions) {
                if !matches!(action, Action::Broadcast { .. }) {
                    // Whatever came before goes first.
                    self.flush_batch(now, &mut overflowed);
                }
                match action {
                    Action::Broadcast { frame, except } => {
                        if let Some(reader) = self.reading
                            && frame.len() < BATCH_MAX
                        {
                            self.batch_broadcast(now, reader, frame, except, &mut overflowed);
                            continue;
                        }
                        self.flush_batch(now, &mut overflowed);
                        for (id, client) in &mut self.clients {
                            if Some(id) == except || !client.conn.is_open() {
                                continue;
                            }
                            let (dirty, settings) = (&mut self.dirty, &self.settings);
                            let frame = frame.clone();
                            deliver(now, settings, (id, client), frame, dirty, &mut overflowed);
                        }
                    }
                    Action::Send { to, frame } => {
                        if let Some(client) = self.clients.get_mut(to) {
                            deliver(
                                now,
                                &self.settings,
                                (to, client),
                                frame,
                                &mut self.dirty,
                                &mut overflowed,
                            );
                        }
                    }
                    Action::Close { to, code, reason } => {
                        if let Some(client) = self.clients.get_mut(to) {
                            client.conn.fail(now, code, reason, &self.settings);
                            overflowed.push(to);
                        }
                    }
                }
            }
            if self.reading.is_none() {
                self.flush_batch(now, &mut overflowed);
            }
            for id in overflowed.drain(..) {
                self.sync(now, id);
            }
        }
    }

    /// Queues a broadcast from the reader's current read: the reader's own copy now, the
    /// others' into the batch.
    fn batch_broadcast(
        &mut self,
        now: Instant,
        reader: usize,
        frame: Rc<[u8]>,
        except: Option<usize>,
        changed: &mut Vec<usize>,
    ) {
        let skip = [Some(reader), except];
        if skip != self.batch_skip || self.batch.len() + frame.len() > BATCH_MAX {
            self.flush_batch(now, changed);
        }
        self.batch_skip = skip;
        self.batch.extend_from_slice(&frame);
        if except != Some(reader)
            && let Some(client) = self.clients.get_mut(reader)
            && client.conn.is_open()
        {
            deliver(
                now,
                &self.settings,
                (reader, client),
                frame,
                &mut self.dirty,
                changed,
            );
        }
    }

    /// Queues the batched frames, as one shared chunk, to every open client not skipped.
    fn flush_batch(&mut self, now: Instant, changed: &mut Vec<usize>) {
        if self.batch.is_empty() {
            return;
        }
        let frames: Rc<[u8]> = Rc::from(&self.batch[..]);
        self.batch.clear();
        for (id, client) in &mut self.clients {
            if self.batch_skip.contains(&Some(id)) || !client.conn.is_open() {
                continue;
            }
            let (dirty, settings) = (&mut self.dirty, &self.settings);
            deliver(now, settings, (id, client), frames.clone(), dirty, changed);
        }
    }

    /// Writes what each dirty client has queued, as far as its socket takes it.
    fn flush_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            for id in std::mem::take(&mut self.dirty) {
                let Some(client) = self.clients.get_mut(id) else {
                    continue;
                };
                client.dirty = false;
                client.blocked = write_out(client, now, &self.settings);
                self.sync(now, id);
            }
            // Leaves caused by failed writes queue notices for others.
            self.apply_actions(now);
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
                client.conn.handle_timeout(now);
                self.sync(now, id);
            }
        }
        self.apply_actions(now);
        self.flush_dirty(now);
    }
}

/// Queues a frame for a client; `dirty` collects clients with output, `changed` those whose
/// state may have changed.
fn deliver(
    now: Instant,
    settings: &Settings,
    (id, client): (usize, &mut Client),
    frame: Rc<[u8]>,
    dirty: &mut Vec<usize>,
    changed: &mut Vec<usize>,
) {
    let queued = client.conn.queued();
    if queued > 0 && queued + frame.len() > settings.max_output && !client.blocked {
        // The budget is for what the peer does not take, not for what this turn produced:
        // give the socket a chance before calling the peer slow.
        client.blocked = write_out(client, now, settings);
        changed.push(id);
    }
    let sent = client.conn.send(now, Chunk::Shared(frame), settings);
    match sent {
        Sent::Queued if !client.dirty && !client.blocked => {
            client.dirty = true;
            dirty.push(id);
        }
        Sent::Overflow => {
            log!(Debug, "closing slow consumer {id}");
            changed.push(id);
        }
        _ => {}
    }
}

/// Writes queued output until it is gone or the socket would block; returns true if it would.
fn write_out(client: &mut Client, now: Instant, settings: &Settings) -> bool {
    loop {
        let mut slices = [IoSlice::new(&[]); IOVECS];
        let n = client.conn.io_slices(&mut slices);
        if n == 0 {
            break;
        }
        let result = client
            .stream
            .write_vectored(slices.get(..n).unwrap_or_default());
        match result {
            Ok(0) => {
                client.conn.handle_error();
                return false;
            }
            Ok(written) => client.conn.handle_written(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                client.conn.handle_error();
                return false;
            }
        }
    }
    if client.conn.handle_flushed(now, settings) {
        let _ = client.stream.shutdown(Shutdown::Write);
    }
    false
}
