//! The workspace's one HTTP/1.1 client.
//!
//! hyper-util's pooled client (`client::legacy`) over tokio-rustls on ring, the stack the
//! gateway's server and the gRPC links already use: no second HTTP implementation, no
//! hand-written header parser or chunked decoder. What every caller of ours needs is here
//! and nowhere else:
//!
//! - [`Endpoint`]: `http(s)://host[:port][/prefix]`, IPv6 literals in brackets;
//! - [`tls`]: client configurations from PEM (certificate authorities, the caller's
//!   certificate and key), including the reference agent's unverified mode;
//! - [`Client`] (async) and [`BlockingClient`] (a small current-thread runtime of its own,
//!   for the node agent's sequential code): timeouts for connecting, for the answer's head
//!   and for the whole exchange; keep-alive connections or one connection per call;
//!   answers bounded in size; errors that say whether the request can have reached the
//!   server ([`Error::NotSent`]);
//! - [`server_certificate`]: the certificate a TLS server presents, verified (how an
//!   operator learns which gateway it talks to);
//! - [`form_urlencode`]: `application/x-www-form-urlencoded` exactly as SlapOS's Python
//!   client (`requests` through `urllib.parse.urlencode`) writes it.
//!
//! Used by the node agent (`slapgrid::client`), the CLI's JSON-RPC client
//! (`slap_gateway::client`) and the chaos workload and benchmarks (`slapos_harness::http`).

#![forbid(unsafe_code)]

mod blocking;
mod client;
mod connect;
mod endpoint;
mod error;
mod form;
pub mod tls;

pub use blocking::BlockingClient;
pub use client::{Client, Options, Request, Response};
pub use connect::{is_local, server_certificate, Connector, Stream};
pub use endpoint::Endpoint;
pub use error::{Error, NotSent, Unreached};
pub use form::form_urlencode;
pub use hyper::body::Bytes;
pub use rustls::ClientConfig;
