//! The SLAP gateway: it speaks the SlapOS protocol to nodes, instances and users and turns
//! what they ask into commands and queries of the master's state machine.
//!
//! [`slap`] is the transport-independent layer: parsing each legacy SLAP endpoint's inputs
//! into a [`slapos_domain::Op`] or a query ([`slap::forms`]), and rendering views, outcomes and
//! errors into the bytes and status codes the SLAP client expects ([`slap::render`]).
//! [`server`] serves it over HTTPS in front of the master's Raft group (`slapos gateway
//! run`). [`jsonrpc`] is the JSON-RPC v0 API over the same domain, served by the same
//! server. Authentication by client certificate comes on top; see `DESIGN.md`.

#![forbid(unsafe_code)]

pub mod client;
pub mod jsonrpc;
pub mod releases;
pub mod server;
pub mod slap;

pub use server::{Gateway, GatewayConfig};
pub use slap::{serve_local, Endpoint, FieldLimits, Method, SlapContext, SlapResponse};
