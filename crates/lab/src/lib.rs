//! The one-host lab: pods as network namespaces joined to a router namespace, the mesh's
//! processes, and teardown that leaves nothing behind; and the small HTTP client
//! ([`client`]) with which it, the operator commands and the benchmarks talk to the mesh's
//! processes.
//!
//! Owns: topology, processes, teardown. Must not: contain mesh logic — it starts
//! `bowline` processes and talks to them the way an operator or the node agent would —
//! nor benchmarks (crate `bench`) or command-line rendering (crate `bowline`).

#![forbid(unsafe_code)]

pub mod client;
pub mod process;
pub mod supervise;
pub mod topology;
pub mod up;
