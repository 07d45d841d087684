//! The emulator's contract, on real namespaces and TUN devices (root only; skipped
//! otherwise): round trips within ±5 % of the matrix at 1,000 packets/s, TCP through it
//! over both families, cuts that drop everything they should and nothing else (two-way
//! and one-way), delays changed while running, loss near its rate.
//!
//! Each test builds its own `Lab` (namespaces `slapos-wantest-<pid>-<n>-h<i>`), removed
//! on drop even when the test fails; the tests run one at a time (a lock), so one test's
//! packets do not load the machine under another's measurement.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use slapos_wan::{netns, regions, LinkParams, Matrix, PortSpec, Prefix, Router};

static SERIAL: Mutex<()> = Mutex::new(());
static LABS: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Namespaces of earlier runs whose process is gone.
fn sweep() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix("slapos-wantest-") {
            let pid = rest.split('-').next().unwrap_or("");
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// Hosts in namespaces, each with `10.99.<i>.2/24` and `fd5d:<lab>:<pid>:<i>::2/64` on a
/// TUN `eth0`, and the harness (port 0, this namespace, IPv6 `...:0::2`, outside the
/// matrix), joined by the emulator. Port `i` is host `i`.
struct Lab {
    router: Option<Router>,
    names: Vec<String>,
    harness_if: String,
    tag: u16,
}

/// The calling thread (and the threads it starts: the probes' senders, receivers and
/// echoes) at the emulator's priority, so the load of a shared machine stays out of what
/// the probes measure, as it stays out of the emulator's own threads.
fn boost() {
    let tid = nix::unistd::gettid().to_string();
    let nice = slapos_wan::THREAD_NICE.to_string();
    let _ = Command::new("renice")
        .args(["-n", &nice, "-p", &tid])
        .output();
}

impl Lab {
    fn new(matrix: &Matrix, regions: &[usize]) -> Result<Lab> {
        boost();
        sweep();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = (pid & 0xffff) as u16;
        let mut lab = Lab {
            router: None,
            names: Vec::new(),
            harness_if: format!("wt{pid:x}x{n}"),
            tag: n as u16,
        };
        for i in 1..=regions.len() {
            let ns = format!("slapos-wantest-{pid}-{n}-h{i}");
            ip(&["netns", "add", &ns])?;
            lab.names.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let mut specs = vec![PortSpec {
            label: "harness".into(),
            netns: None,
            ifname: lab.harness_if.clone(),
            region: None,
            prefixes: vec![Prefix::new(lab.v6(0).into(), 64)],
        }];
        for (i, r) in regions.iter().enumerate() {
            let i = i + 1;
            specs.push(PortSpec {
                label: format!("h{i}"),
                netns: Some(lab.names[i - 1].clone()),
                ifname: "eth0".into(),
                region: Some(*r),
                prefixes: vec![
                    Prefix::new(lab.v4(i).into(), 24),
                    Prefix::new(lab.v6(i).into(), 64),
                ],
            });
        }
        lab.router = Some(Router::start(matrix, specs)?);
        for i in 1..=regions.len() {
            let ns = lab.names[i - 1].clone();
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.v4(i)),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("{}/64", lab.v6(i)),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
            ip(&["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"])?;
        }
        let h = lab.harness_if.clone();
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", lab.v6(0)),
            "dev",
            &h,
            "nodad",
        ])?;
        ip(&["link", "set", &h, "up"])?;
        let net48 = format!("fd5d:{:x}:{:x}::/48", lab.tag, tag);
        ip(&["-6", "route", "add", &net48, "dev", &h])?;
        Ok(lab)
    }

    fn handle(&self) -> slapos_wan::Handle {
        match &self.router {
            Some(r) => r.handle(),
            None => unreachable!("a lab has its router until dropped"),
        }
    }

    fn ns(&self, i: usize) -> &str {
        &self.names[i - 1]
    }

    fn v4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, i as u8, 2)
    }

    fn v6(&self, i: usize) -> Ipv6Addr {
        let pid = (std::process::id() & 0xffff) as u16;
        Ipv6Addr::new(0xfd5d, self.tag, pid, i as u16, 0, 0, 0, 2)
    }

    /// A UDP socket bound in host `i` (0: the harness) to `family`'s any address.
    fn udp(&self, i: usize, v6: bool) -> Result<UdpSocket> {
        let any: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let s = if i == 0 {
            UdpSocket::bind(any)?
        } else {
            netns::run_in(self.ns(i), || UdpSocket::bind(any))??
        };
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(s)
    }

    fn addr(&self, i: usize, v6: bool) -> IpAddr {
        if v6 {
            self.v6(i).into()
        } else {
            self.v4(i).into()
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // the router first: its descriptors hold the devices and the namespaces
        drop(self.router.take());
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.harness_if]);
    }
}

