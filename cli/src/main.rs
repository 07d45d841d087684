//! `slapos`: the one binary. Argument parsing and wiring only.

mod demo;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "slapos",
    version,
    about = "SlapOS, with a Raft-replicated master"
)]
struct Cli {
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
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(&args),
    }
}
