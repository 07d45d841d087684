use super::*;

#[test]
fn v1_and_v2_files_for_the_same_limits() {
    let limits = Limits {
        cpu_weight: Some(200),
        cpu_quota: Some(150),
        memory: Some(64 << 20),
        pids: Some(100),
        ..Limits::default()
    };
    let all = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
    ];
    let every = |_: &str| true;
    let v1 = plan(Version::V1, &all, &limits, &every);
    fn v(k: &'static str, v: &str) -> (&'static str, String) {
        (k, v.to_string())
    }
    assert_eq!(
        v1,
        vec![
            v("cpu.shares", "2048"),
            v("cpu.cfs_period_us", "100000"),
            v("cpu.cfs_quota_us", "150000"),
            v("memory.memsw.limit_in_bytes", "-1"),
            v("memory.limit_in_bytes", "67108864"),
            v("memory.memsw.limit_in_bytes", "67108864"),
            v("pids.max", "100"),
        ]
    );
    let v2 = plan(Version::V2, &all, &limits, &every);
    assert_eq!(
        v2,
        vec![
            v("cpu.weight", "200"),
            v("cpu.max", "150000 100000"),
            v("memory.max", "67108864"),
            v("memory.swap.max", "0"),
            v("memory.min", "0"),
            v("pids.max", "100"),
        ]
    );
    // No limit: the kernel's defaults written back (a limit taken away is lifted).
    let none = |_: &str| false;
    assert_eq!(
        plan(Version::V1, &all, &Limits::default(), &none),
        vec![
            v("cpu.shares", "1024"),
            v("cpu.cfs_period_us", "100000"),
            v("cpu.cfs_quota_us", "-1"),
            v("memory.limit_in_bytes", "-1"),
            v("pids.max", "max"),
        ]
    );
    // A reserved share is protected from reclaim on v2.
    let v = |k: &'static str, x: &str| (k, x.to_string());
    let reserved = Limits {
        memory: Some(1 << 30),
        reserved: true,
        ..Limits::default()
    };
    assert!(plan(Version::V2, &[Controller::Memory], &reserved, &every)
        .contains(&v("memory.min", "1073741824")));
}

#[test]
fn limits_without_their_controller_are_reported() {
    let limits = Limits {
        cpu_quota: Some(50),
        memory: Some(1 << 20),
        pids: Some(10),
        disk: Some(1 << 30),
        ..Limits::default()
    };
    let missing = unapplicable(&[Controller::Cpu], &limits);
    let names: Vec<&str> = missing.iter().map(|u| u.limit.as_str()).collect();
    assert_eq!(names, vec!["memory", "pids"]);
    assert_eq!(missing[0].reason, "no memory controller");
    assert!(unapplicable(&[], &Limits::default()).is_empty());
    // A reserved quota buys CPUs of its own only with the cpuset controller.
    let reserved = Limits {
        cpu_quota: Some(50),
        reserved: true,
        ..Limits::default()
    };
    let missing = unapplicable(&[Controller::Cpu], &reserved);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].reason, "no cpuset controller");
    assert!(unapplicable(&[Controller::Cpu, Controller::Cpuset], &reserved).is_empty());
}

/// The host's cgroups under a root of this test's own (relative: nested in the cgroup
/// the test runs in), removed when dropped. `None` when not root or the host has none.
struct Scratch {
    cgroups: Cgroups,
}

