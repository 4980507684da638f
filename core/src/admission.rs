//! Admission: who gets in, who waits, and what everyone else is told.
//!
//! Two sans-IO pieces, both driven by the caller's clock:
//! - [`Door`]: per-IP and per-subnet connection caps and a per-IP join rate
//!   (GCRA, via governor on a caller-driven clock). Checked before anything
//!   is allocated for a connection.
//! - [`WaitingRoom`]: node capacity with a first-in first-out queue. When
//!   the node is full, arrivals get a ticket with a position; as capacity
//!   frees, tickets are released in order at a bounded rate, and a released
//!   ticket holds its slot for a grace period. A client that comes back
//!   before its Retry-After loses its place.

use governor::clock::FakeRelativeClock;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Why the door refused a connection or a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    IpConnections,
    SubnetConnections,
    JoinRate { retry_after_ms: u64 },
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::IpConnections => "ip_connections",
            Refusal::SubnetConnections => "subnet_connections",
            Refusal::JoinRate { .. } => "join_rate",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct DoorConfig {
    /// Open connections per client IP; 0 is unlimited.
    pub per_ip_connections: u32,
    /// Open connections per /24 (IPv4) or /64 (IPv6); 0 is unlimited.
    pub per_subnet_connections: u32,
    /// Listener joins per second per IP (sustained); 0 is unlimited.
    pub joins_per_ip_per_sec: u32,
    /// Joins one IP may make at once before the rate applies.
    pub join_burst: u32,
    /// Connections one IP may reach when its listeners hold passes (a
    /// crowd behind one address: a carrier-grade NAT, an office); 0 lets
    /// passes raise nothing.
    pub per_ip_connections_with_passes: u32,
    /// The same for a /24 (/64).
    pub per_subnet_connections_with_passes: u32,
}

/// Connections one admitted page may hold: its stream, its live events
/// and one kept-alive API connection.
pub const CONNECTIONS_PER_PASS: u32 = 3;

/// Passes handed to one IP: those not used yet (their expiry, oldest
/// first) and those held by an open stream.
#[derive(Debug, Default)]
struct Passes {
    unused: VecDeque<u64>,
    held: u32,
}

impl Passes {
    fn count(&self) -> u32 {
        self.unused.len() as u32 + self.held
    }
}

/// The network a client IP belongs to for subnet limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subnet {
    V4([u8; 3]),
    V6([u8; 8]),
}

pub fn subnet_of(ip: IpAddr) -> Subnet {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Subnet::V4([o[0], o[1], o[2]])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => subnet_of(IpAddr::V4(v4)),
            None => {
                let o = v6.octets();
                let mut net = [0u8; 8];
                net.copy_from_slice(&o[..8]);
                Subnet::V6(net)
            }
        },
    }
}

type KeyedLimiter = RateLimiter<
    IpAddr,
    HashMapStateStore<IpAddr>,
    FakeRelativeClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

/// A per-IP rate (GCRA, via governor) on the caller's clock.
pub struct IpRate {
    limiter: KeyedLimiter,
    clock: FakeRelativeClock,
    clock_ms: u64,
}

impl IpRate {
    /// `per_sec` sustained with bursts of `burst`; `None` when `per_sec`
    /// is 0 (unlimited).
    pub fn new(per_sec: u32, burst: u32) -> Option<IpRate> {
        let rate = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(IpRate {
            limiter: RateLimiter::new(quota, HashMapStateStore::default(), clock.clone()),
            clock,
            clock_ms: 0,
        })
    }

    /// One event from `ip` at `now_ms` (monotonic): `Err(ms)` to wait.
    pub fn check(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        if now_ms > self.clock_ms {
            self.clock
                .advance(Duration::from_millis(now_ms - self.clock_ms));
            self.clock_ms = now_ms;
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.clock));
            wait.as_millis() as u64
        })
    }

    /// Forgets addresses that have been quiet (bounds memory).
    pub fn forget_idle(&mut self) {
        self.limiter.retain_recent();
    }
}

