//! A new group from a backup (issue 25): the backup's persisted pairs become a fresh
//! store for one replica, applied up to the backup's index, with that replica as the
//! group's only voter and a **new group id** (`slapos_domain::restore_entry` rewrites the
//! authority's record), so the old group's replicas, whose certificates the same
//! authority signed, cannot join it by mistake (`network::GROUP_HEADER`). Started, the
//! replica elects itself; the usual `cluster bootstrap` hosts the group in partitions
//! again.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::ReplicaConfig;
use crate::types::NodeId;

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub pairs: u64,
    pub index: u64,
    pub group: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} is not empty: a restore starts a new replica in an empty data directory")]
    NotEmpty(String),
    #[error("the backup names no applied index: {0}")]
    Applied(String),
    #[error(
        "replica id {0} was retired by the group this backup comes from: restore under another id"
    )]
    Retired(NodeId),
    #[error("the backup holds no certificate authority: the restored group could not tell its replicas from the old group's")]
    NoAuthority,
    #[error("a new group id: {0}")]
    GroupId(#[from] slapos_ca::CaError),
    #[error(transparent)]
    Store(#[from] raft_store::StoreError),
    #[error("cannot remove the partly restored {path}: {source}")]
    Cleanup {
        path: String,
        source: std::io::Error,
    },
}

/// Writes the backup's `pairs` (taken at `applied`, the header's JSON log id) into the
/// empty data directory of `config`'s replica. On failure the directory is removed
/// (it was empty before).
pub fn restore(
    config: &ReplicaConfig,
    applied: &serde_json::Value,
    pairs: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), String>>,
) -> Result<Restored, RestoreError> {
    let applied: openraft::LogId<u64> = serde_json::from_value(applied.clone())
        .map_err(|e| RestoreError::Applied(e.to_string()))?;
    let dir = &config.data_dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(RestoreError::NotEmpty(dir.display().to_string()));
    }
    let group = slapos_ca::new_group_id()?;
    let id = config.id;
    let mut retired = false;
    let mut authority = false;
    let mut entries = pairs.map(|pair| {
        let (k, v) = pair?;
        let e = slapos_domain::restore_entry(k, v, &group).map_err(|e| e.to_string())?;
        retired |= e.retired_replica == Some(id);
        authority |= e.authority;
        Ok((e.key, e.value))
    });
    let members = BTreeMap::from([(id, config.node_info())]);
    let membership = openraft::StoredMembership::new(
        Some(applied),
        openraft::Membership::new(vec![BTreeSet::from([id])], members),
    );
    // The next election's term is above every term in the restored state.
    let vote = openraft::Vote::new(applied.leader_id.term, id);
    let written = raft_store::restore::<crate::TypeConfig>(
        &config.data_dir,
        &mut entries,
        applied,
        membership,
        vote,
    );
    drop(entries);
    let refused = match written {
        Ok(_) if retired => RestoreError::Retired(id),
        Ok(_) if !authority => RestoreError::NoAuthority,
        Ok(pairs) => {
            tracing::info!(pairs, index = applied.index, %group, "restored a new group from a backup");
            return Ok(Restored {
                pairs,
                index: applied.index,
                group,
            });
        }
        Err(e) => e.into(),
    };
    // It was empty (checked above): nothing but this restore's writes is removed.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| RestoreError::Cleanup {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Err(refused)
}
