//! What the fleet needs from this host: the open-file limit raised for the bench and the
//! processes it starts, loopback source addresses past one address's ephemeral ports,
//! and the CPU time and memory of those processes from `/proc`.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::FleetBenchError;

/// The limits the run found and set.
#[derive(Debug, Clone, Serialize)]
pub struct HostLimits {
    /// RLIMIT_NOFILE (soft, hard) when the bench started.
    pub nofile_before: Limit,
    /// RLIMIT_NOFILE (soft, hard) the bench and every process it started ran with.
    pub nofile: Limit,
    /// `net.ipv4.ip_local_port_range`.
    pub ephemeral_ports: (u32, u32),
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// The loopback addresses the long-polling nodes connect from (empty: the kernel's
    /// choice, one address).
    pub source_addresses: Vec<String>,
}

fn read_sys(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `net.ipv4.ip_local_port_range` (Linux's default when unreadable).
pub fn ephemeral_ports() -> (u32, u32) {
    read_sys("/proc/sys/net/ipv4/ip_local_port_range")
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|x| x.parse::<u32>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999))
}

pub fn somaxconn() -> Option<u64> {
    read_sys("/proc/sys/net/core/somaxconn").and_then(|s| s.trim().parse().ok())
}

/// An rlimit: (soft, hard).
pub type Limit = (u64, u64);

/// Raise RLIMIT_NOFILE to at least `want` (soft and, when needed, hard: root, or
/// CAP_SYS_RESOURCE, up to `fs.nr_open`). Children spawned afterwards inherit it.
/// Returns (before, after).
pub fn raise_nofile(want: u64) -> Result<(Limit, Limit), FleetBenchError> {
    let before = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| FleetBenchError::Limits(format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
    let (soft, hard) = before;
    if soft >= want {
        return Ok((before, before));
    }
    let nr_open = read_sys("/proc/sys/fs/nr_open")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = want.min(nr_open);
    let set = if hard >= target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)
    } else {
        setrlimit(Resource::RLIMIT_NOFILE, target, target)
    };
    if let Err(e) = set {
        tracing::warn!(error = %e, want, "cannot raise RLIMIT_NOFILE; using the hard limit");
        // At least the hard limit the process already may use.
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let after = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| FleetBenchError::Limits(format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
    if after.0 < want {
        return Err(FleetBenchError::Limits(format!(
            "the run needs {want} open files, RLIMIT_NOFILE is {} (hard {}, fs.nr_open {nr_open}): \
             raising the hard limit needs CAP_SYS_RESOURCE (root outside a container that drops it) \
             or a higher `ulimit -Hn` (limits.conf, LimitNOFILE=, docker --ulimit nofile=); \
             else run fewer long-polling nodes",
            after.0, after.1
        )));
    }
    Ok((before, after))
}

/// Loopback source addresses for `connections` connections to `dest`: none when one
/// address's ephemeral ports suffice or the destination is not IPv4 loopback, else
/// 127.0.0.2, 127.0.0.3, ... each carrying at most 3/5 of the ephemeral range (a socket
/// bound before it connects takes a port of its address for every destination; the rest
/// is left to other connections and TIME_WAIT).
pub fn source_addresses(connections: usize, dest_is_loopback_v4: bool) -> Vec<Ipv4Addr> {
    let (lo, hi) = ephemeral_ports();
    let per_address = (hi.saturating_sub(lo) as usize + 1) * 3 / 5;
    if !dest_is_loopback_v4 || connections <= per_address {
        return Vec::new();
    }
    let n = connections.div_ceil(per_address.max(1)).min(250);
    (0..n)
        .map(|k| Ipv4Addr::new(127, 0, 0, 2 + k as u8))
        .collect()
}

/// USER_HZ: /proc reports CPU times in these ticks (100 on every Linux architecture
/// userspace sees).
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after "pid (comm) ": state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (VmRSS, VmHWM) in MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A process the bench watches: its CPU ticks at a mark.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// CPU ticks of every watched process at one instant.
pub struct CpuMark {
    at: Instant,
    ticks: Vec<Option<u64>>,
}

impl CpuMark {
    pub fn take(procs: &[Watched]) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            ticks: procs.iter().map(|p| cpu_ticks(p.pid)).collect(),
        }
    }

    /// Per process, the share of one core used between `self` and `later`, in percent.
    pub fn percent_until(&self, later: &CpuMark) -> Vec<Option<f64>> {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        self.ticks
            .iter()
            .zip(&later.ticks)
            .map(|(a, b)| {
                let d = b.as_ref()?.checked_sub(*a.as_ref()?)?;
                Some(d as f64 / TICKS_PER_SEC / secs * 100.0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        let (rss, hwm) = memory_mib(me).unwrap();
        assert!(rss > 0.0 && hwm >= rss);
    }

    #[test]
    fn source_addresses_only_past_one_address() {
        assert!(source_addresses(100, true).is_empty());
        assert!(source_addresses(1_000_000, false).is_empty());
        let (lo, hi) = ephemeral_ports();
        let per = (hi - lo + 1) as usize * 3 / 5;
        let a = source_addresses(per * 2 + 1, true);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0], Ipv4Addr::new(127, 0, 0, 2));
    }
}
