//! Who may hold a socket: `--max-connections`, `--max-connections-per-ip`, and the caps on
//! refusals in flight. Pure bookkeeping: addresses in, verdicts out; the event loop owns the
//! sockets and acts on the verdicts.
//!
//! Every socket is counted under its client address from accept to close, as admitted or as
//! being refused. A refusal (a 503 written at once, then the close within a second) costs a
//! descriptor for that second, so refusals are capped too: [`MAX_REFUSING`] in all and
//! [`MAX_REFUSING_PER_ADDRESS`] per address. Past either cap a socket over a limit is closed
//! unanswered at once, so one address opening sockets as fast as it can holds at most
//! `--max-connections-per-ip` admitted sockets plus a few being refused, never the
//! descriptors everyone else needs.

use std::collections::HashMap;
use std::net::IpAddr;

use slab::Slab;

use crate::metrics::Limit;

/// Refusals in flight at most; past it, sockets over a limit are closed unanswered, so a
/// flood from many addresses cannot hold more than this many sockets beyond the limits.
pub const MAX_REFUSING: usize = 1024;

/// Refusals in flight from one address at most. A browser that opens one socket too many
/// still reads its 503; an address with more refusals pending is flooding, and its further
/// sockets are closed unanswered at once instead of each holding a descriptor for a second.
pub const MAX_REFUSING_PER_ADDRESS: u32 = 8;

/// The connection limits, from the flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `--max-connections`: admitted sockets at once.
    pub max_connections: usize,
    /// `--max-connections-per-ip`: admitted sockets from one address at once.
    pub max_per_ip: u32,
}

/// What to do with a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Admit,
    /// Answer 503, then close: it is over this limit.
    Refuse(Limit),
    /// Close it unanswered: it is over this limit and refusals are at their cap.
    Drop(Limit),
}

/// A socket's entry in the address table, held from accept to close: the address's key in
/// `Admission::addresses`, and in the top bit whether the socket is counted as being refused
/// rather than admitted. Four bytes, as it sits in every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

/// The bit of a [`Ticket`] that marks a refusal.
const REFUSED: u32 = 1 << 31;

impl Ticket {
    fn new(key: u32, refused: bool) -> Self {
        Self(key & !REFUSED | if refused { REFUSED } else { 0 })
    }

    fn key(self) -> usize {
        (self.0 & !REFUSED) as usize
    }

    /// Whether the socket is being refused (answered 503), not admitted.
    pub fn is_refused(self) -> bool {
        self.0 & REFUSED != 0
    }
}

/// Sockets from one address.
#[derive(Debug)]
struct Address {
    ip: IpAddr,
    /// Admitted sockets.
    open: u32,
    /// Sockets being refused.
    refusing: u32,
}

/// The connection limits and the counts they are checked against.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    /// Sockets per address; an address leaves both tables when it has none, so they never
    /// hold more entries than there are sockets.
    addresses: Slab<Address>,
    keys: HashMap<IpAddr, u32>,
    /// Admitted sockets, from every address.
    open: usize,
    /// Sockets being refused, from every address (at most [`MAX_REFUSING`]).
    refusing: usize,
}

impl Admission {
    /// Empty tables for these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            addresses: Slab::new(),
            keys: HashMap::new(),
            open: 0,
            refusing: 0,
        }
    }

    /// A socket accepted from `ip`. `per_ip`: whether `--max-connections-per-ip` applies now
    /// (not for a trusted proxy, whose clients are counted once its request names them).
    /// The ticket is `None` only for [`Verdict::Drop`]: nothing was counted.
    pub fn accept(&mut self, ip: IpAddr, per_ip: bool) -> (Verdict, Option<Ticket>) {
        let ip = limit_key(ip);
        let (open, refusing) = self.counts(ip);
        let over = if self.open >= self.limits.max_connections {
            Some(Limit::MaxConnections)
        } else if per_ip && open >= self.limits.max_per_ip {
            Some(Limit::MaxConnectionsPerIp)
        } else {
            None
        };
        self.decide(ip, over, refusing)
    }

    /// The socket closed: its address forgets it.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.is_refused() {
            self.refusing = self.refusing.saturating_sub(1);
        } else {
            self.open = self.open.saturating_sub(1);
        }
        let Some(a) = self.addresses.get_mut(ticket.key()) else {
            debug_assert!(false, "released an unknown ticket");
            return;
        };
        if ticket.is_refused() {
            a.refusing = a.refusing.saturating_sub(1);
        } else {
            a.open = a.open.saturating_sub(1);
        }
        if a.open == 0 && a.refusing == 0 {
            let ip = a.ip;
            self.addresses.remove(ticket.key());
            self.keys.remove(&ip);
        }
        // A flood from many addresses grew the tables; give the memory back once it is over.
        let cap = self.keys.capacity();
        if cap > 1024 && self.keys.len() < cap / 8 {
            self.keys.shrink_to(self.keys.len() * 2);
        }
        if self.addresses.is_empty() {
            self.addresses = Slab::new();
        }
    }

    /// The address a ticket is counted under (an IPv6 client's /64, see [`limit_key`]).
    pub fn ip(&self, ticket: Ticket) -> Option<IpAddr> {
        self.addresses.get(ticket.key()).map(|a| a.ip)
    }

    /// Sockets being refused, from every address.
    pub fn refusing(&self) -> usize {
        self.refusing
    }

    /// Admitted and refusing sockets from `ip` (a limit key).
    fn counts(&self, ip: IpAddr) -> (u32, u32) {
        self.keys
            .get(&ip)
            .and_then(|&k| self.addresses.get(k as usize))
            .map_or((0, 0), |a| (a.open, a.refusing))
    }

    /// The verdict for a socket from `ip` that is over `over`, if anything; counts it.
    fn decide(
        &mut self,
        ip: IpAddr,
        over: Option<Limit>,
        refusing: u32,
    ) -> (Verdict, Option<Ticket>) {
        let verdict = match over {
            None => Verdict::Admit,
            Some(limit)
                if self.refusing >= MAX_REFUSING || refusing >= MAX_REFUSING_PER_ADDRESS =>
            {
                return (Verdict::Drop(limit), None);
            }
            Some(limit) => Verdict::Refuse(limit),
        };
        let refused = verdict != Verdict::Admit;
        (verdict, Some(self.count(ip, refused)))
    }

    /// Counts one more socket from `ip`.
    fn count(&mut self, ip: IpAddr, refused: bool) -> Ticket {
        if refused {
            self.refusing += 1;
        } else {
            self.open += 1;
        }
        let key = match self.keys.get(&ip) {
            Some(&key) => key,
            None => {
                let key = self.addresses.insert(Address {
                    ip,
                    open: 0,
                    refusing: 0,
                });
                // Keys stay below the number of sockets, far below 2^31 (--max-connections is
                // capped at 2^24 and the open-file limit bounds the rest).
                let key = u32::try_from(key).unwrap_or(u32::MAX);
                self.keys.insert(ip, key);
                key
            }
        };
        if let Some(a) = self.addresses.get_mut(key as usize) {
            if refused {
                a.refusing = a.refusing.saturating_add(1);
            } else {
                a.open = a.open.saturating_add(1);
            }
        }
        Ticket::new(key, refused)
    }
}

