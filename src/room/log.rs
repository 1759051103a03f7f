//! A room's log: its epoch, its sequence of events and their bounded history.
//!
//! The app hands the log a [`Draft`] (the event's JSON without `seq` and `ts`); the log gives
//! it the room's next sequence number and the time, keeps it, and completes the append with a
//! [`Committed`] that the app takes with [`Log::take_committed`] and renders. [`MemoryLog`],
//! the in-process log, completes every append at once, but through that same queue, so a log
//! whose appends complete later (a shared store's reply) changes nothing in how the app
//! renders and fans events out.
//!
//! [`super::redis::RedisLog`] is the shared one (`--redis`): its appends complete when Redis
//! answers, its rooms load before they can be read ([`Log::ready`], [`LogEvent::Ready`]), and
//! events other nodes commit reach the app through the same [`LogEvent::Committed`].

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::RoomId;
use crate::chat::{self, Stamp};

/// An event the app wants in a room's log: it has no `seq` or `ts` yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The event's JSON object without `seq` and `ts` ([`chat::stamp`] adds them).
    pub body: Rc<str>,
    /// What the event is, for the app when it is committed.
    pub kind: Kind,
}

/// A connection that asked for something, as the app knows it: its id and the serial of its
/// arrival, so an answer that comes late never reaches a later connection with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    /// The connection's id (a slab key, reused once it closes).
    pub conn: usize,
    /// Which connection with that id.
    pub serial: u64,
}

/// What kind of event a [`Draft`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chat message.
    Message {
        /// The `POST /send` request waiting for the committed message, if any.
        reply: Option<Asker>,
        /// The WebSocket client that sent it, told if it cannot be committed.
        from: Option<Asker>,
    },
    /// A presence notice; it replaces event `replaces` in the history if that is still the
    /// room's newest event (nothing came between), so churn never pushes messages out.
    Notice {
        /// The previous notice's seq, in the room's current epoch.
        replaces: Option<u64>,
        /// Who is in the room on this node now (a shared log sums the nodes' counts into the
        /// notice: see [`Log::counts_presence`]).
        here: usize,
    },
    /// An event a socket.io client emitted (its draft: see [`crate::sio::chat`]).
    Sio {
        /// The socket that emitted it (its session), told if it cannot be committed.
        from: Option<Asker>,
        /// Its namespace, by index in this node's list.
        nsp: u8,
        /// The acknowledgment it asked for: [`LogEvent::Acked`] once it is committed.
        ack: Option<u64>,
    },
}

/// What a log tells the app, in order (see [`Log::take_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// An event committed in a room held here (by this node, or by another one).
    Committed(Committed),
    /// The room's log was loaded: its epoch, last seq and history can be read now.
    Ready(Rc<str>),
    /// The room started over in the store (it came back empty): a new epoch, nothing kept.
    Restarted(Rc<str>),
    /// Events `from..=to` of the room were committed but are gone from the store before
    /// this node saw them (its link was down longer than the history lasts).
    Lost {
        /// The room.
        room: Rc<str>,
        /// The first event missed.
        from: u64,
        /// The last event missed.
        to: u64,
    },
    /// A `POST /send`'s message was committed: `json` is it as sent.
    Replied {
        /// Who asked.
        to: Asker,
        /// The committed message.
        json: Box<str>,
    },
    /// A socket.io event that asked for an acknowledgment was committed (by this node).
    Acked {
        /// The socket's session.
        to: Asker,
        /// Its namespace, by index.
        nsp: u8,
        /// The acknowledgment id.
        ack: u64,
    },
    /// A draft could not be committed (the store is unreachable or refused it).
    Failed {
        /// The room.
        room: Rc<str>,
        /// The draft.
        draft: Draft,
        /// Why, for the sender.
        why: Rc<str>,
    },
}

