//! The benchmarks of `slapos bench`: each starts real processes through
//! `slapos-harness`, measures, and returns a report the command prints and writes as
//! JSON. Nothing here is needed at run time.
//!
//! - [`raft`] (`slapos bench raft`): commit throughput and latency of the replica group,
//!   and the time to a new leader after a `kill -9`.
//! - [`slap`] (`slapos bench slap`): the Python client's workload (`slap_workload.py`)
//!   against slapproxy and against our gateway, then keep-alive load on both.
//! - [`usage`] (`slapos bench usage`): a fleet's daily usage journals through
//!   `useComputer` (the chaos workload's journals), every one posted again, the
//!   replicas' peak memory, and the invoice read back.
//! - [`node`] (`slapos bench node`): one node agent deploying and re-running many
//!   partitions, and instances requested at once until their services run.
//! - [`limits`] (`slapos bench limits`): usage accuracy from the partitions' cgroups,
//!   and a replica's write latency next to a noisy partition with and without limits.
//! - [`fleet`] (`slapos bench fleet`): simulated nodes holding long polls (and some
//!   polling plainly) against the replica group's gateways while a writer changes their
//!   instances: held connections, CPU and memory, poll latency, write-to-answer time.
//! - [`alloc`] (`slapos bench alloc`): allocation in the state machine of a large
//!   fleet, walking the allocation index and scanning every computer, side by side.
//! - [`backup`] (`slapos bench backup`): a fleet's state backed up while a client
//!   writes (its latency alone and during, in alternating rounds), verified, restored as a new group.
//! - [`scale`] (`slapos bench scale`): a provider's fleet in one group (100,000
//!   computers by default): resident memory, snapshot build and install, restart to
//!   serving, request and read p99.
//! - [`portal`] (`slapos bench portal`): the web portal's server time per page and
//!   page weight for a person with 1,000 services, over a real gateway.
//! - [`tunnel`] (`slapos bench tunnel`): memcached directly, through our tunnel and
//!   through stunnel4 configured as the same pair: operations/s, latency, bulk
//!   throughput.
//! - [`frontend`] (`slapos bench frontend`): a backend directly, through our frontend
//!   and through nginx configured as the same reverse proxy: requests/s, latency, the
//!   proxies' added latency, TLS handshakes/s.

#![forbid(unsafe_code)]

pub mod alloc;
pub mod backup;
pub mod fleet;
pub mod frontend;
pub mod limits;
pub mod local;
pub mod node;
pub mod portal;
pub mod raft;
pub mod scale;
pub mod slap;
pub mod tunnel;
pub mod usage;
pub mod wan;
