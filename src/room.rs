//! Chat rooms: who is in each, their per-room sequence numbers and recent history.
//!
//! [`Rooms`] is the one seam between the chat protocol and where room state lives. Today it is
//! in this process; rooms spanning several nodes would put the same calls (`join`, `leave`,
//! `append`, `replay`, `members`) in front of a shared store (Redis streams give sequence
//! numbers and bounded history; pub/sub gives fan-out) without touching `app.rs` or the wire
//! protocol.
//!
//! Bounds: at most `max_rooms` rooms, each keeping at most `history` entries and `history_bytes`
//! bytes of them, so room state is bounded by `max_rooms * (history_bytes + overhead)`. A room
//! with no members and no history is freed at once; at the room limit, the room without members
//! that was active least recently is evicted to make space.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use slab::Slab;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// Long-polling clients counted in one room; more still poll, but are not counted.
pub const MAX_GUESTS: usize = 4096;

/// Long-polling clients counted in all rooms together.
pub const MAX_GUESTS_TOTAL: usize = 65_536;

/// The room that `/` joins, so a client written for the single-room chat still works.
pub const DEFAULT_ROOM: &str = "main";

/// Limits on room state, set once per server.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Rooms held at once.
    pub max_rooms: usize,
    /// History entries kept per room.
    pub history: usize,
    /// History bytes kept per room.
    pub history_bytes: usize,
}

/// A handle to a room, valid while it has members.
pub type RoomId = usize;

/// Why a client could not join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// The name is empty, too long, `.` or `..`, or has characters outside `[A-Za-z0-9_.-]`.
    InvalidName,
    /// Every room slot is taken by a room with members.
    TooManyRooms,
}

/// One past event of a room, as sent live.
#[derive(Debug)]
struct Entry {
    seq: u64,
    /// The event's JSON object.
    json: Box<str>,
}

#[derive(Debug)]
struct Room {
    /// Shared with `Rooms::by_name` and the fan-out actions that name the room.
    name: Rc<str>,
    /// Connection ids; order is irrelevant (swap_remove).
    members: Vec<usize>,
    /// Long-polling clients, by the id they chose, and when they stop counting as present.
    guests: HashMap<Box<str>, Instant>,
    /// The sequence number the next event gets; the first is 1.
    next_seq: u64,
    history: VecDeque<Entry>,
    history_bytes: usize,
    /// The newest event that fell out of the history (0: none): a client behind it missed
    /// events for good. A presence notice replaced by the next one is not counted here.
    lost_through: u64,
    /// `Rooms::clock` when the room last changed, for eviction.
    active: u64,
    /// Names this incarnation of the room: a room freed and made again (or a restarted
    /// server) starts its sequence over, and a cursor from before means nothing in it.
    epoch: Rc<str>,
}

/// What [`Rooms::replay`] found for a resuming client.
#[derive(Debug, PartialEq, Eq)]
pub struct Replay<'a> {
    /// Events the client missed that are no longer kept: `(first, last)` sequence numbers.
    pub gap: Option<(u64, u64)>,
    /// The kept events after the client's cursor, oldest first, as `(seq, json)`.
    pub events: Vec<(u64, &'a str)>,
}

/// Every room of this server.
#[derive(Debug)]
pub struct Rooms {
    limits: RoomLimits,
    rooms: Slab<Room>,
    by_name: HashMap<Rc<str>, RoomId>,
    /// Connection id -> (room, index in its `members`).
    member_of: HashMap<usize, (RoomId, usize)>,
    /// Counts changes, to find the least recently active room.
    clock: u64,
    /// Distinguishes this process's epochs from an earlier one's (its start time).
    epoch_base: u64,
    /// Rooms made so far, so that every room incarnation gets its own epoch.
    created: u64,
    /// Guests in all rooms.
    guests: usize,
}

