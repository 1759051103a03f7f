//! Counters for `GET /metrics`, in the Prometheus text exposition format (version 0.0.4).
//!
//! One plain struct owned by the event loop: it runs on one thread, so no atomics. Every label
//! value comes from a fixed list here, never from peer bytes, so a peer cannot grow the output.

use std::fmt::Write as _;

use crate::proto::CloseCode;
use crate::proto::deflate::{Deflater, Inflater};

/// The limits whose hits are counted, each a `limit` label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-connections`: a handshake answered 503.
    MaxConnections,
    /// `--max-connections-per-ip`: a handshake answered 503.
    MaxConnectionsPerIp,
    /// `--allow-origin`: a handshake answered 403.
    Origin,
    /// `--max-handshake`: 431.
    MaxHandshake,
    /// `--handshake-timeout`: the socket dropped.
    HandshakeTimeout,
    /// `--ping-interval` / `--pong-timeout`: a silent peer dropped.
    IdleTimeout,
    /// `--close-timeout`: a closing handshake not finished in time.
    CloseTimeout,
    /// `--max-message` or `--max-fragments`: close 1009.
    MaxMessage,
    /// `--max-output`: a slow consumer closed with 1008.
    MaxOutput,
    /// The open-file limit: `accept` failed with EMFILE/ENFILE and accepting paused.
    OpenFiles,
    /// `--max-message-rate`: a chat client closed with 1008.
    MaxMessageRate,
}

impl Limit {
    const ALL: [Limit; 11] = [
        Limit::MaxConnections,
        Limit::MaxConnectionsPerIp,
        Limit::Origin,
        Limit::MaxHandshake,
        Limit::HandshakeTimeout,
        Limit::IdleTimeout,
        Limit::CloseTimeout,
        Limit::MaxMessage,
        Limit::MaxOutput,
        Limit::OpenFiles,
        Limit::MaxMessageRate,
    ];

    /// The `limit` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerIp => "max_connections_per_ip",
            Limit::Origin => "origin",
            Limit::MaxHandshake => "max_handshake",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::CloseTimeout => "close_timeout",
            Limit::MaxMessage => "max_message",
            Limit::MaxOutput => "max_output",
            Limit::OpenFiles => "open_files",
            Limit::MaxMessageRate => "max_message_rate",
        }
    }
}

/// HTTP statuses a handshake can be refused with (`status` label values).
const STATUSES: [u16; 8] = [400, 403, 405, 411, 413, 426, 431, 503];

/// Close codes counted by value (§7.4.1); any other code counts as `other`.
const CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009, 1010, 1011];

/// Every counter the server keeps.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Handshakes completed (101 sent).
    pub upgraded: u64,
    /// Plain HTTP requests answered (the page, /healthz, /metrics, 404s).
    pub http_requests: u64,
    /// Engine.IO polls passed on to the node holding their session, and served for another.
    pub relayed_out: u64,
    pub relayed_in: u64,
    rejections: [u64; STATUSES.len() + 1],
    /// WebSocket messages received (text and binary, reassembled).
    pub messages_in: u64,
    /// Payload bytes of those messages.
    pub message_bytes_in: u64,
    /// Bytes read from client sockets.
    pub bytes_in: u64,
    /// Messages the application produced (a broadcast counts once).
    pub messages_out: u64,
    /// Frames queued to a connection (a broadcast to N clients counts N).
    pub deliveries: u64,
    /// Bytes written to client sockets.
    pub bytes_out: u64,
    closes: [u64; CODES.len() + 1],
    /// Clients closed with 1008 for not reading their output.
    pub slow_consumers: u64,
    /// TLS connections dropped for a TLS error: not TLS at all, a failed handshake, a bad record.
    pub tls_errors: u64,
    /// Server pings sent to silent clients.
    pub pings: u64,
    limits: [u64; Limit::ALL.len()],
    /// Engine.IO sessions open (a gauge the event loop sets before rendering).
    pub eio_sessions: u64,
    /// Handshakes that negotiated permessage-deflate.
    pub deflate_upgrades: u64,
    /// Deliveries sent compressed.
    pub deflate_deliveries: u64,
    /// Compressed messages inflated; frames compressed, and their payload bytes before and
    /// after (copied from the process's inflater and deflater).
    deflate: [u64; 4],
}

impl Metrics {
    /// Takes the permessage-deflate counts of the process's inflater and deflater.
    pub fn take_zlib(&mut self, inflater: &Inflater, deflater: &Deflater) {
        let (frames, plain, compressed) = deflater.counts();
        self.deflate = [inflater.inflated(), frames, plain, compressed];
    }

    /// Counts a refused request by its status.
    pub fn rejected(&mut self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        if let Some(n) = self.rejections.get_mut(i) {
            *n += 1;
        }
    }

    /// Counts a close frame the server sent.
    pub fn close_sent(&mut self, code: CloseCode) {
        let i = CODES
            .iter()
            .position(|&c| c == code.0)
            .unwrap_or(CODES.len());
        if let Some(n) = self.closes.get_mut(i) {
            *n += 1;
        }
    }

    /// Counts a limit being hit.
    pub fn limit(&mut self, limit: Limit) {
        let i = Limit::ALL
            .iter()
            .position(|&l| l == limit)
            .unwrap_or(usize::MAX);
        if let Some(n) = self.limits.get_mut(i) {
            *n += 1;
        }
    }

