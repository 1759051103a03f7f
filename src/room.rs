//! Chat rooms: which rooms this process holds, and each room's three parts, kept apart because
//! they live in different places once rooms span several processes:
//!
//! - [`Membership`]: which local connection is in which room. This process only, always.
//! - [`log::Log`]: the room's epoch, sequence numbers and bounded history. [`log::MemoryLog`]
//!   keeps them in this process; [`redis::RedisLog`] in Redis streams, for every node.
//! - [`Presence`]: who counts as online: this node's WebSocket members and long-polling guests.
//!   With Redis, each notice writes this node's count of the room in a hash (one field per
//!   node, dropped when the node stops beating) and carries the sum; the guests' deadlines
//!   stay local, since a guest's polls reach one node at a time.
//!
//! [`Rooms`] is the directory over them: room names, [`RoomId`]s (valid while the room is
//! held), and the `--max-rooms` bound. Bounds: at most `max_rooms` rooms, each keeping at most
//! `history` entries and `history_bytes` bytes of them, so room state is bounded by
//! `max_rooms * (history_bytes + overhead)`. A room with no members, no guests and nothing in
//! its log that only this process has is freed at once; at the room limit, the room without
//! members that was active least recently is evicted to make space (guests do not pin a room).
//! With a shared log, freeing a room here loses nothing: its history stays in the store.

pub mod log;
pub mod redis;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use slab::Slab;

use self::log::Log;
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

/// A handle to a room, valid while this process holds the room (see [`Rooms`]).
pub type RoomId = usize;

/// Why a client could not join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// The name is empty, too long, `.` or `..`, or has characters outside `[A-Za-z0-9_.-]`.
    InvalidName,
    /// Every room slot is taken by a room with members.
    TooManyRooms,
}

/// Which local connection is in which room.
#[derive(Debug, Default)]
pub struct Membership {
    /// Connection ids per room; order is irrelevant (swap_remove).
    rooms: HashMap<RoomId, Vec<usize>>,
    /// Connection id -> (room, index in its room's list, the serial it joined with). The
    /// index and serial share what one `usize` took: no cost per connection.
    member_of: HashMap<usize, (RoomId, u32, u32)>,
}

impl Membership {
    /// Puts connection `conn` in `room` (it must be in none), with `serial` to tell it from a
    /// later connection with the same id.
    fn join(&mut self, room: RoomId, conn: usize, serial: u32) {
        let members = self.rooms.entry(room).or_default();
        let index = u32::try_from(members.len()).unwrap_or(u32::MAX);
        self.member_of.insert(conn, (room, index, serial));
        members.push(conn);
    }

    /// Takes connection `conn` out of its room; returns the room, if it was in one.
    fn leave(&mut self, conn: usize) -> Option<RoomId> {
        let (room, index, _) = self.member_of.remove(&conn)?;
        let index = index as usize;
        let members = self.rooms.get_mut(&room)?;
        if index < members.len() {
            members.swap_remove(index);
            // The member moved into `index` needs its position updated.
            if let Some(&moved) = members.get(index)
                && let Some(slot) = self.member_of.get_mut(&moved)
            {
                slot.1 = u32::try_from(index).unwrap_or(u32::MAX);
            }
        }
        if members.is_empty() {
            self.rooms.remove(&room);
        }
        Some(room)
    }

    /// The connections in a room.
    pub fn members(&self, room: RoomId) -> &[usize] {
        self.rooms.get(&room).map_or(&[], |m| m)
    }

    /// The room connection `conn` is in.
    pub fn room_of(&self, conn: usize) -> Option<RoomId> {
        self.member_of.get(&conn).map(|&(room, _, _)| room)
    }

    /// The serial connection `conn` joined its room with.
    pub fn serial(&self, conn: usize) -> Option<u32> {
        self.member_of.get(&conn).map(|&(_, _, serial)| serial)
    }
}

/// Who counts as online in each room, on this node: its WebSocket members (counted by
/// [`Membership`]) and its long-polling guests, each present until a deadline that every poll
/// moves on.
#[derive(Debug, Default)]
pub struct Presence {
    /// Long-polling clients per room, by the id they chose, and when they stop counting.
    guests: HashMap<RoomId, HashMap<Box<str>, Instant>>,
    /// Guests in all rooms.
    total: usize,
}

