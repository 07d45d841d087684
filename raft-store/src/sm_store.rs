//! The state-machine half: the application's machine in memory, its pairs in the `sm`
//! column family, applied state and membership in `meta`, the current snapshot in
//! `snapshot`.

use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use tokio::sync::watch;

use crate::keys::{self, CF_META, CF_SM, CF_SNAPSHOT};
use crate::snapshot::{self, Crc32c, SnapshotEncoder};
use crate::{
    cf, sto_err, sto_msg, Changes, Db, SnapshotError, StateMachine, StoreConfig, StoreError,
    StoreOptions,
};

/// Persisted key/value pairs of the machine, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

type Meta<C> = SnapshotMeta<u64, <C as openraft::RaftTypeConfig>::Node>;
type Membership<C> = StoredMembership<u64, <C as openraft::RaftTypeConfig>::Node>;

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// The state-machine half of the store ([`RaftStateMachine`]). Give it to
/// `openraft::Raft::new`; keep a [`StateMachineHandle`] (from [`Self::handle`]) for reads.
pub struct StateMachineStore<C: StoreConfig, SM> {
    db: Arc<Db>,
    machine: Arc<RwLock<SM>>,
    last_applied: Option<LogId<u64>>,
    last_membership: Membership<C>,
    applied_tx: watch::Sender<Option<LogId<u64>>>,
    applied_rx: watch::Receiver<Option<LogId<u64>>>,
    /// Serializes writes of the current snapshot (builder task vs. install).
    snapshot_lock: Arc<Mutex<()>>,
    apply_write: WriteOptions,
}

/// Builds a snapshot from a consistent RocksDB view, off the async threads.
pub struct SnapshotBuilder<C> {
    db: Arc<Db>,
    snapshot_lock: Arc<Mutex<()>>,
    _c: PhantomData<C>,
}

/// Read access for the application: the in-memory machine and how far it is applied.
/// It does not keep the database open: once openraft drops the store (after
/// `Raft::shutdown`), the `persisted_*` reads fail with [`StoreError::Closed`] and the
/// directory can be opened again; `read` keeps serving the last in-memory state.
pub struct StateMachineHandle<SM> {
    db: Weak<Db>,
    closed: Arc<AtomicBool>,
    machine: Arc<RwLock<SM>>,
    applied: watch::Receiver<Option<LogId<u64>>>,
}

impl<SM> Clone for StateMachineHandle<SM> {
    fn clone(&self) -> Self {
        StateMachineHandle {
            db: self.db.clone(),
            closed: self.closed.clone(),
            machine: self.machine.clone(),
            applied: self.applied.clone(),
        }
    }
}

/// A digest of the persisted state-machine pairs at one applied log id, to compare
/// replicas: equal digests at equal `last_applied` mean (with CRC confidence) equal bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    pub last_applied: Option<LogId<u64>>,
    pub pairs: u64,
    pub bytes: u64,
    /// CRC-32C over every pair as `key_len u32 BE | key | value_len u32 BE | value`.
    pub crc32c: u32,
}

impl<SM> StateMachineHandle<SM> {
    /// The shared machine. Prefer [`Self::read`], which also gives the applied log id.
    pub fn machine(&self) -> &Arc<RwLock<SM>> {
        &self.machine
    }

    /// Runs `f` on the machine under its read lock, with the last applied log id that
    /// the machine reflects (both are updated under the write lock, so they agree).
    pub fn read<R>(&self, f: impl FnOnce(&SM, Option<LogId<u64>>) -> R) -> R {
        let guard = self.machine.read().unwrap_or_else(PoisonError::into_inner);
        let applied = *self.applied.borrow();
        f(&guard, applied)
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        *self.applied.borrow()
    }

    /// A receiver that sees every change of the last applied log id.
    pub fn subscribe(&self) -> watch::Receiver<Option<LogId<u64>>> {
        self.applied.clone()
    }

    /// Waits until the machine has applied `index` (e.g. the read index a leader gave),
    /// and returns the applied log id then. Fails once the store is dropped.
    pub async fn wait_applied(&self, index: u64) -> Result<Option<LogId<u64>>, StoreError> {
        let mut rx = self.applied.clone();
        let v = rx
            .wait_for(|a| a.is_some_and(|l| l.index >= index))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(*v)
    }

