//! The one-host lab: pods as network namespaces joined to a router namespace, the mesh's
//! processes, and teardown that leaves nothing behind. Also the whole-mesh benchmarks,
//! which need exactly that, and the client side of operator commands ([`cli`]).
//!
//! Owns: topology, processes, measurement. Must not: contain mesh logic — it starts
//! `bowline` processes and talks to them the way an operator or the node agent would.

#![forbid(unsafe_code)]

pub mod bench_cp;
pub mod bench_l4;
pub mod cli;
pub mod process;
pub mod relay;
pub mod supervise;
pub mod topology;
pub mod up;