pub struct Door {
    cfg: DoorConfig,
    per_ip: HashMap<IpAddr, u32>,
    per_subnet: HashMap<Subnet, u32>,
    passes: HashMap<IpAddr, Passes>,
    subnet_passes: HashMap<Subnet, u32>,
    joins: Option<IpRate>,
}

impl Door {
    pub fn new(cfg: DoorConfig) -> Door {
        let joins = IpRate::new(cfg.joins_per_ip_per_sec, cfg.join_burst);
        Door {
            cfg,
            per_ip: HashMap::new(),
            per_subnet: HashMap::new(),
            passes: HashMap::new(),
            subnet_passes: HashMap::new(),
            joins,
        }
    }

    /// A connection from `ip` opens at `now_ms`. On success the caller
    /// must call [`Door::close`] when it ends. Passes held by the address
    /// raise its caps (see [`Door::grant`]).
    pub fn open(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        self.expire_passes(ip, now_ms);
        let net = subnet_of(ip);
        let ip_count = self.per_ip.get(&ip).copied().unwrap_or(0);
        let ip_passes = self.passes.get(&ip).map_or(0, Passes::count);
        let ip_cap = raised(
            self.cfg.per_ip_connections,
            ip_passes,
            self.cfg.per_ip_connections_with_passes,
        );
        if ip_cap.is_some_and(|cap| ip_count >= cap) {
            return Err(Refusal::IpConnections);
        }
        let net_count = self.per_subnet.get(&net).copied().unwrap_or(0);
        let net_passes = self.subnet_passes.get(&net).copied().unwrap_or(0);
        let net_cap = raised(
            self.cfg.per_subnet_connections,
            net_passes,
            self.cfg.per_subnet_connections_with_passes,
        );
        if net_cap.is_some_and(|cap| net_count >= cap) {
            return Err(Refusal::SubnetConnections);
        }
        self.per_ip.insert(ip, ip_count + 1);
        self.per_subnet.insert(net, net_count + 1);
        Ok(())
    }

    pub fn close(&mut self, ip: IpAddr) {
        dec(&mut self.per_ip, ip);
        dec(&mut self.per_subnet, subnet_of(ip));
    }

    /// A pass was handed to a page at `ip` (it was admitted, or released
    /// from the waiting room): until `expires_ms`, or while the stream
    /// that presents it stays open, the address may hold
    /// [`CONNECTIONS_PER_PASS`] more connections, within the `with_passes`
    /// caps. This is what tells a crowd behind one address from a flood
    /// from one: each page was admitted, one join at a time.
    pub fn grant(&mut self, ip: IpAddr, now_ms: u64, expires_ms: u64) {
        self.expire_passes(ip, now_ms);
        let max_passes = |cap: u32, base: u32| cap.saturating_sub(base) / CONNECTIONS_PER_PASS;
        let ip_max = max_passes(
            self.cfg.per_ip_connections_with_passes,
            self.cfg.per_ip_connections,
        );
        let net = subnet_of(ip);
        let net_max = max_passes(
            self.cfg.per_subnet_connections_with_passes,
            self.cfg.per_subnet_connections,
        );
        let passes = self.passes.entry(ip).or_default();
        let net_passes = self.subnet_passes.get(&net).copied().unwrap_or(0);
        if passes.count() >= ip_max || net_passes >= net_max {
            if passes.count() == 0 {
                self.passes.remove(&ip);
            }
            return;
        }
        passes.unused.push_back(expires_ms);
        *self.subnet_passes.entry(net).or_default() += 1;
    }

    /// A stream from `ip` presented its pass: the raised allowance lasts
    /// until [`Door::release_pass`]. False when `ip` holds no unused pass
    /// (it expired, or was handed to another address).
    pub fn hold_pass(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        self.expire_passes(ip, now_ms);
        let Some(p) = self.passes.get_mut(&ip) else {
            return false;
        };
        if p.unused.pop_front().is_none() {
            return false;
        }
        p.held += 1;
        true
    }

