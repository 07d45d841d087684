//! The domain state as raft-store's state machine: apply a batch of commands in order,
//! then hand over exactly the entities they wrote, and remember which computers' views
//! each applied index changed (for the gateways' long polls, see [`ViewVersions`]).

use raft_store::Changes;
use slapos_domain::{Command, Outcome, State};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// The domain's [`State`] as the replica's state machine (the domain knows nothing of
/// raft-store, raft-store nothing of SlapOS: this crate joins them). It reads as the
/// state it holds.
#[derive(Debug, Default)]
pub struct Machine {
    state: State,
    views: ViewVersions,
}

impl std::ops::Deref for Machine {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

/// How many applied batches the machine remembers the touched computers of, so that a
/// watcher that fell a little behind resumes with exactly what changed; further behind,
/// it is told to re-read everything it holds ([`Changed::Reset`]).
pub const RECENT_BATCHES: usize = 4096;

/// Per computer, the log index of the last applied entry that may have changed its
/// `getFullComputerInformation` answer: the *version* of that view. It is an upper
/// bound of the true index, never below it: after a load (start-up, installed snapshot)
/// every computer's version is the loaded index (`floor`) until something touches it.
/// That is all a long poll needs: a view read at applied index `a`, whose version is
/// `v <= a`, is the same view at every index from `v` to `a`; a node holding version `e`
/// has the current view if `version <= e`. Two replicas may give different versions for
/// the same view (one restarted), which costs a node one answer it already had, never a
/// missed change.
#[derive(Debug, Default)]
pub struct ViewVersions {
    floor: u64,
    by_computer: HashMap<String, u64>,
    /// Computers touched by the entries applied since the last `applied_through`.
    pending: BTreeSet<String>,
    /// (index, computers) of recent batches that touched any, oldest first.
    recent: VecDeque<(u64, Vec<String>)>,
}

/// What changed after an index, as a watcher is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// The computers whose views changed after the index asked about, up to `index`.
    Computers { index: u64, computers: Vec<String> },
    /// Too far back (or before this machine was loaded): every view may have changed.
    Reset { index: u64 },
}

impl ViewVersions {
    fn touch(&mut self, computers: BTreeSet<String>) {
        self.pending.extend(computers);
    }

    fn commit(&mut self, index: u64) {
        if self.pending.is_empty() {
            return;
        }
        let touched: Vec<String> = std::mem::take(&mut self.pending).into_iter().collect();
        for c in &touched {
            self.by_computer.insert(c.clone(), index);
        }
        if self.recent.len() == RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back((index, touched));
    }

    fn reset(&mut self, index: u64) {
        *self = ViewVersions {
            floor: index,
            ..ViewVersions::default()
        };
    }

    /// The version of a computer's view (see the type).
    pub fn version(&self, computer: &str) -> u64 {
        self.by_computer
            .get(computer)
            .copied()
            .unwrap_or(self.floor)
            .max(self.floor)
    }

    /// What changed after `after`, up to `applied`.
    pub fn changed_since(&self, after: u64, applied: u64) -> Changed {
        if after < self.floor {
            return Changed::Reset { index: applied };
        }
        if after >= applied {
            return Changed::Computers {
                index: applied,
                computers: Vec::new(),
            };
        }
        // The window must reach back to `after`: either it holds the first batch after
        // it, or nothing at all was forgotten since the load.
        let covered = match self.recent.front() {
            None => true,
            Some((first, _)) => {
                *first <= after.saturating_add(1) || self.recent.len() < RECENT_BATCHES
            }
        };
        if !covered {
            return Changed::Reset { index: applied };
        }
        let mut computers = BTreeSet::new();
        for (_, touched) in self.recent.iter().rev().take_while(|(i, _)| *i > after) {
            computers.extend(touched.iter().cloned());
        }
        Changed::Computers {
            index: applied,
            computers: computers.into_iter().collect(),
        }
    }
}

impl Machine {
    /// The versions of the computers' views (see [`ViewVersions`]).
    pub fn views(&self) -> &ViewVersions {
        &self.views
    }
}

