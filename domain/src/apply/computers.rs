//! Computers: registration, declared attributes and policy, format, bangs, removal.

use super::{check_name, check_person};
use crate::command::{ComputerSpec, Outcome, Reply};
use crate::error::DomainError;
use crate::ids::{InstanceId, Timestamp};
use crate::records::{AccessStatus, Address, AllocationScope, Computer, Partition, StatusKind};
use crate::state::State;
use std::collections::{BTreeMap, BTreeSet};

impl State {
    #[allow(clippy::too_many_arguments)] // the fields of the command, as it carries them
    pub(super) fn register_computer(
        &mut self,
        computer: &str,
        title: &str,
        owner: &str,
        region: &Option<String>,
        network: &Option<String>,
        attributes: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Outcome {
        check_name("computer_id", computer)?;
        if self.computers.contains_key(computer) {
            return Err(DomainError::ComputerExists(computer.to_owned()));
        }
        let mut c = Computer::new(computer, owner, now);
        if !title.is_empty() {
            c.title = title.to_owned();
        }
        c.region = region.clone();
        c.network = network.clone();
        c.attributes = attributes.clone();
        self.computers.insert(computer.to_owned(), c);
        Ok(Reply::Done)
    }

    pub(super) fn update_computer(
        &mut self,
        computer: &str,
        region: &Option<String>,
        network: &Option<String>,
        attributes: &BTreeMap<String, String>,
        _now: Timestamp,
    ) -> Outcome {
        let c = self.computer_mut(computer)?;
        c.region = region.clone();
        c.network = network.clone();
        c.attributes = attributes.clone();
        Ok(Reply::Done)
    }

    pub(super) fn set_computer_policy(
        &mut self,
        computer: &str,
        by: &Option<String>,
        allocation_scope: &Option<AllocationScope>,
        legacy_partition_keys: &Option<bool>,
        _now: Timestamp,
    ) -> Outcome {
        if let Some(person) = by {
            let owner = &self.computer(computer)?.owner;
            if owner != person && !self.admins.contains_key(person) {
                return Err(DomainError::NotOwner {
                    who: person.clone(),
                    what: format!("computer '{computer}'"),
                });
            }
        }
        if let Some(crate::records::AllocationScope::Friends(friends)) = allocation_scope {
            for f in friends {
                check_person("friend", f)?;
            }
        }
        let c = self.computer_mut(computer)?;
        if let Some(scope) = allocation_scope {
            c.allocation_scope = scope.clone();
        }
        if let Some(legacy) = legacy_partition_keys {
            c.legacy_partition_keys = *legacy;
        }
        Ok(Reply::Done)
    }

    pub(super) fn bang_computer(
        &mut self,
        computer: &str,
        message: &str,
        now: Timestamp,
    ) -> Outcome {
        let ids: Vec<InstanceId> = self
            .computer(computer)?
            .partitions
            .iter()
            .filter_map(|p| p.instance)
            .collect();
        for id in &ids {
            self.bump_regular(*id, now);
            if let Some(inst) = self.instances.get_mut(id) {
                inst.access_status = Some(AccessStatus {
                    kind: StatusKind::Bang,
                    message: message.to_owned(),
                    at: now,
                });
            }
        }
        Ok(Reply::Banged {
            instances: ids.len(),
        })
    }

    pub(super) fn remove_computer(&mut self, computer: &str, now: Timestamp) -> Outcome {
        let c = self
            .computers
            .get(computer)
            .ok_or_else(|| DomainError::UnknownComputer(computer.to_owned()))?;
        let busy: Vec<String> = c
            .partitions
            .iter()
            .filter(|p| p.instance.is_some())
            .map(|p| p.id.clone())
            .collect();
        if !busy.is_empty() {
            return Err(DomainError::PartitionsInUse {
                computer: computer.to_owned(),
                partitions: busy,
            });
        }
        let rows: Vec<(String, String)> = self
            .software
            .keys()
            .filter(|(c, _)| c == computer)
            .cloned()
            .collect();
        for row in rows {
            self.software.remove(&row);
        }
        self.computers.remove(computer);
        let count = self.revoke_where(now, |_, r| match &r.identity {
            crate::identity::Identity::Computer(c) => c == computer,
            crate::identity::Identity::Partition { computer: c, .. } => c == computer,
            _ => false,
        });
        Ok(Reply::Revoked { count })
    }

    // ----- computers -------------------------------------------------------------------

    pub(super) fn computer_mut(&mut self, id: &str) -> Result<&mut Computer, DomainError> {
        self.computers
            .get_mut(id)
            .ok_or_else(|| DomainError::UnknownComputer(id.to_string()))
    }

    pub(super) fn touch(&mut self, computer: &str, now: Timestamp) {
        if let Some(c) = self.computers.get_mut(computer) {
            c.last_contact = Some(now);
        }
    }

    pub(super) fn format(
        &mut self,
        computer: &str,
        spec: &ComputerSpec,
        now: Timestamp,
    ) -> Outcome {
        check_name("computer_id", computer)?;
        let mut seen = BTreeSet::new();
        for p in &spec.partitions {
            check_name("partition reference", &p.id)?;
            if !seen.insert(p.id.as_str()) {
                return Err(DomainError::invalid(
                    "partition_list",
                    format!("partition '{}' is declared twice", p.id),
                ));
            }
            for a in &p.addresses {
                if a.addr.is_empty() {
                    return Err(DomainError::invalid(
                        "address_list",
                        format!("an address of partition '{}' is empty", p.id),
                    ));
                }
            }
        }
        if let Some(existing) = self.computers.get(computer) {
            // A partition that hosts an instance is never dropped silently.
            let dropped_busy: Vec<String> = existing
                .partitions
                .iter()
                .filter(|p| p.instance.is_some() && !seen.contains(p.id.as_str()))
                .map(|p| p.id.clone())
                .collect();
            if !dropped_busy.is_empty() {
                return Err(DomainError::PartitionsInUse {
                    computer: computer.to_string(),
                    partitions: dropped_busy,
                });
            }
        }
        let c = self
            .computers
            .get_or_insert_with(computer.to_string(), || Computer::new(computer, "", now));
        let old: BTreeMap<String, Option<InstanceId>> = c
            .partitions
            .iter()
            .map(|p| (p.id.clone(), p.instance))
            .collect();
        c.partitions = spec
            .partitions
            .iter()
            .map(|p| {
                let tap = p.tap.clone().filter(|t| !t.is_empty());
                Partition {
                    id: p.id.clone(),
                    interface: tap.clone().unwrap_or_else(|| p.id.clone()),
                    tap,
                    addresses: p
                        .addresses
                        .iter()
                        .map(|a| Address {
                            addr: a.addr.clone(),
                            netmask: a.netmask.clone(),
                            gateway: a.gateway.clone(),
                            network: a.network.clone(),
                        })
                        .collect(),
                    instance: old.get(&p.id).copied().flatten(),
                }
            })
            .collect();
        c.address = spec.address.clone();
        c.netmask = spec.netmask.clone();
        c.last_contact = Some(now);
        let kept: BTreeSet<&str> = c.partitions.iter().map(|p| p.id.as_str()).collect();
        let computer = c.id.clone();
        let dropped: Vec<(String, String)> = old
            .keys()
            .filter(|id| !kept.contains(id.as_str()))
            .map(|id| (computer.to_owned(), id.clone()))
            .collect();
        self.dropped_partitions.0.extend(dropped);
        Ok(Reply::Done)
    }
}
