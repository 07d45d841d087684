//! `slapos node ...`: wiring to the slapgrid crate (the node agent). Exit codes are the
//! reference's: 0 success, 1 failure, 2 broken promises (instance) or formatted offline
//! (format), 3 instance run offline, 5 not root, 10 another run holds the lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use slapgrid::instance::InstanceOptions;
use slapgrid::node::{Node, NodeError, RunLock};
use slapgrid::software::SoftwareOptions;
use slapgrid::supervisor::ControlOp;
use slapgrid::NodeConfig;

#[derive(Args, Clone)]
pub struct CfgArg {
    /// The node's slapos.cfg (default $SLAPOS_CONFIGURATION, else /etc/opt/slapos/slapos.cfg).
    #[arg(long)]
    cfg: Option<PathBuf>,
    /// Start at once (the reference sleeps a random delay otherwise; we never do).
    #[arg(long)]
    now: bool,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Format the machine into partitions (users, directories, addresses, taps) and post
    /// the computer's description to the master.
    Format {
        #[command(flatten)]
        cfg: CfgArg,
        /// Only say what would be done.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Get this node's computer certificate with a one-time token its owner made
    /// (`slapos token create`): the key is made here; writes key_file, cert_file and
    /// master_ca_file of the config.
    Register {
        #[command(flatten)]
        cfg: CfgArg,
        /// The one-time token the computer's owner made (`slapos token create`).
        #[arg(long)]
        token: String,
        /// Verify the gateway against this CA while registering (default: master_ca_file
        /// if it exists; otherwise the gateway is not verified, the token being the secret).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Renew this node's certificate (a new key) if it ends within --days, or now with
    /// --force (the daemon does it daily, 30 days ahead).
    Renew {
        #[command(flatten)]
        cfg: CfgArg,
        /// Renew when the certificate expires within this many days.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Renew now, whatever its expiry.
        #[arg(long)]
        force: bool,
    },
    /// Undo `format`: partition users and groups, taps and addresses (directories stay).
    Unformat {
        #[command(flatten)]
        cfg: CfgArg,
        /// Also remove what is left once the users are gone: the partitions' directories
        /// (their data included), the installed software releases and the computer's
        /// state files. Stop the node's daemon first.
        #[arg(long)]
        purge: bool,
    },
    /// Install the software releases the master lists (and remove destroyed ones).
    Software {
        #[command(flatten)]
        cfg: CfgArg,
        /// Rebuild even completed releases.
        #[arg(long)]
        force: bool,
        /// Only these releases (URL or md5, comma separated).
        #[arg(long, value_delimiter = ',')]
        only_sr: Vec<String>,
        /// Remove releases no longer listed as available.
        #[arg(long)]
        garbage_collect: bool,
    },
    /// Deploy, start, stop and destroy the instances the master lists.
    Instance {
        #[command(flatten)]
        cfg: CfgArg,
        /// Process every partition, even unchanged ones.
        #[arg(long)]
        force: bool,
        /// Only these partitions (comma separated).
        #[arg(long, value_delimiter = ',')]
        only_cp: Vec<String>,
    },
    /// Run the promises of every started partition now (nothing reported).
    Promise {
        #[command(flatten)]
        cfg: CfgArg,
        /// Only these partitions (comma separated).
        #[arg(long, value_delimiter = ',')]
        only_cp: Vec<String>,
    },
    /// Tell the master something happened to this computer (every instance on it is
    /// reprocessed).
    Bang {
        #[command(flatten)]
        cfg: CfgArg,
        /// Why: recorded on the computer's partitions, which are then processed again.
        #[arg(long, short = 'm')]
        message: String,
    },
    /// Post the partitions' usage and destroy partitions left destroyed.
    Report {
        #[command(flatten)]
        cfg: CfgArg,
    },
    /// The software, instance, report and format loops, until interrupted.
    Daemon {
        #[command(flatten)]
        cfg: CfgArg,
    },
    /// The supervisor of partition services (started on demand by the other commands).
    Supervisord {
        #[command(flatten)]
        cfg: CfgArg,
    },
    /// Stop every supervised service and the supervisor itself.
    Shutdown {
        #[command(flatten)]
        cfg: CfgArg,
    },
    /// The state of every supervised service, the daemon's watch of the master, then each
    /// partition's limits and use.
    Status {
        #[command(flatten)]
        cfg: CfgArg,
        /// Print JSON (the services; with --limits, the partitions' limits and use).
        #[arg(long)]
        json: bool,
        /// Only the partitions' limits and use (and which cgroups the node uses).
        #[arg(long)]
        limits: bool,
    },
    /// Start a partition's services (`slappart0`) or one service (`slappart0:web`).
    Start {
        #[command(flatten)]
        cfg: CfgArg,
        /// A partition (slappart0), or one service of it (slappart0:service).
        target: String,
    },
    /// Stop a partition's services or one service.
    Stop {
        #[command(flatten)]
        cfg: CfgArg,
        /// A partition (slappart0), or one service of it (slappart0:service).
        target: String,
    },
    /// Restart a partition's services or one service.
    Restart {
        #[command(flatten)]
        cfg: CfgArg,
        /// A partition (slappart0), or one service of it (slappart0:service).
        target: String,
    },
}

fn load(cfg: &CfgArg) -> Result<Node, NodeError> {
    let path = NodeConfig::default_path(cfg.cfg.as_deref());
    let config = NodeConfig::load(&path)?;
    let launch = Node::self_launch(&config);
    Node::new(config, launch)
}

fn exit_code(e: &NodeError) -> i32 {
    match e {
        NodeError::NotRoot => 5,
        NodeError::Locked(_) => 10,
        _ => 1,
    }
}

fn print_failures(failed: &[(String, String)]) {
    for (what, why) in failed {
        eprintln!("{what}: {why}");
    }
}

/// Runs a node command; returns the process exit code.
pub fn run(cmd: NodeCommand) -> Result<i32> {
    let outcome = run_inner(cmd);
    Ok(match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    })
}

fn run_inner(cmd: NodeCommand) -> Result<i32, NodeError> {
    match cmd {
        NodeCommand::Format { cfg, dry_run } => {
            let node = load(&cfg)?;
            node.check_root()?;
            let posted = slapgrid::format_and_post(&node, dry_run)?;
            println!("slapos successfully prepared the computer.");
            Ok(if posted { 0 } else { 2 })
        }
        NodeCommand::Register { cfg, token, ca } => {
            let path = NodeConfig::default_path(cfg.cfg.as_deref());
            let config = NodeConfig::load(&path)?;
            let done = slapgrid::register::register(&config, &token, ca.as_deref())?;
            println!(
                "registered {}: key {}, certificate {}",
                done.computer_id,
                config
                    .key_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                config
                    .cert_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            Ok(0)
        }
        NodeCommand::Renew { cfg, days, force } => {
            let path = NodeConfig::default_path(cfg.cfg.as_deref());
            let config = NodeConfig::load(&path)?;
            let renewed = slapgrid::register::renew_if_needed(
                &config,
                std::time::Duration::from_secs(days.saturating_mul(86400)),
                force,
            )?;
            println!(
                "{}",
                if renewed {
                    "certificate renewed"
                } else {
                    "certificate still valid: not renewed"
                }
            );
            Ok(0)
        }
        NodeCommand::Unformat { cfg, purge } => {
            let node = load(&cfg)?;
            node.check_root()?;
            let mut left = slapgrid::format::unformat(&node.cfg)?;
            if purge {
                left.extend(slapgrid::format::purge(&node.cfg)?);
            }
            for l in &left {
                eprintln!("could not remove: {l}");
            }
            Ok(i32::from(!left.is_empty()))
        }
        NodeCommand::Software {
            cfg,
            force,
            only_sr,
            garbage_collect,
        } => {
            let node = load(&cfg)?;
            node.check_root()?;
            let _lock = RunLock::acquire(&node.cfg.pidfile_software)?;
            let r = slapgrid::software::run(
                &node,
                &SoftwareOptions {
                    force,
                    only: only_sr,
                    garbage_collect,
                },
            )?;
            println!(
                "software: {} installed, {} up to date, {} destroyed, {} failed",
                r.installed.len(),
                r.up_to_date.len(),
                r.destroyed.len(),
                r.failed.len()
            );
            print_failures(&r.failed);
            Ok(i32::from(!r.failed.is_empty()))
        }
        NodeCommand::Instance {
            cfg,
            force,
            only_cp,
        } => {
            let node = load(&cfg)?;
            node.check_root()?;
            let _lock = RunLock::acquire(&node.cfg.pidfile_instance)?;
            let r = slapgrid::instance::run(
                &node,
                &InstanceOptions {
                    force,
                    only: only_cp,
                },
            )?;
            if r.offline {
                println!("instance: master unreachable, every configured service started");
            } else {
                println!(
                    "instance: {} processed, {} unchanged, {} destroyed, {} failed, {} broken promises",
                    r.processed.len(),
                    r.skipped.len(),
                    r.destroyed.len(),
                    r.failed.len(),
                    r.promise_failed.len()
                );
            }
            print_failures(&r.failed);
            print_failures(&r.promise_failed);
            Ok(r.exit_code())
        }
        NodeCommand::Promise { cfg, only_cp } => {
            let node = load(&cfg)?;
            node.check_root()?;
            let broken = slapgrid::instance::check_promises(&node, &only_cp)?;
            println!("promises: {} broken", broken.len());
            print_failures(&broken);
            Ok(if broken.is_empty() { 0 } else { 2 })
        }
        NodeCommand::Bang { cfg, message } => {
            let node = load(&cfg)?;
            node.check_root()?;
            node.client.post(
                "computerBang",
                &[
                    ("computer_id", &node.cfg.computer_id),
                    ("message", &message),
                ],
                None,
            )?;
            println!("banged {}", node.cfg.computer_id);
            Ok(0)
        }
        NodeCommand::Report { cfg } => {
            let node = load(&cfg)?;
            node.check_root()?;
            let _lock = RunLock::acquire(&node.cfg.pidfile_report)?;
            let r = slapgrid::report::run(&node)?;
            println!(
                "report: {} movements for {} partitions, {} destroyed, {} failed",
                r.movements,
                r.partitions.len(),
                r.destroyed.len(),
                r.failed.len()
            );
            print_failures(&r.failed);
            Ok(i32::from(!r.failed.is_empty()))
        }
        NodeCommand::Daemon { cfg } => {
            let node = Arc::new(load(&cfg)?);
            node.check_root()?;
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let _ = rt.block_on(crate::signal::wait_for_signal());
                }
                flag.store(true, Ordering::Relaxed);
            });
            slapgrid::daemon::run(node, stop);
            Ok(0)
        }
        NodeCommand::Supervisord { cfg } => {
            let path = NodeConfig::default_path(cfg.cfg.as_deref());
            let config = NodeConfig::load(&path)?;
            if config.root_check && !slapgrid::process::is_root() {
                return Err(NodeError::NotRoot);
            }
            let hook = slapgrid::watchdog::hook(config.clone())?;
            slapgrid::supervisor::run_daemon(&config, hook)?;
            Ok(0)
        }
        NodeCommand::Shutdown { cfg } => {
            let node = load(&cfg)?;
            if node.supervisor.is_running() {
                node.supervisor.shutdown()?;
            }
            Ok(0)
        }
        NodeCommand::Status { cfg, json, limits } => {
            let node = load(&cfg)?;
            if limits {
                let report = slapgrid::limits::report(&node);
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    print_limits(&report);
                }
                return Ok(0);
            }
            let statuses = node.supervisor.status()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&statuses).unwrap_or_default()
                );
            } else {
                for s in &statuses {
                    println!(
                        "{:<32} {:<9} {}",
                        format!("{}:{}", s.group, s.name),
                        format!("{:?}", s.state).to_uppercase(),
                        s.pid.map(|p| format!("pid {p}")).unwrap_or_default()
                    );
                }
                println!();
                print_watch(&node.cfg);
                print_limits(&slapgrid::limits::report(&node));
            }
            Ok(0)
        }
        NodeCommand::Start { cfg, target } => control(&cfg, ControlOp::Start, &target),
        NodeCommand::Stop { cfg, target } => control(&cfg, ControlOp::Stop, &target),
        NodeCommand::Restart { cfg, target } => control(&cfg, ControlOp::Restart, &target),
    }
}

