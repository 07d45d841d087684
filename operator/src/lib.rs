//! What an operator does to a master group, as a library the `slapos` binary wires to
//! its command line. For now: the network namespaces `slapos up` runs its nodes in (and
//! the chaos harness its hosts), [`netns`].

#![forbid(unsafe_code)]

pub mod netns;