/// An appended event, with its place in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The room's name.
    pub room: Rc<str>,
    /// The room's epoch the event belongs to.
    pub epoch: Rc<str>,
    /// Its sequence number in that epoch.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, when it was committed.
    pub ts: u64,
    /// What was appended.
    pub draft: Draft,
}

/// What [`Log::read`] found for a client that last saw `since`.
#[derive(Debug, PartialEq, Eq)]
pub struct Read<'a> {
    /// Events the client missed that are no longer kept: `(first, last)` sequence numbers.
    pub gap: Option<(u64, u64)>,
    /// The kept events after the client's cursor, oldest first, as `(seq, json)`: each as
    /// it was sent live (its draft stamped by [`chat::stamp`]).
    pub events: Vec<(u64, &'a str)>,
}

/// A room's log, in this process or in a shared store.
pub trait Log: std::fmt::Debug {
    /// Starts holding room `room`, called `name`: its log is made, with a new epoch (or, in a
    /// shared store, found, and made only if `create`: a member joins, not a mere reader).
    fn open(&mut self, room: RoomId, name: &Rc<str>, create: bool);

    /// Whether the room's epoch, seq and history can be read (a shared store's answer may not
    /// have come yet; [`LogEvent::Ready`] says when it has).
    fn ready(&self, _room: RoomId) -> bool {
        true
    }

    /// Whether presence notices count every node: then a notice's draft carries
    /// [`crate::chat::COUNT_SLOT`] where the count goes, and the log fills it in.
    fn counts_presence(&self) -> bool {
        false
    }

    /// Why the log cannot commit now (its store is unreachable), for `/healthz`.
    fn health(&self) -> Option<String> {
        None
    }

    /// The Redis log behind this one, for the event loop to drive its sockets.
    fn redis(&mut self) -> Option<&mut super::redis::RedisLog> {
        None
    }

    /// Stops holding room `room`; in-process, its events and epoch are forgotten.
    fn close(&mut self, room: RoomId);

    /// Whether closing the room would lose events that only this process has.
    fn keeps(&self, room: RoomId) -> bool;

    /// The room's current epoch: sequence numbers compare only within one epoch.
    fn epoch(&self, room: RoomId) -> Rc<str>;

    /// The room's last sequence number so far (0 before its first event).
    fn last_seq(&self, room: RoomId) -> u64;

    /// Appends `draft` to the room; it completes as a [`LogEvent::Committed`] in
    /// [`Log::take_events`] (in-process: before this returns), or fails.
    fn append(&mut self, room: RoomId, draft: Draft);

    /// Moves what happened to `out`, in order: completed appends (and, in a shared store,
    /// every event another node committed in a room held here), rooms loaded, failures.
    fn take_events(&mut self, out: &mut Vec<LogEvent>);

    /// What a client that last saw `since` missed in the room (everything kept when `None`).
    fn read(&self, room: RoomId, since: Option<u64>) -> Read<'_>;
}

/// Limits on a room's history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Events kept per room.
    pub events: usize,
    /// Bytes kept per room, counted as sent.
    pub bytes: usize,
}

/// One kept event, as sent live, so that a replay copies it rather than renders it again.
#[derive(Debug)]
struct Entry {
    seq: u64,
    json: Box<str>,
}

/// A room's kept events, bounded by [`HistoryLimits`]: the whole history in-process, a copy
/// of the store's tail in a shared log.
#[derive(Debug, Default)]
pub(super) struct Tail {
    history: VecDeque<Entry>,
    history_bytes: usize,
    /// The newest event that fell out of the history (0: none): a client behind it missed
    /// events for good. A presence notice replaced by the next one is not counted here.
    pub(super) lost_through: u64,
}

impl Tail {
    /// Drops event `seq` if it is the newest kept (a notice replaced by the next one).
    pub(super) fn drop_last(&mut self, seq: u64) {
        if self.history.back().is_some_and(|e| e.seq == seq)
            && let Some(old) = self.history.pop_back()
        {
            self.history_bytes -= old.json.len();
        }
    }

