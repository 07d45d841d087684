//! The Raft log, vote, committed and purged records.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::keys::{self, CF_LOG, CF_META, CF_SNAPSHOT};
use crate::{cf, sto_err, sto_msg, Db, StoreConfig, StoreError};

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// The log half of the store ([`RaftLogStorage`]). Give it to `openraft::Raft::new`;
/// keep a [`LogStats`] (from [`LogStore::stats`]) to watch the log's size.
pub struct LogStore<C> {
    db: Arc<Db>,
    size: Arc<AtomicU64>,
    /// `StoreOptions::max_read_bytes`.
    max_read_bytes: usize,
    _c: PhantomData<C>,
}

/// Reads log entries for openraft's replication tasks.
pub struct LogReader<C> {
    db: Arc<Db>,
    max_read_bytes: usize,
    _c: PhantomData<C>,
}

impl<C> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            db: self.db.clone(),
            max_read_bytes: self.max_read_bytes,
            _c: PhantomData,
        }
    }
}

/// A cloneable view of the log's size, for size-based snapshot triggers. It does not
/// keep the database open.
#[derive(Clone)]
pub struct LogStats {
    db: Weak<Db>,
    size: Arc<AtomicU64>,
}

impl LogStats {
    /// Why the store refused a write for lack of space (see
    /// `StoreOptions::min_free_bytes`), if it did since it was opened.
    pub fn space_refusal(&self) -> Option<String> {
        self.db.upgrade().and_then(|db| db.space.refused())
    }

    /// The first write RocksDB failed since the store was opened (an I/O error of its
    /// disk), if one did: the node stops rather than go on with that store.
    pub fn write_failure(&self) -> Option<String> {
        self.db.upgrade().and_then(|db| db.space.failure())
    }

    /// Bytes of the log entries currently in the log (index key + encoded entry), kept
    /// as a counter: + on append, - on truncate and purge. When it passes the
    /// application's threshold, call `raft.trigger().snapshot()`; openraft then purges
    /// the log behind the snapshot and the counter drops.
    pub fn log_size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// What the log column family takes on disk and in memtables, from RocksDB's
    /// properties (`rocksdb.total-sst-files-size` + `rocksdb.cur-size-all-mem-tables`).
    /// Purged entries keep counting here until RocksDB compacts them away.
    pub fn log_disk_bytes(&self) -> u64 {
        let Some(db) = self.db.upgrade() else {
            return 0;
        };
        let Some(cf) = db.cf_handle(CF_LOG) else {
            return 0;
        };
        let prop = |name: &str| {
            db.property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        prop("rocksdb.total-sst-files-size") + prop("rocksdb.cur-size-all-mem-tables")
    }

    /// The committed log index as last saved by openraft (None before any, or once the
    /// database is closed).
    pub fn committed_index(&self) -> Option<u64> {
        let db = self.db.upgrade()?;
        let cf = db.cf_handle(CF_META)?;
        let bytes = db.get_cf(cf, keys::META_COMMITTED).ok()??;
        let id: Option<openraft::LogId<u64>> = serde_json::from_slice(&bytes).ok()?;
        id.map(|l| l.index)
    }

    /// Size of the current snapshot, encoded, in bytes (0 when there is none).
    pub fn snapshot_size_bytes(&self) -> u64 {
        let Some(db) = self.db.upgrade() else {
            return 0;
        };
        let Some(cf) = db.cf_handle(CF_SNAPSHOT) else {
            return 0;
        };
        db.get_pinned_cf(cf, keys::SNAPSHOT_CURRENT)
            .ok()
            .flatten()
            .map_or(0, |v| v.len() as u64)
    }
}

impl<C: StoreConfig> LogStore<C> {
    pub(crate) fn new(db: Arc<Db>, max_read_bytes: usize) -> Result<Self, StoreError> {
        let log = db
            .cf_handle(CF_LOG)
            .ok_or(StoreError::MissingColumnFamily(CF_LOG))?;
        let mut size = 0u64;
        for item in db.iterator_cf(log, IteratorMode::Start) {
            let (k, v) = item?;
            size += (k.len() + v.len()) as u64;
        }
        Ok(LogStore {
            db,
            size: Arc::new(AtomicU64::new(size)),
            max_read_bytes,
            _c: PhantomData,
        })
    }

