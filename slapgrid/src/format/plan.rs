//! Which addresses and ranges each partition gets (network mode), decided before anything
//! is touched: stored values that still fit the node's prefix and pools are kept (and
//! reserved first, so a new partition never takes an address another one owns, even when
//! it is not configured right now, e.g. after a reboot); the rest are derived.
//!
//! Where the reference picks at random (local IPv4, and the fallbacks when a derived IPv6
//! is taken), this is deterministic: the local IPv4 of partition `i` is the `(i+2)`th
//! address of `ipv4_local_network`, or the next free one after it; a taken IPv6 or range
//! moves to the next index's value.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ipcalc::{self, RangeKind};
use super::network::Net;
use super::state::Partition;
use super::FormatError;

/// Most candidates tried for one partition IPv6 address.
const MAX_V6_TRIES: usize = 1 << 16;

pub(crate) struct PlanInput<'a> {
    pub node: Ipv6Addr,
    pub node_len: u8,
    pub shift: u8,
    /// `ipv4_local_network`; `None`: the partitions' addresses are not planned (they come
    /// from a definition file).
    pub v4_pool: Option<(Ipv4Addr, u8)>,
    pub ranges: bool,
    pub tap_ipv6: bool,
    pub net: &'a Net,
    pub ipv6_interface: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetPlan {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// The partition range (network address, length).
    pub range: Option<(Ipv6Addr, u8)>,
    /// The tap address (host bits all 1) and its length.
    pub tap6: Option<(Ipv6Addr, u8)>,
}

#[derive(Default)]
struct Taken {
    v4: HashSet<Ipv4Addr>,
    v6: HashSet<Ipv6Addr>,
    ranges: HashSet<(Ipv6Addr, u8)>,
}

impl Taken {
    fn range(&mut self, addr: Ipv6Addr, len: u8) -> bool {
        self.ranges.insert((ipcalc::network_v6(addr, len), len))
    }
}

fn parse_v4(text: &str) -> Option<Ipv4Addr> {
    text.parse().ok()
}

fn parse_v6(text: &str) -> Option<Ipv6Addr> {
    text.parse().ok()
}

/// A stored range or tap address still inside the node prefix.
fn stored_range(input: &PlanInput, addr: &str, len: Option<u8>) -> Option<(Ipv6Addr, u8)> {
    let addr = parse_v6(addr)?;
    let len = len?;
    (len > input.node_len && len < 128 && ipcalc::contains_v6(input.node, input.node_len, addr))
        .then_some((addr, len))
}

/// What is kept from the stored partitions.
fn keep_stored(input: &PlanInput, stored: &[Partition], taken: &mut Taken) -> Vec<NetPlan> {
    let mut plans = Vec::with_capacity(stored.len());
    for p in stored {
        let mut plan = NetPlan::default();
        if let Some((net, len)) = input.v4_pool {
            plan.v4 = p
                .address_list
                .iter()
                .filter_map(|a| parse_v4(&a.addr))
                .find(|a| ipcalc::contains_v4(net, len, *a))
                .filter(|a| taken.v4.insert(*a));
            plan.v6 = p
                .address_list
                .iter()
                .filter(|a| ipcalc::prefixlen_v6(&a.netmask) == Some(input.node_len))
                .filter_map(|a| parse_v6(&a.addr))
                .find(|a| ipcalc::contains_v6(input.node, input.node_len, *a))
                .filter(|a| taken.v6.insert(*a));
        }
        if input.ranges {
            plan.range = p
                .ipv6_range
                .as_ref()
                .and_then(|r| stored_range(input, &r.addr, Some(r.prefixlen)))
                .map(|(a, len)| (ipcalc::network_v6(a, len), len))
                .filter(|(a, len)| taken.range(*a, *len));
        }
        if input.tap_ipv6 {
            let len = ipcalc::prefixlen_v6(&p.tap.ipv6_netmask);
            plan.tap6 =
                stored_range(input, &p.tap.ipv6_addr, len).filter(|(a, len)| taken.range(*a, *len));
        }
        plans.push(plan);
    }
    plans
}

