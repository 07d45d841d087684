//! The router: one TUN device per port (a host namespace, or this process's own for the
//! harness), a reader thread per port, one delivery thread, the scheduler under one lock.
//!
//! A packet read from port P: its destination picks the port Q whose prefixes contain it
//! (longest prefix first); a packet whose source is not one of P's prefixes, or with no
//! such Q, or with Q = P, is dropped (counted). The scheduler then drops it or gives its
//! delivery time; the delivery thread writes it to Q's device at that time, and Q's
//! kernel receives it as if from a wire.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

use crate::matrix::{LinkParams, Matrix, RegionId};
use crate::packet::{self, Prefix};
use crate::sched::{Cuts, PairStats, PortId, Scheduler, Verdict};
use crate::{netns, tun, WanError};

/// The most bytes of packets waiting for their delivery time, over all links; beyond it
/// new packets are dropped (counted as `queue_full`). 1 Gbit/s over a 500 ms round trip.
pub const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// The nice value the router's threads ask for (root may lower it): their wake-up
/// lateness is the emulator's error, and on a loaded machine threads at the default
/// priority wake milliseconds late.
pub const THREAD_NICE: i32 = -10;

/// The largest packet read (a TUN device without offloads gives one MTU at a time; the
/// devices are made with the default 1500).
const READ_BUFFER: usize = 65_536;

/// One port of the router: a TUN device to make and what it serves.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// For logs and errors (`h1`, `harness`).
    pub label: String,
    /// The network namespace the device is made in (`ip netns` name); `None`: this
    /// process's own.
    pub netns: Option<String>,
    /// The device's name there (`eth0`).
    pub ifname: String,
    /// The region of the port; `None`: outside the matrix (no delay, loss or region cut:
    /// the harness's own link).
    pub region: Option<RegionId>,
    /// The addresses behind this port: packets to them go out through it, and packets in
    /// from it must come from them.
    pub prefixes: Vec<Prefix>,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per ordered pair of ports.
    pub pairs: BTreeMap<(PortId, PortId), PairStats>,
    /// Not IP, no port for the destination (multicast, neighbour discovery...), or back
    /// to the port it came from.
    pub unroutable: u64,
    /// A source address not behind the port it came in from.
    pub spoofed: u64,
    /// Writes to a device that failed.
    pub write_errors: u64,
    /// Packets written, and how many of them more than 1 ms after their delivery time;
    /// the latest one's lateness (the emulator's own error, before the hosts' kernels and
    /// processes add theirs).
    pub delivered: u64,
    pub late_over_1ms: u64,
    pub late_max: Duration,
}

impl Stats {
    /// The counters of `from` → `to` (zeros if nothing went that way).
    pub fn pair(&self, from: PortId, to: PortId) -> PairStats {
        self.pairs.get(&(from, to)).copied().unwrap_or_default()
    }
}

