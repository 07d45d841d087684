//! The network side of format (slapgrid-behaviour.md 1.5) through `ip` (iproute2):
//! reading addresses and routes once, then adding only what is missing.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use super::host::Host;
use super::ipcalc;
use super::FormatError;

/// One line of `ip -o addr show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfAddr {
    pub ifname: String,
    pub addr: IpAddr,
    pub prefixlen: u8,
    pub scope: String,
    /// `tentative`, `dadfailed`, `noprefixroute`, `deprecated`, ...
    pub flags: Vec<String>,
}

/// Words of an address line that are followed by a value (not flags).
const VALUED: &[&str] = &[
    "brd",
    "scope",
    "peer",
    "metric",
    "valid_lft",
    "preferred_lft",
    "proto",
];

/// Parses `ip -o addr show` (one address per line).
pub(crate) fn parse_addresses(text: &str) -> Vec<IfAddr> {
    text.lines().filter_map(parse_address_line).collect()
}

fn parse_address_line(line: &str) -> Option<IfAddr> {
    // `4: eth0    inet6 fd00::2/64 scope global nodad \       valid_lft forever ...`
    let mut words = line.split_whitespace().filter(|w| *w != "\\");
    let _index = words.next()?.strip_suffix(':')?;
    let ifname = words.next()?.split('@').next()?.to_owned();
    let family = words.next()?;
    if family != "inet" && family != "inet6" {
        return None;
    }
    let (addr, len) = words.next()?.split_once('/')?;
    let addr: IpAddr = addr.split('%').next()?.parse().ok()?;
    let prefixlen: u8 = len.parse().ok()?;
    let mut scope = String::new();
    let mut flags = Vec::new();
    let rest: Vec<&str> = words.collect();
    let mut i = 0;
    while i < rest.len() {
        let w = rest[i];
        if VALUED.contains(&w) {
            if w == "scope" {
                scope = rest.get(i + 1).copied().unwrap_or_default().to_owned();
            }
            i += 2;
            continue;
        }
        // The trailing label (e.g. `eth0` or `eth0:1` for IPv4) repeats the name.
        let w = w.trim_end_matches('\\');
        let label = w == ifname
            || w.strip_prefix(ifname.as_str())
                .is_some_and(|r| r.starts_with(':'));
        if !label && !w.is_empty() {
            flags.push(w.to_owned());
        }
        i += 1;
    }
    Some(IfAddr {
        ifname,
        addr,
        prefixlen,
        scope,
        flags,
    })
}

/// One route of `ip route show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// `unicast` unless the line starts with another type (`local`, `multicast`, ...).
    pub kind: String,
    /// The destination network (host bits cleared) and its length.
    pub dest: IpAddr,
    pub prefixlen: u8,
    pub dev: Option<String>,
    pub via: Option<IpAddr>,
}

const ROUTE_TYPES: &[&str] = &[
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "unreachable",
    "blackhole",
    "prohibit",
    "throw",
    "nat",
];

/// Parses `ip [-6] route show [table T]`.
pub(crate) fn parse_routes(text: &str, v6: bool) -> Vec<Route> {
    text.lines()
        .filter_map(|line| parse_route_line(line, v6))
        .collect()
}

fn parse_route_line(line: &str, v6: bool) -> Option<Route> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut i = 0;
    let mut kind = "unicast".to_owned();
    if ROUTE_TYPES.contains(words.first()?) {
        kind = words[0].to_owned();
        i = 1;
    }
    let (dest, prefixlen) = parse_prefix(words.get(i)?, v6)?;
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|p| words.get(p + 1))
            .copied()
    };
    Some(Route {
        kind,
        dest,
        prefixlen,
        dev: after("dev").map(str::to_owned),
        via: after("via").and_then(|v| v.parse().ok()),
    })
}

/// `default`, `addr` or `addr/len` as a network (host bits cleared).
pub(crate) fn parse_prefix(text: &str, v6: bool) -> Option<(IpAddr, u8)> {
    let full = if v6 { 128 } else { 32 };
    if text == "default" {
        let any: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        return Some((any, 0));
    }
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (text, full),
    };
    let addr: IpAddr = addr.parse().ok()?;
    Some((mask(addr, len), len))
}

