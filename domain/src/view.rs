//! Read-only queries: what `getFullComputerInformation`, `registerComputerPartition` and
//! `requestComputerPartition` answer, and tree listings. Views borrow from the state so
//! the polling path copies nothing until the gateway encodes it.

use super::error::DomainError;
use super::ids::InstanceId;
use super::records::{Computer, Instance, Partition, Placement, SoftwareInstallation};
use super::state::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One computer as its node sees it.
#[derive(Debug, Clone)]
pub struct ComputerView<'a> {
    pub computer: &'a Computer,
    /// Supplied software releases, by URL.
    pub software: Vec<SoftwareView<'a>>,
    /// Every partition in format order.
    pub partitions: Vec<PartitionView<'a>>,
}

#[derive(Debug, Clone)]
pub struct SoftwareView<'a> {
    pub url: &'a str,
    pub installation: &'a SoftwareInstallation,
}

/// One partition and what it hosts.
#[derive(Debug, Clone)]
pub struct PartitionView<'a> {
    pub computer: &'a Computer,
    pub partition: &'a Partition,
    /// The regular instance on it, if any.
    pub instance: Option<&'a Instance>,
    /// Title of that instance's tree root (its own title for a root).
    pub root_title: Option<&'a str>,
    /// Shared instances hosted by that instance, in arrival order, with their requester's
    /// tree root title.
    pub shared: Vec<SharedOnHostView<'a>>,
}

#[derive(Debug, Clone)]
pub struct SharedOnHostView<'a> {
    pub instance: &'a Instance,
    pub root_title: &'a str,
}

/// An instance as `requestComputerPartition` answers it.
#[derive(Debug, Clone)]
pub struct InstanceView<'a> {
    pub instance: &'a Instance,
    pub root_title: &'a str,
    /// For a regular instance its own partition; for a shared one its host's.
    pub computer: Option<&'a Computer>,
    pub partition: Option<&'a Partition>,
    /// The host of a shared instance.
    pub host: Option<&'a Instance>,
}

/// One member of a tree, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeMember {
    pub id: InstanceId,
    pub title: String,
    pub shared: bool,
    pub requester: Option<InstanceId>,
    pub software_release: String,
    pub software_type: String,
    pub requested_state: String,
    /// `computer/partition` of a regular instance, `SOFTINST-n` of a shared one's host.
    pub placement: Option<String>,
}

impl State {
    pub fn computer(&self, id: &str) -> Result<&Computer, DomainError> {
        self.computers
            .get(id)
            .ok_or_else(|| DomainError::UnknownComputer(id.to_string()))
    }

    pub fn computers(&self) -> impl Iterator<Item = &Computer> {
        self.computers.values()
    }

    pub fn instance(&self, id: InstanceId) -> Option<&Instance> {
        self.instances.get(&id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// Number of commands applied (refused ones included; retries excluded).
    pub fn applied_commands(&self) -> u64 {
        self.applied
    }

    /// Members of the tree rooted at `root`, the root included, by id.
    pub fn tree_members(&self, root: InstanceId) -> impl Iterator<Item = &Instance> {
        self.trees
            .get(&root)
            .into_iter()
            .flat_map(|t| t.iter())
            .filter_map(|id| self.instances.get(id))
    }

    /// The root of `owner`'s tree titled `title`.
    pub fn root_by_title(&self, owner: &str, title: &str) -> Option<InstanceId> {
        self.roots
            .get(&(owner.to_string(), title.to_string()))
            .copied()
    }

    /// The roots `owner` holds, by title.
    pub fn roots_of<'a>(&'a self, owner: &'a str) -> impl Iterator<Item = (&'a str, InstanceId)> {
        self.roots
            .range((owner.to_string(), String::new())..)
            .take_while(move |((o, _), _)| o == owner)
            .map(|((_, t), id)| (t.as_str(), *id))
    }

    /// A member of the tree rooted at `root` by title.
    pub fn member_by_title(&self, root: InstanceId, title: &str) -> Option<InstanceId> {
        self.members.get(&(root, title.to_string())).copied()
    }

    fn root_title<'a>(&'a self, inst: &'a Instance) -> &'a str {
        if inst.is_root() {
            &inst.title
        } else {
            self.instances
                .get(&inst.root)
                .map(|r| r.title.as_str())
                .unwrap_or("")
        }
    }

    /// What `getFullComputerInformation` answers.
    pub fn computer_view(&self, id: &str) -> Result<ComputerView<'_>, DomainError> {
        let computer = self.computer(id)?;
        let mut software: Vec<SoftwareView<'_>> = self
            .software
            .range((id.to_string(), String::new())..)
            .take_while(|((c, _), _)| c == id)
            .map(|((_, url), installation)| SoftwareView { url, installation })
            .collect();
        // In supply order, the last supplied last (ties, from old data: by URL).
        software.sort_by_key(|s| s.installation.order);
        let partitions = computer
            .partitions
            .iter()
            .map(|p| self.partition_view_of(computer, p))
            .collect();
        Ok(ComputerView {
            computer,
            software,
            partitions,
        })
    }

