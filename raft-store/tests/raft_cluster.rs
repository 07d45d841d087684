//! raft-store under a real openraft: snapshot + purge by policy, a learner that can only
//! catch up through a chunked snapshot, and a restart that re-applies nothing.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};

type R = Raft<TC>;

#[derive(Clone, Default)]
struct Router(Arc<Mutex<BTreeMap<u64, R>>>);

struct Conn {
    target: u64,
    router: Router,
}

impl Conn {
    #[allow(clippy::result_large_err)] // openraft's error type
    fn raft<E: std::error::Error>(&self) -> Result<R, RPCError<u64, BasicNode, E>> {
        let nodes = self.router.0.lock().unwrap();
        nodes.get(&self.target).cloned().ok_or_else(|| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "node {} is down",
                self.target
            ))))
        })
    }
}

impl RaftNetworkFactory<TC> for Router {
    type Network = Conn;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            target,
            router: self.clone(),
        }
    }
}

impl RaftNetwork<TC> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TC>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TC>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn config() -> Arc<Config> {
    let c = Config {
        cluster_name: "raft-store-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        // Small chunks, so the learner's snapshot really arrives in many pieces.
        snapshot_max_chunk_size: 97,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap())
}

const T: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_learner_catch_up_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();

    // Node 1 alone: 25 writes; the policy snapshots every 10 logs and purges behind.
    let (logs1, sm1) = open(&dir.path().join("n1")).await;
    let h1 = sm1.handle();
    let stats1 = logs1.stats();
    let r1 = Raft::new(1, config(), router.clone(), logs1, sm1)
        .await
        .unwrap();
    router.0.lock().unwrap().insert(1, r1.clone());
    r1.initialize(BTreeMap::from([(1, BasicNode::new("n1"))]))
        .await
        .unwrap();
    r1.wait(T)
        .state(ServerState::Leader, "leader")
        .await
        .unwrap();
    for i in 0..25 {
        let resp = r1
            .client_write(Cmd::Set {
                key: format!("k{}", i % 20),
                value: format!("v{i}"),
            })
            .await
            .unwrap();
        assert_eq!(resp.data, Resp((i >= 20).then(|| format!("v{}", i - 20))));
    }
    // Index 0: the initial membership, 1: the leader's blank entry, 2..=26: the writes.
    let m = r1
        .wait(T)
        .applied_index(Some(26), "all applied")
        .await
        .unwrap();
    let last = m.last_applied.unwrap();
    assert_eq!(h1.last_applied(), Some(last));
    let m = r1
        .wait(T)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 9) && m.purged.is_some_and(|p| p.index >= 9),
            "snapshot + purge by policy",
        )
        .await
        .unwrap();
    assert!(m.snapshot.unwrap().index < 26);
    // What a node does past a size threshold: trigger a snapshot; the log is purged.
    let size = stats1.log_size_bytes();
    assert!(size > 0 && stats1.log_disk_bytes() > 0);
    // A trigger while the policy's own snapshot is still being built is ignored: retry.
    let done = |m: &openraft::RaftMetrics<u64, BasicNode>| {
        m.snapshot == Some(last) && m.purged == Some(last)
    };
    for _ in 0..10 {
        r1.trigger().snapshot().await.unwrap();
        let short = Some(Duration::from_secs(2));
        if r1
            .wait(short)
            .metrics(done, "triggered snapshot + purge")
            .await
            .is_ok()
        {
            break;
        }
    }
    assert!(done(&r1.metrics().borrow()), "{:?}", r1.metrics().borrow());
    assert_eq!(stats1.log_size_bytes(), 0, "was {size}");
    assert_eq!(h1.read(|m, _| m.applies), 25);

    // A learner with an empty store can only catch up through the snapshot.
    let (logs2, sm2) = open(&dir.path().join("n2")).await;
    let h2 = sm2.handle();
    let r2 = Raft::new(2, config(), router.clone(), logs2, sm2)
        .await
        .unwrap();
    router.0.lock().unwrap().insert(2, r2.clone());
    r1.add_learner(2, BasicNode::new("n2"), true).await.unwrap();
    r2.wait(T)
        .applied_index(Some(last.index + 1), "learner caught up")
        .await
        .unwrap();
    let m2 = r2.metrics().borrow().clone();
    assert!(
        m2.snapshot.is_some_and(|s| s.index >= 20),
        "learner installed a snapshot: {m2:?}"
    );
    assert!(
        h2.read(|m, _| m.applies) < 25,
        "learner did not apply every write itself"
    );
    h1.wait_applied(last.index + 1).await.unwrap();
    h2.wait_applied(last.index + 1).await.unwrap();
    assert_eq!(
        h1.persisted_digest().unwrap(),
        h2.persisted_digest().unwrap()
    );
    assert_eq!(h1.read(|m, _| m.map.clone()), h2.read(|m, _| m.map.clone()));

    // Restart node 1 alone (the learner is not a voter): nothing is re-applied.
    let before = h1.persisted_digest().unwrap();
    r2.shutdown().await.unwrap();
    r1.shutdown().await.unwrap();
    router.0.lock().unwrap().clear();
    drop((r1, r2));
    tokio::time::timeout(Duration::from_secs(10), h1.wait_closed())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), h2.wait_closed())
        .await
        .unwrap();
    // The handles do not keep the database open.
    assert!(matches!(
        h1.persisted_digest(),
        Err(raft_store::StoreError::Closed)
    ));
    assert_eq!(h1.read(|m, _| m.map.len()), 20);
    let (logs1, sm1) = open(&dir.path().join("n1")).await;
    let h1 = sm1.handle();
    assert_eq!(h1.persisted_digest().unwrap(), before);
    let r1 = Raft::new(1, config(), router.clone(), logs1, sm1)
        .await
        .unwrap();
    router.0.lock().unwrap().insert(1, r1.clone());
    r1.wait(T)
        .state(ServerState::Leader, "leader again")
        .await
        .unwrap();
    assert_eq!(h1.read(|m, _| (m.applies, m.map.len())), (0, 20));
    r1.client_write(Cmd::Del { key: "k0".into() })
        .await
        .unwrap();
    assert_eq!(h1.read(|m, _| (m.applies, m.map.len())), (1, 19));
    r1.shutdown().await.unwrap();
}
