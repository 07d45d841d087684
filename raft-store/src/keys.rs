//! Column families and key layout.

/// Raft log entries: key = index as big-endian u64, value = JSON `openraft::Entry<C>`.
pub const CF_LOG: &str = "log";
/// Small records of the log and state-machine stores (keys below), JSON values.
pub const CF_META: &str = "meta";
/// The state machine's own key/value pairs, exactly as `Changes` wrote them.
pub const CF_SM: &str = "sm";
/// The current snapshot, encoded (see `snapshot`), under `SNAPSHOT_CURRENT`.
pub const CF_SNAPSHOT: &str = "snapshot";

pub const ALL_CFS: [&str; 4] = [CF_LOG, CF_META, CF_SM, CF_SNAPSHOT];

/// meta: u32 big-endian, the layout version of this store.
pub const META_FORMAT: &[u8] = b"format";
/// meta: `Vote<u64>` (written synced).
pub const META_VOTE: &[u8] = b"vote";
/// meta: `Option<LogId<u64>>`, the last committed log id openraft saved.
pub const META_COMMITTED: &[u8] = b"committed";
/// meta: `LogId<u64>`, the last purged log id (written synced, in the purge batch).
pub const META_PURGED: &[u8] = b"purged";
/// meta: `LogId<u64>`, last applied; always in the same batch as the `sm` changes.
pub const META_APPLIED: &[u8] = b"applied";
/// meta: `StoredMembership<u64, Node>`, last applied membership; same batch as `applied`.
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// meta: `SnapshotMeta<u64, Node>` of the current snapshot; same batch as the snapshot bytes.
pub const META_SNAPSHOT: &[u8] = b"snapshot_meta";
/// meta: u32 big-endian, the application's data layout version (`StateMachine::DATA_FORMAT`).
pub const META_DATA_FORMAT: &[u8] = b"data_format";
/// snapshot: the encoded current snapshot.
pub const SNAPSHOT_CURRENT: &[u8] = b"current";

/// Layout version written under `META_FORMAT`.
pub const STORE_FORMAT: u32 = 1;

/// Big-endian so that RocksDB's byte order is index order.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn key_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The smallest key strictly greater than `key` (for exclusive range ends).
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}