    /// What `registerComputerPartition` answers.
    pub fn partition_view(
        &self,
        computer: &str,
        partition: &str,
    ) -> Result<PartitionView<'_>, DomainError> {
        let c = self.computer(computer)?;
        let p = c
            .partition(partition)
            .ok_or_else(|| DomainError::UnknownPartition {
                computer: computer.to_string(),
                partition: partition.to_string(),
            })?;
        Ok(self.partition_view_of(c, p))
    }

    fn partition_view_of<'a>(
        &'a self,
        computer: &'a Computer,
        p: &'a Partition,
    ) -> PartitionView<'a> {
        let instance = p.instance.and_then(|id| self.instances.get(&id));
        let shared = instance
            .map(|inst| {
                inst.hosted
                    .iter()
                    .filter_map(|s| self.instances.get(s))
                    .map(|s| SharedOnHostView {
                        instance: s,
                        root_title: self.root_title(s),
                    })
                    .collect()
            })
            .unwrap_or_default();
        PartitionView {
            computer,
            partition: p,
            instance,
            root_title: instance.map(|i| self.root_title(i)),
            shared,
        }
    }

    /// What `requestComputerPartition` answers for an instance.
    pub fn instance_view(&self, id: InstanceId) -> Result<InstanceView<'_>, DomainError> {
        let instance = self
            .instances
            .get(&id)
            .ok_or_else(|| DomainError::UnknownInstance(id.to_string()))?;
        let host = match instance.placement {
            Placement::Hosted { host } => self.instances.get(&host),
            _ => None,
        };
        let located = if instance.shared {
            host
        } else {
            Some(instance)
        };
        let (computer, partition) = match located.map(|i| &i.placement) {
            Some(Placement::Partition {
                computer,
                partition,
            }) => {
                let c = self.computers.get(computer);
                (c, c.and_then(|c| c.partition(partition)))
            }
            _ => (None, None),
        };
        Ok(InstanceView {
            instance,
            root_title: self.root_title(instance),
            computer,
            partition,
            host,
        })
    }

    /// The tree rooted at `root`, in id order.
    pub fn tree(&self, root: InstanceId) -> Result<Vec<TreeMember>, DomainError> {
        if !self.trees.contains_key(&root) {
            return Err(DomainError::UnknownInstance(root.to_string()));
        }
        Ok(self
            .tree_members(root)
            .map(|m| TreeMember {
                id: m.id,
                title: m.title.clone(),
                shared: m.shared,
                requester: m.requester,
                software_release: m.software_release.clone(),
                software_type: m.software_type.clone(),
                requested_state: m.requested_state.as_str().to_string(),
                placement: match &m.placement {
                    Placement::Partition {
                        computer,
                        partition,
                    } => Some(format!("{computer}/{partition}")),
                    Placement::Hosted { host } => Some(host.to_string()),
                    Placement::Unplaced => None,
                },
            })
            .collect())
    }
}

impl State {
    /// The computers whose `getFullComputerInformation` answer the changes not yet taken
    /// by [`State::take_changes`] may have changed: written computers (and partitions a
    /// format dropped), software installations, and instances where they are shown (a
    /// regular instance on its partition's computer, a shared one on its host's). A
    /// superset is harmless (a woken poll finds the same view); a computer missing here
    /// would leave a node waiting, so every entity a computer view reads is mapped.
    /// An instance removed from the state left its partition (freed: the computer is
    /// written) or its host (whose list of hosted instances changed: the host is written).
    pub fn touched_computers(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.computers.dirty_keys().cloned().collect();
        out.extend(self.dropped_partitions.0.iter().map(|(c, _)| c.clone()));
        out.extend(self.software.dirty_keys().map(|(c, _)| c.clone()));
        for id in self.instances.dirty_keys() {
            let Some(inst) = self.instances.get(id) else {
                continue;
            };
            let shown_on = match &inst.placement {
                Placement::Hosted { host } => self.instances.get(host).map(|h| &h.placement),
                other => Some(other),
            };
            if let Some(Placement::Partition { computer, .. }) = shown_on {
                out.insert(computer.clone());
            }
        }
        out
    }
}
