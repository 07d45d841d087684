//! `slapos`: the one binary. Argument parsing and wiring only.

#![forbid(unsafe_code)]

mod accounting;
mod backup;
mod bench;
mod chaos;
mod demo;
mod frontend;
mod gateway;
mod instance;
mod master;
mod node;
mod progress;
mod release;
mod selfhost;
mod signal;
mod tunnel;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "slapos",
    version,
    about = "SlapOS, with a Raft-replicated master"
)]
struct Cli {
    /// More logs (info level) unless RUST_LOG says otherwise.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive an in-process master through the SLAP protocol: format a computer, supply a
    /// software release, request an instance tree, publish connection parameters, and
    /// show what the node is told. Every step goes through the real form parsing, state
    /// machine and rendering; no network is involved yet.
    Demo(demo::DemoArgs),
    /// A local cluster: master replicas and a gateway beside each, as real processes in
    /// one directory, described in <dir>/cluster.json; runs until interrupted.
    Up(up::UpArgs),
    /// One master replica: run, init, join, leave.
    #[command(subcommand)]
    Master(master::MasterCommand),
    /// One SLAP gateway (HTTPS in front of the master group): run.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// The master group as a whole.
    #[command(subcommand)]
    Cluster(master::ClusterCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Fault injection with a checked history.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
    /// Movements (hosting and usage) of a customer, a provider or a computer, through a
    /// gateway.
    Usage(accounting::UsageArgs),
    /// A customer's invoice for a period (lines per instance tree and resource, with the
    /// movements behind each); `close` makes periods final.
    Invoice(accounting::InvoiceArgs),
    /// Prices of a provider's computers.
    #[command(subcommand)]
    Price(accounting::PriceCommand),
    /// Computers of a provider's account.
    #[command(subcommand)]
    Computer(accounting::ComputerCommand),
    /// Ask for an instance tree (or change one you have): prints its connection
    /// parameters once its node published them; exit code 2 while it is provisioned.
    Request(instance::RequestArgs),
    /// Install a software release on one of your computers (`--state destroyed` removes it).
    Supply(instance::SupplyArgs),
    /// Your instance trees: list them, show one.
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    /// Software releases the group's gateways serve: publish one.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Persons (admins): add one, with a certificate and a client configuration.
    #[command(subcommand)]
    User(master::UserCommand),
    /// One-time tokens that register a node as one of your computers.
    #[command(subcommand)]
    Token(node::TokenCommand),
    /// The node agent: format, software, instance, report, daemon, and the supervisor of
    /// partition services.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Certificate-checked TLS 1.3 tunnels for legacy protocols between partitions (the
    /// role of stunnel): the server end beside the service, the client end beside the
    /// consumer, each checking the other's identity.
    #[command(subcommand)]
    Tunnel(tunnel::TunnelCommand),
    /// The frontend: one reverse proxy serving every site of a sites file (the frontend
    /// release's shared instances) over HTTPS and HTTP, reloaded on SIGHUP.
    #[command(subcommand)]
    Frontend(frontend::FrontendCommand),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:?}");
        if let Some(fix) = what_to_do(&e) {
            eprintln!("\nWhat to do: {fix}");
        }
        std::process::exit(1);
    }
}

/// For the errors an operator can fix where they stand (the masters' mutual TLS): what
/// to set, named.
fn what_to_do(e: &anyhow::Error) -> Option<String> {
    use master_client::{ClientError, Denial};
    // The masters' client error, as it is or inside an operator's step (whose transparent
    // variant leaves it out of the chain of sources).
    let client = e.chain().find_map(|c| {
        c.downcast_ref::<ClientError>().or_else(|| {
            match c.downcast_ref::<slapos_operator::OperatorError>()?.root() {
                slapos_operator::OperatorError::Masters(m) => Some(m),
                _ => None,
            }
        })
    })?;
    let presented = std::env::var("SLAPOS_MASTER_TLS_CERT").unwrap_or_default();
    let operator =
        "an operator's certificate (`slapos cluster ca issue --identity operator:NAME`, \
                    run by an operator; `slapos up` writes one in <dir>/tls/operator-admin.crt)";
    match client {
        ClientError::TlsRequired { .. } => Some(format!(
            "the masters admit only the group's identities over mutual TLS: set \
             SLAPOS_MASTER_TLS_CERT and SLAPOS_MASTER_TLS_KEY to {operator} and its key, and \
             SLAPOS_MASTER_TLS_CA to the group's CA (`slapos cluster ca export`)."
        )),
        ClientError::Denied {
            kind: Denial::Forbidden,
            ..
        } => Some(format!(
            "the masters refused the certificate of SLAPOS_MASTER_TLS_CERT ({presented}) for \
             this command: operator commands need {operator}; a replica's or a gateway's \
             certificate serves only their own calls."
        )),
        ClientError::Refused(_) => Some(format!(
            "the TLS handshake failed: SLAPOS_MASTER_TLS_CA must be the group's CA \
             (`slapos cluster ca export`), and SLAPOS_MASTER_TLS_CERT ({presented}) a \
             certificate it issued, neither expired nor revoked."
        )),
        _ => None,
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // The node's daemon says what it does (runs, wake-ups, failures) without -v: it is
    // what an operator reads in its log.
    let daemon = matches!(cli.command, Command::Node(node::NodeCommand::Daemon { .. }));
    let default_level = if cli.verbose || daemon {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Node(cmd) => std::process::exit(node::run(cmd)?),
        Command::Token(cmd) => node::token(cmd),
        Command::User(cmd) => runtime()?.block_on(master::user(cmd)),
        Command::Demo(args) => demo::run(&args),
        Command::Up(args) => runtime()?.block_on(up::run(args)),
        Command::Master(cmd) => runtime()?.block_on(master::run(cmd)),
        Command::Gateway(cmd) => runtime()?.block_on(gateway::run(cmd)),
        Command::Cluster(cmd) => runtime()?.block_on(master::cluster(cmd)),
        Command::Bench(cmd) => runtime()?.block_on(bench::run(cmd)),
        Command::Chaos(cmd) => runtime()?.block_on(chaos::run(cmd)),
        Command::Usage(args) => runtime()?.block_on(accounting::usage(args)),
        Command::Invoice(args) => runtime()?.block_on(accounting::invoice(args)),
        Command::Price(cmd) => runtime()?.block_on(accounting::price(cmd)),
        Command::Computer(cmd) => runtime()?.block_on(accounting::computer(cmd)),
        Command::Request(args) => {
            let code = runtime()?.block_on(instance::request(args))?;
            std::process::exit(code)
        }
        Command::Supply(args) => runtime()?.block_on(instance::supply(args)),
        Command::Instance(cmd) => runtime()?.block_on(instance::instance(cmd)),
        Command::Release(cmd) => runtime()?.block_on(release::release(cmd)),
        Command::Tunnel(cmd) => runtime()?.block_on(tunnel::run(cmd)),
        Command::Frontend(cmd) => runtime()?.block_on(frontend::run(cmd)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for (`--help`).
    #[test]
    fn every_option_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "slapos", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }
}