struct Queued {
    at: Instant,
    seq: u64,
    to: PortId,
    packet: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct State {
    sched: Scheduler,
    regions: Vec<Option<RegionId>>,
    queue: BinaryHeap<Reverse<Queued>>,
    queued_bytes: usize,
    seq: u64,
    unroutable: u64,
    spoofed: u64,
    write_errors: u64,
    delivered: u64,
    late_over_1ms: u64,
    late_max: Duration,
    /// The kernel ids of the router's threads (to renice them).
    tids: Vec<i32>,
}

struct Shared {
    /// How many threads the router runs (its ports' readers and the delivery thread).
    threads: usize,
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // a thread that panicked holding the lock left counters at worst; keep going
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Port {
    label: String,
    device: File,
    prefixes: Vec<Prefix>,
}

/// The running emulator; stops its threads and closes its devices (which removes them)
/// on drop.
pub struct Router {
    shared: Arc<Shared>,
    ports: Arc<Vec<Port>>,
    threads: Vec<JoinHandle<()>>,
}

/// Changes the running emulator: links, cuts, and reads its counters. Cheap to clone;
/// harmless after the router is gone.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Router {
    /// Make every port's TUN device and start moving packets. The devices are down and
    /// without addresses: the caller configures them (`ip -n NS addr add ... dev eth0`).
    pub fn start(matrix: &Matrix, specs: Vec<PortSpec>) -> Result<Router, WanError> {
        let mut ports = Vec::with_capacity(specs.len());
        let mut regions = Vec::with_capacity(specs.len());
        for spec in specs {
            if let Some(r) = spec.region {
                if r >= matrix.len() {
                    return Err(WanError::BadRegion {
                        port: spec.label,
                        region: r,
                    });
                }
            }
            let open = || {
                tun::open(&spec.ifname).map_err(|source| WanError::Tun {
                    name: spec.ifname.clone(),
                    source,
                })
            };
            let device = match &spec.netns {
                Some(ns) => netns::run_in(ns, open)??,
                None => open()?,
            };
            regions.push(spec.region);
            ports.push(Port {
                label: spec.label,
                device,
                prefixes: spec.prefixes,
            });
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                sched: Scheduler::new(matrix),
                regions,
                queue: BinaryHeap::new(),
                queued_bytes: 0,
                seq: 0,
                unroutable: 0,
                spoofed: 0,
                write_errors: 0,
                delivered: 0,
                late_over_1ms: 0,
                late_max: Duration::ZERO,
                tids: Vec::new(),
            }),
            threads: ports.len() + 1,
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let ports = Arc::new(ports);
        let mut router = Router {
            shared,
            ports,
            threads: Vec::new(),
        };
        for id in 0..router.ports.len() {
            let (shared, ports) = (router.shared.clone(), router.ports.clone());
            let t = std::thread::Builder::new()
                .name(format!("wan-rx-{}", router.ports[id].label))
                .spawn(move || read_loop(&shared, &ports, id))
                .map_err(WanError::Spawn)?;
            router.threads.push(t);
        }
        let (shared, ports) = (router.shared.clone(), router.ports.clone());
        let t = std::thread::Builder::new()
            .name("wan-tx".into())
            .spawn(move || deliver_loop(&shared, &ports))
            .map_err(WanError::Spawn)?;
        router.threads.push(t);
        raise_priority(&router.shared);
        Ok(router)
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// The number of ports.
    pub fn ports(&self) -> usize {
        self.ports.len()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // the devices go when `ports` (the last reference) drops with self
    }
}

impl Handle {
    /// `from` → `to` (one direction) from now on.
    pub fn set_link(&self, from: RegionId, to: RegionId, params: LinkParams) {
        self.shared.lock().sched.set_link(from, to, params);
    }

    /// Both directions of `a` ↔ `b`.
    pub fn set_both(&self, a: RegionId, b: RegionId, params: LinkParams) {
        let mut st = self.shared.lock();
        st.sched.set_link(a, b, params);
        st.sched.set_link(b, a, params);
    }

    pub fn link(&self, from: RegionId, to: RegionId) -> LinkParams {
        self.shared.lock().sched.link(from, to)
    }

    /// Drop everything from region `from` to region `to` (one way).
    pub fn cut_regions(&self, from: RegionId, to: RegionId) {
        self.shared.lock().sched.cut_regions(from, to);
    }

    pub fn heal_regions(&self, from: RegionId, to: RegionId) {
        self.shared.lock().sched.heal_regions(from, to);
    }

    /// Drop everything from port `from` to port `to` (one way).
    pub fn cut_ports(&self, from: PortId, to: PortId) {
        self.shared.lock().sched.cut_ports(from, to);
    }

    pub fn heal_ports(&self, from: PortId, to: PortId) {
        self.shared.lock().sched.heal_ports(from, to);
    }

    /// Remove every cut.
    pub fn heal_all(&self) {
        self.shared.lock().sched.heal_all();
    }

    /// The cuts in place.
    pub fn cuts(&self) -> Cuts {
        self.shared.lock().sched.cuts()
    }

    /// The region of port `port` (`None` outside the matrix or no such port).
    pub fn region_of(&self, port: PortId) -> Option<RegionId> {
        self.shared.lock().regions.get(port).copied().flatten()
    }

