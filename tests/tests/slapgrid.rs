//! Our node agent (`slapos node ...`, crate slapgrid) as real processes, as root, with
//! real Unix users and real services:
//!
//! * against the real slapproxy (the reference's own master): format, install
//!   tinysr (harness/tinysr) with buildout, run its instance, publish its connection
//!   parameters, stop it, destroy it: what SlapOS's own node agent does in the same
//!   scenario (tests/tests/node_agent.rs runs that one against our master);
//! * against our cluster (`slapos up`): the same scenario plus a native release, the
//!   gateway in use killed mid-run (the agent fails over to another), usage posted and
//!   billed, and every gateway gone (services keep running, the run reports offline);
//! * `slapos node format` of 10 partitions with real users, addresses and taps inside a
//!   network namespace: idempotent, partition 1 cannot read partition 0's files, each tap
//!   owned by its partition's user and a port of the bridge `tap_bridge` names, and the
//!   free partitions (taps, users) removed when `partition_amount` shrinks.
//!
//! Prerequisites as for node_agent.rs: root, the node venv (Python 3.12 with slapos.core,
//! zc.buildout<5, made by tests/compat/node/setup-node-venv.sh, which .ci/run calls).
//! Each test creates its users under a unique prefix and removes them (`slapos node
//! unformat`) with everything else it started.

use slapos_e2e::agent::{
    beat_release, chmod_tree, kill9, md5_hex, node_venv, open_dir, pid_uid, prefix, python, text,
    uid_of, wait_for, AgentNode, Up,
};
use slapos_e2e::slapos_bin;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The tinysr copy with absolute paths (node_helper.py prepare), readable by every user.
fn tinysr(root: &Path, url: &str) -> String {
    let source = root.join("tinysr-source");
    slapos_harness::tinysr::write_source(&source).unwrap();
    let scratch = root.join("helper");
    let software = python(&[
        "prepare",
        scratch.to_str().unwrap(),
        url,
        source.to_str().unwrap(),
        "unused",
    ]);
    chmod_tree(&scratch);
    software.trim().to_owned()
}