    /// See [`LogStats::log_size_bytes`].
    pub fn log_size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// A cloneable handle on the log's size that outlives the move of this store into
    /// `openraft::Raft`.
    pub fn stats(&self) -> LogStats {
        LogStats {
            db: Arc::downgrade(&self.db),
            size: self.size.clone(),
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError<u64>> {
        let meta = cf(&self.db, CF_META)?;
        let Some(bytes) = self
            .db
            .get_cf(meta, key)
            .map_err(|e| sto_err(subject.clone(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| sto_err(subject, ErrorVerb::Read, e))
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
        sync: bool,
    ) -> Result<(), StorageError<u64>> {
        let meta = cf(&self.db, CF_META)?;
        let bytes =
            serde_json::to_vec(value).map_err(|e| sto_err(subject.clone(), ErrorVerb::Write, e))?;
        let wo = if sync {
            synced()
        } else {
            WriteOptions::default()
        };
        self.db.put_cf_opt(meta, key, bytes, &wo).map_err(|e| {
            self.db.space.failed("meta", &e);
            sto_err(subject, ErrorVerb::Write, e)
        })
    }

    /// Bytes held by the entries with index in `from..=to`.
    fn bytes_in(&self, from: u64, to: u64) -> Result<u64, StorageError<u64>> {
        let log = cf(&self.db, CF_LOG)?;
        let start = keys::index_key(from);
        let mut total = 0u64;
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            match keys::key_index(&k) {
                Some(i) if i <= to => total += (k.len() + v.len()) as u64,
                _ => break,
            }
        }
        Ok(total)
    }

    fn sub_size(&self, n: u64) {
        // Only the store's own (serialized) operations change the counter.
        let cur = self.size.load(Ordering::Relaxed);
        self.size.store(cur.saturating_sub(n), Ordering::Relaxed);
    }
}

fn read_entries<C: StoreConfig, RB: RangeBounds<u64>>(
    db: &DB,
    range: RB,
) -> Result<Vec<Entry<C>>, StorageError<u64>> {
    read_entries_within::<C, RB>(db, range, 0)
}

/// The entries of `range` in order, stopping before the one that would take the stored
/// bytes read past `max_bytes` (0: no limit); the first entry is always read, whatever
/// its size. Sizes are those of the stored values (the entries' encoding), known before
/// anything is decoded.
fn read_entries_within<C: StoreConfig, RB: RangeBounds<u64>>(
    db: &DB,
    range: RB,
    max_bytes: usize,
) -> Result<Vec<Entry<C>>, StorageError<u64>> {
    let start = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => match x.checked_add(1) {
            Some(s) => s,
            None => return Ok(Vec::new()),
        },
        Bound::Unbounded => 0,
    };
    let log = cf(db, CF_LOG)?;
    let start_key = keys::index_key(start);
    let mut out = Vec::new();
    let mut read = 0usize;
    for item in db.iterator_cf(log, IteratorMode::From(&start_key, Direction::Forward)) {
        let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let index = keys::key_index(&k).ok_or_else(|| {
            sto_msg(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                format!("log key of {} bytes, expected 8", k.len()),
            )
        })?;
        if !range.contains(&index) {
            break;
        }
        read = read.saturating_add(v.len());
        if max_bytes > 0 && read > max_bytes && !out.is_empty() {
            break;
        }
        out.push(decode_entry::<C>(index, &v)?);
    }
    Ok(out)
}

fn decode_entry<C: StoreConfig>(index: u64, bytes: &[u8]) -> Result<Entry<C>, StorageError<u64>> {
    let entry: Entry<C> = crate::codec::decode_entry(bytes)
        .map_err(|e| sto_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
    if entry.log_id.index != index {
        return Err(sto_msg(
            ErrorSubject::LogIndex(index),
            ErrorVerb::Read,
            format!("entry stored at index {index} has log id {}", entry.log_id),
        ));
    }
    Ok(entry)
}

impl<C: StoreConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        read_entries::<C, _>(&self.db, range)
    }

    /// A prefix of `start..end` of at most `StoreOptions::max_read_bytes` (at least one
    /// entry).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        read_entries_within::<C, _>(&self.db, start..end, self.max_read_bytes)
    }
}

impl<C: StoreConfig> RaftLogReader<C> for LogReader<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        read_entries::<C, _>(&self.db, range)
    }

    /// What openraft sends a follower in one AppendEntries: a prefix of `start..end` of
    /// at most `StoreOptions::max_read_bytes` (at least one entry), so that reading,
    /// decoding and encoding one call stays bounded however far behind the follower is.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        read_entries_within::<C, _>(&self.db, start..end, self.max_read_bytes)
    }
}

