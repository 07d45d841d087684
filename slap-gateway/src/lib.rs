//! The SLAP gateway: it speaks the SlapOS protocol to nodes, instances and users and turns
//! what they ask into commands and queries of the master's state machine.
//!
//! [`slap`] is the transport-independent layer: parsing each legacy SLAP endpoint's inputs
//! into a [`master_node::Op`] or a query ([`slap::forms`]), and rendering views, outcomes and
//! errors into the bytes and status codes the SLAP client expects ([`slap::render`]). The
//! HTTPS server, authentication by client certificate and the master client come on top
//! of it; see `DESIGN.md`.

pub mod slap;

pub use slap::{serve_local, Endpoint, FieldLimits, Method, SlapContext, SlapResponse};
