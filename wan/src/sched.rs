//! The packet scheduler as a pure model (no I/O, time given by the caller): whether a
//! packet from one port to another is dropped (a cut, a loss draw, a full queue) or when
//! it is delivered. The router (`router.rs`) calls it under its lock for every packet.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::matrix::{LinkParams, Matrix, RegionId};

/// A port's index in its router (the order of the `PortSpec`s it was started with).
pub type PortId = usize;

/// The longest a packet may wait for its link's bandwidth before it is dropped instead
/// (a drop-tail queue measured in time rather than bytes, so one limit fits every rate).
pub const MAX_BACKLOG: Duration = Duration::from_millis(250);

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A cut between the two ports or their regions, in this direction.
    Cut,
    /// The link's loss draw.
    Loss,
    /// The link's queue (bandwidth) or the router's memory bound was full.
    Queue,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver(Instant),
    Drop(DropReason),
}

/// The one-way cuts in place, each (from, to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cuts {
    pub ports: Vec<(PortId, PortId)>,
    pub regions: Vec<(RegionId, RegionId)>,
}

/// Counters of one ordered pair of ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairStats {
    pub forwarded: u64,
    pub cut: u64,
    pub lost: u64,
    pub queue_full: u64,
}

/// SplitMix64: small, fast, good enough for loss and jitter draws, and the same sequence
/// for the same seed on every machine (no `rand` dependency for ten lines).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, from: RegionId, to: RegionId, purpose: u64) -> Rng {
        let mut r = Rng(seed ^ (from as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.0 ^= (to as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ purpose;
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The jitter of a link: an offset in `[-jitter, +jitter]` that moves linearly between
/// random knots `4 × jitter` apart, so it never changes faster than half a second per
/// second and packets sent in order arrive in order (DESIGN.md).
#[derive(Debug, Clone)]
struct Walk {
    rng: Rng,
    /// (time, offset in seconds) of the knots around the last time asked.
    from: Option<(Instant, f64)>,
    to: (Instant, f64),
}

impl Walk {
    fn offset(&mut self, t: Instant, jitter: Duration) -> f64 {
        let j = jitter.as_secs_f64();
        if j == 0.0 {
            return 0.0;
        }
        let period = (jitter * 4).max(Duration::from_millis(1));
        let Some(mut from) = self.from else {
            let v0 = (self.rng.unit() * 2.0 - 1.0) * j;
            let v1 = (self.rng.unit() * 2.0 - 1.0) * j;
            self.from = Some((t, v0));
            self.to = (t + period, v1);
            return v0;
        };
        if t >= self.to.0 + period {
            // idle for more than a period: start again from where the walk was heading
            from = (t, self.to.1);
            self.to = (t + period, (self.rng.unit() * 2.0 - 1.0) * j);
        }
        while t >= self.to.0 {
            from = self.to;
            self.to = (from.0 + period, (self.rng.unit() * 2.0 - 1.0) * j);
        }
        self.from = Some(from);
        let span = (self.to.0 - from.0).as_secs_f64();
        let x = t.saturating_duration_since(from.0).as_secs_f64() / span;
        from.1 + (self.to.1 - from.1) * x
    }
}

#[derive(Debug, Clone)]
struct Link {
    params: LinkParams,
    loss: Rng,
    walk: Walk,
    busy_until: Option<Instant>,
}

/// Every link's state, the cuts, and each pair of ports' last delivery time (the FIFO
/// floor) and counters.
#[derive(Debug, Clone)]
pub struct Scheduler {
    regions: usize,
    seed: u64,
    links: Vec<Link>,
    region_cuts: BTreeSet<(RegionId, RegionId)>,
    port_cuts: BTreeSet<(PortId, PortId)>,
    last: BTreeMap<(PortId, PortId), Instant>,
    stats: BTreeMap<(PortId, PortId), PairStats>,
}

impl Scheduler {
    pub fn new(matrix: &Matrix) -> Scheduler {
        let n = matrix.len();
        let seed = matrix.seed();
        let mut links = Vec::with_capacity(n * n);
        for from in 0..n {
            for to in 0..n {
                links.push(Link {
                    params: matrix.link(from, to),
                    loss: Rng::new(seed, from, to, 1),
                    walk: Walk {
                        rng: Rng::new(seed, from, to, 2),
                        from: None,
                        to: (Instant::now(), 0.0),
                    },
                    busy_until: None,
                });
            }
        }
        Scheduler {
            regions: n,
            seed,
            links,
            region_cuts: BTreeSet::new(),
            port_cuts: BTreeSet::new(),
            last: BTreeMap::new(),
            stats: BTreeMap::new(),
        }
    }

    pub fn regions(&self) -> usize {
        self.regions
    }

    /// The verdict on a packet of `len` bytes from port `from` (in region `from_region`)
    /// to port `to`, arriving at `now`. Ports outside the matrix (`None`) have no delay,
    /// loss or region cuts; cuts between ports still apply to them.
    pub fn admit(
        &mut self,
        now: Instant,
        from: (PortId, Option<RegionId>),
        to: (PortId, Option<RegionId>),
        len: usize,
    ) -> Verdict {
        let verdict = self.decide(now, from, to, len);
        let s = self.stats.entry((from.0, to.0)).or_default();
        match verdict {
            Verdict::Deliver(_) => s.forwarded += 1,
            Verdict::Drop(DropReason::Cut) => s.cut += 1,
            Verdict::Drop(DropReason::Loss) => s.lost += 1,
            Verdict::Drop(DropReason::Queue) => s.queue_full += 1,
        }
        verdict
    }

    /// A packet admitted but then dropped by the router (its memory bound).
    pub fn count_queue_full(&mut self, from: PortId, to: PortId) {
        let s = self.stats.entry((from, to)).or_default();
        s.forwarded = s.forwarded.saturating_sub(1);
        s.queue_full += 1;
    }

    fn decide(
        &mut self,
        now: Instant,
        (from, from_region): (PortId, Option<RegionId>),
        (to, to_region): (PortId, Option<RegionId>),
        len: usize,
    ) -> Verdict {
        if self.port_cuts.contains(&(from, to)) {
            return Verdict::Drop(DropReason::Cut);
        }
        let mut at = now;
        if let (Some(a), Some(b)) = (from_region, to_region) {
            if self.region_cuts.contains(&(a, b)) {
                return Verdict::Drop(DropReason::Cut);
            }
            let link = &mut self.links[a * self.regions + b];
            let p = link.params;
            if p.loss > 0.0 && link.loss.unit() < p.loss {
                return Verdict::Drop(DropReason::Loss);
            }
            let start = link.busy_until.map_or(now, |b| b.max(now));
            if start - now > MAX_BACKLOG {
                return Verdict::Drop(DropReason::Queue);
            }
            let tx = p
                .bandwidth_bps
                .filter(|b| *b > 0)
                .map_or(Duration::ZERO, |b| {
                    Duration::from_secs_f64(len as f64 * 8.0 / b as f64)
                });
            let depart = start + tx;
            link.busy_until = Some(depart);
            let offset = link.walk.offset(depart, p.jitter);
            let delay = (p.delay.as_secs_f64() + offset).max(0.0);
            at = depart + Duration::from_secs_f64(delay);
        }
        // first in, first out per pair of ports: a delay made shorter while packets are in
        // flight holds the new ones behind the old
        let last = self.last.entry((from, to)).or_insert(at);
        at = at.max(*last);
        *last = at;
        Verdict::Deliver(at)
    }

    pub fn link(&self, from: RegionId, to: RegionId) -> LinkParams {
        self.links[self.index(from, to)].params
    }

    /// Change `from` → `to`; packets already admitted keep their delivery time.
    pub fn set_link(&mut self, from: RegionId, to: RegionId, params: LinkParams) {
        let i = self.index(from, to);
        let link = &mut self.links[i];
        if link.params.jitter != params.jitter {
            link.walk.from = None;
        }
        link.params = params;
    }

    /// Drop everything from `from` to `to` (one way) until healed.
    pub fn cut_regions(&mut self, from: RegionId, to: RegionId) {
        let _ = self.index(from, to);
        self.region_cuts.insert((from, to));
    }

    pub fn heal_regions(&mut self, from: RegionId, to: RegionId) {
        self.region_cuts.remove(&(from, to));
    }

    /// Drop everything from port `from` to port `to` (one way) until healed.
    pub fn cut_ports(&mut self, from: PortId, to: PortId) {
        self.port_cuts.insert((from, to));
    }

    pub fn heal_ports(&mut self, from: PortId, to: PortId) {
        self.port_cuts.remove(&(from, to));
    }

    /// Remove every cut, of ports and of regions.
    pub fn heal_all(&mut self) {
        self.port_cuts.clear();
        self.region_cuts.clear();
    }

    /// The cuts in place.
    pub fn cuts(&self) -> Cuts {
        Cuts {
            ports: self.port_cuts.iter().copied().collect(),
            regions: self.region_cuts.iter().copied().collect(),
        }
    }

    pub fn stats(&self) -> &BTreeMap<(PortId, PortId), PairStats> {
        &self.stats
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn index(&self, from: RegionId, to: RegionId) -> usize {
        assert!(
            from < self.regions && to < self.regions,
            "region out of range"
        );
        from * self.regions + to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn two(params: LinkParams) -> Scheduler {
        let mut m = Matrix::new(["a", "b"]).with_seed(7);
        m.set_both(0, 1, params);
        Scheduler::new(&m)
    }

    fn at(v: Verdict) -> Instant {
        match v {
            Verdict::Deliver(t) => t,
            Verdict::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn delay_applies_between_regions_not_within_nor_outside() {
        let mut s = two(LinkParams::delay(ms(45)));
        let t = Instant::now();
        assert_eq!(at(s.admit(t, (0, Some(0)), (1, Some(1)), 100)), t + ms(45));
        assert_eq!(at(s.admit(t, (0, Some(0)), (2, Some(0)), 100)), t);
        assert_eq!(at(s.admit(t, (0, Some(0)), (3, None), 100)), t);
    }

    #[test]
    fn jitter_stays_in_bounds_averages_to_the_delay_and_never_reorders() {
        let mut s = two(LinkParams {
            jitter: ms(10),
            ..LinkParams::delay(ms(50))
        });
        let t0 = Instant::now();
        let (mut prev, mut sum, n) = (t0, 0.0, 20_000u32);
        for i in 0..n {
            let t = t0 + Duration::from_micros(u64::from(i) * 500);
            let d = at(s.admit(t, (0, Some(0)), (1, Some(1)), 100));
            let delay = (d - t).as_secs_f64();
            assert!((0.040 - 1e-6..=0.060 + 1e-6).contains(&delay), "{delay}");
            assert!(d >= prev, "reordered");
            prev = d;
            sum += delay;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.050).abs() < 0.003, "mean {mean}");
    }

    #[test]
    fn loss_is_seeded_and_near_its_rate() {
        let p = LinkParams {
            loss: 0.1,
            ..LinkParams::delay(ms(1))
        };
        let run = || {
            let mut s = two(p);
            let t = Instant::now();
            (0..10_000)
                .filter(|_| {
                    s.admit(t, (0, Some(0)), (1, Some(1)), 100) == Verdict::Drop(DropReason::Loss)
                })
                .count()
        };
        let lost = run();
        assert_eq!(lost, run(), "the same seed, the same draws");
        // binomial(10 000, 0.1): sd 30; 4 sd
        assert!((880..=1120).contains(&lost), "{lost}");
    }

    #[test]
    fn bandwidth_serializes_and_drops_beyond_the_backlog() {
        // 1 Mbit/s: a 1250-byte packet takes 10 ms
        let mut s = two(LinkParams {
            bandwidth_bps: Some(1_000_000),
            ..LinkParams::LAN
        });
        let t = Instant::now();
        assert_eq!(at(s.admit(t, (0, Some(0)), (1, Some(1)), 1250)), t + ms(10));
        assert_eq!(at(s.admit(t, (0, Some(0)), (1, Some(1)), 1250)), t + ms(20));
        // the other direction has its own queue
        assert_eq!(at(s.admit(t, (1, Some(1)), (0, Some(0)), 1250)), t + ms(10));
        let drops = (0..40)
            .filter(|_| {
                s.admit(t, (0, Some(0)), (1, Some(1)), 1250) == Verdict::Drop(DropReason::Queue)
            })
            .count();
        assert!(drops > 0);
        assert_eq!(s.stats()[&(0, 1)].queue_full, drops as u64);
    }

    #[test]
    fn cuts_are_one_way_and_heal() {
        let mut s = two(LinkParams::delay(ms(5)));
        let t = Instant::now();
        s.cut_regions(0, 1);
        assert_eq!(
            s.admit(t, (0, Some(0)), (1, Some(1)), 1),
            Verdict::Drop(DropReason::Cut)
        );
        assert!(matches!(
            s.admit(t, (1, Some(1)), (0, Some(0)), 1),
            Verdict::Deliver(_)
        ));
        s.heal_regions(0, 1);
        s.cut_ports(1, 0);
        assert!(matches!(
            s.admit(t, (0, Some(0)), (1, Some(1)), 1),
            Verdict::Deliver(_)
        ));
        assert_eq!(
            s.admit(t, (1, Some(1)), (0, Some(0)), 1),
            Verdict::Drop(DropReason::Cut)
        );
        // a port cut holds for ports outside the matrix too
        s.cut_ports(5, 0);
        assert_eq!(
            s.admit(t, (5, None), (0, Some(0)), 1),
            Verdict::Drop(DropReason::Cut)
        );
        s.heal_all();
        assert!(matches!(
            s.admit(t, (1, Some(1)), (0, Some(0)), 1),
            Verdict::Deliver(_)
        ));
        assert_eq!(s.stats()[&(1, 0)].cut, 1);
    }

    #[test]
    fn a_shorter_delay_keeps_the_pair_in_order() {
        let mut s = two(LinkParams::delay(ms(100)));
        let t = Instant::now();
        let first = at(s.admit(t, (0, Some(0)), (1, Some(1)), 1));
        s.set_link(0, 1, LinkParams::delay(ms(10)));
        let second = at(s.admit(t + ms(1), (0, Some(0)), (1, Some(1)), 1));
        assert_eq!(second, first);
        let later = at(s.admit(t + ms(200), (0, Some(0)), (1, Some(1)), 1));
        assert_eq!(later, t + ms(210));
    }
}
