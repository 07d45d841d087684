//! openraft 0.9 storage on RocksDB: a durable Raft log, a state-machine store whose data
//! lives in memory and is persisted through key/value changes, and snapshots.
//!
//! The crate is generic: it knows an application only through [`StateMachine`] and the
//! openraft type configuration ([`StoreConfig`]). See `DESIGN.md` for the layout, the
//! durability rules and the snapshot format.
//!
//! ```ignore
//! let (log_store, sm_store) = raft_store::open::<TypeConfig, Machine>(dir, StoreOptions::default()).await?;
//! let reads = sm_store.handle();      // local reads: reads.read(|m, applied| ...)
//! let log_stats = log_store.stats();  // log_stats.log_size_bytes() -> raft.trigger().snapshot()
//! let raft = openraft::Raft::new(id, config, network, log_store, sm_store).await?;
//! // ... raft.shutdown().await; drop(raft); reads.wait_closed().await; // before reopening
//! ```

#![forbid(unsafe_code)]
// openraft's trait methods return `StorageError<u64>` (224 bytes); the crate's internal
// helpers return the same type so that `?` carries it unchanged.
#![allow(clippy::result_large_err)]

pub mod codec;
mod error;
mod keys;
mod log_store;
mod sm_store;
pub mod snapshot;

use std::io::Cursor;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftTypeConfig, StorageError, StorageIOError};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use error::{SnapshotError, StoreError};
pub use keys::{CF_LOG, CF_META, CF_SM, CF_SNAPSHOT};
pub use log_store::{LogReader, LogStats, LogStore};
pub use sm_store::{
    DiskView, Pairs, SnapshotBuilder, StateDigest, StateMachineHandle, StateMachineStore,
};

/// A replicated state machine that keeps its data in memory and persists it through
/// key/value changes written in the same RocksDB batch as the last applied log id.
pub trait StateMachine: Sized + Send + Sync + 'static {
    type Command; // = C::D
    type Response; // = C::R
    /// An empty machine, before any command.
    fn empty() -> Self;
    /// Apply one committed command. Must be deterministic. Every persisted key whose
    /// value changed is recorded in `changes` (put or delete).
    fn apply(&mut self, command: &Self::Command, changes: &mut Changes) -> Self::Response;
    /// Rebuild from every persisted pair (start-up, and after a snapshot is installed).
    fn load(pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String>;
    /// The version of the layout of the pairs `apply` writes. A store whose pairs are of
    /// an older version (recorded in `meta` at open; 1 when absent) is upgraded when it is
    /// opened, and so is the data of a snapshot installed from a replica of an earlier
    /// release: [`Self::upgrade_pair`] for every pair, then [`Self::upgrade_finish`].
    const DATA_FORMAT: u32 = 1;
    /// The changes that bring one stored pair to the current layout (`self` is the
    /// machine loaded from the old pairs). Must leave pairs already in the current layout
    /// alone.
    fn upgrade_pair(
        &self,
        _key: &[u8],
        _value: &[u8],
        _changes: &mut Changes,
    ) -> Result<(), String> {
        Ok(())
    }
    /// Changes written once every pair was upgraded.
    fn upgrade_finish(&self, _changes: &mut Changes) -> Result<(), String> {
        Ok(())
    }
    /// The response given for log entries that carry no command (openraft's blank entries,
    /// written by every new leader, and membership entries). Nobody waits on it in
    /// practice, but openraft wants one response per applied entry.
    fn blank_response() -> Self::Response;
    /// Called under the write lock after the entries of one `apply` batch, with the
    /// index of the last of them, before readers can see it: a machine that keeps
    /// per-index bookkeeping (which views the batch changed) records it here.
    fn applied_through(&mut self, _index: u64) {}
    /// Called once a machine was loaded (at start-up, or from an installed snapshot)
    /// with the index it reflects (0: nothing applied).
    fn loaded_at(&mut self, _index: u64) {}
}

/// The persisted key/value changes made by the commands of one `apply` call, in order.
/// A later change of the same key wins (they go into one RocksDB `WriteBatch` in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Changes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `key` now holds `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Record that `key` no longer exists.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The changes in the order they were recorded; `None` is a delete.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        self.ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

/// The openraft type configurations this store serves: node ids are `u64`, entries are
/// `openraft::Entry<C>`, snapshots travel as `Cursor<Vec<u8>>`, the runtime is tokio.
/// Implemented for every such `RaftTypeConfig`, e.g. one declared with
/// `openraft::declare_raft_types!(pub TypeConfig: D = Cmd, R = Resp, Node = MyNode)`.
pub trait StoreConfig:
    RaftTypeConfig<
    NodeId = u64,
    Entry = openraft::Entry<Self>,
    SnapshotData = Cursor<Vec<u8>>,
    AsyncRuntime = openraft::TokioRuntime,
>
{
}

impl<C> StoreConfig for C where
    C: RaftTypeConfig<
        NodeId = u64,
        Entry = openraft::Entry<C>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
    >
{
}

