//! Requests: a tree's regular instances allocated (`alloc.rs`) or updated, shared
//! instances placed on a host; the title and tree indexes kept with them.

use super::{bumped, check_name, check_url, parse_state, InstanceRequest, Scope};
use crate::alloc::{allocate, declares_attribute, SlaFilter};
use crate::command::{Outcome, Reply, Requester};
use crate::error::DomainError;
use crate::ids::{InstanceId, Timestamp};
use crate::param::{stringify, Params, StringParams};
use crate::records::{Instance, Placement, RequestedState, SoftwareState};
use crate::state::State;
use std::collections::{BTreeMap, BTreeSet};

impl State {
    #[allow(clippy::too_many_arguments)] // the fields of the command, as it carries them
    pub(super) fn request_instance(
        &mut self,
        requester: &Requester,
        title: &str,
        software_release: &str,
        software_type: &str,
        state: &Option<String>,
        shared: &bool,
        parameters: &Params,
        sla: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Outcome {
        let req = InstanceRequest {
            title,
            software_release,
            software_type: if software_type.is_empty() {
                "default"
            } else {
                software_type
            },
            state: parse_state(state)?,
            parameters,
            sla,
        };
        check_name("partition_reference", title)?;
        check_url(software_release)?;
        check_name("software_type", req.software_type)?;
        let scope = self.requester_scope(requester)?;
        if *shared {
            self.request_shared(&scope, &req, now)
        } else {
            self.request_regular(&scope, &req, now)
        }
    }

    pub(super) fn request_regular(
        &mut self,
        scope: &Scope,
        req: &InstanceRequest,
        now: Timestamp,
    ) -> Outcome {
        let filter = SlaFilter::parse(req.sla, |k| declares_attribute(self, k))?;
        match self.lookup(scope, req.title) {
            Some(id) => {
                let inst = self.instance_ref(id)?;
                if inst.shared {
                    return Err(DomainError::TitleTaken {
                        title: req.title.to_string(),
                        scope: "tree, by a shared instance".to_string(),
                    });
                }
                if let Some((root, requester)) = scope.tree {
                    if id == root || id == requester {
                        return Err(DomainError::invalid(
                            "partition_reference",
                            format!(
                                "'{}' is the requesting instance or its tree's root; an instance cannot request itself or its root",
                                req.title
                            ),
                        ));
                    }
                }
                // Moving an instance to another release: the provider of its computer
                // must have supplied that one too (what runs there is theirs to decide).
                if inst.software_release != req.software_release {
                    if let Placement::Partition { computer, .. } = &inst.placement {
                        let key = (computer.to_owned(), req.software_release.to_string());
                        if self
                            .software
                            .get(&key)
                            .is_none_or(|sw| sw.requested != SoftwareState::Available)
                        {
                            return Err(DomainError::NotSupplied {
                                computer: computer.to_owned(),
                                url: req.software_release.to_string(),
                            });
                        }
                    }
                }
                // Another partition size: the computer it runs on must sell that one
                // (a re-request never moves an instance); the node applies it.
                let new_size = req.sla.get("size");
                let resized = inst.sla.get("size") != new_size;
                if let (Some(size), Placement::Partition { computer, .. }) =
                    (new_size.filter(|_| resized), &inst.placement)
                {
                    if !self
                        .computers
                        .get(computer)
                        .is_some_and(|c| crate::alloc::sells_size(c, size))
                    {
                        return Err(DomainError::NoCapacity {
                            title: req.title.to_string(),
                            reason: format!(
                                "computer '{computer}' does not sell partitions of size '{size}'; an instance stays where it is"
                            ),
                        });
                    }
                }
                let own = req.state.unwrap_or(inst.own_state);
                let changed = inst.software_release != req.software_release
                    || inst.software_type != req.software_type
                    || &inst.parameters != req.parameters
                    || inst.own_state != own
                    || resized;
                let is_root = inst.is_root();
                let root_state = if is_root {
                    None
                } else {
                    Some(self.instance_ref(inst.root)?.requested_state)
                };
                let effective = root_state.map_or(own, |r| own.max(r));
                let state_changed = effective != inst.requested_state;
                let Some(inst) = self.instances.get_mut(&id) else {
                    return Err(DomainError::UnknownInstance(id.to_string()));
                };
                if let Some((_, requester)) = scope.tree {
                    inst.requester = Some(requester);
                }
                inst.sla = req.sla.clone();
                if changed {
                    inst.software_release = req.software_release.to_string();
                    inst.software_type = req.software_type.to_string();
                    inst.parameters = req.parameters.clone();
                    inst.parameter_strings = stringify(req.parameters);
                    inst.own_state = own;
                    inst.requested_state = effective;
                    inst.timestamp = bumped(inst.timestamp, now);
                }
                if is_root && state_changed {
                    self.push_root_state(id, now);
                }
                Ok(Reply::Instance { id, changed })
            }
            None => {
                let Some(own) = req.state.or(Some(RequestedState::Started)) else {
                    return Err(DomainError::invalid("state", "missing"));
                };
                if own == RequestedState::Destroyed {
                    return Err(DomainError::UnknownInstance(format!(
                        "{} (nothing to destroy)",
                        req.title
                    )));
                }
                let root_state = match scope.tree {
                    Some((root, _)) => Some(self.instance_ref(root)?.requested_state),
                    None => None,
                };
                self.alloc_index
                    .0
                    .refresh(&mut self.computers, &mut self.software);
                let placement = allocate(
                    self,
                    req.title,
                    req.software_release,
                    &scope.owner,
                    &filter,
                    scope.tree.map(|(root, _)| root),
                )?;
                let id = InstanceId(self.next_instance + 1);
                self.next_instance += 1;
                let root = scope.tree.map_or(id, |(root, _)| root);
                let effective = root_state.map_or(own, |r| own.max(r));
                let instance = Instance {
                    id,
                    title: req.title.to_string(),
                    owner: scope.owner.clone(),
                    root,
                    requester: scope.tree.map(|(_, requester)| requester),
                    software_release: req.software_release.to_string(),
                    software_type: req.software_type.to_string(),
                    parameters: req.parameters.clone(),
                    parameter_strings: stringify(req.parameters),
                    sla: req.sla.clone(),
                    own_state: own,
                    requested_state: effective,
                    shared: false,
                    placement: Placement::Partition {
                        computer: placement.computer.to_owned(),
                        partition: placement.partition.to_owned(),
                    },
                    connection: StringParams::new(),
                    hosted: Vec::new(),
                    timestamp: now,
                    access_status: None,
                    created_at: now,
                };
                if let Some(p) = self
                    .computers
                    .get_mut(&placement.computer)
                    .and_then(|c| c.partition_mut(&placement.partition))
                {
                    p.instance = Some(id);
                }
                self.index_new(&instance, &scope.owner);
                self.instances.insert(id, instance);
                Ok(Reply::Instance { id, changed: true })
            }
        }
    }

    pub(super) fn request_shared(
        &mut self,
        scope: &Scope,
        req: &InstanceRequest,
        now: Timestamp,
    ) -> Outcome {
        let filter = SlaFilter::parse(req.sla, |k| declares_attribute(self, k))?;
        match self.lookup(scope, req.title) {
            Some(id) => {
                let inst = self.instance_ref(id)?;
                if !inst.shared {
                    return Err(DomainError::TitleTaken {
                        title: req.title.to_string(),
                        scope: "tree, by a regular instance".to_string(),
                    });
                }
                if req.state == Some(RequestedState::Destroyed) {
                    let host = match inst.placement {
                        Placement::Hosted { host } => Some(host),
                        _ => None,
                    };
                    let connection = inst.connection.clone();
                    self.remove_shared(id, now);
                    return Ok(Reply::SharedRemoved {
                        id,
                        host,
                        connection,
                    });
                }
                let current_host = match inst.placement {
                    Placement::Hosted { host } => Some(host),
                    _ => None,
                };
                let keep = current_host.filter(|h| self.host_admits(*h, req, &filter));
                let host = match keep {
                    Some(h) => h,
                    None => self.find_host(req, &filter)?,
                };
                let inst = self.instance_ref(id)?;
                let changed = inst.software_release != req.software_release
                    || inst.software_type != req.software_type
                    || &inst.parameters != req.parameters;
                let moved = current_host != Some(host);
                let Some(inst) = self.instances.get_mut(&id) else {
                    return Err(DomainError::UnknownInstance(id.to_string()));
                };
                if let Some((_, requester)) = scope.tree {
                    inst.requester = Some(requester);
                }
                inst.sla = req.sla.clone();
                if changed {
                    inst.software_release = req.software_release.to_string();
                    inst.software_type = req.software_type.to_string();
                    inst.parameters = req.parameters.clone();
                    inst.parameter_strings = stringify(req.parameters);
                    inst.timestamp = bumped(inst.timestamp, now);
                }
                if moved {
                    inst.placement = Placement::Hosted { host };
                    if let Some(old) = current_host {
                        self.detach(old, id, now);
                    }
                    self.attach(host, id, now);
                } else if changed {
                    self.bump_regular(host, now);
                }
                Ok(Reply::Instance {
                    id,
                    changed: changed || moved,
                })
            }
            None => {
                if req.state == Some(RequestedState::Destroyed) {
                    return Err(DomainError::UnknownInstance(format!(
                        "{} (nothing to destroy)",
                        req.title
                    )));
                }
                let host = self.find_host(req, &filter)?;
                let id = InstanceId(self.next_instance + 1);
                self.next_instance += 1;
                let root = scope.tree.map_or(id, |(root, _)| root);
                let instance = Instance {
                    id,
                    title: req.title.to_string(),
                    owner: scope.owner.clone(),
                    root,
                    requester: scope.tree.map(|(_, requester)| requester),
                    software_release: req.software_release.to_string(),
                    software_type: req.software_type.to_string(),
                    parameters: req.parameters.clone(),
                    parameter_strings: stringify(req.parameters),
                    sla: req.sla.clone(),
                    own_state: RequestedState::Started,
                    requested_state: RequestedState::Started,
                    shared: true,
                    placement: Placement::Hosted { host },
                    connection: StringParams::new(),
                    hosted: Vec::new(),
                    timestamp: now,
                    access_status: None,
                    created_at: now,
                };
                self.index_new(&instance, &scope.owner);
                self.instances.insert(id, instance);
                self.attach(host, id, now);
                Ok(Reply::Instance { id, changed: true })
            }
        }
    }

    /// Whether a regular instance can host the requested shared instance.
    pub(super) fn host_admits(
        &self,
        host: InstanceId,
        req: &InstanceRequest,
        filter: &SlaFilter,
    ) -> bool {
        let Some(h) = self.instances.get(&host) else {
            return false;
        };
        if h.shared
            || h.requested_state == RequestedState::Destroyed
            || h.software_release != req.software_release
            || h.software_type != req.software_type
        {
            return false;
        }
        let Placement::Partition {
            computer,
            partition,
        } = &h.placement
        else {
            return false;
        };
        if let Some(pin) = &filter.instance {
            let pinned = InstanceId::parse(pin) == Some(host)
                || *pin == format!("{computer}-{partition}")
                || pin == partition;
            if !pinned {
                return false;
            }
        }
        self.computers
            .get(computer)
            .is_some_and(|c| filter.admits(self, c))
    }

    /// The first admitting host in (computer id, format order).
    pub(super) fn find_host(
        &self,
        req: &InstanceRequest,
        filter: &SlaFilter,
    ) -> Result<InstanceId, DomainError> {
        for c in self.computers.values() {
            for p in &c.partitions {
                if let Some(id) = p.instance {
                    if self.host_admits(id, req, filter) {
                        return Ok(id);
                    }
                }
            }
        }
        let mut reason = format!(
            "no started or stopped instance of '{}' with software type '{}'",
            req.software_release, req.software_type
        );
        if let Some(pin) = &filter.instance {
            reason.push_str(&format!(" matching instance_guid '{pin}'"));
        }
        if let Some(c) = &filter.computer {
            reason.push_str(&format!(" on computer '{c}'"));
        }
        Err(DomainError::NoSharedHost {
            title: req.title.to_string(),
            reason,
        })
    }

    pub(super) fn attach(&mut self, host: InstanceId, shared: InstanceId, now: Timestamp) {
        if let Some(h) = self.instances.get_mut(&host) {
            if !h.hosted.contains(&shared) {
                h.hosted.push(shared);
            }
        }
        self.bump_regular(host, now);
    }

    pub(super) fn detach(&mut self, host: InstanceId, shared: InstanceId, now: Timestamp) {
        let mut was_there = false;
        if let Some(h) = self.instances.get_mut(&host) {
            let before = h.hosted.len();
            h.hosted.retain(|s| *s != shared);
            was_there = h.hosted.len() != before;
        }
        if was_there {
            self.bump_regular(host, now);
        }
    }

    pub(super) fn remove_shared(&mut self, id: InstanceId, now: Timestamp) {
        if let Some(inst) = self.instances.get(&id) {
            if let Placement::Hosted { host } = inst.placement {
                self.detach(host, id, now);
            }
        }
        self.unindex(id);
        self.instances.remove(&id);
    }

    pub(super) fn index_new(&mut self, instance: &Instance, owner: &str) {
        if instance.is_root() {
            self.roots
                .insert((owner.to_string(), instance.title.to_owned()), instance.id);
            self.trees
                .insert(instance.id, BTreeSet::from([instance.id]));
        } else {
            self.trees
                .entry(instance.root)
                .or_default()
                .insert(instance.id);
        }
        self.members
            .insert((instance.root, instance.title.to_owned()), instance.id);
    }

    pub(super) fn unindex(&mut self, id: InstanceId) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        let (root, title, owner) = (inst.root, inst.title.to_owned(), inst.owner.clone());
        if inst.is_root() {
            self.roots.remove(&(owner, title.to_owned()));
            self.trees.remove(&id);
        } else if let Some(t) = self.trees.get_mut(&root) {
            t.remove(&id);
        }
        self.members.remove(&(root, title));
    }
}
