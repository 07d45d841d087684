//! The master's Raft group as real processes on loopback: `slapos master init|run|join|leave`
//! and `slapos cluster status`, with replicas killed (SIGKILL), restarted, added after the
//! log was purged, and removed, while a client writes through the master API.
//!
//! Every test runs its own cluster (own ports, own temporary directory); they assert what
//! happens, never how fast. A failing test prints the tail of every replica's log.

use master_client::MasterClient;
use slapos_domain::{Command, DomainError, Op, Outcome, Reply, RequestId, State};
use slapos_domain::{Entry, Query};
use slapos_e2e::cluster::{Cluster, Settings};
use slapos_proto::rpc::master::Consistency;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use master_client::proposer_time as now;

fn register(computer: &str) -> Op {
    Op::RegisterComputer {
        computer: computer.into(),
        title: String::new(),
        owner: "e2e".into(),
        region: None,
        network: None,
        attributes: BTreeMap::new(),
    }
}

fn state_of(entries: &[Entry]) -> State {
    State::from_entries(entries.iter().cloned()).expect("the entries rebuild a state")
}

/// A client of the group that registers computers, one request id each, and remembers
/// which writes were acknowledged.
struct Writer {
    client_id: String,
    seq: u64,
    client: MasterClient,
    acked: Vec<String>,
    last_index: u64,
}

impl Writer {
    fn new(cluster: &Cluster, client_id: &str) -> Writer {
        Writer {
            client_id: client_id.into(),
            seq: 0,
            client: cluster.client(),
            acked: Vec::new(),
            last_index: 0,
        }
    }

    fn command(&mut self, op: Op) -> Command {
        self.seq += 1;
        Command {
            request_id: RequestId::new(self.client_id.clone(), self.seq),
            at: now(),
            op,
        }
    }

    /// Register `count` computers named `<prefix>-<n>`; every one must be acknowledged.
    async fn register(&mut self, cluster: &Cluster, prefix: &str, count: usize) {
        for n in 0..count {
            let name = format!("{prefix}-{n}");
            let command = self.command(register(&name));
            match self.client.submit(&command).await {
                Ok((Ok(Reply::Done), index)) => {
                    self.acked.push(name);
                    self.last_index = self.last_index.max(index);
                }
                Ok((other, _)) => cluster.fail(&format!("registering {name} answered {other:?}")),
                Err(e) => cluster.fail(&format!("registering {name} failed: {e}")),
            }
        }
    }

    /// Every acknowledged computer is in this state.
    fn check(&self, cluster: &Cluster, who: &str, entries: &[Entry]) {
        let state = state_of(entries);
        let missing: Vec<&String> = self
            .acked
            .iter()
            .filter(|c| state.computer(c).is_err())
            .collect();
        if !missing.is_empty() {
            cluster.fail(&format!(
                "{who} lacks {} acknowledged writes: {missing:?}",
                missing.len()
            ));
        }
    }

    /// Every acknowledged write is on replica `id`, read from that replica alone.
    async fn check_on(&self, cluster: &Cluster, id: u64) {
        let (entries, _) = cluster.wait_local_state(id, self.last_index).await;
        self.check(cluster, &format!("replica {id}"), &entries);
    }

    /// Every acknowledged write is in a linearizable read of the group.
    async fn check_linearizable(&mut self, cluster: &Cluster) -> State {
        let (entries, _) = self
            .client
            .read(&Query::All, Consistency::Linearizable, 0)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("linearizable read: {e}")));
        self.check(cluster, "a linearizable read", &entries);
        state_of(&entries)
    }
}

