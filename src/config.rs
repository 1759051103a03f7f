//! Command-line flags and their defaults, each with where its number comes from.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::app::Mode;
use crate::conn::{Mount, Settings};
use crate::log::Level;
use crate::origin::OriginPolicy;
use crate::proto::Limits;
use crate::proxy::{Cidr, TrustedProxies};
use crate::room::RoomLimits;

/// A real-time chat and broadcast server on a hand-rolled RFC 6455 stack.
#[derive(Debug, Clone, Parser)]
#[command(name = "wsrelay", version, about, max_term_width = 100)]
pub struct Config {
    /// Address to listen on (chat page, /healthz, /metrics and the WebSocket endpoint share
    /// it). Ignored when systemd passes a listening socket (socket activation).
    #[arg(long, env = "WSRELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Bind --listen with SO_REUSEPORT, so that several wsrelay processes listen on one port
    /// and the kernel spreads new connections between them (deploy/wsrelay@.service). Ignored,
    /// with a warning, when systemd passes the socket. Default off: a second process started
    /// on a taken port by mistake then fails to bind instead of silently taking half the
    /// connections (every socket on the port must ask for sharing, socket(7)).
    #[arg(long, env = "WSRELAY_REUSE_PORT")]
    pub reuse_port: bool,

    /// Speak TLS on --listen (wss:// and https://) with this certificate chain: PEM, the
    /// server's certificate first, then its intermediates (Let's Encrypt's fullchain.pem).
    /// TLS 1.2 and 1.3 only, ALPN http/1.1, no client certificates, one certificate for every
    /// name. SIGHUP reads it and --tls-key again for new connections. Needs --tls-key.
    #[arg(
        long,
        env = "WSRELAY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert: PEM, PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (Let's
    /// Encrypt's privkey.pem). Needs --tls-cert.
    #[arg(
        long,
        env = "WSRELAY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// A second address, answering only GET /metrics and GET /healthz (404 for the rest, no
    /// page, no WebSocket), so that a scraper reaches this process even when several share
    /// --listen with --reuse-port. Give it a loopback or private address: its connections are
    /// outside the client limits. Default: none (both are served on --listen anyway).
    #[arg(long, env = "WSRELAY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Most verbose log level printed on stderr; no level logs a line per message.
    #[arg(long, env = "WSRELAY_LOG_LEVEL", value_enum, default_value_t = Level::Info)]
    pub log_level: Level,

    /// What to do with messages: chat (JSON chat), relay (broadcast verbatim), echo (back to sender).
    #[arg(long, env = "WSRELAY_MODE", value_enum, default_value_t = Mode::Chat)]
    pub mode: Mode,

    /// In relay mode, do not send a message back to its sender.
    #[arg(long, env = "WSRELAY_NO_ECHO_SENDER")]
    pub no_echo_sender: bool,

    /// Chat rooms held at once; at the limit an empty room is evicted, else a join gets 1013.
    /// Default 1000 (with --history-bytes, bounds history memory to 64 MiB).
    #[arg(long, env = "WSRELAY_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: usize,

    /// Keep chat rooms in Redis, shared by every wsrelay process that uses the same Redis: one
    /// order, history and epoch per room, presence counted over them all, resume and long
    /// polling on any of them. `redis://[[user]:password@]host[:port][/db]`, or a Unix socket
    /// path. Default: none (rooms live in this process). Use an address rather than a host
    /// name: the name is resolved on each connect, blocking the event loop.
    #[arg(long, env = "WSRELAY_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// Messages and notices each chat room keeps for late joiners and resuming clients.
    /// Default 100 (Centrifugo's history_size is per channel and off by default; 100 covers a
    /// reconnect after a short outage in a busy room).
    #[arg(long, env = "WSRELAY_HISTORY", default_value_t = 100)]
    pub history: usize,

    /// Seconds a long poll (`GET /poll`) waits for an event before it is answered with none.
    /// Default 25 (engine.io's pingInterval; below the 30 s idle limit of common proxies).
    #[arg(long, env = "WSRELAY_POLL_WAIT", default_value_t = 25)]
    pub poll_wait: u64,

    /// A socket.io namespace clients may connect to besides `/` (and `/custom`, which echo
    /// mode has for the socket.io test suite), e.g. `/admin`: `/` and up to 63 of
    /// `A-Z a-z 0-9 _ . - /`. Repeat the flag for more (comma-separated in the variable), at
    /// most 30. Default: none (a CONNECT to another namespace gets "Invalid namespace").
    #[arg(
        long = "sio-namespace",
        env = "WSRELAY_SIO_NAMESPACE",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub sio_namespaces: Vec<String>,

