//! The matrix: regions, and the link parameters of every ordered pair of them.

use std::time::Duration;

/// A region's index in its [`Matrix`] (the order of [`Matrix::names`]).
pub type RegionId = usize;

/// What one direction of a link between two regions does to a packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub delay: Duration,
    /// The delay wanders within `delay ± jitter` (a slow walk, not per-packet noise: see
    /// `DESIGN.md`, "Jitter without reordering").
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a packet is dropped.
    pub loss: f64,
    /// Bits per second; `None`: no limit (no serialization delay).
    pub bandwidth_bps: Option<u64>,
}

impl LinkParams {
    /// No delay, no jitter, no loss, no limit: a LAN, and what a region has within itself
    /// unless its matrix says otherwise.
    pub const LAN: LinkParams = LinkParams {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        bandwidth_bps: None,
    };

    /// Only a delay.
    pub fn delay(delay: Duration) -> LinkParams {
        LinkParams { delay, ..Self::LAN }
    }
}

impl Default for LinkParams {
    fn default() -> Self {
        Self::LAN
    }
}

/// Regions and the parameters of each ordered pair (`from`, `to`), `from == to` included
/// (traffic inside a region); the seed of the loss and jitter draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    names: Vec<String>,
    /// `links[from * n + to]`
    links: Vec<LinkParams>,
    seed: u64,
}

impl Matrix {
    /// Regions named `names`, every pair a [`LinkParams::LAN`] until set.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Matrix {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let n = names.len();
        Matrix {
            names,
            links: vec![LinkParams::LAN; n * n],
            seed: 0x5eed_0f5a_1a05,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Option<RegionId> {
        self.names.iter().position(|n| n == name)
    }

    /// The parameters of `from` → `to`. Panics on a region out of range (a caller's bug:
    /// ids come from this matrix).
    pub fn link(&self, from: RegionId, to: RegionId) -> LinkParams {
        self.links[self.index(from, to)]
    }

    /// Set `from` → `to` only (one direction).
    pub fn set_link(&mut self, from: RegionId, to: RegionId, params: LinkParams) {
        let i = self.index(from, to);
        self.links[i] = params;
    }

    /// Set both directions of `a` ↔ `b` to `params`.
    pub fn set_both(&mut self, a: RegionId, b: RegionId, params: LinkParams) {
        self.set_link(a, b, params);
        self.set_link(b, a, params);
    }

    /// The round trip `a` → `b` → `a` without jitter (the sum of the two delays).
    pub fn rtt(&self, a: RegionId, b: RegionId) -> Duration {
        self.link(a, b).delay + self.link(b, a).delay
    }

    /// The largest round trip between two of `regions`, each way's jitter included: what
    /// a group with a member in each of them must allow for.
    pub fn worst_round_trip(&self, regions: &[RegionId]) -> Duration {
        let mut worst = Duration::ZERO;
        for &a in regions {
            for &b in regions {
                let rtt = self.rtt(a, b) + self.link(a, b).jitter + self.link(b, a).jitter;
                worst = worst.max(rtt);
            }
        }
        worst
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The seed of the loss and jitter draws (each link draws from its own generator,
    /// seeded from this and the pair, so a link's draws do not depend on other traffic).
    pub fn with_seed(mut self, seed: u64) -> Matrix {
        self.seed = seed;
        self
    }

    fn index(&self, from: RegionId, to: RegionId) -> usize {
        let n = self.names.len();
        assert!(from < n && to < n, "region out of range");
        from * n + to
    }
}
