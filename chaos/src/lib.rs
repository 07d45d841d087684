//! Chaos runs (`slapos chaos run`): a group of real `slapos` processes under a seeded
//! schedule of faults while clients write and read through its gateways, then checkers
//! that judge the history and every replica's state. The processes are started through
//! `slapos-harness` (replicas as plain processes, or `slapos up`'s group hosted in
//! partitions); the network namespaces its hosts run in are `slapos_operator::netns`'s.
//!
//! Nothing here is needed at run time: only the `slapos chaos` command, the benchmarks
//! (`slapos-bench`, which post the workload's usage journals) and the tests use it;
//! `slapos up` and the operator use nothing of it.
//!
//! Modules, lowest first: [`kind`] (what a fault is), [`options`], [`workload`] and
//! [`linearizability`]; `group` (what a run needs of the group under test, for both
//! shapes); [`faults`] (injection); [`check`] (checkers and report); [`run`].

#![forbid(unsafe_code)]

pub mod check;
pub mod faults;
mod group;
pub mod kind;
pub mod linearizability;
pub mod options;
pub mod run;
pub mod workload;
