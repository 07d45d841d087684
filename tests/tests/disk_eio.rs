//! A replica whose disk returns I/O errors (issue 25): its data directory on the
//! harness's FUSE passthrough (root only: the test says so and passes without doing
//! anything otherwise). From the moment the passthrough fails writes and syncs with
//! EIO, the replica must stop (say why in its log and exit) rather than acknowledge
//! what it could not persist; the other two keep serving; no acknowledged write is lost
//! on the healthy replicas; once the disk is healthy again the replica is started again
//! and catches up. Twice: first the faulty replica leads, then it follows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use slapos_domain::{Command, Op, Reply, RequestId, State};
use slapos_e2e::cluster::{Cluster, Settings};
use slapos_harness::{FaultMode, FaultyFs};

fn register(computer: &str) -> Op {
    Op::RegisterComputer {
        computer: computer.into(),
        title: "eio".into(),
        owner: "e2e".into(),
        region: None,
        network: None,
        attributes: BTreeMap::new(),
    }
}

/// Whether process `pid` is gone or a zombie (exited, not yet reaped).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The acknowledged writes, and the last index acknowledged.
#[derive(Default)]
struct Acked {
    names: Vec<String>,
    last: u64,
    unknown: usize,
    n: u64,
}

impl Acked {
    /// One write through the group; an error is an unknown outcome (the client's
    /// deadline passed during an election), never an acknowledgement.
    async fn write(&mut self, client: &mut master_client::MasterClient) -> bool {
        self.n += 1;
        let name = format!("COMP-{}", self.n);
        let command = Command {
            request_id: RequestId::new("eio", self.n),
            at: master_client::proposer_time(),
            op: register(&name),
        };
        match client.submit(&command).await {
            Ok((Ok(Reply::Done), index)) => {
                self.names.push(name);
                self.last = self.last.max(index);
                true
            }
            _ => {
                self.unknown += 1;
                false
            }
        }
    }
}

/// Write until replica `faulty` has exited after its disk failed, then 3 s more with
/// the other two; returns how long it took to exit.
async fn fail_and_write_on(
    cluster: &Cluster,
    fs: &FaultyFs,
    mode: FaultMode,
    faulty: u64,
    acked: &mut Acked,
) -> Duration {
    let mut client = cluster.client();
    for _ in 0..30 {
        assert!(
            acked.write(&mut client).await,
            "a write with three replicas"
        );
    }
    let pid = cluster
        .harness()
        .pid(faulty)
        .expect("the faulty replica's pid");
    let leader = cluster.wait_leader().await;
    fs.set(mode);
    let failed_at = Instant::now();
    // the exit watched apart from the writes, which may wait on the dying leader
    let watcher = std::thread::spawn(move || {
        while !exited(pid) && failed_at.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        failed_at.elapsed()
    });
    println!(
        "disk failed at {:?} since the epoch",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    );
    let mut stopped = None;
    let mut after_stop = 0;
    while stopped.is_none_or(|(t, _): (Instant, Duration)| t.elapsed() < Duration::from_secs(3)) {
        assert!(
            failed_at.elapsed() < Duration::from_secs(60),
            "replica {faulty} kept running 60 s after its disk failed ({} EIO injected)\n{}",
            fs.switch().injected(),
            cluster.logs()
        );
        let ok = acked.write(&mut client).await;
        if stopped.is_some() && ok {
            after_stop += 1;
        }
        if stopped.is_none() && exited(pid) {
            stopped = Some((Instant::now(), failed_at.elapsed()));
        }
    }
    let _ = stopped.expect("stopped");
    let took = watcher.join().expect("the exit watcher");
    println!(
        "replica {faulty} ({}) exited {:.2} s after its disk failed ({mode:?}, {} EIO injected); {} writes acknowledged by the other two after that, {} unknown outcomes so far",
        if leader == faulty { "the leader" } else { "a follower" },
        took.as_secs_f64(),
        fs.switch().injected(),
        after_stop,
        acked.unknown,
    );
    assert!(fs.switch().injected() > 0, "the replica met an EIO");
    assert!(
        after_stop > 0,
        "the other two keep acknowledging\n{}",
        cluster.logs()
    );
    let log = cluster.harness().log(faulty);
    let said = log
        .lines()
        .rev()
        .find(|l| l.contains("this replica stopped"))
        .unwrap_or_else(|| cluster.fail("the stopped replica says why in its log"));
    println!("its log: {said}");
    assert!(
        said.contains("Input/output error") || said.contains("I/O"),
        "the reason names the disk's error: {said}"
    );
    took
}

/// Every acknowledged write is in replica `id`'s own state.
async fn holds_every_ack(cluster: &Cluster, id: u64, acked: &Acked) {
    let (entries, _) = cluster.wait_local_state(id, acked.last).await;
    let state = State::from_entries(entries).expect("a replica's state");
    let missing: Vec<&String> = acked
        .names
        .iter()
        .filter(|c| state.computer(c).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "replica {id} lacks acknowledged writes {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fails_stops_rather_than_acknowledging() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a FUSE filesystem needs root");
        return;
    }
    let settings = Settings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        snapshot: None,
    };
    let mut cluster = Cluster::new("diskeio", settings);
    // Replica 1, which bootstraps the group and so leads it first, on the passthrough.
    cluster.configure(1);
    let data = cluster.replica(1).data_dir.clone();
    let backing = cluster.dir().join("replica-1.backing");
    std::fs::create_dir_all(&backing).expect("backing directory");
    std::fs::set_permissions(
        &backing,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("backing directory's mode");
    let fs = FaultyFs::mount(&backing, &data).expect("mount the FUSE passthrough");
    cluster.init(1);
    cluster.run(1).await;
    cluster.add(2).await;
    cluster.add(3).await;
    cluster.wait_leader().await;

    let mut acked = Acked::default();
    // The leader's disk fails: it stops, another leads, the client's retries go there.
    let leading = fail_and_write_on(&cluster, &fs, FaultMode::FailWrites, 1, &mut acked).await;
    for id in [2, 3] {
        holds_every_ack(&cluster, id, &acked).await;
    }
    // Healthy again: started again from its disk, it catches up.
    fs.set(FaultMode::Healthy);
    cluster.kill9(1); // reaps the exited process
    cluster.restart(1).await;
    cluster.wait_applied(1, acked.last).await;
    holds_every_ack(&cluster, 1, &acked).await;

    // Again, every operation failing this time; replica 1 follows then, unless it won
    // an election since it came back (the line printed says which).
    let second = fail_and_write_on(&cluster, &fs, FaultMode::FailAll, 1, &mut acked).await;
    for id in [2, 3] {
        holds_every_ack(&cluster, id, &acked).await;
    }
    fs.set(FaultMode::Healthy);
    cluster.kill9(1);
    cluster.restart(1).await;
    cluster.wait_applied(1, acked.last).await;
    holds_every_ack(&cluster, 1, &acked).await;
    cluster.wait_converged(&[1, 2, 3], acked.last).await;
    println!(
        "{} writes acknowledged, {} unknown; stopped {:.2} s (leading) and {:.2} s (second time) after the disk failed",
        acked.names.len(),
        acked.unknown,
        leading.as_secs_f64(),
        second.as_secs_f64()
    );
}
