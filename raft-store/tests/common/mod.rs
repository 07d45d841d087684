//! A tiny type configuration and key/value machine for the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use openraft::{BasicNode, Entry, EntryPayload, LogId, Membership};
use raft_store::{Changes, LogStore, StateMachine, StateMachineStore, StoreOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    Set { key: String, value: String },
    Del { key: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resp(pub Option<String>);

openraft::declare_raft_types!(
    pub TC: D = Cmd, R = Resp, Node = BasicNode
);

const PREFIX: &str = "kv/";

/// A key/value map; `applies` counts the commands applied since it was built or loaded
/// (it is not persisted), so tests can tell whether anything was re-applied.
#[derive(Debug, Default)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
    pub applies: u64,
}

impl StateMachine for Kv {
    type Command = Cmd;
    type Response = Resp;

    fn empty() -> Self {
        Kv::default()
    }

    fn apply(&mut self, command: &Cmd, changes: &mut Changes) -> Resp {
        self.applies += 1;
        match command {
            Cmd::Set { key, value } => {
                changes.put(format!("{PREFIX}{key}"), value.as_bytes());
                Resp(self.map.insert(key.clone(), value.clone()))
            }
            Cmd::Del { key } => {
                changes.delete(format!("{PREFIX}{key}"));
                Resp(self.map.remove(key))
            }
        }
    }

    fn load(pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let k = String::from_utf8(k).map_err(|e| format!("key: {e}"))?;
            let k = k
                .strip_prefix(PREFIX)
                .ok_or_else(|| format!("unexpected key {k:?}"))?
                .to_string();
            let v = String::from_utf8(v).map_err(|e| format!("value of {k}: {e}"))?;
            map.insert(k, v);
        }
        Ok(Kv { map, applies: 0 })
    }

    fn blank_response() -> Resp {
        Resp(None)
    }
}

pub type Logs = LogStore<TC>;
pub type Sm = StateMachineStore<TC, Kv>;

pub async fn open(path: &Path) -> (Logs, Sm) {
    raft_store::open::<TC, Kv>(path, StoreOptions::default())
        .await
        .expect("open store")
}

pub fn lid(term: u64, index: u64) -> LogId<u64> {
    openraft::testing::log_id(term, 1, index)
}

pub fn set(term: u64, index: u64, key: &str, value: &str) -> Entry<TC> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Cmd::Set {
            key: key.into(),
            value: value.into(),
        }),
    }
}

pub fn del(term: u64, index: u64, key: &str) -> Entry<TC> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Cmd::Del { key: key.into() }),
    }
}

pub fn blank(term: u64, index: u64) -> Entry<TC> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry<TC> {
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("node-{id}"))))
        .collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![voters.iter().copied().collect()],
            nodes,
        )),
    }
}

/// Entries have no PartialEq: compare their JSON.
pub fn json(entries: &[Entry<TC>]) -> Vec<String> {
    entries
        .iter()
        .map(|e| serde_json::to_string(e).expect("entry json"))
        .collect()
}

pub fn empty_cursor() -> Cursor<Vec<u8>> {
    Cursor::new(Vec::new())
}