/// Writes acknowledged by the leader are on every replica; the leader's SIGKILL elects
/// another and writes resume; the old leader restarts and catches up; the whole group
/// killed and restarted keeps every acknowledged write.
#[tokio::test]
async fn three_replicas_survive_leader_crash_and_full_restart() {
    let mut cluster = Cluster::start("crash", 3, Settings::default()).await;
    let all = [1, 2, 3];
    let mut writer = Writer::new(&cluster, "e2e-crash");
    writer.register(&cluster, "COMP-A", 10).await;
    for id in all {
        writer.check_on(&cluster, id).await;
    }
    cluster.wait_converged(&all, writer.last_index).await;

    let old = cluster.wait_leader().await;
    cluster.kill9(old);
    let new = cluster.wait_leader().await;
    assert_ne!(new, old, "a killed replica cannot lead");
    writer.register(&cluster, "COMP-B", 10).await;
    let survivors: Vec<u64> = all.iter().copied().filter(|&id| id != old).collect();
    for &id in &survivors {
        writer.check_on(&cluster, id).await;
    }

    cluster.restart(old).await;
    writer.check_on(&cluster, old).await;
    cluster.wait_converged(&all, writer.last_index).await;

    for id in all {
        cluster.kill9(id);
    }
    for id in all {
        cluster.restart(id).await;
    }
    cluster.wait_leader().await;
    let mut writer_after = Writer::new(&cluster, "e2e-crash-after");
    writer_after.acked = writer.acked.clone();
    let state = writer_after.check_linearizable(&cluster).await;
    assert_eq!(state.computers().count(), writer.acked.len());
    writer_after.register(&cluster, "COMP-C", 3).await;
    for id in all {
        writer_after.check_on(&cluster, id).await;
    }
    cluster.wait_converged(&all, writer_after.last_index).await;
}

