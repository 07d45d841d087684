//! Allocation as a marketplace: a request names conditions (its SLA), every free partition
//! of a computer that meets them, whose allocation scope admits the requester and where
//! the provider supplied the release, is a candidate, and the candidate with the smallest
//! [`Score`] wins. The provider decides what software runs on their machines: a release
//! supplied nowhere is never allocated, so never installed. The score is a struct ordered by its fields, so the policy reads in one
//! place and ties always break the same way on every replica.

use super::error::DomainError;
use super::ids::InstanceId;
use super::records::Computer;
use super::state::State;
use std::collections::{BTreeMap, BTreeSet};

/// SLA keys SlapOS defines that carry information for nodes or the portal but do not
/// constrain allocation. They are accepted and kept in the instance's SLA (`_filter_dict`,
/// which slapgrid reads for `retention_delay` and the firewall keys).
const PASSIVE_KEYS: &[&str] = &[
    "project_guid",
    "retention_delay",
    "fw_restricted_access",
    "fw_authorized_sources",
    "fw_rejected_sources",
    "fw_authorized_ports",
    "source_instance_id",
];

/// How a tree asks to be spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    Computer,
    Region,
    Network,
}

/// An SLA, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlaFilter {
    pub computer: Option<String>,
    pub instance: Option<String>,
    pub region: Option<String>,
    pub network: Option<String>,
    pub max_price: Option<f64>,
    pub spread: Option<Spread>,
    /// Equality on declared computer attributes.
    pub attributes: BTreeMap<String, String>,
    /// A partition size the computer's provider sells (listed in its
    /// [`PARTITION_SIZES`] attribute); the node gives the partition that size's limits
    /// and the hosting is billed as `hosting/<size>`.
    pub size: Option<String>,
}

/// The computer attribute that lists the partition sizes its provider sells, separated
/// by spaces or commas (`small medium master`); each node defines what a size holds
/// (slapgrid's `[partition-size:<name>]`).
pub const PARTITION_SIZES: &str = "partition_sizes";

/// Whether `computer` sells partitions of `size`.
pub fn sells_size(computer: &Computer, size: &str) -> bool {
    computer
        .attributes
        .get(PARTITION_SIZES)
        .is_some_and(|list| list.split([' ', ',']).any(|s| s == size))
}