    /// The stream holding a pass from `ip` closed.
    pub fn release_pass(&mut self, ip: IpAddr) {
        let Some(p) = self.passes.get_mut(&ip) else {
            return;
        };
        if p.held == 0 {
            return;
        }
        p.held -= 1;
        if p.count() == 0 {
            self.passes.remove(&ip);
        }
        dec(&mut self.subnet_passes, subnet_of(ip));
    }

    /// Passes `ip` holds (unused and held).
    pub fn passes(&self, ip: IpAddr) -> u32 {
        self.passes.get(&ip).map_or(0, Passes::count)
    }

    fn expire_passes(&mut self, ip: IpAddr, now_ms: u64) {
        let Some(p) = self.passes.get_mut(&ip) else {
            return;
        };
        let mut gone = 0;
        while p.unused.front().is_some_and(|&exp| exp <= now_ms) {
            p.unused.pop_front();
            gone += 1;
        }
        if p.count() == 0 {
            self.passes.remove(&ip);
        }
        for _ in 0..gone {
            dec(&mut self.subnet_passes, subnet_of(ip));
        }
    }

    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// A listener join from `ip` at `now_ms` (monotonic).
    pub fn join(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        match self.joins.as_mut() {
            None => Ok(()),
            Some(rate) => rate
                .check(ip, now_ms)
                .map_err(|retry_after_ms| Refusal::JoinRate { retry_after_ms }),
        }
    }

    /// Forgets rate state of IPs that have been quiet, and passes that
    /// expired unused (bounds memory).
    pub fn forget_idle(&mut self, now_ms: u64) {
        if let Some(rate) = self.joins.as_mut() {
            rate.forget_idle();
        }
        let stale: Vec<IpAddr> = self
            .passes
            .iter()
            .filter(|(_, p)| p.unused.front().is_some_and(|&exp| exp <= now_ms))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in stale {
            self.expire_passes(ip, now_ms);
        }
    }
}

fn dec<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, k: K) {
    if let Some(n) = map.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            map.remove(&k);
        }
    }
}

/// A connection cap raised by the passes an address holds, within
/// `with_passes`. `None`: no cap (0 configured).
fn raised(base: u32, passes: u32, with_passes: u32) -> Option<u32> {
    if base == 0 {
        return None;
    }
    let raised = base.saturating_add(passes.saturating_mul(CONNECTIONS_PER_PASS));
    Some(raised.min(with_passes.max(base)))
}