fn example() -> Result<Matrix> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regions.toml");
    Ok(regions::load(&path)?)
}

/// A UDP echo in host `at` answering every datagram, until `stop`.
fn echo(
    lab: &Lab,
    at: usize,
    v6: bool,
    stop: Arc<AtomicBool>,
) -> Result<(u16, std::thread::JoinHandle<()>)> {
    let s = lab.udp(at, v6)?;
    let port = s.local_addr()?.port();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    Ok((port, t))
}

/// What one probe run saw.
struct Probe {
    sent: u64,
    rtts: Vec<Duration>,
    in_order: bool,
}

impl Probe {
    /// Minimum, 10th, 50th, 90th percentiles and maximum, for messages.
    fn spread(&self) -> String {
        let mut v = self.rtts.clone();
        v.sort();
        let at = |q: usize| {
            v.get(v.len().saturating_sub(1) * q / 100)
                .copied()
                .unwrap_or_default()
        };
        format!(
            "min {:?} p10 {:?} p50 {:?} p90 {:?} max {:?}",
            at(0),
            at(10),
            at(50),
            at(90),
            at(100)
        )
    }

    fn median(&self) -> Duration {
        let mut v = self.rtts.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
}

/// `count` datagrams from host `from` to the echo in `to` at `rate` per second; the round
/// trip of each answer.
fn probe(lab: &Lab, from: usize, to: usize, v6: bool, count: u64, rate: u64) -> Result<Probe> {
    let stop = Arc::new(AtomicBool::new(false));
    let (port, server) = echo(lab, to, v6, stop.clone())?;
    let s = lab.udp(from, v6)?;
    s.connect(SocketAddr::new(lab.addr(to, v6), port))?;
    let base = Instant::now();
    let rx = s.try_clone()?;
    let receiver = std::thread::spawn(move || {
        let (mut rtts, mut last, mut in_order) = (Vec::new(), None::<u64>, true);
        let mut buf = [0u8; 64];
        let mut quiet_since = None;
        loop {
            match rx.recv(&mut buf) {
                Ok(n) if n >= 16 => {
                    quiet_since = None;
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
                    let sent = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
                    rtts.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
                    if last.is_some_and(|l| seq < l) {
                        in_order = false;
                    }
                    last = Some(seq);
                }
                _ => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(2) {
                        return (rtts, in_order);
                    }
                }
            }
        }
    });
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut payload = [0u8; 64];
    for seq in 0..count {
        let due = base + period * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        payload[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
        s.send(&payload)?;
    }
    let (rtts, in_order) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    stop.store(true, Ordering::SeqCst);
    let _ = server.join();
    Ok(Probe {
        sent: count,
        rtts,
        in_order,
    })
}

/// Whether the emulator itself wrote more than 5 % of the packets it wrote between two
/// readings of its counters over 1 ms late: the machine starved its threads (a shared
/// machine under full load), and what was measured then is the machine, not the
/// emulator. A measurement that misses the contract in such a window is taken again (up
/// to three times in all), and says so.
fn starved(before: &slapos_wan::Stats, after: &slapos_wan::Stats) -> bool {
    let written = after.delivered - before.delivered;
    let late = after.late_over_1ms - before.late_over_1ms;
    eprintln!("  the emulator wrote {late} of {written} packets over 1 ms late");
    late * 20 > written
}

/// [`probe`] at 1,000 packets/s for 3 s, taken again if it misses `want` by more than 5 %
/// while the emulator was starved ([`starved`]).
fn measured(lab: &Lab, from: usize, to: usize, v6: bool, want: Duration) -> Result<Probe> {
    let h = lab.handle();
    for attempt in 1.. {
        let s0 = h.stats();
        let p = probe(lab, from, to, v6, 3000, 1000)?;
        if within_5_percent(p.median(), want) || attempt == 3 || !starved(&s0, &h.stats()) {
            return Ok(p);
        }
        eprintln!(
            "h{from}→h{to}: median {:?} while starved; measuring again",
            p.median()
        );
    }
    unreachable!("the loop returns by its third attempt")
}

fn within_5_percent(measured: Duration, expected: Duration) -> bool {
    let (m, e) = (measured.as_secs_f64(), expected.as_secs_f64());
    (m - e).abs() <= 0.05 * e
}

/// The probes of `runs` (from, to, IPv6) at once, 1,000 packets/s each for 3 s.
fn batch(lab: &Lab, runs: &[(usize, usize, bool)]) -> Vec<Result<Probe>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = runs
            .iter()
            .map(|&(a, b, v6)| s.spawn(move || probe(lab, a, b, v6, 3000, 1000)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("probe panicked")))
            })
            .collect()
    })
}

