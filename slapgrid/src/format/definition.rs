//! Definition files (slapgrid-behaviour.md 1.8): `input_definition_file` fixes every
//! partition's addresses, user, tap and name; `output_definition_file` writes the same
//! layout back from the computer.

use std::path::Path;

use crate::ini::Ini;

use super::state::{Address, Computer, Ipv6Range};
use super::FormatError;

/// One `[partition_<i>]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DefinedPartition {
    pub pathname: String,
    pub user: String,
    /// `network_interface` (the tap name; may be empty).
    pub tap: String,
    pub address_list: Vec<Address>,
    pub ipv6_range: Option<Ipv6Range>,
    pub capability_list: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Definition {
    /// `[computer] address = <addr>/<netmask>`.
    pub address: Option<Address>,
    pub software_user: Option<String>,
    pub partitions: Vec<DefinedPartition>,
}

/// Reads `path`, which must have a section for each of the `amount` partitions.
pub(crate) fn read(path: &Path, amount: usize) -> Result<Definition, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|source| FormatError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    parse(&text, amount).map_err(|message| FormatError::Definition {
        path: path.to_owned(),
        message,
    })
}

/// `addr/netmask`.
fn address(text: &str) -> Result<Address, String> {
    let (addr, netmask) = text
        .split_once('/')
        .ok_or_else(|| format!("address {text:?} is not <address>/<netmask>"))?;
    Ok(Address {
        addr: addr.to_owned(),
        netmask: netmask.to_owned(),
    })
}

pub(crate) fn parse(text: &str, amount: usize) -> Result<Definition, String> {
    let ini = Ini::parse(text).map_err(|e| e.to_string())?;
    let get = |section: &str, key: &str| ini.get(section, key).map_err(|e| e.to_string());
    let required = |section: &str, key: &str| {
        get(section, key)?.ok_or_else(|| format!("[{section}] has no {key}"))
    };
    let address_of_computer = get("computer", "address")?
        .map(|a| address(a.trim()))
        .transpose()?;
    let software_user = get("computer", "software_user")?
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let mut partitions = Vec::with_capacity(amount);
    for i in 0..amount {
        let section = format!("partition_{i}");
        if !ini.has_section(&section) {
            return Err(format!(
                "no [{section}] section, but partition_amount is {amount}"
            ));
        }
        let address_list = required(&section, "address")?
            .split_whitespace()
            .map(address)
            .collect::<Result<Vec<_>, _>>()?;
        let ipv6_range = match get(&section, "ipv6_range")?.filter(|r| !r.trim().is_empty()) {
            None => None,
            Some(range) => {
                let (addr, len) = range
                    .trim()
                    .split_once('/')
                    .and_then(|(a, l)| Some((a, l.parse::<u8>().ok().filter(|l| *l <= 128)?)))
                    .ok_or_else(|| {
                        format!("[{section}] ipv6_range {range:?} is not <address>/<length>")
                    })?;
                Some(Ipv6Range::new(addr, len))
            }
        };
        let capability_list = get(&section, "capability_list")?.map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        });
        partitions.push(DefinedPartition {
            pathname: required(&section, "pathname")?.trim().to_owned(),
            user: required(&section, "user")?.trim().to_owned(),
            tap: required(&section, "network_interface")?.trim().to_owned(),
            address_list,
            ipv6_range,
            capability_list,
        });
    }
    Ok(Definition {
        address: address_of_computer,
        software_user,
        partitions,
    })
}

/// The `output_definition_file` text of `computer`, as Python's `RawConfigParser.write`
/// lays it out.
pub(crate) fn render(computer: &Computer) -> String {
    let mut out = String::from("[computer]\n");
    if let (Some(addr), Some(netmask)) = (&computer.address, &computer.netmask) {
        out.push_str(&format!("address = {addr}/{netmask}\n"));
    }
    out.push('\n');
    for (i, p) in computer.partition_list.iter().enumerate() {
        let addresses: Vec<String> = p
            .address_list
            .iter()
            .map(|a| format!("{}/{}", a.addr, a.netmask))
            .collect();
        out.push_str(&format!(
            "[partition_{i}]\naddress = {}\n",
            addresses.join(" ")
        ));
        if let Some(range) = &p.ipv6_range {
            out.push_str(&format!("ipv6_range = {}\n", range.network));
        }
        out.push_str(&format!(
            "user = {}\nnetwork_interface = {}\npathname = {}\n\n",
            p.user.name, p.tap.name, p.reference
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reference/node-artifacts/e2e-format-definition.cfg
    const E2E: &str = "[computer]\naddress = 127.0.0.1/255.255.255.255\n\n[partition_0]\n\
        address = 127.0.0.1/255.255.255.255 ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n\
        pathname = slappart0\nuser = nobody\nnetwork_interface =\n\n[partition_1]\n\
        address = 127.0.0.1/255.255.255.255 ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n\
        pathname = slappart1\nuser = nobody\nnetwork_interface =\n";

    #[test]
    fn reads_the_e2e_definition() {
        let d = parse(E2E, 2).unwrap();
        assert_eq!(
            d.address,
            Some(Address {
                addr: "127.0.0.1".into(),
                netmask: "255.255.255.255".into()
            })
        );
        assert_eq!(d.software_user, None);
        assert_eq!(d.partitions.len(), 2);
        let p = &d.partitions[1];
        assert_eq!(p.pathname, "slappart1");
        assert_eq!(p.user, "nobody");
        assert_eq!(p.tap, "");
        assert_eq!(p.ipv6_range, None);
        assert_eq!(
            p.address_list,
            vec![
                Address {
                    addr: "127.0.0.1".into(),
                    netmask: "255.255.255.255".into()
                },
                Address {
                    addr: "::1".into(),
                    netmask: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into()
                },
            ]
        );
    }

    #[test]
    fn missing_sections_and_bad_values_are_named() {
        let err = parse(E2E, 3).unwrap_err();
        assert!(err.contains("partition_2"), "{err}");
        let err = parse("[partition_0]\naddress = 1.2.3.4\n", 1).unwrap_err();
        assert!(err.contains("1.2.3.4"), "{err}");
        let text = "[partition_0]\naddress = ::1/128\npathname = p\nuser = u\n\
            network_interface = t\nipv6_range = 2001:db8::/64\ncapability_list =\n  a\n  b\n";
        let d = parse(text, 1).unwrap();
        let p = &d.partitions[0];
        assert_eq!(p.ipv6_range, Some(Ipv6Range::new("2001:db8::", 64)));
        assert_eq!(
            p.capability_list,
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }
}