impl<C: StoreConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let log = cf(&self.db, CF_LOG)?;
        let last = match self.db.iterator_cf(log, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                let index = keys::key_index(&k).ok_or_else(|| {
                    sto_msg(
                        ErrorSubject::Logs,
                        ErrorVerb::Read,
                        "log key is not 8 bytes",
                    )
                })?;
                Some(decode_entry::<C>(index, &v)?.log_id)
            }
        };
        let last_purged_log_id: Option<LogId<u64>> =
            self.get_meta(keys::META_PURGED, ErrorSubject::Logs)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            db: self.db.clone(),
            max_read_bytes: self.max_read_bytes,
            _c: PhantomData,
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.put_meta(keys::META_VOTE, vote, ErrorSubject::Vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_meta(keys::META_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not synced: a committed id lost with the page cache only makes the restart
        // re-apply less on its own; the leader tells the rest again (DESIGN.md).
        self.put_meta(keys::META_COMMITTED, &committed, ErrorSubject::Store, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self
            .get_meta::<Option<LogId<u64>>>(keys::META_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        if let Err(e) = self.db.space.check() {
            callback.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
            return Err(sto_err(ErrorSubject::Logs, ErrorVerb::Write, e));
        }
        let log = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        let mut added = 0u64;
        for entry in entries {
            let value = crate::codec::encode_entry(&entry)
                .map_err(|e| sto_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            let key = keys::index_key(entry.log_id.index);
            added += (key.len() + value.len()) as u64;
            batch.put_cf(log, key, value);
        }
        // Durable before it is acknowledged: a synced write, then the callback.
        match self.db.write_opt(batch, &synced()) {
            Ok(()) => {
                self.size.fetch_add(added, Ordering::Relaxed);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                self.db.space.failed("log append", &e);
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncate log since");
        let removed = self.bytes_in(log_id.index, u64::MAX)?;
        let log = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            log,
            keys::index_key(log_id.index),
            keys::index_key(u64::MAX),
        );
        batch.delete_cf(log, keys::index_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(|e| {
            self.db.space.failed("log truncate", &e);
            sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e)
        })?;
        self.sub_size(removed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purge log up to");
        // The state machine's batches may be unsynced: make them durable before the
        // entries they came from disappear, so a power loss can never leave `applied`
        // behind the first entry still in the log.
        self.db.flush_wal(true).map_err(|e| {
            self.db.space.failed("WAL flush", &e);
            sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
        })?;
        let removed = self.bytes_in(0, log_id.index)?;
        let log = cf(&self.db, CF_LOG)?;
        let meta = cf(&self.db, CF_META)?;
        let purged = serde_json::to_vec(&log_id)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, keys::META_PURGED, purged);
        match log_id.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(log, keys::index_key(0), keys::index_key(end)),
            None => {
                batch.delete_range_cf(log, keys::index_key(0), keys::index_key(u64::MAX));
                batch.delete_cf(log, keys::index_key(u64::MAX));
            }
        }
        self.db.write_opt(batch, &synced()).map_err(|e| {
            self.db.space.failed("log purge", &e);
            sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e)
        })?;
        self.sub_size(removed);
        Ok(())
    }
}