#[test]
fn round_trips_match_the_matrix_at_1000_packets_per_second() -> Result<()> {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let matrix = example()?;
    let id = |n: &str| matrix.region(n).context("example region");
    let lab = Lab::new(&matrix, &[id("lille")?, id("montreal")?, id("tokyo")?])?;
    // three pairs at once, 1,000 packets/s each, 3 s, both families
    let runs = [(1, 2, false), (2, 3, true), (1, 3, true)];
    let h = lab.handle();
    let mut results: Vec<Result<Probe>> = Vec::new();
    for attempt in 1..=3 {
        let s0 = h.stats();
        results = batch(&lab, &runs);
        let missed = runs.iter().zip(&results).any(|((a, b, _), r)| {
            r.as_ref()
                .is_ok_and(|p| !within_5_percent(p.median(), matrix.rtt(*a - 1, *b - 1)))
        });
        if !missed || attempt == 3 || !starved(&s0, &h.stats()) {
            break;
        }
        eprintln!("a median missed while the emulator was starved; measuring again");
    }
    for ((a, b, v6), r) in runs.iter().zip(results) {
        let p = r?;
        let want = matrix.rtt(*a - 1, *b - 1);
        let got = p.median();
        eprintln!(
            "h{a}→h{b} ({}): matrix {want:?}, median {got:?}, {} of {} answered ({})",
            if *v6 { "IPv6" } else { "IPv4" },
            p.rtts.len(),
            p.sent,
            p.spread()
        );
        assert_eq!(
            p.rtts.len() as u64,
            p.sent,
            "no loss configured, none expected"
        );
        assert!(p.in_order, "answers reordered");
        assert!(
            within_5_percent(got, want),
            "h{a}→h{b}: median {got:?}, matrix {want:?}"
        );
    }
    let h = lab.handle();
    let st = h.stats();
    eprintln!(
        "emulator's own lateness: {} of {} packets written more than 1 ms late, at most {:?}",
        st.late_over_1ms, st.delivered, st.late_max
    );
    // with jitter (±10 ms each way): the median stays on the matrix, nothing reorders
    let (l, t) = (id("lille")?, id("tokyo")?);
    h.set_both(
        l,
        t,
        LinkParams {
            jitter: Duration::from_millis(10),
            ..matrix.link(l, t)
        },
    );
    let p = probe(&lab, 1, 3, false, 3000, 1000)?;
    let want = matrix.rtt(l, t);
    eprintln!(
        "h1→h3 jitter ±10 ms: matrix {want:?}, median {:?}",
        p.median()
    );
    assert!(p.in_order, "jitter reordered a flow");
    assert!(
        within_5_percent(p.median(), want),
        "median {:?}",
        p.median()
    );
    let (lo, hi) = (p.rtts.iter().min(), p.rtts.iter().max());
    assert!(lo < hi, "jitter varies the round trip");
    Ok(())
}