impl Presence {
    /// Who is in the room on this node: its `members` WebSocket members and its guests. A
    /// Redis presence would return the sum over the nodes' counts of the room.
    pub fn count(&self, room: RoomId, members: usize) -> usize {
        members + self.guests.get(&room).map_or(0, HashMap::len)
    }

    /// Whether any guest counts in the room.
    pub fn has_guests_in(&self, room: RoomId) -> bool {
        self.guests.contains_key(&room)
    }

    /// Counts long-polling client `guest` as present in the room until `until`; returns true
    /// if it just arrived.
    pub fn touch_guest(&mut self, room: RoomId, guest: &str, until: Instant) -> bool {
        let guests = self.guests.entry(room).or_default();
        if let Some(t) = guests.get_mut(guest) {
            *t = until;
            return false;
        }
        if guests.len() >= MAX_GUESTS || self.total >= MAX_GUESTS_TOTAL {
            if guests.is_empty() {
                self.guests.remove(&room);
            }
            return false;
        }
        guests.insert(guest.into(), until);
        self.total += 1;
        true
    }

    /// Makes guest `guest` count as present until `until` at the latest.
    pub fn shorten_guest(&mut self, room: RoomId, guest: &str, until: Instant) {
        if let Some(t) = self.guests.get_mut(&room).and_then(|g| g.get_mut(guest)) {
            *t = (*t).min(until);
        }
    }

    /// Whether any long-polling client is counted anywhere.
    pub fn has_guests(&self) -> bool {
        self.total > 0
    }

    /// Forgets guests whose time is up, pushing each room they left with how many; O(rooms +
    /// guests), so it runs on a timer, not per event.
    pub fn expire_guests(&mut self, now: Instant, gone: &mut Vec<(RoomId, usize)>) {
        self.guests.retain(|&room, guests| {
            let before = guests.len();
            guests.retain(|_, until| *until > now);
            let left = before - guests.len();
            if left > 0 {
                self.total -= left;
                gone.push((room, left));
            }
            !guests.is_empty()
        });
    }

    /// Forgets a room's guests (the room is freed).
    fn close(&mut self, room: RoomId) {
        if let Some(guests) = self.guests.remove(&room) {
            self.total -= guests.len();
        }
    }
}

/// A room this process holds.
#[derive(Debug)]
struct Room {
    /// Shared with `Rooms::by_name` and the fan-out actions that name the room.
    name: Rc<str>,
    /// `Rooms::clock` when the room last changed, for eviction.
    active: u64,
    /// Socket.IO sockets in the room (their membership is the socket.io server's): they
    /// count as present and pin the room like WebSocket members.
    pins: u32,
}

/// Every room of this server: the directory, and the three parts of each room.
#[derive(Debug)]
pub struct Rooms {
    max_rooms: usize,
    rooms: Slab<Room>,
    by_name: HashMap<Rc<str>, RoomId>,
    /// Counts changes, to find the least recently active room.
    clock: u64,
    /// Which connection is in which room.
    pub membership: Membership,
    /// Each room's epoch, sequence and history.
    pub log: Box<dyn Log>,
    /// Who counts as online.
    pub presence: Presence,
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
    /// No rooms yet; at most `max_rooms` at once, their events in `log`.
    pub fn new(max_rooms: usize, log: Box<dyn Log>) -> Self {
        Self {
            max_rooms,
            rooms: Slab::new(),
            by_name: HashMap::new(),
            clock: 0,
            membership: Membership::default(),
            log,
            presence: Presence::default(),
        }
    }

    /// Keeps rooms' events in `log` from now on (before any room is held).
    pub fn set_log(&mut self, log: Box<dyn Log>) {
        debug_assert!(self.rooms.is_empty(), "rooms held in the old log");
        self.log = log;
    }

