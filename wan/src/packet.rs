//! The only thing the router reads in a packet: its IP version, source and destination.
//! Everything else (ports, payload, options, extension headers) passes untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses of an IP packet, or `None` for anything too short or of another version
/// (dropped by the router as unroutable).
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 => {
            // a 20-byte header at least; IHL counted in 32-bit words
            if packet.len() < 20 || usize::from(packet[0] & 0x0f) * 4 < 20 {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

/// An address prefix (`10.77.1.0/24`, `fd5c:1:2:1::/64`): what the router sends to a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len`, `len` clamped to the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Prefix {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Prefix {
            addr,
            len: len.min(max),
        }
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_families_and_refuses_the_rest() {
        let mut v4 = vec![0u8; 28];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 77, 1, 2]);
        v4[16..20].copy_from_slice(&[10, 77, 2, 2]);
        assert_eq!(
            addresses(&v4),
            Some(("10.77.1.2".parse().unwrap(), "10.77.2.2".parse().unwrap()))
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[8..24].copy_from_slice(&"fd5c::1".parse::<Ipv6Addr>().unwrap().octets());
        v6[24..40].copy_from_slice(&"fd5c::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            addresses(&v6),
            Some(("fd5c::1".parse().unwrap(), "fd5c::2".parse().unwrap()))
        );
        assert_eq!(addresses(&v6[..39]), None);
        assert_eq!(addresses(&v4[..19]), None);
        assert_eq!(addresses(&[0x44; 40]), None);
        assert_eq!(addresses(&[0x41; 40]), None, "IHL below 5");
        assert_eq!(addresses(&[]), None);
    }

    #[test]
    fn prefixes_match_their_family_and_bits() {
        let p = Prefix::new("10.77.1.0".parse().unwrap(), 24);
        assert!(p.contains("10.77.1.200".parse().unwrap()));
        assert!(!p.contains("10.77.2.2".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let q = Prefix::new("fd5c:1:2:3::".parse().unwrap(), 64);
        assert!(q.contains("fd5c:1:2:3::2".parse().unwrap()));
        assert!(!q.contains("fd5c:1:2:4::2".parse().unwrap()));
        assert!(Prefix::new("::".parse().unwrap(), 0).contains("fe80::1".parse().unwrap()));
        assert_eq!(q.to_string(), "fd5c:1:2:3::/64");
    }
}