#[test]
fn tcp_goes_through_over_both_families() -> Result<()> {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut matrix = Matrix::new(["a", "b"]);
    matrix.set_both(0, 1, LinkParams::delay(Duration::from_millis(20)));
    let lab = Lab::new(&matrix, &[0, 1])?;
    for v6 in [false, true] {
        let any: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let listener = netns::run_in(lab.ns(2), || TcpListener::bind(any))??;
        let port = listener.local_addr()?.port();
        let server = std::thread::spawn(move || -> Result<()> {
            let (mut c, _) = listener.accept()?;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = c.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                c.write_all(&buf[..n])?;
            }
        });
        let to = SocketAddr::new(lab.addr(2, v6), port);
        let mut c = netns::run_in(lab.ns(1), || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })??;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        let data: Vec<u8> = (0..512 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = c.try_clone()?;
        let sent = data.clone();
        let writer = std::thread::spawn(move || -> Result<()> {
            w.write_all(&sent)?;
            w.shutdown(std::net::Shutdown::Write)?;
            Ok(())
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back)?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))??;
        assert!(back == data, "{} bytes back of {}", back.len(), data.len());
        let st = lab.handle().stats();
        assert!(st.pair(1, 2).forwarded > 0 && st.pair(2, 1).forwarded > 0);
    }
    Ok(())
}

/// `n` datagrams from `from` to `to` over each family the pair shares (the harness, port
/// 0, has IPv6 only); how many arrived.
fn delivered(lab: &Lab, from: usize, to: usize, n: usize) -> Result<usize> {
    let mut got = 0;
    for v6 in [false, true] {
        if !v6 && (from == 0 || to == 0) {
            continue;
        }
        let rx = lab.udp(to, v6)?;
        let port = rx.local_addr()?.port();
        let tx = lab.udp(from, v6)?;
        let dst = SocketAddr::new(lab.addr(to, v6), port);
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        // received as they come: a socket's buffer holds a few hundred datagrams only
        let counter = std::thread::spawn(move || {
            let (mut count, mut buf, mut quiet) = (0, [0u8; 16], Instant::now());
            loop {
                if rx.recv(&mut buf).is_ok() {
                    count += 1;
                    quiet = Instant::now();
                } else if finished.load(Ordering::SeqCst)
                    && quiet.elapsed() > Duration::from_millis(300)
                {
                    return count;
                }
            }
        });
        let sent = (|| -> Result<()> {
            for i in 0..n {
                tx.send_to(&(i as u32).to_be_bytes(), dst)?;
                // 2,000 datagrams/s: a loaded machine's receiver keeps up
                if i % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(())
        })();
        // the sender finished (or failed) at least 300 ms before the count ends
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::SeqCst);
        got += counter
            .join()
            .map_err(|_| anyhow::anyhow!("counter panicked"))?;
        sent?;
    }
    Ok(got)
}

fn expected(from: usize, to: usize, n: usize) -> usize {
    if from == 0 || to == 0 {
        n
    } else {
        2 * n
    }
}

/// Every ordered pair of the 4 ports (harness and 3 hosts) gets `n` per family, and
/// exactly the `cut` ones get none.
fn check_matrix(lab: &Lab, cut: &[(usize, usize)], n: usize) -> Result<()> {
    let mut wrong = Vec::new();
    for from in 0..=3 {
        for to in 0..=3 {
            if from == to {
                continue;
            }
            let got = delivered(lab, from, to, n)?;
            let want = if cut.contains(&(from, to)) {
                0
            } else {
                expected(from, to, n)
            };
            if got != want {
                wrong.push(format!("{from}→{to}: {got} of {want}"));
            }
        }
    }
    if !wrong.is_empty() {
        bail!("cut {cut:?}: {}", wrong.join(", "));
    }
    Ok(())
}

#[test]
fn a_two_way_cut_drops_the_pair_and_nothing_else() -> Result<()> {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut matrix = Matrix::new(["a", "b"]);
    matrix.set_both(0, 1, LinkParams::delay(Duration::from_millis(5)));
    // hosts 1 and 3 in region a, 2 in b
    let lab = Lab::new(&matrix, &[0, 1, 0])?;
    let h = lab.handle();
    check_matrix(&lab, &[], 100)?;
    h.cut_ports(1, 2);
    h.cut_ports(2, 1);
    let before = h.stats();
    check_matrix(&lab, &[(1, 2), (2, 1)], 100)?;
    let after = h.stats();
    // the emulator counted the drops, both ways, both families
    assert_eq!(after.pair(1, 2).cut - before.pair(1, 2).cut, 200);
    assert_eq!(after.pair(2, 1).cut - before.pair(2, 1).cut, 200);
    // a two-way cut between regions: a ↔ b cuts 1–2 and 3–2, not 1–3 (same region)
    h.heal_all();
    h.cut_regions(0, 1);
    h.cut_regions(1, 0);
    check_matrix(&lab, &[(1, 2), (2, 1), (3, 2), (2, 3)], 100)?;
    h.heal_all();
    check_matrix(&lab, &[], 100)?;
    Ok(())
}

