//! Pure address arithmetic: the deterministic IPv6 derivation of slapgrid-behaviour.md 1.6
//! (what `slapos.util.getPartitionIpv6Addr`, `getPartitionIpv6Range`, `getTapIpv6Range`,
//! `getTunIpv6Range` and `getIpv6RangeFirstAddr` compute), mask strings, and the IPv4 pool
//! of `ipv4_local_network`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The bits of a /`len` IPv6 mask (`len` is clamped to 128).
pub fn mask_v6(len: u8) -> u128 {
    match len.min(128) {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l)),
    }
}

/// The expanded mask string the reference stores: `ffff:ffff:ffff:ffff::` for 64.
pub fn mask_string_v6(len: u8) -> String {
    Ipv6Addr::from(mask_v6(len)).to_string()
}

/// The prefix length of a stored IPv6 netmask: `ffff:ffff::`, the netifaces form
/// `ffff::/16`, or a bare number. `None` when the mask is not contiguous.
pub fn prefixlen_v6(mask: &str) -> Option<u8> {
    let mask = mask.trim();
    if let Some((_, len)) = mask.split_once('/') {
        return len.trim().parse::<u8>().ok().filter(|n| *n <= 128);
    }
    if let Ok(n) = mask.parse::<u8>() {
        return (n <= 128).then_some(n);
    }
    let bits = u128::from(mask.parse::<Ipv6Addr>().ok()?);
    let ones = bits.leading_ones() as u8;
    (bits == mask_v6(ones)).then_some(ones)
}

/// The bits of a /`len` IPv4 mask (`len` is clamped to 32).
pub fn mask_v4(len: u8) -> u32 {
    match len.min(32) {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l)),
    }
}

/// `255.255.255.0` for 24.
pub fn mask_string_v4(len: u8) -> String {
    Ipv4Addr::from(mask_v4(len)).to_string()
}

/// The prefix length of a dotted IPv4 mask or a bare number.
pub fn prefixlen_v4(mask: &str) -> Option<u8> {
    let mask = mask.trim();
    if let Ok(n) = mask.parse::<u8>() {
        return (n <= 32).then_some(n);
    }
    let bits = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    let ones = bits.leading_ones() as u8;
    (bits == mask_v4(ones)).then_some(ones)
}

/// The network address of `addr`/`len`.
pub fn network_v6(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & mask_v6(len))
}

/// Whether `addr` lies in `net`/`len`.
pub fn contains_v6(net: Ipv6Addr, len: u8, addr: Ipv6Addr) -> bool {
    network_v6(net, len) == network_v6(addr, len)
}

/// The partition address: the first `len` bits of the node address, then `index + 2`
/// (`::1` is left to re6st); when that does not fit, wrap around skipping 0 and 1.
pub fn partition_addr(node: Ipv6Addr, len: u8, index: usize) -> Ipv6Addr {
    let len = len.min(128);
    let rem = 128 - u32::from(len);
    let prefix = u128::from(node) & mask_v6(len);
    let wanted = index as u128 + 2;
    let suffix = if rem >= 128 || wanted < (1u128 << rem) {
        wanted
    } else if rem >= 2 {
        (index as u128 % ((1u128 << rem) - 2)) + 2
    } else {
        wanted & ((1u128 << rem) - 1)
    };
    Ipv6Addr::from(prefix | suffix)
}

/// Which sub-range of the node prefix (the `k` of 1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    /// k = 1, host bits 0: the partition's routed range.
    Partition,
    /// k = 2, host bits 1: the tap's address.
    Tap,
    /// k = 3, host bits 0 (kept for completeness: tun devices are not created).
    #[allow(dead_code)]
    Tun,
}