/// A place in the waiting room, as carried (signed) by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub seq: u64,
    /// Coming back before this (monotonic ms) loses the place.
    pub not_before_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Admitted ahead of opening the stream: present this ticket to it.
    Pass(Ticket),
    Wait {
        ticket: Ticket,
        position: u64,
        retry_after_ms: u64,
        lost_place: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct WaitingRoomConfig {
    /// Listeners this node admits.
    pub capacity: usize,
    /// Tickets released per second as capacity frees.
    pub admit_per_sec: f64,
    /// How long a released ticket holds its slot for its holder.
    pub grace_ms: u64,
    /// Shortest Retry-After given.
    pub min_retry_ms: u64,
    /// Longest Retry-After given (clients come back to learn their position).
    pub max_retry_ms: u64,
}

#[derive(Debug)]
struct Released {
    seq: u64,
    expires_ms: u64,
    used: bool,
}

pub struct WaitingRoom {
    cfg: WaitingRoomConfig,
    next_seq: u64,
    /// Tickets below this have been released.
    released_upto: u64,
    /// Released tickets whose holders have not come back yet.
    released: VecDeque<Released>,
    outstanding: usize,
    /// Tickets whose holders lost their place (re-queued): skipped.
    abandoned: HashSet<u64>,
    credit: f64,
    last_ms: u64,
}

impl WaitingRoom {
    pub fn new(cfg: WaitingRoomConfig) -> Self {
        WaitingRoom {
            cfg,
            next_seq: 0,
            released_upto: 0,
            released: VecDeque::new(),
            outstanding: 0,
            abandoned: HashSet::new(),
            credit: 0.0,
            last_ms: 0,
        }
    }

    /// People holding tickets that have not been released yet.
    pub fn waiting(&self) -> u64 {
        self.next_seq - self.released_upto - self.abandoned.len() as u64
    }

    /// Slots held for released tickets whose holders have not arrived.
    pub fn held(&self) -> usize {
        self.outstanding
    }

    /// Releases tickets into free capacity. Call on every decision and
    /// periodically; `listeners` is the current admitted count and
    /// `healthy` whether the node's measured signals allow more.
    pub fn tick(&mut self, now_ms: u64, listeners: usize, healthy: bool) {
        while let Some(front) = self.released.front() {
            if front.used {
                self.released.pop_front();
            } else if front.expires_ms <= now_ms {
                self.released.pop_front();
                self.outstanding -= 1;
            } else {
                break;
            }
        }
        let dt = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        // at most one second of release credit accumulates
        self.credit =
            (self.credit + dt * self.cfg.admit_per_sec).min(self.cfg.admit_per_sec.max(1.0));
        if !healthy {
            return;
        }
        let mut free = self
            .cfg
            .capacity
            .saturating_sub(listeners + self.outstanding);
        while self.waiting() > 0 && free > 0 && self.credit >= 1.0 {
            if self.abandoned.remove(&self.released_upto) {
                self.released_upto += 1;
                continue;
            }
            self.released.push_back(Released {
                seq: self.released_upto,
                expires_ms: now_ms + self.cfg.grace_ms,
                used: false,
            });
            self.released_upto += 1;
            self.outstanding += 1;
            self.credit -= 1.0;
            free -= 1;
        }
    }

    fn retry_after(&self, position: u64) -> u64 {
        let eta = (position as f64 / self.cfg.admit_per_sec.max(0.001) * 1000.0) as u64;
        eta.clamp(self.cfg.min_retry_ms, self.cfg.max_retry_ms)
    }

    fn wait(&mut self, seq: u64, now_ms: u64, lost_place: bool) -> Decision {
        let ahead = self.abandoned.iter().filter(|&&a| a < seq).count() as u64;
        let position = seq.saturating_sub(self.released_upto + ahead) + 1;
        let retry_after_ms = self.retry_after(position);
        Decision::Wait {
            ticket: Ticket {
                seq,
                not_before_ms: now_ms + retry_after_ms,
            },
            position,
            retry_after_ms,
            lost_place,
        }
    }

    fn enqueue(&mut self, now_ms: u64, lost_place: bool) -> Decision {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.wait(seq, now_ms, lost_place)
    }

    /// Decides a join at `now_ms` by a client holding `ticket` (already
    /// signature-checked by the caller) or none.
    pub fn decide(
        &mut self,
        now_ms: u64,
        listeners: usize,
        healthy: bool,
        ticket: Option<Ticket>,
    ) -> Decision {
        self.tick(now_ms, listeners, healthy);
        match ticket {
            Some(t) if t.seq < self.next_seq => {
                if now_ms < t.not_before_ms {
                    if t.seq >= self.released_upto {
                        self.abandoned.insert(t.seq);
                    }
                    return self.enqueue(now_ms, true);
                }
                if t.seq < self.released_upto {
                    if let Some(r) = self.released.iter_mut().find(|r| r.seq == t.seq && !r.used) {
                        r.used = true;
                        self.outstanding -= 1;
                        return Decision::Admit;
                    }
                    // released, but its holder did not come back in time
                    return self.enqueue(now_ms, true);
                }
                self.wait(t.seq, now_ms, false)
            }
            _ => {
                if self.waiting() == 0
                    && healthy
                    && listeners + self.outstanding < self.cfg.capacity
                {
                    Decision::Admit
                } else {
                    self.enqueue(now_ms, false)
                }
            }
        }
    }
}

impl WaitingRoom {
    /// Like [`WaitingRoom::decide`], but an admission comes back as a pass:
    /// a released ticket holding a slot for the grace period, for a client
    /// (the web page) that asks first and opens the stream right after.
    pub fn reserve(
        &mut self,
        now_ms: u64,
        listeners: usize,
        healthy: bool,
        ticket: Option<Ticket>,
    ) -> Decision {
        let decision = self.decide(now_ms, listeners, healthy, ticket);
        if decision != Decision::Admit {
            return decision;
        }
        let seq = match ticket {
            Some(t) if t.seq < self.released_upto => t.seq,
            _ => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.abandoned.retain(|&a| a > seq);
                self.released_upto = self.next_seq;
                seq
            }
        };
        self.released.push_back(Released {
            seq,
            expires_ms: now_ms + self.cfg.grace_ms,
            used: false,
        });
        self.outstanding += 1;
        Decision::Pass(Ticket {
            seq,
            not_before_ms: now_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_holds_a_slot_until_the_stream_opens() {
        let mut r = room(1, 10.0);
        let Decision::Pass(ticket) = r.reserve(0, 0, true, None) else {
            panic!()
        };
        assert_eq!(r.held(), 1);
        // the slot is held: a stranger waits
        assert!(matches!(
            r.decide(10, 0, true, None),
            Decision::Wait { position: 1, .. }
        ));
        assert_eq!(r.decide(20, 0, true, Some(ticket)), Decision::Admit);
        assert_eq!(r.held(), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connection_caps_per_ip_and_subnet() {
        let mut door = Door::new(DoorConfig {
            per_ip_connections: 2,
            per_subnet_connections: 3,
            joins_per_ip_per_sec: 0,
            join_burst: 0,
            per_ip_connections_with_passes: 0,
            per_subnet_connections_with_passes: 0,
        });
        assert_eq!(door.open(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(door.open(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(door.open(ip("10.0.0.1"), 0), Err(Refusal::IpConnections));
        assert_eq!(door.open(ip("10.0.0.2"), 0), Ok(()));
        assert_eq!(
            door.open(ip("10.0.0.3"), 0),
            Err(Refusal::SubnetConnections)
        );
        assert_eq!(door.open(ip("10.0.1.3"), 0), Ok(()), "another /24");
        door.close(ip("10.0.0.1"));
        assert_eq!(door.open(ip("10.0.0.3"), 0), Ok(()));
        assert_eq!(door.open_connections(ip("10.0.0.1")), 1);
        // with no room configured for passes, a pass raises nothing
        assert_eq!(door.open(ip("10.0.1.3"), 0), Ok(()));
        door.grant(ip("10.0.1.3"), 0, 1_000);
        assert_eq!(door.open(ip("10.0.1.3"), 0), Err(Refusal::IpConnections));
        // IPv6 by /64, and v4-mapped addresses count as their IPv4
        assert_eq!(
            subnet_of(ip("2001:db8::1")),
            subnet_of(ip("2001:db8::ffff"))
        );
        assert_ne!(
            subnet_of(ip("2001:db8::1")),
            subnet_of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(subnet_of(ip("::ffff:10.0.0.9")), subnet_of(ip("10.0.0.1")));
    }

    #[test]
    fn join_rate_is_limited_per_ip_with_a_burst() {
        let mut door = Door::new(DoorConfig {
            per_ip_connections: 0,
            per_subnet_connections: 0,
            joins_per_ip_per_sec: 2,
            join_burst: 3,
            per_ip_connections_with_passes: 0,
            per_subnet_connections_with_passes: 0,
        });
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(door.join(a, 1000), Ok(()));
        }
        let Err(Refusal::JoinRate { retry_after_ms }) = door.join(a, 1000) else {
            panic!("4th join passed")
        };
        assert!((1..=500).contains(&retry_after_ms), "{retry_after_ms}");
        assert_eq!(
            door.join(ip("192.0.2.2"), 1000),
            Ok(()),
            "other IPs unaffected"
        );
        assert_eq!(door.join(a, 1500), Ok(()), "one more after 500 ms at 2/s");
        assert!(door.join(a, 1500).is_err());
    }

    fn pass_door() -> Door {
        Door::new(DoorConfig {
            per_ip_connections: 4,
            per_subnet_connections: 8,
            joins_per_ip_per_sec: 0,
            join_burst: 0,
            per_ip_connections_with_passes: 4 + 30,
            per_subnet_connections_with_passes: 8 + 45,
        })
    }

    #[test]
    fn passes_raise_an_address_cap_within_bounds() {
        let mut door = pass_door();
        let nat = ip("100.64.0.1");
        for _ in 0..4 {
            door.open(nat, 0).unwrap();
        }
        assert_eq!(door.open(nat, 0), Err(Refusal::IpConnections));
        // two pages behind the address were admitted: room for their streams,
        // events and API calls
        door.grant(nat, 0, 15_000);
        door.grant(nat, 0, 15_000);
        for _ in 0..2 * CONNECTIONS_PER_PASS {
            door.open(nat, 100).unwrap();
        }
        assert_eq!(door.open(nat, 100), Err(Refusal::IpConnections));
        // a stream presents a pass: it holds it while open, past the expiry
        assert!(door.hold_pass(nat, 200));
        assert_eq!(door.open(nat, 20_000), Err(Refusal::IpConnections));
        for _ in 0..4 {
            door.close(nat);
        }
        assert_eq!(
            door.open(nat, 20_000),
            Ok(()),
            "the held pass keeps its room"
        );
        assert_eq!(door.passes(nat), 1, "the unused one expired");
        door.release_pass(nat);
        assert_eq!(door.passes(nat), 0);
        assert!(!door.hold_pass(nat, 20_000), "no pass left to hold");
    }

    #[test]
    fn passes_per_address_and_network_are_bounded() {
        let mut door = pass_door();
        let nat = ip("100.64.0.1");
        for _ in 0..100 {
            door.grant(nat, 0, 15_000);
        }
        assert_eq!(door.passes(nat), 10, "30 more connections, 3 per pass");
        let mut opened = 0;
        while door.open(nat, 0).is_ok() {
            opened += 1;
        }
        assert_eq!(opened, 34);
        // the network as a whole: 45 more, so 5 more passes for a neighbour
        let neighbour = ip("100.64.0.2");
        for _ in 0..100 {
            door.grant(neighbour, 0, 15_000);
        }
        assert_eq!(door.passes(neighbour), 5);
        // expired passes are forgotten
        door.forget_idle(15_000);
        assert_eq!(door.passes(nat), 0);
        assert_eq!(door.passes(neighbour), 0);
        door.grant(neighbour, 15_000, 30_000);
        assert_eq!(door.passes(neighbour), 1);
    }

    fn room(capacity: usize, rate: f64) -> WaitingRoom {
        WaitingRoom::new(WaitingRoomConfig {
            capacity,
            admit_per_sec: rate,
            grace_ms: 10_000,
            min_retry_ms: 1_000,
            max_retry_ms: 30_000,
        })
    }

    #[test]
    fn admits_up_to_capacity_then_queues() {
        let mut r = room(2, 10.0);
        assert_eq!(r.decide(0, 0, true, None), Decision::Admit);
        assert_eq!(r.decide(0, 1, true, None), Decision::Admit);
        let Decision::Wait {
            ticket, position, ..
        } = r.decide(0, 2, true, None)
        else {
            panic!()
        };
        assert_eq!((ticket.seq, position), (0, 1));
        let Decision::Wait { position, .. } = r.decide(0, 2, true, None) else {
            panic!()
        };
        assert_eq!(position, 2);
        assert_eq!(r.waiting(), 2);
        // unhealthy: nobody new gets in even with room
        assert!(matches!(r.decide(0, 0, false, None), Decision::Wait { .. }));
    }

    #[test]
    fn the_waiting_room_admits_in_order_at_the_configured_rate() {
        let mut r = room(10, 2.0);
        let mut tickets = Vec::new();
        for _ in 0..5 {
            let Decision::Wait { ticket, .. } = r.decide(0, 10, true, None) else {
                panic!()
            };
            tickets.push(ticket);
        }
        // capacity frees entirely at t = 10 s; 2 tickets per second are released
        r.tick(10_000, 0, true);
        assert_eq!(r.held(), 2);
        r.tick(10_500, 0, true);
        assert_eq!(r.held(), 3);
        // the third ticket was released; the fourth not yet
        let t3 = Ticket {
            not_before_ms: 0,
            ..tickets[2]
        };
        let t4 = Ticket {
            not_before_ms: 0,
            ..tickets[3]
        };
        assert_eq!(r.decide(10_500, 0, true, Some(t3)), Decision::Admit);
        let Decision::Wait { position, .. } = r.decide(10_500, 1, true, Some(t4)) else {
            panic!()
        };
        assert_eq!(position, 1);
        // a newcomer without a ticket queues behind everyone
        let Decision::Wait { position, .. } = r.decide(10_500, 1, true, None) else {
            panic!()
        };
        assert_eq!(position, 3);
        // a ticket is single use
        assert!(matches!(
            r.decide(10_500, 1, true, Some(t3)),
            Decision::Wait {
                lost_place: true,
                ..
            }
        ));
    }

    #[test]
    fn coming_back_early_or_too_late_loses_the_place() {
        let mut r = room(1, 100.0);
        let Decision::Wait {
            ticket,
            retry_after_ms,
            ..
        } = r.decide(0, 1, true, None)
        else {
            panic!()
        };
        assert_eq!(retry_after_ms, 1_000);
        let Decision::Wait { ticket: other, .. } = r.decide(0, 1, true, None) else {
            panic!()
        };
        // back after 200 ms, ignoring Retry-After: sent to the back, behind `other`
        let d = r.decide(200, 1, true, Some(ticket));
        let Decision::Wait {
            ticket: again,
            lost_place,
            position,
            ..
        } = d
        else {
            panic!()
        };
        assert!(lost_place);
        assert_eq!(position, 2);
        assert_eq!(r.waiting(), 2, "the abandoned place is not counted");
        // honours Retry-After, but the node is still full: same place kept
        let Decision::Wait {
            ticket: kept,
            lost_place,
            position,
            ..
        } = r.decide(1_300, 1, true, Some(again))
        else {
            panic!()
        };
        assert!(!lost_place);
        assert_eq!((kept.seq, position), (again.seq, 2));
        // a slot frees: it goes to `other`, skipping the abandoned place
        r.tick(2_000, 0, true);
        let o = Ticket {
            not_before_ms: 0,
            ..other
        };
        assert_eq!(r.decide(2_000, 0, true, Some(o)), Decision::Admit);
        // the next is released at once, but its holder comes back after the grace period
        r.tick(3_000, 0, true);
        assert_eq!(r.held(), 1);
        let late = r.decide(30_000, 0, true, Some(kept));
        assert!(
            matches!(
                late,
                Decision::Wait {
                    lost_place: true,
                    ..
                }
            ),
            "{late:?}"
        );
    }

    #[test]
    fn released_slots_are_held_for_their_tickets() {
        let mut r = room(1, 10.0);
        let Decision::Wait { ticket, .. } = r.decide(0, 1, true, None) else {
            panic!()
        };
        r.tick(1_000, 0, true);
        assert_eq!(r.held(), 1);
        // a newcomer cannot take the slot held for the ticket
        assert!(matches!(
            r.decide(1_100, 0, true, None),
            Decision::Wait { .. }
        ));
        let t = Ticket {
            not_before_ms: 0,
            ..ticket
        };
        assert_eq!(r.decide(1_200, 0, true, Some(t)), Decision::Admit);
    }
}
