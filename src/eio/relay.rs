//! Long-polling requests passed between the nodes of a cluster, sans IO.
//!
//! A balancer without sticky sessions sends a session's polls to any node. The node that gets
//! one for a session another node holds (the sid names the node, see [`super::sid`]) passes it
//! on as a [`Relayed`] message on that node's channel in the room store, keeps the client's
//! connection waiting, and writes the [`Reply`] it gets back on its own channel: the whole
//! HTTP response, made by the node holding the session as if the request had come to it.
//!
//! Both are binary (Redis channels carry bytes): a tag byte, fixed-size little-endian numbers,
//! length-prefixed strings, then the rest. Anything that does not parse is `None`: a message
//! on our channel that we did not write is dropped, never trusted.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use slab::Slab;

use super::sid::Node;
use crate::proto::handshake::Method;

/// The first id of a request another node passed on to this one, as a connection id for
/// [`super::session::Sessions`]: above connections' slab keys (below 2^24), below sessions'.
pub const REMOTE_BASE: usize = 1 << (usize::BITS - 3);

/// Whether a connection id names a request another node passed on.
pub fn is_remote(conn: usize) -> bool {
    (REMOTE_BASE..super::session::ID_BASE).contains(&conn)
}

/// The longest `Origin` or target passed on (the request head is bounded far below this).
const MAX_FIELD: usize = u16::MAX as usize;

/// A request for a session on another node.
#[derive(Debug, PartialEq, Eq)]
pub struct Relayed<'a> {
    /// The node that got the request and waits for the answer.
    pub from: Node,
    /// Its number for the request there.
    pub id: u64,
    /// `GET` (a poll) or `POST` (packets).
    pub method: Method,
    /// Path and query.
    pub target: &'a str,
    /// Its page's origin, for the answer's CORS fields.
    pub origin: Option<&'a [u8]>,
    /// The body of a `POST`.
    pub body: &'a [u8],
}

/// The answer to a [`Relayed`] request.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The request's number at the node that passed it on.
    pub id: u64,
    /// Status line, fields and body.
    pub response: &'a [u8],
}

/// A message on a node's channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A request to serve.
    Request(Relayed<'a>),
    /// An answer to a request passed on from here.
    Reply(Reply<'a>),
}

impl Relayed<'_> {
    /// The message; `None` if a field is too long to pass on.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let origin = self.origin.unwrap_or_default();
        if origin.len() > MAX_FIELD || self.target.len() > MAX_FIELD {
            return None;
        }
        let method = match self.method {
            Method::Get => b'G',
            Method::Post => b'P',
            _ => return None,
        };
        let mut out = Vec::with_capacity(32 + origin.len() + self.target.len() + self.body.len());
        out.push(b'Q');
        out.extend_from_slice(&self.from);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(method);
        out.push(u8::from(self.origin.is_some()));
        for field in [origin, self.target.as_bytes()] {
            out.extend_from_slice(&(field.len() as u16).to_le_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(self.body);
        Some(out)
    }
}

impl Reply<'_> {
    /// The message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.response.len());
        out.push(b'A');
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(self.response);
        out
    }
}

/// Requests passed on from this node and waiting for their answer, and requests passed on
/// to it and not yet answered: the event loop's bookkeeping, sans IO.
#[derive(Debug, Default)]
pub struct Relays {
    next: u64,
    /// Passed on from here: by number, the connection waiting and the answer it gets if none
    /// comes (400 "Session ID unknown", with the request's CORS fields).
    out: HashMap<u64, (usize, Vec<u8>)>,
    /// The number each waiting connection's request goes by.
    by_conn: HashMap<usize, u64>,
    /// (deadline, number), in the order passed on: one timeout for all, so deadlines come in
    /// order; entries answered meanwhile are skipped.
    deadlines: VecDeque<(Instant, u64)>,
    /// Passed on to here and held by a session: who asked, and the number there.
    remote: Slab<(Node, u64)>,
}

impl Relays {
    /// The number the next request passed on from here goes by.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Connection `conn`'s request went out as [`Relays::next_id`]; if no answer comes by
    /// `until`, `fallback` is its answer.
    pub fn passed_on(&mut self, conn: usize, fallback: Vec<u8>, until: Instant) {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.out.insert(id, (conn, fallback));
        self.by_conn.insert(conn, id);
        self.deadlines.push_back((until, id));
    }

    /// The connection that waits for request `id`'s answer (it waits no more).
    pub fn answered(&mut self, id: u64) -> Option<usize> {
        let (conn, _) = self.out.remove(&id)?;
        self.by_conn.remove(&conn);
        Some(conn)
    }

    /// Request `id` reached no node: its connection and the answer it gets.
    pub fn unheard(&mut self, id: u64) -> Option<(usize, Vec<u8>)> {
        let (conn, fallback) = self.out.remove(&id)?;
        self.by_conn.remove(&conn);
        Some((conn, fallback))
    }

    /// Connection `conn` is gone: an answer to its request goes nowhere.
    pub fn conn_gone(&mut self, conn: usize) {
        if let Some(id) = self.by_conn.remove(&conn) {
            self.out.remove(&id);
        }
    }

