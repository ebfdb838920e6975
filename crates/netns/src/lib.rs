//! Network namespaces and the kernel plumbing around them.
//!
//! Owns: creating, naming and deleting namespaces; running code inside one (on a
//! dedicated thread, since `setns` is per-thread, so the async runtime never changes
//! namespace); veth links, addresses and routes; the capture rules of docs/protocols.md; a nat chain owned whole by its caller; the
//! socket options the mesh relies on (original destination, transparent source, packet
//! marks); passing namespace file descriptors over unix sockets. Must not: know the mesh
//! — which pods exist, what traffic means.
//!
//! This is the one crate allowed `unsafe` (see `fdpass`), each block with a `// SAFETY:`
//! line. Links, routes and rules are applied with iproute2 and iptables, the same tools
//! an operator would use to inspect them.

#![deny(unsafe_code)]

pub mod capture;
pub mod fdpass;
pub mod links;
pub mod namespace;
pub mod nat;
pub mod socket;

pub use namespace::{Namespace, NetnsError, NetnsWorker, in_netns, in_netns_blocking};
