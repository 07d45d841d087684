//! Errors of the crate's own API. Inside openraft's storage traits, errors are
//! `openraft::StorageError<u64>` (see `crate::sto_err`).

use std::path::PathBuf;

/// Why a snapshot was refused. Decoding checks everything before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is truncated: {needed} more bytes needed at offset {offset} ({what})")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("not a raft-store snapshot (bad magic)")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("snapshot header is not valid: {0}")]
    BadHeader(String),
    #[error("snapshot keys are not strictly increasing at pair {index}")]
    KeysNotSorted { index: u64 },
    #[error("snapshot declares {declared} pairs but {trailing} bytes remain after pair {read}")]
    TrailingBytes {
        declared: u64,
        read: u64,
        trailing: usize,
    },
    #[error("snapshot header does not match the metadata it was sent with: {0}")]
    MetaMismatch(String),
    #[error("the state machine refused the snapshot data: {0}")]
    Load(String),
}

/// Errors of `open` and of the read helpers given to the application.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create or use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("RocksDB: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("column family `{0}` is missing")]
    MissingColumnFamily(&'static str),
    #[error(
        "store format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("the state machine refused the persisted data: {0}")]
    Load(String),
    #[error("stored snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("the state machine store was closed")]
    Closed,
}
