//! The domain state as raft-store's state machine: apply a batch of commands in order,
//! then hand over exactly the entities they wrote.

use raft_store::Changes;
use slapos_domain::{Command, Outcome, State};

/// The domain's [`State`] as the replica's state machine (the domain knows nothing of
/// raft-store, raft-store nothing of SlapOS: this crate joins them). It reads as the
/// state it holds.
#[derive(Debug, Default)]
pub struct Machine(pub State);

impl std::ops::Deref for Machine {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

impl raft_store::StateMachine for Machine {
    type Command = Vec<Command>;
    type Response = Vec<Outcome>;

    fn empty() -> Self {
        Machine(State::new())
    }

    fn apply(&mut self, batch: &Vec<Command>, changes: &mut Changes) -> Vec<Outcome> {
        let outcomes = batch.iter().map(|c| self.0.apply(c)).collect();
        match self.0.take_changes() {
            Ok(list) => {
                for (key, value) in list {
                    match value {
                        Some(v) => changes.put(key, v),
                        None => changes.delete(key),
                    }
                }
            }
            // Encoding our own types to JSON cannot fail (string keys only). If it ever
            // did, going on would leave the disk (and the snapshots built from it) behind
            // the memory for good: stop this replica instead; it restarts from its disk.
            Err(e) => {
                tracing::error!(error = %e, "cannot encode state changes; stopping");
                panic!("cannot encode state changes: {e}");
            }
        }
        outcomes
    }

    fn load(pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        State::from_entries(pairs)
            .map(Machine)
            .map_err(|e| e.to_string())
    }

    fn blank_response() -> Vec<Outcome> {
        Vec::new()
    }
}