/// The address a client is counted under for `--max-connections-per-ip`: an IPv4 address
/// (also when mapped into IPv6), or an IPv6 /64, the smallest block a site is given (RFC 6177),
/// so one host cannot dodge the limit by cycling through its own /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admission(max_connections: usize, max_per_ip: u32) -> Admission {
        Admission::new(Limits {
            max_connections,
            max_per_ip,
        })
    }

    #[test]
    fn per_ip_limit_keys() {
        let key = |s: &str| limit_key(ip(s)).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::");
        assert_eq!(key("::1"), "::");
    }

    #[test]
    fn refusals_from_one_address_are_capped_and_do_not_count_as_open() {
        let mut a = admission(100, 2);
        let flood = ip("192.0.2.1");
        let mut tickets = Vec::new();
        for _ in 0..2 {
            let (v, t) = a.accept(flood, true);
            assert_eq!(v, Verdict::Admit);
            tickets.push(t.unwrap());
        }
        for _ in 0..MAX_REFUSING_PER_ADDRESS {
            let (v, t) = a.accept(flood, true);
            assert_eq!(v, Verdict::Refuse(Limit::MaxConnectionsPerIp));
            tickets.push(t.unwrap());
        }
        for _ in 0..1000 {
            assert_eq!(
                a.accept(flood, true),
                (Verdict::Drop(Limit::MaxConnectionsPerIp), None)
            );
        }
        assert_eq!((a.open, a.refusing), (2, MAX_REFUSING_PER_ADDRESS as usize));
        // Another address is not held back by the first one's refusals.
        assert_eq!(a.accept(ip("192.0.2.2"), true).0, Verdict::Admit);
        // A refusal that ends makes room for one more 503.
        a.release(tickets.pop().unwrap());
        assert_eq!(
            a.accept(flood, true).0,
            Verdict::Refuse(Limit::MaxConnectionsPerIp)
        );
        // Closing an admitted socket frees its slot.
        a.release(tickets.remove(0));
        assert_eq!(a.accept(flood, true).0, Verdict::Admit);
    }

    #[test]
    fn the_global_refusal_cap_covers_both_limits() {
        let mut a = admission(1, 1);
        assert_eq!(a.accept(ip("10.0.0.1"), true).0, Verdict::Admit);
        let mut n = 0u32;
        for i in 0..=u32::try_from(MAX_REFUSING).unwrap() {
            // Each from its own address, so only the global cap applies.
            let (v, _) = a.accept(IpAddr::V4((0x0b00_0000 + i).into()), true);
            if v == Verdict::Refuse(Limit::MaxConnections) {
                n += 1;
            } else {
                assert_eq!(v, Verdict::Drop(Limit::MaxConnections));
            }
        }
        assert_eq!(n as usize, MAX_REFUSING);
    }

    #[test]
    fn tables_empty_when_every_socket_closed() {
        let mut a = admission(10, 10);
        let tickets: Vec<Ticket> = (0..5)
            .filter_map(|i| a.accept(IpAddr::V4((0x0a00_0000 + i).into()), true).1)
            .collect();
        for t in tickets {
            a.release(t);
        }
        assert!(a.addresses.is_empty() && a.keys.is_empty());
        assert_eq!((a.open, a.refusing), (0, 0));
    }
}