    /// Milliseconds a socket.io session has to connect to a namespace (its first CONNECT),
    /// and a binary packet to bring all its attachments; else the session is closed.
    /// Default 45000 (the socket.io server's connectTimeout).
    #[arg(long, env = "WSRELAY_SIO_CONNECT_TIMEOUT", default_value_t = 45_000)]
    pub sio_connect_timeout: u64,

    /// Milliseconds between the server's pings to an Engine.IO (socket.io) client on
    /// /socket.io/; a long poll also waits at most this long. Default 25000 (the reference
    /// server's pingInterval; under the 30 s idle limit of common proxies).
    #[arg(long, env = "WSRELAY_EIO_PING_INTERVAL", default_value_t = 25_000)]
    pub eio_ping_interval: u64,

    /// Milliseconds an Engine.IO client has to answer a ping before its session is closed.
    /// Default 20000 (the reference server's pingTimeout).
    #[arg(long, env = "WSRELAY_EIO_PING_TIMEOUT", default_value_t = 20_000)]
    pub eio_ping_timeout: u64,

    /// Largest Engine.IO long-polling POST body (413 over it) and WebSocket message (close
    /// 1009), in bytes. Default 1000000 (the reference server's maxHttpBufferSize).
    #[arg(long, env = "WSRELAY_EIO_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub eio_max_payload: u64,

    /// Bytes of history each chat room keeps, whatever --history says. Default 64 KiB.
    #[arg(long, env = "WSRELAY_HISTORY_BYTES", default_value_t = 64 << 10)]
    pub history_bytes: usize,

    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it (every browser does):
    /// both directions without context takeover, so compression state is one per process, not
    /// per connection, and a broadcast is compressed once. Off by default, as in ws and
    /// uWebSockets: it costs CPU per message (about 30 us to compress 1 KiB, once per
    /// broadcast whatever its receivers; about 5 us to inflate one received), saves nothing on
    /// short messages, and compressing secrets beside attacker-chosen text can leak them
    /// (CRIME/BREACH, RFC 7692 §8).
    #[arg(long, env = "WSRELAY_DEFLATE")]
    pub deflate: bool,

    /// With --deflate, payloads shorter than this many bytes are sent uncompressed. Default
    /// 128: chat JSON under it shrinks by 12 % or less, 134 bytes by 19 % (ws: 1024).
    #[arg(long, env = "WSRELAY_DEFLATE_THRESHOLD", default_value_t = 128)]
    pub deflate_threshold: usize,

    /// Largest message in bytes, over all its fragments; larger ones are closed with 1009.
    /// Default 1 MiB (ws: 100 MiB, tungstenite: 64 MiB, uWebSockets: 16 KiB).
    #[arg(long, env = "WSRELAY_MAX_MESSAGE", default_value_t = 1 << 20)]
    pub max_message: u64,

    /// Most frames one message may be split into; more is closed with 1009.
    /// Default 4096 (browsers never fragment; it bounds the per-frame work of tiny fragments).
    #[arg(long, env = "WSRELAY_MAX_FRAGMENTS", default_value_t = 4096)]
    pub max_fragments: u32,

    /// Bytes of output one client has not taken (a write is tried first) before it is closed as
    /// a slow consumer (1008).
    /// Default 1 MiB (uWebSockets' maxBackpressure defaults to 64 KiB; ws has no limit).
    #[arg(long, env = "WSRELAY_MAX_OUTPUT", default_value_t = 1 << 20)]
    pub max_output: usize,

    /// Chat messages one connection may send per second, with a burst of two seconds' worth;
    /// over it the client gets an `error` and close 1008. Default 10: a person typing sends a
    /// line every few seconds, and even pasting short replies stays under 20 in a row (IRC's
    /// flood control, RFC 1459 §8.10, allows 5 in a row, then one every 2 s; Discord allows 5
    /// messages per 5 s per channel).
    #[arg(long, env = "WSRELAY_MAX_MESSAGE_RATE", default_value_t = 10)]
    pub max_message_rate: u32,

    /// Largest HTTP request head in bytes; larger gets 431.
    /// Default 8 KiB (nginx large_client_header_buffers and Node's 16 KiB bracket it).
    #[arg(long, env = "WSRELAY_MAX_HANDSHAKE", default_value_t = 8192)]
    pub max_handshake: usize,

    /// Seconds a client has to send its whole request head (slowloris guard).
    /// Default 10 (ws' handshakeTimeout is 10 s on the client side).
    #[arg(long, env = "WSRELAY_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Seconds allowed for a closing handshake and the last writes before the socket is dropped.
    #[arg(long, env = "WSRELAY_CLOSE_TIMEOUT", default_value_t = 5)]
    pub close_timeout: u64,

    /// Seconds to wait for clients to finish closing on SIGTERM/SIGINT.
    #[arg(long, env = "WSRELAY_SHUTDOWN_TIMEOUT", default_value_t = 5)]
    pub shutdown_timeout: u64,