    /// Waits until nobody holds the database any more: after `Raft::shutdown`, openraft's
    /// own tasks (state-machine worker, replication, snapshot building) drop their part
    /// of the store a little later. Await this before opening the same directory again.
    pub async fn wait_closed(&self) {
        while !self.closed.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Every persisted pair of the machine and the applied log id they reflect, read
    /// from one RocksDB snapshot.
    pub fn persisted_pairs(&self) -> Result<(Option<LogId<u64>>, Pairs), StoreError> {
        let mut pairs = Vec::new();
        let applied = self.scan_persisted(|k, v| pairs.push((k.to_vec(), v.to_vec())))?;
        Ok((applied, pairs))
    }

    /// A consistent copy of the state, online: every persisted pair of one RocksDB
    /// snapshot, in key order, after the applied log id of that same snapshot
    /// (`start`), without holding the machine's lock (writes go on). `start` or `pair`
    /// returning false stops the scan (the reader went away): `Ok(false)`.
    pub fn export(
        &self,
        start: impl FnOnce(Option<LogId<u64>>) -> bool,
        mut pair: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<bool, StoreError> {
        let db = self.db.upgrade().ok_or(StoreError::Closed)?;
        let meta = db
            .cf_handle(CF_META)
            .ok_or(StoreError::MissingColumnFamily(CF_META))?;
        let sm = db
            .cf_handle(CF_SM)
            .ok_or(StoreError::MissingColumnFamily(CF_SM))?;
        let snap = db.snapshot();
        let applied = match snap.get_cf(meta, keys::META_APPLIED)? {
            None => None,
            Some(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| StoreError::Corrupt(format!("applied log id: {e}")))?,
            ),
        };
        if !start(applied) {
            return Ok(false);
        }
        for item in snap.iterator_cf(sm, IteratorMode::Start) {
            let (k, v) = item?;
            if !pair(&k, &v) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A digest of the persisted pairs (see [`StateDigest`]), read from one RocksDB snapshot.
    pub fn persisted_digest(&self) -> Result<StateDigest, StoreError> {
        let mut crc = Crc32c::default();
        let (mut n, mut bytes) = (0u64, 0u64);
        let last_applied = self.scan_persisted(|k, v| {
            crc.update(&(k.len() as u32).to_be_bytes());
            crc.update(k);
            crc.update(&(v.len() as u32).to_be_bytes());
            crc.update(v);
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        })?;
        Ok(StateDigest {
            last_applied,
            pairs: n,
            bytes,
            crc32c: crc.finish(),
        })
    }

    /// A read of the in-memory machine and of data the application keeps on disk only,
    /// both at the same applied log id: `read` runs under the machine's read lock, where
    /// a RocksDB snapshot is also taken (apply changes the machine and writes its batch
    /// under the write lock, so the snapshot holds exactly what `read` saw); then,
    /// with the lock released (a long scan does not hold up apply), `scan` gets what
    /// `read` returned and a [`DiskView`] of that snapshot.
    pub fn read_and_scan<R, T>(
        &self,
        read: impl FnOnce(&SM, Option<LogId<u64>>) -> R,
        scan: impl FnOnce(R, &DiskView<'_>) -> T,
    ) -> Result<T, StoreError> {
        let db = self.db.upgrade().ok_or(StoreError::Closed)?;
        let sm = db
            .cf_handle(CF_SM)
            .ok_or(StoreError::MissingColumnFamily(CF_SM))?;
        let (r, snap) = {
            let guard = self.machine.read().unwrap_or_else(PoisonError::into_inner);
            let applied = *self.applied.borrow();
            let snap = db.snapshot();
            (read(&guard, applied), snap)
        };
        Ok(scan(r, &DiskView { snap: &snap, sm }))
    }

    fn scan_persisted(
        &self,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<Option<LogId<u64>>, StoreError> {
        let mut applied = None;
        self.export(
            |a| {
                applied = a;
                true
            },
            |k, v| {
                f(k, v);
                true
            },
        )?;
        Ok(applied)
    }
}

/// The `sm` column family at one RocksDB snapshot (see
/// [`StateMachineHandle::read_and_scan`]).
pub struct DiskView<'a> {
    snap: &'a rocksdb::Snapshot<'a>,
    sm: &'a rocksdb::ColumnFamily,
}

impl DiskView<'_> {
    /// For every key in `[from, to)`, `follow(key, value)` names the key to return (the
    /// key itself for data, the entity an index key points at); the pairs found come
    /// back in scan order, a followed key that is absent is skipped.
    pub fn range(
        &self,
        from: &[u8],
        to: &[u8],
        follow: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>>,
    ) -> Result<Pairs, StoreError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(from, rocksdb::Direction::Forward);
        for item in self.snap.iterator_cf(self.sm, mode) {
            let (k, v) = item?;
            if *k >= *to {
                break;
            }
            match follow(&k, &v) {
                Some(target) if *target == *k => out.push((k.to_vec(), v.to_vec())),
                Some(target) => {
                    if let Some(value) = self.snap.get_cf(self.sm, &target)? {
                        out.push((target, value));
                    }
                }
                None => {}
            }
        }
        Ok(out)
    }
}

enum InstallError {
    Refused(SnapshotError),
    Db(rocksdb::Error),
    Internal(String),
}

impl From<SnapshotError> for InstallError {
    fn from(e: SnapshotError) -> Self {
        InstallError::Refused(e)
    }
}

impl From<rocksdb::Error> for InstallError {
    fn from(e: rocksdb::Error) -> Self {
        InstallError::Db(e)
    }
}

impl<C, SM> StateMachineStore<C, SM>
where
    C: StoreConfig,
    SM: StateMachine<Command = C::D, Response = C::R>,
{
    pub(crate) fn new(db: Arc<Db>, options: &StoreOptions) -> Result<Self, StoreError> {
        let meta = db
            .cf_handle(CF_META)
            .ok_or(StoreError::MissingColumnFamily(CF_META))?;
        let sm = db
            .cf_handle(CF_SM)
            .ok_or(StoreError::MissingColumnFamily(CF_SM))?;
        let get_json = |key: &[u8], what: &str| -> Result<Option<Vec<u8>>, StoreError> {
            let v = db.get_cf(meta, key)?;
            tracing::trace!(what, present = v.is_some(), "read applied state");
            Ok(v)
        };
        let last_applied: Option<LogId<u64>> = match get_json(keys::META_APPLIED, "applied")? {
            None => None,
            Some(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| StoreError::Corrupt(format!("applied log id: {e}")))?,
            ),
        };
        let last_membership: Membership<C> = match get_json(keys::META_MEMBERSHIP, "membership")? {
            None => StoredMembership::default(),
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| StoreError::Corrupt(format!("applied membership: {e}")))?,
        };

        let machine = {
            let mut db_err = None;
            let mut pairs = db
                .iterator_cf(sm, IteratorMode::Start)
                .map_while(|item| match item {
                    Ok((k, v)) => Some((k.into_vec(), v.into_vec())),
                    Err(e) => {
                        db_err = Some(e);
                        None
                    }
                });
            let loaded = SM::load(&mut pairs);
            drop(pairs);
            if let Some(e) = db_err {
                return Err(e.into());
            }
            let mut machine = loaded.map_err(StoreError::Load)?;
            machine.loaded_at(last_applied.map_or(0, |l| l.index));
            machine
        };

        let (applied_tx, applied_rx) = watch::channel(last_applied);
        let mut apply_write = WriteOptions::default();
        apply_write.set_sync(options.sync_state_machine);
        let mut store = StateMachineStore {
            db,
            machine: Arc::new(RwLock::new(machine)),
            last_applied,
            last_membership,
            applied_tx,
            applied_rx,
            snapshot_lock: Arc::new(Mutex::new(())),
            apply_write,
        };
        store.restore_if_snapshot_ahead()?;
        store.upgrade_data(false)?;
        tracing::info!(
            last_applied = %display_log_id(&store.last_applied),
            "state machine loaded from RocksDB"
        );
        Ok(store)
    }