    /// Requests whose answer did not come by `now`: their connections and answers.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<(usize, Vec<u8>)>) {
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            out.extend(self.unheard(id));
        }
        if self.out.is_empty() {
            self.deadlines.clear();
        }
    }

    /// When [`Relays::expire`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(at, _)| at)
    }

    /// A request passed on to here from node `from` as its `id`: the connection id the
    /// sessions know it by until [`Relays::remote_answered`].
    pub fn remote(&mut self, from: Node, id: u64) -> usize {
        REMOTE_BASE + self.remote.insert((from, id))
    }

    /// Who asked the request sessions know as connection `conn`, and its number there.
    pub fn remote_answered(&mut self, conn: usize) -> Option<(Node, u64)> {
        let key = conn.checked_sub(REMOTE_BASE)?;
        self.remote.try_remove(key)
    }
}

/// Reads `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = take(rest, 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len: [u8; 2] = take(rest, 2)?.try_into().ok()?;
    take(rest, u16::from_le_bytes(len) as usize)
}

/// Parses a message from a node's channel.
pub fn decode(message: &[u8]) -> Option<Message<'_>> {
    let (&tag, mut rest) = message.split_first()?;
    match tag {
        b'Q' => {
            let from: Node = take(&mut rest, 6)?.try_into().ok()?;
            let id = take_u64(&mut rest)?;
            let method = match take(&mut rest, 1)? {
                b"G" => Method::Get,
                b"P" => Method::Post,
                _ => return None,
            };
            let has_origin = match take(&mut rest, 1)? {
                [0] => false,
                [1] => true,
                _ => return None,
            };
            let origin = take_field(&mut rest)?;
            if !has_origin && !origin.is_empty() {
                return None; // Not how we write it.
            }
            let target = std::str::from_utf8(take_field(&mut rest)?).ok()?;
            Some(Message::Request(Relayed {
                from,
                id,
                method,
                target,
                origin: has_origin.then_some(origin),
                body: rest,
            }))
        }
        b'A' => {
            let id = take_u64(&mut rest)?;
            Some(Message::Reply(Reply { id, response: rest }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        for (method, origin, body) in [
            (Method::Get, None, &b""[..]),
            (
                Method::Post,
                Some(&b"http://page.test"[..]),
                &b"4hello\x1e4x"[..],
            ),
            (Method::Post, Some(&b""[..]), &b"\0\xff"[..]),
        ] {
            let r = Relayed {
                from: *b"node01",
                id: u64::MAX - 3,
                method,
                target: "/socket.io/?EIO=4&transport=polling&sid=x",
                origin,
                body,
            };
            let bytes = r.encode().unwrap();
            assert_eq!(decode(&bytes), Some(Message::Request(r)));
        }
        let a = Reply {
            id: 7,
            response: b"HTTP/1.1 200 OK\r\n\r\nok",
        };
        assert_eq!(decode(&a.encode()), Some(Message::Reply(a)));
    }

    #[test]
    fn other_methods_and_long_fields_are_not_passed_on() {
        let long = "x".repeat(MAX_FIELD + 1);
        let r = |method, target| Relayed {
            from: [0; 6],
            id: 1,
            method,
            target,
            origin: None,
            body: b"",
        };
        assert_eq!(r(Method::Options, "/").encode(), None);
        assert_eq!(r(Method::Get, &long).encode(), None);
    }

    #[test]
    fn a_waiting_request_is_answered_once_or_gets_its_fallback() {
        let t0 = Instant::now();
        let later = |s| t0 + std::time::Duration::from_secs(s);
        let mut r = Relays::default();
        for conn in [3, 4, 5] {
            let id = r.next_id();
            r.passed_on(
                conn,
                format!("400 for {conn}").into_bytes(),
                later(conn as u64),
            );
            assert_ne!(r.next_id(), id);
        }
        assert_eq!(r.poll_timeout(), Some(later(3)));
        // 3 answered, 4's connection went away: only 5 falls back, at its deadline.
        assert_eq!(r.answered(0), Some(3));
        assert_eq!(r.answered(0), None);
        r.conn_gone(4);
        assert_eq!(r.answered(1), None);
        let mut expired = Vec::new();
        r.expire(later(4), &mut expired);
        assert!(expired.is_empty());
        r.expire(later(5), &mut expired);
        assert_eq!(expired, [(5, b"400 for 5".to_vec())]);
        assert_eq!(r.poll_timeout(), None);
        // Remote requests get ids between connections' and sessions'.
        let c = r.remote(*b"nodeAA", 42);
        assert!(is_remote(c) && !is_remote(7) && !is_remote(super::super::session::ID_BASE));
        assert_eq!(r.remote_answered(c), Some((*b"nodeAA", 42)));
        assert_eq!(r.remote_answered(c), None);
        assert_eq!(r.remote_answered(7), None);
    }

    #[test]
    fn anything_cut_short_or_unknown_is_dropped() {
        let whole = Relayed {
            from: *b"abcdef",
            id: 9,
            method: Method::Get,
            target: "/socket.io/",
            origin: Some(b"o"),
            body: b"",
        }
        .encode()
        .unwrap();
        // Every cut before the target's end loses a field.
        for n in 0..whole.len() {
            assert_eq!(decode(&whole[..n]), None, "{n}");
        }
        for bad in [
            &b"Z"[..],
            b"A1234567",
            b"Qabcdef12345678X",
            b"Qabcdef12345678G\x02",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