/// `slapos node status`'s line on the daemon's watch of the master (what
/// `IR/var/watch.json` says; nothing when no daemon ever ran here).
fn print_watch(cfg: &NodeConfig) {
    let Some(w) = slapgrid::watch::load_status(&cfg.instance_root) else {
        return;
    };
    let now = slapgrid::node::now_unix();
    let ago = |t: u64| format!("{} s ago", now.saturating_sub(t));
    let state = match w.mode.as_str() {
        "long-poll" => format!(
            "long poll on {} (ETag {})",
            w.gateway,
            w.etag.as_deref().unwrap_or("-")
        ),
        "polling" => format!(
            "plain polling every {} s (the master sends no ETag)",
            cfg.instance_interval.as_secs()
        ),
        "reconnecting" => format!(
            "reconnecting after {} error(s), next attempt in {} s: {}",
            w.errors,
            w.retry_in_secs.unwrap_or(0),
            w.last_error.as_deref().unwrap_or("")
        ),
        other => other.to_string(),
    };
    let changes = match w.last_change_unix {
        Some(t) => format!(", {} change(s) seen, the last {}", w.changes, ago(t)),
        None => String::new(),
    };
    println!("master: {state} (since {}){changes}", ago(w.since_unix));
    println!();
}

/// `slapos node status`'s second part: the cgroups in use, then per partition its
/// limits (what the kernel holds; `-` none) and its use.
fn print_limits(report: &slapgrid::limits::NodeReport) {
    use slapgrid::limits::human;
    println!("cgroups: {}", report.cgroups);
    for p in &report.partitions {
        let held = p.enforced.as_ref().unwrap_or(&p.limits);
        let usage = p.usage.clone().unwrap_or_default();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let cpu = format!(
            "cpu {} s (weight {}, quota {}{})",
            opt(usage.cpu_seconds.map(|s| format!("{s:.1}"))),
            opt(held.cpu_weight.map(|w| w.to_string())),
            opt(held.cpu_quota.map(|q| format!("{q}%"))),
            p.cpus
                .as_ref()
                .map(|c| format!(", cpus {c}"))
                .unwrap_or_default()
        );
        let memory = format!(
            "memory {} / {} (peak {})",
            opt(usage.memory_bytes.map(human)),
            opt(held.memory.map(human)),
            opt(usage.memory_peak_bytes.map(human))
        );
        let pids = format!(
            "processes {} / {}",
            opt(usage.processes.map(|n| n.to_string())),
            opt(held.pids.map(|n| n.to_string()))
        );
        let disk = format!(
            "disk {} / {}{}",
            opt(p.disk_bytes.map(human)),
            opt(p.limits.disk.map(human)),
            if p.disk_over {
                " OVER: services stopped"
            } else {
                ""
            }
        );
        let size = match (&p.size, p.reserved) {
            (Some(s), true) => format!(" size {s} (reserved)"),
            (Some(s), false) => format!(" size {s}"),
            (None, _) => String::new(),
        };
        println!("{}{size}: {cpu}, {memory}, {pids}, {disk}", p.partition);
        for u in &p.unapplied {
            println!("  {} limit not enforced: {}", u.limit, u.reason);
        }
    }
}