    /// A cloneable read handle on the machine and its applied log id.
    pub fn handle(&self) -> StateMachineHandle<SM> {
        StateMachineHandle {
            db: Arc::downgrade(&self.db),
            closed: self.db.closed_flag(),
            machine: self.machine.clone(),
            applied: self.applied_rx.clone(),
        }
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        self.last_applied
    }

    /// Brings the pairs of an older data layout to the machine's (see
    /// `StateMachine::DATA_FORMAT`): every pair through `upgrade_pair`, in batches, then
    /// `upgrade_finish` and the new version, synced. Safe to run again after a crash: the
    /// machine reads both layouts and leaves current pairs alone. `force`: the pairs came
    /// from a snapshot whose layout is unknown.
    fn upgrade_data(&mut self, force: bool) -> Result<(), StoreError> {
        let meta = self
            .db
            .cf_handle(CF_META)
            .ok_or(StoreError::MissingColumnFamily(CF_META))?;
        let sm = self
            .db
            .cf_handle(CF_SM)
            .ok_or(StoreError::MissingColumnFamily(CF_SM))?;
        let stored = match self.db.get_cf(meta, keys::META_DATA_FORMAT)? {
            Some(v) => <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("data format record is not 4 bytes".into()))?,
            None if self
                .db
                .iterator_cf(sm, IteratorMode::Start)
                .next()
                .is_none() =>
            {
                SM::DATA_FORMAT
            }
            None => 1,
        };
        if stored >= SM::DATA_FORMAT && !force {
            if stored == SM::DATA_FORMAT {
                self.db
                    .put_cf(meta, keys::META_DATA_FORMAT, SM::DATA_FORMAT.to_be_bytes())?;
            }
            return Ok(());
        }
        tracing::info!(
            from = stored,
            to = SM::DATA_FORMAT,
            "upgrading the state machine's data"
        );
        let machine = self.machine.read().map_err(|_| StoreError::Closed)?;
        let view = self.db.snapshot();
        let mut changes = Changes::new();
        let mut pending = 0usize;
        let (mut pairs, mut written) = (0u64, 0u64);
        let flush = |changes: &mut Changes| -> Result<(), StoreError> {
            let mut batch = WriteBatch::default();
            for (k, v) in changes.iter() {
                match v {
                    Some(v) => batch.put_cf(sm, k, v),
                    None => batch.delete_cf(sm, k),
                }
            }
            self.db.write(batch)?;
            changes.clear();
            Ok(())
        };
        for item in view.iterator_cf(sm, IteratorMode::Start) {
            let (k, v) = item?;
            let before = changes.len();
            machine
                .upgrade_pair(&k, &v, &mut changes)
                .map_err(StoreError::Load)?;
            pairs += 1;
            written += (changes.len() - before) as u64;
            pending += k.len() + v.len();
            if pending > 4 << 20 {
                flush(&mut changes)?;
                pending = 0;
            }
        }
        machine
            .upgrade_finish(&mut changes)
            .map_err(StoreError::Load)?;
        written += changes.len() as u64;
        flush(&mut changes)?;
        drop(view);
        drop(machine);
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, keys::META_DATA_FORMAT, SM::DATA_FORMAT.to_be_bytes());
        self.db.write_opt(batch, &synced())?;
        tracing::info!(pairs, written, "state machine data upgraded");
        Ok(())
    }

    /// If the stored current snapshot is ahead of the applied state (which the purge
    /// rule in `LogStore::purge` prevents, short of a damaged disk), the log may no
    /// longer hold the entries between them: restore the machine from the snapshot.
    fn restore_if_snapshot_ahead(&mut self) -> Result<(), StoreError> {
        let meta = self
            .db
            .cf_handle(CF_META)
            .ok_or(StoreError::MissingColumnFamily(CF_META))?;
        let Some(b) = self.db.get_cf(meta, keys::META_SNAPSHOT)? else {
            return Ok(());
        };
        let snap_meta: Meta<C> = serde_json::from_slice(&b)
            .map_err(|e| StoreError::Corrupt(format!("snapshot metadata: {e}")))?;
        if snap_meta.last_log_id <= self.last_applied {
            return Ok(());
        }
        tracing::warn!(
            snapshot = %snap_meta,
            last_applied = %display_log_id(&self.last_applied),
            "applied state is behind the stored snapshot: restoring from the snapshot"
        );
        let snap = self
            .db
            .cf_handle(CF_SNAPSHOT)
            .ok_or(StoreError::MissingColumnFamily(CF_SNAPSHOT))?;
        let bytes = self
            .db
            .get_cf(snap, keys::SNAPSHOT_CURRENT)?
            .ok_or_else(|| StoreError::Corrupt("snapshot metadata without snapshot data".into()))?;
        match self.install_encoded(bytes, Some(&snap_meta)) {
            Ok(()) => Ok(()),
            Err(InstallError::Refused(e)) => Err(StoreError::Snapshot(e)),
            Err(InstallError::Db(e)) => Err(StoreError::RocksDb(e)),
            Err(InstallError::Internal(e)) => Err(StoreError::Corrupt(e)),
        }
    }

    /// Verifies an encoded snapshot, loads it into a new machine, then replaces the
    /// persisted machine, the applied state and the current snapshot in one synced batch
    /// and swaps the in-memory machine. Nothing changes if any check fails.
    fn install_encoded(
        &mut self,
        bytes: Vec<u8>,
        expected: Option<&Meta<C>>,
    ) -> Result<(), InstallError> {
        let decoded = snapshot::decode::<C::Node>(&bytes)?;
        if let Some(m) = expected {
            if decoded.meta != *m {
                return Err(SnapshotError::MetaMismatch(format!(
                    "header says {}, sent with {}",
                    decoded.meta, m
                ))
                .into());
            }
        }
        let mut new_machine =
            SM::load(&mut decoded.pairs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())))
                .map_err(SnapshotError::Load)?;
        new_machine.loaded_at(decoded.meta.last_log_id.map_or(0, |l| l.index));
        let meta = decoded.meta.clone();

        let missing =
            |name: &str| InstallError::Internal(format!("column family `{name}` is missing"));
        let sm_cf = self.db.cf_handle(CF_SM).ok_or_else(|| missing(CF_SM))?;
        let meta_cf = self.db.cf_handle(CF_META).ok_or_else(|| missing(CF_META))?;
        let snap_cf = self
            .db
            .cf_handle(CF_SNAPSHOT)
            .ok_or_else(|| missing(CF_SNAPSHOT))?;

        let mut batch = WriteBatch::default();
        // Delete the whole old range: every key is >= "" and <= the greatest key.
        if let Some(item) = self.db.iterator_cf(sm_cf, IteratorMode::End).next() {
            let (last_key, _) = item?;
            batch.delete_range_cf(sm_cf, &b""[..], &keys::successor(&last_key)[..]);
        }
        for (k, v) in &decoded.pairs {
            batch.put_cf(sm_cf, k, v);
        }
        match &meta.last_log_id {
            Some(id) => batch.put_cf(meta_cf, keys::META_APPLIED, json(id)?),
            None => batch.delete_cf(meta_cf, keys::META_APPLIED),
        }
        batch.put_cf(meta_cf, keys::META_MEMBERSHIP, json(&meta.last_membership)?);
        batch.put_cf(meta_cf, keys::META_SNAPSHOT, json(&meta)?);
        batch.put_cf(snap_cf, keys::SNAPSHOT_CURRENT, &bytes);
        drop(decoded);

        let _snap_guard = self
            .snapshot_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut machine = self
            .machine
            .write()
            .map_err(|_| InstallError::Internal("state machine lock poisoned".into()))?;
        self.db.write_opt(batch, &synced()).inspect_err(|e| {
            self.db.space.failed("snapshot install", e);
        })?;
        *machine = new_machine;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership;
        self.applied_tx.send_replace(self.last_applied);
        Ok(())
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, InstallError> {
    serde_json::to_vec(v).map_err(|e| InstallError::Internal(e.to_string()))
}

