//! raft-store's own guarantees: restart, snapshots (round trip, refusal), purge, truncate.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StoredMembership, Vote};
use raft_store::{snapshot, StoreError};

/// The log 1..=n: a membership entry, then sets and deletes, and a blank.
fn feed(n: u64) -> Vec<openraft::Entry<TC>> {
    let mut v = vec![membership(1, 1, &[1, 2, 3])];
    for i in 2..=n {
        v.push(match i % 7 {
            0 => del(1, i, &format!("k{}", i - 3)),
            5 => blank(1, i),
            _ => set(1, i, &format!("k{i}"), &format!("v{i}")),
        });
    }
    v
}

fn commands(entries: &[openraft::Entry<TC>]) -> u64 {
    entries
        .iter()
        .filter(|e| matches!(e.payload, openraft::EntryPayload::Normal(_)))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_log_vote_committed_applied_and_data_without_reapplying() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let entries = feed(30);
    let n_commands = commands(&entries);
    let (before_map, before_pairs, size_before);
    {
        let (mut logs, mut sm) = open(&path).await;
        logs.blocking_append(feed(30)).await.unwrap();
        logs.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
        logs.save_committed(Some(lid(1, 30))).await.unwrap();
        // Applied in three calls, as openraft would.
        let mut it = feed(30).into_iter();
        for chunk in [10, 15, 5] {
            let part: Vec<_> = it.by_ref().take(chunk).collect();
            let resps = sm.apply(part).await.unwrap();
            assert_eq!(resps.len(), chunk);
        }
        let h = sm.handle();
        h.read(|m, applied| {
            assert_eq!(m.applies, n_commands);
            assert_eq!(applied, Some(lid(1, 30)));
        });
        before_map = h.read(|m, _| m.map.clone());
        before_pairs = h.persisted_pairs().unwrap();
        size_before = logs.log_size_bytes();
        assert!(size_before > 0);
    }

    let (mut logs, mut sm) = open(&path).await;
    let st = logs.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(lid(1, 30)));
    assert_eq!(st.last_purged_log_id, None);
    assert_eq!(
        json(&logs.try_get_log_entries(1..=30).await.unwrap()),
        json(&entries)
    );
    assert_eq!(
        logs.read_vote().await.unwrap(),
        Some(Vote::new_committed(4, 2))
    );
    assert_eq!(logs.read_committed().await.unwrap(), Some(lid(1, 30)));
    assert_eq!(
        logs.log_size_bytes(),
        size_before,
        "size counter rebuilt from disk"
    );

    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(1, 30)));
    assert_eq!(mem.log_id(), &Some(lid(1, 1)));
    assert_eq!(mem.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);

    let h = sm.handle();
    assert_eq!(h.last_applied(), Some(lid(1, 30)));
    h.read(|m, _| {
        assert_eq!(m.applies, 0, "a restart must not re-apply anything");
        assert_eq!(m.map, before_map);
    });
    assert_eq!(h.persisted_pairs().unwrap(), before_pairs);
    assert!(!before_map.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_call_is_one_batch_and_later_changes_win() {
    let dir = tempfile::tempdir().unwrap();
    let (_logs, mut sm) = open(&dir.path().join("raft")).await;
    let resps = sm
        .apply([
            set(1, 1, "a", "1"),
            del(1, 2, "a"),
            del(1, 3, "b"),
            set(1, 4, "b", "2"),
            set(1, 5, "b", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(
        resps,
        vec![
            Resp(None),
            Resp(Some("1".into())),
            Resp(None),
            Resp(None),
            Resp(Some("2".into()))
        ]
    );
    let (applied, pairs) = sm.handle().persisted_pairs().unwrap();
    assert_eq!(applied, Some(lid(1, 5)));
    assert_eq!(pairs, vec![(b"kv/b".to_vec(), b"3".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_installed_into_a_fresh_store_reproduces_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_la, mut a) = open(&dir.path().join("a")).await;
    a.apply(feed(100)).await.unwrap();
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(lid(1, 100)));
    assert_eq!(built.meta.last_membership.log_id(), &Some(lid(1, 1)));
    let current = a
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("current snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());

    // B holds other data, which the install must remove.
    let b_path = dir.path().join("b");
    {
        let (_lb, mut b) = open(&b_path).await;
        b.apply([set(1, 1, "stale", "x"), set(1, 2, "zzz-last", "y")])
            .await
            .unwrap();
        let mut recv = b.begin_receiving_snapshot().await.unwrap();
        recv.get_mut().extend_from_slice(built.snapshot.get_ref());
        b.install_snapshot(&built.meta, recv).await.unwrap();

        let (ha, hb) = (a.handle(), b.handle());
        assert_eq!(hb.persisted_pairs().unwrap(), ha.persisted_pairs().unwrap());
        assert_eq!(
            hb.persisted_digest().unwrap(),
            ha.persisted_digest().unwrap()
        );
        assert_eq!(
            b.applied_state().await.unwrap(),
            a.applied_state().await.unwrap()
        );
        assert_eq!(hb.read(|m, _| m.map.clone()), ha.read(|m, _| m.map.clone()));
        assert_eq!(hb.last_applied(), Some(lid(1, 100)));
        assert_eq!(
            b.get_current_snapshot().await.unwrap().unwrap().meta,
            built.meta
        );
    }
    // After a restart, B still has the data and the current snapshot.
    let (_lb, mut b) = open(&b_path).await;
    assert_eq!(
        b.handle().persisted_digest().unwrap(),
        a.handle().persisted_digest().unwrap()
    );
    assert_eq!(
        b.applied_state().await.unwrap(),
        a.applied_state().await.unwrap()
    );
    let cur = b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot survives restart");
    assert_eq!(cur.meta, built.meta);
    assert_eq!(cur.snapshot.get_ref(), built.snapshot.get_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_snapshots_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_la, mut a) = open(&dir.path().join("a")).await;
    a.apply(feed(40)).await.unwrap();
    let good = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let bytes = good.snapshot.get_ref().clone();

    let (_lb, mut b) = open(&dir.path().join("b")).await;
    b.apply([membership(1, 1, &[1]), set(1, 2, "mine", "1")])
        .await
        .unwrap();
    let b_first = b
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let truncated = bytes[..bytes.len() - 9].to_vec();
    let other_meta = SnapshotMeta {
        snapshot_id: "someone-else".into(),
        ..good.meta.clone()
    };
    // Well-formed, right header, but the machine refuses its content.
    let unloadable = snapshot::encode(&good.meta, [(&b"kv/x"[..], &[0xff, 0xfe][..])]).unwrap();

    type Case<'a> = (
        &'a str,
        Vec<u8>,
        &'a SnapshotMeta<u64, openraft::BasicNode>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("bit flip", flipped, &good.meta, "checksum mismatch"),
        ("truncated", truncated, &good.meta, "checksum mismatch"),
        ("empty", Vec::new(), &good.meta, "truncated"),
        (
            "meta mismatch",
            bytes.clone(),
            &other_meta,
            "does not match",
        ),
        (
            "unloadable",
            unloadable,
            &good.meta,
            "state machine refused",
        ),
    ];
    let hb = b.handle();
    let before = (
        hb.persisted_pairs().unwrap(),
        b.applied_state().await.unwrap(),
        b.get_current_snapshot().await.unwrap().unwrap(),
    );
    assert_eq!(before.2.meta, b_first.meta);
    for (name, data, meta, expect) in cases {
        let mut recv = b.begin_receiving_snapshot().await.unwrap();
        *recv.get_mut() = data;
        let err = b.install_snapshot(meta, recv).await.expect_err(name);
        let msg = err.to_string();
        assert!(
            msg.contains(expect),
            "{name}: error {msg:?} should say {expect:?}"
        );
        assert_eq!(
            hb.persisted_pairs().unwrap(),
            before.0,
            "{name}: sm changed"
        );
        assert_eq!(
            b.applied_state().await.unwrap(),
            before.1,
            "{name}: applied changed"
        );
        let cur = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(cur.meta, before.2.meta, "{name}: current snapshot changed");
        assert_eq!(cur.snapshot.get_ref(), before.2.snapshot.get_ref());
        hb.read(|m, applied| {
            assert_eq!(m.map.get("mine").map(String::as_str), Some("1"), "{name}");
            assert_eq!(applied, Some(lid(1, 2)), "{name}");
        });
    }
    // The good one still installs afterwards.
    let mut recv = b.begin_receiving_snapshot().await.unwrap();
    *recv.get_mut() = bytes;
    b.install_snapshot(&good.meta, recv).await.unwrap();
    assert_eq!(
        hb.persisted_digest().unwrap(),
        a.handle().persisted_digest().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let entries = feed(20);
    {
        let (mut logs, mut sm) = open(&path).await;
        logs.blocking_append(feed(20)).await.unwrap();
        sm.apply(feed(20)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let full = logs.log_size_bytes();
        logs.purge(lid(1, 15)).await.unwrap();
        let st = logs.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 15)));
        assert_eq!(st.last_log_id, Some(lid(1, 20)));
        assert!(
            logs.log_size_bytes() < full / 3,
            "size counter drops after purge"
        );
    }
    let (mut logs, mut sm) = open(&path).await;
    let st = logs.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(lid(1, 15)));
    assert_eq!(st.last_log_id, Some(lid(1, 20)));
    assert_eq!(
        json(&logs.try_get_log_entries(0..100).await.unwrap()),
        json(&entries[15..])
    );
    let size = logs.log_size_bytes();
    let snap = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot survives");
    assert_eq!(snap.meta.last_log_id, Some(lid(1, 20)));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 20)));

    // Purge everything: the last log id falls back to the purged one, across a restart too.
    logs.purge(lid(1, 20)).await.unwrap();
    assert!(logs.log_size_bytes() < size);
    assert_eq!(logs.log_size_bytes(), 0);
    drop((logs, sm));
    let (mut logs, _sm) = open(&path).await;
    let st = logs.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(lid(1, 20)));
    assert_eq!(st.last_log_id, Some(lid(1, 20)));
    assert!(logs.try_get_log_entries(..).await.unwrap().is_empty());
    assert_eq!(logs.log_size_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (mut logs, _sm) = open(&path).await;
        logs.blocking_append(feed(10)).await.unwrap();
        let before = logs.log_size_bytes();
        logs.truncate(lid(1, 6)).await.unwrap();
        assert!(logs.log_size_bytes() < before);
        assert_eq!(
            logs.get_log_state().await.unwrap().last_log_id,
            Some(lid(1, 5))
        );
        // Entries after a truncation replace the old ones.
        logs.blocking_append([set(2, 6, "new", "x")]).await.unwrap();
    }
    let (mut logs, _sm) = open(&path).await;
    assert_eq!(
        logs.get_log_state().await.unwrap().last_log_id,
        Some(lid(2, 6))
    );
    let got = logs.try_get_log_entries(1..).await.unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(json(&got[5..]), json(&[set(2, 6, "new", "x")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_applied_and_closed_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_logs, mut sm) = open(&dir.path().join("raft")).await;
    let h = sm.handle();
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { h.wait_applied(3).await })
    };
    let mut rx = h.subscribe();
    sm.apply([blank(1, 1), set(1, 2, "a", "1")]).await.unwrap();
    assert!(!waiter.is_finished());
    sm.apply([set(1, 3, "b", "2")]).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), Some(lid(1, 3)));
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), Some(lid(1, 3)));
    drop(sm);
    assert!(matches!(h.wait_applied(10).await, Err(StoreError::Closed)));
    // Reads keep working on the last state.
    assert_eq!(h.read(|m, a| (m.map.len(), a)), (2, Some(lid(1, 3))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_private_and_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("raft");
    let (_logs, _sm) = open(&path).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A second process (or store) on the same directory gets a clear error.
    match raft_store::open::<TC, Kv>(&path, Default::default()).await {
        Err(StoreError::RocksDb(e)) => {
            assert!(e.to_string().to_lowercase().contains("lock"), "{e}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_blank_entries_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (_logs, mut sm) = open(&path).await;
        let r = sm
            .apply([
                blank(1, 1),
                membership(1, 2, &[1, 2]),
                set(1, 3, "a", "1"),
                membership(2, 4, &[1, 2, 3]),
            ])
            .await
            .unwrap();
        assert_eq!(r, vec![Resp(None), Resp(None), Resp(None), Resp(None)]);
        sm.apply([blank(2, 5)]).await.unwrap();
    }
    let (_logs, mut sm) = open(&path).await;
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2, 5)));
    let want = match membership(2, 4, &[1, 2, 3]).payload {
        openraft::EntryPayload::Membership(m) => StoredMembership::new(Some(lid(2, 4)), m),
        _ => unreachable!(),
    };
    assert_eq!(mem, want);
    assert_eq!(sm.handle().read(|m, _| m.applies), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_state_behind_the_stored_snapshot_is_restored_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let at_snapshot;
    {
        let (_logs, mut sm) = open(&path).await;
        sm.apply(feed(20)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        at_snapshot = sm.handle().persisted_pairs().unwrap();
    }
    // Simulate a disk that lost state-machine writes behind the snapshot: applied goes
    // back to 10 and some pairs vanish.
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let cfs = [
            raft_store::CF_LOG,
            raft_store::CF_META,
            raft_store::CF_SM,
            raft_store::CF_SNAPSHOT,
        ];
        let db = rocksdb::DB::open_cf(&opts, &path, cfs).unwrap();
        let meta = db.cf_handle(raft_store::CF_META).unwrap();
        let sm = db.cf_handle(raft_store::CF_SM).unwrap();
        db.put_cf(meta, b"applied", serde_json::to_vec(&lid(1, 10)).unwrap())
            .unwrap();
        db.delete_cf(sm, b"kv/k18").unwrap();
        db.put_cf(sm, b"kv/zz", b"lost-later").unwrap();
    }
    let (_logs, mut sm) = open(&path).await;
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 20)));
    assert_eq!(sm.handle().persisted_pairs().unwrap(), at_snapshot);
    assert!(sm
        .handle()
        .read(|m, _| m.map.contains_key("k18") && !m.map.contains_key("zz")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_reads_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let value = "x".repeat(10_000);
    let entries: Vec<_> = (1..=50)
        .map(|i| set(1, i, &format!("k{i}"), &value))
        .collect();
    let one = json(&entries[..1])[0].len();
    let (mut logs, _sm) = raft_store::open::<TC, Kv>(
        &path,
        raft_store::StoreOptions {
            max_read_bytes: 3 * one + one / 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    logs.blocking_append(entries.clone()).await.unwrap();
    // openraft's replication reads through the log reader; both are bounded alike.
    let mut reader = logs.get_log_reader().await;
    for got in [
        logs.limited_get_log_entries(1, 51).await.unwrap(),
        reader.limited_get_log_entries(1, 51).await.unwrap(),
    ] {
        assert_eq!(json(&got), json(&entries[..3]), "a prefix within the bytes");
    }
    assert_eq!(
        json(&reader.limited_get_log_entries(49, 51).await.unwrap()),
        json(&entries[48..]),
        "a short range is read whole"
    );
    assert!(reader
        .limited_get_log_entries(7, 7)
        .await
        .unwrap()
        .is_empty());
    // An entry larger than the bound still comes, alone.
    let big = set(1, 51, "big", &"y".repeat(100_000));
    logs.blocking_append([big.clone()]).await.unwrap();
    assert_eq!(
        json(&reader.limited_get_log_entries(51, 52).await.unwrap()),
        json(&[big])
    );
    // Other reads are whole.
    assert_eq!(reader.try_get_log_entries(1..=50).await.unwrap().len(), 50);
}
