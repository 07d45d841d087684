//! `slapos up --print-plan`: the commands `slapos up` would run for these options, in
//! order, as an operator would type them on their own machines (`docs/own-machines.md`
//! is the same path, explained). `up` runs most steps in process through the same
//! library calls these commands make; each line names the command that does the same.
//! Ports and addresses `up` picks at run time are shown as `<placeholders>`.

use super::UpOptions;

/// One step: what it does, and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    pub what: String,
    pub command: String,
}

fn step(what: impl Into<String>, command: impl Into<String>) -> PlanStep {
    PlanStep {
        what: what.into(),
        command: command.into(),
    }
}

/// The plan for `opts` (`root`: whether it runs as root, which puts the self-hosted
/// nodes in network namespaces unless `loopback`).
pub fn plan(opts: &UpOptions, root: bool) -> Vec<PlanStep> {
    let d = opts.dir.display();
    let tls = !opts.insecure;
    let self_hosted = opts.self_hosted();
    let seeds = if self_hosted { 1 } else { opts.replicas };
    let nodes = opts.node_count();
    let partitions = opts.partition_count();
    let netns = self_hosted && !opts.loopback && nodes > 0 && root;
    let mut out = Vec::new();
    if netns {
        match &opts.regions {
            None => out.push(step(
                format!("{nodes} network namespaces, one per node (its own IPv6 /64, a region), joined by a router"),
                "ip netns add <slapos-up-N>; ip link add ... type veth  (one per node)",
            )),
            Some(m) => out.push(step(
                format!(
                    "{nodes} network namespaces, one per node, in the regions {} in turn, joined by the WAN emulator (the file's delays between regions)",
                    m.names().join(", ")
                ),
                "ip netns add <slapos-up-N>; a TUN device per node as its eth0, moved by this process",
            )),
        }
    }
    for id in 1..=seeds {
        out.push(step(
            format!("replica {id}'s configuration: Raft, API and metrics addresses, data in {d}/replica-{id}"),
            format!("write {d}/replica-{id}.toml  (docs/examples/replica.toml)"),
        ));
    }
    out.push(step(
        "the group of replica 1 (its CA made, plain until certificates exist)",
        format!("slapos master init --config {d}/replica-1.toml"),
    ));
    if tls {
        out.push(step(
            "replica 1 serving plain gRPC only until the certificates below are issued",
            format!("slapos master run --config {d}/replica-1.toml"),
        ));
        for id in 1..=seeds {
            for identity in [format!("replica:{id}"), format!("gateway:r{id}")] {
                out.push(step(
                    format!("the certificate of {identity}"),
                    format!(
                        "slapos cluster ca issue --via <replica-1 api> --identity {identity} --ip 127.0.0.1 --out {d}/tls"
                    ),
                ));
            }
        }
        out.push(step(
            "the admin person's certificate, and their admin rights",
            format!(
                "slapos cluster ca issue --via <replica-1 api> --identity person:admin --out {d}/tls; \
                 slapos user admin --via <replica-1 api> --person admin"
            ),
        ));
        out.push(step(
            "the operator's certificate (what presents itself to the master API from now on)",
            format!("slapos cluster ca issue --via <replica-1 api> --identity operator:admin --out {d}/tls"),
        ));
        out.push(step(
            "replica 1 stopped, its configuration given [tls]",
            format!("kill <replica 1>; add [tls] to {d}/replica-*.toml"),
        ));
    }
    let env = if tls {
        format!("SLAPOS_MASTER_TLS_CERT={d}/tls/operator-admin.crt SLAPOS_MASTER_TLS_KEY={d}/tls/operator-admin.key SLAPOS_MASTER_TLS_CA={d}/tls/ca.pem ")
    } else {
        String::new()
    };
    for id in 1..=seeds {
        out.push(step(
            format!("replica {id}"),
            format!("slapos master run --config {d}/replica-{id}.toml"),
        ));
        if id > 1 {
            out.push(step(
                format!("replica {id} joins the group"),
                format!(
                    "{env}slapos master join --config {d}/replica-{id}.toml --via <replica-1 api>"
                ),
            ));
        }
    }
    for id in 1..=seeds {
        let what = if tls {
            format!("gateway {id} beside replica {id}: HTTPS, client certificates, mTLS to the masters, a release store ({d}/releases-{id})")
        } else {
            format!("gateway {id} beside replica {id}: plain HTTP")
        };
        out.push(step(
            what,
            format!(
                "slapos gateway run --config {d}/gateway-{id}.toml  (docs/examples/gateway.toml)"
            ),
        ));
    }
    for n in 1..=nodes {
        let comp = format!("COMP-{n}");
        let cfg = format!("{d}/node-{n}/slapos.cfg");
        let inns = if netns {
            format!("ip netns exec <slapos-up-{n}> ")
        } else {
            String::new()
        };
        out.push(step(
            format!("node {n}'s configuration ({partitions} partitions)"),
            format!("write {cfg}  (docs/examples/slapos.cfg)"),
        ));
        if tls {
            out.push(step(
                format!("computer {comp} registered in region node-{n}, a one-time token for it, the node registered with it (its key made on the node)"),
                format!(
                    "slapos computer register --id {comp} --region node-{n} --gateway <gateway-1 url> ...; slapos token create --computer {comp} --gateway <gateway-1 url> ...; \
                     {inns}slapos node register --token <token> --cfg {cfg}"
                ),
            ));
        }
        out.push(step(
            format!("node {n} formatted: partition users, addresses, cgroups"),
            format!("{inns}slapos node format --cfg {cfg}"),
        ));
        out.push(step(
            format!("node {n}'s agent"),
            format!("{inns}slapos node daemon --cfg {cfg}"),
        ));
    }
    if self_hosted && tls && nodes > 0 {
        let computers: Vec<String> = (1..=opts.replicas).map(|n| format!("COMP-{n}")).collect();
        out.push(step(
            format!(
                "the master moves into partitions of {}: the slapos-master release published to gateway 1 (nodes fetch it over HTTPS), a replica and its gateway per node, the seed retired",
                computers.join(", ")
            ),
            format!(
                "{env}slapos cluster bootstrap --via <replica-1 api> --gateway <gateway-1 url> \
                 --cert {d}/tls/person-admin.crt --key {d}/tls/person-admin.key --ca {d}/tls/ca.pem \
                 --computer {} --release-dir <software>/slapos-master{timers}",
                computers.join(","),
                timers = match &opts.regions {
                    None => String::new(),
                    Some(_) => {
                        let t = opts.timers();
                        format!(
                            " --heartbeat-ms {} --election-timeout-min-ms {} --election-timeout-max-ms {}",
                            t.heartbeat_ms, t.election_timeout_min_ms, t.election_timeout_max_ms
                        )
                    }
                }
            ),
        ));
        out.push(step(
            "the nodes pointed at the hosted gateways",
            "set master_url in every node's slapos.cfg to the hosted gateways; restart its daemon",
        ));
    }
    if nodes > 0 {
        let publish = if tls {
            "slapos release publish <software>/hello --cfg <client.cfg>; "
        } else {
            ""
        };
        out.push(step(
            "the sample release supplied to COMP-1 and one instance of it requested",
            format!(
                "{publish}slapos supply <release> COMP-1 --cfg {d}/client.cfg; \
                 slapos request hello <release> --node computer_guid=COMP-1 --parameters name=SlapOS --cfg {d}/client.cfg"
            ),
        ));
    }
    out.push(step(
        "the cluster described",
        format!("write {d}/cluster.json and {d}/client.cfg"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(insecure: bool, unhosted: bool) -> UpOptions {
        UpOptions {
            dir: "/tmp/c".into(),
            replicas: 3,
            base_port: None,
            nodes: 1,
            partitions: 4,
            insecure,
            unhosted,
            loopback: false,
            regions: None,
        }
    }

    fn commands(p: &[PlanStep]) -> Vec<&str> {
        p.iter().map(|s| s.command.as_str()).collect()
    }

    #[test]
    fn the_default_plan_is_the_by_hand_path_in_order() {
        let p = plan(&opts(false, false), true);
        let c = commands(&p);
        let at = |needle: &str| {
            c.iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle} in {c:#?}"))
        };
        // One seed, certificates before mTLS, three nodes (one per replica) in
        // namespaces, then the bootstrap onto the three computers, then the sample.
        assert!(at("ip netns add") < at("master init"));
        assert!(at("--identity replica:1") < at("--identity operator:admin"));
        assert!(!c.iter().any(|l| l.contains("replica-2.toml")));
        assert!(at("node register") < at("node format --cfg /tmp/c/node-1/"));
        assert!(c.iter().any(|l| l.contains("node-3/slapos.cfg")));
        assert!(at("node-3/slapos.cfg") < at("cluster bootstrap"));
        assert!(at("cluster bootstrap") < at("release publish"));
        assert!(c[at("cluster bootstrap")].contains("--computer COMP-1,COMP-2,COMP-3"));
        assert!(c[at("cluster bootstrap")].starts_with("SLAPOS_MASTER_TLS_CERT="));
    }

    #[test]
    fn insecure_and_unhosted_plans_keep_their_replicas_as_processes() {
        for (insecure, unhosted) in [(true, false), (false, true)] {
            let p = plan(&opts(insecure, unhosted), true);
            let c = commands(&p);
            assert!(c.iter().any(|l| l.contains("replica-3.toml")), "{c:#?}");
            assert!(c.iter().any(|l| l.contains("master join")));
            assert!(!c.iter().any(|l| l.contains("cluster bootstrap")));
            assert!(!c.iter().any(|l| l.contains("ip netns")));
            assert_eq!(
                c.iter().any(|l| l.contains("ca issue")),
                !insecure,
                "{c:#?}"
            );
        }
    }

    #[test]
    fn a_plan_with_regions_puts_nodes_behind_the_emulator_and_times_raft_for_the_worst_round_trip()
    {
        let matrix = slapos_wan::regions::parse(include_str!("../../../examples/regions.toml"))
            .expect("the example regions file");
        let mut o = opts(false, false);
        o.regions = Some(matrix);
        // Three replicas, one per region: the largest round trip is Lille-Tokyo's 230 ms.
        let t = o.timers();
        assert_eq!(
            (
                t.heartbeat_ms,
                t.election_timeout_min_ms,
                t.election_timeout_max_ms
            ),
            (690, 3450, 6900)
        );
        // Two replicas in Lille and Montréal: 90 ms, but never under the LAN heartbeat.
        o.replicas = 2;
        assert_eq!(o.timers().heartbeat_ms, 270);
        o.replicas = 3;
        let p = plan(&o, true);
        assert!(
            p[0].what.contains("lille, montreal, tokyo"),
            "{}",
            p[0].what
        );
        let c = commands(&p);
        let bootstrap = c
            .iter()
            .find(|l| l.contains("cluster bootstrap"))
            .expect("a bootstrap");
        assert!(
            bootstrap.contains("--heartbeat-ms 690 --election-timeout-min-ms 3450"),
            "{bootstrap}"
        );
        // Without regions, the defaults and no timer flags.
        assert!(!commands(&plan(&opts(false, false), true))
            .iter()
            .any(|l| l.contains("--heartbeat-ms")));
    }
}