/// `addr` with the bits past `len` cleared.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V6(a) => ipcalc::network_v6(a, len).into(),
        IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) & ipcalc::mask_v4(len)).into(),
    }
}

/// What `ip` reported at the start of the run, updated as format adds things.
#[derive(Debug, Clone, Default)]
pub(crate) struct Net {
    pub addrs: Vec<IfAddr>,
    /// IPv6 table `local`.
    pub local6: Vec<Route>,
    /// IPv6 table `main`.
    pub main6: Vec<Route>,
    /// IPv4 table `main`.
    pub main4: Vec<Route>,
}

impl Net {
    pub fn read(host: &Host) -> Result<Net, FormatError> {
        Ok(Net {
            addrs: parse_addresses(&host.query("ip", &["-o", "addr", "show"])?),
            local6: parse_routes(
                &host.query("ip", &["-6", "route", "show", "table", "local"])?,
                true,
            ),
            main6: parse_routes(
                &host.query("ip", &["-6", "route", "show", "table", "main"])?,
                true,
            ),
            main4: parse_routes(
                &host.query("ip", &["-4", "route", "show", "table", "main"])?,
                false,
            ),
        })
    }

    /// The interfaces carrying `addr`.
    pub fn holders(&self, addr: IpAddr) -> impl Iterator<Item = &IfAddr> {
        self.addrs.iter().filter(move |a| a.addr == addr)
    }

    /// Whether any interface carries `addr`.
    pub fn configured(&self, addr: IpAddr) -> bool {
        self.holders(addr).next().is_some()
    }

    /// Makes sure `addr/len` is on `dev`: nothing when it is; refused when another
    /// interface has it or when the kernel marked it a duplicate; else `ip addr add`.
    pub fn ensure_address(
        &mut self,
        host: &mut Host,
        addr: IpAddr,
        len: u8,
        dev: &str,
        extra: &[&str],
    ) -> Result<(), FormatError> {
        if let Some(other) = self.holders(addr).find(|a| a.ifname != dev) {
            return Err(FormatError::AddressConflict {
                addr: addr.to_string(),
                wanted: dev.to_owned(),
                found: other.ifname.clone(),
            });
        }
        if let Some(here) = self.holders(addr).find(|a| a.ifname == dev) {
            if here.flags.iter().any(|f| f == "dadfailed") {
                return Err(FormatError::Network(format!(
                    "{addr} on {dev} failed duplicate address detection: another host uses it"
                )));
            }
            return Ok(());
        }
        let cidr = format!("{addr}/{len}");
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
        args.extend_from_slice(extra);
        host.change("ip", &args)?;
        self.addrs.push(IfAddr {
            ifname: dev.to_owned(),
            addr,
            prefixlen: len,
            scope: "global".into(),
            flags: Vec::new(),
        });
        Ok(())
    }

