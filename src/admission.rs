//! Who may hold a socket: `--max-connections`, `--max-connections-per-ip`, the caps on
//! refusals in flight, and `--trusted-proxy`. Pure bookkeeping: addresses in, verdicts out;
//! the event loop owns the sockets and acts on the verdicts.
//!
//! A socket from a trusted proxy is not checked against the per-address limit when it is
//! accepted: its client is not known yet. Once its request head names the client
//! ([`Admission::head`]), the socket is counted under that address instead and checked then
//! (a 503 if over). A trusted proxy that names no client is not limited per address.
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
use std::num::NonZeroU32;

use slab::Slab;

use crate::metrics::Limit;
use crate::proto::handshake::Forwarded;
use crate::proxy::TrustedProxies;

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
/// `Admission::addresses` plus one (so `Option<Ticket>` is four bytes too, as it sits in every
/// connection), and in the top bits whether the socket is counted as being refused rather
/// than admitted, and whether it came from a trusted proxy whose request has not been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(NonZeroU32);

/// The bit of a [`Ticket`] that marks a refusal.
const REFUSED: u32 = 1 << 31;
/// The bit of a [`Ticket`] that marks a trusted proxy's socket, counted under the proxy.
const PROXIED: u32 = 1 << 30;
/// The bits of a [`Ticket`] that hold the key plus one.
const KEY: u32 = PROXIED - 1;

impl Ticket {
    fn new(key: u32, refused: bool, proxied: bool) -> Self {
        // Keys stay far below KEY (see `Admission::count`).
        let mut bits = key.saturating_add(1).min(KEY);
        if refused {
            bits |= REFUSED;
        }
        if proxied {
            bits |= PROXIED;
        }
        Self(NonZeroU32::new(bits).unwrap_or(NonZeroU32::MIN))
    }

    fn key(self) -> u32 {
        (self.0.get() & KEY).saturating_sub(1)
    }

    /// Whether the socket is being refused (answered 503), not admitted.
    pub fn is_refused(self) -> bool {
        self.0.get() & REFUSED != 0
    }

