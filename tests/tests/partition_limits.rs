//! Partitions that cannot hurt each other (issue 26), end to end: real processes, as
//! root, real Unix users and the host's real cgroups, a one-replica `slapos up` cluster
//! as the master, native releases.
//!
//! * limits come from the node's configuration (`[partition-limits]`) and from the
//!   master: a computer whose provider sells the size `big` (its `partition_sizes`
//!   attribute), an instance whose SLA names it gets `[partition-size:big]`'s limits, and
//!   its hosting is billed as `hosting/big`;
//! * every service runs in its partition's cgroup, the kernel holds its limits, and
//!   `slapos node status --limits` shows them with the use;
//! * a partition over its disk limit is stopped and the error reported, its neighbours'
//!   services untouched; back under its limit, it runs again;
//! * the usage journal carries the kernel's figures: the CPU time of 200 processes that
//!   lived about 10 ms each and were all gone before the report is counted, with the
//!   memory peak and the processes; the accounting bills the CPU time at its price;
//! * unformat removes the cgroups.
//!
//! Prerequisites as for slapgrid.rs (root, the node venv); cgroups with the cpu, cpuacct
//! (or v2), memory and pids controllers. The fork bomb and the memory hog are in
//! slapgrid's own tests (`cgroup::tests`), which run on the host's real cgroups too.

use slapos_e2e::agent::{
    beat_artifact, beat_service, instance_file, native_release, open_dir, prefix, python, text,
    wait_for, AgentNode, Artifact, Up,
};
use slapos_e2e::slapos_bin;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `bin/work <partition> <title>`: what each instance does once (an `etc/run` entry
/// that exits 0): `*fill` writes 4 MB, `*burn` runs 200 short CPU-bound processes and
/// writes what they used as the shell's `times` counts it (its reaped children).
const WORK: &str = r#"#!/bin/sh
cd "$1" || exit 1
case "$2" in
  *fill) head -c 4000000 /dev/zero > fill.bin ;;
  *burn)
    i=0
    while [ $i -lt 200 ]; do
      sh -c 'x=0; while [ $x -lt 2500 ]; do x=$((x+1)); done'
      i=$((i+1))
    done
    times > times.txt ;;
esac
echo done > work.done
"#;

fn release(dir: &Path) -> String {
    let work = Artifact {
        file: "work.sh",
        content: WORK,
        dest: "bin/work",
        mode: Some("0750"),
        sha256: None,
    };
    let instance = beat_service()
        + &instance_file(
            "etc/run/work",
            "0750",
            "shell",
            "#!/bin/sh\nexec {{software_path}}/bin/work {{partition_path}} {{param.name}}\n",
        );
    native_release(dir, "limits", &[beat_artifact(), work], &instance)
}

fn slapos(args: &[&str]) -> Output {
    Command::new(slapos_bin()).args(args).output().unwrap()
}

