//! Instances on partitions: connection parameters, reports, bangs, renames, the node
//! freeing a partition, and the lookups every instance command starts with.

use super::{bumped, check_name, Scope};
use crate::command::{Outcome, Reply, Requester};
use crate::error::DomainError;
use crate::ids::{InstanceId, Timestamp};
use crate::param::StringParams;
use crate::records::{AccessStatus, Instance, Placement, RequestedState, StatusKind};
use crate::state::State;

impl State {
    pub(super) fn set_connection(
        &mut self,
        computer: &str,
        partition: &str,
        shared: &Option<String>,
        connection: &StringParams,
        now: Timestamp,
    ) -> Outcome {
        let id = self.partition_instance(computer, partition)?;
        let target = match shared {
            None => id,
            Some(reference) => self.hosted_shared(id, computer, partition, reference)?,
        };
        let (changed, requester) = {
            let inst = self.instance_ref(target)?;
            (&inst.connection != connection, inst.requester)
        };
        if changed {
            if let Some(inst) = self.instances.get_mut(&target) {
                inst.connection = connection.clone();
            }
            // The requester reads these parameters: make its node reprocess it.
            if let Some(req) = requester {
                self.bump_regular(req, now);
            }
        }
        self.touch(computer, now);
        Ok(Reply::Done)
    }

    pub(super) fn report_status(
        &mut self,
        computer: &str,
        partition: &str,
        shared: &Option<String>,
        kind: &StatusKind,
        message: &str,
        now: Timestamp,
    ) -> Outcome {
        let id = self.partition_instance(computer, partition)?;
        let target = match shared {
            None => id,
            Some(reference) => self.hosted_shared(id, computer, partition, reference)?,
        };
        if let Some(inst) = self.instances.get_mut(&target) {
            inst.access_status = Some(AccessStatus {
                kind: *kind,
                message: message.to_owned(),
                at: now,
            });
        }
        self.touch(computer, now);
        Ok(Reply::Done)
    }