    pub fn stats(&self) -> Stats {
        let st = self.shared.lock();
        Stats {
            pairs: st.sched.stats().clone(),
            unroutable: st.unroutable,
            spoofed: st.spoofed,
            write_errors: st.write_errors,
            delivered: st.delivered,
            late_over_1ms: st.late_over_1ms,
            late_max: st.late_max,
        }
    }
}

/// Lower the nice value of the router's threads to [`THREAD_NICE`] with `renice` (nix
/// has no safe `setpriority`, and this is one call per router); a failure (not root, no
/// `renice`) leaves them as they are, with a warning.
fn raise_priority(shared: &Shared) {
    // every thread records its id first thing; wait for them (briefly)
    let deadline = Instant::now() + Duration::from_secs(1);
    let tids = loop {
        let tids = shared.lock().tids.clone();
        if tids.len() == shared.threads || Instant::now() > deadline {
            break tids;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut cmd = std::process::Command::new("renice");
    cmd.args(["-n", &THREAD_NICE.to_string(), "-p"]);
    cmd.args(tids.iter().map(|t| t.to_string()));
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!(
            error = %String::from_utf8_lossy(&out.stderr).trim(),
            "the emulator's threads keep their priority"
        ),
        Err(e) => tracing::warn!(error = %e, "the emulator's threads keep their priority (renice)"),
    }
}

fn register_thread(shared: &Shared) {
    shared.lock().tids.push(nix::unistd::gettid().as_raw());
}

fn route(ports: &[Port], dst: std::net::IpAddr) -> Option<PortId> {
    ports
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.prefixes.iter().map(move |x| (i, x)))
        .filter(|(_, x)| x.contains(dst))
        .max_by_key(|(_, x)| x.len())
        .map(|(i, _)| i)
}

fn read_loop(shared: &Shared, ports: &[Port], from: PortId) {
    register_thread(shared);
    let port = &ports[from];
    let mut buf = vec![0u8; READ_BUFFER];
    while !shared.stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(port.device.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, 100u8) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(port = %port.label, error = %e, "poll failed; port stopped");
                return;
            }
        }
        let n = match (&port.device).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(port = %port.label, error = %e, "read failed; port stopped");
                return;
            }
        };
        let packet = &buf[..n];
        let addrs = packet::addresses(packet);
        let to = addrs
            .and_then(|(_, dst)| route(ports, dst))
            .filter(|to| *to != from);
        let mut st = shared.lock();
        let (Some((src, _)), Some(to)) = (addrs, to) else {
            st.unroutable += 1;
            continue;
        };
        if !port.prefixes.iter().any(|p| p.contains(src)) {
            st.spoofed += 1;
            continue;
        }
        let (rf, rt) = (st.regions[from], st.regions[to]);
        let now = Instant::now();
        if let Verdict::Deliver(at) = st.sched.admit(now, (from, rf), (to, rt), n) {
            if st.queued_bytes + n > MAX_IN_FLIGHT_BYTES {
                st.sched.count_queue_full(from, to);
                continue;
            }
            st.seq += 1;
            let seq = st.seq;
            st.queued_bytes += n;
            st.queue.push(Reverse(Queued {
                at,
                seq,
                to,
                packet: packet.to_vec(),
            }));
            drop(st);
            shared.wake.notify_one();
        }
    }
}

fn deliver_loop(shared: &Shared, ports: &[Port]) {
    register_thread(shared);
    let mut due: Vec<Queued> = Vec::new();
    loop {
        let mut st = shared.lock();
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let next = st.queue.peek().map(|Reverse(q)| q.at);
            match next {
                Some(at) if at <= now => {
                    while let Some(Reverse(q)) = st.queue.peek() {
                        if q.at > now {
                            break;
                        }
                        if let Some(Reverse(q)) = st.queue.pop() {
                            st.queued_bytes -= q.packet.len();
                            due.push(q);
                        }
                    }
                    break;
                }
                Some(at) => {
                    st = shared
                        .wake
                        .wait_timeout(st, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    st = shared
                        .wake
                        .wait_timeout(st, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        drop(st);
        let (mut errors, mut written, mut late, mut late_max) = (0, 0, 0, Duration::ZERO);
        for q in due.drain(..) {
            let port = &ports[q.to];
            let lateness = q.at.elapsed();
            late_max = late_max.max(lateness);
            if lateness > Duration::from_millis(1) {
                late += 1;
            }
            written += 1;
            if let Err(e) = (&port.device).write(&q.packet) {
                errors += 1;
                tracing::debug!(port = %port.label, error = %e, "write to device failed");
            }
        }
        let mut st = shared.lock();
        st.write_errors += errors;
        st.delivered += written;
        st.late_over_1ms += late;
        st.late_max = st.late_max.max(late_max);
    }
}
