//! A worker process: up to ~19,000 client connections from one source address, in one mio
//! loop, spread over the servers it is given (connection i to server i mod n). It talks to the coordinator over a loopback UDP socket: it says `ready <id>` once
//! every connection is upgraded and `low <id> <seq>` as subscribers progress; it obeys
//! `start`, `stop`, `finish <published>` and `quit`, and prints one `RESULT` line on exit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use wsrelay::proto::OpCode;

use crate::client::{Client, Inflate, Phase, connect_from};
use crate::dialect::{Delivery, Dialect};
use crate::stats::{Histogram, now_ns};

const CTL: Token = Token(usize::MAX - 1);
/// Connects and handshakes in flight at once, so the server's accept backlog never overflows.
const CONNECT_WINDOW: usize = 256;
/// Sequence numbers tracked for the low watermark; far above any in-flight window.
const RING: usize = 1 << 17;
/// Shortest gap between two progress reports, and the longest.
const REPORT_MIN: Duration = Duration::from_millis(1);
const REPORT_MAX: Duration = Duration::from_millis(100);
/// How long to connect everything.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an echo worker waits for answers still in flight after `stop`.
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Hold the connection, send nothing.
    Idle,
    /// Receive broadcasts: check order, measure latency, report the low watermark.
    Sub,
    /// Request/response: send one message, wait for it back, repeat.
    Echo,
}

/// A worker's orders.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// This worker's number in the coordinator's list.
    #[arg(long)]
    pub id: usize,
    /// The servers under test (comma-separated): connection i goes to server i mod n.
    #[arg(long, value_delimiter = ',', required = true)]
    pub server: Vec<SocketAddrV4>,
    /// What the clients speak over their WebSocket.
    #[arg(long, value_enum, default_value_t = Dialect::Raw)]
    pub dialect: Dialect,
    /// Source address to connect from (anywhere in 127.0.0.0/8).
    #[arg(long)]
    pub src: Ipv4Addr,
    /// Connections to open.
    #[arg(long)]
    pub conns: usize,
    /// What the connections do.
    #[arg(long, value_enum)]
    pub role: Role,
    /// The coordinator's UDP address.
    #[arg(long)]
    pub ctl: SocketAddr,
    /// Echo message size in bytes (at least 16).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// The worker exits after this long whatever happens.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
    /// Offer permessage-deflate, as Chromium does.
    #[arg(long)]
    pub deflate: bool,
    /// Speak TLS, trusting the CA in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
}

/// One subscriber's view of the sequence.
#[derive(Default, Clone)]
struct Seen {
    next: u64,
    received: u64,
    reordered: u64,
    /// The server's sequence number of the last delivery, where the server gives one.
    last_order: Option<u64>,
    /// Deliveries whose server sequence number was not above the one before.
    order_errors: u64,
}

/// The server's sequence number for each publisher sequence number, as the first receiver in
/// this worker saw it; every other receiver (on any server) must see the same one.
struct Orders {
    ring: Vec<(u64, u64)>,
    disagree: u64,
}

impl Orders {
    fn check(&mut self, d: &Delivery) {
        let Some(order) = d.order else { return };
        let slot = &mut self.ring[(d.seq % RING as u64) as usize];
        // Publisher sequence numbers start at 0: store seq + 1 so an empty slot is (0, _).
        if slot.0 != d.seq + 1 {
            *slot = (d.seq + 1, order);
        } else if slot.1 != order {
            self.disagree += 1;
        }
    }
}

/// Counts, per sequence number, the receivers that have it; `low` is the first not yet
/// everywhere.
struct Watermark {
    low: u64,
    ring: Vec<u32>,
    overrun: u64,
}

impl Watermark {
    fn mark(&mut self, seq: u64) {
        if seq < self.low {
            return;
        }
        if seq - self.low >= RING as u64 {
            self.overrun += 1;
            return;
        }
        self.ring[(seq % RING as u64) as usize] += 1;
    }

    fn advance(&mut self, receivers: u32) {
        loop {
            let slot = &mut self.ring[(self.low % RING as u64) as usize];
            if *slot < receivers || receivers == 0 {
                return;
            }
            *slot = 0;
            self.low += 1;
        }
    }
}

