//! One connection to Redis, sans IO: whether it is up, the bytes to write, the replies read,
//! reconnect backoff and reply timeouts. The event loop owns the socket and does what the link
//! asks (connect, write [`Link::output`], close); the room log says what the replies mean.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::resp::{self, Limits, Value};

/// The first wait before connecting again; doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts to connect.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the oldest command may wait for its reply before the link is given up: a Redis
/// that stopped answering (stopped, or a dead peer whose TCP has not noticed) must not hold
/// appends for ever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Unparsed input kept at most: a reply is bounded by the limits, and the link is closed when
/// a reply does not fit.
const MAX_INPUT: usize = 64 << 20;

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket; the next attempt is at `retry_at`.
    Down { retry_at: Instant },
    /// A connect is under way.
    Connecting { deadline: Instant },
    /// Connected: commands may be sent.
    Up,
}

/// One connection's state.
#[derive(Debug)]
pub struct Link {
    phase: Phase,
    out: Vec<u8>,
    input: Vec<u8>,
    backoff: Duration,
    /// When each command awaiting a reply was sent, oldest first (pushed replies on a
    /// subscribed link are not counted).
    inflight: VecDeque<Instant>,
    /// Why the link should be closed, when it should.
    close: Option<String>,
    limits: Limits,
}

impl Link {
    /// A link that connects at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Down { retry_at: now },
            out: Vec::new(),
            input: Vec::new(),
            backoff: MIN_BACKOFF,
            inflight: VecDeque::new(),
            close: None,
            limits: Limits::default(),
        }
    }

    /// Whether the event loop should start a connect now.
    pub fn wants_connect(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Down { retry_at } if retry_at <= now)
    }

    /// A connect was started.
    pub fn connecting(&mut self, now: Instant) {
        self.phase = Phase::Connecting {
            deadline: now + CONNECT_TIMEOUT,
        };
    }

    /// The socket is connected.
    pub fn connected(&mut self) {
        self.phase = Phase::Up;
        self.out.clear();
        self.input.clear();
        self.inflight.clear();
        self.close = None;
    }

    /// The connection is known to work (its handshake was answered): the next failure
    /// retries quickly again.
    pub fn proven(&mut self) {
        self.backoff = MIN_BACKOFF;
    }

    /// Whether commands can be sent.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Whether a connect is under way.
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    /// Queues a command; `reply` says whether a reply will follow it (a `SUBSCRIBE` is
    /// answered per channel, not per command).
    pub fn send(&mut self, args: &[&[u8]], now: Instant, reply: bool) {
        resp::encode(args, &mut self.out);
        if reply {
            self.inflight.push_back(now);
        }
    }

    /// Bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`Link::output`] were written.
    pub fn consumed(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Parses what was read into whole replies; an error means the link must be closed.
    pub fn feed(&mut self, bytes: &[u8], replies: &mut Vec<Value>) -> Result<(), String> {
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            match resp::parse(self.input.get(pos..).unwrap_or_default(), &self.limits) {
                Ok(Some((value, used))) => {
                    pos += used;
                    self.inflight.pop_front();
                    replies.push(value);
                }
                Ok(None) if self.input.len() - pos > MAX_INPUT => {
                    break Err("reply too large".to_owned());
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("bad reply: {e}")),
            }
        };
        if result.is_err() {
            // Nothing after a reply that does not parse can be read: keep none of it, so a
            // peer sending more garbage does not grow the buffer until the link is closed.
            self.input.clear();
        } else {
            self.input.drain(..pos);
        }
        result
    }

    /// Asks the event loop to close the link, for `why`.
    pub fn request_close(&mut self, why: String) {
        self.close.get_or_insert(why);
    }

    /// Why the event loop should close the link, if it should.
    pub fn close_requested(&self) -> Option<&str> {
        self.close.as_deref()
    }

    /// The socket is closed: try again after the backoff.
    pub fn down(&mut self, now: Instant) {
        self.phase = Phase::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.out.clear();
        self.input.clear();
        self.inflight.clear();
        self.close = None;
    }

    /// When [`Link::check`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Down { retry_at } => Some(retry_at),
            Phase::Connecting { deadline } => Some(deadline),
            Phase::Up => self.inflight.front().map(|&at| at + REPLY_TIMEOUT),
        }
    }

    /// Asks for a close if a connect or a reply is overdue.
    pub fn check(&mut self, now: Instant) {
        match self.phase {
            Phase::Connecting { deadline } if deadline <= now => {
                self.request_close("connect timed out".to_owned());
            }
            Phase::Up
                if self
                    .inflight
                    .front()
                    .is_some_and(|&at| at + REPLY_TIMEOUT <= now) =>
            {
                self.request_close(format!("no reply in {}s", REPLY_TIMEOUT.as_secs()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_timeouts_and_backoff() {
        let t0 = Instant::now();
        let mut l = Link::new(t0);
        assert!(l.wants_connect(t0));
        l.connecting(t0);
        assert!(!l.wants_connect(t0));
        l.check(t0 + CONNECT_TIMEOUT);
        assert_eq!(l.close_requested(), Some("connect timed out"));
        l.down(t0);
        assert!(!l.wants_connect(t0) && l.wants_connect(t0 + MIN_BACKOFF));
        l.connecting(t0);
        l.connected();
        l.send(&[b"PING"], t0, true);
        assert_eq!(l.output(), b"*1\r\n$4\r\nPING\r\n");
        l.consumed(4);
        assert_eq!(l.output(), b"$4\r\nPING\r\n");
        let mut replies = Vec::new();
        l.feed(b"+PO", &mut replies).unwrap();
        assert!(replies.is_empty());
        assert_eq!(l.deadline(), Some(t0 + REPLY_TIMEOUT));
        l.feed(b"NG\r\n:1\r\n", &mut replies).unwrap();
        assert_eq!(replies, [Value::Status(b"PONG".to_vec()), Value::Int(1)]);
        assert_eq!(l.deadline(), None);
        assert!(l.feed(b"?", &mut replies).is_err());
        // Garbage is not kept: more of it costs nothing until the link is closed.
        assert!(l.feed(&[b'?'; 1000], &mut replies).is_err());
        assert!(l.input.is_empty());
        // Backoff doubles up to the cap.
        for _ in 0..10 {
            l.down(t0);
        }
        assert!(!l.wants_connect(t0 + MAX_BACKOFF - Duration::from_millis(1)));
        assert!(l.wants_connect(t0 + MAX_BACKOFF));
    }
}