    /// Puts connection `conn` in room `name`, creating the room if needed.
    pub fn join(&mut self, name: &str, conn: usize, serial: u32) -> Result<RoomId, RoomError> {
        if !valid_name(name) {
            return Err(RoomError::InvalidName);
        }
        self.leave(conn);
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => self.create(name, true)?,
        };
        self.touch(id);
        self.membership.join(id, conn, serial);
        Ok(id)
    }

    fn create(&mut self, name: &str, member: bool) -> Result<RoomId, RoomError> {
        if self.rooms.len() >= self.max_rooms {
            // Evict a room no WebSocket client is in: one without history if there is one,
            // then one without long-polling guests, else the one that changed least recently.
            // Guests alone do not pin a room: they cost one cheap request each. O(rooms), but
            // only when the limit is reached.
            let victim = self
                .rooms
                .iter()
                .filter(|&(id, r)| r.pins == 0 && self.membership.members(id).is_empty())
                .min_by_key(|&(id, r)| {
                    let guests = self.presence.has_guests_in(id);
                    (self.log.keeps(id), guests, r.active)
                })
                .map(|(id, _)| id)
                .ok_or(RoomError::TooManyRooms)?;
            self.free(victim);
        }
        let name: Rc<str> = name.into();
        let id = self.rooms.insert(Room {
            name: name.clone(),
            active: self.clock,
            pins: 0,
        });
        self.log.open(id, &name, member);
        self.by_name.insert(name, id);
        Ok(id)
    }

    fn free(&mut self, id: RoomId) {
        if let Some(room) = self.rooms.try_remove(id) {
            self.by_name.remove(&room.name);
            self.presence.close(id);
            self.log.close(id);
        }
    }

    /// Marks the room as changed now, for eviction (a join, a leave, an event).
    pub fn touch(&mut self, id: RoomId) {
        self.clock += 1;
        if let Some(room) = self.rooms.get_mut(id) {
            room.active = self.clock;
        }
    }

    /// Takes connection `conn` out of its room; returns the room, if it was in one. A room
    /// left with nobody and nothing only this process keeps is freed.
    pub fn leave(&mut self, conn: usize) -> Option<RoomId> {
        let id = self.membership.leave(conn)?;
        self.touch(id);
        self.free_if_unused(id);
        Some(id)
    }

    /// Frees a room with nobody in it and nothing in its log that only this process has.
    fn free_if_unused(&mut self, id: RoomId) {
        if self.membership.members(id).is_empty()
            && self.rooms.get(id).is_some_and(|r| r.pins == 0)
            && !self.presence.has_guests_in(id)
            && !self.log.keeps(id)
        {
            self.free(id);
        }
    }

    /// Counts a socket.io socket in room `name`, made if needed: it pins the room and counts
    /// as present, like a WebSocket member (whose membership is kept here instead).
    pub fn pin(&mut self, name: &str) -> Result<RoomId, RoomError> {
        if !valid_name(name) {
            return Err(RoomError::InvalidName);
        }
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => self.create(name, true)?,
        };
        self.touch(id);
        if let Some(room) = self.rooms.get_mut(id) {
            room.pins += 1;
        }
        Ok(id)
    }

    /// A socket.io socket left the room; the room is freed as [`Rooms::leave`] frees it.
    pub fn unpin(&mut self, id: RoomId) {
        let Some(room) = self.rooms.get_mut(id) else {
            return;
        };
        room.pins = room.pins.saturating_sub(1);
        self.touch(id);
        self.free_if_unused(id);
    }

    /// The room called `name`, made if needed, without joining it (long polling, `POST`).
    pub fn open(&mut self, name: &str) -> Result<RoomId, RoomError> {
        if !valid_name(name) {
            return Err(RoomError::InvalidName);
        }
        match self.by_name.get(name) {
            Some(&id) => Ok(id),
            None => self.create(name, false),
        }
    }

    /// The room called `name`, if it is held here.
    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    /// Who is in the room: WebSocket members, socket.io sockets and long-polling guests.
    pub fn count(&self, id: RoomId) -> usize {
        let pins = self.rooms.get(id).map_or(0, |r| r.pins as usize);
        let members = self.membership.members(id).len() + pins;
        self.presence.count(id, members)
    }

    /// The connections in the room called `name` (none if there is no such room).
    pub fn members_by_name(&self, name: &str) -> &[usize] {
        self.by_name
            .get(name)
            .map_or(&[], |&id| self.membership.members(id))
    }

    /// The room's name, shared.
    pub fn shared_name(&self, id: RoomId) -> Rc<str> {
        self.rooms
            .get(id)
            .map_or_else(|| Rc::from(""), |r| r.name.clone())
    }

    /// The room's name.
    pub fn name(&self, id: RoomId) -> &str {
        self.rooms.get(id).map_or("", |r| &r.name)
    }
}

#[cfg(test)]
mod tests {
    use super::log::{Draft, HistoryLimits, Kind, MemoryLog};
    use super::*;