/// Options of [`open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync every state-machine batch. Off by default: the log is synced before it is
    /// acknowledged, and openraft re-applies committed entries after the durable
    /// `applied` on start-up (see DESIGN.md).
    pub sync_state_machine: bool,
    /// How many RocksDB info LOG files to keep in the data directory.
    pub keep_info_log_files: usize,
    /// Memtable memory of all column families together, in bytes.
    pub write_buffer_bytes: usize,
    /// Free space the data directory's filesystem must keep: a log append or an apply
    /// that would start with less free is refused (a storage error, which stops the
    /// Raft node) instead of letting RocksDB run out of space in the middle of a write.
    /// 0: no check.
    pub min_free_bytes: u64,
    /// The most bytes of stored entries (each entry's encoding, as it goes on the wire)
    /// one `limited_get_log_entries` returns, at least one entry whatever its size:
    /// what openraft reads, decodes and hands the network for one AppendEntries. Without
    /// it openraft takes up to `Config::max_payload_entries` entries, which for a
    /// follower far behind on large entries is tens of MiB to decode and encode again
    /// for each call. 0: no limit.
    pub max_read_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_state_machine: false,
            keep_info_log_files: 3,
            write_buffer_bytes: 32 << 20,
            min_free_bytes: 0,
            max_read_bytes: 1 << 20,
        }
    }
}

/// Opens (or creates, mode 0700) the store in `path`: one RocksDB with the column
/// families `log`, `meta`, `sm` and `snapshot`, shared by both halves. The in-memory
/// machine is rebuilt with [`StateMachine::load`] and the applied state read back, so a
/// restart does not replay the log.
pub async fn open<C, SM>(
    path: &Path,
    options: StoreOptions,
) -> Result<(LogStore<C>, StateMachineStore<C, SM>), StoreError>
where
    C: StoreConfig,
    SM: StateMachine<Command = C::D, Response = C::R>,
{
    create_private_dir(path)?;

    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_keep_log_file_num(options.keep_info_log_files.max(1));
    // Errors only in RocksDB's info LOG: Debian's librocksdb is built with assertions,
    // and its logger asserts (aborting the process) when the LOG file, which lives on
    // the data disk, is written again after a failed write. At the default level the
    // error handler's own messages did that on the first I/O error of a disk, inside
    // the failing write, before the replica could say why it stops (tests/disk_eio.rs).
    db_opts.set_log_level(rocksdb::LogLevel::Error);
    // One budget for the memtables of all column families: large batches (a fleet's
    // usage journals in the log, their movements in `sm`) would otherwise keep up to
    // 64 MiB per family resident before a flush.
    db_opts.set_db_write_buffer_size(options.write_buffer_bytes);
    let cfs = keys::ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = Arc::new(Db {
        db: DB::open_cf_descriptors(&db_opts, path, cfs)?,
        closed: CloseSignal(Arc::new(AtomicBool::new(false))),
        space: Space {
            path: path.to_path_buf(),
            min_free: options.min_free_bytes,
            refused: std::sync::Mutex::new(None),
            failed: std::sync::Mutex::new(None),
        },
    });
    for name in keys::ALL_CFS {
        if db.cf_handle(name).is_none() {
            return Err(StoreError::MissingColumnFamily(name));
        }
    }
    check_format(&db)?;

    let log_store = LogStore::<C>::new(db.clone(), options.max_read_bytes)?;
    let sm_store = StateMachineStore::<C, SM>::new(db, &options)?;
    Ok((log_store, sm_store))
}

/// Writes a new store at `path` (which must not hold one) holding `pairs` as the state
/// machine's, applied up to `applied`, with `membership` as its applied membership and
/// the log purged up to `applied`: opened, it serves that state at that index and its
/// first new entry is `applied.index + 1` (a group restored from a backup). `vote`
/// should carry at least the applied entry's term, so that the next leader's term is
/// above it. The meta records are written only once every pair was; a failure leaves a
/// directory to remove.
pub fn restore<C: StoreConfig>(
    path: &Path,
    pairs: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), String>>,
    applied: openraft::LogId<u64>,
    membership: openraft::StoredMembership<u64, C::Node>,
    vote: openraft::Vote<u64>,
) -> Result<u64, StoreError> {
    if path.exists()
        && std::fs::read_dir(path)
            .map_err(|source| StoreError::DataDir {
                path: path.to_path_buf(),
                source,
            })?
            .next()
            .is_some()
    {
        return Err(StoreError::DataDir {
            path: path.to_path_buf(),
            source: std::io::Error::other("not empty: a restore starts a new store"),
        });
    }
    create_private_dir(path)?;
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    let cfs = keys::ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
    check_format(&db)?;
    let sm = db
        .cf_handle(keys::CF_SM)
        .ok_or(StoreError::MissingColumnFamily(keys::CF_SM))?;
    let meta = db
        .cf_handle(keys::CF_META)
        .ok_or(StoreError::MissingColumnFamily(keys::CF_META))?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.disable_wal(true);
    let mut batch = rocksdb::WriteBatch::default();
    let mut n = 0u64;
    for pair in pairs {
        let (k, v) = pair.map_err(StoreError::Load)?;
        batch.put_cf(sm, k, v);
        n += 1;
        if batch.len() >= 10_000 {
            db.write_opt(std::mem::take(&mut batch), &wo)?;
        }
    }
    db.write_opt(batch, &wo)?;
    db.flush_cf(sm)?;
    let mut batch = rocksdb::WriteBatch::default();
    let encode = |what: &str, r: serde_json::Result<Vec<u8>>| {
        r.map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
    };
    batch.put_cf(
        meta,
        keys::META_APPLIED,
        encode("applied", serde_json::to_vec(&applied))?,
    );
    batch.put_cf(
        meta,
        keys::META_PURGED,
        encode("purged", serde_json::to_vec(&applied))?,
    );
    batch.put_cf(
        meta,
        keys::META_VOTE,
        encode("vote", serde_json::to_vec(&vote))?,
    );
    batch.put_cf(
        meta,
        keys::META_MEMBERSHIP,
        encode("membership", serde_json::to_vec(&membership))?,
    );
    let mut synced = rocksdb::WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced)?;
    db.flush_wal(true)?;
    Ok(n)
}

fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let dir_err = |source| StoreError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        let meta = std::fs::metadata(path).map_err(dir_err)?;
        if !meta.is_dir() {
            return Err(dir_err(std::io::Error::other("not a directory")));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "raft data directory is readable by group or others"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(dir_err)?;
    // The umask cannot widen 0700, but make the mode exact whatever it is.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
    Ok(())
}

fn check_format(db: &DB) -> Result<(), StoreError> {
    let meta = db
        .cf_handle(keys::CF_META)
        .ok_or(StoreError::MissingColumnFamily(keys::CF_META))?;
    match db.get_cf(meta, keys::META_FORMAT)? {
        None => {
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(
                meta,
                keys::META_FORMAT,
                keys::STORE_FORMAT.to_be_bytes(),
                &wo,
            )?;
            Ok(())
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("format record is not 4 bytes".into()))?;
            if found != keys::STORE_FORMAT {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: keys::STORE_FORMAT,
                });
            }
            Ok(())
        }
    }
}

/// The RocksDB shared by both halves of the store. Fields drop in order: RocksDB is
/// closed (and its LOCK released) before `closed` is raised, so a handle that sees
/// `closed` knows the directory can be opened again.
pub(crate) struct Db {
    db: DB,
    closed: CloseSignal,
    pub(crate) space: Space,
}

/// The free-space reserve of a store's filesystem (`StoreOptions::min_free_bytes`).
pub(crate) struct Space {
    path: std::path::PathBuf,
    min_free: u64,
    /// Why the last write was refused (kept: the node reports it).
    refused: std::sync::Mutex<Option<String>>,
    /// The first write RocksDB failed (an I/O error of the disk: EIO, ENOSPC...), kept:
    /// the node reports it and stops.
    failed: std::sync::Mutex<Option<String>>,
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, StoreError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| StoreError::DataDir {
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    })?;
    Ok(s.blocks_available().saturating_mul(s.fragment_size()))
}

impl Space {
    /// Refuses a write when the filesystem has less free than the reserve.
    pub(crate) fn check(&self) -> Result<(), std::io::Error> {
        if self.min_free == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.path).map_err(std::io::Error::other)?;
        if free >= self.min_free {
            return Ok(());
        }
        let why = format!(
            "no space left for the store: {free} bytes free on the filesystem of {}, under its reserve of {} bytes",
            self.path.display(),
            self.min_free
        );
        tracing::error!("{why}; this replica stops writing");
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(why.clone());
        }
        Err(std::io::Error::new(std::io::ErrorKind::StorageFull, why))
    }

    pub(crate) fn refused(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }

    /// A write RocksDB failed: said at once (before anything else touches a store that
    /// may not survive it: Debian's RocksDB asserts on a writer's second use after an
    /// I/O error) and kept, the first one only. The caller returns the error to
    /// openraft, which stops the node.
    pub(crate) fn failed(&self, what: &str, e: &rocksdb::Error) {
        let why = format!("the store could not write ({what}): {e}");
        tracing::error!("{why}; this replica stops");
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(why);
        }
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

pub(crate) struct CloseSignal(Arc<AtomicBool>);

impl Drop for CloseSignal {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Db {
    pub(crate) fn closed_flag(&self) -> Arc<AtomicBool> {
        self.closed.0.clone()
    }
}

impl std::ops::Deref for Db {
    type Target = DB;
    fn deref(&self) -> &DB {
        &self.db
    }
}

/// Builds openraft's storage error.
pub(crate) fn sto_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// Builds openraft's storage error from a message.
pub(crate) fn sto_msg(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    msg: impl ToString,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::error(msg)).into()
}

/// Looks a column family up, as openraft's error.
pub(crate) fn cf<'a>(
    db: &'a DB,
    name: &'static str,
) -> Result<&'a rocksdb::ColumnFamily, StorageError<u64>> {
    db.cf_handle(name).ok_or_else(|| {
        sto_msg(
            ErrorSubject::Store,
            ErrorVerb::Read,
            format!("column family `{name}` is missing"),
        )
    })
}