/// The first free IPv4 of the pool from offset `i + 2` on (wrapping): neither another
/// partition's nor configured on any interface.
fn next_v4(
    input: &PlanInput,
    net: Ipv4Addr,
    len: u8,
    i: usize,
    taken: &mut Taken,
) -> Result<Ipv4Addr, FormatError> {
    let (first, last) = ipcalc::v4_host_offsets(len);
    let count = last - first + 1;
    let start = (i as u64 + 2).max(first) - first;
    for k in 0..count {
        let offset = first + (start + k) % count;
        let Some(addr) = ipcalc::v4_at(net, len, offset) else {
            continue;
        };
        if !taken.v4.contains(&addr) && !input.net.configured(IpAddr::V4(addr)) {
            taken.v4.insert(addr);
            return Ok(addr);
        }
    }
    Err(FormatError::Network(format!(
        "no free address left in ipv4_local_network {net}/{len} for partition {i}"
    )))
}

/// The partition IPv6 of index `i`, or of the next indexes while it is taken (by another
/// partition, the node, or another interface than the IPv6 one).
fn next_v6(input: &PlanInput, i: usize, taken: &mut Taken) -> Result<Ipv6Addr, FormatError> {
    for k in 0..MAX_V6_TRIES {
        let addr = ipcalc::partition_addr(input.node, input.node_len, i + k);
        let elsewhere = input
            .net
            .holders(IpAddr::V6(addr))
            .any(|h| h.ifname != input.ipv6_interface);
        if !elsewhere && taken.v6.insert(addr) {
            return Ok(addr);
        }
    }
    Err(FormatError::Network(format!(
        "no free IPv6 address left in {}/{} for partition {i}",
        input.node, input.node_len
    )))
}

/// The range of `kind` of index `i`, or of the next indexes while it is taken.
fn next_range(
    input: &PlanInput,
    kind: RangeKind,
    i: usize,
    taken: &mut Taken,
) -> Result<(Ipv6Addr, u8), FormatError> {
    let mut j = i;
    loop {
        let (addr, len) = ipcalc::derive_range(input.node, input.node_len, input.shift, kind, j)
            .map_err(|e| FormatError::Network(format!("IPv6 range for partition {i}: {e}")))?;
        if taken.range(addr, len) {
            return Ok((addr, len));
        }
        j += 1;
    }
}

