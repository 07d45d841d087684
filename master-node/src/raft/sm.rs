//! The domain state as raft-store's state machine: apply, then hand over exactly the
//! entities the command wrote.

use crate::domain::{Command, Outcome, Reply, State};
use raft_store::Changes;

impl raft_store::StateMachine for State {
    type Command = Command;
    type Response = Outcome;

    fn empty() -> Self {
        State::new()
    }

    fn apply(&mut self, command: &Command, changes: &mut Changes) -> Outcome {
        let outcome = State::apply(self, command);
        match self.take_changes() {
            Ok(list) => {
                for (key, value) in list {
                    match value {
                        Some(v) => changes.put(key, v),
                        None => changes.delete(key),
                    }
                }
            }
            // Encoding our own types to JSON cannot fail (string keys only); if it ever
            // did, the entity would be missing from disk until the next snapshot.
            Err(e) => tracing::error!(error = %e, "cannot encode state changes"),
        }
        outcome
    }

    fn load(pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        State::from_entries(pairs).map_err(|e| e.to_string())
    }

    fn blank_response() -> Outcome {
        Ok(Reply::Done)
    }
}