#[test]
fn a_one_way_cut_drops_one_direction_only() -> Result<()> {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut matrix = Matrix::new(["a", "b", "c"]);
    matrix.set_both(0, 1, LinkParams::delay(Duration::from_millis(5)));
    matrix.set_both(1, 2, LinkParams::delay(Duration::from_millis(5)));
    matrix.set_both(0, 2, LinkParams::delay(Duration::from_millis(5)));
    let lab = Lab::new(&matrix, &[0, 1, 2])?;
    let h = lab.handle();
    h.cut_ports(1, 2);
    check_matrix(&lab, &[(1, 2)], 100)?;
    h.heal_ports(1, 2);
    h.cut_regions(2, 0);
    check_matrix(&lab, &[(3, 1)], 100)?;
    // a request crosses, its answer does not: the echo is never heard
    let p = probe(&lab, 1, 3, false, 50, 100)?;
    assert_eq!(p.rtts.len(), 0);
    h.heal_regions(2, 0);
    let p = probe(&lab, 1, 3, false, 50, 100)?;
    assert_eq!(p.rtts.len(), 50);
    Ok(())
}

#[test]
fn a_delay_changed_while_running_takes_effect() -> Result<()> {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let matrix = example()?;
    let (l, m) = (
        matrix.region("lille").context("lille")?,
        matrix.region("montreal").context("montreal")?,
    );
    let lab = Lab::new(&matrix, &[l, m])?;
    let before = measured(&lab, 1, 2, true, matrix.rtt(l, m))?;
    assert!(
        within_5_percent(before.median(), matrix.rtt(l, m)),
        "{:?}",
        before.median()
    );
    let h = lab.handle();
    // 300 ms round trip, unevenly: 200 there, 100 back
    h.set_link(l, m, LinkParams::delay(Duration::from_millis(200)));
    h.set_link(m, l, LinkParams::delay(Duration::from_millis(100)));
    let after = measured(&lab, 1, 2, true, Duration::from_millis(300))?;
    eprintln!(
        "delay changed: median {:?} ({}) then {:?} ({})",
        before.median(),
        before.spread(),
        after.median(),
        after.spread()
    );
    assert!(
        within_5_percent(after.median(), Duration::from_millis(300)),
        "{:?}",
        after.median()
    );
    // every answer took the new delays at least: none is early
    assert!(after.rtts.iter().all(|r| *r >= Duration::from_millis(300)));
    assert_eq!(h.link(l, m).delay, Duration::from_millis(200));
    Ok(())
}

#[test]
fn loss_is_near_its_rate_with_a_fixed_seed() -> Result<()> {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut matrix = Matrix::new(["a", "b"]).with_seed(42);
    matrix.set_link(
        0,
        1,
        LinkParams {
            loss: 0.1,
            ..LinkParams::delay(Duration::from_millis(1))
        },
    );
    matrix.set_link(1, 0, LinkParams::delay(Duration::from_millis(1)));
    let lab = Lab::new(&matrix, &[0, 1])?;
    let n = 5000;
    let got = delivered(&lab, 1, 2, n / 2)?;
    let back = delivered(&lab, 2, 1, n / 2)?;
    let lost = n - got;
    let st = lab.handle().stats();
    eprintln!(
        "loss 10 %: {lost} of {n} lost ({:.2} %); emulator counted {}",
        100.0 * lost as f64 / n as f64,
        st.pair(1, 2).lost
    );
    // every datagram missing is one the emulator chose to lose, and none the other way
    assert_eq!(st.pair(1, 2).lost, lost as u64);
    assert_eq!(back, n, "the other way: {:?}", st.pair(2, 1));
    // binomial(5000, 0.1): sd 21.2; 4 sd
    assert!((500 - 85..=500 + 85).contains(&lost), "{lost}");
    Ok(())
}
