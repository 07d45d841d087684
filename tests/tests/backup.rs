//! Backups and restore of the master (issue 25), with real processes: a backup taken
//! from a three-replica group while a client writes, checked (`backup verify`, a
//! truncated or altered copy refused), restored as a new group that serves the same
//! entities, takes writes, and refuses Raft traffic from the old group's replicas.

use std::collections::BTreeMap;

use slapos_domain::{Command, Entry, Op, Query, Reply, RequestId, State};
use slapos_e2e::cluster::{Cluster, Settings};
use slapos_proto::rpc::master::Consistency;

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

/// The domain proper of a state (no exactly-once bookkeeping, no counters), entity by
/// entity, with the authority's group id left out (a restore renames the group).
/// What a read of everything shows (the authority, partitions' keys and tokens are
/// never read out).
fn entities(entries: &[Entry]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    use slapos_domain::KeyKind;
    entries
        .iter()
        .filter(|(k, _)| {
            KeyKind::of(k).is_some_and(|kind| {
                kind.is_domain()
                    && !matches!(
                        kind,
                        KeyKind::Authority | KeyKind::IssuedKey | KeyKind::Token
                    )
            })
        })
        .cloned()
        .collect()
}

/// The keys on which two sets of entities differ, readable.
fn differences(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_and_restore_as_a_new_group() {
    let source = Cluster::start("backup-src", 3, Settings::default()).await;
    let via = source.harness().api_addrs().join(",");
    let file = source.dir().join("group.backup");

    // A client registers computers, one request id each, before, during and after
    // the backup; every acknowledgement is kept with its log index.
    let writer = {
        let mut client = source.client();
        tokio::spawn(async move {
            let mut acked: Vec<(String, u64)> = Vec::new();
            for n in 0..400u64 {
                let name = format!("COMP-{n}");
                let command = Command {
                    request_id: RequestId::new("backup-writer", n + 1),
                    at: master_client::proposer_time(),
                    op: register(&name),
                };
                if let Ok((Ok(Reply::Done), index)) = client.submit(&command).await {
                    acked.push((name, index));
                }
            }
            acked
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let out = {
        let (bin, via, file) = (
            slapos_e2e::slapos_bin(),
            via.clone(),
            file.display().to_string(),
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["cluster", "backup", "--via", &via, "--out", &file, "--json"])
                .output()
        })
        .await
        .expect("join")
        .expect("run slapos cluster backup")
    };
    if !out.status.success() {
        source.fail(&format!(
            "backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup JSON");
    let index = summary["index"].as_u64().expect("index");
    // Taken from a follower: the leader, which every write goes through, is spared.
    let leader = source.wait_leader().await;
    assert_ne!(
        summary["replica"].as_u64(),
        Some(leader),
        "the backup was read from the leader: {summary}"
    );
    let acked = writer.await.expect("writer");
    assert!(!acked.is_empty(), "the writer got no acknowledgement");

    // Checked without starting anything; what it holds is the state at its index:
    // every write acknowledged at or before it, none after.
    let verify = source.slapos(&["cluster", "backup", "verify", &file.display().to_string()]);
    assert!(
        verify.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let mut backed_up: Vec<Entry> = Vec::new();
    let read = slapos_operator::backup::read(&file, |k, v| backed_up.push((k, v)))
        .expect("the backup reads back");
    assert_eq!(read.header.index, index);
    let state = State::from_entries(backed_up.iter().cloned()).expect("the backup is a state");
    for (name, at) in &acked {
        assert_eq!(
            state.computer(name).is_ok(),
            *at <= index,
            "{name}, acknowledged at index {at}, in a backup at index {index}"
        );
    }
    let during = acked.iter().filter(|(_, at)| *at > index).count();
    println!(
        "backup at index {index}: {} pairs, {} bytes; {} of {} writes acknowledged after it",
        read.pairs,
        read.bytes,
        during,
        acked.len()
    );

    // A truncated or altered copy is refused, saying why.
    let bytes = std::fs::read(&file).expect("read the backup");
    let damaged = source.dir().join("damaged.backup");
    let damaged_s = damaged.display().to_string();
    std::fs::write(&damaged, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let v = source.slapos(&["cluster", "backup", "verify", &damaged_s]);
    assert!(!v.status.success(), "a truncated backup verified");
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("truncated"),
        "{v:?}"
    );
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x20;
    std::fs::write(&damaged, &altered).expect("write");
    let v = source.slapos(&["cluster", "backup", "verify", &damaged_s]);
    assert!(!v.status.success(), "an altered backup verified");
    let said = String::from_utf8_lossy(&v.stderr);
    assert!(
        said.contains("checksum") || said.contains("malformed"),
        "{said}"
    );

    // Restored as a new group of one, in an empty data directory.
    let mut restored = Cluster::new("backup-new", Settings::default());
    let config = restored.configure(1).clone();
    let config_path = restored
        .harness()
        .config_path(1)
        .expect("config")
        .display()
        .to_string();
    let r = restored.slapos(&[
        "cluster",
        "restore",
        &file.display().to_string(),
        "--config",
        &config_path,
    ]);
    assert!(
        r.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    // Not twice into the same directory.
    let again = restored.slapos(&[
        "cluster",
        "restore",
        &file.display().to_string(),
        "--config",
        &config_path,
    ]);
    assert!(!again.status.success(), "a restore over a store");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    restored.run(1).await;
    restored.wait_leader().await;
    let mut client = restored.client();
    let (entries, _) = client
        .read(&Query::All, Consistency::Linearizable, 0)
        .await
        .unwrap_or_else(|e| restored.fail(&format!("read the restored group: {e}")));
    let (now, then) = (entities(&entries), entities(&backed_up));
    assert!(now.len() > acked.len() / 20, "{} entities", now.len());
    assert!(
        now == then,
        "the restored group's entities differ from the backup's: {:?}",
        differences(&now, &then)
    );
    let old_group = read
        .header
        .group
        .clone()
        .expect("the source group has an id");
    let status = restored.status(1).await.expect("the new replica's status");
    let new_group = status.group;
    assert!(!new_group.is_empty(), "the new group has an id");
    let old_status = source.status(1).await.expect("the old replica's status");
    assert_eq!(old_status.group, old_group, "the backup names its group");
    assert_ne!(new_group, old_group, "a restore starts a new group");
    // It takes writes, after the backup's index.
    let (outcome, at) = client
        .submit(&Command {
            request_id: RequestId::new("after-restore", 1),
            at: master_client::proposer_time(),
            op: register("COMP-NEW"),
        })
        .await
        .unwrap_or_else(|e| restored.fail(&format!("write to the restored group: {e}")));
    assert_eq!(outcome, Ok(Reply::Done));
    assert!(at > index, "index {at} after the backup's {index}");

    // The old group's replicas are refused by the new one (and not its own group).
    let raft = format!("http://{}", config.raft_addr);
    let mut peer = slapos_proto::rpc::raft::raft_client::RaftClient::connect(raft)
        .await
        .expect("connect to the new replica's Raft service");
    let call = |group: &str| {
        let mut r = tonic::Request::new(slapos_proto::rpc::raft::RaftMessage {
            data: b"{}".to_vec(),
        });
        r.metadata_mut().insert(
            master_replica::network::GROUP_HEADER,
            group.parse().expect("ASCII"),
        );
        r
    };
    let refused = peer
        .vote(call(&old_group))
        .await
        .expect_err("the old group's vote");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains(&old_group));
    let ours = peer
        .vote(call(&new_group))
        .await
        .expect_err("a malformed vote");
    assert_eq!(
        ours.code(),
        tonic::Code::InvalidArgument,
        "past the group check: {ours:?}"
    );
}

/// Backups on a schedule (what the slapos-master release runs beside each replica):
/// one now and one every period into a directory, the newest kept, each intact; the
/// freshness check (the release's promise) passes while the newest is recent and fails
/// once it is older than its limit or when there is none. Stopped, it leaves nothing
/// half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest_and_say_when_they_are_stale() {
    let group = Cluster::start("backup-schedule", 3, Settings::default()).await;
    let via = group.harness().api_addrs().join(",");
    let dir = group.dir().join("scheduled");
    let age = |max: &str| {
        group.slapos(&[
            "cluster",
            "backup",
            "age",
            "--dir",
            dir.to_str().unwrap(),
            "--max-secs",
            max,
        ])
    };
    let none = age("3600");
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no backup in"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    let mut schedule = std::process::Command::new(slapos_e2e::slapos_bin())
        .args(["cluster", "backup", "schedule", "--via", &via, "--dir"])
        .arg(&dir)
        .args(["--every-secs", "1", "--keep", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(group.dir().join("schedule.log")).unwrap())
        .spawn()
        .expect("slapos cluster backup schedule");
    let backups = || slapos_operator::backup_schedule::backups(&dir).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Four turns at least: more were taken than are kept.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        seen.extend(backups().into_iter().map(|(p, _)| p));
        if std::time::Instant::now() > deadline {
            let _ = schedule.kill();
            group.fail(&format!("{} backups taken in 60 s", seen.len()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // SIGTERM: it stops at once, whatever it was doing.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &schedule.id().to_string()])
        .status();
    let stopped = tokio::task::spawn_blocking(move || schedule.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(stopped.success(), "{stopped}");
    let kept = backups();
    assert!(
        (1..=2).contains(&kept.len()),
        "kept {} backups: {kept:?}",
        kept.len()
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".partial")),
        "half-written backups left: {names:?}"
    );
    for (path, _) in &kept {
        let verify = group.slapos(&["cluster", "backup", "verify", path.to_str().unwrap()]);
        assert!(
            verify.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    assert!(age("3600").status.success());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let stale = age("1");
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("s old, over 1 s"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
}

/// nginx from Debian as a WebDAV directory over HTTPS that requires a client
/// certificate of its own authority; stopped on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (a SIGKILL would leave them running).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PEM files of a test authority: (ca, server cert, server key, client cert, client key)
/// in `dir`.
fn test_pki(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    // Distinct names: OpenSSL (nginx) takes a leaf named like its issuer for a
    // self-signed certificate.
    let named = |cn: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    };
    let mut ca = named("backup test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = named(&format!("{eku:?}"));
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (server, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth);
    let files = [
        "ca.pem",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ]
    .map(|n| dir.join(n));
    for (path, text) in files
        .iter()
        .zip([ca_cert.pem(), server, server_key, client, client_key])
    {
        std::fs::write(path, text).unwrap();
    }
    files
}

/// Scheduled backups sent to an HTTPS place as well (`--upload`): a real nginx from
/// Debian with WebDAV PUT and client certificates receives each, whole; the freshness
/// check can count the uploads; a server that refuses the client is an error the
/// schedule reports (and tries again), never a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_are_uploaded_to_an_https_place() {
    if std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .is_err()
    {
        panic!("nginx is missing: scripts/install-deps installs nginx-light");
    }
    let group = Cluster::start("backup-upload", 1, Settings::default()).await;
    let via = group.harness().api_addrs().join(",");
    let root = group.dir().join("upload");
    let received = root.join("www/backups");
    std::fs::create_dir_all(&received).unwrap();
    let [ca, server_crt, server_key, client_crt, client_key] = test_pki(&root);
    let port = slapos_harness::free_port().expect("a free port");
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\npid {r}/nginx.pid;\nerror_log {r}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {r}/access.log;\n  client_body_temp_path {r}/body;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {sc};\n\
             ssl_certificate_key {sk};\n    ssl_client_certificate {ca};\n    ssl_verify_client on;\n\
             root {r}/www;\n    client_max_body_size 1g;\n\
             location /backups/ {{ dav_methods PUT; }}\n  }}\n}}\n",
            r = root.display(),
            sc = server_crt.display(),
            sk = server_key.display(),
            ca = ca.display(),
        ),
    )
    .unwrap();
    let _nginx = Nginx(
        std::process::Command::new("nginx")
            .args(["-c", conf.to_str().unwrap(), "-p", root.to_str().unwrap()])
            .args(["-g", "daemon off;"])
            .stderr(std::fs::File::create(root.join("nginx.stderr")).unwrap())
            .spawn()
            .expect("start nginx"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx does not listen: {}",
            std::fs::read_to_string(root.join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = format!("https://127.0.0.1:{port}/backups/");
    let dir = root.join("local");
    let schedule = |cert: &std::path::Path, key: &std::path::Path| {
        std::process::Command::new(slapos_e2e::slapos_bin())
            .args(["cluster", "backup", "schedule", "--via", &via, "--dir"])
            .arg(&dir)
            .args([
                "--every-secs",
                "1",
                "--keep",
                "2",
                "--upload",
                &url,
                "--upload-ca",
            ])
            .arg(&ca)
            .arg("--upload-cert")
            .arg(cert)
            .arg("--upload-key")
            .arg(key)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.join("schedule.log")).unwrap())
            .spawn()
            .expect("slapos cluster backup schedule")
    };
    let received_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&received)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };

    // Presenting a certificate nginx does not accept as a client's (the server's own,
    // made for server authentication only): refused, said in the log, nothing
    // received, and the schedule keeps running.
    let mut refused = schedule(&server_crt, &server_key);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        refused.try_wait().unwrap().is_none(),
        "the schedule stopped"
    );
    let _ = refused.kill();
    let _ = refused.wait();
    assert!(received_files().is_empty(), "{:?}", received_files());
    let log = std::fs::read_to_string(root.join("schedule.log")).unwrap();
    assert!(log.contains("backup failed"), "{log}");
    // (it has uploaded nothing; a limit of 0 leaves no grace since it started)
    let stale = group.slapos(&[
        "cluster",
        "backup",
        "age",
        "--dir",
        dir.to_str().unwrap(),
        "--max-secs",
        "0",
        "--uploaded",
    ]);
    assert!(!stale.status.success(), "no upload yet, yet fresh");

    // The client's certificate: every backup arrives, whole.
    let mut sending = schedule(&client_crt, &client_key);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while received_files().len() < 2 {
        if std::time::Instant::now() > deadline {
            let _ = sending.kill();
            group.fail(&format!(
                "uploads: {:?}; {}",
                received_files(),
                std::fs::read_to_string(root.join("schedule.log")).unwrap_or_default()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &sending.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || sending.wait()).await;
    for file in received_files() {
        let verify = group.slapos(&["cluster", "backup", "verify", file.to_str().unwrap()]);
        assert!(
            verify.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    let fresh = group.slapos(&[
        "cluster",
        "backup",
        "age",
        "--dir",
        dir.to_str().unwrap(),
        "--max-secs",
        "3600",
        "--uploaded",
    ]);
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
}

/// A gateway follows its replica's stream of changed node views (what wakes the nodes'
/// held long polls) from the last index it was told. A group restored from a backup
/// under the same addresses has its own, lower indexes: a watcher of another group gets
/// a reset at this group's index at once (every held poll looks again), where a watcher
/// of this group from ahead of it (another replica's index) waits for it to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_another_groups_history_is_reset_at_once() {
    let cluster = Cluster::start("views-group", 1, Settings::default()).await;
    cluster.wait_leader().await;
    let addr = cluster.harness().api_addrs()[0].clone();
    let far = 1_000_000;
    let (_, mut other) = master_client::MasterClient::new([addr.clone()])
        .watch_views(far, "a-group-before-the-restore")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("watch: {e}")));
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), other.message())
        .await
        .unwrap_or_else(|_| cluster.fail("no answer to a watcher of another group"))
        .unwrap_or_else(|e| cluster.fail(&format!("stream: {e}")))
        .unwrap_or_else(|| cluster.fail("stream ended"));
    assert!(first.reset, "every view may have changed: {first:?}");
    assert!(first.index < far, "{first:?}");
    assert!(
        !first.group.is_empty() && first.group != "a-group-before-the-restore",
        "the replica names its own group: {first:?}"
    );
    // The same group's watcher from ahead (it followed a replica further on) is told
    // nothing until this replica passes its index.
    let (_, mut same) = master_client::MasterClient::new([addr])
        .watch_views(far, &first.group)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("watch: {e}")));
    let silent = tokio::time::timeout(std::time::Duration::from_secs(2), same.message()).await;
    assert!(silent.is_err(), "nothing before index {far}: {silent:?}");
}