fn display_log_id(id: &Option<LogId<u64>>) -> String {
    match id {
        Some(l) => l.to_string(),
        None => "none".into(),
    }
}

impl<C, SM> RaftStateMachine<C> for StateMachineStore<C, SM>
where
    C: StoreConfig,
    SM: StateMachine<Command = C::D, Response = C::R>,
{
    type SnapshotBuilder = SnapshotBuilder<C>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership<C>), StorageError<u64>> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut changes = Changes::new();
        let mut last = None;
        let mut membership_changed = false;

        // Before the machine changes in memory: refused, nothing of the batch is applied.
        self.db
            .space
            .check()
            .map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        let mut machine = self.machine.write().map_err(|_| {
            sto_msg(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                "state machine lock poisoned",
            )
        })?;
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => responses.push(SM::blank_response()),
                EntryPayload::Normal(command) => {
                    responses.push(machine.apply(&command, &mut changes))
                }
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                    responses.push(SM::blank_response());
                }
            }
            last = Some(entry.log_id);
        }
        let Some(last) = last else {
            return Ok(responses);
        };
        machine.applied_through(last.index);

        // One batch: the machine's changes, the last applied log id, the membership.
        let sm_cf = cf(&self.db, CF_SM)?;
        let meta_cf = cf(&self.db, CF_META)?;
        let mut batch = WriteBatch::default();
        for (k, v) in changes.iter() {
            match v {
                Some(v) => batch.put_cf(sm_cf, k, v),
                None => batch.delete_cf(sm_cf, k),
            }
        }
        let applied = serde_json::to_vec(&last)
            .map_err(|e| sto_err(ErrorSubject::Apply(last), ErrorVerb::Write, e))?;
        batch.put_cf(meta_cf, keys::META_APPLIED, applied);
        if membership_changed {
            let m = serde_json::to_vec(&self.last_membership)
                .map_err(|e| sto_err(ErrorSubject::Apply(last), ErrorVerb::Write, e))?;
            batch.put_cf(meta_cf, keys::META_MEMBERSHIP, m);
        }
        self.db.write_opt(batch, &self.apply_write).map_err(|e| {
            self.db.space.failed("apply", &e);
            sto_err(ErrorSubject::Apply(last), ErrorVerb::Write, e)
        })?;
        self.last_applied = Some(last);
        self.applied_tx.send_replace(self.last_applied);
        drop(machine);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
            _c: PhantomData,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta<C>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        tracing::info!(snapshot = %meta, "installing snapshot");
        match self.install_encoded(snapshot.into_inner(), Some(meta)) {
            // a snapshot from a replica of an earlier release holds the older layout
            Ok(()) if SM::DATA_FORMAT > 1 => self
                .upgrade_data(true)
                .map_err(|e| sto_err(subject, ErrorVerb::Write, e)),
            Ok(()) => Ok(()),
            Err(InstallError::Refused(e)) => {
                tracing::error!(snapshot = %meta, error = %e, "snapshot refused");
                Err(sto_err(subject, ErrorVerb::Read, e))
            }
            Err(InstallError::Db(e)) => Err(sto_err(subject, ErrorVerb::Write, e)),
            Err(InstallError::Internal(e)) => Err(sto_msg(subject, ErrorVerb::Write, e)),
        }
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        let snap_cf = cf(&self.db, CF_SNAPSHOT)?;
        let Some(bytes) = self
            .db
            .get_cf(snap_cf, keys::SNAPSHOT_CURRENT)
            .map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let meta = snapshot::decode::<C::Node>(&bytes)
            .map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
            .meta;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

