//! Every wire format SLAP uses, as pure functions over bytes: no I/O, no async.
//!
//! * [`marshal`]: the `xml_marshaller` subset that carries structured values in form
//!   fields and response bodies, and [`slap`]: the four slap classes on top of it.
//! * [`instance_xml`]: the `<instance><parameter id=..>` documents for parameters and
//!   connection dictionaries, and the JSON-in-XML `_` convention.
//! * [`journal`]: the usage documents (`consumption` per partition, `journal` per
//!   computer) that `useComputer` carries.
//! * [`proof`]: what a caller signs so that a gateway can relay, but not forge, its
//!   renewal or its partitions' certificate requests.
//! * [`pyrepr`]: Python's `str()`/`repr()` of scalars, which the wire formats inherit.
//!
//! * [`rpc`]: the gRPC services between replicas (Raft) and to the masters (master
//!   API), generated from `protos/*.proto`.
//!
//! Every decoder is bounded by [`Limits`] and returns a [`DecodeError`] that says what was
//! wrong and where; no input makes one panic.

#![forbid(unsafe_code)]

pub mod error;
pub mod instance_xml;
pub mod journal;
pub mod limits;
pub mod marshal;
pub mod proof;
pub mod pyrepr;
pub mod release_address;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod slap;

pub use error::DecodeError;
pub use limits::Limits;
