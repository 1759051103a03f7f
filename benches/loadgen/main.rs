//! wsrelay's load generator: idle density, broadcast fan-out and echo against any WebSocket
//! server on loopback, for comparing wsrelay with other servers in the same run.
//!
//! A server may be several processes: `--server` lists the addresses clients spread over
//! (one per node of a cluster, or one port shared by processes), `--pid` the processes whose
//! memory and CPU count, `--redis-pid` a store they share, reported on its own. `--dialect`
//! says what the clients speak: raw frames (relay servers), wsrelay's chat JSON, or socket.io.
//!
//! The coordinator (`idle`, `fanout`, `echo`) spawns worker processes (`worker`), each holding
//! at most `--per-proc` connections from its own source address in 127.0.0.0/8, and talks to
//! them over loopback UDP. It reads the server's RSS and CPU from `/proc/PID`, and its own and
//! its workers' CPU, so a result bound by the load generator shows as such. Every run is
//! bounded in time and in messages. It prints one `RESULT key=value …` line; `table` turns a
//! file of them into the comparison table. See `BENCHMARKS.md`.

mod client;
mod dialect;
mod stats;
mod table;
mod worker;

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use client::{Client, Inflate, Phase, connect_from};
use dialect::Dialect;
use stats::{Histogram, core_ticks, cpu_secs, now_ns, open_files, pinned_core, rss_bytes};
use worker::{Role, WorkerArgs};

const CTL: Token = Token(0);
const PUB: Token = Token(1);
/// How long workers get to connect everything and say so.
const READY_TIMEOUT: Duration = Duration::from_secs(150);
/// How long broadcasts may take to reach every subscriber after the last publish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a worker may take to report and exit once told to.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Parser)]
#[command(about = "Load generator for WebSocket servers on loopback")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N idle connections; report the server's RSS per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to hold.
        #[arg(long)]
        conns: usize,
        /// Connections opened and held before the baseline is taken.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        /// Seconds to let the server settle before each RSS reading.
        #[arg(long, default_value_t = 2)]
        settle: u64,
    },
    /// N subscribers and one publisher; the server must send every message to every client.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Subscribers.
        #[arg(long)]
        subs: usize,
        /// Payload bytes per message (at least 16: sequence number and send time; 32 in the
        /// text dialects, where they are hex).
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Open loop: publish this many messages per second. Without it: saturated, with at
        /// most `--window` messages not yet received by every subscriber.
        #[arg(long)]
        rate: Option<f64>,
        /// In-flight window for the saturated mode (default: up to 64 KiB per subscriber).
        #[arg(long)]
        window: Option<u64>,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Most deliveries (messages × subscribers) one run may ask for.
        #[arg(long, default_value_t = 200_000_000)]
        max_deliveries: u64,
    },
    /// C connections doing request/response.
    Echo {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long)]
        conns: usize,
        /// Payload bytes (at least 16).
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Full TLS handshakes per second (needs --tls-ca): C connections at once, each closed once
    /// its handshake is done and replaced by a new one; no resumption.
    Handshakes {
        #[command(flatten)]
        common: Common,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 32)]
        conns: usize,
        /// Seconds of handshaking.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// One worker process (started by the others).
    Worker(WorkerArgs),
    /// Print the comparison table from a file of RESULT lines.
    Table {
        /// The file.
        file: PathBuf,
        /// The label of our server; every other label is compared with it.
        #[arg(long, default_value = "wsrelay")]
        ours: String,
    },
}

