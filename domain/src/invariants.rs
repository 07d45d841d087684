//! Structural invariants of the state, checked by tests and by the chaos harness after a
//! run: every index agrees with the data it indexes.

use super::records::Placement;
use super::state::State;
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
        self.check_ledger()
    }

    /// Hosting is billed exactly while an instance is started on a partition; journals
    /// and indexes point at movements that exist.
    fn check_ledger(&self) -> Result<(), String> {
        use super::movements::MovementKind;
        for (id, inst) in self.instances.iter() {
            let billed = super::ledger::is_billed(inst);
            let open = self.open_hosting.get(id);
            if billed != open.is_some() {
                return Err(format!(
                    "{id}: started on a partition is {billed}, open hosting movement is {open:?}"
                ));
            }
        }
        let mut open = 0;
        for (id, m) in self.movements.iter() {
            if m.id != *id || *id >= self.next_movement {
                return Err(format!(
                    "movement keyed {id} says {} (next {})",
                    m.id, self.next_movement
                ));
            }
            if m.quantity.is_none() != m.stop.is_none() {
                return Err(format!("movement {id}: quantity and stop disagree"));
            }
            if m.stop.is_none() {
                open += 1;
                let instance = m
                    .instance
                    .ok_or(format!("open movement {id} has no instance"))?;
                if m.kind != MovementKind::Hosting || self.open_hosting.get(&instance) != Some(id) {
                    return Err(format!(
                        "open movement {id} is not the open hosting of {instance}"
                    ));
                }
            }
            if !self
                .by_customer
                .get(&m.destination.as_deref().map(str::to_string))
                .is_some_and(|s| s.contains(id))
            {
                return Err(format!("movement {id} missing from its customer's index"));
            }
        }
        if open != self.open_hosting.len() {
            return Err(format!(
                "{open} open movements, {} indexed",
                self.open_hosting.len()
            ));
        }
        let indexed: usize = self.by_customer.values().map(BTreeSet::len).sum();
        if indexed != self.movements.len() {
            return Err(format!(
                "{indexed} movements indexed by customer, {} kept",
                self.movements.len()
            ));
        }
        for ((computer, key), record) in self.journals.iter() {
            if record.first_movement + record.movements > self.next_movement {
                return Err(format!(
                    "journal {computer}/{key:?} lists movements not handed out"
                ));
            }
        }
        Ok(())
    }
}
