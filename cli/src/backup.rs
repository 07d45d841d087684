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
    /// Take a backup now and then every --every-secs into --dir, keeping the newest
    /// --keep (`backup-<unix seconds>.slapos`); a failed one is tried again sooner.
    /// Runs until SIGINT or SIGTERM (the slapos-master release runs it beside each
    /// replica it hosts, `backup-every-minutes`); with --every-secs 0 it takes none.
    Schedule {
        /// Master API addresses (as for a backup).
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The directory the backups go to (made if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Seconds between the starts of two backups (0: none).
        #[arg(long)]
        every_secs: u64,
        /// How many backups to keep (the newest).
        #[arg(long, default_value_t = 7)]
        keep: usize,
        /// At most this many MiB a second from the replica (0: as fast as it reads).
        #[arg(long, default_value_t = slapos_operator::backup::DEFAULT_RATE >> 20)]
        max_rate_mib: u64,
        /// Take it from the first of --via that answers, even the leader.
        #[arg(long)]
        from_any: bool,
        /// Also send each backup to this HTTPS place: `PUT <URL>/<file name>` (a WebDAV
        /// directory, a storage bucket).
        #[arg(long, value_name = "URL")]
        upload: Option<String>,
        /// The client certificate (PEM) presented to the upload server; default:
        /// $SLAPOS_MASTER_TLS_CERT when set (a hosted replica's own).
        #[arg(long, value_name = "FILE", requires = "upload_key")]
        upload_cert: Option<PathBuf>,
        /// Its key; default: $SLAPOS_MASTER_TLS_KEY.
        #[arg(long, value_name = "FILE", requires = "upload_cert")]
        upload_key: Option<PathBuf>,
        /// PEM bundles the upload server is checked against (repeatable); default: the
        /// system's (/etc/ssl/certs/ca-certificates.crt) and $SLAPOS_MASTER_TLS_CA.
        #[arg(long, value_name = "FILE")]
        upload_ca: Vec<PathBuf>,
    },
    /// Whether the newest backup of --dir (`backup schedule`) is at most --max-secs old:
    /// exit 0 when it is (or when there is none yet but the schedule started at most
    /// --max-secs ago), 1 (saying how old it is, or that there is none) otherwise. The
    /// slapos-master release's promise.
    Age {
        /// The directory `backup schedule` writes to.
        #[arg(long)]
        dir: PathBuf,
        /// The age (seconds) over which the newest backup is too old.
        #[arg(long)]
        max_secs: u64,
        /// Count the newest backup uploaded (`schedule --upload`), not the newest kept
        /// in --dir.
        #[arg(long)]
        uploaded: bool,
    },
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
        Some(BackupCheck::Schedule {
            via,
            dir,
            every_secs,
            keep,
            max_rate_mib,
            from_any,
            upload,
            upload_ca,
            upload_cert,
            upload_key,
        }) => {
            use slapos_operator::backup_schedule::{next_wait, take_one, Schedule, Turn};
            let mut stop = crate::signal::Stop::catch()?;
            if every_secs == 0 {
                // (the release runs it whatever its parameters say: none asked for)
                tracing::info!("no scheduled backups (--every-secs 0)");
                stop.wait().await;
                return Ok(());
            }
            let upload = match upload {
                None => None,
                Some(url) => {
                    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
                    let mut cas = upload_ca;
                    if cas.is_empty() {
                        let system = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
                        cas.extend(system.exists().then_some(system));
                        cas.extend(env("SLAPOS_MASTER_TLS_CA"));
                    }
                    let (cert, key) = match (upload_cert, upload_key) {
                        (Some(c), Some(k)) => (Some(c), Some(k)),
                        _ => (env("SLAPOS_MASTER_TLS_CERT"), env("SLAPOS_MASTER_TLS_KEY")),
                    };
                    let cas: Vec<&std::path::Path> = cas.iter().map(PathBuf::as_path).collect();
                    Some(slapos_operator::backup_schedule::Upload::new(
                        &url,
                        &cas,
                        cert.as_deref().zip(key.as_deref()),
                    )?)
                }
            };
            let schedule = Schedule {
                upload,
                dir,
                every: std::time::Duration::from_secs(every_secs),
                keep,
                options: slapos_operator::backup::TakeOptions {
                    max_bytes_per_sec: max_rate_mib.saturating_mul(1 << 20),
                    prefer_follower: !from_any,
                },
            };
            slapos_operator::backup_schedule::mark_started(&schedule.dir)?;
            tracing::info!(dir = %schedule.dir.display(), every_secs, keep, "scheduled backups");
            loop {
                let taken = tokio::select! {
                    r = take_one(&via, &schedule) => r,
                    _ = stop.wait() => {
                        // Stopped while one was being written: nothing half of it stays.
                        slapos_operator::backup_schedule::remove_partials(&schedule.dir);
                        return Ok(());
                    }
                };
                let turn = match taken {
                    Ok(path) => {
                        tracing::info!(backup = %path.display(), "backup taken");
                        Turn::Taken(path)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "backup failed: tried again sooner");
                        Turn::Failed(e)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(next_wait(&schedule, &turn)) => {}
                    _ = stop.wait() => return Ok(()),
                }
            }
        }
        Some(BackupCheck::Age {
            dir,
            max_secs,
            uploaded,
        }) => {
            let now = std::time::SystemTime::now();
            let age = if uploaded {
                slapos_operator::backup_schedule::uploaded_since(&dir, now)
            } else {
                slapos_operator::backup_schedule::newest_age(&dir, now)?
            };
            match age {
                None => match slapos_operator::backup_schedule::started_since(&dir, now) {
                    // The schedule has just started: its first backup is not due yet.
                    Some(since) if since.as_secs() < max_secs => {
                        println!(
                            "no backup in {} yet; the schedule started {} s ago",
                            dir.display(),
                            since.as_secs()
                        );
                        Ok(())
                    }
                    _ => anyhow::bail!("no backup in {} yet", dir.display()),
                },
                Some(age) if age.as_secs() > max_secs => anyhow::bail!(
                    "the newest backup in {} is {} s old, over {max_secs} s",
                    dir.display(),
                    age.as_secs()
                ),
                Some(age) => {
                    println!(
                        "the newest backup in {} is {} s old",
                        dir.display(),
                        age.as_secs()
                    );
                    Ok(())
                }
            }
        }
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