impl Scratch {
    fn new(tag: &str) -> Option<Scratch> {
        let root = format!("sgt-{tag}-{}", std::process::id());
        match detect(Mode::Auto, &root) {
            Availability::Available(cgroups) => Some(Scratch { cgroups }),
            other => {
                eprintln!("skipped: cgroups {}", other.describe());
                None
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A killed process leaves its cgroup once reaped (orphans by init, which may
        // take a moment on a loaded machine): kill and retry.
        for _ in 0..300 {
            for (p, _) in self.cgroups.partitions() {
                for base in &self.cgroups.bases {
                    for class in [SHARED, RESERVED] {
                        let dir = base.dir.join(class).join(&p);
                        if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(pid),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                        }
                    }
                }
            }
            if self.cgroups.remove_all().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("scratch cgroups left: {:?}", self.cgroups.remove_all());
    }
}

fn sh(
    script: &str,
    user: &crate::process::Identity,
    cgroup: &PartitionCgroup,
) -> crate::process::Output {
    crate::process::Run::new("/bin/sh", "/", Path::new("/"))
        .arg("-c")
        .arg(script)
        .as_user(user.clone())
        .in_cgroup(Some(cgroup.clone()))
        .timeout(Some(std::time::Duration::from_secs(30)))
        .output()
        .unwrap()
}

/// A partition's cgroup holds its limits, every process the agent starts for it (and
/// their children) runs in it, and the kernel counts their CPU time, short-lived ones
/// included.
#[test]
fn a_partition_runs_in_its_cgroup_with_its_limits_and_is_counted() {
    let Some(scratch) = Scratch::new("run") else {
        return;
    };
    let user = crate::testutil::TestUser::new("cgrun");
    let limits = Limits {
        cpu_weight: Some(50),
        cpu_quota: Some(150),
        memory: Some(64 << 20),
        pids: Some(40),
        ..Limits::default()
    };
    let cgroup = scratch.cgroups.partition("slappart0", &limits);
    assert!(cgroup.ensure().unwrap().is_empty());
    for base in &cgroup.dirs {
        guard(&base.dir).unwrap();
    }
    let held = cgroup.current_limits();
    assert_eq!(
        (held.cpu_weight, held.cpu_quota, held.memory, held.pids),
        (Some(50), Some(150), Some(64 << 20), Some(40))
    );
    // The program and its children are in the cgroup, as the partition's user.
    let out = sh(
        "cat /proc/self/cgroup; (cat /proc/self/cgroup) | cat",
        &user.identity,
        &cgroup,
    );
    assert!(out.success(), "{}", out.output);
    let suffix = format!("/sgt-run-{}/shared/slappart0", std::process::id());
    assert_eq!(
        out.output.lines().filter(|l| l.ends_with(&suffix)).count(),
        2 * cgroup.dirs.len(),
        "{}",
        out.output
    );
    // 200 short processes, all gone when the count is read: every one is counted, as
    // much as the workload's own count of itself and its reaped children (`times`, in
    // clock ticks: 10 ms each of its four figures).
    let before = cgroup.usage().cpu_seconds.unwrap();
    let out = sh(
        "i=0; while [ $i -lt 200 ]; do sh -c 'x=0; while [ $x -lt 300 ]; do x=$((x+1)); done'; \
         i=$((i+1)); done; times",
        &user.identity,
        &cgroup,
    );
    assert!(out.success(), "{}", out.output);
    let used = cgroup.usage().cpu_seconds.unwrap() - before;
    let seconds = |t: &str| -> f64 {
        let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
        m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
    };
    let known: f64 = out
        .output
        .lines()
        .rev()
        .take(2)
        .flat_map(str::split_whitespace)
        .map(seconds)
        .sum();
    assert!(known > 0.0, "{}", out.output);
    assert!(
        (used - known).abs() <= 0.04 + known * 0.02,
        "the cgroup counted {used} s, the workload {known} s"
    );
    // A new limit applies in place.
    let tighter = scratch.cgroups.partition(
        "slappart0",
        &Limits {
            pids: Some(10),
            ..limits.clone()
        },
    );
    tighter.ensure().unwrap();
    assert_eq!(tighter.current_limits().pids, Some(10));
    assert_eq!(
        scratch.cgroups.partitions(),
        vec![("slappart0".to_string(), false)]
    );
}

/// A partition's user can neither move its processes out of its cgroup, nor change its
/// limits, nor make a cgroup of its own.
#[test]
fn a_partition_cannot_leave_or_enlarge_its_cgroup() {
    let Some(scratch) = Scratch::new("esc") else {
        return;
    };
    let user = crate::testutil::TestUser::new("cgesc");
    let cgroup = scratch.cgroups.partition(
        "slappart0",
        &Limits {
            pids: Some(20),
            memory: Some(64 << 20),
            ..Limits::default()
        },
    );
    cgroup.ensure().unwrap();
    for base in &cgroup.dirs {
        let dir = base.dir.display();
        let parent = base.dir.parent().unwrap().parent().unwrap().display();
        let limit_file = if base.controllers.contains(&Controller::Pids) {
            "pids.max"
        } else if base.controllers.contains(&Controller::Memory) {
            "memory.limit_in_bytes"
        } else {
            "notify_on_release"
        };
        for (what, script) in [
            ("leave", format!("echo $$ > {parent}/cgroup.procs")),
            (
                "leave to the root",
                format!("echo $$ > {parent}/../cgroup.procs"),
            ),
            ("raise a limit", format!("echo 100000 > {dir}/{limit_file}")),
            ("make a cgroup", format!("mkdir {dir}/mine")),
        ] {
            let out = sh(&script, &user.identity, &cgroup);
            assert!(!out.success(), "the partition could {what}: {script}");
        }
    }
    assert_eq!(cgroup.current_limits().pids, Some(20));
}

/// A fork bomb stops at the partition's process limit; the agent (outside) still forks.
#[test]
fn a_fork_bomb_stops_at_the_process_limit() {
    let Some(scratch) = Scratch::new("bomb") else {
        return;
    };
    if !scratch
        .cgroups
        .bases
        .iter()
        .any(|b| b.controllers.contains(&Controller::Pids))
    {
        return;
    }
    let user = crate::testutil::TestUser::new("cgbomb");
    let cgroup = scratch.cgroups.partition(
        "slappart0",
        &Limits {
            pids: Some(25),
            ..Limits::default()
        },
    );
    cgroup.ensure().unwrap();
    // A neighbour in its own cgroup, running before the bomb.
    let neighbour = scratch.cgroups.partition("slappart1", &Limits::default());
    neighbour.ensure().unwrap();
    let out = sh(
        "sleep 120 >/dev/null 2>&1 & echo $!",
        &user.identity,
        &neighbour,
    );
    let quiet: i32 = out.output.trim().parse().unwrap();
    // Far more children than allowed, each holding on (killed with the scratch cgroups).
    let _ = sh(
        "i=0; while [ $i -lt 200 ]; do sleep 120 >/dev/null 2>&1 & i=$((i+1)); done",
        &user.identity,
        &cgroup,
    );
    let pids = cgroup
        .dirs
        .iter()
        .find(|b| b.controllers.contains(&Controller::Pids))
        .unwrap();
    let current: u64 = read_control(&pids.dir.join("pids.current"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(current <= 25, "{current} processes");
    let events = read_control(&pids.dir.join("pids.events")).unwrap_or_default();
    let refused: u64 = events
        .strip_prefix("max ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "no fork was refused: {events}");
    // The agent forks, the neighbour lives.
    let fine = crate::process::Run::new("/bin/true", "/", Path::new("/"))
        .output()
        .unwrap();
    assert!(fine.success());
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(quiet), None).is_ok(),
        "the neighbour died"
    );
}

/// A memory hog is killed inside its partition; the partition's other process lives.
#[test]
fn a_memory_hog_is_killed_inside_its_partition_only() {
    let Some(scratch) = Scratch::new("hog") else {
        return;
    };
    if !scratch
        .cgroups
        .bases
        .iter()
        .any(|b| b.controllers.contains(&Controller::Memory))
    {
        return;
    }
    let user = crate::testutil::TestUser::new("cghog");
    let cgroup = scratch.cgroups.partition(
        "slappart0",
        &Limits {
            memory: Some(48 << 20),
            ..Limits::default()
        },
    );
    cgroup.ensure().unwrap();
    // A neighbour partition, running before the hog.
    let neighbour = scratch.cgroups.partition("slappart1", &Limits::default());
    neighbour.ensure().unwrap();
    let out = sh(
        "sleep 120 >/dev/null 2>&1 & echo $!",
        &user.identity,
        &neighbour,
    );
    let quiet_neighbour: i32 = out.output.trim().parse().unwrap();
    // A quiet process, then one that grows a 200 MB string in the shell's memory.
    let out = sh(
        "sleep 120 & quiet=$!; \
         sh -c 'x=$(head -c 200000000 /dev/zero | tr \"\\\\0\" a); echo survived ${#x}'; \
         echo hog=$?; kill -0 $quiet && echo quiet-alive; kill $quiet",
        &user.identity,
        &cgroup,
    );
    assert!(out.output.contains("hog=137"), "{}", out.output);
    assert!(!out.output.contains("survived"), "{}", out.output);
    assert!(out.output.contains("quiet-alive"), "{}", out.output);
    let peak = cgroup.usage().memory_peak_bytes.unwrap();
    assert!(peak <= 48 << 20, "peak {peak}");
    // The kernel counted the kill in the partition's cgroup, and the neighbour lives.
    let memory_dir = &cgroup
        .dirs
        .iter()
        .find(|b| b.controllers.contains(&Controller::Memory))
        .unwrap()
        .dir;
    let failcnt: u64 = match cgroup.version {
        Version::V1 => read_control(&memory_dir.join("memory.oom_control"))
            .and_then(|t| stat_field(&t, "oom_kill"))
            .unwrap_or(0),
        Version::V2 => read_control(&memory_dir.join("memory.events"))
            .and_then(|t| stat_field(&t, "oom_kill"))
            .unwrap_or(0),
    };
    assert!(failcnt > 0, "no OOM kill counted in the partition");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(quiet_neighbour), None).is_ok(),
        "the neighbour partition's process died"
    );
}

/// A partition name that is not one plain name never becomes a cgroup path: nothing is
/// made, nothing is joined (checked before any file is touched, so no real hierarchy is
/// needed here).
#[test]
fn hostile_partition_names_are_refused_before_any_cgroup_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let cgroups = Cgroups {
        version: Version::V1,
        bases: vec![Base {
            dir: dir.path().join("slapos"),
            controllers: vec![Controller::Pids],
        }],
    };
    for bad in ["..", "../../escape", "a/../../b", "."] {
        let cgroup = cgroups.partition(bad, &Limits::default());
        assert!(
            matches!(cgroup.ensure(), Err(CgroupError::Unsafe { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(cgroup.open_procs(), Err(CgroupError::Unsafe { .. })),
            "{bad:?}"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "something was created"
    );
}

/// A host without the controllers, simulated: detection is pointed at the mountinfo and
/// /proc/self/cgroup texts of such hosts (this machine has them). Each is unavailable,
/// with the reason, never silently "available with nothing".
#[test]
fn a_host_without_controllers_is_unavailable_with_the_reason() {
    let no_cgroup_at_all = "22 1 0:21 / /proc rw,nosuid - proc proc rw
        23 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
";
    let empty_v2 = "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
";
    let only_other_v1 = "30 27 0:27 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
        32 27 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
";
    let nothing = |_: &Path| Some(String::new());
    for (host, mountinfo) in [
        ("no cgroup mounted", no_cgroup_at_all),
        ("v2 without cpu, memory, pids", empty_v2),
        ("v1 without our controllers", only_other_v1),
    ] {
        for mode in [Mode::Auto, Mode::V1, Mode::V2] {
            let found = detect_from(mode, "/slapos", mountinfo, "0::/\n", &nothing);
            assert!(
                matches!(&found, Availability::Unavailable(why) if !why.is_empty()),
                "{host} {mode:?}: {found:?}"
            );
            assert!(found.describe().starts_with("unavailable: "), "{host}");
            assert!(found.cgroups().is_none());
        }
    }
    // And a hostile cgroup_root is no path either.
    let v1 = "28 27 0:25 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
    assert!(matches!(
        detect_from(Mode::Auto, "/../../etc", v1, "0::/\n", &nothing),
        Availability::Unavailable(_)
    ));
    assert!(matches!(
        detect_from(Mode::Auto, "/slapos", v1, "0::/\n", &nothing),
        Availability::Available(_)
    ));
}

#[test]
fn off_is_disabled_and_named() {
    assert_eq!(detect(Mode::Off, "/slapos"), Availability::Disabled);
    assert!(Availability::Disabled.describe().contains("off"));
}

/// The default root is two levels deep (`/slapos/<computer>`): the missing levels are
/// made (root's, guarded) on the first partition's cgroup.
#[test]
fn a_root_of_several_levels_is_made() {
    let top = format!("sgt-nest-{}", std::process::id());
    let root = format!("{top}/COMP-1");
    let scratch = match detect(Mode::Auto, &root) {
        Availability::Available(cgroups) => Scratch { cgroups },
        other => {
            eprintln!("skipped: cgroups {}", other.describe());
            return;
        }
    };
    let cgroup = scratch.cgroups.partition(
        "slappart0",
        &Limits {
            pids: Some(7),
            ..Limits::default()
        },
    );
    cgroup.ensure().unwrap();
    for base in &cgroup.dirs {
        let top_dir = base.dir.ancestors().nth(3).unwrap();
        assert!(top_dir.ends_with(&top), "{}", top_dir.display());
        guard(top_dir).unwrap();
    }
    if cgroup
        .dirs
        .iter()
        .any(|b| b.controllers.contains(&Controller::Pids))
    {
        assert_eq!(cgroup.current_limits().pids, Some(7));
    }
    let tops: Vec<PathBuf> = cgroup
        .dirs
        .iter()
        .map(|b| b.dir.ancestors().nth(3).unwrap().to_owned())
        .collect();
    drop(scratch);
    for t in tops {
        std::fs::remove_dir(&t).unwrap();
    }
}

/// The CPUs a process of `cgroup` may run on, as the kernel tells it (`Cpus_allowed_list`).
fn allowed_cpus(user: &crate::process::Identity, cgroup: &PartitionCgroup) -> Vec<u32> {
    let out = sh("grep Cpus_allowed_list /proc/self/status", user, cgroup);
    assert!(out.success(), "{}", out.output);
    let list = out.output.split(':').nth(1).unwrap_or_default();
    cpus::parse(list).unwrap_or_else(|| panic!("a CPU list: {}", out.output))
}

/// A reserved partition's CPU quota buys it whole CPUs that the shared partitions no
/// longer run on (and cannot ask for), so a busy neighbour never delays it; the CPUs
/// come back to the shared partitions when the reservation goes.
#[test]
fn a_reserved_quota_buys_cpus_the_shared_partitions_cannot_run_on() {
    let Some(scratch) = Scratch::new("cpus") else {
        return;
    };
    let Some(base) = scratch
        .cgroups
        .bases
        .iter()
        .find(|b| b.controllers.contains(&Controller::Cpuset))
    else {
        eprintln!("skipped: no cpuset controller here");
        return;
    };
    let user = crate::testutil::TestUser::new("cgcpus");
    let reserved = |quota: Option<u32>| Limits {
        cpu_quota: quota,
        reserved: true,
        ..Limits::default()
    };
    let replica = scratch.cgroups.partition("replica", &reserved(Some(50)));
    let neighbour = scratch.cgroups.partition("slappart0", &Limits::default());
    assert!(replica.ensure().unwrap().is_empty());
    neighbour.ensure().unwrap();
    scratch.cgroups.rebalance().unwrap();
    let all = read_cpus(scratch.cgroups.version, &base.dir).unwrap();
    if all.len() < 2 {
        eprintln!("skipped: one CPU cannot be split ({all:?})");
        return;
    }
    let (mine, theirs) = all.split_at(all.len() - 1);
    assert_eq!(allowed_cpus(&user.identity, &neighbour), mine);
    assert_eq!(allowed_cpus(&user.identity, &replica), theirs);
    assert_eq!(neighbour.cpus(), Some(cpus::format(mine)));
    // A shared partition made afterwards starts where the shared ones run.
    let late = scratch.cgroups.partition("slappart1", &Limits::default());
    late.ensure().unwrap();
    assert_eq!(allowed_cpus(&user.identity, &late), mine);
    // The partition's user cannot move onto the reserved CPU.
    let reserved_cpu = theirs[0];
    let out = sh(
        &format!("taskset -c {reserved_cpu} true && echo escaped"),
        &user.identity,
        &neighbour,
    );
    assert!(!out.output.contains("escaped"), "{}", out.output);
    // The reservation lifted: everybody everywhere again.
    scratch
        .cgroups
        .partition("replica", &reserved(None))
        .ensure()
        .unwrap();
    scratch.cgroups.rebalance().unwrap();
    assert_eq!(allowed_cpus(&user.identity, &neighbour), all);
    assert_eq!(allowed_cpus(&user.identity, &late), all);
}