impl raft_store::StateMachine for Machine {
    type Command = Vec<Command>;
    type Response = Vec<Outcome>;

    fn empty() -> Self {
        Machine {
            state: State::new(),
            views: ViewVersions::default(),
        }
    }

    fn apply(&mut self, batch: &Vec<Command>, changes: &mut Changes) -> Vec<Outcome> {
        let outcomes = batch.iter().map(|c| self.state.apply(c)).collect();
        self.views.touch(self.state.touched_computers());
        match self.state.take_changes() {
            Ok(list) => {
                for (key, value) in list {
                    match value {
                        Some(v) => changes.put(key, v),
                        None => changes.delete(key),
                    }
                }
            }
            // Encoding our own types cannot fail. If it ever
            // did, going on would leave the disk (and the snapshots built from it) behind
            // the memory for good: stop this replica instead; it restarts from its disk.
            Err(e) => {
                tracing::error!(error = %e, "cannot encode state changes; stopping");
                panic!("cannot encode state changes: {e}");
            }
        }
        outcomes
    }

    fn applied_through(&mut self, index: u64) {
        self.views.commit(index);
    }

    fn loaded_at(&mut self, index: u64) {
        self.views.reset(index);
    }

    fn load(pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        State::from_entries(pairs)
            .map(|mut state| {
                state.prepare_allocation();
                Machine {
                    state,
                    views: ViewVersions::default(),
                }
            })
            .map_err(|e| e.to_string())
    }

    /// 2: binary values, outcomes in per-client slots (1: JSON, outcomes by sequence
    /// number, sessions apart).
    const DATA_FORMAT: u32 = 2;

    fn upgrade_pair(&self, key: &[u8], value: &[u8], changes: &mut Changes) -> Result<(), String> {
        for (k, v) in self
            .state
            .upgrade_pair(key, value)
            .map_err(|e| e.to_string())?
        {
            match v {
                Some(v) => changes.put(k, v),
                None => changes.delete(k),
            }
        }
        Ok(())
    }

    fn upgrade_finish(&self, changes: &mut Changes) -> Result<(), String> {
        for (k, v) in self.state.upgrade_outcomes().map_err(|e| e.to_string())? {
            match v {
                Some(v) => changes.put(k, v),
                None => changes.delete(k),
            }
        }
        Ok(())
    }

    fn blank_response() -> Vec<Outcome> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_are_the_last_index_that_touched_a_computer() {
        let mut v = ViewVersions::default();
        v.reset(10);
        assert_eq!(v.version("A"), 10, "after a load: the loaded index");
        v.touch(set(&["A"]));
        v.commit(12);
        v.commit(13); // nothing touched
        v.touch(set(&["B"]));
        v.commit(15);
        assert_eq!(
            (v.version("A"), v.version("B"), v.version("C")),
            (12, 15, 10)
        );
        assert_eq!(
            v.changed_since(12, 15),
            Changed::Computers {
                index: 15,
                computers: vec!["B".into()]
            }
        );
        assert_eq!(
            v.changed_since(11, 15),
            Changed::Computers {
                index: 15,
                computers: vec!["A".into(), "B".into()]
            }
        );
        assert_eq!(v.changed_since(9, 15), Changed::Reset { index: 15 });
        assert_eq!(
            v.changed_since(15, 15),
            Changed::Computers {
                index: 15,
                computers: vec![]
            }
        );
    }

    #[test]
    fn a_watcher_further_behind_than_the_window_is_reset() {
        let mut v = ViewVersions::default();
        v.reset(0);
        for i in 1..=(RECENT_BATCHES as u64 + 10) {
            v.touch(set(&[&format!("C{}", i % 7)]));
            v.commit(i);
        }
        let last = RECENT_BATCHES as u64 + 10;
        assert_eq!(v.changed_since(3, last), Changed::Reset { index: last });
        match v.changed_since(last - 2, last) {
            Changed::Computers { computers, .. } => assert_eq!(computers.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