/// A replica that joins after the log was purged is sent a snapshot, and reaches the
/// same state, byte for byte, as the replicas that applied the log.
#[tokio::test]
async fn a_replica_joining_after_purge_installs_a_snapshot_and_converges() {
    let settings = Settings {
        snapshot: Some((20, 64 << 20, 5)),
        ..Settings::default()
    };
    let mut cluster = Cluster::start("snapshot", 2, settings).await;
    let mut writer = Writer::new(&cluster, "e2e-snapshot");
    writer.register(&cluster, "COMP-S", 120).await;
    let leader = cluster.wait_leader().await;

    // The leader has built a snapshot and purged the log's beginning.
    let deadline = Instant::now() + Duration::from_secs(30);
    let purged = loop {
        let s = cluster.status(leader).await;
        match s {
            Some(s) if s.snapshot_index > 0 && s.purged_index > 0 => break s.purged_index,
            _ if Instant::now() > deadline => cluster.fail(&format!(
                "the leader did not snapshot and purge after {} writes: {s:?}",
                writer.acked.len()
            )),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(purged > 0);

    cluster.add(3).await;
    // `join` returns once the new replica caught up, before it becomes a voter: it
    // already holds the snapshot. Entries up to `purged` exist nowhere as log entries any
    // more: the new replica can only have them from a snapshot.
    let right_after = cluster.status(3).await;
    assert!(
        right_after
            .as_ref()
            .is_some_and(|s| s.snapshot_index >= purged && s.applied_index >= purged),
        "join returned before the new replica caught up (purged {purged}): {right_after:?}"
    );
    let joined = cluster.wait_applied(3, purged).await;
    assert!(
        joined.snapshot_index >= purged,
        "the new replica has no snapshot covering the purged log (purged {purged}): {joined:?}"
    );

    writer.register(&cluster, "COMP-T", 5).await;
    writer.check_on(&cluster, 3).await;
    let (_, entries) = cluster.wait_converged(&[1, 2, 3], writer.last_index).await;
    writer.check(&cluster, "the converged state", &entries);
    // It follows the log since, membership included: it is a voter now.
    let status = cluster.wait_applied(3, writer.last_index).await;
    assert_ne!(status.state, "learner", "{status:?}");
    assert_eq!(
        status.members.iter().filter(|m| m.role == "voter").count(),
        3,
        "{status:?}"
    );

    // It restarts from its installed snapshot and its own log.
    cluster.kill9(3);
    cluster.restart(3).await;
    writer.register(&cluster, "COMP-U", 2).await;
    writer.check_on(&cluster, 3).await;
    cluster.wait_converged(&[1, 2, 3], writer.last_index).await;
}

/// Five voters lose two (the leader among them): the three others still commit writes
/// and agree.
#[tokio::test]
async fn five_replicas_survive_two_crashes() {
    let mut cluster = Cluster::start("five", 5, Settings::default()).await;
    let mut writer = Writer::new(&cluster, "e2e-five");
    writer.register(&cluster, "COMP-F", 5).await;

    let leader = cluster.wait_leader().await;
    let follower = (1..=5).find(|&id| id != leader).expect("a follower");
    cluster.kill9(leader);
    cluster.kill9(follower);
    let survivors: Vec<u64> = (1..=5)
        .filter(|&id| id != leader && id != follower)
        .collect();
    let new = cluster.wait_leader().await;
    assert!(survivors.contains(&new), "leader {new} is not a survivor");

    writer.register(&cluster, "COMP-G", 5).await;
    let (_, entries) = cluster.wait_converged(&survivors, writer.last_index).await;
    writer.check(&cluster, "the survivors' state", &entries);
    assert_eq!(state_of(&entries).computers().count(), 10);
}

/// `slapos cluster status --json --via <via>`, run as a process and parsed.
fn cluster_status_json(cluster: &Cluster, via: &[String]) -> serde_json::Value {
    let out = cluster.slapos(&["cluster", "status", "--json", "--via", &via.join(",")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        cluster.fail(&format!(
            "slapos cluster status failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| cluster.fail(&format!("cluster status --json: {e}:\n{stdout}")))
}

fn member_ids(status: &serde_json::Value) -> Vec<u64> {
    let mut ids: Vec<u64> = status["members"]
        .as_array()
        .expect("members is an array")
        .iter()
        .map(|m| m["id"].as_u64().expect("member id"))
        .collect();
    ids.sort();
    ids
}

/// The leader itself leaves: another is elected, writes continue, the status no longer
/// lists it; its id is refused for ever after, and a new id joins.
#[tokio::test]
async fn the_leader_can_leave_and_its_id_is_never_reused() {
    let mut cluster = Cluster::start("leave", 3, Settings::default()).await;
    let mut writer = Writer::new(&cluster, "e2e-leave");
    writer.register(&cluster, "COMP-L", 3).await;

    let old = cluster.wait_leader().await;
    let out = cluster.leave(old);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(&format!("replica {old} left the group")) {
        cluster.fail(&format!(
            "leave of the leader {old}: {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != old).collect();
    let others_api: Vec<String> = others.iter().map(|&id| cluster.api(id)).collect();

    // The removed replica still runs; the others elect one of them.
    let new = cluster.wait_leader().await;
    assert!(others.contains(&new), "leader {new} after {old} left");
    // The replica that left knows it is out: it is no member of its own group view.
    let removed = cluster
        .status(old)
        .await
        .unwrap_or_else(|| cluster.fail("the replica that left does not answer"));
    assert_ne!(removed.state, "leader", "{removed:?}");
    assert!(removed.members.iter().all(|m| m.id != old), "{removed:?}");

    // Writes continue, through a client that knows only the remaining replicas.
    let mut writer_after = Writer {
        client: MasterClient::new(others_api.clone()),
        ..Writer::new(&cluster, "e2e-leave-after")
    };
    writer_after.acked = writer.acked.clone();
    writer_after.register(&cluster, "COMP-M", 3).await;
    let (_, entries) = cluster
        .wait_converged(&others, writer_after.last_index)
        .await;
    writer_after.check(&cluster, "the remaining replicas", &entries);

    // A client that still tries the replica that left first is sent elsewhere.
    let mut stale = Writer {
        client: MasterClient::new([cluster.api(old)].into_iter().chain(others_api.clone())),
        ..Writer::new(&cluster, "e2e-leave-stale")
    };
    stale.register(&cluster, "COMP-STALE", 1).await;
    writer_after.acked.extend(stale.acked);

    let status = cluster_status_json(&cluster, &others_api);
    assert_eq!(member_ids(&status), others, "{status:#}");
    assert!(
        status["leader"].as_u64().is_some_and(|l| l != old),
        "{status:#}"
    );

    // Its id is refused, with the reason.
    let out = cluster.join(old);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "re-joining with retired id {old} was accepted:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("never reused") && stderr.contains(&format!("replica id {old}")),
        "re-joining with retired id {old}: unclear refusal:\n{stderr}"
    );

    // The replica that left goes away; a new one joins under a new id.
    cluster.kill9(old);
    cluster.add(4).await;
    let mut remaining = others.clone();
    remaining.push(4);
    let leader = cluster.wait_leader().await;
    assert!(remaining.contains(&leader));
    writer_after.register(&cluster, "COMP-N", 2).await;
    writer_after.check_on(&cluster, 4).await;
    cluster
        .wait_converged(&remaining, writer_after.last_index)
        .await;
    let status = cluster_status_json(&cluster, &[cluster.api(4)]);
    assert_eq!(member_ids(&status), remaining, "{status:#}");
    for m in status["members"].as_array().expect("members") {
        assert_eq!(m["role"], "voter", "{status:#}");
    }
}

/// A write retried with the same request id after the leader's crash is applied once:
/// the retry answers the first outcome, and the state counts one application.
#[tokio::test]
async fn a_retried_write_applies_once_across_a_leader_change() {
    let mut cluster = Cluster::start("retry", 3, Settings::default()).await;
    let mut client = cluster.client();
    let command = Command {
        request_id: RequestId::new("e2e-retry", 1),
        at: now(),
        op: register("COMP-R"),
    };
    let (first, first_index) = client
        .submit(&command)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("first submit: {e}")));
    assert_eq!(first, Ok(Reply::Done));
    let (entries, _) = client
        .read(&Query::All, Consistency::Linearizable, 0)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("read: {e}")));
    let applied_before = state_of(&entries).applied_commands();

    // Every replica holds the write before the leader dies, so that whichever is elected
    // has it.
    for id in [1, 2, 3] {
        cluster.wait_applied(id, first_index).await;
    }
    let old = cluster.wait_leader().await;
    cluster.kill9(old);
    let new = cluster.wait_leader().await;
    assert_ne!(new, old);

    let (again, _) = client
        .submit(&command)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("retried submit: {e}")));
    assert_eq!(again, first, "the retry must answer the first outcome");
    let (entries, _) = client
        .read(&Query::All, Consistency::Linearizable, 0)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("read: {e}")));
    let state = state_of(&entries);
    assert_eq!(
        state.applied_commands(),
        applied_before,
        "the retry was applied a second time"
    );
    assert_eq!(state.computers().count(), 1);

    // The same operation under a new request id is a real second application: refused.
    let fresh = Command {
        request_id: RequestId::new("e2e-retry", 2),
        ..command.clone()
    };
    let (second, _): (Outcome, u64) = client
        .submit(&fresh)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("second submit: {e}")));
    assert_eq!(second, Err(DomainError::ComputerExists("COMP-R".into())));
    let (entries, _) = client
        .read(&Query::All, Consistency::Linearizable, 0)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("read: {e}")));
    assert_eq!(state_of(&entries).applied_commands(), applied_before + 1);

    // The old leader comes back and agrees.
    cluster.restart(old).await;
    let (_, entries) = cluster.wait_converged(&[1, 2, 3], 0).await;
    assert_eq!(state_of(&entries).applied_commands(), applied_before + 1);
}