    /// Keeps event `seq`, as sent (`json`), dropping the oldest past the limits.
    pub(super) fn keep(&mut self, seq: u64, json: &str, limits: HistoryLimits) {
        if limits.events == 0 || json.len() > limits.bytes {
            // Not kept, but still counted, so a resuming client learns of the gap.
            self.history.clear();
            self.history_bytes = 0;
            self.lost_through = seq;
            return;
        }
        self.history.push_back(Entry {
            seq,
            json: json.into(),
        });
        self.history_bytes += json.len();
        while self.history.len() > limits.events || self.history_bytes > limits.bytes {
            match self.history.pop_front() {
                Some(old) => {
                    self.history_bytes -= old.json.len();
                    self.lost_through = self.lost_through.max(old.seq);
                }
                None => break,
            }
        }
    }

    /// Whether anything is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// What a client that last saw `since` missed, `last` being the room's last event.
    pub(super) fn read(&self, since: Option<u64>, last: u64) -> Read<'_> {
        let after = since.unwrap_or(0).min(last);
        // Only events that fell out of the history are missed: a notice replaced by the next
        // one is not (it said nothing the next one does not say).
        let gap =
            (since.is_some() && after < self.lost_through).then(|| (after + 1, self.lost_through));
        let events = self
            .history
            .iter()
            .filter(|e| since.is_none() || e.seq > after)
            .map(|e| (e.seq, &*e.json))
            .collect();
        Read { gap, events }
    }
}

#[derive(Debug)]
struct RoomLog {
    name: Rc<str>,
    /// Names this incarnation of the room: a room freed and made again (or a restarted
    /// server) starts its sequence over, and a cursor from before means nothing in it.
    epoch: Rc<str>,
    /// The sequence number the next event gets; the first is 1.
    next_seq: u64,
    tail: Tail,
}

/// The in-process log: every room's history in this process's memory, bounded by
/// [`HistoryLimits`]; appends complete at once.
#[derive(Debug)]
pub struct MemoryLog {
    limits: HistoryLimits,
    /// By room id (a slab key of the room directory, so the vector stays as short as the
    /// rooms held at once).
    rooms: Vec<Option<RoomLog>>,
    /// Distinguishes this process's epochs from an earlier one's (its start time).
    epoch_base: u64,
    /// Rooms made so far, so that every room incarnation gets its own epoch.
    created: u64,
    /// Appends completed and not yet taken.
    committed: Vec<LogEvent>,
    /// Reused to render an event before it is kept.
    json: Vec<u8>,
}

