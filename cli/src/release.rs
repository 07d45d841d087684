//! `slapos release publish DIR`: a release directory (its `software.toml` and the files
//! it names) published to the group's gateways, checksums filled in: the address nodes
//! install it from, served over HTTPS and verified against the group's CA and the
//! checksums (slap-gateway/DESIGN.md, "Releases").

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::instance::ConsoleArgs;

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Publish the release in DIR (`software.toml` and the files its artifacts name by a
    /// relative URL): every such artifact's sha256 filled in from its file, the files
    /// and the manifest sent to each gateway (an admin's certificate); prints the
    /// release's https address (`<gateway>/software/<sha256>/software.toml`), the same
    /// for the same files.
    Publish {
        /// The release's directory.
        dir: PathBuf,
        /// A gateway to publish to (repeat for several); default: the client
        /// configuration's master_url and every other gateway of the group it names.
        #[arg(long, value_name = "URL")]
        gateway: Vec<String>,
        /// Print the filled-in manifest instead of publishing (nothing is sent).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        console: ConsoleArgs,
    },
}

pub async fn release(cmd: ReleaseCommand) -> Result<()> {
    let ReleaseCommand::Publish {
        dir,
        gateway,
        dry_run,
        console,
    } = cmd;
    if dry_run {
        let (manifest, _) = slapos_operator::release::prepare(&dir)?;
        print!("{manifest}");
        return Ok(());
    }
    let config = console.config()?;
    let mut published = Vec::new();
    if gateway.is_empty() {
        let client_of = |url: &str| {
            config
                .client_of(url)
                .map_err(|e| slapos_operator::OperatorError::Precondition(format!("{e:#}")))
        };
        let (first, others) =
            slapos_operator::release::publish_to_group(&dir, &config.master_url, &client_of)
                .await?;
        published.push(first);
        for (url, outcome) in others {
            match outcome {
                Ok(p) => published.push(p),
                Err(e) => eprintln!("warning: not published to {url}: {e:#}"),
            }
        }
    } else {
        for url in &gateway {
            let client = config.client_of(url)?;
            published.push(slapos_operator::release::publish(&dir, url, &client).await?);
        }
    }
    if !console.json() {
        for p in &published {
            println!(
                "{} ({} file(s) sent, {} bytes)",
                p.url, p.uploaded, p.uploaded_bytes
            );
        }
    }
    if console.json() {
        let v: Vec<_> = published
            .iter()
            .map(|p| {
                serde_json::json!({
                    "url": p.url,
                    "sha256": p.digest,
                    "uploaded": p.uploaded,
                    "uploaded_bytes": p.uploaded_bytes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