    /// `ip -6 route add local <net>/<len> dev lo` unless the local table has it.
    pub fn ensure_local_route(
        &mut self,
        host: &mut Host,
        net: Ipv6Addr,
        len: u8,
    ) -> Result<(), FormatError> {
        let dest = IpAddr::V6(ipcalc::network_v6(net, len));
        let present = self.local6.iter().any(|r| {
            r.kind == "local"
                && r.dest == dest
                && r.prefixlen == len
                && r.dev.as_deref() == Some("lo")
        });
        if present {
            return Ok(());
        }
        host.change(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "local",
                &format!("{dest}/{len}"),
                "dev",
                "lo",
            ],
        )?;
        self.local6.push(Route {
            kind: "local".into(),
            dest,
            prefixlen: len,
            dev: Some("lo".into()),
            via: None,
        });
        Ok(())
    }

    /// A route to `dest/len` on `dev` (through `via` when given), replacing one on `dev`
    /// without the right gateway.
    pub fn ensure_route(
        &mut self,
        host: &mut Host,
        dest: IpAddr,
        len: u8,
        dev: &str,
        via: Option<IpAddr>,
    ) -> Result<(), FormatError> {
        let v6 = dest.is_ipv6();
        let dest = mask(dest, len);
        let table = if v6 { &mut self.main6 } else { &mut self.main4 };
        let on_dev =
            |r: &&Route| r.dest == dest && r.prefixlen == len && r.dev.as_deref() == Some(dev);
        if table
            .iter()
            .filter(on_dev)
            .any(|r| via.is_none() || r.via == via)
        {
            return Ok(());
        }
        let family = if v6 { "-6" } else { "-4" };
        let cidr = format!("{dest}/{len}");
        if table.iter().any(|r| on_dev(&r)) {
            host.change("ip", &[family, "route", "del", &cidr, "dev", dev])?;
            table.retain(|r| !on_dev(&r));
        }
        let gateway = via.map(|g| g.to_string());
        let mut args = vec![family, "route", "add", cidr.as_str(), "dev", dev];
        if let Some(g) = &gateway {
            args.extend(["via", g.as_str()]);
        }
        host.change("ip", &args)?;
        table.push(Route {
            kind: "unicast".into(),
            dest,
            prefixlen: len,
            dev: Some(dev.to_owned()),
            via,
        });
        Ok(())
    }

    /// Removes `addr` from `dev` if it is there (for unformat).
    pub fn remove_address(
        &mut self,
        host: &mut Host,
        addr: IpAddr,
        dev: &str,
    ) -> Result<(), FormatError> {
        let Some(here) = self.holders(addr).find(|a| a.ifname == dev).cloned() else {
            return Ok(());
        };
        host.change(
            "ip",
            &[
                "addr",
                "del",
                &format!("{addr}/{}", here.prefixlen),
                "dev",
                dev,
            ],
        )?;
        self.addrs.retain(|a| !(a.addr == addr && a.ifname == dev));
        Ok(())
    }

    /// Removes the `local <net>/<len> dev lo` route if present (for unformat).
    pub fn remove_local_route(
        &mut self,
        host: &mut Host,
        net: Ipv6Addr,
        len: u8,
    ) -> Result<(), FormatError> {
        let dest = IpAddr::V6(ipcalc::network_v6(net, len));
        let present = |r: &Route| {
            r.kind == "local"
                && r.dest == dest
                && r.prefixlen == len
                && r.dev.as_deref() == Some("lo")
        };
        if !self.local6.iter().any(present) {
            return Ok(());
        }
        host.change(
            "ip",
            &[
                "-6",
                "route",
                "del",
                "local",
                &format!("{dest}/{len}"),
                "dev",
                "lo",
            ],
        )?;
        self.local6.retain(|r| !present(r));
        Ok(())
    }
}

/// Whether the network device `name` exists.
pub(crate) fn device_exists(name: &str) -> bool {
    !name.is_empty() && Path::new("/sys/class/net").join(name).exists()
}

/// Creates the tap `name` owned by `owner` (a user name) and brings it up, unless a device
/// of that name exists (then only warns when its owner differs from `owner_uid`).
pub(crate) fn ensure_tap(
    host: &mut Host,
    name: &str,
    owner: &str,
    owner_uid: Option<u32>,
) -> Result<(), FormatError> {
    if device_exists(name) {
        let current = std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("owner"))
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok());
        if let (Some(current), Some(wanted)) = (current, owner_uid) {
            if current != i64::from(wanted) {
                tracing::warn!(
                    "tap {name} belongs to uid {current}, not {wanted} ({owner}): leaving it"
                );
            }
        }
        return Ok(());
    }
    host.change(
        "ip",
        &["tuntap", "add", "dev", name, "mode", "tap", "user", owner],
    )?;
    host.change("ip", &["link", "set", name, "up"])
}