/// `slapos cluster status --json`, run as a process, describes the group.
#[tokio::test]
async fn cluster_status_json_describes_the_group() {
    let cluster = Cluster::start("status", 3, Settings::default()).await;
    let mut writer = Writer::new(&cluster, "e2e-status");
    writer.register(&cluster, "COMP-J", 3).await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");

    // Asked through a follower, the command finds the leader and every member. Lag is
    // the leader's view of replication: poll until the view is settled (one leader that
    // every member follows in the same term, nobody lagging, the writes applied
    // everywhere) — an election may happen in between on a loaded machine.
    let settled = |status: &serde_json::Value| -> bool {
        let Some(leader) = status["leader"].as_u64() else {
            return false;
        };
        let Some(members) = status["members"].as_array() else {
            return false;
        };
        let leaders: Vec<u64> = members
            .iter()
            .filter(|m| m["state"] == "leader")
            .filter_map(|m| m["id"].as_u64())
            .collect();
        leaders == [leader]
            && members.iter().all(|m| {
                m["lag"].as_u64() == Some(0)
                    && m["term"] == status["term"]
                    && m["error"].is_null()
                    && m["applied_index"].as_u64() >= Some(writer.last_index)
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = cluster_status_json(&cluster, &[cluster.api(follower)]);
        if settled(&status) {
            break status;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("the status never settled:\n{status:#}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader = status["leader"].as_u64().expect("a leader");
    assert!(
        status["term"].as_u64().is_some_and(|t| t >= 1),
        "{status:#}"
    );
    assert_eq!(member_ids(&status), vec![1, 2, 3], "{status:#}");
    let members = status["members"].as_array().expect("members");
    for m in members {
        let id = m["id"].as_u64().expect("id");
        assert_eq!(m["role"], "voter", "{m:#}");
        let expected = if id == leader { "leader" } else { "follower" };
        assert_eq!(m["state"], expected, "{m:#}");
        assert_eq!(m["api_addr"], cluster.api(id).as_str(), "{m:#}");
        assert_eq!(m["raft_addr"], cluster.replica(id).raft_addr.as_str());
        assert_eq!(m["region"], format!("region-{id}").as_str(), "{m:#}");
        assert_eq!(m["term"], status["term"], "{m:#}");
        assert!(m["error"].is_null(), "{m:#}");
        assert_eq!(m["lag"].as_u64(), Some(0), "{m:#}");
        for field in [
            "last_log_index",
            "committed_index",
            "applied_index",
            "snapshot_index",
            "purged_index",
            "log_size_bytes",
            "snapshot_size_bytes",
        ] {
            assert!(m[field].is_u64(), "{field} missing in {m:#}");
        }
        assert!(
            m["applied_index"].as_u64() >= Some(writer.last_index),
            "{m:#}"
        );
        // the leader's round trip to each follower (its heartbeats), and when each last
        // answered; nothing of the kind for the leader itself
        if id == leader {
            assert!(
                m["rtt_ms"].is_null() && m["last_answer_ms"].is_null(),
                "{m:#}"
            );
        } else {
            assert!(m["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{m:#}");
            assert!(m["last_answer_ms"].is_u64(), "{m:#}");
        }
    }
    // the timers the leader runs with
    let s = Settings::default();
    assert_eq!(
        status["timers"]["heartbeat_ms"], s.heartbeat_ms,
        "{status:#}"
    );
    assert_eq!(
        status["timers"]["election_timeout_min_ms"], s.election_timeout_min_ms,
        "{status:#}"
    );
    assert!(status["warnings"].is_array(), "{status:#}");

    // The text form says the same.
    let out = cluster.slapos(&["cluster", "status", "--via", &cluster.api(follower)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        ["1", "2", "3"]
            .iter()
            .any(|id| first.starts_with(&format!("leader: {id} "))),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" voter ")).count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("timers: heartbeat 50 ms, election timeout 300-600 ms"),
        "{text}"
    );
}

/// Concurrent writers share log entries (group commit on the leader), yet each gets its
/// own outcome: of two registrations of the same computer, exactly one succeeds and the
/// other is told it exists, whichever batch each landed in.
#[tokio::test]
async fn concurrent_writes_each_get_their_own_outcome() {
    let cluster = Cluster::start("batch", 3, Settings::default()).await;
    let client = cluster.client();
    let mut tasks = Vec::new();
    for n in 0..64u64 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let computer = format!("COMP-B{}", n % 32);
            let command = Command {
                request_id: RequestId::new(format!("e2e-batch-{n}"), 1),
                at: now(),
                op: register(&computer),
            };
            (computer, client.submit(&command).await)
        }));
    }
    let mut per_computer: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for t in tasks {
        let (computer, result) = t.await.expect("writer task");
        match result {
            Ok((outcome, _)) => per_computer.entry(computer).or_default().push(outcome),
            Err(e) => cluster.fail(&format!("a concurrent write failed: {e}")),
        }
    }
    assert_eq!(per_computer.len(), 32);
    for (computer, outcomes) in &per_computer {
        let ok = outcomes.iter().filter(|o| **o == Ok(Reply::Done)).count();
        let exists = outcomes
            .iter()
            .filter(|o| matches!(o, Err(DomainError::ComputerExists(c)) if c == computer))
            .count();
        assert_eq!((ok, exists), (1, 1), "{computer}: {outcomes:?}");
    }
    let leader = cluster.wait_leader().await;
    let (entries, _) = cluster.wait_local_state(leader, 0).await;
    let state = state_of(&entries);
    assert_eq!(state.computers().count(), 32);
    // 64 writes, plus what init applied (the group's certificate authority).
    assert_eq!(state.applied_commands(), 64 + 1);
}

/// A write asked to show its result answers, with its outcome, the requested instance as
/// the leader holds it right after applying the write, also when it reaches a follower
/// first (forwarded); an outcome that names no instance shows nothing.
#[tokio::test]
async fn a_request_answers_the_instance_it_shows_even_through_a_follower() {
    let cluster = Cluster::start("show", 3, Settings::default()).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.running().into_iter().find(|id| *id != leader);
    let follower = follower.expect("a follower");
    let mut client = MasterClient::single(&cluster.api(follower));
    let mut seq = 0;
    let mut command = |op: Op| {
        seq += 1;
        Command {
            request_id: RequestId::new("e2e-show", seq),
            at: now(),
            op,
        }
    };
    let format = command(Op::FormatComputer {
        computer: "COMP-SHOW".into(),
        spec: slapos_domain::ComputerSpec {
            address: None,
            netmask: None,
            partitions: vec![slapos_domain::PartitionSpec {
                id: "slappart0".into(),
                tap: None,
                addresses: Vec::new(),
            }],
        },
    });
    let shown = client.submit_showing(&format).await.expect("format");
    assert!(shown.outcome.is_ok(), "{:?}", shown.outcome);
    assert!(shown.shown.is_empty(), "a format names no instance");
    let supply = command(Op::Supply {
        computer: "COMP-SHOW".into(),
        url: "https://lab.example/show.cfg".into(),
        state: "available".into(),
    });
    let (supplied, _) = client.submit(&supply).await.expect("supply");
    assert!(supplied.is_ok(), "{supplied:?}");
    let mut parameters = slapos_domain::Params::new();
    parameters.insert(
        "colour".into(),
        slapos_domain::ParamValue::Str("blue".into()),
    );
    let request = command(Op::RequestInstance {
        requester: slapos_domain::Requester::Person("alice".into()),
        title: "shown".into(),
        software_release: "https://lab.example/show.cfg".into(),
        software_type: "default".into(),
        state: None,
        shared: false,
        parameters,
        sla: BTreeMap::new(),
    });
    let shown = client.submit_showing(&request).await.expect("request");
    let Ok(Reply::Instance { id, .. }) = shown.outcome else {
        cluster.fail(&format!("request answered {:?}", shown.outcome));
    };
    assert!(shown.log_index > 0);
    let state = state_of(&shown.shown);
    let instance = state.instance(id).expect("the answer shows the instance");
    assert_eq!(instance.title, "shown");
    assert_eq!(
        instance.parameter_strings.get("colour"),
        Some(&Some("blue".to_string()))
    );
    let view = state.instance_view(id).expect("and where it runs");
    assert_eq!(
        view.computer.map(|c| c.id.as_str()),
        Some("COMP-SHOW"),
        "the answer carries the computer the instance was allocated on"
    );
}
