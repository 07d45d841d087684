//! `slapos up`: its arguments, turned into `slapos_operator::up`'s options; the cluster
//! described once it runs; until SIGINT or SIGTERM, caught from the very start, so that
//! either stops it at any point (a start cut short undoes what it made) and cleans up.

use crate::progress::Printer;
use crate::signal::Stop;
use anyhow::{bail, Context, Result};
use clap::Args;
use slapos_operator::up::{LocalCluster, UpOptions};
use slapos_operator::Progress;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct UpArgs {
    /// Directory for configurations, data, logs and cluster.json. As root, when a
    /// directory above it is closed to other users, the partitions and releases (which
    /// the partitions' users must reach) go under /var/lib/slapos-up instead.
    #[arg(long, default_value = "slapos-up")]
    dir: PathBuf,
    /// Master replicas (each with a gateway beside it).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// First port to use; each replica takes four consecutive ports (Raft, API,
    /// metrics, gateway). Default: free ports picked by the system.
    #[arg(long)]
    base_port: Option<u16>,
    /// Node agents (`slapos node daemon`), each formatted into partitions; the first
    /// node gets the sample release and one instance of it. 0: the master group only.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Partitions per node (self-hosted: at least 3, a replica and its gateway in two of
    /// each node, the sample in a third of the first).
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// No TLS anywhere: plain HTTP gateways without client certificates and plain gRPC
    /// between masters (loopback tests and debugging only).
    #[arg(long)]
    insecure: bool,
    /// Run the replicas as plain processes of this command, beside the nodes, instead of
    /// hosting them in partitions (the default, below). Implied by --insecure.
    #[arg(long)]
    unhosted: bool,
    /// Keep the nodes of the self-hosted group on loopback (as root they otherwise run in
    /// network namespaces of their own, each with its own IPv6 /64, joined by a router).
    #[arg(long)]
    loopback: bool,
    /// Regions apart: a regions file (TOML: regions, round trips between each pair,
    /// optional jitter, loss, bandwidth; `examples/regions.toml`). Node n goes into region
    /// (n - 1) mod the number of regions, behind the WAN emulator; the replicas' Raft
    /// timers follow the largest round trip between their regions; each node reads first
    /// from its own region's gateway. Needs root and namespaces.
    #[arg(long, value_name = "FILE")]
    regions: Option<PathBuf>,
    /// Print the commands `slapos up` would run for these options, in order (what an
    /// operator runs by hand on their own machines, docs/own-machines.md), and exit
    /// without starting anything.
    #[arg(long)]
    print_plan: bool,
}

impl UpArgs {
    /// The operator's options; the regions file read and checked.
    fn into_options(self) -> Result<UpOptions> {
        let regions = match &self.regions {
            Some(path) => Some(
                slapos_wan::regions::load(path)
                    .with_context(|| format!("regions file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(UpOptions {
            dir: self.dir,
            replicas: self.replicas,
            base_port: self.base_port,
            nodes: self.nodes,
            partitions: self.partitions,
            insecure: self.insecure,
            unhosted: self.unhosted,
            loopback: self.loopback,
            regions,
        })
    }
}

pub async fn run(args: UpArgs) -> Result<()> {
    if args.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    if args.print_plan {
        let root = slapgrid::process::is_root();
        let opts = args.into_options()?;
        for (i, s) in slapos_operator::up::plan::plan(&opts, root)
            .iter()
            .enumerate()
        {
            println!("# {}. {}\n{}\n", i + 1, s.what, s.command);
        }
        return Ok(());
    }
    // Caught now: a signal during the start is kept, and stops it (the start's future
    // dropped undoes what it made) instead of killing this process and leaving its
    // children, namespaces and users behind.
    let mut stop = Stop::catch()?;
    let opts = args.into_options()?;
    let progress: Arc<dyn Progress> = Arc::new(Printer);
    let mut start = std::pin::pin!(LocalCluster::start(&opts, progress.clone()));
    let mut cluster = tokio::select! {
        started = &mut start => started?,
        _ = stop.wait() => {
            println!("stopping");
            // the start, dropped on return, stops and removes whatever it made
            return Ok(());
        }
    };
    describe(&cluster, &opts);
    let mut interrupted = false;
    if let Some(sample) = &cluster.description().sample {
        println!(
            "waiting for the sample instance {:?} to publish its connection parameters...",
            sample.title
        );
        tokio::select! {
            _ = stop.wait() => interrupted = true,
            published = cluster.sample_connection(Duration::from_secs(180)) => match published {
                Some(Ok(params)) => {
                    println!(
                        "instance {:?} is running; its connection parameters:",
                        sample.title
                    );
                    for (k, v) in params {
                        println!("  {k:<12}  {v}");
                    }
                }
                Some(Err(e)) => eprintln!("{e}; see the node logs in {}", opts.dir.display()),
                None => {}
            },
        }
    }
    if !interrupted {
        println!("interrupt (Ctrl-C) to stop every process");
        // Until interrupted; children that exit on their own are reported.
        tokio::select! {
            _ = stop.wait() => {}
            _ = cluster.watch(&*progress) => {}
        }
    }
    println!("stopping");
    tokio::task::block_in_place(|| cluster.stop());
    Ok(())
}

/// What runs where, and how to reach it.
fn describe(cluster: &LocalCluster, opts: &UpOptions) {
    let file = cluster.description();
    let hosted = &file.hosted_replicas;
    let urls = &file.gateway_urls;
    println!(
        "slapos up: {} master replicas{} and {} gateways in {}",
        opts.replicas,
        if hosted.is_empty() {
            ""
        } else {
            " hosted in partitions"
        },
        urls.len(),
        file.dir.display()
    );
    for (i, url) in urls.iter().enumerate() {
        match hosted.get(i) {
            Some(h) => println!(
                "  SLAP gateway  {url}  (beside replica {} of {}/{}, in {}/{}; {})",
                h.id, h.computer, h.partition, h.computer, h.gateway_partition, h.region
            ),
            None => println!("  SLAP gateway  {url}"),
        }
    }
    println!(
        "  cluster       {}slapos cluster status --via {}",
        file.admin
            .master_tls_env
            .as_ref()
            .map(|e| format!("{e} "))
            .unwrap_or_default(),
        file.master_api_addrs.join(",")
    );
    if let Some(t) = cluster.tls() {
        println!(
            "  mTLS          every link; the admin's certificate {} (CA {})",
            t.admin_cert.display(),
            t.ca.display()
        );
    }
    // The web portal on every gateway (portal/DESIGN.md): the admin signs in with their
    // certificate imported in the browser, or with a password set on the master API.
    if let Some(url) = urls.first() {
        println!("  portal        {url}portal/  (on every gateway)");
        if let Some(env) = &file.admin.master_tls_env {
            println!(
                "  sign in as    admin: import the admin's certificate in the browser, or set a password: \
                 echo 'a long passphrase' | {env} slapos user password --via {} --person admin",
                file.master_api_addrs.join(",")
            );
        }
    }
    for node in &file.nodes {
        let place = match (&node.netns, &node.address, &node.region) {
            (Some(ns), Some(a), region) => format!(
                ", namespace {ns} at {a}{}",
                region
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        println!(
            "  node          {} ({} partitions{place}) in {}",
            node.computer_id,
            node.partitions,
            node.dir.display()
        );
    }
    if let Some(p) = &file.partitions_dir {
        println!(
            "  partitions    and releases in {} (removed when it stops)",
            p.display()
        );
    }
    println!("  described in  {}", cluster.description_path().display());
}