/// Makes the tap a port of `bridge` (`ip link set <tap> master <bridge>`) unless it is
/// one; the bridge must exist (format makes taps, not bridges).
pub(crate) fn ensure_bridged(host: &mut Host, tap: &str, bridge: &str) -> Result<(), FormatError> {
    if !Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .is_dir()
    {
        return Err(FormatError::Network(format!(
            "tap_bridge {bridge} is not a bridge of this host"
        )));
    }
    let master = std::fs::read_link(Path::new("/sys/class/net").join(tap).join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if master.as_deref() == Some(bridge) {
        return Ok(());
    }
    host.change("ip", &["link", "set", "dev", tap, "master", bridge])
}

/// Picks the node address among the global IPv6 addresses of `dev`: the stored one if
/// still there; else, ignoring the partitions' own addresses, the lowest address of a
/// network containing the stored one; else the one with the shortest prefix (ties: the
/// lowest address).
pub(crate) fn pick_node_address(
    addrs: &[IfAddr],
    dev: &str,
    stored: Option<Ipv6Addr>,
    partition_addrs: &[Ipv6Addr],
) -> Option<(Ipv6Addr, u8)> {
    let candidates: Vec<(Ipv6Addr, u8)> = addrs
        .iter()
        .filter(|a| a.ifname == dev && a.scope == "global")
        .filter(|a| !a.flags.iter().any(|f| f == "dadfailed"))
        .filter_map(|a| match a.addr {
            IpAddr::V6(v6) => Some((v6, a.prefixlen)),
            IpAddr::V4(_) => None,
        })
        .collect();
    if let Some(stored) = stored {
        if let Some(found) = candidates.iter().find(|(a, _)| *a == stored) {
            return Some(*found);
        }
    }
    let own: Vec<(Ipv6Addr, u8)> = candidates
        .iter()
        .copied()
        .filter(|(a, _)| !partition_addrs.contains(a))
        .collect();
    let pool = if own.is_empty() { &candidates } else { &own };
    if let Some(stored) = stored {
        let containing = pool
            .iter()
            .filter(|(a, len)| ipcalc::contains_v6(*a, *len, stored))
            .min_by_key(|(a, _)| u128::from(*a));
        if containing.is_some() {
            return containing.copied();
        }
    }
    pool.iter()
        .min_by_key(|(a, len)| (*len, u128::from(*a)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRS: &str = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever
4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever
4: eth0    inet 10.0.0.2/32 scope global eth0\\       valid_lft forever preferred_lft forever
4: eth0    inet6 2001:db8:aaaa:bbbb::2/64 scope global \\       valid_lft forever preferred_lft forever
4: eth0    inet6 2001:db8:aaaa:bbbb::100/64 scope global nodad \\       valid_lft forever preferred_lft forever
4: eth0    inet6 2001:db8:cc::1/48 scope global dadfailed tentative \\       valid_lft forever preferred_lft forever
4: eth0    inet6 fe80::fc:ff:fe00:1/64 scope link \\       valid_lft forever preferred_lft forever
7: slaptap0    inet6 2001:db8:aaaa:bbbb:8001:ffff:ffff:ffff/80 scope global noprefixroute \\       valid_lft forever preferred_lft forever
9: veth1@if8    inet 172.17.0.1/16 brd 172.17.255.255 scope global veth1\\       valid_lft forever preferred_lft forever";

    #[test]
    fn parses_ip_o_addr() {
        let addrs = parse_addresses(ADDRS);
        assert_eq!(addrs.len(), 10);
        assert_eq!(
            addrs[5].addr,
            "2001:db8:aaaa:bbbb::100".parse::<IpAddr>().unwrap()
        );
        assert_eq!(addrs[5].flags, vec!["nodad".to_string()]);
        assert_eq!(addrs[2].flags, Vec::<String>::new());
        assert_eq!(
            addrs[6].flags,
            vec!["dadfailed".to_string(), "tentative".to_string()]
        );
        assert_eq!(addrs[7].scope, "link");
        assert_eq!(addrs[8].ifname, "slaptap0");
        assert_eq!(addrs[8].prefixlen, 80);
        assert_eq!(addrs[9].ifname, "veth1");
    }

    #[test]
    fn node_address_selection() {
        let addrs = parse_addresses(ADDRS);
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        // Nothing stored: shortest prefix among usable ones (the dadfailed /48 is out).
        assert_eq!(
            pick_node_address(&addrs, "eth0", None, &[]),
            Some((a("2001:db8:aaaa:bbbb::2"), 64))
        );
        // The stored address is kept while present.
        assert_eq!(
            pick_node_address(
                &addrs,
                "eth0",
                Some(a("2001:db8:aaaa:bbbb::100")),
                &[a("2001:db8:aaaa:bbbb::2")]
            ),
            Some((a("2001:db8:aaaa:bbbb::100"), 64))
        );
        // Gone: the lowest in its network that is not a partition's.
        assert_eq!(
            pick_node_address(
                &addrs,
                "eth0",
                Some(a("2001:db8:aaaa:bbbb::1")),
                &[a("2001:db8:aaaa:bbbb::2")]
            ),
            Some((a("2001:db8:aaaa:bbbb::100"), 64))
        );
        assert_eq!(pick_node_address(&addrs, "lo", None, &[]), None);
    }

    #[test]
    fn parses_routes() {
        let local = "local ::1 dev lo proto kernel metric 0 pref medium\n\
            local 2001:db8:aaaa:bbbb:4001::/80 dev lo metric 1024 pref medium\n\
            multicast ff00::/8 dev eth0 proto kernel metric 256 pref medium\n";
        let routes = parse_routes(local, true);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[1].kind, "local");
        assert_eq!(
            routes[1].dest,
            "2001:db8:aaaa:bbbb:4001::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(routes[1].prefixlen, 80);
        assert_eq!(routes[1].dev.as_deref(), Some("lo"));
        let main = "2001:db8:aaaa:bbbb:8001::1 dev slaptap0 metric 1024 linkdown pref medium\n\
            2001:db8:aaaa:bbbb:8001::/80 via 2001:db8:aaaa:bbbb:8001::1 dev slaptap0 metric 1024 pref medium\n\
            default via fd00::1 dev eth0 metric 1024 pref medium\n";
        let routes = parse_routes(main, true);
        assert_eq!(routes[0].prefixlen, 128);
        assert_eq!(
            routes[1].via,
            Some("2001:db8:aaaa:bbbb:8001::1".parse().unwrap())
        );
        assert_eq!(routes[2].prefixlen, 0);
        assert_eq!(
            parse_prefix("10.0.0.7/24", false),
            Some(("10.0.0.0".parse().unwrap(), 24))
        );
    }

    #[test]
    fn present_things_are_not_added_again_and_conflicts_refused() {
        let mut net = Net {
            addrs: parse_addresses(ADDRS),
            local6: parse_routes(
                "local 2001:db8:aaaa:bbbb:4001::/80 dev lo metric 1024\n",
                true,
            ),
            ..Net::default()
        };
        let mut host = Host::new(true);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        net.ensure_address(&mut host, v6("2001:db8:aaaa:bbbb::2"), 64, "eth0", &[])
            .unwrap();
        net.ensure_address(&mut host, v6("10.0.0.2"), 32, "eth0", &[])
            .unwrap();
        net.ensure_local_route(&mut host, "2001:db8:aaaa:bbbb:4001::".parse().unwrap(), 80)
            .unwrap();
        assert!(!host.changed());
        let err = net
            .ensure_address(&mut host, v6("2001:db8:aaaa:bbbb::2"), 64, "eth1", &[])
            .unwrap_err();
        assert!(err.to_string().contains("eth0"), "{err}");
        assert!(net
            .ensure_address(&mut host, v6("2001:db8:cc::1"), 48, "eth0", &[])
            .is_err());
        net.ensure_address(&mut host, v6("2001:db8:aaaa:bbbb::3"), 64, "eth0", &[])
            .unwrap();
        assert!(host.changed());
        assert!(net.configured(v6("2001:db8:aaaa:bbbb::3")));
    }
}
