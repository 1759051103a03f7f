//! The `wsrelay` binary: flags, the open-file limit, the listener (bound here or passed by
//! systemd) and the admin one, the service manager's notify socket, then the event loop.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use wsrelay::app::App;
use wsrelay::config::Config;
use wsrelay::eio::session::Sessions;
use wsrelay::event_loop::{Options, Server};
use wsrelay::room::redis::RedisLog;
use wsrelay::{daemon, log};

/// The accept queue asked for (Linux caps it at net.core.somaxconn, 4096 by default).
const LISTEN_BACKLOG: i32 = 4096;

fn main() -> ExitCode {
    // First, so that even a configuration error reaches the journal as an error.
    log::set_journal(daemon::stderr_is_journal());
    let config = Config::parse();
    if let Err(e) = config.validate() {
        log!(Error, "{e}");
        return ExitCode::from(2);
    }
    log::set_level(config.log_level);
    // First: it reads and clears the environment, which is only sound before threads exist.
    let passed = match daemon::listen_fd() {
        Ok(l) => l,
        Err(e) => {
            log!(Error, "socket activation: {e}");
            return ExitCode::from(1);
        }
    };
    let notifier = match daemon::Notifier::from_env() {
        Ok(n) => n,
        // An address this build cannot use (e.g. systemd's `vsock:`) costs the notifications,
        // not the service.
        Err(e) => {
            log!(Warn, "{e}; not notifying the service manager");
            None
        }
    };
    match daemon::raise_nofile_limit() {
        Ok(n) if n < config.max_connections as u64 + 16 => log!(
            Warn,
            "open-file limit {n} is below --max-connections {}: accepts will pause at the limit",
            config.max_connections
        ),
        Ok(n) => log!(Debug, "open-file limit {n}"),
        Err(e) => log!(Warn, "could not raise the open-file limit: {e}"),
    }
    let activated = passed.is_some();
    let listener = match passed {
        Some(l) => {
            if config.reuse_port {
                log!(
                    Warn,
                    "--reuse-port ignored: the socket is systemd's (ReusePort= in its .socket unit)"
                );
            }
            l
        }
        // Not std's bind: it listens with a backlog of 128, and a burst of connects past it
        // sees dropped SYNs and one-second retransmits. (A socket from systemd has its Backlog=.)
        None => match daemon::bind(config.listen, config.reuse_port, LISTEN_BACKLOG) {
            Ok(l) => l,
            Err(e) => {
                log!(Error, "--listen {}: {e}", config.listen);
                return ExitCode::from(1);
            }
        },
    };
    // std's bind and its backlog of 128: scrapes come one at a time.
    let admin = match config
        .admin_listen
        .map(|a| (a, std::net::TcpListener::bind(a)))
    {
        None => None,
        Some((_, Ok(l))) => Some(l),
        Some((addr, Err(e))) => {
            log!(Error, "--admin-listen {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let app = App::new(
        config.mode,
        !config.no_echo_sender,
        config.room_limits(),
        Duration::from_secs(config.poll_wait),
    )
    .with_message_rate(config.max_message_rate)
    .with_sio(config.sio());
    let app = match config.redis.as_deref().map(wsrelay::redis::url::parse) {
        None => app,
        Some(Ok(target)) => {
            let node = node_name();
            log!(
                Info,
                "rooms in Redis at {} (node {node})",
                target.redacted()
            );
            let limits = wsrelay::room::log::HistoryLimits {
                events: config.history,
                bytes: config.history_bytes,
            };
            let log = RedisLog::new(target, &node, limits, std::time::Instant::now());
            app.with_log(Box::new(log))
        }
        Some(Err(e)) => {
            log!(Error, "--redis: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        shutdown_timeout: Duration::from_secs(config.shutdown_timeout),
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        trusted_proxies: config.trusted_proxies(),
        notifier,
        watchdog: daemon::watchdog_interval(),
        deflate_threshold: config.deflate_threshold,
    };
    // Engine.IO session ids must not be guessable: without the kernel's randomness, no start.
    let secret = match random_secret() {
        Ok(s) => s,
        Err(e) => {
            log!(Error, "reading /dev/urandom for session ids: {e}");
            return ExitCode::from(1);
        }
    };
    let eio = Sessions::new(config.eio(), secret, std::time::Instant::now());
    let mut server = match Server::new(listener, app, config.settings(), options, eio) {
        Ok(s) => s,
        Err(e) => {
            log!(Error, "{e}");
            return ExitCode::from(1);
        }
    };
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        match wsrelay::tls::Certs::load(cert.clone(), key.clone()) {
            Ok(certs) => server.serve_tls(certs),
            Err(e) => {
                log!(Error, "{e}");
                return ExitCode::from(1);
            }
        }
    }
    let admin_addr = match admin.map(|l| (l.local_addr(), server.serve_admin(l))) {
        None => None,
        Some((Ok(addr), Ok(()))) => Some(addr),
        Some((Err(e), _) | (_, Err(e))) => {
            log!(Error, "--admin-listen: {e}");
            return ExitCode::from(1);
        }
    };
    let how = match (activated, config.reuse_port) {
        (true, _) => "socket from systemd",
        (false, true) => "bound, port shared",
        (false, false) => "bound",
    };
    match server.local_addr() {
        Ok(addr) => log!(
            Info,
            "listening on {}://{addr}/ (mode {}, {how})",
            if config.tls_cert.is_some() {
                "wss"
            } else {
                "ws"
            },
            format!("{:?}", config.mode).to_lowercase()
        ),
        Err(e) => log!(Warn, "listening (address unknown: {e})"),
    }
    if let Some(addr) = admin_addr {
        log!(
            Info,
            "admin listening on http://{addr}/ (/metrics and /healthz only)"
        );
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!(Error, "event loop: {e}");
            ExitCode::from(1)
        }
    }
}

/// 32 bytes from the kernel's random source (read once: only the key of session ids).
fn random_secret() -> std::io::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut secret = [0; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// This process's name among the nodes sharing a Redis: host, process id and start time, so a
/// restarted process is a new node (the old one's members are reaped, not inherited).
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    let started = wsrelay::room::log::now_ms();
    format!("{host}.{}.{started:x}", std::process::id())
}