#[derive(clap::Args)]
struct Common {
    /// The server under test: addresses, comma-separated; clients are spread over them in
    /// turn, and a fan-out's publisher connects to the first.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<SocketAddrV4>,
    /// The server's process ids (comma-separated), for RSS and CPU, summed.
    #[arg(long, value_delimiter = ',', required = true)]
    pid: Vec<u32>,
    /// A store the server processes share (Redis): its CPU is reported apart.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// What the clients speak.
    #[arg(long, value_enum, default_value_t = Dialect::Raw)]
    dialect: Dialect,
    /// Names the server in the RESULT line.
    #[arg(long)]
    label: String,
    /// Puts the row in a group of the table's cluster section (`cluster`, `redis-cost`,
    /// `cluster-idle`, `reuse-port`); rows of one group compare labels that differ in what
    /// the group is about.
    #[arg(long)]
    group: Option<String>,
    /// Most connections per worker process (each may hold at most 20,000 files).
    #[arg(long, default_value_t = 9_000)]
    per_proc: usize,
    /// Fewest worker processes.
    #[arg(long, default_value_t = 2)]
    min_procs: usize,
    /// Every client offers permessage-deflate, as Chromium does.
    #[arg(long)]
    deflate: bool,
    /// Clients speak TLS (wss://), trusting the CA in this PEM file; the certificate must name
    /// localhost.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Idle {
            common,
            conns,
            warmup,
            settle,
        } => idle(&common, conns, warmup, Duration::from_secs(settle)),
        Cmd::Fanout {
            common,
            subs,
            size,
            rate,
            window,
            secs,
            max_deliveries,
        } => fanout(
            &common,
            &FanoutPlan {
                subs,
                size: size.max(common.dialect.min_size()),
                rate,
                window,
                secs,
                max_deliveries,
            },
        ),
        Cmd::Echo {
            common,
            conns,
            size,
            secs,
        } if common.dialect == Dialect::Raw => echo(&common, conns, size, secs),
        Cmd::Echo { .. } => Err(io::Error::other("echo speaks the raw dialect only")),
        Cmd::Handshakes {
            common,
            conns,
            secs,
        } => handshakes(&common, conns, secs),
        Cmd::Worker(args) => worker::run(&args),
        Cmd::Table { file, ours } => table::print(&file, &ours),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Worker processes and the UDP socket they report to.
struct Workers {
    poll: Poll,
    events: Events,
    ctl: UdpSocket,
    procs: Vec<Proc>,
}

struct Proc {
    child: Child,
    addr: Option<SocketAddr>,
    ready: bool,
    low: u64,
    output: Option<JoinHandle<String>>,
}