fn control(cfg: &CfgArg, op: ControlOp, target: &str) -> Result<i32, NodeError> {
    let node = load(cfg)?;
    for s in node.supervisor.control(op, target)? {
        println!("{}:{} {:?}", s.group, s.name, s.state);
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token registering computer <computer> as yours (printed once; valid once,
    /// for --ttl seconds), through a gateway, as the person of --cert.
    Create {
        /// The gateway (https://...).
        #[arg(long)]
        gateway: String,
        /// Your certificate.
        #[arg(long)]
        cert: PathBuf,
        /// Your private key.
        #[arg(long)]
        key: PathBuf,
        /// The group's CA, to verify the gateway.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The computer the token registers (one of yours).
        #[arg(long)]
        computer: String,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

pub fn token(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            gateway,
            cert,
            key,
            ca,
            computer,
            ttl,
        } => {
            let client = slapgrid::client::SlapClient::new(
                &[slapgrid::config::normalize_master_url(&gateway)],
                Some((cert.as_path(), key.as_path())),
                ca.as_deref(),
            )?;
            let token = client.post(
                "createComputerToken",
                &[("computer_id", &computer), ("ttl", &ttl.to_string())],
                None,
            )?;
            println!("{}", String::from_utf8_lossy(&token).trim());
            Ok(())
        }
    }
}