/// The range of partition `index`: the first `len` bits of the node address, an
/// `shift`-bit field `(k << (shift - 2)) + index + 1`, then the host bits (all 1 for a
/// tap, else 0); prefix length `len + shift`, which must stay below 128.
pub fn derive_range(
    node: Ipv6Addr,
    len: u8,
    shift: u8,
    kind: RangeKind,
    index: usize,
) -> Result<(Ipv6Addr, u8), String> {
    let (l, s) = (u32::from(len), u32::from(shift));
    if s < 2 {
        return Err(format!(
            "ipv6_prefixshift {shift} is too small (at least 2)"
        ));
    }
    if l + s >= 128 {
        return Err(format!(
            "prefix length {len} + ipv6_prefixshift {shift} leaves no room for IPv6 ranges"
        ));
    }
    let k: u128 = match kind {
        RangeKind::Partition => 1,
        RangeKind::Tap => 2,
        RangeKind::Tun => 3,
    };
    let field = (k << (s - 2)) + index as u128 + 1;
    if field >> s != 0 {
        return Err(format!(
            "partition index {index} does not fit in ipv6_prefixshift {shift} \
             (2^shift must be at least 4 times the partition amount)"
        ));
    }
    let host_bits = 128 - l - s;
    let mut bits = (u128::from(node) & mask_v6(len)) | (field << host_bits);
    if kind == RangeKind::Tap {
        bits |= (1u128 << host_bits) - 1;
    }
    Ok((Ipv6Addr::from(bits), (l + s) as u8))
}

/// The first address (`…::1`) of the range containing `addr`/`len`.
pub fn range_first_addr(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    Ipv6Addr::from((u128::from(addr) & mask_v6(len)) | 1)
}

/// `10.0.0.0/16` (host bits are cleared): the network and its prefix length.
pub fn parse_v4_network(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: Ipv4Addr = addr.trim().parse().ok()?;
    let len = prefixlen_v4(len)?;
    Some((Ipv4Addr::from(u32::from(addr) & mask_v4(len)), len))
}

/// The usable host offsets of a /`len` IPv4 network: `first..=last` (network and
/// broadcast excluded, except for /31 and /32 which have none to spare).
pub fn v4_host_offsets(len: u8) -> (u64, u64) {
    let size = 1u64 << (32 - u32::from(len.min(32)));
    if size <= 2 {
        (0, size - 1)
    } else {
        (1, size - 2)
    }
}

/// The address at `offset` inside `net`/`len`, if the offset is inside the network.
pub fn v4_at(net: Ipv4Addr, len: u8, offset: u64) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(len.min(32)));
    if offset >= size {
        return None;
    }
    let base = u64::from(u32::from(net) & mask_v4(len));
    u32::try_from(base + offset).ok().map(Ipv4Addr::from)
}

