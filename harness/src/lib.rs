//! Real clusters of `slapos` processes, for the end-to-end tests, the chaos runs and the
//! benchmarks: the one place that starts, kills, signals, restarts and waits on master
//! replicas and gateways as processes of the binary cargo built ([`ProcessCluster`]),
//! and the one way they pick a loopback port ([`free_port`]). Beside it, what those
//! three also share: a keep-alive HTTP connection to a gateway ([`http`]) and tinysr,
//! the tiny buildout release node agents deploy ([`tinysr`]).
//!
//! [`HostedCluster`] is the other shape: `slapos up`'s group hosted in partitions of
//! namespaced nodes, started as a child and driven from outside (chaos `--self-hosted`).
//!
//! Nothing here is needed at run time, and nothing here panics on what comes from
//! outside the process: every failure is a [`HarnessError`]. Tests turn those into
//! failures with the replicas' logs ([`ProcessCluster::logs`]).

#![forbid(unsafe_code)]

pub mod cluster;
mod error;
pub mod faultyfs;
pub mod hosted;
pub mod http;
mod port;
pub mod tinysr;

pub use cluster::{Hosts, ProcessCluster};
pub use error::HarnessError;
pub use faultyfs::{FaultMode, FaultSwitch, FaultyDisk, FaultyFs, Tmpfs};
pub use hosted::HostedCluster;
pub use port::free_port;
