//! The node agent (`slapos node ...`): formats a machine into computer partitions,
//! converges the software releases and instances the master lists, supervises their
//! services, checks promises and posts usage. See DESIGN.md.

// Three items need `unsafe` (a pre-exec closure, the per-thread credential system calls
// nix has no wrapper for, a signal handler): each allows it for itself and says why it
// is sound (DESIGN.md, "System calls").
#![deny(unsafe_code)]

pub mod cgroup;
pub mod client;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod disk;
pub mod format;
pub mod fsutil;
pub mod ini;
pub mod instance;
pub mod keyfiles;
pub mod limits;
pub mod names;
pub mod native;
pub mod node;
pub mod partcert;
pub mod process;
pub mod procfs;
pub mod promise;
pub mod register;
pub mod report;
pub mod software;
pub mod supervisor;
pub mod sysdb;
pub mod template;
#[cfg(test)]
mod testutil;
pub mod watch;
pub mod watchdog;

pub use config::{ConfigError, NodeConfig};
pub use node::{Node, NodeError};

/// `slapos node format`: formats the machine, then posts the computer's configuration
/// (`loadComputerConfigurationFromXML`). `Ok(false)`: formatted, but the master could not
/// be reached (the reference's "offline success", exit 2).
pub fn format_and_post(node: &Node, dry_run: bool) -> Result<bool, NodeError> {
    let outcome = format::format(&node.cfg, dry_run)?;
    if dry_run {
        return Ok(true);
    }
    let xml = slapos_proto::marshal::encode(&outcome.computer)
        .map_err(|e| NodeError::Invalid(format!("computer description: {e}")))?;
    match node
        .client
        .post("loadComputerConfigurationFromXML", &[("xml", &xml)], None)
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_unreachable() => {
            tracing::warn!(error = %e, "formatted, but the master is unreachable");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
