//! Hosts as network namespaces joined through a router namespace, and link cuts made of
//! `blackhole` policy rules in the router (this kernel has neither netem nor iptables):
//! a cut drops packets silently, so peers time out as they would across a real cut.
//! Or, built with regions ([`Network::create_with_regions`]), joined through the WAN
//! emulator (`slapos-wan`): each host's `eth0` is a TUN device whose other end this
//! process holds, and packets between hosts take their regions' delay, jitter, loss and
//! bandwidth; cuts are the emulator's (one-way ones too), not rules.
//! `slapos up` runs each of its nodes in one (tag `up`); the chaos harness runs its hosts
//! in them (tag `chaos`) and cuts their links, also those of a `slapos up` it drives
//! ([`Network::attach`]).
//!
//! Host `i` (1..=n) lives in namespace `slapos-chaos-<pid>-h<i>` with
//! `fd5c:<pid>:<i>::2/64` and `10.77.<i>.2/24`; the router has `::1` / `.1` on each link.
//! The harness (root namespace) reaches every host over IPv6 through one more link
//! (`<i>` = 0), so clients and checkers stay outside the faults.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("cannot run `ip`: {0}")]
    Spawn(std::io::Error),
    #[error("network namespaces need root (running as uid {0})")]
    NotRoot(u32),
    #[error("WAN emulator: {0}")]
    Wan(#[from] slapos_wan::WanError),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Namespaces are `slapos-<tag>-<pid>-...`: chaos runs, and `slapos up`'s nodes.
const TAGS: [&str; 2] = ["chaos", "up"];

/// The namespaces of one run; deleted on drop.
pub struct Network {
    tag: &'static str,
    pid: u32,
    /// Made by this process (deleted on drop), or attached to another's.
    owned: bool,
    hosts: usize,
    /// One-way cuts in place, (from, to); a two-way cut is two of them.
    cuts: Vec<(usize, usize)>,
    /// The emulator when built with regions (then there is no router namespace): port 0
    /// is the harness link, port `i` host `i`.
    wan: Option<slapos_wan::Router>,
}

fn run(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError::Command {
        command: format!("ip {}", args.join(" ")),
        output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// `ip [-n ns] -6 addr add <addr>/64 dev <dev> nodad` (no duplicate address detection:
/// the address is usable at once).
fn add_v6(ns: Option<&str>, addr: Ipv6Addr, dev: &str) -> Result<(), NetError> {
    let addr = format!("{addr}/64");
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-6", "addr", "add", &addr, "dev", dev, "nodad"]);
    run(&args)
}

fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

impl Network {
    /// Whether namespaces can be made here (root and `ip` present).
    pub fn available() -> Result<(), NetError> {
        let u = uid();
        if u != 0 {
            return Err(NetError::NotRoot(u));
        }
        Command::new("ip")
            .arg("-V")
            .output()
            .map_err(NetError::Spawn)
            .map(|_| ())
    }

    /// Delete the namespaces of runs whose process is gone (a run killed before its drop).
    pub fn sweep_leftovers() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = TAGS
                .iter()
                .find_map(|t| name.strip_prefix(&format!("slapos-{t}-")))
            else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                // the processes the dead run left inside first
                if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                    for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", p]).status();
                    }
                }
                let _ = run(&["netns", "del", name]);
                if let Ok(p) = pid.parse::<u32>() {
                    let _ = run(&["link", "del", &Self::harness_link_of(p)]);
                }
            }
        }
    }

    /// `hosts` host namespaces, the router, and the harness link (a chaos run's).
    pub fn create(hosts: usize) -> Result<Network, NetError> {
        Self::create_tagged("chaos", hosts)
    }

    /// [`Self::create`], the namespaces named `slapos-<tag>-<pid>-...` (`tag`: "chaos" or
    /// "up").
    pub fn create_tagged(tag: &'static str, hosts: usize) -> Result<Network, NetError> {
        Self::available()?;
        Self::sweep_leftovers();
        let net = Network {
            tag: if TAGS.contains(&tag) { tag } else { TAGS[0] },
            pid: std::process::id(),
            owned: true,
            hosts,
            cuts: Vec::new(),
            wan: None,
        };
        net.build()?;
        net.wait_settled();
        Ok(net)
    }

    /// [`Self::create_tagged`] with the WAN emulator as the router: host `i` (1..=n) in
    /// region `host_regions[i - 1]` of `matrix`, the harness link outside the matrix (no
    /// delay, loss or region cut). Same names and addresses as without regions.
    pub fn create_with_regions(
        tag: &'static str,
        matrix: &slapos_wan::Matrix,
        host_regions: &[slapos_wan::RegionId],
    ) -> Result<Network, NetError> {
        Self::available()?;
        Self::sweep_leftovers();
        let mut net = Network {
            tag: if TAGS.contains(&tag) { tag } else { TAGS[0] },
            pid: std::process::id(),
            owned: true,
            hosts: host_regions.len(),
            cuts: Vec::new(),
            wan: None,
        };
        // on an error from here, drop deletes what was made
        net.build_wan(matrix, host_regions)?;
        net.wait_settled();
        Ok(net)
    }

    /// The emulator's controls (delays, loss, bandwidth, cuts between regions, counters;
    /// port `i` is host `i`, 0 the harness), when built with regions.
    pub fn wan(&self) -> Option<slapos_wan::Handle> {
        self.wan.as_ref().map(slapos_wan::Router::handle)
    }

    /// The network another process made (`slapos up`'s, whose nodes are
    /// `slapos-<tag>-<pid>-h<i>`), to cut and heal its links; left in place on drop.
    pub fn attach(tag: &'static str, pid: u32, hosts: usize) -> Network {
        Network {
            tag: if TAGS.contains(&tag) { tag } else { TAGS[0] },
            pid,
            owned: false,
            hosts,
            cuts: Vec::new(),
            wan: None,
        }
    }

    /// Wait (up to 5 s) until no IPv6 address is still tentative: link-local addresses go
    /// through duplicate address detection, and neighbour discovery waits for them.
    fn wait_settled(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut spaces: Vec<Option<String>> = vec![None];
        if self.wan.is_none() {
            spaces.push(Some(self.router()));
        }
        spaces.extend((1..=self.hosts).map(|i| Some(self.host_ns(i))));
        while std::time::Instant::now() < deadline {
            let tentative = spaces.iter().any(|ns| {
                let mut c = Command::new("ip");
                if let Some(ns) = ns {
                    c.args(["-n", ns]);
                }
                c.args(["-6", "addr", "show", "tentative"])
                    .output()
                    .map(|o| !o.stdout.is_empty())
                    .unwrap_or(false)
            });
            if !tentative {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn build(&self) -> Result<(), NetError> {
        let r = self.router();
        run(&["netns", "add", &r])?;
        run(&["-n", &r, "link", "set", "lo", "up"])?;
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &r, "sysctl", "-qw", key])
                .output()
                .map_err(NetError::Spawn)?;
            if !out.status.success() {
                return Err(NetError::Command {
                    command: format!("sysctl {key} in {r}"),
                    output: String::from_utf8_lossy(&out.stderr).into(),
                });
            }
        }
        // the harness link: root namespace <-> router
        let link = self.harness_link();
        run(&[
            "link", "add", &link, "type", "veth", "peer", "name", "h0", "netns", &r,
        ])?;
        add_v6(None, self.v6_on(0, 2), &link)?;
        run(&["link", "set", &link, "up"])?;
        add_v6(Some(&r), self.v6_on(0, 1), "h0")?;
        run(&["-n", &r, "link", "set", "h0", "up"])?;
        run(&[
            "-6",
            "route",
            "add",
            &self.v6_net48(),
            "via",
            &self.v6_on(0, 1).to_string(),
            "dev",
            &link,
        ])?;
        for i in 1..=self.hosts {
            let h = self.host_ns(i);
            let rl = format!("h{i}");
            run(&["netns", "add", &h])?;
            run(&["-n", &h, "link", "set", "lo", "up"])?;
            run(&[
                "-n", &r, "link", "add", &rl, "type", "veth", "peer", "name", "eth0", "netns", &h,
            ])?;
            add_v6(Some(&r), self.v6_on(i, 1), &rl)?;
            run(&[
                "-n",
                &r,
                "addr",
                "add",
                &format!("10.77.{i}.1/24"),
                "dev",
                &rl,
            ])?;
            run(&["-n", &r, "link", "set", &rl, "up"])?;
            add_v6(Some(&h), self.v6(i), "eth0")?;
            run(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("{}/24", self.v4(i)),
                "dev",
                "eth0",
            ])?;
            run(&["-n", &h, "link", "set", "eth0", "up"])?;
            run(&[
                "-n",
                &h,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &self.v6_on(i, 1).to_string(),
            ])?;
            run(&[
                "-n",
                &h,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{i}.1"),
            ])?;
        }
        Ok(())
    }

    /// The hosts' namespaces, the emulator's TUN devices in them (and the harness's in
    /// this namespace), their addresses and routes: the same as [`Self::build`]'s, the
    /// router's `::1` / `.1` being the emulator.
    fn build_wan(
        &mut self,
        matrix: &slapos_wan::Matrix,
        host_regions: &[slapos_wan::RegionId],
    ) -> Result<(), NetError> {
        use slapos_wan::{PortSpec, Prefix};
        let mut ports = vec![PortSpec {
            label: "harness".into(),
            netns: None,
            ifname: self.harness_link(),
            region: None,
            prefixes: vec![Prefix::new(self.v6_on(0, 0).into(), 64)],
        }];
        for (k, region) in host_regions.iter().enumerate() {
            let i = k + 1;
            let h = self.host_ns(i);
            run(&["netns", "add", &h])?;
            run(&["-n", &h, "link", "set", "lo", "up"])?;
            ports.push(PortSpec {
                label: format!("h{i}"),
                netns: Some(h),
                ifname: "eth0".into(),
                region: Some(*region),
                prefixes: vec![
                    Prefix::new(Ipv4Addr::new(10, 77, i as u8, 0).into(), 24),
                    Prefix::new(self.v6_on(i, 0).into(), 64),
                ],
            });
        }
        self.wan = Some(slapos_wan::Router::start(matrix, ports)?);
        let link = self.harness_link();
        add_v6(None, self.v6_on(0, 2), &link)?;
        run(&["link", "set", &link, "up"])?;
        run(&[
            "-6",
            "route",
            "add",
            &self.v6_net48(),
            "via",
            &self.v6_on(0, 1).to_string(),
            "dev",
            &link,
        ])?;
        for i in 1..=self.hosts {
            let h = self.host_ns(i);
            add_v6(Some(&h), self.v6(i), "eth0")?;
            run(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("{}/24", self.v4(i)),
                "dev",
                "eth0",
            ])?;
            run(&["-n", &h, "link", "set", "eth0", "up"])?;
            run(&[
                "-n",
                &h,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &self.v6_on(i, 1).to_string(),
            ])?;
            run(&[
                "-n",
                &h,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{i}.1"),
            ])?;
        }
        Ok(())
    }

    fn harness_link_of(pid: u32) -> String {
        format!("sc{pid:x}")
    }

    fn harness_link(&self) -> String {
        Self::harness_link_of(self.pid)
    }

    fn router(&self) -> String {
        format!("slapos-{}-{}-r", self.tag, self.pid)
    }

    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The namespace of host `i` (1..=hosts).
    pub fn host_ns(&self, i: usize) -> String {
        format!("slapos-{}-{}-h{i}", self.tag, self.pid)
    }

    fn v6_net48(&self) -> String {
        format!("fd5c:{:x}:{:x}::/48", self.pid >> 16, self.pid & 0xffff)
    }

    fn v6_on(&self, link: usize, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd5c,
            (self.pid >> 16) as u16,
            (self.pid & 0xffff) as u16,
            link as u16,
            0,
            0,
            0,
            host,
        )
    }

    /// The harness's own IPv6 address (root namespace), which every host reaches.
    pub fn harness_v6(&self) -> Ipv6Addr {
        self.v6_on(0, 2)
    }

    /// Host `i`'s IPv6 address.
    pub fn v6(&self, i: usize) -> Ipv6Addr {
        self.v6_on(i, 2)
    }

    /// Host `i`'s IPv4 address (reachable from the other hosts only).
    pub fn v4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, i as u8, 2)
    }

    /// A command that runs `program` inside host `i`'s namespace (`ip netns exec` execs
    /// it, so the child's pid is the program's).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host_ns(i)]).arg(program);
        c
    }

    /// The two rules (both families) of the one-way cut from `x` to `y`.
    fn rules(&self, x: usize, y: usize) -> Vec<Vec<String>> {
        let r = self.router();
        vec![
            vec![
                "-n".into(),
                r.clone(),
                "rule".into(),
                "from".into(),
                format!("10.77.{x}.0/24"),
                "to".into(),
                format!("10.77.{y}.0/24"),
            ],
            vec![
                "-n".into(),
                r,
                "-6".into(),
                "rule".into(),
                "from".into(),
                format!("{}/64", self.v6_on(x, 0)),
                "to".into(),
                format!("{}/64", self.v6_on(y, 0)),
            ],
        ]
    }

    fn rule(spec: &[String], verb: &str) -> Result<(), NetError> {
        let mut args: Vec<&str> = spec.iter().map(String::as_str).collect();
        let at = args.iter().position(|a| *a == "rule").map_or(0, |i| i + 1);
        args.insert(at, verb);
        args.extend(["blackhole", "pref", "100"]);
        run(&args)
    }

    /// Drop every packet between hosts `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) -> Result<(), NetError> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Drop every packet from host `from` to host `to`; the other way still goes
    /// (an asymmetric cut: requests arrive, answers do not).
    pub fn cut_one_way(&mut self, from: usize, to: usize) -> Result<(), NetError> {
        if from == to || self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        if self.wan.is_none() && !self.owned && !self.router_exists() {
            return Err(NetError::Unsupported(
                "this network's router is another process's emulator: its cuts are made there",
            ));
        }
        // recorded first: a cut that fails halfway is still healed
        self.cuts.push((from, to));
        if let Some(wan) = &self.wan {
            wan.handle().cut_ports(from, to);
            return Ok(());
        }
        for spec in self.rules(from, to) {
            Self::rule(&spec, "add")?;
        }
        Ok(())
    }

    /// Whether the router namespace exists (an attached network built with regions has
    /// none).
    fn router_exists(&self) -> bool {
        std::path::Path::new(&format!("/run/netns/{}", self.router())).exists()
    }

    /// Remove every cut (rules already gone are fine; the first other error is returned
    /// after trying them all).
    pub fn heal(&mut self) -> Result<(), NetError> {
        let mut first = None;
        for (a, b) in std::mem::take(&mut self.cuts) {
            if let Some(wan) = &self.wan {
                wan.handle().heal_ports(a, b);
                continue;
            }
            for spec in self.rules(a, b) {
                // `ip rule del` of a rule that is not there fails; try every one anyway
                if let Err(e) = Self::rule(&spec, "del") {
                    let absent = matches!(&e, NetError::Command { output, .. }
                        if output.contains("No such file") || output.contains("not found"));
                    if !absent && first.is_none() {
                        first = Some(e);
                    }
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The one-way cuts in place, (from, to); a two-way cut shows as both directions.
    pub fn cuts(&self) -> &[(usize, usize)] {
        &self.cuts
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.owned {
            let _ = self.heal();
            return;
        }
        // the emulator first: its descriptors hold the TUN devices and their namespaces
        let wan = self.wan.take();
        drop(wan);
        for i in 1..=self.hosts {
            let _ = run(&["netns", "del", &self.host_ns(i)]);
        }
        let _ = run(&["netns", "del", &self.router()]);
        let _ = run(&["link", "del", &self.harness_link()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;
    use std::time::Duration;

    /// A process has one network at a time (its names carry the pid): one test at a time.
    static ONE_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Whether a TCP connection from host `from` to `addr:port` succeeds within 1 s.
    fn connects(net: &Network, from: usize, addr: &str, port: u16) -> bool {
        let code = format!(
            "import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\ns.settimeout(1)\ntry:\n s.connect(('{addr}',{port}))\nexcept Exception:\n sys.exit(1)\n"
        );
        net.command(from, std::path::Path::new("/usr/bin/python3"))
            .args(["-c", &code])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Whether a UDP datagram sent from host `from` (0: this namespace) reaches `addr` of
    /// host `to` (a listener there for 3 s, ten datagrams 100 ms apart).
    fn udp_reaches(net: &Network, from: usize, to: usize, addr: &str) -> bool {
        let fam = if addr.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        let listen = format!(
            "import socket,sys\ns=socket.socket(socket.{fam},socket.SOCK_DGRAM)\ns.bind(('{addr}',7071))\ns.settimeout(3)\ntry:\n s.recv(64)\nexcept Exception:\n sys.exit(1)\n"
        );
        let send = format!(
            "import socket,time\ns=socket.socket(socket.{fam},socket.SOCK_DGRAM)\nfor _ in range(10):\n s.sendto(b'x',('{addr}',7071))\n time.sleep(0.1)\n"
        );
        let python = std::path::Path::new("/usr/bin/python3");
        let Ok(mut l) = net.command(to, python).args(["-c", &listen]).spawn() else {
            return false;
        };
        std::thread::sleep(Duration::from_millis(300));
        let mut sender = if from == 0 {
            Command::new(python)
        } else {
            net.command(from, python)
        };
        let _ = sender.args(["-c", &send]).status();
        l.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Hosts reach each other over both families until a cut, and again after healing;
    /// the cut leaves the third host and the harness link alone.
    #[test]
    fn cuts_drop_traffic_between_two_hosts_only() {
        if Network::available().is_err() {
            eprintln!("SKIPPED: network namespaces need root");
            return;
        }
        let _one = ONE_NETWORK.lock().unwrap_or_else(|e| e.into_inner());
        let mut net = Network::create(3).unwrap();
        let listen = "import socket,time\nk=[]\nfor fam,a in ((socket.AF_INET6,'::'),(socket.AF_INET,'0.0.0.0')):\n s=socket.socket(fam)\n if fam==socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,1)\n s.bind((a,7070))\n s.listen(64)\n k.append(s)\ntime.sleep(60)\n";
        let mut server = net
            .command(2, std::path::Path::new("/usr/bin/python3"))
            .args(["-c", listen])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let v6 = net.v6(2).to_string();
        let v4 = net.v4(2).to_string();
        assert!(connects(&net, 1, &v6, 7070));
        assert!(connects(&net, 1, &v4, 7070));
        net.cut(1, 2).unwrap();
        assert!(!connects(&net, 1, &v6, 7070));
        assert!(!connects(&net, 1, &v4, 7070));
        assert!(connects(&net, 3, &v6, 7070));
        net.heal().unwrap();
        assert!(connects(&net, 1, &v6, 7070));
        // one way: 1 → 2 dropped, 2 → 1 still goes
        net.cut_one_way(1, 2).unwrap();
        assert_eq!(net.cuts(), &[(1, 2)]);
        assert!(!udp_reaches(&net, 1, 2, &v4));
        assert!(udp_reaches(&net, 2, 1, &net.v4(1).to_string()));
        net.heal().unwrap();
        assert!(udp_reaches(&net, 1, 2, &v4));
        let _ = server.kill();
        let _ = server.wait();
        let ns = net.host_ns(1);
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&ns));
    }

    /// Built with regions, the hosts keep their names and addresses and reach each other
    /// and the harness through the emulator; `cut` and `heal` work as without, and a
    /// one-way cut drops one direction only; drop removes the namespaces and devices.
    #[test]
    fn regions_put_the_hosts_behind_the_emulator() {
        if Network::available().is_err() {
            eprintln!("SKIPPED: network namespaces need root");
            return;
        }
        let _one = ONE_NETWORK.lock().unwrap_or_else(|e| e.into_inner());
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regions.toml");
        let matrix = slapos_wan::regions::load(&path).unwrap();
        let mut net = Network::create_with_regions("chaos", &matrix, &[0, 1, 2]).unwrap();
        let wan = net.wan().unwrap();
        let listen = "import socket,time\nk=[]\nfor fam,a in ((socket.AF_INET6,'::'),(socket.AF_INET,'0.0.0.0')):\n s=socket.socket(fam)\n if fam==socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,1)\n s.bind((a,7070))\n s.listen(64)\n k.append(s)\ntime.sleep(60)\n";
        let mut server = net
            .command(2, std::path::Path::new("/usr/bin/python3"))
            .args(["-c", listen])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let v6 = net.v6(2).to_string();
        let v4 = net.v4(2).to_string();
        assert!(connects(&net, 1, &v6, 7070));
        assert!(connects(&net, 1, &v4, 7070));
        assert!(udp_reaches(&net, 0, 2, &v6), "the harness reaches a host");
        let st = wan.stats();
        assert!(st.pair(1, 2).forwarded > 0 && st.pair(2, 1).forwarded > 0);
        assert!(st.pair(0, 2).forwarded > 0);
        net.cut(1, 2).unwrap();
        assert!(!connects(&net, 1, &v6, 7070));
        assert!(!connects(&net, 1, &v4, 7070));
        assert!(connects(&net, 3, &v6, 7070));
        assert!(udp_reaches(&net, 0, 2, &v6));
        net.heal().unwrap();
        assert!(connects(&net, 1, &v6, 7070));
        net.cut_one_way(1, 2).unwrap();
        assert!(!udp_reaches(&net, 1, 2, &v4));
        assert!(udp_reaches(&net, 2, 1, &net.v4(1).to_string()));
        net.heal().unwrap();
        assert!(udp_reaches(&net, 1, 2, &v4));
        let _ = server.kill();
        let _ = server.wait();
        let ns = net.host_ns(1);
        let link = net.harness_link();
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&ns));
        let dev = Command::new("ip")
            .args(["link", "show", &link])
            .output()
            .unwrap();
        assert!(!dev.status.success(), "the harness's TUN device is gone");
    }
}