impl<C: StoreConfig> RaftSnapshotBuilder<C> for SnapshotBuilder<C> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        let (meta, bytes) = tokio::task::spawn_blocking(move || build_blocking::<C>(&db, &lock))
            .await
            .map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))??;
        tracing::info!(snapshot = %meta, bytes = bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

/// Encodes the `sm` column family and the applied state at one RocksDB snapshot, and
/// stores the result as the current snapshot unless a newer one is already stored.
fn build_blocking<C: StoreConfig>(
    db: &DB,
    lock: &Mutex<()>,
) -> Result<(Meta<C>, Vec<u8>), StorageError<u64>> {
    let read_err =
        |e: &dyn std::fmt::Display| sto_msg(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
    let meta_cf = cf(db, CF_META)?;
    let sm_cf = cf(db, CF_SM)?;
    let snap_cf = cf(db, CF_SNAPSHOT)?;

    let view = db.snapshot();
    let last_log_id: Option<LogId<u64>> = match view
        .get_cf(meta_cf, keys::META_APPLIED)
        .map_err(|e| read_err(&e))?
    {
        None => None,
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| read_err(&e))?),
    };
    let last_membership: Membership<C> = match view
        .get_cf(meta_cf, keys::META_MEMBERSHIP)
        .map_err(|e| read_err(&e))?
    {
        None => StoredMembership::default(),
        Some(b) => serde_json::from_slice(&b).map_err(|e| read_err(&e))?,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let snapshot_id = format!("{}-{nanos:x}", display_log_id(&last_log_id));
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };
    let mut enc = SnapshotEncoder::new(&meta).map_err(|e| read_err(&e))?;
    for item in view.iterator_cf(sm_cf, IteratorMode::Start) {
        let (k, v) = item.map_err(|e| read_err(&e))?;
        enc.push(&k, &v).map_err(|e| read_err(&e))?;
    }
    let bytes = enc.finish();
    drop(view);

    let write_err = |e: &dyn std::fmt::Display| {
        sto_msg(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
            e,
        )
    };
    let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let current: Option<Meta<C>> = match db
        .get_cf(meta_cf, keys::META_SNAPSHOT)
        .map_err(|e| write_err(&e))?
    {
        None => None,
        // An unreadable record is replaced by the new snapshot.
        Some(b) => serde_json::from_slice(&b).ok(),
    };
    if current
        .as_ref()
        .is_none_or(|c| c.last_log_id <= meta.last_log_id)
    {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            meta_cf,
            keys::META_SNAPSHOT,
            serde_json::to_vec(&meta).map_err(|e| write_err(&e))?,
        );
        batch.put_cf(snap_cf, keys::SNAPSHOT_CURRENT, &bytes);
        db.write_opt(batch, &synced()).map_err(|e| write_err(&e))?;
    } else {
        tracing::info!(built = %meta, "a newer snapshot is already stored; keeping it as current");
    }
    Ok((meta, bytes))
}