/// Whether `addr` lies in `net`/`len`.
pub fn contains_v4(net: Ipv4Addr, len: u8, addr: Ipv4Addr) -> bool {
    u32::from(net) & mask_v4(len) == u32::from(addr) & mask_v4(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const NODE: &str = "2001:db8:aaaa:bbbb::1";

    #[test]
    fn partition_addresses_of_the_reference_examples() {
        assert_eq!(partition_addr(a(NODE), 64, 0), a("2001:db8:aaaa:bbbb::2"));
        assert_eq!(partition_addr(a(NODE), 64, 1), a("2001:db8:aaaa:bbbb::3"));
        assert_eq!(partition_addr(a(NODE), 64, 9), a("2001:db8:aaaa:bbbb::b"));
        assert_eq!(
            partition_addr(a("2001:db8:77::"), 48, 0),
            a("2001:db8:77::2")
        );
    }

    #[test]
    fn partition_addresses_wrap_around_skipping_0_and_1() {
        // /126: 2 usable suffixes (2, 3).
        let node = a("2001:db8::1");
        assert_eq!(partition_addr(node, 126, 0), a("2001:db8::2"));
        assert_eq!(partition_addr(node, 126, 1), a("2001:db8::3"));
        assert_eq!(partition_addr(node, 126, 2), a("2001:db8::2"));
        assert_eq!(partition_addr(node, 128, 0), node);
    }

    #[test]
    fn ranges_of_the_reference_examples() {
        let node = a(NODE);
        let r = |kind, i| derive_range(node, 64, 16, kind, i).unwrap();
        assert_eq!(
            r(RangeKind::Partition, 0),
            (a("2001:db8:aaaa:bbbb:4001::"), 80)
        );
        assert_eq!(
            r(RangeKind::Tap, 0),
            (a("2001:db8:aaaa:bbbb:8001:ffff:ffff:ffff"), 80)
        );
        assert_eq!(r(RangeKind::Tun, 0), (a("2001:db8:aaaa:bbbb:c001::"), 80));
        assert_eq!(
            r(RangeKind::Partition, 1),
            (a("2001:db8:aaaa:bbbb:4002::"), 80)
        );
        assert_eq!(
            r(RangeKind::Tap, 1),
            (a("2001:db8:aaaa:bbbb:8002:ffff:ffff:ffff"), 80)
        );
        assert_eq!(
            r(RangeKind::Partition, 9),
            (a("2001:db8:aaaa:bbbb:400a::"), 80)
        );
        let (tap, len) = r(RangeKind::Tap, 0);
        assert_eq!(range_first_addr(tap, len), a("2001:db8:aaaa:bbbb:8001::1"));
        let (tun, len) = r(RangeKind::Tun, 0);
        assert_eq!(range_first_addr(tun, len), a("2001:db8:aaaa:bbbb:c001::1"));
    }

    #[test]
    fn ranges_with_a_48_prefix() {
        let node = a("2001:db8:77::");
        assert_eq!(
            derive_range(node, 48, 16, RangeKind::Partition, 0).unwrap(),
            (a("2001:db8:77:4001::"), 64)
        );
        assert_eq!(
            derive_range(node, 48, 16, RangeKind::Tap, 0).unwrap(),
            (a("2001:db8:77:8001:ffff:ffff:ffff:ffff"), 64)
        );
    }

    #[test]
    fn ranges_refuse_what_does_not_fit() {
        let node = a(NODE);
        assert!(derive_range(node, 120, 16, RangeKind::Partition, 0).is_err());
        assert!(derive_range(node, 64, 4, RangeKind::Partition, 3).is_ok());
        assert!(derive_range(node, 64, 4, RangeKind::Partition, 4).is_ok());
        assert!(derive_range(node, 64, 4, RangeKind::Tap, 8).is_err());
        assert!(derive_range(node, 64, 1, RangeKind::Partition, 0).is_err());
    }

    #[test]
    fn mask_strings() {
        assert_eq!(mask_string_v6(64), "ffff:ffff:ffff:ffff::");
        assert_eq!(mask_string_v6(80), "ffff:ffff:ffff:ffff:ffff::");
        assert_eq!(mask_string_v6(48), "ffff:ffff:ffff::");
        assert_eq!(
            mask_string_v6(128),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(mask_string_v6(0), "::");
        assert_eq!(mask_string_v4(32), "255.255.255.255");
        assert_eq!(mask_string_v4(24), "255.255.255.0");
        assert_eq!(prefixlen_v6("ffff:ffff:ffff:ffff::"), Some(64));
        assert_eq!(prefixlen_v6("ffff::/16"), Some(16));
        assert_eq!(prefixlen_v6("ffff:0:ffff::"), None);
        assert_eq!(prefixlen_v6("80"), Some(80));
        assert_eq!(prefixlen_v4("255.255.255.255"), Some(32));
        assert_eq!(prefixlen_v4("255.0.255.0"), None);
        for len in 0..=128u8 {
            assert_eq!(prefixlen_v6(&mask_string_v6(len)), Some(len));
        }
    }

    #[test]
    fn ipv4_pool() {
        let (net, len) = parse_v4_network("10.0.3.7/16").unwrap();
        assert_eq!((net, len), ("10.0.0.0".parse().unwrap(), 16));
        assert_eq!(v4_host_offsets(16), (1, 65534));
        assert_eq!(v4_host_offsets(32), (0, 0));
        assert_eq!(v4_at(net, len, 2), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(v4_at(net, len, 256), Some("10.0.1.0".parse().unwrap()));
        assert_eq!(v4_at(net, len, 65536), None);
        assert!(contains_v4(net, len, "10.0.200.1".parse().unwrap()));
        assert!(!contains_v4(net, len, "10.1.0.1".parse().unwrap()));
        assert!(parse_v4_network("10.0.0.0").is_none());
    }
}
