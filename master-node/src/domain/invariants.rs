//! Structural invariants of the state, checked by tests and by the chaos harness after a
//! run: every index agrees with the data it indexes.

use super::state::{Placement, State};
use std::collections::BTreeSet;

impl State {
    /// Check every cross-reference of the state; the first violation found is returned.
    pub fn check_invariants(&self) -> Result<(), String> {
        // Partitions point at regular instances placed on them, and back.
        let mut placed = BTreeSet::new();
        for c in self.computers.values() {
            let mut ids = BTreeSet::new();
            for p in &c.partitions {
                if !ids.insert(p.id.as_str()) {
                    return Err(format!("partition {} of {} listed twice", p.id, c.id));
                }
                if let Some(id) = p.instance {
                    let inst = self
                        .instances
                        .get(&id)
                        .ok_or(format!("{}/{} hosts missing {id}", c.id, p.id))?;
                    let expected = Placement::Partition {
                        computer: c.id.clone(),
                        partition: p.id.clone(),
                    };
                    if inst.shared || inst.placement != expected {
                        return Err(format!("{id} is not placed on {}/{}", c.id, p.id));
                    }
                    if !placed.insert(id) {
                        return Err(format!("{id} is placed twice"));
                    }
                }
            }
        }
        for (id, inst) in self.instances.iter() {
            if inst.id != *id {
                return Err(format!("instance keyed {id} says it is {}", inst.id));
            }
            match &inst.placement {
                Placement::Partition { .. } if !placed.contains(id) => {
                    return Err(format!("{id} claims a partition that does not host it"));
                }
                Placement::Hosted { host } => {
                    let h = self
                        .instances
                        .get(host)
                        .ok_or(format!("{id} is hosted by missing {host}"))?;
                    if !h.hosted.contains(id) {
                        return Err(format!("{host} does not list its shared {id}"));
                    }
                }
                _ => {}
            }
            if inst.shared
                != matches!(
                    inst.placement,
                    Placement::Hosted { .. } | Placement::Unplaced
                )
            {
                return Err(format!("{id}: shared flag and placement disagree"));
            }
            for s in &inst.hosted {
                let si = self
                    .instances
                    .get(s)
                    .ok_or(format!("{id} lists missing shared {s}"))?;
                if si.placement != (Placement::Hosted { host: *id }) {
                    return Err(format!("{id} lists {s}, which is hosted elsewhere"));
                }
            }
            // Indexes.
            if self.members.get(&(inst.root, inst.title.clone())) != Some(id) {
                return Err(format!(
                    "{id} '{}' missing from its tree's title index",
                    inst.title
                ));
            }
            if !self.trees.get(&inst.root).is_some_and(|t| t.contains(id)) {
                return Err(format!("{id} missing from tree {}", inst.root));
            }
            if inst.is_root() {
                if self.roots.get(&(inst.owner.clone(), inst.title.clone())) != Some(id) {
                    return Err(format!("root {id} missing from the roots index"));
                }
            } else {
                let root = self
                    .instances
                    .get(&inst.root)
                    .ok_or(format!("{id} belongs to missing root {}", inst.root))?;
                if !inst.shared && inst.requested_state < root.requested_state {
                    return Err(format!("{id} is less destroyed/stopped than its root"));
                }
            }
            if inst.requested_state < inst.own_state {
                return Err(format!("{id}: effective state below its own"));
            }
        }
        let indexed: usize = self.trees.values().map(BTreeSet::len).sum();
        if indexed != self.instances.len() || self.members.len() != self.instances.len() {
            return Err(format!(
                "indexes hold {indexed} tree entries and {} titles for {} instances",
                self.members.len(),
                self.instances.len()
            ));
        }
        let mut counts = std::collections::BTreeMap::new();
        for (client, _) in self.outcomes.keys() {
            *counts.entry(client.as_str()).or_insert(0u32) += 1;
        }
        for (client, session) in self.sessions.iter() {
            let n = counts.remove(client.as_str()).unwrap_or(0);
            if n != session.remembered {
                return Err(format!(
                    "client {client}: session counts {} outcomes, {n} are kept",
                    session.remembered
                ));
            }
        }
        if let Some((client, _)) = counts.into_iter().next() {
            return Err(format!("outcomes kept for {client}, which has no session"));
        }
        for (c, _) in self.software.keys() {
            if !self.computers.contains_key(c) {
                return Err(format!("software supplied to missing computer {c}"));
            }
        }
        Ok(())
    }
}
