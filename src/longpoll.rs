//! Long polls held open until their room has a new event or their wait runs out.
//!
//! Every operation is O(1) or O(waiters it answers): waiters are indexed by connection and by
//! room, and since every poll waits the same time, deadlines arrive in order and sit in a
//! queue. Entries made stale by an answer or a dropped connection are skipped by serial number.

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

/// One held long poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    /// The room's name.
    pub room: Rc<str>,
    /// The room's epoch when the poll was held: an answer from another epoch says so.
    pub epoch: Rc<str>,
    /// The client's id, if it asked to count as present.
    pub guest: Option<Rc<str>>,
    /// The last sequence number the client has.
    pub since: u64,
    /// Tells this poll from an earlier one on a reused connection id.
    serial: u64,
}

/// Every held long poll of the server.
#[derive(Debug, Default)]
pub struct Waiters {
    by_conn: HashMap<usize, Waiter>,
    by_room: HashMap<Rc<str>, HashSet<usize>>,
    /// `(deadline, conn, serial)`, earliest first (every poll waits as long).
    deadlines: VecDeque<(Instant, usize, u64)>,
    serial: u64,
}

impl Waiters {
    /// Holds connection `conn`'s poll of `room` (last seen `since` in `epoch`) until `deadline`,
    /// which is never earlier than that of the poll held before it.
    pub fn hold(
        &mut self,
        conn: usize,
        room: Rc<str>,
        epoch: Rc<str>,
        guest: Option<Rc<str>>,
        since: u64,
        deadline: Instant,
    ) {
        self.drop_conn(conn);
        self.serial += 1;
        self.by_room.entry(room.clone()).or_default().insert(conn);
        self.deadlines.push_back((deadline, conn, self.serial));
        let serial = self.serial;
        self.by_conn.insert(
            conn,
            Waiter {
                room,
                epoch,
                guest,
                since,
                serial,
            },
        );
    }

    /// Forgets connection `conn`'s poll (the connection is gone, or was answered).
    pub fn drop_conn(&mut self, conn: usize) -> Option<Waiter> {
        let waiter = self.by_conn.remove(&conn)?;
        if let Some(set) = self.by_room.get_mut(&waiter.room) {
            set.remove(&conn);
            if set.is_empty() {
                self.by_room.remove(&waiter.room);
            }
        }
        Some(waiter)
    }

    /// Takes every poll waiting on `room`.
    pub fn take_room(&mut self, room: &str, out: &mut Vec<(usize, Waiter)>) {
        for conn in self.by_room.remove(room).unwrap_or_default() {
            if let Some(w) = self.by_conn.remove(&conn) {
                out.push((conn, w));
            }
        }
    }

    /// Takes every poll whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant, out: &mut Vec<(usize, Waiter)>) {
        while let Some(&(deadline, conn, serial)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.by_conn.get(&conn).is_some_and(|w| w.serial == serial)
                && let Some(w) = self.drop_conn(conn)
            {
                out.push((conn, w));
            }
        }
        if self.by_conn.is_empty() {
            self.deadlines.clear();
        }
    }

    /// Takes every held poll (the server is shutting down).
    pub fn take_all(&mut self, out: &mut Vec<(usize, Waiter)>) {
        out.extend(self.by_conn.drain());
        self.by_room.clear();
        self.deadlines.clear();
    }

    /// The earliest deadline (possibly of a poll already answered: a harmless early wake-up).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// Held polls.
    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    /// Whether no poll is held.
    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn answered_by_room_by_deadline_or_dropped_once() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = Waiters::default();
        let (a, b): (Rc<str>, Rc<str>) = ("a".into(), "b".into());
        w.hold(1, a.clone(), "e".into(), None, 5, t + s(1));
        w.hold(2, a.clone(), "e".into(), None, 5, t + s(2));
        w.hold(3, b.clone(), "e".into(), None, 9, t + s(3));
        let mut out = Vec::new();
        w.take_room("a", &mut out);
        let mut conns: Vec<usize> = out.iter().map(|o| o.0).collect();
        conns.sort();
        assert_eq!(conns, [1, 2]);
        // Their deadlines pass without answering them twice.
        out.clear();
        w.take_expired(t + s(2), &mut out);
        assert!(out.is_empty());
        // Connection 3 is dropped, its id reused for a new poll: only the new one expires.
        w.drop_conn(3);
        w.hold(3, a.clone(), "e".into(), None, 7, t + s(4));
        w.take_expired(t + s(3), &mut out);
        assert!(out.is_empty(), "the dropped poll's deadline is stale");
        w.take_expired(t + s(4), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1.since), (3, 7));
        assert!(w.is_empty() && w.by_room.is_empty() && w.deadlines.is_empty());
        assert_eq!(w.next_deadline(), None);
    }
}
