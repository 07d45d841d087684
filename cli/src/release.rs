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
        /// configuration's master_url.
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
    let gateways = if gateway.is_empty() {
        vec![config.master_url.clone()]
    } else {
        gateway
    };
    let mut published = Vec::new();
    for url in &gateways {
        let client = config.client_of(url)?;
        let p = slapos_operator::release::publish(&dir, url, &client).await?;
        if !console.json() {
            println!(
                "{} ({} file(s) sent, {} bytes)",
                p.url, p.uploaded, p.uploaded_bytes
            );
        }
        published.push(p);
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
