//! `slapos cluster backup`, `backup verify` and `cluster restore`: the operator's copy of
//! the master's state (`slapos_operator::backup`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    check: Option<BackupCheck>,
    /// Master API addresses: the backup is taken from the first that answers (put the
    /// replica nearest to you first). Needs the operator's certificate
    /// ($SLAPOS_MASTER_TLS_CERT, _KEY, _CA) when the group uses mTLS.
    #[arg(long, value_delimiter = ',')]
    via: Vec<String>,
    /// Where to write it (a FILE.partial is renamed to FILE once complete).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
    /// At most this many MiB a second from the replica, so that the group's writes keep
    /// their latency (0: as fast as the replica reads).
    #[arg(long, default_value_t = slapos_operator::backup::DEFAULT_RATE >> 20)]
    max_rate_mib: u64,
    /// Take it from the first of --via that answers, even the leader (by default an
    /// up-to-date follower is asked first).
    #[arg(long)]
    from_any: bool,
}

#[derive(Subcommand)]
enum BackupCheck {
    /// Check a backup without starting anything: its structure, pair count and checksum.
    /// Exit status 0 only when it is intact.
    Verify {
        /// The backup file (`slapos cluster backup --out`).
        file: PathBuf,
        /// Print its description as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file (`slapos cluster backup --out`).
    file: PathBuf,
    /// The configuration of the replica to start the new group with (its data_dir must
    /// be empty). Then start it with `slapos master run --config` and host the group in
    /// partitions again with `slapos cluster bootstrap`.
    #[arg(long)]
    config: PathBuf,
}

fn show(summary: &slapos_operator::backup::BackupSummary) {
    let h = &summary.header;
    println!(
        "backup of group {} at index {} (replica {}, taken at {} µs, release {}): {} pairs, {} bytes, sha256 {}",
        h.group.as_deref().unwrap_or("(no id)"),
        h.index,
        h.replica,
        h.taken_at,
        h.release,
        summary.pairs,
        summary.bytes,
        summary.sha256
    );
}

pub async fn backup(args: BackupArgs) -> Result<()> {
    match args.check {
        Some(BackupCheck::Verify { file, json }) => {
            let summary = slapos_operator::backup::verify(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                show(&summary);
            }
            Ok(())
        }
        None => {
            let (Some(out), false) = (args.out, args.via.is_empty()) else {
                anyhow::bail!(
                    "give --via (master API addresses) and --out FILE, or `backup verify FILE`"
                );
            };
            let started = std::time::Instant::now();
            let options = slapos_operator::backup::TakeOptions {
                max_bytes_per_sec: args.max_rate_mib.saturating_mul(1 << 20),
                prefer_follower: !args.from_any,
            };
            let summary = slapos_operator::backup::take(&args.via, &out, options).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                show(&summary);
                println!(
                    "written to {} in {:.1} s",
                    out.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
    }
}

pub fn restore(args: RestoreArgs) -> Result<()> {
    let config = master_replica::node::ReplicaConfig::load(&args.config)?;
    let started = std::time::Instant::now();
    let (summary, restored) = slapos_operator::backup::restore(&args.file, &config)?;
    println!(
        "restored {} pairs at index {} from group {} as the new group {}, replica {} in {} ({:.1} s); start it with `slapos master run --config {}`",
        restored.pairs,
        restored.index,
        summary.header.group.as_deref().unwrap_or("(no id)"),
        restored.group,
        config.id,
        config.data_dir.display(),
        started.elapsed().as_secs_f64(),
        args.config.display()
    );
    Ok(())
}