    pub(super) fn bang(
        &mut self,
        computer: &str,
        partition: &str,
        message: &str,
        now: Timestamp,
    ) -> Outcome {
        let id = self.partition_instance(computer, partition)?;
        let root = self.instance_ref(id)?.root;
        let members: Vec<InstanceId> = self
            .tree_members(root)
            .filter(|m| !m.shared)
            .map(|m| m.id)
            .collect();
        for m in &members {
            self.bump_regular(*m, now);
        }
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.access_status = Some(AccessStatus {
                kind: StatusKind::Bang,
                message: message.to_owned(),
                at: now,
            });
        }
        Ok(Reply::Banged {
            instances: members.len(),
        })
    }

    pub(super) fn rename_op(
        &mut self,
        computer: &str,
        partition: &str,
        shared: &Option<String>,
        new_name: &str,
        _now: Timestamp,
    ) -> Outcome {
        check_name("new_name", new_name)?;
        let id = self.partition_instance(computer, partition)?;
        let target = match shared {
            None => id,
            Some(reference) => self.owned_shared(id, computer, partition, reference)?,
        };
        self.rename(target, new_name)?;
        Ok(Reply::Done)
    }

    pub(super) fn destroyed(&mut self, computer: &str, partition: &str, now: Timestamp) -> Outcome {
        let outcome = self.destroyed_partition(computer, partition, now);
        if matches!(outcome, Ok(Reply::PartitionFreed)) {
            // The freed partition's certificates die with its instance.
            self.revoke_identity(
                &crate::identity::Identity::Partition {
                    computer: computer.to_owned(),
                    partition: partition.to_owned(),
                },
                now,
            );
        }
        outcome
    }

    // ----- instances: lookups ----------------------------------------------------------

    pub(super) fn instance_ref(&self, id: InstanceId) -> Result<&Instance, DomainError> {
        self.instances
            .get(&id)
            .ok_or_else(|| DomainError::UnknownInstance(id.to_string()))
    }

    /// The instance a partition hosts.
    pub(super) fn partition_instance(
        &self,
        computer: &str,
        partition: &str,
    ) -> Result<InstanceId, DomainError> {
        let c = self.computer(computer)?;
        let p = c
            .partition(partition)
            .ok_or_else(|| DomainError::UnknownPartition {
                computer: computer.to_string(),
                partition: partition.to_string(),
            })?;
        p.instance.ok_or_else(|| DomainError::PartitionFree {
            computer: computer.to_string(),
            partition: partition.to_string(),
        })
    }

    /// The name slapproxy gives a shared instance (`<root title>_<title>`, with an empty
    /// root title for a root), accepted beside our ids from hosts that publish with it.
    pub(super) fn legacy_shared_reference(&self, inst: &Instance) -> String {
        let root_title = if inst.is_root() {
            ""
        } else {
            self.instances
                .get(&inst.root)
                .map(|r| r.title.as_str())
                .unwrap_or("")
        };
        format!("{root_title}_{}", inst.title)
    }

    /// A shared instance hosted by `host`, named by id (or slapproxy's reference).
    pub(super) fn hosted_shared(
        &self,
        host: InstanceId,
        computer: &str,
        partition: &str,
        reference: &str,
    ) -> Result<InstanceId, DomainError> {
        let h = self.instance_ref(host)?;
        let found = h.hosted.iter().copied().find(|id| {
            InstanceId::parse(reference) == Some(*id)
                || self
                    .instances
                    .get(id)
                    .is_some_and(|s| self.legacy_shared_reference(s) == reference)
        });
        found.ok_or_else(|| DomainError::UnknownSharedInstance {
            computer: computer.to_string(),
            partition: partition.to_string(),
            reference: reference.to_string(),
        })
    }

    /// A shared instance the caller hosts or requested.
    pub(super) fn owned_shared(
        &self,
        caller: InstanceId,
        computer: &str,
        partition: &str,
        reference: &str,
    ) -> Result<InstanceId, DomainError> {
        if let Ok(id) = self.hosted_shared(caller, computer, partition, reference) {
            return Ok(id);
        }
        self.instances
            .values()
            .find(|s| {
                s.shared
                    && s.requester == Some(caller)
                    && (InstanceId::parse(reference) == Some(s.id)
                        || self.legacy_shared_reference(s) == reference)
            })
            .map(|s| s.id)
            .ok_or_else(|| DomainError::UnknownSharedInstance {
                computer: computer.to_string(),
                partition: partition.to_string(),
                reference: reference.to_string(),
            })
    }

    pub(super) fn requester_scope(&self, requester: &Requester) -> Result<Scope, DomainError> {
        match requester {
            Requester::Person(person) => {
                check_name("person", person)?;
                Ok(Scope {
                    owner: person.clone(),
                    tree: None,
                })
            }
            Requester::Partition {
                computer,
                partition,
            } => {
                let id = self.partition_instance(computer, partition)?;
                let inst = self.instance_ref(id)?;
                Ok(Scope {
                    owner: inst.owner.clone(),
                    tree: Some((inst.root, id)),
                })
            }
        }
    }

    pub(super) fn lookup(&self, scope: &Scope, title: &str) -> Option<InstanceId> {
        match scope.tree {
            None => self.roots.get(&(scope.owner.clone(), title.to_string())),
            Some((root, _)) => self.members.get(&(root, title.to_string())),
        }
        .copied()
    }

    // ----- instances: requests ---------------------------------------------------------

    /// Give a regular instance a new timestamp (shared instances have none of their own
    /// that a node reads: their host's changes instead).
    pub(super) fn bump_regular(&mut self, id: InstanceId, now: Timestamp) {
        if let Some(inst) = self.instances.get_mut(&id) {
            if !inst.shared {
                inst.timestamp = bumped(inst.timestamp, now);
            }
        }
    }

    /// A root's effective state changed: recompute every member's and bump those that
    /// changed, so their nodes stop, start or destroy them.
    pub(super) fn push_root_state(&mut self, root: InstanceId, now: Timestamp) {
        let Some(root_state) = self.instances.get(&root).map(|r| r.requested_state) else {
            return;
        };
        let members: Vec<InstanceId> = self
            .trees
            .get(&root)
            .map(|t| t.iter().copied().filter(|m| *m != root).collect())
            .unwrap_or_default();
        for m in members {
            if let Some(inst) = self.instances.get_mut(&m) {
                if inst.shared {
                    continue;
                }
                let effective = inst.own_state.max(root_state);
                if effective != inst.requested_state {
                    inst.requested_state = effective;
                    inst.timestamp = bumped(inst.timestamp, now);
                }
            }
        }
    }

    pub(super) fn rename(&mut self, id: InstanceId, new_name: &str) -> Result<(), DomainError> {
        let inst = self.instance_ref(id)?;
        if inst.title == new_name {
            return Ok(());
        }
        let (root, owner, old) = (inst.root, inst.owner.clone(), inst.title.to_owned());
        if self.members.contains_key(&(root, new_name.to_string())) {
            return Err(DomainError::TitleTaken {
                title: new_name.to_string(),
                scope: "tree".to_string(),
            });
        }
        if inst.is_root()
            && self
                .roots
                .contains_key(&(owner.clone(), new_name.to_string()))
        {
            return Err(DomainError::TitleTaken {
                title: new_name.to_string(),
                scope: "account".to_string(),
            });
        }
        if inst.is_root() {
            self.roots.remove(&(owner.clone(), old.clone()));
            self.roots.insert((owner, new_name.to_string()), id);
        }
        self.members.remove(&(root, old));
        self.members.insert((root, new_name.to_string()), id);
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.title = new_name.to_string();
        }
        // Every member's view shows its root's title (`root_instance_title`), on whatever
        // computer it runs: those views changed too.
        if root == id {
            let members: Vec<InstanceId> = self
                .trees
                .get(&root)
                .map(|t| t.iter().copied().filter(|m| *m != id).collect())
                .unwrap_or_default();
            for m in members {
                self.instances.mark_unchanged(&m);
            }
        }
        Ok(())
    }

    pub(super) fn destroyed_partition(
        &mut self,
        computer: &str,
        partition: &str,
        now: Timestamp,
    ) -> Outcome {
        let id = self.partition_instance(computer, partition)?;
        let inst = self.instance_ref(id)?;
        if inst.requested_state != RequestedState::Destroyed {
            return Err(DomainError::NotRequestedDestroyed {
                title: inst.title.to_owned(),
                state: inst.requested_state.as_str().to_string(),
            });
        }
        if inst.is_root() {
            let mut remaining: Vec<String> = self
                .tree_members(id)
                .filter(|m| m.id != id && !m.shared)
                .map(|m| m.title.to_owned())
                .collect();
            if !remaining.is_empty() {
                remaining.sort();
                self.push_root_state(id, now);
                return Ok(Reply::DestroyDeferred { remaining });
            }
            // The tree goes with its root: its shared instances too.
            let shared: Vec<InstanceId> = self
                .tree_members(id)
                .filter(|m| m.shared)
                .map(|m| m.id)
                .collect();
            for s in shared {
                self.remove_shared(s, now);
            }
        }
        // Shared instances this one hosted wait for a new host.
        let hosted = self.instance_ref(id)?.hosted.clone();
        for s in hosted {
            if let Some(si) = self.instances.get_mut(&s) {
                si.placement = Placement::Unplaced;
            }
        }
        if let Some(p) = self
            .computers
            .get_mut(computer)
            .and_then(|c| c.partition_mut(partition))
        {
            p.instance = None;
        }
        self.unindex(id);
        self.instances.remove(&id);
        self.touch(computer, now);
        Ok(Reply::PartitionFreed)
    }
}