    fn rooms(max_rooms: usize, history: usize, history_bytes: usize) -> Rooms {
        let limits = HistoryLimits {
            events: history,
            bytes: history_bytes,
        };
        Rooms::new(max_rooms, Box::new(MemoryLog::new(limits, 0xabc)))
    }

    fn append(r: &mut Rooms, id: RoomId, body: &str) {
        let kind = Kind::Message {
            reply: None,
            from: None,
        };
        let body = body.into();
        r.touch(id);
        r.log.append(id, Draft { body, kind });
        r.log.take_events(&mut Vec::new());
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
        let a = r.join("a", 1, 0).unwrap();
        assert_eq!(r.join("a", 2, 0), Ok(a));
        let b = r.join("b", 3, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.join("a", 4, 0), Ok(a));
        assert_eq!(r.leave(1), Some(a));
        let mut m = r.membership.members(a).to_vec();
        m.sort();
        assert_eq!(m, [2, 4]);
        assert_eq!(r.leave(4), Some(a));
        assert_eq!(r.membership.members(a), [2]);
        assert_eq!(r.membership.room_of(2), Some(a));
        assert_eq!(r.leave(1), None);
        // Empty and without history: freed.
        assert_eq!(r.leave(3), Some(b));
        assert_eq!(r.rooms.len(), 1);
        assert!(!r.by_name.contains_key("b"));
    }

    #[test]
    fn guests_count_and_expire() {
        let mut r = rooms(8, 10, 1000);
        let a = r.join("a", 1, 0).unwrap();
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_secs(5);
        assert!(r.presence.touch_guest(a, "g1", later));
        assert!(!r.presence.touch_guest(a, "g1", later));
        assert!(r.presence.touch_guest(a, "g2", later));
        assert_eq!(r.count(a), 3);
        r.presence.shorten_guest(a, "g2", t0);
        let mut gone = Vec::new();
        r.presence.expire_guests(t0, &mut gone);
        assert_eq!((gone, r.count(a)), (vec![(a, 1)], 2));
        // A room of guests only, and no history, is freed with its guests at the limit.
        r.leave(1);
        assert!(r.presence.has_guests());
        let mut full = rooms(1, 10, 1000);
        let b = full.open("b").unwrap();
        full.presence.touch_guest(b, "g", later);
        full.join("c", 1, 0).unwrap();
        assert!(!full.presence.has_guests() && full.find("b").is_none());
    }

    #[test]
    fn rooms_with_history_stay_until_evicted_at_the_limit() {
        let mut r = rooms(2, 10, 1000);
        let a = r.join("a", 1, 0).unwrap();
        let first_epoch = r.log.epoch(a);
        append(&mut r, a, "kept");
        r.leave(1);
        let a = r.by_name["a"];
        assert_eq!(r.log.read(a, Some(0)).events.len(), 1);
        r.join("b", 2, 0).unwrap();
        // Both slots taken; "a" has no members, so it makes way for "c".
        r.join("c", 3, 0).unwrap();
        assert!(!r.by_name.contains_key("a"));
        // Made again, "a" is a new incarnation with a new epoch.
        r.leave(2);
        let a2 = r.join("a", 2, 0).unwrap();
        assert_ne!(r.log.epoch(a2), first_epoch);
        assert_eq!(r.log.last_seq(a2), 0);
        append(&mut r, a2, "x");
        // Now "a" and "c" both have members: no room for "d".
        assert_eq!(r.join("d", 4, 0), Err(RoomError::TooManyRooms));
        assert_eq!(r.join("no spaces", 4, 0), Err(RoomError::InvalidName));
    }

    #[test]
    fn socket_io_sockets_pin_their_room() {
        let mut r = rooms(1, 10, 1000);
        let a = r.pin("a").unwrap();
        assert_eq!(r.pin("a"), Ok(a));
        r.join("a", 1, 0).unwrap();
        assert_eq!(r.count(a), 3);
        r.leave(1);
        r.unpin(a);
        assert_eq!((r.find("a"), r.count(a)), (Some(a), 1));
        // Pinned: neither evicted at the limit nor freed until the last socket leaves.
        assert_eq!(r.join("b", 2, 0), Err(RoomError::TooManyRooms));
        assert_eq!(r.pin("b"), Err(RoomError::TooManyRooms));
        assert_eq!(r.pin(".."), Err(RoomError::InvalidName));
        r.unpin(a);
        assert_eq!(r.find("a"), None);
        r.unpin(a);
        assert!(r.join("b", 2, 0).is_ok());
    }
}