impl Workers {
    fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut ctl = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        poll.registry()
            .register(&mut ctl, CTL, Interest::READABLE)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(1024),
            ctl,
            procs: Vec::new(),
        })
    }

    /// Starts workers for `total` connections, each from its own source address starting at
    /// 127.0.0.`first_src`, then waits until every one reports its connections upgraded.
    fn spawn(
        &mut self,
        common: &Common,
        role: Role,
        total: usize,
        size: usize,
        first_src: u8,
    ) -> io::Result<()> {
        let procs = total
            .div_ceil(common.per_proc.max(1))
            .max(common.min_procs)
            .min(total.max(1));
        let ctl = self.ctl.local_addr()?;
        let servers: Vec<String> = common.server.iter().map(ToString::to_string).collect();
        let exe = std::env::current_exe()?;
        let start = self.procs.len();
        for i in 0..procs {
            let conns = total / procs + usize::from(i < total % procs);
            let src = Ipv4Addr::new(127, 0, 0, first_src.wrapping_add(i as u8));
            let mut command = Command::new(&exe);
            command
                .arg("worker")
                .args(["--id", &(start + i).to_string()])
                .args(["--server", &servers.join(",")])
                .args(["--dialect", &format!("{:?}", common.dialect).to_lowercase()])
                .args(["--src", &src.to_string()])
                .args(["--conns", &conns.to_string()])
                .args(["--role", &format!("{role:?}").to_lowercase()])
                .args(["--ctl", &ctl.to_string()])
                .args(["--size", &size.to_string()]);
            if common.deflate {
                command.arg("--deflate");
            }
            if let Some(ca) = &common.tls_ca {
                command.arg("--tls-ca").arg(ca);
            }
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut out = child.stdout.take();
            let output = std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(out) = out.as_mut() {
                    let _ = out.read_to_string(&mut s);
                }
                s
            });
            self.procs.push(Proc {
                child,
                addr: None,
                ready: false,
                low: 0,
                output: Some(output),
            });
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.procs.iter().all(|p| p.ready) {
            if Instant::now() > deadline {
                return Err(io::Error::other("workers did not get ready in time"));
            }
            for p in &mut self.procs {
                if let Some(status) = p.child.try_wait()? {
                    return Err(io::Error::other(format!("a worker exited early: {status}")));
                }
            }
            self.pump(Duration::from_millis(50), |_| {})?;
        }
        Ok(())
    }

    /// Polls once, handling worker reports; other tokens go to `other`.
    fn pump(
        &mut self,
        timeout: Duration,
        mut other: impl FnMut(&mio::event::Event),
    ) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in &self.events {
            if event.token() != CTL {
                other(event);
                continue;
            }
            let mut buf = [0u8; 256];
            while let Ok((n, from)) = self.ctl.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                let mut words = text.split_whitespace();
                let kind = words.next();
                let id: Option<usize> = words.next().and_then(|w| w.parse().ok());
                let Some(p) = id.and_then(|id| self.procs.get_mut(id)) else {
                    continue;
                };
                p.addr = Some(from);
                match kind {
                    Some("ready") => p.ready = true,
                    Some("low") => {
                        if let Some(low) = words.next().and_then(|w| w.parse().ok()) {
                            p.low = p.low.max(low);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Sends a command to every worker.
    fn tell(&self, cmd: &str) {
        for p in &self.procs {
            if let Some(addr) = p.addr {
                let _ = self.ctl.send_to(cmd.as_bytes(), addr);
            }
        }
    }

    /// The first sequence number some subscriber has not received yet.
    fn low(&self) -> u64 {
        self.procs.iter().map(|p| p.low).min().unwrap_or(0)
    }

    /// CPU seconds used by the workers and this process.
    fn cpu(&self) -> f64 {
        let workers: f64 = self
            .procs
            .iter()
            .filter_map(|p| cpu_secs(p.child.id()))
            .sum();
        workers + cpu_secs(std::process::id()).unwrap_or(0.0)
    }

    /// Sends `cmd`, waits for every worker to exit, and sums their RESULT lines.
    fn finish(mut self, cmd: &str) -> io::Result<Totals> {
        self.tell(cmd);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut totals = Totals {
            hist: Histogram::new(),
            ..Totals::default()
        };
        for p in &mut self.procs {
            while p.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    totals.unfinished += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = p.child.wait();
            let text = p.output.take().map(|h| h.join().unwrap_or_default());
            let Some(line) = text
                .as_deref()
                .and_then(|t| t.lines().find(|l| l.starts_with("RESULT")))
            else {
                totals.unfinished += 1;
                continue;
            };
            for (k, v) in line.split_whitespace().filter_map(|kv| kv.split_once('=')) {
                let n: u64 = v.parse().unwrap_or(0);
                match k {
                    "open" => totals.open += n,
                    "received" => totals.received += n,
                    "lost" => totals.lost += n,
                    "reordered" => totals.reordered += n,
                    "missing" => totals.missing += n,
                    "order_errors" => totals.order_errors += n,
                    "disagree" => totals.disagree += n,
                    "outstanding" => totals.outstanding += n,
                    "wire" => totals.wire += n,
                    "hist" => totals.hist.merge_encoded(v),
                    _ => {}
                }
            }
        }
        Ok(totals)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// Workers' RESULT lines, summed.
#[derive(Default)]
struct Totals {
    open: u64,
    received: u64,
    lost: u64,
    reordered: u64,
    missing: u64,
    outstanding: u64,
    /// Bytes the workers' connections read.
    wire: u64,
    order_errors: u64,
    disagree: u64,
    unfinished: u64,
    hist: Histogram,
}

/// CPU use of the server, its store and the load generator over an interval.
struct CpuMeter {
    pids: Vec<u32>,
    redis_pid: Option<u32>,
    at: Instant,
    server: f64,
    redis: f64,
    loadgen: f64,
    cores: Vec<(u64, u64)>,
}

/// CPU use over an interval, in percent of one core.
struct CpuUse {
    /// The server's processes, summed (two busy processes can show up to 200).
    server: f64,
    /// The store's, 0 without one.
    redis: f64,
    loadgen: f64,
    /// Each core's busy share, whoever used it (softirqs included).
    cores: Vec<f64>,
    /// The cores the server and the load generator are pinned to, if each is on one.
    server_core: Option<usize>,
    loadgen_core: Option<usize>,
}

impl CpuMeter {
    fn start(common: &Common, workers: &Workers) -> Self {
        let pids = common.pid.clone();
        let redis_pid = common.redis_pid;
        Self {
            server: pids.iter().filter_map(|&p| cpu_secs(p)).sum(),
            redis: redis_pid.and_then(cpu_secs).unwrap_or(0.0),
            pids,
            redis_pid,
            at: Instant::now(),
            loadgen: workers.cpu(),
            cores: core_ticks(),
        }
    }

    fn stop(&self, workers: &Workers) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let server: f64 = self.pids.iter().filter_map(|&p| cpu_secs(p)).sum();
        let redis = self.redis_pid.and_then(cpu_secs).unwrap_or(0.0);
        let cores = core_ticks()
            .iter()
            .zip(&self.cores)
            .map(|(&(busy, total), &(busy0, total0))| {
                100.0 * busy.saturating_sub(busy0) as f64
                    / total.saturating_sub(total0).max(1) as f64
            })
            .collect();
        CpuUse {
            server: 100.0 * (server - self.server) / wall,
            redis: 100.0 * (redis - self.redis) / wall,
            loadgen: 100.0 * (workers.cpu() - self.loadgen) / wall,
            cores,
            server_core: self.pids.first().and_then(|&p| pinned_core(p)),
            loadgen_core: pinned_core(std::process::id()),
        }
    }
}

impl CpuUse {
    /// The RESULT fields.
    fn fields(&self) -> String {
        let cores: Vec<String> = self.cores.iter().map(|c| format!("{c:.0}")).collect();
        let core = |c: Option<usize>| c.map_or("none".to_string(), |c| c.to_string());
        format!(
            "server_cpu={:.0} redis_cpu={:.0} loadgen_cpu={:.0} cores_busy={} server_core={} \
             loadgen_core={}",
            self.server,
            self.redis,
            self.loadgen,
            cores.join("/"),
            core(self.server_core),
            core(self.loadgen_core),
        )
    }
}

/// The RESULT fields every scenario has: who, what layout, which dialect.
fn setup_fields(common: &Common) -> String {
    let mut s = format!(
        "label={} nodes={} addrs={} redis={} dialect={} deflate={}",
        common.label,
        common.pid.len(),
        common.server.len(),
        u8::from(common.redis_pid.is_some()),
        format!("{:?}", common.dialect).to_lowercase(),
        u8::from(common.deflate),
    );
    if let Some(group) = &common.group {
        s.push_str(&format!(" group={group}"));
    }
    s
}

/// The server processes' RSS, summed; an error once one is gone.
fn server_rss(common: &Common) -> io::Result<u64> {
    common.pid.iter().try_fold(0, |sum, &pid| {
        rss_bytes(pid)
            .map(|b| sum + b)
            .ok_or_else(|| io::Error::other(format!("server {pid} is gone")))
    })
}

fn idle(common: &Common, conns: usize, warmup: usize, settle: Duration) -> io::Result<()> {
    let mut workers = Workers::new()?;
    // Warm-up connections stay open through both readings, so lazily built state (buffers,
    // tables, JIT code) is in the baseline and not billed to the measured connections.
    if warmup > 0 {
        workers.spawn(common, Role::Idle, warmup, 16, 2)?;
    }
    std::thread::sleep(settle);
    let before = server_rss(common)?;
    let cpu = CpuMeter::start(common, &workers);
    workers.spawn(common, Role::Idle, conns, 16, 3)?;
    let used = cpu.stop(&workers);
    let connect_secs = cpu.at.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let after = server_rss(common)?;
    // Open files per server process: with several processes on one port the kernel spreads
    // connections among them, and each may hold at most its limit.
    let fds: Vec<String> = common
        .pid
        .iter()
        .map(|&p| open_files(p).map_or("?".into(), |n| n.to_string()))
        .collect();
    let totals = workers.finish("quit")?;
    let per_conn = after.saturating_sub(before) as f64 / conns.max(1) as f64;
    println!(
        "RESULT {} scenario=idle n={conns} bytes_per_conn={per_conn:.0} rss_before={before} \
         rss_after={after} open={} server_fds={} connect_secs={connect_secs:.2} {}",
        setup_fields(common),
        totals.open.saturating_sub(warmup as u64),
        fds.join("/"),
        used.fields(),
    );
    Ok(())
}

/// One handshake in flight.
struct Handshake {
    stream: mio::net::TcpStream,
    tls: rustls::ClientConnection,
}

/// Drives a handshake as far as the socket allows: `Ok(true)` once it is done and the
/// client's last flight is written.
fn drive(h: &mut Handshake) -> io::Result<bool> {
    for _ in 0..64 {
        let mut progress = false;
        while h.tls.wants_write() {
            match h.tls.write_tls(&mut h.stream) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => return Err(e),
            }
        }
        if !h.tls.is_handshaking() && !h.tls.wants_write() {
            return Ok(true);
        }
        match h.tls.read_tls(&mut h.stream) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                h.tls.process_new_packets().map_err(io::Error::other)?;
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => return Err(e),
        }
        if !progress {
            return Ok(false);
        }
    }
    Ok(false)
}

fn handshakes(common: &Common, conns: usize, secs: f64) -> io::Result<()> {
    let ca = common
        .tls_ca
        .as_ref()
        .ok_or_else(|| io::Error::other("handshakes needs --tls-ca"))?;
    let config = client::handshake_config(ca)?;
    let server = common.server[0];
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Handshake>> = (0..conns).map(|_| None).collect();
    let (mut done, mut failed, mut next_src) = (0u64, 0u64, 0u8);
    let mut negotiated = String::from("none");
    // Client ports end in TIME_WAIT (the client closes first): spread them over 16 source
    // addresses, ~28,000 ports each.
    let mut open = |i: usize, poll: &Poll, slots: &mut Vec<Option<Handshake>>| -> io::Result<()> {
        next_src = (next_src + 1) % 16;
        let src = Ipv4Addr::new(127, 0, 1, 2 + next_src);
        let mut stream = connect_from(src, server)?;
        poll.registry().register(
            &mut stream,
            Token(i + 2),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tls = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(io::Error::other)?;
        slots[i] = Some(Handshake { stream, tls });
        Ok(())
    };
    let workers = Workers::new()?;
    let cpu = CpuMeter::start(common, &workers);
    let deadline = cpu.at + Duration::from_secs_f64(secs);
    for i in 0..conns {
        open(i, &poll, &mut slots)?;
    }
    while Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in &events {
            let i = event.token().0.wrapping_sub(2);
            let Some(Some(h)) = slots.get_mut(i) else {
                continue;
            };
            match drive(h) {
                Ok(false) => continue,
                Ok(true) => {
                    if done == 0 {
                        let group = h.tls.negotiated_key_exchange_group();
                        let suite = h.tls.negotiated_cipher_suite();
                        let group = group.map_or("none".into(), |g| format!("{:?}", g.name()));
                        let suite = suite.map_or("none".into(), |s| format!("{:?}", s.suite()));
                        negotiated = format!("{group}/{suite}");
                    }
                    done += 1
                }
                Err(_) => failed += 1,
            }
            if let Some(mut h) = slots[i].take() {
                let _ = poll.registry().deregister(&mut h.stream);
            }
            open(i, &poll, &mut slots)?;
        }
    }
    let used = cpu.stop(&workers);
    let wall = cpu.at.elapsed().as_secs_f64();
    let per_cpu_sec = done as f64 / (used.server / 100.0 * wall).max(1e-9);
    println!(
        "RESULT {} scenario=handshakes n={conns} per_sec={:.0} per_server_cpu_sec={per_cpu_sec:.0} \
         done={done} failed={failed} secs={wall:.2} negotiated={negotiated} {}",
        setup_fields(common),
        done as f64 / wall,
        used.fields(),
    );
    Ok(())
}

struct FanoutPlan {
    subs: usize,
    size: usize,
    rate: Option<f64>,
    window: Option<u64>,
    secs: f64,
    max_deliveries: u64,
}

fn fanout(common: &Common, plan: &FanoutPlan) -> io::Result<()> {
    let mut workers = Workers::new()?;
    workers.spawn(common, Role::Sub, plan.subs, plan.size, 2)?;
    workers.tell("start");

    // The publisher lives here, on the coordinator's loop, connected to the first server.
    let dialect = common.dialect;
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, common.server[0])?;
    workers
        .poll
        .registry()
        .register(&mut stream, PUB, Interest::READABLE | Interest::WRITABLE)?;
    let tls = match &common.tls_ca {
        Some(ca) => Some(client::tls_config(ca)?),
        None => None,
    };
    let mut publisher = Client::new(
        stream,
        common.server[0],
        7,
        dialect,
        common.deflate,
        tls.as_ref(),
    );
    let mut zlib = Inflate::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pump_pub = |workers: &mut Workers, publisher: &mut Client, timeout| {
        let mut failed = None;
        workers.pump(timeout, |event| {
            let mut r = Ok(());
            if event.is_writable() {
                r = publisher.on_writable();
            }
            if r.is_ok() && (event.is_readable() || event.is_read_closed()) {
                // Its own copies (the tutorial server sends to the sender too) are just read.
                r = publisher.on_readable(&mut buf, &mut zlib, &mut |_| {});
            }
            failed = r.err();
        })?;
        failed.map_or(Ok(()), Err)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.phase != Phase::Open {
        if Instant::now() > deadline || publisher.phase == Phase::Closed {
            return Err(io::Error::other("publisher did not connect"));
        }
        pump_pub(&mut workers, &mut publisher, Duration::from_millis(10))?;
    }

    let frame_len = plan.size as u64 + dialect.overhead();
    let subs = plan.subs.max(1) as u64;
    let window = plan.window.unwrap_or_else(|| {
        // Up to 64 KiB per subscriber and 256 MiB in all, so neither server nor kernel
        // buffers hold more than that; at most 2M deliveries in flight, so a slow server
        // drains them in seconds, not minutes.
        (65_536 / frame_len)
            .min((256 << 20) / (subs * frame_len))
            .min(2_000_000 / subs)
            .clamp(8, 1024)
    });
    let by_count = plan.max_deliveries / subs;
    let total = match plan.rate {
        Some(rate) => ((rate * plan.secs) as u64).min(by_count),
        None => by_count,
    };
    let mut payload = Vec::with_capacity(plan.size + 64);
    let cpu = CpuMeter::start(common, &workers);
    let t0 = Instant::now();
    let stop_sending = t0 + Duration::from_secs_f64(plan.secs);
    let mut sent = 0u64;
    let mut drained_at = None;
    let mut last_progress = (0, t0);
    loop {
        let now = Instant::now();
        let low = workers.low();
        if low != last_progress.0 {
            last_progress = (low, now);
        }
        let sending = sent < total && now < stop_sending;
        if !sending && low >= sent {
            drained_at = Some(now);
            break;
        }
        if now - last_progress.1 > DRAIN_TIMEOUT {
            break; // Stuck: some subscriber will never get some message; `lost` says which.
        }
        let mut wait = Duration::from_millis(5);
        if sending {
            let allowed = match plan.rate {
                // Message k is due at t0 + k / rate, whatever the server did with the others.
                Some(rate) => ((now - t0).as_secs_f64() * rate) as u64 + 1,
                None => low + window,
            };
            while sent < allowed.min(total) {
                let opcode = dialect.encode(sent, now_ns(), plan.size, &mut payload);
                publisher.queue_frame(opcode, &payload);
                sent += 1;
            }
            publisher.flush()?;
            if let Some(rate) = plan.rate {
                let next_at = t0 + Duration::from_secs_f64(sent as f64 / rate);
                wait = wait.min(next_at.saturating_duration_since(now));
            }
        }
        pump_pub(&mut workers, &mut publisher, wait)?;
    }
    let elapsed = drained_at.unwrap_or_else(Instant::now) - t0;
    let used = cpu.stop(&workers);
    let totals = workers.finish(&format!("finish {sent}"))?;
    let secs = elapsed.as_secs_f64();
    let mode = if plan.rate.is_some() { "rate" } else { "sat" };
    let rate = plan.rate.map_or(String::new(), |r| format!(" rate={r}"));
    println!(
        "RESULT {} scenario=fanout mode={mode}{rate} n={} size={} published={sent} \
         deliveries={} expected={} secs={secs:.3} per_sec={:.0} wire_per_delivery={:.1} \
         p50_us={} p99_us={} p999_us={} lost={} reordered={} order_errors={} disagree={} \
         missing={} closed={} drained={} window={window}{} {}",
        setup_fields(common),
        plan.subs,
        plan.size,
        totals.received,
        sent * plan.subs as u64,
        totals.received as f64 / secs.max(1e-9),
        totals.wire as f64 / totals.received.max(1) as f64,
        totals.hist.quantile(0.50),
        totals.hist.quantile(0.99),
        totals.hist.quantile(0.999),
        totals.lost,
        totals.reordered,
        totals.order_errors,
        totals.disagree,
        totals.missing,
        (plan.subs as u64).saturating_sub(totals.open),
        drained_at.is_some(),
        // A window given on the command line names its own row (e.g. 8 in flight).
        if plan.window.is_some() {
            " window_given=1"
        } else {
            ""
        },
        used.fields(),
    );
    Ok(())
}

fn echo(common: &Common, conns: usize, size: usize, secs: f64) -> io::Result<()> {
    let mut workers = Workers::new()?;
    workers.spawn(common, Role::Echo, conns, size.max(16), 2)?;
    let cpu = CpuMeter::start(common, &workers);
    workers.tell("start");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        workers.pump(Duration::from_millis(50), |_| {})?;
    }
    let used = cpu.stop(&workers);
    let elapsed = cpu.at.elapsed().as_secs_f64();
    let totals = workers.finish("stop")?;
    println!(
        "RESULT {} scenario=echo n={conns} size={size} round_trips={} secs={elapsed:.3} \
         per_sec={:.0} p50_us={} p99_us={} p999_us={} lost={} closed={} {}",
        setup_fields(common),
        totals.received,
        totals.received as f64 / elapsed.max(1e-9),
        totals.hist.quantile(0.50),
        totals.hist.quantile(0.99),
        totals.hist.quantile(0.999),
        totals.outstanding,
        (conns as u64).saturating_sub(totals.open),
        used.fields(),
    );
    Ok(())
}
