//! A real `redis-server` for cluster tests, and wsrelay nodes sharing it.
//!
//! [`RedisServer::start`] runs Debian's `redis-server` on a free loopback port with no
//! persistence (`--save '' --appendonly no`), in its own temporary directory, and waits
//! (bounded) until it answers `PING`; it is killed on drop. [`RedisServer::kill`] is a SIGKILL
//! (the data is gone), [`RedisServer::restart`] starts an empty server on the same port, and
//! [`RedisServer::cli`] runs `redis-cli` against it (bounded too). [`start_nodes`] starts
//! wsrelay processes with `--redis redis://127.0.0.1:PORT`, each on its own port.
//!
//! `redis-server` comes from `apt-get install redis-server` (`test.sh` installs it). Without
//! it, [`RedisServer::start_or_skip`] says so and the test passes, except under `CI`, where it
//! fails.

// Each test crate uses a different subset of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::Server;

/// How long redis-server may take to answer its first `PING`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one `redis-cli` run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `redis-server`; killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback port it listens on (kept across [`RedisServer::restart`]).
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Whether `redis-server` and `redis-cli` are on `PATH`.
    pub fn installed() -> bool {
        ["redis-server", "redis-cli"].iter().all(|bin| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// [`RedisServer::start`], or `None` with a note when redis-server is not installed
    /// (a failure under `CI`, where test.sh installs it).
    #[track_caller]
    pub fn start_or_skip() -> Option<RedisServer> {
        RedisServer::usable().then(RedisServer::start)
    }

    /// Whether redis-server is installed; if not, says the test is skipped (and fails under
    /// `CI`, where test.sh installs it).
    #[track_caller]
    pub fn usable() -> bool {
        if RedisServer::installed() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server or redis-cli not found under CI: test.sh installs them"
        );
        eprintln!("skipping: redis-server not found (apt-get install redis-server)");
        false
    }

    /// Starts redis-server on a free loopback port; a port taken between our probe and its
    /// bind is retried with another one.
    #[track_caller]
    pub fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut redis = RedisServer::unstarted(port);
            match redis.spawn() {
                Ok(()) => return redis,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start on 5 free ports; the last: {last}");
    }

    /// A server on `port` that is not running yet: start it with [`RedisServer::restart`].
    /// For a node started while Redis is unreachable.
    pub fn unstarted(port: u16) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("wsrelay-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        RedisServer {
            child: None,
            port,
            dir,
        }
    }

    /// `redis://127.0.0.1:PORT`, for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL: no shutdown, no save (none is configured anyway); the data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts an empty server on the same port (after [`RedisServer::kill`], or for the first
    /// time after [`RedisServer::unstarted`]).
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The port may still be held a moment by the killed server's socket.
                Err(why) if Instant::now() < deadline => {
                    eprintln!("redis-server restart on {}: {why}; retrying", self.port);
                    thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("redis-server did not restart on {}: {why}", self.port),
            }
        }
    }

    /// Runs redis-server in the foreground on `self.port` and waits for `PONG`.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited ({status}); log:\n{}", self.log()));
            }
            if ping(self.addr()) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no PONG within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What redis-server has logged (this run and the ones before, appended).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis-cli -p PORT --raw ARGS…`; its stdout. Panics if it fails or takes over 5 s.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn redis-cli");
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut out = String::new();
            let mut err = String::new();
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            let _ = tx.send((out, err));
        });
        let output = rx.recv_timeout(CLI_TIMEOUT);
        if output.is_err() {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let status = child.wait().expect("wait for redis-cli");
        let Ok((out, err)) = output else {
            panic!("redis-cli {args:?} took over {CLI_TIMEOUT:?}");
        };
        assert!(
            status.success() && !out.starts_with("ERR"),
            "redis-cli {args:?}: {status}: {out}{err}"
        );
        out
    }

    /// Every key, found with `--scan` (the implementation names its keys; tests must not).
    pub fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nobody listens on right now (bound, noted, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether a Redis server at `addr` answers an inline `PING` with `+PONG` (within 1 s).
pub fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(1));
    if stream.set_read_timeout(timeout).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// `n` wsrelay nodes on `redis`, each `wsrelay --listen 127.0.0.1:0 --redis URL <args>`.
#[track_caller]
pub fn start_nodes(redis: &RedisServer, n: usize, args: &[&str]) -> Vec<Server> {
    (0..n).map(|_| start_node(redis, args)).collect()
}

/// One wsrelay node on `redis`.
#[track_caller]
pub fn start_node(redis: &RedisServer, args: &[&str]) -> Server {
    let url = redis.url();
    let mut all = vec!["--redis", url.as_str()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// Sends SIGKILL to `node` (its drop then reaps it).
pub fn kill_node(node: &Server) {
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    let rc = unsafe { libc::kill(node.pid() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -KILL {}", node.pid());
}

/// The local addresses (`127.0.0.1:PORT`) of the TCP connections process `pid` holds to
/// `127.0.0.1:redis_port`, from proc(5): its socket inodes in `/proc/PID/fd`, matched against
/// `/proc/net/tcp`. For `CLIENT KILL ADDR`, to cut one node's links and not the others'.
pub fn links_to(pid: u32, redis_port: u16) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let t = target.to_string_lossy().into_owned();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{redis_port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, rem, state, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(9)?);
            // 01: ESTABLISHED.
            if *rem != remote || *state != "01" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            let port = u16::from_str_radix(local.split_once(':')?.1, 16).ok()?;
            Some(format!("127.0.0.1:{port}"))
        })
        .collect()
}

/// A Redis server and the wsrelay nodes on it. When a test fails, dropping it prints every
/// node's log and Redis' log, so the report shows what the servers saw.
pub struct Cluster {
    pub redis: RedisServer,
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// A new Redis and `n` nodes on it with `args`; `None` (with a note) without redis-server.
    #[track_caller]
    pub fn start(n: usize, args: &[&str]) -> Option<Cluster> {
        let redis = RedisServer::start_or_skip()?;
        let nodes = start_nodes(&redis, n, args);
        Some(Cluster { redis, nodes })
    }

    /// `n` nodes pointed at a free port where no Redis runs yet (start it with
    /// `cluster.redis.restart()`); `None` (with a note) without redis-server.
    #[track_caller]
    pub fn start_without_redis(n: usize, args: &[&str]) -> Option<Cluster> {
        if !RedisServer::usable() {
            return None;
        }
        let redis = RedisServer::unstarted(free_port());
        let nodes = start_nodes(&redis, n, args);
        Some(Cluster { redis, nodes })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            eprintln!(
                "--- node {i} ({}, pid {}) stderr ---\n{}",
                node.addr,
                node.pid(),
                tail(&node.stderr(), 12_000)
            );
        }
        eprintln!(
            "--- redis-server (port {}) log ---\n{}",
            self.redis.port,
            tail(&self.redis.log(), 6_000)
        );
    }
}

/// The last `max` bytes of `text` (from a line start where possible).
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let rest = &text[start..];
    rest.find('\n').map_or(rest, |i| &rest[i + 1..])
}