/// The scenario both masters get: format, supply and request tinysr, software, instance
/// (started, published, unchanged on a second run), stopped, destroyed.
fn tinysr_scenario(node: &AgentNode, url: &str, computer: &str, software: &str) {
    let out = node.ok(&["format"]);
    assert!(out.contains("prepared the computer"), "{out}");
    let soft_user = format!("{}s", node.users);
    let user0 = format!("{}u0", node.users);
    assert!(uid_of(&soft_user) > 0);
    let p0 = node.partition(0);
    let meta = std::fs::metadata(&p0).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.uid(), uid_of(&user0));

    python(&["supply", url, software, computer]);
    let answer: serde_json::Value = serde_json::from_str(&python(&[
        "request",
        url,
        software,
        computer,
        "sg-instance",
    ]))
    .unwrap();
    let pid = answer["partition"].as_str().expect("allocated").to_owned();
    let p = node.root.join("inst").join(&pid);
    let owner = uid_of(&format!(
        "{}u{}",
        node.users,
        pid.trim_start_matches("slappart")
    ));

    // Software: built as the software user, marked completed.
    let out = node.ok(&["software"]);
    assert!(out.contains("1 installed"), "{out}");
    let sr = node.root.join("soft").join(md5_hex(software));
    for f in [".completed", "instance.cfg", "bin/buildout"] {
        assert!(sr.join(f).exists(), "{f} missing in {}", sr.display());
    }
    assert_eq!(
        std::fs::metadata(sr.join("bin/buildout")).unwrap().uid(),
        uid_of(&soft_user)
    );
    let out = node.ok(&["software"]);
    assert!(
        out.contains("0 installed, 1 up to date"),
        "a completed release was rebuilt: {out}"
    );

    // Instance: deployed as the partition user, services supervised, published.
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    for f in [
        "etc/service/hello",
        "etc/run/once",
        "etc/promise/check-hello",
        "once.txt",
        "buildout.cfg",
        ".timestamp",
    ] {
        assert!(p.join(f).exists(), "{f} missing in {}", p.display());
    }
    assert_eq!(
        std::fs::metadata(p.join("once.txt")).unwrap().uid(),
        owner,
        "once.txt not written by the partition user"
    );
    let cfg = std::fs::read_to_string(p.join("buildout.cfg")).unwrap();
    assert!(
        cfg.contains(&format!("partition-id = {pid}")) && cfg.contains("offline = true"),
        "{cfg}"
    );
    let hello = node
        .process(&pid, "hello-on-watch")
        .expect("hello supervised");
    assert_eq!(hello["state"], "Running", "{hello}");
    let hello_pid = hello["pid"].as_u64().unwrap();
    assert_eq!(
        pid_uid(hello_pid),
        owner,
        "hello does not run as the partition user"
    );
    let answer: serde_json::Value = serde_json::from_str(&python(&[
        "request",
        url,
        software,
        computer,
        "sg-instance",
    ]))
    .unwrap();
    assert_eq!(
        answer["connection"]["hello-url"],
        format!("http://example.invalid/{pid}"),
        "{answer}"
    );
    assert_eq!(answer["connection"]["computer"], computer);
    let log = std::fs::read_to_string(p.join(format!(".{pid}_hello.log"))).unwrap_or_default();
    assert!(
        log.contains(&format!("hello from {pid} state=started")),
        "service log: {log:?}"
    );

    // Unchanged: nothing redone, the service keeps its process.
    let out = node.ok(&["instance"]);
    assert!(out.contains("0 processed, 1 unchanged"), "{out}");
    assert_eq!(
        node.process(&pid, "hello-on-watch").unwrap()["pid"].as_u64(),
        Some(hello_pid)
    );

    // Stopped: the services go, the partition stays.
    python(&["request", url, software, computer, "sg-instance", "stopped"]);
    node.ok(&["instance"]);
    assert!(
        node.process(&pid, "hello-on-watch").is_none(),
        "hello still supervised after stop"
    );
    wait_for("hello to exit", Duration::from_secs(15), || {
        pid_uid(hello_pid) == u32::MAX
    });
    assert!(p.join("once.txt").exists());

    // Destroyed: wiped, reported, the master frees the partition.
    python(&[
        "request",
        url,
        software,
        computer,
        "sg-instance",
        "destroyed",
    ]);
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 destroyed"), "{out}");
    let left: Vec<String> = std::fs::read_dir(&p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".slapos-resource")
        .collect();
    assert!(left.is_empty(), "partition not wiped: {left:?}");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let full: serde_json::Value = serde_json::from_str(&python(&["full", url, computer])).unwrap();
    let freed = full["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["partition"] == pid.as_str())
        .unwrap();
    assert!(
        freed["software_release"].is_null(),
        "partition not freed: {full}"
    );
}