    /// Seconds a client may stay silent before it is pinged. Default 30, under the 60 s idle
    /// timeout of common proxies (nginx proxy_read_timeout, AWS ALB) (Centrifugo pings every
    /// 25 s, Socket.IO every 25 s, uWebSockets' idleTimeout is 120 s, ws has none).
    #[arg(long, env = "WSRELAY_PING_INTERVAL", default_value_t = 30)]
    pub ping_interval: u64,

    /// Seconds a pinged client has to send anything (a pong will do) before it is dropped.
    /// Default 30 (Centrifugo waits 8 s for a pong, Socket.IO 20 s).
    #[arg(long, env = "WSRELAY_PONG_TIMEOUT", default_value_t = 30)]
    pub pong_timeout: u64,

    /// Most client sockets at once; more get HTTP 503. Default 10000 (uWebSockets and ws have
    /// no such limit, only the open-file limit; Centrifugo's client connection_limit is off by
    /// default). Keep it under LimitNOFILE.
    #[arg(long, env = "WSRELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most client sockets from one IP address (IPv6: one /64) at once; more get HTTP 503.
    /// Default 256: many
    /// users behind one NAT still fit (uWebSockets, ws and Centrifugo have no per-address limit;
    /// nginx limit_conn has no default).
    #[arg(long, env = "WSRELAY_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: u32,

    /// An Origin allowed to open a WebSocket, as scheme://host[:port], or * for any; repeat
    /// the flag for more (comma-separated in the variable). Default: none besides same-origin
    /// pages (Origin host:port equals Host) and clients that send no Origin; others get 403
    /// (Centrifugo's allowed_origins also defaults to same-origin only; ws and uWebSockets
    /// accept any).
    #[arg(
        long = "allow-origin",
        env = "WSRELAY_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allow_origins: Vec<String>,

    /// A reverse proxy (ADDR or ADDR/LEN) whose word about its client is taken: the client is
    /// the rightmost X-Forwarded-For address (else Forwarded for=) that is not itself trusted,
    /// and --max-connections-per-ip applies to it; a trusted proxy naming no client is not
    /// limited per address. Repeat the flag for more (comma-separated in the variable); `none`
    /// trusts no peer. Default: loopback, where a proxy on the same host connects from (nginx's
    /// set_real_ip_from and Express's "trust proxy" list the same way; both trust none by
    /// default).
    #[arg(
        long = "trusted-proxy",
        env = "WSRELAY_TRUSTED_PROXY",
        value_delimiter = ',',
        value_name = "ADDR|CIDR",
        default_values_t = ["127.0.0.0/8".to_owned(), "::1".to_owned()]
    )]
    pub trusted_proxies: Vec<String>,
}

