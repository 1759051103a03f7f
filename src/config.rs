//! Command-line flags and their defaults, each with where its number comes from.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::app::Mode;
use crate::conn::Settings;
use crate::proto::Limits;

/// A real-time chat and broadcast server on a hand-rolled RFC 6455 stack.
#[derive(Debug, Clone, Parser)]
#[command(name = "wsrelay", version, about, max_term_width = 100)]
pub struct Config {
    /// Address to listen on (chat page, /healthz and the WebSocket endpoint share it).
    #[arg(long, env = "WSRELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// What to do with messages: chat (JSON chat), relay (broadcast verbatim), echo (back to sender).
    #[arg(long, env = "WSRELAY_MODE", value_enum, default_value_t = Mode::Chat)]
    pub mode: Mode,

    /// In relay mode, do not send a message back to its sender.
    #[arg(long, env = "WSRELAY_NO_ECHO_SENDER")]
    pub no_echo_sender: bool,

    /// Largest message in bytes, over all its fragments; larger ones are closed with 1009.
    /// Default 1 MiB (ws: 100 MiB, tungstenite: 64 MiB, uWebSockets: 16 KiB).
    #[arg(long, env = "WSRELAY_MAX_MESSAGE", default_value_t = 1 << 20)]
    pub max_message: u64,

    /// Most frames one message may be split into; more is closed with 1009.
    /// Default 4096 (browsers never fragment; it bounds the per-frame work of tiny fragments).
    #[arg(long, env = "WSRELAY_MAX_FRAGMENTS", default_value_t = 4096)]
    pub max_fragments: u32,

    /// Bytes of output queued for one client before it is closed as a slow consumer (1008).
    /// Default 1 MiB (uWebSockets' maxBackpressure defaults to 64 KiB; ws has no limit).
    #[arg(long, env = "WSRELAY_MAX_OUTPUT", default_value_t = 1 << 20)]
    pub max_output: usize,

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
}

impl Config {
    /// Checks values clap cannot; the error names the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--max-message", self.max_message),
            ("--max-fragments", u64::from(self.max_fragments)),
            ("--max-output", self.max_output as u64),
            ("--handshake-timeout", self.handshake_timeout),
            ("--close-timeout", self.close_timeout),
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
            ("--max-fragments", u64::from(self.max_fragments), 1 << 24),
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
        // §5.2: a 64-bit length's top bit is 0, so nothing larger can be sent.
        if self.max_message > i64::MAX as u64 {
            return Err(format!("--max-message is too large: {}", self.max_message));
        }
        Ok(())
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
        }
    }
}