#[test]
fn agent_runs_tinysr_against_the_real_slapproxy() {
    let venv = slapos_e2e::compat::venv();
    let computer = "COMP-SG-PROXY";
    let proxy = slapos_e2e::compat::Proxy::start(&venv, computer, &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let software = tinysr(&root, &proxy.url);
    let node = AgentNode::new(
        &root.join("node"),
        computer,
        std::slice::from_ref(&proxy.url),
        &prefix("p"),
        2,
    );
    tinysr_scenario(&node, &proxy.url, computer, &software);
    // Usage: the measured and reported movements reach slapproxy's useComputer.
    let out = node.ok(&["report"]);
    assert!(out.contains("report:"), "{out}");
}

#[test]
fn agent_against_our_cluster_fails_over_and_keeps_services_offline() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start(&root);
    let computer = "COMP-SG-CLUSTER";
    let software = tinysr(&root, &up.urls[0]);
    let node = AgentNode::new(&root.join("node"), computer, &up.urls, &prefix("c"), 3);
    tinysr_scenario(&node, &up.urls[0], computer, &software);

    // A native release, requested through another gateway.
    let native = beat_release(&root.join("native"));
    let url = &up.urls[1];
    python(&["supply", url, &native, computer]);
    let answer: serde_json::Value =
        serde_json::from_str(&python(&["request", url, &native, computer, "sg-native"])).unwrap();
    let pid = answer["partition"].as_str().unwrap().to_owned();
    // The gateway the agent uses (the first it lists) dies mid-run: the agent fails over.
    kill9(up.gateway_pids[0]);
    let out = node.ok(&["software"]);
    assert!(out.contains("1 installed"), "{out}");
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    let beat = node
        .process(&pid, "beat-on-watch")
        .expect("beat supervised");
    assert_eq!(beat["state"], "Running");
    let answer: serde_json::Value =
        serde_json::from_str(&python(&["request", url, &native, computer, "sg-native"])).unwrap();
    let p = node.root.join("inst").join(&pid);
    assert_eq!(
        answer["connection"]["greeting"],
        format!("hello sg-native from {pid}"),
        "{answer}"
    );
    assert_eq!(
        answer["connection"]["beat-file"],
        p.join("beat.txt").display().to_string()
    );

    // Usage of the running partitions is posted, and billed by the master.
    let out = node.ok(&["report"]);
    assert!(out.contains("movements"), "{out}");
    let usage = Command::new(slapos_bin())
        .args(["usage", "--json", "--computer", computer, "--gateway", url])
        .output()
        .unwrap();
    let usage_text = String::from_utf8_lossy(&usage.stdout);
    assert!(
        usage_text.contains("service_module/cpu_time"),
        "usage not billed: {}",
        text(&usage)
    );

    // Every gateway gone: the run says offline (exit 3) and the services keep running.
    for pid in &up.gateway_pids[1..] {
        kill9(*pid);
    }
    let out = node.node(&["instance"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let again = node
        .process(&pid, "beat-on-watch")
        .expect("beat still supervised");
    assert_eq!(
        again["pid"], beat["pid"],
        "the service was restarted while offline"
    );
    assert_eq!(again["state"], "Running");
}

fn ip(netns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", netns, "ip"])
        .args(args)
        .output()
        .unwrap()
}

/// A file of /sys/class/net as the namespace sees it (trimmed; empty when absent).
fn sys_net(netns: &str, file: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "cat"])
        .arg(Path::new("/sys/class/net").join(file))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn format_ten_partitions_with_users_addresses_and_taps() {
    node_venv();
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir).join("node");
    let users = prefix("f");
    let netns = Netns(format!("{users}ns"));
    assert!(Command::new("ip")
        .args(["netns", "add", &netns.0])
        .status()
        .unwrap()
        .success());
    // The node's interface: one end of a veth pair, with a global IPv6 /64.
    assert!(ip(
        &netns.0,
        &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]
    )
    .status
    .success());
    assert!(ip(
        &netns.0,
        &["addr", "add", "2001:db8:5a:1::1/64", "dev", "eth0", "nodad"]
    )
    .status
    .success());
    // The bridge the taps join (tap_bridge).
    assert!(ip(&netns.0, &["link", "add", "br0", "type", "bridge"])
        .status
        .success());
    for l in ["eth0", "eth1", "lo", "br0"] {
        ip(&netns.0, &["link", "set", l, "up"]);
    }
    let node = AgentNode::new(
        &root,
        "COMP-SG-FORMAT",
        &["http://127.0.0.1:9/".into()],
        &users,
        10,
    );
    let cfg = std::fs::read_to_string(&node.cfg).unwrap().replace(
        "alter_network = false\ncreate_tap = false\n",
        "alter_network = true\ncreate_tap = true\ntap_bridge = br0\ninterface_name = eth0\nipv4_local_network = 10.44.0.0/16\n",
    );
    std::fs::write(&node.cfg, cfg).unwrap();
    let format = || {
        Command::new("ip")
            .args(["netns", "exec", &netns.0])
            .arg(slapos_bin())
            .args(["node", "format", "--cfg"])
            .arg(&node.cfg)
            .output()
            .unwrap()
    };
    // No master reachable from the namespace: formatted, "offline success" (2).
    let out = format();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let addrs = String::from_utf8_lossy(&ip(&netns.0, &["-o", "addr", "show"]).stdout).into_owned();
    for i in 0..10 {
        let user = format!("{users}u{i}");
        let p = node.partition(i);
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o7777),
            (uid_of(&user), 0o750)
        );
        assert!(
            addrs.contains(&format!("2001:db8:5a:1::{:x}/64", i + 2)),
            "partition {i} IPv6 missing:\n{addrs}"
        );
        let tap = ip(&netns.0, &["link", "show", &format!("slaptap{i}")]);
        assert!(tap.status.success(), "tap {i}: {}", text(&tap));
        // Owned by the partition's user (a VM of the partition opens it), a port of br0.
        assert_eq!(
            sys_net(&netns.0, &format!("slaptap{i}/owner")),
            uid_of(&user).to_string(),
            "tap {i}'s owner"
        );
        assert!(
            sys_net(&netns.0, &format!("slaptap{i}/master/uevent")).contains("INTERFACE=br0"),
            "tap {i} is not a port of br0"
        );
        let resource: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.join(".slapos-resource")).unwrap()).unwrap();
        assert_eq!(resource["user"]["name"], user);
        assert_eq!(resource["reference"], format!("slappart{i}"));
    }
    assert_eq!(
        addrs.matches("10.44.").count(),
        10,
        "one local IPv4 per partition:\n{addrs}"
    );
    // Idempotent: a second run changes nothing.
    let state = std::fs::read(root.join("etc/slapos.json")).unwrap();
    let out = format();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(std::fs::read(root.join("etc/slapos.json")).unwrap(), state);
    // (The kernel's duplicate address detection may finish between the two readings:
    // an address losing its `tentative` flag is not a change format made.)
    let settled = |text: &str| text.replace(" tentative", "");
    assert_eq!(
        settled(&String::from_utf8_lossy(
            &ip(&netns.0, &["-o", "addr", "show"]).stdout
        )),
        settled(&addrs)
    );
    // Partition 1's user cannot read partition 0's files.
    let secret = node.partition(0).join("secret");
    std::fs::write(&secret, "only for partition 0").unwrap();
    std::os::unix::fs::chown(&secret, Some(uid_of(&format!("{users}u0"))), None).unwrap();
    let read = Command::new("runuser")
        .args(["-u", &format!("{users}u1"), "--", "cat"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(
        !read.status.success(),
        "partition 1 read partition 0's file: {}",
        text(&read)
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{}",
        text(&read)
    );
    let own = Command::new("runuser")
        .args(["-u", &format!("{users}u0"), "--", "cat"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(
        own.status.success(),
        "partition 0 cannot read its own file: {}",
        text(&own)
    );
    // Fewer partitions: the two last ones (free) go with their taps and users; the
    // others stay as they are.
    let cfg = std::fs::read_to_string(&node.cfg)
        .unwrap()
        .replace("partition_amount = 10", "partition_amount = 8");
    std::fs::write(&node.cfg, cfg).unwrap();
    let out = format();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for i in 0..10 {
        let tap = ip(&netns.0, &["link", "show", &format!("slaptap{i}")]);
        let user = Command::new("id")
            .arg(format!("{users}u{i}"))
            .output()
            .unwrap();
        assert_eq!(tap.status.success(), i < 8, "tap {i}: {}", text(&tap));
        assert_eq!(user.status.success(), i < 8, "user {i}");
        assert_eq!(node.partition(i).exists(), i < 8, "partition {i}");
    }
    assert!(secret.exists());
    // unformat (in the namespace, for the taps) before the namespace goes.
    let out = Command::new("ip")
        .args(["netns", "exec", &netns.0])
        .arg(slapos_bin())
        .args(["node", "unformat", "--cfg"])
        .arg(&node.cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        Command::new("id")
            .arg(format!("{users}u0"))
            .output()
            .unwrap()
            .status
            .code()
            != Some(0),
        "users left behind"
    );
    // Plain unformat leaves the directories, now owned by deleted users; --purge takes
    // them, the software releases and the state, and leaves anything else alone.
    assert!(node.partition(0).exists());
    let stranger = node.partition(0).parent().unwrap().join("not-a-partition");
    std::fs::create_dir_all(&stranger).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &netns.0])
        .arg(slapos_bin())
        .args(["node", "unformat", "--purge", "--cfg"])
        .arg(&node.cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for i in 0..10 {
        assert!(!node.partition(i).exists(), "partition {i} left behind");
    }
    assert!(!secret.exists());
    assert!(stranger.exists(), "purge took what is not a partition");
}