impl Config {
    /// Checks values clap cannot; the error names the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.redis {
            crate::redis::url::parse(url).map_err(|e| format!("--redis: {e}"))?;
            if self.mode != Mode::Chat {
                return Err("--redis keeps chat rooms: it needs --mode chat".into());
            }
        }
        let positive = [
            ("--max-message", self.max_message),
            ("--max-fragments", u64::from(self.max_fragments)),
            ("--max-output", self.max_output as u64),
            ("--handshake-timeout", self.handshake_timeout),
            ("--close-timeout", self.close_timeout),
            ("--ping-interval", self.ping_interval),
            ("--pong-timeout", self.pong_timeout),
            ("--max-connections", self.max_connections as u64),
            (
                "--max-connections-per-ip",
                u64::from(self.max_connections_per_ip),
            ),
            ("--max-rooms", self.max_rooms as u64),
            ("--poll-wait", self.poll_wait),
            ("--max-message-rate", u64::from(self.max_message_rate)),
            ("--sio-connect-timeout", self.sio_connect_timeout),
            ("--eio-ping-interval", self.eio_ping_interval),
            ("--eio-ping-timeout", self.eio_ping_timeout),
            ("--eio-max-payload", self.eio_max_payload),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(format!("{flag} must be greater than 0, got {value}"));
            }
        }
        // Bounds that keep deadline arithmetic and counters far from overflow.
        let day = 86_400;
        let bounded = [
            ("--handshake-timeout", self.handshake_timeout, day),
            ("--close-timeout", self.close_timeout, day),
            ("--shutdown-timeout", self.shutdown_timeout, day),
            ("--ping-interval", self.ping_interval, day),
            ("--pong-timeout", self.pong_timeout, day),
            ("--max-fragments", u64::from(self.max_fragments), 1 << 24),
            ("--max-connections", self.max_connections as u64, 1 << 24),
            ("--max-rooms", self.max_rooms as u64, 1 << 20),
            ("--poll-wait", self.poll_wait, 3600),
            (
                "--sio-connect-timeout",
                self.sio_connect_timeout,
                day * 1000,
            ),
            ("--history", self.history as u64, 1 << 20),
            ("--history-bytes", self.history_bytes as u64, 1 << 30),
            ("--eio-ping-interval", self.eio_ping_interval, day * 1000),
            ("--eio-ping-timeout", self.eio_ping_timeout, day * 1000),
            // A polling body is held whole in memory, as a WebSocket message is.
            ("--eio-max-payload", self.eio_max_payload, 1 << 30),
            // One message a microsecond: more than the loop can take from one client.
            (
                "--max-message-rate",
                u64::from(self.max_message_rate),
                1_000_000,
            ),
        ];
        for (flag, value, max) in bounded {
            if value > max {
                return Err(format!("{flag} must be at most {max}, got {value}"));
            }
        }
        if self.max_handshake < 256 {
            return Err(format!(
                "--max-handshake must be at least 256, got {}",
                self.max_handshake
            ));
        }
        for origin in &self.allow_origins {
            // RFC 6454 §6.2: an origin is scheme, host and port, with no path, or "null".
            if !OriginPolicy::valid_entry(origin) {
                return Err(format!(
                    "--allow-origin must be *, null or scheme://host[:port], got {origin:?}"
                ));
            }
        }
        for name in &self.sio_namespaces {
            if !crate::sio::valid_namespace(name) {
                return Err(format!(
                    "--sio-namespace must be / and up to 63 of A-Z a-z 0-9 _ . - /, got {name:?}"
                ));
            }
        }
        // `/` and `/custom` besides them, within what a socket's index can name.
        let most = crate::sio::MAX_NAMESPACES - 2;
        if self.sio_namespaces.len() > most {
            return Err(format!(
                "--sio-namespace: at most {most} namespaces, got {}",
                self.sio_namespaces.len()
            ));
        }
        let none = self.trusted_proxies.iter().any(|p| p.trim() == "none");
        if none && self.trusted_proxies.len() > 1 {
            return Err("--trusted-proxy none cannot be combined with addresses".to_owned());
        }
        for proxy in &self.trusted_proxies {
            if proxy.trim() != "none" && Cidr::parse(proxy).is_none() {
                return Err(format!(
                    "--trusted-proxy must be an address, ADDR/LEN or none, got {proxy:?}"
                ));
            }
        }
        // Port 0 twice is two ports, chosen by the kernel.
        if self.admin_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(format!(
                "--admin-listen must differ from --listen, both are {}",
                self.listen
            ));
        }
        // §5.2: a 64-bit length's top bit is 0, so nothing larger can be sent.
        if self.max_message > i64::MAX as u64 {
            return Err(format!("--max-message is too large: {}", self.max_message));
        }
        Ok(())
    }

    /// The peers trusted to name their clients, from `--trusted-proxy`.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(
            self.trusted_proxies
                .iter()
                .filter_map(|p| Cidr::parse(p))
                .collect(),
        )
    }

    /// What socket.io clients get, from --mode and the --sio-* flags.
    pub fn sio(&self) -> crate::sio::SioConfig {
        let mut config =
            crate::sio::SioConfig::new(self.mode).with_namespaces(&self.sio_namespaces);
        config.connect_timeout = Duration::from_millis(self.sio_connect_timeout);
        config
    }

    /// The chat room limits derived from the flags.
    pub fn room_limits(&self) -> RoomLimits {
        RoomLimits {
            max_rooms: self.max_rooms,
            history: self.history,
            history_bytes: self.history_bytes,
        }
    }

    /// The per-connection settings derived from the flags.
    pub fn settings(&self) -> Settings {
        Settings {
            limits: Limits {
                max_message: self.max_message,
                max_fragments: self.max_fragments,
            },
            max_output: self.max_output,
            max_handshake: self.max_handshake,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            close_timeout: Duration::from_secs(self.close_timeout),
            ping_interval: Duration::from_secs(self.ping_interval),
            pong_timeout: Duration::from_secs(self.pong_timeout),
            origins: OriginPolicy::new(&self.allow_origins),
            mount: Some(Mount {
                prefix: crate::eio::PATH,
                max_body: self.eio_max_payload,
            }),
            deflate: self.deflate,
        }
    }

    /// The Engine.IO settings derived from the flags.
    pub fn eio(&self) -> crate::eio::session::Config {
        crate::eio::session::Config {
            ping_interval: Duration::from_millis(self.eio_ping_interval),
            ping_timeout: Duration::from_millis(self.eio_ping_timeout),
            max_payload: self.eio_max_payload,
            max_output: self.max_output,
            close_timeout: Duration::from_secs(self.close_timeout),
        }
    }
}
