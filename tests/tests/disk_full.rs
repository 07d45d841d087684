//! A replica whose disk fills (issue 25): its data directory on a small tmpfs (root
//! only: the test says so and passes without doing anything otherwise). While the
//! group keeps serving with the other two, the full replica stops voting and accepting
//! writes, says why (its log, `cluster status`), and once the tmpfs is grown it comes
//! back on its own and catches up; no acknowledged write is lost anywhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use master_client::MasterClient;
use slapos_domain::{Command, Op, Reply, RequestId, State};
use slapos_e2e::cluster::{Cluster, Settings};

fn register(computer: &str, padding: &str) -> Op {
    Op::RegisterComputer {
        computer: computer.into(),
        title: padding.into(),
        owner: "e2e".into(),
        region: None,
        network: None,
        attributes: BTreeMap::new(),
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).expect("create the mount point");
    std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn resize_tmpfs(dir: &Path, size: &str) {
    let ok = std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "remount {} to {size}", dir.display());
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fills_stops_and_comes_back() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    // Timers with room: the writes are large and the disk fills on a busy machine.
    let settings = Settings {
        heartbeat_ms: 250,
        election_timeout_min_ms: 1500,
        election_timeout_max_ms: 3000,
        snapshot: None,
    };
    let mut cluster = Cluster::new("diskfull", settings);
    cluster.configure(1);
    cluster.init(1);
    cluster.run(1).await;
    cluster.add(2).await;
    cluster.configure(3);
    let data = cluster.replica(3).data_dir.clone();
    // Replica 3 keeps 40 MiB free on a 96 MiB tmpfs.
    let config_path = cluster
        .harness()
        .config_path(3)
        .expect("config")
        .to_path_buf();
    let mut config = master_replica::node::ReplicaConfig::load(&config_path).expect("config");
    config.min_free_mb = 40;
    std::fs::write(&config_path, config.to_toml()).expect("write the config");
    assert!(
        mount_tmpfs(&data, "96m"),
        "mount a tmpfs on {}",
        data.display()
    );
    let _mounted = Mounted(data.clone());
    cluster.run(3).await;
    let joined = cluster.join(3);
    assert!(joined.status.success(), "join: {joined:?}");
    cluster.wait_leader().await;
    // A stream held on replica 3 all along, as a gateway's watch is: it must not keep
    // the stopped replica from exiting once its disk has room.
    let api3 = cluster
        .harness()
        .api_addr(3)
        .expect("replica 3's API")
        .to_string();
    let (_, held_watch) = MasterClient::new([api3])
        .watch_views(0, "")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("watch on replica 3: {e}")));

    // Write until replica 3 stops for lack of room, and a while after: the group (1 and
    // 2) acknowledges every write.
    let mut client = cluster.client();
    let padding = "x".repeat(64 * 1024);
    let mut acked = Vec::new();
    let mut last = 0;
    let started = Instant::now();
    let mut stopped: Option<(Instant, String)> = None;
    let mut n = 0u64;
    while stopped
        .as_ref()
        .is_none_or(|(t, _)| t.elapsed() < Duration::from_secs(3))
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "replica 3 never stopped ({} bytes free)\n{}",
            free_bytes(&data),
            cluster.logs()
        );
        n += 1;
        let name = format!("COMP-{n}");
        let command = Command {
            request_id: RequestId::new("diskfull", n),
            at: master_client::proposer_time(),
            op: register(&name, &padding),
        };
        match client.submit(&command).await {
            Ok((Ok(Reply::Done), index)) => {
                acked.push(name);
                last = index;
            }
            other => cluster.fail(&format!("write {n} with two healthy replicas: {other:?}")),
        }
        if stopped.is_none() && n.is_multiple_of(10) {
            if let Some(s) = cluster.status(3).await {
                if s.state.starts_with("stopped") {
                    stopped = Some((Instant::now(), s.state));
                }
            }
        }
    }
    let (_, said) = stopped.expect("stopped");
    println!(
        "{} writes acknowledged in {:.1} s; replica 3 says: {said}",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        said.contains("no space left"),
        "the reason names the disk: {said}"
    );
    assert!(
        free_bytes(&data) > 20 << 20,
        "the reserve kept the filesystem from filling"
    );
    let leader = cluster.wait_leader().await;
    assert_ne!(leader, 3, "a full replica does not lead");

    // Space freed: the replica exits to be started again (as the node's supervisor
    // does for a hosted replica), and has every acknowledged write.
    resize_tmpfs(&data, "512m");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = cluster.harness().pid(3).expect("replica 3's pid");
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    };
    while !exited() {
        assert!(
            Instant::now() < deadline,
            "replica 3 did not exit once its disk had room\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held_watch);
    cluster.kill9(3); // reaps the exited process
    cluster.restart(3).await;
    // Catching up means megabytes of large entries: more than the usual wait on a busy
    // machine.
    let status = cluster
        .harness()
        .wait_applied(3, last, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("replica 3 did not catch up: {e}")));
    assert!(!status.state.starts_with("stopped"), "{}", status.state);
    let (entries, _) = cluster.wait_local_state(3, last).await;
    let state = State::from_entries(entries.into_iter()).expect("replica 3's state");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|c| state.computer(c).is_err())
        .collect();
    assert!(missing.is_empty(), "replica 3 lacks {missing:?}");
    cluster.wait_converged(&[1, 2, 3], last).await;
}