fn slapos_ok(args: &[&str]) -> String {
    let out = slapos(args);
    assert!(out.status.success(), "slapos {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `slapos node status --limits --json`.
fn limits(node: &AgentNode) -> serde_json::Value {
    let out = node.node(&["status", "--limits", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn partition<'a>(report: &'a serde_json::Value, pid: &str) -> &'a serde_json::Value {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition"] == pid)
        .unwrap_or_else(|| panic!("{pid} not in {report}"))
}

/// The state and pid of `beat-on-watch` of partition `pid`.
fn beat(node: &AgentNode, pid: &str) -> (String, Option<u64>) {
    let b = node
        .process(pid, "beat-on-watch")
        .unwrap_or_else(|| panic!("no beat in {pid}"));
    (b["state"].as_str().unwrap().to_owned(), b["pid"].as_u64())
}

/// `0m1.234000s`: seconds.
fn shell_seconds(t: &str) -> f64 {
    let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
    m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
}

/// The cgroup directories of the node's partitions on this host (absolute root
/// `/<root>` in every hierarchy mounted under /sys/fs/cgroup).
fn cgroup_dirs(root: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join(root))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn limits_from_node_and_master_kernel_usage_billed_and_a_disk_limit_that_stops_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let url = up.urls[0].as_str();
    let computer = "COMP-LIMITS";
    // The provider sells the size `big` on this computer and prices it, and CPU time.
    slapos_ok(&[
        "computer",
        "register",
        "--gateway",
        url,
        "--id",
        computer,
        "--attribute",
        "partition_sizes=big",
    ]);
    for (resource, price, unit) in [
        ("hosting", "1", "hour"),
        ("hosting/big", "3", "hour"),
        ("service_module/cpu_time", "0.5", "unit"),
    ] {
        slapos_ok(&[
            "price",
            "set",
            "--gateway",
            url,
            "--resource",
            resource,
            "--price",
            price,
            "--unit",
            unit,
            "--computer",
            computer,
        ]);
    }
    let users = prefix("l");
    let cgroup_root = format!("sgtest-{users}");
    let node = AgentNode::new(&root.join("node"), computer, &up.urls, &users, 3);
    let cfg = std::fs::read_to_string(&node.cfg).unwrap().replace(
        "[slapformat]",
        &format!(
            "cgroup_root = /{cgroup_root}\ndisk_check_interval = 0\n\n\
             [partition-limits]\npids = 64\nmemory = 256M\ndisk = 2M\n\n\
             [partition-size:big]\npids = 128\nmemory = 512M\ncpu_weight = 200\ndisk = 64M\n\n\
             [slapformat]"
        ),
    );
    std::fs::write(&node.cfg, cfg).unwrap();
    let out = node.ok(&["format"]);
    assert!(out.contains("prepared the computer"), "{out}");
    assert!(
        !cgroup_dirs(&cgroup_root).is_empty(),
        "format made no cgroup"
    );

    let software = release(&root.join("release"));
    python(&["supply", url, &software, computer]);
    let mut pids = std::collections::BTreeMap::new();
    for (title, size) in [("l-fill", None), ("l-burn", Some("big")), ("l-quiet", None)] {
        let mut args = vec!["request", url, &software, computer, title];
        if let Some(size) = size {
            args.extend(["started", size]);
        }
        let answer: serde_json::Value = serde_json::from_str(&python(&args)).unwrap();
        pids.insert(title, answer["partition"].as_str().unwrap().to_owned());
    }
    let (fill, burn, quiet) = (&pids["l-fill"], &pids["l-burn"], &pids["l-quiet"]);
    let out = node.ok(&["software"]);
    assert!(out.contains("1 installed"), "{out}");
    let out = node.ok(&["instance"]);
    assert!(out.contains("3 processed"), "{out}");

    // Each service runs in its partition's cgroup, which holds its limits: the size the
    // master sent for l-burn, the node's defaults for the others.
    let report = limits(&node);
    assert!(
        report["cgroups"].as_str().unwrap().starts_with("v"),
        "{report}"
    );
    for (pid, size, pids_max, memory) in [
        (fill, None, 64, 256u64 << 20),
        (burn, Some("big"), 128, 512 << 20),
        (quiet, None, 64, 256 << 20),
    ] {
        let p = partition(&report, pid);
        assert_eq!(p["size"].as_str(), size, "{p}");
        assert_eq!(p["enforced"]["pids"], pids_max, "{p}");
        assert_eq!(p["enforced"]["memory"], memory, "{p}");
        assert_eq!(p["unapplied"], serde_json::json!([]), "{p}");
        let (state, service) = beat(&node, pid);
        assert_eq!(state, "Running");
        let membership =
            std::fs::read_to_string(format!("/proc/{}/cgroup", service.unwrap())).unwrap();
        let inside = format!("/{cgroup_root}/shared/{pid}");
        assert!(
            membership.lines().filter(|l| l.ends_with(&inside)).count() >= 3,
            "{pid}'s service is not in its cgroup:\n{membership}"
        );
    }
    assert_eq!(partition(&report, burn)["enforced"]["cpu_weight"], 200);

    // The one-shot work is done: l-fill is over its 2 MB, l-burn's processes are gone.
    for pid in [fill, burn, quiet] {
        let done = node.partition_dir(pid).join("work.done");
        wait_for("the work to end", Duration::from_secs(60), || done.exists());
    }
    let before: Vec<_> = [burn, quiet].iter().map(|p| beat(&node, p)).collect();
    let out = node.node(&["instance"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(fill.as_str()) && all.contains("over the partition's limit"),
        "{all}"
    );
    assert_ne!(beat(&node, fill).0, "Running", "l-fill still runs");
    let after: Vec<_> = [burn, quiet].iter().map(|p| beat(&node, p)).collect();
    assert_eq!(before, after, "a neighbour was touched");
    let report = limits(&node);
    assert_eq!(partition(&report, fill)["disk_over"], true);
    assert_eq!(partition(&report, quiet)["disk_over"], false);
    let printed = node.ok(&["status", "--limits"]);
    assert!(printed.contains("OVER: services stopped"), "{printed}");
    // Back under its limit, the partition runs again.
    std::fs::remove_file(node.partition_dir(fill).join("fill.bin")).unwrap();
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    wait_for("l-fill to run again", Duration::from_secs(20), || {
        beat(&node, fill).0 == "Running"
    });

    // The usage journal carries the kernel's figures: the CPU time of every short
    // process of l-burn, though none was alive at the report.
    let times = std::fs::read_to_string(node.partition_dir(burn).join("times.txt")).unwrap();
    let children: f64 = times
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(shell_seconds)
        .sum();
    assert!(children > 0.2, "the workload used {children} s: {times}");
    let out = node.ok(&["report"]);
    assert!(out.contains("movements"), "{out}");
    let usage: serde_json::Value = serde_json::from_str(&slapos_ok(&[
        "usage",
        "--json",
        "--computer",
        computer,
        "--gateway",
        url,
    ]))
    .unwrap();
    let movements = usage["result_list"].as_array().unwrap();
    let quantity = |pid: &str, resource: &str| -> Option<f64> {
        movements
            .iter()
            .find(|m| m["compute_partition_id"] == pid && m["resource"] == resource)
            .map(|m| m["quantity"].as_str().unwrap().parse().unwrap())
    };
    let cpu = quantity(burn, "service_module/cpu_time").expect("cpu_time of l-burn");
    assert!(
        cpu >= children - 0.02,
        "reported {cpu} s, the workload's processes used {children} s"
    );
    for pid in [fill, burn, quiet] {
        for resource in ["service_module/memory_peak", "service_module/processes"] {
            assert!(
                quantity(pid, resource).is_some(),
                "{resource} of {pid} missing: {usage}"
            );
        }
    }
    // ... and the accounting bills it, and l-burn's hosting as its size.
    let invoice: serde_json::Value =
        serde_json::from_str(&slapos_ok(&["invoice", "--json", "--gateway", url])).unwrap();
    let lines = invoice["line_list"].as_array().unwrap();
    let line = |resource: &str| {
        lines
            .iter()
            .filter(|l| l["resource"] == resource)
            .collect::<Vec<_>>()
    };
    let cpu_lines = line("service_module/cpu_time");
    let billed: f64 = cpu_lines
        .iter()
        .map(|l| l["quantity"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(billed >= cpu, "billed {billed} s of CPU: {invoice}");
    assert!(
        cpu_lines.iter().all(|l| l["currency"] == "EUR"),
        "{invoice}"
    );
    assert_eq!(line("hosting/big").len(), 1, "{invoice}");

    // Unformat removes the cgroups.
    drop(node);
    assert!(
        cgroup_dirs(&cgroup_root).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&cgroup_root)
    );
}