    /// Appends the whole exposition; `connections` and `websockets` are the current gauges.
    pub fn render(&self, connections: usize, websockets: usize, out: &mut String) {
        let one = |v: u64| vec![(String::new(), v)];
        // `{key="name"}` for each name, paired with its count (the last name may be "other").
        let by = |key: &str, names: &mut dyn Iterator<Item = String>, counts: &[u64]| {
            names
                .map(|n| format!("{{{key}=\"{n}\"}}"))
                .zip(counts.iter().copied())
                .collect::<Vec<_>>()
        };
        let other = || std::iter::once("other".to_owned());
        let families = [
            (
                "wsrelay_connections_open",
                "gauge",
                "Client sockets open (handshaking, open or closing).",
                one(connections as u64),
            ),
            (
                "wsrelay_websockets_open",
                "gauge",
                "WebSocket connections open (handshake done, not closing).",
                one(websockets as u64),
            ),
            (
                "wsrelay_eio_sessions_open",
                "gauge",
                "Engine.IO (socket.io) sessions open, on WebSocket or long polling.",
                one(self.eio_sessions),
            ),
            (
                "wsrelay_connections_accepted_total",
                "counter",
                "TCP connections accepted.",
                one(self.accepted),
            ),
            (
                "wsrelay_upgrades_total",
                "counter",
                "WebSocket handshakes completed with 101.",
                one(self.upgraded),
            ),
            (
                "wsrelay_http_requests_total",
                "counter",
                "Plain HTTP requests answered.",
                one(self.http_requests),
            ),
            (
                "wsrelay_eio_relayed_total",
                "counter",
                "Engine.IO polls of a session on another node passed on to it (out), and served here for another node (in).",
                by(
                    "direction",
                    &mut ["out", "in"].into_iter().map(str::to_owned),
                    &[self.relayed_out, self.relayed_in],
                ),
            ),
            (
                "wsrelay_handshake_rejections_total",
                "counter",
                "Requests refused before the upgrade, by HTTP status.",
                by(
                    "status",
                    &mut STATUSES.iter().map(u16::to_string).chain(other()),
                    &self.rejections,
                ),
            ),
            (
                "wsrelay_messages_received_total",
                "counter",
                "WebSocket messages received.",
                one(self.messages_in),
            ),
            (
                "wsrelay_message_bytes_received_total",
                "counter",
                "Payload bytes of the WebSocket messages received.",
                one(self.message_bytes_in),
            ),
            (
                "wsrelay_received_bytes_total",
                "counter",
                "Bytes read from client sockets.",
                one(self.bytes_in),
            ),
            (
                "wsrelay_messages_sent_total",
                "counter",
                "Messages the application sent (a broadcast counts once).",
                one(self.messages_out),
            ),
            (
                "wsrelay_deliveries_total",
                "counter",
                "Frames queued to a client (a broadcast to N clients counts N).",
                one(self.deliveries),
            ),
            (
                "wsrelay_sent_bytes_total",
                "counter",
                "Bytes written to client sockets.",
                one(self.bytes_out),
            ),
            (
                "wsrelay_close_frames_sent_total",
                "counter",
                "Close frames sent, by status code (1005: an echo of an empty close).",
                by(
                    "code",
                    &mut CODES.iter().map(u16::to_string).chain(other()),
                    &self.closes,
                ),
            ),
            (
                "wsrelay_slow_consumer_closes_total",
                "counter",
                "Clients closed with 1008 for not reading their output.",
                one(self.slow_consumers),
            ),
            (
                "wsrelay_tls_errors_total",
                "counter",
                "TLS connections dropped for a TLS error (not TLS, a failed handshake, a bad record).",
                one(self.tls_errors),
            ),
            (
                "wsrelay_pings_sent_total",
                "counter",
                "Pings sent to silent clients.",
                one(self.pings),
            ),
            (
                "wsrelay_limit_hits_total",
                "counter",
                "Times a limit was hit, by limit.",
                by(
                    "limit",
                    &mut Limit::ALL.iter().map(|l| l.as_str().to_owned()),
                    &self.limits,
                ),
            ),
            (
                "wsrelay_deflate_upgrades_total",
                "counter",
                "WebSocket handshakes that negotiated permessage-deflate.",
                one(self.deflate_upgrades),
            ),
            (
                "wsrelay_deflate_messages_received_total",
                "counter",
                "Compressed messages received and inflated.",
                one(self.deflate[0]),
            ),
            (
                "wsrelay_deflate_compressions_total",
                "counter",
                "Frames compressed (once per message, whatever its receivers).",
                one(self.deflate[1]),
            ),
            (
                "wsrelay_deflate_payload_bytes_total",
                "counter",
                "Payload bytes of the frames compressed, before and after.",
                by(
                    "form",
                    &mut ["plain", "compressed"].iter().map(|s| s.to_string()),
                    self.deflate.get(2..).unwrap_or_default(),
                ),
            ),
            (
                "wsrelay_deflate_deliveries_total",
                "counter",
                "Deliveries sent compressed (included in wsrelay_deliveries_total).",
                one(self.deflate_deliveries),
            ),
        ];
        for (name, kind, help, samples) in families {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once() {
        let mut m = Metrics::default();
        m.rejected(403);
        m.rejected(999);
        m.close_sent(CloseCode(1001));
        m.close_sent(CloseCode(4000));
        m.limit(Limit::Origin);
        let mut out = String::new();
        m.render(3, 2, &mut out);
        assert!(out.contains("wsrelay_connections_open 3\n"));
        assert!(out.contains("wsrelay_handshake_rejections_total{status=\"403\"} 1\n"));
        assert!(out.contains("wsrelay_handshake_rejections_total{status=\"other\"} 1\n"));
        assert!(out.contains("wsrelay_close_frames_sent_total{code=\"1001\"} 1\n"));
        assert!(out.contains("wsrelay_close_frames_sent_total{code=\"other\"} 1\n"));
        assert!(out.contains("wsrelay_limit_hits_total{limit=\"origin\"} 1\n"));
        assert_eq!(out.matches("# TYPE wsrelay_limit_hits_total").count(), 1);
    }
}