/// Runs the worker until `finish`/`quit`, its deadline, or a fatal error.
pub fn run(args: &WorkerArgs) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut ctl = UdpSocket::bind("127.0.0.1:0".parse().expect("literal address"))?;
    ctl.connect(args.ctl)?;
    poll.registry()
        .register(&mut ctl, CTL, Interest::READABLE)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_secs);
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 256 * 1024];
    let mut clients: Vec<Client> = Vec::with_capacity(args.conns);
    let tls = match &args.tls_ca {
        Some(ca) => Some(crate::client::tls_config(ca)?),
        None => None,
    };
    let mut seen = vec![Seen::default(); args.conns];
    let mut mark = Watermark {
        low: 0,
        ring: vec![0; RING],
        overrun: 0,
    };
    let mut orders = Orders {
        // The dialects whose deliveries carry the server's seq (socketio: wsrelay's offset).
        ring: if matches!(args.dialect, Dialect::Chat | Dialect::Socketio) {
            vec![(0, 0); RING]
        } else {
            Vec::new()
        },
        disagree: 0,
    };
    let mut hist = Histogram::new();
    let mut zlib = Inflate::default();
    let (mut upgraded, mut closed) = (0usize, 0usize);
    let (mut commanded, mut last_ready) = (false, None::<Instant>);
    let (mut reported_low, mut last_report) = (u64::MAX, started);
    let mut echo_on = false;
    let mut stop_at: Option<Instant> = None;
    let mut outstanding = 0u64;
    let payload_len = args.size.max(16);
    let mut payload = vec![0u8; payload_len];
    let mut pending_sends: Vec<usize> = Vec::new();

    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::other("worker deadline passed"));
        }
        // Open more connections, a window at a time.
        while clients.len() < args.conns && clients.len() - upgraded - closed < CONNECT_WINDOW {
            let i = clients.len();
            let server = args.server[i % args.server.len()];
            let mut stream = connect_from(args.src, server)
                .map_err(|e| io::Error::other(format!("connect from {}: {e}", args.src)))?;
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let seed = i as u32 + 1;
            clients.push(Client::new(
                stream,
                server,
                seed,
                args.dialect,
                args.deflate,
                tls.as_ref(),
            ));
        }
        if upgraded + closed < args.conns && now - started > CONNECT_TIMEOUT {
            return Err(io::Error::other(format!(
                "only {upgraded} of {} connections upgraded",
                args.conns
            )));
        }
        if upgraded == args.conns && !commanded && last_ready.is_none_or(|t| now - t > REPORT_MAX) {
            let _ = ctl.send(format!("ready {}", args.id).as_bytes());
            last_ready = Some(now);
        }
        if args.role == Role::Sub {
            mark.advance((args.conns - closed) as u32);
            let due = if mark.low != reported_low {
                now - last_report >= REPORT_MIN
            } else {
                now - last_report >= REPORT_MAX
            };
            if due && upgraded == args.conns {
                let _ = ctl.send(format!("low {} {}", args.id, mark.low).as_bytes());
                reported_low = mark.low;
                last_report = now;
            }
        }
        if let Some(at) = stop_at
            && (outstanding == 0 || now - at > STOP_DRAIN)
        {
            print_result(args, &clients, &seen, None, &hist, outstanding, 0);
            return Ok(());
        }

        let timeout = if reported_low != mark.low {
            REPORT_MIN
        } else {
            Duration::from_millis(20)
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            if event.token() == CTL {
                let mut cmd = [0u8; 256];
                while let Ok(n) = ctl.recv(&mut cmd) {
                    commanded = true;
                    let text = String::from_utf8_lossy(&cmd[..n]).into_owned();
                    let mut words = text.split_whitespace();
                    match words.next() {
                        Some("finish") => {
                            let total = words.next().and_then(|w| w.parse().ok());
                            let disagree = orders.disagree;
                            print_result(args, &clients, &seen, total, &hist, 0, disagree);
                            return Ok(());
                        }
                        Some("quit") => {
                            print_result(args, &clients, &seen, None, &hist, 0, 0);
                            return Ok(());
                        }
                        Some("start") if args.role == Role::Echo => {
                            echo_on = true;
                            pending_sends.extend(
                                (0..clients.len()).filter(|&i| clients[i].phase == Phase::Open),
                            );
                        }
                        Some("stop") => {
                            echo_on = false;
                            stop_at = Some(Instant::now());
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let i = event.token().0;
            let Some(client) = clients.get_mut(i) else {
                continue;
            };
            let before = client.phase;
            let mut result = Ok(());
            if event.is_writable() {
                result = client.on_writable();
            }
            if result.is_ok() && (event.is_readable() || event.is_read_closed()) {
                let s = &mut seen[i];
                let (role, hist, mark, orders) = (args.role, &mut hist, &mut mark, &mut orders);
                let mut replies = 0;
                // One clock read per readiness event: what one event's reads bring arrived
                // together, and a clock read per message would cost as much as the rest.
                let arrived = now_ns();
                result = client.on_readable(&mut buf, &mut zlib, &mut |d| {
                    let Delivery {
                        seq,
                        sent_ns,
                        order,
                    } = d;
                    hist.record(arrived.saturating_sub(sent_ns) / 1000);
                    s.received += 1;
                    if let Some(order) = order {
                        if s.last_order.is_some_and(|last| order <= last) {
                            s.order_errors += 1;
                        }
                        s.last_order = Some(order);
                        orders.check(&d);
                    }
                    match role {
                        Role::Sub if seq >= s.next && seq - s.next < RING as u64 => {
                            // A gap is marked too: the run goes on and `lost` reports it.
                            for skipped in s.next..=seq {
                                mark.mark(skipped);
                            }
                            s.next = seq + 1;
                        }
                        Role::Sub if seq >= s.next => mark.overrun += 1,
                        Role::Sub => s.reordered += 1,
                        _ => replies += 1,
                    }
                });
                if replies > 0 {
                    outstanding = outstanding.saturating_sub(replies);
                    if echo_on {
                        pending_sends.push(i);
                    }
                }
            }
            let after = if result.is_err() {
                Phase::Closed
            } else {
                client.phase
            };
            if before != Phase::Open && after == Phase::Open {
                upgraded += 1;
            }
            if before != Phase::Closed && after == Phase::Closed {
                client.phase = Phase::Closed;
                if before == Phase::Open {
                    upgraded -= 1;
                }
                closed += 1;
                if let Err(e) = result
                    && before != Phase::Open
                {
                    return Err(io::Error::other(format!("handshake: {e}")));
                }
            }
        }
        // Echo: each answered connection sends its next request.
        for i in pending_sends.drain(..) {
            let Some(client) = clients.get_mut(i) else {
                continue;
            };
            if client.phase != Phase::Open {
                continue;
            }
            let seq = seen[i].received;
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            payload[8..16].copy_from_slice(&now_ns().to_le_bytes());
            client.queue_frame(OpCode::Binary, &payload);
            outstanding += 1;
            if client.flush().is_err() {
                client.phase = Phase::Closed;
                upgraded -= 1;
                closed += 1;
            }
        }
    }
}

fn print_result(
    args: &WorkerArgs,
    clients: &[Client],
    seen: &[Seen],
    published: Option<u64>,
    hist: &Histogram,
    outstanding: u64,
    disagree: u64,
) {
    let open = clients.iter().filter(|c| c.phase == Phase::Open).count();
    let wire: u64 = clients.iter().map(|c| c.wire_bytes).sum();
    let received: u64 = seen.iter().map(|s| s.received).sum();
    let reordered: u64 = seen.iter().map(|s| s.reordered).sum();
    let order_errors: u64 = seen.iter().map(|s| s.order_errors).sum();
    let (mut lost, mut missing) = (0, 0);
    if let Some(total) = published {
        for s in seen {
            let short = total.saturating_sub(s.received);
            lost += short;
            missing += u64::from(short > 0);
        }
    }
    println!(
        "RESULT id={} conns={} open={open} received={received} lost={lost} reordered={reordered} \
         missing={missing} outstanding={outstanding} order_errors={order_errors} \
         disagree={disagree} wire={wire} hist={}",
        args.id,
        args.conns,
        hist.encode()
    );
}