/// A size name: letters, digits, `-`, `_` and `.`, from a letter or digit, as a node's
/// configuration names it.
fn valid_size(size: &str) -> bool {
    size.starts_with(|c: char| c.is_ascii_alphanumeric())
        && size.len() <= 64
        && size
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl SlaFilter {
    /// Parse an SLA against the attributes computers declare (`declared`: whether some
    /// computer declares that name). Unknown keys and malformed values are errors, never
    /// silently ignored.
    pub fn parse(
        sla: &BTreeMap<String, String>,
        declared: impl Fn(&str) -> bool,
    ) -> Result<SlaFilter, DomainError> {
        let mut filter = SlaFilter::default();
        for (key, value) in sla {
            match key.as_str() {
                "computer_guid" => filter.computer = Some(value.clone()),
                "instance_guid" => filter.instance = Some(value.clone()),
                "region" => filter.region = Some(value.clone()),
                "network_guid" => filter.network = Some(value.clone()),
                "max_price" => {
                    let price: f64 = value.trim().parse().map_err(|_| {
                        DomainError::invalid("sla max_price", format!("'{value}' is not a number"))
                    })?;
                    if !price.is_finite() {
                        return Err(DomainError::invalid(
                            "sla max_price",
                            format!("'{value}' is not a finite number"),
                        ));
                    }
                    filter.max_price = Some(price);
                }
                "spread" => {
                    filter.spread = Some(match value.as_str() {
                        "computer" => Spread::Computer,
                        "region" => Spread::Region,
                        "network" => Spread::Network,
                        other => {
                            return Err(DomainError::invalid(
                                "sla spread",
                                format!("'{other}' is not one of computer, region, network"),
                            ))
                        }
                    })
                }
                // SlapOS's own spelling of "one instance per network".
                "mode" => match value.as_str() {
                    "unique_by_network" => filter.spread = Some(Spread::Network),
                    other => {
                        return Err(DomainError::invalid(
                            "sla mode",
                            format!("'{other}' is not a known mode (unique_by_network)"),
                        ))
                    }
                },
                "size" => {
                    if !valid_size(value) {
                        return Err(DomainError::invalid(
                            "sla size",
                            format!(
                                "{value:?} is not a size name (letters, digits, '-', '_', '.', from a letter or digit)"
                            ),
                        ));
                    }
                    filter.size = Some(value.clone());
                }
                "master_url" => {
                    return Err(DomainError::invalid(
                        "sla master_url",
                        "forwarding requests to another master is not supported",
                    ))
                }
                k if PASSIVE_KEYS.contains(&k) => {}
                k if declared(k) => {
                    filter.attributes.insert(key.clone(), value.clone());
                }
                _ => return Err(DomainError::UnknownSlaKey(key.clone())),
            }
        }
        Ok(filter)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.computer {
            parts.push(format!("computer_guid={c}"));
        }
        if let Some(r) = &self.region {
            parts.push(format!("region={r}"));
        }
        if let Some(n) = &self.network {
            parts.push(format!("network_guid={n}"));
        }
        if let Some(p) = self.max_price {
            parts.push(format!("max_price={p}"));
        }
        if let Some(size) = &self.size {
            parts.push(format!("size={size}"));
        }
        for (k, v) in &self.attributes {
            parts.push(format!("{k}={v}"));
        }
        if parts.is_empty() {
            "no condition".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// Whether a computer meets every condition that concerns the computer itself.
    /// Whether `computer` meets the conditions. `max_price` is held against the hosting
    /// price per hour its provider set in the ledger (the computer's, else its
    /// region's), or, when none is set, against the computer's declared `price`.
    pub(crate) fn admits(&self, state: &State, computer: &Computer) -> bool {
        if self.computer.as_deref().is_some_and(|c| c != computer.id) {
            return false;
        }
        if let Some(region) = &self.region {
            if computer.region.as_ref() != Some(region) {
                return false;
            }
        }
        if let Some(network) = &self.network {
            if computer.network.as_ref() != Some(network) {
                return false;
            }
        }
        if self
            .size
            .as_deref()
            .is_some_and(|size| !sells_size(computer, size))
        {
            return false;
        }
        if let Some(max) = self.max_price {
            let price = match state.hosting_price(computer, self.size.as_deref()) {
                Some(p) => Some(p.billionths() as f64 / 1e9),
                None => computer
                    .attributes
                    .get("price")
                    .and_then(|p| p.trim().parse::<f64>().ok()),
            };
            match price {
                Some(p) if p <= max => {}
                _ => return false,
            }
        }
        self.attributes
            .iter()
            .all(|(k, v)| computer.attributes.get(k) == Some(v))
    }
}

/// Whether some computer declares attribute `name`, i.e. whether an SLA may test it for
/// equality. Asked only for a key that is none of SlapOS's own, so a request with the
/// usual conditions never looks at every computer.
pub(crate) fn declares_attribute(state: &State, name: &str) -> bool {
    state
        .computers
        .values()
        .any(|c| c.attributes.contains_key(name))
}

/// How a candidate partition ranks; smaller is better. Field order is the policy:
/// 1. the software release is already installed there (then merely supplied);
/// 2. the computer carries the fewest instances;
/// 3. stable keys: computer id, then the partition's position in format order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Score {
    pub software: u8,
    pub load: usize,
    pub computer: String,
    pub partition_index: usize,
}

/// The chosen partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub computer: String,
    pub partition: String,
    pub score: Score,
}

/// Choose a free partition for a new regular instance of a tree owned by `requester`.
pub(crate) fn allocate(
    state: &State,
    title: &str,
    software_release: &str,
    requester: &str,
    filter: &SlaFilter,
    tree: Option<InstanceId>,
) -> Result<Placement, DomainError> {
    let no_capacity = |reason: String| DomainError::NoCapacity {
        title: title.to_string(),
        reason,
    };
    if let Some(c) = &filter.computer {
        if !state.computers.contains_key(c) {
            return Err(no_capacity(format!(
                "computer_guid '{c}' is not a known computer"
            )));
        }
    }
    if filter.instance.is_some() {
        return Err(DomainError::invalid(
            "sla instance_guid",
            "only shared instances can be pinned to an instance",
        ));
    }

    // What the tree already occupies, for spreading.
    let mut used_computers = BTreeSet::new();
    let mut used_regions = BTreeSet::new();
    let mut used_networks = BTreeSet::new();
    if let (Some(root), Some(_)) = (tree, filter.spread) {
        for member in state.tree_members(root) {
            if let super::records::Placement::Partition { computer, .. } = &member.placement {
                if let Some(c) = state.computers.get(computer) {
                    used_computers.insert(c.id.as_str());
                    if let Some(r) = &c.region {
                        used_regions.insert(r.as_str());
                    }
                    if let Some(n) = &c.network {
                        used_networks.insert(n.as_str());
                    }
                }
            }
        }
    }

    let spread_ok = |computer: &Computer| match filter.spread {
        None => true,
        Some(Spread::Computer) => !used_computers.contains(computer.id.as_str()),
        Some(Spread::Region) => computer
            .region
            .as_deref()
            .is_some_and(|r| !used_regions.contains(r)),
        Some(Spread::Network) => computer
            .network
            .as_deref()
            .is_some_and(|n| !used_networks.contains(n)),
    };
    let admitted = |computer: &Computer| {
        computer.allocation_scope.admits(&computer.owner, requester)
            && filter.admits(state, computer)
            && spread_ok(computer)
    };
    // The rank of the release on `computer` (None: not supplied there) and its first
    // free partition, as a placement.
    let placement = |computer: &Computer, rank: u8| {
        let (index, partition) = computer
            .partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.instance.is_none())?;
        Some(Placement {
            computer: computer.id.clone(),
            partition: partition.id.clone(),
            score: Score {
                software: rank,
                load: computer.used_partitions(),
                computer: computer.id.clone(),
                partition_index: index,
            },
        })
    };
    let rank_on = |computer: &Computer| {
        state
            .software
            .get(&(computer.id.clone(), software_release.to_string()))
            .and_then(super::alloc_index::rank)
    };

    // The index lists the computers that supply the release and have a free partition,
    // best score first: the first one admitted wins. (A pinned computer is looked at
    // alone; a walk that finds nothing falls through to the scan, which says why.)
    let index = &state.alloc_index.0;
    if filter.computer.is_none() && index.is_current(&state.computers, &state.software) {
        for id in index.candidates(software_release, filter.region.as_deref()) {
            let Some(computer) = state.computers.get(id) else {
                continue;
            };
            if !admitted(computer) {
                continue;
            }
            if let Some(found) = rank_on(computer).and_then(|rank| placement(computer, rank)) {
                return Ok(found);
            }
        }
    }

    let mut matching = 0usize;
    let mut supplied = 0usize;
    let mut best: Option<Placement> = None;
    let scanned: Box<dyn Iterator<Item = &Computer>> = match &filter.computer {
        Some(c) => Box::new(state.computers.get(c).into_iter()),
        None => Box::new(state.computers.values()),
    };
    for computer in scanned {
        if !admitted(computer) {
            continue;
        }
        matching += 1;
        // Not supplied here: the provider has not chosen to run it.
        let Some(rank) = rank_on(computer) else {
            continue;
        };
        supplied += 1;
        if let Some(found) = placement(computer, rank) {
            if best.as_ref().is_none_or(|b| found.score < b.score) {
                best = Some(found);
            }
        }
    }
    best.ok_or_else(|| {
        let conditions = filter.describe();
        let spread = match filter.spread {
            Some(Spread::Computer) => ", spread over distinct computers",
            Some(Spread::Region) => ", spread over distinct regions",
            Some(Spread::Network) => ", spread over distinct networks",
            None => "",
        };
        if matching == 0 {
            no_capacity(format!(
                "no computer open to {requester} meets the conditions ({conditions}{spread})"
            ))
        } else if supplied == 0 {
            no_capacity(format!(
                "software release '{software_release}' is supplied on none of the {matching} computer(s) open to {requester} meeting the conditions ({conditions}{spread}); a provider supplies it first"
            ))
        } else {
            no_capacity(format!(
                "all partitions are busy on the {supplied} computer(s) open to {requester} that supply the release and meet the conditions ({conditions}{spread})"
            ))
        }
    })
}