/// The plan of every partition of `partitions` (stored values, or new ones at the end).
pub(crate) fn plan(
    input: &PlanInput,
    partitions: &[Partition],
) -> Result<Vec<NetPlan>, FormatError> {
    let mut taken = Taken::default();
    taken.v6.insert(input.node);
    let mut plans = keep_stored(input, partitions, &mut taken);
    for (i, plan) in plans.iter_mut().enumerate() {
        if let Some((net, len)) = input.v4_pool {
            if plan.v4.is_none() {
                plan.v4 = Some(next_v4(input, net, len, i, &mut taken)?);
            }
            if plan.v6.is_none() {
                plan.v6 = Some(next_v6(input, i, &mut taken)?);
            }
        }
        if input.ranges && plan.range.is_none() {
            plan.range = Some(next_range(input, RangeKind::Partition, i, &mut taken)?);
        }
        if input.tap_ipv6 && plan.tap6.is_none() {
            plan.tap6 = Some(next_range(input, RangeKind::Tap, i, &mut taken)?);
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::network::parse_addresses;
    use crate::format::state::{Address, Ipv6Range, Tap, User};

    fn partition(i: usize, addresses: &[(&str, &str)]) -> Partition {
        Partition {
            reference: format!("slappart{i}"),
            path: String::new(),
            user: User {
                name: format!("slapuser{i}"),
                path: String::new(),
                additional_group_list: Vec::new(),
            },
            address_list: addresses
                .iter()
                .map(|(a, m)| Address {
                    addr: a.to_string(),
                    netmask: m.to_string(),
                })
                .collect(),
            ipv6_range: None,
            tap: Tap::named(&format!("slaptap{i}")),
            tun: serde_json::Value::Null,
            capability_list: None,
        }
    }

    fn input(net: &Net) -> PlanInput<'_> {
        PlanInput {
            node: "2001:db8:aaaa:bbbb::1".parse().unwrap(),
            node_len: 64,
            shift: 16,
            v4_pool: Some(("10.0.0.0".parse().unwrap(), 16)),
            ranges: true,
            tap_ipv6: true,
            net,
            ipv6_interface: "eth0",
        }
    }

    #[test]
    fn new_partitions_get_the_derived_values() {
        let net = Net::default();
        let plans = plan(&input(&net), &[partition(0, &[]), partition(1, &[])]).unwrap();
        assert_eq!(plans[0].v4, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(plans[1].v4, Some("10.0.0.3".parse().unwrap()));
        assert_eq!(plans[0].v6, Some("2001:db8:aaaa:bbbb::2".parse().unwrap()));
        assert_eq!(plans[1].v6, Some("2001:db8:aaaa:bbbb::3".parse().unwrap()));
        assert_eq!(
            plans[1].range,
            Some(("2001:db8:aaaa:bbbb:4002::".parse().unwrap(), 80))
        );
        assert_eq!(
            plans[1].tap6,
            Some((
                "2001:db8:aaaa:bbbb:8002:ffff:ffff:ffff".parse().unwrap(),
                80
            ))
        );
    }

    #[test]
    fn stored_values_are_kept_and_reserved_and_busy_ones_skipped() {
        let net = Net {
            addrs: parse_addresses(
                "4: eth0    inet 10.0.0.3/32 scope global eth0\\       valid_lft forever\n\
                 5: eth1    inet6 2001:db8:aaaa:bbbb::4/64 scope global \\       valid_lft forever\n",
            ),
            ..Net::default()
        };
        let mut p0 = partition(0, &[]);
        let mut p1 = partition(
            1,
            &[
                ("10.0.0.2", "255.255.255.255"),
                ("2001:db8:aaaa:bbbb::2", "ffff:ffff:ffff:ffff::"),
            ],
        );
        p1.ipv6_range = Some(Ipv6Range::new("2001:db8:aaaa:bbbb:4001::", 80));
        p0.tap.ipv6_addr = "2001:db8:ffff::1".into(); // another prefix: derived again
        p0.tap.ipv6_netmask = "ffff:ffff:ffff:ffff:ffff::".into();
        let plans = plan(&input(&net), &[p0, p1, partition(2, &[])]).unwrap();
        // p1 keeps its stored values; p0 may not take them.
        assert_eq!(plans[1].v4, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(plans[1].v6, Some("2001:db8:aaaa:bbbb::2".parse().unwrap()));
        assert_eq!(
            plans[1].range,
            Some(("2001:db8:aaaa:bbbb:4001::".parse().unwrap(), 80))
        );
        // p0: 10.0.0.2 is p1's, 10.0.0.3 is configured: 10.0.0.4. ::2 is p1's: ::3.
        assert_eq!(plans[0].v4, Some("10.0.0.4".parse().unwrap()));
        assert_eq!(plans[0].v6, Some("2001:db8:aaaa:bbbb::3".parse().unwrap()));
        assert_eq!(
            plans[0].range,
            Some(("2001:db8:aaaa:bbbb:4002::".parse().unwrap(), 80))
        );
        assert_eq!(
            plans[0].tap6,
            Some((
                "2001:db8:aaaa:bbbb:8001:ffff:ffff:ffff".parse().unwrap(),
                80
            ))
        );
        // p2: ::4 is on another interface, ::5 is free.
        assert_eq!(plans[2].v4, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(plans[2].v6, Some("2001:db8:aaaa:bbbb::5".parse().unwrap()));
        assert_eq!(
            plans[2].range,
            Some(("2001:db8:aaaa:bbbb:4003::".parse().unwrap(), 80))
        );
    }

    #[test]
    fn the_node_address_is_never_a_partition_address() {
        let net = Net::default();
        let mut i = input(&net);
        i.node = "2001:db8:aaaa:bbbb::2".parse().unwrap();
        let plans = plan(&i, &[partition(0, &[])]).unwrap();
        assert_eq!(plans[0].v6, Some("2001:db8:aaaa:bbbb::3".parse().unwrap()));
    }

    #[test]
    fn an_exhausted_pool_is_an_error() {
        let net = Net::default();
        let mut i = input(&net);
        i.v4_pool = Some(("10.0.0.0".parse().unwrap(), 31));
        let parts: Vec<_> = (0..3).map(|n| partition(n, &[])).collect();
        let err = plan(&i, &parts).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/31"), "{err}");
    }
}