/// What the app hears once an append of `kind` committed, besides the event: a socket.io
/// event's acknowledgment is due.
pub(super) fn acked(kind: Kind) -> Option<LogEvent> {
    match kind {
        Kind::Sio {
            from: Some(to),
            nsp,
            ack: Some(ack),
        } => Some(LogEvent::Acked { to, nsp, ack }),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl MemoryLog {
    /// No rooms yet; `epoch_base` must differ between runs of the server (its start time).
    pub fn new(limits: HistoryLimits, epoch_base: u64) -> Self {
        Self {
            limits,
            rooms: Vec::new(),
            epoch_base,
            created: 0,
            committed: Vec::new(),
            json: Vec::new(),
        }
    }

    fn room(&self, room: RoomId) -> Option<&RoomLog> {
        self.rooms.get(room).and_then(Option::as_ref)
    }
}

impl Log for MemoryLog {
    fn open(&mut self, room: RoomId, name: &Rc<str>, _create: bool) {
        self.created += 1;
        let epoch = format!("{:x}-{:x}", self.epoch_base, self.created).into();
        if self.rooms.len() <= room {
            self.rooms.resize_with(room + 1, || None);
        }
        self.rooms[room] = Some(RoomLog {
            name: name.clone(),
            epoch,
            next_seq: 1,
            tail: Tail::default(),
        });
    }

    fn close(&mut self, room: RoomId) {
        if let Some(slot) = self.rooms.get_mut(room) {
            *slot = None;
        }
    }

    fn keeps(&self, room: RoomId) -> bool {
        self.room(room).is_some_and(|r| !r.tail.is_empty())
    }

    fn epoch(&self, room: RoomId) -> Rc<str> {
        self.room(room)
            .map_or_else(|| Rc::from(""), |r| r.epoch.clone())
    }

    fn last_seq(&self, room: RoomId) -> u64 {
        self.room(room).map_or(0, |r| r.next_seq - 1)
    }

    fn append(&mut self, room: RoomId, draft: Draft) {
        let Some(log) = self.rooms.get_mut(room).and_then(Option::as_mut) else {
            return;
        };
        let stamp = Stamp {
            seq: log.next_seq,
            ts: now_ms(),
        };
        log.next_seq += 1;
        if let Kind::Notice {
            replaces: Some(last),
            ..
        } = draft.kind
            && last == stamp.seq - 1
        {
            log.tail.drop_last(last);
        }
        chat::stamp(&draft.body, stamp, false, &mut self.json);
        let json = std::str::from_utf8(&self.json).unwrap_or_default();
        log.tail.keep(stamp.seq, json, self.limits);
        if let Kind::Message {
            reply: Some(to), ..
        } = draft.kind
        {
            self.committed.push(LogEvent::Replied {
                to,
                json: json.into(),
            });
        }
        let kind = draft.kind;
        self.committed.push(LogEvent::Committed(Committed {
            room: log.name.clone(),
            epoch: log.epoch.clone(),
            seq: stamp.seq,
            ts: stamp.ts,
            draft,
        }));
        if let Some(acked) = acked(kind) {
            self.committed.push(acked);
        }
    }

    fn take_events(&mut self, out: &mut Vec<LogEvent>) {
        out.append(&mut self.committed);
    }

    fn read(&self, room: RoomId, since: Option<u64>) -> Read<'_> {
        let Some(log) = self.room(room) else {
            return Read {
                gap: None,
                events: Vec::new(),
            };
        };
        log.tail.read(since, log.next_seq.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(events: usize, bytes: usize) -> MemoryLog {
        let mut log = MemoryLog::new(HistoryLimits { events, bytes }, 0xabc);
        log.open(0, &Rc::from("a"), true);
        log
    }

    /// A draft whose text is `text`.
    fn draft(text: &str) -> String {
        format!(r#"{{"m":"{text}"}}"#)
    }

    /// Appends a draft of `text` as a message (or a notice replacing `replaces`); returns
    /// its seq.
    fn append(log: &mut MemoryLog, text: &str, replaces: Option<Option<u64>>) -> u64 {
        let kind = match replaces {
            Some(replaces) => Kind::Notice { replaces, here: 1 },
            None => Kind::Message {
                reply: None,
                from: None,
            },
        };
        let body: Rc<str> = draft(text).into();
        log.append(
            0,
            Draft {
                body: body.clone(),
                kind,
            },
        );
        let mut done = Vec::new();
        log.take_events(&mut done);
        let [LogEvent::Committed(done)] = &done[..] else {
            panic!("the in-process log completes at once: {done:?}");
        };
        assert_eq!((&*done.room, &done.draft.body), ("a", &body));
        done.seq
    }

    /// The kept events after `since`, as `(seq, text)`; each is kept as sent, stamped.
    fn kept(log: &MemoryLog, since: Option<u64>) -> Vec<(u64, String)> {
        let read = log.read(0, since);
        let text = |json: &str| {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert!(v["seq"].is_u64() && v["ts"].is_u64(), "{json}");
            v["m"].as_str().unwrap().to_owned()
        };
        read.events.iter().map(|&(s, j)| (s, text(j))).collect()
    }

    fn owned(events: &[(u64, &str)]) -> Vec<(u64, String)> {
        events.iter().map(|&(s, t)| (s, t.to_owned())).collect()
    }

    /// What an entry of `text` costs at this seq: its size as sent (ts is now).
    fn cost(text: &str, seq: u64) -> usize {
        let mut json = Vec::new();
        chat::stamp(&draft(text), Stamp { seq, ts: now_ms() }, false, &mut json);
        json.len()
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let budget = 3 * cost("e1", 1);
        let mut l = log(3, budget);
        for i in 1..=5u64 {
            assert_eq!(append(&mut l, &format!("e{i}"), None), i);
        }
        assert_eq!(kept(&l, None), owned(&[(3, "e3"), (4, "e4"), (5, "e5")]));
        // Over the byte budget: e3 and e4 go.
        append(&mut l, "01234567890123456", None);
        assert_eq!(
            kept(&l, None),
            owned(&[(5, "e5"), (6, "01234567890123456")])
        );
        // An entry larger than the whole budget empties the history; resuming shows the gap.
        append(&mut l, &"x".repeat(budget), None);
        assert!(kept(&l, None).is_empty());
        assert!(!l.keeps(0));
        assert_eq!(l.read(0, Some(7)).gap, None);
        assert_eq!(l.read(0, Some(6)).gap, Some((7, 7)));
        assert_eq!(l.read(0, Some(5)).gap, Some((6, 7)));
    }

    #[test]
    fn a_replaced_last_event_leaves_the_rest_and_the_sequence() {
        let mut l = log(3, 1000);
        append(&mut l, "msg", None);
        append(&mut l, "join", Some(None));
        // Not the last: kept.
        assert_eq!(append(&mut l, "joins", Some(Some(1))), 3);
        assert_eq!(append(&mut l, "joined", Some(Some(3))), 4);
        assert_eq!(
            kept(&l, None),
            owned(&[(1, "msg"), (2, "join"), (4, "joined")])
        );
        let tail = &l.room(0).unwrap().tail;
        let bytes: usize = tail.history.iter().map(|e| e.json.len()).sum();
        assert_eq!(tail.history_bytes, bytes);
        // A replaced notice, the oldest kept, is not a missed event for a cursor before it.
        let mut l = log(3, 1000);
        append(&mut l, "join", Some(None));
        assert_eq!(append(&mut l, "joins", Some(Some(1))), 2);
        assert_eq!(l.read(0, Some(0)).gap, None);
        assert_eq!(kept(&l, Some(0)), owned(&[(2, "joins")]));
    }

    #[test]
    fn replay_after_a_cursor_and_gaps() {
        let mut l = log(3, 1000);
        for i in 1..=5 {
            append(&mut l, &format!("e{i}"), None);
        }
        // Kept: 3, 4, 5.
        let rp = l.read(0, Some(3));
        assert_eq!(rp.gap, None);
        assert_eq!(kept(&l, Some(3)), owned(&[(4, "e4"), (5, "e5")]));
        let rp2 = l.read(0, Some(2));
        assert_eq!((rp2.gap, rp2.events.len()), (None, 3));
        let rp = l.read(0, Some(0));
        assert_eq!((rp.gap, rp.events.len()), (Some((1, 2)), 3));
        let rp = l.read(0, Some(5));
        assert_eq!((rp.gap, rp.events.len()), (None, 0));
        // A cursor from the future (another server's, or made up) is treated as "now".
        let rp = l.read(0, Some(99));
        assert_eq!((rp.gap, rp.events.len()), (None, 0));
    }

    #[test]
    fn every_incarnation_has_its_own_epoch() {
        let mut l = log(3, 1000);
        let first = l.epoch(0);
        append(&mut l, "x", None);
        l.close(0);
        assert_eq!((l.last_seq(0), &*l.epoch(0)), (0, ""));
        l.open(0, &Rc::from("a"), true);
        assert_ne!(l.epoch(0), first);
        assert_eq!(l.last_seq(0), 0);
    }
}
