//! A WAN emulator for real processes in network namespaces (`DESIGN.md`): a userspace
//! router between TUN devices, one per host namespace, that delays, jitters, loses,
//! rate-limits and cuts packets per ordered pair of regions, changeable while it runs.
//!
//! - [`Matrix`] and [`LinkParams`]: the regions and each ordered pair's parameters;
//!   [`regions::parse`] reads them from a regions file.
//! - [`sched::Scheduler`]: the verdict on each packet, as a pure model.
//! - [`Router`] and [`Handle`]: the TUN devices and threads, and the controls.

// One module makes a system call nix cannot make safe (the TUNSETIFF ioctl, `tun.rs`);
// it allows itself `unsafe`, nothing else may.
#![deny(unsafe_code)]

mod matrix;
pub mod netns;
pub mod packet;
pub mod regions;
mod router;
pub mod sched;
#[allow(unsafe_code)]
mod tun;

pub use matrix::{LinkParams, Matrix, RegionId};
pub use packet::Prefix;
pub use regions::RegionsError;
pub use router::{Handle, PortSpec, Router, Stats, MAX_IN_FLIGHT_BYTES, THREAD_NICE};
pub use sched::{Cuts, PairStats, PortId};

#[derive(Debug, thiserror::Error)]
pub enum WanError {
    #[error("cannot make TUN device {name}: {source}")]
    Tun {
        name: String,
        source: std::io::Error,
    },
    #[error("network namespace {ns}: {source}")]
    Netns { ns: String, source: std::io::Error },
    #[error("port {port}: region {region} is not in the matrix")]
    BadRegion { port: String, region: RegionId },
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
    #[error("{0} panicked")]
    Panicked(String),
}
