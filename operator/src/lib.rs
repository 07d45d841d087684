//! What an operator does to a master group, as a library the `slapos` binary wires to
//! its command line (`operator/DESIGN.md`):
//!
//! - [`up`]: `slapos up`, a local cluster of real processes, by default hosting the
//!   master in partitions of its nodes (each node in a network namespace, [`netns`]);
//! - [`replicas`]: a replica and its gateway hosted in partitions, added, removed,
//!   upgraded; [`bootstrap`]: from a seed group to one that lives in partitions only;
//! - [`authority`]: certificates issued to files, one-time server tokens, persons and
//!   their admin rights, revocations, an operator's command submitted;
//! - [`status`]: the group's members as the operator sees them;
//! - [`backup`]: a consistent copy of the state taken online, checked, and restored as
//!   a new group;
//! - [`release`]: the releases of `deploy/software`, embedded and written out.
//!
//! Every failure is an [`OperatorError`]; every step is reported to a [`Progress`] the
//! caller gives; nothing here prints. The commands are async and run on a multi-threaded
//! tokio runtime: the blocking calls they make (SLAP requests, the `slapos` commands they
//! run) block in place.

#![forbid(unsafe_code)]

pub mod authority;
pub mod backup;
pub mod backup_schedule;
pub mod bootstrap;
mod error;
mod files;
mod group;
pub mod netns;
mod progress;
pub mod release;
pub mod replicas;
pub mod status;
pub mod up;

pub use error::OperatorError;
pub use group::Operator;
pub use progress::{Progress, Quiet};