/// Whether `name` may name a room: 1-64 bytes of `[A-Za-z0-9_.-]`, so it is safe in a URL
/// path, a log line and a future store's key without escaping; not `.` or `..`, which a
/// browser's URL parser removes from a path (RFC 3986 §5.2.4), so `ws://HOST/..` reaches `/`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_ROOM_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Rooms {
    /// No rooms yet; `epoch_base` must differ between runs of the server (its start time).
    pub fn new(limits: RoomLimits, epoch_base: u64) -> Self {
        Self {
            limits,
            rooms: Slab::new(),
            by_name: HashMap::new(),
            member_of: HashMap::new(),
            clock: 0,
            epoch_base,
            created: 0,
            guests: 0,
        }
    }

    /// Puts connection `conn` in room `name`, creating the room if needed.
    pub fn join(&mut self, name: &str, conn: usize) -> Result<RoomId, RoomError> {
        if !valid_name(name) {
            return Err(RoomError::InvalidName);
        }
        self.leave(conn);
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => self.create(name)?,
        };
        self.clock += 1;
        let Some(room) = self.rooms.get_mut(id) else {
            debug_assert!(false, "by_name points at a freed room");
            return Err(RoomError::TooManyRooms);
        };
        room.active = self.clock;
        self.member_of.insert(conn, (id, room.members.len()));
        room.members.push(conn);
        Ok(id)
    }

    fn create(&mut self, name: &str) -> Result<RoomId, RoomError> {
        if self.rooms.len() >= self.limits.max_rooms {
            // Evict a room no WebSocket client is in: one without history if there is one,
            // then one without long-polling guests, else the one that changed least recently.
            // Guests alone do not pin a room: they cost one cheap request each. O(rooms), but
            // only when the limit is reached.
            let victim = self
                .rooms
                .iter()
                .filter(|(_, r)| r.members.is_empty())
                .min_by_key(|(_, r)| (!r.history.is_empty(), !r.guests.is_empty(), r.active))
                .map(|(id, _)| id)
                .ok_or(RoomError::TooManyRooms)?;
            self.free(victim);
        }
        self.created += 1;
        let name: Rc<str> = name.into();
        let id = self.rooms.insert(Room {
            name: name.clone(),
            members: Vec::new(),
            guests: HashMap::new(),
            next_seq: 1,
            history: VecDeque::new(),
            history_bytes: 0,
            lost_through: 0,
            active: self.clock,
            epoch: format!("{:x}-{:x}", self.epoch_base, self.created).into(),
        });
        self.by_name.insert(name, id);
        Ok(id)
    }

    fn free(&mut self, id: RoomId) {
        if let Some(room) = self.rooms.try_remove(id) {
            self.by_name.remove(&room.name);
            self.guests -= room.guests.len();
        }
    }

    /// Takes connection `conn` out of its room; returns the room, if it was in one.
    pub fn leave(&mut self, conn: usize) -> Option<RoomId> {
        let (id, index) = self.member_of.remove(&conn)?;
        let room = self.rooms.get_mut(id)?;
        if index < room.members.len() {
            room.members.swap_remove(index);
            // The member moved into `index` needs its position updated.
            if let Some(&moved) = room.members.get(index)
                && let Some(slot) = self.member_of.get_mut(&moved)
            {
                slot.1 = index;
            }
        }
        self.clock += 1;
        room.active = self.clock;
        if room.members.is_empty() && room.guests.is_empty() && room.history.is_empty() {
            self.free(id);
        }
        Some(id)
    }

    /// The room called `name`, made if needed, without joining it (long polling, `POST`).
    pub fn open(&mut self, name: &str) -> Result<RoomId, RoomError> {
        if !valid_name(name) {
            return Err(RoomError::InvalidName);
        }
        match self.by_name.get(name) {
            Some(&id) => Ok(id),
            None => self.create(name),
        }
    }

    /// The room called `name`, if it exists.
    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    /// Who is in the room: WebSocket members and long-polling guests.
    pub fn count(&self, id: RoomId) -> usize {
        self.rooms
            .get(id)
            .map_or(0, |r| r.members.len() + r.guests.len())
    }

    /// Counts long-polling client `guest` as present in the room until `until`; returns true
    /// if it just arrived.
    pub fn touch_guest(&mut self, id: RoomId, guest: &str, until: Instant) -> bool {
        let Some(room) = self.rooms.get_mut(id) else {
            return false;
        };
        if let Some(t) = room.guests.get_mut(guest) {
            *t = until;
            return false;
        }
        if room.guests.len() >= MAX_GUESTS || self.guests >= MAX_GUESTS_TOTAL {
            return false;
        }
        room.guests.insert(guest.into(), until);
        self.guests += 1;
        true
    }

    /// Makes guest `guest` count as present until `until` at the latest.
    pub fn shorten_guest(&mut self, id: RoomId, guest: &str, until: Instant) {
        if let Some(t) = self.rooms.get_mut(id).and_then(|r| r.guests.get_mut(guest)) {
            *t = (*t).min(until);
        }
    }

    /// Whether any long-polling client is counted anywhere.
    pub fn has_guests(&self) -> bool {
        self.guests > 0
    }

    /// Forgets guests whose time is up, pushing each room they left with how many; O(rooms +
    /// guests), so it runs on a timer, not per event.
    pub fn expire_guests(&mut self, now: Instant, gone: &mut Vec<(RoomId, usize)>) {
        for (id, room) in &mut self.rooms {
            let before = room.guests.len();
            room.guests.retain(|_, until| *until > now);
            let left = before - room.guests.len();
            if left > 0 {
                self.guests -= left;
                gone.push((id, left));
            }
        }
    }

    /// The connections in a room.
    pub fn members(&self, id: RoomId) -> &[usize] {
        self.rooms.get(id).map_or(&[], |r| &r.members)
    }

    /// The connections in the room called `name` (none if there is no such room).
    pub fn members_by_name(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map_or(&[], |&id| self.members(id))
    }

    /// The room's name, shared.
    pub fn shared_name(&self, id: RoomId) -> Rc<str> {
        self.rooms
            .get(id)
            .map_or_else(|| Rc::from(""), |r| r.name.clone())
    }

    /// The room connection `conn` is in.
    pub fn room_of(&self, conn: usize) -> Option<RoomId> {
        self.member_of.get(&conn).map(|&(id, _)| id)
    }

    /// The room's name.
    pub fn name(&self, id: RoomId) -> &str {
        self.rooms.get(id).map_or("", |r| &r.name)
    }

    /// The room's current epoch: sequence numbers compare only within one epoch.
    pub fn epoch(&self, id: RoomId) -> &str {
        self.rooms.get(id).map_or("", |r| &r.epoch)
    }

    /// The room's current epoch, shared.
    pub fn shared_epoch(&self, id: RoomId) -> Rc<str> {
        self.rooms
            .get(id)
            .map_or_else(|| Rc::from(""), |r| r.epoch.clone())
    }

    /// The sequence number the room's next event will get.
    pub fn next_seq(&self, id: RoomId) -> u64 {
        self.rooms.get(id).map_or(1, |r| r.next_seq)
    }

    /// Records `json` as the room's next event; returns its sequence number. Old entries are dropped to stay within the history limits.
    pub fn append(&mut self, id: RoomId, json: &str) -> u64 {
        let Some(room) = self.rooms.get_mut(id) else {
            return 0;
        };
        let seq = room.next_seq;
        room.next_seq += 1;
        self.clock += 1;
        room.active = self.clock;
        if self.limits.history == 0 || json.len() > self.limits.history_bytes {
            // Not kept, but still counted, so a resuming client learns of the gap.
            room.history.clear();
            room.history_bytes = 0;
            room.lost_through = seq;
            return seq;
        }
        room.history.push_back(Entry {
            seq,
            json: json.into(),
        });
        room.history_bytes += json.len();
        while room.history.len() > self.limits.history
            || room.history_bytes > self.limits.history_bytes
        {
            match room.history.pop_front() {
                Some(old) => {
                    room.history_bytes -= old.json.len();
                    room.lost_through = room.lost_through.max(old.seq);
                }
                None => break,
            }
        }
        seq
    }

    /// Drops the room's newest kept event if it is `seq` (a presence notice that the next one
    /// replaces); the sequence goes on from where it was.
    pub fn forget_last(&mut self, id: RoomId, seq: u64) {
        if let Some(room) = self.rooms.get_mut(id)
            && room.history.back().is_some_and(|e| e.seq == seq)
            && let Some(old) = room.history.pop_back()
        {
            room.history_bytes -= old.json.len();
        }
    }

    /// What a client that last saw `since` missed in a room (everything kept when `None`).
    pub fn replay(&self, id: RoomId, since: Option<u64>) -> Replay<'_> {
        let Some(room) = self.rooms.get(id) else {
            return Replay {
                gap: None,
                events: Vec::new(),
            };
        };
        let after = since.unwrap_or(0).min(room.next_seq.saturating_sub(1));
        // Only events that fell out of the history are missed: a notice replaced by the next
        // one is not (it said nothing the next one does not say).
        let gap =
            (since.is_some() && after < room.lost_through).then(|| (after + 1, room.lost_through));
        let events = room
            .history
            .iter()
            .filter(|e| since.is_none() || e.seq > after)
            .map(|e| (e.seq, &*e.json))
            .collect();
        Replay { gap, events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(max_rooms: usize, history: usize, history_bytes: usize) -> Rooms {
        Rooms::new(
            RoomLimits {
                max_rooms,
                history,
                history_bytes,
            },
            0xabc,
        )
    }

    #[test]
    fn names() {
        assert!(valid_name("main") && valid_name("a-b_c.9") && valid_name(&"x".repeat(64)));
        assert!(valid_name("...") && valid_name(".a") && valid_name("a.."));
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "é",
            "<x>",
            "a?b",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn members_follow_joins_and_leaves() {
        let mut r = rooms(8, 10, 1000);
        let a = r.join("a", 1).unwrap();
        assert_eq!(r.join("a", 2), Ok(a));
        let b = r.join("b", 3).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.join("a", 4), Ok(a));
        assert_eq!(r.leave(1), Some(a));
        let mut m = r.members(a).to_vec();
        m.sort();
        assert_eq!(m, [2, 4]);
        assert_eq!(r.leave(4), Some(a));
        assert_eq!(r.members(a), [2]);
        assert_eq!(r.room_of(2), Some(a));
        assert_eq!(r.leave(1), None);
        // Empty and without history: freed.
        assert_eq!(r.leave(3), Some(b));
        assert_eq!(r.rooms.len(), 1);
        assert!(!r.by_name.contains_key("b"));
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let mut r = rooms(8, 3, 20);
        let a = r.join("a", 1).unwrap();
        for i in 1..=5u64 {
            assert_eq!(r.append(a, &format!("e{i}")), i);
        }
        let seqs: Vec<u64> = r.replay(a, None).events.iter().map(|e| e.0).collect();
        assert_eq!(seqs, [3, 4, 5]);
        // 2 + 2 + 17 bytes is over 20: e3 and e4 go.
        r.append(a, "01234567890123456");
        let kept = r.replay(a, None).events;
        assert_eq!(kept, [(5, "e5"), (6, "01234567890123456")]);
        // An entry larger than the whole budget empties the history; resuming shows the gap.
        r.append(a, &"x".repeat(21));
        assert!(r.replay(a, None).events.is_empty());
        assert_eq!(r.replay(a, Some(7)).gap, None);
        assert_eq!(r.replay(a, Some(6)).gap, Some((7, 7)));
        assert_eq!(r.replay(a, Some(5)).gap, Some((6, 7)));
    }

    #[test]
    fn a_replaced_last_event_leaves_the_rest_and_the_sequence() {
        let mut r = rooms(8, 3, 1000);
        let a = r.join("a", 1).unwrap();
        r.append(a, "msg");
        r.append(a, "join");
        r.forget_last(a, 1); // not the last: kept
        r.forget_last(a, 2);
        assert_eq!(r.append(a, "joins"), 3);
        assert_eq!(r.replay(a, None).events, [(1, "msg"), (3, "joins")]);
        assert_eq!(r.rooms[a].history_bytes, "msg".len() + "joins".len());
        // A replaced notice, the only one kept, is not a missed event for a cursor before it.
        let b = r.join("b", 2).unwrap();
        r.append(b, "join 1");
        r.forget_last(b, 1);
        r.append(b, "join 2");
        assert_eq!(r.replay(b, Some(0)).gap, None);
        assert_eq!(r.replay(b, Some(0)).events, [(2, "join 2")]);
    }

    #[test]
    fn replay_after_a_cursor_and_gaps() {
        let mut r = rooms(8, 3, 1000);
        let a = r.join("a", 1).unwrap();
        for i in 1..=5 {
            r.append(a, &format!("e{i}"));
        }
        // Kept: 3, 4, 5.
        let rp = r.replay(a, Some(3));
        assert_eq!((rp.gap, rp.events), (None, vec![(4, "e4"), (5, "e5")]));
        let rp = r.replay(a, Some(2));
        assert_eq!(rp.gap, None);
        assert_eq!(rp.events.len(), 3);
        let rp = r.replay(a, Some(0));
        assert_eq!((rp.gap, rp.events.len()), (Some((1, 2)), 3));
        let rp = r.replay(a, Some(5));
        assert_eq!((rp.gap, rp.events.len()), (None, 0));
        // A cursor from the future (another server's, or made up) is treated as "now".
        let rp = r.replay(a, Some(99));
        assert_eq!((rp.gap, rp.events.len()), (None, 0));
    }

    #[test]
    fn rooms_with_history_stay_until_evicted_at_the_limit() {
        let mut r = rooms(2, 10, 1000);
        let a = r.join("a", 1).unwrap();
        let first_epoch = r.epoch(a).to_owned();
        r.append(a, "kept");
        r.leave(1);
        assert_eq!(r.replay(r.by_name["a"], Some(0)).events, [(1, "kept")]);
        r.join("b", 2).unwrap();
        // Both slots taken; "a" has no members, so it makes way for "c".
        r.join("c", 3).unwrap();
        assert!(!r.by_name.contains_key("a"));
        // Made again, "a" is a new incarnation with a new epoch.
        r.leave(2);
        let a2 = r.join("a", 2).unwrap();
        assert_ne!(r.epoch(a2), first_epoch);
        assert_eq!(r.next_seq(a2), 1);
        r.append(a2, "x");
        // Now "a" and "c" both have members: no room for "d".
        assert_eq!(r.join("d", 4), Err(RoomError::TooManyRooms));
        assert_eq!(r.join("no spaces", 4), Err(RoomError::InvalidName));
    }
}