    /// Whether the socket came from a trusted proxy and is still counted under it.
    pub fn is_proxied(self) -> bool {
        self.0.get() & PROXIED != 0
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
    trusted: TrustedProxies,
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
    /// Empty tables for these limits and proxies.
    pub fn new(limits: Limits, trusted: TrustedProxies) -> Self {
        Self {
            limits,
            trusted,
            addresses: Slab::new(),
            keys: HashMap::new(),
            open: 0,
            refusing: 0,
        }
    }

    /// A socket accepted from `peer`. `--max-connections-per-ip` applies now unless the peer
    /// is a trusted proxy, whose client is checked once its request names it ([`Self::head`]).
    /// The ticket is `None` only for [`Verdict::Drop`]: nothing was counted.
    pub fn accept(&mut self, peer: IpAddr) -> (Verdict, Option<Ticket>) {
        let proxied = self.trusted.contains(peer);
        let ip = limit_key(peer);
        let (open, refusing) = self.counts(ip);
        let over = if self.open >= self.limits.max_connections {
            Some(Limit::MaxConnections)
        } else if !proxied && open >= self.limits.max_per_ip {
            Some(Limit::MaxConnectionsPerIp)
        } else {
            None
        };
        let (verdict, ticket) = self.decide(ip, over, refusing);
        (
            verdict,
            ticket.map(|t| Ticket::new(t.key(), t.is_refused(), proxied)),
        )
    }

    /// An admitted socket's request head is complete. From a trusted proxy that names its
    /// client, the socket moves to the client's address and is checked against
    /// `--max-connections-per-ip` there; otherwise nothing changes. On [`Verdict::Drop`] the
    /// ticket is released and `None`.
    pub fn head(&mut self, ticket: Ticket, forwarded: &Forwarded<'_>) -> (Verdict, Option<Ticket>) {
        if !ticket.is_proxied() || ticket.is_refused() {
            return (Verdict::Admit, Some(ticket));
        }
        match self.trusted.client(forwarded) {
            Some(client) => self.rekey(ticket, client),
            None => (Verdict::Admit, Some(ticket)),
        }
    }

    /// Moves an admitted ticket to `ip` and checks `--max-connections-per-ip` there; on
    /// [`Verdict::Drop`] it is released and `None`.
    fn rekey(&mut self, ticket: Ticket, ip: IpAddr) -> (Verdict, Option<Ticket>) {
        debug_assert!(!ticket.is_refused(), "only admitted sockets send a request");
        let ip = limit_key(ip);
        if self.ip(ticket) == Some(ip) {
            return (
                Verdict::Admit,
                Some(Ticket::new(ticket.key(), false, false)),
            );
        }
        self.release(ticket);
        let (open, refusing) = self.counts(ip);
        let over = (open >= self.limits.max_per_ip).then_some(Limit::MaxConnectionsPerIp);
        self.decide(ip, over, refusing)
    }

    /// One more admitted client from the address `like` is counted under, holding no socket:
    /// an Engine.IO long-polling session between its requests. Both limits apply (the
    /// per-address one unless `like` is a trusted proxy's that named no client); over one,
    /// nothing is counted. Released with [`Self::release`] like a socket's ticket.
    pub fn add(&mut self, like: Ticket) -> Result<Ticket, Limit> {
        let Some(ip) = self.ip(like).filter(|_| !like.is_refused()) else {
            return Err(Limit::MaxConnections);
        };
        if self.open >= self.limits.max_connections {
            return Err(Limit::MaxConnections);
        }
        let (open, _) = self.counts(ip);
        if !like.is_proxied() && open >= self.limits.max_per_ip {
            return Err(Limit::MaxConnectionsPerIp);
        }
        Ok(self.count(ip, false))
    }

    /// The socket closed: its address forgets it.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.is_refused() {
            self.refusing = self.refusing.saturating_sub(1);
        } else {
            self.open = self.open.saturating_sub(1);
        }
        let Some(a) = self.addresses.get_mut(ticket.key() as usize) else {
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
            self.addresses.remove(ticket.key() as usize);
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
        self.addresses.get(ticket.key() as usize).map(|a| a.ip)
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
                // Keys stay below the number of sockets, far below 2^30 (--max-connections is
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
        Ticket::new(key, refused, false)
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
        let limits = Limits {
            max_connections,
            max_per_ip,
        };
        Admission::new(limits, TrustedProxies::loopback())
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
            let (v, t) = a.accept(flood);
            assert_eq!(v, Verdict::Admit);
            tickets.push(t.unwrap());
        }
        for _ in 0..MAX_REFUSING_PER_ADDRESS {
            let (v, t) = a.accept(flood);
            assert_eq!(v, Verdict::Refuse(Limit::MaxConnectionsPerIp));
            tickets.push(t.unwrap());
        }
        for _ in 0..1000 {
            assert_eq!(
                a.accept(flood),
                (Verdict::Drop(Limit::MaxConnectionsPerIp), None)
            );
        }
        assert_eq!((a.open, a.refusing), (2, MAX_REFUSING_PER_ADDRESS as usize));
        // Another address is not held back by the first one's refusals.
        assert_eq!(a.accept(ip("192.0.2.2")).0, Verdict::Admit);
        // A refusal that ends makes room for one more 503.
        a.release(tickets.pop().unwrap());
        assert_eq!(
            a.accept(flood).0,
            Verdict::Refuse(Limit::MaxConnectionsPerIp)
        );
        // Closing an admitted socket frees its slot.
        a.release(tickets.remove(0));
        assert_eq!(a.accept(flood).0, Verdict::Admit);
    }

    #[test]
    fn the_global_refusal_cap_covers_both_limits() {
        let mut a = admission(1, 1);
        assert_eq!(a.accept(ip("10.0.0.1")).0, Verdict::Admit);
        let mut n = 0u32;
        for i in 0..=u32::try_from(MAX_REFUSING).unwrap() {
            // Each from its own address, so only the global cap applies.
            let (v, _) = a.accept(IpAddr::V4((0x0b00_0000 + i).into()));
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
            .filter_map(|i| a.accept(IpAddr::V4((0x0a00_0000 + i).into())).1)
            .collect();
        for t in tickets {
            a.release(t);
        }
        assert!(a.addresses.is_empty() && a.keys.is_empty());
        assert_eq!((a.open, a.refusing), (0, 0));
    }

    /// The `Forwarded` lines of a request head with these fields.
    fn forwarded(fields: &str) -> Forwarded<'static> {
        let text: &'static str = format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n").leak();
        let Ok(Some((req, _))) = crate::proto::handshake::parse(text.as_bytes(), 8192) else {
            panic!("{text:?}");
        };
        *req.forwarded()
    }

    #[test]
    fn a_trusted_proxy_is_limited_by_the_client_it_names() {
        let mut a = admission(100, 1);
        let proxy = ip("127.0.0.1");
        let named = forwarded("X-Forwarded-For: 203.0.113.9, 127.0.0.1");
        // Not limited at accept: its clients are not known yet.
        let tickets: Vec<Ticket> = (0..3)
            .map(|_| {
                let (v, t) = a.accept(proxy);
                assert_eq!(v, Verdict::Admit);
                t.unwrap()
            })
            .collect();
        let (v, t1) = a.head(tickets[0], &named);
        assert_eq!(v, Verdict::Admit);
        assert_eq!(a.ip(t1.unwrap()), Some(ip("203.0.113.9")));
        let (v, t2) = a.head(tickets[1], &named);
        assert_eq!(v, Verdict::Refuse(Limit::MaxConnectionsPerIp));
        assert!(t2.unwrap().is_refused());
        // Naming no client: counted under the proxy, not limited.
        let (v, t3) = a.head(tickets[2], &forwarded(""));
        assert_eq!(v, Verdict::Admit);
        assert_eq!(a.counts(proxy), (1, 0));
        assert_eq!(a.counts(ip("203.0.113.9")), (1, 1));
        // A direct client from that address shares its count.
        assert_eq!(
            a.accept(ip("203.0.113.9")).0,
            Verdict::Refuse(Limit::MaxConnectionsPerIp)
        );
        // An untrusted peer's forwarded address is ignored: it is limited as itself.
        let (_, direct) = a.accept(ip("198.51.100.1"));
        let (v, same) = a.head(direct.unwrap(), &named);
        assert_eq!(v, Verdict::Admit);
        assert_eq!(a.ip(same.unwrap()), Some(ip("198.51.100.1")));
        assert_eq!(
            a.accept(ip("198.51.100.1")).0,
            Verdict::Refuse(Limit::MaxConnectionsPerIp)
        );
        for t in [t1, t2, t3].into_iter().flatten() {
            a.release(t);
        }
        assert_eq!(a.counts(proxy), (0, 0));
        assert_eq!(a.counts(ip("203.0.113.9")), (0, 1));
    }

    #[test]
    fn sessions_without_sockets_count_under_their_address() {
        let mut a = admission(4, 2);
        let client = ip("192.0.2.1");
        let (_, socket) = a.accept(client);
        let socket = socket.unwrap();
        let session = a.add(socket).unwrap();
        assert_eq!(a.ip(session), Some(client));
        assert_eq!(a.counts(client), (2, 0));
        // Both limits apply; a refusal counts nothing.
        assert_eq!(a.add(socket), Err(Limit::MaxConnectionsPerIp));
        a.release(socket);
        let (_, other) = a.accept(ip("192.0.2.2"));
        let (_, third) = a.accept(ip("192.0.2.3"));
        let (_, fourth) = a.accept(ip("192.0.2.4"));
        assert_eq!(a.add(fourth.unwrap()), Err(Limit::MaxConnections));
        a.release(session);
        assert_eq!(a.counts(client), (0, 0));
        for t in [other, third, fourth].into_iter().flatten() {
            a.release(t);
        }
        assert_eq!(a.open, 0);
    }
}
